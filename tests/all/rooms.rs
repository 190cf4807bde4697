//! Rooms: the chat plugin, groups, fan-out, slow consumers, metadata and route constraints.

use futures_util::future::join_all;
use serde_json::{Value, json};

use crate::harness::{
    Broker, Client, LANGUAGES, Received, default_config, plugin_name, polyglot_config, polyglot_config_with,
};

fn chat(message: &str, name: &str) -> Value {
    json!({"action": "new_chat_message", "payload": {"message": message, "name": name}})
}

/// The next frame is the pong to a fresh ping: nothing else was waiting for this client.
async fn assert_nothing_pending(client: &mut Client) {
    client.assert_alive().await;
}

/// A broker with chat in every language, and the route prefix of each: (language, `/ws/.../chat`).
fn chats() -> (Broker, Vec<(&'static str, String)>) {
    let prefixes = LANGUAGES.iter().map(|(lang, prefix)| (*lang, format!("{prefix}/chat"))).collect();
    (Broker::with_config(&polyglot_config()), prefixes)
}

#[tokio::test]
async fn a_message_reaches_the_rest_of_its_room_only() {
    let (broker, chats) = chats();
    for (lang, chat_at) in chats {
        let mut a = broker.connect(&format!("{chat_at}/room1/")).await;
        let mut b = broker.connect(&format!("{chat_at}/room1/")).await;
        let mut c = broker.connect(&format!("{chat_at}/room2/")).await;
        // Joining happens in on-connect: a ping round trip on each proves it is done.
        for client in [&mut a, &mut b, &mut c] {
            client.assert_alive().await;
        }

        a.send(chat("hi", "Alice")).await;
        assert_eq!(b.recv().await, chat("hi", "Alice"), "{lang}");
        assert_nothing_pending(&mut a).await;
        assert_nothing_pending(&mut c).await;

        drop(b);
        a.send(chat("still here?", "Alice")).await;
        assert_nothing_pending(&mut a).await;
        c.send(chat("room2 only", "Carol")).await;
        assert_nothing_pending(&mut a).await;
    }
}

#[tokio::test]
async fn a_missing_name_is_a_missing_error() {
    let (broker, chats) = chats();
    for (lang, chat_at) in chats {
        let mut a = broker.connect(&format!("{chat_at}/room1")).await;
        let error = a.request(json!({"action": "new_chat_message", "payload": {"message": "hi"}})).await;
        assert_eq!(
            error,
            json!({"action": "error", "payload": [
                {"type": "missing", "loc": ["new_chat_message", "payload", "name"], "msg": "Field required"}
            ]}),
            "{lang}"
        );
    }
}

#[tokio::test]
async fn frames_of_one_sender_arrive_in_order() {
    let (broker, chats) = chats();
    for (lang, chat_at) in chats {
        let route = format!("{chat_at}/ordered");
        let mut a = broker.connect(&route).await;
        let mut b = broker.connect(&route).await;
        let mut c = broker.connect(&route).await;
        for client in [&mut a, &mut b, &mut c] {
            client.assert_alive().await;
        }
        for n in 0..300 {
            a.send(chat(&n.to_string(), "Alice")).await;
        }
        for client in [&mut b, &mut c] {
            for n in 0..300 {
                assert_eq!(client.recv().await, chat(&n.to_string(), "Alice"), "{lang}");
            }
        }
    }
}

#[tokio::test]
async fn a_burst_reaches_a_thousand_members_complete_and_in_order() {
    const MEMBERS: usize = 1000;
    const BURST: usize = 1000;
    // A thousand and one clients on one address, one of them sending as fast as it can.
    let broker = Broker::with_config(&polyglot_config_with("max_connections_per_ip = 2000\nmessages_per_second = 0"));
    for (lang, chat_at) in LANGUAGES.iter().map(|(lang, prefix)| (*lang, format!("{prefix}/chat/big"))) {
        let mut members = join_all((0..MEMBERS).map(|_| broker.connect(&chat_at))).await;
        join_all(members.iter_mut().map(|m| m.assert_alive())).await;
        let api = format!("/api/groups/{}:big/members", plugin_name("chat", lang));
        let (status, body) = broker.http("GET", &api, Some(crate::harness::API_KEY), "").await;
        assert_eq!(status, 200);
        assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["members"].as_array().unwrap().len(), MEMBERS);

        let mut sender = broker.connect(&chat_at).await;
        sender.assert_alive().await;
        let sending = async {
            for n in 0..BURST {
                sender.send(chat(&n.to_string(), "S")).await;
            }
        };
        let receiving = join_all(members.iter_mut().map(|member| async move {
            for n in 0..BURST {
                let frame = member.recv().await;
                assert_eq!(frame["payload"]["message"], n.to_string(), "{lang}: {frame}");
            }
        }));
        tokio::join!(sending, receiving);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_closed_and_the_room_goes_on() {
    // The sender outruns the default message rate on purpose: the test is about the reader.
    let broker = Broker::with_config(&default_config(
        "[server]\noutbound_queue = 32\noutbound_queue_bytes = 262144\nmessages_per_second = 0\n",
    ));
    let mut sender = broker.connect("/ws/chat/slow").await;
    let mut reader = broker.connect("/ws/chat/slow").await;
    let mut stalled = broker.connect("/ws/chat/slow").await;
    for client in [&mut sender, &mut reader, &mut stalled] {
        client.assert_alive().await;
    }
    let rss_before = broker.rss_kib();

    // 3,000 frames of 16 KiB, about 48 MiB, far more than the stalled client's socket buffers hold.
    // The sender keeps within a few frames of the reader, so the reader is never the slow one.
    let big = "x".repeat(16 * 1024);
    const FRAMES: usize = 3000;
    let window = std::sync::Arc::new(tokio::sync::Semaphore::new(4));
    let read_window = window.clone();
    let reading = tokio::spawn(async move {
        for _ in 0..FRAMES {
            assert_eq!(reader.recv().await["payload"]["name"], "S");
            read_window.add_permits(1);
        }
    });
    for _ in 0..FRAMES {
        window.acquire().await.expect("open semaphore").forget();
        sender.send(chat(&big, "S")).await;
    }
    reading.await.expect("the reader got every frame");
    sender.assert_alive().await;
    assert_eq!(broker.metric("broker_slow_consumer_closes_total").await, 1.0);
    let grown_kib = broker.rss_kib().saturating_sub(rss_before);
    assert!(grown_kib < 24 * 1024, "the broker grew by {grown_kib} KiB while a client stalled");

    // The stalled client finds what fitted in its buffers, then the slow-consumer close.
    let close = loop {
        match stalled.next().await {
            Received::Json(_) => continue,
            Received::Close(frame) => break frame.map(|f| u16::from(f.code)),
            Received::Ended => break None,
        }
    };
    assert_eq!(close, Some(4008));
}

#[tokio::test]
async fn connect_join_disconnect_cycles_leave_nothing_behind() {
    const CYCLES: usize = 3_000;
    const PARALLEL: usize = 50;
    let (broker, chats) = chats();
    for (lang, chat_at) in &chats {
        join_all((0..PARALLEL).map(|worker| {
            let broker = &broker;
            async move {
                for cycle in 0..CYCLES / PARALLEL {
                    let mut client = broker.connect(&format!("{chat_at}/churn-{}", (worker + cycle) % 7)).await;
                    if cycle % 10 == 0 {
                        client.assert_alive().await;
                    }
                    drop(client);
                }
            }
        }))
        .await;
        // Every connection's task has ended, not only every registered connection: the client has
        // its 101 before the broker registers the connection, so one dropped at once is registered
        // a moment later, joins its room in on-connect, and only then is removed. The route's gauge
        // counts a connection from its handshake to the end of its task.
        broker.await_metric(&format!("broker_route_connections{{route=\"{chat_at}/{{room}}\"}}"), 0.0).await;
        assert_eq!(broker.metric("broker_connections").await, 0.0, "{lang}");
        assert_eq!(broker.metric("broker_groups").await, 0.0, "{lang}");
        assert_eq!(broker.metric("broker_group_members").await, 0.0, "{lang}");
        for room in 0..7 {
            let api = format!("/api/groups/{}:churn-{room}/members", plugin_name("chat", lang));
            let (_, body) = broker.http("GET", &api, Some(crate::harness::API_KEY), "").await;
            assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["members"], json!([]), "{lang}");
        }
    }
}

#[tokio::test]
async fn route_constraints_are_refused_with_400_before_the_upgrade() {
    let broker = Broker::start();
    for bad in ["/ws/chat/bad%20room", "/ws/chat/room!", &format!("/ws/chat/{}", "r".repeat(33))] {
        match tokio_tungstenite::connect_async(broker.url(bad)).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 400, "{bad}");
                let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).to_string();
                assert!(body.contains("room"), "{bad}: {body}");
            }
            other => panic!("{bad}: expected HTTP 400, got {other:?}"),
        }
    }
    broker.connect("/ws/chat/fine_room-1").await.assert_alive().await;
}

#[tokio::test]
async fn metadata_routes_stamp_id_time_and_sender_and_share_rooms() {
    let broker = Broker::start();
    let mut plain = broker.connect("/ws/chat/shared").await;
    let mut stamped = broker.connect("/ws/chat-meta/shared").await;
    plain.assert_alive().await;
    let pong = stamped.request(json!({"action": "ping"})).await;
    assert_eq!(pong["action"], "pong");
    assert!(pong["message_id"].is_string(), "{pong}");

    // chat-meta shares the `chat` namespace: the rooms are the same.
    plain.send(chat("to meta", "Plain")).await;
    let frame = stamped.recv().await;
    assert_eq!(frame["payload"], json!({"message": "to meta", "name": "Plain"}));
    let id = frame["message_id"].as_str().unwrap();
    assert_eq!(id.len(), 36, "{frame}");
    assert!(frame["timestamp"].as_str().unwrap().ends_with('Z'), "{frame}");
    let plain_id: u64 = frame["sender"].as_str().unwrap().parse().unwrap();

    stamped.send(chat("to plain", "Meta")).await;
    // A route without metadata gets the frame exactly as the tutorial's clients expect.
    assert_eq!(plain.recv().await, chat("to plain", "Meta"));

    let (status, body) = broker.http("GET", "/api/groups/chat:shared/members", Some(crate::harness::API_KEY), "").await;
    assert_eq!(status, 200);
    let members: Vec<u64> =
        serde_json::from_value(serde_json::from_str::<Value>(&body).unwrap()["members"].clone()).unwrap();
    assert_eq!(members.len(), 2);
    assert!(members.contains(&plain_id), "{members:?} lacks {plain_id}");
}

#[tokio::test]
async fn groups_of_other_plugins_are_out_of_reach() {
    let broker = Broker::start();
    let mut chatter = broker.connect("/ws/chat/room1").await;
    chatter.assert_alive().await;
    let mut testbed = broker.connect("/ws/testbed").await;
    // `join` replies nothing: the pong after it proves it ran without an error.
    testbed.send(json!({"action": "join", "payload": {"group": "room1"}})).await;
    testbed.assert_alive().await;
    let reply = testbed
        .request(json!({"action": "broadcast", "payload": {"group": "room1", "frame": {"action": "intrusion"}}}))
        .await;
    // The testbed's own room1 holds only itself; chat's room1 is another group.
    // Frames a call sends are queued before its reply.
    assert_eq!(reply, json!({"action": "intrusion"}));
    assert_eq!(testbed.recv().await, json!({"action": "broadcast", "payload": 1}));
    assert_nothing_pending(&mut chatter).await;
    let members = testbed.request(json!({"action": "members", "payload": {"group": "room1"}})).await;
    assert_eq!(members["payload"].as_array().map(Vec::len), Some(1), "{members}");
}

#[tokio::test]
async fn a_plugin_built_against_the_0_1_0_contract_still_loads() {
    let broker = Broker::start();
    let mut client = broker.connect("/ws/legacy").await;
    assert_eq!(client.recv().await, json!({"action": "hello", "payload": "welcome from 0.1.0"}));
    assert_eq!(client.request(json!({"action": "hello"})).await, json!({"action": "hello", "payload": "still here"}));
}

//! Group history and recovery: frames of groups with history are numbered, and a client that
//! reconnects with its last position gets every frame it missed, in order, once, then the live
//! stream; or is told it cannot.

use serde_json::{Value, json};

use crate::harness::{API_KEY, Broker, Client, default_config};

/// The shipped chat (and chat-meta, its namespace) and testbed keep `size` frames per group.
fn config(size: usize) -> String {
    let history = format!("size = {size}\nttl_ms = 60000\n");
    default_config(&format!(
        "[plugins.chat.history]\n{history}[plugins.chat-meta.history]\n{history}[plugins.testbed.history]\n{history}"
    ))
}

fn chat(message: &str) -> Value {
    json!({"action": "new_chat_message", "payload": {"message": message, "name": "Alice"}})
}

/// A client of `/ws/chat/<room>`, recovering from `positions` when given; joined once this returns.
async fn member(broker: &Broker, room: &str, positions: Option<Value>) -> Client {
    let query = positions.map_or(String::new(), |p| format!("?recover={}", percent(&p.to_string())));
    let mut client = broker.connect(&format!("/ws/chat/{room}{query}")).await;
    client.assert_alive().await;
    client
}

/// `text` with every byte but unreserved ones percent-encoded.
fn percent(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn offset(frame: &Value) -> u64 {
    frame["offset"].as_u64().unwrap_or_else(|| panic!("no offset in {frame}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_of_a_group_with_history_carry_its_name_offset_and_epoch() {
    let broker = Broker::with_config(&config(100));
    let mut alice = member(&broker, "r1", None).await;
    let mut bob = member(&broker, "r1", None).await;
    alice.send(chat("one")).await;
    let first = bob.recv().await;
    assert_eq!(first["action"], "new_chat_message");
    assert_eq!(first["payload"], chat("one")["payload"]);
    assert_eq!((first["group"].as_str(), offset(&first)), (Some("r1"), 1));
    let epoch = first["epoch"].as_str().expect("an epoch").to_owned();

    // The publish API numbers in the same stream.
    let body = json!({"group": "chat:r1", "frame": {"action": "notice", "payload": {"text": "from the API"}}});
    let (status, reply) = broker.http("POST", "/api/publish", Some(API_KEY), &body.to_string()).await;
    assert_eq!(status, 200, "{reply}");
    for client in [&mut alice, &mut bob] {
        let notice = client.recv().await;
        assert_eq!((notice["action"].as_str(), offset(&notice)), (Some("notice"), 2));
        assert_eq!(notice["epoch"], epoch.as_str());
    }
    // Another room is another stream.
    let mut carol = member(&broker, "r2", None).await;
    let mut dave = member(&broker, "r2", None).await;
    carol.send(chat("elsewhere")).await;
    let other = dave.recv().await;
    assert_eq!((other["group"].as_str(), offset(&other)), (Some("r2"), 1));

    // A group without history costs nothing more: the echo plugin's frames and testbed's own are as
    // they were, and groups of namespaces without history are not numbered.
    let plain = Broker::with_config(&default_config(""));
    let mut alice = plain.connect("/ws/chat/r1").await;
    let mut bob = plain.connect("/ws/chat/r1").await;
    alice.assert_alive().await;
    bob.assert_alive().await;
    alice.send(chat("plain")).await;
    assert_eq!(bob.recv().await, chat("plain"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reconnects_gets_every_missed_frame_once_in_order_then_the_live_stream() {
    const TOTAL: usize = 400;
    let broker = Broker::with_config(&config(1000));
    let mut alice = member(&broker, "busy", None).await;
    let mut bob = member(&broker, "busy", None).await;
    alice.send(chat("m0")).await;
    let seen = bob.recv().await;
    let (epoch, last) = (seen["epoch"].as_str().unwrap().to_owned(), offset(&seen));
    drop(bob);

    // Alice keeps talking while Bob is away and while he comes back: the replay and the live
    // stream meet somewhere in this traffic.
    let talking = tokio::spawn(async move {
        for i in 1..TOTAL {
            alice.send(chat(&format!("m{i}"))).await;
            if i % 50 == 0 {
                alice.assert_alive().await;
            }
        }
        alice.assert_alive().await;
        alice
    });
    let positions = json!([{"group": "busy", "epoch": epoch, "offset": last}]);
    let mut bob = broker.connect(&format!("/ws/chat/busy?recover={}", percent(&positions.to_string()))).await;
    let told = bob.recv().await;
    assert_eq!(told["action"], "recovered", "{told}");
    assert_eq!(told["payload"]["group"], "busy");
    assert_eq!(told["payload"]["recovered"], true, "{told}");
    assert_eq!(told["payload"]["epoch"], epoch.as_str());
    let replayed = told["payload"]["replayed"].as_u64().unwrap();
    assert_eq!(told["payload"]["offset"].as_u64().unwrap(), last + replayed);

    let mut expected = last + 1;
    while expected <= TOTAL as u64 {
        let frame = bob.recv().await;
        assert_eq!(offset(&frame), expected, "a gap, a duplicate or a reordering: {frame}");
        assert_eq!(frame["payload"]["message"], format!("m{}", expected - 1));
        expected += 1;
    }
    let mut alice = talking.await.unwrap();
    bob.assert_alive().await;
    alice.assert_alive().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_says_false_with_the_current_position_when_frames_are_gone() {
    let broker = Broker::with_config(&config(5));
    let mut alice = member(&broker, "small", None).await;
    let mut bob = member(&broker, "small", None).await;
    for i in 0..10 {
        alice.send(chat(&format!("m{i}"))).await;
        bob.recv().await;
    }
    alice.send(chat("last")).await;
    let epoch = bob.recv().await["epoch"].as_str().unwrap().to_owned();
    for (position, why) in [
        (json!({"group": "small", "epoch": epoch, "offset": 2}), "frames 3 to 6 are no longer kept"),
        (json!({"group": "small", "epoch": "0123456789abcdef", "offset": 11}), "another epoch"),
        (json!({"group": "small", "epoch": epoch, "offset": 12}), "an offset the stream never reached"),
    ] {
        let mut client =
            broker.connect(&format!("/ws/chat/small?recover={}", percent(&json!([position]).to_string()))).await;
        let told = client.recv().await;
        let expected = json!({"action": "recovered", "payload": {
            "group": "small", "recovered": false, "epoch": epoch, "offset": 11, "replayed": 0
        }});
        assert_eq!(told, expected, "{why}");
        client.assert_alive().await;
    }
    // From 6, right before the oldest kept (7): nothing is missing.
    let from_six = json!([{"group": "small", "epoch": epoch, "offset": 6}]);
    let mut client = broker.connect(&format!("/ws/chat/small?recover={}", percent(&from_six.to_string()))).await;
    let told = client.recv().await;
    assert_eq!((told["payload"]["recovered"].as_bool(), told["payload"]["replayed"].as_u64()), (Some(true), Some(5)));
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(offset(&client.recv().await));
    }
    assert_eq!(got, vec![7, 8, 9, 10, 11]);
    client.assert_alive().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recover_action_applies_to_the_next_join_and_bad_positions_are_refused() {
    let broker = Broker::with_config(&config(100));
    let mut sender = broker.connect("/ws/testbed").await;
    let mut member = broker.connect("/ws/testbed").await;
    member.send(json!({"action": "join", "payload": {"group": "g"}})).await;
    member.assert_alive().await;
    for i in 0..3 {
        let frame = json!({"action": "tick", "payload": {"i": i}});
        sender.request(json!({"action": "broadcast", "payload": {"group": "g", "frame": frame}})).await;
    }
    let mut epoch = String::new();
    for _ in 0..3 {
        epoch = member.recv().await["epoch"].as_str().unwrap().to_owned();
    }
    let mut back = broker.connect("/ws/testbed").await;
    let recover = json!({"action": "recover", "payload": {"positions": [{"group": "g", "epoch": epoch, "offset": 1}]}});
    back.send(recover.clone()).await;
    back.send(json!({"action": "join", "payload": {"group": "g"}})).await;
    let told = back.recv().await;
    assert_eq!(told["payload"], json!({"group": "g", "recovered": true, "epoch": epoch, "offset": 3, "replayed": 2}));
    assert_eq!((offset(&back.recv().await), offset(&back.recv().await)), (2, 3));
    back.assert_alive().await;

    // Already in the group: its frames since the join came live, so there is nothing to recover.
    let refused = back.request(json!({"action": "recover", "payload": recover["payload"], "ref": "r"})).await;
    assert_eq!(refused["action"], "error");
    assert_eq!(refused["ref"], "r");
    assert!(refused["payload"][0]["msg"].as_str().unwrap().contains("already in g"), "{refused}");
    // Malformed positions, on the action and on the handshake.
    let bad = back.request(json!({"action": "recover", "payload": {"positions": [{"group": "g"}]}})).await;
    assert_eq!(bad["payload"][0]["loc"], json!(["recover", "payload"]), "{bad}");
    let refused = broker.connect_from("127.0.0.1", "/ws/chat/x?recover=%5B1%5D").await.err();
    assert_eq!(refused, Some(400));
}

#[test]
fn plugins_sharing_a_namespace_must_agree_on_its_history() {
    let disagree = default_config("[plugins.chat.history]\nsize = 10\n");
    let (ok, _, stderr) = crate::harness::run_cli(&["check"], &disagree);
    assert!(!ok && stderr.contains("history") && stderr.contains("shares the namespace"), "{stderr}");
    let short = default_config(
        "[plugins.chat.history]\nttl_ms = 10\nmeta_ttl_ms = 5\n[plugins.chat-meta.history]\nttl_ms = 10\nmeta_ttl_ms = 5\n",
    );
    let (ok, _, stderr) = crate::harness::run_cli(&["check"], &short);
    assert!(!ok && stderr.contains("plugins.chat") && stderr.contains("meta_ttl_ms"), "{stderr}");
}

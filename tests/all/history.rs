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
    const TOTAL: usize = 1000;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_publish_retried_is_delivered_once_and_answers_the_first_offset() {
    let broker = Broker::with_config(&config(100));
    let mut member = member(&broker, "idem", None).await;
    let publish = |key: &str, text: &str| {
        json!({"group": "chat:idem", "frame": {"action": "notice", "payload": {"text": text}}, "idempotency_key": key})
            .to_string()
    };
    let (status, first) = broker.http("POST", "/api/publish", Some(API_KEY), &publish("k1", "once")).await;
    assert_eq!(status, 200, "{first}");
    let first: Value = serde_json::from_str(&first).unwrap();
    assert_eq!((first["offset"].as_u64(), first["duplicate"].as_bool()), (Some(1), Some(false)));
    let (_, retry) = broker.http("POST", "/api/publish", Some(API_KEY), &publish("k1", "once")).await;
    let retry: Value = serde_json::from_str(&retry).unwrap();
    assert_eq!((retry["offset"].as_u64(), retry["duplicate"].as_bool()), (Some(1), Some(true)), "{retry}");
    assert_eq!(retry["epoch"], first["epoch"]);
    let (_, other) = broker.http("POST", "/api/publish", Some(API_KEY), &publish("k2", "twice")).await;
    assert_eq!(serde_json::from_str::<Value>(&other).unwrap()["offset"], 2);
    assert_eq!(member.recv().await["payload"]["text"], "once");
    assert_eq!(member.recv().await["payload"]["text"], "twice", "the retry was not delivered");
    member.assert_alive().await;

    // Without history there is nothing to remember the key by: refused, not silently ignored.
    let body = json!({"group": "echo:x", "frame": {"action": "a"}, "idempotency_key": "k"}).to_string();
    let (status, why) = broker.http("POST", "/api/publish", Some(API_KEY), &body).await;
    assert_eq!(status, 400, "{why}");
    assert!(why.contains("history"), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_recovery_input_is_refused_and_stays_in_its_namespace() {
    let broker = Broker::with_config(&config(100));
    let mut alice = member(&broker, "ns", None).await;
    let mut bob = member(&broker, "ns", None).await;
    alice.send(chat("x")).await;
    let epoch = bob.recv().await["epoch"].as_str().unwrap().to_owned();

    let mut client = broker.connect("/ws/testbed").await;
    for (positions, why) in [
        (json!([{"group": "g", "epoch": "e", "offset": -1}]), "a negative offset"),
        (json!([{"group": "g", "epoch": "e", "offset": "3"}]), "a non-numeric offset"),
        (json!([{"group": "", "epoch": "e", "offset": 1}]), "an empty group"),
        (json!([{"group": "g", "epoch": "e".repeat(65), "offset": 1}]), "a huge epoch"),
        (json!({"group": "g"}), "not a list"),
    ] {
        let refused = client.request(json!({"action": "recover", "payload": {"positions": positions}})).await;
        assert_eq!(refused["action"], "error", "{why}: {refused}");
        assert_eq!(refused["payload"][0]["loc"][0], "recover", "{why}: {refused}");
    }
    // More positions than a connection may have groups (default 100): the rest are refused.
    let many: Vec<Value> = (0..136).map(|i| json!({"group": format!("g{i}"), "epoch": "e", "offset": 1})).collect();
    let refused = client.request(json!({"action": "recover", "payload": {"positions": many}})).await;
    assert_eq!(refused["action"], "error", "{refused}");
    assert!(refused["payload"].as_array().unwrap().len() >= 36, "{refused}");
    // On the handshake: more than 256 positions, or not JSON, is a 400.
    let huge: Vec<Value> = (0..257).map(|i| json!({"group": format!("g{i}"), "epoch": "e", "offset": 1})).collect();
    let query = percent(&Value::from(huge).to_string());
    assert_eq!(broker.connect_from("127.0.0.1", &format!("/ws/chat/x?recover={query}")).await.err(), Some(400));
    assert_eq!(broker.connect_from("127.0.0.1", "/ws/chat/x?recover=nope").await.err(), Some(400));
    client.assert_alive().await;

    // A position of chat's room `ns` named to the testbed plugin reaches testbed's own group of that
    // name, another stream: nothing of chat's crosses over.
    let mut other = broker.connect("/ws/testbed").await;
    let position = json!({"group": "ns", "epoch": epoch, "offset": 0});
    other.send(json!({"action": "recover", "payload": {"positions": [position]}})).await;
    other.send(json!({"action": "join", "payload": {"group": "ns"}})).await;
    let told = other.recv().await;
    assert_eq!((told["payload"]["recovered"].as_bool(), told["payload"]["replayed"].as_u64()), (Some(false), Some(0)));
    assert_ne!(told["payload"]["epoch"], epoch.as_str());
    other.assert_alive().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_reports_appends_recoveries_and_replayed_frames() {
    let broker = Broker::with_config(&config(100));
    let mut alice = member(&broker, "m", None).await;
    let mut bob = member(&broker, "m", None).await;
    for i in 0..3 {
        alice.send(chat(&i.to_string())).await;
    }
    let mut epoch = String::new();
    for _ in 0..3 {
        epoch = bob.recv().await["epoch"].as_str().unwrap().to_owned();
    }
    for position in
        [json!({"group": "m", "epoch": epoch, "offset": 1}), json!({"group": "m", "epoch": "other", "offset": 1})]
    {
        let query = percent(&json!([position]).to_string());
        let mut client = broker.connect(&format!("/ws/chat/m?recover={query}")).await;
        assert_eq!(client.recv().await["action"], "recovered");
    }
    broker.await_metric("broker_history_appends_total", 3.0).await;
    broker.await_metric(r#"broker_history_recoveries_total{outcome="complete"}"#, 1.0).await;
    broker.await_metric(r#"broker_history_recoveries_total{outcome="epoch_changed"}"#, 1.0).await;
    broker.await_metric("broker_history_replayed_total", 2.0).await;
    assert!(broker.metric("broker_history_bytes").await > 0.0);
}

/// `polyglot_config` with history for the chat of every language, and its `rewind` setting at `n`.
fn rewinding_chat_config(n: u32) -> String {
    let mut config = crate::harness::polyglot_config();
    // chat-meta shares chat's namespace, so it keeps the same history.
    for plugin in ["chat", "chat-meta", "chat-py", "chat-js"] {
        config.push_str(&format!("\n[plugins.{plugin}.history]\nsize = 100\nttl_ms = 60000\n"));
    }
    for plugin in ["chat", "chat-py", "chat-js"] {
        config.push_str(&format!("\n[plugins.{plugin}.settings]\nrewind = {n}\n"));
    }
    config
}

/// `frame` with every `epoch` (its own, and a `recovered` payload's) replaced by `E`: streams of
/// different namespaces have different epochs.
fn without_epoch(mut frame: Value) -> Value {
    if let Some(epoch) = frame.get_mut("epoch") {
        *epoch = json!("E");
    }
    if let Some(epoch) = frame["payload"].get_mut("epoch") {
        *epoch = json!("E");
    }
    frame
}

/// Connects to a room of a chat that rewinds, and returns the client with what it was told first.
async fn newcomer(broker: &Broker, path: &str) -> (Client, Value) {
    let mut client = broker.connect(path).await;
    let told = client.recv().await;
    assert_eq!(told["action"], "recovered", "{path}: {told}");
    (client, told)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chat_in_every_language_gives_a_newcomer_the_last_n_messages_then_live_traffic() {
    const SENT: usize = 5;
    const REWIND: usize = 3;
    let broker = Broker::with_config(&rewinding_chat_config(REWIND as u32));
    let mut seen_by_language = Vec::new();
    for (lang, prefix) in crate::harness::LANGUAGES {
        let path = format!("{prefix}/chat/lobby");
        // The first in an empty room is told where the stream is, and gets nothing.
        let (mut alice, told) = newcomer(&broker, &path).await;
        assert_eq!(told["payload"]["recovered"], true, "{lang}: {told}");
        assert_eq!((told["payload"]["offset"].as_u64(), told["payload"]["replayed"].as_u64()), (Some(0), Some(0)));
        let (mut bob, _) = newcomer(&broker, &path).await;
        for i in 0..SENT {
            alice.send(chat(&format!("m{i}"))).await;
            assert_eq!(bob.recv().await["payload"]["message"], format!("m{i}"), "{lang}");
        }

        let (mut carol, told) = newcomer(&broker, &path).await;
        let epoch = told["payload"]["epoch"].as_str().expect("an epoch").to_owned();
        assert_eq!(
            told["payload"],
            json!({"group": "lobby", "recovered": true, "epoch": epoch, "offset": SENT, "replayed": REWIND}),
            "{lang}"
        );
        let mut seen = vec![without_epoch(told)];
        for i in SENT - REWIND..SENT {
            let frame = carol.recv().await;
            assert_eq!((offset(&frame), frame["epoch"].as_str()), (i as u64 + 1, Some(epoch.as_str())), "{lang}");
            assert_eq!(frame["payload"], chat(&format!("m{i}"))["payload"], "{lang}");
            seen.push(without_epoch(frame));
        }
        // Then the live stream, with no gap.
        alice.send(chat("live")).await;
        let live = carol.recv().await;
        assert_eq!((offset(&live), &live["payload"]["message"]), (SENT as u64 + 1, &json!("live")), "{lang}");
        seen.push(without_epoch(live));
        bob.recv().await;
        for client in [&mut alice, &mut bob, &mut carol] {
            client.assert_alive().await;
        }
        seen_by_language.push((lang, seen));
    }
    let (_, rust) = &seen_by_language[0];
    for (lang, seen) in &seen_by_language[1..] {
        assert_eq!(seen, rust, "{lang}'s newcomer saw other frames than Rust's");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_names_its_own_position_is_not_rewound() {
    let broker = Broker::with_config(&rewinding_chat_config(3));
    let (mut alice, _) = newcomer(&broker, "/ws/chat/own").await;
    let (mut bob, _) = newcomer(&broker, "/ws/chat/own").await;
    let mut epoch = String::new();
    for i in 0..5 {
        alice.send(chat(&format!("m{i}"))).await;
        epoch = bob.recv().await["epoch"].as_str().unwrap().to_owned();
    }
    // Its own `?recover=` wins over the plugin's rewind: only what follows offset 4.
    let positions = json!([{"group": "own", "epoch": epoch, "offset": 4}]);
    let (mut carol, told) =
        newcomer(&broker, &format!("/ws/chat/own?recover={}", percent(&positions.to_string()))).await;
    assert_eq!(told["payload"]["replayed"], 1, "{told}");
    assert_eq!(offset(&carol.recv().await), 5);
    carol.assert_alive().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_reads_a_groups_history_by_offset_and_limit() {
    let broker = Broker::with_config(&config(100));
    let mut sender = broker.connect("/ws/testbed").await;
    let mut member = broker.connect("/ws/testbed").await;
    member.send(json!({"action": "join", "payload": {"group": "g"}})).await;
    member.assert_alive().await;
    let mut received = Vec::new();
    for i in 1..=5 {
        let frame = json!({"action": "tick", "payload": {"i": i}});
        sender.request(json!({"action": "broadcast", "payload": {"group": "g", "frame": frame}})).await;
        received.push(member.recv().await);
    }
    let epoch = received[0]["epoch"].as_str().unwrap().to_owned();
    let read = |after: Option<u64>, limit: u32| json!({"action": "history_read", "payload": {"group": "g", "after": after, "limit": limit}});
    let entries = |page: &Value| -> Vec<(u64, Value)> {
        page["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["offset"].as_u64().unwrap(), serde_json::from_str(e["frame"].as_str().unwrap()).unwrap()))
            .collect()
    };
    let as_received = |offsets: &[u64]| -> Vec<(u64, Value)> {
        offsets.iter().map(|o| (*o, received[*o as usize - 1].clone())).collect()
    };

    // The newest: the frames exactly as members received them, oldest first.
    let page = sender.request(read(None, 2)).await;
    assert_eq!(page["action"], "history_read", "{page}");
    let page = &page["payload"];
    assert_eq!((page["epoch"].as_str(), page["offset"].as_u64()), (Some(epoch.as_str()), Some(5)));
    assert_eq!(entries(page), as_received(&[4, 5]));
    // After an offset, at most `limit`.
    assert_eq!(entries(&sender.request(read(Some(1), 2)).await["payload"]), as_received(&[2, 3]));
    assert_eq!(entries(&sender.request(read(Some(3), 100)).await["payload"]), as_received(&[4, 5]));
    assert_eq!(entries(&sender.request(read(None, 100)).await["payload"]), as_received(&[1, 2, 3, 4, 5]));
    assert_eq!(entries(&sender.request(read(Some(5), 100)).await["payload"]), vec![]);
    assert_eq!(entries(&sender.request(read(None, 0)).await["payload"]), vec![]);
    // A group nothing was sent to: an empty stream.
    let empty = sender.request(json!({"action": "history_read", "payload": {"group": "quiet", "limit": 10}})).await;
    assert_eq!((empty["payload"]["offset"].as_u64(), entries(&empty["payload"])), (Some(0), vec![]), "{empty}");

    // The testbed's rewind: its next join replays the last frames kept, as many as there are.
    for (count, expected) in [(2, vec![4, 5]), (50, vec![1, 2, 3, 4, 5])] {
        let mut newcomer = broker.connect("/ws/testbed").await;
        newcomer.send(json!({"action": "rewind", "payload": {"group": "g", "count": count}})).await;
        newcomer.send(json!({"action": "join", "payload": {"group": "g"}})).await;
        let told = newcomer.recv().await;
        assert_eq!(
            told["payload"],
            json!({"group": "g", "recovered": true, "epoch": epoch, "offset": 5, "replayed": expected.len()}),
            "rewind {count}"
        );
        let mut got = Vec::new();
        for _ in &expected {
            got.push(newcomer.recv().await);
        }
        assert_eq!(got, expected.iter().map(|o| received[*o as usize - 1].clone()).collect::<Vec<_>>());
        newcomer.assert_alive().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_without_history_cannot_be_read_nor_rewound() {
    let broker = Broker::with_config(&default_config(""));
    let mut client = broker.connect("/ws/testbed").await;
    let answer = client.request(json!({"action": "history_read", "payload": {"group": "g", "limit": 10}})).await;
    assert_eq!(answer["action"], "error", "{answer}");
    assert_eq!(answer["payload"][0]["type"], "plugin_error");
    let msg = answer["payload"][0]["msg"].as_str().unwrap();
    assert!(msg.contains("\"testbed\" keeps no group history") && msg.contains("[plugins.testbed.history]"), "{msg}");
    // A rewind does nothing: the join replays nothing and says nothing.
    client.send(json!({"action": "rewind", "payload": {"group": "g", "count": 5}})).await;
    client.send(json!({"action": "join", "payload": {"group": "g"}})).await;
    client.assert_alive().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_read_a_groups_history_over_the_api() {
    let broker = Broker::with_config(&config(100));
    let mut alice = member(&broker, "read", None).await;
    let mut bob = member(&broker, "read", None).await;
    for i in 0..3 {
        alice.send(chat(&format!("m{i}"))).await;
    }
    let mut received = Vec::new();
    for _ in 0..3 {
        received.push(bob.recv().await);
    }
    let (status, body) = broker.http("GET", "/api/groups/chat:read/history?after=1&limit=1", Some(API_KEY), "").await;
    assert_eq!(status, 200, "{body}");
    let page: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((page["epoch"].clone(), page["offset"].as_u64()), (received[0]["epoch"].clone(), Some(3)));
    assert_eq!(page["entries"], json!([{"offset": 2, "frame": received[1]}]), "frames as members got them");
    let (_, newest) = broker.http("GET", "/api/groups/chat:read/history?limit=2", Some(API_KEY), "").await;
    let offsets: Vec<u64> = serde_json::from_str::<Value>(&newest).unwrap()["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, vec![2, 3]);
    assert_eq!(broker.http("GET", "/api/groups/chat:read/history", None, "").await.0, 401, "the API key is asked");
    assert_eq!(broker.http("GET", "/api/groups/echo:x/history", Some(API_KEY), "").await.0, 404);
    assert_eq!(broker.http("GET", "/api/groups/chat:read/history?after=-1", Some(API_KEY), "").await.0, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_describes_recovery_on_routes_with_history_only() {
    let broker = Broker::with_config(&config(100));
    let (status, body) = broker.http("GET", "/asyncapi.json", None, "").await;
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_str(&body).unwrap();
    let channel = |address: &str| {
        let channels = doc["channels"].as_object().unwrap();
        channels.iter().find(|(_, c)| c["address"] == address).map(|(name, c)| (name.clone(), c.clone())).unwrap()
    };
    let (chat, chat_channel) = channel("/ws/chat/{room}");
    assert!(chat_channel["messages"]["client.recover"].is_object(), "{chat_channel}");
    assert!(chat_channel["messages"]["server.recovered"].is_object(), "{chat_channel}");
    assert!(doc["operations"][format!("{chat}.receive.recover")].is_object());
    assert!(doc["operations"][format!("{chat}.send.recovered")].is_object());
    let (_, echo_channel) = channel("/ws/system");
    assert!(echo_channel["messages"].get("client.recover").is_none(), "echo keeps no history");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("history.json");
    std::fs::write(&file, &body).unwrap();
    let output = std::process::Command::new("node")
        .arg(std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("node/asyncapi-validate.mjs"))
        .arg(&file)
        .output()
        .expect("node (`cargo xtask test` installs the parser)");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success() && report.contains("valid: AsyncAPI 3.0.0"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_past_their_ttl_are_not_recovered() {
    let history = "size = 100\nttl_ms = 200\nmeta_ttl_ms = 60000\n";
    let broker = Broker::with_config(&default_config(&format!(
        "[plugins.chat.history]\n{history}[plugins.chat-meta.history]\n{history}"
    )));
    let mut alice = member(&broker, "ttl", None).await;
    let mut bob = member(&broker, "ttl", None).await;
    alice.send(chat("soon gone")).await;
    let epoch = bob.recv().await["epoch"].as_str().unwrap().to_owned();
    let from_zero = percent(&json!([{"group": "ttl", "epoch": epoch, "offset": 0}]).to_string());
    // Within the TTL the frame is replayed; past it, the client is told it is gone.
    crate::harness::eventually("the frame expired", || async {
        let mut client = broker.connect(&format!("/ws/chat/ttl?recover={from_zero}")).await;
        let told = client.recv().await;
        assert_eq!((told["payload"]["epoch"].as_str(), told["payload"]["offset"].as_u64()), (Some(&*epoch), Some(1)));
        told["payload"]["recovered"] == false
    })
    .await;
}

//! Hostile plugins: each attack gets its documented error frame, everyone else keeps being
//! answered while it runs, and the plugin serves the next message.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde_json::{Value, json};

use crate::harness::{Broker, Received, default_config, plugin_path};

/// The test-only plugin again, as `hostile`, with tight limits.
fn config() -> String {
    default_config(&format!(
        r#"
[plugins.hostile]
path = "{testbed}"
timeout_ms = 500
max_memory_bytes = 33554432
max_sends_per_call = 500

[[routes]]
path = "/ws/hostile"
plugin = "hostile"

# The bystander asks as fast as it is answered.
[server]
messages_per_second = 0
"#,
        testbed = plugin_path("testbed").display()
    ))
}

/// Echo round trips on another route until stopped; counts them. Any failure panics the task.
fn bystander(broker: &Arc<Broker>, stop: &Arc<AtomicBool>) -> (tokio::task::JoinHandle<()>, Arc<AtomicU64>) {
    let (broker, stop) = (broker.clone(), stop.clone());
    let answered = Arc::new(AtomicU64::new(0));
    let count = answered.clone();
    let task = tokio::spawn(async move {
        let mut echo = broker.echo_client().await;
        while !stop.load(Ordering::Relaxed) {
            let reply = echo.request(json!({"action": "user_message", "payload": {"message": "still here?"}})).await;
            assert_eq!(reply["action"], "system_echo", "{reply}");
            count.fetch_add(1, Ordering::Relaxed);
        }
    });
    (task, answered)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_attack_is_contained_and_the_plugin_serves_the_next_message() {
    let broker = Arc::new(Broker::with_config(&config()));
    let mut attacker = broker.connect("/ws/hostile").await;
    let attacks = [
        ("spin", "plugin_timeout", "deadline"),
        ("allocate", "plugin_crashed", "memory"),
        // Rust keeps its stack in linear memory: overflowing it runs off the bottom of memory.
        ("recurse", "plugin_crashed", "wasm trap"),
        ("panic", "plugin_crashed", "unreachable"),
        ("flood", "plugin_crashed", "max_sends_per_call"),
    ];
    for (action, kind, says) in attacks {
        let stop = Arc::new(AtomicBool::new(false));
        let (watcher, answered) = bystander(&broker, &stop);
        let before = answered.load(Ordering::Relaxed);
        attacker.send(json!({"action": action, "ref": action})).await;
        // What the call sent before it was stopped arrives first (spin's notice, flood's frames).
        let mut sent = 0;
        let error = loop {
            match attacker.next().await {
                Received::Json(frame) if frame["action"] == "error" => break frame,
                Received::Json(_) => sent += 1,
                other => panic!("{action}: the attacker's connection ended: {other:?}"),
            }
        };
        let problem = &error["payload"][0];
        assert_eq!((problem["type"].as_str(), &problem["loc"]), (Some(kind), &json!([action])), "{action}: {error}");
        assert!(problem["msg"].as_str().unwrap().contains(says), "{action}: {error}");
        assert_eq!(error["ref"], action);
        if action == "flood" {
            assert_eq!(sent, 500, "the frames within the limit were delivered");
        }
        // The bystander was answered while the attack ran (the slow attacks), and is still answered.
        if action == "spin" {
            assert!(answered.load(Ordering::Relaxed) > before, "nobody was answered during the spin");
        }
        stop.store(true, Ordering::Relaxed);
        watcher.await.expect("the bystander was answered every time");
        // The plugin serves the next message, on the same connection.
        let next = attacker.request(json!({"action": "count"})).await;
        assert_eq!(next["action"], "count", "{action}: {next}");
    }
    assert_eq!(broker.metric("broker_limit_hits_total{limit=\"plugins.max_sends_per_call\"}").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasi_gives_a_plugin_no_files_no_sockets_and_no_environment() {
    let broker = Broker::launch(&config(), &[], &[("BROKER_TEST_SECRET", "do not leak")]);
    let mut client = broker.connect("/ws/hostile").await;
    let reply = client.request(json!({"action": "escape"})).await;
    let got = &reply["payload"];
    for what in ["file", "socket", "dir"] {
        assert!(got[what].get("Err").is_some(), "{what} was allowed: {reply}");
    }
    assert_eq!(got["env"], json!([]), "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_to_another_plugins_group_reaches_no_one() {
    let broker = Broker::with_config(&config());
    let mut member = broker.connect("/ws/chat/lobby").await;
    member.assert_alive().await;
    let mut attacker = broker.connect("/ws/hostile").await;
    let frame = json!({"action": "new_chat_message", "payload": {"message": "spoofed", "name": "admin"}});
    let reply = attacker.request(json!({"action": "broadcast", "payload": {"group": "lobby", "frame": frame}})).await;
    assert_eq!(reply["payload"], 0, "its `lobby` is its own namespace's: {reply}");
    // The chat member's next frame is the answer to its own ping, not the spoof.
    let pong = member.request(json!({"action": "ping"})).await;
    assert_eq!(pong, json!({"action": "pong", "payload": Value::Null}));
}

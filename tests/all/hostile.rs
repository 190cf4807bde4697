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
    // What the client is told is the broker's own words; wasmtime's go to the log.
    let attacks = [
        ("spin", "plugin_timeout", "deadline"),
        ("allocate", "plugin_crashed", "ran out of memory"),
        // Rust keeps its stack in linear memory: overflowing it runs off the bottom of memory.
        ("recurse", "plugin_crashed", "failed while handling"),
        ("panic", "plugin_crashed", "failed while handling"),
        ("flood", "plugin_crashed", "max_sends_per_call"),
    ];
    for (action, kind, says) in attacks {
        // A connection per attack: each one's crashes are charged to it (three close it).
        let mut attacker = broker.connect("/ws/hostile").await;
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
        let msg = problem["msg"].as_str().unwrap();
        assert!(msg.contains(says), "{action}: {error}");
        for internal in ["wasm", "trap", "backtrace", "0x"] {
            assert!(!msg.contains(internal), "{action}: wasmtime's words reached the client: {error}");
        }
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

/// Three clients make the plugin trap on purpose, over and over, for ten seconds: each of their
/// connections is closed (1011) after three crashes, while a bystander on the same plugin keeps
/// being answered. One client's crashes are charged to it, not to everyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_make_a_plugin_trap_are_closed_and_others_are_served() {
    // Quiet: thousands of crashes are each logged.
    let broker = Arc::new(Broker::launch(&config(), &[], &[("RUST_LOG", "off")]));
    let stop = Arc::new(AtomicBool::new(false));
    let attackers: Vec<_> = (0..3)
        .map(|_| {
            let (broker, stop) = (broker.clone(), stop.clone());
            tokio::spawn(async move {
                let mut closed = 0;
                while !stop.load(Ordering::Relaxed) {
                    let mut attacker = broker.connect("/ws/hostile").await;
                    let mut crashes = 0;
                    let code = loop {
                        attacker.send(json!({"action": "panic"})).await;
                        match attacker.next().await {
                            Received::Json(error) => {
                                assert_eq!(error["payload"][0]["type"], "plugin_crashed", "{error}");
                                crashes += 1;
                            }
                            Received::Close(frame) => break frame.map(|f| u16::from(f.code)),
                            Received::Ended => break None,
                        }
                    };
                    assert_eq!((code, crashes), (Some(1011), 3), "closed after its third crash");
                    closed += 1;
                }
                closed
            })
        })
        .collect();
    let mut bystander = broker.connect("/ws/hostile").await;
    let (mut asked, mut answered) = (0, 0);
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < until {
        asked += 1;
        if bystander.request(json!({"action": "count"})).await["action"] == "count" {
            answered += 1;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut closed = 0;
    for attacker in attackers {
        closed += attacker.await.expect("every attacking connection was closed after three crashes");
    }
    assert!(closed >= 3, "{closed} attacking connections closed");
    assert!(answered * 100 >= asked * 95, "the bystander was answered {answered} times of {asked}");
    assert!(broker.metric("broker_limit_hits_total{limit=\"plugins.crashes_per_connection\"}").await >= 3.0);
}

/// The defaults agree: a message the broker takes fits in the plugin's memory (it is answered, in
/// every language), and a larger one is refused with 1009 before the plugin sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_the_broker_accepts_fits_in_its_plugin() {
    let broker = Broker::with_config(&crate::harness::polyglot_config());
    // The default plugin limit: a 256th of its 64 MiB of memory.
    const LIMIT: usize = 256 << 10;
    let fits = json!({"action": "user_message", "payload": {"message": "z".repeat(LIMIT - 100)}}).to_string();
    let over = json!({"action": "user_message", "payload": {"message": "z".repeat(LIMIT)}}).to_string();
    for (lang, prefix) in crate::harness::LANGUAGES {
        let route = format!("{prefix}/system");
        let mut client = broker.echo_client_at(&route).await;
        for _ in 0..3 {
            client.send_text(&fits).await;
            let reply = client.recv().await;
            assert_eq!(reply["action"], "system_echo", "{lang}: {}", reply["payload"]);
        }
        client.send_text(&over).await;
        assert_eq!(client.recv_close().await.0, 1009, "{lang}");
        broker.echo_client_at(&route).await.assert_alive().await;
    }
    assert_eq!(broker.metric("broker_limit_hits_total{limit=\"plugins.max_message_bytes\"}").await, 3.0);
}

//! Several broker processes sharing one Redis (`[cluster] backend = "redis"`): chat, presence,
//! key-value state and the publish API across nodes; a node killed; Redis restarted.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{Value, json};

use crate::assistant::{ask, assistant};
use crate::harness::{API_KEY, Broker, Received, WAIT, default_config, eventually};

/// A Redis for one test, in its own folder (removed after the server is killed).
struct Redis {
    server: bench::Redis,
    _dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Redis {
        let dir = tempfile::tempdir().expect("temp dir");
        Redis { server: bench::Redis::start(dir.path()).expect("start redis-server"), _dir: dir }
    }

    fn port(&self) -> u16 {
        self.server.port
    }

    fn kill(&mut self) {
        self.server.kill();
    }

    fn restart(&mut self) {
        self.server.restart().expect("restart redis-server");
    }

    /// Empties Redis, as a restart without persistence or a failover to an empty replica would.
    fn flush_all(&self) {
        let mut tcp = TcpStream::connect(("127.0.0.1", self.port())).expect("connect to redis");
        tcp.set_read_timeout(Some(WAIT)).expect("a read timeout");
        tcp.write_all(b"*1\r\n$8\r\nFLUSHALL\r\n").expect("send FLUSHALL");
        let mut reply = [0u8; 5];
        tcp.read_exact(&mut reply).expect("read the reply");
        assert_eq!(&reply, b"+OK\r\n");
    }

    /// How many clients (nodes) are subscribed to `channel`: `PUBSUB NUMSUB`, spoken in RESP2.
    fn subscribers(&self, channel: &str) -> u64 {
        let mut tcp = TcpStream::connect(("127.0.0.1", self.port())).expect("connect to redis");
        tcp.set_read_timeout(Some(WAIT)).expect("a read timeout");
        let command = format!("*3\r\n$6\r\nPUBSUB\r\n$6\r\nNUMSUB\r\n${}\r\n{channel}\r\n", channel.len());
        tcp.write_all(command.as_bytes()).expect("send PUBSUB");
        // `*2 $len channel :count`: read until the integer's line is complete.
        let mut reply = String::new();
        let mut buffer = [0u8; 256];
        while !(reply.contains("\r\n:") && reply.ends_with("\r\n")) {
            let n = tcp.read(&mut buffer).expect("read the reply");
            assert!(n > 0, "redis closed the connection: {reply:?}");
            reply.push_str(&String::from_utf8_lossy(&buffer[..n]));
        }
        let count = reply.rsplit("\r\n:").next().and_then(|n| n.trim().parse().ok());
        count.unwrap_or_else(|| panic!("a PUBSUB NUMSUB reply: {reply:?}"))
    }
}

/// A node of the cluster on `redis`, with the default routes.
fn node(redis: &Redis, name: &str) -> Broker {
    node_with(redis, name, "")
}

/// A node of the cluster on `redis`, with the default routes and `extra` broker.toml.
fn node_with(redis: &Redis, name: &str, extra: &str) -> Broker {
    Broker::with_config(&default_config(&format!(
        r#"
[server]
messages_per_second = 0

[cluster]
backend = "redis"
redis_url = "redis://127.0.0.1:{port}"
node_id = "{name}"
heartbeat_ms = 100
node_ttl_ms = 1000
{extra}"#,
        port = redis.port()
    )))
}

fn chat(message: &str) -> Value {
    json!({"action": "new_chat_message", "payload": {"message": message, "name": "t"}})
}

async fn members(broker: &Broker, group: &str) -> Vec<u64> {
    let (status, body) = broker.http("GET", &format!("/api/groups/{group}/members"), Some(API_KEY), "").await;
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).expect("JSON");
    body["members"].as_array().expect("members").iter().map(|m| m.as_u64().expect("an id")).collect()
}

/// Waits until `broker` lists `count` members of `group`, and returns them.
async fn await_members(broker: &Broker, group: &str, count: usize) -> Vec<u64> {
    eventually(&format!("{count} members of {group}"), || async { members(broker, group).await.len() == count }).await;
    members(broker, group).await
}

/// The node number a broker took from Redis, from `/readyz`.
async fn node_number(broker: &Broker) -> u64 {
    let (_, body) = broker.http("GET", "/readyz", None, "").await;
    let ready: Value = serde_json::from_str(&body).expect("JSON");
    ready["cluster"]["node"].as_u64().unwrap_or_else(|| panic!("no cluster node in {ready}"))
}

async fn metric_or_zero(broker: &Broker, name: &str) -> f64 {
    let (_, body) = broker.http("GET", "/metrics", None, "").await;
    body.lines()
        .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_crosses_nodes_once_and_in_order() {
    let redis = Redis::start();
    let (one, two) = (node(&redis, "one"), node(&redis, "two"));
    let mut a = one.connect("/ws/chat/lobby").await;
    let mut b = two.connect("/ws/chat/lobby").await;
    let mut c = two.connect("/ws/chat/lobby").await;
    // A node lists its own member at once and the others' once their joins reached Redis.
    let ids = await_members(&one, "chat:lobby", 3).await;
    assert_eq!(await_members(&two, "chat:lobby", 3).await, ids, "both nodes list the same members");

    for i in 0..1000 {
        b.send(chat(&format!("m{i}"))).await;
    }
    b.send(chat("end")).await;
    for receiver in [&mut a, &mut c] {
        for i in 0..1000 {
            assert_eq!(receiver.recv().await["payload"]["message"], format!("m{i}"));
        }
        // Nothing twice: the frame after the thousandth is the last one sent.
        assert_eq!(receiver.recv().await["payload"]["message"], "end");
    }
    a.send(chat("back")).await;
    assert_eq!(b.recv().await["payload"]["message"], "back");
    assert_eq!(c.recv().await["payload"]["message"], "back");

    // A node listens to a group's channel only while it has members there.
    let channel = "broker:g:chat:lobby";
    assert_eq!(redis.subscribers(channel), 2);
    drop((b, c));
    await_members(&one, "chat:lobby", 1).await;
    eventually("node two unsubscribed", || async { redis.subscribers(channel) == 1 }).await;
    a.assert_alive().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_spans_nodes_and_a_killed_node_drops_out() {
    let redis = Redis::start();
    let (one, mut two) = (node(&redis, "one"), node(&redis, "two"));
    let mut a = one.connect("/ws/chat/room").await;
    let mut b = two.connect("/ws/chat/room").await;
    let both = await_members(&one, "chat:room", 2).await;
    assert_ne!(both[0] >> 44, both[1] >> 44, "ids carry their node: {both:?}");

    // A plugin sends to a connection of another node by its id.
    let mut x = one.connect("/ws/testbed").await;
    let mut y = two.connect("/ws/testbed").await;
    // `join` replies nothing: the pong after it proves it ran.
    for client in [&mut x, &mut y] {
        client.send(json!({"action": "join", "payload": {"group": "pair"}})).await;
        client.assert_alive().await;
    }
    let pair = await_members(&two, "testbed:pair", 2).await;
    let listed = y.request(json!({"action": "members", "payload": {"group": "pair"}})).await;
    assert_eq!(listed["payload"], json!(pair), "the plugin lists both nodes' members");
    let node_one = node_number(&one).await;
    let x_id = *pair.iter().find(|id| **id >> 44 == node_one).expect("x is on node one");
    let frame = json!({"action": "hello", "payload": "across"});
    y.send(json!({"action": "send_to", "payload": {"connection": x_id, "frame": frame}})).await;
    y.assert_alive().await;
    assert_eq!(x.recv().await, frame);

    two.kill();
    // Within node_ttl_ms (1 s) of its last heartbeat the dead node's member is no longer listed.
    await_members(&one, "chat:room", 1).await;
    assert!(matches!(b.next().await, Received::Ended | Received::Close(_)));

    // Its client reconnects to the surviving node and carries on.
    let mut b = one.connect("/ws/chat/room").await;
    await_members(&one, "chat:room", 2).await;
    b.send(chat("I am back")).await;
    assert_eq!(a.recv().await["payload"]["message"], "I am back");
    x.assert_alive().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_loses_only_what_crossed_during_it() {
    let mut redis = Redis::start();
    let (one, two) = (node(&redis, "one"), node(&redis, "two"));
    let mut a = one.connect("/ws/chat/r").await;
    let mut c = one.connect("/ws/chat/r").await;
    let mut b = two.connect("/ws/chat/r").await;
    await_members(&two, "chat:r", 3).await;
    b.send(chat("before")).await;
    assert_eq!(a.recv().await["payload"]["message"], "before");
    assert_eq!(c.recv().await["payload"]["message"], "before");

    let mut d = one.connect("/ws/chat/here").await;
    let mut e = one.connect("/ws/chat/here").await;
    await_members(&one, "chat:here", 2).await;

    redis.kill();
    // Local traffic goes on while Redis is away. (A room with members on node two too would get the
    // frame as well if Redis were back within the publisher's 500 ms: it is not queued longer.)
    d.send(chat("local while down")).await;
    assert_eq!(e.recv().await["payload"]["message"], "local while down");
    // What crosses nodes meanwhile is dropped, and counted.
    let dropped = r#"broker_cluster_dropped_total{op="publish"}"#;
    b.send(chat("lost")).await;
    eventually("a publish dropped on node two", || async { metric_or_zero(&two, dropped).await >= 1.0 }).await;
    assert_eq!(metric_or_zero(&two, "broker_cluster_redis_up").await, 0.0);

    redis.restart();
    // Both nodes write their presence to the empty Redis again, and subscribe again.
    await_members(&one, "chat:r", 3).await;
    await_members(&two, "chat:r", 3).await;
    for broker in [&one, &two] {
        broker.await_metric("broker_cluster_redis_up", 1.0).await;
    }
    b.send(chat("after")).await;
    assert_eq!(a.recv().await["payload"]["message"], "after");
    assert_eq!(c.recv().await["payload"]["message"], "after");
    a.send(chat("and back")).await;
    assert_eq!(b.recv().await["payload"]["message"], "and back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_and_the_publish_api_span_nodes() {
    let redis = Redis::start();
    let (one, two) = (node(&redis, "one"), node(&redis, "two"));

    // An order placed through node one is found through node two (the plugin's key-value store,
    // with its compare-and-swap order counter, lives in Redis).
    let mut here = assistant(&one, "/ws/assistant").await;
    let order = ask(&mut here, "I'd like to order 2 small Hawaiian").await;
    let placed: Value = serde_json::from_str(order[1]["response"].as_str().expect("a tool result")).expect("JSON");
    let id = placed["order_id"].as_str().expect("an order id").to_owned();
    let mut there = assistant(&two, "/ws/assistant").await;
    let status = ask(&mut there, &format!("What is the status of {id}?")).await;
    assert!(status[1]["response"].as_str().unwrap_or_default().contains("received"), "{}", status[1]);
    let second = ask(&mut there, "I'd like to order 1 large pepperoni").await;
    let second: Value = serde_json::from_str(second[1]["response"].as_str().expect("a tool result")).expect("JSON");
    assert_ne!(second["order_id"], placed["order_id"], "the order counter is shared");

    // Compare-and-swap and expiry hold across nodes.
    let mut x = one.connect("/ws/testbed").await;
    let mut y = two.connect("/ws/testbed").await;
    let write = |payload: Value| json!({"action": "kv_write", "payload": payload});
    let read = json!({"action": "kv_read", "payload": {"key": "k"}});
    let swapped = |frame: Value| frame["payload"].as_bool().unwrap_or_else(|| panic!("{frame}"));
    assert!(swapped(x.request(write(json!({"key": "k", "value": "1", "cas": true}))).await));
    assert!(!swapped(y.request(write(json!({"key": "k", "value": "2", "cas": true}))).await), "taken");
    assert!(!swapped(y.request(write(json!({"key": "k", "value": "2", "cas": true, "expected": "0"}))).await));
    assert!(swapped(y.request(write(json!({"key": "k", "value": "2", "cas": true, "expected": "1"}))).await));
    assert_eq!(x.request(read.clone()).await["payload"], "2");
    x.request(write(json!({"key": "k", "value": "brief", "ttl_ms": 300}))).await;
    assert_eq!(y.request(read.clone()).await["payload"], "brief");
    // Expiry is Redis's: poll (bounded) until the value is gone.
    let deadline = tokio::time::Instant::now() + WAIT;
    while !y.request(read.clone()).await["payload"].is_null() {
        assert!(tokio::time::Instant::now() < deadline, "the value did not expire");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The publish API of either node reaches members on both.
    let mut a = one.connect("/ws/chat/news").await;
    let mut b = two.connect("/ws/chat/news").await;
    await_members(&one, "chat:news", 2).await;
    let frame = json!({"action": "announcement", "payload": "hello all"});
    let body = json!({"group": "chat:news", "frame": frame}).to_string();
    let (status, answer) = two.http("POST", "/api/publish", Some(API_KEY), &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(a.recv().await, frame);
    assert_eq!(b.recv().await, frame);
}

/// A node of the cluster on `redis` whose chat rooms keep history in Redis.
fn history_node(redis: &Redis, name: &str) -> Broker {
    let history = "size = 1000\nttl_ms = 60000\n";
    node_with(redis, name, &format!("[plugins.chat.history]\n{history}[plugins.chat-meta.history]\n{history}"))
}

fn offset(frame: &Value) -> u64 {
    frame["offset"].as_u64().unwrap_or_else(|| panic!("no offset in {frame}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_whose_node_is_killed_recovers_on_another_node_without_a_gap() {
    const TOTAL: u64 = 300;
    let redis = Redis::start();
    let (mut one, two) = (history_node(&redis, "one"), history_node(&redis, "two"));
    let mut bob = one.connect("/ws/chat/h").await;
    let mut dave = two.connect("/ws/chat/h").await;
    let mut carol = two.connect("/ws/chat/h").await;
    await_members(&two, "chat:h", 3).await;

    // Both nodes number from Redis: the same offsets and epoch on either side.
    for i in 0..5 {
        dave.send(chat(&format!("m{i}"))).await;
    }
    let mut last = Value::Null;
    for i in 1..=5 {
        let (on_one, on_two) = (bob.recv().await, carol.recv().await);
        assert_eq!((offset(&on_one), offset(&on_two)), (i, i));
        assert_eq!(on_one["epoch"], on_two["epoch"]);
        last = on_one;
    }
    let epoch = last["epoch"].as_str().unwrap().to_owned();

    // Bob's node dies; Dave keeps talking while Bob is away and while he comes back on node two.
    one.kill();
    assert!(matches!(bob.next().await, Received::Ended | Received::Close(_)));
    let talking = tokio::spawn(async move {
        for i in 5..TOTAL {
            dave.send(chat(&format!("m{i}"))).await;
            if i % 50 == 0 {
                dave.assert_alive().await;
            }
        }
        dave.assert_alive().await;
        dave
    });
    let positions = json!([{"group": "h", "epoch": epoch, "offset": 5}]).to_string();
    let encoded: String = positions.bytes().map(|b| format!("%{b:02X}")).collect();
    let mut bob = two.connect(&format!("/ws/chat/h?recover={encoded}")).await;
    let told = bob.recv().await;
    assert_eq!(told["action"], "recovered", "{told}");
    assert_eq!(
        (told["payload"]["recovered"].as_bool(), told["payload"]["epoch"].as_str()),
        (Some(true), Some(&*epoch))
    );
    assert_eq!(told["payload"]["offset"].as_u64().unwrap(), 5 + told["payload"]["replayed"].as_u64().unwrap());
    for expected in 6..=TOTAL {
        let frame = bob.recv().await;
        assert_eq!(offset(&frame), expected, "a gap, a duplicate or a reordering: {frame}");
        assert_eq!(frame["payload"]["message"], format!("m{}", expected - 1));
    }
    let mut dave = talking.await.unwrap();
    dave.assert_alive().await;
    bob.assert_alive().await;
    for expected in 6..=TOTAL {
        assert_eq!(offset(&carol.recv().await), expected);
    }

    // A position from before Redis lost the history (another epoch) is not recovered.
    let stale = json!([{"group": "h", "epoch": "0000000000000000", "offset": 5}]).to_string();
    let encoded: String = stale.bytes().map(|b| format!("%{b:02X}")).collect();
    let mut late = two.connect(&format!("/ws/chat/h?recover={encoded}")).await;
    let told = late.recv().await;
    assert_eq!(
        told["payload"],
        json!({"group": "h", "recovered": false, "epoch": epoch, "offset": TOTAL, "replayed": 0})
    );

    // Redis loses everything: the group's history is gone, and its next frame says so by its epoch.
    redis.flush_all();
    await_members(&two, "chat:h", 4).await;
    dave.send(chat("after the restart")).await;
    let renewed = carol.recv().await;
    assert_eq!(offset(&renewed), 1);
    assert_ne!(renewed["epoch"], epoch.as_str(), "a new epoch after Redis lost the history");
    let old = json!([{"group": "h", "epoch": epoch, "offset": TOTAL}]).to_string();
    let encoded: String = old.bytes().map(|b| format!("%{b:02X}")).collect();
    let mut back = two.connect(&format!("/ws/chat/h?recover={encoded}")).await;
    let told = back.recv().await;
    assert_eq!(told["payload"]["recovered"], false, "{told}");
    assert_eq!(told["payload"]["epoch"], renewed["epoch"]);
}

/// `history_node` with the testbed's groups keeping history too, and the chat rewinding `rewind`.
fn rewinding_node(redis: &Redis, name: &str, rewind: u32) -> Broker {
    let history = "size = 1000\nttl_ms = 60000\n";
    node_with(
        redis,
        name,
        &format!(
            "[plugins.chat.history]\n{history}[plugins.chat.settings]\nrewind = {rewind}\n\
             [plugins.chat-meta.history]\n{history}[plugins.testbed.history]\n{history}"
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_read_and_rewind_history_kept_in_redis_from_any_node() {
    let redis = Redis::start();
    let (one, two) = (rewinding_node(&redis, "one", 3), rewinding_node(&redis, "two", 3));
    let mut alice = one.connect("/ws/chat/r").await;
    assert_eq!(alice.recv().await["action"], "recovered");
    let mut bob = two.connect("/ws/chat/r").await;
    assert_eq!(bob.recv().await["action"], "recovered");
    await_members(&one, "chat:r", 2).await;
    let mut received = Vec::new();
    for i in 0..5 {
        alice.send(chat(&format!("m{i}"))).await;
        received.push(bob.recv().await);
    }
    let epoch = received[0]["epoch"].as_str().unwrap().to_owned();

    // A newcomer on either node gets the last 3, as members got them, then the live stream.
    for node in [&one, &two] {
        let mut carol = node.connect("/ws/chat/r").await;
        let told = carol.recv().await;
        assert_eq!(
            told["payload"],
            json!({"group": "r", "recovered": true, "epoch": epoch, "offset": 5, "replayed": 3}),
            "{told}"
        );
        for expected in &received[2..] {
            assert_eq!(&carol.recv().await, expected);
        }
        carol.assert_alive().await;
    }
    alice.send(chat("live")).await;
    assert_eq!(offset(&bob.recv().await), 6);

    // The testbed reads a group's history from Redis on a node other than the writer's.
    let mut member = one.connect("/ws/testbed").await;
    member.send(json!({"action": "join", "payload": {"group": "g"}})).await;
    member.assert_alive().await;
    await_members(&two, "testbed:g", 1).await;
    let mut writer = two.connect("/ws/testbed").await;
    let mut frames = Vec::new();
    for i in 1..=3 {
        let frame = json!({"action": "tick", "payload": {"i": i}});
        writer.request(json!({"action": "broadcast", "payload": {"group": "g", "frame": frame}})).await;
        frames.push(member.recv().await);
    }
    let page = member.request(json!({"action": "history_read", "payload": {"group": "g", "limit": 2}})).await;
    let entries = |page: &Value| -> Vec<(u64, Value)> {
        page["payload"]["entries"]
            .as_array()
            .unwrap_or_else(|| panic!("{page}"))
            .iter()
            .map(|e| (e["offset"].as_u64().unwrap(), serde_json::from_str(e["frame"].as_str().unwrap()).unwrap()))
            .collect()
    };
    assert_eq!(page["payload"]["offset"], 3, "{page}");
    assert_eq!(page["payload"]["epoch"], frames[0]["epoch"]);
    assert_eq!(entries(&page), vec![(2, frames[1].clone()), (3, frames[2].clone())], "{page}");
    let after =
        member.request(json!({"action": "history_read", "payload": {"group": "g", "after": 1, "limit": 1}})).await;
    assert_eq!(entries(&after), vec![(2, frames[1].clone())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_publish_retried_on_another_node_is_delivered_once() {
    let redis = Redis::start();
    let (one, two) = (history_node(&redis, "one"), history_node(&redis, "two"));
    let mut on_one = one.connect("/ws/chat/idem").await;
    let mut on_two = two.connect("/ws/chat/idem").await;
    await_members(&two, "chat:idem", 2).await;
    let body = |text: &str| {
        json!({"group": "chat:idem", "frame": {"action": "notice", "payload": {"text": text}}, "idempotency_key": "order-7"})
            .to_string()
    };
    let (status, first) = one.http("POST", "/api/publish", Some(API_KEY), &body("once")).await;
    assert_eq!(status, 200, "{first}");
    let first: Value = serde_json::from_str(&first).unwrap();
    assert_eq!((first["offset"].as_u64(), first["duplicate"].as_bool()), (Some(1), Some(false)), "{first}");
    // The backend retries on the other node: Redis remembers the key.
    let (_, retry) = two.http("POST", "/api/publish", Some(API_KEY), &body("once")).await;
    let retry: Value = serde_json::from_str(&retry).unwrap();
    assert_eq!((retry["offset"].as_u64(), retry["duplicate"].as_bool()), (Some(1), Some(true)), "{retry}");
    let (_, next) = two.http("POST", "/api/publish", Some(API_KEY), &body("once").replace("order-7", "order-8")).await;
    assert_eq!(serde_json::from_str::<Value>(&next).unwrap()["offset"], 2);
    for client in [&mut on_one, &mut on_two] {
        assert_eq!(offset(&client.recv().await), 1);
        assert_eq!(offset(&client.recv().await), 2, "the retry was delivered");
        client.assert_alive().await;
    }
}

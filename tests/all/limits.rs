//! Limits on hostile or broken clients: message rate, connections in total and per address,
//! the handshake deadline, idle connections pinged and, when dead, closed, and clients that stop
//! reading: every closed connection gives back its socket, its memory and its place.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{Broker, Client, Received, WAIT, default_config, within};

fn with_server(keys: &str) -> Broker {
    Broker::with_config(&default_config(&format!("[server]\n{keys}\n")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_its_rate_is_refused_then_closed_with_1008() {
    // One message a second after a burst of three; ten refusals in a row close the connection.
    let broker = with_server("messages_per_second = 1\nmessage_burst = 3\nrate_limit_close_after = 10");
    let mut client = broker.connect("/ws/testbed").await;
    let started = Instant::now();
    for _ in 0..8 {
        client.send(json!({"action": "ping"})).await;
    }
    let mut answers = Vec::new();
    for _ in 0..8 {
        answers.push(client.recv().await);
    }
    // At most one token comes back per second while this runs.
    let refills = started.elapsed().as_secs() as usize + 1;
    let pongs = answers.iter().filter(|a| a["action"] == "pong").count();
    assert!((3..=3 + refills).contains(&pongs), "{answers:?}");
    assert!(answers[..3].iter().all(|a| a["action"] == "pong"), "the burst is served: {answers:?}");
    let refused = answers.iter().find(|a| a["action"] == "error").expect("a refusal");
    assert_eq!(refused["payload"][0]["type"], "rate_limited", "{refused}");
    // Keep going: the connection is closed as abusive.
    let closed = async {
        loop {
            client.send(json!({"action": "ping"})).await;
            if let Received::Close(Some(frame)) = client.next().await {
                return u16::from(frame.code);
            }
        }
    };
    assert_eq!(tokio::time::timeout(WAIT, closed).await.expect("closed within the wait"), 1008);
    assert!(broker.metric("broker_limit_hits_total{limit=\"server.messages_per_second\"}").await >= 5.0);
    assert_eq!(broker.metric("broker_limit_hits_total{limit=\"server.rate_limit_close_after\"}").await, 1.0);
    broker.connect("/ws/testbed").await.assert_alive().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_limited_per_address_and_in_total() {
    let broker = with_server("max_connections_per_ip = 2\nmax_connections = 3");
    let first = broker.connect_from("127.0.0.2", "/ws/testbed").await.unwrap();
    let _second = broker.connect_from("127.0.0.2", "/ws/testbed").await.unwrap();
    assert_eq!(broker.connect_from("127.0.0.2", "/ws/testbed").await.err(), Some(429));
    let _third = broker.connect_from("127.0.0.3", "/ws/testbed").await.unwrap();
    assert_eq!(broker.connect_from("127.0.0.4", "/ws/testbed").await.err(), Some(503));
    assert_eq!(broker.metric("broker_limit_hits_total{limit=\"server.max_connections_per_ip\"}").await, 1.0);
    assert_eq!(broker.metric("broker_limit_hits_total{limit=\"server.max_connections\"}").await, 1.0);
    // A place is given back when its connection closes.
    drop(first);
    crate::harness::eventually("the closed connection's place is free", || async {
        match broker.connect_from("127.0.0.2", "/ws/testbed").await {
            Ok(mut client) => {
                client.assert_alive().await;
                true
            }
            Err(_) => false,
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_handshake_is_cut_off_and_others_are_served() {
    let broker = with_server("handshake_timeout_ms = 300");
    let mut slow = TcpStream::connect(broker.addr).await.unwrap();
    slow.write_all(b"GET /ws/system HTTP/1.1\r\nHost: localhost\r\n").await.unwrap();
    let started = Instant::now();
    // Meanwhile, others are served.
    broker.echo_client().await.assert_alive().await;
    let mut rest = Vec::new();
    // Ends with EOF or a reset, either way: the broker hung up.
    let _ = tokio::time::timeout(WAIT, slow.read_to_end(&mut rest)).await.expect("the broker hung up");
    assert!(started.elapsed() < Duration::from_secs(10), "cut off after {:?}", started.elapsed());
    assert!(!String::from_utf8_lossy(&rest).contains("101"), "never upgraded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_clients_are_pinged_and_dead_ones_closed_and_cleaned_up() {
    let broker = with_server("ping_interval_ms = 100\nidle_timeout_ms = 600");
    // A live client: its WebSocket library answers pings, so it stays.
    let mut live = broker.connect("/ws/testbed").await;
    let mut pings = 0;
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        match tokio::time::timeout(Duration::from_millis(100), live.ws.next()).await {
            Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
            Ok(Some(Ok(other))) => panic!("unexpected {other:?}"),
            Ok(other) => panic!("the live client was dropped: {other:?}"),
            Err(_) => {}
        }
    }
    assert!(pings >= 2, "pinged {pings} times");
    live.assert_alive().await;
    // Reading on, it answers the pings (the library does) while the dead peer below goes.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let keep_alive = tokio::spawn(async move {
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                _ = &mut stopped => return live,
                message = live.ws.next() => assert!(matches!(message, Some(Ok(Message::Ping(_)))), "{message:?}"),
            }
        }
    });

    // A dead peer: it completes the handshake, then neither reads nor answers.
    let before = broker.metric("broker_connections").await;
    let mut dead = TcpStream::connect(broker.addr).await.unwrap();
    dead.write_all(
        b"GET /ws/testbed HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = [0u8; 12];
    dead.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 101");
    broker.await_metric("broker_connections", before + 1.0).await;
    broker.await_metric("broker_connections", before).await;
    assert_eq!(broker.metric("broker_limit_hits_total{limit=\"server.idle_timeout_ms\"}").await, 1.0);
    drop(dead);
    stop.send(()).unwrap();
    keep_alive.await.expect("the live client answered every ping").assert_alive().await;
}

/// The broker's sockets and memory once it serves `clients` clients.
struct Baseline {
    sockets: usize,
    rss_kib: u64,
}

impl Baseline {
    fn of(broker: &Broker) -> Baseline {
        Baseline { sockets: broker.open_sockets(), rss_kib: broker.rss_kib() }
    }

    /// Waits until the broker holds no more sockets than at the baseline, and its memory is back
    /// within 10% of it, failing past `limit`.
    async fn back_within(&self, broker: &Broker, limit: Duration, after: &str) {
        within(limit, &format!("sockets back to {} after {after}", self.sockets), || async {
            broker.open_sockets() <= self.sockets
        })
        .await;
        let what = format!("memory back within 10% of {} KiB after {after}", self.rss_kib);
        let mut last = 0;
        let back = tokio::time::timeout(limit, async {
            loop {
                last = broker.rss_kib();
                if last <= self.rss_kib + self.rss_kib / 10 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        assert!(back.await.is_ok(), "not within {limit:?}: {what}; it holds {last} KiB");
    }
}

/// Connects `n` members to a room from `from`, each proven served once; they never read again.
async fn members(broker: &Broker, from: &str, room: &str, n: usize) -> Vec<Client> {
    let mut members = Vec::new();
    while members.len() < n {
        match broker.connect_from(from, &format!("/ws/chat/{room}")).await {
            Ok(mut member) => {
                member.assert_alive().await;
                members.push(member);
            }
            // The last round's sockets are not all released yet: their places are still taken.
            Err(429) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(status) => panic!("refused with {status}"),
        }
    }
    members
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumers_closed_with_4008_give_back_sockets_memory_and_places() {
    const GRACE_MS: u64 = 1000;
    const PER_IP: usize = 25;
    let broker = with_server(&format!(
        "messages_per_second = 0\nshutdown_grace_ms = {GRACE_MS}\nmax_connections_per_ip = {PER_IP}"
    ));
    let mut sender = broker.connect_from("127.0.0.2", "/ws/chat/flood").await.unwrap();
    // 200 KB frames (within the chat plugin's message limit), 160 per round: far more than a
    // member's socket buffers and 8 MiB outbound queue hold.
    let big = "x".repeat(200_000);
    let frame = json!({"action": "new_chat_message", "payload": {"message": big, "name": "S"}});
    // The baseline is a broker that has served a round of such frames (plugin instances and the
    // sender's read buffer grown to fit them) to a member that reads.
    let mut reader = broker.connect("/ws/chat/flood").await;
    reader.assert_alive().await;
    for _ in 0..160 {
        sender.send(frame.clone()).await;
        assert_eq!(reader.recv().await["payload"]["name"], "S");
    }
    drop(reader);
    broker.await_metric("broker_connections", 1.0).await;
    sender.assert_alive().await;
    let baseline = Baseline::of(&broker);
    for round in 0..2 {
        // Each member holds a place of 127.0.0.5 until its socket is really gone.
        let stalled = members(&broker, "127.0.0.5", "flood", 20).await;
        assert!(
            broker.open_sockets() <= baseline.sockets + PER_IP,
            "round {round}: the broker holds {} sockets, more than its places allow",
            broker.open_sockets()
        );
        for _ in 0..160 {
            sender.send(frame.clone()).await;
        }
        sender.assert_alive().await;
        crate::harness::eventually("every stalled member is closed", || async {
            broker.metric("broker_slow_consumer_closes_total").await >= 20.0 * (round + 1) as f64
        })
        .await;
        // Closed: within the close grace (the close frame cannot go out) and the write loop's
        // slack, every socket, every buffer and every place is given back, though the members
        // still hold their ends open.
        baseline.back_within(&broker, Duration::from_millis(4 * GRACE_MS + 2000), "the 4008 closes").await;
        drop(stalled);
    }
    assert_eq!(broker.metric("broker_connections").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_sends_but_never_reads_is_closed_and_released() {
    const IDLE_MS: u64 = 3000;
    const GRACE_MS: u64 = 1000;
    let broker = with_server(&format!(
        "messages_per_second = 0\nping_interval_ms = 1000\nidle_timeout_ms = {IDLE_MS}\n\
         shutdown_grace_ms = {GRACE_MS}\noutbound_queue_bytes = 1048576"
    ));
    // Echoes of 64 KiB: the baseline is a broker that has answered one.
    let message = json!({"action": "user_message", "payload": {"message": "y".repeat(64 * 1024)}}).to_string();
    let mut bystander = broker.echo_client().await;
    bystander.send_text(&message).await;
    assert_eq!(bystander.recv().await["action"], "system_echo");
    let baseline = Baseline::of(&broker);
    let mut greedy = broker.echo_client().await;
    // Never reading a reply: the broker's replies fill the socket and the outbound queue, then it
    // stops reading, then TCP stops the sender.
    let mut sent = 0;
    while sent < 2000 {
        match tokio::time::timeout(Duration::from_millis(500), greedy.ws.send(Message::text(message.clone()))).await {
            Ok(Ok(())) => sent += 1,
            _ => break,
        }
    }
    assert!(sent < 2000, "the broker kept reading {sent} echoes nobody read");
    // It went quiet when the broker stopped reading it: closed after the idle timeout, whatever
    // is queued, and released within the close grace.
    let limit = Duration::from_millis(IDLE_MS + 4 * GRACE_MS + 2000);
    baseline.back_within(&broker, limit, "a client that never reads").await;
    assert!(broker.metric("broker_limit_hits_total{limit=\"server.idle_timeout_ms\"}").await >= 1.0);
    broker.echo_client().await.assert_alive().await;
    drop((bystander, greedy));
}

//! Limits on hostile or broken clients: message rate, connections in total and per address,
//! the handshake deadline, and idle connections pinged and, when dead, closed.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{Broker, Client, Received, WAIT, default_config};

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

/// Connects to `path` from the source address `from` (any 127.0.0.0/8 address works on Linux).
async fn connect_from(broker: &Broker, from: &str, path: &str) -> Result<Client, u16> {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let tcp = socket.connect(broker.addr).await.unwrap();
    match tokio_tungstenite::client_async(broker.url(path), tokio_tungstenite::MaybeTlsStream::Plain(tcp)).await {
        Ok((ws, _)) => Ok(Client { ws }),
        Err(WsError::Http(response)) => Err(response.status().as_u16()),
        Err(other) => panic!("handshake failed: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_limited_per_address_and_in_total() {
    let broker = with_server("max_connections_per_ip = 2\nmax_connections = 3");
    let first = connect_from(&broker, "127.0.0.2", "/ws/testbed").await.unwrap();
    let _second = connect_from(&broker, "127.0.0.2", "/ws/testbed").await.unwrap();
    assert_eq!(connect_from(&broker, "127.0.0.2", "/ws/testbed").await.err(), Some(429));
    let _third = connect_from(&broker, "127.0.0.3", "/ws/testbed").await.unwrap();
    assert_eq!(connect_from(&broker, "127.0.0.4", "/ws/testbed").await.err(), Some(503));
    assert_eq!(broker.metric("broker_limit_hits_total{limit=\"server.max_connections_per_ip\"}").await, 1.0);
    assert_eq!(broker.metric("broker_limit_hits_total{limit=\"server.max_connections\"}").await, 1.0);
    // A place is given back when its connection closes.
    drop(first);
    crate::harness::eventually("the closed connection's place is free", || async {
        match connect_from(&broker, "127.0.0.2", "/ws/testbed").await {
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

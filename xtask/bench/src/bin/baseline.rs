//! The native baseline: the echo and chat protocol of the broker's plugins, hand-written on
//! tokio-tungstenite with no plugin and no broker machinery. What the broker is compared against.
//!
//! `baseline [ADDR]` prints `listening on ADDR` and serves `/ws/system` and `/ws/chat/{room}`.
//!
//! `BASELINE_WORK_NS` (default 0) adds that much busy work to each message it reads: a native server
//! made as slow in user space as the broker, to measure what the slowness alone costs in the kernel
//! when the load generator shares the cores (BENCHMARKS.md, #21).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// Each room's members by connection id.
type RoomMap = HashMap<String, HashMap<u64, mpsc::Sender<Utf8Bytes>>>;
type Rooms = Arc<Mutex<RoomMap>>;

/// The rooms, locked. Nothing panics while holding the lock, and a map left by a panicking task
/// would still be whole, so a poisoned lock is taken as it is.
fn lock(rooms: &Rooms) -> MutexGuard<'_, RoomMap> {
    rooms.lock().unwrap_or_else(PoisonError::into_inner)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    bench::raise_fd_limit();
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:0".into());
    let listener = TcpListener::bind(&addr).await?;
    println!("listening on {}", listener.local_addr()?);
    let rooms: Rooms = Arc::default();
    let work = match std::env::var("BASELINE_WORK_NS") {
        Ok(ns) => Duration::from_nanos(ns.parse().context("BASELINE_WORK_NS is a number of nanoseconds")?),
        Err(_) => Duration::ZERO,
    };
    // SIGTERM returns from `main`, so a build instrumented for profile-guided optimization writes
    // its profile at exit: `cargo xtask bench` trains the baseline as `dist` trains the broker.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut next_id = 0u64;
    loop {
        let (tcp, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            _ = terminate.recv() => return Ok(()),
        };
        next_id += 1;
        tokio::spawn(serve(tcp, next_id, rooms.clone(), work));
    }
}

/// Spins for `work`: CPU time in user space, with no system call and no sleep.
fn busy(work: Duration) {
    let until = Instant::now() + work;
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

// The handshake callback's error type is tungstenite's `ErrorResponse`, large by its design.
#[allow(clippy::result_large_err)]
async fn serve(tcp: TcpStream, id: u64, rooms: Rooms, work: Duration) {
    let _ = tcp.set_nodelay(true);
    let mut path = String::new();
    let callback = |request: &Request, response: Response| {
        path = request.uri().path().to_owned();
        Ok(response)
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async_with_config(tcp, callback, Some(bench::ws_config())).await else {
        return;
    };
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::channel::<Utf8Bytes>(1024);
    let writer = tokio::spawn(async move {
        while let Some(text) = rx.recv().await {
            let sent =
                if rx.is_empty() { sink.send(Message::Text(text)).await } else { sink.feed(Message::Text(text)).await };
            if sent.is_err() {
                break;
            }
        }
    });
    let room = path.trim_end_matches('/').strip_prefix("/ws/chat/").map(str::to_owned);
    match &room {
        Some(room) => {
            lock(&rooms).entry(room.clone()).or_default().insert(id, tx.clone());
        }
        None => {
            let welcome =
                json!({"action": "system_echo", "payload": {"message": "🔧 System: Connection established!"}});
            let _ = tx.send(welcome.to_string().into()).await;
        }
    }
    while let Some(Ok(message)) = stream.next().await {
        let Message::Text(text) = message else { continue };
        let Ok(frame) = serde_json::from_str::<Value>(&text) else { continue };
        if !work.is_zero() {
            busy(work);
        }
        match (frame["action"].as_str(), &room) {
            (Some("ping"), _) => {
                let _ = tx.send(r#"{"action":"pong","payload":null}"#.into()).await;
            }
            (Some("user_message"), None) => {
                let message = frame["payload"]["message"].as_str().unwrap_or_default();
                let reply =
                    json!({"action": "system_echo", "payload": {"message": format!("🔧 System Echo: {message}")}});
                let _ = tx.send(reply.to_string().into()).await;
            }
            (Some("new_chat_message"), Some(room)) => {
                // Serialized once, shared by every member, as the broker does.
                let out =
                    Utf8Bytes::from(json!({"action": "new_chat_message", "payload": frame["payload"]}).to_string());
                let members: Vec<_> = lock(&rooms)
                    .get(room)
                    .map(|m| m.iter().filter(|(k, _)| **k != id).map(|(_, v)| v.clone()).collect())
                    .unwrap_or_default();
                for member in members {
                    let _ = member.try_send(out.clone());
                }
            }
            _ => {}
        }
    }
    if let Some(room) = &room {
        let mut rooms = lock(&rooms);
        if let Some(members) = rooms.get_mut(room) {
            members.remove(&id);
            if members.is_empty() {
                rooms.remove(room);
            }
        }
    }
    drop(tx);
    let _ = writer.await;
}

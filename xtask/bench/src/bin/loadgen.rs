//! The load generator: real WebSocket connections speaking the broker's protocol. Each scenario
//! runs for a bounded time and prints one JSON line of results on stdout.
//!
//! ```text
//! loadgen echo    URL CONNECTIONS SECONDS WARMUP_SECONDS [ACTION [SERVER_PID [RATE]]]
//!                                                                   request/reply, closed loop or
//!                                                                   paced to RATE messages/s in all
//!                                                                   (and the server's CPU meanwhile);
//!                                                                   ACTION `turn`: an assistant's question,
//!                                                                   its reply the frames up to the final one
//! loadgen fanout  URL MEMBERS MESSAGES [MEMBERS_URL]                one sender, a room of MEMBERS
//!                                                                   (on MEMBERS_URL: another node)
//! loadgen paced  URL MEMBERS MESSAGES RATE                        fanout with the sender held to RATE
//!                                                                   messages/s (0: unpaced)
//! loadgen recover URL MISSED                                        a chat member away while MISSED
//!                                                                   messages go, then recovering them
//! loadgen hold    URL COUNT                                         COUNT idle connections until stdin closes
//! loadgen reload  URL CONNECTIONS FILE MARKER=VERSION_FILE...       echo while FILE is replaced
//! loadgen attack  URL ACTION SECONDS [CLIENTS]                      clients repeating a hostile action
//!                                                                   (big:BYTES: an oversized user_message),
//!                                                                   reconnecting when closed for it
//! ```
//! Connections are spread over 16 source addresses (127.0.0.1-16), so 100,000 of them do not run
//! out of ephemeral ports. `LOADGEN_THREADS` sets the runtime's worker threads (default: see
//! `THREADS`).

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use bench::results;
use bench::stamped::Stamped;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::net::TcpSocket;
use tokio::sync::Semaphore;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

type Ws = WebSocketStream<Stamped>;

const SOURCES: u8 = 16;
/// Connections being opened at once.
const CONNECT_CONCURRENCY: usize = 256;
/// The longest any phase may take: a scenario always ends.
const PHASE_LIMIT: Duration = Duration::from_secs(120);
/// The runtime's worker threads, unless `LOADGEN_THREADS` says otherwise.
const THREADS: usize = 2;

fn main() -> Result<()> {
    let threads = match std::env::var("LOADGEN_THREADS") {
        Ok(n) => n.parse().context("LOADGEN_THREADS is a number of threads")?,
        Err(_) => THREADS,
    };
    tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()?.block_on(scenario())
}

async fn scenario() -> Result<()> {
    bench::raise_fd_limit();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).cloned().with_context(|| format!("missing argument {i}; see the doc comment"));
    let num = |i: usize| -> Result<u64> { arg(i)?.parse().with_context(|| format!("argument {i} is not a number")) };
    let result = match arg(0)?.as_str() {
        "echo" => {
            let action = args.get(5).cloned().unwrap_or_else(|| "user_message".into());
            let (url, connections) = (arg(1)?, num(2)? as usize);
            let (duration, warmup) = (Duration::from_secs(num(3)?), Duration::from_secs(num(4)?));
            let server = args.get(6).map(|pid| pid.parse()).transpose().context("SERVER_PID is a number")?;
            let rate = args.get(7).map(|rate| rate.parse()).transpose().context("RATE is a number")?;
            let timing = Timing { duration, warmup, server, rate: rate.unwrap_or(0) };
            serde_json::to_string(&echo(&url, connections, timing, &action).await?)?
        }
        "fanout" => {
            let sender = arg(1)?;
            let members_url = args.get(4).cloned().unwrap_or_else(|| sender.clone());
            serde_json::to_string(&fanout(&sender, &members_url, num(2)? as usize, num(3)?).await?)?
        }
        "paced" => serde_json::to_string(&paced(&arg(1)?, num(2)? as usize, num(3)?, num(4)?).await?)?,
        "recover" => serde_json::to_string(&recover(&arg(1)?, num(2)?).await?)?,
        "hold" => serde_json::to_string(&hold(&arg(1)?, num(2)? as usize).await?)?,
        "reload" => {
            let versions = args[4..]
                .iter()
                .map(|v| v.split_once('=').map(|(m, p)| (m.to_owned(), p.to_owned())).context("MARKER=FILE"))
                .collect::<Result<Vec<_>>>()?;
            serde_json::to_string(&reload(&arg(1)?, num(2)? as usize, &arg(3)?, &versions).await?)?
        }
        "attack" => {
            let clients = args.get(4).map_or(Ok(1), |n| n.parse()).context("CLIENTS is a number")?;
            serde_json::to_string(&attack(&arg(1)?, &arg(2)?, Duration::from_secs(num(3)?), clients).await?)?
        }
        other => bail!("unknown scenario {other:?}"),
    };
    // The caller may have stopped reading (it reads `hold`'s first line only).
    let _ = writeln!(std::io::stdout(), "{result}");
    Ok(())
}

/// `ws://host:port/path` -> (address, url).
fn target(url: &str) -> Result<SocketAddr> {
    let rest = url.strip_prefix("ws://").context("a ws:// URL")?;
    let authority = rest.split('/').next().unwrap_or_default();
    authority.parse().with_context(|| format!("{authority} is not IP:PORT"))
}

async fn connect(url: &str, index: usize) -> Result<Ws> {
    connect_stamped(url, index, false).await
}

/// A connection; `stamps`: its reads keep the kernel's receive time (see `bench::stamped`).
async fn connect_stamped(url: &str, index: usize, stamps: bool) -> Result<Ws> {
    let addr = target(url)?;
    let socket = TcpSocket::new_v4()?;
    let source = Ipv4Addr::new(127, 0, 0, 1 + (index % SOURCES as usize) as u8);
    socket.bind(SocketAddr::from((source, 0)))?;
    let tcp = socket.connect(addr).await?;
    tcp.set_nodelay(true)?;
    let tcp = Stamped::new(tcp, stamps)?;
    let (ws, _) = tokio_tungstenite::client_async_with_config(url, tcp, Some(bench::ws_config())).await?;
    Ok(ws)
}

/// Opens `count` connections, at most `CONNECT_CONCURRENCY` at a time, each made ready by `ready`;
/// `stamps` as in `connect_stamped`.
async fn connect_all<F, Fut>(url: &str, count: usize, stamps: bool, ready: F) -> Result<Vec<Ws>>
where
    F: Fn(Ws) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Ws>> + Send,
{
    let gate = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let tasks: Vec<_> = (0..count)
        .map(|i| {
            let (gate, url, ready) = (gate.clone(), url.to_owned(), ready.clone());
            tokio::spawn(async move {
                let _permit = gate.acquire_owned().await?;
                tokio::time::timeout(PHASE_LIMIT, async { ready(connect_stamped(&url, i, stamps).await?).await })
                    .await?
            })
        })
        .collect();
    let mut all = Vec::with_capacity(count);
    for task in tasks {
        all.push(task.await??);
    }
    Ok(all)
}

async fn next_text(ws: &mut Ws) -> Result<Utf8Bytes> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => return Ok(text),
            Some(Ok(Message::Close(frame))) => bail!("closed: {frame:?}"),
            Some(Ok(_)) => continue,
            Some(Err(error)) => return Err(error.into()),
            None => bail!("connection ended"),
        }
    }
}

/// Reads an assistant's frames up to its final response; an exception ends the run, as a turn that
/// failed measures nothing.
async fn turned(ws: &mut Ws) -> Result<()> {
    loop {
        let text = next_text(ws).await?;
        if text.contains(r#""final_response""#) {
            return Ok(());
        }
        if text.contains(r#""exception""#) {
            bail!("the assistant's turn failed: {text}");
        }
    }
}

/// Waits for the welcome frame of the echo route.
async fn welcomed(mut ws: Ws) -> Result<Ws> {
    next_text(&mut ws).await?;
    Ok(ws)
}

/// A ping round trip: after it, whatever `on-connect` did (joining a room) is done.
async fn pinged(mut ws: Ws) -> Result<Ws> {
    ws.send(Message::text(r#"{"action":"ping"}"#)).await?;
    while !next_text(&mut ws).await?.contains("pong") {}
    Ok(ws)
}

/// Microseconds from 1 to a minute, three significant digits.
fn histogram() -> Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 60_000_000, 3)?)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// How long `echo` runs, and whose CPU it measures besides its own.
struct Timing {
    duration: Duration,
    warmup: Duration,
    /// The server's pid: its CPU in the measured time is reported.
    server: Option<u32>,
    /// Messages a second over all connections, each connection sending at its even share of it
    /// (staggered, and never before its last reply); 0: closed loop, each sends on each reply.
    rate: u64,
}

async fn echo(url: &str, connections: usize, timing: Timing, action: &str) -> Result<results::Echo> {
    // The echo route and the assistant greet each connection; another plugin's route is ready once
    // it answers a ping.
    let clients = if matches!(action, "user_message" | "turn") {
        connect_all(url, connections, true, welcomed).await?
    } else {
        connect_all(url, connections, true, pinged).await?
    };
    let turn = action == "turn";
    let frame = Utf8Bytes::from(if action == "ping" {
        r#"{"action":"ping"}"#.to_owned()
    } else if turn {
        json!({"action": "user_message", "payload": {"message": "Price of a large margherita?"}}).to_string()
    } else {
        json!({"action": action, "payload": {"message": "hello"}}).to_string()
    });
    let start = Instant::now();
    let (measure_from, end) = (start + timing.warmup, start + timing.warmup + timing.duration);
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut ws)| {
            let frame = frame.clone();
            let interval = (timing.rate > 0).then(|| Duration::from_secs_f64(connections as f64 / timing.rate as f64));
            let mut next = start + interval.unwrap_or_default().mul_f64(i as f64 / connections as f64);
            tokio::spawn(async move {
                let (mut at_socket, mut read, mut count) = (histogram()?, histogram()?, 0u64);
                loop {
                    if let Some(interval) = interval {
                        tokio::time::sleep_until(next.into()).await;
                        next += interval;
                    }
                    if Instant::now() >= end {
                        break;
                    }
                    ws.get_mut().take_received();
                    // The wall clock, as the kernel stamps the reply's arrival with it.
                    let (sent, sent_at) = (Instant::now(), SystemTime::now());
                    ws.send(Message::Text(frame.clone())).await?;
                    if turn {
                        turned(&mut ws).await?;
                    } else {
                        next_text(&mut ws).await?;
                    }
                    let took = sent.elapsed();
                    if sent >= measure_from {
                        let arrived =
                            ws.get_mut().take_received().context("a reply without the kernel's receive timestamp")?;
                        // Were the wall clock stepped back meanwhile, the round trip counts as 1 µs.
                        at_socket.record(micros(arrived.duration_since(sent_at).unwrap_or_default()))?;
                        read.record(micros(took))?;
                        count += 1;
                    }
                }
                Ok::<_, anyhow::Error>((at_socket, read, count))
            })
        })
        .collect();
    // CPU is read at the edges of the measured time, so connecting and warming up do not count.
    let cpu = |pid: Option<u32>| pid.map(bench::cpu_time).transpose();
    let own = Some(std::process::id());
    tokio::time::sleep_until(measure_from.into()).await;
    let (server_before, own_before) = (cpu(timing.server)?, cpu(own)?);
    tokio::time::sleep_until(end.into()).await;
    let (server_after, own_after) = (cpu(timing.server)?, cpu(own)?);
    let (mut at_socket, mut read, mut replies) = (histogram()?, histogram()?, 0);
    for task in tasks {
        let (s, r, c) = task.await??;
        at_socket.add(s)?;
        read.add(r)?;
        replies += c;
    }
    Ok(results::Echo {
        connections: connections as u64,
        replies,
        per_second: replies as f64 / timing.duration.as_secs_f64(),
        p50_us: at_socket.value_at_quantile(0.5),
        p99_us: at_socket.value_at_quantile(0.99),
        p999_us: at_socket.value_at_quantile(0.999),
        read_p50_us: read.value_at_quantile(0.5),
        read_p99_us: read.value_at_quantile(0.99),
        server_cpu: server_after.zip(server_before).map(|(after, before)| after - before),
        loadgen_cpu_seconds: (own_after.unwrap_or_default() - own_before.unwrap_or_default()).total(),
    })
}

/// Sends `action` (a misbehaving handler of the test plugin) again and again for `duration`, each
/// time waiting for its error frame; a successful call in between keeps the plugin out of crash
/// backoff, so every attack runs for real.
/// `clients` clients repeating a hostile action for `duration`; a connection the broker closes for
/// it is replaced by a new one. `big:BYTES` sends a `user_message` of BYTES instead of an action.
async fn attack(url: &str, action: &str, duration: Duration, clients: usize) -> Result<results::Attack> {
    let attack = match action.strip_prefix("big:") {
        Some(bytes) => {
            json!({"action": "user_message", "payload": {"message": "x".repeat(bytes.parse()?)}}).to_string()
        }
        None => json!({"action": action}).to_string(),
    };
    // After an error frame, the plugin must serve the next message (the test plugin's `count`).
    let recover = (!action.starts_with("big:")).then_some(r#"{"action":"count"}"#);
    let end = Instant::now() + duration;
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let (url, attack) = (url.to_owned(), attack.clone());
            tokio::spawn(async move {
                let (mut attacks, mut closed) = (0u64, 0u64);
                let mut ws = connect(&url, client).await?;
                while Instant::now() < end {
                    ws.send(Message::text(attack.as_str())).await?;
                    attacks += 1;
                    let mut open = answered(&mut ws, r#""action":"error""#).await;
                    if let (true, Some(recover)) = (open, recover) {
                        ws.send(Message::text(recover)).await?;
                        open = answered(&mut ws, r#""action":"count""#).await;
                    }
                    // Closed for its crashes: a new connection goes on.
                    if !open {
                        closed += 1;
                        ws = connect(&url, client).await?;
                    }
                }
                Ok::<_, anyhow::Error>((attacks, closed))
            })
        })
        .collect();
    let (mut attacks, mut closed) = (0, 0);
    for task in tasks {
        let (a, c) = task.await??;
        attacks += a;
        closed += c;
    }
    Ok(results::Attack { action: action.to_owned(), attacks, closed })
}

/// Reads until a frame containing `marker` (true) or the end of the connection (false).
async fn answered(ws: &mut Ws, marker: &str) -> bool {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) if text.contains(marker) => return true,
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return false,
            Some(Ok(_)) => continue,
        }
    }
}

async fn fanout(url: &str, members_url: &str, members: usize, messages: u64) -> Result<results::Fanout> {
    let spread = spread(url, members_url, members, messages, 0).await?;
    Ok(results::Fanout {
        members: members as u64,
        messages,
        deliveries: spread.deliveries,
        lost: messages * members as u64 - spread.deliveries,
        per_second: spread.per_second(),
        p50_us: spread.hist.value_at_quantile(0.5),
        p99_us: spread.hist.value_at_quantile(0.99),
    })
}

/// `fanout` with the sender held to `rate` messages a second (0: unpaced).
async fn paced(url: &str, members: usize, messages: u64, rate: u64) -> Result<results::Paced> {
    let spread = spread(url, url, members, messages, rate).await?;
    Ok(results::Paced {
        members: members as u64,
        messages,
        rate,
        deliveries: spread.deliveries,
        lost: messages * members as u64 - spread.deliveries,
        numbered: spread.numbered,
        per_second: spread.per_second(),
        p50_us: spread.hist.value_at_quantile(0.5),
        p99_us: spread.hist.value_at_quantile(0.99),
    })
}

/// What the members of a fan-out received.
struct Spread {
    deliveries: u64,
    /// Deliveries carrying a history offset.
    numbered: u64,
    /// From the first message sent to the last delivery.
    elapsed: Duration,
    /// Send to delivery, µs.
    hist: Histogram<u64>,
}

impl Spread {
    fn per_second(&self) -> f64 {
        self.deliveries as f64 / self.elapsed.as_secs_f64()
    }
}

/// One sender on `url`, `members` receivers on `members_url` (the same room), `messages` sent at
/// `rate` a second (0: as fast as the window below allows).
async fn spread(url: &str, members_url: &str, members: usize, messages: u64, rate: u64) -> Result<Spread> {
    // A pong proves the member's join is done, on another node too (the broker answers it after
    // `on-connect`, which returns once the cluster can reach the member).
    let receivers = connect_all(members_url, members, false, pinged).await?;
    let mut sender = pinged(connect(url, members).await?).await?;
    let epoch = Instant::now();
    let delivered = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = receivers
        .into_iter()
        .map(|mut ws| {
            let delivered = delivered.clone();
            tokio::spawn(async move {
                let (mut hist, mut numbered) = (histogram()?, 0u64);
                for _ in 0..messages {
                    let text = tokio::time::timeout(PHASE_LIMIT, next_text(&mut ws)).await??;
                    // `"message":"<sent at, µs since epoch>"`, found without a JSON parse: the load
                    // generator shares the CPU with the broker.
                    let sent_us: u64 = text
                        .split("\"message\":\"")
                        .nth(1)
                        .and_then(|rest| rest.split('"').next())
                        .and_then(|n| n.parse().ok())
                        .context("a fanout frame")?;
                    hist.record(micros(epoch.elapsed()).saturating_sub(sent_us).max(1))?;
                    numbered += u64::from(frame_offset(&text).is_some());
                    delivered.fetch_add(1, Ordering::Relaxed);
                }
                Ok::<_, anyhow::Error>((hist, numbered))
            })
        })
        .collect();
    // Keep at most WINDOW messages in flight per member, so queues never fill: this measures
    // throughput, not slow-consumer handling.
    const WINDOW: u64 = 64;
    let started = Instant::now();
    for sent in 0..messages {
        if rate > 0 {
            tokio::time::sleep_until((started + Duration::from_secs_f64(sent as f64 / rate as f64)).into()).await;
        }
        while sent * members as u64 > delivered.load(Ordering::Relaxed) + WINDOW * members as u64 {
            tokio::task::yield_now().await;
        }
        let frame = json!({"action": "new_chat_message", "payload": {"message": micros(epoch.elapsed()).to_string(), "name": "s"}});
        sender.send(Message::text(frame.to_string())).await?;
    }
    let (mut hist, mut numbered) = (histogram()?, 0);
    for task in tasks {
        let (h, n) = task.await??;
        hist.add(h)?;
        numbered += n;
    }
    let elapsed = started.elapsed();
    Ok(Spread { deliveries: delivered.load(Ordering::Relaxed), numbered, elapsed, hist })
}

/// A member of the chat room `url` reads one frame (its group, epoch and offset) and leaves;
/// `missed` messages go to the room; it comes back with `?recover=` and that position. Times the
/// way back: handshake, the `recovered` frame, the last replayed frame.
async fn recover(url: &str, missed: u64) -> Result<results::Recovery> {
    let chat = |i: u64| {
        // About 100 bytes of text, like a line of chat.
        let message = format!("message {i:06} {}", "lorem ipsum ".repeat(7));
        Message::text(json!({"action": "new_chat_message", "payload": {"message": message, "name": "s"}}).to_string())
    };
    let mut sender = pinged(connect(url, 0).await?).await?;
    let mut away = pinged(connect(url, 1).await?).await?;
    sender.send(chat(0)).await?;
    let first: serde_json::Value =
        serde_json::from_str(&tokio::time::timeout(PHASE_LIMIT, next_text(&mut away)).await??)?;
    let position = json!([{
        "group": first["group"].as_str().context("no group: is the room's history on?")?,
        "epoch": first["epoch"].as_str().context("no epoch")?,
        "offset": first["offset"].as_u64().context("no offset")?,
    }]);
    let from = position[0]["offset"].as_u64().unwrap_or_default();
    away.close(None).await?;
    drop(away);
    for i in 1..=missed {
        sender.send(chat(i)).await?;
    }
    // One connection's messages are handled in order: after the pong, every message is in history.
    sender.send(Message::text(r#"{"action":"ping"}"#)).await?;
    tokio::time::timeout(PHASE_LIMIT, async {
        while !next_text(&mut sender).await?.contains("pong") {}
        Ok::<_, anyhow::Error>(())
    })
    .await??;

    let url = format!("{url}?recover={}", percent_encode(&position.to_string()));
    let started = Instant::now();
    let mut back = tokio::time::timeout(PHASE_LIMIT, connect(&url, 2)).await??;
    let handshake = started.elapsed();
    let told: serde_json::Value =
        serde_json::from_str(&tokio::time::timeout(PHASE_LIMIT, next_text(&mut back)).await??)?;
    let told_at = started.elapsed();
    anyhow::ensure!(told["action"] == "recovered", "the first frame back is not `recovered`: {told}");
    let replayed = told["payload"]["replayed"].as_u64().context("no replayed")?;
    let mut in_order = true;
    for expected in from + 1..=from + replayed {
        let text = tokio::time::timeout(PHASE_LIMIT, next_text(&mut back)).await??;
        in_order &= frame_offset(&text) == Some(expected);
    }
    let last = started.elapsed();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Ok(results::Recovery {
        missed,
        recovered: told["payload"]["recovered"] == true,
        replayed,
        in_order,
        handshake_ms: ms(handshake),
        told_ms: ms(told_at),
        last_ms: ms(last),
    })
}

/// The top-level `"offset":N` of a frame of a group with history, found without a JSON parse: the
/// broker writes `{"group":..,"offset":N,"epoch":..` before the rest of the frame, so a payload's own
/// `offset` key, which comes later, is not taken for it.
fn frame_offset(text: &str) -> Option<u64> {
    let rest = text.split("\"offset\":").nth(1)?;
    let digits = rest.split(|c: char| !c.is_ascii_digit()).next()?;
    digits.parse().ok()
}

/// `text` with every byte but the unreserved ones percent-encoded, for a query value.
fn percent_encode(text: &str) -> String {
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

async fn hold(url: &str, count: usize) -> Result<results::Held> {
    let started = Instant::now();
    let clients = connect_all(url, count, false, welcomed).await?;
    // The caller measures the server now, then closes our stdin.
    let ready = results::Ready { ready: clients.len() as u64, connect_seconds: started.elapsed().as_secs_f64() };
    println!("{}", serde_json::to_string(&ready)?);
    let _ = tokio::task::spawn_blocking(|| std::io::stdin().read_line(&mut String::new())).await;
    Ok(results::Held { held: clients.len() as u64 })
}

async fn reload(url: &str, connections: usize, file: &str, versions: &[(String, String)]) -> Result<results::Reload> {
    let clients = connect_all(url, connections, false, pinged).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut ws| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let (mut n, mut worst, mut lost) = (0u64, Duration::ZERO, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let sent = Instant::now();
                    ws.send(Message::text(json!({"action": "echo", "payload": {"n": n}}).to_string())).await?;
                    let reply = tokio::time::timeout(PHASE_LIMIT, next_text(&mut ws)).await??;
                    worst = worst.max(sent.elapsed());
                    if !reply.contains(&format!("\"n\":{n}}}")) {
                        lost += 1;
                    }
                }
                Ok::<_, anyhow::Error>((n, worst, lost))
            })
        })
        .collect();
    let mut probe = pinged(connect(url, connections).await?).await?;
    let mut swaps = Vec::new();
    for (marker, version) in versions {
        let bytes = std::fs::read(version)?;
        let partial = format!("{file}.partial");
        std::fs::write(&partial, bytes)?;
        let written = Instant::now();
        std::fs::rename(&partial, file)?;
        loop {
            probe.send(Message::text(r#"{"action":"echo","payload":{"n":0}}"#)).await?;
            if next_text(&mut probe).await?.contains(marker.as_str()) {
                break;
            }
            if written.elapsed() > PHASE_LIMIT {
                bail!("{marker} never served");
            }
        }
        swaps.push(written.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    let (mut replies, mut worst, mut lost) = (0, Duration::ZERO, 0);
    for task in tasks {
        let (n, w, l) = task.await??;
        replies += n;
        worst = worst.max(w);
        lost += l;
    }
    let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
    // The first two versions are compiled; later swaps alternate between them, from the cache.
    let warm: Vec<f64> = swaps.iter().skip(2).map(ms).collect();
    let mut sorted = warm.clone();
    sorted.sort_by(f64::total_cmp);
    Ok(results::Reload {
        connections: connections as u64,
        swaps: swaps.len() as u64,
        replies,
        lost,
        worst_reply_ms: ms(&worst),
        cold_swap_ms: swaps.iter().take(2).map(ms).collect(),
        warm_swap_ms_median: sorted.get(sorted.len() / 2).copied().unwrap_or(0.0),
        warm_swap_ms_max: sorted.last().copied().unwrap_or(0.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offset_is_the_frames_top_level_one() {
        let frame = r#"{"group":"r","offset":42,"epoch":"ab","action":"new_chat_message","payload":{"offset":7}}"#;
        assert_eq!(frame_offset(frame), Some(42));
        assert_eq!(frame_offset(r#"{"group":"r","offset":10001,"epoch":"ab"}"#), Some(10001));
        assert_eq!(frame_offset(r#"{"action":"new_chat_message","payload":{"message":"x"}}"#), None);
        assert_eq!(frame_offset(r#"{"offset":"x"}"#), None);
    }

    #[test]
    fn a_position_is_percent_encoded_for_the_query() {
        let position = r#"[{"group":"r 1","offset":0}]"#;
        assert_eq!(percent_encode(position), "%5B%7B%22group%22%3A%22r%201%22%2C%22offset%22%3A0%7D%5D");
        assert_eq!(percent_encode("a-Z_0.~"), "a-Z_0.~");
    }
}

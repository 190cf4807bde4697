//! The dispatch path alone: frame text in, reply bytes out, with no sockets, through the real
//! connection task (`edge::connection::run` over an in-memory duplex pipe) and the real plugin of
//! a route of a `broker.toml`; then each stage of it on its own, so the difference between the
//! whole and the sum of the stages is what the task, the queue hop and WebSocket framing cost.
//!
//! `cargo xtask bench dispatch` runs it (built in the release profile); by hand:
//! `cargo bench -p broker --bench dispatch -- [--config broker.toml] [--route /ws/system]
//! [--messages 200000] [--json]`. It prints a markdown table, or with `--json` one JSON object.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a benchmark: any failure ends the run")]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use broker::config::Config;
use broker::edge::connection::{self, Setup};
use broker::edge::limits::{Admission, MessageRate};
use broker::edge::live::Live;
use broker::hub::metrics::Metrics;
use broker::hub::outbound::{self, Bounds};
use broker::hub::registry::{self, Registry};
use broker::hub::state::{self, Kv};
use broker::plugin::host::{Context, HandlerError};
use broker::plugin::{Runtime, Services};
use broker::wire::protocol;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use wasmtime::Store;
use wasmtime::component::{Component, Linker, TypedFunc};

const FRAME: &str = r#"{"action":"user_message","payload":{"message":"Hello"},"ref":"r1"}"#;
const PING: &str = r#"{"action":"ping","ref":"r1"}"#;

struct Args {
    config: PathBuf,
    route: String,
    messages: u64,
    json: bool,
}

fn args() -> Args {
    let mut parsed = Args { config: "broker.toml".into(), route: "/ws/system".into(), messages: 200_000, json: false };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--config" => parsed.config = args.next().expect("--config PATH").into(),
            "--route" => parsed.route = args.next().expect("--route PATH"),
            "--messages" => parsed.messages = args.next().and_then(|n| n.parse().ok()).expect("--messages N"),
            "--json" => parsed.json = true,
            // `cargo bench` passes `--bench`; other harness flags mean nothing here.
            _ => {}
        }
    }
    parsed
}

/// CPU time of the whole process so far (user + system), which is what a message costs the
/// server: every thread's work for it, the runtime's wake-ups included.
fn cpu() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a whole rusage into the pointer it is given.
    #[allow(unsafe_code, reason = "getrusage has no safe wrapper in std")]
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// What `n` runs of a stage cost, per run.
struct Cost {
    name: &'static str,
    wall_ns: f64,
    cpu_ns: f64,
}

async fn measure<F: AsyncFnMut()>(name: &'static str, n: u64, f: F) -> Cost {
    measure_batches(name, n, 1, f).await
}

/// `f` handles `batch` messages a call: it is called for about `n` messages, and the cost is per
/// message.
async fn measure_batches<F: AsyncFnMut()>(name: &'static str, n: u64, batch: usize, mut f: F) -> Cost {
    let rounds = n / batch as u64;
    for _ in 0..rounds / 10 {
        f().await;
    }
    let (wall, cpu_before) = (Instant::now(), cpu());
    for _ in 0..rounds {
        f().await;
    }
    let per = |d: Duration| d.as_nanos() as f64 / (rounds * batch as u64) as f64;
    Cost { name, wall_ns: per(wall.elapsed()), cpu_ns: per(cpu() - cpu_before) }
}

/// A client frame as a client sends it: masked (RFC 6455 §5.3).
fn masked(text: &str) -> Vec<u8> {
    let key = [0x12, 0x34, 0x56, 0x78];
    let mut frame = vec![0x81];
    match text.len() {
        n @ 0..=125 => frame.push(0x80 | n as u8),
        n @ 126..=65535 => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&key);
    frame.extend(text.bytes().enumerate().map(|(i, b)| b ^ key[i % 4]));
    frame
}

/// Reads server frames (unmasked) until `count` whole text frames have arrived; returns the last.
async fn read_frames(client: &mut DuplexStream, buffer: &mut Vec<u8>, count: usize) -> Vec<u8> {
    let mut seen = 0;
    let mut last = Vec::new();
    loop {
        while let Some((header, length)) = frame_length(buffer) {
            if buffer.len() < header + length {
                break;
            }
            last = buffer[header..header + length].to_vec();
            buffer.drain(..header + length);
            seen += 1;
            if seen == count {
                return last;
            }
        }
        let mut chunk = [0u8; 16 * 1024];
        let read = client.read(&mut chunk).await.expect("read from the connection");
        assert!(read > 0, "the connection closed; last frame: {}", String::from_utf8_lossy(&last));
        buffer.extend_from_slice(&chunk[..read]);
    }
}

/// (header length, payload length) of the frame at the start of `buffer`, once its header is in.
fn frame_length(buffer: &[u8]) -> Option<(usize, usize)> {
    let short = *buffer.get(1)? & 0x7f;
    match short {
        126 => Some((4, u16::from_be_bytes([*buffer.get(2)?, *buffer.get(3)?]) as usize)),
        127 => Some((10, u64::from_be_bytes(buffer.get(2..10)?.try_into().ok()?) as usize)),
        n => Some((2, n as usize)),
    }
}

/// A connection of `route` served by the real connection task over an in-memory pipe.
async fn connect(live: &Live, services: &Services, route: &str) -> DuplexStream {
    let matched = live.router.lookup(route).map_err(|e| format!("{e:?}")).expect("the route");
    let slot = live.slots.get(&matched.route.plugin).cloned().expect("the route's plugin");
    let limits = &live.config.server;
    let peer = SocketAddr::from((Ipv4Addr::LOCALHOST, 40000));
    let admitted = Arc::new(Admission::default()).admit(peer.ip(), usize::MAX, usize::MAX).expect("a place");
    let setup = Box::new(Setup {
        metrics: services.metrics.connection(&matched.route.pattern),
        peer,
        slot,
        registry: services.registry.clone(),
        route: matched.route,
        path: route.to_owned(),
        params: matched.params,
        identity: None,
        admitted,
        rate: MessageRate::new(0, 0, 0),
        bounds: Bounds {
            max_frames: limits.outbound_queue,
            max_bytes: limits.outbound_queue_bytes,
            slow_closes: Default::default(),
        },
        close_grace: limits.shutdown_grace(),
        write_timeout: limits.write_timeout(),
        message_limit: "server.max_message_bytes",
        recover: Vec::new(),
    });
    let (client, server) = tokio::io::duplex(256 * 1024);
    let config = WebSocketConfig::default().read_buffer_size(limits.read_buffer_bytes).write_buffer_size(4096);
    let ws = WebSocketStream::from_raw_socket(server, Role::Server, Some(config)).await;
    tokio::spawn(connection::run(ws, setup));
    client
}

async fn run(args: Args) -> Vec<Cost> {
    let config = Config::load(&args.config).expect("the configuration");
    let runtime = Arc::new(Runtime::new(&config.engine).expect("the engine"));
    let metrics = Arc::new(Metrics::default());
    let limits = registry::Limits {
        max_groups_per_connection: config.server.max_groups_per_connection,
        session_bytes: config.state.session_bytes,
    };
    let registry = Arc::new(Registry::new(limits, None));
    let kv_limits = state::Limits {
        value_bytes: config.state.kv_value_bytes,
        keys_per_namespace: config.state.kv_keys_per_namespace,
    };
    let services = Services { registry, kv: Arc::new(Kv::new(kv_limits, None)), metrics };
    let live = Live::build(config, None, &runtime, &services).await.expect("the plugins load");
    let n = args.messages;
    let mut costs = Vec::new();

    // The whole path, one message at a time (each reply read before the next is sent), and with
    // 64 in flight, where the connection's tasks find work waiting.
    for (name, text, in_flight) in [
        ("whole: user_message, one at a time", FRAME, 1),
        ("whole: user_message, 64 in flight", FRAME, 64),
        ("whole: ping (no plugin), one at a time", PING, 1),
    ] {
        let mut client = connect(&live, &services, &args.route).await;
        let mut buffer = Vec::new();
        read_frames(&mut client, &mut buffer, 1).await; // the welcome
        let batch: Vec<u8> = masked(text).repeat(in_flight);
        let sample = {
            client.write_all(&batch).await.unwrap();
            read_frames(&mut client, &mut buffer, in_flight).await
        };
        assert!(sample.ends_with(br#""ref":"r1"}"#), "unexpected reply {}", String::from_utf8_lossy(&sample));
        let cost = measure_batches(name, n, in_flight, async || {
            client.write_all(&batch).await.unwrap();
            black_box(read_frames(&mut client, &mut buffer, in_flight).await);
        })
        .await;
        costs.push(cost);
    }
    let whole_rows = costs.len();

    // Each stage on its own, with the same frame.
    let matched = live.router.lookup(&args.route).map_err(|e| format!("{e:?}")).unwrap();
    let plugin = live.slots[&matched.route.plugin].current();
    let ctx = Arc::new(Context {
        connection: 1,
        route: matched.route.pattern.clone(),
        path: args.route.clone(),
        params: vec![],
        user: None,
    });
    let request = protocol::parse(FRAME, plugin.accepts()).unwrap();
    let payload = request.payload.map(|p| p.get());
    let client = IpAddr::from(Ipv4Addr::LOCALHOST);
    let reply =
        plugin.on_message(&ctx, client, &request.action, request.accepted, payload).await.unwrap().unwrap().unwrap();
    costs.push(
        measure("parse: envelope (protocol::parse)", n, async || {
            black_box(protocol::parse(black_box(FRAME), plugin.accepts()).unwrap());
        })
        .await,
    );
    costs.push(
        measure("validate: payload schema", n, async || {
            plugin.validate(&request.action, black_box(request.payload)).unwrap();
        })
        .await,
    );
    costs.push(
        measure("call: the plugin (instance, deadline, guest, reply)", n, async || {
            black_box(
                plugin.on_message(&ctx, client, &request.action, request.accepted, payload).await.unwrap().unwrap(),
            );
        })
        .await,
    );
    // A call whose guest does nothing (the echo plugin has no on-disconnect handler): what the
    // boundary itself costs, its context copied in included, next to the call above.
    costs.push(
        measure("call: on-disconnect with no handler (the boundary alone)", n, async || {
            plugin.on_disconnect(black_box(&ctx), client).await.unwrap();
        })
        .await,
    );
    costs.extend(bare_calls(&runtime, &plugin.config.path, request.accepted, payload, n).await);
    costs.push(
        measure("reply: checked, ref added (protocol::plugin_frame)", n, async || {
            black_box(protocol::plugin_frame(black_box(reply.clone()), Some("r1")).unwrap());
        })
        .await,
    );
    let bounds = Bounds { max_frames: 1024, max_bytes: 1 << 20, slow_closes: Default::default() };
    let (handle, mut queue) = outbound::queue(&bounds, false);
    costs.push(
        measure("queue: a reply in and out of the outbound queue", n, async || {
            handle.send(reply.clone().into()).await.unwrap();
            black_box(queue.recv().await.unwrap());
        })
        .await,
    );
    // Many connections, each with one message in flight, as the load generator's clients are: the
    // connection tasks keep both workers busy, and with 1,000 or more, each message's connection
    // state (its task, its WebSocket, its queue, its context) is cold in the caches. Measured last,
    // since their connections stay open (and on the idle sweep's rounds) after them; shown after
    // the other whole rows.
    let (mut many, mut open) = (Vec::new(), Vec::new());
    for (name, connections) in [
        ("whole: user_message, 100 connections, one in flight each", 100),
        ("whole: user_message, 1,000 connections, one in flight each", 1000),
        ("whole: user_message, 10,000 connections, one in flight each", 10_000),
    ] {
        let mut clients = Vec::with_capacity(connections);
        let mut buffers = vec![Vec::new(); connections];
        for buffer in &mut buffers {
            let mut client = connect(&live, &services, &args.route).await;
            read_frames(&mut client, buffer, 1).await; // the welcome
            clients.push(client);
        }
        let frame = masked(FRAME);
        let cost = measure_batches(name, n, connections, async || {
            for client in &mut clients {
                client.write_all(&frame).await.unwrap();
            }
            for (client, buffer) in clients.iter_mut().zip(&mut buffers) {
                black_box(read_frames(client, buffer, 1).await);
            }
        })
        .await;
        many.push(cost);
        // Kept open: closing them would run their on-disconnect calls during the next row.
        open.push(clients);
    }
    costs.splice(whole_rows..whole_rows, many);
    costs
}

/// The plugin's `on-frame` on a store of its own whose imports are all sync (each one traps but
/// `insecure-seed`, which the guest reads when it first builds its handlers): the same guest code
/// called with `call`, on the caller's stack, and with `call_async`, on a fiber of its own, as
/// the broker must call it (its store has async imports: WASI's streams, the key-value store,
/// groups). The difference is what the fiber costs a call. No rows for a plugin without `dispatch`.
async fn bare_calls(
    runtime: &Runtime,
    wasm: &std::path::Path,
    place: Option<usize>,
    payload: Option<&str>,
    n: u64,
) -> Vec<Cost> {
    type OnFrame<'a> = TypedFunc<(u64, u32, Option<&'a str>), (Result<Option<String>, HandlerError>,)>;
    let component = Component::from_file(runtime.engine(), wasm).unwrap();
    let mut linker = Linker::<()>::new(runtime.engine());
    for version in ["0.2.0", "0.2.4", "0.2.12"] {
        let mut seed = linker.instance(&format!("wasi:random/insecure-seed@{version}")).unwrap();
        seed.func_wrap("insecure-seed", |_, (): ()| Ok(((1u64, 2u64),))).unwrap();
    }
    linker.define_unknown_imports_as_traps(&component).unwrap();
    let mut store = Store::new(runtime.engine(), ());
    store.set_epoch_deadline(u64::MAX / 2);
    let instance = linker.instantiate(&mut store, &component).unwrap();
    let Some(dispatch) = instance.get_export_index(&mut store, None, "broker:plugin/dispatch@0.1.5") else {
        return Vec::new();
    };
    let on_frame = instance.get_export_index(&mut store, Some(&dispatch), "on-frame").unwrap();
    let on_frame: OnFrame = instance.get_typed_func(&mut store, on_frame).unwrap();
    let action = u32::try_from(place.expect("an action of the plugin's")).unwrap();
    let args = (1, action, payload);
    let (reply,) = on_frame.call(&mut store, args).unwrap();
    assert!(matches!(reply, Ok(Some(_))), "the bare call did not reply");
    let sync = measure("call, bare store: on-frame with call (no fiber)", n, async || {
        black_box(on_frame.call(&mut store, black_box(args)).unwrap().0.is_ok());
    })
    .await;
    let on_fiber = measure("call, bare store: on-frame with call_async (a fiber)", n, async || {
        black_box(on_frame.call_async(&mut store, black_box(args)).await.unwrap().0.is_ok());
    })
    .await;
    vec![sync, on_fiber]
}

fn main() {
    let args = args();
    let json = args.json;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime");
    let costs = runtime.block_on(run(args));
    if json {
        let stages: Vec<_> = costs
            .iter()
            .map(|c| serde_json::json!({"stage": c.name, "wall_ns": c.wall_ns.round(), "cpu_ns": c.cpu_ns.round()}))
            .collect();
        println!("{}", serde_json::json!({ "stages": stages }));
        return;
    }
    println!("| stage | ns per message (wall) | CPU ns per message |\n|---|---|---|");
    for cost in &costs {
        println!("| {} | {:.0} | {:.0} |", cost.name, cost.wall_ns, cost.cpu_ns);
    }
}

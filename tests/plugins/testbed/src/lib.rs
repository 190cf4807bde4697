//! A plugin for the broker's own tests: each action misbehaves in one documented way.

use std::sync::atomic::{AtomicU64, Ordering};

use plugin_sdk::{Error, Frame, Message, Plugin, Reject};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Deserialize, JsonSchema)]
struct Push {
    count: u32,
}

#[derive(Deserialize, JsonSchema)]
struct Group {
    group: String,
}

#[derive(Deserialize, JsonSchema)]
struct Broadcast {
    group: String,
    frame: Value,
}

#[derive(Deserialize, JsonSchema)]
struct SendTo {
    connection: u64,
    frame: Value,
}

/// A key-value write: set `value` (delete without one), or with `cas` only while the value is
/// `expected` (absent: only while there is none).
#[derive(Deserialize, JsonSchema)]
struct KvWrite {
    key: String,
    value: Option<String>,
    ttl_ms: Option<u64>,
    #[serde(default)]
    cas: bool,
    expected: Option<String>,
}

#[derive(Deserialize, JsonSchema)]
struct Key {
    key: String,
}

/// A text value under a key: what `kv_set` and `session_set` store as it is.
#[derive(Deserialize, JsonSchema)]
struct TextValue {
    key: String,
    value: String,
}

/// Any JSON value under a key: what `kv_set_json` and `session_set_json` store as JSON text.
#[derive(Deserialize, JsonSchema)]
struct JsonValue {
    key: String,
    value: Value,
}

/// A read of a group's history: after an offset (none: the newest), at most `limit`.
#[derive(Deserialize, JsonSchema)]
struct HistoryRead {
    group: String,
    after: Option<u64>,
    limit: u32,
}

/// A rewind of this connection's next join to `group`.
#[derive(Deserialize, JsonSchema)]
struct Rewind {
    group: String,
    count: u32,
}

#[derive(Deserialize, JsonSchema)]
struct Close {
    code: u16,
    reason: String,
}

/// A payload whose schema is stricter than its `Deserialize`: serde takes an empty name or a count
/// of 99, the schema does not. The handler panics on what the schema refuses, so a payload the
/// broker failed to validate shows as a crash.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Strict {
    #[schemars(length(min = 1, max = 8))]
    name: String,
    #[schemars(range(min = 1, max = 10))]
    count: u32,
    kind: Kind,
    tags: Option<Vec<String>>,
}

#[derive(Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Plain,
    Fancy,
}

/// Payload types beyond scalars, declared alike in tests/polyglot/parity-py and parity-js: a map,
/// an enum and a single-value enum (Python's `Literal["only"]`).
#[derive(Deserialize, Serialize, JsonSchema)]
struct Typed {
    flags: std::collections::BTreeMap<String, bool>,
    kind: Kind,
    only: Only,
}

#[derive(Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
enum Only {
    Only,
}

/// A frame sent outside the action envelope, declared alike in the parity plugins.
#[derive(Serialize, JsonSchema)]
#[allow(dead_code)] // only its schema is used
struct Status {
    status: String,
    done: bool,
}

/// The answer to `strict`: what was accepted.
#[derive(Serialize, JsonSchema)]
struct Accepted {
    name: String,
    count: u32,
}

impl Message for Accepted {
    const ACTION: &'static str = "accepted";
}

/// Lives as long as the instance: shows whether calls share one.
static CALLS: AtomicU64 = AtomicU64::new(0);

fn plugin() -> Plugin {
    Plugin::new("testbed", env!("CARGO_PKG_VERSION"))
        .sends_untyped("spinning")
        .sends_untyped("pushed")
        .sends_raw::<Status>("status")
        .on_connect(|ctx| {
            if ctx.path().starts_with("/ws/reject") {
                return Err(Reject::new(4403, "this route refuses everyone"));
            }
            Ok(())
        })
        // Tells the client it is about to loop, so a test knows the call is running.
        .handle("spin", |ctx, _: ()| -> plugin_sdk::Result<()> {
            ctx.send(&Frame::new("spinning", ()))?;
            #[allow(clippy::empty_loop)]
            loop {}
        })
        .handle("panic", |_ctx, _: ()| -> plugin_sdk::Result<()> { panic!("asked to panic") })
        .handle("fail", |_ctx, _: ()| -> plugin_sdk::Result<()> { Err(Error::msg("failed on purpose")) })
        .handle("not_an_object", |_ctx, _: ()| Ok(json!([1, 2, 3])))
        .handle("push", |ctx, push: Push| {
            for n in 0..push.count {
                ctx.send(&Frame::new("pushed", json!({ "n": n })))?;
            }
            Ok(())
        })
        .handle("close", |ctx, close: Close| {
            ctx.close(close.code, &close.reason);
            Ok(())
        })
        .handle("params", |ctx, _: Option<Value>| {
            let params: serde_json::Map<String, Value> =
                ["room"].iter().filter_map(|name| ctx.param(name).map(|v| (name.to_string(), json!(v)))).collect();
            Ok(Frame::new("params", json!({ "route": ctx.route(), "path": ctx.path(), "params": params })))
        })
        .handle("join", |ctx, group: Group| ctx.join(&group.group))
        .handle("rewind", |ctx, r: Rewind| {
            ctx.rewind(&r.group, r.count);
            Ok(())
        })
        .handle("history_read", |_ctx, r: HistoryRead| {
            let page = plugin_sdk::history::read(&r.group, r.after, r.limit)?;
            let entries: Vec<Value> =
                page.entries.iter().map(|e| json!({ "offset": e.offset, "frame": e.frame })).collect();
            Ok(Frame::new("history_read", json!({ "epoch": page.epoch, "offset": page.offset, "entries": entries })))
        })
        .handle("broadcast", |ctx, b: Broadcast| Ok(Frame::new("broadcast", ctx.broadcast(&b.group, &b.frame)?)))
        .handle("kv_write", |_ctx, w: KvWrite| {
            let ttl = w.ttl_ms.map(std::time::Duration::from_millis);
            let done = match (w.cas, &w.value) {
                (true, new) => plugin_sdk::kv::compare_and_swap(&w.key, w.expected.as_deref(), new.as_deref(), ttl)?,
                (false, Some(value)) => plugin_sdk::kv::set(&w.key, value, ttl).map(|()| true)?,
                (false, None) => plugin_sdk::kv::delete(&w.key)?,
            };
            Ok(Frame::new("kv_written", done))
        })
        .handle("kv_read", |_ctx, k: Key| Ok(Frame::new("kv_read", plugin_sdk::kv::get(&k.key)?)))
        // The SDK parity actions, which tests/polyglot/parity-py and parity-js answer the same way.
        .handle("kv_set", |_ctx, v: TextValue| Ok(Frame::new("kv_set", plugin_sdk::kv::set(&v.key, &v.value, None)?)))
        .handle("kv_get", |_ctx, k: Key| Ok(Frame::new("kv_get", plugin_sdk::kv::get(&k.key)?)))
        .handle("kv_set_json", |_ctx, v: JsonValue| {
            Ok(Frame::new("kv_set_json", plugin_sdk::kv::set_json(&v.key, &v.value, None)?))
        })
        .handle("kv_get_json", |_ctx, k: Key| Ok(Frame::new("kv_get_json", plugin_sdk::kv::get_json::<Value>(&k.key)?)))
        .handle("session_set", |ctx, v: TextValue| Ok(Frame::new("session_set", ctx.session_set(&v.key, &v.value)?)))
        .handle("session_get", |ctx, k: Key| Ok(Frame::new("session_get", ctx.session_get(&k.key))))
        .handle("session_set_json", |ctx, v: JsonValue| {
            Ok(Frame::new("session_set_json", ctx.session_set_json(&v.key, &v.value)?))
        })
        .handle("session_get_json", |ctx, k: Key| {
            Ok(Frame::new("session_get_json", ctx.session_get_json::<Value>(&k.key)?))
        })
        // An ordinary error, as `?` passes it on: the client gets `plugin_error`.
        .handle("raise", |_ctx, _: ()| -> plugin_sdk::Result<()> {
            let n: u32 = std::hint::black_box("not a number").parse()?;
            let _ = n;
            Ok(())
        })
        .handle("typed", |_ctx, typed: Typed| Ok(Frame::new("typed", typed)))
        .handle("send_to", |_ctx, s: SendTo| plugin_sdk::send_to(s.connection, &s.frame))
        .handle("members", |_ctx, group: Group| Ok(Frame::new("members", plugin_sdk::members(&group.group))))
        .handle("count", |_ctx, _: ()| Ok(Frame::new("count", CALLS.fetch_add(1, Ordering::Relaxed) + 1)))
        .handle("strict", |_ctx, strict: Strict| {
            let valid = (1..=8).contains(&strict.name.chars().count()) && (1..=10).contains(&strict.count);
            assert!(valid, "the broker let through a payload its schema refuses");
            let _ = (strict.kind, strict.tags);
            Ok(Accepted { name: strict.name, count: strict.count })
        })
        // Hostile: grows its memory until the limit stops it.
        .handle("allocate", |_ctx, _: ()| -> plugin_sdk::Result<()> {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        })
        // Hostile: recurses until the wasm stack is exhausted.
        .handle("recurse", |_ctx, _: ()| Ok(Frame::new("depth", deeper(0))))
        // Hostile: tries to send a million frames in one call.
        .handle("flood", |ctx, _: ()| {
            for n in 0..1_000_000u32 {
                ctx.send(&Frame::new("flood", n))?;
            }
            Ok(())
        })
        // Hostile: tries to read a file and open a socket through WASI; says what it got.
        .handle("escape", |_ctx, _: ()| {
            let file = std::fs::read_to_string("/etc/passwd").map(|_| "read".to_owned()).map_err(|e| e.to_string());
            let socket =
                std::net::TcpStream::connect("127.0.0.1:22").map(|_| "connected".to_owned()).map_err(|e| e.to_string());
            let dir = std::fs::read_dir("/").map(|_| "listed".to_owned()).map_err(|e| e.to_string());
            let env = std::env::vars().map(|(k, _)| k).collect::<Vec<_>>();
            Ok(Frame::new("escape", json!({ "file": file, "socket": socket, "dir": dir, "env": env })))
        })
        .handle("whoami", |ctx, _: ()| {
            Ok(Frame::new("whoami", json!({ "user": ctx.user(), "claims": ctx.claims::<Value>()? })))
        })
        .handle("settings", |ctx, _: ()| Ok(Frame::new("settings", ctx.settings::<Value>()?)))
}

/// Recursion the optimizer cannot turn into a loop.
fn deeper(depth: u64) -> u64 {
    let frame = std::hint::black_box([depth; 64]);
    if std::hint::black_box(true) { deeper(depth + 1) + frame[0] } else { depth }
}

plugin_sdk::export_plugin!(plugin);

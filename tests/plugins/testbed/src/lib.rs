//! A plugin for the broker's own tests: each action misbehaves in one documented way.

use std::sync::atomic::{AtomicU64, Ordering};

use plugin_sdk::{Error, Frame, Plugin, Reject};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize)]
struct Push {
    count: u32,
}

#[derive(Deserialize)]
struct Group {
    group: String,
}

#[derive(Deserialize)]
struct Broadcast {
    group: String,
    frame: Value,
}

#[derive(Deserialize)]
struct Close {
    code: u16,
    reason: String,
}

/// Lives as long as the instance: shows whether calls share one.
static CALLS: AtomicU64 = AtomicU64::new(0);

fn plugin() -> Plugin {
    Plugin::new("testbed", env!("CARGO_PKG_VERSION"))
        .sends("spinning")
        .sends("pushed")
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
        .handle("broadcast", |ctx, b: Broadcast| Ok(Frame::new("broadcast", ctx.broadcast(&b.group, &b.frame)?)))
        .handle("members", |_ctx, group: Group| Ok(Frame::new("members", plugin_sdk::members(&group.group))))
        .handle("count", |_ctx, _: ()| Ok(Frame::new("count", CALLS.fetch_add(1, Ordering::Relaxed) + 1)))
        .handle("settings", |ctx, _: ()| Ok(Frame::new("settings", ctx.settings::<Value>()?)))
}

plugin_sdk::export_plugin!(plugin);

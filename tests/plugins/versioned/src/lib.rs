//! A plugin for the reload tests. `MARKER` appears once in the compiled component; a test writes
//! copies with the marker's digits changed to make "new versions" without a compiler.

use plugin_sdk::{Frame, Plugin, kv};
use serde::Deserialize;
use serde_json::json;

/// Rewritten in the binary by the tests: keep it unique and of fixed length.
const MARKER: &str = "GENERATION-000";

#[derive(Deserialize)]
struct Echo {
    n: u64,
}

#[derive(Deserialize)]
struct Remember {
    value: String,
}

fn plugin() -> Plugin {
    Plugin::new("versioned", MARKER)
        .handle("echo", |_ctx, echo: Echo| Ok(Frame::new("echo", json!({ "gen": MARKER, "n": echo.n }))))
        .handle("panic", |_ctx, _: ()| -> plugin_sdk::Result<()> { panic!("{MARKER} panics") })
        .handle("remember", |ctx, remember: Remember| {
            ctx.session_set("value", &remember.value)?;
            kv::set("value", &remember.value, None)?;
            Ok(())
        })
        .handle("recall", |ctx, _: ()| {
            let session: Option<String> = ctx.session_get("value")?;
            let stored: Option<String> = kv::get("value")?;
            Ok(Frame::new("recall", json!({ "gen": MARKER, "session": session, "kv": stored })))
        })
}

plugin_sdk::export_plugin!(plugin);

//! A plugin for the reload tests. `MARKER` appears once in the compiled component; a test writes
//! copies with the marker's digits changed to make "new versions" without a compiler.

use plugin_sdk::{Frame, Plugin, kv};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

/// Rewritten in the binary by the tests: keep it unique and of fixed length.
const MARKER: &str = "GENERATION-000";

#[derive(Deserialize, JsonSchema)]
struct Echo {
    n: u64,
}

#[derive(Deserialize, JsonSchema)]
struct Remember {
    value: String,
}

/// `n` may be at most the generation number: each version publishes a different schema.
#[derive(Deserialize, JsonSchema)]
#[schemars(transform = at_most_generation)]
struct Bounded {
    #[allow(dead_code)]
    n: u64,
}

fn at_most_generation(schema: &mut schemars::Schema) {
    // black_box: the marker is rewritten in the binary, so the parse must happen at run time.
    let generation: u64 = std::hint::black_box(MARKER).trim_start_matches("GENERATION-").parse().unwrap_or(0);
    if let Some(n) = schema.get_mut("properties").and_then(|p| p.get_mut("n")).and_then(|n| n.as_object_mut()) {
        n.insert("maximum".into(), generation.into());
    }
}

fn plugin() -> Plugin {
    Plugin::new("versioned", MARKER)
        .handle("echo", |_ctx, echo: Echo| Ok(Frame::new("echo", json!({ "gen": MARKER, "n": echo.n }))))
        .handle("bounded", |_ctx, _: Bounded| Ok(Frame::new("bounded", MARKER)))
        .handle("panic", |_ctx, _: ()| -> plugin_sdk::Result<()> { panic!("{MARKER} panics") })
        .handle("remember", |ctx, remember: Remember| {
            ctx.session_set_json("value", &remember.value)?;
            kv::set_json("value", &remember.value, None)?;
            Ok(())
        })
        .handle("recall", |ctx, _: ()| {
            let session: Option<String> = ctx.session_get_json("value")?;
            let stored: Option<String> = kv::get_json("value")?;
            Ok(Frame::new("recall", json!({ "gen": MARKER, "session": session, "kv": stored })))
        })
}

plugin_sdk::export_plugin!(plugin);

//! The system echo of the Chanx tutorial: a welcome on connect, each message echoed to its sender.

use plugin_sdk::{Frame, Message, Plugin};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A message from the user, to be echoed.
#[derive(Deserialize, JsonSchema)]
struct UserMessage {
    /// The text to echo.
    message: String,
}

/// A message from the system: the welcome, or the echo of a user's message.
#[derive(Serialize, JsonSchema)]
struct SystemEcho {
    message: String,
}

impl Message for SystemEcho {
    const ACTION: &'static str = "system_echo";
}

fn plugin() -> Plugin {
    Plugin::new("echo", env!("CARGO_PKG_VERSION"))
        .description("System Messages Consumer - Direct WebSocket without channel layers")
        .tags(["system", "direct"])
        .on_connect(
            |ctx| Ok(ctx.send(&Frame::of(SystemEcho { message: "🔧 System: Connection established!".into() }))?),
        )
        .handle("user_message", |_ctx, msg: UserMessage| {
            Ok(SystemEcho { message: format!("🔧 System Echo: {}", msg.message) })
        })
}

plugin_sdk::export_plugin!(plugin);

//! The system echo of the Chanx tutorial: a welcome on connect, each message echoed to its sender.

use plugin_sdk::{Frame, Plugin};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct MessagePayload {
    message: String,
}

fn system_echo(message: String) -> Frame<MessagePayload> {
    Frame::new("system_echo", MessagePayload { message })
}

fn plugin() -> Plugin {
    Plugin::new("echo", env!("CARGO_PKG_VERSION"))
        .description("System Messages Consumer - Direct WebSocket without channel layers")
        .tags(["system", "direct"])
        .sends("system_echo")
        .on_connect(|ctx| Ok(ctx.send(&system_echo("🔧 System: Connection established!".into()))?))
        .handle("user_message", |_ctx, msg: MessagePayload| Ok(system_echo(format!("🔧 System Echo: {}", msg.message))))
}

plugin_sdk::export_plugin!(plugin);

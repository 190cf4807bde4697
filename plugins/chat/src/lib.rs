//! The room chat of the Chanx tutorial: join the room of the path, relay messages to the others.

use plugin_sdk::{Error, Frame, Plugin};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct ChatMessagePayload {
    message: String,
    name: String,
}

/// The room of the route `/ws/chat/{room}`.
fn room(ctx: &plugin_sdk::Context) -> plugin_sdk::Result<&str> {
    ctx.param("room").ok_or_else(|| Error::msg("mount chat on a route with a {room} parameter"))
}

fn plugin() -> Plugin {
    Plugin::new("chat", env!("CARGO_PKG_VERSION"))
        .description("Room chat: messages reach every other member of the room")
        .tags(["chat", "groups"])
        .sends("new_chat_message")
        .on_connect(|ctx| Ok(ctx.join(room(ctx)?)?))
        .handle("new_chat_message", |ctx, payload: ChatMessagePayload| {
            ctx.broadcast_to_others(room(ctx)?, &Frame::new("new_chat_message", payload))?;
            Ok(())
        })
}

plugin_sdk::export_plugin!(plugin);

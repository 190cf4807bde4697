//! The room chat of the Chanx tutorial: join the room of the path, relay messages to the others.

use plugin_sdk::{Error, Frame, Message, Plugin};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A chat message: sent by a member, relayed to every other member of the room.
#[derive(Serialize, Deserialize, JsonSchema)]
struct NewChatMessage {
    /// The text.
    message: String,
    /// Who wrote it, as the writer calls themselves.
    name: String,
}

impl Message for NewChatMessage {
    const ACTION: &'static str = "new_chat_message";
}

/// The plugin's `settings` in broker.toml.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Settings {
    /// How many of the room's last messages a newcomer gets before live traffic (0: none); the
    /// room's namespace must keep history (`[plugins.<name>.history]`).
    rewind: u32,
}

/// The room of the route `/ws/chat/{room}`.
fn room(ctx: &plugin_sdk::Context) -> plugin_sdk::Result<&str> {
    ctx.param("room").ok_or_else(|| Error::msg("mount chat on a route with a {room} parameter"))
}

fn plugin() -> Plugin {
    Plugin::new("chat", env!("CARGO_PKG_VERSION"))
        .description("Room chat: messages reach every other member of the room")
        .tags(["chat", "groups"])
        .sends::<NewChatMessage>()
        .on_connect(|ctx| {
            let room = room(ctx)?;
            let settings: Settings = ctx.settings()?;
            if settings.rewind > 0 {
                ctx.rewind(room, settings.rewind);
            }
            Ok(ctx.join(room)?)
        })
        .handle("new_chat_message", |ctx, message: NewChatMessage| {
            ctx.broadcast_to_others(room(ctx)?, &Frame::of(message))?;
            Ok(())
        })
}

plugin_sdk::export_plugin!(plugin);

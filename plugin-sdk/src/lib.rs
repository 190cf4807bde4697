//! Write broker plugins in Rust.
//!
//! A plugin is a [`Plugin`] value: its name and version, an optional `on_connect`, and one typed
//! handler per action. Returning a value from a handler replies to the sender; returning an error
//! sends the client an `error` frame. Build with `--target wasm32-wasip2`.
//!
//! Payload types derive `JsonSchema` as well as serde's traits: the broker validates payloads
//! against their schemas before the plugin runs and documents them (AsyncAPI), with the types' doc
//! comments as summaries.
//!
//! ```ignore
//! use plugin_sdk::{Message, Plugin};
//! use schemars::JsonSchema;
//! use serde::{Deserialize, Serialize};
//!
//! /// A message from the user.
//! #[derive(Deserialize, JsonSchema)]
//! struct UserMessage { message: String }
//!
//! /// The echo of a user's message.
//! #[derive(Serialize, JsonSchema)]
//! struct SystemEcho { message: String }
//!
//! impl Message for SystemEcho {
//!     const ACTION: &'static str = "system_echo";
//! }
//!
//! fn plugin() -> Plugin {
//!     Plugin::new("echo", env!("CARGO_PKG_VERSION"))
//!         .handle("user_message", |_ctx, msg: UserMessage| Ok(SystemEcho { message: format!("Echo: {}", msg.message) }))
//! }
//!
//! plugin_sdk::export_plugin!(plugin);
//! ```

mod context;
mod error;
mod exports;
mod frame;
pub mod http;
mod message;
mod payload;
mod plugin;
mod state;

pub use context::{Context, Level, broadcast, members, send_to};
pub use error::{Error, Issue, Loc, Result};
pub use frame::Frame;
pub use message::Message;
pub use plugin::{Plugin, Reject, Reply};
pub use state::kv;

/// The raw bindings of the `broker:plugin` world, for what the typed API does not cover.
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "plugin",
        pub_export_macro: true,
        export_macro_name: "__export_world_plugin",
        default_bindings_module: "plugin_sdk::bindings",
    });
}

#[doc(hidden)]
pub mod __private {
    pub use crate::exports::{Builder, Exports};
}

/// Exports a plugin: `export_plugin!(build)` where `fn build() -> Plugin` describes it.
///
/// `build` runs once per plugin instance, on its first call.
#[macro_export]
macro_rules! export_plugin {
    ($build:path) => {
        #[doc(hidden)]
        struct __PluginBuilder;
        impl $crate::__private::Builder for __PluginBuilder {
            fn build() -> $crate::Plugin {
                $build()
            }
        }
        #[doc(hidden)]
        type __PluginExports = $crate::__private::Exports<__PluginBuilder>;
        $crate::bindings::__export_world_plugin!(__PluginExports with_types_in $crate::bindings);
    };
}

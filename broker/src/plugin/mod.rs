//! Plugins: the wasmtime engine, the host interfaces, and pools of instances per plugin.

mod cache;
mod engine;
pub mod host;
mod outbound_http;
mod pool;
mod slot;

use std::path::PathBuf;
use std::time::Duration;

pub use cache::Source;

pub use engine::Runtime;
pub use outbound_http::AllowList;
pub use pool::{LoadedPlugin, PluginFile, Services};
pub use slot::{Slot, rfc3339};

/// Why a plugin could not be loaded, or the engine not built.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("wasmtime engine: {0}")]
    Engine(String),
    #[error("plugin {plugin:?} ({path}): {reason}")]
    Load { plugin: String, path: PathBuf, reason: String },
}

/// Why a call into a plugin produced no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    #[error("the plugin crashed: {0}")]
    Trap(String),
    #[error("the plugin ran past its {}ms deadline", .0.as_millis())]
    Timeout(Duration),
    #[error("the plugin could not be started: {0}")]
    Instantiate(String),
    #[error("the plugin crashed on its last calls and is backed off for {}ms more", .0.as_millis())]
    BackedOff(Duration),
}

//! Plugins: the wasmtime engine, the host interfaces, and pools of instances per plugin.

mod cache;
mod engine;
pub mod host;
mod outbound_http;
mod pool;
pub mod schema;
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

/// Why a call into a plugin produced no answer. The `Display` text is for the log (it quotes
/// wasmtime); clients get [`CallError::public_message`].
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    #[error("the plugin crashed: {detail}")]
    Trap { cause: TrapCause, detail: String },
    #[error("the plugin ran past its {}ms deadline", .0.as_millis())]
    Timeout(Duration),
    #[error("the plugin could not be started: {0}")]
    Instantiate(String),
    #[error("the plugin crashed on its last calls and is backed off for {}ms more", .0.as_millis())]
    BackedOff(Duration),
}

/// What made a call trap, as far as the broker can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrapCause {
    /// It grew its memory past its limit.
    OutOfMemory,
    /// It sent more than its per-call limits; the broker's own words, naming the limit.
    SendLimit(String),
    /// Anything else: a panic, a stack overflow, an `unreachable`.
    Failed,
}

impl CallError {
    /// What the client is told: what happened in the broker's words, never wasmtime's internals
    /// (those go to the log).
    pub fn public_message(&self) -> String {
        match self {
            CallError::Trap { cause: TrapCause::OutOfMemory, .. } => {
                "the plugin ran out of memory while handling this message".into()
            }
            CallError::Trap { cause: TrapCause::SendLimit(limit), .. } => format!("the plugin was stopped: {limit}"),
            CallError::Trap { cause: TrapCause::Failed, .. } => "the plugin failed while handling this message".into(),
            CallError::Timeout(_) | CallError::BackedOff(_) => self.to_string(),
            CallError::Instantiate(_) => "the plugin could not be started".into(),
        }
    }

    /// Whether the failure came from the call itself (a trap or a timeout), which the connection
    /// that made it is charged for, rather than from the plugin as a whole.
    pub fn is_crash(&self) -> bool {
        matches!(self, CallError::Trap { .. } | CallError::Timeout(_))
    }
}

//! The host side of the WIT world: what a plugin instance's store holds and the imports it calls.

use std::sync::Arc;
use std::time::Instant;

use tokio_tungstenite::tungstenite::Utf8Bytes;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::protocol;
use crate::registry::{CloseReason, Registry};

wasmtime::component::bindgen!({
    path: "../plugin-sdk/wit",
    world: "plugin",
    imports: { default: async | trappable },
    exports: { default: async },
});

pub use self::broker::plugin::types::{Context, HandlerError, Level, LocItem, PluginManifest, Rejection, SendError};

/// Everything one plugin instance's store holds.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    /// The plugin's name, for logs.
    plugin: Arc<str>,
    registry: Arc<Registry>,
    /// The plugin's settings from broker.toml, as JSON text.
    settings: Arc<str>,
    /// When the running call must have ended; read by the epoch callback.
    pub(crate) deadline: Instant,
}

impl HostState {
    pub fn new(plugin: Arc<str>, registry: Arc<Registry>, settings: Arc<str>, deadline: Instant) -> Self {
        // Deny by default: no files, environment, arguments or sockets.
        let wasi = WasiCtx::builder().allow_tcp(false).allow_udp(false).allow_ip_name_lookup(false).build();
        HostState { wasi, table: ResourceTable::new(), plugin, registry, settings, deadline }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl self::broker::plugin::types::Host for HostState {}

impl self::broker::plugin::host::Host for HostState {
    async fn send(&mut self, connection: u64, frame: String) -> wasmtime::Result<Result<(), SendError>> {
        let frame = match protocol::plugin_frame(frame, None) {
            Ok(frame) => frame,
            Err(why) => return Ok(Err(SendError::InvalidFrame(why))),
        };
        Ok(self.registry.send(connection, Utf8Bytes::from(frame)).map_err(|_| SendError::Closed))
    }

    async fn close(&mut self, connection: u64, code: u16, reason: String) -> wasmtime::Result<()> {
        // Closing a connection that is already gone is not the plugin's mistake.
        let _ = self.registry.close(connection, CloseReason::new(code, reason));
        Ok(())
    }

    async fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        let plugin = &*self.plugin;
        match level {
            Level::Trace => tracing::trace!(plugin, "{message}"),
            Level::Debug => tracing::debug!(plugin, "{message}"),
            Level::Info => tracing::info!(plugin, "{message}"),
            Level::Warn => tracing::warn!(plugin, "{message}"),
            Level::Error => tracing::error!(plugin, "{message}"),
        }
        Ok(())
    }

    async fn settings(&mut self) -> wasmtime::Result<String> {
        Ok(self.settings.to_string())
    }
}

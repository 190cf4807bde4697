//! The host side of the WIT world: what a plugin instance's store holds and the imports it calls.

use std::sync::Arc;
use std::time::Instant;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::outbound_http::AllowList;
use crate::hub::registry::{CloseReason, ConnectionId, Delivery, GroupKey, JoinError, Registry};
use crate::hub::state::{Kv, StateError as HostStateError};
use crate::wire::protocol;

wasmtime::component::bindgen!({
    path: "../plugin-sdk/wit",
    world: "plugin-core",
    imports: { default: async | trappable },
    exports: { default: async },
});

/// The optional `describe` export (0.1.3): bound apart from the core, since older plugins lack it.
pub mod documented {
    wasmtime::component::bindgen!({
        path: "../plugin-sdk/wit",
        world: "documented",
        exports: { default: async },
        with: { "broker:plugin/types": super::broker::plugin::types },
    });
}

/// The optional `dispatch` export (0.1.5), bound apart from the core as `describe` is.
pub mod dispatching {
    wasmtime::component::bindgen!({
        path: "../plugin-sdk/wit",
        world: "dispatching",
        exports: { default: async },
        with: { "broker:plugin/types": super::broker::plugin::types },
    });
}

pub use self::broker::plugin::types::{
    Context, GroupError, HandlerError, Level, LocItem, PluginManifest, Rejection, SendError, StateError,
};

/// What every instance of one plugin shares.
pub struct PluginEnv {
    /// The plugin's name, for logs.
    pub name: Arc<str>,
    /// The namespace its group names live in.
    pub namespace: Arc<str>,
    /// Its settings from broker.toml, as JSON text.
    pub settings: Arc<str>,
    pub registry: Arc<Registry>,
    pub kv: Arc<Kv>,
    pub metrics: Arc<crate::hub::metrics::Metrics>,
    /// The hosts it may reach over HTTP.
    pub allow_hosts: AllowList,
    /// The environment variables broker.toml passes to it (`env`), with their values.
    pub env: Vec<(String, String)>,
    /// What one call may send: frames and bytes.
    pub max_sends_per_call: u32,
    pub max_send_bytes_per_call: u64,
    /// Linear memory one instance may grow to.
    pub max_memory_bytes: usize,
}

/// A call sent more than its plugin's per-call limit; raised as a trap so the call stops there.
#[derive(Debug)]
pub struct SendLimitExceeded(pub String);

impl std::fmt::Display for SendLimitExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SendLimitExceeded {}

/// Everything one plugin instance's store holds.
pub struct HostState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    allow_hosts: AllowList,
    table: ResourceTable,
    env: Arc<PluginEnv>,
    /// When the running call must have ended; read by the epoch callback.
    pub(crate) deadline: Instant,
    /// The context of the running call (none: a call about no connection), for `call.current`;
    /// its connection is the `sender` of what the call sends. Cleared when the call answers
    /// (`LoadedPlugin::call`).
    pub(crate) context: Option<Arc<Context>>,
    /// Frames and bytes the running call has sent.
    pub(crate) sent: (u32, u64),
    /// The instance's memory limit, and how much linear memory it holds.
    pub(crate) limits: MemoryLimits,
}

/// wasmtime's `StoreLimits`, counting the linear memory the instance has grown to, so the pool can
/// retire an instance whose memory only grows.
pub(crate) struct MemoryLimits {
    limits: wasmtime::StoreLimits,
    /// Bytes of linear memory, all of the instance's memories together.
    pub(crate) bytes: usize,
    /// A grow was refused: the trap that follows is the plugin running out of memory.
    pub(crate) refused: bool,
}

impl wasmtime::ResourceLimiter for MemoryLimits {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum).inspect_err(|_| self.refused = true)?;
        if allowed {
            self.bytes += desired.saturating_sub(current);
        }
        Ok(allowed)
    }

    fn table_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

impl HostState {
    pub fn new(env: Arc<PluginEnv>, deadline: Instant) -> Self {
        // Deny by default: no files, arguments or sockets, and only the environment broker.toml grants.
        let wasi =
            WasiCtx::builder().allow_tcp(false).allow_udp(false).allow_ip_name_lookup(false).envs(&env.env).build();
        let allow_hosts = env.allow_hosts.clone();
        // A grow past the limit traps with wasmtime's message rather than returning -1 to an
        // allocator that would abort with a vaguer one.
        let limits = MemoryLimits {
            limits: wasmtime::StoreLimitsBuilder::new()
                .memory_size(env.max_memory_bytes)
                .trap_on_grow_failure(true)
                .build(),
            bytes: 0,
            refused: false,
        };
        HostState {
            wasi,
            http: WasiHttpCtx::new(),
            allow_hosts,
            table: ResourceTable::new(),
            env,
            deadline,
            context: None,
            sent: (0, 0),
            limits,
        }
    }

    /// Counts a frame of `bytes` against the call's limits; past them, the call is stopped.
    fn charge(&mut self, bytes: usize) -> wasmtime::Result<()> {
        let (frames, total) = &mut self.sent;
        *frames += 1;
        *total += bytes as u64;
        let (key, over) = if *frames > self.env.max_sends_per_call {
            ("max_sends_per_call", format!("{} frames", self.env.max_sends_per_call))
        } else if *total > self.env.max_send_bytes_per_call {
            ("max_send_bytes_per_call", format!("{} bytes", self.env.max_send_bytes_per_call))
        } else {
            return Ok(());
        };
        self.env.metrics.limit_hit(&format!("plugins.{key}"));
        Err(wasmtime::Error::new(SendLimitExceeded(format!(
            "the call sent more than {over} (plugins.{}.{key})",
            self.env.name
        ))))
    }

    fn delivery(&self, frame: String) -> Result<Delivery, SendError> {
        let frame = protocol::plugin_frame(frame, None).map_err(SendError::InvalidFrame)?;
        let caller: ConnectionId = self.context.as_ref().map_or(0, |ctx| ctx.connection);
        Ok(Delivery::new(frame, caller.to_string()))
    }

    fn group(&self, name: &str) -> GroupKey {
        GroupKey::new(&self.env.namespace, name)
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.allow_hosts }
    }
}

impl self::broker::plugin::types::Host for HostState {}

impl self::broker::plugin::host::Host for HostState {
    async fn send(&mut self, connection: u64, frame: String) -> wasmtime::Result<Result<(), SendError>> {
        self.charge(frame.len())?;
        Ok(self.delivery(frame).and_then(|d| self.env.registry.send(connection, &d).map_err(|_| SendError::Closed)))
    }

    async fn close(&mut self, connection: u64, code: u16, reason: String) -> wasmtime::Result<()> {
        // Closing a connection that is already gone is not the plugin's mistake.
        let _ = self.env.registry.close(connection, CloseReason::new(code, reason));
        Ok(())
    }

    async fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        let plugin = &*self.env.name;
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
        Ok(self.env.settings.to_string())
    }
}

impl self::broker::plugin::groups::Host for HostState {
    async fn join(&mut self, connection: u64, group: String) -> wasmtime::Result<Result<(), GroupError>> {
        Ok(self.env.registry.join(connection, self.group(&group)).await.map_err(|error| match error {
            JoinError::Closed => GroupError::Closed,
            JoinError::InvalidName => GroupError::InvalidName,
            JoinError::TooManyGroups(_) => {
                self.env.metrics.limit_hit("server.max_groups_per_connection");
                GroupError::TooManyGroups(error.to_string())
            }
        }))
    }

    async fn leave(&mut self, connection: u64, group: String) -> wasmtime::Result<()> {
        self.env.registry.leave(connection, &self.group(&group));
        Ok(())
    }

    async fn broadcast(
        &mut self,
        group: String,
        frame: String,
        exclude: Option<u64>,
    ) -> wasmtime::Result<Result<u32, SendError>> {
        self.charge(frame.len())?;
        let delivery = match self.delivery(frame) {
            Ok(delivery) => delivery,
            Err(error) => return Ok(Err(error)),
        };
        let reached = self.env.registry.broadcast(&self.group(&group), &delivery, exclude);
        Ok(Ok(u32::try_from(reached).unwrap_or(u32::MAX)))
    }

    async fn members(&mut self, group: String) -> wasmtime::Result<Vec<u64>> {
        Ok(self.env.registry.members(&self.group(&group)).await)
    }
}

impl HostState {
    /// The WIT error for a state failure; a limit that bit is counted.
    fn state_error(&self, error: HostStateError) -> StateError {
        match error {
            HostStateError::Closed => StateError::Closed,
            HostStateError::TooLarge { limit, message } => {
                self.env.metrics.limit_hit(limit);
                StateError::TooLarge(message)
            }
            HostStateError::Unavailable(why) => StateError::Unavailable(why),
        }
    }
}

fn ttl(ms: Option<u64>) -> Option<std::time::Duration> {
    ms.map(std::time::Duration::from_millis)
}

impl self::broker::plugin::session::Host for HostState {
    async fn get(&mut self, connection: u64, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.env.registry.session_get(connection, &key))
    }

    async fn set(&mut self, connection: u64, key: String, value: String) -> wasmtime::Result<Result<(), StateError>> {
        Ok(self.env.registry.session_set(connection, &key, value).map_err(|e| self.state_error(e)))
    }

    async fn delete(&mut self, connection: u64, key: String) -> wasmtime::Result<()> {
        self.env.registry.session_delete(connection, &key);
        Ok(())
    }
}

impl self::broker::plugin::identity::Host for HostState {
    async fn claims(&mut self, connection: u64) -> wasmtime::Result<Option<String>> {
        Ok(self.env.registry.claims(connection))
    }
}

impl self::broker::plugin::call::Host for HostState {
    async fn current(&mut self) -> wasmtime::Result<Context> {
        Ok(self.context.as_deref().cloned().unwrap_or_else(|| Context {
            connection: 0,
            route: String::new(),
            path: String::new(),
            params: Vec::new(),
            user: None,
        }))
    }
}

impl self::broker::plugin::kv::Host for HostState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<String>, StateError>> {
        Ok(self.env.kv.get(&self.env.namespace, &key).await.map_err(|e| self.state_error(e)))
    }

    async fn set(
        &mut self,
        key: String,
        value: String,
        ttl_ms: Option<u64>,
    ) -> wasmtime::Result<Result<(), StateError>> {
        Ok(self.env.kv.set(&self.env.namespace, &key, value, ttl(ttl_ms)).await.map_err(|e| self.state_error(e)))
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<Result<bool, StateError>> {
        Ok(self.env.kv.delete(&self.env.namespace, &key).await.map_err(|e| self.state_error(e)))
    }

    async fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<String>,
        new: Option<String>,
        ttl_ms: Option<u64>,
    ) -> wasmtime::Result<Result<bool, StateError>> {
        let swapped =
            self.env.kv.compare_and_swap(&self.env.namespace, &key, expected.as_deref(), new, ttl(ttl_ms)).await;
        Ok(swapped.map_err(|e| self.state_error(e)))
    }
}

impl self::broker::plugin::history::Host for HostState {
    async fn read(
        &mut self,
        group: String,
        after: Option<u64>,
        limit: u32,
    ) -> wasmtime::Result<Result<self::broker::plugin::history::Page, StateError>> {
        use self::broker::plugin::history::{Entry, Page};
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let page = match self.env.registry.read_history(&self.group(&group), after, limit).await {
            Ok(Some(page)) => page,
            Ok(None) => {
                return Ok(Err(StateError::Unavailable(format!(
                    "the namespace {:?} keeps no group history: add [plugins.{}.history] to broker.toml",
                    &*self.env.namespace, self.env.name
                ))));
            }
            Err(error) => return Ok(Err(StateError::Unavailable(error.to_string()))),
        };
        let entries = page.entries.into_iter().map(|(offset, frame)| Entry { offset, frame }).collect();
        Ok(Ok(Page { epoch: page.epoch, offset: page.offset, entries }))
    }

    async fn rewind(&mut self, connection: u64, group: String, count: u32) -> wasmtime::Result<()> {
        self.env.registry.rewind(connection, &self.group(&group), count);
        Ok(())
    }
}

//! A loaded plugin: its compiled component, its manifest, and a pool of ready instances.
//!
//! Instances are reused across calls and connections: the broker keeps no plugin state in them
//! (durable state lives in the host), so any idle instance can serve any call. An instance whose
//! call trapped or timed out may be corrupt and is dropped, never returned to the pool.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use wasmtime::{Store, UpdateDeadline};

use super::host::{Context, HandlerError, HostState, Plugin, PluginEnv, PluginManifest, PluginPre, Rejection};
use super::{CallError, PluginError, Runtime};
use crate::config;
use crate::registry::{ConnectionId, Registry};

/// Idle instances kept per plugin; more are created under load and dropped after.
const MAX_IDLE: usize = 16;

/// A call's deadline, raised from the epoch callback so it can be told apart from a trap.
#[derive(Debug)]
struct DeadlineExceeded;

impl std::fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the call ran past its deadline")
    }
}

impl std::error::Error for DeadlineExceeded {}

struct Instance {
    store: Store<HostState>,
    bindings: Plugin,
}

/// One plugin, compiled, checked and ready to call.
pub struct LoadedPlugin {
    env: Arc<PluginEnv>,
    manifest: PluginManifest,
    accepts: Vec<String>,
    pre: PluginPre<HostState>,
    idle: Mutex<Vec<Instance>>,
    running: Semaphore,
    timeout: Duration,
}

impl LoadedPlugin {
    /// Compiles `config.path`, links it, and asks a first instance for its manifest.
    pub async fn load(
        runtime: &Arc<Runtime>,
        name: &str,
        config: &config::Plugin,
        registry: Arc<Registry>,
    ) -> Result<LoadedPlugin, PluginError> {
        let failed = |reason: String| PluginError::Load { plugin: name.to_owned(), path: config.path.clone(), reason };
        let bytes = tokio::fs::read(&config.path).await.map_err(|e| failed(format!("cannot read the file: {e}")))?;
        let compiler = runtime.clone();
        let component = tokio::task::spawn_blocking(move || compiler.compile(&bytes))
            .await
            .map_err(|e| failed(format!("compilation panicked: {e}")))?
            .map_err(|e| failed(format!("not a valid component: {e}")))?;
        let instance_pre = runtime
            .linker()
            .instantiate_pre(&component)
            .map_err(|e| failed(format!("does not fit the broker:plugin world: {e:?}")))?;
        let pre = PluginPre::new(instance_pre).map_err(|e| failed(format!("does not export the handler: {e:?}")))?;
        let settings = serde_json::to_string(&config.settings).map_err(|e| failed(format!("settings: {e}")))?;

        let env = PluginEnv {
            name: Arc::from(name),
            namespace: Arc::from(config.groups_namespace(name)),
            settings: Arc::from(settings),
            registry,
        };
        let mut plugin = LoadedPlugin {
            env: Arc::new(env),
            manifest: PluginManifest {
                name: String::new(),
                version: String::new(),
                description: None,
                tags: Vec::new(),
                accepts: Vec::new(),
                sends: Vec::new(),
            },
            accepts: Vec::new(),
            pre,
            idle: Mutex::new(Vec::new()),
            running: Semaphore::new(config.max_instances),
            timeout: config.timeout(),
        };
        let manifest = plugin
            .call(0, async |i| i.bindings.broker_plugin_handler().call_manifest(&mut i.store).await)
            .await
            .map_err(|e| failed(format!("asking for its manifest failed: {e}")))?;
        plugin.accepts = manifest.accepts.iter().map(|a| a.name.clone()).collect();
        plugin.manifest = manifest;
        Ok(plugin)
    }

    /// The name the plugin has in broker.toml.
    pub fn name(&self) -> &str {
        &self.env.name
    }

    pub fn manifest(&self) -> &PluginManifest {
        &self.manifest
    }

    /// The actions clients may send it.
    pub fn accepts(&self) -> &[String] {
        &self.accepts
    }

    pub async fn on_connect(&self, ctx: &Context) -> Result<Result<(), Rejection>, CallError> {
        self.call(ctx.connection, async |i| i.bindings.broker_plugin_handler().call_on_connect(&mut i.store, ctx).await)
            .await
    }

    pub async fn on_message(
        &self,
        ctx: &Context,
        action: &str,
        payload: Option<&str>,
    ) -> Result<Result<Option<String>, HandlerError>, CallError> {
        self.call(ctx.connection, async |i| {
            i.bindings.broker_plugin_handler().call_on_message(&mut i.store, ctx, action, payload).await
        })
        .await
    }

    pub async fn on_disconnect(&self, ctx: &Context) -> Result<(), CallError> {
        self.call(ctx.connection, async |i| {
            i.bindings.broker_plugin_handler().call_on_disconnect(&mut i.store, ctx).await
        })
        .await
    }

    /// Runs one export, about connection `caller` (0: none), on an idle instance (or a new one)
    /// under the plugin's deadline.
    async fn call<R>(
        &self,
        caller: ConnectionId,
        f: impl AsyncFnOnce(&mut Instance) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        let _permit = self.running.acquire().await.map_err(|_| CallError::Instantiate("plugin unloaded".into()))?;
        let deadline = Instant::now() + self.timeout;
        let mut instance = match self.take_idle() {
            Some(instance) => instance,
            None => self.instantiate(deadline).await?,
        };
        instance.store.data_mut().deadline = deadline;
        instance.store.data_mut().caller = caller;
        instance.store.set_epoch_deadline(1);
        // The epoch callback enforces the deadline while wasm runs; this one covers a call parked in
        // a host function, with a tick of slack so the callback's clearer error usually wins.
        let slack = self.timeout + Duration::from_millis(50);
        match tokio::time::timeout(slack, f(&mut instance)).await {
            Ok(Ok(value)) => {
                self.put_idle(instance);
                Ok(value)
            }
            Ok(Err(error)) if error.is::<DeadlineExceeded>() => Err(CallError::Timeout(self.timeout)),
            Ok(Err(error)) => Err(CallError::Trap(trap_message(&error))),
            Err(_) => Err(CallError::Timeout(self.timeout)),
        }
    }

    /// A fresh instance; its start-up counts against the deadline of the call it is made for.
    async fn instantiate(&self, deadline: Instant) -> Result<Instance, CallError> {
        let state = HostState::new(self.env.clone(), deadline);
        let mut store = Store::new(self.pre.engine(), state);
        store.epoch_deadline_callback(|store| {
            if Instant::now() >= store.data().deadline {
                Err(wasmtime::Error::new(DeadlineExceeded))
            } else {
                // Yield to the async runtime each tick so a busy plugin shares its thread.
                Ok(UpdateDeadline::Yield(1))
            }
        });
        store.set_epoch_deadline(1);
        let bindings =
            self.pre.instantiate_async(&mut store).await.map_err(|e| CallError::Instantiate(format!("{e:?}")))?;
        Ok(Instance { store, bindings })
    }

    fn take_idle(&self) -> Option<Instance> {
        self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).pop()
    }

    fn put_idle(&self, instance: Instance) {
        let mut idle = self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(instance);
        }
    }
}

/// What happened, without wasmtime's backtrace: "wasm trap: wasm `unreachable` instruction executed".
fn trap_message(error: &wasmtime::Error) -> String {
    match error.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => trap.to_string(),
        None => error.root_cause().to_string(),
    }
}

//! A loaded plugin: its compiled component, its manifest, and a pool of ready instances.
//!
//! Instances are reused across calls and connections: the broker keeps no plugin state in them
//! (durable state lives in the host), so any idle instance can serve any call. An instance whose
//! call trapped or timed out may be corrupt and is dropped, never returned to the pool.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_utils::CachePadded;
use parking_lot::Mutex;
use serde_json::value::RawValue;
use thread_local::ThreadLocal;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use wasmtime::component::InstancePre;
use wasmtime::{Store, UpdateDeadline};

use super::cache::Source;
use super::host::broker::plugin::types::ActionSpec;
use super::host::dispatching::{Dispatching, DispatchingIndices};
use super::host::documented::DocumentedIndices;
use super::host::{
    Context, HandlerError, HostState, PluginCore, PluginCoreIndices, PluginEnv, PluginManifest, Rejection,
    SendLimitExceeded,
};
use super::{CallError, PluginError, Runtime, TrapCause};
use crate::config;
use crate::hub::metrics::Histogram;
use crate::hub::metrics::Metrics;
use crate::hub::registry::Registry;
use crate::hub::state::Kv;
use crate::plugin::schema::Validators;
use crate::wire::protocol::Problem;

/// Idle instances kept per plugin (divided among threads, at least two each); more are created
/// under load and dropped after.
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

/// A stack of idle instances. Boxed, so that a call's future holds a pointer, not the instance:
/// that future is allocated per message, and smaller is cheaper.
#[allow(clippy::vec_box)]
type Idle = Vec<Box<Instance>>;

struct Instance {
    store: Store<HostState>,
    instance: wasmtime::component::Instance,
    bindings: PluginCore,
    /// The `dispatch` export, when the plugin has it.
    dispatch: Option<Dispatching>,
    /// Its place under `plugins.<name>.max_instances`, given back when it is dropped.
    _permit: OwnedSemaphorePermit,
}

/// What a plugin's calls reach besides the plugin: shared by all its generations.
#[derive(Clone)]
pub struct Services {
    pub registry: Arc<Registry>,
    pub kv: Arc<Kv>,
    pub metrics: Arc<Metrics>,
}

/// Calls failing in a row before a plugin is backed off; when the failures are traps or timeouts,
/// they must also come from this many different client addresses.
const CRASHES_BEFORE_BACKOFF: usize = 5;
/// The first backoff; it doubles while probes keep failing, up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How one call ended, for the backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Answered,
    /// A trap or a timeout in a call for a client at this address (none: an internal call).
    Crashed(Option<IpAddr>),
    /// The plugin could not even be started: its own failure, whoever called.
    Unstartable,
}

/// Consecutive failures of one generation, and the backoff they earned.
///
/// A client can make a plugin trap on purpose (a payload its code mishandles): such crashes are
/// charged to that client's connection (closed after `plugins.<name>.crashes_per_connection`), and
/// back the whole plugin off only when they come from many addresses, so one client, however many
/// times it reconnects, cannot take a plugin away from everyone.
#[derive(Debug, Default)]
struct Crashes {
    in_a_row: usize,
    /// The different client addresses among them, up to `CRASHES_BEFORE_BACKOFF`.
    callers: Vec<IpAddr>,
    /// One of them is the plugin's own: it could not start, or failed in a call for no client.
    own: bool,
    backoff: Duration,
    until: Option<Instant>,
}

impl Crashes {
    /// `Some(remaining)` while backed off.
    fn backed_off(&self, now: Instant) -> Option<Duration> {
        self.until.filter(|until| *until > now).map(|until| until - now)
    }

    fn record(&mut self, outcome: Outcome, now: Instant) {
        match outcome {
            Outcome::Answered => {
                *self = Crashes::default();
                return;
            }
            Outcome::Unstartable => self.own = true,
            // A call for no client (an internal one) is the plugin's own.
            Outcome::Crashed(None) => self.own = true,
            Outcome::Crashed(Some(caller)) => {
                if self.callers.len() < CRASHES_BEFORE_BACKOFF && !self.callers.contains(&caller) {
                    self.callers.push(caller);
                }
            }
        }
        self.in_a_row += 1;
        let many_clients = self.callers.len() >= CRASHES_BEFORE_BACKOFF;
        if self.in_a_row >= CRASHES_BEFORE_BACKOFF && (self.own || many_clients) {
            self.backoff = if self.backoff.is_zero() { FIRST_BACKOFF } else { (self.backoff * 2).min(MAX_BACKOFF) };
            self.until = Some(now + self.backoff);
        }
    }
}

/// One generation of one plugin: compiled, checked and ready to call.
pub struct LoadedPlugin {
    env: Arc<PluginEnv>,
    manifest: PluginManifest,
    accepts: Vec<String>,
    /// For each accepted action, what its handler replies with (empty for plugins before 0.1.3).
    replies: Vec<(String, Vec<String>)>,
    /// Frames it sends outside the action envelope, each schema the whole frame's.
    raw_frames: Vec<ActionSpec>,
    validators: Validators,
    pre: InstancePre<HostState>,
    indices: PluginCoreIndices,
    /// Where `dispatch` is, for plugins built against 0.1.5 with it: their messages go to
    /// `on-frame`, the others' to `on-message`.
    dispatch: Option<DispatchingIndices>,
    /// Idle instances, a stack per thread: a call takes from and gives back to its own thread's,
    /// so calls on two cores do not pass one lock between them; a thread with none takes another's.
    /// Padded: the stacks of adjacent threads are adjacent in memory.
    idle: ThreadLocal<CachePadded<Mutex<Idle>>>,
    idle_per_thread: usize,
    /// A permit per instance alive, idle or in a call (`max_instances`): a call that finds an idle
    /// instance touches no counter shared with the calls on other cores.
    alive: Arc<Semaphore>,
    /// Calls waiting for an instance (all `max_instances` are in calls), and their wake-up when
    /// one is given back.
    waiting: AtomicUsize,
    returned: Notify,
    timeout: Duration,
    crashes: Mutex<Crashes>,
    /// Whether `crashes` holds anything but the default: read without the lock on every call.
    troubled: AtomicBool,
    calls: Histogram,
    max_instances: usize,
    /// 1 for the first load, one more for each reload.
    pub generation: u64,
    pub loaded_at: SystemTime,
    /// The SHA-256 of the component file.
    pub hash: String,
    /// Whether it came from the compile cache.
    pub source: Source,
    /// How long compiling (or taking it from the cache) and linking took.
    pub compile_time: Duration,
    /// The configuration it was loaded with.
    pub config: config::Plugin,
}

/// A component file read once: its bytes and their content hash.
pub struct PluginFile {
    bytes: Vec<u8>,
    pub hash: String,
}

impl PluginFile {
    pub async fn read(path: &std::path::Path) -> std::io::Result<PluginFile> {
        let bytes = tokio::fs::read(path).await?;
        // Hashing a multi-megabyte component is CPU work: off the async threads.
        tokio::task::spawn_blocking(move || {
            let hash = super::cache::Cache::key(&bytes);
            PluginFile { bytes, hash }
        })
        .await
        .map_err(std::io::Error::other)
    }
}

impl LoadedPlugin {
    /// Reads `config.path` and loads it (see [`LoadedPlugin::load_file`]).
    pub async fn load(
        runtime: &Arc<Runtime>,
        name: &str,
        config: &config::Plugin,
        services: &Services,
        generation: u64,
    ) -> Result<LoadedPlugin, PluginError> {
        let file = PluginFile::read(&config.path).await.map_err(|e| PluginError::Load {
            plugin: name.to_owned(),
            path: config.path.clone(),
            reason: format!("cannot read the file: {e}"),
        })?;
        LoadedPlugin::load_file(runtime, name, config, file, services, generation).await
    }

    /// Compiles `file` (or takes it from the cache), links it, and asks a first instance for its
    /// manifest: a plugin that cannot answer that is refused.
    pub async fn load_file(
        runtime: &Arc<Runtime>,
        name: &str,
        config: &config::Plugin,
        file: PluginFile,
        services: &Services,
        generation: u64,
    ) -> Result<LoadedPlugin, PluginError> {
        let failed = |reason: String| PluginError::Load { plugin: name.to_owned(), path: config.path.clone(), reason };
        let compiler = runtime.clone();
        let PluginFile { bytes, hash } = file;
        let compiling = Instant::now();
        let (component, source, hash) = tokio::task::spawn_blocking(move || {
            compiler.compile(&bytes, &hash).map(|(component, source)| (component, source, hash))
        })
        .await
        .map_err(|e| failed(format!("compilation panicked: {e}")))?
        .map_err(|e| failed(format!("not a valid component: {e}")))?;
        let instance_pre = runtime
            .linker()
            .instantiate_pre(&component)
            .map_err(|e| failed(format!("does not fit the broker:plugin world: {e:?}")))?;
        let indices =
            PluginCoreIndices::new(&instance_pre).map_err(|e| failed(format!("does not export the handler: {e:?}")))?;
        let documented = DocumentedIndices::new(&instance_pre).ok();
        let dispatch = DispatchingIndices::new(&instance_pre).ok();
        let settings = serde_json::to_string(&config.settings).map_err(|e| failed(format!("settings: {e}")))?;

        let env = PluginEnv {
            name: Arc::from(name),
            namespace: Arc::from(config.namespace(name)),
            settings: Arc::from(settings),
            registry: services.registry.clone(),
            kv: services.kv.clone(),
            metrics: services.metrics.clone(),
            allow_hosts: super::AllowList::new(&config.allow_hosts, Some(services.metrics.clone())),
            env: config.env.iter().filter_map(|name| std::env::var(name).ok().map(|v| (name.clone(), v))).collect(),
            max_sends_per_call: config.max_sends_per_call,
            max_send_bytes_per_call: config.max_send_bytes_per_call,
            max_memory_bytes: config.max_memory_bytes.unwrap_or(runtime.max_memory_bytes()),
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
            replies: Vec::new(),
            raw_frames: Vec::new(),
            validators: Validators::default(),
            pre: instance_pre,
            indices,
            dispatch,
            idle: ThreadLocal::new(),
            idle_per_thread: (MAX_IDLE / std::thread::available_parallelism().map_or(1, usize::from)).max(2),
            alive: Arc::new(Semaphore::new(config.max_instances)),
            waiting: AtomicUsize::new(0),
            returned: Notify::new(),
            timeout: config.timeout(),
            crashes: Mutex::new(Crashes::default()),
            troubled: AtomicBool::new(false),
            calls: services.metrics.plugin_calls(name),
            max_instances: config.max_instances,
            generation,
            loaded_at: SystemTime::now(),
            hash,
            source,
            compile_time: compiling.elapsed(),
            config: config.clone(),
        };
        let manifest = plugin
            .call(None, None, async |i| i.bindings.broker_plugin_handler().call_manifest(&mut i.store).await)
            .await
            .map_err(|e| failed(format!("asking for its manifest failed: {e}")))?;
        if let Some(documented) = documented {
            let (replies, raw_frames) = plugin
                .call(None, None, async |i| {
                    let describe = documented.load(&mut i.store, &i.instance)?;
                    let replies = describe.broker_plugin_describe().call_replies(&mut i.store).await?;
                    let raw_frames = describe.broker_plugin_describe().call_raw_frames(&mut i.store).await?;
                    Ok((replies, raw_frames))
                })
                .await
                .map_err(|e| failed(format!("asking for its description failed: {e}")))?;
            plugin.replies = replies.into_iter().map(|r| (r.action, r.replies)).collect();
            plugin.raw_frames = raw_frames;
        }
        plugin.validators = Validators::compile(&manifest).map_err(failed)?;
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

    /// Checks a payload of `action` against the schema this generation published.
    pub fn validate(&self, action: &str, payload: Option<&RawValue>) -> Result<(), Vec<Problem>> {
        self.validators.check(action, payload)
    }

    /// The frames it sends outside the action envelope.
    pub fn raw_frames(&self) -> &[ActionSpec] {
        &self.raw_frames
    }

    /// Whether a frame of `action` must carry a payload (its schema refuses `null`).
    pub fn payload_required(&self, action: &str) -> bool {
        self.validators.requires_payload(action)
    }

    /// What the handler of `action` replies with, as the plugin documents it.
    pub fn replies(&self, action: &str) -> &[String] {
        self.replies.iter().find(|(name, _)| name == action).map_or(&[], |(_, replies)| replies)
    }

    /// Whether its messages go to `on-frame` (the `dispatch` export) rather than `on-message`.
    pub fn dispatches(&self) -> bool {
        self.dispatch.is_some()
    }

    /// The calls about a connection take its client's address: failures are charged to it.
    pub async fn on_connect(&self, ctx: &Arc<Context>, client: IpAddr) -> Result<Result<(), Rejection>, CallError> {
        self.call(Some(ctx), Some(client), async |i| {
            i.bindings.broker_plugin_handler().call_on_connect(&mut i.store, ctx).await
        })
        .await
    }

    /// `action` is one of [`accepts`](LoadedPlugin::accepts), at `place` there as
    /// `protocol::parse` found it: `on-frame` takes the place, `on-message` the name (and serves
    /// a call without the place).
    pub async fn on_message(
        &self,
        ctx: &Arc<Context>,
        client: IpAddr,
        action: &str,
        place: Option<usize>,
        payload: Option<&str>,
    ) -> Result<Result<Option<String>, HandlerError>, CallError> {
        // A `null` the schema let through (or an action without one) reaches handlers as no
        // payload, as it always has; only the validation tells the two apart.
        let payload = payload.filter(|text| *text != "null");
        let index = place.and_then(|place| u32::try_from(place).ok());
        // Instances of one generation all have `dispatch` or all lack it.
        self.call(Some(ctx), Some(client), async |i| match (&i.dispatch, index) {
            (Some(dispatch), Some(index)) => {
                dispatch.broker_plugin_dispatch().call_on_frame(&mut i.store, ctx.connection, index, payload).await
            }
            _ => i.bindings.broker_plugin_handler().call_on_message(&mut i.store, ctx, action, payload).await,
        })
        .await
    }

    pub async fn on_disconnect(&self, ctx: &Arc<Context>, client: IpAddr) -> Result<(), CallError> {
        self.call(Some(ctx), Some(client), async |i| {
            i.bindings.broker_plugin_handler().call_on_disconnect(&mut i.store, ctx).await
        })
        .await
    }

    /// Runs one export, about the connection of `ctx` (none: no connection) of a client at
    /// `client`, on an idle instance (or a new one) under the plugin's deadline.
    async fn call<R>(
        &self,
        ctx: Option<&Arc<Context>>,
        client: Option<IpAddr>,
        f: impl AsyncFnOnce(&mut Instance) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        let started = Instant::now();
        // The lock is taken only while the generation has failures on record: not on the way of a
        // healthy plugin's calls.
        if self.troubled.load(Ordering::Acquire)
            && let Some(remaining) = self.crashes.lock().backed_off(started)
        {
            return Err(CallError::BackedOff(remaining));
        }
        let deadline = started + self.timeout;
        let mut instance = match self.take_idle() {
            Some(instance) => instance,
            // Boxed: making an instance is a large future (1.5 KiB) and rare, and the future of every
            // message (`connection::dispatch`, allocated per message) would otherwise be sized for
            // it, past the size glibc's allocator serves from its per-thread cache (1 KiB).
            None => match Box::pin(self.new_or_returned(deadline)).await {
                Ok(instance) => instance,
                Err(error) => {
                    self.record(Outcome::Unstartable, Instant::now());
                    return Err(error);
                }
            },
        };
        let state = instance.store.data_mut();
        state.deadline = deadline;
        state.context = ctx.cloned();
        state.sent = (0, 0);
        instance.store.set_epoch_deadline(1);
        // The epoch callback enforces the deadline while wasm runs; a timer covers a call parked in
        // a host function, with a tick of slack so the callback's clearer error usually wins. Most
        // calls end in their first poll (nothing they called waited): they need no timer, whose
        // creation and removal would be a cost on every message.
        let slack = tokio::time::Instant::from_std(started + self.timeout + Duration::from_millis(50));
        let called = {
            let call = f(&mut instance);
            tokio::pin!(call);
            match std::future::poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx))).await {
                Poll::Ready(called) => Ok(called),
                // Boxed, as `new_or_returned` is above: rare, and it would size every message's future.
                Poll::Pending => Box::pin(tokio::time::timeout_at(slack, call)).await,
            }
        };
        let result = match called {
            Ok(Ok(value)) => {
                // The context goes with the call, while its connection's memory is still in the
                // cache: an idle instance that kept it would drop it at its next call, about another
                // connection, from a line long cold.
                instance.store.data_mut().context = None;
                // A guest whose memory only grows (a garbage-collected runtime that does not give
                // its heap back, a leak) is replaced before it runs out in the middle of a call:
                // instances are interchangeable, so retiring one loses nothing.
                if instance.store.data().limits.bytes > self.env.max_memory_bytes / 2 {
                    self.env.metrics.instance_retired(&self.env.name);
                } else {
                    self.put_idle(instance);
                }
                Ok(value)
            }
            Ok(Err(error)) if error.is::<DeadlineExceeded>() => Err(CallError::Timeout(self.timeout)),
            Ok(Err(error)) => {
                let cause = if let Some(limit) = error.downcast_ref::<SendLimitExceeded>() {
                    TrapCause::SendLimit(limit.0.clone())
                } else if instance.store.data().limits.refused {
                    TrapCause::OutOfMemory
                } else {
                    TrapCause::Failed
                };
                Err(CallError::Trap { cause, detail: trap_message(&error) })
            }
            Err(_) => Err(CallError::Timeout(self.timeout)),
        };
        let ended = Instant::now();
        self.calls.observe((ended - started).as_secs_f64());
        let outcome = if result.is_ok() { Outcome::Answered } else { Outcome::Crashed(client) };
        self.record(outcome, ended);
        result
    }

    /// Records how a call ended. An answer with no failures on record changes nothing and takes
    /// no lock. (Racing a failure recorded meanwhile, it may leave that failure counted: one more
    /// answer clears it.)
    fn record(&self, outcome: Outcome, now: Instant) {
        if outcome == Outcome::Answered && !self.troubled.load(Ordering::Acquire) {
            return;
        }
        let mut crashes = self.crashes.lock();
        crashes.record(outcome, now);
        self.troubled.store(crashes.in_a_row > 0 || crashes.until.is_some(), Ordering::Release);
    }

    /// (idle, busy) instances, for the metrics.
    pub fn instances(&self) -> (usize, usize) {
        let idle = self.idle.iter().map(|stack| stack.lock().len()).sum();
        let alive = self.max_instances - self.alive.available_permits();
        (idle, alive.saturating_sub(idle))
    }

    /// For a call that found no idle instance: a new one, or, when `max_instances` are alive (all
    /// in calls), the first one given back or the first place freed.
    async fn new_or_returned(&self, deadline: Instant) -> Result<Box<Instance>, CallError> {
        if let Ok(permit) = self.alive.clone().try_acquire_owned() {
            return self.instantiate(deadline, permit).await;
        }
        self.env.metrics.limit_hit("plugins.max_instances");
        // Counted while waiting, however the wait ends (the connection may close meanwhile).
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let waiting = Waiting(&self.waiting);
        let waited = loop {
            // Registered before looking, so an instance given back in between is not missed.
            let returned = self.returned.notified();
            tokio::pin!(returned);
            returned.as_mut().enable();
            if let Some(instance) = self.take_idle() {
                break Ok(instance);
            }
            tokio::select! {
                _ = returned => {}
                permit = self.alive.clone().acquire_owned() => break Err(permit),
            }
        };
        drop(waiting);
        match waited {
            Ok(instance) => Ok(instance),
            Err(Ok(permit)) => self.instantiate(deadline, permit).await,
            Err(Err(_closed)) => Err(CallError::Instantiate("plugin unloaded".into())),
        }
    }

    /// A fresh instance; its start-up counts against the deadline of the call it is made for.
    async fn instantiate(&self, deadline: Instant, permit: OwnedSemaphorePermit) -> Result<Box<Instance>, CallError> {
        let state = HostState::new(self.env.clone(), deadline);
        let mut store = Store::new(self.pre.component().engine(), state);
        store.limiter(|state| &mut state.limits);
        store.epoch_deadline_callback(|store| {
            if Instant::now() >= store.data().deadline {
                Err(wasmtime::Error::new(DeadlineExceeded))
            } else {
                // Yield to the async runtime each tick so a busy plugin shares its thread.
                Ok(UpdateDeadline::Yield(1))
            }
        });
        store.set_epoch_deadline(1);
        let instance =
            self.pre.instantiate_async(&mut store).await.map_err(|e| CallError::Instantiate(format!("{e:?}")))?;
        let bindings =
            self.indices.load(&mut store, &instance).map_err(|e| CallError::Instantiate(format!("{e:?}")))?;
        let dispatch = match &self.dispatch {
            Some(indices) => {
                Some(indices.load(&mut store, &instance).map_err(|e| CallError::Instantiate(format!("{e:?}")))?)
            }
            None => None,
        };
        Ok(Box::new(Instance { store, instance, bindings, dispatch, _permit: permit }))
    }

    fn take_idle(&self) -> Option<Box<Instance>> {
        let own = self.idle.get_or_default().lock().pop();
        own.or_else(|| self.idle.iter().find_map(|stack| stack.lock().pop()))
    }

    fn put_idle(&self, instance: Box<Instance>) {
        {
            let mut idle = self.idle.get_or_default().lock();
            if idle.len() >= self.idle_per_thread {
                // Dropped: its place is freed for a waiting call to make a new one.
                return;
            }
            idle.push(instance);
        }
        // Read on every call, written only while calls wait: the line stays shared, not moved.
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.returned.notify_one();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_starts_after_five_crashes_from_five_clients_and_grows_until_a_success() {
        let now = Instant::now();
        let client = |n: u8| Outcome::Crashed(Some(IpAddr::from([127, 0, 0, n])));
        let mut crashes = Crashes::default();
        for n in 1..5 {
            crashes.record(client(n), now);
        }
        assert_eq!(crashes.backed_off(now), None);
        crashes.record(client(5), now);
        assert_eq!(crashes.backed_off(now), Some(FIRST_BACKOFF));
        let later = now + FIRST_BACKOFF;
        assert_eq!(crashes.backed_off(later), None, "the probe after the backoff may run");
        crashes.record(client(1), later);
        assert_eq!(crashes.backed_off(later), Some(FIRST_BACKOFF * 2));
        crashes.record(Outcome::Answered, later);
        assert_eq!(crashes.backed_off(later), None);
        assert_eq!(crashes.in_a_row, 0);
    }

    #[test]
    fn crashes_from_one_address_never_back_the_plugin_off() {
        let now = Instant::now();
        let mut crashes = Crashes::default();
        for _ in 0..100 {
            crashes.record(Outcome::Crashed(Some(IpAddr::from([127, 0, 0, 1]))), now);
        }
        assert_eq!(crashes.backed_off(now), None);
    }

    #[test]
    fn a_plugin_that_cannot_start_is_backed_off_whoever_calls() {
        let now = Instant::now();
        let mut crashes = Crashes::default();
        for _ in 0..CRASHES_BEFORE_BACKOFF {
            crashes.record(Outcome::Unstartable, now);
        }
        assert_eq!(crashes.backed_off(now), Some(FIRST_BACKOFF));
    }
}

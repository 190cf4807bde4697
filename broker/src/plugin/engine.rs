//! The one wasmtime `Engine` and `Linker` of the process, and the epoch clock behind call deadlines.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::PluginError;
use super::cache::{Cache, Source};
use super::host::{HostState, PluginCore};
use crate::config;

/// Compiles plugins and links them against the host interfaces.
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    cache: Cache,
    ticker: Ticker,
    max_memory_bytes: usize,
}

impl Runtime {
    pub fn new(limits: &config::Engine) -> Result<Runtime, PluginError> {
        let mut pool = PoolingAllocationConfig::default();
        let instances = limits.max_instances;
        // A Rust component is one main module plus a few adapter shims: leave room per instance.
        pool.total_component_instances(instances)
            .total_core_instances(instances.saturating_mul(8))
            .total_memories(instances.saturating_mul(2))
            .total_tables(instances.saturating_mul(4))
            .total_stacks(instances)
            .max_memory_size(limits.max_memory_bytes);

        let mut config = Config::new();
        config
            .concurrency_support(false)
            .epoch_interruption(true)
            .wasm_component_model(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(|e| PluginError::Engine(format!("{e:?}")))?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| PluginError::Engine(format!("{e:?}")))?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(|e| PluginError::Engine(format!("{e:?}")))?;
        PluginCore::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |state| state)
            .map_err(|e| PluginError::Engine(format!("{e:?}")))?;

        let ticker = Ticker::start(engine.clone(), Duration::from_millis(limits.epoch_tick_ms))
            .map_err(|e| PluginError::Engine(format!("cannot start the epoch thread: {e}")))?;
        Ok(Runtime {
            engine,
            linker,
            cache: Cache::new(&limits.cache_dir),
            ticker,
            max_memory_bytes: limits.max_memory_bytes,
        })
    }

    /// The most linear memory any instance may have (`engine.max_memory_bytes`).
    pub fn max_memory_bytes(&self) -> usize {
        self.max_memory_bytes
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn linker(&self) -> &Linker<HostState> {
        &self.linker
    }

    /// The component of `bytes` (with content hash `key`), from the cache or compiled. CPU-heavy on
    /// a cache miss: call it off the async runtime's threads.
    pub fn compile(&self, bytes: &[u8], key: &str) -> Result<(Component, Source), String> {
        self.cache.load(&self.engine, bytes, key)
    }

    /// How often the epoch advances: the granularity of deadlines.
    pub fn tick(&self) -> Duration {
        self.ticker.period
    }
}

/// Advances the engine's epoch on a plain thread, so deadlines hold even when every async worker
/// is busy running wasm.
struct Ticker {
    period: Duration,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    fn start(engine: Engine, period: Duration) -> std::io::Result<Ticker> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new().name("epoch-ticker".into()).spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(period);
                engine.increment_epoch();
            }
        })?;
        Ok(Ticker { period, stop, thread: Some(thread) })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

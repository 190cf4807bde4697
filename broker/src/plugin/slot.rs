//! A plugin's place in the broker across reloads: the generation in service, and how reloads went.
//!
//! Connections hold the slot, not a generation. Each call takes the current generation
//! (`Slot::current`) and keeps it until the call ends, so a swap never interrupts a call, every
//! message read after the swap goes to the new generation, and an old generation is freed when its
//! last call ends.

use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use serde_json::{Value, json};

use super::LoadedPlugin;

#[derive(Debug, Default)]
struct History {
    reloads: u64,
    failed_reloads: u64,
    last_error: Option<(SystemTime, String)>,
    /// The content hash of the file that failed last.
    failed_hash: Option<String>,
}

/// One plugin by name: its current generation and its reload history.
pub struct Slot {
    name: String,
    current: ArcSwap<LoadedPlugin>,
    history: Mutex<History>,
}

impl Slot {
    pub fn new(name: &str, first: LoadedPlugin) -> Slot {
        Slot { name: name.to_owned(), current: ArcSwap::from_pointee(first), history: Mutex::default() }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The generation new calls go to.
    pub fn current(&self) -> Arc<LoadedPlugin> {
        self.current.load_full()
    }

    /// The generation new calls go to, for one message: held like an `Arc` (a reload meanwhile
    /// waits for nothing and frees nothing under it), without adding to the count every message
    /// of every connection would otherwise write, a cache line moved between cores per message.
    pub fn load(&self) -> arc_swap::Guard<Arc<LoadedPlugin>> {
        self.current.load()
    }

    /// Puts a new generation in service.
    pub fn swap(&self, next: LoadedPlugin) {
        self.current.store(Arc::new(next));
        let mut history = self.history.lock();
        history.reloads += 1;
        history.last_error = None;
        history.failed_hash = None;
    }

    /// Records a reload of the file with content hash `hash` that failed; the current generation stays.
    pub fn failed(&self, error: String, hash: Option<String>) {
        let mut history = self.history.lock();
        history.failed_reloads += 1;
        history.last_error = Some((SystemTime::now(), error));
        history.failed_hash = hash;
    }

    /// Whether the last failed reload was of a file with this content hash.
    pub fn failed_with(&self, hash: &str) -> bool {
        self.history.lock().failed_hash.as_deref() == Some(hash)
    }

    /// What `/api/plugins` shows of it.
    pub fn status(&self) -> Value {
        let current = self.current();
        let history = self.history.lock();
        json!({
            "name": self.name,
            "version": current.manifest().version,
            "generation": current.generation,
            "loaded_at": rfc3339(current.loaded_at),
            "path": current.config.path.display().to_string(),
            "sha256": current.hash,
            "compiled_from": current.source.as_str(),
            "compile_ms": current.compile_time.as_millis() as u64,
            "accepts": current.accepts(),
            // Which export its messages go to: `on-frame` from 0.1.5's `dispatch`, or `on-message`.
            "message_export": if current.dispatches() { "dispatch.on-frame" } else { "handler.on-message" },
            "reloads": history.reloads,
            "failed_reloads": history.failed_reloads,
            "last_error": history.last_error.as_ref().map(|(at, error)| json!({"at": rfc3339(*at), "error": error})),
        })
    }
}

pub fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

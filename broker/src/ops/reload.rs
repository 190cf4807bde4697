//! Hot reload: plugin files and broker.toml are watched; a change becomes a new generation (or a
//! new configuration) without dropping a connection, and a change that fails leaves the running
//! version in place, logged, counted and shown by `/api/plugins`.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::edge::live::{Live, Shared};
use crate::hub::outbound::CloseReason;
use crate::plugin::{LoadedPlugin, PluginFile};

/// Writes closer together than this are one change: an editor or `cargo build` writing a file in
/// several steps triggers one reload, of the finished file.
const DEBOUNCE: Duration = Duration::from_millis(50);

/// Whether an event may have changed a file's content. Opening and reading do not, and must not
/// count: the reload itself reads the file.
fn changes_content(event: &Event) -> bool {
    !matches!(event.kind, EventKind::Access(_))
}

/// Watching stops when this is dropped.
pub struct Watcher {
    task: JoinHandle<()>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The names of the files a reload is about, for notify's thread: the events of every other file
/// in the watched folders (a log beside broker.toml) are dropped there, before they cost the
/// runtime a wake-up. A name is enough to drop; `run` compares whole paths.
type Names = Arc<ArcSwap<HashSet<OsString>>>;

/// Starts watching broker.toml and the plugin files of the configuration in force.
pub(crate) fn watch(shared: Arc<Shared>) -> Option<Watcher> {
    let (tx, rx) = mpsc::channel::<PathBuf>(1024);
    let names = Names::default();
    let wanted = names.clone();
    let watcher = notify::recommended_watcher(move |result: notify::Result<Event>| match result {
        // notify calls from its own thread, so blocking here blocks no async worker.
        Ok(event) if changes_content(&event) => {
            let wanted = wanted.load();
            for path in event.paths.into_iter().filter(|path| path.file_name().is_some_and(|n| wanted.contains(n))) {
                drop(tx.blocking_send(path));
            }
        }
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "file watching failed"),
    });
    let mut watcher = match watcher {
        Ok(watcher) => watcher,
        Err(error) => {
            tracing::warn!(%error, "cannot watch files: hot reload is off");
            return None;
        }
    };
    // Watching starts before this returns: a change made once the broker serves is never missed.
    let mut watched = HashSet::new();
    update_watches(&mut watcher, &mut watched, &names, &shared.live.load().config);
    Some(Watcher { task: tokio::spawn(run(shared, watcher, watched, names, rx)) })
}

async fn run(
    shared: Arc<Shared>,
    mut watcher: RecommendedWatcher,
    mut watched: HashSet<PathBuf>,
    names: Names,
    mut changes: mpsc::Receiver<PathBuf>,
) {
    loop {
        // Debounce: gather changes until the files have been quiet for a moment. Only the files of
        // the configuration in force count: another file written without pause in the same folder
        // would otherwise keep the folder from ever being quiet, and hold every reload back.
        let relevant: HashSet<PathBuf> = files(&shared.live.load().config).map(|file| normalize(file)).collect();
        let mut changed = HashSet::new();
        let mut quiet_at = None;
        loop {
            let next = match quiet_at {
                None => changes.recv().await,
                Some(at) => match tokio::time::timeout_at(at, changes.recv()).await {
                    Ok(next) => next,
                    Err(_) => break,
                },
            };
            // The sender lives in the watcher, which lives as long as this task.
            let Some(path) = next else { return };
            let path = normalize(&path);
            if relevant.contains(&path) {
                changed.insert(path);
                quiet_at = Some(tokio::time::Instant::now() + DEBOUNCE);
            }
        }
        let live = shared.live.load_full();
        if changed.contains(&normalize(&live.config.source)) {
            reload_config(&shared).await;
            update_watches(&mut watcher, &mut watched, &names, &shared.live.load().config);
        }
        let live = shared.live.load_full();
        for (name, plugin) in &live.config.plugins {
            if changed.contains(&normalize(&plugin.path)) {
                reload_plugin(&shared, name).await;
            }
        }
    }
}

/// broker.toml and the file of every plugin.
fn files(config: &Config) -> impl Iterator<Item = &PathBuf> {
    std::iter::once(&config.source).chain(config.plugins.values().map(|p| &p.path))
}

/// Watches the folders of broker.toml and of every plugin: editors and compilers replace files
/// (write elsewhere, rename over), which a watch on the file itself would lose.
fn update_watches(watcher: &mut RecommendedWatcher, watched: &mut HashSet<PathBuf>, names: &Names, config: &Config) {
    names.store(Arc::new(files(config).filter_map(|file| file.file_name()).map(OsString::from).collect()));
    for dir in files(config).filter_map(|file| file.parent()).map(folder) {
        if !watched.contains(&dir) {
            match watcher.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    watched.insert(dir);
                }
                Err(error) => tracing::warn!(dir = %dir.display(), %error, "cannot watch this folder"),
            }
        }
    }
}

fn folder(dir: &Path) -> PathBuf {
    if dir.as_os_str().is_empty() { PathBuf::from(".") } else { dir.to_owned() }
}

/// The same file named two ways (`a/./b`, a symlinked folder) compares equal after this.
fn normalize(path: &Path) -> PathBuf {
    let dir = path.parent().map(folder).unwrap_or_else(|| PathBuf::from("."));
    let dir = dir.canonicalize().unwrap_or(dir);
    match path.file_name() {
        Some(name) => dir.join(name),
        None => dir,
    }
}

/// Loads a plugin's file again and swaps it in as the next generation; on failure the current
/// generation keeps serving.
pub(crate) async fn reload_plugin(shared: &Shared, name: &str) {
    let _one_at_a_time = shared.reloading.lock().await;
    let live = shared.live.load_full();
    let (Some(slot), Some(config)) = (live.slots.get(name), live.config.plugins.get(name)) else { return };
    let current = slot.current();
    let started = Instant::now();
    let file = match PluginFile::read(&config.path).await {
        Ok(file) => file,
        Err(error) => {
            let error = format!("plugin {name:?} ({}): cannot read the file: {error}", config.path.display());
            tracing::error!(plugin = name, %error, "plugin reload failed; the running generation stays");
            slot.failed(error, None);
            shared.metrics.reloaded("plugin", false);
            return;
        }
    };
    // Editors touch files and builds rewrite identical outputs: same bytes, same plugin, and the
    // same bytes that failed a moment ago fail again.
    if file.hash == current.hash || slot.failed_with(&file.hash) {
        return;
    }
    let hash = file.hash.clone();
    match LoadedPlugin::load_file(&shared.runtime, name, config, file, &shared.services, current.generation + 1).await {
        Ok(next) => {
            tracing::info!(
                plugin = name,
                generation = next.generation,
                version = %next.manifest().version,
                from = ?next.source,
                took_ms = started.elapsed().as_millis() as u64,
                "plugin reloaded"
            );
            slot.swap(next);
            shared.metrics.reloaded("plugin", true);
        }
        Err(error) => {
            tracing::error!(plugin = name, %error, "plugin reload failed; the running generation stays");
            slot.failed(error.to_string(), Some(hash));
            shared.metrics.reloaded("plugin", false);
        }
    }
}

/// Reads broker.toml again and applies it whole, or not at all.
pub(crate) async fn reload_config(shared: &Shared) {
    let _one_at_a_time = shared.reloading.lock().await;
    let live = shared.live.load_full();
    match prepare(shared, &live).await {
        Ok(next) => {
            let removed = removed_routes(&live, &next);
            warn_restart_only(&live.config, &next.config);
            shared.live.store(Arc::new(next));
            *shared.config_error.lock() = None;
            let reason =
                CloseReason::new(crate::wire::close_code::GOING_AWAY, "route removed by a configuration reload");
            let closed = shared.registry.close_routes(&removed, &reason);
            tracing::info!(removed_routes = ?removed, closed_connections = closed, "configuration reloaded");
            shared.metrics.reloaded("config", true);
        }
        Err(error) => {
            tracing::error!(%error, "configuration reload failed; the running configuration stays");
            *shared.config_error.lock() = Some((SystemTime::now(), error));
            shared.metrics.reloaded("config", false);
        }
    }
}

/// The next `Live`, built from broker.toml as it is now (see [`Live::build`]).
async fn prepare(shared: &Shared, live: &Live) -> Result<Live, String> {
    let mut config = Config::load(&live.config.source).map_err(|e| e.to_string())?;
    if let Some(addr) = live.config.listen_override {
        config.override_listen(addr);
    }
    Live::build(config, Some(live), &shared.runtime, &shared.services).await.map_err(|e| e.to_string())
}

/// Routes of `old` that `new` no longer has, or has for another plugin: their connections close.
fn removed_routes(old: &Live, new: &Live) -> HashSet<String> {
    let kept: HashSet<(&str, &str)> = new.router.routes().map(|r| (r.pattern.as_str(), r.plugin.as_str())).collect();
    old.router
        .routes()
        .filter(|r| !kept.contains(&(r.pattern.as_str(), r.plugin.as_str())))
        .map(|r| r.pattern.clone())
        .collect()
}

/// Settings read once at start-up: a reload cannot change them, so say so instead of ignoring them.
fn warn_restart_only(old: &Config, new: &Config) {
    let changed = [
        ("server.listen", old.server.listen != new.server.listen),
        ("engine", old.engine != new.engine),
        (
            "server.max_groups_per_connection",
            old.server.max_groups_per_connection != new.server.max_groups_per_connection,
        ),
        ("state", old.state != new.state),
        ("cluster", old.cluster != new.cluster),
    ];
    for (key, _) in changed.iter().filter(|(_, changed)| *changed) {
        tracing::warn!(key, "this setting changed in broker.toml but takes effect only after a restart");
    }
}

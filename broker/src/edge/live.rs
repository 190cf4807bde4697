//! The live service: everything a configuration builds (the route table, the token verifier, the
//! TLS acceptor, the plugins), built in one place for start-up, reloads and `broker check`, and what
//! request handlers and reloads share.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use tokio_util::task::TaskTracker;

use crate::config::{Config, ConfigError};
use crate::edge::auth::Verifier;
use crate::edge::limits::Admission;
use crate::edge::router::Router;
use crate::hub::history::Policy;
use crate::hub::metrics::Metrics;
use crate::hub::registry::{self, Registry};
use crate::hub::state::{self, Kv};
use crate::plugin::{LoadedPlugin, PluginError, Runtime, Services, Slot};

/// The configuration in force, with everything built from it. Swapped whole on a configuration
/// reload, so a request never sees a route of one version and a plugin of another.
pub struct Live {
    pub config: Config,
    pub router: Router,
    pub slots: HashMap<String, Arc<Slot>>,
    /// Checks the tokens of routes with `auth`; `None` when `[auth]` has no key.
    pub verifier: Option<Arc<Verifier>>,
    /// TLS on the listener, when `[server.tls]` is set.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub loaded_at: SystemTime,
}

/// Why a configuration could not be built: every problem found, each naming its key or plugin.
#[derive(Debug)]
pub struct Problems(pub Vec<Problem>);

/// One reason a configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{file}: `plugins.{name}.path`: {error}")]
    Plugin { file: String, name: String, error: PluginError },
}

impl std::fmt::Display for Problems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let lines: Vec<String> = self.0.iter().map(Problem::to_string).collect();
        f.write_str(&lines.join("\n"))
    }
}

impl std::error::Error for Problems {}

impl Live {
    /// Builds what `config` describes. With `previous` (a reload), plugins whose configuration is
    /// unchanged keep their slot, changed ones get their next generation; nothing running is touched unless the whole build succeeds.
    pub async fn build(
        config: Config,
        previous: Option<&Live>,
        runtime: &Arc<Runtime>,
        services: &Services,
    ) -> Result<Live, Problems> {
        let mut problems = Vec::new();
        let invalid = |(key, message)| ConfigError::Invalid { path: config.source.clone(), key, message };
        let router = Router::from_config(&config).map_err(|e| problems.push(e.into())).ok();
        let verifier = Verifier::from_config(&config.auth)
            .map(|verifier| verifier.map(Arc::new))
            .map_err(|e| problems.push(invalid(e).into()))
            .ok();
        // Read again on every build: a configuration reload picks up renewed certificate files.
        let tls = match &config.server.tls {
            None => Some(None),
            Some(tls) => crate::edge::tls::acceptor(tls).map(Some).map_err(|e| problems.push(invalid(e).into())).ok(),
        };
        let mut slots = HashMap::new();
        let mut swaps = Vec::new();
        for (name, plugin) in &config.plugins {
            let slot = previous.and_then(|live| live.slots.get(name));
            if let Some(slot) = slot.filter(|slot| slot.current().config == *plugin) {
                slots.insert(name.clone(), slot.clone());
                continue;
            }
            let generation = slot.map_or(1, |slot| slot.current().generation + 1);
            match LoadedPlugin::load(runtime, name, plugin, services, generation).await {
                Ok(loaded) => {
                    tracing::info!(
                        plugin = %name,
                        generation,
                        version = %loaded.manifest().version,
                        accepts = ?loaded.accepts(),
                        path = %plugin.path.display(),
                        from = ?loaded.source,
                        "plugin loaded"
                    );
                    match slot {
                        Some(slot) => {
                            swaps.push((slot.clone(), loaded));
                            slots.insert(name.clone(), slot.clone());
                        }
                        None => {
                            slots.insert(name.clone(), Arc::new(Slot::new(name, loaded)));
                        }
                    }
                }
                Err(error) => problems.push(Problem::Plugin {
                    file: config.source.display().to_string(),
                    name: name.clone(),
                    error,
                }),
            }
        }
        let (Some(router), Some(verifier), Some(tls), true) = (router, verifier, tls, problems.is_empty()) else {
            return Err(Problems(problems));
        };
        // Everything is built: only now touch what is running.
        for (slot, next) in swaps {
            slot.swap(next);
        }
        services.registry.set_history(history_policies(&config));
        Ok(Live { config, router, slots, verifier, tls, loaded_at: SystemTime::now() })
    }

    /// Builds `config` as start-up would, on an engine of its own and without joining a cluster or
    /// serving: for `broker check` and the documents printed from a configuration.
    pub async fn check(config: Config) -> Result<Live, Problems> {
        let runtime = Runtime::new(&config.engine).map_err(|error| {
            let file = config.source.display().to_string();
            Problems(vec![Problem::Plugin { file, name: "*".into(), error }])
        })?;
        let services = Services {
            registry: Arc::new(Registry::new(
                registry::Limits { max_groups_per_connection: 1, session_bytes: 1 },
                None,
            )),
            kv: Arc::new(Kv::new(state::Limits { value_bytes: 1, keys_per_namespace: 1 }, None)),
            metrics: Arc::new(Metrics::default()),
        };
        Live::build(config, None, &Arc::new(runtime), &services).await
    }

    /// The generation in service of each plugin, by name.
    pub fn generations(&self) -> BTreeMap<String, Arc<LoadedPlugin>> {
        self.slots.iter().map(|(name, slot)| (name.clone(), slot.current())).collect()
    }
}

/// Everything request handlers and reloads share.
pub struct Shared {
    pub live: ArcSwap<Live>,
    pub services: Services,
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    pub runtime: Arc<Runtime>,
    /// The last configuration reload that failed, if the latest one did.
    pub config_error: Mutex<Option<(SystemTime, String)>>,
    /// One reload at a time: they read and replace `live`.
    pub reloading: tokio::sync::Mutex<()>,
    /// The address the listener is bound to (`server.listen` may say port 0).
    pub bound: SocketAddr,
    /// Open connections, in total and per address.
    pub admission: Arc<Admission>,
    pub tracker: TaskTracker,
}

/// Which namespaces keep group history, and how much (the configuration has checked that plugins
/// sharing a namespace agree).
fn history_policies(config: &Config) -> HashMap<Arc<str>, Policy> {
    config
        .plugins
        .iter()
        .filter_map(|(name, plugin)| {
            let history = plugin.history?;
            let policy = Policy {
                size: history.size,
                ttl: Duration::from_millis(history.ttl_ms),
                meta_ttl: Duration::from_millis(history.meta_ttl_ms),
            };
            Some((Arc::from(plugin.namespace(name)), policy))
        })
        .collect()
}

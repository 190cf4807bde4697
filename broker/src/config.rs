//! `broker.toml`: parsed and validated here, and nowhere else.
//!
//! Every option has its default in this file. Unknown keys are errors, and every error names the
//! file and the key, so an operator can fix the file without reading our source.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: `{key}`: {message}")]
    Invalid { path: PathBuf, key: String, message: String },
}

/// The whole file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: Server,
    #[serde(default)]
    pub engine: Engine,
    /// Plugins by name.
    #[serde(default)]
    pub plugins: BTreeMap<String, Plugin>,
    /// Routes, matched by path.
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub api: Api,
    #[serde(default)]
    pub auth: Auth,
    #[serde(default)]
    pub state: State,
    #[serde(default)]
    pub cluster: Cluster,
    /// The file this was read from, for error messages.
    #[serde(skip)]
    pub source: PathBuf,
    /// `--listen`, which overrides `server.listen` for the life of the process, reloads included.
    #[serde(skip)]
    pub listen_override: Option<SocketAddr>,
}

/// `[server]`: the listener and per-connection limits.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    /// Address to listen on. Default `127.0.0.1:8080`; `--listen` overrides it.
    pub listen: SocketAddr,
    /// Largest client message (and frame) in bytes; larger ones close the connection with 1009.
    /// Default 16 MiB.
    pub max_message_bytes: usize,
    /// Frames waiting to be written to one client before it is closed as a slow consumer.
    /// Default 1024.
    pub outbound_queue: usize,
    /// Bytes waiting to be written to one client before it is closed as a slow consumer.
    /// Default 8 MiB.
    pub outbound_queue_bytes: usize,
    /// Groups one connection may be in at once. Default 100.
    pub max_groups_per_connection: usize,
    /// Bytes each connection's read buffer starts with, and reads at a time (it grows for larger
    /// frames). Small, since idle connections are most connections: 1 KiB instead of 4 KiB took an
    /// idle connection from 10.9 to 7.9 KiB. Default 1024.
    pub read_buffer_bytes: usize,
    /// How long shutdown waits for clients to receive their close frames. Default 5000 ms.
    pub shutdown_grace_ms: u64,
    /// Messages one connection may send per second, sustained (a token bucket); more are answered
    /// with a `rate_limited` error frame. 0 turns the limit off. Default 1000.
    pub messages_per_second: u32,
    /// Messages one connection may send at once before the rate applies. Default 1000.
    pub message_burst: u32,
    /// Refused messages in a row after which the connection is closed with 1008. 0: never.
    /// Default 100.
    pub rate_limit_close_after: u32,
    /// Open connections, all clients together; more are refused at the handshake with HTTP 503.
    /// Default 100,000.
    pub max_connections: usize,
    /// Open connections from one IP address; more are refused with HTTP 429. Default 1000.
    pub max_connections_per_ip: usize,
    /// Longest a client may take to send its HTTP request head; slower ones are disconnected. Also
    /// the longest an HTTP API request's body may take (408, then disconnected). Default 10,000 ms.
    pub handshake_timeout_ms: u64,
    /// A connection that sent nothing for this long is sent a WebSocket ping. Default 25,000 ms.
    pub ping_interval_ms: u64,
    /// A connection that sent nothing (not even a pong) for this long is closed with 1001 and
    /// cleaned up: a dead peer. Default 60,000 ms.
    pub idle_timeout_ms: u64,
    /// Longest one write to a client's socket may wait (a client that stopped reading fills TCP and
    /// stalls it); past it the connection is closed as a slow consumer (4008) and its socket
    /// dropped. Default 10,000 ms.
    pub write_timeout_ms: u64,
    /// TLS on the listener (`wss://`); none: plain `ws://`. Restart to change.
    pub tls: Option<Tls>,
    /// Browser origins (`https://app.example`) allowed to open WebSocket connections; a handshake
    /// from another origin gets HTTP 403. Requests without `Origin` (not from a browser) are not
    /// concerned. Default: empty, any origin.
    pub allowed_origins: Vec<String>,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_message_bytes: 16 << 20,
            outbound_queue: 1024,
            outbound_queue_bytes: 8 << 20,
            max_groups_per_connection: 100,
            read_buffer_bytes: 1024,
            shutdown_grace_ms: 5000,
            messages_per_second: 1000,
            message_burst: 1000,
            rate_limit_close_after: 100,
            max_connections: 100_000,
            max_connections_per_ip: 1000,
            handshake_timeout_ms: 10_000,
            ping_interval_ms: 25_000,
            idle_timeout_ms: 60_000,
            write_timeout_ms: 10_000,
            tls: None,
            allowed_origins: Vec::new(),
        }
    }
}

impl Server {
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }

    pub fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.write_timeout_ms)
    }

    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }
}

/// `[engine]`: the wasmtime engine shared by all plugins.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Engine {
    /// Plugin instances alive at once across all plugins (the pooling allocator's size). Default 1000.
    pub max_instances: u32,
    /// Linear memory one instance may grow to, in bytes. Default 64 MiB.
    pub max_memory_bytes: usize,
    /// How often deadlines are checked and long-running plugins yield, in ms. Default 10.
    pub epoch_tick_ms: u64,
    /// Where compiled plugins are cached, by content hash, relative to broker.toml's folder; a
    /// restart or a reload to a known version then skips compilation. Default `.broker-cache`;
    /// `""` turns the cache off.
    pub cache_dir: PathBuf,
}

impl Default for Engine {
    fn default() -> Self {
        Engine { max_instances: 1000, max_memory_bytes: 64 << 20, epoch_tick_ms: 10, cache_dir: ".broker-cache".into() }
    }
}

/// `[state]`: what plugins may keep in the host.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct State {
    /// Bytes (keys and values) one connection's session may hold. Default 64 KiB.
    pub session_bytes: usize,
    /// The largest key-value value, in bytes. Default 1 MiB.
    pub kv_value_bytes: usize,
    /// Keys one namespace's key-value store may hold. Default 100,000.
    pub kv_keys_per_namespace: usize,
    /// Bytes of frames group history may keep in this node's memory, over every group (memory
    /// backend; Redis keeps its own). Default 64 MiB.
    pub history_bytes: usize,
}

impl Default for State {
    fn default() -> Self {
        State {
            session_bytes: 64 << 10,
            kv_value_bytes: 1 << 20,
            kv_keys_per_namespace: 100_000,
            history_bytes: 64 << 20,
        }
    }
}

/// `[cluster]`: where groups, presence and key-value state live. Restart to change.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Cluster {
    /// `memory`: one node, nothing else to run. `redis`: every node with the same Redis and
    /// prefix shares groups, presence and key-value state. Default `memory`.
    pub backend: Backend,
    /// The Redis server, as a `redis://` or `rediss://` URL. Default `redis://127.0.0.1:6379`.
    pub redis_url: String,
    /// An environment variable holding the URL (it wins over `redis_url`), for a password.
    pub redis_url_env: Option<String>,
    /// Prefix of every Redis key and channel, so several clusters can share one Redis. Default `broker`.
    pub key_prefix: String,
    /// This node's name in logs and presence. Default: `node-<pid>`.
    pub node_id: Option<String>,
    /// How often a node says it is alive. Default 1000 ms.
    pub heartbeat_ms: u64,
    /// How long after its last heartbeat a node's members stop being listed. Default 5000 ms.
    pub node_ttl_ms: u64,
}

/// `cluster.backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    #[default]
    Memory,
    Redis,
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster {
            backend: Backend::Memory,
            redis_url: "redis://127.0.0.1:6379".into(),
            redis_url_env: None,
            key_prefix: "broker".into(),
            node_id: None,
            heartbeat_ms: 1000,
            node_ttl_ms: 5000,
        }
    }
}

impl Cluster {
    /// The Redis URL: from `redis_url_env` when set and present, else `redis_url`.
    pub fn redis_url(&self) -> String {
        self.redis_url_env.as_deref().and_then(|var| std::env::var(var).ok()).unwrap_or_else(|| self.redis_url.clone())
    }

    pub fn node_id(&self) -> String {
        self.node_id.clone().unwrap_or_else(|| format!("node-{}", std::process::id()))
    }
}

/// `[plugins.<name>]`: one plugin.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Plugin {
    /// The component file, relative to broker.toml's folder.
    pub path: PathBuf,
    /// Longest a single call may take, in ms, before the client gets `plugin_timeout`. Default 1000.
    #[serde(default = "Plugin::default_timeout_ms")]
    pub timeout_ms: u64,
    /// Instances of this plugin running at once; further calls wait. Default 64.
    #[serde(default = "Plugin::default_max_instances")]
    pub max_instances: usize,
    /// The namespace of the plugin's groups and key-value store. Default: the plugin's name.
    /// Plugins given the same namespace share both (a Rust and a Python chat in the same rooms).
    #[serde(default)]
    pub namespace: Option<String>,
    /// Hosts the plugin may reach over HTTP: `host`, `host:port` or `*`. Default: none.
    #[serde(default)]
    pub allow_hosts: Vec<String>,
    /// Environment variables of the broker passed to the plugin (by name), such as an API key.
    /// Default: none; the plugin sees no environment.
    #[serde(default)]
    pub env: Vec<String>,
    /// Free-form settings handed to the plugin as JSON (`settings()` in the WIT host interface).
    #[serde(default)]
    pub settings: toml::Table,
    /// Linear memory one instance of this plugin may grow to, in bytes; at most
    /// `engine.max_memory_bytes`. Default: `engine.max_memory_bytes`.
    #[serde(default)]
    pub max_memory_bytes: Option<usize>,
    /// Frames (sends and broadcasts) one call may send; past it the call is stopped and the
    /// client gets `plugin_crashed`. Default 10,000.
    #[serde(default = "Plugin::default_max_sends_per_call")]
    pub max_sends_per_call: u32,
    /// Bytes of frames one call may send, likewise. Default 64 MiB.
    #[serde(default = "Plugin::default_max_send_bytes_per_call")]
    pub max_send_bytes_per_call: u64,
    /// Largest client message on this plugin's routes; larger ones close the connection with 1009
    /// before the plugin sees them, so a message the broker accepts fits in the plugin's memory.
    /// Default: a 256th of the plugin's memory limit (256 KiB for 64 MiB: the JavaScript echo runs
    /// out of 64 MiB on a 384 KiB message), at most `server.max_message_bytes`.
    #[serde(default)]
    pub max_message_bytes: Option<usize>,
    /// Calls of one connection that may trap or time out before that connection is closed with
    /// 1011; 0: never. Default 3.
    #[serde(default = "Plugin::default_crashes_per_connection")]
    pub crashes_per_connection: u32,
    /// `[plugins.<name>.history]`: the groups of the plugin's namespace keep their recent frames,
    /// numbered, so a client that reconnects recovers what it missed. Default: no history.
    #[serde(default)]
    pub history: Option<History>,
}

/// `[plugins.<name>.history]`: how much of each group's stream is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct History {
    /// Frames kept per group, the newest. Default 1000.
    #[serde(default = "History::default_size")]
    pub size: usize,
    /// How long a frame is kept, in ms. Default 300,000 (5 minutes).
    #[serde(default = "History::default_ttl_ms")]
    pub ttl_ms: u64,
    /// How long a group's epoch and last offset are kept after its last frame, in ms: a client
    /// back within it, from a group that went quiet, recovers; later, the group has a new epoch.
    /// Default 86,400,000 (a day).
    #[serde(default = "History::default_meta_ttl_ms")]
    pub meta_ttl_ms: u64,
}

impl History {
    fn default_size() -> usize {
        1000
    }

    fn default_ttl_ms() -> u64 {
        300_000
    }

    fn default_meta_ttl_ms() -> u64 {
        86_400_000
    }
}

impl Plugin {
    fn default_timeout_ms() -> u64 {
        1000
    }

    fn default_max_instances() -> usize {
        64
    }

    fn default_max_sends_per_call() -> u32 {
        10_000
    }

    fn default_max_send_bytes_per_call() -> u64 {
        64 << 20
    }

    fn default_crashes_per_connection() -> u32 {
        3
    }

    /// The largest client message its routes take: its own limit, or a 256th of its memory, never
    /// more than the server's.
    pub fn max_message_bytes(&self, engine: &Engine, server: &Server) -> usize {
        let memory = self.max_memory_bytes.unwrap_or(engine.max_memory_bytes);
        self.max_message_bytes.unwrap_or(memory / 256).min(server.max_message_bytes)
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// `[[routes]]`: a WebSocket path served by a plugin.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// The path pattern, e.g. `/ws/system` or `/ws/chat/{room}`.
    pub path: String,
    /// The plugin that handles it, a key of `[plugins]`.
    pub plugin: String,
    /// The route's name in the AsyncAPI document (its channel's id and `title`, which Chanx's
    /// client generator makes a module of): an identifier. Default: from the path (`documents`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Add `message_id`, `timestamp` and `sender` to every frame delivered on this route. Default false,
    /// so Chanx clients see the frames they expect.
    #[serde(default)]
    pub metadata: bool,
    /// Constraints on path parameters, by name; a request breaking one gets HTTP 400.
    #[serde(default)]
    pub params: BTreeMap<String, ParamRule>,
    /// Whether clients must present a token (see `[auth]`). Default `none`.
    #[serde(default)]
    pub auth: AuthMode,
}

/// `[server.tls]`: the listener's certificate.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// The certificate chain in PEM, leaf first, relative to broker.toml.
    pub cert: PathBuf,
    /// Its private key in PEM (PKCS#8, PKCS#1 or SEC1), relative to broker.toml.
    pub key: PathBuf,
}

/// `routes.auth`: what a route asks of a client's token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Tokens are not looked at; connections are anonymous.
    #[default]
    None,
    /// A valid token identifies the connection, no token leaves it anonymous, a bad token is
    /// refused with HTTP 401.
    Optional,
    /// Without a valid token the handshake is refused with HTTP 401 and the reason.
    Required,
}

/// `[auth]`: how tokens (JWT) are checked, for routes with `auth = "optional"` or `"required"`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Auth {
    /// The HS256 secret. Prefer `hs256_secret_env`, so broker.toml holds no secret.
    pub hs256_secret: Option<String>,
    /// The environment variable holding the HS256 secret; it wins over `hs256_secret`.
    pub hs256_secret_env: Option<String>,
    /// A PEM file with the RSA public key RS256 tokens are checked with, relative to broker.toml.
    pub rs256_public_key: Option<PathBuf>,
    /// Accepted `aud` values; a token must carry one of them. Default: empty, `aud` not checked.
    pub audience: Vec<String>,
    /// Accepted `iss` values. Default: empty, `iss` not checked.
    pub issuer: Vec<String>,
    /// Clock skew allowed when checking `exp` and `nbf`, in seconds. Default 30.
    pub leeway_s: u64,
    /// Token claims handed to plugins (the `identity` interface), beside `sub`, which is the user.
    /// Default: none.
    pub claims: Vec<String>,
}

impl Default for Auth {
    fn default() -> Self {
        Auth {
            hs256_secret: None,
            hs256_secret_env: None,
            rs256_public_key: None,
            audience: Vec::new(),
            issuer: Vec::new(),
            leeway_s: 30,
            claims: Vec::new(),
        }
    }
}

impl Auth {
    /// The HS256 secret in force: `hs256_secret_env`'s variable (which must then be set), else
    /// `hs256_secret`.
    pub fn hs256_secret(&self) -> Result<Option<String>, String> {
        match &self.hs256_secret_env {
            Some(var) => match std::env::var(var) {
                Ok(secret) if !secret.is_empty() => Ok(Some(secret)),
                _ => Err(format!("the environment variable {var} is not set")),
            },
            None => Ok(self.hs256_secret.clone().filter(|s| !s.is_empty())),
        }
    }
}

/// `[routes.params.<name>]`: what a path parameter may be.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ParamRule {
    /// A regular expression the whole value must match (`^...$` is implied).
    pub pattern: Option<String>,
    /// The longest value, in characters.
    pub max_length: Option<usize>,
}

/// `[api]`: the HTTP API (`/api/publish`, `/api/groups/{group}/members`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Api {
    /// The key clients send as `Authorization: Bearer <key>`. Without a key (here or in `key_env`)
    /// the API answers 403.
    pub key: Option<String>,
    /// The environment variable holding the key, so broker.toml need not hold the secret.
    pub key_env: Option<String>,
}

impl Api {
    /// The key in force: `key_env`'s variable when set, else `key`.
    pub fn key(&self) -> Option<String> {
        let from_env = self.key_env.as_ref().and_then(|var| std::env::var(var).ok()).filter(|k| !k.is_empty());
        from_env.or_else(|| self.key.clone().filter(|k| !k.is_empty()))
    }
}

impl Plugin {
    /// The namespace its groups and key-value store live in.
    pub fn namespace<'a>(&'a self, name: &'a str) -> &'a str {
        self.namespace.as_deref().unwrap_or(name)
    }
}

impl Config {
    /// Listens on `addr` whatever the file says, now and after reloads.
    pub fn override_listen(&mut self, addr: SocketAddr) {
        self.listen_override = Some(addr);
        self.server.listen = addr;
    }

    /// Reads and validates `path`; plugin paths become absolute, relative to its folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Config::parse(&text, path)
    }

    /// Parses and validates `text` as if read from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text)
            .map_err(|e| ConfigError::Parse { path: path.to_owned(), message: e.to_string().trim_end().to_owned() })?;
        config.source = path.to_owned();
        let base = path.parent().unwrap_or(Path::new("."));
        for plugin in config.plugins.values_mut() {
            if plugin.path.is_relative() {
                plugin.path = base.join(&plugin.path);
            }
        }
        if let Some(key) = config.auth.rs256_public_key.as_mut().filter(|k| k.is_relative()) {
            *key = base.join(&*key);
        }
        if let Some(tls) = &mut config.server.tls {
            for file in [&mut tls.cert, &mut tls.key] {
                if file.is_relative() {
                    *file = base.join(&*file);
                }
            }
        }
        if config.engine.cache_dir.is_relative() && !config.engine.cache_dir.as_os_str().is_empty() {
            config.engine.cache_dir = base.join(&config.engine.cache_dir);
        }
        config.validate()?;
        Ok(config)
    }

    fn invalid(&self, key: String, message: String) -> ConfigError {
        ConfigError::Invalid { path: self.source.clone(), key, message }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: String, message: String| self.invalid(key, message);
        let positive = [
            ("server.max_message_bytes", self.server.max_message_bytes as u64),
            ("server.outbound_queue", self.server.outbound_queue as u64),
            ("server.outbound_queue_bytes", self.server.outbound_queue_bytes as u64),
            ("server.max_groups_per_connection", self.server.max_groups_per_connection as u64),
            ("server.read_buffer_bytes", self.server.read_buffer_bytes as u64),
            ("server.max_connections", self.server.max_connections as u64),
            ("server.max_connections_per_ip", self.server.max_connections_per_ip as u64),
            ("server.handshake_timeout_ms", self.server.handshake_timeout_ms),
            ("server.ping_interval_ms", self.server.ping_interval_ms),
            ("server.write_timeout_ms", self.server.write_timeout_ms),
            ("engine.max_instances", u64::from(self.engine.max_instances)),
            ("engine.max_memory_bytes", self.engine.max_memory_bytes as u64),
            ("engine.epoch_tick_ms", self.engine.epoch_tick_ms),
            ("state.session_bytes", self.state.session_bytes as u64),
            ("state.kv_value_bytes", self.state.kv_value_bytes as u64),
            ("state.kv_keys_per_namespace", self.state.kv_keys_per_namespace as u64),
            ("state.history_bytes", self.state.history_bytes as u64),
            ("cluster.heartbeat_ms", self.cluster.heartbeat_ms),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(invalid(key.into(), "must be greater than 0".into()));
            }
        }
        if self.server.idle_timeout_ms <= self.server.ping_interval_ms {
            return Err(invalid(
                "server.idle_timeout_ms".into(),
                format!(
                    "must be longer than server.ping_interval_ms ({} ms), or live clients would be closed before \
                     they are pinged",
                    self.server.ping_interval_ms
                ),
            ));
        }
        if self.cluster.node_ttl_ms <= self.cluster.heartbeat_ms {
            return Err(invalid(
                "cluster.node_ttl_ms".into(),
                format!(
                    "must be longer than cluster.heartbeat_ms ({} ms), or live nodes would drop out between heartbeats",
                    self.cluster.heartbeat_ms
                ),
            ));
        }
        if self.cluster.key_prefix.is_empty() || self.cluster.key_prefix.contains(':') {
            return Err(invalid("cluster.key_prefix".into(), "must be non-empty and without ':'".into()));
        }
        if self.cluster.backend == Backend::Redis
            && let Err(e) = redis::Client::open(self.cluster.redis_url())
        {
            return Err(invalid("cluster.redis_url".into(), format!("not a Redis URL: {e}")));
        }
        for (name, plugin) in &self.plugins {
            if plugin.timeout_ms == 0 {
                return Err(invalid(format!("plugins.{name}.timeout_ms"), "must be greater than 0".into()));
            }
            if plugin.max_instances == 0 {
                return Err(invalid(format!("plugins.{name}.max_instances"), "must be greater than 0".into()));
            }
            if plugin.max_sends_per_call == 0 || plugin.max_send_bytes_per_call == 0 {
                let key = if plugin.max_sends_per_call == 0 { "max_sends_per_call" } else { "max_send_bytes_per_call" };
                return Err(invalid(format!("plugins.{name}.{key}"), "must be greater than 0".into()));
            }
            if let Some(memory) = plugin.max_memory_bytes
                && (memory == 0 || memory > self.engine.max_memory_bytes)
            {
                return Err(invalid(
                    format!("plugins.{name}.max_memory_bytes"),
                    format!("must be between 1 and engine.max_memory_bytes ({})", self.engine.max_memory_bytes),
                ));
            }
            let namespace = plugin.namespace(name);
            if namespace.is_empty() || namespace.contains(':') {
                return Err(invalid(format!("plugins.{name}.namespace"), "must be non-empty and without ':'".into()));
            }
            if let Some(history) = &plugin.history {
                let key = format!("plugins.{name}.history");
                if history.size == 0 || history.ttl_ms == 0 {
                    return Err(invalid(key, "`size` and `ttl_ms` must be greater than 0".into()));
                }
                if history.meta_ttl_ms < history.ttl_ms {
                    return Err(invalid(format!("{key}.meta_ttl_ms"), "must be at least `ttl_ms`".into()));
                }
            }
            // Groups are the namespace's: its plugins must agree on their history.
            if let Some((other, _)) = self.plugins.iter().find(|(other, p)| {
                other.as_str() < name.as_str() && p.namespace(other) == namespace && p.history != plugin.history
            }) {
                return Err(invalid(
                    format!("plugins.{name}.history"),
                    format!("differs from that of plugins.{other}, which shares the namespace {namespace:?}"),
                ));
            }
        }
        let has_key = self.auth.hs256_secret_env.is_some()
            || self.auth.hs256_secret.as_deref().is_some_and(|s| !s.is_empty())
            || self.auth.rs256_public_key.is_some();
        for (i, route) in self.routes.iter().enumerate() {
            if !self.plugins.contains_key(&route.plugin) {
                let known: Vec<&str> = self.plugins.keys().map(String::as_str).collect();
                return Err(invalid(
                    format!("routes[{i}].plugin"),
                    format!("no plugin named {:?} (plugins: {})", route.plugin, known.join(", ")),
                ));
            }
            if let Some(name) = &route.name {
                let identifier = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !identifier {
                    let why = "must be an identifier (ASCII letters, digits and `_`, not starting with a digit)";
                    return Err(invalid(format!("routes[{i}].name"), why.into()));
                }
                if let Some(j) = self.routes[..i].iter().position(|other| other.name.as_ref() == Some(name)) {
                    return Err(invalid(format!("routes[{i}].name"), format!("{name:?} is routes[{j}]'s name too")));
                }
            }
            if route.auth != AuthMode::None && !has_key {
                return Err(invalid(
                    format!("routes[{i}].auth"),
                    "needs a key to check tokens with: `auth.hs256_secret_env`, `auth.hs256_secret` or \
                     `auth.rs256_public_key`"
                        .into(),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/broker/broker.toml"))
    }

    const ECHO: &str = "[plugins.echo]\npath = \"echo.wasm\"\n[[routes]]\npath = \"/ws/system\"\nplugin = \"echo\"\n";

    #[test]
    fn defaults_fill_what_is_not_written() {
        let config = parse(ECHO).unwrap();
        assert_eq!(config.server.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(config.server.max_message_bytes, 16 << 20);
        assert_eq!(config.plugins["echo"].timeout_ms, 1000);
        assert_eq!(config.plugins["echo"].path, Path::new("/etc/broker/echo.wasm"));
    }

    #[test]
    fn unknown_keys_are_named() {
        let error = parse(&format!("{ECHO}\n[server]\nlisten_on = \"x\"\n")).unwrap_err().to_string();
        assert!(error.contains("/etc/broker/broker.toml"), "{error}");
        assert!(error.contains("listen_on"), "{error}");
    }

    #[test]
    fn bad_values_are_named() {
        let error = parse(&format!("{ECHO}\n[server]\nlisten = \"nowhere\"\n")).unwrap_err().to_string();
        assert!(error.contains("listen"), "{error}");
        let error = parse(&format!("{ECHO}\n[server]\noutbound_queue = 0\n")).unwrap_err().to_string();
        assert!(error.contains("`server.outbound_queue`: must be greater than 0"), "{error}");
    }

    #[test]
    fn route_names_are_unique_identifiers() {
        let two = |a: &str, b: &str| {
            format!("{ECHO}name = \"{a}\"\n[[routes]]\npath = \"/ws/b\"\nplugin = \"echo\"\nname = \"{b}\"\n")
        };
        assert!(parse(&two("system", "other")).is_ok());
        let error = parse(&two("system", "system")).unwrap_err().to_string();
        assert!(error.contains("`routes[1].name`: \"system\" is routes[0]'s name too"), "{error}");
        let error = parse(&two("ws/system", "b")).unwrap_err().to_string();
        assert!(error.contains("`routes[0].name`: must be an identifier"), "{error}");
    }

    #[test]
    fn routes_must_name_a_known_plugin() {
        let error = parse("[[routes]]\npath = \"/ws\"\nplugin = \"nope\"\n").unwrap_err().to_string();
        assert!(error.contains("`routes[0].plugin`: no plugin named \"nope\""), "{error}");
    }

    /// Every key `Config` serializes to, with map keys as placeholders (`plugins.<name>.path`).
    fn keys(prefix: &str, value: &toml::Value, out: &mut Vec<String>) {
        match value {
            toml::Value::Table(table) => {
                for (key, value) in table {
                    let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                    match path.as_str() {
                        "plugins" => table_of(value, "plugins.<name>", out),
                        "routes.params" => table_of(value, "routes.params.<param>", out),
                        p if p.ends_with(".settings") => out.push(path),
                        _ if value.is_table() || value.is_array() && path == "routes" => keys(&path, value, out),
                        _ => out.push(path),
                    }
                }
            }
            toml::Value::Array(items) => items.iter().for_each(|item| keys(prefix, item, out)),
            _ => out.push(prefix.to_owned()),
        }
    }

    fn table_of(value: &toml::Value, placeholder: &str, out: &mut Vec<String>) {
        for entry in value.as_table().into_iter().flat_map(|t| t.values()) {
            keys(placeholder, entry, out);
        }
    }

    #[test]
    fn every_key_is_in_docs_configuration_md() {
        let doc = include_str!("../../docs/configuration.md");
        // Every optional key set, so that each one serializes.
        let full = "[plugins.echo]\npath = \"echo.wasm\"\nnamespace = \"ns\"\nmax_memory_bytes = 1048576\n\
                    [[routes]]\npath = \"/ws/{room}\"\nplugin = \"echo\"\nname = \"room\"\n\
                    auth = \"required\"\n\
                    [routes.params.room]\npattern = \"x\"\nmax_length = 1\n\
                    [api]\nkey = \"k\"\nkey_env = \"K\"\n\
                    [auth]\nhs256_secret = \"s\"\naudience = [\"a\"]\nissuer = [\"i\"]\nclaims = [\"role\"]\n\
                    [cluster]\nredis_url_env = \"R\"\nnode_id = \"n1\"\n";
        let config = parse(full).unwrap();
        let mut found = Vec::new();
        keys("", &toml::Value::try_from(&config).unwrap(), &mut found);
        assert!(found.len() > 20, "{found:?}");
        for key in found {
            assert!(doc.contains(&format!("`{key}`")), "`{key}` is not documented in docs/configuration.md");
        }
    }

    #[test]
    fn api_key_comes_from_the_environment_first() {
        let api = Api { key: Some("file".into()), key_env: Some("BROKER_TEST_UNSET_VARIABLE".into()) };
        assert_eq!(api.key().as_deref(), Some("file"));
        assert_eq!(Api::default().key(), None);
    }
}

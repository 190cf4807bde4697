//! The listener: accepts TCP, speaks HTTP/1.1 with hyper, matches the route and upgrades to
//! WebSocket. Also owns start-up (loading plugins) and graceful shutdown.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::edge::auth::{self, Verifier};
use crate::hub::cluster::Link;
use crate::config::{AuthMode, Backend, Config, ConfigError};
use crate::edge::connection::{self, Setup};
use crate::edge::limits::{Admission, MessageRate, Refused};
use crate::hub::metrics::Metrics;
use crate::hub::outbound::Bounds;
use crate::plugin::{LoadedPlugin, PluginError, Runtime, Services, Slot};
use crate::hub::registry::{self, Registry};
use crate::edge::router::{Miss, Router};
use crate::hub::state::{self, Kv};
use crate::ops::{api, reload};

/// Bytes of queued frames written to a socket in one call (tungstenite's write buffer).
const WRITE_BATCH_BYTES: usize = 4096;

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("cannot join the cluster at `cluster.redis_url`: {0}")]
    Cluster(#[from] crate::hub::cluster::ClusterError),
}

/// The configuration in force, with the route table and plugins built from it. Swapped whole on a
/// configuration reload, so a request never sees a route of one version and a plugin of another.
pub(crate) struct Live {
    pub(crate) config: Config,
    pub(crate) router: Router,
    pub(crate) slots: HashMap<String, Arc<Slot>>,
    /// Checks the tokens of routes with `auth`; `None` when `[auth]` has no key.
    pub(crate) verifier: Option<Arc<Verifier>>,
    pub(crate) loaded_at: SystemTime,
}

impl Live {
    /// The token verifier `config` describes; its errors name their key.
    pub(crate) fn verifier(config: &Config) -> Result<Option<Arc<Verifier>>, ConfigError> {
        Verifier::from_config(&config.auth)
            .map(|verifier| verifier.map(Arc::new))
            .map_err(|(key, message)| ConfigError::Invalid { path: config.source.clone(), key, message })
    }
}

/// Everything request handlers and reloads share.
pub(crate) struct Shared {
    pub(crate) live: ArcSwap<Live>,
    pub(crate) services: Services,
    pub(crate) registry: Arc<Registry>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) runtime: Arc<Runtime>,
    /// The last configuration reload that failed, if the latest one did.
    pub(crate) config_error: Mutex<Option<(SystemTime, String)>>,
    /// One reload at a time: they read and replace `live`.
    pub(crate) reloading: tokio::sync::Mutex<()>,
    /// The address the listener is bound to (`server.listen` may say port 0).
    pub(crate) bound: SocketAddr,
    /// Open connections, in total and per address.
    admission: Arc<Admission>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

/// Loads every plugin of `config` as start-up would, without serving: each by name, or every
/// problem found.
pub async fn check_plugins(config: &Config) -> Result<crate::documents::asyncapi::Plugins, Vec<String>> {
    let runtime = Arc::new(Runtime::new(&config.engine).map_err(|e| vec![e.to_string()])?);
    let services = Services {
        registry: Arc::new(Registry::new(registry::Limits { max_groups_per_connection: 1, session_bytes: 1 }, None)),
        kv: Arc::new(Kv::new(state::Limits { value_bytes: 1, keys_per_namespace: 1 }, None)),
        metrics: Arc::new(Metrics::default()),
    };
    let (mut loaded, mut problems) = (crate::documents::asyncapi::Plugins::new(), Vec::new());
    for (name, plugin) in &config.plugins {
        match LoadedPlugin::load(&runtime, name, plugin, &services, 1).await {
            Ok(p) => {
                loaded.insert(name.clone(), Arc::new(p));
            }
            Err(error) => problems.push(format!("{}: `plugins.{name}.path`: {error}", config.source.display())),
        }
    }
    if problems.is_empty() { Ok(loaded) } else { Err(problems) }
}

/// A broker with its plugins loaded and its socket bound, not yet serving.
pub struct Server {
    listener: TcpListener,
    shared: Arc<Shared>,
    /// TLS on the listener, when `[server.tls]` is set.
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Server {
    /// Loads every plugin of `config` and binds its listen address.
    pub async fn bind(config: Config) -> Result<Server, StartError> {
        let runtime = Arc::new(Runtime::new(&config.engine)?);
        let metrics = Arc::new(Metrics::default());
        let cluster = match config.cluster.backend {
            Backend::Memory => None,
            Backend::Redis => Some(Link::connect(&config.cluster, metrics.clone()).await?),
        };
        let link = cluster.as_ref().map(|(link, _)| link.clone());
        let registry = Arc::new(Registry::new(
            registry::Limits {
                max_groups_per_connection: config.server.max_groups_per_connection,
                session_bytes: config.state.session_bytes,
            },
            link.clone(),
        ));
        if let Some((_, tasks)) = cluster {
            tasks.spawn(&registry);
        }
        let kv = Arc::new(Kv::new(
            state::Limits {
                value_bytes: config.state.kv_value_bytes,
                keys_per_namespace: config.state.kv_keys_per_namespace,
            },
            link,
        ));
        let services = Services { registry: registry.clone(), kv, metrics: metrics.clone() };
        let mut slots = HashMap::new();
        for (name, plugin) in &config.plugins {
            let loaded = LoadedPlugin::load(&runtime, name, plugin, &services, 1).await?;
            tracing::info!(
                plugin = %name,
                version = %loaded.manifest().version,
                accepts = ?loaded.accepts(),
                path = %plugin.path.display(),
                from = ?loaded.source,
                "plugin loaded"
            );
            slots.insert(name.clone(), Arc::new(Slot::new(name, loaded)));
        }
        let router = config.router()?;
        let verifier = Live::verifier(&config)?;
        let tls = match &config.server.tls {
            Some(tls) => Some(crate::edge::tls::acceptor(tls).map_err(|(key, message)| ConfigError::Invalid {
                path: config.source.clone(),
                key,
                message,
            })?),
            None => None,
        };
        let addr = config.server.listen;
        let listener = TcpListener::bind(addr).await.map_err(|source| StartError::Listen { addr, source })?;
        let bound = listener.local_addr().map_err(|source| StartError::Listen { addr, source })?;
        let shared = Arc::new(Shared {
            live: ArcSwap::from_pointee(Live { config, router, slots, verifier, loaded_at: SystemTime::now() }),
            services,
            registry,
            metrics,
            runtime,
            config_error: Mutex::new(None),
            reloading: tokio::sync::Mutex::new(()),
            bound,
            admission: Arc::new(Admission::default()),
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
        });
        Ok(Server { listener, shared, tls })
    }

    /// The address actually bound (the port is chosen by the OS for `:0`).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then closes every connection with 1001 and returns once
    /// they are closed (or the grace period has passed).
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let Server { listener, shared, tls } = self;
        // Dropped on return, which stops watching.
        let _watcher = reload::watch(shared.clone());
        let sweeper = shared.tracker.spawn(sweep_state(shared.clone()));
        let idle_sweeper = shared.tracker.spawn(sweep_idle(shared.clone()));
        tokio::pin!(shutdown);
        loop {
            let (tcp, peer) = tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: keep serving those we have.
                        tracing::warn!(%error, "accept failed");
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            // A client that does not finish its TLS handshake and request head in time is dropped
            // (slowloris).
            let handshake_timeout = shared.live.load().config.server.handshake_timeout();
            let shared_for_conn = shared.clone();
            let tls = tls.clone();
            shared.tracker.spawn(async move {
                match tls {
                    None => serve_http(shared_for_conn, TokioIo::new(tcp), peer, handshake_timeout).await,
                    Some(acceptor) => match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            serve_http(shared_for_conn, TokioIo::new(stream), peer, handshake_timeout).await;
                        }
                        Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    },
                }
            });
        }
        drop(listener);
        tracing::info!(connections = shared.registry.len(), "shutting down");
        shared.shutdown.cancel();
        sweeper.abort();
        idle_sweeper.abort();
        shared.tracker.close();
        let grace = shared.live.load().config.server.shutdown_grace();
        if tokio::time::timeout(grace, shared.tracker.wait()).await.is_err() {
            tracing::warn!(?grace, "connections still open after the shutdown grace period");
        }
        if let Some(link) = shared.registry.cluster() {
            link.depart().await;
        }
    }
}

/// Serves HTTP/1.1 on one connection (plain or TLS) until it ends or is upgraded.
async fn serve_http<I>(shared: Arc<Shared>, io: TokioIo<I>, peer: SocketAddr, handshake_timeout: Duration)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request| handle(shared.clone(), request, peer));
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(handshake_timeout)
        .serve_connection(io, service)
        .with_upgrades();
    if let Err(error) = connection.await {
        tracing::debug!(%peer, %error, "http connection ended with an error");
    }
}

/// Pings quiet connections and closes silent ones, at a pace that follows the configuration.
async fn sweep_idle(shared: Arc<Shared>) {
    loop {
        let (ping, idle) = {
            let live = shared.live.load();
            (live.config.server.ping_interval_ms, live.config.server.idle_timeout_ms)
        };
        // Often enough that a ping or a close is at most a fraction of the interval late.
        tokio::time::sleep(Duration::from_millis((ping / 4).clamp(10, 1000))).await;
        let closed = shared.registry.sweep_idle(ping, idle);
        if closed > 0 {
            shared.metrics.limit_hit_by("server.idle_timeout_ms", closed as u64);
            tracing::info!(closed, "closed idle connections");
        }
    }
}

/// Drops expired key-value entries every second.
async fn sweep_state(shared: Arc<Shared>) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    loop {
        every.tick().await;
        shared.services.kv.sweep();
    }
}

async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_owned();
    if let Some(endpoint) = api::Endpoint::parse(&path) {
        return Ok(api::serve(&shared, endpoint, request).await);
    }
    let live = shared.live.load_full();
    let matched = match live.router.lookup(&path) {
        Ok(matched) => matched,
        Err(Miss::NotFound) => return Ok(text(StatusCode::NOT_FOUND, format!("no route for {path}\n"))),
        Err(Miss::BadParam(why)) => {
            shared.metrics.limit_hit("routes.params");
            return Ok(text(StatusCode::BAD_REQUEST, format!("{path}: {why}\n")));
        }
    };
    let key = match websocket_key(&request) {
        Ok(key) => key,
        Err(NotHandshake::NotWebSocket) => {
            return Ok(upgrade_required(format!("{path} is a WebSocket route: connect with a WebSocket client\n")));
        }
        Err(NotHandshake::Version) => {
            return Ok(upgrade_required(format!("{path} speaks WebSocket version 13 (RFC 6455) only\n")));
        }
        Err(NotHandshake::Malformed(why)) => {
            return Ok(text(StatusCode::BAD_REQUEST, format!("not a valid WebSocket handshake: {why}\n")));
        }
    };
    let Some(slot) = live.slots.get(&matched.route.plugin).cloned() else {
        return Ok(text(StatusCode::SERVICE_UNAVAILABLE, format!("plugin {} is not loaded\n", matched.route.plugin)));
    };
    let limits = &live.config.server;
    let admitted = match shared.admission.admit(peer.ip(), limits.max_connections, limits.max_connections_per_ip) {
        Ok(admitted) => admitted,
        Err(Refused::Total(max)) => {
            shared.metrics.limit_hit("server.max_connections");
            return Ok(text(StatusCode::SERVICE_UNAVAILABLE, format!("the broker holds its {max} connections\n")));
        }
        Err(Refused::PerIp(max)) => {
            shared.metrics.limit_hit("server.max_connections_per_ip");
            let ip = peer.ip();
            return Ok(text(StatusCode::TOO_MANY_REQUESTS, format!("{ip} already has {max} connections open\n")));
        }
    };
    if !auth::origin_allowed(&limits.allowed_origins, request.headers().get(header::ORIGIN)) {
        shared.metrics.limit_hit("server.allowed_origins");
        let origin = request.headers().get(header::ORIGIN).and_then(|o| o.to_str().ok()).unwrap_or_default();
        return Ok(text(StatusCode::FORBIDDEN, format!("the origin {origin} may not connect here\n")));
    }
    let presented = auth::presented(request.headers(), request.uri().query());
    let identity = match (matched.route.auth, &live.verifier, presented.token) {
        (AuthMode::None, _, _) | (AuthMode::Optional, _, None) => None,
        (AuthMode::Required, _, None) => {
            shared.metrics.limit_hit("routes.auth");
            return Ok(unauthorized(
                "a token is required: `Authorization: Bearer <token>`, `?token=<token>` or the subprotocols `bearer, <token>`",
            ));
        }
        (_, Some(verifier), Some(token)) => match verifier.verify(&token) {
            Ok(identity) => Some(identity),
            Err(why) => {
                shared.metrics.limit_hit("routes.auth");
                return Ok(unauthorized(&why));
            }
        },
        // Configuration validation refuses auth routes without a key; refuse rather than let in.
        (_, None, Some(_)) => return Ok(unauthorized("tokens cannot be checked: `[auth]` has no key")),
    };
    // The plugin's own message limit, when smaller, is the connection's: a message is refused
    // before it is read whole, rather than after it made the plugin run out of memory.
    let max_message_bytes = live
        .config
        .plugins
        .get(&matched.route.plugin)
        .map_or(limits.max_message_bytes, |plugin| plugin.max_message_bytes(&live.config.engine, limits));
    let message_limit = if max_message_bytes < limits.max_message_bytes {
        "plugins.max_message_bytes"
    } else {
        "server.max_message_bytes"
    };
    // Boxed: the upgrade task keeps what it captures for the connection's whole life, and the
    // setup is only needed at its start.
    let setup = Box::new(Setup {
        metrics: shared.metrics.connection(&matched.route.pattern),
        peer,
        slot,
        registry: shared.registry.clone(),
        route: matched.route,
        path,
        params: matched.params,
        identity,
        admitted,
        rate: MessageRate::new(limits.messages_per_second, limits.message_burst, limits.rate_limit_close_after),
        bounds: Bounds {
            max_frames: limits.outbound_queue,
            max_bytes: limits.outbound_queue_bytes,
            slow_closes: shared.metrics.slow_consumer_closes.clone(),
        },
        close_grace: limits.shutdown_grace(),
        write_timeout: limits.write_timeout(),
        message_limit,
        shutdown: shared.shutdown.clone(),
    });
    // tungstenite's default read buffer is 128 KiB, allocated up front: per idle connection, that is
    // most of the memory. The write buffer fills only while the write loop batches queued frames
    // (it flushes when the queue is empty), so it costs an idle connection nothing; 4 KiB batches
    // keep fan-out's write calls few.
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(limits.read_buffer_bytes)
        .write_buffer_size(WRITE_BATCH_BYTES)
        .max_message_size(Some(max_message_bytes))
        .max_frame_size(Some(max_message_bytes));
    let upgrade = hyper::upgrade::on(request);
    shared.tracker.spawn(async move {
        match upgrade.await {
            Ok(upgraded) => {
                let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(ws_config)).await;
                connection::run(ws, setup).await;
            }
            Err(error) => tracing::debug!(%peer, %error, "websocket upgrade failed"),
        }
    });
    let mut response = Response::new(Full::default());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    // A browser fails the connection unless one of the subprotocols it offered is chosen.
    if presented.via_protocol {
        headers.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(auth::BEARER_PROTOCOL));
    }
    Ok(response)
}

/// HTTP 401 with the reason, in the body and in `WWW-Authenticate` (RFC 6750).
fn unauthorized(reason: &str) -> Response<Full<Bytes>> {
    let mut response = text(StatusCode::UNAUTHORIZED, format!("{reason}\n"));
    let challenge = format!("Bearer error=\"invalid_token\", error_description=\"{}\"", reason.replace('"', "'"));
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

/// Why a request to a WebSocket route is not a handshake the broker takes.
enum NotHandshake {
    /// No `Upgrade: websocket` with `Connection: upgrade`: plain HTTP (426).
    NotWebSocket,
    /// A `Sec-WebSocket-Version` other than 13, or none (426 naming 13, RFC 6455 §4.4).
    Version,
    /// A WebSocket request that breaks RFC 6455 §4.2.1 otherwise (400), and how.
    Malformed(&'static str),
}

/// The `Sec-WebSocket-Key` of a valid upgrade request (RFC 6455 §4.2.1), or why there is none.
fn websocket_key(request: &Request<Incoming>) -> Result<String, NotHandshake> {
    let headers = request.headers();
    let has_token = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    if !(has_token(header::CONNECTION, "upgrade") && has_token(header::UPGRADE, "websocket")) {
        return Err(NotHandshake::NotWebSocket);
    }
    if request.method() != hyper::Method::GET {
        return Err(NotHandshake::Malformed("the handshake is a GET request"));
    }
    // HTTP/1.0 has no upgrade: hyper would answer 101 and then end the connection.
    if request.version() != hyper::Version::HTTP_11 {
        return Err(NotHandshake::Malformed("the handshake needs HTTP/1.1"));
    }
    if headers.get_all(header::HOST).iter().count() != 1 {
        return Err(NotHandshake::Malformed("the handshake needs one `Host` header"));
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION).is_none_or(|v| v != "13") {
        return Err(NotHandshake::Version);
    }
    let mut keys = headers.get_all(header::SEC_WEBSOCKET_KEY).iter();
    match (keys.next().and_then(|v| v.to_str().ok()), keys.next()) {
        (Some(key), None) if is_websocket_key(key) => Ok(key.to_owned()),
        _ => Err(NotHandshake::Malformed("`Sec-WebSocket-Key` must be one base64-encoded 16-byte value")),
    }
}

/// Whether `key` is the base64 of 16 bytes: 22 characters of the alphabet, then `==`. The 22nd holds
/// the last byte's low 2 bits and 4 zero bits, so it is one of `A`, `Q`, `g`, `w`.
fn is_websocket_key(key: &str) -> bool {
    let bytes = key.as_bytes();
    bytes.len() == 24
        && bytes[..21].iter().all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
        && matches!(bytes[21], b'A' | b'Q' | b'g' | b'w')
        && &bytes[22..] == b"=="
}

/// HTTP 426: how to upgrade, with the one WebSocket version the broker speaks (RFC 6455 §4.4).
fn upgrade_required(body: String) -> Response<Full<Bytes>> {
    let mut response = text(StatusCode::UPGRADE_REQUIRED, body);
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
    response
}

pub(crate) fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

//! The listener: accepts TCP (and TLS), speaks HTTP/1.1 with hyper, and hands each request to the
//! broker's own endpoints (`api`) or to the WebSocket handshake. Also owns start-up and graceful
//! shutdown.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

use crate::config::{Backend, Config};
use crate::edge::handshake;
use crate::edge::limits::Admission;
use crate::edge::live::{Live, Problems, Shared};
use crate::hub::cluster::Link;
use crate::hub::metrics::Metrics;
use crate::hub::registry::{self, Registry};
use crate::hub::state::{self, Kv};
use crate::ops::{api, reload};
use crate::plugin::{PluginError, Runtime, Services};

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Live(#[from] Problems),
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("cannot join the cluster at `cluster.redis_url`: {0}")]
    Cluster(#[from] crate::hub::cluster::ClusterError),
}

/// A broker with its plugins loaded and its socket bound, not yet serving.
pub struct Server {
    listener: TcpListener,
    shared: Arc<Shared>,
}

impl Server {
    /// Joins the cluster (when `[cluster]` says so), builds the live service of `config` and binds
    /// its listen address.
    pub async fn bind(config: Config) -> Result<Server, StartError> {
        let runtime = Arc::new(Runtime::new(&config.engine)?);
        let metrics = Arc::new(Metrics::default());
        let cluster = match config.cluster.backend {
            Backend::Memory => None,
            Backend::Redis => Some(Link::connect(&config.cluster, metrics.clone()).await?),
        };
        let link = cluster.as_ref().map(|(link, _)| link.clone());
        let registry = Arc::new(
            Registry::new(
                registry::Limits {
                    max_groups_per_connection: config.server.max_groups_per_connection,
                    session_bytes: config.state.session_bytes,
                },
                link.clone(),
            )
            .with_history(config.state.history_bytes, metrics.history.clone()),
        );
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
        let live = Live::build(config, None, &runtime, &services).await?;
        let addr = live.config.server.listen;
        let listener = TcpListener::bind(addr).await.map_err(|source| StartError::Listen { addr, source })?;
        let bound = listener.local_addr().map_err(|source| StartError::Listen { addr, source })?;
        let shared = Arc::new(Shared {
            live: ArcSwap::from_pointee(live),
            services,
            registry,
            metrics,
            runtime,
            config_error: parking_lot::Mutex::new(None),
            reloading: tokio::sync::Mutex::new(()),
            bound,
            admission: Arc::new(Admission::default()),
            tracker: TaskTracker::new(),
        });
        Ok(Server { listener, shared })
    }

    /// The address actually bound (the port is chosen by the OS for `:0`).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then closes every connection with 1001 and returns once
    /// they are closed (or the grace period has passed).
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let Server { listener, shared } = self;
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
            let (handshake_timeout, tls) = {
                let live = shared.live.load();
                (live.config.server.handshake_timeout(), live.tls.clone())
            };
            let shared_for_conn = shared.clone();
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
        shared.registry.shut_down();
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

/// Drops expired key-value entries and group history every second.
async fn sweep_state(shared: Arc<Shared>) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    loop {
        every.tick().await;
        shared.services.kv.sweep();
        shared.registry.sweep_history();
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
    Ok(handshake::upgrade(shared, request, peer, path).await)
}

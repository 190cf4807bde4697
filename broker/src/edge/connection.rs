//! One WebSocket connection: a read loop that dispatches frames in order, and a write loop that
//! drains a bounded outbound queue (`write`).
//!
//! The read loop awaits each dispatch before reading the next frame, which is what keeps one
//! connection's messages in order; other connections run in their own tasks. A client that sends
//! faster than its plugin answers is held back by TCP, not buffered.

mod write;

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use self::write::{WriteDeadlines, linger, write_loop};
use crate::edge::limits::{MessageRate, Verdict};
use crate::edge::router::Route;
use crate::hub::history::Position;
use crate::hub::metrics::ConnectionMetrics;
use crate::hub::outbound::{self, Bounds, CloseReason, Delivery, Handle, Signal};
use crate::hub::registry::{ConnectionId, Registry};
use crate::plugin::host::{Context, HandlerError, LocItem};
use crate::plugin::{CallError, Slot};
use crate::wire::close_code::{
    GOING_AWAY, INTERNAL_ERROR, INVALID_PAYLOAD, MESSAGE_TOO_BIG, POLICY_VIOLATION, PROTOCOL_ERROR,
};
use crate::wire::problem::Kind;
use crate::wire::protocol::{self, PING, Problem, RECOVER, Request};

/// What a connection needs from the broker.
pub struct Setup {
    pub metrics: ConnectionMetrics,
    /// The client's address, for the log.
    pub peer: std::net::SocketAddr,
    /// The plugin; each call goes to its generation of the moment.
    pub slot: Arc<Slot>,
    pub registry: Arc<Registry>,
    pub route: Arc<Route>,
    pub path: String,
    pub params: Vec<(String, String)>,
    /// Who the client authenticated as, when the route checks tokens and it presented one.
    pub identity: Option<crate::edge::auth::Identity>,
    /// Its place under the connection limits, given back when it closes.
    pub admitted: crate::edge::limits::Admitted,
    /// How many messages it may send.
    pub rate: MessageRate,
    pub bounds: Bounds,
    /// How long our close frame may take to go out, and then how long we read what the client still
    /// sends before the socket is dropped.
    pub close_grace: Duration,
    /// Longest one write to the socket may wait before the client is closed as a slow consumer.
    pub write_timeout: Duration,
    /// The setting that bounds its messages, for the metric when one is over it.
    pub message_limit: &'static str,
    /// Where the client was in groups with history (the handshake's `recover`).
    pub recover: Vec<Position>,
}

/// Serves one upgraded connection until it closes.
pub fn run<S>(ws: WebSocketStream<S>, setup: Box<Setup>) -> impl Future<Output = ()> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Split before the async part: an async fn keeps its arguments for its whole life, and the
    // whole WebSocketStream is far bigger than its two halves.
    let (sink, stream) = ws.split();
    serve(sink, stream, setup)
}

async fn serve<S>(
    sink: futures_util::stream::SplitSink<WebSocketStream<S>, Message>,
    mut stream: futures_util::stream::SplitStream<WebSocketStream<S>>,
    setup: Box<Setup>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Taken apart at once: a field of `setup` still needed after an await would keep all of it in
    // this task's state, and idle connections are most connections.
    let Setup {
        metrics,
        peer,
        slot,
        registry,
        route,
        path,
        params,
        identity,
        // Held until this function returns: the connection's place under the connection limits.
        admitted: _admitted,
        mut rate,
        bounds,
        close_grace,
        write_timeout,
        message_limit,
        recover,
    } = *setup;
    let (handle, queue) = outbound::queue(&bounds, route.metadata);
    let control = handle.control_held();
    let (user, claims) = match identity {
        Some(identity) => (Some(identity.user), Some(identity.claims.into_boxed_str())),
        None => (None, None),
    };
    let id = registry.register(handle.clone(), Arc::from(route.pattern.as_str()), claims, recover);
    let deadlines =
        WriteDeadlines { write: write_timeout, close: close_grace, slow_closes: bounds.slow_closes.clone() };
    // The write loop runs in this task, beside the read loop, not in a task of its own: a reply
    // queued by a dispatch is written in the same wake-up (the queue wakes this very task), where a
    // second task would cost a cross-thread wake-up per message, the dominant cost of a round trip.
    let writer = write_loop(sink, queue, control.clone(), metrics.route().clone(), deadlines);
    tokio::pin!(writer);
    let connection = Connection {
        id,
        ctx: Arc::new(Context { connection: id, route: route.pattern.clone(), path, params, user }),
        slot,
        handle,
        registry: registry.clone(),
        metrics,
        crashes: Default::default(),
        message_limit,
        peer: peer.ip(),
    };
    let started = std::time::Instant::now();
    tracing::info!(connection = id, route = %connection.ctx.route, path = %connection.ctx.path, %peer, "connection opened");

    let (ended, written) = {
        let reader = async {
            // Plugin calls are boxed: their futures are large (wasmtime's call, the deadline timer)
            // and, inline, would size every connection's task for the rare moment it is in a call.
            // Idle connections are most connections.
            let ended = if Box::pin(connection.accept()).await {
                connection.read_loop(&mut stream, &mut rate).await
            } else {
                Ended::WeClosed
            };
            registry.remove(id);
            if let Err(error) = Box::pin(connection.slot.current().on_disconnect(&connection.ctx, peer.ip())).await {
                tracing::warn!(connection = id, plugin = connection.slot.name(), %error, "on-disconnect failed");
            }
            ended
        };
        tokio::pin!(reader);
        // The write loop goes on while the read side ends (our close frame, the plugin's last
        // frames). It may end first (a failed write, a slow consumer): the read side then sees the
        // close and ends too. The reader is polled first and the writer after it, in every
        // wake-up: a reply the reader queued is written in the same wake-up, which is why queueing
        // it does not wake the task (`Handle::send`). Keep this order.
        let mut written = None;
        let ended = loop {
            tokio::select! {
                biased;
                ended = &mut reader => break ended,
                sink = &mut writer, if written.is_none() => written = Some(sink),
            }
        };
        (ended, written)
    };
    let Connection { handle, ctx, .. } = connection;
    drop(handle);
    // The write loop ends on its own deadlines; past them (and a little slack) it is dropped, and
    // its half of the socket with it. Either way the socket is gone before `_admitted` is given back.
    let sink = match written {
        Some(sink) => sink,
        None => tokio::time::timeout(close_grace * 2 + Duration::from_millis(100), &mut writer).await.ok().flatten(),
    };
    // When we closed and our close frame went out, linger so the client reads it rather than a reset.
    if ended == Ended::WeClosed
        && let Some(sink) = sink
        && let Ok(mut ws) = stream.reunite(sink)
    {
        Box::pin(linger(&mut ws, close_grace)).await;
    }
    // The close code we sent, or none when the client closed first.
    let close = control.reason().map(|r| r.code);
    tracing::info!(
        connection = id,
        route = %ctx.route,
        %peer,
        close,
        duration_ms = started.elapsed().as_millis() as u64,
        "connection closed"
    );
}

/// Who ended the read loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// The client closed, or the socket failed.
    Peer,
    /// The broker is closing the connection.
    WeClosed,
}

struct Connection {
    id: ConnectionId,
    /// Shared with the plugin instance in a call, for `call.current`.
    ctx: Arc<Context>,
    slot: Arc<Slot>,
    handle: Handle,
    registry: Arc<Registry>,
    metrics: ConnectionMetrics,
    /// Calls about this connection that trapped or timed out.
    crashes: std::sync::atomic::AtomicU32,
    message_limit: &'static str,
    /// The client's address: the plugin's failures are charged to it.
    peer: std::net::IpAddr,
}

impl Connection {
    /// Runs the plugin's `on-connect`; false when the connection is refused.
    async fn accept(&self) -> bool {
        let refusal = match self.slot.current().on_connect(&self.ctx, self.peer).await {
            Ok(Ok(())) => return true,
            Ok(Err(rejection)) => CloseReason::new(rejection.code, rejection.reason),
            Err(error) => {
                tracing::warn!(connection = self.id, plugin = self.slot.name(), %error, "on-connect failed");
                CloseReason::new(INTERNAL_ERROR, format!("plugin {}: {}", self.slot.name(), error.public_message()))
            }
        };
        // Queued, so frames the plugin sent before refusing still arrive first.
        self.queue_close(refusal).await;
        false
    }

    async fn read_loop<S>(
        &self,
        stream: &mut futures_util::stream::SplitStream<WebSocketStream<S>>,
        rate: &mut MessageRate,
    ) -> Ended
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        // Created once, not per frame: each creation registers a waiter. A close and the server's
        // shutdown are one future on the connection's own `Control`: a future that every
        // connection polled (one shared token) cost each message a lock another core held.
        let signalled = self.handle.control().signalled();
        tokio::pin!(signalled);
        loop {
            // The socket first: a frame waiting is read without polling the signals, whose flags
            // are checked after each frame instead (below), so a busy client cannot starve them.
            let message = tokio::select! {
                biased;
                message = stream.next() => message,
                signal = &mut signalled => match signal {
                    Signal::Closed => return Ended::WeClosed,
                    Signal::ShutDown => return self.shut_down().await,
                },
            };
            if let Some(Ok(_)) = &message {
                self.handle.control().seen();
            }
            if let Some(Ok(Message::Text(_) | Message::Binary(_))) = &message {
                match rate.check() {
                    Verdict::Allowed => {}
                    Verdict::Refused => {
                        self.metrics.shared().limit_hit("server.messages_per_second");
                        let msg = "Too many messages: over server.messages_per_second; this one was not handled";
                        let frame = protocol::error_frame(&[Problem::new(Kind::RateLimited, vec![], msg)], None);
                        Box::pin(self.reply(frame)).await;
                        continue;
                    }
                    Verdict::Abusive => {
                        self.metrics.shared().limit_hit("server.rate_limit_close_after");
                        let reason = "rate limit exceeded persistently";
                        Box::pin(self.queue_close(CloseReason::new(POLICY_VIOLATION, reason))).await;
                        return Ended::WeClosed;
                    }
                }
            }
            match message {
                Some(Ok(Message::Text(text))) => Box::pin(self.dispatch(&text)).await,
                Some(Ok(Message::Binary(bytes))) => {
                    self.metrics.frame_in(None, bytes.len());
                    let msg = "Invalid JSON: binary frames are not supported, send JSON as text frames";
                    Box::pin(self.reply(protocol::error_frame(&[Problem::new(Kind::JsonInvalid, vec![], msg)], None)))
                        .await;
                }
                // tungstenite answers pings itself; pongs and raw frames need nothing.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Close(_))) | None => return Ended::Peer,
                Some(Err(WsError::Capacity(CapacityError::MessageTooLong { size, max_size }))) => {
                    self.metrics.shared().limit_hit(self.message_limit);
                    let reason = format!("message of {size} bytes is over the limit of {max_size} bytes");
                    self.handle.control().close_now(CloseReason::new(MESSAGE_TOO_BIG, reason));
                    return Ended::WeClosed;
                }
                // RFC 6455 §7.4.1: 1002 for a protocol error, 1007 for text that is not UTF-8.
                Some(Err(error @ (WsError::Protocol(_) | WsError::Utf8(_)))) => {
                    let code = if matches!(error, WsError::Utf8(_)) { INVALID_PAYLOAD } else { PROTOCOL_ERROR };
                    tracing::debug!(connection = self.id, %error, "closed for a protocol violation");
                    self.handle.control().close_now(CloseReason::new(code, error.to_string()));
                    return Ended::WeClosed;
                }
                Some(Err(error)) => {
                    tracing::debug!(connection = self.id, %error, "read failed");
                    return Ended::Peer;
                }
            }
            if self.handle.control().is_closing() {
                return Ended::WeClosed;
            }
            if self.handle.control().is_shutting_down() {
                return self.shut_down().await;
            }
        }
    }

    /// The server is shutting down: 1001 after what is queued.
    async fn shut_down(&self) -> Ended {
        Box::pin(self.queue_close(CloseReason::new(GOING_AWAY, "server shutting down"))).await;
        Ended::WeClosed
    }

    /// Handles one text frame: broker-level actions here, the rest by the plugin.
    async fn dispatch(&self, text: &str) {
        // One generation for the whole message: the one in service when it was read.
        let plugin = self.slot.load();
        let Request { action, accepted, payload, reference } = match protocol::parse(text, plugin.accepts()) {
            Ok(request) => request,
            Err(refusal) => {
                self.metrics.frame_in(None, text.len());
                return self.reply(protocol::error_frame(&refusal.problems, refusal.reference.as_deref())).await;
            }
        };
        self.metrics.frame_in(Some(&action), text.len());
        let reference = reference.as_deref();
        if action == PING {
            let frame = match payload {
                None => protocol::pong_frame(reference),
                Some(_) => protocol::error_frame(
                    &[Problem::new(Kind::NoneRequired, vec![PING.into(), "payload".into()], "Input should be None")],
                    reference,
                ),
            };
            return self.reply(frame).await;
        }
        if action == RECOVER {
            let problems = match positions(payload) {
                Ok(positions) => {
                    let at = || vec![RECOVER.into(), "payload".into(), "positions".into()];
                    let refused = self.registry.recover(self.id, positions);
                    refused.into_iter().map(|why| Problem::new(Kind::ValueError, at(), why)).collect()
                }
                Err(problem) => vec![problem],
            };
            // Accepted positions are answered by a `recovered` frame when the plugin joins their group.
            if problems.is_empty() {
                return;
            }
            return self.reply(protocol::error_frame(&problems, reference)).await;
        }
        if let Err(problems) = plugin.validate(&action, payload) {
            self.metrics.shared().payload_refused(self.slot.name());
            return self.reply(protocol::error_frame(&problems, reference)).await;
        }
        let answer = plugin.on_message(&self.ctx, self.peer, &action, accepted, payload.map(|p| p.get())).await;
        let crashed = answer.as_ref().is_err_and(CallError::is_crash);
        let problems = match answer {
            Ok(Ok(None)) => return,
            Ok(Ok(Some(frame))) => match protocol::plugin_frame(frame, reference) {
                Ok(frame) => return self.reply(frame).await,
                Err(why) => {
                    self.metrics.shared().plugin_error(self.slot.name(), "error");
                    vec![Problem::at_action(Kind::PluginError, &action, format!("the plugin replied with {why}"))]
                }
            },
            Ok(Err(HandlerError::Invalid(issues))) => {
                self.metrics.shared().plugin_error(self.slot.name(), "invalid");
                issues
                    .into_iter()
                    .map(|issue| {
                        let loc = issue
                            .loc
                            .into_iter()
                            .map(|item| match item {
                                LocItem::Key(key) => key.into(),
                                LocItem::Index(index) => index.into(),
                            })
                            .collect();
                        Problem::new(issue.kind, loc, issue.msg)
                    })
                    .collect()
            }
            Ok(Err(HandlerError::Failed(message))) => {
                self.metrics.shared().plugin_error(self.slot.name(), "error");
                vec![Problem::at_action(Kind::PluginError, &action, message)]
            }
            Err(error) => {
                let (kind, counted) = match error {
                    CallError::Timeout(_) => (Kind::PluginTimeout, "timeout"),
                    CallError::Trap { .. } | CallError::Instantiate(_) | CallError::BackedOff(_) => {
                        (Kind::PluginCrashed, "crashed")
                    }
                };
                self.metrics.shared().plugin_error(self.slot.name(), counted);
                tracing::warn!(connection = self.id, plugin = self.slot.name(), %action, %error, "call failed");
                vec![Problem::at_action(kind, &action, error.public_message())]
            }
        };
        self.reply(protocol::error_frame(&problems, reference)).await;
        if crashed {
            self.charge_crash(&plugin.config).await;
        }
    }

    /// A call about this connection trapped or timed out (and was answered): charged to the
    /// connection, which is closed (1011) after `plugins.<name>.crashes_per_connection` of them. A
    /// client that makes a plugin fail on purpose loses its connection, not everyone their plugin.
    async fn charge_crash(&self, plugin: &crate::config::Plugin) {
        let crashes = self.crashes.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        if plugin.crashes_per_connection > 0 && crashes >= plugin.crashes_per_connection {
            self.metrics.shared().limit_hit("plugins.crashes_per_connection");
            let reason = format!("the plugin failed on {crashes} of this connection's messages");
            self.queue_close(CloseReason::new(INTERNAL_ERROR, reason)).await;
        }
    }

    /// Queues a frame for this connection, waiting for room: a client that does not read its
    /// replies stops being read, rather than being buffered for.
    async fn reply(&self, frame: String) {
        let frame = if self.handle.metadata {
            Delivery::new(frame, self.id.to_string()).for_handle(&self.handle)
        } else {
            Utf8Bytes::from(frame)
        };
        let _ = self.handle.send(frame).await;
    }

    async fn queue_close(&self, reason: CloseReason) {
        self.handle.close_after_queue(reason).await;
    }
}

/// The positions of a `recover` frame's payload, `{"positions": [{"group", "epoch", "offset"}]}`.
fn positions(payload: Option<&serde_json::value::RawValue>) -> Result<Vec<Position>, Problem> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Recover {
        positions: Vec<Position>,
    }
    let loc = || vec![RECOVER.into(), "payload".into()];
    let Some(payload) = payload else { return Err(Problem::new(Kind::Missing, loc(), "Field required")) };
    serde_json::from_str::<Recover>(payload.get()).map(|recover| recover.positions).map_err(|e| {
        Problem::new(
            Kind::ValueError,
            loc(),
            format!("expected {{\"positions\": [{{\"group\", \"epoch\", \"offset\"}}]}}: {e}"),
        )
    })
}

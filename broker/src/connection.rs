//! One WebSocket connection: a read loop that dispatches frames in order, and a write loop that
//! drains a bounded outbound queue.
//!
//! The read loop awaits each dispatch before reading the next frame, which is what keeps one
//! connection's messages in order; other connections run in their own tasks. A client that sends
//! faster than its plugin answers is held back by TCP, not buffered.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_util::sync::CancellationToken;

use crate::limits::{MessageRate, Verdict};
use crate::metrics::ConnectionMetrics;
use crate::outbound::{self, Bounds, CloseReason, Delivery, Handle, Outbound, Queue};
use crate::plugin::host::{Context, HandlerError, LocItem};
use crate::plugin::{CallError, Slot};
use crate::protocol::{self, PING, Problem, Request};
use crate::registry::{ConnectionId, Registry};
use crate::router::Route;

/// Close code when the server goes away (shutdown).
pub const GOING_AWAY: u16 = 1001;
/// Close code for a frame that breaks the WebSocket protocol.
pub const PROTOCOL_ERROR: u16 = 1002;
/// Close code for a text frame that is not UTF-8.
pub const INVALID_PAYLOAD: u16 = 1007;
/// Close code for a client that broke a policy (kept sending over its rate limit).
pub const POLICY_VIOLATION: u16 = 1008;
/// Close code for a message over `max_message_bytes`.
pub const MESSAGE_TOO_BIG: u16 = 1009;
/// Close code when a plugin failed while accepting the connection.
pub const INTERNAL_ERROR: u16 = 1011;

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
    pub identity: Option<crate::auth::Identity>,
    /// Its place under the connection limits, given back when it closes.
    pub admitted: crate::limits::Admitted,
    /// How many messages it may send.
    pub rate: MessageRate,
    pub bounds: Bounds,
    /// How long to wait for the client's half of a close handshake.
    pub close_grace: Duration,
    pub shutdown: CancellationToken,
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
        shutdown,
    } = *setup;
    let (handle, queue) = outbound::queue(&bounds, route.metadata);
    let control = handle.control.clone();
    let (user, claims) = match identity {
        Some(identity) => (Some(identity.user), Some(identity.claims.into_boxed_str())),
        None => (None, None),
    };
    let id = registry.register(handle.clone(), Arc::from(route.pattern.as_str()), claims);
    let metrics = Arc::new(metrics);
    let writer = tokio::spawn(write_loop(sink, queue, control.clone(), metrics.clone()));
    let connection = Connection {
        id,
        ctx: Context { connection: id, route: route.pattern.clone(), path, params, user },
        slot,
        handle,
        metrics,
    };
    let started = std::time::Instant::now();
    tracing::info!(connection = id, route = %connection.ctx.route, path = %connection.ctx.path, %peer, "connection opened");

    // Plugin calls are boxed: their futures are large (wasmtime's call, the deadline timer) and,
    // inline, would size every connection's task for the rare moment it is in a call. Idle
    // connections are most connections.
    let ended = if Box::pin(connection.accept()).await {
        connection.read_loop(&mut stream, &shutdown, &mut rate).await
    } else {
        Ended::WeClosed
    };
    // When we closed, wait (briefly) for our close frame to go out and for the client's answer, so
    // the client sees a clean close handshake rather than a reset.
    if ended == Ended::WeClosed {
        let _ = Box::pin(tokio::time::timeout(close_grace, async {
            control.closed().await;
            while let Some(Ok(message)) = stream.next().await {
                if message.is_close() {
                    break;
                }
            }
        }))
        .await;
    }
    registry.remove(id);
    if let Err(error) = Box::pin(connection.slot.current().on_disconnect(&connection.ctx)).await {
        tracing::warn!(connection = id, plugin = connection.slot.name(), %error, "on-disconnect failed");
    }
    let Connection { handle, ctx, .. } = connection;
    drop(handle);
    let _ = Box::pin(tokio::time::timeout(close_grace, writer)).await;
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
    ctx: Context,
    slot: Arc<Slot>,
    handle: Handle,
    metrics: Arc<ConnectionMetrics>,
}

impl Connection {
    /// Runs the plugin's `on-connect`; false when the connection is refused.
    async fn accept(&self) -> bool {
        let refusal = match self.slot.current().on_connect(&self.ctx).await {
            Ok(Ok(())) => return true,
            Ok(Err(rejection)) => CloseReason::new(rejection.code, rejection.reason),
            Err(error) => {
                tracing::warn!(connection = self.id, plugin = self.slot.name(), %error, "on-connect failed");
                CloseReason::new(INTERNAL_ERROR, format!("plugin {}: {error}", self.slot.name()))
            }
        };
        // Queued, so frames the plugin sent before refusing still arrive first.
        self.queue_close(refusal).await;
        false
    }

    async fn read_loop<S>(
        &self,
        stream: &mut futures_util::stream::SplitStream<WebSocketStream<S>>,
        shutdown: &CancellationToken,
        rate: &mut MessageRate,
    ) -> Ended
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        // Created once, not per frame: each creation registers a waiter.
        let shutting_down = shutdown.cancelled();
        let closed = self.handle.control.closed();
        tokio::pin!(shutting_down, closed);
        loop {
            let message = tokio::select! {
                _ = &mut shutting_down => {
                    Box::pin(self.queue_close(CloseReason::new(GOING_AWAY, "server shutting down"))).await;
                    return Ended::WeClosed;
                }
                _ = &mut closed => return Ended::WeClosed,
                message = stream.next() => message,
            };
            if let Some(Ok(_)) = &message {
                self.handle.control.seen();
            }
            if let Some(Ok(Message::Text(_) | Message::Binary(_))) = &message {
                match rate.check() {
                    Verdict::Allowed => {}
                    Verdict::Refused => {
                        self.metrics.shared().limit_hit("server.messages_per_second");
                        let msg = "Too many messages: over server.messages_per_second; this one was not handled";
                        let frame = protocol::error_frame(&[Problem::new("rate_limited", vec![], msg)], None);
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
                    Box::pin(self.reply(protocol::error_frame(&[Problem::new("json_invalid", vec![], msg)], None)))
                        .await;
                }
                // tungstenite answers pings itself; pongs and raw frames need nothing.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Close(_))) | None => return Ended::Peer,
                Some(Err(WsError::Capacity(CapacityError::MessageTooLong { size, max_size }))) => {
                    self.metrics.shared().limit_hit("server.max_message_bytes");
                    let reason = format!("message of {size} bytes is over the limit of {max_size} bytes");
                    self.handle.control.close_now(CloseReason::new(MESSAGE_TOO_BIG, reason));
                    return Ended::WeClosed;
                }
                // RFC 6455 §7.4.1: 1002 for a protocol error, 1007 for text that is not UTF-8.
                Some(Err(error @ (WsError::Protocol(_) | WsError::Utf8(_)))) => {
                    let code = if matches!(error, WsError::Utf8(_)) { INVALID_PAYLOAD } else { PROTOCOL_ERROR };
                    tracing::debug!(connection = self.id, %error, "closed for a protocol violation");
                    self.handle.control.close_now(CloseReason::new(code, error.to_string()));
                    return Ended::WeClosed;
                }
                Some(Err(error)) => {
                    tracing::debug!(connection = self.id, %error, "read failed");
                    return Ended::Peer;
                }
            }
            if self.handle.control.is_closing() {
                return Ended::WeClosed;
            }
        }
    }

    /// Handles one text frame: broker-level actions here, the rest by the plugin.
    async fn dispatch(&self, text: &str) {
        // One generation for the whole message: the one in service when it was read.
        let plugin = self.slot.current();
        let Request { action, payload, reference } = match protocol::parse(text, plugin.accepts()) {
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
                    &[Problem::new("none_required", vec![PING.into(), "payload".into()], "Input should be None")],
                    reference,
                ),
            };
            return self.reply(frame).await;
        }
        if let Err(problems) = plugin.validate(&action, payload) {
            self.metrics.shared().payload_refused(self.slot.name());
            return self.reply(protocol::error_frame(&problems, reference)).await;
        }
        let answer = plugin.on_message(&self.ctx, &action, payload.map(|p| p.get())).await;
        let problems = match answer {
            Ok(Ok(None)) => return,
            Ok(Ok(Some(frame))) => match protocol::plugin_frame(frame, reference) {
                Ok(frame) => return self.reply(frame).await,
                Err(why) => {
                    self.metrics.shared().plugin_error(self.slot.name(), "error");
                    vec![Problem::at_action("plugin_error", &action, format!("the plugin replied with {why}"))]
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
                vec![Problem::at_action("plugin_error", &action, message)]
            }
            Err(error) => {
                let (kind, counted) = match error {
                    CallError::Timeout(_) => ("plugin_timeout", "timeout"),
                    CallError::Trap(_) | CallError::Instantiate(_) | CallError::BackedOff(_) => {
                        ("plugin_crashed", "crashed")
                    }
                };
                self.metrics.shared().plugin_error(self.slot.name(), counted);
                tracing::warn!(connection = self.id, plugin = self.slot.name(), %action, %error, "call failed");
                vec![Problem::at_action(kind, &action, error.to_string())]
            }
        };
        self.reply(protocol::error_frame(&problems, reference)).await;
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

/// Writes queued frames until a close frame is written or the queue ends.
async fn write_loop<S>(
    mut sink: futures_util::stream::SplitSink<WebSocketStream<S>, Message>,
    mut queue: Queue,
    control: Arc<outbound::Control>,
    metrics: Arc<ConnectionMetrics>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let closed = control.closed();
    tokio::pin!(closed);
    loop {
        let item = tokio::select! {
            biased;
            reason = &mut closed => Outbound::Close(reason),
            item = queue.recv() => match item {
                Some(item) => item,
                None => break,
            },
        };
        let result = match item {
            // The permit (the frame's share of the byte bound) is released once the frame is written.
            Outbound::Frame(text, _permit) => {
                metrics.frame_out(text.as_str());
                // Batch: flush only when nothing else is waiting.
                if queue.is_empty() {
                    sink.send(Message::Text(text)).await
                } else {
                    sink.feed(Message::Text(text)).await
                }
            }
            Outbound::Close(reason) => {
                control.close_now(reason.clone());
                let _ = sink.send(Message::Close(Some(close_frame(&reason)))).await;
                break;
            }
            Outbound::Ping => sink.send(Message::Ping(Default::default())).await,
        };
        if result.is_err() {
            break;
        }
    }
    let _ = sink.close().await;
}

/// A close frame the protocol allows: a valid code and a reason of at most 123 bytes.
fn close_frame(reason: &CloseReason) -> CloseFrame {
    let code = CloseCode::from(reason.code);
    let code = if code.is_allowed() { code } else { CloseCode::Error };
    let mut end = reason.reason.len().min(123);
    while !reason.reason.is_char_boundary(end) {
        end -= 1;
    }
    CloseFrame { code, reason: Utf8Bytes::from(&reason.reason[..end]) }
}

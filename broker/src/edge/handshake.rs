//! The WebSocket handshake on a route: the route matched, the request checked against RFC 6455,
//! the client admitted under the connection limits, its Origin and token checked, and the
//! connection task spawned on the upgraded socket.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use crate::config::AuthMode;
use crate::edge::auth;
use crate::edge::connection::{self, Setup};
use crate::edge::limits::{MessageRate, Refused};
use crate::edge::live::Shared;
use crate::edge::router::Miss;
use crate::hub::history::Position;
use crate::hub::outbound::Bounds;
use crate::wire::percent::percent_decode;

/// Bytes of queued frames written to a socket in one call (tungstenite's write buffer).
const WRITE_BATCH_BYTES: usize = 4096;

/// Positions one handshake may recover from: more than a connection may have groups is never
/// useful, and each is kept until its group is joined.
const MAX_RECOVER_POSITIONS: usize = 256;

/// Answers a request for `path`, which is not one of the broker's own: a WebSocket handshake on a
/// route, or the HTTP error saying why it is not one.
pub async fn upgrade(
    shared: Arc<Shared>,
    request: Request<Incoming>,
    peer: SocketAddr,
    path: String,
) -> Response<Full<Bytes>> {
    let live = shared.live.load_full();
    let matched = match live.router.lookup(&path) {
        Ok(matched) => matched,
        Err(Miss::NotFound) => return text(StatusCode::NOT_FOUND, format!("no route for {path}\n")),
        Err(Miss::BadParam(why)) => {
            shared.metrics.limit_hit("routes.params");
            return text(StatusCode::BAD_REQUEST, format!("{path}: {why}\n"));
        }
    };
    let key = match websocket_key(&request) {
        Ok(key) => key,
        Err(NotHandshake::NotWebSocket) => {
            return upgrade_required(format!("{path} is a WebSocket route: connect with a WebSocket client\n"));
        }
        Err(NotHandshake::Version) => {
            return upgrade_required(format!("{path} speaks WebSocket version 13 (RFC 6455) only\n"));
        }
        Err(NotHandshake::Malformed(why)) => {
            return text(StatusCode::BAD_REQUEST, format!("not a valid WebSocket handshake: {why}\n"));
        }
    };
    let Some(slot) = live.slots.get(&matched.route.plugin).cloned() else {
        return text(StatusCode::SERVICE_UNAVAILABLE, format!("plugin {} is not loaded\n", matched.route.plugin));
    };
    let limits = &live.config.server;
    let admitted = match shared.admission.admit(peer.ip(), limits.max_connections, limits.max_connections_per_ip) {
        Ok(admitted) => admitted,
        Err(Refused::Total(max)) => {
            shared.metrics.limit_hit("server.max_connections");
            return text(StatusCode::SERVICE_UNAVAILABLE, format!("the broker holds its {max} connections\n"));
        }
        Err(Refused::PerIp(max)) => {
            shared.metrics.limit_hit("server.max_connections_per_ip");
            let ip = peer.ip();
            return text(StatusCode::TOO_MANY_REQUESTS, format!("{ip} already has {max} connections open\n"));
        }
    };
    if !auth::origin_allowed(&limits.allowed_origins, request.headers().get(header::ORIGIN)) {
        shared.metrics.limit_hit("server.allowed_origins");
        let origin = request.headers().get(header::ORIGIN).and_then(|o| o.to_str().ok()).unwrap_or_default();
        return text(StatusCode::FORBIDDEN, format!("the origin {origin} may not connect here\n"));
    }
    let recover = match recover_positions(request.uri().query()) {
        Ok(recover) => recover,
        Err(why) => return text(StatusCode::BAD_REQUEST, format!("`recover`: {why}\n")),
    };
    let presented = auth::presented(request.headers(), request.uri().query());
    let identity = match (matched.route.auth, &live.verifier, presented.token) {
        (AuthMode::None, _, _) | (AuthMode::Optional, _, None) => None,
        (AuthMode::Required, _, None) => {
            shared.metrics.limit_hit("routes.auth");
            return unauthorized(
                "a token is required: `Authorization: Bearer <token>`, `?token=<token>` or the subprotocols `bearer, <token>`",
            );
        }
        (_, Some(verifier), Some(token)) => match verifier.verify(&token) {
            Ok(identity) => Some(identity),
            Err(why) => {
                shared.metrics.limit_hit("routes.auth");
                return unauthorized(&why);
            }
        },
        // Configuration validation refuses auth routes without a key; refuse rather than let in.
        (_, None, Some(_)) => return unauthorized("tokens cannot be checked: `[auth]` has no key"),
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
        recover,
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
    response
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

/// A plain-text response: the body says what happened, for the person reading it.
pub fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// The positions of the query's `recover` parameter: a JSON array of `{"group", "epoch", "offset"}`,
/// percent-encoded. None when the query has no `recover`.
fn recover_positions(query: Option<&str>) -> Result<Vec<Position>, String> {
    let Some(value) = query.into_iter().flat_map(|q| q.split('&')).find_map(|pair| pair.strip_prefix("recover="))
    else {
        return Ok(Vec::new());
    };
    let json = percent_decode(value).ok_or("not percent-encoded UTF-8")?;
    let positions: Vec<Position> = serde_json::from_str(&json)
        .map_err(|e| format!("expected a JSON array of {{\"group\", \"epoch\", \"offset\"}}: {e}"))?;
    if positions.len() > MAX_RECOVER_POSITIONS {
        return Err(format!("at most {MAX_RECOVER_POSITIONS} positions"));
    }
    Ok(positions)
}

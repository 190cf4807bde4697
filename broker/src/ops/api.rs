//! The HTTP endpoints beside the WebSocket routes: the publish and presence API, metrics, and the
//! AsyncAPI document.
//!
//! `POST /api/publish` and `GET /api/groups/{group}/members` need `Authorization: Bearer <api.key>`.
//! Groups are named `namespace:name` here (`chat:room1`), since each plugin has its own namespace.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

use crate::edge::handshake::text;
use crate::edge::live::Shared;
use crate::hub::registry::{Delivery, GroupKey, PublishError};
use crate::plugin::rfc3339;
use crate::wire::percent::percent_decode;
use crate::wire::protocol;

/// The demo page: embedded, so the broker serves it with no file and no network.
const DEMO_PAGE: &str = include_str!("../../web/index.html");

/// The sender stamped on frames published through the API.
const API_SENDER: &str = "api";

/// An HTTP endpoint that is not a WebSocket route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET /`: the demo page.
    Demo,
    /// `GET /healthz`: the process is up.
    Health,
    /// `GET /readyz`: plugins are loaded and serving.
    Ready,
    Metrics,
    /// `GET /asyncapi.json`, `/asyncapi.yaml`, `/asyncapi`: the AsyncAPI 3.0 document of the routes.
    AsyncApi(DocFormat),
    Publish,
    /// `GET /api/plugins`: each plugin's generation and reload history, and the configuration's.
    Plugins,
    /// `GET /api/groups/{group}/members`, with the group as written in the path (percent-decoded).
    Members(String),
    /// `GET /api/groups/{group}/history?after=&limit=`: the frames a group with history keeps.
    History(String),
    /// Under `/api/` but nothing there.
    Unknown,
}

impl Endpoint {
    /// The endpoint a path names, if it is not a WebSocket route's.
    pub fn parse(path: &str) -> Option<Endpoint> {
        match path {
            "/" | "/index.html" => return Some(Endpoint::Demo),
            "/healthz" => return Some(Endpoint::Health),
            "/readyz" => return Some(Endpoint::Ready),
            "/metrics" => return Some(Endpoint::Metrics),
            "/asyncapi.json" => return Some(Endpoint::AsyncApi(DocFormat::Json)),
            "/asyncapi.yaml" | "/asyncapi.yml" => return Some(Endpoint::AsyncApi(DocFormat::Yaml)),
            "/asyncapi" | "/asyncapi.html" => return Some(Endpoint::AsyncApi(DocFormat::Html)),
            _ => {}
        }
        let rest = path.strip_prefix("/api/")?;
        if rest == "publish" {
            return Some(Endpoint::Publish);
        }
        if rest == "plugins" {
            return Some(Endpoint::Plugins);
        }
        let Some(group) = rest.strip_prefix("groups/") else { return Some(Endpoint::Unknown) };
        let named = |suffix: &str| group.strip_suffix(suffix).and_then(percent_decode);
        Some(match (named("/members"), named("/history")) {
            (Some(group), _) => Endpoint::Members(group),
            (_, Some(group)) => Endpoint::History(group),
            _ => Endpoint::Unknown,
        })
    }
}

/// How the AsyncAPI document is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocFormat {
    Json,
    Yaml,
    Html,
}

impl Endpoint {
    /// The methods the endpoint answers, as its `Allow` header lists them; `HEAD` is `GET` without
    /// the body. `None`: nothing is there.
    fn allow(&self) -> Option<&'static str> {
        match self {
            Endpoint::Publish => Some("POST"),
            Endpoint::Unknown => None,
            _ => Some("GET, HEAD"),
        }
    }
}

type Reply = Response<Full<Bytes>>;

/// Answers one API request.
pub(crate) async fn serve(shared: &Shared, endpoint: Endpoint, request: Request<Incoming>) -> Reply {
    let mut method = request.method().clone();
    // A wrong method is told so before any key is asked for: it is wrong with any key.
    if let Some(allow) = endpoint.allow() {
        if method == Method::HEAD && allow.contains("HEAD") {
            method = Method::GET;
        } else if !allow.split(", ").any(|m| m == method.as_str()) {
            let mut response = error(StatusCode::METHOD_NOT_ALLOWED, &format!("{method} is not allowed here: {allow}"));
            response.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
            return response;
        }
    }
    match (endpoint, method) {
        (Endpoint::Demo, Method::GET) => {
            let mut response = text(StatusCode::OK, DEMO_PAGE.to_owned());
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
            response
        }
        (Endpoint::Health, Method::GET) => text(StatusCode::OK, "ok\n".into()),
        (Endpoint::Ready, Method::GET) => ready(shared),
        (Endpoint::Metrics, Method::GET) => {
            for slot in shared.live.load().slots.values() {
                let (idle, busy) = slot.current().instances();
                shared.metrics.plugin_instances(slot.name(), idle, busy);
            }
            let mut response = text(StatusCode::OK, shared.metrics.render(&shared.registry));
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
            response
        }
        (Endpoint::AsyncApi(format), Method::GET) => asyncapi(shared, format),
        (Endpoint::Unknown, _) => error(StatusCode::NOT_FOUND, "no such API endpoint"),
        (endpoint, method) => {
            if let Some(refusal) = refuse(shared, request.headers()) {
                return refusal;
            }
            match (endpoint, method) {
                (Endpoint::Publish, Method::POST) => publish(shared, request).await,
                (Endpoint::Members(group), Method::GET) => members(shared, &group).await,
                (Endpoint::History(group), Method::GET) => history(shared, &group, request.uri().query()).await,
                (Endpoint::Plugins, Method::GET) => plugins(shared),
                // Every other pair was answered 405 above.
                _ => error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here"),
            }
        }
    }
}

/// The answer to a request without the right key, or `None` when it may proceed.
fn refuse(shared: &Shared, headers: &HeaderMap) -> Option<Reply> {
    let Some(key) = shared.live.load().config.api.key() else {
        return Some(error(
            StatusCode::FORBIDDEN,
            "the HTTP API is disabled: set api.key or api.key_env in broker.toml",
        ));
    };
    let given =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(given) if constant_time_eq(given.trim().as_bytes(), key.as_bytes()) => None,
        Some(_) => Some(error(StatusCode::UNAUTHORIZED, "wrong API key")),
        None => Some(error(StatusCode::UNAUTHORIZED, "missing `Authorization: Bearer <key>`")),
    }
}

/// Compares secrets without returning early, so timing does not tell how much of a key was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Publish {
    group: String,
    frame: Box<RawValue>,
    /// A retry naming the same key within the history's TTL is not broadcast again.
    #[serde(default)]
    idempotency_key: Option<String>,
}

/// The longest idempotency key, in bytes.
const MAX_IDEMPOTENCY_KEY: usize = 256;

async fn publish(shared: &Shared, request: Request<Incoming>) -> Reply {
    let (limit, deadline) = {
        let server = &shared.live.load().config.server;
        (server.max_message_bytes, server.handshake_timeout())
    };
    // The body shares the request head's deadline: a client that stalls mid-body (slowloris) would
    // otherwise hold the connection for as long as it likes.
    let body = match tokio::time::timeout(deadline, Limited::new(request.into_body(), limit).collect()).await {
        Ok(Ok(body)) => body.to_bytes(),
        Ok(Err(_)) => return error(StatusCode::PAYLOAD_TOO_LARGE, &format!("the body is over {limit} bytes")),
        Err(_) => {
            shared.metrics.limit_hit("server.handshake_timeout_ms");
            let mut response = error(
                StatusCode::REQUEST_TIMEOUT,
                &format!("the body did not arrive within server.handshake_timeout_ms ({} ms)", deadline.as_millis()),
            );
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            return response;
        }
    };
    let publish: Publish = match serde_json::from_slice(&body) {
        Ok(publish) => publish,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!(
                    "expected {{\"group\": string, \"frame\": object, \"idempotency_key\": string (optional)}}: {e}"
                ),
            );
        }
    };
    let Some(group) = GroupKey::parse(&publish.group) else {
        return error(StatusCode::BAD_REQUEST, "`group` is `namespace:name`, for example `chat:room1`");
    };
    if !publish.frame.get().starts_with('{') {
        return error(StatusCode::BAD_REQUEST, "`frame` must be a JSON object");
    }
    if let Err(refusal) = protocol::published_frame(publish.frame.get()) {
        let why: Vec<String> = refusal
            .problems
            .iter()
            .map(|p| match p.loc.as_slice() {
                [] => p.msg.clone(),
                loc => {
                    let at: Vec<String> =
                        loc.iter().map(|l| l.as_str().map_or_else(|| l.to_string(), str::to_owned)).collect();
                    format!("`{}`: {}", at.join("."), p.msg)
                }
            })
            .collect();
        return json_reply(
            StatusCode::BAD_REQUEST,
            json!({
                "error": format!("`frame` breaks the frame rules (README, \"The wire protocol\"): {}", why.join("; ")),
                "problems": refusal.problems,
            }),
        );
    }
    if publish.idempotency_key.as_ref().is_some_and(|k| k.is_empty() || k.len() > MAX_IDEMPOTENCY_KEY) {
        return error(StatusCode::BAD_REQUEST, &format!("`idempotency_key` is 1 to {MAX_IDEMPOTENCY_KEY} bytes"));
    }
    let delivery = Delivery::new(publish.frame.get().to_owned(), API_SENDER.to_owned());
    let published = match shared.registry.publish(&group, &delivery, publish.idempotency_key.as_deref()).await {
        Ok(published) => published,
        Err(why @ PublishError::NoHistory) => return error(StatusCode::BAD_REQUEST, &why.to_string()),
        Err(why @ PublishError::Cluster(_)) => return error(StatusCode::SERVICE_UNAVAILABLE, &why.to_string()),
    };
    if !published.duplicate {
        shared.metrics.api_published.inc();
    }
    let mut answer = json!({"group": group.to_string(), "delivered": published.delivered});
    if let Some((epoch, offset)) = published.position {
        answer["epoch"] = epoch.into();
        answer["offset"] = offset.into();
        answer["duplicate"] = published.duplicate.into();
    }
    json_reply(StatusCode::OK, answer)
}

/// The frames a group keeps after `after` (none: the newest), at most `limit` (default 100), as
/// members received them, with the stream's epoch and last offset: what a backend reads to
/// rebuild a room or check what was delivered.
async fn history(shared: &Shared, group: &str, query: Option<&str>) -> Reply {
    let Some(key) = GroupKey::parse(group) else {
        return error(StatusCode::BAD_REQUEST, "the group is `namespace:name`, for example `chat:room1`");
    };
    let mut after = None;
    let mut limit = 100;
    for (name, value) in query.into_iter().flat_map(|q| q.split('&')).filter_map(|pair| pair.split_once('=')) {
        let number = value.parse::<u64>();
        match (name, number) {
            ("after", Ok(n)) => after = Some(n),
            ("limit", Ok(n)) => limit = usize::try_from(n).unwrap_or(usize::MAX),
            ("after" | "limit", Err(_)) => {
                return error(StatusCode::BAD_REQUEST, &format!("`{name}` is a non-negative integer"));
            }
            _ => {}
        }
    }
    match shared.registry.read_history(&key, after, limit).await {
        Ok(Some(page)) => {
            let entries: Vec<serde_json::Value> = page
                .entries
                .into_iter()
                .map(|(offset, frame)| {
                    let frame = serde_json::from_str(&frame).unwrap_or(serde_json::Value::String(frame));
                    json!({"offset": offset, "frame": frame})
                })
                .collect();
            json_reply(
                StatusCode::OK,
                json!({"group": key.to_string(), "epoch": page.epoch, "offset": page.offset, "entries": entries}),
            )
        }
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            &format!("{key} keeps no history: its namespace has no `[plugins.<name>.history]`"),
        ),
        Err(why) => error(StatusCode::SERVICE_UNAVAILABLE, &format!("the cluster's Redis: {why}")),
    }
}

async fn members(shared: &Shared, group: &str) -> Reply {
    let Some(key) = GroupKey::parse(group) else {
        return error(StatusCode::BAD_REQUEST, "the group is `namespace:name`, for example `chat:room1`");
    };
    json_reply(StatusCode::OK, json!({"group": key.to_string(), "members": shared.registry.members(&key).await}))
}

/// Ready when every configured plugin has a generation in service (a plugin that failed to load
/// stops start-up, so this holds once serving). Redis being down is reported, not made a failure:
/// a node without Redis still serves its own clients, and a load balancer taking every node out
/// at once over it would serve no one.
fn ready(shared: &Shared) -> Reply {
    let live = shared.live.load();
    let missing: Vec<&String> = live.config.plugins.keys().filter(|name| !live.slots.contains_key(*name)).collect();
    let status = if missing.is_empty() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let cluster =
        shared.registry.cluster().map(|link| json!({"node": link.node, "name": link.name, "redis_up": link.is_up()}));
    json_reply(
        status,
        json!({"ready": missing.is_empty(), "plugins": live.slots.len(), "missing": missing, "cluster": cluster}),
    )
}

fn plugins(shared: &Shared) -> Reply {
    let live = shared.live.load();
    let mut slots: Vec<_> = live.slots.values().collect();
    slots.sort_by(|a, b| a.name().cmp(b.name()));
    let config_error = shared.config_error.lock().clone();
    json_reply(
        StatusCode::OK,
        json!({
            "config": {
                "path": live.config.source.display().to_string(),
                "loaded_at": rfc3339(live.loaded_at),
                "last_error": config_error.map(|(at, error)| json!({"at": rfc3339(at), "error": error})),
            },
            "plugins": slots.iter().map(|slot| slot.status()).collect::<Vec<_>>(),
        }),
    )
}

/// Built on each request from the configuration and plugin generations in service, so it follows
/// every reload.
fn asyncapi(shared: &Shared, format: DocFormat) -> Reply {
    let live = shared.live.load();
    let document = crate::documents::asyncapi::document(&live.config, &live.generations(), shared.bound);
    let (body, content_type) = match format {
        DocFormat::Json => (document.to_string(), "application/json"),
        DocFormat::Yaml => (crate::documents::asyncapi::to_yaml(&document), "application/yaml"),
        DocFormat::Html => (crate::documents::asyncapi::html::render(&document), "text/html; charset=utf-8"),
    };
    let mut response = text(StatusCode::OK, body);
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn error(status: StatusCode, message: &str) -> Reply {
    json_reply(status, json!({"error": message}))
}

fn json_reply(status: StatusCode, body: serde_json::Value) -> Reply {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_the_router_reserves_is_answered_here() {
        for path in crate::edge::router::RESERVED_PATHS {
            assert!(Endpoint::parse(path).is_some(), "{path} is reserved but not an endpoint");
        }
        assert_eq!(Endpoint::parse("/ws/system"), None);
    }

    #[test]
    fn endpoints_by_path() {
        assert_eq!(Endpoint::parse("/metrics"), Some(Endpoint::Metrics));
        assert_eq!(Endpoint::parse("/api/publish"), Some(Endpoint::Publish));
        assert_eq!(Endpoint::parse("/asyncapi.yaml"), Some(Endpoint::AsyncApi(DocFormat::Yaml)));
        assert_eq!(Endpoint::parse("/asyncapi"), Some(Endpoint::AsyncApi(DocFormat::Html)));
        assert_eq!(Endpoint::parse("/api/groups/chat:room%201/members"), Some(Endpoint::Members("chat:room 1".into())));
        assert_eq!(Endpoint::parse("/api/nothing"), Some(Endpoint::Unknown));
        assert_eq!(Endpoint::parse("/ws/chat/room1"), None);
    }

    #[test]
    fn keys_compare_whole() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }
}

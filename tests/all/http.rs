//! Outbound HTTP from plugins (`wasi:http`): a host on the allow-list is reached, one off it is
//! refused inside the plugin before any connection, and a call waiting on a server that never
//! answers ends at the plugin's `timeout_ms` while the plugin keeps serving others. The servers
//! are the test's own, on 127.0.0.1, and count what reaches them.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use serde_json::{Value, json};

use crate::harness::{Broker, Client, compile_cache, default_config, js_plugin_path, py_plugin_path};

/// What a test server saw: connections accepted, and the most requests it held at once.
#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
}

/// A small HTTP/1.1 server: `GET /hello` (200, `x-test: yes`, `hello`), `POST /echo` (201, the
/// body back, as JSON), `GET /slow/<ms>` (answers `slow <ms>` after that long), anything else 404.
struct TestServer {
    addr: SocketAddr,
    seen: Arc<Seen>,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    async fn start() -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Seen::default());
        let counted = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                counted.connections.fetch_add(1, Ordering::SeqCst);
                let seen = counted.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                        let seen = seen.clone();
                        async move {
                            let now = seen.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                            seen.peak.fetch_max(now, Ordering::SeqCst);
                            let response = answer(request).await;
                            seen.in_flight.fetch_sub(1, Ordering::SeqCst);
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let io = hyper_util::rt::TokioIo::new(tcp);
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                });
            }
        });
        TestServer { addr, seen, task }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn connections(&self) -> usize {
        self.seen.connections.load(Ordering::SeqCst)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(request: Request<Incoming>) -> Response<Full<Bytes>> {
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    let respond = |status: u16, body: Vec<u8>| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
        response
    };
    match (method.as_str(), path.as_str()) {
        ("GET", "/hello") => {
            let mut response = respond(200, b"hello".to_vec());
            response.headers_mut().insert("x-test", "yes".parse().unwrap());
            response
        }
        ("POST", "/echo") => {
            let kind = request.headers().get("content-type").cloned();
            let body = request.into_body().collect().await.map(|b| b.to_bytes().to_vec()).unwrap_or_default();
            let mut response = respond(201, body);
            if let Some(kind) = kind {
                response.headers_mut().insert("content-type", kind);
            }
            response
        }
        ("GET", slow) if slow.starts_with("/slow/") => {
            let ms: u64 = slow["/slow/".len()..].parse().unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            respond(200, format!("slow {ms}").into_bytes())
        }
        _ => respond(404, b"nope".to_vec()),
    }
}

/// A server that accepts connections and never answers: it holds every socket open.
struct Silent {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Silent {
    async fn start() -> Silent {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((tcp, _)) = listener.accept().await {
                held.push(tcp);
            }
        });
        Silent { addr, task }
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The default config plus tests/polyglot/http-py at `/ws/http-py`, allowed `allow` only, its
/// calls bounded by `timeout_ms`.
fn python_config(allow: &str, timeout_ms: u64) -> String {
    default_config(&format!(
        r#"
[engine]
cache_dir = "{cache}"

[plugins.http-py]
path = "{path}"
timeout_ms = {timeout_ms}
allow_hosts = ["{allow}"]

[[routes]]
path = "/ws/http-py"
plugin = "http-py"
"#,
        cache = compile_cache().display(),
        path = py_plugin_path("http-py").display(),
    ))
}

async fn call(client: &mut Client, action: &str, payload: Value) -> Value {
    client.request(json!({"action": action, "payload": payload, "ref": "r"})).await
}

#[tokio::test]
async fn python_reaches_a_host_on_its_allow_list() {
    let server = TestServer::start().await;
    let broker = Broker::with_config(&python_config(&server.addr.to_string(), 10_000));
    let mut client = broker.connect("/ws/http-py").await;

    let hello = call(&mut client, "fetch", json!({"url": server.url("/hello"), "timeout_ms": 5000})).await;
    assert_eq!(hello["action"], "fetched", "{hello}");
    assert_eq!((&hello["payload"]["status"], &hello["payload"]["body"]), (&json!(200), &json!("hello")));
    assert_eq!(hello["payload"]["headers"]["x-test"], "yes", "{hello}");

    // A status that is not 2xx is a response, not an exception.
    let missing = call(&mut client, "fetch", json!({"url": server.url("/missing")})).await;
    assert_eq!((&missing["payload"]["status"], &missing["payload"]["body"]), (&json!(404), &json!("nope")));

    // The JSON helper: the body goes out as JSON (UTF-8 as is), the answer comes back decoded.
    let posted = call(&mut client, "post_json", json!({"url": server.url("/echo")})).await;
    assert_eq!(posted["payload"], json!({"status": 201, "json": {"hello": "wörld"}}), "{posted}");
    let sent = call(
        &mut client,
        "fetch",
        json!({"url": server.url("/echo"), "method": "POST", "headers": {"content-type": "text/plain"}, "body": "as is"}),
    )
    .await;
    assert_eq!(sent["payload"]["body"], "as is", "{sent}");
    assert_eq!(sent["payload"]["headers"]["content-type"], "text/plain", "{sent}");

    // asyncio: three requests of 300 ms each are made side by side, on one handler call.
    let urls: Vec<String> = (0..3).map(|_| server.url("/slow/300")).collect();
    let all = call(&mut client, "fetch_all", json!({"urls": urls})).await;
    assert_eq!(all["payload"], json!(["slow 300", "slow 300", "slow 300"]), "{all}");
    assert!(server.seen.peak.load(Ordering::SeqCst) >= 2, "the requests were made one after the other");
    // asyncio's timers run on the loop too: `wait_for` gives up on a slow answer, `sleep` ends.
    let slow = json!({"url": server.url("/slow/2000"), "seconds": 0.3});
    let within = call(&mut client, "fetch_within", slow).await;
    assert_eq!(within["payload"], json!(["timed out", "slept"]), "{within}");
    let quick = json!({"url": server.url("/hello"), "seconds": 5});
    assert_eq!(call(&mut client, "fetch_within", quick).await["payload"], json!(["hello", "slept"]));

    // What one request costs from the client's side: a handler call and an HTTP round trip.
    let started = Instant::now();
    for _ in 0..20 {
        let hello = call(&mut client, "fetch", json!({"url": server.url("/hello")})).await;
        assert_eq!(hello["payload"]["status"], 200);
    }
    eprintln!("a Python handler's request to 127.0.0.1 took {:?} on average", started.elapsed() / 20);
    client.assert_alive().await;
}

#[tokio::test]
async fn python_is_refused_a_host_off_its_allow_list_and_the_host_never_hears_of_it() {
    let server = TestServer::start().await;
    // Allowed: the same address on another port only.
    let broker = Broker::with_config(&python_config("127.0.0.1:1", 10_000));
    let mut client = broker.connect("/ws/http-py").await;
    let url = server.url("/hello");

    let caught = call(&mut client, "fetch_caught", json!({"url": url})).await;
    assert_eq!(
        caught,
        json!({
            "action": "failed",
            "payload": {
                "kinds": ["Denied", "HttpError"],
                "code": "HttpRequestDenied",
                "message": format!("{url}: ErrorCode::HttpRequestDenied"),
            },
            "ref": "r",
        })
    );
    // Let through, it answers plugin_error with the Rust SDK's words, and the plugin serves on.
    let uncaught = call(&mut client, "fetch", json!({"url": url})).await;
    assert_eq!(
        uncaught,
        json!({
            "action": "error",
            "payload": [{"type": "plugin_error", "loc": ["fetch"], "msg": format!("{url}: ErrorCode::HttpRequestDenied")}],
            "ref": "r",
        })
    );
    let posted = call(&mut client, "post_json", json!({"url": server.url("/echo")})).await;
    assert_eq!(posted["payload"][0]["type"], "plugin_error", "{posted}");
    assert_eq!(server.connections(), 0, "a denied request reached the server");
    assert!(broker.metric("broker_limit_hits_total{limit=\"plugins.allow_hosts\"}").await >= 3.0);
    client.assert_alive().await;
}

#[tokio::test]
async fn python_refuses_a_malformed_url_and_reports_a_refused_connection() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let broker = Broker::with_config(&python_config("127.0.0.1", 10_000));
    let mut client = broker.connect("/ws/http-py").await;

    let relative = call(&mut client, "fetch_caught", json!({"url": "/hello"})).await;
    assert_eq!(relative["payload"]["message"], "\"/hello\" is not an absolute URL", "{relative}");
    let ftp = call(&mut client, "fetch_caught", json!({"url": "ftp://127.0.0.1/x"})).await;
    assert_eq!(ftp["payload"]["message"], "unsupported scheme \"ftp\"", "{ftp}");
    let refused =
        call(&mut client, "fetch_caught", json!({"url": format!("http://127.0.0.1:{port}/"), "timeout_ms": 2000}))
            .await;
    assert_eq!(refused["payload"]["kinds"], json!(["HttpError"]), "{refused}");
    assert_eq!(refused["payload"]["code"], "ConnectionRefused", "{refused}");
    client.assert_alive().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_waiting_on_a_server_that_never_answers_times_out_while_the_plugin_serves_others() {
    let silent = Silent::start().await;
    let server = TestServer::start().await;
    let timeout = Duration::from_millis(1500);
    let broker = Broker::with_config(&python_config("127.0.0.1", timeout.as_millis() as u64));
    let mut waiting = broker.connect("/ws/http-py").await;
    let mut bystander = broker.connect("/ws/http-py").await;

    // No timeout of its own: only the plugin's deadline can end this call.
    let asked = Instant::now();
    waiting.send(json!({"action": "fetch", "payload": {"url": format!("http://{}/", silent.addr)}, "ref": "w"})).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..5 {
        let hello = call(&mut bystander, "fetch", json!({"url": server.url("/hello")})).await;
        assert_eq!(hello["payload"]["status"], 200, "{hello}");
    }
    assert!(asked.elapsed() < timeout, "the bystander waited for the silent server: {:?}", asked.elapsed());

    let timed_out = waiting.recv().await;
    let elapsed = asked.elapsed();
    eprintln!("a call waiting on a silent server ended after {elapsed:?} (timeout_ms {timeout:?})");
    assert_eq!(timed_out["ref"], "w", "{timed_out}");
    assert_eq!(timed_out["payload"][0]["type"], "plugin_timeout", "{timed_out}");
    assert!(elapsed >= timeout && elapsed < timeout + Duration::from_secs(2), "ended after {elapsed:?}");

    // The connection and the plugin serve on.
    let hello = call(&mut waiting, "fetch", json!({"url": server.url("/hello")})).await;
    assert_eq!(hello["payload"]["status"], 200, "{hello}");
}

/// The default config plus tests/polyglot/http-js at `/ws/http-js`, allowed `allow` only, its
/// calls bounded by `timeout_ms`.
fn javascript_config(allow: &str, timeout_ms: u64) -> String {
    default_config(&format!(
        r#"
[engine]
cache_dir = "{cache}"

[plugins.http-js]
path = "{path}"
timeout_ms = {timeout_ms}
allow_hosts = ["{allow}"]

[[routes]]
path = "/ws/http-js"
plugin = "http-js"
"#,
        cache = compile_cache().display(),
        path = js_plugin_path("http-js").display(),
    ))
}

#[tokio::test]
async fn javascript_async_handlers_answer_and_their_rejections_are_plugin_errors() {
    let broker = Broker::with_config(&javascript_config("127.0.0.1:1", 10_000));
    let mut client = broker.connect("/ws/http-js").await;

    // The handler awaits a timer: the component runs its event loop until the Promise settles.
    let started = Instant::now();
    let slept = call(&mut client, "sleep", json!({"ms": 50})).await;
    assert_eq!(slept, json!({"action": "slept", "payload": 50, "ref": "r"}));
    assert!(started.elapsed() >= Duration::from_millis(50), "answered after {:?}", started.elapsed());

    // A rejection is what a throw is: a PluginError keeps its message, any other error is named.
    let refused = call(&mut client, "reject", json!({"kind": "plugin"})).await;
    assert_eq!(
        refused,
        json!({
            "action": "error",
            "payload": [{"type": "plugin_error", "loc": ["reject"], "msg": "refused after an await"}],
            "ref": "r",
        })
    );
    let type_error = call(&mut client, "reject", json!({"kind": "type"})).await;
    assert_eq!(type_error["payload"][0]["type"], "plugin_error", "{type_error}");
    assert!(type_error["payload"][0]["msg"].as_str().unwrap().starts_with("TypeError: "), "{type_error}");

    // Neither was a crash: the instance serves on.
    assert_eq!(call(&mut client, "sleep", json!({"ms": 0})).await["payload"], 0);
    client.assert_alive().await;
}

#[tokio::test]
async fn javascript_reaches_a_host_on_its_allow_list() {
    let server = TestServer::start().await;
    let broker = Broker::with_config(&javascript_config(&server.addr.to_string(), 10_000));
    let mut client = broker.connect("/ws/http-js").await;

    let hello = call(&mut client, "fetch", json!({"url": server.url("/hello"), "timeout_ms": 5000})).await;
    assert_eq!(hello["action"], "fetched", "{hello}");
    assert_eq!((&hello["payload"]["status"], &hello["payload"]["body"]), (&json!(200), &json!("hello")));
    assert_eq!(hello["payload"]["headers"]["x-test"], "yes", "{hello}");

    // A status that is not 2xx is a response, not an error.
    let missing = call(&mut client, "fetch", json!({"url": server.url("/missing")})).await;
    assert_eq!((&missing["payload"]["status"], &missing["payload"]["body"]), (&json!(404), &json!("nope")));

    // The JSON helper: the body goes out as JSON (UTF-8 as is), the answer comes back decoded.
    let posted = call(&mut client, "post_json", json!({"url": server.url("/echo")})).await;
    assert_eq!(posted["payload"], json!({"status": 201, "json": {"hello": "wörld"}}), "{posted}");

    // `fetch`, awaited in an async handler.
    let fetched = call(
        &mut client,
        "fetch_async",
        json!({"url": server.url("/echo"), "method": "POST", "headers": {"x-test": "no"}, "body": "as is"}),
    )
    .await;
    assert_eq!(fetched["payload"], json!({"status": 201, "ok": true, "header": null, "body": "as is"}), "{fetched}");
    let fetched = call(&mut client, "fetch_async", json!({"url": server.url("/hello")})).await;
    assert_eq!(fetched["payload"]["header"], "yes", "{fetched}");

    // `Promise.all` over three `fetch`es of 300 ms each: all three are in flight at once.
    let urls: Vec<String> = (0..3).map(|_| server.url("/slow/300")).collect();
    let all = call(&mut client, "fetch_all", json!({"urls": urls})).await;
    assert_eq!(all["payload"], json!(["slow 300", "slow 300", "slow 300"]), "{all}");
    assert!(server.seen.peak.load(Ordering::SeqCst) >= 2, "the requests were made one after the other");
    // `timeoutMs` gives up on a slow answer (the first byte's deadline); a timer set beside fires.
    let slow = json!({"url": server.url("/slow/2000"), "seconds": 0.3});
    let within = call(&mut client, "fetch_within", slow).await;
    assert_eq!(within["payload"], json!(["timed out", "slept"]), "{within}");
    let quick = json!({"url": server.url("/hello"), "seconds": 5});
    assert_eq!(call(&mut client, "fetch_within", quick).await["payload"], json!(["hello", "slept"]));

    // What one request costs from the client's side: a handler call and an HTTP round trip.
    let started = Instant::now();
    for _ in 0..20 {
        let hello = call(&mut client, "fetch_async", json!({"url": server.url("/hello")})).await;
        assert_eq!(hello["payload"]["status"], 200);
    }
    eprintln!("a JavaScript handler's fetch to 127.0.0.1 took {:?} on average", started.elapsed() / 20);
    client.assert_alive().await;
}

#[tokio::test]
async fn javascript_is_refused_a_host_off_its_allow_list_and_the_host_never_hears_of_it() {
    let server = TestServer::start().await;
    // Allowed: the same address on another port only.
    let broker = Broker::with_config(&javascript_config("127.0.0.1:1", 10_000));
    let mut client = broker.connect("/ws/http-js").await;
    let url = server.url("/hello");
    let denied = format!("{url}: ErrorCode::HttpRequestDenied");

    let caught = call(&mut client, "fetch_caught", json!({"url": url})).await;
    assert_eq!(
        caught,
        json!({
            "action": "failed",
            "payload": {"kinds": ["HttpError", "PluginError"], "code": "HttpRequestDenied", "message": denied},
            "ref": "r",
        })
    );
    // Let through, from `http.request` or a rejected `fetch`, it answers plugin_error with the
    // Rust SDK's words, and the plugin serves on.
    for action in ["fetch", "fetch_async"] {
        let uncaught = call(&mut client, action, json!({"url": url})).await;
        assert_eq!(
            uncaught,
            json!({"action": "error", "payload": [{"type": "plugin_error", "loc": [action], "msg": denied}], "ref": "r"})
        );
    }
    let posted = call(&mut client, "post_json", json!({"url": server.url("/echo")})).await;
    assert_eq!(posted["payload"][0]["type"], "plugin_error", "{posted}");
    assert_eq!(server.connections(), 0, "a denied request reached the server");
    assert!(broker.metric("broker_limit_hits_total{limit=\"plugins.allow_hosts\"}").await >= 4.0);
    client.assert_alive().await;
}

#[tokio::test]
async fn javascript_refuses_a_malformed_url_and_reports_a_refused_connection() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let broker = Broker::with_config(&javascript_config("127.0.0.1", 10_000));
    let mut client = broker.connect("/ws/http-js").await;

    let relative = call(&mut client, "fetch_caught", json!({"url": "/hello"})).await;
    assert_eq!(relative["payload"]["message"], "\"/hello\" is not an absolute URL", "{relative}");
    let ftp = call(&mut client, "fetch_caught", json!({"url": "ftp://127.0.0.1/x"})).await;
    assert_eq!(ftp["payload"]["message"], "unsupported scheme \"ftp\"", "{ftp}");
    let refused =
        call(&mut client, "fetch_caught", json!({"url": format!("http://127.0.0.1:{port}/"), "timeout_ms": 2000}))
            .await;
    assert_eq!(refused["payload"]["code"], "ConnectionRefused", "{refused}");
    client.assert_alive().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_waiting_on_a_server_that_never_answers_times_out_while_the_plugin_serves_others() {
    let silent = Silent::start().await;
    let server = TestServer::start().await;
    let timeout = Duration::from_millis(1500);
    let broker = Broker::with_config(&javascript_config("127.0.0.1", timeout.as_millis() as u64));
    let mut waiting = broker.connect("/ws/http-js").await;
    let mut bystander = broker.connect("/ws/http-js").await;

    // An async handler awaiting `fetch` with no timeout of its own: only the plugin's deadline
    // can end this call.
    let asked = Instant::now();
    let url = format!("http://{}/", silent.addr);
    waiting.send(json!({"action": "fetch_async", "payload": {"url": url}, "ref": "w"})).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..5 {
        let hello = call(&mut bystander, "fetch", json!({"url": server.url("/hello")})).await;
        assert_eq!(hello["payload"]["status"], 200, "{hello}");
    }
    assert!(asked.elapsed() < timeout, "the bystander waited for the silent server: {:?}", asked.elapsed());

    let timed_out = waiting.recv().await;
    let elapsed = asked.elapsed();
    eprintln!("a JavaScript call waiting on a silent server ended after {elapsed:?} (timeout_ms {timeout:?})");
    assert_eq!(timed_out["ref"], "w", "{timed_out}");
    assert_eq!(timed_out["payload"][0]["type"], "plugin_timeout", "{timed_out}");
    assert!(elapsed >= timeout && elapsed < timeout + Duration::from_secs(2), "ended after {elapsed:?}");

    // The connection and the plugin serve on.
    let hello = call(&mut waiting, "fetch_async", json!({"url": server.url("/hello")})).await;
    assert_eq!(hello["payload"]["status"], 200, "{hello}");
}

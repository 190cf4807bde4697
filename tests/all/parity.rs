//! SDK parity: the same plugin written with the Rust, Python and JavaScript SDKs (the testbed,
//! tests/polyglot/parity-py and parity-js, sharing one namespace) means the same thing by the
//! same words, fails the same way and is documented the same way.

use serde_json::{Value, json};

use crate::harness::{Broker, Client, compile_cache, default_config, js_plugin_path, plugin_path, py_plugin_path};

/// The languages, in the order of `parity_config`'s routes (`/ws/parity/{lang}`).
const LANGS: [&str; 3] = ["rust", "python", "javascript"];

/// `default_config` with the three parity plugins mounted at `/ws/parity/{lang}` in the one
/// namespace `parity`, with small state limits to run into.
fn parity_config() -> String {
    default_config(&format!(
        r#"
[engine]
cache_dir = "{cache}"

[state]
kv_value_bytes = 128
session_bytes = 256

[plugins.parity-rust]
path = "{rust}"
namespace = "parity"

[plugins.parity-python]
path = "{python}"
namespace = "parity"

[plugins.parity-javascript]
path = "{javascript}"
namespace = "parity"

[[routes]]
path = "/ws/parity/rust"
plugin = "parity-rust"

[[routes]]
path = "/ws/parity/python"
plugin = "parity-python"

[[routes]]
path = "/ws/parity/javascript"
plugin = "parity-javascript"
"#,
        cache = compile_cache().display(),
        rust = plugin_path("testbed").display(),
        python = py_plugin_path("parity-py").display(),
        javascript = js_plugin_path("parity-js").display(),
    ))
}

/// Sends `action` with `payload` and returns the answer's payload, which must be `action`'s.
async fn call(client: &mut Client, action: &str, payload: Value) -> Value {
    let answer = client.request(json!({"action": action, "payload": payload})).await;
    assert_eq!(answer["action"], action, "{action} {payload}: {answer}");
    answer["payload"].clone()
}

/// A JSON value with what tends to differ between encoders: nesting, a float, null, escapes and
/// non-ASCII text of every UTF-8 width.
fn sample() -> Value {
    json!({"n": 1, "text": "h\u{e9}llo \"quoted\" \u{20ac} \u{1d11e}", "list": [1, 2.5, null, true], "nested": {"a": []}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_languages_read_each_others_key_value_and_session_values_alike_raw_and_json() {
    let broker = Broker::with_config(&parity_config());
    let mut clients = Vec::new();
    for lang in LANGS {
        clients.push(broker.connect(&format!("/ws/parity/{lang}")).await);
    }
    let sample = sample();

    // Each language writes text as it is and values as JSON, under keys of its own...
    for (writer, lang) in LANGS.iter().enumerate() {
        let client = &mut clients[writer];
        call(client, "kv_set", json!({"key": format!("{lang}:raw"), "value": "plain text, not JSON"})).await;
        call(client, "kv_set", json!({"key": format!("{lang}:raw-json"), "value": "[1,2]"})).await;
        call(client, "kv_set_json", json!({"key": format!("{lang}:json"), "value": sample})).await;
        call(client, "kv_set_json", json!({"key": format!("{lang}:string"), "value": "hi"})).await;
    }
    // ... and every language reads every other's the same way.
    for lang in LANGS {
        for (reader, reader_lang) in LANGS.iter().enumerate() {
            let client = &mut clients[reader];
            let key = |suffix: &str| json!({"key": format!("{lang}:{suffix}")});
            let seen = [
                call(client, "kv_get", key("raw")).await,
                call(client, "kv_get_json", key("raw-json")).await,
                call(client, "kv_get", key("json")).await,
                call(client, "kv_get_json", key("json")).await,
                call(client, "kv_get", key("string")).await,
                call(client, "kv_get_json", key("string")).await,
                call(client, "kv_get", key("absent")).await,
                call(client, "kv_get_json", key("absent")).await,
            ];
            let expected = [
                json!("plain text, not JSON"),
                json!([1, 2]),
                json!(sample.to_string()),
                sample.clone(),
                json!("\"hi\""),
                json!("hi"),
                Value::Null,
                Value::Null,
            ];
            assert_eq!(seen, expected, "{reader_lang} reading what {lang} wrote");
        }
    }

    // Sessions are per connection: each language reads back what it set, through the same
    // accessors, the same way.
    for lang in LANGS {
        let mut client = broker.connect(&format!("/ws/parity/{lang}")).await;
        call(&mut client, "session_set", json!({"key": "raw", "value": "plain text, not JSON"})).await;
        call(&mut client, "session_set", json!({"key": "raw-json", "value": "{\"a\":[true]}"})).await;
        call(&mut client, "session_set_json", json!({"key": "json", "value": sample})).await;
        call(&mut client, "session_set_json", json!({"key": "string", "value": "hi"})).await;
        let key = |key: &str| json!({"key": key});
        let seen = [
            call(&mut client, "session_get", key("raw")).await,
            call(&mut client, "session_get_json", key("raw-json")).await,
            call(&mut client, "session_get", key("json")).await,
            call(&mut client, "session_get_json", key("json")).await,
            call(&mut client, "session_get", key("string")).await,
            call(&mut client, "session_get_json", key("string")).await,
            call(&mut client, "session_get", key("absent")).await,
            call(&mut client, "session_get_json", key("absent")).await,
        ];
        let expected = [
            json!("plain text, not JSON"),
            json!({"a": [true]}),
            json!(sample.to_string()),
            sample.clone(),
            json!("\"hi\""),
            json!("hi"),
            Value::Null,
            Value::Null,
        ];
        assert_eq!(seen, expected, "{lang}'s session");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ordinary_exception_is_a_plugin_error_in_every_language_and_takes_nothing_down() {
    let broker = Broker::with_config(&parity_config());
    for lang in LANGS {
        let route = format!("/ws/parity/{lang}");
        let mut client = broker.connect(&route).await;
        for n in 0..100 {
            let answer = client.request(json!({"action": "raise", "ref": n.to_string()})).await;
            assert_eq!(answer["action"], "error", "{lang}, call {n}: {answer}");
            assert_eq!(answer["ref"], n.to_string(), "{lang}: {answer}");
            let [problem] = answer["payload"].as_array().map(Vec::as_slice).unwrap_or_default() else {
                panic!("{lang}: one problem expected: {answer}");
            };
            assert_eq!((&problem["type"], &problem["loc"]), (&json!("plugin_error"), &json!(["raise"])), "{lang}");
            assert!(problem["msg"].as_str().is_some_and(|msg| !msg.is_empty()), "{lang}: {answer}");
        }
        // The client that raised is still served, and so is anyone else, at once.
        client.assert_alive().await;
        assert_eq!(call(&mut client, "kv_get", json!({"key": "absent"})).await, Value::Null, "{lang}");
        let mut other = broker.connect(&route).await;
        assert_eq!(call(&mut other, "kv_get", json!({"key": "absent"})).await, Value::Null, "{lang}");

        let plugin = format!("parity-{lang}");
        let errors = format!("broker_plugin_errors_total{{plugin=\"{plugin}\",kind=\"error\"}}");
        assert_eq!(broker.metric(&errors).await, 100.0, "{lang}");
        let (_, metrics) = broker.http("GET", "/metrics", None, "").await;
        let crashed = format!("broker_plugin_errors_total{{plugin=\"{plugin}\",kind=\"crashed\"}}");
        assert!(!metrics.contains(&crashed), "{lang}: nothing trapped:\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_host_failure_gives_the_same_frame_in_every_language() {
    let broker = Broker::with_config(&parity_config());
    let failures = [
        (
            "kv_set",
            json!({"key": "big", "value": "x".repeat(200)}),
            "a value of 200 bytes is over state.kv_value_bytes (128)",
        ),
        (
            "kv_set_json",
            json!({"key": "big", "value": "x".repeat(198)}),
            "a value of 200 bytes is over state.kv_value_bytes (128)",
        ),
        (
            "session_set",
            json!({"key": "big", "value": "x".repeat(300)}),
            "the session would hold 303 bytes, over state.session_bytes (256)",
        ),
        (
            "send_to",
            json!({"connection": 999_999_999u64, "frame": {"action": "hello"}}),
            "connection 999999999 is closed",
        ),
    ];
    for (action, payload, msg) in failures {
        let mut frames = Vec::new();
        for lang in LANGS {
            let mut client = broker.connect(&format!("/ws/parity/{lang}")).await;
            frames.push(client.request(json!({"action": action, "payload": payload, "ref": "r"})).await);
        }
        let expected = json!({
            "action": "error",
            "payload": [{"type": "plugin_error", "loc": [action], "msg": msg}],
            "ref": "r",
        });
        assert_eq!(frames, [expected.clone(), expected.clone(), expected], "{action}: rust, python, javascript");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maps_enums_literals_and_raw_frames_are_declared_alike_in_every_language() {
    let broker = Broker::with_config(&parity_config());
    let valid = json!({"flags": {"a": true, "b": false}, "kind": "fancy", "only": "only"});
    let invalid = [
        json!({"flags": {"a": 1}, "kind": "plain", "only": "only"}),
        json!({"flags": [], "kind": "odd", "only": "other"}),
        json!({"flags": {}, "kind": 5, "only": null}),
    ];
    let mut answers: Vec<Vec<Value>> = Vec::new();
    for lang in LANGS {
        let mut client = broker.connect(&format!("/ws/parity/{lang}")).await;
        let mut seen = vec![client.request(json!({"action": "typed", "payload": valid})).await];
        for payload in &invalid {
            let answer = client.request(json!({"action": "typed", "payload": payload})).await;
            // Refused by the schema at the edge: a `{}` schema would let it reach the handler.
            assert_eq!(answer["action"], "error", "{lang}: {payload} was not refused: {answer}");
            assert!(answer["payload"].as_array().is_some_and(|p| !p.is_empty()), "{answer}");
            seen.push(answer);
        }
        answers.push(seen);
    }
    assert_eq!(answers[0][0], json!({"action": "typed", "payload": valid}));
    assert_eq!(answers[1], answers[0], "python and rust");
    assert_eq!(answers[2], answers[0], "javascript and rust");

    // Each declares the frame it sends outside the envelope, with the same fields.
    let (status, body) = broker.http("GET", "/asyncapi.json", None, "").await;
    assert_eq!(status, 200, "{body}");
    let doc: Value = serde_json::from_str(&body).expect("JSON");
    for lang in LANGS {
        let channel = doc["channels"]
            .as_object()
            .and_then(|channels| channels.values().find(|c| c["address"] == format!("/ws/parity/{lang}")))
            .unwrap_or_else(|| panic!("no channel for {lang}"));
        let messages = resolve(&doc, &channel["messages"]).as_object().cloned().unwrap_or_default();
        let raw = messages.values().map(|message| resolve(&doc, &resolve(&doc, message)["payload"]).clone()).find(
            |payload| payload["properties"]["status"].is_object() && payload["properties"].get("action").is_none(),
        );
        let raw = raw.unwrap_or_else(|| panic!("{lang}: no raw frame `status` among {messages:?}"));
        assert_eq!(raw["properties"]["status"]["type"], "string", "{lang}: {raw}");
        assert_eq!(raw["properties"]["done"]["type"], "boolean", "{lang}: {raw}");
        assert_eq!(raw["required"], json!(["status", "done"]), "{lang}: {raw}");
    }
}

/// `value`, or what its `$ref` (a local JSON pointer, `#/components/...`) points at, followed to the end.
fn resolve<'a>(doc: &'a Value, mut value: &'a Value) -> &'a Value {
    while let Some(target) = value.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix('#')) {
        value = doc.pointer(target).unwrap_or(&Value::Null);
    }
    value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_language_reads_a_groups_history_alike() {
    let mut config = parity_config();
    for lang in LANGS {
        config.push_str(&format!("\n[plugins.parity-{lang}.history]\nsize = 100\nttl_ms = 60000\n"));
    }
    let broker = Broker::with_config(&config);
    let mut writer = broker.connect("/ws/parity/rust").await;
    let mut member = broker.connect("/ws/parity/rust").await;
    member.send(json!({"action": "join", "payload": {"group": "g"}})).await;
    member.assert_alive().await;
    let mut received = Vec::new();
    for i in 1..=3 {
        let frame = json!({"action": "tick", "payload": {"i": i}});
        writer.request(json!({"action": "broadcast", "payload": {"group": "g", "frame": frame}})).await;
        received.push(member.recv().await);
    }
    let reads = [
        json!({"group": "g", "limit": 2}),
        json!({"group": "g", "after": 0, "limit": 1}),
        json!({"group": "g", "after": 3, "limit": 10}),
        json!({"group": "quiet", "limit": 10}),
    ];
    let mut pages = Vec::new();
    for lang in LANGS {
        let mut client = broker.connect(&format!("/ws/parity/{lang}")).await;
        let mut answers = Vec::new();
        for read in &reads {
            answers.push(call(&mut client, "history_read", read.clone()).await);
        }
        pages.push((lang, answers));
    }
    let (_, rust) = &pages[0];
    let newest: Vec<(u64, Value)> = rust[0]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["offset"].as_u64().unwrap(), serde_json::from_str(e["frame"].as_str().unwrap()).unwrap()))
        .collect();
    assert_eq!(newest, vec![(2, received[1].clone()), (3, received[2].clone())]);
    assert_eq!((rust[0]["epoch"].as_str(), rust[0]["offset"].as_u64()), (received[0]["epoch"].as_str(), Some(3)));
    for (lang, answers) in &pages[1..] {
        assert_eq!(answers, rust, "{lang} reads the history otherwise than Rust");
    }

    // A namespace without history: the same error in every language, but for the plugin named.
    let plain = Broker::with_config(&parity_config());
    let mut errors = Vec::new();
    for lang in LANGS {
        let mut client = plain.connect(&format!("/ws/parity/{lang}")).await;
        let error = client.request(json!({"action": "history_read", "payload": {"group": "g", "limit": 1}})).await;
        assert_eq!(error["payload"][0]["type"], "plugin_error", "{lang}: {error}");
        errors.push(error.to_string().replace(&format!("parity-{lang}"), "parity-<lang>"));
    }
    assert!(errors[0].contains("keeps no group history"), "{}", errors[0]);
    assert!(errors.iter().all(|e| *e == errors[0]), "{errors:?}");
}

/// A model for `the_assistant_reads_a_models_tool_arguments_alike_in_rust_and_python`: asked
/// first, it calls the tools `calls` lists; asked again (with their answers), it says `done`.
/// Records what it was asked.
struct ArgumentModel {
    addr: std::net::SocketAddr,
    asked: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ArgumentModel {
    async fn start(calls: Value) -> ArgumentModel {
        use http_body_util::{BodyExt, Full};
        use hyper::body::Bytes;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let recorded = asked.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (calls, recorded) = (calls.clone(), recorded.clone());
                let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let (calls, recorded) = (calls.clone(), recorded.clone());
                    async move {
                        let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        let answered =
                            body["messages"].as_array().and_then(|m| m.last()).is_some_and(|m| m["role"] == "tool");
                        recorded.lock().unwrap().push(body);
                        let message = if answered {
                            json!({"role": "assistant", "content": "done"})
                        } else {
                            json!({"role": "assistant", "content": "", "tool_calls": calls})
                        };
                        let reply = json!({"choices": [{"index": 0, "message": message}]}).to_string();
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from(reply))))
                    }
                });
                tokio::spawn(async move {
                    let io = hyper_util::rt::TokioIo::new(tcp);
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                });
            }
        });
        ArgumentModel { addr, asked, task }
    }
}

impl Drop for ArgumentModel {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The Python assistant (plugins/assistant-py) reads a model's tool arguments with the Rust
/// build's serde types re-created over the same rules (its `serde_json.py`): whatever a model
/// sends, good or malformed, the client gets the same frames, word for word (serde_json's
/// messages, positions included), and the model is told the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_assistant_reads_a_models_tool_arguments_alike_in_rust_and_python() {
    let arguments: &[(&str, &str)] = &[
        ("get_menu", ""),
        ("get_menu", r#"{"x": 1}"#),
        ("get_menu", "null"),
        ("get_price", "{not json"),
        ("get_price", r#"{"item": "margherita"}"#),
        ("get_price", r#"{"item": 5, "size": "large"}"#),
        ("get_price", r#"["pepperoni", "small"]"#),
        ("get_price", r#"["pepperoni"]"#),
        ("get_price", r#"{"item": "calzone", "size": "large"}"#),
        ("get_price", r#"{"item": " VEGGIE ", "size": "XL"}"#),
        ("get_price", r#"{"item": "margherita", "size": "large", "size": "small"}"#),
        ("get_price", "{\"item\": \"margherita\",\n \"size\": \"large\",}"),
        ("get_price", "{\"item\": \"a\u{1}b\", \"size\": \"large\"}"),
        ("get_price", r#"{"item": "margherita", "size": "large"} and more"#),
        ("get_price", r#"{"item": "\u00e9\ud83d\ude00", "size": "large"}"#),
        ("place_order", r#"{"items": []}"#),
        ("place_order", r#"{"items": {}}"#),
        ("place_order", r#"{"items": [{"item": "margherita", "size": "small", "quantity": -1}]}"#),
        ("place_order", r#"{"items": [{"item": "margherita", "size": "small", "quantity": 2.5}]}"#),
        ("place_order", r#"{"items": [{"item": "margherita", "size": "small", "quantity": "2"}]}"#),
        ("place_order", r#"{"items": [{"item": "margherita", "size": "small", "quantity": 99999999999999999999}]}"#),
        ("place_order", r#"{"items": [{"item": "margherita", "size": "small", "quantity": null}]}"#),
        ("place_order", r#"{"items": [{"item": "margherita", "size": "small", "extra": true}]}"#),
        ("place_order", r#"{"items": [{"item": "margherita"}]}"#),
        ("place_order", r#"{"items": [{"item": "margherita", "size": "small", "quantity": 0}]}"#),
        ("place_order", r#"{"items": [{"item": "pizza", "size": "small"}]}"#),
        ("place_order", r#"{"items": [["hawaiian", "large", 2], {"item": "Veggie", "size": " Small "}]}"#),
        ("order_status", r#"{"order_id": null}"#),
        ("order_status", r#"{"order_id": " ord-0001 "}"#),
        ("order_status", "{}"),
        ("bake_cake", "{}"),
    ];
    let calls: Vec<Value> = arguments
        .iter()
        .enumerate()
        .map(|(n, (name, args))| json!({"id": format!("c{n}"), "type": "function", "function": {"name": name, "arguments": args}}))
        .collect();
    let mut seen = Vec::new();
    for (lang, path) in [("rust", plugin_path("assistant")), ("python", py_plugin_path("assistant-py"))] {
        let model = ArgumentModel::start(json!(calls)).await;
        let config = default_config(&format!(
            r#"
[engine]
cache_dir = "{cache}"

[plugins.pizza]
path = "{path}"
timeout_ms = 30000
allow_hosts = ["{addr}"]

[plugins.pizza.settings.llm]
base_url = "http://{addr}/v1"
model = "arguments"

[[routes]]
path = "/ws/pizza"
plugin = "pizza"
"#,
            cache = compile_cache().display(),
            path = path.display(),
            addr = model.addr,
        ));
        let broker = Broker::with_config(&config);
        let mut client = crate::assistant::assistant(&broker, "/ws/pizza").await;
        let frames = crate::assistant::ask(&mut client, "do everything").await;
        let asked = model.asked.lock().unwrap().clone();
        assert_eq!(asked.len(), 2, "{lang}: {frames:?}");
        let told: Vec<Value> =
            asked[1]["messages"].as_array().unwrap().iter().filter(|m| m["role"] == "tool").cloned().collect();
        seen.push((lang, frames, told));
    }
    let (_, rust_frames, rust_told) = &seen[0];
    assert_eq!(rust_frames.len(), arguments.len() + 2, "{rust_frames:?}");
    for (lang, frames, told) in &seen[1..] {
        for (n, (rust, other)) in rust_frames.iter().zip(frames).enumerate() {
            assert_eq!(other, rust, "{lang}, frame {n} (tool call {:?})", arguments.get(n.wrapping_sub(1)));
        }
        assert_eq!(frames.len(), rust_frames.len(), "{lang}");
        assert_eq!(told, rust_told, "{lang}: the model is told otherwise");
    }
}

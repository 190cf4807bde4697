//! The pizza assistant: staged replies, tools, host state, and an LLM reached through the
//! allow-list. The LLM is a scripted OpenAI-compatible server the test runs on 127.0.0.1.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use serde_json::{Value, json};

use crate::harness::{Broker, Client, default_config, eventually};

/// One answer of the scripted model.
struct Scripted {
    status: u16,
    body: Value,
    delay: Duration,
}

fn answer(content: &str) -> Scripted {
    let message = json!({"role": "assistant", "content": content});
    Scripted { status: 200, body: json!({"choices": [{"index": 0, "message": message}]}), delay: Duration::ZERO }
}

fn tool_calls(content: &str, calls: &[(&str, &str, &str)]) -> Scripted {
    let calls: Vec<Value> = calls
        .iter()
        .map(|(id, name, arguments)| json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}))
        .collect();
    let message = json!({"role": "assistant", "content": content, "tool_calls": calls});
    Scripted { status: 200, body: json!({"choices": [{"index": 0, "message": message}]}), delay: Duration::ZERO }
}

/// What the scripted model was sent: the `Authorization` header and the JSON body.
type Recorded = Arc<Mutex<Vec<(Option<String>, Value)>>>;

/// An OpenAI-compatible server that answers from a script and records what it was asked.
struct ScriptedLlm {
    addr: SocketAddr,
    requests: Recorded,
    server: tokio::task::JoinHandle<()>,
}

impl ScriptedLlm {
    async fn start(script: Vec<Scripted>) -> ScriptedLlm {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let requests: Recorded = Arc::default();
        let recorded = requests.clone();
        let server = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (script, recorded) = (script.clone(), recorded.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                        let (script, recorded) = (script.clone(), recorded.clone());
                        async move {
                            let auth =
                                request.headers().get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned);
                            let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            recorded.lock().unwrap().push((auth, serde_json::from_slice(&body).unwrap_or(Value::Null)));
                            let next = script.lock().unwrap().pop_front();
                            let next = next.unwrap_or(Scripted {
                                status: 500,
                                body: json!({"error": "script ended"}),
                                delay: Duration::ZERO,
                            });
                            tokio::time::sleep(next.delay).await;
                            let mut response = Response::new(Full::new(Bytes::from(next.body.to_string())));
                            *response.status_mut() = hyper::StatusCode::from_u16(next.status).unwrap();
                            response.headers_mut().insert("content-type", "application/json".parse().unwrap());
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let io = hyper_util::rt::TokioIo::new(tcp);
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                });
            }
        });
        ScriptedLlm { addr, requests, server }
    }

    fn requests(&self) -> Vec<(Option<String>, Value)> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for ScriptedLlm {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The default config plus an `assistant-llm` plugin at `/ws/assistant-llm` using `base_url`.
fn llm_config(base_url: &str, allow: &str, timeout_ms: u64) -> String {
    default_config(&format!(
        r#"
[plugins.assistant-llm]
path = "{}"
timeout_ms = 30000
allow_hosts = ["{allow}"]
env = ["ASSISTANT_TEST_KEY"]

[plugins.assistant-llm.settings.llm]
base_url = "{base_url}"
model = "scripted"
api_key_env = "ASSISTANT_TEST_KEY"
timeout_ms = {timeout_ms}

[[routes]]
path = "/ws/assistant-llm"
plugin = "assistant-llm"
"#,
        crate::harness::plugin_path("assistant").display()
    ))
}

fn start_with_llm(llm: &ScriptedLlm, timeout_ms: u64) -> Broker {
    let base = format!("http://{}/v1", llm.addr);
    Broker::launch(&llm_config(&base, &llm.addr.to_string(), timeout_ms), &[], &[("ASSISTANT_TEST_KEY", "test-secret")])
}

/// Connects to an assistant route and checks the welcome frame.
pub(crate) async fn assistant(broker: &Broker, path: &str) -> Client {
    let mut client = broker.connect(path).await;
    let welcome = client.recv().await;
    assert_eq!((welcome["status"].as_str(), welcome["type"].as_str()), (Some("success"), Some("welcome")), "{welcome}");
    client
}

/// Sends a user message and collects the frames up to the final response (or an exception).
pub(crate) async fn ask(client: &mut Client, message: &str) -> Vec<Value> {
    client.send(json!({"action": "user_message", "payload": {"message": message}})).await;
    let mut frames = Vec::new();
    loop {
        let frame = client.recv().await;
        let done = frame["stage"] == "final_response" || frame["type"] == "exception";
        frames.push(frame);
        if done {
            return frames;
        }
    }
}

/// The `stage` (or `type`) of each frame, with the tool where there is one.
fn stages(frames: &[Value]) -> Vec<String> {
    frames
        .iter()
        .map(|f| {
            let stage = f["stage"].as_str().or(f["type"].as_str()).unwrap_or("?");
            match f["tool"].as_str() {
                Some(tool) => format!("{stage}:{tool}"),
                None => stage.to_owned(),
            }
        })
        .collect()
}

#[tokio::test]
async fn without_a_model_the_planner_answers_menu_price_order_and_status() {
    let broker = Broker::start();
    let mut client = assistant(&broker, "/ws/assistant").await;

    let menu = ask(&mut client, "What pizzas do you have?").await;
    assert_eq!(stages(&menu), ["initial_response", "tool_result:get_menu", "final_response"]);
    assert!(menu[1]["response"].as_str().unwrap().contains("Margherita: small $8.99"), "{}", menu[1]);
    assert!(menu[2]["content"].as_str().unwrap().starts_with("## Our menu"), "{}", menu[2]);

    let price = ask(&mut client, "How much is a large pepperoni?").await;
    assert_eq!(stages(&price), ["initial_response", "tool_result:get_price", "final_response"]);
    assert_eq!(price[1]["response"], "Pepperoni (large): $15.99");

    let order = ask(&mut client, "I'd like to order 2 small Hawaiian").await;
    assert_eq!(stages(&order), ["initial_response", "tool_result:place_order", "final_response"]);
    let placed: Value = serde_json::from_str(order[1]["response"].as_str().unwrap()).unwrap();
    assert_eq!(placed["total"], "$20.98");
    let id = placed["order_id"].as_str().unwrap().to_owned();
    assert!(order[2]["content"].as_str().unwrap().contains(&id));

    // The order lives in the plugin's key-value store: another connection finds it by id.
    let mut other = assistant(&broker, "/ws/assistant").await;
    let status = ask(&mut other, &format!("What is the status of {id}?")).await;
    assert_eq!(stages(&status), ["initial_response", "tool_result:order_status", "final_response"]);
    assert!(status[1]["response"].as_str().unwrap().contains("received"), "{}", status[1]);
    // ... and the first connection's session remembers its last order.
    let mine = ask(&mut client, "Where is my order?").await;
    assert!(mine[1]["response"].as_str().unwrap().contains(&id), "{}", mine[1]);

    let missing = ask(&mut other, "status of ORD-9999").await;
    assert_eq!(stages(&missing), ["initial_response", "tool_exec:order_status", "final_response"]);
}

#[tokio::test]
async fn exit_says_goodbye_and_closes_normally() {
    let broker = Broker::start();
    let mut client = assistant(&broker, "/ws/assistant").await;
    client.send(json!({"action": "exit"})).await;
    let goodbye = client.recv().await;
    assert_eq!((goodbye["status"].as_str(), goodbye["type"].as_str()), (Some("success"), Some("goodbye")));
    assert_eq!(client.recv_close().await.0, 1000);
}

#[tokio::test]
async fn the_model_picks_tools_and_the_broker_sends_what_it_asked_for() {
    let llm = ScriptedLlm::start(vec![
        tool_calls("Let me look that up.", &[("call_1", "get_price", r#"{"item": "margherita", "size": "large"}"#)]),
        answer("A **large Margherita** is $14.99."),
    ])
    .await;
    let broker = start_with_llm(&llm, 5000);
    let mut client = assistant(&broker, "/ws/assistant-llm").await;
    let frames = ask(&mut client, "Price of a large margherita?").await;
    assert_eq!(stages(&frames), ["initial_response", "tool_result:get_price", "final_response"]);
    assert_eq!(frames[0]["content"], "Let me look that up.");
    assert_eq!(frames[1]["response"], "Margherita (large): $14.99");
    assert_eq!(frames[2]["content"], "A **large Margherita** is $14.99.");

    let requests = llm.requests();
    assert_eq!(requests.len(), 2);
    // The API key reached the plugin from the broker's environment, and the model through it.
    assert_eq!(requests[0].0.as_deref(), Some("Bearer test-secret"));
    let first = &requests[0].1;
    assert_eq!(first["model"], "scripted");
    assert_eq!(first["messages"].as_array().unwrap().last().unwrap()["content"], "Price of a large margherita?");
    assert_eq!(first["tools"].as_array().unwrap().len(), 4);
    // The second request carries the tool's answer for the call the model made.
    let tool_message =
        requests[1].1["messages"].as_array().unwrap().iter().find(|m| m["role"] == "tool").cloned().unwrap();
    assert_eq!(
        tool_message,
        json!({"role": "tool", "tool_call_id": "call_1", "content": "Margherita (large): $14.99"})
    );
}

#[tokio::test]
async fn each_fault_has_its_error_stage_and_the_connection_stays_usable() {
    let llm = ScriptedLlm::start(vec![
        tool_calls(
            "",
            &[
                ("c1", "bake_cake", "{}"),
                ("c2", "get_price", "{not json"),
                ("c3", "get_price", r#"{"item": "margherita"}"#),
                ("c4", "get_price", r#"{"item": "calzone", "size": "large"}"#),
            ],
        ),
        answer("Sorry, some of that did not work."),
        Scripted { status: 500, body: json!({"error": "overloaded"}), delay: Duration::ZERO },
        Scripted { status: 200, body: answer("too late").body, delay: Duration::from_secs(3) },
    ])
    .await;
    let broker = start_with_llm(&llm, 1000);
    let mut client = assistant(&broker, "/ws/assistant-llm").await;
    let frames = ask(&mut client, "do things").await;
    assert_eq!(
        stages(&frames),
        [
            "initial_response",
            "tool_missing:bake_cake",
            "tool_args:get_price",
            "tool_args:get_price",
            "tool_exec:get_price",
            "final_response"
        ]
    );
    assert!(frames[4]["error"].as_str().unwrap().contains("calzone"), "{}", frames[4]);
    assert!(frames.iter().skip(1).take(4).all(|f| f["status"] == "error"));

    let failed = ask(&mut client, "hello?").await;
    assert_eq!(stages(&failed), ["exception"]);
    assert!(failed[0]["message"].as_str().unwrap().contains("500"), "{}", failed[0]);
    client.assert_alive().await;

    let timed_out = ask(&mut client, "anyone?").await;
    assert_eq!(stages(&timed_out), ["exception"], "a model slower than timeout_ms");
    client.assert_alive().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_model_delays_no_other_connection() {
    let llm = ScriptedLlm::start(vec![Scripted { delay: Duration::from_secs(2), ..answer("Here you are.") }]).await;
    let broker = start_with_llm(&llm, 10_000);
    let mut waiting = assistant(&broker, "/ws/assistant-llm").await;
    let mut echo = broker.echo_client().await;
    let mut alice = broker.connect("/ws/chat/slow-model").await;
    let mut bob = broker.connect("/ws/chat/slow-model").await;
    alice.assert_alive().await;
    bob.assert_alive().await;

    let asked = Instant::now();
    waiting.send(json!({"action": "user_message", "payload": {"message": "hi"}})).await;
    for n in 0..20 {
        let reply = echo.request(json!({"action": "user_message", "payload": {"message": n.to_string()}})).await;
        assert_eq!(reply["payload"]["message"], format!("🔧 System Echo: {n}"));
        alice.send(json!({"action": "new_chat_message", "payload": {"message": n.to_string(), "name": "A"}})).await;
        assert_eq!(bob.recv().await["payload"]["message"], n.to_string());
    }
    let others_done = asked.elapsed();
    let first = waiting.recv().await;
    let model_answered = asked.elapsed();
    assert_eq!(first["stage"], "initial_response");
    eprintln!("40 echo and chat round trips took {others_done:?} while the model took {model_answered:?}");
    assert!(others_done < Duration::from_secs(2), "other connections waited for the model: {others_done:?}");
    assert!(model_answered >= Duration::from_secs(2));
}

#[tokio::test]
async fn a_host_off_the_allow_list_is_never_contacted() {
    let forbidden = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    forbidden.set_nonblocking(true).unwrap();
    let base = format!("http://{}/v1", forbidden.local_addr().unwrap());
    let broker = Broker::launch(&llm_config(&base, "127.0.0.1:1", 2000), &[], &[("ASSISTANT_TEST_KEY", "k")]);
    let mut client = assistant(&broker, "/ws/assistant-llm").await;
    let frames = ask(&mut client, "menu please").await;
    assert_eq!(stages(&frames), ["exception"]);
    assert!(frames[0]["message"].as_str().unwrap().contains("Denied"), "{}", frames[0]);
    // The plugin was refused before any connection: nothing is waiting to be accepted.
    let accepted = forbidden.accept();
    assert!(matches!(&accepted, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock), "{accepted:?}");
    client.assert_alive().await;
}

/// The default config with `[plugins.assistant.settings.orders]` set to `orders` (TOML lines) and
/// `extra` appended.
fn orders_config(orders: &str, extra: &str) -> String {
    default_config(&format!("{extra}\n[plugins.assistant.settings.orders]\n{orders}\n"))
}

/// The order a `tool_result` of `place_order` answered.
fn placed(frames: &[Value]) -> Value {
    assert_eq!(stages(frames), ["initial_response", "tool_result:place_order", "final_response"], "{frames:?}");
    serde_json::from_str(frames[1]["response"].as_str().unwrap()).unwrap()
}

#[tokio::test]
async fn a_quantity_past_the_bounds_is_refused_as_bad_arguments_and_nothing_is_stored() {
    let broker = Broker::start();
    let mut client = assistant(&broker, "/ws/assistant").await;
    // 3368133419 × $8.99 wraps a u32 to one cent; a number past u64 must not become "one pizza".
    for message in [
        "I'd like 3368133419 small Margherita",
        "I'd like 51 small Margherita",
        "order 99999999999999999999999 large Veggie",
    ] {
        let frames = ask(&mut client, message).await;
        assert_eq!(
            stages(&frames),
            ["initial_response", "tool_args:place_order", "final_response"],
            "{message}: {frames:?}"
        );
        assert_eq!(frames[1]["status"], "error");
        assert!(frames[1]["error"].as_str().unwrap().contains("between 1 and 50"), "{}", frames[1]);
        assert_eq!(frames[2]["content"], "I could not place that order.");
    }
    let status = ask(&mut client, "status of ORD-0001").await;
    assert_eq!(stages(&status), ["initial_response", "tool_exec:order_status", "final_response"], "{status:?}");
    // Nothing was stored, not even an order number: the first good order is ORD-0001.
    let order = placed(&ask(&mut client, "I'd like 50 large Hawaiian").await);
    assert_eq!((order["order_id"].as_str(), order["total"].as_str()), (Some("ORD-0001"), Some("$824.50")));
}

#[tokio::test]
async fn a_model_asking_for_too_many_pizzas_or_lines_gets_tool_args() {
    let line = |quantity: u64| json!({"item": "margherita", "size": "small", "quantity": quantity});
    let eleven_lines = json!({"items": vec![line(1); 11]}).to_string();
    let huge = json!({"items": [line(3_368_133_419)]}).to_string();
    let too_many = json!({"items": [line(1), line(51)]}).to_string();
    let none = json!({"items": [line(0)]}).to_string();
    let llm = ScriptedLlm::start(vec![
        tool_calls(
            "",
            &[
                ("c1", "place_order", &huge),
                ("c2", "place_order", &too_many),
                ("c3", "place_order", &none),
                ("c4", "place_order", &eleven_lines),
                ("c5", "order_status", r#"{"order_id": "ORD-0001"}"#),
            ],
        ),
        answer("None of that could be ordered."),
    ])
    .await;
    let broker = start_with_llm(&llm, 5000);
    let mut client = assistant(&broker, "/ws/assistant-llm").await;
    let frames = ask(&mut client, "lots of pizza").await;
    assert_eq!(
        stages(&frames),
        [
            "initial_response",
            "tool_args:place_order",
            "tool_args:place_order",
            "tool_args:place_order",
            "tool_args:place_order",
            "tool_exec:order_status",
            "final_response"
        ],
        "{frames:?}"
    );
    assert!(frames[4]["error"].as_str().unwrap().contains("at most 10 lines"), "{}", frames[4]);
    // The model is told why, in the tool's answer.
    let requests = llm.requests();
    let told: Vec<&Value> =
        requests[1].1["messages"].as_array().unwrap().iter().filter(|m| m["role"] == "tool").collect();
    assert!(told[0]["content"].as_str().unwrap().contains("between 1 and 50"), "{told:?}");
}

#[tokio::test]
async fn one_connection_past_its_order_quota_is_refused_and_another_still_orders() {
    let broker = Broker::with_config(&orders_config("max_per_client = 3", ""));
    let mut greedy = assistant(&broker, "/ws/assistant").await;
    for n in 1..=3 {
        let order = placed(&ask(&mut greedy, "I'd like 1 small Margherita").await);
        assert_eq!(order["order_id"], format!("ORD-000{n}"));
    }
    for _ in 0..2 {
        let refused = ask(&mut greedy, "I'd like 1 small Margherita").await;
        assert_eq!(stages(&refused), ["initial_response", "tool_exec:place_order", "final_response"], "{refused:?}");
        let error = refused[1]["error"].as_str().unwrap();
        assert!(error.contains("at most 3 orders") && error.contains("max_per_client"), "{error}");
    }
    // The refusals stored nothing, and the quota is the connection's, not the shop's.
    let mut other = assistant(&broker, "/ws/assistant").await;
    assert_eq!(placed(&ask(&mut other, "I'd like 2 large Veggie").await)["order_id"], "ORD-0004");
    greedy.assert_alive().await;
}

#[tokio::test]
async fn an_authenticated_user_has_one_quota_over_all_its_connections() {
    const SECRET: &str = "assistant-test-secret";
    let extra = format!(
        r#"
[[routes]]
path = "/ws/assistant-auth"
plugin = "assistant"
auth = "optional"

[auth]
hs256_secret = "{SECRET}"
audience = ["assistant-tests"]
"#
    );
    let broker = Broker::with_config(&orders_config("max_per_client = 2", &extra));
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 600;
    let token = |sub: &str| {
        let claims = json!({"sub": sub, "exp": exp, "aud": "assistant-tests"});
        let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
        jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
    };
    let ada = format!("/ws/assistant-auth?token={}", token("ada"));
    let mut first = assistant(&broker, &ada).await;
    let mut second = assistant(&broker, &ada).await;
    placed(&ask(&mut first, "I'd like 1 small Pepperoni").await);
    placed(&ask(&mut second, "I'd like 1 small Pepperoni").await);
    for client in [&mut first, &mut second, &mut assistant(&broker, &ada).await] {
        let refused = ask(client, "I'd like 1 small Pepperoni").await;
        assert_eq!(stages(&refused), ["initial_response", "tool_exec:place_order", "final_response"], "{refused:?}");
        assert!(refused[1]["error"].as_str().unwrap().contains("\"ada\" may place at most 2 orders"), "{}", refused[1]);
    }
    let mut grace = assistant(&broker, &format!("/ws/assistant-auth?token={}", token("grace"))).await;
    placed(&ask(&mut grace, "I'd like 1 small Pepperoni").await);
    let mut anonymous = assistant(&broker, "/ws/assistant-auth").await;
    placed(&ask(&mut anonymous, "I'd like 1 small Pepperoni").await);
}

#[tokio::test]
async fn an_order_expires_after_its_ttl() {
    let broker = Broker::with_config(&orders_config("ttl_s = 1", ""));
    let mut client = assistant(&broker, "/ws/assistant").await;
    let placed_at = Instant::now();
    let id = placed(&ask(&mut client, "I'd like 1 small Margherita").await)["order_id"].as_str().unwrap().to_owned();
    let (client, id) = (&tokio::sync::Mutex::new(client), &id);
    let status = || async move { stages(&ask(&mut *client.lock().await, &format!("status of {id}")).await) };
    assert_eq!(status().await, ["initial_response", "tool_result:order_status", "final_response"]);
    eventually("the order expired", || async move {
        status().await == ["initial_response", "tool_exec:order_status", "final_response"]
    })
    .await;
    assert!(placed_at.elapsed() >= Duration::from_millis(900), "gone after {:?}", placed_at.elapsed());
}

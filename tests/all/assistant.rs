//! The pizza assistant in every language it is written in (`plugins/assistant`, `assistant-py`,
//! `assistant-js`), frame for frame: staged replies, every error stage, tools and host state, an
//! LLM reached through the allow-list, and the broker's deadline over a call waiting on HTTP. The
//! LLM is a scripted OpenAI-compatible server the test runs on 127.0.0.1.
//!
//! Each test is an `async fn(Lang)`, and `per_language!` makes it three tests, `<test>::rust`,
//! `<test>::python` and `<test>::javascript`, so a failure names its language. The expected frames
//! are written out whole and compared as JSON: the three builds must send the same frames.

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::harness::{Broker, Client, compile_cache, default_config, js_plugin_path, plugin_path, py_plugin_path};
use scripted::ScriptedLlm;

/// A language the assistant is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lang {
    Rust,
    Python,
    JavaScript,
}

impl Lang {
    /// The assistant's component in this language, where the build script put it.
    fn component(self) -> PathBuf {
        let folder = match self {
            Lang::Rust => return plugin_path("assistant"),
            Lang::Python => "assistant-py",
            Lang::JavaScript => "assistant-js",
        };
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        assert!(root.join("plugins").join(folder).is_dir(), "plugins/{folder} does not exist (yet)");
        match self {
            Lang::Python => py_plugin_path(folder),
            _ => js_plugin_path(folder),
        }
    }
}

/// Makes each `async fn(Lang)` named a module of three tests, one per language.
macro_rules! per_language {
    ($($test:ident),+ $(,)?) => {$(
        mod $test {
            use crate::assistant::Lang;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn rust() {
                super::$test(Lang::Rust).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn python() {
                super::$test(Lang::Python).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn javascript() {
                super::$test(Lang::JavaScript).await
            }
        }
    )+};
}

// The test modules come after the macro, which they use.
mod model;
mod orders;
mod planner;
mod scripted;

// ---- Mounting the assistant ----

/// The route of the assistant in every test's broker.toml, whatever its language.
const ROUTE: &str = "/ws/pizza";

/// `[plugins.pizza.settings.llm]`, with the plugin's `allow_hosts` entry.
struct Model {
    base_url: String,
    allow: String,
    /// The assistant's own bound on one request to the model.
    timeout_ms: u64,
}

impl Model {
    /// The scripted model, allowed.
    fn scripted(llm: &ScriptedLlm, timeout_ms: u64) -> Model {
        Model { base_url: llm.base_url(), allow: llm.addr.to_string(), timeout_ms }
    }
}

/// How a test mounts the assistant, as plugin `pizza` at `ROUTE`.
struct Mount<'a> {
    /// `[plugins.pizza] timeout_ms`: the broker's deadline for one call.
    timeout_ms: u64,
    model: Option<Model>,
    /// Lines of `[plugins.pizza.settings.orders]`.
    orders: &'a str,
    /// Appended to broker.toml: routes, `[auth]`.
    extra: &'a str,
}

impl Default for Mount<'_> {
    fn default() -> Self {
        Mount { timeout_ms: 30_000, model: None, orders: "", extra: "" }
    }
}

impl Mount<'_> {
    /// The assistant with the scripted model, which it may take `timeout_ms` to answer.
    fn scripted(llm: &ScriptedLlm, timeout_ms: u64) -> Mount<'static> {
        Mount { model: Some(Model::scripted(llm, timeout_ms)), ..Mount::default() }
    }

    /// `default_config` with the assistant in `lang` as `pizza`, the compile cache shared with the
    /// other tests (a Python or JavaScript component takes seconds to compile).
    fn config(&self, lang: Lang) -> String {
        let mut plugin =
            format!("[plugins.pizza]\npath = \"{}\"\ntimeout_ms = {}\n", lang.component().display(), self.timeout_ms);
        if let Some(model) = &self.model {
            plugin.push_str(&format!(
                r#"allow_hosts = ["{allow}"]
env = ["ASSISTANT_TEST_KEY"]

[plugins.pizza.settings.llm]
base_url = "{base_url}"
model = "scripted"
api_key_env = "ASSISTANT_TEST_KEY"
timeout_ms = {timeout_ms}
"#,
                allow = model.allow,
                base_url = model.base_url,
                timeout_ms = model.timeout_ms
            ));
        }
        if !self.orders.is_empty() {
            plugin.push_str(&format!("\n[plugins.pizza.settings.orders]\n{}\n", self.orders));
        }
        default_config(&format!(
            "\n[engine]\ncache_dir = \"{cache}\"\n\n[[routes]]\npath = \"{ROUTE}\"\nplugin = \"pizza\"\n\n{plugin}\n{extra}",
            cache = compile_cache().display(),
            extra = self.extra,
        ))
    }

    /// A broker serving the assistant in `lang`, with the model's key in its environment.
    fn launch(&self, lang: Lang) -> Broker {
        Broker::launch(&self.config(lang), &[], &[("ASSISTANT_TEST_KEY", "test-secret")])
    }
}

// ---- Talking to it ----

/// Connects to an assistant route and checks the welcome frame.
pub(crate) async fn assistant(broker: &Broker, path: &str) -> Client {
    let mut client = broker.connect(path).await;
    let welcome = client.recv().await;
    let expected = json!({"status": "success", "type": "welcome",
        "message": "Welcome to the pizza shop! Ask for the menu, a price, an order or an order's status."});
    assert_eq!(welcome, expected);
    client
}

/// Sends a user message and collects the frames up to the final response, an exception or the
/// broker's error frame (which ends a call that failed: the test then shows it, not a timeout).
pub(crate) async fn ask(client: &mut Client, message: &str) -> Vec<Value> {
    client.send(json!({"action": "user_message", "payload": {"message": message}})).await;
    let mut frames = Vec::new();
    loop {
        let frame = client.recv().await;
        let done = frame["stage"] == "final_response" || frame["type"] == "exception" || frame["action"] == "error";
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

/// Checks every frame of one answer, naming the language and the question on failure.
#[track_caller]
fn assert_frames(lang: Lang, asked: &str, frames: &[Value], expected: &[Value]) {
    assert_eq!(frames, expected, "{lang:?}, asked {asked:?}: the frames differ from the Rust assistant's");
}

fn initial(content: &str) -> Value {
    json!({"status": "success", "stage": "initial_response", "content": content})
}

fn final_response(content: &str) -> Value {
    json!({"status": "success", "stage": "final_response", "content": content})
}

fn tool_result(tool: &str, response: &str) -> Value {
    json!({"status": "success", "stage": "tool_result", "tool": tool, "response": response})
}

/// A failed tool call: `stage` is `tool_missing`, `tool_args` or `tool_exec`.
fn tool_failure(stage: &str, tool: &str, error: &str) -> Value {
    json!({"status": "error", "stage": stage, "tool": tool, "error": error})
}

fn exception(message: &str) -> Value {
    json!({"status": "error", "type": "exception", "message": message})
}

/// `get_menu`'s answer.
const MENU: &str = "Margherita: small $8.99, medium $11.99, large $14.99\n\
                    Pepperoni: small $9.99, medium $12.99, large $15.99\n\
                    Hawaiian: small $10.49, medium $13.49, large $16.49\n\
                    Veggie: small $9.49, medium $12.49, large $15.49";

/// The system prompt the assistant gives the model.
const SYSTEM: &str = "You are the assistant of a pizza shop. Use the tools to answer about the menu, \
prices, orders and order status. Answer in short markdown.";

/// The tools the assistant offers the model.
fn tool_definitions() -> Value {
    let string = json!({"type": "string"});
    let size = json!({"type": "string", "enum": ["small", "medium", "large"]});
    json!([
        {"type": "function", "function": {"name": "get_menu", "description": "The pizzas on the menu with their prices",
            "parameters": {"type": "object", "properties": {}}}},
        {"type": "function", "function": {"name": "get_price", "description": "The price of one pizza in one size",
            "parameters": {"type": "object", "required": ["item", "size"],
                "properties": {"item": string, "size": size}}}},
        {"type": "function", "function": {"name": "place_order", "description": "Orders pizzas; returns the order id",
            "parameters": {"type": "object", "required": ["items"], "properties": {"items": {"type": "array",
                "minItems": 1, "maxItems": 10,
                "items": {"type": "object", "required": ["item", "size"], "properties": {
                    "item": string, "size": size,
                    "quantity": {"type": "integer", "minimum": 1, "maximum": 50}}}}}}}},
        {"type": "function", "function": {"name": "order_status", "description": "The status of an order by id",
            "parameters": {"type": "object", "required": ["order_id"], "properties": {"order_id": string}}}},
    ])
}

/// A stored order as `place_order` and `order_status` answer it: compact JSON, keys in this order.
fn order_text(id: &str, items: &[(&str, &str, u64)], total: &str) -> String {
    let items: Vec<String> = items
        .iter()
        .map(|(item, size, quantity)| format!(r#"{{"item":"{item}","size":"{size}","quantity":{quantity}}}"#))
        .collect();
    format!(r#"{{"order_id":"{id}","items":[{}],"total":"{total}","status":"received"}}"#, items.join(","))
}

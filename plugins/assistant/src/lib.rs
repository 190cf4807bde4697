//! The pizza-shop assistant: each user message gets an `initial_response`, one `tool_result` per
//! tool call and a `final_response`, sent as the work progresses (the pizza-assistant wire format).
//! With an LLM configured (an OpenAI-compatible chat-completions API) the model picks the tools;
//! without one, a deterministic planner does, so the shop works with no external service.

mod frames;
mod llm;
mod orders;
mod planner;
mod shop;

use plugin_sdk::{Context, Plugin, Result};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use frames::{Exception, Notice, Response, ToolFailure, ToolResult};

use shop::ToolError;

/// `[plugins.assistant.settings]` in broker.toml.
#[derive(Deserialize)]
struct Settings {
    /// The model; without it the planner picks the tools.
    llm: Option<llm::Settings>,
    #[serde(default)]
    orders: orders::Rules,
}

/// A question or request for the pizza shop, in plain words.
#[derive(Deserialize, JsonSchema)]
struct UserMessage {
    message: String,
}

/// Where the assistant's frames go, in the wire format of the pizza assistant.
pub struct Out<'a> {
    ctx: &'a Context,
    orders: &'a orders::Rules,
}

impl Out<'_> {
    fn send(&self, frame: &impl Serialize) -> Result<()> {
        self.ctx.send(frame)
    }

    pub fn initial(&self, content: &str) -> Result<()> {
        self.send(&Response { status: "success", stage: "initial_response", content })
    }

    pub fn final_response(&self, content: &str) -> Result<()> {
        self.send(&Response { status: "success", stage: "final_response", content })
    }

    pub fn exception(&self, message: &str) -> Result<()> {
        self.send(&Exception { status: "error", kind: "exception", message })
    }

    /// Runs a tool and reports it: `tool_result`, or the error stage that fits. Returns the text to
    /// give a model as the tool's answer.
    pub fn tool(&self, name: &str, arguments: &str) -> Result<String> {
        match shop::call(self.ctx, self.orders, name, arguments) {
            Ok(response) => {
                self.send(&ToolResult { status: "success", stage: "tool_result", tool: name, response: &response })?;
                Ok(response)
            }
            Err(error) => {
                let (stage, message) = match error {
                    ToolError::Missing => ("tool_missing", format!("there is no tool named {name:?}")),
                    ToolError::Args(why) => ("tool_args", format!("bad arguments for {name}: {why}")),
                    ToolError::Exec(why) => ("tool_exec", why),
                };
                self.send(&ToolFailure { status: "error", stage, tool: name, error: &message })?;
                Ok(format!("error: {message}"))
            }
        }
    }
}

fn plugin() -> Plugin {
    Plugin::new("assistant", env!("CARGO_PKG_VERSION"))
        .description("Pizza-shop assistant: menu, prices, orders and order status, with staged replies")
        .tags(["assistant", "ai"])
        .sends_raw::<Notice>("notice")
        .sends_raw::<Response>("response")
        .sends_raw::<ToolResult>("tool_result")
        .sends_raw::<ToolFailure>("tool_failure")
        .sends_raw::<Exception>("exception")
        .on_connect(|ctx| {
            let welcome = "Welcome to the pizza shop! Ask for the menu, a price, an order or an order's status.";
            Ok(ctx.send(&Notice { status: "success", kind: "welcome", message: welcome })?)
        })
        .handle("user_message", |ctx, message: UserMessage| {
            let settings: Settings = ctx.settings()?;
            let out = Out { ctx, orders: &settings.orders };
            match &settings.llm {
                Some(llm) => llm::converse(ctx, &out, llm, &message.message),
                None => planner::answer(ctx, &out, &message.message),
            }
        })
        .handle("exit", |ctx, _: Option<Value>| {
            let goodbye = "Thank you for visiting the pizza shop. Goodbye!";
            ctx.send(&Notice { status: "success", kind: "goodbye", message: goodbye })?;
            ctx.close(1000, "goodbye");
            Ok(())
        })
}

plugin_sdk::export_plugin!(plugin);

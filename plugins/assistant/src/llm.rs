//! With an LLM: an OpenAI-compatible chat-completions API picks the tools and writes the answers.

use std::time::Duration;

use plugin_sdk::{Context, Error, Result, http};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Out;
use crate::shop;

/// The session key of the conversation so far.
const HISTORY: &str = "history";
/// Messages of history kept (and sent): the session is bounded.
const HISTORY_LIMIT: usize = 20;

const SYSTEM: &str = "You are the assistant of a pizza shop. Use the tools to answer about the menu, \
prices, orders and order status. Answer in short markdown.";

/// `[plugins.assistant.settings.llm]` in broker.toml.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `https://api.openai.com/v1`, or any OpenAI-compatible server.
    pub base_url: String,
    pub model: String,
    /// The environment variable with the API key; broker.toml must pass it to the plugin (`env`).
    pub api_key_env: Option<String>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_timeout_ms() -> u64 {
    30_000
}

#[derive(Deserialize)]
struct Completion {
    choices: Vec<Choice>,
}

#[derive(Deserialize)]
struct Choice {
    message: Value,
}

/// One user message: ask the model, run the tools it asks for, ask again for the final answer.
pub fn converse(ctx: &Context, out: &Out, settings: &Settings, message: &str) -> Result<()> {
    let mut history: Vec<Value> = ctx.session_get_json(HISTORY)?.unwrap_or_default();
    history.push(json!({"role": "user", "content": message}));
    let first = match ask(settings, &history) {
        Ok(reply) => reply,
        Err(error) => return out.exception(&format!("the model could not be reached: {error}")),
    };
    let content = first["content"].as_str().unwrap_or_default().to_owned();
    let calls = first["tool_calls"].as_array().cloned().unwrap_or_default();
    out.initial(if content.is_empty() { "Let me check that for you." } else { &content })?;

    let answer = if calls.is_empty() {
        content
    } else {
        history.push(first.clone());
        for call in &calls {
            let name = call["function"]["name"].as_str().unwrap_or_default();
            let arguments = call["function"]["arguments"].as_str().unwrap_or_default();
            let result = out.tool(name, arguments)?;
            history.push(json!({"role": "tool", "tool_call_id": call["id"], "content": result}));
        }
        match ask(settings, &history) {
            Ok(reply) => reply["content"].as_str().unwrap_or_default().to_owned(),
            Err(error) => return out.exception(&format!("the model could not be reached: {error}")),
        }
    };
    out.final_response(&answer)?;
    history.push(json!({"role": "assistant", "content": answer}));
    let keep = history.len().saturating_sub(HISTORY_LIMIT);
    ctx.session_set_json(HISTORY, &history[keep..].to_vec())
}

/// One chat-completions request; the reply's `message`.
fn ask(settings: &Settings, history: &[Value]) -> Result<Value> {
    let mut messages = vec![json!({"role": "system", "content": SYSTEM})];
    messages.extend_from_slice(history);
    let body = json!({"model": settings.model, "messages": messages, "tools": shop::tool_definitions()});
    let key = match &settings.api_key_env {
        Some(var) => {
            Some(std::env::var(var).map_err(|_| Error::msg(format!("{var} is not in the plugin's environment")))?)
        }
        None => None,
    };
    let auth = key.map(|key| format!("Bearer {key}"));
    let headers: Vec<(&str, &str)> = auth.as_deref().map(|a| vec![("authorization", a)]).unwrap_or_default();
    let url = format!("{}/chat/completions", settings.base_url.trim_end_matches('/'));
    let response = http::post_json(&url, &headers, &body, Duration::from_millis(settings.timeout_ms))?;
    if !(200..300).contains(&response.status) {
        return Err(Error::msg(format!("{url} answered {}: {}", response.status, response.text())));
    }
    let completion: Completion = response.json()?;
    completion.choices.into_iter().next().map(|c| c.message).ok_or_else(|| Error::msg("the model sent no choices"))
}

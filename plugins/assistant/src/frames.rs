//! The pizza assistant's wire format: frames sent as they are (no `action` envelope), one type per
//! kind so the manifest documents exactly what is sent.

use schemars::JsonSchema;
use serde::Serialize;

/// The greeting on connect (`type: welcome`) and the farewell on `exit` (`type: goodbye`).
#[derive(Serialize, JsonSchema)]
pub struct Notice<'a> {
    #[schemars(extend("const" = "success"))]
    pub status: &'static str,
    #[serde(rename = "type")]
    #[schemars(extend("enum" = ["welcome", "goodbye"]))]
    pub kind: &'static str,
    pub message: &'a str,
}

/// A stage of the answer: `initial_response` first, `final_response` (markdown) last.
#[derive(Serialize, JsonSchema)]
pub struct Response<'a> {
    #[schemars(extend("const" = "success"))]
    pub status: &'static str,
    #[schemars(extend("enum" = ["initial_response", "final_response"]))]
    pub stage: &'static str,
    pub content: &'a str,
}

/// A tool the assistant called, with what it answered.
#[derive(Serialize, JsonSchema)]
pub struct ToolResult<'a> {
    #[schemars(extend("const" = "success"))]
    pub status: &'static str,
    #[schemars(extend("const" = "tool_result"))]
    pub stage: &'static str,
    pub tool: &'a str,
    pub response: &'a str,
}

/// A tool call that failed: no such tool, bad arguments, or the tool's own failure.
#[derive(Serialize, JsonSchema)]
pub struct ToolFailure<'a> {
    #[schemars(extend("const" = "error"))]
    pub status: &'static str,
    #[schemars(extend("enum" = ["tool_missing", "tool_args", "tool_exec"]))]
    pub stage: &'static str,
    pub tool: &'a str,
    pub error: &'a str,
}

/// The assistant could not answer (the model failed or could not be reached).
#[derive(Serialize, JsonSchema)]
pub struct Exception<'a> {
    #[schemars(extend("const" = "error"))]
    pub status: &'static str,
    #[serde(rename = "type")]
    #[schemars(extend("const" = "exception"))]
    pub kind: &'static str,
    pub message: &'a str,
}

//! `model ADDR`: a scripted OpenAI-compatible model for the assistant turn of `cargo xtask bench
//! plugin-cost`. Every turn is the same two requests: to a user's question it answers with a
//! `get_price` tool call, to the tool's result with the final answer. It keeps no state (the
//! assistant sends the whole conversation each time), so any number of connections can ask at
//! once. Prints `listening on ADDR` first, as the other servers of the bench do.

use std::convert::Infallible;

use anyhow::{Context, Result};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use serde_json::{Value, json};

/// What the model asks for: the price of a large margherita.
const TOOL_CALL: &str = r#"{"item": "margherita", "size": "large"}"#;

/// The model's answer to the conversation so far: a tool call after the user's question, the
/// final answer after the tool's result.
fn answer(request: &Value) -> Value {
    let last = request["messages"].as_array().and_then(|messages| messages.last());
    let message = match last.map(|message| &message["role"]) {
        Some(role) if role == "tool" => json!({"role": "assistant", "content": "A large Margherita is $14.99."}),
        _ => json!({
            "role": "assistant",
            "content": "Let me look that up.",
            "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "get_price", "arguments": TOOL_CALL}}],
        }),
    };
    json!({"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]})
}

async fn serve(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let (status, body) = match serde_json::from_slice::<Value>(&body) {
        Ok(request) => (200, answer(&request)),
        Err(error) => (400, json!({"error": error.to_string()})),
    };
    let response = Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap_or_default();
    Ok(response)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:0".into());
    let listener = tokio::net::TcpListener::bind(&addr).await.with_context(|| format!("binding {addr}"))?;
    println!("listening on {}", listener.local_addr()?);
    loop {
        let (tcp, _) = listener.accept().await?;
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(tcp);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, hyper::service::service_fn(serve))
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_question_gets_a_tool_call_and_a_tool_result_the_answer() {
        let asked = json!({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "price?"}]});
        let call = &answer(&asked)["choices"][0]["message"]["tool_calls"][0]["function"];
        assert_eq!((&call["name"], &call["arguments"]), (&json!("get_price"), &json!(TOOL_CALL)));
        let told = json!({"messages": [{"role": "user", "content": "price?"}, {"role": "tool", "content": "$14.99"}]});
        let message = &answer(&told)["choices"][0]["message"];
        assert_eq!(message["content"], "A large Margherita is $14.99.");
        assert!(message.get("tool_calls").is_none());
    }
}

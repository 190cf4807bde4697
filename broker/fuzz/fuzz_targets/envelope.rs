//! Any bytes a client can send as a text frame: the envelope parser, the payload validator and the
//! frames the broker writes back must never panic, and every refusal must be a well-formed error
//! frame.

#![no_main]

use broker::plugin::host::PluginManifest;
use broker::plugin::host::broker::plugin::types::ActionSpec;
use broker::wire::protocol::{self, PING};
use broker::plugin::schema::Validators;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use std::sync::LazyLock;

const ACTIONS: [&str; 2] = ["user_message", "join"];

/// Schemas with the keywords whose errors the broker maps to pydantic entries by hand.
static VALIDATORS: LazyLock<Validators> = LazyLock::new(|| {
    let spec = |name: &str, schema: Value| ActionSpec {
        name: name.into(),
        summary: None,
        description: None,
        payload_schema: Some(schema.to_string()),
    };
    let message = serde_json::json!({
        "type": "object",
        "properties": {
            "message": {"type": "string", "minLength": 1, "maxLength": 64},
            "count": {"type": ["integer", "null"], "minimum": 0, "maximum": 10},
            "ratio": {"type": "number", "exclusiveMaximum": 1.5},
            "kind": {"enum": ["plain", "fancy"]},
            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3, "uniqueItems": true},
            "at": {"type": "string", "format": "date-time"},
            "inner": {"anyOf": [
                {"type": "object", "properties": {"flag": {"type": "boolean"}}, "required": ["flag"]},
                {"type": "null"}
            ]},
            "pick": {"oneOf": [{"type": "string", "pattern": "^[a-z]+$"}, {"type": "integer"}]}
        },
        "required": ["message"],
        "additionalProperties": false
    });
    let join = serde_json::json!({"type": "object", "properties": {"room": {"type": "string"}}, "required": ["room"]});
    let manifest = PluginManifest {
        name: "fuzz".into(),
        version: "1".into(),
        description: None,
        tags: vec![],
        accepts: vec![spec("user_message", message), spec("join", join)],
        sends: vec![],
    };
    Validators::compile(&manifest).expect("the fuzz schemas compile")
});

fn assert_error_frame(frame: &str) {
    let frame: Value = serde_json::from_str(frame).expect("an error frame is JSON");
    assert_eq!(frame["action"], "error");
    let problems = frame["payload"].as_array().expect("an error frame lists its problems");
    assert!(!problems.is_empty(), "an error frame without a problem: {frame}");
    for problem in problems {
        assert!(problem["type"].is_string() && problem["msg"].is_string() && problem["loc"].is_array(), "{frame}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let accepted: Vec<String> = ACTIONS.iter().map(|a| a.to_string()).collect();
    match protocol::parse(text, &accepted) {
        Ok(request) => {
            assert!(request.action == PING || ACTIONS.contains(&request.action.as_str()), "{}", request.action);
            // The payload is valid JSON text, though maybe not a value serde_json can hold (1e400):
            // the validator below refuses those.
            assert!(request.payload.is_none_or(|payload| payload.get() != "null"));
            if request.action != PING
                && let Err(problems) = VALIDATORS.check(&request.action, request.payload)
            {
                assert_error_frame(&protocol::error_frame(&problems, request.reference.as_deref()));
            }
        }
        Err(refusal) => assert_error_frame(&protocol::error_frame(&refusal.problems, refusal.reference.as_deref())),
    }
    // What a plugin sends goes through the same text: objects pass with the ref added, nothing else does.
    if let Ok(framed) = protocol::plugin_frame(text.to_owned(), Some("r")) {
        let framed: Value = serde_json::from_str(&framed).expect("a framed plugin frame is JSON");
        assert_eq!(framed["ref"], "r");
    }
    let _ = protocol::stamp(text, "7");
});

//! Typed actions: payloads are validated at the edge against the schema the plugin published, and
//! refused with one pydantic-style entry per problem before any plugin code runs.

use serde_json::{Value, json};

use crate::harness::{Broker, Client};

/// Sends a `strict` frame to the testbed and returns the `payload` of the error frame it gets.
async fn refused(client: &mut Client, payload: Option<Value>) -> Value {
    let mut frame = json!({"action": "strict", "ref": "s"});
    if let Some(payload) = payload {
        frame["payload"] = payload;
    }
    let answer = client.request(frame).await;
    assert_eq!(answer["action"], "error", "{answer}");
    assert_eq!(answer["ref"], "s", "{answer}");
    answer["payload"].clone()
}

fn entry(kind: &str, loc: Value, msg: &str) -> Value {
    json!({"type": kind, "loc": loc, "msg": msg})
}

/// The testbed's `strict` handler panics on any payload its schema refuses, so each refusal below
/// also proves the payload never reached it: a crash would answer `plugin_crashed` instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_invalid_payload_gets_its_exact_entries_and_never_reaches_the_plugin() {
    let broker = Broker::start();
    let mut client = broker.connect("/ws/testbed").await;
    let valid = json!({"name": "ok", "count": 3, "kind": "plain", "tags": ["a"]});
    let accepted = client.request(json!({"action": "strict", "payload": valid, "ref": "v"})).await;
    assert_eq!(accepted, json!({"action": "accepted", "payload": {"name": "ok", "count": 3}, "ref": "v"}));

    let cases: Vec<(&str, Option<Value>, Value)> = vec![
        (
            "values serde would take but the schema refuses",
            Some(json!({"name": "", "count": 99, "kind": "plain"})),
            json!([
                entry(
                    "string_too_short",
                    json!(["strict", "payload", "name"]),
                    "String should have at least 1 character"
                ),
                entry(
                    "less_than_equal",
                    json!(["strict", "payload", "count"]),
                    "Input should be less than or equal to 10"
                ),
            ]),
        ),
        (
            "a name too long and a count too small",
            Some(json!({"name": "ninechars", "count": 0, "kind": "fancy"})),
            json!([
                entry(
                    "string_too_long",
                    json!(["strict", "payload", "name"]),
                    "String should have at most 8 characters"
                ),
                entry(
                    "greater_than_equal",
                    json!(["strict", "payload", "count"]),
                    "Input should be greater than or equal to 1"
                ),
            ]),
        ),
        (
            "every required field missing",
            Some(json!({})),
            json!([
                entry("missing", json!(["strict", "payload", "name"]), "Field required"),
                entry("missing", json!(["strict", "payload", "count"]), "Field required"),
                entry("missing", json!(["strict", "payload", "kind"]), "Field required"),
            ]),
        ),
        (
            "wrong types, an unknown member and a bad list item",
            Some(json!({"name": 5, "count": "x", "kind": "odd", "tags": ["a", 2]})),
            json!([
                entry("string_type", json!(["strict", "payload", "name"]), "Input should be a valid string"),
                entry("int_type", json!(["strict", "payload", "count"]), "Input should be a valid integer"),
                entry("enum", json!(["strict", "payload", "kind"]), "Input should be 'plain' or 'fancy'"),
                entry("string_type", json!(["strict", "payload", "tags", 1]), "Input should be a valid string"),
            ]),
        ),
        (
            "a fractional count",
            Some(json!({"name": "a", "count": 2.5, "kind": "plain"})),
            json!([entry(
                "int_from_float",
                json!(["strict", "payload", "count"]),
                "Input should be a valid integer, got a number with a fractional part"
            )]),
        ),
        (
            "a field the type does not have",
            Some(json!({"name": "a", "count": 1, "kind": "plain", "extra": true})),
            json!([entry("extra_forbidden", json!(["strict", "payload", "extra"]), "Extra inputs are not permitted")]),
        ),
        ("no payload", None, json!([entry("missing", json!(["strict", "payload"]), "Field required")])),
        (
            "a payload that is not an object",
            Some(json!([1, 2])),
            json!([entry("model_type", json!(["strict", "payload"]), "Input should be an object")]),
        ),
        (
            "tags that are not a list",
            Some(json!({"name": "a", "count": 1, "kind": "plain", "tags": "a"})),
            json!([entry("list_type", json!(["strict", "payload", "tags"]), "Input should be a valid list")]),
        ),
    ];
    let count = cases.len();
    for (case, payload, want) in cases {
        let got = refused(&mut client, payload).await;
        assert_eq!(got, want, "{case}");
    }
    client.assert_alive().await;
    assert_eq!(broker.metric("broker_payloads_refused_total{plugin=\"testbed\"}").await, count as f64);
    let (_, metrics) = broker.http("GET", "/metrics", None, "").await;
    assert!(!metrics.contains("broker_plugin_errors_total{plugin=\"testbed\""), "no call of the plugin failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_plugins_are_validated_at_the_edge_too() {
    let broker = Broker::start();
    let mut echo = broker.echo_client().await;
    // serde would report only the first problem; the edge reports both.
    let answer = echo.request(json!({"action": "user_message", "payload": {"message": 1}})).await;
    assert_eq!(
        answer,
        json!({"action": "error", "payload": [
            entry("string_type", json!(["user_message", "payload", "message"]), "Input should be a valid string"),
        ]})
    );
    let mut chat = broker.connect("/ws/chat/typed").await;
    let answer = chat.request(json!({"action": "new_chat_message", "payload": {"message": 1}})).await;
    assert_eq!(
        answer["payload"],
        json!([
            entry("missing", json!(["new_chat_message", "payload", "name"]), "Field required"),
            entry("string_type", json!(["new_chat_message", "payload", "message"]), "Input should be a valid string"),
        ])
    );
}

//! Every row of the protocol's error table: one error frame, and the connection keeps working.

use crate::harness::{Broker, Client};
use serde_json::{Value, json};

/// Sends `frame` as text, expects exactly `problems` back, then proves the socket still answers.
async fn expect_error(client: &mut Client, frame: &str, problems: Value) {
    client.send_text(frame).await;
    let error = client.recv().await;
    assert_eq!(error["action"], "error", "{frame} -> {error}");
    let got: Vec<Value> = error["payload"].as_array().expect("payload is a list").clone();
    let want = problems.as_array().expect("a list").clone();
    assert_eq!(got.len(), want.len(), "{frame} -> {error}");
    for (got, want) in got.iter().zip(&want) {
        assert_eq!(got["type"], want["type"], "{frame} -> {error}");
        assert_eq!(got["loc"], want["loc"], "{frame} -> {error}");
        assert!(got["msg"].as_str().is_some_and(|m| !m.is_empty()), "{frame} -> {error} has no msg");
    }
    client.assert_alive().await;
}

fn one(kind: &str, loc: Value) -> Value {
    json!([{"type": kind, "loc": loc}])
}

#[tokio::test]
async fn envelope_errors() {
    let broker = Broker::start();
    let mut client = broker.echo_client().await;
    expect_error(&mut client, "", one("json_invalid", json!([]))).await;
    expect_error(&mut client, "{not json", one("json_invalid", json!([]))).await;
    expect_error(&mut client, "[1, 2]", one("model_type", json!([]))).await;
    expect_error(&mut client, "\"user_message\"", one("model_type", json!([]))).await;
    expect_error(&mut client, r#"{"payload": {"message": "x"}}"#, one("union_tag_not_found", json!([]))).await;
    expect_error(&mut client, r#"{"action": "dance"}"#, one("union_tag_invalid", json!([]))).await;
    expect_error(&mut client, r#"{"action": 42}"#, one("union_tag_invalid", json!([]))).await;
    expect_error(&mut client, r#"{"action": "ping", "ref": 5}"#, one("string_type", json!(["ref"]))).await;
    expect_error(
        &mut client,
        r#"{"action": "ping", "payload": {"a": 1}}"#,
        one("none_required", json!(["ping", "payload"])),
    )
    .await;
}

#[tokio::test]
async fn unknown_action_lists_the_accepted_ones() {
    let broker = Broker::start();
    let mut client = broker.echo_client().await;
    let error = client.request(json!({"action": "dance"})).await;
    let msg = error["payload"][0]["msg"].as_str().unwrap();
    assert!(msg.contains("'dance'") && msg.contains("'ping'") && msg.contains("'user_message'"), "{msg}");
}

#[tokio::test]
async fn binary_frames_are_refused_with_a_reason() {
    let broker = Broker::start();
    let mut client = broker.echo_client().await;
    client.send_binary(b"{\"action\":\"ping\"}").await;
    let error = client.recv().await;
    assert_eq!(error["payload"][0]["type"], "json_invalid");
    assert!(error["payload"][0]["msg"].as_str().unwrap().contains("binary"), "{error}");
    client.assert_alive().await;
}

#[tokio::test]
async fn payload_errors_name_the_field() {
    let broker = Broker::start();
    let mut client = broker.echo_client().await;
    expect_error(&mut client, r#"{"action": "user_message"}"#, one("missing", json!(["user_message", "payload"])))
        .await;
    expect_error(
        &mut client,
        r#"{"action": "user_message", "payload": null}"#,
        // As Chanx (pydantic) answers it: `null` is not a model.
        one("model_type", json!(["user_message", "payload"])),
    )
    .await;
    expect_error(
        &mut client,
        r#"{"action": "user_message", "payload": [1]}"#,
        one("model_type", json!(["user_message", "payload"])),
    )
    .await;
    expect_error(
        &mut client,
        r#"{"action": "user_message", "payload": "hi"}"#,
        one("model_type", json!(["user_message", "payload"])),
    )
    .await;
    expect_error(
        &mut client,
        r#"{"action": "user_message", "payload": {}}"#,
        one("missing", json!(["user_message", "payload", "message"])),
    )
    .await;
    expect_error(
        &mut client,
        r#"{"action": "user_message", "payload": {"message": 5}}"#,
        one("string_type", json!(["user_message", "payload", "message"])),
    )
    .await;
}

#[tokio::test]
async fn plugin_failures_are_located_at_the_action() {
    let broker = Broker::start();
    let mut client = broker.connect("/ws/testbed").await;
    let error = client.request(json!({"action": "fail", "ref": "f"})).await;
    assert_eq!(
        error,
        json!({"action": "error", "payload": [{"type": "plugin_error", "loc": ["fail"], "msg": "failed on purpose"}], "ref": "f"})
    );
    client.assert_alive().await;

    expect_error(&mut client, r#"{"action": "panic"}"#, one("plugin_crashed", json!(["panic"]))).await;
    expect_error(&mut client, r#"{"action": "not_an_object"}"#, one("plugin_error", json!(["not_an_object"]))).await;
    // A crashed instance is replaced: the plugin keeps serving.
    expect_error(&mut client, r#"{"action": "panic"}"#, one("plugin_crashed", json!(["panic"]))).await;
    expect_error(&mut client, r#"{"action": "fail"}"#, one("plugin_error", json!(["fail"]))).await;
}

#[tokio::test]
async fn instances_are_reused_and_a_crashed_one_is_replaced() {
    let broker = Broker::start();
    let mut client = broker.connect("/ws/testbed").await;
    // Sequential calls of one connection land on the same pooled instance: its memory persists.
    assert_eq!(client.request(json!({"action": "count"})).await["payload"], 1);
    assert_eq!(client.request(json!({"action": "count"})).await["payload"], 2);
    expect_error(&mut client, r#"{"action": "panic"}"#, one("plugin_crashed", json!(["panic"]))).await;
    // The trapped instance was dropped, not returned: a fresh one starts from zero.
    assert_eq!(client.request(json!({"action": "count"})).await["payload"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_frame_quotes_a_huge_action_or_key_only_in_part() {
    let broker = Broker::with_config(&crate::harness::large_messages_config());
    let mut echo = broker.echo_client_at("/ws/large/system").await;
    let mut testbed = broker.connect("/ws/large/testbed").await;
    let quotes = format!("[\"{}\"]", "\\\"".repeat(100_000));
    let cases = [
        ("a 200 KB action", false, json!({"action": "a".repeat(200_000)}).to_string()),
        ("a 1 MB action", false, json!({"action": "é".repeat(500_000)}).to_string()),
        // Quotes in a non-string action are escaped again when quoted: 200 KB became 400 KB.
        ("a 200 KB action of quotes", false, format!("{{\"action\": {quotes}}}")),
        (
            "a 1 MB payload key",
            true,
            json!({"action": "strict", "payload": {"name": "a", "count": 1, "kind": "plain", ("k".repeat(1 << 20)): 1}})
                .to_string(),
        ),
    ];
    for (case, on_testbed, frame) in cases {
        let client = if on_testbed { &mut testbed } else { &mut echo };
        client.send_text(&frame).await;
        let error = client.recv().await;
        assert_eq!(error["action"], "error", "{case}");
        let size = error.to_string().len();
        assert!(size < 1024, "{case}: a {size}-byte error frame for a {}-byte frame", frame.len());
        let quoted = error["payload"][0]["msg"].as_str().unwrap().to_owned() + &error["payload"][0]["loc"].to_string();
        assert!(quoted.contains('…'), "{case}: the cut is not marked: {error}");
        client.assert_alive().await;
    }
}

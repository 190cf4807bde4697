//! The system echo of the Chanx tutorial, frame for frame, in every language it is built in.

use crate::harness::{Broker, LANGUAGES, compile_cache, polyglot_config};
use serde_json::{Value, json};

/// A broker with echo in every language, and the route of each: (language, route).
fn brokers() -> (Broker, Vec<(&'static str, String)>) {
    let routes = LANGUAGES.iter().map(|(lang, prefix)| (*lang, format!("{prefix}/system"))).collect();
    (Broker::with_config(&polyglot_config()), routes)
}

#[tokio::test]
async fn welcome_then_echo() {
    let (broker, routes) = brokers();
    for (lang, route) in routes {
        let mut client = broker.connect(&route).await;
        assert_eq!(
            client.recv().await,
            json!({"action": "system_echo", "payload": {"message": "🔧 System: Connection established!"}}),
            "{lang}"
        );
        let reply = client.request(json!({"action": "user_message", "payload": {"message": "Hello"}})).await;
        assert_eq!(reply, json!({"action": "system_echo", "payload": {"message": "🔧 System Echo: Hello"}}), "{lang}");
    }
}

#[tokio::test]
async fn long_text_of_every_utf8_width_comes_back_whole() {
    // A reply crosses from the guest to the host as a string: in JavaScript it is encoded by
    // plugin-sdk/js/bin/bindings.js rather than componentize-js's own helper.
    let (broker, routes) = brokers();
    let text = format!("{}h\u{e9}llo \u{20ac} \u{1d11e} \u{1f527} \"quoted\"", "x".repeat(20_000));
    for (lang, route) in routes {
        let mut client = broker.echo_client_at(&route).await;
        let reply = client.request(json!({"action": "user_message", "payload": {"message": text}})).await;
        let expected = json!({"action": "system_echo", "payload": {"message": format!("🔧 System Echo: {text}")}});
        assert!(reply == expected, "{lang}: {} bytes back", reply.to_string().len());
    }
}

#[tokio::test]
async fn ping_is_answered_by_the_broker() {
    let (broker, routes) = brokers();
    for (lang, route) in routes {
        let mut client = broker.echo_client_at(&route).await;
        let pong = client.request(json!({"action": "ping"})).await;
        assert_eq!(pong, json!({"action": "pong", "payload": null}), "{lang}");
        // `null` is no payload.
        assert_eq!(client.request(json!({"action": "ping", "payload": null})).await["action"], "pong", "{lang}");
    }
}

#[tokio::test]
async fn ref_is_echoed_on_replies_pongs_and_errors() {
    let (broker, routes) = brokers();
    for (lang, route) in routes {
        let mut client = broker.echo_client_at(&route).await;
        let reply =
            client.request(json!({"action": "user_message", "payload": {"message": "hi"}, "ref": "req-1"})).await;
        let expected = json!({"action": "system_echo", "payload": {"message": "🔧 System Echo: hi"}, "ref": "req-1"});
        assert_eq!(reply, expected, "{lang}");
        let pong = client.request(json!({"action": "ping", "ref": "req-2"})).await;
        assert_eq!(pong, json!({"action": "pong", "payload": null, "ref": "req-2"}), "{lang}");
        let error = client.request(json!({"action": "user_message", "payload": {}, "ref": "req-3"})).await;
        let missing = json!({"action": "error", "ref": "req-3", "payload": [
            {"type": "missing", "loc": ["user_message", "payload", "message"], "msg": "Field required"}
        ]});
        assert_eq!(error, missing, "{lang}");
    }
}

#[tokio::test]
async fn extra_top_level_keys_are_ignored() {
    let (broker, routes) = brokers();
    for (lang, route) in routes {
        let mut client = broker.echo_client_at(&route).await;
        let reply = client.request(json!({"action": "user_message", "payload": {"message": "x"}, "id": 7})).await;
        assert_eq!(reply["payload"]["message"], "🔧 System Echo: x", "{lang}");
    }
}

#[tokio::test]
async fn messages_of_one_connection_are_answered_in_order() {
    let (broker, routes) = brokers();
    for (lang, route) in routes {
        let mut client = broker.echo_client_at(&route).await;
        for n in 0..50 {
            client.send(json!({"action": "user_message", "payload": {"message": n.to_string()}})).await;
            if n % 7 == 0 {
                client.send(json!({"action": "ping", "ref": n.to_string()})).await;
            }
        }
        for n in 0..50 {
            let reply = client.recv().await;
            assert_eq!(reply["payload"]["message"], format!("🔧 System Echo: {n}"), "{lang}: {reply}");
            if n % 7 == 0 {
                let pong = json!({"action": "pong", "payload": null, "ref": n.to_string()});
                assert_eq!(client.recv().await, pong, "{lang}");
            }
        }
    }
}

#[tokio::test]
async fn every_language_documents_the_same_actions_and_replies() {
    let (broker, routes) = brokers();
    let (status, body) = broker.http("GET", "/asyncapi.json", None, "").await;
    assert_eq!(status, 200, "{body}");
    let doc: serde_json::Value = serde_json::from_str(&body).expect("the document is JSON");
    for (lang, route) in routes {
        // Channels are named by route; their messages lead to titled frame and payload schemas.
        let (channel, _) = doc["channels"]
            .as_object()
            .unwrap()
            .iter()
            .find(|(_, c)| c["address"] == route)
            .unwrap_or_else(|| panic!("{lang}: no channel for {route}"));
        let reply = &doc["operations"][format!("{channel}.receive.user_message")]["reply"]["messages"];
        assert_eq!(
            reply,
            &json!([
                {"$ref": format!("#/channels/{channel}/messages/server.system_echo")},
                {"$ref": format!("#/channels/{channel}/messages/server.error")},
            ]),
            "{lang}: the handler's reply is documented"
        );
        for (direction, action) in [("client", "user_message"), ("server", "system_echo")] {
            let component = |reference: &Value| {
                let target = reference["$ref"].as_str().unwrap().trim_start_matches("#/components/");
                let (kind, key) = target.split_once('/').unwrap();
                doc["components"][kind][key].clone()
            };
            let message = component(&doc["channels"][channel]["messages"][format!("{direction}.{action}")]);
            let frame = component(&message["payload"]);
            let schema = component(&frame["properties"]["payload"]);
            assert_eq!(schema["required"], json!(["message"]), "{lang}: {schema}");
            assert_eq!(schema["properties"]["message"]["type"], "string", "{lang}: {schema}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_whose_memory_only_grows_are_retired_before_they_run_out() {
    // SpiderMonkey's heap grows by a few hundred bytes a call and is never given back, so an
    // instance kept forever would trap when it reached its limit: after about 28,000 echoes here,
    // where it starts at 9 MiB. Past half the limit an instance is retired after its call.
    let toml = format!(
        r#"
[api]
key = "{key}"

[server]
messages_per_second = 0

[engine]
cache_dir = "{cache}"

[plugins.echo-js]
path = "{echo}"
max_memory_bytes = 20971520

[[routes]]
path = "/ws/js/system"
plugin = "echo-js"
"#,
        key = crate::harness::API_KEY,
        cache = compile_cache().display(),
        echo = crate::harness::js_plugin_path("echo-js").display(),
    );
    let broker = Broker::with_config(&toml);
    let mut client = broker.echo_client_at("/ws/js/system").await;
    for batch in 0..400 {
        for n in 0..100 {
            client.send(json!({"action": "user_message", "payload": {"message": format!("{batch}-{n}")}})).await;
        }
        for n in 0..100 {
            let reply = client.recv().await;
            assert_eq!(reply["payload"]["message"], format!("🔧 System Echo: {batch}-{n}"), "{reply}");
        }
    }
    let retired = broker.metric("broker_plugin_instances_retired_total{plugin=\"echo-js\"}").await;
    assert!(retired >= 1.0, "no instance was retired");
}

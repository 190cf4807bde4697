//! The HTTP API: publish to a group from a backend, list a group's members.

use serde_json::{Value, json};

use crate::harness::{API_KEY, Broker};

#[tokio::test]
async fn publish_delivers_with_the_key_and_nothing_without() {
    let broker = Broker::start();
    let mut a = broker.connect("/ws/chat/news").await;
    let mut b = broker.connect("/ws/chat/news").await;
    a.assert_alive().await;
    b.assert_alive().await;
    let body =
        json!({"group": "chat:news", "frame": {"action": "announcement", "payload": {"text": "hello"}}}).to_string();

    for key in [None, Some("wrong-key")] {
        let (status, reply) = broker.http("POST", "/api/publish", key, &body).await;
        assert_eq!(status, 401, "{reply}");
    }
    // Nothing was delivered: the next frame is the pong.
    a.assert_alive().await;

    let (status, reply) = broker.http("POST", "/api/publish", Some(API_KEY), &body).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(serde_json::from_str::<Value>(&reply).unwrap()["delivered"], 2);
    for client in [&mut a, &mut b] {
        assert_eq!(client.recv().await, json!({"action": "announcement", "payload": {"text": "hello"}}));
    }
    assert_eq!(broker.metric("broker_api_published_total").await, 1.0);
}

#[tokio::test]
async fn publish_refuses_malformed_requests() {
    let broker = Broker::start();
    for body in
        ["{", r#"{"group": "news", "frame": {}}"#, r#"{"group": "chat:news", "frame": [1]}"#, r#"{"frame": {}}"#]
    {
        let (status, reply) = broker.http("POST", "/api/publish", Some(API_KEY), body).await;
        assert_eq!(status, 400, "{body} -> {reply}");
        assert!(serde_json::from_str::<Value>(&reply).unwrap()["error"].is_string(), "{reply}");
    }
    let (status, _) = broker.http("GET", "/api/publish", Some(API_KEY), "").await;
    assert_eq!(status, 405);
}

#[tokio::test]
async fn members_lists_exactly_the_connected_members() {
    let broker = Broker::start();
    let members = |body: String| -> usize {
        serde_json::from_str::<Value>(&body).unwrap()["members"].as_array().map(Vec::len).unwrap_or(usize::MAX)
    };
    let (status, body) = broker.http("GET", "/api/groups/chat:lobby/members", None, "").await;
    assert_eq!(status, 401, "{body}");

    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut client = broker.connect("/ws/chat/lobby").await;
        client.assert_alive().await;
        clients.push(client);
    }
    let (status, body) = broker.http("GET", "/api/groups/chat:lobby/members", Some(API_KEY), "").await;
    assert_eq!((status, members(body)), (200, 3));
    clients.pop();
    broker.await_metric("broker_group_members", 2.0).await;
    let (_, body) = broker.http("GET", "/api/groups/chat:lobby/members", Some(API_KEY), "").await;
    assert_eq!(members(body), 2);
}

#[tokio::test]
async fn without_a_key_the_api_is_disabled() {
    let toml = crate::harness::default_config("").replace(&format!("[api]\nkey = \"{API_KEY}\"\n"), "");
    let broker = Broker::with_config(&toml);
    let (status, body) = broker.http("POST", "/api/publish", Some(API_KEY), "{}").await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("api.key"), "{body}");
}

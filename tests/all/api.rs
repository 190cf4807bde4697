//! The HTTP API: publish to a group from a backend, list a group's members.

use serde_json::{Value, json};

use crate::harness::{API_KEY, Broker, Client};

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

/// The broker owns `sender`, `message_id` and `timestamp`: a publisher setting one is refused with
/// 400 naming the key (no one may pose as `admin` or as a connection), and what it may publish is
/// stamped `"sender": "api"` on a route with metadata.
#[tokio::test]
async fn published_frames_cannot_set_the_stamped_keys() {
    let broker = Broker::start();
    let mut member = broker.connect("/ws/chat-meta/news").await;
    assert_next_is_pong(&mut member).await;
    for (key, value) in [("sender", json!("admin")), ("message_id", json!("forged")), ("timestamp", json!("1970"))] {
        let mut frame = json!({"action": "announcement", "payload": {"text": "hello"}});
        frame[key] = value;
        let body = json!({"group": "chat:news", "frame": frame}).to_string();
        let (status, reply) = broker.http("POST", "/api/publish", Some(API_KEY), &body).await;
        assert_eq!(status, 400, "{key}: {reply}");
        let reply: Value = serde_json::from_str(&reply).unwrap();
        assert!(reply["error"].as_str().unwrap().contains(key), "{reply}");
        assert_eq!(reply["problems"][0]["loc"], json!([key]), "{reply}");
    }
    // Nothing was delivered: the next frame is the pong.
    assert_next_is_pong(&mut member).await;

    let body = json!({"group": "chat:news", "frame": {"action": "announcement", "payload": "hi"}}).to_string();
    let (status, reply) = broker.http("POST", "/api/publish", Some(API_KEY), &body).await;
    assert_eq!(status, 200, "{reply}");
    let got = member.recv().await;
    assert_eq!(
        (&got["action"], &got["payload"], &got["sender"]),
        (&json!("announcement"), &json!("hi"), &json!("api"))
    );
    assert_eq!(got["message_id"].as_str().map(str::len), Some(36), "{got}");
    assert!(got["timestamp"].is_string(), "{got}");
}

/// A published frame keeps the rules of a client frame: an object with a string `action`, a
/// string `ref` if any, each envelope key once, and no deeper than serde_json's 128 levels (a
/// 5,000-deep frame used to be delivered, unstamped on a metadata route).
#[tokio::test]
async fn published_frames_keep_the_client_frame_rules() {
    let broker = Broker::start();
    let mut member = broker.connect("/ws/chat-meta/news").await;
    assert_next_is_pong(&mut member).await;
    let deep = format!(r#"{{"action":"a","payload":{}{}}}"#, "[".repeat(5000), "]".repeat(5000));
    let deep_beside = format!(r#"{{"action":"a","x":{}{}}}"#, "[".repeat(5000), "]".repeat(5000));
    let cases = [
        ("5,000 levels deep in the payload", deep.as_str(), "json_invalid"),
        ("5,000 levels deep beside the payload", deep_beside.as_str(), "json_invalid"),
        ("no action", r#"{"payload":{"text":"hi"}}"#, "union_tag_not_found"),
        ("a number as the action", r#"{"action":5}"#, "string_type"),
        ("a number as the ref", r#"{"action":"a","ref":5}"#, "string_type"),
        ("the action twice", r#"{"action":"a","action":"b"}"#, "json_invalid"),
    ];
    for (case, frame, kind) in cases {
        let body = format!(r#"{{"group":"chat:news","frame":{frame}}}"#);
        let (status, reply) = broker.http("POST", "/api/publish", Some(API_KEY), &body).await;
        assert_eq!(status, 400, "{case}: {reply}");
        let reply: Value = serde_json::from_str(&reply).unwrap();
        assert_eq!(reply["problems"][0]["type"], kind, "{case}: {reply}");
    }
    assert_next_is_pong(&mut member).await;
}

/// A body that stalls is answered 408 once `server.handshake_timeout_ms` has passed, and the
/// connection closed, instead of being held for as long as the client likes.
#[tokio::test]
async fn a_stalled_publish_body_gets_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let broker = Broker::with_config(&crate::harness::default_config("[server]\nhandshake_timeout_ms = 1000\n"));
    let mut tcp = tokio::net::TcpStream::connect(broker.addr).await.unwrap();
    let head = format!(
        "POST /api/publish HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {API_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"group\":"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let started = std::time::Instant::now();
    let mut response = Vec::new();
    // Well under the 9 s and more the broker used to hold it, well over the 1 s deadline.
    tokio::time::timeout(std::time::Duration::from_secs(6), tcp.read_to_end(&mut response))
        .await
        .expect("an answer and the end of the connection within 6 s")
        .unwrap();
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(started.elapsed() >= std::time::Duration::from_millis(900), "{:?}", started.elapsed());
    let hits = broker.metric("broker_limit_hits_total{limit=\"server.handshake_timeout_ms\"}").await;
    assert_eq!(hits, 1.0);
}

/// An endpoint that exists answers a method it does not take with 405 and `Allow`, whether or not
/// the API has a key: the method is wrong with any key.
#[tokio::test]
async fn wrong_methods_get_405_with_allow_before_the_key_check() {
    let without_key = crate::harness::default_config("").replace(&format!("[api]\nkey = \"{API_KEY}\"\n"), "");
    for broker in [Broker::with_config(&without_key), Broker::start()] {
        for (method, path, allow) in [
            ("POST", "/healthz", "GET, HEAD"),
            ("DELETE", "/metrics", "GET, HEAD"),
            ("PUT", "/asyncapi.json", "GET, HEAD"),
            ("GET", "/api/publish", "POST"),
            ("DELETE", "/api/plugins", "GET, HEAD"),
        ] {
            let response = raw_http(&broker, method, path).await;
            assert!(response.starts_with("HTTP/1.1 405"), "{method} {path}: {response}");
            assert!(
                response.to_ascii_lowercase().contains(&format!("\r\nallow: {}\r\n", allow.to_ascii_lowercase())),
                "{method} {path}: {response}"
            );
        }
        // The methods an endpoint takes still work, HEAD without a body.
        assert_eq!(broker.http("GET", "/healthz", None, "").await, (200, "ok\n".to_owned()));
        let head = raw_http(&broker, "HEAD", "/healthz").await;
        assert!(head.starts_with("HTTP/1.1 200") && head.ends_with("\r\n\r\n"), "{head}");
    }
}

/// One request without a body over raw TCP: the whole response.
async fn raw_http(broker: &Broker, method: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(broker.addr).await.unwrap();
    let request = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(crate::harness::WAIT, tcp.read_to_end(&mut response)).await.unwrap().unwrap();
    String::from_utf8(response).unwrap()
}

/// A ping round trip on a route with metadata: the next frame is the (stamped) pong, so nothing was
/// delivered before it.
async fn assert_next_is_pong(client: &mut Client) {
    let reply = client.request(json!({"action": "ping"})).await;
    assert_eq!(reply["action"], "pong", "{reply}");
}

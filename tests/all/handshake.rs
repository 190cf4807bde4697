//! What happens before a connection is upgraded, and at its first step.

use crate::harness::Broker;
use serde_json::json;
use tokio_tungstenite::tungstenite::Error as WsError;

#[tokio::test]
async fn unknown_paths_are_404_before_any_upgrade() {
    let broker = Broker::start();
    match tokio_tungstenite::connect_async(broker.url("/ws/nowhere")).await {
        Err(WsError::Http(response)) => {
            assert_eq!(response.status(), 404);
            let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).to_string();
            assert!(body.contains("/ws/nowhere"), "{body}");
        }
        other => panic!("expected an HTTP 404, got {other:?}"),
    }
}

#[tokio::test]
async fn plain_http_to_a_websocket_route_is_told_to_upgrade() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let broker = Broker::start();
    let mut tcp = tokio::net::TcpStream::connect(broker.addr).await.unwrap();
    tcp.write_all(b"GET /ws/system HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(crate::harness::WAIT, tcp.read_to_string(&mut response)).await.unwrap().unwrap();
    assert!(response.starts_with("HTTP/1.1 426"), "{response}");
}

#[tokio::test]
async fn a_trailing_slash_matches_the_route() {
    let broker = Broker::start();
    let mut client = broker.connect("/ws/system/").await;
    assert_eq!(client.recv().await["action"], "system_echo");
}

#[tokio::test]
async fn on_connect_can_refuse_with_a_code_and_reason() {
    let broker = Broker::start();
    let mut client = broker.connect("/ws/reject").await;
    assert_eq!(client.recv_close().await, (4403, "this route refuses everyone".to_owned()));
}

#[tokio::test]
async fn route_and_path_parameters_reach_the_plugin() {
    let broker = Broker::start();
    let mut client = broker.connect("/ws/testbed/room1/").await;
    let reply = client.request(json!({"action": "params"})).await;
    assert_eq!(
        reply["payload"],
        json!({"route": "/ws/testbed/{room}", "path": "/ws/testbed/room1/", "params": {"room": "room1"}})
    );
}

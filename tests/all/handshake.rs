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

/// Sends `request` over raw TCP and returns the response head (status line and headers), headers
/// lowercased: a WebSocket client library would not send these malformed handshakes.
async fn raw_handshake(broker: &Broker, request: &str) -> String {
    use tokio::io::AsyncWriteExt;
    let mut tcp = tokio::net::TcpStream::connect(broker.addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    String::from_utf8(read_head(&mut tcp).await).unwrap().to_ascii_lowercase()
}

/// Reads a response head byte by byte, so nothing after it is consumed.
async fn read_head(tcp: &mut tokio::net::TcpStream) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let read = async {
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && tcp.read(&mut byte).await.unwrap() == 1 {
            head.push(byte[0]);
        }
    };
    tokio::time::timeout(crate::harness::WAIT, read).await.expect("a response head");
    head
}

/// A handshake to `/ws/system` with these header lines (each ending in `\r\n`) and HTTP version.
fn handshake(version: &str, headers: &str) -> String {
    format!("GET /ws/system HTTP/{version}\r\n{headers}\r\n")
}

const UPGRADE: &str = "Connection: Upgrade\r\nUpgrade: websocket\r\n";
const HOST: &str = "Host: localhost\r\n";
const VERSION_13: &str = "Sec-WebSocket-Version: 13\r\n";
const KEY: &str = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

fn status(head: &str) -> &str {
    head.split(' ').nth(1).unwrap_or_default()
}

#[tokio::test]
async fn a_well_formed_raw_handshake_is_upgraded() {
    let broker = Broker::start();
    let head = raw_handshake(&broker, &handshake("1.1", &format!("{HOST}{UPGRADE}{VERSION_13}{KEY}"))).await;
    assert_eq!(status(&head), "101", "{head}");
    assert!(head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="), "{head}");
}

/// RFC 6455 §4.2.1: the key is the base64 of 16 bytes; anything else is refused before any upgrade.
#[tokio::test]
async fn a_malformed_websocket_key_is_refused_with_400() {
    let broker = Broker::start();
    for key in [
        "not base64 at all!",
        "c2hvcnQ=",                 // "short": 5 bytes
        "dGhlIHNhbXBsZSBub25jZSE=", // 17 bytes
        "dGhlIHNhbXBsZSBub25jZR==", // 16 bytes with stray bits in the last character
        "dGhlIHNhbXBsZSBub25jZQ==, dGhlIHNhbXBsZSBub25jZQ==",
        "",
    ] {
        let headers = format!("{HOST}{UPGRADE}{VERSION_13}Sec-WebSocket-Key: {key}\r\n");
        let head = raw_handshake(&broker, &handshake("1.1", &headers)).await;
        assert_eq!(status(&head), "400", "{key:?}: {head}");
    }
    // Without the key at all.
    let head = raw_handshake(&broker, &handshake("1.1", &format!("{HOST}{UPGRADE}{VERSION_13}"))).await;
    assert_eq!(status(&head), "400", "{head}");
    broker.echo_client().await.assert_alive().await;
}

/// HTTP/1.0 has no upgrade: the broker used to answer 101 and then end the connection.
#[tokio::test]
async fn an_http_1_0_upgrade_is_refused_with_400() {
    let broker = Broker::start();
    let head = raw_handshake(&broker, &handshake("1.0", &format!("{HOST}{UPGRADE}{VERSION_13}{KEY}"))).await;
    assert_eq!(status(&head), "400", "{head}");
}

#[tokio::test]
async fn an_upgrade_without_host_is_refused_with_400() {
    let broker = Broker::start();
    let head = raw_handshake(&broker, &handshake("1.1", &format!("{UPGRADE}{VERSION_13}{KEY}"))).await;
    assert_eq!(status(&head), "400", "{head}");
}

/// RFC 6455 §4.4: a version the server does not speak gets 426 with the versions it does.
#[tokio::test]
async fn an_unsupported_version_gets_426_naming_version_13() {
    let broker = Broker::start();
    for version in ["Sec-WebSocket-Version: 8\r\n", ""] {
        let head = raw_handshake(&broker, &handshake("1.1", &format!("{HOST}{UPGRADE}{version}{KEY}"))).await;
        assert_eq!(status(&head), "426", "{version:?}: {head}");
        assert!(head.contains("\r\nsec-websocket-version: 13\r\n"), "{version:?}: {head}");
    }
}

/// A client may send its first frames in the same packet as its handshake (nothing in RFC 6455
/// makes it wait for the 101): the server read them with the request and must not lose them.
#[tokio::test]
async fn frames_sent_with_the_handshake_are_answered() {
    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;
    use tokio_tungstenite::tungstenite::protocol::Role;
    let broker = Broker::start();
    let mut tcp = tokio::net::TcpStream::connect(broker.addr).await.unwrap();
    let mut bytes = handshake("1.1", &format!("{HOST}{UPGRADE}{VERSION_13}{KEY}")).into_bytes();
    // A masked text frame, as a client sends it.
    let text = br#"{"action":"ping","ref":"early"}"#;
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    bytes.extend([0x81, 0x80 | text.len() as u8]);
    bytes.extend(mask);
    bytes.extend(text.iter().enumerate().map(|(i, byte)| byte ^ mask[i % 4]));
    tcp.write_all(&bytes).await.unwrap();
    let head = read_head(&mut tcp).await;
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(tcp, Role::Client, None).await;
    let mut texts = Vec::new();
    let read = async {
        while texts.len() < 2 {
            if let Some(Ok(message)) = ws.next().await
                && message.is_text()
            {
                texts.push(serde_json::from_str::<serde_json::Value>(message.to_text().unwrap()).unwrap());
            }
        }
    };
    tokio::time::timeout(crate::harness::WAIT, read).await.expect("the welcome and the pong");
    assert_eq!(texts[0]["action"], "system_echo", "{texts:?}");
    assert_eq!((&texts[1]["action"], &texts[1]["ref"]), (&json!("pong"), &json!("early")), "{texts:?}");
}

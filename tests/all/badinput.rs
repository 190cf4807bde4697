//! Bad input below and beside the JSON protocol, driven over raw sockets: frames a WebSocket
//! library would never send, JSON at its edges, floods. Each case has a documented outcome
//! (SECURITY.md); the broker never panics and keeps serving the others.

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{Broker, WAIT, default_config};

const TEXT: u8 = 0x1;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const CONTINUATION: u8 = 0x0;

/// A WebSocket client that writes frames byte by byte as it is told, valid or not.
struct Raw {
    tcp: TcpStream,
}

/// What the broker sent back.
#[derive(Debug, PartialEq)]
enum Got {
    Text(Value),
    Close(u16),
    Pong,
    /// The socket ended without a close frame.
    Ended,
}

impl Raw {
    async fn connect(broker: &Broker, path: &str) -> Raw {
        let mut tcp = TcpStream::connect(broker.addr).await.unwrap();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            tokio::time::timeout(WAIT, tcp.read_exact(&mut byte)).await.expect("a response").expect("a byte");
            head.push(byte[0]);
        }
        assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
        Raw { tcp }
    }

    /// Writes one frame, masked as a client must.
    async fn frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        let mut bytes = vec![(u8::from(fin) << 7) | opcode];
        match payload.len() {
            n if n < 126 => bytes.push(0x80 | n as u8),
            n if n <= 0xffff => {
                bytes.push(0x80 | 126);
                bytes.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                bytes.push(0x80 | 127);
                bytes.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mask = [0x12, 0x34, 0x56, 0x78];
        bytes.extend_from_slice(&mask);
        bytes.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        // The broker may already have closed: what it sent is read by `next`.
        let _ = self.tcp.write_all(&bytes).await;
    }

    async fn text(&mut self, text: &str) {
        self.frame(true, TEXT, text.as_bytes()).await;
    }

    /// The next frame from the broker.
    async fn next(&mut self) -> Got {
        let mut head = [0u8; 2];
        match tokio::time::timeout(WAIT, self.tcp.read_exact(&mut head)).await.expect("an answer within the wait") {
            Ok(_) => {}
            Err(_) => return Got::Ended,
        }
        let mut len = u64::from(head[1] & 0x7f);
        if len == 126 {
            let mut ext = [0u8; 2];
            self.tcp.read_exact(&mut ext).await.unwrap();
            len = u64::from(u16::from_be_bytes(ext));
        } else if len == 127 {
            let mut ext = [0u8; 8];
            self.tcp.read_exact(&mut ext).await.unwrap();
            len = u64::from_be_bytes(ext);
        }
        let mut payload = vec![0u8; len as usize];
        self.tcp.read_exact(&mut payload).await.unwrap();
        match head[0] & 0x0f {
            TEXT => Got::Text(serde_json::from_slice(&payload).expect("the broker sends JSON")),
            CLOSE => Got::Close(payload.get(..2).map_or(1005, |c| u16::from_be_bytes([c[0], c[1]]))),
            0xA => Got::Pong,
            other => panic!("unexpected opcode {other}"),
        }
    }

    /// The `type` of the first problem of the next frame, which must be an error frame.
    async fn error_type(&mut self) -> String {
        match self.next().await {
            Got::Text(frame) if frame["action"] == "error" => frame["payload"][0]["type"].as_str().unwrap().to_owned(),
            other => panic!("expected an error frame, got {other:?}"),
        }
    }
}

fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

/// Frames that break the WebSocket protocol close the connection with the code RFC 6455 gives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_violations_get_their_close_codes() {
    let broker = Broker::start();
    // (case, close code, frames as (fin, opcode, payload))
    type Frames = Vec<(bool, u8, Vec<u8>)>;
    let cases: [(&str, u16, Frames); 4] = [
        ("invalid UTF-8 in a text frame", 1007, vec![(true, TEXT, vec![b'{', 0xff, 0xfe, b'}'])]),
        ("a ping with 126 bytes of payload", 1002, vec![(true, PING, vec![b'x'; 126])]),
        ("a close frame with code 999", 1002, vec![(true, CLOSE, 999u16.to_be_bytes().to_vec())]),
        ("a continuation without a first frame", 1002, vec![(true, CONTINUATION, b"{}".to_vec())]),
    ];
    for (case, code, frames) in cases {
        let mut raw = Raw::connect(&broker, "/ws/testbed").await;
        for (fin, opcode, payload) in frames {
            raw.frame(fin, opcode, &payload).await;
        }
        assert_eq!(raw.next().await, Got::Close(code), "{case}");
        broker.connect("/ws/testbed").await.assert_alive().await;
    }
}

/// A message split over several frames is one message; control frames may come between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragmented_messages_are_put_together() {
    let broker = Broker::start();
    let mut raw = Raw::connect(&broker, "/ws/testbed").await;
    raw.frame(false, TEXT, br#"{"action":"#).await;
    raw.frame(true, PING, b"between").await;
    raw.frame(true, CONTINUATION, br#""ping","ref":"split"}"#).await;
    assert_eq!(raw.next().await, Got::Pong);
    assert_eq!(raw.next().await, Got::Text(json!({"action": "pong", "payload": null, "ref": "split"})));
}

/// JSON at its edges: each gets an error frame, and the connection goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_at_its_edges_gets_error_frames() {
    let broker = Broker::start();
    let mut raw = Raw::connect(&broker, "/ws/system").await;
    assert!(matches!(raw.next().await, Got::Text(welcome) if welcome["action"] == "system_echo"));
    let deep_payload = format!(r#"{{"action":"user_message","payload":{{"message":{}}}}}"#, nested(100_000));
    let deep_envelope = nested(100_000);
    let cases = [
        ("100,000 levels deep in the payload", deep_payload.as_str(), "json_invalid"),
        ("100,000 levels deep as the frame", deep_envelope.as_str(), "model_type"),
        ("a number beyond f64", r#"{"action":"user_message","payload":{"message":1e400}}"#, "json_invalid"),
        (
            "a huge integer where a string goes",
            r#"{"action":"user_message","payload":{"message":123456789012345678901234567890}}"#,
            "string_type",
        ),
        ("the action twice", r#"{"action":"ping","action":"user_message"}"#, "json_invalid"),
        (
            "a NUL and a lone surrogate escape",
            r#"{"action":"user_message","payload":{"message":"\u0000\ud800"}}"#,
            "json_invalid",
        ),
    ];
    for (case, text, kind) in cases {
        raw.text(text).await;
        assert_eq!(raw.error_type().await, kind, "{case}");
    }
    // A key twice in the payload passes the schema (the last one counts there), but the plugin's
    // types refuse it, at the key.
    raw.text(r#"{"action":"user_message","payload":{"message":"first","message":"last"}}"#).await;
    match raw.next().await {
        Got::Text(reply) => {
            assert_eq!(reply["payload"][0]["type"], "value_error", "{reply}");
            assert_eq!(reply["payload"][0]["loc"], json!(["user_message", "payload", "message"]), "{reply}");
        }
        other => panic!("{other:?}"),
    }
    raw.text(r#"{"action":"ping"}"#).await;
    assert_eq!(raw.next().await, Got::Text(json!({"action": "pong", "payload": null})));
}

/// A key twice anywhere in a payload the plugin publishes a schema for is refused at that key:
/// keys the schema names or not, nested ones, and a hundred thousand of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_twice_anywhere_in_a_payload_is_refused_at_the_key() {
    let broker = Broker::with_config(&crate::harness::large_messages_config());
    let mut raw = Raw::connect(&broker, "/ws/large/system").await;
    assert!(matches!(raw.next().await, Got::Text(welcome) if welcome["action"] == "system_echo"));
    let many = format!(r#"{{"action":"user_message","payload":{{"message":"m"{}}}}}"#, r#","k":0"#.repeat(100_000));
    let cases = [
        ("an unknown key twice", r#"{"action":"user_message","payload":{"message":"m","x":1,"x":2}}"#, json!(["x"])),
        (
            "a nested key twice",
            r#"{"action":"user_message","payload":{"message":"m","meta":{"tags":[{"a":1,"a":1}]}}}"#,
            json!(["meta", "tags", 0, "a"]),
        ),
        ("an unknown key 100,000 times", many.as_str(), json!(["k"])),
    ];
    for (case, text, at) in cases {
        raw.text(text).await;
        match raw.next().await {
            Got::Text(reply) => {
                let problems = reply["payload"].as_array().expect("problems");
                assert_eq!(problems.len(), 1, "{case}: {reply}");
                assert_eq!(problems[0]["type"], "value_error", "{case}: {reply}");
                let mut loc = json!(["user_message", "payload"]);
                loc.as_array_mut().unwrap().extend(at.as_array().unwrap().iter().cloned());
                assert_eq!(problems[0]["loc"], loc, "{case}: {reply}");
            }
            other => panic!("{case}: {other:?}"),
        }
    }
    raw.text(r#"{"action":"user_message","payload":{"message":"once"}}"#).await;
    assert!(matches!(raw.next().await, Got::Text(echo) if echo["payload"]["message"] == "🔧 System Echo: once"));
}

/// A client still writing when the broker closes it finishes its write and reads the close frame
/// with its code, rather than a TCP reset: after the close frame the broker shuts its side down and
/// reads (and drops) what is still coming, for a bounded time and amount.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_still_writing_when_closed_reads_the_close_code() {
    let broker = Broker::with_config(&default_config(
        "[server]\nmax_message_bytes = 65536\nmessages_per_second = 10\nmessage_burst = 10\nrate_limit_close_after = 5\n",
    ));
    // More than the socket buffers of both ends hold, so the client is still writing when closed.
    const MORE: usize = 24 << 20;
    let masked = |first: &[u8]| {
        let mut bytes = first.to_vec();
        bytes.resize(MORE, b'x');
        bytes
    };
    // A text frame header (FIN, masked, 64-bit length) and its mask, then the payload.
    let mut oversized = vec![0x81, 0x80 | 127];
    oversized.extend_from_slice(&(MORE as u64).to_be_bytes());
    oversized.extend_from_slice(&[0, 0, 0, 0]);
    // 24 MiB of 16 KiB text frames: over the message rate after ten.
    let mut flood = Vec::with_capacity(MORE);
    while flood.len() < MORE {
        flood.extend_from_slice(&[0x81, 0x80 | 126, 0x40, 0x00, 0, 0, 0, 0]);
        flood.resize(flood.len() + (16 << 10), b' ');
    }
    let cases = [
        ("a 24 MiB message over the 64 KiB limit", 1009, masked(&oversized)),
        ("1,536 frames past the message rate", 1008, flood),
        // A reserved opcode (0x3), then more bytes.
        ("a reserved opcode", 1002, masked(&[0x83, 0x81, 0, 0, 0, 0, b'?'])),
        // A text frame `{\xff}`, then more bytes.
        ("text that is not UTF-8", 1007, masked(&[0x81, 0x83, 0, 0, 0, 0, b'{', 0xff, b'}'])),
    ];
    for (case, code, bytes) in cases {
        let mut raw = Raw::connect(&broker, "/ws/testbed").await;
        let written = tokio::time::timeout(WAIT, raw.tcp.write_all(&bytes)).await.expect("written within the wait");
        assert!(written.is_ok(), "{case}: the write was cut off: {written:?}");
        // The answers to what was handled before the close come first.
        let mut got = raw.next().await;
        while let Got::Text(_) = got {
            got = raw.next().await;
        }
        assert_eq!(got, Got::Close(code), "{case}");
    }
    broker.connect("/ws/testbed").await.assert_alive().await;
}

/// A flood of tiny frames runs into the rate limit, then the close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_tiny_frames_is_limited_then_closed() {
    let broker = Broker::with_config(&default_config(
        "[server]\nmessages_per_second = 100\nmessage_burst = 100\nrate_limit_close_after = 50\n",
    ));
    let mut raw = Raw::connect(&broker, "/ws/testbed").await;
    for _ in 0..1000 {
        raw.text("{}").await;
    }
    let (mut errors, mut limited) = (0, 0);
    let code = loop {
        match raw.next().await {
            Got::Text(frame) if frame["payload"][0]["type"] == "rate_limited" => limited += 1,
            Got::Text(_) => errors += 1,
            Got::Close(code) => break code,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(code, 1008);
    assert!(errors >= 100 && limited >= 1, "{errors} answered, {limited} refused");
    broker.connect("/ws/testbed").await.assert_alive().await;
}

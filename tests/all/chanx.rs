//! Compatibility with Chanx, proven against Chanx itself (chanx 2.13.0 from PyPI, installed in
//! target/chanx by `cargo xtask test`):
//! - the seed tutorials' apps (tests/chanx: the FastAPI system echo and the room chat), served by
//!   uvicorn, and the broker serving the shipped echo and chat plugins hold the same conversation;
//!   every frame must be equal as JSON, but for the differences listed in `Difference`, each with
//!   its reason (docs/from-chanx.md lists them too);
//! - `chanx generate-client` reads the broker's live /asyncapi.json, and the generated Python
//!   client converses with the broker (tests/chanx/converse.py).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::harness::{Broker, Client, Received, WAIT, plugin_path};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root").to_owned()
}

/// The virtualenv with chanx and uvicorn; a missing one fails the test, naming the fix.
fn venv() -> PathBuf {
    let venv = root().join("target/chanx");
    for tool in ["uvicorn", "chanx", "python"] {
        assert!(
            venv.join("bin").join(tool).exists(),
            "{} has no {tool}: run `cargo xtask test`, which installs chanx 2.13.0 and uvicorn there",
            venv.display()
        );
    }
    venv
}

/// One of the seed apps of tests/chanx, served by uvicorn on an ephemeral port; killed on drop.
struct ChanxApp {
    child: Child,
    addr: String,
}

impl ChanxApp {
    fn start(module: &str) -> ChanxApp {
        let mut child = Command::new(venv().join("bin/uvicorn"))
            .args([&format!("{module}:app"), "--host", "127.0.0.1", "--port", "0"])
            .current_dir(root().join("tests/chanx"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start uvicorn");
        let mut lines = BufReader::new(child.stderr.take().expect("uvicorn's stderr")).lines();
        let mut seen = String::new();
        let addr = loop {
            let Some(Ok(line)) = lines.next() else {
                let _ = child.kill();
                panic!("uvicorn {module} ended before it listened:\n{seen}");
            };
            seen.push_str(&line);
            seen.push('\n');
            if let Some(rest) = line.split("Uvicorn running on http://").nth(1) {
                break rest.split_whitespace().next().expect("an address").to_owned();
            }
        };
        // Keep reading, so a full pipe never blocks the app.
        std::thread::spawn(move || lines.for_each(drop));
        ChanxApp { child, addr }
    }
}

impl Drop for ChanxApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What stays different on purpose. Each is applied to Chanx's frame at the steps that name it,
/// and to nothing else: the result must then equal the broker's frame exactly.
#[derive(Debug, Clone, Copy)]
enum Difference {
    /// Chanx 2.13 stamps `"version": 1` beside the `ref` of a reply: the version of its topic
    /// envelope. The broker has no topics; its replies carry `ref` alone, as its clients (and
    /// Chanx's generated clients, which ignore the key) read them.
    EnvelopeVersion,
    /// pydantic names the payload's model in `model_type`: the tutorial's `MessagePayload` and
    /// `ChatMessagePayload`, the shipped plugins' `UserMessage` and `NewChatMessage`. Same words,
    /// each side's type name.
    ModelName,
    /// A payload (or frame) that is neither an object nor `null`: Chanx says "Input should be a
    /// valid dictionary or instance of <Model>", the broker keeps "Input should be an object",
    /// which its clients match on; `type` and `loc` are the same.
    NotAnObject,
    /// The JSON parser's own words after "Invalid JSON: " (Python's json module vs serde_json), and
    /// the broker's explanation for an empty or binary frame; `type` and `loc` are the same.
    ParserWords(&'static str),
    /// `version`, `topic` and `seq` are Chanx's envelope keys (a `version` that is not an integer
    /// is refused with `int_parsing`); for the broker they are extra keys, ignored as every extra
    /// top-level key is.
    EnvelopeKeys,
}

impl Difference {
    fn apply(self, chanx: &mut Value) {
        let before = chanx.to_string();
        match self {
            Difference::EnvelopeVersion => {
                assert_eq!(chanx.as_object_mut().and_then(|o| o.remove("version")), Some(json!(1)), "{chanx}");
            }
            Difference::ModelName => {
                for entry in chanx["payload"].as_array_mut().expect("an error frame") {
                    let msg = entry["msg"].as_str().expect("a msg");
                    let renamed = msg
                        .replace("instance of MessagePayload", "instance of UserMessage")
                        .replace("instance of ChatMessagePayload", "instance of NewChatMessage");
                    assert_ne!(msg, renamed, "no model name in {before}");
                    entry["msg"] = renamed.into();
                }
            }
            Difference::NotAnObject => {
                for entry in chanx["payload"].as_array_mut().expect("an error frame") {
                    assert_eq!(entry["type"], "model_type", "{before}");
                    assert!(
                        entry["msg"]
                            .as_str()
                            .unwrap()
                            .starts_with("Input should be a valid dictionary or instance of ")
                    );
                    entry["msg"] = "Input should be an object".into();
                }
            }
            Difference::ParserWords(ours) => {
                let entry = &mut chanx["payload"][0];
                assert_eq!(entry["type"], "json_invalid", "{before}");
                assert!(entry["msg"].as_str().unwrap().starts_with("Invalid JSON: "), "{before}");
                entry["msg"] = ours.into();
            }
            Difference::EnvelopeKeys => {
                assert_eq!(chanx["payload"][0]["type"], "int_parsing", "{chanx}");
                assert_eq!(chanx["payload"][0]["loc"], json!(["version"]), "{chanx}");
                *chanx = json!({"action": "pong", "payload": null});
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Route {
    Echo,
    Chat(&'static str),
}

enum Step {
    /// Client N connects.
    Open(usize, Route),
    /// Client N sends a text frame, as is.
    Text(usize, &'static str),
    /// Client N sends a binary frame.
    Binary(usize, &'static [u8]),
    /// Client N gets a frame; the differences listed are applied to Chanx's before comparing.
    Expect(usize, &'static [Difference]),
    /// Client N gets nothing (a fan-out that leaves the sender out, another room).
    Quiet(usize),
}

use Difference::*;
use Step::*;

const E: usize = 0;
const ALICE: usize = 1;
const BOB: usize = 2;
const CAROL: usize = 3;
const DAVE: usize = 4;

/// The conversation: the echo tutorial's, then the chat tutorial's, then every error of the
/// README's table that Chanx has too.
const CONVERSATION: &[Step] = &[
    Open(E, Route::Echo),
    Expect(E, &[]), // the welcome
    Text(E, r#"{"action":"user_message","payload":{"message":"Hello"}}"#),
    Expect(E, &[]),
    Text(E, r#"{"action":"user_message","payload":{"message":"héllo 🌍 \"quoted\""}}"#),
    Expect(E, &[]),
    Text(E, r#"{"action":"user_message","payload":{"message":"with ref"},"ref":"r1"}"#),
    Expect(E, &[EnvelopeVersion]),
    Text(E, r#"{"action":"ping"}"#),
    Expect(E, &[]),
    Text(E, r#"{"action":"ping","payload":null}"#),
    Expect(E, &[]),
    Text(E, r#"{"action":"ping","ref":"p1"}"#),
    Expect(E, &[EnvelopeVersion]),
    Text(E, r#"{"action":"ping","ref":null}"#),
    Expect(E, &[]),
    // Errors, in the README table's order.
    Text(E, "not json"),
    Expect(E, &[ParserWords("Invalid JSON: expected ident at line 1 column 2")]),
    Text(E, ""),
    Expect(E, &[ParserWords("Invalid JSON: empty frame")]),
    Binary(E, &[1, 2, 3]),
    Expect(E, &[ParserWords("Invalid JSON: binary frames are not supported, send JSON as text frames")]),
    Text(E, "[1]"),
    Expect(E, &[NotAnObject]),
    Text(E, r#""text""#),
    Expect(E, &[NotAnObject]),
    Text(E, r#"{"payload":{"message":"x"}}"#),
    Expect(E, &[]),
    Text(E, r#"{"action":"nope"}"#),
    Expect(E, &[]),
    Text(E, r#"{"action":5}"#),
    Expect(E, &[]),
    Text(E, r#"{"action":"ping","ref":5}"#),
    Expect(E, &[]),
    Text(E, r#"{"action":"user_message"}"#),
    Expect(E, &[]),
    Text(E, r#"{"action":"user_message","payload":null}"#),
    Expect(E, &[ModelName]),
    Text(E, r#"{"action":"user_message","payload":null,"ref":"n1"}"#),
    Expect(E, &[ModelName, EnvelopeVersion]),
    Text(E, r#"{"action":"user_message","payload":[1]}"#),
    Expect(E, &[NotAnObject]),
    Text(E, r#"{"action":"user_message","payload":{}}"#),
    Expect(E, &[]),
    Text(E, r#"{"action":"user_message","payload":{"message":1}}"#),
    Expect(E, &[]),
    Text(E, r#"{"action":"ping","payload":1}"#),
    Expect(E, &[]),
    // Keys the payload type does not declare are ignored on both sides (pydantic's default).
    Text(E, r#"{"action":"user_message","payload":{"message":"extra","mood":"fine"},"x":1}"#),
    Expect(E, &[]),
    Text(E, r#"{"action":"ping","version":"one"}"#),
    Expect(E, &[EnvelopeKeys]),
    // The room chat: fan-out to the room, the sender left out, other rooms untouched.
    Open(ALICE, Route::Chat("room1")),
    Open(BOB, Route::Chat("room1")),
    Open(CAROL, Route::Chat("room1")),
    Open(DAVE, Route::Chat("room2")),
    // Each has joined once its ping is answered: frames of a connection are handled in order.
    Text(ALICE, r#"{"action":"ping"}"#),
    Expect(ALICE, &[]),
    Text(BOB, r#"{"action":"ping"}"#),
    Expect(BOB, &[]),
    Text(CAROL, r#"{"action":"ping"}"#),
    Expect(CAROL, &[]),
    Text(DAVE, r#"{"action":"ping"}"#),
    Expect(DAVE, &[]),
    Text(ALICE, r#"{"action":"new_chat_message","payload":{"message":"Hello everyone!","name":"Alice"}}"#),
    Expect(BOB, &[]),
    Expect(CAROL, &[]),
    Quiet(ALICE),
    Quiet(DAVE),
    // A broadcast is no reply: the `ref` stays with the sender, who gets nothing.
    Text(BOB, r#"{"action":"new_chat_message","payload":{"message":"hi, Alice","name":"Bob"},"ref":"b1"}"#),
    Expect(ALICE, &[]),
    Expect(CAROL, &[]),
    Quiet(BOB),
    Text(DAVE, r#"{"action":"new_chat_message","payload":{"message":"anyone?","name":"Dave"}}"#),
    Quiet(ALICE),
    Quiet(DAVE),
    Text(CAROL, r#"{"action":"new_chat_message","payload":{"message":"m"}}"#),
    Expect(CAROL, &[]),
    Text(CAROL, r#"{"action":"new_chat_message","payload":null}"#),
    Expect(CAROL, &[ModelName]),
    Text(CAROL, r#"{"action":"user_message","payload":{"message":"wrong room"}}"#),
    Expect(CAROL, &[]),
    Text(BOB, r#"{"action":"ping","ref":"p2"}"#),
    Expect(BOB, &[EnvelopeVersion]),
];

/// Where a side serves the echo and the chat.
struct Side {
    name: &'static str,
    echo: String,
    chat: String,
}

impl Side {
    async fn connect(&self, route: Route) -> Client {
        let url = match route {
            Route::Echo => format!("ws://{}/ws/system", self.echo),
            Route::Chat(room) => format!("ws://{}/ws/chat/{room}/", self.chat),
        };
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(&url))
            .await
            .unwrap_or_else(|_| panic!("{}: connecting to {url} timed out", self.name))
            .unwrap_or_else(|e| panic!("{}: cannot connect to {url}: {e}", self.name));
        Client { ws }
    }

    /// Holds the conversation: the frames received at each `Expect`, in order.
    async fn converse(&self) -> Vec<Value> {
        let mut clients: Vec<Option<Client>> = (0..5).map(|_| None).collect();
        let mut received = Vec::new();
        for (i, step) in CONVERSATION.iter().enumerate() {
            match step {
                Open(n, route) => clients[*n] = Some(self.connect(*route).await),
                Text(n, text) => opened(&mut clients, *n).send_text(text).await,
                Binary(n, bytes) => opened(&mut clients, *n).send_binary(bytes).await,
                Expect(n, _) => match opened(&mut clients, *n).next().await {
                    Received::Json(frame) => received.push(frame),
                    other => panic!("{}, step {i}: expected a frame, got {other:?}", self.name),
                },
                Quiet(n) => {
                    let next = opened(&mut clients, *n).ws.next();
                    if let Ok(frame) = tokio::time::timeout(Duration::from_millis(400), next).await {
                        panic!("{}, step {i}: expected nothing, got {frame:?}", self.name);
                    }
                }
            }
        }
        received
    }
}

fn opened(clients: &mut [Option<Client>], n: usize) -> &mut Client {
    clients[n].as_mut().expect("a client opened before use")
}

fn broker_config() -> String {
    format!(
        "[plugins.echo]\npath = \"{}\"\n\n[plugins.chat]\npath = \"{}\"\n\n\
         [[routes]]\npath = \"/ws/system\"\nplugin = \"echo\"\n\n\
         [[routes]]\npath = \"/ws/chat/{{room}}\"\nplugin = \"chat\"\n",
        plugin_path("echo").display(),
        plugin_path("chat").display(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_tutorials_hold_the_same_conversation_on_chanx_and_on_the_broker() {
    let frames = CONVERSATION.iter().filter(|s| matches!(s, Text(..) | Binary(..) | Expect(..))).count();
    assert!(frames >= 40, "the conversation has {frames} frames");
    let echo = ChanxApp::start("system_echo");
    let chat = ChanxApp::start("room_chat");
    let broker = Broker::with_config(&broker_config());
    let chanx = Side { name: "chanx", echo: echo.addr.clone(), chat: chat.addr.clone() };
    let ours = Side { name: "broker", echo: broker.addr.to_string(), chat: broker.addr.to_string() };
    let (theirs, ours) = (chanx.converse().await, ours.converse().await);

    let expects = CONVERSATION.iter().filter_map(|s| match s {
        Expect(_, differences) => Some(*differences),
        _ => None,
    });
    for (n, ((mut chanx, broker), differences)) in theirs.into_iter().zip(ours).zip(expects).enumerate() {
        let original = chanx.clone();
        for difference in differences {
            difference.apply(&mut chanx);
        }
        assert_eq!(broker, chanx, "frame {n}: Chanx sent {original}, with {differences:?} applied");
    }

    // Before any upgrade: a path no route serves.
    let refused = |addr: String| async move {
        match tokio_tungstenite::connect_async(format!("ws://{addr}/ws/nowhere")).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
            other => panic!("expected a refused handshake, got {:?}", other.map(|_| ())),
        }
    };
    // Starlette answers a WebSocket request no route takes with 403; the broker says what
    // happened, 404, as for any other request for a path it does not serve.
    assert_eq!(refused(echo.addr.clone()).await, 403);
    assert_eq!(refused(broker.addr.to_string()).await, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chanx_generates_a_client_from_the_live_document_that_talks_to_the_broker() {
    let venv = venv();
    let broker = Broker::with_config(&broker_config());
    let work = tempfile::tempdir().unwrap();
    let generate = Command::new(venv.join("bin/chanx"))
        .args(["generate-client", "--schema", &format!("http://{}/asyncapi.json", broker.addr), "--output"])
        .arg(work.path().join("broker_client"))
        .output()
        .expect("run chanx generate-client");
    let report = format!("{}{}", String::from_utf8_lossy(&generate.stdout), String::from_utf8_lossy(&generate.stderr));
    assert!(generate.status.success(), "chanx generate-client:\n{report}");
    let messages = std::fs::read_to_string(work.path().join("broker_client/system/messages.py")).unwrap();
    assert!(messages.contains("class UserMessage(BaseModel):"), "{messages}");
    assert!(messages.contains("OutgoingMessage = PingMessage | UserMessage"), "{messages}");

    let mut talk = tokio::process::Command::new(venv.join("bin/python"));
    talk.arg(root().join("tests/chanx/converse.py")).arg(broker.addr.to_string()).arg(work.path());
    let output = tokio::time::timeout(Duration::from_secs(60), talk.kill_on_drop(true).output())
        .await
        .expect("the script finished")
        .expect("python runs");
    let report = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{report}");
    for line in [
        "welcome: 🔧 System: Connection established!",
        "echo: 🔧 System Echo: typed hello",
        "ref: r1 🔧 System Echo: with ref",
        "ping: pong",
        "refused: model_type at user_message.payload: Input should be a valid dictionary or instance of UserMessage",
        "chat: alice: hi bob",
        "sender excluded",
        "chat: bob: hi alice",
        "done",
    ] {
        assert!(report.contains(line), "{line:?} not in:\n{report}");
    }
}

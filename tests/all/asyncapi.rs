//! The AsyncAPI document (served, printed, rendered) and the clients generated from it, checked by
//! the official tools: `@asyncapi/parser` and `tsc` (installed in tests/node by `cargo xtask test`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::harness::{Broker, default_config, run_cli};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root").to_owned()
}

fn node_dir() -> PathBuf {
    repo().join("tests/node")
}

/// The repository's broker.toml, its plugin paths made absolute so it works from any folder.
fn repository_config() -> String {
    let text = std::fs::read_to_string(repo().join("broker.toml")).expect("the repository's broker.toml");
    let plugins = repo().join("target/plugins");
    text.replace("path = \"target/plugins/", &format!("path = \"{}/", plugins.display()))
}

/// Runs a tool to its end, failing the test with its output if it fails to start.
fn run(command: &mut Command) -> Output {
    command.output().unwrap_or_else(|e| panic!("cannot run {command:?} (`cargo xtask test` installs it): {e}"))
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// Validates a document file with `@asyncapi/parser`: its report, which must say valid.
fn parse_with_official_parser(file: &Path) -> String {
    let output = run(Command::new("node").arg(node_dir().join("asyncapi-validate.mjs")).arg(file));
    let report = text(&output);
    assert!(output.status.success(), "{}:\n{report}", file.display());
    assert!(report.contains("valid: AsyncAPI 3.0.0"), "{report}");
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_document_passes_the_official_parser_and_describes_every_route() {
    // The test configuration has path parameters with rules, a metadata route, two plugins
    // sharing a namespace and a plugin built against the 0.1.0 contract.
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    for (path, file) in [("/asyncapi.json", "doc.json"), ("/asyncapi.yaml", "doc.yaml")] {
        let (status, body) = broker.http("GET", path, None, "").await;
        assert_eq!(status, 200, "{body}");
        std::fs::write(dir.path().join(file), &body).unwrap();
        let report = parse_with_official_parser(&dir.path().join(file));
        assert!(report.contains("8 channels"), "{report}");
    }
    let (_, body) = broker.http("GET", "/asyncapi.json", None, "").await;
    let doc: Value = serde_json::from_str(&body).unwrap();
    // Channels are named as Chanx's client generator needs: identifiers, from the routes' names.
    let chat = &doc["channels"]["chat"];
    assert_eq!(chat["address"], "/ws/chat/{room}");
    assert_eq!(chat["title"], "chat");
    assert_eq!(doc["channels"]["testbed_2"]["address"], "/ws/testbed/{room}");
    // A channel's messages are references to titled components, as Chanx writes them.
    assert_eq!(chat["messages"]["client.new_chat_message"]["$ref"], "#/components/messages/NewChatMessage");
    let message = &doc["components"]["messages"]["NewChatMessage"];
    assert_eq!(message["payload"]["$ref"], "#/components/schemas/NewChatMessage");
    let frame = &doc["components"]["schemas"]["NewChatMessage"];
    assert_eq!(frame["title"], "NewChatMessage");
    assert_eq!(frame["properties"]["payload"]["$ref"], "#/components/schemas/NewChatMessagePayload");
    let room = chat["parameters"]["room"]["description"].as_str().unwrap();
    assert!(room.contains("^[A-Za-z0-9_-]+$") && room.contains("32"), "{room}");
    // The echo handler's typed reply is the operation's reply, beside the error frame.
    let reply = &doc["operations"]["system.receive.user_message"]["reply"]["messages"];
    assert_eq!(
        reply,
        &serde_json::json!([
            {"$ref": "#/channels/system/messages/server.system_echo"},
            {"$ref": "#/channels/system/messages/server.error"},
        ])
    );
    assert_eq!(
        doc["operations"]["system.receive.ping"]["reply"]["messages"][0]["$ref"],
        "#/channels/system/messages/server.pong"
    );
    let user_message = &doc["components"]["schemas"]["UserMessagePayload"];
    assert_eq!(user_message["title"], "UserMessagePayload");
    assert_eq!(user_message["required"], serde_json::json!(["message"]));
    assert_eq!(user_message["properties"]["message"]["type"], "string");
    // Frames on a metadata route carry the stamp.
    let stamped = &doc["components"]["schemas"]["ChatMetaStampedNewChatMessage"];
    assert!(stamped["required"].as_array().unwrap().contains(&"message_id".into()), "{stamped}");
    // The 0.1.0 plugin has no schemas: its actions are documented as taking anything.
    let legacy = &doc["components"]["schemas"]["HelloMessage"]["properties"]["payload"];
    assert!(legacy.get("$ref").is_none(), "{legacy}");

    let (status, page) = broker.http("GET", "/asyncapi", None, "").await;
    assert_eq!(status, 200);
    assert!(page.contains("<code>/ws/chat/{room}</code>") && page.contains("<code>user_message</code>"), "{page}");
    assert!(!page.contains("http://") && !page.contains("https://"), "the page loads nothing from elsewhere");
}

#[test]
fn broker_asyncapi_prints_the_document_of_the_repository_broker_toml() {
    let dir = tempfile::tempdir().unwrap();
    for format in ["yaml", "json"] {
        let (ok, stdout, stderr) = run_cli(&["asyncapi", "--format", format], &repository_config());
        assert!(ok, "{stderr}");
        let file = dir.path().join(format!("doc.{format}"));
        std::fs::write(&file, &stdout).unwrap();
        let report = parse_with_official_parser(&file);
        assert!(report.contains("3 channels"), "{report}");
    }
    let (_, json, _) = run_cli(&["asyncapi", "--format", "json"], &default_config(""));
    let doc: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(doc["asyncapi"], "3.0.0");
    assert!(doc["components"]["schemas"]["StrictMessage"].is_object(), "{doc}");
    assert_eq!(doc["channels"]["testbed"]["messages"]["client.strict"]["$ref"], "#/components/messages/StrictMessage");
}

/// The TypeScript client of the repository's broker.toml compiles under `tsc --strict` (with lines
/// that must not compile, marked `@ts-expect-error`), and a script using it talks to a broker
/// serving that configuration with the chat's history on: a chat client whose connection is cut
/// without a close frame reconnects with backoff and recovers what it missed, once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_typescript_client_compiles_and_talks_to_the_broker() {
    let mut config = repository_config();
    if !config.contains("[plugins.chat.history]") {
        config.push_str("\n[plugins.chat.history]\nsize = 100\nttl_ms = 60000\n");
    }
    let work = tempfile::tempdir().unwrap();
    let (ok, _, stderr) = run_cli(
        &["client", "--lang", "typescript", "--out", &work.path().join("broker.ts").display().to_string()],
        &config,
    );
    assert!(ok, "{stderr}");
    for file in ["talk.ts", "tsconfig.json"] {
        std::fs::copy(node_dir().join("client").join(file), work.path().join(file)).unwrap();
    }
    std::os::unix::fs::symlink(node_dir().join("node_modules"), work.path().join("node_modules")).unwrap();
    let tsc = run(Command::new(node_dir().join("node_modules/.bin/tsc"))
        .args(["-p", ".", "--outDir", "out"])
        .current_dir(work.path()));
    assert!(tsc.status.success(), "tsc:\n{}", text(&tsc));
    std::fs::write(work.path().join("out/package.json"), r#"{"type": "module"}"#).unwrap();

    let broker = Broker::with_config(&config);
    let mut talk = tokio::process::Command::new("node");
    // Node 20 has WebSocket behind a flag; later versions have it on.
    if !run(Command::new("node").args(["-e", "process.exit(typeof WebSocket === 'function' ? 0 : 1)"])).status.success()
    {
        talk.arg("--experimental-websocket");
    }
    talk.arg(work.path().join("out/talk.js")).arg(format!("ws://{}", broker.addr));
    let output = tokio::time::timeout(std::time::Duration::from_secs(60), talk.output())
        .await
        .expect("the script finished")
        .expect("node runs");
    let report = text(&output);
    assert!(output.status.success(), "{report}");
    for line in [
        "echo: 🔧 System Echo: typed hello",
        "ping: pong",
        "refused: missing at user_message.payload.message",
        "chat: alice: hi bob",
        "assistant: welcome, initial_response, tool_result, final_response",
        "lost with 1006",
        "recovered: true, replayed 5 up to 6",
        "carol read: m1 m2 m3 m4 m5 m6 m7",
        "done",
    ] {
        assert!(report.contains(line), "{line:?} not in:\n{report}");
    }
}

#[test]
fn a_generated_python_client_has_typed_frames_and_paths() {
    let work = tempfile::tempdir().unwrap();
    let module = work.path().join("broker_client.py");
    let (ok, _, stderr) =
        run_cli(&["client", "--lang", "python", "--out", &module.display().to_string()], &repository_config());
    assert!(ok, "{stderr}");
    let check = r#"
import typing
import broker_client as b
hints = typing.get_type_hints(b.WsChatRoomClientNewChatMessage)
assert hints["action"] == typing.Literal["new_chat_message"], hints
assert hints["payload"] is b.NewChatMessagePayload, hints
assert typing.get_type_hints(b.NewChatMessagePayload) == {"message": str, "name": str}
assert b.WsChatRoomServerError in typing.get_args(b.WsChatRoomServerFrame)
assert b.ws_chat_room_path(room="a b") == "/ws/chat/a%20b"
print("ok")
"#;
    let output = run(Command::new("python3").args(["-c", check]).current_dir(work.path()));
    assert!(output.status.success() && text(&output).contains("ok"), "{}", text(&output));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documents_do_not_tell_where_broker_toml_lives() {
    let broker = Broker::start();
    let folder = broker.dir().display().to_string();
    for path in ["/asyncapi.json", "/asyncapi.yaml", "/asyncapi"] {
        let (status, body) = broker.http("GET", path, None, "").await;
        assert_eq!(status, 200, "{path}: {body}");
        assert!(!body.contains(&folder), "{path} names the folder of broker.toml, {folder}");
        assert!(body.contains("broker.toml"), "{path} no longer names its configuration file");
    }
}

/// `servers` names the address the broker is serving on, not the `127.0.0.1:0` it was asked for.
#[tokio::test]
async fn the_server_is_the_address_bound() {
    let broker = Broker::start();
    let (status, body) = broker.http("GET", "/asyncapi.json", None, "").await;
    assert_eq!(status, 200, "{body}");
    let document: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(document["servers"]["broker"]["host"], broker.addr.to_string(), "{}", document["servers"]);
}

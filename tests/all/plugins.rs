//! The host interface as plugins use it: send, close, settings.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::harness::{API_KEY, Broker, plugin_path};
use serde_json::json;

#[tokio::test]
async fn frames_a_plugin_sends_arrive_in_order() {
    let broker = Broker::start();
    let mut client = broker.connect("/ws/testbed").await;
    client.send(json!({"action": "push", "payload": {"count": 200}})).await;
    for n in 0..200 {
        assert_eq!(client.recv().await, json!({"action": "pushed", "payload": {"n": n}}));
    }
    client.assert_alive().await;
}

#[tokio::test]
async fn a_plugin_can_close_its_connection() {
    let broker = Broker::start();
    let mut client = broker.connect("/ws/testbed").await;
    client.send(json!({"action": "close", "payload": {"code": 4000, "reason": "bye now"}})).await;
    assert_eq!(client.recv_close().await, (4000, "bye now".to_owned()));
}

#[tokio::test]
async fn settings_from_broker_toml_reach_the_plugin() {
    let broker = Broker::start();
    let mut client = broker.connect("/ws/testbed").await;
    let reply = client.request(json!({"action": "settings"})).await;
    assert_eq!(reply["payload"], json!({"greeting": "hi", "depth": 2}));
}

#[tokio::test]
async fn sdk_plugins_take_messages_through_on_frame_and_older_plugins_through_on_message() {
    let broker = Broker::start();
    for (plugin, export) in [
        ("echo", "dispatch.on-frame"),
        ("chat", "dispatch.on-frame"),
        ("testbed", "dispatch.on-frame"),
        ("legacy", "handler.on-message"),
    ] {
        assert_eq!(broker.plugin_status(plugin).await["message_export"], export, "{plugin}");
    }
    // `on-frame` is handed only the connection; a handler that reads the context asks the host for
    // the running call's. Calls of two connections in turns, on the plugin's reused instances,
    // each get their own.
    let mut first = broker.connect("/ws/testbed/room1").await;
    let mut second = broker.connect("/ws/testbed/room2").await;
    for _ in 0..3 {
        for (client, room) in [(&mut first, "room1"), (&mut second, "room2")] {
            let reply = client.request(json!({"action": "params"})).await;
            assert_eq!(
                reply["payload"],
                json!({"route": "/ws/testbed/{room}", "path": format!("/ws/testbed/{room}"), "params": {"room": room}})
            );
        }
    }
}

/// The names a component imports, at its top level.
fn component_imports(path: &std::path::Path) -> Vec<String> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut names = Vec::new();
    // Nested modules and components have their own imports; only the outermost ones are the host's.
    let mut depth = 0usize;
    for payload in wasmparser::Parser::new(0).parse_all(&bytes) {
        match payload.expect("a valid component") {
            wasmparser::Payload::ModuleSection { .. } | wasmparser::Payload::ComponentSection { .. } => depth += 1,
            wasmparser::Payload::End(_) => depth = depth.saturating_sub(1),
            wasmparser::Payload::ComponentImportSection(imports) if depth == 0 => {
                for import in imports {
                    names.push(import.expect("an import").name.name.to_owned());
                }
            }
            _ => {}
        }
    }
    names
}

#[test]
fn javascript_plugins_are_built_without_the_wasi_http_import() {
    for plugin in ["echo-js", "chat-js"] {
        let imports = component_imports(&crate::harness::js_plugin_path(plugin));
        assert!(imports.iter().any(|name| name.starts_with("broker:plugin/host@")), "{plugin}: {imports:?}");
        let http: Vec<_> = imports.iter().filter(|name| name.starts_with("wasi:http/")).collect();
        assert!(http.is_empty(), "{plugin} imports {http:?}");
    }
}

#[test]
fn javascript_builds_swap_the_costly_helpers_of_componentize_js_bindings() {
    // plugin-sdk/js/test runs bin/bindings.js against the bindings componentize-js generates:
    // the string helper and the debug log are swapped, nothing else changes, and the new string
    // helper writes the bytes the original wrote.
    let sdk = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../plugin-sdk/js");
    let output = std::process::Command::new("node")
        .args(["--test", "test/"])
        .current_dir(&sdk)
        .output()
        .expect("node (`cargo xtask test` installs the SDK's packages)");
    let (report, errors) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success() && report.contains("# fail 0"), "{report}{errors}");
}

/// A broker serving a copy of `component` at `/ws/cached`, caching compiled code in `dir/cache`;
/// `dir` (its broker.toml, the cache and the cache's key) outlives the broker.
fn cached_broker(dir: &Path, component: &Path) -> Broker {
    std::fs::copy(component, dir.join("plugin.wasm")).expect("copy the component");
    let toml = format!(
        r#"
[api]
key = "{API_KEY}"

[engine]
cache_dir = "cache"

[plugins.cached]
path = "plugin.wasm"

[[routes]]
path = "/ws/cached"
plugin = "cached"
"#
    );
    std::fs::write(dir.join("broker.toml"), toml).expect("write broker.toml");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_broker-under-test"));
    command.args(["serve", "--listen", "127.0.0.1:0", "--config"]).arg(dir.join("broker.toml"));
    Broker::spawn(command, tempfile::tempdir().expect("a temp dir"))
}

/// The compiled components in `dir/cache`.
fn cache_entries(dir: &Path) -> Vec<PathBuf> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir.join("cache"))
        .expect("the cache exists")
        .map(|entry| entry.expect("an entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "cwasm"))
        .collect();
    entries.sort();
    entries
}

/// Restarts the echo broker of `dir`: where its code came from, once it serves as the echo plugin.
async fn echo_restarted_from(dir: &Path) -> String {
    let broker = cached_broker(dir, &plugin_path("echo"));
    let from = broker.plugin_status("cached").await["compiled_from"].as_str().expect("compiled_from").to_owned();
    let mut client = broker.connect("/ws/cached").await;
    // The echo greets at once; other code (another plugin's entry) does not.
    let welcome = tokio::time::timeout(std::time::Duration::from_secs(10), client.recv()).await;
    assert!(
        welcome.as_ref().is_ok_and(|frame| frame["action"] == "system_echo"),
        "the code from the {from} does not behave as the echo plugin: {welcome:?}"
    );
    let reply = client.request(json!({"action": "user_message", "payload": {"message": "hi"}})).await;
    assert_eq!(reply["action"], "system_echo", "{reply}");
    from
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planted_or_altered_cache_entry_is_not_run() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let testbed = cached_broker(dir.path(), &plugin_path("testbed"));
    assert_eq!(testbed.plugin_status("cached").await["compiled_from"], "compiled");
    drop(testbed);
    let [testbed_entry] = <[PathBuf; 1]>::try_from(cache_entries(dir.path())).expect("one entry");
    assert_eq!(echo_restarted_from(dir.path()).await, "compiled");
    let echo_entry = cache_entries(dir.path()).into_iter().find(|e| *e != testbed_entry).expect("the echo's entry");
    assert_eq!(echo_restarted_from(dir.path()).await, "cache", "an entry the broker wrote is used");

    // A genuine entry of another plugin under this one's name: the testbed would run as the echo.
    std::fs::copy(&testbed_entry, &echo_entry).expect("plant the entry");
    assert_eq!(echo_restarted_from(dir.path()).await, "compiled");
    assert_eq!(echo_restarted_from(dir.path()).await, "cache", "the planted entry was replaced");

    // One byte of the entry changed.
    let mut bytes = std::fs::read(&echo_entry).expect("read the entry");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&echo_entry, &bytes).expect("alter the entry");
    assert_eq!(echo_restarted_from(dir.path()).await, "compiled");

    // This very component's entry, written by another broker (another key): a file anyone could
    // have compiled with the same wasmtime.
    let elsewhere = tempfile::tempdir().expect("a temp dir");
    assert_eq!(echo_restarted_from(elsewhere.path()).await, "compiled");
    std::fs::copy(&cache_entries(elsewhere.path())[0], &echo_entry).expect("plant the entry");
    assert_eq!(echo_restarted_from(dir.path()).await, "compiled");

    // The key that vouches for entries is beside the cache, not in it, and the broker's user's alone.
    let key = std::fs::metadata(dir.path().join("cache.key")).expect("the cache's key");
    assert_eq!((key.len(), key.permissions().mode() & 0o777), (32, 0o600));
}

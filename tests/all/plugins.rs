//! The host interface as plugins use it: send, close, settings.

use crate::harness::Broker;
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

//! Start-up, limits that close a connection, and shutdown.

use crate::harness::{Broker, ROUTES, default_config, plugin_path, run_cli};
use serde_json::json;

#[tokio::test]
async fn an_oversized_message_closes_with_1009() {
    let broker = Broker::with_config(&default_config("[server]\nmax_message_bytes = 1024\n"));
    let mut client = broker.echo_client().await;
    // Just under the limit still works.
    let fits = "x".repeat(900);
    let reply = client.request(json!({"action": "user_message", "payload": {"message": fits}})).await;
    assert_eq!(reply["action"], "system_echo");
    client.send(json!({"action": "user_message", "payload": {"message": "x".repeat(2000)}})).await;
    let (code, reason) = client.recv_close().await;
    assert_eq!(code, 1009, "{reason}");
    assert!(reason.contains("1024"), "{reason}");
    // The broker itself is fine.
    broker.echo_client().await.assert_alive().await;
}

#[tokio::test]
async fn sigterm_closes_every_client_with_1001_and_exits_0() {
    let mut broker = Broker::start();
    let mut first = broker.echo_client().await;
    let mut second = broker.connect("/ws/testbed").await;
    second.assert_alive().await;
    let status = tokio::task::spawn_blocking(move || {
        let status = broker.terminate();
        (broker, status)
    });
    assert_eq!(first.recv_close().await.0, 1001);
    assert_eq!(second.recv_close().await.0, 1001);
    let (_broker, status) = status.await.unwrap();
    assert!(status.success(), "exit status {status:?}");
}

/// `broker serve` with this broker.toml, which must fail before serving: (success, stderr).
fn check_config(toml: &str) -> (bool, String) {
    let (ok, _, stderr) = run_cli(&["serve", "--listen", "127.0.0.1:0"], toml);
    (ok, stderr)
}

#[test]
fn a_bad_broker_toml_is_refused_with_the_key_named() {
    let (ok, stderr) = check_config(&default_config("[server]\nlisten_address = \"127.0.0.1:1\"\n"));
    assert!(!ok);
    assert!(stderr.contains("broker.toml") && stderr.contains("listen_address"), "{stderr}");

    let (ok, stderr) = check_config(&default_config("[[routes]]\npath = \"/ws/x\"\nplugin = \"ghost\"\n"));
    assert!(!ok);
    assert!(stderr.contains(&format!("routes[{ROUTES}].plugin")) && stderr.contains("ghost"), "{stderr}");

    let (ok, stderr) = check_config(&default_config("[plugins.echo.oops]\n"));
    assert!(!ok, "{stderr}");

    // A route the broker's own endpoints would shadow is refused, not silently unreachable.
    for path in ["/metrics", "/api/chat", "/{page}"] {
        let (ok, stderr) =
            check_config(&default_config(&format!("[[routes]]\npath = \"{path}\"\nplugin = \"echo\"\n")));
        assert!(!ok, "{path}");
        assert!(stderr.contains(&format!("routes[{ROUTES}].path")) && stderr.contains("shadowed"), "{stderr}");
    }
}

#[test]
fn a_file_that_is_not_a_component_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("bogus.wasm");
    std::fs::write(&bogus, b"not wasm at all").unwrap();
    let toml =
        format!("[plugins.bogus]\npath = \"{}\"\n[[routes]]\npath = \"/ws\"\nplugin = \"bogus\"\n", bogus.display());
    let (ok, stderr) = check_config(&toml);
    assert!(!ok);
    assert!(stderr.contains("bogus") && stderr.contains("not a valid component"), "{stderr}");
    assert!(plugin_path("echo").is_file());
}

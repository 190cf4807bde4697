//! A call parked in a host function runs no wasm, so the engine's epochs cannot stop it: the
//! broker's own timer must end it at the plugin's `timeout_ms`. HTTP is one way to park
//! (`assistant::model`'s model that never answers); a timer is another, and needs no
//! `allow_hosts`: a plugin with no outbound host at all must be bounded just the same.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{Broker, compile_cache, default_config, js_plugin_path};

/// The plugin's deadline.
const TIMEOUT_MS: u64 = 1000;

/// Generous: two shared cores.
const SLACK: Duration = Duration::from_millis(2000);

/// tests/polyglot/http-js at `/ws/parked`, with no `allow_hosts`.
fn config() -> String {
    default_config(&format!(
        r#"
[engine]
cache_dir = "{cache}"

[plugins.parked]
path = "{path}"
timeout_ms = {TIMEOUT_MS}

[[routes]]
path = "/ws/parked"
plugin = "parked"
"#,
        cache = compile_cache().display(),
        path = js_plugin_path("http-js").display(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_javascript_handler_awaiting_a_long_timer_ends_at_timeout_ms_without_allow_hosts() {
    let broker = Broker::with_config(&config());
    let mut sleeper = broker.connect("/ws/parked").await;
    let mut bystander = broker.connect("/ws/parked").await;
    bystander.assert_alive().await;

    let asked = Instant::now();
    // A minute on a timer: the component's event loop blocks in `wasi:io/poll` on a clock.
    sleeper.send(json!({"action": "sleep", "payload": {"ms": 60_000}, "ref": "parked"})).await;
    // Meanwhile the same plugin answers another connection.
    let slept = bystander.request(json!({"action": "sleep", "payload": {"ms": 0}, "ref": "b"})).await;
    assert_eq!(slept, json!({"action": "slept", "payload": 0, "ref": "b"}));

    let deadline = asked + Duration::from_millis(TIMEOUT_MS) + SLACK;
    let Ok(timeout) = tokio::time::timeout_at(deadline.into(), sleeper.recv()).await else {
        panic!("no answer within {:?}: timeout_ms does not bound a call parked on a timer", deadline - asked)
    };
    let took = asked.elapsed();
    let expected = json!({"action": "error", "ref": "parked", "payload": [{"type": "plugin_timeout",
        "loc": ["sleep"], "msg": format!("the plugin ran past its {TIMEOUT_MS}ms deadline")}]});
    assert_eq!(timeout, expected);
    assert!(took >= Duration::from_millis(TIMEOUT_MS), "timed out after {took:?}, before timeout_ms");
    eprintln!("plugin_timeout after {took:?} (timeout_ms {TIMEOUT_MS})");

    // The connection and the plugin serve on.
    let slept = sleeper.request(json!({"action": "sleep", "payload": {"ms": 0}, "ref": "again"})).await;
    assert_eq!(slept, json!({"action": "slept", "payload": 0, "ref": "again"}));
}

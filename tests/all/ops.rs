//! Operations: health, metrics (checked by promtool), JSON logs, `broker check` and `broker routes`,
//! and the demo page in a real browser.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::harness::{API_KEY, Broker, default_config, run_cli};

#[tokio::test]
async fn health_and_readiness() {
    let broker = Broker::start();
    assert_eq!(broker.http("GET", "/healthz", None, "").await, (200, "ok\n".to_owned()));
    let (status, body) = broker.http("GET", "/readyz", None, "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["ready"], true);
}

/// A metric's value, with its labels written as in the exposition.
async fn value(broker: &Broker, series: &str) -> f64 {
    broker.metric(series).await
}

#[tokio::test]
async fn metrics_move_with_traffic_and_pass_promtool() {
    let broker = Broker::with_config(&default_config("[server]\nmax_message_bytes = 512\n"));
    let mut echo = broker.echo_client().await;
    for n in 0..5 {
        echo.request(json!({"action": "user_message", "payload": {"message": n.to_string()}})).await;
    }
    echo.request(json!({"action": "dance"})).await;
    let mut testbed = broker.connect("/ws/testbed").await;
    testbed.request(json!({"action": "fail"})).await;
    testbed.request(json!({"action": "panic"})).await;
    let mut big = broker.echo_client().await;
    big.send(json!({"action": "user_message", "payload": {"message": "x".repeat(600)}})).await;
    assert_eq!(big.recv_close().await.0, 1009);

    let route = "route=\"/ws/system\"";
    assert_eq!(value(&broker, &format!("broker_frames_in_total{{{route},action=\"user_message\"}}")).await, 5.0);
    assert_eq!(value(&broker, &format!("broker_frames_in_total{{{route},action=\"(invalid)\"}}")).await, 1.0);

    // The closed client's socket counts until the broker has dropped it (after its lingering close).
    broker.await_metric(&format!("broker_route_connections{{{route}}}"), 1.0).await;
    assert!(value(&broker, "broker_plugin_call_seconds_count{plugin=\"echo\"}").await >= 6.0);
    assert_eq!(value(&broker, "broker_plugin_errors_total{plugin=\"testbed\",kind=\"error\"}").await, 1.0);
    assert_eq!(value(&broker, "broker_plugin_errors_total{plugin=\"testbed\",kind=\"crashed\"}").await, 1.0);
    assert_eq!(value(&broker, "broker_limit_hits_total{limit=\"server.max_message_bytes\"}").await, 1.0);
    assert_eq!(value(&broker, &format!("broker_frames_out_total{{{route},action=\"system_echo\"}}")).await, 7.0);
    assert_eq!(value(&broker, &format!("broker_frames_out_total{{{route},action=\"error\"}}")).await, 1.0);
    let refused = tokio_tungstenite::connect_async(broker.url("/ws/chat/bad%20room")).await;
    assert!(refused.is_err());
    assert_eq!(value(&broker, "broker_limit_hits_total{limit=\"routes.params\"}").await, 1.0);

    let (status, exposition) = broker.http("GET", "/metrics", None, "").await;
    assert_eq!(status, 200);
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &exposition).unwrap();
    let promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(file.path()).unwrap())
        .output()
        .expect("promtool (Debian package prometheus; `cargo xtask test` installs it)");
    assert!(
        promtool.status.success(),
        "promtool: {}{}\n{exposition}",
        String::from_utf8_lossy(&promtool.stdout),
        String::from_utf8_lossy(&promtool.stderr)
    );
}

#[tokio::test]
async fn json_logs_have_a_line_per_connection_with_route_peer_duration_and_code() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("broker.toml");
    std::fs::write(&config, default_config("")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_broker-under-test"))
        .args(["--log-format", "json", "serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.trim().strip_prefix("listening on ").unwrap().to_owned();
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws/reject")).await.unwrap();
    use futures_util::StreamExt;
    while let Some(Ok(_)) = ws.next().await {}
    // Stop the broker so its log is complete, then read it.
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let stderr = child.stderr.take().unwrap();
    let lines: Vec<Value> =
        BufReader::new(stderr).lines().map_while(Result::ok).filter_map(|l| serde_json::from_str(&l).ok()).collect();
    assert!(child.wait().unwrap().success());
    let closed = lines
        .iter()
        .find(|l| l["message"] == "connection closed")
        .unwrap_or_else(|| panic!("no close line in {lines:?}"));
    assert_eq!(closed["route"], "/ws/reject");
    assert!(closed["peer"].as_str().unwrap().starts_with("127.0.0.1:"), "{closed}");
    assert_eq!(closed["close"], 4403);
    assert!(closed["duration_ms"].is_u64(), "{closed}");
    assert!(lines.iter().any(|l| l["message"] == "connection opened" && l["route"] == "/ws/reject"));
}

#[test]
fn broker_check_names_the_key_of_each_problem() {
    let (ok, stdout, stderr) = run_cli(&["check"], &default_config(""));
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("plugin echo") && stdout.contains(": ok"), "{stdout}");

    let bogus = std::env::temp_dir().join("broker-check-bogus.wasm");
    std::fs::write(&bogus, b"not wasm").unwrap();
    let broken = [
        (default_config("[server]\nlisten = \"nowhere\"\n"), "listen"),
        (default_config("[server]\nbogus = 1\n"), "bogus"),
        (default_config("[[routes]]\npath = \"/ws/x\"\nplugin = \"ghost\"\n"), "plugin"),
        (default_config("[[routes]]\npath = \"/ws/system\"\nplugin = \"echo\"\n"), "path"),
        (default_config("[state]\nsession_bytes = 0\n"), "state.session_bytes"),
        (default_config(&format!("[plugins.bogus]\npath = \"{}\"\n", bogus.display())), "plugins.bogus.path"),
    ];
    for (config, key) in broken {
        let (ok, _, stderr) = run_cli(&["check"], &config);
        assert!(!ok, "{key}: accepted");
        assert!(stderr.contains(key) && stderr.contains("broker.toml"), "{key}: {stderr}");
    }
}

#[test]
fn broker_check_accepts_the_repository_broker_toml() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().join("broker.toml");
    let output =
        Command::new(env!("CARGO_BIN_EXE_broker-under-test")).args(["check", "--config"]).arg(&repo).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    for plugin in ["echo", "chat", "assistant"] {
        assert!(stdout.contains(&format!("plugin {plugin} ")), "{stdout}");
    }
}

#[test]
fn broker_routes_prints_the_table() {
    let (ok, stdout, stderr) = run_cli(&["routes"], &default_config(""));
    assert!(ok, "{stderr}");
    assert!(stdout.lines().any(|l| l.starts_with("/ws/system") && l.contains("echo")), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("/ws/chat/{room}") && l.contains("room: ^(?:[A-Za-z0-9_-]+)$, at most 32")),
        "{stdout}"
    );
}

/// The demo page in Chromium: echo, chat between two pages, a chat page whose connection is cut
/// (no close frame) while messages are sent to its room, which reconnects, shows "recovered 5
/// messages" and each missed message once, in order; and the assistant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_page_works_in_a_real_browser() {
    let history = "size = 100\nttl_ms = 60000\n";
    let broker = Broker::with_config(&default_config(&format!(
        "[plugins.chat.history]\n{history}[plugins.chat-meta.history]\n{history}"
    )));
    let (status, page) = broker.http("GET", "/", None, "").await;
    assert_eq!(status, 200);
    assert!(page.contains("<title>broker demo</title>"));
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let shots = root.parent().unwrap().join("target/screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let url = format!("http://{}/", broker.addr);
    let output = tokio::process::Command::new("node")
        .arg(root.join("browser/demo.mjs"))
        .args([&url, &shots.display().to_string()])
        .env("BROKER_API_KEY", API_KEY)
        .current_dir(root.join("browser"))
        .output();
    let output = tokio::time::timeout(std::time::Duration::from_secs(120), output)
        .await
        .expect("the browser test finished")
        .expect("node (`cargo xtask test` installs playwright-core and chromium)");
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    for shot in ["echo.png", "chat-alice.png", "chat-bob.png", "chat-recovered.png", "assistant.png"] {
        assert!(shots.join(shot).is_file(), "{shot} was not saved");
    }
}

//! The harness of the black-box tests: start a real broker process with a given broker.toml on an
//! ephemeral port, connect real WebSocket clients, send frames and expect frames.
//!
//! Every wait has a timeout, so a broken broker fails a test instead of hanging it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long any single expectation may take before the test fails: generous, since the whole suite
/// shares two cores; a passing test never waits this long.
pub const WAIT: Duration = Duration::from_secs(30);

/// Where the build script put the compiled plugins.
pub fn plugin_path(name: &str) -> PathBuf {
    PathBuf::from(env!("PLUGINS_DIR")).join(format!("{name}.wasm"))
}

/// A Python build of a shipped plugin (`plugins/<name>`), made by the build script with
/// componentize-py.
pub fn py_plugin_path(name: &str) -> PathBuf {
    built_path(env!("PY_PLUGINS_DIR"), name, "`cargo xtask test` installs componentize-py (target/componentize-py)")
}

/// A JavaScript build of a shipped plugin (`plugins/<name>`), made by the build script with the
/// SDK's `broker-plugin build`.
pub fn js_plugin_path(name: &str) -> PathBuf {
    built_path(env!("JS_PLUGINS_DIR"), name, "`cargo xtask test` installs componentize-js (plugin-sdk/js/node_modules)")
}

fn built_path(dir: &str, name: &str, how: &str) -> PathBuf {
    let path = PathBuf::from(dir).join(format!("{name}.wasm"));
    assert!(path.is_file(), "{} is missing: {how}, with which the build script builds it", path.display());
    path
}

/// The languages the shipped plugins are built in, and the prefix their routes have in
/// `polyglot_config`: every behaviour test of echo and chat runs against each.
pub const LANGUAGES: [(&str, &str); 3] = [("rust", "/ws"), ("python", "/ws/py"), ("javascript", "/ws/js")];

/// The name `polyglot_config` gives the `lang` build of a shipped plugin: `chat`, `chat-py`, `chat-js`
/// (also its groups namespace).
pub fn plugin_name(plugin: &str, lang: &str) -> String {
    match lang {
        "python" => format!("{plugin}-py"),
        "javascript" => format!("{plugin}-js"),
        _ => plugin.to_owned(),
    }
}

/// The compile cache the tests share, so each large component is compiled once per build.
pub fn compile_cache() -> PathBuf {
    PathBuf::from(env!("PY_PLUGINS_DIR")).join("compile-cache")
}

/// `default_config` with the Python and JavaScript builds of echo and chat mounted under
/// `/ws/py/...` and `/ws/js/...` beside the Rust ones, their compiled code cached across tests
/// (they are 12 to 18 MB components).
pub fn polyglot_config() -> String {
    polyglot_config_with("")
}

/// `polyglot_config` with `server` as its `[server]` table's keys.
pub fn polyglot_config_with(server: &str) -> String {
    let mut extra = format!("\n[server]\n{server}\n[engine]\ncache_dir = \"{}\"\n", compile_cache().display());
    for (lang, prefix, path) in
        [("py", "/ws/py", py_plugin_path as fn(&str) -> PathBuf), ("js", "/ws/js", js_plugin_path)]
    {
        extra.push_str(&format!(
            r#"
[plugins.echo-{lang}]
path = "{echo}"

[plugins.chat-{lang}]
path = "{chat}"

[[routes]]
path = "{prefix}/system"
plugin = "echo-{lang}"

[[routes]]
path = "{prefix}/chat/{{room}}"
plugin = "chat-{lang}"
params.room = {{ pattern = "[A-Za-z0-9_-]+", max_length = 32 }}
"#,
            echo = path(&format!("echo-{lang}")).display(),
            chat = path(&format!("chat-{lang}")).display(),
        ));
    }
    default_config(&extra)
}

/// `default_config` with the echo and the test plugin mounted again at `/ws/large/system` and
/// `/ws/large/testbed`, taking messages of up to 4 MiB (their default limit is 256 KiB): for
/// tests of what the broker does with huge input before any plugin sees it.
pub fn large_messages_config() -> String {
    default_config(&format!(
        r#"
[plugins.echo-large]
path = "{echo}"
max_message_bytes = 4194304

[plugins.testbed-large]
path = "{testbed}"
max_message_bytes = 4194304

[[routes]]
path = "/ws/large/system"
plugin = "echo-large"

[[routes]]
path = "/ws/large/testbed"
plugin = "testbed-large"
"#,
        echo = plugin_path("echo").display(),
        testbed = plugin_path("testbed").display(),
    ))
}

/// The HTTP API key of `default_config`.
pub const API_KEY: &str = "test-api-key";

/// Routes in `default_config`: a route appended by `extra` is `routes[ROUTES]`.
pub const ROUTES: usize = 8;

/// A broker.toml mounting the shipped plugins (echo at `/ws/system`, chat at `/ws/chat/{room}`
/// and, sharing its rooms, `/ws/chat-meta/{room}` with metadata), the test-only plugin at
/// `/ws/testbed`, `/ws/testbed/{room}` and `/ws/reject`, and a plugin built against the frozen
/// 0.1.0 contract at `/ws/legacy`; `extra` is appended.
pub fn default_config(extra: &str) -> String {
    format!(
        r#"
[api]
key = "{API_KEY}"

[plugins.echo]
path = "{echo}"

[plugins.chat]
path = "{chat}"

[plugins.chat-meta]
path = "{chat}"
namespace = "chat"

[plugins.legacy]
path = "{legacy}"

[plugins.assistant]
path = "{assistant}"
timeout_ms = 30000

[plugins.testbed]
path = "{testbed}"
timeout_ms = 1500
settings = {{ greeting = "hi", depth = 2 }}

[[routes]]
path = "/ws/system"
plugin = "echo"

[[routes]]
path = "/ws/testbed"
plugin = "testbed"

[[routes]]
path = "/ws/testbed/{{room}}"
plugin = "testbed"

[[routes]]
path = "/ws/reject"
plugin = "testbed"

[[routes]]
path = "/ws/chat/{{room}}"
plugin = "chat"
params.room = {{ pattern = "[A-Za-z0-9_-]+", max_length = 32 }}

[[routes]]
path = "/ws/chat-meta/{{room}}"
plugin = "chat-meta"
metadata = true

[[routes]]
path = "/ws/legacy"
plugin = "legacy"

[[routes]]
path = "/ws/assistant"
plugin = "assistant"
{extra}"#,
        echo = plugin_path("echo").display(),
        chat = plugin_path("chat").display(),
        testbed = plugin_path("testbed").display(),
        legacy = plugin_path("legacy010").display(),
        assistant = plugin_path("assistant").display(),
    )
}

/// A broker process serving one configuration; killed when dropped.
pub struct Broker {
    child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Broker {
    /// Starts the broker with `default_config("")`.
    pub fn start() -> Broker {
        Broker::with_config(&default_config(""))
    }

    /// Starts the broker with this broker.toml and waits for its `listening on` line.
    pub fn with_config(toml: &str) -> Broker {
        Broker::with_files(toml, &[])
    }

    /// Like `with_config`, with files written beside broker.toml first (plugins it names by a
    /// relative path).
    pub fn with_files(toml: &str, files: &[(&str, &[u8])]) -> Broker {
        Broker::launch(toml, files, &[])
    }

    /// Like `with_files`, with environment variables set for the broker process.
    pub fn launch(toml: &str, files: &[(&str, &[u8])], envs: &[(&str, &str)]) -> Broker {
        let dir = tempfile::tempdir().expect("temp dir");
        for (name, bytes) in files {
            std::fs::write(dir.path().join(name), bytes).expect("write a file beside broker.toml");
        }
        let config = dir.path().join("broker.toml");
        std::fs::write(&config, toml).expect("write broker.toml");
        let mut command = Command::new(env!("CARGO_BIN_EXE_broker-under-test"));
        command.args(["serve", "--listen", "127.0.0.1:0", "--config"]).arg(&config).envs(envs.iter().copied());
        Broker::spawn(command, dir)
    }

    /// Starts a broker with `command` (a `broker serve` listening on `127.0.0.1:0`), which owns
    /// `dir` for its life, and waits for its `listening on` line.
    pub fn spawn(mut command: Command, dir: tempfile::TempDir) -> Broker {
        if !command.get_envs().any(|(name, _)| name == "RUST_LOG") {
            command.env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()));
        }
        let mut child = command.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("start the broker");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = tx.send(addr.trim().to_owned());
                }
            }
        });
        // Generous: a first start compiles every plugin, and the Python and JavaScript ones take
        // seconds each, more while other tests compile theirs; later starts take them from the cache.
        let addr = match rx.recv_timeout(Duration::from_secs(300)) {
            Ok(addr) => addr.parse().expect("a socket address"),
            Err(_) => {
                let _ = child.kill();
                panic!("the broker did not print `listening on ADDR`: {:?}", child.wait());
            }
        };
        Broker { child, addr, _dir: dir }
    }

    /// The folder of broker.toml.
    pub fn dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// Replaces a file beside broker.toml the way editors and build tools do: write a temporary
    /// file, then rename it over the old one.
    pub fn replace_file(&self, name: &str, bytes: &[u8]) {
        let partial = self.dir().join(format!(".{name}.partial"));
        std::fs::write(&partial, bytes).expect("write");
        std::fs::rename(&partial, self.dir().join(name)).expect("rename");
    }

    /// `ws://ADDR{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// Connects to `path` and returns the client.
    pub async fn connect(&self, path: &str) -> Client {
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(self.url(path)))
            .await
            .expect("connect timed out")
            .expect("websocket handshake");
        Client { ws }
    }

    /// Connects to `path` from the source address `from` (any 127.0.0.0/8 address works on Linux):
    /// the client, or the HTTP status of a refused handshake.
    pub async fn connect_from(&self, from: &str, path: &str) -> Result<Client, u16> {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
        let tcp = socket.connect(self.addr).await.unwrap();
        let handshake = tokio_tungstenite::client_async(self.url(path), MaybeTlsStream::Plain(tcp));
        match tokio::time::timeout(WAIT, handshake).await.expect("handshake timed out") {
            Ok((ws, _)) => Ok(Client { ws }),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
            Err(other) => panic!("handshake failed: {other}"),
        }
    }

    /// Connects to the echo route and consumes its welcome frame.
    pub async fn echo_client(&self) -> Client {
        self.echo_client_at("/ws/system").await
    }

    /// Like `echo_client`, on another mount of an echo plugin.
    pub async fn echo_client_at(&self, route: &str) -> Client {
        let mut client = self.connect(route).await;
        let welcome = client.recv().await;
        assert_eq!(welcome["action"], "system_echo", "{welcome}");
        client
    }

    /// The broker process's resident memory, in KiB (Linux).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("read /proc status");
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS line");
        line.split_whitespace().nth(1).and_then(|kib| kib.parse().ok()).expect("VmRSS in kB")
    }

    /// Sockets the broker process holds open, its listener among them (Linux `/proc`): what a
    /// connection really costs, whatever the broker's own gauges say.
    pub fn open_sockets(&self) -> usize {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{}/fd", self.child.id())) else { return 0 };
        fds.filter_map(Result::ok)
            .filter(|fd| std::fs::read_link(fd.path()).is_ok_and(|to| to.to_string_lossy().starts_with("socket:")))
            .count()
    }

    /// Kills the process (SIGKILL): a node that dies without a word.
    pub fn kill(&mut self) {
        self.child.kill().expect("kill the broker");
        self.child.wait().expect("reap the broker");
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().expect("run kill");
        assert!(status.success(), "kill -TERM {pid} failed");
        self.wait_exit()
    }

    /// Waits (bounded) for the process to exit by itself.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(std::time::Instant::now() < deadline, "the broker did not exit within {WAIT:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Broker {
    /// One HTTP/1.1 request to the broker: returns the status and the body.
    pub async fn http(&self, method: &str, path: &str, key: Option<&str>, body: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let auth = key.map(|k| format!("Authorization: Bearer {k}\r\n")).unwrap_or_default();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{auth}\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let exchange = async {
            let mut tcp = TcpStream::connect(self.addr).await.expect("connect");
            tcp.write_all(request.as_bytes()).await.expect("write request");
            let mut response = Vec::new();
            tcp.read_to_end(&mut response).await.expect("read response");
            String::from_utf8(response).expect("UTF-8 response")
        };
        let response = tokio::time::timeout(WAIT, exchange).await.expect("HTTP response within the wait");
        let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status line");
        let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
        (status, body)
    }

    /// A metric's value from `/metrics`.
    pub async fn metric(&self, name: &str) -> f64 {
        let (status, body) = self.http("GET", "/metrics", None, "").await;
        assert_eq!(status, 200, "{body}");
        body.lines()
            .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or_else(|| panic!("no metric {name} in:\n{body}"))
    }

    /// Polls a metric until it equals `want` (bounded by the wait): for state the broker settles
    /// asynchronously, such as connections being cleaned up after their clients left.
    pub async fn await_metric(&self, name: &str, want: f64) {
        eventually(&format!("{name} == {want}"), || async { self.metric(name).await == want }).await;
    }

    /// `GET /api/plugins` with the test key.
    pub async fn plugins(&self) -> Value {
        let (status, body) = self.http("GET", "/api/plugins", Some(API_KEY), "").await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("JSON")
    }

    /// One plugin's entry of `/api/plugins`.
    pub async fn plugin_status(&self, name: &str) -> Value {
        let plugins = self.plugins().await;
        plugins["plugins"]
            .as_array()
            .and_then(|all| all.iter().find(|p| p["name"] == name))
            .cloned()
            .unwrap_or(Value::Null)
    }
}

/// Runs the broker's command line with `args` and `--config FILE`, FILE holding `toml`, to its end:
/// (success, stdout, stderr).
pub fn run_cli(args: &[&str], toml: &str) -> (bool, String, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("broker.toml");
    std::fs::write(&path, toml).expect("write broker.toml");
    let output = Command::new(env!("CARGO_BIN_EXE_broker-under-test"))
        .args(args)
        .arg("--config")
        .arg(&path)
        .output()
        .expect("run the broker");
    let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).to_string();
    (output.status.success(), text(output.stdout), text(output.stderr))
}

/// Polls `check` until it holds, failing the test after the wait: for what the broker does in the
/// background (reloads, clean-up), where there is no event to wait on.
pub async fn eventually<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    within(WAIT, what, check).await;
}

/// Waits until `check` holds, failing the test if it does not within `limit`: for promises with a
/// deadline of their own (a socket released within the close grace), tighter than `eventually`.
pub async fn within<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a client observed when it waited for a frame.
#[derive(Debug)]
pub enum Received {
    Json(Value),
    Close(Option<CloseFrame>),
    /// The connection ended without a close frame.
    Ended,
}

/// A WebSocket client of the broker.
pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Client {
    /// Sends a text frame as is.
    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send text");
    }

    /// Sends a JSON value as a text frame.
    pub async fn send(&mut self, value: Value) {
        self.send_text(&value.to_string()).await;
    }

    /// Sends a binary frame.
    pub async fn send_binary(&mut self, bytes: &[u8]) {
        self.ws.send(Message::Binary(Bytes::copy_from_slice(bytes))).await.expect("send binary");
    }

    /// The next text frame, parsed, or the close; pings and pongs are skipped.
    pub async fn next(&mut self) -> Received {
        // One deadline for the whole wait: the broker's pings to a quiet client must not extend it.
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let message = tokio::time::timeout_at(deadline, self.ws.next()).await.expect("no frame within the wait");
            match message {
                Some(Ok(Message::Text(text))) => {
                    return Received::Json(serde_json::from_str(&text).expect("the broker sent JSON"));
                }
                Some(Ok(Message::Close(frame))) => return Received::Close(frame),
                Some(Ok(Message::Binary(bytes))) => panic!("the broker sent a binary frame: {bytes:?}"),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Received::Ended,
            }
        }
    }

    /// The next frame, which must be JSON.
    pub async fn recv(&mut self) -> Value {
        match self.next().await {
            Received::Json(value) => value,
            other => panic!("expected a JSON frame, got {other:?}"),
        }
    }

    /// The next frame, which must be a close frame: returns (code, reason). Like a well-behaved
    /// client, it then completes the close handshake.
    pub async fn recv_close(&mut self) -> (u16, String) {
        let closed = match self.next().await {
            Received::Close(Some(frame)) => (u16::from(frame.code), frame.reason.to_string()),
            other => panic!("expected a close frame, got {other:?}"),
        };
        // Reading on flushes tungstenite's queued close reply; the stream then ends.
        while let Ok(Some(Ok(_))) = tokio::time::timeout(WAIT, self.ws.next()).await {}
        closed
    }

    /// Sends a frame and returns the answer.
    pub async fn request(&mut self, value: Value) -> Value {
        self.send(value).await;
        self.recv().await
    }

    /// A ping round trip: proves the connection is still served.
    pub async fn assert_alive(&mut self) {
        let pong = self.request(serde_json::json!({"action": "ping"})).await;
        assert_eq!(pong, serde_json::json!({"action": "pong", "payload": null}));
    }
}

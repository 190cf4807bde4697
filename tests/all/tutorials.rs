//! The plugin tutorials (`docs/plugins/{rust,python,javascript}.md`) and the migration guide from
//! Chanx (`docs/from-chanx.md`), followed verbatim in a fresh
//! folder as a new user would: every command they show is run, every file they show is written,
//! and every conversation they show is had with the broker they start.
//!
//! A tutorial is read as its fenced blocks, in order:
//! - `LANG file=PATH`: the file's content; a later block for the same path replaces it (an edit);
//! - `sh`: commands, run by bash (`set -euo pipefail`) in the folder, `$BROKER` being this
//!   checkout and `broker` the broker built by these tests;
//! - `sh serve`: the command that starts the broker, left running (the test adds
//!   `--listen 127.0.0.1:0`, as the tests never take a fixed port);
//! - `text session=ROUTE`: a conversation on a new connection to ROUTE: `<- FRAME` is the next
//!   frame the client must get, `-> FRAME` one it sends. With `reload`, it follows a rebuild: the
//!   broker picks the new file up by itself, so the conversation is tried until it holds.
//!
//! Any other block is for the reader only.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{Broker, Received, WAIT, eventually};

/// A build in a fresh folder fetches and compiles its dependencies (the Rust tutorial's take
/// minutes on two busy cores).
const COMMAND_WAIT: Duration = Duration::from_secs(900);

#[derive(Debug)]
enum Step {
    File { path: String, content: String },
    Run(String),
    Serve(String),
    Session { route: String, after_reload: bool, lines: Vec<(bool, Value)> },
}

fn steps(markdown: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut lines = markdown.lines();
    while let Some(line) = lines.next() {
        let Some(info) = line.strip_prefix("```") else { continue };
        let body: Vec<&str> = lines.by_ref().take_while(|l| !l.starts_with("```")).collect();
        let mut words = info.split_whitespace();
        let lang = words.next().unwrap_or_default();
        let attrs: Vec<&str> = words.collect();
        let attr = |key: &str| attrs.iter().find_map(|a| a.strip_prefix(key)?.strip_prefix('='));
        let content = body.iter().map(|l| format!("{l}\n")).collect::<String>();
        if let Some(path) = attr("file") {
            steps.push(Step::File { path: path.to_owned(), content });
        } else if lang == "sh" && attrs.contains(&"serve") {
            steps.push(Step::Serve(content.trim().to_owned()));
        } else if lang == "sh" {
            steps.push(Step::Run(content));
        } else if let Some(route) = attr("session") {
            let lines = body
                .iter()
                .filter(|l| !l.trim().is_empty())
                .map(|l| {
                    let (sent, frame) = match (l.strip_prefix("-> "), l.strip_prefix("<- ")) {
                        (Some(frame), _) => (true, frame),
                        (_, Some(frame)) => (false, frame),
                        _ => panic!("a session line starts with `-> ` or `<- `: {l:?}"),
                    };
                    (sent, serde_json::from_str(frame).unwrap_or_else(|e| panic!("{frame} is not JSON: {e}")))
                })
                .collect();
            steps.push(Step::Session { route: route.to_owned(), after_reload: attrs.contains(&"reload"), lines });
        }
    }
    steps
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is in the workspace").to_owned()
}

/// A `bash` running `script` in `dir` the way the tutorial's reader runs it.
fn shell(dir: &Path, bin: &Path, script: &str) -> Command {
    let mut command = Command::new("bash");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    command
        .current_dir(dir)
        .env("BROKER", root())
        .env("PATH", path)
        .args(["-c", &format!("set -euo pipefail\n{script}")]);
    // The tests' own cargo settings are not the reader's.
    for var in ["CARGO_TARGET_DIR", "CARGO_BUILD_TARGET", "RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "RUSTC_WRAPPER"] {
        command.env_remove(var);
    }
    command
}

/// When dropped, kills every process still working in the tutorial's folder: what a step left
/// running in the background (a stand-in API on its fixed port) stops when the tutorial ends,
/// passed or failed, rather than outliving the test. Found by their working folder, which is this
/// tutorial's alone; a process group's id would do as well only until the system gives it to
/// another process, and pids wrap around within one run of the tests.
struct Leftovers(PathBuf);

impl Drop for Leftovers {
    fn drop(&mut self) {
        let Ok(entries) = std::fs::read_dir("/proc") else { return };
        let pids: Vec<String> = entries
            .flatten()
            .filter(|entry| std::fs::read_link(entry.path().join("cwd")).is_ok_and(|cwd| cwd.starts_with(&self.0)))
            .filter_map(|entry| entry.file_name().into_string().ok())
            .filter(|name| name.bytes().all(|b| b.is_ascii_digit()))
            .collect();
        if !pids.is_empty() {
            let _ = Command::new("kill").arg("-KILL").args(&pids).stderr(std::process::Stdio::null()).status();
        }
    }
}

async fn run(dir: &Path, bin: &Path, script: &str) {
    let mut command = tokio::process::Command::from(shell(dir, bin, script));
    let output = tokio::time::timeout(COMMAND_WAIT, command.kill_on_drop(true).output())
        .await
        .unwrap_or_else(|_| panic!("not done within {COMMAND_WAIT:?}:\n{script}"))
        .expect("run bash");
    assert!(
        output.status.success(),
        "the tutorial's commands failed ({}):\n{script}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
}

/// How long a conversation after a rebuild waits for a frame before it tries again: the old
/// generation may never send what the new one does.
const RELOAD_FRAME_WAIT: Duration = Duration::from_secs(2);

/// How long a rebuilt plugin may take to be compiled and swapped in (an 18 MB Python component
/// compiles for seconds, more on a busy machine).
const RELOAD_WAIT: Duration = Duration::from_secs(180);

/// Has the conversation, waiting up to `frame_wait` for each frame; `Err` says where it went
/// otherwise.
async fn converse(broker: &Broker, route: &str, lines: &[(bool, Value)], frame_wait: Duration) -> Result<(), String> {
    let mut client = broker.connect(route).await;
    for (sent, frame) in lines {
        if *sent {
            client.send(frame.clone()).await;
            continue;
        }
        let got = match tokio::time::timeout(frame_wait, client.next()).await {
            Ok(Received::Json(got)) => got,
            Ok(other) => return Err(format!("expected {frame}, got {other:?}")),
            Err(_) => return Err(format!("expected {frame}, got nothing within {frame_wait:?}")),
        };
        if &got != frame {
            return Err(format!("expected {frame}, got {got}"));
        }
    }
    Ok(())
}

/// Follows `docs/<tutorial>`.
async fn follow(tutorial: &str) {
    let path = root().join("docs").join(tutorial);
    let markdown = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let steps = steps(&markdown);
    assert!(steps.iter().any(|s| matches!(s, Step::Session { .. })), "{tutorial} has no conversation to check");
    walk(tutorial, steps).await;
}

/// Takes `steps` in a fresh folder.
async fn walk(tutorial: &str, steps: Vec<Step>) {
    let folder = tempfile::tempdir().expect("a fresh folder");
    let dir = folder.path().to_owned();
    let bin = tempfile::tempdir().expect("a folder for `broker`");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_broker-under-test"), bin.path().join("broker"))
        .expect("put `broker` on the PATH");
    let mut folder = Some(folder);
    let mut broker = None;
    // Declared after the folder's owners, so dropped before the folder is: a process in a deleted
    // folder no longer shows where it works.
    let _leftovers = Leftovers(std::fs::canonicalize(&dir).expect("the folder's real path"));
    for step in steps {
        match step {
            Step::File { path, content } => {
                let file = dir.join(&path);
                std::fs::create_dir_all(file.parent().expect("a file in the folder")).expect("create its folder");
                std::fs::write(&file, content).unwrap_or_else(|e| panic!("write {path}: {e}"));
            }
            Step::Run(script) => run(&dir, bin.path(), &script).await,
            Step::Serve(command) => {
                let serve = shell(&dir, bin.path(), &format!("exec {command} --listen 127.0.0.1:0"));
                broker = Some(Broker::spawn(serve, folder.take().expect("the tutorial serves once")));
            }
            Step::Session { route, after_reload, lines } => {
                let broker = broker.as_ref().expect("a conversation after the broker was started");
                let deadline = tokio::time::Instant::now() + RELOAD_WAIT;
                let frame_wait = if after_reload { RELOAD_FRAME_WAIT } else { WAIT };
                loop {
                    match converse(broker, &route, &lines, frame_wait).await {
                        Ok(()) => break,
                        // The old generation still answering: the reload has not happened yet.
                        Err(_) if after_reload && tokio::time::Instant::now() < deadline => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(error) => panic!("{tutorial}, the conversation on {route}: {error}"),
                    }
                }
            }
        }
    }
}

#[tokio::test]
async fn the_rust_tutorial_works_as_written() {
    follow("plugins/rust.md").await;
}

#[tokio::test]
async fn the_python_tutorial_works_as_written() {
    follow("plugins/python.md").await;
}

#[tokio::test]
async fn the_javascript_tutorial_works_as_written() {
    follow("plugins/javascript.md").await;
}

/// The migration guide from Chanx: the seed tutorials' consumers as Python plugins.
#[tokio::test]
async fn the_chanx_migration_guide_works_as_written() {
    follow("from-chanx.md").await;
}

/// A stand-in a step starts in the background (`node api.mjs &`) is stopped when the tutorial
/// ends, not left on its fixed port for the next run.
#[tokio::test]
async fn what_a_tutorial_left_running_is_stopped_when_it_ends() {
    let out = tempfile::tempdir().expect("a folder for the pid");
    let pidfile = out.path().join("pid");
    let script = format!("sleep 300 > /dev/null 2>&1 &\necho $! > '{}'\n", pidfile.display());
    walk("a tutorial starting a stand-in", vec![Step::Run(script)]).await;
    let pid = std::fs::read_to_string(&pidfile).expect("the step wrote its pid");
    let stat = Path::new("/proc").join(pid.trim()).join("stat");
    // SIGKILL is delivered at once but the exit takes a moment; an orphan killed stays a zombie
    // until whoever adopted it reaps it, which is gone just the same.
    let gone = || {
        let state = std::fs::read_to_string(&stat).ok().and_then(|s| s.rsplit_once(") ")?.1.chars().next());
        std::future::ready(matches!(state, None | Some('Z' | 'X')))
    };
    eventually("`sleep 300`, started by a step, is gone once the tutorial has ended", gone).await;
}

#[test]
fn tutorial_blocks_are_read_as_steps() {
    let markdown = "text\n```toml file=broker.toml\na = 1\n```\n```sh\nls\n```\n```sh serve\nbroker serve\n```\n\
                    ```text session=/ws/x reload\n-> {\"action\":\"a\"}\n<- {\"action\":\"b\"}\n```\n```rust\nignored\n```\n";
    let steps = steps(markdown);
    assert_eq!(steps.len(), 4, "{steps:?}");
    assert!(matches!(&steps[0], Step::File { path, content } if path == "broker.toml" && content == "a = 1\n"));
    assert!(matches!(&steps[1], Step::Run(script) if script == "ls\n"));
    assert!(matches!(&steps[2], Step::Serve(command) if command == "broker serve"));
    assert!(
        matches!(&steps[3], Step::Session { route, after_reload: true, lines } if route == "/ws/x" && lines.len() == 2 && lines[0].0 && !lines[1].0)
    );
}

//! Profile-guided optimization of the release build: what `cargo xtask dist` ships and `cargo xtask
//! bench` measures, unless told `--no-pgo`. A binary is built instrumented, run under the load
//! generator on 127.0.0.1 (echo at 100 and 1,000 connections, a room's fan-out), and built again
//! with the profile it wrote. Measured (BENCHMARKS.md, #21): 13% less CPU per echoed message for
//! the broker, 11% for the native baseline trained the same way. Each binary has a profile of its
//! own: built with a profile mostly of another binary's run, the baseline gained 1%.
//!
//! Everything lives under target/pgo/PACKAGE: a target folder per stage (their RUSTFLAGS differ, so
//! they would rebuild each other's artifacts in one folder), the raw profiles and the merged one,
//! named after the instrumented binary it was trained on.

use std::collections::hash_map::DefaultHasher;
use std::hash::Hasher;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

const DIR: &str = "target/pgo";

/// How long a trained binary may take to exit after SIGTERM (it writes its profile as it exits).
const EXIT_GRACE: Duration = Duration::from_secs(60);

/// Builds `bin` of `package` instrumented, runs `train` on it, and builds it again with the profile
/// the training wrote: the optimized binary's path.
pub(crate) fn build(root: &Path, package: &str, bin: &str, train: impl FnOnce(&Path) -> Result<()>) -> Result<PathBuf> {
    let profdata = llvm_profdata()?;
    let dir = root.join(DIR).join(package);
    let raw = dir.join("raw");
    cargo_build(root, package, "instrumented", &format!("-Cprofile-generate={}", raw.display()))?;
    let instrumented = dir.join("instrumented/release").join(bin);
    let profile = dir.join(profile_name(
        bin,
        &std::fs::read(&instrumented).with_context(|| format!("reading {}", instrumented.display()))?,
    ));
    // A binary trained before keeps its profile: a second `dist` or `bench` of the same code neither
    // trains again nor rebuilds the optimized binary.
    if !profile.is_file() {
        // The instrumented build's own build scripts wrote profiles here too: only the training's count.
        let _ = std::fs::remove_dir_all(&raw);
        std::fs::create_dir_all(&raw).with_context(|| format!("creating {}", raw.display()))?;
        train(&instrumented).with_context(|| format!("training {bin}"))?;
        let profiles: Vec<PathBuf> = std::fs::read_dir(&raw)?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.extension().is_some_and(|e| e == "profraw"))
            .collect();
        ensure!(!profiles.is_empty(), "the trained {bin} wrote no profile into {}", raw.display());
        let merged = dir.join(format!("{bin}.profdata.partial"));
        crate::run(Command::new(&profdata).arg("merge").arg("-o").arg(&merged).args(&profiles))?;
        std::fs::rename(&merged, &profile)?;
    }
    cargo_build(root, package, "optimized", &format!("-Cprofile-use={}", profile.display()))?;
    Ok(optimized(root, package).join(bin))
}

/// The folder of `package`'s optimized binaries.
pub(crate) fn optimized(root: &Path, package: &str) -> PathBuf {
    root.join(DIR).join(package).join("optimized/release")
}

/// The profile's file name, after the instrumented binary it was trained on: cargo tracks
/// RUSTFLAGS' text, not the file it names, so the profile of changed code must be a new path for
/// the optimized build to be made again.
fn profile_name(bin: &str, instrumented: &[u8]) -> String {
    let mut hasher = DefaultHasher::new();
    hasher.write(instrumented);
    format!("{bin}-{:016x}.profdata", hasher.finish())
}

/// One stage's build of `package`: the release profile, `flag` as the only RUSTFLAGS, a target
/// folder of its own (per package too: the flag names the package's profile, and builds with other
/// flags in one folder would replace each other's dependencies).
fn cargo_build(root: &Path, package: &str, stage: &str, flag: &str) -> Result<()> {
    let mut build = crate::cargo(root);
    build
        .args(["build", "--release", "--package", package, "--target-dir"])
        .arg(root.join(DIR).join(package).join(stage))
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env("RUSTFLAGS", flag);
    crate::run(&mut build)
}

/// The toolchain's `llvm-profdata` (the LLVM its rustc was built with), from rustup's `llvm-tools`
/// component, added when missing as the wasm target is.
fn llvm_profdata() -> Result<PathBuf> {
    let rustc = |args: &[&str]| -> Result<String> {
        let output = Command::new("rustc").args(args).output().context("running rustc")?;
        ensure!(output.status.success(), "rustc {args:?} failed");
        Ok(String::from_utf8(output.stdout)?)
    };
    let sysroot = rustc(&["--print", "sysroot"])?;
    let version = rustc(&["-vV"])?;
    let path = profdata_path(sysroot.trim(), &version)?;
    if !path.is_file() {
        crate::run(Command::new("rustup").args(["component", "add", "llvm-tools"]))
            .context("profile-guided optimization needs rustup's llvm-tools (or pass --no-pgo)")?;
    }
    ensure!(path.is_file(), "{} is missing after `rustup component add llvm-tools`", path.display());
    Ok(path)
}

/// Where `llvm-tools` puts `llvm-profdata` in a sysroot, for the host `rustc -vV` names.
fn profdata_path(sysroot: &str, rustc_version: &str) -> Result<PathBuf> {
    let host =
        rustc_version.lines().find_map(|line| line.strip_prefix("host: ")).context("`rustc -vV` names no host")?;
    Ok(Path::new(sysroot).join("lib/rustlib").join(host.trim()).join("bin/llvm-profdata"))
}

/// The training load: what `loadgen` runs against a server at `addr` that serves the echo on
/// `/ws/system` and the chat on `/ws/chat/{room}`.
pub(crate) fn loads(addr: &str) -> Vec<Vec<String>> {
    let echo = format!("ws://{addr}/ws/system");
    let room = format!("ws://{addr}/ws/chat/pgo");
    [
        vec!["echo", &echo, "100", "3", "1", "user_message"],
        vec!["echo", &echo, "1000", "3", "1", "user_message"],
        vec!["fanout", &room, "100", "2000"],
    ]
    .iter()
    .map(|load| load.iter().map(|arg| arg.to_string()).collect())
    .collect()
}

/// The load generator, built plainly (its own code is not what is trained): its path.
pub(crate) fn loadgen(root: &Path) -> Result<PathBuf> {
    crate::run(crate::cargo(root).args(["build", "--release", "--package", "bench", "--bin", "loadgen"]))?;
    Ok(root.join("target/release/loadgen"))
}

/// Trains an instrumented broker: the shipped echo and chat (built into target/plugins), with no
/// per-client limits (the load generator is one client).
pub(crate) fn train_broker(root: &Path, broker: &Path, loadgen: &Path) -> Result<()> {
    let plugins = root.join("target/plugins");
    let config = root.join(DIR).join("broker/train.toml");
    let toml = format!(
        "[server]\nmessages_per_second = 0\nmax_connections = 100000\nmax_connections_per_ip = 100000\n\n\
         [plugins.echo]\npath = \"{echo}\"\n\n[plugins.chat]\npath = \"{chat}\"\n\n\
         [[routes]]\npath = \"/ws/system\"\nplugin = \"echo\"\n\n\
         [[routes]]\npath = \"/ws/chat/{{room}}\"\nplugin = \"chat\"\n",
        echo = plugins.join("echo.wasm").display(),
        chat = plugins.join("chat.wasm").display(),
    );
    std::fs::write(&config, toml).with_context(|| format!("writing {}", config.display()))?;
    let mut server = Command::new(broker);
    server.args(["serve", "--listen", "127.0.0.1:0", "--config"]).arg(&config);
    train(server, loadgen)
}

/// Starts `server` (which prints `listening on ADDR` first), runs the training loads against it
/// with `loadgen`, then stops it with SIGTERM and waits for it to exit: its profile is written then.
pub(crate) fn train(mut server: Command, loadgen: &Path) -> Result<()> {
    // 1,000 connections: the load generator and the server inherit the raised limit.
    bench::raise_fd_limit();
    let mut child = server.stdout(Stdio::piped()).env("RUST_LOG", "error").spawn().context("starting the server")?;
    let result = (|| {
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
        let addr = line.trim().strip_prefix("listening on ").context("the server did not say where it listens")?;
        for load in loads(addr) {
            let output = Command::new(loadgen).args(&load).stderr(Stdio::inherit()).output()?;
            ensure!(output.status.success(), "loadgen {load:?} failed: {}", String::from_utf8_lossy(&output.stdout));
        }
        Ok(())
    })();
    if let Err(error) = result {
        let _ = child.kill();
        let _ = child.wait();
        return Err(error);
    }
    terminate(&mut child)
}

/// SIGTERM, then the exit: a server killed outright writes no profile.
fn terminate(child: &mut Child) -> Result<()> {
    crate::run(Command::new("kill").args(["-TERM", &child.id().to_string()]))?;
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            ensure!(status.success(), "the trained server exited with {status}");
            return Ok(());
        }
        if started.elapsed() > EXIT_GRACE {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the trained server did not exit within {EXIT_GRACE:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llvm_profdata_is_looked_for_in_the_sysroot_of_the_host() {
        let version =
            "rustc 1.95.0 (59807616e 2026-04-14)\nbinary: rustc\nhost: x86_64-unknown-linux-gnu\nrelease: 1.95.0\n";
        assert_eq!(
            profdata_path("/toolchains/stable", version).unwrap(),
            Path::new("/toolchains/stable/lib/rustlib/x86_64-unknown-linux-gnu/bin/llvm-profdata")
        );
        assert!(profdata_path("/toolchains/stable", "rustc 1.95.0\n").is_err());
    }

    #[test]
    fn a_changed_binary_gets_a_profile_of_its_own_and_the_same_binary_keeps_its_profile() {
        let (a, b) = (profile_name("broker", b"one build"), profile_name("broker", b"another build"));
        assert_ne!(a, b);
        assert_eq!(a, profile_name("broker", b"one build"));
        assert!(a.starts_with("broker-") && a.ends_with(".profdata"), "{a}");
    }

    #[test]
    fn the_training_covers_both_echo_rows_and_the_rooms_fan_out() {
        let loads = loads("127.0.0.1:9");
        let shape: Vec<(&str, &str, &str)> =
            loads.iter().map(|load| (load[0].as_str(), load[1].as_str(), load[2].as_str())).collect();
        assert_eq!(
            shape,
            [
                ("echo", "ws://127.0.0.1:9/ws/system", "100"),
                ("echo", "ws://127.0.0.1:9/ws/system", "1000"),
                ("fanout", "ws://127.0.0.1:9/ws/chat/pgo", "100")
            ]
        );
    }
}

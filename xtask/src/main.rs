//! `cargo xtask <command>`: the project's automation, in Rust rather than shell.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};

mod bench;
mod dist;
mod fuzz;
mod layers;
mod pgo;
mod polyglot;

use polyglot::Language;

pub(crate) const WASM_TARGET: &str = "wasm32-wasip2";

const USAGE: &str = "\
usage: cargo xtask <command> [args...]

commands:
  run [ARGS...]   build the plugins, then serve ./broker.toml (ARGS go to `broker serve`)
  plugins         build every plugin in plugins/ (Rust, Python, JavaScript) into
                  target/plugins/<name>.wasm, installing componentize-py and -js if missing
  test [ARGS...]  check broker/src's layers, then run every test of the workspace
                  (ARGS go to `cargo test`); installs the tools the tests drive
                  (componentize-py, npm packages, chanx in target/chanx) if missing
  lint            broker/src's layers (xtask/src/layers.rs), cargo fmt --check and
                  cargo clippy -D warnings, host and wasm crates
  dist [--out DIR] [--no-pgo]
                  the production build in one folder to copy to a server (default
                  target/dist): the broker (release profile and profile-guided
                  optimization, trained on 127.0.0.1; --no-pgo: the profile alone),
                  every shipped plugin, a broker.toml pointing into the folder,
                  DEPLOYING.md; checked with `broker check` before it succeeds
  bench NAME|all [--runs N] [--write] [--no-pgo]
                  benchmarks of the production build against the native baseline
                  built the same way (SCENARIOS); --write regenerates BENCHMARKS.md
  fuzz [--seconds N] [TARGET...]
                  run the cargo-fuzz targets of broker/fuzz (envelope, config) for N
                  seconds each (default 60); installs nightly and cargo-fuzz if missing";

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let command = args.next().unwrap_or_default();
    let rest: Vec<String> = args.collect();
    let root = workspace_root();
    match command.as_str() {
        "run" => {
            build_plugins(&root)?;
            let mut serve = cargo(&root);
            serve.args(["run", "--package", "broker", "--", "serve", "--config"]).arg(root.join("broker.toml"));
            run(serve.args(&rest))
        }
        "plugins" => build_plugins(&root).map(drop),
        "test" => {
            // The source checks of `lint` that take no build: a broken layer rule fails at once.
            layers::check(&root)?;
            ensure_wasm_target()?;
            ensure_test_tools(&root)?;
            ensure_componentize_py(&root)?;
            ensure_js_sdk(&root)?;
            ensure_chanx(&root)?;
            run(cargo(&root).arg("test").args(&rest))
        }
        "lint" => {
            layers::check(&root)?;
            ensure_wasm_target()?;
            run(cargo(&root).args(["fmt", "--all", "--check"]))?;
            run(cargo(&root).args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
            let mut wasm = cargo(&root);
            wasm.args(["clippy", "--target", WASM_TARGET, "--target-dir", "target/wasm"]);
            for plugin in
                plugin_crates(&root.join("plugins"))?.iter().chain(&plugin_crates(&root.join("tests/plugins"))?)
            {
                wasm.args(["--package", plugin]);
            }
            run(wasm.args(["--", "-D", "warnings"]))
        }
        "dist" => dist::run(&root, &rest),
        "bench" => bench::run(&root, &rest),
        "fuzz" => fuzz::run_targets(&root, &rest),
        "" | "help" | "--help" | "-h" => {
            println!("{}", USAGE.replace("SCENARIOS", &bench::scenario_names()));
            Ok(())
        }
        other => bail!("unknown command {other:?}\n\n{}", USAGE.replace("SCENARIOS", &bench::scenario_names())),
    }
}

fn workspace_root() -> PathBuf {
    // xtask/ sits in the workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."))
}

pub(crate) fn cargo(root: &Path) -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(root);
    command
}

pub(crate) fn run(command: &mut Command) -> Result<()> {
    let status = command.status().with_context(|| format!("cannot run {command:?}"))?;
    ensure!(status.success(), "{command:?} failed with {status}");
    Ok(())
}

/// Adds the wasm target when missing, so a fresh machine needs no manual step.
fn ensure_wasm_target() -> Result<()> {
    let installed = Command::new("rustup").args(["target", "list", "--installed"]).output();
    match installed {
        Ok(output) if String::from_utf8_lossy(&output.stdout).lines().any(|l| l.trim() == WASM_TARGET) => Ok(()),
        Ok(_) => run(Command::new("rustup").args(["target", "add", WASM_TARGET])),
        Err(_) => {
            eprintln!("rustup not found: assuming the {WASM_TARGET} target is installed");
            Ok(())
        }
    }
}

/// What the tests drive besides Rust: Chromium, promtool and redis-server (Debian packages), playwright-core,
/// the AsyncAPI parser and TypeScript (npm). Installed when missing, so the test command works on a fresh machine.
fn ensure_test_tools(root: &Path) -> Result<()> {
    let missing: Vec<&str> = [
        ("chromium", "/usr/bin/chromium"),
        ("prometheus", "/usr/bin/promtool"),
        ("redis-server", "/usr/bin/redis-server"),
    ]
    .into_iter()
    .filter(|(_, binary)| !Path::new(binary).exists())
    .map(|(package, _)| package)
    .collect();
    if !missing.is_empty() {
        eprintln!("installing {} with apt-get", missing.join(", "));
        run(Command::new("apt-get").args(["update", "-q"]))?;
        run(Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    // Each folder's package.json and lock file say what it needs; `npm ci` installs exactly that.
    for (folder, marker) in [("tests/browser", "playwright-core"), ("tests/node", "@asyncapi/parser")] {
        let folder = root.join(folder);
        if !folder.join("node_modules").join(marker).is_dir() {
            eprintln!("installing the npm packages of {}", folder.display());
            run(Command::new("npm").args(["ci", "--no-audit", "--no-fund", "--loglevel=error"]).current_dir(&folder))?;
        }
    }
    Ok(())
}

/// componentize-py, which builds the Python plugins, pinned, in its own virtualenv under target/
/// (Debian's Python refuses system-wide pip installs).
pub(crate) fn ensure_componentize_py(root: &Path) -> Result<()> {
    const VERSION: &str = "0.25.1";
    let venv = root.join("target/componentize-py");
    let tool = venv.join("bin/componentize-py");
    let current = Command::new(&tool).arg("--version").output();
    if current.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(VERSION)) {
        return Ok(());
    }
    eprintln!("installing componentize-py {VERSION} into {}", venv.display());
    run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    run(Command::new(venv.join("bin/pip")).args(["install", "-q", &format!("componentize-py=={VERSION}")]))
}

/// Chanx, its client generator and what its tutorials' apps (tests/chanx) run on, pinned, in a
/// virtualenv under target/: tests/all/chanx.rs runs those apps beside the broker and generates a
/// client from the broker's document. Reinstalled when the pins change.
pub(crate) fn ensure_chanx(root: &Path) -> Result<()> {
    const PINS: &[&str] = &[
        "chanx[fast-channels,cli,client]==2.13.0",
        // The tutorial's `add_websocket_route`, which later FastAPI releases dropped.
        "fastapi==0.118.0",
        "fast-channels==1.1.0",
        "uvicorn==0.55.0",
        "websockets==17.4",
        "pydantic==2.14.4",
    ];
    let venv = root.join("target/chanx");
    let stamp = venv.join("pins.txt");
    let wanted = PINS.join("\n");
    if std::fs::read_to_string(&stamp).is_ok_and(|pinned| pinned == wanted) && venv.join("bin/chanx").exists() {
        return Ok(());
    }
    eprintln!("installing chanx and uvicorn into {}", venv.display());
    run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    run(Command::new(venv.join("bin/pip")).args(["install", "-q"]).args(PINS))?;
    std::fs::write(&stamp, wanted).with_context(|| format!("writing {}", stamp.display()))
}

/// The JavaScript SDK's npm packages (componentize-js, rolldown), as its lock file pins them.
pub(crate) fn ensure_js_sdk(root: &Path) -> Result<()> {
    let sdk = root.join("plugin-sdk/js");
    if Language::JavaScript.missing_tool(root).is_some() {
        eprintln!("installing the npm packages of {}", sdk.display());
        run(Command::new("npm").args(["ci", "--no-audit", "--no-fund", "--loglevel=error"]).current_dir(&sdk))?;
    }
    Ok(())
}

/// The plugin crates in `dir`: every folder with a Cargo.toml (folder and package names agree).
fn plugin_crates(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.join("Cargo.toml").is_file()
            && let Some(name) = path.file_name().and_then(|n| n.to_str())
        {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Builds every plugin, in every language, for wasm32-wasip2 and copies it to
/// target/plugins/<name>.wasm.
pub(crate) fn build_plugins(root: &Path) -> Result<Vec<PathBuf>> {
    let mut built = build_rust_plugins(root)?;
    ensure_componentize_py(root)?;
    ensure_js_sdk(root)?;
    let out = root.join("target/plugins");
    let mut builds = Vec::new();
    for language in Language::ALL {
        for (name, folder) in language.plugins(root)? {
            let to = out.join(format!("{name}.wasm"));
            // Each takes seconds: `cargo xtask run` should not wait for them when nothing changed.
            if !polyglot::up_to_date(&to, &language.sources(root, &folder)) {
                builds.push((name, language.build(root, &folder, &to)));
            }
            built.push(to);
        }
    }
    polyglot::run_all(builds).map_err(anyhow::Error::msg)?;
    let names: Vec<_> = built.iter().filter_map(|path| path.file_stem()?.to_str()).collect();
    eprintln!("plugins: {}", names.join(", "));
    Ok(built)
}

/// Builds the Rust plugins and copies them to target/plugins/<name>.wasm.
fn build_rust_plugins(root: &Path) -> Result<Vec<PathBuf>> {
    ensure_wasm_target()?;
    let names = plugin_crates(&root.join("plugins"))?;
    let mut build = cargo(root);
    build.args(["build", "--release", "--target", WASM_TARGET, "--target-dir", "target/wasm"]);
    for name in &names {
        build.args(["--package", name]);
    }
    run(&mut build)?;
    let out = root.join("target").join("plugins");
    std::fs::create_dir_all(&out)?;
    let mut built = Vec::new();
    for name in &names {
        let from = root.join("target/wasm").join(WASM_TARGET).join("release").join(format!("{name}.wasm"));
        let to = out.join(format!("{name}.wasm"));
        std::fs::copy(&from, &to).with_context(|| format!("copying {}", from.display()))?;
        built.push(to);
    }
    Ok(built)
}

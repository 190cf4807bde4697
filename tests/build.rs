//! Builds the plugins the tests load (shipped and test-only) for wasm32-wasip2, so `cargo test`
//! needs no manual step. The wasm build has its own target directory: the host build's is locked.

use std::path::PathBuf;
use std::process::Command;

const PLUGINS: &[&str] = &["echo", "chat", "assistant", "testbed", "legacy010", "versioned"];
const TARGET: &str = "wasm32-wasip2";

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest_dir.parent().expect("tests/ sits in the workspace root").to_owned();
    for watched in ["plugin-sdk", "plugins", "tests/plugins", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    ensure_target();
    let target_dir = root.join("target").join("wasm");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build.current_dir(&root).args(["build", "--release", "--target", TARGET, "--target-dir"]).arg(&target_dir);
    for plugin in PLUGINS {
        build.args(["-p", plugin]);
    }
    // Flags meant for the host build must not leak into the wasm one.
    for var in
        ["CARGO_ENCODED_RUSTFLAGS", "RUSTFLAGS", "CARGO_TARGET_DIR", "RUSTC_WORKSPACE_WRAPPER", "CARGO_BUILD_TARGET"]
    {
        build.env_remove(var);
    }
    let status = build.status().expect("cannot run cargo to build the test plugins");
    assert!(status.success(), "building the plugins for {TARGET} failed; see the output above");
    let out = target_dir.join(TARGET).join("release");
    for plugin in PLUGINS {
        assert!(out.join(format!("{plugin}.wasm")).is_file(), "{plugin}.wasm was not built in {}", out.display());
    }
    // The shipped plugins also go where the repository's broker.toml expects them, as
    // `cargo xtask plugins` puts them, so a test can check that file as it is.
    let shipped = root.join("target").join("plugins");
    std::fs::create_dir_all(&shipped).expect("create target/plugins");
    for plugin in ["echo", "chat", "assistant"] {
        let file = format!("{plugin}.wasm");
        std::fs::copy(out.join(&file), shipped.join(&file)).expect("copy a shipped plugin to target/plugins");
    }
    println!("cargo:rustc-env=PLUGINS_DIR={}", out.display());
    build_python_plugins(&root);
}

/// The Python builds of the shipped plugins (`plugins/*-py`), with componentize-py against the
/// world `plugin-core`, into target/wasm/py. `cargo xtask test` installs componentize-py into
/// target/componentize-py; without it they are skipped with a warning, and the tests that load
/// them say how to get it.
fn build_python_plugins(root: &std::path::Path) {
    let out = root.join("target").join("wasm").join("py");
    println!("cargo:rustc-env=PY_PLUGINS_DIR={}", out.display());
    println!("cargo:rerun-if-env-changed=COMPONENTIZE_PY");
    let installed = root.join("target/componentize-py/bin/componentize-py");
    let tool = std::env::var_os("COMPONENTIZE_PY").map(PathBuf::from).unwrap_or(installed);
    if Command::new(&tool).arg("--version").output().is_err() {
        println!("cargo:warning=componentize-py not found at {}: Python plugins not built", tool.display());
        return;
    }
    std::fs::create_dir_all(&out).expect("create target/wasm/py");
    let plugins = std::fs::read_dir(root.join("plugins")).expect("read plugins/");
    for folder in plugins.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.join("app.py").is_file()) {
        let name = folder.file_name().and_then(|n| n.to_str()).expect("a UTF-8 folder name").to_owned();
        let status = Command::new(&tool)
            .arg("-d")
            .arg(root.join("plugin-sdk/wit"))
            .args(["-w", "plugin-core", "componentize", "app", "-p"])
            .arg(root.join("plugin-sdk/python"))
            .arg("-p")
            .arg(&folder)
            .arg("-o")
            .arg(out.join(format!("{name}.wasm")))
            .status()
            .expect("run componentize-py");
        assert!(status.success(), "componentize-py failed for plugins/{name}");
    }
}

/// Adds the wasm target with rustup when it is missing (a fresh machine).
fn ensure_target() {
    let installed = Command::new("rustup").args(["target", "list", "--installed"]).output();
    match installed {
        Ok(output) if String::from_utf8_lossy(&output.stdout).lines().any(|l| l.trim() == TARGET) => {}
        Ok(_) => {
            let added = Command::new("rustup").args(["target", "add", TARGET]).status();
            assert!(added.is_ok_and(|s| s.success()), "`rustup target add {TARGET}` failed");
        }
        // No rustup: the toolchain is managed another way; let cargo say what is missing.
        Err(_) => {}
    }
}

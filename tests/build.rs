//! Builds the plugins the tests load (shipped and test-only) for wasm32-wasip2, so `cargo test`
//! needs no manual step. The wasm build has its own target directory: the host build's is locked.

// A build script's panic fails the build with its message, which is what it should do here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "../xtask/src/polyglot.rs"]
mod polyglot;

use polyglot::Language;

const PLUGINS: &[&str] = &["echo", "chat", "assistant", "testbed", "legacy010", "versioned"];
const TARGET: &str = "wasm32-wasip2";

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest_dir.parent().expect("tests/ sits in the workspace root").to_owned();
    // plugin-sdk/js is watched file by file: its node_modules would be scanned on every build.
    for watched in [
        "plugin-sdk/Cargo.toml",
        "plugin-sdk/src",
        "plugin-sdk/wit",
        "plugin-sdk/python",
        "plugin-sdk/js/index.js",
        "plugin-sdk/js/errors.js",
        "plugin-sdk/js/http.js",
        "plugin-sdk/js/env.js",
        "plugin-sdk/js/wit",
        "plugin-sdk/js/bin",
        "plugin-sdk/js/package-lock.json",
        "plugins",
        "tests/plugins",
        "tests/polyglot",
        "xtask/src/polyglot.rs",
        "Cargo.lock",
    ] {
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
    build_other_languages(&root);
}

/// The Python and JavaScript builds of the shipped plugins (`plugins/*-py`, `plugins/*-js`) and
/// the test-only ones (`tests/polyglot/*`) into target/wasm/py and target/wasm/js. A language whose tool is missing is skipped with a warning,
/// and the tests that load its plugins say how to get it.
fn build_other_languages(root: &Path) {
    println!("cargo:rerun-if-env-changed=COMPONENTIZE_PY");
    let out_dir = |language: Language| match language {
        Language::Python => root.join("target/wasm/py"),
        Language::JavaScript => root.join("target/wasm/js"),
    };
    println!("cargo:rustc-env=PY_PLUGINS_DIR={}", out_dir(Language::Python).display());
    println!("cargo:rustc-env=JS_PLUGINS_DIR={}", out_dir(Language::JavaScript).display());
    let mut builds = Vec::new();
    for language in Language::ALL {
        if let Some(missing) = language.missing_tool(root) {
            println!("cargo:warning={missing}: plugins/*{} not built", language.entry());
            continue;
        }
        let out = out_dir(language);
        std::fs::create_dir_all(&out).expect("create the plugins' output folder");
        let mut folders = language.plugins(root).expect("read plugins/");
        folders.extend(language.plugins_in(&root.join("tests/polyglot")).expect("read tests/polyglot/"));
        for (name, folder) in folders {
            // This script reruns when any plugin or SDK changes; a component whose sources did not is kept.
            let to = out.join(format!("{name}.wasm"));
            if !polyglot::up_to_date(&to, &language.sources(root, &folder)) {
                builds.push((name, language.build(root, &folder, &to)));
            }
        }
    }
    if let Err(error) = polyglot::run_all(builds) {
        panic!("{error}");
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

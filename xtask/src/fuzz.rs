//! `cargo xtask fuzz`: a short libFuzzer run of each target in broker/fuzz, on nightly.
//!
//! Not part of `cargo xtask test`: the first build compiles the broker and wasmtime again under
//! nightly with coverage instrumentation (about 15 minutes here), which the CI budget does not hold.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::run;

const TARGETS: [&str; 2] = ["envelope", "config"];

/// `[--seconds N] [TARGET...]`: every target for N seconds (default 60) when none is named.
pub fn run_targets(root: &Path, args: &[String]) -> Result<()> {
    let mut seconds = 60u64;
    let mut chosen = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => {
                let value = args.next().context("--seconds needs a number")?;
                seconds = value.parse().with_context(|| format!("--seconds {value:?}"))?;
            }
            target if TARGETS.contains(&target) => chosen.push(target),
            other => bail!("unknown fuzz argument {other:?} (targets: {})", TARGETS.join(", ")),
        }
    }
    if chosen.is_empty() {
        chosen.extend(TARGETS);
    }
    ensure_fuzz_tools()?;
    for target in chosen {
        // The seeds in the repository are read; what libFuzzer finds goes to target/, and crashing
        // inputs to broker/fuzz/artifacts/ (git-ignored) for `cargo fuzz run TARGET FILE` to replay.
        let corpus = root.join("target/fuzz/corpus").join(target);
        std::fs::create_dir_all(&corpus)?;
        eprintln!("fuzzing {target} for {seconds} s");
        let mut fuzz = nightly_cargo();
        fuzz.current_dir(root.join("broker"))
            // Safe Rust needs no AddressSanitizer to report what matters here (panics, overflows,
            // runaway recursion), and without it wasmtime builds and runs several times faster.
            .args(["fuzz", "run", "--sanitizer", "none", "--target-dir"])
            .arg(root.join("target/fuzz"))
            .arg(target)
            .arg(&corpus)
            .arg(root.join("broker/fuzz/seeds").join(target))
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .arg("-max_len=65536")
            .arg("-print_final_stats=1");
        run(&mut fuzz)?;
    }
    Ok(())
}

/// `cargo +nightly`, without the variables `cargo xtask` set for the stable toolchain it runs on.
fn nightly_cargo() -> Command {
    let mut command = Command::new("cargo");
    command.arg("+nightly").env_remove("CARGO").env_remove("RUSTUP_TOOLCHAIN").env_remove("RUSTC");
    command
}

/// Installs the nightly toolchain and cargo-fuzz when missing.
fn ensure_fuzz_tools() -> Result<()> {
    let toolchains = Command::new("rustup").args(["toolchain", "list"]).output().context("rustup is needed to fuzz")?;
    if !String::from_utf8_lossy(&toolchains.stdout).lines().any(|l| l.starts_with("nightly")) {
        run(Command::new("rustup").args(["toolchain", "install", "nightly", "--profile", "minimal"]))?;
    }
    let has_fuzz = nightly_cargo().args(["fuzz", "--version"]).output().is_ok_and(|o| o.status.success());
    if !has_fuzz {
        run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]).env_remove("RUSTUP_TOOLCHAIN"))?;
    }
    Ok(())
}

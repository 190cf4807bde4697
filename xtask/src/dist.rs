//! `cargo xtask dist [--out DIR] [--no-pgo]`: the production build in one folder an operator
//! copies to a server as it is: the broker built with `[profile.release]` and profile-guided
//! optimization (`pgo`; `--no-pgo`: the profile alone), every shipped plugin (the Rust ones
//! for wasm32-wasip2 with the same profile, the Python and JavaScript builds beside them), a
//! broker.toml whose plugin paths point into the folder, and the deployment docs. The folder is
//! checked with its own `broker check` before the command succeeds.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};

/// The folder's plugins, relative to its broker.toml.
const PLUGINS: &str = "plugins";
/// Written into every folder `dist` makes: only such a folder is ever emptied by a later run.
const MARKER: &str = ".broker-dist";
/// The docs shipped beside the binary: (in the repository, in the folder).
const DOCS: &[(&str, &str)] =
    &[("docs/deploying.md", "DEPLOYING.md"), ("docs/configuration.md", "docs/configuration.md")];

const USAGE: &str = "usage: cargo xtask dist [--out DIR] [--no-pgo]\n\nbuilds the broker (release profile, then profile-guided optimization: trained on 127.0.0.1\nwith the load generator; --no-pgo skips it, for a build in half the time) and every shipped\nplugin into DIR (default target/dist)";

pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let mut out = root.join("target/dist");
    let mut pgo = true;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--out" => out = PathBuf::from(args.next().context("--out takes a folder")?),
            "--no-pgo" => pgo = false,
            "help" | "--help" | "-h" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown argument {other:?}\n\n{USAGE}"),
        }
    }
    let started = Instant::now();
    // The plugins first: the broker's training serves the shipped echo and chat.
    let plugins = crate::build_plugins(root)?;
    let broker = if pgo { optimized_broker(root)? } else { build_broker(root)? };
    assemble(root, &out, &broker, &plugins)?;
    check(&out)?;
    eprintln!(
        "dist: {} ready in {:.0} s (copy the folder; see DEPLOYING.md in it)",
        out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Builds the broker with `[profile.release]`, alone (so its dependencies' features are its own),
/// and returns the binary's path. `cargo xtask bench` measures this same binary.
pub(crate) fn build_broker(root: &Path) -> Result<PathBuf> {
    crate::run(crate::cargo(root).args(["build", "--release", "--package", "broker"]))?;
    Ok(root.join("target/release/broker"))
}

/// The broker with profile-guided optimization, trained on the shipped echo and chat (built
/// before): the binary's path. `cargo xtask bench` measures this same build.
pub(crate) fn optimized_broker(root: &Path) -> Result<PathBuf> {
    let loadgen = crate::pgo::loadgen(root)?;
    crate::pgo::build(root, "broker", "broker", |broker| crate::pgo::train_broker(root, broker, &loadgen))
}

/// Lays out `out`: the binary, `plugins/`, the rewritten broker.toml and the docs. An earlier
/// `dist` folder there is replaced whole, so a plugin since removed is not shipped by mistake; any
/// other non-empty folder is refused, never emptied.
fn assemble(root: &Path, out: &Path, broker: &Path, plugins: &[PathBuf]) -> Result<()> {
    if out.exists() {
        let empty = std::fs::read_dir(out).with_context(|| format!("reading {}", out.display()))?.next().is_none();
        ensure!(
            empty || out.join(MARKER).is_file(),
            "{} is not empty and was not made by `cargo xtask dist` (no {MARKER} in it): choose another --out",
            out.display()
        );
        std::fs::remove_dir_all(out).with_context(|| format!("emptying {}", out.display()))?;
    }
    std::fs::create_dir_all(out.join(PLUGINS)).with_context(|| format!("creating {}", out.display()))?;
    std::fs::write(out.join(MARKER), "made by `cargo xtask dist`; a later run replaces this folder\n")?;
    copy(broker, &out.join("broker"))?;
    let mut shipped = BTreeSet::new();
    for plugin in plugins {
        let name = plugin.file_name().and_then(|n| n.to_str()).context("a plugin file name")?;
        copy(plugin, &out.join(PLUGINS).join(name))?;
        shipped.insert(name.to_owned());
    }
    let source = root.join("broker.toml");
    let config = std::fs::read_to_string(&source).with_context(|| format!("reading {}", source.display()))?;
    let config = rewrite_config(&config, &shipped).with_context(|| format!("{}", source.display()))?;
    std::fs::write(out.join("broker.toml"), config)?;
    for (from, to) in DOCS {
        copy(&root.join(from), &out.join(to))?;
    }
    Ok(())
}

/// Copies `from` to `to` (with its permissions: the binary stays executable), making `to`'s folder.
fn copy(from: &Path, to: &Path) -> Result<()> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::copy(from, to).with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    Ok(())
}

/// broker.toml's text with the `path` of each `[plugins.NAME]` table pointing into the folder's
/// `plugins/`; every other line (routes' paths, comments) as it was. A plugin file that is not one
/// of `shipped` (file names) is an error: the folder would not start.
fn rewrite_config(config: &str, shipped: &BTreeSet<String>) -> Result<String> {
    let mut out = String::with_capacity(config.len());
    let mut plugin: Option<&str> = None;
    for line in config.split_inclusive('\n') {
        let code = line.trim_start();
        if code.starts_with('[') {
            // `[plugins.echo]`, not `[plugins.chat.history]` nor `[[routes]]`.
            let table = code.split(']').next().unwrap_or_default().trim_start_matches('[').trim();
            plugin = table.strip_prefix("plugins.").filter(|name| !name.contains('.') && !code.starts_with("[["));
        }
        let Some(name) = plugin else {
            out.push_str(line);
            continue;
        };
        let Some((key, value)) = code.split_once('=') else {
            out.push_str(line);
            continue;
        };
        if key.trim() != "path" {
            out.push_str(line);
            continue;
        }
        let value = value.trim_start();
        let quote = value.chars().next().filter(|c| *c == '"' || *c == '\'');
        let (path, rest) = quote
            .and_then(|q| value[1..].split_once(q))
            .with_context(|| format!("plugins.{name}.path is not a quoted string: {}", line.trim()))?;
        let file = Path::new(path).file_name().and_then(|f| f.to_str()).unwrap_or_default();
        ensure!(
            shipped.contains(file),
            "plugins.{name}.path is {path:?}, and {file:?} is not a shipped plugin (one of {}): \
             add the plugin to plugins/ or remove it from broker.toml",
            shipped.iter().cloned().collect::<Vec<_>>().join(", ")
        );
        let indent = &line[..line.len() - code.len()];
        // `rest` is what followed the value: a comment, the line's end.
        out.push_str(&format!("{indent}path = \"{PLUGINS}/{file}\"{rest}"));
    }
    // A plugin whose path the lines above did not find (written as a dotted key or an inline
    // table) would keep a path outside the folder: refuse rather than ship it.
    let parsed: toml::Table = toml::from_str(&out).context("the rewritten broker.toml is not TOML")?;
    let plugins = parsed.get("plugins").and_then(toml::Value::as_table).cloned().unwrap_or_default();
    for (name, table) in &plugins {
        let path = table.get("path").and_then(toml::Value::as_str).unwrap_or_default();
        ensure!(
            path.strip_prefix(&format!("{PLUGINS}/")).is_some_and(|file| shipped.contains(file)),
            "plugins.{name}.path is {path:?}: write it as `path = \"...\"` in its own [plugins.{name}] table, \
             which `cargo xtask dist` rewrites"
        );
    }
    Ok(out)
}

/// Runs the folder's own binary on its own broker.toml: every plugin loads. The compile cache that
/// check fills (and its key, a secret of this machine) is removed: the folder ships neither.
fn check(out: &Path) -> Result<()> {
    let cache = out.join(".broker-cache");
    let key = out.join(".broker-cache.key");
    let fresh = !cache.exists() && !key.exists();
    let status = Command::new(out.join("broker"))
        .args(["check", "--config"])
        .arg(out.join("broker.toml"))
        .status()
        .with_context(|| format!("running {}", out.join("broker").display()))?;
    if fresh {
        let _ = std::fs::remove_dir_all(&cache);
        let _ = std::fs::remove_file(&key);
    }
    ensure!(status.success(), "`broker check` refused {}/broker.toml ({status})", out.display());
    Ok(())
}

/// The file names of the plugins `dist` ships: each Rust plugin crate and each Python and
/// JavaScript plugin folder of `plugins/`, as `cargo xtask plugins` names them.
#[cfg(test)]
fn shipped_names(root: &Path) -> Result<BTreeSet<String>> {
    let mut names: BTreeSet<String> = crate::plugin_crates(&root.join("plugins"))?.into_iter().collect();
    for language in crate::polyglot::Language::ALL {
        names.extend(language.plugins(root)?.into_iter().map(|(name, _)| name));
    }
    Ok(names.into_iter().map(|name| format!("{name}.wasm")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> PathBuf {
        crate::workspace_root()
    }

    /// A folder of its own under target/, removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir = root().join("target/tmp").join(format!("dist-test-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn the_repositorys_broker_toml_points_into_the_folder() {
        let original = std::fs::read_to_string(root().join("broker.toml")).unwrap();
        let shipped = shipped_names(&root()).unwrap();
        let rewritten = rewrite_config(&original, &shipped).unwrap();
        let (before, after): (toml::Table, toml::Table) =
            (toml::from_str(&original).unwrap(), toml::from_str(&rewritten).unwrap());
        let plugins = after["plugins"].as_table().unwrap();
        assert!(plugins.len() >= 3, "{plugins:?}");
        for (name, table) in plugins {
            let was = before["plugins"][name]["path"].as_str().unwrap();
            let file = Path::new(was).file_name().unwrap().to_str().unwrap();
            assert_eq!(table["path"].as_str(), Some(format!("plugins/{file}").as_str()), "{name}");
            // Everything else of the plugin is as it was.
            let mut rest = table.as_table().unwrap().clone();
            rest.remove("path");
            let mut was_rest = before["plugins"][name].as_table().unwrap().clone();
            was_rest.remove("path");
            assert_eq!(rest, was_rest, "{name}");
        }
        // Routes (whose `path` is a URL pattern) and the rest of the file are untouched.
        assert_eq!(before["routes"], after["routes"]);
        assert_eq!(before.get("server"), after.get("server"));
        let changed: Vec<_> =
            original.lines().zip(rewritten.lines()).filter(|(a, b)| a != b).map(|(_, b)| b.to_owned()).collect();
        assert_eq!(changed.len(), plugins.len(), "{changed:?}");
        assert_eq!(original.lines().count(), rewritten.lines().count());
    }

    #[test]
    fn a_plugin_that_is_not_shipped_or_not_rewritable_is_refused() {
        let shipped: BTreeSet<String> = ["echo.wasm".to_owned()].into();
        let config =
            "[plugins.echo]\npath = \"target/plugins/echo.wasm\"  # the echo\n\n[plugins.echo.history]\nsize = 1\n";
        let rewritten = rewrite_config(config, &shipped).unwrap();
        assert_eq!(
            rewritten,
            "[plugins.echo]\npath = \"plugins/echo.wasm\"  # the echo\n\n[plugins.echo.history]\nsize = 1\n"
        );
        let error = rewrite_config("[plugins.x]\npath = \"my/x.wasm\"\n", &shipped).unwrap_err();
        assert!(format!("{error:#}").contains("\"x.wasm\" is not a shipped plugin"), "{error:#}");
        // A path the line rewrite cannot see would point outside the folder.
        let error = rewrite_config("plugins.echo.path = \"target/plugins/echo.wasm\"\n", &shipped).unwrap_err();
        assert!(format!("{error:#}").contains("in its own [plugins.echo] table"), "{error:#}");
        let error = rewrite_config("[plugins]\necho = { path = \"echo.wasm\" }\n", &shipped).unwrap_err();
        assert!(format!("{error:#}").contains("plugins.echo.path is \"echo.wasm\""), "{error:#}");
    }

    #[test]
    fn the_folder_holds_the_binary_the_plugins_and_a_config_resolving_inside_it() {
        let scratch = Scratch::new("layout");
        let (built, out) = (scratch.0.join("built"), scratch.0.join("out"));
        std::fs::create_dir_all(&built).unwrap();
        let broker = built.join("broker");
        std::fs::write(&broker, "#!/bin/sh\n").unwrap();
        let plugins: Vec<PathBuf> = shipped_names(&root())
            .unwrap()
            .iter()
            .map(|name| {
                std::fs::write(built.join(name), name).unwrap();
                built.join(name)
            })
            .collect();
        // A stale file of an earlier run goes; a folder `dist` did not make is never emptied.
        assemble(&root(), &out, &broker, &plugins).unwrap();
        std::fs::write(out.join("plugins/removed.wasm"), "old").unwrap();
        assemble(&root(), &out, &broker, &plugins).unwrap();
        assert!(!out.join("plugins/removed.wasm").exists());
        assert!(out.join("broker").is_file() && out.join("DEPLOYING.md").is_file());
        let config: toml::Table = toml::from_str(&std::fs::read_to_string(out.join("broker.toml")).unwrap()).unwrap();
        for (name, table) in config["plugins"].as_table().unwrap() {
            let file = out.join(table["path"].as_str().unwrap());
            assert!(file.starts_with(out.join("plugins")) && file.is_file(), "{name}: {}", file.display());
        }
        let foreign = scratch.0.join("foreign");
        std::fs::create_dir_all(&foreign).unwrap();
        std::fs::write(foreign.join("keep.txt"), "mine").unwrap();
        let error = assemble(&root(), &foreign, &broker, &plugins).unwrap_err();
        assert!(error.to_string().contains("was not made by `cargo xtask dist`"), "{error}");
        assert!(foreign.join("keep.txt").is_file());
    }
}

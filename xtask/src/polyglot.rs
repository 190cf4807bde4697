//! The builds of the plugins written in Python (`plugins/*-py/app.py`, componentize-py) and
//! JavaScript (`plugins/*-js/app.js`, the SDK's `broker-plugin build`). Shared, through
//! `#[path]`, by `cargo xtask plugins` and the tests' build script, so both build them the same
//! way; it uses std alone for that reason.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A language's build: where its plugins are found and the tool that makes a component of one.
#[derive(Clone, Copy)]
pub enum Language {
    Python,
    JavaScript,
}

impl Language {
    pub const ALL: [Language; 2] = [Language::Python, Language::JavaScript];

    /// The entry file that marks a plugin folder of this language.
    pub fn entry(self) -> &'static str {
        match self {
            Language::Python => "app.py",
            Language::JavaScript => "app.js",
        }
    }

    /// Why the tool is missing, or `None` when it is there: componentize-py in
    /// target/componentize-py (or `$COMPONENTIZE_PY`), the SDK's npm packages in
    /// plugin-sdk/js/node_modules. `cargo xtask test` installs both.
    pub fn missing_tool(self, root: &Path) -> Option<String> {
        match self {
            Language::Python => {
                let tool = componentize_py(root);
                Command::new(&tool)
                    .arg("--version")
                    .output()
                    .is_err()
                    .then(|| format!("componentize-py not found at {}", tool.display()))
            }
            Language::JavaScript => {
                let sdk = root.join("plugin-sdk/js");
                (!sdk.join("node_modules/@bytecodealliance/componentize-js").is_dir())
                    .then(|| format!("componentize-js not installed in {}/node_modules", sdk.display()))
            }
        }
    }

    /// The plugin folders of this language in `plugins/`: (folder name, folder), sorted.
    pub fn plugins(self, root: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
        self.plugins_in(&root.join("plugins"))
    }

    /// The plugin folders of this language in `dir` (`plugins/`, or `tests/polyglot/` for the
    /// test-only ones): (folder name, folder), sorted.
    pub fn plugins_in(self, dir: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
        let mut folders = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.join(self.entry()).is_file()
                && let Some(name) = path.file_name().and_then(|n| n.to_str())
            {
                folders.push((name.to_owned(), path.clone()));
            }
        }
        folders.sort();
        Ok(folders)
    }

    /// The command that builds the plugin in `folder` into `out`.
    pub fn build(self, root: &Path, folder: &Path, out: &Path) -> Command {
        match self {
            Language::Python => {
                // The Python SDK's world: the broker's `plugin` and wasi:http (broker_plugin.http).
                let mut command = Command::new(componentize_py(root));
                command
                    .arg("-d")
                    .arg(root.join("plugin-sdk/python/wit"))
                    .args(["-w", "plugin", "componentize", "app", "-p"])
                    .arg(root.join("plugin-sdk/python"))
                    .arg("-p")
                    .arg(folder)
                    .arg("-o")
                    .arg(out);
                command
            }
            Language::JavaScript => {
                let mut command = Command::new("node");
                command
                    .arg(root.join("plugin-sdk/js/bin/broker-plugin.js"))
                    .arg("build")
                    .arg(folder.join(self.entry()))
                    .arg("-o")
                    .arg(out);
                command
            }
        }
    }

    /// What a build of the plugin in `folder` is made from: the folder, the WIT and the SDK.
    pub fn sources(self, root: &Path, folder: &Path) -> Vec<PathBuf> {
        let sdk: &[&str] = match self {
            Language::Python => &["plugin-sdk/python"],
            Language::JavaScript => &[
                "plugin-sdk/js/index.js",
                "plugin-sdk/js/errors.js",
                "plugin-sdk/js/http.js",
                "plugin-sdk/js/env.js",
                "plugin-sdk/js/wit",
                "plugin-sdk/js/bin",
                "plugin-sdk/js/package-lock.json",
            ],
        };
        let mut sources = vec![folder.to_owned(), root.join("plugin-sdk/wit")];
        sources.extend(sdk.iter().map(|path| root.join(path)));
        sources
    }
}

/// Whether `out` is newer than every file of `sources` (folders are walked), so building it again
/// would make the same component.
pub fn up_to_date(out: &Path, sources: &[PathBuf]) -> bool {
    let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let Some(built) = modified(out) else { return false };
    let mut pending: Vec<PathBuf> = sources.to_vec();
    while let Some(path) = pending.pop() {
        match std::fs::read_dir(&path) {
            Ok(entries) => pending.extend(entries.filter_map(Result::ok).map(|e| e.path())),
            Err(_) if modified(&path).is_none_or(|m| m > built) => return false,
            Err(_) => {}
        }
    }
    true
}

fn componentize_py(root: &Path) -> PathBuf {
    std::env::var_os("COMPONENTIZE_PY")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/componentize-py/bin/componentize-py"))
}

/// Runs the builds side by side (a JavaScript one takes about 15 s, mostly one core) and says
/// which failed.
pub fn run_all(builds: Vec<(String, Command)>) -> Result<(), String> {
    let mut running = Vec::new();
    for (name, mut command) in builds {
        let child = command.spawn().map_err(|e| format!("cannot start the build of plugins/{name}: {e}"))?;
        running.push((name, child));
    }
    let mut failed = Vec::new();
    for (name, mut child) in running {
        if !child.wait().is_ok_and(|status| status.success()) {
            failed.push(format!("plugins/{name}"));
        }
    }
    if failed.is_empty() { Ok(()) } else { Err(format!("building {} failed; see the output above", failed.join(", "))) }
}

//! The broker's layer rule, checked from the source (a tidy test, as rust-analyzer's `xtask/src/tidy.rs`):
//! every top-level module of `broker/src` belongs to one layer, and a file refers only to its own layer
//! and the layers below it. `cargo xtask lint` and `cargo xtask test` run it.
//!
//! The check reads paths, not types: every `crate::<module>` (grouped imports such as
//! `use crate::{hub::registry, wire::{protocol, close_code}};` included) and every `super::` chain
//! that climbs to the crate root. Comments, strings and character literals are blanked first, so
//! they never count.

use std::path::Path;

use anyhow::{Context, Result, bail};

/// The layers of `broker/src`, bottom to top: the one list. Each is a top-level module (`<name>.rs`
/// or `<name>/`); ARCHITECTURE.md's layer table says the same.
pub(crate) const LAYERS: &[&str] = &["wire", "config", "hub", "plugin", "edge", "documents", "ops"];

/// The crate roots, in no layer: they declare the layers (`lib.rs`) and start the binary (`main.rs`).
const ROOTS: &[&str] = &["lib.rs", "main.rs"];

/// Checks `broker/src` under `root`, failing with every problem found.
pub(crate) fn check(root: &Path) -> Result<()> {
    let src = root.join("broker/src");
    let problems = problems(&top_level_modules(&src)?, &rust_files(&src)?);
    if problems.is_empty() {
        return Ok(());
    }
    bail!(
        "the layer check of broker/src failed:\n  {}\n\nThe layers, bottom to top: {}. A module uses only its own layer \
         and the layers below it. To change the layers, change LAYERS in xtask/src/layers.rs and ARCHITECTURE.md's \
         layer table together.",
        problems.join("\n  "),
        LAYERS.join(" -> ")
    )
}

/// The names of the top-level modules in `src`: `<name>.rs` files and folders, the crate roots left out.
fn top_level_modules(src: &Path) -> Result<Vec<String>> {
    let mut modules = Vec::new();
    for entry in std::fs::read_dir(src).with_context(|| format!("reading {}", src.display()))? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
        if path.is_dir() {
            modules.push(name.to_owned());
        } else if let Some(stem) = name.strip_suffix(".rs")
            && !ROOTS.contains(&name)
        {
            modules.push(stem.to_owned());
        }
    }
    modules.sort();
    Ok(modules)
}

/// Every `.rs` file under `src`: (path relative to `src` with `/` separators, text), sorted by path.
fn rust_files(src: &Path) -> Result<Vec<(String, String)>> {
    let mut files = Vec::new();
    let mut folders = vec![src.to_owned()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).with_context(|| format!("reading {}", folder.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let relative = path.strip_prefix(src)?.components();
                let relative: Vec<_> = relative.map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
                let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
                files.push((relative.join("/"), text));
            }
        }
    }
    files.sort();
    Ok(files)
}

/// The problems of a tree whose top-level modules are `modules` and whose files are `files`
/// ((path relative to `broker/src`, text)): modules in no layer, layers with no module, and
/// references to a layer above the file's own.
fn problems(modules: &[String], files: &[(String, String)]) -> Vec<String> {
    let mut problems = Vec::new();
    for module in modules.iter().filter(|m| !LAYERS.contains(&m.as_str())) {
        problems.push(format!(
            "broker/src/{module}(.rs|/) is in no layer: move it into one of the layers' folders, or make it a layer \
             (LAYERS and ARCHITECTURE.md's layer table)"
        ));
    }
    for layer in LAYERS.iter().filter(|l| !modules.iter().any(|m| m == *l)) {
        problems.push(format!(
            "the layer {layer} has no module (broker/src/{layer}.rs or broker/src/{layer}/): remove it from LAYERS \
             and ARCHITECTURE.md's layer table, or add the module"
        ));
    }
    for (path, text) in files {
        if ROOTS.contains(&path.as_str()) {
            continue;
        }
        let Some(own) = layer_of(path) else { continue };
        for reference in references(module_depth(path), text) {
            let Some(used) = LAYERS.iter().position(|l| *l == reference.module) else { continue };
            if used > own {
                problems.push(format!(
                    "broker/src/{path}:{}: the {} layer refers to crate::{}, in the {} layer above it",
                    reference.line, LAYERS[own], LAYERS[used], LAYERS[used]
                ));
            }
        }
    }
    problems
}

/// The index in `LAYERS` of the file at `path` (relative to `broker/src`): its first path component's.
fn layer_of(path: &str) -> Option<usize> {
    let first = path.split('/').next()?;
    let module = first.strip_suffix(".rs").unwrap_or(first);
    LAYERS.iter().position(|l| *l == module)
}

/// How many `super::` lead from the file's module to the crate root: `config.rs` and `hub/mod.rs` 1,
/// `hub/registry.rs` 2.
fn module_depth(path: &str) -> usize {
    let parts: Vec<&str> = path.split('/').collect();
    if parts.last() == Some(&"mod.rs") { parts.len() - 1 } else { parts.len() }
}

/// A path from the crate root: the top-level module it names and the line it is on.
#[derive(Debug, PartialEq)]
struct Reference {
    line: usize,
    module: String,
}

/// Every top-level module `source` names from the crate root, in a file `depth` modules deep.
fn references(depth: usize, source: &str) -> Vec<Reference> {
    let tokens = tokens(&blank_literals_and_comments(source));
    let text = |i: usize| tokens.get(i).map_or("", |t| t.text.as_str());
    let mut found = Vec::new();
    // Brace depth, and the brace depths at which inline `mod name {` blocks opened: each is one
    // module deeper, for `super::`.
    let (mut braces, mut inline_mods) = (0usize, Vec::new());
    for i in 0..tokens.len() {
        match text(i) {
            "{" => {
                braces += 1;
                if i >= 2 && text(i - 2) == "mod" && is_ident(text(i - 1)) {
                    inline_mods.push(braces);
                }
            }
            "}" => {
                if inline_mods.last() == Some(&braces) {
                    inline_mods.pop();
                }
                braces = braces.saturating_sub(1);
            }
            "crate" if text(i + 1) == "::" && (i == 0 || text(i - 1) != "::") => {
                root_path(&tokens, i + 2, &mut found);
            }
            "super" if text(i + 1) == "::" && (i == 0 || text(i - 1) != "::") => {
                let mut j = i;
                let mut climbed = 0;
                while text(j) == "super" && text(j + 1) == "::" {
                    climbed += 1;
                    j += 2;
                }
                if climbed == depth + inline_mods.len() {
                    root_path(&tokens, j, &mut found);
                }
            }
            _ => {}
        }
    }
    found
}

/// The top-level modules named by the path that starts at `tokens[start]`, right after `crate::`:
/// one name, or each item of a `{...}` group.
fn root_path(tokens: &[Token], start: usize, found: &mut Vec<Reference>) {
    let Some(first) = tokens.get(start) else { return };
    let mut push = |token: &Token| {
        if is_ident(&token.text) && !["self", "super", "crate"].contains(&token.text.as_str()) {
            found.push(Reference { line: token.line, module: token.text.clone() });
        }
    };
    if first.text != "{" {
        push(first);
        return;
    }
    // `{a::b, c::{d, e}, f}`: the first name of each item at the group's own depth.
    let (mut depth, mut item_start) = (0usize, true);
    for token in &tokens[start..] {
        match token.text.as_str() {
            "{" => {
                depth += 1;
                if depth == 1 {
                    continue;
                }
            }
            "}" => {
                depth -= 1;
                if depth == 0 {
                    return;
                }
            }
            "," if depth == 1 => {
                item_start = true;
                continue;
            }
            _ if depth == 1 && item_start => push(token),
            _ => {}
        }
        item_start = false;
    }
}

struct Token {
    text: String,
    line: usize,
}

fn is_ident(text: &str) -> bool {
    text.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') && text.chars().all(is_ident_char)
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Identifiers (and numbers), `::`, and every other character but whitespace as one token.
fn tokens(source: &str) -> Vec<Token> {
    let chars: Vec<char> = source.chars().collect();
    let (mut tokens, mut line, mut i) = (Vec::new(), 1, 0);
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        if c == '\n' {
            line += 1;
            i += 1;
            continue;
        } else if c.is_whitespace() {
            i += 1;
            continue;
        } else if is_ident_char(c) {
            while i < chars.len() && is_ident_char(chars[i]) {
                i += 1;
            }
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            i += 2;
        } else {
            i += 1;
        }
        tokens.push(Token { text: chars[start..i].iter().collect(), line });
    }
    tokens
}

/// `source` with comments and string and character literals replaced by spaces, newlines kept.
fn blank_literals_and_comments(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let blank = |out: &mut String, from: &[char]| {
        out.extend(from.iter().map(|&c| if c == '\n' { '\n' } else { ' ' }));
    };
    let at = |i: usize| chars.get(i).copied();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let after_ident = i > 0 && is_ident_char(chars[i - 1]);
        let end = if c == '/' && at(i + 1) == Some('/') {
            // Line comment, doc comments included.
            chars[i..].iter().position(|&c| c == '\n').map_or(chars.len(), |n| i + n)
        } else if c == '/' && at(i + 1) == Some('*') {
            // Block comment; they nest.
            let (mut j, mut depth) = (i, 0usize);
            while j < chars.len() {
                if chars[j] == '/' && at(j + 1) == Some('*') {
                    depth += 1;
                    j += 2;
                } else if chars[j] == '*' && at(j + 1) == Some('/') {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            j
        } else if let Some(end) = (!after_ident).then(|| raw_string_end(&chars, i)).flatten() {
            end
        } else if c == '"' {
            // A string (b"..." and c"..." too: their prefix stays, an identifier of its own).
            let mut j = i + 1;
            while j < chars.len() && chars[j] != '"' {
                j += if chars[j] == '\\' { 2 } else { 1 };
            }
            j + 1
        } else if c == '\'' && at(i + 1) == Some('\\') {
            // An escaped character: '\n', '\'', '\u{..}'.
            let mut j = i + 3;
            while j < chars.len() && chars[j] != '\'' {
                j += 1;
            }
            j + 1
        } else if c == '\'' && at(i + 2) == Some('\'') {
            i + 3
        } else {
            // Anything else, lifetimes ('a) included, stays.
            out.push(c);
            i += 1;
            continue;
        };
        let end = end.min(chars.len());
        blank(&mut out, &chars[i..end]);
        i = end;
    }
    out
}

/// Where the raw string (`r"..."`, `r#"..."#`, `br"..."`, `cr"..."`) starting at `i` ends, if one does.
fn raw_string_end(chars: &[char], i: usize) -> Option<usize> {
    let mut j = i;
    if matches!(chars.get(j), Some('b' | 'c')) {
        j += 1;
    }
    if chars.get(j) != Some(&'r') {
        return None;
    }
    j += 1;
    let hashes = chars[j..].iter().take_while(|&&c| c == '#').count();
    j += hashes;
    if chars.get(j) != Some(&'"') {
        return None;
    }
    j += 1;
    while j < chars.len() {
        if chars[j] == '"' && chars[j + 1..].iter().take(hashes).filter(|&&c| c == '#').count() == hashes {
            return Some(j + 1 + hashes);
        }
        j += 1;
    }
    Some(chars.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> Vec<(String, String)> {
        files.iter().map(|(path, text)| (path.to_string(), text.to_string())).collect()
    }

    /// Every layer present, as `<layer>/mod.rs` (with nothing in it).
    fn all_layers() -> Vec<String> {
        LAYERS.iter().map(|l| l.to_string()).collect()
    }

    fn check(files: &[(&str, &str)]) -> Vec<String> {
        problems(&all_layers(), &tree(files))
    }

    fn modules(depth: usize, source: &str) -> Vec<(usize, String)> {
        references(depth, source).into_iter().map(|r| (r.line, r.module)).collect()
    }

    #[test]
    fn an_import_from_a_layer_above_fails_naming_file_line_and_both_layers() {
        let problems = check(&[("hub/registry.rs", "//! Registry.\n\nuse crate::edge::connection;\n")]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(
            problems[0],
            "broker/src/hub/registry.rs:3: the hub layer refers to crate::edge, in the edge layer above it"
        );
    }

    #[test]
    fn a_grouped_import_is_read_item_by_item() {
        let source =
            "use crate::{\n    config::Config,\n    wire::{protocol, close_code},\n    documents::asyncapi,\n};\n";
        let problems = check(&[("hub/state.rs", source)]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("broker/src/hub/state.rs:4: the hub layer "), "{}", problems[0]);
        assert!(problems[0].contains("crate::documents"), "{}", problems[0]);
        assert_eq!(
            modules(2, "use crate::{self, hub::{registry, outbound::{Queue, Delivery}}, wire as w, *};"),
            [(1, "hub".to_owned()), (1, "wire".to_owned())]
        );
    }

    #[test]
    fn imports_from_the_own_layer_and_below_pass() {
        let problems = check(&[
            ("lib.rs", "pub mod ops; use crate::ops::cli;"),
            ("main.rs", "fn main() { broker::ops::cli::main() }"),
            ("config.rs", "use crate::wire::protocol;\n#[cfg(test)]\nmod tests { use super::*; }"),
            ("edge/connection/write.rs", "use crate::{edge::connection, hub::registry::Registry, plugin, config};"),
            ("ops/cli.rs", "pub(crate) fn main() { crate::documents::codegen::run(); crate::Error::new(); }"),
        ]);
        assert!(problems.is_empty(), "{problems:?}");
    }

    #[test]
    fn paths_in_expressions_count() {
        let problems = check(&[("wire/protocol.rs", "fn now() -> String {\n    crate::plugin::rfc3339(x)\n}")]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("broker/src/wire/protocol.rs:2: the wire layer "), "{}", problems[0]);
    }

    #[test]
    fn super_chains_that_reach_the_crate_root_count() {
        assert_eq!(modules(1, "use super::ops::api;"), [(1, "ops".to_owned())]);
        assert_eq!(modules(2, "use super::super::{ops, edge::auth};"), [(1, "ops".to_owned()), (1, "edge".to_owned())]);
        // One module deeper: `super::` is the file's own module.
        assert_eq!(modules(2, "use super::registry;"), []);
        assert_eq!(
            modules(1, "mod tests {\n    use super::ops;\n    use super::super::edge;\n}"),
            [(3, "edge".to_owned())]
        );
        let problems = check(&[("hub/registry.rs", "fn f() { super::super::ops::api::run() }")]);
        assert_eq!(problems.len(), 1, "{problems:?}");
    }

    #[test]
    fn comments_strings_and_chars_do_not_count() {
        let source = r####"
            // use crate::ops::api;
            /// See [`crate::edge::connection`].
            /* crate::ops /* nested crate::ops */ crate::ops */
            const A: &str = "crate::ops::api \" crate::edge";
            const B: &str = r#"crate::ops "quoted" crate::edge"#;
            const C: &[u8] = br"crate::ops\";
            const D: char = '"'; const E: char = '\''; const F: char = '\u{22}';
            fn f<'a>(x: &'a str) -> &'a str { x }
            use crate::wire::protocol;
        "####;
        assert_eq!(modules(2, source), [(10, "wire".to_owned())]);
    }

    #[test]
    fn a_module_in_no_layer_and_a_layer_without_module_fail() {
        let mut modules = all_layers();
        modules.retain(|m| m != "documents");
        modules.push("server".to_owned());
        let problems = problems(&modules, &[]);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("broker/src/server(.rs|/) is in no layer"), "{}", problems[0]);
        assert!(problems[1].contains("the layer documents has no module"), "{}", problems[1]);
    }

    #[test]
    fn the_tree_is_read_from_disk() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("xtask-layers-{}", std::process::id()));
        let src = dir.join("broker/src");
        for layer in LAYERS {
            std::fs::create_dir_all(src.join(layer))?;
            std::fs::write(src.join(layer).join("mod.rs"), "")?;
        }
        std::fs::write(src.join("lib.rs"), "pub mod ops;")?;
        std::fs::write(src.join("hub/registry.rs"), "use crate::edge::connection;")?;
        let result = super::check(&dir);
        std::fs::remove_dir_all(&dir)?;
        let message = format!("{:#}", result.err().context("an upward import must fail")?);
        assert!(message.contains("broker/src/hub/registry.rs:1: the hub layer"), "{message}");
        assert!(message.contains("ARCHITECTURE.md's layer table"), "{message}");
        Ok(())
    }

    /// The real tree follows the rule (`cargo xtask lint` checks it too).
    #[test]
    fn broker_src_follows_the_layers() -> Result<()> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().context("xtask is in the workspace root")?;
        super::check(root)
    }
}

//! The house's shape, checked from the source: the module import graph has no circle (no two
//! modules import each other, directly or in a loop), imports point down the layers of the
//! README's layout section, `cli` is imported by `main.rs` only, only `app` knows egui/wgpu,
//! and long files say why they are long.
//!
//! The graph is read from the text of `src/` (use trees, inline `crate::`/`super::`/child
//! paths), with comments, strings and `#[cfg(test)]` modules left out, at file granularity:
//! `imaging/mod.rs` is module `imaging`, `imaging/dicom/native.rs` is `imaging::dicom::native`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type ModulePath = Vec<String>;

fn name(module: &[String]) -> String {
    if module.is_empty() {
        "crate".into()
    } else {
        module.join("::")
    }
}

/// Every module of the crate and its file.
fn modules(src: &Path) -> BTreeMap<ModulePath, PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()) {
            if entry.is_dir() {
                walk(&entry, out);
            } else if entry.extension().is_some_and(|e| e == "rs") {
                out.push(entry);
            }
        }
    }
    let mut files = Vec::new();
    walk(src, &mut files);
    let mut map = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(src).unwrap().with_extension("");
        let mut segments: Vec<String> = relative
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if segments.last().is_some_and(|s| s == "mod") {
            segments.pop();
        }
        if segments == ["lib"] {
            segments.clear();
        } else if segments == ["main"] {
            segments = vec!["<main>".into()];
        }
        map.insert(segments, file);
    }
    map
}

/// The source with comments, string and char literals blanked, and `#[cfg(test)] mod` blocks
/// removed.
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if c == 'r' && (next == Some('"') || next == Some('#')) && {
            let prev = if i == 0 { ' ' } else { chars[i - 1] };
            !(prev.is_alphanumeric() || prev == '_')
        } {
            let mut j = i + 1;
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= chars.len() {
                    break;
                }
                if chars[j] == '"' && (0..hashes).all(|k| chars.get(j + 1 + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{..}') or a lifetime ('a).
            if next == Some('\\') {
                i += 2;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
                out.push_str("' '");
            } else if chars.get(i + 2) == Some(&'\'') {
                i += 3;
                out.push_str("' '");
            } else {
                out.push(c);
                i += 1;
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    remove_test_modules(&out)
}

fn remove_test_modules(code: &str) -> String {
    let mut out = String::new();
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "#[cfg(test)]".len()..];
        let trimmed = after.trim_start();
        // `mod`, `pub mod`, `pub(super) mod`, `pub(crate) mod`.
        let unqualified = match trimmed.strip_prefix("pub") {
            Some(tail) if tail.starts_with('(') => tail
                .find(')')
                .map_or(tail, |close| tail[close + 1..].trim_start()),
            Some(tail) => tail.trim_start(),
            None => trimmed,
        };
        if !unqualified.starts_with("mod ") {
            rest = after;
            continue;
        }
        let Some(open) = after.find('{') else {
            rest = "";
            break;
        };
        let mut depth = 0;
        let mut end = after.len();
        for (k, ch) in after[open..].char_indices() {
            match ch {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + k + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// Expand a use tree (`a::{b, c::{d, e}}`) into its paths.
fn expand_use(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    if let Some(brace) = tree.find('{') {
        let prefix = tree[..brace].trim().trim_end_matches("::").to_string();
        let inner = &tree[brace + 1..tree.rfind('}').unwrap_or(tree.len())];
        let mut parts = Vec::new();
        let (mut depth, mut current) = (0, String::new());
        for ch in inner.chars() {
            match ch {
                '{' => depth += 1,
                '}' => depth -= 1,
                _ => {}
            }
            if ch == ',' && depth == 0 {
                parts.push(std::mem::take(&mut current));
            } else {
                current.push(ch);
            }
        }
        parts.push(current);
        let mut out = Vec::new();
        for part in parts.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
            for path in expand_use(part) {
                if prefix.is_empty() {
                    out.push(path);
                } else {
                    out.push(format!("{prefix}::{path}"));
                }
            }
        }
        return out;
    }
    let path = tree.split(" as ").next().unwrap_or(tree).trim();
    vec![path.to_string()]
}

/// Paths written in the code: use trees, and `a::b::c` chains elsewhere.
fn paths_in(code: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let mut body = String::new();
    let mut rest = code;
    while let Some(at) = find_keyword(rest, "use") {
        body.push_str(&rest[..at]);
        let after = &rest[at + 3..];
        let end = after.find(';').unwrap_or(after.len());
        paths.extend(expand_use(&after[..end]));
        rest = &after[(end + 1).min(after.len())..];
    }
    body.push_str(rest);
    let chars: Vec<char> = body.chars().collect();
    let mut i = 0;
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    while i < chars.len() {
        if is_ident(chars[i]) && (i == 0 || !is_ident(chars[i - 1])) {
            let mut j = i;
            let mut segments = Vec::new();
            loop {
                let start = j;
                while j < chars.len() && is_ident(chars[j]) {
                    j += 1;
                }
                segments.push(chars[start..j].iter().collect::<String>());
                if chars.get(j) == Some(&':')
                    && chars.get(j + 1) == Some(&':')
                    && chars.get(j + 2).is_some_and(|&c| is_ident(c))
                {
                    j += 2;
                } else {
                    break;
                }
            }
            if segments.len() > 1 {
                paths.push(segments.join("::"));
            }
            i = j.max(i + 1);
        } else {
            i += 1;
        }
    }
    paths
}

fn find_keyword(text: &str, keyword: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(found) = text[from..].find(keyword) {
        let at = from + found;
        let before_ok =
            at == 0 || !(bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_');
        let after = bytes.get(at + keyword.len()).copied().unwrap_or(b' ');
        if before_ok && after.is_ascii_whitespace() {
            return Some(at);
        }
        from = at + keyword.len();
    }
    None
}

/// Module -> modules it imports.
fn import_graph(src: &Path) -> BTreeMap<ModulePath, BTreeSet<ModulePath>> {
    let modules = modules(src);
    let mut graph: BTreeMap<ModulePath, BTreeSet<ModulePath>> = BTreeMap::new();
    for (module, file) in &modules {
        let code = code_only(&std::fs::read_to_string(file).unwrap());
        let children: BTreeSet<&str> = modules
            .keys()
            .filter(|m| m.len() == module.len() + 1 && m.starts_with(module))
            .map(|m| m[module.len()].as_str())
            .collect();
        let edges = graph.entry(module.clone()).or_default();
        for path in paths_in(&code) {
            let segments: Vec<&str> = path.split("::").map(str::trim).collect();
            let (mut current, rest): (ModulePath, &[&str]) = match segments[0] {
                "crate" => (Vec::new(), &segments[1..]),
                "fovea" if module == &["<main>".to_string()] => (Vec::new(), &segments[1..]),
                "super" => (
                    module[..module.len().saturating_sub(1)].to_vec(),
                    &segments[1..],
                ),
                "self" => (module.clone(), &segments[1..]),
                first if children.contains(first) => (module.clone(), &segments[..]),
                _ => continue,
            };
            let mut rest = rest;
            while rest.first() == Some(&"super") {
                current.pop();
                rest = &rest[1..];
            }
            for segment in rest {
                let mut longer = current.clone();
                longer.push(segment.to_string());
                if modules.contains_key(&longer) {
                    current = longer;
                } else {
                    break;
                }
            }
            if &current != module && !current.is_empty() {
                edges.insert(current);
            }
        }
    }
    graph
}

/// Strongly connected components with more than one module (Tarjan).
fn circles(graph: &BTreeMap<ModulePath, BTreeSet<ModulePath>>) -> Vec<Vec<ModulePath>> {
    struct State<'a> {
        graph: &'a BTreeMap<ModulePath, BTreeSet<ModulePath>>,
        index: BTreeMap<&'a ModulePath, usize>,
        low: BTreeMap<&'a ModulePath, usize>,
        stack: Vec<&'a ModulePath>,
        on_stack: BTreeSet<&'a ModulePath>,
        found: Vec<Vec<ModulePath>>,
    }
    fn visit<'a>(state: &mut State<'a>, v: &'a ModulePath) {
        let n = state.index.len();
        state.index.insert(v, n);
        state.low.insert(v, n);
        state.stack.push(v);
        state.on_stack.insert(v);
        let graph = state.graph;
        for w in graph.get(v).into_iter().flatten() {
            let Some((w, _)) = graph.get_key_value(w) else {
                continue;
            };
            if !state.index.contains_key(w) {
                visit(state, w);
                let low = state.low[w].min(state.low[v]);
                state.low.insert(v, low);
            } else if state.on_stack.contains(w) {
                let low = state.index[w].min(state.low[v]);
                state.low.insert(v, low);
            }
        }
        if state.low[v] == state.index[v] {
            let mut component = Vec::new();
            while let Some(w) = state.stack.pop() {
                state.on_stack.remove(w);
                component.push(w.clone());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                state.found.push(component);
            }
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !state.index.contains_key(v) {
            visit(&mut state, v);
        }
    }
    state.found
}

fn src_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The README's layers, bottom up: an import may only point to a lower rank (or stay inside its
/// own top-level layer).
fn rank(module: &[String]) -> usize {
    match module.first().map(String::as_str) {
        Some("io" | "platform") => 0,
        Some("imaging" | "demo") => 1,
        Some("model") => 2,
        Some("grounding") => 3,
        Some("case" | "exchange") => 4,
        Some("eval" | "app") => 5,
        Some("cli") => 6,
        Some("<main>") => 7,
        _ => 8,
    }
}

#[test]
fn the_checker_sees_a_circle_and_a_child_path() {
    // A parent and a child that import each other, written the ways the checker must read.
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir_all(src.join("a")).unwrap();
    std::fs::write(src.join("lib.rs"), "pub mod a;\npub mod b;\n").unwrap();
    std::fs::write(
        src.join("a/mod.rs"),
        "pub mod inner;\n// use crate::b; (a comment)\npub fn f() { inner::g(); let _ = \"crate::b::X\"; }\n",
    )
    .unwrap();
    std::fs::write(src.join("a/inner.rs"), "use super::{f as parent, self};\n").unwrap();
    std::fs::write(
        src.join("b.rs"),
        "#[cfg(test)]\nmod tests { use crate::a; }\n#[cfg(test)]\npub(super) mod testing { use crate::a; }\n",
    )
    .unwrap();
    let graph = import_graph(src);
    let a = vec!["a".to_string()];
    let inner = vec!["a".to_string(), "inner".to_string()];
    assert!(graph[&a].contains(&inner), "{graph:?}");
    assert!(graph[&inner].contains(&a), "{graph:?}");
    assert!(
        !graph[&a].contains(&vec!["b".to_string()]),
        "comments and strings are not imports"
    );
    assert!(
        graph[&vec!["b".to_string()]].is_empty(),
        "test modules are not imports"
    );
    assert_eq!(circles(&graph).len(), 1);
}

#[test]
fn no_two_modules_import_each_other() {
    let graph = import_graph(&src_dir());
    let found = circles(&graph);
    let mut report = String::new();
    for component in &found {
        report.push_str(&format!(
            "circle: {}\n",
            component
                .iter()
                .map(|m| name(m))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        for from in component {
            for to in &graph[from] {
                if component.contains(to) {
                    report.push_str(&format!("    {} -> {}\n", name(from), name(to)));
                }
            }
        }
    }
    assert!(found.is_empty(), "{report}");
    assert!(
        graph.len() > 40,
        "the checker found only {} modules",
        graph.len()
    );
}

#[test]
fn imports_point_down_the_layers() {
    let graph = import_graph(&src_dir());
    let mut wrong = Vec::new();
    for (from, targets) in &graph {
        for to in targets {
            let same_layer = from.first() == to.first();
            if !same_layer && rank(to) >= rank(from) {
                wrong.push(format!("{} -> {}", name(from), name(to)));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports that point up or sideways:\n{}",
        wrong.join("\n")
    );
    let cli = vec!["cli".to_string()];
    let importers: Vec<String> = graph
        .iter()
        .filter(|(_, targets)| targets.contains(&cli))
        .map(|(from, _)| name(from))
        .collect();
    assert_eq!(
        importers,
        ["<main>"],
        "cli is the top: only main.rs imports it"
    );
}

#[test]
fn only_the_app_knows_the_ui_toolkit() {
    let modules = modules(&src_dir());
    let mut found = Vec::new();
    for (module, file) in &modules {
        if module.first().map(String::as_str) == Some("app") {
            continue;
        }
        let code = code_only(&std::fs::read_to_string(file).unwrap());
        for toolkit in ["egui", "eframe", "egui_plot", "egui_wgpu", "wgpu", "rfd"] {
            if paths_in(&code)
                .iter()
                .any(|p| p.split("::").next() == Some(toolkit))
            {
                found.push(format!("{} uses {toolkit}", name(module)));
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn long_files_say_why() {
    let mut unexplained = Vec::new();
    for file in modules(&src_dir()).values() {
        let text = std::fs::read_to_string(file).unwrap();
        let lines = text.lines().count();
        let header_says_why = text
            .lines()
            .take_while(|l| l.starts_with("//!"))
            .any(|l| l.contains("Long because"));
        if lines > 600 && !header_says_why {
            unexplained.push(format!("{} ({lines} lines)", file.display()));
        }
    }
    assert!(
        unexplained.is_empty(),
        "files over 600 lines whose first comment does not say why (\"Long because ...\"):\n{}",
        unexplained.join("\n")
    );
}

/// A fresh machine builds fovea with the Rust toolchain and a C compiler alone: nothing in the
/// dependency tree (normal and build dependencies, every target) builds with cmake, and the
/// C++ JPEG-LS codec CharLS is gone (fovea decodes JPEG-LS itself).
#[test]
fn the_build_needs_no_cmake() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).unwrap();
    let packages: Vec<&str> = lock
        .lines()
        .filter_map(|l| l.strip_prefix("name = \""))
        .map(|l| l.trim_end_matches('"'))
        .collect();
    assert!(
        packages.len() > 100,
        "Cargo.lock lists {} packages",
        packages.len()
    );
    for banned in ["cmake", "charls", "charls-sys"] {
        assert!(!packages.contains(&banned), "Cargo.lock still has {banned}");
    }
    // The same question asked of cargo, for the features actually enabled.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = std::process::Command::new(cargo)
        .args([
            "tree",
            "--locked",
            "--offline",
            "-e",
            "normal,build",
            "--prefix",
            "none",
        ])
        .current_dir(&root)
        .output()
        .expect("cargo runs");
    let tree = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        tree.lines().count() > 100,
        "cargo tree printed {} lines",
        tree.lines().count()
    );
    let cmake: Vec<&str> = tree
        .lines()
        .filter(|l| l.starts_with("cmake ") || l.starts_with("charls"))
        .collect();
    assert!(cmake.is_empty(), "the build tree still needs: {cmake:?}");
}

//! The architecture, held by a test (issue 14): the crate graph is the one drawn in
//! docs/architecture.md, dependencies point one way, and no crate's modules import each other in
//! a cycle.
//!
//! Module edges are read from the sources: a file under `src/a/…` belongs to module `a`, and each
//! `crate::b` it names (outside `//` comments) is an edge `a → b`. Crude, and enough: the compiler
//! does not see module cycles, this does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The Conduit crates of the workspace: (package name, directory).
fn crates() -> Vec<(String, PathBuf)> {
    let manifest: toml::Table = toml::from_str(&std::fs::read_to_string(root().join("Cargo.toml")).unwrap()).unwrap();
    let members = manifest["workspace"]["members"].as_array().unwrap();
    let mut out = Vec::new();
    for m in members {
        let dir = root().join(m.as_str().unwrap());
        let own: toml::Table = toml::from_str(&std::fs::read_to_string(dir.join("Cargo.toml")).unwrap()).unwrap();
        let name = own["package"]["name"].as_str().unwrap().to_string();
        // The layered crates; the policy SDK, guests and examples are built for wasm on their own.
        if name == "conduit" || (dir.starts_with(root().join("crates"))) {
            out.push((name, dir));
        }
    }
    out
}

/// `conduit-*` crates a crate depends on (normal dependencies: what its code may use).
fn conduit_deps(dir: &Path) -> BTreeSet<String> {
    let own: toml::Table = toml::from_str(&std::fs::read_to_string(dir.join("Cargo.toml")).unwrap()).unwrap();
    own.get("dependencies")
        .and_then(|d| d.as_table())
        .map(|d| d.keys().filter(|k| k.starts_with("conduit")).cloned().collect())
        .unwrap_or_default()
}

/// The graph docs/architecture.md draws, from its "crate graph" block: `a → b, c` lines.
fn documented_graph() -> BTreeMap<String, BTreeSet<String>> {
    let doc = std::fs::read_to_string(root().join("docs/architecture.md")).unwrap();
    let start = doc
        .find("```crate-graph")
        .expect("docs/architecture.md has a ```crate-graph block");
    let block = &doc[start + "```crate-graph".len()..];
    let block = &block[..block.find("```").unwrap()];
    let mut out = BTreeMap::new();
    for line in block.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (from, to) = line.split_once('→').unwrap_or((line, ""));
        let deps = to
            .split(',')
            .map(str::trim)
            .filter(|d| !d.is_empty() && *d != "—")
            .map(String::from)
            .collect();
        out.insert(from.trim().to_string(), deps);
    }
    out
}

#[test]
fn the_crate_graph_is_the_documented_one() {
    let actual: BTreeMap<String, BTreeSet<String>> = crates()
        .into_iter()
        .map(|(name, dir)| (name, conduit_deps(&dir)))
        .collect();
    assert_eq!(
        actual,
        documented_graph(),
        "the crates' [dependencies] differ from docs/architecture.md's crate graph: change one or the other, deliberately"
    );
}

/// Every `.rs` file of a crate's `src/`, with the top-level module it belongs to (`None`: the
/// crate root or a binary).
fn modules(src: &Path) -> Vec<(Option<String>, String)> {
    let mut out = Vec::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).unwrap();
            let first = rel
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy()
                .into_owned();
            let top = match first.as_str() {
                "lib.rs" | "main.rs" | "bin" => None,
                f => Some(f.trim_end_matches(".rs").to_string()),
            };
            out.push((top, std::fs::read_to_string(&path).unwrap()));
        }
    }
    out
}

/// `crate::x` names in code (comments stripped), including `crate::{x, y::z}`.
fn crate_refs(source: &str) -> BTreeSet<String> {
    let code: String = source
        .lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            for item in group.split(',') {
                let name = ident(item.trim());
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

/// Strongly connected components of more than one module (the cycles), each sorted.
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    // Reachability by repeated search: the graphs are a few dozen nodes.
    let reach = |from: &str| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_string()];
        while let Some(n) = todo.pop() {
            for d in graph.get(&n).into_iter().flatten() {
                if seen.insert(d.clone()) {
                    todo.push(d.clone());
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<&String, BTreeSet<String>> = graph.keys().map(|k| (k, reach(k))).collect();
    let mut out: Vec<Vec<String>> = Vec::new();
    for a in graph.keys() {
        let scc: Vec<String> = graph
            .keys()
            .filter(|b| *b == a || (reaches[a].contains(*b) && reaches[*b].contains(a)))
            .cloned()
            .collect();
        if scc.len() > 1 && !out.contains(&scc) {
            out.push(scc);
        }
    }
    out
}

fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let files = modules(src);
    let names: BTreeSet<String> = files.iter().filter_map(|(m, _)| m.clone()).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = names.iter().map(|n| (n.clone(), BTreeSet::new())).collect();
    for (module, source) in &files {
        let Some(module) = module else { continue };
        for r in crate_refs(source) {
            if names.contains(&r) && &r != module {
                graph.get_mut(module).unwrap().insert(r);
            }
        }
    }
    graph
}

#[test]
fn no_crate_has_a_module_cycle() {
    let mut problems = Vec::new();
    for (name, dir) in crates() {
        for cycle in cycles(&module_graph(&dir.join("src"))) {
            problems.push(format!("{name}: {}", cycle.join(" ↔ ")));
        }
    }
    assert!(
        problems.is_empty(),
        "module cycles (a lower module must not import a higher one; move the shared piece down):\n{}",
        problems.join("\n")
    );
}

/// A stage reads what its `Reads` names and nothing else: no stage sees the whole gateway, the
/// pipeline that calls it, or the servers and CLI above.
#[test]
fn stages_take_what_they_read() {
    let above = ["gateway", "pipeline", "server", "admin"];
    let mut problems = Vec::new();
    for (module, source) in modules(&root().join("crates/gateway/src")) {
        if module.as_deref() != Some("stages") {
            continue;
        }
        for r in crate_refs(&source) {
            if above.contains(&r.as_str()) {
                problems.push(r);
            }
        }
    }
    assert!(
        problems.is_empty(),
        "a stage imports what is above it ({problems:?}); give it what it reads in its `Reads` instead"
    );
}

/// The checks above can fail: a cycle and an undocumented edge are found.
#[test]
fn the_checks_see_what_they_look_for() {
    let graph: BTreeMap<String, BTreeSet<String>> = [("a", &["b"][..]), ("b", &["c"]), ("c", &["a"]), ("d", &["a"])]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
        .collect();
    assert_eq!(cycles(&graph), vec![vec!["a".to_string(), "b".into(), "c".into()]]);
    let refs = crate_refs("use crate::{x, y::z};\n// crate::not_this\nlet v = crate::w::f();");
    assert_eq!(refs, ["w", "x", "y"].into_iter().map(String::from).collect());
}

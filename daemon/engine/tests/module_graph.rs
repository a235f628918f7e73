//! The engine's modules depend one way: the core and the shared pieces at the bottom, the
//! hubs above them (devices, storage; models; vectors, jobs), the front and the wiring on
//! top. This reads the engine's own sources (tests excluded), builds the graph of
//! `crate::`/`super::` references between module files and fails on any circle, and on a
//! hub that reaches for the front, the engine or the wiring.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn sources(dir: &Path, base: &Path, out: &mut BTreeMap<String, String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, base, out);
            continue;
        }
        if p.extension().and_then(|x| x.to_str()) != Some("rs") {
            continue;
        }
        let rel = p
            .strip_prefix(base)
            .unwrap()
            .to_string_lossy()
            .replace(".rs", "");
        let rel = rel.strip_suffix("/mod").unwrap_or(&rel).replace('/', "::");
        if rel == "lib" || rel == "testing" || rel.ends_with("tests") {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap();
        // Unit tests may reach anywhere; only the product code counts.
        let text = match text.find("#[cfg(test)]\nmod tests {") {
            Some(i) => text[..i].to_string(),
            None => text,
        };
        out.insert(rel, text);
    }
}

/// `a::b::c` → the longest known module it names.
fn resolve<'a>(path: &str, known: &'a BTreeSet<String>) -> Option<&'a String> {
    let parts: Vec<&str> = path.split("::").collect();
    (1..=parts.len())
        .rev()
        .find_map(|n| known.get(&parts[..n].join("::")))
}

/// Paths after `prefix` (e.g. `crate::`), including those inside `use crate::{a, b::c}`.
fn paths_after(text: &str, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(prefix) {
        rest = &rest[i + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let item = item.trim();
                let name: String = item
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_' || *c == ':')
                    .collect();
                if !name.is_empty() {
                    out.push(name.trim_end_matches(':').to_string());
                }
            }
            continue;
        }
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == ':')
            .collect();
        if !name.is_empty() {
            out.push(name.trim_end_matches(':').to_string());
        }
    }
    out
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = BTreeMap::new();
    sources(&base, &base, &mut files);
    let known: BTreeSet<String> = files.keys().cloned().collect();
    let mut g = BTreeMap::new();
    for (m, text) in &files {
        let mut deps = BTreeSet::new();
        for p in paths_after(text, "crate::") {
            if let Some(r) = resolve(&p, &known).filter(|r| *r != m) {
                deps.insert(r.clone());
            }
        }
        if let Some((parent, _)) = m.rsplit_once("::") {
            for p in paths_after(text, "super::") {
                let full = format!("{parent}::{p}");
                if let Some(r) = resolve(&full, &known).filter(|r| *r != m) {
                    deps.insert(r.clone());
                }
            }
        }
        g.insert(m.clone(), deps);
    }
    g
}

fn find_cycle(g: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|s| s == n) {
            let mut c = stack[i..].to_vec();
            c.push(n.to_string());
            return Some(c);
        }
        if !done.insert(n.to_string()) {
            return None;
        }
        stack.push(n.to_string());
        for d in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(d, g, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        None
    }
    let mut done = BTreeSet::new();
    g.keys()
        .find_map(|n| visit(n, g, &mut Vec::new(), &mut done))
}

#[test]
fn the_engine_s_modules_have_no_import_circle() {
    let g = graph();
    assert!(
        g.contains_key("core") && g.contains_key("models::sched"),
        "{g:?}"
    );
    if let Some(c) = find_cycle(&g) {
        panic!("import circle: {}", c.join(" -> "));
    }
}

#[test]
fn hubs_depend_on_the_core_and_lower_hubs_only() {
    let g = graph();
    let hubs = ["core", "devices", "storage", "models", "vectors", "jobs"];
    for hub in hubs {
        for d in &g[hub] {
            assert!(
                !["engine", "front", "wiring"].contains(&d.as_str()),
                "hub {hub} depends on {d}: hubs get what they need passed in"
            );
        }
    }
    // The layers: nothing below reaches up.
    let order = ["devices", "storage", "models", "vectors"];
    for (i, low) in order.iter().enumerate() {
        for high in &order[i + 1..] {
            assert!(!g[*low].contains(*high), "{low} depends on {high}: {g:?}");
        }
    }
    for hub in ["devices", "storage", "models", "vectors"] {
        assert!(!g[hub].contains("jobs"), "{hub} depends on jobs");
    }
}

#[test]
fn the_checker_sees_a_circle_when_there_is_one() {
    let mut g = BTreeMap::new();
    g.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    g.insert("b".to_string(), BTreeSet::from(["c".to_string()]));
    g.insert("c".to_string(), BTreeSet::from(["a".to_string()]));
    assert_eq!(find_cycle(&g).unwrap(), ["a", "b", "c", "a"]);
    g.get_mut("c").unwrap().clear();
    assert!(find_cycle(&g).is_none());
    assert_eq!(
        paths_after("use crate::{core::Core, jobs::info::JobInfo};", "crate::"),
        ["core", "jobs::info"]
    );
}

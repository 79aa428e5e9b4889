//! The module graph of a crate, read from its sources, to check that no module imports a module
//! that imports it back.
//!
//! A module is a source file (`lib.rs`, `a.rs`, `a/mod.rs`, `a/b.rs`); its imports are the paths
//! it names: `crate::a::b::…`, `super::…`, `self::…`, and the modules it declares itself used as
//! `child::…`, plus the children it declares (`mod child;`: a parent owns its children, so a
//! child importing from its parent closes a circle). Each path leads to the deepest module file
//! it names. Code after the first
//! `#[cfg(test)]` line is left out: a unit test's `use super::*` is no import of the module it
//! tests. This is what `cargo modules dependencies --acyclic` checks, without building
//! rust-analyzer, so CI runs it on every change.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module's path below the crate root (`[]` for the root, `["core", "scheduler"]`).
pub type ModPath = Vec<String>;

/// The modules of one crate and whom each imports.
#[derive(Debug, Default)]
pub struct ModuleGraph {
    /// Each module and the other modules its code names.
    pub imports: BTreeMap<ModPath, BTreeSet<ModPath>>,
}

fn module_path(src: &Path, file: &Path) -> ModPath {
    let rel = file.strip_prefix(src).expect("a file below src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap_or_default();
    let stem = last.trim_end_matches(".rs");
    if !matches!(stem, "lib" | "main" | "mod") {
        parts.push(stem.to_string());
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code of a module file without comments, string literals or its unit tests.
fn code_of(text: &str) -> String {
    let text = match text.find("\n#[cfg(test)]") {
        Some(i) => &text[..i],
        None => text,
    };
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let code = match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        };
        // Strings may hold `crate::` in messages; drop their contents (no escapes across `"`).
        let mut in_str = false;
        let mut prev = ' ';
        for c in code.chars() {
            if c == '"' && prev != '\\' {
                in_str = !in_str;
                out.push('"');
            } else if !in_str {
                out.push(c);
            }
            prev = c;
        }
        out.push('\n');
    }
    out
}

/// The paths that start at `i` in `code`: `a::b::C` → `[[a, b, C]]`, and a use-group
/// `a::{b::C, d}` → `[[a, b, C], [a, d]]`; with the bytes they take.
fn paths_at(code: &str, i: usize) -> (Vec<Vec<String>>, usize) {
    let mut segs = Vec::new();
    let mut at = i;
    loop {
        let rest = &code[at..];
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if end == 0 {
            break;
        }
        segs.push(rest[..end].to_string());
        at += end;
        if code[at..].starts_with("::{") {
            // A group: each item, split at top-level commas, continues this path.
            let open = at + 2;
            let mut depth = 0;
            let mut close = code.len();
            for (j, c) in code[open..].char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            close = open + j;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let mut paths = Vec::new();
            let inner = &code[open + 1..close.max(open + 1)];
            let (mut depth, mut item_start) = (0, 0);
            let mut items = Vec::new();
            for (j, c) in inner.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        items.push(item_start);
                        item_start = j + 1;
                    }
                    _ => {}
                }
            }
            items.push(item_start);
            for start in items {
                let offset = inner[start..].len() - inner[start..].trim_start().len();
                let (subs, _) = paths_at(inner, start + offset);
                for sub in subs {
                    paths.push(segs.iter().cloned().chain(sub).collect());
                }
            }
            return (paths, (close + 1).min(code.len()) - i);
        }
        match code[at..].strip_prefix("::") {
            Some(_) => at += 2,
            None => break,
        }
    }
    (vec![segs], (at - i).max(1))
}

fn is_ident_boundary(code: &str, i: usize) -> bool {
    i == 0
        || !code[..i]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
}

/// The module a path names from module `here`, if it names another module of this crate.
fn resolve(
    segs: &[String],
    here: &ModPath,
    children: &BTreeSet<String>,
    modules: &BTreeSet<ModPath>,
) -> Option<ModPath> {
    if segs.len() < 2 {
        return None;
    }
    let mut target: ModPath = match segs[0].as_str() {
        "crate" => segs[1..].to_vec(),
        "self" => here.iter().chain(&segs[1..]).cloned().collect(),
        "super" => {
            let ups = segs.iter().take_while(|s| *s == "super").count();
            if ups > here.len() {
                return None;
            }
            here[..here.len() - ups]
                .iter()
                .chain(&segs[ups..])
                .cloned()
                .collect()
        }
        child if children.contains(child) => here.iter().chain(segs).cloned().collect(),
        _ => return None,
    };
    // The deepest module the path names.
    while !modules.contains(&target) {
        target.pop();
    }
    (&target != here).then_some(target)
}

impl ModuleGraph {
    /// Reads the crate whose sources are in `src`.
    pub fn read(src: &Path) -> Self {
        let mut files = Vec::new();
        rust_files(src, &mut files);
        files.sort();
        let modules: BTreeSet<ModPath> = files.iter().map(|f| module_path(src, f)).collect();
        let mut imports = BTreeMap::new();
        for file in &files {
            let here = module_path(src, file);
            let text = std::fs::read_to_string(file).expect("readable source");
            let code = code_of(&text);
            let children: BTreeSet<String> = modules
                .iter()
                .filter(|m| m.len() == here.len() + 1 && m.starts_with(&here))
                .map(|m| m[here.len()].clone())
                .collect();
            let mut named = BTreeSet::new();
            let bytes = code.as_bytes();
            let mut i = 0;
            while i < code.len() {
                let c = bytes[i] as char;
                if !(c.is_ascii_alphabetic() || c == '_') || !is_ident_boundary(&code, i) {
                    i += 1;
                    continue;
                }
                let (paths, taken) = paths_at(&code, i);
                i += taken;
                for segs in paths {
                    if let Some(target) = resolve(&segs, &here, &children, &modules) {
                        named.insert(target);
                    }
                }
            }
            // A parent owns the children it declares, as rust-analyzer (and cargo-modules)
            // reads it: a child that imports from its parent closes a circle.
            for child in &children {
                if code.contains(&format!("mod {child};")) {
                    let mut owned = here.clone();
                    owned.push(child.clone());
                    named.insert(owned);
                }
            }
            imports.insert(here, named);
        }
        Self { imports }
    }
    /// Every pair of modules that reach each other through imports, as the cycle between them.
    pub fn cycles(&self) -> Vec<Vec<ModPath>> {
        let mut found = Vec::new();
        let mut seen = BTreeSet::new();
        for start in self.imports.keys() {
            for next in &self.imports[start] {
                if let Some(back) = self.route(next, start)
                    && seen.insert((start.clone(), next.clone()))
                {
                    let mut cycle = vec![start.clone()];
                    cycle.extend(back);
                    found.push(cycle);
                }
            }
        }
        found
    }

    /// A chain of imports from `from` to `to`, if there is one (breadth first, so the shortest).
    fn route(&self, from: &ModPath, to: &ModPath) -> Option<Vec<ModPath>> {
        let mut prev: BTreeMap<ModPath, ModPath> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([from.clone()]);
        let mut visited = BTreeSet::from([from.clone()]);
        while let Some(m) = queue.pop_front() {
            if &m == to {
                let mut chain = vec![m.clone()];
                let mut at = m;
                while let Some(p) = prev.get(&at) {
                    chain.push(p.clone());
                    at = p.clone();
                }
                chain.reverse();
                return Some(chain);
            }
            for n in self.imports.get(&m).into_iter().flatten() {
                if visited.insert(n.clone()) {
                    prev.insert(n.clone(), m.clone());
                    queue.push_back(n.clone());
                }
            }
        }
        None
    }
}

/// `crate::a::b` for a module path.
pub fn display(m: &ModPath) -> String {
    std::iter::once("crate")
        .chain(m.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join("::")
}

//! The source layout: no module imports a module that imports it back, in any crate of the
//! workspace (the module graph is read from the sources, see `univrs_tests::modules`).

use univrs_tests::modules::{ModuleGraph, display};
use univrs_tests::repo_root;

#[test]
fn no_module_imports_a_module_that_imports_it_back() {
    let mut report = Vec::new();
    for krate in ["api", "io", "controller", "node-agent", "univrs"] {
        let graph = ModuleGraph::read(&repo_root().join(krate).join("src"));
        assert!(graph.imports.len() > 1, "{krate}: no modules read");
        for cycle in graph.cycles() {
            let chain: Vec<String> = cycle.iter().map(display).collect();
            report.push(format!("{krate}: {}", chain.join(" → ")));
        }
    }
    assert!(
        report.is_empty(),
        "modules that import each other (move what both need into a module both may import):\n{}",
        report.join("\n")
    );
}

#[test]
fn the_check_sees_a_circle_through_a_parent_and_a_group() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir_all(src.join("a")).unwrap();
    std::fs::write(src.join("lib.rs"), "pub mod a;\npub mod b;\n").unwrap();
    // a/mod.rs declares its child, the child uses a helper of its parent: a circle (a parent
    // owns its children even when it names nothing in them).
    std::fs::write(src.join("a/mod.rs"), "pub mod c;\npub fn helper() {}\n").unwrap();
    std::fs::write(
        src.join("a/c.rs"),
        "use super::helper;\npub struct Thing; // crate::b::x in a comment\n",
    )
    .unwrap();
    // b names a only inside a group and a string; a never names b: no circle.
    std::fs::write(
        src.join("b.rs"),
        "use crate::{a::c::Thing, a::helper};\nconst S: &str = \"crate::a\";\n#[cfg(test)]\nmod tests { use crate::b; }\n",
    )
    .unwrap();
    let graph = ModuleGraph::read(src);
    let b = graph.imports[&vec!["b".to_string()]].clone();
    assert!(b.contains(&vec!["a".to_string()]), "{graph:?}");
    let cycles: Vec<Vec<String>> = graph
        .cycles()
        .iter()
        .map(|c| c.iter().map(display).collect())
        .collect();
    assert_eq!(
        cycles,
        vec![
            vec!["crate::a", "crate::a::c", "crate::a"],
            vec!["crate::a::c", "crate::a", "crate::a::c"],
        ],
        "{graph:?}"
    );
}

//! The README's claims stay true: its diagram is the committed one, and every test its
//! "What we test" table names exists.

use std::fs;

use crate::support::root;

fn readme() -> String {
    fs::read_to_string(root().join("README.md")).unwrap()
}

#[test]
fn the_readme_shows_the_committed_diagram() {
    let erd = fs::read_to_string(root().join("docs/erd.mmd")).unwrap();
    assert!(
        readme().contains(&format!("```mermaid\n{erd}```")),
        "README.md's mermaid block differs from docs/erd.mmd: paste docs/erd.mmd into it"
    );
}

#[test]
fn every_test_named_in_the_readme_exists() {
    let readme = readme();
    let section = readme
        .split("## What we test")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("README.md has a \"What we test\" section");
    let name = regex::Regex::new(r"`(\w+)::(\w+)`").unwrap();
    let mut named = 0;
    for found in name.captures_iter(section) {
        let (module, test) = (&found[1], &found[2]);
        let source = fs::read_to_string(root().join(format!("tests/it/{module}.rs")))
            .unwrap_or_else(|_| {
                panic!("README names {module}::{test}, but there is no tests/it/{module}.rs")
            });
        assert!(
            source.contains(&format!("#[test]\nfn {test}()")),
            "README names {module}::{test}, which is not a test in tests/it/{module}.rs"
        );
        named += 1;
    }
    assert!(named >= 25, "only {named} tests named");
}

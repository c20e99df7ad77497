//! ARCHITECTURE.md stays true: the layering rule (the xtask reaches PostgreSQL, processes
//! of PostgreSQL's and the file formats only through the library) and the code map
//! (every module is named, every named file exists).

use std::fs;
use std::path::{Path, PathBuf};

use crate::support::root;

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// What only the library may do: talk to PostgreSQL, start its programs by hand, or
/// write SQL and migration files.
const LIBRARY_ONLY: &[(&str, &str)] = &[
    ("postgres::", "a PostgreSQL driver type"),
    ("tokio_postgres", "a PostgreSQL driver"),
    ("duct::", "a child process outside xshell"),
    ("std::process::Command", "a child process outside xshell"),
    ("query_one(", "a query"),
    ("batch_execute(", "a query"),
    (".execute(", "a query"),
    ("migration.toml", "the migration file format"),
    ("revises =", "the migration file format"),
];

#[test]
fn the_xtask_reaches_postgres_and_the_file_formats_only_through_the_library() {
    let mut found = Vec::new();
    for file in rust_files(&root().join("xtask/src")) {
        let text = fs::read_to_string(&file).unwrap();
        for (number, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for (needle, what) in LIBRARY_ONLY {
                if line.contains(needle) {
                    found.push(format!(
                        "{}:{}: {what} (`{needle}`)",
                        file.strip_prefix(root()).unwrap().display(),
                        number + 1
                    ));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "the xtask does work that belongs in backend-schema:\n{}",
        found.join("\n")
    );
    let manifest = fs::read_to_string(root().join("xtask/Cargo.toml")).unwrap();
    let dependencies = manifest
        .split("[dependencies]")
        .nth(1)
        .and_then(|rest| rest.split("\n[").next())
        .unwrap();
    for crate_name in ["postgres", "tokio-postgres", "duct"] {
        assert!(
            !dependencies
                .lines()
                .any(|l| l.starts_with(&format!("{crate_name}."))
                    || l.starts_with(&format!("{crate_name} "))),
            "xtask/Cargo.toml depends on {crate_name}: only the library may"
        );
    }
}

#[test]
fn the_code_map_names_every_module_and_nothing_that_is_gone() {
    let map = fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let mut missing = Vec::new();
    for crate_dir in ["backend-schema/src", "xtask/src"] {
        let base = root().join(crate_dir);
        for file in rust_files(&base) {
            let relative = file.strip_prefix(&base).unwrap();
            let name = file.file_name().unwrap().to_str().unwrap();
            // A directory module is named by its directory; `tests.rs` files hold the unit
            // tests of the module beside them.
            let named = match name {
                "tests.rs" | "lib.rs" => true,
                "mod.rs" => {
                    let dir = relative.parent().unwrap();
                    let dir = dir
                        .file_name()
                        .map_or(String::new(), |d| format!("{}/", d.to_str().unwrap()));
                    dir.is_empty() || map.contains(&dir)
                }
                _ => map.contains(name) || map.contains(name.trim_end_matches(".rs")),
            };
            if !named {
                missing.push(format!("{crate_dir}/{}", relative.display()));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md's code map does not name: {missing:?}"
    );

    let all: Vec<String> = ["backend-schema/src", "xtask/src", "tests/it"]
        .iter()
        .flat_map(|dir| rust_files(&root().join(dir)))
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
        .collect();
    let file_name = regex::Regex::new(r"`([a-z_]+\.rs)`").unwrap();
    let stale: Vec<&str> = file_name
        .captures_iter(&map)
        .map(|c| c.get(1).unwrap().as_str())
        .filter(|name| !all.iter().any(|f| f == name))
        .collect();
    assert!(
        stale.is_empty(),
        "ARCHITECTURE.md names files that do not exist: {stale:?}"
    );
}

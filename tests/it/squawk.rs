//! The README's comparison with squawk: the pinned squawk-cli (`tests/squawk/requirements.txt`,
//! provisioned into `target/squawk-venv` like the pinned Alembic) runs over the unsafe
//! migrations our lint tests use, and the README's table must be what this run and our
//! findings (`lint::UNSAFE_FINDINGS`) give, cell for cell.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::lint::{UNSAFE, UNSAFE_ALLOWED, UNSAFE_FINDINGS};
use crate::pinned_alembic::provision_venv;
use crate::support::root;

/// The pinned squawk (`$SQUAWK` when set), provisioned first.
fn squawk_command() -> Command {
    if let Some(program) = std::env::var_os("SQUAWK") {
        return Command::new(program);
    }
    static SQUAWK: OnceLock<PathBuf> = OnceLock::new();
    let squawk = SQUAWK.get_or_init(|| {
        let python = provision_venv(
            &root().join("target"),
            "squawk-venv",
            &root().join("tests/squawk/requirements.txt"),
            Path::new("python3"),
        )
        .unwrap_or_else(|err| panic!("cannot provision the pinned squawk-cli: {err}"));
        // The wheel's squawk is a native program, not a script naming the staging dir.
        python.with_file_name("squawk")
    });
    Command::new(squawk)
}

/// Squawk's rules that fire on whatever a statement is (timeouts, retry, column types):
/// shown in their own column so the safety rules can be compared.
const GENERAL: [&str; 4] = [
    "prefer-robust-stmts",
    "require-lock-timeout",
    "require-statement-timeout",
    "prefer-bigint-over-int",
];

/// Which squawk rules report the same problem as each of ours.
fn squawk_equivalents(rule: &str) -> &'static [&'static str] {
    match rule {
        "index-not-concurrent" => &["require-concurrent-index-creation"],
        "constraint-validated-in-place" => &[
            "constraint-missing-not-valid",
            "adding-foreign-key-constraint",
        ],
        "table-rewrite" => &["changing-column-type", "adding-field-with-default"],
        "rename-breaks-running-code" => &["renaming-column", "renaming-table"],
        "unique-built-in-place" => &["disallowed-unique-constraint"],
        "drop-breaks-running-code" => &["ban-drop-column", "ban-drop-table"],
        "set-not-null-scan" => &["adding-not-nullable-field"],
        "non-transactional-not-retry-safe" => &["prefer-robust-stmts"],
        _ => &[],
    }
}

/// (rule, 1-based line) of each squawk finding on one up.sql.
fn squawk_findings(dir: &Path, transactional: bool) -> BTreeSet<(String, u64)> {
    let mut command = squawk_command();
    command.args(["--reporter", "json", "--pg-version", "15.0"]);
    // Our runner wraps a transactional migration in one transaction: tell squawk so.
    if transactional {
        command.arg("--assume-in-transaction");
    }
    let output = command.arg(dir.join("up.sql")).output().unwrap();
    // squawk exits 1 when it reports something.
    assert!(
        output.status.code().is_some_and(|c| c <= 1),
        "squawk failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let found: serde_json::Value =
        serde_json::from_slice(&output.stdout).unwrap_or_else(|err| panic!("squawk's JSON: {err}"));
    // squawk's line is 0-based and often the clause's, ours is where the statement
    // starts: compared by statement.
    let sql = std::fs::read_to_string(dir.join("up.sql")).unwrap();
    let starts: Vec<u64> = backend_schema::sql_split::split_statements(&sql)
        .iter()
        .map(|s| s.line as u64)
        .collect();
    found
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let line = f["line"].as_u64().unwrap() + 1;
            let statement = starts.iter().rev().find(|s| **s <= line).unwrap_or(&line);
            (f["rule_name"].as_str().unwrap().to_string(), *statement)
        })
        .collect()
}

/// "`rule` 1, 3; `other` 2", or "none".
fn by_rule<'a>(items: impl IntoIterator<Item = (&'a str, u64)>) -> String {
    let mut rules: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
    for (rule, line) in items {
        rules.entry(rule).or_default().insert(line);
    }
    if rules.is_empty() {
        return "none".into();
    }
    rules
        .iter()
        .map(|(rule, lines)| {
            let lines: Vec<String> = lines.iter().map(u64::to_string).collect();
            format!("`{rule}` {}", lines.join(", "))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The comparison table, as the README must show it, and how many of our findings
/// squawk reports of how many.
fn comparison_table() -> (String, usize, usize) {
    let (mut found, mut total) = (0, 0);
    let corpus = root().join(UNSAFE);
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&corpus)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    let mut table = String::from(
        "| case (`tests/fixtures/unsafe_migrations`, up.sql) | ours (`verify`), by statement line | squawk's safety rules, by statement line | squawk's general rules, by statement line | squawk on our findings |\n|---|---|---|---|---|\n",
    );
    for dir in dirs {
        let metadata = std::fs::read_to_string(dir.join("migration.toml")).unwrap();
        let field = |key: &str| {
            metadata
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{key} = ")))
                .unwrap_or_else(|| panic!("no {key} in {}", dir.display()))
                .trim_matches('"')
        };
        let (revision, message) = (field("revision"), field("message"));
        let transactional = field("transactional") == "true";
        let ours: Vec<(&str, u64, bool)> = UNSAFE_FINDINGS
            .iter()
            .map(|f| (f, false))
            .chain(UNSAFE_ALLOWED.iter().map(|f| (f, true)))
            .filter(|((r, _, file, _), _)| *r == revision && *file == "up.sql")
            .map(|((_, rule, _, line), allowed)| (*rule, *line, allowed))
            .collect();
        let theirs = squawk_findings(&dir, transactional);
        let ours_text = match ours.is_empty() {
            true => "none".to_string(),
            false => ours
                .iter()
                .map(|(rule, line, allowed)| {
                    format!(
                        "`{rule}` {line}{}",
                        if *allowed {
                            " (allowed by comment)"
                        } else {
                            ""
                        }
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
        };
        let (general, safety): (Vec<_>, Vec<_>) = theirs
            .iter()
            .map(|(rule, line)| (rule.as_str(), *line))
            .partition(|(rule, _)| GENERAL.contains(rule));
        let verdicts: Vec<String> = ours
            .iter()
            .map(|(rule, line, _)| {
                let same = squawk_equivalents(rule)
                    .iter()
                    .find(|s| theirs.contains(&(s.to_string(), *line)));
                match same {
                    Some(s) => format!("`{rule}`: found (`{s}`)"),
                    None => format!("`{rule}`: missed"),
                }
            })
            .collect();
        let verdict = match verdicts.is_empty() {
            true => "—".to_string(),
            false => verdicts.join("; "),
        };
        total += ours.len();
        found += verdicts.iter().filter(|v| v.contains(": found")).count();
        table.push_str(&format!(
            "| `{revision}` {message} | {ours_text} | {} | {} | {verdict} |\n",
            by_rule(safety),
            by_rule(general)
        ));
    }
    (table, found, total)
}

#[test]
fn the_readme_shows_what_squawk_reports_on_our_unsafe_migrations() {
    let (table, found, total) = comparison_table();
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    assert!(
        readme.contains(&table),
        "README.md's comparison with squawk is out of date; this run gives:\n\n{table}"
    );
    let summary = format!("squawk reports {found} of our {total} findings");
    assert!(
        readme.contains(&summary),
        "the README does not say: {summary}"
    );
    let pinned = std::fs::read_to_string(root().join("tests/squawk/requirements.txt")).unwrap();
    let version = pinned
        .lines()
        .find_map(|l| l.strip_prefix("squawk-cli=="))
        .unwrap();
    assert!(
        readme.contains(&format!("squawk-cli {version}")),
        "the README names another squawk version than {version}"
    );
}

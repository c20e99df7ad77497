//! Migration safety findings: `verify` traces every statement of the unsafe patterns
//! (`tests/fixtures/unsafe_migrations`) and reports each at its line with its rule and
//! fix; `lint` runs the static rules without a server; suppressions are listed.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::support::{xtask, xtask_command, Run};

pub const UNSAFE: &str = "tests/fixtures/unsafe_migrations";

/// (revision, rule, file, line) of each finding of a JSON report.
fn located(findings: &serde_json::Value) -> BTreeSet<(String, String, String, u64)> {
    findings
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let file = f["file"].as_str().unwrap_or("");
            (
                f["revision"].as_str().unwrap().to_string(),
                f["rule"].as_str().unwrap().to_string(),
                file.rsplit('/').next().unwrap().to_string(),
                f["line"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// What verify reports on the corpus (revision, rule, file, line): the README's
/// comparison with squawk (`squawk.rs`) shows the same.
pub const UNSAFE_FINDINGS: &[(&str, &str, &str, u64)] = &[
    ("5afe00000002", "index-not-concurrent", "up.sql", 2),
    ("5afe00000003", "constraint-validated-in-place", "up.sql", 2),
    ("5afe00000003", "constraint-validated-in-place", "up.sql", 3),
    ("5afe00000004", "table-rewrite", "up.sql", 1),
    ("5afe00000004", "table-rewrite", "down.sql", 1),
    ("5afe00000005", "table-rewrite", "up.sql", 1),
    ("5afe00000006", "rename-breaks-running-code", "up.sql", 1),
    ("5afe00000007", "unique-built-in-place", "up.sql", 1),
    ("5afe00000008", "drop-breaks-running-code", "up.sql", 1),
    ("5afe00000009", "set-not-null-scan", "up.sql", 1),
    ("5afe0000000a", "table-rewrite", "up.sql", 1),
    ("5afe0000000b", "long-strong-lock", "up.sql", 1),
    ("5afe0000000c", "non-transactional-mixes-ddl", "up.sql", 1),
    (
        "5afe0000000c",
        "non-transactional-not-retry-safe",
        "up.sql",
        2,
    ),
    ("5afe0000000c", "non-transactional-mixes-ddl", "down.sql", 2),
];

/// The findings the corpus allows by an `xtask:allow` comment.
pub const UNSAFE_ALLOWED: &[(&str, &str, &str, u64)] =
    &[("5afe0000000e", "drop-breaks-running-code", "up.sql", 3)];

fn set(items: &[(&str, &str, &str, u64)]) -> BTreeSet<(String, String, String, u64)> {
    items
        .iter()
        .map(|(r, rule, f, l)| (r.to_string(), rule.to_string(), f.to_string(), *l))
        .collect()
}

#[test]
fn verify_reports_each_unsafe_pattern_at_its_statement_with_rule_and_fix() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("verify.json");
    let output = xtask_command(&[
        "verify",
        "--migrations",
        UNSAFE,
        "--json",
        json.to_str().unwrap(),
    ])
    .env("GITHUB_ACTIONS", "true")
    .output()
    .unwrap();
    let run = Run { output };
    run.failure();
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let findings = &report["findings"];
    assert_eq!(located(findings), set(UNSAFE_FINDINGS), "{findings:#}");
    // New tables (5afe00000001, even with an index, a foreign key and a unique
    // constraint) and a nullable column (5afe0000000d) get no finding.
    for f in findings.as_array().unwrap() {
        let keys: BTreeSet<&str> = f.as_object().unwrap().keys().map(String::as_str).collect();
        for key in [
            "rule", "severity", "revision", "file", "line", "message", "fix",
        ] {
            assert!(keys.contains(key), "{key} missing from {f}");
        }
        assert!(!f["fix"].as_str().unwrap().is_empty());
    }
    let severity = |rule: &str| {
        findings
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["rule"] == rule)
            .unwrap()["severity"]
            .clone()
    };
    assert_eq!(severity("index-not-concurrent"), "error");
    assert_eq!(severity("long-strong-lock"), "warning");
    // In a downgrade, a finding is at most a warning.
    for f in findings.as_array().unwrap() {
        let down = f["file"].as_str().unwrap().ends_with("down.sql");
        assert!(!down || f["severity"] == "warning", "{f}");
    }
    // The comment above the drop allowed it, and the report says why.
    let allowed = &report["allowed"];
    assert_eq!(located(allowed), set(UNSAFE_ALLOWED));
    assert_eq!(
        allowed[0]["reason"],
        "release 41 no longer reads or writes leads.legacy"
    );

    // Text like a compiler's, and GitHub annotations.
    let out = run.stdout();
    for needle in [
        "error[index-not-concurrent]: tests/fixtures/unsafe_migrations/5afe00000002_index_leads_email/up.sql:2: builds an index on existing table leads without CONCURRENTLY",
        "     2 | CREATE INDEX ix_leads_email ON leads (email)",
        "  fix: CREATE INDEX CONCURRENTLY IF NOT EXISTS",
        "allowed[drop-breaks-running-code]: tests/fixtures/unsafe_migrations/5afe0000000e_drop_legacy_allowed/up.sql:3: release 41 no longer reads or writes leads.legacy (by the comment on line 2)",
        "::error file=tests/fixtures/unsafe_migrations/5afe00000002_index_leads_email/up.sql,line=2,title=index-not-concurrent::builds an index",
        "::warning file=tests/fixtures/unsafe_migrations/5afe0000000b_tenant_plan_slowly/up.sql,line=1,title=long-strong-lock::",
        "FAILED 10 safety finding(s) of severity error",
    ] {
        assert!(out.contains(needle), "`{needle}` not in:\n{out}");
    }
}

#[test]
fn lint_runs_the_static_rules_without_a_server() {
    let run = xtask(&["lint", "--migrations", UNSAFE]);
    run.failure();
    let out = run.stdout();
    for needle in [
        "error[rename-breaks-running-code]: tests/fixtures/unsafe_migrations/5afe00000006_rename_note/up.sql:1:",
        "warning[drop-breaks-running-code]: tests/fixtures/unsafe_migrations/5afe00000008_drop_obsolete/up.sql:1:",
        "error[non-transactional-mixes-ddl]: tests/fixtures/unsafe_migrations/5afe0000000c_notes_and_status_index/up.sql:1:",
        "allowed[drop-breaks-running-code]",
        "lint: 14 revision(s), 2 error(s), 3 warning(s), 1 allowed",
    ] {
        assert!(out.contains(needle), "`{needle}` not in:\n{out}");
    }
    // The same as JSON.
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("lint.json");
    xtask(&[
        "lint",
        "--migrations",
        UNSAFE,
        "--json",
        json.to_str().unwrap(),
    ])
    .failure();
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(located(&report["findings"]).contains(&(
        "5afe00000006".into(),
        "rename-breaks-running-code".into(),
        "up.sql".into(),
        1
    )));
    assert_eq!(report["allowed"].as_array().unwrap().len(), 1);
    // Traced rules need verify: lint names none of them.
    assert!(!out.contains("index-not-concurrent"), "{out}");
    // One revision, by prefix.
    let one = xtask(&["lint", "--migrations", UNSAFE, "5afe00000006"]);
    assert!(
        one.stdout()
            .contains("lint: 1 revision(s), 1 error(s), 0 warning(s), 0 allowed"),
        "{}",
        one.text()
    );

    // The shipped chain: clean, and fast enough for a pre-commit hook.
    let started = Instant::now();
    let shipped = xtask(&["lint"]);
    let took = started.elapsed();
    shipped.success();
    assert!(
        shipped.stdout().contains(&format!(
            "lint: {} revision(s), 0 error(s), 0 warning(s)",
            crate::support::chain_len()
        )),
        "{}",
        shipped.text()
    );
    assert!(took < Duration::from_secs(1), "lint took {took:?}");
}

#[test]
fn lint_finds_an_enum_value_used_where_added_and_roles_no_revision_creates() {
    let dir = tempfile::tempdir().unwrap();
    let write = |rev: &str, parent: Option<&str>, up: &str, down: &str| {
        let d = dir.path().join(format!("{rev}_step"));
        std::fs::create_dir(&d).unwrap();
        let revises = parent.map_or("[]".to_string(), |p| format!("[\"{p}\"]"));
        std::fs::write(
            d.join("migration.toml"),
            format!("revision = \"{rev}\"\nrevises = {revises}\nmessage = \"step\"\ntransactional = true\n"),
        )
        .unwrap();
        std::fs::write(d.join("up.sql"), up).unwrap();
        std::fs::write(d.join("down.sql"), down).unwrap();
    };
    write(
        "e0e000000001",
        None,
        "CREATE TYPE lead_status AS ENUM ('new', 'lost');\nCREATE TABLE leads (id bigint PRIMARY KEY, status lead_status);\nCREATE ROLE app_rw;\nGRANT SELECT ON leads TO app_rw;\n",
        "DROP TABLE leads;\nDROP TYPE lead_status;\nDROP ROLE app_rw;\n",
    );
    write(
        "e0e000000002",
        Some("e0e000000001"),
        "ALTER TYPE lead_status ADD VALUE 'won';\n\nUPDATE leads\n   SET status = 'won'\n WHERE id < 0;\nGRANT SELECT ON leads TO reporting, app_rw;\n",
        "SELECT 1;\n",
    );
    let run = xtask(&["lint", "--migrations", dir.path().to_str().unwrap()]);
    run.failure();
    let out = crate::support::filter(&run.stdout());
    for needle in [
        "error[enum-value-used-in-transaction]:",
        "e0e000000002_step/up.sql:3: enum value 'won' is used in the transaction that adds it",
        "error[unknown-role]:",
        "e0e000000002_step/up.sql:6: role reporting is created by no revision and not declared in roles.toml",
        "lint: 2 revision(s), 2 error(s), 0 warning(s), 0 allowed",
    ] {
        assert!(out.contains(needle), "`{needle}` not in:\n{out}");
    }
    // Declared in roles.toml, the role is known.
    std::fs::write(dir.path().join("roles.toml"), "roles = [\"reporting\"]\n").unwrap();
    let run = xtask(&["lint", "--migrations", dir.path().to_str().unwrap()]);
    assert!(run.stdout().contains("1 error(s)"), "{}", run.text());
}

/// An exclusion constraint added to a table that has rows builds its index under
/// ACCESS EXCLUSIVE, and PostgreSQL has no concurrent form: verify says so, with the
/// only fixes there are; on a table the same migration creates, nothing is said.
#[test]
fn verify_flags_an_exclusion_constraint_built_in_place_on_an_existing_table() {
    let dir = tempfile::tempdir().unwrap();
    let write = |rev: &str, parent: Option<&str>, up: &str, down: &str| {
        let d = dir.path().join(format!("{rev}_step"));
        std::fs::create_dir(&d).unwrap();
        let revises = parent.map_or("[]".to_string(), |p| format!("[\"{p}\"]"));
        std::fs::write(
            d.join("migration.toml"),
            format!("revision = \"{rev}\"\nrevises = {revises}\nmessage = \"step\"\ntransactional = true\n"),
        )
        .unwrap();
        std::fs::write(d.join("up.sql"), up).unwrap();
        std::fs::write(d.join("down.sql"), down).unwrap();
    };
    write(
        "e8c100000001",
        None,
        "CREATE TABLE bookings (id bigint PRIMARY KEY, room integer NOT NULL, during tstzrange NOT NULL);\n",
        "DROP TABLE bookings;\n",
    );
    write(
        "e8c100000002",
        Some("e8c100000001"),
        "CREATE TABLE desks (id bigint PRIMARY KEY, seat integer, during tstzrange NOT NULL,\n    CONSTRAINT desks_no_overlap EXCLUDE USING gist (during WITH &&));\n\
         ALTER TABLE desks ADD CONSTRAINT desks_one_per_seat EXCLUDE USING btree (seat WITH =);\n\
         ALTER TABLE bookings\n    ADD CONSTRAINT bookings_one_per_id EXCLUDE USING hash (id WITH =);\n",
        "ALTER TABLE bookings DROP CONSTRAINT bookings_one_per_id;\nDROP TABLE desks;\n",
    );
    let json = dir.path().join("verify.json");
    let run = xtask(&[
        "verify",
        "--migrations",
        dir.path().to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    run.failure();
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(
        located(&report["findings"]),
        set(&[("e8c100000002", "exclusion-built-in-place", "up.sql", 4)]),
        "{:#}",
        report["findings"]
    );
    let finding = &report["findings"][0];
    assert_eq!(finding["severity"], "error");
    let message = finding["message"].as_str().unwrap();
    assert!(
        message.contains("adds an EXCLUDE constraint to existing table bookings, building its index under AccessExclusiveLock"),
        "{message}"
    );
    let fix = finding["fix"].as_str().unwrap();
    assert!(fix.starts_with("there is no concurrent way"), "{fix}");
    assert!(
        fix.contains("quiet window") && fix.contains("new table"),
        "{fix}"
    );
    assert!(
        run.stdout().contains("error[exclusion-built-in-place]:"),
        "{}",
        run.text()
    );
}

#[test]
fn the_shipped_chain_passes_verify_with_its_one_true_finding_allowed_in_lint_toml() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("verify.json");
    xtask(&["verify", "--json", json.to_str().unwrap()]).success();
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["findings"], serde_json::json!([]));
    assert_eq!(
        located(&report["allowed"]),
        set(&[("f7e1c2d9b3a4", "index-not-concurrent", "up.sql", 9)])
    );
    assert_eq!(report["allowed"][0]["allowed_by"], "lint.toml");
}

#[test]
fn verify_sees_the_locks_of_a_migration_outside_a_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let write = |rev: &str, parent: Option<&str>, transactional: bool, up: &str, down: &str| {
        let d = dir.path().join(format!("{rev}_step"));
        std::fs::create_dir(&d).unwrap();
        let revises = parent.map_or("[]".to_string(), |p| format!("[\"{p}\"]"));
        std::fs::write(
            d.join("migration.toml"),
            format!("revision = \"{rev}\"\nrevises = {revises}\nmessage = \"step\"\ntransactional = {transactional}\n"),
        )
        .unwrap();
        std::fs::write(d.join("up.sql"), up).unwrap();
        std::fs::write(d.join("down.sql"), down).unwrap();
    };
    write(
        "07a000000001",
        None,
        true,
        "CREATE TABLE leads (id bigint PRIMARY KEY, email text, score integer);\n",
        "DROP TABLE leads;\n",
    );
    // Each statement commits on its own, so our session never sees its locks: verify
    // watches them from a second one.
    write(
        "07a000000002",
        Some("07a000000001"),
        false,
        "DROP INDEX CONCURRENTLY IF EXISTS ix_leads_score;\nCREATE INDEX CONCURRENTLY IF NOT EXISTS ix_leads_score ON leads (score);\nDROP INDEX CONCURRENTLY IF EXISTS ix_leads_email;\nCREATE INDEX ix_leads_email ON leads (email);\n",
        "DROP INDEX CONCURRENTLY IF EXISTS ix_leads_email;\nDROP INDEX CONCURRENTLY IF EXISTS ix_leads_score;\n",
    );
    let json = dir.path().join("verify.json");
    let run = xtask(&[
        "verify",
        "--migrations",
        dir.path().to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    run.failure();
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(
        located(&report["findings"]),
        set(&[
            ("07a000000002", "index-not-concurrent", "up.sql", 4),
            ("07a000000002", "non-transactional-mixes-ddl", "up.sql", 4),
        ]),
        "{}",
        run.text()
    );
    let traced = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["rule"] == "index-not-concurrent")
        .unwrap();
    assert!(
        traced["message"]
            .as_str()
            .unwrap()
            .contains("ShareLock blocks every write to leads"),
        "{report:#}"
    );
}

//! `verify` on chains shaped like real ones: the 13-revision fixture modelled on the
//! upstream DiagnoLeads chain (per-tenant UNIQUE, join-based policies, composite, cyclic
//! and self-referencing foreign keys, a partitioned table, identity and generated
//! columns, domains, arrays, duplicate indexes, a hard-coded role) reports exactly its
//! defects in one run; every graph problem is reported at once; `--strict`; the role a
//! chain names but never creates.

use std::collections::BTreeSet;
use std::path::Path;

use backend_schema::lint::Rule;
use backend_schema::verify::isolation::Verdict;
use backend_schema::verify::{verify_dir, StairStep, VerifyOptions, VerifyReport};

use crate::support::{copy_dir, filter, root, xtask};

const CHAIN: &str = "tests/fixtures/upstream_like";

fn verify_fixture(dir: &Path) -> VerifyReport {
    verify_dir(dir, &VerifyOptions::default(), &mut |_| {}).unwrap()
}

fn set<'a>(items: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
    items.into_iter().map(str::to_string).collect()
}

#[test]
fn a_chain_modelled_on_upstream_reports_exactly_its_defects() {
    let report = verify_fixture(&root().join(CHAIN));

    // Every revision ran its whole stairway: nothing stopped verify.
    assert_eq!(report.revisions.len(), 13, "{report:#?}");
    assert!(
        report.revisions.iter().all(|r| r.error.is_none()),
        "{report:#?}"
    );
    assert!(report.not_checked.is_empty(), "{:?}", report.not_checked);
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!(report.declared_roles, ["postgres"]);

    // The downgrade that forgets to revoke the hard-coded role's grants.
    let mismatched: Vec<&str> = report
        .revisions
        .iter()
        .filter(|r| r.schema_roundtrip.is_some())
        .map(|r| r.revision.as_str())
        .collect();
    assert_eq!(mismatched, ["7c0100000004"]);
    let diff = report.revisions[3].schema_roundtrip.as_deref().unwrap();
    assert!(
        diff.contains("+ grant DELETE, INSERT, SELECT, UPDATE to postgres"),
        "{diff}"
    );

    // Isolation: a policy open when no tenant is set, and one that leaks.
    let isolation: BTreeSet<(String, String, Verdict)> = report
        .revisions
        .iter()
        .flat_map(|r| {
            r.isolation_failures
                .iter()
                .map(|f| (r.revision.clone(), f.table.clone(), f.verdict))
        })
        .collect();
    let expected: BTreeSet<(String, String, Verdict)> = [
        ("7c010000000b", "topics", Verdict::FailOpen),
        ("7c010000000c", "topics", Verdict::FailOpen),
        ("7c010000000d", "topics", Verdict::FailOpen),
        ("7c010000000d", "qr_codes", Verdict::FailOpen),
        ("7c010000000d", "qr_codes", Verdict::Leak),
    ]
    .into_iter()
    .map(|(r, t, v)| (r.to_string(), t.to_string(), v))
    .collect();
    assert_eq!(isolation, expected);
    // Policies that return no rows, or an error, without a tenant are fail-closed: said
    // once, not a failure.
    assert_eq!(
        set(report.fail_closed.iter().map(String::as_str)),
        set([
            "assessments",
            "leads",
            "google_analytics_integrations",
            "answers",
            "responses",
            "crm_integrations"
        ])
    );
    let head = report.revisions.last().unwrap();
    assert_eq!(
        set(head.isolation_checked.iter().map(String::as_str)),
        set([
            "answers",
            "assessments",
            "crm_integrations",
            "google_analytics_integrations",
            "leads",
            "qr_codes",
            "responses",
            "topics"
        ])
    );

    // Findings: each redundant index once, naming the index that covers it, and the
    // JSONB -> JSON rewrite both ways.
    let redundant: BTreeSet<(String, String)> = report
        .findings
        .iter()
        .filter(|f| f.rule == Rule::RedundantIndex)
        .map(|f| (f.index.clone().unwrap(), f.covered_by.clone().unwrap()))
        .collect();
    let expected: BTreeSet<(String, String)> = [
        ("ix_assessments_tenant_id", "idx_assessments_tenant_id"),
        ("idx_leads_tenant_id", "uq_leads_tenant_email"),
        ("ix_ga_integration_tenant_id", "uq_ga_integration_tenant"),
        ("idx_responses_session_id", "responses_session_id_key"),
        ("idx_error_logs_tenant_id", "idx_error_logs_tenant_created"),
        ("ix_qr_codes_tenant_id", "idx_qr_codes_tenant_id"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(redundant, expected);
    let rewrites: Vec<(&str, &str, bool)> = report
        .findings
        .iter()
        .filter(|f| f.rule == Rule::TableRewrite)
        .map(|f| {
            (
                f.revision.as_str(),
                f.table.as_deref().unwrap(),
                f.file.as_ref().unwrap().ends_with("up.sql"),
            )
        })
        .collect();
    assert_eq!(
        rewrites,
        [
            ("7c010000000c", "assessments", true),
            ("7c010000000c", "assessments", false)
        ]
    );

    // Seeding: one table whose CHECK no generated value meets is named with the reason;
    // every other table got rows (the downgrades that drop them say how many).
    let unseeded: Vec<&String> = report
        .warnings
        .iter()
        .filter(|w| w.contains("could not be seeded"))
        .collect();
    assert_eq!(unseeded.len(), 1, "{unseeded:?}");
    assert!(
        unseeded[0].starts_with("at 7c010000000a: table crm_sync_logs could not be seeded")
            && unseeded[0].contains("ck_crm_sync_logs_external_sync_id"),
        "{unseeded:?}"
    );
    let seeded: BTreeSet<String> = report
        .revisions
        .iter()
        .flat_map(|r| &r.destructive)
        .filter_map(|d| d.strip_prefix("table "))
        .filter_map(|d| d.split_once(' ').map(|x| x.0.to_string()))
        .collect();
    for table in [
        "tenants",
        "users",
        "assessments",
        "leads",
        "google_analytics_integrations",
        "questions",
        "responses",
        "answers",
        "ai_usage_logs",
        "error_logs",
        "error_logs_2024_11",
        "crm_integrations",
        "topics",
        "industries",
        "qr_codes",
        "audit_logs",
    ] {
        assert!(seeded.contains(table), "{table} not seeded: {seeded:?}");
    }

    // The other warnings: tenant tables without a policy, nothing else.
    let others: BTreeSet<&str> = report
        .warnings
        .iter()
        .filter(|w| !w.contains("could not be seeded"))
        .map(String::as_str)
        .collect();
    let expected: BTreeSet<&str> = [
        "at 7c0100000004: table users has tenant_id but no row-level security policy: every tenant sees every row",
        "at 7c0100000008: table ai_usage_logs has tenant_id but no row-level security policy: every tenant sees every row",
        "at 7c0100000009: table error_logs has tenant_id but no row-level security policy: every tenant sees every row",
        "at 7c010000000c: table audit_logs has tenant_id but no row-level security policy: every tenant sees every row",
        "at 7c010000000c: table qr_codes has tenant_id but no row-level security policy: every tenant sees every row",
    ]
    .into_iter()
    .collect();
    assert_eq!(others, expected);
}

#[test]
fn the_chain_in_text_names_every_defect_with_failures_and_verdict_last() {
    let run = xtask(&["verify", "--migrations", CHAIN]);
    let out = filter(&run.failure().stdout());
    for needle in [
        "warning[redundant-index]: revision 7c0100000006: index ix_ga_integration_tenant_id on google_analytics_integrations has the same columns, method and predicate as unique constraint uq_ga_integration_tenant",
        "error[table-rewrite]: tests/fixtures/upstream_like/7c010000000c_add_missing_tables_reports_qr_audit/up.sql:29: rewrites table assessments (its file node changed)",
        "error[constraint-validated-in-place]: tests/fixtures/upstream_like/7c0100000005_add_tenant_owner/up.sql:1: adds a FOREIGN KEY constraint to existing table tenants",
        "isolation: with app.current_tenant_id unset, assessments, leads, google_analytics_integrations, answers, responses, crm_integrations return an error or no rows (fail-closed, as they should)",
        "FAILED isolation at 7c010000000d ([ROOT]/tests/fixtures/upstream_like/7c010000000d_add_qr_code_rls): LEAK in qr_codes: tenant A sees 2 rows of other tenants",
        "FAILED isolation at 7c010000000b ([ROOT]/tests/fixtures/upstream_like/7c010000000b_add_topics_and_industries_tables): FAIL-OPEN in topics: with app.current_tenant_id absent, 4 rows are visible",
    ] {
        assert!(out.contains(needle), "`{needle}` not in:\n{out}");
    }
    let lines: Vec<&str> = out.trim_end().lines().collect();
    assert!(
        lines
            .last()
            .unwrap()
            .starts_with("verify FAILED: 13 revision(s) in"),
        "{out}"
    );
    // Everything after the first FAILED line is a failure (or its continuation) and
    // the verdict: no warning or table row below them.
    let first = lines.iter().position(|l| l.starts_with("FAILED")).unwrap();
    assert!(
        lines[first..].iter().all(|l| !l.starts_with("warning")
            && !l.starts_with("error[")
            && !l.starts_with("7c01")),
        "{out}"
    );
    assert!(!out.contains('\x1b'), "colour in a pipe:\n{out}");
    // JSON has the same findings, for CI.
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("verify.json");
    xtask(&[
        "verify",
        "--migrations",
        CHAIN,
        "--json",
        json.to_str().unwrap(),
    ])
    .failure();
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    let kinds: BTreeSet<&str> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["rule"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        set([
            "constraint-validated-in-place",
            "redundant-index",
            "table-rewrite"
        ])
        .iter()
        .map(String::as_str)
        .collect()
    );
    assert_eq!(
        report["revisions"][12]["isolation_failures"][0]["verdict"],
        "leak"
    );
}

#[test]
fn a_role_no_revision_creates_fails_naming_role_file_line_and_fix() {
    // The throwaway server's owner is not `postgres`, as on many hosted servers.
    let cluster = backend_schema::TempCluster::start().unwrap();
    let owner: String = cluster
        .client("postgres")
        .unwrap()
        .query_one("SELECT current_user::text", &[])
        .unwrap()
        .get(0);
    assert_eq!(owner, backend_schema::cluster::OWNER);
    assert_ne!(owner, "postgres");
    drop(cluster);

    let dir = tempfile::tempdir().unwrap();
    copy_dir(&root().join(CHAIN), dir.path());
    std::fs::remove_file(dir.path().join("roles.toml")).unwrap();
    let report = verify_fixture(dir.path());
    let failed = &report.revisions[3];
    assert_eq!(failed.revision, "7c0100000004");
    assert_eq!(failed.failed_step, Some(StairStep::Up));
    let error = failed.error.as_deref().unwrap();
    let file = dir
        .path()
        .join("7c0100000004_add_row_level_security/up.sql");
    for needle in [
        format!(
            "{}:13 (statement 7): role \"postgres\" does not exist",
            file.display()
        ),
        "GRANT SELECT, INSERT, UPDATE, DELETE ON assessments TO postgres".to_string(),
        "fix: no revision creates role postgres".to_string(),
        "write CURRENT_USER (or CURRENT_ROLE)".to_string(),
        format!(
            "declare it in {} (roles = [\"postgres\"])",
            dir.path().join("roles.toml").display()
        ),
    ] {
        assert!(error.contains(&needle), "`{needle}` not in:\n{error}");
    }
    // The chain cannot go further, and says what it did not check.
    assert_eq!(report.revisions.len(), 4);
    assert_eq!(report.not_checked.len(), 9, "{:?}", report.not_checked);
    assert!(report.not_checked[0].starts_with("7c0100000005 ("));
    assert!(report.not_checked[0].ends_with("the upgrade of 7c0100000004 failed before it"));
}

#[test]
fn every_graph_problem_is_reported_in_one_run_and_the_rest_is_checked() {
    let run = xtask(&["verify", "--migrations", "tests/fixtures/graph_problems"]);
    let out = filter(&run.failure().stdout());
    let dir = "[ROOT]/tests/fixtures/graph_problems";
    for needle in [
        format!("FAILED graph: {dir}/9e9e00000003_labels/migration.toml: duplicate revision ID 9e9e00000003"),
        format!("FAILED graph: {dir}/9e9e00000003_tags/migration.toml: duplicate revision ID 9e9e00000003"),
        format!("FAILED graph: {dir}/9e9e00000005_notes/migration.toml: revision 9e9e00000005 revises 9e9e000000ff, which no migration defines"),
        format!("FAILED graph: {dir}/9e9e00000006_ping/migration.toml: revision 9e9e00000006 is part of a cycle among 9e9e00000006, 9e9e00000007"),
        format!("FAILED graph: {dir}/9e9e00000007_pong/migration.toml: revision 9e9e00000007 is part of a cycle"),
        format!("not checked: 9e9e00000004 ({dir}/9e9e00000004_tag_colour): it descends from a revision with a graph problem"),
        "destructive: downgrade of 9e9e00000002 destroys table items (4 rows)".to_string(),
    ] {
        assert!(out.contains(&needle), "`{needle}` not in:\n{out}");
    }
    assert!(
        out.contains("\nverify FAILED: 2 revision(s) in [TIME], 5 failure(s)\n"),
        "{out}"
    );
}

#[test]
fn strict_turns_warnings_into_failures() {
    let fixture = "tests/fixtures/drop_column";
    let plain = xtask(&["verify", "--migrations", fixture]);
    assert!(
        plain.success().stdout().contains("verify PASSED"),
        "{}",
        plain.text()
    );
    let strict = xtask(&["verify", "--strict", "--migrations", fixture]);
    let out = strict.failure().stdout();
    assert!(
        out.contains(
            "warning (--strict: a failure): at d0d0000000a2: the downgrade re-adds column(s)"
        ),
        "{out}"
    );
    assert!(
        out.contains("warning[drop-breaks-running-code]: tests/fixtures/drop_column/d0d0000000a2_drop_nickname/up.sql:1: dropping column people.nickname"),
        "{out}"
    );
    assert!(
        out.trim_end()
            .lines()
            .last()
            .unwrap()
            .contains("0 failure(s), 2 warning(s) failing under --strict"),
        "{out}"
    );
}

/// Every fixture chain, the shipped chain, one written to change relations from
/// elsewhere (renamed types, functions, sequences and referenced tables, drops that
/// leave no catalog row behind, a grant, a renamed schema, comments on indexes, keys,
/// triggers, policies and views added, changed and removed) and one whose steps each
/// change only a kind read whole (a function added, changed, commented or joining an
/// extension, comments reworded, an enum value renamed, a sequence created, altered or granted, an
/// extension created or moved, drops), one whose table holds another table's rows
/// (its values change shape when that table's columns do), and one that changes
/// objects initdb made (a collation, an `information_schema` domain and view column
/// that user objects use, a pinned function moved into `public`, renamed, its comment
/// reworded and removed, moved back as a function leaves an extension, and a pinned
/// function in `pg_catalog`, one moved in and a pinned type renamed under a default, a
/// view and a column: the mark and `written_since` skip pinned catalog rows): after
/// every step the snapshot
/// kept from what the step touched equals a full read of the catalogs.
#[test]
fn snapshots_kept_from_what_each_step_touched_equal_full_reads_on_every_chain() {
    let options = VerifyOptions {
        compare_full_snapshots: true,
        ..VerifyOptions::default()
    };
    let mut chains: Vec<std::path::PathBuf> = std::fs::read_dir(root().join("tests/fixtures"))
        .unwrap()
        .map(|e| e.unwrap().path())
        // Not a migration chain: an Alembic project for import-alembic.
        .filter(|p| !p.ends_with("alembic_project"))
        .collect();
    // The chain written for this first: it fails fastest when something is missed.
    chains.sort_by_key(|p| {
        (
            !p.ends_with("touched_elsewhere")
                && !p.ends_with("touched_rows")
                && !p.ends_with("touched_whole_kinds")
                && !p.ends_with("touched_composite_rows")
                && !p.ends_with("touched_builtins"),
            p.clone(),
        )
    });
    chains.push(root().join("migrations"));
    let mut revisions = 0;
    for chain in &chains {
        let report = verify_dir(chain, &options, &mut |_| {}).unwrap();
        let differ: Vec<&String> = report
            .failures
            .iter()
            .filter(|f| f.contains("from a full read"))
            .collect();
        assert!(differ.is_empty(), "{}: {differ:#?}", chain.display());
        revisions += report.revisions.len();
    }
    let touched = verify_dir(
        &root().join("tests/fixtures/touched_elsewhere"),
        &options,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(touched.revisions.len(), 6, "{touched:#?}");
    assert!(
        touched
            .revisions
            .iter()
            .all(|r| r.error.is_none() && r.schema_roundtrip.is_none()),
        "{touched:#?}"
    );
    let whole = verify_dir(
        &root().join("tests/fixtures/touched_whole_kinds"),
        &options,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(whole.revisions.len(), 12, "{whole:#?}");
    assert!(whole.failures.is_empty(), "{:#?}", whole.failures);
    let builtins = verify_dir(
        &root().join("tests/fixtures/touched_builtins"),
        &options,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(builtins.revisions.len(), 16, "{builtins:#?}");
    assert!(builtins.failures.is_empty(), "{:#?}", builtins.failures);
    // Rows changed where no catalog row was written (an UPDATE, an enum label renamed)
    // are still seen by the data check that reads only what each step touched.
    let rows = verify_dir(
        &root().join("tests/fixtures/touched_rows"),
        &options,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(rows.revisions.len(), 5, "{rows:#?}");
    for revision in ["70a000000002", "70a000000003"] {
        let rev = rows
            .revisions
            .iter()
            .find(|r| r.revision == revision)
            .unwrap();
        assert!(
            rev.data_changed.iter().any(|c| c.contains("table notes")),
            "{revision}: {rev:#?}"
        );
    }
    assert!(revisions > 60, "only {revisions} revisions checked");
}

/// A down migration that leaves an operator class, an operator or a text search
/// configuration where the up moved it: only the indexes and checks that name them read
/// differently, and their table was never written, yet verify must see each one.
#[test]
fn a_down_that_leaves_an_extension_an_operator_or_a_search_configuration_moved_fails() {
    let fixture = root().join("tests/fixtures/touched_through_operators");
    let down = "5c0f00000002_moves/down.sql";
    let full = std::fs::read_to_string(fixture.join(down)).unwrap();
    for (left, reads) in [
        ("ALTER EXTENSION", "extensions.gin_trgm_ops"),
        ("ALTER TEXT SEARCH", "'lead_words'::regconfig"),
        ("ALTER OPERATOR", "OPERATOR(extensions.===)"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&fixture, dir.path());
        let kept: String = full
            .lines()
            .filter(|l| !l.starts_with(left))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(dir.path().join(down), kept).unwrap();
        let report = verify_dir(dir.path(), &VerifyOptions::default(), &mut |_| {}).unwrap();
        let moves = &report.revisions[1];
        let roundtrip = moves.schema_roundtrip.as_deref().unwrap_or_default();
        assert!(roundtrip.contains(reads), "{left}: {report:#?}");
    }
}

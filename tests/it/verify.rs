//! `cargo xtask verify`: the canonical chain passes with a reviewed schema snapshot per
//! revision, and every defect class of the spec is caught with its revision and file.

use std::fmt::Write as _;

use backend_schema::graph::RevisionGraph;

use crate::support::{chain_len, filter, filtered_snapshot, root, xtask};

/// The schema at every revision, plus its lock profile and destructive downgrades,
/// is a reviewed snapshot: a schema change shows up in review as a diff.
#[test]
fn the_chain_verifies_with_a_schema_snapshot_per_revision() {
    let dir = root().join("migrations");
    let graph = RevisionGraph::load(&dir).unwrap();
    let report = backend_schema::verify::verify(&graph, &mut |_| {}).unwrap();
    assert!(report.passed(), "verify failed: {report:#?}");
    assert_eq!(report.revisions.len(), chain_len());
    for rev in &report.revisions {
        let mut text = format!("{} {}\n", rev.revision, rev.message);
        for lock in &rev.locks_up {
            let _ = writeln!(text, "lock up: {lock}");
        }
        for lock in &rev.locks_down {
            let _ = writeln!(text, "lock down: {lock}");
        }
        for lost in &rev.destructive {
            let _ = writeln!(text, "downgrade destroys: {lost}");
        }
        let _ = write!(text, "\n{}", rev.schema);
        filtered_snapshot!(format!("schema@{}", rev.revision), text);
    }
    // The spec's known gaps are reported, not failed.
    for table in [
        "sms_campaigns",
        "sms_messages",
        "ab_tests",
        "ab_test_variants",
    ] {
        assert!(
            report.warnings.iter().any(|w| w.contains(&format!(
                "table {table} has tenant_id but no row-level security policy"
            ))),
            "{:#?}",
            report.warnings
        );
    }
    let isolated = &report.revisions.last().unwrap().isolation_checked;
    assert_eq!(isolated, &["assessments", "leads"]);
    let auth = report
        .revisions
        .iter()
        .find(|r| r.revision == "f7e1c2d9b3a4")
        .unwrap();
    assert!(
        auth.destructive
            .iter()
            .any(|d| d.contains("users.failed_login_attempts")),
        "{auth:#?}"
    );
    assert!(
        auth.locks_up
            .contains(&"AccessExclusiveLock on users".to_string()),
        "{auth:#?}"
    );
}

#[test]
fn verify_command_passes_and_writes_a_json_report() {
    let out = tempfile::tempdir().unwrap();
    let json = out.path().join("verify.json");
    let run = xtask(&["verify", "--json", json.to_str().unwrap()]);
    let stdout = run.success().stdout();
    assert!(
        stdout.contains(&format!("verify PASSED: {} revision(s)", chain_len())),
        "{}",
        run.text()
    );
    assert!(
        stdout.contains("lock: f7e1c2d9b3a4 up: AccessExclusiveLock on users"),
        "{stdout}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    assert_eq!(report["revisions"].as_array().unwrap().len(), chain_len());
}

/// Runs verify on a fixture and expects failure with every `needle` in the output.
#[track_caller]
fn check_fails(fixture: &str, needles: &[&str]) {
    let dir = format!("tests/fixtures/{fixture}");
    let run = xtask(&["verify", "--migrations", &dir]);
    run.failure();
    let text = filter(&run.text());
    for needle in needles {
        assert!(text.contains(needle), "`{needle}` not in:\n{text}");
    }
}

#[test]
fn a_reference_to_a_missing_table_is_caught() {
    check_fails(
        "missing_table",
        &[
            "FAILED at aaaa00000002 ([ROOT]/tests/fixtures/missing_table/aaaa00000002_rls_on_qr_codes), upgrade: migration aaaa00000002 failed at",
            "aaaa00000002_rls_on_qr_codes/up.sql:3 (statement 2)",
            "relation \"qr_codes\" does not exist",
            // The one-go run names its direction, and no teardown heading follows a
            // run that never got to the teardown.
            "FAILED base -> head in one go: the upgrade failed: migration aaaa00000002 failed at",
        ],
    );
    let run = xtask(&["verify", "--migrations", "tests/fixtures/missing_table"]);
    assert!(
        !run.text().contains("left objects behind"),
        "{}",
        run.text()
    );
}

#[test]
fn an_enum_created_twice_is_caught() {
    check_fails(
        "enum_twice",
        &[
            "bbbb00000002_sms_status/up.sql:3 (statement 2)",
            "type \"smsstatus\" already exists",
        ],
    );
}

#[test]
fn a_downgrade_that_forgets_an_index_is_caught() {
    check_fails(
        "down_forgets_index",
        &[
            "downgrade of cccc00000002",
            "cccc00000002_index_tenant_names/down.sql",
            "~ table tenants",
            "+ index idx_tenants_name btree (name)",
        ],
    );
}

#[test]
fn a_downgrade_that_forgets_a_type_is_caught() {
    check_fails(
        "down_forgets_type",
        &[
            "downgrade of dddd00000002",
            "dddd00000002_plan_type/down.sql",
            "+ type plantype (unexpected)",
        ],
    );
}

#[test]
fn a_downgrade_that_does_not_restore_a_default_is_caught() {
    check_fails(
        "down_default_lost",
        &[
            "downgrade of eeee00000002",
            "~ table items",
            "- column quantity integer not null default 0",
            "+ column quantity integer not null",
        ],
    );
}

#[test]
fn duplicate_revision_ids_are_caught_with_both_files() {
    check_fails(
        "duplicate_ids",
        &["duplicate revision ID ffff00000002", "ffff00000002_items/migration.toml and [ROOT]/tests/fixtures/duplicate_ids/ffff00000002_items_again/migration.toml"],
    );
}

#[test]
fn two_heads_are_caught() {
    check_fails(
        "two_heads",
        &[
            "the graph has 2 heads",
            "abab00000002_items",
            "abab00000003_tenant_slug",
            "cargo xtask migrate merge abab00000002 abab00000003",
        ],
    );
}

#[test]
fn a_missing_parent_is_caught() {
    check_fails("missing_parent", &["acac00000003_items/migration.toml: revision acac00000003 revises acac00000002, which no migration defines"]);
}

#[test]
fn a_policy_that_leaks_between_tenants_is_caught() {
    check_fails(
        "leaky_policy",
        &[
            "FAILED isolation at adad00000002",
            "adad00000002_items_rls",
            "items: tenant A sees 2 rows of other tenants",
        ],
    );
}

#[test]
fn merged_branches_converge_in_every_order() {
    // The orders tried show in the progress line, which only a terminal gets.
    let (status, output) =
        on_terminal(&["verify", "--migrations", "tests/fixtures/merge_converges"]);
    assert!(status.success(), "{output}");
    assert!(output.contains("merge order 2/2"), "{output:?}");
}

/// `cargo xtask ARGS` on a terminal (script(1) gives it one), from the repository root:
/// its exit status and everything it wrote.
fn on_terminal(args: &[&str]) -> (std::process::ExitStatus, String) {
    let output = std::process::Command::new("script")
        .current_dir(root())
        .args([
            "-qec",
            &format!("{} {}", env!("CARGO_BIN_EXE_xtask"), args.join(" ")),
            "/dev/null",
        ])
        .env("TERM", "xterm")
        // Its own cache, as every xtask a test runs: a warm one would hide the steps.
        .env(
            "BACKEND_SCHEMA_VERIFY_CACHE_DIR",
            crate::support::fresh_verify_cache(),
        )
        .env_remove("DATABASE_URL")
        .output()
        .expect("script(1) from util-linux");
    (
        output.status,
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[test]
fn progress_counts_revisions_on_a_terminal_and_stays_out_of_a_pipe() {
    let args = ["verify", "--migrations", "tests/fixtures/upstream_like"];
    let (_, output) = on_terminal(&args);
    let total = std::fs::read_dir(root().join(args[2]))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().is_dir())
        .count();
    assert!(
        output.contains(&format!("verify: 0/{total} revisions verified (")),
        "0/{total} missing from {output:?}"
    );
    // Once a revision is done, with the share done and an estimate of the time left.
    let estimate =
        regex::Regex::new(r"verify: (\d+)/(\d+) revisions verified, (\d+)%, about \d+s left \(")
            .unwrap();
    let seen: Vec<usize> = estimate
        .captures_iter(&output)
        .map(|c| c[1].parse().unwrap())
        .collect();
    for done in [1, total / 2, total - 1] {
        assert!(
            seen.contains(&done),
            "{done}/{total} missing from {output:?}"
        );
    }
    // The line is rewritten in place and cleared before the report.
    assert!(output.contains("\r\x1b[2Kverify: 1/"), "{output:?}");
    let run = xtask(&args);
    assert!(
        !run.stderr().contains("revisions verified"),
        "{}",
        run.text()
    );
    assert!(!run.stderr().contains('\r'), "{}", run.text());
}

#[test]
fn a_downgrade_that_can_only_append_a_column_is_a_warning_not_a_failure() {
    let run = xtask(&["verify", "--migrations", "tests/fixtures/drop_column"]);
    let report = run.success().stdout();
    assert!(
        report
            .contains("at d0d0000000a2: the downgrade re-adds column(s) at the end of their table"),
        "{report}"
    );
    assert!(report.contains("~ table people"), "{report}");
    assert!(report.contains("verify PASSED"), "{report}");
}

#[test]
fn stamp_detect_refuses_a_schema_that_matches_no_revision() {
    let db = crate::support::TestDb::new();
    db.xtask(&["migrate", "upgrade", "d724"]).success();
    db.client()
        .batch_execute("DELETE FROM alembic_version; ALTER TABLE users ADD COLUMN nickname TEXT")
        .unwrap();
    let run = db.xtask(&["migrate", "stamp", "--detect"]);
    let err = run.failure().stderr();
    assert!(
        err.contains("matches no revision; refusing to stamp. Closest is d724f366bbf2"),
        "{err}"
    );
    assert!(err.contains("+ column nickname text"), "{err}");
    assert!(db.heads().is_empty());
}

/// Every committed snapshot belongs to a test or to a revision that exists: renamed
/// tests and deleted revisions must not leave stale snapshots behind.
#[test]
fn no_snapshot_is_unreferenced() {
    let sources: String = std::fs::read_dir(root().join("tests/it"))
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.unwrap().path()).ok())
        .collect();
    let graph = RevisionGraph::load(&root().join("migrations")).unwrap();
    for entry in std::fs::read_dir(root().join("tests/it/snapshots")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".snap") else {
            panic!("stray file tests/it/snapshots/{name} (pending .snap.new? run `cargo insta review`)");
        };
        let short = stem.rsplit("__").next().unwrap();
        let referenced = match short.strip_prefix("schema@") {
            Some(revision) => graph.get(revision).is_some(),
            None => sources.contains(&format!("\"{short}\"")),
        };
        assert!(
            referenced,
            "tests/it/snapshots/{name} is not referenced by any test; delete it"
        );
    }
}

#[test]
fn the_generated_chain_bench_measures_verifies() {
    let dir = tempfile::tempdir().unwrap();
    backend_schema::synthetic::write_chain(dir.path(), 9).unwrap();
    let run = crate::support::xtask(&["verify", "--migrations", dir.path().to_str().unwrap()]);
    assert!(run.output.status.success(), "{}", run.text());
}

/// The seeder asks PostgreSQL's live-row counts which tables can be empty, then reads
/// those: a table emptied by DELETE or TRUNCATE is filled again, and a database copied
/// with `CREATE DATABASE ... TEMPLATE` (its counts start at zero, its rows do not) gets
/// no second set of rows.
#[test]
fn seeding_refills_tables_emptied_by_delete_or_truncate_and_no_table_that_has_rows() {
    use backend_schema::cluster::TempCluster;
    use backend_schema::verify::seed::seed_empty_tables;
    let cluster = TempCluster::start().unwrap();
    cluster.create_database("seeded", None).unwrap();
    let mut client = cluster.client("seeded").unwrap();
    client
        .batch_execute(
            "CREATE TABLE a (id bigint PRIMARY KEY, name text NOT NULL);
             CREATE TABLE b (id bigint PRIMARY KEY, a_id bigint REFERENCES a (id))",
        )
        .unwrap();
    let rows = |client: &mut postgres::Client, table: &str| -> i64 {
        client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .unwrap()
            .get(0)
    };
    seed_empty_tables(&mut client).unwrap();
    let (a, b) = (rows(&mut client, "a"), rows(&mut client, "b"));
    assert!(a > 0 && b > 0, "{a} {b}");

    client.batch_execute("DELETE FROM b").unwrap();
    seed_empty_tables(&mut client).unwrap();
    assert_eq!((rows(&mut client, "a"), rows(&mut client, "b")), (a, b));
    client.batch_execute("TRUNCATE a CASCADE").unwrap();
    seed_empty_tables(&mut client).unwrap();
    assert_eq!((rows(&mut client, "a"), rows(&mut client, "b")), (a, b));

    drop(client);
    cluster.create_database("copied", Some("seeded")).unwrap();
    let mut copy = cluster.client("copied").unwrap();
    seed_empty_tables(&mut copy).unwrap();
    assert_eq!((rows(&mut copy, "a"), rows(&mut copy, "b")), (a, b));
}

//! The stairway databases a run with the cache keeps: a re-run after the newest
//! revision is edited, or a revision is added, starts from them instead of replaying the
//! revisions before, with the report a full run gives; a database whose copy would
//! differ from what a full run meets there (a role the newest revision creates, the
//! database's own settings) is not kept, and a kept cluster others may write is not used.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::fresh_verify_cache;
use crate::verify_cache::{append, from_cache, revision_dir, verdicts, verify};

/// A generated chain of `n` revisions, in the stairway's order.
fn chain(n: usize) -> (tempfile::TempDir, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    backend_schema::synthetic::write_chain(dir.path(), n).unwrap();
    let graph = backend_schema::RevisionGraph::load(dir.path()).unwrap();
    let order = graph
        .migrations()
        .iter()
        .map(|m| m.revision.clone())
        .collect();
    (dir, order)
}

/// Where the run that wrote `report` keeps its databases.
fn kept_dir(report: &Value) -> PathBuf {
    PathBuf::from(report["cache_file"].as_str().unwrap()).with_extension("kept")
}

/// `migrations` resumed (with `cache`) and verified in full report the same.
fn equals_full_run(migrations: &Path, resumed: &Value) {
    let (_, full) = verify(migrations, &fresh_verify_cache(), &["--no-cache"]);
    assert_eq!(verdicts(resumed), verdicts(&full));
}

/// A run that keeps databases reports what a `--no-cache` run does; so does the re-run
/// after an edit of the newest revision `newest`, which starts from the database kept
/// after `before`.
fn keeping_and_resuming_report_what_full_runs_do(migrations: &Path, newest: &str, before: &str) {
    let cache = fresh_verify_cache();
    let (_, first) = verify(migrations, &cache, &[]);
    equals_full_run(migrations, &first);
    append(
        &revision_dir(migrations, newest).join("up.sql"),
        "-- reworded\n",
    );
    let (run, resumed) = verify(migrations, &cache, &[]);
    assert_eq!(resumed["resumed_after"], before, "{}", run.text());
    equals_full_run(migrations, &resumed);
}

/// Edits the newest revision `newest` and runs again: every revision before it comes
/// from the cache, none from a kept database (they are replayed), and the report is a
/// full run's. The re-run's output, for more checks.
fn rerun_replays(migrations: &Path, cache: &Path, newest: &str) -> crate::support::Run {
    append(
        &revision_dir(migrations, newest).join("up.sql"),
        "-- reworded\n",
    );
    let (run, resumed) = verify(migrations, cache, &[]);
    let before = revisions_before(&resumed, newest);
    assert_eq!(from_cache(&resumed), before, "{}", run.text());
    assert!(resumed["resumed_after"].is_null(), "{}", run.text());
    equals_full_run(migrations, &resumed);
    run
}

/// The revisions of `report` before `revision`.
fn revisions_before(report: &Value, revision: &str) -> Vec<String> {
    crate::verify_cache::revisions(report)
        .into_iter()
        .take_while(|r| r != revision)
        .collect()
}

#[test]
fn a_revision_added_after_the_head_starts_from_the_database_kept_after_it() {
    let (dir, order) = chain(8);
    let newest = revision_dir(dir.path(), &order[7]);
    let aside = tempfile::tempdir().unwrap();
    let parked = aside.path().join(newest.file_name().unwrap());
    std::fs::rename(&newest, &parked).unwrap();
    let cache = fresh_verify_cache();
    verify(dir.path(), &cache, &[]).0.success();

    std::fs::rename(&parked, &newest).unwrap();
    let (run, resumed) = verify(dir.path(), &cache, &[]);
    run.success();
    assert_eq!(from_cache(&resumed), order[..7]);
    assert_eq!(resumed["resumed_after"], order[6]);
    assert!(
        run.stdout().contains(&format!(
            "cache: the stairway started from its database kept after {}",
            order[6]
        )),
        "{}",
        run.text()
    );
    equals_full_run(dir.path(), &resumed);
}

/// A role is the cluster's, not the database's: the database before a newest revision
/// that creates one would meet the role already there. Without the check the re-run
/// fails with `role "kept_probe" already exists`.
#[test]
fn the_database_before_a_newest_revision_that_creates_a_role_is_not_kept() {
    let (dir, order) = chain(5);
    let head = revision_dir(dir.path(), &order[4]);
    append(&head.join("up.sql"), "CREATE ROLE kept_probe NOLOGIN;\n");
    append(&head.join("down.sql"), "DROP ROLE kept_probe;\n");
    // (The generated chain's fifth revision is transactional: CREATE ROLE is allowed.)
    let cache = fresh_verify_cache();
    verify(dir.path(), &cache, &[]).0.success();

    rerun_replays(dir.path(), &cache, &order[4]).success();
}

/// `CREATE DATABASE ... TEMPLATE` copies what is in a database, not its settings.
#[test]
fn a_stairway_database_with_settings_of_its_own_is_not_copied_and_says_why() {
    let (dir, order) = chain(6);
    let setter = revision_dir(dir.path(), &order[2]);
    append(
        &setter.join("up.sql"),
        "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET work_mem = %L', current_database(), '8MB'); END $$;\n",
    );
    append(
        &setter.join("down.sql"),
        "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I RESET work_mem', current_database()); END $$;\n",
    );
    let cache = fresh_verify_cache();
    let (first, _) = verify(dir.path(), &cache, &[]);
    assert!(
        first.stdout().contains(&format!(
            "cache: the stairway database before {} is not kept for the next run (a migration set the database's own settings",
            order[5]
        )),
        "{}",
        first.text()
    );

    rerun_replays(dir.path(), &cache, &order[5]);
}

/// Whoever can write the kept cluster could make a re-run pass what a full run fails.
#[test]
fn kept_databases_other_users_may_write_are_not_used() {
    use std::os::unix::fs::PermissionsExt as _;
    let (dir, order) = chain(6);
    let cache = fresh_verify_cache();
    let (_, report) = verify(dir.path(), &cache, &[]);
    let kept = kept_dir(&report);
    assert!(kept.join("data/PG_VERSION").is_file(), "{}", kept.display());

    // Each time the run keeps its own in its place, which the next one trusts again.
    let untrusted = |spoil: &dyn Fn(), why: &str| {
        spoil();
        let run = rerun_replays(dir.path(), &cache, &order[5]);
        run.success();
        let note = format!("cache: the kept databases in {} {why}", kept.display());
        assert!(run.stdout().contains(&note), "{note:?} in {}", run.text());
    };
    untrusted(
        &|| std::fs::set_permissions(&kept, std::fs::Permissions::from_mode(0o777)).unwrap(),
        "is not a directory of this user closed to others (uid 0, mode 777)",
    );
    // Another account's (`nobody`: the tests run as root).
    untrusted(
        &|| std::os::unix::fs::chown(&kept, Some(65534), None).unwrap(),
        "is not a directory of this user closed to others (uid 65534",
    );
    untrusted(
        &|| {
            std::fs::set_permissions(kept.join("data"), std::fs::Permissions::from_mode(0o755))
                .unwrap()
        },
        "hold a data dir that is not the server account's private directory",
    );
    append(
        &revision_dir(dir.path(), &order[5]).join("up.sql"),
        "-- again\n",
    );
    let (run, resumed) = verify(dir.path(), &cache, &[]);
    run.success();
    assert_eq!(resumed["resumed_after"], order[4], "{}", run.text());
}

/// ALTER SYSTEM writes the data dir: a cluster started from the kept copy would load
/// what a full run's server never reloads.
#[test]
fn a_chain_that_runs_alter_system_keeps_nothing_and_says_why() {
    let (dir, order) = chain(6);
    // The generated chain's sixth revision is non-transactional, as ALTER SYSTEM must be.
    let head = revision_dir(dir.path(), &order[5]);
    append(&head.join("up.sql"), "ALTER SYSTEM SET work_mem = '8MB';\n");
    append(&head.join("down.sql"), "ALTER SYSTEM RESET work_mem;\n");
    let cache = fresh_verify_cache();
    let (first, report) = verify(dir.path(), &cache, &[]);
    assert!(
        first.stdout().contains("a migration ran ALTER SYSTEM"),
        "{}",
        first.text()
    );
    assert!(!kept_dir(&report).exists(), "{}", first.text());

    rerun_replays(dir.path(), &cache, &order[5]);
}

/// What a migration leaves on its session (here a temporary table the revision before
/// the newest leaves in its downgrade, which the newest creates again): every run
/// climbs the newest revision on a new session, so the run that keeps databases, a
/// `--no-cache` run and a re-run that starts from the kept database report the same.
/// (Before, the `--no-cache` run failed with `already exists` and the others passed.)
#[test]
fn state_a_migration_leaves_on_its_session_does_not_make_a_resumed_run_differ() {
    let (dir, order) = chain(6);
    append(
        &revision_dir(dir.path(), &order[4]).join("down.sql"),
        "CREATE TEMP TABLE IF NOT EXISTS session_marker (x int);\n",
    );
    let newest = revision_dir(dir.path(), &order[5]);
    append(
        &newest.join("up.sql"),
        "CREATE TEMP TABLE session_marker (x int);\n",
    );
    append(
        &newest.join("down.sql"),
        "DROP TABLE IF EXISTS session_marker;\n",
    );
    keeping_and_resuming_report_what_full_runs_do(dir.path(), &order[5], &order[4]);
}

/// The isolation check sets `app.current_tenant_id` for a transaction, after which the
/// session reads it as '' where a new session reads NULL: a default that reads it must
/// meet the same in a run that keeps databases, a `--no-cache` run and a resumed one.
#[test]
fn the_isolation_checks_tenant_setting_does_not_make_a_resumed_run_differ() {
    let migrations = crate::support::copy_migrations();
    let graph = backend_schema::RevisionGraph::load(migrations.path()).unwrap();
    let [.., before, newest] = graph.migrations() else {
        panic!("the shipped chain has two revisions at least");
    };
    let dir = revision_dir(migrations.path(), &newest.revision);
    append(
        &dir.join("up.sql"),
        "CREATE TABLE probe_notes (id int, tenant_id uuid DEFAULT current_setting('app.current_tenant_id', true)::uuid);\nINSERT INTO probe_notes (id) VALUES (1);\n",
    );
    append(&dir.join("down.sql"), "DROP TABLE IF EXISTS probe_notes;\n");
    keeping_and_resuming_report_what_full_runs_do(
        migrations.path(),
        &newest.revision,
        &before.revision,
    );
}

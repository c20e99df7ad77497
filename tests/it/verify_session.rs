//! What a migration does to the sessions verify keeps along the stairway (the stairway
//! session's prepared statements, the second session that watches the locks of
//! migrations outside a transaction): it may end other sessions, give the database an
//! idle timeout or deallocate every prepared statement, and verify still reports what
//! the chain does, not an error of its own. Every such session plans prepared
//! statements once, and the migrations meet that setting.

use std::path::Path;

use backend_schema::source::{write_migration_as, NewMigration};
use serde_json::Value;

use crate::support::fresh_verify_cache;
use crate::verify_cache::verify;

/// One revision: whether it runs in a transaction, its up and its down.
type Revision<'a> = (bool, &'a str, &'a str);

/// A seeded table and an index built concurrently on it, as chains that need the lock
/// watcher start.
const WATCHED: [Revision; 2] = [
    (
        true,
        "CREATE TABLE things (id bigint PRIMARY KEY, tenant_id uuid NOT NULL, name text NOT NULL DEFAULT '');\n",
        "DROP TABLE things;\n",
    ),
    (
        false,
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS things_name ON things (name);\n",
        "DROP INDEX CONCURRENTLY IF EXISTS things_name;\n",
    ),
];

/// Another index built outside a transaction, after the revisions under test: the
/// watcher must see its lock.
const WATCHED_AFTER: Revision = (
    false,
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS things_tenant ON things (tenant_id);\n",
    "DROP INDEX CONCURRENTLY IF EXISTS things_tenant;\n",
);

/// The newest revision climbs on new sessions: the ones under test come before it.
const NEWEST: Revision = (
    true,
    "CREATE TABLE tail (id integer);\n",
    "DROP TABLE tail;\n",
);

/// Writes `revisions` as a linear chain in `dir`; their IDs, in order.
fn write_chain(dir: &Path, revisions: &[Revision]) -> Vec<String> {
    let mut parents: Vec<String> = Vec::new();
    let mut ids = Vec::new();
    for (i, (transactional, up, down)) in revisions.iter().enumerate() {
        let revision = format!("{:012x}", 0xab_0000_0000u64 + i as u64);
        write_migration_as(
            dir,
            revision.clone(),
            &NewMigration {
                parents: &parents,
                message: &format!("step {i}"),
                transactional: *transactional,
                sql: Some((up, down)),
            },
        )
        .unwrap();
        parents = vec![revision.clone()];
        ids.push(revision);
    }
    ids
}

/// Verifies `revisions` (no cache): the run must pass, and the revision `watched`
/// (built outside a transaction after the ones under test) must have its lock seen.
fn passes_with_the_lock_seen(revisions: &[Revision], watched: usize) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let ids = write_chain(dir.path(), revisions);
    let (run, report) = verify(dir.path(), &fresh_verify_cache(), &["--no-cache"]);
    assert_eq!(run.code(), 0, "{}", run.text());
    let revision = report["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["revision"] == ids[watched].as_str())
        .unwrap();
    assert_eq!(
        revision["locks_up"],
        serde_json::json!(["ShareUpdateExclusiveLock on things"]),
        "{}",
        run.text()
    );
    report
}

#[test]
fn a_migration_that_ends_the_other_sessions_does_not_break_the_lock_watcher() {
    // As a script that frees a database for maintenance does: the kept lock watcher is
    // one of the sessions it ends (the old per-run watcher was opened after it).
    let end_others = (
        true,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity\n WHERE pid <> pg_backend_pid() AND datname = current_database() AND backend_type = 'client backend';\nALTER TABLE things ADD COLUMN note text;\n",
        "ALTER TABLE things DROP COLUMN note;\n",
    );
    passes_with_the_lock_seen(
        &[WATCHED[0], WATCHED[1], end_others, WATCHED_AFTER, NEWEST],
        3,
    );
}

#[test]
fn a_database_idle_session_timeout_set_by_a_migration_does_not_break_the_lock_watcher() {
    // The watcher opened after the setting has it, and sits idle while a slower
    // transactional migration runs.
    let timeout = (
        true,
        "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET idle_session_timeout = %L', current_database(), '400ms'); END $$;\n",
        "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I RESET idle_session_timeout', current_database()); END $$;\n",
    );
    let slow = (
        true,
        "SELECT pg_sleep(0.8);\nALTER TABLE things ADD COLUMN note text;\n",
        "ALTER TABLE things DROP COLUMN note;\n",
    );
    passes_with_the_lock_seen(
        &[WATCHED[0], timeout, WATCHED[1], slow, WATCHED_AFTER, NEWEST],
        4,
    );
}

#[test]
fn a_migration_that_deallocates_every_prepared_statement_verifies_as_it_runs() {
    // What a connection pooler's reset or a script cleaning its session runs: verify's
    // statements prepared on the stairway session are gone with the migration's own
    // (it failed with "prepared statement \"s47\" does not exist", before this round too).
    let deallocate = (
        true,
        "DEALLOCATE ALL;\nALTER TABLE things ADD COLUMN note text;\n",
        "DEALLOCATE ALL;\nALTER TABLE things DROP COLUMN note;\n",
    );
    // Outside a transaction too, where the trace reads between statements on their own.
    // (`DISCARD ALL` would also release the migration lock, which the runner refuses.)
    let outside = (
        false,
        "-- xtask:allow non-transactional-mixes-ddl no DDL here\nDEALLOCATE ALL;\n",
        "-- xtask:allow non-transactional-mixes-ddl no DDL here\nDEALLOCATE ALL;\n",
    );
    passes_with_the_lock_seen(
        &[
            WATCHED[0],
            WATCHED[1],
            deallocate,
            outside,
            WATCHED_AFTER,
            NEWEST,
        ],
        4,
    );
}

/// A revision that fails unless its session plans prepared statements once.
const ASKS_GENERIC_PLANS: Revision = (
    true,
    "DO $$ BEGIN IF current_setting('plan_cache_mode') <> 'force_generic_plan' THEN RAISE EXCEPTION 'plan_cache_mode is %', current_setting('plan_cache_mode'); END IF; END $$;\n",
    "DO $$ BEGIN IF current_setting('plan_cache_mode') <> 'force_generic_plan' THEN RAISE EXCEPTION 'plan_cache_mode is %', current_setting('plan_cache_mode'); END IF; END $$;\n",
);

#[test]
fn every_session_verify_migrates_on_plans_prepared_statements_once() {
    // As the README says: on the stairway's first session, after the lock watcher was
    // opened, on the newest revision's new session, and in base -> head in one go (it
    // failed there with "plan_cache_mode is auto" when only the stairway had it).
    passes_with_the_lock_seen(
        &[
            ASKS_GENERIC_PLANS,
            WATCHED[0],
            WATCHED[1],
            ASKS_GENERIC_PLANS,
            WATCHED_AFTER,
            ASKS_GENERIC_PLANS,
        ],
        4,
    );
}

#[test]
fn a_migration_that_sets_a_search_path_for_its_own_transaction_verifies() {
    // `SET LOCAL search_path = audit, public` still finds public's version tables: the
    // check after a migration that names search_path must not refuse it (it did, asking
    // only whether public came first, until the check asked where the tables resolve).
    let dir = tempfile::tempdir().unwrap();
    write_chain(
        dir.path(),
        &[
            (
                true,
                "CREATE SCHEMA audit;\nSET LOCAL search_path = audit, public;\nCREATE TABLE notes (id integer);\n",
                "DROP TABLE audit.notes;\nDROP SCHEMA audit;\n",
            ),
            NEWEST,
        ],
    );
    let (run, _) = verify(dir.path(), &fresh_verify_cache(), &["--no-cache"]);
    assert_eq!(run.code(), 0, "{}", run.text());
}

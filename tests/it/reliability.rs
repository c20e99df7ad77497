//! Concurrency, crashes and server loss: the database is always at a revision the
//! version table names, with nothing half-applied, and the next run completes.

use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::{xtask_command, TestDb};

/// The chain's head, read from the migrations: a new migration moves it, not the tests.
static HEAD: std::sync::LazyLock<&'static str> =
    std::sync::LazyLock::new(crate::support::chain_head);

fn spawn(db: &TestDb, args: &[&str]) -> Child {
    let url = db.url();
    let mut all = args.to_vec();
    all.extend(["--database-url", &url]);
    xtask_command(&all)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn xtask")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Polls `sql` (a boolean query) until it is true.
#[track_caller]
fn wait_for(db: &TestDb, sql: &str, within: Duration) {
    let mut client = db.client();
    let deadline = Instant::now() + within;
    while !client.query_one(sql, &[]).unwrap().get::<_, bool>(0) {
        assert!(Instant::now() < deadline, "timed out waiting for: {sql}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn completed_upgrades(db: &TestDb) -> Vec<(String, i64)> {
    db.client()
        .query(
            "SELECT revision::text, count(*) FROM alembic_version_history
              WHERE operation = 'upgrade' AND status = 'completed' GROUP BY 1 ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

fn migration_lock_is_free(db: &TestDb) -> bool {
    db.client()
        .query_one(
            "SELECT NOT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted)",
            &[],
        )
        .unwrap()
        .get(0)
}

#[test]
fn eight_migrators_at_once_apply_every_migration_exactly_once() {
    let db = TestDb::new();
    // The test holds the migration lock until all eight are connected, so they contend
    // for it on any machine: started freely, a fast chain could be applied by the first
    // before the others asked (seen in CI).
    let mut holder = db.client();
    holder
        .execute(
            "SELECT pg_advisory_lock($1)",
            &[&backend_schema::runner::lock::LOCK_KEY],
        )
        .unwrap();
    let children: Vec<Child> = (0..8)
        .map(|_| spawn(&db, &["migrate", "upgrade", "head"]))
        .collect();
    wait_for(
        &db,
        "SELECT count(*) >= 8 FROM pg_stat_activity WHERE application_name = 'cargo xtask migrate'",
        Duration::from_secs(30),
    );
    std::thread::sleep(Duration::from_millis(300));
    holder
        .execute(
            "SELECT pg_advisory_unlock($1)",
            &[&backend_schema::runner::lock::LOCK_KEY],
        )
        .unwrap();
    let outputs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    for output in &outputs {
        assert!(output.status.success(), "{}", stderr(output));
        assert!(!stderr(output).contains("deadlock"), "{}", stderr(output));
    }
    let applied = format!("applied {} migration(s)", crate::support::chain_len());
    let appliers = outputs
        .iter()
        .filter(|o| stderr(o).contains(&applied))
        .count();
    assert_eq!(appliers, 1, "exactly one process applies the chain");
    for output in outputs.iter().filter(|o| !stderr(o).contains(&applied)) {
        let err = stderr(output);
        // Either it queued behind the applier and said so, or it started after the
        // applier finished and found nothing to do without taking the lock.
        assert!(
            err.contains("waiting for the migration lock") || err.contains("already at head"),
            "{err}"
        );
    }
    assert!(
        outputs
            .iter()
            .any(|o| stderr(o).contains("waiting for the migration lock, held by pid")),
        "at least one of eight simultaneous migrators waited"
    );
    assert_eq!(db.heads(), [*HEAD]);
    let applied = completed_upgrades(&db);
    assert_eq!(applied.len(), crate::support::chain_len(), "{applied:?}");
    assert!(applied.iter().all(|(_, n)| *n == 1), "{applied:?}");
    assert!(migration_lock_is_free(&db));
}

#[test]
fn a_waiting_migrator_does_not_deadlock_a_concurrent_index_build() {
    let db = TestDb::new();
    let fixture = ["--migrations", "tests/fixtures/concurrent_index"];
    let mut args = vec!["migrate", "upgrade", "head"];
    args.extend(fixture);
    let builder = spawn(&db, &args);
    wait_for(
        &db,
        "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(1)%' OR query LIKE 'CREATE INDEX CONCURRENTLY%')",
        Duration::from_secs(30),
    );
    let waiter = spawn(&db, &args);
    let (builder, waiter) = (
        builder.wait_with_output().unwrap(),
        waiter.wait_with_output().unwrap(),
    );
    assert!(builder.status.success(), "{}", stderr(&builder));
    assert!(waiter.status.success(), "{}", stderr(&waiter));
    assert!(
        stderr(&waiter).contains("waiting for the migration lock"),
        "{}",
        stderr(&waiter)
    );
    for output in [&builder, &waiter] {
        assert!(!stderr(output).contains("deadlock"), "{}", stderr(output));
    }
    let valid: bool = db
        .client()
        .query_one(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = 'items_name_idx'::regclass",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(valid, "the concurrently built index is valid");
    assert_eq!(db.heads(), ["c1c1000000a2"]);
}

/// Starts the slow fixture migration and waits until it sleeps inside its transaction.
fn start_slow_migration(db: &TestDb) -> Child {
    let child = spawn(
        db,
        &[
            "migrate",
            "upgrade",
            "head",
            "--migrations",
            "tests/fixtures/slow_migration",
        ],
    );
    wait_for(
        db,
        "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(4)%')",
        Duration::from_secs(30),
    );
    child
}

/// After an interruption: nothing partial, and a fresh run finishes the chain.
#[track_caller]
fn the_next_run_completes(db: &TestDb) {
    at_first_revision_with_nothing_partial(db);
    let output = spawn(
        db,
        &[
            "migrate",
            "upgrade",
            "head",
            "--migrations",
            "tests/fixtures/slow_migration",
        ],
    )
    .wait_with_output()
    .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(db.heads(), ["c0c0000000a2"]);
}

/// The state the slow fixture must be in after an interrupted second migration.
#[track_caller]
fn at_first_revision_with_nothing_partial(db: &TestDb) {
    assert_eq!(db.heads(), ["c0c0000000a1"]);
    let snapshot = db.snapshot();
    assert!(
        !snapshot.objects.contains_key("table gadgets"),
        "{snapshot:?}"
    );
    let widgets = format!("{:?}", snapshot.objects["table widgets"]);
    assert!(!widgets.contains("gadget_id"), "{widgets}");
}

#[test]
fn a_sigkilled_migrator_leaves_the_previous_revision_and_frees_the_lock() {
    let db = TestDb::new();
    let mut child = start_slow_migration(&db);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let killed = Instant::now();
    // client_connection_check_interval lets the server notice well before the sleep ends.
    wait_for(
        &db,
        "SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE application_name LIKE 'cargo xtask%')",
        Duration::from_secs(10),
    );
    assert!(
        killed.elapsed() < Duration::from_secs(3),
        "the server noticed the dead migrator after {:?}",
        killed.elapsed()
    );
    assert!(migration_lock_is_free(&db));
    the_next_run_completes(&db);
}

#[test]
fn losing_the_server_mid_run_leaves_the_previous_revision() {
    let mut db = TestDb::new();
    let child = start_slow_migration(&db);
    db.cluster.stop_server();
    let output = child.wait_with_output().unwrap();
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(err.contains("c0c0000000a2"), "names the revision: {err}");
    assert!(!err.contains("panicked"), "{err}");
    db.cluster.start_server().unwrap();
    the_next_run_completes(&db);
}

#[test]
fn a_failed_non_transactional_migration_is_recorded_and_blocks_the_next_run() {
    let db = TestDb::new();
    let work = tempfile::tempdir().unwrap();
    crate::support::copy_dir(
        &crate::support::root().join("tests/fixtures/concurrent_index"),
        work.path(),
    );
    let dir = work.path().to_str().unwrap();
    // A unique index over duplicate values fails after CONCURRENTLY created it: INVALID.
    std::fs::write(
        work.path().join("c1c1000000a2_items_name_index/up.sql"),
        "UPDATE items SET name = 'same' WHERE id <= 2;\nCREATE UNIQUE INDEX CONCURRENTLY items_name_idx ON items (name);\n",
    )
    .unwrap();
    let run = db.xtask(&["migrate", "upgrade", "head", "--migrations", dir]);
    let err = run.failure().stderr();
    assert!(err.contains("c1c1000000a2"), "{err}");
    assert!(err.contains("could not create unique index"), "{err}");
    assert!(err.contains("outside a transaction"), "{err}");
    assert_eq!(db.heads(), ["c1c1000000a1"]);
    let status: String = db
        .client()
        .query_one(
            "SELECT status FROM alembic_version_history WHERE revision = 'c1c1000000a2' ORDER BY id DESC LIMIT 1",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(status, "failed");

    let again = db.xtask(&["migrate", "upgrade", "head", "--migrations", dir]);
    let err = again.failure().stderr();
    assert!(err.contains("c1c1000000a2"), "{err}");
    assert!(
        err.contains("items_name_idx"),
        "names the INVALID index: {err}"
    );
    assert!(
        err.contains("`cargo xtask migrate stamp c1c1000000a1` (undone)"),
        "says how to resolve it, naming the parent: {err}"
    );
    assert!(migration_lock_is_free(&db));

    // The way out the message gives: undo by hand, record it, fix the file, run again.
    db.client()
        .batch_execute("DROP INDEX CONCURRENTLY items_name_idx")
        .unwrap();
    std::fs::write(
        work.path().join("c1c1000000a2_items_name_index/up.sql"),
        "CREATE INDEX CONCURRENTLY items_name_idx ON items (name);\n",
    )
    .unwrap();
    db.xtask(&["migrate", "stamp", "c1c1000000a1", "--migrations", dir])
        .success();
    db.xtask(&["migrate", "upgrade", "head", "--migrations", dir])
        .success();
    assert_eq!(db.heads(), ["c1c1000000a2"]);
}

#[test]
fn a_statement_timeout_is_reported_apart_from_a_lock_timeout() {
    let db = TestDb::new();
    let run = db.xtask(&[
        "migrate",
        "upgrade",
        "head",
        "--migrations",
        "tests/fixtures/slow_migration",
        "--statement-timeout",
        "500ms",
    ]);
    let err = run.failure().stderr();
    assert!(
        err.contains("canceling statement due to statement timeout"),
        "{err}"
    );
    assert!(!err.contains("lock timeout"), "{err}");
    assert!(err.contains("c0c0000000a2_slow_gadgets/up.sql:3"), "{err}");
    at_first_revision_with_nothing_partial(&db);
}

#[test]
fn a_version_table_moved_under_us_aborts_the_migration() {
    // The second migration rewrites alembic_version itself, as a migrator that ignored
    // the lock would: the bookkeeping update finds no row to move, and the whole
    // migration rolls back instead of recording a version twice or losing one.
    let db = TestDb::new();
    let run = db.xtask(&[
        "migrate",
        "upgrade",
        "head",
        "--migrations",
        "tests/fixtures/version_race",
    ]);
    let err = run.failure().stderr();
    assert!(
        err.contains("alembic_version did not hold e0e0000000a1 when e0e0000000a2 was recorded"),
        "{err}"
    );
    assert_eq!(db.heads(), ["e0e0000000a1"]);
    assert!(!db.snapshot().objects.contains_key("table second_table"));
}

//! What the migrator itself sends the server around each migration (issue 18: verify
//! runs three migrator runs per revision, so its per-run cost is multiplied by the
//! chain): counted from the server's own log of every statement it executed.

use std::path::Path;

use backend_schema::{Direction, Migrator, RevisionGraph, RunOptions};

use crate::support::TestDb;

/// Statements the server logged so far (`log_statement = 'all'`: one line per simple
/// query or extended-protocol execution).
fn logged_statements(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .filter(|line| line.contains(" LOG:  statement: ") || line.contains(" LOG:  execute "))
        .count()
}

/// The statements of the migration files themselves, for `revisions` in `direction`.
fn own_statements(graph: &RevisionGraph, revisions: &[String], direction: Direction) -> usize {
    revisions
        .iter()
        .map(|r| graph.get(r).unwrap().statements(direction).len())
        .sum()
}

/// Verify's stairway (up with its trace, down with its trace, up again plain, one
/// revision per run) and `upgrade head`: the statements besides the migrations' own
/// stay within a budget per run and per migration. The budgets are what the runner
/// needs (search_path check, the version tables read once, the lock, one transaction
/// with its bookkeeping, one trace per statement); the round before this one sent
/// 23 per stairway run and 5 per migration of `upgrade head`.
#[test]
fn the_migrator_sends_few_statements_around_each_migration() {
    let db = TestDb::new();
    let chain = tempfile::tempdir().unwrap();
    backend_schema::synthetic::write_chain(chain.path(), 6).unwrap();
    let graph = RevisionGraph::load(chain.path()).unwrap();
    let revisions: Vec<String> = graph
        .migrations()
        .iter()
        .map(|m| m.revision.clone())
        .collect();
    let mut admin = db.client();
    admin
        .batch_execute("ALTER DATABASE app SET log_statement = 'all'")
        .unwrap();
    admin.batch_execute("CREATE DATABASE whole").unwrap();
    admin
        .batch_execute("ALTER DATABASE whole SET log_statement = 'all'")
        .unwrap();
    let log = db.cluster.log_path();

    // The stairway's three runs per revision, on the first three (a table, a column, an
    // index built concurrently: both kinds of migration).
    let traced = RunOptions {
        capture_locks: true,
        ..RunOptions::default()
    };
    let mut client = db.client();
    let before = logged_statements(&log);
    let stairs = &revisions[..3];
    for revision in stairs {
        Migrator::new(&mut client, &graph, traced.clone())
            .upgrade(revision)
            .unwrap();
        Migrator::new(&mut client, &graph, traced.clone())
            .unapply(revision)
            .unwrap();
        Migrator::new(&mut client, &graph, RunOptions::default())
            .upgrade(revision)
            .unwrap();
    }
    let sent = logged_statements(&log) - before;
    let own = 2 * own_statements(&graph, stairs, Direction::Up)
        + own_statements(&graph, stairs, Direction::Down);
    // Each traced statement is read before and after (the after of one is the before of
    // the next): one trace per statement and one more per traced run.
    let traces = own_statements(&graph, stairs, Direction::Up)
        + own_statements(&graph, stairs, Direction::Down)
        + 2 * stairs.len();
    let runs = 3 * stairs.len();
    let around = sent - own - traces;
    eprintln!("stairway: {sent} statements, {own} of the migrations, {traces} traces, {around} around {runs} runs");
    let stairway = around;

    // `upgrade head` of the whole chain on a fresh database: one run, six migrations.
    let mut client = db.cluster.client("whole").unwrap();
    let before = logged_statements(&log);
    Migrator::new(&mut client, &graph, RunOptions::default())
        .upgrade("head")
        .unwrap();
    let sent = logged_statements(&log) - before;
    let own = own_statements(&graph, &revisions, Direction::Up);
    let upgrade = sent - own;
    eprintln!(
        "upgrade head: {sent} statements, {own} of the migrations, {upgrade} around {} migrations",
        revisions.len()
    );
    assert!(
        stairway <= 14 * runs,
        "the stairway's {runs} runs sent {stairway} statements besides the migrations' own and their traces ({:.1} a run)",
        stairway as f64 / runs as f64
    );
    assert!(
        upgrade <= 10 + 4 * revisions.len(),
        "upgrade head sent {upgrade} statements besides the migrations' own for {} migrations",
        revisions.len()
    );
}

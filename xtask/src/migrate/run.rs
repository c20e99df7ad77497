//! `upgrade` and `downgrade`: live, with progress lines and a summary, or as a `--sql`
//! script.

use std::time::Duration;

use backend_schema::graph::RevisionGraph;
use backend_schema::migration::Direction;
use backend_schema::runner::offline::offline_sql;
use backend_schema::runner::{
    heads_text, holders_text, running_line, Event, MigrateError, Migrator, StepReport,
};

use super::history::head_label;
use super::APPLICATION_NAME;
use crate::flags::{ConnectOpts, RunOpts};

/// Prints the script that moves a database across `range` (`FROM:TO`) in `direction`.
pub(super) fn print_sql(
    graph: &RevisionGraph,
    direction: Direction,
    range: &str,
    run: &RunOpts,
) -> anyhow::Result<()> {
    let verb = match direction {
        Direction::Up => "upgrade",
        Direction::Down => "downgrade",
    };
    let command = format!("cargo xtask migrate {verb} {range} --sql");
    print!(
        "{}",
        offline_sql(graph, range, direction, &run.options(), &command)?
    );
    Ok(())
}

/// Runs `apply` (an upgrade or downgrade to `target`) on the database, printing its
/// progress and where the database ends up.
pub(super) fn live(
    graph: &RevisionGraph,
    connect: &ConnectOpts,
    run: &RunOpts,
    target: &str,
    apply: impl FnOnce(&mut Migrator<'_>) -> Result<Vec<StepReport>, MigrateError>,
) -> anyhow::Result<()> {
    let db = connect.resolve()?;
    let mut client = db.connect(APPLICATION_NAME)?;
    eprintln!("database: {}", db.describe());
    let watcher = db.clone();
    let mut migrator = Migrator::new(&mut client, graph, run.options())
        .on_event(print_event)
        .watch_blockers(move || watcher.connect("cargo xtask migrate (lock watch)").ok())?;
    let reports = apply(&mut migrator)?;
    let heads = migrator.current()?;
    let at: Vec<String> = heads.iter().map(|h| head_label(graph, h)).collect();
    let at = heads_text(&at);
    match reports.len() {
        0 => eprintln!("already at {target}: nothing to do (database at {at})"),
        steps => eprintln!("applied {steps} migration(s); database at {at}"),
    }
    Ok(())
}

pub(super) fn print_event(event: Event<'_>) {
    match event {
        Event::WaitingForLock { holders } => eprintln!(
            "waiting for the migration lock, held by {}",
            holders_text(holders, "another session")
        ),
        Event::LockAcquired { waited } => {
            eprintln!("got the migration lock after {:.1}s", waited.as_secs_f64())
        }
        Event::Running { step, migration } => eprintln!("{}", running_line(step, migration)),
        Event::Retrying {
            revision,
            attempt,
            after,
            blockers,
        } => eprintln!(
            "{revision}: lock_timeout reached{}; retry {attempt} in {:.1}s",
            match blockers.is_empty() {
                true => String::new(),
                false => format!(", blocked by {}", holders_text(blockers, "")),
            },
            after.as_secs_f64()
        ),
        Event::Finished { elapsed, .. } => eprintln!("  done in {}", millis(elapsed)),
    }
}

fn millis(duration: Duration) -> String {
    format!("{} ms", duration.as_millis())
}

//! `upgrade` and `downgrade`: live, with progress lines and a summary, or as a `--sql`
//! script.

use std::time::Duration;

use backend_schema::graph::RevisionGraph;
use backend_schema::migration::Direction;
use backend_schema::runner::offline::offline_sql;
use backend_schema::runner::{heads_text, holders_text, running_line, Event, Migrator};

use super::history::head_label;
use super::APPLICATION_NAME;
use crate::flags::{ConnectOpts, RunOpts};

/// Moves the database to `target` in `direction`, or with `sql` prints the script that
/// would (`target` is then `FROM:TO`). `allow_data_loss` is `downgrade --yes`.
pub(super) fn apply(
    graph: &RevisionGraph,
    connect: &ConnectOpts,
    direction: Direction,
    target: &str,
    sql: bool,
    run: &RunOpts,
    allow_data_loss: bool,
) -> anyhow::Result<()> {
    let verb = match direction {
        Direction::Up => "upgrade",
        Direction::Down => "downgrade",
    };
    if sql {
        let command = format!("cargo xtask migrate {verb} {target} --sql");
        print!(
            "{}",
            offline_sql(graph, target, direction, &run.options(), &command)?
        );
        return Ok(());
    }
    let db = connect.resolve()?;
    let mut client = db.connect(APPLICATION_NAME)?;
    eprintln!("database: {}", db.describe());
    let mut migrator = Migrator::new(&mut client, graph, run.options()).on_event(print_event);
    let reports = match direction {
        Direction::Up => migrator.upgrade(target)?,
        Direction::Down => migrator.downgrade(target, allow_data_loss)?,
    };
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
        } => eprintln!(
            "{revision}: lock_timeout reached; retry {attempt} in {:.1}s",
            after.as_secs_f64()
        ),
        Event::Finished { elapsed, .. } => eprintln!("  done in {}", millis(elapsed)),
    }
}

fn millis(duration: Duration) -> String {
    format!("{} ms", duration.as_millis())
}

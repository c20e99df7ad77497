//! `drift`: the live schema against the schema its recorded revision should have, each
//! difference on stdout with the SQL that brings it back; exit 0 equal, 1 drifted, 2
//! when it could not tell.

use std::time::Duration;

use backend_schema::drift::{self, Drift};
use backend_schema::embed::Embedded;
use backend_schema::graph::RevisionGraph;
use backend_schema::runner::heads_text;

use super::APPLICATION_NAME;
use crate::flags::ConnectOpts;

/// Differences found: the answer, not a failure.
const DRIFTED: u8 = 1;
/// The comparison could not be made (connection, privileges, lock timeout, unknown revision).
const COULD_NOT_TELL: u8 = 2;

pub(super) fn drift(
    graph: &RevisionGraph,
    connect: &ConnectOpts,
    lock_timeout: Duration,
    built_in: Option<&Embedded>,
) -> anyhow::Result<()> {
    let found = compare(graph, connect, lock_timeout, built_in).map_err(|err| {
        eprintln!("{}: {err:#}", crate::style::error("error"));
        anyhow::Error::new(crate::Quiet(COULD_NOT_TELL))
    })?;
    let Some((revision, drift)) = found else {
        return Ok(());
    };
    print(&revision, &drift);
    Err(crate::Quiet(DRIFTED).into())
}

/// `None` when the live schema equals its revision's.
fn compare(
    graph: &RevisionGraph,
    connect: &ConnectOpts,
    lock_timeout: Duration,
    built_in: Option<&Embedded>,
) -> anyhow::Result<Option<(String, Drift)>> {
    use anyhow::Context as _;
    let target = connect.resolve()?;
    eprintln!("database: {}", target.describe());
    let mut client = target.connect(APPLICATION_NAME)?;
    let live = drift::read_live(&mut client, lock_timeout)
        .with_context(|| format!("reading the live schema of {}", target.describe()))?;
    drop(client);
    let revision = heads_text(&live.heads);
    let expected = match built_in {
        Some(embedded) => {
            eprintln!(
                "recorded revision: {revision}; comparing with its catalog built into this binary"
            );
            drift::Expected {
                objects: embedded.objects_at(&live.heads)?,
                server_version_num: embedded.server_version_num,
            }
        }
        None => {
            eprintln!("recorded revision: {revision}; building its schema in a throwaway cluster");
            drift::expected(graph, &live.heads)
                .with_context(|| format!("building the schema of revision {revision}"))?
        }
    };
    if let Some(note) = drift::version_note(expected.server_version_num, live.server_version_num) {
        eprintln!("{}: {note}", crate::style::warning("warning"));
    }
    let drift = drift::compare(&expected.objects, &live.objects);
    if drift.is_empty() {
        println!("no drift: the schema equals revision {revision}'s");
        return Ok(None);
    }
    Ok(Some((revision, drift)))
}

fn print(revision: &str, drift: &Drift) {
    println!(
        "drift: {} difference(s) from the schema of revision {revision}:",
        drift.differences.len()
    );
    for difference in &drift.differences {
        println!("  {difference}");
    }
    if drift.differences.iter().any(|d| d.planner) {
        match &drift.repair {
            Ok(plan) if !plan.is_empty() => {
                println!();
                println!("SQL that brings it back (from the declarative planner; review it, run it as a migration or by hand):");
                for line in plan.to_sql_by_phase().lines() {
                    println!("  {line}");
                }
                if !plan.drops.is_empty() {
                    println!("  -- it destroys: {}", plan.drops.join(", "));
                }
            }
            Ok(_) => {}
            Err(err) => {
                println!();
                println!("no SQL for the table changes: {err}");
            }
        }
    }
    if !drift.by_hand.is_empty() {
        println!();
        println!(
            "not written by the planner (restore by hand, as the migration that made it did):"
        );
        for (difference, sql) in &drift.by_hand {
            match sql {
                Some(sql) => println!("  -- {} {}\n  {sql}", difference.kind, difference.name),
                None => println!(
                    "  -- {} {}: no SQL; see its definition above",
                    difference.kind, difference.name
                ),
            }
        }
    }
}

//! `stamp` (a revision, or the one `--detect` finds the live schema equals) and `rehash`:
//! bookkeeping without running migrations.

use anyhow::bail;
use backend_schema::detect::{self, Detection};
use backend_schema::graph::RevisionGraph;
use backend_schema::runner::{heads_text, MigrateError, Migrator};
use backend_schema::snapshot::SchemaSnapshot;

use super::run::print_event;
use super::APPLICATION_NAME;
use crate::flags::{ConnectOpts, RunOpts};

/// Records `target`, or with `detect` the revision the live schema equals.
pub(super) fn stamp(
    graph: &RevisionGraph,
    connect: &ConnectOpts,
    target: Option<String>,
    detect: bool,
    purge: bool,
    run: &RunOpts,
) -> anyhow::Result<()> {
    let db = connect.resolve()?;
    let mut client = db.connect(APPLICATION_NAME)?;
    eprintln!("database: {}", db.describe());
    let target = match (target, detect) {
        (Some(target), false) => target,
        (None, true) => detected_revision(graph, &mut client)?,
        _ => unreachable!("clap requires exactly one of TARGET and --detect"),
    };
    let mut migrator = Migrator::new(&mut client, graph, run.options()).on_event(print_event);
    let heads = match migrator.stamp(&target, purge) {
        // The general advice is to run --detect, which is what was just done.
        Err(MigrateError::UnknownRevision { revision, .. }) if detect => bail!(
            "the live schema equals revision {target}, but alembic_version records {revision}, which no migration \
             in {} defines; nothing was stamped. Replace it with `cargo xtask migrate stamp --detect --purge` \
             (or `cargo xtask migrate stamp --purge {target}`)",
            graph.dir().display()
        ),
        other => other?,
    };
    eprintln!("stamped: database is now at {}", heads_text(&heads));
    Ok(())
}

/// The revision the live schema equals, or an error with the closest revision and the
/// difference.
fn detected_revision(
    graph: &RevisionGraph,
    client: &mut backend_schema::Client,
) -> anyhow::Result<String> {
    let live = SchemaSnapshot::capture(client)?;
    eprintln!(
        "comparing the live schema with every revision (building each in a throwaway cluster)..."
    );
    match detect::detect_revision(graph, &live)? {
        Detection::Exact(revision) => {
            eprintln!("the live schema equals revision {revision}");
            Ok(revision)
        }
        Detection::Closest { revision, diff } => bail!(
            "the live schema matches no revision; refusing to stamp. Closest is {revision}; it differs in:\n{diff}"
        ),
    }
}

/// Accepts the current file of an applied revision as intended.
pub(super) fn rehash(
    graph: &RevisionGraph,
    connect: &ConnectOpts,
    revision: &str,
    run: &RunOpts,
) -> anyhow::Result<()> {
    let db = connect.resolve()?;
    let mut client = db.connect(APPLICATION_NAME)?;
    let mut migrator = Migrator::new(&mut client, graph, run.options());
    let (new, old) = migrator.rehash(revision)?;
    let old = old.unwrap_or_else(|| "none (applied by Alembic)".into());
    eprintln!("accepted the current file of {revision}: sha256 {new} (was {old})");
    Ok(())
}

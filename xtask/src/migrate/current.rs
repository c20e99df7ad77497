//! `current`: which database, its revision(s), how many migrations are pending, and any
//! applied file edited since (which `upgrade` will refuse); a revision this checkout does
//! not know is reported with what is known about it and exit status 4.

use anyhow::bail;
use backend_schema::graph::RevisionGraph;
use backend_schema::runner::{heads_text, Integrity, MigrateError, Migrator, RunOptions};

use super::history::head_label;
use super::APPLICATION_NAME;
use crate::flags::ConnectOpts;

/// The database's heads on stdout; on stderr the database, the pending count and a
/// warning per edited or unfinished applied revision; with `verbose` the integrity of
/// every applied revision; with `check_heads` an error unless it is at head.
pub(super) fn current(
    graph: &RevisionGraph,
    connect: &ConnectOpts,
    verbose: bool,
    check_heads: bool,
) -> anyhow::Result<()> {
    let target = connect.resolve()?;
    let mut client = target.connect(APPLICATION_NAME)?;
    eprintln!("database: {}", target.describe());
    let mut migrator = Migrator::new(&mut client, graph, RunOptions::default());
    let heads = match migrator.current() {
        Ok(heads) => heads,
        Err(unknown @ MigrateError::UnknownRevision { .. }) => {
            let raw = migrator.raw_heads()?;
            return Err(report_unknown(graph, &raw, &unknown));
        }
        Err(err) => return Err(err.into()),
    };
    if heads.is_empty() {
        eprintln!("database is at base (no revision applied)");
    }
    for head in &heads {
        println!("{}", head_label(graph, head));
    }
    let integrity = migrator.integrity()?;
    let pending = graph.upgrade_plan(&heads, "heads")?;
    match pending.len() {
        0 => eprintln!("up to date: no migration pending"),
        n => eprintln!("{n} migration(s) pending; apply with `cargo xtask migrate upgrade head`"),
    }
    for (revision, state) in &integrity {
        let migration = graph.get(revision).expect("applied revisions are known");
        match state {
            Integrity::Edited { recorded } => eprintln!(
                "{}: migration {revision} ({}) was edited after it was applied: recorded sha256 {recorded}, file now {}; `upgrade` refuses until you revert the edit or accept it with `cargo xtask migrate rehash {revision}`",
                crate::style::warning("warning"),
                migration.dir.display(),
                migration.checksum
            ),
            Integrity::Unfinished(record) => eprintln!(
                "{}: migration {revision} ({}) is marked {} (it runs outside a transaction and did not complete); `upgrade` refuses until it is resolved",
                crate::style::warning("warning"),
                migration.dir.display(),
                record.status
            ),
            Integrity::Verified(_) | Integrity::NoRecord => {}
        }
    }
    if verbose {
        print_integrity(graph, &integrity);
    }
    if check_heads && !pending.is_empty() {
        bail!(
            "target database is not up to date: it is at {}, {} migration(s) pending ({}); run `cargo xtask migrate upgrade head`",
            heads_text(&heads),
            pending.len(),
            pending.iter().map(|s| s.revision.as_str()).collect::<Vec<_>>().join(", ")
        );
    }
    Ok(())
}

/// Exit status of `current` (and `history` marking current) when the database records a revision no migration defines: the
/// answer (this checkout cannot place the database), distinct from a failure to ask.
pub(super) const UNKNOWN_REVISION: u8 = 4;

/// What `current` can still say about a database at a revision the chain lacks: every
/// recorded revision on stdout (the unknown marked), the error with its history and the
/// way out, and the known ones beside it.
fn report_unknown(graph: &RevisionGraph, raw: &[String], unknown: &MigrateError) -> anyhow::Error {
    for head in raw {
        match graph.get(head) {
            Some(_) => println!("{}", head_label(graph, head)),
            None => println!("{head} (unknown: no migration defines it)"),
        }
    }
    eprintln!("{}: {unknown}", crate::style::error("error"));
    let known: Vec<&str> = raw
        .iter()
        .filter(|h| graph.get(h).is_some())
        .map(String::as_str)
        .collect();
    if !known.is_empty() {
        eprintln!("known revision(s) recorded beside it: {}", known.join(", "));
    }
    eprintln!("this checkout's head(s): {}", graph.heads().join(", "));
    anyhow::Error::new(crate::Quiet(UNKNOWN_REVISION))
}

fn print_integrity(graph: &RevisionGraph, integrity: &[(String, Integrity)]) {
    println!();
    println!("applied revisions:");
    for (revision, integrity) in integrity {
        let migration = graph.get(revision).expect("applied revisions are known");
        let status = match integrity {
            Integrity::Verified(record) => format!(
                "checksum ok ({} {} by {})",
                record.operation, record.started_at, record.tool_version
            ),
            Integrity::NoRecord => "applied by Alembic (no checksum recorded)".into(),
            Integrity::Edited { recorded } => format!(
                "EDITED since applied (recorded {recorded}, file {}); revert or `cargo xtask migrate rehash {revision}`",
                migration.checksum
            ),
            Integrity::Unfinished(record) => format!(
                "UNFINISHED ({}): {}",
                record.status,
                record.error.clone().unwrap_or_default()
            ),
        };
        println!("  {revision}  {}  {status}", migration.dir.display());
    }
}

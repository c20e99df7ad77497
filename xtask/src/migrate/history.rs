//! `heads`, `show` and `history`: the chain and the database's place in it,
//! in Alembic's wording.

use std::fmt::Write as _;

use anyhow::Context as _;
use backend_schema::graph::RevisionGraph;
use backend_schema::migration::Migration;
use backend_schema::runner::{MigrateError, Migrator, RunOptions};

use super::current::UNKNOWN_REVISION;
use super::APPLICATION_NAME;
use crate::flags::ConnectOpts;

/// `show REV`: one revision in detail.
pub(super) fn show(graph: &RevisionGraph, revision: &str) -> anyhow::Result<()> {
    for migration in graph.resolve_shown(revision)? {
        print!("{}", verbose_entry(graph, migration, &[]));
    }
    Ok(())
}

/// A line of `heads`, as Alembic prints it: `REV (labels) (head)`.
pub(super) fn head_line(graph: &RevisionGraph, revision: &str) -> String {
    format!("{revision}{} (head)", labels_text(graph, revision))
}

/// ` (label, label)` for a revision on labelled branches, else nothing.
fn labels_text(graph: &RevisionGraph, revision: &str) -> String {
    match graph.labels_of(revision).as_slice() {
        [] => String::new(),
        labels => format!(" ({})", labels.join(", ")),
    }
}

/// A revision, marked `(head)` when it is one.
pub(super) fn head_label(graph: &RevisionGraph, revision: &str) -> String {
    if graph.is_head(revision) {
        format!("{revision} (head)")
    } else {
        revision.to_string()
    }
}

/// `history`: the revisions in `range`, marking the database's current ones with
/// `indicate_current` (a range naming `current` reads them too).
pub(super) fn history(
    graph: &RevisionGraph,
    connect: &ConnectOpts,
    verbose: bool,
    indicate_current: bool,
    range: Option<&str>,
) -> anyhow::Result<()> {
    let range_reads_current = range.is_some_and(|r| r.contains("current"));
    let mut unknown = None;
    let current = if indicate_current || range_reads_current {
        let target = connect.resolve()?;
        let mut client = target.connect(APPLICATION_NAME)?;
        let mut migrator = Migrator::new(&mut client, graph, RunOptions::default());
        match migrator.current() {
            Ok(heads) => heads,
            // The history is still worth printing when only its marks are in doubt; a
            // range bounded by `current` has no answer.
            Err(err @ MigrateError::UnknownRevision { .. }) if !range_reads_current => {
                let known = migrator.raw_heads()?;
                unknown = Some(err);
                known
                    .into_iter()
                    .filter(|h| graph.get(h).is_some())
                    .collect()
            }
            Err(err @ MigrateError::UnknownRevision { .. }) => {
                eprintln!("{}: {err}", crate::style::error("error"));
                return Err(anyhow::Error::new(crate::Quiet(UNKNOWN_REVISION)));
            }
            Err(err) => return Err(err.into()),
        }
    } else {
        Vec::new()
    };
    print!(
        "{}",
        history_lines(graph, &current, indicate_current, verbose, range)?
    );
    if let Some(err) = unknown {
        eprintln!("{}: {err}", crate::style::error("error"));
        return Err(anyhow::Error::new(crate::Quiet(UNKNOWN_REVISION)));
    }
    Ok(())
}

/// Alembic's `history` lines, newest first, in Alembic's order.
fn history_lines(
    graph: &RevisionGraph,
    current: &[String],
    indicate_current: bool,
    verbose: bool,
    range: Option<&str>,
) -> anyhow::Result<String> {
    let (lower, upper) = match range {
        None => (None, None),
        Some(range) => range.split_once(':').map(|(l, u)| (Some(l), Some(u))).with_context(|| {
            format!("malformed range `{range}`; use START:END, START: or :END, e.g. base:head or f5a2:current")
        })?,
    };
    let marks = if indicate_current { current } else { &[] };
    let mut out = String::new();
    for migration in graph.history(lower, upper, current)? {
        if verbose {
            out.push_str(&verbose_entry(graph, migration, marks));
            out.push('\n');
        } else {
            let _ = writeln!(
                out,
                "{}, {}",
                history_head(graph, migration, marks),
                migration.message
            );
        }
    }
    Ok(out)
}

/// `PARENTS -> REV (labels) (head) (current) (branchpoint) (mergepoint)`, Alembic's
/// order of marks.
fn history_head(graph: &RevisionGraph, migration: &Migration, current: &[String]) -> String {
    let parents = if migration.parents.is_empty() {
        "<base>".to_string()
    } else {
        migration.parents.join(", ")
    };
    let revision = &migration.revision;
    let mut line = format!("{parents} -> {revision}{}", labels_text(graph, revision));
    if graph.is_head(revision) {
        line.push_str(" (head)");
    }
    if current.contains(revision) {
        line.push_str(" (current)");
    }
    if graph.children_of(revision).len() > 1 {
        line.push_str(" (branchpoint)");
    }
    if migration.parents.len() > 1 {
        line.push_str(" (mergepoint)");
    }
    line
}

/// `(head) (branchpoint) (mergepoint) (current)`: the order of `Rev:` lines.
fn flags(graph: &RevisionGraph, migration: &Migration, current: &[String]) -> String {
    let mut flags = String::new();
    if graph.is_head(&migration.revision) {
        flags.push_str(" (head)");
    }
    if graph.children_of(&migration.revision).len() > 1 {
        flags.push_str(" (branchpoint)");
    }
    if migration.parents.len() > 1 {
        flags.push_str(" (mergepoint)");
    }
    if current.contains(&migration.revision) {
        flags.push_str(" (current)");
    }
    flags
}

fn verbose_entry(graph: &RevisionGraph, migration: &Migration, current: &[String]) -> String {
    let parents = if migration.parents.is_empty() {
        "<base>".to_string()
    } else {
        migration.parents.join(", ")
    };
    let children = graph.children_of(&migration.revision);
    let mut out = format!(
        "Rev: {}{}\n",
        migration.revision,
        flags(graph, migration, current)
    );
    if migration.parents.len() > 1 {
        let _ = writeln!(out, "Merges: {parents}");
    } else {
        let _ = writeln!(out, "Parent: {parents}");
    }
    if children.len() > 1 {
        let _ = writeln!(out, "Branches into: {}", children.join(", "));
    }
    let labels = graph.labels_of(&migration.revision);
    if !labels.is_empty() {
        let _ = writeln!(out, "Branch names: {}", labels.join(", "));
    }
    let _ = writeln!(out, "Path: {}", migration.dir.display());
    let _ = writeln!(out, "\n    {}\n", migration.message);
    let _ = writeln!(out, "    Revision ID: {}", migration.revision);
    let _ = writeln!(out, "    Revises: {}", migration.parents.join(", "));
    if let Some(date) = &migration.create_date {
        let _ = writeln!(out, "    Create Date: {date}");
    }
    let _ = writeln!(
        out,
        "    Transactional: {}",
        if migration.transactional {
            "yes"
        } else {
            "no (runs statement by statement)"
        }
    );
    let _ = writeln!(out, "    Checksum: sha256:{}", migration.checksum);
    out
}

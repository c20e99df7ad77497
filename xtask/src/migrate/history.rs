//! `heads`, `show` and `history`: the chain and the database's place in it,
//! in Alembic's wording.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use anyhow::Context as _;
use backend_schema::graph::RevisionGraph;
use backend_schema::migration::Migration;
use backend_schema::runner::{Migrator, RunOptions};

use super::APPLICATION_NAME;
use crate::flags::ConnectOpts;

/// `show REV`: one revision in detail.
pub(super) fn show(graph: &RevisionGraph, revision: &str) -> anyhow::Result<()> {
    for migration in graph.resolve_shown(revision)? {
        print!("{}", verbose_entry(graph, migration, &[]));
    }
    Ok(())
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
    let current = if indicate_current || range.is_some_and(|r| r.contains("current")) {
        let target = connect.resolve()?;
        let mut client = target.connect(APPLICATION_NAME)?;
        let heads = Migrator::new(&mut client, graph, RunOptions::default()).current()?;
        heads
    } else {
        Vec::new()
    };
    print!(
        "{}",
        history_lines(graph, &current, indicate_current, verbose, range)?
    );
    Ok(())
}

/// Alembic's `history` lines, newest first.
fn history_lines(
    graph: &RevisionGraph,
    current: &[String],
    indicate_current: bool,
    verbose: bool,
    range: Option<&str>,
) -> anyhow::Result<String> {
    let selected = select_range(graph, current, range)?;
    let mut out = String::new();
    for migration in graph.migrations().iter().rev() {
        if !selected.contains(&migration.revision) {
            continue;
        }
        let marks = if indicate_current { current } else { &[] };
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

fn history_head(graph: &RevisionGraph, migration: &Migration, current: &[String]) -> String {
    let parents = match migration.parents.as_slice() {
        [] => "<base>".to_string(),
        [one] => one.clone(),
        many => format!("({})", many.join(", ")),
    };
    let mut line = format!("{parents} -> {}", migration.revision);
    line.push_str(&flags(graph, migration, current));
    line
}

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
    let _ = writeln!(out, "Parent: {parents}");
    if !children.is_empty() {
        let _ = writeln!(out, "Branches into: {}", children.join(", "));
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

/// Revisions within `start:end`, each side a revision, `base`, `head(s)` or `current`.
fn select_range(
    graph: &RevisionGraph,
    current: &[String],
    range: Option<&str>,
) -> anyhow::Result<BTreeSet<String>> {
    let all: BTreeSet<String> = graph
        .migrations()
        .iter()
        .map(|m| m.revision.clone())
        .collect();
    let Some(range) = range else {
        return Ok(all);
    };
    let (start, end) = range.split_once(':').with_context(|| {
        format!("malformed range `{range}`; use START:END, e.g. base:head or f5a2:current")
    })?;
    let ends = |side: &str| -> anyhow::Result<Option<Vec<String>>> {
        Ok(match side {
            "" | "base" | "heads" | "head" => None,
            "current" => Some(current.to_vec()),
            rev => Some(vec![graph.resolve_revision(rev)?.revision.clone()]),
        })
    };
    let mut selected = all.clone();
    if let Some(end) = ends(end)? {
        let upto: BTreeSet<String> = graph
            .applied(&end)?
            .iter()
            .map(|m| m.revision.clone())
            .collect();
        selected.retain(|r| upto.contains(r));
    }
    if let Some(start) = ends(start)? {
        // Descendants of start, start included: revisions whose ancestry contains it.
        selected.retain(|r| {
            graph
                .applied(std::slice::from_ref(r))
                .map(|a| a.iter().any(|m| start.contains(&m.revision)))
                .unwrap_or(false)
        });
    }
    Ok(selected)
}

//! The rehearsal as Markdown for the release ticket: what runs, how long, which locks it
//! holds on production's tables and for how long, what it destroys, drift, and the
//! exact commands of the release and of its rollback.

use std::fmt::Write as _;
use std::io;
use std::path::Path;
use std::time::Duration;

use super::{MigrationRun, Outcome, Rehearsal};
use crate::runner::heads_text;

/// How the commands in the report are spelled.
#[derive(Debug, Clone)]
pub struct Commands {
    /// `cargo xtask`, or the shipped binary's name.
    pub program: String,
}

/// Whether the report can be written at `path`, asked before the rehearsal (which can
/// take hours) rather than found out after it: an existing file is opened for writing
/// (not truncated), a new one is tried in its directory and removed.
pub fn check_writable(path: &Path) -> io::Result<()> {
    if path.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::IsADirectory,
            "Is a directory",
        ));
    }
    if path.exists() {
        return std::fs::OpenOptions::new().write(true).open(path).map(drop);
    }
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    tempfile::Builder::new()
        .prefix(".rehearsal-report-check")
        .tempfile_in(dir)
        .map(drop)
}

/// `12 ms`, `1.25 s`.
pub fn duration(d: Duration) -> String {
    match d.as_millis() {
        ms if ms < 1000 => format!("{ms} ms"),
        _ => format!("{:.2} s", d.as_secs_f64()),
    }
}

/// The report.
pub fn markdown(rehearsal: &Rehearsal, commands: &Commands) -> String {
    let mut out = String::new();
    let r = rehearsal;
    let start = heads_text(&r.start);
    let target = heads_text(&r.target);
    let _ = writeln!(out, "# Release rehearsal: {start} -> {target}\n");
    let _ = writeln!(out, "- Source: {}", r.source);
    let _ = writeln!(
        out,
        "- Production records revision {start}; the release upgrades it to {target} (`--to {}`), {} migration(s).",
        r.to,
        r.upgrades.len().max(pending_count(r))
    );
    let _ = writeln!(out, "- Result: {}\n", verdict(&r.outcome));

    let _ = writeln!(out, "## Pending migrations\n");
    let _ = writeln!(out, "| Revision | Message | Transaction | Time |");
    let _ = writeln!(out, "|---|---|---|---|");
    for m in &r.upgrades {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            m.revision,
            cell(&m.message),
            if m.transactional {
                "one"
            } else {
                "none (statement by statement)"
            },
            duration(m.elapsed)
        );
    }
    if let Outcome::UpgradeFailed { revision, .. } = &r.outcome {
        let _ = writeln!(out, "| {revision} | failed | | |");
    }
    let total: Duration = r.upgrades.iter().map(|m| m.elapsed).sum();
    let _ = writeln!(out, "\nTotal: {}.\n", duration(total));

    let _ = writeln!(out, "## Statements on production's tables\n");
    let _ = writeln!(
        out,
        "Locks, rewrites, full scans and rows on the tables production already has (tables a migration creates are empty and unseen by the application).\n"
    );
    statements(&mut out, &r.upgrades);

    let _ = writeln!(out, "## Locks that stop the application\n");
    let blocking: Vec<String> = r
        .upgrades
        .iter()
        .flat_map(|m| {
            m.statements.iter().flat_map(move |s| {
                s.locks
                    .iter()
                    .filter(|l| l.mode.blocks_writes())
                    .map(move |l| {
                        format!(
                            "- {} on {} for {} ({}, line {}: {}{})",
                            l.mode.pg_name(),
                            l.table,
                            duration(l.held),
                            m.revision,
                            s.line,
                            if l.mode == crate::declarative::plan::LockMode::AccessExclusive {
                                "reads and writes wait"
                            } else {
                                "writes wait"
                            },
                            match s.rewritten.contains(&l.table) {
                                true => ", the table is rewritten",
                                false => "",
                            }
                        )
                    })
            })
        })
        .collect();
    match blocking.is_empty() {
        true => {
            let _ = writeln!(
                out,
                "None: no statement blocks reads or writes of an existing table.\n"
            );
        }
        false => {
            let _ = writeln!(out, "{}\n", blocking.join("\n"));
        }
    }

    let _ = writeln!(out, "## Destructive steps\n");
    let losses = |l: &[crate::runner::Loss]| match l.is_empty() {
        true => "nothing that holds data".to_string(),
        false => l
            .iter()
            .map(|l| l.to_string())
            .collect::<Vec<_>>()
            .join(", "),
    };
    let _ = writeln!(
        out,
        "- The upgrade destroys: {}.",
        losses(&r.upgrade_losses)
    );
    let _ = writeln!(
        out,
        "- The rollback destroys: {}.\n",
        losses(&r.rollback_losses)
    );

    let _ = writeln!(out, "## Drift\n");
    if let Some(note) = &r.drift_note {
        let _ = writeln!(out, "Note: {note}.\n");
    }
    match r.drift.is_empty() {
        true => {
            let _ = writeln!(
                out,
                "None: production's schema equals revision {start}'s.\n"
            );
        }
        false => {
            let _ = writeln!(
                out,
                "Production differs from revision {start}'s schema in {} place(s); the migrations were written against the schema without these. Run `{} migrate drift` for the SQL that brings it back.\n",
                r.drift.differences.len(),
                commands.program
            );
            for d in &r.drift.differences {
                let _ = writeln!(out, "- {}", cell(&d.to_string()));
            }
            let _ = writeln!(out);
        }
    }

    let _ = writeln!(out, "## Rollback\n");
    match &r.outcome {
        Outcome::UpgradeFailed { .. } => {
            let _ = writeln!(out, "Not rehearsed: the upgrade failed.\n");
        }
        Outcome::DowngradeFailed { revision, .. } => {
            let _ = writeln!(
                out,
                "The downgrade of {revision} failed (see the result above).\n"
            );
        }
        Outcome::DowngradeDiffers { differences } => {
            let _ = writeln!(
                out,
                "The downgrade ran but left a schema other than revision {start}'s:\n"
            );
            for d in differences {
                let _ = writeln!(out, "- {}", cell(d));
            }
            let _ = writeln!(out);
        }
        Outcome::Passed => {
            let total: Duration = r.downgrades.iter().map(|m| m.elapsed).sum();
            let _ = writeln!(
                out,
                "Proven: the downgrade back to {start} ran in {} and gave back revision {start}'s schema exactly.\n",
                duration(total)
            );
            let _ = writeln!(out, "| Revision | Time |");
            let _ = writeln!(out, "|---|---|");
            for m in &r.downgrades {
                let _ = writeln!(out, "| {} | {} |", m.revision, duration(m.elapsed));
            }
            let _ = writeln!(out);
        }
    }

    let _ = writeln!(out, "## Commands\n");
    let p = &commands.program;
    let url = "--database-url \"$DATABASE_URL\"";
    let upgrade_to = match r.target.as_slice() {
        [one] => one.clone(),
        _ => r.to.clone(),
    };
    let _ = writeln!(out, "Release:\n\n```sh");
    let _ = writeln!(out, "{p} migrate drift {url}");
    let _ = writeln!(
        out,
        "{p} backup {url} --output backups/before-{upgrade_to}.dump"
    );
    let _ = writeln!(out, "{p} migrate upgrade {upgrade_to} {url}");
    let _ = writeln!(out, "{p} migrate drift {url}");
    let _ = writeln!(out, "```\n");
    let _ = writeln!(out, "Rollback:\n\n```sh");
    let yes = match r.rollback_losses.is_empty() {
        true => "",
        false => " --yes  # destroys what the rollback destroys, above",
    };
    match r.start.as_slice() {
        [] => {
            let _ = writeln!(out, "{p} migrate downgrade base {url}{yes}");
        }
        [one] => {
            let _ = writeln!(out, "{p} migrate downgrade {one} {url}{yes}");
        }
        _ => {
            let _ = writeln!(out, "# production records several heads: no one downgrade target returns to them; restore the backup");
        }
    }
    let _ = writeln!(
        out,
        "# or, when the data written since the release may go too:\n{p} restore backups/before-{upgrade_to}.dump {url} --clean --yes"
    );
    let _ = writeln!(out, "```");
    out
}

/// The migrations the plan has, counted from what ran and where it failed.
fn pending_count(r: &Rehearsal) -> usize {
    r.upgrades.len() + usize::from(matches!(r.outcome, Outcome::UpgradeFailed { .. }))
}

fn verdict(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Passed => "**passed**: every migration ran on production's data and the downgrade gave back the starting schema".into(),
        Outcome::UpgradeFailed {
            revision,
            report_error: error,
            ..
        } => format!(
            "**failed**: migration {revision} fails on production's data:\n\n```text\n{error}\n```"
        ),
        Outcome::DowngradeFailed {
            revision,
            report_error: error,
            ..
        } => format!(
            "**failed**: the downgrade of {revision} fails on the upgraded data:\n\n```text\n{error}\n```"
        ),
        Outcome::DowngradeDiffers { .. } => {
            "**failed**: the downgrade does not give back the starting schema (see Rollback)".into()
        }
    }
}

fn statements(out: &mut String, runs: &[MigrationRun]) {
    for m in runs {
        let _ = writeln!(out, "### {} {}\n", m.revision, m.message);
        let shown: Vec<_> = m
            .statements
            .iter()
            .filter(|s| {
                !s.locks.is_empty()
                    || !s.rewritten.is_empty()
                    || !s.scanned.is_empty()
                    || !s.rows.is_empty()
            })
            .collect();
        if shown.is_empty() {
            let _ = writeln!(out, "Touches no existing table.\n");
            continue;
        }
        let _ = writeln!(
            out,
            "| Line | Statement | Time | Locks (held for) | Rewrites | Full scans | Rows |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|");
        for s in shown {
            let locks: Vec<String> = s
                .locks
                .iter()
                .map(|l| format!("{} on {} ({})", l.mode.pg_name(), l.table, duration(l.held)))
                .collect();
            let rows: Vec<String> = s.rows.iter().map(|(t, n)| format!("{t}: {n}")).collect();
            let _ = writeln!(
                out,
                "| {} | `{}` | {} | {} | {} | {} | {} |",
                s.line,
                cell(&s.sql).replace('`', "'"),
                duration(s.elapsed),
                list(&locks),
                list(&s.rewritten),
                list(&s.scanned),
                list(&rows)
            );
        }
        let _ = writeln!(out);
    }
}

fn list(items: &[String]) -> String {
    match items.is_empty() {
        true => "-".into(),
        false => items.join(", "),
    }
}

/// Text for one table cell: no pipe ends the cell early.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_the_snapshot_filter_expects() {
        assert_eq!(duration(Duration::from_millis(12)), "12 ms");
        assert_eq!(duration(Duration::from_millis(1250)), "1.25 s");
    }
}

//! The import's proof, on a throwaway cluster: for every revision, the schema after the
//! imported chain's `upgrade REV` equals the schema after Alembic's own `upgrade REV`
//! (catalog snapshots), and the imported downgrade returns to the schema before it.

use std::fmt;

use crate::cluster::TempCluster;
use crate::graph::RevisionGraph;
use crate::runner::{Migrator, RunOptions};
use crate::snapshot::SchemaSnapshot;

use super::alembic::Workspace;
use super::ImportError;

/// What one side of the proof found for a revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Equal,
    /// The schemas differ: the diff, expected first.
    Differs(String),
    /// A step failed before anything could be compared.
    Failed(String),
    /// An earlier revision failed, so this one was not tried.
    NotChecked,
}

impl Outcome {
    fn ok(&self) -> bool {
        *self == Outcome::Equal
    }
}

/// One row of the table the import prints.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub revision: String,
    pub message: String,
    pub transactional: bool,
    /// The imported upgrade against Alembic's `upgrade REV`.
    pub upgrade: Outcome,
    /// The imported downgrade against the schema before the upgrade.
    pub downgrade: Outcome,
}

impl Verdict {
    pub fn ok(&self) -> bool {
        self.upgrade.ok() && self.downgrade.ok()
    }
}

/// The table of verdicts, one revision a line.
pub struct Table<'a>(pub &'a [Verdict]);

impl fmt::Display for Table<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self
            .0
            .iter()
            .map(|v| v.revision.len())
            .max()
            .unwrap_or(8)
            .max(8);
        writeln!(
            f,
            "{:width$}  {:<22}  {:<22}  message",
            "revision", "upgrade vs alembic", "downgrade to parent"
        )?;
        for verdict in self.0 {
            let word = |outcome: &Outcome, good: &'static str| match outcome {
                Outcome::Equal => good,
                Outcome::Differs(_) => "DIFFERS",
                Outcome::Failed(_) => "FAILED",
                Outcome::NotChecked => "not checked",
            };
            let message = verdict.message.lines().next().unwrap_or_default();
            let note = if verdict.transactional {
                ""
            } else {
                " (non-transactional)"
            };
            writeln!(
                f,
                "{:width$}  {:<22}  {:<22}  {message}{note}",
                verdict.revision,
                word(&verdict.upgrade, "equal"),
                word(&verdict.downgrade, "returns"),
            )?;
        }
        Ok(())
    }
}

/// Runs the proof for every revision of `graph` (parents first) against the project
/// Alembic runs in `workspace`. Stops at the first revision that differs: every later
/// comparison would repeat the difference.
pub fn prove(graph: &RevisionGraph, workspace: &Workspace) -> Result<Vec<Verdict>, ImportError> {
    let cluster = TempCluster::start()?;
    cluster.create_database("alembic", None)?;
    cluster.create_database("imported", None)?;
    let alembic_url = cluster.url("alembic");
    let mut theirs = cluster.client("alembic")?;
    let mut ours = cluster.client("imported")?;
    let mut before = SchemaSnapshot::capture(&mut ours)?;
    let mut verdicts: Vec<Verdict> = Vec::new();
    let mut failed = false;
    for migration in graph.migrations() {
        let mut verdict = Verdict {
            revision: migration.revision.clone(),
            message: migration.message.clone(),
            transactional: migration.transactional,
            upgrade: Outcome::NotChecked,
            downgrade: Outcome::NotChecked,
        };
        if failed {
            verdicts.push(verdict);
            continue;
        }
        let revision = migration.revision.as_str();
        let migrator = |client: &mut postgres::Client, up: bool| {
            let mut migrator = Migrator::new(client, graph, RunOptions::default());
            let result = if up {
                migrator.upgrade(revision)
            } else {
                migrator.unapply(revision)
            };
            result.map(drop).map_err(|err| format!("{err}"))
        };
        verdict.upgrade = match workspace.upgrade(&alembic_url, revision) {
            Err(err) => Outcome::Failed(err),
            Ok(()) => match migrator(&mut ours, true) {
                Err(err) => Outcome::Failed(format!("the imported upgrade failed: {err}")),
                Ok(()) => {
                    let expected = SchemaSnapshot::capture(&mut theirs)?;
                    let after = SchemaSnapshot::capture(&mut ours)?;
                    match expected.diff(&after) {
                        None => {
                            // Alembic's side is reached by its own upgrade only.
                            verdict.downgrade = match migrator(&mut ours, false) {
                                Err(err) => {
                                    Outcome::Failed(format!("the imported downgrade failed: {err}"))
                                }
                                Ok(()) => {
                                    let back = SchemaSnapshot::capture(&mut ours)?;
                                    match before.diff(&back) {
                                        None => Outcome::Equal,
                                        Some(diff) => Outcome::Differs(diff),
                                    }
                                }
                            };
                            if verdict.downgrade.ok() {
                                if let Err(err) = migrator(&mut ours, true) {
                                    verdict.downgrade = Outcome::Failed(format!(
                                        "upgrading again after the downgrade failed: {err}"
                                    ));
                                }
                            }
                            before = after;
                            Outcome::Equal
                        }
                        Some(diff) => Outcome::Differs(diff),
                    }
                }
            },
        };
        failed = !verdict.ok();
        verdicts.push(verdict);
    }
    drop((theirs, ours));
    cluster.stop()?;
    Ok(verdicts)
}

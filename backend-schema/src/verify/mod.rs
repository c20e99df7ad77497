//! `verify`: proves every migration on a throwaway cluster. A stairway (up, snapshot,
//! down, compare, up again) with seeded data and tenant-isolation checks at every
//! revision, base -> head in one go against the stairway's head, head -> base leaving
//! nothing behind, and the orders of applying merged branches converging (up to
//! `MERGE_ORDERS` of them).

pub mod data;
pub mod isolation;
pub mod seed;

use std::collections::BTreeMap;
use std::time::Instant;

use postgres::Client;
use serde::Serialize;

use crate::cluster::{ClusterError, TempCluster};
use crate::graph::RevisionGraph;
use crate::runner::{Migrator, RunOptions, StepReport};
use crate::snapshot::SchemaSnapshot;
use data::TableData;

/// What happened at one revision of the stairway.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RevisionReport {
    pub revision: String,
    pub message: String,
    pub dir: String,
    pub up_ms: u64,
    pub down_ms: u64,
    /// None when the round trip matched; else the readable diff.
    pub schema_roundtrip: Option<String>,
    /// Rows of kept tables that changed (failures).
    pub data_changed: Vec<String>,
    /// Data the downgrade destroys (reported, not a failure).
    pub destructive: Vec<String>,
    pub isolation_checked: Vec<String>,
    pub isolation_failures: Vec<String>,
    pub locks_up: Vec<String>,
    pub locks_down: Vec<String>,
    #[serde(skip)]
    pub schema: SchemaSnapshot,
    /// A migration that could not run: names the file, statement and error.
    pub error: Option<String>,
}

impl RevisionReport {
    pub fn passed(&self) -> bool {
        self.error.is_none()
            && self.schema_roundtrip.is_none()
            && self.data_changed.is_empty()
            && self.isolation_failures.is_empty()
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    pub server_version: String,
    pub revisions: Vec<RevisionReport>,
    /// Whole-chain and graph failures (heads, base->head, head->base, merges).
    pub failures: Vec<String>,
    pub warnings: Vec<String>,
    pub total_ms: u64,
}

impl VerifyReport {
    pub fn passed(&self) -> bool {
        self.failures.is_empty() && self.revisions.iter().all(RevisionReport::passed)
    }
}

/// Live progress, one line per step.
pub type Progress<'a> = &'a mut (dyn FnMut(&str) + Send);

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("verify's own query failed: {0}")]
    Db(#[from] postgres::Error),
}

/// Runs every check of `graph` on a new throwaway cluster.
pub fn verify(graph: &RevisionGraph, progress: Progress<'_>) -> Result<VerifyReport, VerifyError> {
    let started = Instant::now();
    let cluster = TempCluster::start()?;
    let mut report = VerifyReport {
        server_version: cluster.binaries().version().to_string(),
        ..VerifyReport::default()
    };
    let heads = graph.heads();
    if heads.len() > 1 && !graph.declares_branches() {
        let paths: Vec<String> = heads
            .iter()
            .map(|h| {
                graph
                    .get(h)
                    .map(|m| m.dir.display().to_string())
                    .unwrap_or_default()
            })
            .collect();
        report.failures.push(format!(
            "the graph has {} heads ({}) and declares no branches: merge them with `cargo xtask migrate merge {}`",
            heads.len(),
            paths.join(", "),
            heads.join(" ")
        ));
    }
    cluster.create_database("verify_stairway", None)?;
    cluster.create_database("verify_chain", None)?;

    // base -> head -> base in one go runs on the second core while the stairway runs.
    let chain_client = cluster.client("verify_chain")?;
    let chain = std::thread::scope(|scope| {
        let chain = scope.spawn(|| one_go(graph, chain_client));
        let mut client = cluster.client("verify_stairway")?;
        stairway(graph, &mut client, &mut report, progress)?;
        Ok::<_, VerifyError>(chain.join().expect("the one-go thread does not panic"))
    })?;
    let (head_snapshot, teardown) = chain?;

    if let Some(last) = report.revisions.last().filter(|r| r.error.is_none()) {
        if report.revisions.len() == graph.migrations().len() {
            if let Some(diff) = last.schema.diff(&head_snapshot) {
                report.failures.push(format!(
                    "base -> head in one go differs from the stairway's head:\n{diff}"
                ));
            }
        }
    }
    if let Some(left) = teardown {
        report
            .failures
            .push(format!("head -> base left objects behind:\n{left}"));
    }
    merges(graph, &cluster, &mut report, progress)?;
    report.total_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

fn options() -> RunOptions {
    RunOptions {
        capture_locks: true,
        ..RunOptions::default()
    }
}

fn stairway(
    graph: &RevisionGraph,
    client: &mut Client,
    report: &mut VerifyReport,
    progress: Progress<'_>,
) -> Result<(), VerifyError> {
    let mut previous = SchemaSnapshot::capture(client)?;
    for migration in graph.migrations() {
        let revision = migration.revision.clone();
        let mut rev = RevisionReport {
            revision: revision.clone(),
            message: migration.message.clone(),
            dir: migration.dir.display().to_string(),
            ..RevisionReport::default()
        };
        seed::seed_empty_tables(client)?;
        let before_data = TableData::capture(client)?;

        progress(&format!("{revision} up"));
        let up = run(client, graph, |m| m.upgrade(&revision));
        let up = match up {
            Ok(up) => up,
            Err(err) => {
                rev.error = Some(err);
                report.revisions.push(rev);
                return Ok(());
            }
        };
        rev.up_ms = total_ms(&up);
        rev.locks_up = up.iter().flat_map(|s| s.locks.clone()).collect();
        let after_up = SchemaSnapshot::capture(client)?;
        let up_data = TableData::capture(client)?;
        rev.data_changed.extend(
            before_data
                .compare(&up_data)
                .changed
                .into_iter()
                .map(|c| format!("up: {c}")),
        );

        seed::seed_empty_tables(client)?;
        let isolation = isolation::check(client)?;
        rev.isolation_checked = isolation.checked;
        rev.isolation_failures = isolation.failures;
        for warning in isolation.warnings {
            let warning = format!("at {revision}: {warning}");
            if !report
                .warnings
                .iter()
                .any(|w| w.split_once(": ").map(|x| x.1) == warning.split_once(": ").map(|x| x.1))
            {
                report.warnings.push(warning);
            }
        }
        let seeded = TableData::capture(client)?;

        progress(&format!("{revision} down"));
        match run(client, graph, |m| m.unapply(&revision)) {
            Ok(down) => {
                rev.down_ms = total_ms(&down);
                rev.locks_down = down.iter().flat_map(|s| s.locks.clone()).collect();
                let after_down = SchemaSnapshot::capture(client)?;
                if let Some(diff) = previous.diff(&after_down) {
                    if previous.with_columns_sorted() == after_down.with_columns_sorted() {
                        // PostgreSQL can only append a column: a downgrade that re-adds
                        // a dropped one cannot put it back in place. Worth knowing
                        // (SELECT * and COPY see the new order), not a broken downgrade.
                        report.warnings.push(format!(
                            "at {revision}: the downgrade re-adds column(s) at the end of their table, not in their old place:\n{diff}"
                        ));
                    } else {
                        rev.schema_roundtrip = Some(format!(
                            "downgrade of {revision} ({}) does not restore the previous schema:\n{diff}",
                            migration.path(crate::Direction::Down).display()
                        ));
                    }
                }
                let diff = seeded.compare(&TableData::capture(client)?);
                rev.data_changed
                    .extend(diff.changed.into_iter().map(|c| format!("down: {c}")));
                rev.destructive = diff.lost;
            }
            Err(err) => {
                rev.error = Some(err);
                report.revisions.push(rev);
                return Ok(());
            }
        }

        progress(&format!("{revision} up again"));
        if let Err(err) = run(client, graph, |m| m.upgrade(&revision)) {
            rev.error = Some(format!("upgrading again after the downgrade failed: {err}"));
            report.revisions.push(rev);
            return Ok(());
        }
        let again = SchemaSnapshot::capture(client)?;
        if rev.schema_roundtrip.is_none() {
            if let Some(diff) = after_up.diff(&again) {
                rev.schema_roundtrip = Some(format!(
                    "upgrading {revision} again gives a different schema:\n{diff}"
                ));
            }
        }
        rev.schema = after_up;
        previous = again;
        report.revisions.push(rev);
    }
    Ok(())
}

/// base -> head, then head -> base: the head's schema, and what the teardown left.
fn one_go(
    graph: &RevisionGraph,
    mut client: Client,
) -> Result<(SchemaSnapshot, Option<String>), VerifyError> {
    if let Err(err) = run(&mut client, graph, |m| m.upgrade("heads")) {
        return Ok((
            SchemaSnapshot::default(),
            Some(format!("base -> head failed: {err}")),
        ));
    }
    let head = SchemaSnapshot::capture(&mut client)?;
    if let Err(err) = run(&mut client, graph, |m| m.downgrade("base", true)) {
        return Ok((head, Some(format!("head -> base failed: {err}"))));
    }
    let left = SchemaSnapshot::capture(&mut client)?;
    Ok((head, (!left.is_empty()).then(|| left.to_string())))
}

/// How many orders of applying merged branches are tried: their number grows
/// factorially with the branches, and each one is a full upgrade on its own database.
const MERGE_ORDERS: usize = 12;

/// The first `MERGE_ORDERS` orders of applying the branches that a merge joins must
/// converge.
fn merges(
    graph: &RevisionGraph,
    cluster: &TempCluster,
    report: &mut VerifyReport,
    progress: Progress<'_>,
) -> Result<(), VerifyError> {
    let has_merge = graph.migrations().iter().any(|m| m.parents.len() > 1);
    if !has_merge {
        return Ok(());
    }
    let orders = topological_orders(graph, MERGE_ORDERS);
    let mut results: BTreeMap<Vec<String>, SchemaSnapshot> = BTreeMap::new();
    for (n, order) in orders.iter().enumerate() {
        progress(&format!("merge order {}/{}", n + 1, orders.len()));
        let name = format!("verify_order_{n}");
        cluster.create_database(&name, None)?;
        let mut client = cluster.client(&name)?;
        for revision in order {
            if let Err(err) = run(&mut client, graph, |m| m.upgrade(revision)) {
                report.failures.push(format!(
                    "applying in the order {} failed: {err}",
                    order.join(" -> ")
                ));
                return Ok(());
            }
        }
        results.insert(order.clone(), SchemaSnapshot::capture(&mut client)?);
    }
    let mut iter = results.iter();
    if let Some((first_order, first)) = iter.next() {
        for (order, snapshot) in iter {
            if let Some(diff) = first.diff(snapshot) {
                report.failures.push(format!(
                    "merged branches do not converge: {} vs {}:\n{diff}",
                    first_order.join(" -> "),
                    order.join(" -> ")
                ));
            }
        }
    }
    Ok(())
}

/// Up to `limit` distinct topological orders of the whole graph.
fn topological_orders(graph: &RevisionGraph, limit: usize) -> Vec<Vec<String>> {
    fn extend(
        graph: &RevisionGraph,
        done: &mut Vec<String>,
        out: &mut Vec<Vec<String>>,
        limit: usize,
    ) {
        if out.len() >= limit {
            return;
        }
        if done.len() == graph.migrations().len() {
            out.push(done.clone());
            return;
        }
        for m in graph.migrations() {
            if !done.contains(&m.revision) && m.parents.iter().all(|p| done.contains(p)) {
                done.push(m.revision.clone());
                extend(graph, done, out, limit);
                done.pop();
            }
        }
    }
    let mut out = Vec::new();
    extend(graph, &mut Vec::new(), &mut out, limit);
    out
}

fn run(
    client: &mut Client,
    graph: &RevisionGraph,
    f: impl FnOnce(&mut Migrator<'_>) -> Result<Vec<StepReport>, crate::runner::MigrateError>,
) -> Result<Vec<StepReport>, String> {
    let mut migrator = Migrator::new(client, graph, options());
    f(&mut migrator).map_err(|e| e.to_string())
}

fn total_ms(steps: &[StepReport]) -> u64 {
    steps.iter().map(|s| s.elapsed.as_millis() as u64).sum()
}

//! Which revision an existing schema looks like, for "relation already exists" and
//! `stamp` advice: replays the table names each revision creates and drops.

use std::collections::BTreeSet;

use postgres::GenericClient;

use crate::graph::RevisionGraph;
use crate::migration::Direction;

/// Tables (in the search path's first schema) other than the version tables.
pub fn existing_tables(
    client: &mut impl GenericClient,
) -> Result<BTreeSet<String>, postgres::Error> {
    let rows = client.query(
        "SELECT c.relname FROM pg_class c
          WHERE c.relkind IN ('r', 'p') AND c.relnamespace = current_schema()::regnamespace
            AND c.relname NOT IN ('alembic_version', 'alembic_version_history')",
        &[],
    )?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The revisions (oldest first) after which exactly `tables` exist, by table names.
pub fn revisions_with_tables(graph: &RevisionGraph, tables: &BTreeSet<String>) -> Vec<String> {
    let mut present = BTreeSet::new();
    let mut matches = Vec::new();
    for migration in graph.migrations() {
        for statement in migration.statements(Direction::Up) {
            let words: Vec<String> = statement
                .sql
                .lines()
                .filter(|l| !l.trim_start().starts_with("--"))
                .flat_map(|l| l.split_whitespace())
                .take(6)
                .map(|w| {
                    w.trim_matches(|c| c == '"' || c == '(' || c == ';')
                        .to_lowercase()
                })
                .collect();
            let words: Vec<&str> = words.iter().map(String::as_str).collect();
            match words.as_slice() {
                ["create", "table", "if", "not", "exists", name, ..]
                | ["create", "table", name, ..] => {
                    present.insert(name.to_string());
                }
                ["drop", "table", "if", "exists", name, ..] | ["drop", "table", name, ..] => {
                    present.remove(*name);
                }
                _ => {}
            }
        }
        if &present == tables {
            matches.push(migration.revision.clone());
        }
    }
    matches
}

/// The outcome of comparing a live schema with every revision's schema.
#[derive(Debug)]
pub enum Detection {
    /// The live schema equals the schema right after this revision.
    Exact(String),
    /// No revision matches; the closest one, and how the live schema differs from it.
    Closest { revision: String, diff: String },
}

/// Builds every revision in a throwaway cluster and compares each with `live`.
pub fn detect_revision(
    graph: &RevisionGraph,
    live: &crate::snapshot::SchemaSnapshot,
) -> Result<Detection, DetectError> {
    let cluster = crate::cluster::TempCluster::start()?;
    cluster.create_database("detect", None)?;
    let mut client = cluster.client("detect")?;
    let mut best: Option<(usize, String, String)> = None;
    let base = crate::snapshot::SchemaSnapshot::capture(&mut client)?;
    if &base == live {
        return Ok(Detection::Exact("base".into()));
    }
    for migration in graph.migrations() {
        let mut migrator =
            crate::runner::Migrator::new(&mut client, graph, crate::runner::RunOptions::default());
        migrator.upgrade(&migration.revision)?;
        drop(migrator);
        let snapshot = crate::snapshot::SchemaSnapshot::capture(&mut client)?;
        if &snapshot == live {
            return Ok(Detection::Exact(migration.revision.clone()));
        }
        let distance = snapshot.distance(live);
        if best.as_ref().is_none_or(|(d, _, _)| distance < *d) {
            let diff = snapshot.diff(live).unwrap_or_default();
            best = Some((distance, migration.revision.clone(), diff));
        }
    }
    let (_, revision, diff) = best.unwrap_or((0, "base".into(), String::new()));
    Ok(Detection::Closest { revision, diff })
}

#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error("reading the schema failed: {0}")]
    Db(#[from] postgres::Error),
    #[error(transparent)]
    Migrate(#[from] crate::runner::MigrateError),
}

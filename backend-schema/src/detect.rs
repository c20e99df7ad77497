//! Which revision a live schema equals (`migrate stamp --detect`): every revision is
//! built in a throwaway cluster and its catalogs compared with the live ones.

use crate::graph::RevisionGraph;

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
    #[error("reading the schema failed")]
    Db(#[from] postgres::Error),
    #[error(transparent)]
    Migrate(#[from] crate::runner::MigrateError),
}

//! Schema files behind the migrations: a migration written by hand while the schema files
//! were left as they were. The files then equal an earlier revision of the chain, and
//! the way forward is to write the files from head, not a migration that undoes the work.

use super::{DeclarativeError, SchemaPair};
use crate::runner::{MigrateError, Migrator, RunOptions};
use crate::snapshot::SchemaSnapshot;
use crate::RevisionGraph;

/// Database of the pair's cluster the earlier revisions are built in.
const EARLIER_DB: &str = "earlier_revisions";

/// The schema files equal an earlier revision of the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesBehind {
    /// The newest revision (short of head) whose schema the files describe.
    pub revision: String,
    /// The revisions after it, up to head, that the files do not describe yet.
    pub ahead: Vec<String>,
}

/// Whether the declared schema equals the schema of a revision before head (column
/// order aside, as `compare` treats it): built one revision at a time in the pair's
/// cluster. `None` when it equals none of them, or when it equals head.
pub fn files_behind(
    graph: &RevisionGraph,
    pair: &SchemaPair,
) -> Result<Option<FilesBehind>, DeclarativeError> {
    let declared = pair.declared.with_columns_sorted();
    if pair.head.with_columns_sorted() == declared {
        return Ok(None);
    }
    pair.cluster.create_database(EARLIER_DB, None)?;
    let mut client = pair.cluster.client(EARLIER_DB)?;
    let mut found = None;
    for migration in graph.migrations() {
        if graph.is_head(&migration.revision) {
            continue;
        }
        Migrator::new(&mut client, graph, RunOptions::default()).upgrade(&migration.revision)?;
        let snapshot = SchemaSnapshot::capture(&mut client).map_err(DeclarativeError::Catalog)?;
        if snapshot.with_columns_sorted() == declared {
            // The newest match wins: a migration and its revert give equal schemas.
            found = Some(migration.revision.clone());
        }
    }
    let Some(revision) = found else {
        return Ok(None);
    };
    let ahead = graph
        .upgrade_plan(std::slice::from_ref(&revision), "heads")
        .map_err(MigrateError::from)?
        .into_iter()
        .map(|step| step.revision)
        .collect();
    Ok(Some(FilesBehind { revision, ahead }))
}

//! The declarative schema: `backend-schema/schema/*.sql` describe the database as it
//! should be. Loading them, comparing them with the head of the migration chain, and
//! computing the migration between the two (`plan`), split into migrations (`phases`)
//! and proven on rows (`prove`), live here.

pub mod behind;
mod load;
pub mod phases;
pub mod plan;
pub mod prove;
pub mod write;

pub use load::load;
pub use prove::{prove, ProofError};

use std::path::{Path, PathBuf};

use crate::catalog::{Catalog, Objects};
use crate::cluster::TempCluster;
use crate::runner::{MigrateError, Migrator, RunOptions};
use crate::snapshot::SchemaSnapshot;
use crate::RevisionGraph;

/// The declarative schema's directory, relative to the workspace root.
pub const SCHEMA_DIR: &str = "backend-schema/schema";

#[derive(Debug, thiserror::Error)]
pub enum DeclarativeError {
    #[error("cannot read the declarative schema in {}: {source}", dir.display())]
    Read {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the declarative schema in {} has no .sql files", dir.display())]
    Empty { dir: PathBuf },
    #[error("{}", failures.iter().map(|(path, message)| format!("{}: {message}", path.display())).collect::<Vec<_>>().join("\n"))]
    Load { failures: Vec<(PathBuf, String)> },
    #[error(transparent)]
    Cluster(#[from] crate::ClusterError),
    #[error(transparent)]
    Migrate(#[from] MigrateError),
    #[error("reading the catalogs failed")]
    Catalog(#[source] postgres::Error),
    #[error("{action} for {} failed: {source}", path.display())]
    Transaction {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: postgres::Error,
    },
    #[error(transparent)]
    Plan(#[from] plan::PlanError),
}

/// The `.sql` files of the declarative schema, sorted by name.
pub fn read_schema(dir: &Path) -> Result<Vec<(PathBuf, String)>, DeclarativeError> {
    let read = |source| DeclarativeError::Read {
        dir: dir.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read)? {
        let path = entry.map_err(read)?.path();
        if path.extension().is_some_and(|e| e == "sql") {
            let text = std::fs::read_to_string(&path).map_err(read)?;
            files.push((path, crate::migration::normalise_text(&text)));
        }
    }
    if files.is_empty() {
        return Err(DeclarativeError::Empty {
            dir: dir.to_path_buf(),
        });
    }
    files.sort();
    Ok(files)
}

/// The chain's head and the declared schema, each built in a database of one
/// throwaway cluster, with their snapshots and catalogs.
pub struct SchemaPair {
    pub cluster: TempCluster,
    pub head: SchemaSnapshot,
    pub declared: SchemaSnapshot,
    pub head_catalog: Catalog,
    pub declared_catalog: Catalog,
}

/// Database names inside the pair's cluster.
pub const HEAD_DB: &str = "chain_head";
pub const DECLARED_DB: &str = "declared";

pub fn build_pair(
    graph: &RevisionGraph,
    schema: &[(PathBuf, String)],
) -> Result<SchemaPair, DeclarativeError> {
    let cluster = TempCluster::start()?;
    cluster.create_database(HEAD_DB, None)?;
    cluster.create_database(DECLARED_DB, None)?;
    let (head, head_catalog) = {
        let mut client = cluster.client(HEAD_DB)?;
        Migrator::new(&mut client, graph, RunOptions::default()).upgrade("heads")?;
        read_both(&mut client)?
    };
    let (declared, declared_catalog) = {
        let mut client = cluster.client(DECLARED_DB)?;
        load(schema, &mut client)?;
        read_both(&mut client)?
    };
    Ok(SchemaPair {
        cluster,
        head,
        declared,
        head_catalog,
        declared_catalog,
    })
}

/// The snapshot and the planner's catalog of one database, from one read.
fn read_both(client: &mut postgres::Client) -> Result<(SchemaSnapshot, Catalog), DeclarativeError> {
    let objects = Objects::read(client).map_err(DeclarativeError::Catalog)?;
    Ok((SchemaSnapshot::render(&objects), Catalog::public(&objects)))
}

/// How the declared schema compares with the chain's head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Comparison {
    Equal,
    /// Equal but for the order of columns in these tables, which PostgreSQL cannot
    /// change: not part of the declared schema.
    ColumnOrder {
        tables: Vec<String>,
    },
    Differs {
        diff: String,
    },
}

impl SchemaPair {
    pub fn compare(&self) -> Comparison {
        if self.head.diff(&self.declared).is_none() {
            return Comparison::Equal;
        }
        let (head, declared) = (
            self.head.with_columns_sorted(),
            self.declared.with_columns_sorted(),
        );
        match head.diff(&declared) {
            Some(diff) => Comparison::Differs { diff },
            None => Comparison::ColumnOrder {
                tables: self
                    .head
                    .objects
                    .iter()
                    .filter(|(key, lines)| self.declared.objects.get(*key) != Some(lines))
                    .map(|(key, _)| key.strip_prefix("table ").unwrap_or(key).to_string())
                    .collect(),
            },
        }
    }
}

/// The note `check` and autogenerate print, once, when only column order differs.
pub fn column_order_note(tables: &[String]) -> String {
    format!(
        "the columns of {} are in another order in the schema files than in the database; \
         PostgreSQL cannot reorder columns (it adds them at the end), so column order is not part of the declared schema",
        tables.join(", ")
    )
}

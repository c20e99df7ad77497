//! The declarative schema: `backend-schema/schema/*.sql` describe the database as it
//! should be. Loading them, comparing them with the head of the migration chain, and
//! computing the migration between the two (`plan`) live here.

pub mod plan;

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
    #[error("reading the catalogs failed: {0}")]
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

/// Runs the schema files into an empty database. Files may refer to each other in any
/// order: a file that needs a table or type another file creates is retried after it.
pub fn load(
    files: &[(PathBuf, String)],
    client: &mut postgres::Client,
) -> Result<(), DeclarativeError> {
    let mut pending: Vec<&(PathBuf, String)> = files.iter().collect();
    loop {
        let mut failures = Vec::new();
        let before = pending.len();
        let mut waiting = Vec::new();
        for file in pending {
            let transaction = |action| {
                move |source| DeclarativeError::Transaction {
                    action,
                    path: file.0.clone(),
                    source,
                }
            };
            let mut tx = client
                .transaction()
                .map_err(transaction("beginning the transaction"))?;
            match tx.batch_execute(&file.1) {
                Ok(()) => tx
                    .commit()
                    .map_err(transaction("committing the transaction"))?,
                Err(err) => {
                    drop(tx);
                    let waits_for_another_file = err.code().is_some_and(|code| {
                        [
                            postgres::error::SqlState::UNDEFINED_TABLE,
                            postgres::error::SqlState::UNDEFINED_OBJECT,
                        ]
                        .contains(code)
                    });
                    if !waits_for_another_file {
                        return Err(DeclarativeError::Load {
                            failures: vec![(file.0.clone(), describe(&err, &file.1))],
                        });
                    }
                    failures.push((file.0.clone(), describe(&err, &file.1)));
                    waiting.push(file);
                }
            }
        }
        if waiting.is_empty() {
            return Ok(());
        }
        if waiting.len() == before {
            return Err(DeclarativeError::Load { failures });
        }
        pending = waiting;
    }
}

/// PostgreSQL's message with the line it points at.
fn describe(err: &postgres::Error, text: &str) -> String {
    let Some(db) = err.as_db_error() else {
        return err.to_string();
    };
    let line = crate::sql_split::error_location(text, db)
        .map(|(lines_down, _)| format!("line {}: ", lines_down + 1))
        .unwrap_or_default();
    let hint = db
        .hint()
        .map(|h| format!(" (hint: {h})"))
        .unwrap_or_default();
    format!("{line}{}{hint}", db.message())
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

/// Where a proof of a new migration went wrong.
#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    #[error("{step}:\n{diff}")]
    Mismatch { step: &'static str, diff: String },
    #[error(transparent)]
    Setup(#[from] DeclarativeError),
}

/// Applies the chain's `new_revisions` new migrations to a copy of the old head: they
/// must give the declared schema, their downgrades the old head again, and a second
/// upgrade the declared schema.
pub fn prove(
    pair: &SchemaPair,
    graph: &RevisionGraph,
    new_revisions: usize,
) -> Result<(), ProofError> {
    let setup = |err: MigrateError| ProofError::Setup(err.into());
    let db = |err: postgres::Error| ProofError::Setup(DeclarativeError::Catalog(err));
    pair.cluster
        .create_database("proof", Some(HEAD_DB))
        .map_err(|e| ProofError::Setup(e.into()))?;
    let mut client = pair
        .cluster
        .client("proof")
        .map_err(|e| ProofError::Setup(e.into()))?;
    // Columns a downgrade re-adds come back last (the file says so), so after it only
    // the order of columns may differ from the old head.
    let expect = |client: &mut postgres::Client, want: &SchemaSnapshot, any_order: bool, step| {
        let got = SchemaSnapshot::capture(client).map_err(db)?;
        let diff = match any_order {
            true => got.with_columns_sorted().diff(&want.with_columns_sorted()),
            false => got.diff(want),
        };
        diff.map_or(Ok(()), |diff| Err(ProofError::Mismatch { step, diff }))
    };
    Migrator::new(&mut client, graph, RunOptions::default())
        .upgrade("heads")
        .map_err(setup)?;
    expect(
        &mut client,
        &pair.declared,
        false,
        "after the upgrade the schema is not the declared one",
    )?;
    Migrator::new(&mut client, graph, RunOptions::default())
        .downgrade(&format!("-{new_revisions}"), true)
        .map_err(setup)?;
    expect(
        &mut client,
        &pair.head,
        true,
        "after the downgrade the schema is not the old head",
    )?;
    Migrator::new(&mut client, graph, RunOptions::default())
        .upgrade("heads")
        .map_err(setup)?;
    expect(
        &mut client,
        &pair.declared,
        false,
        "after upgrading again the schema is not the declared one",
    )?;
    Ok(())
}

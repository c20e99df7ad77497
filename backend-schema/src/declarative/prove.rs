//! The proof of new migrations before they are kept: on a copy of head seeded with rows
//! in every table (as `verify` seeds), upgrade (the declared schema), downgrade (head
//! again), upgrade (the declared schema again). A change that existing rows break (a
//! new UNIQUE, a CHECK, NOT NULL) fails here, at generation time, not in production.

use super::{DeclarativeError, SchemaPair, HEAD_DB};
use crate::runner::{MigrateError, Migrator, RunOptions};
use crate::snapshot::SchemaSnapshot;
use crate::RevisionGraph;

/// Where a proof of new migrations went wrong.
#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    #[error("{step}:\n{diff}")]
    Mismatch { step: &'static str, diff: String },
    #[error(
        "the {direction} fails on a copy of head with rows in every table (seeded as `verify` seeds them): {source}\n\
         rows that exist today break this change; fix the schema files (a default, a looser constraint), \
         or clean the rows up first with a migration of its own (expand, backfill, contract)"
    )]
    Rows {
        direction: &'static str,
        /// Boxed: a migration error is large, and this one is rare.
        #[source]
        source: Box<MigrateError>,
    },
    #[error(transparent)]
    Setup(#[from] DeclarativeError),
}

/// Database inside the pair's cluster where the proof runs.
const PROOF_DB: &str = "proof";

/// Applies the chain's `new_revisions` new migrations to a seeded copy of the old head:
/// they must give the declared schema, their downgrades the old head again, and a
/// second upgrade the declared schema. Column order is not compared: PostgreSQL adds
/// columns at the end, whatever the files say.
pub fn prove(
    pair: &SchemaPair,
    graph: &RevisionGraph,
    new_revisions: usize,
) -> Result<(), ProofError> {
    let db = |err: postgres::Error| ProofError::Setup(DeclarativeError::Catalog(err));
    let cluster = |err: crate::ClusterError| ProofError::Setup(err.into());
    pair.cluster
        .create_database(PROOF_DB, Some(HEAD_DB))
        .map_err(cluster)?;
    let mut client = pair.cluster.client(PROOF_DB).map_err(cluster)?;
    crate::verify::seed::seed_empty_tables(&mut client).map_err(db)?;
    let expect = |client: &mut postgres::Client, want: &SchemaSnapshot, step| {
        let got = SchemaSnapshot::capture(client).map_err(db)?;
        match got.with_columns_sorted().diff(&want.with_columns_sorted()) {
            None => Ok(()),
            Some(diff) => Err(ProofError::Mismatch { step, diff }),
        }
    };
    let rows = |direction| {
        move |source| ProofError::Rows {
            direction,
            source: Box::new(source),
        }
    };
    Migrator::new(&mut client, graph, RunOptions::default())
        .upgrade("heads")
        .map_err(rows("upgrade"))?;
    expect(
        &mut client,
        &pair.declared,
        "after the upgrade the schema is not the declared one",
    )?;
    Migrator::new(&mut client, graph, RunOptions::default())
        .downgrade(&format!("-{new_revisions}"), true)
        .map_err(rows("downgrade"))?;
    expect(
        &mut client,
        &pair.head,
        "after the downgrade the schema is not the old head",
    )?;
    Migrator::new(&mut client, graph, RunOptions::default())
        .upgrade("heads")
        .map_err(rows("second upgrade"))?;
    expect(
        &mut client,
        &pair.declared,
        "after upgrading again the schema is not the declared one",
    )?;
    Ok(())
}

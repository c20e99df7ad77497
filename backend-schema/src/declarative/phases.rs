//! A plan as the migrations it becomes, one per phase, each with its downgrade. The
//! phases are applied one after the other to a copy of head, so every downgrade is
//! planned from the schema its migration really leaves; and what the applied plan
//! still lacks of the declared schema (views, functions, triggers, grants...) is
//! refused by name before anything is written.

use super::plan::{self, Phase, Plan, Renames};
use super::{DeclarativeError, SchemaPair, HEAD_DB};
use crate::catalog::Catalog;
use crate::snapshot::SchemaSnapshot;

/// One migration of a change.
#[derive(Debug, Clone)]
pub struct PlannedMigration {
    pub phase: Phase,
    pub up: Plan,
    pub down: Plan,
}

impl PlannedMigration {
    /// Both directions can run in one transaction.
    pub fn transactional(&self) -> bool {
        self.up.transactional() && self.down.transactional()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PhaseError {
    #[error(
        "autogenerate does not write these differences between the migrations' head and the schema files \
         (it writes tables, columns, keys, checks, foreign keys, exclusion constraints, indexes, enums, row-level security, policies, views, functions, triggers and comments on them; \
         not materialized views, triggers on views, standalone sequences, column collations, grants, extensions or other schemas):\n{diff}\
         nothing was written: write a migration for these by hand (`cargo xtask migrate revision -m MSG`), then run autogenerate again for the rest"
    )]
    Uncovered { diff: String },
    #[error("the generated statement failed on an empty copy of head ({phase}):\n    {statement}\n{message}")]
    Apply {
        phase: &'static str,
        statement: String,
        message: String,
    },
    #[error(transparent)]
    Setup(#[from] DeclarativeError),
}

/// Database inside the pair's cluster where the phases are applied.
const STAGING_DB: &str = "phases";

/// The migrations that carry out `whole` (the plan from the pair's head to its declared
/// schema), in order; an error when applying them would not give the declared schema.
pub fn migrations(
    pair: &SchemaPair,
    whole: &Plan,
    renames: &Renames,
) -> Result<Vec<PlannedMigration>, PhaseError> {
    // Extensions are written by hand, and a generated statement may need one (an
    // exclusion constraint's operator class, a type): refused by name first, or the
    // refusal would be that statement failing for want of it.
    if let Some(diff) = extensions(&pair.head).diff(&extensions(&pair.declared)) {
        return Err(PhaseError::Uncovered { diff });
    }
    let setup = |e: crate::ClusterError| PhaseError::Setup(e.into());
    let catalog = |e: postgres::Error| PhaseError::Setup(DeclarativeError::Catalog(e));
    pair.cluster
        .create_database(STAGING_DB, Some(HEAD_DB))
        .map_err(setup)?;
    let mut client = pair.cluster.client(STAGING_DB).map_err(setup)?;
    let mut before = pair.head_catalog.clone();
    let mut migrations = Vec::new();
    for phase in whole.phases() {
        let up = whole.only(phase);
        apply(&mut client, phase, &up)?;
        let after = Catalog::capture(&mut client).map_err(catalog)?;
        let back = match phase {
            Phase::Ddl => renames.reversed(),
            _ => Renames::default(),
        };
        let mut down = plan::plan_downgrade(&after, &before, &back);
        if phase.transactional() {
            down = down.in_one_transaction();
        }
        migrations.push(PlannedMigration { phase, up, down });
        before = after;
    }
    let reached = SchemaSnapshot::capture(&mut client).map_err(catalog)?;
    if let Some(diff) = reached
        .with_columns_sorted()
        .diff(&pair.declared.with_columns_sorted())
    {
        return Err(PhaseError::Uncovered { diff });
    }
    Ok(migrations)
}

/// The extensions of a schema, alone.
fn extensions(schema: &SchemaSnapshot) -> SchemaSnapshot {
    SchemaSnapshot {
        objects: schema
            .objects
            .iter()
            .filter(|(key, _)| key.starts_with("extension "))
            .map(|(key, lines)| (key.clone(), lines.clone()))
            .collect(),
    }
}

/// Runs one phase's statements as its migration will: in one transaction, or each on
/// its own.
fn apply(client: &mut postgres::Client, phase: Phase, up: &Plan) -> Result<(), PhaseError> {
    let failed = |statement: &str, err: postgres::Error| PhaseError::Apply {
        phase: phase.title(),
        statement: statement.to_string(),
        message: err
            .as_db_error()
            .map_or(err.to_string(), |db| db.message().to_string()),
    };
    if phase.transactional() {
        let mut tx = client.transaction().map_err(|e| failed("BEGIN", e))?;
        for step in &up.steps {
            tx.batch_execute(&step.sql)
                .map_err(|e| failed(&step.sql, e))?;
        }
        tx.commit().map_err(|e| failed("COMMIT", e))?;
    } else {
        for step in &up.steps {
            client
                .batch_execute(&step.sql)
                .map_err(|e| failed(&step.sql, e))?;
        }
    }
    Ok(())
}

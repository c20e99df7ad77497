//! What a downgrade would destroy, found by running it in a transaction that is rolled
//! back, and INVALID indexes left by failed concurrent index builds.

use std::collections::BTreeMap;

use postgres::{Client, GenericClient};

use super::error::{Loss, MigrateError};
use super::{db, execute_file, set_timeouts, RunOptions};
use crate::catalog::{column_names, user_tables, UserTable};
use crate::graph::{RevisionGraph, Step};
use crate::sql::{display_name, quote_ident, quote_qualified};

/// Columns of every user table but our version tables, by schema and table.
fn columns(
    client: &mut impl GenericClient,
) -> Result<BTreeMap<(String, String), Vec<String>>, postgres::Error> {
    let tables: Vec<UserTable> = user_tables(client)?
        .into_iter()
        .filter(|t| !t.is_version_table())
        .collect();
    let mut columns = column_names(client, &tables)?;
    Ok(tables
        .into_iter()
        .filter_map(|t| Some(((t.schema, t.name), columns.remove(&t.oid)?)))
        .collect())
}

pub(crate) fn data_loss(
    client: &mut Client,
    graph: &RevisionGraph,
    plan: &[Step],
    options: &RunOptions,
) -> Result<Vec<Loss>, MigrateError> {
    let mut tx = client.transaction().map_err(db("beginning the dry run"))?;
    set_timeouts(&mut tx, None, options, true).map_err(db("setting lock_timeout"))?;
    let before = columns(&mut tx).map_err(db("listing columns"))?;
    let outcome =
        "found while checking what the downgrade would destroy; nothing was changed".to_string();
    for step in plan {
        let migration = graph.get(&step.revision).expect("planned revisions exist");
        // Non-transactional steps cannot be tried inside a transaction.
        if migration.transactional {
            execute_file(&mut tx, step, migration, &outcome)?;
        }
    }
    let after = columns(&mut tx).map_err(db("listing columns"))?;
    tx.rollback().map_err(db("rolling back the dry run"))?;

    let mut losses = Vec::new();
    for ((schema, table), cols) in &before {
        let qualified = quote_qualified(schema, table);
        let name = display_name(schema, table);
        match after.get(&(schema.clone(), table.clone())) {
            None => {
                let sql = format!("SELECT count(*) FROM {qualified}");
                let rows: i64 = client
                    .query_one(&sql, &[])
                    .map_err(db("counting rows"))?
                    .get(0);
                if rows > 0 {
                    losses.push(Loss::Table { table: name, rows });
                }
            }
            Some(kept) => {
                for col in cols.iter().filter(|c| !kept.contains(c)) {
                    let sql = format!("SELECT count({}) FROM {qualified}", quote_ident(col));
                    let values: i64 = client
                        .query_one(&sql, &[])
                        .map_err(db("counting values"))?
                        .get(0);
                    if values > 0 {
                        losses.push(Loss::Column {
                            table: name.clone(),
                            column: col.clone(),
                            values,
                        });
                    }
                }
            }
        }
    }
    Ok(losses)
}

/// Indexes a failed `CREATE INDEX CONCURRENTLY` left INVALID.
pub(crate) fn invalid_indexes(
    client: &mut impl GenericClient,
    prepared: Option<&mut crate::prepared::Prepared>,
) -> Result<Vec<String>, postgres::Error> {
    let rows = crate::prepared::query(
        client,
        prepared,
        "SELECT n.nspname || '.' || c.relname
           FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE NOT i.indisvalid AND n.nspname NOT IN ('pg_catalog', 'information_schema')
          ORDER BY 1",
        &[],
    )?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

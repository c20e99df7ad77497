//! Realistic rows for two tenants in every table, generated from the catalog: values by
//! column type, foreign keys pointing at existing rows (the same tenant's when the
//! referenced table has tenants), and the constraints real schemas have respected or
//! worked around. A table that cannot be seeded is named with the reason, never fatal:
//! verify checks the rest.

mod catalog;
mod values;

use std::collections::{BTreeMap, BTreeSet};

use postgres::GenericClient;
use serde::Serialize;

pub use values::{row_uuid, tenant_uuid};

use crate::catalog::UserTable;
use crate::prepared::Prepared;
use crate::sql::quote_ident;
use crate::verify::data::TableData;
use catalog::{ForeignKey, SeedTable};
use values::{value_for, Value};

/// Tenants seeded: rows belong to tenant 0 ("A") or 1 ("B").
pub const TENANTS: usize = 2;
/// Rows per tenant in every table (fewer where a UNIQUE constraint allows fewer).
pub const ROWS_PER_TENANT: usize = 2;

/// How many times one row is retried with values taken from the constraint it broke.
const ATTEMPTS_PER_ROW: usize = 12;

/// What one seeding pass could not do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seeding {
    /// Tables given rows by this pass.
    pub seeded: Vec<String>,
    pub unseedable: Vec<Unseedable>,
}

/// A table left empty, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unseedable {
    pub table: String,
    pub reason: String,
}

/// Fills every empty table of `public` (referenced tables first) with rows for both
/// tenants. Errors are the connection's; what the schema refuses is in [`Seeding`].
pub fn seed_empty_tables(client: &mut impl GenericClient) -> Result<Seeding, postgres::Error> {
    let tables = catalog::public_tables(client)?;
    seed(client, None, &tables, None)
}

/// As [`seed_empty_tables`], for verify, which holds the tables of `public` and their
/// rows as they are now (kept equal to a full read, `TrackedData`): a table is empty
/// when `rows` holds none of it, and the tables are not listed again.
/// Its catalog reads run through `prepared`, kept on `client`'s session.
pub(crate) fn seed_empty_tables_known(
    client: &mut impl GenericClient,
    prepared: &mut Prepared,
    tables: &[UserTable],
    rows: &TableData,
) -> Result<Seeding, postgres::Error> {
    seed(client, Some(prepared), tables, Some(rows))
}

fn seed(
    client: &mut impl GenericClient,
    mut prepared: Option<&mut Prepared>,
    public: &[UserTable],
    rows: Option<&TableData>,
) -> Result<Seeding, postgres::Error> {
    // verify seeds before and after every step, and most of the time every table has
    // its rows already: the rows it holds say so, or one query does, without reading
    // each table's columns.
    let empty = catalog::empty_tables(client, public, rows)?;
    if empty.is_empty() {
        return Ok(Seeding::default());
    }
    let foreign_keys = catalog::foreign_keys(client, prepared.as_deref_mut())?;
    // Columns are read for the tables seeded now and the ones their keys reference, not
    // for every table (once per table made the seeding cost grow with the schema).
    let needed: BTreeSet<String> = empty
        .iter()
        .flat_map(|table| {
            let targets = foreign_keys.get(table).into_iter().flatten();
            std::iter::once(table.clone()).chain(targets.map(|fk| fk.target.clone()))
        })
        .collect();
    let tables = catalog::seed_tables(client, prepared, public, &needed)?;
    let mut pending: Vec<&SeedTable> = fk_order(&tables, &foreign_keys)
        .into_iter()
        .filter(|t| empty.contains(&t.name))
        .collect();
    // A table whose foreign key points at a table seeded later (a cycle) may succeed
    // once that table has rows: go round again while a pass makes progress.
    let mut seeded = Vec::new();
    loop {
        let mut failed = Vec::new();
        let mut progress = false;
        for table in pending {
            let empty: bool = client
                .query_one(
                    &format!(
                        "SELECT NOT EXISTS (SELECT 1 FROM {})",
                        quote_ident(&table.name)
                    ),
                    &[],
                )?
                .get(0);
            if !empty {
                continue;
            }
            let fks = foreign_keys
                .get(&table.name)
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            match seed_table(client, &tables, table, fks)? {
                Ok(()) => {
                    progress = true;
                    seeded.push(table.name.clone());
                }
                Err(reason) => failed.push((table, reason)),
            }
        }
        if failed.is_empty() || !progress {
            return Ok(Seeding {
                seeded,
                unseedable: failed
                    .into_iter()
                    .map(|(t, reason)| Unseedable {
                        table: t.name.clone(),
                        reason,
                    })
                    .collect(),
            });
        }
        pending = failed.into_iter().map(|(t, _)| t).collect();
    }
}

/// Inserts the rows of one table, each in its own savepoint: a row a UNIQUE constraint
/// refuses is skipped, the table fails only when no row goes in.
fn seed_table(
    client: &mut impl GenericClient,
    tables: &[SeedTable],
    table: &SeedTable,
    fks: &[ForeignKey],
) -> Result<Result<(), String>, postgres::Error> {
    let mut tx = client.transaction()?;
    let mut inserted = 0;
    let mut last_error = None;
    for tenant in 0..TENANTS {
        for index in 0..ROWS_PER_TENANT {
            match insert_row(&mut tx, tables, table, fks, tenant, index)? {
                Ok(()) => inserted += 1,
                Err(reason) => last_error = Some(reason),
            }
        }
    }
    tx.commit()?;
    Ok(if inserted > 0 {
        Ok(())
    } else {
        Err(last_error.unwrap_or_else(|| "no row could be inserted".into()))
    })
}

fn insert_row(
    tx: &mut postgres::Transaction<'_>,
    tables: &[SeedTable],
    table: &SeedTable,
    fks: &[ForeignKey],
    tenant: usize,
    index: usize,
) -> Result<Result<(), String>, postgres::Error> {
    let fk_columns: BTreeSet<&str> = fks
        .iter()
        .flat_map(|fk| fk.columns.iter().map(String::as_str))
        .collect();
    let mut row: BTreeMap<String, Value> = BTreeMap::new();
    for column in &table.columns {
        if fk_columns.contains(column.name.as_str()) && !column.filled_by_server {
            continue;
        }
        match value_for(&table.name, column, tenant, index) {
            Ok(value) => {
                row.insert(column.name.clone(), value);
            }
            Err(reason) => return Ok(Err(reason)),
        }
    }
    for fk in fks {
        match referenced_row(tx, tables, table, fk, &row, tenant, index)? {
            Ok(values) => {
                for (column, value) in fk.columns.iter().zip(values) {
                    row.entry(column.clone()).or_insert(value);
                }
            }
            Err(reason) => return Ok(Err(reason)),
        }
    }

    let mut overrides: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut last = String::new();
    for _ in 0..ATTEMPTS_PER_ROW {
        let attempt: Vec<(&String, Value)> = table
            .columns
            .iter()
            .filter_map(|c| row.get_key_value(&c.name))
            .map(
                |(name, value)| match overrides.get(name).and_then(|v| v.first()) {
                    Some(candidate) => (name, Value::Text(candidate.clone())),
                    None => (name, value.clone()),
                },
            )
            .filter(|(_, v)| *v != Value::Omit)
            .collect();
        let error = match try_insert(tx, table, &attempt)? {
            Ok(()) => return Ok(Ok(())),
            Err(error) => error,
        };
        last = describe(&error);
        let Some(db) = error.as_db_error() else {
            return Err(error);
        };
        if db.code().code() != "23514" {
            // A duplicate key (a UNIQUE constraint allows fewer rows than we try), a
            // foreign key, a NOT NULL, a trigger: not something another value fixes.
            return Ok(Err(last));
        }
        // A CHECK constraint, or a row no partition accepts: try the values it names.
        let (columns, candidates) = match db.constraint() {
            Some(name) => match catalog::check(tx, table.oid, name)? {
                Some(check) => {
                    let candidates = catalog::quoted_literals(&check.definition);
                    (check.columns, candidates)
                }
                None => (Vec::new(), Vec::new()),
            },
            None => (
                table.partition_key.clone(),
                table.partition_literals.clone(),
            ),
        };
        let [column] = columns.as_slice() else {
            return Ok(Err(last));
        };
        match overrides.get_mut(column) {
            // The previous candidate was wrong too: drop it and try the next.
            Some(tried) => {
                tried.remove(0);
                if tried.is_empty() {
                    return Ok(Err(last));
                }
            }
            None if candidates.is_empty() => return Ok(Err(last)),
            None => {
                overrides.insert(column.clone(), candidates);
            }
        }
    }
    Ok(Err(last))
}

/// `message [SQLSTATE code]`, with PostgreSQL's detail when it has one.
fn describe(error: &postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => {
            let mut text = format!("{} [SQLSTATE {}]", db.message(), db.code().code());
            if let Some(detail) = db.detail() {
                text.push_str(&format!(" ({detail})"));
            }
            text
        }
        None => error.to_string(),
    }
}

fn try_insert(
    tx: &mut postgres::Transaction<'_>,
    table: &SeedTable,
    row: &[(&String, Value)],
) -> Result<Result<(), postgres::Error>, postgres::Error> {
    let quoted = quote_ident(&table.name);
    let sql = if row.is_empty() {
        format!("INSERT INTO {quoted} DEFAULT VALUES")
    } else {
        let names: Vec<String> = row.iter().map(|(n, _)| quote_ident(n)).collect();
        let placeholders: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, (name, _))| {
                let ty = &table.column(name).expect("a column of the table").type_name;
                format!("${}::text::{ty}", i + 1)
            })
            .collect();
        format!(
            "INSERT INTO {quoted} ({}) VALUES ({})",
            names.join(", "),
            placeholders.join(", ")
        )
    };
    let values: Vec<Option<String>> = row
        .iter()
        .map(|(_, v)| match v {
            Value::Text(text) => Some(text.clone()),
            _ => None,
        })
        .collect();
    let params: Vec<&(dyn postgres::types::ToSql + Sync)> = values
        .iter()
        .map(|v| v as &(dyn postgres::types::ToSql + Sync))
        .collect();
    let mut savepoint = tx.transaction()?;
    match savepoint.execute(&sql, &params) {
        Ok(_) => {
            savepoint.commit()?;
            Ok(Ok(()))
        }
        Err(err) if err.as_db_error().is_some() => {
            savepoint.rollback()?;
            Ok(Err(err))
        }
        Err(err) => Err(err),
    }
}

/// The values of `fk`'s columns for a row of `tenant`: an existing row of the
/// referenced table (the same tenant's when it has `tenant_id`), this very row for a
/// self-reference whose key we chose, or NULL when the referenced table is empty and
/// the columns allow it.
fn referenced_row(
    tx: &mut postgres::Transaction<'_>,
    tables: &[SeedTable],
    table: &SeedTable,
    fk: &ForeignKey,
    row: &BTreeMap<String, Value>,
    tenant: usize,
    index: usize,
) -> Result<Result<Vec<Value>, String>, postgres::Error> {
    if fk.target == table.name {
        let own: Option<Vec<Value>> = fk
            .target_columns
            .iter()
            .map(|c| match row.get(c) {
                Some(Value::Text(t)) => Some(Value::Text(t.clone())),
                _ => None,
            })
            .collect();
        if let Some(own) = own {
            return Ok(Ok(own));
        }
    }
    let nullable = fk
        .columns
        .iter()
        .all(|c| table.column(c).is_some_and(|c| !c.not_null));
    if !fk.target_in_public {
        return Ok(if nullable {
            Ok(vec![Value::Null; fk.columns.len()])
        } else {
            Err(format!(
                "foreign key {} references {}, outside `public`, which the seeder does not fill",
                fk.name, fk.target
            ))
        });
    }
    let target = tables.iter().find(|t| t.name == fk.target);
    let tenant_key = tenant_uuid(tenant);
    // Prefer the same tenant's rows: through the referenced table's own tenant_id, or,
    // for the tenant reference itself, the tenant's row.
    let mine = if fk.columns == ["tenant_id"] {
        format!("t.{}::text = $1", quote_ident(&fk.target_columns[0]))
    } else if target.is_some_and(SeedTable::has_tenant_column) {
        "t.tenant_id::text = $1".to_string()
    } else {
        // No tenant to prefer; $1 is still bound, so it must appear.
        "$1::text IS NULL".to_string()
    };
    let columns: Vec<String> = fk
        .target_columns
        .iter()
        .map(|c| format!("t.{}::text", quote_ident(c)))
        .collect();
    let not_null: Vec<String> = columns.iter().map(|c| format!("{c} IS NOT NULL")).collect();
    // In insertion order: the seeder filled the referenced table tenant by tenant, so
    // without a tenant column to go by, the row at our own position is our tenant's
    // (and a join-based policy finds its tenant through it).
    let sql = format!(
        "SELECT {mine}, {} FROM {} t WHERE {} ORDER BY 1 DESC, t.ctid LIMIT 50",
        columns.join(", "),
        quote_ident(&fk.target),
        not_null.join(" AND "),
    );
    let rows = match tx.query(&sql, &[&tenant_key]) {
        Ok(rows) => rows,
        Err(err) if err.as_db_error().is_some() => return Ok(Err(describe(&err))),
        Err(err) => return Err(err),
    };
    let same: Vec<&postgres::Row> = rows.iter().filter(|r| r.get::<_, bool>(0)).collect();
    let (pool, position): (Vec<&postgres::Row>, usize) = if same.is_empty() {
        (rows.iter().collect(), tenant * ROWS_PER_TENANT + index)
    } else {
        (same, index)
    };
    if pool.is_empty() {
        return Ok(if nullable {
            Ok(vec![Value::Null; fk.columns.len()])
        } else {
            Err(format!(
                "foreign key {} needs a row of {}, which has none (a cycle of NOT NULL foreign keys, or {} could not be seeded)",
                fk.name, fk.target, fk.target
            ))
        });
    }
    let chosen = pool[position % pool.len()];
    Ok(Ok((1..=fk.columns.len())
        .map(|i| Value::Text(chosen.get::<_, String>(i)))
        .collect()))
}

/// Tables ordered so every referenced table comes first; the tables of a cycle follow
/// in name order (the second pass of `seed_empty_tables` completes what it can).
fn fk_order<'t>(
    tables: &'t [SeedTable],
    foreign_keys: &BTreeMap<String, Vec<ForeignKey>>,
) -> Vec<&'t SeedTable> {
    let names: BTreeSet<&str> = tables.iter().map(|t| t.name.as_str()).collect();
    let mut done: BTreeSet<&str> = BTreeSet::new();
    let mut order = Vec::new();
    while order.len() < tables.len() {
        let before = order.len();
        for table in tables {
            if done.contains(table.name.as_str()) {
                continue;
            }
            let ready = foreign_keys
                .get(&table.name)
                .into_iter()
                .flatten()
                .filter(|fk| fk.target != table.name && names.contains(fk.target.as_str()))
                .all(|fk| done.contains(fk.target.as_str()));
            if ready {
                done.insert(&table.name);
                order.push(table);
            }
        }
        if order.len() == before {
            order.extend(tables.iter().filter(|t| !done.contains(t.name.as_str())));
            break;
        }
    }
    order
}

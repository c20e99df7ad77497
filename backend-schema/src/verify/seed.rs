//! Realistic rows for two tenants in every table, generated from the catalog: values
//! by column type, foreign keys pointing at the same tenant's rows.

use std::collections::{BTreeMap, BTreeSet};

use postgres::GenericClient;
use sha2::{Digest, Sha256};

use crate::catalog::user_tables;
use crate::sql::quote_ident;

/// Tenants seeded: rows belong to tenant 0 ("A") or 1 ("B").
pub const TENANTS: usize = 2;
/// Rows per tenant in every table.
pub const ROWS_PER_TENANT: usize = 2;

#[derive(Debug)]
struct Column {
    name: String,
    type_name: String,
    is_enum: bool,
    generated: bool,
}

/// A deterministic UUID for row `index` of `tenant` in `table`.
pub fn row_uuid(table: &str, tenant: usize, index: usize) -> String {
    let digest = Sha256::digest(format!("{table}/{tenant}/{index}").as_bytes());
    let hex = crate::text::hex(&digest[..16]);
    format!(
        "{}-{}-4{}-8{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

/// The id of tenant `tenant`.
pub fn tenant_uuid(tenant: usize) -> String {
    row_uuid("tenants", tenant, 0)
}

/// Fills every empty table (in foreign-key order) with rows for both tenants.
pub fn seed_empty_tables(client: &mut impl GenericClient) -> Result<(), postgres::Error> {
    let tables = tables(client)?;
    let foreign_keys = foreign_keys(client)?;
    let order = fk_order(&tables, &foreign_keys);
    for table in order {
        let quoted = quote_ident(&table);
        let empty: bool = client
            .query_one(&format!("SELECT NOT EXISTS (SELECT 1 FROM {quoted})"), &[])?
            .get(0);
        if !empty {
            continue;
        }
        let columns = columns(client, &table)?;
        let insertable: Vec<&Column> = columns.iter().filter(|c| !c.generated).collect();
        let names: Vec<String> = insertable.iter().map(|c| quote_ident(&c.name)).collect();
        let placeholders: Vec<String> = insertable
            .iter()
            .enumerate()
            .map(|(i, c)| format!("${}::text::{}", i + 1, c.type_name))
            .collect();
        let sql = format!(
            "INSERT INTO {quoted} ({}) VALUES ({})",
            names.join(", "),
            placeholders.join(", ")
        );
        for tenant in 0..TENANTS {
            for index in 0..ROWS_PER_TENANT {
                let mut values: Vec<Option<String>> = Vec::new();
                for column in &insertable {
                    let fk = foreign_keys.get(&(table.clone(), column.name.clone()));
                    values.push(match fk {
                        Some(target) if target == "tenants" => Some(tenant_uuid(tenant)),
                        Some(target) => Some(row_uuid(target, tenant, index)),
                        None => value_for(client, &table, column, tenant, index)?,
                    });
                }
                let params: Vec<&(dyn postgres::types::ToSql + Sync)> = values
                    .iter()
                    .map(|v| v as &(dyn postgres::types::ToSql + Sync))
                    .collect();
                client.execute(&sql, &params)?;
            }
        }
    }
    Ok(())
}

fn value_for(
    client: &mut impl GenericClient,
    table: &str,
    column: &Column,
    tenant: usize,
    index: usize,
) -> Result<Option<String>, postgres::Error> {
    if column.is_enum {
        let row = client.query_one(
            "SELECT e.enumlabel FROM pg_enum e WHERE e.enumtypid = $1::text::regtype ORDER BY e.enumsortorder LIMIT 1",
            &[&column.type_name],
        )?;
        return Ok(Some(row.get(0)));
    }
    let text = |max: Option<usize>| {
        let value = format!(
            "{}-{}-{tenant}-{index}",
            column.name,
            &table[..table.len().min(6)]
        );
        let value = if column.name.contains("email") {
            format!("{tenant}{index}-{table}@example.com")
        } else {
            value
        };
        match max {
            Some(max) => value
                .chars()
                .rev()
                .take(max)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect(),
            None => value,
        }
    };
    let ty = column.type_name.as_str();
    Ok(Some(if column.name == "id" && ty == "uuid" {
        row_uuid(table, tenant, index)
    } else if ty == "uuid" {
        row_uuid(&format!("{table}.{}", column.name), tenant, index)
    } else if let Some(len) = ty
        .strip_prefix("character varying(")
        .and_then(|r| r.strip_suffix(')'))
    {
        text(len.parse().ok())
    } else if ty == "text" || ty == "character varying" {
        text(None)
    } else if matches!(ty, "integer" | "bigint" | "smallint") {
        (tenant * 10 + index + 1).to_string()
    } else if matches!(ty, "double precision" | "real") || ty.starts_with("numeric") {
        format!("0.{}", tenant * 10 + index + 1)
    } else if ty == "boolean" {
        index.is_multiple_of(2).to_string()
    } else if ty == "json" || ty == "jsonb" {
        format!("{{\"seed\": \"{tenant}-{index}\"}}")
    } else if ty.starts_with("timestamp") || ty == "date" {
        format!("2025-0{}-1{} 10:00:00+00", tenant + 1, index)
    } else {
        return Ok(None);
    }))
}

/// The tables of `public`, by name: the migrations under test put theirs there, and
/// the seeds refer to tables by unqualified name.
fn tables(client: &mut impl GenericClient) -> Result<Vec<String>, postgres::Error> {
    Ok(user_tables(client)?
        .into_iter()
        .filter(|t| t.schema == "public" && !t.is_version_table())
        .map(|t| t.name)
        .collect())
}

fn columns(client: &mut impl GenericClient, table: &str) -> Result<Vec<Column>, postgres::Error> {
    let rows = client.query(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod), t.typtype = 'e', a.attgenerated <> '' OR a.attidentity = 'a'
           FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
          WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped
          ORDER BY a.attnum",
        &[&quote_ident(table)],
    )?;
    Ok(rows
        .iter()
        .map(|r| Column {
            name: r.get(0),
            type_name: r.get(1),
            is_enum: r.get(2),
            generated: r.get(3),
        })
        .collect())
}

/// (table, column) -> referenced table, for single-column foreign keys.
fn foreign_keys(
    client: &mut impl GenericClient,
) -> Result<BTreeMap<(String, String), String>, postgres::Error> {
    let rows = client.query(
        "SELECT c.relname, a.attname, r.relname
           FROM pg_constraint k
           JOIN pg_class c ON c.oid = k.conrelid JOIN pg_class r ON r.oid = k.confrelid
           JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = k.conkey[1]
          WHERE k.contype = 'f' AND array_length(k.conkey, 1) = 1",
        &[],
    )?;
    Ok(rows
        .iter()
        .map(|r| ((r.get(0), r.get(1)), r.get(2)))
        .collect())
}

/// Tables ordered so every referenced table comes first.
fn fk_order(tables: &[String], foreign_keys: &BTreeMap<(String, String), String>) -> Vec<String> {
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut order = Vec::new();
    while order.len() < tables.len() {
        let before = order.len();
        for table in tables {
            if done.contains(table) {
                continue;
            }
            let ready = foreign_keys
                .iter()
                .filter(|((from, _), to)| from == table && *to != table)
                .all(|(_, to)| done.contains(to) || !tables.contains(to));
            if ready {
                done.insert(table.clone());
                order.push(table.clone());
            }
        }
        if order.len() == before {
            // A foreign-key cycle: seed the rest in name order and let the database judge.
            order.extend(tables.iter().filter(|t| !done.contains(*t)).cloned());
            break;
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_valid_and_stable() {
        let id = row_uuid("leads", 1, 0);
        assert_eq!(id.len(), 36);
        assert_eq!(id, row_uuid("leads", 1, 0));
        assert_ne!(id, row_uuid("leads", 0, 1));
    }
}

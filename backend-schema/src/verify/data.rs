//! Row-level data checks: every row of every table, projected onto the columns that
//! exist both before and after a step, must be unchanged.

use std::collections::BTreeMap;

use postgres::GenericClient;
use serde_json::Value;

use crate::catalog::{column_names, user_tables, UserTable};

/// One row, as column -> value.
pub type Row = BTreeMap<String, Value>;

/// Every table's columns (in order) and rows.
#[derive(Debug, Clone, Default)]
pub struct TableData {
    pub tables: BTreeMap<String, (Vec<String>, Vec<Row>)>,
}

impl TableData {
    pub fn capture(client: &mut impl GenericClient) -> Result<TableData, postgres::Error> {
        let mut data = TableData::default();
        // Only `public`: the rows compared are the seeded ones, and seeding fills `public`.
        let tables: Vec<UserTable> = user_tables(client)?
            .into_iter()
            .filter(|t| t.schema == "public" && !t.is_version_table())
            .collect();
        let mut columns_of = column_names(client, &tables)?;
        for table in tables {
            let Some(columns) = columns_of.remove(&table.oid) else {
                continue;
            };
            let sql = format!("SELECT to_jsonb(t)::text FROM {} t", table.quoted());
            let rows = client
                .query(&sql, &[])?
                .iter()
                .map(|r| {
                    serde_json::from_str::<BTreeMap<String, Value>>(&r.get::<_, String>(0))
                        .unwrap_or_default()
                })
                .collect();
            data.tables.insert(table.name, (columns, rows));
        }
        Ok(data)
    }

    /// Compares `self` (before) with `after`: changed rows are failures, dropped tables
    /// and columns that held data are losses.
    pub fn compare(&self, after: &TableData) -> DataDiff {
        let mut diff = DataDiff::default();
        for (table, (columns, rows)) in &self.tables {
            let Some((after_columns, after_rows)) = after.tables.get(table) else {
                if !rows.is_empty() {
                    diff.lost
                        .push(format!("table {table} ({} rows)", rows.len()));
                }
                continue;
            };
            for column in columns.iter().filter(|c| !after_columns.contains(c)) {
                let values = rows
                    .iter()
                    .filter(|r| r.get(column).is_some_and(|v| !v.is_null()))
                    .count();
                if values > 0 {
                    diff.lost
                        .push(format!("column {table}.{column} ({values} values)"));
                }
            }
            let common: Vec<&String> = columns
                .iter()
                .filter(|c| after_columns.contains(c))
                .collect();
            let project = |rows: &Vec<Row>| {
                let mut projected: Vec<String> = rows
                    .iter()
                    .map(|r| {
                        common
                            .iter()
                            .map(|c| r.get(*c).map(Value::to_string).unwrap_or_default())
                            .collect::<Vec<_>>()
                            .join("|")
                    })
                    .collect();
                projected.sort();
                projected
            };
            if project(rows) != project(after_rows) {
                diff.changed.push(format!(
                    "table {table}: rows differ in columns kept by the step"
                ));
            }
        }
        diff
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataDiff {
    /// Rows of kept tables that changed: a failure.
    pub changed: Vec<String>,
    /// Tables and columns dropped with their data: reported as destructive.
    pub lost: Vec<String>,
}

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
        let tables: Vec<(UserTable, Vec<String>)> = tables
            .into_iter()
            .filter_map(|t| columns_of.remove(&t.oid).map(|c| (t, c)))
            .collect();
        if tables.is_empty() {
            return Ok(data);
        }
        // Every table's rows in one round trip, each tagged with its position in `tables`:
        // verify captures the data four times per revision.
        let sql = tables
            .iter()
            .enumerate()
            .map(|(i, (table, _))| {
                format!(
                    "SELECT {i}::int4, to_jsonb(t)::text FROM {} t",
                    table.quoted()
                )
            })
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        let mut rows_of: Vec<Vec<Row>> = vec![Vec::new(); tables.len()];
        for row in client.query_typed(&sql, &[])? {
            let row_json =
                serde_json::from_str::<Row>(&row.get::<_, String>(1)).unwrap_or_default();
            rows_of[row.get::<_, i32>(0) as usize].push(row_json);
        }
        for ((table, columns), rows) in tables.into_iter().zip(rows_of) {
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

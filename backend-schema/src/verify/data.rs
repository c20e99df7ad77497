//! Row-level data checks: every row of every table, projected onto the columns that
//! exist both before and after a step, must be unchanged.

use std::collections::{BTreeMap, BTreeSet};

use postgres::GenericClient;
use serde_json::Value;

use crate::catalog::{column_names_with, user_tables_with, UserTable, FIRST_UNPINNED};
use crate::prepared::Prepared;

/// One row, as column -> value.
pub type Row = BTreeMap<String, Value>;

/// A table's columns (in order) and rows.
pub type TableRows = (Vec<String>, Vec<Row>);

/// Every table's columns (in order) and rows.
#[derive(Debug, Clone, Default)]
pub struct TableData {
    pub tables: BTreeMap<String, TableRows>,
}

/// The tables `TableData` covers, with their columns in order.
fn public_tables(
    client: &mut impl GenericClient,
) -> Result<Vec<(UserTable, Vec<String>)>, postgres::Error> {
    let tables = public_table_list(client, None)?;
    with_columns(client, None, tables)
}

/// The tables `TableData` covers, without their columns.
fn public_table_list(
    client: &mut impl GenericClient,
    prepared: Option<&mut Prepared>,
) -> Result<Vec<UserTable>, postgres::Error> {
    // Only `public`: the rows compared are the seeded ones, and seeding fills `public`.
    Ok(user_tables_with(client, prepared)?
        .into_iter()
        .filter(|t| t.schema == "public" && !t.is_version_table())
        .collect())
}

/// `tables` with their columns in order; a table without columns has no rows to compare.
fn with_columns(
    client: &mut impl GenericClient,
    prepared: Option<&mut Prepared>,
    tables: Vec<UserTable>,
) -> Result<Vec<(UserTable, Vec<String>)>, postgres::Error> {
    if tables.is_empty() {
        return Ok(Vec::new());
    }
    let mut columns_of = column_names_with(client, prepared, &tables)?;
    Ok(tables
        .into_iter()
        .filter_map(|t| columns_of.remove(&t.oid).map(|c| (t, c)))
        .collect())
}

/// The rows of `tables`, by table name.
fn read_rows(
    client: &mut impl GenericClient,
    tables: Vec<(UserTable, Vec<String>)>,
) -> Result<BTreeMap<String, TableRows>, postgres::Error> {
    let mut read = BTreeMap::new();
    if tables.is_empty() {
        return Ok(read);
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
        let row_json = serde_json::from_str::<Row>(&row.get::<_, String>(1)).unwrap_or_default();
        rows_of[row.get::<_, i32>(0) as usize].push(row_json);
    }
    for ((table, columns), rows) in tables.into_iter().zip(rows_of) {
        read.insert(table.name, (columns, rows));
    }
    Ok(read)
}

impl TableData {
    pub fn capture(client: &mut impl GenericClient) -> Result<TableData, postgres::Error> {
        let tables = public_tables(client)?;
        Ok(TableData {
            tables: read_rows(client, tables)?,
        })
    }

    /// Tables whose columns or rows (in any order) differ between `self` and `other`, and
    /// tables only one of them has: for the test that holds the kept data equal to a
    /// full read.
    pub fn differing_tables(&self, other: &TableData) -> Vec<String> {
        let sorted = |rows: &Vec<Row>| {
            let mut rows: Vec<String> = rows
                .iter()
                .map(|r| serde_json::to_string(r).unwrap_or_default())
                .collect();
            rows.sort();
            rows
        };
        let names: BTreeSet<&String> = self.tables.keys().chain(other.tables.keys()).collect();
        names
            .into_iter()
            .filter(
                |name| match (self.tables.get(*name), other.tables.get(*name)) {
                    (Some((a_columns, a_rows)), Some((b_columns, b_rows))) => {
                        a_columns != b_columns || sorted(a_rows) != sorted(b_rows)
                    }
                    _ => true,
                },
            )
            .cloned()
            .collect()
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

/// Row data kept up to date step by step: after a step only the tables whose rows or
/// columns can read differently are read again, so the data checks cost what the step
/// changed, not every row of the schema built so far.
///
/// A table is read again when rows of it or of a table that inherits from it were
/// inserted, updated or deleted since the mark (PostgreSQL's counts of each table's row
/// writes, this session's flushed first: they cost nothing to read, where counting every
/// table's rows cost a scan of each at every capture), when its `pg_class` row or one of its columns was written (added,
/// dropped, altered, renamed, rewritten, truncated), or when one of its columns is of a
/// composite type (another table's columns are its values). Every table is read again
/// when an enum, domain, range or composite type was written, a setting that decides how
/// `to_jsonb` writes values changed, or `track_counts` is off.
/// `VerifyOptions::compare_full_snapshots` checks all of this against a full read.
///
/// The counts are flushed for this session, the one verify migrates and seeds on; a
/// migration that writes rows through another connection to the same database (dblink,
/// postgres_fdw) that is still open, or that turns `track_counts` off for its own
/// transaction, is not seen here (the full read of that option is).
#[derive(Debug, Clone)]
pub(crate) struct TrackedData {
    pub data: TableData,
    /// The tables of `public` but the version tables, as listed at this capture: what
    /// the seeder fills, so it need not list them again.
    pub tables: Vec<UserTable>,
    mark: DataMark,
    /// Its statements, prepared on the connection that captured it (they run four
    /// times a revision).
    prepared: Prepared,
}

#[derive(Debug, Clone)]
struct DataMark {
    next_xid: i64,
    settings: Vec<String>,
    /// Each table's name and its family's row writes, by oid.
    tables: BTreeMap<u32, (String, Writes)>,
    /// The tables with a column of a composite type (read again every time). Whether a
    /// column's type is composite is fixed by its type's oid, so this changes only for
    /// tables whose columns were written: it is worked out again for those alone.
    composite: BTreeSet<u32>,
}

/// Settings `to_jsonb` reads: a value written under others reads differently.
/// `track_counts` comes last: the row writes are counted only while it is on.
const SETTINGS: &str = "ARRAY[current_setting('TimeZone'), current_setting('extra_float_digits'),
                             current_setting('bytea_output'), current_setting('IntervalStyle'),
                             current_setting('DateStyle'), current_setting('track_counts')]";

/// Whether the row writes can be trusted under `settings` (read with `SETTINGS`).
fn counting(settings: &[String]) -> bool {
    settings.last().is_some_and(|on| on == "on")
}

impl TrackedData {
    /// A full read, marked.
    pub fn capture(client: &mut impl GenericClient) -> Result<TrackedData, postgres::Error> {
        let mut prepared = Prepared::default();
        let p = &mut prepared;
        let Now {
            next_xid, settings, ..
        } = now(client, p, None)?;
        let listed = public_table_list(client, Some(p))?;
        let writes = row_writes(client, p, &listed)?;
        let oids: Vec<u32> = listed.iter().map(|t| t.oid).collect();
        let Altered { composite, .. } = altered_tables(client, p, &oids, &oids, next_xid)?;
        let mark = DataMark {
            next_xid,
            settings,
            tables: listed
                .iter()
                .zip(writes)
                .map(|(t, w)| (t.oid, (t.name.clone(), w)))
                .collect(),
            composite,
        };
        let tables = with_columns(client, Some(p), listed.clone())?;
        Ok(TrackedData {
            data: TableData {
                tables: read_rows(client, tables)?,
            },
            tables: listed,
            mark,
            prepared,
        })
    }

    /// The rows now, re-reading only the tables that can have changed since the mark.
    pub fn refresh(&self, client: &mut impl GenericClient) -> Result<TrackedData, postgres::Error> {
        let since = self.mark.next_xid;
        let mut prepared = self.prepared.clone();
        let p = &mut prepared;
        let Now {
            next_xid,
            settings,
            types_written,
        } = now(client, p, Some(since))?;
        let tables = public_table_list(client, Some(p))?;
        let writes = row_writes(client, p, &tables)?;
        let everything = settings != self.mark.settings || !counting(&settings) || types_written;
        let oids: Vec<u32> = tables.iter().map(|t| t.oid).collect();
        let new: Vec<u32> = oids
            .iter()
            .copied()
            .filter(|oid| !self.mark.tables.contains_key(oid))
            .collect();
        let Altered {
            altered,
            composite: recomputed,
        } = altered_tables(client, p, &oids, &new, since)?;
        // A table whose columns were not written keeps its answer; the others (and new
        // tables) have theirs in `recomputed`.
        let composite: BTreeSet<u32> = oids
            .iter()
            .copied()
            .filter(|oid| {
                recomputed.contains(oid)
                    || (!altered.contains(oid) && self.mark.composite.contains(oid))
            })
            .collect();
        let mut data = TableData::default();
        let mut reread = Vec::new();
        let mut marked = BTreeMap::new();
        for (table, writes) in tables.iter().cloned().zip(writes) {
            marked.insert(table.oid, (table.name.clone(), writes));
            // A kept table keeps its columns too: neither its `pg_class` row nor any of
            // its columns was written since the mark, so its name and columns are the
            // ones read then (reading every table's columns each time cost what the
            // schema has grown to).
            let kept = match self.mark.tables.get(&table.oid) {
                Some((name, before)) if *before == writes && !everything => {
                    self.data.tables.get(name).filter(|_| {
                        !altered.contains(&table.oid) && !composite.contains(&table.oid)
                    })
                }
                _ => None,
            };
            match kept {
                Some(kept) => {
                    data.tables.insert(table.name, kept.clone());
                }
                None => reread.push(table),
            }
        }
        let reread = with_columns(client, Some(p), reread)?;
        data.tables.extend(read_rows(client, reread)?);
        Ok(TrackedData {
            data,
            tables,
            mark: DataMark {
                next_xid,
                settings,
                tables: marked,
                composite,
            },
            prepared,
        })
    }
}

/// Where a capture starts.
struct Now {
    /// The first transaction ID not yet assigned.
    next_xid: i64,
    /// The settings `to_jsonb` reads (`SETTINGS`).
    settings: Vec<String>,
    /// Whether a type whose values a table's rows can hold was written since the mark
    /// asked about (see `TYPES_WRITTEN`).
    types_written: bool,
}

/// The first transaction ID not yet assigned, the settings `to_jsonb` reads and, given
/// the mark's, whether a type was written since, in one round trip; this session's
/// counts of row writes are flushed when it returns, for [`row_writes`].
fn now(
    client: &mut impl GenericClient,
    prepared: &mut Prepared,
    since: Option<i64>,
) -> Result<Now, postgres::Error> {
    // A session's counts reach the shared statistics when it goes idle, at most once a
    // second unless forced; forced, they are there before this statement's answer
    // comes back (the flush runs before the server says it is ready again).
    let row = prepared.query_one(
        client,
        &format!(
            "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::int8, {SETTINGS},
                    $1::int8 IS NOT NULL AND ({TYPES_WRITTEN}), pg_stat_force_next_flush() IS NULL"
        ),
        &[(&since, postgres::types::Type::INT8)],
    )?;
    Ok(Now {
        next_xid: row.get(0),
        settings: row.get(1),
        types_written: row.get(2),
    })
}

/// A table's row writes: the inserts, updates and deletes PostgreSQL counted on it and
/// on every table that inherits from it (a parent's rows include theirs). A table
/// attached or detached with rows brings or takes the writes that put them there, so
/// the sum changes then too.
type Writes = i64;

/// Each table's `Writes`, in one round trip; this session's counts are flushed by the
/// [`now`] before it.
fn row_writes(
    client: &mut impl GenericClient,
    prepared: &mut Prepared,
    tables: &[UserTable],
) -> Result<Vec<Writes>, postgres::Error> {
    if tables.is_empty() {
        return Ok(Vec::new());
    }
    let oids: Vec<u32> = tables.iter().map(|t| t.oid).collect();
    let rows = prepared.query(
        client,
        "WITH RECURSIVE family(root, rel) AS (
                 SELECT t.oid, t.oid FROM unnest($1::oid[]) AS t(oid)
           UNION SELECT f.root, i.inhrelid FROM family f JOIN pg_inherits i ON i.inhparent = f.rel
         )
         SELECT root,
                sum(pg_stat_get_tuples_inserted(rel) + pg_stat_get_tuples_updated(rel)
                    + pg_stat_get_tuples_deleted(rel))::int8
           FROM family GROUP BY root",
        &[(&oids, postgres::types::Type::OID_ARRAY)],
    )?;
    let mut of: BTreeMap<u32, Writes> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    // A table gone since it was listed reads as never counted: read again.
    Ok(oids
        .iter()
        .map(|oid| of.remove(oid).unwrap_or(-1))
        .collect())
}

/// Whether a type whose values a table's rows can hold was written at or after `$1`:
/// an enum's labels, a domain, a range, a composite type that is not a relation's row.
///
/// Pinned types are skipped through the oid indexes (`FIRST_UNPINNED`, the bound the
/// schema snapshot's reads use too): a pinned type's row written again (a new owner, say)
/// cannot change how a value is written, as its output function, its range's subtype
/// and its domain's base type are fixed at `initdb`, and no built-in enum exists; a
/// built-in composite (a catalog's or an `information_schema` view's row) makes a
/// table that holds it be read again every time already (`altered_tables`).
const TYPES_WRITTEN: &str = "EXISTS (SELECT 1 FROM pg_enum WHERE xmin::text::int8 >= $1)
     OR EXISTS (SELECT 1 FROM pg_type y WHERE y.oid >= 12000 AND y.xmin::text::int8 >= $1
                  AND (y.typtype IN ('e', 'd', 'r', 'm')
                       OR (y.typtype = 'c' AND NOT EXISTS (
                             SELECT 1 FROM pg_class c WHERE c.oid = y.typrelid
                                AND c.relkind <> 'c'))))
     OR EXISTS (SELECT 1 FROM pg_class c WHERE c.oid >= 12000 AND c.relkind = 'c'
                  AND (c.xmin::text::int8 >= $1 OR EXISTS (
                        SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid
                           AND a.xmin::text::int8 >= $1)))";

/// What changed in the tables' definitions since a mark.
struct Altered {
    /// The tables whose `pg_class` row or a column was written at or after the mark.
    altered: BTreeSet<u32>,
    /// Of those and the tables asked about, the ones with a column of a composite type.
    composite: BTreeSet<u32>,
}

/// The tables of `oids` whose `pg_class` row or a column was written at or after `xid`;
/// for them and for `ask` (tables the mark has not seen), which have a column of a
/// composite type (or an array or domain of one), in one round trip.
fn altered_tables(
    client: &mut impl GenericClient,
    prepared: &mut Prepared,
    oids: &[u32],
    ask: &[u32],
    xid: i64,
) -> Result<Altered, postgres::Error> {
    // The definitions are found through the oid indexes: a scan of `pg_class`,
    // `pg_attribute` or `pg_type` reads every built-in row too (`oids` are user tables,
    // never pinned, which lets the planner skip the system catalogs' `pg_class` rows).
    let rows = prepared.query(
        client,
        &format!("WITH altered AS (
              SELECT c.oid FROM unnest($2::oid[]) AS t(oid) JOIN pg_class c ON c.oid = t.oid
               WHERE c.oid >= {FIRST_UNPINNED} AND c.xmin::text::int8 >= $1
              UNION SELECT a.attrelid FROM pg_attribute a
               WHERE a.attrelid = ANY($2) AND a.attnum > 0 AND a.xmin::text::int8 >= $1),
              asked AS (SELECT oid FROM altered UNION SELECT unnest($3::oid[])),
              types AS (
              SELECT DISTINCT a.attrelid, a.atttypid FROM asked
                JOIN pg_attribute a ON a.attrelid = asked.oid
               WHERE a.attnum > 0 AND NOT a.attisdropped)
         SELECT oid, false FROM altered
         UNION ALL
         SELECT DISTINCT t.attrelid, true FROM types t
           JOIN pg_type y ON y.oid = t.atttypid
          WHERE y.typrelid <> 0
             OR (y.typcategory = 'A' AND (SELECT e.typrelid <> 0 FROM pg_type e WHERE e.oid = y.typelem))
             OR (y.typtype = 'd' AND (SELECT b.typrelid <> 0 OR b.typelem <> 0 FROM pg_type b WHERE b.oid = y.typbasetype))"),
        &[
            (&xid, postgres::types::Type::INT8),
            (&oids, postgres::types::Type::OID_ARRAY),
            (&ask, postgres::types::Type::OID_ARRAY),
        ],
    )?;
    let mut altered = Altered {
        altered: BTreeSet::new(),
        composite: BTreeSet::new(),
    };
    for row in rows {
        let oid: u32 = row.get(0);
        if row.get::<_, bool>(1) {
            altered.composite.insert(oid);
        } else {
            altered.altered.insert(oid);
        }
    }
    Ok(altered)
}

#[cfg(test)]
mod tests {
    #[test]
    fn types_written_skips_the_pinned_types_the_snapshot_skips() {
        let bound = format!(">= {} AND", super::FIRST_UNPINNED);
        assert_eq!(super::TYPES_WRITTEN.matches(&bound).count(), 2);
    }
}

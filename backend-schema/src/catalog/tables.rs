//! Which tables a database holds: the one definition every reader of the catalogs
//! starts from, so no check sees a table another one misses.

use std::collections::{BTreeMap, BTreeSet};

use postgres::GenericClient;

use crate::sql::{display_name, quote_qualified};
use crate::version_table::{HISTORY_TABLE, VERSION_TABLE};

/// The sequence behind `alembic_version_history.id`.
const HISTORY_SEQUENCE: &str = "alembic_version_history_id_seq";

/// Whether a relation (table or sequence) is our bookkeeping (`version_table.rs`):
/// in the database, not in the schema. The one ignore list of every catalog reader.
pub fn is_bookkeeping(relname: &str) -> bool {
    [VERSION_TABLE, HISTORY_TABLE, HISTORY_SEQUENCE].contains(&relname)
}

/// `user_tables`' scope as a condition on `n.nspname` (not a schema PostgreSQL owns),
/// for readers that join other catalogs.
pub(crate) const USER_SCHEMAS: &str =
    "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'";

/// An ordinary or partitioned table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct UserTable {
    pub schema: String,
    pub name: String,
    pub oid: u32,
}

impl UserTable {
    /// `"schema"."name"`, for SQL text.
    pub fn quoted(&self) -> String {
        quote_qualified(&self.schema, &self.name)
    }

    /// The name alone in `public`, `schema.name` elsewhere, for messages.
    pub fn display_name(&self) -> String {
        display_name(&self.schema, &self.name)
    }

    /// `alembic_version` or its history, in whichever schema.
    pub fn is_version_table(&self) -> bool {
        is_bookkeeping(&self.name)
    }
}

/// Every ordinary and partitioned table (`relkind` `r`, `p`) outside the schemas
/// PostgreSQL owns (`pg_catalog`, `information_schema`, `pg_toast*`, `pg_temp*`), the
/// version tables included, sorted by schema and name (bytewise, as `name` sorts).
///
/// One scope, all user schemas: a migration may create tables in any schema it likes,
/// and a table that one check sees and another misses is a table nobody checks.
/// Temporary tables are left out: they belong to a session, not to the schema, and
/// another session's cannot even be read. Callers that can only handle `public` (the
/// planner writes unqualified names; verify seeds `public`) narrow this list
/// themselves, where the reader can see it; callers that ignore our bookkeeping filter
/// with [`UserTable::is_version_table`].
pub fn user_tables(client: &mut impl GenericClient) -> Result<Vec<UserTable>, postgres::Error> {
    // Every table made after `initdb` has an oid of at least 16384 (`FirstNormalObjectId`;
    // a wrapped counter starts there again), and the ones below it are in the schemas
    // PostgreSQL owns: the oid index skips the built-in rows instead of a scan of all.
    let sql = format!(
        "SELECT n.nspname::text, c.relname::text, c.oid
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE c.oid >= 16384 AND c.relkind IN ('r', 'p') AND {USER_SCHEMAS}
          ORDER BY n.nspname, c.relname"
    );
    Ok(client
        .query_typed(&sql, &[])?
        .iter()
        .map(|row| UserTable {
            schema: row.get(0),
            name: row.get(1),
            oid: row.get(2),
        })
        .collect())
}

/// Names of the tables in `current_schema()` but the version tables: where the
/// migrations' unqualified `CREATE TABLE`s land, so what a replay of their table names
/// is compared with (`detect`).
pub fn tables_in_current_schema(
    client: &mut impl GenericClient,
) -> Result<BTreeSet<String>, postgres::Error> {
    let current: Option<String> = client
        .query_one("SELECT current_schema()::text", &[])?
        .get(0);
    Ok(user_tables(client)?
        .into_iter()
        .filter(|t| Some(&t.schema) == current.as_ref() && !t.is_version_table())
        .map(|t| t.name)
        .collect())
}

/// Each table's live columns in order, by the table's oid; a table without columns has
/// no entry.
pub fn column_names(
    client: &mut impl GenericClient,
    tables: &[UserTable],
) -> Result<BTreeMap<u32, Vec<String>>, postgres::Error> {
    let oids: Vec<u32> = tables.iter().map(|t| t.oid).collect();
    let rows = client.query_typed(
        "SELECT a.attrelid, array_agg(a.attname::text ORDER BY a.attnum)
           FROM pg_attribute a
          WHERE a.attrelid = ANY($1) AND a.attnum > 0 AND NOT a.attisdropped
          GROUP BY a.attrelid",
        &[(&oids, postgres::types::Type::OID_ARRAY)],
    )?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

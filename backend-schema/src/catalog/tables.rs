//! Which tables a database holds: the one definition every reader of the catalogs
//! starts from, so no check sees a table another one misses.

use std::collections::{BTreeMap, BTreeSet};

use postgres::GenericClient;

use crate::prepared::Prepared;
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

/// PostgreSQL's `FirstUnpinnedObjectId`: the objects below it are the pinned ones
/// initdb's bootstrap made (except the `public` schema, whose rows are never skipped).
/// Most catalog rows a mark or `written_since` would scan are these, and the catalogs'
/// OID indexes skip them, which is why the reads filter on it (`verify`'s mark and `written_since`, the table list, the row checks' written types). Skipping them cannot
/// change a refresh:
/// - nothing depends on a pinned object through `pg_depend` (PostgreSQL records no
///   dependency on one), so the user objects a pinned function, type, collation,
///   operator or text search object renamed or moved reads differently in cannot be
///   found: `written_since` looks for such a written row apart and then reads everything;
/// - a pinned relation is a system catalog (or its index or TOAST table), which
///   PostgreSQL refuses to move out of `pg_catalog` or alter (so its constraints,
///   indexes, comments and columns never belong to a user schema's relation);
/// - no pinned type is an enum, and no pinned relation is a sequence.
///
/// A pinned function can be moved into a user schema by a superuser (`ALTER FUNCTION
/// lower(text) SET SCHEMA public` is allowed), so functions, and comments on them, are
/// read with this filter and, besides, through the dependency on its new schema that
/// such a move records (`verify/scoped.rs`'s `moved_in`). The initdb objects above it (system views, collations,
/// `information_schema`) can be moved and renamed too, and user objects may depend on
/// them, so the filter is not `FirstNormalObjectId` (16384).
pub(crate) const FIRST_UNPINNED: u32 = 12000;

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
/// (A table in a user schema is never pinned: `FIRST_UNPINNED` lets the OID index skip
/// the system catalogs' rows.)
pub fn user_tables(client: &mut impl GenericClient) -> Result<Vec<UserTable>, postgres::Error> {
    user_tables_with(client, None)
}

/// [`user_tables`], through `prepared` when there is one (for callers that list the
/// tables after every step).
pub(crate) fn user_tables_with(
    client: &mut impl GenericClient,
    prepared: Option<&mut Prepared>,
) -> Result<Vec<UserTable>, postgres::Error> {
    let sql = format!(
        "SELECT n.nspname::text, c.relname::text, c.oid
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE c.oid >= {FIRST_UNPINNED} AND c.relkind IN ('r', 'p') AND {USER_SCHEMAS}
          ORDER BY n.nspname, c.relname"
    );
    Ok(crate::prepared::query(client, prepared, &sql, &[])?
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
    column_names_with(client, None, tables)
}

/// [`column_names`], through `prepared` when there is one.
pub(crate) fn column_names_with(
    client: &mut impl GenericClient,
    prepared: Option<&mut Prepared>,
    tables: &[UserTable],
) -> Result<BTreeMap<u32, Vec<String>>, postgres::Error> {
    let oids: Vec<u32> = tables.iter().map(|t| t.oid).collect();
    let rows = crate::prepared::query(
        client,
        prepared,
        "SELECT a.attrelid, array_agg(a.attname::text ORDER BY a.attnum)
           FROM pg_attribute a
          WHERE a.attrelid = ANY($1) AND a.attnum > 0 AND NOT a.attisdropped
          GROUP BY a.attrelid",
        &[(&oids, postgres::types::Type::OID_ARRAY)],
    )?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

//! The session's `search_path` must resolve unqualified names to `public`, where the
//! migrations' tables and `alembic_version` live: a role or database whose own
//! `search_path` sends them elsewhere is refused by name before anything is read as
//! the database's revision or written, and a migration that leaves one is refused
//! before it is recorded (the runner's `SearchPathLeft`).

use postgres::types::Type;
use postgres::GenericClient;

use crate::prepared::Prepared;

/// The schema the migrations, `alembic_version` and the expected schema live in.
pub const SCHEMA: &str = "public";

/// A session whose unqualified names do not resolve to `public`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the session's search_path is `{search_path}` ({}): unqualified names resolve to {}, not public, where the migrations' tables and alembic_version live{}; \
     nothing was read or written. Reset it (`ALTER ROLE {role} RESET search_path`, or `ALTER DATABASE ... RESET search_path`), or put public first",
    source_text(.set_by),
    .current.as_deref().map(|s| format!("schema {s}")).unwrap_or_else(|| "no schema that exists".into()),
    .version_table.as_deref().map(|t| format!(" (alembic_version would be read from {t})")).unwrap_or_default()
)]
pub struct ForeignSearchPath {
    pub search_path: String,
    /// `pg_settings.source`: `user` (ALTER ROLE), `database`, `database user`, `client`...
    pub set_by: String,
    pub role: String,
    /// `current_schema()`: where an unqualified `CREATE` goes.
    pub current: Option<String>,
    /// The `alembic_version` an unqualified name finds, when it is not public's.
    pub version_table: Option<String>,
}

fn source_text(source: &str) -> String {
    match source {
        "user" => "set for the role with ALTER ROLE ... SET search_path".into(),
        "database" => "set for the database with ALTER DATABASE ... SET search_path".into(),
        "database user" => "set with ALTER ROLE ... IN DATABASE ... SET search_path".into(),
        "client" => "set by the connection's options or PGOPTIONS".into(),
        other => format!("from {other}"),
    }
}

/// `Ok(Err(..))` when the session's unqualified names would miss `public`.
pub(crate) fn check(
    client: &mut impl GenericClient,
    prepared: Option<&mut Prepared>,
) -> Result<Result<(), ForeignSearchPath>, postgres::Error> {
    // `pg_settings` builds a row for every setting the server has: it is read only to
    // name who set a search_path that is refused, not by every migration run that passes.
    // Typed: one round trip (a prepared statement costs two more), on every run's path,
    // unless the caller keeps it prepared (verify, run after run on one session).
    let row = crate::prepared::query_one(
        client,
        prepared,
        "SELECT current_setting('search_path'),
                current_user::text,
                current_schema()::text,
                (SELECT format('%I.%I', n.nspname, c.relname)
                   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE c.oid = to_regclass('alembic_version') AND n.nspname <> $1)",
        &[(&SCHEMA, Type::TEXT)],
    )?;
    let current: Option<String> = row.get(2);
    let version_table: Option<String> = row.get(3);
    if current.as_deref() == Some(SCHEMA) && version_table.is_none() {
        return Ok(Ok(()));
    }
    let set_by: Option<String> = client
        .query_one(
            "SELECT source FROM pg_settings WHERE name = 'search_path'",
            &[],
        )?
        .get(0);
    Ok(Err(ForeignSearchPath {
        search_path: row.get(0),
        set_by: set_by.unwrap_or_default(),
        role: crate::sql::ident(&row.get::<_, String>(1)),
        current,
        version_table,
    }))
}

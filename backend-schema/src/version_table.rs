//! Alembic's `alembic_version` table (one row per head, exactly as Alembic writes it)
//! and our side table `alembic_version_history` (checksums, timings, status), which
//! Alembic ignores.

use std::fmt;

use postgres::types::{FromSql, ToSql, Type};
use postgres::GenericClient;

use crate::migration::Direction;
use crate::prepared::{self, Prepared};

pub const VERSION_TABLE: &str = "alembic_version";
pub const HISTORY_TABLE: &str = "alembic_version_history";

const CREATE_VERSION_TABLE: &str = "CREATE TABLE alembic_version (\n    version_num VARCHAR(32) NOT NULL,\n    CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)\n)";

const CREATE_HISTORY_TABLE: &str = "CREATE TABLE IF NOT EXISTS alembic_version_history (
    id BIGSERIAL PRIMARY KEY,
    revision VARCHAR(32) NOT NULL,
    operation TEXT NOT NULL CHECK (operation IN ('upgrade', 'downgrade', 'stamp', 'rehash')),
    checksum TEXT,
    status TEXT NOT NULL CHECK (status IN ('completed', 'in_progress', 'failed')),
    started_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    duration_ms BIGINT,
    tool_version TEXT NOT NULL,
    error TEXT
)";

/// Which of the two tables exist (as the search_path resolves their names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Present {
    pub version: bool,
    pub history: bool,
}

/// Both tables' existence in one round trip: a migration run reads the tables and
/// may create them, and asking per table and per read was most of its round trips.
/// Through `statements` when there is one, as every read and write here that a
/// migration run makes (see `Migrator::keep_prepared`).
pub(crate) fn present(
    client: &mut impl GenericClient,
    statements: Option<&mut Prepared>,
) -> Result<Present, postgres::Error> {
    let row = prepared::query_one(
        client,
        statements,
        "SELECT to_regclass($1) IS NOT NULL, to_regclass($2) IS NOT NULL",
        &[(&VERSION_TABLE, Type::TEXT), (&HISTORY_TABLE, Type::TEXT)],
    )?;
    Ok(Present {
        version: row.get(0),
        history: row.get(1),
    })
}

/// The heads recorded in `alembic_version`; empty when the table does not exist (base).
pub fn read_heads(client: &mut impl GenericClient) -> Result<Vec<String>, postgres::Error> {
    let present = present(client, None)?;
    heads_in(client, None, present)
}

/// As [`read_heads`], with the tables' existence already read.
pub(crate) fn heads_in(
    client: &mut impl GenericClient,
    statements: Option<&mut Prepared>,
    present: Present,
) -> Result<Vec<String>, postgres::Error> {
    if !present.version {
        return Ok(Vec::new());
    }
    // As text: a hand-made table whose version_num is an integer (or holds a NULL)
    // must read as a revision no migration defines, not end the program.
    let rows = prepared::query(
        client,
        statements,
        "SELECT version_num::text FROM alembic_version WHERE version_num IS NOT NULL ORDER BY 1",
        &[],
    )?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Creates both tables if missing. `alembic_version` gets Alembic's exact DDL.
pub fn ensure_tables(client: &mut impl GenericClient) -> Result<(), postgres::Error> {
    let present = present(client, None)?;
    create_missing(client, present)
}

/// As [`ensure_tables`], with their existence already read (under the migration lock,
/// so no other migrator drops or creates them in between).
pub fn create_missing(
    client: &mut impl GenericClient,
    present: Present,
) -> Result<(), postgres::Error> {
    if !present.version {
        client.batch_execute(CREATE_VERSION_TABLE)?;
    }
    if !present.history {
        client.batch_execute(CREATE_HISTORY_TABLE)?;
    }
    Ok(())
}

/// The DDL, for offline SQL scripts.
pub fn create_tables_sql() -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {}",
        &CREATE_VERSION_TABLE["CREATE TABLE ".len()..]
    ) + ";\n\n"
        + CREATE_HISTORY_TABLE
        + ";\n"
}

/// The version table changed under us: someone else wrote it without our lock.
#[derive(Debug, thiserror::Error)]
#[error("alembic_version did not hold {expected} when {revision} was recorded (another migrator without our lock?); nothing was committed for {revision}")]
pub struct VersionRace {
    pub expected: String,
    pub revision: String,
}

/// SQL statements moving `alembic_version` from `before` to `after`, the way Alembic
/// does: an UPDATE when one head replaces another, INSERT/DELETE at branch and merge
/// points. Each statement affects exactly one row.
pub fn head_changes(before: &[String], after: &[String]) -> Vec<HeadChange> {
    let removed: Vec<&String> = before.iter().filter(|h| !after.contains(h)).collect();
    let added: Vec<&String> = after.iter().filter(|h| !before.contains(h)).collect();
    let mut changes = Vec::new();
    let mut removed = removed.into_iter();
    let mut added = added.into_iter();
    loop {
        match (removed.next(), added.next()) {
            (Some(old), Some(new)) => changes.push(HeadChange::Update {
                old: old.clone(),
                new: new.clone(),
            }),
            (Some(old), None) => changes.push(HeadChange::Delete { old: old.clone() }),
            (None, Some(new)) => changes.push(HeadChange::Insert { new: new.clone() }),
            (None, None) => return changes,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadChange {
    Insert { new: String },
    Update { old: String, new: String },
    Delete { old: String },
}

impl HeadChange {
    pub fn apply(&self, client: &mut impl GenericClient, revision: &str) -> Result<(), ApplyError> {
        let (rows, expected) = match self {
            HeadChange::Insert { new } => (
                client.execute_typed(
                    "INSERT INTO alembic_version (version_num) VALUES ($1)",
                    &[(new, Type::TEXT)],
                )?,
                new,
            ),
            HeadChange::Update { old, new } => (
                client.execute_typed(
                    "UPDATE alembic_version SET version_num = $1 WHERE alembic_version.version_num = $2",
                    &[(new, Type::TEXT), (old, Type::TEXT)],
                )?,
                old,
            ),
            HeadChange::Delete { old } => (
                client.execute_typed(
                    "DELETE FROM alembic_version WHERE alembic_version.version_num = $1",
                    &[(old, Type::TEXT)],
                )?,
                old,
            ),
        };
        if rows != 1 {
            return Err(ApplyError::Race(VersionRace {
                expected: expected.clone(),
                revision: revision.into(),
            }));
        }
        Ok(())
    }

    /// Applies the change and writes `new` to the side table in one statement (one
    /// round trip instead of two on every migration's path). A change that missed its
    /// row is the same race as in [`Self::apply`], and nothing of it stays once the
    /// caller's transaction rolls back.
    pub(crate) fn apply_and_record(
        &self,
        client: &mut impl GenericClient,
        statements: Option<&mut Prepared>,
        revision: &str,
        new: &NewRecord<'_>,
    ) -> Result<(), ApplyError> {
        self.apply_with(
            client,
            statements,
            revision,
            INSERT_RECORD_IF_MOVED,
            &new.params(),
        )
    }

    /// Applies the change and completes the side-table row `id` (a non-transactional
    /// migration's marker) in one statement: atomic without a transaction of its own.
    pub(crate) fn apply_and_finish(
        &self,
        client: &mut impl GenericClient,
        statements: Option<&mut Prepared>,
        revision: &str,
        id: i64,
        duration_ms: i64,
    ) -> Result<(), ApplyError> {
        self.apply_with(
            client,
            statements,
            revision,
            "UPDATE alembic_version_history SET status = $2, duration_ms = $3, error = NULL
              WHERE id = $1 AND (SELECT count(*) FROM moved) = 1 RETURNING id",
            &[
                (&id, Type::INT8),
                (Status::Completed.as_param(), Type::TEXT),
                (&duration_ms, Type::INT8),
            ],
        )
    }

    /// The change and `write` (a statement with its `params`, `RETURNING` a row) as
    /// one statement; the change's own parameters follow `params`.
    fn apply_with(
        &self,
        client: &mut impl GenericClient,
        statements: Option<&mut Prepared>,
        revision: &str,
        write: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<(), ApplyError> {
        let first = params.len() + 1;
        // Only our own parameter numbers are formatted into the text.
        let (change, heads) = match self {
            HeadChange::Insert { new } => (
                format!("INSERT INTO alembic_version (version_num) VALUES (${first}) RETURNING 1"),
                vec![new],
            ),
            HeadChange::Update { old, new } => (
                format!(
                    "UPDATE alembic_version SET version_num = ${first} WHERE alembic_version.version_num = ${} RETURNING 1",
                    first + 1
                ),
                vec![new, old],
            ),
            HeadChange::Delete { old } => (
                format!("DELETE FROM alembic_version WHERE alembic_version.version_num = ${first} RETURNING 1"),
                vec![old],
            ),
        };
        // `write` reads from `moved`: a change that missed its row writes nothing, so
        // a statement outside a transaction leaves the side table as it was too.
        let sql = format!(
            "WITH moved AS ({change}), written AS ({write})
             SELECT (SELECT count(*) FROM moved), (SELECT count(*) FROM written)"
        );
        let mut all = params.to_vec();
        all.extend(
            heads
                .into_iter()
                .map(|h| (h as &(dyn ToSql + Sync), Type::TEXT)),
        );
        let moved: i64 = prepared::query_one(client, statements, &sql, &all)?.get(0);
        if moved != 1 {
            return Err(ApplyError::Race(VersionRace {
                expected: match self {
                    HeadChange::Insert { new } => new.clone(),
                    HeadChange::Update { old, .. } | HeadChange::Delete { old } => old.clone(),
                },
                revision: revision.into(),
            }));
        }
        Ok(())
    }

    /// The same change as literal SQL, for `--sql` scripts (IDs are validated
    /// alphanumeric, so quoting them is safe).
    pub fn to_sql(&self) -> String {
        match self {
            HeadChange::Insert { new } => {
                format!("INSERT INTO alembic_version (version_num) VALUES ('{new}');")
            }
            HeadChange::Update { old, new } => {
                format!("UPDATE alembic_version SET version_num='{new}' WHERE alembic_version.version_num = '{old}';")
            }
            HeadChange::Delete { old } => {
                format!("DELETE FROM alembic_version WHERE alembic_version.version_num = '{old}';")
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Db(#[from] postgres::Error),
    #[error(transparent)]
    Race(VersionRace),
}

/// What a side-table row records: the `operation` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Upgrade,
    Downgrade,
    Stamp,
    Rehash,
}

impl Operation {
    /// The operation that runs a migration in `direction`.
    pub fn of(direction: Direction) -> Operation {
        match direction {
            Direction::Up => Operation::Upgrade,
            Direction::Down => Operation::Downgrade,
        }
    }

    /// The column's value (its CHECK constraint lists the same words).
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Upgrade => "upgrade",
            Operation::Downgrade => "downgrade",
            Operation::Stamp => "stamp",
            Operation::Rehash => "rehash",
        }
    }

    /// The column's value as a bind parameter that outlives any statement.
    fn as_param(self) -> &'static &'static str {
        match self {
            Operation::Upgrade => &"upgrade",
            Operation::Downgrade => &"downgrade",
            Operation::Stamp => &"stamp",
            Operation::Rehash => &"rehash",
        }
    }
}

/// How far a side-table row got: the `status` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Completed,
    /// A non-transactional migration's marker, committed before its first statement.
    InProgress,
    Failed,
}

impl Status {
    /// The column's value (its CHECK constraint lists the same words).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Completed => "completed",
            Status::InProgress => "in_progress",
            Status::Failed => "failed",
        }
    }

    /// The column's value as a bind parameter that outlives any statement.
    fn as_param(self) -> &'static &'static str {
        match self {
            Status::Completed => &"completed",
            Status::InProgress => &"in_progress",
            Status::Failed => &"failed",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A column value outside the CHECK constraint's list (a table someone else altered).
#[derive(Debug, thiserror::Error)]
#[error("alembic_version_history holds an unknown value `{0}`")]
struct UnknownValue(String);

impl<'a> FromSql<'a> for Operation {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let text = <&str as FromSql>::from_sql(ty, raw)?;
        [
            Operation::Upgrade,
            Operation::Downgrade,
            Operation::Stamp,
            Operation::Rehash,
        ]
        .into_iter()
        .find(|o| o.as_str() == text)
        .ok_or_else(|| UnknownValue(text.into()).into())
    }

    fn accepts(ty: &Type) -> bool {
        <&str as FromSql>::accepts(ty)
    }
}

impl<'a> FromSql<'a> for Status {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let text = <&str as FromSql>::from_sql(ty, raw)?;
        [Status::Completed, Status::InProgress, Status::Failed]
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| UnknownValue(text.into()).into())
    }

    fn accepts(ty: &Type) -> bool {
        <&str as FromSql>::accepts(ty)
    }
}

/// What the side table knows about one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRecord {
    pub revision: String,
    pub operation: Operation,
    pub checksum: Option<String>,
    pub status: Status,
    pub started_at: String,
    pub duration_ms: Option<i64>,
    pub tool_version: String,
    pub error: Option<String>,
}

/// The latest side-table row of every revision.
pub fn latest_records(
    client: &mut impl GenericClient,
) -> Result<Vec<HistoryRecord>, postgres::Error> {
    let present = present(client, None)?;
    records_in(client, present)
}

/// As [`latest_records`], with the tables' existence already read.
pub fn records_in(
    client: &mut impl GenericClient,
    present: Present,
) -> Result<Vec<HistoryRecord>, postgres::Error> {
    if !present.history {
        return Ok(Vec::new());
    }
    let rows = client.query_typed(
        // The newest id per revision first (a hash aggregate over two columns), then
        // only those rows: sorting every row with its texts cost what the history has
        // grown to, and verify reads this before every migration.
        "SELECT revision, operation, checksum, status,
                to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || ' UTC',
                duration_ms, tool_version, error
           FROM alembic_version_history
          WHERE id IN (SELECT max(id) FROM alembic_version_history GROUP BY revision)
          ORDER BY revision",
        &[],
    )?;
    Ok(rows
        .iter()
        .map(|r| HistoryRecord {
            revision: r.get(0),
            operation: r.get(1),
            checksum: r.get(2),
            status: r.get(3),
            started_at: r.get(4),
            duration_ms: r.get(5),
            tool_version: r.get(6),
            error: r.get(7),
        })
        .collect())
}

/// What a run checks before it writes, of the latest side-table row of a revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatestState {
    pub revision: String,
    pub checksum: Option<String>,
    pub status: Status,
    pub error: Option<String>,
}

/// The latest row's state of every revision, by revision: the columns every run's
/// integrity check needs and nothing else (formatting each row's time and sorting the
/// rows with their texts was most of this read's cost, paid before every migration).
pub(crate) fn latest_states(
    client: &mut impl GenericClient,
    statements: Option<&mut Prepared>,
    present: Present,
) -> Result<Vec<LatestState>, postgres::Error> {
    if !present.history {
        return Ok(Vec::new());
    }
    let rows = prepared::query(
        client,
        statements,
        "SELECT revision, checksum, status, error
           FROM alembic_version_history
          WHERE id IN (SELECT max(id) FROM alembic_version_history GROUP BY revision)",
        &[],
    )?;
    let mut states: Vec<LatestState> = rows
        .iter()
        .map(|r| LatestState {
            revision: r.get(0),
            checksum: r.get(1),
            status: r.get(2),
            error: r.get(3),
        })
        .collect();
    states.sort_by(|a, b| a.revision.cmp(&b.revision));
    Ok(states)
}

/// Writes a side-table row (`NewRecord::params`), returning its id.
const INSERT_RECORD: &str = "INSERT INTO alembic_version_history (revision, operation, checksum, status, duration_ms, tool_version, error)
     VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id";

/// As [`INSERT_RECORD`], written only when the head change `moved` (the CTE it runs
/// beside, see `HeadChange::apply_with`) changed exactly one row.
const INSERT_RECORD_IF_MOVED: &str = "INSERT INTO alembic_version_history (revision, operation, checksum, status, duration_ms, tool_version, error)
     SELECT $1, $2, $3, $4, $5, $6, $7 WHERE (SELECT count(*) FROM moved) = 1 RETURNING id";

/// A side-table row to write.
#[derive(Debug, Clone)]
pub struct NewRecord<'a> {
    pub revision: &'a str,
    pub operation: Operation,
    pub checksum: Option<&'a str>,
    pub status: Status,
    pub duration_ms: Option<i64>,
    pub tool_version: &'a str,
    pub error: Option<&'a str>,
}

pub(crate) fn record(
    client: &mut impl GenericClient,
    statements: Option<&mut Prepared>,
    new: &NewRecord<'_>,
) -> Result<i64, postgres::Error> {
    let row = prepared::query_one(client, statements, INSERT_RECORD, &new.params())?;
    Ok(row.get(0))
}

impl NewRecord<'_> {
    /// The row's values as `$1`..`$7` of an INSERT, typed: a typed statement is one
    /// round trip, a prepared one three.
    fn params(&self) -> [(&(dyn ToSql + Sync), Type); 7] {
        [
            (&self.revision, Type::TEXT),
            (self.operation.as_param(), Type::TEXT),
            (&self.checksum, Type::TEXT),
            (self.status.as_param(), Type::TEXT),
            (&self.duration_ms, Type::INT8),
            (&self.tool_version, Type::TEXT),
            (&self.error, Type::TEXT),
        ]
    }

    /// The row as a literal INSERT, for `--sql` scripts (no duration: nothing is timed).
    pub fn to_sql(&self) -> String {
        let checksum = self.checksum.map_or_else(|| "NULL".to_string(), literal);
        format!(
            "INSERT INTO alembic_version_history (revision, operation, checksum, status, tool_version) VALUES ({}, {}, {checksum}, {}, {});",
            literal(self.revision),
            literal(self.operation.as_str()),
            literal(self.status.as_str()),
            literal(self.tool_version),
        )
    }
}

/// A SQL string literal.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

pub(crate) fn finish_record(
    client: &mut impl GenericClient,
    statements: Option<&mut Prepared>,
    id: i64,
    status: Status,
    duration_ms: i64,
    error: Option<&str>,
) -> Result<(), postgres::Error> {
    prepared::query(
        client,
        statements,
        "UPDATE alembic_version_history SET status = $2, duration_ms = $3, error = $4 WHERE id = $1",
        &[
            (&id, Type::INT8),
            (status.as_param(), Type::TEXT),
            (&duration_ms, Type::INT8),
            (&error, Type::TEXT),
        ],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn head_changes_follow_alembic() {
        assert_eq!(
            head_changes(&[], &v(&["a"])),
            [HeadChange::Insert { new: "a".into() }]
        );
        assert_eq!(
            head_changes(&v(&["a"]), &v(&["b"])),
            [HeadChange::Update {
                old: "a".into(),
                new: "b".into()
            }]
        );
        assert_eq!(
            head_changes(&v(&["b1"]), &v(&["b1", "b2"])),
            [HeadChange::Insert { new: "b2".into() }]
        );
        assert_eq!(
            head_changes(&v(&["b1", "b2"]), &v(&["m"])),
            [
                HeadChange::Update {
                    old: "b1".into(),
                    new: "m".into()
                },
                HeadChange::Delete { old: "b2".into() }
            ]
        );
        assert_eq!(
            head_changes(&v(&["a"]), &[]),
            [HeadChange::Delete { old: "a".into() }]
        );
    }
}

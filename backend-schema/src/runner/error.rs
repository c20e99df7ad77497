//! Errors of the migration runner: each names the revision, the file and what to do.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::graph::TargetError;
use crate::version_table::{Status, VersionRace};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrateError {
    #[error("{action} failed: {}", crate::sqlstate::explain(.source))]
    Db {
        action: String,
        #[source]
        source: postgres::Error,
    },
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    SearchPath(#[from] Box<crate::search_path::ForeignSearchPath>),
    #[error(
        "migration {revision} ({}) left the session's search_path `{search_path}`: alembic_version, which is recorded by its unqualified name as Alembic does, no longer resolves to public's; {outcome}. \
         Set it back at the end of the migration (`RESET search_path;` as its last statement: pg_dump's `set_config('search_path', '', false)` sets it for the rest of the session)",
        path.display()
    )]
    SearchPathLeft {
        revision: String,
        path: PathBuf,
        search_path: String,
        /// What stays applied (a migration outside a transaction) or that nothing does.
        outcome: String,
    },
    #[error(
        "can't locate revision identified by '{revision}': the database records it in alembic_version, but no migration in {} defines it (known: {}){}; \
         pull the latest migrations (`git pull`), or if the database is wrong, find the revision its schema equals with \
         `cargo xtask migrate stamp --detect` and record it with `cargo xtask migrate stamp --purge REV`",
        dir.display(),
        known.join(", "),
        applied.as_ref().map(|a| format!("; alembic_version_history says it was applied {a}")).unwrap_or_default()
    )]
    UnknownRevision {
        revision: String,
        dir: PathBuf,
        known: Vec<String>,
        /// When and by what, if our side table recorded it.
        applied: Option<String>,
    },
    #[error(
        "migration {revision} ({}) was edited after it was applied: recorded sha256 {recorded}, file now {current}; \
         revert the edit, or accept it with `cargo xtask migrate rehash {revision}`",
        path.display()
    )]
    ChecksumMismatch {
        revision: String,
        path: PathBuf,
        recorded: String,
        current: String,
    },
    #[error("{}", unfinished_message(.revision, .path, .status, .error.as_deref(), .invalid_indexes, .before))]
    Unfinished {
        /// What alembic_version should say once the migration is undone (its parents).
        /// Boxed: the error stays small enough to return by value.
        before: Box<str>,
        revision: String,
        path: PathBuf,
        status: Status,
        error: Option<String>,
        invalid_indexes: Vec<String>,
    },
    #[error("{0}")]
    Statement(Box<StatementFailure>),
    #[error(
        "gave up waiting {:.0?} for the migration lock (--migrator-wait); held by {}",
        waited,
        holders_text(holders, "an unknown session")
    )]
    LockWait {
        waited: Duration,
        holders: Vec<LockHolder>,
    },
    #[error(
        "{action} gave up at the lock timeout: another session holds a lock on the version tables: {}; \
         end that session or its transaction (SELECT pg_terminate_backend(PID)), or wait for it, and run the command again",
        holders_text(holders, "a session that has since let go")
    )]
    VersionTableLocked {
        action: String,
        holders: Vec<LockHolder>,
    },
    #[error("the migration lock was not held at release; another session may have migrated concurrently; check `cargo xtask migrate current`")]
    LockNotReleased,
    #[error("{}", data_loss_message(.0))]
    DataLoss(Vec<Loss>),
    #[error(transparent)]
    Race(#[from] VersionRace),
    #[error(
        "revision {revision} is not applied; `rehash` only records checksums of applied revisions"
    )]
    NotApplied { revision: String },
}

/// A statement of a migration file that PostgreSQL rejected.
#[derive(Debug)]
pub struct StatementFailure {
    pub revision: String,
    pub path: PathBuf,
    /// 1-based statement number within the file, and its line (and column) there.
    pub statement: usize,
    pub line: usize,
    pub column: Option<usize>,
    pub sql: String,
    pub message: String,
    pub code: Option<String>,
    pub detail: Option<String>,
    pub hint: Option<String>,
    /// What state the database is in now, e.g. "the database is still at f7e1c2d9b3a4".
    pub outcome: String,
    /// Our own advice (e.g. the stamp that fits an existing schema).
    pub advice: Option<String>,
}

impl fmt::Display for StatementFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let column = self.column.map(|c| format!(":{c}")).unwrap_or_default();
        write!(
            f,
            "migration {} failed at {}:{}{column} (statement {}): {}",
            self.revision,
            self.path.display(),
            self.line,
            self.statement,
            self.message
        )?;
        if let Some(code) = &self.code {
            write!(f, " [SQLSTATE {code}]")?;
        }
        if let Some(detail) = &self.detail {
            write!(f, "\n  detail: {detail}")?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        let first_line = self
            .sql
            .lines()
            .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with("--"));
        write!(f, "\n  statement: {}", first_line.unwrap_or("").trim())?;
        write!(f, "\n  {}", self.outcome)?;
        if let Some(advice) = &self.advice {
            write!(f, "\n  {advice}")?;
        }
        Ok(())
    }
}

/// A session holding the migration lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockHolder {
    pub pid: i32,
    pub application_name: String,
    pub backend_start: String,
    pub state: String,
}

impl LockHolder {
    /// A row of `pid, application_name, backend_start, state` (text), as the queries that
    /// name lock holders select them.
    pub(crate) fn from_row(row: &postgres::Row) -> LockHolder {
        LockHolder {
            pid: row.get(0),
            application_name: row.get(1),
            backend_start: row.get(2),
            state: row.get(3),
        }
    }
}

impl fmt::Display for LockHolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let app = if self.application_name.is_empty() {
            "(no application_name)"
        } else {
            &self.application_name
        };
        write!(
            f,
            "pid {} ({app}, connected {}, {})",
            self.pid, self.backend_start, self.state
        )
    }
}

/// The sessions holding the migration lock, or `nobody` when none is known (the holder
/// may have released it between the failed try and the look).
pub fn holders_text(holders: &[LockHolder], nobody: &str) -> String {
    if holders.is_empty() {
        return nobody.into();
    }
    holders
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Data a downgrade would destroy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loss {
    Table {
        table: String,
        rows: i64,
    },
    Column {
        table: String,
        column: String,
        values: i64,
    },
}

impl fmt::Display for Loss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Loss::Table { table, rows } => write!(f, "table {table} ({rows} rows)"),
            Loss::Column {
                table,
                column,
                values,
            } => write!(f, "column {table}.{column} ({values} non-null values)"),
        }
    }
}

fn data_loss_message(losses: &[Loss]) -> String {
    let list: Vec<String> = losses.iter().map(|l| format!("  - {l}")).collect();
    format!(
        "this downgrade would destroy data:\n{}\nnothing was changed; take a backup (`cargo xtask backup`) and re-run with --yes to accept the loss",
        list.join("\n")
    )
}

fn unfinished_message(
    revision: &str,
    path: &std::path::Path,
    status: &Status,
    error: Option<&str>,
    invalid: &[String],
    before: &str,
) -> String {
    let mut message = format!(
        "migration {revision} ({}) is marked {status} in alembic_version_history: it runs outside a transaction and did not complete, so the database may hold part of it",
        path.display()
    );
    if let Some(error) = error {
        message.push_str(&format!("\n  its error: {error}"));
    }
    if !invalid.is_empty() {
        message.push_str(&format!(
            "\n  INVALID indexes left behind: {} (drop each with DROP INDEX CONCURRENTLY)",
            invalid.join(", ")
        ));
    }
    message.push_str(&format!(
        "\n  finish or undo its statements by hand, then record the result with `cargo xtask migrate stamp {revision}` (done) or `cargo xtask migrate stamp {before}` (undone)"
    ));
    message
}

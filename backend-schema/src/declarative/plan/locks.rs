//! What a planned statement costs a busy table: the lock it takes on each table
//! (PostgreSQL 15's documented levels, as `pg_locks` names them) and whether it reads or
//! rewrites the rows while holding it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// PostgreSQL's table lock modes, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LockMode {
    AccessShare,
    RowShare,
    RowExclusive,
    /// Reads and writes go on (VALIDATE CONSTRAINT, CREATE INDEX CONCURRENTLY, COMMENT).
    ShareUpdateExclusive,
    /// Blocks writes (CREATE INDEX).
    Share,
    /// Blocks writes (ADD FOREIGN KEY, on both tables).
    ShareRowExclusive,
    Exclusive,
    /// Blocks everything, reads included.
    AccessExclusive,
}

impl LockMode {
    /// Every mode, weakest first.
    pub const ALL: [LockMode; 8] = [
        LockMode::AccessShare,
        LockMode::RowShare,
        LockMode::RowExclusive,
        LockMode::ShareUpdateExclusive,
        LockMode::Share,
        LockMode::ShareRowExclusive,
        LockMode::Exclusive,
        LockMode::AccessExclusive,
    ];

    /// The mode `pg_locks.mode` names (`None` for row and advisory locks' other names).
    pub fn from_pg_name(name: &str) -> Option<LockMode> {
        LockMode::ALL.into_iter().find(|m| m.pg_name() == name)
    }

    /// The name `pg_locks.mode` shows.
    pub fn pg_name(self) -> &'static str {
        match self {
            LockMode::AccessShare => "AccessShareLock",
            LockMode::RowShare => "RowShareLock",
            LockMode::RowExclusive => "RowExclusiveLock",
            LockMode::ShareUpdateExclusive => "ShareUpdateExclusiveLock",
            LockMode::Share => "ShareLock",
            LockMode::ShareRowExclusive => "ShareRowExclusiveLock",
            LockMode::Exclusive => "ExclusiveLock",
            LockMode::AccessExclusive => "AccessExclusiveLock",
        }
    }

    /// Whether ordinary reads and writes of the table wait while it is held.
    pub fn blocks_writes(self) -> bool {
        self >= LockMode::Share
    }
}

impl fmt::Display for LockMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.pg_name())
    }
}

/// What a statement does to the rows of the table it locks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Work {
    /// Catalog only: done in milliseconds once the lock is granted.
    #[default]
    Catalog,
    /// Reads every row (a validation).
    Scan,
    /// Builds an index from every row.
    IndexBuild,
    /// Writes every row anew (a type change, a volatile default).
    Rewrite,
}

impl fmt::Display for Work {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Work::Catalog => "catalog only",
            Work::Scan => "scans the table",
            Work::IndexBuild => "builds an index",
            Work::Rewrite => "rewrites the table",
        })
    }
}

/// The strongest lock per table over `locks`, as `verify` reports a migration's lock
/// profile ("Mode on table"), for the tables in `existing`.
pub fn profile<'a>(
    locks: impl IntoIterator<Item = &'a (String, LockMode)>,
    existing: &BTreeSet<String>,
) -> Vec<String> {
    let mut strongest: BTreeMap<&str, LockMode> = BTreeMap::new();
    for (table, mode) in locks {
        if !existing.contains(table) {
            continue;
        }
        let entry = strongest.entry(table).or_insert(*mode);
        *entry = (*entry).max(*mode);
    }
    strongest
        .into_iter()
        .map(|(table, mode)| format!("{mode} on {table}"))
        .collect()
}

//! The migration lock: a session-level advisory lock taken by polling.
//!
//! Polling `pg_try_advisory_lock` instead of blocking in `pg_advisory_lock` matters: a
//! blocked waiter holds a snapshot that `CREATE INDEX CONCURRENTLY` in the lock
//! holder's migration waits for, and the two deadlock.

use std::time::{Duration, Instant};

use postgres::types::Type;
use postgres::Client;

use super::db;
use super::error::{LockHolder, MigrateError};
use crate::prepared::Prepared;

/// The advisory lock key: "bschema" in ASCII. Per database, like `alembic_version`.
pub const LOCK_KEY: i64 = 0x0062_7363_6865_6d61;

const POLL: Duration = Duration::from_millis(100);
const REPORT_EVERY: Duration = Duration::from_secs(5);

/// Takes the lock, calling `waiting` with the holders when it is busy (at once, then
/// every few seconds). Returns how long it waited, if it had to.
pub(crate) fn acquire(
    client: &mut Client,
    mut prepared: Option<&mut Prepared>,
    max_wait: Duration,
    mut waiting: impl FnMut(&[LockHolder]),
) -> Result<Option<Duration>, MigrateError> {
    let started = Instant::now();
    let mut last_report: Option<Instant> = None;
    loop {
        let got: bool = crate::prepared::query_one(
            client,
            prepared.as_deref_mut(),
            "SELECT pg_try_advisory_lock($1)",
            &[(&LOCK_KEY, Type::INT8)],
        )
        .map_err(db("taking the migration lock"))?
        .get(0);
        if got {
            return Ok(last_report.map(|_| started.elapsed()));
        }
        if started.elapsed() >= max_wait {
            return Err(MigrateError::LockWait {
                waited: started.elapsed(),
                holders: holders(client).unwrap_or_default(),
            });
        }
        if last_report.is_none_or(|at| at.elapsed() >= REPORT_EVERY) {
            waiting(&holders(client).unwrap_or_default());
            last_report = Some(Instant::now());
        }
        std::thread::sleep(POLL);
    }
}

/// Releases the lock and checks we really held it.
pub(crate) fn release(
    client: &mut Client,
    prepared: Option<&mut Prepared>,
) -> Result<(), MigrateError> {
    if client.is_closed() {
        // The session is gone, and its locks with it.
        return Ok(());
    }
    let released: bool = crate::prepared::query_one(
        client,
        prepared,
        "SELECT pg_advisory_unlock($1)",
        &[(&LOCK_KEY, Type::INT8)],
    )
    .map_err(db("releasing the migration lock"))?
    .get(0);
    if released {
        Ok(())
    } else {
        Err(MigrateError::LockNotReleased)
    }
}

/// Sessions holding our lock in this database.
pub fn holders(client: &mut Client) -> Result<Vec<LockHolder>, postgres::Error> {
    let (classid, objid) = ((LOCK_KEY >> 32) as u32, (LOCK_KEY & 0xffff_ffff) as u32);
    let rows = client.query(
        "SELECT a.pid, coalesce(a.application_name, ''),
                coalesce(to_char(a.backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || ' UTC', '?'),
                coalesce(a.state, '?')
           FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
          WHERE l.locktype = 'advisory' AND l.granted
            AND l.classid = $1 AND l.objid = $2 AND l.objsubid = 1
            AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        &[&classid, &objid],
    )?;
    Ok(rows.iter().map(LockHolder::from_row).collect())
}

/// Other sessions holding a granted lock on our version tables (in the search path's
/// first schema): who to name when reading them ran into the lock timeout.
pub fn version_table_holders(client: &mut Client) -> Result<Vec<LockHolder>, postgres::Error> {
    let rows = client.query(
        "SELECT DISTINCT a.pid, coalesce(a.application_name, ''),
                coalesce(to_char(a.backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || ' UTC', '?'),
                coalesce(a.state, '?') || coalesce(', in a transaction since ' || to_char(a.xact_start AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || ' UTC', '')
           FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
          WHERE l.locktype = 'relation' AND l.granted AND l.pid <> pg_backend_pid()
            AND l.relation IN (SELECT c.oid FROM pg_class c
                                WHERE c.relnamespace = current_schema()::regnamespace
                                  AND c.relname IN ($1, $2))
          ORDER BY 1",
        &[
            &crate::version_table::VERSION_TABLE,
            &crate::version_table::HISTORY_TABLE,
        ],
    )?;
    Ok(rows.iter().map(LockHolder::from_row).collect())
}

//! The table locks a statement outside a transaction takes, seen from a second session:
//! its own session cannot tell (each statement commits and releases its locks before we
//! can ask), so a watcher holds a concurrent writer's lock (ROW EXCLUSIVE) on every
//! table that existed before, as a busy production table has, and reads `pg_locks` for
//! the migration's backend while the statement waits behind that writer.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use postgres::Client;

use crate::declarative::plan::LockMode;

/// How often the watcher reads `pg_locks`: the statement waits for the writer's
/// transaction, so this is also how long the watcher adds to it.
const POLL: Duration = Duration::from_millis(2);

/// The tables a trace watches and their partitions, as in `TableStates::capture`.
const WATCHED: &str =
    "(SELECT unnest($1::oid[]) UNION SELECT inhrelid FROM pg_inherits WHERE inhparent = ANY($1))";

/// The second session, opened once and kept for the run.
pub struct LockObserver {
    client: Client,
}

impl LockObserver {
    pub fn new(client: Client) -> LockObserver {
        LockObserver { client }
    }

    /// Runs `statement` (on the session whose backend is `pid`) while watching it, and
    /// returns what it returned with the strongest lock seen per table of `tables`,
    /// granted or waited for. A statement that takes no lock conflicting with a writer
    /// (ROW EXCLUSIVE) never waits and may end unseen: such locks block no writes.
    pub fn observe<T>(
        &mut self,
        pid: i32,
        tables: &[u32],
        statement: impl FnOnce() -> T,
    ) -> Result<(T, Vec<(String, LockMode)>), postgres::Error> {
        let client = &mut self.client;
        client.batch_execute("BEGIN")?;
        if let Err(err) = hold_writer_locks(client, tables) {
            let _ = client.batch_execute("ROLLBACK");
            return Err(err);
        }
        let done = AtomicBool::new(false);
        let (result, watched) = std::thread::scope(|scope| {
            let watcher = scope.spawn(|| watch(client, pid, tables, &done));
            let result = statement();
            done.store(true, Ordering::SeqCst);
            let watched = watcher.join().expect("the lock watcher does not panic");
            (result, watched)
        });
        if watched.is_err() {
            let _ = self.client.batch_execute("ROLLBACK");
        }
        Ok((result, watched?))
    }
}

/// Takes a writer's lock on every watched table, in the open transaction.
fn hold_writer_locks(client: &mut Client, tables: &[u32]) -> Result<(), postgres::Error> {
    // The server quotes the names (regclass's text form); nothing here is user input.
    let names: Option<String> = client
        .query_one(
            &format!("SELECT string_agg(oid::regclass::text, ', ') FROM {WATCHED} AS w(oid)"),
            &[&tables],
        )?
        .get(0);
    if let Some(names) = names {
        client.batch_execute(&format!("LOCK TABLE {names} IN ROW EXCLUSIVE MODE"))?;
    }
    Ok(())
}

/// Reads `pg_locks` for `pid` until the statement ends; the writer's transaction ends
/// as soon as the statement is seen waiting (for it or for anything else), so the
/// statement goes on, still watched, to its end.
fn watch(
    client: &mut Client,
    pid: i32,
    tables: &[u32],
    done: &AtomicBool,
) -> Result<Vec<(String, LockMode)>, postgres::Error> {
    let query = format!(
        "SELECT c.relname::text, l.mode::text,
                EXISTS (SELECT 1 FROM pg_locks w WHERE w.pid = $2 AND NOT w.granted)
           FROM pg_class c LEFT JOIN pg_locks l ON l.relation = c.oid AND l.pid = $2
                AND l.locktype = 'relation'
          WHERE c.oid IN {WATCHED}"
    );
    let mut seen: BTreeMap<String, LockMode> = BTreeMap::new();
    let mut writing = true;
    loop {
        // Read after looking at `done`, so a statement that ended is read once more.
        let finished = done.load(Ordering::SeqCst);
        let mut waiting = false;
        for row in client.query(&query, &[&tables, &pid])? {
            waiting |= row.get::<_, bool>(2);
            let mode: Option<String> = row.get(1);
            if let Some(mode) = mode.as_deref().and_then(LockMode::from_pg_name) {
                let entry = seen.entry(row.get(0)).or_insert(mode);
                *entry = (*entry).max(mode);
            }
        }
        if writing && (waiting || finished) {
            client.batch_execute("COMMIT")?;
            writing = false;
        }
        if finished {
            break;
        }
        std::thread::sleep(POLL);
    }
    Ok(seen.into_iter().collect())
}

//! The table locks a statement outside a transaction takes, seen from a second session:
//! its own session cannot tell (each statement commits and releases its locks before we
//! can ask), so a watcher holds a concurrent writer's lock (ROW EXCLUSIVE) on every
//! table that existed before, as a busy production table has, and reads `pg_locks` for
//! the migration's backend while the statement waits behind that writer.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use postgres::types::Type;
use postgres::{Client, Statement};

use crate::declarative::plan::LockMode;
use crate::prepared::Prepared;

/// How often the watcher reads `pg_locks`: the statement waits for the writer's
/// transaction, so this is also how long the watcher adds to it.
const POLL: Duration = Duration::from_millis(2);

/// How long [`LockObserver::is_alive`] waits for the session's answer.
const ALIVE_WITHIN: Duration = Duration::from_secs(10);

/// The tables a trace watches and their partitions, as in `TableStates::capture`.
const WATCHED: &str =
    "(SELECT unnest($1::oid[]) UNION SELECT inhrelid FROM pg_inherits WHERE inhparent = ANY($1))";

/// The second session, opened once and kept for the run (or, in `verify`, for every
/// run on the stairway: a session opened per migration cost more than the watching).
pub struct LockObserver {
    client: Client,
    prepared: Prepared,
}

impl LockObserver {
    pub fn new(client: Client) -> LockObserver {
        LockObserver {
            client,
            prepared: Prepared::default(),
        }
    }

    /// Whether the session still answers: a kept watcher sits idle between migrations,
    /// where a migration may have ended it (`pg_terminate_backend`) or the database's
    /// `idle_session_timeout` closed it.
    pub fn is_alive(&mut self) -> bool {
        self.client.is_valid(ALIVE_WITHIN).is_ok()
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
        let prepared = hold_writer_locks(client, &mut self.prepared, tables).and_then(|()| {
            self.prepared
                .statement(client, &watch_query(), &WATCH_TYPES)
        });
        let query = match prepared {
            Ok(query) => query,
            Err(err) => {
                let _ = client.batch_execute("ROLLBACK");
                return Err(err);
            }
        };
        let done = AtomicBool::new(false);
        let (result, watched) = std::thread::scope(|scope| {
            let watcher = scope.spawn(|| watch(client, &query, pid, tables, &done));
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
fn hold_writer_locks(
    client: &mut Client,
    prepared: &mut Prepared,
    tables: &[u32],
) -> Result<(), postgres::Error> {
    // The server quotes the names (`%I`); nothing here is user input. Schema-qualified
    // from the catalog, not `regclass`'s text form: that one asks the search_path about
    // every table, and this runs before every statement outside a transaction.
    let names: Option<String> = prepared
        .query_one(
            client,
            &format!(
                "SELECT string_agg(format('%I.%I', n.nspname, c.relname), ', ')
                   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE c.oid IN {WATCHED}"
            ),
            &[(&tables, Type::OID_ARRAY)],
        )?
        .get(0);
    if let Some(names) = names {
        client.batch_execute(&format!("LOCK TABLE {names} IN ROW EXCLUSIVE MODE"))?;
    }
    Ok(())
}

/// The parameter types of [`watch_query`]: the watched tables, the migration's backend.
const WATCH_TYPES: [Type; 2] = [Type::OID_ARRAY, Type::INT4];

/// What [`watch`] reads at every poll, prepared once per session: each poll then only
/// binds and runs it (a statement parsed at every poll spent most of its time in the
/// parser). `pg_locks` is read once per poll (each mention builds the whole lock table),
/// with a row per lock held on a watched table, not one per watched table: one row
/// with no table when there is none.
fn watch_query() -> String {
    format!(
        "WITH l AS MATERIALIZED (
              SELECT relation, locktype, mode::text AS mode, granted FROM pg_locks WHERE pid = $2)
         SELECT t.relname, t.mode, w.waiting
           FROM (SELECT EXISTS (SELECT 1 FROM l WHERE NOT l.granted) AS waiting) w
           LEFT JOIN (SELECT c.relname::text AS relname, l.mode
                        FROM l JOIN pg_class c ON c.oid = l.relation
                       WHERE l.locktype = 'relation' AND c.oid IN {WATCHED}) t ON true"
    )
}

/// Reads `pg_locks` for `pid` until the statement ends; the writer's transaction ends
/// as soon as the statement is seen waiting (for it or for anything else), so the
/// statement goes on, still watched, to its end.
fn watch(
    client: &mut Client,
    query: &Statement,
    pid: i32,
    tables: &[u32],
    done: &AtomicBool,
) -> Result<Vec<(String, LockMode)>, postgres::Error> {
    let mut seen: BTreeMap<String, LockMode> = BTreeMap::new();
    let mut writing = true;
    loop {
        // Read after looking at `done`, so a statement that ended is read once more.
        let finished = done.load(Ordering::SeqCst);
        let mut waiting = false;
        for row in client.query(query, &[&tables, &pid])? {
            waiting |= row.get::<_, bool>(2);
            let (table, mode): (Option<String>, Option<String>) = (row.get(0), row.get(1));
            if let (Some(table), Some(mode)) =
                (table, mode.as_deref().and_then(LockMode::from_pg_name))
            {
                let entry = seen.entry(table).or_insert(mode);
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

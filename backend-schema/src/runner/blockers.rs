//! Who blocks a migration: a second session that watches, while a migration runs, which
//! sessions `pg_blocking_pids` names for ours, so a lock timeout can say who held the
//! lock (our own session cannot ask while it waits, and after the timeout it no longer
//! waits).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use postgres::Client;

use super::error::LockHolder;

const POLL: Duration = Duration::from_millis(50);

/// The watching session, on its own thread until dropped.
pub struct BlockerWatch {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<LockHolder>>>,
    thread: Option<JoinHandle<()>>,
}

impl BlockerWatch {
    /// Watches for sessions blocking `pid`. `connect` opens the watching session, on the
    /// watcher's thread so the migration does not wait for it; if it fails, nothing is
    /// watched and lock timeouts are reported without names.
    pub fn start(pid: i32, connect: impl FnOnce() -> Option<Client> + Send + 'static) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, seen) = (stop.clone(), seen.clone());
            std::thread::spawn(move || {
                let Some(mut client) = connect() else { return };
                while !stop.load(Ordering::Relaxed) {
                    match blocking(&mut client, pid) {
                        Ok(found) if !found.is_empty() => {
                            *seen.lock().unwrap_or_else(|e| e.into_inner()) = found;
                        }
                        Ok(_) => {}
                        Err(_) => return,
                    }
                    std::thread::sleep(POLL);
                }
            })
        };
        BlockerWatch {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    /// The sessions last seen blocking ours, forgotten once read (each attempt of a
    /// migration is judged on its own).
    pub fn take(&self) -> Vec<LockHolder> {
        std::mem::take(&mut *self.seen.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Drop for BlockerWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The sessions `pg_blocking_pids` names for `pid`: pid, application, state and how long
/// their transaction (which holds the lock until it ends) has been open.
fn blocking(client: &mut Client, pid: i32) -> Result<Vec<LockHolder>, postgres::Error> {
    let rows = client.query(
        "SELECT a.pid, coalesce(a.application_name, ''),
                coalesce(to_char(a.backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || ' UTC', '?'),
                coalesce(a.state, '?')
                  || coalesce(', holding its locks for ' || round(extract(epoch FROM clock_timestamp() - a.xact_start)::numeric, 1) || 's', '')
           FROM pg_stat_activity a
          WHERE a.pid = ANY(pg_blocking_pids($1))
          ORDER BY a.pid",
        &[&pid],
    )?;
    Ok(rows.iter().map(LockHolder::from_row).collect())
}

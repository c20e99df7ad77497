//! Who blocks a migration: a second session that watches, while a migration runs, which
//! sessions `pg_blocking_pids` names for ours, so a lock timeout can say who held the
//! lock (our own session cannot ask while it waits, and after the timeout it no longer
//! waits). The session opens only once a migration has run for `GRACE`: a run that ends
//! sooner (an empty database's whole chain, a database at head) never pays for it, and
//! stopping wakes the watcher at once instead of waiting out its poll.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use postgres::Client;

use super::error::LockHolder;

const POLL: Duration = Duration::from_millis(50);
/// How long a migration runs before the watcher connects: far below any useful
/// `lock_timeout`, far above an uncontended chain on an empty database.
const GRACE: Duration = Duration::from_millis(40);

/// Set once the watcher must stop; the condition variable wakes it.
type Stop = Arc<(Mutex<bool>, Condvar)>;

/// Waits up to `timeout` for the stop signal; true when it came.
fn stopped_within(stop: &Stop, timeout: Duration) -> bool {
    let (flag, wake) = &**stop;
    let guard = flag.lock().unwrap_or_else(|e| e.into_inner());
    let (guard, _) = wake
        .wait_timeout_while(guard, timeout, |stopped| !*stopped)
        .unwrap_or_else(|e| e.into_inner());
    *guard
}

/// The watching session, on its own thread until dropped.
pub struct BlockerWatch {
    stop: Stop,
    seen: Arc<Mutex<Vec<LockHolder>>>,
    thread: Option<JoinHandle<()>>,
}

impl BlockerWatch {
    /// Watches for sessions blocking `pid`. `connect` opens the watching session, on the
    /// watcher's thread so the migration does not wait for it; if it fails, nothing is
    /// watched and lock timeouts are reported without names.
    pub fn start(pid: i32, connect: impl FnOnce() -> Option<Client> + Send + 'static) -> Self {
        let stop: Stop = Arc::new((Mutex::new(false), Condvar::new()));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, seen) = (stop.clone(), seen.clone());
            std::thread::spawn(move || {
                if stopped_within(&stop, GRACE) {
                    return;
                }
                let Some(mut client) = connect() else { return };
                loop {
                    match blocking(&mut client, pid) {
                        Ok(found) if !found.is_empty() => {
                            *seen.lock().unwrap_or_else(|e| e.into_inner()) = found;
                        }
                        Ok(_) => {}
                        Err(_) => return,
                    }
                    if stopped_within(&stop, POLL) {
                        return;
                    }
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
        let (flag, wake) = &*self.stop;
        *flag.lock().unwrap_or_else(|e| e.into_inner()) = true;
        wake.notify_all();
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;

    #[test]
    fn a_run_shorter_than_the_grace_opens_no_session_and_stops_at_once() {
        let connected = Arc::new(AtomicBool::new(false));
        let began = Instant::now();
        {
            let connected = connected.clone();
            let _watch = BlockerWatch::start(1, move || {
                connected.store(true, Ordering::SeqCst);
                None
            });
        }
        assert!(
            began.elapsed() < GRACE,
            "dropping the watch took {:?}",
            began.elapsed()
        );
        assert!(!connected.load(Ordering::SeqCst));
    }

    #[test]
    fn a_longer_run_opens_the_session() {
        let connected = Arc::new(AtomicBool::new(false));
        {
            let connected = connected.clone();
            let _watch = BlockerWatch::start(1, move || {
                connected.store(true, Ordering::SeqCst);
                None
            });
            std::thread::sleep(GRACE * 3);
        }
        assert!(connected.load(Ordering::SeqCst));
    }
}

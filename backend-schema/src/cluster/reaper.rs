//! Making sure no server of ours outlives us: the registry of live clusters that a
//! Ctrl-C stops, the long-lived thread that spawns servers, and the sweep of
//! directories left behind by a process that was killed.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Mutex, Once, OnceLock};
use std::time::{Duration, Instant};

/// Prefix of every throwaway cluster directory; the sweep only looks at these.
pub(crate) const DIR_PREFIX: &str = "bsc-";
/// File in a cluster directory naming the process that owns it.
pub(crate) const OWNER_FILE: &str = "owner";
/// File in a cluster directory that asks the sweep to leave it alone (kept for debugging).
pub(crate) const KEEP_FILE: &str = "KEEP";

/// Every cluster directory of ours that exists, from the moment it is made, with the pid
/// of its server while one runs: a signal can come while a directory is still being
/// filled (segments and merge orders start clusters all through a verify).
static LIVE: Mutex<Vec<(Option<u32>, PathBuf)>> = Mutex::new(Vec::new());

fn live() -> std::sync::MutexGuard<'static, Vec<(Option<u32>, PathBuf)>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Makes a new cluster directory with `make` and registers it, under the lock the
/// interrupt handler holds until the exit: no directory is made that it does not know.
pub(crate) fn make_dir(
    make: impl FnOnce() -> std::io::Result<tempfile::TempDir>,
) -> std::io::Result<tempfile::TempDir> {
    install_interrupt_handler();
    let mut live = live();
    let dir = make()?;
    live.push((None, dir.path().to_path_buf()));
    Ok(dir)
}

/// The server `pid` now serves `dir`.
pub(crate) fn register(pid: u32, dir: &Path) {
    install_interrupt_handler();
    let mut live = live();
    match live.iter_mut().find(|(_, d)| d == dir) {
        Some(entry) => entry.0 = Some(pid),
        None => live.push((Some(pid), dir.to_path_buf())),
    }
}

/// The server `pid` stopped; its directory stays until [`forget_dir`].
pub(crate) fn unregister(pid: u32) {
    for entry in live().iter_mut().filter(|(p, _)| *p == Some(pid)) {
        entry.0 = None;
    }
}

/// `dir` was removed (or kept on purpose).
pub(crate) fn forget_dir(dir: &Path) {
    live().retain(|(_, d)| d != dir);
}

/// On Ctrl-C (or SIGTERM), stop every registered server and remove every registered
/// directory before exiting: destructors do not run when a signal ends the process. The
/// lock is held until the exit, so no cluster starts meanwhile; a directory another
/// thread is still filling is removed again until it is gone. If the application
/// installed its own handler first, that one wins and pdeathsig plus the next sweep
/// clean up instead.
fn install_interrupt_handler() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let _ = ctrlc::set_handler(|| {
            let live = live();
            for (pid, _) in live.iter() {
                if let Some(pid) = pid {
                    stop_process(*pid, Duration::from_secs(5));
                }
            }
            for (_, dir) in live.iter() {
                let deadline = Instant::now() + Duration::from_secs(2);
                while fs::remove_dir_all(dir).is_err() && dir.exists() && Instant::now() < deadline
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            std::process::exit(130);
        });
    });
}

/// Runs `f` on one thread that lives as long as the process. Servers must be spawned
/// there: the parent-death signal fires when the *thread* that forked the child exits
/// (prctl(2)), and a test or worker thread may end long before its cluster does.
pub(crate) fn on_spawner_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    type Job = Box<dyn FnOnce() + Send>;
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    let sender = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("pg-spawner".into())
            .spawn(move || rx.into_iter().for_each(|job| job()))
            .expect("spawn the pg-spawner thread");
        Mutex::new(tx)
    });
    let (result_tx, result_rx) = mpsc::channel();
    let job: Job = Box::new(move || {
        let _ = result_tx.send(f());
    });
    sender
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send(job)
        .expect("pg-spawner thread is alive");
    result_rx.recv().expect("pg-spawner thread answered")
}

/// Sends SIGQUIT (immediate shutdown: the data is disposable), waits up to `grace`,
/// then SIGKILLs the process group.
pub(crate) fn stop_process(pid: u32, grace: Duration) {
    let pid = pid as libc::pid_t;
    // SAFETY: plain signal delivery.
    unsafe { libc::kill(pid, libc::SIGQUIT) };
    if !wait_until_gone(pid as u32, grace) {
        // SAFETY: the server leads its own process group (setpgid in os_user).
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        wait_until_gone(pid as u32, Duration::from_secs(2));
    }
}

/// Polls until `pid` no longer exists or is a zombie.
pub(crate) fn wait_until_gone(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if !process_alive(pid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

pub(crate) fn process_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(stat_state(&stat), Some('Z') | Some('X')),
        Err(_) => false,
    }
}

fn stat_state(stat: &str) -> Option<char> {
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// The kernel's start time of `pid` (field 22 of /proc/PID/stat): together with the pid
/// it identifies a process even after the pid is reused.
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = stat.rsplit_once(')')?.1;
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// Content of the owner file for the current process.
/// Writes `dir`'s owner file under another name, then renames it into place: a sweep
/// in another process reading it half-written saw no live owner and removed the
/// directory of a cluster that was starting (seen in CI as a template copy failing).
pub(crate) fn write_owner(dir: &Path) -> std::io::Result<()> {
    let staged = dir.join(".owner.partial");
    fs::write(&staged, owner_record())?;
    fs::rename(&staged, dir.join(OWNER_FILE))
}

fn owner_record() -> String {
    let pid = std::process::id();
    format!("{pid} {}\n", start_time(pid).unwrap_or(0))
}

/// Whether the process recorded in an owner file is still the one running.
fn owner_alive(record: &str) -> bool {
    let mut fields = record.split_whitespace();
    let (Some(Ok(pid)), Some(Ok(started))) = (
        fields.next().map(str::parse::<u32>),
        fields.next().map(str::parse::<u64>),
    ) else {
        return false;
    };
    process_alive(pid) && start_time(pid) == Some(started)
}

/// Removes cluster directories under `root` whose owner process is gone, first stopping
/// any server still running from them. Runs once per process.
pub(crate) fn sweep_once(root: &Path) {
    static SWEEP: Once = Once::new();
    SWEEP.call_once(|| {
        let _ = sweep(root);
    });
}

/// One pass of the sweep; returns the directories it removed.
pub fn sweep(root: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(entries) = fs::read_dir(root) else {
        return removed;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        let is_ours = entry.file_name().to_string_lossy().starts_with(DIR_PREFIX);
        if !is_ours || dir.join(KEEP_FILE).exists() {
            continue;
        }
        // No owner file: not one of ours (or not yet written): leave it alone.
        let Ok(record) = fs::read_to_string(dir.join(OWNER_FILE)) else {
            continue;
        };
        if owner_alive(&record) {
            continue;
        }
        if let Some(pid) = orphan_postmaster(&dir) {
            stop_process(pid, Duration::from_secs(5));
        }
        if fs::remove_dir_all(&dir).is_ok() {
            removed.push(dir);
        }
    }
    removed
}

/// The pid in `dir/data/postmaster.pid`, if that process is a postgres serving `dir`.
fn orphan_postmaster(dir: &Path) -> Option<u32> {
    let pid: u32 = fs::read_to_string(dir.join("data").join("postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let cmdline = String::from_utf8_lossy(&cmdline);
    cmdline.contains(dir.to_str()?).then_some(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_read_after_the_command_name() {
        let stat = "42 (post gres) S 1 42 42 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 777 0";
        assert_eq!(stat_state(stat), Some('S'));
    }

    #[test]
    fn a_record_of_a_dead_process_is_not_alive() {
        assert!(!owner_alive("4000000 1"));
        assert!(!owner_alive("garbage"));
        assert!(owner_alive(&owner_record()));
    }
}

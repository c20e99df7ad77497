//! The unprivileged OS account that runs `initdb` and the server when we are root.
//!
//! PostgreSQL refuses to run as root, and CI runs as root, so the cluster code drops
//! privileges itself in the child between `fork` and `exec` instead of relying on
//! `sudo` or `runuser` (which would add a process that survives us when we are killed).

use std::ffi::CString;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use super::ClusterError;

/// Who the server processes run as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
}

impl RunAs {
    /// The current user when not root; otherwise the account named by
    /// `BACKEND_SCHEMA_PG_USER` (default `postgres`).
    pub fn for_server() -> Result<RunAs, ClusterError> {
        // SAFETY: geteuid/getegid cannot fail.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        if uid != 0 {
            return Ok(RunAs { uid, gid });
        }
        let name = std::env::var("BACKEND_SCHEMA_PG_USER").unwrap_or_else(|_| "postgres".into());
        lookup_user(&name).ok_or(ClusterError::NoUnprivilegedUser { name })
    }

    pub fn is_current_user(&self) -> bool {
        // SAFETY: geteuid cannot fail.
        self.uid == unsafe { libc::geteuid() }
    }

    /// Gives `path` to this user (a no-op when we already are this user).
    pub fn chown(&self, path: &Path) -> io::Result<()> {
        if self.is_current_user() {
            return Ok(());
        }
        std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid))
    }

    /// Makes `command` run as this user. With `die_with_parent`, the child also gets
    /// SIGQUIT (PostgreSQL's immediate shutdown) when the thread that spawned it exits, and is
    /// put in its own process group so a terminal's Ctrl-C reaches only us: we then stop
    /// it in order.
    pub fn apply(&self, command: &mut Command, die_with_parent: bool) {
        let RunAs { uid, gid } = *self;
        let switch_user = !self.is_current_user();
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: the closure only calls async-signal-safe libc functions.
        unsafe {
            command.pre_exec(move || {
                if die_with_parent && libc::setpgid(0, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                if switch_user {
                    let groups = [gid];
                    if libc::setgroups(1, groups.as_ptr()) != 0
                        || libc::setgid(gid) != 0
                        || libc::setuid(uid) != 0
                    {
                        return Err(io::Error::last_os_error());
                    }
                }
                if die_with_parent {
                    // Set after the uid change: changing credentials clears it (prctl(2)).
                    // SIGQUIT is an immediate shutdown: no checkpoint for data nobody keeps.
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    // The parent may have died between fork and prctl.
                    if libc::getppid() != parent {
                        libc::_exit(1);
                    }
                }
                Ok(())
            });
        }
    }
}

fn lookup_user(name: &str) -> Option<RunAs> {
    let c_name = CString::new(name).ok()?;
    // SAFETY: getpwnam returns a pointer to static storage or null; we copy out at once.
    // Called before any threads of ours spawn children, and only read here.
    let entry = unsafe { libc::getpwnam(c_name.as_ptr()) };
    if entry.is_null() {
        return None;
    }
    // SAFETY: non-null entry from getpwnam.
    let (uid, gid) = unsafe { ((*entry).pw_uid, (*entry).pw_gid) };
    (uid != 0).then_some(RunAs { uid, gid })
}

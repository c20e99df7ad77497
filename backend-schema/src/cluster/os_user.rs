//! The unprivileged OS account that runs `initdb` and the server when we are root.
//!
//! PostgreSQL refuses to run as root, and CI runs as root, so the cluster code drops
//! privileges itself in the child between `fork` and `exec` instead of relying on
//! `sudo` or `runuser` (which would add a process that survives us when we are killed).

use std::ffi::{CStr, CString};
use std::io;
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::ClusterError;

/// Who the server processes run as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
}

impl RunAs {
    /// The account throwaway and dev servers run as: see [`ServerAccount::choose`].
    pub fn for_server() -> Result<RunAs, ClusterError> {
        ServerAccount::choose().map(|account| account.run_as)
    }

    pub fn is_current_user(&self) -> bool {
        // SAFETY: geteuid cannot fail.
        self.uid == unsafe { libc::geteuid() }
    }

    /// The user and group that own `path`.
    pub fn owner_of(path: &Path) -> io::Result<RunAs> {
        use std::os::unix::fs::MetadataExt as _;
        let meta = std::fs::symlink_metadata(path)?;
        Ok(RunAs {
            uid: meta.uid(),
            gid: meta.gid(),
        })
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

/// Why the servers run as the account they run as: printed when it is not the obvious one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountChoice {
    /// Not root: the servers run as whoever runs us.
    CurrentUser,
    /// Named by `BACKEND_SCHEMA_PG_USER`.
    Variable,
    /// Root, and the conventional `postgres` account exists.
    Postgres,
    /// Root and no `postgres` account: `nobody`, which every Linux has.
    Nobody,
}

/// The OS account that runs the PostgreSQL servers we start, with its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAccount {
    pub name: String,
    pub run_as: RunAs,
    pub choice: AccountChoice,
}

impl ServerAccount {
    /// The current user when not root. As root (PostgreSQL refuses it): the account named
    /// by `BACKEND_SCHEMA_PG_USER`, else `postgres`, else `nobody`.
    pub fn choose() -> Result<ServerAccount, ClusterError> {
        // SAFETY: geteuid/getegid cannot fail.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let variable = std::env::var("BACKEND_SCHEMA_PG_USER").ok();
        choose_account(RunAs { uid, gid }, variable.as_deref(), lookup_user)
    }

    /// A line for the user when the choice is not the one they would guess (as root
    /// without a `postgres` account), else `None`.
    pub fn note(&self) -> Option<String> {
        (self.choice == AccountChoice::Nobody).then(|| {
            format!(
                "note: no `postgres` OS account: throwaway PostgreSQL servers run as `{}`; \
                 set BACKEND_SCHEMA_PG_USER to choose another account",
                self.name
            )
        })
    }
}

/// The pure part of [`ServerAccount::choose`], for tests.
fn choose_account(
    me: RunAs,
    variable: Option<&str>,
    lookup: impl Fn(&str) -> Option<RunAs>,
) -> Result<ServerAccount, ClusterError> {
    if me.uid != 0 {
        return Ok(ServerAccount {
            name: account_name(me.uid),
            run_as: me,
            choice: AccountChoice::CurrentUser,
        });
    }
    let found = |name: &str, choice| {
        lookup(name).map(|run_as| ServerAccount {
            name: name.to_string(),
            run_as,
            choice,
        })
    };
    if let Some(name) = variable.filter(|name| !name.is_empty()) {
        // `lookup` finds only unprivileged accounts: root is never one.
        return found(name, AccountChoice::Variable).ok_or(ClusterError::NoUnprivilegedUser {
            name: name.to_string(),
        });
    }
    found("postgres", AccountChoice::Postgres)
        .or_else(|| found("nobody", AccountChoice::Nobody))
        .ok_or(ClusterError::NoUnprivilegedUser {
            name: "postgres".into(),
        })
}

/// The login name of `uid`, or the number when it has none.
pub fn account_name(uid: u32) -> String {
    // SAFETY: getpwuid returns static storage or null; the name is copied out at once.
    let entry = unsafe { libc::getpwuid(uid) };
    if entry.is_null() {
        return uid.to_string();
    }
    // SAFETY: non-null entry with a NUL-terminated name.
    unsafe { CStr::from_ptr((*entry).pw_name) }
        .to_string_lossy()
        .into_owned()
}

/// What the server's account must be able to do with a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read and execute a program.
    Execute,
    /// Enter a directory (to reach what we created inside and gave to the account).
    Enter,
}

impl RunAs {
    /// Whether this account can use `path` as `access` says, judged from the mode bits of
    /// the path and every directory above it (ACLs are not read). On failure, returns the
    /// first path that stops it. Always fine for our own account.
    pub fn check_reach(&self, path: &Path, access: Access) -> Result<(), PathBuf> {
        if self.is_current_user() {
            return Ok(());
        }
        // The directories of the path as given are searched first (a link inside a
        // private directory is out of reach however open its target is), then those of
        // the file it leads to.
        let given = std::path::absolute(path).map_err(|_| path.to_path_buf())?;
        let resolved = path.canonicalize().map_err(|_| path.to_path_buf())?;
        for dir in given
            .ancestors()
            .skip(1)
            .chain(resolved.ancestors().skip(1))
        {
            if !self.may(dir, 0o1) {
                return Err(dir.to_path_buf());
            }
        }
        let path = resolved;
        let bits = match access {
            Access::Execute => 0o5,
            Access::Enter => 0o1,
        };
        if self.may(&path, bits) {
            Ok(())
        } else {
            Err(path)
        }
    }

    /// Whether the `bits` (r=4, w=2, x=1) are granted to this account by `path`'s mode.
    fn may(&self, path: &Path, bits: u32) -> bool {
        let Ok(meta) = std::fs::metadata(path) else {
            return false;
        };
        let mode = meta.mode();
        let granted = if meta.uid() == self.uid {
            mode >> 6
        } else if meta.gid() == self.gid {
            mode >> 3
        } else {
            mode
        };
        granted & bits == bits
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

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: RunAs = RunAs { uid: 0, gid: 0 };
    const PG: RunAs = RunAs { uid: 101, gid: 104 };
    const NOBODY: RunAs = RunAs {
        uid: 65534,
        gid: 65534,
    };

    fn lookup_in(accounts: &'static [(&'static str, RunAs)]) -> impl Fn(&str) -> Option<RunAs> {
        move |name| accounts.iter().find(|(n, _)| *n == name).map(|(_, r)| *r)
    }

    #[test]
    fn root_prefers_the_variable_then_postgres_then_nobody() {
        let both = lookup_in(&[("postgres", PG), ("nobody", NOBODY)]);
        let chosen = choose_account(ROOT, Some("nobody"), &both).unwrap();
        assert_eq!(
            (chosen.run_as, chosen.choice),
            (NOBODY, AccountChoice::Variable)
        );
        let chosen = choose_account(ROOT, None, &both).unwrap();
        assert_eq!(
            (chosen.run_as, &chosen.choice),
            (PG, &AccountChoice::Postgres)
        );
        assert_eq!(chosen.note(), None);

        let chosen = choose_account(ROOT, None, lookup_in(&[("nobody", NOBODY)])).unwrap();
        assert_eq!(chosen.choice, AccountChoice::Nobody);
        assert!(chosen.note().unwrap().contains("run as `nobody`"));
    }

    #[test]
    fn a_named_account_that_does_not_exist_is_an_error_not_a_fallback() {
        let err =
            choose_account(ROOT, Some("pgrunner"), lookup_in(&[("nobody", NOBODY)])).unwrap_err();
        assert!(err.to_string().contains("`pgrunner`"), "{err}");
        let err = choose_account(ROOT, None, lookup_in(&[])).unwrap_err();
        assert!(err.to_string().contains("useradd"), "{err}");
    }

    #[test]
    fn a_user_who_is_not_root_runs_the_servers_themselves() {
        let me = RunAs {
            uid: 1000,
            gid: 1000,
        };
        let chosen = choose_account(me, Some("postgres"), lookup_in(&[("postgres", PG)])).unwrap();
        assert_eq!(
            (chosen.run_as, chosen.choice),
            (me, AccountChoice::CurrentUser)
        );
    }
}

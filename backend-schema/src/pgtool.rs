//! Running the real PostgreSQL programs (pg_dump, pg_restore, psql): the password travels
//! in the child's environment, never on its command line; files they create are private;
//! and they die with the thread that started them.

use std::ffi::OsString;
use std::os::unix::process::CommandExt as _;

use crate::database_url::DatabaseUrl;
use crate::PgBinaries;

/// `program args... -d URL-without-password`, with `PGPASSWORD` set, no prompt, and
/// the guarantees of [`tool`].
pub fn libpq(
    binaries: &PgBinaries,
    program: &str,
    mut args: Vec<OsString>,
    url: &DatabaseUrl,
) -> duct::Expression {
    args.push("--no-password".into());
    args.push(format!("--dbname={}", url.without_password()).into());
    let mut expression = tool(binaries, program, args).env("PGCONNECT_TIMEOUT", "10");
    for (key, value) in url.child_env() {
        expression = expression.env(key, value);
    }
    expression
}

/// `program args...` of this installation with a umask of 077, so every file it writes
/// is readable by its owner only, and a parent-death signal: a killed xtask must not
/// leave pg_dump writing or pg_restore reading or restoring.
pub fn tool(binaries: &PgBinaries, program: &str, args: Vec<OsString>) -> duct::Expression {
    duct::cmd(binaries.tool(program), args).before_spawn(|command| {
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: umask, prctl, getppid and _exit are async-signal-safe.
        unsafe {
            command.pre_exec(move || {
                libc::umask(0o077);
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died between fork and prctl.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        Ok(())
    })
}

/// The version word of a PostgreSQL program's `--version` line, e.g. `15.18` from
/// "psql (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"; `unknown` if the line has none.
pub fn version_in(output: &str) -> String {
    output
        .split_whitespace()
        .nth(2)
        .unwrap_or("unknown")
        .to_string()
}

/// The last lines of a program's stderr, indented under the error message they end.
pub fn stderr_tail(bytes: &[u8]) -> String {
    crate::text::tail(&String::from_utf8_lossy(bytes), 8).join("\n  ")
}

#[cfg(test)]
mod version_tests {
    #[test]
    fn the_version_word_of_a_version_line() {
        assert_eq!(
            super::version_in("psql (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n"),
            "15.18"
        );
        assert_eq!(super::version_in("postgres"), "unknown");
    }
}

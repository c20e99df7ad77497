//! Running the real libpq programs (pg_dump, pg_restore, psql): the password travels in
//! the child's environment, never on its command line, and files it creates are private.

use std::ffi::OsString;
use std::os::unix::process::CommandExt as _;

use crate::database_url::DatabaseUrl;
use crate::PgBinaries;

/// `program args... -d URL-without-password`, with `PGPASSWORD` set, no prompt, and a
/// umask of 077 so every file it writes is readable by its owner only.
pub fn libpq(
    binaries: &PgBinaries,
    program: &str,
    mut args: Vec<OsString>,
    url: &DatabaseUrl,
) -> duct::Expression {
    args.push("--no-password".into());
    args.push(format!("--dbname={}", url.without_password()).into());
    let mut expression = duct::cmd(binaries.tool(program), args).env("PGCONNECT_TIMEOUT", "10");
    for (key, value) in url.child_env() {
        expression = expression.env(key, value);
    }
    expression.before_spawn(|command| {
        // SAFETY: umask and prctl are async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                libc::umask(0o077);
                // A killed xtask must not leave pg_dump writing or pg_restore restoring.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        Ok(())
    })
}

/// The last lines of a program's stderr, indented under the error message they end.
pub fn stderr_tail(bytes: &[u8]) -> String {
    crate::text::tail(&String::from_utf8_lossy(bytes), 8).join("\n  ")
}

//! `cargo xtask db`: the persistent local dev database.

use anyhow::Context as _;
use backend_schema::cluster::dev::{DevDatabase, DevStatus};
use backend_schema::PgBinaries;
use xshell::{cmd, Shell};

use crate::flags::{Db, DbAction};

/// `db status` of a dev database that is not running (pg_ctl's status for it).
const NOT_RUNNING: u8 = 3;

impl Db {
    pub(crate) fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let dev = DevDatabase::new(&crate::project_root());
        match self.action {
            DbAction::Start => {
                let started = dev.start().context("cannot start the dev database")?;
                let verb = if started {
                    "started"
                } else {
                    "already running"
                };
                eprintln!("dev database {verb}: {}", dev.url());
            }
            DbAction::Stop => {
                let stopped = dev.stop().context("cannot stop the dev database")?;
                eprintln!(
                    "dev database {}",
                    if stopped {
                        "stopped"
                    } else {
                        "was not running"
                    }
                );
            }
            // Like `pg_ctl status` and `systemctl status`: 3 when it is not running, so
            // `cargo xtask db status || cargo xtask db start` does what it says.
            DbAction::Status => match dev.status() {
                DevStatus::Running { pid } => println!("running (pid {pid}): {}", dev.url()),
                DevStatus::Stopped => {
                    println!("stopped; start it with `cargo xtask db start`");
                    return Err(crate::Quiet(NOT_RUNNING).into());
                }
                DevStatus::NotCreated => {
                    println!("not created; create it with `cargo xtask db start`");
                    return Err(crate::Quiet(NOT_RUNNING).into());
                }
            },
            DbAction::Url => println!("{}", dev.url()),
            DbAction::Psql { args } => {
                if !matches!(dev.status(), DevStatus::Running { .. }) {
                    anyhow::bail!(
                        "the dev database is not running; start it with `cargo xtask db start`"
                    );
                }
                let psql = PgBinaries::locate()?.tool("psql");
                let url = dev.url();
                // psql's own file arguments (-f FILE) are the caller's, relative to where the
                // command was run.
                sh.change_dir(std::env::current_dir()?);
                cmd!(sh, "{psql} -X {url} {args...}")
                    .quiet()
                    .run()
                    .context("psql failed")?;
            }
        }
        Ok(())
    }
}

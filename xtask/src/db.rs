//! `cargo xtask db`: the persistent local dev database.

use anyhow::Context as _;
use backend_schema::cluster::dev::{DevDatabase, DevStatus};
use backend_schema::PgBinaries;
use xshell::{cmd, Shell};

use crate::flags::{Db, DbAction};

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
            DbAction::Status => match dev.status() {
                DevStatus::Running { pid } => println!("running (pid {pid}): {}", dev.url()),
                DevStatus::Stopped => println!("stopped; start it with `cargo xtask db start`"),
                DevStatus::NotCreated => {
                    println!("not created; create it with `cargo xtask db start`")
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

//! `cargo xtask`: parses the command line and dispatches to one module per command.
//! See <https://github.com/matklad/cargo-xtask/>.

mod backup;
mod bench;
mod connect;
mod db;
mod dist;
mod findings;
mod flags;
mod lint;
mod migrate;
mod progress;
mod rehearse;
mod restore;
mod schema_dump;
mod shipped;
mod style;
mod verify;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use xshell::Shell;

fn main() -> ExitCode {
    let flags = match shipped::embedded() {
        Some(_) => shipped::parse(),
        None => flags::Xtask::parse(),
    };
    match run(flags) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if let Some(Quiet(code)) = err.downcast_ref::<Quiet>() {
                return ExitCode::from(*code);
            }
            eprintln!("{}: {err:#}", style::error("error"));
            // A restore's exit status says what state its target is in.
            match err.downcast_ref::<restore::Outcome>() {
                Some(outcome) => ExitCode::from(outcome.code),
                None => ExitCode::FAILURE,
            }
        }
    }
}

/// An exit status that is the answer, not a failure to report (`db status` of a stopped
/// database): the command has printed what there is to say.
#[derive(Debug)]
pub(crate) struct Quiet(pub(crate) u8);

impl std::fmt::Display for Quiet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit status {}", self.0)
    }
}

impl std::error::Error for Quiet {}

fn run(flags: flags::Xtask) -> anyhow::Result<()> {
    if let Some(name) = shipped::refused(&flags.command) {
        anyhow::bail!(
            "`{name}` is not in the shipped binary (it needs the source tree or PostgreSQL's server programs); run `cargo xtask {name}` from a checkout"
        );
    }
    let sh = &Shell::new()?;
    sh.change_dir(project_root());
    if starts_servers(&flags.command) {
        note_server_account();
    }
    match flags.command {
        flags::Command::Verify(cmd) => cmd.run(sh),
        flags::Command::Lint(cmd) => cmd.run(sh),
        flags::Command::Migrate(cmd) => cmd.run(sh),
        flags::Command::Db(cmd) => cmd.run(sh),
        flags::Command::Bench(cmd) => cmd.run(sh),
        flags::Command::Backup(cmd) => cmd.run(sh),
        flags::Command::Restore(cmd) => cmd.run(),
        flags::Command::Rehearse(cmd) => cmd.run(sh),
        flags::Command::SchemaDump(cmd) => cmd.run(sh),
        flags::Command::Dist(cmd) => cmd.run(sh),
        flags::Command::HoldCluster { panic } => hold_cluster(panic),
    }
}

/// Whether the command may start a PostgreSQL server of ours (a throwaway cluster or the
/// dev database): those say which OS account runs it when that is not the obvious one.
fn starts_servers(command: &flags::Command) -> bool {
    use flags::{Command, DbAction, MigrateAction};
    match command {
        Command::Verify(_)
        | Command::Bench(_)
        | Command::SchemaDump(_)
        | Command::Dist(_)
        | Command::Rehearse(_) => true,
        Command::HoldCluster { .. } => true,
        Command::Db(db) => matches!(db.action, DbAction::Start),
        Command::Backup(backup) => backup.verify,
        Command::Restore(_) | Command::Lint(_) => false,
        Command::Migrate(migrate) => matches!(
            migrate.action,
            MigrateAction::Check { .. }
                | MigrateAction::ImportAlembic { .. }
                | MigrateAction::Revision { .. }
                | MigrateAction::Stamp { .. }
                | MigrateAction::Drift { .. }
        ),
    }
}

/// Prints, once, which OS account runs our servers when we are root without a `postgres`
/// account. A failure to choose one is reported by the command itself, with its fix.
fn note_server_account() {
    if let Some(note) = backend_schema::cluster::ServerAccount::choose()
        .ok()
        .and_then(|account| account.note())
    {
        eprintln!("{note}");
    }
}

/// Starts a cluster and waits forever: the process-level lifecycle tests kill it.
fn hold_cluster(panic: bool) -> anyhow::Result<()> {
    let cluster = backend_schema::TempCluster::start()?;
    println!("{} {}", cluster.dir().display(), cluster.server_pid());
    use std::io::Write as _;
    std::io::stdout().flush()?;
    if panic {
        panic!("hold-cluster asked to panic");
    }
    loop {
        std::thread::park();
    }
}

/// The environment variable that points the xtask at another checkout.
const PROJECT_ROOT_VAR: &str = "BACKEND_SCHEMA_PROJECT_ROOT";

/// The workspace root, wherever in the checkout the command was started; for the
/// shipped binary, which has no checkout, the directory it was started in (its `.env`,
/// its `backups/`). `BACKEND_SCHEMA_PROJECT_ROOT` names another checkout, so that the
/// schema-evolution test can run this binary on a copy with one more migration
/// without building the copy.
pub(crate) fn project_root() -> PathBuf {
    if shipped::embedded().is_some() {
        return std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    }
    if let Some(root) = std::env::var_os(PROJECT_ROOT_VAR).filter(|root| !root.is_empty()) {
        return PathBuf::from(root);
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace root")
        .to_path_buf()
}

//! `cargo xtask`: parses the command line and dispatches to one module per command.
//! See <https://github.com/matklad/cargo-xtask/>.

mod connect;
mod db;
mod flags;
mod migrate;
mod verify;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use xshell::Shell;

fn main() -> ExitCode {
    let flags = flags::Xtask::parse();
    match run(flags) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(flags: flags::Xtask) -> anyhow::Result<()> {
    let sh = &Shell::new()?;
    sh.change_dir(project_root());
    match flags.command {
        flags::Command::Verify(cmd) => cmd.run(sh),
        flags::Command::Migrate(cmd) => cmd.run(sh),
        flags::Command::Db(cmd) => cmd.run(sh),
    }
}

/// The workspace root, wherever in the checkout the command was started.
pub(crate) fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace root")
        .to_path_buf()
}

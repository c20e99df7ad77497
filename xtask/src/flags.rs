//! Command-line flags of every `cargo xtask` command (clap derive).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// DiagnoLeads schema tooling: migrations, verification, backups.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", version, propagate_version = true)]
pub struct Xtask {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the local dev database (start, stop, status, url, psql)
    #[command(after_help = "Example:\n  cargo xtask db start && cargo xtask db psql -c 'select 1'")]
    Db(Db),
}

/// The connection options every command that talks to a database takes.
#[derive(Debug, Args, Clone, Default)]
pub struct ConnectOpts {
    /// Database URL; else DATABASE_URL, ./.env, backend/.env, then the dev database
    #[arg(long, value_name = "URL", global = true)]
    pub database_url: Option<String>,
}

#[derive(Debug, Args)]
pub struct Db {
    #[command(subcommand)]
    pub action: DbAction,
}

#[derive(Debug, Subcommand)]
pub enum DbAction {
    /// Start the dev database (created on first use under target/dev-db)
    Start,
    /// Stop the dev database
    Stop,
    /// Say whether the dev database is running
    Status,
    /// Print the dev database's URL
    Url,
    /// Open psql on the dev database; extra arguments go to psql
    #[command(after_help = "Example:\n  cargo xtask db psql -c 'select version()'")]
    Psql {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[allow(dead_code)]
fn _unused(_: PathBuf) {}

//! The DiagnoLeads schema library: migration files, the revision graph, the runner that
//! applies them Alembic-compatibly, catalog snapshots, and throwaway PostgreSQL clusters.
//!
//! `xtask` is a thin command-line shell around this crate; the backend can use it too.

pub mod alembic_import;
pub mod catalog;
pub mod cluster;
pub mod connection;
pub mod database_url;

pub use cluster::{ClusterError, PgBinaries, TempCluster};
pub mod declarative;
pub mod detect;
pub mod drift;
pub mod dump;
pub mod elf;
pub mod embed;
pub mod erd;
pub mod graph;
pub mod lint;
pub mod migration;
pub mod pgpass;
pub mod pgtool;
mod prepared;
pub mod rehearse;
pub mod runner;
pub mod search_path;
pub mod snapshot;
pub mod source;
pub mod sql;
pub mod sql_split;
pub mod sqlstate;
pub mod synthetic;
pub mod text;
pub mod tls;
pub mod verify;
pub mod version_table;

pub use graph::RevisionGraph;
pub use migration::{Direction, Migration};
pub use runner::{MigrateError, Migrator, RunOptions};

/// Parses a duration like `5s`, `500ms`, `2m` or `1h` (for command-line flags).
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(text)
        .map_err(|err| format!("invalid duration `{text}`: {err} (e.g. 5s, 500ms, 2m)"))
}

/// The current UTC time as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc_timestamp() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// A connection to a database, as [`connection::Target::connect`] returns it.
pub use postgres::Client;

//! The DiagnoLeads schema library: migration files, the revision graph, the runner that
//! applies them Alembic-compatibly, catalog snapshots, and throwaway PostgreSQL clusters.
//!
//! `xtask` is a thin command-line shell around this crate; the backend can use it too.

pub mod cluster;
pub mod database_url;

pub use cluster::{ClusterError, PgBinaries, TempCluster};
pub mod graph;
pub mod migration;
pub mod runner;
pub mod source;
pub mod sql_split;
pub mod version_table;

pub use graph::RevisionGraph;
pub use migration::{Direction, Migration};
pub use runner::{MigrateError, Migrator, RunOptions};

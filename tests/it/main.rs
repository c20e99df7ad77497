//! End-to-end tests: real PostgreSQL servers started by the code under test, and the
//! real `xtask` binary. One binary, one module per area.

mod alembic_graphs;
mod alembic_import;
mod alembic_interop;
mod architecture;
mod autogenerate;
mod backup;
mod backup_safety;
mod bad_input;
mod catalog;
mod cli;
mod cluster;
mod dist;
mod docs;
mod drift;
mod evolution;
mod fresh_machine;
mod hints;
mod lint;
mod migrate;
mod migrate_cost;
mod ordinary_role;
mod pinned_alembic;
mod rehearse;
mod reliability;
mod restore_safety;
mod secrets;
mod server_access;
mod squawk;
mod support;
mod tls;
mod verify;
mod verify_cache;
mod verify_chains;
mod verify_segments;
mod working_directory;

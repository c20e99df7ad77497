//! The shipped binary (`cargo xtask dist`, the `embedded` feature): the payload it was
//! built with, and which commands it offers.

use backend_schema::embed::Embedded;

#[cfg(feature = "embedded")]
mod bundle {
    include!(env!(
        "BACKEND_SCHEMA_EMBED",
        "the `embedded` feature is built by `cargo xtask dist`, which generates the file this names"
    ));
}

/// The migrations and catalogs compiled in; `None` in `cargo xtask`.
pub(crate) fn embedded() -> Option<&'static Embedded> {
    #[cfg(feature = "embedded")]
    return Some(&bundle::EMBEDDED);
    #[cfg(not(feature = "embedded"))]
    None
}

/// The command line as the shipped binary reads it: its own name in usage and
/// `--version`, the commands it refuses left out of the help.
pub(crate) fn parse() -> crate::flags::Xtask {
    use clap::{CommandFactory, FromArgMatches};
    let mut command = crate::flags::Xtask::command().name(BINARY).bin_name(BINARY);
    for name in ["verify", "lint", "schema-dump", "bench", "db", "dist"] {
        command = command.mut_subcommand(name, |sub| sub.hide(true));
    }
    command = command.mut_subcommand("migrate", |mut migrate| {
        for name in ["check", "revision", "merge", "import-alembic"] {
            migrate = migrate.mut_subcommand(name, |sub| sub.hide(true));
        }
        migrate
    });
    let matches = command.get_matches();
    crate::flags::Xtask::from_arg_matches(&matches).unwrap_or_else(|err| err.exit())
}

/// The binary's name where it is shipped.
pub(crate) const BINARY: &str = "backend-schema-cli";

/// The command's name when the shipped binary does not offer it: it needs the source
/// tree (authoring, schema files, the dev database) or PostgreSQL's server programs.
pub(crate) fn refused(command: &crate::flags::Command) -> Option<&'static str> {
    use crate::flags::{Command, MigrateAction};
    embedded()?;
    match command {
        Command::Migrate(migrate) => match migrate.action {
            MigrateAction::Check { .. } => Some("migrate check"),
            MigrateAction::Revision { .. } => Some("migrate revision"),
            MigrateAction::Merge { .. } => Some("migrate merge"),
            MigrateAction::ImportAlembic { .. } => Some("migrate import-alembic"),
            _ => None,
        },
        // rehearse refuses itself, by name, where no server programs are installed.
        Command::Backup(_) | Command::Restore(_) | Command::Rehearse(_) => None,
        Command::Verify(_) => Some("verify"),
        Command::Lint(_) => Some("lint"),
        Command::SchemaDump(_) => Some("schema-dump"),
        Command::Bench(_) => Some("bench"),
        Command::Db(_) => Some("db"),
        Command::Dist(_) => Some("dist"),
        Command::HoldCluster { .. } => Some("hold-cluster"),
    }
}

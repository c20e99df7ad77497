//! `cargo xtask migrate`: the guide's `alembic` verbs on the backend-schema runner. This
//! module dispatches; `history` reads the chain, `current` the database's place in it, `run` applies it, `stamp` records
//! revisions, `revision` writes new ones and `autogenerate` compares the chain with the
//! declarative schema, `drift` compares a live schema with its recorded revision's.

mod autogenerate;
mod current;
mod drift;
mod history;
mod import_alembic;
mod revision;
mod run;
mod stamp;

use anyhow::bail;
use backend_schema::graph::RevisionGraph;
use backend_schema::migration::Direction;
use backend_schema::runner::RunOptions;
use xshell::Shell;

use crate::flags::{Migrate, MigrateAction, MigrationsOpts, RunOpts};

const APPLICATION_NAME: &str = "cargo xtask migrate";

impl Migrate {
    pub(crate) fn run(self, sh: &Shell) -> anyhow::Result<()> {
        refuse_unused_database_url(&self.action, &self.connect);
        let graph = || self.source.load(sh);
        match self.action {
            MigrateAction::Heads => {
                let graph = graph()?;
                for head in graph.heads() {
                    println!("{}", history::head_line(&graph, head));
                }
            }
            MigrateAction::Show { revision } => history::show(&graph()?, &revision)?,
            MigrateAction::History {
                verbose,
                indicate_current,
                rev_range,
            } => history::history(
                &graph()?,
                &self.connect,
                verbose,
                indicate_current,
                rev_range.as_deref(),
            )?,
            MigrateAction::Current {
                verbose,
                check_heads,
            } => current::current(&graph()?, &self.connect, verbose, check_heads)?,
            MigrateAction::Check {
                schema,
                write_schema,
            } => {
                autogenerate::check(&graph()?, &schema.dir(), write_schema)?;
            }
            MigrateAction::Upgrade {
                target,
                sql: true,
                run,
            } => run::print_sql(&graph()?, Direction::Up, &target, &run)?,
            MigrateAction::Upgrade { target, run, .. } => {
                run::live(&graph()?, &self.connect, &run, &target, |m| {
                    m.upgrade(&target)
                })?
            }
            MigrateAction::Downgrade {
                target,
                sql: true,
                run,
                ..
            } => run::print_sql(&graph()?, Direction::Down, &target, &run)?,
            MigrateAction::Downgrade {
                target, yes, run, ..
            } => run::live(&graph()?, &self.connect, &run, &target, |m| {
                m.downgrade(&target, yes)
            })?,
            MigrateAction::Stamp {
                target,
                purge,
                detect,
                run,
            } => stamp::stamp(&graph()?, &self.connect, target, detect, purge, &run)?,
            MigrateAction::Drift { lock_timeout } => {
                // The catalogs compiled into the shipped binary describe its own chain only.
                let built_in = match self.source.migrations {
                    None => crate::shipped::embedded(),
                    Some(_) => None,
                };
                drift::drift(&graph()?, &self.connect, lock_timeout, built_in)?
            }
            MigrateAction::Rehash { revision, run } => {
                stamp::rehash(&graph()?, &self.connect, &revision, &run)?
            }
            MigrateAction::Revision {
                message,
                head,
                splice,
                branch_label,
                non_transactional,
                autogenerate,
                allow_drop,
                rename,
                schema,
            } => {
                let graph = self.source.load_allow_empty(sh)?;
                let parents = revision::parents(&graph, head.as_deref(), splice)?;
                if autogenerate {
                    if !branch_label.is_empty() {
                        bail!("--branch-label is not supported with --autogenerate yet; create the revision with --branch-label, then the next one with --autogenerate");
                    }
                    let schema = schema.dir();
                    autogenerate::autogenerate(
                        &graph, &schema, &parents, &message, allow_drop, &rename,
                    )?;
                } else {
                    revision::revision(
                        &graph,
                        &parents,
                        &message,
                        !non_transactional,
                        &branch_label,
                    )?;
                }
            }
            MigrateAction::ImportAlembic {
                alembic_dir,
                into,
                alembic,
            } => import_alembic::import(sh, &alembic_dir, into.as_deref(), alembic.as_deref())?,
            MigrateAction::Merge {
                revisions,
                message,
                branch_label,
            } => revision::merge(&graph()?, &revisions, &message, &branch_label)?,
        }
        Ok(())
    }
}

/// `--database-url` is accepted by every `migrate` verb (it may come before the verb);
/// one that reads no database refuses it as a usage error (exit 2) rather than ignore it.
fn refuse_unused_database_url(action: &MigrateAction, connect: &crate::flags::ConnectOpts) {
    let verb = match action {
        MigrateAction::Heads => "heads",
        MigrateAction::Show { .. } => "show",
        MigrateAction::Check { .. } => "check",
        MigrateAction::Revision { .. } => "revision",
        MigrateAction::Merge { .. } => "merge",
        MigrateAction::Upgrade { sql: true, .. } => "upgrade --sql",
        MigrateAction::Downgrade { sql: true, .. } => "downgrade --sql",
        _ => return,
    };
    if connect.database_url.is_some() {
        clap::Error::raw(
            clap::error::ErrorKind::ArgumentConflict,
            format!("`cargo xtask migrate {verb}` uses no database (it reads the migration files, or builds what it needs in a throwaway cluster); drop --database-url\n"),
        )
        .exit();
    }
}

impl RunOpts {
    pub(crate) fn options(&self) -> RunOptions {
        RunOptions {
            lock_timeout: self.lock_timeout,
            statement_timeout: self.statement_timeout,
            retries: self.retries,
            lock_wait: self.lock_wait,
            tool_version: concat!("xtask ", env!("CARGO_PKG_VERSION")).into(),
            capture_locks: false,
        }
    }
}

impl MigrationsOpts {
    /// The chain under `--migrations`, refusing an empty one.
    pub(crate) fn load(&self, sh: &Shell) -> anyhow::Result<RevisionGraph> {
        let graph = self.load_allow_empty(sh)?;
        if graph.is_empty() {
            bail!(
                "no migrations found in {}; create one with `cargo xtask migrate revision -m MESSAGE`",
                graph.dir().display()
            );
        }
        Ok(graph)
    }

    /// The migrations directory: `--migrations` (already the caller's), else the
    /// checkout's (the shell's directory is the workspace root).
    pub(crate) fn dir(&self, sh: &Shell) -> std::path::PathBuf {
        self.migrations
            .clone()
            .unwrap_or_else(|| sh.current_dir().join("migrations"))
    }

    /// The chain under `--migrations`, possibly empty (for the first `revision`); in
    /// the shipped binary without `--migrations`, the chain built into it.
    pub(crate) fn load_allow_empty(&self, sh: &Shell) -> anyhow::Result<RevisionGraph> {
        if let (None, Some(embedded)) = (&self.migrations, crate::shipped::embedded()) {
            return Ok(embedded.graph()?);
        }
        let dir = self.dir(sh);
        if !dir.is_dir() {
            bail!(
                "migrations directory {} does not exist (pass --migrations DIR)",
                dir.display()
            );
        }
        Ok(RevisionGraph::load(&dir)?)
    }
}

//! `cargo xtask migrate`: the guide's `alembic` verbs on the backend-schema runner. This
//! module dispatches; `history` reads the chain, `run` applies it, `stamp` records
//! revisions, `revision` writes new ones and `autogenerate` compares the chain with the
//! declarative schema.

mod autogenerate;
mod history;
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
            } => history::current(&graph()?, &self.connect, verbose, check_heads)?,
            MigrateAction::Check { schema } => {
                autogenerate::check(&graph()?, &sh.current_dir().join(schema.schema))?;
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
                schema,
            } => {
                let graph = self.source.load_allow_empty(sh)?;
                let parents = revision::parents(&graph, head.as_deref(), splice)?;
                if autogenerate {
                    if !branch_label.is_empty() {
                        bail!("--branch-label is not supported with --autogenerate yet; create the revision with --branch-label, then the next one with --autogenerate");
                    }
                    let schema = sh.current_dir().join(schema.schema);
                    autogenerate::autogenerate(&graph, &schema, &parents, &message, allow_drop)?;
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
            MigrateAction::Merge {
                revisions,
                message,
                branch_label,
            } => revision::merge(&graph()?, &revisions, &message, &branch_label)?,
        }
        Ok(())
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

    /// The chain under `--migrations`, possibly empty (for the first `revision`).
    pub(crate) fn load_allow_empty(&self, sh: &Shell) -> anyhow::Result<RevisionGraph> {
        let dir = sh.current_dir().join(&self.migrations);
        if !dir.is_dir() {
            bail!(
                "migrations directory {} does not exist (pass --migrations DIR)",
                dir.display()
            );
        }
        Ok(RevisionGraph::load(&dir)?)
    }
}

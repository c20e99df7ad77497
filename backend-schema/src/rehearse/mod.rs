//! `rehearse`: a release tried on a copy of production's data. The copy (`copy.rs`) is
//! restored into a throwaway cluster; drift is read on it; the pending migrations run
//! one by one with `verify`'s statement trace (locks, how long each was held, rewrites,
//! scans, rows); the downgrade back to the starting revision runs and must give back
//! the starting schema. `report.rs` writes it all as Markdown for the release ticket.
//! The source is only ever read.

mod copy;
mod privileges;
mod report;

use std::time::Duration;

pub use copy::Source;
pub use privileges::PrivilegeError;
pub use report::{check_writable, duration, markdown, Commands};

use crate::catalog::objects::Objects;
use crate::declarative::plan::LockMode;
use crate::drift::{self, Drift};
use crate::graph::{RevisionGraph, Step};
use crate::migration::Direction;
use crate::runner::{Event, Loss, MigrateError, Migrator, RunOptions, StepReport};
use crate::PgBinaries;

/// How far a rehearsal got, for the command line to show.
#[derive(Debug, Clone, Copy)]
pub enum Progress<'a> {
    /// A directory a killed run left behind (a rehearsal's dump of production, a
    /// cluster) was found and removed.
    RemovedLeftover {
        path: &'a std::path::Path,
    },
    /// pg_dump of the source is starting.
    Dumping,
    /// pg_dump is writing this table's rows.
    Dumped {
        table: &'a str,
    },
    DumpFinished {
        bytes: u64,
    },
    /// An existing backup is being hashed (against its manifest, when it has one) and read.
    CheckingBackup {
        manifest: bool,
    },
    /// The copy is being restored into the throwaway cluster.
    Restoring,
    Restored {
        elapsed: Duration,
    },
    /// Drift is being read on the copy.
    Drift,
    Running {
        step: &'a Step,
        message: &'a str,
    },
    Finished {
        step: &'a Step,
        elapsed: Duration,
    },
}

/// What a rehearsal found; `outcome` says whether the release would pass.
#[derive(Debug)]
pub struct Rehearsal {
    /// The redacted URL or the backup's path.
    pub source: String,
    /// The revision(s) production records.
    pub start: Vec<String>,
    /// `--to`, as given.
    pub to: String,
    /// The revision(s) the release leaves.
    pub target: Vec<String>,
    pub drift: Drift,
    /// When the expected schema was built on another major version than production's.
    pub drift_note: Option<String>,
    /// Data the upgrade destroys (dropped tables and columns that hold data).
    pub upgrade_losses: Vec<Loss>,
    pub upgrades: Vec<MigrationRun>,
    /// Data the rollback destroys (what the release added and production then filled).
    pub rollback_losses: Vec<Loss>,
    pub downgrades: Vec<MigrationRun>,
    pub outcome: Outcome,
}

/// Whether the rehearsal passed, and where it failed.
#[derive(Debug)]
pub enum Outcome {
    Passed,
    /// A migration failed on production's data: the release would fail there too.
    UpgradeFailed {
        revision: String,
        error: String,
        /// `error` without what it quotes of production's data, for the report.
        report_error: String,
    },
    /// The downgrade back to the starting revision failed.
    DowngradeFailed {
        revision: String,
        error: String,
        report_error: String,
    },
    /// The downgrade ran but left a schema other than the starting one.
    DowngradeDiffers {
        differences: Vec<String>,
    },
}

impl Outcome {
    pub fn passed(&self) -> bool {
        matches!(self, Outcome::Passed)
    }
}

/// One migration as it ran on the copy.
#[derive(Debug, Clone)]
pub struct MigrationRun {
    pub revision: String,
    pub message: String,
    pub direction: Direction,
    pub transactional: bool,
    pub elapsed: Duration,
    pub statements: Vec<StatementRun>,
}

/// One statement of a migration, on the tables that existed before the migration.
#[derive(Debug, Clone)]
pub struct StatementRun {
    pub line: usize,
    /// Its first line of SQL.
    pub sql: String,
    pub elapsed: Duration,
    /// Each lock it took, and how long that lock was held: to the end of the
    /// migration's transaction, or of the statement when it runs on its own.
    pub locks: Vec<HeldLock>,
    pub rewritten: Vec<String>,
    pub scanned: Vec<String>,
    /// Rows inserted, updated or deleted, by table.
    pub rows: Vec<(String, i64)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldLock {
    pub table: String,
    pub mode: LockMode,
    pub held: Duration,
}

/// The rehearsal's result: nothing pending, or what it did.
#[derive(Debug)]
pub enum Rehearsed {
    /// Production is already at `--to`.
    NothingPending {
        source: String,
        heads: Vec<String>,
    },
    Ran(Box<Rehearsal>),
}

#[derive(Debug, thiserror::Error)]
pub enum RehearseError {
    #[error(transparent)]
    Connect(#[from] crate::connection::ConnectionError),
    #[error("reading the source's revision failed: {}", crate::sqlstate::explain(.0))]
    Heads(#[source] postgres::Error),
    #[error("cannot read the backup {}", path.display())]
    Backup {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Dump(#[from] crate::dump::backup::BackupError),
    #[error(transparent)]
    Check(#[from] crate::dump::restore::CheckError),
    // The cause is the source, which the chain prints: naming it here too printed
    // pg_restore's errors twice.
    #[error("restoring production's copy into the throwaway cluster failed")]
    Restore(#[source] crate::dump::restore::RestoreError),
    /// The restore met something only a superuser may run, named in the cause.
    #[error(
        "production's copy holds something only a superuser may run (named below): the rehearsal restores \
         and migrates as the ordinary role `{}` and refuses to run production's definitions as superuser; \
         nothing of it ran and the throwaway cluster is gone. If production needs it, a superuser made it \
         outside the migrations; to rehearse without it, write a copy that leaves it out (pg_restore --list \
         FILE > list, delete its line, pg_restore --use-list list --file copy.sql FILE) and rehearse \
         --from-backup copy.sql",
        privileges::RESTORER
    )]
    NeedsSuperuser(#[source] crate::dump::restore::RestoreError),
    #[error(transparent)]
    Privilege(#[from] PrivilegeError),
    #[error(
        "{step} on the rehearsal's copy failed: {}",
        crate::sqlstate::explain(source)
    )]
    Copy {
        step: &'static str,
        source: postgres::Error,
    },
    #[error(transparent)]
    Url(#[from] crate::database_url::UrlError),
    #[error(transparent)]
    Cluster(#[from] crate::ClusterError),
    #[error(transparent)]
    Target(#[from] crate::graph::TargetError),
    #[error("reading drift on the copy")]
    Drift(#[from] drift::DriftError),
    /// Before any migration ran: integrity checks, the migration lock.
    #[error(transparent)]
    Migrate(#[from] MigrateError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl RehearseError {
    fn copy(step: &'static str) -> impl FnOnce(postgres::Error) -> RehearseError {
        move |source| RehearseError::Copy { step, source }
    }
}

/// Rehearses upgrading `source` to `to` with `graph`'s migrations. `run` is the
/// release's own options (its lock timeout, retries); locks are always traced.
pub fn rehearse(
    binaries: &PgBinaries,
    graph: &RevisionGraph,
    source: &Source,
    to: &str,
    run: &RunOptions,
    progress: &(dyn Fn(Progress<'_>) + Sync),
) -> Result<Rehearsed, RehearseError> {
    // Asking a live source first spares a dump when there is nothing to rehearse.
    if let Source::Database(target) = source {
        let mut client = target.connect("cargo xtask rehearse")?;
        let heads = crate::version_table::read_heads(&mut client).map_err(RehearseError::Heads)?;
        if graph.upgrade_plan(&heads, to)?.is_empty() {
            return Ok(Rehearsed::NothingPending {
                source: source.describe(),
                heads,
            });
        }
    }
    let cluster = copy::copy(binaries, source, progress)?;
    // Every session on the copy is the restorer's: a superuser resolving a name in the
    // copy's schemas could run production's function or operator with its rights.
    let mut client = cluster.client_as(privileges::RESTORER, copy::DATABASE)?;
    let start = crate::version_table::read_heads(&mut client)
        .map_err(RehearseError::copy("reading alembic_version"))?;
    let plan = graph.upgrade_plan(&start, to)?;
    if plan.is_empty() {
        return Ok(Rehearsed::NothingPending {
            source: source.describe(),
            heads: start,
        });
    }
    let target = plan
        .last()
        .map(|s| s.heads_after.clone())
        .unwrap_or_default();

    progress(Progress::Drift);
    let live = drift::read_live(&mut client, run.lock_timeout)?;
    let expected = drift::expected(graph, &live.heads)?;
    let drift_note = drift::version_note(expected.server_version_num, live.server_version_num);
    let found_drift = drift::compare(&expected.objects, &live.objects);

    let options = RunOptions {
        capture_locks: true,
        ..run.clone()
    };
    let on_event = |event: Event<'_>| match event {
        Event::Running { step, migration } => progress(Progress::Running {
            step,
            message: &migration.message,
        }),
        Event::Finished { step, elapsed } => progress(Progress::Finished { step, elapsed }),
        _ => {}
    };
    let mut migrator = Migrator::new(&mut client, graph, options).on_event(on_event);
    let upgrade_losses = losses(migrator.data_loss(&plan))?;
    let mut rehearsal = Rehearsal {
        source: source.describe(),
        start: start.clone(),
        to: to.to_string(),
        target: target.clone(),
        drift: found_drift,
        drift_note,
        upgrade_losses,
        upgrades: Vec::new(),
        rollback_losses: Vec::new(),
        downgrades: Vec::new(),
        outcome: Outcome::Passed,
    };

    // One step at a time, so the steps before a failure keep their measurements.
    for step in &plan {
        match migrator.upgrade(&step.revision) {
            Ok(reports) => rehearsal
                .upgrades
                .extend(reports.iter().map(|r| run_of(graph, r))),
            Err(err) => {
                rehearsal.outcome = Outcome::UpgradeFailed {
                    revision: step.revision.clone(),
                    error: err.to_string() + &privilege_note(&err),
                    report_error: without_quoted_data(&err) + &privilege_note(&err),
                };
                return Ok(Rehearsed::Ran(Box::new(rehearsal)));
            }
        }
    }

    // The way back: each migration undone in reverse, which works from any set of
    // heads; it must give back exactly the schema production has now.
    let rollback: Vec<Step> = plan
        .iter()
        .rev()
        .map(|step| Step {
            revision: step.revision.clone(),
            direction: Direction::Down,
            heads_before: step.heads_after.clone(),
            heads_after: step.heads_before.clone(),
        })
        .collect();
    rehearsal.rollback_losses = losses(migrator.data_loss(&rollback))?;
    for step in &rollback {
        match migrator.unapply(&step.revision) {
            Ok(reports) => rehearsal
                .downgrades
                .extend(reports.iter().map(|r| run_of(graph, r))),
            Err(err) => {
                rehearsal.outcome = Outcome::DowngradeFailed {
                    revision: step.revision.clone(),
                    error: err.to_string() + &privilege_note(&err),
                    report_error: without_quoted_data(&err) + &privilege_note(&err),
                };
                return Ok(Rehearsed::Ran(Box::new(rehearsal)));
            }
        }
    }
    drop(migrator);
    let back = Objects::read(&mut client).map_err(RehearseError::copy("reading the catalogs"))?;
    let returned = drift::compare(&live.objects, &back);
    if !returned.is_empty() {
        rehearsal.outcome = Outcome::DowngradeDiffers {
            differences: returned.differences.iter().map(|d| d.to_string()).collect(),
        };
    }
    Ok(Rehearsed::Ran(Box::new(rehearsal)))
}

/// Why a migration refused a privilege fails here: the copy is migrated by an ordinary
/// role, and production's release may run as a superuser that would pass.
fn privilege_note(err: &MigrateError) -> String {
    match err {
        MigrateError::Statement(failure) if failure.code.as_deref() == Some("42501") => format!(
            "\n  note: the rehearsal migrates as the ordinary role `{}` (a member of production's \
             owning roles), never as a superuser: the release passes this step only if its role \
             has the right (a superuser, or a grant); else a superuser does it before the release",
            privileges::RESTORER
        ),
        _ => String::new(),
    }
}

/// A failure as the report shows it: PostgreSQL's DETAIL quotes production's values (a
/// duplicated key, a failing row), which do not belong in a release ticket; the console
/// shows them to whoever ran the rehearsal.
fn without_quoted_data(err: &MigrateError) -> String {
    let text = err.to_string();
    match err {
        MigrateError::Statement(failure) => match &failure.detail {
            Some(detail) => text.replace(
                &format!("\n  detail: {detail}"),
                "\n  detail: withheld from the report (it quotes production's data; the console showed it)",
            ),
            None => text,
        },
        _ => text,
    }
}

/// What a plan destroys; a statement that fails in the dry run fails again in the real
/// run that follows, which reports it as the step it is.
fn losses(found: Result<Vec<Loss>, MigrateError>) -> Result<Vec<Loss>, MigrateError> {
    match found {
        Err(MigrateError::Statement(_)) => Ok(Vec::new()),
        other => other,
    }
}

/// A step's report as the rehearsal shows it: each lock with how long it was held.
fn run_of(graph: &RevisionGraph, report: &StepReport) -> MigrationRun {
    let migration = graph
        .get(&report.step.revision)
        .expect("planned revisions exist");
    let mut statements = Vec::new();
    let mut before = Duration::ZERO;
    for trace in &report.trace {
        // In a transaction a lock is held from the statement that takes it to the
        // commit at the migration's end; on its own, for the statement.
        let held = match migration.transactional {
            true => report.elapsed.saturating_sub(before),
            false => trace.elapsed,
        };
        before += trace.elapsed;
        statements.push(StatementRun {
            line: trace.line,
            sql: first_line(&trace.sql),
            elapsed: trace.elapsed,
            locks: trace
                .locks
                .iter()
                .map(|(table, mode)| HeldLock {
                    table: table.clone(),
                    mode: *mode,
                    held,
                })
                .collect(),
            rewritten: trace.rewritten.clone(),
            scanned: trace.scanned.clone(),
            rows: trace.rows.clone(),
        });
    }
    MigrationRun {
        revision: report.step.revision.clone(),
        message: migration.message.clone(),
        direction: report.step.direction,
        transactional: migration.transactional,
        elapsed: report.elapsed,
        statements,
    }
}

/// The first line of a statement that is not a comment.
fn first_line(sql: &str) -> String {
    sql.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("--"))
        .unwrap_or_default()
        .to_string()
}

//! Applying migrations to a database: the advisory lock, integrity checks before any
//! write, one transaction per migration with its bookkeeping, lock timeouts with
//! retries, non-transactional migrations, stamps and checksums.

pub mod blockers;
mod error;
mod existing;
pub mod lock;
mod loss;
pub mod observe;
pub mod offline;
pub mod trace;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use postgres::types::Type;
use postgres::{Client, GenericClient};

pub use error::{holders_text, LockHolder, Loss, MigrateError, StatementFailure};
pub use lock::LOCK_KEY;
pub use trace::StatementTrace;

use crate::declarative::plan::LockMode;
pub use crate::graph::heads_text;
use crate::graph::{RevisionGraph, Step, TargetError};
use crate::migration::{Direction, Migration};
use crate::prepared::Prepared;
use crate::version_table::{
    self as vt, ApplyError, HeadChange, HistoryRecord, NewRecord, Operation, Status,
};

/// How a run behaves; the defaults suit production.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// `lock_timeout` of each migration: a DDL statement waiting longer for a table
    /// lock gives up instead of queueing every reader of that table behind it.
    pub lock_timeout: Duration,
    /// `statement_timeout` of each migration; `None` leaves the server's setting.
    pub statement_timeout: Option<Duration>,
    /// How many times a migration that hit `lock_timeout` is retried (with backoff).
    pub retries: u32,
    /// How long to wait for another migrator's advisory lock.
    pub lock_wait: Duration,
    /// Written to the side table with every record.
    pub tool_version: String,
    /// Record the table locks each transactional migration holds before it commits
    /// (`verify`'s lock profile), and trace every statement (`StepReport::trace`).
    pub capture_locks: bool,
}

impl Default for RunOptions {
    fn default() -> RunOptions {
        RunOptions {
            lock_timeout: Duration::from_secs(5),
            statement_timeout: None,
            retries: 3,
            lock_wait: Duration::from_secs(300),
            tool_version: concat!("backend-schema ", env!("CARGO_PKG_VERSION")).to_string(),
            capture_locks: false,
        }
    }
}

/// Progress, for the command line to print.
#[derive(Debug)]
pub enum Event<'a> {
    WaitingForLock {
        holders: &'a [LockHolder],
    },
    LockAcquired {
        waited: Duration,
    },
    Running {
        step: &'a Step,
        migration: &'a Migration,
    },
    Retrying {
        revision: &'a str,
        attempt: u32,
        after: Duration,
        /// The sessions that held the lock it waited for, when watched.
        blockers: &'a [LockHolder],
    },
    Finished {
        step: &'a Step,
        elapsed: Duration,
    },
}

/// What is known about one applied revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Integrity {
    /// Applied by us; the file still has the recorded checksum.
    Verified(HistoryRecord),
    /// Applied by Alembic or before the side table existed: no checksum to compare.
    NoRecord,
    Edited {
        recorded: String,
    },
    Unfinished(HistoryRecord),
}

pub struct Migrator<'a> {
    client: &'a mut Client,
    graph: &'a RevisionGraph,
    options: RunOptions,
    on_event: Box<dyn FnMut(Event<'_>) + 'a>,
    blockers: Option<blockers::BlockerWatch>,
    observer: Option<Observer<'a>>,
    /// The session's own search_path is checked once, before the first read: a
    /// migration may set another for the rest of the session, as pg_dump's output does.
    search_path_checked: bool,
    /// Where the bookkeeping's and the trace's statements are kept prepared across runs
    /// on this session (`None`: each runs once as it is).
    prepared: Option<&'a mut Prepared>,
}

/// The version tables as read at the start of a run (see `Migrator::recorded`).
struct Recorded {
    heads: Vec<String>,
    states: Vec<vt::LatestState>,
    present: vt::Present,
}

/// The second session that sees the locks of statements outside a transaction: kept by
/// the caller in `slot` (for run after run), opened by `connect` when the first such
/// migration runs.
struct Observer<'a> {
    slot: &'a mut Option<observe::LockObserver>,
    connect: Box<dyn FnMut() -> Result<Client, postgres::Error> + 'a>,
}

/// One migration applied.
#[derive(Debug, Clone)]
pub struct StepReport {
    pub step: Step,
    pub elapsed: Duration,
    /// With `capture_locks`: "AccessExclusiveLock on users", for tables that existed
    /// before the migration.
    pub locks: Vec<String>,
    /// With `capture_locks`: each statement's locks, rewrites, scans and time, on the
    /// tables that existed before the migration.
    pub trace: Vec<StatementTrace>,
}

impl<'a> Migrator<'a> {
    pub fn new(
        client: &'a mut Client,
        graph: &'a RevisionGraph,
        options: RunOptions,
    ) -> Migrator<'a> {
        Migrator {
            client,
            graph,
            options,
            on_event: Box::new(|_| {}),
            blockers: None,
            observer: None,
            search_path_checked: false,
            prepared: None,
        }
    }

    /// Keeps the statements of the run's bookkeeping (version tables, lock, timeouts,
    /// search_path) and of the trace prepared in `prepared`, for a caller that runs
    /// migration after migration on the same session (`verify`).
    pub(crate) fn keep_prepared(mut self, prepared: &'a mut Prepared) -> Migrator<'a> {
        self.prepared = Some(prepared);
        self
    }

    /// With `capture_locks`, traces the table locks of migrations that run outside a
    /// transaction from a second session (see `observe.rs`): the one in `slot`, or one
    /// that `connect` opens and leaves there; without it, those migrations' statements
    /// are traced with no locks.
    pub fn observe_outside_transactions(
        mut self,
        slot: &'a mut Option<observe::LockObserver>,
        connect: impl FnMut() -> Result<Client, postgres::Error> + 'a,
    ) -> Migrator<'a> {
        self.observer = Some(Observer {
            slot,
            connect: Box::new(connect),
        });
        self
    }

    /// Names the sessions blocking a migration when it hits `lock_timeout`, watched
    /// from a second session that `connect` opens (see `blockers.rs`).
    pub fn watch_blockers(
        mut self,
        connect: impl FnOnce() -> Option<Client> + Send + 'static,
    ) -> Result<Migrator<'a>, MigrateError> {
        let pid: i32 = self
            .client
            .query_one("SELECT pg_backend_pid()", &[])
            .map_err(db("reading our backend pid"))?
            .get(0);
        self.blockers = Some(blockers::BlockerWatch::start(pid, connect));
        Ok(self)
    }

    fn take_blockers(&self) -> Vec<LockHolder> {
        self.blockers
            .as_ref()
            .map(blockers::BlockerWatch::take)
            .unwrap_or_default()
    }

    pub fn on_event(mut self, f: impl FnMut(Event<'_>) + 'a) -> Migrator<'a> {
        self.on_event = Box::new(f);
        self
    }

    /// The heads in `alembic_version`, checked against the migration files.
    pub fn current(&mut self) -> Result<Vec<String>, MigrateError> {
        let heads = self.raw_heads()?;
        self.check_known(&heads)?;
        Ok(heads)
    }

    /// The heads in `alembic_version`, whether or not a file knows them.
    pub fn raw_heads(&mut self) -> Result<Vec<String>, MigrateError> {
        let present = self.present()?;
        let read = vt::heads_in(self.client, self.prepared.as_deref_mut(), present);
        read.map_err(|err| self.locked_or(err, "reading alembic_version"))
    }

    /// Which version tables exist, after the search_path check (once per migrator).
    fn present(&mut self) -> Result<vt::Present, MigrateError> {
        if !self.search_path_checked {
            crate::search_path::check(self.client, self.prepared.as_deref_mut())
                .map_err(|err| self.locked_or(err, "reading the search_path"))?
                .map_err(Box::new)?;
            self.search_path_checked = true;
        }
        let read = vt::present(self.client, self.prepared.as_deref_mut());
        read.map_err(|err| self.locked_or(err, "reading alembic_version"))
    }

    /// The version tables as a run under the lock starts from, each read once: the
    /// heads (checked against the files), the side table's latest rows, and which of
    /// the tables exist (to create the missing ones without asking again).
    fn recorded(&mut self) -> Result<Recorded, MigrateError> {
        let present = self.present()?;
        let read = vt::heads_in(self.client, self.prepared.as_deref_mut(), present);
        let heads = read.map_err(|err| self.locked_or(err, "reading alembic_version"))?;
        self.check_known(&heads)?;
        let read = vt::latest_states(self.client, self.prepared.as_deref_mut(), present);
        let states = read.map_err(|err| self.locked_or(err, "reading alembic_version_history"))?;
        Ok(Recorded {
            heads,
            states,
            present,
        })
    }

    /// A lock timeout on the version tables, named with the sessions holding them;
    /// any other error as it is.
    fn locked_or(&mut self, err: postgres::Error, action: &str) -> MigrateError {
        if err.code() == Some(&postgres::error::SqlState::LOCK_NOT_AVAILABLE) {
            return MigrateError::VersionTableLocked {
                action: action.to_string(),
                holders: lock::version_table_holders(self.client).unwrap_or_default(),
            };
        }
        db(action)(err)
    }

    fn check_known(&mut self, heads: &[String]) -> Result<(), MigrateError> {
        match heads.iter().find(|h| self.graph.get(h).is_none()) {
            Some(unknown) => Err(MigrateError::UnknownRevision {
                applied: vt::latest_records(self.client)
                    .unwrap_or_default()
                    .into_iter()
                    .find(|r| &r.revision == unknown)
                    .map(|r| format!("at {} by {}", r.started_at, r.tool_version)),
                revision: unknown.clone(),
                dir: self.graph.dir().to_path_buf(),
                known: self
                    .graph
                    .migrations()
                    .iter()
                    .map(|m| m.dir_name().to_string())
                    .collect(),
            }),
            None => Ok(()),
        }
    }

    /// Integrity of every applied revision, oldest first.
    pub fn integrity(&mut self) -> Result<Vec<(String, Integrity)>, MigrateError> {
        let read = vt::latest_records(self.client);
        let records = read.map_err(|err| self.locked_or(err, "reading alembic_version_history"))?;
        self.integrity_of_records(&records)
    }

    /// As [`Self::integrity`], from the side-table rows already read.
    fn integrity_of_records(
        &mut self,
        records: &[HistoryRecord],
    ) -> Result<Vec<(String, Integrity)>, MigrateError> {
        let heads = self.current()?;
        let applied = self.graph.applied(&heads)?;
        Ok(applied
            .iter()
            .map(|m| {
                (
                    m.revision.clone(),
                    integrity_of(m, records.iter().find(|r| r.revision == m.revision)),
                )
            })
            .collect())
    }

    /// Refuses when an applied file was edited or a non-transactional migration did not
    /// complete. Called before any write.
    fn check_integrity(&mut self) -> Result<(), MigrateError> {
        let recorded = self.recorded()?;
        self.check_recorded(&recorded)
    }

    /// As [`Self::check_integrity`], on the version tables already read.
    fn check_recorded(&mut self, recorded: &Recorded) -> Result<(), MigrateError> {
        let records = &recorded.states;
        if let Some(record) = records.iter().find(|r| r.status != Status::Completed) {
            let invalid_indexes =
                loss::invalid_indexes(self.client, None).map_err(db("listing INVALID indexes"))?;
            return Err(MigrateError::Unfinished {
                before: self
                    .graph
                    .get(&record.revision)
                    .map_or_else(
                        || "REV (the revision before it)".to_string(),
                        |m| heads_text(&m.parents),
                    )
                    .into(),
                revision: record.revision.clone(),
                path: self
                    .graph
                    .get(&record.revision)
                    .map(|m| m.dir.clone())
                    .unwrap_or_else(|| self.graph.dir().join(&record.revision)),
                status: record.status,
                error: record.error.clone(),
                invalid_indexes,
            });
        }
        // The rows just read: check_integrity runs before every migration, and reading
        // the whole history again made each one cost what the history has grown to.
        let by_revision: std::collections::HashMap<&str, &vt::LatestState> =
            records.iter().map(|r| (r.revision.as_str(), r)).collect();
        for migration in self.graph.applied(&recorded.heads)? {
            let recorded_checksum = by_revision
                .get(migration.revision.as_str())
                .and_then(|r| r.checksum.as_ref());
            if let Some(recorded) = recorded_checksum.filter(|c| **c != migration.checksum) {
                return Err(MigrateError::ChecksumMismatch {
                    revision: migration.revision.clone(),
                    path: migration.dir.clone(),
                    recorded: recorded.clone(),
                    current: migration.checksum.clone(),
                });
            }
        }
        Ok(())
    }

    /// Upgrades to `target`. A database already there takes no lock and writes nothing.
    pub fn upgrade(&mut self, target: &str) -> Result<Vec<StepReport>, MigrateError> {
        let heads = self.current()?;
        if self.graph.upgrade_plan(&heads, target)?.is_empty() {
            // Nothing to run, but an edited applied file is still refused: "nothing to
            // do" would say the files describe the database when they do not.
            self.check_integrity()?;
            return Ok(Vec::new());
        }
        self.with_lock(|m| {
            let recorded = m.recorded()?;
            let plan = m.graph.upgrade_plan(&recorded.heads, target)?;
            m.check_recorded(&recorded)?;
            vt::create_missing(m.client, recorded.present)
                .map_err(db("creating the version tables"))?;
            m.run_steps(&plan)
                .map_err(|err| existing::explain(m.client, m.graph, err))
        })
    }

    /// Downgrades to `target`. Unless `allow_data_loss`, first proves (in a transaction
    /// that is rolled back) that no table or column holding data would be dropped.
    pub fn downgrade(
        &mut self,
        target: &str,
        allow_data_loss: bool,
    ) -> Result<Vec<StepReport>, MigrateError> {
        let heads = self.current()?;
        if self.graph.downgrade_plan(&heads, target)?.is_empty() {
            self.check_integrity()?;
            return Ok(Vec::new());
        }
        self.with_lock(|m| {
            let recorded = m.recorded()?;
            let plan = m.graph.downgrade_plan(&recorded.heads, target)?;
            m.check_recorded(&recorded)?;
            if !allow_data_loss {
                let losses = m.data_loss(&plan)?;
                if !losses.is_empty() {
                    return Err(MigrateError::DataLoss(losses));
                }
            }
            vt::create_missing(m.client, recorded.present)
                .map_err(db("creating the version tables"))?;
            m.run_steps(&plan)
        })
    }

    /// Undoes exactly `revision`, a head of the applied set (no data-loss check: the
    /// caller reports losses itself).
    pub fn unapply(&mut self, revision: &str) -> Result<Vec<StepReport>, MigrateError> {
        self.with_lock(|m| {
            let recorded = m.recorded()?;
            let plan = m.graph.unapply_plan(&recorded.heads, revision)?;
            m.check_recorded(&recorded)?;
            vt::create_missing(m.client, recorded.present)
                .map_err(db("creating the version tables"))?;
            m.run_steps(&plan)
        })
    }

    /// What running `plan` would destroy (tables and columns that hold data).
    pub fn data_loss(&mut self, plan: &[Step]) -> Result<Vec<Loss>, MigrateError> {
        loss::data_loss(self.client, self.graph, plan, &self.options)
    }

    fn run_steps(&mut self, plan: &[Step]) -> Result<Vec<StepReport>, MigrateError> {
        let mut reports = Vec::new();
        for step in plan {
            let migration = self
                .graph
                .get(&step.revision)
                .expect("planned revisions exist");
            (self.on_event)(Event::Running { step, migration });
            let started = Instant::now();
            let (locks, trace) = if migration.transactional {
                self.run_transactional(step, migration)?
            } else {
                let trace = self.run_outside_transaction(step, migration)?;
                (strongest_per_table(&trace), trace)
            };
            let elapsed = started.elapsed();
            (self.on_event)(Event::Finished { step, elapsed });
            reports.push(StepReport {
                step: step.clone(),
                elapsed,
                locks,
                trace,
            });
        }
        Ok(reports)
    }

    fn run_transactional(
        &mut self,
        step: &Step,
        migration: &Migration,
    ) -> Result<(Vec<String>, Vec<StatementTrace>), MigrateError> {
        self.retrying_lock_timeouts(&step.revision, |m| m.try_transactional(step, migration))
    }

    /// Runs `attempt_once` (one transaction under `lock_timeout`) again with backoff while it
    /// gives up on a table lock, up to `retries` times.
    fn retrying_lock_timeouts<T>(
        &mut self,
        revision: &str,
        mut attempt_once: impl FnMut(&mut Self) -> Result<T, MigrateError>,
    ) -> Result<T, MigrateError> {
        let mut attempt = 0;
        let _ = self.take_blockers();
        loop {
            match attempt_once(self) {
                Err(err) if lock_timed_out(&err) && attempt < self.options.retries => {
                    attempt += 1;
                    let after = Duration::from_millis(500 * 2u64.pow(attempt - 1))
                        .min(Duration::from_secs(30));
                    let blockers = self.take_blockers();
                    (self.on_event)(Event::Retrying {
                        revision,
                        attempt,
                        after,
                        blockers: &blockers,
                    });
                    std::thread::sleep(after);
                }
                Err(MigrateError::Statement(mut failure))
                    if failure.code.as_deref() == Some(LOCK_NOT_AVAILABLE) =>
                {
                    let blockers = self.take_blockers();
                    let by = match blockers.is_empty() {
                        true => String::new(),
                        false => format!(" (held by {})", holders_text(&blockers, "")),
                    };
                    failure.advice = Some(format!(
                        "another session held a lock this migration needs{by} for longer than lock_timeout ({:?}) on {} attempts; end that session or its transaction (SELECT pg_terminate_backend(PID)), retry when it is quiet, or raise --lock-timeout / --retries",
                        self.options.lock_timeout,
                        attempt + 1
                    ));
                    return Err(MigrateError::Statement(failure));
                }
                other => return other,
            }
        }
    }

    fn try_transactional(
        &mut self,
        step: &Step,
        migration: &Migration,
    ) -> Result<(Vec<String>, Vec<StatementTrace>), MigrateError> {
        let started = Instant::now();
        let outcome = format!(
            "nothing of it was committed: the database is still at {}",
            heads_text(&step.heads_before)
        );
        let mut tx = self
            .client
            .transaction()
            .map_err(db("beginning a transaction"))?;
        set_timeouts(&mut tx, self.prepared.as_deref_mut(), &self.options, true)
            .map_err(db("setting lock_timeout"))?;
        let existing = match self.options.capture_locks {
            true => Some(
                trace::existing_tables(&mut tx, self.prepared.as_deref_mut())
                    .map_err(db("listing tables"))?,
            ),
            false => None,
        };
        let (trace, last) = execute_file_traced(
            &mut tx,
            step,
            migration,
            &outcome,
            existing.as_deref(),
            None,
            self.prepared.as_deref_mut(),
        )?;
        // Nothing runs between the last statement's trace and here: its state holds
        // the locks the migration commits with.
        let locks = match (existing, last) {
            (Some(existing), Some(last)) => last.held_on(&existing),
            (Some(existing), None) => {
                held_locks(&mut tx, &existing).map_err(db("reading pg_locks"))?
            }
            (None, _) => Vec::new(),
        };
        search_path_kept(
            &mut tx,
            self.prepared.as_deref_mut(),
            step,
            migration,
            &outcome,
        )?;
        let book = bookkeeping(
            step,
            migration,
            Status::Completed,
            &self.options.tool_version,
        );
        let record = NewRecord {
            duration_ms: Some(started.elapsed().as_millis() as i64),
            ..book.record
        };
        match book.head_changes.split_last() {
            Some((last, before)) => {
                for change in before {
                    apply_change(&mut tx, change, &step.revision)?;
                }
                apply_change_and_record(
                    &mut tx,
                    self.prepared.as_deref_mut(),
                    last,
                    &step.revision,
                    &record,
                )?;
            }
            None => {
                vt::record(&mut tx, self.prepared.as_deref_mut(), &record)
                    .map_err(db("recording the migration in alembic_version_history"))?;
            }
        }
        tx.commit()
            .map_err(db(&format!("committing migration {}", step.revision)))?;
        Ok((locks, trace))
    }

    /// Runs each statement on its own (CREATE INDEX CONCURRENTLY cannot run in a
    /// transaction), after committing an in-progress marker that the next run sees if
    /// we fail or are killed halfway.
    fn run_outside_transaction(
        &mut self,
        step: &Step,
        migration: &Migration,
    ) -> Result<Vec<StatementTrace>, MigrateError> {
        let started = Instant::now();
        let book = bookkeeping(
            step,
            migration,
            Status::InProgress,
            &self.options.tool_version,
        );
        let marker = vt::record(self.client, self.prepared.as_deref_mut(), &book.record)
            .map_err(db("recording the in-progress marker"))?;
        set_timeouts(
            self.client,
            self.prepared.as_deref_mut(),
            &self.options,
            false,
        )
        .map_err(db("setting lock_timeout"))?;
        let outcome = format!(
            "this migration runs outside a transaction: statements before this one stay applied; alembic_version still says {}, and the next run will refuse until you resolve it",
            heads_text(&step.heads_before)
        );
        let existing = match self.options.capture_locks {
            true => Some(
                trace::existing_tables(self.client, self.prepared.as_deref_mut())
                    .map_err(db("listing tables"))?,
            ),
            false => None,
        };
        let mut traced = Vec::new();
        let observer = match existing {
            Some(_) => open_observer(&mut self.observer, self.client)?,
            None => None,
        };
        let result = execute_file_traced(
            self.client,
            step,
            migration,
            &outcome,
            existing.as_deref(),
            observer,
            self.prepared.as_deref_mut(),
        )
        .and_then(|(trace, _)| {
            traced = trace;
            search_path_kept(
                self.client,
                self.prepared.as_deref_mut(),
                step,
                migration,
                &outcome,
            )?;
            let invalid = loss::invalid_indexes(self.client, self.prepared.as_deref_mut())
                .map_err(db("listing INVALID indexes"))?;
            match invalid.is_empty() {
                true => Ok(()),
                false => Err(MigrateError::Unfinished {
                    before: heads_text(&migration.parents).into(),
                    revision: step.revision.clone(),
                    path: migration.dir.clone(),
                    status: Status::Failed,
                    error: Some("INVALID indexes after the migration".into()),
                    invalid_indexes: invalid,
                }),
            }
        });
        let _ = self
            .client
            .batch_execute("RESET lock_timeout; RESET statement_timeout");
        let elapsed = started.elapsed().as_millis() as i64;
        if let Err(err) = result {
            let text = err.to_string();
            // Best effort: if the connection is gone the marker stays `in_progress`,
            // which the next run treats the same way.
            let _ = vt::finish_record(
                self.client,
                self.prepared.as_deref_mut(),
                marker,
                Status::Failed,
                elapsed,
                Some(&text),
            );
            return Err(err);
        }
        match book.head_changes.as_slice() {
            // One statement is atomic on its own: no transaction around it.
            [change] => change
                .apply_and_finish(
                    self.client,
                    self.prepared.as_deref_mut(),
                    &step.revision,
                    marker,
                    elapsed,
                )
                .map_err(|err| apply_error(err, &step.revision, "completing the marker"))?,
            changes => {
                let mut tx = self
                    .client
                    .transaction()
                    .map_err(db("beginning a transaction"))?;
                for change in changes {
                    apply_change(&mut tx, change, &step.revision)?;
                }
                vt::finish_record(
                    &mut tx,
                    self.prepared.as_deref_mut(),
                    marker,
                    Status::Completed,
                    elapsed,
                    None,
                )
                .map_err(db("completing the marker"))?;
                tx.commit()
                    .map_err(db(&format!("committing migration {}", step.revision)))?;
            }
        }
        Ok(traced)
    }

    /// Records `target` as the database's revision without running any migration.
    /// `purge` first empties `alembic_version` (also of revisions no file knows).
    pub fn stamp(&mut self, target: &str, purge: bool) -> Result<Vec<String>, MigrateError> {
        self.with_lock(|m| m.retrying_lock_timeouts(target, |m| m.try_stamp(target, purge)))
    }

    fn try_stamp(&mut self, target: &str, purge: bool) -> Result<Vec<String>, MigrateError> {
        let before = self.raw_heads()?;
        if !purge {
            self.check_known(&before)?;
        }
        let after = self.stamp_heads(if purge { &[] } else { &before }, target)?;
        let applied_before: BTreeSet<String> = if purge {
            BTreeSet::new()
        } else {
            self.graph
                .applied(&before)?
                .iter()
                .map(|mig| mig.revision.clone())
                .collect()
        };
        let applied_after: Vec<&Migration> = self.graph.applied(&after)?;
        let records =
            vt::latest_records(self.client).map_err(db("reading alembic_version_history"))?;

        vt::ensure_tables(self.client).map_err(db("creating the version tables"))?;
        let mut tx = self
            .client
            .transaction()
            .map_err(db("beginning a transaction"))?;
        set_timeouts(&mut tx, self.prepared.as_deref_mut(), &self.options, true)
            .map_err(db("setting lock_timeout"))?;
        if purge {
            tx.execute("DELETE FROM alembic_version", &[])
                .map_err(db("purging alembic_version"))?;
        }
        let from = if purge { Vec::new() } else { before.clone() };
        for change in vt::head_changes(&from, &after) {
            apply_change(&mut tx, &change, target)?;
        }
        let after_set: BTreeSet<&str> = applied_after
            .iter()
            .map(|mig| mig.revision.as_str())
            .collect();
        for migration in self.graph.migrations() {
            let rev = migration.revision.as_str();
            let newly = after_set.contains(rev) && !applied_before.contains(rev);
            let removed = !after_set.contains(rev) && applied_before.contains(rev);
            let unfinished = records
                .iter()
                .any(|r| r.revision == rev && r.status != Status::Completed);
            if newly || removed || unfinished {
                let checksum = after_set
                    .contains(rev)
                    .then_some(migration.checksum.as_str());
                vt::record(
                    &mut tx,
                    None,
                    &NewRecord {
                        revision: rev,
                        operation: Operation::Stamp,
                        checksum,
                        status: Status::Completed,
                        duration_ms: Some(0),
                        tool_version: &self.options.tool_version,
                        error: None,
                    },
                )
                .map_err(db("recording the stamp"))?;
            }
        }
        tx.commit().map_err(db("committing the stamp"))?;
        Ok(after)
    }

    fn stamp_heads(&self, before: &[String], target: &str) -> Result<Vec<String>, MigrateError> {
        let mut heads: Vec<String> = match target {
            "base" => Vec::new(),
            "heads" => self.graph.heads().iter().map(|h| h.to_string()).collect(),
            "head" => match self.graph.heads().as_slice() {
                [] => return Err(TargetError::Empty.into()),
                [one] => vec![one.to_string()],
                many => {
                    return Err(TargetError::MultipleHeads {
                        heads: many.iter().map(|h| h.to_string()).collect(),
                    }
                    .into())
                }
            },
            _ => {
                // A revision, a label or a prefix, or `LABEL@head`, `LABEL@heads`,
                // `LABEL@base`, as every other verb takes them.
                let targets: Vec<String> = match self.graph.resolve(target)? {
                    none if none.is_empty() => {
                        vec![self.graph.resolve_revision(target)?.revision.clone()]
                    }
                    some => some.iter().map(|m| m.revision.clone()).collect(),
                };
                let mut kept = before.to_vec();
                for revision in targets {
                    let related: BTreeSet<String> = self
                        .graph
                        .applied(std::slice::from_ref(&revision))?
                        .iter()
                        .map(|m| m.revision.clone())
                        .collect();
                    // Keep heads of unrelated branches; replace the ones on this line.
                    kept.retain(|h| {
                        !related.contains(h)
                            && !self
                                .graph
                                .applied(std::slice::from_ref(h))
                                .map(|a| a.iter().any(|m| m.revision == revision))
                                .unwrap_or(false)
                    });
                    kept.push(revision);
                }
                kept
            }
        };
        heads.sort();
        Ok(heads)
    }

    /// Accepts the current file of an applied revision as intended.
    pub fn rehash(&mut self, revision: &str) -> Result<(String, Option<String>), MigrateError> {
        let migration = self.graph.resolve_revision(revision)?;
        self.with_lock(|m| {
            let heads = m.current()?;
            if !m
                .graph
                .applied(&heads)?
                .iter()
                .any(|a| a.revision == migration.revision)
            {
                return Err(MigrateError::NotApplied {
                    revision: migration.revision.clone(),
                });
            }
            let records =
                vt::latest_records(m.client).map_err(db("reading alembic_version_history"))?;
            let old = records
                .iter()
                .find(|r| r.revision == migration.revision)
                .and_then(|r| r.checksum.clone());
            vt::ensure_tables(m.client).map_err(db("creating the version tables"))?;
            m.retrying_lock_timeouts(&migration.revision, |m| {
                let mut tx = m
                    .client
                    .transaction()
                    .map_err(db("beginning a transaction"))?;
                set_timeouts(&mut tx, None, &m.options, true)
                    .map_err(db("setting lock_timeout"))?;
                vt::record(
                    &mut tx,
                    None,
                    &NewRecord {
                        revision: &migration.revision,
                        operation: Operation::Rehash,
                        checksum: Some(&migration.checksum),
                        status: Status::Completed,
                        duration_ms: Some(0),
                        tool_version: &m.options.tool_version,
                        error: None,
                    },
                )
                .map_err(db("recording the new checksum"))?;
                tx.commit().map_err(db("committing the new checksum"))
            })?;
            Ok((migration.checksum.clone(), old))
        })
    }

    /// Runs `f` holding the session advisory lock, and always releases it (checked).
    fn with_lock<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, MigrateError>,
    ) -> Result<T, MigrateError> {
        watch_for_a_vanished_client(self.client, self.prepared.as_deref_mut())
            .map_err(db("setting client_connection_check_interval"))?;
        let on_event = &mut self.on_event;
        let waited = lock::acquire(
            self.client,
            self.prepared.as_deref_mut(),
            self.options.lock_wait,
            |holders| on_event(Event::WaitingForLock { holders }),
        )?;
        if let Some(waited) = waited {
            (self.on_event)(Event::LockAcquired { waited });
        }
        let result = f(self);
        // Any transaction of `f` is already rolled back (dropped); unlocking inside an
        // aborted transaction would fail and keep the lock.
        let released = lock::release(self.client, self.prepared.as_deref_mut());
        match (result, released) {
            (Ok(value), Ok(())) => Ok(value),
            (Err(err), _) => Err(err),
            (Ok(_), Err(err)) => Err(err),
        }
    }
}

/// What a step writes besides its own SQL, the same live and in `--sql` scripts: how
/// `alembic_version` moves, and the side-table row (its duration is the caller's).
pub(crate) struct Bookkeeping<'a> {
    pub head_changes: Vec<HeadChange>,
    pub record: NewRecord<'a>,
}

pub(crate) fn bookkeeping<'a>(
    step: &'a Step,
    migration: &'a Migration,
    status: Status,
    tool_version: &'a str,
) -> Bookkeeping<'a> {
    Bookkeeping {
        head_changes: vt::head_changes(&step.heads_before, &step.heads_after),
        record: NewRecord {
            revision: &step.revision,
            operation: Operation::of(step.direction),
            // Only an applied revision has a file to compare later; a downgrade records none.
            checksum: (step.direction == Direction::Up).then_some(migration.checksum.as_str()),
            status,
            duration_ms: None,
            tool_version,
            error: None,
        },
    }
}

fn integrity_of(migration: &Migration, record: Option<&HistoryRecord>) -> Integrity {
    let Some(record) = record else {
        return Integrity::NoRecord;
    };
    if record.status != Status::Completed {
        return Integrity::Unfinished(record.clone());
    }
    match &record.checksum {
        Some(recorded) if *recorded != migration.checksum => Integrity::Edited {
            recorded: recorded.clone(),
        },
        Some(_) => Integrity::Verified(record.clone()),
        None => Integrity::NoRecord,
    }
}

/// The observer (opened on first use), with the pid of `client`'s backend; `None` when
/// none was given.
fn open_observer<'o>(
    observer: &'o mut Option<Observer<'_>>,
    client: &mut Client,
) -> Result<Option<(&'o mut observe::LockObserver, i32)>, MigrateError> {
    let Some(Observer { slot, connect }) = observer else {
        return Ok(None);
    };
    // A kept watcher that no longer answers is replaced, as one opened per run would be.
    if slot.as_mut().is_some_and(|kept| !kept.is_alive()) {
        **slot = None;
    }
    if slot.is_none() {
        let session = connect().map_err(db("opening the session that watches locks"))?;
        **slot = Some(observe::LockObserver::new(session));
    }
    let Some(observer) = slot.as_mut() else {
        return Ok(None);
    };
    let pid: i32 = client
        .query_typed_one("SELECT pg_backend_pid()", &[])
        .map_err(db("reading our backend pid"))?
        .get(0);
    Ok(Some((observer, pid)))
}

/// The strongest lock per table over a migration's statements, as "Mode on table".
fn strongest_per_table(trace: &[StatementTrace]) -> Vec<String> {
    let mut strongest: std::collections::BTreeMap<&str, LockMode> = Default::default();
    for (table, mode) in trace.iter().flat_map(|t| &t.locks) {
        let entry = strongest.entry(table).or_insert(*mode);
        *entry = (*entry).max(*mode);
    }
    strongest
        .into_iter()
        .map(|(table, mode)| format!("{mode} on {table}"))
        .collect()
}

/// Our backend's strongest lock on each of the given tables, as "Mode on table".
fn held_locks(
    client: &mut impl GenericClient,
    tables: &[u32],
) -> Result<Vec<String>, postgres::Error> {
    let rows = client.query_typed(
        "SELECT c.relname::text, l.mode::text FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
          WHERE l.pid = pg_backend_pid() AND l.locktype = 'relation' AND l.granted AND l.relation = ANY($1)",
        &[(&tables, Type::OID_ARRAY)],
    )?;
    let mut strongest: std::collections::BTreeMap<String, String> =
        std::collections::BTreeMap::new();
    for row in rows {
        let (table, mode): (String, String) = (row.get(0), row.get(1));
        let rank = |m: &str| crate::declarative::plan::LockMode::from_pg_name(m);
        let entry = strongest.entry(table).or_insert_with(|| mode.clone());
        if rank(&mode) > rank(entry) {
            *entry = mode;
        }
    }
    Ok(strongest
        .into_iter()
        .map(|(table, mode)| format!("{mode} on {table}"))
        .collect())
}

/// A migrator killed mid-statement (SIGKILL, a lost laptop lid) must not keep its
/// transaction, its table locks and the migration lock until the statement ends: from
/// PostgreSQL 14 the server can poll the socket and abort the session when we are gone.
fn watch_for_a_vanished_client(
    client: &mut Client,
    prepared: Option<&mut Prepared>,
) -> Result<(), postgres::Error> {
    // One round trip: the version test and the setting in the same statement (every
    // run starts with it).
    crate::prepared::query(
        client,
        prepared,
        "SELECT set_config('client_connection_check_interval', '1s', false)
          WHERE current_setting('server_version_num')::int >= 140000",
        &[],
    )?;
    Ok(())
}

/// SQLSTATE 55P03: `lock_timeout` ran out waiting for a lock.
const LOCK_NOT_AVAILABLE: &str = "55P03";

/// Whether `err` is a statement (of a migration or of our bookkeeping) that gave up
/// waiting for a lock.
fn lock_timed_out(err: &MigrateError) -> bool {
    match err {
        MigrateError::Statement(failure) => failure.code.as_deref() == Some(LOCK_NOT_AVAILABLE),
        MigrateError::Db { source, .. } => {
            source.code() == Some(&postgres::error::SqlState::LOCK_NOT_AVAILABLE)
        }
        _ => false,
    }
}

/// Refuses to record `migration` when it left the session's search_path sending
/// `alembic_version` or its history elsewhere or nowhere, as `pg_dump`'s output does
/// (`set_config('search_path', '', false)`): the bookkeeping after it finds the version
/// tables by their unqualified names (as Alembic's does), and failed with "relation
/// \"alembic_version\" does not exist". A search_path that still finds public's tables
/// (`SET LOCAL search_path = audit, public` for the migration's own objects) is no
/// concern of the bookkeeping's.
/// Asked only of a migration whose text names `search_path` (a round trip more per
/// migration for the others would be paid by every run; a function of an earlier
/// migration that sets it is not seen).
fn search_path_kept(
    client: &mut impl GenericClient,
    prepared: Option<&mut Prepared>,
    step: &Step,
    migration: &Migration,
    outcome: &str,
) -> Result<(), MigrateError> {
    // The file's text, comments included: a false alarm costs one statement.
    if !migration
        .sql(step.direction)
        .to_ascii_lowercase()
        .contains("search_path")
    {
        return Ok(());
    }
    let row = crate::prepared::query_one(
        client,
        prepared,
        "SELECT current_setting('search_path'),
                to_regclass($1) IS NOT DISTINCT FROM to_regclass('public.' || $1)
                AND to_regclass($2) IS NOT DISTINCT FROM to_regclass('public.' || $2)",
        &[
            (&vt::VERSION_TABLE, postgres::types::Type::TEXT),
            (&vt::HISTORY_TABLE, postgres::types::Type::TEXT),
        ],
    )
    .map_err(db("reading the search_path"))?;
    if row.get(1) {
        return Ok(());
    }
    Err(MigrateError::SearchPathLeft {
        revision: step.revision.clone(),
        path: migration.path(step.direction),
        search_path: row.get(0),
        outcome: outcome.to_string(),
    })
}

/// Sets `lock_timeout` and `statement_timeout` (when given) for the transaction
/// (`local`) or the session, in one round trip: a step's setup is on every step's path.
fn set_timeouts(
    client: &mut impl GenericClient,
    prepared: Option<&mut Prepared>,
    options: &RunOptions,
    local: bool,
) -> Result<(), postgres::Error> {
    let lock_timeout = format!("{}ms", options.lock_timeout.as_millis());
    let statement_timeout = options
        .statement_timeout
        .map(|timeout| format!("{}ms", timeout.as_millis()));
    crate::prepared::query(
        client,
        prepared,
        "SELECT set_config('lock_timeout', $1, $3),
                set_config('statement_timeout', coalesce($2, current_setting('statement_timeout')), $3)",
        &[
            (&lock_timeout, Type::TEXT),
            (&statement_timeout, Type::TEXT),
            (&local, Type::BOOL),
        ],
    )?;
    Ok(())
}

fn execute_file(
    client: &mut impl GenericClient,
    step: &Step,
    migration: &Migration,
    outcome: &str,
) -> Result<(), MigrateError> {
    execute_file_traced(client, step, migration, outcome, None, None, None).map(drop)
}

/// Each statement's trace, and the traced tables' state after the last one (none
/// when nothing was traced or the file has no statement).
type Traced = (Vec<StatementTrace>, Option<trace::TableStates>);

/// Runs the file's statements; with `traced` (the tables that existed before), also
/// each statement's trace; with `observer` (and our backend's pid), its locks are the
/// ones the observer saw (outside a transaction our session sees none of them).
fn execute_file_traced(
    client: &mut impl GenericClient,
    step: &Step,
    migration: &Migration,
    outcome: &str,
    traced: Option<&[u32]>,
    mut observer: Option<(&mut observe::LockObserver, i32)>,
    mut prepared: Option<&mut Prepared>,
) -> Result<Traced, MigrateError> {
    let mut traces = Vec::new();
    let mut capture = |client: &mut _, tables| {
        trace::TableStates::capture(client, prepared.as_deref_mut(), tables)
            .map_err(db("tracing the statement"))
    };
    // Nothing runs between two statements: the state after one is the state before
    // the next, read once.
    let mut after_previous = None;
    for (n, statement) in migration.statements(step.direction).iter().enumerate() {
        let before = match after_previous.take() {
            Some(state) => Some(state),
            None => traced.map(|t| capture(client, t)).transpose()?,
        };
        let started = Instant::now();
        let (result, observed) = match (&mut observer, traced) {
            (Some((observer, pid)), Some(tables)) => {
                let (result, seen) = observer
                    .observe(*pid, tables, || client.batch_execute(&statement.sql))
                    .map_err(db("watching the statement's locks"))?;
                (result, Some(seen))
            }
            _ => (client.batch_execute(&statement.sql), None),
        };
        crate::prepared::ran_migration_statement(&statement.sql);
        if let Err(err) = result {
            return Err(statement_failure(
                err,
                step,
                migration,
                n + 1,
                statement,
                outcome,
            ));
        }
        let elapsed = started.elapsed();
        if let (Some(tables), Some(before)) = (traced, before) {
            let after = capture(client, tables)?;
            let mut trace = after.since(&before, statement, elapsed);
            if let Some(seen) = observed {
                trace.locks = seen.clone();
                trace.held = seen;
            }
            traces.push(trace);
            after_previous = Some(after);
        }
    }
    Ok((traces, after_previous))
}

fn statement_failure(
    err: postgres::Error,
    step: &Step,
    migration: &Migration,
    number: usize,
    statement: &crate::sql_split::Statement,
    outcome: &str,
) -> MigrateError {
    let path = migration.path(step.direction);
    let Some(db_error) = err.as_db_error() else {
        return MigrateError::Db {
            action: format!(
                "running {} (statement {number}, line {})",
                path.display(),
                statement.line
            ),
            source: err,
        };
    };
    let (mut line, mut column) = (statement.line, None);
    if let Some((lines_down, at)) = crate::sql_split::error_location(&statement.sql, db_error) {
        line = statement.text_line + lines_down;
        column = Some(at);
    }
    MigrateError::Statement(Box::new(StatementFailure {
        revision: step.revision.clone(),
        path,
        statement: number,
        line,
        column,
        sql: statement.sql.clone(),
        message: db_error.message().to_string(),
        code: Some(db_error.code().code().to_string()),
        detail: db_error.detail().map(str::to_string),
        hint: db_error.hint().map(str::to_string),
        outcome: outcome.to_string(),
        advice: crate::sqlstate::hint(db_error.code().code(), db_error.message()),
    }))
}

fn apply_change(
    client: &mut impl GenericClient,
    change: &HeadChange,
    revision: &str,
) -> Result<(), MigrateError> {
    change.apply(client, revision).map_err(|err| match err {
        ApplyError::Db(source) => MigrateError::Db {
            action: format!("updating alembic_version for {revision}"),
            source,
        },
        ApplyError::Race(race) => MigrateError::Race(race),
    })
}

/// As [`apply_change`], with the side-table row written by the same statement.
fn apply_change_and_record(
    client: &mut impl GenericClient,
    prepared: Option<&mut Prepared>,
    change: &HeadChange,
    revision: &str,
    record: &NewRecord<'_>,
) -> Result<(), MigrateError> {
    change
        .apply_and_record(client, prepared, revision, record)
        .map_err(|err| apply_error(err, revision, "recording it in alembic_version_history"))
}

/// A failed change of `alembic_version` (with `also`, what the same statement did).
fn apply_error(err: ApplyError, revision: &str, also: &str) -> MigrateError {
    match err {
        ApplyError::Db(source) => MigrateError::Db {
            action: format!("updating alembic_version for {revision} and {also}"),
            source,
        },
        ApplyError::Race(race) => MigrateError::Race(race),
    }
}

/// Alembic's line for a step: `Running upgrade a1b2 -> b2c3, A/B test tables`.
pub fn running_line(step: &Step, migration: &Migration) -> String {
    match step.direction {
        Direction::Up => format!(
            "Running upgrade {} -> {}, {}",
            migration.parents.join(", "),
            migration.revision,
            migration.message
        ),
        Direction::Down => format!(
            "Running downgrade {} -> {}, {}",
            migration.revision,
            migration.parents.join(", "),
            migration.message
        ),
    }
}

pub(crate) fn db(action: &str) -> impl FnOnce(postgres::Error) -> MigrateError + '_ {
    move |source| MigrateError::Db {
        action: action.to_string(),
        source,
    }
}

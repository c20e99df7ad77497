//! `verify`: proves every migration on a throwaway cluster. A stairway (up, snapshot,
//! down, compare, up again) with seeded data and tenant-isolation checks at every
//! revision, base -> head in one go against the stairway's head, head -> base leaving
//! nothing behind, and the orders of applying merged branches converging (up to
//! `MERGE_ORDERS` of them).

mod cache;
pub mod data;
pub mod findings;
pub mod isolation;
mod kept;
pub mod roles;
mod scoped;
pub mod seed;
mod segments;

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use postgres::Client;
use serde::{Deserialize, Serialize};

use crate::cluster::{ClusterError, TempCluster};
use crate::graph::{RevisionGraph, UsableGraph};
use crate::lint::{self, Allowed, LintConfig, Severity};
use crate::prepared::Prepared;
use crate::runner::observe::LockObserver;
use crate::runner::{Migrator, RunOptions, StepReport};
use crate::snapshot::SchemaSnapshot;
use crate::source::SourceError;
use crate::Direction;
use cache::{Cache, CachedChain, CachedRevision};
use data::{TableData, TrackedData};
use findings::Finding;
use isolation::IsolationFailure;
use roles::RolesError;
use scoped::Tracked;

/// A step of the stairway at one revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StairStep {
    /// The upgrade to the revision.
    Up,
    /// Its downgrade back to the parent.
    Down,
    /// The upgrade again after the downgrade.
    UpAgain,
}

impl StairStep {
    pub fn label(self) -> &'static str {
        match self {
            StairStep::Up => "upgrade",
            StairStep::Down => "downgrade",
            StairStep::UpAgain => "upgrade again after the downgrade",
        }
    }
}

/// What happened at one revision of the stairway.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RevisionReport {
    pub revision: String,
    pub message: String,
    pub dir: String,
    pub up_ms: u64,
    pub down_ms: u64,
    /// None when the round trip matched; else the readable diff.
    pub schema_roundtrip: Option<String>,
    /// Rows of kept tables that changed (failures).
    pub data_changed: Vec<String>,
    /// Data the downgrade destroys (reported, not a failure).
    pub destructive: Vec<String>,
    pub isolation_checked: Vec<String>,
    pub isolation_failures: Vec<IsolationFailure>,
    pub locks_up: Vec<String>,
    pub locks_down: Vec<String>,
    #[serde(skip)]
    pub schema: SchemaSnapshot,
    /// A migration that could not run: names the file, statement and error.
    pub error: Option<String>,
    /// The step `error` happened in.
    pub failed_step: Option<StairStep>,
}

impl RevisionReport {
    pub fn passed(&self) -> bool {
        self.error.is_none()
            && self.schema_roundtrip.is_none()
            && self.data_changed.is_empty()
            && self.isolation_failures.is_empty()
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    pub server_version: String,
    pub revisions: Vec<RevisionReport>,
    /// Whole-chain and graph failures (graph problems, heads, base->head, head->base,
    /// merges), each saying which check, direction and revision.
    pub failures: Vec<String>,
    pub warnings: Vec<String>,
    /// Safety findings (traced and static) and redundant indexes, each with its rule,
    /// severity, file, line and fix; errors fail the run, warnings with `--strict`.
    pub findings: Vec<Finding>,
    /// Findings a suppression allowed, with its reason.
    pub allowed: Vec<Allowed>,
    /// Tables that return an error or no rows when no tenant is set (fail-closed, as
    /// they should): said once for the whole run.
    pub fail_closed: Vec<String>,
    /// Revisions not checked, each with why (a graph problem above them, or an earlier
    /// revision that failed).
    pub not_checked: Vec<String>,
    /// Roles created from the migrations' roles file before the chain ran.
    pub declared_roles: Vec<String>,
    /// Warnings and findings count as failures.
    pub strict: bool,
    pub total_ms: u64,
    /// The cache file read and written, when the run used one.
    pub cache_file: Option<String>,
    /// Revisions whose results came from the cache (a prefix of the stairway: the
    /// first revision whose key changed and everything after it are verified now).
    pub from_cache: Vec<String>,
    /// The revision after which the stairway started, from a database a run with the
    /// cache kept (the revisions before it were not replayed).
    pub resumed_after: Option<String>,
    /// base -> head, head -> base and the merge orders came from the cache.
    pub chain_from_cache: bool,
    /// A cache file ignored or not written, and why.
    pub cache_notes: Vec<String>,
}

impl VerifyReport {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
            && self.revisions.iter().all(RevisionReport::passed)
            && self.error_findings() == 0
            && !(self.strict && self.warning_count() > 0)
    }

    /// Warnings and findings that are not errors.
    pub fn warning_count(&self) -> usize {
        self.warnings.len()
            + self
                .findings
                .iter()
                .filter(|f| f.severity != Severity::Error)
                .count()
    }

    /// Findings of severity error: each fails the run.
    pub fn error_findings(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .count()
    }
}

/// How to run [`verify`].
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Warnings and findings fail the run (for CI).
    pub strict: bool,
    /// Also read the whole schema after every step and fail the run where the
    /// snapshot kept up to date from what the step touched differs from it (for the
    /// test that holds the two equal).
    pub compare_full_snapshots: bool,
    /// Where results are kept per revision between runs (`target/verify-cache` for
    /// the xtask); `None` verifies every revision (`--no-cache`).
    pub cache_dir: Option<PathBuf>,
    /// How many segments of the stairway climb at once, each on a cluster of its own;
    /// `None` chooses one per core while each has `segments::MIN_SEGMENT` revisions.
    pub jobs: Option<usize>,
}

/// Where a run is: the step it starts, and how many revisions of the stairway are
/// done out of how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyStep<'a> {
    pub revisions_done: usize,
    pub revisions_total: usize,
    /// `REV up`, `REV down`, `REV up again`, `merge order N/M`.
    pub what: &'a str,
}

/// Live progress, once per step.
pub type Progress<'a> = &'a mut (dyn FnMut(VerifyStep<'_>) + Send);

/// Progress shared by the segments that climb at once: every step says how many
/// revisions all of them have verified.
struct SharedProgress<'a> {
    report: Mutex<Progress<'a>>,
    done: AtomicUsize,
    total: usize,
}

impl<'a> SharedProgress<'a> {
    fn new(report: Progress<'a>, total: usize, done: usize) -> SharedProgress<'a> {
        SharedProgress {
            report: Mutex::new(report),
            done: AtomicUsize::new(done),
            total,
        }
    }

    fn step(&self, what: &str) {
        let step = VerifyStep {
            revisions_done: self.done.load(Ordering::Relaxed),
            revisions_total: self.total,
            what,
        };
        // A panicked segment fails the run anyway; its progress line does not matter.
        if let Ok(mut report) = self.report.lock() {
            report(step);
        }
    }

    fn verified_one(&self) {
        self.done.fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Roles(#[from] RolesError),
    #[error(transparent)]
    LintConfig(#[from] lint::allow::ConfigError),
    #[error("replaying {revision}, verified earlier and taken from the cache, failed this time ({err}): its result cannot be trusted; run `cargo xtask verify --no-cache`")]
    CacheReplay { revision: String, err: String },
    #[error("verify's own query failed")]
    Db(#[from] postgres::Error),
    /// The stairway databases of a run are not kept for the next one, and why.
    #[error("{0}")]
    NotKept(String),
}

/// Reads the migrations in `dir` and verifies them: graph problems are failures of the
/// report, and the revisions they do not touch are still checked.
pub fn verify_dir(
    dir: &Path,
    options: &VerifyOptions,
    progress: Progress<'_>,
) -> Result<VerifyReport, VerifyError> {
    let usable = RevisionGraph::load_usable(dir)?;
    verify_usable(&usable, options, progress)
}

/// Runs every check of `graph` on a new throwaway cluster.
pub fn verify(graph: &RevisionGraph, progress: Progress<'_>) -> Result<VerifyReport, VerifyError> {
    let usable = UsableGraph {
        graph: graph.clone(),
        problems: Vec::new(),
        left_out: Vec::new(),
    };
    verify_usable(&usable, &VerifyOptions::default(), progress)
}

fn verify_usable(
    usable: &UsableGraph,
    options: &VerifyOptions,
    progress: Progress<'_>,
) -> Result<VerifyReport, VerifyError> {
    let started = Instant::now();
    let graph = &usable.graph;
    let declared_roles = roles::declared_roles(graph.dir())?;
    let config = LintConfig::read(graph.dir())?;
    let known_roles = lint::static_rules::known_roles(graph)?;
    let mut report = VerifyReport {
        declared_roles: declared_roles.clone(),
        strict: options.strict,
        ..VerifyReport::default()
    };
    for problem in &usable.problems {
        report.failures.push(format!("graph: {problem}"));
    }
    for (revision, dir) in &usable.left_out {
        report.not_checked.push(format!(
            "{revision} ({}): it descends from a revision with a graph problem",
            dir.display()
        ));
    }
    let binaries = crate::cluster::PgBinaries::locate()?;
    report.server_version = binaries.version().to_string();
    let heads = graph.heads();
    if heads.len() > 1 && !graph.declares_branches() {
        let paths: Vec<String> = heads
            .iter()
            .map(|h| {
                graph
                    .get(h)
                    .map(|m| m.dir.display().to_string())
                    .unwrap_or_default()
            })
            .collect();
        report.failures.push(format!(
            "graph: the graph has {} heads ({}) and declares no branches: merge them with `cargo xtask migrate merge {}`",
            heads.len(),
            paths.join(", "),
            heads.join(" ")
        ));
    }
    if graph.is_empty() {
        report.total_ms = started.elapsed().as_millis() as u64;
        return Ok(report);
    }
    // A run that compares snapshots with full reads is a check of the code itself.
    let cache = options
        .cache_dir
        .as_deref()
        .filter(|_| !options.compare_full_snapshots)
        .map(|dir| Cache::open(dir, graph.dir()));
    let keys = cache::keys(graph, &report.server_version);
    let chain_key = keys.last().cloned().unwrap_or_default();
    let cached: Vec<CachedRevision> = match &cache {
        Some(cache) => {
            report.cache_file = Some(cache.path().display().to_string());
            report.cache_notes.extend(cache.note.clone());
            keys.iter()
                .map_while(|key| cache.revision(key).cloned())
                .collect()
        }
        None => Vec::new(),
    };
    let cached_chain = cache
        .as_ref()
        .and_then(|cache| cache.chain(&chain_key))
        .filter(|_| cached.len() == keys.len())
        .cloned();

    // The stairway starts from the kept database latest in it that the cache reaches,
    // else from an empty one.
    let (found, note) = match &cache {
        Some(cache) => kept::find(&cache.kept_dir(), &keys, cached.len()),
        None => (None, None),
    };
    report.cache_notes.extend(note);
    let mut listed: Vec<kept::KeptDatabase> = Vec::new();
    let mut from = 0;
    let cluster = match found.map(|found| (kept::start_from(&found), found)) {
        Some((Ok(cluster), found)) => {
            from = found.position;
            listed = found.listed;
            report.resumed_after = Some(graph.migrations()[from - 1].revision.clone());
            cluster
        }
        Some((Err(err), found)) => {
            report.cache_notes.push(format!(
                "the kept databases in {} could not be started ({err}): the revisions before the first changed one are replayed",
                found.data.display()
            ));
            new_cluster(&declared_roles, STAIRWAY_DB)?
        }
        None => new_cluster(&declared_roles, STAIRWAY_DB)?,
    };

    let total = graph.migrations().len();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let count = segments::segment_count(total - cached.len(), options.jobs, cores);
    let plan = segments::plan(cached.len(), total, count);
    let progress = SharedProgress::new(progress, total, cached.len());
    let resume = Resume {
        keys: &keys,
        cached: &cached,
        need_head: cached_chain.is_none(),
        from,
    };
    let keep_in = cache.as_ref().map(|cache| kept::KeepIn {
        dir: cache.kept_dir(),
        listed: std::mem::take(&mut listed),
    });
    let keep = keep_in.as_ref();
    let climb = Climb {
        graph,
        config: &config,
        options,
        keys: &keys,
        progress: &progress,
        keep,
    };
    // The whole-chain checks and the later segments climb on clusters of their own while
    // the first segment climbs here.
    let (whole, first, later, keep_note) = std::thread::scope(|scope| {
        let whole = cached_chain
            .is_none()
            .then(|| scope.spawn(|| whole_chain(graph, &declared_roles, &progress)));
        let later: Vec<_> = plan[1..]
            .iter()
            .map(|range| {
                let range = range.clone();
                let roles = &declared_roles;
                scope.spawn(move || later_segment(&climb, roles, range))
            })
            .collect();
        let first = first_segment(&climb, &cluster, &resume, plan[0].clone());
        // Kept while the whole-chain checks still run. The run's cluster stands at the
        // stairway's end when it climbed alone, or replayed every revision.
        let reached_end = plan[0].start < total || cached_chain.is_none();
        let keep_note = match (&first, keep) {
            (Ok((part, _, copied)), Some(keep)) if plan.len() == 1 && reached_end => {
                kept::keep_end(cluster, keep, copied, part, graph, &keys)
            }
            _ => None,
        };
        let later: Vec<_> = later
            .into_iter()
            .map(|s| s.join().expect("a segment's thread does not panic"))
            .collect();
        let whole = whole.map(|w| w.join().expect("the whole-chain thread does not panic"));
        (
            whole,
            first.map(|(part, fresh, _)| (part, fresh)),
            later,
            keep_note,
        )
    });
    report.cache_notes.extend(keep_note);
    let (part, mut fresh) = first?;
    let mut stopped = part.revisions.iter().any(|r| r.error.is_some());
    segments::absorb(&mut report, part);
    for (segment, range) in later.into_iter().zip(&plan[1..]) {
        // After a revision that failed, one stairway would not have gone on: what a
        // later segment met (even an error of its own) is not part of the report.
        if stopped {
            continue;
        }
        match segment? {
            Segment::Climbed(part, kept) => {
                stopped = part.revisions.iter().any(|r| r.error.is_some());
                segments::absorb(&mut report, *part);
                fresh.extend(kept);
            }
            Segment::ReplayFailed {
                revision,
                step,
                err,
            } => {
                stopped = true;
                report.failures.push(format!(
                    "replaying {revision} on a second cluster, to verify the revisions after it at the same time, failed in its {} where the stairway's passed ({err}): the migrations do not give the same result twice; run `cargo xtask verify --jobs 1` to verify them in one stairway",
                    step.label()
                ));
                for later in &graph.migrations()[range.start..] {
                    report.not_checked.push(format!(
                        "{} ({}): replaying {revision} before it failed",
                        later.revision,
                        later.dir.display()
                    ));
                }
            }
        }
    }
    let chain_failures = match (whole, &cached_chain) {
        (Some(whole), _) => {
            let (one, merge_failures) = whole?;
            let mut failures = Vec::new();
            match one {
                OneGo::UpFailed(err) => {
                    failures.push(format!("base -> head in one go: the upgrade failed: {err}"))
                }
                OneGo::DownFailed(head, err) => {
                    failures.extend(compare_heads(graph, &report, &head));
                    failures.push(format!(
                        "head -> base in one go: the downgrade failed: {err}"
                    ));
                }
                OneGo::Done(head, left) => {
                    failures.extend(compare_heads(graph, &report, &head));
                    if let Some(left) = left {
                        failures.push(format!(
                            "head -> base in one go: the downgrade to base left objects behind:\n{left}"
                        ));
                    }
                }
            }
            failures.extend(merge_failures);
            failures
        }
        (None, Some(cached)) => {
            report.chain_from_cache = true;
            cached.failures.clone()
        }
        (None, None) => unreachable!("the whole-chain checks run unless they are cached"),
    };
    report.failures.extend(chain_failures.iter().cloned());
    if let Some(cache) = &cache {
        // Only revisions that passed are kept: a failure is always verified again.
        let mut kept = cached;
        kept.extend(fresh);
        let complete = kept.len() == keys.len();
        let chain = complete.then_some(CachedChain {
            key: chain_key,
            failures: chain_failures,
        });
        if let Err(err) = cache.save(kept, chain) {
            report.cache_notes.push(format!(
                "cannot write the cache file {} ({err}): the next run verifies every revision",
                cache.path().display()
            ));
        }
    }
    for migration in graph.migrations() {
        for direction in [Direction::Up, Direction::Down] {
            report.findings.extend(lint::static_rules::check(
                migration,
                direction,
                &known_roles,
            ));
        }
    }
    let (findings, allowed) = config.apply(graph, std::mem::take(&mut report.findings));
    report.findings = findings;
    report.allowed = allowed;
    report.total_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// base -> head in one go must equal the stairway's head, when the stairway got there.
fn compare_heads(
    graph: &RevisionGraph,
    report: &VerifyReport,
    head: &SchemaSnapshot,
) -> Option<String> {
    let last = report.revisions.last().filter(|r| r.error.is_none())?;
    if report.revisions.len() != graph.migrations().len() {
        return None;
    }
    let diff = last.schema.diff(head)?;
    Some(format!(
        "base -> head in one go: the schema differs from the stairway's head:\n{diff}"
    ))
}

/// Pushes `warning` unless one saying the same (but its `at REV: ` prefix) is there
/// already.
fn warn_once(report: &mut VerifyReport, revision: &str, warning: &str) {
    let key = warning_key(warning);
    let known = report
        .warnings
        .iter()
        .any(|w| w.split_once(": ").map(|x| warning_key(x.1)) == Some(key));
    if !known {
        report.warnings.push(format!("at {revision}: {warning}"));
    }
}

/// What makes two warnings the same: a table that could not be seeded is named once,
/// though PostgreSQL's reason can quote a row whose identity value changes at every
/// attempt.
fn warning_key(warning: &str) -> &str {
    const UNSEEDABLE: &str = " could not be seeded";
    match warning.find(UNSEEDABLE) {
        Some(at) if warning.starts_with("table ") => &warning[..at + UNSEEDABLE.len()],
        _ => warning,
    }
}

/// Seeds the tables `rows` (the rows now) holds none of; a table the schema does not let
/// us fill is a warning, once. Whether a table was given rows.
fn seed(
    client: &mut Client,
    prepared: &mut Prepared,
    report: &mut VerifyReport,
    revision: &str,
    rows: &TrackedData,
) -> Result<bool, VerifyError> {
    let seeding = seed::seed_empty_tables_known(client, prepared, &rows.tables, &rows.data)?;
    for table in seeding.unseedable {
        warn_once(
            report,
            revision,
            &format!(
                "table {} could not be seeded, so its data and isolation are not checked: {}",
                table.table, table.reason
            ),
        );
    }
    Ok(!seeding.seeded.is_empty())
}

/// Redundant indexes not reported at an earlier revision.
fn new_redundant_indexes(
    client: &mut Client,
    prepared: &mut Prepared,
    report: &mut VerifyReport,
    revision: &str,
    touched: Option<&[u32]>,
) -> Result<(), VerifyError> {
    for finding in findings::redundant_indexes(client, prepared, revision, touched)? {
        if !redundancy_known(report, &finding) {
            report.findings.push(finding);
        }
    }
    Ok(())
}

/// Whether `finding` names a redundant index an earlier revision's finding named already.
fn redundancy_known(report: &VerifyReport, finding: &Finding) -> bool {
    finding.rule == lint::Rule::RedundantIndex
        && report.findings.iter().any(|f| {
            f.rule == finding.rule
                && f.index == finding.index
                && f.covered_by == finding.covered_by
                && f.table == finding.table
        })
}

fn options() -> RunOptions {
    RunOptions {
        capture_locks: true,
        ..RunOptions::default()
    }
}

/// The database the stairway climbs.
const STAIRWAY_DB: &str = "verify_stairway";

/// A new session on `database` of `cluster`: every one verify migrates on (the stairway
/// seeds and reads on them too; base -> head in one go and the merge orders run alike).
///
/// Its prepared statements (the reads after every step, `Prepared`) are planned once:
/// `plan_cache_mode` otherwise planned most of them again at every run for the oids
/// bound, which cost several times running them. The setting decides only whether a
/// statement is planned again for its parameters, never what it returns, for the
/// migrations' own statements (a function's, a `DO` block's) too.
fn session(cluster: &TempCluster, database: &str) -> Result<Client, ClusterError> {
    cluster.client_with_options(database, "-c plan_cache_mode=force_generic_plan")
}

/// A new session on the stairway database.
fn stairway_session(cluster: &TempCluster) -> Result<Client, ClusterError> {
    session(cluster, STAIRWAY_DB)
}

/// Where the stairway starts: each revision's key, the results the cache holds for the
/// first of them, and whether the head's schema is needed when all of them are cached
/// (the whole-chain checks compare it when they are not cached).
struct Resume<'a> {
    keys: &'a [String],
    cached: &'a [CachedRevision],
    need_head: bool,
    /// The position the stairway database stands before (a kept database's, else 0).
    from: usize,
}

/// Puts the cached revisions' results in the report, and the stairway database where a
/// full run leaves it after them: every step the stairway takes there but its reads and
/// checks, as a later segment's `replay` does (the round trips count: a sequence an
/// upgrade advances and its downgrade leaves alone stands where two upgrades put it, and
/// a re-run that replayed only the upgrades passed a later revision a full run fails).
/// What may differ is what differs between two full runs (random and volatile values).
fn resume(
    graph: &RevisionGraph,
    client: &mut Client,
    report: &mut VerifyReport,
    resume: &Resume<'_>,
) -> Result<(), VerifyError> {
    let needed = resume.cached.len() < resume.keys.len() || resume.need_head;
    if needed {
        let upto = resume.cached.len();
        if let Some((revision, step, err)) = replay(graph, client, resume.from..upto)? {
            return Err(VerifyError::CacheReplay {
                revision,
                err: format!("{}: {err}", step.label()),
            });
        }
    }
    for cached in resume.cached {
        report.revisions.push(cached.report.clone());
        report.from_cache.push(cached.report.revision.clone());
        report.warnings.extend(cached.warnings.iter().cloned());
        report.findings.extend(cached.findings.iter().cloned());
        report
            .fail_closed
            .extend(cached.fail_closed.iter().cloned());
    }
    if needed && resume.cached.len() == resume.keys.len() {
        if let Some(last) = report.revisions.last_mut() {
            last.schema = SchemaSnapshot::capture(client)?;
        }
    }
    Ok(())
}

/// What every segment climbs with.
#[derive(Clone, Copy)]
struct Climb<'a, 'p> {
    graph: &'a RevisionGraph,
    config: &'a LintConfig,
    options: &'a VerifyOptions,
    /// Each revision's cache key, in the stairway's order.
    keys: &'a [String],
    progress: &'a SharedProgress<'p>,
    /// Where the stairway's databases are kept for the next run (a run with the cache):
    /// the one before the newest revision is copied, and the cluster that climbed the
    /// end is kept.
    keep: Option<&'a kept::KeepIn>,
}

/// How a segment after the first ended.
enum Segment {
    /// Its report (with a note when its cluster, the last segment's, could not be
    /// kept), and the revisions that passed (for the cache).
    Climbed(Box<VerifyReport>, Vec<CachedRevision>),
    /// Replaying the revisions before it failed at `step` of `revision`, which the
    /// stairway before it verified.
    ReplayFailed {
        revision: String,
        step: StairStep,
        err: String,
    },
}

/// The first segment, on the run's own cluster: the cached revisions put back, then the
/// positions `range` verified.
#[allow(clippy::type_complexity)]
fn first_segment(
    climb: &Climb<'_, '_>,
    cluster: &TempCluster,
    start: &Resume<'_>,
    range: Range<usize>,
) -> Result<(VerifyReport, Vec<CachedRevision>, Vec<kept::KeptDatabase>), VerifyError> {
    let mut report = VerifyReport::default();
    let mut client = stairway_session(cluster)?;
    resume(climb.graph, &mut client, &mut report, start)?;
    let mut copied = Vec::new();
    let fresh = stairway(climb, cluster, &mut client, &mut report, range, &mut copied)?;
    Ok((report, fresh, copied))
}

/// A later segment, on a cluster of its own: every revision before `range` replayed the
/// fast way, then `range` verified.
fn later_segment(
    climb: &Climb<'_, '_>,
    roles: &[String],
    range: Range<usize>,
) -> Result<Segment, VerifyError> {
    let cluster = new_cluster(roles, STAIRWAY_DB)?;
    let mut client = stairway_session(&cluster)?;
    if let Some((revision, step, err)) = replay(climb.graph, &mut client, 0..range.start)? {
        return Ok(Segment::ReplayFailed {
            revision,
            step,
            err,
        });
    }
    let mut report = VerifyReport::default();
    let mut copied = Vec::new();
    let end = range.end == climb.graph.migrations().len();
    let fresh = stairway(
        climb,
        &cluster,
        &mut client,
        &mut report,
        range,
        &mut copied,
    )?;
    drop(client);
    if let (true, Some(keep)) = (end, climb.keep) {
        let note = kept::keep_end(cluster, keep, &copied, &report, climb.graph, climb.keys);
        report.cache_notes.extend(note);
    }
    Ok(Segment::Climbed(Box::new(report), fresh))
}

/// Brings a stairway database standing before position `positions.start` where the
/// stairway leaves it before position `positions.end`:
/// every step the stairway takes there but its reads and checks (the seeding before and
/// after each upgrade, the isolation check's role once a table has a policy, the
/// downgrade and the upgrade again). The round trips count: what a downgrade and the
/// upgrade again leave (a row an upgrade inserts that its downgrade keeps, a column
/// re-added at the end of its table) is what the revisions after it meet. The revision
/// and step that failed, if one did.
fn replay(
    graph: &RevisionGraph,
    client: &mut Client,
    positions: Range<usize>,
) -> Result<Option<(String, StairStep, String)>, VerifyError> {
    let mut app_role = false;
    let mut prepared = Prepared::default();
    for migration in &graph.migrations()[positions] {
        let revision = &migration.revision;
        let failed = |step, err| Ok(Some((revision.clone(), step, err)));
        seed::seed_empty_tables(client)?;
        if let Err(err) = fast(client, &mut prepared, graph, |m| m.upgrade(revision)) {
            return failed(StairStep::Up, err);
        }
        seed::seed_empty_tables(client)?;
        if !app_role && isolation::has_policies(client)? {
            isolation::create_app_role(client)?;
            app_role = true;
        }
        if let Err(err) = fast(client, &mut prepared, graph, |m| m.unapply(revision)) {
            return failed(StairStep::Down, err);
        }
        if let Err(err) = fast(client, &mut prepared, graph, |m| m.upgrade(revision)) {
            return failed(StairStep::UpAgain, err);
        }
    }
    Ok(None)
}

/// base -> head -> base in one go, then the merge orders, each on a cluster of its own
/// (a migration's `CREATE ROLE` would fail on a cluster another one ran it on).
fn whole_chain(
    graph: &RevisionGraph,
    roles: &[String],
    progress: &SharedProgress<'_>,
) -> Result<(OneGo, Vec<String>), VerifyError> {
    let one = {
        let cluster = new_cluster(roles, "verify_chain")?;
        one_go(graph, session(&cluster, "verify_chain")?)?
    };
    Ok((one, merges(graph, roles, progress)?))
}

/// A throwaway cluster with the declared roles and an empty database `database`.
fn new_cluster(roles: &[String], database: &str) -> Result<TempCluster, VerifyError> {
    let cluster = TempCluster::start()?;
    roles::create(&mut cluster.client("postgres")?, roles)?;
    cluster.create_database(database, None)?;
    Ok(cluster)
}

/// Verifies the revisions at the positions `range`, the database holding every one
/// before them; returns those that passed, for the cache. With `climb.keep`, the
/// database before the newest revision is copied into `copied`.
fn stairway(
    climb: &Climb<'_, '_>,
    cluster: &TempCluster,
    client: &mut Client,
    report: &mut VerifyReport,
    range: Range<usize>,
    copied: &mut Vec<kept::KeptDatabase>,
) -> Result<Vec<CachedRevision>, VerifyError> {
    let Climb {
        graph,
        config,
        options,
        keys,
        progress,
        keep,
    } = *climb;
    let mut fresh = Vec::new();
    if range.is_empty() {
        return Ok(fresh);
    }
    // Each snapshot re-reads only what the step before it touched.
    let snapshot = |client: &mut Client,
                    report: &mut VerifyReport,
                    before: &Tracked,
                    at: String|
     -> Result<Tracked, VerifyError> {
        let tracked = before.refresh(client)?;
        if options.compare_full_snapshots {
            if let Some(diff) = tracked.snapshot.diff(&SchemaSnapshot::capture(client)?) {
                report.failures.push(format!(
                    "the snapshot kept from what each step touched differs from a full read after {at}:\n{diff}"
                ));
            }
        }
        Ok(tracked)
    };
    // The rows too: each capture re-reads only the tables whose rows can have changed.
    let rows_now = |client: &mut Client,
                    report: &mut VerifyReport,
                    before: &TrackedData,
                    at: String|
     -> Result<TrackedData, VerifyError> {
        let tracked = before.refresh(client)?;
        if options.compare_full_snapshots {
            let differ = tracked.data.differing_tables(&TableData::capture(client)?);
            if !differ.is_empty() {
                report.failures.push(format!(
                    "the rows kept from what each step touched differ from a full read {at}: {}",
                    differ.join(", ")
                ));
            }
        }
        Ok(tracked)
    };
    let mut previous = Tracked::capture(client)?;
    let mut rows = TrackedData::capture(client)?;
    let mut on_session = OnSession::default();
    let url = cluster.url(STAIRWAY_DB);
    let mut untouched =
        isolation::UntouchedSession::new(|| postgres::Client::connect(&url, postgres::NoTls));
    for (position, migration) in graph.migrations().iter().enumerate() {
        if !range.contains(&position) {
            continue;
        }
        if position > 0 && position + 1 == graph.migrations().len() {
            // Every run climbs the newest revision on a new session: a re-run starting
            // there from a kept database has a new session, and what an earlier
            // migration or check left on the old one (a temporary table, a SET, a
            // custom setting, a sequence's currval) must not make the two differ.
            untouched.close();
            // The lock watcher's session too: a database another session is connected
            // to cannot be copied.
            on_session = OnSession::default();
            if keep.is_some() {
                // The next run after an edit of the newest revision starts here.
                match kept::copy_stairway(cluster, client, &keys[position - 1])? {
                    Ok(kept) => copied.push(kept),
                    Err(why) => report.cache_notes.push(format!(
                        "the stairway database before {} is not kept for the next run ({why}): a re-run after editing it replays the revisions before it",
                        migration.revision
                    )),
                }
            } else {
                *client = stairway_session(cluster)?;
            }
            // What was prepared on the old session is gone with it.
            previous = Tracked::capture(client)?;
            rows = TrackedData::capture(client)?;
        }
        let marks = (
            report.warnings.len(),
            report.findings.len(),
            report.fail_closed.len(),
        );
        let revision = migration.revision.clone();
        let mut rev = RevisionReport {
            revision: revision.clone(),
            message: migration.message.clone(),
            dir: migration.dir.display().to_string(),
            ..RevisionReport::default()
        };
        let failed = |mut rev: RevisionReport, report: &mut VerifyReport, step, err| {
            rev.error = Some(err);
            rev.failed_step = Some(step);
            report.revisions.push(rev);
            // The chain cannot go past a revision that does not run.
            for later in &graph.migrations()[position + 1..] {
                report.not_checked.push(format!(
                    "{} ({}): the {} of {revision} failed before it",
                    later.revision,
                    later.dir.display(),
                    step.label()
                ));
            }
        };
        // Seeded from the rows read now, and read again where the seeding wrote.
        let mut before_data = rows_now(
            client,
            report,
            &rows,
            format!("before seeding for the upgrade to {revision}"),
        )?;
        if seed(
            client,
            &mut on_session.prepared,
            report,
            &revision,
            &before_data,
        )? {
            before_data = rows_now(
                client,
                report,
                &before_data,
                format!("before the upgrade to {revision}"),
            )?;
        }

        let step = |what: &str| progress.step(what);
        step(&format!("{revision} up"));
        let up = match run_traced(client, &mut on_session, graph, cluster, |m| {
            m.upgrade(&revision)
        }) {
            Ok(up) => up,
            Err(err) => {
                failed(rev, report, StairStep::Up, err);
                return Ok(fresh);
            }
        };
        rev.up_ms = total_ms(&up);
        rev.locks_up = up.iter().flat_map(|s| s.locks.clone()).collect();
        let after_up = snapshot(
            client,
            report,
            &previous,
            format!("the upgrade to {revision}"),
        )?;
        let up_data = rows_now(
            client,
            report,
            &before_data,
            format!("after the upgrade to {revision}"),
        )?;
        report
            .findings
            .extend(traced_findings(migration, Direction::Up, &up, config));
        // Only the tables the upgrade touched can have a new redundant index; the
        // first step of a segment looks at every table.
        let touched = (position != range.start).then_some(after_up.touched.as_slice());
        new_redundant_indexes(client, &mut on_session.prepared, report, &revision, touched)?;
        rev.data_changed.extend(
            before_data
                .data
                .compare(&up_data.data)
                .changed
                .into_iter()
                .map(|c| format!("upgrade: {c}")),
        );

        seed(
            client,
            &mut on_session.prepared,
            report,
            &revision,
            &up_data,
        )?;
        let isolation = isolation::check(client, &mut on_session.prepared, &mut untouched)?;
        rev.isolation_checked = isolation.checked;
        rev.isolation_failures = isolation.failures;
        for warning in isolation.warnings {
            warn_once(report, &revision, &warning);
        }
        for table in isolation.fail_closed {
            if !report.fail_closed.contains(&table) {
                report.fail_closed.push(table);
            }
        }
        let seeded = rows_now(
            client,
            report,
            &up_data,
            format!("before the downgrade of {revision}"),
        )?;

        step(&format!("{revision} down"));
        let after_down = match run_traced(client, &mut on_session, graph, cluster, |m| {
            m.unapply(&revision)
        }) {
            Ok(down) => {
                rev.down_ms = total_ms(&down);
                rev.locks_down = down.iter().flat_map(|s| s.locks.clone()).collect();
                let after_down = snapshot(
                    client,
                    report,
                    &after_up,
                    format!("the downgrade of {revision}"),
                )?;
                report
                    .findings
                    .extend(traced_findings(migration, Direction::Down, &down, config));
                if let Some(diff) = previous.snapshot.diff(&after_down.snapshot) {
                    if previous.snapshot.with_columns_sorted()
                        == after_down.snapshot.with_columns_sorted()
                    {
                        // PostgreSQL can only append a column: a downgrade that re-adds
                        // a dropped one cannot put it back in place. Worth knowing
                        // (SELECT * and COPY see the new order), not a broken downgrade.
                        warn_once(
                            report,
                            &revision,
                            &format!("the downgrade re-adds column(s) at the end of their table, not in their old place:\n{diff}"),
                        );
                    } else {
                        rev.schema_roundtrip = Some(format!(
                            "the downgrade of {revision} ({}) does not restore the previous schema:\n{diff}",
                            migration.path(crate::Direction::Down).display()
                        ));
                    }
                }
                rows = rows_now(
                    client,
                    report,
                    &seeded,
                    format!("after the downgrade of {revision}"),
                )?;
                let diff = seeded.data.compare(&rows.data);
                rev.data_changed
                    .extend(diff.changed.into_iter().map(|c| format!("downgrade: {c}")));
                rev.destructive = diff.lost;
                after_down
            }
            Err(err) => {
                failed(rev, report, StairStep::Down, err);
                return Ok(fresh);
            }
        };

        step(&format!("{revision} up again"));
        // Its locks and trace were read on the way up; reading them again only to drop
        // them was a third of the stairway's traces.
        if let Err(err) = fast(client, &mut on_session.prepared, graph, |m| {
            m.upgrade(&revision)
        }) {
            failed(rev, report, StairStep::UpAgain, err);
            return Ok(fresh);
        }
        let again = snapshot(
            client,
            report,
            &after_down,
            format!("the upgrade to {revision} again"),
        )?;
        if rev.schema_roundtrip.is_none() {
            if let Some(diff) = after_up.snapshot.diff(&again.snapshot) {
                rev.schema_roundtrip = Some(format!(
                    "upgrading {revision} again after its downgrade gives a different schema:\n{diff}"
                ));
            }
        }
        rev.schema = after_up.snapshot;
        previous = again;
        if rev.passed() {
            fresh.push(CachedRevision {
                key: keys[position].clone(),
                report: rev.clone(),
                warnings: report.warnings[marks.0..].to_vec(),
                findings: report.findings[marks.1..].to_vec(),
                fail_closed: report.fail_closed[marks.2..].to_vec(),
            });
        }
        report.revisions.push(rev);
        progress.verified_one();
    }
    Ok(fresh)
}

/// How base -> head -> base in one go ended.
enum OneGo {
    /// The upgrade failed (the error names the revision and file).
    UpFailed(String),
    /// The head's schema, and the downgrade's error.
    DownFailed(SchemaSnapshot, String),
    /// The head's schema, and what the teardown left behind, if anything.
    Done(SchemaSnapshot, Option<String>),
}

/// base -> head, then head -> base.
fn one_go(graph: &RevisionGraph, mut client: Client) -> Result<OneGo, VerifyError> {
    // Nothing here reports locks: the runs go without their capture.
    let mut prepared = Prepared::default();
    if let Err(err) = fast(&mut client, &mut prepared, graph, |m| m.upgrade("heads")) {
        return Ok(OneGo::UpFailed(err));
    }
    let head = SchemaSnapshot::capture(&mut client)?;
    if let Err(err) = fast(&mut client, &mut prepared, graph, |m| {
        m.downgrade("base", true)
    }) {
        return Ok(OneGo::DownFailed(head, err));
    }
    let left = SchemaSnapshot::capture(&mut client)?;
    Ok(OneGo::Done(
        head,
        (!left.is_empty()).then(|| left.to_string()),
    ))
}

/// How many orders of applying merged branches are tried: their number grows
/// factorially with the branches, and each one is a full upgrade on its own database.
const MERGE_ORDERS: usize = 12;

/// The first `MERGE_ORDERS` orders of applying the branches that a merge joins must
/// converge: the failures.
fn merges(
    graph: &RevisionGraph,
    roles: &[String],
    progress: &SharedProgress<'_>,
) -> Result<Vec<String>, VerifyError> {
    let mut failures = Vec::new();
    let has_merge = graph.migrations().iter().any(|m| m.parents.len() > 1);
    if !has_merge {
        return Ok(failures);
    }
    let orders = topological_orders(graph, MERGE_ORDERS);
    let mut results: BTreeMap<Vec<String>, SchemaSnapshot> = BTreeMap::new();
    for (n, order) in orders.iter().enumerate() {
        progress.step(&format!("merge order {}/{}", n + 1, orders.len()));
        let name = format!("verify_order_{n}");
        let cluster = new_cluster(roles, &name)?;
        let mut client = session(&cluster, &name)?;
        let mut prepared = Prepared::default();
        for revision in order {
            if let Err(err) = fast(&mut client, &mut prepared, graph, |m| m.upgrade(revision)) {
                failures.push(format!(
                    "merge orders: applying in the order {} failed at {revision}: {err}",
                    order.join(" -> ")
                ));
                return Ok(failures);
            }
        }
        results.insert(order.clone(), SchemaSnapshot::capture(&mut client)?);
    }
    let mut iter = results.iter();
    if let Some((first_order, first)) = iter.next() {
        for (order, snapshot) in iter {
            if let Some(diff) = first.diff(snapshot) {
                failures.push(format!(
                    "merge orders: merged branches do not converge: {} vs {}:\n{diff}",
                    first_order.join(" -> "),
                    order.join(" -> ")
                ));
            }
        }
    }
    Ok(failures)
}

/// Up to `limit` distinct topological orders of the whole graph.
fn topological_orders(graph: &RevisionGraph, limit: usize) -> Vec<Vec<String>> {
    fn extend(
        graph: &RevisionGraph,
        done: &mut Vec<String>,
        out: &mut Vec<Vec<String>>,
        limit: usize,
    ) {
        if out.len() >= limit {
            return;
        }
        if done.len() == graph.migrations().len() {
            out.push(done.clone());
            return;
        }
        for m in graph.migrations() {
            if !done.contains(&m.revision) && m.parents.iter().all(|p| done.contains(p)) {
                done.push(m.revision.clone());
                extend(graph, done, out, limit);
                done.pop();
            }
        }
    }
    let mut out = Vec::new();
    extend(graph, &mut Vec::new(), &mut out, limit);
    out
}

/// A run without the lock capture and trace: for the runs whose locks nobody reads
/// (replays, the upgrade again, base -> head in one go, the merge orders).
/// A run without traces, its bookkeeping's statements kept prepared in `prepared` (which
/// belongs to `client`'s session).
fn fast(
    client: &mut Client,
    prepared: &mut Prepared,
    graph: &RevisionGraph,
    f: impl FnOnce(&mut Migrator<'_>) -> Result<Vec<StepReport>, crate::runner::MigrateError>,
) -> Result<Vec<StepReport>, String> {
    advised(
        graph,
        f(&mut Migrator::new(client, graph, RunOptions::default()).keep_prepared(prepared)),
    )
}

/// What the stairway keeps on its session from one step to the next, gone with the
/// session: the statements of the runs, traces, seeding and checks, prepared on it, and
/// the second session that watches the locks of migrations outside a transaction (one
/// opened per migration cost more than the watching).
#[derive(Default)]
struct OnSession {
    prepared: Prepared,
    observer: Option<LockObserver>,
}

/// A run with its locks captured and each statement traced, the locks of
/// non-transactional migrations watched from a second session on the stairway database
/// (their own session cannot see them).
fn run_traced(
    client: &mut Client,
    on_session: &mut OnSession,
    graph: &RevisionGraph,
    cluster: &TempCluster,
    f: impl FnOnce(&mut Migrator<'_>) -> Result<Vec<StepReport>, crate::runner::MigrateError>,
) -> Result<Vec<StepReport>, String> {
    let url = cluster.url(STAIRWAY_DB);
    let mut migrator = Migrator::new(client, graph, options())
        .keep_prepared(&mut on_session.prepared)
        .observe_outside_transactions(&mut on_session.observer, move || {
            postgres::Client::connect(&url, postgres::NoTls)
        });
    advised(graph, f(&mut migrator))
}

/// A migration's error, with the advice for a role no revision creates.
fn advised(
    graph: &RevisionGraph,
    result: Result<Vec<StepReport>, crate::runner::MigrateError>,
) -> Result<Vec<StepReport>, String> {
    result.map_err(|err| match roles::missing_role_advice(&err, graph.dir()) {
        Some(advice) => format!("{err}\n  {advice}"),
        None => err.to_string(),
    })
}

/// The traced rules over what the steps of `migration` in `direction` did.
fn traced_findings(
    migration: &crate::Migration,
    direction: Direction,
    steps: &[StepReport],
    config: &LintConfig,
) -> Vec<Finding> {
    let traces: Vec<_> = steps.iter().flat_map(|s| s.trace.clone()).collect();
    lint::traced::check(
        &migration.revision,
        &migration.path(direction),
        migration.transactional,
        &migration.statements(direction),
        &traces,
        config.long_lock(),
    )
    .into_iter()
    .map(|f| f.in_direction(direction))
    .collect()
}

fn total_ms(steps: &[StepReport]) -> u64 {
    steps.iter().map(|s| s.elapsed.as_millis() as u64).sum()
}

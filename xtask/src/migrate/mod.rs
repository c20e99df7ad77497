//! `cargo xtask migrate`: the guide's `alembic` verbs on the backend-schema runner.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use backend_schema::graph::{RevisionGraph, Step};
use backend_schema::migration::{self, Direction, Migration};
use backend_schema::runner::{heads_text, Event, Integrity, Migrator, RunOptions};
use backend_schema::version_table;
use xshell::Shell;

use crate::flags::{Migrate, MigrateAction, RunOpts};

const APPLICATION_NAME: &str = "cargo xtask migrate";

impl Migrate {
    pub(crate) fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let dir = sh.current_dir().join(&self.source.migrations);
        let graph = || load_graph(&dir);
        match self.action {
            MigrateAction::Heads => {
                for head in graph()?.heads() {
                    println!("{head} (head)");
                }
            }
            MigrateAction::Show { revision } => {
                let graph = graph()?;
                let migration = graph.resolve_revision(&revision)?;
                print!("{}", verbose_entry(&graph, migration, &[]));
            }
            MigrateAction::History {
                verbose,
                indicate_current,
                rev_range,
            } => {
                let graph = graph()?;
                let current = if indicate_current
                    || rev_range.as_deref().is_some_and(|r| r.contains("current"))
                {
                    let target = self.connect.resolve()?;
                    let mut client = target.connect(APPLICATION_NAME)?;
                    let heads =
                        Migrator::new(&mut client, &graph, RunOptions::default()).current()?;
                    heads
                } else {
                    Vec::new()
                };
                print!(
                    "{}",
                    history(
                        &graph,
                        &current,
                        indicate_current,
                        verbose,
                        rev_range.as_deref()
                    )?
                );
            }
            MigrateAction::Current {
                verbose,
                check_heads,
            } => {
                let graph = graph()?;
                let target = self.connect.resolve()?;
                let mut client = target.connect(APPLICATION_NAME)?;
                let mut migrator = Migrator::new(&mut client, &graph, RunOptions::default());
                let heads = migrator.current()?;
                if verbose {
                    eprintln!("database: {}", target.describe());
                }
                if heads.is_empty() {
                    eprintln!("database is at base (no revision applied)");
                }
                for head in &heads {
                    println!("{}", head_label(&graph, head));
                }
                if verbose {
                    print_integrity(&graph, &mut migrator)?;
                }
                if check_heads {
                    let pending = graph.upgrade_plan(&heads, "heads")?;
                    if !pending.is_empty() {
                        bail!(
                            "target database is not up to date: it is at {}, {} migration(s) pending ({}); run `cargo xtask migrate upgrade head`",
                            heads_text(&heads),
                            pending.len(),
                            pending.iter().map(|s| s.revision.as_str()).collect::<Vec<_>>().join(", ")
                        );
                    }
                }
            }
            MigrateAction::Check { schema } => {
                crate::schema_model::check(&graph()?, &sh.current_dir().join(schema.schema))?;
            }
            MigrateAction::Upgrade { target, sql, run } => {
                let graph = graph()?;
                if sql {
                    print!("{}", offline_sql(&graph, &target, Direction::Up, &run)?);
                    return Ok(());
                }
                let db = self.connect.resolve()?;
                let mut client = db.connect(APPLICATION_NAME)?;
                eprintln!("database: {}", db.describe());
                let mut migrator =
                    Migrator::new(&mut client, &graph, run.options()).on_event(print_event);
                let reports = migrator.upgrade(&target)?;
                finish(&graph, &mut migrator, reports.len(), &target)?;
            }
            MigrateAction::Downgrade {
                target,
                yes,
                sql,
                run,
            } => {
                let graph = graph()?;
                if sql {
                    print!("{}", offline_sql(&graph, &target, Direction::Down, &run)?);
                    return Ok(());
                }
                let db = self.connect.resolve()?;
                let mut client = db.connect(APPLICATION_NAME)?;
                eprintln!("database: {}", db.describe());
                let mut migrator =
                    Migrator::new(&mut client, &graph, run.options()).on_event(print_event);
                let reports = migrator.downgrade(&target, yes)?;
                finish(&graph, &mut migrator, reports.len(), &target)?;
            }
            MigrateAction::Stamp {
                target,
                purge,
                detect,
                run,
            } => {
                let graph = graph()?;
                let db = self.connect.resolve()?;
                let mut client = db.connect(APPLICATION_NAME)?;
                eprintln!("database: {}", db.describe());
                let target = match (target, detect) {
                    (Some(target), _) => target,
                    (None, _) => crate::verify::detect_revision(&graph, &mut client)?,
                };
                let mut migrator =
                    Migrator::new(&mut client, &graph, run.options()).on_event(print_event);
                let heads = migrator.stamp(&target, purge)?;
                eprintln!("stamped: database is now at {}", heads_text(&heads));
            }
            MigrateAction::Rehash { revision, run } => {
                let graph = graph()?;
                let db = self.connect.resolve()?;
                let mut client = db.connect(APPLICATION_NAME)?;
                let mut migrator = Migrator::new(&mut client, &graph, run.options());
                let (new, old) = migrator.rehash(&revision)?;
                let old = old.unwrap_or_else(|| "none (applied by Alembic)".into());
                eprintln!("accepted the current file of {revision}: sha256 {new} (was {old})");
            }
            MigrateAction::Revision {
                message,
                head,
                non_transactional,
                autogenerate,
                allow_drop,
                schema,
            } => {
                let graph = load_graph_allow_empty(&dir)?;
                let parent = match head {
                    Some(head) => vec![graph.resolve_revision(&head)?.revision.clone()],
                    None => match graph.heads().as_slice() {
                        [] => Vec::new(),
                        [one] => vec![one.to_string()],
                        many => bail!(
                            "multiple heads ({}); choose the parent with --head REV, or merge them first with `cargo xtask migrate merge`",
                            many.join(", ")
                        ),
                    },
                };
                if autogenerate {
                    let schema = sh.current_dir().join(schema.schema);
                    crate::schema_model::autogenerate(
                        &graph, &schema, &parent, &message, allow_drop,
                    )?;
                    return Ok(());
                }
                let path = write_revision(&dir, &parent, &message, !non_transactional)?;
                eprintln!("created {}", path.display());
            }
            MigrateAction::Merge { revisions, message } => {
                let graph = graph()?;
                let parents = revisions
                    .iter()
                    .map(|r| graph.resolve_revision(r).map(|m| m.revision.clone()))
                    .collect::<Result<Vec<_>, _>>()?;
                let path = write_revision(&dir, &parents, &message, true)?;
                eprintln!("created merge revision {}", path.display());
            }
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

pub(crate) fn load_graph(dir: &Path) -> anyhow::Result<RevisionGraph> {
    let graph = load_graph_allow_empty(dir)?;
    if graph.is_empty() {
        bail!(
            "no migrations found in {}; create one with `cargo xtask migrate revision -m MESSAGE`",
            dir.display()
        );
    }
    Ok(graph)
}

fn load_graph_allow_empty(dir: &Path) -> anyhow::Result<RevisionGraph> {
    if !dir.is_dir() {
        bail!(
            "migrations directory {} does not exist (pass --migrations DIR)",
            dir.display()
        );
    }
    Ok(RevisionGraph::load(dir)?)
}

fn print_event(event: Event<'_>) {
    match event {
        Event::WaitingForLock { holders } => {
            let who: Vec<String> = holders.iter().map(ToString::to_string).collect();
            let who = if who.is_empty() {
                "another session".to_string()
            } else {
                who.join("; ")
            };
            eprintln!("waiting for the migration lock, held by {who}");
        }
        Event::LockAcquired { waited } => {
            eprintln!("got the migration lock after {:.1}s", waited.as_secs_f64())
        }
        Event::Running { step, migration } => eprintln!("{}", running_line(step, migration)),
        Event::Retrying {
            revision,
            attempt,
            after,
        } => eprintln!(
            "{revision}: lock_timeout reached; retry {attempt} in {:.1}s",
            after.as_secs_f64()
        ),
        Event::Finished { elapsed, .. } => eprintln!("  done in {}", millis(elapsed)),
    }
}

/// Alembic's wording: `Running upgrade a1b2 -> b2c3, A/B test tables`.
fn running_line(step: &Step, migration: &Migration) -> String {
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

fn finish(
    graph: &RevisionGraph,
    migrator: &mut Migrator<'_>,
    steps: usize,
    target: &str,
) -> anyhow::Result<()> {
    let heads = migrator.current()?;
    let at: Vec<String> = heads.iter().map(|h| head_label(graph, h)).collect();
    let at = if at.is_empty() {
        "base".to_string()
    } else {
        at.join(", ")
    };
    if steps == 0 {
        eprintln!("already at {target}: nothing to do (database at {at})");
    } else {
        eprintln!("applied {steps} migration(s); database at {at}");
    }
    Ok(())
}

fn head_label(graph: &RevisionGraph, revision: &str) -> String {
    if graph.is_head(revision) {
        format!("{revision} (head)")
    } else {
        revision.to_string()
    }
}

fn millis(duration: Duration) -> String {
    format!("{} ms", duration.as_millis())
}

fn print_integrity(graph: &RevisionGraph, migrator: &mut Migrator<'_>) -> anyhow::Result<()> {
    println!();
    println!("applied revisions:");
    for (revision, integrity) in migrator.integrity()? {
        let migration = graph.get(&revision).expect("applied revisions are known");
        let status = match integrity {
            Integrity::Verified(record) => format!(
                "checksum ok ({} {} by {})",
                record.operation, record.started_at, record.tool_version
            ),
            Integrity::NoRecord => "applied by Alembic (no checksum recorded)".into(),
            Integrity::Edited { recorded } => format!(
                "EDITED since applied (recorded {recorded}, file {}); revert or `cargo xtask migrate rehash {revision}`",
                migration.checksum
            ),
            Integrity::Unfinished(record) => format!("UNFINISHED ({}): {}", record.status, record.error.unwrap_or_default()),
        };
        println!("  {revision}  {}  {status}", migration.dir.display());
    }
    Ok(())
}

/// Alembic's `history` lines, newest first.
fn history(
    graph: &RevisionGraph,
    current: &[String],
    indicate_current: bool,
    verbose: bool,
    range: Option<&str>,
) -> anyhow::Result<String> {
    let selected = select_range(graph, current, range)?;
    let mut out = String::new();
    for migration in graph.migrations().iter().rev() {
        if !selected.contains(&migration.revision) {
            continue;
        }
        let marks = if indicate_current { current } else { &[] };
        if verbose {
            out.push_str(&verbose_entry(graph, migration, marks));
            out.push('\n');
        } else {
            let _ = writeln!(
                out,
                "{}, {}",
                history_head(graph, migration, marks),
                migration.message
            );
        }
    }
    Ok(out)
}

fn history_head(graph: &RevisionGraph, migration: &Migration, current: &[String]) -> String {
    let parents = match migration.parents.as_slice() {
        [] => "<base>".to_string(),
        [one] => one.clone(),
        many => format!("({})", many.join(", ")),
    };
    let mut line = format!("{parents} -> {}", migration.revision);
    line.push_str(&flags(graph, migration, current));
    line
}

fn flags(graph: &RevisionGraph, migration: &Migration, current: &[String]) -> String {
    let mut flags = String::new();
    if graph.is_head(&migration.revision) {
        flags.push_str(" (head)");
    }
    if graph.children_of(&migration.revision).len() > 1 {
        flags.push_str(" (branchpoint)");
    }
    if migration.parents.len() > 1 {
        flags.push_str(" (mergepoint)");
    }
    if current.contains(&migration.revision) {
        flags.push_str(" (current)");
    }
    flags
}

fn verbose_entry(graph: &RevisionGraph, migration: &Migration, current: &[String]) -> String {
    let parents = if migration.parents.is_empty() {
        "<base>".to_string()
    } else {
        migration.parents.join(", ")
    };
    let children = graph.children_of(&migration.revision);
    let mut out = format!(
        "Rev: {}{}\n",
        migration.revision,
        flags(graph, migration, current)
    );
    let _ = writeln!(out, "Parent: {parents}");
    if !children.is_empty() {
        let _ = writeln!(out, "Branches into: {}", children.join(", "));
    }
    let _ = writeln!(out, "Path: {}", migration.dir.display());
    let _ = writeln!(out, "\n    {}\n", migration.message);
    let _ = writeln!(out, "    Revision ID: {}", migration.revision);
    let _ = writeln!(out, "    Revises: {}", migration.parents.join(", "));
    if let Some(date) = &migration.create_date {
        let _ = writeln!(out, "    Create Date: {date}");
    }
    let _ = writeln!(
        out,
        "    Transactional: {}",
        if migration.transactional {
            "yes"
        } else {
            "no (runs statement by statement)"
        }
    );
    let _ = writeln!(out, "    Checksum: sha256:{}", migration.checksum);
    out
}

/// Revisions within `start:end`, each side a revision, `base`, `head(s)` or `current`.
fn select_range(
    graph: &RevisionGraph,
    current: &[String],
    range: Option<&str>,
) -> anyhow::Result<BTreeSet<String>> {
    let all: BTreeSet<String> = graph
        .migrations()
        .iter()
        .map(|m| m.revision.clone())
        .collect();
    let Some(range) = range else {
        return Ok(all);
    };
    let (start, end) = range.split_once(':').with_context(|| {
        format!("malformed range `{range}`; use START:END, e.g. base:head or f5a2:current")
    })?;
    let ends = |side: &str| -> anyhow::Result<Option<Vec<String>>> {
        Ok(match side {
            "" | "base" | "heads" | "head" => None,
            "current" => Some(current.to_vec()),
            rev => Some(vec![graph.resolve_revision(rev)?.revision.clone()]),
        })
    };
    let mut selected = all.clone();
    if let Some(end) = ends(end)? {
        let upto: BTreeSet<String> = graph
            .applied(&end)?
            .iter()
            .map(|m| m.revision.clone())
            .collect();
        selected.retain(|r| upto.contains(r));
    }
    if let Some(start) = ends(start)? {
        // Descendants of start, start included: revisions whose ancestry contains it.
        selected.retain(|r| {
            graph
                .applied(std::slice::from_ref(r))
                .map(|a| a.iter().any(|m| start.contains(&m.revision)))
                .unwrap_or(false)
        });
    }
    Ok(selected)
}

/// SQL a DBA can review and run with `psql -X -v ON_ERROR_STOP=1 -f`, as Alembic's
/// offline mode: TARGET is `FROM:TO` (FROM defaults to base for upgrades).
fn offline_sql(
    graph: &RevisionGraph,
    target: &str,
    direction: Direction,
    run: &RunOpts,
) -> anyhow::Result<String> {
    let (from, to) = match (target.split_once(':'), direction) {
        (Some((from, to)), _) => (from, to),
        (None, Direction::Up) => ("base", target),
        (None, Direction::Down) => bail!("offline downgrade needs FROM:TO, e.g. `head:f7e1c2d9b3a4` (there is no database to read the current revision from)"),
    };
    let from_heads: Vec<String> = match from {
        "base" | "" => Vec::new(),
        "head" | "heads" => graph.heads().iter().map(|h| h.to_string()).collect(),
        rev => vec![graph.resolve_revision(rev)?.revision.clone()],
    };
    let plan = match direction {
        Direction::Up => graph.upgrade_plan(&from_heads, to)?,
        Direction::Down => graph.downgrade_plan(&from_heads, to)?,
    };
    let options = run.options();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "-- generated by `cargo xtask migrate {} {target} --sql`",
        if direction == Direction::Up {
            "upgrade"
        } else {
            "downgrade"
        }
    );
    let _ = writeln!(out, "-- run with: psql -X -v ON_ERROR_STOP=1 -f FILE\n");
    let _ = writeln!(
        out,
        "BEGIN;\n\n{}\nCOMMIT;\n",
        version_table::create_tables_sql()
    );
    for step in &plan {
        let migration = graph.get(&step.revision).expect("planned revisions exist");
        let _ = writeln!(out, "-- {}", running_line(step, migration));
        if migration.transactional {
            let _ = writeln!(out, "BEGIN;\n");
            let _ = writeln!(
                out,
                "SET LOCAL lock_timeout = '{}ms';\n",
                options.lock_timeout.as_millis()
            );
        } else {
            let _ = writeln!(out, "-- runs outside a transaction\n");
        }
        for statement in migration.statements(step.direction) {
            let _ = writeln!(out, "{};\n", statement.sql);
        }
        for change in version_table::head_changes(&step.heads_before, &step.heads_after) {
            let _ = writeln!(out, "{}\n", change.to_sql());
        }
        let (operation, checksum) = match step.direction {
            Direction::Up => ("upgrade", format!("'{}'", migration.checksum)),
            Direction::Down => ("downgrade", "NULL".into()),
        };
        let _ = writeln!(
            out,
            "INSERT INTO alembic_version_history (revision, operation, checksum, status, tool_version) VALUES ('{}', '{operation}', {checksum}, 'completed', '{} (offline)');\n",
            step.revision, options.tool_version
        );
        if migration.transactional {
            let _ = writeln!(out, "COMMIT;\n");
        }
    }
    Ok(out)
}

/// Writes `<id>_<slug>/` with metadata and empty up/down files; returns its path.
fn write_revision(
    dir: &Path,
    parents: &[String],
    message: &str,
    transactional: bool,
) -> anyhow::Result<PathBuf> {
    let (path, _) = write_revision_with(dir, parents, message, transactional, None)?;
    Ok(path)
}

/// Writes `<id>_<slug>/`; `sql` gives the up and down bodies (else placeholders).
pub(crate) fn write_revision_with(
    dir: &Path,
    parents: &[String],
    message: &str,
    transactional: bool,
    sql: Option<(&str, &str)>,
) -> anyhow::Result<(PathBuf, String)> {
    if message.trim().is_empty() {
        bail!("the message (-m) must not be empty");
    }
    let revision = new_revision_id()?;
    let slug = migration::slug(message);
    let name = if slug.is_empty() {
        revision.clone()
    } else {
        format!("{revision}_{slug}")
    };
    let path = dir.join(name);
    std::fs::create_dir_all(&path).with_context(|| format!("cannot create {}", path.display()))?;
    let revises: Vec<String> = parents.iter().map(|p| format!("{p:?}")).collect();
    let now = humantime_now();
    let metadata = format!(
        "revision = \"{revision}\"\nrevises = [{}]\nmessage = {message:?}\ncreate_date = \"{now}\"\ntransactional = {transactional}\n",
        revises.join(", ")
    );
    let (up, down) = match sql {
        Some((up, down)) => (
            format!("-- Upgrade {revision}: {message}\n-- Generated by `cargo xtask migrate revision --autogenerate`; review before committing.\n\n{up}"),
            format!("-- Downgrade {revision}: undo exactly what up.sql does\n-- Generated by `cargo xtask migrate revision --autogenerate`.\n\n{down}"),
        ),
        None => (
            format!("-- Upgrade {revision}: {message}\n"),
            format!("-- Downgrade {revision}: undo exactly what up.sql does\n"),
        ),
    };
    for (file, text) in [
        (migration::METADATA_FILE, metadata),
        (migration::UP_FILE, up),
        (migration::DOWN_FILE, down),
    ] {
        std::fs::write(path.join(file), text)
            .with_context(|| format!("cannot write {}", path.join(file).display()))?;
    }
    Ok((path, revision))
}

/// A fresh 12-hex-digit ID, like Alembic's `uuid4().hex[-12:]`.
fn new_revision_id() -> anyhow::Result<String> {
    let mut bytes = [0u8; 6];
    use std::io::Read as _;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("cannot read /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn humantime_now() -> String {
    let text = backend_schema::utc_timestamp();
    text.replace('T', " ").trim_end_matches('Z').to_string()
}

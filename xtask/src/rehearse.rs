//! `cargo xtask rehearse`: the release tried on a copy of production; progress on stderr,
//! the summary on stdout, the Markdown report at `--report`. Exit 0 passed (or nothing
//! pending), 1 the release fails on production's data, 2 the rehearsal could not run.

use anyhow::Context as _;
use backend_schema::rehearse::{self, Commands, Outcome, Progress, Rehearsal, Rehearsed, Source};
use backend_schema::runner::heads_text;
use backend_schema::PgBinaries;
use xshell::Shell;

use crate::flags::Rehearse;

/// A migration or the downgrade fails on production's data: the release would too.
const FAILED: u8 = 1;
/// The rehearsal could not run (connection, backup, cluster, unknown revision).
const COULD_NOT_REHEARSE: u8 = 2;

impl Rehearse {
    pub(crate) fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let rehearsed = self.rehearse(sh).map_err(|err| {
            eprintln!("{}: {err:#}", crate::style::error("error"));
            eprintln!("rehearsal could not run; nothing was written to the source");
            anyhow::Error::new(crate::Quiet(COULD_NOT_REHEARSE))
        })?;
        let rehearsal = match rehearsed {
            Rehearsed::NothingPending { source, heads } => {
                println!(
                    "nothing to rehearse: {source} is at {} and --to {} adds no migration",
                    heads_text(&heads),
                    self.to
                );
                return Ok(());
            }
            Rehearsed::Ran(rehearsal) => rehearsal,
        };
        if let Some(path) = &self.report {
            let commands = Commands {
                program: program().into(),
            };
            std::fs::write(path, rehearse::markdown(&rehearsal, &commands))
                .with_context(|| format!("writing the report {}", path.display()))
                .map_err(|err| {
                    eprintln!("{}: {err:#}", crate::style::error("error"));
                    anyhow::Error::new(crate::Quiet(COULD_NOT_REHEARSE))
                })?;
            eprintln!("report written: {}", path.display());
        }
        summary(&rehearsal);
        match rehearsal.outcome.passed() {
            true => Ok(()),
            false => Err(crate::Quiet(FAILED).into()),
        }
    }

    fn rehearse(&self, sh: &Shell) -> anyhow::Result<Rehearsed> {
        if let Some(path) = &self.report {
            rehearse::check_writable(path).with_context(|| {
                format!(
                    "cannot write the report {}; nothing was rehearsed. Choose a --report file in a directory that exists",
                    path.display()
                )
            })?;
        }
        let binaries = PgBinaries::locate().map_err(|err| match crate::shipped::embedded() {
            Some(_) => anyhow::anyhow!(
                "`rehearse` needs PostgreSQL's server programs (initdb, postgres, pg_dump, pg_restore) on this machine: {err}; \
                 install the server package of production's major version (apt-get install postgresql-16, or run from the postgres image) \
                 or rehearse from a checkout with `cargo xtask rehearse`"
            ),
            None => err.into(),
        })?;
        let graph = self.source.load(sh)?;
        let source = match &self.from_backup {
            Some(path) => Source::Backup(path.clone()),
            None => Source::Database(self.connect.resolve()?),
        };
        eprintln!("source: {} (only read)", source.describe());
        Ok(rehearse::rehearse(
            &binaries,
            &graph,
            &source,
            &self.to,
            &self.run.options(),
            &print_progress,
        )?)
    }
}

fn program() -> &'static str {
    match crate::shipped::embedded() {
        Some(_) => crate::shipped::BINARY,
        None => "cargo xtask",
    }
}

fn print_progress(progress: Progress<'_>) {
    match progress {
        Progress::RemovedLeftover { path } => eprintln!(
            "removed {}: left behind by a killed run (production data is not left lying around)",
            path.display()
        ),
        Progress::Dumping => eprintln!("dumping the source with pg_dump..."),
        Progress::Dumped { table } => eprintln!("  {table}"),
        Progress::DumpFinished { bytes } => eprintln!("dumped {bytes} bytes"),
        Progress::CheckingBackup { manifest: true } => {
            eprintln!("checking the backup against its manifest and reading it in full...")
        }
        Progress::CheckingBackup { manifest: false } => {
            eprintln!("no manifest beside the backup: reading it in full...")
        }
        Progress::Restoring => eprintln!("restoring production's copy into a throwaway cluster..."),
        Progress::Restored { elapsed } => {
            eprintln!("restored in {:.1}s", elapsed.as_secs_f64())
        }
        Progress::Drift => eprintln!("reading drift on the copy..."),
        Progress::Running { step, message } => {
            let verb = match step.direction {
                backend_schema::Direction::Up => "upgrade",
                backend_schema::Direction::Down => "downgrade",
            };
            eprintln!("rehearsing {verb} {}, {message}", step.revision)
        }
        Progress::Finished { elapsed, .. } => {
            eprintln!("  done in {}", rehearse::duration(elapsed))
        }
    }
}

fn summary(r: &Rehearsal) {
    let start = heads_text(&r.start);
    let target = heads_text(&r.target);
    match &r.outcome {
        Outcome::Passed => println!("rehearsal passed: {start} -> {target} on production's data"),
        Outcome::UpgradeFailed { error, .. } => {
            println!("rehearsal failed: the upgrade {start} -> {target} fails on production's data:\n{error}")
        }
        Outcome::DowngradeFailed { error, .. } => {
            println!("rehearsal failed: the downgrade back to {start} fails:\n{error}")
        }
        Outcome::DowngradeDiffers { differences } => {
            println!(
                "rehearsal failed: the downgrade back to {start} does not give back its schema:"
            );
            for d in differences {
                println!("  {d}");
            }
        }
    }
    for m in &r.upgrades {
        println!(
            "  {} {} ({})",
            m.revision,
            m.message,
            rehearse::duration(m.elapsed)
        );
        for s in &m.statements {
            for l in s.locks.iter().filter(|l| l.mode.blocks_writes()) {
                println!(
                    "    line {}: {} on {} held {}",
                    s.line,
                    l.mode.pg_name(),
                    l.table,
                    rehearse::duration(l.held)
                );
            }
        }
    }
    let losses: Vec<String> = r.upgrade_losses.iter().map(|l| l.to_string()).collect();
    if !losses.is_empty() {
        println!("the upgrade destroys: {}", losses.join(", "));
    }
    let losses: Vec<String> = r.rollback_losses.iter().map(|l| l.to_string()).collect();
    if !losses.is_empty() {
        println!("the rollback destroys: {}", losses.join(", "));
    }
    match r.drift.differences.len() {
        0 => println!("drift: none"),
        n => println!(
            "{}: production differs from revision {start}'s schema in {n} place(s) (see the report, or `{} migrate drift`)",
            crate::style::warning("drift"),
            program()
        ),
    }
}

//! `cargo xtask restore`: all-or-nothing restores that check the archive and the target
//! before touching anything.

use std::time::Instant;

use anyhow::{bail, Context as _};
use backend_schema::dump::archive::script_of;
use backend_schema::dump::as_read;
use backend_schema::dump::leftovers::{self, Swept};
use backend_schema::dump::restore::{self, ArchiveCheck, RestoreOptions, Restored};
use backend_schema::dump::{owner_in_script, script_has_history_table, DumpFormat, Manifest};
use backend_schema::runner::heads_text;
use backend_schema::{version_table, PgBinaries};
use std::path::Path;

use crate::connect::Target;
use crate::flags::Restore;
use crate::progress::{self, StatusLine};

/// How a restore ended, when not in full success: the cause, a last line saying what
/// state the target is in, and the exit status that says the same to a script.
#[derive(Debug)]
pub(crate) struct Outcome {
    cause: anyhow::Error,
    state: String,
    pub(crate) code: u8,
}

/// Exit status of a restore that committed but whose checks afterwards failed.
pub(crate) const RESTORED_BUT: u8 = 3;

impl Outcome {
    fn unchanged(cause: anyhow::Error) -> Outcome {
        Outcome {
            cause,
            state: "restore failed; the target is unchanged".into(),
            code: 1,
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}\n{}", self.cause, self.state)
    }
}

impl std::error::Error for Outcome {}

impl Restore {
    pub(crate) fn run(self) -> anyhow::Result<()> {
        let binaries =
            PgBinaries::locate_clients(None).map_err(|e| Outcome::unchanged(e.into()))?;
        let path = self.path.clone();
        let (format, manifest) = self.open_archive(&path).map_err(Outcome::unchanged)?;
        // Into a new database, a custom archive is checked as pg_restore reads it, which
        // cannot commit before the check passed; anything else is checked first.
        let as_read = self.create
            && as_read::restores_as_read(format, &path, &self.options(false, false))
                .with_context(|| format!("cannot read {}", path.display()))
                .map_err(Outcome::unchanged)?;
        if !as_read {
            self.check_archive(&binaries, &path, format, manifest.as_ref())
                .map_err(Outcome::unchanged)?;
        }

        // 2. The target, and 3. the restore. A database created for it goes again if
        // either fails, so a refused restore leaves nothing behind.
        let target = self.connect.resolve().map_err(Outcome::unchanged)?;
        eprintln!("target: {}", target.describe());
        // Without access to the maintenance database there is nothing to sweep with, and
        // a plain restore does not need it: not a reason to refuse.
        if let Err(err) = sweep_leftovers(&target) {
            eprintln!("{}: {err:#}", crate::style::warning("warning"));
        }
        let script =
            script_of(&binaries, format, &path).map_err(|e| Outcome::unchanged(e.into()))?;
        if self.create {
            let owner = self.new_database_owner(manifest.as_ref(), &script);
            let name = restore::create_database(&target.url, owner.as_deref())
                .map_err(|e| Outcome::unchanged(e.into()))?;
            match owner {
                Some(owner) => eprintln!("created database {name}, owned by {owner}"),
                None => eprintln!("created database {name}, owned by the connecting role"),
            }
        }
        let phase = Instant::now();
        let restored = match self.check_target_and_restore(
            &binaries,
            &script,
            format,
            &path,
            &target,
            as_read.then_some(manifest.as_ref()),
        ) {
            Ok(restored) => restored,
            Err(cause) if !self.create => return Err(Outcome::unchanged(cause).into()),
            Err(cause) => {
                let state = match restore::drop_database(&target.url) {
                    Ok(()) => "restore failed; the database created for it was dropped again".to_string(),
                    Err(drop_err) => format!(
                        "restore failed; the database created for it is left empty and could not be dropped ({:#}); the next restore removes it",
                        anyhow::Error::new(drop_err)
                    ),
                };
                return Err(Outcome {
                    cause,
                    state,
                    code: 1,
                }
                .into());
            }
        };
        eprintln!("restored in {:.1}s", phase.elapsed().as_secs_f64());

        // 4. What the guide checks afterwards: the target now holds the restored data,
        // whatever fails from here on.
        let mut notes = Vec::new();
        if let Some((old, err)) = &restored.replaced_copy_left {
            notes.push(format!(
                "the replaced database, renamed {old}, could not be dropped ({err}); drop it when no longer needed"
            ));
        }
        let has_history = script_has_history_table(&script);
        match self.after_restore(&target, manifest.as_ref(), has_history, &mut notes) {
            Ok(heads) => {
                for note in &notes {
                    eprintln!("{}: {note}", crate::style::warning("warning"));
                }
                eprintln!("restore complete; revision {}", heads_text(&heads));
                Ok(())
            }
            Err(cause) => {
                for note in &notes {
                    eprintln!("{}: {note}", crate::style::warning("warning"));
                }
                Err(Outcome {
                    cause,
                    state: "restored, but a check afterwards failed; the target now holds the restored data".into(),
                    code: RESTORED_BUT,
                }
                .into())
            }
        }
    }

    /// The archive's format and its manifest, if it has one.
    fn open_archive(&self, path: &Path) -> anyhow::Result<(DumpFormat, Option<Manifest>)> {
        if !path.exists() {
            bail!("{} does not exist", path.display());
        }
        let format =
            DumpFormat::detect(path).with_context(|| format!("cannot read {}", path.display()))?;
        eprintln!("archive: {} ({} format)", path.display(), format.flag());
        let manifest_path = Manifest::path_for(path);
        let manifest = match manifest_path.exists() {
            true => Some(
                Manifest::read(&manifest_path)
                    .with_context(|| format!("cannot read {}", manifest_path.display()))?,
            ),
            false => None,
        };
        Ok((format, manifest))
    }

    /// Step 1, the archive itself, before anything is touched: hash against the
    /// manifest, then a full read.
    fn check_archive(
        &self,
        binaries: &PgBinaries,
        path: &Path,
        format: DumpFormat,
        manifest: Option<&Manifest>,
    ) -> anyhow::Result<()> {
        let phase = Instant::now();
        let status = StatusLine::new();
        let checked = restore::check_archive(
            binaries,
            format,
            path,
            manifest,
            &mut show_check(path, &status, phase, "reading the archive"),
        );
        status.clear();
        checked?;
        eprintln!("read back in full in {:.1}s", phase.elapsed().as_secs_f64());
        Ok(())
    }

    /// pg_restore's options: `clean` when the target holds tables, `replace_database`
    /// when some are not the backup's.
    fn options(&self, clean: bool, replace_database: bool) -> RestoreOptions {
        RestoreOptions {
            no_owner: self.no_owner,
            clean,
            jobs: self.jobs,
            replace_database,
        }
    }

    /// Who owns a database `--create` makes: `--owner`, else (restoring owners) the
    /// dump's database owner, from the manifest or the one role owning its objects;
    /// `None` leaves it to the connecting role.
    fn new_database_owner(&self, manifest: Option<&Manifest>, script: &str) -> Option<String> {
        if self.owner.is_some() || self.no_owner {
            return self.owner.clone();
        }
        manifest
            .and_then(|m| m.database_owner.clone())
            .or_else(|| owner_in_script(script))
    }

    /// After the commit: the `--create` mark comes off, then ANALYZE, the revision and
    /// the row counts against the manifest. Returns the heads.
    fn after_restore(
        &self,
        target: &Target,
        manifest: Option<&Manifest>,
        has_history: bool,
        notes: &mut Vec<String>,
    ) -> anyhow::Result<Vec<String>> {
        if self.create {
            if let Err(err) = restore::finish_create(&target.url) {
                notes.push(format!(
                    "the restored database still carries the restore's in-progress comment: {:#}",
                    anyhow::Error::new(err)
                ));
            }
        }
        let phase = Instant::now();
        let mut client = target.connect("cargo xtask restore")?;
        if !has_history
            && restore::drop_replaced_history(&mut client)
                .context("dropping the replaced database's alembic_version_history")?
        {
            eprintln!(
                "the dump has no alembic_version_history (taken before the xtask recorded history): dropped the target's, which described the replaced data; `migrate current --verbose` shows the restored revisions as applied without a recorded checksum"
            );
        }
        let analyze_on = target
            .connect("cargo xtask restore (analyze)")
            .context("ANALYZE after the restore failed")?;
        let counts = restore::analyze_and_count(&mut client, analyze_on, manifest.is_some())?;
        eprintln!(
            "ANALYZE and row counts in {:.1}s",
            phase.elapsed().as_secs_f64()
        );
        let heads = version_table::read_heads(&mut client)?;
        println!(
            "{}",
            if heads.is_empty() {
                "base".to_string()
            } else {
                heads.join("\n")
            }
        );
        if let (Some(manifest), Some(counts)) = (manifest, counts) {
            restore::compare_counts(&counts, manifest)?;
            eprintln!("row counts match the manifest ({} tables)", counts.len());
        }
        Ok(heads)
    }

    /// The pre-flight (roles, extensions, a non-empty target), then the restore itself;
    /// `as_read` (with the manifest, if any) restores as the archive is checked.
    fn check_target_and_restore(
        &self,
        binaries: &PgBinaries,
        script: &str,
        format: DumpFormat,
        path: &Path,
        target: &Target,
        as_read: Option<Option<&Manifest>>,
    ) -> anyhow::Result<Restored> {
        // 2. The target.
        let mut client = target.connect("cargo xtask restore")?;
        let existing =
            restore::preflight(&mut client, script, self.no_owner, self.clean && self.yes)?;
        drop(client);

        // 3. The restore, in one transaction (or a staging database with --jobs, or
        // when the target holds tables the backup lacks).
        let beyond = if self.clean && format != DumpFormat::Plain {
            restore::tables_beyond(&existing, script)
        } else {
            Vec::new()
        };
        if !beyond.is_empty() {
            eprintln!(
                "the target holds {} table(s) the backup does not create ({}): `pg_restore --clean` would leave them behind, so the backup goes into a new database that replaces the target by rename (this needs CREATEDB and no other session on the target)",
                beyond.len(),
                beyond.join(", ")
            );
        }
        let options = self.options(self.clean && !existing.is_empty(), !beyond.is_empty());
        if let Some(manifest) = as_read {
            eprintln!(
                "restoring as the archive is read (its end held back until it checks out)..."
            );
            let phase = Instant::now();
            let status = StatusLine::new();
            let restored = as_read::restore_as_read(
                binaries,
                path,
                &target.url,
                manifest,
                &options,
                &mut show_check(path, &status, phase, "restoring"),
            );
            status.clear();
            restored?;
            eprintln!("read in full as it was restored");
            return Ok(Restored::default());
        }
        eprintln!("restoring...");
        Ok(restore::restore(
            binaries,
            format,
            path,
            &target.url,
            &options,
        )?)
    }
}

/// What the archive check says as it goes: the hash's verdict, a missing manifest, and
/// on a terminal the bytes read of the archive's size with an estimate, after `doing`.
fn show_check<'a>(
    path: &'a Path,
    status: &'a StatusLine,
    phase: Instant,
    doing: &'a str,
) -> impl FnMut(ArchiveCheck) + 'a {
    let manifest_path = Manifest::path_for(path);
    move |check| match check {
        ArchiveCheck::HashMatches => {
            status.clear();
            eprintln!("sha256 matches {}", manifest_path.display())
        }
        ArchiveCheck::NoManifest => eprintln!(
            "{}: no manifest at {}; the archive cannot be checked against a hash",
            crate::style::warning("warning"),
            manifest_path.display()
        ),
        ArchiveCheck::Read { bytes, total } => status.show(|| {
            format!(
                "  {doing}: {} of {} ({})",
                progress::bytes(bytes),
                progress::bytes(total),
                progress::estimate(bytes, total, phase.elapsed())
            )
        }),
    }
}

/// Drops what killed restores left on the target's server, saying so for each.
fn sweep_leftovers(target: &Target) -> anyhow::Result<()> {
    let swept = restore::sweep_leftovers(&target.url)
        .context("cannot look for the leftovers of killed restores")?;
    for swept in swept {
        let said = |l: &leftovers::Leftover| {
            format!(
                "database {} ({}, made by pid {} on {} at {})",
                l.name,
                match l.maker.kind {
                    leftovers::Kind::Staging => "the staging copy of a restore",
                    leftovers::Kind::Create => "created by restore --create",
                },
                l.maker.pid,
                l.maker.host,
                l.maker.since
            )
        };
        match swept {
            Swept::Dropped(l) => eprintln!("removed {}: that restore was killed", said(&l)),
            Swept::OtherHost(l) => eprintln!(
                "note: left {} alone: this machine cannot tell whether it still runs",
                said(&l)
            ),
            Swept::HoldsTables(l) => eprintln!(
                "note: left {} alone: its restore was killed, but it holds tables now",
                said(&l)
            ),
            Swept::DropFailed(l, err) => {
                eprintln!(
                    "{}: cannot remove {}: {err}",
                    crate::style::warning("warning"),
                    said(&l)
                )
            }
        }
    }
    Ok(())
}

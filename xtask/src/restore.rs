//! `cargo xtask restore`: all-or-nothing restores that check the archive and the target
//! before touching anything.

use std::time::Instant;

use anyhow::{bail, Context as _};
use backend_schema::dump::archive::script_of;
use backend_schema::dump::restore::{self, ArchiveCheck, RestoreOptions};
use backend_schema::dump::{DumpFormat, Manifest};
use backend_schema::runner::heads_text;
use backend_schema::{version_table, PgBinaries};
use std::path::Path;
use xshell::Shell;

use crate::connect::Target;
use crate::flags::Restore;

impl Restore {
    pub(crate) fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let path = sh.current_dir().join(&self.path);
        if !path.exists() {
            bail!("{} does not exist", path.display());
        }
        let binaries = PgBinaries::locate()?;
        let format =
            DumpFormat::detect(&path).with_context(|| format!("cannot read {}", path.display()))?;
        eprintln!("archive: {} ({} format)", path.display(), format.flag());

        // 1. The archive itself: hash against the manifest, then a full read.
        let manifest_path = Manifest::path_for(&path);
        let manifest = match manifest_path.exists() {
            true => Some(
                Manifest::read(&manifest_path)
                    .with_context(|| format!("cannot read {}", manifest_path.display()))?,
            ),
            false => None,
        };
        let phase = Instant::now();
        restore::check_archive(
            &binaries,
            format,
            &path,
            manifest.as_ref(),
            &mut |check| match check {
                ArchiveCheck::HashMatches => {
                    eprintln!("sha256 matches {}", manifest_path.display())
                }
                ArchiveCheck::NoManifest => eprintln!(
                    "warning: no manifest at {}; the archive cannot be checked against a hash",
                    manifest_path.display()
                ),
            },
        )?;
        eprintln!("read back in full in {:.1}s", phase.elapsed().as_secs_f64());

        // 2. The target, and 3. the restore. A database created for it goes again if
        // either fails, so a refused restore leaves nothing behind.
        let target = self.connect.resolve()?;
        eprintln!("target: {}", target.describe());
        if self.create {
            let name = restore::create_database(&target.url)?;
            eprintln!("created database {name}");
        }
        let phase = Instant::now();
        if let Err(err) = self.check_target_and_restore(&binaries, format, &path, &target) {
            if !self.create {
                return Err(err);
            }
            return Err(match restore::drop_database(&target.url) {
                Ok(()) => err.context("the database created for the restore was dropped again"),
                Err(drop_err) => err.context(format!(
                    "the database created for the restore could not be dropped: {:#}",
                    anyhow::Error::new(drop_err)
                )),
            });
        }
        eprintln!("restored in {:.1}s", phase.elapsed().as_secs_f64());

        // 4. What the guide checks afterwards.
        let phase = Instant::now();
        let mut client = target.connect("cargo xtask restore")?;
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
        if let (Some(manifest), Some(counts)) = (&manifest, counts) {
            restore::compare_counts(&counts, manifest)?;
            eprintln!("row counts match the manifest ({} tables)", counts.len());
        }
        eprintln!("restore complete; revision {}", heads_text(&heads));
        Ok(())
    }

    /// The pre-flight (roles, extensions, a non-empty target), then the restore itself.
    fn check_target_and_restore(
        &self,
        binaries: &PgBinaries,
        format: DumpFormat,
        path: &Path,
        target: &Target,
    ) -> anyhow::Result<()> {
        // 2. The target.
        let mut client = target.connect("cargo xtask restore")?;
        let script = script_of(binaries, format, path)?;
        let existing =
            restore::preflight(&mut client, &script, self.no_owner, self.clean && self.yes)?;
        drop(client);

        // 3. The restore, in one transaction (or a staging database with --jobs).
        eprintln!("restoring...");
        let options = RestoreOptions {
            no_owner: self.no_owner,
            clean: self.clean && !existing.is_empty(),
            jobs: self.jobs,
        };
        restore::restore(binaries, format, path, &target.url, &options)?;
        Ok(())
    }
}

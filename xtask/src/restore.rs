//! `cargo xtask restore`: all-or-nothing restores that check the archive and the target
//! before touching anything.

use std::path::Path;

use anyhow::{bail, Context as _};
use backend_schema::cluster::quote_ident;
use backend_schema::database_url::DatabaseUrl;
use backend_schema::dump::{self, DumpFormat, Manifest};
use backend_schema::runner::heads_text;
use backend_schema::{version_table, PgBinaries};
use xshell::Shell;

use crate::flags::Restore;
use crate::pgtool;

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
        let phase = std::time::Instant::now();
        let complete = match &manifest {
            Some(manifest) => {
                let (hash, complete) =
                    crate::backup::hash_and_read(&binaries, format, &path, &manifest.tables);
                let (sha256, _) = hash?;
                if sha256 != manifest.sha256 {
                    bail!(
                        "{} does not match its manifest: sha256 {sha256}, manifest says {}; the file was changed or damaged, nothing was restored",
                        path.display(),
                        manifest.sha256
                    );
                }
                eprintln!("sha256 matches {}", manifest_path.display());
                complete
            }
            None => {
                eprintln!(
                    "warning: no manifest at {}; the archive cannot be checked against a hash",
                    manifest_path.display()
                );
                crate::backup::check_complete(&binaries, format, &path, &Default::default())
            }
        };
        complete.context("the archive is damaged; nothing was restored")?;
        eprintln!("read back in full in {:.1}s", phase.elapsed().as_secs_f64());

        // 2. The target, and 3. the restore. A database created for it goes again if
        // either fails, so a refused restore leaves nothing behind.
        let target = self.connect.resolve()?;
        eprintln!("target: {}", target.describe());
        if self.create {
            create_database(&target)?;
        }
        let phase = std::time::Instant::now();
        if let Err(err) = self.check_target_and_restore(&binaries, format, &path, &target) {
            if !self.create {
                return Err(err);
            }
            return Err(match drop_database(&target) {
                Ok(()) => err.context("the database created for the restore was dropped again"),
                Err(drop_err) => err.context(format!(
                    "the database created for the restore could not be dropped: {drop_err:#}"
                )),
            });
        }
        eprintln!("restored in {:.1}s", phase.elapsed().as_secs_f64());

        // 4. What the guide checks afterwards.
        let phase = std::time::Instant::now();
        let mut client = target.connect("cargo xtask restore")?;
        // ANALYZE and the row counts each read every table: on two connections at once.
        let counts = std::thread::scope(|scope| -> anyhow::Result<_> {
            let analyze = scope.spawn(|| -> anyhow::Result<()> {
                let mut other = target.connect("cargo xtask restore (analyze)")?;
                other.batch_execute("ANALYZE")?;
                Ok(())
            });
            let counts = match manifest {
                Some(_) => Some(dump::row_counts(&mut client)?),
                None => None,
            };
            analyze
                .join()
                .map_err(|_| anyhow::anyhow!("ANALYZE panicked"))?
                .context("ANALYZE after the restore failed")?;
            Ok(counts)
        })?;
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
            if counts != manifest.tables {
                bail!("restored row counts differ from the manifest: restored {counts:?}, manifest {:?}", manifest.tables);
            }
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
        target: &crate::connect::Target,
    ) -> anyhow::Result<()> {
        // 2. The target.
        let mut client = target.connect("cargo xtask restore")?;
        let script = script_of(binaries, format, path)?;
        if !self.no_owner {
            let needed = dump::roles_in_script(&script);
            let missing: Vec<String> = needed
                .into_iter()
                .filter(|role| {
                    client
                        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[role])
                        .map(|r| r.is_none())
                        .unwrap_or(true)
                })
                .collect();
            if !missing.is_empty() {
                bail!(
                    "the archive needs roles the target lacks: {}; nothing was changed. Create them, or restore without owners and grants with --no-owner",
                    missing.join(", ")
                );
            }
        }
        let extensions: Vec<String> = dump::extensions_in_script(&script)
            .into_iter()
            .filter(|e| {
                client
                    .query_opt(
                        "SELECT 1 FROM pg_available_extensions WHERE name = $1",
                        &[e],
                    )
                    .map(|r| r.is_none())
                    .unwrap_or(true)
            })
            .collect();
        if !extensions.is_empty() {
            bail!("the archive needs extensions the target server does not have: {}; nothing was changed", extensions.join(", "));
        }
        let existing: Vec<String> = client
            .query(
                "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1",
                &[],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let replace_allowed = self.clean && self.yes;
        if !existing.is_empty() && !replace_allowed {
            let shown: Vec<&str> = existing.iter().take(10).map(String::as_str).collect();
            bail!(
                "the target database already holds {} table(s) ({}{}); nothing was changed. To replace them, pass --clean --yes (take a backup first)",
                existing.len(),
                shown.join(", "),
                if existing.len() > 10 { ", ..." } else { "" }
            );
        }
        drop(client);

        // 3. The restore, in one transaction (or a staging database with --jobs).
        eprintln!("restoring...");
        if self.jobs > 1 && format != DumpFormat::Plain {
            restore_via_staging(binaries, format, path, target, self.no_owner, self.jobs)?;
        } else {
            run_restore(
                binaries,
                format,
                path,
                &target.url,
                self.no_owner,
                self.clean && !existing.is_empty(),
                1,
            )?;
        }

        Ok(())
    }
}

/// Restores `path` into `url` atomically: `pg_restore --single-transaction` or
/// `psql -X -1 -v ON_ERROR_STOP=1`.
pub(crate) fn run_restore(
    binaries: &PgBinaries,
    format: DumpFormat,
    path: &Path,
    url: &DatabaseUrl,
    no_owner: bool,
    clean: bool,
    jobs: usize,
) -> anyhow::Result<()> {
    let mut args: Vec<std::ffi::OsString> = Vec::new();
    let program = match format {
        DumpFormat::Plain => {
            args.extend([
                "-X".into(),
                "-q".into(),
                "-1".into(),
                "-v".into(),
                "ON_ERROR_STOP=1".into(),
            ]);
            args.push(format!("--file={}", path.display()).into());
            "psql"
        }
        DumpFormat::Custom | DumpFormat::Directory => {
            args.push("--exit-on-error".into());
            if jobs > 1 {
                args.push(format!("--jobs={jobs}").into());
            } else {
                args.push("--single-transaction".into());
            }
            if no_owner {
                args.extend(["--no-owner".into(), "--no-privileges".into()]);
            }
            if clean {
                args.extend(["--clean".into(), "--if-exists".into()]);
            }
            args.push(path.into());
            "pg_restore"
        }
    };
    let output = pgtool::libpq(binaries, program, args, url)
        .stdout_null()
        .stderr_capture()
        .unchecked()
        .run()?;
    if !output.status.success() {
        bail!(
            "{program} failed; the target was left as it was:\n  {}",
            pgtool::tail(&output.stderr)
        );
    }
    Ok(())
}

fn script_of(binaries: &PgBinaries, format: DumpFormat, path: &Path) -> anyhow::Result<String> {
    Ok(match format {
        DumpFormat::Plain => std::fs::read_to_string(path)?,
        _ => duct::cmd(
            binaries.tool("pg_restore"),
            [
                std::ffi::OsStr::new("--schema-only"),
                std::ffi::OsStr::new("--file=-"),
                path.as_os_str(),
            ],
        )
        .stderr_capture()
        .read()?,
    })
}

/// The maintenance database of the same server, for CREATE/ALTER DATABASE.
fn maintenance(target: &crate::connect::Target) -> anyhow::Result<(postgres::Client, String)> {
    let config = target.url.config()?;
    let name = config
        .get_dbname()
        .context("the URL names no database")?
        .to_string();
    let mut admin = config.clone();
    admin.dbname("postgres");
    admin.application_name("cargo xtask restore");
    let client = backend_schema::tls::connect(&target.url, &admin)
        .context("cannot connect to the maintenance database `postgres`")?;
    Ok((client, name))
}

fn create_database(target: &crate::connect::Target) -> anyhow::Result<()> {
    let (mut admin, name) = maintenance(target)?;
    if admin
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])?
        .is_some()
    {
        bail!("database {name} already exists; drop --create to restore into it");
    }
    admin.batch_execute(&format!(
        "CREATE DATABASE {} TEMPLATE template0",
        quote_ident(&name)
    ))?;
    eprintln!("created database {name}");
    Ok(())
}

fn drop_database(target: &crate::connect::Target) -> anyhow::Result<()> {
    let (mut admin, name) = maintenance(target)?;
    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {}", quote_ident(&name)))?;
    Ok(())
}

/// Parallel restore into a staging database, swapped in by rename only when complete.
fn restore_via_staging(
    binaries: &PgBinaries,
    format: DumpFormat,
    path: &Path,
    target: &crate::connect::Target,
    no_owner: bool,
    jobs: usize,
) -> anyhow::Result<()> {
    let (mut admin, name) = maintenance(target)?;
    let staging = format!("{name}__restore_{}", std::process::id());
    admin.batch_execute(&format!(
        "CREATE DATABASE {} TEMPLATE template0",
        quote_ident(&staging)
    ))?;
    let staging_url = target.url.with_database(&staging);
    if let Err(err) = run_restore(binaries, format, path, &staging_url, no_owner, false, jobs) {
        let _ = admin.batch_execute(&format!("DROP DATABASE {}", quote_ident(&staging)));
        return Err(err);
    }
    let old = format!("{name}__replaced_{}", std::process::id());
    // Both renames in one transaction: the target name always points at a whole database.
    let swap = admin.batch_execute(&format!(
        "BEGIN; ALTER DATABASE {} RENAME TO {}; ALTER DATABASE {} RENAME TO {}; COMMIT",
        quote_ident(&name),
        quote_ident(&old),
        quote_ident(&staging),
        quote_ident(&name)
    ));
    if let Err(err) = swap {
        let _ = admin.batch_execute("ROLLBACK");
        let _ = admin.batch_execute(&format!("DROP DATABASE {}", quote_ident(&staging)));
        return Err(anyhow::Error::new(err).context(format!(
            "cannot swap the restored copy in: database {name} is in use (close its sessions and retry); the target was left as it was"
        )));
    }
    admin.batch_execute(&format!("DROP DATABASE {}", quote_ident(&old)))?;
    Ok(())
}

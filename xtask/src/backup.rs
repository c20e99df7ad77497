//! `cargo xtask backup`: pg_dump that cannot leave a bad or world-readable file behind.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context as _};
use backend_schema::dump::{self, DumpFormat, Manifest};
use backend_schema::runner::heads_text;
use backend_schema::snapshot::SchemaSnapshot;
use backend_schema::{version_table, PgBinaries, TempCluster};
use xshell::Shell;

use crate::flags::Backup;
use crate::pgtool;

impl Backup {
    pub(crate) fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let started = Instant::now();
        let target = self.connect.resolve()?;
        eprintln!("database: {}", target.describe());
        let binaries = PgBinaries::locate()?;
        let mut client = target.connect("cargo xtask backup")?;

        let (role, sees_all): (String, bool) = {
            let row = client.query_one("SELECT current_user::text, rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user", &[])?;
            (row.get(0), row.get(1))
        };
        if !sees_all {
            bail!(
                "role {role} cannot see every row: row-level security would hide other tenants' rows (pg_dump refuses, or dumps only what the policies allow); \
                 run the backup as a superuser or a role with BYPASSRLS (ALTER ROLE ... BYPASSRLS)"
            );
        }

        let final_path = match &self.output {
            Some(path) => sh.current_dir().join(path),
            None => {
                let stamp = backend_schema::utc_timestamp()
                    .replace(['-', ':'], "")
                    .replace('T', "_")
                    .trim_end_matches('Z')
                    .to_string();
                sh.current_dir().join("backups").join(format!(
                    "backup_{stamp}.{}",
                    self.format.format().extension()
                ))
            }
        };
        if final_path.exists() {
            bail!(
                "{} already exists; backups never overwrite (choose another --output)",
                final_path.display()
            );
        }
        let dir = final_path
            .parent()
            .context("the output path has no directory")?
            .to_path_buf();
        if !dir.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
        }
        sweep_partials(&dir);
        let partial = dir.join(format!(
            ".{}.partial-{}",
            final_path.file_name().unwrap_or_default().to_string_lossy(),
            std::process::id()
        ));
        let result = self.dump(&binaries, &target, &mut client, &partial, &final_path);
        if result.is_err() {
            let _ = fs::remove_dir_all(&partial).or_else(|_| fs::remove_file(&partial));
        }
        let manifest = result?;
        eprintln!(
            "backup written: {} ({} bytes, sha256 {}) in {:.1}s; revision {}; {} tables, {} rows",
            final_path.display(),
            manifest.size_bytes,
            &manifest.sha256[..16],
            started.elapsed().as_secs_f64(),
            heads_text(&manifest.revision),
            manifest.tables.len(),
            manifest.tables.values().sum::<i64>()
        );
        if self.verify {
            verify_backup(&binaries, &final_path, &manifest, &mut client)?;
        }
        Ok(())
    }

    fn dump(
        &self,
        binaries: &PgBinaries,
        target: &crate::connect::Target,
        client: &mut postgres::Client,
        partial: &Path,
        final_path: &Path,
    ) -> anyhow::Result<Manifest> {
        // Row counts and pg_dump share one snapshot, so the manifest describes the dump.
        let mut tx = client
            .build_transaction()
            .isolation_level(postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()?;
        let snapshot: String = tx.query_one("SELECT pg_export_snapshot()", &[])?.get(0);
        // Counting rows takes the same locks pg_dump does, so it obeys the same limit.
        tx.execute(
            "SELECT set_config('lock_timeout', $1, true)",
            &[&format!("{}ms", self.lock_wait_timeout.as_millis())],
        )?;
        let revision = version_table::read_heads(&mut tx)?;
        let server_version: String = tx.query_one("SHOW server_version", &[])?.get(0);
        let database: String = tx.query_one("SELECT current_database()::text", &[])?.get(0);

        let lock_wait = format!("--lock-wait-timeout={}", self.lock_wait_timeout.as_millis());
        let mut args: Vec<std::ffi::OsString> = vec![
            format!("--format={}", self.format.format().flag()).into(),
            format!("--file={}", partial.display()).into(),
            format!("--snapshot={snapshot}").into(),
            lock_wait.into(),
            "--verbose".into(),
        ];
        if self.format.format() == DumpFormat::Directory {
            args.push(format!("--jobs={}", self.jobs.max(1)).into());
        }
        eprintln!(
            "dumping with pg_dump ({} format)...",
            self.format.format().flag()
        );
        let dumping = Instant::now();
        let reader = pgtool::libpq(binaries, "pg_dump", args, &target.url)
            .stderr_to_stdout()
            .unchecked()
            .reader()?;
        // The row counts run in the shared snapshot while pg_dump works, not before it.
        let (log, tables) = std::thread::scope(|scope| {
            let drain = scope.spawn(|| {
                let mut log = Vec::new();
                for line in BufReader::new(&reader).lines().map_while(Result::ok) {
                    if let Some(table) = line.split("dumping contents of table ").nth(1) {
                        eprintln!("  {}", table.trim_matches('"'));
                    }
                    log.push(line);
                }
                log
            });
            let tables = dump::row_counts(&mut tx);
            if tables.is_err() {
                let _ = reader.kill();
            }
            (drain.join().unwrap_or_default(), tables)
        });
        let tables = tables.with_context(|| {
            format!(
                "could not read the tables within --lock-wait-timeout ({:?}); no backup was written (another session holds a lock: see pg_locks)",
                self.lock_wait_timeout
            )
        })?;
        let status = reader.try_wait()?.map(|o| o.status);
        drop(tx);
        eprintln!(
            "pg_dump finished in {:.1}s",
            dumping.elapsed().as_secs_f64()
        );
        if !status.is_some_and(|s| s.success()) {
            bail!(
                "pg_dump failed; no backup was written:\n  {}",
                pgtool::tail(log.join("\n").as_bytes())
            );
        }

        eprintln!("reading the dump back in full and hashing it...");
        let checking = Instant::now();
        let (hash, complete) = hash_and_read(binaries, self.format.format(), partial, &tables);
        let checked_in = checking.elapsed();
        complete.context("the dump is incomplete; no backup was written")?;
        let (sha256, size_bytes) = hash?;
        eprintln!("read back and hashed in {:.1}s", checked_in.as_secs_f64());
        let pg_dump_version = duct::cmd(binaries.tool("pg_dump"), ["--version"]).read()?;
        let manifest = Manifest {
            file: final_path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
            format: self.format.format(),
            created_at: backend_schema::utc_timestamp(),
            database,
            revision,
            server_version,
            pg_dump_version: pg_dump_version.trim().to_string(),
            size_bytes,
            sha256,
            tables,
        };
        let manifest_path = Manifest::path_for(final_path);
        if manifest_path.exists() {
            bail!(
                "{} already exists; backups never overwrite",
                manifest_path.display()
            );
        }
        let manifest_partial = PathBuf::from(format!("{}.manifest", partial.display()));
        write_private(
            &manifest_partial,
            &(serde_json::to_string_pretty(&manifest)? + "\n"),
        )?;
        private_tree(partial)?;
        fs::rename(partial, final_path)
            .with_context(|| format!("cannot move the dump to {}", final_path.display()))?;
        fs::rename(&manifest_partial, &manifest_path)?;
        if let Some(dir) = final_path.parent() {
            let _ = fs::File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(manifest)
    }
}

/// The archive's SHA-256 and size, and whether `check_complete` could read it all,
/// computed side by side on two cores: both read every byte.
pub(crate) fn hash_and_read(
    binaries: &PgBinaries,
    format: DumpFormat,
    path: &Path,
    rows: &BTreeMap<String, i64>,
) -> (anyhow::Result<(String, u64)>, anyhow::Result<()>) {
    std::thread::scope(|scope| {
        let hash = scope.spawn(|| dump::sha256_path(path));
        let complete = check_complete(binaries, format, path, rows);
        let hash = match hash.join() {
            Ok(hash) => hash.with_context(|| format!("cannot read {}", path.display())),
            Err(_) => Err(anyhow::anyhow!("hashing {} panicked", path.display())),
        };
        (hash, complete)
    })
}

/// A full read of the archive: `pg_restore -l` alone accepts a truncated file. With
/// several tables' data, two `pg_restore -L` read halves of it at once (weighed by
/// `rows`, when known): inflating the data is what the read-back spends its time on.
pub(crate) fn check_complete(
    binaries: &PgBinaries,
    format: DumpFormat,
    path: &Path,
    rows: &BTreeMap<String, i64>,
) -> anyhow::Result<()> {
    match format {
        DumpFormat::Plain => {
            if !dump::plain_dump_is_complete(path)? {
                bail!(
                    "{} does not end with pg_dump's completion line (truncated?)",
                    path.display()
                );
            }
        }
        DumpFormat::Custom | DumpFormat::Directory => {
            let read = |list: Option<&Path>| {
                let mut args = vec![std::ffi::OsString::from("--file=/dev/null")];
                if let Some(list) = list {
                    args.push(format!("--use-list={}", list.display()).into());
                }
                args.push(path.into());
                duct::cmd(binaries.tool("pg_restore"), args)
                    .stdout_null()
                    .stderr_capture()
                    .unchecked()
            };
            let listing = duct::cmd(
                binaries.tool("pg_restore"),
                [std::ffi::OsStr::new("--list"), path.as_os_str()],
            )
            .stderr_capture()
            .unchecked()
            .stdout_capture()
            .run()?;
            let parts = listing
                .status
                .success()
                .then(|| dump::split_listing(&String::from_utf8_lossy(&listing.stdout), rows, 2))
                .flatten();
            let outputs = match parts {
                None => vec![read(None).run()?],
                Some(parts) => {
                    let lists = tempfile::tempdir()?;
                    let mut running = Vec::new();
                    for (i, part) in parts.iter().enumerate() {
                        let list = lists.path().join(format!("part{i}.list"));
                        fs::write(&list, part)?;
                        running.push(read(Some(&list)).start()?);
                    }
                    running
                        .iter()
                        .map(|handle| handle.wait().cloned())
                        .collect::<Result<Vec<_>, _>>()?
                }
            };
            for output in outputs {
                if !output.status.success() {
                    bail!(
                        "pg_restore cannot read all of {}:\n  {}",
                        path.display(),
                        pgtool::tail(&output.stderr)
                    );
                }
            }
        }
    }
    Ok(())
}

/// Restores the backup into a throwaway cluster and compares schema and row counts.
fn verify_backup(
    binaries: &PgBinaries,
    path: &Path,
    manifest: &Manifest,
    source: &mut postgres::Client,
) -> anyhow::Result<()> {
    eprintln!("verifying: restoring into a throwaway cluster...");
    let cluster = TempCluster::start()?;
    cluster.create_database("restored", None)?;
    let url = backend_schema::database_url::DatabaseUrl::parse(
        &cluster.url("restored"),
        "the throwaway cluster",
    )?;
    crate::restore::run_restore(binaries, manifest.format, path, &url, true, false, 1)?;
    let mut restored = cluster.client("restored")?;
    let counts = dump::row_counts(&mut restored)?;
    if counts != manifest.tables {
        bail!(
            "the restored row counts differ from the manifest: restored {counts:?}, manifest {:?}",
            manifest.tables
        );
    }
    let expected = SchemaSnapshot::capture(source)?;
    let actual = SchemaSnapshot::capture(&mut restored)?;
    // Owners and grants are not restored into the throwaway cluster (--no-owner).
    let strip = |s: SchemaSnapshot| SchemaSnapshot {
        objects: s
            .objects
            .into_iter()
            .map(|(k, v)| {
                (
                    k,
                    v.into_iter().filter(|l| !l.starts_with("grant ")).collect(),
                )
            })
            .collect(),
    };
    if let Some(diff) = strip(expected).diff(&strip(actual)) {
        bail!("the restored schema differs from the source:\n{diff}");
    }
    eprintln!("verified: the dump restores, with the same schema and row counts");
    Ok(())
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    Ok(())
}

/// 0600 files and 0700 directories, whatever the umask was.
fn private_tree(path: &Path) -> anyhow::Result<()> {
    if path.is_dir() {
        fs::set_permissions(path, fs::Permissions::from_mode(0o700))?;
        for entry in fs::read_dir(path)? {
            private_tree(&entry?.path())?;
        }
    } else {
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
        fs::File::open(path)?.sync_all()?;
    }
    Ok(())
}

/// Removes partial dumps whose writer process is gone (killed mid-dump).
fn sweep_partials(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .rsplit(".partial-")
            .next()
            .filter(|_| name.starts_with('.') && name.contains(".partial-"))
        else {
            continue;
        };
        let pid = pid.split('.').next().unwrap_or("");
        if pid
            .parse::<u32>()
            .is_ok_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
        {
            let path: PathBuf = entry.path();
            let _ = fs::remove_dir_all(&path).or_else(|_| fs::remove_file(&path));
        }
    }
}

//! Writing a backup that cannot leave a bad or world-readable file behind: pg_dump into
//! a private partial file, the row counts from the same snapshot, a full read-back and
//! hash, then the manifest, and only then the rename to the final name.

use std::ffi::OsString;
use std::fs;
use std::io::{self, BufRead as _, BufReader};
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use postgres::Client;

use super::archive::{hash_and_read, ArchiveError};
use super::restore::{run_restore, RestoreError, RestoreOptions};
use super::{row_counts, DumpFormat, Manifest};
use crate::database_url::{DatabaseUrl, UrlError};
use crate::pgtool::{libpq, stderr_tail};
use crate::snapshot::SchemaSnapshot;
use crate::{version_table, ClusterError, PgBinaries, TempCluster};

/// What to dump, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupOptions {
    /// The final path; nothing is ever written over an existing file.
    pub output: PathBuf,
    pub format: DumpFormat,
    /// Parallel pg_dump jobs (directory format only).
    pub jobs: usize,
    /// How long pg_dump and the row counts wait for a table lock.
    pub lock_wait_timeout: Duration,
}

/// How far the backup got, for the caller to report.
#[derive(Debug, Clone, Copy)]
pub enum BackupProgress<'a> {
    /// pg_dump is starting.
    Dumping,
    /// pg_dump is writing this table's rows.
    Table(&'a str),
    DumpFinished {
        elapsed: Duration,
    },
    ReadingBack,
    ReadBack {
        elapsed: Duration,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(
        "role {role} cannot see every row: row-level security would hide other tenants' rows (pg_dump refuses, or dumps only what the policies allow); \
         run the backup as a superuser or a role with BYPASSRLS (ALTER ROLE ... BYPASSRLS)"
    )]
    CannotSeeEveryRow { role: String },
    #[error("{} already exists; backups never overwrite (choose another --output)", .0.display())]
    Exists(PathBuf),
    #[error("{} already exists; backups never overwrite", .0.display())]
    ManifestExists(PathBuf),
    #[error("the output path has no directory")]
    NoDirectory,
    #[error("cannot create {}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("could not read the tables within --lock-wait-timeout ({timeout:?}); no backup was written (another session holds a lock: see pg_locks)")]
    LockTimeout {
        timeout: Duration,
        #[source]
        source: postgres::Error,
    },
    #[error("pg_dump failed; no backup was written:\n  {stderr_tail}")]
    PgDump { stderr_tail: String },
    #[error("the dump is incomplete; no backup was written")]
    Incomplete(#[source] ArchiveError),
    #[error("cannot move the dump to {}", path.display())]
    Move {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    Db(#[from] postgres::Error),
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

/// Why a written backup failed `verify_backup`.
#[derive(Debug, thiserror::Error)]
pub enum VerifyBackupError {
    #[error("the restored row counts differ from the manifest: restored {restored:?}, manifest {manifest:?}")]
    CountsDiffer {
        restored: std::collections::BTreeMap<String, i64>,
        manifest: std::collections::BTreeMap<String, i64>,
    },
    #[error("the restored schema differs from the source:\n{0}")]
    SchemaDiffers(String),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Url(#[from] UrlError),
    #[error(transparent)]
    Restore(#[from] RestoreError),
    #[error(transparent)]
    Db(#[from] postgres::Error),
}

/// `dir/backup_YYYYMMDD_HHMMSS.<ext>` (UTC): the name a backup gets without `--output`.
pub fn default_output(dir: &Path, format: DumpFormat) -> PathBuf {
    let stamp = crate::utc_timestamp()
        .replace(['-', ':'], "")
        .replace('T', "_")
        .trim_end_matches('Z')
        .to_string();
    dir.join(format!("backup_{stamp}.{}", format.extension()))
}

/// Refuses a role that row-level security would hide rows from.
pub fn check_role_sees_all(client: &mut Client) -> Result<(), BackupError> {
    let row = client.query_one("SELECT current_user::text, rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user", &[])?;
    let (role, sees_all): (String, bool) = (row.get(0), row.get(1));
    if !sees_all {
        return Err(BackupError::CannotSeeEveryRow { role });
    }
    Ok(())
}

/// Dumps the database `client` and `url` reach to `options.output`, with its manifest
/// beside it. The file appears at its final name only once it is complete, read back
/// in full and hashed; on failure no partial file is left.
pub fn write_backup(
    binaries: &PgBinaries,
    url: &DatabaseUrl,
    client: &mut Client,
    options: &BackupOptions,
    progress: &(dyn Fn(BackupProgress<'_>) + Sync),
) -> Result<Manifest, BackupError> {
    let final_path = &options.output;
    if final_path.exists() {
        return Err(BackupError::Exists(final_path.clone()));
    }
    let dir = final_path
        .parent()
        .ok_or(BackupError::NoDirectory)?
        .to_path_buf();
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|source| BackupError::Create {
                path: dir.clone(),
                source,
            })?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
    }
    sweep_partials(&dir);
    let partial = dir.join(format!(
        ".{}.partial-{}",
        final_path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let result = dump(binaries, url, client, options, &partial, progress);
    if result.is_err() {
        let _ = fs::remove_dir_all(&partial).or_else(|_| fs::remove_file(&partial));
    }
    result
}

fn dump(
    binaries: &PgBinaries,
    url: &DatabaseUrl,
    client: &mut Client,
    options: &BackupOptions,
    partial: &Path,
    progress: &(dyn Fn(BackupProgress<'_>) + Sync),
) -> Result<Manifest, BackupError> {
    let final_path = options.output.as_path();
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
        &[&format!("{}ms", options.lock_wait_timeout.as_millis())],
    )?;
    let revision = version_table::read_heads(&mut tx)?;
    let server_version: String = tx.query_one("SHOW server_version", &[])?.get(0);
    let database: String = tx.query_one("SELECT current_database()::text", &[])?.get(0);

    let lock_wait = format!(
        "--lock-wait-timeout={}",
        options.lock_wait_timeout.as_millis()
    );
    let mut args: Vec<OsString> = vec![
        format!("--format={}", options.format.flag()).into(),
        format!("--file={}", partial.display()).into(),
        format!("--snapshot={snapshot}").into(),
        lock_wait.into(),
        "--verbose".into(),
    ];
    if options.format == DumpFormat::Directory {
        args.push(format!("--jobs={}", options.jobs.max(1)).into());
    }
    progress(BackupProgress::Dumping);
    let dumping = Instant::now();
    let reader = libpq(binaries, "pg_dump", args, url)
        .stderr_to_stdout()
        .unchecked()
        .reader()?;
    // The row counts run in the shared snapshot while pg_dump works, not before it.
    let (log, tables) = std::thread::scope(|scope| {
        let drain = scope.spawn(|| {
            let mut log = Vec::new();
            for line in BufReader::new(&reader).lines().map_while(Result::ok) {
                if let Some(table) = line.split("dumping contents of table ").nth(1) {
                    progress(BackupProgress::Table(table.trim_matches('"')));
                }
                log.push(line);
            }
            log
        });
        let tables = row_counts(&mut tx);
        if tables.is_err() {
            let _ = reader.kill();
        }
        (drain.join().unwrap_or_default(), tables)
    });
    let tables = tables.map_err(|source| BackupError::LockTimeout {
        timeout: options.lock_wait_timeout,
        source,
    })?;
    let status = reader.try_wait()?.map(|o| o.status);
    drop(tx);
    progress(BackupProgress::DumpFinished {
        elapsed: dumping.elapsed(),
    });
    if !status.is_some_and(|s| s.success()) {
        return Err(BackupError::PgDump {
            stderr_tail: stderr_tail(log.join("\n").as_bytes()),
        });
    }

    progress(BackupProgress::ReadingBack);
    let checking = Instant::now();
    let (hash, complete) = hash_and_read(binaries, options.format, partial, &tables);
    let checked_in = checking.elapsed();
    complete.map_err(BackupError::Incomplete)?;
    let (sha256, size_bytes) = hash?;
    progress(BackupProgress::ReadBack {
        elapsed: checked_in,
    });
    let pg_dump_version = duct::cmd(binaries.tool("pg_dump"), ["--version"]).read()?;
    let manifest = Manifest {
        file: final_path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned(),
        format: options.format,
        created_at: crate::utc_timestamp(),
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
        return Err(BackupError::ManifestExists(manifest_path));
    }
    let manifest_partial = PathBuf::from(format!("{}.manifest", partial.display()));
    write_private(
        &manifest_partial,
        &(serde_json::to_string_pretty(&manifest)? + "\n"),
    )?;
    private_tree(partial)?;
    fs::rename(partial, final_path).map_err(|source| BackupError::Move {
        path: final_path.to_path_buf(),
        source,
    })?;
    fs::rename(&manifest_partial, &manifest_path)?;
    if let Some(dir) = final_path.parent() {
        let _ = fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(manifest)
}

/// Restores the backup into a throwaway cluster and compares schema and row counts
/// with the `source` it was dumped from.
pub fn verify_backup(
    binaries: &PgBinaries,
    path: &Path,
    manifest: &Manifest,
    source: &mut Client,
) -> Result<(), VerifyBackupError> {
    let cluster = TempCluster::start()?;
    cluster.create_database("restored", None)?;
    let url = DatabaseUrl::parse(&cluster.url("restored"), "the throwaway cluster")?;
    let options = RestoreOptions {
        no_owner: true,
        clean: false,
        jobs: 1,
    };
    run_restore(binaries, manifest.format, path, &url, &options)?;
    let mut restored = cluster.client("restored")?;
    let counts = row_counts(&mut restored)?;
    if counts != manifest.tables {
        return Err(VerifyBackupError::CountsDiffer {
            restored: counts,
            manifest: manifest.tables.clone(),
        });
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
        return Err(VerifyBackupError::SchemaDiffers(diff));
    }
    Ok(())
}

/// A new file, 0600 from the start, synced.
fn write_private(path: &Path, text: &str) -> Result<(), BackupError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| BackupError::Create {
            path: path.to_path_buf(),
            source,
        })?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    Ok(())
}

/// 0600 files and 0700 directories, whatever the umask was.
fn private_tree(path: &Path) -> io::Result<()> {
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

//! Writing a backup that cannot leave a bad or world-readable file behind, nor replace
//! one: pg_dump into a private staging directory beside the final name, the row counts
//! from the same snapshot, a full read-back and hash, then the manifest, and only then
//! the renames to the final names, which fail rather than replace anything.

use std::ffi::OsString;
use std::fs;
use std::io::{self, BufRead as _, BufReader};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use postgres::Client;

use super::archive::{check_complete, hash_and_read, ArchiveError};
use super::destination::{
    is_taken, prepare_dir, rename_no_replace, DirError, DirState, DirUse, Output,
};
use super::restore::{run_restore, RestoreError, RestoreOptions};
use super::staging::{self, Staging};
use super::stream::{self, StreamError, Tee, Verdict};
use super::{row_counts, DumpFormat, Manifest};
use crate::database_url::{DatabaseUrl, UrlError};
use crate::pgtool::{libpq, stderr_tail, tool};
use crate::snapshot::SchemaSnapshot;
use crate::{version_table, ClusterError, PgBinaries, TempCluster};

/// What to dump, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupOptions {
    /// Where it goes; nothing that already exists is ever replaced.
    pub output: Output,
    pub format: DumpFormat,
    /// Parallel pg_dump jobs (directory format only).
    pub jobs: usize,
    /// How long pg_dump and the row counts wait for a table lock.
    pub lock_wait_timeout: Duration,
}

/// How far the backup got, for the caller to report.
#[derive(Debug, Clone, Copy)]
pub enum BackupProgress<'a> {
    /// The directory of default-named backups was ours and others could reach it:
    /// it is 0700 now.
    MadePrivate {
        dir: &'a Path,
        was: u32,
    },
    /// pg_dump is starting.
    Dumping,
    /// pg_dump is writing this table's rows.
    Table(&'a str),
    /// Bytes of the dump written so far (a custom or plain dump, as it streams).
    Written(u64),
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
        "role {role} cannot see every row{}: row-level security applies to it, so a dump would hold only the rows the policies let it see, and pg_dump refuses; no backup was written. \
         Run the backup as the tables' owner (policies do not apply to it unless the table has FORCE ROW LEVEL SECURITY), a superuser, or a role with BYPASSRLS (ALTER ROLE {role} BYPASSRLS)",
        table.as_ref().map(|t| format!(" of table {t}")).unwrap_or_default()
    )]
    CannotSeeEveryRow { role: String, table: Option<String> },
    #[error("{} already exists; backups never overwrite (choose another --output); no backup was written", .0.display())]
    Exists(PathBuf),
    #[error("every default name from {} on is taken; no backup was written (choose --output)", .0.display())]
    NoFreeName(PathBuf),
    #[error("the output path has no directory")]
    NoDirectory,
    #[error(transparent)]
    Directory(#[from] DirError),
    #[error("cannot write {}; no backup was written", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("could not read the tables within --table-lock-timeout ({timeout:?}); no backup was written (another session holds a lock: see pg_locks)")]
    LockTimeout {
        timeout: Duration,
        #[source]
        source: postgres::Error,
    },
    #[error("counting the rows of the tables failed; no backup was written: {}", crate::sqlstate::explain(.0))]
    Count(#[source] postgres::Error),
    #[error("pg_dump failed; no backup was written:\n  {stderr_tail}")]
    PgDump { stderr_tail: String },
    #[error("the dump is incomplete; no backup was written")]
    Incomplete(#[source] ArchiveError),
    #[error("cannot move the dump to {}; no backup was written", path.display())]
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

/// A written backup: where it is, and what its manifest says.
#[derive(Debug, Clone)]
pub struct WrittenBackup {
    pub path: PathBuf,
    pub manifest: Manifest,
}

/// Dumps the database `client` and `url` reach to `options.output`, with its manifest
/// beside it. The file appears at its final name only once it is complete, read back
/// in full and hashed; on failure no partial file is left. Nothing that holds a name
/// is replaced: a taken `--output` is an error, a taken default name the next suffix.
pub fn write_backup(
    binaries: &PgBinaries,
    url: &DatabaseUrl,
    client: &mut Client,
    options: &BackupOptions,
    progress: &(dyn Fn(BackupProgress<'_>) + Sync),
) -> Result<WrittenBackup, BackupError> {
    // We write the dump ourselves: a file size limit must fail the write (EFBIG, reported
    // with the staging removed), not kill the process and leave the staging behind.
    // SAFETY: setting a signal's disposition to ignore has no other effect.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    let candidates = options.output.candidates(options.format);
    if let Output::Exact(path) = &options.output {
        // Refused before the dump, not after it: the renames check again.
        for taken in [path.clone(), Manifest::path_for(path)] {
            if is_taken(&taken) {
                return Err(BackupError::Exists(taken));
            }
        }
    }
    let dir = options.output.dir().ok_or(BackupError::NoDirectory)?;
    let use_of_dir = match options.output {
        Output::Named { .. } => DirUse::Backups,
        Output::Exact(_) => DirUse::Output,
    };
    if let DirState::MadePrivate { was } = prepare_dir(dir, use_of_dir)? {
        progress(BackupProgress::MadePrivate { dir, was });
    }
    staging::sweep(dir);
    // pg_dump writes into a directory only we can reach: a name in `dir` itself could be
    // taken first by anyone who can write there (a file or link pg_dump would follow).
    let staging = Staging::create(dir).map_err(|source| BackupError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let first = candidates[0].file_name().unwrap_or_default();
    let partial = staging.path().join(first);
    let manifest_partial = Manifest::path_for(&partial);
    // Whatever is left in the staging directory goes with it.
    dump(binaries, url, client, options, &partial, progress)
        .and_then(|manifest| publish(&partial, &manifest_partial, manifest, &candidates))
}

/// Moves the dump and its manifest to the first free name of `candidates`, or fails
/// naming the taken one. The dump's rename claims the name; the manifest follows it,
/// and if its name was taken meanwhile the dump goes back to its partial name.
fn publish(
    partial: &Path,
    manifest_partial: &Path,
    mut manifest: Manifest,
    candidates: &[PathBuf],
) -> Result<WrittenBackup, BackupError> {
    private_tree(partial).map_err(|source| BackupError::Write {
        path: partial.to_path_buf(),
        source,
    })?;
    let exact = candidates.len() == 1;
    for path in candidates {
        let manifest_path = Manifest::path_for(path);
        if !exact && (is_taken(path) || is_taken(&manifest_path)) {
            continue;
        }
        manifest.file = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        remove_any(manifest_partial);
        let text = serde_json::to_string_pretty(&manifest)? + "\n";
        write_private(manifest_partial, &text).map_err(|source| BackupError::Write {
            path: manifest_path.clone(),
            source,
        })?;
        match rename_no_replace(partial, path) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists && !exact => continue,
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                return Err(BackupError::Exists(path.clone()))
            }
            Err(source) => {
                return Err(BackupError::Move {
                    path: path.clone(),
                    source,
                })
            }
        }
        if let Err(err) = rename_no_replace(manifest_partial, &manifest_path) {
            // The name is ours since the rename above: nobody else's file is moved.
            rename_no_replace(path, partial).map_err(|source| BackupError::Move {
                path: partial.to_path_buf(),
                source,
            })?;
            match err.kind() {
                io::ErrorKind::AlreadyExists if !exact => continue,
                io::ErrorKind::AlreadyExists => return Err(BackupError::Exists(manifest_path)),
                _ => {
                    return Err(BackupError::Write {
                        path: manifest_path,
                        source: err,
                    })
                }
            }
        }
        if let Some(dir) = path.parent() {
            let _ = fs::File::open(dir).and_then(|d| d.sync_all());
        }
        return Ok(WrittenBackup {
            path: path.clone(),
            manifest,
        });
    }
    Err(BackupError::NoFreeName(candidates[0].clone()))
}

fn dump(
    binaries: &PgBinaries,
    url: &DatabaseUrl,
    client: &mut Client,
    options: &BackupOptions,
    partial: &Path,
    progress: &(dyn Fn(BackupProgress<'_>) + Sync),
) -> Result<Manifest, BackupError> {
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
    // pg_dump decides who may dump: it runs with row_security off, so a table whose
    // policies apply to this role (not its owner, unless FORCEd) is an error rather than
    // a silently partial dump. The row counts run the same way.
    tx.batch_execute("SET LOCAL row_security = off")?;
    let role: String = tx.query_one("SELECT current_user::text", &[])?.get(0);
    let database_owner: String = tx
        .query_one(
            "SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = current_database()",
            &[],
        )?
        .get(0);
    let revision = version_table::read_heads(&mut tx)?;
    let server_version: String = tx.query_one("SHOW server_version", &[])?.get(0);
    let database: String = tx.query_one("SELECT current_database()::text", &[])?.get(0);

    let lock_wait = format!(
        "--lock-wait-timeout={}",
        options.lock_wait_timeout.as_millis()
    );
    // A custom or plain dump streams through us to its file: hashed and read as it is
    // written (`stream.rs`). A directory's files are pg_dump's own, read back after.
    let streamed = options.format != DumpFormat::Directory;
    let mut args: Vec<OsString> = vec![
        format!("--format={}", options.format.flag()).into(),
        format!("--snapshot={snapshot}").into(),
        lock_wait.into(),
        "--verbose".into(),
    ];
    if !streamed {
        args.push(format!("--file={}", partial.display()).into());
    }
    if options.format == DumpFormat::Directory {
        args.push(format!("--jobs={}", options.jobs.max(1)).into());
    }
    let file = match streamed {
        true => Some(
            create_private(partial).map_err(|source| BackupError::Write {
                path: partial.to_path_buf(),
                source,
            })?,
        ),
        false => None,
    };
    progress(BackupProgress::Dumping);
    let dumping = Instant::now();
    let (log_read, log_write) = os_pipe::pipe()?;
    let reader = {
        let expression = libpq(binaries, "pg_dump", args, url)
            .stderr_file(log_write)
            .unchecked();
        match streamed {
            true => expression.reader()?,
            false => expression.stdout_null().reader()?,
        }
    };
    // The row counts run in the shared snapshot while pg_dump works, not before it.
    let (log, tables, written) = std::thread::scope(|scope| {
        let drain = scope.spawn(|| {
            let mut log = Vec::new();
            for line in BufReader::new(log_read).lines().map_while(Result::ok) {
                if let Some(table) = line.split("dumping contents of table ").nth(1) {
                    progress(BackupProgress::Table(table.trim_matches('"')));
                }
                log.push(line);
            }
            log
        });
        let store = scope.spawn(|| {
            let written = match file {
                Some(file) => {
                    let reporting = Reporting {
                        inner: &reader,
                        read: 0,
                        next: REPORT_EVERY,
                        progress,
                    };
                    Some(store_stream(reporting, file, options.format))
                }
                None => {
                    // Nothing comes out (stdout is null), but the end of the pipe is
                    // where the reader waits for pg_dump to exit.
                    let _ = io::copy(&mut &reader, &mut io::sink());
                    None
                }
            };
            if let Some(Ok(Err(_)) | Err(_)) = &written {
                // A damaged stream is refused now, not after pg_dump has finished.
                let _ = reader.kill();
            }
            written
        });
        let tables = row_counts(&mut tx);
        if tables.is_err() {
            let _ = reader.kill();
        }
        let written = store.join().unwrap_or_else(|_| {
            let _ = reader.kill();
            Some(Err(io::Error::other("storing the dump panicked")))
        });
        (drain.join().unwrap_or_default(), tables, written)
    });
    if let Some(table) = log.iter().find_map(|line| row_security_table(line)) {
        return Err(BackupError::CannotSeeEveryRow {
            role,
            table: Some(table),
        });
    }
    let tables = tables.map_err(|source| match source.as_db_error() {
        Some(err) if row_security_table(err.message()).is_some() => {
            BackupError::CannotSeeEveryRow {
                role: role.clone(),
                table: row_security_table(err.message()),
            }
        }
        _ if source.code() == Some(&postgres::error::SqlState::LOCK_NOT_AVAILABLE) => {
            BackupError::LockTimeout {
                timeout: options.lock_wait_timeout,
                source,
            }
        }
        _ => BackupError::Count(source),
    })?;
    let status = reader.try_wait()?.map(|o| o.status);
    drop(tx);
    progress(BackupProgress::DumpFinished {
        elapsed: dumping.elapsed(),
    });
    // Damage stops pg_dump at once (its failure is ours); a stream that only ends early
    // is pg_dump's failure, whose own words say more.
    if let Some(Ok(Err(err @ StreamError::Damaged(_)))) = written {
        return Err(BackupError::Incomplete(ArchiveError::Stream {
            path: partial.to_path_buf(),
            source: err,
        }));
    }
    if !status.is_some_and(|s| s.success()) {
        return Err(BackupError::PgDump {
            stderr_tail: stderr_tail(log.join("\n").as_bytes()),
        });
    }

    let (sha256, size_bytes) = match written {
        Some(written) => {
            let (hash, size, verdict) = written
                .map_err(|source| BackupError::Write {
                    path: partial.to_path_buf(),
                    source,
                })?
                .map_err(|source| {
                    BackupError::Incomplete(ArchiveError::Stream {
                        path: partial.to_path_buf(),
                        source,
                    })
                })?;
            match verdict {
                Verdict::Complete => {}
                Verdict::NotRead(_) => {
                    read_back(binaries, options.format, partial, &tables, progress)?
                }
            }
            (hash, size)
        }
        None => {
            progress(BackupProgress::ReadingBack);
            let checking = Instant::now();
            let (hash, complete) =
                hash_and_read(binaries, options.format, partial, &tables, &mut |_| {});
            let checked_in = checking.elapsed();
            complete.map_err(BackupError::Incomplete)?;
            progress(BackupProgress::ReadBack {
                elapsed: checked_in,
            });
            hash?
        }
    };
    let pg_dump_version = tool(binaries, "pg_dump", vec!["--version".into()]).read()?;
    let manifest = Manifest {
        // Set to the final name when it is chosen.
        file: String::new(),
        format: options.format,
        created_at: crate::utc_timestamp(),
        database,
        revision,
        server_version,
        pg_dump_version: pg_dump_version.trim().to_string(),
        size_bytes,
        sha256,
        tables,
        database_owner: Some(database_owner),
    };
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
        ..RestoreOptions::default()
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

/// How many bytes pass between two `BackupProgress::Written`.
const REPORT_EVERY: u64 = 4 << 20;

/// pg_dump's stdout, reporting how much has passed.
struct Reporting<'p, R> {
    inner: R,
    read: u64,
    next: u64,
    progress: &'p (dyn Fn(BackupProgress<'_>) + Sync),
}

impl<R: io::Read> io::Read for Reporting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read >= self.next {
            (self.progress)(BackupProgress::Written(self.read));
            self.next = self.read + REPORT_EVERY;
        }
        Ok(n)
    }
}

/// pg_dump's stdout into `file`, hashed and checked as it passes: the hash, the size,
/// and what the check found. A plain dump is complete when it ends with pg_dump's
/// completion line (checked on the file's last bytes once it is written).
fn store_stream(
    stdout: impl io::Read,
    file: fs::File,
    format: DumpFormat,
) -> io::Result<Result<(String, u64, Verdict), StreamError>> {
    let mut tee = Tee::new(stdout, io::BufWriter::with_capacity(1 << 20, file));
    let verdict = match format {
        DumpFormat::Custom => {
            let mut buffered = io::BufReader::with_capacity(1 << 20, &mut tee);
            match stream::read_custom(&mut buffered, &mut |_| {})? {
                Ok(verdict) => verdict,
                Err(err) => return Ok(Err(err)),
            }
        }
        _ => Verdict::NotRead("plain".into()),
    };
    let (hash, size, out) = tee.finish()?;
    let file = out.into_inner().map_err(|err| err.into_error())?;
    file.sync_all()?;
    Ok(Ok((hash, size, verdict)))
}

/// The read-back of a file the stream check did not read (a plain dump's last line, an
/// archive version or compression `stream.rs` leaves to pg_restore).
fn read_back(
    binaries: &PgBinaries,
    format: DumpFormat,
    partial: &Path,
    tables: &std::collections::BTreeMap<String, i64>,
    progress: &(dyn Fn(BackupProgress<'_>) + Sync),
) -> Result<(), BackupError> {
    progress(BackupProgress::ReadingBack);
    let checking = Instant::now();
    check_complete(binaries, format, partial, tables, &mut |_| {})
        .map_err(BackupError::Incomplete)?;
    progress(BackupProgress::ReadBack {
        elapsed: checking.elapsed(),
    });
    Ok(())
}

/// A new empty file, 0600 from the start.
fn create_private(path: &Path) -> io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// A new file, 0600 from the start, synced.
fn write_private(path: &Path, text: &str) -> io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
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

/// Removes a file or a directory tree, if there is one.
fn remove_any(path: &Path) {
    let _ = fs::remove_dir_all(path).or_else(|_| fs::remove_file(path));
}

/// The table in PostgreSQL's "query would be affected by row-level security policy for
/// table \"leads\"" (from pg_dump's log or our own count), if that is what `text` says.
fn row_security_table(text: &str) -> Option<String> {
    let (_, rest) = text.split_once("row-level security policy for table ")?;
    let table = rest.trim().trim_matches('"');
    Some(table.split('"').next().unwrap_or(table).to_string())
}

//! `cargo xtask backup`: pg_dump that cannot leave a bad or world-readable file behind,
//! nor replace one.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use backend_schema::dump::backup::{self, BackupOptions, BackupProgress, WrittenBackup};
use backend_schema::dump::destination::Output;
use backend_schema::runner::heads_text;
use backend_schema::PgBinaries;
use xshell::Shell;

use crate::flags::Backup;
use crate::progress::{self, StatusLine};

impl Backup {
    pub(crate) fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let started = Instant::now();
        let target = self.connect.resolve()?;
        eprintln!("database: {}", target.describe());
        let mut client = target.connect("cargo xtask backup")?;
        // Connected first: the server's major version names the client package to install.
        let server_major = backend_schema::drift::server_version_num(&mut client)
            .ok()
            .and_then(|num| u32::try_from(num / 10000).ok());
        let binaries = PgBinaries::locate_clients(server_major)?;

        let format = self.format.format();
        let options = BackupOptions {
            output: match &self.output {
                Some(path) => Output::Exact(path.clone()),
                None => Output::Named {
                    dir: self
                        .output_dir
                        .clone()
                        .unwrap_or_else(|| sh.current_dir().join("backups")),
                    started: std::time::SystemTime::now(),
                },
            },
            format,
            jobs: self.jobs,
            lock_wait_timeout: self.lock_wait_timeout,
        };
        // On a terminal, one line redrawn in place: tables started and bytes written.
        let status = StatusLine::new();
        let tables = AtomicUsize::new(0);
        let written = AtomicU64::new(0);
        let dumping = Instant::now();
        let redraw = || {
            status.show(|| {
                let bytes_part = match written.load(Ordering::Relaxed) {
                    0 => String::new(),
                    n => format!(", {} written", progress::bytes(n)),
                };
                format!(
                    "  {} tables started{bytes_part} ({:.0}s)",
                    tables.load(Ordering::Relaxed),
                    dumping.elapsed().as_secs_f64()
                )
            })
        };
        let written_backup = backup::write_backup(
            &binaries,
            &target.url,
            &mut client,
            &options,
            &|step| match step {
                BackupProgress::MadePrivate { dir, was } => eprintln!(
                    "{} was mode {was:04o}; made it 0700 (backups hold every tenant's data)",
                    dir.display()
                ),
                BackupProgress::Dumping => {
                    eprintln!("dumping with pg_dump ({} format)...", format.flag())
                }
                BackupProgress::Table(_) => {
                    tables.fetch_add(1, Ordering::Relaxed);
                    redraw();
                }
                BackupProgress::Written(bytes) => {
                    written.store(bytes, Ordering::Relaxed);
                    redraw();
                }
                BackupProgress::DumpFinished { elapsed } => {
                    status.clear();
                    eprintln!("pg_dump finished in {:.1}s", elapsed.as_secs_f64())
                }
                BackupProgress::ReadingBack => {
                    eprintln!("reading the dump back in full and hashing it...")
                }
                BackupProgress::ReadBack { elapsed } => {
                    eprintln!("read back and hashed in {:.1}s", elapsed.as_secs_f64())
                }
            },
        );
        status.clear();
        let WrittenBackup { path, manifest } = written_backup?;
        eprintln!(
            "backup written: {} ({} bytes, sha256 {}) in {:.1}s; revision {}; {} tables, {} rows",
            path.display(),
            manifest.size_bytes,
            &manifest.sha256[..16],
            started.elapsed().as_secs_f64(),
            heads_text(&manifest.revision),
            manifest.tables.len(),
            manifest.tables.values().sum::<i64>()
        );
        if self.verify {
            eprintln!("verifying: restoring into a throwaway cluster...");
            backup::verify_backup(&binaries, &path, &manifest, &mut client)?;
            eprintln!("verified: the dump restores, with the same schema and row counts");
        }
        Ok(())
    }
}

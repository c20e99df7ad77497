//! Production's copy for a rehearsal: a fresh `pg_dump` of the source (through the backup
//! code, into a private directory that goes away with the rehearsal) or an existing
//! backup checked as `restore` checks it, restored with its owners and grants into a
//! throwaway cluster by the ordinary role `privileges::RESTORER`, never by its superuser.
//! The source is only read.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::connection::Target;
use crate::database_url::DatabaseUrl;
use crate::dump::archive::script_of;
use crate::dump::backup::{write_backup, BackupOptions};
use crate::dump::destination::Output;
use crate::dump::restore::{check_archive, run_restore, RestoreOptions};
use crate::dump::{extensions_in_script, owner_in_script, DumpFormat, Manifest};
use crate::{PgBinaries, TempCluster};

use super::{privileges, Progress, RehearseError};

/// Where production's copy comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A live database, dumped now with `pg_dump` (read-only).
    Database(Target),
    /// An existing backup (a dump file or directory), checked against its manifest.
    Backup(PathBuf),
}

impl Source {
    /// For messages and the report: the redacted URL or the backup's path.
    pub fn describe(&self) -> String {
        match self {
            Source::Database(target) => target.url.to_string(),
            Source::Backup(path) => path.display().to_string(),
        }
    }
}

/// The name of the copy's database in the throwaway cluster.
pub(crate) const DATABASE: &str = "rehearsal";

/// Restores `source` into a new throwaway cluster, as database [`DATABASE`].
pub(crate) fn copy(
    binaries: &PgBinaries,
    source: &Source,
    progress: &(dyn Fn(Progress<'_>) + Sync),
) -> Result<TempCluster, RehearseError> {
    // The fresh dump's directory lives until the restore is done, then goes.
    let dumped;
    let (format, path, manifest) = match source {
        Source::Database(target) => {
            dumped = dump(binaries, target, progress)?;
            (DumpFormat::Custom, dumped.1.clone(), Some(dumped.2.clone()))
        }
        Source::Backup(path) => {
            let (format, manifest) = check(binaries, path, progress)?;
            (format, path.clone(), manifest)
        }
    };
    // Refused by name before a cluster starts: roles that would give the copy superuser
    // rights.
    let script = script_of(binaries, format, &path)?;
    // The database's owner as production has it: the owner of the objects in `public`
    // there, whose CREATE on it comes from owning the database (pg_database_owner).
    let database_owner = manifest
        .and_then(|m| m.database_owner)
        .or_else(|| owner_in_script(&script));
    let roles = privileges::member_roles(&script, database_owner.as_deref())?;
    let cluster = TempCluster::start_with_superuser(privileges::SUPERUSER)?;
    privileges::check_extensions(
        &mut cluster.client("postgres")?,
        &extensions_in_script(&script),
    )?;
    privileges::create_roles(&cluster, &roles, DATABASE, database_owner.as_deref())?;
    progress(Progress::Restoring);
    let started = Instant::now();
    let url = DatabaseUrl::parse(
        &cluster.url_as(privileges::RESTORER, DATABASE),
        "the rehearsal's throwaway cluster",
    )?;
    run_restore(binaries, format, &path, &url, &RestoreOptions::default()).map_err(|err| {
        match privileges::needs_superuser(&err.to_string()) {
            true => RehearseError::NeedsSuperuser(err),
            false => RehearseError::Restore(err),
        }
    })?;
    progress(Progress::Restored {
        elapsed: started.elapsed(),
    });
    Ok(cluster)
}

/// Prefix of a fresh dump's private directory; it starts like a cluster's, so the
/// cluster sweep removes it too.
pub(crate) const LEFTOVER_PREFIX: &str = "bsc-rehearsal-";

/// A fresh custom-format dump of the source in a private temporary directory.
fn dump(
    binaries: &PgBinaries,
    target: &Target,
    progress: &(dyn Fn(Progress<'_>) + Sync),
) -> Result<(tempfile::TempDir, PathBuf, Manifest), RehearseError> {
    // The dump is production's data: a rehearsal killed before its destructor ran
    // leaves it behind, so each dump records its owner and the next rehearsal removes
    // the dumps whose owner is gone (the same sweep as the throwaway clusters').
    let root = std::env::temp_dir();
    for path in crate::cluster::reaper::sweep(&root) {
        progress(Progress::RemovedLeftover { path: &path });
    }
    let dir = tempfile::Builder::new()
        .prefix(LEFTOVER_PREFIX)
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(&root)?;
    crate::cluster::reaper::write_owner(dir.path())?;
    let path = dir.path().join("source.dump");
    let mut client = target.connect("cargo xtask rehearse")?;
    progress(Progress::Dumping);
    let options = BackupOptions {
        output: Output::Exact(path.clone()),
        format: DumpFormat::Custom,
        jobs: 1,
        lock_wait_timeout: Duration::from_secs(30),
    };
    // On a large database the tables pg_dump is writing are the progress worth showing.
    let written = write_backup(binaries, &target.url, &mut client, &options, &|step| {
        if let crate::dump::backup::BackupProgress::Table(table) = step {
            progress(Progress::Dumped { table });
        }
    })?;
    progress(Progress::DumpFinished {
        bytes: written.manifest.size_bytes,
    });
    Ok((dir, written.path, written.manifest))
}

/// An existing backup, checked as `restore` checks it: its hash against the manifest
/// beside it (when there is one), then a full read.
fn check(
    binaries: &PgBinaries,
    path: &Path,
    progress: &(dyn Fn(Progress<'_>) + Sync),
) -> Result<(DumpFormat, Option<Manifest>), RehearseError> {
    let format = DumpFormat::detect(path).map_err(|source| RehearseError::Backup {
        path: path.to_path_buf(),
        source,
    })?;
    let manifest_path = Manifest::path_for(path);
    let manifest = match manifest_path.exists() {
        true => Some(
            Manifest::read(&manifest_path).map_err(|source| RehearseError::Backup {
                path: manifest_path.clone(),
                source,
            })?,
        ),
        false => None,
    };
    progress(Progress::CheckingBackup {
        manifest: manifest.is_some(),
    });
    check_archive(binaries, format, path, manifest.as_ref(), &mut |_| {})?;
    Ok((format, manifest))
}

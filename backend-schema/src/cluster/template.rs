//! The cache of initdb'd data directories that new clusters are copied from.
//!
//! `initdb` takes about a second here; copying its result takes a few tens of
//! milliseconds. The cache is keyed by server version and settings, so a new
//! PostgreSQL or a changed setting gets a fresh template instead of a stale one.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::os_user::RunAs;
use super::{ClusterError, PgBinaries};

/// Arguments every cluster is initialised with (and `--username`, the owner each caller
/// names). Part of the cache key.
pub(crate) const INITDB_ARGS: &[&str] = &[
    // Local connections only reach a socket in a 0700 directory (see SERVER_SETTINGS);
    // TCP, which every local account can reach, is refused unless a caller opens it.
    "--auth-local=trust",
    "--auth-host=reject",
    "--encoding=UTF8",
    "--no-locale",
    "--no-sync",
    "--no-instructions",
];

/// Where templates live: `BACKEND_SCHEMA_CACHE_DIR`, else the workspace's `target/`.
pub fn cache_root() -> PathBuf {
    match std::env::var_os("BACKEND_SCHEMA_CACHE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("target")
            .join("pg-templates"),
    }
}

/// The cache entry name for these binaries and settings.
pub(crate) fn cache_key(
    binaries: &PgBinaries,
    server_settings: &[(&str, &str)],
    owner: &str,
) -> String {
    let mut hasher = Sha256::new();
    hasher.update(format!("--username={owner}\0").as_bytes());
    hasher.update(binaries.bin_dir().as_os_str().as_encoded_bytes());
    hasher.update(binaries.version().as_bytes());
    for arg in INITDB_ARGS {
        hasher.update(arg.as_bytes());
        hasher.update([0]);
    }
    for (name, value) in server_settings {
        hasher.update(format!("{name}={value}\0").as_bytes());
    }
    let digest = hasher.finalize();
    let short = crate::text::hex(&digest[..6]);
    format!("pg{}-{short}", binaries.version())
}

/// Puts a fresh data directory at `data_dir`, owned by `run_as`: a copy of the
/// cached template when there is one, else by running `initdb` (and caching it).
/// Returns whether the cache was warm.
pub(crate) fn provision(
    binaries: &PgBinaries,
    run_as: RunAs,
    key: &str,
    data_dir: &Path,
    owner: &str,
) -> Result<bool, ClusterError> {
    let template = cache_root().join(key);
    if template.join("PG_VERSION").is_file() {
        copy_tree(&template, data_dir, run_as).map_err(|source| ClusterError::Io {
            action: format!(
                "copy template {} to {}",
                template.display(),
                data_dir.display()
            ),
            source,
        })?;
        return Ok(true);
    }
    run_initdb(binaries, run_as, data_dir, owner)?;
    // Best effort: a cache we cannot write only costs speed.
    let _ = store(data_dir, &template);
    Ok(false)
}

fn run_initdb(
    binaries: &PgBinaries,
    run_as: RunAs,
    data_dir: &Path,
    owner: &str,
) -> Result<(), ClusterError> {
    let mut args: Vec<std::ffi::OsString> = vec![
        "-D".into(),
        data_dir.into(),
        format!("--username={owner}").into(),
    ];
    args.extend(INITDB_ARGS.iter().map(Into::into));
    let output = duct::cmd(binaries.tool("initdb"), args)
        .before_spawn(move |command| {
            run_as.apply(command, false);
            Ok(())
        })
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .run()
        .map_err(|source| ClusterError::Io {
            action: format!("run {}", binaries.tool("initdb").display()),
            source,
        })?;
    if !output.status.success() {
        return Err(ClusterError::InitdbFailed {
            data_dir: data_dir.to_path_buf(),
            output: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    Ok(())
}

/// Copies the data dir into the cache under a private name, then renames it into place,
/// so a concurrent reader never sees a half-written template.
fn store(data_dir: &Path, template: &Path) -> io::Result<()> {
    let staging = staging_beside(template)?;
    let staged = staging.path().join("data");
    let me = RunAs {
        // SAFETY: geteuid/getegid cannot fail.
        uid: unsafe { libc::geteuid() },
        gid: unsafe { libc::getegid() },
    };
    copy_tree(data_dir, &staged, me)?;
    match fs::rename(&staged, template) {
        Ok(()) => Ok(()),
        // Another process stored the same template first: theirs is as good as ours.
        Err(_) if template.join("PG_VERSION").is_file() => Ok(()),
        Err(err) => Err(err),
    }
}

/// Makes `into` a directory holding a copy of `data_dir` as `data` (its files keep
/// their owner: the server's account) and the files `beside`: staged next to it, then
/// renamed over whatever was there, so a reader sees the old one or the new one, never
/// half of either.
pub(crate) fn replace_with_copy(
    data_dir: &Path,
    into: &Path,
    beside: &[(&str, &[u8])],
) -> io::Result<()> {
    let staging = staging_beside(into)?;
    let staged = staging.path().join("new");
    fs::create_dir(&staged)?;
    fs::set_permissions(&staged, fs::Permissions::from_mode(0o700))?;
    copy_tree(data_dir, &staged.join("data"), RunAs::owner_of(data_dir)?)?;
    for (name, bytes) in beside {
        fs::write(staged.join(name), bytes)?;
    }
    let old = staging.path().join("old");
    match fs::rename(into, &old) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    fs::rename(&staged, into)
    // `staging` goes, and the old copy with it.
}

/// A private directory beside `entry` to build its next version in, removed when
/// dropped. Stagings of runs that were killed (SIGKILL, a power loss) are removed first:
/// one older than `STALE_STAGING` is no run's any more (a copy takes seconds), and each
/// can be the size of a data dir.
fn staging_beside(entry: &Path) -> io::Result<tempfile::TempDir> {
    let parent = entry.parent().expect("a cache entry has a parent");
    fs::create_dir_all(parent)?;
    for old in fs::read_dir(parent)?.flatten() {
        let stale = old
            .metadata()
            .and_then(|meta| meta.modified())
            .is_ok_and(|at| at.elapsed().is_ok_and(|age| age > STALE_STAGING));
        if stale && old.file_name().to_string_lossy().starts_with(STAGING) {
            let _ = fs::remove_dir_all(old.path());
        }
    }
    tempfile::Builder::new().prefix(STAGING).tempdir_in(parent)
}

const STAGING: &str = ".staging-";
const STALE_STAGING: std::time::Duration = std::time::Duration::from_secs(3600);

/// Recursive copy preserving modes, giving every entry to `owner`. The directories are
/// made first, then the files are copied by a thread per core: a data dir is a couple
/// of thousand small files, and copying them is system time a second core halves.
pub(crate) fn copy_tree(from: &Path, to: &Path, owner: RunAs) -> io::Result<()> {
    let mut files = Vec::new();
    make_dirs(from, to, owner, &mut files)?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    let chunk = files.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let copying: Vec<_> = files
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    for (source, target) in part {
                        fs::copy(source, target)?;
                        owner.chown(target)?;
                    }
                    Ok::<(), io::Error>(())
                })
            })
            .collect();
        copying
            .into_iter()
            .try_for_each(|thread| thread.join().expect("a copying thread does not panic"))
    })
}

/// Makes `to` and every directory under `from` again there, and lists the files to copy.
fn make_dirs(
    from: &Path,
    to: &Path,
    owner: RunAs,
    files: &mut Vec<(PathBuf, PathBuf)>,
) -> io::Result<()> {
    fs::create_dir(to)?;
    fs::set_permissions(to, fs::metadata(from)?.permissions())?;
    owner.chown(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            make_dirs(&entry.path(), &target, owner, files)?;
        } else {
            files.push((entry.path(), target));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_staging_left_by_a_killed_run_goes_and_a_recent_one_stays() {
        let dir = tempfile::tempdir().unwrap();
        let (old, recent) = (
            dir.path().join(".staging-old"),
            dir.path().join(".staging-new"),
        );
        for staging in [&old, &recent] {
            fs::create_dir_all(staging.join("data")).unwrap();
        }
        let hours_ago = std::time::SystemTime::now() - 2 * STALE_STAGING;
        fs::File::open(&old)
            .unwrap()
            .set_modified(hours_ago)
            .unwrap();
        let mine = staging_beside(&dir.path().join("entry")).unwrap();
        assert!(!old.exists());
        assert!(recent.exists() && mine.path().exists());
    }
}

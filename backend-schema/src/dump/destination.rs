//! Where a backup lands without ever replacing anything: the directory (created 0700,
//! or made 0700 when it is ours, or refused when another account could swap what lands
//! in it), the names to try, and the rename that fails instead of replacing whatever
//! holds the name, a dangling symlink included.

use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::DumpFormat;
use crate::cluster::account_name;

/// Where a backup goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Exactly this path (`--output`): a name already taken is an error.
    Exact(PathBuf),
    /// `backup_YYYYMMDD_HHMMSS.<ext>` (UTC, the time the backup started) in this
    /// directory, or `..._2.<ext>`, `..._3.<ext>`, ... when that name is taken. The
    /// directory only holds backups, so it is kept 0700.
    Named { dir: PathBuf, started: SystemTime },
}

/// How many `_N` suffixes a default name tries before giving up.
const MAX_SUFFIX: u32 = 100;

impl Output {
    /// The directory the backup goes in.
    pub fn dir(&self) -> Option<&Path> {
        match self {
            Output::Exact(path) => path.parent().map(|p| {
                if p.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    p
                }
            }),
            Output::Named { dir, .. } => Some(dir),
        }
    }

    /// The names to try, in order: one for `Exact`, the stamped name and its
    /// suffixed variants for `Named`.
    pub fn candidates(&self, format: DumpFormat) -> Vec<PathBuf> {
        match self {
            Output::Exact(path) => vec![path.clone()],
            Output::Named { dir, started } => {
                let stamp = default_stamp(*started);
                let ext = format.extension();
                std::iter::once(dir.join(format!("backup_{stamp}.{ext}")))
                    .chain((2..=MAX_SUFFIX).map(|n| dir.join(format!("backup_{stamp}_{n}.{ext}"))))
                    .collect()
            }
        }
    }
}

/// `YYYYMMDD_HHMMSS` (UTC).
fn default_stamp(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at)
        .to_string()
        .replace(['-', ':'], "")
        .replace('T', "_")
        .trim_end_matches('Z')
        .to_string()
}

/// What the directory `prepare_dir` checks is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirUse {
    /// The directory of default-named backups (`--output-dir`): ours, kept 0700.
    Backups,
    /// The directory of an explicit `--output`: ours or root's, and not one where others
    /// could rename or replace the backup (world-writable without the sticky bit).
    Output,
}

/// What `prepare_dir` did to make the directory private.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirState {
    /// It was there, 0700 already (or an `--output` directory, left as it is).
    AsItWas,
    /// It did not exist: created 0700.
    Created,
    /// It was ours and others could reach it: made 0700 (its mode before).
    MadePrivate { was: u32 },
}

#[derive(Debug, thiserror::Error)]
pub enum DirError {
    #[error("cannot create {}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is not a directory", .0.display())]
    NotADirectory(PathBuf),
    #[error(
        "{} is mode {mode:04o} and belongs to {owner} (uid {uid}), another account, which could read or replace the backups in it; no backup was written. \
         Choose a directory of your own with --output-dir (a new one is created 0700), or have it given to {me} (`chown {me} {}` as root)",
        dir.display(),
        dir.display()
    )]
    NotOurs {
        dir: PathBuf,
        mode: u32,
        owner: String,
        uid: u32,
        me: String,
    },
    #[error(
        "{} is mode {mode:04o}, a directory shared with other accounts: backups need one of \
         their own; choose another --output-dir (e.g. {}, which is created 0700)",
        dir.display(),
        dir.join("backups").display()
    )]
    Shared { dir: PathBuf, mode: u32 },
    #[error(
        "{} (the directory of --output) belongs to {owner} (uid {uid}), another account, which could read or replace the backup there; no backup was written. \
         Choose an --output in a directory of your own (or root's)",
        dir.display()
    )]
    OutputDirNotOurs {
        dir: PathBuf,
        owner: String,
        uid: u32,
    },
    #[error(
        "{} (the directory of --output) is mode {mode:04o} and not sticky: {who} could rename or replace the backup in it; no backup was written. \
         Choose an --output in a directory others cannot write, or a sticky one like /tmp (or run `chmod go-w {}`)",
        dir.display(),
        dir.display(),
        who = if mode & 0o002 != 0 { "any account" } else { "every account in its group" }
    )]
    OutputDirWritable { dir: PathBuf, mode: u32 },
    #[error(
        "{} (a parent of the backup's directory) is mode {mode:04o} and not sticky: {who} could rename the directory below it away and put its own in its place; no backup was written. \
         Choose a directory whose parents others cannot write (or run `chmod go-w {}`)",
        parent.display(),
        parent.display(),
        who = if mode & 0o002 != 0 { "any account" } else { "every account in its group" }
    )]
    ParentWritable { parent: PathBuf, mode: u32 },
}

/// Makes sure `dir` exists and no other account (but root) could change what lands in
/// it. A missing one is created 0700. The directory of default-named backups must be
/// ours; one others can reach is made 0700, or refused when it is a shared (sticky)
/// directory like `/tmp`. The directory of an `--output` must be ours or root's, and
/// not writable by its group or everyone unless sticky (where only a file's owner may
/// rename it).
pub fn prepare_dir(dir: &Path, use_of_dir: DirUse) -> Result<DirState, DirError> {
    let create = |source| DirError::Create {
        path: dir.to_path_buf(),
        source,
    };
    if let Some((parent, mode)) = writable_parent(dir) {
        return Err(DirError::ParentWritable { parent, mode });
    }
    let metadata = match fs::metadata(dir) {
        Ok(metadata) => metadata,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(create)?;
            // Whatever the umask took away, and whatever a racing creator chose.
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(create)?;
            return Ok(DirState::Created);
        }
        Err(err) => return Err(create(err)),
    };
    if !metadata.is_dir() {
        return Err(DirError::NotADirectory(dir.to_path_buf()));
    }
    let mode = metadata.mode() & 0o7777;
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    let uid = metadata.uid();
    let sticky = mode & libc::S_ISVTX != 0;
    let dir = dir.to_path_buf();
    if use_of_dir == DirUse::Output {
        if uid != me && uid != 0 {
            return Err(DirError::OutputDirNotOurs {
                dir,
                owner: account_name(uid),
                uid,
            });
        }
        // A group is other accounts too: one of them could swap the backup as well.
        if mode & 0o022 != 0 && !sticky {
            return Err(DirError::OutputDirWritable { dir, mode });
        }
        return Ok(DirState::AsItWas);
    }
    if uid != me {
        return Err(DirError::NotOurs {
            dir,
            mode,
            owner: account_name(uid),
            uid,
            me: account_name(me),
        });
    }
    if mode & 0o077 == 0 {
        return Ok(DirState::AsItWas);
    }
    if sticky {
        return Err(DirError::Shared { dir, mode });
    }
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(|source| {
        DirError::Create {
            path: dir.clone(),
            source,
        }
    })?;
    Ok(DirState::MadePrivate { was: mode })
}

/// The first existing directory above `dir` that its group or everyone can write and
/// that is not sticky: whoever can write it can swap `dir` itself after every check of
/// `dir`. Both the parents as written and those of where symlinks lead count.
fn writable_parent(dir: &Path) -> Option<(PathBuf, u32)> {
    let absolute = std::env::current_dir().ok()?.join(dir);
    let mut parents: Vec<PathBuf> = Vec::new();
    for at in absolute.ancestors() {
        if at != absolute {
            parents.push(at.to_path_buf());
        }
        if let Ok(real) = fs::canonicalize(at) {
            parents.extend(real.ancestors().skip(1).map(Path::to_path_buf));
        }
    }
    parents.into_iter().find_map(|parent| {
        let mode = fs::metadata(&parent).ok()?.mode() & 0o7777;
        (mode & 0o022 != 0 && mode & libc::S_ISVTX == 0).then_some((parent, mode))
    })
}

/// Whether anything at all holds `path`: a file, a directory, or a symlink, dangling or not.
pub fn is_taken(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

/// Renames `from` to `to` only if nothing holds `to`; otherwise fails with
/// `AlreadyExists` and leaves both as they were. `renameat2(RENAME_NOREPLACE)` where
/// the file system has it; else `link` and `unlink` for a file (atomic: `link` never
/// replaces), and a checked `rename` for a directory (which `link` cannot move).
pub fn rename_no_replace(from: &Path, to: &Path) -> io::Result<()> {
    let from_c = c_path(from)?;
    let to_c = c_path(to)?;
    // SAFETY: both are NUL-terminated paths that outlive the call.
    let renamed = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from_c.as_ptr(),
            libc::AT_FDCWD,
            to_c.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if renamed == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if !matches!(err.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) {
        return Err(err);
    }
    rename_no_replace_without_renameat2(from, to)
}

/// For file systems without `RENAME_NOREPLACE`.
fn rename_no_replace_without_renameat2(from: &Path, to: &Path) -> io::Result<()> {
    if fs::symlink_metadata(from)?.is_dir() {
        if is_taken(to) {
            return Err(io::ErrorKind::AlreadyExists.into());
        }
        // rename(2) onto a non-empty directory or a non-directory fails; only an empty
        // directory created since the check above could be replaced.
        fs::rename(from, to)
    } else {
        fs::hard_link(from, to)?;
        fs::remove_file(from)
    }
}

fn c_path(path: &Path) -> io::Result<std::ffi::CString> {
    std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rename_never_replaces_a_file_a_directory_or_a_dangling_symlink() {
        never_replaces(rename_no_replace);
        never_replaces(rename_no_replace_without_renameat2);
    }

    #[test]
    fn a_directory_is_never_moved_over_a_taken_name_either() {
        for rename in [rename_no_replace, rename_no_replace_without_renameat2] {
            let dir = tempfile::tempdir().unwrap();
            let from = dir.path().join("from.dir");
            fs::create_dir(&from).unwrap();
            let file = dir.path().join("file");
            fs::write(&file, "old").unwrap();
            let dangling = dir.path().join("dangling");
            std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
            for taken in [&file, &dangling] {
                let err = rename(&from, taken).unwrap_err();
                assert_eq!(err.kind(), io::ErrorKind::AlreadyExists, "{taken:?}");
            }
            assert!(from.is_dir());
            rename(&from, &dir.path().join("free.dir")).unwrap();
            assert!(dir.path().join("free.dir").is_dir());
        }
    }

    fn never_replaces(rename: fn(&Path, &Path) -> io::Result<()>) {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("from");
        let file = dir.path().join("file");
        let empty_dir = dir.path().join("empty");
        let dangling = dir.path().join("dangling");
        fs::write(&from, "new").unwrap();
        fs::write(&file, "old").unwrap();
        fs::create_dir(&empty_dir).unwrap();
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
        for taken in [&file, &empty_dir, &dangling] {
            let err = rename(&from, taken).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::AlreadyExists, "{taken:?}");
            assert_eq!(fs::read_to_string(&from).unwrap(), "new");
        }
        assert_eq!(fs::read_to_string(&file).unwrap(), "old");
        assert!(fs::read_link(&dangling).is_ok());
        let free = dir.path().join("free");
        rename(&from, &free).unwrap();
        assert!(!is_taken(&from));
        assert_eq!(fs::read_to_string(&free).unwrap(), "new");
    }

    #[test]
    fn default_names_are_stamped_in_utc_and_suffixed_when_taken() {
        let started = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_790_000_000);
        let output = Output::Named {
            dir: PathBuf::from("backups"),
            started,
        };
        let names = output.candidates(DumpFormat::Custom);
        assert_eq!(names[0], Path::new("backups/backup_20260921_141320.dump"));
        assert_eq!(names[1], Path::new("backups/backup_20260921_141320_2.dump"));
        assert_eq!(names.len(), MAX_SUFFIX as usize);
        assert_eq!(
            Output::Exact(PathBuf::from("b.sql")).candidates(DumpFormat::Plain),
            [Path::new("b.sql")]
        );
    }
}

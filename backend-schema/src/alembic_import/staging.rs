//! The hidden directory an import is staged in beside its destination, and the sweep of
//! the ones a killed import left: they hold a half-written chain nobody would find.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use super::ImportError;

/// Staging directories are `.import-alembic-PID-RANDOM`: the pid says whether their
/// import still runs.
const PREFIX: &str = ".import-alembic-";

/// A hidden directory beside the destination the migrations are written into; removed
/// unless [`Staging::finish`] renames its chain into place.
pub(super) struct Staging {
    _dir: tempfile::TempDir,
    pub(super) chain: PathBuf,
}

impl Staging {
    pub(super) fn new(into: &Path) -> Result<Staging, ImportError> {
        let parent = parent_of(into);
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ImportError::Io { path, source }
        };
        std::fs::create_dir_all(&parent).map_err(io(&parent))?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("{PREFIX}{}-", std::process::id()))
            .tempdir_in(&parent)
            .map_err(io(&parent))?;
        let chain = dir.path().join("migrations");
        std::fs::create_dir(&chain).map_err(io(&chain))?;
        Ok(Staging { _dir: dir, chain })
    }

    /// Renames the chain to `into`: never over anything but an empty directory (which
    /// `rename` itself refuses once something appears in it).
    pub(super) fn finish(self, into: &Path) -> Result<(), ImportError> {
        let io = |source| ImportError::Io {
            path: into.to_path_buf(),
            source,
        };
        if into.is_dir() {
            std::fs::rename(&self.chain, into).map_err(io)
        } else {
            crate::dump::destination::rename_no_replace(&self.chain, into).map_err(io)
        }
    }
}

/// The parent directory staging for `into` happens in.
fn parent_of(into: &Path) -> PathBuf {
    match into.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Removes, beside `into`, the staging directories a killed import left (ours by uid, a
/// directory and not a link, named by us, their process gone) and returns them, for the
/// command to say so. Other files, whatever their names, stay.
pub fn sweep_staging(into: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(parent_of(into)) else {
        return Vec::new();
    };
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    let mut swept = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(pid_of) else {
            continue;
        };
        let path = entry.path();
        let ours = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir() && m.uid() == me);
        let gone = pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists();
        if ours && gone && std::fs::remove_dir_all(&path).is_ok() {
            swept.push(path);
        }
    }
    swept
}

/// The pid in a staging directory's name, if `name` is one of ours.
fn pid_of(name: &str) -> Option<u32> {
    let (pid, random) = name.strip_prefix(PREFIX)?.split_once('-')?;
    let random_ok = !random.is_empty() && random.bytes().all(|b| b.is_ascii_alphanumeric());
    random_ok.then(|| pid.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_own_names_are_recognised() {
        assert_eq!(pid_of(".import-alembic-42-Ab3xYz"), Some(42));
        for name in [
            ".import-alembic-Ab3xYz",
            ".import-alembic-42-",
            ".import-alembic-x-Ab3xYz",
            "import-alembic-42-Ab3xYz",
            ".import-alembic-42-a/b",
        ] {
            assert_eq!(pid_of(name), None, "{name}");
        }
    }
}

//! The private directory a backup is built in, beside its final name: made by one
//! `mkdir` of a fresh random name (0700, ours, or an error), so no other account can
//! plant a file or a link where pg_dump writes, even in a shared directory like `/tmp`;
//! and the sweep of a killed backup's, which removes only directories that are ours,
//! named by us, and whose process is gone.

use std::fs;
use std::io::{self, Read as _};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

/// Every staging directory's name starts so; then our pid, `-`, and random hex.
const PREFIX: &str = ".backup-partial-";

/// A staging directory; removed with whatever is still in it when dropped.
#[derive(Debug)]
pub struct Staging {
    dir: PathBuf,
}

impl Staging {
    /// A new directory in `parent` that nobody else has held: `mkdir` fails rather than
    /// reuse a name, so what it makes is ours, and 0700 from the start.
    pub fn create(parent: &Path) -> io::Result<Staging> {
        for _ in 0..16 {
            let dir = parent.join(format!("{PREFIX}{}-{}", std::process::id(), random_hex()?));
            match fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => {
                    let staging = Staging { dir };
                    staging.check_ours()?;
                    return Ok(staging);
                }
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(err) => return Err(err),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "no free name for a staging directory",
        ))
    }

    /// Opens what `mkdir` made without following a link and makes sure it is ours and
    /// 0700 (the umask may have taken owner bits away; nothing may add others').
    fn check_ours(&self) -> io::Result<()> {
        let dir = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(&self.dir)?;
        if dir.metadata()?.uid() != euid() {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{} is not ours", self.dir.display()),
            ));
        }
        dir.set_permissions(fs::Permissions::from_mode(0o700))
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn euid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

fn random_hex() -> io::Result<String> {
    let mut bytes = [0u8; 8];
    fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(crate::text::hex(&bytes))
}

/// The pid in a staging directory's name, if `name` is one of ours.
fn pid_of(name: &str) -> Option<u32> {
    let (pid, random) = name.strip_prefix(PREFIX)?.split_once('-')?;
    let hex = random.len() == 16 && random.bytes().all(|b| b.is_ascii_hexdigit());
    hex.then(|| pid.parse().ok()).flatten()
}

/// Removes the staging directories in `parent` a killed backup left: ours (our uid, a
/// directory, not a link), named by us, and whose process is gone. Anyone else's
/// files, whatever their names, stay.
pub fn sweep(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(pid_of) else {
            continue;
        };
        let path = entry.path();
        let ours = fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir() && m.uid() == euid());
        let gone = pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists();
        if ours && gone {
            let _ = fs::remove_dir_all(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_own_names_are_recognised() {
        assert_eq!(pid_of(".backup-partial-42-0011223344aabbcc"), Some(42));
        for name in [
            ".b.dump.partial-42",
            ".backup-partial-42",
            ".backup-partial-42-xyz",
            ".backup-partial-x-0011223344aabbcc",
            "backup-partial-42-0011223344aabbcc",
        ] {
            assert_eq!(pid_of(name), None, "{name}");
        }
    }

    #[test]
    fn a_staging_directory_is_new_private_and_gone_when_dropped() {
        let parent = tempfile::tempdir().unwrap();
        let staging = Staging::create(parent.path()).unwrap();
        let path = staging.path().to_path_buf();
        let metadata = fs::symlink_metadata(&path).unwrap();
        assert_eq!(metadata.mode() & 0o7777, 0o700);
        assert_eq!(
            pid_of(path.file_name().unwrap().to_str().unwrap()),
            Some(std::process::id())
        );
        fs::write(path.join("x"), "").unwrap();
        drop(staging);
        assert!(!path.exists());
    }
}

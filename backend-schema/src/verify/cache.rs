//! `verify`'s results kept per revision (in `target/verify-cache/` for the xtask), so a
//! re-run re-verifies only from the first revision whose key changed. A revision's key
//! chains every migration before it in the stairway's order (sibling branches run in
//! sequence, so its state depends on them too) with the server version, `roles.toml`,
//! `lint.toml` and the library's code ID; the whole-chain checks are kept under the
//! last revision's key. A file that cannot be read, is of another format or belongs to
//! another migrations directory is ignored with a note, never trusted.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Finding, RevisionReport};
use crate::graph::RevisionGraph;
use crate::lint::LINT_FILE;
use crate::verify::roles::ROLES_FILE;

/// Bumped whenever what a cached revision holds, or how its key is made, changes.
const FORMAT: &str = "backend-schema verify cache 1";

/// A hash of the library's sources and lock file (`build.rs`): the seeding, the runner
/// and the comparisons are code, so another build misses every key.
pub const CODE_ID: &str = env!("BACKEND_SCHEMA_CODE_ID");

/// One revision's results, and what its step of the stairway added to the run-wide
/// lists (replayed in order, so the deduplication a full run does comes out the same).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CachedRevision {
    pub key: String,
    pub report: RevisionReport,
    pub warnings: Vec<String>,
    pub findings: Vec<Finding>,
    pub fail_closed: Vec<String>,
}

/// The failures of base -> head -> base in one go and of the merge orders.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CachedChain {
    pub key: String,
    pub failures: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct CacheFile {
    format: String,
    /// The migrations directory the results are of.
    migrations: String,
    revisions: Vec<CachedRevision>,
    chain: Option<CachedChain>,
}

/// The cache of one migrations directory, as read at the start of a run.
#[derive(Debug)]
pub(crate) struct Cache {
    path: PathBuf,
    migrations: String,
    revisions: HashMap<String, CachedRevision>,
    chain: Option<CachedChain>,
    /// Why the file was ignored, when it was.
    pub note: Option<String>,
}

impl Cache {
    /// The cache of `migrations` in `cache_dir`; one that cannot be trusted is empty
    /// and says why in `note`.
    pub fn open(cache_dir: &Path, migrations: &Path) -> Cache {
        let migrations_name = migrations
            .canonicalize()
            .unwrap_or_else(|_| migrations.to_path_buf())
            .display()
            .to_string();
        let name = &hex(&Sha256::digest(migrations_name.as_bytes()))[..16];
        let path = cache_dir.join(format!("{name}.json"));
        let mut cache = Cache {
            path,
            migrations: migrations_name,
            revisions: HashMap::new(),
            chain: None,
            note: None,
        };
        let bytes = match read_own(&cache.path) {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(why)) => {
                cache.note = Some(format!(
                    "the cache file {} {why}: ignored (whoever can write it could make verify pass what a full run fails), every revision verified now",
                    cache.path.display()
                ));
                return cache;
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return cache,
            Err(err) => {
                cache.note = Some(format!(
                    "cannot read the cache file {} ({err}): ignored, every revision verified now",
                    cache.path.display()
                ));
                return cache;
            }
        };
        let file: CacheFile = match serde_json::from_slice(&bytes) {
            Ok(file) => file,
            Err(err) => {
                cache.note = Some(format!(
                    "the cache file {} is not a verify cache ({err}): ignored, every revision verified now",
                    cache.path.display()
                ));
                return cache;
            }
        };
        if file.format != FORMAT {
            cache.note = Some(format!(
                "the cache file {} is of another format ({:?}, this build writes {FORMAT:?}): ignored, every revision verified now",
                cache.path.display(),
                file.format
            ));
        } else if file.migrations != cache.migrations {
            cache.note = Some(format!(
                "the cache file {} holds the results of {}, not of {}: ignored, every revision verified now",
                cache.path.display(),
                file.migrations,
                cache.migrations
            ));
        } else {
            cache.revisions = file
                .revisions
                .into_iter()
                .map(|r| (r.key.clone(), r))
                .collect();
            cache.chain = file.chain;
        }
        cache
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the stairway databases of this migrations directory are kept between runs
    /// (`kept`).
    pub fn kept_dir(&self) -> PathBuf {
        self.path.with_extension("kept")
    }

    pub fn revision(&self, key: &str) -> Option<&CachedRevision> {
        self.revisions.get(key)
    }

    pub fn chain(&self, key: &str) -> Option<&CachedChain> {
        self.chain.as_ref().filter(|c| c.key == key)
    }

    /// Replaces the file with this run's results: written beside it and renamed over
    /// it, so a reader (another verify at the same time) sees one whole file or the
    /// other.
    pub fn save(
        &self,
        revisions: Vec<CachedRevision>,
        chain: Option<CachedChain>,
    ) -> std::io::Result<()> {
        let dir = self
            .path
            .parent()
            .expect("the cache file is in a directory");
        std::fs::create_dir_all(dir)?;
        let file = CacheFile {
            format: FORMAT.to_string(),
            migrations: self.migrations.clone(),
            revisions,
            chain,
        };
        let mut temp = tempfile::NamedTempFile::new_in(dir)?;
        temp.write_all(&serde_json::to_vec(&file).map_err(std::io::Error::other)?)?;
        temp.as_file().sync_all()?;
        temp.persist(&self.path).map_err(|e| e.error)?;
        Ok(())
    }
}

/// The file's bytes when this user owns it and no one else may write it; otherwise why
/// not. Opened without following a symbolic link, and checked on the open handle, so
/// the file checked is the file read.
pub(crate) fn read_own(path: &Path) -> std::io::Result<Result<Vec<u8>, String>> {
    use std::io::Read as _;
    use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
    let mut file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Err(err) if err.raw_os_error() == Some(libc::ELOOP) => {
            return Ok(Err("is a symbolic link".into()))
        }
        opened => opened?,
    };
    let meta = file.metadata()?;
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Ok(Err(format!(
            "belongs to another user (uid {}, this one is {me})",
            meta.uid()
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Ok(Err(format!(
            "may be written by other users (mode {:o})",
            meta.mode() & 0o7777
        )));
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(Ok(bytes))
}

/// Each revision's key, in the stairway's order: everything before it and itself.
pub(crate) fn keys(graph: &RevisionGraph, server_version: &str) -> Vec<String> {
    let mut base = Sha256::new();
    field(&mut base, FORMAT.as_bytes());
    field(&mut base, CODE_ID.as_bytes());
    field(&mut base, server_version.as_bytes());
    for file in [ROLES_FILE, LINT_FILE] {
        // A file that is absent differs from every content, the empty one included.
        match std::fs::read(graph.dir().join(file)) {
            Ok(bytes) => {
                field(&mut base, b"present");
                field(&mut base, &bytes);
            }
            Err(_) => field(&mut base, b"absent"),
        }
    }
    let mut previous = hex(&base.finalize());
    let mut keys = Vec::new();
    for m in graph.migrations() {
        let mut hash = Sha256::new();
        field(&mut hash, previous.as_bytes());
        field(&mut hash, m.revision.as_bytes());
        field(&mut hash, m.parents.join(" ").as_bytes());
        field(&mut hash, m.branch_labels.join(" ").as_bytes());
        field(&mut hash, m.message.as_bytes());
        field(&mut hash, &[u8::from(m.transactional)]);
        field(&mut hash, m.dir.display().to_string().as_bytes());
        field(&mut hash, m.up.as_bytes());
        field(&mut hash, m.down.as_bytes());
        previous = hex(&hash.finalize());
        keys.push(previous.clone());
    }
    keys
}

/// Length-prefixed, so that no two lists of fields hash alike.
fn field(hash: &mut Sha256, bytes: &[u8]) {
    hash.update((bytes.len() as u64).to_le_bytes());
    hash.update(bytes);
}

fn hex(bytes: &[u8]) -> String {
    crate::text::hex(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cache_of_another_directory_or_format_or_no_json_is_ignored_with_a_note() {
        let cache_dir = tempfile::tempdir().unwrap();
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let cache = Cache::open(cache_dir.path(), a.path());
        assert!(cache.note.is_none());
        let entry = CachedRevision {
            key: "k".into(),
            report: RevisionReport::default(),
            warnings: vec![],
            findings: vec![],
            fail_closed: vec![],
        };
        cache.save(vec![entry], None).unwrap();
        assert!(Cache::open(cache_dir.path(), a.path())
            .revision("k")
            .is_some());

        // b's file holding a's results (copied, or a hash collision) is foreign.
        let other = Cache::open(cache_dir.path(), b.path());
        std::fs::copy(cache.path(), other.path()).unwrap();
        let other = Cache::open(cache_dir.path(), b.path());
        assert!(other.revision("k").is_none());
        assert!(other.note.unwrap().contains("holds the results of"));

        let text = std::fs::read_to_string(cache.path()).unwrap();
        std::fs::write(
            cache.path(),
            text.replace(FORMAT, "backend-schema verify cache 0"),
        )
        .unwrap();
        let old = Cache::open(cache_dir.path(), a.path());
        assert!(old.revision("k").is_none());
        assert!(old.note.unwrap().contains("of another format"));

        std::fs::write(cache.path(), &text[..text.len() / 2]).unwrap();
        let torn = Cache::open(cache_dir.path(), a.path());
        assert!(torn.revision("k").is_none());
        assert!(torn.note.unwrap().contains("is not a verify cache"));
    }
}

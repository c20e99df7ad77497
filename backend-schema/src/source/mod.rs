//! Discovering migrations on disk: `migrations/<revision>_<slug>/` each holding
//! `migration.toml`, `up.sql` and `down.sql`.
//!
//! Reading the directory ([`read_source`]) is separate from interpreting it
//! ([`parse_source`], a pure function): every problem is reported with its path, and
//! nothing is ever skipped silently.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::migration::{
    checksum, normalise_text, Migration, DOWN_FILE, MAX_REVISION_LEN, METADATA_FILE, UP_FILE,
};

/// Files of the migrations directory that are not migrations and are allowed (the roles
/// file is `verify`'s, see `verify::roles`; the lint file `lint::allow`'s).
const ALLOWED_FILES: &[&str] = &[
    "README.md",
    ".gitattributes",
    crate::verify::roles::ROLES_FILE,
    crate::lint::LINT_FILE,
];

/// The raw contents of a migrations directory.
#[derive(Debug, Clone, Default)]
pub struct SourceTree {
    pub root: PathBuf,
    pub entries: Vec<SourceEntry>,
}

#[derive(Debug, Clone)]
pub enum SourceEntry {
    File {
        name: String,
    },
    Dir {
        name: String,
        files: BTreeMap<String, Vec<u8>>,
    },
}

/// A problem found while loading migrations; each names a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceProblem {
    pub path: PathBuf,
    pub message: String,
}

impl fmt::Display for SourceProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.message)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SourceError {
    pub problems: Vec<SourceProblem>,
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "invalid migrations ({} problem(s)):",
            self.problems.len()
        )?;
        for problem in &self.problems {
            writeln!(f, "  {problem}")?;
        }
        Ok(())
    }
}

mod write;

pub use write::{
    write_imported_migration, write_labelled_migration, write_migration, write_migration_as, Kept,
    NewMigration, WriteError,
};

/// `migration.toml`, read by [`parse_source`] and written by [`write_migration`].
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct Metadata {
    revision: String,
    #[serde(default)]
    revises: Vec<String>,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    create_date: Option<String>,
    #[serde(default = "default_true")]
    transactional: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    branch_labels: Vec<String>,
}

fn default_true() -> bool {
    true
}

/// Reads every entry of `root` (one level of directories).
pub fn read_source(root: &Path) -> Result<SourceTree, SourceError> {
    let fail = |path: &Path, err: std::io::Error| SourceError {
        problems: vec![SourceProblem {
            path: path.to_path_buf(),
            message: format!("cannot read: {err}"),
        }],
    };
    let mut entries = Vec::new();
    let mut problems = Vec::new();
    for entry in std::fs::read_dir(root).map_err(|e| fail(root, e))? {
        let entry = entry.map_err(|e| fail(root, e))?;
        let Some(name) = utf8_name(&entry.path(), &mut problems) else {
            continue;
        };
        // Follows symbolic links: a migration folder linked in from elsewhere is read
        // like any other; a link to nothing is a problem.
        let is_dir = match std::fs::metadata(entry.path()) {
            Ok(metadata) => metadata.is_dir(),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                problems.push(SourceProblem {
                    path: entry.path(),
                    message:
                        "a symbolic link to nothing: point it at a migration folder or remove it"
                            .into(),
                });
                continue;
            }
            Err(err) => return Err(fail(&entry.path(), err)),
        };
        if is_dir {
            let mut files = BTreeMap::new();
            for file in std::fs::read_dir(entry.path()).map_err(|e| fail(&entry.path(), e))? {
                let file = file.map_err(|e| fail(&entry.path(), e))?;
                let Some(file_name) = utf8_name(&file.path(), &mut problems) else {
                    continue;
                };
                let bytes = std::fs::read(file.path()).map_err(|e| fail(&file.path(), e))?;
                files.insert(file_name, bytes);
            }
            entries.push(SourceEntry::Dir { name, files });
        } else {
            entries.push(SourceEntry::File { name });
        }
    }
    if !problems.is_empty() {
        return Err(SourceError { problems });
    }
    Ok(SourceTree {
        root: root.to_path_buf(),
        entries,
    })
}

/// The file name of `path` when it is UTF-8; otherwise a problem (names are revision IDs
/// and slugs, and shown to people: replacement characters would name another file).
fn utf8_name(path: &Path, problems: &mut Vec<SourceProblem>) -> Option<String> {
    let name = path.file_name()?;
    match name.to_str() {
        Some(name) => Some(name.to_string()),
        None => {
            problems.push(SourceProblem {
                path: path.to_path_buf(),
                message: "the name is not valid UTF-8; rename it (migration folders are `<revision>_<slug>`)".into(),
            });
            None
        }
    }
}

/// Interprets a migrations directory. Returns the migrations sorted by directory name,
/// or every problem found.
pub fn parse_source(tree: &SourceTree) -> Result<Vec<Migration>, SourceError> {
    let mut problems = Vec::new();
    let mut migrations = Vec::new();
    for entry in &tree.entries {
        match entry {
            SourceEntry::File { name } if ALLOWED_FILES.contains(&name.as_str()) => {}
            SourceEntry::File { name } => problems.push(SourceProblem {
                path: tree.root.join(name),
                message: format!(
                    "not a migration: expected a directory `<revision>_<slug>/` holding \
                     {METADATA_FILE}, {UP_FILE} and {DOWN_FILE} (create one with \
                     `cargo xtask migrate revision -m MESSAGE`)"
                ),
            }),
            SourceEntry::Dir { name, files } => {
                match parse_dir(&tree.root.join(name), name, files) {
                    Ok(migration) => migrations.push(migration),
                    Err(mut found) => problems.append(&mut found),
                }
            }
        }
    }
    if !problems.is_empty() {
        problems.sort_by(|a, b| a.path.cmp(&b.path));
        return Err(SourceError { problems });
    }
    migrations.sort_by(|a, b| a.dir.cmp(&b.dir));
    Ok(migrations)
}

fn parse_dir(
    dir: &Path,
    name: &str,
    files: &BTreeMap<String, Vec<u8>>,
) -> Result<Migration, Vec<SourceProblem>> {
    let mut problems = Vec::new();
    let problem = |file: &str, message: String| SourceProblem {
        path: if file.is_empty() {
            dir.to_path_buf()
        } else {
            dir.join(file)
        },
        message,
    };
    for file in files.keys() {
        if ![METADATA_FILE, UP_FILE, DOWN_FILE].contains(&file.as_str()) {
            problems.push(problem(
                file,
                format!("unexpected file in a migration directory (only {METADATA_FILE}, {UP_FILE}, {DOWN_FILE} belong here)"),
            ));
        }
    }
    let mut text = |file: &str, what: &str| -> Option<String> {
        let Some(bytes) = files.get(file) else {
            problems.push(problem(file, format!("missing {what}; every migration needs {METADATA_FILE}, {UP_FILE} and {DOWN_FILE}")));
            return None;
        };
        match std::str::from_utf8(bytes) {
            Ok(text) => Some(normalise_text(text)),
            Err(err) => {
                problems.push(problem(
                    file,
                    format!("not valid UTF-8 ({err}); save the file as UTF-8"),
                ));
                None
            }
        }
    };
    let metadata_text = text(METADATA_FILE, "metadata");
    let up = text(UP_FILE, "upgrade");
    let down = text(DOWN_FILE, "downgrade");
    for (file, sql) in [(UP_FILE, &up), (DOWN_FILE, &down)] {
        for (line, message) in sql
            .as_deref()
            .map(crate::sql_split::forbidden_statements)
            .unwrap_or_default()
        {
            problems.push(problem(file, format!("line {line}: {message}")));
        }
    }

    let metadata = metadata_text.and_then(|text| match toml::from_str::<Metadata>(&text) {
        Ok(metadata) => Some(metadata),
        Err(err) => {
            let message = err.message().to_string();
            let line = err.span().map(|s| text[..s.start].matches('\n').count() + 1);
            let at = line.map(|l| format!(" (line {l})")).unwrap_or_default();
            problems.push(problem(
                METADATA_FILE,
                format!("unreadable metadata{at}: {message}; expected revision, revises, message, create_date, transactional, branch_labels"),
            ));
            None
        }
    });
    if let Some(metadata) = &metadata {
        let revision = &metadata.revision;
        if revision.is_empty() || !revision.chars().all(|c| c.is_ascii_alphanumeric()) {
            problems.push(problem(
                METADATA_FILE,
                format!("revision `{revision}` must be non-empty ASCII letters and digits"),
            ));
        }
        if revision.len() > MAX_REVISION_LEN {
            problems.push(problem(
                METADATA_FILE,
                format!("revision `{revision}` is {} characters; alembic_version.version_num holds at most {MAX_REVISION_LEN}", revision.len()),
            ));
        }
        if name != revision && !name.starts_with(&format!("{revision}_")) {
            problems.push(problem(
                "",
                format!("directory name must start with the revision: rename it to `{revision}_<slug>` (or fix the revision in {METADATA_FILE})"),
            ));
        }
        if metadata.revises.contains(revision) {
            problems.push(problem(
                METADATA_FILE,
                format!("revision `{revision}` revises itself"),
            ));
        }
    }
    match (metadata, up, down) {
        (Some(metadata), Some(up), Some(down)) if problems.is_empty() => Ok(Migration {
            checksum: checksum(&up, &down),
            revision: metadata.revision,
            parents: metadata.revises,
            message: metadata.message,
            create_date: metadata.create_date,
            transactional: metadata.transactional,
            branch_labels: metadata.branch_labels,
            dir: dir.to_path_buf(),
            up,
            down,
        }),
        // Each file that did not parse pushed its problem, so the list is never empty here.
        _ => Err(problems),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str, files: &[(&str, &str)]) -> SourceEntry {
        SourceEntry::Dir {
            name: name.into(),
            files: files
                .iter()
                .map(|(n, c)| (n.to_string(), c.as_bytes().to_vec()))
                .collect(),
        }
    }

    fn meta(rev: &str, parents: &str) -> String {
        format!("revision = \"{rev}\"\nrevises = [{parents}]\nmessage = \"m\"\n")
    }

    fn tree(entries: Vec<SourceEntry>) -> SourceTree {
        SourceTree {
            root: PathBuf::from("migrations"),
            entries,
        }
    }

    #[test]
    fn a_valid_directory_is_one_migration() {
        let m = meta("abc123", "");
        let migrations = parse_source(&tree(vec![
            dir(
                "abc123_first",
                &[
                    ("migration.toml", &m),
                    ("up.sql", "SELECT 1;"),
                    ("down.sql", ""),
                ],
            ),
            SourceEntry::File {
                name: "README.md".into(),
            },
        ]))
        .unwrap();
        assert_eq!(migrations.len(), 1);
        assert!(migrations[0].transactional);
        assert_eq!(migrations[0].revision, "abc123");
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let m = meta("abc123", "");
        let err = parse_source(&tree(vec![
            dir("abc123_no_down", &[("migration.toml", &m), ("up.sql", "")]),
            dir(
                "zzz_wrong_name",
                &[
                    ("migration.toml", &meta("abc999", "")),
                    ("up.sql", ""),
                    ("down.sql", ""),
                ],
            ),
            dir(
                "bad_meta",
                &[
                    ("migration.toml", "revision = 1"),
                    ("up.sql", ""),
                    ("down.sql", ""),
                ],
            ),
            SourceEntry::File {
                name: "0001_stray.sql".into(),
            },
        ]))
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("migrations/abc123_no_down/down.sql: missing downgrade"),
            "{text}"
        );
        assert!(
            text.contains("migrations/zzz_wrong_name: directory name must start with the revision"),
            "{text}"
        );
        assert!(
            text.contains("migrations/bad_meta/migration.toml: unreadable metadata"),
            "{text}"
        );
        assert!(
            text.contains("migrations/0001_stray.sql: not a migration"),
            "{text}"
        );
        assert_eq!(err.problems.len(), 4);
    }

    #[test]
    fn long_revisions_and_non_utf8_files_are_rejected() {
        let long = "a".repeat(33);
        let err = parse_source(&tree(vec![
            dir(
                &format!("{long}_x"),
                &[
                    ("migration.toml", &meta(&long, "")),
                    ("up.sql", ""),
                    ("down.sql", ""),
                ],
            ),
            SourceEntry::Dir {
                name: "abc_bin".into(),
                files: [
                    ("migration.toml".to_string(), meta("abc", "").into_bytes()),
                    ("up.sql".to_string(), vec![0xff, 0xfe, 0x00]),
                    ("down.sql".to_string(), vec![]),
                ]
                .into(),
            },
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("is 33 characters"), "{err}");
        assert!(err.contains("abc_bin/up.sql: not valid UTF-8"), "{err}");
    }

    #[test]
    fn crlf_and_bom_files_load_with_the_same_checksum() {
        let m = meta("abc", "");
        let lf = parse_source(&tree(vec![dir(
            "abc_x",
            &[
                ("migration.toml", &m),
                ("up.sql", "SELECT 1;\n"),
                ("down.sql", ""),
            ],
        )]))
        .unwrap();
        let crlf_meta = m.replace('\n', "\r\n");
        let crlf = parse_source(&tree(vec![dir(
            "abc_x",
            &[
                ("migration.toml", &format!("\u{feff}{crlf_meta}")),
                ("up.sql", "\u{feff}SELECT 1;\r\n"),
                ("down.sql", ""),
            ],
        )]))
        .unwrap();
        assert_eq!(lf[0].checksum, crlf[0].checksum);
    }
}

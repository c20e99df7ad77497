//! `migrate import-alembic`: an existing Alembic project becomes our migrations folder.
//! Each revision file is rendered on its own by the real Alembic in offline mode through
//! our env.py (`alembic.rs`, `env.py`), converted or named with what needs a hand
//! (`revision.rs`), checked as a graph, written to a hidden staging directory, proven
//! revision by revision against Alembic's own upgrades (`prove.rs`), and only then renamed
//! to its destination.

mod alembic;
mod ini;
mod prove;
mod revision;
mod staging;

use std::path::{Path, PathBuf};

pub use alembic::{Alembic, Origin};
pub use prove::{Outcome, Table, Verdict};
pub use revision::{clean_sql, Imported, NeedsHand};
pub use staging::sweep_staging;

use staging::Staging;

use crate::graph::RevisionGraph;
use crate::migration::{checksum, normalise_text, Migration, METADATA_FILE};
use crate::source::{Kept, NewMigration, SourceError, SourceProblem};

/// What to import and where.
#[derive(Debug, Clone, Copy)]
pub struct ImportRequest<'a> {
    /// The Alembic project directory (holding `versions/`) or its versions directory.
    pub source: &'a Path,
    /// A directory that does not exist yet, or an empty one.
    pub into: &'a Path,
    /// `--alembic`: an alembic executable, or a python with Alembic installed.
    pub alembic: Option<&'a Path>,
}

/// A finished import.
#[derive(Debug)]
pub struct ImportReport {
    pub alembic: String,
    pub versions: PathBuf,
    pub into: PathBuf,
    pub verdicts: Vec<Verdict>,
    pub heads: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{} is neither an Alembic project (with a versions/ directory) nor a versions directory holding revision files (*.py)", path.display())]
    NoVersions { path: PathBuf },
    #[error(
        "{} sets version_locations = {value}: Alembic reads revisions from every one of those \
         directories, and import-alembic reads one ({}); copy every location's revision files \
         into one directory and pass that directory",
        ini.display(),
        versions.display()
    )]
    VersionLocations {
        ini: PathBuf,
        value: String,
        versions: PathBuf,
    },
    #[error("{} is not empty: the import writes only into a new or empty directory; pass --into NEW_DIR", path.display())]
    DestinationNotEmpty { path: PathBuf },
    #[error("{} exists and is not a directory; pass --into NEW_DIR", path.display())]
    DestinationNotADirectory { path: PathBuf },
    #[error("--alembic {} does not exist; pass an alembic executable or a python with alembic installed", path.display())]
    AlembicMissing { path: PathBuf },
    #[error(
        "no Alembic found: not given with --alembic PATH, no `alembic` on PATH, none in {}; \
         pass --alembic PATH (an alembic executable, or a python with alembic installed), or install it: \
         `python3 -m venv .venv && .venv/bin/pip install alembic psycopg2-binary` beside the project",
        looked_in.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    AlembicNotFound { looked_in: Vec<PathBuf> },
    #[error("cannot run {}", program.display())]
    AlembicRun {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} --version failed; is it Alembic (or a python with alembic installed)?\n  {stderr}", program.display())]
    AlembicBroken { program: PathBuf, stderr: String },
    #[error("{}", refused_text(needs_hand, graph))]
    Refused {
        needs_hand: Vec<NeedsHand>,
        graph: Vec<SourceProblem>,
    },
    #[error(
        "the imported chain is not what Alembic builds; nothing was written\n{}",
        proof_text(verdicts)
    )]
    Proof { verdicts: Vec<Verdict> },
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing the staged migrations failed")]
    Write(#[from] crate::source::WriteError),
    #[error("the staged migrations do not read back")]
    ReadBack(#[source] SourceError),
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error("reading a schema snapshot failed")]
    Db(#[from] postgres::Error),
}

fn refused_text(needs_hand: &[NeedsHand], graph: &[SourceProblem]) -> String {
    let mut text = String::from("nothing was imported:");
    if !needs_hand.is_empty() {
        text.push_str(&format!(
            "\n{} revision file(s) need a hand:",
            needs_hand.len()
        ));
        for file in needs_hand {
            text.push_str(&format!("\n  {file}"));
        }
    }
    if !graph.is_empty() {
        text.push_str(&format!(
            "\nthe revision graph has {} problem(s):",
            graph.len()
        ));
        for problem in graph {
            text.push_str(&format!("\n  {problem}"));
        }
    }
    text
}

fn proof_text(verdicts: &[Verdict]) -> String {
    let mut text = Table(verdicts).to_string();
    for verdict in verdicts {
        for (what, outcome) in [
            ("upgrade", &verdict.upgrade),
            ("downgrade", &verdict.downgrade),
        ] {
            match outcome {
                Outcome::Differs(diff) => text.push_str(&format!(
                    "\n{} {what}: {}:\n{diff}",
                    verdict.revision,
                    if what == "upgrade" {
                        "alembic's schema (-) against the imported one (+); its offline SQL is not what it runs \
                         online (does it look at op.get_context().as_sql, or at the database?): make upgrade() \
                         render what it runs, then import again"
                    } else {
                        "the schema before the upgrade (-) against the one after the imported downgrade (+); \
                         write the downgrade that undoes it in the Alembic revision, then import again"
                    }
                )),
                Outcome::Failed(err) => {
                    text.push_str(&format!("\n{} {what}: {err}", verdict.revision))
                }
                Outcome::Equal | Outcome::NotChecked => {}
            }
        }
    }
    text
}

/// Imports `request.source` into `request.into`; see the module docs for the steps.
/// Writes nothing unless every revision converted and was proven.
pub fn import_alembic(request: &ImportRequest<'_>) -> Result<ImportReport, ImportError> {
    let versions = versions_dir(request.source)?;
    if let Some(extra) = ini::extra_version_locations(&versions) {
        return Err(ImportError::VersionLocations {
            ini: extra.ini,
            value: extra.value,
            versions,
        });
    }
    check_destination(request.into)?;
    let alembic = Alembic::find(request.alembic, &versions)?;
    let workspace = alembic::Workspace::new(alembic, &versions)?;

    let mut imported = Vec::new();
    let mut needs_hand = Vec::new();
    for file in revision_files(&versions)? {
        let converted = workspace
            .render(&file)
            .map_err(|reason| NeedsHand {
                file: file.clone(),
                revision: None,
                reasons: vec![reason],
            })
            .and_then(|json| revision::convert(&file, &json));
        match converted {
            Ok(revision) => imported.push(revision),
            Err(problem) => needs_hand.push(problem),
        }
    }
    let graph = graph_problems(&versions, &imported);
    if !needs_hand.is_empty() || !graph.is_empty() {
        return Err(ImportError::Refused { needs_hand, graph });
    }

    let staging = Staging::new(request.into)?;
    for revision in &imported {
        let origin = format!(
            "Imported from Alembic: {}",
            revision
                .file
                .strip_prefix(versions.parent().unwrap_or(&versions))
                .unwrap_or(&revision.file)
                .display()
        );
        crate::source::write_imported_migration(
            &staging.chain,
            revision.revision.clone(),
            &NewMigration {
                parents: &revision.parents,
                message: &revision.message,
                transactional: revision.transactional,
                sql: Some((&revision.up, &revision.down)),
            },
            &Kept {
                create_date: revision.create_date.as_deref(),
                branch_labels: &revision.branch_labels,
                origin: &origin,
            },
        )?;
    }
    let chain = RevisionGraph::load(&staging.chain).map_err(ImportError::ReadBack)?;
    let verdicts = prove::prove(&chain, &workspace)?;
    if !verdicts.iter().all(Verdict::ok) {
        return Err(ImportError::Proof { verdicts });
    }
    let heads = chain.heads().iter().map(|h| h.to_string()).collect();
    staging.finish(request.into)?;
    Ok(ImportReport {
        alembic: workspace.alembic().to_string(),
        versions,
        into: request.into.to_path_buf(),
        verdicts,
        heads,
    })
}

/// `source/versions`, or `source` itself when it holds revision files.
fn versions_dir(source: &Path) -> Result<PathBuf, ImportError> {
    let no_versions = || ImportError::NoVersions {
        path: source.to_path_buf(),
    };
    let dir = if source.join("versions").is_dir() {
        source.join("versions")
    } else {
        source.to_path_buf()
    };
    let dir = dir.canonicalize().map_err(|_| no_versions())?;
    if revision_files(&dir).is_ok_and(|files| !files.is_empty()) {
        Ok(dir)
    } else {
        Err(no_versions())
    }
}

/// The files Alembic loads from a versions directory: `*.py` but `__init__.py` and
/// editor lock files (`.#name.py`), sorted.
fn revision_files(versions: &Path) -> Result<Vec<PathBuf>, ImportError> {
    let io = |source| ImportError::Io {
        path: versions.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(versions).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name.ends_with(".py")
            && name != "__init__.py"
            && !name.starts_with(".#")
            && path.is_file()
        {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn check_destination(into: &Path) -> Result<(), ImportError> {
    match std::fs::symlink_metadata(into) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(ImportError::Io {
            path: into.to_path_buf(),
            source,
        }),
        Ok(metadata) if !metadata.is_dir() => Err(ImportError::DestinationNotADirectory {
            path: into.to_path_buf(),
        }),
        Ok(_) => {
            let mut entries = std::fs::read_dir(into).map_err(|source| ImportError::Io {
                path: into.to_path_buf(),
                source,
            })?;
            if entries.next().is_some() {
                Err(ImportError::DestinationNotEmpty {
                    path: into.to_path_buf(),
                })
            } else {
                Ok(())
            }
        }
    }
}

/// The graph checks `verify` makes (duplicate IDs, missing parents, cycles, several heads
/// without branch labels), naming the Alembic files.
fn graph_problems(versions: &Path, imported: &[Imported]) -> Vec<SourceProblem> {
    // Each migration's "directory" is its Alembic file, so the graph's messages name the
    // files once their `/migration.toml` is taken off.
    let migrations: Vec<Migration> = imported
        .iter()
        .map(|revision| {
            let up = normalise_text(&revision.up);
            let down = normalise_text(&revision.down);
            Migration {
                revision: revision.revision.clone(),
                parents: revision.parents.clone(),
                message: revision.message.clone(),
                create_date: revision.create_date.clone(),
                transactional: revision.transactional,
                branch_labels: revision.branch_labels.clone(),
                dir: revision.file.clone(),
                checksum: checksum(&up, &down),
                up,
                down,
            }
        })
        .collect();
    let strip = |text: &str| -> String {
        let mut text = text.to_string();
        for revision in imported {
            let suffixed = revision.file.join(METADATA_FILE).display().to_string();
            text = text.replace(&suffixed, &revision.file.display().to_string());
        }
        text
    };
    match RevisionGraph::new(versions, migrations) {
        Err(err) => err
            .problems
            .iter()
            .map(|problem| SourceProblem {
                path: PathBuf::from(strip(&problem.path.display().to_string())),
                message: strip(&problem.message),
            })
            .collect(),
        Ok(graph) => {
            let heads = graph.heads();
            if heads.len() > 1 && !graph.declares_branches() {
                let files: Vec<String> = heads
                    .iter()
                    .filter_map(|h| graph.get(h))
                    .map(|m| m.dir.display().to_string())
                    .collect();
                vec![SourceProblem {
                    path: versions.to_path_buf(),
                    message: format!(
                        "the graph has {} heads ({}) and declares no branches: merge them in Alembic first (`alembic merge -m \"merge heads\" {}`) or give each branch a branch label",
                        heads.len(),
                        files.join(", "),
                        heads.join(" ")
                    ),
                }]
            } else {
                Vec::new()
            }
        }
    }
}

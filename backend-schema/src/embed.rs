//! The shipped binary's payload (`cargo xtask dist`): the migration files and every
//! revision's catalog (`Objects`, for `migrate drift` where no PostgreSQL server
//! programs exist) compiled in, and the checksums the build computed, checked again
//! when the binary reads them back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::catalog::objects::Objects;
use crate::graph::RevisionGraph;
use crate::source::{parse_source, read_source, SourceEntry, SourceError, SourceTree};

/// What a shipped binary holds, as the generated source (`write_bundle`) declares it.
#[derive(Debug)]
pub struct Embedded {
    /// (migration folder, file name, contents), every file of every folder.
    pub files: &'static [(&'static str, &'static str, &'static [u8])],
    /// The other entries at the top of the migrations directory (README.md...).
    pub top_level: &'static [&'static str],
    /// (revision, checksum) as the build computed them from the source tree.
    pub checksums: &'static [(&'static str, &'static str)],
    /// Revision -> its `Objects`, as JSON.
    pub catalogs: &'static str,
    /// The `server_version_num` of the server the catalogs were captured on.
    pub server_version_num: i32,
}

/// Where the embedded migrations say they are, in messages.
pub const EMBEDDED_ROOT: &str = "(built in)/migrations";

/// The environment variable naming the generated file the `embedded` build includes.
pub const BUNDLE_ENV: &str = "BACKEND_SCHEMA_EMBED";

impl Embedded {
    /// The chain compiled in, parsed and checked like a directory, its checksums
    /// compared with the ones the build computed.
    pub fn graph(&self) -> Result<RevisionGraph, EmbedError> {
        let mut dirs: BTreeMap<&str, BTreeMap<String, Vec<u8>>> = BTreeMap::new();
        for (dir, name, bytes) in self.files {
            dirs.entry(dir)
                .or_default()
                .insert(name.to_string(), bytes.to_vec());
        }
        let mut entries: Vec<SourceEntry> = dirs
            .into_iter()
            .map(|(name, files)| SourceEntry::Dir {
                name: name.to_string(),
                files,
            })
            .collect();
        entries.extend(self.top_level.iter().map(|name| SourceEntry::File {
            name: name.to_string(),
        }));
        let tree = SourceTree {
            root: PathBuf::from(EMBEDDED_ROOT),
            entries,
        };
        let graph = RevisionGraph::new(EMBEDDED_ROOT, parse_source(&tree)?)?;
        let built: BTreeMap<&str, &str> = self.checksums.iter().copied().collect();
        for migration in graph.migrations() {
            if built.get(migration.revision.as_str()) != Some(&migration.checksum.as_str()) {
                return Err(EmbedError::Checksum {
                    revision: migration.revision.clone(),
                });
            }
        }
        if built.len() != graph.migrations().len() {
            return Err(EmbedError::Checksum {
                revision: "(a revision the build listed)".into(),
            });
        }
        Ok(graph)
    }

    /// The schema a database recording `heads` should have, as the build captured it:
    /// empty at base; one catalog per revision, so several heads are refused.
    pub fn objects_at(&self, heads: &[String]) -> Result<Objects, EmbedError> {
        match heads {
            [] => Ok(Objects::default()),
            [one] => self.objects(one),
            many => Err(EmbedError::SeveralHeads {
                heads: many.join(", "),
            }),
        }
    }

    /// The schema right after `revision`, as the build captured it.
    pub fn objects(&self, revision: &str) -> Result<Objects, EmbedError> {
        let mut catalogs: BTreeMap<String, Objects> =
            serde_json::from_str(self.catalogs).map_err(EmbedError::Catalogs)?;
        catalogs
            .remove(revision)
            .ok_or_else(|| EmbedError::NoCatalog {
                revision: revision.to_string(),
            })
    }
}

/// Every revision's schema, each built alone (its ancestors only) in a fresh database
/// of one throwaway cluster, so a revision on one branch does not see the other's.
/// Also returns the server's `server_version_num`.
pub fn revision_catalogs(
    graph: &RevisionGraph,
) -> Result<(BTreeMap<String, Objects>, i32), EmbedError> {
    let cluster = crate::cluster::TempCluster::start()?;
    cluster.create_database("version", None)?;
    let version = crate::drift::server_version_num(&mut cluster.client("version")?)
        .map_err(EmbedError::Read)?;
    let mut catalogs = BTreeMap::new();
    for (n, migration) in graph.migrations().iter().enumerate() {
        let database = format!("revision_{n}");
        cluster.create_database(&database, None)?;
        let mut client = cluster.client(&database)?;
        let mut migrator =
            crate::runner::Migrator::new(&mut client, graph, crate::runner::RunOptions::default());
        migrator.upgrade(&migration.revision)?;
        drop(migrator);
        let objects = Objects::read(&mut client).map_err(EmbedError::Read)?;
        catalogs.insert(migration.revision.clone(), objects);
    }
    Ok((catalogs, version))
}

/// Writes the bundle for `graph` into `out`: `catalogs.json` and `embed.rs`, the Rust
/// source declaring `EMBEDDED` (an [`Embedded`]) with every migration file and the
/// catalogs included by absolute path. Unchanged files are not rewritten, so an
/// unchanged chain does not rebuild the binary. Returns the path of `embed.rs`.
pub fn write_bundle(graph: &RevisionGraph, out: &Path) -> Result<PathBuf, EmbedError> {
    let (catalogs, version) = revision_catalogs(graph)?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| EmbedError::Write { path, source }
    };
    std::fs::create_dir_all(out).map_err(io(out))?;
    let json_path = out.join("catalogs.json");
    let json = serde_json::to_string(&catalogs).map_err(EmbedError::Catalogs)?;
    write_if_changed(&json_path, &json).map_err(io(&json_path))?;

    let tree = read_source(graph.dir())?;
    let root = std::path::absolute(graph.dir()).map_err(io(graph.dir()))?;
    let mut files = String::new();
    let mut top_level = String::new();
    for entry in &tree.entries {
        match entry {
            SourceEntry::Dir { name, files: each } => {
                for file in each.keys() {
                    let path = root.join(name).join(file);
                    files.push_str(&format!(
                        "        ({name:?}, {file:?}, include_bytes!({:?})),\n",
                        path.display().to_string()
                    ));
                }
            }
            SourceEntry::File { name } => top_level.push_str(&format!("{name:?}, ")),
        }
    }
    let checksums: String = graph
        .migrations()
        .iter()
        .map(|m| format!("        ({:?}, {:?}),\n", m.revision, m.checksum))
        .collect();
    let source = format!(
        "// Generated by `cargo xtask dist` (backend_schema::embed::write_bundle); do not edit.\n\
         pub static EMBEDDED: backend_schema::embed::Embedded = backend_schema::embed::Embedded {{\n\
         \x20   files: &[\n{files}    ],\n\
         \x20   top_level: &[{top_level}],\n\
         \x20   checksums: &[\n{checksums}    ],\n\
         \x20   catalogs: include_str!({:?}),\n\
         \x20   server_version_num: {version},\n\
         }};\n",
        std::path::absolute(&json_path)
            .map_err(io(&json_path))?
            .display()
            .to_string()
    );
    let rs_path = out.join("embed.rs");
    write_if_changed(&rs_path, &source).map_err(io(&rs_path))?;
    Ok(rs_path)
}

fn write_if_changed(path: &Path, text: &str) -> std::io::Result<()> {
    match std::fs::read_to_string(path) {
        Ok(old) if old == text => Ok(()),
        _ => std::fs::write(path, text),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(
        "the built-in migration {revision} does not match the checksum its build computed: \
         the binary is damaged or was built by hand; rebuild it with `cargo xtask dist`"
    )]
    Checksum { revision: String },
    #[error(
        "this binary holds no catalog of revision {revision}: it was built before that revision \
         existed; use the binary of the release that applied it"
    )]
    NoCatalog { revision: String },
    #[error(
        "the database records several heads ({heads}); the shipped binary holds one catalog per \
         revision, not their combinations: run `cargo xtask migrate drift` from a checkout, which \
         builds them"
    )]
    SeveralHeads { heads: String },
    #[error("the built-in catalogs cannot be read: {0}")]
    Catalogs(serde_json::Error),
    #[error("reading a revision's catalog failed: {0}")]
    Read(postgres::Error),
    #[error("writing {path} failed: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error(transparent)]
    Migrate(#[from] crate::runner::MigrateError),
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOML: &[u8] = b"revision = \"aaaa00000001\"\nrevises = []\nmessage = \"first\"\n";

    fn embedded(checksum: &'static str) -> Embedded {
        Embedded {
            files: &[
                ("aaaa00000001_first", "migration.toml", TOML),
                (
                    "aaaa00000001_first",
                    "up.sql",
                    b"CREATE TABLE t (id int);\n",
                ),
                ("aaaa00000001_first", "down.sql", b"DROP TABLE t;\n"),
            ],
            top_level: &[],
            checksums: Box::leak(Box::new([("aaaa00000001", checksum)])),
            catalogs: "{}",
            server_version_num: 150000,
        }
    }

    #[test]
    fn the_built_in_chain_is_refused_unless_its_checksums_are_the_builds() {
        let right = crate::migration::checksum("CREATE TABLE t (id int);\n", "DROP TABLE t;\n");
        let right: &'static str = Box::leak(right.into_boxed_str());
        let graph = embedded(right).graph().unwrap();
        assert_eq!(graph.heads(), vec!["aaaa00000001"]);
        assert_eq!(graph.dir(), Path::new(EMBEDDED_ROOT));
        let err = embedded("0000").graph().unwrap_err();
        assert!(
            matches!(err, EmbedError::Checksum { ref revision } if revision == "aaaa00000001"),
            "{err}"
        );
        assert!(err
            .to_string()
            .contains("rebuild it with `cargo xtask dist`"));
    }

    #[test]
    fn several_heads_and_unknown_revisions_are_refused_by_name() {
        let e = embedded("x");
        assert_eq!(e.objects_at(&[]).unwrap(), Objects::default());
        let err = e.objects_at(&["a".into(), "b".into()]).unwrap_err();
        assert!(err.to_string().contains("several heads (a, b)"), "{err}");
        let err = e.objects("b2c3").unwrap_err();
        assert!(
            err.to_string().contains("no catalog of revision b2c3"),
            "{err}"
        );
    }
}

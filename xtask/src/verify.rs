//! `cargo xtask verify`: proves every migration on throwaway PostgreSQL.

use anyhow::bail;
use backend_schema::detect::{self, Detection};
use backend_schema::graph::RevisionGraph;
use backend_schema::snapshot::SchemaSnapshot;

/// For `migrate stamp --detect`: the revision the live schema equals, or an error with
/// the closest revision and the difference.
pub(crate) fn detect_revision(graph: &RevisionGraph, client: &mut postgres::Client) -> anyhow::Result<String> {
    let live = SchemaSnapshot::capture(client)?;
    eprintln!("comparing the live schema with every revision (building each in a throwaway cluster)...");
    match detect::detect_revision(graph, &live)? {
        Detection::Exact(revision) => {
            eprintln!("the live schema equals revision {revision}");
            Ok(revision)
        }
        Detection::Closest { revision, diff } => bail!(
            "the live schema matches no revision; refusing to stamp. Closest is {revision}; it differs in:\n{diff}"
        ),
    }
}

//! `revision` and `merge`: new, empty migrations written by the library's
//! `source::write_migration`.

use anyhow::bail;
use backend_schema::graph::RevisionGraph;
use backend_schema::source::{write_migration, NewMigration};

/// The parent of a new revision: `--head REV`, else the single head (none for the first).
pub(super) fn parents(graph: &RevisionGraph, head: Option<&str>) -> anyhow::Result<Vec<String>> {
    Ok(match head {
        Some(head) => vec![graph.resolve_revision(head)?.revision.clone()],
        None => match graph.heads().as_slice() {
            [] => Vec::new(),
            [one] => vec![one.to_string()],
            many => bail!(
                "multiple heads ({}); choose the parent with --head REV, or merge them first with `cargo xtask migrate merge`",
                many.join(", ")
            ),
        },
    })
}

pub(super) fn revision(
    graph: &RevisionGraph,
    parents: &[String],
    message: &str,
    transactional: bool,
) -> anyhow::Result<()> {
    let (path, _) = write_migration(
        graph.dir(),
        &NewMigration {
            parents,
            message,
            transactional,
            sql: None,
        },
    )?;
    eprintln!("created {}", path.display());
    Ok(())
}

pub(super) fn merge(
    graph: &RevisionGraph,
    revisions: &[String],
    message: &str,
) -> anyhow::Result<()> {
    let parents = revisions
        .iter()
        .map(|r| graph.resolve_revision(r).map(|m| m.revision.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    let (path, _) = write_migration(
        graph.dir(),
        &NewMigration {
            parents: &parents,
            message,
            transactional: true,
            sql: None,
        },
    )?;
    eprintln!("created merge revision {path}", path = path.display());
    Ok(())
}

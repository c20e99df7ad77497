//! `revision` and `merge`: new, empty migrations written by the library's
//! `source::write_migration`, their parents checked as Alembic checks them.

use anyhow::bail;
use backend_schema::graph::RevisionGraph;
use backend_schema::source::{write_labelled_migration, NewMigration};

/// The parents of a new revision: `--head TARGET` (a head, `LABEL@head`, or `base` for a
/// new root; any revision with `splice`), else the single head (none for the first).
pub(super) fn parents(
    graph: &RevisionGraph,
    head: Option<&str>,
    splice: bool,
) -> anyhow::Result<Vec<String>> {
    let Some(head) = head else {
        return Ok(match graph.heads().as_slice() {
            [] => Vec::new(),
            [one] => vec![one.to_string()],
            many => bail!(
                "multiple heads ({}); choose the parent with --head REV (or LABEL@head), or merge them first with `cargo xtask migrate merge heads`",
                many.join(", ")
            ),
        });
    };
    let parents = graph.resolve(head)?;
    for parent in &parents {
        if !splice && !graph.is_head(&parent.revision) {
            bail!(
                "revision {} is not a head revision; pass --splice to start a new branch from it",
                parent.revision
            );
        }
    }
    Ok(parents.iter().map(|m| m.revision.clone()).collect())
}

/// Labels for a new revision, refused when they cannot name one branch.
pub(super) fn check_labels(graph: &RevisionGraph, labels: &[String]) -> anyhow::Result<()> {
    for label in labels {
        graph.check_new_label(label)?;
    }
    Ok(())
}

pub(super) fn revision(
    graph: &RevisionGraph,
    parents: &[String],
    message: &str,
    transactional: bool,
    labels: &[String],
) -> anyhow::Result<()> {
    check_labels(graph, labels)?;
    let (path, _) = write_labelled_migration(
        graph.dir(),
        &NewMigration {
            parents,
            message,
            transactional,
            sql: None,
        },
        labels,
    )?;
    eprintln!("created {}", path.display());
    Ok(())
}

/// `merge heads` or `merge REV REV...`: a revision joining heads, as Alembic's `merge`
/// checks them (heads only, each once).
pub(super) fn merge(
    graph: &RevisionGraph,
    revisions: &[String],
    message: &str,
    labels: &[String],
) -> anyhow::Result<()> {
    let mut parents: Vec<String> = Vec::new();
    for name in revisions {
        for migration in graph.resolve(name)? {
            if !graph.is_head(&migration.revision) {
                bail!(
                    "revision {} is not a head revision; merge joins heads (see `cargo xtask migrate heads`)",
                    migration.revision
                );
            }
            if parents.contains(&migration.revision) {
                bail!(
                    "duplicate head revisions specified: {} is named twice",
                    migration.revision
                );
            }
            parents.push(migration.revision.clone());
        }
    }
    if parents.len() < 2 {
        bail!(
            "nothing to merge: {} names only {}; merge takes two or more heads",
            revisions.join(" "),
            if parents.is_empty() {
                "base".to_string()
            } else {
                parents.join(", ")
            }
        );
    }
    check_labels(graph, labels)?;
    let (path, _) = write_labelled_migration(
        graph.dir(),
        &NewMigration {
            parents: &parents,
            message,
            transactional: true,
            sql: None,
        },
        labels,
    )?;
    eprintln!("created merge revision {path}", path = path.display());
    Ok(())
}

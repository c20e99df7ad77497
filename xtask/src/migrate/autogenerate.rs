//! `migrate check` and `migrate revision --autogenerate`: the migration chain against the
//! declarative schema in `backend-schema/schema/`, and the migration that closes the gap.

use std::path::Path;

use anyhow::{bail, Context as _};
use backend_schema::declarative::{self, plan};
use backend_schema::source::{write_migration, NewMigration};
use backend_schema::RevisionGraph;

/// Fails, with the catalog difference and the SQL that would close it, when the
/// chain's head and the declarative schema differ.
pub(super) fn check(graph: &RevisionGraph, schema: &Path) -> anyhow::Result<()> {
    let pair = build_pair(graph, schema)?;
    let Some(diff) = pair.head.diff(&pair.declared) else {
        eprintln!(
            "the declarative schema matches the migrations' head ({})",
            graph.heads().join(", ")
        );
        return Ok(());
    };
    let sql = match plan::plan(&pair.head_catalog, &pair.declared_catalog) {
        Ok(plan) if !plan.is_empty() => format!(
            "\nthe SQL that brings the migrations to the schema:\n{}",
            indent(&plan.to_sql())
        ),
        Ok(_) => String::new(),
        Err(err) => format!("\n{err}\n"),
    };
    bail!(
        "the migrations' head and the declarative schema in {} differ \
         (- only in the migrations, + only in the schema files):\n{diff}{sql}\n\
         write the migration with `cargo xtask migrate revision --autogenerate -m \"...\"`, or fix the schema files",
        schema.display()
    )
}

/// Writes the migration from head to the declarative schema and proves it both ways;
/// writes nothing when there is no difference, or when the proof fails.
pub(super) fn autogenerate(
    graph: &RevisionGraph,
    schema: &Path,
    parents: &[String],
    message: &str,
    allow_drop: bool,
) -> anyhow::Result<()> {
    let pair = build_pair(graph, schema)?;
    let up = plan::plan(&pair.head_catalog, &pair.declared_catalog)
        .with_context(|| format!("cannot write a migration to {}", schema.display()))?;
    if up.is_empty() {
        if let Some(diff) = pair.head.diff(&pair.declared) {
            bail!("the schemas differ in ways autogenerate does not cover (functions, triggers, views, sequences or grants); write this migration by hand:\n{diff}");
        }
        eprintln!(
            "no difference between the migrations' head and {}: nothing written",
            schema.display()
        );
        return Ok(());
    }
    if !up.drops.is_empty() && !allow_drop {
        let mut text = format!(
            "this change drops data: {}; nothing was written. If that is intended, run again with --allow-drop",
            up.drops.join(", ")
        );
        for note in &up.notes {
            text.push_str(&format!("\n  note: {note}"));
        }
        bail!(text);
    }
    // Ordinary DDL in one all-or-nothing migration, index builds in a second one that
    // must run outside a transaction; or everything in one when that is as good.
    let notes = up.notes.clone();
    let parts: Vec<(plan::Plan, plan::Plan, String)> =
        plan::into_migrations(&pair.head_catalog, &pair.declared_catalog, up)
            .into_iter()
            .enumerate()
            .map(|(i, (up, down))| {
                let message = match i {
                    0 => message.to_string(),
                    _ => format!("{message} (concurrent indexes)"),
                };
                (up, down, message)
            })
            .collect();
    let mut written = Vec::new();
    let mut parent = parents.to_vec();
    for (up, down, message) in &parts {
        let transactional = up.transactional() && down.transactional();
        let written_now = write_migration(
            graph.dir(),
            &NewMigration {
                parents: &parent,
                message,
                transactional,
                sql: Some((&up.to_sql(), &down.to_sql())),
            },
        );
        let (path, revision) = match written_now {
            Ok(done) => done,
            Err(err) => {
                for (path, _, _) in &written {
                    let _ = std::fs::remove_dir_all(path);
                }
                return Err(err.into());
            }
        };
        parent = vec![revision.clone()];
        written.push((path, revision, transactional));
    }
    let revisions: Vec<&str> = written.iter().map(|(_, r, _)| r.as_str()).collect();
    eprintln!(
        "proving {}: upgrade, downgrade, upgrade on a copy of head...",
        revisions.join(" + ")
    );
    let proof = RevisionGraph::load(graph.dir())
        .map_err(anyhow::Error::from)
        .and_then(|graph| Ok(declarative::prove(&pair, &graph, written.len())?));
    if let Err(err) = proof {
        for (path, _, _) in &written {
            let _ = std::fs::remove_dir_all(path);
        }
        return Err(err.context(format!(
            "the generated migration(s) {} failed their proof and were removed; please report this with the schema change",
            revisions.join(", ")
        )));
    }
    for note in &notes {
        eprintln!("note: {note}");
    }
    for ((path, revision, transactional), (up, down, _)) in written.iter().zip(&parts) {
        eprintln!(
            "created {} ({} statement(s) up, {} down{})",
            path.display(),
            up.steps.len(),
            down.steps.len(),
            if *transactional {
                ""
            } else {
                "; it builds or drops indexes CONCURRENTLY, so it runs outside a transaction"
            }
        );
        println!("{revision}");
    }
    eprintln!("proven: upgrading gives the declared schema, downgrading gives head again");
    Ok(())
}

fn build_pair(graph: &RevisionGraph, schema: &Path) -> anyhow::Result<declarative::SchemaPair> {
    let files = declarative::read_schema(schema)?;
    eprintln!(
        "building the migrations' head and {} in a throwaway cluster...",
        schema.display()
    );
    declarative::build_pair(graph, &files).with_context(|| {
        format!(
            "cannot build the declarative schema in {}",
            schema.display()
        )
    })
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}

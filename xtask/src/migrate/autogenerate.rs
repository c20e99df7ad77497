//! `migrate check` and `migrate revision --autogenerate`: the migration chain against the
//! declarative schema in `backend-schema/schema/`, and the migrations that close the gap.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use backend_schema::declarative::{self, phases, plan, Comparison, ProofError};
use backend_schema::source::{write_migration, NewMigration};
use backend_schema::RevisionGraph;

/// Fails, with the catalog difference and the SQL that would close it, when the
/// chain's head and the declarative schema differ.
pub(super) fn check(graph: &RevisionGraph, schema: &Path) -> anyhow::Result<()> {
    let pair = build_pair(graph, schema)?;
    let diff = match pair.compare() {
        Comparison::Equal => None,
        Comparison::ColumnOrder { tables } => {
            eprintln!("note: {}", declarative::column_order_note(&tables));
            None
        }
        Comparison::Differs { diff } => Some(diff),
    };
    let Some(diff) = diff else {
        eprintln!(
            "the declarative schema matches the migrations' head ({})",
            graph.heads().join(", ")
        );
        return Ok(());
    };
    let sql = match plan::plan(
        &pair.head_catalog,
        &pair.declared_catalog,
        &plan::Renames::default(),
    ) {
        Ok(plan) if !plan.is_empty() => format!(
            "\nthe SQL that brings the migrations to the schema:\n{}",
            indent(&plan.to_sql_by_phase())
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

/// Writes the migrations from head to the declarative schema and proves them on rows;
/// writes nothing when there is no difference, when part of it cannot be generated, or
/// when the proof fails.
pub(super) fn autogenerate(
    graph: &RevisionGraph,
    schema: &Path,
    parents: &[String],
    message: &str,
    allow_drop: bool,
    rename: &[String],
) -> anyhow::Result<()> {
    let mut renames = plan::Renames::default();
    for spec in rename {
        renames.add(spec)?;
    }
    let pair = build_pair(graph, schema)?;
    match pair.compare() {
        Comparison::Differs { .. } => {}
        same => {
            if let Comparison::ColumnOrder { tables } = same {
                eprintln!("note: {}", declarative::column_order_note(&tables));
            }
            eprintln!(
                "no difference between the migrations' head and {}: nothing written",
                schema.display()
            );
            return Ok(());
        }
    }
    let up =
        plan::plan(&pair.head_catalog, &pair.declared_catalog, &renames).with_context(|| {
            format!(
                "cannot write a migration to {}; nothing was written",
                schema.display()
            )
        })?;
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
    let migrations = phases::migrations(&pair, &up, &renames)?;
    let mut written: Vec<(PathBuf, String)> = Vec::new();
    let remove = |written: &[(PathBuf, String)]| {
        for (path, _) in written {
            let _ = std::fs::remove_dir_all(path);
        }
    };
    let mut parent = parents.to_vec();
    let plain = migrations
        .iter()
        .position(|m| m.phase == plan::Phase::Ddl)
        .unwrap_or(0);
    for (i, migration) in migrations.iter().enumerate() {
        let message = match i == plain {
            true => message.to_string(),
            false => format!("{message} ({})", migration.phase.title()),
        };
        let written_now = write_migration(
            graph.dir(),
            &NewMigration {
                parents: &parent,
                message: &message,
                transactional: migration.transactional(),
                sql: Some((&migration.up.to_sql(), &migration.down.to_sql())),
            },
        );
        match written_now {
            Ok((path, revision)) => {
                parent = vec![revision.clone()];
                written.push((path, revision));
            }
            Err(err) => {
                remove(&written);
                return Err(err.into());
            }
        }
    }
    let revisions: Vec<&str> = written.iter().map(|(_, r)| r.as_str()).collect();
    eprintln!(
        "proving {}: upgrade, downgrade, upgrade on a copy of head with rows in every table...",
        revisions.join(" + ")
    );
    let proof = RevisionGraph::load(graph.dir())
        .map_err(anyhow::Error::from)
        .and_then(|graph| Ok(declarative::prove(&pair, &graph, written.len())?));
    if let Err(err) = proof {
        remove(&written);
        let why = match err.downcast_ref::<ProofError>() {
            Some(ProofError::Mismatch { .. }) => "do not give the declared schema, which is a gap in autogenerate: write this migration by hand (`cargo xtask migrate revision -m MSG`)",
            _ => "failed their proof",
        };
        return Err(err.context(format!(
            "the generated migration(s) {} {why}; nothing was kept",
            revisions.join(", ")
        )));
    }
    for note in &up.notes {
        eprintln!("note: {note}");
    }
    for ((path, revision), migration) in written.iter().zip(&migrations) {
        eprintln!(
            "created {} ({}: {} statement(s) up, {} down{})",
            path.display(),
            migration.phase.title(),
            migration.up.steps.len(),
            migration.down.steps.len(),
            if migration.transactional() {
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

//! `migrate check` and `migrate revision --autogenerate`: the migration chain against the
//! declarative schema in `backend-schema/schema/`, and the migrations that close the gap.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use backend_schema::declarative::behind::files_behind;
use backend_schema::declarative::{self, phases, plan, Comparison, ProofError};
use backend_schema::source::{write_migration, NewMigration};
use backend_schema::RevisionGraph;

/// Fails, with the catalog difference and the SQL that would close it, when the
/// chain's head and the declarative schema differ; when the schema files describe an
/// earlier revision, says the migrations are ahead and, with `write_schema`, writes the
/// files from head.
pub(super) fn check(
    graph: &RevisionGraph,
    schema: &Path,
    write_schema: bool,
) -> anyhow::Result<()> {
    let pair = build_pair(graph, schema)?;
    let Some(diff) = difference(&pair) else {
        eprintln!(
            "the declarative schema matches the migrations' head ({})",
            graph.heads().join(", ")
        );
        if write_schema {
            eprintln!("--write-schema: nothing to write");
        }
        return Ok(());
    };
    eprintln!("looking for the revision the schema files describe...");
    if let Some(behind) = files_behind(graph, &pair)? {
        if write_schema {
            return write_from_head(graph, schema, &pair);
        }
        bail!(
            "the migrations are ahead of the schema files: {} describes revision {}, and {} after it {} not in the files (a migration written by hand?). Write the schema files from head with `cargo xtask migrate check --write-schema`, review the diff and commit it; autogenerate now would write a migration that undoes {}. What the files lack (- only in the migrations, + only in the schema files):\n{diff}",
            schema.display(),
            behind.revision,
            behind.ahead.join(", "),
            if behind.ahead.len() == 1 { "is" } else { "are" },
            if behind.ahead.len() == 1 { "it" } else { "them" },
        );
    }
    if write_schema {
        bail!(
            "--write-schema writes the schema files only when they describe an earlier revision of the chain (the migrations ahead of them); {} equals none, so it holds changes of its own that writing would lose. Nothing was written: write the migration with `cargo xtask migrate revision --autogenerate -m \"...\"`, or fix the schema files (- only in the migrations, + only in the schema files):\n{diff}",
            schema.display()
        );
    }
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

/// The catalog difference between head and the files, `None` when they are equal
/// (column order aside, noted once).
fn difference(pair: &declarative::SchemaPair) -> Option<String> {
    match pair.compare() {
        Comparison::Equal => None,
        Comparison::ColumnOrder { tables } => {
            eprintln!("note: {}", declarative::column_order_note(&tables));
            None
        }
        Comparison::Differs { diff } => Some(diff),
    }
}

/// `check --write-schema`: the files from head, then built and compared again.
fn write_from_head(
    graph: &RevisionGraph,
    schema: &Path,
    pair: &declarative::SchemaPair,
) -> anyhow::Result<()> {
    let files = declarative::read_schema(schema)?;
    let written = declarative::write::write_from_head(pair, &files, schema).with_context(|| {
        format!(
            "cannot write {} from the migrations' head",
            schema.display()
        )
    })?;
    for path in &written.written {
        eprintln!("wrote {}", path.display());
    }
    for path in &written.removed {
        eprintln!("removed {} (its table is gone at head)", path.display());
    }
    let pair = build_pair(graph, schema)?;
    if let Some(diff) = difference(&pair) {
        bail!(
            "wrote the schema files from head, but they still differ from it, which is a gap in --write-schema:              fix {} by hand (- only in the migrations, + only in the schema files):\n{diff}",
            schema.display()
        );
    }
    eprintln!(
        "the declarative schema now matches the migrations' head ({}); review the diff and commit it",
        graph.heads().join(", ")
    );
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

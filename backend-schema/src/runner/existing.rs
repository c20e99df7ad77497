//! Advice for an "already exists" failure: the tables a database already holds,
//! matched by name against the tables each revision creates and drops, so the error can
//! name the `stamp` that fits.

use std::collections::BTreeSet;

use postgres::Client;

use super::MigrateError;
use crate::graph::RevisionGraph;
use crate::migration::Direction;

/// Adds advice to "already exists" failures: which revision the existing tables
/// match, and the `stamp` that would record it.
pub(super) fn explain(
    client: &mut Client,
    graph: &RevisionGraph,
    err: MigrateError,
) -> MigrateError {
    let MigrateError::Statement(mut failure) = err else {
        return err;
    };
    if !matches!(failure.code.as_deref(), Some("42P07" | "42710")) {
        return MigrateError::Statement(failure);
    }
    let tables = crate::catalog::tables_in_current_schema(client).unwrap_or_default();
    let matches = revisions_with_tables(graph, &tables);
    failure.advice = Some(match matches.last() {
        Some(revision) => format!(
            "the database already holds the tables of revision {revision} ({}) without alembic_version saying so; \
             if it was built by hand or by another tool, compare with `cargo xtask migrate stamp --detect` and record it with \
             `cargo xtask migrate stamp {revision}` (never drop tables in production)",
            tables.iter().cloned().collect::<Vec<_>>().join(", ")
        ),
        None => format!(
            "the existing tables ({}) match no revision of the chain: the schema was changed outside migrations; \
             inspect it before stamping anything",
            tables.iter().cloned().collect::<Vec<_>>().join(", ")
        ),
    });
    MigrateError::Statement(failure)
}

/// The revisions (oldest first) after which exactly `tables` exist, by table names.
fn revisions_with_tables(graph: &RevisionGraph, tables: &BTreeSet<String>) -> Vec<String> {
    let mut present = BTreeSet::new();
    let mut matches = Vec::new();
    for migration in graph.migrations() {
        for statement in migration.statements(Direction::Up) {
            let words: Vec<String> = statement
                .sql
                .lines()
                .filter(|l| !l.trim_start().starts_with("--"))
                .flat_map(|l| l.split_whitespace())
                .take(6)
                .map(|w| {
                    w.trim_matches(|c| c == '"' || c == '(' || c == ';')
                        .to_lowercase()
                })
                .collect();
            let words: Vec<&str> = words.iter().map(String::as_str).collect();
            match words.as_slice() {
                ["create", "table", "if", "not", "exists", name, ..]
                | ["create", "table", name, ..] => {
                    present.insert(name.to_string());
                }
                ["drop", "table", "if", "exists", name, ..] | ["drop", "table", name, ..] => {
                    present.remove(*name);
                }
                _ => {}
            }
        }
        if &present == tables {
            matches.push(migration.revision.clone());
        }
    }
    matches
}

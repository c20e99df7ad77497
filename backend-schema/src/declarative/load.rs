//! Running the schema files into an empty database, statement by statement: a statement
//! that needs a table or type another statement creates (in any file, in any order, in
//! a cycle of foreign keys) is retried once that one ran. What never runs is reported
//! with its file and line, and only the causes: a statement that waits for a table
//! whose own `CREATE TABLE` failed is counted, not reported again.

use std::path::{Path, PathBuf};

use postgres::error::SqlState;

use super::DeclarativeError;
use crate::sql_split::{error_location, leading_words, split_statements, Statement};

struct Pending<'a> {
    path: &'a Path,
    statement: Statement,
}

struct Failure<'a> {
    pending: Pending<'a>,
    /// The object it needs that does not exist yet, if that is why it failed.
    missing: Option<String>,
    message: String,
}

/// Runs `files` into the database `client` is connected to.
pub fn load(
    files: &[(PathBuf, String)],
    client: &mut postgres::Client,
) -> Result<(), DeclarativeError> {
    let mut pending: Vec<Pending> = files
        .iter()
        .flat_map(|(path, text)| {
            split_statements(text)
                .into_iter()
                .map(move |statement| Pending {
                    path: path.as_path(),
                    statement,
                })
        })
        .collect();
    let mut failed = Vec::new();
    loop {
        let before = pending.len();
        let mut waiting = Vec::new();
        for p in pending {
            match run(client, &p.statement.sql) {
                Ok(()) => {}
                Err(err) => {
                    let waits = err.code().is_some_and(|code| {
                        [SqlState::UNDEFINED_TABLE, SqlState::UNDEFINED_OBJECT].contains(code)
                    });
                    let failure = Failure {
                        missing: err.as_db_error().and_then(|db| quoted_name(db.message())),
                        message: describe(&err, &p.statement),
                        pending: p,
                    };
                    match waits {
                        true => waiting.push(failure),
                        false => failed.push(failure),
                    }
                }
            }
        }
        if waiting.len() == before || waiting.is_empty() {
            failed.extend(waiting);
            break;
        }
        pending = waiting.into_iter().map(|f| f.pending).collect();
    }
    if failed.is_empty() {
        return Ok(());
    }
    // A statement waiting for something another failed statement creates is a
    // consequence, not a cause.
    let created: Vec<String> = failed
        .iter()
        .filter_map(|f| creates(&f.pending.statement.sql))
        .collect();
    let (causes, consequences): (Vec<&Failure>, Vec<&Failure>) = failed
        .iter()
        .partition(|f| !f.missing.as_ref().is_some_and(|m| created.contains(m)));
    let mut failures: Vec<(PathBuf, String)> = causes
        .iter()
        .map(|f| (f.pending.path.to_path_buf(), f.message.clone()))
        .collect();
    if !consequences.is_empty() {
        let mut named: Vec<String> = consequences
            .iter()
            .map(|f| {
                format!(
                    "{}:{}",
                    f.pending
                        .path
                        .file_name()
                        .map_or(String::new(), |n| n.to_string_lossy().into_owned()),
                    f.pending.statement.line
                )
            })
            .collect();
        named.dedup();
        if let Some(last) = failures.last_mut() {
            last.1.push_str(&format!(
                "\n({} other statement(s) did not run because they need what the statement(s) above create: {})",
                consequences.len(),
                named.join(", ")
            ));
        }
    }
    Err(DeclarativeError::Load { failures })
}

/// One statement in its own transaction.
fn run(client: &mut postgres::Client, sql: &str) -> Result<(), postgres::Error> {
    let mut tx = client.transaction()?;
    tx.batch_execute(sql)?;
    tx.commit()
}

/// PostgreSQL's message with the line of the file it points at.
fn describe(err: &postgres::Error, statement: &Statement) -> String {
    let Some(db) = err.as_db_error() else {
        return format!("line {}: {err}", statement.line);
    };
    let method = no_default_operator_class(db.message());
    let line = error_location(&statement.sql, db)
        .map(|(down, _)| statement.text_line + down)
        .or_else(|| method.and_then(|m| line_using(statement, m)))
        .unwrap_or(statement.line);
    let hint = match method {
        Some("gist") => " (an exclusion constraint or GiST index comparing a plain column with = needs the btree_gist extension; autogenerate does not write extensions: create it in a migration of its own, `cargo xtask migrate revision -m \"btree_gist\"` with `CREATE EXTENSION IF NOT EXISTS btree_gist;`, declare the same line in a schema file, then autogenerate again)".to_string(),
        _ => db
            .hint()
            .map(|h| format!(" (hint: {h})"))
            .unwrap_or_default(),
    };
    format!("line {line}: {}{hint}", db.message())
}

/// The access method of `data type x has no default operator class for access method "m"`.
fn no_default_operator_class(message: &str) -> Option<&str> {
    let (_, rest) = message.split_once("has no default operator class for access method \"")?;
    rest.split_once('"').map(|(method, _)| method)
}

/// The line of the statement that says `USING method` (PostgreSQL gives no position).
fn line_using(statement: &Statement, method: &str) -> Option<usize> {
    let wanted = format!("using {method}");
    statement
        .sql
        .lines()
        .position(|l| l.to_ascii_lowercase().contains(&wanted))
        .map(|down| statement.text_line + down)
}

/// The name in `relation "x" does not exist` and `type "x" does not exist`.
fn quoted_name(message: &str) -> Option<String> {
    let (_, rest) = message.split_once('"')?;
    let (name, _) = rest.split_once('"')?;
    Some(name.rsplit('.').next().unwrap_or(name).to_string())
}

/// The table or type a `CREATE TABLE` or `CREATE TYPE` statement creates.
fn creates(sql: &str) -> Option<String> {
    let words = leading_words(sql, 8);
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let rest = match words.as_slice() {
        ["CREATE", "TABLE", "IF", "NOT", "EXISTS", rest @ ..] => rest,
        ["CREATE", "TABLE" | "TYPE", rest @ ..] => rest,
        _ => return None,
    };
    // `schema.name`: the name is after the dot.
    let name = match rest {
        [_, ".", name, ..] => name,
        [name, ..] => name,
        [] => return None,
    };
    Some(name.trim_matches('"').to_ascii_lowercase())
}

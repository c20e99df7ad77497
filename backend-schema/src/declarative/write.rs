//! `migrate check --write-schema`: the schema files written from the chain's head, for
//! when the migrations are ahead of them. Each table that differs is rewritten in the file
//! that creates it (pg_dump's definition of every table that file holds), a new table gets
//! a file of its own, and an enum type's `CREATE TYPE` is replaced where it stands (a new
//! one goes to `types.sql`). Anything else is refused by name before a file is touched.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};

use super::{SchemaPair, HEAD_DB};
use crate::database_url::DatabaseUrl;
use crate::lint::statement::{classify, Kind};
use crate::pgtool::libpq;
use crate::sql::{ident, quote_ident};
use crate::sql_split::{leading_words, split_statements};

/// The first line of a file `--write-schema` writes.
pub const WRITTEN_HEADER: &str =
    "-- Written from the migrations at head by `cargo xtask migrate check --write-schema`; edit freely.\n";

/// Where a new enum type is declared.
const TYPES_FILE: &str = "types.sql";

#[derive(Debug, thiserror::Error)]
pub enum WriteSchemaError {
    #[error(
        "--write-schema writes the tables and enum types of schema public, but {} differ(s) as well; \
         nothing was written: declare {} in {} by hand, then run `cargo xtask migrate check`",
        objects.join(", "),
        if objects.len() == 1 { "it" } else { "them" },
        dir.display()
    )]
    Unsupported { objects: Vec<String>, dir: PathBuf },
    #[error(
        "{} creates table {table} beside a statement --write-schema cannot write back ({statement}); \
         nothing was written: move table {table} to a file of its own, or update {} by hand",
        path.display(),
        path.display()
    )]
    MixedFile {
        path: PathBuf,
        table: String,
        statement: String,
    },
    #[error(
        "{} is a symbolic link (to {}): --write-schema writes only the files of the schema directory itself; \
         nothing was written: replace the link with the file, or update {} by hand",
        path.display(),
        target.display(),
        target.display()
    )]
    Symlink { path: PathBuf, target: PathBuf },
    #[error("pg_dump of {tables} at head failed: {source}")]
    PgDump {
        tables: String,
        #[source]
        source: io::Error,
    },
    #[error("writing {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Url(#[from] crate::database_url::UrlError),
}

/// What `write_from_head` changed.
#[derive(Debug, Default)]
pub struct Written {
    pub written: Vec<PathBuf>,
    pub removed: Vec<PathBuf>,
}

/// The statements of one schema file, as far as writing back needs them.
#[derive(Default)]
struct FileIndex {
    tables: BTreeSet<String>,
    /// Enum name -> its `CREATE TYPE` statement as written.
    types: BTreeMap<String, String>,
    /// The first statement that is about neither a table nor an enum type.
    other: Option<String>,
}

/// Rewrites the schema files in `dir` (read as `files`) so that they declare the chain's
/// head, as built in `pair`. The caller builds and compares again afterwards.
pub fn write_from_head(
    pair: &SchemaPair,
    files: &[(PathBuf, String)],
    dir: &Path,
) -> Result<Written, WriteSchemaError> {
    let head = pair.head.with_columns_sorted();
    let declared = pair.declared.with_columns_sorted();
    let mut tables = BTreeSet::new();
    let mut enums: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut unsupported = Vec::new();
    let keys: BTreeSet<&String> = head.objects.keys().chain(declared.objects.keys()).collect();
    for key in keys {
        let at_head = head.objects.get(key);
        if at_head == declared.objects.get(key) {
            continue;
        }
        let is_enum = |lines: Option<&Vec<String>>| {
            lines.is_some_and(|l| l.first().is_some_and(|l| l.starts_with("enum (")))
        };
        match key.split_once(' ') {
            Some(("table", name)) if !name.contains('.') => {
                tables.insert(name.to_string());
            }
            Some(("type", name))
                if !name.contains('.')
                    && (is_enum(at_head) || is_enum(declared.objects.get(key))) =>
            {
                let sql = at_head.and_then(|l| l.first()).map(|labels| {
                    format!(
                        "CREATE TYPE {} AS ENUM {}",
                        ident(name),
                        &labels["enum ".len()..]
                    )
                });
                enums.insert(name.to_string(), sql);
            }
            _ => unsupported.push(key.clone()),
        }
    }
    if !unsupported.is_empty() {
        return Err(WriteSchemaError::Unsupported {
            objects: unsupported,
            dir: dir.to_path_buf(),
        });
    }

    let index: BTreeMap<&Path, FileIndex> = files
        .iter()
        .map(|(path, text)| (path.as_path(), index_file(text)))
        .collect();
    let mut texts: BTreeMap<PathBuf, String> = files.iter().cloned().collect();

    for (name, sql) in &enums {
        let found = index
            .iter()
            .find_map(|(path, file)| file.types.get(name).map(|old| (path.to_path_buf(), old)));
        match (found, sql) {
            (Some((path, old)), new) => {
                let text = texts.get_mut(&path).expect("indexed files are read");
                *text = match new {
                    Some(new) => text.replacen(old.as_str(), new, 1),
                    None if text.contains(&format!("{old};")) => {
                        text.replacen(&format!("{old};"), "", 1)
                    }
                    None => text.replacen(old.as_str(), "", 1),
                };
            }
            (None, Some(new)) => {
                let text = texts.entry(dir.join(TYPES_FILE)).or_default();
                if !text.is_empty() && !text.ends_with('\n') {
                    text.push('\n');
                }
                text.push_str(&format!("\n{new};\n"));
            }
            (None, None) => {}
        }
    }

    // Each file that creates (or, for a new table, will create) a changed table, with
    // the tables it holds at head.
    let mut rewrites: BTreeMap<PathBuf, BTreeSet<String>> = BTreeMap::new();
    for table in &tables {
        let in_head = head.objects.contains_key(&format!("table {table}"));
        let path = index
            .iter()
            .find(|(_, file)| file.tables.contains(table))
            .map(|(path, _)| path.to_path_buf())
            .unwrap_or_else(|| dir.join(format!("{table}.sql")));
        let held = rewrites.entry(path.clone()).or_insert_with(|| {
            index
                .get(path.as_path())
                .map(|file| file.tables.clone())
                .unwrap_or_default()
        });
        if in_head {
            held.insert(table.clone());
        } else {
            held.remove(table);
        }
        if let Some(statement) = index.get(path.as_path()).and_then(|f| f.other.clone()) {
            return Err(WriteSchemaError::MixedFile {
                path,
                table: table.clone(),
                statement,
            });
        }
    }

    let url = DatabaseUrl::parse(&pair.cluster.url(HEAD_DB), "the chain's head")?;
    let mut removals = Vec::new();
    for (path, held) in rewrites {
        let held: Vec<String> = held
            .into_iter()
            .filter(|t| head.objects.contains_key(&format!("table {t}")))
            .collect();
        if held.is_empty() {
            texts.remove(&path);
            if path.exists() {
                removals.push(path);
            }
            continue;
        }
        let dump = dump_tables(pair, &url, &held)?;
        texts.insert(path, format!("{WRITTEN_HEADER}{dump}"));
    }
    texts.retain(|path, text| !files.iter().any(|(p, t)| p == path && t == text));
    // Writing through a symbolic link would change a file outside the schema
    // directory (or one another checkout shares): refused before anything is touched.
    for path in texts.keys().chain(&removals) {
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if meta.file_type().is_symlink() {
                return Err(WriteSchemaError::Symlink {
                    path: path.clone(),
                    target: std::fs::read_link(path).unwrap_or_default(),
                });
            }
        }
    }
    // Every new text is written beside its file first, so a full disk or a killed run
    // leaves the schema files as they were, never one cut short.
    let mut staged = Vec::new();
    for (path, text) in texts {
        let failed = |source| WriteSchemaError::Write {
            path: path.clone(),
            source,
        };
        let dir = path.parent().unwrap_or(std::path::Path::new("."));
        let mut temp = tempfile::Builder::new()
            .prefix(".write-schema-")
            .tempfile_in(dir)
            .map_err(failed)?;
        std::io::Write::write_all(&mut temp, text.as_bytes()).map_err(failed)?;
        // The file keeps its mode; a new one gets what `fs::write` would usually give.
        let mode = std::fs::metadata(&path)
            .map(|m| m.permissions())
            .unwrap_or_else(|_| std::os::unix::fs::PermissionsExt::from_mode(0o644));
        temp.as_file().set_permissions(mode).map_err(failed)?;
        temp.as_file().sync_all().map_err(failed)?;
        staged.push((path, temp));
    }
    let mut written = Written::default();
    for path in removals {
        std::fs::remove_file(&path).map_err(|source| WriteSchemaError::Write {
            path: path.clone(),
            source,
        })?;
        written.removed.push(path);
    }
    for (path, temp) in staged {
        temp.persist(&path).map_err(|err| WriteSchemaError::Write {
            path: path.clone(),
            source: err.error,
        })?;
        written.written.push(path);
    }
    Ok(written)
}

/// pg_dump's schema-only definition of `tables` at head: columns, constraints, indexes,
/// row-level security, policies, triggers and comments, without owners or noise.
fn dump_tables(
    pair: &SchemaPair,
    url: &DatabaseUrl,
    tables: &[String],
) -> Result<String, WriteSchemaError> {
    let mut args: Vec<std::ffi::OsString> = vec![
        "--schema-only".into(),
        "--no-owner".into(),
        "--no-privileges".into(),
        "--file=-".into(),
    ];
    args.extend(
        tables
            .iter()
            .map(|t| format!("--table=public.{}", quote_ident(t)).into()),
    );
    let raw = libpq(pair.cluster.binaries(), "pg_dump", args, url)
        .stderr_capture()
        .read()
        .map_err(|source| WriteSchemaError::PgDump {
            tables: tables.join(", "),
            source,
        })?;
    let text = crate::dump::schema::normalise(&raw);
    Ok(text
        .strip_prefix(crate::dump::schema::HEADER)
        .unwrap_or(&text)
        .lines()
        .filter(|line| {
            !line.starts_with("-- Name: ")
                && !line.starts_with("-- PostgreSQL database dump")
                && *line != "--"
        })
        .collect::<Vec<_>>()
        .join("\n")
        .replace("\n\n\n", "\n\n")
        .trim()
        .to_string()
        + "\n")
}

/// Which tables and enum types a file creates, and the first statement about neither.
fn index_file(text: &str) -> FileIndex {
    let mut file = FileIndex::default();
    for statement in split_statements(text) {
        let words = leading_words(&statement.sql, 5);
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        match classify(&statement.sql) {
            Kind::CreateTable { table } => {
                file.tables.insert(table);
                continue;
            }
            Kind::CreateIndex { .. } | Kind::AlterTable { .. } => continue,
            _ => {}
        }
        match words.as_slice() {
            ["CREATE", "TYPE", "PUBLIC", ".", name, ..] | ["CREATE", "TYPE", name, ..] => {
                let name = name.trim_matches('"').to_lowercase();
                if statement.sql.to_uppercase().contains("AS ENUM") {
                    file.types.insert(name, statement.sql.clone());
                    continue;
                }
            }
            ["CREATE", "POLICY", ..]
            | ["CREATE", "TRIGGER", ..]
            | ["CREATE", "CONSTRAINT", "TRIGGER", ..]
            | ["COMMENT", "ON", "TABLE" | "COLUMN" | "CONSTRAINT" | "INDEX", ..]
            | ["GRANT", ..]
            | ["REVOKE", ..] => continue,
            _ => {}
        }
        if file.other.is_none() {
            let first_line = statement
                .sql
                .lines()
                .find(|l| !l.trim_start().starts_with("--"))
                .unwrap_or_default();
            file.other = Some(first_line.trim().to_string());
        }
    }
    file
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_indexed_by_its_tables_and_enum_types() {
        let file = index_file(
            "CREATE TYPE status AS ENUM ('a', 'b');\n\
             CREATE TABLE t (id int);\n\
             CREATE INDEX t_id ON t (id);\n\
             ALTER TABLE t ENABLE ROW LEVEL SECURITY;\n\
             CREATE POLICY p ON t USING (true);\n",
        );
        assert_eq!(file.tables, BTreeSet::from(["t".to_string()]));
        assert_eq!(
            file.types.get("status").map(String::as_str),
            Some("CREATE TYPE status AS ENUM ('a', 'b')")
        );
        assert_eq!(file.other, None);
        let mixed = index_file("CREATE TABLE t (id int);\nCREATE FUNCTION f() RETURNS int AS $$ SELECT 1 $$ LANGUAGE sql;\n");
        assert_eq!(
            mixed.other.as_deref(),
            Some("CREATE FUNCTION f() RETURNS int AS $$ SELECT 1 $$ LANGUAGE sql")
        );
    }
}

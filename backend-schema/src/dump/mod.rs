//! Backups as files: the manifest written beside a dump, format detection, hashing,
//! row counts, and the checks that tell a complete dump from a truncated one.
//! `backup` writes one (built in a private `staging` directory), `destination` puts it
//! in place without replacing anything,
//! `archive` reads one back, `restore` restores one (a plain one through
//! `psql_restore`, after `meta_commands`; via staging with `database_settings` and
//! `leftovers`; into a new database as it is read, by `as_read`), and `schema` turns a schema-only dump into `schema.sql`.

pub mod archive;
pub mod as_read;
pub mod backup;
pub mod database_settings;
pub mod destination;
pub mod leftovers;
pub mod meta_commands;
pub mod psql_restore;
pub mod restore;
pub mod schema;
pub mod staging;
pub mod stream;

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use postgres::GenericClient;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DumpFormat {
    Custom,
    Plain,
    Directory,
}

impl DumpFormat {
    /// `pg_dump --format` value.
    pub fn flag(self) -> &'static str {
        match self {
            DumpFormat::Custom => "custom",
            DumpFormat::Plain => "plain",
            DumpFormat::Directory => "directory",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            DumpFormat::Custom => "dump",
            DumpFormat::Plain => "sql",
            DumpFormat::Directory => "dir",
        }
    }

    /// Recognises a dump by its content: a directory with `toc.dat`, the custom
    /// archive magic `PGDMP`, or else plain SQL.
    pub fn detect(path: &Path) -> io::Result<DumpFormat> {
        if path.is_dir() {
            return if path.join("toc.dat").is_file() {
                Ok(DumpFormat::Directory)
            } else {
                Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "directory without toc.dat is not a pg_dump directory archive",
                ))
            };
        }
        let mut magic = [0u8; 6];
        let mut read = 0;
        let mut file = fs::File::open(path)?;
        while read < magic.len() {
            match file.read(&mut magic[read..])? {
                0 => break,
                n => read += n,
            }
        }
        let magic = &magic[..read];
        // A plain dump piped through a compressor would otherwise be read as SQL and
        // called damaged (it has no completion line); say what it is and what to run.
        if let Some((name, tool)) = compressed(magic) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} is {name}-compressed: decompress it first ({tool} --keep {}) and pass the result",
                    path.display(),
                    path.display()
                ),
            ));
        }
        Ok(if magic.starts_with(b"PGDMP") {
            DumpFormat::Custom
        } else {
            DumpFormat::Plain
        })
    }
}

/// The compressor whose magic number `start` begins with, and the program that undoes it.
fn compressed(start: &[u8]) -> Option<(&'static str, &'static str)> {
    const MAGICS: [(&[u8], &str, &str); 5] = [
        (b"\x1f\x8b", "gzip", "gunzip"),
        (b"\x28\xb5\x2f\xfd", "zstd", "unzstd"),
        (b"\xfd7zXZ\x00", "xz", "unxz"),
        (b"BZh", "bzip2", "bunzip2"),
        (b"\x04\x22\x4d\x18", "lz4", "unlz4"),
    ];
    MAGICS
        .iter()
        .find(|(magic, _, _)| start.starts_with(magic))
        .map(|(_, name, tool)| (*name, *tool))
}

/// The JSON manifest beside every backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub file: String,
    pub format: DumpFormat,
    pub created_at: String,
    pub database: String,
    /// Heads in `alembic_version` at dump time (empty: base).
    pub revision: Vec<String>,
    pub server_version: String,
    pub pg_dump_version: String,
    pub size_bytes: u64,
    pub sha256: String,
    /// Exact row counts, from the same snapshot pg_dump used.
    pub tables: BTreeMap<String, i64>,
    /// The owner of the dumped database, which `restore --create` gives the new one
    /// (absent in manifests written before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_owner: Option<String>,
}

impl Manifest {
    /// `backup.dump` -> `backup.dump.manifest.json`.
    pub fn path_for(dump: &Path) -> PathBuf {
        let mut name = dump.file_name().unwrap_or_default().to_os_string();
        name.push(".manifest.json");
        dump.with_file_name(name)
    }

    pub fn read(path: &Path) -> io::Result<Manifest> {
        let text = fs::read_to_string(path)?;
        serde_json::from_str(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

/// SHA-256 of a file, or of a directory archive (every file, by name, in order).
pub fn sha256_path(path: &Path) -> io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut size = 0;
    let mut files = Vec::new();
    if path.is_dir() {
        for entry in fs::read_dir(path)? {
            files.push(entry?.path());
        }
        files.sort();
    } else {
        files.push(path.to_path_buf());
    }
    for file in files {
        if path.is_dir() {
            hasher.update(file.file_name().unwrap_or_default().as_encoded_bytes());
            hasher.update([0]);
        }
        let mut reader = fs::File::open(&file)?;
        let mut buffer = vec![0u8; 1 << 20];
        loop {
            let n = reader.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            size += n as u64;
            hasher.update(&buffer[..n]);
        }
    }
    Ok((crate::text::hex(&hasher.finalize()), size))
}

/// Whether a plain dump ends with pg_dump's completion comment (a truncated one does not).
pub fn plain_dump_is_complete(path: &Path) -> io::Result<bool> {
    use std::io::{Seek as _, SeekFrom};
    let mut file = fs::File::open(path)?;
    let length = file.metadata()?.len();
    file.seek(SeekFrom::Start(length.saturating_sub(4096)))?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail)?;
    Ok(String::from_utf8_lossy(&tail).contains("-- PostgreSQL database dump complete"))
}

/// Exact row counts of every user table (schema-qualified unless `public`).
pub fn row_counts(
    client: &mut impl GenericClient,
) -> Result<BTreeMap<String, i64>, postgres::Error> {
    let mut counts = BTreeMap::new();
    for table in crate::catalog::user_tables(client)? {
        let sql = format!("SELECT count(*) FROM {}", table.quoted());
        let rows: i64 = client.query_one(&sql, &[])?.get(0);
        let key = table.display_name();
        counts.insert(key, rows);
    }
    Ok(counts)
}

/// Splits a `pg_restore -l` listing into `parts` list files whose table data weighs
/// about the same (by row count), so the archive can be read back by several
/// `pg_restore -L` at once. Everything that is not table data goes in the first part.
/// `None` when there are too few data entries to share out.
pub fn split_listing(
    listing: &str,
    rows: &BTreeMap<String, i64>,
    parts: usize,
) -> Option<Vec<String>> {
    let mut data: Vec<(i64, &str)> = Vec::new();
    let mut rest = Vec::new();
    for line in listing.lines() {
        if line.starts_with(';') || line.trim().is_empty() {
            continue;
        }
        let tokens: Vec<&str> = line.split_whitespace().collect();
        match tokens.iter().position(|t| *t == "DATA") {
            Some(at) if at > 0 && tokens[at - 1] == "TABLE" => {
                let (schema, table) = (
                    tokens.get(at + 1).copied().unwrap_or(""),
                    tokens.get(at + 2).copied().unwrap_or(""),
                );
                let key = if schema == "public" {
                    table.to_string()
                } else {
                    format!("{schema}.{table}")
                };
                data.push((rows.get(&key).copied().unwrap_or(0), line));
            }
            _ => rest.push(line),
        }
    }
    if parts < 2 || data.len() < 2 {
        return None;
    }
    data.sort_by_key(|(weight, _)| std::cmp::Reverse(*weight));
    let mut lists: Vec<(i64, Vec<&str>)> = vec![(0, Vec::new()); parts];
    lists[0].1.extend(rest);
    for (weight, line) in data {
        let lightest = lists
            .iter_mut()
            .min_by_key(|(w, _)| *w)
            .expect("parts >= 2");
        lightest.0 += weight.max(1);
        lightest.1.push(line);
    }
    Some(
        lists
            .into_iter()
            .map(|(_, lines)| lines.join("\n") + "\n")
            .collect(),
    )
}

/// Roles a SQL script (plain dump, or `pg_restore -f -` output) needs: owners, grantees,
/// and the roles `ALTER DEFAULT PRIVILEGES FOR ROLE` names, as pg_dump writes them.
pub fn roles_in_script(sql: &str) -> Vec<String> {
    let mut roles = std::collections::BTreeSet::new();
    for line in sql.lines() {
        let line = line.trim();
        let mut named = Vec::new();
        if let Some((_, rest)) = line.rsplit_once(" OWNER TO ") {
            named.extend(role_at(rest));
        }
        if let Some(rest) = line.strip_prefix("ALTER DEFAULT PRIVILEGES FOR ROLE ") {
            named.extend(role_at(rest));
        }
        let privileges = line
            .strip_prefix("ALTER DEFAULT PRIVILEGES ")
            .map(|rest| {
                rest.find(" GRANT ")
                    .or(rest.find(" REVOKE "))
                    .map(|at| &rest[at + 1..])
            })
            .unwrap_or(Some(line));
        match privileges {
            Some(grant) if grant.starts_with("GRANT ") => {
                named.extend(
                    grant
                        .rsplit_once(" TO ")
                        .and_then(|(_, rest)| role_at(rest)),
                );
            }
            Some(revoke) if revoke.starts_with("REVOKE ") => {
                named.extend(
                    revoke
                        .rsplit_once(" FROM ")
                        .and_then(|(_, rest)| role_at(rest)),
                );
            }
            _ => {}
        }
        if let Some(rest) = line.strip_prefix("SET SESSION AUTHORIZATION ") {
            named.extend(role_at(rest.trim_matches(|c| c == '\'' || c == ';')));
        }
        roles.extend(named.into_iter().filter(|role| role != "PUBLIC"));
    }
    roles.into_iter().collect()
}

/// The role name at the start of `text`: a quoted identifier (`"a ""b"""`) or a bare
/// word, ended by a space, `;` or `,`.
pub(crate) fn role_at(text: &str) -> Option<String> {
    let text = text.trim_start();
    if let Some(quoted) = text.strip_prefix('"') {
        let mut name = String::new();
        let mut chars = quoted.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    name.push('"');
                }
                '"' => return (!name.is_empty()).then_some(name),
                c => name.push(c),
            }
        }
        return None;
    }
    let name: String = text
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != ';' && *c != ',')
        .collect();
    (!name.is_empty()).then_some(name)
}

/// The one role that owns the objects of a SQL script (`ALTER ... OWNER TO`), if exactly
/// one does: the owner a database made for it should have when no manifest says.
pub fn owner_in_script(sql: &str) -> Option<String> {
    let owners: std::collections::BTreeSet<String> = sql
        .lines()
        .filter_map(|line| line.trim().rsplit_once(" OWNER TO "))
        .filter_map(|(_, role)| role_at(role))
        .collect();
    match owners.len() {
        1 => owners.into_iter().next(),
        _ => None,
    }
}

/// Whether a SQL script creates the side table `alembic_version_history` (dumps taken
/// before the xtask recorded history do not).
pub fn script_has_history_table(sql: &str) -> bool {
    let table = format!(".{} (", crate::version_table::HISTORY_TABLE);
    sql.lines()
        .any(|line| line.starts_with("CREATE TABLE ") && line.contains(&table))
}

/// Extensions a SQL script creates.
pub fn extensions_in_script(sql: &str) -> Vec<String> {
    let mut extensions: Vec<String> = sql
        .lines()
        .filter_map(|l| l.trim().strip_prefix("CREATE EXTENSION IF NOT EXISTS "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(|name| name.trim_matches('"').to_string())
        .collect();
    extensions.sort();
    extensions.dedup();
    extensions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_and_extensions_are_found_in_scripts() {
        let sql = "CREATE EXTENSION IF NOT EXISTS pgcrypto WITH SCHEMA public;\nALTER TABLE public.leads OWNER TO app_owner;\nGRANT SELECT ON TABLE public.leads TO reporting;\nGRANT ALL ON SCHEMA public TO PUBLIC;\nREVOKE ALL ON TABLE public.users FROM auditor;\n";
        assert_eq!(roles_in_script(sql), ["app_owner", "auditor", "reporting"]);
        assert_eq!(extensions_in_script(sql), ["pgcrypto"]);
    }

    #[test]
    fn the_one_owner_is_read_as_postgresql_reads_its_name() {
        let sql = "ALTER TABLE public.a OWNER TO \"a\"\"b\";\nALTER TABLE public.b OWNER TO \"a\"\"b\";\n";
        assert_eq!(owner_in_script(sql).as_deref(), Some("a\"b"));
        let two = "ALTER TABLE public.a OWNER TO x;\nALTER TABLE public.b OWNER TO y;\n";
        assert_eq!(owner_in_script(two), None);
    }

    #[test]
    fn roles_are_found_where_pg_dump_names_them() {
        let sql = "GRANT ALL ON TABLE public.leads TO writer WITH GRANT OPTION;\n\
                   ALTER DEFAULT PRIVILEGES FOR ROLE app_owner IN SCHEMA public GRANT SELECT ON TABLES TO reader;\n\
                   ALTER DEFAULT PRIVILEGES FOR ROLE \"Odd \"\"Owner\"\"\" REVOKE ALL ON FUNCTIONS FROM PUBLIC;\n\
                   ALTER TABLE public.x OWNER TO \"with space\";\n\
                   SET SESSION AUTHORIZATION 'session_role';\n";
        assert_eq!(
            roles_in_script(sql),
            [
                "Odd \"Owner\"",
                "app_owner",
                "reader",
                "session_role",
                "with space",
                "writer"
            ]
        );
    }

    #[test]
    fn the_listing_is_shared_out_by_rows() {
        let listing = ";\n; Archive created at ...\n;\n215; 1259 16390 TABLE public leads postgres\n3350; 0 16390 TABLE DATA public leads postgres\n3351; 0 16400 TABLE DATA public sms_messages postgres\n3352; 0 16410 TABLE DATA public tenants postgres\n";
        let rows = BTreeMap::from([
            ("leads".to_string(), 1000),
            ("sms_messages".to_string(), 900),
            ("tenants".to_string(), 2),
        ]);
        let parts = split_listing(listing, &rows, 2).unwrap();
        assert_eq!(parts[0], "215; 1259 16390 TABLE public leads postgres\n3350; 0 16390 TABLE DATA public leads postgres\n");
        assert_eq!(parts[1], "3351; 0 16400 TABLE DATA public sms_messages postgres\n3352; 0 16410 TABLE DATA public tenants postgres\n");
        let one_table = "3350; 0 16390 TABLE DATA public leads postgres\n";
        assert_eq!(split_listing(one_table, &rows, 2), None);
    }

    #[test]
    fn only_a_plain_dump_with_its_last_line_is_complete() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.sql");
        let body = "INSERT INTO t VALUES (1);\n".repeat(1000);
        fs::write(
            &path,
            format!("{body}--\n-- PostgreSQL database dump complete\n--\n"),
        )
        .unwrap();
        assert!(plain_dump_is_complete(&path).unwrap());
        fs::write(&path, &body).unwrap();
        assert!(!plain_dump_is_complete(&path).unwrap());
        fs::write(&path, "").unwrap();
        assert!(!plain_dump_is_complete(&path).unwrap());
    }

    #[test]
    fn manifest_sits_beside_the_dump() {
        assert_eq!(
            Manifest::path_for(Path::new("backups/backup_20250101_000000.dump")),
            Path::new("backups/backup_20250101_000000.dump.manifest.json")
        );
    }
}

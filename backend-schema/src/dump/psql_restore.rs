//! Restoring a plain dump with psql, which would run any meta-command the file holds on
//! this machine: the file is refused unless its only meta-commands are pg_dump's own
//! (`meta_commands`), and psql then reads it in its restricted mode under a key the file
//! cannot know, so a meta-command our lexer missed is refused by psql itself. A psql
//! without restricted mode gets no plain dump at all.

use std::ffi::OsString;
use std::io::Read as _;
use std::path::Path;

use super::meta_commands::{check_plain_dump, MetaCommandError};
use crate::database_url::DatabaseUrl;
use crate::pgtool::{libpq, stderr_tail, tool, version_in};
use crate::PgBinaries;

#[derive(Debug, thiserror::Error)]
pub enum PsqlRestoreError {
    #[error(transparent)]
    MetaCommand(#[from] MetaCommandError),
    #[error("psql failed; the target was left as it was:\n  {stderr_tail}")]
    Failed { stderr_tail: String },
    #[error("cannot read {}", path.display())]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is psql {version}, which has no restricted mode (\\restrict): a meta-command the check missed would run on this machine; nothing was restored. Restore with a psql that has it (13.22, 14.19, 15.14, 16.10, 17.6 or later, through PG_BIN_DIR), or take the backup with --format custom and restore that", psql.display())]
    NoRestrictedMode {
        psql: std::path::PathBuf,
        version: String,
    },
    #[error("cannot run {} --version", psql.display())]
    Version {
        psql: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Refuses a psql without restricted mode, by its own `--version` (the server's
/// version says nothing about the psql beside it).
pub fn check_psql(binaries: &PgBinaries) -> Result<(), PsqlRestoreError> {
    let psql = binaries.tool("psql");
    let output = tool(binaries, "psql", vec!["--version".into()])
        .read()
        .map_err(|source| PsqlRestoreError::Version {
            psql: psql.clone(),
            source,
        })?;
    let version = version_in(&output);
    if has_restrict(&version) {
        Ok(())
    } else {
        Err(PsqlRestoreError::NoRestrictedMode { psql, version })
    }
}

/// Whether this psql has `\restrict` (PostgreSQL 13.22, 14.19, 15.14, 16.10, 17.6, 18).
pub fn has_restrict(version: &str) -> bool {
    let mut parts = version.split(|c: char| !c.is_ascii_digit());
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    match major {
        13 => minor >= 22,
        14 => minor >= 19,
        15 => minor >= 14,
        16 => minor >= 10,
        17 => minor >= 6,
        m => m >= 18,
    }
}

/// `script` with pg_dump's own meta-command lines emptied (their line numbers stay, so
/// psql's errors still point into the file).
fn without_lines(script: &str, lines: &[usize]) -> String {
    let mut out = String::with_capacity(script.len());
    let mut blank = lines.iter().peekable();
    for (index, line) in script.split_inclusive('\n').enumerate() {
        if blank.peek() == Some(&&(index + 1)) {
            blank.next();
            if line.ends_with('\n') {
                out.push('\n');
            }
        } else {
            out.push_str(line);
        }
    }
    out
}

fn random_key() -> std::io::Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(crate::text::hex(&bytes))
}

/// Checks the plain dump at `path`, then restores it in one transaction:
/// `psql -X -1 -v ON_ERROR_STOP=1`, in restricted mode (a psql without it is refused).
pub fn restore_plain(
    binaries: &PgBinaries,
    path: &Path,
    url: &DatabaseUrl,
) -> Result<(), PsqlRestoreError> {
    let script = std::fs::read_to_string(path).map_err(|source| PsqlRestoreError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let own = check_plain_dump(path, &script)?;
    check_psql(binaries)?;
    let args: Vec<OsString> = vec![
        "-X".into(),
        "-q".into(),
        "-1".into(),
        "-v".into(),
        "ON_ERROR_STOP=1".into(),
        format!("--command=\\restrict {}", random_key()?).into(),
        "--file=-".into(),
    ];
    // The encoding the check read the file in, whatever the environment or the
    // target's defaults say, until the file's own `SET client_encoding`.
    let output = libpq(binaries, "psql", args, url)
        .env("PGCLIENTENCODING", "UTF8")
        .stdin_bytes(without_lines(&script, &own))
        .stdout_null()
        .stderr_capture()
        .unchecked()
        .run()?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr)
            .replace("psql:<stdin>:", &format!("psql:{}:", path.display()));
        return Err(PsqlRestoreError::Failed {
            stderr_tail: stderr_tail(stderr.as_bytes()),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restrict_arrived_in_these_minor_releases() {
        for (version, has) in [
            ("15.13", false),
            ("15.14", true),
            ("15.18", true),
            ("14.18", false),
            ("17.6", true),
            ("18beta1", true),
            ("12.22", false),
        ] {
            assert_eq!(has_restrict(version), has, "{version}");
        }
    }

    #[test]
    fn only_the_named_lines_are_emptied() {
        assert_eq!(without_lines("a\n\\r k\nb\n\\u k", &[2, 4]), "a\n\nb\n");
        assert_eq!(without_lines("a\r\nb\r\n", &[]), "a\r\nb\r\n");
    }
}

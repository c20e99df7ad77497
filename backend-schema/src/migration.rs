//! One migration: its metadata, its upgrade and downgrade SQL, and its checksum.

use std::path::PathBuf;

use sha2::{Digest, Sha256};

use crate::sql_split::{split_statements, Statement};

/// The longest revision ID that fits Alembic's `alembic_version.version_num VARCHAR(32)`.
pub const MAX_REVISION_LEN: usize = 32;

/// File names inside a migration directory.
pub const METADATA_FILE: &str = "migration.toml";
pub const UP_FILE: &str = "up.sql";
pub const DOWN_FILE: &str = "down.sql";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Up,
    Down,
}

impl Direction {
    pub fn file_name(self) -> &'static str {
        match self {
            Direction::Up => UP_FILE,
            Direction::Down => DOWN_FILE,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Migration {
    /// Alembic revision ID, e.g. `0f18384ca39a`.
    pub revision: String,
    /// Parent revisions: none for a base, several for a merge.
    pub parents: Vec<String>,
    pub message: String,
    pub create_date: Option<String>,
    /// False for migrations that must run outside a transaction (`CREATE INDEX
    /// CONCURRENTLY`): they run one statement at a time.
    pub transactional: bool,
    /// Alembic branch labels; a graph with labelled branches may have several heads.
    pub branch_labels: Vec<String>,
    /// The migration's directory.
    pub dir: PathBuf,
    /// Upgrade SQL, with line endings normalised and any BOM removed.
    pub up: String,
    pub down: String,
    /// SHA-256 (hex) of the normalised upgrade and downgrade SQL.
    pub checksum: String,
}

impl Migration {
    pub fn sql(&self, direction: Direction) -> &str {
        match direction {
            Direction::Up => &self.up,
            Direction::Down => &self.down,
        }
    }

    pub fn statements(&self, direction: Direction) -> Vec<Statement> {
        split_statements(self.sql(direction))
    }

    pub fn path(&self, direction: Direction) -> PathBuf {
        self.dir.join(direction.file_name())
    }

    pub fn metadata_path(&self) -> PathBuf {
        self.dir.join(METADATA_FILE)
    }

    pub fn dir_name(&self) -> &str {
        self.dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or(&self.revision)
    }
}

/// Normalises text the way checksums see it: a leading BOM removed, CRLF and CR turned
/// into LF. A checkout on Windows must not look like an edited migration.
pub fn normalise_text(text: &str) -> String {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    text.replace("\r\n", "\n").replace('\r', "\n")
}

/// SHA-256 over both directions, each tagged so moving SQL between files changes it.
pub fn checksum(up: &str, down: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"up\0");
    hasher.update(up.as_bytes());
    hasher.update(b"\0down\0");
    hasher.update(down.as_bytes());
    crate::text::hex(&hasher.finalize())
}

/// The slug of a message for a directory name: `Add lead model` -> `add_lead_model`.
pub fn slug(message: &str) -> String {
    let mut slug = String::new();
    for c in message.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.ends_with('_') && !slug.is_empty() {
            slug.push('_');
        }
    }
    let slug = slug.trim_end_matches('_');
    slug.chars()
        .take(40)
        .collect::<String>()
        .trim_end_matches('_')
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf_and_bom_do_not_change_the_checksum() {
        let lf = normalise_text("SELECT 1;\nSELECT 2;\n");
        let crlf = normalise_text("\u{feff}SELECT 1;\r\nSELECT 2;\r\n");
        assert_eq!(checksum(&lf, ""), checksum(&crlf, ""));
        assert_ne!(checksum(&lf, ""), checksum("", &lf));
    }

    #[test]
    fn slugs_are_short_and_lowercase() {
        assert_eq!(slug("Add A/B test tables!"), "add_a_b_test_tables");
        assert_eq!(slug("  "), "");
    }
}

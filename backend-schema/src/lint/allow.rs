//! Suppressions: `-- xtask:allow RULE reason` on the line(s) just above a statement, or
//! an `[[allow]]` entry in `lint.toml` beside the migrations (for files already applied
//! somewhere, whose checksums a comment would change). An allowed finding is still
//! listed, with its reason.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Finding, Rule};
use crate::graph::RevisionGraph;

/// The lint configuration file, beside the migrations.
pub const LINT_FILE: &str = "lint.toml";

/// The comment that allows a rule for the statement below it.
const MARKER: &str = "xtask:allow";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {message}; expected long_lock_ms = N and [[allow]] entries with revision, rule, reason and optionally file and line", path.display())]
    Invalid { path: PathBuf, message: String },
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LintConfig {
    /// A lock that blocks writes, held longer than this, is a `long-strong-lock`.
    #[serde(default)]
    pub long_lock_ms: Option<u64>,
    #[serde(default)]
    pub allow: Vec<AllowEntry>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowEntry {
    pub revision: String,
    pub rule: String,
    /// `up.sql` or `down.sql`; every file of the revision when absent.
    pub file: Option<String>,
    /// The statement's line; every statement when absent.
    pub line: Option<usize>,
    pub reason: String,
}

/// A finding that a suppression allowed, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Allowed {
    #[serde(flatten)]
    pub finding: Finding,
    pub reason: String,
    /// Where the suppression is: `lint.toml` or the comment's line in the finding's file.
    pub allowed_by: String,
}

/// The default `long_lock_ms`.
pub const DEFAULT_LONG_LOCK: Duration = Duration::from_millis(1000);

impl LintConfig {
    /// `dir/lint.toml`, or the defaults when there is none.
    pub fn read(dir: &Path) -> Result<LintConfig, ConfigError> {
        let path = dir.join(LINT_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Ok(LintConfig::default())
            }
            Err(source) => return Err(ConfigError::Read { path, source }),
        };
        let config: LintConfig = toml::from_str(&text).map_err(|err| ConfigError::Invalid {
            path: path.clone(),
            message: err.message().to_string(),
        })?;
        for entry in &config.allow {
            let problem = if Rule::from_id(&entry.rule).is_none() {
                Some(format!(
                    "unknown rule `{}` (see the README's rule table)",
                    entry.rule
                ))
            } else if entry.reason.trim().is_empty() {
                Some(format!(
                    "the allow of {} for {} has no reason",
                    entry.rule, entry.revision
                ))
            } else {
                None
            };
            if let Some(message) = problem {
                return Err(ConfigError::Invalid { path, message });
            }
        }
        Ok(config)
    }

    pub fn long_lock(&self) -> Duration {
        self.long_lock_ms
            .map_or(DEFAULT_LONG_LOCK, Duration::from_millis)
    }

    /// Splits `findings` into those still reported and those allowed.
    pub fn apply(
        &self,
        graph: &RevisionGraph,
        findings: Vec<Finding>,
    ) -> (Vec<Finding>, Vec<Allowed>) {
        let mut kept = Vec::new();
        let mut allowed = Vec::new();
        for mut finding in findings {
            match self.allowing(graph, &mut finding) {
                Some((reason, allowed_by)) => allowed.push(Allowed {
                    finding,
                    reason,
                    allowed_by,
                }),
                None => kept.push(finding),
            }
        }
        (kept, allowed)
    }

    fn allowing(&self, graph: &RevisionGraph, finding: &mut Finding) -> Option<(String, String)> {
        let file_name = finding
            .file
            .as_deref()
            .and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned());
        for entry in &self.allow {
            let matches = entry.rule == finding.rule.id()
                && graph
                    .resolve_revision(&entry.revision)
                    .is_ok_and(|m| m.revision == finding.revision)
                && entry
                    .file
                    .as_ref()
                    .is_none_or(|f| Some(f) == file_name.as_ref())
                && entry.line.is_none_or(|l| Some(l) == finding.line);
            if matches {
                return Some((entry.reason.clone(), LINT_FILE.to_string()));
            }
        }
        let line = finding.line?;
        let migration = graph.get(&finding.revision)?;
        let text = if file_name.as_deref() == Some("down.sql") {
            &migration.down
        } else {
            &migration.up
        };
        let lines: Vec<&str> = text.lines().collect();
        // The comment lines right above the statement's first keyword.
        let mut at = line.saturating_sub(1);
        while at >= 1 {
            let Some(comment) = lines[at - 1].trim().strip_prefix("--") else {
                break;
            };
            if let Some(rest) = comment.trim().strip_prefix(MARKER) {
                let mut parts = rest.trim().splitn(2, char::is_whitespace);
                let rule = parts.next().unwrap_or("");
                let reason = parts.next().unwrap_or("").trim();
                if rule == finding.rule.id() {
                    if reason.is_empty() {
                        finding.message.push_str(&format!(
                            " (the `{MARKER} {rule}` comment on line {at} gives no reason, so it does not count)"
                        ));
                        return None;
                    }
                    return Some((reason.to_string(), format!("the comment on line {at}")));
                }
            }
            at -= 1;
        }
        None
    }
}

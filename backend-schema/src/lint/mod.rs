//! Migration safety findings: the rules (stable IDs, severity, fix), the static ones
//! (`static_rules.rs`, what no trace can see: renames and drops that break the running
//! code, non-transactional migrations, roles), the traced ones (`traced.rs`, from what
//! `verify` saw each statement do), and suppressions (`allow.rs`).

pub mod allow;
pub mod statement;
pub mod static_rules;
pub mod traced;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::graph::RevisionGraph;
use crate::Direction;

pub use allow::{Allowed, LintConfig, LINT_FILE};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

impl Severity {
    pub fn label(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// Every rule, by its stable ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    IndexNotConcurrent,
    ConstraintValidatedInPlace,
    UniqueBuiltInPlace,
    ExclusionBuiltInPlace,
    TableRewrite,
    SetNotNullScan,
    LongStrongLock,
    RedundantIndex,
    RenameBreaksRunningCode,
    DropBreaksRunningCode,
    EnumValueUsedInTransaction,
    NonTransactionalMixesDdl,
    NonTransactionalNotRetrySafe,
    UnknownRole,
}

impl Rule {
    pub const ALL: [Rule; 14] = [
        Rule::IndexNotConcurrent,
        Rule::ConstraintValidatedInPlace,
        Rule::UniqueBuiltInPlace,
        Rule::ExclusionBuiltInPlace,
        Rule::TableRewrite,
        Rule::SetNotNullScan,
        Rule::LongStrongLock,
        Rule::RedundantIndex,
        Rule::RenameBreaksRunningCode,
        Rule::DropBreaksRunningCode,
        Rule::EnumValueUsedInTransaction,
        Rule::NonTransactionalMixesDdl,
        Rule::NonTransactionalNotRetrySafe,
        Rule::UnknownRole,
    ];

    pub fn id(self) -> &'static str {
        match self {
            Rule::IndexNotConcurrent => "index-not-concurrent",
            Rule::ConstraintValidatedInPlace => "constraint-validated-in-place",
            Rule::UniqueBuiltInPlace => "unique-built-in-place",
            Rule::ExclusionBuiltInPlace => "exclusion-built-in-place",
            Rule::TableRewrite => "table-rewrite",
            Rule::SetNotNullScan => "set-not-null-scan",
            Rule::LongStrongLock => "long-strong-lock",
            Rule::RedundantIndex => "redundant-index",
            Rule::RenameBreaksRunningCode => "rename-breaks-running-code",
            Rule::DropBreaksRunningCode => "drop-breaks-running-code",
            Rule::EnumValueUsedInTransaction => "enum-value-used-in-transaction",
            Rule::NonTransactionalMixesDdl => "non-transactional-mixes-ddl",
            Rule::NonTransactionalNotRetrySafe => "non-transactional-not-retry-safe",
            Rule::UnknownRole => "unknown-role",
        }
    }

    pub fn from_id(id: &str) -> Option<Rule> {
        Rule::ALL.into_iter().find(|r| r.id() == id)
    }

    pub fn severity(self) -> Severity {
        match self {
            Rule::LongStrongLock
            | Rule::RedundantIndex
            | Rule::DropBreaksRunningCode
            | Rule::NonTransactionalNotRetrySafe => Severity::Warning,
            _ => Severity::Error,
        }
    }

    /// Whether only `verify`'s trace can find it (`lint` cannot).
    pub fn traced(self) -> bool {
        matches!(
            self,
            Rule::IndexNotConcurrent
                | Rule::ConstraintValidatedInPlace
                | Rule::UniqueBuiltInPlace
                | Rule::ExclusionBuiltInPlace
                | Rule::TableRewrite
                | Rule::SetNotNullScan
                | Rule::LongStrongLock
                | Rule::RedundantIndex
        )
    }
}

/// One finding: a rule broken at a statement of a revision's file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub rule: Rule,
    pub severity: Severity,
    pub revision: String,
    /// The file, when the finding belongs to a statement.
    pub file: Option<PathBuf>,
    /// 1-based line of the statement's first keyword.
    pub line: Option<usize>,
    pub message: String,
    pub fix: String,
    /// The statement, as written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statement: Option<String>,
    /// The table it is about, when one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// The redundant index, for `redundant-index`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<String>,
    /// The index or constraint that already provides it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub covered_by: Option<String>,
}

impl Finding {
    /// A downgrade runs rarely, by hand, in an incident: what it does is worth knowing,
    /// but never blocks the chain, so a finding in one is at most a warning.
    pub fn in_direction(mut self, direction: Direction) -> Finding {
        if direction == Direction::Down && self.severity == Severity::Error {
            self.severity = Severity::Warning;
        }
        self
    }

    /// A finding of `rule` at `statement` of `path`.
    pub fn at(
        rule: Rule,
        revision: &str,
        path: &Path,
        statement: &crate::sql_split::Statement,
        message: String,
        fix: &str,
    ) -> Finding {
        Finding {
            rule,
            severity: rule.severity(),
            revision: revision.to_string(),
            file: Some(path.to_path_buf()),
            line: Some(statement.line),
            message,
            fix: fix.to_string(),
            statement: Some(statement_text(&statement.sql)),
            table: None,
            index: None,
            covered_by: None,
        }
    }
}

/// The statement without the comments above its first keyword.
fn statement_text(sql: &str) -> String {
    let mut rest = sql;
    loop {
        let trimmed = rest.trim_start();
        if let Some(after) = trimmed.strip_prefix("--") {
            rest = after.split_once('\n').map_or("", |x| x.1);
        } else {
            return trimmed.to_string();
        }
    }
}

/// What `lint` found in a chain: findings not allowed, and the allowed ones with their
/// reasons.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LintReport {
    pub findings: Vec<Finding>,
    pub allowed: Vec<Allowed>,
}

impl LintReport {
    pub fn errors(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .count()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LintError {
    #[error(transparent)]
    Revision(#[from] crate::graph::TargetError),
    #[error(transparent)]
    Roles(#[from] crate::verify::roles::RolesError),
    #[error(transparent)]
    Config(#[from] allow::ConfigError),
}

/// The static rules over `revisions` of `graph` (all when empty), with suppressions.
pub fn lint(graph: &RevisionGraph, revisions: &[String]) -> Result<LintReport, LintError> {
    let config = LintConfig::read(graph.dir())?;
    let known_roles = static_rules::known_roles(graph)?;
    let mut findings = Vec::new();
    let selected: Vec<_> = if revisions.is_empty() {
        graph.migrations().iter().collect()
    } else {
        revisions
            .iter()
            .map(|r| graph.resolve_revision(r))
            .collect::<Result<_, _>>()?
    };
    for migration in selected {
        for direction in [Direction::Up, Direction::Down] {
            findings.extend(static_rules::check(migration, direction, &known_roles));
        }
    }
    let (findings, allowed) = config.apply(graph, findings);
    Ok(LintReport { findings, allowed })
}

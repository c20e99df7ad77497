//! The rules decided by what `verify` saw each statement do on a table that existed
//! before the migration (its trace): the statement's kind says which rule and fix, the
//! trace says whether it applies. A table created earlier in the same migration is not
//! in the trace, so a new table never gets one of these findings.

use std::path::Path;
use std::time::Duration;

use super::statement::{classify, Action, Kind};
use super::{Finding, Rule};
use crate::declarative::plan::LockMode;
use crate::runner::StatementTrace;
use crate::sql_split::Statement;

const INDEX_FIX: &str = "CREATE INDEX CONCURRENTLY IF NOT EXISTS in a migration of its own with `transactional = false` (it takes SHARE UPDATE EXCLUSIVE: reads and writes go on)";
const VALIDATE_FIX: &str = "add the constraint with NOT VALID here (new rows are checked at once), and run ALTER TABLE ... VALIDATE CONSTRAINT in a later migration: it scans under SHARE UPDATE EXCLUSIVE, which lets reads and writes go on";
const UNIQUE_FIX: &str = "CREATE UNIQUE INDEX CONCURRENTLY in a non-transactional migration first, then ALTER TABLE ... ADD CONSTRAINT name UNIQUE (or PRIMARY KEY) USING INDEX index_name, which only takes a brief lock";
const EXCLUSION_FIX: &str = "there is no concurrent way: PostgreSQL builds an exclusion constraint's index only under ACCESS EXCLUSIVE (no CONCURRENTLY, no USING INDEX); add it in a quiet window and allow this finding with that reason, or build the constraint on a new table and move the rows there";
const NOT_NULL_FIX: &str = "add CHECK (column IS NOT NULL) NOT VALID, VALIDATE CONSTRAINT it in a later migration, then SET NOT NULL (PostgreSQL 12+ uses the valid check and skips the scan) and drop the check";
const LONG_LOCK_FIX: &str = "take the strong lock last and keep the transaction short: move slow statements (backfills, index builds) to their own migration, or split the migration";

/// The fix for a rewrite, by what caused it.
fn rewrite_fix(kind: &Kind) -> &'static str {
    match kind {
        Kind::AlterTable { actions, .. } => {
            if actions.iter().any(|a| matches!(a, Action::AlterType { .. })) {
                "add a new column of the new type, backfill it in batches, move the code to it, and drop the old column later (or pick a binary-compatible change such as varchar(n) to text or a longer varchar)"
            } else if actions
                .iter()
                .any(|a| matches!(a, Action::AddColumnWithDefault { .. }))
            {
                "a volatile default (random(), clock_timestamp(), gen_random_uuid()) is computed for every row: add the column without a default (or with a constant one), backfill in batches, then SET DEFAULT"
            } else if actions.contains(&Action::SetLogged) {
                "SET LOGGED/UNLOGGED copies the whole table: do it while the table is small, or not on a busy table"
            } else {
                "split the change so no step rewrites the table, or run it in a maintenance window"
            }
        }
        Kind::Cluster | Kind::VacuumFull => {
            "use pg_repack or pg_squeeze, which rewrite a table without holding ACCESS EXCLUSIVE for the copy, or run it in a maintenance window"
        }
        _ => "split the change so no step rewrites the table, or run it in a maintenance window",
    }
}

/// The findings of one traced file. `transactional`: locks are held until the end of
/// the migration (else each statement's end releases them).
pub fn check(
    revision: &str,
    path: &Path,
    transactional: bool,
    statements: &[Statement],
    traces: &[StatementTrace],
    long_lock: Duration,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    for (n, trace) in traces.iter().enumerate() {
        let Some(statement) = statements.iter().find(|s| s.line == trace.line) else {
            continue;
        };
        let kind = classify(&statement.sql);
        let mut found = |rule: Rule, table: &str, message: String, fix: &str| {
            let mut finding = Finding::at(rule, revision, path, statement, message, fix);
            finding.table = Some(table.to_string());
            findings.push(finding);
        };
        let locked = |table: &str| {
            trace
                .held
                .iter()
                .find(|(t, _)| t == table)
                .map(|(_, mode)| *mode)
        };
        let took = trace.elapsed.as_millis();
        for table in &trace.rewritten {
            found(
                Rule::TableRewrite,
                table,
                format!("rewrites table {table} (its file node changed): every row is copied under an ACCESS EXCLUSIVE lock, blocking reads and writes for as long as that takes ({took} ms here on verify's seeded rows)"),
                rewrite_fix(&kind),
            );
        }
        match &kind {
            Kind::CreateIndex {
                table,
                concurrently: false,
                ..
            } => {
                if let Some(mode) = locked(table).filter(|m| m.blocks_writes()) {
                    found(
                        Rule::IndexNotConcurrent,
                        table,
                        format!("builds an index on existing table {table} without CONCURRENTLY: {mode} blocks every write to {table}{} until the build ends", if mode == LockMode::AccessExclusive { " (and every read)" } else { "" }),
                        INDEX_FIX,
                    );
                }
            }
            Kind::AlterTable { table, actions } if locked(table).is_some() => {
                let mode = locked(table).unwrap_or(LockMode::AccessExclusive);
                for action in actions {
                    match action {
                        Action::ValidatedConstraint { what } => found(
                            Rule::ConstraintValidatedInPlace,
                            table,
                            format!("adds a {what} constraint to existing table {table} and validates every row at once, under {mode}: writes wait for the scan"),
                            VALIDATE_FIX,
                        ),
                        Action::UniqueInPlace { what } => found(
                            Rule::UniqueBuiltInPlace,
                            table,
                            format!("adds a {what} constraint to existing table {table}, building its index under {mode}: reads and writes wait for the build"),
                            UNIQUE_FIX,
                        ),
                        Action::ExclusionInPlace => found(
                            Rule::ExclusionBuiltInPlace,
                            table,
                            format!("adds an EXCLUDE constraint to existing table {table}, building its index under {mode}: reads and writes wait for the whole build ({took} ms here on verify's seeded rows)"),
                            EXCLUSION_FIX,
                        ),
                        Action::SetNotNull { column } if trace.scanned.contains(table) => found(
                            Rule::SetNotNullScan,
                            table,
                            format!("SET NOT NULL on {table}.{column} scans the whole table under {mode} (no valid CHECK proves it)"),
                            NOT_NULL_FIX,
                        ),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
        // How long each strong lock this statement took is held: to the migration's end
        // in a transaction, else to the statement's.
        let held = match transactional {
            true => traces[n..].iter().map(|t| t.elapsed).sum::<Duration>(),
            false => trace.elapsed,
        };
        if held > long_lock {
            for (table, mode) in trace.locks.iter().filter(|(_, m)| m.blocks_writes()) {
                found(
                    Rule::LongStrongLock,
                    table,
                    format!("takes {mode} on {table} and holds it {} ms (threshold {} ms), blocking writes{} all that time", held.as_millis(), long_lock.as_millis(), if *mode == LockMode::AccessExclusive { " and reads" } else { "" }),
                    LONG_LOCK_FIX,
                );
            }
        }
    }
    findings
}

//! The rules no trace can see, read from the SQL alone: renames and drops that break
//! the code still running during a deploy, an enum value used in the transaction that
//! added it, non-transactional migrations that mix in ordinary DDL or cannot be run
//! again after a failure halfway, and roles no revision creates.

use std::collections::BTreeSet;

use super::statement::{classify, words, Action, Kind, WordKind};
use super::{Finding, Rule};
use crate::graph::RevisionGraph;
use crate::{Direction, Migration};

const RENAME_FIX: &str = "expand and contract: add the new column or table, write to both and backfill, move the code to the new name, and drop the old one in a later release";
const DROP_FIX: &str = "drop it only once no deployed code reads or writes it (stop using it in one release, drop it in the next); allow the finding with that reason";
const ENUM_FIX: &str = "PostgreSQL refuses a new enum value before the transaction that added it commits: add the value in a migration of its own and use it in a later one";
const MIXED_FIX: &str = "move it into a transactional migration before or after this one: a non-transactional migration runs each statement on its own, so a failure halfway leaves the earlier ones applied";
const RETRY_FIX: &str = "write it so it can run again after a failure halfway (IF NOT EXISTS / IF EXISTS): statements before a failure stay applied and the retry runs them again";
const ROLE_FIX: &str = "create the role in a revision (CREATE ROLE), or, when the real databases already have it, declare it in roles.toml beside the migrations";

/// Roles a chain may name: those its revisions create, those `roles.toml` declares, and
/// PostgreSQL's own role specifications.
pub fn known_roles(
    graph: &RevisionGraph,
) -> Result<BTreeSet<String>, crate::verify::roles::RolesError> {
    let mut roles: BTreeSet<String> = crate::verify::roles::declared_roles(graph.dir())?
        .into_iter()
        .collect();
    for name in [
        "public",
        "current_user",
        "session_user",
        "current_role",
        "postgres",
        "pg_read_all_data",
        "pg_write_all_data",
    ] {
        roles.insert(name.to_string());
    }
    for migration in graph.migrations() {
        for statement in migration.statements(Direction::Up) {
            let w = words(&statement.sql);
            if w.first().is_some_and(|x| x.upper == "CREATE")
                && w.get(1)
                    .is_some_and(|x| ["ROLE", "USER", "GROUP"].contains(&x.upper.as_str()))
            {
                if let Some(name) = w.get(2) {
                    roles.insert(name.value.clone());
                }
            }
            // A role created in a DO block (`CREATE ROLE x` inside a string) counts too.
            for x in w.iter().filter(|x| x.kind == WordKind::Str) {
                for inner in x.value.split(';') {
                    let iw = words(inner);
                    if let Some(pos) = iw.iter().position(|y| y.upper == "CREATE") {
                        if iw.get(pos + 1).is_some_and(|y| y.upper == "ROLE") {
                            if let Some(name) = iw.get(pos + 2) {
                                roles.insert(name.value.clone());
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(roles)
}

/// The static findings of one file of `migration`.
pub fn check(
    migration: &Migration,
    direction: Direction,
    known_roles: &BTreeSet<String>,
) -> Vec<Finding> {
    let path = migration.path(direction);
    let revision = &migration.revision;
    let mut findings = Vec::new();
    let mut created: BTreeSet<String> = BTreeSet::new();
    let mut new_enum_values: Vec<String> = Vec::new();
    let statements = migration.statements(direction);
    for statement in &statements {
        let kind = classify(&statement.sql);
        let mut found = |rule: Rule, message: String, fix: &str| {
            findings.push(Finding::at(rule, revision, &path, statement, message, fix));
        };
        // A downgrade removes what its upgrade added: renames and drops are its job.
        let upgrade = direction == Direction::Up;
        match &kind {
            Kind::CreateTable { table } => {
                created.insert(table.clone());
            }
            Kind::RenameTable { table, to } if upgrade && !created.contains(table) => found(
                Rule::RenameBreaksRunningCode,
                format!("renaming table {table} to {to} breaks the code still running during the deploy, which queries {table}"),
                RENAME_FIX,
            ),
            Kind::DropTable { tables } if upgrade => {
                for table in tables.iter().filter(|t| !created.contains(*t)) {
                    found(
                        Rule::DropBreaksRunningCode,
                        format!("dropping table {table} breaks any running code that still uses it, and destroys its rows"),
                        DROP_FIX,
                    );
                }
            }
            Kind::AlterTable { table, actions } if upgrade && !created.contains(table) => {
                for action in actions {
                    match action {
                        Action::RenameColumn { from, to } => found(
                            Rule::RenameBreaksRunningCode,
                            format!("renaming column {table}.{from} to {to} breaks the code still running during the deploy, which reads and writes {from}"),
                            RENAME_FIX,
                        ),
                        Action::DropColumn { column } => found(
                            Rule::DropBreaksRunningCode,
                            format!("dropping column {table}.{column} breaks any running code that still reads or writes it (an ORM selects every column it knows), and destroys its values"),
                            DROP_FIX,
                        ),
                        _ => {}
                    }
                }
            }
            Kind::AddEnumValue { value, .. } if migration.transactional => {
                new_enum_values.push(value.clone());
            }
            _ => {}
        }
        if migration.transactional {
            let used = words(&statement.sql)
                .into_iter()
                .filter(|w| w.kind == WordKind::Str)
                .find(|w| new_enum_values.contains(&w.value));
            if let (Some(used), false) = (used, matches!(kind, Kind::AddEnumValue { .. })) {
                found(
                    Rule::EnumValueUsedInTransaction,
                    format!("enum value '{}' is used in the transaction that adds it: PostgreSQL fails with \"unsafe use of new value\"", used.value),
                    ENUM_FIX,
                );
            }
        } else {
            match &kind {
                Kind::CreateIndex { concurrently: true, if_not_exists, .. } => {
                    if !if_not_exists {
                        found(
                            Rule::NonTransactionalNotRetrySafe,
                            "CREATE INDEX CONCURRENTLY without IF NOT EXISTS fails when run again after a failure later in this migration".into(),
                            RETRY_FIX,
                        );
                    }
                }
                Kind::DropIndex { concurrently: true, if_exists } => {
                    if !if_exists {
                        found(
                            Rule::NonTransactionalNotRetrySafe,
                            "DROP INDEX CONCURRENTLY without IF EXISTS fails when run again after a failure later in this migration".into(),
                            RETRY_FIX,
                        );
                    }
                }
                Kind::AddEnumValue { if_not_exists, .. } => {
                    if !if_not_exists {
                        found(
                            Rule::NonTransactionalNotRetrySafe,
                            "ALTER TYPE ... ADD VALUE without IF NOT EXISTS fails when run again after a failure later in this migration".into(),
                            RETRY_FIX,
                        );
                    }
                }
                Kind::OutsideTransaction | Kind::VacuumFull | Kind::Cluster => {}
                _ => found(
                    Rule::NonTransactionalMixesDdl,
                    "this migration is not transactional (transactional = false), so this statement runs without a transaction: if a later statement fails, it stays applied and the migration is half done".into(),
                    MIXED_FIX,
                ),
            }
        }
        for role in named_roles(&statement.sql) {
            if !known_roles.contains(&role) {
                found(
                    Rule::UnknownRole,
                    format!("role {role} is created by no revision and not declared in roles.toml: the migration fails on a database without it"),
                    ROLE_FIX,
                );
            }
        }
    }
    findings
        .into_iter()
        .map(|f| f.in_direction(direction))
        .collect()
}

/// The roles a GRANT, REVOKE, CREATE/ALTER POLICY or OWNER TO names.
fn named_roles(sql: &str) -> Vec<String> {
    let w = words(sql);
    let first = |i: usize| w.get(i).map(|x| x.upper.as_str()).unwrap_or("");
    let list_after = match (first(0), first(1)) {
        ("GRANT", _) => "TO",
        ("REVOKE", _) => "FROM",
        ("CREATE" | "ALTER", "POLICY") => "TO",
        ("ALTER", _) => "OWNER",
        _ => return Vec::new(),
    };
    let Some(mut i) = w
        .iter()
        .position(|x| x.depth == 0 && x.kind == WordKind::Ident && x.upper == list_after)
    else {
        return Vec::new();
    };
    i += 1;
    if list_after == "OWNER" {
        if first(i) != "TO" {
            return Vec::new();
        }
        i += 1;
    }
    let mut roles = Vec::new();
    while let Some(x) = w.get(i) {
        if x.kind == WordKind::Ident && x.upper == "GROUP" {
            i += 1;
            continue;
        }
        if !matches!(x.kind, WordKind::Ident | WordKind::Quoted) {
            break;
        }
        if x.kind == WordKind::Ident
            && ["WITH", "GRANTED", "CASCADE", "RESTRICT", "USING"].contains(&x.upper.as_str())
        {
            break;
        }
        roles.push(x.value.clone());
        i += 1;
        if first(i) != "," {
            break;
        }
        i += 1;
    }
    roles
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_of_grants_policies_and_owners() {
        assert_eq!(
            named_roles("GRANT SELECT ON leads TO app_ro, \"Reporting\" WITH GRANT OPTION"),
            ["app_ro", "Reporting"]
        );
        assert_eq!(
            named_roles("REVOKE ALL ON leads FROM public CASCADE"),
            ["public"]
        );
        assert_eq!(
            named_roles("CREATE POLICY p ON leads FOR SELECT TO app USING (tenant_id = current_setting('x')::uuid)"),
            ["app"]
        );
        assert_eq!(
            named_roles("ALTER TABLE leads OWNER TO owner_role"),
            ["owner_role"]
        );
        assert!(named_roles("CREATE POLICY p ON leads USING (true)").is_empty());
        assert!(named_roles("ALTER TABLE leads ADD COLUMN x int").is_empty());
    }
}

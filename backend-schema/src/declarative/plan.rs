//! Migration SQL from the difference between two catalogs, written to be safe on a busy
//! production table: indexes built `CONCURRENTLY`, foreign keys and checks added
//! `NOT VALID` then validated, `NOT NULL` through a validated check, and a comment on
//! every statement that still takes a long strong lock, saying why.

use std::collections::BTreeSet;

use crate::catalog::{Catalog, Column, Constraint, Policy, Table};
use crate::sql::{ident, literal};

/// The statements that turn one schema into another, in a safe order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// What the plan destroys (tables, columns, enum values), for `--allow-drop`.
    pub drops: Vec<String>,
    /// Things a person must decide, such as a drop and an add that may be a rename.
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub sql: String,
    /// Why this statement is not lock-free, or what to check before running it.
    pub why: Option<String>,
    /// Must run outside a transaction (`CREATE INDEX CONCURRENTLY` and friends).
    pub concurrent: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error(
        "table {table}: column(s) {columns} are declared before columns the table already has, \
         but PostgreSQL adds columns at the end; move them to the end of its CREATE TABLE"
    )]
    ColumnOrder { table: String, columns: String },
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// A plan with a concurrent statement runs outside a transaction, one statement at a time.
    pub fn transactional(&self) -> bool {
        !self.steps.iter().any(|s| s.concurrent)
    }

    /// The plan as a migration file body.
    pub fn to_sql(&self) -> String {
        let mut out = String::new();
        for note in &self.notes {
            out.push_str(&format!("-- NOTE: {note}\n"));
        }
        if !self.notes.is_empty() {
            out.push('\n');
        }
        for step in &self.steps {
            if let Some(why) = &step.why {
                out.push_str(&format!("-- {why}\n"));
            }
            out.push_str(&step.sql);
            out.push_str(";\n");
        }
        out
    }

    fn push(&mut self, sql: String) {
        self.steps.push(Step {
            sql,
            why: None,
            concurrent: false,
        });
    }

    fn push_why(&mut self, sql: String, why: &str) {
        self.steps.push(Step {
            sql,
            why: Some(why.to_string()),
            concurrent: false,
        });
    }

    fn push_concurrent(&mut self, sql: String) {
        self.steps.push(Step {
            sql,
            why: None,
            concurrent: true,
        });
    }
}

/// The statements that turn `from` into `to`.
pub fn plan(from: &Catalog, to: &Catalog) -> Result<Plan, PlanError> {
    plan_with(from, to, true)
}

/// A downgrade cannot put a dropped column back in its old place: it comes back last.
pub fn plan_downgrade(from: &Catalog, to: &Catalog) -> Plan {
    let mut plan = plan_with(from, to, false).expect("column order is not checked");
    for (table, new) in &to.tables {
        let Some(old) = from.tables.get(table) else {
            continue;
        };
        let moved: Vec<&str> = new
            .columns
            .iter()
            .filter(|c| old.column(&c.name).is_none())
            .map(|c| c.name.as_str())
            .collect();
        if !moved.is_empty() && check_column_order(table, old, new).is_err() {
            plan.notes.push(format!(
                "{table}.{} come(s) back as the last column(s) of {table}, not in their old place",
                moved.join(", ")
            ));
        }
    }
    plan
}

/// The migrations, each as (up, down), that carry out `whole` (the plan from `from` to
/// `to`): one, or two when it mixes ordinary DDL with `CONCURRENTLY` work. Then the
/// ordinary part runs in its own transactional migration (all or nothing), and only the
/// index builds, with the keys and foreign keys that need them, run outside one.
pub fn into_migrations(from: &Catalog, to: &Catalog, whole: Plan) -> Vec<(Plan, Plan)> {
    if !whole.transactional() {
        if let Some((middle, first, second)) = intermediate(from, to) {
            return vec![
                (first, plan_downgrade(&middle, from)),
                (second, plan_downgrade(to, &middle)),
            ];
        }
    }
    vec![(whole, plan_downgrade(to, from))]
}

/// The schema between `from` and `to` that holds everything but the concurrent work,
/// with the plans to it and from it; `None` when one side would be empty or the first
/// could not run in a transaction.
fn intermediate(from: &Catalog, to: &Catalog) -> Option<(Catalog, Plan, Plan)> {
    let mut middle = to.clone();
    let mut deferred_keys = false;
    for (name, table) in middle.tables.iter_mut() {
        let Some(old) = from.tables.get(name) else {
            continue;
        };
        let dropped: Vec<&str> = old
            .columns
            .iter()
            .filter(|c| table.column(&c.name).is_none())
            .map(|c| c.name.as_str())
            .collect();
        // Indexes stay as they were (an index on a dropped column goes with it).
        table.indexes = old
            .indexes
            .iter()
            .filter(|(_, definition)| !dropped.iter().any(|c| mentions(definition, c)))
            .map(|(n, d)| (n.clone(), d.clone()))
            .collect();
        // Keys that need a concurrently built index wait for the second migration.
        let new_keys: Vec<String> = table
            .constraints
            .iter()
            .filter(|(n, c)| "pu".contains(c.kind) && old.constraints.get(*n) != Some(*c))
            .map(|(n, _)| n.clone())
            .collect();
        for key in new_keys {
            deferred_keys = true;
            table.constraints.remove(&key);
            if let Some(before) = old.constraints.get(&key) {
                table.constraints.insert(key, before.clone());
            }
        }
    }
    if deferred_keys {
        // A new foreign key may reference one of those keys: they wait too.
        for (name, table) in middle.tables.iter_mut() {
            let old = from.tables.get(name);
            table
                .constraints
                .retain(|n, c| c.kind != 'f' || old.and_then(|o| o.constraints.get(n)) == Some(c));
        }
    }
    let first = plan(from, &middle).ok()?;
    let second = plan(&middle, to).ok()?;
    (!first.is_empty() && !second.is_empty() && first.transactional())
        .then_some((middle, first, second))
}

/// Whether `name` appears in `definition` as a whole word.
fn mentions(definition: &str, name: &str) -> bool {
    definition
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .any(|word| word == name)
}

fn plan_with(from: &Catalog, to: &Catalog, strict_order: bool) -> Result<Plan, PlanError> {
    let mut plan = Plan::default();
    let kept: Vec<(&String, &Table, &Table)> = to
        .tables
        .iter()
        .filter_map(|(name, new)| from.tables.get(name).map(|old| (name, old, new)))
        .collect();
    let created: Vec<(&String, &Table)> = to
        .tables
        .iter()
        .filter(|(name, _)| !from.tables.contains_key(*name))
        .collect();
    let dropped: Vec<&String> = from
        .tables
        .keys()
        .filter(|name| !to.tables.contains_key(*name))
        .collect();
    if strict_order {
        for (name, old, new) in &kept {
            check_column_order(name, old, new)?;
        }
    }

    // Types first: new enums, and values appended in place.
    let mut rebuilt = Vec::new();
    let mut added_values = Vec::new();
    for (name, values) in &to.enums {
        match from.enums.get(name) {
            None => plan.push(format!(
                "CREATE TYPE {} AS ENUM ({})",
                ident(name),
                literals(values)
            )),
            Some(old) if old == values => {}
            Some(old) if is_subsequence(old, values) => {
                for (i, value) in values.iter().enumerate() {
                    if old.contains(value) {
                        continue;
                    }
                    let position = match i {
                        0 => format!("BEFORE {}", literal(&values[1])),
                        _ => format!("AFTER {}", literal(&values[i - 1])),
                    };
                    added_values.push((
                        plan.steps.len(),
                        format!("{}::{}", literal(value), ident(name)),
                    ));
                    plan.push(format!(
                        "ALTER TYPE {} ADD VALUE {} {position}",
                        ident(name),
                        literal(value)
                    ));
                }
            }
            Some(old) => {
                let removed: Vec<&String> = old.iter().filter(|v| !values.contains(v)).collect();
                if !removed.is_empty() {
                    plan.drops.push(format!(
                        "enum {name} value(s) {}",
                        removed
                            .iter()
                            .map(|v| literal(v))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
                rebuilt.push((name, values));
            }
        }
    }

    // Out of the way of what changes: policies, constraints and indexes that go or change.
    for (table, old, new) in &kept {
        for (name, policy) in &old.policies {
            if new.policies.get(name) != Some(policy) {
                plan.push(format!("DROP POLICY {} ON {}", ident(name), ident(table)));
            }
        }
    }
    for kinds in ["f", "pucx"] {
        for (table, old, new) in &kept {
            for (name, constraint) in &old.constraints {
                if kinds.contains(constraint.kind) && new.constraints.get(name) != Some(constraint)
                {
                    plan.push(format!(
                        "ALTER TABLE {} DROP CONSTRAINT {}",
                        ident(table),
                        ident(name)
                    ));
                }
            }
        }
    }
    for (_, old, new) in &kept {
        for (name, definition) in &old.indexes {
            if new.indexes.get(name) != Some(definition) {
                plan.push_concurrent(format!("DROP INDEX CONCURRENTLY {}", ident(name)));
            }
        }
    }

    for (name, table) in &created {
        let columns: Vec<String> = table
            .columns
            .iter()
            .map(|c| format!("    {}", column_definition(c)))
            .collect();
        plan.push(format!(
            "CREATE TABLE {} (\n{}\n)",
            ident(name),
            columns.join(",\n")
        ));
    }

    for (table, old, new) in &kept {
        let added: Vec<&Column> = new
            .columns
            .iter()
            .filter(|c| old.column(&c.name).is_none())
            .collect();
        for column in &old.columns {
            if new.column(&column.name).is_some() {
                continue;
            }
            if let Some(twin) = added.iter().find(|c| c.data_type == column.data_type) {
                plan.notes.push(format!(
                    "{table}.{} is dropped and {table}.{} added with the same type; if this is a rename, replace the DROP and ADD with: ALTER TABLE {} RENAME COLUMN {} TO {};",
                    column.name,
                    twin.name,
                    ident(table),
                    ident(&column.name),
                    ident(&twin.name)
                ));
            }
            plan.drops.push(format!("column {table}.{}", column.name));
            plan.push(format!(
                "ALTER TABLE {} DROP COLUMN {}",
                ident(table),
                ident(&column.name)
            ));
        }
    }

    for (name, values) in &rebuilt {
        rebuild_enum(&mut plan, name, values, &kept);
    }

    for (table, old, new) in &kept {
        for column in &new.columns {
            match old.column(&column.name) {
                None => add_column(&mut plan, table, column),
                Some(before) => alter_column(&mut plan, table, before, column, &rebuilt),
            }
        }
    }

    // Constraints: keys and checks before the foreign keys that need them.
    for kinds in ["pu", "cx", "f"] {
        for (table, t) in &created {
            for (name, constraint) in &t.constraints {
                if kinds.contains(constraint.kind) {
                    plan.push(add_constraint(table, name, &constraint.definition));
                }
            }
        }
        for (table, old, new) in &kept {
            for (name, constraint) in &new.constraints {
                if kinds.contains(constraint.kind) && old.constraints.get(name) != Some(constraint)
                {
                    add_constraint_safely(&mut plan, table, name, constraint);
                }
            }
        }
    }

    for (_, table) in &created {
        for definition in table.indexes.values() {
            plan.push(definition.clone());
        }
    }
    for (_, old, new) in &kept {
        for (name, definition) in &new.indexes {
            if old.indexes.get(name) != Some(definition) {
                plan.push_concurrent(concurrently(definition));
            }
        }
    }

    for (name, table) in &created {
        row_security(&mut plan, name, &Table::default(), table);
    }
    for (name, old, new) in &kept {
        row_security(&mut plan, name, old, new);
    }
    for (table, t) in &created {
        for (name, policy) in &t.policies {
            plan.push(create_policy(table, name, policy));
        }
    }
    for (table, old, new) in &kept {
        for (name, policy) in &new.policies {
            if old.policies.get(name) != Some(policy) {
                plan.push(create_policy(table, name, policy));
            }
        }
    }

    for (name, table) in &created {
        comments(&mut plan, name, &Table::default(), table);
    }
    for (name, old, new) in &kept {
        comments(&mut plan, name, old, new);
    }

    if !dropped.is_empty() {
        for name in &dropped {
            plan.drops.push(format!("table {name}"));
        }
        plan.push(format!(
            "DROP TABLE {}",
            dropped
                .iter()
                .map(|n| ident(n))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    for name in from.enums.keys() {
        if !to.enums.contains_key(name) {
            plan.push(format!("DROP TYPE {}", ident(name)));
        }
    }
    // PostgreSQL refuses a new enum value in the transaction that added it: if a later
    // statement uses one (a default, say), the value must be committed first.
    for (index, used_as) in added_values {
        if plan.steps[index + 1..]
            .iter()
            .any(|s| s.sql.contains(&used_as))
        {
            let step = &mut plan.steps[index];
            step.concurrent = true;
            step.why = Some(format!(
                "{used_as} is used below, and PostgreSQL only allows a new enum value once it is committed: this migration runs outside a transaction"
            ));
        }
    }
    Ok(plan)
}

fn check_column_order(name: &str, old: &Table, new: &Table) -> Result<(), PlanError> {
    let existing: BTreeSet<&str> = old.columns.iter().map(|c| c.name.as_str()).collect();
    let mut seen_new = Vec::new();
    for column in &new.columns {
        if existing.contains(column.name.as_str()) {
            if !seen_new.is_empty() {
                return Err(PlanError::ColumnOrder {
                    table: name.to_string(),
                    columns: seen_new.join(", "),
                });
            }
        } else {
            seen_new.push(column.name.clone());
        }
    }
    Ok(())
}

fn column_definition(column: &Column) -> String {
    let mut text = format!("{} {}", ident(&column.name), column.data_type);
    if let Some(default) = &column.default {
        text.push_str(&format!(" DEFAULT {default}"));
    }
    if column.not_null {
        text.push_str(" NOT NULL");
    }
    text
}

fn add_column(plan: &mut Plan, table: &str, column: &Column) {
    let t = ident(table);
    match (&column.default, column.not_null) {
        (Some(default), _) if looks_volatile(default) => plan.push_why(
            format!("ALTER TABLE {t} ADD COLUMN {}", column_definition(column)),
            "a volatile default rewrites the whole table under an ACCESS EXCLUSIVE lock; on a big table add the column without it, backfill in batches, then set the default",
        ),
        (Some(_), _) | (None, false) => plan.push(format!(
            "ALTER TABLE {t} ADD COLUMN {}",
            column_definition(column)
        )),
        (None, true) => {
            let nullable = Column {
                not_null: false,
                ..column.clone()
            };
            plan.push(format!(
                "ALTER TABLE {t} ADD COLUMN {}",
                column_definition(&nullable)
            ));
            set_not_null(
                plan,
                table,
                &column.name,
                Some("NOT NULL without a default fails on a table that has rows: give the column a default, or backfill it before this runs"),
            );
        }
    }
}

fn alter_column(
    plan: &mut Plan,
    table: &str,
    old: &Column,
    new: &Column,
    rebuilt: &[(&String, &Vec<String>)],
) {
    let (t, c) = (ident(table), ident(&new.name));
    let retyped_by_rebuild = rebuilt.iter().any(|(name, _)| **name == new.data_type);
    if old.data_type != new.data_type {
        plan.push_why(
            format!(
                "ALTER TABLE {t} ALTER COLUMN {c} TYPE {} USING {c}::{}",
                new.data_type, new.data_type
            ),
            "changing a type rewrites the table and its indexes under an ACCESS EXCLUSIVE lock, unless the change is binary-coercible (varchar(n) to a longer varchar or text)",
        );
    }
    if old.default != new.default && !retyped_by_rebuild {
        match &new.default {
            Some(default) => plan.push(format!(
                "ALTER TABLE {t} ALTER COLUMN {c} SET DEFAULT {default}"
            )),
            None => plan.push(format!("ALTER TABLE {t} ALTER COLUMN {c} DROP DEFAULT")),
        }
    }
    match (old.not_null, new.not_null) {
        (false, true) => set_not_null(plan, table, &new.name, None),
        (true, false) => plan.push(format!("ALTER TABLE {t} ALTER COLUMN {c} DROP NOT NULL")),
        _ => {}
    }
    if old.comment != new.comment {
        plan.push(format!(
            "COMMENT ON COLUMN {t}.{c} IS {}",
            new.comment.as_deref().map_or("NULL".into(), literal)
        ));
    }
}

/// `SET NOT NULL` scans the table under ACCESS EXCLUSIVE, unless a validated
/// `CHECK (c IS NOT NULL)` already proves it; validating one only needs SHARE UPDATE
/// EXCLUSIVE, which lets reads and writes go on.
fn set_not_null(plan: &mut Plan, table: &str, column: &str, why: Option<&str>) {
    let (t, c) = (ident(table), ident(column));
    let check = ident(&truncate_name(&format!("{table}_{column}_not_null")));
    let add = format!("ALTER TABLE {t} ADD CONSTRAINT {check} CHECK ({c} IS NOT NULL) NOT VALID");
    match why {
        Some(why) => plan.push_why(add, why),
        None => plan.push(add),
    }
    plan.push(format!("ALTER TABLE {t} VALIDATE CONSTRAINT {check}"));
    plan.push(format!("ALTER TABLE {t} ALTER COLUMN {c} SET NOT NULL"));
    plan.push(format!("ALTER TABLE {t} DROP CONSTRAINT {check}"));
}

fn add_constraint(table: &str, name: &str, definition: &str) -> String {
    format!(
        "ALTER TABLE {} ADD CONSTRAINT {} {definition}",
        ident(table),
        ident(name)
    )
}

fn add_constraint_safely(plan: &mut Plan, table: &str, name: &str, constraint: &Constraint) {
    let (t, n) = (ident(table), ident(name));
    match constraint.kind {
        'f' | 'c' if !constraint.definition.ends_with("NOT VALID") => {
            plan.push(format!(
                "ALTER TABLE {t} ADD CONSTRAINT {n} {} NOT VALID",
                constraint.definition
            ));
            plan.push(format!("ALTER TABLE {t} VALIDATE CONSTRAINT {n}"));
        }
        'p' | 'u' if constraint.index.is_some() => {
            let index = constraint.index.as_deref().unwrap_or_default();
            plan.push_concurrent(concurrently(index));
            let kind = if constraint.kind == 'p' {
                "PRIMARY KEY"
            } else {
                "UNIQUE"
            };
            plan.push_why(
                format!("ALTER TABLE {t} ADD CONSTRAINT {n} {kind} USING INDEX {n}"),
                "attaching the index is quick, but a primary key also sets NOT NULL on its columns, which scans the table",
            );
        }
        _ => plan.push_why(
            add_constraint(table, name, &constraint.definition),
            "this constraint is built under a strong lock that blocks writes for as long as the table takes to check",
        ),
    }
}

fn rebuild_enum(
    plan: &mut Plan,
    name: &str,
    values: &[String],
    kept: &[(&String, &Table, &Table)],
) {
    let old_name = truncate_name(&format!("{name}__old"));
    plan.push_why(
        format!("ALTER TYPE {} RENAME TO {}", ident(name), ident(&old_name)),
        "values are removed or reordered: the type is rebuilt and every column using it is rewritten under an ACCESS EXCLUSIVE lock; rows holding a removed value make this fail",
    );
    plan.push(format!(
        "CREATE TYPE {} AS ENUM ({})",
        ident(name),
        literals(values)
    ));
    for (table, old, new) in kept {
        for column in &new.columns {
            let Some(before) = old.column(&column.name) else {
                continue;
            };
            if before.data_type != *name || column.data_type != *name {
                continue;
            }
            let (t, c) = (ident(table), ident(&column.name));
            if before.default.is_some() {
                plan.push(format!("ALTER TABLE {t} ALTER COLUMN {c} DROP DEFAULT"));
            }
            plan.push(format!(
                "ALTER TABLE {t} ALTER COLUMN {c} TYPE {} USING {c}::text::{}",
                ident(name),
                ident(name)
            ));
            if let Some(default) = &column.default {
                plan.push(format!(
                    "ALTER TABLE {t} ALTER COLUMN {c} SET DEFAULT {default}"
                ));
            }
        }
    }
    plan.push(format!("DROP TYPE {}", ident(&old_name)));
}

fn row_security(plan: &mut Plan, table: &str, old: &Table, new: &Table) {
    let t = ident(table);
    if old.row_security != new.row_security {
        let verb = if new.row_security {
            "ENABLE"
        } else {
            "DISABLE"
        };
        plan.push(format!("ALTER TABLE {t} {verb} ROW LEVEL SECURITY"));
    }
    if old.force_row_security != new.force_row_security {
        let verb = if new.force_row_security {
            "FORCE"
        } else {
            "NO FORCE"
        };
        plan.push(format!("ALTER TABLE {t} {verb} ROW LEVEL SECURITY"));
    }
}

fn create_policy(table: &str, name: &str, policy: &Policy) -> String {
    let mut sql = format!(
        "CREATE POLICY {} ON {} AS {} FOR {} TO {}",
        ident(name),
        ident(table),
        if policy.permissive {
            "PERMISSIVE"
        } else {
            "RESTRICTIVE"
        },
        policy.command,
        policy
            .roles
            .iter()
            .map(|r| if r == "public" {
                "PUBLIC".to_string()
            } else {
                ident(r)
            })
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some(using) = &policy.using {
        sql.push_str(&format!("\n    USING ({using})"));
    }
    if let Some(check) = &policy.with_check {
        sql.push_str(&format!("\n    WITH CHECK ({check})"));
    }
    sql
}

fn comments(plan: &mut Plan, table: &str, old: &Table, new: &Table) {
    if old.comment != new.comment {
        plan.push(format!(
            "COMMENT ON TABLE {} IS {}",
            ident(table),
            new.comment.as_deref().map_or("NULL".into(), literal)
        ));
    }
    // Column comments of kept columns are handled with the column; these are new ones.
    for column in &new.columns {
        if old.column(&column.name).is_none() {
            if let Some(comment) = &column.comment {
                plan.push(format!(
                    "COMMENT ON COLUMN {}.{} IS {}",
                    ident(table),
                    ident(&column.name),
                    literal(comment)
                ));
            }
        }
    }
}

/// `CREATE [UNIQUE] INDEX` as `CREATE [UNIQUE] INDEX CONCURRENTLY`.
fn concurrently(definition: &str) -> String {
    for prefix in ["CREATE UNIQUE INDEX ", "CREATE INDEX "] {
        if let Some(rest) = definition.strip_prefix(prefix) {
            return format!("{prefix}CONCURRENTLY {rest}");
        }
    }
    definition.to_string()
}

fn is_subsequence(old: &[String], new: &[String]) -> bool {
    let mut rest = new.iter();
    old.iter().all(|v| rest.any(|n| n == v))
}

/// A default that is evaluated per row, so adding it rewrites the table.
fn looks_volatile(default: &str) -> bool {
    ["random", "uuid", "clock_timestamp", "nextval", "timeofday"]
        .iter()
        .any(|f| default.contains(f))
}

fn truncate_name(name: &str) -> String {
    let mut end = name.len().min(63);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_string()
}

fn literals(values: &[String]) -> String {
    values
        .iter()
        .map(|v| literal(v))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests;

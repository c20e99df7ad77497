//! Migration SQL from the difference between two catalogs, written to be safe on a busy
//! production table. Every statement knows its phase (which migration it belongs in),
//! the lock it takes on each table and whether it scans or rewrites (`locks`): whatever
//! reads every row runs in a later transaction than the strong lock that set it up
//! (`NOT VALID` then `VALIDATE`, `NOT NULL` through a validated check, keys from an
//! index built `CONCURRENTLY`), and a comment says why above every statement that
//! still takes a long strong lock.

pub mod locks;
mod routines;
mod views;

use std::collections::{BTreeMap, BTreeSet};

use crate::catalog::{Catalog, Column, Constraint, Identity, Policy, Table};
use crate::sql::{ident, literal};
pub use locks::{LockMode, Work};

/// The statements that turn one schema into another, in a safe order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// What the plan destroys (tables, columns, enum values), for `--allow-drop`.
    pub drops: Vec<String>,
    /// Things a person must decide or know, such as a drop and an add that may be a rename.
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub sql: String,
    /// Why this statement is not lock-free, or what to check before running it.
    pub why: Option<String>,
    pub phase: Phase,
    /// The lock it takes on each table it touches.
    pub locks: Vec<(String, LockMode)>,
    /// What it does to the rows while holding its strongest lock.
    pub work: Work,
}

/// The migrations a change is split into, in the order they run. Each phase that has
/// statements becomes one migration, so what scans a table commits separately from
/// the strong lock that set it up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    /// Enum values a later statement uses: PostgreSQL only allows a new value once it
    /// is committed.
    EnumValues,
    /// Ordinary DDL, all or nothing in one transaction: catalog changes under brief locks.
    Ddl,
    /// `CREATE`/`DROP INDEX CONCURRENTLY`, which cannot run in a transaction.
    Concurrent,
    /// Primary and unique keys attached to the indexes built concurrently, and the
    /// foreign keys that reference them.
    Attach,
    /// `VALIDATE CONSTRAINT` (reads and writes go on), then `SET NOT NULL` on columns a
    /// validated check already proves, then those checks dropped.
    Validate,
}

impl Phase {
    pub const ALL: [Phase; 5] = [
        Phase::EnumValues,
        Phase::Ddl,
        Phase::Concurrent,
        Phase::Attach,
        Phase::Validate,
    ];

    pub fn transactional(self) -> bool {
        self != Phase::Concurrent
    }

    /// What the migration of this phase does, for its message and the SQL's headers.
    pub fn title(self) -> &'static str {
        match self {
            Phase::EnumValues => "new enum values, committed before their use",
            Phase::Ddl => "schema changes",
            Phase::Concurrent => "concurrent indexes",
            Phase::Attach => "keys from the new indexes",
            Phase::Validate => "validate constraints",
        }
    }
}

/// Tables and columns the developer says were renamed (`--rename`), not dropped and added.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Renames {
    /// Old table name -> new.
    pub tables: BTreeMap<String, String>,
    /// (table's new name, old column name) -> new column name.
    pub columns: BTreeMap<(String, String), String>,
}

impl Renames {
    /// The renames that undo these.
    pub fn reversed(&self) -> Renames {
        let back = |name: &String| {
            self.tables
                .iter()
                .find(|(_, new)| *new == name)
                .map_or(name.clone(), |(old, _)| old.clone())
        };
        Renames {
            tables: self
                .tables
                .iter()
                .map(|(old, new)| (new.clone(), old.clone()))
                .collect(),
            columns: self
                .columns
                .iter()
                .map(|((table, old), new)| ((back(table), new.clone()), old.clone()))
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.tables.is_empty() && self.columns.is_empty()
    }

    /// Adds `TABLE.OLD=NEW` (a column) or `OLD=NEW` (a table).
    pub fn add(&mut self, spec: &str) -> Result<(), PlanError> {
        let problem = |problem: &str| PlanError::Rename {
            what: spec.to_string(),
            problem: problem.to_string(),
        };
        let (old, new) = spec
            .split_once('=')
            .ok_or_else(|| problem("write TABLE.OLD=NEW for a column, OLD=NEW for a table"))?;
        let (old, new) = (old.trim(), new.trim());
        let valid = |name: &str| !name.is_empty() && !name.contains('.');
        match old.split_once('.') {
            Some((table, column)) if valid(table) && valid(column) && valid(new) => {
                self.columns
                    .insert((table.to_string(), column.to_string()), new.to_string());
            }
            None if valid(old) && valid(new) => {
                self.tables.insert(old.to_string(), new.to_string());
            }
            _ => {
                return Err(problem(
                    "write TABLE.OLD=NEW for a column, OLD=NEW for a table (NEW without a table)",
                ))
            }
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error(
        "table {table}: new column {column} is NOT NULL without a default, which cannot be added to a table that has rows.\n\
         Either give it a default (`{column} {data_type} DEFAULT ... NOT NULL`), or change the schema in three steps, each its own migration:\n\
         1. expand: declare it without NOT NULL, run `cargo xtask migrate revision --autogenerate`:\n\
         \x20   ALTER TABLE {t} ADD COLUMN {c} {data_type};\n\
         2. backfill, in batches so no transaction holds row locks for long, until it updates 0 rows (a hand-written migration, or a job):\n\
         \x20   UPDATE {t} SET {c} = ... WHERE ctid = ANY (ARRAY(SELECT ctid FROM {t} WHERE {c} IS NULL LIMIT 10000));\n\
         3. contract: declare it NOT NULL again and autogenerate; that writes the NOT NULL through a validated check, without a long lock:\n\
         \x20   ALTER TABLE {t} ADD CONSTRAINT {t}_{column}_not_null CHECK ({c} IS NOT NULL) NOT VALID;\n\
         \x20   ALTER TABLE {t} VALIDATE CONSTRAINT {t}_{column}_not_null;  -- its own transaction\n\
         \x20   ALTER TABLE {t} ALTER COLUMN {c} SET NOT NULL;\n\
         \x20   ALTER TABLE {t} DROP CONSTRAINT {t}_{column}_not_null;",
        t = ident(table),
        c = ident(column)
    )]
    NeedsBackfill {
        table: String,
        column: String,
        data_type: String,
    },
    #[error("--rename {what}: {problem}")]
    Rename { what: String, problem: String },
    #[error(
        "table {table}: column {column} {change}; autogenerate cannot write that change in place: \
         write this migration by hand, or add a new column and drop the old one"
    )]
    Unsupported {
        table: String,
        column: String,
        change: String,
    },
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// A plan with a concurrent statement runs outside a transaction, one statement at a time.
    pub fn transactional(&self) -> bool {
        self.steps.iter().all(|s| s.phase.transactional())
    }

    /// The phases this plan has statements in, in order.
    pub fn phases(&self) -> Vec<Phase> {
        Phase::ALL
            .into_iter()
            .filter(|p| self.steps.iter().any(|s| s.phase == *p))
            .collect()
    }

    /// The statements of one phase (the notes go with the first phase).
    pub fn only(&self, phase: Phase) -> Plan {
        Plan {
            steps: self
                .steps
                .iter()
                .filter(|s| s.phase == phase)
                .cloned()
                .collect(),
            drops: Vec::new(),
            notes: match self.phases().first() == Some(&phase) {
                true => self.notes.clone(),
                false => Vec::new(),
            },
        }
    }

    /// The strongest lock per table in `existing`, as `verify`'s lock profile says it.
    pub fn lock_profile(&self, existing: &BTreeSet<String>) -> Vec<String> {
        locks::profile(self.steps.iter().flat_map(|s| &s.locks), existing)
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
            out.push(';');
            if let Some(locks) = step.describe_locks() {
                out.push_str(&format!(" -- {locks}"));
            }
            out.push('\n');
        }
        out
    }

    /// The plan as the migrations it becomes, each under a header naming its phase.
    pub fn to_sql_by_phase(&self) -> String {
        let phases = self.phases();
        if phases.len() < 2 {
            return self.to_sql();
        }
        let mut out = String::new();
        for (i, phase) in phases.iter().enumerate() {
            out.push_str(&format!(
                "-- migration {} of {}: {}{}\n",
                i + 1,
                phases.len(),
                phase.title(),
                if phase.transactional() {
                    ""
                } else {
                    " (outside a transaction)"
                }
            ));
            out.push_str(&self.only(*phase).to_sql());
        }
        out
    }

    /// The same statements for a migration that must run in one transaction (a
    /// downgrade): indexes are built and dropped without `CONCURRENTLY`.
    pub fn in_one_transaction(mut self) -> Plan {
        self.steps
            .retain(|s| s.why.as_deref() != Some(DROP_LEFTOVER));
        for step in &mut self.steps {
            if step.phase != Phase::Concurrent {
                continue;
            }
            step.phase = Phase::Ddl;
            if let Some(rest) = step.sql.strip_prefix("DROP INDEX CONCURRENTLY ") {
                step.sql = format!("DROP INDEX {rest}");
                for lock in &mut step.locks {
                    lock.1 = LockMode::AccessExclusive;
                }
            } else {
                step.sql = step.sql.replacen(" CONCURRENTLY", "", 1);
                for lock in &mut step.locks {
                    lock.1 = LockMode::Share;
                }
                step.why = Some(
                    "a downgrade runs in one transaction, so this index is built without CONCURRENTLY: writes to its table wait while it builds".into(),
                );
            }
        }
        self
    }

    fn add(&mut self, phase: Phase, sql: String) -> &mut Step {
        self.steps.push(Step {
            sql,
            why: None,
            phase,
            locks: Vec::new(),
            work: Work::Catalog,
        });
        self.steps.last_mut().expect("just pushed")
    }

    /// A catalog-only statement under ACCESS EXCLUSIVE on `table`, the level of most
    /// `ALTER TABLE` forms.
    fn alter(&mut self, table: &str, sql: String) -> &mut Step {
        self.add(Phase::Ddl, sql)
            .lock(table, LockMode::AccessExclusive)
    }
}

impl Step {
    fn lock(&mut self, table: &str, mode: LockMode) -> &mut Step {
        self.locks.push((table.to_string(), mode));
        self
    }

    fn work(&mut self, work: Work) -> &mut Step {
        self.work = work;
        self
    }

    fn why(&mut self, why: impl Into<String>) -> &mut Step {
        self.why = Some(why.into());
        self
    }

    /// "AccessExclusiveLock on leads, catalog only": what it costs the tables it touches.
    pub fn describe_locks(&self) -> Option<String> {
        if self.locks.is_empty() {
            return None;
        }
        let locks: Vec<String> = self
            .locks
            .iter()
            .map(|(table, mode)| format!("{mode} on {table}"))
            .collect();
        Some(format!("{}; {}", locks.join(", "), self.work))
    }

    /// The strongest lock it takes.
    pub fn strongest_lock(&self) -> Option<LockMode> {
        self.locks.iter().map(|l| l.1).max()
    }
}

/// The statements that turn `from` into `to`.
pub fn plan(from: &Catalog, to: &Catalog, renames: &Renames) -> Result<Plan, PlanError> {
    plan_with(from, to, renames, false)
}

/// The statements that turn `from` back into `to` in a downgrade: a dropped column
/// cannot come back in its old place (it comes back last), and a NOT NULL one comes
/// back with a placeholder value, because its values are gone.
pub fn plan_downgrade(from: &Catalog, to: &Catalog, renames: &Renames) -> Plan {
    let mut plan = match plan_with(from, to, renames, true) {
        Ok(plan) => plan,
        Err(err) => Plan {
            notes: vec![format!("cannot write this downgrade: {err}")],
            ..Plan::default()
        },
    };
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
        let at_the_end = new.columns.len() >= moved.len()
            && new.columns[new.columns.len() - moved.len()..]
                .iter()
                .all(|c| moved.contains(&c.name.as_str()));
        if !moved.is_empty() && !at_the_end {
            plan.notes.push(format!(
                "{table}.{} come(s) back as the last column(s) of {table}, not in their old place",
                moved.join(", ")
            ));
        }
    }
    plan
}

/// `from` with the renames applied, and the statements that apply them.
fn apply_renames(
    from: &Catalog,
    renames: &Renames,
    to: &Catalog,
    plan: &mut Plan,
) -> Result<Catalog, PlanError> {
    let mut from = from.clone();
    for (old, new) in &renames.tables {
        let problem = |problem: &str| PlanError::Rename {
            what: format!("{old}={new}"),
            problem: problem.to_string(),
        };
        if !to.tables.contains_key(new) {
            return Err(problem(&format!("the schema files declare no table {new}")));
        }
        if from.tables.contains_key(new) {
            return Err(problem(&format!("table {new} already exists")));
        }
        let Some(table) = from.tables.remove(old) else {
            return Err(problem(&format!("the migrations' head has no table {old}")));
        };
        let table = rename_in_table(table, old, new);
        plan.alter(
            old,
            format!("ALTER TABLE {} RENAME TO {}", ident(old), ident(new)),
        );
        plan.notes.push(format!(
            "table {old} is renamed to {new}: application code still running that uses {old} fails from the moment this migration commits; deploy code that uses {new} with it"
        ));
        from.tables.insert(new.clone(), table);
        for other in from.tables.values_mut() {
            for constraint in other.constraints.values_mut() {
                if constraint.references.as_deref() == Some(old.as_str()) {
                    constraint.references = Some(new.clone());
                    constraint.definition = replace_word(&constraint.definition, old, new);
                }
            }
        }
    }
    for ((table, old), new) in &renames.columns {
        let what = format!("{table}.{old}={new}");
        let problem = |problem: String| PlanError::Rename {
            what: what.clone(),
            problem,
        };
        let declared = to
            .tables
            .get(table)
            .ok_or_else(|| problem(format!("the schema files declare no table {table}")))?;
        if declared.column(new).is_none() {
            return Err(problem(format!("table {table} declares no column {new}")));
        }
        let current = from
            .tables
            .get_mut(table)
            .ok_or_else(|| problem(format!("the migrations' head has no table {table}")))?;
        if current.column(new).is_some() {
            return Err(problem(format!("{table}.{new} already exists")));
        }
        let Some(column) = current.columns.iter_mut().find(|c| c.name == *old) else {
            return Err(problem(format!(
                "the migrations' head has no column {table}.{old}"
            )));
        };
        column.name = new.clone();
        *current = rename_in_table(std::mem::take(current), old, new);
        plan.alter(
            table,
            format!(
                "ALTER TABLE {} RENAME COLUMN {} TO {}",
                ident(table),
                ident(old),
                ident(new)
            ),
        );
        plan.notes.push(format!(
            "column {table}.{old} is renamed to {new}: application code still running that uses {old} fails from the moment this migration commits; deploy code that uses {new} with it"
        ));
    }
    Ok(from)
}

/// A table's definitions with the word `old` (a column or table name) replaced, as
/// PostgreSQL shows them after a rename.
fn rename_in_table(mut table: Table, old: &str, new: &str) -> Table {
    for constraint in table.constraints.values_mut() {
        constraint.definition = replace_word(&constraint.definition, old, new);
        constraint.index = constraint.index.as_ref().map(|i| replace_word(i, old, new));
        for column in &mut constraint.columns {
            if column == old {
                *column = new.to_string();
            }
        }
    }
    for definition in table.indexes.values_mut() {
        *definition = replace_word(definition, old, new);
    }
    for policy in table.policies.values_mut() {
        policy.using = policy.using.as_ref().map(|u| replace_word(u, old, new));
        policy.with_check = policy
            .with_check
            .as_ref()
            .map(|u| replace_word(u, old, new));
    }
    table
}

/// `text` with every whole-word `old` replaced by `new`.
fn replace_word(text: &str, old: &str, new: &str) -> String {
    let mut out = String::new();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        out.push_str(if word == old { new } else { word });
        word.clear();
    };
    for c in text.chars() {
        if c.is_alphanumeric() || c == '_' {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

fn plan_with(
    from: &Catalog,
    to: &Catalog,
    renames: &Renames,
    downgrade: bool,
) -> Result<Plan, PlanError> {
    let mut plan = Plan::default();
    let from = &apply_renames(from, renames, to, &mut plan)?;
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
    for (table, old, new) in &kept {
        for column in &new.columns {
            if let Some(before) = old.column(&column.name) {
                unsupported_change(table, before, column)?;
            }
        }
    }

    // Types first: new enums, and values appended in place.
    let mut rebuilt = Vec::new();
    let mut added_values = Vec::new();
    for (name, values) in &to.enums {
        match from.enums.get(name) {
            None => {
                plan.add(
                    Phase::Ddl,
                    format!("CREATE TYPE {} AS ENUM ({})", ident(name), literals(values)),
                );
            }
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
                    plan.add(
                        Phase::Ddl,
                        format!(
                            "ALTER TYPE {} ADD VALUE {} {position}",
                            ident(name),
                            literal(value)
                        ),
                    );
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

    // Views that cannot stay while tables change go first.
    let affected: BTreeSet<String> = dropped
        .iter()
        .map(|name| name.to_string())
        .chain(kept.iter().filter_map(|(name, old, new)| {
            let touched = old.columns.iter().any(|c| {
                new.column(&c.name)
                    .is_none_or(|n| n.data_type != c.data_type)
                    || rebuilt
                        .iter()
                        .any(|(e, _)| **e == c.data_type || ident(e) == c.data_type)
            });
            touched.then(|| name.to_string())
        }))
        .collect();
    let views_dropped = views::drop_first(&mut plan, from, to, &affected);
    routines::drop_triggers(&mut plan, from, to);
    routines::create_functions(&mut plan, from, to);

    // Out of the way of what changes: policies, constraints and indexes that go or change.
    for (table, old, new) in &kept {
        for (name, policy) in &old.policies {
            if new.policies.get(name) != Some(policy) {
                plan.alter(
                    table,
                    format!("DROP POLICY {} ON {}", ident(name), ident(table)),
                );
            }
        }
    }
    for kinds in ["f", "pucx"] {
        for (table, old, new) in &kept {
            for (name, constraint) in &old.constraints {
                if kinds.contains(constraint.kind) && new.constraints.get(name) != Some(constraint)
                {
                    let step = plan.alter(
                        table,
                        format!(
                            "ALTER TABLE {} DROP CONSTRAINT {}",
                            ident(table),
                            ident(name)
                        ),
                    );
                    // Dropping a foreign key drops its triggers on the other table too.
                    if let Some(other) = &constraint.references {
                        step.lock(other, LockMode::AccessExclusive);
                    }
                }
            }
        }
    }
    for (table, old, new) in &kept {
        for (name, definition) in &old.indexes {
            if new.indexes.get(name) != Some(definition) {
                plan.add(
                    Phase::Concurrent,
                    format!("DROP INDEX CONCURRENTLY IF EXISTS {}", ident(name)),
                )
                .lock(table, LockMode::ShareUpdateExclusive);
            }
        }
    }

    for (name, table) in &created {
        let columns: Vec<String> = table
            .columns
            .iter()
            .map(|c| format!("    {}", column_definition(name, c)))
            .collect();
        plan.add(
            Phase::Ddl,
            format!("CREATE TABLE {} (\n{}\n)", ident(name), columns.join(",\n")),
        );
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
                    "{table}.{} is dropped and {table}.{} added with the same type; if this is a rename, run again with --rename {table}.{}={}",
                    column.name, twin.name, column.name, twin.name,
                ));
            }
            plan.drops.push(format!("column {table}.{}", column.name));
            plan.alter(
                table,
                format!(
                    "ALTER TABLE {} DROP COLUMN {}",
                    ident(table),
                    ident(&column.name)
                ),
            );
        }
    }

    for (name, values) in &rebuilt {
        rebuild_enum(&mut plan, name, values, &kept);
    }

    for (table, old, new) in &kept {
        for column in &new.columns {
            match old.column(&column.name) {
                None => add_column(&mut plan, table, column, downgrade)?,
                Some(before) => alter_column(&mut plan, table, before, column, &rebuilt),
            }
        }
    }

    // Constraints: keys and checks before the foreign keys that need them. A foreign
    // key to a table whose key is attached later waits for it.
    let new_keys: BTreeSet<&String> = kept
        .iter()
        .filter(|(_, old, new)| {
            new.constraints
                .iter()
                .any(|(n, c)| "pu".contains(c.kind) && old.constraints.get(n) != Some(c))
        })
        .map(|(name, _, _)| *name)
        .collect();
    for kinds in ["pu", "cx", "f"] {
        for (table, t) in &created {
            for (name, constraint) in &t.constraints {
                if kinds.contains(constraint.kind) {
                    let step = plan.add(
                        Phase::Ddl,
                        add_constraint(table, name, &constraint.definition),
                    );
                    constraint_locks(step, table, constraint, LockMode::AccessExclusive);
                    if constraint.kind == 'f'
                        && constraint
                            .references
                            .as_ref()
                            .is_some_and(|r| new_keys.contains(r))
                    {
                        step.phase = Phase::Attach;
                    }
                }
            }
        }
        for (table, old, new) in &kept {
            for (name, constraint) in &new.constraints {
                if kinds.contains(constraint.kind) && old.constraints.get(name) != Some(constraint)
                {
                    let waits = constraint
                        .references
                        .as_ref()
                        .is_some_and(|r| new_keys.contains(r));
                    add_constraint_safely(&mut plan, table, name, constraint, waits);
                }
            }
        }
    }

    for (table, t) in &created {
        for definition in t.indexes.values() {
            plan.add(Phase::Ddl, definition.clone())
                .lock(table, LockMode::Share);
        }
    }
    for (table, old, new) in &kept {
        for (name, definition) in &new.indexes {
            if old.indexes.get(name) != Some(definition) {
                build_concurrently(&mut plan, table, name, definition);
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
            plan.alter(table, create_policy(table, name, policy));
        }
    }
    for (table, old, new) in &kept {
        for (name, policy) in &new.policies {
            if old.policies.get(name) != Some(policy) {
                plan.alter(table, create_policy(table, name, policy));
            }
        }
    }

    views::create(&mut plan, from, to, &views_dropped);
    routines::create_triggers(&mut plan, from, to);
    for (name, view) in &to.views {
        let n = ident(name);
        let created = created_in(&plan, &[format!("CREATE VIEW {n} AS\n")]);
        let before = from.views.get(name).and_then(|v| v.comment.as_ref());
        object_comment(
            &mut plan,
            format!("VIEW {n}"),
            created,
            before,
            view.comment.as_ref(),
        );
    }

    for (name, table) in &created {
        comments(&mut plan, name, &Table::default(), table);
    }
    for (name, old, new) in &kept {
        comments(&mut plan, name, old, new);
    }
    for name in to.enums.keys() {
        let created = created_in(&plan, &[format!("CREATE TYPE {} ", ident(name))]);
        let before = from.enum_comments.get(name);
        object_comment(
            &mut plan,
            format!("TYPE {}", ident(name)),
            created,
            before,
            to.enum_comments.get(name),
        );
    }
    for (name, table) in &created {
        object_comments(&mut plan, name, &Table::default(), table);
    }
    for (name, old, new) in &kept {
        object_comments(&mut plan, name, old, new);
    }

    if !dropped.is_empty() {
        for name in &dropped {
            plan.drops.push(format!("table {name}"));
        }
        let step = plan.add(
            Phase::Ddl,
            format!(
                "DROP TABLE {}",
                dropped
                    .iter()
                    .map(|n| ident(n))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
        for name in &dropped {
            step.lock(name, LockMode::AccessExclusive);
            for constraint in from.tables[*name].constraints.values() {
                if let Some(other) = &constraint.references {
                    step.lock(other, LockMode::AccessExclusive);
                }
            }
        }
    }
    routines::drop_functions(&mut plan, from, to);
    for name in from.enums.keys() {
        if !to.enums.contains_key(name) {
            plan.add(Phase::Ddl, format!("DROP TYPE {}", ident(name)));
        }
    }
    // PostgreSQL refuses a new enum value in the transaction that added it: if a later
    // statement uses one (a default, say), the value is committed by its own migration.
    for (index, used_as) in added_values {
        if plan.steps[index + 1..]
            .iter()
            .any(|s| s.sql.contains(&used_as))
        {
            plan.steps[index].phase = Phase::EnumValues;
        }
    }
    // The phases in order; within each, the order written above, but in the validation
    // migration every scan first, so none runs while it holds a brief exclusive lock.
    plan.steps
        .sort_by_key(|s| (s.phase, s.phase == Phase::Validate && s.work != Work::Scan));
    Ok(plan)
}

/// Changes to an existing column that autogenerate does not write in place.
fn unsupported_change(table: &str, old: &Column, new: &Column) -> Result<(), PlanError> {
    let change = if old.identity != new.identity && old.identity.is_some() != new.identity.is_some()
    {
        match new.identity {
            Some(_) => "becomes an identity column",
            None => "stops being an identity column",
        }
    } else if old.generated != new.generated {
        match new.generated {
            true => "becomes a generated column",
            false => "stops being a generated column",
        }
    } else if old.generated && old.default != new.default {
        "has a new generation expression (PostgreSQL 15 cannot change one)"
    } else if old.serial != new.serial {
        match new.serial {
            true => "becomes serial (a sequence it owns)",
            false => "stops being serial",
        }
    } else {
        return Ok(());
    };
    Err(PlanError::Unsupported {
        table: table.to_string(),
        column: new.name.clone(),
        change: change.to_string(),
    })
}

/// The locks `ALTER TABLE ... ADD CONSTRAINT` takes: a foreign key takes SHARE ROW
/// EXCLUSIVE on both tables, everything else `strong` on its own table.
fn constraint_locks(step: &mut Step, table: &str, constraint: &Constraint, strong: LockMode) {
    match (&constraint.references, constraint.kind) {
        (Some(other), 'f') => {
            step.lock(table, LockMode::ShareRowExclusive)
                .lock(other, LockMode::ShareRowExclusive);
        }
        _ => {
            step.lock(table, strong);
        }
    }
}

fn column_definition(table: &str, column: &Column) -> String {
    let serial_type = match column.data_type.as_str() {
        "integer" => Some("serial"),
        "bigint" => Some("bigserial"),
        "smallint" => Some("smallserial"),
        _ => None,
    };
    let default_sequence = format!(
        "nextval('{}'::regclass)",
        ident(&truncate_name(&format!("{table}_{}_seq", column.name)))
    );
    let mut text = match serial_type {
        Some(serial) if column.serial && column.default.as_deref() == Some(&default_sequence) => {
            return format!(
                "{} {serial}{}",
                ident(&column.name),
                if column.not_null { " NOT NULL" } else { "" }
            );
        }
        _ => format!("{} {}", ident(&column.name), column.data_type),
    };
    match (&column.default, column.generated, column.identity) {
        (Some(expression), true, _) => {
            text.push_str(&format!(" GENERATED ALWAYS AS ({expression}) STORED"))
        }
        (_, _, Some(Identity::Always)) => text.push_str(" GENERATED ALWAYS AS IDENTITY"),
        (_, _, Some(Identity::ByDefault)) => text.push_str(" GENERATED BY DEFAULT AS IDENTITY"),
        (Some(default), false, None) => text.push_str(&format!(" DEFAULT {default}")),
        (None, _, None) => {}
    }
    if column.not_null && column.identity.is_none() {
        text.push_str(" NOT NULL");
    }
    text
}

fn add_column(
    plan: &mut Plan,
    table: &str,
    column: &Column,
    downgrade: bool,
) -> Result<(), PlanError> {
    let t = ident(table);
    let computed = column.identity.is_some() || column.generated || column.serial;
    let add = |plan: &mut Plan, column: &Column| {
        plan.alter(
            table,
            format!(
                "ALTER TABLE {t} ADD COLUMN {}",
                column_definition(table, column)
            ),
        );
    };
    match (&column.default, column.not_null) {
        _ if computed => {
            add(plan, column);
            let step = plan.steps.last_mut().expect("just added");
            step.work(Work::Rewrite).why(
                "an identity, serial or generated column is filled in for every row: this rewrites the whole table under an ACCESS EXCLUSIVE lock",
            );
        }
        (Some(default), _) if looks_volatile(default) => {
            add(plan, column);
            let step = plan.steps.last_mut().expect("just added");
            step.work(Work::Rewrite).why(
                "a volatile default rewrites the whole table under an ACCESS EXCLUSIVE lock; on a big table add the column without it, backfill in batches, then set the default",
            );
        }
        (Some(_), _) | (None, false) => {
            add(plan, column);
        }
        (None, true) if !downgrade => {
            return Err(PlanError::NeedsBackfill {
                table: table.to_string(),
                column: column.name.clone(),
                data_type: column.data_type.clone(),
            })
        }
        (None, true) => match placeholder(&column.data_type) {
            // The downgrade of a dropped NOT NULL column: its values are gone, so the
            // rows get a placeholder and the column its old definition.
            Some(value) => {
                let with_placeholder = Column {
                    default: Some(value),
                    ..column.clone()
                };
                add(plan, &with_placeholder);
                plan.steps
                    .last_mut()
                    .expect("just added")
                    .why("the dropped values are gone: existing rows get a placeholder value");
                plan.alter(
                    table,
                    format!(
                        "ALTER TABLE {t} ALTER COLUMN {} DROP DEFAULT",
                        ident(&column.name)
                    ),
                );
            }
            None => {
                let nullable = Column {
                    not_null: false,
                    ..column.clone()
                };
                add(plan, &nullable);
                set_not_null(plan, table, &column.name);
            }
        },
    }
    Ok(())
}

/// A constant of `data_type` for rows whose value a downgrade cannot bring back.
fn placeholder(data_type: &str) -> Option<String> {
    let value = match data_type {
        t if t.starts_with("character") || t == "text" => "''",
        "integer" | "bigint" | "smallint" | "numeric" | "real" | "double precision" => "0",
        "boolean" => "false",
        "uuid" => "'00000000-0000-0000-0000-000000000000'",
        t if t.starts_with("timestamp") || t == "date" => "'epoch'",
        "json" | "jsonb" => "'{}'",
        _ => return None,
    };
    Some(format!("{value}::{data_type}"))
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
        plan.alter(
            table,
            format!(
                "ALTER TABLE {t} ALTER COLUMN {c} TYPE {} USING {c}::{}",
                new.data_type, new.data_type
            ),
        )
        .work(Work::Rewrite)
        .why("changing a type rewrites the table and its indexes under an ACCESS EXCLUSIVE lock, unless the change is binary-coercible (varchar(n) to a longer varchar or text)");
    }
    if old.default != new.default && !retyped_by_rebuild && !new.generated && !new.serial {
        match &new.default {
            Some(default) => plan.alter(
                table,
                format!("ALTER TABLE {t} ALTER COLUMN {c} SET DEFAULT {default}"),
            ),
            None => plan.alter(
                table,
                format!("ALTER TABLE {t} ALTER COLUMN {c} DROP DEFAULT"),
            ),
        };
    }
    if old.identity.is_some() && new.identity.is_some() && old.identity != new.identity {
        let kind = match new.identity {
            Some(Identity::Always) => "ALWAYS",
            _ => "BY DEFAULT",
        };
        plan.alter(
            table,
            format!("ALTER TABLE {t} ALTER COLUMN {c} SET GENERATED {kind}"),
        );
    }
    match (old.not_null, new.not_null) {
        (false, true) => set_not_null(plan, table, &new.name),
        (true, false) => {
            plan.alter(
                table,
                format!("ALTER TABLE {t} ALTER COLUMN {c} DROP NOT NULL"),
            );
        }
        _ => {}
    }
    if old.comment != new.comment {
        plan.add(
            Phase::Ddl,
            format!(
                "COMMENT ON COLUMN {t}.{c} IS {}",
                new.comment.as_deref().map_or("NULL".into(), literal)
            ),
        )
        .lock(table, LockMode::ShareUpdateExclusive);
    }
}

/// `SET NOT NULL` scans the table under ACCESS EXCLUSIVE, unless a validated
/// `CHECK (c IS NOT NULL)` already proves it. The check is added `NOT VALID` (brief),
/// validated in a later transaction under SHARE UPDATE EXCLUSIVE (reads and writes go
/// on), and only then is `SET NOT NULL` run, which then skips the scan.
fn set_not_null(plan: &mut Plan, table: &str, column: &str) {
    let (t, c) = (ident(table), ident(column));
    let check = ident(&truncate_name(&format!("{table}_{column}_not_null")));
    plan.alter(
        table,
        format!("ALTER TABLE {t} ADD CONSTRAINT {check} CHECK ({c} IS NOT NULL) NOT VALID"),
    );
    plan.add(
        Phase::Validate,
        format!("ALTER TABLE {t} VALIDATE CONSTRAINT {check}"),
    )
    .lock(table, LockMode::ShareUpdateExclusive)
    .work(Work::Scan);
    plan.add(
        Phase::Validate,
        format!("ALTER TABLE {t} ALTER COLUMN {c} SET NOT NULL"),
    )
    .lock(table, LockMode::AccessExclusive)
    .why(format!("no scan: the validated {check} already proves it"));
    plan.add(
        Phase::Validate,
        format!("ALTER TABLE {t} DROP CONSTRAINT {check}"),
    )
    .lock(table, LockMode::AccessExclusive);
}

fn add_constraint(table: &str, name: &str, definition: &str) -> String {
    format!(
        "ALTER TABLE {} ADD CONSTRAINT {} {definition}",
        ident(table),
        ident(name)
    )
}

/// A constraint on a table that has rows. `waits`: it references a key attached in the
/// same change, so it is added after that.
fn add_constraint_safely(
    plan: &mut Plan,
    table: &str,
    name: &str,
    constraint: &Constraint,
    waits: bool,
) {
    let (t, n) = (ident(table), ident(name));
    match constraint.kind {
        'f' | 'c' if constraint.definition.ends_with("NOT VALID") => {
            let step = plan.add(
                Phase::Ddl,
                add_constraint(table, name, &constraint.definition),
            );
            constraint_locks(step, table, constraint, LockMode::AccessExclusive);
        }
        'f' | 'c' => {
            let step = plan.add(
                if waits { Phase::Attach } else { Phase::Ddl },
                format!(
                    "ALTER TABLE {t} ADD CONSTRAINT {n} {} NOT VALID",
                    constraint.definition
                ),
            );
            constraint_locks(step, table, constraint, LockMode::AccessExclusive);
            let step = plan
                .add(
                    Phase::Validate,
                    format!("ALTER TABLE {t} VALIDATE CONSTRAINT {n}"),
                )
                .lock(table, LockMode::ShareUpdateExclusive)
                .work(Work::Scan);
            // Validating a foreign key reads the referenced table under ROW SHARE.
            if let Some(other) = &constraint.references {
                step.lock(other, LockMode::RowShare);
            }
        }
        'p' | 'u' if constraint.index.is_some() => {
            let index = constraint.index.as_deref().unwrap_or_default();
            build_concurrently(plan, table, name, index);
            let kind = if constraint.kind == 'p' {
                "PRIMARY KEY"
            } else {
                "UNIQUE"
            };
            let step = plan
                .add(
                    Phase::Attach,
                    format!("ALTER TABLE {t} ADD CONSTRAINT {n} {kind} USING INDEX {n}"),
                )
                .lock(table, LockMode::AccessExclusive);
            if constraint.kind == 'p' {
                step.why("attaching the index is quick, but a primary key also sets NOT NULL on its columns, which scans the table unless they are NOT NULL already");
            }
        }
        _ => {
            let step = plan.add(
                Phase::Ddl,
                add_constraint(table, name, &constraint.definition),
            );
            step.lock(table, LockMode::AccessExclusive)
                .work(Work::IndexBuild)
                .why(match constraint.kind {
                    'x' => EXCLUSION_IN_PLACE,
                    _ => "this constraint is built under a strong lock that blocks reads and writes for as long as the table takes to check",
                });
        }
    }
}

const DROP_LEFTOVER: &str = "a failed earlier run leaves an INVALID index behind: dropped first, so this migration can run again";

/// An index on a table that has rows: built `CONCURRENTLY` outside a transaction, after
/// dropping what a failed earlier attempt left (an INVALID index of the same name), so
/// the migration can simply run again.
fn build_concurrently(plan: &mut Plan, table: &str, name: &str, definition: &str) {
    plan.add(
        Phase::Concurrent,
        format!("DROP INDEX CONCURRENTLY IF EXISTS {}", ident(name)),
    )
    .lock(table, LockMode::ShareUpdateExclusive)
    .why(DROP_LEFTOVER);
    plan.add(Phase::Concurrent, concurrently(definition))
        .lock(table, LockMode::ShareUpdateExclusive)
        .work(Work::IndexBuild);
}

fn rebuild_enum(
    plan: &mut Plan,
    name: &str,
    values: &[String],
    kept: &[(&String, &Table, &Table)],
) {
    let old_name = truncate_name(&format!("{name}__old"));
    plan.add(
        Phase::Ddl,
        format!("ALTER TYPE {} RENAME TO {}", ident(name), ident(&old_name)),
    )
    .why("values are removed or reordered: the type is rebuilt and every column using it is rewritten under an ACCESS EXCLUSIVE lock; rows holding a removed value make this fail");
    plan.add(
        Phase::Ddl,
        format!("CREATE TYPE {} AS ENUM ({})", ident(name), literals(values)),
    );
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
                plan.alter(
                    table,
                    format!("ALTER TABLE {t} ALTER COLUMN {c} DROP DEFAULT"),
                );
            }
            plan.alter(
                table,
                format!(
                    "ALTER TABLE {t} ALTER COLUMN {c} TYPE {} USING {c}::text::{}",
                    ident(name),
                    ident(name)
                ),
            )
            .work(Work::Rewrite);
            if let Some(default) = &column.default {
                plan.alter(
                    table,
                    format!("ALTER TABLE {t} ALTER COLUMN {c} SET DEFAULT {default}"),
                );
            }
        }
    }
    plan.add(Phase::Ddl, format!("DROP TYPE {}", ident(&old_name)));
}

fn row_security(plan: &mut Plan, table: &str, old: &Table, new: &Table) {
    let t = ident(table);
    if old.row_security != new.row_security {
        let verb = if new.row_security {
            "ENABLE"
        } else {
            "DISABLE"
        };
        plan.alter(table, format!("ALTER TABLE {t} {verb} ROW LEVEL SECURITY"));
    }
    if old.force_row_security != new.force_row_security {
        let verb = if new.force_row_security {
            "FORCE"
        } else {
            "NO FORCE"
        };
        plan.alter(table, format!("ALTER TABLE {t} {verb} ROW LEVEL SECURITY"));
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
        plan.add(
            Phase::Ddl,
            format!(
                "COMMENT ON TABLE {} IS {}",
                ident(table),
                new.comment.as_deref().map_or("NULL".into(), literal)
            ),
        )
        .lock(table, LockMode::ShareUpdateExclusive);
    }
    // Column comments of kept columns are handled with the column; these are new ones.
    for column in &new.columns {
        if old.column(&column.name).is_none() {
            if let Some(comment) = &column.comment {
                plan.add(
                    Phase::Ddl,
                    format!(
                        "COMMENT ON COLUMN {}.{} IS {}",
                        ident(table),
                        ident(&column.name),
                        literal(comment)
                    ),
                )
                .lock(table, LockMode::ShareUpdateExclusive);
            }
        }
    }
}

/// Comments on a table's indexes, constraints and policies. Each comes after the
/// statement that creates (or rebuilds) its object, in the same migration, or in the
/// next transactional one when that is a concurrent build; an object kept as it was
/// only gets its comment changed, under a brief lock.
fn object_comments(plan: &mut Plan, table: &str, old: &Table, new: &Table) {
    let t = ident(table);
    let names = |a: &BTreeMap<String, String>, b: &BTreeMap<String, String>| -> BTreeSet<String> {
        a.keys().chain(b.keys()).cloned().collect()
    };
    for name in names(&old.index_comments, &new.index_comments) {
        let n = ident(&name);
        let created = created_in(
            plan,
            &[
                format!("INDEX {n} ON "),
                format!("INDEX CONCURRENTLY {n} ON "),
                format!("ALTER TABLE {t} ADD CONSTRAINT {n} "),
            ],
        );
        // COMMENT ON INDEX locks the index alone, not its table.
        object_comment(
            plan,
            format!("INDEX {n}"),
            created,
            old.index_comments.get(&name),
            new.index_comments.get(&name),
        );
    }
    for name in names(&old.constraint_comments, &new.constraint_comments) {
        let n = ident(&name);
        let created = created_in(plan, &[format!("ALTER TABLE {t} ADD CONSTRAINT {n} ")]);
        if let Some(step) = object_comment(
            plan,
            format!("CONSTRAINT {n} ON {t}"),
            created,
            old.constraint_comments.get(&name),
            new.constraint_comments.get(&name),
        ) {
            step.lock(table, LockMode::AccessShare);
        }
    }
    for name in names(&old.policy_comments, &new.policy_comments) {
        let n = ident(&name);
        let created = created_in(plan, &[format!("CREATE POLICY {n} ON {t} ")]);
        if let Some(step) = object_comment(
            plan,
            format!("POLICY {n} ON {t}"),
            created,
            old.policy_comments.get(&name),
            new.policy_comments.get(&name),
        ) {
            step.lock(table, LockMode::AccessShare);
        }
    }
}

/// The phase of the last statement so far that matches one of `patterns` (creates the
/// object), as the phase a statement about the new object can run in: after a
/// concurrent build, the next transactional migration.
fn created_in(plan: &Plan, patterns: &[String]) -> Option<Phase> {
    let step = plan
        .steps
        .iter()
        .rev()
        .find(|s| patterns.iter().any(|p| s.sql.contains(p.as_str())))?;
    Some(match step.phase {
        Phase::Concurrent => Phase::Attach,
        phase => phase,
    })
}

/// `COMMENT ON {what}`: the new comment after a statement that created the object
/// (`created`, its phase; a new object has no comment), or a change of a kept one's.
fn object_comment<'p>(
    plan: &'p mut Plan,
    what: String,
    created: Option<Phase>,
    old: Option<&String>,
    new: Option<&String>,
) -> Option<&'p mut Step> {
    let phase = match created {
        Some(phase) => phase,
        None if old == new => return None,
        None => Phase::Ddl,
    };
    if created.is_some() && new.is_none() {
        return None;
    }
    let text = new.map_or("NULL".into(), |c| literal(c));
    Some(plan.add(
        phase.max(Phase::Ddl),
        format!("COMMENT ON {what} IS {text}"),
    ))
}

/// Why an exclusion constraint on a table with rows takes a long strong lock, and the
/// allow of verify's `exclusion-built-in-place` finding: there is no other way to
/// write it, so the generated migration says so instead of failing `verify`, which
/// still lists it with this reason.
const EXCLUSION_IN_PLACE: &str = "PostgreSQL cannot build an exclusion constraint concurrently nor attach one to an index built beforehand: its index is built under ACCESS EXCLUSIVE, blocking reads and writes for as long as the build takes; on a big table, run it in a quiet hour\n\
     -- xtask:allow exclusion-built-in-place generated: there is no concurrent way to add an exclusion constraint; run this migration in a quiet window";

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

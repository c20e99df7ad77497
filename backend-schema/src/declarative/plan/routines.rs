//! Functions and triggers in a plan, each written whole as PostgreSQL shows it
//! (`pg_get_functiondef`, `pg_get_triggerdef`): a changed function is replaced
//! (`CREATE OR REPLACE`), a changed trigger dropped and created again. Functions come
//! before the tables and triggers that use them and go after them.

use super::{LockMode, Phase, Plan};
use crate::catalog::Catalog;
use crate::sql::ident;

/// Triggers that go or change, dropped before anything they call changes.
pub(super) fn drop_triggers(plan: &mut Plan, from: &Catalog, to: &Catalog) {
    for (table, old) in &from.tables {
        let Some(new) = to.tables.get(table) else {
            continue; // dropped with its table
        };
        for (name, definition) in &old.triggers {
            if new.triggers.get(name) != Some(definition) {
                plan.add(
                    Phase::Ddl,
                    format!("DROP TRIGGER {} ON {}", ident(name), ident(table)),
                )
                .lock(table, LockMode::AccessExclusive);
            }
        }
    }
}

/// New and changed functions, replaced whole, before the tables that may use them.
pub(super) fn create_functions(plan: &mut Plan, from: &Catalog, to: &Catalog) {
    for (signature, definition) in &to.functions {
        if from.functions.get(signature) != Some(definition) {
            plan.add(Phase::Ddl, definition.trim_end().to_string());
        }
    }
}

/// New and changed triggers, once their tables and functions exist. `CREATE TRIGGER`
/// takes SHARE ROW EXCLUSIVE on its table.
pub(super) fn create_triggers(plan: &mut Plan, from: &Catalog, to: &Catalog) {
    for (table, new) in &to.tables {
        for (name, definition) in &new.triggers {
            let old = from.tables.get(table).and_then(|t| t.triggers.get(name));
            if old != Some(definition) {
                plan.add(Phase::Ddl, definition.clone())
                    .lock(table, LockMode::ShareRowExclusive);
            }
        }
    }
}

/// Functions that go, once nothing uses them.
pub(super) fn drop_functions(plan: &mut Plan, from: &Catalog, to: &Catalog) {
    for signature in from.functions.keys() {
        if !to.functions.contains_key(signature) {
            plan.add(Phase::Ddl, format!("DROP FUNCTION public.{signature}"));
        }
    }
}

//! Views in a plan: created after what they read and dropped before it changes. A view
//! whose columns only grow is replaced in place (`CREATE OR REPLACE VIEW` may only
//! append columns); any other change, or a change to a column of a table it reads,
//! drops it first, with the views that read it, and creates them all again afterwards.

use std::collections::BTreeSet;

use super::{LockMode, Phase, Plan};
use crate::catalog::{Catalog, View};
use crate::sql::ident;

/// Drops the views of `from` that cannot stay while the plan runs: gone or changed
/// beyond appended columns in `to`, reading a table in `affected` (dropped, or a column
/// of it dropped or retyped, which PostgreSQL refuses under a view), or reading a view
/// that goes. Dependants go first. Returns the names dropped.
pub(super) fn drop_first(
    plan: &mut Plan,
    from: &Catalog,
    to: &Catalog,
    affected: &BTreeSet<String>,
) -> BTreeSet<String> {
    let mut going: BTreeSet<String> = from
        .views
        .iter()
        .filter(|(name, old)| {
            let changed = match to.views.get(*name) {
                None => true,
                Some(new) => old != &new && !replaceable(old, new),
            };
            changed || old.uses.iter().any(|u| affected.contains(u))
        })
        .map(|(name, _)| name.clone())
        .collect();
    loop {
        let readers: Vec<String> = from
            .views
            .iter()
            .filter(|(name, v)| !going.contains(*name) && v.uses.iter().any(|u| going.contains(u)))
            .map(|(name, _)| name.clone())
            .collect();
        if readers.is_empty() {
            break;
        }
        going.extend(readers);
    }
    let mut left = going.clone();
    while !left.is_empty() {
        // Those no view still to drop reads (views cannot form a cycle).
        let free: Vec<String> = left
            .iter()
            .filter(|name| {
                !left
                    .iter()
                    .any(|other| from.views[other].uses.contains(name))
            })
            .cloned()
            .collect();
        let next = match free.is_empty() {
            true => left.iter().cloned().collect(),
            false => free,
        };
        for name in next {
            plan.add(Phase::Ddl, format!("DROP VIEW {}", ident(&name)));
            left.remove(&name);
        }
    }
    going
}

/// Whether `CREATE OR REPLACE VIEW` turns `old` into `new`: the old columns stay, with
/// their names and types, and new ones come after them.
fn replaceable(old: &View, new: &View) -> bool {
    new.columns.len() >= old.columns.len() && new.columns[..old.columns.len()] == old.columns[..]
}

/// Creates the views of `to` that are new or were dropped first and replaces those
/// whose columns only grow, each after the views it reads. Creating a view takes
/// ACCESS SHARE on the tables it reads.
pub(super) fn create(plan: &mut Plan, from: &Catalog, to: &Catalog, dropped: &BTreeSet<String>) {
    let mut left: BTreeSet<&String> = to.views.keys().collect();
    while !left.is_empty() {
        let ready: Vec<&String> = left
            .iter()
            .filter(|name| to.views[**name].uses.iter().all(|u| !left.contains(u)))
            .copied()
            .collect();
        let next = match ready.is_empty() {
            true => left.iter().copied().collect(),
            false => ready,
        };
        for name in next {
            left.remove(name);
            let view = &to.views[name];
            let verb = match from.views.get(name) {
                Some(old) if !dropped.contains(name) => {
                    if old == view
                        || (old.definition == view.definition && old.columns == view.columns)
                    {
                        continue;
                    }
                    "CREATE OR REPLACE VIEW"
                }
                _ => "CREATE VIEW",
            };
            let step = plan.add(
                Phase::Ddl,
                format!("{verb} {} AS\n{}", ident(name), view.definition),
            );
            for used in view.uses.iter().filter(|u| to.tables.contains_key(*u)) {
                step.lock(used, LockMode::AccessShare);
            }
        }
    }
}

//! Branch labels as Alembic has them: declared on one revision (`branch_labels` in
//! `migration.toml`), carried by that revision's descendants and, when everything above it
//! is one plain line, by the plain line below it down to the nearest branch or merge point.

use std::collections::{BTreeMap, BTreeSet};

use crate::migration::Migration;
use crate::source::SourceProblem;

/// Labels that cannot name one place: used twice, equal to a revision ID, or holding a
/// character that targets reserve (`@`, `+`, `-`, `:`).
pub(super) fn label_problems(migrations: &[Migration]) -> Vec<SourceProblem> {
    let revisions: BTreeSet<&str> = migrations.iter().map(|m| m.revision.as_str()).collect();
    let mut owners: BTreeMap<&str, Vec<&Migration>> = BTreeMap::new();
    for migration in migrations {
        for label in &migration.branch_labels {
            owners.entry(label).or_default().push(migration);
        }
    }
    let mut problems = Vec::new();
    for (label, claimants) in owners {
        let message = if label.is_empty()
            || label.contains(['@', '+', '-', ':'])
            || label.contains(char::is_whitespace)
        {
            format!("branch label '{label}' is empty or holds one of @ + - : or a space, which targets like `{label}@head` reserve; rename it")
        } else if revisions.contains(label) {
            format!("branch label '{label}' is also a revision ID; rename the label")
        } else if claimants.len() > 1 {
            let names: Vec<&str> = claimants.iter().map(|m| m.revision.as_str()).collect();
            format!(
                "branch label '{label}' is declared by more than one revision ({}); a label names one branch, keep it on one of them",
                names.join(", ")
            )
        } else {
            continue;
        };
        problems.extend(claimants.iter().map(|m| SourceProblem {
            path: m.metadata_path(),
            message: message.clone(),
        }));
    }
    problems
}

/// The labels each revision carries (Alembic's `Revision.branch_labels` after
/// `RevisionMap._add_branches`), by index into `migrations`.
pub(super) fn carried_labels(
    migrations: &[Migration],
    parents: &[Vec<usize>],
    children: &[Vec<usize>],
) -> Vec<BTreeSet<String>> {
    let mut labels: Vec<BTreeSet<String>> = migrations
        .iter()
        .map(|m| m.branch_labels.iter().cloned().collect())
        .collect();
    for (owner, migration) in migrations.iter().enumerate() {
        if migration.branch_labels.is_empty() {
            continue;
        }
        let declared: BTreeSet<String> = migration.branch_labels.iter().cloned().collect();
        let mut above = vec![owner];
        let mut seen = BTreeSet::new();
        let mut plain_line = true;
        while let Some(i) = above.pop() {
            if !seen.insert(i) {
                continue;
            }
            labels[i].extend(declared.iter().cloned());
            plain_line &= children[i].len() <= 1 && parents[i].len() <= 1;
            above.extend(&children[i]);
        }
        // Alembic walks down from the branch's tip until a branch point or merge point;
        // it only gets below the owner when the branch above it is one plain line.
        if !plain_line {
            continue;
        }
        let mut below = parents[owner].first().copied();
        while let Some(i) = below {
            if children[i].len() > 1 || parents[i].len() > 1 {
                break;
            }
            labels[i].extend(declared.iter().cloned());
            below = parents[i].first().copied();
        }
    }
    labels
}

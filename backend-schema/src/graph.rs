//! The revision graph: migrations as a DAG like Alembic's (merges have several parents,
//! branches have several heads, branch labels name branches), targets (`target.rs`), and
//! plans of steps from the database's current heads to a target, in Alembic's order
//! (`order.rs`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use crate::migration::{Direction, Migration, METADATA_FILE};
use crate::source::{parse_source, read_source, SourceError, SourceProblem};

#[derive(Debug, Clone)]
pub struct RevisionGraph {
    /// The migrations directory: error messages name it, and every `Migration::dir` is
    /// inside it.
    dir: PathBuf,
    /// In topological order: every parent before its children.
    migrations: Vec<Migration>,
    index: HashMap<String, usize>,
    children: Vec<Vec<usize>>,
    parents: Vec<Vec<usize>>,
    /// Each revision's place in directory-name order: Alembic's file order, which breaks
    /// its ties.
    rank: Vec<usize>,
    /// The revision declaring each branch label.
    label_owner: BTreeMap<String, usize>,
    /// The labels each revision carries (declared or inherited).
    labels: Vec<BTreeSet<String>>,
}

/// A target that does not name exactly one place in the graph.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("can't locate revision identified by '{target}'; known revisions: {}", known.join(", "))]
    Unknown { target: String, known: Vec<String> },
    #[error("ambiguous revision prefix '{prefix}': it matches {}", candidates.join(", "))]
    Ambiguous {
        prefix: String,
        candidates: Vec<String>,
    },
    #[error("multiple head revisions are present ({}); name one of them, narrow to a branch with `LABEL@head`, or use `heads` for all", heads.join(", "))]
    MultipleHeads { heads: Vec<String> },
    #[error("no migrations found; create one with `cargo xtask migrate revision -m MESSAGE`")]
    Empty,
    #[error("relative target '{target}' is ambiguous at {at}: {reason}")]
    AmbiguousStep {
        target: String,
        at: String,
        reason: String,
    },
    #[error("relative target '{target}' goes beyond the {end} of the graph")]
    OutOfRange { target: String, end: &'static str },
    #[error("malformed relative target '{target}'; use +N, -N or REV+N / REV-N")]
    Malformed { target: String },
    #[error("revision {revision} is not applied (database at {}); `downgrade` only goes back to applied revisions, use `upgrade` to go forward", heads_text(current))]
    NotApplied {
        revision: String,
        current: Vec<String>,
    },
    #[error("'{target}' is not a downgrade target; use `upgrade` to go forward")]
    NotADowngrade { target: String },
    #[error("'{target}' is not an upgrade target; use `downgrade` to go back")]
    NotAnUpgrade { target: String },
    #[error("revision {revision} is not on branch '{branch}'")]
    NotOnBranch { revision: String, branch: String },
    #[error("no such branch: '{branch}'; branch labels: {}", if labels.is_empty() { "none declared".to_string() } else { labels.join(", ") })]
    NoSuchBranch { branch: String, labels: Vec<String> },
    #[error("branch label '{label}' {reason}")]
    BadLabel { label: String, reason: String },
    #[error("requested range {start}:{end} does not refer to ancestor/descendant revisions along the same branch")]
    RangeNotAncestor { start: String, end: String },
}

/// Heads as Alembic shows them: `base` when there are none.
pub fn heads_text(heads: &[String]) -> String {
    if heads.is_empty() {
        "base".into()
    } else {
        heads.join(", ")
    }
}

/// One migration to run, and the heads recorded before and after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub revision: String,
    pub direction: Direction,
    pub heads_before: Vec<String>,
    pub heads_after: Vec<String>,
}

impl RevisionGraph {
    /// Loads and checks every migration under `dir`.
    pub fn load(dir: &Path) -> Result<RevisionGraph, SourceError> {
        let tree = read_source(dir)?;
        RevisionGraph::new(dir, parse_source(&tree)?)
    }

    /// Checks the graph of the migrations read from `dir`: duplicate revision IDs,
    /// missing parents, cycles.
    pub fn new(
        dir: impl Into<PathBuf>,
        migrations: Vec<Migration>,
    ) -> Result<RevisionGraph, SourceError> {
        let mut problems = Vec::new();
        let mut by_revision: BTreeMap<&str, Vec<&Migration>> = BTreeMap::new();
        for migration in &migrations {
            by_revision
                .entry(&migration.revision)
                .or_default()
                .push(migration);
        }
        for (revision, claimants) in &by_revision {
            if claimants.len() > 1 {
                let paths: Vec<String> = claimants
                    .iter()
                    .map(|m| m.metadata_path().display().to_string())
                    .collect();
                for migration in claimants {
                    problems.push(SourceProblem {
                        path: migration.metadata_path(),
                        message: format!(
                            "duplicate revision ID {revision}, claimed by {}; give one of them a new ID (`cargo xtask migrate revision` generates one)",
                            paths.join(" and ")
                        ),
                    });
                }
            }
        }
        for migration in &migrations {
            for parent in &migration.parents {
                if !by_revision.contains_key(parent.as_str()) {
                    problems.push(SourceProblem {
                        path: migration.metadata_path(),
                        message: format!(
                            "revision {} revises {parent}, which no migration defines (is a file missing? try `git pull`)",
                            migration.revision
                        ),
                    });
                }
            }
        }
        problems.extend(labels::label_problems(&migrations));
        if !problems.is_empty() {
            return Err(SourceError { problems });
        }

        // Kahn's algorithm over revision IDs; ties broken by directory name so the order
        // is stable. The index and children are built once, on the sorted order.
        let mut pending_parents: HashMap<&str, usize> = migrations
            .iter()
            .map(|m| (m.revision.as_str(), m.parents.len()))
            .collect();
        let mut children_of: HashMap<&str, Vec<&Migration>> = HashMap::new();
        for m in &migrations {
            for parent in &m.parents {
                children_of.entry(parent.as_str()).or_default().push(m);
            }
        }
        let mut ready: BTreeSet<(&Path, &str)> = migrations
            .iter()
            .filter(|m| m.parents.is_empty())
            .map(|m| (m.dir.as_path(), m.revision.as_str()))
            .collect();
        let mut order: HashMap<&str, usize> = HashMap::new();
        while let Some((_, revision)) = ready.pop_first() {
            order.insert(revision, order.len());
            for child in children_of.get(revision).into_iter().flatten() {
                let pending = pending_parents
                    .get_mut(child.revision.as_str())
                    .expect("every revision counted");
                *pending -= 1;
                if *pending == 0 {
                    ready.insert((child.dir.as_path(), child.revision.as_str()));
                }
            }
        }
        if order.len() < migrations.len() {
            let in_cycle: Vec<&Migration> = migrations
                .iter()
                .filter(|m| !order.contains_key(m.revision.as_str()))
                .collect();
            let names: Vec<&str> = in_cycle.iter().map(|m| m.revision.as_str()).collect();
            return Err(SourceError {
                problems: in_cycle
                    .iter()
                    .map(|m| SourceProblem {
                        path: m.metadata_path(),
                        message: format!("revision {} is part of a cycle among {}; fix `revises` in {METADATA_FILE}", m.revision, names.join(", ")),
                    })
                    .collect(),
            });
        }

        let position: Vec<usize> = migrations
            .iter()
            .map(|m| order[m.revision.as_str()])
            .collect();
        let mut slots: Vec<Option<Migration>> = vec![None; migrations.len()];
        for (migration, at) in migrations.into_iter().zip(position) {
            slots[at] = Some(migration);
        }
        let migrations: Vec<Migration> = slots
            .into_iter()
            .map(|m| m.expect("each position once"))
            .collect();
        let index: HashMap<String, usize> = migrations
            .iter()
            .enumerate()
            .map(|(i, m)| (m.revision.clone(), i))
            .collect();
        let mut children = vec![Vec::new(); migrations.len()];
        let parents: Vec<Vec<usize>> = migrations
            .iter()
            .map(|m| m.parents.iter().map(|p| index[p]).collect())
            .collect();
        for (i, m) in migrations.iter().enumerate() {
            for parent in &m.parents {
                children[index[parent]].push(i);
            }
        }
        let mut by_name: Vec<usize> = (0..migrations.len()).collect();
        by_name.sort_by(|&a, &b| migrations[a].dir_name().cmp(migrations[b].dir_name()));
        let mut rank = vec![0; migrations.len()];
        for (place, i) in by_name.into_iter().enumerate() {
            rank[i] = place;
        }
        let label_owner = migrations
            .iter()
            .enumerate()
            .flat_map(|(i, m)| m.branch_labels.iter().map(move |l| (l.clone(), i)))
            .collect();
        let labels = labels::carried_labels(&migrations, &parents, &children);
        Ok(RevisionGraph {
            dir: dir.into(),
            migrations,
            index,
            children,
            parents,
            rank,
            label_owner,
            labels,
        })
    }

    /// The migrations directory the graph was read from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every migration, parents before children.
    pub fn migrations(&self) -> &[Migration] {
        &self.migrations
    }

    pub fn get(&self, revision: &str) -> Option<&Migration> {
        self.index.get(revision).map(|&i| &self.migrations[i])
    }

    pub fn is_empty(&self) -> bool {
        self.migrations.is_empty()
    }

    /// Revisions no other revision revises, in directory-name order (Alembic's file
    /// order).
    pub fn heads(&self) -> Vec<&str> {
        self.head_indices()
            .into_iter()
            .map(|i| self.migrations[i].revision.as_str())
            .collect()
    }

    /// The branch labels `revision` carries, declared on it or inherited, sorted.
    pub fn labels_of(&self, revision: &str) -> Vec<&str> {
        self.index
            .get(revision)
            .map(|&i| self.labels[i].iter().map(String::as_str).collect())
            .unwrap_or_default()
    }

    /// Whether `label` can name a new branch: not declared yet, not a revision ID, and
    /// free of the characters targets reserve.
    pub fn check_new_label(&self, label: &str) -> Result<(), TargetError> {
        let bad = |reason: String| {
            Err(TargetError::BadLabel {
                label: label.to_string(),
                reason,
            })
        };
        if label.is_empty()
            || label.contains(['@', '+', '-', ':'])
            || label.contains(char::is_whitespace)
        {
            return bad("is empty or holds one of @ + - : or a space".into());
        }
        if let Some(&owner) = self.label_owner.get(label) {
            return bad(format!(
                "is already used by revision {}",
                self.migrations[owner].revision
            ));
        }
        if self.index.contains_key(label) {
            return bad("is a revision ID".into());
        }
        Ok(())
    }

    /// What an absolute target names: `head`, `heads`, `base` (nothing), a revision ID,
    /// a label or a unique prefix of either, each optionally as `LABEL@...`.
    pub fn resolve(&self, target: &str) -> Result<Vec<&Migration>, TargetError> {
        Ok(self
            .absolute(target)?
            .into_iter()
            .map(|i| &self.migrations[i])
            .collect())
    }

    pub fn is_head(&self, revision: &str) -> bool {
        self.index
            .get(revision)
            .is_some_and(|&i| self.children[i].is_empty())
    }

    /// Whether the graph says it means to have several heads (Alembic branch labels).
    pub fn declares_branches(&self) -> bool {
        self.migrations.iter().any(|m| !m.branch_labels.is_empty())
    }

    pub fn children_of(&self, revision: &str) -> Vec<&str> {
        self.index
            .get(revision)
            .map(|&i| {
                self.children[i]
                    .iter()
                    .map(|&c| self.migrations[c].revision.as_str())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// What `show` takes: `head` (the one head), `heads` (each), a revision ID, label or
    /// unique prefix, each optionally as `LABEL@...`.
    pub fn resolve_shown(&self, name: &str) -> Result<Vec<&Migration>, TargetError> {
        match self.resolve(name)? {
            none if none.is_empty() => Err(self.unknown(name)),
            some => Ok(some),
        }
    }

    /// A full revision ID or branch label, or a unique prefix of one.
    pub fn resolve_revision(&self, partial: &str) -> Result<&Migration, TargetError> {
        Ok(&self.migrations[self.lookup(partial, None)?])
    }

    /// Indices of `revisions` and everything they revise, directly or not.
    fn ancestors(&self, revisions: &[usize]) -> BTreeSet<usize> {
        let mut seen = BTreeSet::new();
        let mut stack = revisions.to_vec();
        while let Some(i) = stack.pop() {
            if seen.insert(i) {
                stack.extend(self.migrations[i].parents.iter().map(|p| self.index[p]));
            }
        }
        seen
    }

    fn descendants(&self, revision: usize) -> BTreeSet<usize> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![revision];
        while let Some(i) = stack.pop() {
            if seen.insert(i) {
                stack.extend(&self.children[i]);
            }
        }
        seen
    }

    fn indices(&self, revisions: &[String]) -> Result<Vec<usize>, TargetError> {
        revisions
            .iter()
            .map(|r| {
                self.index
                    .get(r)
                    .copied()
                    .ok_or_else(|| TargetError::Unknown {
                        target: r.clone(),
                        known: self
                            .migrations
                            .iter()
                            .map(|m| m.dir_name().to_string())
                            .collect(),
                    })
            })
            .collect()
    }

    /// The heads of an applied set: applied revisions with no applied child.
    fn heads_of(&self, applied: &BTreeSet<usize>) -> Vec<String> {
        let mut heads: Vec<String> = applied
            .iter()
            .filter(|&&i| !self.children[i].iter().any(|c| applied.contains(c)))
            .map(|&i| self.migrations[i].revision.clone())
            .collect();
        heads.sort();
        heads
    }

    /// Every revision applied when the database records `current` as its heads.
    pub fn applied(&self, current: &[String]) -> Result<Vec<&Migration>, TargetError> {
        let applied = self.ancestors(&self.indices(current)?);
        Ok(applied.into_iter().map(|i| &self.migrations[i]).collect())
    }

    /// Steps from `current` heads up to `target`, in Alembic's order.
    pub fn upgrade_plan(&self, current: &[String], target: &str) -> Result<Vec<Step>, TargetError> {
        let current_idx = self.indices(current)?;
        let applied = self.ancestors(&current_idx);
        let targets = self.upgrade_targets(&current_idx, target)?;
        let todo: BTreeSet<usize> = self
            .ancestors(&targets)
            .difference(&applied)
            .copied()
            .collect();
        let mut order = self.alembic_order(&todo, &targets);
        order.reverse();
        Ok(self.steps(applied, order, Direction::Up))
    }

    /// Steps from `current` heads down to `target`, in Alembic's order.
    pub fn downgrade_plan(
        &self,
        current: &[String],
        target: &str,
    ) -> Result<Vec<Step>, TargetError> {
        let current_idx = self.indices(current)?;
        let applied = self.ancestors(&current_idx);
        let remove = self.downgrade_removals(&current_idx, target)?;
        let order = self.alembic_order(&remove, &current_idx);
        Ok(self.steps(applied, order, Direction::Down))
    }

    /// The steps running `order` from `applied`, with the heads before and after each.
    fn steps(
        &self,
        mut state: BTreeSet<usize>,
        order: Vec<usize>,
        direction: Direction,
    ) -> Vec<Step> {
        order
            .into_iter()
            .map(|i| {
                let before = self.heads_of(&state);
                match direction {
                    Direction::Up => state.insert(i),
                    Direction::Down => state.remove(&i),
                };
                Step {
                    revision: self.migrations[i].revision.clone(),
                    direction,
                    heads_before: before,
                    heads_after: self.heads_of(&state),
                }
            })
            .collect()
    }

    /// `history -r LOWER:UPPER`, newest first in Alembic's order: the revisions below
    /// `upper` and from `lower` up (`None`: base or heads; `current` names `current`).
    pub fn history(
        &self,
        lower: Option<&str>,
        upper: Option<&str>,
        current: &[String],
    ) -> Result<Vec<&Migration>, TargetError> {
        let side = |name: Option<&str>, default: &str| -> Result<Vec<usize>, TargetError> {
            match name {
                Some("current") => self.indices(current),
                Some("") | None => self.absolute(default),
                Some(name) => self.absolute(name),
            }
        };
        let lower_idx = side(lower, "base")?;
        let targets = match upper {
            Some("current") => self.indices(current)?,
            Some(name) if !name.is_empty() => self.upgrade_targets(&lower_idx, name)?,
            _ => self.absolute("heads")?,
        };
        let required = self.ancestors(&targets);
        if lower_idx.iter().any(|l| !required.contains(l)) {
            return Err(TargetError::RangeNotAncestor {
                start: lower.unwrap_or("base").to_string(),
                end: upper.unwrap_or("heads").to_string(),
            });
        }
        let mut todo: BTreeSet<usize> = required
            .difference(&self.ancestors(&lower_idx))
            .copied()
            .collect();
        todo.extend(&lower_idx);
        if !lower_idx.is_empty() {
            let mut above = BTreeSet::new();
            for &l in &lower_idx {
                above.extend(self.descendants(l));
            }
            todo.retain(|i| above.contains(i));
        }
        Ok(self
            .alembic_order(&todo, &targets)
            .into_iter()
            .map(|i| &self.migrations[i])
            .collect())
    }

    /// One step removing `revision`, which must be a head of the applied set (the
    /// stairway's "down one step", well defined at branches and merges too).
    pub fn unapply_plan(
        &self,
        current: &[String],
        revision: &str,
    ) -> Result<Vec<Step>, TargetError> {
        let applied = self.ancestors(&self.indices(current)?);
        let i = self.index[&self.resolve_revision(revision)?.revision];
        if !applied.contains(&i) || self.children[i].iter().any(|c| applied.contains(c)) {
            return Err(TargetError::NotApplied {
                revision: revision.into(),
                current: current.to_vec(),
            });
        }
        let mut after = applied.clone();
        after.remove(&i);
        Ok(vec![Step {
            revision: self.migrations[i].revision.clone(),
            direction: Direction::Down,
            heads_before: self.heads_of(&applied),
            heads_after: self.heads_of(&after),
        }])
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = match self.direction {
            Direction::Up => "upgrade",
            Direction::Down => "downgrade",
        };
        write!(f, "{verb} {}", self.revision)
    }
}

mod labels;
mod order;
mod target;

#[cfg(test)]
mod tests;
mod usable;
pub use usable::UsableGraph;

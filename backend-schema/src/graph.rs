//! The revision graph: migrations as a DAG like Alembic's (merges have several parents,
//! branches have several heads), targets (`head`, `base`, prefixes, `+N`, `-N`), and
//! plans of steps from the database's current heads to a target.

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
    #[error("multiple head revisions are present ({}); name one of them, or use `heads` to upgrade all", heads.join(", "))]
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
        for (i, m) in migrations.iter().enumerate() {
            for parent in &m.parents {
                children[index[parent]].push(i);
            }
        }
        Ok(RevisionGraph {
            dir: dir.into(),
            migrations,
            index,
            children,
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

    /// Revisions no other revision revises.
    pub fn heads(&self) -> Vec<&str> {
        (0..self.migrations.len())
            .filter(|&i| self.children[i].is_empty())
            .map(|i| self.migrations[i].revision.as_str())
            .collect()
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

    /// What `show` takes: `head` (the one head), `heads` (each), or a revision ID or
    /// unique prefix.
    pub fn resolve_shown(&self, name: &str) -> Result<Vec<&Migration>, TargetError> {
        let heads = || -> Result<Vec<&Migration>, TargetError> {
            let heads: Vec<&Migration> = self
                .heads()
                .into_iter()
                .filter_map(|h| self.get(h))
                .collect();
            if heads.is_empty() {
                return Err(TargetError::Empty);
            }
            Ok(heads)
        };
        match name {
            "heads" => heads(),
            "head" => match heads()? {
                one if one.len() == 1 => Ok(one),
                many => Err(TargetError::MultipleHeads {
                    heads: many.iter().map(|m| m.revision.clone()).collect(),
                }),
            },
            _ => Ok(vec![self.resolve_revision(name)?]),
        }
    }

    /// A full revision ID or a unique prefix of one.
    pub fn resolve_revision(&self, partial: &str) -> Result<&Migration, TargetError> {
        if let Some(m) = self.get(partial) {
            return Ok(m);
        }
        let candidates: Vec<&Migration> = self
            .migrations
            .iter()
            .filter(|m| !partial.is_empty() && m.revision.starts_with(partial))
            .collect();
        match candidates.as_slice() {
            [one] => Ok(one),
            [] => Err(TargetError::Unknown {
                target: partial.to_string(),
                known: self
                    .migrations
                    .iter()
                    .map(|m| m.dir_name().to_string())
                    .collect(),
            }),
            many => Err(TargetError::Ambiguous {
                prefix: partial.to_string(),
                candidates: many.iter().map(|m| m.revision.clone()).collect(),
            }),
        }
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

    /// Steps from `current` heads up to `target`.
    pub fn upgrade_plan(&self, current: &[String], target: &str) -> Result<Vec<Step>, TargetError> {
        let current_idx = self.indices(current)?;
        let applied = self.ancestors(&current_idx);
        let targets: Vec<usize> = match target {
            "base" => Vec::new(),
            "heads" => (0..self.migrations.len())
                .filter(|&i| self.children[i].is_empty())
                .collect(),
            "head" => vec![self.single_head()?],
            _ if target.starts_with('-') || relative(target).is_some_and(|(_, n)| n < 0) => {
                return Err(TargetError::NotAnUpgrade {
                    target: target.into(),
                })
            }
            _ => match relative(target) {
                Some((from, steps)) => {
                    let start = match from {
                        Some(rev) => Some(self.index[&self.resolve_revision(rev)?.revision]),
                        None => self.single_current(&current_idx, target)?,
                    };
                    self.walk_up(start, steps as usize, target)?
                        .into_iter()
                        .collect()
                }
                None => vec![self.index[&self.resolve_revision(target)?.revision]],
            },
        };
        let wanted = self.ancestors(&targets);
        let mut state = applied.clone();
        let mut steps = Vec::new();
        for i in wanted
            .difference(&applied)
            .copied()
            .collect::<BTreeSet<_>>()
        {
            let before = self.heads_of(&state);
            state.insert(i);
            steps.push(Step {
                revision: self.migrations[i].revision.clone(),
                direction: Direction::Up,
                heads_before: before,
                heads_after: self.heads_of(&state),
            });
        }
        Ok(steps)
    }

    /// Steps from `current` heads down to `target`.
    pub fn downgrade_plan(
        &self,
        current: &[String],
        target: &str,
    ) -> Result<Vec<Step>, TargetError> {
        let current_idx = self.indices(current)?;
        let applied = self.ancestors(&current_idx);
        let remove: BTreeSet<usize> = match target {
            "base" => applied.clone(),
            "head" | "heads" => {
                return Err(TargetError::NotADowngrade {
                    target: target.into(),
                })
            }
            _ if target.starts_with('+') || relative(target).is_some_and(|(_, n)| n > 0) => {
                return Err(TargetError::NotADowngrade {
                    target: target.into(),
                })
            }
            _ => {
                let keep = match relative(target) {
                    Some((from, steps)) => {
                        let start = match from {
                            Some(rev) => Some(self.index[&self.resolve_revision(rev)?.revision]),
                            None => self.single_current(&current_idx, target)?,
                        };
                        self.walk_down(start, (-steps) as usize, target)?
                    }
                    None => Some(self.index[&self.resolve_revision(target)?.revision]),
                };
                match keep {
                    None => applied.clone(),
                    Some(keep) => {
                        if !applied.contains(&keep) {
                            return Err(TargetError::NotApplied {
                                revision: self.migrations[keep].revision.clone(),
                                current: current.to_vec(),
                            });
                        }
                        let mut below = self.descendants(keep);
                        below.remove(&keep);
                        below.intersection(&applied).copied().collect()
                    }
                }
            }
        };
        let mut state = applied;
        let mut steps = Vec::new();
        // Children before parents: the reverse of the topological order.
        for &i in remove.iter().rev() {
            let before = self.heads_of(&state);
            state.remove(&i);
            steps.push(Step {
                revision: self.migrations[i].revision.clone(),
                direction: Direction::Down,
                heads_before: before,
                heads_after: self.heads_of(&state),
            });
        }
        Ok(steps)
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

    fn single_head(&self) -> Result<usize, TargetError> {
        let heads: Vec<usize> = (0..self.migrations.len())
            .filter(|&i| self.children[i].is_empty())
            .collect();
        match heads.as_slice() {
            [] => Err(TargetError::Empty),
            [one] => Ok(*one),
            many => Err(TargetError::MultipleHeads {
                heads: many
                    .iter()
                    .map(|&i| self.migrations[i].revision.clone())
                    .collect(),
            }),
        }
    }

    fn single_current(
        &self,
        current: &[usize],
        target: &str,
    ) -> Result<Option<usize>, TargetError> {
        match current {
            [] => Ok(None),
            [one] => Ok(Some(*one)),
            many => Err(TargetError::AmbiguousStep {
                target: target.into(),
                at: many
                    .iter()
                    .map(|&i| self.migrations[i].revision.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                reason: "the database has several heads; name a revision (REV+N)".into(),
            }),
        }
    }

    fn walk_up(
        &self,
        start: Option<usize>,
        steps: usize,
        target: &str,
    ) -> Result<Option<usize>, TargetError> {
        let mut at = start;
        for _ in 0..steps {
            let next: Vec<usize> = match at {
                None => (0..self.migrations.len())
                    .filter(|&i| self.migrations[i].parents.is_empty())
                    .collect(),
                Some(i) => self.children[i].clone(),
            };
            at = Some(match next.as_slice() {
                [] => {
                    return Err(TargetError::OutOfRange {
                        target: target.into(),
                        end: "head",
                    })
                }
                [one] => *one,
                many => {
                    return Err(TargetError::AmbiguousStep {
                        target: target.into(),
                        at: at.map_or("base".into(), |i| self.migrations[i].revision.clone()),
                        reason: format!(
                            "it continues into {}; name one",
                            many.iter()
                                .map(|&i| self.migrations[i].revision.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    })
                }
            });
        }
        Ok(at)
    }

    fn walk_down(
        &self,
        start: Option<usize>,
        steps: usize,
        target: &str,
    ) -> Result<Option<usize>, TargetError> {
        let mut at = start;
        for _ in 0..steps {
            let Some(i) = at else {
                return Err(TargetError::OutOfRange {
                    target: target.into(),
                    end: "base",
                });
            };
            at = match self.migrations[i].parents.as_slice() {
                [] => None,
                [one] => Some(self.index[one]),
                many => {
                    return Err(TargetError::AmbiguousStep {
                        target: target.into(),
                        at: self.migrations[i].revision.clone(),
                        reason: format!(
                            "it is a merge of {}; downgrade to one of them by ID",
                            many.join(", ")
                        ),
                    })
                }
            };
        }
        Ok(at)
    }
}

/// `+2` -> (None, 2); `-1` -> (None, -1); `ae10+2` -> (Some("ae10"), 2).
fn relative(target: &str) -> Option<(Option<&str>, i64)> {
    let split = target.rfind(['+', '-'])?;
    let (from, count) = target.split_at(split);
    let count: i64 = count.parse().ok()?;
    Some(((!from.is_empty()).then_some(from), count))
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

#[cfg(test)]
mod tests;
mod usable;
pub use usable::UsableGraph;

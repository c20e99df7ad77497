//! Targets as Alembic reads them: `head`, `heads`, `base`, revision IDs and prefixes,
//! branch labels (`label`, `label@head`, `label@heads`, `label@base`, `label@REV`) and
//! relative steps (`+N`, `-N`, `REV+N`, `REV-N`, `label@+N`, `label@-N`), resolved as
//! `RevisionMap._parse_upgrade_target` / `_parse_downgrade_target` /
//! `_collect_downgrade_revisions` do.

use std::collections::BTreeSet;

use super::{RevisionGraph, TargetError};

/// Where a walk stands: below every revision, or at one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Place {
    Base,
    At(usize),
}

/// `[label@][symbol](+|-)N`, as Alembic's `_relative_destination` matches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Relative<'a> {
    pub label: Option<&'a str>,
    pub symbol: Option<&'a str>,
    pub steps: i64,
}

pub(super) fn parse_relative(target: &str) -> Option<Relative<'_>> {
    // The label is the shortest prefix before an `@` that lets the rest match, else none.
    let splits = target
        .match_indices('@')
        .filter(|(i, _)| *i > 0)
        .map(|(i, _)| (Some(&target[..i]), &target[i + 1..]))
        .chain([(None, target)]);
    for (label, rest) in splits {
        let word_end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let (symbol, tail) = rest.split_at(word_end);
        let sign = match tail.chars().next() {
            Some('+') => 1,
            Some('-') => -1,
            _ => continue,
        };
        let digits = &tail[1..];
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let count: i64 = digits.parse().ok()?;
        return Some(Relative {
            label,
            symbol: (!symbol.is_empty()).then_some(symbol),
            steps: sign * count,
        });
    }
    None
}

impl RevisionGraph {
    pub(super) fn unknown(&self, target: &str) -> TargetError {
        TargetError::Unknown {
            target: target.to_string(),
            known: self
                .migrations
                .iter()
                .map(|m| m.dir_name().to_string())
                .collect(),
        }
    }

    /// An exact revision ID or branch label, else a unique prefix of one (of four
    /// characters or more, as Alembic matches); with `branch`, only revisions on it.
    pub(super) fn lookup(&self, ident: &str, branch: Option<&str>) -> Result<usize, TargetError> {
        let root = branch.map(|b| self.branch_root(b)).transpose()?;
        let exact = self
            .index
            .get(ident)
            .or_else(|| self.label_owner.get(ident))
            .copied();
        let found = match exact {
            Some(i) => i,
            None => {
                let mut candidates: Vec<(&str, usize)> = self
                    .migrations
                    .iter()
                    .enumerate()
                    .map(|(i, m)| (m.revision.as_str(), i))
                    .chain(self.label_owner.iter().map(|(l, &i)| (l.as_str(), i)))
                    .filter(|(key, _)| !ident.is_empty() && key.len() > 3 && key.starts_with(ident))
                    .collect();
                if let Some(root) = root {
                    candidates.retain(|&(_, i)| self.shares_lineage(i, root));
                }
                candidates.sort();
                match candidates.as_slice() {
                    [(_, one)] => *one,
                    [] => return Err(self.unknown(ident)),
                    many => {
                        return Err(TargetError::Ambiguous {
                            prefix: ident.to_string(),
                            candidates: many.iter().map(|(key, _)| key.to_string()).collect(),
                        })
                    }
                }
            }
        };
        if let (Some(root), Some(branch)) = (root, branch) {
            if !self.shares_lineage(found, root) {
                return Err(TargetError::NotOnBranch {
                    revision: self.migrations[found].revision.clone(),
                    branch: branch.to_string(),
                });
            }
        }
        Ok(found)
    }

    /// The revision a branch name stands for: the one declaring the label, or a
    /// revision named by ID (Alembic accepts `REV@head`).
    pub(super) fn branch_root(&self, branch: &str) -> Result<usize, TargetError> {
        if let Some(&i) = self.label_owner.get(branch) {
            return Ok(i);
        }
        self.lookup(branch, None)
            .map_err(|_| TargetError::NoSuchBranch {
                branch: branch.to_string(),
                labels: self.label_owner.keys().cloned().collect(),
            })
    }

    /// Whether `i` is `root`, above it or below it.
    pub(super) fn shares_lineage(&self, i: usize, root: usize) -> bool {
        self.ancestors(&[root]).contains(&i) || self.descendants(root).contains(&i)
    }

    pub(super) fn head_indices(&self) -> Vec<usize> {
        let mut heads: Vec<usize> = (0..self.migrations.len())
            .filter(|&i| self.children[i].is_empty())
            .collect();
        heads.sort_by_key(|&i| self.rank[i]);
        heads
    }

    /// What an absolute target names (Alembic's `get_revisions`): none for `base`.
    pub(super) fn absolute(&self, target: &str) -> Result<Vec<usize>, TargetError> {
        let (branch, id) = match target.split_once('@') {
            Some((branch, id)) => (Some(branch), id),
            None => (None, target),
        };
        let on_branch = |heads: Vec<usize>| -> Result<Vec<usize>, TargetError> {
            Ok(match branch {
                Some(branch) => {
                    let root = self.branch_root(branch)?;
                    heads
                        .into_iter()
                        .filter(|&h| self.shares_lineage(h, root))
                        .collect()
                }
                None => heads,
            })
        };
        match id {
            "heads" => on_branch(self.head_indices()),
            "head" => {
                let heads = on_branch(self.head_indices())?;
                if heads.len() > 1 {
                    return Err(TargetError::MultipleHeads {
                        heads: heads
                            .iter()
                            .map(|&h| self.migrations[h].revision.clone())
                            .collect(),
                    });
                }
                Ok(heads)
            }
            "base" => {
                if let Some(branch) = branch {
                    self.branch_root(branch)?;
                }
                Ok(Vec::new())
            }
            _ => Ok(vec![self.lookup(id, branch)?]),
        }
    }

    /// What an absolute target names when it must be one place (Alembic's
    /// `get_revision`): `None` for base.
    fn absolute_one(&self, target: &str) -> Result<Option<usize>, TargetError> {
        let found = self.absolute(target)?;
        match found.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(*one)),
            many => Err(TargetError::MultipleHeads {
                heads: many
                    .iter()
                    .map(|&h| self.migrations[h].revision.clone())
                    .collect(),
            }),
        }
    }

    /// Alembic's `_walk`: `steps` up (positive) or down from `start`; `None` starts below
    /// every root going up and above every head going down. `Ok(None)`: walked off the
    /// graph.
    fn walk(
        &self,
        start: Option<Place>,
        steps: i64,
        branch: Option<usize>,
        target: &str,
    ) -> Result<Option<Place>, TargetError> {
        let mut at = start;
        for _ in 0..steps.unsigned_abs() {
            let next: Vec<Place> = if steps > 0 {
                let up: Vec<usize> = match at {
                    None | Some(Place::Base) => (0..self.migrations.len())
                        .filter(|&i| self.parents[i].is_empty())
                        .collect(),
                    Some(Place::At(i)) => self.children[i].clone(),
                };
                up.into_iter()
                    .filter(|&i| branch.is_none_or(|root| self.shares_lineage(i, root)))
                    .map(Place::At)
                    .collect()
            } else {
                match at {
                    Some(Place::Base) => Vec::new(),
                    None => self.head_indices().into_iter().map(Place::At).collect(),
                    Some(Place::At(i)) if self.parents[i].is_empty() => vec![Place::Base],
                    Some(Place::At(i)) => self.parents[i].iter().map(|&p| Place::At(p)).collect(),
                }
            };
            at = Some(match next.as_slice() {
                [] => return Ok(None),
                [one] => *one,
                many => {
                    let name = |p: &Place| match p {
                        Place::Base => "base".to_string(),
                        Place::At(i) => self.migrations[*i].revision.clone(),
                    };
                    return Err(TargetError::AmbiguousStep {
                        target: target.into(),
                        at: at.as_ref().map_or("the heads".into(), name),
                        reason: format!(
                            "it {} {}; name one of them",
                            if steps > 0 { "branches into" } else { "merges" },
                            many.iter().map(name).collect::<Vec<_>>().join(", ")
                        ),
                    });
                }
            });
        }
        Ok(at)
    }

    /// The revisions an upgrade to `target` ends at, from `current`.
    pub(super) fn upgrade_targets(
        &self,
        current: &[usize],
        target: &str,
    ) -> Result<Vec<usize>, TargetError> {
        let Some(relative) = parse_relative(target) else {
            return self.absolute(target);
        };
        let out_of_range = |end| TargetError::OutOfRange {
            target: target.into(),
            end,
        };
        if relative.steps <= 0 {
            let Some(symbol) = relative.symbol else {
                return Err(TargetError::NotAnUpgrade {
                    target: target.into(),
                });
            };
            let named = match relative.label {
                Some(label) => format!("{label}@{symbol}"),
                None => symbol.to_string(),
            };
            let start = self.absolute_one(&named)?.map(Place::At);
            return match self.walk(start, relative.steps, None, target)? {
                Some(Place::At(i)) => Ok(vec![i]),
                Some(Place::Base) | None => Err(out_of_range("base")),
            };
        }
        let root = relative.label.map(|l| self.branch_root(l)).transpose()?;
        let start = match relative.symbol {
            Some(symbol) => self.absolute_one(symbol)?.map(Place::At),
            None => {
                let mut starts: Vec<usize> = current.to_vec();
                if let Some(root) = root {
                    starts.retain(|&c| self.shares_lineage(c, root));
                    if starts.is_empty() {
                        // The branch is not at a head: start from its highest applied
                        // revision, or from base.
                        let on_branch: BTreeSet<usize> = self
                            .ancestors(current)
                            .into_iter()
                            .filter(|&i| self.shares_lineage(i, root))
                            .collect();
                        starts = on_branch
                            .iter()
                            .copied()
                            .filter(|&i| !self.children[i].iter().any(|c| on_branch.contains(c)))
                            .collect();
                    }
                }
                match starts.as_slice() {
                    [] => None,
                    [one] => Some(Place::At(*one)),
                    many => {
                        return Err(TargetError::AmbiguousStep {
                            target: target.into(),
                            at: self.names(many),
                            reason: format!(
                            "the database has several heads; step from one of them, e.g. `{}+{}`",
                            self.migrations[many[0]].revision, relative.steps
                        ),
                        })
                    }
                }
            }
        };
        match self.walk(start, relative.steps, root, target)? {
            Some(Place::At(i)) => Ok(vec![i]),
            Some(Place::Base) | None => Err(out_of_range("head")),
        }
    }

    /// The revisions a downgrade to `target` removes from `current` (unordered).
    pub(super) fn downgrade_removals(
        &self,
        current: &[usize],
        target: &str,
    ) -> Result<BTreeSet<usize>, TargetError> {
        let out_of_range = |end| TargetError::OutOfRange {
            target: target.into(),
            end,
        };
        let (branch, destination): (Option<String>, Option<usize>) = match parse_relative(target) {
            Some(relative) if relative.steps >= 0 => {
                let Some(symbol) = relative.symbol else {
                    return Err(TargetError::NotADowngrade {
                        target: target.into(),
                    });
                };
                let root = relative.label.map(|l| self.branch_root(l)).transpose()?;
                let start = self.absolute_one(symbol)?.map(Place::At);
                match self.walk(start, relative.steps, root, target)? {
                    Some(Place::At(i)) => (relative.label.map(str::to_string), Some(i)),
                    Some(Place::Base) | None => return Err(out_of_range("head")),
                }
            }
            Some(relative) => {
                let (branch, start) = match (relative.label, relative.symbol) {
                    (label, Some(symbol)) => {
                        let named = match label {
                            Some(label) => format!("{label}@{symbol}"),
                            None => symbol.to_string(),
                        };
                        (label.map(str::to_string), self.absolute_one(&named)?)
                    }
                    (Some(label), None) => {
                        let root = self.branch_root(label)?;
                        let on: Vec<usize> = current
                            .iter()
                            .copied()
                            .filter(|&c| self.shares_lineage(c, root))
                            .collect();
                        match on.as_slice() {
                            [one] => (Some(label.to_string()), Some(*one)),
                            [] => return Err(out_of_range("base")),
                            many => {
                                return Err(TargetError::AmbiguousStep {
                                    target: target.into(),
                                    at: self.names(many),
                                    reason: format!(
                                        "several of the database's heads are on {label}; step back from one of them, e.g. `{}@{}`",
                                        self.migrations[many[0]].revision, relative.steps
                                    ),
                                })
                            }
                        }
                    }
                    (None, None) => match current {
                        [] => return Err(out_of_range("base")),
                        // Restricted to the branch of the head it starts from.
                        [one] => (Some(self.migrations[*one].revision.clone()), Some(*one)),
                        // Alembic warns and picks whichever row comes first; refused here.
                        many => {
                            return Err(TargetError::AmbiguousStep {
                                target: target.into(),
                                at: self.names(many),
                                reason: format!(
                                    "the database has several heads; name the one to step back from, e.g. `{}@{}`",
                                    self.migrations[many[0]].revision, relative.steps
                                ),
                            })
                        }
                    },
                };
                match self.walk(start.map(Place::At), relative.steps, None, target)? {
                    Some(Place::At(i)) => (branch, Some(i)),
                    Some(Place::Base) => (branch, None),
                    None => return Err(out_of_range("base")),
                }
            }
            None => {
                let (branch, symbol) = match target.rsplit_once('@') {
                    Some((branch, symbol)) if !branch.is_empty() => {
                        self.branch_root(branch)?;
                        (Some(branch.to_string()), symbol)
                    }
                    _ => (None, target),
                };
                (branch, self.absolute_one(symbol)?)
            }
        };

        let mut roots: Vec<usize> = match destination {
            None => (0..self.migrations.len())
                .filter(|&i| self.parents[i].is_empty())
                .collect(),
            Some(d) => self.children[d].clone(),
        };
        if let Some(branch) = &branch {
            if roots.len() > 1 {
                let below = self.ancestors(&[self.branch_root(branch)?]);
                roots.retain(|r| below.contains(r));
                if roots.is_empty() {
                    return Err(TargetError::NotOnBranch {
                        revision: target.to_string(),
                        branch: branch.clone(),
                    });
                }
            }
        }
        let active = self.ancestors(current);
        let mut remove = BTreeSet::new();
        for root in roots {
            remove.extend(self.descendants(root).intersection(&active));
        }
        if let Some(d) = destination {
            if remove.is_empty() && !current.contains(&d) {
                return Err(TargetError::NotApplied {
                    revision: self.migrations[d].revision.clone(),
                    current: current
                        .iter()
                        .map(|&c| self.migrations[c].revision.clone())
                        .collect(),
                });
            }
        }
        Ok(remove)
    }

    fn names(&self, indices: &[usize]) -> String {
        indices
            .iter()
            .map(|&i| self.migrations[i].revision.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

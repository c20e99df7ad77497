//! The order Alembic runs a set of revisions in (`RevisionMap._topological_sort`): from
//! the given heads down, one branch finished before the next is started, the heads taken
//! in file order (here: directory name). Upgrades run the reverse.

use std::collections::BTreeSet;

use super::RevisionGraph;

impl RevisionGraph {
    /// `todo` children before parents, starting from those of `heads` in `todo`.
    pub(super) fn alembic_order(&self, todo: &BTreeSet<usize>, heads: &[usize]) -> Vec<usize> {
        let mut todo = todo.clone();
        let mut current: Vec<usize> = heads
            .iter()
            .copied()
            .filter(|h| todo.contains(h))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        current.sort_by_key(|&i| self.rank[i]);
        let mut ancestors: Vec<BTreeSet<usize>> =
            current.iter().map(|&h| self.ancestors(&[h])).collect();
        let mut output = Vec::with_capacity(todo.len());
        let mut at = 0;
        while !current.is_empty() {
            let candidate = current[at];
            // Another line still needs this revision: finish that line first.
            if let Some(other) = ancestors
                .iter()
                .enumerate()
                .position(|(k, set)| k != at && set.contains(&candidate))
            {
                at = other;
                continue;
            }
            if todo.remove(&candidate) {
                output.push(candidate);
            }
            let parents = &self.parents[candidate];
            let next: Vec<usize> = parents
                .iter()
                .copied()
                .filter(|p| todo.contains(p) && !current.contains(p))
                .collect();
            match next.split_first() {
                None => {
                    current.remove(at);
                    ancestors.remove(at);
                    at = at.saturating_sub(1);
                }
                Some((&first, rest)) => {
                    current[at] = first;
                    if parents.len() == 1 {
                        ancestors[at].remove(&candidate);
                    } else {
                        ancestors[at] = self.ancestors(&[first]);
                        current.extend(rest);
                        ancestors.extend(rest.iter().map(|&r| self.ancestors(&[r])));
                    }
                }
            }
        }
        debug_assert!(todo.is_empty(), "every revision to run is below a head");
        output
    }
}

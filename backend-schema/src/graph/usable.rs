//! The usable part of a graph with problems: every problem (duplicate IDs, missing
//! parents, cycles) collected in one go, and the graph of the revisions they do not
//! touch, so `verify` can still check those instead of stopping at the first kind.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::RevisionGraph;
use crate::migration::Migration;
use crate::source::{parse_source, read_source, SourceError, SourceProblem};

/// A graph built from the revisions without problems.
#[derive(Debug, Clone)]
pub struct UsableGraph {
    pub graph: RevisionGraph,
    /// Every problem of the graph, each naming its file.
    pub problems: Vec<SourceProblem>,
    /// Revisions without a problem of their own that descend from one that has: not
    /// checked, with their folder.
    pub left_out: Vec<(String, PathBuf)>,
}

impl RevisionGraph {
    /// Reads `dir` like [`RevisionGraph::load`]; graph problems do not stop it (files
    /// that cannot be read or parsed still do).
    pub fn load_usable(dir: &Path) -> Result<UsableGraph, SourceError> {
        let tree = read_source(dir)?;
        Ok(RevisionGraph::usable(dir, parse_source(&tree)?))
    }

    /// Builds the graph again without the revisions each round's problems name (and
    /// their descendants), until what is left is a valid graph.
    pub fn usable(dir: &Path, migrations: Vec<Migration>) -> UsableGraph {
        let mut problems = Vec::new();
        let mut left_out = Vec::new();
        let mut current = migrations;
        let mut gone: BTreeSet<String> = BTreeSet::new();
        loop {
            let error = match RevisionGraph::new(dir, current.clone()) {
                Ok(graph) => {
                    return UsableGraph {
                        graph,
                        problems,
                        left_out,
                    }
                }
                Err(error) => error,
            };
            let named: BTreeSet<&Path> = error.problems.iter().map(|p| p.path.as_path()).collect();
            let before = current.len();
            let (bad, mut keep): (Vec<Migration>, Vec<Migration>) = current
                .into_iter()
                .partition(|m| named.contains(m.metadata_path().as_path()));
            problems.extend(error.problems.iter().cloned());
            gone.extend(bad.iter().map(|m| m.revision.clone()));
            // Descendants of a removed revision: their parent is gone, which is not a
            // problem of theirs.
            loop {
                let defined: BTreeSet<String> = keep.iter().map(|m| m.revision.clone()).collect();
                let (orphans, rest): (Vec<Migration>, Vec<Migration>) =
                    keep.into_iter().partition(|m| {
                        m.parents
                            .iter()
                            .any(|p| gone.contains(p) && !defined.contains(p))
                    });
                keep = rest;
                if orphans.is_empty() {
                    break;
                }
                for orphan in orphans {
                    gone.insert(orphan.revision.clone());
                    left_out.push((orphan.revision, orphan.dir));
                }
            }
            if keep.len() == before {
                // Problems that name no migration: nothing to take away, so stop here.
                return UsableGraph {
                    graph: RevisionGraph::new(dir, Vec::new()).expect("an empty graph is valid"),
                    problems,
                    left_out,
                };
            }
            current = keep;
        }
    }
}

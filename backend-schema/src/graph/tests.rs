//! Unit tests of the revision graph: loading errors, targets and plans.

use std::path::PathBuf;

use super::*;
use crate::migration::checksum;

fn migration(revision: &str, parents: &[&str]) -> Migration {
    Migration {
        revision: revision.into(),
        parents: parents.iter().map(|p| p.to_string()).collect(),
        message: format!("message of {revision}"),
        create_date: None,
        transactional: true,
        branch_labels: Vec::new(),
        dir: PathBuf::from(format!("migrations/{revision}_x")),
        up: String::new(),
        down: String::new(),
        checksum: checksum("", ""),
    }
}

fn chain() -> RevisionGraph {
    RevisionGraph::new(
        "migrations",
        vec![
            migration("c3", &["b2"]),
            migration("a1", &[]),
            migration("b2", &["a1"]),
        ],
    )
    .unwrap()
}

fn revisions(steps: &[Step]) -> Vec<&str> {
    steps.iter().map(|s| s.revision.as_str()).collect()
}

#[test]
fn a_chain_is_sorted_parents_first() {
    let graph = chain();
    let order: Vec<&str> = graph
        .migrations()
        .iter()
        .map(|m| m.revision.as_str())
        .collect();
    assert_eq!(order, ["a1", "b2", "c3"]);
    assert_eq!(graph.heads(), ["c3"]);
}

#[test]
fn duplicates_missing_parents_and_cycles_are_reported_with_paths() {
    let err = RevisionGraph::new(
        "migrations",
        vec![
            migration("a1", &[]),
            migration("a1", &[]),
            migration("b2", &["zz"]),
        ],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("duplicate revision ID a1"), "{err}");
    assert!(
        err.contains("migrations/b2_x/migration.toml: revision b2 revises zz"),
        "{err}"
    );
    let err = RevisionGraph::new(
        "migrations",
        vec![migration("a1", &["b2"]), migration("b2", &["a1"])],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("part of a cycle"), "{err}");
}

#[test]
fn targets_resolve_like_alembic() {
    let graph = chain();
    assert_eq!(
        revisions(&graph.upgrade_plan(&[], "head").unwrap()),
        ["a1", "b2", "c3"]
    );
    assert_eq!(
        revisions(&graph.upgrade_plan(&[], "+2").unwrap()),
        ["a1", "b2"]
    );
    assert_eq!(
        revisions(&graph.upgrade_plan(&["a1".into()], "b").unwrap()),
        ["b2"]
    );
    assert_eq!(
        revisions(&graph.upgrade_plan(&["a1".into()], "a1+2").unwrap()),
        ["b2", "c3"]
    );
    assert!(graph
        .upgrade_plan(&["c3".into()], "head")
        .unwrap()
        .is_empty());
    assert_eq!(
        revisions(&graph.downgrade_plan(&["c3".into()], "-1").unwrap()),
        ["c3"]
    );
    assert_eq!(
        revisions(&graph.downgrade_plan(&["c3".into()], "a1").unwrap()),
        ["c3", "b2"]
    );
    assert_eq!(
        revisions(&graph.downgrade_plan(&["c3".into()], "base").unwrap()),
        ["c3", "b2", "a1"]
    );
    assert!(matches!(
        graph.downgrade_plan(&["a1".into()], "-2"),
        Err(TargetError::OutOfRange { .. })
    ));
    assert!(matches!(
        graph.upgrade_plan(&[], "+4"),
        Err(TargetError::OutOfRange { .. })
    ));
    assert!(matches!(
        graph.downgrade_plan(&["a1".into()], "c3"),
        Err(TargetError::NotApplied { .. })
    ));
}

#[test]
fn unknown_and_ambiguous_targets_name_the_candidates() {
    let graph = RevisionGraph::new(
        "migrations",
        vec![migration("ab1", &[]), migration("ab2", &["ab1"])],
    )
    .unwrap();
    let err = graph.upgrade_plan(&[], "ab").unwrap_err().to_string();
    assert!(err.contains("ab1, ab2"), "{err}");
    let err = graph.upgrade_plan(&[], "zz").unwrap_err().to_string();
    assert!(
        err.contains("can't locate revision identified by 'zz'"),
        "{err}"
    );
    assert!(err.contains("ab1_x"), "{err}");
}

#[test]
fn branches_and_merges_track_every_head() {
    // a -> b1 -> m, a -> b2 -> m
    let graph = RevisionGraph::new(
        "migrations",
        vec![
            migration("a", &[]),
            migration("b1", &["a"]),
            migration("b2", &["a"]),
            migration("m", &["b1", "b2"]),
        ],
    )
    .unwrap();
    let up = graph.upgrade_plan(&[], "head").unwrap();
    assert_eq!(revisions(&up), ["a", "b1", "b2", "m"]);
    assert_eq!(up[2].heads_before, ["b1"]);
    assert_eq!(up[2].heads_after, ["b1", "b2"]);
    assert_eq!(up[3].heads_after, ["m"]);
    let down = graph.downgrade_plan(&["m".into()], "a").unwrap();
    assert_eq!(revisions(&down), ["m", "b2", "b1"]);
    assert_eq!(down[0].heads_after, ["b1", "b2"]);
    assert!(matches!(
        graph.downgrade_plan(&["m".into()], "-1"),
        Err(TargetError::AmbiguousStep { .. })
    ));

    let two_heads = RevisionGraph::new(
        "migrations",
        vec![
            migration("a", &[]),
            migration("b1", &["a"]),
            migration("b2", &["a"]),
        ],
    )
    .unwrap();
    assert!(matches!(
        two_heads.upgrade_plan(&[], "head"),
        Err(TargetError::MultipleHeads { .. })
    ));
    assert_eq!(two_heads.upgrade_plan(&[], "heads").unwrap().len(), 3);
}

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
        revisions(&graph.upgrade_plan(&["a1".into()], "b2").unwrap()),
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
        vec![migration("abc1", &[]), migration("abc2", &["abc1"])],
    )
    .unwrap();
    let err = graph.upgrade_plan(&[], "abc").unwrap_err().to_string();
    assert!(err.contains("abc1, abc2"), "{err}");
    let err = graph.upgrade_plan(&[], "zz").unwrap_err().to_string();
    assert!(
        err.contains("can't locate revision identified by 'zz'"),
        "{err}"
    );
    assert!(err.contains("abc1_x"), "{err}");
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
    // Alembic's order: down from the merge along its first parent's line, then the
    // second; an upgrade runs that backwards.
    let up = graph.upgrade_plan(&[], "head").unwrap();
    assert_eq!(revisions(&up), ["a", "b2", "b1", "m"]);
    assert_eq!(up[2].heads_before, ["b2"]);
    assert_eq!(up[2].heads_after, ["b1", "b2"]);
    assert_eq!(up[3].heads_after, ["m"]);
    let down = graph.downgrade_plan(&["m".into()], "a").unwrap();
    assert_eq!(revisions(&down), ["m", "b1", "b2"]);
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

/// Two independent lines from one root: `a -> x1 -> x2`, `a -> y1 -> y2`, with `x`
/// labelled on `x1` and `y` on `y1`.
fn two_branches() -> RevisionGraph {
    let mut x1 = migration("x1000000", &["a0000000"]);
    x1.branch_labels = vec!["xbranch".into()];
    let mut y1 = migration("y1000000", &["a0000000"]);
    y1.branch_labels = vec!["ybranch".into()];
    RevisionGraph::new(
        "migrations",
        vec![
            migration("a0000000", &[]),
            x1,
            migration("x2000000", &["x1000000"]),
            y1,
            migration("y2000000", &["y1000000"]),
        ],
    )
    .unwrap()
}

#[test]
fn branches_run_one_after_the_other_as_alembic_orders_them() {
    let graph = two_branches();
    // Heads in directory order; each line is finished before the next starts.
    assert_eq!(
        revisions(&graph.upgrade_plan(&[], "heads").unwrap()),
        ["a0000000", "y1000000", "y2000000", "x1000000", "x2000000"]
    );
    let top = ["x2000000".to_string(), "y2000000".to_string()];
    assert_eq!(
        revisions(&graph.downgrade_plan(&top, "base").unwrap()),
        ["x2000000", "x1000000", "y2000000", "y1000000", "a0000000"]
    );
}

#[test]
fn branch_labels_resolve_like_alembic() {
    let graph = two_branches();
    assert_eq!(graph.labels_of("x2000000"), ["xbranch"]);
    assert!(
        graph.labels_of("a0000000").is_empty(),
        "a is a branch point"
    );
    assert_eq!(
        revisions(&graph.upgrade_plan(&[], "xbranch@head").unwrap()),
        ["a0000000", "x1000000", "x2000000"]
    );
    // A bare label is the revision declaring it; a label prefix works when unique.
    assert_eq!(
        revisions(&graph.upgrade_plan(&[], "ybra").unwrap()),
        ["a0000000", "y1000000"]
    );
    let at = ["x1000000".to_string()];
    assert_eq!(
        revisions(&graph.upgrade_plan(&at, "ybranch@+2").unwrap()),
        ["y1000000", "y2000000"]
    );
    let top = ["x2000000".to_string(), "y2000000".to_string()];
    assert_eq!(
        revisions(&graph.downgrade_plan(&top, "ybranch@-1").unwrap()),
        ["y2000000"]
    );
    assert_eq!(
        revisions(&graph.downgrade_plan(&top, "xbranch@base").unwrap()),
        ["x2000000", "x1000000", "y2000000", "y1000000", "a0000000"],
        "one root: Alembic's label@base goes down to it"
    );
    assert!(matches!(
        graph.upgrade_plan(&[], "xbranch@y2000000"),
        Err(TargetError::NotOnBranch { .. })
    ));
    assert!(matches!(
        graph.upgrade_plan(&[], "nobranch@head"),
        Err(TargetError::NoSuchBranch { .. })
    ));
}

#[test]
fn relative_targets_work_from_a_revision_in_both_directions() {
    let graph = two_branches();
    let top = ["x2000000".to_string(), "y2000000".to_string()];
    // `downgrade -1` with several heads names a form that works.
    let err = graph.downgrade_plan(&top, "-1").unwrap_err().to_string();
    assert!(err.contains("`x2000000@-1`"), "{err}");
    assert_eq!(
        revisions(&graph.downgrade_plan(&top, "x2000000@-1").unwrap()),
        ["x2000000"]
    );
    // REV+N going down: to the revision N above REV.
    assert_eq!(
        revisions(&graph.downgrade_plan(&top, "x1000000+1").unwrap()),
        Vec::<&str>::new()
    );
    assert!(
        matches!(
            graph.downgrade_plan(&top, "a0000000+1"),
            Err(TargetError::AmbiguousStep { .. })
        ),
        "a branch point has no single +1"
    );
    // REV-N going up: to the revision N below REV.
    assert_eq!(
        revisions(&graph.upgrade_plan(&[], "x2000000-1").unwrap()),
        ["a0000000", "x1000000"]
    );
}

#[test]
fn a_label_that_cannot_name_one_branch_is_refused_with_its_path() {
    let mut a = migration("a0000000", &[]);
    a.branch_labels = vec!["ops".into()];
    let mut b = migration("b0000000", &["a0000000"]);
    b.branch_labels = vec!["ops".into(), "a0000000".into()];
    let err = RevisionGraph::new("migrations", vec![a, b])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(
            "branch label 'ops' is declared by more than one revision (a0000000, b0000000)"
        ),
        "{err}"
    );
    assert!(
        err.contains(
            "migrations/b0000000_x/migration.toml: branch label 'a0000000' is also a revision ID"
        ),
        "{err}"
    );
}

#[test]
fn malformed_relative_targets_are_not_guessed() {
    let graph = chain();
    assert!(graph.upgrade_plan(&[], "+1x").is_err());
    assert!(matches!(
        graph.upgrade_plan(&["c3".into()], "-1"),
        Err(TargetError::NotAnUpgrade { .. })
    ));
    assert!(matches!(
        graph.downgrade_plan(&["a1".into()], "+1"),
        Err(TargetError::NotADowngrade { .. })
    ));
}

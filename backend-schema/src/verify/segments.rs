//! The stairway cut into segments that climb at the same time, each on a throwaway
//! cluster of its own: how many, where they start, and how their reports join into one
//! that reads as if one stairway had climbed them all.
//!
//! A segment after the first starts by replaying every revision before it the fast way
//! (the seeding, the upgrade, the downgrade and the upgrade again, none of the reads or
//! checks), so that it meets what the stairway's round trips left; it then verifies its
//! own revisions as the first segment verifies its. Each has
//! its own cluster because roles are cluster-wide: two stairways on one cluster would
//! each see the other's `CREATE ROLE`.

use std::ops::Range;

use super::{redundancy_known, warn_once, VerifyReport};

/// What replaying a revision costs next to verifying it (the same three migrations and
/// two seedings, without the traces and about a dozen catalog reads), measured on the
/// bench's 300-revision chain: replaying the first 176 revisions took 1.66 s, verifying
/// them 5.7 s, both with the other segment climbing beside them (207 units of
/// `step_cost`: 8 ms and 27.5 ms a unit).
const REPLAY_COST: f64 = 0.3;

/// How many revisions before it make a revision cost twice what the first one does:
/// each step's catalog reads and the migrations themselves grow with the schema built so
/// far. On the bench's 300-revision chain the revisions after position 176 cost 40 ms
/// each, those before it 32 ms; a cut that counted every revision alike (at 176)
/// left the later segment finishing 0.9 s after the first.
const GROWTH: f64 = 500.0;

/// What verifying the revision at position `p` costs, in units of the first one's.
fn step_cost(p: usize) -> f64 {
    1.0 + p as f64 / GROWTH
}

/// What verifying the revisions at `positions` costs.
fn cost(positions: Range<usize>) -> f64 {
    positions.map(step_cost).sum()
}

/// Fewer fresh revisions per segment than this are not worth a cluster of their own
/// when the number of segments is chosen for the caller.
pub(crate) const MIN_SEGMENT: usize = 24;

/// How many segments climb `fresh` revisions: `jobs` when the caller chose (never more
/// than the revisions), else one per core while each gets `MIN_SEGMENT` revisions.
pub(crate) fn segment_count(fresh: usize, jobs: Option<usize>, cores: usize) -> usize {
    let count = match jobs {
        Some(jobs) => jobs,
        None => cores.min(fresh / MIN_SEGMENT),
    };
    count.clamp(1, fresh.max(1))
}

/// Cuts the positions `first..total` into `count` consecutive segments of about the
/// same cost, a segment that starts at position `p` paying `REPLAY_COST` times the cost
/// of the positions before `p` to get there: earlier segments are longer. Every segment
/// holds at least one position.
pub(crate) fn plan(first: usize, total: usize, count: usize) -> Vec<Range<usize>> {
    let fresh = total.saturating_sub(first);
    let count = count.clamp(1, fresh.max(1));
    if count == 1 {
        return std::iter::once(first..total).collect();
    }
    // The smallest per-segment budget whose greedy cut covers everything.
    let cut = |budget: f64| -> Vec<Range<usize>> {
        let mut segments = Vec::with_capacity(count);
        let mut start = first;
        for k in 0..count {
            let mut spent = if k == 0 {
                0.0
            } else {
                REPLAY_COST * cost(0..start)
            };
            let last = total - (count - k - 1);
            let mut end = (start + 1).min(last.max(start + 1));
            spent += step_cost(start);
            while end < last && spent + step_cost(end) <= budget {
                spent += step_cost(end);
                end += 1;
            }
            segments.push(start..end);
            start = end;
        }
        segments
    };
    let (mut low, mut high) = (0.0, (REPLAY_COST + 1.0) * cost(0..total));
    for _ in 0..64 {
        let mid = (low + high) / 2.0;
        if cut(mid).last().is_some_and(|last| last.end >= total) {
            high = mid;
        } else {
            low = mid;
        }
    }
    let mut segments = cut(high);
    if let Some(last) = segments.last_mut() {
        last.end = total;
    }
    segments
}

/// Adds a later segment's report to `report`: its revisions, and what a single stairway
/// would have said once (a warning, a redundant index, a fail-closed table) only where
/// an earlier segment did not say it already.
pub(crate) fn absorb(report: &mut VerifyReport, part: VerifyReport) {
    report.revisions.extend(part.revisions);
    report.from_cache.extend(part.from_cache);
    for warning in part.warnings {
        match warning
            .strip_prefix("at ")
            .and_then(|rest| rest.split_once(": "))
        {
            Some((revision, text)) => warn_once(report, revision, text),
            None => report.warnings.push(warning),
        }
    }
    for finding in part.findings {
        if !redundancy_known(report, &finding) {
            report.findings.push(finding);
        }
    }
    for table in part.fail_closed {
        if !report.fail_closed.contains(&table) {
            report.fail_closed.push(table);
        }
    }
    report.not_checked.extend(part.not_checked);
    report.failures.extend(part.failures);
    report.cache_notes.extend(part.cache_notes);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn covers(segments: &[Range<usize>], first: usize, total: usize) {
        assert_eq!(segments.first().unwrap().start, first, "{segments:?}");
        assert_eq!(segments.last().unwrap().end, total, "{segments:?}");
        for pair in segments.windows(2) {
            assert_eq!(pair[0].end, pair[1].start, "{segments:?}");
        }
        assert!(segments.iter().all(|s| !s.is_empty()), "{segments:?}");
    }

    #[test]
    fn one_segment_is_the_whole_range() {
        for first in [0, 40] {
            let one = plan(first, 300, 1);
            assert_eq!((one.len(), one[0].start, one[0].end), (1, first, 300));
        }
    }

    #[test]
    fn segments_cover_every_position_once_and_earlier_ones_are_longer() {
        for (first, total, count) in [(0, 300, 2), (0, 300, 3), (10, 100, 2), (0, 7, 3), (5, 8, 3)]
        {
            let segments = plan(first, total, count);
            assert_eq!(segments.len(), count, "{segments:?}");
            covers(&segments, first, total);
        }
        let two = plan(0, 300, 2);
        assert!(two[0].len() > two[1].len(), "{two:?}");
        // The second pays for replaying the first's revisions: the costs come out even.
        let total = |s: &Range<usize>| cost(s.clone()) + REPLAY_COST * cost(0..s.start);
        assert!((total(&two[0]) - total(&two[1])).abs() <= 2.0, "{two:?}");
        // Later revisions cost more: the first segment takes more of them than a cut
        // counting them alike would give it.
        let alike = (300.0 / (2.0 + REPLAY_COST)).ceil() as usize;
        assert!(two[0].end > alike, "{two:?}");
    }

    #[test]
    fn never_more_segments_than_revisions() {
        assert_eq!(plan(0, 2, 5), vec![0..1, 1..2]);
        assert!(plan(3, 3, 2).iter().all(|s| s.is_empty()));
        assert_eq!(segment_count(2, Some(5), 2), 2);
        assert_eq!(segment_count(0, Some(5), 2), 1);
    }

    #[test]
    fn the_automatic_count_is_a_core_per_segment_worth_a_cluster() {
        assert_eq!(segment_count(300, None, 2), 2);
        assert_eq!(segment_count(300, None, 16), 12);
        assert_eq!(segment_count(MIN_SEGMENT * 2 - 1, None, 8), 1);
        assert_eq!(segment_count(7, None, 2), 1);
        assert_eq!(segment_count(300, Some(1), 8), 1);
    }
}

//! The in-process tracker of the data-access volume rule (`access.rs`):
//! per viewer, the profiles viewed over a sliding window. A plain value
//! held by `AppState`, so it depends on nothing that holds the state.

use crate::rate_limit::gcra::Quota;
use std::{
    collections::{HashMap, VecDeque},
    sync::{Mutex, PoisonError},
};
use uuid::Uuid;

const MAX_VIEWERS: usize = 100_000;

#[derive(Debug, Default)]
pub struct ViewTracker {
    views: Mutex<HashMap<Uuid, VecDeque<(i64, Uuid)>>>,
}

impl ViewTracker {
    /// Records a view; returns the number of distinct targets in the
    /// window when this view made it reach `threshold.limit`.
    pub(super) fn record(
        &self,
        viewer: Uuid,
        target: Uuid,
        now_ms: i64,
        threshold: Quota,
    ) -> Option<usize> {
        let mut views = self.views.lock().unwrap_or_else(PoisonError::into_inner);
        if views.len() > MAX_VIEWERS {
            views.retain(|_, q| {
                q.back()
                    .is_some_and(|(t, _)| now_ms - t < threshold.window_ms)
            });
        }
        let seen = views.entry(viewer).or_default();
        while seen
            .front()
            .is_some_and(|(t, _)| now_ms - t >= threshold.window_ms)
        {
            seen.pop_front();
        }
        let before = distinct(seen);
        seen.push_back((now_ms, target));
        if seen.len() > 10 * threshold.limit as usize {
            seen.pop_front();
        }
        let after = distinct(seen);
        (after > before && after == threshold.limit as usize).then_some(after)
    }
}

fn distinct(q: &VecDeque<(i64, Uuid)>) -> usize {
    let mut ids: Vec<Uuid> = q.iter().map(|(_, id)| *id).collect();
    ids.sort_unstable();
    ids.dedup();
    ids.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_distinct_targets_in_the_window_count_and_the_crossing_fires_once() {
        let t = ViewTracker::default();
        let q = Quota::per_seconds(3, 60);
        let (viewer, a, b, c, d) = (
            Uuid::now_v7(),
            Uuid::now_v7(),
            Uuid::now_v7(),
            Uuid::now_v7(),
            Uuid::now_v7(),
        );
        assert_eq!(t.record(viewer, a, 0, q), None);
        assert_eq!(t.record(viewer, a, 1, q), None, "the same profile again");
        assert_eq!(t.record(viewer, b, 2, q), None);
        assert_eq!(t.record(viewer, c, 3, q), Some(3));
        assert_eq!(
            t.record(viewer, d, 4, q),
            None,
            "already past the threshold"
        );
        // A minute later the window is empty again.
        assert_eq!(t.record(viewer, a, 70_000, q), None);
    }
}

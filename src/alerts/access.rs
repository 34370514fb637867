//! The data-access volume rule: one account looking at many *distinct*
//! users' public profiles in a short window is an enumeration signal (a
//! scraper with a valid token). Views are tracked in process memory per
//! viewer over a sliding window; with several processes each sees its
//! share of the traffic, so the threshold is per process (documented).

use super::{raise, Alert, Rule};
use crate::{rate_limit::gcra::Quota, state::AppState};
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
    fn record(&self, viewer: Uuid, target: Uuid, now_ms: i64, threshold: Quota) -> Option<usize> {
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

/// Counts `viewer` looking at `target`'s profile; raises an alert when the
/// distinct count reaches `ALERT_PROFILE_VIEWS`.
pub async fn profile_viewed(state: &AppState, viewer: Uuid, target: Uuid) -> sqlx::Result<()> {
    if viewer == target {
        return Ok(());
    }
    let threshold = state.config.alert_profile_views;
    let now_ms = state.clock.now().timestamp_millis();
    if let Some(n) = state
        .profile_views
        .record(viewer, target, now_ms, threshold)
    {
        let mut conn = state.db.acquire().await?;
        raise(
            &mut conn,
            state,
            Alert::new(Rule::DataAccessVolume)
                .user(viewer)
                .detail("distinct_profiles", n as i64)
                .detail("window_secs", threshold.window_ms / 1000),
        )
        .await?;
    }
    Ok(())
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

//! The data-access volume rule: one account looking at many *distinct*
//! users' public profiles in a short window is an enumeration signal (a
//! scraper with a valid token). Views are tracked in process memory per
//! viewer (`views::ViewTracker`) over a sliding window; with several processes each sees its
//! share of the traffic, so the threshold is per process (documented).

use super::{raise, Alert, Rule};
use crate::state::AppState;
use uuid::Uuid;

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

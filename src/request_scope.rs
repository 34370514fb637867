//! The id of the request being served, held in a task-local for the life
//! of the request (set by `http::request_id::layer`), so every problem
//! body, log line and audit row can name it without threading it through
//! each call. A leaf: error bodies read it without depending on the http
//! layer.
//!
//! Also the DPoP proofs a request has spent, for a request the read-retry
//! layer (`http::retry`) may run twice: its second run must not take its
//! own proof, spent by the first run, for a replay.

use std::{cell::RefCell, future::Future};

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The current request's id, when called inside a request.
pub fn current() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// Runs `f` (the rest of the request) with `id` as the current id.
pub async fn scope<F: Future>(id: String, f: F) -> F::Output {
    REQUEST_ID.scope(id, f).await
}

tokio::task_local! {
    static SPENT_PROOFS: RefCell<Vec<[u8; 32]>>;
}

/// Runs `f` (every run of one request) remembering the DPoP proofs it
/// spends.
pub async fn with_spent_proofs<F: Future>(f: F) -> F::Output {
    SPENT_PROOFS.scope(RefCell::new(Vec::new()), f).await
}

/// Whether an earlier run of this same request spent the proof `hash`.
/// Outside [`with_spent_proofs`], never.
pub fn spent_by_this_request(hash: &[u8; 32]) -> bool {
    SPENT_PROOFS
        .try_with(|s| s.borrow().contains(hash))
        .unwrap_or(false)
}

/// Remembers that this request spent the proof `hash` (a no-op outside
/// [`with_spent_proofs`]).
pub fn note_spent(hash: [u8; 32]) {
    let _ = SPENT_PROOFS.try_with(|s| s.borrow_mut().push(hash));
}

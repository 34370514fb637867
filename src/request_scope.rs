//! The id of the request being served, held in a task-local for the life
//! of the request (set by `http::request_id::layer`), so every problem
//! body, log line and audit row can name it without threading it through
//! each call. A leaf: error bodies read it without depending on the http
//! layer.

use std::future::Future;

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

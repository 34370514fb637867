//! One retry of a safe read whose database connection was lost.
//!
//! When PostgreSQL drops a connection under a request (the backend was
//! terminated with `pg_terminate_backend`, a failover, a network cut), the
//! request fails with the 503 [`crate::error::ApiError::ConnectionLost`]
//! (`database_unavailable`, `Retry-After`), never a 500. The pool discards
//! the broken connection, so a second attempt normally gets a fresh one.
//!
//! **Where the retry happens, and why here.** This is a layer around the
//! rate limiter and the routes, not a loop around each query: it re-runs
//! the *whole* request (the limiter's read of the caller's session,
//! extractors, handler) once, only when
//!
//! * the method is `GET` or `HEAD` (safe by RFC 9110 §9.2.1: our handlers of
//!   these methods only read, so running one twice has no effect a client
//!   could see, beyond an audit row of a staff read recorded twice in the
//!   worst case),
//! * the request has no body (there is nothing to buffer or replay), and
//! * the first answer carries the [`ConnectionLost`] marker (a pool
//!   timeout, an overload or any other error is answered as it is: retrying
//!   a saturated database makes it worse).
//!
//! A query-level retry would need every read-only handler to say it is
//! one; the method is already that statement, checked in one place.
//! Writes (`POST`, `PATCH`, `PUT`, `DELETE`) are never retried: the server
//! cannot know whether a commit reached the database before the cut, so
//! the client gets the 503 and decides (the API's writes are idempotent or
//! safe to repeat from the user's point of view). If the retry fails too,
//! its own answer (a 503) goes back. A retried read counts twice against
//! its rate limit: the limiter is inside, and a lost connection is rare.

use crate::error::ConnectionLost;
use axum::{
    body::{Body, HttpBody},
    extract::Request,
    http::Method,
    middleware::Next,
    response::Response,
};

pub async fn retry_lost_reads(req: Request, next: Next) -> Response {
    let safe = matches!(*req.method(), Method::GET | Method::HEAD);
    if !safe || req.body().size_hint().exact() != Some(0) {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let retry_parts = parts.clone();
    // Both runs share one record of the DPoP proofs spent, so the second
    // run does not refuse the request's own proof as a replay.
    crate::request_scope::with_spent_proofs(async move {
        let first = next.clone().run(Request::from_parts(parts, body)).await;
        if first.extensions().get::<ConnectionLost>().is_none() {
            return first;
        }
        metrics::counter!("db_connection_lost_retries_total").increment(1);
        tracing::warn!("the database connection was lost under a read; running it once more");
        drop(first);
        next.run(Request::from_parts(retry_parts, Body::empty()))
            .await
    })
    .await
}

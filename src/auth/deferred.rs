//! Work a request hands off to run after its answer.
//!
//! The enumeration-safe endpoints that mail a code (`verify-email/resend`,
//! `password/forgot`, `POST /v1/me/email`) answer the same 202 whether or
//! not an address has an account, but the two cases do different database
//! work (a code, a mail row, an audit row, or none of them). Here that
//! whole branch, starting with the look-up of the address, runs after the
//! answer is sent: the request path itself is the same code for every
//! address, so its time cannot tell them apart however noisy the machine.
//! "After" is literal: [`Deferred::respond_then`] wraps the answer's body,
//! and the work starts only once the server has dropped that body (it has
//! been written out), plus a short pause, so it does not compete with the
//! answer it follows for CPU or database connections.
//!
//! The work is bounded ([`MAX_PENDING`] at once; beyond it the request is
//! refused with 503 `overloaded` before anything is looked up, the same
//! for every address) and drained at shutdown. A failure is logged and
//! counted (`deferred_work_failures_total`); the caller has its 202
//! already, as it would have if the mail had bounced.

use crate::error::ApiError;
use axum::{
    body::{Body, Bytes, HttpBody},
    response::{IntoResponse, Response},
};
use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};
use tokio::sync::{oneshot, Semaphore};
use tracing::Instrument;

/// Deferred tasks running at once, per process.
pub const MAX_PENDING: u32 = 256;
/// The pause between the answer going out and the work starting.
const AFTER_ANSWER: Duration = Duration::from_millis(10);
/// The longest the work waits for the answer to go out (a client that
/// never reads it does not hold the work back for ever).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct Deferred {
    permits: Arc<Semaphore>,
}

impl Default for Deferred {
    fn default() -> Self {
        Self {
            permits: Arc::new(Semaphore::new(MAX_PENDING as usize)),
        }
    }
}

/// A response body that signals, by dropping `_sent`, that the server is
/// done with it.
struct SignalOnDrop {
    inner: Body,
    _sent: oneshot::Sender<()>,
}

impl HttpBody for SignalOnDrop {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Deferred {
    /// Runs `work` in the background, in the request's tracing span.
    pub fn spawn<F>(&self, what: &'static str, work: F) -> Result<(), ApiError>
    where
        F: Future<Output = Result<(), ApiError>> + Send + 'static,
    {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            metrics::counter!("deferred_work_shed_total", "work" => what).increment(1);
            return Err(ApiError::Unavailable {
                code: "overloaded",
                retry_after_secs: 1,
            });
        };
        tokio::spawn(
            async move {
                if let Err(e) = work.await {
                    metrics::counter!("deferred_work_failures_total", "work" => what).increment(1);
                    tracing::error!(error = ?e, work = what, "deferred work failed");
                }
                drop(permit);
            }
            .in_current_span(),
        );
        Ok(())
    }

    /// Answers `answer` now and runs `work` once that answer has been
    /// written out. The slot is taken before answering, so a full queue is
    /// a 503 for every address alike.
    pub fn respond_then<F>(
        &self,
        what: &'static str,
        answer: impl IntoResponse,
        work: F,
    ) -> Result<Response, ApiError>
    where
        F: Future<Output = Result<(), ApiError>> + Send + 'static,
    {
        let (sent, answered) = oneshot::channel::<()>();
        self.spawn(what, async move {
            // Resolves (as closed) when the body is dropped.
            let _ = tokio::time::timeout(ANSWER_TIMEOUT, answered).await;
            tokio::time::sleep(AFTER_ANSWER).await;
            work.await
        })?;
        Ok(answer
            .into_response()
            .map(|inner| Body::new(SignalOnDrop { inner, _sent: sent })))
    }

    /// Resolves once no deferred work is running (shutdown waits for it;
    /// tests wait for it before reading the mailbox).
    pub async fn idle(&self) {
        if let Ok(all) = self.permits.acquire_many(MAX_PENDING).await {
            drop(all);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[tokio::test]
    async fn idle_waits_for_the_work_and_a_full_queue_sheds() {
        let d = Deferred::default();
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        d.spawn("test", async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            flag.store(true, Ordering::SeqCst);
            Ok(())
        })
        .unwrap();
        d.idle().await;
        assert!(done.load(Ordering::SeqCst));
        let _all = d
            .permits
            .clone()
            .acquire_many_owned(MAX_PENDING)
            .await
            .unwrap();
        assert!(matches!(
            d.spawn("test", async { Ok(()) }),
            Err(ApiError::Unavailable {
                code: "overloaded",
                ..
            })
        ));
    }

    #[tokio::test]
    async fn the_work_waits_until_the_answer_is_done_with() {
        let d = Deferred::default();
        let started = Arc::new(AtomicBool::new(false));
        let flag = started.clone();
        let answer = d
            .respond_then("test", "ok", async move {
                flag.store(true, Ordering::SeqCst);
                Ok(())
            })
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !started.load(Ordering::SeqCst),
            "ran before the answer went"
        );
        let body = axum::body::to_bytes(answer.into_body(), 1024)
            .await
            .unwrap();
        assert_eq!(&body[..], b"ok");
        d.idle().await;
        assert!(started.load(Ordering::SeqCst));
    }
}

//! Work a request hands off to run after its answer.
//!
//! The enumeration-safe endpoints that mail a code (`verify-email/resend`,
//! `password/forgot`, `POST /v1/me/email`) answer the same 202 whether or
//! not an address has an account, but the two cases do different database
//! work (a code, a mail row, an audit row, or none of them). Here that
//! whole branch, starting with the look-up of the address, runs after the
//! answer is sent: the request path itself is the same code for every
//! address, so its time cannot tell them apart however noisy the machine.
//!
//! The work is bounded ([`MAX_PENDING`] at once; beyond it the request is
//! refused with 503 `overloaded` before anything is looked up, the same
//! for every address) and drained at shutdown. A failure is logged and
//! counted (`deferred_work_failures_total`); the caller has its 202
//! already, as it would have if the mail had bounced.

use crate::error::ApiError;
use std::{future::Future, sync::Arc};
use tokio::sync::Semaphore;
use tracing::Instrument;

/// Deferred tasks running at once, per process.
pub const MAX_PENDING: u32 = 256;

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
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
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
}

//! Background work: one helper for every periodic task, one shutdown idiom.
//!
//! A task is a *pass* (deliver the due mail, seal the audit trail, …) that
//! [`Periodic::run`] repeats: once at start, then after every period (or
//! at once when a pass asks, or when something wakes it), until shutdown.
//! Shutdown is one idiom everywhere: `startup` holds the sender of a
//! `watch` channel and sets it to `true` once; every task holds a [`Stop`]
//! and ends at the first wait after that (a pass in progress finishes).
//! Each task logs its start and stop, and a failed pass the same way
//! (`task`, the error with its causes), then carries on at the next period.
//!
//! The tasks: the mail sender (`mail::sender`), audit maintenance
//! (`audit::maintenance`), the alert webhook (`alerts::webhook`), the
//! client-policy refresh (`admin::client_policy`), the deletion of
//! unverified accounts (`auth::unverified`) and the rate-limit tier expiry
//! with the 429 counts (`rate_limit::tiers`), all started by `startup`.

use std::{future::Future, sync::Arc, time::Duration};
use tokio::sync::{watch, Notify};

/// The shutdown signal every background task watches: `true` once the
/// service is shutting down.
pub type Stop = watch::Receiver<bool>;

/// Resolves once `stop` says shutdown (or its sender is gone).
pub async fn stopped(stop: &mut Stop) {
    let _ = stop.wait_for(|s| *s).await;
}

/// What a pass asks of the loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Wait for the period, or a wake-up, before the next pass.
    Wait,
    /// Run the next pass at once: this one filled a batch, more is waiting.
    Now,
}

/// A named pass run on a period until shutdown.
pub struct Periodic {
    task: &'static str,
    period: Duration,
    wake: Option<Arc<Notify>>,
}

impl Periodic {
    /// `task` names the task in its log lines.
    pub fn new(task: &'static str, period: Duration) -> Self {
        Self {
            task,
            period,
            wake: None,
        }
    }

    /// Also runs a pass when `notify` is notified (a permit left while a
    /// pass runs starts the next one at once).
    pub fn woken_by(mut self, notify: Arc<Notify>) -> Self {
        self.wake = Some(notify);
        self
    }

    /// Runs `pass` now and then after every period until `stop`. A failed
    /// pass is logged and the loop waits for the next period.
    pub async fn run<F, Fut, E>(self, mut stop: Stop, mut pass: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Next, E>>,
        E: Into<anyhow::Error>,
    {
        tracing::info!(task = self.task, "background task started");
        loop {
            match pass().await {
                Ok(Next::Now) => continue,
                Ok(Next::Wait) => {}
                Err(e) => {
                    let e: anyhow::Error = e.into();
                    tracing::warn!(task = self.task, error = %format_args!("{e:#}"), "background pass failed");
                }
            }
            let woken = async {
                match &self.wake {
                    Some(notify) => notify.notified().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = stopped(&mut stop) => break,
                () = woken => {}
                () = tokio::time::sleep(self.period) => {}
            }
        }
        tracing::info!(task = self.task, "background task stopped");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(start_paused = true)]
    async fn passes_run_at_once_then_per_period_again_on_request_and_stop_on_shutdown() {
        let (tx, rx) = watch::channel(false);
        let passes = Arc::new(AtomicU32::new(0));
        let wake = Arc::new(Notify::new());
        let counted = passes.clone();
        let task = tokio::spawn(
            Periodic::new("test", Duration::from_secs(60))
                .woken_by(wake.clone())
                .run(rx, move || {
                    let counted = counted.clone();
                    async move {
                        // The first pass asks for another at once; the
                        // third fails, which only logs.
                        match counted.fetch_add(1, Ordering::SeqCst) {
                            0 => Ok(Next::Now),
                            2 => Err(anyhow::anyhow!("boom")),
                            _ => Ok(Next::Wait),
                        }
                    }
                }),
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            passes.load(Ordering::SeqCst),
            2,
            "at start, and again at once"
        );
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(passes.load(Ordering::SeqCst), 3, "after the period");
        wake.notify_one();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(passes.load(Ordering::SeqCst), 4, "when woken");
        tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .expect("stops at shutdown")
            .unwrap();
        assert_eq!(passes.load(Ordering::SeqCst), 4, "no pass after shutdown");
    }
}

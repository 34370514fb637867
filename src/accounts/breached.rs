//! The optional breached-password check (off by default): the Pwned
//! Passwords range API with k-anonymity.
//!
//! Only the first five hex digits of the password's SHA-1 leave the
//! server; the service compares the returned suffixes itself, and asks for
//! padded responses so the answer's size does not hint at the prefix. If
//! the API is slow or down the check *fails open* (logged and counted):
//! registration must not depend on a third party, and the bundled list and
//! strength estimate still apply.
//!
//! Redirects are not followed and the answer is read up to
//! [`MAX_RESPONSE_BYTES`] (a padded range answer is about 40 KB); a
//! redirect, an error status or an oversized body is "could not be asked".

use sha1::{Digest, Sha1};
use std::time::Duration;
use url::Url;

/// The most of a range answer that is read.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// Why the range API gave no usable answer.
#[derive(Debug, thiserror::Error)]
enum Unavailable {
    #[error("request failed: {0}")]
    Request(#[from] reqwest::Error),
    #[error("HTTP status {0} (redirects are not followed)")]
    Status(reqwest::StatusCode),
    #[error(transparent)]
    Body(#[from] crate::outbound::BodyError),
}

#[derive(Clone, Debug)]
pub struct BreachedPasswords {
    client: reqwest::Client,
    base: Url,
}

impl BreachedPasswords {
    pub fn new(base: Url) -> anyhow::Result<Self> {
        let client = crate::outbound::client(Duration::from_secs(2))?;
        Ok(Self { client, base })
    }

    /// `Some(true)` when the password appears in a breach, `None` when the
    /// service could not be asked.
    pub async fn is_breached(&self, password: &str) -> Option<bool> {
        let digest = Sha1::digest(password.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02X}")).collect();
        let (prefix, suffix) = hex.split_at(5);
        let url = self.base.join(&format!("range/{prefix}")).ok()?;
        let answer = async {
            let response = self
                .client
                .get(url)
                .header("Add-Padding", "true")
                .send()
                .await?;
            if !response.status().is_success() {
                return Err(Unavailable::Status(response.status()));
            }
            let body = crate::outbound::read_capped(response, MAX_RESPONSE_BYTES).await?;
            Ok::<_, Unavailable>(String::from_utf8_lossy(&body).into_owned())
        }
        .await;
        match answer {
            Ok(body) => Some(body.lines().any(|line| {
                line.split_once(':').is_some_and(|(s, count)| {
                    s.trim().eq_ignore_ascii_case(suffix)
                        && count.trim().parse::<u64>().is_ok_and(|n| n > 0)
                })
            })),
            Err(e) => {
                tracing::warn!(error = %e, "breached-password check unavailable; continuing without it");
                metrics::counter!("password_breach_check_unavailable_total").increment(1);
                None
            }
        }
    }
}

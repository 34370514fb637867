//! Outgoing email through a transactional outbox.
//!
//! `enqueue` writes the message in the caller's transaction, so mail goes
//! out exactly when the change that caused it commits. The payload holds
//! an address and often a code, so it is sealed with the field-encryption
//! key ring (bound to its row) and erased once delivered. [`sender`] drains
//! the outbox in the background with retry and back-off; [`transport`]
//! delivers to the log, to files (tests, local tools) or over SMTP.

pub mod notices;
pub mod sender;
pub mod templates;
pub mod transport;

use crate::{
    crypto::{aead, Aad},
    keys::Keys,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use std::{fmt, sync::Arc};
use tokio::sync::Notify;
use uuid::Uuid;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// One message. `Debug` hides the recipient and body (codes, PII), and all
/// three fields are wiped from memory when it is dropped.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct OutgoingMail {
    pub to: String,
    pub subject: String,
    pub text: String,
}

impl fmt::Debug for OutgoingMail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutgoingMail")
            .field("to", &"<redacted>")
            .field("subject", &self.subject)
            .field("text", &"<redacted>")
            .finish()
    }
}

/// Wakes the background sender after a commit, so mail leaves at once
/// rather than at the next poll, and tells how many passes it has made.
#[derive(Clone, Debug)]
pub struct Outbox {
    notify: Arc<Notify>,
    passes: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Default for Outbox {
    fn default() -> Self {
        Self {
            notify: Arc::default(),
            passes: Arc::new(tokio::sync::watch::channel(0).0),
        }
    }
}

impl Outbox {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn wake(&self) {
        self.notify.notify_one();
    }

    /// What `wake` notifies: the sender's wake-up.
    pub(crate) fn notifier(&self) -> Arc<Notify> {
        self.notify.clone()
    }

    /// Called by the sender after each pass over the outbox.
    pub(crate) fn pass_done(&self) {
        self.passes.send_modify(|n| *n = n.saturating_add(1));
    }

    /// Waits until the sender has finished its start-up pass (tests use it
    /// so that pass cannot race the mail they queue afterwards).
    pub async fn first_pass(&self) {
        let mut rx = self.passes.subscribe();
        // The sender holds the channel for the process's lifetime; an error
        // means it is gone, and there is nothing left to wait for.
        let _ = rx.wait_for(|n| *n > 0).await;
    }
}

pub(crate) fn payload_aad(mail_id: Uuid) -> Aad<'static> {
    Aad {
        table: "mail_outbox",
        column: "payload",
        row_id: mail_id,
    }
}

/// `mail` as JSON in a buffer that is wiped when dropped. It is allocated
/// once, large enough for the worst case (every byte escaped as `\u00XX`),
/// so serde_json never grows it and leaves no unwiped copy behind.
pub(crate) fn to_json(mail: &OutgoingMail) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let worst = 6 * (mail.to.len() + mail.subject.len() + mail.text.len()) + 64;
    let mut out = Zeroizing::new(Vec::with_capacity(worst));
    serde_json::to_writer(&mut *out, mail)?;
    Ok(out)
}

/// Queues `mail` in the caller's transaction; `template` names the kind of
/// message (`email_verification`, …) for metrics and operators.
pub async fn enqueue(
    conn: &mut PgConnection,
    keys: &Keys,
    at: DateTime<Utc>,
    template: &'static str,
    mail: &OutgoingMail,
) -> anyhow::Result<Uuid> {
    let mail_id = Uuid::now_v7();
    let plain = to_json(mail)?;
    let payload = aead::seal(&keys.data, &payload_aad(mail_id), &plain)?;
    sqlx::query!(
        r#"INSERT INTO mail_outbox (mail_id, created_at, template, payload, next_attempt_at)
           VALUES ($1, $2, $3, $4, $2)"#,
        mail_id,
        at,
        template,
        payload,
    )
    .execute(conn)
    .await?;
    Ok(mail_id)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_mail_is_wiped_on_drop() {
        fn wiped_on_drop<T: ZeroizeOnDrop>() {}
        wiped_on_drop::<OutgoingMail>();
    }

    #[test]
    fn the_json_of_a_mail_never_outgrows_its_first_buffer() {
        let worst = "\u{1}".repeat(200);
        for text in [worst.as_str(), "Your code is 123456.\n\n\"Quoted\"", ""] {
            let mail = OutgoingMail {
                to: "ada@example.com".into(),
                subject: "Code".into(),
                text: text.into(),
            };
            let json = to_json(&mail).unwrap();
            let first = 6 * (mail.to.len() + mail.subject.len() + mail.text.len()) + 64;
            assert_eq!(json.capacity(), first);
            let back: OutgoingMail = serde_json::from_slice(&json).unwrap();
            assert_eq!(back, mail);
        }
    }
}

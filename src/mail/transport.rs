//! Where mail is delivered: `log` (development), `file:<dir>` (one JSON file
//! per message, which tests and local tools read codes from) or SMTP through
//! `lettre`, the maintained async SMTP client, with rustls.

use super::OutgoingMail;
use crate::config::{Config, MailTransportConfig};
use anyhow::Context;
use lettre::{
    message::{header::ContentType, Mailbox},
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
};
use secrecy::ExposeSecret;
use serde::Serialize;
use std::path::PathBuf;
use uuid::Uuid;

/// A delivery failure. `kind` is safe to store; details stay in the log.
#[derive(Debug)]
pub struct SendError {
    pub kind: &'static str,
    /// A permanent failure (e.g. SMTP 5xx, a bad address) is not retried.
    pub permanent: bool,
}

pub enum Transport {
    Log,
    File(PathBuf),
    Smtp {
        transport: AsyncSmtpTransport<Tokio1Executor>,
        from: Mailbox,
    },
}

#[derive(Serialize)]
struct FileMessage<'a> {
    id: Uuid,
    to: &'a str,
    subject: &'a str,
    text: &'a str,
}

impl Transport {
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        Ok(match &config.mail_transport {
            MailTransportConfig::Log => Self::Log,
            MailTransportConfig::File(dir) => {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating mail folder {}", dir.display()))?;
                Self::File(dir.clone())
            }
            MailTransportConfig::Smtp(url) => Self::Smtp {
                transport: AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose_secret())
                    .context("MAIL_TRANSPORT is not a valid SMTP URL")?
                    .build(),
                from: config
                    .mail_from
                    .parse()
                    .context("MAIL_FROM is not a valid address")?,
            },
        })
    }

    pub async fn send(&self, id: Uuid, mail: &OutgoingMail) -> Result<(), SendError> {
        match self {
            Self::Log => {
                // Development only (production refuses this transport): the
                // developer reads codes from here.
                tracing::info!(mail_id = %id, to = %mail.to, subject = %mail.subject, text = %mail.text, "mail (log transport)");
                Ok(())
            }
            Self::File(dir) => write_file(dir, id, mail).await.map_err(|e| {
                tracing::warn!(mail_id = %id, error = %e, "mail file write failed");
                SendError {
                    kind: "file_write_failed",
                    permanent: false,
                }
            }),
            Self::Smtp { transport, from } => {
                let to: Mailbox = mail.to.parse().map_err(|_| SendError {
                    kind: "invalid_recipient",
                    permanent: true,
                })?;
                let message = Message::builder()
                    .from(from.clone())
                    .to(to)
                    .subject(&mail.subject)
                    .header(ContentType::TEXT_PLAIN)
                    .body(mail.text.clone())
                    .map_err(|_| SendError {
                        kind: "invalid_message",
                        permanent: true,
                    })?;
                transport.send(message).await.map(|_| ()).map_err(|e| {
                    tracing::warn!(mail_id = %id, permanent = e.is_permanent(), "smtp delivery failed");
                    SendError {
                        kind: if e.is_permanent() { "smtp_permanent" } else { "smtp_transient" },
                        permanent: e.is_permanent(),
                    }
                })
            }
        }
    }
}

async fn write_file(dir: &std::path::Path, id: Uuid, mail: &OutgoingMail) -> anyhow::Result<()> {
    let body = serde_json::to_vec_pretty(&FileMessage {
        id,
        to: &mail.to,
        subject: &mail.subject,
        text: &mail.text,
    })?;
    // Write then rename, so a reader never sees half a message.
    let tmp = dir.join(format!(".{id}.tmp"));
    tokio::fs::write(&tmp, body).await?;
    tokio::fs::rename(&tmp, dir.join(format!("{id}.json"))).await?;
    Ok(())
}

//! Certificate reload without a restart: on SIGHUP, and when either file
//! changes (polled every `TLS_RELOAD_POLL_SECS`).
//!
//! Key decisions:
//! * A reload builds a complete new `ServerConfig` and swaps it in
//!   atomically. New handshakes use it; established connections already have
//!   their keys and are not touched, so nothing is dropped.
//! * A reload that fails (unreadable file, garbage, a key that does not match
//!   the certificate) keeps the current certificate and logs an error: a
//!   half-copied renewal must not take the service down.
//! * Polling compares each file's modification time, size and inode, so an
//!   in-place write, an atomic rename and a Kubernetes secret symlink swap are
//!   all seen, without reading the private key every few seconds. A failed
//!   attempt is remembered, so a broken file is reported once, and the fix
//!   (for example the key written a moment after the certificate) is picked
//!   up by the next poll.

use super::TlsError;
use crate::config::TlsConfig;
use axum_server::tls_rustls::RustlsConfig;
use std::{os::unix::fs::MetadataExt, path::Path, sync::Arc, time::SystemTime};
use tokio::{signal::unix::Signal, time::MissedTickBehavior};

/// What polling compares, for one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

/// Both files' stamps; `None` for a file that cannot be read right now.
type Stamps = [Option<FileStamp>; 2];

pub struct Reloader {
    settings: TlsConfig,
    target: RustlsConfig,
    /// The stamps of the last load attempt, successful or not.
    seen: Stamps,
}

impl Reloader {
    /// `target` is the configuration that serving reads for each handshake.
    pub async fn new(settings: TlsConfig, target: RustlsConfig) -> Self {
        let seen = stamps(&settings).await;
        Self {
            settings,
            target,
            seen,
        }
    }

    /// Loads both files now and, if they form a usable pair, swaps them in.
    /// On error the current certificate stays.
    pub async fn reload(&mut self) -> Result<(), TlsError> {
        self.seen = stamps(&self.settings).await;
        let (config, pin) = super::load(&self.settings.cert_file, &self.settings.key_file).await?;
        self.target.reload_from_config(Arc::new(config));
        tracing::info!(spki_sha256 = %pin, "TLS certificate reloaded");
        Ok(())
    }

    /// Reloads if either file changed since the last attempt; returns whether
    /// it tried.
    pub async fn reload_if_changed(&mut self) -> bool {
        if stamps(&self.settings).await == self.seen {
            return false;
        }
        self.reload_logged("file change").await;
        true
    }

    async fn reload_logged(&mut self, trigger: &'static str) {
        if let Err(e) = self.reload().await {
            tracing::error!(
                trigger,
                error = %e,
                "TLS certificate reload failed; still serving the previous certificate"
            );
        }
    }

    /// Runs until dropped: reloads on every SIGHUP and on every file change.
    pub async fn run(mut self, mut hangup: Signal) {
        // `interval` panics on zero; configuration refuses it, this is a backstop.
        let period = self
            .settings
            .reload_poll
            .max(std::time::Duration::from_secs(1));
        let mut poll = tokio::time::interval(period);
        poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        poll.tick().await; // the first tick is immediate
        let mut signals_open = true;
        loop {
            tokio::select! {
                received = hangup.recv(), if signals_open => match received {
                    Some(()) => self.reload_logged("SIGHUP").await,
                    None => signals_open = false,
                },
                _ = poll.tick() => {
                    self.reload_if_changed().await;
                }
            }
        }
    }
}

async fn stamps(settings: &TlsConfig) -> Stamps {
    [
        stamp(&settings.cert_file).await,
        stamp(&settings.key_file).await,
    ]
}

async fn stamp(path: &Path) -> Option<FileStamp> {
    let meta = tokio::fs::metadata(path).await.ok()?;
    Some(FileStamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        inode: meta.ino(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use std::time::Duration;

    struct Files {
        _dir: tempfile::TempDir,
        settings: TlsConfig,
    }

    fn write_pair(settings: &TlsConfig, name: &str) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(&settings.cert_file, cert.pem()).unwrap();
        std::fs::write(&settings.key_file, key.serialize_pem()).unwrap();
        cert.der().to_vec()
    }

    fn files() -> Files {
        let dir = tempfile::tempdir().unwrap();
        let settings = TlsConfig {
            cert_file: dir.path().join("cert.pem"),
            key_file: dir.path().join("key.pem"),
            reload_poll: Duration::from_secs(1),
        };
        Files {
            _dir: dir,
            settings,
        }
    }

    /// The leaf certificate a client receives, from an in-memory handshake.
    fn served_leaf(config: &RustlsConfig) -> Vec<u8> {
        use rustls::{ClientConnection, ServerConnection};
        let client_config = crate::tls::test_support::accept_any_client();
        let mut client =
            ClientConnection::new(client_config, "localhost".try_into().unwrap()).unwrap();
        let mut server = ServerConnection::new(config.get_inner()).unwrap();
        while client.is_handshaking() || server.is_handshaking() {
            let mut wire = Vec::new();
            client.write_tls(&mut wire).unwrap();
            server.read_tls(&mut wire.as_slice()).unwrap();
            server.process_new_packets().unwrap();
            let mut wire = Vec::new();
            server.write_tls(&mut wire).unwrap();
            client.read_tls(&mut wire.as_slice()).unwrap();
            client.process_new_packets().unwrap();
        }
        client.peer_certificates().unwrap()[0].to_vec()
    }

    async fn loaded(f: &Files) -> (RustlsConfig, Reloader) {
        let (config, _) = crate::tls::load(&f.settings.cert_file, &f.settings.key_file)
            .await
            .unwrap();
        let config = RustlsConfig::from_config(Arc::new(config));
        let reloader = Reloader::new(f.settings.clone(), config.clone()).await;
        (config, reloader)
    }

    #[tokio::test]
    async fn reload_swaps_in_the_new_certificate() {
        let f = files();
        let first = write_pair(&f.settings, "one.example.com");
        let (config, mut reloader) = loaded(&f).await;
        assert_eq!(served_leaf(&config), first);
        let second = write_pair(&f.settings, "two.example.com");
        reloader.reload().await.unwrap();
        assert_eq!(served_leaf(&config), second);
    }

    #[tokio::test]
    async fn a_failed_reload_keeps_the_current_certificate_and_names_no_key_material() {
        let f = files();
        let first = write_pair(&f.settings, "one.example.com");
        let (config, mut reloader) = loaded(&f).await;
        // A renewal half copied: the new certificate with the old key.
        let other = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["two.example.com".into()])
            .unwrap()
            .self_signed(&other)
            .unwrap();
        std::fs::write(&f.settings.cert_file, cert.pem()).unwrap();
        let err = reloader.reload().await.unwrap_err().to_string();
        assert!(err.contains("TLS_CERT_FILE and TLS_KEY_FILE"), "{err}");
        assert_eq!(served_leaf(&config), first);
        // Garbage in the key file: refused, and its text is not echoed.
        std::fs::write(
            &f.settings.key_file,
            "-----BEGIN PRIVATE KEY-----\nc2VjcmV0!!\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let err = reloader.reload().await.unwrap_err().to_string();
        assert!(err.contains("TLS_KEY_FILE"), "{err}");
        assert!(!err.contains("c2VjcmV0"), "{err}");
        assert_eq!(served_leaf(&config), first);
    }

    #[tokio::test]
    async fn polling_reloads_only_when_a_file_changed() {
        let f = files();
        write_pair(&f.settings, "one.example.com");
        let (config, mut reloader) = loaded(&f).await;
        assert!(!reloader.reload_if_changed().await);
        let second = write_pair(&f.settings, "two.example.com");
        assert!(reloader.reload_if_changed().await);
        assert_eq!(served_leaf(&config), second);
        assert!(!reloader.reload_if_changed().await);
    }
}

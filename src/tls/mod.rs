//! Native TLS for the API listener (`TLS_CERT_FILE` + `TLS_KEY_FILE`):
//! loading the certificate and key, the rustls policy, and serving.
//!
//! Key decisions:
//! * **rustls with the ring provider, passed explicitly.** The crate already
//!   uses ring for every other TLS connection (sqlx, reqwest, lettre); the
//!   provider is handed to the builder instead of installed as the process
//!   default, so aws-lc-rs (and its C build) never enters the dependency tree.
//! * **TLS 1.3 and 1.2 only**, with rustls' default ring cipher suites: AEAD
//!   only (AES-GCM, ChaCha20-Poly1305), always with ECDHE forward secrecy. No
//!   CBC, RC4, 3DES, RSA key exchange or renegotiation exists in rustls, so
//!   there is nothing to switch off. No 0-RTT data (it can be replayed).
//! * **Serving** goes through [`crate::listener`], the same accept loop as
//!   plain HTTP (slow-client timeouts, connection cap, graceful shutdown):
//!   a `tokio-rustls` handshake bounded by `HEADER_READ_TIMEOUT_SECS`, then
//!   hyper-util's auto connection builder (HTTP/1.1 and HTTP/2 by ALPN).
//!   `axum-server`'s `RustlsConfig` (the `tls-rustls-no-provider` feature)
//!   holds the `ServerConfig` and swaps it atomically, which is what
//!   certificate reload needs: each handshake takes the current one, so new
//!   connections use the new certificate while established connections keep
//!   theirs (see [`Reloader`]).
//! * Errors name the file and the problem, never its contents: no key
//!   material is ever printed or logged.

pub mod pem;
pub mod pins;
mod reload;
pub mod snippets;

pub use pem::{parse_cert_chain, parse_private_key};
pub use reload::Reloader;

use crate::config::TlsConfig;
use axum::Router;
use axum_server::tls_rustls::RustlsConfig;
use rustls::{
    crypto::ring,
    pki_types::{CertificateDer, PrivateKeyDer},
    ServerConfig,
};
use std::{future::Future, io, path::Path, path::PathBuf, sync::Arc};
use tokio::{net::TcpListener, signal::unix::Signal};
use zeroize::Zeroizing;

/// ALPN protocols, in the server's order of preference.
pub const ALPN_PROTOCOLS: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Why a certificate or key could not be loaded. The messages name the file
/// and the problem, never the file's contents.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS_CERT_FILE {}: {reason}", path.display())]
    Cert { path: PathBuf, reason: String },
    #[error("TLS_KEY_FILE {}: {reason}", path.display())]
    Key { path: PathBuf, reason: String },
    #[error("TLS_CERT_FILE and TLS_KEY_FILE cannot be used together: {0}")]
    Pair(String),
}

/// The rustls policy for the API listener (see the module comment).
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ServerConfig, TlsError> {
    let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Pair(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Pair(e.to_string()))?;
    config.alpn_protocols = ALPN_PROTOCOLS.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// Reads both files and builds the server configuration; also returns the
/// leaf's SPKI pin, which is public and worth logging.
pub async fn load(cert_file: &Path, key_file: &Path) -> Result<(ServerConfig, String), TlsError> {
    let cert_err = |reason: String| TlsError::Cert {
        path: cert_file.to_owned(),
        reason,
    };
    let key_err = |reason: String| TlsError::Key {
        path: key_file.to_owned(),
        reason,
    };
    let cert_pem = tokio::fs::read(cert_file)
        .await
        .map_err(|e| cert_err(format!("cannot be read ({e})")))?;
    let key_pem = Zeroizing::new(
        tokio::fs::read(key_file)
            .await
            .map_err(|e| key_err(format!("cannot be read ({e})")))?,
    );
    let chain = parse_cert_chain(&cert_pem).map_err(cert_err)?;
    let key = parse_private_key(&key_pem).map_err(key_err)?;
    let pin = chain
        .first()
        .and_then(|leaf| pins::cert_spki(leaf).ok())
        .map(|spki| pins::spki_pin(&spki))
        .unwrap_or_default();
    Ok((server_config(chain, key)?, pin))
}

/// The TLS side of the API listener: the swappable configuration and what
/// reloads it. Built at start-up, so a bad certificate stops the process
/// before it serves anything.
pub struct TlsServer {
    config: RustlsConfig,
    reloader: Reloader,
    hangup: Signal,
}

impl TlsServer {
    /// Loads the certificate and key and installs the SIGHUP handler (now, so
    /// a SIGHUP during start-up cannot kill the process).
    pub async fn load(settings: &TlsConfig) -> Result<Self, anyhow::Error> {
        let (server_config, pin) = load(&settings.cert_file, &settings.key_file).await?;
        tracing::info!(spki_sha256 = %pin, "TLS certificate loaded");
        let config = RustlsConfig::from_config(Arc::new(server_config));
        let reloader = Reloader::new(settings.clone(), config.clone()).await;
        let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(|e| anyhow::anyhow!("installing the SIGHUP handler for TLS reload: {e}"))?;
        Ok(Self {
            config,
            reloader,
            hangup,
        })
    }

    /// Serves `router` over TLS until `shutdown` completes, then stops
    /// accepting and lets in-flight requests finish, like the plain-HTTP
    /// listener (the caller bounds the wait). Each handshake uses the
    /// current certificate; the reloader runs alongside.
    pub async fn serve(
        self,
        listener: TcpListener,
        router: Router,
        shutdown: impl Future<Output = ()> + Send,
        limits: crate::config::ListenerLimits,
    ) -> io::Result<()> {
        let serving = crate::listener::serve(
            listener,
            router,
            crate::listener::Transport::Tls(self.config),
            limits,
            shutdown,
        );
        let reloading = self.reloader.run(self.hangup);
        tokio::pin!(serving, reloading);
        tokio::select! {
            result = &mut serving => return result,
            () = &mut reloading => {}
        }
        serving.await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_or_mismatched_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let cert_file = dir.path().join("cert.pem");
        let key_file = dir.path().join("key.pem");
        let err = load(&cert_file, &key_file).await.unwrap_err().to_string();
        assert!(
            err.starts_with("TLS_CERT_FILE") && err.contains("cert.pem"),
            "{err}"
        );

        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, "not a key").unwrap();
        let err = load(&cert_file, &key_file).await.unwrap_err().to_string();
        assert!(err.starts_with("TLS_KEY_FILE"), "{err}");
        assert!(!err.contains("not a key"), "{err}");

        std::fs::write(
            &key_file,
            rcgen::KeyPair::generate().unwrap().serialize_pem(),
        )
        .unwrap();
        let err = load(&cert_file, &key_file).await.unwrap_err().to_string();
        assert!(err.contains("cannot be used together"), "{err}");

        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        let (config, pin) = load(&cert_file, &key_file).await.unwrap();
        assert_eq!(
            config.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        assert_eq!(
            pin,
            pins::spki_pin(&rcgen::PublicKeyData::subject_public_key_info(&key))
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod test_support {
    //! A client that accepts any certificate, to see which one is served.
    use rustls::{
        client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        crypto::{ring, verify_tls12_signature, verify_tls13_signature, CryptoProvider},
        pki_types::{CertificateDer, ServerName, UnixTime},
        ClientConfig, DigitallySignedStruct, SignatureScheme,
    };
    use std::sync::Arc;

    #[derive(Debug)]
    struct AcceptAny(CryptoProvider);

    impl ServerCertVerifier for AcceptAny {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }
        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    pub fn accept_any_client() -> Arc<ClientConfig> {
        let provider = Arc::new(ring::default_provider());
        Arc::new(
            ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .unwrap()
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAny(ring::default_provider())))
                .with_no_client_auth(),
        )
    }
}

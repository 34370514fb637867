//! TLS certificate reload on SIGHUP: after the files are replaced and the
//! process gets SIGHUP, new handshakes see the new certificate.
//!
//! A separate test binary because signals are process-wide: raising SIGHUP
//! in the `api` binary would reach every TLS server of the other tests. The
//! poll interval is an hour here, so only the signal can cause the reload.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use axum::{routing::get, Router};
use mobile_backend::{config::TlsConfig, tls::TlsServer};
use rustls::{pki_types::ServerName, ClientConfig, RootCertStore};
use std::{path::Path, sync::Arc, time::Duration};
use tokio::net::{TcpListener, TcpStream};

/// A fresh self-signed pair for `localhost`, written over `cert.pem` and
/// `key.pem`; returns the certificate.
fn write_pair(dir: &Path) -> rcgen::Certificate {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    cert
}

/// Whether a client that trusts only `cert` completes a handshake.
async fn handshake_trusting(addr: std::net::SocketAddr, cert: &rcgen::Certificate) -> bool {
    let mut roots = RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let handshake = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp);
    matches!(
        tokio::time::timeout(Duration::from_secs(5), handshake).await,
        Ok(Ok(_))
    )
}

#[tokio::test]
async fn sighup_makes_new_handshakes_use_the_replaced_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let first = write_pair(dir.path());
    let settings = TlsConfig {
        cert_file: dir.path().join("cert.pem"),
        key_file: dir.path().join("key.pem"),
        reload_poll: Duration::from_secs(3600),
    };
    // The same serving code `Application::run_until` uses.
    let tls = TlsServer::load(&settings).await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = Router::new().route("/healthz", get(|| async { "ok" }));
    tokio::spawn(tls.serve(
        listener,
        router,
        std::future::pending(),
        mobile_backend::config::ListenerLimits::default(),
    ));
    assert!(handshake_trusting(addr, &first).await);

    let second = write_pair(dir.path());
    // Files changed, no signal yet: the hour-long poll has not looked.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!handshake_trusting(addr, &second).await);

    nix::sys::signal::raise(nix::sys::signal::Signal::SIGHUP).unwrap();
    let mut reloaded = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if handshake_trusting(addr, &second).await {
            reloaded = true;
            break;
        }
    }
    assert!(reloaded, "SIGHUP did not reload the certificate");
    assert!(!handshake_trusting(addr, &first).await);
}

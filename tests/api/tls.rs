//! Native TLS: the real server with `TLS_CERT_FILE` and `TLS_KEY_FILE`, a
//! self-signed certificate made at test time, and clients that each speak
//! one protocol version. The `tls-pins` command is tested in `tls/pins.rs`.
//!
//! TLS 1.0 and 1.1 are tried with the `openssl` CLI (rustls clients cannot
//! speak them), at security level 0 so the client really offers them and the
//! refusal is the server's. Reload is tested through the file-change path;
//! SIGHUP is process-wide, so its test is the separate `tls_sighup` binary.

mod pins;

use crate::helpers::TestApp;
use rustls::{
    pki_types::{CertificateDer, ServerName},
    ClientConfig, ProtocolVersion, RootCertStore, SupportedProtocolVersion,
};
use std::{
    net::SocketAddr,
    path::Path,
    process::{Command, Stdio},
    sync::Arc,
    time::Duration,
};
use tempfile::TempDir;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const BIN: &str = env!("CARGO_BIN_EXE_mobile-backend");

/// A self-signed certificate for `localhost` and its key, as PEM.
struct TestCert {
    der: CertificateDer<'static>,
    cert_pem: String,
    key_pem: String,
}

impl TestCert {
    fn new() -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        Self {
            der: cert.der().clone(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// Writes `cert.pem` and `key.pem` the way a renewal tool should: to a
    /// temporary name, then renamed over the old file.
    fn write(&self, dir: &Path) {
        for (name, body) in [("cert.pem", &self.cert_pem), ("key.pem", &self.key_pem)] {
            let tmp = dir.join(format!(".{name}.tmp"));
            std::fs::write(&tmp, body).unwrap();
            std::fs::rename(&tmp, dir.join(name)).unwrap();
        }
    }
}

/// The application serving TLS with `cert`; the files live in the `TempDir`.
async fn spawn_tls(cert: &TestCert) -> (TestApp, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    cert.write(dir.path());
    let path = |name: &str| dir.path().join(name).display().to_string();
    let app = TestApp::builder()
        .env("TLS_CERT_FILE", &path("cert.pem"))
        .env("TLS_KEY_FILE", &path("key.pem"))
        .env("TLS_RELOAD_POLL_SECS", "1")
        .spawn()
        .await;
    (app, dir)
}

/// A client that trusts only `cert`, speaks only `versions`, offers `alpn`.
fn client(
    cert: &TestCert,
    versions: &[&'static SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(cert.der.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

async fn connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let handshake = tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").unwrap(), tcp);
    tokio::time::timeout(Duration::from_secs(10), handshake)
        .await
        .map_err(|_| std::io::Error::other("handshake timed out"))?
}

/// `GET path` over HTTP/1.1 on a fresh TLS connection: the negotiated
/// version, ALPN protocol and the raw response.
async fn get_http1(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    path: &str,
) -> (ProtocolVersion, Option<Vec<u8>>, String) {
    let mut tls = connect(addr, config).await.unwrap();
    let conn = tls.get_ref().1;
    let version = conn.protocol_version().unwrap();
    let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    // The answer is complete when the server closes; how it closes is not
    // what this test is about.
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut response)).await;
    (
        version,
        alpn,
        String::from_utf8_lossy(&response).into_owned(),
    )
}

fn header<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    response
        .split("\r\n\r\n")
        .next()?
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

#[tokio::test]
async fn a_tls13_client_gets_healthz_with_hsts() {
    let cert = TestCert::new();
    let (app, _files) = spawn_tls(&cert).await;
    let config = client(&cert, &[&rustls::version::TLS13], &[b"http/1.1"]);
    let (version, alpn, response) = get_http1(app.addr, config, "/healthz").await;
    assert_eq!(version, ProtocolVersion::TLSv1_3);
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let hsts = header(&response, "strict-transport-security").expect("HSTS over TLS");
    assert!(hsts.contains("max-age="), "{hsts}");
}

#[tokio::test]
async fn a_tls12_client_gets_healthz_with_hsts() {
    let cert = TestCert::new();
    let (app, _files) = spawn_tls(&cert).await;
    let config = client(&cert, &[&rustls::version::TLS12], &[]);
    let (version, _, response) = get_http1(app.addr, config, "/healthz").await;
    assert_eq!(version, ProtocolVersion::TLSv1_2);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(header(&response, "strict-transport-security").is_some());
}

/// `openssl s_client` against the server: whether the handshake succeeded,
/// and everything it printed.
async fn s_client(addr: SocketAddr, args: &[&str]) -> (bool, String) {
    let run = tokio::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &addr.to_string(),
            "-servername",
            "localhost",
        ])
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("openssl s_client timed out")
        .expect("the openssl CLI (apt-get install openssl)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn tls11_and_tls10_clients_are_refused_by_the_server() {
    let cert = TestCert::new();
    let (app, _files) = spawn_tls(&cert).await;
    // Security level 0 lets this OpenSSL offer the old protocols at all.
    let (ok, text) = s_client(app.addr, &["-tls1_2", "-cipher", "DEFAULT:@SECLEVEL=0"]).await;
    assert!(
        ok && text.contains("TLSv1.2"),
        "control: TLS 1.2 works\n{text}"
    );
    for old in ["-tls1_1", "-tls1"] {
        let (ok, text) = s_client(app.addr, &[old, "-cipher", "DEFAULT:@SECLEVEL=0"]).await;
        assert!(!ok, "{old} was accepted:\n{text}");
        // The server answered the ClientHello with an alert: a refusal, not
        // a client that never tried.
        assert!(text.contains("alert"), "{old}:\n{text}");
        assert!(text.contains("Cipher is (NONE)"), "{old}:\n{text}");
    }
}

#[tokio::test]
async fn tls12_cbc_cipher_suites_are_refused() {
    let cert = TestCert::new();
    let (app, _files) = spawn_tls(&cert).await;
    // Control: the same certificate with an AEAD suite works.
    let (ok, text) = s_client(
        app.addr,
        &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"],
    )
    .await;
    assert!(ok, "control: an AEAD suite works\n{text}");
    for cbc in ["ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA384"] {
        let (ok, text) = s_client(app.addr, &["-tls1_2", "-cipher", cbc]).await;
        assert!(!ok, "{cbc} was accepted:\n{text}");
        assert!(text.contains("alert"), "{cbc}:\n{text}");
    }
}

#[tokio::test]
async fn alpn_negotiates_h2_and_the_api_answers_over_http2() {
    let cert = TestCert::new();
    let (app, _files) = spawn_tls(&cert).await;
    let config = client(&cert, &[&rustls::version::TLS13], &[b"h2", b"http/1.1"]);
    let tls = connect(app.addr, config).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (h2, connection) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(connection);
    let status = h2_get(h2, "/healthz").await;
    assert_eq!(status, 200);
}

async fn h2_get(h2: h2::client::SendRequest<bytes::Bytes>, path: &str) -> u16 {
    let mut h2 = h2.ready().await.unwrap();
    let request = http::Request::get(format!("https://localhost{path}"))
        .body(())
        .unwrap();
    let (response, _) = h2.send_request(request, true).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    response.status().as_u16()
}

#[tokio::test]
async fn a_renewed_certificate_is_served_to_new_handshakes_and_open_connections_keep_working() {
    let old = TestCert::new();
    let (app, files) = spawn_tls(&old).await;
    // A connection made before the renewal.
    let config = client(&old, &[&rustls::version::TLS13], &[b"h2"]);
    let (h2, connection) = h2::client::handshake(connect(app.addr, config).await.unwrap())
        .await
        .unwrap();
    tokio::spawn(connection);

    let new = TestCert::new();
    new.write(files.path());
    // Only a server presenting the new certificate satisfies this client.
    let trusts_new = client(&new, &[&rustls::version::TLS13], &[]);
    let mut served = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if let Ok(tls) = connect(app.addr, trusts_new.clone()).await {
            served = tls.get_ref().1.peer_certificates().map(|c| c[0].clone());
            break;
        }
    }
    assert_eq!(
        served.as_ref(),
        Some(&new.der),
        "the new certificate is served"
    );
    assert_eq!(
        h2_get(h2, "/healthz").await,
        200,
        "the old connection still works"
    );
}

#[tokio::test]
async fn on_shutdown_an_in_flight_tls_request_finishes_and_new_connections_are_refused() {
    let cert = TestCert::new();
    let (app, _files) = spawn_tls(&cert).await;
    let addr = app.addr;
    let config = client(&cert, &[&rustls::version::TLS13], &[]);
    // The probe takes 5 s; shutdown is requested while it runs.
    let in_flight = tokio::spawn(get_http1(addr, config, "/v1/_probe/slow"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(app);
    let (_, _, response) = in_flight.await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("slow"), "{response}");
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn metrics_stay_plain_http_when_the_api_serves_tls() {
    let cert = TestCert::new();
    let (app, _files) = spawn_tls(&cert).await;
    let r = app
        .client
        .get(format!("http://{}/metrics", app.metrics_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// A command with none of the service's variables, in an empty folder.
fn clean_command(dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(dir)
        .stdin(Stdio::null());
    cmd
}

#[test]
fn a_bad_tls_key_fails_start_up_naming_the_file_without_printing_it() {
    let dir = tempfile::tempdir().unwrap();
    let cert = TestCert::new();
    cert.write(dir.path());
    let cert_file = dir.path().join("cert.pem");
    let key_file = dir.path().join("key.pem");
    let secret =
        "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n-----END PRIVATE KEY-----\n";
    let other_key = rcgen::KeyPair::generate().unwrap().serialize_pem();
    for (key, expected) in [
        (secret, "TLS_"),
        (
            "MIIBVQIBADANBgkqhkiG9w0BAQEFAASCAT8wggE7AgEAAkEA\n",
            "TLS_KEY_FILE",
        ),
        (other_key.as_str(), "cannot be used together"),
    ] {
        std::fs::write(&key_file, key).unwrap();
        let out = clean_command(dir.path())
            .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
            .env("TLS_CERT_FILE", &cert_file)
            .env("TLS_KEY_FILE", &key_file)
            .arg("serve")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success());
        assert!(stderr.contains(expected), "{expected} missing:\n{stderr}");
        for leak in ["c2VjcmV0", "MIIBVQ", "panicked"] {
            assert!(
                !stderr.contains(leak) && !stdout.contains(leak),
                "{leak}:\n{stderr}"
            );
        }
    }
    // One file without the other is a configuration error.
    let out = clean_command(dir.path())
        .env("TLS_CERT_FILE", &cert_file)
        .arg("serve")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("TLS_KEY_FILE"));
}

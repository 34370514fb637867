//! `mobile-backend tls-pins`: the pins it prints are the ones the `openssl`
//! CLI computes independently, in both platform snippets, and a missing
//! backup key is warned about.
//!
//! Key decision: the expected pins come from `openssl`, not from the code
//! under test, so a wrong SPKI encoding cannot agree with itself.

use super::clean_command;
use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// The pin as the openssl CLI computes it, from a command that prints a
/// public key in PEM.
fn openssl_pin(pubkey_pem_command: &str) -> String {
    let script = format!(
        "{pubkey_pem_command} | openssl pkey -pubin -outform der \
         | openssl dgst -sha256 -binary | base64"
    );
    let out = Command::new("sh").args(["-c", &script]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn write_pin_inputs(dir: &Path) -> (PathBuf, PathBuf) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["api.pinning.test".into(), "localhost".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let cert_file = dir.join("cert.pem");
    let backup_file = dir.join("backup-key.pem");
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(
        &backup_file,
        rcgen::KeyPair::generate().unwrap().serialize_pem(),
    )
    .unwrap();
    (cert_file, backup_file)
}

#[test]
fn tls_pins_prints_the_pins_openssl_computes_in_android_and_ios_snippets() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_file, backup_file) = write_pin_inputs(dir.path());
    let primary = openssl_pin(&format!(
        "openssl x509 -in {} -pubkey -noout",
        cert_file.display()
    ));
    let backup = openssl_pin(&format!(
        "openssl pkey -in {} -pubout",
        backup_file.display()
    ));
    assert_ne!(primary, backup);

    let out = clean_command(dir.path())
        .args(["tls-pins", "--cert"])
        .arg(&cert_file)
        .arg("--backup-key")
        .arg(&backup_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(!stderr.contains("warning"), "{stderr}");
    for pin in [&primary, &backup] {
        assert!(
            stdout.contains(&format!(r#"<pin digest="SHA-256">{pin}</pin>"#)),
            "{stdout}"
        );
        assert!(
            stdout.contains(&format!("<string>{pin}</string>")),
            "{stdout}"
        );
    }
    // The domain defaults to the certificate's first DNS name.
    assert!(stdout.contains(r#"<domain includeSubdomains="false">api.pinning.test</domain>"#));
    assert!(stdout.contains("<key>api.pinning.test</key>"));
    assert!(stdout.contains("<pin-set expiration=\""));
    assert!(stdout.contains("<key>NSPinnedLeafIdentities</key>"));
    assert!(stdout.contains("<key>SPKI-SHA256-BASE64</key>"));
    // The private backup key is read, never echoed.
    let backup_pem = std::fs::read_to_string(&backup_file).unwrap();
    let body_line = backup_pem.lines().nth(1).unwrap();
    assert!(!stdout.contains(body_line) && !stderr.contains(body_line));
}

#[test]
fn tls_pins_takes_a_public_key_and_warns_when_there_is_no_backup() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_file, _) = write_pin_inputs(dir.path());
    // A backup given as a `PUBLIC KEY` (RSA, made by openssl).
    let rsa_pub = dir.path().join("backup-rsa.pub");
    let made = Command::new("sh")
        .args([
            "-c",
            &format!(
                "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 2>/dev/null \
                 | openssl pkey -pubout -out {}",
                rsa_pub.display()
            ),
        ])
        .status()
        .unwrap();
    assert!(made.success());
    let expected = openssl_pin(&format!("cat {}", rsa_pub.display()));
    let out = clean_command(dir.path())
        .args([
            "tls-pins",
            "--domain",
            "api.example.org",
            "--expiration",
            "2031-02-03",
            "--cert",
        ])
        .arg(&cert_file)
        .arg("--backup-key")
        .arg(&rsa_pub)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success());
    assert!(
        stdout.contains(&format!(r#"<pin digest="SHA-256">{expected}</pin>"#)),
        "{stdout}"
    );
    assert!(
        stdout.contains(r#"<pin-set expiration="2031-02-03">"#),
        "{stdout}"
    );
    assert!(stdout.contains(">api.example.org</domain>"), "{stdout}");

    let out = clean_command(dir.path())
        .args(["tls-pins", "--cert"])
        .arg(&cert_file)
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("warning: no --backup-key"), "{stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.matches(r#"<pin digest="SHA-256">"#).count(), 1);

    // A file that is not a key is an error, not a pin.
    let out = clean_command(dir.path())
        .args(["tls-pins", "--cert"])
        .arg(&cert_file)
        .arg("--backup-key")
        .arg(cert_file.with_file_name("missing.pem"))
        .output()
        .unwrap();
    assert!(!out.status.success());
}

//! `mobile-backend tls-pins`: the SPKI SHA-256 pins of the serving
//! certificate and of a backup key, with ready-to-paste Android and iOS
//! pinning snippets.
//!
//! Key decisions:
//! * Pins are over the SubjectPublicKeyInfo, not the certificate: a renewal
//!   that keeps the key keeps the pin, and the format (base64 of SHA-256 of
//!   the DER SPKI) is the one both platforms and `openssl` use.
//! * A backup pin is part of every pin set. Without one, the next key change
//!   (renewal with a new key, a compromise, a new CA) makes every installed
//!   app refuse the server until users update: a missing backup is warned
//!   about on stderr.
//! * Parsing uses what TLS already uses: rustls-pki-types for PEM,
//!   rustls-webpki for the certificate, rustls' ring provider to derive a
//!   private key's public half, and RustCrypto `spki` to check a `PUBLIC KEY`.
//!   No hand-written ASN.1.

use super::snippets::{android_snippet, ios_snippet, PinnedDomain};
use base64::Engine;
use chrono::{Days, NaiveDate, Utc};
use rustls::pki_types::{
    pem::{PemObject, SectionKind},
    CertificateDer, PrivateKeyDer,
};
use sha2::{Digest, Sha256};
use std::{fmt::Write as _, path::PathBuf};
use zeroize::Zeroizing;

/// Arguments of `tls-pins`.
#[derive(Debug, clap::Args)]
pub struct PinsArgs {
    /// The serving certificate (PEM; the first certificate is the leaf).
    #[arg(long, value_name = "PEM")]
    pub cert: PathBuf,
    /// The backup key, kept offline: a PKCS#8 `PRIVATE KEY`, a `PUBLIC KEY`
    /// or a certificate (PEM).
    #[arg(long, value_name = "PEM")]
    pub backup_key: Option<PathBuf>,
    /// The pinned host name [default: the certificate's first DNS name, else
    /// api.example.com].
    #[arg(long)]
    pub domain: Option<String>,
    /// Android pin-set expiration (YYYY-MM-DD) [default: one year from today].
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub expiration: Option<NaiveDate>,
}

/// Base64 of the SHA-256 of a DER SubjectPublicKeyInfo.
pub fn spki_pin(spki_der: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(spki_der))
}

/// The DER SubjectPublicKeyInfo of a certificate.
pub fn cert_spki(cert: &CertificateDer<'_>) -> Result<Vec<u8>, String> {
    let parsed = webpki::EndEntityCert::try_from(cert)
        .map_err(|e| format!("not a valid X.509 certificate ({e})"))?;
    Ok(parsed.subject_public_key_info().as_ref().to_vec())
}

/// The certificate's DNS subject alternative names, in order.
pub fn cert_dns_names(cert: &CertificateDer<'_>) -> Vec<String> {
    webpki::EndEntityCert::try_from(cert)
        .map(|c| c.valid_dns_names().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// The DER SubjectPublicKeyInfo of the first key or certificate in a PEM
/// file. A private key's public half is derived; the private key itself is
/// only held in memory that is wiped afterwards.
pub fn key_spki(pem: &[u8]) -> Result<Vec<u8>, String> {
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(pem) {
        let (kind, der) = section.map_err(|_| "not a valid PEM file".to_owned())?;
        let der = Zeroizing::new(der);
        match kind {
            SectionKind::PublicKey => {
                spki::SubjectPublicKeyInfoRef::try_from(der.as_slice())
                    .map_err(|e| format!("PUBLIC KEY is not a SubjectPublicKeyInfo ({e})"))?;
                return Ok(der.to_vec());
            }
            SectionKind::Certificate => return cert_spki(&CertificateDer::from(der.as_slice())),
            SectionKind::PrivateKey | SectionKind::RsaPrivateKey | SectionKind::EcPrivateKey => {
                let bytes = der.to_vec();
                let key = match kind {
                    SectionKind::RsaPrivateKey => PrivateKeyDer::Pkcs1(bytes.into()),
                    SectionKind::EcPrivateKey => PrivateKeyDer::Sec1(bytes.into()),
                    _ => PrivateKeyDer::Pkcs8(bytes.into()),
                };
                let signing = rustls::crypto::ring::sign::any_supported_type(&key)
                    .map_err(|e| format!("unsupported private key ({e})"))?;
                return signing
                    .public_key()
                    .map(|spki| spki.as_ref().to_vec())
                    .ok_or_else(|| "cannot derive the public key".to_owned());
            }
            _ => continue,
        }
    }
    Err("no PRIVATE KEY, PUBLIC KEY or CERTIFICATE block found \
         (encrypted keys are not supported)"
        .into())
}

/// The whole `tls-pins` report, and the warnings for stderr.
pub fn report(args: &PinsArgs) -> anyhow::Result<(String, Vec<String>)> {
    let mut warnings = Vec::new();
    let cert_pem = std::fs::read(&args.cert)
        .map_err(|e| anyhow::anyhow!("--cert {}: cannot be read ({e})", args.cert.display()))?;
    let chain = super::pem::parse_cert_chain(&cert_pem)
        .map_err(|e| anyhow::anyhow!("--cert {}: {e}", args.cert.display()))?;
    let (leaf, cas) = chain
        .split_first()
        .ok_or_else(|| anyhow::anyhow!("--cert {}: no certificate", args.cert.display()))?;
    let primary = spki_pin(&cert_spki(leaf).map_err(anyhow::Error::msg)?);
    let backup = match &args.backup_key {
        Some(path) => {
            let pem = Zeroizing::new(std::fs::read(path).map_err(|e| {
                anyhow::anyhow!("--backup-key {}: cannot be read ({e})", path.display())
            })?);
            let pin = spki_pin(
                &key_spki(&pem)
                    .map_err(|e| anyhow::anyhow!("--backup-key {}: {e}", path.display()))?,
            );
            if pin == primary {
                warnings.push(
                    "warning: the backup key is the certificate's own key, so it is no backup: \
                     use a separate key pair, kept offline"
                        .to_owned(),
                );
            }
            Some(pin)
        }
        None => {
            warnings.push(
                "warning: no --backup-key given. A pin set with a single pin bricks every \
                 installed app the day this key changes (renewal with a new key, compromise, \
                 a new CA) until users update. Create a backup key now, keep it offline, and \
                 ship its pin with this one, e.g.: openssl genpkey -algorithm EC -pkeyopt \
                 ec_paramgen_curve:P-256 -out backup-key.pem"
                    .to_owned(),
            );
            None
        }
    };
    let domain = match &args.domain {
        Some(d) => PinnedDomain::parse(d).map_err(|e| anyhow::anyhow!("--domain: {e}"))?,
        None => cert_dns_names(leaf)
            .first()
            .and_then(|d| PinnedDomain::parse(d).ok())
            .unwrap_or_else(|| PinnedDomain {
                name: "api.example.com".into(),
                include_subdomains: false,
            }),
    };
    let today = Utc::now().date_naive();
    let expiration = args
        .expiration
        .or_else(|| today.checked_add_days(Days::new(365)))
        .unwrap_or(today);
    if expiration <= today {
        warnings.push(format!(
            "warning: the expiration {expiration} is not in the future: Android ignores an expired pin-set"
        ));
    }

    let pins: Vec<String> = std::iter::once(primary.clone())
        .chain(backup.clone())
        .collect();
    let mut out = String::new();
    let _ = writeln!(out, "SPKI SHA-256 pins (base64) for {}", domain.name);
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "primary: {primary}  (the key of {})",
        args.cert.display()
    );
    match (&backup, &args.backup_key) {
        (Some(pin), Some(path)) => {
            let _ = writeln!(out, "backup:  {pin}  ({})", path.display());
        }
        _ => {
            let _ = writeln!(out, "backup:  (none: see the warning)");
        }
    }
    for (i, ca) in cas.iter().enumerate() {
        if let Ok(spki) = cert_spki(ca) {
            let _ = writeln!(
                out,
                "chain[{}]: {}  (a CA: for NSPinnedCAIdentities instead of leaf pins)",
                i + 1,
                spki_pin(&spki)
            );
        }
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "--- Android: res/xml/network_security_config.xml \
         (AndroidManifest.xml: android:networkSecurityConfig=\"@xml/network_security_config\")"
    );
    out.push_str(&android_snippet(&domain, &pins, expiration));
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "--- iOS 14+: Info.plist (iOS pins never expire: the backup pin is the only way out)"
    );
    out.push_str(&ios_snippet(&domain, &pins));
    Ok((out, warnings))
}

/// Runs `tls-pins`: the report on stdout, warnings on stderr.
pub fn run(args: &PinsArgs) -> anyhow::Result<()> {
    let (out, warnings) = report(args)?;
    for w in warnings {
        eprintln!("{w}");
    }
    print!("{out}");
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn the_pin_is_base64_sha256_of_the_der() {
        // SHA-256 of the empty string.
        assert_eq!(
            spki_pin(b""),
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
    }

    #[test]
    fn a_private_key_a_public_key_and_a_certificate_give_the_same_pin() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["api.example.com".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let expected = rcgen::PublicKeyData::subject_public_key_info(&key);
        assert_eq!(key_spki(key.serialize_pem().as_bytes()).unwrap(), expected);
        assert_eq!(key_spki(key.public_key_pem().as_bytes()).unwrap(), expected);
        assert_eq!(key_spki(cert.pem().as_bytes()).unwrap(), expected);
        assert_eq!(cert_spki(cert.der()).unwrap(), expected);
        assert_eq!(cert_dns_names(cert.der()), vec!["api.example.com"]);
    }

    #[test]
    fn garbage_is_an_error_that_does_not_echo_the_input() {
        let secret =
            "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LW1hdGVyaWFs!!\n-----END PRIVATE KEY-----\n";
        let err = key_spki(secret.as_bytes()).unwrap_err();
        assert!(!err.contains("c2VjcmV0"), "{err}");
        let err = super::super::pem::parse_private_key(secret.as_bytes()).unwrap_err();
        assert!(!err.contains("c2VjcmV0"), "{err}");
        assert!(key_spki(b"hello").is_err());
    }
}

//! PEM parsing of the serving certificate chain and private key, shared by
//! the listener (`tls/mod.rs`) and the `tls-pins` command (`pins.rs`).
//! Error messages name the problem, never the file's contents.

use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};

/// The leaf first, then any intermediates, from PEM `CERTIFICATE` blocks.
pub fn parse_cert_chain(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a valid PEM file ({e})"))?;
    let Some(leaf) = chain.first() else {
        return Err("no CERTIFICATE block found".into());
    };
    webpki::EndEntityCert::try_from(leaf)
        .map_err(|e| format!("the first certificate is not valid X.509 ({e})"))?;
    Ok(chain)
}

/// A private key from PEM: PKCS#8 (`PRIVATE KEY`), PKCS#1 (`RSA PRIVATE
/// KEY`) or SEC1 (`EC PRIVATE KEY`). The PEM parser's own error text is not
/// used, because it may quote a line of the file.
pub fn parse_private_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            "no unencrypted PRIVATE KEY, RSA PRIVATE KEY \
             or EC PRIVATE KEY block found (encrypted keys are not supported)"
                .to_owned()
        }
        _ => "not a valid PEM file".to_owned(),
    })
}

//! Reading `SIGNING_KEYS`: PKCS#8 PEM Ed25519 private keys, inline or in files.
//!
//! Format: if the value contains `-----BEGIN`, it is one or more PEM blocks
//! (the current key first); otherwise it is a comma-separated list of file
//! paths, each file holding one or more such blocks, read in order.
//!
//! The threat is the configuration leaking through its own error messages:
//! start-up failures go to logs and CI output. So no message repeats any part
//! of the input: not a PEM body, and not a "path" either, since a truncated
//! PEM body without its BEGIN line is read as a path. Entries and blocks are
//! named by position. File contents are held in zeroizing buffers.

use std::fs::File;
use std::io::Read as _;

use ed25519_dalek::pkcs8::{spki, DecodePrivateKey as _};
use zeroize::Zeroizing;

use super::TokenError;

const PEM_BEGIN: &str = "-----BEGIN ";
const PEM_DASHES: &str = "-----";

/// A key file is a few hundred bytes; anything much larger is a wrong path.
const MAX_KEY_FILE_LEN: u64 = 64 * 1024;

/// The private keys of a `SIGNING_KEYS` value, in order.
pub(super) fn parse_spec(spec: &str) -> Result<Vec<ed25519_dalek::SigningKey>, TokenError> {
    let spec = spec.trim();
    if spec.is_empty() {
        return Err(invalid("SIGNING_KEYS is empty"));
    }
    if spec.contains(PEM_BEGIN.trim_end()) {
        return parse_pem_blocks(spec, "SIGNING_KEYS");
    }
    let mut keys = Vec::new();
    for (i, path) in spec.split(',').map(str::trim).enumerate() {
        if path.is_empty() {
            continue;
        }
        let source = format!("SIGNING_KEYS file #{}", i + 1);
        let contents = read_key_file(path, &source)?;
        let text = std::str::from_utf8(&contents)
            .map_err(|_| invalid(&format!("{source} is not UTF-8 PEM text")))?;
        keys.extend(parse_pem_blocks(text, &source)?);
    }
    if keys.is_empty() {
        return Err(invalid("SIGNING_KEYS names no key files"));
    }
    Ok(keys)
}

fn read_key_file(path: &str, source: &str) -> Result<Zeroizing<Vec<u8>>, TokenError> {
    // `io::ErrorKind` describes the failure without repeating the path.
    let io = |e: std::io::Error| invalid(&format!("{source}: cannot read ({})", e.kind()));
    let file = File::open(path).map_err(io)?;
    // Reserve up front so the buffer never reallocates and leaves copies of
    // key bytes behind in freed memory.
    let mut buf = Zeroizing::new(Vec::with_capacity(MAX_KEY_FILE_LEN as usize + 1));
    file.take(MAX_KEY_FILE_LEN + 1)
        .read_to_end(&mut buf)
        .map_err(io)?;
    if buf.len() as u64 > MAX_KEY_FILE_LEN {
        return Err(invalid(&format!(
            "{source} is larger than {MAX_KEY_FILE_LEN} bytes; is it a key file?"
        )));
    }
    Ok(buf)
}

/// Every PEM block in `text`, in order; text outside blocks is ignored, as
/// RFC 7468 §2 allows. Each must be an unencrypted PKCS#8 Ed25519 key.
fn parse_pem_blocks(
    text: &str,
    source: &str,
) -> Result<Vec<ed25519_dalek::SigningKey>, TokenError> {
    let mut keys = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(PEM_BEGIN) {
        let n = keys.len() + 1;
        let block_err = |why: &str| invalid(&format!("{source}, PEM block {n}: {why}"));
        let after_begin = &rest[start + PEM_BEGIN.len()..];
        let label_len = after_begin
            .find(PEM_DASHES)
            .ok_or_else(|| block_err("malformed BEGIN line"))?;
        let label = &after_begin[..label_len];
        let end_line = format!("-----END {label}-----");
        let end = after_begin
            .find(&end_line)
            .ok_or_else(|| block_err("no matching END line"))?;
        let block_len = PEM_BEGIN.len() + end + end_line.len();
        let block = &rest[start..start + block_len];
        rest = &rest[start + block_len..];

        if label != "PRIVATE KEY" {
            return Err(block_err(describe_wrong_label(label)));
        }
        let key = ed25519_dalek::SigningKey::from_pkcs8_pem(block).map_err(|e| match e {
            ed25519_dalek::pkcs8::Error::PublicKey(spki::Error::OidUnknown { oid }) => {
                block_err(&format!(
                    "a PKCS#8 {} key, not Ed25519; only Ed25519 keys are accepted",
                    algorithm_name(&oid.to_string())
                ))
            }
            _ => block_err("not a valid PKCS#8 Ed25519 private key"),
        })?;
        keys.push(key);
    }
    if keys.is_empty() {
        return Err(invalid(&format!("{source} holds no PEM PRIVATE KEY block")));
    }
    Ok(keys)
}

/// A helpful message for a PEM block of the wrong kind. The label itself is
/// not echoed: in a mangled block it may run into the base64 body.
fn describe_wrong_label(label: &str) -> &'static str {
    match label {
        "RSA PRIVATE KEY" => "an RSA key; only Ed25519 keys are accepted",
        "EC PRIVATE KEY" => "an EC key; only Ed25519 keys are accepted",
        "OPENSSH PRIVATE KEY" => {
            "an OpenSSH key; convert it to PKCS#8 (`ssh-keygen -p -m PKCS8`) or generate one \
             with `mobile-backend keys generate-signing`"
        }
        "ENCRYPTED PRIVATE KEY" => "an encrypted key; SIGNING_KEYS needs unencrypted PKCS#8",
        "PUBLIC KEY" | "CERTIFICATE" => "not a private key; SIGNING_KEYS needs private keys",
        _ => "not a `PRIVATE KEY` block (expected PKCS#8 Ed25519)",
    }
}

fn algorithm_name(oid: &str) -> &'static str {
    match oid {
        "1.2.840.113549.1.1.1" | "1.2.840.113549.1.1.10" => "RSA",
        "1.2.840.10045.2.1" => "EC",
        "1.3.101.113" => "Ed448",
        "1.3.101.110" | "1.3.101.111" => "X25519/X448",
        _ => "non-Ed25519",
    }
}

fn invalid(msg: &str) -> TokenError {
    TokenError::InvalidKey(msg.to_owned())
}

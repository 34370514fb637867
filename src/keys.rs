//! The service's key material: from configuration, or, in development only,
//! generated once into `$DATA_DIR/dev-keys.json`.
//!
//! Production never reaches the generating branch: `Config` refuses to parse
//! without `DATA_KEYS`, `BLIND_INDEX_KEY` and `CODE_HMAC_KEY`. Development
//! keys are persisted so data encrypted yesterday still opens today, and the
//! file is created with mode 0600.

use crate::{
    config::Config,
    crypto::{BlindIndexKey, CodeHasher, KeyRing},
    tokens::SigningKeys,
};
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::{fs, io::Write, os::unix::fs::OpenOptionsExt, path::Path};

/// Field-encryption key ring, blind-index key, short-code HMAC key and
/// access-token signing keys.
#[derive(Debug)]
pub struct Keys {
    pub data: KeyRing,
    pub blind_index: BlindIndexKey,
    pub codes: CodeHasher,
    pub signing: SigningKeys,
}

#[derive(Serialize, Deserialize)]
struct DevKeyFile {
    data_keys: String,
    blind_index_key: String,
    code_hmac_key: String,
    /// Absent in files written before access tokens existed; added on load.
    #[serde(default)]
    signing_keys_pem: Option<String>,
}

impl Keys {
    pub fn load(config: &Config) -> anyhow::Result<Self> {
        let k = &config.keys;
        if let (Some(data), Some(blind_index), Some(codes), Some(signing)) = (
            &k.data_keys,
            &k.blind_index_key,
            &k.code_hmac_key,
            &k.signing_keys,
        ) {
            return Ok(Self {
                data: data.clone(),
                blind_index: blind_index.clone(),
                codes: codes.clone(),
                signing: signing.clone(),
            });
        }
        anyhow::ensure!(
            !config.is_production(),
            "production requires DATA_KEYS, BLIND_INDEX_KEY, CODE_HMAC_KEY and SIGNING_KEYS"
        );
        let dev = load_or_create_dev_keys(&config.data_dir)?;
        Ok(Self {
            data: k.data_keys.clone().unwrap_or(dev.data),
            blind_index: k.blind_index_key.clone().unwrap_or(dev.blind_index),
            codes: k.code_hmac_key.clone().unwrap_or(dev.codes),
            signing: k.signing_keys.clone().unwrap_or(dev.signing),
        })
    }

    /// Fresh random keys, for tests and `keys generate`.
    pub fn generate() -> anyhow::Result<Self> {
        Ok(Self {
            data: KeyRing::generate_single(1),
            blind_index: BlindIndexKey::generate(),
            codes: CodeHasher::generate(),
            signing: SigningKeys::parse(&SigningKeys::generate_pem()?)?,
        })
    }
}

fn load_or_create_dev_keys(data_dir: &Path) -> anyhow::Result<Keys> {
    let path = data_dir.join("dev-keys.json");
    if path.exists() {
        let raw = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let file: DevKeyFile = serde_json::from_slice(&raw)
            .with_context(|| format!("{} is not a valid key file", path.display()))?;
        let mut file: DevKeyFile = file;
        let signing = match &file.signing_keys_pem {
            Some(pem) => SigningKeys::parse(pem)?,
            None => {
                let pem = SigningKeys::generate_pem()?;
                file.signing_keys_pem = Some(pem.clone());
                fs::write(&path, serde_json::to_vec_pretty(&file)?)?;
                tracing::warn!(path = %path.display(), "added a development signing key");
                SigningKeys::parse(&pem)?
            }
        };
        return Ok(Keys {
            data: KeyRing::parse(&file.data_keys)?,
            blind_index: BlindIndexKey::from_base64(&file.blind_index_key)?,
            codes: CodeHasher::from_base64(&file.code_hmac_key)?,
            signing,
        });
    }
    let keys = Keys::generate()?;
    let file = DevKeyFile {
        data_keys: keys.data.to_spec(),
        blind_index_key: keys.blind_index.to_base64(),
        code_hmac_key: keys.codes.to_base64(),
        signing_keys_pem: Some(keys.signing.to_pem()),
    };
    fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let mut out = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    out.write_all(&serde_json::to_vec_pretty(&file)?)?;
    tracing::warn!(
        path = %path.display(),
        "generated development keys; never use these in production (set DATA_KEYS, BLIND_INDEX_KEY, CODE_HMAC_KEY, SIGNING_KEYS)"
    );
    Ok(keys)
}

/// `keys rotate`: the ring with a fresh key, numbered one above the
/// highest id, as its new primary; every old key stays (it still unwraps
/// until `keys rewrap` has run).
pub fn rotated(ring: &KeyRing) -> anyhow::Result<KeyRing> {
    let next = ring
        .ids()
        .into_iter()
        .max()
        .unwrap_or(0)
        .checked_add(1)
        .context("no key id left")?;
    let spec = format!(
        "{next}:{},{}",
        crate::crypto::Key::generate().to_base64(),
        ring.to_spec()
    );
    Ok(KeyRing::parse(&spec)?)
}

/// `keys rotate` in development: rotates the master key in
/// `$DATA_DIR/dev-keys.json` (created if missing); returns the new id.
pub fn rotate_dev_keys(data_dir: &Path) -> anyhow::Result<u32> {
    let keys = load_or_create_dev_keys(data_dir)?;
    let path = data_dir.join("dev-keys.json");
    let raw = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut file: DevKeyFile = serde_json::from_slice(&raw)?;
    let ring = rotated(&keys.data)?;
    file.data_keys = ring.to_spec();
    fs::write(&path, serde_json::to_vec_pretty(&file)?)?;
    Ok(ring.primary_id())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn rotation_puts_a_new_key_first_and_keeps_the_old_ones() {
        let ring = KeyRing::parse(&format!(
            "3:{},1:{}",
            crate::crypto::Key::generate().to_base64(),
            crate::crypto::Key::generate().to_base64()
        ))
        .unwrap();
        let next = rotated(&ring).unwrap();
        assert_eq!(next.ids(), vec![4, 3, 1]);
        assert_eq!(next.primary_id(), 4);
    }

    #[test]
    fn development_rotation_rewrites_the_key_file_and_it_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(rotate_dev_keys(dir.path()).unwrap(), 2);
        assert_eq!(rotate_dev_keys(dir.path()).unwrap(), 3);
        let keys = load_or_create_dev_keys(dir.path()).unwrap();
        assert_eq!(keys.data.ids(), vec![3, 2, 1]);
    }
}

//! The service's key material: from configuration, or, in development only,
//! generated once into `$DATA_DIR/dev-keys.json`.
//!
//! Production never reaches the generating branch: `Config` refuses to parse
//! without `DATA_KEYS`, `BLIND_INDEX_KEYS` and `CODE_HMAC_KEYS` (or their
//! one-key forms). Development keys are persisted so data encrypted
//! yesterday still opens today, and the file is created with mode 0600.
//!
//! Every key here is a ring, current first: `keys rotate` adds a new
//! current key to any of them ([`rotated`]).

use crate::{
    config::Config,
    crypto::{BlindIndexKeys, CodeHasher, KeyRing, MacKeyRing},
    tokens::SigningKeys,
};
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::{fs, io::Write, os::unix::fs::OpenOptionsExt, path::Path};

/// Field-encryption key ring, blind-index key ring, short-code HMAC key
/// ring and access-token signing keys.
#[derive(Debug)]
pub struct Keys {
    pub data: KeyRing,
    pub blind_index: BlindIndexKeys,
    pub codes: CodeHasher,
    pub signing: SigningKeys,
}

#[derive(Serialize, Deserialize)]
struct DevKeyFile {
    data_keys: String,
    /// The blind-index ring; files written before rings hold only
    /// `blind_index_key` (one key, read as key 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    blind_index_keys: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    blind_index_key: Option<String>,
    /// The code-MAC ring; older files hold only `code_hmac_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    code_hmac_keys: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    code_hmac_key: Option<String>,
    /// Absent in files written before access tokens existed; added on load.
    #[serde(default)]
    signing_keys_pem: Option<String>,
}

impl Keys {
    pub fn load(config: &Config) -> anyhow::Result<Self> {
        let k = &config.keys;
        if let (Some(data), Some(blind_index), Some(codes), Some(signing)) = (
            &k.data_keys,
            &k.blind_index_keys,
            &k.code_hmac_keys,
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
            "production requires DATA_KEYS, BLIND_INDEX_KEYS, CODE_HMAC_KEYS and SIGNING_KEYS"
        );
        let dev = load_or_create_dev_keys(&config.data_dir)?;
        Ok(Self {
            data: k.data_keys.clone().unwrap_or(dev.data),
            blind_index: k.blind_index_keys.clone().unwrap_or(dev.blind_index),
            codes: k.code_hmac_keys.clone().unwrap_or(dev.codes),
            signing: k.signing_keys.clone().unwrap_or(dev.signing),
        })
    }

    /// Fresh random keys, for tests and `keys generate`.
    pub fn generate() -> anyhow::Result<Self> {
        Ok(Self {
            data: KeyRing::generate_single(1),
            blind_index: BlindIndexKeys::generate(),
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
        let ring_of =
            |ring: &Option<String>, single: &Option<String>, name: &str| match (ring, single) {
                (Some(spec), _) => MacKeyRing::parse(spec),
                (None, Some(key)) => MacKeyRing::single_from_base64(key),
                (None, None) => Err(crate::crypto::CryptoError::InvalidKey(format!(
                    "{} has no {name}",
                    path.display()
                ))),
            };
        return Ok(Keys {
            data: KeyRing::parse(&file.data_keys)?,
            blind_index: BlindIndexKeys::new(ring_of(
                &file.blind_index_keys,
                &file.blind_index_key,
                "blind_index_keys",
            )?),
            codes: CodeHasher::new(ring_of(
                &file.code_hmac_keys,
                &file.code_hmac_key,
                "code_hmac_keys",
            )?),
            signing,
        });
    }
    let keys = Keys::generate()?;
    let file = DevKeyFile {
        data_keys: keys.data.to_spec(),
        blind_index_keys: Some(keys.blind_index.ring().to_spec()),
        blind_index_key: None,
        code_hmac_keys: Some(keys.codes.ring().to_spec()),
        code_hmac_key: None,
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
        "generated development keys; never use these in production (set DATA_KEYS, BLIND_INDEX_KEYS, CODE_HMAC_KEYS, SIGNING_KEYS)"
    );
    Ok(keys)
}

/// Which ring `keys rotate` adds a key to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingName {
    /// `DATA_KEYS`, the master keys; then `keys rewrap`.
    Data,
    /// `BLIND_INDEX_KEYS`; then `keys reindex`.
    BlindIndex,
    /// `CODE_HMAC_KEYS`; nothing to run: old MACs verify under their own key.
    Codes,
}

impl RingName {
    /// The variable that holds the ring.
    pub fn variable(self) -> &'static str {
        match self {
            Self::Data => "DATA_KEYS",
            Self::BlindIndex => "BLIND_INDEX_KEYS",
            Self::Codes => "CODE_HMAC_KEYS",
        }
    }

    /// The older one-key variable that also holds this ring, if any.
    pub fn single_variable(self) -> Option<&'static str> {
        match self {
            Self::Data => None,
            Self::BlindIndex => Some("BLIND_INDEX_KEY"),
            Self::Codes => Some("CODE_HMAC_KEY"),
        }
    }

    /// Reads the ring from its variable's value (`single`: the one-key form).
    pub fn parse(self, value: &str, single: bool) -> anyhow::Result<KeyRing> {
        Ok(match (self, single) {
            (Self::Data, _) => KeyRing::parse(value)?,
            (_, false) => MacKeyRing::parse(value)?.key_ring().clone(),
            (_, true) => MacKeyRing::single_from_base64(value)?.key_ring().clone(),
        })
    }

    /// `ring` with a fresh key, numbered one above the highest id, as its
    /// current key; every old key stays. Checks the id still fits where
    /// this ring's ids are stored.
    pub fn rotate(self, ring: &KeyRing) -> anyhow::Result<KeyRing> {
        let next = rotated(ring)?;
        if self != Self::Data {
            MacKeyRing::new(next.clone())?;
        }
        Ok(next)
    }
}

/// `keys rotate`: the ring with a fresh key, numbered one above the
/// highest id, as its new primary; every old key stays (it still unwraps
/// until `keys rewrap` has run).
pub fn rotated(ring: &KeyRing) -> anyhow::Result<KeyRing> {
    Ok(ring.with_new_primary()?)
}

/// `keys rotate` in development: rotates `which` ring in
/// `$DATA_DIR/dev-keys.json` (created if missing); returns the new id.
pub fn rotate_dev_keys(data_dir: &Path, which: RingName) -> anyhow::Result<u32> {
    let keys = load_or_create_dev_keys(data_dir)?;
    let path = data_dir.join("dev-keys.json");
    let raw = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut file: DevKeyFile = serde_json::from_slice(&raw)?;
    let current = match which {
        RingName::Data => keys.data.clone(),
        RingName::BlindIndex => keys.blind_index.ring().key_ring().clone(),
        RingName::Codes => keys.codes.ring().key_ring().clone(),
    };
    let ring = which.rotate(&current)?;
    match which {
        RingName::Data => file.data_keys = ring.to_spec(),
        RingName::BlindIndex => {
            file.blind_index_keys = Some(ring.to_spec());
            file.blind_index_key = None;
        }
        RingName::Codes => {
            file.code_hmac_keys = Some(ring.to_spec());
            file.code_hmac_key = None;
        }
    }
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
        assert_eq!(rotate_dev_keys(dir.path(), RingName::Data).unwrap(), 2);
        assert_eq!(rotate_dev_keys(dir.path(), RingName::Data).unwrap(), 3);
        assert_eq!(
            rotate_dev_keys(dir.path(), RingName::BlindIndex).unwrap(),
            2
        );
        assert_eq!(rotate_dev_keys(dir.path(), RingName::Codes).unwrap(), 2);
        let keys = load_or_create_dev_keys(dir.path()).unwrap();
        assert_eq!(keys.data.ids(), vec![3, 2, 1]);
        assert_eq!(keys.blind_index.ring().ids(), vec![2, 1]);
        assert_eq!(keys.codes.ring().ids(), vec![2, 1]);
    }

    #[test]
    fn a_development_key_file_from_before_rings_loads_its_single_keys_as_key_1() {
        let dir = tempfile::tempdir().unwrap();
        let index = crate::crypto::Key::generate().to_base64();
        let code = crate::crypto::Key::generate().to_base64();
        let file = serde_json::json!({
            "data_keys": KeyRing::generate_single(1).to_spec(),
            "blind_index_key": index,
            "code_hmac_key": code,
            "signing_keys_pem": SigningKeys::generate_pem().unwrap(),
        });
        fs::write(dir.path().join("dev-keys.json"), file.to_string()).unwrap();
        let keys = load_or_create_dev_keys(dir.path()).unwrap();
        assert_eq!(keys.blind_index.ring().to_spec(), format!("1:{index}"));
        assert_eq!(keys.codes.ring().to_spec(), format!("1:{code}"));
        // Rotating writes the ring form, and the old key stays as key 1.
        rotate_dev_keys(dir.path(), RingName::BlindIndex).unwrap();
        let keys = load_or_create_dev_keys(dir.path()).unwrap();
        assert!(keys
            .blind_index
            .ring()
            .to_spec()
            .ends_with(&format!(",1:{index}")));
    }

    #[test]
    fn index_and_code_rings_refuse_ids_beyond_a_smallint() {
        let ring = KeyRing::parse(&format!(
            "32767:{}",
            crate::crypto::Key::generate().to_base64()
        ))
        .unwrap();
        assert!(RingName::BlindIndex.rotate(&ring).is_err());
        assert!(RingName::Codes.rotate(&ring).is_err());
        assert_eq!(RingName::Data.rotate(&ring).unwrap().primary_id(), 32768);
    }
}

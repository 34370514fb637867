//! The platform verifiers, built once at start-up from configuration and
//! held by `AppState` (this file imports no feature and not the state, so
//! the state can hold it).

use super::{apple, play};
use crate::config::{AppAttestEnvironment, AttestationSettings};
use secrecy::ExposeSecret;

/// The platform verifiers, built once at start-up from configuration.
pub struct Verifiers {
    pub apple: Option<apple::AppleAttestConfig>,
    pub play: Option<PlayVerifier>,
}

pub struct PlayVerifier {
    pub config: play::PlayIntegrityConfig,
    pub decoder: Box<dyn play::IntegrityTokenDecoder>,
}

impl Verifiers {
    /// Reads the root certificate file and decodes the Play keys; a
    /// problem stops start-up, naming the variable (never the secret).
    pub fn from_settings(settings: &AttestationSettings) -> anyhow::Result<Self> {
        let apple = match &settings.apple {
            None => None,
            Some(a) => {
                let root = match &a.root_ca_file {
                    Some(path) => {
                        let pem = std::fs::read(path).map_err(|e| {
                            anyhow::anyhow!("APP_ATTEST_ROOT_CA_FILE {}: {e}", path.display())
                        })?;
                        apple::AppleAttestConfig::root_from_pem(&pem).map_err(|e| {
                            anyhow::anyhow!("APP_ATTEST_ROOT_CA_FILE {}: {e}", path.display())
                        })?
                    }
                    None => apple::AppleAttestConfig::apple_root()
                        .map_err(|e| anyhow::anyhow!("the bundled App Attest root: {e}"))?,
                };
                Some(apple::AppleAttestConfig {
                    roots: vec![root],
                    app_id: a.app_id.clone(),
                    environment: match a.environment {
                        AppAttestEnvironment::Production => apple::Environment::Production,
                        AppAttestEnvironment::Development => apple::Environment::Development,
                    },
                })
            }
        };
        let play = match &settings.play {
            None => None,
            Some(p) => {
                let config = play::PlayIntegrityConfig::from_base64(
                    p.decryption_key.expose_secret(),
                    &p.verification_key,
                    &p.package_name,
                )
                .map_err(|e| {
                    anyhow::anyhow!(
                        "PLAY_INTEGRITY_DECRYPTION_KEY / PLAY_INTEGRITY_VERIFICATION_KEY: {e}"
                    )
                })?;
                let decoder = Box::new(
                    play::LocalDecoder::new(&config)
                        .map_err(|e| anyhow::anyhow!("PLAY_INTEGRITY_VERIFICATION_KEY: {e}"))?,
                );
                Some(PlayVerifier { config, decoder })
            }
        };
        Ok(Self { apple, play })
    }
}

//! The platform verifiers, built once at start-up from configuration and
//! held by `AppState` (this file imports no feature and not the state, so
//! the state can hold it).

use super::{apple, play};
use crate::config::{
    AppAttestEnvironment, AttestationSettings, PlayIntegrityMode, PlayIntegritySettings,
};
use secrecy::ExposeSecret;

/// The Play Integrity verifier of either mode; a problem names the
/// variable, never the secret.
fn play_verifier(p: &PlayIntegritySettings) -> anyhow::Result<PlayVerifier> {
    match &p.mode {
        PlayIntegrityMode::Local {
            decryption_key,
            verification_key,
        } => {
            let config = play::PlayIntegrityConfig::from_base64(
                decryption_key.expose_secret(),
                verification_key,
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
            Ok(PlayVerifier { config, decoder })
        }
        PlayIntegrityMode::Google {
            service_account_file,
            api_base_url,
        } => {
            let config = play::PlayIntegrityConfig::verdict_only(&p.package_name)
                .map_err(|e| anyhow::anyhow!("PLAY_INTEGRITY_PACKAGE_NAME: {e}"))?;
            let key =
                zeroize::Zeroizing::new(std::fs::read(service_account_file).map_err(|e| {
                    anyhow::anyhow!(
                        "PLAY_INTEGRITY_SERVICE_ACCOUNT_FILE {}: {e}",
                        service_account_file.display()
                    )
                })?);
            let decoder = Box::new(
                play::google::GoogleDecoder::from_service_account_json(
                    &key,
                    &p.package_name,
                    api_base_url
                        .as_deref()
                        .unwrap_or(play::google::DEFAULT_API_BASE),
                )
                .map_err(|e| {
                    anyhow::anyhow!(
                        "PLAY_INTEGRITY_SERVICE_ACCOUNT_FILE {} / PLAY_INTEGRITY_PACKAGE_NAME: {e}",
                        service_account_file.display()
                    )
                })?,
            );
            Ok(PlayVerifier { config, decoder })
        }
    }
}

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
    /// Reads the root certificate file and decodes the Play keys (or, in
    /// Google mode, reads the service-account key file); a problem stops
    /// start-up, naming the variable (never the secret).
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
            Some(p) => Some(play_verifier(p)?),
        };
        Ok(Self { apple, play })
    }
}

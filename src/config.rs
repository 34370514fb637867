//! Typed configuration, read once from the environment and validated at start-up.
//!
//! Twelve-factor: every setting is an environment variable documented in
//! `.env.example`. Parsing collects *every* problem before failing, so an
//! operator fixing a broken deployment sees the whole list at once, one line
//! each. `APP_ENV=production` turns development conveniences (generated keys,
//! an embedded database, mail written to the log) into refusals.

use crate::{
    app_version::AppVersion,
    crypto::{BlindIndexKeys, CodeHasher, KeyRing, PepperKeys},
    tokens::SigningKeys,
};
use ipnet::IpNet;
use secrecy::SecretString;
use std::{fmt, net::SocketAddr, path::PathBuf, time::Duration};
use url::Url;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppEnv {
    Development,
    Production,
}

/// Where outgoing mail goes.
#[derive(Clone, Debug)]
pub enum MailTransportConfig {
    /// Written to the log (development only: it contains codes).
    Log,
    /// One JSON file per message in a folder (tests and local tools).
    File(PathBuf),
    /// A real SMTP relay: `smtps://` (implicit TLS), `smtp://…?tls=required`
    /// (STARTTLS), or plain `smtp://` (development mail catchers only;
    /// production refuses it).
    Smtp(SecretString),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

/// Keys given explicitly; what is missing is generated in development.
#[derive(Clone, Debug, Default)]
pub struct KeyConfig {
    pub data_keys: Option<KeyRing>,
    /// `BLIND_INDEX_KEYS` (a ring, current first), or the one-key
    /// `BLIND_INDEX_KEY` as a ring of key 1.
    pub blind_index_keys: Option<BlindIndexKeys>,
    /// `CODE_HMAC_KEYS` (a ring, current first), or the one-key
    /// `CODE_HMAC_KEY` as a ring of key 1.
    pub code_hmac_keys: Option<CodeHasher>,
    /// Ed25519 signing keys for access tokens, current first.
    pub signing_keys: Option<SigningKeys>,
    /// `PASSWORD_PEPPER_KEYS`: argon2's secret input for password hashes
    /// (optional; see `accounts::password`), current first.
    pub password_pepper_keys: Option<PepperKeys>,
}

/// Tokens, sessions and password hashing.
#[derive(Clone, Debug)]
pub struct AuthConfig {
    pub jwt_issuer: String,
    pub jwt_audience: String,
    pub access_token_ttl: chrono::Duration,
    pub refresh_idle_ttl: chrono::Duration,
    pub refresh_absolute_ttl: chrono::Duration,
    pub email_code_ttl: chrono::Duration,
    pub argon2: Argon2Params,
    pub password_hash_concurrency: usize,
    pub password_hash_queue: usize,
    /// How many nice steps the hashing threads run below the rest of the
    /// process (`PASSWORD_HASH_NICE`, 0 to 19, default 10).
    pub password_hash_nice: i32,
    /// The Pwned Passwords range API, when the optional check is on.
    pub breached_password_api: Option<Url>,
    /// How long after the last real sign-in a staff session may still use
    /// staff routes (`STAFF_MAX_AUTH_AGE_SECS`, default 12 h, 60 s to 24 h).
    pub staff_max_auth_age: chrono::Duration,
}

/// Native TLS on the API listener: `TLS_CERT_FILE` and `TLS_KEY_FILE` (PEM),
/// both or neither. See `crate::tls`.
#[derive(Clone, Debug)]
pub struct TlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// How often the files are checked for a new certificate
    /// (`TLS_RELOAD_POLL_SECS`); SIGHUP reloads at once.
    pub reload_poll: Duration,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub app_env: AppEnv,
    pub database_url: Option<SecretString>,
    /// The owner role's URL for migrations (`MIGRATION_DATABASE_URL`); when
    /// set, `DATABASE_URL`'s role needs only the `mobile_backend_app` grants.
    pub migration_database_url: Option<SecretString>,
    pub database_max_connections: u32,
    pub database_acquire_timeout: Duration,
    pub listen_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    /// Native TLS on the API listener; `None` serves plain HTTP (behind a
    /// TLS-terminating proxy).
    pub tls: Option<TlsConfig>,
    pub public_base_url: Url,
    pub data_dir: PathBuf,
    pub mail_transport: MailTransportConfig,
    pub mail_from: String,
    /// How often the mail sender looks for due messages when not woken.
    pub mail_poll_interval: Duration,
    /// How often each process re-reads the run-time client policy.
    pub client_policy_refresh: Duration,
    pub redis_url: Option<SecretString>,
    pub trusted_proxies: Vec<IpNet>,
    pub min_client_version_ios: Option<AppVersion>,
    pub min_client_version_android: Option<AppVersion>,
    pub store_url_ios: Option<Url>,
    pub store_url_android: Option<Url>,
    pub request_timeout: Duration,
    /// After SIGTERM/SIGINT, how long `/readyz` answers 503 while the
    /// service keeps serving (with `Connection: close`) before the listener
    /// closes (`SHUTDOWN_GRACE_SECS`, 0..=60, default 5).
    pub shutdown_grace: Duration,
    /// After the listener closes, how long in-flight requests may finish
    /// (`SHUTDOWN_TIMEOUT_SECS`, 0..=600, default 30).
    pub shutdown_timeout: Duration,
    pub log_format: LogFormat,
    pub keys: KeyConfig,
    pub auth: AuthConfig,
    /// The issuer shown in authenticator apps.
    pub mfa_issuer: String,
    /// Quotas per rate-limit class (defaults in [`Class::default_quota`]).
    pub rate_limits: std::collections::HashMap<Class, Quota>,
    /// Requests served at once; beyond it, 503 with `Retry-After`.
    pub max_concurrent_requests: usize,
    /// Prefix of every Redis key, so several deployments can share a Redis.
    pub redis_key_prefix: String,
    /// How Redis failures are contained (`REDIS_TIMEOUT_MS`,
    /// `REDIS_BREAKER_FAILURES`, `REDIS_PROBE_INTERVAL_MS`).
    pub redis_faults: RedisFaults,
    /// How long audit rows are kept (`AUDIT_RETENTION_DAYS`, default 365).
    pub audit_retention: chrono::Duration,
    /// How long an account may stay unverified before it is deleted
    /// (`UNVERIFIED_ACCOUNT_TTL_HOURS`, default 24, 1 to 720).
    pub unverified_account_ttl: chrono::Duration,
    /// Where security alerts are POSTed as JSON, if anywhere.
    pub alert_webhook_url: Option<Url>,
    /// Thresholds of the failed-login spike rules.
    pub alert_thresholds: SpikeThresholds,
    /// A trusted proxy's country header (e.g. `cf-ipcountry`), lower-case.
    pub geo_country_header: Option<String>,
    /// Distinct public profiles one user may view per window before an alert.
    pub alert_profile_views: Quota,
    /// IPv6 clients are counted per prefix of this length in per-IP rate
    /// limits and the login soft lock (`RATE_LIMIT_IPV6_PREFIX`, 32..=128).
    pub rate_limit_ipv6_prefix: u8,
    /// The one forwarding header believed from a trusted proxy
    /// (`TRUSTED_PROXY_HEADER`).
    pub trusted_proxy_header: ProxyHeader,
    /// Slow-client and connection limits of the API listener.
    pub listener: ListenerLimits,
    /// Devices one user may register (`MAX_DEVICES_PER_USER`).
    pub max_devices_per_user: i64,
    /// Device-bound sessions (RFC 9449 DPoP), see `crate::dpop`.
    pub dpop: DpopConfig,
    /// App attestation: the policy and each platform's settings.
    pub attestation: AttestationSettings,
}

/// Which sign-ins must bind their session to a device key (`DPOP_POLICY`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DpopPolicy {
    /// A proof binds the session; without one the session is a bearer one.
    #[default]
    Optional,
    /// Support and admin accounts must sign in with a proof.
    Staff,
    /// Every sign-in must carry a proof.
    Required,
}

impl DpopPolicy {
    fn parse(s: &str) -> Result<Self, String> {
        match s {
            "optional" => Ok(Self::Optional),
            "staff" => Ok(Self::Staff),
            "required" => Ok(Self::Required),
            _ => Err("expected `optional`, `staff` or `required`".into()),
        }
    }
}

/// DPoP proof checking (see `crate::dpop`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DpopConfig {
    /// `DPOP_POLICY`, default `optional`.
    pub policy: DpopPolicy,
    /// How old a proof's `iat` may be (`DPOP_MAX_AGE_SECS`, 5..=300,
    /// default 60); also how long its `jti` is remembered.
    pub max_age_secs: i64,
    /// Whether proofs must carry a server nonce (`DPOP_NONCE`, default false).
    pub nonce: bool,
}

impl Default for DpopConfig {
    fn default() -> Self {
        Self {
            policy: DpopPolicy::Optional,
            max_age_secs: 60,
            nonce: false,
        }
    }
}

/// What sign-up and sign-in ask of the app's attestation
/// (`ATTESTATION_POLICY`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttestationPolicy {
    /// Not looked at (the default).
    Off,
    /// A sign-up or sign-in whose device key is not attested is served and
    /// raises an `attestation_missing` alert.
    Report,
    /// ... is refused with 403 `attestation_required`.
    Require,
}

/// Apple App Attest's environment (`APP_ATTEST_ENVIRONMENT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppAttestEnvironment {
    Production,
    Development,
}

#[derive(Clone, Debug)]
pub struct AppleAttestSettings {
    /// `APP_ATTEST_APP_ID`: the team id, a dot and the bundle id.
    pub app_id: String,
    pub environment: AppAttestEnvironment,
    /// `APP_ATTEST_ROOT_CA_FILE`: a PEM root that replaces Apple's bundled
    /// App Attest root (tests, or a root Apple rotates to).
    pub root_ca_file: Option<PathBuf>,
}

#[derive(Clone, Debug)]
pub struct PlayIntegritySettings {
    /// `PLAY_INTEGRITY_PACKAGE_NAME`.
    pub package_name: String,
    /// `PLAY_INTEGRITY_MODE`: who decodes the tokens.
    pub mode: PlayIntegrityMode,
}

/// `PLAY_INTEGRITY_MODE`.
#[derive(Clone, Debug)]
pub enum PlayIntegrityMode {
    /// `local` (the default): decrypt and verify here with the Play Console keys.
    Local {
        /// `PLAY_INTEGRITY_DECRYPTION_KEY`: base64 of the AES-256 key.
        decryption_key: SecretString,
        /// `PLAY_INTEGRITY_VERIFICATION_KEY`: base64 DER SubjectPublicKeyInfo.
        verification_key: String,
    },
    /// `google`: send each token to Google's `decodeIntegrityToken`.
    Google {
        /// `PLAY_INTEGRITY_SERVICE_ACCOUNT_FILE`: the service account's JSON key.
        service_account_file: PathBuf,
        /// `PLAY_INTEGRITY_API_BASE_URL` (testing only): replaces
        /// `https://playintegrity.googleapis.com` when set.
        api_base_url: Option<String>,
    },
}

#[derive(Clone, Debug)]
pub struct AttestationSettings {
    pub policy: AttestationPolicy,
    /// Set when `APP_ATTEST_APP_ID` is: iOS attestation is offered.
    pub apple: Option<AppleAttestSettings>,
    /// Set when `PLAY_INTEGRITY_*` are (the package name and the two keys,
    /// or in Google mode the service-account file): Android attestation is
    /// offered.
    pub play: Option<PlayIntegritySettings>,
}

/// Limits of the API listener, plain or TLS (see `crate::listener`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenerLimits {
    /// A connection must deliver complete request headers within this
    /// (`HEADER_READ_TIMEOUT_SECS`, 1..=300, default 10).
    pub header_read_timeout: Duration,
    /// A keep-alive connection with no request and no traffic is closed
    /// after this (`IDLE_TIMEOUT_SECS`, 1..=3600, default 60).
    pub idle_timeout: Duration,
    /// Connections served at once; more wait in the accept backlog
    /// (`MAX_CONNECTIONS`, 1..=1000000, default 4096).
    pub max_connections: usize,
    /// Request headers larger than this in total are refused with 431
    /// problem+json (`MAX_HEADER_BYTES`, 4096..=65536, default 32768);
    /// counted as in HTTP/2's header list size: per header, the name's and
    /// the value's bytes plus 32.
    pub max_header_bytes: usize,
    /// Request targets (path and query, or the absolute URI) longer than
    /// this are refused with 414 problem+json (`MAX_URI_BYTES`,
    /// 1024..=32768, default 8192).
    pub max_uri_bytes: usize,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 4096,
            max_header_bytes: 32 * 1024,
            max_uri_bytes: 8 * 1024,
        }
    }
}

/// Every problem found, one per line.
#[derive(Debug)]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid configuration:")?;
        for p in &self.problems {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads the process environment (after loading `.env` in development).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Parses configuration from any lookup function, so tests can build a
    /// `Config` without touching the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut r = Reader {
            lookup: &lookup,
            problems: Vec::new(),
        };
        let app_env = match r.get("APP_ENV").as_deref() {
            None | Some("development") => AppEnv::Development,
            Some("production") => AppEnv::Production,
            Some(other) => {
                r.problem(format!(
                    "APP_ENV must be `development` or `production`, not `{other}`"
                ));
                AppEnv::Development
            }
        };
        let prod = app_env == AppEnv::Production;

        let database_url = r.get("DATABASE_URL").map(SecretString::from);
        let listen_addr = r.parse_or("LISTEN_ADDR", SocketAddr::from(([127, 0, 0, 1], 8080)));
        let metrics_addr = r.parse_or("METRICS_ADDR", SocketAddr::from(([127, 0, 0, 1], 9090)));
        let tls = match (r.get("TLS_CERT_FILE"), r.get("TLS_KEY_FILE")) {
            (Some(cert), Some(key)) => Some(TlsConfig {
                cert_file: PathBuf::from(cert),
                key_file: PathBuf::from(key),
                reload_poll: Duration::from_secs(r.ranged("TLS_RELOAD_POLL_SECS", 5, 1..=3600)),
            }),
            (None, None) => None,
            (Some(_), None) | (None, Some(_)) => {
                r.problem(
                    "TLS_CERT_FILE and TLS_KEY_FILE go together: set both for native TLS, \
                     or neither for plain HTTP",
                );
                None
            }
        };
        let public_base_url = match r.get("PUBLIC_BASE_URL") {
            Some(raw) => match Url::parse(&raw) {
                Ok(u) => Some(u),
                Err(e) => {
                    r.problem(format!("PUBLIC_BASE_URL is not a URL: {e}"));
                    None
                }
            },
            None => None,
        };
        // Without PUBLIC_BASE_URL (development), links point at the listener.
        let base_url = match public_base_url.clone() {
            Some(u) => u,
            None => match Url::parse(&format!(
                "{}://{listen_addr}/",
                if tls.is_some() { "https" } else { "http" }
            )) {
                Ok(u) => u,
                Err(e) => {
                    r.problem(format!("LISTEN_ADDR does not form a base URL: {e}"));
                    return Err(ConfigError {
                        problems: r.problems,
                    });
                }
            },
        };
        let mail_transport = match r.get("MAIL_TRANSPORT").as_deref() {
            None | Some("log") => MailTransportConfig::Log,
            Some(s) if s.starts_with("file:") => {
                MailTransportConfig::File(PathBuf::from(&s["file:".len()..]))
            }
            Some(s) if s.starts_with("smtp://") || s.starts_with("smtps://") => {
                MailTransportConfig::Smtp(SecretString::from(s.to_owned()))
            }
            Some(_) => {
                r.problem("MAIL_TRANSPORT must be `log`, `file:<dir>`, `smtp://…` or `smtps://…`");
                MailTransportConfig::Log
            }
        };
        let trusted_proxies = r
            .get("TRUSTED_PROXIES")
            .map(|raw| parse_cidrs(&raw, &mut r.problems))
            .unwrap_or_default();
        let keys = KeyConfig {
            data_keys: r.parse_with("DATA_KEYS", |s| {
                KeyRing::parse(s).map_err(|e| e.to_string())
            }),
            blind_index_keys: r.ring_or_single(
                "BLIND_INDEX_KEYS",
                "BLIND_INDEX_KEY",
                BlindIndexKeys::parse,
                BlindIndexKeys::single_from_base64,
            ),
            code_hmac_keys: r.ring_or_single(
                "CODE_HMAC_KEYS",
                "CODE_HMAC_KEY",
                CodeHasher::parse,
                CodeHasher::single_from_base64,
            ),
            signing_keys: r.parse_with("SIGNING_KEYS", |s| {
                SigningKeys::parse(s).map_err(|e| e.to_string())
            }),
            password_pepper_keys: r.parse_with("PASSWORD_PEPPER_KEYS", |s| {
                PepperKeys::parse(s).map_err(|e| e.to_string())
            }),
        };
        let default_argon2 = Argon2Params::default();
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        let auth = AuthConfig {
            jwt_issuer: r
                .get("JWT_ISSUER")
                .unwrap_or_else(|| base_url.as_str().trim_end_matches('/').to_owned()),
            jwt_audience: r
                .get("JWT_AUDIENCE")
                .unwrap_or_else(|| "mobile-backend".into()),
            access_token_ttl: r.duration("ACCESS_TOKEN_TTL_SECS", 600, 1),
            refresh_idle_ttl: r.duration("REFRESH_IDLE_DAYS", 30, 86_400),
            refresh_absolute_ttl: chrono::Duration::days(r.ranged(
                "REFRESH_ABSOLUTE_DAYS",
                90,
                1..=3650,
            )),
            email_code_ttl: chrono::Duration::minutes(15),
            argon2: Argon2Params {
                memory_kib: r.ranged(
                    "ARGON2_MEMORY_KIB",
                    default_argon2.memory_kib,
                    1024..=4_194_304,
                ),
                iterations: r.ranged("ARGON2_ITERATIONS", default_argon2.iterations, 1..=64),
                parallelism: r.ranged("ARGON2_PARALLELISM", default_argon2.parallelism, 1..=64),
            },
            password_hash_concurrency: r.ranged(
                "PASSWORD_HASH_CONCURRENCY",
                cores.min(1024),
                1..=1024,
            ),
            password_hash_queue: r.ranged("PASSWORD_HASH_QUEUE", 64, 0..=100_000),
            password_hash_nice: r.ranged("PASSWORD_HASH_NICE", 10, 0..=19),
            breached_password_api: if r.parse_or("PWNED_PASSWORDS_CHECK", false) {
                r.parse_with("PWNED_PASSWORDS_URL", parse_url)
                    .or_else(|| Url::parse("https://api.pwnedpasswords.com/").ok())
            } else {
                None
            },
            staff_max_auth_age: r.duration("STAFF_MAX_AUTH_AGE_SECS", 43_200, 1),
        };
        if auth.staff_max_auth_age < chrono::Duration::seconds(60)
            || auth.staff_max_auth_age > chrono::Duration::hours(24)
        {
            r.problem("STAFF_MAX_AUTH_AGE_SECS must be between 60 and 86400");
        }
        if auth.access_token_ttl < chrono::Duration::seconds(60)
            || auth.access_token_ttl > chrono::Duration::hours(1)
        {
            r.problem("ACCESS_TOKEN_TTL_SECS must be between 60 and 3600");
        }
        if auth.refresh_idle_ttl <= chrono::Duration::zero()
            || auth.refresh_idle_ttl > auth.refresh_absolute_ttl
        {
            r.problem("REFRESH_IDLE_DAYS must be at least 1 and at most REFRESH_ABSOLUTE_DAYS");
        }
        let config = Config {
            app_env,
            database_url,
            migration_database_url: r.get("MIGRATION_DATABASE_URL").map(SecretString::from),
            database_max_connections: r.ranged("DATABASE_MAX_CONNECTIONS", 10, 1..=1000),
            // 2 s: a phone waits this long before each refusal (503
            // `database_unavailable`) when the pool is exhausted; see
            // docs/operations.md, "PostgreSQL faults".
            database_acquire_timeout: Duration::from_secs(r.ranged(
                "DATABASE_ACQUIRE_TIMEOUT_SECS",
                2,
                1..=30,
            )),
            listen_addr,
            metrics_addr,
            tls,
            public_base_url: base_url,
            data_dir: PathBuf::from(r.get("DATA_DIR").unwrap_or_else(|| ".data".into())),
            mail_transport,
            mail_from: r
                .get("MAIL_FROM")
                .unwrap_or_else(|| "Mobile Backend <no-reply@localhost>".into()),
            mail_poll_interval: Duration::from_secs(r.ranged("MAIL_POLL_SECS", 5, 1..=86_400)),
            client_policy_refresh: Duration::from_secs(r.ranged(
                "CLIENT_POLICY_REFRESH_SECS",
                10,
                1..=3600,
            )),
            redis_url: r.get("REDIS_URL").map(SecretString::from),
            trusted_proxies,
            min_client_version_ios: r.parse_with("MIN_CLIENT_VERSION_IOS", parse_version),
            min_client_version_android: r.parse_with("MIN_CLIENT_VERSION_ANDROID", parse_version),
            store_url_ios: r.parse_with("CLIENT_STORE_URL_IOS", parse_url),
            store_url_android: r.parse_with("CLIENT_STORE_URL_ANDROID", parse_url),
            request_timeout: Duration::from_secs(r.ranged("REQUEST_TIMEOUT_SECS", 15, 1..=300)),
            shutdown_grace: Duration::from_secs(r.ranged("SHUTDOWN_GRACE_SECS", 5, 0..=60)),
            shutdown_timeout: Duration::from_secs(r.ranged("SHUTDOWN_TIMEOUT_SECS", 30, 0..=600)),
            log_format: match r.get("LOG_FORMAT").as_deref() {
                Some("json") => LogFormat::Json,
                Some("pretty") => LogFormat::Pretty,
                None if prod => LogFormat::Json,
                None => LogFormat::Pretty,
                Some(_) => {
                    r.problem("LOG_FORMAT must be `json` or `pretty`");
                    LogFormat::Json
                }
            },
            keys,
            auth,
            mfa_issuer: r
                .get("MFA_ISSUER")
                .unwrap_or_else(|| "Mobile Backend".into()),
            rate_limits: Class::ALL
                .into_iter()
                .map(|class| {
                    let quota = r
                        .parse_with(class.env_var(), |s| {
                            parse_quota(s).map_err(|e| format!("{e} (e.g. 20/60)"))
                        })
                        .unwrap_or_else(|| class.default_quota());
                    (class, quota)
                })
                .collect(),
            max_concurrent_requests: r.ranged("MAX_CONCURRENT_REQUESTS", 512, 1..=1_000_000),
            redis_key_prefix: r
                .get("REDIS_KEY_PREFIX")
                .unwrap_or_else(|| "mobile-backend".into()),
            redis_faults: RedisFaults {
                timeout: Duration::from_millis(r.ranged("REDIS_TIMEOUT_MS", 50, 1..=10_000)),
                breaker_failures: r.ranged("REDIS_BREAKER_FAILURES", 3, 1..=100),
                probe_interval: Duration::from_millis(r.ranged(
                    "REDIS_PROBE_INTERVAL_MS",
                    500,
                    10..=60_000,
                )),
            },
            audit_retention: chrono::Duration::days(r.ranged(
                "AUDIT_RETENTION_DAYS",
                365,
                1..=3650,
            )),
            unverified_account_ttl: {
                let hours: i64 = r.parse_or("UNVERIFIED_ACCOUNT_TTL_HOURS", 24);
                if !(1..=720).contains(&hours) {
                    r.problem("UNVERIFIED_ACCOUNT_TTL_HOURS must be between 1 and 720");
                }
                chrono::Duration::hours(hours.clamp(1, 720))
            },
            alert_webhook_url: r.parse_with("ALERT_WEBHOOK_URL", parse_url),
            alert_thresholds: {
                let d = SpikeThresholds::default();
                let mut q = |name: &str, default| {
                    r.parse_with(name, |s| {
                        parse_quota(s).map_err(|e| format!("{e} (e.g. 10/900)"))
                    })
                    .unwrap_or(default)
                };
                SpikeThresholds {
                    per_account: q("ALERT_FAILED_LOGINS_ACCOUNT", d.per_account),
                    per_ip: q("ALERT_FAILED_LOGINS_IP", d.per_ip),
                    global: q("ALERT_FAILED_LOGINS_GLOBAL", d.global),
                }
            },
            geo_country_header: r.get("GEO_COUNTRY_HEADER").map(|h| h.to_ascii_lowercase()),
            alert_profile_views: r
                .parse_with("ALERT_PROFILE_VIEWS", |s| {
                    parse_quota(s).map_err(|e| format!("{e} (e.g. 50/300)"))
                })
                .unwrap_or(Quota::per_seconds(50, 300)),
            rate_limit_ipv6_prefix: r.ranged("RATE_LIMIT_IPV6_PREFIX", 64, 32..=128),
            trusted_proxy_header: r
                .parse_with("TRUSTED_PROXY_HEADER", |s| {
                    ProxyHeader::parse(s)
                        .ok_or_else(|| "expected `x-forwarded-for` or `forwarded`".to_owned())
                })
                .unwrap_or_default(),
            listener: ListenerLimits {
                header_read_timeout: Duration::from_secs(r.ranged(
                    "HEADER_READ_TIMEOUT_SECS",
                    10,
                    1..=300,
                )),
                idle_timeout: Duration::from_secs(r.ranged("IDLE_TIMEOUT_SECS", 60, 1..=3600)),
                max_connections: r.ranged("MAX_CONNECTIONS", 4096, 1..=1_000_000),
                max_header_bytes: r.ranged("MAX_HEADER_BYTES", 32 * 1024, 4096..=65_536),
                max_uri_bytes: r.ranged("MAX_URI_BYTES", 8 * 1024, 1024..=32_768),
            },
            max_devices_per_user: r.ranged("MAX_DEVICES_PER_USER", 20, 1..=100),
            dpop: DpopConfig {
                policy: r
                    .parse_with("DPOP_POLICY", DpopPolicy::parse)
                    .unwrap_or_default(),
                max_age_secs: r.ranged("DPOP_MAX_AGE_SECS", 60, 5..=300),
                nonce: r.parse_or("DPOP_NONCE", false),
            },
            attestation: attestation_settings(&mut r),
        };
        if prod {
            production_checks(&config, public_base_url.is_some(), &mut r.problems);
        }
        if r.problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError {
                problems: r.problems,
            })
        }
    }

    pub fn is_production(&self) -> bool {
        self.app_env == AppEnv::Production
    }
}

/// What production refuses: anything missing, and every development default
/// that would be unsafe facing the internet.
fn production_checks(c: &Config, has_public_url: bool, problems: &mut Vec<String>) {
    let mut need = |ok: bool, msg: &str| {
        if !ok {
            problems.push(msg.to_owned());
        }
    };
    need(
        c.database_url.is_some(),
        "DATABASE_URL is required in production (the embedded database is for development only)",
    );
    need(has_public_url, "PUBLIC_BASE_URL is required in production");
    if has_public_url {
        let host = c.public_base_url.host_str().unwrap_or("");
        need(
            c.public_base_url.scheme() == "https",
            "PUBLIC_BASE_URL must use https in production",
        );
        need(
            !matches!(
                host,
                "localhost" | "127.0.0.1" | "::1" | "[::1]" | "0.0.0.0"
            ),
            "PUBLIC_BASE_URL must not point at localhost in production",
        );
    }
    need(
        c.keys.data_keys.is_some(),
        "DATA_KEYS is required in production (generate with `mobile-backend keys generate`)",
    );
    need(
        c.keys.blind_index_keys.is_some(),
        "BLIND_INDEX_KEYS (or the one-key BLIND_INDEX_KEY) is required in production",
    );
    need(
        c.keys.code_hmac_keys.is_some(),
        "CODE_HMAC_KEYS (or the one-key CODE_HMAC_KEY) is required in production",
    );
    need(
        c.keys.signing_keys.is_some(),
        "SIGNING_KEYS is required in production (generate with `mobile-backend keys generate-signing`)",
    );
    let a = &c.auth.argon2;
    let owasp = Argon2Params::default();
    need(
        a.memory_kib >= owasp.memory_kib && a.iterations >= owasp.iterations && a.parallelism >= 1,
        "ARGON2_* must be at least the OWASP minimum (19456 KiB, 2 iterations, 1 lane) in production",
    );
    need(
        matches!(c.mail_transport, MailTransportConfig::Smtp(_)),
        "MAIL_TRANSPORT must be smtp:// or smtps:// in production (log and file transports expose codes)",
    );
    if let MailTransportConfig::Smtp(url) = &c.mail_transport {
        use secrecy::ExposeSecret;
        let encrypted = Url::parse(url.expose_secret()).is_ok_and(|u| {
            u.scheme() == "smtps" || u.query_pairs().any(|(k, v)| k == "tls" && v == "required")
        });
        need(
            encrypted,
            "MAIL_TRANSPORT must encrypt in production: use smtps://… or smtp://…?tls=required",
        );
    }
    need(
        !c.mail_from.contains("@localhost"),
        "MAIL_FROM must be a real sender address in production",
    );
}

/// `ATTESTATION_POLICY`, `APP_ATTEST_*` and `PLAY_INTEGRITY_*`. A policy
/// other than `off` needs at least one platform configured, or no app
/// could ever pass it.
fn attestation_settings(r: &mut Reader<'_>) -> AttestationSettings {
    let policy = match r.get("ATTESTATION_POLICY").as_deref() {
        None | Some("off") => AttestationPolicy::Off,
        Some("report") => AttestationPolicy::Report,
        Some("require") => AttestationPolicy::Require,
        Some(_) => {
            r.problem("ATTESTATION_POLICY must be `off`, `report` or `require`");
            AttestationPolicy::Off
        }
    };
    let environment = match r.get("APP_ATTEST_ENVIRONMENT").as_deref() {
        None | Some("production") => AppAttestEnvironment::Production,
        Some("development") => AppAttestEnvironment::Development,
        Some(_) => {
            r.problem("APP_ATTEST_ENVIRONMENT must be `production` or `development`");
            AppAttestEnvironment::Production
        }
    };
    let root_ca_file = r.get("APP_ATTEST_ROOT_CA_FILE").map(PathBuf::from);
    let apple = match r.get("APP_ATTEST_APP_ID") {
        Some(app_id) => {
            let valid = app_id.split_once('.').is_some_and(|(team, bundle)| {
                team.len() == 10
                    && team
                        .bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
                    && !bundle.is_empty()
                    && bundle.len() <= 155
                    && bundle
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
            });
            if !valid {
                r.problem(
                    "APP_ATTEST_APP_ID must be the 10-character team id, a dot and the bundle id \
                     (e.g. `ABCDE12345.com.example.app`)",
                );
            }
            Some(AppleAttestSettings {
                app_id,
                environment,
                root_ca_file,
            })
        }
        None => {
            if root_ca_file.is_some() || r.get("APP_ATTEST_ENVIRONMENT").is_some() {
                r.problem(
                    "APP_ATTEST_ROOT_CA_FILE and APP_ATTEST_ENVIRONMENT need APP_ATTEST_APP_ID",
                );
            }
            None
        }
    };
    let play = play_integrity_settings(r);
    if policy != AttestationPolicy::Off && apple.is_none() && play.is_none() {
        r.problem(
            "ATTESTATION_POLICY needs App Attest (APP_ATTEST_APP_ID) or Play Integrity \
             (PLAY_INTEGRITY_*) configured",
        );
    }
    AttestationSettings {
        policy,
        apple,
        play,
    }
}

/// `PLAY_INTEGRITY_*`: the package name and, by `PLAY_INTEGRITY_MODE`,
/// either the two Play Console keys (`local`) or a service-account key file
/// (`google`), never both.
fn play_integrity_settings(r: &mut Reader<'_>) -> Option<PlayIntegritySettings> {
    let package = r.get("PLAY_INTEGRITY_PACKAGE_NAME");
    let decryption_key = r.get("PLAY_INTEGRITY_DECRYPTION_KEY");
    let verification_key = r.get("PLAY_INTEGRITY_VERIFICATION_KEY");
    let service_account_file = r.get("PLAY_INTEGRITY_SERVICE_ACCOUNT_FILE");
    let api_base_url = r.get("PLAY_INTEGRITY_API_BASE_URL");
    match r.get("PLAY_INTEGRITY_MODE").as_deref() {
        None | Some("local") => {
            if service_account_file.is_some() || api_base_url.is_some() {
                r.problem(
                    "PLAY_INTEGRITY_SERVICE_ACCOUNT_FILE and PLAY_INTEGRITY_API_BASE_URL need \
                     PLAY_INTEGRITY_MODE=google",
                );
            }
            match (package, decryption_key, verification_key) {
                (Some(package_name), Some(decryption_key), Some(verification_key)) => {
                    Some(PlayIntegritySettings {
                        package_name,
                        mode: PlayIntegrityMode::Local {
                            decryption_key: SecretString::from(decryption_key),
                            verification_key,
                        },
                    })
                }
                (None, None, None) => None,
                _ => {
                    r.problem(
                        "PLAY_INTEGRITY_PACKAGE_NAME, PLAY_INTEGRITY_DECRYPTION_KEY and \
                         PLAY_INTEGRITY_VERIFICATION_KEY go together: set all three or none",
                    );
                    None
                }
            }
        }
        Some("google") => {
            if decryption_key.is_some() || verification_key.is_some() {
                r.problem(
                    "PLAY_INTEGRITY_MODE=google does not use PLAY_INTEGRITY_DECRYPTION_KEY or \
                     PLAY_INTEGRITY_VERIFICATION_KEY: unset them",
                );
            }
            match (package, service_account_file) {
                (Some(package_name), Some(file)) => Some(PlayIntegritySettings {
                    package_name,
                    mode: PlayIntegrityMode::Google {
                        service_account_file: PathBuf::from(file),
                        api_base_url,
                    },
                }),
                _ => {
                    r.problem(
                        "PLAY_INTEGRITY_MODE=google needs PLAY_INTEGRITY_PACKAGE_NAME and \
                         PLAY_INTEGRITY_SERVICE_ACCOUNT_FILE",
                    );
                    None
                }
            }
        }
        Some(_) => {
            r.problem("PLAY_INTEGRITY_MODE must be `local` or `google`");
            None
        }
    }
}

struct Reader<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    problems: Vec<String>,
}

impl Reader<'_> {
    /// A set, non-blank variable.
    fn get(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    fn problem(&mut self, msg: impl Into<String>) {
        self.problems.push(msg.into());
    }

    fn parse_or<T: std::str::FromStr>(&mut self, name: &str, default: T) -> T {
        match self.get(name) {
            None => default,
            Some(raw) => match raw.parse() {
                Ok(v) => v,
                Err(_) => {
                    self.problem(format!("{name} has an invalid value `{raw}`"));
                    default
                }
            },
        }
    }

    /// A duration given as a count of `unit_secs`, refusing values too large
    /// to represent (chrono would panic on them).
    fn duration(&mut self, name: &str, default: i64, unit_secs: i64) -> chrono::Duration {
        let count: i64 = self.parse_or(name, default);
        match count
            .checked_mul(unit_secs)
            .filter(|s| *s <= 10 * 365 * 86_400)
            .and_then(chrono::Duration::try_seconds)
        {
            Some(d) => d,
            None => {
                self.problem(format!("{name} is out of range"));
                chrono::Duration::seconds(default * unit_secs)
            }
        }
    }

    /// A number within `range`; anything else is a problem naming the
    /// variable and the range, and the default stands in.
    fn ranged<T>(&mut self, name: &str, default: T, range: std::ops::RangeInclusive<T>) -> T
    where
        T: std::str::FromStr + PartialOrd + fmt::Display + Copy,
    {
        let raw = self.get(name);
        match raw.as_deref().map(str::parse::<T>) {
            None => default,
            Some(Ok(v)) if range.contains(&v) => v,
            Some(_) => {
                self.problem(format!(
                    "{name} must be a whole number from {} to {}",
                    range.start(),
                    range.end()
                ));
                default
            }
        }
    }

    /// A key ring given as `ring_name` (`id:base64,…`, current first) or,
    /// for deployments from before rings, as `single_name` (one bare key,
    /// which becomes key 1). Both at once is ambiguous, so it is refused
    /// in every environment.
    fn ring_or_single<T>(
        &mut self,
        ring_name: &str,
        single_name: &str,
        parse_ring: fn(&str) -> Result<T, crate::crypto::CryptoError>,
        parse_single: fn(&str) -> Result<T, crate::crypto::CryptoError>,
    ) -> Option<T> {
        if self.get(ring_name).is_some() && self.get(single_name).is_some() {
            self.problem(format!(
                "{ring_name} and {single_name} are both set: keep only {ring_name} \
                 ({single_name} is its one-key form, key id 1)"
            ));
            return None;
        }
        match self.get(ring_name) {
            Some(_) => self.parse_with(ring_name, |s| parse_ring(s).map_err(|e| e.to_string())),
            None => self.parse_with(single_name, |s| parse_single(s).map_err(|e| e.to_string())),
        }
    }

    /// Parses with a function whose error text must never echo the value
    /// (several of these are secrets).
    fn parse_with<T>(
        &mut self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let raw = self.get(name)?;
        match parse(&raw) {
            Ok(v) => Some(v),
            Err(e) => {
                self.problem(format!("{name} is invalid: {e}"));
                None
            }
        }
    }
}

/// The grammar of `X-Client-Version` ([`AppVersion`]): `2`, `2.3`, `2.3.0`,
/// `2.3.0-beta.1`.
fn parse_version(s: &str) -> Result<AppVersion, String> {
    AppVersion::parse(s).map_err(|e| e.to_string())
}

fn parse_url(s: &str) -> Result<Url, String> {
    Url::parse(s).map_err(|e| e.to_string())
}

fn parse_cidrs(raw: &str, problems: &mut Vec<String>) -> Vec<IpNet> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .filter_map(|s| {
            // A bare address means exactly that host.
            let parsed = s
                .parse::<IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from));
            match parsed {
                Ok(net) => Some(net),
                Err(_) => {
                    problems.push(format!(
                        "TRUSTED_PROXIES: `{s}` is not a CIDR or an IP address"
                    ));
                    None
                }
            }
        })
        .collect()
}

/// Argon2id cost parameters; recorded in every PHC string, so raising them
/// later does not break existing hashes (see `accounts::password::Verified::needs_rehash`).
/// Not `Copy`, so config code may `.clone()` it without a clippy warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Argon2Params {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for Argon2Params {
    /// OWASP Password Storage Cheat Sheet minimum for argon2id.
    fn default() -> Self {
        Self {
            memory_kib: 19_456,
            iterations: 2,
            parallelism: 1,
        }
    }
}

/// `limit` events per `window_ms`: a rate-limit quota (bursts up to
/// `limit`, see `rate_limit::gcra`) or an alert threshold. A plain value
/// here, so that configuration names no feature; `rate_limit` re-exports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    pub limit: u32,
    pub window_ms: i64,
}

impl Quota {
    pub fn per_seconds(limit: u32, window_secs: i64) -> Self {
        Self {
            limit: limit.max(1),
            window_ms: window_secs.max(1) * 1000,
        }
    }
}

/// The longest quota window, in seconds (a day).
pub const MAX_QUOTA_WINDOW_SECS: i64 = 86_400;
/// The highest quota rate, per second per key: the limiter represents
/// every quota up to it exactly (`rate_limit::gcra`).
pub const MAX_QUOTA_PER_SEC: u64 = 1_000_000;

/// Parses `LIMIT/WINDOW_SECS`, e.g. `20/60`: `WINDOW_SECS` from 1 to
/// 86400, `LIMIT` from 1 to 1,000,000 per second of the window (and at
/// most 4,294,967,295). The error names the range, never echoes the value.
pub fn parse_quota(s: &str) -> Result<Quota, String> {
    let shape = || "expected LIMIT/WINDOW_SECS, two whole numbers".to_owned();
    let (limit, window) = s.split_once('/').ok_or_else(shape)?;
    let limit: u64 = limit.trim().parse().map_err(|_| shape())?;
    let window: i64 = window.trim().parse().map_err(|_| shape())?;
    if !(1..=MAX_QUOTA_WINDOW_SECS).contains(&window) {
        return Err(format!(
            "WINDOW_SECS must be from 1 to {MAX_QUOTA_WINDOW_SECS}"
        ));
    }
    let max = (MAX_QUOTA_PER_SEC * window as u64).min(u64::from(u32::MAX));
    match u32::try_from(limit) {
        Ok(l) if l >= 1 && u64::from(l) <= max => Ok(Quota::per_seconds(l, window)),
        _ => Err(format!(
            "LIMIT must be from 1 to {max} for a {window} s window \
             (at most {MAX_QUOTA_PER_SEC} per second)"
        )),
    }
}

/// How Redis failures are contained (`rate_limit::breaker`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RedisFaults {
    /// The deadline of every Redis call, connecting included.
    pub timeout: Duration,
    /// Consecutive failures (errors or timeouts) that open the breaker.
    pub breaker_failures: u32,
    /// How often one background probe tries Redis while the breaker is open.
    pub probe_interval: Duration,
}

impl Default for RedisFaults {
    fn default() -> Self {
        Self {
            timeout: Duration::from_millis(50),
            breaker_failures: 3,
            probe_interval: Duration::from_millis(500),
        }
    }
}

/// A class of endpoint with its own rate-limit quota, its variable and its
/// default. Which routes belong to a class, and which classes fail closed,
/// is the limiter's policy (`rate_limit::policy`, which re-exports this).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    /// Every route that checks a password or a code: sign-in, sign-up,
    /// codes and recovery, and the signed-in routes that take the current
    /// password or a code. Per client IP.
    Credentials,
    /// The same endpoints per account (the email's blind index), so one
    /// address cannot be hammered from many IPs.
    CredentialsAccount,
    /// Wrong passwords per (account, IP): the soft lock. The owner signing
    /// in from another network is not affected.
    LoginFailures,
    /// Refreshing tokens, per client IP.
    Refresh,
    /// Every other `GET`, per user (a valid access token) or client IP.
    Reads,
    /// Every other operation, per user or client IP.
    Writes,
}

impl Class {
    pub const ALL: [Class; 6] = [
        Self::Credentials,
        Self::CredentialsAccount,
        Self::LoginFailures,
        Self::Refresh,
        Self::Reads,
        Self::Writes,
    ];

    /// The policy name in `RateLimit-Policy` / `RateLimit` headers, and in
    /// the spec's `x-rate-limit-class`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Credentials => "credentials",
            Self::CredentialsAccount => "credentials_account",
            Self::LoginFailures => "login_failures",
            Self::Refresh => "refresh",
            Self::Reads => "reads",
            Self::Writes => "writes",
        }
    }

    /// The variable that overrides the default, as `LIMIT/WINDOW_SECS`.
    pub fn env_var(self) -> &'static str {
        match self {
            Self::Credentials => "RATE_LIMIT_CREDENTIALS",
            Self::CredentialsAccount => "RATE_LIMIT_CREDENTIALS_ACCOUNT",
            Self::LoginFailures => "RATE_LIMIT_LOGIN_FAILURES",
            Self::Refresh => "RATE_LIMIT_REFRESH",
            Self::Reads => "RATE_LIMIT_READS",
            Self::Writes => "RATE_LIMIT_WRITES",
        }
    }

    /// Strict where a guess is worth something, generous for reads.
    pub fn default_quota(self) -> Quota {
        match self {
            Self::Credentials => Quota::per_seconds(20, 60),
            Self::CredentialsAccount => Quota::per_seconds(10, 300),
            Self::LoginFailures => Quota::per_seconds(5, 900),
            Self::Refresh => Quota::per_seconds(30, 60),
            Self::Reads => Quota::per_seconds(300, 60),
            Self::Writes => Quota::per_seconds(60, 60),
        }
    }
}

/// Which forwarding header a trusted proxy sets (`TRUSTED_PROXY_HEADER`);
/// `http::client_ip` reads it and re-exports this.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProxyHeader {
    /// `X-Forwarded-For: client, proxy1` (the default).
    #[default]
    XForwardedFor,
    /// `Forwarded: for=client, for=proxy1` (RFC 7239).
    Forwarded,
}

impl ProxyHeader {
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "x-forwarded-for" => Some(Self::XForwardedFor),
            "forwarded" => Some(Self::Forwarded),
            _ => None,
        }
    }
}

/// Thresholds of the failed-login spike rules (`LIMIT/WINDOW_SECS`); see
/// `alerts::rules`.
#[derive(Clone, Copy, Debug)]
pub struct SpikeThresholds {
    pub per_account: Quota,
    pub per_ip: Quota,
    pub global: Quota,
}

impl Default for SpikeThresholds {
    fn default() -> Self {
        Self {
            per_account: Quota::per_seconds(10, 900),
            per_ip: Quota::per_seconds(20, 900),
            global: Quota::per_seconds(200, 300),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn quotas_parse_and_nonsense_is_refused() {
        assert_eq!(parse_quota("20/60"), Ok(Quota::per_seconds(20, 60)));
        assert!(parse_quota("0/60").is_err());
        assert!(parse_quota("5/0").is_err());
        assert!(parse_quota("five").is_err());
    }

    #[test]
    fn quotas_up_to_a_million_per_second_are_accepted_and_more_is_refused_by_name() {
        assert_eq!(
            parse_quota("1000000/1"),
            Ok(Quota::per_seconds(1_000_000, 1))
        );
        assert_eq!(parse_quota("1001/1"), Ok(Quota::per_seconds(1_001, 1)));
        assert_eq!(
            parse_quota("60000000/60"),
            Ok(Quota::per_seconds(60_000_000, 60))
        );
        assert!(parse_quota("1000001/1")
            .unwrap_err()
            .contains("1 to 1000000"));
        assert!(parse_quota("5/86401").unwrap_err().contains("1 to 86400"));
        // More than a u32 is out of range, not wrapped.
        assert!(parse_quota("4294967296/86400").is_err());
        let err = parse(&[("RATE_LIMIT_READS", "2000000/1")]).unwrap_err();
        let text = err.problems.join("\n");
        assert!(text.contains("RATE_LIMIT_READS"), "{text}");
        assert!(text.contains("1 to 1000000"), "{text}");
        let err = parse(&[("ALERT_FAILED_LOGINS_IP", "1/0")]).unwrap_err();
        assert!(err.problems.join("\n").contains("ALERT_FAILED_LOGINS_IP"));
    }

    #[test]
    fn redis_fault_settings_have_defaults_and_refuse_out_of_range_values_by_name() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.redis_faults, RedisFaults::default());
        for (name, bad) in [
            ("REDIS_TIMEOUT_MS", "0"),
            ("REDIS_TIMEOUT_MS", "10001"),
            ("REDIS_BREAKER_FAILURES", "0"),
            ("REDIS_PROBE_INTERVAL_MS", "5"),
        ] {
            let err = parse(&[(name, bad)]).unwrap_err();
            let text = err.problems.join("\n");
            assert!(text.contains(name) && text.contains(" to "), "{text}");
        }
    }

    fn parse(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn development_needs_nothing_configured() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.app_env, AppEnv::Development);
        assert_eq!(c.listen_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(c.metrics_addr.to_string(), "127.0.0.1:9090");
        assert!(matches!(c.mail_transport, MailTransportConfig::Log));
        assert!(c.database_url.is_none());
    }

    #[test]
    fn production_with_nothing_set_names_every_missing_setting() {
        let err = parse(&[("APP_ENV", "production")]).unwrap_err();
        let all = err.problems.join("\n");
        for name in [
            "DATABASE_URL",
            "PUBLIC_BASE_URL",
            "DATA_KEYS",
            "BLIND_INDEX_KEYS",
            "CODE_HMAC_KEYS",
            "SIGNING_KEYS",
            "MAIL_TRANSPORT",
            "MAIL_FROM",
        ] {
            assert!(all.contains(name), "{name} not named in:\n{all}");
        }
    }

    #[test]
    fn the_pepper_is_an_optional_ring_and_a_bad_one_is_named_not_echoed() {
        let k = |byte: u8| crate::crypto::Key::from_bytes([byte; 32]).to_base64();
        assert!(parse(&[]).unwrap().keys.password_pepper_keys.is_none());
        let c = parse(&[("PASSWORD_PEPPER_KEYS", &format!("2:{},1:{}", k(2), k(1)))]).unwrap();
        let pepper = c.keys.password_pepper_keys.unwrap();
        assert_eq!((pepper.current_id(), pepper.ids()), (Some(2), vec![2, 1]));
        let c = parse(&[("PASSWORD_PEPPER_KEYS", &format!("-,1:{}", k(1)))]).unwrap();
        assert_eq!(c.keys.password_pepper_keys.unwrap().current_id(), None);
        let short = "c2hvcnQta2V5LXNlY3JldA==";
        let err = parse(&[("PASSWORD_PEPPER_KEYS", &format!("1:{short}"))])
            .unwrap_err()
            .to_string();
        assert!(err.contains("PASSWORD_PEPPER_KEYS is invalid"), "{err}");
        assert!(!err.contains(short), "{err}");
    }

    #[test]
    fn index_and_code_keys_are_rings_and_the_one_key_form_is_key_1() {
        let k = |byte: u8| crate::crypto::Key::from_bytes([byte; 32]).to_base64();
        let ring = format!("2:{},1:{}", k(2), k(1));
        let c = parse(&[("BLIND_INDEX_KEYS", &ring), ("CODE_HMAC_KEYS", &ring)]).unwrap();
        assert_eq!(c.keys.blind_index_keys.unwrap().ring().ids(), vec![2, 1]);
        assert_eq!(c.keys.code_hmac_keys.unwrap().ring().ids(), vec![2, 1]);
        let c = parse(&[("BLIND_INDEX_KEY", &k(1)), ("CODE_HMAC_KEY", &k(1))]).unwrap();
        assert_eq!(c.keys.blind_index_keys.unwrap().ring().ids(), vec![1]);
        assert_eq!(c.keys.code_hmac_keys.unwrap().ring().ids(), vec![1]);
        // Both forms at once: refused, in any environment, naming both.
        for env in ["development", "production"] {
            let err = parse(&[
                ("APP_ENV", env),
                ("BLIND_INDEX_KEYS", &ring),
                ("BLIND_INDEX_KEY", &k(1)),
                ("CODE_HMAC_KEYS", &ring),
                ("CODE_HMAC_KEY", &k(1)),
            ])
            .unwrap_err();
            let all = err.problems.join("\n");
            for both in [
                "BLIND_INDEX_KEYS and BLIND_INDEX_KEY are both set",
                "CODE_HMAC_KEYS and CODE_HMAC_KEY are both set",
            ] {
                assert!(all.contains(both), "{env}: {all}");
            }
            assert!(
                !all.contains(&k(1)[..12]) && !all.contains(&k(2)[..12]),
                "{all}"
            );
        }
        // A bad ring names the variable and the entry, never the key.
        let err =
            parse(&[("BLIND_INDEX_KEYS", &format!("1:{},40000:{}", k(1), k(3)))]).unwrap_err();
        assert_eq!(err.problems.len(), 1, "{:?}", err.problems);
        assert!(err.problems[0].starts_with("BLIND_INDEX_KEYS is invalid"));
        assert!(!err.problems[0].contains(&k(3)[..12]));
        // Production takes either form; neither is refused (see above).
        let base = [
            ("APP_ENV", "production"),
            ("PUBLIC_BASE_URL", "https://api.example.com"),
        ];
        for vars in [
            vec![
                ("BLIND_INDEX_KEYS", ring.as_str()),
                ("CODE_HMAC_KEYS", ring.as_str()),
            ],
            vec![
                ("BLIND_INDEX_KEY", k(1).as_str()),
                ("CODE_HMAC_KEY", k(1).as_str()),
            ],
        ] {
            let mut all = base.to_vec();
            all.extend(vars);
            let problems = parse(&all).err().map(|e| e.problems).unwrap_or_default();
            assert!(
                !problems
                    .iter()
                    .any(|p| p.contains("BLIND_INDEX") || p.contains("CODE_HMAC")),
                "{problems:?}"
            );
        }
    }

    #[test]
    fn production_refuses_a_plain_http_or_localhost_base_url() {
        let err = parse(&[
            ("APP_ENV", "production"),
            ("PUBLIC_BASE_URL", "http://localhost:8080"),
        ])
        .unwrap_err();
        let all = err.problems.join("\n");
        assert!(all.contains("https"));
        assert!(all.contains("localhost"));
    }

    #[test]
    fn production_refuses_smtp_without_tls_even_if_the_password_says_tls_required() {
        let base = [
            ("APP_ENV", "production"),
            ("PUBLIC_BASE_URL", "https://api.example.com"),
        ];
        for (url, ok) in [
            ("smtp://mail.example.com:25", false),
            ("smtp://user:tls=required@mail.example.com:25", false),
            ("smtp://mail.example.com:587?tls=required", true),
            ("smtps://mail.example.com:465", true),
        ] {
            let mut vars = base.to_vec();
            vars.push(("MAIL_TRANSPORT", url));
            let problems = parse(&vars).err().map(|e| e.problems).unwrap_or_default();
            let refused = problems.iter().any(|p| p.contains("must encrypt"));
            assert_eq!(refused, !ok, "{url}: {problems:?}");
        }
    }

    #[test]
    fn bad_values_are_reported_together_without_echoing_secrets() {
        let err = parse(&[
            ("LISTEN_ADDR", "nope"),
            ("TRUSTED_PROXIES", "10.0.0.0/8, banana"),
            ("MIN_CLIENT_VERSION_IOS", "2.x"),
            ("DATA_KEYS", "1:c2VjcmV0LXRvby1zaG9ydA=="),
        ])
        .unwrap_err();
        assert_eq!(err.problems.len(), 4, "{:?}", err.problems);
        assert!(!err.to_string().contains("c2VjcmV0LXRvby1zaG9ydA"));
    }

    #[test]
    fn absurd_durations_are_a_configuration_error_not_a_panic() {
        let err = parse(&[
            ("REFRESH_IDLE_DAYS", "9223372036854775807"),
            ("ACCESS_TOKEN_TTL_SECS", "-5"),
        ])
        .unwrap_err();
        assert!(
            err.problems.iter().any(|p| p.contains("REFRESH_IDLE_DAYS")),
            "{:?}",
            err.problems
        );
        assert!(
            err.problems
                .iter()
                .any(|p| p.contains("ACCESS_TOKEN_TTL_SECS")),
            "{:?}",
            err.problems
        );
    }

    #[test]
    fn the_unverified_account_ttl_is_bounded_and_named() {
        assert_eq!(
            parse(&[]).unwrap().unverified_account_ttl,
            chrono::Duration::hours(24)
        );
        assert_eq!(
            parse(&[("UNVERIFIED_ACCOUNT_TTL_HOURS", "720")])
                .unwrap()
                .unverified_account_ttl,
            chrono::Duration::hours(720)
        );
        for bad in ["0", "721", "-1", "9223372036854775807", "soon"] {
            let err = parse(&[("UNVERIFIED_ACCOUNT_TTL_HOURS", bad)]).unwrap_err();
            assert!(
                err.problems
                    .iter()
                    .any(|p| p.contains("UNVERIFIED_ACCOUNT_TTL_HOURS")),
                "{bad}: {:?}",
                err.problems
            );
        }
    }

    #[test]
    fn production_refuses_argon2_below_the_owasp_minimum() {
        let err = parse(&[("APP_ENV", "production"), ("ARGON2_MEMORY_KIB", "4096")]).unwrap_err();
        assert!(
            err.problems.iter().any(|p| p.contains("ARGON2")),
            "{:?}",
            err.problems
        );
    }

    #[test]
    fn trusted_proxies_accept_cidrs_and_bare_addresses() {
        let c = parse(&[("TRUSTED_PROXIES", "10.0.0.0/8,192.168.1.7, ::1")]).unwrap();
        assert_eq!(c.trusted_proxies.len(), 3);
        assert!(c.trusted_proxies[1].contains(&"192.168.1.7".parse::<std::net::IpAddr>().unwrap()));
    }

    #[test]
    fn network_limits_have_defaults_and_refuse_out_of_range_values_by_name() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.rate_limit_ipv6_prefix, 64);
        assert_eq!(c.listener, ListenerLimits::default());
        assert_eq!(c.max_devices_per_user, 20);
        assert_eq!(c.trusted_proxy_header, ProxyHeader::XForwardedFor);
        let c = parse(&[
            ("RATE_LIMIT_IPV6_PREFIX", "48"),
            ("TRUSTED_PROXY_HEADER", "Forwarded"),
            ("HEADER_READ_TIMEOUT_SECS", "300"),
            ("IDLE_TIMEOUT_SECS", "1"),
            ("MAX_CONNECTIONS", "1"),
            ("MAX_HEADER_BYTES", "4096"),
            ("MAX_URI_BYTES", "32768"),
            ("SHUTDOWN_GRACE_SECS", "0"),
            ("SHUTDOWN_TIMEOUT_SECS", "600"),
        ])
        .unwrap();
        assert_eq!(c.rate_limit_ipv6_prefix, 48);
        assert_eq!(c.trusted_proxy_header, ProxyHeader::Forwarded);
        assert_eq!(c.listener.header_read_timeout, Duration::from_secs(300));
        assert_eq!(c.listener.idle_timeout, Duration::from_secs(1));
        assert_eq!(c.listener.max_connections, 1);
        assert_eq!(c.listener.max_header_bytes, 4096);
        assert_eq!(c.listener.max_uri_bytes, 32_768);
        assert_eq!(c.shutdown_grace, Duration::ZERO);
        assert_eq!(c.shutdown_timeout, Duration::from_secs(600));
        let d = parse(&[]).unwrap();
        assert_eq!(d.shutdown_grace, Duration::from_secs(5));
        assert_eq!(d.shutdown_timeout, Duration::from_secs(30));
        for (name, bad) in [
            ("MAX_HEADER_BYTES", "4095"),
            ("MAX_HEADER_BYTES", "65537"),
            ("MAX_URI_BYTES", "1023"),
            ("MAX_URI_BYTES", "32769"),
            ("SHUTDOWN_GRACE_SECS", "61"),
            ("SHUTDOWN_GRACE_SECS", "-1"),
            ("SHUTDOWN_TIMEOUT_SECS", "601"),
            ("RATE_LIMIT_IPV6_PREFIX", "31"),
            ("RATE_LIMIT_IPV6_PREFIX", "129"),
            ("RATE_LIMIT_IPV6_PREFIX", "/64"),
            ("TRUSTED_PROXY_HEADER", "x-real-ip"),
            ("HEADER_READ_TIMEOUT_SECS", "0"),
            ("HEADER_READ_TIMEOUT_SECS", "301"),
            ("IDLE_TIMEOUT_SECS", "0"),
            ("IDLE_TIMEOUT_SECS", "3601"),
            ("MAX_CONNECTIONS", "0"),
            ("MAX_CONNECTIONS", "1000001"),
            ("MAX_DEVICES_PER_USER", "0"),
            ("MAX_DEVICES_PER_USER", "-3"),
            ("MAX_DEVICES_PER_USER", "101"),
        ] {
            let err = parse(&[(name, bad)]).unwrap_err();
            assert_eq!(err.problems.len(), 1, "{name}={bad}: {:?}", err.problems);
            assert!(err.problems[0].starts_with(name), "{:?}", err.problems);
        }
    }

    #[test]
    fn tls_needs_both_files_and_makes_the_default_base_url_https() {
        for one in ["TLS_CERT_FILE", "TLS_KEY_FILE"] {
            let err = parse(&[(one, "/etc/tls/x.pem")]).unwrap_err();
            assert!(
                err.problems.iter().any(|p| p.contains("go together")),
                "{one}: {:?}",
                err.problems
            );
        }
        let c = parse(&[
            ("TLS_CERT_FILE", "/etc/tls/cert.pem"),
            ("TLS_KEY_FILE", "/etc/tls/key.pem"),
        ])
        .unwrap();
        let tls = c.tls.unwrap();
        assert_eq!(tls.reload_poll, Duration::from_secs(5));
        assert_eq!(c.public_base_url.scheme(), "https");
        assert!(parse(&[]).unwrap().tls.is_none());
        let err = parse(&[
            ("TLS_CERT_FILE", "/c.pem"),
            ("TLS_KEY_FILE", "/k.pem"),
            ("TLS_RELOAD_POLL_SECS", "0"),
        ])
        .unwrap_err();
        assert!(err.problems[0].contains("TLS_RELOAD_POLL_SECS"));
    }

    #[test]
    fn every_numeric_setting_out_of_its_range_names_the_variable_and_the_range() {
        for (name, bad, range) in [
            ("DATABASE_ACQUIRE_TIMEOUT_SECS", "0", "from 1 to 30"),
            ("DATABASE_ACQUIRE_TIMEOUT_SECS", "31", "from 1 to 30"),
            ("DATABASE_MAX_CONNECTIONS", "0", "from 1 to 1000"),
            ("DATABASE_MAX_CONNECTIONS", "-1", "from 1 to 1000"),
            ("REQUEST_TIMEOUT_SECS", "0", "from 1 to 300"),
            ("REQUEST_TIMEOUT_SECS", "ten", "from 1 to 300"),
            ("MAIL_POLL_SECS", "0", "from 1 to 86400"),
            ("CLIENT_POLICY_REFRESH_SECS", "3601", "from 1 to 3600"),
            ("MAX_CONCURRENT_REQUESTS", "0", "from 1 to 1000000"),
            ("ARGON2_MEMORY_KIB", "8", "from 1024 to 4194304"),
            ("ARGON2_ITERATIONS", "0", "from 1 to 64"),
            ("ARGON2_PARALLELISM", "65", "from 1 to 64"),
            ("PASSWORD_HASH_CONCURRENCY", "0", "from 1 to 1024"),
            ("PASSWORD_HASH_QUEUE", "100001", "from 0 to 100000"),
            ("PASSWORD_HASH_NICE", "20", "from 0 to 19"),
            ("PASSWORD_HASH_NICE", "-1", "from 0 to 19"),
            ("AUDIT_RETENTION_DAYS", "0", "from 1 to 3650"),
            ("AUDIT_RETENTION_DAYS", "99999999999", "from 1 to 3650"),
            ("REFRESH_ABSOLUTE_DAYS", "3651", "from 1 to 3650"),
        ] {
            let err = parse(&[(name, bad)]).unwrap_err();
            assert!(
                err.problems
                    .iter()
                    .any(|p| p.starts_with(name) && p.contains(range)),
                "{name}={bad}: {:?}",
                err.problems
            );
        }
    }

    #[test]
    fn the_database_acquire_timeout_defaults_to_what_a_phone_can_wait() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.database_acquire_timeout, Duration::from_secs(2));
        let c = parse(&[("DATABASE_ACQUIRE_TIMEOUT_SECS", "5")]).unwrap();
        assert_eq!(c.database_acquire_timeout, Duration::from_secs(5));
    }
}

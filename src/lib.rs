//! mobile-backend: a secure account and profile API for mobile apps.
//!
//! Each module below is one concern; docs/architecture.md explains the
//! layout and the rules that hold everywhere.

/// The accounts core: the `users` row, roles, email, passwords, codes.
pub mod accounts;
/// Administration: users, roles, sessions, client policy, tiers, audit trail.
pub mod admin;
/// Security alerts: anomaly rules, webhook delivery, admin listing.
pub mod alerts;
/// An app's version as phones report it: the one grammar and order of
/// `X-Client-Version` and the minimum versions.
pub mod app_version;
/// App attestation (Apple App Attest, Play Integrity) bound to a device key.
pub mod attestation;
/// The audit trail: event catalogue and `record()` in the caller's transaction.
pub mod audit;
/// Sign-up, verification, sign-in and recovery flows, enumeration-safe.
pub mod auth;
/// Periodic background tasks and the one shutdown idiom they share.
pub mod background;
/// The service's clock, which tests move instead of sleeping.
pub mod clock;
/// Typed configuration from the environment, validated at start-up.
pub mod config;
/// Field encryption, blind indexes, key rings, secret hashing, randomness.
pub mod crypto;
/// Development only: a project-local PostgreSQL when no DATABASE_URL is set.
pub mod dev_db;
/// Devices: push registrations, a user-owned resource.
pub mod devices;
/// Device-bound sessions: DPoP proofs (RFC 9449), key thumbprints, replay cache.
pub mod dpop;
/// `ApiError`, the single error type, rendered as problem+json.
pub mod error;
/// Router, layers, extractors, headers, client-version gate, health.
pub mod http;
/// Key material from configuration, or generated for development.
pub mod keys;
/// The API listener: accept loop, slow-client timeouts, connection cap.
pub mod listener;
/// Transactional mail outbox, background sender and transports.
pub mod mail;
/// Multi-factor authentication: TOTP, recovery codes, step-up.
pub mod mfa;
/// Notes: the example user-owned resource a fork copies (owner-scoped
/// SQL, sealed fields, cursor pages, export, the owned-table registry).
pub mod notes;
/// Outbound HTTP: no redirects, bounded response bodies.
pub mod outbound;
/// The caller's own account: profile, email change, deletion, export.
pub mod profile;
/// Rate limits per class, IP, user and account, with progressive penalties.
pub mod rate_limit;
/// Users asking for a higher rate-limit tier (staff decide in `admin`).
pub mod rate_limit_requests;
/// Rotating the blind-index and code keys: `keys reindex`, usage per key.
pub mod reindex;
/// The id of the request being served, for errors, logs and audit rows.
pub mod request_scope;
/// Rotating the master data keys: `keys rewrap`, usage per master key.
pub mod rewrap;
/// Sessions, refresh-token rotation and reuse detection.
pub mod sessions;
/// Building and running the application with graceful shutdown.
pub mod startup;
/// `AppState`: pool, keys, clock, policies.
pub mod state;
/// Tracing and Prometheus metrics.
pub mod telemetry;
/// Native TLS (rustls, reload without restart) and the `tls-pins` command.
pub mod tls;
/// EdDSA access tokens: signing key ring, verification, JWKS.
pub mod tokens;
/// Per-user data keys wrapped by the master key: crypto-shredding, rewrap.
pub mod user_keys;

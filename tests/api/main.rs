//! The integration-test binary: the real server over HTTP against real
//! PostgreSQL, a fresh database per test. Modules are named for what they prove.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod accounts;
mod admin;
mod alerts;
mod at_rest;
mod attestation;
mod audit;
mod bad_input;
mod cli;
mod client_version;
mod db_faults;
mod devices;
mod dpop;
mod hardening_audit;
mod hardening_mfa;
mod hardening_network;
mod hardening_registration;
mod headers;
mod helpers;
mod key_rings;
mod limits;
mod mail;
mod metrics;
mod mfa;
mod notes;
mod notices;
mod openapi;
mod owned;
mod pepper;
mod profile;
mod rate_limit_requests;
mod rate_limits;
mod readiness;
mod refresh;
mod refresh_attacks;
mod review_attacks;
mod review_attacks_16;
mod rotation;
mod sessions;
mod sign_in_result;
mod storage;
mod timestamps;
mod tls;
mod tokens;

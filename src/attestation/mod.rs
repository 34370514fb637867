//! App attestation: proof that a request comes from the genuine app on a
//! genuine device (Apple App Attest, Google Play Integrity), bound to the
//! device key of a DPoP-bound session.

pub mod apple;
pub mod play;

//! Devices: push-notification registrations, a user-owned resource. Every
//! query filters by the owner in SQL (`db.rs`), so another user's device id
//! answers exactly like a missing one; the push token is sealed at rest
//! (with a blind index, so one phone registering twice refreshes its row)
//! and never returned.
//!
//! The example a fork copies for its own owned resource is
//! [`crate::notes`], which shows every verb.

pub mod db;
pub mod routes;

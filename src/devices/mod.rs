//! Devices: push-notification registrations, the example user-owned
//! resource. Every query filters by the owner in SQL (`db.rs`), so another
//! user's device id answers exactly like a missing one; the push token is
//! sealed at rest and never returned.
//!
//! A fork adds its own owned resource the same way: a table with a
//! `user_id` foreign key, queries that take the owner as a parameter, a
//! view type per audience, and a BOLA test (tests/api/devices.rs).

pub mod db;
pub mod routes;

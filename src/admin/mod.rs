//! Administration. For now: per-user rate-limit tiers and the audit-event
//! query (alerts live in `alerts/`); the rest of the admin surface (user
//! search, locking, client policy) arrives with profiles & administration.

pub mod audit_events;
pub mod routes;
pub mod users;

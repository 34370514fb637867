//! Administration. For now: per-user rate-limit tiers; the rest of the
//! admin surface (user search, locking, audit queries, client policy)
//! arrives with the profiles & administration feature.

pub mod routes;

//! Administration: user search and records (PII masked for support),
//! role and status changes with last-admin protection, revoking a user's
//! sessions, the run-time client policy, rate-limit tiers and users'
//! requests for a higher one, and the audit trail (alerts live in
//! `alerts/`). Every route needs a staff role and
//! aal2 (`RequireRole`), and every action is audited with actor and target.

pub mod accounts;
pub mod audit_events;
pub mod bootstrap;
pub mod client_policy;
pub mod rate_limit_requests;
pub mod routes;
pub mod users;

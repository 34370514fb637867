//! The catalogue of audit event types (`area.noun.verb`, matching the
//! `audit_events_event_type_format` constraint). Features add theirs here,
//! and SECURITY.md documents each one: when it fires and what it holds.

/// The service started and applied its migrations.
pub const SYSTEM_STARTED: &str = "system.service.started";

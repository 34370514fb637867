//! The service's notion of "now".
//!
//! Every expiry in this service (tokens, codes, lock-outs, mail back-off) is
//! computed from this clock and passed to SQL as a parameter, never from the
//! database's `now()`: tests move a manual clock forward instead of sleeping,
//! so time-based security rules are tested exactly and quickly.

use chrono::{DateTime, Duration, Utc};
use std::sync::{Arc, Mutex, PoisonError};

/// A cheaply clonable clock: the system clock in production, a manual one in tests.
#[derive(Clone, Debug)]
pub struct Clock(Arc<Source>);

#[derive(Debug)]
enum Source {
    System,
    Manual(Mutex<DateTime<Utc>>),
}

impl Clock {
    /// The wall clock.
    pub fn system() -> Self {
        Self(Arc::new(Source::System))
    }

    /// A clock that only moves when told to; clones share the same time.
    pub fn manual(start: DateTime<Utc>) -> Self {
        Self(Arc::new(Source::Manual(Mutex::new(start))))
    }

    /// The current instant, truncated to microseconds so a value written to
    /// Postgres (`timestamptz` has microsecond precision) reads back equal.
    pub fn now(&self) -> DateTime<Utc> {
        let now = match &*self.0 {
            Source::System => Utc::now(),
            Source::Manual(t) => *t.lock().unwrap_or_else(PoisonError::into_inner),
        };
        truncate_to_micros(now)
    }

    /// Moves a manual clock forward; a no-op on the system clock.
    pub fn advance(&self, by: Duration) {
        if let Source::Manual(t) = &*self.0 {
            let mut guard = t.lock().unwrap_or_else(PoisonError::into_inner);
            *guard += by;
        }
    }

    /// Whether this is a test clock.
    pub fn is_manual(&self) -> bool {
        matches!(&*self.0, Source::Manual(_))
    }
}

fn truncate_to_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    let micros = t.timestamp_micros();
    DateTime::from_timestamp_micros(micros).unwrap_or(t)
}

/// How every timestamp in a JSON response is written: RFC 3339 in UTC with
/// exactly three fractional digits, `2026-12-03T17:00:00.000Z`. A fixed
/// shape, because decoders on phones are strict: iOS's `.iso8601` date
/// strategy and `ISO8601DateFormatter` parse fractional seconds only when
/// told to, and then only when every value has them; chrono's default
/// writes none for a whole second and up to nine digits otherwise.
/// (Sub-millisecond digits are dropped, not rounded.)
pub fn rfc3339_millis(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// `#[serde(serialize_with = "crate::clock::millis")]` on a response's
/// `DateTime<Utc>` field: [`rfc3339_millis`].
pub fn millis<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339_millis(t))
}

/// [`millis`] for an `Option<DateTime<Utc>>` field (`None` is `null`).
pub fn millis_opt<S: serde::Serializer>(
    t: &Option<DateTime<Utc>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&rfc3339_millis(t)),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn response_timestamps_have_exactly_three_fractional_digits() {
        let whole = DateTime::parse_from_rfc3339("2026-12-03T17:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(rfc3339_millis(&whole), "2026-12-03T17:00:00.000Z");
        let micro = whole + Duration::microseconds(123_987);
        assert_eq!(rfc3339_millis(&micro), "2026-12-03T17:00:00.123Z");
        #[derive(serde::Serialize)]
        struct View {
            #[serde(serialize_with = "millis")]
            at: DateTime<Utc>,
            #[serde(serialize_with = "millis_opt")]
            maybe: Option<DateTime<Utc>>,
            #[serde(serialize_with = "millis_opt")]
            never: Option<DateTime<Utc>>,
        }
        let json = serde_json::to_string(&View {
            at: micro,
            maybe: Some(whole),
            never: None,
        })
        .unwrap();
        assert_eq!(
            json,
            r#"{"at":"2026-12-03T17:00:00.123Z","maybe":"2026-12-03T17:00:00.000Z","never":null}"#
        );
    }

    #[test]
    fn a_manual_clock_moves_only_when_advanced_and_clones_share_it() {
        let start = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let clock = Clock::manual(start);
        let other = clock.clone();
        assert_eq!(clock.now(), start);
        other.advance(Duration::seconds(90));
        assert_eq!(clock.now(), start + Duration::seconds(90));
        assert!(clock.is_manual());
    }

    #[test]
    fn the_system_clock_ignores_advance() {
        let clock = Clock::system();
        let before = clock.now();
        clock.advance(Duration::days(365));
        assert!(clock.now() - before < Duration::days(1));
    }
}

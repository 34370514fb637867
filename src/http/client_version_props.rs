//! Property tests of the client-version headers (`X-Client-Platform`,
//! `X-Client-Version`), which every `/v1` request may carry: whatever the
//! bytes, the parser answers without panicking, and a well-formed version
//! reads back as the numbers that were sent.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::client_version::{ClientVersion, Platform};
use axum::http::{HeaderMap, HeaderValue};
use proptest::prelude::*;

fn headers(platform: Option<&[u8]>, version: Option<&[u8]>) -> Option<HeaderMap> {
    let mut h = HeaderMap::new();
    if let Some(p) = platform {
        h.insert("x-client-platform", HeaderValue::from_bytes(p).ok()?);
    }
    if let Some(v) = version {
        h.insert("x-client-version", HeaderValue::from_bytes(v).ok()?);
    }
    Some(h)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_header_bytes_never_panic(
        platform in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
        version in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
    ) {
        if let Some(h) = headers(platform.as_deref(), version.as_deref()) {
            let _ = ClientVersion::from_headers(&h);
        }
    }

    #[test]
    fn a_version_reads_back_as_its_numbers(
        platform in prop::sample::select(vec![("ios", Platform::Ios), ("android", Platform::Android), ("web", Platform::Web)]),
        major in 0u64..1_000_000_000,
        minor in 0u64..1_000_000_000,
        patch in 0u64..1_000_000_000,
    ) {
        let version = format!("{major}.{minor}.{patch}");
        let h = headers(Some(platform.0.as_bytes()), Some(version.as_bytes())).unwrap();
        let parsed = ClientVersion::from_headers(&h).unwrap().unwrap();
        prop_assert_eq!(parsed.platform, platform.1);
        prop_assert_eq!(parsed.version.parts(), [major, minor, patch, 0]);
    }

    /// One to four numbers, leading zeros or not, and any tag: the numbers
    /// read back, missing ones as 0, and the text is kept as sent.
    #[test]
    fn one_to_four_parts_with_any_tag_read_back(
        parts in proptest::collection::vec(0u64..1000, 1..=4),
        zeros in 0usize..2,
        tag in prop_oneof![Just(String::new()), "-[0-9A-Za-z.-]{1,6}", "\\+[0-9A-Za-z.-]{1,6}", "-[a-z]{1,4}\\+[0-9]{1,4}"],
    ) {
        let text = parts
            .iter()
            .map(|n| format!("{}{n}", "0".repeat(zeros)))
            .collect::<Vec<_>>()
            .join(".")
            + &tag;
        let h = headers(Some(b"android"), Some(text.as_bytes())).unwrap();
        let parsed = ClientVersion::from_headers(&h).unwrap().unwrap();
        let mut expected = [0u64; 4];
        expected[..parts.len()].copy_from_slice(&parts);
        prop_assert_eq!(parsed.version.parts(), expected);
        prop_assert_eq!(parsed.version.as_str(), text.as_str());
    }

    /// The platform is exactly one of the spec's lower-case values.
    #[test]
    fn a_platform_in_another_case_is_refused(
        platform in prop::sample::select(vec!["iOS", "IOS", "Android", "ANDROID", "Web", "WEB"]),
    ) {
        let h = headers(Some(platform.as_bytes()), Some(b"1.2.3")).unwrap();
        prop_assert!(ClientVersion::from_headers(&h).is_err());
    }

    /// The gate reads a tagged or shortened version as its numbers.
    #[test]
    fn tags_and_missing_parts_do_not_change_the_order(
        major in 0u64..1000,
        minor in 0u64..1000,
        tail in prop_oneof!["-[0-9A-Za-z.]{1,8}", "\\+[0-9A-Za-z.]{1,8}"],
    ) {
        let short = format!("{major}.{minor}");
        let full = format!("{major}.{minor}.0");
        let tagged = format!("{full}{tail}");
        let read = |v: &str| {
            ClientVersion::from_headers(&headers(Some(b"ios"), Some(v.as_bytes())).unwrap())
                .unwrap()
                .unwrap()
                .version
        };
        prop_assert_eq!(read(&short), read(&full));
        prop_assert_eq!(read(&tagged), read(&full));
    }

    /// Letters first, an empty part, a fifth number: refused.
    #[test]
    fn garbage_versions_are_refused(
        major in 0u64..1000,
        bad in prop_oneof![
            "[a-zA-Z][0-9.]{0,6}",
            "[0-9]{1,3}\\.\\.[0-9]{1,3}",
            "[0-9]{1,3}\\.",
            "[0-9]\\.[0-9]\\.[0-9]\\.[0-9]\\.[0-9]",
            "[0-9]{1,3}[-+]",
            "[0-9]{1,3}-[a-z]{1,3}_[a-z]{1,3}",
        ],
    ) {
        let h = headers(Some(b"ios"), Some(bad.as_bytes())).unwrap();
        prop_assert!(ClientVersion::from_headers(&h).is_err(), "{bad:?}");
        let long = format!("{major}.0.0-{}", "a".repeat(40));
        let h = headers(Some(b"ios"), Some(long.as_bytes())).unwrap();
        prop_assert!(ClientVersion::from_headers(&h).is_err());
    }

    #[test]
    fn one_header_without_the_other_is_refused(value in "[a-z0-9.]{0,12}") {
        let only_platform = headers(Some(value.as_bytes()), None).unwrap();
        let only_version = headers(None, Some(value.as_bytes())).unwrap();
        prop_assert!(ClientVersion::from_headers(&only_platform).is_err());
        prop_assert!(ClientVersion::from_headers(&only_version).is_err());
    }
}

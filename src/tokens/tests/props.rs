//! Property tests of access-token parsing: whatever a client sends as a
//! bearer token, `verify` answers an error rather than panicking, and an
//! issued token survives only unaltered and whole.

use proptest::prelude::*;

use super::*;

/// Bounded so the whole block takes well under a second per property.
fn config() -> ProptestConfig {
    ProptestConfig::with_cases(128)
}

/// Strings shaped like a compact JWS (three base64url segments), so cases
/// get past the segment split and into the header and signature checks.
fn jws_like() -> impl Strategy<Value = String> {
    let segment =
        proptest::collection::vec(any::<u8>(), 0..96).prop_map(|b| URL_SAFE_NO_PAD.encode(b));
    (segment.clone(), segment.clone(), segment).prop_map(|(h, p, s)| format!("{h}.{p}.{s}"))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn verify_never_panics_on_arbitrary_text(token in any::<String>()) {
        let keys = ring(1);
        prop_assert!(keys.verify(&settings(), t0(), &token).is_err());
    }

    #[test]
    fn verify_never_panics_on_jws_shaped_input(token in jws_like()) {
        let keys = ring(1);
        prop_assert!(keys.verify(&settings(), t0(), &token).is_err());
    }

    #[test]
    fn a_forged_header_with_our_kid_is_refused(
        alg in prop_oneof![Just("EdDSA".to_owned()), Just("none".to_owned()), Just("HS256".to_owned()), ".*"],
        typ in prop_oneof![Just("at+jwt".to_owned()), Just("JWT".to_owned()), ".*"],
        signature in proptest::collection::vec(any::<u8>(), 0..80),
    ) {
        // A header the attacker controls, naming our key, over valid claims,
        // with a signature that is not ours: always refused.
        let keys = ring(1);
        let header = json!({ "alg": alg, "typ": typ, "kid": keys.current().kid() });
        let token = format!(
            "{}.{}.{}",
            b64(&header),
            b64(&claims_json()),
            URL_SAFE_NO_PAD.encode(signature)
        );
        prop_assert!(keys.verify(&settings(), t0(), &token).is_err());
    }

    #[test]
    fn issue_then_verify_round_trips(
        sub in any::<u128>(),
        sid in any::<u128>(),
        role in prop_oneof![Just("user"), Just("support"), Just("admin")],
        aal in prop_oneof![Just("aal1"), Just("aal2")],
        age in 0i64..600,
    ) {
        let keys = ring(2);
        let (sub, sid) = (Uuid::from_u128(sub), Uuid::from_u128(sid));
        let auth_time = t0() - TimeDelta::minutes(3);
        let (token, _) = keys
            .issue(&settings(), t0(), sub, sid, role, aal, &["pwd"], auth_time)
            .unwrap();
        let claims = keys
            .verify(&settings(), t0() + TimeDelta::seconds(age), &token)
            .unwrap();
        prop_assert_eq!(claims.sub, sub);
        prop_assert_eq!(claims.sid, sid);
        prop_assert_eq!(claims.role, role);
        prop_assert_eq!(claims.aal, aal);
        prop_assert_eq!(claims.auth_time, auth_time.timestamp());
    }

    #[test]
    fn any_altered_character_is_refused(index in any::<prop::sample::Index>(), replacement in any::<char>()) {
        let keys = ring(1);
        let token = issue(&keys);
        let at = index.index(token.len());
        let original = token[at..].chars().next().unwrap();
        prop_assume!(original != replacement);
        let mut forged = String::with_capacity(token.len() + 4);
        forged.push_str(&token[..at]);
        forged.push(replacement);
        forged.push_str(&token[at + original.len_utf8()..]);
        prop_assert!(keys.verify(&settings(), t0(), &forged).is_err());
    }

    #[test]
    fn any_truncation_or_extension_is_refused(index in any::<prop::sample::Index>(), tail in "[A-Za-z0-9_.-]{1,8}") {
        let keys = ring(1);
        let token = issue(&keys);
        let cut = index.index(token.len());
        prop_assert!(keys.verify(&settings(), t0(), &token[..cut]).is_err());
        let extended = format!("{token}{tail}");
        prop_assert!(keys.verify(&settings(), t0(), &extended).is_err());
    }
}

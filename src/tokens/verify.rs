//! Verifying an access token: every check of RFC 8725 §3 and RFC 9068 §4,
//! in an order where nothing the attacker controls chooses a key or an
//! algorithm.
//!
//! The threat is algorithm and key confusion: a verifier that lets the token
//! say how it should be checked. So the header is read here first, with only
//! the members we act on (`alg`, `typ`, `kid`, `crit`), and the token is
//! refused unless `alg` is exactly `EdDSA` before any key is touched. The key
//! is then looked up in our ring by `kid` and nowhere else: `jku`, `jwk`,
//! `x5u` and `x5c` are never read. Only then does jsonwebtoken verify the
//! signature (with the algorithm pinned again) and check `iss`/`aud`; the
//! time claims are checked here against the caller's `now`, because
//! jsonwebtoken would use the system clock.

use chrono::{DateTime, Utc};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{
    AccessClaims, SigningKeys, TokenError, TokenSettings, EXP_LEEWAY_SECS, MAX_IAT_SKEW_SECS,
    MAX_TOKEN_LEN, TOKEN_TYPE,
};

/// Claims that must be present. jsonwebtoken enforces the registered ones it
/// knows (`exp`, `iss`, `aud`, `sub`) and ignores the rest; `sid`, `iat` and
/// `jti` are enforced by [`AccessClaims`] having no optional fields.
const REQUIRED_CLAIMS: [&str; 7] = ["iss", "aud", "sub", "sid", "exp", "iat", "jti"];

/// The header members we act on. Values are kept as JSON so a wrong type
/// gets the right error (a numeric `kid` is an unknown key, not a parse
/// failure); serde refuses a member given twice, so `{"alg":"EdDSA",
/// "alg":"none"}` cannot mean one thing here and another in jsonwebtoken.
#[derive(Deserialize)]
struct PeekedHeader {
    alg: Option<Value>,
    typ: Option<Value>,
    kid: Option<Value>,
    crit: Option<Value>,
}

impl SigningKeys {
    /// Verifies an access token against the ring and `settings` at time
    /// `now`, returning its claims. Every failure should become the same 401.
    pub fn verify(
        &self,
        settings: &TokenSettings,
        now: DateTime<Utc>,
        token: &str,
    ) -> Result<AccessClaims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let digest = super::verified::digest(token);
        if let Some(seen) = self.verified.get(&digest) {
            // The exact bytes verified before: only what time (or the
            // settings) can change is checked again.
            if seen.claims.iss == settings.issuer && seen.claims.aud == settings.audience {
                check_times(&seen.claims, seen.nbf.as_ref(), now.timestamp())?;
                return Ok(seen.claims);
            }
        }
        let header = peek_header(token)?;

        // RFC 8725 §3.1: the algorithm is ours to choose, not the token's.
        if header.alg.as_ref().and_then(Value::as_str) != Some("EdDSA") {
            return Err(TokenError::UnsupportedAlgorithm);
        }
        if !is_access_token_type(header.typ.as_ref()) {
            return Err(TokenError::WrongType);
        }
        // RFC 7515 §4.1.11: we implement no extensions, so any `crit` header
        // names one we do not understand and the token must be rejected.
        if header.crit.is_some() {
            return Err(TokenError::Malformed);
        }
        let key = header
            .kid
            .as_ref()
            .and_then(Value::as_str)
            .and_then(|kid| self.find(kid))
            .ok_or(TokenError::UnknownKey)?;

        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_required_spec_claims(&REQUIRED_CLAIMS);
        validation.set_issuer(&[&settings.issuer]);
        validation.set_audience(&[&settings.audience]);
        // Time is checked below against the caller's clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;

        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.decoding, &validation)
            .map_err(|e| map_jwt_error(e.kind()))?;
        let nbf = data.claims.get("nbf").cloned();
        let claims: AccessClaims = serde_json::from_value(Value::Object(data.claims))
            .map_err(|_| TokenError::InvalidClaims)?;

        // jsonwebtoken checked these too, but also accepts an `aud` array
        // containing ours; our tokens carry exactly one audience.
        if claims.iss != settings.issuer || claims.aud != settings.audience {
            return Err(TokenError::InvalidClaims);
        }
        check_times(&claims, nbf.as_ref(), now.timestamp())?;
        self.verified.insert(
            digest,
            super::verified::Verified {
                claims: claims.clone(),
                nbf,
            },
            now.timestamp(),
        );
        Ok(claims)
    }
}

/// Decodes the protected header of a compact JWS (exactly three segments;
/// five would be a JWE, which we never issue).
fn peek_header(token: &str) -> Result<PeekedHeader, TokenError> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;

    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let json = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| TokenError::Malformed)?;
    serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)
}

/// RFC 9068 §4: `typ` must be `at+jwt` or `application/at+jwt`. Media types
/// are case-insensitive (RFC 7515 §4.1.9 and RFC 8725 §3.11 both say so), so
/// `AT+JWT` is accepted; `JWT`, a missing `typ` or anything else is not, so
/// an ID token or another JWT signed by the same key is never an access token.
fn is_access_token_type(typ: Option<&Value>) -> bool {
    let Some(typ) = typ.and_then(Value::as_str) else {
        return false;
    };
    let typ = typ.to_ascii_lowercase();
    typ.strip_prefix("application/").unwrap_or(&typ) == TOKEN_TYPE
}

/// `exp` with leeway, `iat` not in the future, and `nbf` if present.
fn check_times(claims: &AccessClaims, nbf: Option<&Value>, now: i64) -> Result<(), TokenError> {
    if now > claims.exp.saturating_add(EXP_LEEWAY_SECS) {
        return Err(TokenError::Expired);
    }
    if claims.iat > now.saturating_add(MAX_IAT_SKEW_SECS) || claims.exp < claims.iat {
        return Err(TokenError::InvalidClaims);
    }
    // We never issue `nbf`, but RFC 7519 §4.1.5 says one that is present
    // must be honoured.
    if let Some(nbf) = nbf {
        let nbf = nbf.as_i64().ok_or(TokenError::InvalidClaims)?;
        if nbf > now.saturating_add(EXP_LEEWAY_SECS) {
            return Err(TokenError::InvalidClaims);
        }
    }
    Ok(())
}

fn map_jwt_error(kind: &ErrorKind) -> TokenError {
    match kind {
        ErrorKind::InvalidSignature => TokenError::BadSignature,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::MissingAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::UnsupportedAlgorithm => TokenError::UnsupportedAlgorithm,
        ErrorKind::MissingRequiredClaim(_)
        | ErrorKind::InvalidClaimFormat(_)
        | ErrorKind::InvalidIssuer
        | ErrorKind::InvalidAudience
        | ErrorKind::InvalidSubject
        | ErrorKind::ExpiredSignature
        | ErrorKind::ImmatureSignature => TokenError::InvalidClaims,
        // Our own ring key refused by the crypto provider: a fault here, not
        // in the token (and impossible after the start-up self-test).
        ErrorKind::InvalidEddsaKey | ErrorKind::InvalidKeyFormat | ErrorKind::Provider(_) => {
            TokenError::Internal("the verification key was rejected".into())
        }
        _ => TokenError::Malformed,
    }
}

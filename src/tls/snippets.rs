//! The pinning snippets `tls-pins` prints: Android's
//! `network_security_config.xml` and the iOS `Info.plist` entry.
//!
//! Key decision: the host name is checked to be letters, digits, hyphens and
//! dots before it is pasted into XML, so no escaping is needed and nothing
//! a user types can change the document's structure.

use chrono::NaiveDate;
use std::fmt::Write as _;

/// A host name as both platforms expect it: letters, digits, hyphens and
/// dots (which also makes it safe to paste into XML).
fn valid_domain(domain: &str) -> bool {
    !domain.is_empty()
        && domain.len() <= 253
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// A pinned host: `*.example.com` becomes `example.com` with subdomains.
#[derive(Debug, PartialEq, Eq)]
pub struct PinnedDomain {
    pub name: String,
    pub include_subdomains: bool,
}

impl PinnedDomain {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let lower = raw.trim().to_ascii_lowercase();
        let (name, include_subdomains) = match lower.strip_prefix("*.") {
            Some(rest) => (rest.to_owned(), true),
            None => (lower, false),
        };
        if valid_domain(&name) {
            Ok(Self {
                name,
                include_subdomains,
            })
        } else {
            Err(format!("`{raw}` is not a host name"))
        }
    }
}

/// `res/xml/network_security_config.xml`.
pub fn android_snippet(domain: &PinnedDomain, pins: &[String], expiration: NaiveDate) -> String {
    let mut s = String::new();
    let _ = writeln!(s, r#"<?xml version="1.0" encoding="utf-8"?>"#);
    let _ = writeln!(s, "<network-security-config>");
    let _ = writeln!(
        s,
        r#"    <domain-config cleartextTrafficPermitted="false">"#
    );
    let _ = writeln!(
        s,
        r#"        <domain includeSubdomains="{}">{}</domain>"#,
        domain.include_subdomains, domain.name
    );
    let _ = writeln!(
        s,
        r#"        <pin-set expiration="{}">"#,
        expiration.format("%Y-%m-%d")
    );
    for pin in pins {
        let _ = writeln!(s, r#"            <pin digest="SHA-256">{pin}</pin>"#);
    }
    let _ = writeln!(s, "        </pin-set>");
    let _ = writeln!(s, "    </domain-config>");
    let _ = writeln!(s, "</network-security-config>");
    s
}

/// The `NSAppTransportSecurity` entry of `Info.plist` (iOS 14 and later).
pub fn ios_snippet(domain: &PinnedDomain, pins: &[String]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "<key>NSAppTransportSecurity</key>");
    let _ = writeln!(s, "<dict>");
    let _ = writeln!(s, "    <key>NSPinnedDomains</key>");
    let _ = writeln!(s, "    <dict>");
    let _ = writeln!(s, "        <key>{}</key>", domain.name);
    let _ = writeln!(s, "        <dict>");
    let _ = writeln!(s, "            <key>NSIncludesSubdomains</key>");
    let _ = writeln!(s, "            <{}/>", domain.include_subdomains);
    let _ = writeln!(s, "            <key>NSPinnedLeafIdentities</key>");
    let _ = writeln!(s, "            <array>");
    for pin in pins {
        let _ = writeln!(s, "                <dict>");
        let _ = writeln!(s, "                    <key>SPKI-SHA256-BASE64</key>");
        let _ = writeln!(s, "                    <string>{pin}</string>");
        let _ = writeln!(s, "                </dict>");
    }
    let _ = writeln!(s, "            </array>");
    let _ = writeln!(s, "        </dict>");
    let _ = writeln!(s, "    </dict>");
    let _ = writeln!(s, "</dict>");
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_host_names_and_wildcards_include_subdomains() {
        assert_eq!(
            PinnedDomain::parse("*.Example.com").unwrap(),
            PinnedDomain {
                name: "example.com".into(),
                include_subdomains: true
            }
        );
        for bad in ["", "a..b", "<x>.com", "exa mple.com", "a.com/"] {
            assert!(PinnedDomain::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn snippets_carry_every_pin_and_the_expiration() {
        let d = PinnedDomain::parse("api.example.com").unwrap();
        let pins = vec!["AAAA".to_owned(), "BBBB".to_owned()];
        let date = NaiveDate::from_ymd_opt(2027, 1, 31).unwrap();
        let android = android_snippet(&d, &pins, date);
        assert!(android.contains(r#"<pin-set expiration="2027-01-31">"#));
        assert!(android.contains(r#"<pin digest="SHA-256">AAAA</pin>"#));
        assert!(android.contains(r#"<pin digest="SHA-256">BBBB</pin>"#));
        let ios = ios_snippet(&d, &pins);
        assert!(ios.contains("<key>api.example.com</key>"));
        assert_eq!(ios.matches("<key>SPKI-SHA256-BASE64</key>").count(), 2);
    }
}

//! The client's IP address, for rate limits and audit rows, and the key a
//! client is counted under.
//!
//! Forwarding headers are client-controlled text: they are honoured only
//! when the socket peer is one of `TRUSTED_PROXIES`, and then only the one
//! header named by `TRUSTED_PROXY_HEADER` (`x-forwarded-for` by default, or
//! `forwarded`, RFC 7239). The other header is ignored entirely, so a client
//! cannot smuggle an address through the header the proxy does not rewrite.
//! We walk that header's list from the right (the entries our proxies
//! appended) and take the first address that is not itself a trusted proxy:
//! with one proxy, the right-most entry. Anything to the left of that could
//! have been written by the client and is ignored.
//!
//! IPv4-mapped IPv6 addresses (`::ffff:192.0.2.1`) are the IPv4 address.
//! For counting, one IPv6 host owns a whole prefix (a /64 by default,
//! `RATE_LIMIT_IPV6_PREFIX`), so [`rate_key`] names the prefix: rotating
//! addresses inside it does not buy a fresh budget. IPv4 counts per address.

use axum::http::HeaderMap;
use ipnet::{IpNet, Ipv6Net};
use std::net::IpAddr;

/// Which forwarding header a trusted proxy sets: a configuration value.
pub use crate::config::ProxyHeader;

pub fn resolve(
    peer: IpAddr,
    headers: &HeaderMap,
    trusted: &[IpNet],
    header: ProxyHeader,
) -> IpAddr {
    let peer = peer.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops = forwarded_chain(headers, header);
    let mut client = peer;
    for hop in hops.iter().rev() {
        if !is_trusted(&client) {
            break;
        }
        client = hop.to_canonical();
    }
    client
}

/// The key `ip` is counted under: the IPv4 address itself, or the IPv6
/// prefix of `ipv6_prefix` bits in CIDR form (`2001:db8:1:2::/64`).
pub fn rate_key(ip: IpAddr, ipv6_prefix: u8) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match Ipv6Net::new(v6, ipv6_prefix.min(128)) {
            Ok(net) => net.trunc().to_string(),
            Err(_) => v6.to_string(),
        },
    }
}

/// The addresses of the configured header, in order; a malformed entry
/// ends the chain there (we cannot trust past it).
fn forwarded_chain(headers: &HeaderMap, header: ProxyHeader) -> Vec<IpAddr> {
    let entries: Vec<String> = match header {
        ProxyHeader::XForwardedFor => headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|v| v.trim().to_owned())
            .collect(),
        ProxyHeader::Forwarded => headers
            .get_all("forwarded")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|element| {
                // An element without `for=` is a hop we cannot place: it
                // ends the chain like garbage does.
                element
                    .split(';')
                    .find_map(|pair| {
                        let (k, v) = pair.trim().split_once('=')?;
                        k.trim()
                            .eq_ignore_ascii_case("for")
                            .then(|| v.trim().trim_matches('"').to_owned())
                    })
                    .unwrap_or_default()
            })
            .collect(),
    };
    let mut out = Vec::new();
    for entry in entries.iter().rev() {
        match parse_node(entry) {
            Some(ip) => out.push(ip),
            None => break,
        }
    }
    out.reverse();
    out
}

/// `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`, `[2001:db8::1]:443`.
fn parse_node(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse() {
        return Some(ip);
    }
    if let Some(rest) = s.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    s.rsplit_once(':')?.0.parse().ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const XFF: ProxyHeader = ProxyHeader::XForwardedFor;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn with(name: &'static str, value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_static(value));
        h
    }

    #[test]
    fn an_untrusted_peer_cannot_spoof_its_address() {
        let h = with("x-forwarded-for", "6.6.6.6");
        assert_eq!(resolve(ip("203.0.113.9"), &h, &[], XFF), ip("203.0.113.9"));
        let trusted = ["10.0.0.0/8".parse().unwrap()];
        assert_eq!(
            resolve(ip("203.0.113.9"), &h, &trusted, XFF),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn a_trusted_proxy_selects_the_rightmost_untrusted_hop() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        // The client wrote "6.6.6.6" itself; our proxies appended the rest.
        let h = with("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.0.0.2");
        assert_eq!(
            resolve(ip("10.0.0.1"), &h, &trusted, XFF),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn forwarded_header_and_ports_are_understood() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let h = with("forwarded", "for=\"[2001:db8::7]:4711\";proto=https");
        assert_eq!(
            resolve(ip("10.0.0.1"), &h, &trusted, ProxyHeader::Forwarded),
            ip("2001:db8::7")
        );
        let h = with("x-forwarded-for", "198.51.100.7:5555");
        assert_eq!(
            resolve(ip("10.0.0.1"), &h, &trusted, XFF),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn garbage_stops_the_walk_at_the_last_trusted_hop() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let h = with("x-forwarded-for", "198.51.100.7, not-an-ip");
        assert_eq!(resolve(ip("10.0.0.1"), &h, &trusted, XFF), ip("10.0.0.1"));
    }

    #[test]
    fn only_the_configured_header_is_believed() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("198.51.100.7"));
        h.insert("forwarded", HeaderValue::from_static("for=6.6.6.6"));
        assert_eq!(
            resolve(ip("10.0.0.1"), &h, &trusted, XFF),
            ip("198.51.100.7")
        );
        assert_eq!(
            resolve(ip("10.0.0.1"), &h, &trusted, ProxyHeader::Forwarded),
            ip("6.6.6.6")
        );
        // The unconfigured header alone is not a fallback.
        let h = with("forwarded", "for=6.6.6.6");
        assert_eq!(resolve(ip("10.0.0.1"), &h, &trusted, XFF), ip("10.0.0.1"));
        let h = with("x-forwarded-for", "6.6.6.6");
        assert_eq!(
            resolve(ip("10.0.0.1"), &h, &trusted, ProxyHeader::Forwarded),
            ip("10.0.0.1")
        );
        // A Forwarded element without `for=` ends the chain.
        let h = with("forwarded", "for=6.6.6.6, by=10.0.0.2");
        assert_eq!(
            resolve(ip("10.0.0.1"), &h, &trusted, ProxyHeader::Forwarded),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn mapped_ipv4_is_ipv4_and_ipv6_counts_per_prefix() {
        assert_eq!(
            resolve(ip("::ffff:203.0.113.9"), &HeaderMap::new(), &[], XFF),
            ip("203.0.113.9")
        );
        // A trusted proxy written as IPv4 matches its mapped form.
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let h = with("x-forwarded-for", "198.51.100.7");
        assert_eq!(
            resolve(ip("::ffff:10.0.0.1"), &h, &trusted, XFF),
            ip("198.51.100.7")
        );
        assert_eq!(rate_key(ip("203.0.113.9"), 64), "203.0.113.9");
        assert_eq!(rate_key(ip("::ffff:203.0.113.9"), 64), "203.0.113.9");
        assert_eq!(
            rate_key(ip("2001:db8:1:2:aaaa::1"), 64),
            rate_key(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"), 64)
        );
        assert_eq!(
            rate_key(ip("2001:db8:1:2:aaaa::1"), 64),
            "2001:db8:1:2::/64"
        );
        assert_ne!(
            rate_key(ip("2001:db8:1:2::1"), 64),
            rate_key(ip("2001:db8:1:3::1"), 64)
        );
        assert_eq!(rate_key(ip("2001:db8:1:3::1"), 48), "2001:db8:1::/48");
        assert_eq!(rate_key(ip("2001:db8::1"), 128), "2001:db8::1/128");
    }
}

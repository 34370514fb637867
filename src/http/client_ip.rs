//! The client's IP address, for rate limits and audit rows.
//!
//! `X-Forwarded-For` / `Forwarded` are client-controlled text: they are
//! honoured only when the socket peer is one of `TRUSTED_PROXIES`, and then
//! we walk the chain from the right (the hops our proxies appended) and
//! take the first address that is not itself a trusted proxy. Anything to
//! the left of that could have been written by the client and is ignored.

use axum::http::HeaderMap;
use ipnet::IpNet;
use std::net::IpAddr;

pub fn resolve(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops = forwarded_chain(headers);
    let mut client = peer;
    for hop in hops.iter().rev() {
        if !is_trusted(&client) {
            break;
        }
        client = *hop;
    }
    client
}

/// The addresses of `X-Forwarded-For` (preferred) or `Forwarded: for=`, in
/// order; a malformed entry ends the chain there (we cannot trust past it).
fn forwarded_chain(headers: &HeaderMap) -> Vec<IpAddr> {
    let xff: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let entries: Vec<String> = if !xff.is_empty() {
        xff.into_iter().map(str::to_owned).collect()
    } else {
        headers
            .get_all("forwarded")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|element| {
                element.split(';').find_map(|pair| {
                    let (k, v) = pair.trim().split_once('=')?;
                    k.eq_ignore_ascii_case("for")
                        .then(|| v.trim_matches('"').to_owned())
                })
            })
            .collect()
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
        assert_eq!(resolve(ip("203.0.113.9"), &h, &[]), ip("203.0.113.9"));
        let trusted = ["10.0.0.0/8".parse().unwrap()];
        assert_eq!(resolve(ip("203.0.113.9"), &h, &trusted), ip("203.0.113.9"));
    }

    #[test]
    fn a_trusted_proxy_selects_the_rightmost_untrusted_hop() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        // The client wrote "6.6.6.6" itself; our proxies appended the rest.
        let h = with("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.0.0.2");
        assert_eq!(resolve(ip("10.0.0.1"), &h, &trusted), ip("198.51.100.7"));
    }

    #[test]
    fn forwarded_header_and_ports_are_understood() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let h = with("forwarded", "for=\"[2001:db8::7]:4711\";proto=https");
        assert_eq!(resolve(ip("10.0.0.1"), &h, &trusted), ip("2001:db8::7"));
        let h = with("x-forwarded-for", "198.51.100.7:5555");
        assert_eq!(resolve(ip("10.0.0.1"), &h, &trusted), ip("198.51.100.7"));
    }

    #[test]
    fn garbage_stops_the_walk_at_the_last_trusted_hop() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let h = with("x-forwarded-for", "198.51.100.7, not-an-ip");
        assert_eq!(resolve(ip("10.0.0.1"), &h, &trusted), ip("10.0.0.1"));
    }
}

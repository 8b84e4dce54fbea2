//! The client's address, for sign-in limits and logs.
//!
//! Behind a reverse proxy every request comes from the proxy: keyed on the peer, one attacker
//! would lock everybody out. `X-Forwarded-For` and `Forwarded` name the client, but anybody
//! can send them, so they are read only when the peer is one of `--trusted-proxies`, and then
//! from the right: the client is the last address that is not itself a trusted proxy (the
//! ones further left were written by whoever sent the request and prove nothing).

use std::net::IpAddr;

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The client address of a request from `peer` with `headers`.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    // The proxy chain, nearest last: `Forwarded` (RFC 7239) when present, else X-Forwarded-For.
    let mut chain: Vec<IpAddr> =
        headers.get_all("forwarded").iter().flat_map(|v| forwarded_for(v.to_str().unwrap_or(""))).collect();
    if chain.is_empty() {
        chain = headers
            .get_all("x-forwarded-for")
            .iter()
            .flat_map(|v| v.to_str().unwrap_or("").split(',').filter_map(parse_ip).collect::<Vec<_>>())
            .collect();
    }
    chain.into_iter().rev().find(|ip| !is_trusted(ip)).unwrap_or(peer)
}

/// The `for=` addresses of a `Forwarded` header value, in order.
fn forwarded_for(value: &str) -> Vec<IpAddr> {
    value
        .split(',')
        .filter_map(|element| {
            element.split(';').find_map(|pair| {
                let (key, v) = pair.split_once('=')?;
                key.trim().eq_ignore_ascii_case("for").then(|| parse_ip(v)).flatten()
            })
        })
        .collect()
}

/// An address as proxies write it: `1.2.3.4`, `1.2.3.4:5678`, `"[2001:db8::1]:80"`, `2001:db8::1`.
fn parse_ip(text: &str) -> Option<IpAddr> {
    let t = text.trim().trim_matches('"');
    if let Ok(ip) = t.parse() {
        return Some(ip);
    }
    if let Some(rest) = t.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    t.rsplit_once(':').and_then(|(host, _)| host.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().expect("header"));
        }
        h
    }

    #[test]
    fn headers_count_only_from_trusted_proxies() {
        let proxy: IpAddr = "10.0.0.5".parse().expect("ip");
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().expect("net")];
        let forged = headers(&[("x-forwarded-for", "203.0.113.9")]);
        let stranger: IpAddr = "198.51.100.7".parse().expect("ip");
        assert_eq!(client_address(stranger, &forged, &trusted), stranger, "untrusted peer: header ignored");
        assert_eq!(client_address(proxy, &forged, &trusted), "203.0.113.9".parse::<IpAddr>().expect("ip"));
        // A client prepending a fake address gains nothing: the proxy appended the real one.
        let chain = headers(&[("x-forwarded-for", "1.1.1.1, 203.0.113.9, 10.0.0.7")]);
        assert_eq!(client_address(proxy, &chain, &trusted), "203.0.113.9".parse::<IpAddr>().expect("ip"));
        let fwd = headers(&[("forwarded", "for=192.0.2.60;proto=http, for=\"[2001:db8::1]:4711\"")]);
        assert_eq!(client_address(proxy, &fwd, &trusted), "2001:db8::1".parse::<IpAddr>().expect("ip"));
        assert_eq!(client_address(proxy, &HeaderMap::new(), &trusted), proxy, "no header: the proxy itself");
        assert_eq!(client_address(proxy, &forged, &[]), proxy, "no trusted proxies configured");
    }
}

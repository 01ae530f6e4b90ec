//! The forwarding headers a backend sees. Whatever the client sent under
//! these names is dropped (a client could otherwise pose as any address),
//! and they are set from the connection's real peer: the proxy is the
//! first hop we trust. (Trusted upstream proxies, whose X-Forwarded-For
//! should be extended rather than replaced, are left for later.)

use std::net::IpAddr;

/// Request headers removed before forwarding (lowercase).
pub const STRIPPED: [&str; 5] = ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded", "x-real-ip"];

/// The headers to set, as (name, value).
pub fn forwarding(peer: IpAddr, proto: &str, host: Option<&str>) -> Vec<(&'static str, String)> {
    // RFC 7239: IPv6 nodes are bracketed and quoted; the host is quoted
    // because a port's ':' is not a token character.
    let node = match peer {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("\"[{a}]\""),
    };
    let mut forwarded = format!("for={node};proto={proto}");
    let clean_host = host.filter(|h| h.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\'));
    if let Some(h) = clean_host {
        forwarded.push_str(&format!(";host=\"{h}\""));
    }
    let mut set = vec![("x-forwarded-for", peer.to_string()), ("x-forwarded-proto", proto.to_string())];
    if let Some(h) = clean_host {
        set.push(("x-forwarded-host", h.to_string()));
    }
    set.push(("forwarded", forwarded));
    set
}

/// Applies the rewrite to a plain header list (names compared
/// case-insensitively); the proxy does the same on its own header type.
pub fn rewrite(headers: &mut Vec<(String, String)>, peer: IpAddr, proto: &str) {
    let host = headers.iter().find(|(n, _)| n.eq_ignore_ascii_case("host")).map(|(_, v)| v.clone());
    headers.retain(|(n, _)| !STRIPPED.iter().any(|s| n.eq_ignore_ascii_case(s)));
    for (n, v) in forwarding(peer, proto, host.as_deref()) {
        headers.push((n.to_string(), v));
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn spoofed_headers_are_replaced() {
        let mut h = vec![
            ("Host".to_string(), "shop.example.com".to_string()),
            ("X-Forwarded-For".to_string(), "203.0.113.66".to_string()),
            ("FORWARDED".to_string(), "for=203.0.113.66".to_string()),
            ("X-Real-IP".to_string(), "203.0.113.66".to_string()),
        ];
        rewrite(&mut h, "198.18.0.2".parse().expect("ip"), "http");
        let get = |n: &str| h.iter().filter(|(k, _)| k.eq_ignore_ascii_case(n)).map(|(_, v)| v.as_str()).collect::<Vec<_>>();
        assert_eq!(get("x-forwarded-for"), ["198.18.0.2"]);
        assert_eq!(get("x-forwarded-proto"), ["http"]);
        assert_eq!(get("forwarded"), ["for=198.18.0.2;proto=http;host=\"shop.example.com\""]);
        assert!(get("x-real-ip").is_empty());
        assert_eq!(get("host"), ["shop.example.com"]);
    }

    #[test]
    fn ipv6_peers_are_quoted() {
        let set = forwarding("2001:db8::2".parse().expect("ip"), "https", None);
        assert!(set.contains(&("forwarded", "for=\"[2001:db8::2]\";proto=https".to_string())));
    }

    proptest! {
        /// Whatever the client sends, exactly one of each forwarding header
        /// leaves, carrying the peer's address.
        #[test]
        fn exactly_one_from_the_peer(names in prop::collection::vec("(?i)(x-forwarded-for|forwarded|x-forwarded-proto|x-real-ip|accept)", 0..8),
                                     value in "[ -~]{0,40}", last in any::<u8>()) {
            let mut h: Vec<(String, String)> = names.into_iter().map(|n| (n, value.clone())).collect();
            let peer = IpAddr::from([198, 18, 0, last]);
            rewrite(&mut h, peer, "http");
            let xff: Vec<&(String, String)> = h.iter().filter(|(n, _)| n.eq_ignore_ascii_case("x-forwarded-for")).collect();
            prop_assert_eq!(xff.len(), 1);
            prop_assert_eq!(&xff[0].1, &peer.to_string());
            prop_assert_eq!(h.iter().filter(|(n, _)| n.eq_ignore_ascii_case("forwarded")).count(), 1);
            prop_assert!(!h.iter().any(|(n, _)| n.eq_ignore_ascii_case("x-real-ip")));
        }
    }
}

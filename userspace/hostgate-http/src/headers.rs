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

/// Why a request's framing is ambiguous, if it is: such requests are
/// refused (400) rather than forwarded, because a backend that reads the
/// framing differently from the proxy would see a second, smuggled request
/// (CL.TE / TE.CL). nginx refuses the same; pingora 0.9 accepts
/// Content-Length with Transfer-Encoding (pingora#945).
/// `content_lengths` and `transfer_encodings` are every value of those
/// headers as received.
pub fn framing_problem(content_lengths: &[&[u8]], transfer_encodings: &[&[u8]]) -> Option<&'static str> {
    if !content_lengths.is_empty() && !transfer_encodings.is_empty() {
        return Some("both Content-Length and Transfer-Encoding");
    }
    if let Some(first) = content_lengths.first() {
        let valid = |v: &&[u8]| !v.is_empty() && v.iter().all(u8::is_ascii_digit);
        if !content_lengths.iter().all(valid) || content_lengths.iter().any(|v| v != first) {
            return Some("invalid or conflicting Content-Length");
        }
    }
    match transfer_encodings {
        [] => None,
        [te] if te.trim_ascii().eq_ignore_ascii_case(b"chunked") => None,
        _ => Some("Transfer-Encoding other than a single \"chunked\""),
    }
}

/// [`framing_problem`] of a raw HTTP/1 request head (request line and
/// header lines, as received). Read from the raw bytes because a parser
/// may already have dropped one of the two headers (pingora removes
/// Content-Length when Transfer-Encoding is present).
pub fn framing_problem_raw(head: &[u8]) -> Option<&'static str> {
    let (mut lengths, mut encodings) = (Vec::new(), Vec::new());
    for line in head.split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        let (name, value) = (line[..colon].trim_ascii(), line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"content-length") {
            lengths.push(value);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            encodings.push(value);
        }
    }
    framing_problem(&lengths, &encodings)
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
        let get =
            |n: &str| h.iter().filter(|(k, _)| k.eq_ignore_ascii_case(n)).map(|(_, v)| v.as_str()).collect::<Vec<_>>();
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

    #[test]
    fn ambiguous_framing_is_named() {
        assert_eq!(framing_problem(&[], &[]), None);
        assert_eq!(framing_problem(&[b"5"], &[]), None);
        assert_eq!(framing_problem(&[b"5", b"5"], &[]), None);
        assert_eq!(framing_problem(&[], &[b"Chunked"]), None);
        assert!(framing_problem(&[b"5"], &[b"chunked"]).is_some(), "CL.TE");
        assert!(framing_problem(&[b"5", b"6"], &[]).is_some());
        assert!(framing_problem(&[b"+5"], &[]).is_some());
        assert!(framing_problem(&[], &[b"chunked", b"chunked"]).is_some(), "duplicate TE");
        assert!(framing_problem(&[], &[b"gzip, chunked"]).is_some());
        assert!(framing_problem(&[], &[b"xchunked"]).is_some());
        let head = b"POST / HTTP/1.1\r\nHost: a\r\ncontent-length: 4\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(framing_problem_raw(head).is_some());
        assert_eq!(framing_problem_raw(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"), None);
    }

    proptest! {
        #[test]
        fn raw_framing_never_panics(head in prop::collection::vec(any::<u8>(), 0..400)) {
            let _ = framing_problem_raw(&head);
        }

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

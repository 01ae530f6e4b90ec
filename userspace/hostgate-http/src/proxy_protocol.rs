//! The PROXY protocol version 2 header (haproxy's proxy-protocol.txt §2.2)
//! that a vhost with `--proxy-protocol` sends first on every connection to
//! its backends, so they learn the client's address and port even for
//! non-HTTP bytes (an upgraded WebSocket) and without trusting a header.
//! Only the binary v2 form, PROXY command, TCP over IPv4/IPv6; no TLVs.

use std::net::{IpAddr, SocketAddr};

/// The 12-byte signature every v2 header starts with.
pub const SIGNATURE: [u8; 12] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A];

/// Version 2, command PROXY (the connection was relayed for a client).
const VERSION_PROXY: u8 = 0x21;
/// Address family and transport: TCP over IPv4 / over IPv6.
const TCP4: u8 = 0x11;
const TCP6: u8 = 0x21;

/// The header telling a backend that `client` connected to `server` (the
/// address the client reached the proxy at). Mixed families (an IPv6
/// client through an IPv4 listener cannot happen, but a v4-mapped address
/// can) are written as IPv6 with v4-mapped addresses.
pub fn v2_header(client: SocketAddr, server: SocketAddr) -> Vec<u8> {
    let mut h = Vec::with_capacity(16 + 36);
    h.extend_from_slice(&SIGNATURE);
    h.push(VERSION_PROXY);
    match (client.ip(), server.ip()) {
        (IpAddr::V4(c), IpAddr::V4(s)) => {
            h.push(TCP4);
            h.extend_from_slice(&12u16.to_be_bytes());
            h.extend_from_slice(&c.octets());
            h.extend_from_slice(&s.octets());
        }
        (c, s) => {
            let v6 = |a: IpAddr| match a {
                IpAddr::V4(a) => a.to_ipv6_mapped(),
                IpAddr::V6(a) => a,
            };
            h.push(TCP6);
            h.extend_from_slice(&36u16.to_be_bytes());
            h.extend_from_slice(&v6(c).octets());
            h.extend_from_slice(&v6(s).octets());
        }
    }
    h.extend_from_slice(&client.port().to_be_bytes());
    h.extend_from_slice(&server.port().to_be_bytes());
    h
}

/// Reads a v2 header as a backend would: `(client, server, header length)`,
/// or `None` if `bytes` does not start with a whole valid PROXY TCP header.
/// The proxy itself never parses one; this is the other side, for tests
/// and for tools.
pub fn parse_v2(bytes: &[u8]) -> Option<(SocketAddr, SocketAddr, usize)> {
    if bytes.len() < 16 || bytes[..12] != SIGNATURE || bytes[12] != VERSION_PROXY {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([bytes[14], bytes[15]]));
    let body = bytes.get(16..16 + len)?;
    let port = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
    match bytes[13] {
        TCP4 if len >= 12 => {
            let ip = |at: usize| <[u8; 4]>::try_from(&body[at..at + 4]).ok().map(IpAddr::from);
            Some((SocketAddr::new(ip(0)?, port(8)), SocketAddr::new(ip(4)?, port(10)), 16 + len))
        }
        TCP6 if len >= 36 => {
            let ip = |at: usize| <[u8; 16]>::try_from(&body[at..at + 16]).ok().map(IpAddr::from);
            Some((SocketAddr::new(ip(0)?, port(32)), SocketAddr::new(ip(16)?, port(34)), 16 + len))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn ipv4_header_is_byte_exact() {
        let h = v2_header("198.18.0.2:40000".parse().expect("c"), "198.18.0.1:80".parse().expect("s"));
        let mut want = SIGNATURE.to_vec();
        want.extend_from_slice(&[0x21, 0x11, 0, 12, 198, 18, 0, 2, 198, 18, 0, 1, 0x9c, 0x40, 0, 80]);
        assert_eq!(h, want);
    }

    #[test]
    fn ipv6_and_mixed() {
        let c: SocketAddr = "[2001:db8::2]:5000".parse().expect("c");
        let s: SocketAddr = "[2001:db8::1]:443".parse().expect("s");
        let h = v2_header(c, s);
        assert_eq!((h[13], h.len()), (0x21, 16 + 36));
        assert_eq!(parse_v2(&h), Some((c, s, 52)));
        let mixed = v2_header("198.18.0.2:1".parse().expect("c"), s);
        let (pc, _, _) = parse_v2(&mixed).expect("parses");
        assert_eq!(pc.ip(), "::ffff:198.18.0.2".parse::<IpAddr>().expect("ip"));
    }

    #[test]
    fn garbage_is_not_a_header() {
        assert_eq!(parse_v2(b"GET / HTTP/1.1\r\n\r\n"), None);
        let mut h = v2_header("198.18.0.2:1".parse().expect("c"), "198.18.0.1:2".parse().expect("s"));
        h.truncate(20);
        assert_eq!(parse_v2(&h), None, "truncated");
    }

    proptest! {
        #[test]
        fn round_trip(c in any::<SocketAddr>(), s in any::<SocketAddr>(), tail in prop::collection::vec(any::<u8>(), 0..20)) {
            let mut h = v2_header(c, s);
            let len = h.len();
            h.extend_from_slice(&tail);
            let (pc, ps, n) = parse_v2(&h).expect("own header parses");
            prop_assert_eq!(n, len);
            let same = |a: SocketAddr, b: SocketAddr| a.port() == b.port() && match (a.ip(), b.ip()) {
                (IpAddr::V4(x), IpAddr::V6(y)) => x.to_ipv6_mapped() == y,
                (x, y) => x == y,
            };
            prop_assert!(same(c, pc) && same(s, ps), "{c} {s} -> {pc} {ps}");
        }

        #[test]
        fn parse_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..80)) {
            let _ = parse_v2(&bytes);
        }
    }
}

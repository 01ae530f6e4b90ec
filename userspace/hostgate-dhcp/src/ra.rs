//! IPv6 router advertisements' pure core (RFC 4861 §4.2, §6; RDNSS and
//! DNSSL of RFC 8106): what a network advertises, the RA message body, the
//! validation of Router Solicitations and when to send. The caller sends
//! the body on a raw ICMPv6 socket (the kernel fills in the checksum) and
//! passes the time and random numbers in.

use std::net::Ipv6Addr;

use crate::network::Network;

/// ICMPv6 types.
pub const ROUTER_SOLICITATION: u8 = 133;
pub const ROUTER_ADVERTISEMENT: u8 = 134;

/// Option types (RFC 4861 §4.6, RFC 8106 §5).
pub const OPT_SOURCE_LL: u8 = 1;
pub const OPT_PREFIX: u8 = 3;
pub const OPT_MTU: u8 = 5;
pub const OPT_RDNSS: u8 = 25;
pub const OPT_DNSSL: u8 = 31;

/// Router constants of RFC 4861 §10, in milliseconds.
pub const MAX_INITIAL_RTR_ADVERT_INTERVAL_MS: u64 = 16_000;
pub const MAX_INITIAL_RTR_ADVERTISEMENTS: u32 = 3;
pub const MIN_DELAY_BETWEEN_RAS_MS: u64 = 3_000;
pub const MAX_RA_DELAY_TIME_MS: u64 = 500;

/// What one interface advertises, and how often.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RaConfig {
    pub prefix: Ipv6Addr,
    pub prefix_len: u8,
    /// Cur Hop Limit for the hosts (radvd's default, 64).
    pub cur_hop_limit: u8,
    /// Seconds the hosts keep this router as a default router; 0 withdraws it.
    pub router_lifetime: u16,
    pub valid_lifetime: u32,
    pub preferred_lifetime: u32,
    /// The link MTU, if known.
    pub mtu: Option<u32>,
    /// The interface's MAC (source link-layer address option).
    pub source_mac: Option<[u8; 6]>,
    pub dns: Vec<Ipv6Addr>,
    pub search: Vec<String>,
    /// Lifetime of the RDNSS and DNSSL options.
    pub dns_lifetime: u32,
    /// MinRtrAdvInterval and MaxRtrAdvInterval, in seconds.
    pub min_interval: u32,
    pub max_interval: u32,
}

impl RaConfig {
    /// The advertisement of `n`, if it has an IPv6 prefix: SLAAC only (M and
    /// O off), the router's own address as DNS server unless `dns6` names
    /// some, the domain and search list as DNSSL, the network's MTU if it
    /// has one (the daemon fills in the link's otherwise), lifetimes of radvd's defaults scaled to a 200 s
    /// MaxRtrAdvInterval (router and DNS: 3 x Max, RFC 8106 §5.1).
    pub fn for_network(n: &Network) -> Option<RaConfig> {
        let (prefix, prefix_len) = n.ipv6_prefix?;
        let router = n.router6()?;
        let max_interval = 200;
        Some(RaConfig {
            prefix,
            prefix_len,
            cur_hop_limit: 64,
            router_lifetime: 3 * max_interval as u16,
            valid_lifetime: 86_400,
            preferred_lifetime: 14_400,
            mtu: n.mtu.map(u32::from),
            source_mac: None,
            dns: if n.dns6.is_empty() { vec![router] } else { n.dns6.clone() },
            search: n.search_list(),
            dns_lifetime: 3 * max_interval,
            min_interval: max_interval / 3,
            max_interval,
        })
    }

    /// The last advertisement before the router stops (RFC 4861 §6.2.5):
    /// router lifetime 0, so hosts drop their default route through it at
    /// once; the prefix deprecated and the DNS options' lifetimes 0 (RFC 8106
    /// §5.1: expired), as radvd does on shutdown.
    pub fn withdrawn(&self) -> RaConfig {
        RaConfig { router_lifetime: 0, preferred_lifetime: 0, dns_lifetime: 0, ..self.clone() }
    }

    /// The ICMPv6 message (checksum left 0 for the kernel to fill in).
    pub fn build(&self) -> Vec<u8> {
        let mut m = vec![ROUTER_ADVERTISEMENT, 0, 0, 0, self.cur_hop_limit, 0];
        m.extend(self.router_lifetime.to_be_bytes());
        m.extend([0; 8]); // reachable time and retrans timer: unspecified
        if let Some(mac) = self.source_mac {
            m.extend([OPT_SOURCE_LL, 1]);
            m.extend(mac);
        }
        if let Some(mtu) = self.mtu {
            m.extend([OPT_MTU, 1, 0, 0]);
            m.extend(mtu.to_be_bytes());
        }
        m.extend([OPT_PREFIX, 4, self.prefix_len, 0xc0]); // on-link, autonomous
        m.extend(self.valid_lifetime.to_be_bytes());
        m.extend(self.preferred_lifetime.min(self.valid_lifetime).to_be_bytes());
        m.extend([0; 4]);
        m.extend(self.prefix.octets());
        if !self.dns.is_empty() {
            m.extend([OPT_RDNSS, (1 + 2 * self.dns.len()) as u8, 0, 0]);
            m.extend(self.dns_lifetime.to_be_bytes());
            self.dns.iter().for_each(|a| m.extend(a.octets()));
        }
        let names: Vec<u8> = self.search.iter().filter_map(|d| encode_name(d)).flatten().collect();
        if !names.is_empty() {
            let padded = (8 + names.len()).div_ceil(8) * 8;
            let start = m.len();
            m.extend([OPT_DNSSL, (padded / 8) as u8, 0, 0]);
            m.extend(self.dns_lifetime.to_be_bytes());
            m.extend(names);
            m.resize(start + padded, 0);
        }
        m
    }

    /// How long to wait after the `sent`-th unsolicited advertisement: a
    /// uniform pick in [Min, Max] (RFC 4861 §6.2.4), at most 16 s for the
    /// first few so that hosts learn the router quickly.
    pub fn unsolicited_interval_ms(&self, sent: u32, random: u32) -> u64 {
        let min = u64::from(self.min_interval.min(self.max_interval)) * 1000;
        let max = u64::from(self.max_interval) * 1000;
        let pick = min + u64::from(random) % (max - min + 1);
        if sent < MAX_INITIAL_RTR_ADVERTISEMENTS {
            pick.min(MAX_INITIAL_RTR_ADVERT_INTERVAL_MS)
        } else {
            pick
        }
    }
}

/// A domain name in DNS wire form (labels, then the root), or None if it
/// is not a hostname-style name.
pub fn encode_name(name: &str) -> Option<Vec<u8>> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > 253 {
        return None;
    }
    let mut out = Vec::with_capacity(name.len() + 2);
    for label in name.split('.') {
        let ok = (1..=63).contains(&label.len())
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !ok {
            return None;
        }
        out.push(label.len() as u8);
        out.extend(label.to_ascii_lowercase().bytes());
    }
    out.push(0);
    Some(out)
}

/// Why a Router Solicitation is ignored (RFC 4861 §6.1.1).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RsError {
    #[error("hop limit {0}, not 255 (not from this link)")]
    HopLimit(u8),
    #[error("{0} bytes: shorter than 8")]
    Short(usize),
    #[error("ICMPv6 type {0}, not a router solicitation")]
    Type(u8),
    #[error("code {0}, not 0")]
    Code(u8),
    #[error("bad checksum")]
    Checksum,
    #[error("an option of length 0 or running past the end")]
    OptionLength,
    #[error("a source link-layer address from the unspecified address")]
    UnspecifiedWithLinkLayer,
}

/// A valid Router Solicitation: who asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Solicitation {
    /// None when the host has no address yet (`::`): answer by multicast.
    pub source: Option<Ipv6Addr>,
    pub source_ll: Option<Vec<u8>>,
}

/// Checks a Router Solicitation as RFC 4861 §6.1.1 requires: hop limit
/// 255, checksum, code 0, at least 8 bytes, no option of length 0, no
/// source link-layer option from `::`. The reserved field and unknown
/// options are ignored.
pub fn parse_rs(src: Ipv6Addr, dst: Ipv6Addr, hop_limit: u8, icmp: &[u8]) -> Result<Solicitation, RsError> {
    if hop_limit != 255 {
        return Err(RsError::HopLimit(hop_limit));
    }
    if icmp.len() < 8 {
        return Err(RsError::Short(icmp.len()));
    }
    if icmp[0] != ROUTER_SOLICITATION {
        return Err(RsError::Type(icmp[0]));
    }
    if icmp[1] != 0 {
        return Err(RsError::Code(icmp[1]));
    }
    if checksum(src, dst, icmp) != 0 {
        return Err(RsError::Checksum);
    }
    let mut source_ll = None;
    for (kind, body) in options(&icmp[8..]) {
        let body = body.ok_or(RsError::OptionLength)?;
        if kind == OPT_SOURCE_LL {
            source_ll = Some(body.to_vec());
        }
    }
    let source = (!src.is_unspecified()).then_some(src);
    if source.is_none() && source_ll.is_some() {
        return Err(RsError::UnspecifiedWithLinkLayer);
    }
    Ok(Solicitation { source, source_ll })
}

/// Walks neighbour discovery options: (type, body after type and length),
/// the body None for a length of 0 or one running past the end (and the
/// walk stops there).
pub fn options(mut bytes: &[u8]) -> impl Iterator<Item = (u8, Option<&[u8]>)> {
    std::iter::from_fn(move || {
        let (&kind, &len) = (bytes.first()?, bytes.get(1)?);
        let size = usize::from(len) * 8;
        if size == 0 || size > bytes.len() {
            bytes = &[];
            return Some((kind, None));
        }
        let body = &bytes[2..size];
        bytes = &bytes[size..];
        Some((kind, Some(body)))
    })
    .fuse()
}

/// The ICMPv6 checksum over the pseudo-header (RFC 8200 §8.1): 0 when
/// `icmp` carries a correct one, else the value to put in bytes 2-3 of a
/// message whose checksum field is 0.
pub fn checksum(src: Ipv6Addr, dst: Ipv6Addr, icmp: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    let mut add = |bytes: &[u8]| {
        for pair in bytes.chunks(2) {
            sum += u64::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&(icmp.len() as u32).to_be_bytes());
    add(&[0, 0, 0, 58]);
    add(icmp);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// When to answer solicitations on one interface (RFC 4861 §6.2.6): after
/// a random 0-500 ms; by unicast to a solicitor with an address (RFC 7772,
/// radvd's AdvRASolicitedUnicast), so that a host asking again (rdisc6,
/// a kernel retrying) is answered at once, with at most
/// [`UNICAST_ANSWERS_PER_SEC`] such answers per second on the interface
/// against floods; by multicast otherwise, at most one multicast RA per 3 s
/// on the interface (MIN_DELAY_BETWEEN_RAS).
#[derive(Debug, Default)]
pub struct Answers {
    last_multicast_ms: Option<u64>,
    /// The current one-second window of unicast answers and their number.
    window_ms: u64,
    unicast_in_window: u32,
}

pub const UNICAST_ANSWERS_PER_SEC: u32 = 10;

/// An answer to send: at `at_ms`, to the solicitor (None: to all nodes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answer {
    pub at_ms: u64,
    pub to: Option<Ipv6Addr>,
}

impl Answers {
    /// The answer to `s` received at `now_ms`, if one is due.
    pub fn solicited(&mut self, now_ms: u64, s: &Solicitation, random: u32) -> Option<Answer> {
        let at_ms = now_ms + u64::from(random) % (MAX_RA_DELAY_TIME_MS + 1);
        match s.source {
            Some(host) => {
                if now_ms >= self.window_ms + 1000 {
                    (self.window_ms, self.unicast_in_window) = (now_ms, 0);
                }
                if self.unicast_in_window >= UNICAST_ANSWERS_PER_SEC {
                    return None;
                }
                self.unicast_in_window += 1;
                Some(Answer { at_ms, to: Some(host) })
            }
            None => {
                if self.last_multicast_ms.is_some_and(|t| t >= now_ms) {
                    return None; // one is already scheduled: it answers this one too
                }
                let earliest = self.last_multicast_ms.map_or(0, |t| t + MIN_DELAY_BETWEEN_RAS_MS);
                let at_ms = at_ms.max(earliest);
                self.last_multicast_ms = Some(at_ms);
                Some(Answer { at_ms, to: None })
            }
        }
    }

    /// When the next multicast RA may go (MIN_DELAY_BETWEEN_RAS counts
    /// unsolicited ones too): an unsolicited RA due earlier waits.
    pub fn multicast_allowed_at(&self) -> u64 {
        self.last_multicast_ms.map_or(0, |t| t + MIN_DELAY_BETWEEN_RAS_MS)
    }

    /// Records an unsolicited multicast RA sent at `now_ms`.
    pub fn sent_multicast(&mut self, now_ms: u64) {
        self.last_multicast_ms = Some(self.last_multicast_ms.map_or(now_ms, |t| t.max(now_ms)));
    }
}

/// The address a host with `mac` forms from a /64 `prefix` by SLAAC with a
/// modified EUI-64 interface identifier (RFC 4291 appendix A): the MAC's
/// halves around ff:fe, the universal/local bit flipped. The anti-spoofing
/// guard allows a registered container this address, as OpenStack's port
/// security does; hosts using stable-privacy or temporary addresses
/// (RFC 7217, RFC 8981) must be given them explicitly.
pub fn slaac_address(prefix: Ipv6Addr, mac: [u8; 6]) -> Ipv6Addr {
    let [a, b, c, d, e, f] = mac;
    let iid = u64::from_be_bytes([a ^ 0x02, b, c, 0xff, 0xfe, d, e, f]);
    let network = u128::from(prefix) & !u128::from(u64::MAX);
    Ipv6Addr::from(network | u128::from(iid))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::network::Network;

    #[test]
    fn slaac_addresses_are_modified_eui64() {
        // RFC 4291 appendix A's example MAC, and a locally administered one.
        let prefix: Ipv6Addr = "2001:db8:1::".parse().expect("prefix");
        let got = slaac_address(prefix, [0x00, 0x11, 0x22, 0x33, 0x44, 0x55]);
        assert_eq!(got, "2001:db8:1:0:211:22ff:fe33:4455".parse::<Ipv6Addr>().expect("addr"));
        let got = slaac_address(prefix, [0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee]);
        assert_eq!(got, "2001:db8:1:0:aa:bbff:fecc:ddee".parse::<Ipv6Addr>().expect("addr"));
    }

    fn network() -> Network {
        Network {
            name: "web".into(),
            customer: "acme".into(),
            subnet: "198.51.100.0".parse().expect("addr"),
            prefix_len: 24,
            gateway: "198.51.100.1".parse().expect("addr"),
            pools: vec![],
            lease_secs: 3600,
            max_new_per_mac: 10,
            max_new_per_port: 60,
            domain: Some("example.test".into()),
            search: vec![],
            mtu: None,
            routed: false,
            interfaces: vec![],
            node: None,
            dns: vec![],
            ipv6_prefix: Some(("2001:db8:1::".parse().expect("addr"), 64)),
            dns6: vec![],
        }
    }

    /// What a host reads from an RA: header fields and options by type.
    #[derive(Debug, Default)]
    struct Read {
        router_lifetime: u16,
        flags: u8,
        prefix: Option<(u8, u8, u32, u32, Ipv6Addr)>,
        mtu: Option<u32>,
        mac: Option<Vec<u8>>,
        rdnss: Option<(u32, Vec<Ipv6Addr>)>,
        dnssl: Option<(u32, Vec<String>)>,
    }

    fn names(mut b: &[u8]) -> Vec<String> {
        let (mut out, mut cur) = (vec![], vec![]);
        while let Some((&len, rest)) = b.split_first() {
            if len == 0 {
                if !cur.is_empty() {
                    out.push(cur.join("."));
                    cur.clear();
                }
                b = rest;
                continue;
            }
            cur.push(String::from_utf8(rest[..usize::from(len)].to_vec()).expect("ascii"));
            b = &rest[usize::from(len)..];
        }
        out
    }

    fn read(ra: &[u8]) -> Read {
        assert_eq!((ra[0], ra[1]), (ROUTER_ADVERTISEMENT, 0));
        assert_eq!(ra.len() % 8, 0, "options are multiples of 8 bytes");
        let be32 = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        let mut r = Read { router_lifetime: u16::from_be_bytes([ra[6], ra[7]]), flags: ra[5], ..Read::default() };
        assert_eq!(&ra[8..16], &[0; 8], "reachable and retrans unspecified");
        for (kind, body) in options(&ra[16..]) {
            let b = body.expect("well-formed option");
            match kind {
                OPT_SOURCE_LL => r.mac = Some(b.to_vec()),
                OPT_MTU => r.mtu = Some(be32(&b[2..])),
                OPT_PREFIX => {
                    let addr = <[u8; 16]>::try_from(&b[14..30]).expect("16 bytes");
                    r.prefix = Some((b[0], b[1], be32(&b[2..]), be32(&b[6..]), Ipv6Addr::from(addr)));
                }
                OPT_RDNSS => {
                    let addrs =
                        b[6..].chunks(16).map(|c| Ipv6Addr::from(<[u8; 16]>::try_from(c).expect("16"))).collect();
                    r.rdnss = Some((be32(&b[2..]), addrs));
                }
                OPT_DNSSL => r.dnssl = Some((be32(&b[2..]), names(&b[6..]))),
                other => panic!("unexpected option {other}"),
            }
        }
        r
    }

    #[test]
    fn the_advertisement_carries_prefix_dns_and_search() {
        let mut c = RaConfig::for_network(&network()).expect("has a prefix");
        c.mtu = Some(1500);
        c.source_mac = Some([2, 0, 0, 0, 0, 1]);
        let r = read(&c.build());
        assert_eq!(r.router_lifetime, 600);
        assert_eq!(r.flags, 0, "SLAAC: M and O off");
        assert_eq!(r.prefix, Some((64, 0xc0, 86_400, 14_400, "2001:db8:1::".parse().expect("addr"))));
        assert_eq!(r.mtu, Some(1500));
        assert_eq!(r.mac, Some(vec![2, 0, 0, 0, 0, 1]));
        assert_eq!(r.rdnss, Some((600, vec!["2001:db8:1::1".parse().expect("addr")])), "the router's own DNS");
        assert_eq!(r.dnssl, Some((600, vec!["example.test".to_string()])));

        let gone = read(&c.withdrawn().build());
        assert_eq!(gone.router_lifetime, 0);
        assert_eq!(gone.prefix.map(|p| p.3), Some(0), "prefix deprecated");
        assert_eq!(gone.rdnss.map(|d| d.0), Some(0));
    }

    #[test]
    fn no_prefix_no_advertisement_and_named_dns_servers_win() {
        let mut n = network();
        n.dns6 = vec!["2001:db8::53".parse().expect("addr"), "2001:db8::54".parse().expect("addr")];
        n.domain = None;
        let r = read(&RaConfig::for_network(&n).expect("prefix").build());
        assert_eq!(r.rdnss.expect("rdnss").1, n.dns6);
        assert!(r.dnssl.is_none() && r.mac.is_none() && r.mtu.is_none());
        n.ipv6_prefix = None;
        assert_eq!(RaConfig::for_network(&n), None);
    }

    #[test]
    fn unsolicited_intervals_stay_in_bounds_and_start_fast() {
        let c = RaConfig::for_network(&network()).expect("prefix");
        for random in [0, 1, 65_000, 134_000, u32::MAX] {
            for sent in 0..3 {
                assert!(c.unsolicited_interval_ms(sent, random) <= 16_000);
            }
            let later = c.unsolicited_interval_ms(3, random);
            assert!((66_000..=200_000).contains(&later), "{later}");
        }
    }

    fn rs(src: Ipv6Addr, options: &[u8]) -> Vec<u8> {
        let mut m = vec![ROUTER_SOLICITATION, 0, 0, 0, 0, 0, 0, 0];
        m.extend(options);
        let sum = checksum(src, ALL_ROUTERS, &m);
        m[2..4].copy_from_slice(&sum.to_be_bytes());
        m
    }

    const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);

    #[test]
    fn solicitations_are_validated_as_rfc_4861_says() {
        let host: Ipv6Addr = "fe80::1234".parse().expect("addr");
        let sll = [OPT_SOURCE_LL, 1, 2, 0, 0, 0, 0, 9];
        let good = rs(host, &sll);
        assert_eq!(
            parse_rs(host, ALL_ROUTERS, 255, &good),
            Ok(Solicitation { source: Some(host), source_ll: Some(vec![2, 0, 0, 0, 0, 9]) })
        );
        assert_eq!(parse_rs(host, ALL_ROUTERS, 64, &good), Err(RsError::HopLimit(64)));
        let mut bad = good.clone();
        bad[7] ^= 1; // the reserved field is ignored, but the checksum covers it
        assert_eq!(parse_rs(host, ALL_ROUTERS, 255, &bad), Err(RsError::Checksum));
        assert_eq!(parse_rs(host, ALL_ROUTERS, 255, &good[..6]), Err(RsError::Short(6)));
        assert_eq!(parse_rs(host, ALL_ROUTERS, 255, &rs(host, &[OPT_SOURCE_LL, 0, 0, 0])), Err(RsError::OptionLength));
        let mut code = rs(host, &[]);
        code[1] = 1;
        assert_eq!(parse_rs(host, ALL_ROUTERS, 255, &code), Err(RsError::Code(1)));
        let any = Ipv6Addr::UNSPECIFIED;
        assert_eq!(parse_rs(any, ALL_ROUTERS, 255, &rs(any, &sll)), Err(RsError::UnspecifiedWithLinkLayer));
        assert_eq!(
            parse_rs(any, ALL_ROUTERS, 255, &rs(any, &[99, 1, 0, 0, 0, 0, 0, 0])),
            Ok(Solicitation { source: None, source_ll: None }),
            "unknown options are ignored"
        );
    }

    #[test]
    fn answers_are_delayed_and_rate_limited() {
        let mut a = Answers::default();
        let host = Solicitation { source: Some("fe80::1".parse().expect("addr")), source_ll: None };
        let anon = Solicitation { source: None, source_ll: None };
        assert_eq!(a.solicited(1_000, &host, 700), Some(Answer { at_ms: 1_199, to: host.source }));
        assert!(a.solicited(1_100, &host, 0).is_some(), "a host asking again is answered again");
        for _ in 2..UNICAST_ANSWERS_PER_SEC {
            assert!(a.solicited(1_500, &host, 0).is_some());
        }
        assert_eq!(a.solicited(1_900, &host, 0), None, "at most 10 unicast answers a second");
        assert!(a.solicited(2_000, &host, 0).is_some(), "the next second");
        a.sent_multicast(10_000);
        assert_eq!(a.solicited(11_000, &anon, 0), Some(Answer { at_ms: 13_000, to: None }), "3 s after the last");
        assert_eq!(a.solicited(11_500, &anon, 0), None, "the scheduled one answers both");
        assert_eq!(a.solicited(20_000, &anon, 250), Some(Answer { at_ms: 20_250, to: None }));
    }

    /// A stream of events: (ms since the previous one, what happened:
    /// 0 unsolicited timer, 1 solicitation from ::, 2 from a host).
    fn replay(events: &[(u16, u8, u32)]) -> (Vec<u64>, Vec<(u64, u64)>) {
        let host = Solicitation { source: Some("fe80::1".parse().expect("addr")), source_ll: None };
        let anon = Solicitation { source: None, source_ll: None };
        let (mut a, mut now, mut multicast, mut unicast) = (Answers::default(), 0u64, vec![], vec![]);
        for &(dt, kind, random) in events {
            now += u64::from(dt);
            match kind % 3 {
                0 if now >= a.multicast_allowed_at() => {
                    a.sent_multicast(now);
                    multicast.push(now);
                }
                0 => {}
                1 => multicast.extend(a.solicited(now, &anon, random).map(|x| x.at_ms)),
                _ => unicast.extend(a.solicited(now, &host, random).map(|x| (now, x.at_ms))),
            }
        }
        multicast.sort_unstable();
        (multicast, unicast)
    }

    proptest! {
        #[test]
        fn multicast_ras_are_3_s_apart_and_answers_prompt(events in proptest::collection::vec((0u16..4000, any::<u8>(), any::<u32>()), 0..200)) {
            let (multicast, unicast) = replay(&events);
            for pair in multicast.windows(2) {
                prop_assert!(pair[1] >= pair[0] + MIN_DELAY_BETWEEN_RAS_MS, "{:?}", pair);
            }
            for (asked, at) in unicast {
                prop_assert!(asked <= at && at <= asked + MAX_RA_DELAY_TIME_MS);
            }
        }

        #[test]
        fn the_rs_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256), hop in any::<u8>(), src in any::<u128>()) {
            let _ = parse_rs(Ipv6Addr::from(src), ALL_ROUTERS, hop, &bytes);
            let _ = parse_rs(Ipv6Addr::from(src), ALL_ROUTERS, 255, &rs(Ipv6Addr::from(src), &bytes));
        }

        #[test]
        fn built_advertisements_parse_back(
            dns in proptest::collection::vec(any::<u128>(), 0..5),
            search in proptest::collection::vec("[a-z][a-z0-9]{0,20}(\\.[a-z]{1,10}){0,3}", 0..4),
            lifetime in any::<u16>(),
            mtu in proptest::option::of(1280u32..65536),
        ) {
            let mut n = network();
            n.dns6 = dns.into_iter().map(Ipv6Addr::from).collect();
            n.domain = None;
            n.search = search.clone();
            let mut c = RaConfig::for_network(&n).expect("prefix");
            c.router_lifetime = lifetime;
            c.mtu = mtu;
            let r = read(&c.build());
            prop_assert_eq!(r.router_lifetime, lifetime);
            prop_assert_eq!(r.mtu, mtu);
            prop_assert_eq!(r.rdnss.expect("rdnss").1, c.dns);
            let mut once = search.clone();
            let mut seen = std::collections::HashSet::new();
            once.retain(|d| seen.insert(d.clone()));
            prop_assert_eq!(r.dnssl.map(|d| d.1).unwrap_or_default(), once);
        }
    }
}

//! Builds complete Ethernet frames for tests and benchmarks, with correct
//! lengths and checksums. Pure: no sockets, no kernel.
//!
//! ```
//! use hostgate_testbed::packet::Packet;
//! let frame = Packet::ipv4([198, 18, 0, 2], [198, 18, 0, 1]).udp(4000, 53).payload(b"hi").build();
//! assert_eq!(frame.len(), 14 + 20 + 8 + 2);
//! ```

use std::net::{Ipv4Addr, Ipv6Addr};

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;

/// An IPv6 extension header to insert between the fixed header and L4.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ipv6Ext {
    /// Hop-by-hop options of `8 * (units + 1)` bytes (padded with PadN).
    HopByHop { units: u8 },
    /// Destination options of `8 * (units + 1)` bytes.
    DestOpts { units: u8 },
    /// A type-0-shaped routing header with no addresses left.
    Routing,
    /// Fragment header; `offset` is in 8-byte units.
    Fragment { offset: u16, more: bool },
}

impl Ipv6Ext {
    fn proto(&self) -> u8 {
        match self {
            Ipv6Ext::HopByHop { .. } => 0,
            Ipv6Ext::Routing => 43,
            Ipv6Ext::Fragment { .. } => 44,
            Ipv6Ext::DestOpts { .. } => 60,
        }
    }

    fn encode(&self, next: u8, out: &mut Vec<u8>) {
        match *self {
            Ipv6Ext::HopByHop { units } | Ipv6Ext::DestOpts { units } => {
                let len = 8 * (units as usize + 1);
                out.extend_from_slice(&[next, units, 1, (len - 4) as u8]); // PadN covering the rest
                out.resize(out.len() + len - 4, 0);
            }
            Ipv6Ext::Routing => out.extend_from_slice(&[next, 0, 0, 0, 0, 0, 0, 0]),
            Ipv6Ext::Fragment { offset, more } => {
                let field = (offset << 3) | u16::from(more);
                out.extend_from_slice(&[next, 0]);
                out.extend_from_slice(&field.to_be_bytes());
                out.extend_from_slice(&0x1234_5678u32.to_be_bytes());
            }
        }
    }
}

#[derive(Clone, Debug)]
enum L3 {
    V4 { src: Ipv4Addr, dst: Ipv4Addr, options: Vec<u8>, frag_offset: u16, more_fragments: bool },
    V6 { src: Ipv6Addr, dst: Ipv6Addr, ext: Vec<Ipv6Ext> },
    Raw { ethertype: u16 },
}

#[derive(Clone, Debug)]
enum L4 {
    None,
    Tcp { sport: u16, dport: u16, flags: u8, seq: u32, options: Vec<u8> },
    Udp { sport: u16, dport: u16 },
    Icmp { kind: u8, code: u8, rest: [u8; 4] },
    Proto(u8),
}

/// TCP flag bits.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
}

/// A frame under construction.
#[derive(Clone, Debug)]
pub struct Packet {
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    vlans: Vec<(u16, u16)>,
    l3: L3,
    l4: L4,
    payload: Vec<u8>,
    truncate: Option<usize>,
}

impl Packet {
    fn new(l3: L3) -> Self {
        Packet {
            src_mac: [0x02, 0, 0, 0, 0, 0x01],
            dst_mac: [0x02, 0, 0, 0, 0, 0x02],
            vlans: Vec::new(),
            l3,
            l4: L4::None,
            payload: Vec::new(),
            truncate: None,
        }
    }

    pub fn ipv4(src: impl Into<Ipv4Addr>, dst: impl Into<Ipv4Addr>) -> Self {
        Self::new(L3::V4 {
            src: src.into(),
            dst: dst.into(),
            options: Vec::new(),
            frag_offset: 0,
            more_fragments: false,
        })
    }

    pub fn ipv6(src: impl Into<Ipv6Addr>, dst: impl Into<Ipv6Addr>) -> Self {
        Self::new(L3::V6 { src: src.into(), dst: dst.into(), ext: Vec::new() })
    }

    /// A non-IP frame (ARP, LLDP...) carrying only the payload.
    pub fn ethertype(ethertype: u16) -> Self {
        Self::new(L3::Raw { ethertype })
    }

    pub fn macs(mut self, src: [u8; 6], dst: [u8; 6]) -> Self {
        self.src_mac = src;
        self.dst_mac = dst;
        self
    }

    /// Adds an 802.1Q tag (outermost first); see [`Packet::qinq`] for 802.1ad.
    pub fn vlan(mut self, id: u16) -> Self {
        self.vlans.push((ETH_P_8021Q, id));
        self
    }

    /// Adds an 802.1ad service tag.
    pub fn qinq(mut self, id: u16) -> Self {
        self.vlans.push((ETH_P_8021AD, id));
        self
    }

    /// IPv4 options, padded to a multiple of 4 bytes with End-of-Options.
    pub fn ipv4_options(mut self, opts: &[u8]) -> Self {
        if let L3::V4 { options, .. } = &mut self.l3 {
            options.extend_from_slice(opts);
            options.resize(options.len().div_ceil(4) * 4, 0);
        }
        self
    }

    /// Marks an IPv4 packet as a fragment; `offset` in 8-byte units.
    pub fn ipv4_fragment(mut self, offset: u16, more: bool) -> Self {
        if let L3::V4 { frag_offset, more_fragments, .. } = &mut self.l3 {
            *frag_offset = offset;
            *more_fragments = more;
        }
        self
    }

    pub fn ipv6_ext(mut self, header: Ipv6Ext) -> Self {
        if let L3::V6 { ext, .. } = &mut self.l3 {
            ext.push(header);
        }
        self
    }

    pub fn tcp(mut self, sport: u16, dport: u16, flags: u8) -> Self {
        self.l4 = L4::Tcp { sport, dport, flags, seq: 1, options: Vec::new() };
        self
    }

    /// TCP options, padded with NOPs to a multiple of 4 bytes.
    pub fn tcp_options(mut self, opts: &[u8]) -> Self {
        if let L4::Tcp { options, .. } = &mut self.l4 {
            options.extend_from_slice(opts);
            options.resize(options.len().div_ceil(4) * 4, 1);
        }
        self
    }

    pub fn udp(mut self, sport: u16, dport: u16) -> Self {
        self.l4 = L4::Udp { sport, dport };
        self
    }

    /// ICMP for IPv4 packets, ICMPv6 for IPv6 ones.
    pub fn icmp(mut self, kind: u8, code: u8) -> Self {
        self.l4 = L4::Icmp { kind, code, rest: [0, 1, 0, 1] };
        self
    }

    /// An ICMP/ICMPv6 echo request with the given identifier and sequence.
    pub fn echo_request(mut self, id: u16, seq: u16) -> Self {
        let kind = if matches!(self.l3, L3::V6 { .. }) { 128 } else { 8 };
        let [a, b] = id.to_be_bytes();
        let [c, d] = seq.to_be_bytes();
        self.l4 = L4::Icmp { kind, code: 0, rest: [a, b, c, d] };
        self
    }

    /// Any other L4 protocol number; the payload follows the IP header.
    pub fn l4_proto(mut self, proto: u8) -> Self {
        self.l4 = L4::Proto(proto);
        self
    }

    pub fn payload(mut self, data: &[u8]) -> Self {
        self.payload = data.to_vec();
        self
    }

    /// Cuts the finished frame to `len` bytes, to make malformed packets.
    pub fn truncate(mut self, len: usize) -> Self {
        self.truncate = Some(len);
        self
    }

    fn l4_number(&self) -> u8 {
        match (&self.l4, &self.l3) {
            (L4::Tcp { .. }, _) => 6,
            (L4::Udp { .. }, _) => 17,
            (L4::Icmp { .. }, L3::V6 { .. }) => 58,
            (L4::Icmp { .. }, _) => 1,
            (L4::Proto(p), _) => *p,
            (L4::None, _) => 59, // "no next header"
        }
    }

    /// L4 header and payload, checksum still zero; returns (bytes, checksum offset).
    fn l4_bytes(&self) -> (Vec<u8>, Option<usize>) {
        let mut out = Vec::new();
        let csum_at = match &self.l4 {
            L4::Tcp { sport, dport, flags, seq, options } => {
                out.extend_from_slice(&sport.to_be_bytes());
                out.extend_from_slice(&dport.to_be_bytes());
                out.extend_from_slice(&seq.to_be_bytes());
                out.extend_from_slice(&0u32.to_be_bytes());
                out.push((((20 + options.len()) / 4) as u8) << 4);
                out.push(*flags);
                out.extend_from_slice(&65535u16.to_be_bytes());
                out.extend_from_slice(&[0, 0, 0, 0]);
                out.extend_from_slice(options);
                Some(16)
            }
            L4::Udp { sport, dport } => {
                out.extend_from_slice(&sport.to_be_bytes());
                out.extend_from_slice(&dport.to_be_bytes());
                out.extend_from_slice(&((8 + self.payload.len()) as u16).to_be_bytes());
                out.extend_from_slice(&[0, 0]);
                Some(6)
            }
            L4::Icmp { kind, code, rest } => {
                out.extend_from_slice(&[*kind, *code, 0, 0]);
                out.extend_from_slice(rest);
                Some(2)
            }
            L4::Proto(_) | L4::None => None,
        };
        out.extend_from_slice(&self.payload);
        (out, csum_at)
    }

    /// The complete frame.
    pub fn build(&self) -> Vec<u8> {
        let mut f = Vec::with_capacity(128);
        f.extend_from_slice(&self.dst_mac);
        f.extend_from_slice(&self.src_mac);
        for (tpid, id) in &self.vlans {
            // Wire order: TPID1 TCI1 TPID2 TCI2 ... ETHERTYPE.
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&(id & 0x0fff).to_be_bytes());
        }
        let (mut l4, csum_at) = self.l4_bytes();
        let proto = self.l4_number();
        match &self.l3 {
            L3::V4 { src, dst, options, frag_offset, more_fragments } => {
                f.extend_from_slice(&ETH_P_IP.to_be_bytes());
                let hlen = 20 + options.len();
                let total = (hlen + l4.len()) as u16;
                let frag = (frag_offset & 0x1fff) | if *more_fragments { 0x2000 } else { 0 };
                let mut ip = vec![0x40 | (hlen / 4) as u8, 0];
                ip.extend_from_slice(&total.to_be_bytes());
                ip.extend_from_slice(&[0x12, 0x34]);
                ip.extend_from_slice(&frag.to_be_bytes());
                ip.extend_from_slice(&[64, proto, 0, 0]);
                ip.extend_from_slice(&src.octets());
                ip.extend_from_slice(&dst.octets());
                ip.extend_from_slice(options);
                let c = checksum(&[&ip]);
                ip[10..12].copy_from_slice(&c.to_be_bytes());
                if let Some(at) = csum_at {
                    let pseudo = pseudo_v4(*src, *dst, proto, l4.len());
                    let c = if proto == 1 { checksum(&[&l4]) } else { checksum(&[&pseudo, &l4]) };
                    l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
                }
                f.extend_from_slice(&ip);
            }
            L3::V6 { src, dst, ext } => {
                f.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
                let mut headers = Vec::new();
                for (i, e) in ext.iter().enumerate() {
                    let next = ext.get(i + 1).map_or(proto, Ipv6Ext::proto);
                    e.encode(next, &mut headers);
                }
                let first = ext.first().map_or(proto, Ipv6Ext::proto);
                if let Some(at) = csum_at {
                    let pseudo = pseudo_v6(*src, *dst, proto, l4.len());
                    let c = checksum(&[&pseudo, &l4]);
                    l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
                }
                f.extend_from_slice(&[0x60, 0, 0, 0]);
                f.extend_from_slice(&((headers.len() + l4.len()) as u16).to_be_bytes());
                f.extend_from_slice(&[first, 64]);
                f.extend_from_slice(&src.octets());
                f.extend_from_slice(&dst.octets());
                f.extend_from_slice(&headers);
            }
            L3::Raw { ethertype } => f.extend_from_slice(&ethertype.to_be_bytes()),
        }
        f.extend_from_slice(&l4);
        if let Some(n) = self.truncate {
            f.truncate(n);
        }
        f
    }
}

fn pseudo_v4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(12);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&[0, proto]);
    p.extend_from_slice(&(len as u16).to_be_bytes());
    p
}

fn pseudo_v6(src: Ipv6Addr, dst: Ipv6Addr, proto: u8, len: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(40);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&(len as u32).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, proto]);
    p
}

/// The Internet checksum (RFC 1071) over the concatenation of `parts`.
pub fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    let mut odd: Option<u8> = None;
    for part in parts {
        for &b in *part {
            match odd.take() {
                Some(hi) => sum += u32::from(u16::from_be_bytes([hi, b])),
                None => odd = Some(b),
            }
        }
    }
    if let Some(hi) = odd {
        sum += u32::from(u16::from_be_bytes([hi, 0]));
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const V4A: [u8; 4] = [198, 18, 0, 2];
    const V4B: [u8; 4] = [203, 0, 113, 10];

    fn v6(last: u16) -> Ipv6Addr {
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, last)
    }

    fn ipv4_header(frame: &[u8]) -> &[u8] {
        let ihl = (frame[14] & 0x0f) as usize * 4;
        &frame[14..14 + ihl]
    }

    #[test]
    fn ipv4_udp_lengths_and_checksums() {
        let f = Packet::ipv4(V4A, V4B).udp(4000, 53).payload(b"hello").build();
        assert_eq!(f.len(), 14 + 20 + 8 + 5);
        assert_eq!(checksum(&[ipv4_header(&f)]), 0);
        let l4 = &f[34..];
        let pseudo = pseudo_v4(V4A.into(), V4B.into(), 17, l4.len());
        assert_eq!(checksum(&[&pseudo, l4]), 0);
    }

    #[test]
    fn ipv4_options_grow_ihl() {
        let f = Packet::ipv4(V4A, V4B).ipv4_options(&[7, 3, 4]).tcp(1, 2, tcp_flags::SYN).build();
        assert_eq!(f[14] & 0x0f, 6);
        assert_eq!(checksum(&[ipv4_header(&f)]), 0);
        assert_eq!(f.len(), 14 + 24 + 20);
    }

    #[test]
    fn vlan_tags_precede_the_ethertype() {
        let f = Packet::ipv4(V4A, V4B).qinq(10).vlan(20).udp(1, 2).build();
        assert_eq!(&f[12..14], &ETH_P_8021AD.to_be_bytes());
        assert_eq!(&f[14..16], &10u16.to_be_bytes());
        assert_eq!(&f[16..18], &ETH_P_8021Q.to_be_bytes());
        assert_eq!(&f[18..20], &20u16.to_be_bytes());
        assert_eq!(&f[20..22], &ETH_P_IP.to_be_bytes());
    }

    #[test]
    fn ipv6_extension_chain_links_next_headers() {
        let f = Packet::ipv6(v6(1), v6(2))
            .ipv6_ext(Ipv6Ext::HopByHop { units: 0 })
            .ipv6_ext(Ipv6Ext::DestOpts { units: 1 })
            .tcp(1, 2, tcp_flags::SYN)
            .build();
        assert_eq!(f[14 + 6], 0); // first: hop-by-hop
        assert_eq!(f[54], 60); // hop-by-hop -> dest opts
        assert_eq!(f[62], 6); // dest opts -> tcp
        assert_eq!(u16::from_be_bytes([f[18], f[19]]) as usize, 8 + 16 + 20);
        let l4 = &f[54 + 8 + 16..];
        let pseudo = pseudo_v6(v6(1), v6(2), 6, l4.len());
        assert_eq!(checksum(&[&pseudo, l4]), 0);
    }

    proptest! {
        #[test]
        fn every_l4_checksum_verifies(sport: u16, dport: u16, payload in proptest::collection::vec(any::<u8>(), 0..64), kind in 0u8..3, v6_l3: bool) {
            let base = if v6_l3 { Packet::ipv6(v6(1), v6(2)) } else { Packet::ipv4(V4A, V4B) };
            let p = match kind { 0 => base.tcp(sport, dport, tcp_flags::ACK), 1 => base.udp(sport, dport), _ => base.icmp(8, 0) };
            let f = p.payload(&payload).build();
            let (l4, pseudo) = if v6_l3 {
                let l4 = &f[54..];
                let proto = f[20];
                (l4, pseudo_v6(v6(1), v6(2), proto, l4.len()))
            } else {
                let l4 = &f[34..];
                prop_assert_eq!(checksum(&[ipv4_header(&f)]), 0);
                let proto = f[23];
                (l4, if proto == 1 { Vec::new() } else { pseudo_v4(V4A.into(), V4B.into(), proto, l4.len()) })
            };
            prop_assert_eq!(checksum(&[&pseudo, l4]), 0);
        }
    }
}

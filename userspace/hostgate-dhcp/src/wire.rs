//! DHCPv4 on the wire, on top of dhcproto, with its traps handled here
//! (see ../shared/research/services.md §1.4): the magic cookie and the
//! fixed header are checked before dhcproto sees a packet (it checks
//! neither, and its setters panic on long fields); option 82 is read and
//! echoed as raw bytes, unchanged and last (dhcproto emits options in code
//! order, which would put 121 after it).

use std::net::Ipv4Addr;

use dhcproto::{
    v4::{fqdn::ClientFQDN, fqdn::FqdnFlags, DhcpOption, Flags, Message, MessageType, Opcode, OptionCode},
    Decodable, Encodable, Name,
};

use crate::leases::Lease;

/// The fixed BOOTP header, then the magic cookie.
const OPTIONS_AT: usize = 240;
const COOKIE: [u8; 4] = [99, 130, 83, 99];
/// Larger than any DHCP packet we accept (a full Ethernet frame's payload).
const MAX_LEN: usize = 1472;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("{0} bytes: shorter than a DHCP header")]
    Short(usize),
    #[error("{0} bytes: larger than any DHCP packet")]
    Oversized(usize),
    #[error("not a BOOTREQUEST")]
    NotRequest,
    #[error("hardware type/length is not Ethernet")]
    NotEthernet,
    #[error("bad magic cookie")]
    Cookie,
    #[error("no message type")]
    NoType,
    #[error("option {0}: malformed")]
    BadOption(u8),
    #[error("undecodable: {0}")]
    Decode(String),
}

/// What the server needs from a client's packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub msg: Message,
    pub kind: MessageType,
    pub chaddr: [u8; 6],
    pub client_id: Option<Vec<u8>>,
    pub requested: Option<Ipv4Addr>,
    pub server_id: Option<Ipv4Addr>,
    pub hostname: Option<String>,
    /// Client FQDN (option 81): its flags and name, as text.
    pub fqdn: Option<(u8, String)>,
    /// Option 82 as received, to echo unchanged.
    pub relay_info: Option<Vec<u8>>,
    /// Its circuit-id sub-option (1).
    pub circuit_id: Option<Vec<u8>>,
}

/// The options of an options area, walked ourselves: (offset, code,
/// value), pads skipped, stopping at End (255); `Err(code)` for an option
/// that runs past the data, after which the walk stops.
fn tlvs(data: &[u8]) -> impl Iterator<Item = Result<(usize, u8, &[u8]), u8>> + '_ {
    let mut at = 0;
    std::iter::from_fn(move || {
        while data.get(at) == Some(&0) {
            at += 1;
        }
        let code = *data.get(at).filter(|c| **c != 255)?;
        let start = at;
        let value = data.get(at + 1).and_then(|len| data.get(at + 2..at + 2 + *len as usize));
        let Some(value) = value else {
            at = data.len();
            return Some(Err(code));
        };
        at += 2 + value.len();
        Some(Ok((start, code, value)))
    })
}

/// The value of option (or sub-option) `code`, if present and whole.
fn find(data: &[u8], code: u8) -> Option<Vec<u8>> {
    tlvs(data).map_while(Result::ok).find(|(_, c, _)| *c == code).map(|(_, _, v)| v.to_vec())
}

/// Refuses what dhcproto 0.15 would trip on: an option running past the
/// packet, and options whose length its decoder asserts (debug builds
/// panic) or subtracts from: rapid commit (80) must be empty, client FQDN
/// (81) at least 3 bytes, client network interface (94) 3 bytes, BLQ status
/// (151) at least 1, BLQ times (152-155) 4.
fn check_options(options: &[u8]) -> Result<(), WireError> {
    for tlv in tlvs(options) {
        let (_, code, value) = tlv.map_err(WireError::BadOption)?;
        let len = value.len();
        let ok = match code {
            80 => len == 0,
            81 => len >= 3,
            94 => len == 3,
            151 => len >= 1,
            152..=155 => len == 4,
            _ => true,
        };
        if !ok {
            return Err(WireError::BadOption(code));
        }
    }
    Ok(())
}

/// Checks and decodes a client's packet.
pub fn parse(bytes: &[u8]) -> Result<Request, WireError> {
    if bytes.len() < OPTIONS_AT {
        return Err(WireError::Short(bytes.len()));
    }
    if bytes.len() > MAX_LEN {
        return Err(WireError::Oversized(bytes.len()));
    }
    if bytes[0] != 1 {
        return Err(WireError::NotRequest);
    }
    if bytes[1] != 1 || bytes[2] != 6 {
        return Err(WireError::NotEthernet);
    }
    if bytes[236..240] != COOKIE {
        return Err(WireError::Cookie);
    }
    check_options(&bytes[OPTIONS_AT..])?;
    let msg = Message::from_bytes(bytes).map_err(|e| WireError::Decode(e.to_string()))?;
    let kind = msg.opts().msg_type().ok_or(WireError::NoType)?;
    let mut chaddr = [0u8; 6];
    chaddr.copy_from_slice(&bytes[28..34]);
    let opts = msg.opts();
    let client_id = match opts.get(OptionCode::ClientIdentifier) {
        Some(DhcpOption::ClientIdentifier(id)) => Some(id.clone()),
        _ => None,
    };
    let requested = match opts.get(OptionCode::RequestedIpAddress) {
        Some(DhcpOption::RequestedIpAddress(a)) => Some(*a),
        _ => None,
    };
    let server_id = match opts.get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(a)) => Some(*a),
        _ => None,
    };
    let hostname = match opts.get(OptionCode::Hostname) {
        Some(DhcpOption::Hostname(h)) => Some(h.clone()),
        _ => None,
    };
    let fqdn = match opts.get(OptionCode::ClientFQDN) {
        Some(DhcpOption::ClientFQDN(f)) => Some((u8::from(f.flags()), f.domain().to_ascii())),
        _ => None,
    };
    let relay_info = find(&bytes[OPTIONS_AT..], 82);
    let circuit_id = relay_info.as_deref().and_then(|i| find(i, 1));
    Ok(Request { msg, kind, chaddr, client_id, requested, server_id, hostname, fqdn, relay_info, circuit_id })
}

/// What every reply of a network carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplyOptions {
    pub server_id: Ipv4Addr,
    pub prefix_len: u8,
    pub router: Ipv4Addr,
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    /// Domain search list (option 119).
    pub search: Vec<String>,
    pub mtu: Option<u16>,
    /// Classless static routes (option 121): destination, prefix length,
    /// router (0.0.0.0: on-link).
    pub routes: Vec<(Ipv4Addr, u8, Ipv4Addr)>,
    pub lease_secs: u32,
    /// Whether this server publishes lease hostnames in DNS (A and PTR),
    /// which is what a client FQDN option is answered with.
    pub registers_names: bool,
}

/// What to send back.
pub enum Reply<'a> {
    Offer(&'a Lease),
    Ack(&'a Lease),
    /// The answer to an INFORM: configuration, no address.
    Inform,
    Nak,
}

/// Encodes the reply to `req`. Option 82, if the request had it, is echoed
/// byte for byte as the last option.
pub fn reply(req: &Request, answer: Reply<'_>, o: &ReplyOptions) -> Result<Vec<u8>, WireError> {
    let (kind, yiaddr, lease) = match answer {
        Reply::Offer(l) => (MessageType::Offer, l.addr, Some(l)),
        Reply::Ack(l) => (MessageType::Ack, l.addr, Some(l)),
        Reply::Inform => (MessageType::Ack, Ipv4Addr::UNSPECIFIED, None),
        Reply::Nak => (MessageType::Nak, Ipv4Addr::UNSPECIFIED, None),
    };
    let m = &req.msg;
    let ciaddr = if kind == MessageType::Ack { m.ciaddr() } else { Ipv4Addr::UNSPECIFIED };
    let mut out = Message::new_with_id(m.xid(), ciaddr, yiaddr, Ipv4Addr::UNSPECIFIED, m.giaddr(), &req.chaddr);
    out.set_opcode(Opcode::BootReply);
    out.set_flags(if m.flags().broadcast() { Flags::default().set_broadcast() } else { Flags::default() });
    let opts = out.opts_mut();
    opts.insert(DhcpOption::MessageType(kind));
    opts.insert(DhcpOption::ServerIdentifier(o.server_id));
    if kind != MessageType::Nak {
        let mask = Ipv4Addr::from(u32::MAX.checked_shl(32 - u32::from(o.prefix_len)).unwrap_or(0));
        if lease.is_some() {
            opts.insert(DhcpOption::AddressLeaseTime(o.lease_secs));
            opts.insert(DhcpOption::Renewal(o.lease_secs / 2));
            opts.insert(DhcpOption::Rebinding(o.lease_secs / 8 * 7));
        }
        opts.insert(DhcpOption::SubnetMask(mask));
        opts.insert(DhcpOption::Router(vec![o.router]));
        if !o.dns.is_empty() {
            opts.insert(DhcpOption::DomainNameServer(o.dns.clone()));
        }
        if let Some(d) = &o.domain {
            opts.insert(DhcpOption::DomainName(d.clone()));
        }
        if let Some(mtu) = o.mtu {
            opts.insert(DhcpOption::InterfaceMtu(mtu));
        }
        let search: Vec<Name> = o.search.iter().filter_map(|d| Name::from_ascii(d).ok()).collect();
        if !search.is_empty() {
            opts.insert(DhcpOption::DomainSearch(search));
        }
        if !o.routes.is_empty() {
            let routes = o
                .routes
                .iter()
                .filter_map(|(dst, len, via)| Some((ipnet::Ipv4Net::new(*dst, *len).ok()?.trunc(), *via)))
                .collect();
            opts.insert(DhcpOption::ClasslessStaticRoute(routes));
        }
        if let Some(name) = lease.and_then(|l| l.hostname.as_ref()) {
            opts.insert(DhcpOption::Hostname(name.clone()));
        }
        if let Some(fqdn) = fqdn_answer(req, o.registers_names) {
            opts.insert(DhcpOption::ClientFQDN(fqdn));
        }
    }
    let mut bytes = out.to_vec().map_err(|e| WireError::Decode(e.to_string()))?;
    if let Some(info) = &req.relay_info {
        append_last(&mut bytes, 82, info);
    }
    Ok(bytes)
}

/// The answer to a client FQDN option (RFC 4702 §4): the name as the
/// client sent it, encoded the way it did (E). A server that publishes
/// lease names says it updates the A record itself (S=1; O=1 when the
/// client had asked to do it, S=0); one that does not says it updates
/// nothing (N=1), so the client is never told a name exists that does not.
fn fqdn_answer(req: &Request, registers_names: bool) -> Option<ClientFQDN> {
    let (flags, name) = req.fqdn.as_ref()?;
    let asked = FqdnFlags::new(*flags);
    let name = Name::from_ascii(name).ok()?;
    let answer = match registers_names {
        true => FqdnFlags::new(0).set_s(true).set_o(!asked.s()),
        false => FqdnFlags::new(0).set_n(true),
    };
    Some(ClientFQDN::new(answer.set_e(asked.e()), name))
}

/// The host name a client gave: option 12, else the first label of its
/// FQDN (option 81).
pub fn client_hostname(req: &Request) -> Option<String> {
    let from_fqdn = || req.fqdn.as_ref().and_then(|(_, n)| n.split('.').next().filter(|l| !l.is_empty()));
    req.hostname.clone().or_else(|| from_fqdn().map(str::to_string))
}

/// Inserts option `code` after the last option of an encoded message, so
/// before its End (adding End if there was none).
fn append_last(bytes: &mut Vec<u8>, code: u8, value: &[u8]) {
    let options = bytes.get(OPTIONS_AT..).unwrap_or_default();
    let end = tlvs(options).map_while(Result::ok).last().map_or(0, |(at, _, v)| at + 2 + v.len());
    let at = (OPTIONS_AT + end).min(bytes.len());
    let had_end = bytes[at..].contains(&255);
    let value = &value[..value.len().min(255)];
    let mut opt = vec![code, value.len() as u8];
    opt.extend_from_slice(value);
    bytes.splice(at..at, opt);
    if !had_end {
        bytes.push(255);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::leases::State;

    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

    fn discover(extra: &[u8]) -> Vec<u8> {
        let mut m = Message::new_with_id(
            0x1234,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::new(198, 51, 100, 1),
            &MAC,
        );
        m.opts_mut().insert(DhcpOption::MessageType(MessageType::Discover));
        m.opts_mut().insert(DhcpOption::ClientIdentifier(vec![1, 2, 0, 0, 0, 0, 1]));
        let mut bytes = m.to_vec().expect("encode");
        if !extra.is_empty() {
            append_last(&mut bytes, extra[0], &extra[1..]);
        }
        bytes
    }

    fn options() -> ReplyOptions {
        ReplyOptions {
            server_id: Ipv4Addr::new(198, 51, 100, 1),
            prefix_len: 24,
            router: Ipv4Addr::new(198, 51, 100, 1),
            dns: vec![Ipv4Addr::new(198, 51, 100, 1)],
            domain: Some("acme.example".into()),
            search: vec!["acme.example".into(), "example.net".into()],
            mtu: Some(1500),
            routes: vec![(Ipv4Addr::UNSPECIFIED, 0, Ipv4Addr::new(198, 51, 100, 1))],
            lease_secs: 3600,
            registers_names: false,
        }
    }

    #[test]
    fn headers_are_checked_before_decoding() {
        let good = discover(&[]);
        assert!(parse(&good).is_ok());
        assert_eq!(parse(&good[..100]), Err(WireError::Short(100)));
        let mut cookie = good.clone();
        cookie[236] = 0;
        assert_eq!(parse(&cookie), Err(WireError::Cookie));
        let mut reply = good.clone();
        reply[0] = 2;
        assert_eq!(parse(&reply), Err(WireError::NotRequest));
        let mut hlen = good.clone();
        hlen[2] = 16;
        assert_eq!(parse(&hlen), Err(WireError::NotEthernet));
        assert_eq!(parse(&vec![1u8; 2000]), Err(WireError::Oversized(2000)));
    }

    #[test]
    fn relay_information_is_echoed_unchanged_and_last() {
        // Option 82: circuit-id "port7", remote-id "sw1".
        let info = [1, 5, b'p', b'o', b'r', b't', b'7', 2, 3, b's', b'w', b'1'];
        let mut raw = vec![82];
        raw.extend_from_slice(&info);
        let req = parse(&discover(&raw)).expect("parse");
        assert_eq!(req.circuit_id.as_deref(), Some(&b"port7"[..]));
        assert_eq!(req.client_id.as_deref(), Some(&[1, 2, 0, 0, 0, 0, 1][..]));
        let lease = Lease {
            addr: Ipv4Addr::new(198, 51, 100, 10),
            client: None,
            mac: MAC,
            hostname: None,
            state: State::Offered,
            expires: 0,
            port: None,
        };
        let out = reply(&req, Reply::Offer(&lease), &options()).expect("encode");
        // Walk the options: 82 is the last before End, byte for byte.
        let mut i = OPTIONS_AT;
        let mut last = None;
        while out[i] != 255 {
            let len = out[i + 1] as usize;
            last = Some((out[i], out[i + 2..i + 2 + len].to_vec()));
            i += 2 + len;
        }
        assert_eq!(last, Some((82, info.to_vec())));
        let back = Message::from_bytes(&out).expect("decodes");
        assert_eq!(back.yiaddr(), lease.addr);
        assert_eq!(back.opts().msg_type(), Some(MessageType::Offer));
        assert_eq!(back.giaddr(), Ipv4Addr::new(198, 51, 100, 1), "giaddr kept for the relay");
    }

    #[test]
    fn routed_single_addresses_inform_and_fqdn() {
        // A routed /32: mask 255.255.255.255, the gateway on-link through 121.
        let gw = Ipv4Addr::new(198, 51, 100, 1);
        let o = ReplyOptions {
            prefix_len: 32,
            routes: vec![(gw, 32, Ipv4Addr::UNSPECIFIED), (Ipv4Addr::UNSPECIFIED, 0, gw)],
            ..options()
        };
        // FQDN "web1.acme.example", E set (wire format), S set (update it for me).
        let name = Name::from_ascii("web1.acme.example.").expect("name");
        let mut m = Message::from_bytes(&discover(&[])).expect("decode");
        m.opts_mut().insert(DhcpOption::ClientFQDN(ClientFQDN::new(FqdnFlags::new(0b0101), name)));
        m.opts_mut().insert(DhcpOption::MessageType(MessageType::Request));
        let req = parse(&m.to_vec().expect("encode")).expect("parse");
        assert_eq!(req.fqdn.as_ref().map(|f| f.1.as_str()), Some("web1.acme.example."));
        let lease = Lease {
            addr: Ipv4Addr::new(203, 0, 113, 7),
            client: None,
            mac: MAC,
            hostname: Some("web1".into()),
            state: State::Bound,
            expires: 0,
            port: None,
        };
        let back = Message::from_bytes(&reply(&req, Reply::Ack(&lease), &o).expect("encode")).expect("decodes");
        let opts = back.opts();
        assert_eq!(opts.get(OptionCode::SubnetMask), Some(&DhcpOption::SubnetMask(Ipv4Addr::BROADCAST)));
        let Some(DhcpOption::ClasslessStaticRoute(routes)) = opts.get(OptionCode::ClasslessStaticRoute) else {
            panic!("no option 121")
        };
        assert_eq!(routes.len(), 2);
        assert_eq!((routes[0].0.prefix_len(), routes[0].1), (32, Ipv4Addr::UNSPECIFIED));
        assert!(matches!(opts.get(OptionCode::DomainSearch), Some(DhcpOption::DomainSearch(d)) if d.len() == 2));
        assert_eq!(opts.get(OptionCode::Hostname), Some(&DhcpOption::Hostname("web1".into())));
        let Some(DhcpOption::ClientFQDN(f)) = opts.get(OptionCode::ClientFQDN) else { panic!("no option 81") };
        assert!(f.flags().n() && !f.flags().s() && f.flags().e(), "without names, we tell it we update nothing");
        let naming = ReplyOptions { registers_names: true, ..o.clone() };
        let back = Message::from_bytes(&reply(&req, Reply::Ack(&lease), &naming).expect("encode")).expect("decodes");
        let Some(DhcpOption::ClientFQDN(f)) = back.opts().get(OptionCode::ClientFQDN) else { panic!("no option 81") };
        assert!(!f.flags().n() && f.flags().s() && !f.flags().o(), "with names: we update A, as it asked");
        let mut bare = req.clone();
        bare.hostname = None;
        assert_eq!(client_hostname(&bare).as_deref(), Some("web1"), "the FQDN's first label");
        // INFORM: configuration without an address or lease times.
        let inform = Message::from_bytes(&reply(&req, Reply::Inform, &o).expect("encode")).expect("decodes");
        assert_eq!(inform.opts().msg_type(), Some(MessageType::Ack));
        assert_eq!(inform.yiaddr(), Ipv4Addr::UNSPECIFIED);
        assert!(inform.opts().get(OptionCode::AddressLeaseTime).is_none());
        assert!(inform.opts().get(OptionCode::DomainNameServer).is_some());
    }

    proptest! {
        /// Arbitrary bytes never panic the parser.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
            let _ = parse(&bytes);
        }

        /// Nor do valid headers followed by arbitrary options.
        #[test]
        fn arbitrary_options_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..400)) {
            let mut bytes = discover(&[]);
            bytes.truncate(OPTIONS_AT);
            bytes.extend(tail);
            if let Ok(req) = parse(&bytes) {
                let _ = reply(&req, Reply::Nak, &options());
            }
        }
    }
}

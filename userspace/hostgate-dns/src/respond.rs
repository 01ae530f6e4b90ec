//! Query bytes in, response bytes out (or nothing: drop).
//!
//! - shorter than a header, or QR=1 (a response: answering it would let
//!   two servers ping-pong): dropped;
//! - a readable header but an undecodable message: FORMERR built from the
//!   header alone;
//! - an opcode other than QUERY: NOTIMP. The daemon takes NOTIFY first:
//!   [`decode`] gives it the [`Request`] to look at before
//!   [`respond_request`];
//! - QDCOUNT other than 1, or a second OPT: FORMERR;
//! - EDNS version above 0: BADVERS (RFC 6891 §6.1.3);
//! - class other than IN: REFUSED; a name we have no zone for: REFUSED;
//! - AXFR/IXFR: REFUSED over UDP (RFC 5936 §4.2; NSD says NOTIMP), and
//!   over TCP for a zone without transfer settings (as NSD without an
//!   ACL); the daemon answers the others with [`crate::xfr::transfer`];
//! - size: UDP without EDNS 512 bytes; with EDNS the client's payload size
//!   clamped to [`Config::udp_payload_min`, `udp_payload_max`] (1232 by
//!   default, the DNS flag day 2020 value); TCP 65535. If a response does
//!   not fit, the additional section goes first (without TC: it is
//!   optional, RFC 2181 §9), except a referral's glue, which is required
//!   (RFC 9471); if it still does not fit, the reply is the question (and
//!   OPT) with TC=1, so the client retries over TCP: what NSD 4.6 sent
//!   for the same oversized RRset (`examples/compare.rs`). A resolver
//!   ignores a truncated answer's records anyway;
//! - the question is echoed as received (case included);
//! - UDP responses pass response rate limiting when the daemon gives an
//!   [`Rrl`]: dropped, or slipped as an empty TC=1 reply.

use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RecordType};

use crate::catalog::Catalog;
use crate::lookup::Outcome;
use crate::rrl::{Action, ResponseClass, Rrl};

const HEADER_LEN: usize = 12;
const PLAIN_UDP_LIMIT: usize = 512;
const TCP_LIMIT: usize = 65535;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// Who asked, how, and when (for RRL; any monotonic milliseconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Client {
    pub addr: IpAddr,
    pub transport: Transport,
    pub now_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub udp_payload_min: u16,
    /// Also the size we advertise in our OPT.
    pub udp_payload_max: u16,
}

impl Default for Config {
    fn default() -> Self {
        Self { udp_payload_min: 512, udp_payload_max: 1232 }
    }
}

/// What the responder did, for `hostgate status`. Add them up with
/// [`Counters::add`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub queries: u64,
    pub udp: u64,
    pub tcp: u64,
    /// Responses by rcode.
    pub noerror: u64,
    pub nxdomain: u64,
    pub servfail: u64,
    pub formerr: u64,
    pub notimp: u64,
    pub refused: u64,
    pub badvers: u64,
    /// NOERROR breakdown.
    pub nodata: u64,
    pub referrals: u64,
    /// Replies sent with TC=1 because they did not fit.
    pub truncated: u64,
    /// Dropped without a reply: too short, QR=1.
    pub dropped: u64,
    pub rate_limited_dropped: u64,
    /// Sent as an empty TC=1 reply by RRL's slip.
    pub rate_limited_slipped: u64,
}

impl Counters {
    pub fn add(&mut self, o: &Counters) {
        let pairs = [
            (&mut self.queries, o.queries),
            (&mut self.udp, o.udp),
            (&mut self.tcp, o.tcp),
            (&mut self.noerror, o.noerror),
            (&mut self.nxdomain, o.nxdomain),
            (&mut self.servfail, o.servfail),
            (&mut self.formerr, o.formerr),
            (&mut self.notimp, o.notimp),
            (&mut self.refused, o.refused),
            (&mut self.badvers, o.badvers),
            (&mut self.nodata, o.nodata),
            (&mut self.referrals, o.referrals),
            (&mut self.truncated, o.truncated),
            (&mut self.dropped, o.dropped),
            (&mut self.rate_limited_dropped, o.rate_limited_dropped),
            (&mut self.rate_limited_slipped, o.rate_limited_slipped),
        ];
        for (mine, theirs) in pairs {
            *mine = mine.wrapping_add(theirs);
        }
    }

    fn rcode(&mut self, rcode: ResponseCode) {
        let counter = match rcode {
            ResponseCode::NoError => &mut self.noerror,
            ResponseCode::NXDomain => &mut self.nxdomain,
            ResponseCode::FormErr => &mut self.formerr,
            ResponseCode::NotImp => &mut self.notimp,
            ResponseCode::Refused => &mut self.refused,
            ResponseCode::BADVERS => &mut self.badvers,
            _ => &mut self.servfail,
        };
        *counter += 1;
    }
}

/// A decoded query, for the daemon to look at (opcode, question) before
/// [`respond_request`].
#[derive(Clone, Debug)]
pub struct Request {
    pub message: Message,
}

impl Request {
    pub fn op_code(&self) -> OpCode {
        self.message.metadata.op_code
    }

    pub fn query(&self) -> Option<&Query> {
        self.message.queries.first()
    }
}

/// The first step: drop, a reply already (FORMERR), or a request.
#[derive(Clone, Debug)]
pub enum Decoded {
    Drop,
    Reply(Vec<u8>),
    Request(Request),
}

/// Decodes a query, answering at once what cannot be a request. Counts
/// the query, so a daemon that intercepts some (NOTIFY) counts them too.
pub fn decode(bytes: &[u8], transport: Transport, counters: &mut Counters) -> Decoded {
    counters.queries += 1;
    match transport {
        Transport::Udp => counters.udp += 1,
        Transport::Tcp => counters.tcp += 1,
    }
    let Some(header) = bytes.get(..HEADER_LEN) else {
        counters.dropped += 1;
        return Decoded::Drop;
    };
    if header[2] & 0x80 != 0 {
        counters.dropped += 1;
        return Decoded::Drop;
    }
    match Message::from_vec(bytes) {
        Ok(message) => Decoded::Request(Request { message }),
        Err(_) => {
            counters.rcode(ResponseCode::FormErr);
            Decoded::Reply(formerr_from_header(header))
        }
    }
}

/// The whole path: decode, answer, limit, encode.
pub fn respond(
    catalog: &Catalog,
    config: &Config,
    rrl: Option<&mut Rrl>,
    counters: &mut Counters,
    bytes: &[u8],
    client: &Client,
) -> Option<Vec<u8>> {
    match decode(bytes, client.transport, counters) {
        Decoded::Drop => None,
        Decoded::Reply(reply) => Some(reply),
        Decoded::Request(request) => respond_request(catalog, config, rrl, counters, &request, client),
    }
}

/// Answers a decoded request (the daemon calls this for what it does not
/// intercept).
pub fn respond_request(
    catalog: &Catalog,
    config: &Config,
    rrl: Option<&mut Rrl>,
    counters: &mut Counters,
    request: &Request,
    client: &Client,
) -> Option<Vec<u8>> {
    match respond_or_forward(catalog, config, rrl, counters, request, client, false) {
        Responded::Reply(reply) => reply,
        // not without may_forward
        Responded::Forward | Responded::Chase { .. } => None,
    }
}

/// What [`respond_or_forward`] decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Responded {
    /// The reply, or nothing (dropped).
    Reply(Option<Vec<u8>>),
    /// Not ours to answer, and the client may use the resolver: the daemon
    /// answers from its cache or an upstream (`crate::resolver`).
    Forward,
    /// Ours, but our answer ends in a CNAME to a name outside our zones:
    /// a resolver's client expects the chain followed, so the daemon asks
    /// the resolver for `target` ([`crate::resolver::chase_query`]) and
    /// puts our records in front of its answer
    /// ([`crate::resolver::chased_reply`]).
    Chase { answers: Vec<hickory_proto::rr::Record>, target: Name },
}

/// As [`respond_request`], but when `may_forward` (the client is in a
/// container network and there are upstreams) a recursive query for a
/// name outside our zones, or below one of our delegations, is handed
/// back as [`Responded::Forward`] instead of REFUSED or a referral.
pub fn respond_or_forward(
    catalog: &Catalog,
    config: &Config,
    rrl: Option<&mut Rrl>,
    counters: &mut Counters,
    request: &Request,
    client: &Client,
    may_forward: bool,
) -> Responded {
    let query = &request.message;
    if may_forward && crate::resolver::forwardable(query) {
        if !ours(catalog, query) {
            return Responded::Forward;
        }
        if let Some((answers, target)) = leaves_our_zones(catalog, query) {
            return Responded::Chase { answers, target };
        }
    }
    Responded::Reply(answer_request(catalog, config, rrl, counters, request, client))
}

/// Our answer's records and the last CNAME's target, when the answer ends
/// in a CNAME chain leaving the zones we answer for (and the type asked
/// is not CNAME or ANY, which the CNAME itself answers).
fn leaves_our_zones(catalog: &Catalog, query: &Message) -> Option<(Vec<hickory_proto::rr::Record>, Name)> {
    let q = query.queries.first()?;
    if matches!(q.query_type(), RecordType::CNAME | RecordType::ANY) {
        return None;
    }
    let answer = catalog.find(q.name(), q.query_type())?.lookup(q.name(), q.query_type());
    if answer.outcome != Outcome::Answer || answer.answers.iter().any(|r| r.record_type() == q.query_type()) {
        return None;
    }
    let target = match &answer.answers.last()?.data {
        hickory_proto::rr::RData::CNAME(cname) => cname.0.clone(),
        _ => return None,
    };
    let ours = catalog.find(&target, q.query_type()).is_some_and(|zone| {
        !matches!(zone.lookup(&target, q.query_type()).outcome, Outcome::Referral | Outcome::OutOfZone)
    });
    (!ours).then_some((answer.answers, target))
}

/// Whether we answer the (single) question from our own data: a zone of
/// ours holds it, and not below a delegation.
fn ours(catalog: &Catalog, query: &Message) -> bool {
    let Some(q) = query.queries.first() else { return true };
    let Some(zone) = catalog.find(q.name(), q.query_type()) else { return false };
    !matches!(zone.lookup(q.name(), q.query_type()).outcome, Outcome::Referral | Outcome::OutOfZone)
}

/// A response built elsewhere (the resolver's), counted by rcode and
/// encoded within the client's size limit.
pub(crate) fn finish(
    message: Message,
    config: &Config,
    query: &Message,
    transport: Transport,
    counters: &mut Counters,
) -> Option<Vec<u8>> {
    counters.rcode(message.metadata.response_code);
    let limit = size_limit(config, query, transport);
    encode(Reply { message, additional_required: false }, limit, counters)
}

fn answer_request(
    catalog: &Catalog,
    config: &Config,
    rrl: Option<&mut Rrl>,
    counters: &mut Counters,
    request: &Request,
    client: &Client,
) -> Option<Vec<u8>> {
    let prepared = prepare(catalog, config, &request.message, client.transport);
    if client.transport == Transport::Udp {
        if let Some(rrl) = rrl {
            let flow = prepared.flow();
            match rrl.check(client.addr, flow.class, &flow.name, flow.qtype, client.now_ms) {
                Action::Send => {}
                Action::Drop => {
                    counters.rate_limited_dropped += 1;
                    return None;
                }
                Action::Slip => {
                    counters.rate_limited_slipped += 1;
                    return prepared.slip();
                }
            }
        }
    }
    prepared.finish(counters)
}

/// The flow RRL accounts a response to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flow {
    pub class: ResponseClass,
    pub name: Name,
    pub qtype: RecordType,
}

/// A response built but not yet limited, counted or encoded.
struct Prepared {
    reply: Reply,
    outcome: Option<Found>,
    limit: usize,
    qtype: RecordType,
}

fn prepare(catalog: &Catalog, config: &Config, query: &Message, transport: Transport) -> Prepared {
    let (mut reply, outcome) = build(catalog, query);
    let limit = size_limit(config, query, transport);
    if query.edns.is_some() {
        // version 0, the one we speak (also in BADVERS), no DO: we do not sign
        let mut ours = Edns::new();
        ours.set_max_payload(config.udp_payload_max.max(512));
        reply.message.edns = Some(ours);
    }
    let qtype = query.queries.first().map_or(RecordType::NULL, |q| q.query_type());
    Prepared { reply, outcome, limit, qtype }
}

impl Prepared {
    fn flow(&self) -> Flow {
        let (class, name) = rrl_flow(&self.outcome);
        Flow { class, name, qtype: self.qtype }
    }

    /// RRL's slip: the empty TC=1 reply.
    fn slip(&self) -> Option<Vec<u8>> {
        truncated(&self.reply.message).to_vec().ok()
    }

    /// Counted and encoded within the limit.
    fn finish(self, counters: &mut Counters) -> Option<Vec<u8>> {
        count(counters, &self.reply.message, &self.outcome);
        encode(self.reply, self.limit, counters)
    }
}

/// A UDP query's whole fate as a function of its bytes (the ID aside: it
/// is copied to the reply's first two bytes and nowhere else) and the
/// catalog, for [`crate::fast::AnswerCache`] to keep and replay: what
/// [`respond`] would send and count, and what RRL would account it to
/// and send when it slips.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compiled {
    /// The reply when it is sent (`None`: nothing, as [`respond`] when an
    /// encoding failed).
    pub reply: Option<Vec<u8>>,
    /// What sending it counts, the query itself included.
    pub counted: Counters,
    /// RRL's flow and slip reply; `None` for replies RRL never sees
    /// (FORMERR from the header).
    pub limited: Option<(Flow, Option<Vec<u8>>)>,
}

/// [`respond`] over UDP without RRL, split into what is sent and what RRL
/// would need; `None` for what is not a QUERY (the daemon intercepts
/// NOTIFY) or is dropped unanswered (too short, QR=1): those take
/// [`respond`].
pub fn compile(catalog: &Catalog, config: &Config, bytes: &[u8]) -> Option<Compiled> {
    // QR=0, opcode QUERY
    if bytes.get(2)? & 0xf8 != 0 {
        return None;
    }
    let mut counted = Counters::default();
    let request = match decode(bytes, Transport::Udp, &mut counted) {
        Decoded::Drop => return None,
        Decoded::Reply(formerr) => return Some(Compiled { reply: Some(formerr), counted, limited: None }),
        Decoded::Request(r) => r,
    };
    let prepared = prepare(catalog, config, &request.message, Transport::Udp);
    let limited = Some((prepared.flow(), prepared.slip()));
    let reply = prepared.finish(&mut counted);
    Some(Compiled { reply, counted, limited })
}

/// What the lookup found, for RRL and the counters.
struct Found {
    outcome: Outcome,
    rrl_name: Name,
}

/// A response being built, and whether its additional records are
/// required.
struct Reply {
    message: Message,
    additional_required: bool,
}

/// The response message (without OPT) and what the lookup found, if it
/// got that far.
fn build(catalog: &Catalog, query: &Message) -> (Reply, Option<Found>) {
    let mut message = Message::response(query.metadata.id, query.metadata.op_code);
    message.metadata.recursion_desired = query.metadata.recursion_desired;
    message.metadata.checking_disabled = query.metadata.checking_disabled;
    message.queries = query.queries.clone();
    let reply = |mut message: Message, rcode| {
        message.metadata.response_code = rcode;
        (Reply { message, additional_required: false }, None)
    };
    if query.metadata.op_code != OpCode::Query {
        return reply(message, ResponseCode::NotImp);
    }
    if query.edns.as_ref().is_some_and(|e| e.version() > 0) {
        return reply(message, ResponseCode::BADVERS);
    }
    let [q] = &query.queries[..] else { return reply(message, ResponseCode::FormErr) };
    if q.query_class() != DNSClass::IN {
        return reply(message, ResponseCode::Refused);
    }
    if matches!(q.query_type(), RecordType::AXFR | RecordType::IXFR) {
        return reply(message, ResponseCode::Refused);
    }
    let Some(zone) = catalog.find(q.name(), q.query_type()) else { return reply(message, ResponseCode::Refused) };
    let answer = zone.lookup(q.name(), q.query_type());
    if answer.outcome == Outcome::OutOfZone {
        return reply(message, ResponseCode::Refused);
    }
    message.metadata.authoritative = answer.authoritative;
    message.metadata.response_code = match answer.outcome {
        Outcome::NxDomain => ResponseCode::NXDomain,
        _ => ResponseCode::NoError,
    };
    let found = Found { outcome: answer.outcome, rrl_name: answer.rrl_name };
    message.answers = answer.answers;
    message.authorities = answer.authority;
    message.additionals = answer.additional;
    (Reply { message, additional_required: answer.additional_required }, Some(found))
}

/// The largest reply the client takes.
fn size_limit(config: &Config, query: &Message, transport: Transport) -> usize {
    match (transport, &query.edns) {
        (Transport::Tcp, _) => TCP_LIMIT,
        (Transport::Udp, None) => PLAIN_UDP_LIMIT,
        (Transport::Udp, Some(edns)) => {
            let lo = config.udp_payload_min.max(512);
            let hi = config.udp_payload_max.max(lo);
            usize::from(edns.max_payload().clamp(lo, hi))
        }
    }
}

/// RRL's view of a response: its class and the name it is accounted to.
fn rrl_flow(answer: &Option<Found>) -> (ResponseClass, Name) {
    // errors of every name are one flow per client prefix
    let Some(answer) = answer else { return (ResponseClass::Error, Name::root()) };
    let class = match answer.outcome {
        Outcome::Answer => ResponseClass::Positive,
        Outcome::NoData => ResponseClass::NoData,
        Outcome::NxDomain => ResponseClass::NxDomain,
        Outcome::Referral => ResponseClass::Referral,
        Outcome::OutOfZone => ResponseClass::Error,
    };
    (class, answer.rrl_name.clone())
}

fn count(counters: &mut Counters, message: &Message, outcome: &Option<Found>) {
    counters.rcode(message.metadata.response_code);
    match outcome.as_ref().map(|a| a.outcome) {
        Some(Outcome::NoData) => counters.nodata += 1,
        Some(Outcome::Referral) => counters.referrals += 1,
        _ => {}
    }
}

/// Encodes within `limit`: without the optional additional records if
/// need be, else truncated to the question.
fn encode(mut reply: Reply, limit: usize, counters: &mut Counters) -> Option<Vec<u8>> {
    let bytes = match reply.message.to_vec() {
        Ok(b) => b,
        Err(_) => return servfail(&reply.message, counters),
    };
    if bytes.len() <= limit {
        return Some(bytes);
    }
    if !reply.additional_required && !reply.message.additionals.is_empty() {
        reply.message.additionals.clear();
        if let Ok(bytes) = reply.message.to_vec() {
            if bytes.len() <= limit {
                return Some(bytes);
            }
        }
    }
    counters.truncated += 1;
    truncated(&reply.message).to_vec().ok()
}

/// The question (and OPT) with TC=1.
fn truncated(message: &Message) -> Message {
    let mut t = message.truncate();
    t.metadata.truncation = true;
    t
}

/// A response that could not be encoded: SERVFAIL with the question.
fn servfail(message: &Message, counters: &mut Counters) -> Option<Vec<u8>> {
    let mut m = message.truncate();
    m.metadata.truncation = false;
    m.metadata.authoritative = false;
    m.metadata.response_code = ResponseCode::ServFail;
    counters.rcode(ResponseCode::ServFail);
    m.to_vec().ok()
}

/// FORMERR from the raw header of an undecodable query: id, opcode and RD
/// kept, no sections.
fn formerr_from_header(header: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; HEADER_LEN];
    out[0] = header[0];
    out[1] = header[1];
    // QR, the opcode bits, RD
    out[2] = 0x80 | (header[2] & 0x79);
    out[3] = ResponseCode::FormErr.low();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lookup::IndexedZone;
    use crate::rrl::RrlConfig;
    use hickory_proto::op::MessageType;
    use proptest::prelude::*;
    use std::str::FromStr;

    fn catalog() -> Catalog {
        let big: String = (0..40).map(|i| format!("big TXT \"{i:02} {}\"\n", "x".repeat(60))).collect();
        let text = format!("{}{big}", crate::lookup::tests::ZONE);
        let origin = Name::from_str("example.com.").unwrap();
        let zone = crate::master::parse(&text, "t", &origin).unwrap_or_else(|e| panic!("{e:?}"));
        [IndexedZone::new(&zone)].into_iter().collect()
    }

    fn query(name: &str, qtype: RecordType, edns: Option<u16>) -> Message {
        let mut m = Message::new(0x1234, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_str(name).unwrap(), qtype));
        if let Some(size) = edns {
            let mut e = Edns::new();
            e.set_max_payload(size);
            m.set_edns(e);
        }
        m
    }

    fn client(transport: Transport) -> Client {
        Client { addr: "198.51.100.7".parse().unwrap(), transport, now_ms: 0 }
    }

    fn ask_bytes(bytes: &[u8], transport: Transport) -> Option<Vec<u8>> {
        respond(&catalog(), &Config::default(), None, &mut Counters::default(), bytes, &client(transport))
    }

    fn ask(m: &Message, transport: Transport) -> Message {
        let reply = ask_bytes(&m.to_vec().unwrap(), transport).unwrap();
        Message::from_vec(&reply).unwrap()
    }

    #[test]
    fn short_and_response_packets_are_dropped() {
        assert_eq!(ask_bytes(&[0; 11], Transport::Udp), None);
        let mut m = query("www.example.com.", RecordType::A, None);
        m.metadata.message_type = MessageType::Response;
        assert_eq!(ask_bytes(&m.to_vec().unwrap(), Transport::Udp), None);
    }

    #[test]
    fn undecodable_with_a_header_is_formerr() {
        let mut bytes = query("www.example.com.", RecordType::A, None).to_vec().unwrap();
        bytes.truncate(20);
        let reply = ask_bytes(&bytes, Transport::Udp).unwrap();
        assert_eq!(reply, [0x12, 0x34, 0x81, 0x01, 0, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn header_rules() {
        let mut notify = query("example.com.", RecordType::SOA, None);
        notify.metadata.op_code = OpCode::Notify;
        assert_eq!(ask(&notify, Transport::Udp).metadata.response_code, ResponseCode::NotImp);
        let mut none = query("example.com.", RecordType::SOA, None);
        none.queries.clear();
        assert_eq!(ask(&none, Transport::Udp).metadata.response_code, ResponseCode::FormErr);
        let mut two = query("example.com.", RecordType::SOA, None);
        two.add_query(Query::query(Name::from_str("www.example.com.").unwrap(), RecordType::A));
        assert_eq!(ask(&two, Transport::Udp).metadata.response_code, ResponseCode::FormErr);
    }

    #[test]
    fn notify_can_be_intercepted() {
        let mut notify = query("example.com.", RecordType::SOA, None);
        notify.metadata.op_code = OpCode::Notify;
        let Decoded::Request(r) = decode(&notify.to_vec().unwrap(), Transport::Udp, &mut Counters::default()) else {
            panic!()
        };
        assert_eq!(r.op_code(), OpCode::Notify);
        assert_eq!(r.query().map(|q| q.name().to_string()).as_deref(), Some("example.com."));
    }

    #[test]
    fn edns_versions_above_zero_get_badvers() {
        let mut m = query("www.example.com.", RecordType::A, Some(4096));
        if let Some(e) = m.edns.as_mut() {
            e.set_version(1);
        }
        let r = ask(&m, Transport::Udp);
        // 16 reads back as BADSIG, which shares the code
        assert_eq!(u16::from(r.metadata.response_code), 16);
        assert_eq!(r.edns.as_ref().map(|e| e.version()), Some(0));
        assert!(r.answers.is_empty());
    }

    #[test]
    fn refused_for_other_classes_zones_and_transfers_over_udp() {
        let mut chaos = query("version.bind.", RecordType::TXT, None);
        chaos.queries[0].set_query_class(DNSClass::CH);
        assert_eq!(ask(&chaos, Transport::Udp).metadata.response_code, ResponseCode::Refused);
        let other = ask(&query("www.example.org.", RecordType::A, None), Transport::Udp);
        assert_eq!((other.metadata.response_code, other.metadata.authoritative), (ResponseCode::Refused, false));
        let axfr = ask(&query("example.com.", RecordType::AXFR, None), Transport::Udp);
        assert_eq!(axfr.metadata.response_code, ResponseCode::Refused);
    }

    #[test]
    fn answers_echo_id_question_and_case() {
        let r = ask(&query("WwW.ExAmPlE.CoM.", RecordType::A, Some(1232)), Transport::Udp);
        assert_eq!(r.metadata.id, 0x1234);
        assert!(r.metadata.authoritative && r.metadata.recursion_desired && !r.metadata.recursion_available);
        assert!(r.queries[0].name().eq_case(&Name::from_str("WwW.ExAmPlE.CoM.").unwrap()));
        assert_eq!(r.answers.len(), 1);
        assert_eq!(r.edns.as_ref().map(|e| e.max_payload()), Some(1232));
        let nx = ask(&query("nope.example.com.", RecordType::A, None), Transport::Udp);
        assert_eq!((nx.metadata.response_code, nx.authorities.len()), (ResponseCode::NXDomain, 1));
        assert!(nx.edns.is_none(), "no OPT to a query without one");
        let referral = ask(&query("www.sub.example.com.", RecordType::A, None), Transport::Udp);
        assert!(!referral.metadata.authoritative);
        assert_eq!((referral.authorities.len(), referral.additionals.len()), (2, 1));
    }

    #[test]
    fn too_big_for_udp_is_truncated_and_fits_over_tcp() {
        let plain = ask(&query("big.example.com.", RecordType::TXT, None), Transport::Udp);
        assert!(plain.metadata.truncation);
        assert!(plain.answers.is_empty() && plain.queries.len() == 1);
        let edns = ask(&query("big.example.com.", RecordType::TXT, Some(4096)), Transport::Udp);
        assert!(edns.metadata.truncation, "4096 is clamped to 1232");
        assert!(edns.edns.is_some());
        let tcp = ask(&query("big.example.com.", RecordType::TXT, None), Transport::Tcp);
        assert!(!tcp.metadata.truncation);
        assert_eq!(tcp.answers.len(), 40);
    }

    #[test]
    fn optional_additional_records_go_first() {
        let config = Config { udp_payload_min: 512, udp_payload_max: 512 };
        let m = query("example.com.", RecordType::MX, Some(512));
        let full =
            respond(&catalog(), &config, None, &mut Counters::default(), &m.to_vec().unwrap(), &client(Transport::Udp));
        let full = Message::from_vec(&full.unwrap()).unwrap();
        assert_eq!(full.additionals.len(), 2, "fits: kept");
        let mut mx = Message::new(0, MessageType::Response, OpCode::Query);
        mx.answers = full.answers.clone();
        mx.additionals = full.additionals.clone();
        let reply = Reply { message: mx, additional_required: false };
        let mut counters = Counters::default();
        let bytes = encode(reply, 80, &mut counters).unwrap();
        let small = Message::from_vec(&bytes).unwrap();
        assert_eq!((small.answers.len(), small.additionals.len(), small.metadata.truncation), (1, 0, false));
        assert_eq!(counters.truncated, 0);
    }

    #[test]
    fn rate_limited_responses_are_dropped_or_slipped() {
        let catalog = catalog();
        let mut rrl = Rrl::new(RrlConfig { responses_per_second: 2, slip: 2, ..RrlConfig::default() }, 1);
        let mut counters = Counters::default();
        let bytes = query("www.example.com.", RecordType::A, None).to_vec().unwrap();
        let replies: Vec<_> = (0..6)
            .map(|_| {
                respond(&catalog, &Config::default(), Some(&mut rrl), &mut counters, &bytes, &client(Transport::Udp))
            })
            .collect();
        assert!(replies[..2].iter().all(|r| r.is_some()));
        assert_eq!(replies[2], None);
        let slipped = Message::from_vec(replies[3].as_deref().unwrap()).unwrap();
        assert!(slipped.metadata.truncation && slipped.answers.is_empty());
        assert_eq!((counters.rate_limited_dropped, counters.rate_limited_slipped), (2, 2));
        assert_eq!((counters.queries, counters.noerror), (6, 2));
        // TCP is never limited: the source address is proven
        let tcp = respond(&catalog, &Config::default(), Some(&mut rrl), &mut counters, &bytes, &client(Transport::Tcp));
        assert!(tcp.is_some());
    }

    #[test]
    fn a_random_subdomain_flood_is_one_flow() {
        let catalog = catalog();
        let mut rrl = Rrl::new(RrlConfig { responses_per_second: 10, slip: 0, ..RrlConfig::default() }, 1);
        let mut counters = Counters::default();
        let sent = (0..100)
            .filter_map(|i| {
                let bytes = query(&format!("r{i}.example.com."), RecordType::A, None).to_vec().unwrap();
                respond(&catalog, &Config::default(), Some(&mut rrl), &mut counters, &bytes, &client(Transport::Udp))
            })
            .count();
        assert_eq!((sent, counters.nxdomain, counters.rate_limited_dropped), (10, 10, 90));
        let www = query("www.example.com.", RecordType::A, None).to_vec().unwrap();
        let ok = respond(&catalog, &Config::default(), Some(&mut rrl), &mut counters, &www, &client(Transport::Udp));
        assert!(ok.is_some(), "the client's other answers are another flow");
    }

    #[test]
    fn resolver_clients_get_cnames_leaving_our_zones_chased() {
        let catalog = catalog();
        let ask = |name: &str, qtype, may_forward| {
            let request = Request { message: query(name, qtype, None) };
            let client = client(Transport::Udp);
            respond_or_forward(
                &catalog,
                &Config::default(),
                None,
                &mut Counters::default(),
                &request,
                &client,
                may_forward,
            )
        };
        let Responded::Chase { answers, target } = ask("out.example.com.", RecordType::A, true) else { panic!() };
        assert_eq!(target, Name::from_str("www.example.net.").unwrap());
        assert_eq!(answers.len(), 1);
        assert_eq!(answers[0].record_type(), RecordType::CNAME);
        // not for others, nor for the CNAME itself, nor chains that stay here
        assert!(matches!(ask("out.example.com.", RecordType::A, false), Responded::Reply(Some(_))));
        assert!(matches!(ask("out.example.com.", RecordType::CNAME, true), Responded::Reply(Some(_))));
        assert!(matches!(ask("alias2.example.com.", RecordType::A, true), Responded::Reply(Some(_))));
        assert!(matches!(ask("dangling.example.com.", RecordType::A, true), Responded::Reply(Some(_))));
        assert_eq!(ask("www.example.org.", RecordType::A, true), Responded::Forward);
    }

    #[test]
    fn counters_add_up() {
        let mut counters = Counters::default();
        let catalog = catalog();
        for name in ["www.example.com.", "nope.example.com.", "b.c.example.com.", "sub.example.com."] {
            let bytes = query(name, RecordType::A, None).to_vec().unwrap();
            respond(&catalog, &Config::default(), None, &mut counters, &bytes, &client(Transport::Udp));
        }
        respond(&catalog, &Config::default(), None, &mut counters, &[1, 2, 3], &client(Transport::Udp));
        assert_eq!((counters.queries, counters.noerror, counters.nxdomain), (5, 3, 1));
        assert_eq!((counters.nodata, counters.referrals, counters.dropped), (1, 1, 1));
        let mut total = Counters::default();
        total.add(&counters);
        total.add(&counters);
        assert_eq!(total.queries, 10);
    }

    fn qname() -> impl Strategy<Value = String> {
        let labels = prop_oneof![
            Just("www"),
            Just("WWW"),
            Just("x"),
            Just("w"),
            Just("b"),
            Just("c"),
            Just("sub"),
            Just("big"),
            Just("alias2"),
            Just("loop1"),
            Just("_tcp"),
            Just("*"),
            Just("example"),
            Just("com"),
            Just("net")
        ];
        proptest::collection::vec(labels, 0..5)
            .prop_map(|l| l.iter().map(|l| format!("{l}.")).collect::<String>() + "example.com.")
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600), tcp in any::<bool>()) {
            let transport = if tcp { Transport::Tcp } else { Transport::Udp };
            let _ = ask_bytes(&bytes, transport);
        }

        #[test]
        fn mutated_queries_never_panic(at in 0usize..64, byte in any::<u8>(), name in qname()) {
            let mut bytes = query(&name, RecordType::A, Some(1232)).to_vec().unwrap();
            if let Some(b) = bytes.get_mut(at) {
                *b = byte;
            }
            let _ = ask_bytes(&bytes, Transport::Udp);
        }

        #[test]
        fn well_formed_queries_get_parseable_answers(
            name in qname(),
            qtype in prop_oneof![Just(RecordType::A), Just(RecordType::AAAA), Just(RecordType::TXT), Just(RecordType::MX),
                                 Just(RecordType::NS), Just(RecordType::SOA), Just(RecordType::ANY), Just(RecordType::CNAME),
                                 Just(RecordType::SRV), Just(RecordType::CAA), Just(RecordType::PTR)],
            id in any::<u16>(),
            edns in proptest::option::of(0u16..5000),
            tcp in any::<bool>(),
        ) {
            let transport = if tcp { Transport::Tcp } else { Transport::Udp };
            let mut m = query(&name, qtype, edns);
            m.metadata.id = id;
            let reply = ask_bytes(&m.to_vec().unwrap(), transport).unwrap();
            let limit = match (tcp, edns) { (true, _) => 65535, (false, None) => 512, (false, Some(_)) => 1232 };
            prop_assert!(reply.len() <= limit);
            let r = Message::from_vec(&reply).unwrap();
            prop_assert_eq!(r.metadata.id, id);
            prop_assert_eq!(r.metadata.message_type, MessageType::Response);
            prop_assert_eq!(r.queries.len(), 1);
            prop_assert!(r.queries[0].name().eq_case(m.queries[0].name()));
            prop_assert_eq!(r.queries[0].query_type(), qtype);
            prop_assert_eq!(r.edns.is_some(), edns.is_some());
        }
    }
}

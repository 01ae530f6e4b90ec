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
//! - AXFR/IXFR: REFUSED over UDP (RFC 5936 §4.2); over TCP too for now,
//!   the daemon will intercept them with its ACLs and TSIG;
//! - size: UDP without EDNS 512 bytes; with EDNS the client's payload size
//!   clamped to [`Config::udp_payload_min`, `udp_payload_max`] (1232 by
//!   default, the DNS flag day 2020 value); TCP 65535. If a response does
//!   not fit, the additional section goes first (without TC: it is
//!   optional, RFC 2181 §9), except a referral's glue, which is required
//!   (RFC 9471); if it still does not fit, the reply is the question (and
//!   OPT) with TC=1, so the client retries over TCP. NSD instead sends the
//!   RRsets that fit with TC=1; a resolver ignores a truncated answer and
//!   retries anyway, so we send less;
//! - the question is echoed as received (case included);
//! - UDP responses pass response rate limiting when the daemon gives an
//!   [`Rrl`]: dropped, or slipped as an empty TC=1 reply.

use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RecordType};

use crate::catalog::Catalog;
use crate::lookup::{Answer, Outcome};
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

/// Decodes a query, answering at once what cannot be a request.
pub fn decode(bytes: &[u8], counters: &mut Counters) -> Decoded {
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
    counters.queries += 1;
    match client.transport {
        Transport::Udp => counters.udp += 1,
        Transport::Tcp => counters.tcp += 1,
    }
    match decode(bytes, counters) {
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
    let query = &request.message;
    let (mut reply, outcome) = build(catalog, query);
    let limit = size_limit(config, query, client.transport);
    if query.edns.is_some() {
        // version 0, the one we speak (also in BADVERS), no DO: we do not sign
        let mut ours = Edns::new();
        ours.set_max_payload(config.udp_payload_max.max(512));
        reply.message.edns = Some(ours);
    }
    if client.transport == Transport::Udp {
        if let Some(rrl) = rrl {
            let (class, name) = rrl_flow(&outcome);
            let qtype = query.queries.first().map_or(RecordType::NULL, |q| q.query_type());
            match rrl.check(client.addr, class, &name, qtype, client.now_ms) {
                Action::Send => {}
                Action::Drop => {
                    counters.rate_limited_dropped += 1;
                    return None;
                }
                Action::Slip => {
                    counters.rate_limited_slipped += 1;
                    return truncated(&reply.message).to_vec().ok();
                }
            }
        }
    }
    count(counters, &reply.message, &outcome);
    encode(reply, limit, counters)
}

/// A response being built, and whether its additional records are
/// required.
struct Reply {
    message: Message,
    additional_required: bool,
}

/// The response message (without OPT) and what the lookup found, if it
/// got that far.
fn build(catalog: &Catalog, query: &Message) -> (Reply, Option<Answer>) {
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
    let Some(zone) = catalog.find(q.name()) else { return reply(message, ResponseCode::Refused) };
    let answer = zone.lookup(q.name(), q.query_type());
    message.metadata.authoritative = answer.authoritative;
    message.metadata.response_code = match answer.outcome {
        Outcome::NxDomain => ResponseCode::NXDomain,
        _ => ResponseCode::NoError,
    };
    message.answers = answer.answers.clone();
    message.authorities = answer.authority.clone();
    message.additionals = answer.additional.clone();
    (Reply { message, additional_required: answer.additional_required }, Some(answer))
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
fn rrl_flow(answer: &Option<Answer>) -> (ResponseClass, Name) {
    // errors of every name are one flow per client prefix
    let Some(answer) = answer else { return (ResponseClass::Error, Name::root()) };
    let class = match answer.outcome {
        Outcome::Answer => ResponseClass::Positive,
        Outcome::NoData => ResponseClass::NoData,
        Outcome::NxDomain => ResponseClass::NxDomain,
        Outcome::Referral => ResponseClass::Referral,
    };
    (class, answer.rrl_name.clone())
}

fn count(counters: &mut Counters, message: &Message, outcome: &Option<Answer>) {
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

//! Zone transfers to secondaries (RFC 5936 AXFR, RFC 1995 IXFR answered
//! with the whole zone), NOTIFY (RFC 1996) in both directions, and TSIG
//! (RFC 8945, through hickory-proto's HMAC code) on both. Bytes in, bytes
//! out: the daemon owns the sockets, the clock and the retry timers.
//!
//! A zone's [`Transfer`] settings are what an NSD operator writes as
//! `provide-xfr` (the addresses allowed, with a key or without) and
//! `notify` (the secondaries told of every change):
//!
//! - AXFR/IXFR only over TCP (the daemon leaves UDP to the responder,
//!   which refuses them), only from an allowed address (else REFUSED);
//! - with a key: an unsigned request is REFUSED (as NSD does when the
//!   ACL names a key); another key or algorithm NOTAUTH/BADKEY, a wrong
//!   MAC NOTAUTH/BADSIG, both unsigned (RFC 8945 §5.2); a time outside
//!   the fudge NOTAUTH/BADTIME, signed;
//! - the zone goes out as SOA, every other record, SOA, in messages of at
//!   most [`MESSAGE_BUDGET`] bytes, each signed when the request was
//!   (the first with the request's MAC, the next with the previous MAC
//!   and the timers only, RFC 8945 §5.3.1);
//! - an IXFR whose SOA (in the authority section) is not behind ours gets
//!   our SOA alone (nothing to transfer); otherwise the whole zone, which
//!   RFC 1995 §4 allows in place of the differences.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use data_encoding::BASE64;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::tsig::{make_tsig_record, TsigAlgorithm, TsigError, TSIG};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType, TSigner};
use hickory_proto::serialize::binary::BinEncodable;
use thiserror::Error;

use crate::catalog::Catalog;
use crate::lookup::key_of;
use crate::zone::{serial_lt, Zone};

/// Bytes a transfer message may take, TSIG included: far below TCP's
/// 65535 so a secondary never waits long for one, and what BIND and NSD
/// send in practice (16 KiB).
pub const MESSAGE_BUDGET: usize = 16 * 1024;
/// Seconds a signature's time may be off ours (RFC 8945 §10 recommends 300).
pub const FUDGE: u16 = 300;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum XfrError {
    #[error("tsig: {0:?} is not NAME:ALGORITHM:BASE64SECRET")]
    TsigShape(String),
    #[error("tsig: name {0:?}: {1}")]
    TsigName(String, String),
    #[error("tsig: algorithm {0:?} is not one of hmac-sha256, hmac-sha384, hmac-sha512")]
    TsigAlgorithm(String),
    #[error("tsig: the secret is not base64: {0}")]
    TsigSecret(String),
    #[error("tsig: the secret is empty")]
    TsigEmptySecret,
    #[error("allow: {0:?} is not an IP address")]
    Allow(String),
    #[error("notify: {0:?} is not ADDRESS:PORT (IPv6 in brackets) or an address")]
    Notify(String),
    #[error("encoding: {0}")]
    Encode(String),
}

/// A TSIG key: its name (which both ends must spell alike), the HMAC and
/// the shared secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TsigKey {
    pub name: Name,
    pub algorithm: TsigAlgorithm,
    pub secret: Vec<u8>,
}

impl TsigKey {
    /// `NAME:ALGORITHM:BASE64SECRET`, e.g.
    /// `xfr.example.com:hmac-sha256:c2VjcmV0...` (base64 may contain no
    /// colon, so the split is unambiguous).
    pub fn parse(text: &str) -> Result<Self, XfrError> {
        let mut parts = text.trim().splitn(3, ':');
        let (Some(name), Some(algorithm), Some(secret)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(XfrError::TsigShape(text.to_string()));
        };
        let name = Name::from_str(name)
            .map(|n| n.to_lowercase())
            .map_err(|e| XfrError::TsigName(name.to_string(), e.to_string()))?;
        let algorithm = algorithm_of(algorithm)?;
        let secret = BASE64.decode(secret.trim().as_bytes()).map_err(|e| XfrError::TsigSecret(e.to_string()))?;
        if secret.is_empty() {
            return Err(XfrError::TsigEmptySecret);
        }
        let mut name = name;
        name.set_fqdn(true);
        Ok(TsigKey { name, algorithm, secret })
    }

    /// The form [`TsigKey::parse`] reads.
    pub fn text(&self) -> String {
        let name = self.name.to_string();
        format!("{}:{}:{}", name.trim_end_matches('.'), algorithm_text(&self.algorithm), BASE64.encode(&self.secret))
    }

    fn signer(&self) -> Result<TSigner, XfrError> {
        TSigner::new(self.secret.clone(), self.algorithm.clone(), self.name.clone(), FUDGE)
            .map_err(|e| XfrError::Encode(e.to_string()))
    }
}

fn algorithm_of(text: &str) -> Result<TsigAlgorithm, XfrError> {
    match text.trim().trim_end_matches('.').to_ascii_lowercase().as_str() {
        "hmac-sha256" => Ok(TsigAlgorithm::HmacSha256),
        "hmac-sha384" => Ok(TsigAlgorithm::HmacSha384),
        "hmac-sha512" => Ok(TsigAlgorithm::HmacSha512),
        _ => Err(XfrError::TsigAlgorithm(text.to_string())),
    }
}

/// The name NSD and BIND write in `algorithm:` / `algorithm`.
pub fn algorithm_text(a: &TsigAlgorithm) -> &'static str {
    match a {
        TsigAlgorithm::HmacSha384 => "hmac-sha384",
        TsigAlgorithm::HmacSha512 => "hmac-sha512",
        _ => "hmac-sha256",
    }
}

/// Who may transfer a zone and who hears of its changes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Transfer {
    /// `provide-xfr`: addresses that may AXFR/IXFR the zone.
    pub allow: Vec<IpAddr>,
    /// `notify`: secondaries sent a NOTIFY on every serial change.
    pub notify: Vec<SocketAddr>,
    /// Required on transfers, used on NOTIFYs.
    pub tsig: Option<TsigKey>,
}

/// An allowed address.
pub fn parse_allow(text: &str) -> Result<IpAddr, XfrError> {
    let t = text.trim();
    IpAddr::from_str(t.trim_start_matches('[').trim_end_matches(']')).map_err(|_| XfrError::Allow(t.to_string()))
}

/// A NOTIFY target: `ADDR:PORT`, `[V6]:PORT`, or an address (port 53).
pub fn parse_notify(text: &str) -> Result<SocketAddr, XfrError> {
    let t = text.trim();
    SocketAddr::from_str(t)
        .or_else(|_| parse_allow(t).map(|ip| SocketAddr::new(ip, 53)))
        .map_err(|_| XfrError::Notify(t.to_string()))
}

/// Answers an AXFR or IXFR request received over TCP: the messages to
/// send, in order. `now` is the Unix time in seconds (TSIG).
pub fn transfer(
    zone: &Zone,
    settings: &Transfer,
    request: &Message,
    raw: &[u8],
    client: IpAddr,
    now: u64,
) -> Vec<Vec<u8>> {
    if !settings.allow.contains(&client.to_canonical()) {
        return plain_error(request, ResponseCode::Refused);
    }
    let signing = match check_tsig(settings.tsig.as_ref(), request, raw, now) {
        Ok(signing) => signing,
        Err(reply) => return reply,
    };
    let records = records_to_send(zone, request);
    let messages = split(request, records, MESSAGE_BUDGET - signing.as_ref().map_or(0, Signing::room));
    match signing {
        None => messages.iter().filter_map(|m| m.to_vec().ok()).collect(),
        Some(s) => s.sign_stream(messages).unwrap_or_else(|_| plain_error(request, ResponseCode::ServFail)),
    }
}

/// SOA, the rest, SOA; or the SOA alone for an IXFR that is up to date.
fn records_to_send(zone: &Zone, request: &Message) -> Vec<Record> {
    let soa = zone.soa_record();
    let qtype = request.queries.first().map(Query::query_type);
    let theirs = request.authorities.iter().find_map(|r| match &r.data {
        RData::SOA(soa) => Some(soa.serial),
        _ => None,
    });
    if let (Some(RecordType::IXFR), Some(theirs)) = (qtype, theirs) {
        if !serial_lt(theirs, zone.soa().serial) {
            return vec![soa];
        }
    }
    let mut records = vec![soa.clone()];
    records.extend(zone.records().filter(|r| r.record_type() != RecordType::SOA));
    records.push(soa);
    records
}

/// The response skeleton: the request's id, AA, the question.
fn response_to(request: &Message) -> Message {
    let mut m = Message::response(request.metadata.id, request.metadata.op_code);
    m.metadata.authoritative = true;
    m.queries = request.queries.clone();
    m
}

/// Packs records into messages of at most `budget` bytes (a record alone
/// bigger than that still goes, alone: it must). Sizes are taken without
/// name compression, so the encoded message is never larger. The
/// question rides in the first message only (RFC 5936 §2.2.1).
pub fn split(request: &Message, records: Vec<Record>, budget: usize) -> Vec<Message> {
    let first = response_to(request);
    let question: usize = request.queries.iter().filter_map(|q| q.to_bytes().ok()).map(|b| b.len()).sum();
    let mut messages = Vec::new();
    let mut current = first;
    let mut size = 12 + question;
    for record in records {
        let len = record.to_bytes().map_or(budget, |b| b.len());
        if !current.answers.is_empty() && size + len > budget {
            messages.push(std::mem::replace(&mut current, next_message(request)));
            size = 12;
        }
        size += len;
        current.answers.push(record);
    }
    messages.push(current);
    messages
}

fn next_message(request: &Message) -> Message {
    let mut m = response_to(request);
    m.queries.clear();
    m
}

/// An error reply, one message, unsigned.
fn plain_error(request: &Message, rcode: ResponseCode) -> Vec<Vec<u8>> {
    let mut m = response_to(request);
    m.metadata.authoritative = false;
    m.metadata.response_code = rcode;
    m.to_vec().into_iter().collect()
}

/// How the responses of a signed request are signed.
struct Signing {
    signer: TSigner,
    request_mac: Vec<u8>,
    request_id: u16,
    now: u64,
}

impl Signing {
    /// Bytes a TSIG record takes: name, fixed fields, algorithm, MAC.
    fn room(&self) -> usize {
        2 * 255 + 32 + 64
    }

    /// Signs each message, chaining MACs (RFC 8945 §5.3.1).
    fn sign_stream(&self, messages: Vec<Message>) -> Result<Vec<Vec<u8>>, XfrError> {
        let enc = |e: hickory_proto::ProtoError| XfrError::Encode(e.to_string());
        let mut previous = self.request_mac.clone();
        let mut out = Vec::with_capacity(messages.len());
        for (i, mut message) in messages.into_iter().enumerate() {
            let stub = TSIG::new(
                self.signer.algorithm().clone(),
                self.now,
                FUDGE,
                Vec::new(),
                self.request_id,
                None,
                Vec::new(),
            );
            let unsigned = message.to_vec().map_err(enc)?;
            let tbs = if i == 0 {
                self.signer.encode_response_tbs(&previous, &unsigned, &stub).map_err(enc)?
            } else {
                timers_tbs(&previous, &unsigned, self.now)
            };
            let mac = self.signer.sign(&tbs).map_err(|e| XfrError::Encode(e.to_string()))?;
            previous = mac.clone();
            message.signature = Some(Box::new(make_tsig_record(self.signer.signer_name().clone(), stub.set_mac(mac))));
            out.push(message.to_vec().map_err(enc)?);
        }
        Ok(out)
    }
}

/// What a later message of a signed stream is signed over: the previous
/// MAC, the message, and the TSIG timers only.
fn timers_tbs(previous: &[u8], message: &[u8], now: u64) -> Vec<u8> {
    let mut tbs = Vec::with_capacity(previous.len() + message.len() + 10);
    tbs.extend_from_slice(&u16::try_from(previous.len()).unwrap_or(u16::MAX).to_be_bytes());
    tbs.extend_from_slice(previous);
    tbs.extend_from_slice(message);
    tbs.extend_from_slice(&now.to_be_bytes()[2..]);
    tbs.extend_from_slice(&FUDGE.to_be_bytes());
    tbs
}

/// `Ok(None)`: no key, send unsigned; `Ok(Some)`: verified, sign the
/// answer; `Err`: the reply that refuses.
fn check_tsig(key: Option<&TsigKey>, request: &Message, raw: &[u8], now: u64) -> Result<Option<Signing>, Vec<Vec<u8>>> {
    let Some(key) = key else {
        return match request.signature() {
            // signed with a key we do not have
            Some(sig) => Err(unsigned_tsig_error(request, sig.name.clone(), TsigError::BadKey)),
            None => Ok(None),
        };
    };
    let Some(sig) = request.signature() else { return Err(plain_error(request, ResponseCode::Refused)) };
    if sig.name.to_lowercase() != key.name || sig.data.algorithm != key.algorithm {
        return Err(unsigned_tsig_error(request, sig.name.clone(), TsigError::BadKey));
    }
    let signer = key.signer().map_err(|_| plain_error(request, ResponseCode::ServFail))?;
    // hickory subtracts the fudge from the time unchecked: refuse first
    if sig.data.time < u64::from(sig.data.fudge) {
        return Err(unsigned_tsig_error(request, sig.name.clone(), TsigError::BadTime));
    }
    let Ok((request_mac, _, window)) = signer.verify_message_byte(raw, None, true) else {
        return Err(unsigned_tsig_error(request, sig.name.clone(), TsigError::BadSig));
    };
    let signing = Signing { signer, request_mac, request_id: request.metadata.id, now };
    if !window.contains(&now) {
        let mut m = response_to(request);
        m.metadata.response_code = ResponseCode::NotAuth;
        return Err(signing
            .sign_error(m, TsigError::BadTime)
            .unwrap_or_else(|_| plain_error(request, ResponseCode::NotAuth)));
    }
    Ok(Some(signing))
}

impl Signing {
    /// A signed error (BADTIME: RFC 8945 §5.2.3 signs it).
    fn sign_error(&self, mut message: Message, error: TsigError) -> Result<Vec<Vec<u8>>, XfrError> {
        let enc = |e: hickory_proto::ProtoError| XfrError::Encode(e.to_string());
        let stub = TSIG::new(
            self.signer.algorithm().clone(),
            self.now,
            FUDGE,
            Vec::new(),
            self.request_id,
            Some(error),
            Vec::new(),
        );
        let unsigned = message.to_vec().map_err(enc)?;
        let tbs = self.signer.encode_response_tbs(&self.request_mac, &unsigned, &stub).map_err(enc)?;
        let mac = self.signer.sign(&tbs).map_err(|e| XfrError::Encode(e.to_string()))?;
        message.signature = Some(Box::new(make_tsig_record(self.signer.signer_name().clone(), stub.set_mac(mac))));
        Ok(vec![message.to_vec().map_err(enc)?])
    }
}

/// NOTAUTH with an unsigned TSIG naming the error (BADKEY, BADSIG).
fn unsigned_tsig_error(request: &Message, key_name: Name, error: TsigError) -> Vec<Vec<u8>> {
    let mut m = response_to(request);
    m.metadata.authoritative = false;
    m.metadata.response_code = ResponseCode::NotAuth;
    let algorithm = request.signature().map_or(TsigAlgorithm::HmacSha256, |s| s.data.algorithm.clone());
    let time = request.signature().map_or(0, |s| s.data.time);
    let tsig = TSIG::new(algorithm, time, FUDGE, Vec::new(), request.metadata.id, Some(error), Vec::new());
    m.signature = Some(Box::new(make_tsig_record(key_name, tsig)));
    m.to_vec().into_iter().collect()
}

/// A NOTIFY for `zone` (its SOA in the answer, RFC 1996 §3.7), signed
/// when a key is given. `now`: Unix seconds.
pub fn notify_message(id: u16, zone: &Zone, key: Option<&TsigKey>, now: u64) -> Result<Vec<u8>, XfrError> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Notify);
    m.metadata.authoritative = true;
    let mut q = Query::query(zone.origin().clone(), RecordType::SOA);
    q.set_query_class(DNSClass::IN);
    m.queries.push(q);
    m.answers.push(zone.soa_record());
    if let Some(key) = key {
        let (sig, _) = key.signer()?.sign_message(&m, now).map_err(|e| XfrError::Encode(e.to_string()))?;
        m.signature = Some(sig);
    }
    m.to_vec().map_err(|e| XfrError::Encode(e.to_string()))
}

/// Whether `reply` answers the NOTIFY of id `id`: any response does, an
/// error included (the secondary heard us; retrying will not change its
/// mind). Returns its rcode.
pub fn notify_answered(reply: &[u8], id: u16) -> Option<ResponseCode> {
    let m = Message::from_vec(reply).ok()?;
    let ours =
        m.metadata.message_type == MessageType::Response && m.metadata.id == id && m.metadata.op_code == OpCode::Notify;
    ours.then_some(m.metadata.response_code)
}

/// Milliseconds to wait for an answer after each try of a NOTIFY: five
/// tries over about half a minute (RFC 1996 §4.2 leaves the schedule to
/// us; BIND and NSD retry a handful of times with a growing interval).
pub fn notify_schedule() -> [u64; 5] {
    [1_000, 2_000, 4_000, 8_000, 16_000]
}

/// The answer to a NOTIFY we receive: NOERROR and AA for a zone we serve
/// (its exact origin), NOTAUTH otherwise (RFC 1996 §3.10 has the
/// receiver ignore what is not its zone; NSD answers NOTAUTH). We are the
/// primary of every zone we serve, so there is nothing to refresh.
pub fn notify_reply(catalog: &Catalog, request: &Message) -> Option<Vec<u8>> {
    let mut m = response_to(request);
    let ours = request.queries.first().and_then(|q| {
        let zone = catalog.find(q.name(), RecordType::SOA)?;
        (key_of(zone.origin()) == key_of(q.name())).then_some(())
    });
    if ours.is_none() {
        m.metadata.authoritative = false;
        m.metadata.response_code = ResponseCode::NotAuth;
    }
    m.to_vec().ok()
}

#[cfg(test)]
mod tests;

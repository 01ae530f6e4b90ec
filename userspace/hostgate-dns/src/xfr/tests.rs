use super::*;
use hickory_proto::rr::TSigVerifier;
use proptest::prelude::*;

const SECRET: &str = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTEyMzQ=";
const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 7));
const NOW: u64 = 1_800_000_000;

fn zone(extra: usize) -> Zone {
    let mut text = String::from("$TTL 60\n@ SOA ns1 h 7 1 1 1 1\n NS ns1\nns1 A 198.51.100.1\n");
    for i in 0..extra {
        text += &format!("host{i} TXT \"{}\"\n", "x".repeat(200));
    }
    crate::master::parse(&text, "t", &Name::from_str("example.com.").unwrap()).unwrap()
}

fn key() -> TsigKey {
    TsigKey::parse(&format!("xfr.example.com:hmac-sha256:{SECRET}")).unwrap()
}

fn settings(tsig: Option<TsigKey>) -> Transfer {
    Transfer { allow: vec![CLIENT], notify: vec![], tsig }
}

fn axfr(qtype: RecordType) -> Message {
    let mut m = Message::new(4242, MessageType::Query, OpCode::Query);
    m.queries.push(Query::query(Name::from_str("example.com.").unwrap(), qtype));
    m
}

fn signed(mut m: Message, key: &TsigKey, now: u64) -> (Message, Vec<u8>, TSigVerifier) {
    let (sig, verifier) = key.signer().unwrap().sign_message(&m, now).unwrap();
    m.signature = Some(sig);
    let raw = m.to_vec().unwrap();
    (Message::from_vec(&raw).unwrap(), raw, verifier.unwrap())
}

fn decode(replies: &[Vec<u8>]) -> Vec<Message> {
    replies.iter().map(|r| Message::from_vec(r).unwrap()).collect()
}

fn answers(messages: &[Message]) -> Vec<RecordType> {
    messages.iter().flat_map(|m| m.answers.iter().map(Record::record_type)).collect()
}

#[test]
fn keys_parse_and_print() {
    let k = key();
    assert_eq!(k.name.to_string(), "xfr.example.com.");
    assert_eq!(k.algorithm, TsigAlgorithm::HmacSha256);
    assert_eq!(TsigKey::parse(&k.text()).unwrap(), k);
    assert!(matches!(TsigKey::parse("k:hmac-md5:AAAA"), Err(XfrError::TsigAlgorithm(_))));
    assert!(matches!(TsigKey::parse("k:hmac-sha256:!!"), Err(XfrError::TsigSecret(_))));
    assert!(matches!(TsigKey::parse("k:hmac-sha256"), Err(XfrError::TsigShape(_))));
    assert_eq!(parse_notify("198.51.100.2").unwrap(), "198.51.100.2:53".parse().unwrap());
    assert_eq!(parse_notify("[2001:db8::2]:5300").unwrap(), "[2001:db8::2]:5300".parse().unwrap());
    assert!(parse_notify("ns2.example.com").is_err());
    assert!(parse_allow("198.51.100.0/24").is_err());
}

#[test]
fn an_address_not_allowed_is_refused() {
    let req = axfr(RecordType::AXFR);
    let raw = req.to_vec().unwrap();
    let other = IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 9));
    let out = decode(&transfer(&zone(0), &settings(None), &req, &raw, other, NOW));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].metadata.response_code, ResponseCode::Refused);
    assert!(out[0].answers.is_empty());
}

#[test]
fn the_zone_goes_soa_first_and_last_in_bounded_messages() {
    let z = zone(300);
    let req = axfr(RecordType::AXFR);
    let raw = req.to_vec().unwrap();
    let replies = transfer(&z, &settings(None), &req, &raw, CLIENT, NOW);
    assert!(replies.len() > 3, "{} messages", replies.len());
    assert!(replies.iter().all(|r| r.len() <= MESSAGE_BUDGET));
    let out = decode(&replies);
    let types = answers(&out);
    assert_eq!(types.first(), Some(&RecordType::SOA));
    assert_eq!(types.last(), Some(&RecordType::SOA));
    assert_eq!(types.len(), z.records().count() + 1);
    assert!(out.iter().all(|m| m.metadata.id == 4242 && m.metadata.authoritative));
    assert_eq!(out[0].queries.len(), 1);
}

#[test]
fn an_ixfr_that_is_current_gets_the_soa_alone() {
    let z = zone(3);
    let mut req = axfr(RecordType::IXFR);
    req.authorities.push(z.soa_record());
    let raw = req.to_vec().unwrap();
    let out = decode(&transfer(&z, &settings(None), &req, &raw, CLIENT, NOW));
    assert_eq!(answers(&out), vec![RecordType::SOA]);
    let mut behind = z.soa_record();
    if let RData::SOA(soa) = &mut behind.data {
        soa.serial = 6;
    }
    req.authorities = vec![behind];
    let raw = req.to_vec().unwrap();
    let out = decode(&transfer(&z, &settings(None), &req, &raw, CLIENT, NOW));
    assert_eq!(answers(&out).len(), z.records().count() + 1, "the whole zone");
}

#[test]
fn a_signed_transfer_verifies_message_by_message() {
    let z = zone(300);
    let (req, raw, mut verifier) = signed(axfr(RecordType::AXFR), &key(), NOW);
    let replies = transfer(&z, &settings(Some(key())), &req, &raw, CLIENT, NOW + 1);
    assert!(replies.len() > 3);
    let mut count = 0;
    for reply in &replies {
        let r = verifier.verify(reply).expect("each message verifies in the chain");
        count += r.answers.len();
    }
    assert_eq!(count, z.records().count() + 1);
}

#[test]
fn unsigned_or_badly_signed_requests_are_refused() {
    let z = zone(3);
    let s = settings(Some(key()));
    let req = axfr(RecordType::AXFR);
    let raw = req.to_vec().unwrap();
    let out = decode(&transfer(&z, &s, &req, &raw, CLIENT, NOW));
    assert_eq!(out[0].metadata.response_code, ResponseCode::Refused, "unsigned");

    let mut wrong = key();
    wrong.secret = b"another secret".to_vec();
    let (req, raw, _) = signed(axfr(RecordType::AXFR), &wrong, NOW);
    let out = decode(&transfer(&z, &s, &req, &raw, CLIENT, NOW));
    assert_eq!(out[0].metadata.response_code, ResponseCode::NotAuth);
    assert_eq!(out[0].signature().map(|s| s.data.error), Some(Some(TsigError::BadSig)));
    assert!(out[0].answers.is_empty());

    let mut other = key();
    other.name = Name::from_str("other.example.com.").unwrap();
    let (req, raw, _) = signed(axfr(RecordType::AXFR), &other, NOW);
    let out = decode(&transfer(&z, &s, &req, &raw, CLIENT, NOW));
    assert_eq!(out[0].signature().map(|s| s.data.error), Some(Some(TsigError::BadKey)));

    let (req, raw, _) = signed(axfr(RecordType::AXFR), &key(), NOW - 3600);
    let out = decode(&transfer(&z, &s, &req, &raw, CLIENT, NOW));
    assert_eq!(out[0].signature().map(|s| s.data.error), Some(Some(TsigError::BadTime)));
    assert!(out[0].answers.is_empty());
}

#[test]
fn notify_out_and_in() {
    let z = zone(0);
    let raw = notify_message(77, &z, Some(&key()), NOW).unwrap();
    let m = Message::from_vec(&raw).unwrap();
    assert_eq!(m.metadata.op_code, OpCode::Notify);
    assert_eq!(m.queries[0].query_type(), RecordType::SOA);
    assert!(m.signature().is_some());
    key().signer().unwrap().verify_message_byte(&raw, None, true).expect("signed");

    let catalog: Catalog = [crate::lookup::IndexedZone::new(&z)].into_iter().collect();
    let reply = notify_reply(&catalog, &m).unwrap();
    assert_eq!(notify_answered(&reply, 77), Some(ResponseCode::NoError));
    assert_eq!(notify_answered(&reply, 78), None);
    assert!(Message::from_vec(&reply).unwrap().metadata.authoritative);
    let mut other = m.clone();
    other.queries[0] = Query::query(Name::from_str("www.example.com.").unwrap(), RecordType::SOA);
    let reply = notify_reply(&catalog, &other).unwrap();
    assert_eq!(notify_answered(&reply, 77), Some(ResponseCode::NotAuth));
    assert!(notify_schedule().windows(2).all(|w| w[0] < w[1]));
}

proptest! {
    #[test]
    fn splitting_keeps_every_record_in_order_and_in_budget(sizes in prop::collection::vec(0usize..400, 0..200), budget in 600usize..4000) {
        let origin = Name::from_str("example.com.").unwrap();
        let records: Vec<Record> = sizes.iter().enumerate().map(|(i, n)| {
            let txt = hickory_proto::rr::rdata::TXT::new(vec!["y".repeat(*n % 255)]);
            Record::from_rdata(Name::from_str(&format!("h{i}")).unwrap().append_domain(&origin).unwrap(), 60, RData::TXT(txt))
        }).collect();
        let req = axfr(RecordType::AXFR);
        let messages = split(&req, records.clone(), budget);
        let out: Vec<Record> = messages.iter().flat_map(|m| m.answers.clone()).collect();
        prop_assert_eq!(out, records);
        for m in &messages {
            prop_assert!(m.to_vec().unwrap().len() <= budget);
        }
    }
}

//! The authoritative DNS server: zones declared through the API
//! (`dns/zones/<origin>`, one key per zone, see [`stored`]), answered on
//! the `[dns] listen` addresses over UDP and TCP ([`serve`]). Every change
//! is one compare-and-set transaction on the zone's key that also moves
//! its SOA serial forward; the server follows `dns/` and swaps in a new
//! catalog, so a change is answered without a reload. The DNS logic
//! (validation, zone files, lookups, the wire, RRL) is hostgate-dns's;
//! this module moves state and packets.

mod names;
mod serve;
pub(crate) mod stored;
mod udp;

use std::{str::FromStr, sync::Arc};

use axum::{extract::State, http::StatusCode, Json};
use hickory_proto::rr::{rdata::SOA, DNSClass, Name, RData, Record, RecordType};
use hostgate_api::{
    DnsPool, RecordChange, RecordView, RecordsChanged, ZoneAdd, ZoneImport, ZoneRef, ZoneSecondaries, ZoneText,
    ZoneView,
};
use hostgate_dns::{
    master,
    pool::{self, Fallback},
    zone::{next_serial, serial_lt, Zone, ZoneError},
};
use hostgate_store::{Compare, KeyValue, Op, Txn, TxnOutcome};
pub(crate) use serve::{follow, Shared, TCP_SOCKET, UDP_SOCKET};
use stored::{zone_key, StoredPool, StoredTransfer, StoredZone, ZoneSettings};
use tracing::info;

use crate::{api::Failure, Daemon};

/// TTL of the SOA, apex NS and records added without one, unless given.
const DEFAULT_TTL: u32 = 3600;
/// A change that loses a compare-and-set race is tried again, from the
/// new state, up to this often (each loss means another change landed, so
/// this bounds the wait, not the progress).
const ATTEMPTS: usize = 16;

fn bad(m: impl Into<String>) -> Failure {
    Failure(StatusCode::BAD_REQUEST, m.into())
}

fn store_err(e: hostgate_store::StoreError) -> Failure {
    Failure::from(anyhow::Error::from(e))
}

fn parse_origin(text: &str) -> Result<Name, Failure> {
    if text.trim().is_empty() {
        return Err(bad("zone: the origin is empty"));
    }
    master::parse_name(text.trim(), &Name::root()).map_err(|e| bad(format!("zone: {e}")))
}

/// Today as YYYYMMDD (UTC), for serials in the date convention.
fn today() -> u32 {
    let days = i64::try_from(crate::now() / 86_400).unwrap_or(0);
    // Howard Hinnant's civil_from_days
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    u32::try_from(year * 10_000 + month * 100 + day).unwrap_or(0)
}

/// The problems of a zone that does not validate, each naming its record.
fn zone_errors(records: &[Record], errors: Vec<ZoneError>) -> Failure {
    let lines: Vec<String> = errors
        .into_iter()
        .map(|e| match e.record.and_then(|i| records.get(i)) {
            Some(r) => format!("{} {}: {}", master::name_text(&r.name), r.record_type(), e.problem),
            None => e.problem.to_string(),
        })
        .collect();
    bad(lines.join("\n"))
}

fn in_class(mut r: Record) -> Record {
    r.dns_class = DNSClass::IN;
    r
}

/// The zone with its SOA serial set to `serial`.
fn with_serial(zone: &Zone, serial: u32) -> Result<Zone, Failure> {
    let records: Vec<Record> = zone
        .records()
        .map(|mut r| {
            if let RData::SOA(soa) = &mut r.data {
                soa.serial = serial;
            }
            r
        })
        .collect();
    Zone::new(zone.origin().clone(), records.clone()).map_err(|e| zone_errors(&records, e))
}

fn view(z: &StoredZone) -> ZoneView {
    let tsig_key = z
        .transfer
        .parse()
        .ok()
        .and_then(|t| t.tsig)
        .map(|k| format!("{} ({})", master::name_text(&k.name), hostgate_dns::xfr::algorithm_text(&k.algorithm)));
    ZoneView {
        origin: z.origin.clone(),
        serial: z.soa.serial,
        records: z.records.len() + 1,
        default_ttl: z.default_ttl,
        allow_transfer: z.transfer.allow.clone(),
        notify: z.transfer.notify.clone(),
        tsig_key,
        query_log: z.query_log,
        customer: z.customer.clone(),
    }
}

/// A zone as stored, with its key's revision.
struct Loaded {
    kv: KeyValue,
    stored: StoredZone,
    zone: Zone,
}

async fn load(d: &Daemon, origin: &Name) -> Result<Loaded, Failure> {
    let key = zone_key(origin);
    let Some(kv) = d.store.get(&key).await.map_err(store_err)? else {
        return Err(Failure(StatusCode::NOT_FOUND, format!("zone {} does not exist", master::name_text(origin))));
    };
    let stored: StoredZone = kv.decode().map_err(store_err)?;
    let zone = stored.to_zone(&key).map_err(|e| Failure(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    Ok(Loaded { kv, stored, zone })
}

/// Writes `zone` if its key is still at `expected` (`None`: absent).
/// `Ok(false)`: someone else changed it first.
async fn put(
    d: &Daemon,
    expected: Option<&KeyValue>,
    zone: &Zone,
    default_ttl: u32,
    settings: &ZoneSettings,
) -> Result<bool, Failure> {
    let key = zone_key(zone.origin());
    let compare = match expected {
        Some(kv) => Compare::ModRevision(key.clone(), kv.mod_revision),
        None => Compare::Absent(key.clone()),
    };
    let op = Op::put_json(key, &StoredZone::from_zone(zone, default_ttl, settings.clone())).map_err(store_err)?;
    match d.store.commit(Txn::new().when(compare).then(op)).await.map_err(store_err)? {
        TxnOutcome::Committed(_) => Ok(true),
        TxnOutcome::CompareFailed(_) => Ok(false),
    }
}

/// Applies `change` to the zone's records (SOA first), validates, moves the
/// serial and commits; a lost race starts over from the new state.
async fn edit<F>(d: &Daemon, origin: &Name, change: F) -> Result<(Zone, Vec<Record>), Failure>
where
    F: Fn(&mut Vec<Record>, &StoredZone) -> Result<Vec<Record>, Failure>,
{
    for _ in 0..ATTEMPTS {
        let l = load(d, origin).await?;
        let mut records: Vec<Record> = l.zone.records().collect();
        let touched = change(&mut records, &l.stored)?;
        let zone = Zone::new(l.zone.origin().clone(), records.clone()).map_err(|e| zone_errors(&records, e))?;
        let zone = with_serial(&zone, next_serial(l.zone.soa().serial, Some(today())))?;
        if put(d, Some(&l.kv), &zone, l.stored.default_ttl, &l.stored.settings()).await? {
            return Ok((zone, touched));
        }
    }
    Err(Failure(StatusCode::CONFLICT, "the zone kept changing under this edit; try again".into()))
}

/// `hostmaster@example.com` -> `hostmaster.example.com.`; a name as is.
fn admin_name(admin: Option<&str>, origin: &Name) -> Result<Name, Failure> {
    let text = match admin {
        None => return master::parse_name("hostmaster", origin).map_err(|e| bad(format!("admin: {e}"))),
        Some(t) => t.trim(),
    };
    let name = match text.split_once('@') {
        Some((local, domain)) => format!("{}.{}.", local.replace('.', "\\."), domain.trim_end_matches('.')),
        None => text.to_string(),
    };
    master::parse_name(&name, origin).map_err(|e| bad(format!("admin: {text:?}: {e}")))
}

fn check_ttl(ttl: u32) -> Result<u32, Failure> {
    match ttl <= i32::MAX as u32 {
        true => Ok(ttl),
        false => Err(bad(format!("ttl: {ttl} is above 2^31-1"))),
    }
}

pub async fn add_zone(State(d): State<Arc<Daemon>>, Json(req): Json<ZoneAdd>) -> Result<Json<ZoneView>, Failure> {
    let origin = parse_origin(&req.origin)?;
    let ttl = check_ttl(req.ttl.unwrap_or(DEFAULT_TTL))?;
    let ns_text = if req.ns.is_empty() { vec!["ns1".to_string()] } else { req.ns.clone() };
    let mut ns = Vec::new();
    for n in &ns_text {
        ns.push(master::parse_name(n.trim(), &origin).map_err(|e| bad(format!("ns: {e}")))?);
    }
    let admin = admin_name(req.admin.as_deref(), &origin)?;
    let serial = next_serial(0, Some(today()));
    let soa = SOA::new(ns[0].clone(), admin, serial, 7200, 900, 1_209_600, 300);
    let mut records = vec![in_class(Record::from_rdata(origin.clone(), ttl, RData::SOA(soa)))];
    for n in ns {
        let data = RData::NS(hickory_proto::rr::rdata::NS(n));
        records.push(in_class(Record::from_rdata(origin.clone(), ttl, data)));
    }
    let zone = Zone::new(origin.clone(), records.clone()).map_err(|e| zone_errors(&records, e))?;
    if let Some(c) = &req.customer {
        let key = hostgate_ipam::model::keys::customer(c);
        if d.store.get(&key).await.map_err(store_err)?.is_none() {
            return Err(bad(format!("customer: {c} does not exist (hostgate customer add)")));
        }
    }
    let settings = ZoneSettings { query_log: req.query_log, customer: req.customer.clone(), ..ZoneSettings::default() };
    if !put(&d, None, &zone, ttl, &settings).await? {
        let name = master::name_text(&origin);
        return Err(Failure(StatusCode::CONFLICT, format!("zone {name} exists already")));
    }
    info!(zone = %origin, serial, query_log = req.query_log, "DNS zone added");
    Ok(Json(view(&StoredZone::from_zone(&zone, ttl, settings))))
}

pub async fn list_zones(State(d): State<Arc<Daemon>>) -> Result<Json<Vec<ZoneView>>, Failure> {
    let snap = d.store.snapshot(stored::ZONES).await.map_err(store_err)?;
    Ok(Json(snap.kvs.iter().filter_map(|kv| kv.decode::<StoredZone>().ok()).map(|z| view(&z)).collect()))
}

pub async fn remove_zone(State(d): State<Arc<Daemon>>, Json(req): Json<ZoneRef>) -> Result<Json<ZoneRef>, Failure> {
    let origin = parse_origin(&req.origin)?;
    let key = zone_key(&origin);
    if d.store.get(&key).await.map_err(store_err)?.is_none() {
        return Err(Failure(StatusCode::NOT_FOUND, format!("zone {} does not exist", master::name_text(&origin))));
    }
    d.store.commit(Txn::new().then(Op::Delete(key))).await.map_err(store_err)?;
    info!(zone = %origin, "DNS zone removed");
    Ok(Json(ZoneRef { origin: master::name_text(&origin) }))
}

/// The origin named in a zone file's first `$ORIGIN`.
fn origin_in_text(text: &str) -> Option<&str> {
    text.lines().find_map(|l| {
        let mut words = l.split_whitespace();
        let directive = words.next()?;
        directive.eq_ignore_ascii_case("$ORIGIN").then(|| words.next()).flatten()
    })
}

pub async fn import_zone(State(d): State<Arc<Daemon>>, Json(req): Json<ZoneImport>) -> Result<Json<ZoneView>, Failure> {
    let origin_text = match req.origin.as_deref() {
        Some(o) => o,
        None => origin_in_text(&req.text).ok_or_else(|| bad(format!("{}: no $ORIGIN; give --origin", req.file)))?,
    };
    let origin = parse_origin(origin_text)?;
    let parsed = master::parse(&req.text, &req.file, &origin)
        .map_err(|errors| bad(errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")))?;
    for _ in 0..ATTEMPTS {
        let existing = match load(&d, &origin).await {
            Ok(l) => Some(l),
            Err(Failure(StatusCode::NOT_FOUND, _)) => None,
            Err(e) => return Err(e),
        };
        // Secondaries and caches only see a change whose serial moved on.
        let zone = match &existing {
            Some(l) if !serial_lt(l.zone.soa().serial, parsed.soa().serial) => {
                with_serial(&parsed, next_serial(l.zone.soa().serial, Some(today())))?
            }
            _ => parsed.clone(),
        };
        let default_ttl = existing.as_ref().map_or(DEFAULT_TTL, |l| l.stored.default_ttl);
        // an import replaces the records, not who transfers them
        let settings = existing.as_ref().map(|l| l.stored.settings()).unwrap_or_default();
        if put(&d, existing.as_ref().map(|l| &l.kv), &zone, default_ttl, &settings).await? {
            info!(zone = %origin, serial = zone.soa().serial, file = %req.file, "DNS zone imported");
            return Ok(Json(view(&StoredZone::from_zone(&zone, default_ttl, settings))));
        }
    }
    Err(Failure(StatusCode::CONFLICT, "the zone kept changing during the import; try again".into()))
}

pub async fn export_zone(State(d): State<Arc<Daemon>>, Json(req): Json<ZoneRef>) -> Result<Json<ZoneText>, Failure> {
    let origin = parse_origin(&req.origin)?;
    let l = load(&d, &origin).await?;
    Ok(Json(ZoneText { origin: master::name_text(&origin), text: master::export(&l.zone) }))
}

/// Sets who may transfer the zone and who is notified (replacing what
/// was set). The records and the serial stay: the zone's data did not
/// change; new NOTIFY targets are told the present serial at once.
pub async fn set_secondaries(
    State(d): State<Arc<Daemon>>,
    Json(req): Json<ZoneSecondaries>,
) -> Result<Json<ZoneView>, Failure> {
    let origin = parse_origin(&req.origin)?;
    let asked = StoredTransfer { allow: req.allow.clone(), notify: req.notify.clone(), tsig: req.tsig.clone() };
    let parsed = asked.parse().map_err(|e| bad(e.to_string()))?;
    if parsed.tsig.is_some() && parsed.allow.is_empty() && parsed.notify.is_empty() {
        return Err(bad("tsig: a key without allow or notify addresses is used by nothing"));
    }
    let transfer = StoredTransfer::from_transfer(&parsed);
    for _ in 0..ATTEMPTS {
        let l = load(&d, &origin).await?;
        let settings = ZoneSettings { transfer: transfer.clone(), ..l.stored.settings() };
        if put(&d, Some(&l.kv), &l.zone, l.stored.default_ttl, &settings).await? {
            info!(zone = %origin, allow = ?transfer.allow, notify = ?transfer.notify, tsig = transfer.tsig.is_some(), "DNS zone secondaries set");
            return Ok(Json(view(&StoredZone::from_zone(&l.zone, l.stored.default_ttl, settings))));
        }
    }
    Err(Failure(StatusCode::CONFLICT, "the zone kept changing under this edit; try again".into()))
}

/// Turns the zone's query log on or off; records and serial stay (the
/// zone's data did not change, so secondaries have nothing to fetch).
pub async fn set_query_log(
    State(d): State<Arc<Daemon>>,
    Json(req): Json<hostgate_api::ZoneQueryLog>,
) -> Result<Json<ZoneView>, Failure> {
    let origin = parse_origin(&req.origin)?;
    for _ in 0..ATTEMPTS {
        let l = load(&d, &origin).await?;
        let settings = ZoneSettings { query_log: req.on, ..l.stored.settings() };
        if put(&d, Some(&l.kv), &l.zone, l.stored.default_ttl, &settings).await? {
            info!(zone = %origin, on = req.on, "DNS zone query log set");
            return Ok(Json(view(&StoredZone::from_zone(&l.zone, l.stored.default_ttl, settings))));
        }
    }
    Err(Failure(StatusCode::CONFLICT, "the zone kept changing under this edit; try again".into()))
}

fn is_pool_name(stored: &StoredZone, name: &Name) -> bool {
    let text = master::name_text(&name.to_lowercase());
    stored.pools.iter().any(|p| p.name == text)
}

/// Types a pool name answers itself (and a CNAME, which would hide it).
fn answers_addresses(t: RecordType) -> bool {
    matches!(t, RecordType::A | RecordType::AAAA | RecordType::CNAME)
}

/// A pool from the request, validated field by field.
fn pool_of(req: &DnsPool, origin: &Name) -> Result<StoredPool, Failure> {
    let name = master::parse_name(req.name.trim(), origin).map_err(|e| bad(format!("name: {e}")))?.to_lowercase();
    if !origin.zone_of(&name) {
        return Err(bad(format!("name: {} is not in zone {}", master::name_text(&name), master::name_text(origin))));
    }
    let vip =
        hostgate_lb::model::VipKey::from_str(req.vip.trim()).map_err(|e| bad(format!("vip: {:?}: {e}", req.vip)))?;
    let fallback_text = req.fallback.as_deref().unwrap_or("all");
    let fallback = Fallback::from_str(fallback_text).map_err(|e| bad(e.to_string()))?;
    if let Fallback::Sorry(ip) = fallback {
        if ip.is_ipv4() != vip.addr.is_ipv4() {
            return Err(bad(format!("fallback: {ip} and VIP {vip} are of different IP families")));
        }
    }
    let ttl = check_ttl(req.ttl.unwrap_or(pool::DEFAULT_TTL))?;
    Ok(StoredPool { name: master::name_text(&name), vip: vip.to_string(), fallback: fallback.to_string(), ttl })
}

/// Changes the zone's pools, moves the serial (the answers change) and
/// commits; a lost race starts over.
async fn edit_pools<F>(d: &Daemon, origin: &Name, change: F) -> Result<Zone, Failure>
where
    F: Fn(&mut Vec<StoredPool>, &Zone) -> Result<(), Failure>,
{
    for _ in 0..ATTEMPTS {
        let l = load(d, origin).await?;
        let mut settings = l.stored.settings();
        change(&mut settings.pools, &l.zone)?;
        let zone = with_serial(&l.zone, next_serial(l.zone.soa().serial, Some(today())))?;
        if put(d, Some(&l.kv), &zone, l.stored.default_ttl, &settings).await? {
            return Ok(zone);
        }
    }
    Err(Failure(StatusCode::CONFLICT, "the zone kept changing under this edit; try again".into()))
}

fn pool_text(p: &StoredPool) -> String {
    format!("{} -> VIP {} (fallback {}, ttl {})", p.name, p.vip, p.fallback, p.ttl)
}

/// Binds a name to the healthy backends of a VIP (replacing a binding of
/// the same name).
pub async fn add_pool(State(d): State<Arc<Daemon>>, Json(req): Json<DnsPool>) -> Result<Json<RecordsChanged>, Failure> {
    let origin = parse_origin(&req.zone)?;
    let pool = pool_of(&req, &origin)?;
    let zone = edit_pools(&d, &origin, |pools, zone| {
        let taken = zone
            .records()
            .find(|r| master::name_text(&r.name.to_lowercase()) == pool.name && answers_addresses(r.record_type()));
        if let Some(r) = taken {
            return Err(Failure(
                StatusCode::CONFLICT,
                format!("{}: {} has a {} record", "name", pool.name, r.record_type()),
            ));
        }
        pools.retain(|p| p.name != pool.name);
        pools.push(pool.clone());
        Ok(())
    })
    .await?;
    info!(zone = %origin, serial = zone.soa().serial, pool = %pool_text(&pool), "DNS pool set");
    Ok(Json(RecordsChanged {
        zone: master::name_text(&origin),
        serial: zone.soa().serial,
        records: vec![pool_text(&pool)],
    }))
}

pub async fn remove_pool(
    State(d): State<Arc<Daemon>>,
    Json(req): Json<DnsPool>,
) -> Result<Json<RecordsChanged>, Failure> {
    let origin = parse_origin(&req.zone)?;
    let name = master::parse_name(req.name.trim(), &origin).map_err(|e| bad(format!("name: {e}")))?;
    let text = master::name_text(&name.to_lowercase());
    let zone = edit_pools(&d, &origin, |pools, _| {
        let before = pools.len();
        pools.retain(|p| p.name != text);
        match pools.len() < before {
            true => Ok(()),
            false => Err(Failure(StatusCode::NOT_FOUND, format!("no pool {text} in the zone"))),
        }
    })
    .await?;
    info!(zone = %origin, serial = zone.soa().serial, name = %text, "DNS pool removed");
    Ok(Json(RecordsChanged { zone: master::name_text(&origin), serial: zone.soa().serial, records: vec![text] }))
}

/// The zone's pools (`POST /v1/dns/pools/list`).
pub async fn list_pools(State(d): State<Arc<Daemon>>, Json(req): Json<ZoneRef>) -> Result<Json<Vec<DnsPool>>, Failure> {
    let origin = parse_origin(&req.origin)?;
    let l = load(&d, &origin).await?;
    let zone = master::name_text(&origin);
    Ok(Json(
        l.stored
            .pools
            .iter()
            .map(|p| DnsPool {
                zone: zone.clone(),
                name: p.name.clone(),
                vip: p.vip.clone(),
                fallback: Some(p.fallback.clone()),
                ttl: Some(p.ttl),
            })
            .collect(),
    ))
}

fn record_text(r: &Record) -> String {
    format!("{} {} IN {} {}", master::name_text(&r.name), r.ttl, r.record_type(), master::rdata_text(&r.data))
}

/// The record a request names, parsed as a zone file line would be.
fn request_record(req: &RecordChange, origin: &Name, value: &str) -> Result<Record, Failure> {
    let line = format!("{} {} {}", req.name.trim(), req.rtype.trim(), value);
    let record = master::parse_record(&line, origin, 0).map_err(|e| bad(format!("record {line:?}: {e}")))?;
    if record.record_type() == RecordType::SOA {
        return Err(bad("the SOA is kept by hostgate (zone add, zone import); its serial moves with every change"));
    }
    Ok(record)
}

pub async fn add_record(
    State(d): State<Arc<Daemon>>,
    Json(req): Json<RecordChange>,
) -> Result<Json<RecordsChanged>, Failure> {
    let origin = parse_origin(&req.zone)?;
    let value = req.value.as_deref().filter(|v| !v.trim().is_empty()).ok_or_else(|| bad("value: missing"))?;
    let new = request_record(&req, &origin, value)?;
    let ttl = req.ttl.map(check_ttl).transpose()?;
    let (zone, touched) = edit(&d, &origin, |records, stored| {
        let same_set = |r: &Record| r.name == new.name && r.record_type() == new.record_type();
        if records.iter().any(|r| same_set(r) && r.data == new.data) {
            return Err(Failure(StatusCode::CONFLICT, format!("{} exists already", record_text(&new))));
        }
        if is_pool_name(stored, &new.name) && answers_addresses(new.record_type()) {
            let name = master::name_text(&new.name);
            return Err(Failure(
                StatusCode::CONFLICT,
                format!("{name} answers from a VIP's backends (dns pool rm first)"),
            ));
        }
        let present = records.iter().find(|r| same_set(r)).map(|r| r.ttl);
        let mut record = new.clone();
        record.ttl = ttl.or(present).unwrap_or(stored.default_ttl);
        // A TTL given applies to the whole RRset (one TTL per RRset).
        records.iter_mut().filter(|r| same_set(r)).for_each(|r| r.ttl = record.ttl);
        records.push(record.clone());
        Ok(vec![record])
    })
    .await?;
    info!(zone = %origin, serial = zone.soa().serial, record = %record_text(&touched[0]), "DNS record added");
    Ok(Json(changed(&zone, &touched)))
}

fn changed(zone: &Zone, touched: &[Record]) -> RecordsChanged {
    RecordsChanged {
        zone: master::name_text(zone.origin()),
        serial: zone.soa().serial,
        records: touched.iter().map(record_text).collect(),
    }
}

pub async fn remove_record(
    State(d): State<Arc<Daemon>>,
    Json(req): Json<RecordChange>,
) -> Result<Json<RecordsChanged>, Failure> {
    let origin = parse_origin(&req.zone)?;
    let name = master::parse_name(req.name.trim(), &origin).map_err(|e| bad(format!("name: {e}")))?;
    let rtype = RecordType::from_str(&req.rtype.trim().to_ascii_uppercase())
        .map_err(|_| bad(format!("type: {:?} is not a record type", req.rtype)))?;
    if rtype == RecordType::SOA {
        return Err(bad("the SOA is kept by hostgate: remove the zone instead"));
    }
    let data = match req.value.as_deref().filter(|v| !v.trim().is_empty()) {
        Some(v) => Some(request_record(&req, &origin, v)?.data),
        None => None,
    };
    let (zone, touched) = edit(&d, &origin, |records, _| {
        let goes =
            |r: &Record| r.name == name && r.record_type() == rtype && data.as_ref().is_none_or(|d| *d == r.data);
        let (gone, kept): (Vec<Record>, Vec<Record>) = records.drain(..).partition(goes);
        *records = kept;
        if gone.is_empty() {
            let what = format!(
                "{} {rtype}{}",
                master::name_text(&name),
                req.value.as_deref().map_or(String::new(), |v| format!(" {v}"))
            );
            return Err(Failure(StatusCode::NOT_FOUND, format!("no record {what} in the zone")));
        }
        Ok(gone)
    })
    .await?;
    info!(zone = %origin, serial = zone.soa().serial, removed = touched.len(), "DNS records removed");
    Ok(Json(changed(&zone, &touched)))
}

pub async fn list_records(
    State(d): State<Arc<Daemon>>,
    Json(req): Json<ZoneRef>,
) -> Result<Json<Vec<RecordView>>, Failure> {
    let origin = parse_origin(&req.origin)?;
    let l = load(&d, &origin).await?;
    Ok(Json(
        l.zone
            .records()
            .map(|r| RecordView {
                name: master::name_text(&r.name),
                ttl: r.ttl,
                rtype: r.record_type().to_string(),
                data: master::rdata_text(&r.data),
            })
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_for_serials() {
        assert!((20_260_101..21_000_101).contains(&today()), "{}", today());
    }

    #[test]
    fn admin_emails_become_names() {
        let origin = Name::from_str("example.com.").expect("name");
        let name = |a: Option<&str>| admin_name(a, &origin).map(|n| master::name_text(&n)).unwrap_or_default();
        assert_eq!(name(None), "hostmaster.example.com.");
        assert_eq!(name(Some("dns.admin@example.net")), "dns\\.admin.example.net.");
        assert_eq!(name(Some("root")), "root.example.com.");
    }

    #[test]
    fn the_origin_of_a_file() {
        assert_eq!(origin_in_text("; c\n$origin example.com.\n@ SOA x"), Some("example.com."));
        assert_eq!(origin_in_text("@ SOA x"), None);
    }
}

//! How a zone lives in the store: one key per zone, `dns/zones/<origin>`,
//! holding the whole zone as JSON (origin, SOA fields, every record with
//! its data in master-file text). One key per zone makes every change to a
//! zone one compare-and-set transaction, and the serial moves with it.
//!
//! Reading a zone back goes through `hostgate_dns::master::parse` and so
//! through the zone's validation: a hand-edited or corrupt entry is refused
//! (and logged by the server), never served half-valid.

use hickory_proto::rr::Name;
use hostgate_dns::{
    master::{self, name_text, rdata_text},
    xfr::{self, Transfer, TsigKey, XfrError},
    zone::Zone,
};
use serde::{Deserialize, Serialize};

/// Prefix of everything DNS keeps in the store.
pub const PREFIX: &str = "dns/";
/// Prefix of the zones.
pub const ZONES: &str = "dns/zones/";

/// The key of the zone of `origin`: its lowercase presentation form without
/// the final dot (the root zone is `.`).
pub fn zone_key(origin: &Name) -> String {
    let text = name_text(&origin.to_lowercase());
    let bare = text.strip_suffix('.').filter(|t| !t.is_empty()).unwrap_or(&text);
    format!("{ZONES}{bare}")
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSoa {
    pub ttl: u32,
    pub mname: String,
    pub rname: String,
    pub serial: u32,
    pub refresh: i32,
    pub retry: i32,
    pub expire: i32,
    pub minimum: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRecord {
    pub name: String,
    pub ttl: u32,
    #[serde(rename = "type")]
    pub rtype: String,
    pub data: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredZone {
    pub origin: String,
    /// TTL of records added without one.
    pub default_ttl: u32,
    pub soa: StoredSoa,
    /// Every record but the SOA, in canonical order.
    pub records: Vec<StoredRecord>,
    /// Secondaries: who may transfer the zone and who is notified.
    #[serde(default, skip_serializing_if = "StoredTransfer::is_empty")]
    pub transfer: StoredTransfer,
    /// Names answered from a VIP's healthy backends (`hostgate_dns::pool`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pools: Vec<StoredPool>,
    /// Every query for the zone is logged (off by default: queries are
    /// personal data of the asking resolvers' users, and a busy zone
    /// would drown the log).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub query_log: bool,
    /// The customer whose domain this is: its logged queries go to the
    /// customer's query log file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<String>,
}

/// A zone's settings besides its records.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ZoneSettings {
    pub transfer: StoredTransfer,
    pub pools: Vec<StoredPool>,
    pub query_log: bool,
    pub customer: Option<String>,
}

/// A name bound to a load balancer VIP.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPool {
    /// Absolute, lowercase.
    pub name: String,
    /// The VIP as `hostgate vip` writes it (`203.0.113.10:80/tcp`).
    pub vip: String,
    /// `all`, `none` or an address.
    pub fallback: String,
    pub ttl: u32,
}

/// A zone's transfer settings as the API took them (text, validated on the
/// way in and again on the way out, like the records).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredTransfer {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<String>,
    /// `NAME:ALGORITHM:BASE64SECRET`. The store holds the secret as it
    /// holds the other keys; the API never shows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tsig: Option<String>,
}

impl StoredTransfer {
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.notify.is_empty() && self.tsig.is_none()
    }

    /// The settings, validated; errors name the field and the value.
    pub fn parse(&self) -> Result<Transfer, XfrError> {
        Ok(Transfer {
            allow: self.allow.iter().map(|a| xfr::parse_allow(a)).collect::<Result<_, _>>()?,
            notify: self.notify.iter().map(|n| xfr::parse_notify(n)).collect::<Result<_, _>>()?,
            tsig: self.tsig.as_deref().map(TsigKey::parse).transpose()?,
        })
    }

    /// The canonical text of validated settings.
    pub fn from_transfer(t: &Transfer) -> Self {
        StoredTransfer {
            allow: t.allow.iter().map(ToString::to_string).collect(),
            notify: t.notify.iter().map(ToString::to_string).collect(),
            tsig: t.tsig.as_ref().map(TsigKey::text),
        }
    }
}

impl StoredZone {
    /// What the zone carries besides its records, for a rewrite to keep.
    pub fn settings(&self) -> ZoneSettings {
        ZoneSettings {
            transfer: self.transfer.clone(),
            pools: self.pools.clone(),
            query_log: self.query_log,
            customer: self.customer.clone(),
        }
    }

    pub fn from_zone(zone: &Zone, default_ttl: u32, settings: ZoneSettings) -> Self {
        let soa = zone.soa();
        let records = zone
            .rrsets()
            .flat_map(|(owner, rtype, set)| {
                set.data.iter().map(move |d| StoredRecord {
                    name: name_text(owner),
                    ttl: set.ttl,
                    rtype: rtype.to_string(),
                    data: rdata_text(d),
                })
            })
            .collect();
        StoredZone {
            origin: name_text(zone.origin()),
            default_ttl,
            soa: StoredSoa {
                ttl: zone.soa_ttl(),
                mname: name_text(&soa.mname),
                rname: name_text(&soa.rname),
                serial: soa.serial,
                refresh: soa.refresh,
                retry: soa.retry,
                expire: soa.expire,
                minimum: soa.minimum,
            },
            records,
            transfer: settings.transfer,
            pools: settings.pools,
            query_log: settings.query_log,
            customer: settings.customer,
        }
    }

    /// The zone, validated. `source` names the entry in errors.
    pub fn to_zone(&self, source: &str) -> Result<Zone, String> {
        let origin = master::parse_name(&self.origin, &Name::root()).map_err(|e| format!("{source}: origin: {e}"))?;
        master::parse(&self.master_text(), source, &origin)
            .map_err(|errors| errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))
    }

    /// The entry as a zone file (absolute names, one record a line).
    fn master_text(&self) -> String {
        let s = &self.soa;
        let mut text = format!(
            "{} {} IN SOA {} {} {} {} {} {} {}\n",
            self.origin, s.ttl, s.mname, s.rname, s.serial, s.refresh, s.retry, s.expire, s.minimum
        );
        for r in &self.records {
            text += &format!("{} {} IN {} {}\n", r.name, r.ttl, r.rtype, r.data);
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn a_zone_survives_the_store() {
        let origin = Name::from_str("Example.COM.").expect("name");
        let text = "$TTL 300\n@ SOA ns1 hostmaster 7 2h 15m 2w 5m\n NS ns1\nns1 A 198.51.100.1\n\
                    www TXT \"a \\\"quoted\\\" text\" b\n_sip._tcp SRV 1 2 5060 www\n@ MX 10 mail.example.net.\n";
        let zone = master::parse(text, "t", &origin).expect("zone");
        let stored = StoredZone::from_zone(&zone, 3600, ZoneSettings::default());
        let json = serde_json::to_string(&stored).expect("json");
        let back: StoredZone = serde_json::from_str(&json).expect("decode");
        assert_eq!(back.to_zone("k").expect("valid"), zone);
        assert_eq!(zone_key(&origin), "dns/zones/example.com");
        assert_eq!(zone_key(&Name::root()), "dns/zones/.");
        assert!(!json.contains("transfer") && !json.contains("query_log"), "no settings, no field: {json}");
    }

    #[test]
    fn transfer_settings_survive_the_store() {
        let t = StoredTransfer {
            allow: vec!["198.51.100.2".into(), "2001:db8::2".into()],
            notify: vec!["198.51.100.2:53".into()],
            tsig: Some("xfr.example.com:hmac-sha256:c2VjcmV0".into()),
        };
        let parsed = t.parse().expect("valid");
        assert_eq!(StoredTransfer::from_transfer(&parsed), t);
        let bad = StoredTransfer { notify: vec!["ns2".into()], ..t };
        assert!(bad.parse().expect_err("bad").to_string().starts_with("notify:"));
    }

    #[test]
    fn a_broken_entry_is_refused_with_its_source() {
        let origin = Name::from_str("example.com.").expect("name");
        let zone = master::parse("@ 60 SOA ns1 h 1 1 1 1 1\n@ 60 NS ns1\n", "t", &origin).expect("zone");
        let mut stored = StoredZone::from_zone(&zone, 60, ZoneSettings::default());
        stored.records.clear();
        let e = stored.to_zone("dns/zones/example.com").expect_err("no NS");
        assert!(e.starts_with("dns/zones/example.com"), "{e}");
    }
}

//! Containers' names, derived (never stored): `<name>.<customer>.<zone>`
//! for each bound DHCP lease with a hostname and each registered
//! container, and PTR records for their addresses in reverse zones (one
//! per IPv4 /24 and IPv6 /64 in use). They follow the leases and the
//! registry, so a name appears with its lease and goes with it, and the
//! zones are rebuilt from the store at start like every derived state.

use std::{collections::BTreeMap, fmt::Write as _, net::IpAddr};

use hickory_proto::rr::Name;
use hostgate_dhcp::{
    leases::{Lease, State},
    network::Network,
};
use hostgate_dns::{master, zone::Zone};
use hostgate_ipam::model::Container;

/// TTL of derived names: short, since leases come and go.
const TTL: u32 = 60;

/// One name to publish: `label.customer` under the zone, and its address.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    pub label: String,
    pub customer: String,
    pub addr: IpAddr,
}

/// A DNS label from a hostname or container name: lowercase letters,
/// digits and '-', at most 63; `None` if nothing usable is left.
fn label(raw: &str) -> Option<String> {
    let first = raw.split('.').next().unwrap_or_default().to_ascii_lowercase();
    let clean: String = first.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').take(63).collect();
    let clean = clean.trim_matches('-').to_string();
    (!clean.is_empty()).then_some(clean)
}

/// The names of bound leases (by their network's customer) and of
/// registered containers.
pub fn entries(networks: &[Network], leases: &[(String, Lease)], containers: &[Container]) -> Vec<Entry> {
    let customer_of: BTreeMap<&str, &str> = networks.iter().map(|n| (n.name.as_str(), n.customer.as_str())).collect();
    let mut out = Vec::new();
    for (network, l) in leases.iter().filter(|(_, l)| l.state == State::Bound) {
        let (Some(customer), Some(host)) = (customer_of.get(network.as_str()), l.hostname.as_deref()) else { continue };
        if let (Some(label), Some(customer)) = (label(host), label(customer)) {
            out.push(Entry { label, customer, addr: IpAddr::V4(l.addr) });
        }
    }
    for c in containers {
        if let (Some(label), Some(customer)) = (label(&c.name), label(&c.customer)) {
            out.extend(c.ips.iter().map(|a| Entry { label: label.clone(), customer: customer.clone(), addr: *a }));
        }
    }
    out.sort();
    out.dedup();
    out
}

fn header(origin: &str, zone: &str, serial: u32) -> String {
    format!(
        "$ORIGIN {origin}\n@ {TTL} IN SOA ns.{zone} hostmaster.{zone} {serial} 3600 600 86400 {TTL}\n@ {TTL} IN NS ns.{zone}\n"
    )
}

/// The reverse zone of an address (its /24 or /64) and the PTR owner in it.
fn reverse(addr: IpAddr) -> (String, String) {
    match addr {
        IpAddr::V4(a) => {
            let o = a.octets();
            (format!("{}.{}.{}.in-addr.arpa.", o[2], o[1], o[0]), o[3].to_string())
        }
        IpAddr::V6(a) => {
            let nibbles: Vec<String> = a
                .octets()
                .iter()
                .flat_map(|b| [b >> 4, b & 0xf])
                .map(|n| format!("{n:x}"))
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            (format!("{}.ip6.arpa.", nibbles[16..].join(".")), nibbles[..16].join("."))
        }
    }
}

/// The forward zone and the reverse zones for `entries`.
pub fn zones(zone: &str, entries: &[Entry], serial: u32) -> Result<Vec<Zone>, String> {
    let zone = format!("{}.", zone.trim_end_matches('.'));
    let mut forward = header(&zone, &zone, serial);
    let mut reverses: BTreeMap<String, String> = BTreeMap::new();
    for e in entries {
        let kind = if e.addr.is_ipv4() { "A" } else { "AAAA" };
        let _ = writeln!(forward, "{}.{} {TTL} IN {kind} {}", e.label, e.customer, e.addr);
        let (rzone, owner) = reverse(e.addr);
        let text = reverses.entry(rzone.clone()).or_insert_with(|| header(&rzone, &zone, serial));
        let _ = writeln!(text, "{owner} {TTL} IN PTR {}.{}.{zone}", e.label, e.customer);
    }
    let mut out = Vec::new();
    for (origin, text) in std::iter::once((zone.clone(), forward)).chain(reverses) {
        let name = Name::from_ascii(&origin).map_err(|e| format!("{origin}: {e}"))?;
        let parsed = master::parse(&text, "(derived names)", &name)
            .map_err(|errors| errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))?;
        out.push(parsed);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_reverse_zones() {
        let entries = vec![
            Entry { label: "web1".into(), customer: "acme".into(), addr: "198.51.100.200".parse().expect("ip") },
            Entry { label: "db".into(), customer: "acme".into(), addr: "2001:db8:51::7".parse().expect("ip") },
        ];
        let zones = zones("internal.example.net", &entries, 7).expect("zones");
        let origins: Vec<String> = zones.iter().map(|z| z.origin().to_ascii()).collect();
        assert_eq!(
            origins,
            ["internal.example.net.", "0.0.0.0.1.5.0.0.8.b.d.0.1.0.0.2.ip6.arpa.", "100.51.198.in-addr.arpa."]
        );
        assert_eq!(label("Web_1.local").as_deref(), Some("web1"));
        assert_eq!(label("--"), None);
    }
}

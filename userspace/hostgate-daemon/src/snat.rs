//! Source NAT of what containers send out, through nftables (the
//! `nftables` crate drives `nft -j`): hostgate keeps to its own table,
//! `inet hostgate`, which it replaces whole in one transaction, and never
//! touches any other.

use std::{borrow::Cow, net::IpAddr};

use hostgate_ipam::model::Container;
use nftables::{
    batch::Batch,
    expr::{Expression, NamedExpression, Payload, PayloadField},
    schema::{Chain, NfListObject, Rule, Table},
    stmt::{Match, NATFamily, Operator, Statement, NAT},
    types::{NfChainType, NfFamily, NfHook},
};

pub const TABLE: &str = "hostgate";
const CHAIN: &str = "snat";

fn saddr_is(addr: IpAddr) -> Statement<'static> {
    let protocol = if addr.is_ipv4() { "ip" } else { "ip6" };
    Statement::Match(Match {
        left: Expression::Named(NamedExpression::Payload(Payload::PayloadField(PayloadField {
            protocol: Cow::Borrowed(protocol),
            field: Cow::Borrowed("saddr"),
        }))),
        right: Expression::String(Cow::Owned(addr.to_string())),
        op: Operator::EQ,
    })
}

/// The nftables batch that makes `inet hostgate` hold exactly `containers`' NAT.
pub fn batch(containers: &[Container]) -> Batch<'static> {
    let mut b = Batch::new();
    let table = Table { family: NfFamily::INet, name: Cow::Borrowed(TABLE), ..Default::default() };
    // add + delete + add: replaces the table whether or not it existed, atomically.
    b.add(NfListObject::Table(table.clone()));
    b.delete(NfListObject::Table(table.clone()));
    b.add(NfListObject::Table(table));
    b.add(NfListObject::Chain(Chain {
        family: NfFamily::INet,
        table: Cow::Borrowed(TABLE),
        name: Cow::Borrowed(CHAIN),
        _type: Some(NfChainType::NAT),
        hook: Some(NfHook::Postrouting),
        prio: Some(100),
        ..Default::default()
    }));
    for c in containers {
        let Some(snat) = &c.snat else { continue };
        let target: Option<IpAddr> = snat.parse().ok();
        for addr in &c.ips {
            let nat = match target {
                Some(t) if t.is_ipv4() != addr.is_ipv4() => continue,
                Some(t) => Statement::SNAT(Some(NAT {
                    addr: Some(Expression::String(Cow::Owned(t.to_string()))),
                    family: Some(if t.is_ipv4() { NATFamily::IP } else { NATFamily::IP6 }),
                    port: None,
                    flags: None,
                })),
                None => Statement::Masquerade(None),
            };
            b.add(NfListObject::Rule(Rule {
                family: NfFamily::INet,
                table: Cow::Borrowed(TABLE),
                chain: Cow::Borrowed(CHAIN),
                expr: Cow::Owned(vec![saddr_is(*addr), nat]),
                ..Default::default()
            }));
        }
    }
    b
}

/// Applies the NAT of `containers` (an empty table when none asks for it).
pub fn apply(containers: &[Container]) -> anyhow::Result<()> {
    nftables::helper::apply_ruleset(&batch(containers).to_nftables())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_rule_per_address_of_the_target_family() {
        let c = Container {
            name: "web".into(),
            customer: "acme".into(),
            iface: "hgc1".into(),
            ips: vec!["198.51.100.6".parse().expect("ip"), "2001:db8:51:1::2".parse().expect("ip")],
            mac: None,
            snat: Some("203.0.113.10".into()),
            created: 0,
            node: None,
        };
        let json = serde_json::to_string(&batch(&[c]).to_nftables()).expect("json");
        assert!(json.contains("\"snat\"") && json.contains("203.0.113.10") && json.contains("198.51.100.6"), "{json}");
        assert!(!json.contains("2001:db8:51:1::2"), "no IPv4 NAT for the IPv6 address: {json}");
        assert!(json.contains("\"postrouting\""));
    }
}

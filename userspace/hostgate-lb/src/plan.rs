//! From declared VIPs and backends to what the BPF maps must hold on this
//! node: pure, so every rule about which backend takes traffic is tested
//! without a kernel.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use crate::{
    maglev::{self, MaglevBackend},
    model::{BackendSpec, Mode, VipKey, VipSpec},
};

/// A VIP as the maps will hold it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedVip {
    pub key: VipKey,
    pub id: u32,
    pub ring_size: u32,
    /// The Maglev ring; `None` when no backend can take new flows.
    pub ring: Option<Vec<u32>>,
}

/// A backend as the maps will hold it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedBackend {
    pub id: u32,
    pub addr: IpAddr,
    pub port: Option<u16>,
    /// As seen from this node: `Nat` for backends here, `Dsr` for others.
    pub mode: Mode,
    /// For `Dsr`: the underlay address of the hosting node.
    pub node_addr: Option<IpAddr>,
    /// Takes packets at all: existing flows stay on an active backend even
    /// at weight 0 (draining); an unhealthy one loses them.
    pub active: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub vips: Vec<PlannedVip>,
    pub backends: BTreeMap<u32, PlannedBackend>,
}

/// Why a declared backend is left out of the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub vip: VipKey,
    pub backend: String,
    pub reason: String,
}

/// Where the plan is built: this node's name and every node's underlay
/// addresses (for tunnels to the nodes hosting DSR backends).
#[derive(Clone, Debug, Default)]
pub struct Site {
    pub this_node: String,
    pub nodes: BTreeMap<String, Vec<IpAddr>>,
}

impl Site {
    /// How this node reaches backend `b`: (mode, tunnel endpoint). A backend
    /// on this node is local (NAT); one on another node is tunnelled there
    /// whatever its mode (in a cluster, a NAT backend added on node A is
    /// reached from node B through A, which translates and delivers it).
    fn route(&self, b: &BackendSpec) -> Result<(Mode, Option<IpAddr>), String> {
        let here = b.node.as_deref().is_none_or(|n| n == self.this_node);
        match here {
            true => Ok((Mode::Nat, None)),
            false => {
                let node = b.node.clone().unwrap_or_default();
                let addrs =
                    self.nodes.get(&node).ok_or_else(|| format!("node {node} is unknown (hostgate node add)"))?;
                let addr = addrs
                    .iter()
                    .find(|a| a.is_ipv4() == b.vip.addr.is_ipv4())
                    .ok_or_else(|| format!("node {node} has no address of the VIP's family"))?;
                Ok((Mode::Dsr, Some(*addr)))
            }
        }
    }
}

/// Builds the plan. `unhealthy` holds backend ids whose health checks fail.
/// Backends of unknown VIPs, or that fail validation, are skipped and
/// reported rather than breaking the rest.
pub fn build(
    vips: &[VipSpec],
    backends: &[BackendSpec],
    unhealthy: &BTreeSet<u32>,
    site: &Site,
) -> (Plan, Vec<Skipped>) {
    let mut plan = Plan::default();
    let mut skipped = Vec::new();
    let known: BTreeSet<VipKey> = vips.iter().map(|v| v.key).collect();
    let mut by_vip: BTreeMap<VipKey, Vec<&BackendSpec>> = BTreeMap::new();
    for b in backends {
        let route = if !known.contains(&b.vip) {
            Err("its VIP does not exist".to_string())
        } else if let Err(e) = b.validate() {
            Err(e.to_string())
        } else {
            site.route(b)
        };
        let (mode, node_addr) = match route {
            Ok(r) => r,
            Err(reason) => {
                skipped.push(Skipped { vip: b.vip, backend: b.identity(), reason });
                continue;
            }
        };
        by_vip.entry(b.vip).or_default().push(b);
        plan.backends.insert(
            b.id,
            PlannedBackend {
                id: b.id,
                addr: b.addr,
                port: b.port,
                mode,
                node_addr,
                active: !unhealthy.contains(&b.id),
            },
        );
    }
    for v in vips {
        let members: Vec<MaglevBackend> = by_vip
            .get(&v.key)
            .into_iter()
            .flatten()
            .filter(|b| !unhealthy.contains(&b.id))
            .map(|b| MaglevBackend { id: b.id, identity: b.identity(), weight: b.weight })
            .collect();
        plan.vips.push(PlannedVip {
            key: v.key,
            id: v.id,
            ring_size: v.ring_size,
            ring: maglev::build(&members, v.ring_size),
        });
    }
    (plan, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vip(s: &str, id: u32) -> VipSpec {
        VipSpec { key: s.parse().expect("vip"), id, ring_size: 251 }
    }

    fn backend(v: &str, addr: &str, id: u32, weight: u32) -> BackendSpec {
        BackendSpec {
            vip: v.parse().expect("vip"),
            addr: addr.parse().expect("addr"),
            port: None,
            weight,
            mode: Mode::Nat,
            node: None,
            id,
            check: None,
        }
    }

    #[test]
    fn unhealthy_backends_leave_the_ring_and_go_inactive() {
        let v = "203.0.113.10:80/tcp";
        let (plan, skipped) = build(
            &[vip(v, 0)],
            &[backend(v, "198.51.100.6", 1, 1), backend(v, "198.51.100.10", 2, 1)],
            &BTreeSet::from([2]),
            &Site::default(),
        );
        assert!(skipped.is_empty());
        let ring = plan.vips[0].ring.as_ref().expect("ring");
        assert!(ring.iter().all(|id| *id == 1));
        assert!(plan.backends[&1].active && !plan.backends[&2].active);
    }

    #[test]
    fn draining_backend_keeps_flows_but_no_slots() {
        let v = "203.0.113.10:80/tcp";
        let (plan, _) = build(
            &[vip(v, 0)],
            &[backend(v, "198.51.100.6", 1, 1), backend(v, "198.51.100.10", 2, 0)],
            &BTreeSet::new(),
            &Site::default(),
        );
        assert!(plan.vips[0].ring.as_ref().expect("ring").iter().all(|id| *id == 1));
        assert!(plan.backends[&2].active, "weight 0 drains: established flows continue");
    }

    #[test]
    fn dsr_backends_route_by_node() {
        let v = "203.0.113.10:80/tcp";
        let mut remote = backend(v, "198.51.100.10", 1, 1);
        remote.mode = Mode::Dsr;
        remote.node = Some("b".into());
        let mut here = remote.clone();
        here.id = 2;
        here.addr = "198.51.100.6".parse().expect("ip");
        here.node = Some("a".into());
        let site = Site {
            this_node: "a".into(),
            nodes: BTreeMap::from([(
                "b".to_string(),
                vec!["2001:db8::b".parse().expect("ip"), "198.18.0.2".parse().expect("ip")],
            )]),
        };
        let (plan, skipped) = build(&[vip(v, 0)], &[remote.clone(), here], &BTreeSet::new(), &site);
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(
            (plan.backends[&1].mode, plan.backends[&1].node_addr),
            (Mode::Dsr, Some("198.18.0.2".parse().expect("ip")))
        );
        assert_eq!(
            (plan.backends[&2].mode, plan.backends[&2].node_addr),
            (Mode::Nat, None),
            "dsr to ourselves is local"
        );
        // A NAT backend added on node b (a cluster) is tunnelled there too.
        let mut nat_at_b = remote.clone();
        nat_at_b.mode = Mode::Nat;
        let (plan, _) = build(&[vip(v, 0)], std::slice::from_ref(&nat_at_b), &BTreeSet::new(), &site);
        assert_eq!(plan.backends[&1].mode, Mode::Dsr);
        // Seen from node b, the same backend is local.
        let at_b = Site { this_node: "b".into(), nodes: BTreeMap::new() };
        let (plan, _) = build(&[vip(v, 0)], std::slice::from_ref(&remote), &BTreeSet::new(), &at_b);
        assert_eq!(plan.backends[&1].mode, Mode::Nat);
        // An unknown node is reported, not guessed.
        let (_, skipped) =
            build(&[vip(v, 0)], &[remote], &BTreeSet::new(), &Site { this_node: "a".into(), nodes: BTreeMap::new() });
        assert!(skipped[0].reason.contains("node b is unknown"));
    }

    #[test]
    fn vip_without_backends_has_no_ring() {
        let (plan, _) = build(&[vip("203.0.113.10", 3)], &[], &BTreeSet::new(), &Site::default());
        assert_eq!(plan.vips[0].ring, None);
        assert_eq!(plan.vips[0].id, 3);
    }

    #[test]
    fn orphans_and_invalid_backends_are_reported() {
        let (plan, skipped) = build(
            &[vip("203.0.113.10:80/tcp", 0)],
            &[
                backend("203.0.113.11:80/tcp", "198.51.100.6", 1, 1),
                backend("203.0.113.10:80/tcp", "2001:db8::6", 2, 1),
            ],
            &BTreeSet::new(),
            &Site::default(),
        );
        assert!(plan.backends.is_empty());
        assert_eq!(skipped.len(), 2);
        assert!(skipped[0].reason.contains("VIP does not exist"));
        assert!(skipped[1].reason.contains("different IP families"));
    }
}

//! Applies a load-balancer [`Plan`] to the BPF maps, in an order that never
//! shows a packet a half-built state, and reads the LB counters.
//!
//! Order of one apply: backends written, then each changed ring built
//! complete in a new inner map and swapped into `hg_maglev` with one
//! update, then VIP entries (which make the rings reachable), then VIPs and
//! backends that left the plan are removed and their counters zeroed.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    hash::{Hash, Hasher},
};

use aya::maps::{Array, ArrayOfMaps, HashMap as BpfHashMap, MapData, PerCpuArray, PerCpuValues};
use hostgate_lb::{
    model::Mode as PlanMode,
    plan::{Plan, PlannedBackend, PlannedVip},
};

use crate::{
    abi::{self, addr_words, family_of, names, port_be, Backend, LbCounter, Vip, VipKey},
    map_access, Dataplane, DataplaneError,
};

/// What this process last wrote, so unchanged rings are not rebuilt.
#[derive(Debug, Default)]
pub struct LbApplied {
    ring_fingerprints: HashMap<u32, u64>,
}

/// Traffic counters of the load balancer, summed over CPUs, by id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LbStats {
    pub vips: BTreeMap<u32, LbCounter>,
    pub backends: BTreeMap<u32, LbCounter>,
}

fn vip_key(key: &hostgate_lb::model::VipKey) -> VipKey {
    VipKey {
        addr: addr_words(key.addr),
        port: key.port.map_or(0, port_be),
        proto: key.proto.map_or(0, |p| p.number()),
        family: family_of(key.addr) as u8,
    }
}

fn backend_value(b: &PlannedBackend) -> Backend {
    Backend {
        addr: addr_words(b.addr),
        node: b.node_addr.map_or([0; 4], addr_words),
        port: b.port.map_or(0, port_be),
        family: family_of(b.addr) as u8,
        mode: match b.mode {
            PlanMode::Nat => abi::Mode::Nat as u8,
            PlanMode::Dsr => abi::Mode::Dsr as u8,
        },
        flags: if b.active { abi::BACKEND_ACTIVE } else { 0 },
    }
}

fn fingerprint(v: &PlannedVip) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.ring_size.hash(&mut h);
    v.ring.hash(&mut h);
    h.finish()
}

impl Dataplane {
    /// Makes the LB maps hold `plan`.
    pub fn apply_lb(&mut self, plan: &Plan) -> Result<(), DataplaneError> {
        self.write_backends(plan)?;
        for vip in &plan.vips {
            let fp = fingerprint(vip);
            if self.lb_applied.ring_fingerprints.get(&vip.id) != Some(&fp) {
                if let Some(ring) = &vip.ring {
                    self.swap_ring(vip.id, vip.ring_size, ring)?;
                }
                self.lb_applied.ring_fingerprints.insert(vip.id, fp);
            }
        }
        self.write_vips(plan)?;
        self.remove_stale(plan)
    }

    fn write_backends(&mut self, plan: &Plan) -> Result<(), DataplaneError> {
        let map = self.named_map_mut(names::BACKENDS)?;
        let mut backends: Array<&mut MapData, Backend> = Array::try_from(map).map_err(map_access(names::BACKENDS))?;
        for b in plan.backends.values() {
            backends.set(b.id, backend_value(b), 0).map_err(map_access(names::BACKENDS))?;
        }
        Ok(())
    }

    /// Builds the ring complete in a fresh inner map, then swaps it in.
    fn swap_ring(&mut self, vip_id: u32, ring_size: u32, ring: &[u32]) -> Result<(), DataplaneError> {
        let mut inner: Array<MapData, u32> =
            Array::create(ring_size, abi::BPF_F_INNER_MAP).map_err(map_access("maglev ring"))?;
        for (slot, id) in ring.iter().enumerate() {
            inner.set(slot as u32, id, 0).map_err(map_access("maglev ring"))?;
        }
        let map = self.named_map_mut(names::MAGLEV)?;
        let mut outer: ArrayOfMaps<&mut MapData, Array<MapData, u32>> =
            ArrayOfMaps::try_from(map).map_err(map_access(names::MAGLEV))?;
        outer.set(vip_id, &inner, 0).map_err(map_access(names::MAGLEV))
    }

    fn write_vips(&mut self, plan: &Plan) -> Result<(), DataplaneError> {
        let map = self.named_map_mut(names::VIPS)?;
        let mut vips: BpfHashMap<&mut MapData, VipKey, Vip> =
            BpfHashMap::try_from(map).map_err(map_access(names::VIPS))?;
        for v in &plan.vips {
            // ring_size 0 tells the program there is no ring: new flows are dropped.
            let value = Vip { id: v.id, ring_size: if v.ring.is_some() { v.ring_size } else { 0 } };
            vips.insert(vip_key(&v.key), value, 0).map_err(map_access(names::VIPS))?;
        }
        Ok(())
    }

    fn remove_stale(&mut self, plan: &Plan) -> Result<(), DataplaneError> {
        let wanted: BTreeSet<VipKey> = plan.vips.iter().map(|v| vip_key(&v.key)).collect();
        let map = self.named_map_mut(names::VIPS)?;
        let mut vips: BpfHashMap<&mut MapData, VipKey, Vip> =
            BpfHashMap::try_from(map).map_err(map_access(names::VIPS))?;
        let mut gone_vips = Vec::new();
        for key in vips.keys().collect::<Result<Vec<_>, _>>().map_err(map_access(names::VIPS))? {
            if !wanted.contains(&key) {
                let id = vips.get(&key, 0).map_err(map_access(names::VIPS))?.id;
                vips.remove(&key).map_err(map_access(names::VIPS))?;
                gone_vips.push(id);
            }
        }
        for id in &gone_vips {
            self.lb_applied.ring_fingerprints.remove(id);
        }
        self.zero_counters(names::VIP_STATS, &gone_vips)?;

        let map = self.named_map_mut(names::BACKENDS)?;
        let mut backends: Array<&mut MapData, Backend> = Array::try_from(map).map_err(map_access(names::BACKENDS))?;
        let mut gone_backends = Vec::new();
        for id in 1..abi::MAX_BACKENDS {
            if !plan.backends.contains_key(&id)
                && backends.get(&id, 0).map_err(map_access(names::BACKENDS))? != Backend::default()
            {
                backends.set(id, Backend::default(), 0).map_err(map_access(names::BACKENDS))?;
                gone_backends.push(id);
            }
        }
        self.zero_counters(names::BACKEND_STATS, &gone_backends)
    }

    fn zero_counters(&mut self, name: &'static str, ids: &[u32]) -> Result<(), DataplaneError> {
        if ids.is_empty() {
            return Ok(());
        }
        let cpus = aya::util::nr_cpus().map_err(|(what, e)| DataplaneError::Io { path: what.into(), source: e })?;
        let map = self.named_map_mut(name)?;
        let mut stats: PerCpuArray<&mut MapData, LbCounter> = PerCpuArray::try_from(map).map_err(map_access(name))?;
        for id in ids {
            let zeros = PerCpuValues::try_from(vec![LbCounter::default(); cpus])
                .map_err(|e| DataplaneError::Io { path: name.into(), source: e })?;
            stats.set(*id, zeros, 0).map_err(map_access(name))?;
        }
        Ok(())
    }

    /// This node's underlay addresses: where its tunnels start and end.
    pub fn set_node_addrs(&mut self, addrs: &[std::net::IpAddr]) -> Result<(), DataplaneError> {
        let mut value = abi::NodeAddrs::default();
        for a in addrs {
            match a {
                std::net::IpAddr::V4(_) if value.v4 == 0 => value.v4 = addr_words(*a)[0],
                std::net::IpAddr::V6(_) if value.v6 == [0; 4] => value.v6 = addr_words(*a),
                _ => {}
            }
        }
        let map = self.named_map_mut(names::NODE)?;
        let mut node: Array<&mut MapData, abi::NodeAddrs> = Array::try_from(map).map_err(map_access(names::NODE))?;
        node.set(0, value, 0).map_err(map_access(names::NODE))
    }

    /// Counters of the given VIP and backend ids.
    pub fn lb_stats(&self, vip_ids: &[u32], backend_ids: &[u32]) -> Result<LbStats, DataplaneError> {
        let read = |name: &'static str, ids: &[u32]| -> Result<BTreeMap<u32, LbCounter>, DataplaneError> {
            let map = self.named_map(name)?;
            let stats: PerCpuArray<&MapData, LbCounter> = PerCpuArray::try_from(map).map_err(map_access(name))?;
            let mut out = BTreeMap::new();
            for id in ids {
                let mut sum = LbCounter::default();
                for c in stats.get(id, 0).map_err(map_access(name))?.iter() {
                    sum += *c;
                }
                out.insert(*id, sum);
            }
            Ok(out)
        };
        Ok(LbStats { vips: read(names::VIP_STATS, vip_ids)?, backends: read(names::BACKEND_STATS, backend_ids)? })
    }

    /// Number of flows in the connection table (for status).
    pub fn conntrack_len(&self) -> Result<usize, DataplaneError> {
        let map = self.named_map(names::CONNTRACK)?;
        let ct: BpfHashMap<&MapData, abi::FlowKey, abi::CtEntry> =
            BpfHashMap::try_from(map).map_err(map_access(names::CONNTRACK))?;
        Ok(ct.keys().count())
    }

    /// Runs the uplink program once on `frame` with BPF_PROG_TEST_RUN:
    /// returns the XDP action and the frame as the program left it. For
    /// tests and benchmarks; counters and tables are the live ones.
    pub fn xdp_test_run(&mut self, frame: &[u8]) -> Result<(u32, Vec<u8>), DataplaneError> {
        self.xdp_test_run_timed(frame).map(|(action, out, _)| (action, out))
    }

    /// As [`Dataplane::xdp_test_run`], with the kernel's measure of the run.
    pub fn xdp_test_run_timed(&mut self, frame: &[u8]) -> Result<(u32, Vec<u8>, std::time::Duration), DataplaneError> {
        use aya::programs::{TestRun, TestRunOptions, Xdp};
        let prog: &mut Xdp = crate::program(&mut self.ebpf, names::XDP_UPLINK)?;
        let mut out = vec![0u8; frame.len() + 256];
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        opts.data_out = Some(&mut out);
        let result =
            prog.test_run(opts).map_err(|source| DataplaneError::Program { name: names::XDP_UPLINK, source })?;
        out.truncate(result.data_size_out as usize);
        Ok((result.return_value, out, result.duration))
    }
}

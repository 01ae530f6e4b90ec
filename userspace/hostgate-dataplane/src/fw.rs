//! Applies firewall [`Tables`] to the kernel with a version flip: the new
//! ruleset is written beside the old under the other version bit, made
//! live with one update of `hg_fw_active`, then the old one is removed.
//! A packet is judged by the old ruleset or the new one, never a mix.

use std::net::IpAddr;

use aya::maps::{
    lpm_trie::{Key, LpmTrie},
    Array, HashMap as BpfHashMap, MapData, PerCpuArray, PerCpuHashMap, PerCpuValues,
};
use hostgate_rules::{tables::Tables, Action};

use crate::{
    abi::{addr_words, names, Counter, FwAction, FwGroup, FwKey, FwLpmData, FwState, FwVerdict, FW_MAX_RULES},
    map_access, Dataplane, DataplaneError,
};

/// Group id as the kernel stores it: (group << 2) | version << 1 | IPv6.
fn group_word(group: u32, version: u32, v6: bool) -> u32 {
    (group << 2) | (version & 1) << 1 | u32::from(v6)
}

fn verdict(rule_id: u32, action: Action, track_inbound: bool) -> FwVerdict {
    let (action, rate, burst) = match action {
        Action::Allow => (FwAction::Allow, 0, 0),
        Action::Drop => (FwAction::Drop, 0, 0),
        Action::Reject => (FwAction::Reject, 0, 0),
        Action::RateLimit { rate, burst } => (FwAction::RateLimit, rate, burst),
    };
    let flags = if track_inbound { crate::abi::FW_TRACK_INBOUND } else { 0 };
    FwVerdict { rule_id, action: action as u32, rate, burst, flags }
}

fn addr_bytes(a: IpAddr) -> [u8; 16] {
    let mut b = [0u8; 16];
    match a {
        IpAddr::V4(v4) => b[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => b.copy_from_slice(&v6.octets()),
    }
    b
}

/// Too many rules for the counters.
#[derive(Debug, thiserror::Error)]
#[error("{0} rules are more than the firewall's {FW_MAX_RULES}")]
pub struct TooManyRules(pub usize);

impl Dataplane {
    fn fw_state(&self) -> Result<FwState, DataplaneError> {
        let map = self.named_map(names::FW_ACTIVE)?;
        let active: Array<&MapData, FwState> = Array::try_from(map).map_err(map_access(names::FW_ACTIVE))?;
        active.get(&0, 0).map_err(map_access(names::FW_ACTIVE))
    }

    /// Makes `tables` the firewall in force (an empty table set turns it off).
    pub fn apply_fw(&mut self, tables: &Tables) -> Result<(), DataplaneError> {
        if tables.rules.len() > FW_MAX_RULES as usize {
            return Err(DataplaneError::Firewall(Box::new(TooManyRules(tables.rules.len()))));
        }
        let old = self.fw_state()?;
        let new_version = (old.version + 1) & 1;

        // 1. The new version beside the old.
        let map = self.named_map_mut(names::FW_SRC)?;
        let mut src: LpmTrie<&mut MapData, FwLpmData, FwVerdict> =
            LpmTrie::try_from(map).map_err(map_access(names::FW_SRC))?;
        for (group, prefix, rule_id, action) in &tables.sources {
            let track = tables.track_inbound.contains(group);
            let data = FwLpmData {
                group: group_word(*group, new_version, prefix.addr.is_ipv6()),
                addr: addr_bytes(prefix.addr),
            };
            src.insert(&Key::new(32 + u32::from(prefix.len), data), verdict(*rule_id, *action, track), 0)
                .map_err(map_access(names::FW_SRC))?;
        }
        let map = self.named_map_mut(names::FW_POLICY)?;
        let mut policy: BpfHashMap<&mut MapData, FwKey, FwGroup> =
            BpfHashMap::try_from(map).map_err(map_access(names::FW_POLICY))?;
        for (k, group) in &tables.policy {
            let v6 = k.local.is_ipv6();
            let egress = u8::from(k.direction == hostgate_rules::ast::Direction::Out) << 2;
            let key = FwKey {
                dst: addr_words(k.local),
                port: k.port,
                proto: k.proto,
                flags: u8::from(v6) | (new_version as u8) << 1 | egress,
            };
            policy
                .insert(key, FwGroup { group: group_word(*group, new_version, v6) }, 0)
                .map_err(map_access(names::FW_POLICY))?;
        }

        // 2. Counters start over with the new rule ids, then the flip.
        // Ids beyond both the old and the new count were never used.
        let used = self.fw_rule_count.max(tables.rules.len() as u32);
        self.zero_fw_stats(used)?;
        self.fw_rule_count = tables.rules.len() as u32;
        let map = self.named_map_mut(names::FW_ACTIVE)?;
        let mut active: Array<&mut MapData, FwState> = Array::try_from(map).map_err(map_access(names::FW_ACTIVE))?;
        let enabled = u32::from(!tables.policy.is_empty());
        active.set(0, FwState { version: new_version, enabled }, 0).map_err(map_access(names::FW_ACTIVE))?;

        // 3. The old version goes.
        let old_bit = (new_version ^ 1) as u8;
        let map = self.named_map_mut(names::FW_POLICY)?;
        let mut policy: BpfHashMap<&mut MapData, FwKey, FwGroup> =
            BpfHashMap::try_from(map).map_err(map_access(names::FW_POLICY))?;
        let stale: Vec<FwKey> =
            policy.keys().filter_map(Result::ok).filter(|k| (k.flags >> 1) & 1 == old_bit).collect();
        for k in stale {
            policy.remove(&k).map_err(map_access(names::FW_POLICY))?;
        }
        let map = self.named_map_mut(names::FW_SRC)?;
        let mut src: LpmTrie<&mut MapData, FwLpmData, FwVerdict> =
            LpmTrie::try_from(map).map_err(map_access(names::FW_SRC))?;
        let stale: Vec<Key<FwLpmData>> =
            src.keys().filter_map(Result::ok).filter(|k| (k.data().group >> 1) & 1 == u32::from(old_bit)).collect();
        for k in stale {
            src.remove(&k).map_err(map_access(names::FW_SRC))?;
        }
        Ok(())
    }

    fn zero_fw_stats(&mut self, count: u32) -> Result<(), DataplaneError> {
        let cpus = aya::util::nr_cpus().map_err(|(what, e)| DataplaneError::Io { path: what.into(), source: e })?;
        let map = self.named_map_mut(names::FW_STATS)?;
        let mut stats: PerCpuArray<&mut MapData, Counter> =
            PerCpuArray::try_from(map).map_err(map_access(names::FW_STATS))?;
        for id in 0..count.min(FW_MAX_RULES) {
            let zero = PerCpuValues::try_from(vec![Counter::default(); cpus])
                .map_err(|e| DataplaneError::Io { path: names::FW_STATS.into(), source: e })?;
            stats.set(id, zero, 0).map_err(map_access(names::FW_STATS))?;
        }
        Ok(())
    }

    /// Packets and bytes decided by rules `0..count`, summed over CPUs.
    pub fn fw_stats(&self, count: usize) -> Result<Vec<Counter>, DataplaneError> {
        let map = self.named_map(names::FW_STATS)?;
        let stats: PerCpuArray<&MapData, Counter> = PerCpuArray::try_from(map).map_err(map_access(names::FW_STATS))?;
        (0..count.min(FW_MAX_RULES as usize) as u32)
            .map(|id| {
                let mut sum = Counter::default();
                for c in stats.get(&id, 0).map_err(map_access(names::FW_STATS))?.iter() {
                    sum += *c;
                }
                Ok(sum)
            })
            .collect()
    }

    /// Counts traffic from the network to exactly `ips` from now on: new
    /// ones start at zero, kept ones keep counting, others are forgotten.
    pub fn set_fw_counted_ips(&mut self, ips: &[std::net::IpAddr]) -> Result<(), DataplaneError> {
        let cpus = aya::util::nr_cpus().map_err(|(what, e)| DataplaneError::Io { path: what.into(), source: e })?;
        let map = self.named_map_mut(names::FW_IP_STATS)?;
        let mut stats: PerCpuHashMap<&mut MapData, FwKey, Counter> =
            PerCpuHashMap::try_from(map).map_err(map_access(names::FW_IP_STATS))?;
        let wanted: std::collections::HashSet<FwKey> = ips.iter().map(|a| ip_stats_key(*a)).collect();
        let stale: Vec<FwKey> = stats.keys().filter_map(Result::ok).filter(|k| !wanted.contains(k)).collect();
        for k in stale {
            stats.remove(&k).map_err(map_access(names::FW_IP_STATS))?;
        }
        let present: std::collections::HashSet<FwKey> = stats.keys().filter_map(Result::ok).collect();
        for k in wanted.difference(&present) {
            let zero = PerCpuValues::try_from(vec![Counter::default(); cpus])
                .map_err(|e| DataplaneError::Io { path: names::FW_IP_STATS.into(), source: e })?;
            stats.insert(*k, zero, 0).map_err(map_access(names::FW_IP_STATS))?;
        }
        Ok(())
    }

    /// Packets and bytes from the network to each counted IP, summed over CPUs.
    pub fn fw_ip_stats(&self) -> Result<Vec<(std::net::IpAddr, Counter)>, DataplaneError> {
        let map = self.named_map(names::FW_IP_STATS)?;
        let stats: PerCpuHashMap<&MapData, FwKey, Counter> =
            PerCpuHashMap::try_from(map).map_err(map_access(names::FW_IP_STATS))?;
        let mut out = Vec::new();
        for entry in stats.iter() {
            let (k, values) = entry.map_err(map_access(names::FW_IP_STATS))?;
            let mut sum = Counter::default();
            for c in values.iter() {
                sum += *c;
            }
            out.push((ip_of_stats_key(&k), sum));
        }
        Ok(out)
    }
}

/// The key of `addr` in hg_fw_ip_stats: the address as the programs see
/// it (network order words), flag bit 0 for IPv6.
fn ip_stats_key(addr: std::net::IpAddr) -> FwKey {
    FwKey { dst: addr_words(addr), port: 0, proto: 0, flags: u8::from(addr.is_ipv6()) }
}

fn ip_of_stats_key(k: &FwKey) -> std::net::IpAddr {
    let bytes: Vec<u8> = k.dst.iter().flat_map(|w| w.to_ne_bytes()).collect();
    if k.flags & 1 == 1 {
        let mut b = [0u8; 16];
        b.copy_from_slice(&bytes);
        std::net::IpAddr::from(b)
    } else {
        std::net::IpAddr::from([bytes[0], bytes[1], bytes[2], bytes[3]])
    }
}

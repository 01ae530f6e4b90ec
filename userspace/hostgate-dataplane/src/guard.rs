//! Anti-spoofing tables: which container veths are guarded, with which MAC
//! and which source addresses.

use std::{collections::BTreeSet, net::IpAddr};

use aya::maps::{HashMap as BpfHashMap, MapData};

use crate::{
    abi::{addr_words, family_of, names, Guard, GuardAddr},
    map_access, Dataplane, DataplaneError,
};

/// One guarded container veth.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuardSpec {
    /// Host-side interface index of the container's veth.
    pub ifindex: u32,
    /// The container's MAC; `None` accepts any.
    pub mac: Option<[u8; 6]>,
    pub addrs: Vec<IpAddr>,
}

impl Dataplane {
    /// Makes exactly `guards` the guarded veths. New addresses go in before
    /// a veth is guarded and come out after, so a container is never
    /// refused an address it holds while its entry changes.
    pub fn set_guards(&mut self, guards: &[GuardSpec]) -> Result<(), DataplaneError> {
        let wanted_addrs: BTreeSet<GuardAddr> = guards
            .iter()
            .flat_map(|g| {
                g.addrs.iter().map(|a| GuardAddr {
                    ifindex: g.ifindex,
                    family: family_of(*a) as u32,
                    addr: addr_words(*a),
                })
            })
            .collect();
        let map = self.named_map_mut(names::GUARD_ADDRS)?;
        let mut addrs: BpfHashMap<&mut MapData, GuardAddr, u8> =
            BpfHashMap::try_from(map).map_err(map_access(names::GUARD_ADDRS))?;
        for a in &wanted_addrs {
            addrs.insert(a, 1, 0).map_err(map_access(names::GUARD_ADDRS))?;
        }
        let stale_addrs: Vec<GuardAddr> =
            addrs.keys().filter_map(Result::ok).filter(|k| !wanted_addrs.contains(k)).collect();

        let map = self.named_map_mut(names::GUARD)?;
        let mut guard: BpfHashMap<&mut MapData, u32, Guard> =
            BpfHashMap::try_from(map).map_err(map_access(names::GUARD))?;
        for g in guards {
            let drops = guard.get(&g.ifindex, 0).map(|old| old.drops).unwrap_or(0);
            let value = Guard { mac: g.mac.unwrap_or_default(), check_mac: u8::from(g.mac.is_some()), pad: 0, drops };
            guard.insert(g.ifindex, value, 0).map_err(map_access(names::GUARD))?;
        }
        let wanted: BTreeSet<u32> = guards.iter().map(|g| g.ifindex).collect();
        let stale: Vec<u32> = guard.keys().filter_map(Result::ok).filter(|k| !wanted.contains(k)).collect();
        for k in stale {
            guard.remove(&k).map_err(map_access(names::GUARD))?;
        }

        let map = self.named_map_mut(names::GUARD_ADDRS)?;
        let mut addrs: BpfHashMap<&mut MapData, GuardAddr, u8> =
            BpfHashMap::try_from(map).map_err(map_access(names::GUARD_ADDRS))?;
        for k in stale_addrs {
            addrs.remove(&k).map_err(map_access(names::GUARD_ADDRS))?;
        }
        Ok(())
    }

    /// Spoofed frames dropped on a guarded veth.
    pub fn guard_drops(&self, ifindex: u32) -> Result<u64, DataplaneError> {
        let map = self.named_map(names::GUARD)?;
        let guard: BpfHashMap<&MapData, u32, Guard> = BpfHashMap::try_from(map).map_err(map_access(names::GUARD))?;
        Ok(guard.get(&ifindex, 0).map(|g| g.drops).unwrap_or(0))
    }
}

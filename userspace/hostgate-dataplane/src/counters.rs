//! Reading `hg_stats`: per-CPU slots summed into one counter per
//! (hook, protocol, verdict).

use aya::maps::{Map, MapData, PerCpuArray};
use serde::Serialize;

use crate::{
    abi::{stats_index, Counter, Hook, Proto, Verdict},
    DataplaneError,
};

/// One non-zero row of the statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct CounterRow {
    pub hook: Hook,
    pub proto: Proto,
    pub verdict: Verdict,
    pub packets: u64,
    pub bytes: u64,
}

/// A snapshot of every counter.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    pub rows: Vec<CounterRow>,
}

impl Counters {
    /// Reads the whole map. Rows that are zero are left out.
    pub fn read(map: &Map) -> Result<Self, DataplaneError> {
        let array: PerCpuArray<&MapData, Counter> = PerCpuArray::try_from(map)?;
        let mut rows = Vec::new();
        for &hook in Hook::ALL {
            for &proto in Proto::ALL {
                for &verdict in Verdict::ALL {
                    let per_cpu = array.get(&stats_index(hook, proto, verdict), 0)?;
                    let mut sum = Counter::default();
                    for c in per_cpu.iter() {
                        sum += *c;
                    }
                    if sum != Counter::default() {
                        rows.push(CounterRow { hook, proto, verdict, packets: sum.packets, bytes: sum.bytes });
                    }
                }
            }
        }
        Ok(Counters { rows })
    }

    /// Reads the pinned map of a node directly, without a daemon.
    pub fn read_pinned(layout: &crate::pins::PinLayout) -> Result<Self, DataplaneError> {
        let path = layout.maps_dir().join(crate::abi::names::STATS_MAP);
        let data = MapData::from_pin(&path)?;
        Self::read(&Map::PerCpuArray(data))
    }

    /// Packets counted for `hook`/`proto` (all verdicts).
    pub fn packets(&self, hook: Hook, proto: Proto) -> u64 {
        self.rows.iter().filter(|r| r.hook == hook && r.proto == proto).map(|r| r.packets).sum()
    }

    /// Bytes counted for `hook`/`proto` (all verdicts).
    pub fn bytes(&self, hook: Hook, proto: Proto) -> u64 {
        self.rows.iter().filter(|r| r.hook == hook && r.proto == proto).map(|r| r.bytes).sum()
    }

    /// Packets counted at `hook` over every protocol.
    pub fn hook_packets(&self, hook: Hook) -> u64 {
        self.rows.iter().filter(|r| r.hook == hook).map(|r| r.packets).sum()
    }
}

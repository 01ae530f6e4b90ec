//! The monitor: which decisions the programs report (map `hg_monitor`) and
//! the ring buffer they report them in (`hg_events`). The reader opens the
//! pinned ring buffer on its own, so it runs apart from the data plane's
//! lock, and the programs pay for events only while someone asked for them.

use aya::maps::{Array, Map, MapData, RingBuf};

use crate::{
    abi::{names, EventKind, MonitorCfg},
    map_access,
    pins::PinLayout,
    Dataplane, DataplaneError,
};

impl MonitorCfg {
    /// Every kind of `kinds`, one event in `sample_every` (0, 1: all).
    pub fn wanting(kinds: &[EventKind], sample_every: u32) -> MonitorCfg {
        MonitorCfg { kinds: kinds.iter().fold(0, |bits, k| bits | 1 << *k as u32), sample_every }
    }
}

impl Dataplane {
    /// What the programs report from now on ([`MonitorCfg::default`]: nothing).
    pub fn set_monitor(&mut self, cfg: MonitorCfg) -> Result<(), DataplaneError> {
        let map = self.named_map_mut(names::MONITOR)?;
        let mut array: Array<&mut MapData, MonitorCfg> = Array::try_from(map).map_err(map_access(names::MONITOR))?;
        array.set(0, cfg, 0).map_err(map_access(names::MONITOR))
    }
}

/// The event ring buffer of the data plane pinned at `layout`.
pub fn open_events(layout: &PinLayout) -> Result<RingBuf<MapData>, DataplaneError> {
    let data = MapData::from_pin(layout.maps_dir().join(names::EVENTS)).map_err(map_access(names::EVENTS))?;
    RingBuf::try_from(Map::RingBuf(data)).map_err(map_access(names::EVENTS))
}

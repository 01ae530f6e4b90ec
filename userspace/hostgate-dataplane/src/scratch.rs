//! A data plane attached to no interface, whose pins go when it is dropped:
//! for tests and benchmarks that drive the programs with BPF_PROG_TEST_RUN.

use std::{
    ops::{Deref, DerefMut},
    path::Path,
    sync::atomic::{AtomicU32, Ordering},
};

use crate::{detach_pinned, pins::PinLayout, Dataplane, DataplaneError, DataplaneSpec, XdpModeChoice};

pub struct ScratchDataplane {
    dp: Option<Dataplane>,
    layout: PinLayout,
}

impl ScratchDataplane {
    /// A fresh data plane pinned under `pin_root/<purpose>-<pid>-<n>`.
    pub fn new(pin_root: &Path, purpose: &str) -> Result<Self, DataplaneError> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let node = format!("{purpose}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let spec = DataplaneSpec {
            pin_root: pin_root.to_path_buf(),
            node: node.clone(),
            uplinks: vec![],
            container_ifaces: vec![],
            xdp_mode: XdpModeChoice::Auto,
        };
        let dp = Dataplane::start(&spec)?;
        Ok(ScratchDataplane { dp: Some(dp), layout: PinLayout::new(pin_root, &node) })
    }
}

impl Deref for ScratchDataplane {
    type Target = Dataplane;
    fn deref(&self) -> &Dataplane {
        self.dp.as_ref().expect("present until drop")
    }
}

impl DerefMut for ScratchDataplane {
    fn deref_mut(&mut self) -> &mut Dataplane {
        self.dp.as_mut().expect("present until drop")
    }
}

impl Drop for ScratchDataplane {
    fn drop(&mut self) {
        drop(self.dp.take());
        let _ = detach_pinned(&self.layout);
    }
}

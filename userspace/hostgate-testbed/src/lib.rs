//! Test bed for hostgate's integration tests and demos: network namespaces
//! and veth topologies built from the documentation address ranges, frames
//! built in pure code and sent from inside a namespace, and guards that
//! clean everything up on drop, also when a test panics.
//!
//! Nothing here touches the host's own (root namespace) interfaces,
//! addresses or routes: every link is created directly inside the test's
//! namespaces.

pub mod etcd;
pub mod netns;
pub mod packet;
pub mod perfdhcp;
pub mod process;
pub mod sender;
pub mod servers;
pub mod topology;

pub use etcd::EtcdServer;
pub use netns::{remove_stale_namespaces, Netns, TestbedError};
pub use process::ChildGuard;
pub use topology::{Container, NodeTopology};

/// Whether privileged tests (root, BPF, netns) can run here. In CI
/// (`CI=true`) they must: a missing privilege panics. Elsewhere the test is
/// skipped with a line saying why.
pub fn privileged(test: &str) -> bool {
    let reason = if unsafe { libc::geteuid() } != 0 {
        Some("not running as root")
    } else if !std::path::Path::new("/sys/fs/bpf").exists() {
        Some("no /sys/fs/bpf")
    } else {
        None
    };
    match reason {
        None => true,
        Some(why) if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") => {
            panic!("{test}: privileged test cannot run in CI: {why}")
        }
        Some(why) => {
            eprintln!("SKIP {test}: {why} (privileged tests run in CI and under `cargo xtask test` as root)");
            false
        }
    }
}

/// A name unique to this process and call: `hg-<purpose>-<pid>-<n>`.
pub fn unique_name(purpose: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("hg-{purpose}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

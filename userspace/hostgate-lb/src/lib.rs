//! The load balancer's pure core: what operators declare (VIPs, backends),
//! its validation, Maglev tables, and the plan of what the BPF maps must
//! hold. No syscalls: the data plane crate applies the plan.

pub mod health;
pub mod maglev;
pub mod model;
pub mod plan;

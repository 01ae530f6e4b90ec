//! Customer IP assignment, without a kernel: who owns which address, which
//! node answers for it, and the frames that tell the network.

pub mod announce;
pub mod model;
pub mod ownership;
pub mod placement;

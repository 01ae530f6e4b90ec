//! The HTTP reverse proxy's pure core (issue #10). No sockets, no clocks,
//! no syscalls: the daemon stores [`model::Vhost`]s, compiles them into a
//! [`table::RoutingTable`] (built whole, swapped whole), and the proxy asks
//! the table which route serves a request, a [`balance::Pool`] which
//! backend takes it, and [`headers`] how the forwarding headers must read.
//! [`tls`] judges certificates and picks one per SNI name.

pub mod accesslog;
pub mod acme;
pub mod balance;
pub mod h1;
pub mod h2frames;
pub mod head;
pub mod headers;
pub mod model;
pub mod proxy_protocol;
pub mod ratelimit;
pub mod stats;
pub mod table;
pub mod tls;

pub use accesslog::LogFormat;
pub use balance::{Balance, Pool};
pub use model::{Backend, Route, Vhost, VhostError};
pub use ratelimit::RateLimit;
pub use table::{RoutingTable, Selected};

//! DHCPv4's pure core. The daemon hands packets to [`wire`], asks
//! [`server`] what to do about them, persists what changed before it
//! answers, and sends what the decision carries. Nothing here touches a socket, a file or
//! the clock.
//!
//! - [`network`]: a customer's network (subnet, gateway, pools, lease time)
//!   and its validation;
//! - [`identity`]: who a client is (client identifier or MAC), and which
//!   reservation it matches, a MAC reservation matching a DUID client-id
//!   that carries the same MAC (RFC 4361 §6.3);
//! - [`leases`]: the lease table and its state machine (offer, bind, renew,
//!   release, decline quarantine, expiry, per-MAC and per-port rate
//!   limits) with its
//!   invariant: no address is ever held by two clients;
//! - [`wire`]: packets in and out on dhcproto, with the header, cookie and
//!   option 82 handled here (checked before decoding; echoed raw and last);
//! - [`server`]: one request to one decision (offer, ACK to make durable
//!   first, NAK, INFORM answer, release, decline), property-tested from
//!   arbitrary bytes;
//! - [`ra`]: IPv6 router advertisements for a network's SLAAC prefix (with
//!   RDNSS and DNSSL), router solicitations validated, and when to send.

pub mod identity;
pub mod leases;
pub mod network;
pub mod ra;
pub mod server;
pub mod wire;

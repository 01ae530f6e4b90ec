//! Authoritative DNS's pure core (issue #9). The daemon reads zones from
//! the store, builds a [`catalog::Catalog`] of [`lookup::IndexedZone`]s
//! and swaps it in whole on change; its UDP/TCP tasks hand each query's
//! bytes to [`respond::respond`] and send what comes back. Nothing here
//! touches a socket, a file or the clock.
//!
//! - [`zone`]: the zone model (origin, SOA, RRsets) and its validation;
//!   RFC 1982 serials;
//! - [`master`]: RFC 1035 zone files in (all or nothing, `file:line`
//!   errors) and out (canonical, round-trips);
//! - [`lookup`]: the indexed, immutable zone answering with NSD/BIND
//!   semantics (CNAME chains, RFC 4592 wildcards, empty non-terminals,
//!   referrals with glue), O(labels x log n) on hits and misses;
//! - [`catalog`]: many zones, the closest enclosing one in O(labels);
//! - [`respond`]: bytes in, bytes out: header checks, EDNS, truncation,
//!   counters;
//! - [`fast`]: the UDP fast path: a per-worker cache of whole replies
//!   compiled by the responder, byte-for-byte its answers;
//! - [`resolver`]: the resolver for containers: forwarded queries and
//!   the cache of upstreams' responses;
//! - [`rrl`]: response rate limiting with slip, in a fixed-size table;
//! - [`pool`]: health-aware answers: the healthy backends of a VIP, or a
//!   fallback;
//! - [`xfr`]: AXFR/IXFR to secondaries with ACLs and TSIG, NOTIFY out and
//!   in.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod catalog;
pub mod fast;
pub mod lookup;
pub mod master;
pub mod pool;
pub mod resolver;
pub mod respond;
pub mod rrl;
pub mod xfr;
pub mod zone;

//! Cluster membership: this node's lease, its `members/<node>` key, and the
//! fencing that keeps a node cut off from the store from answering for IPs
//! another node may already have taken.
//!
//! The node renews its lease every TTL/5. A renewal sent at time t that
//! succeeds proves the lease lives until at least t + TTL at the store (the
//! store counts from when it received the renewal, which is later). If no
//! renewal has succeeded for TTL - TTL/4 since the last good one was sent,
//! the node fences itself: under the address lock it marks itself fenced
//! and withdraws every customer address it holds, before any other node
//! can see its lease expire. Once renewals succeed again it is live again;
//! if the lease did expire, it joins afresh with a new one. After each
//! renewal the customer addresses' kernel lifetimes are renewed too, so
//! that a daemon killed outright cannot leave them behind for long.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use hostgate_ipam::ownership::{keys, Member};
use hostgate_store::{LeaseId, Op, Txn};
use tokio::time::{sleep, sleep_until, Instant};
use tracing::{info, warn};

use crate::{ips, Daemon};

/// Where this node stands in the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// No lease yet (start-up, or after losing one).
    Joining,
    /// Holding this lease: may claim and hold IPs.
    Live(LeaseId),
    /// Renewals have failed for too long: holds nothing until they succeed.
    Fenced(LeaseId),
}

impl Standing {
    pub fn lease(self) -> Option<LeaseId> {
        match self {
            Standing::Live(l) => Some(l),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Standing::Joining => "joining",
            Standing::Live(_) => "live",
            Standing::Fenced(_) => "fenced",
        }
    }
}

/// The membership lease's TTL. A node on its embedded store is a cluster
/// of one: nobody could take its IPs over, so its lease is long and it
/// never fences itself (a busy or slow node must not drop its addresses).
fn ttl(d: &Daemon) -> Duration {
    if d.config.clustered() {
        Duration::from_secs(d.config.cluster.lease_ttl_secs.into())
    } else {
        Duration::from_secs(3600)
    }
}

/// What the membership did since the daemon started (for `/metrics`).
#[derive(Debug, Default)]
pub struct Counters {
    pub joins: AtomicU64,
    pub renewals: AtomicU64,
    pub renewal_failures: AtomicU64,
    pub fencings: AtomicU64,
}

/// Joins, keeps the lease, rejoins when it is lost; runs for the daemon's life.
pub(crate) async fn run(d: Arc<Daemon>) {
    loop {
        match join(&d).await {
            Ok((lease, ttl, sent)) => keep(&d, lease, ttl, sent).await,
            Err(e) => {
                warn!(error = format!("{e:#}"), "cannot join the cluster; retrying");
                sleep(Duration::from_millis(250)).await;
            }
        }
    }
}

/// Takes a lease and puts this node's member key on it; returns the lease,
/// its TTL, and when the grant was asked for (the lease is good until at
/// least then + TTL).
async fn join(d: &Daemon) -> anyhow::Result<(LeaseId, Duration, Instant)> {
    let sent = Instant::now();
    let lease = d.store.grant_lease(ttl(d)).await?;
    let member = Member { node: d.config.node_name.clone(), weight: d.config.cluster.weight, joined: crate::now() };
    d.store.commit(Txn::new().then(Op::put_leased_json(keys::member(&member.node), &member, lease.id)?)).await?;
    if sent.elapsed() >= lease.ttl {
        anyhow::bail!("joining took longer than the lease lives");
    }
    d.standing.send_replace(Standing::Live(lease.id));
    d.cluster_counters.joins.fetch_add(1, Ordering::Relaxed);
    info!(lease = format!("{:x}", lease.id), ttl = ?lease.ttl, "joined the cluster");
    Ok((lease.id, lease.ttl, sent))
}

/// Renews `lease` until it is lost, fencing while renewals fail.
async fn keep(d: &Daemon, lease: LeaseId, ttl: Duration, granted: Instant) {
    let every = if d.config.clustered() { ttl / 5 } else { Duration::from_secs(10) };
    let margin = ttl / 4;
    let mut valid_until = granted + ttl;
    loop {
        let fence_at = valid_until - margin;
        fencing(d, lease, fence_at, sleep(every)).await;
        let sent = Instant::now();
        match fencing(d, lease, fence_at, d.store.keep_alive(lease)).await {
            Ok(true) => {
                d.cluster_counters.renewals.fetch_add(1, Ordering::Relaxed);
                valid_until = sent + ttl;
                if is_fenced(d) {
                    d.standing.send_replace(Standing::Live(lease));
                    info!("the store answers again: live");
                }
                if let Err(e) = ips::refresh_lifetimes(d, lease).await {
                    warn!(error = format!("{e:#}"), "renewing customer address lifetimes");
                }
            }
            Ok(false) => {
                d.cluster_counters.renewal_failures.fetch_add(1, Ordering::Relaxed);
                if !is_fenced(d) {
                    fence(d, lease).await;
                }
                d.standing.send_replace(Standing::Joining);
                warn!(lease = format!("{lease:x}"), "membership lease expired; joining again");
                return;
            }
            Err(e) => {
                d.cluster_counters.renewal_failures.fetch_add(1, Ordering::Relaxed);
                if !is_fenced(d) {
                    warn!(error = %e, "lease renewal failed");
                }
            }
        }
    }
}

fn is_fenced(d: &Daemon) -> bool {
    matches!(*d.standing.borrow(), Standing::Fenced(_))
}

/// Awaits `work`; if `fence_at` passes first, fences the node and goes on
/// waiting (a renewal that answers late still counts).
async fn fencing<T>(d: &Daemon, lease: LeaseId, fence_at: Instant, work: impl std::future::Future<Output = T>) -> T {
    tokio::pin!(work);
    loop {
        tokio::select! {
            r = &mut work => return r,
            _ = sleep_until(fence_at), if !is_fenced(d) => fence(d, lease).await,
        }
    }
}

/// Marks the node fenced and withdraws its customer addresses.
async fn fence(d: &Daemon, lease: LeaseId) {
    let _addresses = d.addresses_lock.lock().await;
    d.standing.send_replace(Standing::Fenced(lease));
    d.cluster_counters.fencings.fetch_add(1, Ordering::Relaxed);
    warn!("lease renewals failing: fenced, withdrawing every customer IP before the lease can expire");
    if let Err(e) = ips::withdraw_all(d).await {
        warn!(error = format!("{e:#}"), "withdrawing customer IPs");
    }
}

/// On shutdown in a cluster: withdraw and leave, so that the IPs move now
/// rather than when the lease expires (the addresses must not outlive the
/// daemon that guards them).
pub(crate) async fn leave(d: &Daemon) {
    let standing = *d.standing.borrow();
    let _addresses = d.addresses_lock.lock().await;
    d.standing.send_replace(Standing::Joining);
    if let Err(e) = ips::withdraw_all(d).await {
        warn!(error = format!("{e:#}"), "withdrawing customer IPs");
    }
    if let Standing::Live(lease) | Standing::Fenced(lease) = standing {
        match d.store.revoke_lease(lease).await {
            Ok(()) => info!("left the cluster"),
            Err(e) => warn!(error = %e, "could not revoke the lease; it expires on its own"),
        }
    }
}

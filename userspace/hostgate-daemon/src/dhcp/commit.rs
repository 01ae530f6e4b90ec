//! Group commit of lease changes. Every change queued while a commit is
//! in flight goes into the next transaction, so one fsync (or one etcd
//! round trip) covers as many clients as arrived meanwhile, and no ACK
//! leaves before the lease it announces is durable.

use std::{collections::HashSet, net::SocketAddr, sync::Arc};

use hostgate_store::{Op, Txn};
use tokio::{net::UdpSocket, sync::mpsc};
use tracing::warn;

use crate::Daemon;

/// Changes waiting for the committer. Bounded: when the store falls this
/// far behind, new requests are dropped (clients retry) instead of
/// queueing without limit.
pub(crate) const QUEUE: usize = 16_384;

/// Most changes taken into one round.
const MAX_ROUND: usize = 4_096;

/// A reply held back until its lease is durable.
pub(crate) struct HeldReply {
    pub socket: Arc<UdpSocket>,
    pub bytes: Vec<u8>,
    pub to: SocketAddr,
    pub network: String,
}

/// Store changes, the reply to send once they are committed, and the
/// lease changes that derived state (routes) follows once they are.
pub(crate) struct Durable {
    pub ops: Vec<Op>,
    pub reply: Option<HeldReply>,
    pub changes: Vec<super::serve::LeaseChange>,
}

pub(crate) type Queue = mpsc::Sender<Durable>;

/// Commits queued changes in rounds until every sender is gone.
pub(crate) async fn run(
    d: Arc<Daemon>,
    mut rx: mpsc::Receiver<Durable>,
    derived: mpsc::UnboundedSender<super::serve::LeaseChange>,
) {
    let mut round = Vec::with_capacity(MAX_ROUND);
    while rx.recv_many(&mut round, MAX_ROUND).await > 0 {
        let ops = last_per_key(round.iter().flat_map(|c| c.ops.iter().cloned()).collect());
        let committed = commit_all(&d, ops).await;
        for change in round.drain(..) {
            if committed {
                for c in change.changes {
                    let _ = derived.send(c);
                }
            }
            let Some(reply) = change.reply else { continue };
            if committed {
                send(&d, reply).await;
            } else {
                super::serve::count(&d, &reply.network, |c| c.drops += 1);
            }
        }
    }
}

/// Commits `ops` in transactions the store accepts; false if one failed.
async fn commit_all(d: &Daemon, ops: Vec<Op>) -> bool {
    for chunk in ops.chunks(d.store.max_txn_ops().max(1)) {
        let txn = Txn { compares: Vec::new(), ops: chunk.to_vec() };
        if let Err(e) = d.store.commit(txn).await {
            // The clients get no reply and ask again; the lease tables still
            // hold these leases, so the retry commits them again.
            warn!(error = %e, changes = chunk.len(), "DHCP leases not committed; replies held back");
            return false;
        }
    }
    true
}

async fn send(d: &Daemon, reply: HeldReply) {
    match reply.socket.send_to(&reply.bytes, reply.to).await {
        Ok(_) => super::serve::count(d, &reply.network, |c| c.acks += 1),
        Err(e) => {
            warn!(network = %reply.network, to = %reply.to, error = %e, "DHCP reply not sent");
            super::serve::count(d, &reply.network, |c| c.drops += 1);
        }
    }
}

/// The last change of each key, in order: a round may touch a lease twice
/// (a renewal right after the ACK), and etcd refuses a key twice in one
/// transaction.
fn last_per_key(ops: Vec<Op>) -> Vec<Op> {
    let mut seen = HashSet::new();
    let mut kept: Vec<Op> = ops.into_iter().rev().filter(|op| seen.insert(op.key().to_string())).collect();
    kept.reverse();
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_change_of_a_key_wins() {
        let put = |k: &str, v: u8| Op::Put(k.into(), vec![v]);
        let ops = vec![put("a", 1), put("b", 1), Op::Delete("a".into()), put("c", 1), put("b", 2)];
        assert_eq!(last_per_key(ops), vec![Op::Delete("a".into()), put("c", 1), put("b", 2)]);
    }
}

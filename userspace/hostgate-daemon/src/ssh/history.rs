//! The access history: one store key per session or refused attempt under
//! `ssh/history/<customer>/<id>`, ids ordered by start time, at most
//! [`KEEP`] per customer (the oldest go first).

use hostgate_api::SshSession;
use hostgate_store::{Op, Txn};
use tracing::warn;

use super::keys;
use crate::Daemon;

pub const KEEP: usize = 1000;

/// Writes one entry and trims the customer's history; failures are logged
/// (a store hiccup must not take a session down with it).
pub async fn record(d: &Daemon, s: &SshSession) {
    if let Err(e) = try_record(d, s).await {
        warn!(error = format!("{e:#}"), id = %s.id, "SSH history entry not written");
    }
}

async fn try_record(d: &Daemon, s: &SshSession) -> anyhow::Result<()> {
    let prefix = keys::history_of(&s.customer);
    d.store.commit(Txn::new().then(Op::put_json(format!("{prefix}{}", s.id), s)?)).await?;
    let snap = d.store.snapshot(&prefix).await?;
    let mut ids: Vec<&str> = snap.kvs.iter().map(|kv| kv.key.as_str()).collect();
    if ids.len() <= KEEP {
        return Ok(());
    }
    ids.sort_unstable();
    let excess = ids.len() - KEEP;
    let txn = ids[..excess].iter().fold(Txn::new(), |t, k| t.then(Op::Delete(k.to_string())));
    d.store.commit(txn).await?;
    Ok(())
}

//! The cluster backend: etcd v3 through `etcd-client`. Every key lives
//! under a prefix of its own (`hostgate/` by default) so that hostgate can
//! share an etcd cluster; the prefix never shows above this module.
//!
//! etcd already has the semantics of [`Store`]: one revision per write
//! transaction, create/mod revisions per key, watches from a revision,
//! leases. What needs care:
//! - a failed transaction does not say which compare failed: the `else`
//!   branch reads every compared key at the same revision, and the compares
//!   are evaluated again on that read;
//! - a watch is a stream: the first response says whether it started or the
//!   history is compacted; a task turns responses into batches per revision
//!   and ends (closing the channel, so the consumer re-reads) when the
//!   stream breaks;
//! - keep-alives use one stream per lease, re-opened after any error, and
//!   every request has a deadline, so a node cut off from etcd finds out
//!   within its lease's TTL (the fencing in the daemon relies on it).

use std::{collections::HashMap, time::Duration};

use etcd_client::{
    Client, Compare as EtcdCompare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions,
    LeaseKeepAliveStream, LeaseKeeper, PutOptions, Txn as EtcdTxn, TxnOp, TxnOpResponse, WatchOptions,
};
use tokio::sync::{mpsc, Mutex};

use crate::{
    Compare, Event, KeyValue, Lease, LeaseId, Op, Revision, Snapshot, Store, StoreError, Txn, TxnOutcome, WatchBatch,
    Watcher,
};

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// An etcd error as a store error: etcd's "lease not found" (a lease that
/// expired or never was) becomes `LeaseExpired`, with the id the caller
/// fills in (0 here: etcd's message does not carry it).
fn from_etcd(e: etcd_client::Error) -> StoreError {
    let message = e.to_string();
    if message.contains("lease not found") {
        StoreError::LeaseExpired(0)
    } else {
        StoreError::Backend(message)
    }
}

/// etcd behind [`Store`].
pub struct EtcdStore {
    client: Client,
    endpoints: Vec<String>,
    prefix: String,
    /// How long one request may take before it counts as failed.
    timeout: Duration,
    keepers: Mutex<HashMap<LeaseId, (LeaseKeeper, LeaseKeepAliveStream)>>,
}

impl EtcdStore {
    /// Connects to `endpoints` (e.g. `http://198.18.1.254:2379`); keys go
    /// under `prefix`; each request may take `timeout`. Keeps trying for
    /// `patience` (etcd may be starting or electing a leader), then fails.
    pub async fn connect(
        endpoints: &[String],
        prefix: &str,
        timeout: Duration,
        patience: Duration,
    ) -> Result<Self, StoreError> {
        let deadline = tokio::time::Instant::now() + patience;
        // No per-request timeout on the channel: it would cut watch
        // streams; every request gets a deadline of its own instead.
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_keep_alive(timeout, timeout)
            .with_keep_alive_while_idle(true);
        loop {
            let attempt = async {
                let client = Client::connect(endpoints, Some(options.clone()))
                    .await
                    .map_err(|e| StoreError::Backend(format!("connecting to etcd at {}: {e}", endpoints.join(","))))?;
                let store = EtcdStore {
                    client,
                    endpoints: endpoints.to_vec(),
                    prefix: prefix.to_string(),
                    timeout,
                    keepers: Mutex::new(HashMap::new()),
                };
                store.revision().await?;
                Ok::<_, StoreError>(store)
            };
            match tokio::time::timeout(Duration::from_secs(3), attempt).await {
                Ok(Ok(store)) => return Ok(store),
                Ok(Err(e)) if tokio::time::Instant::now() >= deadline => return Err(e),
                Err(_) if tokio::time::Instant::now() >= deadline => {
                    return Err(StoreError::Backend(format!("etcd at {} does not answer", endpoints.join(","))))
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn to_kv(&self, kv: &etcd_client::KeyValue) -> Result<KeyValue, StoreError> {
        let key = kv.key_str().map_err(backend)?;
        Ok(KeyValue {
            key: key.strip_prefix(&self.prefix).unwrap_or(key).to_string(),
            value: kv.value().to_vec(),
            create_revision: kv.create_revision() as Revision,
            mod_revision: kv.mod_revision() as Revision,
        })
    }

    /// Runs `f` against a client handle within the request deadline.
    async fn request<T, F>(&self, f: impl FnOnce(Client) -> F) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        tokio::time::timeout(self.timeout, f(self.client.clone()))
            .await
            .map_err(|_| StoreError::Backend(format!("etcd did not answer within {:?}", self.timeout)))?
            .map_err(from_etcd)
    }

    fn etcd_compare(&self, c: &Compare) -> EtcdCompare {
        match c {
            Compare::Absent(k) => EtcdCompare::version(self.full(k), CompareOp::Equal, 0),
            Compare::Present(k) => EtcdCompare::version(self.full(k), CompareOp::Greater, 0),
            Compare::ModRevision(k, rev) => EtcdCompare::mod_revision(self.full(k), CompareOp::Equal, *rev as i64),
        }
    }

    fn etcd_op(&self, op: Op) -> TxnOp {
        match op {
            Op::Put(k, v) => TxnOp::put(self.full(&k), v, None),
            Op::PutLeased(k, v, lease) => TxnOp::put(self.full(&k), v, Some(PutOptions::new().with_lease(lease))),
            Op::Delete(k) => TxnOp::delete(self.full(&k), None),
            Op::DeletePrefix(k) => TxnOp::delete(self.full(&k), Some(DeleteOptions::new().with_prefix())),
        }
    }

    /// The index of the first compare that does not hold on `reads` (the
    /// compared keys read in the failed transaction's else branch).
    fn first_failed(compares: &[Compare], reads: &[Option<KeyValue>]) -> usize {
        compares
            .iter()
            .zip(reads)
            .position(|(c, kv)| match c {
                Compare::Absent(_) => kv.is_some(),
                Compare::Present(_) => kv.is_none(),
                Compare::ModRevision(_, rev) => kv.as_ref().is_none_or(|kv| kv.mod_revision != *rev),
            })
            .unwrap_or(0)
    }

    /// One keep-alive round trip on the lease's stream.
    async fn keep_alive_once(&self, lease: LeaseId) -> Result<bool, StoreError> {
        let mut keepers = self.keepers.lock().await;
        if let std::collections::hash_map::Entry::Vacant(slot) = keepers.entry(lease) {
            match self.request(|mut c| async move { c.lease_keep_alive(lease).await }).await {
                Ok(pair) => {
                    slot.insert(pair);
                }
                Err(StoreError::LeaseExpired(_)) => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        let Some((keeper, stream)) = keepers.get_mut(&lease) else { return Err(StoreError::Closed) };
        let answer = tokio::time::timeout(self.timeout, async {
            keeper.keep_alive().await?;
            stream.message().await
        })
        .await;
        match answer {
            Ok(Ok(Some(resp))) => {
                let alive = resp.ttl() > 0;
                if !alive {
                    keepers.remove(&lease);
                }
                Ok(alive)
            }
            Ok(Ok(None)) => {
                keepers.remove(&lease);
                Err(StoreError::Backend("etcd closed the keep-alive stream".into()))
            }
            Ok(Err(e)) => {
                keepers.remove(&lease);
                match from_etcd(e) {
                    StoreError::LeaseExpired(_) => Ok(false),
                    other => Err(other),
                }
            }
            Err(_) => {
                // The answer may still come: a fresh stream cannot confuse it with the next one.
                keepers.remove(&lease);
                Err(StoreError::Backend(format!("etcd did not renew the lease within {:?}", self.timeout)))
            }
        }
    }
}

/// Forwards a watch's responses as batches, one per revision, until the
/// stream breaks or the consumer goes away.
async fn pump(
    mut stream: etcd_client::WatchStream,
    tx: mpsc::UnboundedSender<WatchBatch>,
    prefix: String,
) -> Result<(), StoreError> {
    loop {
        let resp = tokio::select! {
            r = stream.message() => r.map_err(backend)?,
            _ = tx.closed() => return Ok(()),
        };
        let Some(resp) = resp else { return Ok(()) };
        if resp.canceled() {
            return Err(StoreError::Backend(format!("etcd cancelled the watch: {}", resp.cancel_reason())));
        }
        let mut batch: Option<WatchBatch> = None;
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            let key = kv.key_str().map_err(backend)?;
            let key = key.strip_prefix(&prefix).unwrap_or(key).to_string();
            let revision = kv.mod_revision() as Revision;
            let event = match ev.event_type() {
                EventType::Put => Event::Put(KeyValue {
                    key,
                    value: kv.value().to_vec(),
                    create_revision: kv.create_revision() as Revision,
                    mod_revision: revision,
                }),
                EventType::Delete => Event::Delete { key, mod_revision: revision },
            };
            match &mut batch {
                Some(b) if b.revision == revision => b.events.push(event),
                _ => {
                    if let Some(done) = batch.replace(WatchBatch { revision, events: vec![event] }) {
                        if tx.send(done).is_err() {
                            return Ok(());
                        }
                    }
                }
            }
        }
        if let Some(done) = batch {
            if tx.send(done).is_err() {
                return Ok(());
            }
        }
    }
}

#[async_trait::async_trait]
impl Store for EtcdStore {
    async fn revision(&self) -> Result<Revision, StoreError> {
        let key = self.full("");
        let resp = self
            .request(|mut c| async move { c.get(key, Some(GetOptions::new().with_prefix().with_count_only())).await })
            .await?;
        Ok(resp.header().map_or(0, |h| h.revision() as Revision))
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let full = self.full(key);
        let resp = self.request(|mut c| async move { c.get(full, None).await }).await?;
        resp.kvs().first().map(|kv| self.to_kv(kv)).transpose()
    }

    async fn snapshot(&self, prefix: &str) -> Result<Snapshot, StoreError> {
        let full = self.full(prefix);
        let resp =
            self.request(|mut c| async move { c.get(full, Some(GetOptions::new().with_prefix())).await }).await?;
        let kvs = resp.kvs().iter().map(|kv| self.to_kv(kv)).collect::<Result<Vec<_>, _>>()?;
        Ok(Snapshot { revision: resp.header().map_or(0, |h| h.revision() as Revision), kvs })
    }

    async fn commit(&self, txn: Txn) -> Result<TxnOutcome, StoreError> {
        let compares: Vec<EtcdCompare> = txn.compares.iter().map(|c| self.etcd_compare(c)).collect();
        let reads: Vec<TxnOp> = txn
            .compares
            .iter()
            .map(|c| match c {
                Compare::Absent(k) | Compare::Present(k) | Compare::ModRevision(k, _) => TxnOp::get(self.full(k), None),
            })
            .collect();
        let lease = txn.ops.iter().find_map(|op| if let Op::PutLeased(_, _, l) = op { Some(*l) } else { None });
        let ops: Vec<TxnOp> = txn.ops.into_iter().map(|op| self.etcd_op(op)).collect();
        let request = EtcdTxn::new().when(compares).and_then(ops).or_else(reads);
        let resp = self.request(|mut c| async move { c.txn(request).await }).await.map_err(|e| match e {
            StoreError::LeaseExpired(_) => StoreError::LeaseExpired(lease.unwrap_or(0)),
            other => other,
        })?;
        if resp.succeeded() {
            return Ok(TxnOutcome::Committed(resp.header().map_or(0, |h| h.revision() as Revision)));
        }
        let mut read = Vec::new();
        for r in resp.op_responses() {
            if let TxnOpResponse::Get(g) = r {
                read.push(g.kvs().first().map(|kv| self.to_kv(kv)).transpose()?);
            }
        }
        Ok(TxnOutcome::CompareFailed(Self::first_failed(&txn.compares, &read)))
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<Watcher, StoreError> {
        let full = self.full(prefix);
        let options = WatchOptions::new().with_prefix().with_start_revision(after as i64 + 1);
        let mut stream = self.request(|mut c| async move { c.watch(full, Some(options)).await }).await?;
        // The first answer says whether the watch started.
        let first = tokio::time::timeout(self.timeout, stream.message())
            .await
            .map_err(|_| StoreError::Backend("etcd did not start the watch".into()))?
            .map_err(backend)?
            .ok_or_else(|| StoreError::Backend("etcd closed the watch".into()))?;
        if first.compact_revision() > 0 {
            return Err(StoreError::Compacted { requested: after, oldest: first.compact_revision() as Revision });
        }
        if first.canceled() {
            return Err(StoreError::Backend(format!("etcd refused the watch: {}", first.cancel_reason())));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let prefix = self.prefix.clone();
        tokio::spawn(async move {
            if let Err(e) = pump(stream, tx, prefix).await {
                tracing::debug!(error = %e, "etcd watch ended");
            }
        });
        Ok(rx)
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<Lease, StoreError> {
        let secs = ttl.as_secs_f64().ceil().max(1.0) as i64;
        let resp = self.request(|mut c| async move { c.lease_grant(secs, None).await }).await?;
        Ok(Lease { id: resp.id(), ttl: Duration::from_secs(resp.ttl().max(1) as u64) })
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<bool, StoreError> {
        self.keep_alive_once(lease).await
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.keepers.lock().await.remove(&lease);
        match self.request(|mut c| async move { c.lease_revoke(lease).await }).await {
            Err(StoreError::LeaseExpired(_)) => Ok(()),
            other => other.map(|_| ()),
        }
    }

    fn location(&self) -> String {
        format!("etcd {} (keys under {:?})", self.endpoints.join(","), self.prefix)
    }

    fn max_txn_ops(&self) -> usize {
        128
    }
}

//! The desired-state store every hostgate component reads and writes.
//!
//! Semantics follow etcd's, so the cluster backend (etcd) and the embedded
//! one (redb, [`RedbStore`]) are interchangeable behind [`Store`]:
//! - a key space of `/`-separated string keys with byte values;
//! - one global revision, bumped once per committed transaction; every key
//!   remembers the revision that created it and the one that last changed it;
//! - transactions: compares that must all hold, then puts and deletes,
//!   applied atomically or not at all;
//! - snapshot + watch: a consumer reads a prefix at revision R, then
//!   receives every change after R in order. If the changes it asks for are
//!   no longer kept, it gets [`StoreError::Compacted`] and re-reads;
//! - leases: keys put with a lease vanish (with delete events) when it is
//!   revoked or not kept alive within its TTL. Cluster membership and IP
//!   ownership rest on them.

mod etcd_store;
mod redb_store;

use std::collections::BTreeMap;

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use tokio::sync::mpsc;

pub use crate::{etcd_store::EtcdStore, redb_store::RedbStore};

/// A store-wide revision; 0 before the first commit.
pub type Revision = u64;

/// Names a lease (never 0).
pub type LeaseId = i64;

/// A granted lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    pub id: LeaseId,
    /// As granted, which may be longer than asked (etcd has a minimum).
    pub ttl: std::time::Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store backend: {0}")]
    Backend(String),
    #[error("revision {requested} is compacted (oldest kept: {oldest})")]
    Compacted { requested: Revision, oldest: Revision },
    #[error("value of {key} is not valid")]
    Decode { key: String, source: serde_json::Error },
    #[error("encoding value of {key}")]
    Encode { key: String, source: serde_json::Error },
    #[error("the store is closed")]
    Closed,
    #[error("lease {0:x} has expired")]
    LeaseExpired(LeaseId),
}

/// A key with its value and revisions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    pub create_revision: Revision,
    pub mod_revision: Revision,
}

impl KeyValue {
    /// Decodes the JSON value.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, StoreError> {
        serde_json::from_slice(&self.value).map_err(|source| StoreError::Decode { key: self.key.clone(), source })
    }
}

/// A condition a transaction checks before applying its operations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Compare {
    /// The key does not exist.
    Absent(String),
    /// The key exists.
    Present(String),
    /// The key was last changed at exactly this revision.
    ModRevision(String, Revision),
}

/// A change a transaction makes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Put(String, Vec<u8>),
    /// A put whose key vanishes with the lease.
    PutLeased(String, Vec<u8>, LeaseId),
    Delete(String),
    DeletePrefix(String),
}

impl Op {
    /// A put of `value` encoded as JSON.
    pub fn put_json<T: Serialize>(key: impl Into<String>, value: &T) -> Result<Op, StoreError> {
        let key = key.into();
        let bytes = serde_json::to_vec(value).map_err(|source| StoreError::Encode { key: key.clone(), source })?;
        Ok(Op::Put(key, bytes))
    }

    /// The key (or prefix) it changes.
    pub fn key(&self) -> &str {
        match self {
            Op::Put(k, _) | Op::PutLeased(k, _, _) | Op::Delete(k) | Op::DeletePrefix(k) => k,
        }
    }

    /// A put of `value` encoded as JSON, its key bound to `lease`.
    pub fn put_leased_json<T: Serialize>(key: impl Into<String>, value: &T, lease: LeaseId) -> Result<Op, StoreError> {
        let key = key.into();
        let bytes = serde_json::to_vec(value).map_err(|source| StoreError::Encode { key: key.clone(), source })?;
        Ok(Op::PutLeased(key, bytes, lease))
    }
}

/// Compares, then operations, all or nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub ops: Vec<Op>,
}

impl Txn {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn when(mut self, c: Compare) -> Self {
        self.compares.push(c);
        self
    }

    pub fn then(mut self, op: Op) -> Self {
        self.ops.push(op);
        self
    }
}

/// Whether a transaction applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOutcome {
    /// Applied at this revision.
    Committed(Revision),
    /// The compare at this index did not hold; nothing changed.
    CompareFailed(usize),
}

/// A consistent read of a prefix.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub revision: Revision,
    pub kvs: Vec<KeyValue>,
}

/// One change seen by a watcher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Put(KeyValue),
    Delete { key: String, mod_revision: Revision },
}

impl Event {
    pub fn key(&self) -> &str {
        match self {
            Event::Put(kv) => &kv.key,
            Event::Delete { key, .. } => key,
        }
    }
}

/// The changes of one committed transaction under a watched prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchBatch {
    pub revision: Revision,
    pub events: Vec<Event>,
}

/// Receives batches in revision order until the store goes away.
pub type Watcher = mpsc::UnboundedReceiver<WatchBatch>;

/// The store behind every component. Implementations: [`RedbStore`]
/// (embedded, one node); an etcd backend for clusters.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// The current revision.
    async fn revision(&self) -> Result<Revision, StoreError>;

    /// One key.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;

    /// Every key under `prefix`, in key order, with the revision read at.
    async fn snapshot(&self, prefix: &str) -> Result<Snapshot, StoreError>;

    /// Applies `txn` atomically if its compares hold.
    async fn commit(&self, txn: Txn) -> Result<TxnOutcome, StoreError>;

    /// Changes under `prefix` committed after revision `after`.
    async fn watch(&self, prefix: &str, after: Revision) -> Result<Watcher, StoreError>;

    /// A new lease that lives `ttl` past each keep-alive.
    async fn grant_lease(&self, ttl: std::time::Duration) -> Result<Lease, StoreError>;

    /// Renews `lease`; `Ok(false)` if it has expired (its keys are gone).
    async fn keep_alive(&self, lease: LeaseId) -> Result<bool, StoreError>;

    /// Ends `lease` now, deleting its keys.
    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError>;

    /// Where the store lives, for people (a path or the etcd endpoints).
    fn location(&self) -> String;

    /// The most operations one transaction may carry (etcd refuses more
    /// than its `--max-txn-ops`, 128 by default); batching writers split
    /// at this size.
    fn max_txn_ops(&self) -> usize {
        usize::MAX
    }
}

/// Keeps a local copy of a prefix up to date from a snapshot and a watch:
/// the pattern every consumer follows.
#[derive(Clone, Debug, Default)]
pub struct Mirror {
    pub revision: Revision,
    pub entries: BTreeMap<String, KeyValue>,
}

impl Mirror {
    pub fn from_snapshot(s: Snapshot) -> Self {
        Mirror { revision: s.revision, entries: s.kvs.into_iter().map(|kv| (kv.key.clone(), kv)).collect() }
    }

    /// Applies a batch; batches at or below the mirror's revision are ignored.
    pub fn apply(&mut self, batch: &WatchBatch) {
        if batch.revision <= self.revision {
            return;
        }
        for e in &batch.events {
            match e {
                Event::Put(kv) => {
                    self.entries.insert(kv.key.clone(), kv.clone());
                }
                Event::Delete { key, .. } => {
                    self.entries.remove(key);
                }
            }
        }
        self.revision = batch.revision;
    }
}

//! The embedded backend: one redb file, fsynced on every commit, plus an
//! in-memory log of recent commits that serves watchers, and in-memory
//! leases (a lease lives no longer than the process that holds the store,
//! so keys left with a lease by a previous process are deleted on open).

use std::{
    collections::{HashMap, VecDeque},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::{
    Compare, Event, KeyValue, Lease, LeaseId, Op, Revision, Snapshot, Store, StoreError, Txn, TxnOutcome, WatchBatch,
    Watcher,
};

/// key -> JSON-encoded [`Record`].
const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
/// "revision" -> the store revision.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const REVISION_KEY: &str = "revision";
/// How many commits watchers can ask to replay.
const LOG_LEN: usize = 4096;

#[derive(Serialize, Deserialize)]
struct Record {
    create_revision: Revision,
    mod_revision: Revision,
    value: Vec<u8>,
    /// The lease the key goes with; 0: none.
    #[serde(default)]
    lease: LeaseId,
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

struct WatchEntry {
    prefix: String,
    tx: mpsc::UnboundedSender<WatchBatch>,
}

/// Commits since the process opened the store, and the live watchers.
/// Held across commit and fan-out so watchers see commits in order and a
/// new watcher can never miss one.
struct Feed {
    /// (revision, every event of that commit)
    log: VecDeque<(Revision, Vec<Event>)>,
    /// Oldest revision a watcher may ask to start after.
    oldest_after: Revision,
    watchers: Vec<WatchEntry>,
}

/// Live leases: id -> (TTL, deadline).
#[derive(Default)]
struct Leases {
    next: LeaseId,
    live: HashMap<LeaseId, (Duration, tokio::time::Instant)>,
}

/// A store that does not keep the database open.
struct WeakStore {
    db: std::sync::Weak<Database>,
    feed: std::sync::Weak<Mutex<Feed>>,
    leases: std::sync::Weak<Mutex<Leases>>,
    path: PathBuf,
}

impl WeakStore {
    fn upgrade(&self) -> Option<RedbStore> {
        Some(RedbStore {
            db: self.db.upgrade()?,
            feed: self.feed.upgrade()?,
            leases: self.leases.upgrade()?,
            path: self.path.clone(),
        })
    }
}

/// The embedded store.
#[derive(Clone)]
pub struct RedbStore {
    db: Arc<Database>,
    feed: Arc<Mutex<Feed>>,
    leases: Arc<Mutex<Leases>>,
    path: PathBuf,
}

impl RedbStore {
    /// Opens or creates the store file at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::create(path).map_err(|e| StoreError::Backend(format!("{}: {e}", path.display())))?;
        let tx = db.begin_write().map_err(backend)?;
        tx.open_table(KV).map_err(backend)?;
        tx.open_table(META).map_err(backend)?;
        tx.commit().map_err(backend)?;
        let store = RedbStore {
            db: Arc::new(db),
            feed: Arc::new(Mutex::new(Feed { log: VecDeque::new(), oldest_after: 0, watchers: Vec::new() })),
            leases: Arc::new(Mutex::new(Leases { next: 1, live: HashMap::new() })),
            path: path.to_path_buf(),
        };
        // Leases died with the process that held them: so do their keys.
        let orphans = store.keys_with_lease(|lease| lease != 0)?;
        if !orphans.is_empty() {
            store.commit_blocking(Txn { compares: vec![], ops: orphans.into_iter().map(Op::Delete).collect() })?;
        }
        let rev = store.revision_blocking()?;
        store.lock_feed().oldest_after = rev;
        Ok(store)
    }

    fn lock_leases(&self) -> MutexGuard<'_, Leases> {
        self.leases.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keys whose lease satisfies `which`.
    fn keys_with_lease(&self, which: impl Fn(LeaseId) -> bool) -> Result<Vec<String>, StoreError> {
        let tx = self.db.begin_read().map_err(backend)?;
        let table = tx.open_table(KV).map_err(backend)?;
        let mut keys = Vec::new();
        for item in table.iter().map_err(backend)? {
            let (k, v) = item.map_err(backend)?;
            let r: Record = serde_json::from_slice(v.value())
                .map_err(|source| StoreError::Decode { key: k.value().into(), source })?;
            if which(r.lease) {
                keys.push(k.value().to_string());
            }
        }
        Ok(keys)
    }

    fn revoke_blocking(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.lock_leases().live.remove(&lease);
        let doomed = self.keys_with_lease(|l| l == lease)?;
        if !doomed.is_empty() {
            self.commit_blocking(Txn { compares: vec![], ops: doomed.into_iter().map(Op::Delete).collect() })?;
        }
        Ok(())
    }

    /// Revokes `lease` once its deadline passes without a keep-alive. Holds
    /// the store weakly: closing the store ends the task.
    async fn expire_when_due(store: WeakStore, lease: LeaseId) {
        loop {
            let Some(me) = store.upgrade() else { return };
            let deadline = match me.lock_leases().live.get(&lease) {
                Some((_, deadline)) => *deadline,
                None => return,
            };
            if tokio::time::Instant::now() >= deadline {
                if let Err(e) = me.blocking(move |s| s.revoke_blocking(lease)).await {
                    tracing::warn!(lease, error = %e, "expiring a lease");
                }
                return;
            }
            drop(me);
            tokio::time::sleep_until(deadline).await;
        }
    }

    fn downgrade(&self) -> WeakStore {
        WeakStore {
            db: Arc::downgrade(&self.db),
            feed: Arc::downgrade(&self.feed),
            leases: Arc::downgrade(&self.leases),
            path: self.path.clone(),
        }
    }
    fn lock_feed(&self) -> MutexGuard<'_, Feed> {
        // A panic while holding the lock leaves consistent data (the log is
        // only appended after a commit), so poisoning is not fatal.
        self.feed.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn revision_blocking(&self) -> Result<Revision, StoreError> {
        let tx = self.db.begin_read().map_err(backend)?;
        let meta = tx.open_table(META).map_err(backend)?;
        Ok(meta.get(REVISION_KEY).map_err(backend)?.map_or(0, |v| v.value()))
    }

    fn snapshot_blocking(&self, prefix: &str) -> Result<Snapshot, StoreError> {
        let tx = self.db.begin_read().map_err(backend)?;
        let meta = tx.open_table(META).map_err(backend)?;
        let revision = meta.get(REVISION_KEY).map_err(backend)?.map_or(0, |v| v.value());
        let table = tx.open_table(KV).map_err(backend)?;
        let mut kvs = Vec::new();
        for item in table.range(prefix..).map_err(backend)? {
            let (k, v) = item.map_err(backend)?;
            if !k.value().starts_with(prefix) {
                break;
            }
            kvs.push(to_kv(k.value(), v.value())?);
        }
        Ok(Snapshot { revision, kvs })
    }

    fn commit_blocking(&self, txn: Txn) -> Result<TxnOutcome, StoreError> {
        let mut feed = self.lock_feed();
        let tx = self.db.begin_write().map_err(backend)?;
        let (revision, events) = {
            let mut table = tx.open_table(KV).map_err(backend)?;
            for (i, c) in txn.compares.iter().enumerate() {
                if !compare_holds(&table, c)? {
                    return Ok(TxnOutcome::CompareFailed(i));
                }
            }
            let mut meta = tx.open_table(META).map_err(backend)?;
            let revision = meta.get(REVISION_KEY).map_err(backend)?.map_or(0, |v| v.value()) + 1;
            let mut events = Vec::new();
            for op in txn.ops {
                if let Op::PutLeased(_, _, lease) = &op {
                    if !self.lock_leases().live.contains_key(lease) {
                        return Err(StoreError::LeaseExpired(*lease));
                    }
                }
                apply(&mut table, op, revision, &mut events)?;
            }
            meta.insert(REVISION_KEY, revision).map_err(backend)?;
            (revision, events)
        };
        tx.commit().map_err(backend)?;

        feed.watchers.retain(|w| {
            let mine: Vec<Event> = events.iter().filter(|e| e.key().starts_with(&w.prefix)).cloned().collect();
            mine.is_empty() || w.tx.send(WatchBatch { revision, events: mine }).is_ok()
        });
        feed.log.push_back((revision, events));
        if feed.log.len() > LOG_LEN {
            if let Some((rev, _)) = feed.log.pop_front() {
                feed.oldest_after = rev;
            }
        }
        Ok(TxnOutcome::Committed(revision))
    }

    fn watch_now(&self, prefix: &str, after: Revision) -> Result<Watcher, StoreError> {
        let mut feed = self.lock_feed();
        if after < feed.oldest_after {
            return Err(StoreError::Compacted { requested: after, oldest: feed.oldest_after });
        }
        let (tx, rx) = mpsc::unbounded_channel();
        for (revision, events) in feed.log.iter().filter(|(r, _)| *r > after) {
            let mine: Vec<Event> = events.iter().filter(|e| e.key().starts_with(prefix)).cloned().collect();
            if !mine.is_empty() {
                let _ = tx.send(WatchBatch { revision: *revision, events: mine });
            }
        }
        feed.watchers.push(WatchEntry { prefix: prefix.to_string(), tx });
        Ok(rx)
    }

    /// Runs blocking redb work off the async threads.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(RedbStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || f(me)).await.map_err(|e| StoreError::Backend(e.to_string()))?
    }
}

fn to_kv(key: &str, raw: &[u8]) -> Result<KeyValue, StoreError> {
    let r: Record = serde_json::from_slice(raw).map_err(|source| StoreError::Decode { key: key.into(), source })?;
    Ok(KeyValue { key: key.into(), value: r.value, create_revision: r.create_revision, mod_revision: r.mod_revision })
}

fn read_record(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<KeyValue>, StoreError> {
    match table.get(key).map_err(backend)? {
        Some(v) => Ok(Some(to_kv(key, v.value())?)),
        None => Ok(None),
    }
}

fn compare_holds(table: &impl ReadableTable<&'static str, &'static [u8]>, c: &Compare) -> Result<bool, StoreError> {
    Ok(match c {
        Compare::Absent(k) => read_record(table, k)?.is_none(),
        Compare::Present(k) => read_record(table, k)?.is_some(),
        Compare::ModRevision(k, rev) => read_record(table, k)?.is_some_and(|kv| kv.mod_revision == *rev),
    })
}

fn put(
    table: &mut redb::Table<&'static str, &'static [u8]>,
    key: String,
    value: Vec<u8>,
    lease: LeaseId,
    revision: Revision,
    events: &mut Vec<Event>,
) -> Result<(), StoreError> {
    let create_revision = read_record(table, &key)?.map_or(revision, |kv| kv.create_revision);
    let record = Record { create_revision, mod_revision: revision, value, lease };
    let raw = serde_json::to_vec(&record).map_err(|source| StoreError::Encode { key: key.clone(), source })?;
    table.insert(key.as_str(), raw.as_slice()).map_err(backend)?;
    events.push(Event::Put(KeyValue { key, value: record.value, create_revision, mod_revision: revision }));
    Ok(())
}

fn apply(
    table: &mut redb::Table<&'static str, &'static [u8]>,
    op: Op,
    revision: Revision,
    events: &mut Vec<Event>,
) -> Result<(), StoreError> {
    match op {
        Op::Put(key, value) => put(table, key, value, 0, revision, events)?,
        Op::PutLeased(key, value, lease) => put(table, key, value, lease, revision, events)?,
        Op::Delete(key) => {
            if table.remove(key.as_str()).map_err(backend)?.is_some() {
                events.push(Event::Delete { key, mod_revision: revision });
            }
        }
        Op::DeletePrefix(prefix) => {
            let mut doomed = Vec::new();
            for item in table.range(prefix.as_str()..).map_err(backend)? {
                let (k, _) = item.map_err(backend)?;
                if !k.value().starts_with(&prefix) {
                    break;
                }
                doomed.push(k.value().to_string());
            }
            for key in doomed {
                table.remove(key.as_str()).map_err(backend)?;
                events.push(Event::Delete { key, mod_revision: revision });
            }
        }
    }
    Ok(())
}

#[async_trait::async_trait]
impl Store for RedbStore {
    async fn revision(&self) -> Result<Revision, StoreError> {
        self.blocking(|s| s.revision_blocking()).await
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let key = key.to_string();
        self.blocking(move |s| {
            let tx = s.db.begin_read().map_err(backend)?;
            let table = tx.open_table(KV).map_err(backend)?;
            read_record(&table, &key)
        })
        .await
    }

    async fn snapshot(&self, prefix: &str) -> Result<Snapshot, StoreError> {
        let prefix = prefix.to_string();
        self.blocking(move |s| s.snapshot_blocking(&prefix)).await
    }

    async fn commit(&self, txn: Txn) -> Result<TxnOutcome, StoreError> {
        self.blocking(move |s| s.commit_blocking(txn)).await
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<Watcher, StoreError> {
        self.watch_now(prefix, after)
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<Lease, StoreError> {
        let id = {
            let mut leases = self.lock_leases();
            let id = leases.next;
            leases.next += 1;
            leases.live.insert(id, (ttl, tokio::time::Instant::now() + ttl));
            id
        };
        tokio::spawn(Self::expire_when_due(self.downgrade(), id));
        Ok(Lease { id, ttl })
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<bool, StoreError> {
        Ok(match self.lock_leases().live.get_mut(&lease) {
            Some((ttl, deadline)) => {
                *deadline = tokio::time::Instant::now() + *ttl;
                true
            }
            None => false,
        })
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.blocking(move |s| s.revoke_blocking(lease)).await
    }

    fn location(&self) -> String {
        self.path.display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::Mirror;

    fn open() -> (tempfile::TempDir, RedbStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RedbStore::open(&dir.path().join("state.redb")).expect("open");
        (dir, store)
    }

    fn put(k: &str, v: &str) -> Op {
        Op::Put(k.into(), v.as_bytes().to_vec())
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn revisions_and_compare_and_set() {
        let (_d, s) = open();
        assert_eq!(s.revision().await.expect("rev"), 0);
        let r1 = s.commit(Txn::new().when(Compare::Absent("ips/a".into())).then(put("ips/a", "x"))).await.expect("c");
        assert_eq!(r1, TxnOutcome::Committed(1));
        // A second claim of the same key is refused and changes nothing.
        let r2 = s.commit(Txn::new().when(Compare::Absent("ips/a".into())).then(put("ips/a", "y"))).await.expect("c");
        assert_eq!(r2, TxnOutcome::CompareFailed(0));
        let kv = s.get("ips/a").await.expect("get").expect("present");
        assert_eq!((kv.value.as_slice(), kv.create_revision, kv.mod_revision), (&b"x"[..], 1, 1));
        let r3 = s.commit(Txn::new().when(Compare::ModRevision("ips/a".into(), 1)).then(put("ips/a", "z"))).await;
        assert_eq!(r3.expect("c"), TxnOutcome::Committed(2));
        let kv = s.get("ips/a").await.expect("get").expect("present");
        assert_eq!((kv.create_revision, kv.mod_revision), (1, 2));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.redb");
        {
            let s = RedbStore::open(&path).expect("open");
            s.commit(Txn::new().then(put("a/1", "one")).then(put("a/2", "two"))).await.expect("commit");
        }
        let s = RedbStore::open(&path).expect("reopen");
        let snap = s.snapshot("a/").await.expect("snap");
        assert_eq!(snap.revision, 1);
        assert_eq!(snap.kvs.len(), 2);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn snapshot_then_watch_misses_nothing() {
        let (_d, s) = open();
        s.commit(Txn::new().then(put("vips/1", "a")).then(put("other/1", "b"))).await.expect("c");
        let snap = s.snapshot("vips/").await.expect("snap");
        // Changes between the snapshot and the watch are replayed.
        s.commit(Txn::new().then(put("vips/2", "c"))).await.expect("c");
        let mut w = s.watch("vips/", snap.revision).await.expect("watch");
        s.commit(Txn::new().then(put("other/2", "d"))).await.expect("c");
        s.commit(Txn::new().then(Op::DeletePrefix("vips/".into()))).await.expect("c");
        let mut mirror = Mirror::from_snapshot(snap);
        let b1 = w.recv().await.expect("batch");
        assert_eq!(b1.revision, 2);
        mirror.apply(&b1);
        assert_eq!(mirror.entries.len(), 2);
        let b2 = w.recv().await.expect("batch");
        assert_eq!(b2.revision, 4, "the commit to other/ is not delivered");
        mirror.apply(&b2);
        assert!(mirror.entries.is_empty());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn watch_before_history_is_compacted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.redb");
        RedbStore::open(&path).expect("open").commit(Txn::new().then(put("a", "1"))).await.expect("c");
        let s = RedbStore::open(&path).expect("reopen");
        assert!(matches!(s.watch("", 0).await, Err(StoreError::Compacted { requested: 0, oldest: 1 })));
        assert!(s.watch("", 1).await.is_ok());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn leased_keys_vanish_with_their_lease() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.redb");
        let s = RedbStore::open(&path).expect("open");
        let short = s.grant_lease(Duration::from_millis(200)).await.expect("grant");
        let kept = s.grant_lease(Duration::from_millis(200)).await.expect("grant");
        let snap = s.snapshot("m/").await.expect("snap");
        let mut w = s.watch("m/", snap.revision).await.expect("watch");
        s.commit(Txn::new().then(Op::PutLeased("m/a".into(), vec![1], short.id))).await.expect("put");
        s.commit(Txn::new().then(Op::PutLeased("m/b".into(), vec![2], kept.id))).await.expect("put");
        for _ in 0..6 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(s.keep_alive(kept.id).await.expect("keep alive"));
        }
        assert!(s.get("m/a").await.expect("get").is_none(), "expired without keep-alives");
        assert!(s.get("m/b").await.expect("get").is_some(), "kept alive");
        assert!(!s.keep_alive(short.id).await.expect("keep alive"), "an expired lease stays expired");
        let put = s.commit(Txn::new().then(Op::PutLeased("m/c".into(), vec![3], short.id))).await;
        assert!(matches!(put, Err(StoreError::LeaseExpired(_))), "{put:?}");
        let events: Vec<_> = [w.recv().await, w.recv().await, w.recv().await].into_iter().flatten().collect();
        assert!(matches!(&events[2].events[0], Event::Delete { key, .. } if key == "m/a"), "{events:?}");
        drop(s);
        // A new process: the old leases are gone, and their keys with them.
        let s = RedbStore::open(&path).expect("reopen");
        assert!(s.snapshot("m/").await.expect("snap").kvs.is_empty());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// A mirror fed by snapshot + watch always equals a fresh snapshot.
        #[test]
        fn mirror_converges(ops in proptest::collection::vec((0u8..4, 0u8..6), 1..30)) {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("rt");
            rt.block_on(async {
                let (_d, s) = open();
                let snap = s.snapshot("k/").await.expect("snap");
                let mut w = s.watch("k/", snap.revision).await.expect("watch");
                let mut mirror = Mirror::from_snapshot(snap);
                for (kind, key) in &ops {
                    let key = format!("k/{key}");
                    let op = match kind {
                        0 | 1 => Op::Put(key, vec![*kind]),
                        2 => Op::Delete(key),
                        _ => Op::DeletePrefix("k/".into()),
                    };
                    s.commit(Txn::new().then(op)).await.expect("commit");
                }
                let last = s.revision().await.expect("rev");
                while mirror.revision < last {
                    match tokio::time::timeout(std::time::Duration::from_millis(50), w.recv()).await {
                        Ok(Some(b)) => mirror.apply(&b),
                        _ => break, // commits that changed nothing under k/ send no batch
                    }
                }
                let fresh = s.snapshot("k/").await.expect("snap");
                let fresh: Vec<_> = fresh.kvs;
                let mirrored: Vec<_> = mirror.entries.into_values().collect();
                assert_eq!(mirrored, fresh);
            });
        }
    }
}

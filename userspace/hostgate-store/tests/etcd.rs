//! The etcd backend against a real etcd (Debian's etcd-server) on loopback:
//! the same semantics the embedded store is tested for.

use std::time::Duration;

use hostgate_store::{Compare, EtcdStore, Event, Mirror, Op, Store, StoreError, Txn, TxnOutcome};
use hostgate_testbed::EtcdServer;

/// A free loopback port pair (client, peer) for etcd.
fn free_port() -> u16 {
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        if port < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
}

/// A fresh etcd, or `None` (skipped, saying why) where it cannot run outside CI.
fn etcd(test: &str) -> Option<EtcdServer> {
    if !std::path::Path::new(hostgate_testbed::etcd::ETCD).exists() {
        if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
            panic!("{test}: etcd is not installed (apt-get install etcd-server)");
        }
        eprintln!("SKIP {test}: etcd is not installed (cargo xtask test installs etcd-server)");
        return None;
    }
    let addr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    Some(EtcdServer::start(None, addr).expect("etcd"))
}

async fn connect(server: &EtcdServer) -> EtcdStore {
    EtcdStore::connect(&[server.endpoint()], "hostgate-test/", Duration::from_secs(2), Duration::from_secs(10))
        .await
        .expect("connect")
}

fn put(k: &str, v: &str) -> Op {
    Op::Put(k.into(), v.as_bytes().to_vec())
}

#[tokio::test(flavor = "multi_thread")]
async fn compare_and_set_says_which_compare_failed() {
    let Some(server) = etcd("compare_and_set_says_which_compare_failed") else { return };
    let s = connect(&server).await;
    let claim = |v: &'static str| {
        Txn::new()
            .when(Compare::Present("customers/acme".into()))
            .when(Compare::Absent("ips/a".into()))
            .then(put("ips/a", v))
    };
    assert_eq!(s.commit(claim("x")).await.expect("commit"), TxnOutcome::CompareFailed(0), "no customer yet");
    s.commit(Txn::new().then(put("customers/acme", "{}"))).await.expect("commit");
    let TxnOutcome::Committed(rev) = s.commit(claim("x")).await.expect("commit") else { panic!("refused") };
    assert_eq!(s.commit(claim("y")).await.expect("commit"), TxnOutcome::CompareFailed(1), "already claimed");
    let kv = s.get("ips/a").await.expect("get").expect("present");
    assert_eq!((kv.key.as_str(), kv.value.as_slice(), kv.mod_revision), ("ips/a", &b"x"[..], rev));
    let stale = Txn::new().when(Compare::ModRevision("ips/a".into(), rev - 1)).then(Op::Delete("ips/a".into()));
    assert_eq!(s.commit(stale).await.expect("commit"), TxnOutcome::CompareFailed(0));
    let fresh = Txn::new().when(Compare::ModRevision("ips/a".into(), rev)).then(Op::Delete("ips/a".into()));
    assert!(matches!(s.commit(fresh).await.expect("commit"), TxnOutcome::Committed(_)));
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_then_watch_misses_nothing() {
    let Some(server) = etcd("snapshot_then_watch_misses_nothing") else { return };
    let s = connect(&server).await;
    s.commit(Txn::new().then(put("vips/1", "a")).then(put("other/1", "b"))).await.expect("c");
    let snap = s.snapshot("vips/").await.expect("snap");
    assert_eq!(snap.kvs.len(), 1);
    // Changes between the snapshot and the watch are replayed.
    s.commit(Txn::new().then(put("vips/2", "c"))).await.expect("c");
    let mut w = s.watch("vips/", snap.revision).await.expect("watch");
    s.commit(Txn::new().then(put("other/2", "d"))).await.expect("c");
    let TxnOutcome::Committed(last) = s.commit(Txn::new().then(Op::DeletePrefix("vips/".into()))).await.expect("c")
    else {
        panic!("refused")
    };
    let mut mirror = Mirror::from_snapshot(snap);
    while mirror.revision < last {
        let b = tokio::time::timeout(Duration::from_secs(5), w.recv()).await.expect("in time").expect("batch");
        assert!(b.events.iter().all(|e| e.key().starts_with("vips/")), "{b:?}");
        mirror.apply(&b);
    }
    assert!(mirror.entries.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn leased_keys_vanish_with_their_lease() {
    let Some(server) = etcd("leased_keys_vanish_with_their_lease") else { return };
    let s = connect(&server).await;
    let short = s.grant_lease(Duration::from_secs(1)).await.expect("grant");
    assert_eq!(short.ttl, Duration::from_secs(1), "etcd runs with timeouts that allow one-second leases");
    let kept = s.grant_lease(Duration::from_secs(1)).await.expect("grant");
    let snap = s.snapshot("members/").await.expect("snap");
    let mut w = s.watch("members/", snap.revision).await.expect("watch");
    s.commit(Txn::new().then(Op::PutLeased("members/a".into(), vec![1], short.id))).await.expect("put");
    s.commit(Txn::new().then(Op::PutLeased("members/b".into(), vec![2], kept.id))).await.expect("put");
    let start = std::time::Instant::now();
    let gone = loop {
        assert!(s.keep_alive(kept.id).await.expect("keep alive"));
        match tokio::time::timeout(Duration::from_millis(250), w.recv()).await {
            Ok(Some(b)) => {
                if let Some(Event::Delete { key, .. }) = b.events.first() {
                    break key.clone();
                }
            }
            Ok(None) => panic!("watch ended"),
            Err(_) => assert!(start.elapsed() < Duration::from_secs(5), "lease never expired"),
        }
    };
    assert_eq!(gone, "members/a");
    assert!(s.get("members/b").await.expect("get").is_some(), "kept alive");
    assert!(!s.keep_alive(short.id).await.expect("keep alive"), "an expired lease stays expired");
    let put = s.commit(Txn::new().then(Op::PutLeased("members/c".into(), vec![3], short.id))).await;
    assert!(matches!(put, Err(StoreError::LeaseExpired(_))), "{put:?}");
    s.revoke_lease(kept.id).await.expect("revoke");
    assert!(s.get("members/b").await.expect("get").is_none(), "revoked with its keys");
}

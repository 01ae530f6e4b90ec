//! TLS certificates: the API (`hostgate http cert add|list|rm`, one key
//! `http/certs/<name>` each, judged by hostgate-http before commit) and the
//! follower that rebuilds the per-SNI index from the store and swaps it
//! into the rustls resolver the TLS listeners share.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use axum::{extract::State, http::StatusCode, Json};
use hostgate_api::{CertAdd, CertRef, CertView};
use hostgate_http::tls::{self, CertIndex, Parsed, StoredCert};
use hostgate_store::{Compare, KeyValue, Mirror, Op, Txn, TxnOutcome};
use tracing::{debug, info, warn};

use super::{bad, keys, store_err};
use crate::{api::Failure, Daemon};

/// Unix seconds now: the core judges validity against the time it is given.
pub(crate) fn now() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

fn view(c: &StoredCert, parsed: Result<&Parsed, &tls::CertError>) -> CertView {
    let mut v = CertView { name: c.name.clone(), default: c.default, ..CertView::default() };
    match parsed {
        Ok(p) => {
            let i = &p.info;
            v.names = i.names.clone();
            v.subject = i.subject.clone();
            v.issuer = i.issuer.clone();
            v.not_before = i.not_before_text.clone();
            v.not_after = i.not_after_text.clone();
            v.key_type = i.key_type.clone();
        }
        Err(e) => v.problem = Some(e.to_string()),
    }
    v
}

/// Stores a certificate after judging it (parses, key matches the leaf,
/// valid now, DNS names). Adding under an existing name replaces it: the
/// proxy serves the new one from the next handshake. `default` moves the
/// default flag here in the same commit; replacing the default keeps it
/// the default.
pub async fn put_cert(State(d): State<Arc<Daemon>>, Json(req): Json<CertAdd>) -> Result<Json<CertView>, Failure> {
    store_cert(&d, req).await.map(Json)
}

/// What `cert add` does, also for certificates issued by ACME: judged, then
/// one commit the certificate follower picks up.
pub(crate) async fn store_cert(d: &Daemon, req: CertAdd) -> Result<CertView, Failure> {
    let parsed = tls::parse(&req.chain_pem, &req.key_pem, now()).map_err(|e| bad(e.to_string()))?;
    let name = req.name.clone().unwrap_or_else(|| tls::default_name(&parsed.info).to_string());
    tls::check_name(&name).map_err(|e| bad(e.to_string()))?;
    let key = keys::cert(&name);
    let snap = d.store.snapshot(keys::CERTS).await.map_err(store_err)?;
    let was_default = snap.kvs.iter().any(|kv| kv.key == key && kv.decode::<StoredCert>().is_ok_and(|c| c.default));
    let stored =
        StoredCert { name, chain_pem: req.chain_pem, key_pem: req.key_pem, default: req.default || was_default };
    let mut txn = Txn::new();
    if req.default {
        for (kv, mut other) in defaults(&snap.kvs).filter(|(kv, _)| kv.key != key) {
            other.default = false;
            // Guarded by its revision: a concurrent change is not overwritten.
            txn = txn.when(Compare::ModRevision(kv.key.clone(), kv.mod_revision));
            txn = txn.then(Op::put_json(kv.key.clone(), &other).map_err(store_err)?);
        }
    }
    let txn = txn.then(Op::put_json(key, &stored).map_err(store_err)?);
    match d.store.commit(txn).await.map_err(store_err)? {
        TxnOutcome::Committed(_) => {
            info!(cert = %stored.name, names = ?parsed.info.names, default = stored.default, "TLS certificate stored");
            Ok(view(&stored, Ok(&parsed)))
        }
        TxnOutcome::CompareFailed(_) => {
            Err(Failure(StatusCode::CONFLICT, "default: changed concurrently by another request; try again".into()))
        }
    }
}

/// The stored certificates flagged default.
fn defaults(kvs: &[KeyValue]) -> impl Iterator<Item = (&KeyValue, StoredCert)> {
    kvs.iter().filter_map(|kv| kv.decode::<StoredCert>().ok().filter(|c| c.default).map(|c| (kv, c)))
}

/// Every stored certificate, described; never a key.
pub async fn list_certs(State(d): State<Arc<Daemon>>) -> Result<Json<Vec<CertView>>, Failure> {
    let snap = d.store.snapshot(keys::CERTS).await.map_err(store_err)?;
    let now = now();
    let all = snap.kvs.iter().filter_map(|kv| kv.decode::<StoredCert>().ok());
    Ok(Json(all.map(|c| view(&c, tls::parse(&c.chain_pem, &c.key_pem, now).as_ref())).collect()))
}

pub async fn remove_cert(State(d): State<Arc<Daemon>>, Json(req): Json<CertRef>) -> Result<Json<CertRef>, Failure> {
    let key = keys::cert(&req.name);
    let txn = Txn::new().when(Compare::Present(key.clone())).then(Op::Delete(key));
    match d.store.commit(txn).await.map_err(store_err)? {
        TxnOutcome::Committed(_) => Ok(Json(req)),
        TxnOutcome::CompareFailed(_) => Err(Failure(
            StatusCode::NOT_FOUND,
            format!("name: certificate {} does not exist (hostgate http cert list)", req.name),
        )),
    }
}

/// The certificates usable now, indexed; how many; and when the first of
/// them expires (unix seconds).
fn index(entries: impl Iterator<Item = StoredCert>) -> (CertIndex, usize, Option<i64>) {
    let now = now();
    let mut usable = Vec::new();
    for c in entries {
        match tls::parse(&c.chain_pem, &c.key_pem, now) {
            Ok(p) => usable.push((c, p)),
            Err(e) => warn!(cert = %c.name, error = %e, "stored certificate not served"),
        }
    }
    let first_expiry = usable.iter().map(|(_, p)| p.info.not_after).min();
    (CertIndex::build(usable.iter().map(|(c, p)| (c.name.as_str(), p, c.default))), usable.len(), first_expiry)
}

/// How long the follower may wait for a change: until just after the
/// first certificate expires (then it is left out), at most a day.
fn patience(first_expiry: Option<i64>) -> Duration {
    let day = 86_400;
    let secs = first_expiry.map_or(day, |t| (t - now() + 1).clamp(1, day));
    Duration::from_secs(secs.unsigned_abs())
}

/// Loads the stored certificates once (before the TLS listeners accept).
pub(crate) async fn load(d: &Daemon) -> anyhow::Result<()> {
    let snap = d.store.snapshot(keys::CERTS).await?;
    let (index, n, _) = index(snap.kvs.iter().filter_map(|kv| kv.decode::<StoredCert>().ok()));
    info!(certs = n, "TLS certificates loaded");
    d.http.certs.swap(index);
    Ok(())
}

/// Follows `http/certs/`: every change rebuilds the index from all stored
/// certificates and swaps it into the resolver, and so does the expiry of
/// one. A stored certificate that no longer passes (expired, written by
/// another version) is logged and left out; the others are served.
pub(crate) async fn follow(d: Arc<Daemon>) -> anyhow::Result<()> {
    let snap = d.store.snapshot(keys::CERTS).await?;
    let mut watch = d.store.watch(keys::CERTS, snap.revision).await?;
    let mut mirror = Mirror::from_snapshot(snap);
    loop {
        let (index, n, first_expiry) = index(mirror.entries.values().filter_map(|kv| kv.decode::<StoredCert>().ok()));
        debug!(certs = n, "TLS certificates swapped");
        d.http.certs.swap(index);
        match tokio::time::timeout(patience(first_expiry), watch.recv()).await {
            Ok(batch) => mirror.apply(&batch.ok_or_else(|| anyhow::anyhow!("the store's watch ended"))?),
            Err(_) => info!("a TLS certificate expired: rebuilding"),
        }
    }
}

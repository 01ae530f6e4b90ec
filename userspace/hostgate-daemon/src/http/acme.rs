//! Automatic certificates by ACME (RFC 8555) HTTP-01 (issue #10 point 3).
//!
//! The issuer (`run`) looks at the vhosts that opted in (`--acme`, exact
//! names only: hostgate-http's `acme::eligible`), and for each one without
//! a stored certificate that lasts past its renewal time orders one with
//! instant-acme. The HTTP-01 answer is written to the store
//! (`http/acme/challenges/<token>`), every node's challenge follower
//! mirrors it into the proxy, and the plain listeners answer
//! `/.well-known/acme-challenge/<token>` before routing: whichever node the
//! CA reaches answers. The certificate is stored through `cert add`'s path
//! (`certs::store_cert`), so the certificate follower serves it from the
//! next handshake. Per name, a record (`http/acme/orders/<name>`: state,
//! failures, next attempt, last error) keeps the backoff across restarts.
//! Only the node holding `http/acme/lock` (bound to its membership lease)
//! issues, so a cluster orders each certificate once. Nothing a client
//! sends can start an order: only the store's vhosts decide.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use axum::{extract::State, Json};
use hostgate_api::{AcmeView, CertAdd};
use hostgate_http::{
    acme::{self, Covering, Decision, OrderRecord, State as OrderState},
    tls::{self, StoredCert},
    Vhost,
};
use hostgate_store::{Compare, KeyValue, Mirror, Op, Txn, TxnOutcome};
use instant_acme::{
    Account, AccountBuilder, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder,
    OrderStatus, RetryPolicy,
};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::{certs, keys};
use crate::{api::Failure, Daemon};

/// The account as stored: instant-acme's credentials (with the account's
/// private key, PKCS#8) and the directory they belong to. No `Debug`: it
/// holds a key.
#[derive(Serialize, Deserialize)]
struct StoredAccount {
    directory: String,
    credentials: serde_json::Value,
}

/// How long one order may take, from creation to the stored certificate.
const ORDER_TIMEOUT: Duration = Duration::from_secs(120);
/// The issuer looks again at least this often (vhost changes wake it at once).
const MAX_SLEEP: Duration = Duration::from_secs(3600);

/// Follows `http/acme/challenges/` into the proxy's HTTP-01 answers (on
/// every node with listeners, whether it issues or not).
pub(crate) async fn follow_challenges(d: Arc<Daemon>) -> anyhow::Result<()> {
    let snap = d.store.snapshot(keys::ACME_CHALLENGES).await?;
    let mut watch = d.store.watch(keys::ACME_CHALLENGES, snap.revision).await?;
    let mut mirror = Mirror::from_snapshot(snap);
    loop {
        let answers = mirror
            .entries
            .values()
            .filter_map(|kv| {
                let token = kv.key.strip_prefix(keys::ACME_CHALLENGES)?;
                Some((token.to_string(), kv.decode::<String>().ok()?))
            })
            .collect();
        *d.http.challenges.write().unwrap_or_else(|p| p.into_inner()) = answers;
        let batch = watch.recv().await.ok_or_else(|| anyhow::anyhow!("the store's watch ended"))?;
        mirror.apply(&batch);
    }
}

/// The issuer: one pass over the eligible names, then sleep until the
/// first renewal or retry is due, or a vhost changes.
pub(crate) async fn run(d: Arc<Daemon>) -> anyhow::Result<()> {
    let Some(directory) = d.config.http.acme_directory.clone() else {
        // Off: nothing to do for this daemon's life (the follower wrapper
        // would restart a task that returns).
        std::future::pending::<()>().await;
        return Ok(());
    };
    let snap = d.store.snapshot(keys::VHOSTS).await?;
    let mut vhosts = d.store.watch(keys::VHOSTS, snap.revision).await?;
    let mut account = None;
    loop {
        let wait = match pass(&d, &directory, &mut account).await {
            Ok(wait) => wait,
            Err(e) => {
                warn!(error = format!("{e:#}"), "ACME pass failed");
                Duration::from_secs(30)
            }
        };
        if let Ok(batch) = tokio::time::timeout(wait, vhosts.recv()).await {
            batch.ok_or_else(|| anyhow::anyhow!("the store's watch ended"))?;
            // A CLI burst (several vhosts) is handled in one pass.
            tokio::time::sleep(Duration::from_millis(200)).await;
            while vhosts.try_recv().is_ok() {}
        }
    }
}

/// The vhosts in the store that validate.
async fn stored_vhosts(d: &Daemon) -> anyhow::Result<Vec<Vhost>> {
    let snap = d.store.snapshot(keys::VHOSTS).await?;
    Ok(snap.kvs.iter().filter_map(|kv| kv.decode::<Vhost>().ok()).filter(|v| v.validate().is_ok()).collect())
}

/// Validity of the stored certificates usable now, with their names.
async fn stored_certs(d: &Daemon, now: i64) -> anyhow::Result<Vec<(Vec<String>, Covering, String)>> {
    let snap = d.store.snapshot(keys::CERTS).await?;
    Ok(snap
        .kvs
        .iter()
        .filter_map(|kv| kv.decode::<StoredCert>().ok())
        .filter_map(|c| {
            let p = tls::parse(&c.chain_pem, &c.key_pem, now).ok()?;
            let cover = Covering { not_before: p.info.not_before, not_after: p.info.not_after };
            Some((p.info.names, cover, p.info.not_after_text))
        })
        .collect())
}

/// The covering certificate that lasts longest (what the resolver serves).
fn best(certs: &[(Vec<String>, Covering, String)], name: &str) -> Option<(Covering, String)> {
    certs
        .iter()
        .filter(|(names, _, _)| acme::covers(names, name))
        .max_by_key(|(_, c, _)| c.not_after)
        .map(|(_, c, t)| (*c, t.clone()))
}

async fn records(d: &Daemon) -> anyhow::Result<std::collections::HashMap<String, OrderRecord>> {
    let snap = d.store.snapshot(keys::ACME_ORDERS).await?;
    Ok(snap
        .kvs
        .iter()
        .filter_map(|kv| Some((kv.key.strip_prefix(keys::ACME_ORDERS)?.to_string(), kv.decode().ok()?)))
        .collect())
}

/// One pass: orders what is due (one name after the other) and says how
/// long to sleep.
async fn pass(d: &Daemon, directory: &str, account: &mut Option<Account>) -> anyhow::Result<Duration> {
    let names = acme::eligible(&stored_vhosts(d).await?);
    if names.is_empty() {
        return Ok(MAX_SLEEP);
    }
    if !hold_lock(d).await? {
        // Another node issues; look again in a while (it may go away).
        return Ok(Duration::from_secs(60));
    }
    let mut wake = certs::now() + MAX_SLEEP.as_secs() as i64;
    for name in names {
        let now = certs::now();
        let certs = stored_certs(d, now).await?;
        let records = records(d).await?;
        let record = records.get(&name);
        match acme::decide(best(&certs, &name).map(|b| b.0), record, now) {
            Decision::WaitUntil(t) => wake = wake.min(t),
            Decision::Order => {
                let outcome = match ensure_account(d, directory, account).await {
                    Ok(acct) => {
                        put_record(d, &name, &ordering(record, now)).await?;
                        tokio::time::timeout(ORDER_TIMEOUT, issue(d, &acct, &name))
                            .await
                            .unwrap_or_else(|_| Err(anyhow::anyhow!("the order took longer than {ORDER_TIMEOUT:?}")))
                    }
                    Err(e) => Err(e),
                };
                let next = match outcome {
                    Ok(not_after) => {
                        info!(name = %name, not_after, "ACME certificate stored");
                        OrderRecord::succeeded(now, not_after)
                    }
                    Err(e) => {
                        let failed = OrderRecord::failed(record, now, format!("{e:#}"));
                        warn!(name = %name, failures = failed.failures, retry_in_secs = failed.next_attempt - now,
                            error = format!("{e:#}"), "ACME order failed");
                        wake = wake.min(failed.next_attempt);
                        failed
                    }
                };
                put_record(d, &name, &next).await?;
                // A stored certificate is judged again next pass (its
                // renewal time); wake soon to compute it.
                wake = wake.min(certs::now() + 1);
            }
        }
    }
    let secs = (wake - certs::now()).clamp(1, MAX_SLEEP.as_secs() as i64);
    Ok(Duration::from_secs(secs.unsigned_abs()))
}

/// The record while an order runs: the failures so far are kept, so a
/// crash mid-order does not reset the backoff.
fn ordering(previous: Option<&OrderRecord>, now: i64) -> OrderRecord {
    OrderRecord {
        state: OrderState::Ordering,
        failures: previous.map_or(0, |p| p.failures),
        last_attempt: now,
        next_attempt: 0,
        last_error: previous.and_then(|p| p.last_error.clone()),
        not_after: previous.and_then(|p| p.not_after),
    }
}

async fn put_record(d: &Daemon, name: &str, r: &OrderRecord) -> anyhow::Result<()> {
    d.store.commit(Txn::new().then(Op::put_json(keys::acme_order(name), r)?)).await?;
    Ok(())
}

/// Takes or keeps `http/acme/lock` (bound to this node's lease, so it goes
/// when the node does). False: another node holds it, or this node has no
/// lease now.
async fn hold_lock(d: &Daemon) -> anyhow::Result<bool> {
    let Some(lease) = d.standing.borrow().lease() else { return Ok(false) };
    let me = &d.config.node_name;
    let txn = Txn::new().when(Compare::Absent(keys::ACME_LOCK.to_string())).then(Op::put_leased_json(
        keys::ACME_LOCK,
        me,
        lease,
    )?);
    if let TxnOutcome::Committed(_) = d.store.commit(txn).await? {
        info!("this node issues ACME certificates (http/acme/lock)");
        return Ok(true);
    }
    let holder = d.store.get(keys::ACME_LOCK).await?.and_then(|kv| kv.decode::<String>().ok());
    Ok(holder.as_deref() == Some(me.as_str()))
}

fn builder(d: &Daemon) -> anyhow::Result<AccountBuilder> {
    Ok(match &d.config.http.acme_ca_root {
        Some(root) => Account::builder_with_root(root)
            .with_context(|| format!("http.acme_ca_root {}: not a usable CA root", root.display()))?,
        None => Account::builder().context("the system's CA roots")?,
    })
}

/// The account: from the store if one was registered with this directory,
/// else registered now and written by compare-and-set (if another node
/// registered meanwhile, its account is used).
async fn ensure_account(d: &Daemon, directory: &str, cached: &mut Option<Account>) -> anyhow::Result<Account> {
    if let Some(a) = cached {
        return Ok(a.clone());
    }
    let stored = d.store.get(keys::ACME_ACCOUNT).await?;
    if let Some(a) = restore(d, directory, stored.as_ref()).await? {
        *cached = Some(a.clone());
        return Ok(a);
    }
    let contact = d.config.http.acme_contact.as_ref().map(|c| format!("mailto:{c}"));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let new = NewAccount { contact: &contacts, terms_of_service_agreed: true, only_return_existing: false };
    let (account, credentials) = builder(d)?
        .create(&new, directory.to_string(), None)
        .await
        .with_context(|| format!("registering an ACME account at {directory}"))?;
    let value = StoredAccount { directory: directory.to_string(), credentials: serde_json::to_value(&credentials)? };
    let guard = match &stored {
        Some(kv) => Compare::ModRevision(kv.key.clone(), kv.mod_revision),
        None => Compare::Absent(keys::ACME_ACCOUNT.to_string()),
    };
    let txn = Txn::new().when(guard).then(Op::put_json(keys::ACME_ACCOUNT, &value)?);
    match d.store.commit(txn).await? {
        TxnOutcome::Committed(_) => {
            info!(account = %account.id(), %directory, "ACME account registered");
            *cached = Some(account.clone());
            Ok(account)
        }
        TxnOutcome::CompareFailed(_) => {
            let now = d.store.get(keys::ACME_ACCOUNT).await?;
            let theirs = restore(d, directory, now.as_ref()).await?;
            let a = theirs.ok_or_else(|| anyhow::anyhow!("the stored ACME account changed concurrently"))?;
            *cached = Some(a.clone());
            Ok(a)
        }
    }
}

async fn restore(d: &Daemon, directory: &str, kv: Option<&KeyValue>) -> anyhow::Result<Option<Account>> {
    let Some(stored) = kv.and_then(|kv| kv.decode::<StoredAccount>().ok()) else { return Ok(None) };
    if stored.directory != directory {
        // Another CA: a new account there (the old one stays unused).
        return Ok(None);
    }
    let credentials: AccountCredentials =
        serde_json::from_value(stored.credentials).context("the stored ACME account (http/acme/account)")?;
    let account = builder(d)?.from_credentials(credentials).await.context("loading the stored ACME account")?;
    Ok(Some(account))
}

/// One order for `name`: HTTP-01 answers in the store, the CA validates,
/// a fresh ECDSA P-256 key and CSR, the chain stored as `cert add` would.
/// Returns the certificate's expiry (unix seconds). The answers are
/// removed whatever the outcome.
async fn issue(d: &Daemon, account: &Account, name: &str) -> anyhow::Result<i64> {
    let mut tokens = Vec::new();
    let result = order(d, account, name, &mut tokens).await;
    for token in tokens {
        let del = d.store.commit(Txn::new().then(Op::Delete(keys::acme_challenge(&token)))).await;
        if let Err(e) = del {
            warn!(error = %e, "removing an HTTP-01 answer");
        }
    }
    result
}

async fn order(d: &Daemon, account: &Account, name: &str, tokens: &mut Vec<String>) -> anyhow::Result<i64> {
    info!(%name, "ACME order");
    let ids = [Identifier::Dns(name.to_string())];
    let mut order = account.new_order(&NewOrder::new(&ids)).await.context("creating the order")?;
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz.context("fetching an authorization")?;
        match authz.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            other => anyhow::bail!("authorization is {other:?}"),
        }
        let mut challenge = authz
            .challenge(ChallengeType::Http01)
            .ok_or_else(|| anyhow::anyhow!("the CA offers no http-01 challenge"))?;
        let key_auth = challenge.key_authorization().as_str().to_string();
        let token = challenge.token.clone();
        tokens.push(token.clone());
        d.store
            .commit(Txn::new().then(Op::put_json(keys::acme_challenge(&token), &key_auth)?))
            .await
            .context("storing the HTTP-01 answer")?;
        // This node's follower mirrors it within milliseconds; answer
        // before telling the CA to look.
        for _ in 0..50 {
            if d.http.challenge(&token).is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        challenge.set_ready().await.context("telling the CA the challenge is ready")?;
    }
    let retry = RetryPolicy::new().initial_delay(Duration::from_millis(250)).timeout(Duration::from_secs(60));
    let status = order.poll_ready(&retry).await.context("waiting for validation")?;
    if status != OrderStatus::Ready {
        anyhow::bail!("validation failed: {}", why_invalid(&mut order).await);
    }
    let key_pem = order.finalize().await.context("finalizing the order")?;
    let chain_pem = order.poll_certificate(&retry).await.context("fetching the certificate")?;
    let not_after = tls::parse(&chain_pem, &key_pem, certs::now()).context("the issued certificate")?.info.not_after;
    let req = CertAdd { name: Some(acme::cert_name(name)), chain_pem, key_pem, default: false };
    certs::store_cert(d, req).await.map_err(|f| anyhow::anyhow!("storing the certificate: {}", f.1))?;
    Ok(not_after)
}

/// The CA's reasons, from the authorizations' challenges.
async fn why_invalid(order: &mut instant_acme::Order) -> String {
    let mut reasons = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authz)) = authorizations.next().await {
        if let Ok(state) = authz.refresh().await {
            reasons.extend(state.challenges.iter().filter_map(|c| c.error.as_ref()).map(ToString::to_string));
        }
    }
    match reasons.is_empty() {
        true => "the order is invalid (no reason given)".into(),
        false => reasons.join("; "),
    }
}

/// `GET /v1/http/acme`: every name with `--acme`, where it stands.
pub async fn list_acme(State(d): State<Arc<Daemon>>) -> Result<Json<Vec<AcmeView>>, Failure> {
    let inner = async {
        let now = certs::now();
        let names = acme::eligible(&stored_vhosts(&d).await?);
        let certs = stored_certs(&d, now).await?;
        let records = records(&d).await?;
        let views = names
            .into_iter()
            .map(|name| {
                let record = records.get(&name);
                let best = best(&certs, &name);
                let next = match (
                    d.config.http.acme_directory.is_some(),
                    acme::decide(best.as_ref().map(|b| b.0), record, now),
                ) {
                    (false, _) => None,
                    (true, Decision::WaitUntil(t)) => Some(t),
                    (true, Decision::Order) => Some(now),
                };
                AcmeView {
                    state: record.map_or_else(|| "none".to_string(), |r| r.state.to_string()),
                    not_after: best.as_ref().map(|b| b.0.not_after),
                    not_after_text: best.map(|b| b.1),
                    next_attempt: next,
                    failures: record.map_or(0, |r| r.failures),
                    last_error: record.and_then(|r| r.last_error.clone()),
                    name,
                }
            })
            .collect();
        anyhow::Ok(views)
    };
    inner.await.map(Json).map_err(Failure::from)
}

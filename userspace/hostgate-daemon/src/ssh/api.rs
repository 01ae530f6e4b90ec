//! API handlers: customers' keys (validated before commit), the proxy's
//! public keys and the access history.

use std::sync::Arc;

use axum::{extract::State, http::StatusCode, Json};
use hostgate_api::{SshFilter, SshKeyRef, SshKeyView, SshKnownRef, SshPolicyView, SshProxyKey, SshSession, SshUserMap};
use hostgate_ipam::model::keys as ipam_keys;
use hostgate_ssh::AuthorizedKey;
use hostgate_store::{Compare, Op, Txn, TxnOutcome};
use tracing::info;

use super::{identity, keys};
use crate::{api::Failure, Daemon};

fn bad(m: impl Into<String>) -> Failure {
    Failure(StatusCode::BAD_REQUEST, m.into())
}

fn store_err(e: hostgate_store::StoreError) -> Failure {
    Failure::from(anyhow::Error::from(e))
}

/// Adds one key line for a customer (optionally bound to one of its
/// containers). The customer (and container) must exist and the container
/// must be the customer's; a key already stored for the customer is
/// replaced (its container binding may change).
pub async fn add_key(State(d): State<Arc<Daemon>>, Json(req): Json<SshKeyView>) -> Result<Json<SshKeyView>, Failure> {
    let parsed = AuthorizedKey::parse(&req.line).map_err(|e| bad(e.to_string()))?;
    let view = SshKeyView { fingerprint: parsed.fingerprint(), line: req.line.trim().to_string(), ..req };
    if let Some(c) = &view.container {
        check_container(&d, &view.customer, c).await?;
    }
    let key = keys::key(&view.customer, &view.fingerprint);
    let txn = Txn::new()
        .when(Compare::Present(ipam_keys::customer(&view.customer)))
        .then(Op::put_json(key, &view).map_err(store_err)?);
    match d.store.commit(txn).await.map_err(store_err)? {
        TxnOutcome::Committed(_) => {
            info!(customer = %view.customer, fingerprint = %view.fingerprint, "SSH key stored");
            Ok(Json(view))
        }
        TxnOutcome::CompareFailed(_) => Err(Failure(
            StatusCode::NOT_FOUND,
            format!("customer: {} does not exist (hostgate customer add)", view.customer),
        )),
    }
}

async fn check_container(d: &Daemon, customer: &str, name: &str) -> Result<(), Failure> {
    let kv = d.store.get(&ipam_keys::container(name)).await.map_err(store_err)?;
    let owner = kv.and_then(|kv| kv.decode::<hostgate_ipam::model::Container>().ok()).map(|c| c.customer);
    match owner {
        Some(o) if o == customer => Ok(()),
        Some(_) => Err(bad(format!("container: {name} is not a container of customer {customer}"))),
        None => Err(Failure(StatusCode::NOT_FOUND, format!("container: {name} does not exist"))),
    }
}

pub async fn remove_key(State(d): State<Arc<Daemon>>, Json(req): Json<SshKeyRef>) -> Result<Json<SshKeyRef>, Failure> {
    let key = keys::key(&req.customer, &req.fingerprint);
    let txn = Txn::new().when(Compare::Present(key.clone())).then(Op::Delete(key));
    match d.store.commit(txn).await.map_err(store_err)? {
        TxnOutcome::Committed(_) => Ok(Json(req)),
        TxnOutcome::CompareFailed(_) => Err(Failure(
            StatusCode::NOT_FOUND,
            format!("fingerprint: customer {} has no key {}", req.customer, req.fingerprint),
        )),
    }
}

/// Maps a user name of a customer to one of its containers (replacing an
/// earlier mapping of the name); effective for the next login.
pub async fn add_user(State(d): State<Arc<Daemon>>, Json(req): Json<SshUserMap>) -> Result<Json<SshUserMap>, Failure> {
    hostgate_ssh::check_user_name(&req.user).map_err(|e| bad(format!("user: {e}")))?;
    check_container(&d, &req.customer, &req.container).await?;
    let txn = Txn::new()
        .when(Compare::Present(ipam_keys::customer(&req.customer)))
        .when(Compare::Present(ipam_keys::container(&req.container)))
        .then(Op::put_json(keys::user(&req.customer, &req.user), &req).map_err(store_err)?);
    match d.store.commit(txn).await.map_err(store_err)? {
        TxnOutcome::Committed(_) => {
            info!(customer = %req.customer, user = %req.user, container = %req.container, "SSH user mapped");
            Ok(Json(req))
        }
        TxnOutcome::CompareFailed(_) => Err(Failure(
            StatusCode::NOT_FOUND,
            format!("customer: {} or container {} was just removed", req.customer, req.container),
        )),
    }
}

pub async fn remove_user(
    State(d): State<Arc<Daemon>>,
    Json(req): Json<SshUserMap>,
) -> Result<Json<SshUserMap>, Failure> {
    let key = keys::user(&req.customer, &req.user);
    let txn = Txn::new().when(Compare::Present(key.clone())).then(Op::Delete(key));
    match d.store.commit(txn).await.map_err(store_err)? {
        TxnOutcome::Committed(_) => Ok(Json(req)),
        TxnOutcome::CompareFailed(_) => Err(Failure(
            StatusCode::NOT_FOUND,
            format!("user: customer {} has no user {} mapped", req.customer, req.user),
        )),
    }
}

pub async fn list_users(
    State(d): State<Arc<Daemon>>,
    Json(f): Json<SshFilter>,
) -> Result<Json<Vec<SshUserMap>>, Failure> {
    let prefix = f.customer.as_deref().map_or(keys::USERS.to_string(), keys::customer_users);
    let snap = d.store.snapshot(&prefix).await.map_err(store_err)?;
    Ok(Json(snap.kvs.iter().filter_map(|kv| kv.decode::<SshUserMap>().ok()).collect()))
}

pub async fn list_keys(
    State(d): State<Arc<Daemon>>,
    Json(f): Json<SshFilter>,
) -> Result<Json<Vec<SshKeyView>>, Failure> {
    let prefix = f.customer.as_deref().map_or(keys::KEYS.to_string(), keys::customer_keys);
    let snap = d.store.snapshot(&prefix).await.map_err(store_err)?;
    Ok(Json(snap.kvs.iter().filter_map(|kv| kv.decode::<SshKeyView>().ok()).collect()))
}

pub async fn proxy_key(State(d): State<Arc<Daemon>>) -> Result<Json<SshProxyKey>, Failure> {
    let node = &d.config.node_name;
    let client = identity::client_key(&d).await?;
    let hosts = identity::host_keys(&d).await?;
    Ok(Json(SshProxyKey {
        client_key: identity::public_line(&client, &format!("hostgate-proxy@{node}"))?,
        host_keys: hosts.iter().map(|k| identity::public_line(k, "")).collect::<anyhow::Result<_>>()?,
        ca_key: identity::public_line(&identity::ca_key(&d).await?, &format!("hostgate-ca@{node}"))?,
    }))
}

/// A customer's policy as stored (nothing stored: everything off).
pub async fn policy_of(d: &Daemon, customer: &str) -> anyhow::Result<SshPolicyView> {
    Ok(match d.store.get(&keys::policy(customer)).await? {
        Some(kv) => kv.decode()?,
        None => SshPolicyView { customer: customer.to_string(), agent_forwarding: None },
    })
}

/// Shows a customer's policy, changing the fields given first (effective
/// for the next login).
pub async fn policy(
    State(d): State<Arc<Daemon>>,
    Json(req): Json<SshPolicyView>,
) -> Result<Json<SshPolicyView>, Failure> {
    let mut p = policy_of(&d, &req.customer).await?;
    p.agent_forwarding = Some(p.agent_forwarding.unwrap_or(false));
    if req.agent_forwarding.is_none() {
        return Ok(Json(p));
    }
    p.agent_forwarding = req.agent_forwarding.or(p.agent_forwarding);
    let txn = Txn::new()
        .when(Compare::Present(ipam_keys::customer(&req.customer)))
        .then(Op::put_json(keys::policy(&req.customer), &p).map_err(store_err)?);
    match d.store.commit(txn).await.map_err(store_err)? {
        TxnOutcome::Committed(_) => {
            info!(customer = %p.customer, agent_forwarding = ?p.agent_forwarding, "SSH policy stored");
            Ok(Json(p))
        }
        TxnOutcome::CompareFailed(_) => Err(Failure(
            StatusCode::NOT_FOUND,
            format!("customer: {} does not exist (hostgate customer add)", req.customer),
        )),
    }
}

/// Sessions and refused attempts, oldest first.
pub async fn history(State(d): State<Arc<Daemon>>, Json(f): Json<SshFilter>) -> Result<Json<Vec<SshSession>>, Failure> {
    let prefix = f.customer.as_deref().map_or(keys::HISTORY.to_string(), keys::history_of);
    let snap = d.store.snapshot(&prefix).await.map_err(store_err)?;
    let mut all: Vec<SshSession> = snap.kvs.iter().filter_map(|kv| kv.decode().ok()).collect();
    all.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(Json(all))
}

/// Forgets a container's pinned host key (after a deliberate key change).
pub async fn forget_known(
    State(d): State<Arc<Daemon>>,
    Json(req): Json<SshKnownRef>,
) -> Result<Json<SshKnownRef>, Failure> {
    let key = keys::known(&req.container);
    let txn = Txn::new().when(Compare::Present(key.clone())).then(Op::Delete(key));
    match d.store.commit(txn).await.map_err(store_err)? {
        TxnOutcome::Committed(_) => {
            info!(container = %req.container, "pinned SSH host key forgotten");
            Ok(Json(req))
        }
        TxnOutcome::CompareFailed(_) => {
            Err(Failure(StatusCode::NOT_FOUND, format!("container: no host key pinned for {}", req.container)))
        }
    }
}

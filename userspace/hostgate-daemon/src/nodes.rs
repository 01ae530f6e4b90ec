//! The node registry: `nodes/<name>` holds each node's underlay addresses.
//! A daemon registers itself at start (from `node_addresses`); nodes outside
//! the cluster (DSR targets) are added by operators (`hostgate node add`).
//! `node list` joins the registry with membership (`members/`, leased),
//! drains (`drained/`) and claims; `node drain` moves a node's IPs away.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    sync::Arc,
};

use axum::{extract::State, http::StatusCode, Json};
use hostgate_api::{NodeRef, NodeView};
use hostgate_store::{KeyValue, Op, Txn};
use serde::{Deserialize, Serialize};

use hostgate_ipam::ownership::keys;

use crate::{api::Failure, ips::ClusterView, Daemon};

pub const PREFIX: &str = "nodes/";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub addresses: Vec<IpAddr>,
}

pub fn key(name: &str) -> String {
    format!("{PREFIX}{name}")
}

/// Node name -> addresses, from any mirror or snapshot entries.
pub fn decode<'a>(entries: impl Iterator<Item = &'a KeyValue>) -> BTreeMap<String, Vec<IpAddr>> {
    entries
        .filter_map(|kv| {
            let name = kv.key.strip_prefix(PREFIX)?;
            let record: NodeRecord = kv.decode().ok()?;
            Some((name.to_string(), record.addresses))
        })
        .collect()
}

pub async fn register_self(daemon: &Daemon) -> anyhow::Result<()> {
    let record = NodeRecord { addresses: daemon.config.node_addresses.clone() };
    daemon.store.commit(Txn::new().then(Op::put_json(key(&daemon.config.node_name), &record)?)).await?;
    Ok(())
}

pub async fn list(State(d): State<Arc<Daemon>>) -> Result<Json<Vec<NodeView>>, Failure> {
    let snap = d.store.snapshot("").await.map_err(|e| Failure::from(anyhow::Error::from(e)))?;
    let registry = decode(snap.kvs.iter().filter(|kv| kv.key.starts_with(PREFIX)));
    let view = ClusterView::from_entries(snap.kvs.iter());
    let names: BTreeSet<&String> = registry.keys().chain(view.members.keys()).collect();
    Ok(Json(
        names
            .into_iter()
            .map(|name| {
                let member = view.members.get(name);
                NodeView {
                    this_node: *name == d.config.node_name,
                    name: name.clone(),
                    addresses: registry.get(name).into_iter().flatten().map(ToString::to_string).collect(),
                    state: if member.is_some() { "up" } else { "down" }.into(),
                    drained: view.drained.contains(name),
                    weight: member.map(|m| m.weight),
                    ips: view.claims.values().filter(|(c, _)| &c.node == name).count(),
                }
            })
            .collect(),
    ))
}

/// `node drain NAME`: the node keeps running but takes no customer IPs;
/// the others take its share (and its pinned IPs) over.
pub async fn drain(State(d): State<Arc<Daemon>>, Json(req): Json<NodeRef>) -> Result<Json<NodeRef>, Failure> {
    set_drained(&d, req, true).await
}

/// `node undrain NAME`: the node takes its share again.
pub async fn undrain(State(d): State<Arc<Daemon>>, Json(req): Json<NodeRef>) -> Result<Json<NodeRef>, Failure> {
    set_drained(&d, req, false).await
}

async fn set_drained(d: &Daemon, req: NodeRef, drained: bool) -> Result<Json<NodeRef>, Failure> {
    let store_err = |e: hostgate_store::StoreError| Failure::from(anyhow::Error::from(e));
    let snap = d.store.snapshot("").await.map_err(store_err)?;
    let known = snap.kvs.iter().any(|kv| kv.key == key(&req.name) || kv.key == keys::member(&req.name));
    if !known {
        return Err(Failure(StatusCode::NOT_FOUND, format!("node {} is not known (hostgate node list)", req.name)));
    }
    let op = if drained {
        Op::put_json(keys::drained(&req.name), &crate::now()).map_err(store_err)?
    } else {
        Op::Delete(keys::drained(&req.name))
    };
    d.store.commit(Txn::new().then(op)).await.map_err(store_err)?;
    tracing::info!(node = %req.name, drained, "drain changed");
    Ok(Json(req))
}

pub async fn add(State(d): State<Arc<Daemon>>, Json(req): Json<NodeView>) -> Result<Json<NodeView>, Failure> {
    let bad = |m: String| Failure(StatusCode::BAD_REQUEST, m);
    if !hostgate_ipam::model::valid_name(&req.name) {
        return Err(bad(format!("name: {:?} must be 1-63 characters of a-z, 0-9 and '-'", req.name)));
    }
    if req.name == d.config.node_name {
        return Err(bad("name: this node's addresses come from its config (node_addresses)".into()));
    }
    let mut addresses = Vec::new();
    for a in &req.addresses {
        addresses.push(a.parse::<IpAddr>().map_err(|_| bad(format!("address: {a:?} is not an IP address")))?);
    }
    if addresses.is_empty()
        || addresses.iter().filter(|a| a.is_ipv4()).count() > 1
        || addresses.iter().filter(|a| a.is_ipv6()).count() > 1
    {
        return Err(bad("address: give one address per family (at most one IPv4 and one IPv6)".into()));
    }
    let op =
        Op::put_json(key(&req.name), &NodeRecord { addresses }).map_err(|e| Failure::from(anyhow::Error::from(e)))?;
    d.store.commit(Txn::new().then(op)).await.map_err(|e| Failure::from(anyhow::Error::from(e)))?;
    Ok(Json(NodeView { this_node: false, state: "down".into(), ..req }))
}

pub async fn remove(State(d): State<Arc<Daemon>>, Json(req): Json<NodeRef>) -> Result<Json<NodeRef>, Failure> {
    if req.name == d.config.node_name {
        return Err(Failure(StatusCode::BAD_REQUEST, "cannot remove this node from its own registry".into()));
    }
    if d.store.get(&key(&req.name)).await.map_err(|e| Failure::from(anyhow::Error::from(e)))?.is_none() {
        return Err(Failure(StatusCode::NOT_FOUND, format!("node {} is not registered", req.name)));
    }
    d.store
        .commit(Txn::new().then(Op::Delete(key(&req.name))))
        .await
        .map_err(|e| Failure::from(anyhow::Error::from(e)))?;
    Ok(Json(req))
}

/// How often the neighbour entries of other nodes are refreshed.
const NEIGH_REFRESH: std::time::Duration = std::time::Duration::from_secs(5);

/// Keeps the kernel's neighbour entries for the other nodes resolved, as
/// Cilium's L2 neighbour discovery does: XDP sends tunnel packets only to
/// next hops the FIB already knows (it cannot resolve one itself, and the
/// kernel would refuse a tunnel packet handed back with our own source
/// address). A datagram to the discard port makes the kernel resolve and
/// refresh the entry. Every other node is probed at once, whenever the
/// registry changes, and every NEIGH_REFRESH, so entries never go stale.
pub(crate) async fn neighbour_loop(daemon: Arc<Daemon>) -> anyhow::Result<()> {
    let daemon = &daemon;
    let snap = daemon.store.snapshot(PREFIX).await?;
    let mut watch = daemon.store.watch(PREFIX, snap.revision).await?;
    let mut mirror = hostgate_store::Mirror::from_snapshot(snap);
    let mut tick = tokio::time::interval(NEIGH_REFRESH);
    loop {
        for (name, addrs) in decode(mirror.entries.values()) {
            if name != daemon.config.node_name {
                for addr in addrs {
                    probe(addr).await;
                }
            }
        }
        tokio::select! {
            _ = tick.tick() => {}
            batch = watch.recv() => match batch {
                Some(b) => mirror.apply(&b),
                None => anyhow::bail!("the store's watch ended"),
            },
        }
    }
}

async fn probe(addr: IpAddr) {
    let bind: std::net::SocketAddr = if addr.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    if let Ok(sock) = tokio::net::UdpSocket::bind(bind).await {
        let _ = sock.send_to(b"hostgate neighbour probe", (addr, 9)).await;
    }
}

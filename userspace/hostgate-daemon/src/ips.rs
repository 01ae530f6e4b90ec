//! Customers and their IPs: the API that writes them to the store, and the
//! reconciler that puts this node's share on its interface, announces it,
//! and takes off what it no longer owns (only addresses it added itself).

use std::{collections::BTreeMap, net::IpAddr, sync::Arc, time::Duration};

use axum::{extract::State, http::StatusCode, Json};
use hostgate_api::{CustomerRef, CustomerRequest, CustomerView, IpRef, IpRequest, IpView};
use hostgate_ipam::{
    announce,
    model::{check_assignable, keys, valid_name, Assignment, Cidr, Customer},
};
use hostgate_store::{Compare, Mirror, Op, Txn, TxnOutcome};
use tracing::{info, warn};

use crate::{api::Failure, netif, Daemon};

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn err(e: impl Into<anyhow::Error>) -> Failure {
    Failure::from(e.into())
}

fn bad(m: impl Into<String>) -> Failure {
    Failure(StatusCode::BAD_REQUEST, m.into())
}

fn pools(d: &Daemon) -> Vec<Cidr> {
    // Validated with the config, so every entry parses.
    d.config.ip.pools.iter().filter_map(|p| p.parse().ok()).collect()
}

/// The node that answers for an assignment: its pinned node, else this
/// one (placement over several nodes needs cluster membership).
fn owner(d: &Daemon, a: &Assignment) -> String {
    a.pinned_node.clone().unwrap_or_else(|| d.config.node_name.clone())
}

pub async fn add_customer(
    State(d): State<Arc<Daemon>>,
    Json(req): Json<CustomerRequest>,
) -> Result<Json<CustomerView>, Failure> {
    let c = Customer { name: req.name, description: req.description, created: now() };
    c.validate().map_err(|e| bad(e.to_string()))?;
    let txn = Txn::new()
        .when(Compare::Absent(keys::customer(&c.name)))
        .then(Op::put_json(keys::customer(&c.name), &c).map_err(err)?);
    match d.store.commit(txn).await.map_err(err)? {
        TxnOutcome::Committed(_) => {
            info!(customer = %c.name, "customer added");
            Ok(Json(CustomerView { name: c.name, description: c.description, created: c.created, ips: vec![] }))
        }
        TxnOutcome::CompareFailed(_) => {
            Err(Failure(StatusCode::CONFLICT, format!("customer {} already exists", c.name)))
        }
    }
}

async fn assignments(d: &Daemon) -> Result<Vec<Assignment>, Failure> {
    let snap = d.store.snapshot(keys::IPS).await.map_err(err)?;
    Ok(snap.kvs.iter().filter_map(|kv| kv.decode().ok()).collect())
}

async fn ip_view(d: &Daemon, a: &Assignment, local: &[IpAddr]) -> IpView {
    let owner = owner(d, a);
    let mine = owner == d.config.node_name;
    let state = match (mine, local.contains(&a.addr)) {
        (true, true) => "active",
        (true, false) => "pending",
        (false, _) => "remote",
    };
    IpView {
        addr: a.addr.to_string(),
        customer: a.customer.clone(),
        owner: Some(owner),
        pinned: a.pinned_node.is_some(),
        state: state.into(),
        since: a.since,
    }
}

async fn local_ours(d: &Daemon) -> Vec<IpAddr> {
    match netif::Addresses::connect(d.config.ip_interface()) {
        Ok(a) => a.list().await.map(|l| l.into_iter().filter(|x| x.ours).map(|x| x.addr).collect()).unwrap_or_default(),
        Err(_) => vec![],
    }
}

pub async fn list_customers(State(d): State<Arc<Daemon>>) -> Result<Json<Vec<CustomerView>>, Failure> {
    let snap = d.store.snapshot(keys::CUSTOMERS).await.map_err(err)?;
    let ips = assignments(&d).await?;
    let local = local_ours(&d).await;
    let mut out = Vec::new();
    for c in snap.kvs.iter().filter_map(|kv| kv.decode::<Customer>().ok()) {
        let mut views = Vec::new();
        for a in ips.iter().filter(|a| a.customer == c.name) {
            views.push(ip_view(&d, a, &local).await);
        }
        out.push(CustomerView { name: c.name, description: c.description, created: c.created, ips: views });
    }
    Ok(Json(out))
}

pub async fn show_customer(
    State(d): State<Arc<Daemon>>,
    Json(req): Json<CustomerRef>,
) -> Result<Json<CustomerView>, Failure> {
    let Json(all) = list_customers(State(d)).await?;
    all.into_iter()
        .find(|c| c.name == req.name)
        .map(Json)
        .ok_or_else(|| Failure(StatusCode::NOT_FOUND, format!("customer {} does not exist", req.name)))
}

pub async fn remove_customer(
    State(d): State<Arc<Daemon>>,
    Json(req): Json<CustomerRef>,
) -> Result<Json<CustomerRef>, Failure> {
    let Some(kv) = d.store.get(&keys::customer(&req.name)).await.map_err(err)? else {
        return Err(Failure(StatusCode::NOT_FOUND, format!("customer {} does not exist", req.name)));
    };
    let held: Vec<String> =
        assignments(&d).await?.iter().filter(|a| a.customer == req.name).map(|a| a.addr.to_string()).collect();
    if !held.is_empty() {
        return Err(Failure(
            StatusCode::CONFLICT,
            format!("customer {} still holds {}; release them first", req.name, held.join(", ")),
        ));
    }
    let txn = Txn::new().when(Compare::ModRevision(kv.key.clone(), kv.mod_revision)).then(Op::Delete(kv.key));
    match d.store.commit(txn).await.map_err(err)? {
        TxnOutcome::Committed(_) => Ok(Json(req)),
        TxnOutcome::CompareFailed(_) => Err(Failure(StatusCode::CONFLICT, "customer changed meanwhile; retry".into())),
    }
}

pub async fn assign(State(d): State<Arc<Daemon>>, Json(req): Json<IpRequest>) -> Result<Json<IpView>, Failure> {
    let addr: IpAddr = req.addr.parse().map_err(|_| bad(format!("address: {:?} is not an IP address", req.addr)))?;
    check_assignable(addr, &pools(&d)).map_err(|e| bad(e.to_string()))?;
    if let Some(node) = &req.node {
        if !valid_name(node) {
            return Err(bad(format!("node: {node:?} is not a node name")));
        }
    }
    // An address the host already has (and hostgate did not add) is the host's.
    let iface = d.config.ip_interface().to_string();
    if let Ok(addrs) = netif::Addresses::connect(&iface) {
        if addrs.list().await.map_err(err)?.iter().any(|a| a.addr == addr && !a.ours) {
            return Err(Failure(
                StatusCode::CONFLICT,
                format!("{addr} is an address of this host ({iface}), not hostgate's"),
            ));
        }
    }
    let a = Assignment { addr, customer: req.customer.clone(), pinned_node: req.node.clone(), since: now() };
    let txn = Txn::new()
        .when(Compare::Present(keys::customer(&req.customer)))
        .when(Compare::Absent(keys::ip(addr)))
        .then(Op::put_json(keys::ip(addr), &a).map_err(err)?);
    match d.store.commit(txn).await.map_err(err)? {
        TxnOutcome::Committed(_) => {
            info!(%addr, customer = %a.customer, "IP assigned");
            Ok(Json(ip_view(&d, &a, &[]).await))
        }
        TxnOutcome::CompareFailed(0) => Err(Failure(
            StatusCode::NOT_FOUND,
            format!("customer {} does not exist (hostgate customer add)", req.customer),
        )),
        TxnOutcome::CompareFailed(_) => {
            let holder =
                d.store.get(&keys::ip(addr)).await.ok().flatten().and_then(|kv| kv.decode::<Assignment>().ok());
            let who = holder.map_or_else(|| "someone".to_string(), |h| format!("customer {}", h.customer));
            Err(Failure(StatusCode::CONFLICT, format!("{addr} is already assigned to {who}")))
        }
    }
}

pub async fn list_ips(State(d): State<Arc<Daemon>>) -> Result<Json<Vec<IpView>>, Failure> {
    let local = local_ours(&d).await;
    let mut out = Vec::new();
    for a in assignments(&d).await? {
        out.push(ip_view(&d, &a, &local).await);
    }
    Ok(Json(out))
}

pub async fn release(State(d): State<Arc<Daemon>>, Json(req): Json<IpRef>) -> Result<Json<IpRef>, Failure> {
    let addr: IpAddr = req.addr.parse().map_err(|_| bad(format!("address: {:?} is not an IP address", req.addr)))?;
    let Some(kv) = d.store.get(&keys::ip(addr)).await.map_err(err)? else {
        return Err(Failure(StatusCode::NOT_FOUND, format!("{addr} is not assigned")));
    };
    let txn = Txn::new().when(Compare::ModRevision(kv.key.clone(), kv.mod_revision)).then(Op::Delete(kv.key));
    match d.store.commit(txn).await.map_err(err)? {
        TxnOutcome::Committed(_) => {
            info!(%addr, "IP released");
            Ok(Json(req))
        }
        TxnOutcome::CompareFailed(_) => Err(Failure(StatusCode::CONFLICT, format!("{addr} changed meanwhile; retry"))),
    }
}

pub async fn move_ip(State(d): State<Arc<Daemon>>, Json(req): Json<IpRef>) -> Result<Json<IpView>, Failure> {
    let addr: IpAddr = req.addr.parse().map_err(|_| bad(format!("address: {:?} is not an IP address", req.addr)))?;
    let to = req.to.clone().ok_or_else(|| bad("to: name the node to move the IP to (--to NAME)"))?;
    if !valid_name(&to) {
        return Err(bad(format!("to: {to:?} is not a node name")));
    }
    let Some(kv) = d.store.get(&keys::ip(addr)).await.map_err(err)? else {
        return Err(Failure(StatusCode::NOT_FOUND, format!("{addr} is not assigned")));
    };
    let mut a: Assignment = kv.decode().map_err(err)?;
    a.pinned_node = Some(to.clone());
    let txn = Txn::new()
        .when(Compare::ModRevision(kv.key.clone(), kv.mod_revision))
        .then(Op::put_json(kv.key, &a).map_err(err)?);
    match d.store.commit(txn).await.map_err(err)? {
        TxnOutcome::Committed(_) => {
            info!(%addr, %to, "IP moved");
            Ok(Json(ip_view(&d, &a, &[]).await))
        }
        TxnOutcome::CompareFailed(_) => Err(Failure(StatusCode::CONFLICT, format!("{addr} changed meanwhile; retry"))),
    }
}

/// Keeps this node's interface holding exactly the IPs it owns.
pub(crate) async fn follow(d: Arc<Daemon>) -> anyhow::Result<()> {
    let d = &d;
    let iface = d.config.ip_interface().to_string();
    let addrs = netif::Addresses::connect(&iface)?;
    let snap = d.store.snapshot(keys::IPS).await?;
    let mut watch = d.store.watch(keys::IPS, snap.revision).await?;
    let mut mirror = Mirror::from_snapshot(snap);
    loop {
        apply(d, &addrs, &iface, &mirror).await?;
        let Some(batch) = watch.recv().await else { anyhow::bail!("the store's watch ended") };
        mirror.apply(&batch);
        while let Ok(more) = watch.try_recv() {
            mirror.apply(&more);
        }
    }
}

async fn apply(d: &Arc<Daemon>, addrs: &netif::Addresses, iface: &str, mirror: &Mirror) -> anyhow::Result<()> {
    let wanted: BTreeMap<IpAddr, Assignment> = mirror
        .entries
        .values()
        .filter_map(|kv| kv.decode::<Assignment>().ok())
        .filter(|a| owner(d, a) == d.config.node_name)
        .map(|a| (a.addr, a))
        .collect();
    let present = addrs.list().await?;
    for a in present.iter().filter(|a| a.ours && !wanted.contains_key(&a.addr)) {
        if addrs.remove_ours(a.addr).await? {
            info!(addr = %a.addr, %iface, "customer IP withdrawn");
        }
    }
    for addr in wanted.keys() {
        if present.iter().any(|p| p.addr == *addr && !p.ours) {
            warn!(%addr, %iface, "customer IP is also a host address; leaving it to the host");
            continue;
        }
        if addrs.add(*addr).await? {
            info!(%addr, %iface, "customer IP added");
            let d = d.clone();
            let (addr, iface) = (*addr, iface.to_string());
            tokio::spawn(async move {
                if let Err(e) = announce_ip(&d, &iface, addr).await {
                    warn!(%addr, error = format!("{e:#}"), "announcement failed");
                }
            });
        }
    }
    Ok(())
}

async fn announce_ip(d: &Daemon, iface: &str, addr: IpAddr) -> anyhow::Result<()> {
    let mac = netif::mac_of(iface)?;
    let frame = match addr {
        IpAddr::V4(a) => announce::gratuitous_arp(mac, a),
        IpAddr::V6(a) => announce::unsolicited_na(mac, a),
    };
    let interval = Duration::from_millis(u64::from(d.config.ip.announce_interval_ms));
    netif::announce(iface, vec![frame], d.config.ip.announce_count, interval).await
}

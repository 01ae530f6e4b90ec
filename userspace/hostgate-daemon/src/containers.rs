//! The container registry (`containers/<name>`) and the anti-spoofing
//! tables it drives: each registered container's veth may send only from
//! its addresses and MAC.

use std::{net::IpAddr, sync::Arc};

use axum::{extract::State, http::StatusCode, Json};
use hostgate_api::{ContainerRef, ContainerView};
use hostgate_dataplane::guard::GuardSpec;
use hostgate_ipam::model::{keys, parse_mac, Container};
use hostgate_store::{Compare, Mirror, Op, Txn, TxnOutcome};
use tracing::{info, warn};

use crate::{api::Failure, Daemon};

fn err(e: impl Into<anyhow::Error>) -> Failure {
    Failure::from(e.into())
}

pub async fn add(State(d): State<Arc<Daemon>>, Json(req): Json<ContainerView>) -> Result<Json<ContainerView>, Failure> {
    let mut ips = Vec::new();
    for ip in &req.ips {
        ips.push(
            ip.parse::<IpAddr>()
                .map_err(|_| Failure(StatusCode::BAD_REQUEST, format!("ip: {ip:?} is not an IP address")))?,
        );
    }
    let created = crate::now();
    let c = Container {
        name: req.name.clone(),
        customer: req.customer.clone(),
        iface: req.iface.clone(),
        ips,
        mac: req.mac.clone(),
        snat: req.snat.clone(),
        created,
        node: Some(d.config.node_name.clone()),
    };
    c.validate().map_err(|e| Failure(StatusCode::BAD_REQUEST, e.to_string()))?;
    let txn = Txn::new()
        .when(Compare::Present(keys::customer(&c.customer)))
        .when(Compare::Absent(keys::container(&c.name)))
        .then(Op::put_json(keys::container(&c.name), &c).map_err(err)?);
    match d.store.commit(txn).await.map_err(err)? {
        TxnOutcome::Committed(_) => {
            info!(container = %c.name, customer = %c.customer, iface = %c.iface, "container registered");
            Ok(Json(req))
        }
        TxnOutcome::CompareFailed(0) => {
            Err(Failure(StatusCode::NOT_FOUND, format!("customer {} does not exist", c.customer)))
        }
        TxnOutcome::CompareFailed(_) => {
            Err(Failure(StatusCode::CONFLICT, format!("container {} already exists", c.name)))
        }
    }
}

pub async fn list(State(d): State<Arc<Daemon>>) -> Result<Json<Vec<ContainerView>>, Failure> {
    let snap = d.store.snapshot(keys::CONTAINERS).await.map_err(err)?;
    let guard = d.dataplane();
    Ok(Json(
        snap.kvs
            .iter()
            .filter_map(|kv| kv.decode::<Container>().ok())
            .map(|c| {
                // Drops are counted on the node the container sits behind.
                let local = c.on_node(&d.config.node_name);
                let drops = match (guard.as_ref(), hostgate_dataplane::sys::ifindex(&c.iface)) {
                    (Some(dp), Some(ifindex)) if local => dp.guard_drops(ifindex).unwrap_or(0),
                    _ => 0,
                };
                ContainerView {
                    name: c.name,
                    customer: c.customer,
                    iface: c.iface,
                    ips: c.ips.iter().map(ToString::to_string).collect(),
                    mac: c.mac,
                    snat: c.snat,
                    spoof_drops: drops,
                }
            })
            .collect(),
    ))
}

pub async fn remove(
    State(d): State<Arc<Daemon>>,
    Json(req): Json<ContainerRef>,
) -> Result<Json<ContainerRef>, Failure> {
    let Some(kv) = d.store.get(&keys::container(&req.name)).await.map_err(err)? else {
        return Err(Failure(StatusCode::NOT_FOUND, format!("container {} does not exist", req.name)));
    };
    d.store
        .commit(Txn::new().when(Compare::ModRevision(kv.key.clone(), kv.mod_revision)).then(Op::Delete(kv.key)))
        .await
        .map_err(err)?;
    Ok(Json(req))
}

/// Keeps the anti-spoofing tables equal to the registry and to the DHCP
/// leases of the containers' ports.
pub(crate) async fn follow(d: Arc<Daemon>) -> anyhow::Result<()> {
    let d = &d;
    let snap = d.store.snapshot(keys::CONTAINERS).await?;
    let mut watch = d.store.watch(keys::CONTAINERS, snap.revision).await?;
    let mut mirror = Mirror::from_snapshot(snap);
    let mut leased = d.dhcp_sources.subscribe();
    let mut registry_changed = true;
    let mut last_guards: Option<Vec<GuardSpec>> = None;
    loop {
        // In a cluster the registry holds every node's containers: this node
        // guards and translates its own.
        let me = d.config.node_name.as_str();
        let containers: Vec<Container> =
            mirror.entries.values().filter_map(|kv| kv.decode::<Container>().ok()).filter(|c| c.on_node(me)).collect();
        let guards = guard_specs(&containers, &leased.borrow_and_update());
        // Leases churn; the tables change only when a container's sources do.
        if last_guards.as_ref() != Some(&guards) {
            let (dd, specs) = (d.clone(), guards.clone());
            tokio::task::spawn_blocking(move || match dd.dataplane().as_mut() {
                Some(dp) => dp.set_guards(&specs).map_err(anyhow::Error::from),
                None => Ok(()),
            })
            .await??;
            last_guards = Some(guards);
        }
        if registry_changed {
            if let Err(e) = tokio::task::spawn_blocking(move || crate::snat::apply(&containers)).await? {
                warn!(error = format!("{e:#}"), "source NAT not applied");
            }
        }
        tokio::select! {
            batch = watch.recv() => {
                let Some(batch) = batch else { anyhow::bail!("the store's watch ended") };
                mirror.apply(&batch);
                registry_changed = true;
            }
            changed = leased.changed() => {
                changed?;
                registry_changed = false;
            }
        }
    }
}

/// What each container's veth may send from: its registered addresses,
/// the ones leased on its port by DHCP, and its EUI-64 SLAAC address in
/// the prefix advertised on its port (known only with its MAC).
fn guard_specs(containers: &[Container], sources: &crate::dhcp::PortSources) -> Vec<GuardSpec> {
    let mut guards = Vec::new();
    for c in containers {
        let Some(ifindex) = hostgate_dataplane::sys::ifindex(&c.iface) else {
            warn!(container = %c.name, iface = %c.iface, "container interface not found; not guarded");
            continue;
        };
        let mac = c.mac.as_deref().and_then(parse_mac);
        let mut addrs = c.ips.clone();
        addrs.extend(sources.leased.get(&c.iface).into_iter().flatten().map(|a| IpAddr::V4(*a)));
        if let (Some(prefix), Some(mac)) = (sources.slaac.get(&c.iface), mac) {
            addrs.push(IpAddr::V6(hostgate_dhcp::ra::slaac_address(*prefix, mac)));
        }
        guards.push(GuardSpec { ifindex, mac, addrs });
    }
    guards
}

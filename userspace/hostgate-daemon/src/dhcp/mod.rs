//! The DHCP server: networks declared through the API (`dhcp/networks/`),
//! served on their container-facing interfaces, leases kept in the store
//! (`dhcp/leases/<network>/<addr>`). A lease is committed to the store
//! (fsynced by the embedded store, replicated by etcd) before its ACK
//! leaves. The protocol logic is hostgate-dhcp's; this module moves packets
//! and state.

mod commit;
mod serve;

use std::{net::Ipv4Addr, sync::Arc};

use axum::{extract::State, http::StatusCode, Json};
use hostgate_api::{LeaseView, NetworkRef, NetworkView, ReservationView};
use hostgate_dhcp::{
    identity::{Reservation, ReservedFor},
    leases::{Lease, State as LeaseState},
    network::{keys, Network, Pool},
};
use hostgate_ipam::model::keys as ipam_keys;
use hostgate_store::{Compare, Op, Txn, TxnOutcome};
pub(crate) use serve::{follow, PortSources};
use tracing::info;

use crate::{api::Failure, Daemon};

fn bad(m: impl Into<String>) -> Failure {
    Failure(StatusCode::BAD_REQUEST, m.into())
}

fn store_err(e: hostgate_store::StoreError) -> Failure {
    Failure::from(anyhow::Error::from(e))
}

fn parse_network(d: &Daemon, v: &NetworkView) -> Result<Network, Failure> {
    let (subnet, len) = v
        .subnet
        .split_once('/')
        .and_then(|(a, l)| Some((a.parse::<Ipv4Addr>().ok()?, l.parse::<u8>().ok()?)))
        .ok_or_else(|| bad(format!("subnet: {:?} is not ADDRESS/LENGTH (e.g. 198.51.100.0/24)", v.subnet)))?;
    let gateway: Ipv4Addr =
        v.gateway.parse().map_err(|_| bad(format!("gateway: {:?} is not an IPv4 address", v.gateway)))?;
    let mut pools = Vec::new();
    for p in &v.pools {
        let pool = p
            .split_once('-')
            .and_then(|(a, b)| Some(Pool { first: a.trim().parse().ok()?, last: b.trim().parse().ok()? }))
            .ok_or_else(|| bad(format!("pool: {p:?} is not FIRST-LAST (e.g. 198.51.100.100-198.51.100.199)")))?;
        pools.push(pool);
    }
    let mut dns = Vec::new();
    for s in &v.dns {
        dns.push(s.parse().map_err(|_| bad(format!("dns: {s:?} is not an IPv4 address")))?);
    }
    let (ipv6_prefix, dns6) = crate::ra::parse_fields(v)?;
    for i in &v.interfaces {
        if hostgate_dataplane::sys::ifindex(i).is_none() {
            return Err(bad(format!("iface: {i:?} does not exist on this node")));
        }
    }
    let n = Network {
        name: v.name.clone(),
        customer: v.customer.clone(),
        subnet,
        prefix_len: len,
        gateway,
        pools,
        lease_secs: v.lease_secs.unwrap_or(3600),
        max_new_per_mac: v.max_new_per_mac.unwrap_or(10),
        max_new_per_port: v.max_new_per_port.unwrap_or(60),
        domain: v.domain.clone(),
        search: v.search.clone(),
        mtu: v.mtu,
        routed: v.routed,
        interfaces: v.interfaces.clone(),
        node: Some(d.config.node_name.clone()),
        dns,
        ipv6_prefix,
        dns6,
    };
    n.validate().map_err(|e| bad(e.to_string()))?;
    Ok(n)
}

fn view(n: &Network, leases: usize) -> NetworkView {
    let mut v = NetworkView {
        name: n.name.clone(),
        customer: n.customer.clone(),
        subnet: format!("{}/{}", n.subnet, n.prefix_len),
        gateway: n.gateway.to_string(),
        pools: n.pools.iter().map(|p| format!("{}-{}", p.first, p.last)).collect(),
        lease_secs: Some(n.lease_secs),
        max_new_per_mac: Some(n.max_new_per_mac),
        max_new_per_port: Some(n.max_new_per_port),
        domain: n.domain.clone(),
        search: n.search.clone(),
        mtu: n.mtu,
        routed: n.routed,
        interfaces: n.interfaces.clone(),
        dns: n.dns.iter().map(ToString::to_string).collect(),
        leases,
        ..NetworkView::default()
    };
    crate::ra::fill_view(n, &mut v);
    v
}

pub async fn add_network(
    State(d): State<Arc<Daemon>>,
    Json(req): Json<NetworkView>,
) -> Result<Json<NetworkView>, Failure> {
    let n = parse_network(&d, &req)?;
    crate::ra::refuse_taken_prefix(&d, &n).await?;
    let txn = Txn::new()
        .when(Compare::Present(ipam_keys::customer(&n.customer)))
        .when(Compare::Absent(keys::network(&n.name)))
        .then(Op::put_json(keys::network(&n.name), &n).map_err(store_err)?);
    match d.store.commit(txn).await.map_err(store_err)? {
        TxnOutcome::Committed(_) => {
            info!(network = %n.name, customer = %n.customer, "DHCP network added");
            Ok(Json(view(&n, 0)))
        }
        TxnOutcome::CompareFailed(0) => Err(Failure(
            StatusCode::NOT_FOUND,
            format!("customer: {} does not exist (hostgate customer add)", n.customer),
        )),
        TxnOutcome::CompareFailed(_) => {
            Err(Failure(StatusCode::CONFLICT, format!("network {} already exists", n.name)))
        }
    }
}

pub async fn list_networks(State(d): State<Arc<Daemon>>) -> Result<Json<Vec<NetworkView>>, Failure> {
    let nets = d.store.snapshot(keys::NETWORKS).await.map_err(store_err)?;
    let leases = d.store.snapshot(keys::LEASES).await.map_err(store_err)?;
    Ok(Json(
        nets.kvs
            .iter()
            .filter_map(|kv| kv.decode::<Network>().ok())
            .map(|n| {
                let prefix = keys::leases_of(&n.name);
                let count = leases
                    .kvs
                    .iter()
                    .filter(|kv| kv.key.starts_with(&prefix))
                    .filter(|kv| kv.decode::<Lease>().is_ok_and(|l| l.state == LeaseState::Bound))
                    .count();
                view(&n, count)
            })
            .collect(),
    ))
}

pub async fn remove_network(
    State(d): State<Arc<Daemon>>,
    Json(req): Json<NetworkRef>,
) -> Result<Json<NetworkRef>, Failure> {
    if d.store.get(&keys::network(&req.name)).await.map_err(store_err)?.is_none() {
        return Err(Failure(StatusCode::NOT_FOUND, format!("network {} does not exist", req.name)));
    }
    let txn = Txn::new().then(Op::Delete(keys::network(&req.name))).then(Op::DeletePrefix(keys::leases_of(&req.name)));
    d.store.commit(txn).await.map_err(store_err)?;
    Ok(Json(req))
}

pub async fn list_leases(State(d): State<Arc<Daemon>>) -> Result<Json<Vec<LeaseView>>, Failure> {
    let snap = d.store.snapshot(keys::LEASES).await.map_err(store_err)?;
    Ok(Json(
        snap.kvs
            .iter()
            .filter_map(|kv| {
                let network = kv.key.strip_prefix(keys::LEASES)?.split('/').next()?.to_string();
                let l: Lease = kv.decode().ok()?;
                let client_id = match &l.client {
                    Some(hostgate_dhcp::identity::ClientKey::ClientId(id)) => Some(hex(id)),
                    _ => None,
                };
                let state = serve::state_name(l.state);
                Some(LeaseView {
                    network,
                    addr: l.addr.to_string(),
                    mac: hex(&l.mac),
                    client_id,
                    hostname: l.hostname,
                    state: state.into(),
                    expires: l.expires,
                    port: l.port,
                })
            })
            .collect(),
    ))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

fn unhex(field: &str, s: &str) -> Result<Vec<u8>, Failure> {
    s.split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<Vec<u8>, _>>()
        .ok()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| bad(format!("{field}: {s:?} is not hex bytes separated by ':'")))
}

/// The reservation key of a request: exactly one identity.
fn reserved_for(v: &ReservationView) -> Result<ReservedFor, Failure> {
    match (&v.mac, &v.client_id, &v.circuit_id) {
        (Some(m), None, None) => {
            let bytes = unhex("mac", m)?;
            let mac = <[u8; 6]>::try_from(bytes.as_slice()).map_err(|_| bad(format!("mac: {m:?} is not 6 bytes")))?;
            Ok(ReservedFor::Mac(mac))
        }
        (None, Some(c), None) => Ok(ReservedFor::ClientId(unhex("client-id", c)?)),
        (None, None, Some(c)) if !c.is_empty() => Ok(ReservedFor::CircuitId(c.as_bytes().to_vec())),
        _ => Err(bad("give exactly one of --mac, --client-id, --circuit-id")),
    }
}

fn reservation_key(network: &str, r: &ReservedFor) -> String {
    match r {
        ReservedFor::Mac(m) => keys::reservation(network, "mac", &hex(m).replace(':', "")),
        ReservedFor::ClientId(c) => keys::reservation(network, "cid", &hex(c).replace(':', "")),
        ReservedFor::CircuitId(c) => keys::reservation(network, "circuit", &hex(c).replace(':', "")),
    }
}

fn reservation_view(r: &Reservation) -> ReservationView {
    let mut v = ReservationView {
        network: r.network.clone(),
        addr: r.addr.to_string(),
        hostname: r.hostname.clone(),
        ..ReservationView::default()
    };
    match &r.reserved_for {
        ReservedFor::Mac(m) => v.mac = Some(hex(m)),
        ReservedFor::ClientId(c) => v.client_id = Some(hex(c)),
        ReservedFor::CircuitId(c) => v.circuit_id = Some(String::from_utf8_lossy(c).into_owned()),
    }
    v
}

pub async fn add_reservation(
    State(d): State<Arc<Daemon>>,
    Json(req): Json<ReservationView>,
) -> Result<Json<ReservationView>, Failure> {
    let reserved_for = reserved_for(&req)?;
    let addr: Ipv4Addr = req.addr.parse().map_err(|_| bad(format!("ip: {:?} is not an IPv4 address", req.addr)))?;
    let Some(kv) = d.store.get(&keys::network(&req.network)).await.map_err(store_err)? else {
        return Err(Failure(StatusCode::NOT_FOUND, format!("network: {} does not exist", req.network)));
    };
    let network: Network = kv.decode().map_err(store_err)?;
    if !network.contains(addr) || addr == network.gateway {
        return Err(bad(format!("ip: {addr} is not a client address of {}/{}", network.subnet, network.prefix_len)));
    }
    let taken = d.store.snapshot(&format!("{}{}/", keys::RESERVATIONS, req.network)).await.map_err(store_err)?;
    if taken.kvs.iter().filter_map(|kv| kv.decode::<Reservation>().ok()).any(|r| r.addr == addr) {
        return Err(Failure(StatusCode::CONFLICT, format!("ip: {addr} is reserved for another client already")));
    }
    let r = Reservation { network: req.network.clone(), reserved_for, addr, hostname: req.hostname.clone() };
    let key = reservation_key(&r.network, &r.reserved_for);
    let txn = Txn::new()
        .when(Compare::ModRevision(kv.key.clone(), kv.mod_revision))
        .when(Compare::Absent(key.clone()))
        .then(Op::put_json(key, &r).map_err(store_err)?);
    match d.store.commit(txn).await.map_err(store_err)? {
        TxnOutcome::Committed(_) => {
            info!(network = %r.network, addr = %r.addr, "DHCP reservation added");
            Ok(Json(reservation_view(&r)))
        }
        TxnOutcome::CompareFailed(_) => {
            Err(Failure(StatusCode::CONFLICT, "this client has a reservation in this network already".into()))
        }
    }
}

pub async fn list_reservations(State(d): State<Arc<Daemon>>) -> Result<Json<Vec<ReservationView>>, Failure> {
    let snap = d.store.snapshot(keys::RESERVATIONS).await.map_err(store_err)?;
    Ok(Json(snap.kvs.iter().filter_map(|kv| kv.decode::<Reservation>().ok()).map(|r| reservation_view(&r)).collect()))
}

pub async fn remove_reservation(
    State(d): State<Arc<Daemon>>,
    Json(req): Json<ReservationView>,
) -> Result<Json<ReservationView>, Failure> {
    let key = reservation_key(&req.network, &reserved_for(&req)?);
    if d.store.get(&key).await.map_err(store_err)?.is_none() {
        return Err(Failure(StatusCode::NOT_FOUND, "no such reservation".into()));
    }
    d.store.commit(Txn::new().then(Op::Delete(key))).await.map_err(store_err)?;
    Ok(Json(req))
}

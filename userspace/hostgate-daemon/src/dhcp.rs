//! The DHCP server: networks declared through the API (`dhcp/networks/`),
//! served on their container-facing interfaces, leases kept in the store
//! (`dhcp/leases/<network>/<addr>`). A lease is committed to the store
//! (fsynced by the embedded store, replicated by etcd) before its ACK
//! leaves. The protocol logic is hostgate-dhcp's; this module moves packets
//! and state.

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    os::fd::{FromRawFd, OwnedFd},
    sync::Arc,
};

use axum::{extract::State, http::StatusCode, Json};
use hostgate_api::{LeaseView, NetworkRef, NetworkView, ReservationView};
use hostgate_dhcp::{
    identity::{Client, Reservation, ReservedFor},
    leases::{Answer, Lease, LeaseTable, Limits, State as LeaseState},
    network::{keys, Network, Pool},
    wire::{self, Reply, ReplyOptions},
};
use hostgate_ipam::model::keys as ipam_keys;
use hostgate_store::{Compare, Mirror, Op, Txn, TxnOutcome};
use tokio::{
    net::UdpSocket,
    sync::{Mutex, RwLock},
    task::JoinHandle,
};
use tracing::{debug, info, warn};

use crate::{api::Failure, now, Daemon};

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
    let (ipv6_prefix, dns6, search) = crate::ra::parse_fields(v)?;
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
        interfaces: v.interfaces.clone(),
        node: Some(d.config.node_name.clone()),
        dns,
        ipv6_prefix,
        dns6,
        search,
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
                let state = match l.state {
                    LeaseState::Offered => "offered",
                    LeaseState::Bound => "bound",
                    LeaseState::Declined => "declined",
                };
                Some(LeaseView {
                    network,
                    addr: l.addr.to_string(),
                    mac: hex(&l.mac),
                    client_id,
                    hostname: l.hostname,
                    state: state.into(),
                    expires: l.expires,
                })
            })
            .collect(),
    ))
}

fn hex(bytes: &[u8]) -> String {
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

/// One network served here: the tasks on its interfaces (which share its
/// lease table).
struct Served {
    network: Network,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Served {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Serves the networks declared for this node, following the store.
/// Reservations take effect at once: the follower swaps the set the
/// serving tasks read.
pub(crate) async fn follow(d: Arc<Daemon>) -> anyhow::Result<()> {
    let snap = d.store.snapshot(keys::DHCP).await?;
    let mut watch = d.store.watch(keys::DHCP, snap.revision).await?;
    let mut mirror = Mirror::from_snapshot(snap);
    let mut served: HashMap<String, Served> = HashMap::new();
    let mut advertisers = crate::ra::Advertisers::default();
    let reservations: Arc<RwLock<Vec<Reservation>>> = Arc::default();
    loop {
        *reservations.write().await = mirror
            .entries
            .values()
            .filter(|kv| kv.key.starts_with(keys::RESERVATIONS))
            .filter_map(|kv| kv.decode().ok())
            .collect();
        let wanted: HashMap<String, Network> = mirror
            .entries
            .values()
            .filter(|kv| kv.key.starts_with(keys::NETWORKS))
            .filter_map(|kv| kv.decode::<Network>().ok())
            .filter(|n| n.node.as_deref().is_none_or(|node| node == d.config.node_name))
            .map(|n| (n.name.clone(), n))
            .collect();
        advertisers.reconcile(&wanted).await;
        served.retain(|name, s| wanted.get(name) == Some(&s.network));
        for (name, network) in wanted {
            if served.contains_key(&name) {
                continue;
            }
            let stored = d.store.snapshot(&keys::leases_of(&name)).await?;
            let leases: Vec<Lease> = stored.kvs.iter().filter_map(|kv| kv.decode().ok()).collect();
            let (table, refused) = LeaseTable::restore(network.clone(), Limits::default(), leases);
            for l in refused {
                warn!(network = %name, addr = %l.addr, "stored lease conflicts with another; dropped");
            }
            let table = Arc::new(Mutex::new(table));
            let mut tasks = Vec::new();
            for iface in &network.interfaces {
                match bind(iface) {
                    Ok(socket) => {
                        info!(network = %name, %iface, "DHCP serving");
                        let server = Server {
                            d: d.clone(),
                            network: network.clone(),
                            table: table.clone(),
                            reservations: reservations.clone(),
                        };
                        tasks.push(tokio::spawn(server.serve(socket)));
                    }
                    Err(e) => warn!(network = %name, %iface, error = %e, "cannot serve DHCP here"),
                }
            }
            served.insert(name, Served { network, tasks });
        }
        // Leases change all the time; only networks and reservations matter here.
        loop {
            let Some(batch) = watch.recv().await else { anyhow::bail!("the store's watch ended") };
            let relevant = batch.events.iter().any(|e| !e.key().starts_with(keys::LEASES));
            mirror.apply(&batch);
            if relevant {
                break;
            }
        }
    }
}

/// A UDP socket on port 67 of `iface` only (SO_BINDTODEVICE before bind,
/// so each interface has its own), allowed to broadcast.
fn bind(iface: &str) -> std::io::Result<UdpSocket> {
    // SAFETY: plain socket(2)/setsockopt(2)/bind(2) on a descriptor we own
    // from its creation; every return is checked.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let owned = OwnedFd::from_raw_fd(fd);
        let one: libc::c_int = 1;
        let set = |opt, val: *const libc::c_void, len| {
            if libc::setsockopt(fd, libc::SOL_SOCKET, opt, val, len) < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(())
            }
        };
        let size = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        set(libc::SO_REUSEADDR, (&one as *const libc::c_int).cast(), size)?;
        set(libc::SO_BROADCAST, (&one as *const libc::c_int).cast(), size)?;
        set(libc::SO_BINDTODEVICE, iface.as_ptr().cast(), iface.len() as libc::socklen_t)?;
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 67u16.to_be(),
            sin_addr: libc::in_addr { s_addr: 0 },
            sin_zero: [0; 8],
        };
        if libc::bind(fd, (&addr as *const libc::sockaddr_in).cast(), std::mem::size_of::<libc::sockaddr_in>() as u32)
            < 0
        {
            return Err(std::io::Error::last_os_error());
        }
        UdpSocket::from_std(std::net::UdpSocket::from(owned))
    }
}

/// What one interface's serving task holds.
struct Server {
    d: Arc<Daemon>,
    network: Network,
    table: Arc<Mutex<LeaseTable>>,
    reservations: Arc<RwLock<Vec<Reservation>>>,
}

impl Server {
    async fn serve(self, socket: UdpSocket) {
        let mut buf = vec![0u8; 2048];
        loop {
            let (n, from) = match socket.recv_from(&mut buf).await {
                Ok(r) => r,
                Err(e) => {
                    warn!(network = %self.network.name, error = %e, "DHCP receive failed");
                    continue;
                }
            };
            match self.handle(&buf[..n]).await {
                Ok(Some((reply, to))) => {
                    if let Err(e) = socket.send_to(&reply, to).await {
                        warn!(network = %self.network.name, %to, error = %e, "DHCP reply not sent");
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    self.count(|c| c.drops += 1);
                    debug!(network = %self.network.name, %from, error = %e, "DHCP packet dropped");
                }
            }
        }
    }

    fn count(&self, f: impl FnOnce(&mut hostgate_api::DhcpCounters)) {
        let mut all = self.d.dhcp_counters.lock().unwrap_or_else(|p| p.into_inner());
        let c = all
            .entry(self.network.name.clone())
            .or_insert_with(|| hostgate_api::DhcpCounters { network: self.network.name.clone(), ..Default::default() });
        f(c);
    }

    /// One packet in; the reply and where it goes, if any.
    async fn handle(&self, packet: &[u8]) -> anyhow::Result<Option<(Vec<u8>, SocketAddr)>> {
        use dhcproto::v4::MessageType as M;
        let (d, network) = (&self.d, &self.network);
        let req = wire::parse(packet)?;
        let mut client = Client::new(req.chaddr, req.client_id.as_deref());
        client.circuit_id = req.circuit_id.clone();
        client.hostname = req.hostname.clone();
        let now = now();
        let options = ReplyOptions {
            server_id: network.gateway,
            prefix_len: network.prefix_len,
            router: network.gateway,
            dns: if network.dns.is_empty() { vec![network.gateway] } else { network.dns.clone() },
            domain: None,
            mtu: None,
            lease_secs: network.lease_secs,
        };
        if req.server_id.is_some_and(|s| s != network.gateway) {
            // The client chose another server's offer.
            return Ok(None);
        }
        let reservations = self.reservations.read().await.clone();
        let mut table = self.table.lock().await;
        let answer = match req.kind {
            M::Discover => table.discover(now, &client, req.requested, &reservations),
            M::Request => {
                let ciaddr = req.msg.ciaddr();
                let Some(addr) = req.requested.or((!ciaddr.is_unspecified()).then_some(ciaddr)) else {
                    return Ok(None);
                };
                table.request(now, &client, addr, &reservations)
            }
            M::Release => {
                self.count(|c| c.releases += 1);
                if let Some(l) = table.release(&client, req.msg.ciaddr()) {
                    d.store.commit(Txn::new().then(Op::Delete(keys::lease(&network.name, l.addr)))).await?;
                }
                return Ok(None);
            }
            M::Decline => {
                self.count(|c| c.declines += 1);
                if let Some(addr) = req.requested {
                    if table.decline(now, &client, addr) {
                        if let Some(l) = table.leases().find(|l| l.addr == addr) {
                            d.store.commit(Txn::new().then(Op::put_json(keys::lease(&network.name, addr), l)?)).await?;
                        }
                    }
                }
                return Ok(None);
            }
            _ => return Ok(None),
        };
        let reply = match &answer {
            Answer::Offer(l) => {
                self.count(|c| c.offers += 1);
                wire::reply(&req, Reply::Offer(l), &options)?
            }
            Answer::Ack(l) => {
                // Durable before it leaves; a lease the client moved away from goes.
                let mut txn = Txn::new().then(Op::put_json(keys::lease(&network.name, l.addr), l)?);
                if let Some(old) = table.take_vacated(&client.key).filter(|a| *a != l.addr) {
                    txn = txn.then(Op::Delete(keys::lease(&network.name, old)));
                }
                d.store.commit(txn).await?;
                self.count(|c| c.acks += 1);
                wire::reply(&req, Reply::Ack(l), &options)?
            }
            Answer::Nak(why) => {
                self.count(|c| c.naks += 1);
                debug!(network = %network.name, why, "NAK");
                wire::reply(&req, Reply::Nak, &options)?
            }
            Answer::Ignore(why) => {
                self.count(|c| c.drops += 1);
                debug!(network = %network.name, why, "not answered");
                return Ok(None);
            }
        };
        Ok(Some((reply, destination(&req))))
    }
}

/// Where a reply goes: the relay, the client's address, or a broadcast on
/// the interface for a client without an address (or that asked for one).
fn destination(req: &wire::Request) -> SocketAddr {
    let giaddr = req.msg.giaddr();
    let ciaddr = req.msg.ciaddr();
    let to = if !giaddr.is_unspecified() {
        SocketAddrV4::new(giaddr, 67)
    } else if !ciaddr.is_unspecified() && !req.msg.flags().broadcast() {
        SocketAddrV4::new(ciaddr, 68)
    } else {
        SocketAddrV4::new(Ipv4Addr::BROADCAST, 68)
    };
    SocketAddr::V4(to)
}

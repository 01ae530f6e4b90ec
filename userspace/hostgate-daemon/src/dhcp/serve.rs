//! Serving: the networks declared for this node, one UDP socket per
//! interface, packets to answers. Direct clients are served by the network
//! of the interface they ask on; relayed requests (giaddr set), accepted on
//! the configured relay interfaces only, by the network that contains
//! giaddr. Offers and NAKs leave at once; ACKs and other lease changes go
//! through the group committer first.

use std::{
    collections::{HashMap, HashSet},
    net::{Ipv4Addr, SocketAddr},
    os::fd::{FromRawFd, OwnedFd},
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use hostgate_dhcp::{
    identity::{Reservation, Reservations},
    leases::{Lease, LeaseTable, State as LeaseState},
    network::{keys, Network},
    server::{self, Decision},
    wire,
};
use hostgate_ipam::model::{keys as ipam_keys, parse_mac, Container};
use hostgate_store::{Event, Mirror, Op, WatchBatch};
use tokio::{net::UdpSocket, sync::mpsc, task::JoinHandle};
use tracing::{debug, info, warn};

use super::commit::{self, Durable, HeldReply, Queue};
use crate::{now, Daemon};

/// A lease that began or ended, for the state derived from leases: the
/// node's host routes to routed single addresses.
pub(crate) enum LeaseChange {
    Bound(Lease, bool),
    Ended(Lease, bool),
}

type Derived = mpsc::UnboundedSender<LeaseChange>;

/// What container ports may send from, as the DHCP and RA servers know it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortSources {
    /// Bound leases' addresses by the interface they were asked from.
    pub leased: std::collections::BTreeMap<String, std::collections::BTreeSet<Ipv4Addr>>,
    /// The SLAAC prefix advertised on each interface: a registered
    /// container may send from its EUI-64 address in it.
    pub slaac: std::collections::BTreeMap<String, std::net::Ipv6Addr>,
}

/// Keeps derived state equal to the leases: each bound lease's address is
/// an allowed source of its port (published to the anti-spoofing
/// follower), and a routed network's is a /32 route out of that port.
async fn keep_derived(d: Arc<Daemon>, mut rx: mpsc::UnboundedReceiver<LeaseChange>) {
    let routes = crate::netif::HostRoutes::connect()
        .inspect_err(|e| warn!(error = format!("{e:#}"), "no rtnetlink: routed DHCP addresses get no routes"))
        .ok();
    while let Some(first) = rx.recv().await {
        // Take every change waiting, and publish the sources once for all.
        let mut changes = vec![first];
        while let Ok(c) = rx.try_recv() {
            changes.push(c);
        }
        let mut leased = d.dhcp_sources.borrow().leased.clone();
        for change in changes {
            let (lease, routed, bound) = match change {
                LeaseChange::Bound(l, routed) => (l, routed, true),
                LeaseChange::Ended(l, routed) => (l, routed, false),
            };
            let Some(iface) = lease.port.as_deref().and_then(|p| p.strip_prefix("iface:")) else { continue };
            let set = leased.entry(iface.to_string()).or_default();
            match bound {
                true => set.insert(lease.addr),
                false => set.remove(&lease.addr),
            };
            if set.is_empty() {
                leased.remove(iface);
            }
            let Some(routes) = routes.as_ref().filter(|_| routed) else { continue };
            let done = match bound {
                true => routes.set(lease.addr, iface).await,
                false => routes.remove(lease.addr, iface).await,
            };
            if let Err(e) = done {
                warn!(addr = %lease.addr, %iface, error = format!("{e:#}"), "DHCP host route not updated");
            }
        }
        d.dhcp_sources.send_if_modified(|now| {
            let changed = now.leased != leased;
            now.leased = leased;
            changed
        });
    }
}

/// One network served here.
pub(crate) struct NetworkState {
    network: Network,
    table: Mutex<LeaseTable>,
    reservations: RwLock<Arc<Reservations>>,
}

impl NetworkState {
    fn table(&self) -> std::sync::MutexGuard<'_, LeaseTable> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn reservations(&self) -> Arc<Reservations> {
        self.reservations.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// What the packet tasks read, swapped whole when networks change.
#[derive(Default)]
struct Routing {
    by_iface: HashMap<String, Arc<NetworkState>>,
    all: Vec<Arc<NetworkState>>,
}

impl Routing {
    /// The network a relay with address `giaddr` serves.
    fn for_relay(&self, giaddr: Ipv4Addr) -> Option<&Arc<NetworkState>> {
        self.all.iter().find(|n| n.network.contains(giaddr))
    }
}

type SharedRouting = Arc<RwLock<Arc<Routing>>>;

/// Aborts a task when dropped.
struct Task(JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(crate) fn count(d: &Daemon, network: &str, f: impl FnOnce(&mut hostgate_api::DhcpCounters)) {
    let mut all = d.dhcp_counters.lock().unwrap_or_else(|p| p.into_inner());
    // The network's entry exists after its first packet: no allocation.
    if let Some(c) = all.get_mut(network) {
        return f(c);
    }
    let c = all
        .entry(network.to_string())
        .or_insert_with(|| hostgate_api::DhcpCounters { network: network.to_string(), ..Default::default() });
    f(c);
}

/// Serves the networks declared for this node, following the store:
/// networks and reservations apply at once, a deleted container's leases
/// end at once, expired leases leave the store.
pub(crate) async fn follow(d: Arc<Daemon>) -> anyhow::Result<()> {
    let mut networks = Followed::start(&d, keys::NETWORKS).await?;
    let mut reservations = Followed::start(&d, keys::RESERVATIONS).await?;
    let mut containers = Followed::start(&d, ipam_keys::CONTAINERS).await?;
    let (derived, derived_rx) = mpsc::unbounded_channel();
    let _derived = Task(tokio::spawn(keep_derived(d.clone(), derived_rx)));
    let (queue, rx) = mpsc::channel(commit::QUEUE);
    let _committer = Task(tokio::spawn(commit::run(d.clone(), rx, derived.clone())));
    let routing: SharedRouting = Arc::default();
    let mut states: HashMap<String, Arc<NetworkState>> = HashMap::new();
    let mut listeners: HashMap<String, Task> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut networks_changed = true;
    let mut advertisers = crate::ra::Advertisers::new(d.handing_over.clone());
    loop {
        if networks_changed {
            states = serve_networks(&d, &networks.mirror, states, &derived).await?;
            advertisers.reconcile(states.values().map(|s| &s.network)).await;
            publish_slaac_prefixes(&d, &states);
            set_reservations(&states, &reservations.mirror);
            let mut by_iface = HashMap::new();
            for s in states.values() {
                for iface in &s.network.interfaces {
                    by_iface.insert(iface.clone(), s.clone());
                }
            }
            let wanted: HashSet<String> =
                by_iface.keys().cloned().chain(d.config.dhcp.relay_interfaces.iter().cloned()).collect();
            *routing.write().unwrap_or_else(|p| p.into_inner()) =
                Arc::new(Routing { by_iface, all: states.values().cloned().collect() });
            listeners.retain(|iface, _| wanted.contains(iface));
            for iface in wanted {
                if let std::collections::hash_map::Entry::Vacant(slot) = listeners.entry(iface) {
                    if let Some(task) = listen(&d, slot.key(), &routing, &queue) {
                        slot.insert(task);
                    }
                }
            }
        }
        networks_changed = false;
        tokio::select! {
            b = networks.watch.recv() => {
                networks.mirror.apply(&b.ok_or_else(watch_ended)?);
                networks_changed = true;
            }
            b = reservations.watch.recv() => {
                reservations.mirror.apply(&b.ok_or_else(watch_ended)?);
                set_reservations(&states, &reservations.mirror);
            }
            b = containers.watch.recv() => {
                let b = b.ok_or_else(watch_ended)?;
                free_deleted_containers(&states, &containers.mirror, &b, &queue).await;
                containers.mirror.apply(&b);
            }
            _ = tick.tick() => expire(&states, &queue).await,
        }
    }
}

/// Publishes each served interface's SLAAC prefix to the anti-spoofing
/// follower.
fn publish_slaac_prefixes(d: &Daemon, states: &HashMap<String, Arc<NetworkState>>) {
    let slaac: std::collections::BTreeMap<String, std::net::Ipv6Addr> = states
        .values()
        .filter_map(|s| s.network.ipv6_prefix.map(|(prefix, _)| (s, prefix)))
        .flat_map(|(s, prefix)| s.network.interfaces.iter().map(move |iface| (iface.clone(), prefix)))
        .collect();
    d.dhcp_sources.send_if_modified(|now| {
        let changed = now.slaac != slaac;
        now.slaac = slaac;
        changed
    });
}

fn watch_ended() -> anyhow::Error {
    anyhow::anyhow!("the store's watch ended")
}

/// A prefix of the store, mirrored.
struct Followed {
    mirror: Mirror,
    watch: hostgate_store::Watcher,
}

impl Followed {
    async fn start(d: &Daemon, prefix: &str) -> anyhow::Result<Self> {
        let snap = d.store.snapshot(prefix).await?;
        let watch = d.store.watch(prefix, snap.revision).await?;
        Ok(Followed { mirror: Mirror::from_snapshot(snap), watch })
    }
}

/// The states of the networks declared for this node: unchanged ones kept
/// (their tables hold offers in flight), new or changed ones restored from
/// their stored leases.
async fn serve_networks(
    d: &Daemon,
    mirror: &Mirror,
    mut old: HashMap<String, Arc<NetworkState>>,
    derived: &Derived,
) -> anyhow::Result<HashMap<String, Arc<NetworkState>>> {
    let mut states = HashMap::new();
    for network in mirror.entries.values().filter_map(|kv| kv.decode::<Network>().ok()) {
        if network.node.as_deref().is_some_and(|node| node != d.config.node_name) {
            continue;
        }
        let name = network.name.clone();
        if let Some(s) = old.remove(&name).filter(|s| s.network == network) {
            states.insert(name, s);
            continue;
        }
        let stored = d.store.snapshot(&keys::leases_of(&name)).await?;
        let leases: Vec<Lease> = stored.kvs.iter().filter_map(|kv| kv.decode().ok()).collect();
        let (table, refused) = LeaseTable::restore(network.clone(), network.limits(), leases);
        for l in refused {
            warn!(network = %name, addr = %l.addr, "stored lease conflicts with another; dropped");
        }
        info!(network = %name, interfaces = ?network.interfaces, "DHCP network served");
        // Derived state is rebuilt from the stored leases, not left to renewals.
        for l in table.leases().filter(|l| l.state == LeaseState::Bound) {
            let _ = derived.send(LeaseChange::Bound(l.clone(), network.routed));
        }
        let state = NetworkState { network, table: Mutex::new(table), reservations: RwLock::default() };
        states.insert(name, Arc::new(state));
    }
    // Networks no longer served (removed or changed): their derived state goes.
    for s in old.values() {
        for l in s.table().leases().filter(|l| l.state == LeaseState::Bound) {
            let _ = derived.send(LeaseChange::Ended(l.clone(), s.network.routed));
        }
    }
    Ok(states)
}

fn set_reservations(states: &HashMap<String, Arc<NetworkState>>, mirror: &Mirror) {
    let mut by_network: HashMap<&str, Vec<Reservation>> = HashMap::new();
    let all: Vec<Reservation> = mirror.entries.values().filter_map(|kv| kv.decode().ok()).collect();
    for r in &all {
        by_network.entry(r.network.as_str()).or_default().push(r.clone());
    }
    for (name, s) in states {
        let rs = Reservations::new(by_network.remove(name.as_str()).unwrap_or_default());
        *s.reservations.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(rs);
    }
}

/// A container that goes away frees its leases at once (its MAC on the
/// networks of its interface), instead of pinning them until they expire.
async fn free_deleted_containers(
    states: &HashMap<String, Arc<NetworkState>>,
    mirror: &Mirror,
    batch: &WatchBatch,
    queue: &Queue,
) {
    for e in &batch.events {
        let Event::Delete { key, .. } = e else { continue };
        let Some(c) = mirror.entries.get(key).and_then(|kv| kv.decode::<Container>().ok()) else { continue };
        let Some(mac) = c.mac.as_deref().and_then(parse_mac) else { continue };
        for s in states.values().filter(|s| s.network.interfaces.contains(&c.iface)) {
            let gone = s.table().forget_mac(mac);
            if !gone.is_empty() {
                info!(container = %c.name, network = %s.network.name, leases = gone.len(), "container gone; leases freed");
                let _ = queue.send(ended(&s.network, gone)).await;
            }
        }
    }
}

/// Ends expired leases and deletes them from the store.
async fn expire(states: &HashMap<String, Arc<NetworkState>>, queue: &Queue) {
    let now = now();
    for s in states.values() {
        let gone = s.table().expire(now);
        if !gone.is_empty() {
            let _ = queue.send(ended(&s.network, gone)).await;
        }
    }
}

/// Deleting leases that ended, and their derived state once deleted.
fn ended(network: &Network, leases: Vec<Lease>) -> Durable {
    let ops = leases.iter().map(|l| Op::Delete(keys::lease(&network.name, l.addr))).collect();
    let changes = leases.into_iter().map(|l| LeaseChange::Ended(l, network.routed)).collect();
    Durable { ops, reply: None, changes }
}

/// Starts serving `iface`; `None` (logged) if it cannot be bound.
fn listen(d: &Arc<Daemon>, iface: &str, routing: &SharedRouting, queue: &Queue) -> Option<Task> {
    let socket = match bind(iface) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            warn!(%iface, error = %e, "cannot serve DHCP here");
            return None;
        }
    };
    let relays = d.config.dhcp.relay_interfaces.iter().any(|i| i == iface);
    let listener = Listener {
        d: d.clone(),
        iface: iface.to_string(),
        socket,
        relay_server_id: relays.then(|| crate::netif::ipv4_of(iface)).flatten(),
        relays,
        routing: routing.clone(),
        queue: queue.clone(),
    };
    info!(%iface, relays, "DHCP listening");
    Some(Task(tokio::spawn(listener.serve())))
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
        // Bursts of DISCOVERs (a rack booting, perfdhcp) must not overflow
        // the default receive buffer.
        let rcvbuf: libc::c_int = 4 << 20;
        set(libc::SO_RCVBUF, (&rcvbuf as *const libc::c_int).cast(), size)?;
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

/// One interface's serving task.
struct Listener {
    d: Arc<Daemon>,
    iface: String,
    socket: Arc<UdpSocket>,
    /// Whether relayed requests are accepted here.
    relays: bool,
    /// The server identifier for relayed clients: this interface's address,
    /// which they unicast renewals to.
    relay_server_id: Option<Ipv4Addr>,
    routing: SharedRouting,
    queue: Queue,
}

/// What became of a packet.
enum Outcome {
    /// Send this now.
    Now(Vec<u8>, SocketAddr),
    /// Commit these changes, then send the reply if any.
    Durable(Durable),
    Nothing,
}

impl Listener {
    async fn serve(self) {
        let mut buf = vec![0u8; 2048];
        loop {
            let (n, from) = match self.socket.recv_from(&mut buf).await {
                Ok(r) => r,
                Err(e) => {
                    warn!(iface = %self.iface, error = %e, "DHCP receive failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let Some(state) = self.network_for(&buf[..n]) else { continue };
            let name = &state.network.name;
            match self.handle(&state, &buf[..n]) {
                Ok(Outcome::Now(reply, to)) => {
                    if let Err(e) = self.socket.send_to(&reply, to).await {
                        warn!(network = %name, %to, error = %e, "DHCP reply not sent");
                    }
                }
                Ok(Outcome::Durable(durable)) => {
                    if self.queue.try_send(durable).is_err() {
                        count(&self.d, name, |c| c.drops += 1);
                        debug!(network = %name, "commit queue full; request dropped");
                    }
                }
                Ok(Outcome::Nothing) => {}
                Err(e) => {
                    count(&self.d, name, |c| c.drops += 1);
                    debug!(network = %name, %from, error = %e, "DHCP packet dropped");
                }
            }
        }
    }

    /// The network a packet is for: the relay's (by giaddr) if relayed and
    /// relays are accepted here, else this interface's.
    fn network_for(&self, packet: &[u8]) -> Option<Arc<NetworkState>> {
        let routing = self.routing.read().unwrap_or_else(|p| p.into_inner()).clone();
        let giaddr = packet.get(24..28).map(|b| Ipv4Addr::new(b[0], b[1], b[2], b[3]))?;
        if giaddr.is_unspecified() {
            return routing.by_iface.get(&self.iface).cloned();
        }
        if !self.relays {
            return None;
        }
        routing.for_relay(giaddr).cloned()
    }

    /// One packet in; what to do about it.
    fn handle(&self, state: &NetworkState, packet: &[u8]) -> anyhow::Result<Outcome> {
        let network = &state.network;
        let req = wire::parse(packet)?;
        let server_id = match req.msg.giaddr().is_unspecified() {
            true => network.gateway,
            false => self.relay_server_id.unwrap_or(network.gateway),
        };
        let dns = &self.d.config.dns;
        let registers_names = dns.internal_zone.is_some() && !dns.listen.is_empty();
        let arrival = server::Arrival { iface: self.iface.clone(), server_id, registers_names };
        let reservations = state.reservations();
        let decision = server::decide(network, &mut state.table(), &reservations, &req, &arrival, now())?;
        let name = &network.name;
        Ok(match decision {
            Decision::Offer(bytes, to) => {
                count(&self.d, name, |c| c.offers += 1);
                Outcome::Now(bytes, to)
            }
            Decision::Nak(bytes, to) => {
                count(&self.d, name, |c| c.naks += 1);
                Outcome::Now(bytes, to)
            }
            Decision::Inform(bytes, to) => {
                count(&self.d, name, |c| c.informs += 1);
                Outcome::Now(bytes, to)
            }
            Decision::Ack { lease, vacated, reply, to } => {
                // Durable before it leaves; a lease the client moved away from goes.
                let mut ops = vec![Op::put_json(keys::lease(name, lease.addr), &lease)?];
                let mut changes = Vec::new();
                if let Some(old) = vacated {
                    ops.push(Op::Delete(keys::lease(name, old.addr)));
                    changes.push(LeaseChange::Ended(old, network.routed));
                }
                changes.push(LeaseChange::Bound(lease, network.routed));
                let reply = HeldReply { socket: self.socket.clone(), bytes: reply, to, network: name.clone() };
                Outcome::Durable(Durable { ops, reply: Some(reply), changes })
            }
            Decision::Released(gone) => {
                count(&self.d, name, |c| c.releases += 1);
                Outcome::Durable(ended(network, gone.into_iter().collect()))
            }
            Decision::Declined(quarantined) => {
                count(&self.d, name, |c| c.declines += 1);
                let ops = quarantined.map(|l| Op::put_json(keys::lease(name, l.addr), &l)).transpose()?;
                Outcome::Durable(Durable { ops: ops.into_iter().collect(), reply: None, changes: vec![] })
            }
            Decision::Refused(why) => {
                count(&self.d, name, |c| c.drops += 1);
                debug!(network = %name, why, "not answered");
                Outcome::Nothing
            }
            Decision::Ignored => Outcome::Nothing,
        })
    }
}

/// Whether a stored lease is in use (for listings).
pub(crate) fn state_name(s: LeaseState) -> &'static str {
    match s {
        LeaseState::Offered => "offered",
        LeaseState::Bound => "bound",
        LeaseState::Declined => "declined",
    }
}

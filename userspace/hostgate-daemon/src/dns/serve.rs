//! Serving: the zones under `dns/zones/` as one immutable catalog, swapped
//! whole (an `Arc` behind a lock held only to clone it) when the store
//! changes, so packet tasks never wait for an update and an update never
//! waits for them. Per `[dns] listen` address: `workers` UDP sockets
//! bound with SO_REUSEPORT (the kernel spreads clients over them by their
//! address and port), each its own task with its own RRL table; and one
//! TCP listener with a connection cap and an idle timeout. Sockets are
//! bound with IP_FREEBIND: an address that is not (yet) on the node is
//! served as soon as it appears.
//!
//! Secondaries (hostgate-dns's `xfr`): over TCP an AXFR/IXFR of a zone
//! with transfer settings is answered here, not by the responder (which
//! refuses them, and all of them over UDP); a NOTIFY for one of our zones
//! is answered NOERROR. Every serial change of a zone with `notify`
//! targets starts a NOTIFY to each, one task per (zone, target) so that
//! at most one is in flight there, retried on hostgate-dns's schedule
//! and started over when a newer serial comes meanwhile.
//!
//! Pools (health-aware names, hostgate-dns's `pool`): the follower also
//! follows the load balancer's backends and this node's health records
//! (written by the LB's checker, one probe per backend); a zone with
//! pools is rebuilt on every change of either, its pool names answering
//! the healthy backends' addresses or the fallback.
//!
//! The resolver for containers (hostgate-dns's `resolver`, with `[dns]
//! upstreams`): the follower also follows the DHCP networks and the
//! container registry, whose subnets, IPv6 prefixes and addresses (with
//! `resolver_clients`) are who may use it. A recursive query from them
//! for a name outside our zones is answered from the cache, or forwarded
//! in a task of its own (the socket's task goes on with other packets) to
//! the upstreams in order, from a fresh socket on a random port each
//! time (RFC 5452), over TCP if the UDP answer was truncated.

use std::{
    collections::{BTreeMap, HashMap},
    hash::{BuildHasher, Hasher},
    net::SocketAddr,
    os::fd::AsFd,
    str::FromStr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, RwLock,
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use hickory_proto::{
    op::OpCode,
    rr::{DNSClass, Name, RecordType},
};
use hostgate_dns::{
    catalog::Catalog,
    fast::AnswerCache,
    lookup::{key_of, IndexedZone},
    master,
    pool::{self, Fallback, Target},
    resolver::{self, Cache, CacheConfig, Clients},
    respond::{self, Client, Counters, Decoded, Responded, Transport},
    rrl::{Rrl, RrlConfig},
    xfr::{self, Transfer},
    zone::Zone,
};
use hostgate_store::Mirror;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, UdpSocket},
    sync::{watch, Semaphore},
    task::JoinHandle,
};
use tracing::{debug, info, warn};

use super::stored::{self, StoredZone};
use crate::{
    access_log::{self, AccessLogs, LineFormat},
    upgrade::{self, Inherited},
    Daemon,
};

/// The names DNS's sockets are handed over under at an upgrade.
pub(crate) const UDP_SOCKET: &str = "dns-udp";
pub(crate) const TCP_SOCKET: &str = "dns-tcp";

/// A zone with secondaries: its records (the indexed form does not list
/// them in order) and who may have them.
pub(super) struct XfrZone {
    zone: Zone,
    transfer: Transfer,
}

/// The zones with secondaries, by their origin's `key_of`.
type XfrZones = HashMap<Vec<u8>, Arc<XfrZone>>;

/// What the packet tasks share with the follower and `hostgate status`.
#[derive(Default)]
pub struct Shared {
    catalog: RwLock<Arc<Catalog>>,
    /// Moved on after every swap of `catalog`: the UDP workers' answer
    /// caches (hostgate-dns's `fast`) compare it per batch and start
    /// over when it moved.
    generation: AtomicU64,
    xfr: RwLock<Arc<XfrZones>>,
    transfers: AtomicU64,
    notifies_in: AtomicU64,
    notifies_out: AtomicU64,
    notifies_unanswered: AtomicU64,
    /// The store revision the catalog was built at.
    revision: AtomicU64,
    /// One set per socket (`udp ADDR #i`, `tcp ADDR`), kept across
    /// follower restarts so that nothing counted is lost.
    counters: Mutex<BTreeMap<String, Arc<Mutex<Counters>>>>,
    listen: Mutex<Vec<String>>,
    /// Why the server is not serving (binding failed), while it is not.
    error: Mutex<Option<String>>,
    tcp_rejected: AtomicU64,
    tcp_idle_closed: AtomicU64,
    /// The zones whose queries are logged, by their origin's `key_of`.
    logged: RwLock<Arc<std::collections::HashSet<Vec<u8>>>>,
    /// Whether `logged` has any: the packet path looks only at this then.
    any_logged: std::sync::atomic::AtomicBool,
    /// The zones that belong to a customer, by their origin's `key_of`:
    /// their logged queries go to the customer's file.
    customers: RwLock<Arc<HashMap<Vec<u8>, Arc<str>>>>,
    /// The per-customer query logs (`[dns] access_log`), once serving.
    logs: std::sync::OnceLock<(AccessLogs, LineFormat)>,
    /// Who may use the resolver (container networks).
    clients: RwLock<Arc<Clients>>,
    cache: Mutex<Cache>,
    forwarded: AtomicU64,
    cache_hits: AtomicU64,
    forward_failed: AtomicU64,
    forwards_in_flight: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn catalog(&self) -> Arc<Catalog> {
        self.catalog.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn xfr(&self) -> Arc<XfrZones> {
        self.xfr.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn counters_of(&self, socket: String) -> Arc<Mutex<Counters>> {
        lock(&self.counters).entry(socket).or_default().clone()
    }

    /// For `hostgate status`.
    pub fn status(&self) -> hostgate_api::DnsStatus {
        let mut c = Counters::default();
        for one in lock(&self.counters).values() {
            c.add(&lock(one));
        }
        hostgate_api::DnsStatus {
            listen: lock(&self.listen).clone(),
            error: lock(&self.error).clone(),
            zones: self.catalog().len() as u64,
            revision: self.revision.load(Ordering::Relaxed),
            queries: c.queries,
            udp: c.udp,
            tcp: c.tcp,
            noerror: c.noerror,
            nxdomain: c.nxdomain,
            nodata: c.nodata,
            referrals: c.referrals,
            refused: c.refused,
            formerr: c.formerr,
            notimp: c.notimp,
            servfail: c.servfail,
            badvers: c.badvers,
            truncated: c.truncated,
            dropped: c.dropped + c.rate_limited_dropped,
            rate_limited_dropped: c.rate_limited_dropped,
            rate_limited_slipped: c.rate_limited_slipped,
            tcp_rejected: self.tcp_rejected.load(Ordering::Relaxed),
            tcp_idle_closed: self.tcp_idle_closed.load(Ordering::Relaxed),
            transfers: self.transfers.load(Ordering::Relaxed),
            notifies_in: self.notifies_in.load(Ordering::Relaxed),
            notifies_out: self.notifies_out.load(Ordering::Relaxed),
            notifies_unanswered: self.notifies_unanswered.load(Ordering::Relaxed),
            forwarded: self.forwarded.load(Ordering::Relaxed),
            cache_hits: self.cache_hits.load(Ordering::Relaxed),
            forward_failed: self.forward_failed.load(Ordering::Relaxed),
            cached: lock(&self.cache).len() as u64,
        }
    }

    /// Whether the query is logged: all are with `[dns] query_log`, else
    /// those answered from a zone with its query log on.
    fn logs(&self, all: bool, catalog: &Catalog, request: &respond::Request) -> bool {
        if all {
            return true;
        }
        if !self.any_logged.load(Ordering::Relaxed) {
            return false;
        }
        let logged = self.logged.read().unwrap_or_else(|p| p.into_inner()).clone();
        if logged.is_empty() {
            return false;
        }
        let Some(q) = request.query() else { return false };
        catalog.find(q.name(), q.query_type()).is_some_and(|z| logged.contains(&key_of(z.origin())))
    }

    /// The customer whose zone answered `request`, if any.
    fn customer_of(&self, catalog: &Catalog, request: &respond::Request) -> Option<Arc<str>> {
        let customers = self.customers.read().unwrap_or_else(|p| p.into_inner()).clone();
        if customers.is_empty() {
            return None;
        }
        let q = request.query()?;
        let zone = catalog.find(q.name(), q.query_type())?;
        customers.get(&key_of(zone.origin())).cloned()
    }

    /// Lines that could not be queued for the query log files.
    pub fn log_dropped(&self) -> u64 {
        self.logs.get().map_or(0, |(l, _)| l.dropped())
    }

    /// Whether a UDP query from `addr` may take the fast path: nothing
    /// logs queries, and it is not a resolver client (whose queries may
    /// be forwarded). The rest (NOTIFY, runts) the fast path hands back.
    fn fast_path(&self, d: &Daemon, addr: std::net::IpAddr) -> bool {
        !d.config.dns.query_log
            && !self.any_logged.load(Ordering::Relaxed)
            && (d.config.dns.upstreams.is_empty() || !self.resolver_client(addr))
    }

    fn resolver_client(&self, addr: std::net::IpAddr) -> bool {
        self.clients.read().unwrap_or_else(|p| p.into_inner()).contains(addr)
    }
}

/// Aborts a task when dropped.
struct Task(JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Serves the `[dns] listen` addresses from the zones in the store, for as
/// long as the daemon lives (returns only on a store error; the caller
/// starts it over). No addresses: DNS is off.
pub(crate) async fn follow(d: Arc<Daemon>) -> anyhow::Result<()> {
    let addrs = d.config.dns.listen_addrs();
    if addrs.is_empty() {
        // Sockets handed over by a daemon that served DNS are not read.
        drop(d.kept.take_service("dns"));
        return std::future::pending().await;
    }
    let served = serve_addrs(&d, &addrs).await;
    // Kept while nobody reads them, queries would wait unanswered for as
    // long as the restarts fail (a store outage): closed, they are refused
    // and resolvers ask another server at once.
    drop(d.kept.take_service("dns"));
    served
}

/// [`follow`] with `[dns] listen` set.
async fn serve_addrs(d: &Arc<Daemon>, addrs: &[SocketAddr]) -> anyhow::Result<()> {
    let d = d.clone();
    let cache = CacheConfig { max_entries: d.config.dns.cache_entries as usize, ..CacheConfig::default() };
    *lock(&d.dns.cache) = Cache::new(cache);
    start_query_logs(&d)?;
    let snap = d.store.snapshot(stored::PREFIX).await?;
    let mut watch = d.store.watch(stored::PREFIX, snap.revision).await?;
    let mut mirror = Mirror::from_snapshot(snap);
    let mut built = HashMap::new();
    let mut names = DerivedNames::start(&d).await?;
    let mut derived = names.zones(&d);
    names.update_clients(&d);
    let mut notifier = Notifier::default();
    let mut health = Health::start(&d).await?;
    let mut servers = None;
    loop {
        let targets = |vip: &str| health.targets(&d.config.node_name, vip);
        let xfr = rebuild(&d.dns, &mirror, &mut built, &derived, &targets);
        notifier.update(&d, &xfr);
        // Only once the zones are in: a query that waited in a socket
        // handed over by the last daemon gets a real answer.
        if servers.is_none() {
            let started = start_servers(&d, addrs);
            *lock(&d.dns.error) = started.as_ref().err().map(|e| format!("{e:#}"));
            servers = Some(started?);
        }
        tokio::select! {
            batch = watch.recv() => {
                let batch = batch.ok_or_else(|| anyhow::anyhow!("the store's watch ended"))?;
                mirror.apply(&batch);
                // Changes that arrived meanwhile go into the same catalog.
                while let Ok(more) = watch.try_recv() {
                    mirror.apply(&more);
                }
            }
            changed = names.changed() => {
                changed?;
                derived = names.zones(&d);
                names.update_clients(&d);
            }
            changed = health.changed() => changed?,
        }
    }
}

/// Starts the per-customer query log writer, once (the follower may start
/// over), unless `[dns] access_log = "off"`.
fn start_query_logs(d: &Daemon) -> anyhow::Result<()> {
    let Some(format) = LineFormat::parse(d.config.dns.access_log_format()) else { return Ok(()) };
    if d.dns.logs.get().is_some() {
        return Ok(());
    }
    let dir = d.config.dns.access_log_dir.clone().unwrap_or_else(|| d.config.state_dir.join("log/dns"));
    let logs = AccessLogs::start(dir.clone(), "dns-query-log")?;
    info!(dir = %dir.display(), "DNS query logs per customer");
    let _ = d.dns.logs.set((logs, format));
    Ok(())
}

/// The leases, networks and containers that containers' names come from
/// (`[dns] internal_zone`); nothing is followed without that zone.
struct DerivedNames {
    followed: Option<[(Mirror, hostgate_store::Watcher); 2]>,
}

impl DerivedNames {
    async fn start(d: &Daemon) -> anyhow::Result<Self> {
        if d.config.dns.internal_zone.is_none() && d.config.dns.upstreams.is_empty() {
            return Ok(DerivedNames { followed: None });
        }
        let mut followed = Vec::new();
        for prefix in [hostgate_dhcp::network::keys::DHCP, hostgate_ipam::model::keys::CONTAINERS] {
            let snap = d.store.snapshot(prefix).await?;
            let watch = d.store.watch(prefix, snap.revision).await?;
            followed.push((Mirror::from_snapshot(snap), watch));
        }
        let followed: [(Mirror, hostgate_store::Watcher); 2] =
            followed.try_into().map_err(|_| anyhow::anyhow!("two prefixes followed"))?;
        Ok(DerivedNames { followed: Some(followed) })
    }

    /// Waits for a change, then lets more arrive for a moment: leases
    /// churn, and the zones are rebuilt at most four times a second.
    async fn changed(&mut self) -> anyhow::Result<()> {
        let Some([dhcp, containers]) = self.followed.as_mut() else { return std::future::pending().await };
        tokio::select! {
            b = dhcp.1.recv() => dhcp.0.apply(&b.ok_or_else(|| anyhow::anyhow!("the store's watch ended"))?),
            b = containers.1.recv() => containers.0.apply(&b.ok_or_else(|| anyhow::anyhow!("the store's watch ended"))?),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        for (mirror, watch) in [dhcp, containers] {
            while let Ok(more) = watch.try_recv() {
                mirror.apply(&more);
            }
        }
        Ok(())
    }

    /// Who may use the resolver: every DHCP network's subnet and IPv6
    /// prefix, every registered container's addresses (of any node: a
    /// container asks the node it sits behind, which may change), and
    /// `resolver_clients`.
    fn update_clients(&self, d: &Daemon) {
        if d.config.dns.upstreams.is_empty() {
            return;
        }
        let mut prefixes = d.config.dns.resolver_client_prefixes();
        let mut hosts = Vec::new();
        if let Some([dhcp, containers]) = self.followed.as_ref() {
            use hostgate_dhcp::network::keys;
            for kv in dhcp.0.entries.values().filter(|kv| kv.key.starts_with(keys::NETWORKS)) {
                let Ok(n) = kv.decode::<hostgate_dhcp::network::Network>() else { continue };
                prefixes.push((n.subnet.into(), n.prefix_len));
                if let Some((p, len)) = n.ipv6_prefix {
                    prefixes.push((p.into(), len));
                }
            }
            for kv in containers.0.entries.values() {
                if let Ok(c) = kv.decode::<hostgate_ipam::model::Container>() {
                    hosts.extend(c.ips);
                }
            }
        }
        let clients = Clients::new(prefixes, hosts);
        debug!(?clients, "DNS resolver clients");
        *d.dns.clients.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(clients);
    }

    fn zones(&self, d: &Daemon) -> Vec<Arc<IndexedZone>> {
        let (Some([dhcp, containers]), Some(zone)) = (self.followed.as_ref(), d.config.dns.internal_zone.as_deref())
        else {
            return Vec::new();
        };
        use hostgate_dhcp::network::keys;
        let networks: Vec<hostgate_dhcp::network::Network> = dhcp
            .0
            .entries
            .values()
            .filter(|kv| kv.key.starts_with(keys::NETWORKS))
            .filter_map(|kv| kv.decode().ok())
            .collect();
        let leases: Vec<(String, hostgate_dhcp::leases::Lease)> = dhcp
            .0
            .entries
            .values()
            .filter_map(|kv| {
                let network = kv.key.strip_prefix(keys::LEASES)?.split('/').next()?.to_string();
                Some((network, kv.decode().ok()?))
            })
            .collect();
        let registered: Vec<hostgate_ipam::model::Container> =
            containers.0.entries.values().filter_map(|kv| kv.decode().ok()).collect();
        let entries = super::names::entries(&networks, &leases, &registered);
        let serial = (dhcp.0.revision.max(containers.0.revision) & 0xffff_ffff) as u32;
        match super::names::zones(zone, &entries, serial) {
            Ok(zones) => zones.iter().map(|z| Arc::new(IndexedZone::new(z))).collect(),
            Err(error) => {
                warn!(%error, "containers' names not served");
                Vec::new()
            }
        }
    }
}

/// Builds the catalog from the mirror, reusing the indexed zones whose key
/// did not change, and swaps it in. Derived zones (containers' names) go
/// in first, so a zone of the same origin in the store takes precedence.
/// The LB's backends and this node's health records, for pools.
struct Health {
    backends: (Mirror, hostgate_store::Watcher),
    records: (Mirror, hostgate_store::Watcher),
}

impl Health {
    async fn start(d: &Daemon) -> anyhow::Result<Self> {
        let mut followed = Vec::new();
        for prefix in [hostgate_lb::model::keys::BACKENDS.to_string(), crate::health::prefix(&d.config.node_name)] {
            let snap = d.store.snapshot(&prefix).await?;
            let watch = d.store.watch(&prefix, snap.revision).await?;
            followed.push((Mirror::from_snapshot(snap), watch));
        }
        let [backends, records]: [(Mirror, hostgate_store::Watcher); 2] =
            followed.try_into().map_err(|_| anyhow::anyhow!("two prefixes followed"))?;
        Ok(Health { backends, records })
    }

    /// A change to either; what else arrived meanwhile goes in too.
    async fn changed(&mut self) -> anyhow::Result<()> {
        let ended = || anyhow::anyhow!("the store's watch ended");
        tokio::select! {
            b = self.backends.1.recv() => self.backends.0.apply(&b.ok_or_else(ended)?),
            b = self.records.1.recv() => self.records.0.apply(&b.ok_or_else(ended)?),
        }
        for (mirror, watch) in [&mut self.backends, &mut self.records] {
            while let Ok(more) = watch.try_recv() {
                mirror.apply(&more);
            }
        }
        Ok(())
    }

    /// The backends of `vip` and whether they pass: unchecked ones do, and
    /// so do checked ones before their first verdict, as for the LB.
    fn targets(&self, node: &str, vip: &str) -> Vec<Target> {
        let Ok(vip) = hostgate_lb::model::VipKey::from_str(vip) else { return Vec::new() };
        self.backends
            .0
            .entries
            .values()
            .filter_map(|kv| kv.decode::<hostgate_lb::model::BackendSpec>().ok())
            .filter(|b| b.vip == vip)
            .map(|b| {
                let record = self.records.0.entries.get(&crate::health::key(node, b.id));
                let verdict = record.and_then(|kv| kv.decode::<crate::health::HealthRecord>().ok());
                let healthy = b.check.is_none() || verdict.is_none_or(|r| r.healthy);
                Target { addr: b.addr, healthy }
            })
            .collect()
    }
}

/// The zone with its pool names' records for the present health.
fn with_pools(zone: Zone, stored: &StoredZone, key: &str, targets: &dyn Fn(&str) -> Vec<Target>) -> Zone {
    if stored.pools.is_empty() {
        return zone;
    }
    let mut records: Vec<hickory_proto::rr::Record> = zone.records().collect();
    for p in &stored.pools {
        let (Ok(name), Ok(fallback)) = (master::parse_name(&p.name, &Name::root()), Fallback::from_str(&p.fallback))
        else {
            warn!(%key, pool = %p.name, "pool not valid; not answered");
            continue;
        };
        records.extend(pool::records(&name, p.ttl, &pool::addresses(&targets(&p.vip), &fallback)));
    }
    match Zone::new(zone.origin().clone(), records) {
        Ok(with) => with,
        Err(errors) => {
            warn!(%key, errors = ?errors, "pool names conflict with the zone; served without them");
            zone
        }
    }
}

/// A zone as served: indexed, and with its secondaries if it has any.
type Built = (Arc<IndexedZone>, Option<Arc<XfrZone>>);

fn build_zone(key: &str, stored: &StoredZone, targets: &dyn Fn(&str) -> Vec<Target>) -> Result<Built, String> {
    let zone = stored.to_zone(key)?;
    // secondaries get the zone as stored: pool answers change without a
    // serial and would go stale there
    let indexed = Arc::new(IndexedZone::new(&with_pools(zone.clone(), stored, key, targets)));
    if stored.transfer.is_empty() {
        return Ok((indexed, None));
    }
    match stored.transfer.parse() {
        Ok(transfer) => Ok((indexed, Some(Arc::new(XfrZone { zone, transfer })))),
        Err(error) => {
            // served, but transferred to nobody rather than to the wrong ones
            warn!(%key, %error, "zone's transfer settings are not valid; no transfers, no NOTIFY");
            Ok((indexed, None))
        }
    }
}

/// What a stored zone asks of the server besides its records.
#[derive(Clone, Debug, Default)]
struct Flags {
    /// It has pools: rebuilt on every health change.
    pools: bool,
    query_log: bool,
    customer: Option<Arc<str>>,
}

fn rebuild(
    shared: &Shared,
    mirror: &Mirror,
    built: &mut HashMap<String, (u64, Built, Flags)>,
    derived: &[Arc<IndexedZone>],
    targets: &dyn Fn(&str) -> Vec<Target>,
) -> Arc<XfrZones> {
    let mut catalog = Catalog::new();
    for zone in derived {
        catalog.insert(zone.clone());
    }
    let mut next = HashMap::new();
    let mut xfr = XfrZones::new();
    let mut logged = std::collections::HashSet::new();
    let mut customers = HashMap::new();
    for (key, kv) in mirror.entries.iter().filter(|(k, _)| k.starts_with(stored::ZONES)) {
        // zones with pools follow health too: rebuilt every time
        let (zone, flags) = match built.remove(key) {
            Some((revision, zone, flags)) if revision == kv.mod_revision && !flags.pools => (zone, flags),
            _ => match kv.decode::<StoredZone>().map_err(|e| e.to_string()).and_then(|z| {
                let customer = z.customer.as_deref().map(Arc::from);
                let flags = Flags { pools: !z.pools.is_empty(), query_log: z.query_log, customer };
                build_zone(key, &z, targets).map(|b| (b, flags))
            }) {
                Ok(z) => z,
                Err(error) => {
                    warn!(%key, %error, "zone in the store is not valid; not served");
                    continue;
                }
            },
        };
        if flags.query_log {
            logged.insert(key_of(zone.0.origin()));
        }
        if let Some(c) = &flags.customer {
            customers.insert(key_of(zone.0.origin()), c.clone());
        }
        catalog.insert(zone.0.clone());
        if let Some(x) = &zone.1 {
            xfr.insert(key_of(x.zone.origin()), x.clone());
        }
        next.insert(key.clone(), (kv.mod_revision, zone, flags));
    }
    *built = next;
    shared.any_logged.store(!logged.is_empty(), Ordering::Relaxed);
    *shared.logged.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(logged);
    *shared.customers.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(customers);
    let zones = catalog.len();
    let xfr = Arc::new(xfr);
    *shared.catalog.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(catalog);
    // after the swap: a worker that sees the new generation reads the new
    // catalog (or a newer one)
    shared.generation.fetch_add(1, Ordering::Release);
    *shared.xfr.write().unwrap_or_else(|p| p.into_inner()) = xfr.clone();
    shared.revision.store(mirror.revision, Ordering::Relaxed);
    debug!(zones, revision = mirror.revision, "DNS catalog swapped");
    xfr
}

/// Binds (or adopts, after an upgrade) every socket first, so that a bad
/// address fails the whole start and is retried, then starts their tasks
/// and keeps copies of the sockets for the next upgrade.
fn start_servers(d: &Arc<Daemon>, addrs: &[SocketAddr]) -> anyhow::Result<Vec<Task>> {
    let epoch = Instant::now();
    // Handed over by the last daemon (kept as this run's own until now).
    let mut inherited = Inherited::from_fds(d.kept.take_service("dns"));
    let (mut udp, mut tcp, mut kept) = (Vec::new(), Vec::new(), Vec::new());
    for addr in addrs {
        for i in 0..d.config.dns.workers {
            let socket = match inherited.take_udp(UDP_SOCKET, *addr) {
                Some(adopted) => UdpSocket::from_std(adopted),
                None => udp_socket(*addr),
            };
            let socket = socket.with_context(|| format!("DNS: binding UDP {addr}"))?;
            kept.push(upgrade::kept_copy(UDP_SOCKET, socket.as_fd())?);
            udp.push((socket, format!("udp {addr} #{i}")));
        }
        let listener = match inherited.take_tcp(TCP_SOCKET, *addr) {
            Some(adopted) => TcpListener::from_std(adopted),
            None => tcp_listener(*addr),
        };
        let listener = listener.with_context(|| format!("DNS: binding TCP {addr}"))?;
        kept.push(upgrade::kept_copy(TCP_SOCKET, listener.as_fd())?);
        tcp.push((listener, format!("tcp {addr}")));
    }
    // Fewer workers than before, or an address no longer served.
    inherited.close_rest();
    d.kept.set("dns", kept);
    let bytes = cache_bytes(udp.len());
    let mut tasks = Vec::new();
    for (socket, name) in udp {
        let counters = d.dns.counters_of(name);
        tasks.push(Task(tokio::spawn(udp_worker(d.clone(), socket, counters, epoch, bytes))));
    }
    for (listener, name) in tcp {
        let counters = d.dns.counters_of(name);
        tasks.push(Task(tokio::spawn(tcp_server(d.clone(), listener, counters, epoch))));
    }
    *lock(&d.dns.listen) = addrs.iter().map(ToString::to_string).collect();
    info!(listen = ?addrs, workers = d.config.dns.workers, "DNS server listening");
    Ok(tasks)
}

fn socket(addr: SocketAddr, kind: Type, protocol: Protocol) -> std::io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), kind, Some(protocol))?;
    s.set_reuse_port(true)?;
    s.set_reuse_address(true)?;
    match addr {
        SocketAddr::V4(_) => s.set_freebind_v4(true)?,
        SocketAddr::V6(_) => {
            s.set_only_v6(true)?;
            s.set_freebind_v6(true)?;
        }
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s)
}

/// Receive buffer asked for UDP sockets: bursts arrive faster than one
/// task answers; the kernel caps it at net.core.rmem_max.
const UDP_RECV_BUFFER: usize = 4 << 20;

fn udp_socket(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let s = socket(addr, Type::DGRAM, Protocol::UDP)?;
    if let Err(e) = s.set_recv_buffer_size(UDP_RECV_BUFFER) {
        debug!(error = %e, %addr, "DNS: receive buffer left at the default");
    }
    UdpSocket::from_std(s.into())
}

fn tcp_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let s = socket(addr, Type::STREAM, Protocol::TCP)?;
    s.listen(1024)?;
    TcpListener::from_std(s.into())
}

/// A seed for RRL's flow hash that a flooder cannot know.
fn random_seed() -> u64 {
    std::collections::hash_map::RandomState::new().build_hasher().finish()
}

fn millis_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// What became of a query.
enum Answered {
    /// The replies, in order; a transfer has many, anything else one or
    /// none.
    Replies(Vec<Vec<u8>>),
    /// For the resolver, not in the cache: the caller forwards it (or,
    /// for a CNAME leaving our zones, the query for its target).
    Forward(respond::Request, Option<Box<Chase>>),
}

/// Our records of a CNAME chain that leaves our zones, and the query for
/// its target that the resolver answers.
struct Chase {
    answers: Vec<hickory_proto::rr::Record>,
    asked: hickory_proto::op::Message,
}

/// One query through the responder (`respond::respond` in its two steps,
/// so that the query can be logged when `query_log` is on), or the
/// resolver's cache.
fn answer(
    d: &Daemon,
    config: &respond::Config,
    rrl: Option<&mut Rrl>,
    counters: &Mutex<Counters>,
    bytes: &[u8],
    client: &Client,
) -> Answered {
    let catalog = d.dns.catalog();
    let mut c = lock(counters);
    let request = match respond::decode(bytes, client.transport, &mut c) {
        Decoded::Drop => return Answered::Replies(Vec::new()),
        Decoded::Reply(formerr) => return Answered::Replies(vec![formerr]),
        Decoded::Request(r) => r,
    };
    // a transfer takes a while: other queries of this socket count meanwhile
    drop(c);
    let replies = match intercept(d, &catalog, &request, bytes, client) {
        Some(replies) => replies,
        None => {
            let may_forward = !d.config.dns.upstreams.is_empty() && d.dns.resolver_client(client.addr);
            let mut c = lock(counters);
            match respond::respond_or_forward(&catalog, config, rrl, &mut c, &request, client, may_forward) {
                Responded::Reply(reply) => reply.into_iter().collect(),
                Responded::Forward => {
                    let hit = lock(&d.dns.cache).get(&request.message, client.now_ms);
                    let Some(hit) = hit else { return Answered::Forward(request, None) };
                    d.dns.cache_hits.fetch_add(1, Ordering::Relaxed);
                    resolver::client_reply(&request.message, hit, config, client.transport, &mut c)
                        .into_iter()
                        .collect()
                }
                Responded::Chase { answers, target } => {
                    let asked = resolver::chase_query(&request.message, &target);
                    let hit = lock(&d.dns.cache).get(&asked, client.now_ms);
                    let Some(hit) = hit else {
                        return Answered::Forward(request, Some(Box::new(Chase { answers, asked })));
                    };
                    d.dns.cache_hits.fetch_add(1, Ordering::Relaxed);
                    resolver::chased_reply(&request.message, answers, hit, config, client.transport, &mut c)
                        .into_iter()
                        .collect()
                }
            }
        }
    };
    if d.dns.logs(d.config.dns.query_log, &catalog, &request) {
        let customer = d.dns.customer_of(&catalog, &request);
        log_query(d, customer.as_deref(), &request, replies.first().map(Vec::as_slice), client);
    }
    Answered::Replies(replies)
}

/// Forwarded queries in flight at most; more get SERVFAIL at once.
const MAX_FORWARDS: u64 = 1024;
/// How long one upstream has to answer before the next is tried.
const UPSTREAM_TIMEOUT: Duration = Duration::from_millis(1500);

/// Takes one of [`MAX_FORWARDS`] slots; gives it back when dropped.
struct ForwardSlot<'a>(&'a AtomicU64);

impl<'a> ForwardSlot<'a> {
    fn take(in_flight: &'a AtomicU64) -> Option<Self> {
        if in_flight.fetch_add(1, Ordering::Relaxed) >= MAX_FORWARDS {
            in_flight.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(ForwardSlot(in_flight))
    }
}

impl Drop for ForwardSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The resolver's answer to `request` (or to the query for a chased
/// CNAME's target, behind our chain) from the first upstream that
/// answers (cached when it may be), or SERVFAIL.
async fn forward(
    d: &Daemon,
    config: &respond::Config,
    counters: &Mutex<Counters>,
    request: &respond::Request,
    chase: Option<Box<Chase>>,
    client: &Client,
    epoch: Instant,
) -> Option<Vec<u8>> {
    let query = chase.as_ref().map_or(&request.message, |c| &c.asked);
    let reply = match ForwardSlot::take(&d.dns.forwards_in_flight) {
        None => None,
        Some(_slot) => {
            d.dns.forwarded.fetch_add(1, Ordering::Relaxed);
            let mut got = None;
            for upstream in d.config.dns.upstream_addrs() {
                match ask_upstream(upstream, query).await {
                    Ok(m) => {
                        got = Some(m);
                        break;
                    }
                    Err(error) => debug!(%upstream, %error, "DNS: upstream did not answer"),
                }
            }
            got
        }
    };
    let reply = match reply {
        Some(m) => {
            lock(&d.dns.cache).insert(query, &m, millis_since(epoch));
            match chase {
                Some(c) => resolver::chased_reply(
                    &request.message,
                    c.answers,
                    m,
                    config,
                    client.transport,
                    &mut lock(counters),
                ),
                None => resolver::client_reply(query, m, config, client.transport, &mut lock(counters)),
            }
        }
        None => {
            d.dns.forward_failed.fetch_add(1, Ordering::Relaxed);
            resolver::servfail(&request.message, config, client.transport, &mut lock(counters))
        }
    };
    if d.config.dns.query_log {
        log_query(d, None, request, reply.as_deref(), client);
    }
    reply
}

/// One upstream's answer: over UDP from a fresh socket, and over TCP if
/// that was truncated.
async fn ask_upstream(
    upstream: SocketAddr,
    query: &hickory_proto::op::Message,
) -> anyhow::Result<hickory_proto::op::Message> {
    let id = random_seed() as u16;
    let bytes = resolver::upstream_query(query, id).context("query not encodable")?;
    let any: SocketAddr = if upstream.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    let socket = UdpSocket::bind(any).await?;
    socket.connect(upstream).await?;
    socket.send(&bytes).await?;
    let mut buf = vec![0u8; 65_535];
    let answer = tokio::time::timeout(UPSTREAM_TIMEOUT, async {
        loop {
            let len = socket.recv(&mut buf).await?;
            if let Some(m) = resolver::upstream_reply(&buf[..len], id, query) {
                return anyhow::Ok(m);
            }
        }
    })
    .await
    .context("timed out")??;
    if !answer.metadata.truncation {
        return Ok(answer);
    }
    let tcp = async {
        let mut stream = TcpStream::connect(upstream).await?;
        let len = u16::try_from(bytes.len())?;
        let mut framed = len.to_be_bytes().to_vec();
        framed.extend_from_slice(&bytes);
        stream.write_all(&framed).await?;
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await?;
        let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut reply).await?;
        resolver::upstream_reply(&reply, id, query).context("not an answer to our query")
    };
    tokio::time::timeout(UPSTREAM_TIMEOUT, tcp).await.context("timed out over TCP")?
}

/// What the responder does not answer: NOTIFY, and AXFR/IXFR over TCP
/// of a zone with transfer settings (without: the responder refuses).
fn intercept(
    d: &Daemon,
    catalog: &Catalog,
    request: &respond::Request,
    bytes: &[u8],
    client: &Client,
) -> Option<Vec<Vec<u8>>> {
    if request.op_code() == OpCode::Notify {
        d.dns.notifies_in.fetch_add(1, Ordering::Relaxed);
        debug!(client = %client.addr, zone = ?request.query().map(|q| q.name().to_string()), "DNS NOTIFY received");
        return xfr::notify_reply(catalog, &request.message).map(|r| vec![r]);
    }
    let q = request.query()?;
    // other classes, like other transports, get the responder's REFUSED
    let transfer = matches!(q.query_type(), RecordType::AXFR | RecordType::IXFR) && q.query_class() == DNSClass::IN;
    if request.op_code() != OpCode::Query || client.transport != Transport::Tcp || !transfer {
        return None;
    }
    let x = d.dns.xfr().get(&key_of(q.name())).cloned()?;
    let replies = xfr::transfer(&x.zone, &x.transfer, &request.message, bytes, client.addr, crate::now());
    d.dns.transfers.fetch_add(1, Ordering::Relaxed);
    // the rcode's low four bits sit in the fourth header byte
    let rcode = replies.first().and_then(|r| r.get(3)).map_or(0, |b| b & 0x0f);
    info!(
        zone = %x.zone.origin(), client = %client.addr, qtype = %q.query_type(), rcode,
        messages = replies.len(), serial = x.zone.soa().serial, "DNS zone transfer"
    );
    Some(replies)
}

/// Logs a query at info level and, for a customer's zone, to the
/// customer's query log file.
fn log_query(d: &Daemon, customer: Option<&str>, request: &respond::Request, reply: Option<&[u8]>, client: &Client) {
    let (name, qtype) =
        request.query().map_or((String::new(), String::new()), |q| (q.name().to_string(), q.query_type().to_string()));
    // the rcode's low four bits sit in the fourth header byte
    let rcode = reply.and_then(|r| r.get(3)).map_or("dropped", |b| rcode_name(b & 0x0f));
    let transport = match client.transport {
        Transport::Udp => "udp",
        Transport::Tcp => "tcp",
    };
    info!(client = %client.addr, %transport, %name, %qtype, %rcode, "DNS query");
    let (Some(customer), Some((logs, format))) = (customer, d.dns.logs.get()) else { return };
    let fields = [
        ("time", serde_json::Value::from(hostgate_http::accesslog::iso_time(crate::now_ms()))),
        ("client", client.addr.to_string().into()),
        ("transport", transport.into()),
        ("name", name.into()),
        ("type", qtype.into()),
        ("rcode", rcode.into()),
    ];
    logs.write(customer, access_log::line(*format, &fields));
}

/// dig's names for the rcodes a reply's header can carry.
fn rcode_name(rcode: u8) -> &'static str {
    match rcode {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        9 => "NOTAUTH",
        _ => "OTHER",
    }
}

/// Queries taken per receive (recvmmsg) and replies sent per send
/// (sendmmsg).
const BATCH: usize = 32;
/// A UDP query longer than this is read truncated (DNS queries are tens
/// of bytes; EDNS payload sizes are about replies).
const QUERY_BUFFER: usize = 4096;
/// Each UDP worker's answer cache: slots, and bytes its entries may hold:
/// a share of [`CACHE_BYTES_TOTAL`] (a flood of distinct queries fills
/// every worker's cache), at least 1 MiB and at most 16 MiB.
const CACHE_SLOTS: usize = 1 << 16;
const CACHE_BYTES_TOTAL: usize = 64 << 20;

fn cache_bytes(sockets: usize) -> usize {
    (CACHE_BYTES_TOTAL / sockets.max(1)).clamp(1 << 20, 16 << 20)
}

/// One SO_REUSEPORT socket's task: takes up to [`BATCH`] queries per
/// recvmmsg, answers each from the answer cache (hostgate-dns's `fast`:
/// the responder's own replies, kept per distinct query) or the full
/// path (`answer`: NOTIFY, query logging, resolver clients, runts), and
/// sends the replies with one sendmmsg.
async fn udp_worker(
    d: Arc<Daemon>,
    socket: UdpSocket,
    counters: Arc<Mutex<Counters>>,
    epoch: Instant,
    cache_bytes: usize,
) {
    let limit = d.config.dns.rrl_ratelimit;
    let mut table = Rrl::new(RrlConfig { responses_per_second: limit, ..RrlConfig::default() }, random_seed());
    let config = respond::Config::default();
    let socket = Arc::new(socket);
    let mut io = super::udp::Batch::new(BATCH, QUERY_BUFFER);
    let mut cache = AnswerCache::new(config.clone(), CACHE_SLOTS, cache_bytes);
    let mut catalog = d.dns.catalog();
    let mut generation = u64::MAX;
    loop {
        if socket.readable().await.is_err() {
            continue;
        }
        let received = match socket.try_io(tokio::io::Interest::READABLE, || io.receive(&*socket)) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                debug!(error = %e, "DNS: UDP receive");
                continue;
            }
        };
        // the catalog's generation first, then the catalog: see AnswerCache::sync
        let now = d.dns.generation.load(Ordering::Acquire);
        if now != generation {
            generation = now;
            catalog = d.dns.catalog();
            cache.sync(generation);
        }
        let now_ms = millis_since(epoch);
        let mut counted = Counters::default();
        for i in 0..received {
            let Some(peer) = io.peer(i) else { continue };
            let client = Client { addr: peer.ip().to_canonical(), transport: Transport::Udp, now_ms };
            let rrl = if limit == 0 { None } else { Some(&mut table) };
            if d.dns.fast_path(&d, client.addr) {
                let (query, out) = io.query_and_reply(i);
                match cache.answer(&catalog, rrl, &mut counted, query, &client, out) {
                    hostgate_dns::fast::Served::Reply => {
                        io.reply_ready(i);
                        continue;
                    }
                    hostgate_dns::fast::Served::Nothing => continue,
                    hostgate_dns::fast::Served::Slow => {}
                }
            }
            let rrl = if limit == 0 { None } else { Some(&mut table) };
            match answer(&d, &config, rrl, &counters, io.query(i), &client) {
                Answered::Replies(replies) => {
                    for reply in replies {
                        io.reply_owned(i, reply);
                    }
                }
                Answered::Forward(request, chase) => {
                    let (d, socket, counters, config) = (d.clone(), socket.clone(), counters.clone(), config.clone());
                    tokio::spawn(async move {
                        if let Some(reply) = forward(&d, &config, &counters, &request, chase, &client, epoch).await {
                            if let Err(e) = socket.send_to(&reply, peer).await {
                                debug!(error = %e, %peer, "DNS: UDP send");
                            }
                        }
                    });
                }
            }
        }
        if counted != Counters::default() {
            lock(&counters).add(&counted);
        }
        // what the socket's send buffer did not take goes one by one
        let sent = socket.try_io(tokio::io::Interest::WRITABLE, || io.send(&*socket)).unwrap_or(0);
        for (reply, peer) in io.unsent(sent) {
            if let Err(e) = socket.send_to(reply, peer).await {
                debug!(error = %e, %peer, "DNS: UDP send");
            }
        }
    }
}

async fn tcp_server(d: Arc<Daemon>, listener: TcpListener, counters: Arc<Mutex<Counters>>, epoch: Instant) {
    let slots = Arc::new(Semaphore::new(d.config.dns.tcp_max_connections as usize));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(got) => got,
            Err(e) => {
                // out of descriptors and the like: do not spin
                debug!(error = %e, "DNS: TCP accept");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            d.dns.tcp_rejected.fetch_add(1, Ordering::Relaxed);
            continue; // dropping the stream closes it
        };
        let (d, counters) = (d.clone(), counters.clone());
        tokio::spawn(async move {
            let _permit = permit;
            tcp_connection(&d, stream, peer, &counters, epoch).await;
        });
    }
}

/// Answers length-prefixed queries (RFC 1035 §4.2.2, RFC 7766) until the
/// client closes, idles for `tcp_idle_secs`, or breaks the framing.
async fn tcp_connection(
    d: &Daemon,
    mut stream: TcpStream,
    peer: SocketAddr,
    counters: &Mutex<Counters>,
    epoch: Instant,
) {
    let idle = Duration::from_secs(u64::from(d.config.dns.tcp_idle_secs));
    let config = respond::Config::default();
    let mut len = [0u8; 2];
    loop {
        match tokio::time::timeout(idle, stream.read_exact(&mut len)).await {
            Err(_) => {
                d.dns.tcp_idle_closed.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Ok(Err(_)) => return, // closed, or reset
            Ok(Ok(_)) => {}
        }
        let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
        if !matches!(tokio::time::timeout(idle, stream.read_exact(&mut query)).await, Ok(Ok(_))) {
            return;
        }
        let client = Client { addr: peer.ip().to_canonical(), transport: Transport::Tcp, now_ms: millis_since(epoch) };
        let replies = match answer(d, &config, None, counters, &query, &client) {
            Answered::Replies(replies) => replies,
            Answered::Forward(request, chase) => {
                forward(d, &config, counters, &request, chase, &client, epoch).await.into_iter().collect()
            }
        };
        for reply in replies {
            let Ok(n) = u16::try_from(reply.len()) else { return };
            let mut framed = Vec::with_capacity(reply.len() + 2);
            framed.extend_from_slice(&n.to_be_bytes());
            framed.extend_from_slice(&reply);
            if !matches!(tokio::time::timeout(idle, stream.write_all(&framed)).await, Ok(Ok(_))) {
                return;
            }
        }
    }
}

/// A NOTIFY sender's task and what feeds it.
type Sender = (watch::Sender<Arc<XfrZone>>, Task);

/// The NOTIFY senders: one task per (zone, target), fed the zone's
/// latest state through a watch channel.
#[derive(Default)]
struct Notifier {
    tasks: HashMap<(Vec<u8>, SocketAddr), Sender>,
}

impl Notifier {
    /// Starts senders for new targets (they notify at once), tells the
    /// others of a new serial or key, and stops those no longer wanted.
    fn update(&mut self, d: &Arc<Daemon>, zones: &XfrZones) {
        let mut next = HashMap::new();
        for (key, x) in zones {
            for target in &x.transfer.notify {
                let k = (key.clone(), *target);
                let entry = match self.tasks.remove(&k) {
                    Some((tx, task)) => {
                        tx.send_if_modified(|current| {
                            let changed = current.zone.soa().serial != x.zone.soa().serial
                                || current.transfer.tsig != x.transfer.tsig;
                            *current = x.clone();
                            changed
                        });
                        (tx, task)
                    }
                    None => {
                        let (tx, rx) = watch::channel(x.clone());
                        (tx, Task(tokio::spawn(notify_target(d.clone(), *target, rx))))
                    }
                };
                next.insert(k, entry);
            }
        }
        // the senders left in self.tasks are dropped here, and abort
        self.tasks = next;
    }
}

/// Notifies `target` of each new state of one zone, the newest first: a
/// change that lands while one is retried starts the NOTIFY over.
async fn notify_target(d: Arc<Daemon>, target: SocketAddr, mut rx: watch::Receiver<Arc<XfrZone>>) {
    rx.mark_changed();
    while rx.changed().await.is_ok() {
        let x = rx.borrow_and_update().clone();
        tokio::select! {
            () = notify_once(&d, target, &x) => {}
            newer = rx.changed() => {
                if newer.is_err() {
                    return;
                }
                rx.mark_changed();
            }
        }
    }
}

/// One NOTIFY, tried on hostgate-dns's schedule until answered.
async fn notify_once(d: &Daemon, target: SocketAddr, x: &XfrZone) {
    let (zone, serial) = (x.zone.origin(), x.zone.soa().serial);
    let socket = match notify_socket(d, target).await {
        Ok(s) => s,
        Err(error) => {
            warn!(%zone, %target, %error, "NOTIFY: no socket");
            return;
        }
    };
    // one id for every try, so a late answer to an earlier try counts
    let id = random_seed() as u16;
    for wait_ms in xfr::notify_schedule() {
        let message = match xfr::notify_message(id, &x.zone, x.transfer.tsig.as_ref(), crate::now()) {
            Ok(m) => m,
            Err(error) => {
                warn!(%zone, %target, %error, "NOTIFY not built");
                return;
            }
        };
        d.dns.notifies_out.fetch_add(1, Ordering::Relaxed);
        if let Err(error) = socket.send_to(&message, target).await {
            debug!(%zone, %target, %error, "NOTIFY: send");
        }
        if let Some(rcode) = notify_answer(&socket, id, Duration::from_millis(wait_ms)).await {
            info!(%zone, %target, serial, %rcode, "NOTIFY answered");
            return;
        }
    }
    d.dns.notifies_unanswered.fetch_add(1, Ordering::Relaxed);
    warn!(%zone, %target, serial, "NOTIFY unanswered after every try");
}

/// From the `[dns] listen` address of the target's family, so that the
/// secondary sees the address it knows us by (its allow-notify).
async fn notify_socket(d: &Daemon, target: SocketAddr) -> std::io::Result<UdpSocket> {
    let ours = d.config.dns.listen_addrs().into_iter().find(|a| a.is_ipv4() == target.is_ipv4());
    if let Some(addr) = ours.filter(|a| !a.ip().is_unspecified()) {
        if let Ok(s) = UdpSocket::bind(SocketAddr::new(addr.ip(), 0)).await {
            return Ok(s);
        }
    }
    let any: SocketAddr = if target.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    UdpSocket::bind(any).await
}

/// Waits up to `wait` for the answer to NOTIFY `id`, ignoring anything else.
async fn notify_answer(socket: &UdpSocket, id: u16, wait: Duration) -> Option<hickory_proto::op::ResponseCode> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut buf = vec![0u8; 4096];
    loop {
        let got = tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await.ok()?;
        let Ok((len, _)) = got else { continue };
        if let Some(rcode) = xfr::notify_answered(&buf[..len], id) {
            return Some(rcode);
        }
    }
}

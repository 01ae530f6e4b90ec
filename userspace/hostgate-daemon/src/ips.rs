//! Customers and their IPs: the API that writes them to the store, and the
//! reconciler that puts this node's share on its interface, announces it,
//! and takes off what it no longer owns (only addresses it added itself).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    sync::Arc,
    time::Duration,
};

use axum::{extract::State, http::StatusCode, Json};
use hostgate_api::{CustomerRef, CustomerRequest, CustomerView, IpRef, IpRequest, IpView};
use hostgate_ipam::{
    announce,
    model::{check_assignable, keys, valid_name, Assignment, Cidr, Customer},
    ownership::{self, address_wanted, candidates, desired_owner, Claim, Member, Step},
    placement::Candidate,
};
use hostgate_store::{Compare, KeyValue, LeaseId, Mirror, Op, StoreError, Txn, TxnOutcome};
use tracing::{info, warn};

use crate::{api::Failure, netif, now, Daemon};

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

/// The cluster as the store shows it: who is live, who is drained, who
/// holds which IP, and the assignments.
pub(crate) struct ClusterView {
    pub members: BTreeMap<String, Member>,
    pub drained: Vec<String>,
    pub claims: BTreeMap<IpAddr, (Claim, KeyValue)>,
    pub assignments: Vec<Assignment>,
}

impl ClusterView {
    pub fn from_entries<'a>(entries: impl Iterator<Item = &'a KeyValue>) -> Self {
        let mut view =
            ClusterView { members: BTreeMap::new(), drained: vec![], claims: BTreeMap::new(), assignments: vec![] };
        for kv in entries {
            if kv.key.starts_with(ownership::keys::MEMBERS) {
                if let Ok(m) = kv.decode::<Member>() {
                    view.members.insert(m.node.clone(), m);
                }
            } else if let Some(node) = kv.key.strip_prefix(ownership::keys::DRAINED) {
                view.drained.push(node.to_string());
            } else if let Some(addr) = kv.key.strip_prefix(ownership::keys::CLAIMS) {
                if let (Ok(addr), Ok(claim)) = (addr.parse(), kv.decode::<Claim>()) {
                    view.claims.insert(addr, (claim, kv.clone()));
                }
            } else if kv.key.starts_with(keys::IPS) {
                if let Ok(a) = kv.decode::<Assignment>() {
                    view.assignments.push(a);
                }
            }
        }
        view
    }

    pub async fn read(d: &Daemon) -> Result<Self, Failure> {
        let snap = d.store.snapshot("").await.map_err(err)?;
        Ok(Self::from_entries(snap.kvs.iter()))
    }

    pub fn candidates(&self) -> Vec<Candidate> {
        candidates(self.members.values(), &self.drained)
    }

    pub fn claim_holder(&self, addr: IpAddr) -> Option<&str> {
        self.claims.get(&addr).map(|(c, _)| c.node.as_str())
    }
}

/// Refuses a node that is not a live member (for `--node` and `--to`).
fn check_live(view: &ClusterView, field: &str, node: &str) -> Result<(), Failure> {
    if !valid_name(node) {
        return Err(bad(format!("{field}: {node:?} is not a node name")));
    }
    if !view.members.contains_key(node) {
        let live: Vec<&str> = view.members.keys().map(String::as_str).collect();
        return Err(Failure(
            StatusCode::NOT_FOUND,
            format!("{field}: node {node} is not a live member of the cluster (live: {})", live.join(", ")),
        ));
    }
    Ok(())
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

/// An IP as `ip list` shows it: the node holding its claim ("active"),
/// else the node it is headed for ("pending"), or none ("unplaced").
fn ip_view(view: &ClusterView, candidates: &[Candidate], a: &Assignment) -> IpView {
    let (owner, state) = match (view.claim_holder(a.addr), desired_owner(a, candidates)) {
        (Some(holder), _) => (Some(holder.to_string()), "active"),
        (None, Some(next)) => (Some(next.to_string()), "pending"),
        (None, None) => (None, "unplaced"),
    };
    IpView {
        addr: a.addr.to_string(),
        customer: a.customer.clone(),
        owner,
        pinned: a.pinned_node.is_some(),
        state: state.into(),
        since: a.since,
    }
}

pub async fn list_customers(State(d): State<Arc<Daemon>>) -> Result<Json<Vec<CustomerView>>, Failure> {
    let snap = d.store.snapshot(keys::CUSTOMERS).await.map_err(err)?;
    let view = ClusterView::read(&d).await?;
    let candidates = view.candidates();
    let out = snap
        .kvs
        .iter()
        .filter_map(|kv| kv.decode::<Customer>().ok())
        .map(|c| {
            let ips = view
                .assignments
                .iter()
                .filter(|a| a.customer == c.name)
                .map(|a| ip_view(&view, &candidates, a))
                .collect();
            CustomerView { name: c.name, description: c.description, created: c.created, ips }
        })
        .collect();
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
        check_live(&ClusterView::read(&d).await?, "node", node)?;
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
            let view = ClusterView::read(&d).await?;
            Ok(Json(ip_view(&view, &view.candidates(), &a)))
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
    let view = ClusterView::read(&d).await?;
    let candidates = view.candidates();
    Ok(Json(view.assignments.iter().map(|a| ip_view(&view, &candidates, a)).collect()))
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
    check_live(&ClusterView::read(&d).await?, "to", &to)?;
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
            let view = ClusterView::read(&d).await?;
            Ok(Json(ip_view(&view, &view.candidates(), &a)))
        }
        TxnOutcome::CompareFailed(_) => Err(Failure(StatusCode::CONFLICT, format!("{addr} changed meanwhile; retry"))),
    }
}

/// Keeps this node's interface holding exactly the IPs it has claimed:
/// follows the whole store (assignments, members, drains, claims) and this
/// node's standing, and re-checks the interface every few seconds.
pub(crate) async fn follow(d: Arc<Daemon>) -> anyhow::Result<()> {
    let d = &d;
    let iface = d.config.ip_interface().to_string();
    let addrs = netif::Addresses::connect(&iface)?;
    let mut standing = d.standing.subscribe();
    let snap = d.store.snapshot("").await?;
    let mut watch = d.store.watch("", snap.revision).await?;
    let mut mirror = Mirror::from_snapshot_where(snap, crate::placement_state);
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    let mut relevant = true;
    loop {
        if relevant {
            reconcile(d, &addrs, &iface, &mirror).await?;
        }
        d.config_revision.send_replace(mirror.revision);
        relevant = true;
        tokio::select! {
            batch = watch.recv() => {
                let Some(batch) = batch else { anyhow::bail!("the store's watch ended") };
                relevant = mirror.apply_where(&batch, crate::placement_state);
                while let Ok(more) = watch.try_recv() {
                    relevant |= mirror.apply_where(&more, crate::placement_state);
                }
            }
            changed = standing.changed() => changed?,
            _ = tick.tick() => {}
        }
    }
}

/// One pass: claims and releases in the store, then the interface.
async fn reconcile(d: &Arc<Daemon>, addrs: &netif::Addresses, iface: &str, mirror: &Mirror) -> anyhow::Result<()> {
    let me = d.config.node_name.as_str();
    let view = ClusterView::from_entries(mirror.entries.values());
    let candidates = view.candidates();
    let lease = d.standing.borrow().lease();
    let mut wanted = BTreeSet::new();
    let mut releases = Vec::new();
    for a in &view.assignments {
        let claim = view.claims.get(&a.addr);
        let step = ownership::step(me, lease.is_some(), desired_owner(a, &candidates), view.claim_holder(a.addr));
        let Some(lease) = lease else { continue }; // fenced or joining: holds nothing
        let held = match step {
            Step::Claim => claim_ip(d, a.addr, lease).await?,
            Step::Hold => match claim {
                Some((c, kv)) if c.lease != lease => rebind(d, kv, c, lease).await?,
                _ => true,
            },
            Step::Release => {
                if let Some((_, kv)) = claim {
                    releases.push(kv.clone());
                }
                false
            }
            Step::Wait | Step::Absent => false,
        };
        if held && address_wanted(step) {
            wanted.insert(a.addr);
        }
    }
    // Claims on IPs no longer assigned go too.
    if lease.is_some() {
        let assigned: BTreeSet<IpAddr> = view.assignments.iter().map(|a| a.addr).collect();
        for (addr, (claim, kv)) in &view.claims {
            if claim.node == me && !assigned.contains(addr) {
                releases.push(kv.clone());
            }
        }
    }
    set_addresses(d, addrs, iface, &wanted, lease).await?;
    // Released only once the address is gone, so no two nodes ever hold it.
    for kv in releases {
        let txn = Txn::new().when(Compare::ModRevision(kv.key.clone(), kv.mod_revision)).then(Op::Delete(kv.key));
        d.store.commit(txn).await?;
    }
    Ok(())
}

/// Claims `addr` for this node if nobody holds it; whether it did.
async fn claim_ip(d: &Daemon, addr: IpAddr, lease: LeaseId) -> anyhow::Result<bool> {
    let claim = Claim { node: d.config.node_name.clone(), since: now(), lease };
    let key = ownership::keys::claim(addr);
    let txn = Txn::new().when(Compare::Absent(key.clone())).then(Op::put_leased_json(key, &claim, lease)?);
    match d.store.commit(txn).await {
        Ok(TxnOutcome::Committed(_)) => {
            info!(%addr, "claimed");
            Ok(true)
        }
        // Our own claim, made by an earlier pass whose watch event has not
        // reached the mirror yet, counts as held: dropping the address for
        // that would make it flap.
        Ok(TxnOutcome::CompareFailed(_)) => {
            let current = d.store.get(&ownership::keys::claim(addr)).await?;
            Ok(current
                .and_then(|kv| kv.decode::<Claim>().ok())
                .is_some_and(|c| c.node == d.config.node_name && c.lease == lease))
        }
        Err(StoreError::LeaseExpired(_)) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Binds this node's claim from an earlier lease (a previous daemon) to
/// the current one; whether the claim is held.
async fn rebind(d: &Daemon, kv: &KeyValue, claim: &Claim, lease: LeaseId) -> anyhow::Result<bool> {
    let txn = Txn::new().when(Compare::ModRevision(kv.key.clone(), kv.mod_revision)).then(Op::put_leased_json(
        kv.key.clone(),
        &Claim { lease, ..claim.clone() },
        lease,
    )?);
    match d.store.commit(txn).await {
        Ok(TxnOutcome::Committed(_)) => Ok(true),
        Ok(TxnOutcome::CompareFailed(_)) | Err(StoreError::LeaseExpired(_)) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Makes the interface hold exactly `wanted` of hostgate's addresses. Adds
/// only while still live on `lease` (checked under the address lock, which
/// fencing takes too); addresses hostgate did not add are never touched.
async fn set_addresses(
    d: &Arc<Daemon>,
    addrs: &netif::Addresses,
    iface: &str,
    wanted: &BTreeSet<IpAddr>,
    lease: Option<LeaseId>,
) -> anyhow::Result<()> {
    let _lock = d.addresses_lock.lock().await;
    let live = lease.is_some() && d.standing.borrow().lease() == lease;
    let present = addrs.list().await?;
    for a in present.iter().filter(|a| a.ours && !(live && wanted.contains(&a.addr))) {
        if addrs.remove_ours(a.addr).await? {
            info!(addr = %a.addr, %iface, "customer IP withdrawn");
        }
    }
    if !live {
        return Ok(());
    }
    for addr in wanted {
        if present.iter().any(|p| p.addr == *addr && !p.ours) {
            warn!(%addr, %iface, "customer IP is also a host address; leaving it to the host");
            continue;
        }
        if addrs.add(*addr, address_lifetime(d)).await? {
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

/// In a cluster, customer addresses live one lease TTL in the kernel unless
/// renewed (after each lease renewal): a daemon that dies without
/// withdrawing them leaves them behind about as long as its lease lives
/// (the kernel expires addresses on whole seconds). A live daemon whose
/// renewals stall withdraws them itself before then (fencing). On one node
/// they are permanent: nobody else could take them over.
fn address_lifetime(d: &Daemon) -> Option<u32> {
    d.config.clustered().then_some(d.config.cluster.lease_ttl_secs)
}

/// Renews the lifetime of every customer address held here, while live
/// (the membership loop calls it after each successful lease renewal).
pub(crate) async fn refresh_lifetimes(d: &Daemon, lease: LeaseId) -> anyhow::Result<()> {
    let Some(lifetime) = address_lifetime(d) else { return Ok(()) };
    let _lock = d.addresses_lock.lock().await;
    if d.standing.borrow().lease() != Some(lease) {
        return Ok(());
    }
    let addrs = netif::Addresses::connect(d.config.ip_interface())?;
    for a in addrs.list().await?.into_iter().filter(|a| a.ours) {
        addrs.refresh(a.addr, lifetime).await?;
    }
    Ok(())
}

/// Removes every customer address hostgate added here (fencing, shutdown).
/// The caller holds the address lock.
pub(crate) async fn withdraw_all(d: &Daemon) -> anyhow::Result<()> {
    let iface = d.config.ip_interface();
    let addrs = netif::Addresses::connect(iface)?;
    for a in addrs.list().await?.into_iter().filter(|a| a.ours) {
        if addrs.remove_ours(a.addr).await? {
            info!(addr = %a.addr, %iface, "customer IP withdrawn");
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

//! The load balancer in the daemon: the reconciler that keeps the BPF maps
//! equal to the `lb/` part of the store, and the API handlers that write
//! that part. Handlers never touch the data plane: they commit to the store
//! and wait (briefly) for the reconciler to report the revision applied.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use anyhow::Context;
use axum::{extract::State, http::StatusCode, Json};
use hostgate_api::{Applied, BackendRef, BackendRequest, BackendView, Traffic, VipRef, VipRequest, VipView};
use hostgate_dataplane::abi::LbCounter;
use hostgate_lb::{
    health::HealthCheck,
    maglev::DEFAULT_RING_SIZE,
    model::{keys, BackendSpec, Mode, VipKey, VipSpec, MAX_BACKENDS, MAX_VIPS},
    plan,
};
use hostgate_store::{Compare, KeyValue, Mirror, Op, Store, Txn, TxnOutcome};
use tracing::{info, warn};

use crate::{api::Failure, health, nodes, Daemon};

/// How long a change request waits for the data plane to apply it.
const APPLY_WAIT: Duration = Duration::from_secs(10);
const ID_RETRIES: usize = 8;

/// VIPs, backends and this node's health records, decoded from a mirror.
struct Declared {
    vips: Vec<(VipSpec, u64)>,
    backends: Vec<BackendSpec>,
    /// Backend id -> healthy, for backends with a check.
    health: BTreeMap<u32, bool>,
}

impl Declared {
    /// Checked backends whose check currently fails.
    fn unhealthy(&self) -> BTreeSet<u32> {
        self.backends
            .iter()
            .filter(|b| b.check.is_some() && self.health.get(&b.id) == Some(&false))
            .map(|b| b.id)
            .collect()
    }

    fn health_of(&self, b: &BackendSpec) -> &'static str {
        match (&b.check, self.health.get(&b.id)) {
            (None, _) => "unchecked",
            (Some(_), Some(false)) => "unhealthy",
            (Some(_), _) => "healthy",
        }
    }
}

fn decode(entries: &BTreeMap<String, KeyValue>, node: &str) -> Declared {
    let mut out = Declared { vips: Vec::new(), backends: Vec::new(), health: BTreeMap::new() };
    let health_prefix = health::prefix(node);
    for (key, kv) in entries {
        if let Some(id) = key.strip_prefix(&health_prefix) {
            if let (Ok(id), Ok(record)) = (id.parse::<u32>(), kv.decode::<health::HealthRecord>()) {
                out.health.insert(id, record.healthy);
            }
            continue;
        }
        if key.starts_with(keys::VIPS) {
            match kv.decode::<VipSpec>() {
                Ok(v) => out.vips.push((v, kv.mod_revision)),
                Err(e) => warn!(%key, error = %e, "ignoring undecodable VIP"),
            }
        } else if key.starts_with(keys::BACKENDS) {
            match kv.decode::<BackendSpec>() {
                Ok(b) => out.backends.push(b),
                Err(e) => warn!(%key, error = %e, "ignoring undecodable backend"),
            }
        }
    }
    out
}

/// Everything the reconciler follows lives under these prefixes: `lb/`,
/// `health/<node>/` and `nodes/`. One watch of the whole key space keeps them in step.
/// Follows `lb/` in the store forever, applying every change to the maps.
pub(crate) async fn follow(daemon: Arc<Daemon>) -> anyhow::Result<()> {
    let daemon = &daemon;
    let snap = daemon.store.snapshot("").await?;
    let mut watch = daemon.store.watch("", snap.revision).await?;
    let mut mirror = Mirror::from_snapshot_where(snap, crate::placement_state);
    apply(daemon, &mirror).await?;
    while let Some(batch) = watch.recv().await {
        let mut changed = mirror.apply_where(&batch, crate::placement_state);
        // Coalesce a burst of changes into one apply.
        while let Ok(more) = watch.try_recv() {
            changed |= mirror.apply_where(&more, crate::placement_state);
        }
        if changed {
            apply(daemon, &mirror).await?;
        } else {
            daemon.lb_applied.send_replace(mirror.revision);
        }
    }
    anyhow::bail!("the store's watch ended")
}

async fn apply(daemon: &Arc<Daemon>, mirror: &Mirror) -> anyhow::Result<()> {
    let declared = decode(&mirror.entries, &daemon.config.node_name);
    let unhealthy = declared.unhealthy();
    let vips: Vec<VipSpec> = declared.vips.into_iter().map(|(v, _)| v).collect();
    let site = plan::Site { this_node: daemon.config.node_name.clone(), nodes: nodes::decode(mirror.entries.values()) };
    let (plan, skipped) = plan::build(&vips, &declared.backends, &unhealthy, &site);
    for s in &skipped {
        warn!(vip = %s.vip, backend = %s.backend, reason = %s.reason, "backend not applied");
    }
    let d = daemon.clone();
    let applied = tokio::task::spawn_blocking(move || -> anyhow::Result<bool> {
        let mut guard = d.dataplane();
        match guard.as_mut() {
            Some(dp) => dp.apply_lb(&plan).map(|()| true).context("applying the load balancer"),
            None => Ok(false),
        }
    })
    .await??;
    if applied {
        info!(
            revision = mirror.revision,
            vips = vips.len(),
            backends = declared.backends.len(),
            "load balancer applied"
        );
    }
    daemon.lb_applied.send_replace(mirror.revision);
    Ok(())
}

fn bad_request(e: impl std::fmt::Display) -> Failure {
    Failure(StatusCode::BAD_REQUEST, e.to_string())
}

fn parse_vip(s: &str) -> Result<VipKey, Failure> {
    s.parse().map_err(bad_request)
}

/// Waits until the reconciler applied `revision` (or gives up quietly).
async fn wait_applied(daemon: &Daemon, revision: u64) -> bool {
    let mut rx = daemon.lb_applied.subscribe();
    let reached = tokio::time::timeout(APPLY_WAIT, rx.wait_for(|r| *r >= revision)).await.is_ok_and(|r| r.is_ok());
    reached && daemon.dataplane().is_some()
}

/// The smallest ids in `range` not claimed under `prefix`.
async fn free_ids(store: &dyn Store, prefix: &str, range: std::ops::Range<u32>) -> anyhow::Result<Vec<u32>> {
    let used: BTreeSet<u32> =
        store.snapshot(prefix).await?.kvs.iter().filter_map(|kv| kv.key[prefix.len()..].parse().ok()).collect();
    Ok(range.filter(|id| !used.contains(id)).take(ID_RETRIES).collect())
}

fn store_err(e: impl Into<anyhow::Error>) -> Failure {
    Failure::from(e.into())
}

pub async fn add_vip(
    State(d): State<Arc<Daemon>>,
    Json(req): Json<VipRequest>,
) -> Result<Json<Applied<VipView>>, Failure> {
    let key = parse_vip(&req.vip)?;
    let ring_size = req.ring_size.unwrap_or(DEFAULT_RING_SIZE);
    VipSpec::validate_ring(ring_size).map_err(bad_request)?;
    for id in free_ids(d.store.as_ref(), keys::VIP_IDS, 0..MAX_VIPS).await.map_err(store_err)? {
        let spec = VipSpec { key, id, ring_size };
        let txn = Txn::new()
            .when(Compare::Absent(keys::vip(&key)))
            .when(Compare::Absent(keys::vip_id(id)))
            .then(Op::put_json(keys::vip(&key), &spec).map_err(store_err)?)
            .then(Op::Put(keys::vip_id(id), key.to_string().into_bytes()));
        match d.store.commit(txn).await.map_err(store_err)? {
            TxnOutcome::Committed(revision) => {
                info!(vip = %key, id, "VIP added");
                let applied = wait_applied(&d, revision).await;
                let view = vip_view(&d, &key).await?;
                return Ok(Json(Applied { revision, applied, value: view }));
            }
            TxnOutcome::CompareFailed(0) => {
                return Err(Failure(StatusCode::CONFLICT, format!("VIP {key} already exists")));
            }
            TxnOutcome::CompareFailed(_) => continue, // id taken concurrently: next one
        }
    }
    Err(Failure(StatusCode::CONFLICT, format!("no free VIP id (at most {MAX_VIPS} VIPs)")))
}

pub async fn add_backend(
    State(d): State<Arc<Daemon>>,
    Json(req): Json<BackendRequest>,
) -> Result<Json<Applied<VipView>>, Failure> {
    let vip = parse_vip(&req.vip)?;
    let addr = req.addr.parse().map_err(|_| bad_request(format!("address: {:?} is not an IP address", req.addr)))?;
    let mode: Mode = req.mode.as_deref().unwrap_or("nat").parse().map_err(bad_request)?;
    if d.store.get(&keys::vip(&vip)).await.map_err(store_err)?.is_none() {
        return Err(Failure(StatusCode::NOT_FOUND, format!("VIP {vip} does not exist (hostgate vip add first)")));
    }
    let check = match &req.check {
        Some(c) => Some(HealthCheck {
            probe: HealthCheck::parse_probe(&c.probe).map_err(bad_request)?,
            port: c.port,
            interval_ms: c.interval_ms.unwrap_or(2000),
            timeout_ms: c.timeout_ms.unwrap_or(1000),
            rise: c.rise.unwrap_or(2),
            fall: c.fall.unwrap_or(3),
        }),
        None => None,
    };
    for id in free_ids(d.store.as_ref(), keys::BACKEND_IDS, 1..MAX_BACKENDS).await.map_err(store_err)? {
        let spec = BackendSpec {
            vip,
            addr,
            port: req.port,
            weight: req.weight.unwrap_or(1),
            mode,
            // A NAT backend is a container of the node it was added on.
            node: req.node.clone().or_else(|| (mode == Mode::Nat).then(|| d.config.node_name.clone())),
            id,
            check: check.clone(),
        };
        spec.validate().map_err(bad_request)?;
        let key = keys::backend(&vip, &spec.identity());
        let txn = Txn::new()
            .when(Compare::Present(keys::vip(&vip)))
            .when(Compare::Absent(key.clone()))
            .when(Compare::Absent(keys::backend_id(id)))
            .then(Op::put_json(key, &spec).map_err(store_err)?)
            .then(Op::Put(keys::backend_id(id), spec.identity().into_bytes()));
        match d.store.commit(txn).await.map_err(store_err)? {
            TxnOutcome::Committed(revision) => {
                info!(%vip, backend = %spec.identity(), id, weight = spec.weight, "backend added");
                let applied = wait_applied(&d, revision).await;
                return Ok(Json(Applied { revision, applied, value: vip_view(&d, &vip).await? }));
            }
            TxnOutcome::CompareFailed(0) => {
                return Err(Failure(StatusCode::NOT_FOUND, format!("VIP {vip} was removed")))
            }
            TxnOutcome::CompareFailed(1) => {
                return Err(Failure(
                    StatusCode::CONFLICT,
                    format!("backend {} of {vip} already exists (remove it first to change it)", spec.identity()),
                ))
            }
            TxnOutcome::CompareFailed(_) => continue,
        }
    }
    Err(Failure(StatusCode::CONFLICT, format!("no free backend id (at most {} backends)", MAX_BACKENDS - 1)))
}

pub async fn remove_vip(
    State(d): State<Arc<Daemon>>,
    Json(req): Json<VipRef>,
) -> Result<Json<Applied<String>>, Failure> {
    let vip = parse_vip(&req.vip)?;
    let Some(kv) = d.store.get(&keys::vip(&vip)).await.map_err(store_err)? else {
        return Err(Failure(StatusCode::NOT_FOUND, format!("VIP {vip} does not exist")));
    };
    let spec: VipSpec = kv.decode().map_err(store_err)?;
    let backends = d.store.snapshot(&keys::backends_of(&vip)).await.map_err(store_err)?;
    let mut txn = Txn::new()
        .when(Compare::ModRevision(kv.key.clone(), kv.mod_revision))
        .then(Op::Delete(kv.key.clone()))
        .then(Op::Delete(keys::vip_id(spec.id)))
        .then(Op::DeletePrefix(keys::backends_of(&vip)));
    for b in &backends.kvs {
        if let Ok(spec) = b.decode::<BackendSpec>() {
            txn = txn.then(Op::Delete(keys::backend_id(spec.id)));
        }
    }
    match d.store.commit(txn).await.map_err(store_err)? {
        TxnOutcome::Committed(revision) => {
            info!(%vip, "VIP removed");
            let applied = wait_applied(&d, revision).await;
            Ok(Json(Applied { revision, applied, value: vip.to_string() }))
        }
        TxnOutcome::CompareFailed(_) => {
            Err(Failure(StatusCode::CONFLICT, format!("VIP {vip} changed meanwhile; retry")))
        }
    }
}

pub async fn remove_backend(
    State(d): State<Arc<Daemon>>,
    Json(req): Json<BackendRef>,
) -> Result<Json<Applied<VipView>>, Failure> {
    let vip = parse_vip(&req.vip)?;
    let key = keys::backend(&vip, &req.backend);
    let Some(kv) = d.store.get(&key).await.map_err(store_err)? else {
        return Err(Failure(StatusCode::NOT_FOUND, format!("{vip} has no backend {}", req.backend)));
    };
    let spec: BackendSpec = kv.decode().map_err(store_err)?;
    let txn = Txn::new()
        .when(Compare::ModRevision(key.clone(), kv.mod_revision))
        .then(Op::Delete(key))
        .then(Op::Delete(keys::backend_id(spec.id)));
    match d.store.commit(txn).await.map_err(store_err)? {
        TxnOutcome::Committed(revision) => {
            info!(%vip, backend = %req.backend, "backend removed");
            let applied = wait_applied(&d, revision).await;
            Ok(Json(Applied { revision, applied, value: vip_view(&d, &vip).await? }))
        }
        TxnOutcome::CompareFailed(_) => Err(Failure(StatusCode::CONFLICT, "backend changed meanwhile; retry".into())),
    }
}

pub async fn list_vips(State(d): State<Arc<Daemon>>) -> Result<Json<Vec<VipView>>, Failure> {
    Ok(Json(views(&d, None).await?))
}

pub async fn show_vip(State(d): State<Arc<Daemon>>, Json(req): Json<VipRef>) -> Result<Json<VipView>, Failure> {
    let vip = parse_vip(&req.vip)?;
    Ok(Json(vip_view(&d, &vip).await?))
}

async fn vip_view(d: &Daemon, vip: &VipKey) -> Result<VipView, Failure> {
    views(d, Some(vip)).await?.pop().ok_or_else(|| Failure(StatusCode::NOT_FOUND, format!("VIP {vip} does not exist")))
}

fn traffic(c: Option<&LbCounter>) -> Traffic {
    c.map_or_else(Traffic::default, |c| Traffic { packets: c.packets, bytes: c.bytes, new_flows: c.new_flows })
}

/// Views of every VIP (or one), with live counters.
pub(crate) async fn views(d: &Daemon, only: Option<&VipKey>) -> Result<Vec<VipView>, Failure> {
    let snap = d.store.snapshot("").await.map_err(store_err)?;
    let declared = decode(&Mirror::from_snapshot(snap).entries, &d.config.node_name);
    let vips: Vec<(VipSpec, u64)> =
        declared.vips.iter().filter(|(v, _)| only.is_none_or(|k| v.key == *k)).cloned().collect();
    let vip_ids: Vec<u32> = vips.iter().map(|(v, _)| v.id).collect();
    let backend_ids: Vec<u32> = declared.backends.iter().map(|b| b.id).collect();
    let stats = match d.dataplane().as_ref() {
        Some(dp) => Some(dp.lb_stats(&vip_ids, &backend_ids).map_err(|e| Failure::from(anyhow::Error::from(e)))?),
        None => None,
    };
    let mut out = Vec::new();
    for (v, revision) in vips {
        let mut backends: Vec<BackendView> = declared
            .backends
            .iter()
            .filter(|b| b.vip == v.key)
            .map(|b| BackendView {
                backend: b.identity(),
                id: b.id,
                weight: b.weight,
                mode: b.mode.to_string(),
                node: b.node.clone(),
                health: declared.health_of(b).into(),
                traffic: traffic(stats.as_ref().and_then(|s| s.backends.get(&b.id))),
            })
            .collect();
        backends.sort_by(|a, b| a.backend.cmp(&b.backend));
        out.push(VipView {
            vip: v.key.to_string(),
            id: v.id,
            ring_size: v.ring_size,
            traffic: traffic(stats.as_ref().and_then(|s| s.vips.get(&v.id))),
            backends,
            revision,
        });
    }
    out.sort_by(|a, b| a.vip.cmp(&b.vip));
    Ok(out)
}

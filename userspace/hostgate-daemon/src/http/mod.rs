//! The HTTP reverse proxy (issue #10): virtual hosts declared through the
//! API (`http/vhosts/<host>`, one key each, validated before commit), a
//! follower that compiles them into a routing table and swaps it whole,
//! and pingora proxying every accepted connection (`proxy.rs`,
//! `serve.rs`). The routing and selection logic is hostgate-http's.

mod cache;
mod certs;
mod proxy;
mod serve;

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    sync::{Arc, Mutex, RwLock},
};

use axum::{extract::State, http::StatusCode, Json};
pub(crate) use certs::follow as follow_certs;
pub use certs::{list_certs, put_cert, remove_cert};
use hostgate_api::{HttpCounters, RouteView, VhostRef, VhostView};
use hostgate_http::{Backend, Balance, Route, RoutingTable, Vhost};
use hostgate_ipam::model::keys as ipam_keys;
use hostgate_store::{Compare, Op, Txn, TxnOutcome};
pub(crate) use serve::{follow, listen};
use tracing::info;

use crate::{api::Failure, Daemon};

/// Store keys of the HTTP proxy.
pub mod keys {
    pub const VHOSTS: &str = "http/vhosts/";

    pub const CERTS: &str = "http/certs/";

    pub fn vhost(host: &str) -> String {
        format!("{VHOSTS}{host}")
    }

    pub fn cert(name: &str) -> String {
        format!("{CERTS}{name}")
    }
}

/// What the proxy reads per request and the follower writes per change.
pub struct Shared {
    /// The routing table in force; requests clone the `Arc` and keep the
    /// table they started with, so a swap never disturbs one in flight.
    table: RwLock<Arc<RoutingTable>>,
    /// Last health check result per backend address, carried into each
    /// new table (a new table starts with everything healthy otherwise).
    health: Mutex<HashMap<SocketAddr, bool>>,
    /// (vhost, backend) -> counters.
    counters: Mutex<BTreeMap<(String, String), HttpCounters>>,
    /// The TLS listeners' certificate resolver; the certificate follower
    /// swaps its index, a handshake reads the index in force.
    certs: Arc<hostgate_http::tls::LiveResolver>,
    /// Tells pingora's connection loops to stop reusing connections.
    drain: Mutex<Option<tokio::sync::watch::Sender<bool>>>,
    /// Responses of vhosts with `cache` on.
    cache: cache::ResponseCache,
}

impl Shared {
    pub fn new(config: &hostgate_config::HttpConfig) -> Shared {
        Shared {
            table: Default::default(),
            health: Default::default(),
            counters: Default::default(),
            certs: Default::default(),
            drain: Default::default(),
            cache: cache::ResponseCache::new(config.cache_mib as usize * 1024 * 1024),
        }
    }

    pub fn table(&self) -> Arc<RoutingTable> {
        self.table.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn swap(&self, table: RoutingTable) {
        for (addr, healthy) in self.health.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            table.set_healthy(*addr, *healthy);
        }
        *self.table.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(table);
    }

    fn set_health(&self, addr: SocketAddr, healthy: bool) {
        self.health.lock().unwrap_or_else(|p| p.into_inner()).insert(addr, healthy);
        self.table().set_healthy(addr, healthy);
    }

    pub fn count(&self, vhost: &str, backend: &str, error: bool) {
        let mut all = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        let c = all.entry((vhost.to_string(), backend.to_string())).or_insert_with(|| HttpCounters {
            vhost: vhost.to_string(),
            backend: backend.to_string(),
            ..HttpCounters::default()
        });
        c.requests += 1;
        c.errors += u64::from(error);
    }

    pub fn counters(&self) -> Vec<HttpCounters> {
        self.counters.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }
}

fn bad(m: impl Into<String>) -> Failure {
    Failure(StatusCode::BAD_REQUEST, m.into())
}

fn store_err(e: hostgate_store::StoreError) -> Failure {
    Failure::from(anyhow::Error::from(e))
}

/// The request as a vhost, validated; errors name the field.
fn parse_vhost(v: &VhostView) -> Result<Vhost, Failure> {
    let balance: Balance = match &v.balance {
        Some(b) => b.parse().map_err(|e| bad(format!("balance: {e}")))?,
        None => Balance::default(),
    };
    let mut routes = Vec::new();
    for r in &v.routes {
        let field = if r.prefix == "/" { "backend".to_string() } else { format!("path {}", r.prefix) };
        let backends = r
            .backends
            .iter()
            .map(|b| Backend::parse(&field, b))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(e.to_string()))?;
        routes.push(Route { prefix: r.prefix.clone(), backends });
    }
    let vhost = Vhost {
        host: v.host.clone(),
        customer: v.customer.clone(),
        routes,
        balance,
        https_redirect: v.https_redirect,
        hsts_max_age: v.hsts_max_age,
        max_body_bytes: v.max_body_bytes,
        cache: v.cache,
    };
    vhost.validate().map_err(|e| bad(e.to_string()))?;
    Ok(vhost)
}

fn view(v: &Vhost) -> VhostView {
    VhostView {
        host: v.host.clone(),
        customer: v.customer.clone(),
        routes: v
            .routes
            .iter()
            .map(|r| RouteView {
                prefix: r.prefix.clone(),
                backends: r.backends.iter().map(ToString::to_string).collect(),
            })
            .collect(),
        balance: Some(v.balance.to_string()),
        https_redirect: v.https_redirect,
        hsts_max_age: v.hsts_max_age,
        max_body_bytes: v.max_body_bytes,
        cache: v.cache,
        create_only: false,
    }
}

/// Adds (or, without `create_only`, replaces) a vhost. The customer must
/// exist; the commit is one key, so the proxy sees the whole vhost or none.
pub async fn put_vhost(State(d): State<Arc<Daemon>>, Json(req): Json<VhostView>) -> Result<Json<VhostView>, Failure> {
    let v = parse_vhost(&req)?;
    let key = keys::vhost(&v.host);
    let mut txn = Txn::new().when(Compare::Present(ipam_keys::customer(&v.customer)));
    if req.create_only {
        txn = txn.when(Compare::Absent(key.clone()));
    }
    let txn = txn.then(Op::put_json(key, &v).map_err(store_err)?);
    match d.store.commit(txn).await.map_err(store_err)? {
        TxnOutcome::Committed(_) => {
            info!(vhost = %v.host, customer = %v.customer, "HTTP vhost stored");
            Ok(Json(view(&v)))
        }
        TxnOutcome::CompareFailed(0) => Err(Failure(
            StatusCode::NOT_FOUND,
            format!("customer: {} does not exist (hostgate customer add)", v.customer),
        )),
        TxnOutcome::CompareFailed(_) => Err(Failure(
            StatusCode::CONFLICT,
            format!("host: {} exists already (hostgate http vhost set replaces it)", v.host),
        )),
    }
}

pub async fn list_vhosts(State(d): State<Arc<Daemon>>) -> Result<Json<Vec<VhostView>>, Failure> {
    let snap = d.store.snapshot(keys::VHOSTS).await.map_err(store_err)?;
    Ok(Json(snap.kvs.iter().filter_map(|kv| kv.decode::<Vhost>().ok()).map(|v| view(&v)).collect()))
}

pub async fn remove_vhost(State(d): State<Arc<Daemon>>, Json(req): Json<VhostRef>) -> Result<Json<VhostRef>, Failure> {
    let key = keys::vhost(&req.host);
    let txn = Txn::new().when(Compare::Present(key.clone())).then(Op::Delete(key));
    match d.store.commit(txn).await.map_err(store_err)? {
        TxnOutcome::Committed(_) => Ok(Json(req)),
        TxnOutcome::CompareFailed(_) => {
            Err(Failure(StatusCode::NOT_FOUND, format!("host: vhost {} does not exist", req.host)))
        }
    }
}

/// Drops a vhost's cached responses on this node.
pub async fn purge_cache(
    State(d): State<Arc<Daemon>>,
    Json(mut req): Json<hostgate_api::CachePurge>,
) -> Result<Json<hostgate_api::CachePurge>, Failure> {
    if let Some(path) = req.path.as_deref().filter(|p| !p.starts_with('/')) {
        return Err(bad(format!("path: {path:?} must start with /")));
    }
    let exists = d.store.get(&keys::vhost(&req.host)).await.map_err(store_err)?.is_some();
    if !exists {
        return Err(Failure(StatusCode::NOT_FOUND, format!("host: vhost {} does not exist", req.host)));
    }
    req.purged = d.http.cache.purge(&req.host, req.path.as_deref());
    info!(vhost = %req.host, path = ?req.path, purged = req.purged, "HTTP cache purged");
    Ok(Json(req))
}

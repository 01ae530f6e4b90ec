//! The HTTP reverse proxy (issue #10): virtual hosts declared through the
//! API (`http/vhosts/<host>`, one key each, validated before commit), a
//! follower that compiles them into a routing table and swaps it whole,
//! and pingora proxying every accepted connection (`proxy.rs`,
//! `serve.rs`). The routing and selection logic is hostgate-http's.

mod acme;
mod buffered;
mod cache;
mod certs;
mod fast;
mod h2watch;
mod head_deadline;
mod health;
mod proxy;
mod serve;

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex, RwLock},
};

pub use acme::list_acme;
pub(crate) use acme::{follow_challenges, run as run_acme};
use axum::{extract::State, http::StatusCode, Json};
pub(crate) use cache::follow_purges;
pub(crate) use certs::follow as follow_certs;
pub use certs::{list_certs, put_cert, remove_cert};
use hostgate_api::{HttpCounters, RouteView, VhostRef, VhostView};
use hostgate_http::{
    ratelimit::{Limiter, Verdict},
    stats, Backend, Balance, LogFormat, RateLimit, Route, RoutingTable, Vhost,
};
use hostgate_ipam::model::keys as ipam_keys;
use hostgate_store::{Compare, Op, Txn, TxnOutcome};
pub use serve::Front;
pub(crate) use serve::{follow, listen};
use tracing::info;

use crate::{api::Failure, Daemon};

/// Store keys of the HTTP proxy.
pub mod keys {
    pub const VHOSTS: &str = "http/vhosts/";

    pub const CERTS: &str = "http/certs/";

    /// Each node's latest cache purge (`purge_cache`); every put is one
    /// purge for the other nodes to repeat (`cache::follow_purges`).
    pub const PURGES: &str = "http/purges/";

    pub fn purge(node: &str) -> String {
        format!("{PURGES}{node}")
    }

    pub fn vhost(host: &str) -> String {
        format!("{VHOSTS}{host}")
    }

    pub fn cert(name: &str) -> String {
        format!("{CERTS}{name}")
    }

    /// The ACME account (credentials with its private key, and the
    /// directory it belongs to), written once by compare-and-set.
    pub const ACME_ACCOUNT: &str = "http/acme/account";
    /// Per-name issuer records (state, backoff, last error).
    pub const ACME_ORDERS: &str = "http/acme/orders/";
    /// Pending HTTP-01 answers: token -> key authorization.
    pub const ACME_CHALLENGES: &str = "http/acme/challenges/";
    /// Which node issues (bound to its membership lease).
    pub const ACME_LOCK: &str = "http/acme/lock";

    pub fn acme_order(name: &str) -> String {
        format!("{ACME_ORDERS}{name}")
    }

    pub fn acme_challenge(token: &str) -> String {
        format!("{ACME_CHALLENGES}{token}")
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
    /// vhost -> backend -> counters (nested so a lookup borrows: no
    /// allocation per request), one shard per thread that counts (see
    /// `counter_shard`), summed when read.
    counters: Vec<CounterShard>,
    /// Bumped by every table swap: a connection keeps its table until
    /// this moves (no shared lock or reference count per request).
    table_version: std::sync::atomic::AtomicU64,
    /// The TLS listeners' certificate resolver; the certificate follower
    /// swaps its index, a handshake reads the index in force.
    certs: Arc<hostgate_http::tls::LiveResolver>,
    /// Responses of vhosts with `cache` on.
    cache: cache::ResponseCache,
    /// Per-vhost rate limiters (vhosts with a limit only).
    limiters: Mutex<HashMap<String, Limiter>>,
    /// The origin of the limiters' clock.
    epoch: std::sync::OnceLock<std::time::Instant>,
    /// The per-customer access logs' queue, once the listeners run.
    logs: std::sync::OnceLock<crate::access_log::AccessLogs>,
    /// The node's default access log format (`[http] access_log`).
    log_format: std::sync::OnceLock<LogFormat>,
    /// ACME HTTP-01 answers in force: token -> key authorization (the
    /// challenge follower mirrors `http/acme/challenges/`).
    challenges: RwLock<HashMap<String, String>>,
    /// Backend CA bundles (`--backend-ca`) as pingora takes them, by PEM:
    /// parsed and hashed once, not per request.
    backend_cas: Mutex<HashMap<String, BackendCa>>,
}

/// A vhost's `--backend-ca`, ready for pingora's peer.
#[derive(Clone)]
pub struct BackendCa {
    pub certificates: Arc<pingora::protocols::tls::CaType>,
    /// The peer's pool key: pingora's own leaves the CA out.
    pub pool_key: u64,
}

/// Counter shards: the connection workers count in shards of their own,
/// so two cores never take turns on one lock and its cache line per
/// request.
const COUNTER_SHARDS: usize = 8;

/// One shard, on a cache line (two, for the adjacent-line prefetcher) of
/// its own.
#[derive(Default)]
#[repr(align(128))]
struct CounterShard(Mutex<BTreeMap<String, BTreeMap<String, HttpCounters>>>);

/// The calling thread's shard (threads are numbered as they first count).
fn counter_shard() -> usize {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % COUNTER_SHARDS;
    }
    SHARD.with(|s| *s)
}

/// Adds `b`'s counts to `a` (same vhost and backend).
fn add_counters(a: &mut HttpCounters, b: &HttpCounters) {
    a.requests += b.requests;
    a.errors += b.errors;
    for (x, y) in a.status_classes.iter_mut().zip(b.status_classes) {
        *x += y;
    }
    a.bytes_in += b.bytes_in;
    a.bytes_out += b.bytes_out;
    for (x, y) in a.latency_buckets.iter_mut().zip(&b.latency_buckets) {
        *x += y;
    }
    a.latency_sum_us += b.latency_sum_us;
    a.rate_limited += b.rate_limited;
    a.too_large += b.too_large;
    a.upgraded += b.upgraded;
}

/// What one finished request adds to its (vhost, backend) counters.
pub struct Outcome {
    pub status: u16,
    pub error: bool,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub latency_us: u64,
    pub upgraded: bool,
}

impl Shared {
    pub fn new(config: &hostgate_config::HttpConfig) -> Shared {
        Shared {
            table: Default::default(),
            health: Default::default(),
            counters: (0..COUNTER_SHARDS).map(|_| CounterShard::default()).collect(),
            table_version: Default::default(),
            certs: Default::default(),
            limiters: Default::default(),
            epoch: Default::default(),
            logs: Default::default(),
            log_format: Default::default(),
            challenges: Default::default(),
            backend_cas: Default::default(),
            cache: cache::ResponseCache::new(config.cache_mib as usize * 1024 * 1024),
        }
    }

    /// The key authorization for an ACME HTTP-01 token, if one is pending.
    pub fn challenge(&self, token: &str) -> Option<String> {
        self.challenges.read().unwrap_or_else(|p| p.into_inner()).get(token).cloned()
    }

    /// The CA certificates of a vhost's `--backend-ca`, parsed (the vhost
    /// was validated, so it parses; `None` otherwise). The cache is
    /// emptied when it reaches 64 bundles: the ones in use are parsed
    /// again at their next request.
    pub fn backend_ca(&self, pem: &str) -> Option<BackendCa> {
        let mut cas = self.backend_cas.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ca) = cas.get(pem) {
            return Some(ca.clone());
        }
        let ders = hostgate_http::tls::ca_certificates(pem).ok()?;
        let wrapped: Vec<_> = ders
            .into_iter()
            .map(|der| pingora::utils::tls::WrappedX509::new(der, pingora::utils::tls::parse_x509))
            .collect();
        let mut hash = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(pem, &mut hash);
        let ca = BackendCa {
            certificates: Arc::from(wrapped.into_boxed_slice()),
            pool_key: std::hash::Hasher::finish(&hash),
        };
        if cas.len() >= 64 {
            cas.clear();
        }
        cas.insert(pem.to_string(), ca.clone());
        Some(ca)
    }

    /// Moves at every table swap (see `table_version`).
    pub fn table_version(&self) -> u64 {
        self.table_version.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn table(&self) -> Arc<RoutingTable> {
        self.table.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn swap(&self, table: RoutingTable) {
        for (addr, healthy) in self.health.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            table.set_healthy(*addr, *healthy);
        }
        *self.table.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(table);
        self.table_version.fetch_add(1, std::sync::atomic::Ordering::Release);
    }

    /// A backend of `vhost` refused or timed out a connection (either
    /// path): an error counted for (vhost, backend), and passive health
    /// takes the backend out of its pools until the next active check
    /// finds it up (within a second).
    pub fn connect_failed(&self, vhost: &str, addr: SocketAddr) {
        self.with_counters(vhost, &addr.to_string(), |c| c.errors += 1);
        let was = self.health.lock().unwrap_or_else(|p| p.into_inner()).insert(addr, false);
        self.table().set_healthy(addr, false);
        if was != Some(false) {
            tracing::warn!(backend = %addr, "HTTP backend down: connection failed (until a health check passes)");
        }
    }

    fn set_health(&self, addr: SocketAddr, healthy: bool) {
        self.health.lock().unwrap_or_else(|p| p.into_inner()).insert(addr, healthy);
        self.table().set_healthy(addr, healthy);
    }

    /// Changes the counters of (vhost, backend), creating them first.
    fn with_counters(&self, vhost: &str, backend: &str, f: impl FnOnce(&mut HttpCounters)) {
        let mut all = self.counters[counter_shard()].0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = all.get_mut(vhost).and_then(|b| b.get_mut(backend)) {
            return f(c);
        }
        let mut c = HttpCounters {
            vhost: vhost.to_string(),
            backend: backend.to_string(),
            latency_buckets: vec![0; stats::BUCKETS],
            ..HttpCounters::default()
        };
        f(&mut c);
        all.entry(vhost.to_string()).or_default().insert(backend.to_string(), c);
    }

    /// A request that ended (answered or not).
    pub fn record(&self, vhost: &str, backend: &str, o: &Outcome) {
        self.with_counters(vhost, backend, |c| {
            c.requests += 1;
            c.errors += u64::from(o.error || o.status >= 500);
            if let Some(class) = stats::status_class(o.status) {
                c.status_classes[class] += 1;
            }
            c.bytes_in += o.bytes_in;
            c.bytes_out += o.bytes_out;
            if let Some(b) = c.latency_buckets.get_mut(stats::bucket(o.latency_us)) {
                *b += 1;
            }
            c.latency_sum_us += o.latency_us;
            c.upgraded += u64::from(o.upgraded);
            c.rate_limited += u64::from(o.status == 429);
            c.too_large += u64::from(o.status == 413);
        });
    }

    /// One request of `client` to `vhost` under `limit`: allowed or not.
    pub fn rate_check(&self, vhost: &str, limit: RateLimit, client: IpAddr) -> Verdict {
        let now = self.epoch.get_or_init(std::time::Instant::now).elapsed().as_nanos() as u64;
        let mut all = self.limiters.lock().unwrap_or_else(|p| p.into_inner());
        // A new limit (or a vhost's first request) starts with full buckets.
        if all.get(vhost).is_none_or(|l| l.limit() != limit) {
            all.insert(vhost.to_string(), Limiter::new(limit));
        }
        all.get_mut(vhost).map_or(Verdict::Untracked, |l| l.check(client, now))
    }

    /// Forgets idle clients, and limiters of vhosts that lost their limit.
    fn tidy_limiters(&self) {
        let table = self.table();
        let now = self.epoch.get_or_init(std::time::Instant::now).elapsed().as_nanos() as u64;
        let mut all = self.limiters.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|host, l| {
            l.forget_idle(now);
            table.vhost(host.as_bytes()).is_some_and(|v| v.vhost.host == *host && v.vhost.rate_limit.is_some())
        });
    }

    /// Queues an access log line for `customer`, in the vhost's format
    /// (or the node's). The entry is built only when a line is written:
    /// with logging off, a request allocates nothing for it.
    pub fn log(
        &self,
        customer: &str,
        format: Option<LogFormat>,
        entry: impl FnOnce() -> hostgate_http::accesslog::Entry,
    ) {
        let Some(logs) = self.logs.get() else { return };
        let format = format.unwrap_or_else(|| self.log_format.get().copied().unwrap_or_default());
        if format == LogFormat::Off {
            return;
        }
        if let Some(line) = entry().format(format) {
            logs.write(customer, line);
        }
    }

    pub fn log_dropped(&self) -> u64 {
        self.logs.get().map_or(0, |l| l.dropped())
    }

    pub fn counters(&self) -> Vec<HttpCounters> {
        let mut sum: BTreeMap<(String, String), HttpCounters> = BTreeMap::new();
        for shard in &self.counters {
            let all = shard.0.lock().unwrap_or_else(|p| p.into_inner());
            for c in all.values().flat_map(BTreeMap::values) {
                match sum.get_mut(&(c.vhost.clone(), c.backend.clone())) {
                    Some(total) => add_counters(total, c),
                    None => {
                        sum.insert((c.vhost.clone(), c.backend.clone()), c.clone());
                    }
                }
            }
        }
        sum.into_values().collect()
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
    let rate_limit = match (v.rate_limit, v.rate_burst) {
        (Some(per_second), burst) => Some(RateLimit { per_second, burst: burst.unwrap_or(per_second) }),
        (None, Some(_)) => return Err(bad("rate-burst: needs --rate-limit")),
        (None, None) => None,
    };
    let access_log = match &v.access_log {
        Some(f) => Some(f.parse::<LogFormat>().map_err(|e| bad(format!("access-log: {e}")))?),
        None => None,
    };
    let tls_asked = v.backend_sni.is_some() || v.backend_ca_pem.is_some() || v.backend_no_verify;
    if tls_asked && !v.backend_tls {
        return Err(bad("backend-tls: --backend-sni, --backend-ca and --backend-no-verify need --backend-tls"));
    }
    let backend_tls = match (v.backend_tls, &v.backend_sni) {
        (false, _) => None,
        (true, None) if v.host.starts_with("*.") => {
            return Err(bad("backend-sni: a wildcard vhost needs the name its backends' certificates carry"))
        }
        (true, sni) => Some(hostgate_http::model::BackendTls {
            name: sni.clone().unwrap_or_else(|| v.host.clone()),
            verify: !v.backend_no_verify,
            ca_pem: v.backend_ca_pem.clone(),
        }),
    };
    let health = match (&v.health_path, v.health_status) {
        (Some(path), status) => {
            Some(hostgate_http::model::HealthCheck { path: path.clone(), expect_status: status.unwrap_or(200) })
        }
        (None, Some(_)) => return Err(bad("health-status: needs --health-path")),
        (None, None) => None,
    };
    let vhost = Vhost {
        connect_timeout_secs: v.connect_timeout_secs,
        read_timeout_secs: v.read_timeout_secs,
        error_pages: v.error_pages.clone(),
        health,
        backend_tls,
        rate_limit,
        proxy_protocol: v.proxy_protocol,
        access_log,
        acme: v.acme,
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
        rate_limit: v.rate_limit.map(|r| r.per_second),
        rate_burst: v.rate_limit.map(|r| r.burst),
        proxy_protocol: v.proxy_protocol,
        access_log: v.access_log.map(|f| f.to_string()),
        acme: v.acme,
        backend_tls: v.backend_tls.is_some(),
        backend_sni: v.backend_tls.as_ref().map(|t| t.name.clone()),
        backend_ca_pem: v.backend_tls.as_ref().and_then(|t| t.ca_pem.clone()),
        backend_no_verify: v.backend_tls.as_ref().is_some_and(|t| !t.verify),
        health_path: v.health.as_ref().map(|h| h.path.clone()),
        health_status: v.health.as_ref().map(|h| h.expect_status),
        error_pages: v.error_pages.clone(),
        connect_timeout_secs: v.connect_timeout_secs,
        read_timeout_secs: v.read_timeout_secs,
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
    // Its ACME record goes with it (state and backoff of a name no longer served).
    let txn = Txn::new()
        .when(Compare::Present(key.clone()))
        .then(Op::Delete(key))
        .then(Op::Delete(keys::acme_order(&req.host)));
    match d.store.commit(txn).await.map_err(store_err)? {
        TxnOutcome::Committed(_) => Ok(Json(req)),
        TxnOutcome::CompareFailed(_) => {
            Err(Failure(StatusCode::NOT_FOUND, format!("host: vhost {} does not exist", req.host)))
        }
    }
}

/// Drops a vhost's cached responses on this node, then tells the others
/// through the store (each caches on its own); `purged` counts this node's.
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
    let record = cache::Purge { host: req.host.clone(), path: req.path.clone(), at: crate::now() };
    let put = Op::put_json(keys::purge(&d.config.node_name), &record).map_err(store_err)?;
    d.store.commit(Txn::new().then(put)).await.map_err(store_err)?;
    Ok(Json(req))
}

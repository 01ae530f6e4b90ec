//! Following the store and serving connections.
//!
//! pingora is used as a library, not as the process owner: no
//! `pingora::server::Server` (which wants to own the process, its signals
//! and its runtimes). Each `[http] listen` address is a tokio listener on
//! each connection worker (`crate::workers`); every accepted connection becomes a pingora
//! `Stream` (with its socket digest, so the peer address is known):
//! HTTP/1.1 goes to `fast::serve_h1` (simple requests forwarded there, the
//! connection handed to the `HttpProxy` app at the first other one, by
//! `head_deadline::serve_h1`, pingora's own keep-alive loop plus a
//! deadline on every request head), HTTP/2 to the app's
//! `ServerApp::process_new`. `[http] listen_tls`
//! connections first go through pingora's rustls `Acceptor`, built from
//! our own `ServerConfig` (the live per-SNI resolver, TLS 1.2/1.3, ALPN h2
//! + http/1.1) by `from_server_config`; the negotiated ALPN picks the loop.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use hostgate_http::{RoutingTable, Vhost};
use hostgate_store::Mirror;
use pingora::{
    apps::ServerApp,
    listeners::tls::Acceptor,
    protocols::{l4::stream::Stream as L4Stream, Ssl, ALPN},
    proxy::HttpProxy,
    server::configuration::ServerConf,
};
use std::os::fd::OwnedFd;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::{
    buffered::{self, Buffered},
    fast,
    h2watch::{GoawayCounts, GoawayWatch},
    health, keys,
    proxy::Proxy,
    Shared,
};
use crate::{upgrade::Inherited, Daemon};

/// Follows `http/vhosts/`: every change rebuilds the whole table and swaps
/// it in. A stored vhost that does not validate (written by an older or
/// newer daemon) is left out and logged; the others are served.
pub(crate) async fn follow(d: Arc<Daemon>) -> anyhow::Result<()> {
    let snap = d.store.snapshot(keys::VHOSTS).await?;
    let mut watch = d.store.watch(keys::VHOSTS, snap.revision).await?;
    let mut mirror = Mirror::from_snapshot(snap);
    loop {
        swap_table(&d, mirror.entries.values());
        let batch = watch.recv().await.ok_or_else(|| anyhow::anyhow!("the store's watch ended"))?;
        mirror.apply(&batch);
    }
}

/// Builds the routing table from stored vhosts and swaps it in.
fn swap_table<'a>(d: &Daemon, kvs: impl Iterator<Item = &'a hostgate_store::KeyValue>) {
    let vhosts = kvs.filter_map(|kv| kv.decode::<Vhost>().ok());
    let (table, refused) = RoutingTable::build(vhosts);
    for (host, e) in refused {
        warn!(vhost = %host, error = %e, "stored vhost refused; the others are served");
    }
    debug!(vhosts = table.len(), "HTTP routing table swapped");
    d.http.swap(table);
}

/// Binds (or adopts, from a previous daemon) every `[http] listen` and
/// `listen_tls` address, all or nothing, before the daemon reports ready,
/// and serves them on the connection workers (`front`), which outlive this
/// daemon's other services across an upgrade.
pub(crate) async fn listen(d: &Arc<Daemon>, inherited: &mut Inherited) -> anyhow::Result<()> {
    let front = d.front.clone();
    let plain = bind_all(&front, inherited, "http", "http.listen", &d.config.http.listen_addrs())?;
    let tls = bind_all(&front, inherited, "https", "http.listen_tls", &d.config.http.listen_tls_addrs())?;
    if plain.is_empty() && tls.is_empty() {
        return Ok(());
    }
    // The vhosts are loaded before the first request (the follower may not
    // have run yet): no 404 for a known site just after a restart.
    let snap = d.store.snapshot(keys::VHOSTS).await.context("loading the vhosts (http/vhosts/)")?;
    swap_table(d, snap.kvs.iter());
    let format: hostgate_http::LogFormat =
        d.config.http.access_log_format().parse().map_err(|e: String| anyhow::anyhow!("http.access_log: {e}"))?;
    let _ = d.http.log_format.set(format);
    let dir = d.config.http.access_log_dir.clone().unwrap_or_else(|| d.config.state_dir.join("log/http"));
    if d.http.logs.get().is_none() {
        let _ = d.http.logs.set(crate::access_log::AccessLogs::start(dir.clone(), "http-access-log")?);
        info!(dir = %dir.display(), %format, "HTTP access logs per customer");
    }
    let header_timeout = Duration::from_secs(d.config.http.header_timeout_secs.into());
    let conf = Arc::new(ServerConf::default());
    let app = |tls| {
        let app = Arc::new(pingora::proxy::http_proxy(&conf, Proxy::new(d.http.clone(), tls)));
        front.apps.lock().unwrap_or_else(|p| p.into_inner()).push(app.clone());
        app
    };
    let acceptor = if tls.is_empty() {
        None
    } else {
        // The stored certificates are loaded before the first handshake:
        // a client never gets the default (or none) for a name the store
        // has a certificate for, not even just after a restart.
        super::certs::load(d).await.context("loading the TLS certificates (http/certs/)")?;
        let config = hostgate_http::tls::server_config(d.http.certs.clone()).context("building the TLS config")?;
        Some(Arc::new(Acceptor::from_server_config(Arc::new(config))))
    };
    for (addr, _) in &plain {
        info!(%addr, workers = front.workers.handles().len(), "HTTP proxy listening");
    }
    for (addr, _) in &tls {
        info!(%addr, workers = front.workers.handles().len(), "HTTPS proxy listening");
    }
    // Every worker accepts on its own copy of each listener, and has its
    // own apps (see crate::workers); a connection is served on the worker
    // with the fewest open (`dispatch`).
    for (listeners, acceptor) in [(&plain, None), (&tls, acceptor.clone())] {
        if listeners.is_empty() {
            continue;
        }
        let apps: Vec<_> = front.workers.handles().iter().map(|_| app(acceptor.is_some())).collect();
        let upstreams = front.workers.handles().iter().map(|_| Default::default()).collect();
        let shared = d.http.clone();
        let serving = Arc::new(Serving { apps, upstreams, shared, tls: acceptor, header_timeout });
        for (me, worker) in front.workers.handles().iter().enumerate() {
            for (addr, listener) in listeners {
                let copy = listener.try_clone().with_context(|| format!("a worker's copy of the listener {addr}"))?;
                // Registered with the worker's reactor.
                let _guard = worker.enter();
                let listener = tokio::net::TcpListener::from_std(copy).with_context(|| format!("listener {addr}"))?;
                worker.spawn(accept_loop(listener, me, serving.clone(), front.clone()));
            }
        }
    }
    tokio::spawn(health::check_health(d.clone()));
    Ok(())
}

/// The listeners of one `[http]` list: each adopted from `inherited` when
/// a previous daemon (or systemd) passed a socket named `name` bound to
/// that address, else bound here. A copy of each is kept for a successor.
fn bind_all(
    front: &Front,
    inherited: &mut Inherited,
    name: &str,
    field: &str,
    addrs: &[SocketAddr],
) -> anyhow::Result<Vec<(SocketAddr, std::net::TcpListener)>> {
    let mut listeners = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let std = match inherited.take_tcp(name, *addr) {
            Some(l) => {
                info!(%addr, "adopted the inherited listener");
                l
            }
            None => crate::upgrade::bind_tcp(*addr).with_context(|| format!("binding {field}[{i}] {addr}"))?,
        };
        let copy = std.try_clone().context("keeping a copy of a listener")?;
        front.keep(name, copy.into());
        listeners.push((*addr, std));
    }
    Ok(listeners)
}

/// A client gets this long to finish its TLS handshake: a slow or silent
/// one must not hold a task and a socket forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// One connection: with an acceptor the TLS handshake first (failures are
/// the client's business: logged at debug); then pingora's HTTP/2 loop (by
/// ALPN) or the HTTP/1.1 loop (`fast`: simple requests itself, the rest
/// by pingora), the latter with every request head timed (408 and close
/// after `header_timeout`, so a slowloris client holds a socket that long,
/// not forever).
async fn serve(tcp: tokio::net::TcpStream, peer: SocketAddr, serving: Arc<Serving>, counted: Counted) {
    let front = counted.front.clone();
    let worker = counted.worker.worker();
    let app = serving.apps[worker].clone();
    let _counted = counted;
    let shutdown = front.drain.subscribe();
    let conn = |front| fast::Conn {
        app: &app,
        shared: &serving.shared,
        upstreams: &serving.upstreams[worker],
        front,
        shutdown: &shutdown,
        draining_at_start: *shutdown.borrow(),
        worker,
        peer,
        tls: serving.tls.is_some(),
        header_timeout: serving.header_timeout,
    };
    let stream = pingora_stream(tcp, peer);
    // Writes are coalesced until the proxy flushes, as on pingora's own
    // listener (see buffered.rs); under TLS, so records coalesce too.
    let stream = Buffered::new(stream, buffered::SEGMENT);
    let Some(acceptor) = serving.tls.clone() else {
        fast::serve_h1(Box::new(stream), conn(front)).await;
        return;
    };
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.tls_handshake(stream)).await {
        Ok(Ok(tls_stream)) => match tls_stream.selected_alpn_proto() {
            // HTTP/2: h2 buffers its frames itself.
            Some(ALPN::H2) => {
                let stream = GoawayWatch::new(Box::new(tls_stream), front.goaways.clone());
                app.process_new(Box::new(stream), &shutdown).await;
            }
            // HTTP/1.1: a response becomes one TLS record (see buffered.rs).
            _ => {
                let stream = Buffered::new(tls_stream, buffered::RECORD);
                fast::serve_h1(Box::new(stream), conn(front)).await;
            }
        },
        Ok(Err(e)) => debug!(error = %e, "TLS handshake failed"),
        Err(_) => debug!("TLS handshake timed out"),
    }
}

/// The accepted socket as pingora's `Stream`, with the socket digest its
/// own listener would attach (the proxy reads the peer from it).
fn pingora_stream(tcp: tokio::net::TcpStream, peer: SocketAddr) -> L4Stream {
    use pingora::protocols::GetSocketDigest;
    use std::os::fd::AsRawFd;
    let mut stream: L4Stream = tcp.into();
    let digest = pingora::protocols::SocketDigest::from_raw_fd(stream.as_raw_fd());
    let _ = digest.peer_addr.set(Some(peer.into()));
    stream.set_socket_digest(digest);
    stream
}

/// What serving a connection of one scheme needs: each worker's app and
/// idle backend connections, the TLS acceptor (HTTPS), the request head
/// deadline.
struct Serving {
    apps: Vec<Arc<HttpProxy<Proxy>>>,
    upstreams: Vec<fast::Upstreams>,
    shared: Arc<Shared>,
    tls: Option<Arc<Acceptor>>,
    header_timeout: Duration,
}

/// Accepts until the front stops accepting (drain, hand-over): the
/// listener is dropped then, and with it this process's claim on it. Each
/// connection is served on the worker with the fewest open (`dispatch`).
async fn accept_loop(listener: tokio::net::TcpListener, me: usize, serving: Arc<Serving>, front: Arc<Front>) {
    let mut accepting = front.accepting.subscribe();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = accepting.wait_for(|a| !*a) => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((tcp, peer)) => {
                // As pingora's own listener does: without TCP_NODELAY a
                // response written as head then body waits for the
                // client's delayed ACK (40 ms per keep-alive request).
                if let Err(e) = tcp.set_nodelay(true) {
                    debug!(error = %e, "TCP_NODELAY on an accepted connection");
                }
                dispatch(tcp, peer, me, &serving, &front);
            }
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                warn!(error = %e, "HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Serves `tcp` on the least loaded worker (see crate::workers).
fn dispatch(tcp: tokio::net::TcpStream, peer: SocketAddr, me: usize, serving: &Arc<Serving>, front: &Arc<Front>) {
    let (serving, front) = (serving.clone(), front.clone());
    let workers = front.workers.clone();
    workers.serve_on(me, tcp, move |tcp, worker| serve(tcp, peer, serving, front.connection(worker)));
}

/// The proxy's listeners and connections of one daemon start, on the
/// proxy runtime. They outlive the daemon's other services: when the
/// daemon stops or hands over, it stops accepting and drains them.
pub struct Front {
    /// The connection workers (the process's, not this front's).
    workers: crate::workers::Pool,
    /// True while the accept loops accept.
    accepting: watch::Sender<bool>,
    /// pingora's shutdown watch: `true` makes every connection close after
    /// its current request (HTTP/1.1 `Connection: close`, HTTP/2 GOAWAY).
    drain: watch::Sender<bool>,
    /// Connections open (TLS handshakes included).
    open: watch::Sender<usize>,
    /// Copies of the listeners, named `http` or `https`, for a successor.
    listeners: std::sync::Mutex<Vec<(String, OwnedFd)>>,
    /// The apps, whose `cleanup` closes connections idle between requests.
    apps: std::sync::Mutex<Vec<Arc<HttpProxy<Proxy>>>>,
    /// `true` closes the fast path's connections idle between requests
    /// (what the apps' `cleanup` does to pingora's); one per worker, so
    /// waiting on it is never contended across cores.
    pub(super) idle_close: Vec<watch::Sender<bool>>,
    /// Connections closed with 408: no complete request head in time.
    header_timeouts: std::sync::atomic::AtomicU64,
    /// HTTP/1.1 requests the fast path forwarded, per worker.
    fast_requests: Vec<PaddedCount>,
    /// HTTP/1.1 connections the fast path handed to pingora.
    pingora_handovers: std::sync::atomic::AtomicU64,
    /// GOAWAY frames sent on HTTP/2 connections, by error code.
    goaways: Arc<GoawayCounts>,
}

/// A counter on a cache line of its own (one per worker).
#[derive(Default)]
#[repr(align(128))]
struct PaddedCount(std::sync::atomic::AtomicU64);

/// Counts one open connection (of the front, and of its worker) while it
/// lives.
struct Counted {
    front: Arc<Front>,
    worker: crate::workers::Counted,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.front.open.send_modify(|n| *n -= 1);
    }
}

impl Front {
    pub fn new(workers: crate::workers::Pool) -> Arc<Front> {
        Arc::new(Front {
            workers: workers.clone(),
            accepting: watch::Sender::new(true),
            drain: watch::Sender::new(false),
            open: watch::Sender::new(0),
            listeners: Default::default(),
            apps: Default::default(),
            idle_close: workers.handles().iter().map(|_| watch::Sender::new(false)).collect(),
            header_timeouts: Default::default(),
            fast_requests: workers.handles().iter().map(|_| PaddedCount::default()).collect(),
            pingora_handovers: Default::default(),
            goaways: Default::default(),
        })
    }

    fn connection(self: &Arc<Self>, worker: crate::workers::Counted) -> Counted {
        self.open.send_modify(|n| *n += 1);
        Counted { front: self.clone(), worker }
    }

    fn keep(&self, name: &str, fd: OwnedFd) {
        self.listeners.lock().unwrap_or_else(|p| p.into_inner()).push((name.to_string(), fd));
    }

    /// The listeners, for a successor (they stay this front's).
    pub fn listeners(&self) -> Vec<(String, OwnedFd)> {
        let kept = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        kept.iter().filter_map(|(n, fd)| Some((n.clone(), fd.try_clone().ok()?))).collect()
    }

    /// GOAWAY frames sent on HTTP/2 connections, by error name
    /// (ENHANCE_YOUR_CALM: a rapid-reset flood cut off).
    pub fn goaways(&self) -> std::collections::BTreeMap<String, u64> {
        self.goaways.snapshot()
    }

    /// Connections closed because their request head was too slow.
    pub(super) fn count_header_timeout(&self) {
        self.header_timeouts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub(super) fn count_fast_request(&self, worker: usize) {
        if let Some(count) = self.fast_requests.get(worker) {
            count.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    pub(super) fn count_pingora_handover(&self) {
        self.pingora_handovers.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn fast_requests(&self) -> u64 {
        self.fast_requests.iter().map(|c| c.0.load(std::sync::atomic::Ordering::Relaxed)).sum()
    }

    pub fn pingora_handovers(&self) -> u64 {
        self.pingora_handovers.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn header_timeouts(&self) -> u64 {
        self.header_timeouts.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        *self.open.borrow()
    }

    /// Stops accepting and closes this front's listeners (a successor, if
    /// any, holds its own copies; otherwise the ports close).
    pub fn stop_accepting(&self) {
        self.accepting.send_replace(false);
        self.listeners.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Stops accepting and lets the open connections finish: each closes
    /// after its current request; after `grace` the ones idle between
    /// requests are closed (a keep-alive client that was not sending gets
    /// no chance to race the close); returns when none is left or after
    /// `timeout`, with the number still open.
    pub async fn drain(&self, grace: Duration, timeout: Duration) -> usize {
        self.stop_accepting();
        self.drain.send_replace(true);
        let deadline = tokio::time::Instant::now() + timeout;
        let mut open = self.open.subscribe();
        let _ = tokio::time::timeout(grace.min(timeout), open.wait_for(|n| *n == 0)).await;
        for idle_close in &self.idle_close {
            idle_close.send_replace(true);
        }
        let apps: Vec<_> = self.apps.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for app in apps {
            app.cleanup().await;
        }
        let _ = tokio::time::timeout_at(deadline, open.wait_for(|n| *n == 0)).await;
        self.open()
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http::Shared({} vhosts)", self.table().len())
    }
}

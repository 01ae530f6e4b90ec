//! Following the store and serving connections.
//!
//! pingora is used as a library, not as the process owner: no
//! `pingora::server::Server` (which wants to own the process, its signals
//! and its runtimes). Each `[http] listen` address is a tokio listener on
//! the daemon's own runtime; every accepted connection becomes a pingora
//! `Stream` (with its socket digest, so the peer address is known) and is
//! handed to the `HttpProxy` app through `ServerApp::process_new`, which
//! runs HTTP/1.1 keep-alive exactly as pingora's own listener service
//! would. `[http] listen_tls` connections first go through pingora's
//! rustls `Acceptor`, built from our own `ServerConfig` (the live per-SNI
//! resolver, TLS 1.2/1.3, ALPN h2 + http/1.1) by `from_server_config`;
//! `process_new` then reads the negotiated ALPN and speaks HTTP/2 or
//! HTTP/1.1.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use hostgate_http::{RoutingTable, Vhost};
use hostgate_store::Mirror;
use pingora::{
    apps::ServerApp,
    listeners::tls::Acceptor,
    protocols::{l4::listener::Listener, l4::stream::Stream},
    proxy::HttpProxy,
    server::configuration::ServerConf,
};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::{buffered::Buffered, keys, proxy::Proxy, Shared};
use crate::Daemon;

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

/// Binds every `[http] listen` and `listen_tls` address (all or nothing,
/// before the daemon reports ready) and serves them on the daemon's runtime.
pub(crate) async fn listen(d: &Arc<Daemon>) -> anyhow::Result<()> {
    let plain = bind_all("http.listen", &d.config.http.listen_addrs()).await?;
    let tls = bind_all("http.listen_tls", &d.config.http.listen_tls_addrs()).await?;
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
    let (logs, writer) = super::logs::AccessLogs::new(dir.clone());
    if d.http.logs.set(logs).is_ok() {
        info!(dir = %dir.display(), %format, "HTTP access logs per customer");
        std::thread::Builder::new()
            .name("http-access-log".into())
            .spawn(move || writer.run())
            .context("starting the access log writer")?;
    }
    // Never signalled yet: connections end with the process (a graceful
    // drain on shutdown would send `true`). The sender is kept: pingora
    // reads a closed channel as "shutting down".
    let (drain, shutdown) = watch::channel(false);
    *d.http.drain.lock().unwrap_or_else(|p| p.into_inner()) = Some(drain);
    let conf = Arc::new(ServerConf::default());
    let app = |tls| Arc::new(pingora::proxy::http_proxy(&conf, Proxy::new(d.http.clone(), tls)));
    if !plain.is_empty() {
        let app = app(false);
        for (addr, listener) in plain {
            info!(%addr, "HTTP proxy listening");
            tokio::spawn(accept_loop(listener, app.clone(), None, shutdown.clone()));
        }
    }
    if !tls.is_empty() {
        // The stored certificates are loaded before the first handshake:
        // a client never gets the default (or none) for a name the store
        // has a certificate for, not even just after a restart.
        super::certs::load(d).await.context("loading the TLS certificates (http/certs/)")?;
        let config = hostgate_http::tls::server_config(d.http.certs.clone()).context("building the TLS config")?;
        let acceptor = Arc::new(Acceptor::from_server_config(Arc::new(config)));
        let app = app(true);
        for (addr, listener) in tls {
            info!(%addr, "HTTPS proxy listening");
            tokio::spawn(accept_loop(listener, app.clone(), Some(acceptor.clone()), shutdown.clone()));
        }
    }
    tokio::spawn(check_health(d.clone()));
    Ok(())
}

async fn bind_all(field: &str, addrs: &[SocketAddr]) -> anyhow::Result<Vec<(SocketAddr, Listener)>> {
    let mut listeners = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let l = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {field}[{i}] {addr}"))?;
        listeners.push((*addr, Listener::from(l)));
    }
    Ok(listeners)
}

/// A client gets this long to finish its TLS handshake: a slow or silent
/// one must not hold a task and a socket forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// One connection: the TLS handshake first when there is an acceptor
/// (failures are the client's business: logged at debug), then pingora's
/// HTTP/1.1 or (by ALPN) HTTP/2 loop.
async fn serve(
    stream: Stream,
    app: Arc<HttpProxy<Proxy>>,
    tls: Option<Arc<Acceptor>>,
    shutdown: watch::Receiver<bool>,
) {
    // Writes are coalesced until pingora flushes, as on pingora's own
    // listener (see buffered.rs); under TLS, so records coalesce too.
    let stream = Buffered::new(stream);
    let Some(acceptor) = tls else {
        app.process_new(Box::new(stream), &shutdown).await;
        return;
    };
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.tls_handshake(stream)).await {
        Ok(Ok(tls_stream)) => {
            app.process_new(Box::new(tls_stream), &shutdown).await;
        }
        Ok(Err(e)) => debug!(error = %e, "TLS handshake failed"),
        Err(_) => debug!("TLS handshake timed out"),
    }
}

async fn accept_loop(
    listener: Listener,
    app: Arc<HttpProxy<Proxy>>,
    tls: Option<Arc<Acceptor>>,
    shutdown: watch::Receiver<bool>,
) {
    loop {
        match listener.accept().await {
            Ok(mut stream) => {
                // As pingora's own listener does: without TCP_NODELAY a
                // response written as head then body waits for the
                // client's delayed ACK (40 ms per keep-alive request).
                if let Err(e) = stream.set_nodelay() {
                    debug!(error = %e, "TCP_NODELAY on an accepted connection");
                }
                tokio::spawn(serve(stream, app.clone(), tls.clone(), shutdown.clone()));
            }
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                warn!(error = %e, "HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

const CHECK_EVERY: Duration = Duration::from_secs(1);
const CHECK_TIMEOUT: Duration = Duration::from_millis(800);

/// Active health checks: a TCP connect to every backend of the table in
/// force, once a second; transitions are logged and applied to the table
/// (and remembered for the next one).
async fn check_health(d: Arc<Daemon>) {
    let mut last: std::collections::HashMap<SocketAddr, bool> = Default::default();
    loop {
        let table = d.http.table();
        let mut addrs: Vec<SocketAddr> =
            table.vhosts().flat_map(|v| v.pools().flat_map(|(_, p)| p.backends().iter().map(|b| b.addr))).collect();
        addrs.sort();
        addrs.dedup();
        let probes = addrs.iter().map(|&a| async move {
            let up = matches!(tokio::time::timeout(CHECK_TIMEOUT, tokio::net::TcpStream::connect(a)).await, Ok(Ok(_)));
            (a, up)
        });
        for (addr, up) in futures_util::future::join_all(probes).await {
            if last.insert(addr, up) != Some(up) {
                match up {
                    true => info!(backend = %addr, "HTTP backend up"),
                    false => warn!(backend = %addr, "HTTP backend down"),
                }
            }
            d.http.set_health(addr, up);
        }
        last.retain(|a, _| addrs.contains(a));
        d.http.tidy_limiters();
        tokio::time::sleep(CHECK_EVERY).await;
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http::Shared({} vhosts)", self.table().len())
    }
}

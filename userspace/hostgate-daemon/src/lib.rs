//! The hostgate daemon: loads the configuration, opens the store, brings
//! the data plane to the configured shape (adopting what a previous daemon
//! left pinned), publishes its status to the store and serves the control
//! API until SIGTERM or SIGINT.
//!
//! Start-up is all or nothing: the config is validated before anything is
//! touched, the data plane rolls back its own new attachments if one fails,
//! and the API socket only appears once everything is up. Shutdown leaves
//! the data plane attached: packets keep flowing while no daemon runs.

mod access_log;
mod api;
mod containers;
mod dhcp;
mod dns;
mod fw;
mod health;
mod http;
mod ips;
mod lb;
mod members;
mod metrics;
mod monitor;
mod netif;
mod nodes;
mod ra;
mod snat;
mod ssh;
mod status;
mod syslog;
pub mod upgrade;
mod workers;

use std::{
    sync::{Arc, Mutex},
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::Context;
use hostgate_config::{Config, LogFormat, XdpMode};
use hostgate_dataplane::{Dataplane, DataplaneSpec, XdpModeChoice};
use hostgate_store::{EtcdStore, Op, RedbStore, Store, Txn};
use tokio::net::UnixListener;
use tracing::{info, warn};

/// Everything the API handlers share. No globals: one of these per daemon.
pub struct Daemon {
    pub config: Config,
    pub store: Arc<dyn Store>,
    /// Where this node stands in the cluster (lease, fenced).
    pub standing: tokio::sync::watch::Sender<members::Standing>,
    /// Held while customer addresses are added or withdrawn, so that fencing
    /// and the IP reconciler never interleave.
    pub addresses_lock: tokio::sync::Mutex<()>,
    /// The store revision the IP reconciler has seen everything up to.
    pub config_revision: tokio::sync::watch::Sender<u64>,
    /// DHCP counters by network name.
    pub dhcp_counters: Mutex<std::collections::BTreeMap<String, hostgate_api::DhcpCounters>>,
    /// Addresses leased by DHCP and SLAAC prefixes advertised, by
    /// interface: container ports may send from them (anti-spoofing).
    pub dhcp_sources: tokio::sync::watch::Sender<dhcp::PortSources>,
    /// Watchers of `hostgate monitor` and the events they share.
    pub monitor: monitor::Hub,
    /// The DNS server's catalog and counters.
    pub dns: dns::Shared,
    /// `None` after `hostgate dataplane detach`.
    pub dataplane: Mutex<Option<Dataplane>>,
    pub started_at: u64,
    /// The store revision of `lb/` the data plane last applied.
    pub lb_applied: tokio::sync::watch::Sender<u64>,
    /// What the firewall last applied or refused.
    pub fw: Mutex<fw::FwState>,
    /// Serialises firewall reloads (background and on request).
    pub fw_reload: tokio::sync::Mutex<()>,
    /// The HTTP proxy's routing table, backend health and counters.
    pub http: Arc<http::Shared>,
    /// The SSH proxy's throttle and session ids.
    pub ssh: ssh::Shared,
    /// Joins, lease renewals and fencings.
    pub cluster_counters: members::Counters,
    /// The HTTP proxy's listeners and connections (on the proxy runtime).
    pub front: Arc<http::Front>,
    /// `hostgate daemon upgrade` asks for a hand-over through this.
    pub upgrade: tokio::sync::Notify,
    /// Set when this daemon hands over to a successor: what it leaves must
    /// not be withdrawn (router advertisements, cluster addresses).
    pub handing_over: Arc<std::sync::atomic::AtomicBool>,
    /// DNS's and SSH's present sockets, for an upgrade to hand over.
    pub kept: Arc<upgrade::Kept>,
}

impl Daemon {
    /// Locks the data plane; a poisoned lock still holds a usable value.
    pub fn dataplane(&self) -> std::sync::MutexGuard<'_, Option<Dataplane>> {
        self.dataplane.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn fw_state(&self) -> std::sync::MutexGuard<'_, fw::FwState> {
        self.fw.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Seconds since the Unix epoch.
/// Keys of the network services (DHCP leases, DNS zones, HTTP vhosts, SSH keys and history): they change per
/// client, and the followers of the whole key space (load balancer,
/// customer IPs) never read them, so they skip them instead of
/// re-reconciling on every lease.
pub(crate) fn placement_state(key: &str) -> bool {
    !key.starts_with("dhcp/") && !key.starts_with("dns/") && !key.starts_with("http/") && !key.starts_with("ssh/")
}

pub(crate) fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Unix time in milliseconds (log lines).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The store: etcd when the config names endpoints, else the embedded one
/// in `state_dir`.
async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    if config.clustered() {
        let c = &config.cluster;
        let patience = std::time::Duration::from_secs(30);
        let store = EtcdStore::connect(&c.etcd_endpoints, &c.key_prefix, etcd_timeout(config), patience)
            .await
            .context("connecting to etcd (cluster.etcd_endpoints)")?;
        return Ok(Arc::new(store));
    }
    std::fs::create_dir_all(&config.state_dir)
        .with_context(|| format!("creating state_dir {}", config.state_dir.display()))?;
    let path = config.state_dir.join("state.redb");
    let store = RedbStore::open(&path).context("opening the store (is another daemon using this state_dir?)")?;
    // The store holds the TLS private keys (http/certs/): only its owner
    // (root) reads it. The directory is the operator's and is left alone.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting {} to its owner", path.display()))?;
    Ok(Arc::new(store))
}

/// How long one etcd request may take: a quarter of the lease, so that a
/// renewal can fail and be retried before the node must fence itself.
fn etcd_timeout(config: &Config) -> std::time::Duration {
    std::time::Duration::from_millis(u64::from(config.cluster.lease_ttl_secs) * 250)
}

/// Sets up `tracing` for the process: text for people, JSON for shippers.
pub fn init_logging(format: LogFormat, config: &Config) -> anyhow::Result<()> {
    use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt, Layer};
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    // Colours only for a person at a terminal, not in files or journald.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let console = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(ansi);
    let console = match format {
        LogFormat::Text => console.boxed(),
        LogFormat::Json => console.json().flatten_event(true).boxed(),
    };
    let remote = match &config.log.syslog {
        Some(s) => Some(syslog::start(s, &config.node_name, &config.state_dir, format == LogFormat::Json)?),
        None => None,
    };
    tracing_subscriber::registry()
        .with(console)
        .with(remote)
        .with(filter)
        .try_init()
        .context("installing the logger")?;
    Ok(())
}

/// The store key of this node's published status.
pub fn node_status_key(node: &str) -> String {
    format!("status/nodes/{node}")
}

fn dataplane_spec(config: &Config) -> DataplaneSpec {
    let dp = &config.dataplane;
    DataplaneSpec {
        pin_root: dp.pin_root.clone(),
        node: config.node_name.clone(),
        uplinks: dp.uplinks.clone(),
        container_ifaces: dp.container_interfaces.clone(),
        xdp_mode: match dp.xdp_mode {
            XdpMode::Auto => XdpModeChoice::Auto,
            XdpMode::Native => XdpModeChoice::Native,
            XdpMode::Generic => XdpModeChoice::Generic,
        },
    }
}

/// How long a successor may take to start (open the store, adopt the
/// data plane, bind): etcd alone is given 30 s.
const SUCCESSOR_PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);
/// How long a draining proxy waits for keep-alive clients to send their
/// next request (answered with `Connection: close`) before it closes the
/// connections that are idle between requests.
const DRAIN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// The daemon process, from start to exit (or hand-over). Call it before
/// any other thread starts: it takes the inherited listeners from the
/// environment.
///
/// Runtimes: the HTTP workers (one current-thread runtime per core,
/// `workers.rs`) carry the proxy's listeners and connections, and
/// the proxy runtime the remote log's sender and the drain, for the whole
/// process; the control runtime carries everything else for one `run`. On SIGTERM the
/// control runtime ends (store, API, other services) and the proxy drains
/// its connections, bounded by `[http] drain_secs`. On SIGUSR2 the control
/// runtime ends the same way, which releases the store's lock and the API
/// socket; then this program is started again with the HTTP listeners and
/// DNS's and SSH's sockets (`upgrade::Kept`) inherited, and once it is
/// ready this one stops accepting, drains and exits. If the successor
/// fails, this process starts its services again on the same sockets.
pub fn main(config: Config, format: LogFormat) -> anyhow::Result<()> {
    let mut inherited = upgrade::Inherited::from_env();
    let mut ready = upgrade::Ready::from_env();
    // Now: once a package upgrade replaced the file, /proc/self/exe names
    // the deleted old one.
    let exe = std::env::current_exe().context("finding this program's path")?;
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let proxy = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("hostgate-proxy")
        .enable_all()
        .build()
        .context("starting the proxy runtime")?;
    {
        let _guard = proxy.enter();
        init_logging(format, &config)?;
    }
    if !inherited.is_empty() {
        info!(listeners = inherited.len(), "started with inherited listeners");
    }
    // The HTTP connections' threads, for the whole process (see workers.rs).
    let workers = workers::Workers::start("http")?;
    // DNS's and SSH's sockets, across runs (see upgrade::Kept).
    let kept = Arc::new(upgrade::Kept::default());
    let drain_timeout = std::time::Duration::from_secs(config.http.drain_secs.into());
    let drain = |front: &http::Front| {
        let left = proxy.block_on(async {
            use tokio::signal::unix::{signal, SignalKind};
            let mut term = signal(SignalKind::terminate()).ok();
            let cut = async {
                match term.as_mut() {
                    Some(t) => t.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                left = front.drain(DRAIN_GRACE, drain_timeout) => left,
                _ = cut => front.open(),
            }
        });
        match left {
            0 => info!("every HTTP connection finished"),
            n => warn!(connections = n, "HTTP connections cut after the drain timeout (http.drain_secs)"),
        }
    };
    loop {
        let control = tokio::runtime::Builder::new_multi_thread()
            .thread_name("hostgate")
            .enable_all()
            .build()
            .context("starting the runtime")?;
        let front = http::Front::new(workers.pool());
        let outcome = control.block_on(run(config.clone(), front.clone(), &kept, &mut inherited, &mut ready));
        // Every task of the daemon ends here except the proxy's: the store
        // (and redb's lock), the API, the other services (their sockets
        // stay open in `kept` for a successor).
        control.shutdown_timeout(std::time::Duration::from_secs(10));
        match outcome {
            Err(e) => {
                kept.close();
                drain(&front);
                return Err(e);
            }
            Ok(Stop::Exit) => {
                kept.close();
                info!(open = front.open(), "draining the HTTP connections");
                drain(&front);
                return Ok(());
            }
            Ok(Stop::Upgrade) => {
                let mut fds = front.listeners();
                fds.extend(kept.take());
                let named: Vec<_> = fds.iter().map(|(n, fd)| (n.clone(), std::os::fd::AsFd::as_fd(fd))).collect();
                match upgrade::hand_over(&exe, &args, &named, SUCCESSOR_PATIENCE) {
                    Ok(pid) => {
                        // The successor has them: a copy kept here through
                        // the drain would hold a socket it dropped (fewer
                        // DNS workers, an address removed) bound and unread.
                        drop(named);
                        drop(fds);
                        info!(successor = pid, open = front.open(), "the successor serves; draining");
                        drain(&front);
                        return Ok(());
                    }
                    Err(e) => {
                        tracing::error!(error = format!("{e:#}"), "upgrade failed; this daemon starts over");
                        drop(named);
                        inherited = upgrade::Inherited::from_fds(fds);
                        // The connections of the first start finish on their own.
                        front.stop_accepting();
                        let old = front.clone();
                        proxy.spawn(async move { old.drain(DRAIN_GRACE, drain_timeout).await });
                    }
                }
            }
        }
    }
}

/// Why `run` returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM or SIGINT: the process ends.
    Exit,
    /// SIGUSR2 or `hostgate daemon upgrade`: a successor takes over.
    Upgrade,
}

/// Runs the daemon's services until a signal: everything on the current
/// (control) runtime except the HTTP proxy's listeners and connections,
/// which go on `front`'s runtime so that they survive the control
/// runtime's end during an upgrade. Listeners are adopted from
/// `inherited` where it has them; `ready` is told once the API answers.
pub async fn run(
    config: Config,
    front: Arc<http::Front>,
    kept: &Arc<upgrade::Kept>,
    inherited: &mut upgrade::Inherited,
    ready: &mut upgrade::Ready,
) -> anyhow::Result<Stop> {
    // Installed first: SIGUSR2's default action would end the process.
    let signals = Signals::new();
    let socket = config.api.socket.clone();
    refuse_if_running(&socket).await?;

    let store = open_store(&config).await?;
    info!(store = %store.location(), "store open");

    let spec = dataplane_spec(&config);
    let node_addrs = config.node_addresses.clone();
    let dataplane = tokio::task::spawn_blocking(move || {
        let mut dp = Dataplane::start(&spec)?;
        dp.set_node_addrs(&node_addrs)?;
        Ok::<_, hostgate_dataplane::DataplaneError>(dp)
    })
    .await
    .context("data plane task")?
    .context("bringing up the data plane")?;

    let started_at = now();
    let ssh = ssh::Shared::new(config.ssh.max_sessions_per_customer);
    let http = Arc::new(http::Shared::new(&config.http));
    let daemon = Arc::new(Daemon {
        store,
        standing: tokio::sync::watch::Sender::new(members::Standing::Joining),
        addresses_lock: tokio::sync::Mutex::new(()),
        config_revision: tokio::sync::watch::Sender::new(0),
        dhcp_counters: Mutex::new(Default::default()),
        dhcp_sources: tokio::sync::watch::Sender::new(Default::default()),
        monitor: monitor::Hub::default(),
        dns: dns::Shared::default(),
        dataplane: Mutex::new(Some(dataplane)),
        started_at,
        config,
        lb_applied: tokio::sync::watch::Sender::new(0),
        fw: Mutex::new(fw::FwState::default()),
        fw_reload: tokio::sync::Mutex::new(()),
        http,
        ssh,
        cluster_counters: members::Counters::default(),
        front,
        upgrade: tokio::sync::Notify::new(),
        handing_over: Default::default(),
        kept: kept.clone(),
    });
    // DNS adopts its sockets when it starts serving, in a task of its own;
    // until then they are kept as its own (a second upgrade hands them on).
    let dns_sockets = inherited.take_named(&[dns::UDP_SOCKET, dns::TCP_SOCKET]);
    daemon.kept.set("dns", dns_sockets.into_fds());
    retried("publishing this node's status", || publish_status(&daemon)).await?;
    retried("registering this node", || nodes::register_self(&daemon)).await?;
    tokio::spawn(members::run(daemon.clone()));
    spawn_follower("load balancer reconciler", &daemon, lb::follow);
    spawn_follower("health checker", &daemon, health::follow);
    spawn_follower("neighbour keeper", &daemon, nodes::neighbour_loop);
    spawn_follower("IP reconciler", &daemon, ips::follow);
    spawn_follower("container reconciler", &daemon, containers::follow);
    spawn_follower("DHCP server", &daemon, dhcp::follow);
    spawn_follower("DNS server", &daemon, dns::follow);
    tokio::spawn(fw::run(daemon.clone()));
    spawn_follower("HTTP routing table", &daemon, http::follow);
    spawn_follower("TLS certificates", &daemon, http::follow_certs);
    spawn_follower("HTTP cache purges", &daemon, http::follow_purges);
    spawn_follower("ACME HTTP-01 answers", &daemon, http::follow_challenges);
    spawn_follower("ACME issuer", &daemon, http::run_acme);
    http::listen(&daemon, inherited).await?;
    // SSH sessions end with this run (the workers are dropped on return);
    // its listeners are handed over.
    let ssh_listening = ssh::listen(&daemon, inherited).await?.map(Arc::new);
    inherited.close_rest();

    if let Some(addr) = daemon.config.metrics.listen {
        let metrics = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("metrics.listen: cannot listen on {addr}"))?;
        info!(%addr, "metrics at http://{addr}/metrics");
        let router = metrics::router(daemon.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(metrics, router).await {
                warn!(error = %e, "the metrics listener stopped");
            }
        });
    }
    let listener = bind_socket(&socket)?;
    info!(socket = %socket.display(), node = %daemon.config.node_name, pid = std::process::id(), "hostgate daemon ready");
    ready.notify();
    let stop = Arc::new(Mutex::new(Stop::Exit));
    let (d, s, accepting) = (daemon.clone(), stop.clone(), ssh_listening.clone());
    let signalled = async move {
        let why = signals.wait(&d.upgrade).await;
        if let Some(ssh) = accepting {
            ssh.stop_accepting();
        }
        if why == Stop::Exit {
            // Nobody will accept what waits in it: refused at once instead.
            drop(d.kept.take_service("ssh"));
        }
        *s.lock().unwrap_or_else(|p| p.into_inner()) = why;
    };
    let served = axum::serve(listener, api::router(daemon.clone())).with_graceful_shutdown(signalled).await;
    let _ = std::fs::remove_file(&socket);
    let stop = *stop.lock().unwrap_or_else(|p| p.into_inner());
    if stop == Stop::Upgrade {
        // The successor adopts the pinned data plane, the lease's claims
        // and the router's advertisements: nothing is withdrawn.
        daemon.handing_over.store(true, std::sync::atomic::Ordering::SeqCst);
    } else if daemon.config.clustered() {
        members::leave(&daemon).await;
    }
    served.context("serving the API")?;
    if daemon.dataplane().is_some() {
        info!("stopping; the data plane stays attached (pinned) and keeps forwarding");
    }
    Ok(stop)
}

/// Runs a task that follows the store for as long as the daemon lives: when
/// it fails (store hiccup, kernel error), it starts over a second later from
/// a fresh snapshot.
fn spawn_follower<Fut>(what: &'static str, daemon: &Arc<Daemon>, follow: fn(Arc<Daemon>) -> Fut)
where
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let daemon = daemon.clone();
    tokio::spawn(async move {
        loop {
            if let Err(e) = follow(daemon.clone()).await {
                warn!(task = what, error = format!("{e:#}"), "restarting");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    });
}

/// Writes this node's status (what is attached, since when) to the store.
/// A start-up step that writes to the store, tried for up to ten seconds:
/// a busy etcd may miss one request's deadline (a quarter of the lease),
/// and the daemon should not exit for that.
async fn retried<F, Fut>(what: &str, mut step: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match step().await {
            Ok(()) => return Ok(()),
            Err(e) if tokio::time::Instant::now() < deadline => {
                warn!(error = format!("{e:#}"), "{what}: retrying");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e.context(what.to_string())),
        }
    }
}

async fn publish_status(daemon: &Daemon) -> anyhow::Result<()> {
    let status = status::collect(daemon).await?;
    let op = Op::put_json(node_status_key(&daemon.config.node_name), &status)?;
    daemon.store.commit(Txn::new().then(op)).await?;
    Ok(())
}

/// Fails if a daemon already answers on `socket`; removes a stale socket file.
async fn refuse_if_running(socket: &std::path::Path) -> anyhow::Result<()> {
    match tokio::net::UnixStream::connect(socket).await {
        Ok(_) => anyhow::bail!("a hostgate daemon is already running on {}", socket.display()),
        Err(_) if socket.exists() => {
            warn!(socket = %socket.display(), "removing stale socket");
            std::fs::remove_file(socket).with_context(|| format!("removing stale socket {}", socket.display()))
        }
        Err(_) => Ok(()),
    }
}

fn bind_socket(socket: &std::path::Path) -> anyhow::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let listener = UnixListener::bind(socket).with_context(|| format!("binding {}", socket.display()))?;
    // Root only: the API can detach the data plane.
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod 0600 {}", socket.display()))?;
    Ok(listener)
}

/// The signals the daemon acts on, installed once per start.
struct Signals(Option<[tokio::signal::unix::Signal; 3]>);

impl Signals {
    fn new() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        let kinds = [SignalKind::terminate(), SignalKind::interrupt(), SignalKind::user_defined2()];
        match (signal(kinds[0]), signal(kinds[1]), signal(kinds[2])) {
            (Ok(t), Ok(i), Ok(u)) => Signals(Some([t, i, u])),
            _ => {
                warn!("cannot install signal handlers; stop with SIGKILL");
                Signals(None)
            }
        }
    }

    /// Until SIGTERM, SIGINT (stop), SIGUSR2 or an upgrade request (hand over).
    async fn wait(self, upgrade: &tokio::sync::Notify) -> Stop {
        let Some([mut term, mut int, mut usr2]) = self.0 else {
            upgrade.notified().await;
            return Stop::Upgrade;
        };
        let (name, stop) = tokio::select! {
            _ = term.recv() => ("SIGTERM", Stop::Exit),
            _ = int.recv() => ("SIGINT", Stop::Exit),
            _ = usr2.recv() => ("SIGUSR2", Stop::Upgrade),
            _ = upgrade.notified() => ("upgrade request", Stop::Upgrade),
        };
        match stop {
            Stop::Exit => info!(signal = name, "shutting down"),
            Stop::Upgrade => info!(signal = name, "handing over to a new daemon"),
        }
        stop
    }
}

//! Towards customers: a russh server on every `[ssh] listen` address.
//!
//! russh's permissive defaults are replaced on purpose (research §4.4):
//! an offered key is accepted only when it is stored for a customer, its
//! `from=` admits the source and the user routes to one of that customer's
//! containers (anything else is the same rejection, padded to the same
//! time); publickey is the only method; Nagle is off; windows are 16 MiB;
//! the banner names no library or version. Nothing reaches a container
//! before authentication succeeds: the upstream connection is made when
//! the first channel opens.

use std::{
    collections::HashMap,
    net::SocketAddr,
    os::fd::AsFd,
    sync::{atomic::Ordering, Arc, Mutex},
    time::Duration,
};

use anyhow::Context;
use hostgate_api::{SshKeyView, SshSession, SshUserMap};
use hostgate_ipam::model::{keys as ipam_keys, Container};
use hostgate_ssh::{authorized::fingerprint, route, AuthorizedKey, KeyGrant, Verdict};
use russh::{
    client,
    keys::PublicKey,
    server::{self, Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey},
    Channel, ChannelOpenFailure, MethodKind, MethodSet,
};
use tracing::{info, warn};

use super::{history, keys, relay::Tally, upstream};
use crate::{
    upgrade::Inherited,
    workers::{Pool, Workers},
    Daemon,
};

/// Channel window: OpenSSH's 2 MiB caps a long path (research §4.2).
pub const WINDOW: u32 = 16 * 1024 * 1024;
/// russh refuses packets over 65535 bytes; OpenSSH uses 32 KiB.
pub const PACKET: u32 = 32 * 1024;
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Characters of a client's user name kept in logs and the history.
const MAX_USER: usize = 64;

fn config(host_keys: Vec<russh::keys::PrivateKey>, leg: super::Leg) -> server::Config {
    server::Config {
        server_id: russh::SshId::Standard("SSH-2.0-hostgate".into()),
        methods: MethodSet::from(&[MethodKind::PublicKey][..]),
        // Every rejection takes as long, so an unknown user, a foreign
        // container and a wrong key cannot be told apart by timing; the
        // "none" probe every client starts with is answered at once.
        auth_rejection_time: Duration::from_millis(300),
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys: host_keys,
        window_size: WINDOW,
        maximum_packet_size: PACKET,
        // What our relay writes towards the customer queues here until the
        // session task sends it: russh's 10 makes the relay wait for the
        // session after every 10 packets of a transfer.
        event_buffer_size: 128,
        max_auth_attempts: 10,
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(30)),
        keepalive_max: 3,
        nodelay: true,
        preferred: super::preferred(leg),
        ..Default::default()
    }
}

/// The name SSH's listeners are handed over under at an upgrade.
const LISTENER: &str = "ssh";

/// Binds every `[ssh] listen` address (all or nothing, before the daemon
/// reports ready) and serves them on connection workers (see
/// `crate::workers`: a relayed byte passes three tasks, the customer's
/// session, the relay and the container's session, all on one thread).
/// The sessions last as long as the returned workers. Listeners a
/// predecessor handed over (`inherited`) are adopted, with the connections
/// waiting in them; copies of all go to `Daemon::kept` for the next upgrade.
pub(crate) async fn listen(d: &Arc<Daemon>, inherited: &mut Inherited) -> anyhow::Result<Option<Listening>> {
    let addrs = d.config.ssh.listen_addrs();
    if addrs.is_empty() {
        return Ok(None);
    }
    let host_keys = super::identity::host_keys(d).await.context("the SSH proxy's host keys")?;
    super::identity::client_key(d).await.context("the SSH proxy's client key")?;
    super::identity::ca_key(d).await.context("the SSH proxy's CA key")?;
    let configs = Configs {
        openssh: Arc::new(config(host_keys.clone(), super::Leg::OpenSshClient)),
        other: Arc::new(config(host_keys, super::Leg::OtherClient)),
        fast: d.config.ssh.ciphers == hostgate_config::SshCiphers::Fast,
    };
    start_session_logs(d)?;
    let (mut listeners, mut kept) = (Vec::new(), Vec::new());
    for (i, addr) in addrs.iter().enumerate() {
        let listener = match inherited.take_tcp(LISTENER, *addr) {
            Some(adopted) => adopted,
            None => crate::upgrade::bind_tcp(*addr).with_context(|| format!("binding ssh.listen[{i}] {addr}"))?,
        };
        kept.push(crate::upgrade::kept_copy(LISTENER, listener.as_fd())?);
        listeners.push((addr, listener));
    }
    d.kept.set("ssh", kept);
    let workers = Workers::start("ssh")?;
    let mut accepting = Vec::new();
    for (addr, listener) in &listeners {
        info!(%addr, workers = workers.handles().len(), "SSH proxy listening");
        for (me, worker) in workers.handles().iter().enumerate() {
            let copy = listener.try_clone().with_context(|| format!("a worker's copy of the listener {addr}"))?;
            let _guard = worker.enter();
            let listener = tokio::net::TcpListener::from_std(copy).with_context(|| format!("listener {addr}"))?;
            accepting.push(worker.spawn(accept_loop(d.clone(), listener, configs.clone(), workers.pool(), me)));
        }
    }
    Ok(Some(Listening { _workers: workers, accepting }))
}

/// The SSH proxy while it serves: its workers (the sessions last as long
/// as they do) and its accept loops.
pub(crate) struct Listening {
    _workers: Workers,
    accepting: Vec<tokio::task::JoinHandle<()>>,
}

impl Listening {
    /// Stops taking connections, first thing when the daemon stops: a
    /// connection that comes later waits in the listener for whoever holds
    /// it next (the successor, at an upgrade) instead of being taken here
    /// and cut when this run's sessions end.
    pub(crate) fn stop_accepting(&self) {
        for accept in &self.accepting {
            accept.abort();
        }
    }
}

/// Starts the per-customer session log writer unless `[ssh] access_log =
/// "off"`.
fn start_session_logs(d: &Daemon) -> anyhow::Result<()> {
    let Some(format) = crate::access_log::LineFormat::parse(d.config.ssh.access_log_format()) else { return Ok(()) };
    let dir = d.config.ssh.access_log_dir.clone().unwrap_or_else(|| d.config.state_dir.join("log/ssh"));
    let logs = crate::access_log::AccessLogs::start(dir.clone(), "ssh-session-log")?;
    info!(dir = %dir.display(), "SSH session logs per customer");
    let _ = d.ssh.logs.set((logs, format));
    Ok(())
}

/// The server configs, by what the client's banner says (see `preferred`).
#[derive(Clone)]
struct Configs {
    openssh: Arc<server::Config>,
    other: Arc<server::Config>,
    /// `[ssh] ciphers = "fast"`: OpenSSH clients get `openssh`.
    fast: bool,
}

/// How long the client's banner is waited for before the server sends its
/// own: OpenSSH sends it at once, a client that waits for ours gets the
/// compatible config after this.
const BANNER_WAIT: Duration = Duration::from_millis(200);

impl Configs {
    /// Peeks at the client's first bytes (not consumed: russh reads them).
    async fn for_client(&self, sock: &tokio::net::TcpStream) -> Arc<server::Config> {
        if !self.fast {
            return self.other.clone();
        }
        let mut first = [0u8; 64];
        let peeked = tokio::time::timeout(BANNER_WAIT, sock.peek(&mut first)).await;
        match peeked {
            Ok(Ok(n)) if hostgate_ssh::banner::openssh_with_aes_gcm(&first[..n]) => self.openssh.clone(),
            _ => self.other.clone(),
        }
    }
}

/// Accepts on worker `me`; each connection is served on the least loaded
/// worker (see `crate::workers`).
async fn accept_loop(d: Arc<Daemon>, listener: tokio::net::TcpListener, configs: Configs, pool: Pool, me: usize) {
    loop {
        match listener.accept().await {
            Ok((sock, peer)) => {
                let _ = sock.set_nodelay(true);
                let (d, configs) = (d.clone(), configs.clone());
                pool.serve_on(me, sock, move |sock, counted| async move {
                    serve(d, configs, sock, peer).await;
                    drop(counted);
                });
            }
            Err(e) => {
                warn!(error = %e, "SSH accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Who authenticated and where they go.
#[derive(Clone, Debug)]
struct Authed {
    container: Container,
    customer: String,
    fingerprint: String,
    /// The customer's policy allows `ssh -A`.
    agent_forwarding: bool,
}

/// One customer connection.
struct Conn {
    d: Arc<Daemon>,
    peer: SocketAddr,
    record: Arc<Mutex<SshSession>>,
    tally: Arc<Tally>,
    authed: Option<Authed>,
    upstream: Option<client::Handle<upstream::Upstream>>,
    banned_until: Option<u64>,
    /// The customer whose session slot this connection holds.
    slot: Option<String>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(customer) = self.slot.take() {
            self.d.ssh.sessions().close(&customer);
        }
    }
}

fn lock(r: &Mutex<SshSession>) -> std::sync::MutexGuard<'_, SshSession> {
    r.lock().unwrap_or_else(|p| p.into_inner())
}

async fn serve(d: Arc<Daemon>, configs: Configs, sock: tokio::net::TcpStream, peer: SocketAddr) {
    let seq = d.ssh.seq.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |t| t.as_nanos());
    let record = Arc::new(Mutex::new(SshSession {
        id: format!("{nanos:020}-{seq:06}"),
        source: peer.to_string(),
        start: crate::now(),
        outcome: "denied".into(),
        ..Default::default()
    }));
    let banned = match d.ssh.throttle().check(peer.ip(), d.ssh.now_ms()) {
        Verdict::Banned { until_ms } => Some(until_ms),
        Verdict::Allowed => None,
    };
    let tally = Arc::new(Tally::default());
    let conn = Conn {
        d: d.clone(),
        peer,
        record: record.clone(),
        tally: tally.clone(),
        authed: None,
        upstream: None,
        banned_until: banned,
        slot: None,
    };
    // A second handle on the socket: russh handles a disconnect request
    // only between key exchanges, so a client stalling the handshake is cut
    // off by shutting the socket down under it.
    let (sock, cutter) = match split_cutter(sock) {
        Ok(pair) => pair,
        Err(e) => {
            warn!(%peer, error = %e, "SSH connection dropped: its socket could not be duplicated");
            return;
        }
    };
    let grace = tokio::time::Instant::now() + Duration::from_secs(d.config.ssh.login_grace_secs);
    let config = configs.for_client(&sock).await;
    match tokio::time::timeout_at(grace, server::run_stream(config, sock, conn)).await {
        Ok(Ok(session)) => {
            let watched =
                Watched { handle: session.handle(), cutter, record: record.clone(), tally: tally.clone(), peer };
            let timer = tokio::spawn(watch(d.clone(), grace, watched));
            let _ = session.await;
            timer.abort();
        }
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "SSH handshake failed"),
        Err(_) => tracing::debug!(%peer, "SSH handshake timed out"),
    }
    finish(&d, &record, &tally, peer).await;
}

/// The login grace time, then the idle timeout: a connection not logged
/// in within the grace time is closed, and so is a session whose channels
/// carried no data for `[ssh] idle_timeout_secs` (keepalives and window
/// adjustments do not count, so a forgotten shell does not live forever).
fn split_cutter(sock: tokio::net::TcpStream) -> std::io::Result<(tokio::net::TcpStream, std::net::TcpStream)> {
    let std = sock.into_std()?;
    let cutter = std.try_clone()?;
    Ok((tokio::net::TcpStream::from_std(std)?, cutter))
}

/// What the watch needs of one connection.
struct Watched {
    handle: server::Handle,
    cutter: std::net::TcpStream,
    record: Arc<Mutex<SshSession>>,
    tally: Arc<Tally>,
    peer: SocketAddr,
}

impl Watched {
    /// Tells the client why (if russh gets to it within a second), then
    /// shuts the socket down in any case.
    async fn close(&self, why: &'static str) {
        let told = self.handle.disconnect(russh::Disconnect::ByApplication, why.into(), "en".into());
        let _ = tokio::time::timeout(Duration::from_secs(1), told).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _ = self.cutter.shutdown(std::net::Shutdown::Both);
    }
}

async fn watch(d: Arc<Daemon>, grace: tokio::time::Instant, w: Watched) {
    let (tally, peer) = (&w.tally, w.peer);
    tokio::time::sleep_until(grace).await;
    if !tally.logged_in.load(Ordering::Relaxed) {
        tracing::debug!(%peer, "SSH login grace time exceeded");
        // Mid-handshake russh would not send a disconnect: cut at once.
        let _ = w.cutter.shutdown(std::net::Shutdown::Both);
        return;
    }
    let idle_limit = Duration::from_secs(d.config.ssh.idle_timeout_secs);
    if idle_limit.is_zero() {
        return;
    }
    loop {
        let idle = tally.idle();
        if idle >= idle_limit {
            info!(%peer, idle_secs = idle.as_secs(), "SSH session closed: idle timeout");
            lock(&w.record).outcome = "idle-timeout".into();
            w.close("idle timeout").await;
            return;
        }
        tokio::time::sleep(idle_limit - idle).await;
    }
}

async fn finish(d: &Daemon, record: &Mutex<SshSession>, tally: &Tally, peer: SocketAddr) {
    let entry = {
        let mut r = lock(record);
        r.end = crate::now();
        r.bytes_up = tally.up.load(Ordering::Relaxed);
        r.bytes_down = tally.down.load(Ordering::Relaxed);
        r.exit_status = tally.exit_status();
        r.clone()
    };
    d.ssh.count_ended(&entry);
    if entry.outcome == "denied" {
        if entry.fingerprint.is_empty() && entry.user.is_empty() {
            // A port scan, ssh-keyscan or a client that refused our host
            // key: no login was tried, so nothing to count or record (CI
            // bursts must not get banned for this, research §4.1.8).
            return;
        }
        d.ssh.throttle().failed(peer.ip(), d.ssh.now_ms());
    }
    info!(
        id = %entry.id, customer = %entry.customer, user = %entry.user, source = %entry.source,
        container = %entry.container, fingerprint = %entry.fingerprint, outcome = %entry.outcome,
        bytes_up = entry.bytes_up, bytes_down = entry.bytes_down, exit_status = ?entry.exit_status,
        "SSH session ended"
    );
    d.ssh.log_session(&entry);
    history::record(d, &entry).await;
}

impl Conn {
    /// The container `user` reaches with `key` from this source, if any.
    async fn decide(&self, user: &str, key: &PublicKey) -> anyhow::Result<Option<(String, Authed)>> {
        let fp = fingerprint(key);
        let stored = self.d.store.snapshot(keys::KEYS).await?;
        let candidates: Vec<SshKeyView> =
            stored.kvs.iter().filter_map(|kv| kv.decode::<SshKeyView>().ok()).filter(|v| v.fingerprint == fp).collect();
        if candidates.is_empty() {
            return Ok(None);
        }
        let containers: HashMap<String, Container> = self
            .d
            .store
            .snapshot(ipam_keys::CONTAINERS)
            .await?
            .kvs
            .iter()
            .filter_map(|kv| kv.decode::<Container>().ok())
            .map(|c| (c.name.clone(), c))
            .collect();
        let users: Vec<SshUserMap> =
            self.d.store.snapshot(keys::USERS).await?.kvs.iter().filter_map(|kv| kv.decode().ok()).collect();
        for v in candidates {
            let Ok(line) = AuthorizedKey::parse(&v.line) else { continue };
            if !line.allows_source(self.peer.ip()) {
                continue;
            }
            let users = users
                .iter()
                .filter(|m| m.customer == v.customer)
                .map(|m| (m.user.clone(), m.container.clone()))
                .collect();
            let grant = KeyGrant { customer: v.customer.clone(), container: v.container.clone(), users };
            let Ok(name) = route(user, &grant, |n| containers.get(n).map(|c| c.customer.clone())) else { continue };
            if let Some(c) = containers.get(&name) {
                let agent_forwarding = super::api::policy_of(&self.d, &v.customer).await?.agent_forwarding;
                let authed = Authed {
                    container: c.clone(),
                    customer: v.customer.clone(),
                    fingerprint: fp,
                    agent_forwarding: agent_forwarding.unwrap_or(false),
                };
                return Ok(Some((v.customer, authed)));
            }
        }
        Ok(None)
    }

    fn note_attempt(&self, user: &str, key: &PublicKey) {
        let mut r = lock(&self.record);
        // The client chose it: bounded before it reaches logs and the store.
        r.user = user.chars().take(MAX_USER).collect();
        r.fingerprint = fingerprint(key);
    }

    fn reject() -> Auth {
        Auth::Reject { proceed_with_methods: None, partial_success: false }
    }

    /// Opens the container's end of a channel, connecting first if needed.
    async fn open_upstream(&mut self, kind: Open<'_>, handle: &server::Handle) -> Result<Channel<client::Msg>, String> {
        let Some(authed) = self.authed.clone() else { return Err("not authenticated".into()) };
        if self.upstream.is_none() {
            let name = &authed.container.name;
            let Some(ip) = authed.container.ips.first() else {
                return Err(self.fail(format!("upstream-failed: container {name} has no address")));
            };
            let addr = SocketAddr::new(*ip, 22);
            let user = self.d.config.ssh.upstream_user.clone();
            let session = lock(&self.record).id.clone();
            let who = super::identity::CertSubject {
                customer: &authed.customer,
                fingerprint: &authed.fingerprint,
                session: &session,
                agent_forwarding: authed.agent_forwarding,
            };
            let agent = authed.agent_forwarding.then(|| handle.clone());
            match upstream::connect(self.d.clone(), name, addr, &user, &who, agent).await {
                Ok((h, login)) => {
                    tracing::debug!(container = %name, ?login, "logged in to the container");
                    self.upstream = Some(h);
                }
                Err(e) => return Err(self.fail(e.to_string())),
            }
        }
        let up = self.upstream.as_ref().ok_or("no upstream")?;
        let opened = match kind {
            Open::Session => tokio::time::timeout(OPEN_TIMEOUT, up.channel_open_session()).await,
            Open::DirectTcpip { host, port, from, from_port } => {
                tokio::time::timeout(OPEN_TIMEOUT, up.channel_open_direct_tcpip(host, port, from, from_port)).await
            }
        };
        match opened {
            Ok(Ok(ch)) => Ok(ch),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".into()),
        }
    }

    fn fail(&self, outcome: String) -> String {
        warn!(source = %self.peer, outcome = %outcome, "SSH upstream");
        lock(&self.record).outcome = outcome.clone();
        outcome
    }

    async fn accept_channel(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        handle: server::Handle,
        kind: Open<'_>,
    ) {
        match self.open_upstream(kind, &handle).await {
            Ok(up) => {
                reply.accept().await;
                let agent = self.authed.as_ref().is_some_and(|a| a.agent_forwarding);
                super::relay::spawn(channel, up, handle, self.tally.clone(), agent);
            }
            Err(e) => {
                tracing::debug!(error = %e, "channel refused");
                reply.reject(ChannelOpenFailure::ConnectFailed).await;
            }
        }
    }
}

enum Open<'a> {
    Session,
    DirectTcpip { host: &'a str, port: u32, from: &'a str, from_port: u32 },
}

impl server::Handler for Conn {
    type Error = anyhow::Error;

    async fn authentication_banner(&mut self) -> Result<Option<String>, Self::Error> {
        // A banned source learns why, instead of a bare "Connection closed".
        Ok(self.banned_until.map(|until| {
            let secs = until.saturating_sub(self.d.ssh.now_ms()) / 1000 + 1;
            format!("Too many failed logins from your address; try again in {secs} s.\r\n")
        }))
    }

    async fn auth_publickey_offered(&mut self, user: &str, offer: PublicKeyOffer<'_>) -> Result<Auth, Self::Error> {
        self.note_attempt(user, offer.public_key);
        if self.banned_until.is_some() {
            return Ok(Self::reject());
        }
        Ok(match self.decide(user, offer.public_key).await? {
            Some(_) => Auth::Accept,
            None => Self::reject(),
        })
    }

    async fn auth_publickey(&mut self, user: &str, key: VerifiedPublicKey<'_>) -> Result<Auth, Self::Error> {
        self.note_attempt(user, key.public_key);
        if self.banned_until.is_some() {
            return Ok(Self::reject());
        }
        let Some((customer, authed)) = self.decide(user, key.public_key).await? else {
            return Ok(Self::reject());
        };
        let open = self.slot.is_some() || self.d.ssh.sessions().try_open(&customer);
        {
            let mut r = lock(&self.record);
            r.container = authed.container.name.clone();
            r.customer = customer.clone();
            if !open {
                warn!(%customer, source = %self.peer, "SSH login refused: the customer's sessions are all in use");
                r.outcome = "session-limit".into();
                return Ok(Self::reject());
            }
            r.outcome = "ok".into();
        }
        self.slot = Some(customer);
        self.tally.logged_in.store(true, Ordering::Relaxed);
        self.d.ssh.throttle().succeeded(self.peer.ip(), self.d.ssh.now_ms());
        self.authed = Some(authed);
        Ok(Auth::Accept)
    }

    /// `ssh -A`: allowed only by the customer's policy. russh answers the
    /// customer from this; the relay then forwards the request upstream.
    async fn agent_request(&mut self, _channel: russh::ChannelId, _session: &mut Session) -> Result<bool, Self::Error> {
        let allowed = self.authed.as_ref().is_some_and(|a| a.agent_forwarding);
        if !allowed {
            tracing::debug!(source = %self.peer, "agent forwarding refused by the customer's policy");
        }
        Ok(allowed)
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.accept_channel(channel, reply, session.handle(), Open::Session).await;
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        originator_address: &str,
        originator_port: u32,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let kind = Open::DirectTcpip {
            host: host_to_connect,
            port: port_to_connect,
            from: originator_address,
            from_port: originator_port,
        };
        self.accept_channel(channel, reply, session.handle(), kind).await;
        Ok(())
    }
}

//! IPv6 router advertisements on the interfaces of DHCP networks that have
//! an IPv6 prefix (what radvd or dnsmasq's `enable-ra` would do there): the
//! node takes `prefix::1/64` on each interface (marked as hostgate's), and a
//! task per (network, interface) sends RAs from the interface's link-local
//! address, unsolicited on RFC 4861's schedule and in answer to router
//! solicitations, starting over when the interface is re-created. When a
//! network or interface stops being served, or the daemon stops, a last RA
//! with router lifetime 0 withdraws the router. The message contents and
//! timing are `hostgate_dhcp::ra`'s; this module owns the sockets and
//! addresses. The DHCP follower (`dhcp/serve.rs`) calls
//! [`Advertisers::reconcile`] with the networks it serves.

use std::{
    collections::HashMap,
    io,
    mem::{size_of, zeroed},
    net::Ipv6Addr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use anyhow::Context;
use hostgate_api::NetworkView;
use hostgate_dhcp::{
    network::{keys, Network},
    ra::{parse_rs, Answer, Answers, RaConfig, ROUTER_SOLICITATION},
};
use tokio::{io::unix::AsyncFd, sync::Notify, task::JoinHandle, time::Instant};
use tracing::{debug, info, warn};

use crate::{api::Failure, netif, Daemon};

const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);
/// Answers waiting for their random delay; more are dropped (a flood of
/// solicitations from made-up sources must not grow memory).
const MAX_PENDING: usize = 64;

/// The IPv6 fields of an API request: (prefix, DNS servers).
pub(crate) type V6Fields = (Option<(Ipv6Addr, u8)>, Vec<Ipv6Addr>);

/// Reads the IPv6 fields of a network request (checked further by
/// `Network::validate`).
pub(crate) fn parse_fields(v: &NetworkView) -> Result<V6Fields, Failure> {
    let bad = |m: String| Failure(axum::http::StatusCode::BAD_REQUEST, m);
    let prefix = match &v.ipv6_prefix {
        None => None,
        Some(p) => Some(
            p.split_once('/')
                .and_then(|(a, l)| Some((a.parse::<Ipv6Addr>().ok()?, l.parse::<u8>().ok()?)))
                .ok_or_else(|| bad(format!("ipv6_prefix: {p:?} is not ADDRESS/64 (e.g. 2001:db8:1::/64)")))?,
        ),
    };
    let mut dns6 = Vec::new();
    for s in &v.dns6 {
        dns6.push(s.parse().map_err(|_| bad(format!("dns6: {s:?} is not an IPv6 address")))?);
    }
    Ok((prefix, dns6))
}

/// Refuses a prefix another network has: two links cannot both be on-link
/// for one /64 (checked against a snapshot: two operators adding the same
/// prefix at the same instant can still both win).
pub(crate) async fn refuse_taken_prefix(d: &Daemon, n: &Network) -> Result<(), Failure> {
    let Some((prefix, len)) = n.ipv6_prefix else { return Ok(()) };
    let nets = d.store.snapshot(keys::NETWORKS).await.map_err(|e| Failure::from(anyhow::Error::from(e)))?;
    let holder = nets.kvs.iter().filter_map(|kv| kv.decode::<Network>().ok()).find(|o| o.ipv6_prefix == n.ipv6_prefix);
    match holder {
        Some(o) if o.name != n.name => Err(Failure(
            axum::http::StatusCode::CONFLICT,
            format!("ipv6_prefix: {prefix}/{len} is network {}'s already", o.name),
        )),
        _ => Ok(()),
    }
}

/// Fills the IPv6 fields of a network's API view.
pub(crate) fn fill_view(n: &Network, v: &mut NetworkView) {
    v.ipv6_prefix = n.ipv6_prefix.map(|(a, l)| format!("{a}/{l}"));
    v.dns6 = n.dns6.iter().map(ToString::to_string).collect();
}

/// The advertising tasks of this node, by (network, interface).
pub(crate) struct Advertisers {
    running: HashMap<(String, String), Advertiser>,
    /// The daemon's `handing_over`: a successor takes over the routers.
    handing_over: Arc<AtomicBool>,
}

impl Advertisers {
    pub(crate) fn new(handing_over: Arc<AtomicBool>) -> Advertisers {
        Advertisers { running: HashMap::new(), handing_over }
    }

    /// Makes the running advertisers match `wanted`: withdraws (last RA,
    /// router address removed) what is no longer wanted or changed, starts
    /// what is missing (each retries on its own until its interface works).
    pub(crate) async fn reconcile(&mut self, wanted: impl Iterator<Item = &Network>) {
        let mut want: HashMap<(String, String), RaConfig> = HashMap::new();
        for n in wanted {
            let Some(config) = RaConfig::for_network(n) else { continue };
            for iface in &n.interfaces {
                want.insert((n.name.clone(), iface.clone()), config.clone());
            }
        }
        let stale: Vec<_> =
            self.running.iter().filter(|(k, a)| want.get(*k) != Some(&a.base)).map(|(k, _)| k.clone()).collect();
        for key in stale {
            if let Some(a) = self.running.remove(&key) {
                a.stop().await;
            }
            // Hosts took the withdrawal as the whole router's: another
            // network's advertiser on the interface speaks up at once.
            self.running.iter().filter(|(k, _)| k.1 == key.1).for_each(|(_, a)| a.wake.notify_one());
        }
        for (key, base) in want {
            let (network, iface) = key.clone();
            let handing_over = self.handing_over.clone();
            self.running.entry(key).or_insert_with(|| Advertiser::start(&network, &iface, base, handing_over));
        }
    }
}

/// The socket RAs go out on now, with the RA that withdraws the router
/// (`now` is None while there is no usable interface).
type Current = Arc<Mutex<Slot>>;

#[derive(Default)]
struct Slot {
    now: Option<(Arc<RaSocket>, Vec<u8>)>,
    /// Withdrawn: the task, perhaps still finishing a poll on another
    /// thread after its abort, must not advertise again.
    withdrawn: bool,
}

fn lock(c: &Current) -> std::sync::MutexGuard<'_, Slot> {
    c.lock().unwrap_or_else(|p| p.into_inner())
}

/// One (network, interface) advertiser: its task, and what withdraws it.
struct Advertiser {
    network: String,
    iface: String,
    /// The configuration from the network alone (to compare with).
    base: RaConfig,
    router: Ipv6Addr,
    current: Current,
    /// Makes the task send an unsolicited RA now.
    wake: Arc<Notify>,
    task: JoinHandle<()>,
    /// Set when the daemon hands over: no withdrawal then, the successor
    /// advertises the same router at once.
    handing_over: Arc<AtomicBool>,
}

impl Advertiser {
    fn start(network: &str, iface: &str, base: RaConfig, handing_over: Arc<AtomicBool>) -> Advertiser {
        let (current, wake) = (Current::default(), Arc::new(Notify::new()));
        let task = tokio::spawn(advertise(
            network.to_string(),
            iface.to_string(),
            base.clone(),
            current.clone(),
            wake.clone(),
        ));
        Advertiser {
            network: network.to_string(),
            iface: iface.to_string(),
            router: router_of(&base),
            base,
            current,
            wake,
            task,
            handing_over,
        }
    }

    /// Withdraws the router (by the drop) and removes its address.
    async fn stop(self) {
        let (network, iface, router) = (self.network.clone(), self.iface.clone(), self.router);
        drop(self);
        let removed = match netif::Addresses::connect(&iface) {
            Ok(a) => a.remove_ours(router.into()).await,
            Err(e) => Err(e),
        };
        if let Err(e) = removed {
            warn!(%network, %iface, %router, error = format!("{e:#}"), "router address not removed");
        }
        info!(%network, %iface, %router, "IPv6 router advertisements off (router withdrawn)");
    }
}

impl Drop for Advertiser {
    /// The last RA goes out here, synchronously, so that it is sent however
    /// the advertiser ends: removed by the follower, or dropped with the
    /// runtime when the daemon stops.
    fn drop(&mut self) {
        self.task.abort();
        let mut slot = lock(&self.current);
        slot.withdrawn = true;
        if self.handing_over.load(Ordering::SeqCst) {
            return;
        }
        if let Some((socket, last)) = slot.now.take() {
            if let Err(e) = socket.send(&last, ALL_NODES) {
                warn!(iface = %self.iface, error = %e, "withdrawing RA not sent");
            }
        }
    }
}

fn router_of(c: &RaConfig) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(c.prefix) | 1)
}

/// Advertises on `iface` until aborted, and again on every new interface
/// of that name (a container restarted with its veth made anew): the
/// kernel binds a socket to one interface index, and the router address
/// goes with the old link.
async fn advertise(network: String, iface: String, base: RaConfig, current: Current, wake: Arc<Notify>) {
    let mut last_error = None;
    loop {
        let outcome = advertise_on(&network, &iface, &base, &current, &wake).await;
        if lock(&current).now.take().is_some() {
            last_error = None; // it advertised: a new outage is worth a warning
        }
        if let Err(e) = outcome {
            // Said once per outage, not every second of it.
            let text = format!("{e:#}");
            if last_error.as_ref() != Some(&text) {
                warn!(%network, %iface, error = %text, "not advertising here (retrying every second)");
            }
            last_error = Some(text);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// One interface's life: router address, socket, RAs until it goes.
async fn advertise_on(
    network: &str,
    iface: &str,
    base: &RaConfig,
    current: &Current,
    wake: &Notify,
) -> anyhow::Result<()> {
    let mut config = base.clone();
    config.source_mac = Some(netif::mac_of(iface)?);
    // The network's MTU if it names one (as DHCP hands it out), else the link's.
    config.mtu = Some(match config.mtu {
        Some(mtu) => mtu,
        None => mtu_of(iface)?,
    });
    let router = router_of(base);
    netif::Addresses::connect(iface)?.add_on_link(router.into(), base.prefix_len).await?;
    let socket = Arc::new(RaSocket::open(iface).with_context(|| format!("raw ICMPv6 socket on {iface}"))?);
    // Hosts accept RAs only from a link-local source, which is usable only
    // once the kernel has checked it for duplicates.
    while let Err(e) = socket.bind_link_local(iface) {
        anyhow::ensure!(socket.still_on(iface), "{iface} went away");
        debug!(%iface, error = format!("{e:#}"), "waiting for a link-local address");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    {
        let mut slot = lock(current);
        anyhow::ensure!(!slot.withdrawn, "withdrawn");
        slot.now = Some((socket.clone(), config.withdrawn().build()));
    }
    info!(%network, %iface, %router, prefix = %format!("{}/{}", base.prefix, base.prefix_len), "IPv6 router advertisements on");
    serve(&socket, current, &config, iface, wake).await
}

/// Sends unsolicited RAs and answers solicitations until the interface
/// goes (an error) or the task is aborted.
async fn serve(
    socket: &RaSocket,
    current: &Current,
    config: &RaConfig,
    iface: &str,
    wake: &Notify,
) -> anyhow::Result<()> {
    let ra = config.build();
    let start = Instant::now();
    let now_ms = || start.elapsed().as_millis() as u64;
    let (mut answers, mut pending, mut sent, mut next_unsolicited) = (Answers::default(), Vec::<Answer>::new(), 0, 0);
    let mut buf = vec![0u8; 1500];
    // A replaced interface is noticed within this.
    let mut check = tokio::time::interval(Duration::from_secs(2));
    loop {
        let due = pending.iter().map(|a| a.at_ms).min().unwrap_or(u64::MAX).min(next_unsolicited);
        tokio::select! {
            () = tokio::time::sleep_until(start + Duration::from_millis(due)) => {
                let now = now_ms();
                if now >= next_unsolicited && now < answers.multicast_allowed_at() {
                    next_unsolicited = answers.multicast_allowed_at();
                } else if now >= next_unsolicited {
                    send_or_warn(current, &ra, ALL_NODES, iface);
                    answers.sent_multicast(now);
                    sent += 1;
                    next_unsolicited = now + config.unsolicited_interval_ms(sent, random());
                }
                pending.retain(|a| {
                    if a.at_ms > now {
                        return true;
                    }
                    send_or_warn(current, &ra, a.to.unwrap_or(ALL_NODES), iface);
                    false
                });
            }
            () = wake.notified() => next_unsolicited = now_ms(),
            _ = check.tick() => anyhow::ensure!(socket.still_on(iface), "{iface} was removed or replaced"),
            got = socket.recv(&mut buf) => match got {
                Ok((src, dst, hops, len)) => match parse_rs(src, dst, hops, &buf[..len]) {
                    Ok(rs) => {
                        if let Some(a) = answers.solicited(now_ms(), &rs, random()).filter(|_| pending.len() < MAX_PENDING) {
                            pending.push(a);
                        }
                    }
                    Err(e) => debug!(%iface, %src, error = %e, "router solicitation ignored"),
                },
                Err(e) => {
                    warn!(%iface, error = %e, "receiving solicitations failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            },
        }
    }
}

/// Sends on the current socket, logging a failure (the next RA is never
/// far off). Under the lock the withdrawal takes the socket with: an RA
/// racing an abort on another thread can never follow the withdrawal.
fn send_or_warn(current: &Current, ra: &[u8], to: Ipv6Addr, iface: &str) {
    if let Some((socket, _)) = lock(current).now.as_ref() {
        if let Err(e) = socket.send(ra, to) {
            warn!(%iface, %to, error = %e, "RA not sent");
        }
    }
}

/// A random number for RFC 4861's jitter (getrandom; the clock if that fails).
fn random() -> u32 {
    let mut r = 0u32;
    // SAFETY: getrandom writes at most 4 bytes into `r`.
    let n = unsafe { libc::getrandom((&mut r as *mut u32).cast(), 4, libc::GRND_NONBLOCK) };
    if n != 4 {
        r = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    }
    r
}

/// The MTU of `iface` (SIOCGIFMTU, asked of this namespace's kernel).
fn mtu_of(iface: &str) -> anyhow::Result<u32> {
    // SAFETY: plain socket(2); owned at once.
    let fd = unsafe { libc::socket(libc::AF_INET6, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error()).context("socket for SIOCGIFMTU");
    }
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data; the name is copied in bounds.
    let mut req: libc::ifreq = unsafe { zeroed() };
    anyhow::ensure!(iface.len() < req.ifr_name.len(), "interface name {iface:?} is too long");
    for (d, s) in req.ifr_name.iter_mut().zip(iface.bytes()) {
        *d = s as libc::c_char;
    }
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFMTU, &mut req) } != 0 {
        return Err(io::Error::last_os_error()).with_context(|| format!("reading the MTU of {iface}"));
    }
    // SAFETY: SIOCGIFMTU filled the mtu arm of the union.
    Ok(unsafe { req.ifr_ifru.ifru_mtu } as u32)
}

/// A raw ICMPv6 socket on one interface: receives router solicitations
/// (only those: ICMP6_FILTER) sent to ff02::2, sends RAs with hop limit 255.
struct RaSocket {
    fd: AsyncFd<OwnedFd>,
    ifindex: u32,
}

/// ICMP6_FILTER (linux/icmpv6.h), not in the libc crate.
const ICMP6_FILTER: libc::c_int = 1;

impl RaSocket {
    fn open(iface: &str) -> io::Result<RaSocket> {
        let ifindex = hostgate_dataplane::sys::ifindex(iface)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no interface {iface:?}")))?;
        // SAFETY: plain socket(2); owned at once.
        let fd = unsafe {
            libc::socket(
                libc::AF_INET6,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::IPPROTO_ICMPV6,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        setopt(&fd, libc::SOL_SOCKET, libc::SO_BINDTODEVICE, iface.as_bytes())?;
        let (v6, hops, one, off) = (libc::IPPROTO_IPV6, 255 as libc::c_int, 1 as libc::c_int, 0 as libc::c_int);
        setopt(&fd, v6, libc::IPV6_UNICAST_HOPS, &hops)?;
        setopt(&fd, v6, libc::IPV6_MULTICAST_HOPS, &hops)?;
        setopt(&fd, v6, libc::IPV6_MULTICAST_IF, &(ifindex as libc::c_int))?;
        // Our own RAs are not for this node's stack.
        setopt(&fd, v6, libc::IPV6_MULTICAST_LOOP, &off)?;
        setopt(&fd, v6, libc::IPV6_RECVHOPLIMIT, &one)?;
        setopt(&fd, v6, libc::IPV6_RECVPKTINFO, &one)?;
        let mut filter = [u32::MAX; 8];
        filter[usize::from(ROUTER_SOLICITATION >> 5)] &= !(1 << (ROUTER_SOLICITATION & 31));
        setopt(&fd, libc::IPPROTO_ICMPV6, ICMP6_FILTER, &filter)?;
        let join = libc::ipv6_mreq { ipv6mr_multiaddr: in6(ALL_ROUTERS), ipv6mr_interface: ifindex };
        setopt(&fd, v6, libc::IPV6_ADD_MEMBERSHIP, &join)?;
        // SAFETY: an OwnedFd keeps its one descriptor open until dropped.
        let fd = unsafe { AsyncFd::register(fd) }?;
        Ok(RaSocket { fd, ifindex })
    }

    /// Binds to the interface's link-local address (fails while it is
    /// missing or tentative), so that every RA has it as source.
    fn bind_link_local(&self, iface: &str) -> anyhow::Result<()> {
        let ll = link_local(iface)?.with_context(|| format!("{iface} has no link-local address"))?;
        let sa = sockaddr(ll, self.ifindex);
        // SAFETY: sa is a valid sockaddr_in6 of the size given.
        let rc = unsafe {
            libc::bind(
                self.fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_in6).cast(),
                size_of::<libc::sockaddr_in6>() as u32,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error()).with_context(|| format!("binding to {ll}%{iface}"));
        }
        Ok(())
    }

    /// Whether `iface` is still the interface this socket is bound to.
    fn still_on(&self, iface: &str) -> bool {
        hostgate_dataplane::sys::ifindex(iface) == Some(self.ifindex)
    }

    fn send(&self, msg: &[u8], to: Ipv6Addr) -> io::Result<()> {
        let sa = sockaddr(to, self.ifindex);
        // SAFETY: msg and sa outlive the call; the kernel fills the checksum.
        let rc = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&sa as *const libc::sockaddr_in6).cast(),
                size_of::<libc::sockaddr_in6>() as u32,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// One message: (source, destination, hop limit, length).
    async fn recv(&self, buf: &mut [u8]) -> io::Result<(Ipv6Addr, Ipv6Addr, u8, usize)> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| recv_msg(fd.as_raw_fd(), buf)) {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }
}

/// recvmsg(2) with the hop limit and destination from control messages;
/// a message without them reads as hop limit 0 (and is refused).
fn recv_msg(fd: libc::c_int, buf: &mut [u8]) -> io::Result<(Ipv6Addr, Ipv6Addr, u8, usize)> {
    // SAFETY: every pointer in msghdr points into locals that outlive the
    // call, with their true sizes; control messages are read through the
    // CMSG macros within msg_controllen.
    unsafe {
        let mut from: libc::sockaddr_in6 = zeroed();
        let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
        let mut control = [0u64; 16];
        let mut msg: libc::msghdr = zeroed();
        msg.msg_name = (&mut from as *mut libc::sockaddr_in6).cast();
        msg.msg_namelen = size_of::<libc::sockaddr_in6>() as u32;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = size_of::<[u64; 16]>();
        let n = libc::recvmsg(fd, &mut msg, 0);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let (mut hops, mut dst) = (0u8, Ipv6Addr::UNSPECIFIED);
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let data = libc::CMSG_DATA(c);
            match ((*c).cmsg_level, (*c).cmsg_type) {
                (libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT) => {
                    hops = std::ptr::read_unaligned(data.cast::<libc::c_int>()).clamp(0, 255) as u8;
                }
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                    let info = std::ptr::read_unaligned(data.cast::<libc::in6_pktinfo>());
                    dst = Ipv6Addr::from(info.ipi6_addr.s6_addr);
                }
                _ => {}
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
        Ok((Ipv6Addr::from(from.sin6_addr.s6_addr), dst, hops, n as usize))
    }
}

/// The link-local address of `iface` (getifaddrs, this namespace).
fn link_local(iface: &str) -> io::Result<Option<Ipv6Addr>> {
    // SAFETY: getifaddrs' list is walked read-only and freed once.
    unsafe {
        let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
        if libc::getifaddrs(&mut list) != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut found = None;
        let mut cur = list;
        while !cur.is_null() {
            let a = &*cur;
            cur = a.ifa_next;
            if a.ifa_addr.is_null() || i32::from((*a.ifa_addr).sa_family) != libc::AF_INET6 {
                continue;
            }
            if std::ffi::CStr::from_ptr(a.ifa_name).to_bytes() != iface.as_bytes() {
                continue;
            }
            let addr = Ipv6Addr::from((*a.ifa_addr.cast::<libc::sockaddr_in6>()).sin6_addr.s6_addr);
            if addr.segments()[0] & 0xffc0 == 0xfe80 {
                found = Some(addr);
                break;
            }
        }
        libc::freeifaddrs(list);
        Ok(found)
    }
}

fn in6(a: Ipv6Addr) -> libc::in6_addr {
    libc::in6_addr { s6_addr: a.octets() }
}

fn sockaddr(a: Ipv6Addr, ifindex: u32) -> libc::sockaddr_in6 {
    // SAFETY: a zeroed sockaddr_in6 is valid.
    let mut sa: libc::sockaddr_in6 = unsafe { zeroed() };
    sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
    sa.sin6_addr = in6(a);
    sa.sin6_scope_id = ifindex;
    sa
}

/// setsockopt(2) with a value of any plain type (or a byte string).
fn setopt<T: ?Sized>(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: value points to size_of_val(value) readable bytes.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of_val(value) as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

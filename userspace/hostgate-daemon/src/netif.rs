//! The kernel side of customer IPs: addresses on an interface through
//! rtnetlink, and announcements through an AF_PACKET socket. Addresses
//! hostgate adds carry its own address protocol (IFA_PROTO), so it can tell
//! them from everyone else's and never touches the others.

use std::{
    io,
    net::IpAddr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::Duration,
};

use anyhow::{bail, Context};
use futures_util::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressProtocol};

/// IFA_PROTO value marking addresses hostgate added ('h').
pub const HOSTGATE_PROTO: u8 = 0x68;

/// An address on an interface and whether hostgate put it there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IfAddr {
    pub addr: IpAddr,
    pub prefix_len: u8,
    pub ours: bool,
}

fn ifindex(iface: &str) -> anyhow::Result<u32> {
    hostgate_dataplane::sys::ifindex(iface).with_context(|| format!("interface {iface:?} does not exist"))
}

fn address_of(msg: &AddressMessage) -> Option<IpAddr> {
    msg.attributes
        .iter()
        .find_map(|a| match a {
            AddressAttribute::Local(ip) => Some(*ip),
            _ => None,
        })
        .or_else(|| {
            msg.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            })
        })
}

fn is_ours(msg: &AddressMessage) -> bool {
    msg.attributes.iter().any(|a| matches!(a, AddressAttribute::Protocol(AddressProtocol::Other(HOSTGATE_PROTO))))
}

/// rtnetlink operations on one interface's addresses.
/// Awaits a netlink request for at most a few seconds: a connection that
/// stopped answering becomes an error (the caller starts over with a new
/// one) instead of a task that waits forever.
async fn in_time<T, E: Into<anyhow::Error>>(
    request: impl std::future::Future<Output = Result<T, E>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(Duration::from_secs(5), request).await {
        Ok(r) => r.map_err(Into::into),
        Err(_) => anyhow::bail!("rtnetlink did not answer within 5 s"),
    }
}

pub struct Addresses {
    handle: rtnetlink::Handle,
    iface: String,
}

impl Addresses {
    pub fn connect(iface: &str) -> anyhow::Result<Self> {
        let (conn, handle, _) = rtnetlink::new_connection().context("opening rtnetlink")?;
        tokio::spawn(conn);
        Ok(Addresses { handle, iface: iface.to_string() })
    }

    async fn messages(&self) -> anyhow::Result<Vec<AddressMessage>> {
        let index = ifindex(&self.iface)?;
        let stream = self.handle.address().get().set_link_index_filter(index).execute();
        in_time(stream.try_collect()).await
    }

    /// Every address of the interface.
    pub async fn list(&self) -> anyhow::Result<Vec<IfAddr>> {
        Ok(self
            .messages()
            .await?
            .iter()
            .filter_map(|m| Some(IfAddr { addr: address_of(m)?, prefix_len: m.header.prefix_len, ours: is_ours(m) }))
            .collect())
    }

    /// Adds `addr` as a host address (/32, /128) marked as hostgate's,
    /// valid for `lifetime` seconds if given (see [`Self::refresh`]).
    /// Returns false if it was already there.
    pub async fn add(&self, addr: IpAddr, lifetime: Option<u32>) -> anyhow::Result<bool> {
        if self.list().await?.iter().any(|a| a.addr == addr) {
            return Ok(false);
        }
        let prefix_len = if addr.is_ipv4() { 32 } else { 128 };
        self.request(addr, prefix_len, lifetime, false)?
            .execute()
            .await
            .with_context(|| format!("adding {addr} to {}", self.iface))?;
        Ok(true)
    }

    /// Renews the lifetime of hostgate's `addr`: in a cluster, addresses
    /// expire in the kernel unless a live daemon keeps renewing them, so a
    /// daemon that dies without withdrawing them cannot leave them behind
    /// for long.
    pub async fn refresh(&self, addr: IpAddr, lifetime: u32) -> anyhow::Result<()> {
        let prefix_len = if addr.is_ipv4() { 32 } else { 128 };
        in_time(self.request(addr, prefix_len, Some(lifetime), true)?.execute())
            .await
            .with_context(|| format!("renewing {addr} on {}", self.iface))
    }

    /// Adds `addr/prefix_len` marked as hostgate's, without lifetime, so
    /// that the kernel routes the prefix to this interface (a router address
    /// on a container link). Returns false if it was already there.
    pub async fn add_on_link(&self, addr: IpAddr, prefix_len: u8) -> anyhow::Result<bool> {
        if self.list().await?.iter().any(|a| a.addr == addr) {
            return Ok(false);
        }
        in_time(self.request(addr, prefix_len, None, false)?.execute())
            .await
            .with_context(|| format!("adding {addr}/{prefix_len} to {}", self.iface))?;
        Ok(true)
    }

    fn request(
        &self,
        addr: IpAddr,
        prefix_len: u8,
        lifetime: Option<u32>,
        replace: bool,
    ) -> anyhow::Result<rtnetlink::AddressAddRequest> {
        let mut req = self.handle.address().add(ifindex(&self.iface)?, addr, prefix_len);
        if replace {
            req = req.replace();
        }
        let msg = req.message_mut();
        msg.attributes.push(AddressAttribute::Protocol(AddressProtocol::Other(HOSTGATE_PROTO)));
        if let Some(secs) = lifetime {
            let mut info = netlink_packet_route::address::CacheInfo::default();
            info.ifa_preferred = secs;
            info.ifa_valid = secs;
            msg.attributes.push(AddressAttribute::CacheInfo(info));
        }
        if addr.is_ipv6() {
            // No duplicate address detection: the cluster decides who owns a
            // customer IP, and a network's router address is the node's by
            // declaration.
            msg.header.flags |= netlink_packet_route::address::AddressHeaderFlags::Nodad;
        }
        Ok(req)
    }

    /// Removes `addr` if hostgate added it. Returns whether it did.
    pub async fn remove_ours(&self, addr: IpAddr) -> anyhow::Result<bool> {
        for msg in self.messages().await? {
            if address_of(&msg) == Some(addr) {
                if !is_ours(&msg) {
                    bail!("{addr} on {} was not added by hostgate; leaving it", self.iface);
                }
                in_time(self.handle.address().del(msg).execute()).await.with_context(|| format!("removing {addr}"))?;
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// Host routes (/32) to DHCP clients holding routed single addresses,
/// marked as hostgate's by their protocol.
pub struct HostRoutes {
    handle: rtnetlink::Handle,
}

impl HostRoutes {
    pub fn connect() -> anyhow::Result<Self> {
        let (conn, handle, _) = rtnetlink::new_connection().context("opening rtnetlink")?;
        tokio::spawn(conn);
        Ok(HostRoutes { handle })
    }

    fn message(addr: std::net::Ipv4Addr, index: u32) -> netlink_packet_route::route::RouteMessage {
        rtnetlink::RouteMessageBuilder::<std::net::Ipv4Addr>::new()
            .destination_prefix(addr, 32)
            .output_interface(index)
            .scope(netlink_packet_route::route::RouteScope::Link)
            .protocol(netlink_packet_route::route::RouteProtocol::Other(HOSTGATE_PROTO))
            .build()
    }

    /// Routes `addr` out of `iface` (replacing any route of it).
    pub async fn set(&self, addr: std::net::Ipv4Addr, iface: &str) -> anyhow::Result<()> {
        let req = self.handle.route().add(Self::message(addr, ifindex(iface)?)).replace();
        in_time(req.execute()).await.with_context(|| format!("routing {addr} to {iface}"))
    }

    /// Removes the route of `addr` out of `iface`, if there is one.
    pub async fn remove(&self, addr: std::net::Ipv4Addr, iface: &str) -> anyhow::Result<()> {
        let Ok(index) = ifindex(iface) else { return Ok(()) };
        match in_time(self.handle.route().del(Self::message(addr, index)).execute()).await {
            Ok(()) => Ok(()),
            // ESRCH: no such route (already gone with its interface).
            Err(e) if format!("{e:#}").contains("No such process") => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing the route of {addr}")),
        }
    }
}

/// Sends `frames` out of `iface`, `count` rounds `interval` apart.
pub async fn announce(iface: &str, frames: Vec<Vec<u8>>, count: u32, interval: Duration) -> anyhow::Result<()> {
    let index = ifindex(iface)?;
    let socket = raw_socket()?;
    for round in 0..count {
        if round > 0 {
            tokio::time::sleep(interval).await;
        }
        for f in &frames {
            send(&socket, index, f).context("sending an announcement")?;
        }
    }
    Ok(())
}

/// The MAC address of `iface`, asked of the kernel of this network
/// namespace (SIOCGIFHWADDR; /sys may belong to another namespace).
pub fn mac_of(iface: &str) -> anyhow::Result<[u8; 6]> {
    let sock = raw_socket().context("socket for SIOCGIFHWADDR")?;
    // SAFETY: ifreq is plain data; the name is copied in bounds (< IFNAMSIZ).
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if iface.len() >= req.ifr_name.len() {
        bail!("interface name {iface:?} is too long");
    }
    for (d, s) in req.ifr_name.iter_mut().zip(iface.bytes()) {
        *d = s as libc::c_char;
    }
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) } != 0 {
        return Err(io::Error::last_os_error()).with_context(|| format!("reading the MAC address of {iface}"));
    }
    // SAFETY: SIOCGIFHWADDR filled the hwaddr arm of the union.
    let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
    let mut mac = [0u8; 6];
    for (m, b) in mac.iter_mut().zip(data.iter()) {
        *m = *b as u8;
    }
    Ok(mac)
}

/// The first IPv4 address of `iface`, if it has one (getifaddrs(3)).
pub fn ipv4_of(iface: &str) -> Option<std::net::Ipv4Addr> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list`, which is walked read-only and freed
    // once; every pointer is checked before it is read.
    unsafe {
        if libc::getifaddrs(&mut list) != 0 {
            return None;
        }
        let mut found = None;
        let mut at = list;
        while !at.is_null() && found.is_none() {
            let entry = &*at;
            let name = std::ffi::CStr::from_ptr(entry.ifa_name);
            let addr = entry.ifa_addr;
            if name.to_bytes() == iface.as_bytes() && !addr.is_null() && i32::from((*addr).sa_family) == libc::AF_INET {
                let sin = &*(addr as *const libc::sockaddr_in);
                found = Some(std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)));
            }
            at = entry.ifa_next;
        }
        libc::freeifaddrs(list);
        found
    }
}

/// A sending-only AF_PACKET socket: each sendto names the interface.
fn raw_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned at once.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn send(fd: &OwnedFd, index: u32, frame: &[u8]) -> io::Result<()> {
    // SAFETY: zeroed sockaddr_ll is valid; frame and addr outlive the call.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_ifindex = index as i32;
    addr.sll_halen = 6;
    let rc = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

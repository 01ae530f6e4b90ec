//! Zero-downtime restart: the listening sockets outlive the process.
//!
//! A daemon started by another (or by systemd's socket activation) finds
//! its listeners in `LISTEN_FDS` / `LISTEN_FDNAMES` (systemd's convention:
//! descriptors 3, 4, ... named `http`, `https`, `dns-udp`, `dns-tcp` or
//! `ssh`), adopts the ones whose local address a configured socket names
//! and binds the rest. An
//! upgrading daemon hands its own listeners to its successor the same way,
//! plus `HOSTGATE_READY_FD`, a pipe on which the successor says `READY=1`
//! once it serves its API: only then does the old one stop accepting and
//! drain. A successor that exits or stays silent is killed and the old
//! daemon carries on with its own sockets.

use std::{
    ffi::OsString,
    io::Read,
    net::SocketAddr,
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd},
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::Context;
use tracing::{info, warn};

/// The first inherited descriptor (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;
/// The successor's readiness pipe (write end), as a descriptor number.
const READY_ENV: &str = "HOSTGATE_READY_FD";

/// Listening sockets handed to this process, by name.
#[derive(Default)]
pub struct Inherited {
    fds: Vec<(String, OwnedFd)>,
}

impl Inherited {
    /// Takes the descriptors `LISTEN_FDS` announces (if `LISTEN_PID`, when
    /// set, is this process, as systemd requires) and removes the variables,
    /// so that nothing this process starts inherits the claim. Call it before
    /// any thread starts (it changes the environment).
    pub fn from_env() -> Inherited {
        let count = std::env::var("LISTEN_FDS").ok().and_then(|n| n.parse::<RawFd>().ok()).unwrap_or(0);
        let pid_ok = std::env::var("LISTEN_PID").ok().is_none_or(|p| p.parse() == Ok(std::process::id()));
        let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
        for var in ["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"] {
            std::env::remove_var(var);
        }
        if count <= 0 || !pid_ok {
            return Inherited::default();
        }
        let mut names = names.split(':');
        let fds = (0..count)
            .map(|i| {
                let fd = LISTEN_FDS_START + i;
                // SAFETY: LISTEN_FDS says descriptors 3..3+count are ours and
                // open; nothing else in this process has claimed them yet.
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                set_cloexec(owned.as_raw_fd());
                (names.next().unwrap_or("unknown").to_string(), owned)
            })
            .collect();
        Inherited { fds }
    }

    /// Wraps descriptors this process already holds (its own listeners,
    /// carried into a new start after a failed upgrade).
    pub fn from_fds(fds: Vec<(String, OwnedFd)>) -> Inherited {
        Inherited { fds }
    }

    /// The inherited listening TCP socket named `name` bound to `addr`,
    /// non-blocking, if there is one.
    pub fn take_tcp(&mut self, name: &str, addr: SocketAddr) -> Option<std::net::TcpListener> {
        self.take(name, addr).map(std::net::TcpListener::from)
    }

    /// The inherited UDP socket named `name` bound to `addr`, non-blocking,
    /// if there is one (there may be several: call again for the next).
    pub fn take_udp(&mut self, name: &str, addr: SocketAddr) -> Option<std::net::UdpSocket> {
        self.take(name, addr).map(std::net::UdpSocket::from)
    }

    /// The descriptor named `name` bound to `addr`, made non-blocking.
    fn take(&mut self, name: &str, addr: SocketAddr) -> Option<OwnedFd> {
        let i = self.fds.iter().position(|(n, fd)| n == name && local_addr(fd.as_fd()) == Some(addr))?;
        let (_, fd) = self.fds.swap_remove(i);
        if let Err(e) = socket2::SockRef::from(&fd).set_nonblocking(true) {
            warn!(%addr, error = %e, "inherited socket unusable; binding anew");
            return None;
        }
        Some(fd)
    }

    /// Moves the descriptors named one of `names` out, for a service that
    /// adopts them later.
    pub fn take_named(&mut self, names: &[&str]) -> Inherited {
        let (taken, rest) = self.fds.drain(..).partition(|(n, _)| names.contains(&n.as_str()));
        self.fds = rest;
        Inherited { fds: taken }
    }

    /// The descriptors, named.
    pub fn into_fds(mut self) -> Vec<(String, OwnedFd)> {
        std::mem::take(&mut self.fds)
    }

    /// How many descriptors are left unclaimed.
    pub fn len(&self) -> usize {
        self.fds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fds.is_empty()
    }

    /// Closes what no configured listener wanted (an address removed from
    /// the config meanwhile), saying so.
    pub fn close_rest(&mut self) {
        for (name, fd) in self.fds.drain(..) {
            let addr = local_addr(fd.as_fd()).map_or("?".to_string(), |a| a.to_string());
            info!(name, %addr, "inherited socket not configured any more; closed");
        }
    }
}

/// The sockets of the services that run on the control runtime (DNS,
/// SSH), held by the process across runs so that an upgrade hands them to
/// the successor with the HTTP listeners. Between the control runtime's end
/// and the successor's start nobody reads them, but they stay open: queries
/// and connections wait in them instead of being refused. Each service
/// sets its present sockets (copies of the descriptors) when it binds or
/// adopts them, which drops the copies of the last ones.
#[derive(Default)]
pub struct Kept(std::sync::Mutex<std::collections::BTreeMap<&'static str, Vec<(String, OwnedFd)>>>);

impl Kept {
    /// `service`'s sockets from now on, each by the name it is handed over
    /// under.
    pub fn set(&self, service: &'static str, sockets: Vec<(String, OwnedFd)>) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).insert(service, sockets);
    }

    /// `service`'s sockets back, for it to adopt again (its server starts
    /// over within the run, with the queries that waited meanwhile).
    pub fn take_service(&self, service: &'static str) -> Vec<(String, OwnedFd)> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(service).unwrap_or_default()
    }

    /// Every service's sockets, now the successor's (or the next run's).
    pub fn take(&self) -> Vec<(String, OwnedFd)> {
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut *all).into_values().flatten().collect()
    }

    /// Closes them (the process stops): nothing should wait in them.
    pub fn close(&self) {
        drop(self.take());
    }
}

/// A copy of `fd` under `name`, for [`Kept::set`].
pub fn kept_copy(name: &str, fd: BorrowedFd<'_>) -> std::io::Result<(String, OwnedFd)> {
    Ok((name.to_string(), fd.try_clone_to_owned()?))
}

fn local_addr(fd: BorrowedFd<'_>) -> Option<SocketAddr> {
    socket2::SockRef::from(&fd).local_addr().ok()?.as_socket()
}

fn set_cloexec(fd: RawFd) {
    // SAFETY: plain fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
        }
    }
}

/// Binds a TCP listener as tokio would (SO_REUSEADDR, backlog 1024: during
/// a hand-over, connections wait in it), non-blocking and close-on-exec.
pub fn bind_tcp(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Tells the daemon that started this one (if any) that it is ready.
pub struct Ready(Option<OwnedFd>);

impl Ready {
    /// Takes `HOSTGATE_READY_FD` from the environment (before threads start).
    pub fn from_env() -> Ready {
        let fd = std::env::var(READY_ENV).ok().and_then(|v| v.parse::<RawFd>().ok());
        std::env::remove_var(READY_ENV);
        Ready(fd.filter(|fd| *fd > 2).map(|fd| {
            set_cloexec(fd);
            // SAFETY: the parent put the pipe's write end at this number for us.
            unsafe { OwnedFd::from_raw_fd(fd) }
        }))
    }

    /// Nothing to tell (a daemon started by hand).
    pub fn none() -> Ready {
        Ready(None)
    }

    /// Writes `READY=1` and closes the pipe; under systemd (`NOTIFY_SOCKET`)
    /// also says `READY=1` and `MAINPID`: after a hand-over the service's
    /// main process is this one (the unit needs `NotifyAccess=all`).
    pub fn notify(&mut self) {
        if let Some(socket) = std::env::var_os("NOTIFY_SOCKET") {
            if let Err(e) = sd_notify(&socket, &format!("READY=1\nMAINPID={}\n", std::process::id())) {
                warn!(error = %e, "could not notify systemd (NOTIFY_SOCKET)");
            }
        }
        if let Some(fd) = self.0.take() {
            let mut pipe = std::fs::File::from(fd);
            if let Err(e) = std::io::Write::write_all(&mut pipe, b"READY=1\n") {
                warn!(error = %e, "could not tell the previous daemon that this one is ready");
            }
        }
    }
}

/// One datagram to systemd's notification socket (a path, or an abstract
/// name written with a leading `@`).
fn sd_notify(socket: &std::ffi::OsStr, message: &str) -> std::io::Result<()> {
    use std::os::{linux::net::SocketAddrExt, unix::ffi::OsStrExt, unix::net};
    let bytes = socket.as_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => net::SocketAddr::from_abstract_name(name)?,
        None => net::SocketAddr::from_pathname(Path::new(socket))?,
    };
    net::UnixDatagram::unbound()?.send_to_addr(message.as_bytes(), &addr)?;
    Ok(())
}

/// Starts `exe args` with `listeners` at descriptors 3, 4, ... and waits
/// up to `patience` for its `READY=1`. On any failure the successor is
/// killed and reaped, and the error says what happened.
pub fn hand_over(
    exe: &Path,
    args: &[OsString],
    listeners: &[(String, BorrowedFd<'_>)],
    patience: Duration,
) -> anyhow::Result<u32> {
    let (read, write) = pipe().context("creating the readiness pipe")?;
    // Copies above every target number first, so that placing one at 3 + i
    // never overwrites another still to be placed (they close on exec).
    let mut high = Vec::new();
    for fd in listeners.iter().map(|(_, fd)| fd.as_raw_fd()).chain([write.as_raw_fd()]) {
        // SAFETY: duplicating a descriptor we hold.
        let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 100) };
        if dup < 0 {
            return Err(std::io::Error::last_os_error()).context("duplicating a listener");
        }
        // SAFETY: fcntl just returned this new descriptor.
        high.push(unsafe { OwnedFd::from_raw_fd(dup) });
    }
    drop(write);
    let raw: Vec<RawFd> = high.iter().map(AsRawFd::as_raw_fd).collect();
    let names: Vec<&str> = listeners.iter().map(|(n, _)| n.as_str()).collect();
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .env("LISTEN_FDS", listeners.len().to_string())
        .env("LISTEN_FDNAMES", names.join(":"))
        .env(READY_ENV, (LISTEN_FDS_START + listeners.len() as RawFd).to_string())
        // The successor's pid is not known before the fork; `from_env`
        // accepts the descriptors without it.
        .env_remove("LISTEN_PID");
    // SAFETY: only dup2 between fork and exec (async-signal-safe); dup2's
    // copy does not close on exec, so the successor keeps it.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            for (i, fd) in raw.iter().enumerate() {
                if libc::dup2(*fd, LISTEN_FDS_START + i as RawFd) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().with_context(|| format!("starting {}", exe.display()))?;
    drop(high);
    let pid = child.id();
    info!(pid, exe = %exe.display(), listeners = listeners.len(), "successor started");
    match wait_ready(read, patience) {
        Ok(()) => Ok(pid),
        Err(e) => {
            let _ = child.kill();
            let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
            Err(e.context(format!("the successor (pid {pid}) {status}")))
        }
    }
}

/// Waits for `READY=1` on the pipe; end of file means the successor is gone.
fn wait_ready(read: OwnedFd, patience: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + patience;
    let mut pipe = std::fs::File::from(read);
    let mut got = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            anyhow::bail!("was not ready within {} s", patience.as_secs());
        }
        let mut pfd = libc::pollfd { fd: pipe.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e).context("waiting for the successor");
        }
        if n == 0 {
            continue;
        }
        let mut buf = [0u8; 64];
        match pipe.read(&mut buf) {
            Ok(0) => anyhow::bail!("exited (or closed its readiness pipe) before it was ready"),
            Ok(k) => {
                got.extend_from_slice(&buf[..k]);
                if got.windows(7).any(|w| w == b"READY=1") {
                    return Ok(());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("reading the readiness pipe"),
        }
    }
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 fills two descriptors on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both were just created and are ours.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sd_notify_reaches_a_path_and_an_abstract_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let rx = std::os::unix::net::UnixDatagram::bind(&path).expect("bind");
        sd_notify(path.as_os_str(), "READY=1\nMAINPID=7\n").expect("notify");
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"READY=1\nMAINPID=7\n");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("hostgate-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("name");
        let rx = std::os::unix::net::UnixDatagram::bind_addr(&addr).expect("bind abstract");
        sd_notify(std::ffi::OsStr::new(&format!("@{name}")), "READY=1\n").expect("notify abstract");
        let n = rx.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"READY=1\n");
    }

    #[test]
    fn a_handed_over_listener_is_found_by_name_and_address() {
        let l = bind_tcp("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let addr = l.local_addr().expect("addr");
        let mut inherited = Inherited::from_fds(vec![("https".into(), l.try_clone().expect("dup").into())]);
        assert!(inherited.take_tcp("http", addr).is_none(), "the name must match");
        let other = "127.0.0.1:1".parse().expect("addr");
        assert!(inherited.take_tcp("https", other).is_none(), "the address must match");
        let taken = inherited.take_tcp("https", addr).expect("adopted");
        assert_eq!(taken.local_addr().expect("addr"), addr);
        assert!(inherited.is_empty());
    }

    #[test]
    fn each_of_several_udp_sockets_is_adopted_once_and_kept_ones_are_handed_on() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let addr = socket.local_addr().expect("addr");
        let copy = |name: &str| kept_copy(name, socket.as_fd()).expect("dup");
        let kept = Kept::default();
        kept.set("dns", vec![copy("dns-udp"), copy("dns-udp")]);
        kept.set("ssh", vec![copy("ssh")]);
        kept.set("dns", vec![copy("dns-udp"), copy("dns-udp"), copy("dns-tcp")]);
        assert_eq!(kept.take_service("ssh").len(), 1);
        kept.set("ssh", vec![copy("ssh")]);
        let mut all = Inherited::from_fds(kept.take());
        assert!(kept.take().is_empty(), "handed on once");
        assert_eq!(all.len(), 4, "a service's last set replaces its earlier one");
        let mut dns = all.take_named(&["dns-udp", "dns-tcp"]);
        assert_eq!((dns.len(), all.len()), (3, 1));
        for _ in 0..2 {
            let adopted = dns.take_udp("dns-udp", addr).expect("adopted");
            assert_eq!(adopted.local_addr().expect("addr"), addr);
        }
        assert!(dns.take_udp("dns-udp", addr).is_none(), "two were handed over");
        assert_eq!(dns.len(), 1);
    }
}

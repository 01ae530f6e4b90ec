//! Sends raw frames from inside a namespace through an AF_PACKET socket, so
//! a test controls every byte that reaches the node, and knows exactly how
//! many frames of each kind it sent.

use std::{
    ffi::CString,
    fs::File,
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

/// How to pace a burst.
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    /// Frames per second; 0 sends as fast as possible.
    pub rate: u64,
    /// Stop after this long even if frames are left (the load is bounded in time too).
    pub max_duration: Duration,
}

impl Pace {
    pub const FAST: Pace = Pace { rate: 0, max_duration: Duration::from_secs(30) };
}

/// Sends `frames` in order out of `iface` in namespace `netns_path`, each
/// `repeat` times, paced by `pace`. Returns how many frames went out. Runs
/// on a fresh thread: setns only affects the calling thread.
pub fn send_frames(netns_path: &str, iface: &str, frames: Vec<Vec<u8>>, repeat: u64, pace: Pace) -> io::Result<u64> {
    let netns_path = netns_path.to_string();
    let iface = iface.to_string();
    std::thread::spawn(move || {
        enter_netns(&netns_path)?;
        let sock = PacketSocket::bind(&iface)?;
        let start = Instant::now();
        let mut sent = 0u64;
        'outer: for round in 0..repeat {
            for frame in &frames {
                if start.elapsed() > pace.max_duration {
                    break 'outer;
                }
                if pace.rate > 0 {
                    let due = Duration::from_secs_f64(sent as f64 / pace.rate as f64);
                    if let Some(wait) = due.checked_sub(start.elapsed()) {
                        std::thread::sleep(wait);
                    }
                }
                sock.send(frame).map_err(|e| io::Error::new(e.kind(), format!("round {round}: {e}")))?;
                sent += 1;
            }
        }
        Ok(sent)
    })
    .join()
    .map_err(|_| io::Error::other("sender thread panicked"))?
}

/// Moves the calling thread into the network namespace at `path`.
pub fn enter_netns(path: &str) -> io::Result<()> {
    let ns = File::open(path)?;
    // SAFETY: setns on an fd we own; affects only this thread.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

struct PacketSocket {
    fd: OwnedFd,
    addr: libc::sockaddr_ll,
}

impl PacketSocket {
    fn bind(iface: &str) -> io::Result<Self> {
        let name = CString::new(iface).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: plain libc calls with valid arguments; the fd is owned at once.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("no interface {iface}")));
        }
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: zeroed sockaddr_ll is a valid starting value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = ifindex as i32;
        addr.sll_halen = 6;
        Ok(PacketSocket { fd, addr })
    }

    /// Binds for receiving every protocol on the interface, with a short
    /// receive timeout so callers can stop on time.
    fn bind_receive(&self) -> io::Result<()> {
        let mut addr = self.addr;
        addr.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: addr is a valid sockaddr_ll for the call's duration.
        let rc = unsafe {
            libc::bind(
                self.fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let tv = libc::timeval { tv_sec: 0, tv_usec: 50_000 };
        // SAFETY: tv lives across the call.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// One frame, or None after the receive timeout.
    fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        // SAFETY: buf is valid for its length.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n >= 0 {
            return Ok(Some(n as usize));
        }
        let e = io::Error::last_os_error();
        if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) {
            return Ok(None);
        }
        Err(e)
    }

    fn send(&self, frame: &[u8]) -> io::Result<()> {
        loop {
            // SAFETY: frame and addr outlive the call.
            let rc = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    (&self.addr as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            if rc >= 0 {
                return Ok(());
            }
            let err = io::Error::last_os_error();
            // The qdisc is full: wait for it to drain rather than lose the frame.
            if err.raw_os_error() == Some(libc::ENOBUFS) || err.kind() == io::ErrorKind::WouldBlock {
                std::thread::sleep(Duration::from_micros(50));
                continue;
            }
            return Err(err);
        }
    }
}

/// Frames received on `iface` in namespace `netns_path` during `duration`
/// (from when this returns, on a background thread); join the handle for them.
pub fn capture(
    netns_path: &str,
    iface: &str,
    duration: Duration,
) -> io::Result<std::thread::JoinHandle<io::Result<Vec<Vec<u8>>>>> {
    let (path, iface) = (netns_path.to_string(), iface.to_string());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || -> io::Result<Vec<Vec<u8>>> {
        enter_netns(&path)?;
        let sock = PacketSocket::bind(&iface)?;
        sock.bind_receive()?;
        let _ = ready_tx.send(());
        let end = Instant::now() + duration;
        let mut frames = Vec::new();
        let mut buf = vec![0u8; 2048];
        while Instant::now() < end {
            if let Some(n) = sock.recv(&mut buf)? {
                frames.push(buf[..n].to_vec());
            }
        }
        Ok(frames)
    });
    ready_rx.recv().map_err(|_| io::Error::other("capture thread failed to start"))?;
    Ok(handle)
}

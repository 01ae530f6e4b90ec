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

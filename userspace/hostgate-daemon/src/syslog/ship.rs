//! Sends the spool to the receiver over TCP + TLS, reconnecting with
//! backoff while it is away.
//!
//! Syslog over TLS has no acknowledgements, so "the receiver has it" is
//! decided from below: a frame is committed (and leaves the spool) once
//! the receiver's TCP has acknowledged every TLS byte carrying it (the
//! socket's unacknowledged send queue, SIOCOUTQ, has drained past it) and
//! the connection then stayed up for `SETTLE` more: a receiver reads its
//! socket at once, so what it had acknowledged that long before it closed
//! had been read. When the connection breaks (an error, or the receiver
//! closing it: it never sends anything, so any read end is a close),
//! sending restarts from the last commit. Delivery is therefore at least
//! once: lines of the last `SETTLE` before a break may arrive twice,
//! none is lost.

use std::{
    collections::VecDeque,
    os::fd::AsRawFd,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::TcpStream,
    sync::Notify,
};
use tokio_rustls::{rustls, TlsConnector};

use super::spool::Spool;

/// How long a connection must outlive the acknowledgement of a frame for
/// the frame to count as received.
const SETTLE: Duration = Duration::from_secs(2);
/// Bytes read from the spool per write.
const CHUNK: usize = 64 * 1024;
/// A write the receiver does not take within this long ends the connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Where and how to connect.
pub struct Target {
    pub address: std::net::SocketAddr,
    pub server_name: rustls::pki_types::ServerName<'static>,
    pub tls: Arc<rustls::ClientConfig>,
}

/// Runs forever: connect, send, and on any failure wait and start over
/// from the last commit.
pub async fn run(spool: Arc<Mutex<Spool>>, wake: Arc<Notify>, target: Target) {
    let mut backoff = Duration::from_millis(200);
    let mut was_up = true; // so that the first failure is logged
    loop {
        let started = Instant::now();
        let mut connected = false;
        match session(&spool, &wake, &target, &mut connected).await {
            Ok(()) => {}
            Err(e) => {
                // One line per change of state, not per retry: these lines
                // go to the spool as well.
                if was_up || connected {
                    tracing::warn!(receiver = %target.address, error = %e, "syslog receiver unreachable; spooling to disk and retrying");
                }
                was_up = false;
            }
        }
        if started.elapsed() > Duration::from_secs(10) {
            backoff = Duration::from_millis(200);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// One connection, until it fails; `connected` tells whether TLS was up.
async fn session(spool: &Mutex<Spool>, wake: &Notify, target: &Target, connected: &mut bool) -> anyhow::Result<()> {
    let tcp = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(target.address)).await??;
    tcp.set_nodelay(true)?;
    let fd = tcp.as_raw_fd();
    let written = Arc::new(AtomicU64::new(0));
    let counted = Counting { inner: tcp, written: written.clone() };
    let tls = tokio::time::timeout(
        Duration::from_secs(10),
        TlsConnector::from(target.tls.clone()).connect(target.server_name.clone(), counted),
    )
    .await??;
    *connected = true;
    tracing::info!(receiver = %target.address, "syslog receiver connected");
    let (mut rd, mut wr) = tokio::io::split(tls);
    let closed = async move {
        let mut buf = [0u8; 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) => return "the receiver closed the connection".to_string(),
                Err(e) => return format!("reading: {e}"),
                Ok(_) => {}
            }
        }
    };
    tokio::pin!(closed);
    let mut pos = lock(spool).committed();
    // (spool position after a write, TLS bytes written after it, when)
    let mut inflight: VecDeque<(u64, u64, Instant)> = VecDeque::new();
    loop {
        let (bytes, next) = {
            let s = lock(spool);
            s.read(pos, CHUNK)?
        };
        if !bytes.is_empty() {
            tokio::select! {
                r = tokio::time::timeout(WRITE_TIMEOUT, async { wr.write_all(&bytes).await?; wr.flush().await }) => r??,
                why = &mut closed => anyhow::bail!(why),
            }
            pos = next;
            inflight.push_back((pos, written.load(Ordering::Relaxed), Instant::now()));
        }
        // What the receiver's TCP has acknowledged.
        let acked = written.load(Ordering::Relaxed).saturating_sub(unacked(fd));
        let mut commit = None;
        while let Some(&(end, tls_end, at)) = inflight.front() {
            if tls_end > acked || at.elapsed() < SETTLE {
                break;
            }
            commit = Some(end);
            inflight.pop_front();
        }
        if let Some(c) = commit {
            lock(spool).commit(c)?;
        }
        if bytes.is_empty() {
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                why = &mut closed => anyhow::bail!(why),
            }
        }
    }
}

fn lock(spool: &Mutex<Spool>) -> std::sync::MutexGuard<'_, Spool> {
    // A panic while holding it left a consistent file state behind (every
    // change is one write or one rename): keep going.
    spool.lock().unwrap_or_else(|p| p.into_inner())
}

/// Bytes written to the socket that its peer has not acknowledged yet.
fn unacked(fd: i32) -> u64 {
    let mut n: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ) writes one int; fd is the live socket
    // owned by the stream this session holds.
    if unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut n) } != 0 {
        return u64::MAX; // unknown: acknowledge nothing
    }
    n.max(0) as u64
}

/// The TCP stream under TLS, counting the bytes written to it.
struct Counting {
    inner: TcpStream,
    written: Arc<AtomicU64>,
}

impl AsyncRead for Counting {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counting {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.written.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

//! Real servers and clients inside namespaces for load-balancer tests: each
//! server answers every TCP connection or UDP datagram with its identity,
//! so a client learns which backend served it. Servers stop when dropped,
//! and after two minutes in any case.

use std::{
    io::{self, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::sender::enter_netns;

const MAX_LIFETIME: Duration = Duration::from_secs(120);
/// A client gives up on the rest of its requests after this long.
const CLIENT_DEADLINE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(2);

/// A server thread; stops and joins on drop.
pub struct IdentityServer {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Drop for IdentityServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn spawn_in_netns<S: Send + 'static>(
    netns_path: &str,
    bind: impl FnOnce() -> io::Result<S> + Send + 'static,
    serve: impl Fn(&S) -> io::Result<bool> + Send + 'static,
) -> io::Result<IdentityServer> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let path = netns_path.to_string();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let socket = match enter_netns(&path).and_then(|()| bind()) {
            Ok(s) => {
                let _ = ready_tx.send(Ok(()));
                s
            }
            Err(e) => {
                let _ = ready_tx.send(Err(e));
                return;
            }
        };
        let start = Instant::now();
        while !flag.load(Ordering::Relaxed) && start.elapsed() < MAX_LIFETIME {
            match serve(&socket) {
                Ok(true) => {}
                Ok(false) => std::thread::sleep(POLL),
                Err(_) => std::thread::sleep(POLL),
            }
        }
    });
    ready_rx.recv().map_err(|_| io::Error::other("server thread died"))??;
    Ok(IdentityServer { stop, handle: Some(handle) })
}

/// A TCP server in `netns_path` on `addr` answering `identity` to every connection.
pub fn tcp_identity(netns_path: &str, addr: SocketAddr, identity: &str) -> io::Result<IdentityServer> {
    let identity = identity.as_bytes().to_vec();
    spawn_in_netns(
        netns_path,
        move || {
            let l = TcpListener::bind(addr)?;
            l.set_nonblocking(true)?;
            Ok(l)
        },
        move |l: &TcpListener| match l.accept() {
            Ok((mut s, _)) => {
                let _ = s.set_nonblocking(false);
                let _ = s.write_all(&identity);
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        },
    )
}

/// An HTTP/1.1 server in `netns_path` on `addr`: every request is answered
/// 200 with a body of `identity`, a newline and the request's head as
/// received (request line and headers), so a test sees both which backend
/// served it and what the proxy forwarded. One connection at a time,
/// `Connection: close`.
pub fn http_identity(netns_path: &str, addr: SocketAddr, identity: &str) -> io::Result<IdentityServer> {
    let identity = identity.to_string();
    spawn_in_netns(
        netns_path,
        move || {
            let l = TcpListener::bind(addr)?;
            l.set_nonblocking(true)?;
            Ok(l)
        },
        move |l: &TcpListener| match l.accept() {
            Ok((s, _)) => {
                let _ = answer_http(s, &identity);
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        },
    )
}

fn answer_http(mut s: TcpStream, identity: &str) -> io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let body = format!("{identity}\n{}", String::from_utf8_lossy(&head));
    let reply = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(reply.as_bytes())
}

/// A UDP server in `netns_path` on `addr` answering `identity` to every datagram.
pub fn udp_identity(netns_path: &str, addr: SocketAddr, identity: &str) -> io::Result<IdentityServer> {
    let identity = identity.as_bytes().to_vec();
    spawn_in_netns(
        netns_path,
        move || {
            let s = UdpSocket::bind(addr)?;
            s.set_read_timeout(Some(Duration::from_millis(50)))?;
            Ok(s)
        },
        move |s: &UdpSocket| {
            let mut buf = [0u8; 1500];
            match s.recv_from(&mut buf) {
                Ok((_, peer)) => s.send_to(&identity, peer).map(|_| true),
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => Ok(false),
                Err(e) => Err(e),
            }
        },
    )
}

/// Opens `count` TCP connections to `target` from `netns_path`, returning
/// each answer (or the error as text), in order.
pub fn tcp_ask(netns_path: &str, target: SocketAddr, count: usize) -> io::Result<Vec<Result<String, String>>> {
    let path = netns_path.to_string();
    std::thread::spawn(move || -> io::Result<Vec<Result<String, String>>> {
        enter_netns(&path)?;
        let start = Instant::now();
        Ok((0..count)
            .map(|_| {
                if start.elapsed() > CLIENT_DEADLINE {
                    return Err("client deadline passed".into());
                }
                let mut s = TcpStream::connect_timeout(&target, Duration::from_secs(3)).map_err(|e| e.to_string())?;
                s.set_read_timeout(Some(Duration::from_secs(3))).map_err(|e| e.to_string())?;
                let mut answer = String::new();
                s.read_to_string(&mut answer).map_err(|e| e.to_string())?;
                Ok(answer)
            })
            .collect())
    })
    .join()
    .map_err(|_| io::Error::other("client thread panicked"))?
}

/// Sends one datagram from each of `count` fresh sockets to `target` and
/// returns each answer (or the error as text).
pub fn udp_ask(netns_path: &str, target: SocketAddr, count: usize) -> io::Result<Vec<Result<String, String>>> {
    let path = netns_path.to_string();
    std::thread::spawn(move || -> io::Result<Vec<Result<String, String>>> {
        enter_netns(&path)?;
        let any: SocketAddr =
            if target.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().map_err(io::Error::other)?;
        let start = Instant::now();
        Ok((0..count)
            .map(|_| {
                if start.elapsed() > CLIENT_DEADLINE {
                    return Err("client deadline passed".into());
                }
                let s = UdpSocket::bind(any).map_err(|e| e.to_string())?;
                s.set_read_timeout(Some(Duration::from_secs(2))).map_err(|e| e.to_string())?;
                s.send_to(b"who", target).map_err(|e| e.to_string())?;
                let mut buf = [0u8; 256];
                let (n, _) = s.recv_from(&mut buf).map_err(|e| e.to_string())?;
                Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
            })
            .collect())
    })
    .join()
    .map_err(|_| io::Error::other("client thread panicked"))?
}

/// One datagram from a connected socket in `netns_path` to `target`: the
/// answer, or the error as text. A connected socket hears ICMP errors, so
/// a port unreachable shows as "Connection refused".
pub fn udp_ask_connected(netns_path: &str, target: SocketAddr) -> io::Result<Result<String, String>> {
    let path = netns_path.to_string();
    std::thread::spawn(move || -> io::Result<Result<String, String>> {
        enter_netns(&path)?;
        let any: SocketAddr =
            if target.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().map_err(io::Error::other)?;
        let s = UdpSocket::bind(any)?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.connect(target)?;
        let ask = || -> Result<String, String> {
            s.send(b"who").map_err(|e| e.to_string())?;
            let mut buf = [0u8; 256];
            let n = s.recv(&mut buf).map_err(|e| e.to_string())?;
            Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
        };
        Ok(ask())
    })
    .join()
    .map_err(|_| io::Error::other("client thread panicked"))?
}

/// `count` UDP sockets bound inside `netns_path`. A socket keeps its
/// namespace, so the caller can use them from any thread: each is one flow.
pub fn udp_flows(netns_path: &str, count: usize) -> io::Result<Vec<UdpSocket>> {
    let path = netns_path.to_string();
    std::thread::spawn(move || -> io::Result<Vec<UdpSocket>> {
        enter_netns(&path)?;
        (0..count)
            .map(|_| {
                let s = UdpSocket::bind("0.0.0.0:0")?;
                s.set_read_timeout(Some(Duration::from_secs(2)))?;
                Ok(s)
            })
            .collect()
    })
    .join()
    .map_err(|_| io::Error::other("socket thread panicked"))?
}

/// One request on an existing flow: the identity that answered.
pub fn udp_query(socket: &UdpSocket, target: SocketAddr) -> Result<String, String> {
    socket.send_to(b"who", target).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 256];
    let (n, _) = socket.recv_from(&mut buf).map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

//! The HTTP/1.1 fast path: a keep-alive connection's bodiless GET and
//! HEAD requests forwarded without pingora.
//!
//! Measured in `cargo xtask bench http`, pingora spent about 19 µs of
//! user CPU per keep-alive request where NGINX spends 5 (the kernel's
//! share was the same): a task spawned per backend release, the `http`
//! crate's header maps, a context per request, allocations at every
//! phase. The common request needs none of that: it is read into a
//! buffer the connection reuses, checked (`hostgate_http::h1`: simple or
//! not), routed by the same table, sent to a backend connection from this
//! worker's pool with the same forwarding headers, and the response head
//! is rewritten into the client's buffer: two reads and two writes.
//!
//! Anything else goes to pingora, from the first request that is not
//! simple on, with the bytes already read: bodies, upgrades, `Expect`,
//! HTTP/1.0, caching, redirecting, PROXY-protocol and TLS-to-backend vhosts,
//! unknown hosts and paths, ACME challenges, heads over 16 KiB or that
//! `httparse` refuses (pingora answers those with its 400). The request
//! head deadline, rate limits, counters, access log lines, HSTS, retries on another
//! backend after a failed connect, and the drain are the same on both
//! paths.

use std::{
    collections::HashMap,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use hostgate_http::{
    h1::{self, BodyLength, ChunkedEnd, Parsed, ResponseHead, SimpleRequest},
    ratelimit::Verdict,
    Pool, RoutingTable, Vhost,
};
use pingora::{protocols::Stream, proxy::HttpProxy, server::ShutdownWatch};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf},
    net::TcpStream,
    time::Instant,
};

use super::{
    head_deadline,
    proxy::{self, Proxy},
    serve::Front,
    Outcome, Shared,
};

/// A head longer than this goes to pingora (which allows more).
const MAX_HEAD: usize = 16 * 1024;
/// Between two requests of a client (pingora's default).
const KEEPALIVE: Duration = Duration::from_secs(60);
/// An idle backend connection older than this is not reused (NGINX
/// closes its idle keep-alive connections after 75 s).
const UPSTREAM_IDLE: Duration = Duration::from_secs(30);
/// Idle connections kept per backend and worker (NGINX's `keepalive`).
const UPSTREAM_KEPT: usize = 128;

/// One worker's idle backend connections. Only that worker's connections
/// use it (the mutex is never contended); the sockets are registered with
/// its reactor.
#[derive(Default)]
pub struct Upstreams {
    idle: Mutex<HashMap<SocketAddr, Vec<(TcpStream, Instant)>>>,
}

impl Upstreams {
    /// The most recently kept connection to `addr` not older than
    /// `UPSTREAM_IDLE` at `now` (the request's start: one clock read).
    fn take(&self, addr: SocketAddr, now: Instant) -> Option<TcpStream> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let kept = idle.get_mut(&addr)?;
        while let Some((stream, since)) = kept.pop() {
            if now.saturating_duration_since(since) < UPSTREAM_IDLE {
                return Some(stream);
            }
        }
        None
    }

    fn put(&self, addr: SocketAddr, stream: TcpStream, now: Instant) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let kept = idle.entry(addr).or_default();
        if kept.len() >= UPSTREAM_KEPT {
            kept.remove(0);
        }
        kept.push((stream, now));
    }
}

/// What one connection's loop needs.
pub struct Conn<'a> {
    pub app: &'a Arc<HttpProxy<Proxy>>,
    pub shared: &'a Shared,
    pub upstreams: &'a Upstreams,
    pub front: Arc<Front>,
    pub shutdown: &'a ShutdownWatch,
    /// The drain had begun when the connection came.
    pub draining_at_start: bool,
    pub worker: usize,
    pub peer: SocketAddr,
    pub tls: bool,
    pub header_timeout: Duration,
}

impl Conn<'_> {
    /// Whether the proxy drains: each connection closes after its current
    /// request. Read without a lock (the watch only ever goes to true).
    fn draining(&self) -> bool {
        self.draining_at_start || self.shutdown.has_changed().unwrap_or(true)
    }

    fn scheme(&self) -> &'static str {
        if self.tls {
            "https"
        } else {
            "http"
        }
    }
}

/// What reading a request head came to.
enum Head {
    Simple(SimpleRequest),
    /// For pingora, whose head deadline is this one.
    Pingora(Option<Instant>),
    Closed,
    TimedOut,
}

/// Serves an HTTP/1.1 connection: simple requests here, the rest of the
/// connection by pingora from the first that is not.
pub async fn serve_h1(mut stream: Stream, c: Conn<'_>) {
    let mut buf = Vec::with_capacity(4096);
    let mut upstream_buf = Vec::with_capacity(4096);
    let mut out = Vec::with_capacity(1024);
    let mut forwarding = Forwarding::default();
    let mut table = TableCache::default();
    let mut close_idle = c.front.idle_close[c.worker].subscribe();
    let mut deadline = Some(Instant::now() + c.header_timeout);
    loop {
        let req = match read_head(&mut stream, &mut buf, deadline, &c, &mut close_idle).await {
            Head::Simple(req) => req,
            Head::Pingora(deadline) => return pingora(stream, buf, deadline, c).await,
            Head::Closed => return,
            Head::TimedOut => {
                c.front.count_header_timeout();
                let _ = stream.write_all(head_deadline::REQUEST_TIMEOUT).await;
                let _ = stream.flush().await;
                return;
            }
        };
        let bufs =
            Buffers { upstream: &mut upstream_buf, out: &mut out, forwarding: &mut forwarding, table: &mut table };
        match serve_request(&mut stream, &buf, &req, bufs, &c).await {
            Step::Next => {}
            Step::Pingora => return pingora(stream, buf, None, c).await,
            Step::Close => {
                let _ = AsyncWriteExt::shutdown(&mut stream).await;
                return;
            }
        }
        buf.drain(..req.head_len);
        deadline = None;
    }
}

/// What the connection does after a request.
enum Step {
    Next,
    Close,
    /// pingora takes the request (still in the buffer) and the connection.
    Pingora,
}

/// The forwarding header lines of the connection's last host.
#[derive(Default)]
struct Forwarding {
    host: Vec<u8>,
    lines: Vec<u8>,
    /// The last backend's address as counters and logs name it.
    backend: Option<(SocketAddr, String)>,
}

impl Forwarding {
    fn for_host(&mut self, host: &[u8], c: &Conn<'_>) -> &[u8] {
        if self.lines.is_empty() || self.host != host {
            self.host.clear();
            self.host.extend_from_slice(host);
            self.lines.clear();
            h1::write_forwarding(c.peer.ip(), c.scheme(), host, &mut self.lines);
        }
        &self.lines
    }

    fn backend_name(&mut self, addr: Option<SocketAddr>) -> &str {
        let Some(addr) = addr else { return "-" };
        if self.backend.as_ref().is_none_or(|(a, _)| *a != addr) {
            self.backend = Some((addr, addr.to_string()));
        }
        self.backend.as_ref().map_or("-", |(_, name)| name.as_str())
    }
}

/// The routing table a connection uses until a swap.
#[derive(Default)]
struct TableCache {
    version: u64,
    table: Option<Arc<RoutingTable>>,
}

impl TableCache {
    /// Borrowed, not cloned: an `Arc` clone per request would be a write
    /// to the count every worker shares.
    fn get(&mut self, shared: &Shared) -> &RoutingTable {
        let version = shared.table_version();
        if self.version != version {
            self.table = None;
        }
        self.version = version;
        self.table.get_or_insert_with(|| shared.table())
    }
}

/// What a connection reuses from request to request.
struct Buffers<'a> {
    upstream: &'a mut Vec<u8>,
    out: &'a mut Vec<u8>,
    forwarding: &'a mut Forwarding,
    table: &'a mut TableCache,
}

/// Routes a simple request and forwards it (or answers 429).
async fn serve_request(stream: &mut Stream, buf: &[u8], req: &SimpleRequest, bufs: Buffers<'_>, c: &Conn<'_>) -> Step {
    let Buffers { upstream: upstream_buf, out, forwarding, table } = bufs;
    let start = std::time::Instant::now();
    let table = table.get(c.shared);
    let Some(vhost) = table.vhost(req.host(buf)).filter(|v| fast_vhost(&v.vhost, c.tls)) else {
        return Step::Pingora;
    };
    let path = req.path(buf);
    let challenge = !c.tls && std::str::from_utf8(path).ok().and_then(hostgate_http::acme::challenge_token).is_some();
    let Some((_, pool)) = vhost.route(path).filter(|_| !challenge) else {
        return Step::Pingora;
    };
    let v = &vhost.vhost;
    let close = req.close || c.draining();
    let limited =
        v.rate_limit.is_some_and(|limit| c.shared.rate_check(&v.host, limit, c.peer.ip()) == Verdict::Limited);
    let done = if limited {
        let answer = Answer { status: 429, title: "429 Too Many Requests", extra: "retry-after: 1\r\n" };
        let detail = "Slow down: this site limits requests per client.";
        answer.send(stream, out, detail, &v.error_pages, (req.head_only, close), None).await
    } else {
        let hsts = v.hsts_max_age.filter(|_| c.tls);
        let now = Instant::from_std(start);
        let mut exchange = Exchange { buf, req, close, hsts, now, vhost: v, upstream_buf, out };
        exchange.run(stream, pool, forwarding.for_host(req.host(buf), c), c).await
    };
    record(c, v, buf, req, &done, forwarding.backend_name(done.backend), start);
    if close || !done.client_ok {
        return Step::Close;
    }
    // A large body grew the buffer: an idle connection does not keep it.
    if upstream_buf.capacity() > 64 * 1024 {
        *upstream_buf = Vec::with_capacity(4096);
    }
    Step::Next
}

/// Vhosts whose requests all take the fast path (when simple); the others'
/// features live in the pingora path.
fn fast_vhost(v: &Vhost, tls: bool) -> bool {
    !v.cache && !v.proxy_protocol && v.backend_tls.is_none() && (tls || !v.https_redirect)
}

/// Reads until `buf` starts with a complete head (or it is clear pingora
/// must read it). `deadline`: the head's, if it started (the first head's
/// starts at the accept); else it starts with the first byte.
async fn read_head(
    stream: &mut Stream,
    buf: &mut Vec<u8>,
    mut deadline: Option<Instant>,
    c: &Conn<'_>,
    close_idle: &mut tokio::sync::watch::Receiver<bool>,
) -> Head {
    loop {
        if !buf.is_empty() {
            match h1::parse_request(buf) {
                Parsed::Simple(req) => return Head::Simple(req),
                Parsed::Partial if buf.len() < MAX_HEAD => {}
                Parsed::Partial | Parsed::Other => return Head::Pingora(deadline),
            }
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4096);
        }
        let read = match deadline {
            // Idle between requests: closed after the keep-alive time, or
            // when a drain closes idle connections.
            None if buf.is_empty() => tokio::select! {
                biased;
                r = stream.read_buf(buf) => r,
                _ = close_idle.wait_for(|close| *close) => return Head::Closed,
                () = tokio::time::sleep(KEEPALIVE) => return Head::Closed,
            },
            _ => {
                let until = *deadline.get_or_insert_with(|| Instant::now() + c.header_timeout);
                tokio::select! {
                    biased;
                    r = stream.read_buf(buf) => r,
                    () = tokio::time::sleep_until(until) => return Head::TimedOut,
                }
            }
        };
        if !matches!(read, Ok(n) if n > 0) {
            return Head::Closed;
        }
    }
}

/// pingora serves the rest of the connection, starting with the bytes
/// already read.
async fn pingora(stream: Stream, read: Vec<u8>, deadline: Option<Instant>, c: Conn<'_>) {
    c.front.count_pingora_handover();
    let deadline = deadline.unwrap_or_else(|| Instant::now() + c.header_timeout);
    let stream = Prefixed { prefix: read, at: 0, inner: stream };
    head_deadline::serve_h1(c.app, Box::new(stream), deadline, c.header_timeout, c.front, c.shutdown).await;
}

/// How a forwarded request ended.
struct Done {
    status: u16,
    backend: Option<SocketAddr>,
    bytes_out: u64,
    error: Option<&'static str>,
    /// The client connection may carry another request.
    client_ok: bool,
}

/// Why a backend exchange failed.
enum Failure {
    /// No connection (`true`: none within the vhost's connect timeout).
    Connect {
        timed_out: bool,
    },
    /// A reused connection closed before answering: try a new one.
    Stale,
    Timeout,
    Bad(&'static str),
}

/// Backends tried per request (after a failed connect, another one).
const MAX_TRIES: u8 = 2;

/// One request's trip to a backend and back.
struct Exchange<'a> {
    buf: &'a [u8],
    req: &'a SimpleRequest,
    close: bool,
    hsts: Option<u32>,
    /// When the request started (the backend pool's clock).
    now: Instant,
    /// Its error pages and backend timeouts.
    vhost: &'a Vhost,
    upstream_buf: &'a mut Vec<u8>,
    out: &'a mut Vec<u8>,
}

impl Exchange<'_> {
    async fn run(&mut self, client: &mut Stream, pool: &Pool, forwarding: &[u8], c: &Conn<'_>) -> Done {
        self.out.clear();
        h1::write_upstream_head(self.buf, self.req, forwarding, self.out);
        let (mut exclude, mut connect_timed_out) = (None, false);
        for _ in 0..MAX_TRIES {
            let Some(backend) = pool.pick(c.peer.ip(), exclude).or_else(|| pool.pick(c.peer.ip(), None)) else {
                break;
            };
            let addr = backend.addr;
            match self.ask_backend(addr, c.upstreams).await {
                Ok((upstream, head)) => return self.respond(client, upstream, addr, head, c).await,
                Err(Failure::Connect { timed_out }) => {
                    connect_timed_out = timed_out;
                    c.shared.connect_failed(&self.vhost.host, addr);
                    exclude = Some(addr);
                }
                Err(Failure::Timeout) => return self.error_page(client, Some(addr), 504, "upstream timed out").await,
                Err(Failure::Stale) => return self.error_page(client, Some(addr), 502, "upstream closed").await,
                Err(Failure::Bad(why)) => return self.error_page(client, Some(addr), 502, why).await,
            }
        }
        // As NGINX: the last backend tried timed out connecting: 504.
        if connect_timed_out {
            self.error_page(client, exclude, 504, "upstream timed out connecting").await
        } else {
            self.error_page(client, exclude, 502, "no backend answered").await
        }
    }

    /// Sends the request head on a reused connection (a new one if that
    /// one turns out closed) and reads the response head into `upstream_buf`.
    async fn ask_backend(
        &mut self,
        addr: SocketAddr,
        upstreams: &Upstreams,
    ) -> Result<(TcpStream, ResponseHead), Failure> {
        if let Some(mut reused) = upstreams.take(addr, self.now) {
            match self.request(&mut reused, true).await {
                Err(Failure::Stale) => {}
                result => return result.map(|head| (reused, head)),
            }
        }
        let mut fresh = match tokio::time::timeout(self.vhost.connect_timeout(), TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(_)) => return Err(Failure::Connect { timed_out: false }),
            Err(_) => return Err(Failure::Connect { timed_out: true }),
        };
        let _ = fresh.set_nodelay(true);
        match self.request(&mut fresh, false).await {
            Err(Failure::Stale) => Err(Failure::Bad("upstream closed before answering")),
            result => result.map(|head| (fresh, head)),
        }
    }

    async fn request(&mut self, upstream: &mut TcpStream, reused: bool) -> Result<ResponseHead, Failure> {
        let broken = |reused| if reused { Failure::Stale } else { Failure::Bad("upstream connection failed") };
        upstream.write_all(self.out).await.map_err(|_| broken(reused))?;
        self.upstream_buf.clear();
        loop {
            if self.upstream_buf.capacity() - self.upstream_buf.len() < 1024 {
                self.upstream_buf.reserve(4096);
            }
            let read = tokio::time::timeout(self.vhost.read_timeout(), upstream.read_buf(self.upstream_buf)).await;
            match read {
                Err(_) => return Err(Failure::Timeout),
                Ok(Ok(0)) | Ok(Err(_)) if self.upstream_buf.is_empty() => return Err(broken(reused)),
                Ok(Ok(0)) | Ok(Err(_)) => return Err(Failure::Bad("upstream closed mid-head")),
                Ok(Ok(_)) => {}
            }
            match h1::parse_response(self.upstream_buf, self.req.head_only) {
                // Informational responses (103 Early Hints) are not
                // forwarded, as NGINX does not.
                Ok(Some(head)) if (100..200).contains(&head.status) => {
                    self.upstream_buf.drain(..head.head_len);
                }
                Ok(Some(head)) => return Ok(head),
                Ok(None) if self.upstream_buf.len() < MAX_HEAD => {}
                Ok(None) => return Err(Failure::Bad("upstream sent too big a head")),
                Err(_) => return Err(Failure::Bad("upstream sent an invalid head")),
            }
        }
    }

    /// Forwards the response head and body; the backend connection goes
    /// back to the pool when the body ended where the backend said.
    async fn respond(
        &mut self,
        client: &mut Stream,
        mut upstream: TcpStream,
        addr: SocketAddr,
        head: ResponseHead,
        c: &Conn<'_>,
    ) -> Done {
        let close = self.close || head.body == BodyLength::UntilClose;
        self.out.clear();
        h1::write_client_head(&self.upstream_buf[..head.head_len], self.hsts, close, self.out);
        let mut done = Done { status: head.status, backend: Some(addr), bytes_out: 0, error: None, client_ok: !close };
        if client.write_all(self.out).await.is_err() {
            done.client_ok = false;
            return done;
        }
        self.upstream_buf.drain(..head.head_len);
        match self.body(client, &mut upstream, head.body, &mut done).await {
            Ok(()) if head.reusable && self.upstream_buf.is_empty() => c.upstreams.put(addr, upstream, self.now),
            Ok(()) => {}
            Err(why) => {
                done.error = Some(why);
                done.client_ok = false;
            }
        }
        if client.flush().await.is_err() {
            done.client_ok = false;
        }
        done
    }

    /// Copies the body (what `upstream_buf` holds first); on success,
    /// `upstream_buf` keeps only bytes past the body.
    async fn body(
        &mut self,
        client: &mut Stream,
        upstream: &mut TcpStream,
        length: BodyLength,
        done: &mut Done,
    ) -> Result<(), &'static str> {
        let mut left = match length {
            BodyLength::None => return Ok(()),
            BodyLength::Length(n) => n,
            BodyLength::Chunked | BodyLength::UntilClose => u64::MAX,
        };
        let mut chunks = (length == BodyLength::Chunked).then(ChunkedEnd::default);
        loop {
            let have = self.upstream_buf.len();
            let mut take = have.min(usize::try_from(left).unwrap_or(usize::MAX));
            if let Some(chunks) = chunks.as_mut() {
                if let Some(end) = chunks.feed(&self.upstream_buf[..take]).map_err(|_| "upstream sent a bad chunk")? {
                    take = end;
                    left = take as u64;
                }
            }
            client.write_all(&self.upstream_buf[..take]).await.map_err(|_| "client went away")?;
            done.bytes_out += take as u64;
            left -= take as u64;
            self.upstream_buf.drain(..take);
            if left == 0 {
                return Ok(());
            }
            if self.upstream_buf.capacity() < 16 * 1024 {
                self.upstream_buf.reserve(16 * 1024);
            }
            match tokio::time::timeout(self.vhost.read_timeout(), upstream.read_buf(self.upstream_buf)).await {
                Err(_) => return Err("upstream timed out"),
                Ok(Ok(0)) if length == BodyLength::UntilClose => return Ok(()),
                Ok(Ok(0)) | Ok(Err(_)) => return Err("upstream closed mid-body"),
                Ok(Ok(_)) => {}
            }
        }
    }

    /// The proxy's own answer when no backend answered.
    async fn error_page(
        &mut self,
        client: &mut Stream,
        backend: Option<SocketAddr>,
        status: u16,
        why: &'static str,
    ) -> Done {
        let title = if status == 504 { "504 Gateway Timeout" } else { "502 Bad Gateway" };
        let answer = Answer { status, title, extra: "" };
        let how = (self.req.head_only, self.close);
        let pages = &self.vhost.error_pages;
        let mut done = answer.send(client, self.out, proxy::failure_detail(status), pages, how, backend).await;
        done.error = Some(why);
        done
    }
}

/// An answer of the proxy's own (an HTML page, as the pingora path's).
struct Answer {
    status: u16,
    title: &'static str,
    /// Header lines to add, each ending in CRLF.
    extra: &'static str,
}

impl Answer {
    /// Writes the answer: the vhost's own page for this status if it has
    /// one, else the proxy's. `how`: (HEAD, close after).
    async fn send(
        &self,
        client: &mut Stream,
        out: &mut Vec<u8>,
        detail: &str,
        pages: &proxy::Pages,
        how: (bool, bool),
        backend: Option<SocketAddr>,
    ) -> Done {
        let (head_only, close) = how;
        let body = proxy::answer_body(Some(pages), self.status, self.title, detail);
        out.clear();
        let connection = if close { "connection: close\r\n" } else { "" };
        let (title, extra, length) = (self.title, self.extra, body.len());
        out.extend_from_slice(
            format!(
                "HTTP/1.1 {title}\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {length}\r\n{extra}{connection}\r\n"
            )
            .as_bytes(),
        );
        if !head_only {
            out.extend_from_slice(&body);
        }
        let client_ok = client.write_all(out).await.is_ok() && client.flush().await.is_ok();
        let bytes_out = if head_only { 0 } else { length as u64 };
        Done { status: self.status, backend, bytes_out, error: None, client_ok: client_ok && !close }
    }
}

/// Counters and the customer's access log line, as the pingora path's
/// `logging` phase writes them.
fn record(
    c: &Conn<'_>,
    v: &Vhost,
    buf: &[u8],
    req: &SimpleRequest,
    done: &Done,
    backend: &str,
    start: std::time::Instant,
) {
    let outcome = Outcome {
        status: done.status,
        error: done.error.is_some(),
        bytes_in: 0,
        bytes_out: done.bytes_out,
        latency_us: start.elapsed().as_micros() as u64,
        upgraded: false,
    };
    c.shared.record(&v.host, backend, &outcome);
    c.front.count_fast_request(c.worker);
    let text = |b: Option<&[u8]>| b.map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
    c.shared.log(&v.customer, v.access_log, || hostgate_http::accesslog::Entry {
        unix_ms: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
        client: Some(c.peer.ip()),
        method: if req.head_only { "HEAD" } else { "GET" }.to_string(),
        uri: text(Some(req.target(buf))),
        protocol: "HTTP/1.1".to_string(),
        host: text(Some(req.host(buf))),
        vhost: v.host.clone(),
        backend: backend.to_string(),
        status: done.status,
        bytes_sent: done.bytes_out,
        bytes_received: 0,
        duration_us: outcome.latency_us,
        referer: text(req.header(buf, "referer")),
        user_agent: text(req.header(buf, "user-agent")),
        tls: c.tls,
        error: done.error.unwrap_or_default().to_string(),
    });
}

/// A stream whose first bytes were already read: they are read again.
struct Prefixed {
    prefix: Vec<u8>,
    at: usize,
    inner: Stream,
}

impl std::fmt::Debug for Prefixed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prefixed").field("left", &(self.prefix.len() - self.at)).finish_non_exhaustive()
    }
}

impl Prefixed {
    fn inner(&self) -> &Stream {
        &self.inner
    }

    fn inner_mut(&mut self) -> &mut Stream {
        &mut self.inner
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.at < this.prefix.len() {
            let n = buf.remaining().min(this.prefix.len() - this.at);
            buf.put_slice(&this.prefix[this.at..this.at + n]);
            this.at += n;
            if this.at == this.prefix.len() {
                this.prefix = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

super::buffered::forward_stream_traits!([] Prefixed);
super::buffered::pass_writes_through!(Prefixed);

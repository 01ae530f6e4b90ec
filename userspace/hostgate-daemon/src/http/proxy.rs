//! The `ProxyHttp` implementation: per request, the vhost and route from
//! the routing table in force, the vhost's rate limit, a backend from the
//! route's pool, the forwarding headers from the real peer (and the PROXY
//! protocol header to backends that want it); at the end, counters and
//! the customer's access log line.

use std::{
    hash::{Hash, Hasher},
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use bytes::Bytes;
use hostgate_http::{accesslog::Entry, headers, ratelimit::Verdict, LogFormat, RoutingTable};
use pingora::{
    connectors::L4Connect,
    http::{RequestHeader, ResponseHeader},
    protocols::{http::ServerSession, l4::stream::Stream},
    proxy::{FailToProxy, ProxyHttp, Session},
    upstreams::peer::HttpPeer,
    Error, ErrorSource, ErrorType, Result,
};
use tokio::io::AsyncWriteExt;

use pingora_cache::{CacheKey, CacheMeta, RespCacheable};

use super::{cache, Outcome, Shared};

/// Attempts per request: the first backend and one other for idempotent
/// requests whose connection failed.
const MAX_TRIES: u8 = 2;

pub struct Proxy {
    shared: Arc<Shared>,
    /// Serves the TLS listeners: the scheme is https, HSTS is sent, and
    /// `--https-redirect` has nothing left to redirect. One app per scheme,
    /// so no request has to ask its connection.
    tls: bool,
}

impl Proxy {
    pub fn new(shared: Arc<Shared>, tls: bool) -> Proxy {
        Proxy { shared, tls }
    }

    fn default_port(&self) -> u16 {
        if self.tls {
            443
        } else {
            80
        }
    }

    fn scheme(&self) -> &'static str {
        if self.tls {
            "https"
        } else {
            "http"
        }
    }
}

/// A vhost's own error pages, by status.
pub(super) type Pages = std::collections::BTreeMap<u16, String>;

/// The body of an answer the proxy gives itself: the vhost's page for
/// `code` if it has one, else the proxy's (both paths).
pub(super) fn answer_body(pages: Option<&Pages>, code: u16, title: &str, detail: &str) -> Bytes {
    match pages.and_then(|p| p.get(&code)) {
        Some(own) => Bytes::copy_from_slice(own.as_bytes()),
        None => page(title, detail),
    }
}

/// What the proxy's own page says when a backend failed the request with
/// `code` (502 or 504; both paths).
pub(super) fn failure_detail(code: u16) -> &'static str {
    match code {
        504 => "The site's server did not answer in time.",
        _ => "The site's server could not be reached or answered wrongly.",
    }
}

/// One request's state across pingora's phases.
pub struct Ctx {
    start: Instant,
    customer: Option<String>,
    log_format: Option<LogFormat>,
    proxy_protocol: bool,
    /// The table the request started with: a swap mid-request changes nothing for it.
    table: Option<Arc<RoutingTable>>,
    host: String,
    vhost: Option<String>,
    backend: Option<SocketAddr>,
    tries: u8,
    body_seen: u64,
    body_limit: Option<u64>,
    /// Strict-Transport-Security max-age to send (TLS only).
    hsts: Option<u32>,
    /// The vhost caches responses.
    cache: bool,
    /// The vhost, for its error pages when pingora fails the request.
    entry: Option<Arc<hostgate_http::table::CompiledVhost>>,
}

/// The request's host: `Host`, else the URI's authority (HTTP/2).
fn request_host(req: &RequestHeader) -> Vec<u8> {
    match req.headers.get("host") {
        Some(h) => h.as_bytes().to_vec(),
        None => req.uri.authority().map(|a| a.as_str().as_bytes().to_vec()).unwrap_or_default(),
    }
}

/// CL.TE and friends, judged on the HTTP/1 head as received (HTTP/2 has
/// its own framing).
fn ambiguous_framing(session: &Session) -> Option<&'static str> {
    match session.as_downstream() {
        ServerSession::H1(h1) => headers::framing_problem_raw(&h1.get_headers_raw_bytes()),
        _ => None,
    }
}

/// The proxy's own HTML page for an answer (see `answer_body`).
fn page(title: &str, detail: &str) -> Bytes {
    let esc = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    Bytes::from(format!(
        "<!doctype html><title>{t}</title><h1>{t}</h1><p>{d}</p><hr><p>hostgate</p>\n",
        t = esc(title),
        d = esc(detail)
    ))
}

/// The proxy's own answer: the vhost's page for `code` if it has one
/// (`pages`), else the proxy's page.
async fn answer(session: &mut Session, code: u16, pages: Option<&Pages>, title: &str, detail: &str) -> Result<bool> {
    let body = answer_body(pages, code, title, detail);
    let mut resp = ResponseHeader::build(code, Some(3))?;
    resp.insert_header("content-type", "text/html; charset=utf-8")?;
    resp.insert_header("content-length", body.len().to_string())?;
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await?;
    Ok(true)
}

async fn redirect_to_https(session: &mut Session, host: &str) -> Result<bool> {
    let target = session.req_header().uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let host = host.rsplit_once(':').filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit())).map_or(host, |(h, _)| h);
    let mut resp = ResponseHeader::build(308, Some(2))?;
    resp.insert_header("location", format!("https://{host}{target}"))?;
    resp.insert_header("content-length", "0")?;
    session.write_response_header(Box::new(resp), true).await?;
    Ok(true)
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            start: Instant::now(),
            customer: None,
            log_format: None,
            proxy_protocol: false,
            table: None,
            host: String::new(),
            vhost: None,
            backend: None,
            tries: 0,
            body_seen: 0,
            body_limit: None,
            hsts: None,
            cache: false,
            entry: None,
        }
    }

    /// Unknown hosts, redirects and oversized bodies are answered here,
    /// before any backend is chosen.
    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        if let Some(problem) = ambiguous_framing(session) {
            session.set_keepalive(None);
            return answer(session, 400, None, "400 Bad Request", &format!("Refused: {problem}.")).await;
        }
        // HTTP-01 (RFC 8555 8.3): the CA asks for the token's key
        // authorization on port 80, before any routing (a vhost with
        // https_redirect answers it too). A token the issuer did not store
        // goes on to the vhost, so a customer's own ACME client still works.
        if !self.tls {
            let token = hostgate_http::acme::challenge_token(session.req_header().uri.path());
            if let Some(key_auth) = token.and_then(|t| self.shared.challenge(t)) {
                let mut resp = ResponseHeader::build(200, Some(2))?;
                resp.insert_header("content-type", "application/octet-stream")?;
                resp.insert_header("content-length", key_auth.len().to_string())?;
                session.write_response_header(Box::new(resp), false).await?;
                session.write_response_body(Some(Bytes::from(key_auth)), true).await?;
                return Ok(true);
            }
        }
        let table = self.shared.table();
        let host_bytes = request_host(session.req_header());
        ctx.host = String::from_utf8_lossy(&host_bytes).into_owned();
        let path = session.req_header().uri.path().as_bytes().to_vec();
        let Some(vhost) = table.vhost(&host_bytes) else {
            let detail = format!("No site named {:?} is served here.", ctx.host);
            return answer(session, 404, None, "404 Not Found", &detail).await;
        };
        let v = &vhost.vhost;
        ctx.entry = Some(vhost.clone());
        ctx.vhost = Some(v.host.clone());
        ctx.customer = Some(v.customer.clone());
        ctx.log_format = v.access_log;
        ctx.proxy_protocol = v.proxy_protocol;
        if let (Some(limit), Some(client)) = (v.rate_limit, client_ip(session)) {
            if self.shared.rate_check(&v.host, limit, client) == Verdict::Limited {
                let mut resp = ResponseHeader::build(429, Some(3))?;
                resp.insert_header("retry-after", "1")?;
                let detail = "Slow down: this site limits requests per client.";
                let body = answer_body(Some(&v.error_pages), 429, "429 Too Many Requests", detail);
                resp.insert_header("content-type", "text/html; charset=utf-8")?;
                resp.insert_header("content-length", body.len().to_string())?;
                session.write_response_header(Box::new(resp), false).await?;
                session.write_response_body(Some(body), true).await?;
                return Ok(true);
            }
        }
        if vhost.route(&path).is_none() {
            return answer(
                session,
                404,
                Some(&v.error_pages),
                "404 Not Found",
                "No route of this site serves this path.",
            )
            .await;
        }
        if self.tls {
            ctx.hsts = v.hsts_max_age;
        } else if v.https_redirect {
            let host = ctx.host.clone();
            return redirect_to_https(session, &host).await;
        }
        ctx.body_limit = v.max_body_bytes;
        ctx.cache = v.cache;
        let declared =
            session.req_header().headers.get("content-length").and_then(|l| l.to_str().ok()?.parse::<u64>().ok());
        if let (Some(limit), Some(len)) = (ctx.body_limit, declared) {
            if len > limit {
                return answer(
                    session,
                    413,
                    Some(&v.error_pages),
                    "413 Content Too Large",
                    &format!("This site accepts bodies up to {limit} bytes."),
                )
                .await;
            }
        }
        // Expect: 100-continue is answered here, once the request passed
        // every check above (a refusal is the final answer instead), as
        // NGINX does; the backend gets the body without the expectation.
        let expect = session.req_header().headers.get("expect");
        if expect.is_some_and(|e| e.as_bytes().eq_ignore_ascii_case(b"100-continue")) {
            session.write_continue_response().await?;
        }
        ctx.table = Some(table);
        Ok(false)
    }

    /// Chunked bodies have no declared length: counted as they stream.
    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        // After a 101 the bytes are the upgraded protocol's (WebSocket
        // frames), not a request body: no limit applies.
        if session.was_upgraded() {
            return Ok(());
        }
        ctx.body_seen += body.as_ref().map_or(0, |b| b.len() as u64);
        match ctx.body_limit {
            Some(limit) if ctx.body_seen > limit => {
                Error::e_explain(ErrorType::HTTPStatus(413), "request body too large")
            }
            _ => Ok(()),
        }
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let table = ctx.table.clone().ok_or_else(|| Error::explain(ErrorType::InternalError, "no routing table"))?;
        let path = session.req_header().uri.path().as_bytes().to_vec();
        let selected = table
            .select(ctx.host.as_bytes(), &path)
            .ok_or_else(|| Error::explain(ErrorType::HTTPStatus(404), "route vanished"))?;
        let client = session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip());
        let client = client.unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
        // A retry goes to another backend than the one that failed.
        let exclude = ctx.backend.filter(|_| ctx.tries > 0);
        let Some(backend) = selected.pool.pick(client, exclude).or_else(|| selected.pool.pick(client, None)) else {
            return Error::e_explain(ErrorType::HTTPStatus(502), "no healthy backend");
        };
        ctx.tries += 1;
        ctx.backend = Some(backend.addr);
        let v = &selected.vhost.vhost;
        let mut peer = match &v.backend_tls {
            Some(tls) => {
                let mut peer = HttpPeer::new(backend.addr, true, tls.name.clone());
                peer.options.verify_cert = tls.verify;
                peer.options.verify_hostname = tls.verify;
                // pingora's pool key leaves the CA out: a connection
                // verified against one vhost's CA must not serve another's.
                if let Some(ca) = tls.ca_pem.as_deref().and_then(|pem| self.shared.backend_ca(pem)) {
                    peer.options.ca = Some(ca.certificates);
                    peer.group_key = ca.pool_key;
                }
                peer
            }
            None => HttpPeer::new(backend.addr, false, String::new()),
        };
        let (connect, read) = (v.connect_timeout(), v.read_timeout());
        peer.options.connection_timeout = Some(connect);
        peer.options.total_connection_timeout = Some(connect);
        peer.options.read_timeout = Some(read);
        if ctx.proxy_protocol {
            let client = session.client_addr().and_then(|a| a.as_inet()).copied();
            let server = session.server_addr().and_then(|a| a.as_inet()).copied();
            if let (Some(client), Some(server)) = (client, server) {
                // The header names one client connection, so a backend
                // connection carries only that client's requests: the
                // pool key includes the client's address and port.
                let mut h = std::collections::hash_map::DefaultHasher::new();
                (client, server, peer.group_key).hash(&mut h);
                peer.group_key = h.finish();
                let header = hostgate_http::proxy_protocol::v2_header(client, server);
                peer.options.custom_l4 = Some(Arc::new(ProxyV2 { header, connect_timeout: connect }));
            }
        }
        Ok(Box::new(peer))
    }

    /// Whatever the client claimed about its origin is dropped; the real
    /// peer is told.
    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        for name in headers::STRIPPED {
            upstream.remove_header(name);
        }
        // Answered by the proxy (request_filter).
        upstream.remove_header("expect");
        let Some(peer) = session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip()) else {
            return Ok(());
        };
        let host = Some(ctx.host.as_str()).filter(|h| !h.is_empty());
        for (name, value) in headers::forwarding(peer, self.scheme(), host) {
            upstream.insert_header(name, value)?;
        }
        Ok(())
    }

    /// HSTS only over TLS (RFC 6797 §7.2: a browser ignores it on plain
    /// HTTP, and sending it there would only mislead). A caching vhost
    /// says what the cache did (`x-cache-status`, as NGINX's
    /// `$upstream_cache_status`).
    async fn response_filter(&self, session: &mut Session, resp: &mut ResponseHeader, ctx: &mut Ctx) -> Result<()> {
        if let Some(age) = ctx.hsts {
            resp.insert_header("strict-transport-security", format!("max-age={age}"))?;
        }
        if ctx.cache {
            resp.insert_header("x-cache-status", session.cache.phase().as_str())?;
        }
        Ok(())
    }

    /// GET and HEAD of a caching vhost go through the cache.
    fn request_cache_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        if !ctx.cache || !pingora_cache::filters::request_cacheable(session.req_header()) {
            return Ok(());
        }
        let c = &self.shared.cache;
        session.cache.enable(c.storage, Some(c.eviction), None, Some(c.lock), None);
        session.cache.set_max_file_size_bytes(c.max_object_bytes);
        Ok(())
    }

    fn cache_key_callback(&self, session: &Session, ctx: &mut Ctx) -> Result<CacheKey> {
        let target = session.req_header().uri.path_and_query().map_or("/", |p| p.as_str());
        let vhost = ctx.vhost.as_deref().unwrap_or_default();
        Ok(cache::key(self.scheme(), &ctx.host, self.default_port(), target, vhost))
    }

    fn response_cache_filter(&self, session: &Session, resp: &ResponseHeader, _ctx: &mut Ctx) -> Result<RespCacheable> {
        Ok(cache::cacheable(resp, session.req_header().headers.contains_key("authorization")))
    }

    fn cache_vary_filter(
        &self,
        meta: &CacheMeta,
        _ctx: &mut Ctx,
        req: &RequestHeader,
    ) -> Option<pingora_cache::key::HashBinary> {
        cache::variance(meta, req)
    }

    /// A request pingora could not proxy: the status its default would
    /// give, answered with the vhost's page for it or the proxy's own
    /// (pingora's default has an empty body).
    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let timed_out =
            matches!(e.etype(), ErrorType::ReadTimedout | ErrorType::WriteTimedout | ErrorType::ConnectTimedout);
        let code = match e.etype() {
            ErrorType::HTTPStatus(code) => *code,
            // As NGINX (and the fast path): a backend too slow is 504.
            _ if timed_out && e.esource() == &ErrorSource::Upstream => 504,
            _ => match e.esource() {
                ErrorSource::Upstream => 502,
                ErrorSource::Downstream => match e.etype() {
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                    _ => 400,
                },
                ErrorSource::Internal | ErrorSource::Unset => 500,
            },
        };
        if code > 0 {
            let status = pingora::http::StatusCode::from_u16(code).ok();
            let reason = status.and_then(|s| s.canonical_reason()).unwrap_or("Error");
            let title = format!("{code} {reason}");
            let pages = ctx.entry.as_ref().map(|v| &v.vhost.error_pages);
            if let Err(e) = answer(session, code, pages, &title, failure_detail(code)).await {
                tracing::debug!(error = %e, "writing an error answer");
            }
        }
        FailToProxy { error_code: code, can_reuse_downstream: false }
    }

    /// A failed connection is retried once on another backend when the
    /// request is idempotent (nothing reached a backend yet otherwise, but
    /// a POST may have side effects we cannot see).
    fn fail_to_connect(&self, session: &mut Session, _peer: &HttpPeer, ctx: &mut Ctx, mut e: Box<Error>) -> Box<Error> {
        if session.req_header().method.is_idempotent() && ctx.tries < MAX_TRIES {
            e.set_retry(true);
        }
        if let (Some(vhost), Some(addr)) = (&ctx.vhost, ctx.backend) {
            self.shared.connect_failed(vhost, addr);
        }
        e
    }

    /// Every request ends here, answered by a backend or by the proxy:
    /// counters of its (vhost, backend), then its customer's log line.
    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let backend = ctx.backend.map_or("-".to_string(), |b| b.to_string());
        let vhost = ctx.vhost.as_deref().unwrap_or("-");
        let outcome = Outcome {
            status,
            error: e.is_some(),
            bytes_in: session.body_bytes_read() as u64,
            bytes_out: session.body_bytes_sent() as u64,
            latency_us: ctx.start.elapsed().as_micros() as u64,
            upgraded: status == 101,
        };
        self.shared.record(vhost, &backend, &outcome);
        let Some(customer) = &ctx.customer else { return };
        let req = session.req_header();
        let header = |n: &str| req.headers.get(n).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let unix_ms =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let entry = || Entry {
            unix_ms,
            client: client_ip(session),
            method: req.method.as_str().to_string(),
            uri: req.uri.path_and_query().map_or("/", |p| p.as_str()).to_string(),
            protocol: format!("{:?}", req.version),
            host: ctx.host.clone(),
            vhost: vhost.to_string(),
            backend: backend.clone(),
            status,
            bytes_sent: outcome.bytes_out,
            bytes_received: outcome.bytes_in,
            duration_us: outcome.latency_us,
            referer: header("referer").unwrap_or_default(),
            user_agent: header("user-agent").unwrap_or_default(),
            tls: self.tls,
            error: e.map(|e| e.etype().as_str().to_string()).unwrap_or_default(),
        };
        self.shared.log(customer, ctx.log_format, entry);
    }
}

fn client_ip(session: &Session) -> Option<std::net::IpAddr> {
    session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip())
}

/// Connects to a backend and sends the PROXY protocol v2 header first
/// (pingora 0.9 has no PROXY protocol of its own).
#[derive(Debug)]
struct ProxyV2 {
    header: Vec<u8>,
    connect_timeout: Duration,
}

#[async_trait]
impl L4Connect for ProxyV2 {
    async fn connect(&self, addr: &pingora::protocols::l4::socket::SocketAddr) -> Result<Stream> {
        let Some(addr) = addr.as_inet() else {
            return Error::e_explain(ErrorType::InternalError, "PROXY protocol needs a TCP backend");
        };
        let mut tcp = match tokio::time::timeout(self.connect_timeout, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Error::e_because(ErrorType::ConnectRefused, format!("connecting to {addr}"), e),
            Err(_) => return Error::e_explain(ErrorType::ConnectTimedout, format!("connecting to {addr}")),
        };
        if let Err(e) = tcp.write_all(&self.header).await {
            return Error::e_because(ErrorType::ConnectError, "sending the PROXY header", e);
        }
        Ok(Stream::from(tcp))
    }
}

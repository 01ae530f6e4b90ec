//! The HTTP/1.1 fast path's wire rules: which requests it may forward
//! itself, the head a backend gets, how the backend's response is framed,
//! the head the client gets, and where a chunked body ends.
//!
//! The fast path (the daemon's `http/fast.rs`) serves the common request
//! of a keep-alive connection, a bodiless GET or HEAD, in two reads and
//! two writes with buffers it reuses; anything else, from the request that
//! is not simple on, goes to pingora with the bytes already read. So the
//! rules here are strict on purpose: a request is simple only when nothing
//! about its framing or its headers needs judgement (no body, no upgrade,
//! no `Expect`, no hop-by-hop header but `Connection: keep-alive/close`,
//! one `Host`). Heads are validated by `httparse` (pingora's parser too)
//! before their lines are walked here.

use std::net::IpAddr;

use crate::headers;

/// Headers of a request the fast path takes; more goes to pingora.
pub const MAX_REQUEST_HEADERS: usize = 64;
/// Headers of a response the fast path reads; more is a bad response.
pub const MAX_RESPONSE_HEADERS: usize = 128;

/// What the head at the start of a buffer is, for the fast path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// Not complete yet.
    Partial,
    /// Complete or not, not for the fast path: pingora reads it.
    Other,
    /// A request the fast path forwards.
    Simple(SimpleRequest),
}

/// A bodiless GET or HEAD, by offsets into the buffer it was read into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimpleRequest {
    /// Bytes of the head, request line to empty line included.
    pub head_len: usize,
    pub head_only: bool,
    /// The client asked to close after this request.
    pub close: bool,
    /// The origin-form target (path and query).
    pub target: (usize, usize),
    pub host: (usize, usize),
}

impl SimpleRequest {
    pub fn target<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.target.0..self.target.1]
    }

    pub fn host<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.host.0..self.host.1]
    }

    /// The target without its query.
    pub fn path<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        let target = self.target(buf);
        target.split(|&b| b == b'?').next().unwrap_or(target)
    }

    /// The first value of request header `name` (lowercase), for the
    /// access log.
    pub fn header<'a>(&self, buf: &'a [u8], name: &str) -> Option<&'a [u8]> {
        header_lines(&buf[..self.head_len]).find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes())).map(|(_, v)| v)
    }
}

fn offsets(buf: &[u8], part: &[u8]) -> (usize, usize) {
    let start = part.as_ptr() as usize - buf.as_ptr() as usize;
    (start, start + part.len())
}

/// Classifies the request head at the start of `buf`.
pub fn parse_request(buf: &[u8]) -> Parsed {
    let mut storage = [httparse::EMPTY_HEADER; MAX_REQUEST_HEADERS];
    let mut req = httparse::Request::new(&mut storage);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Other,
    };
    let head_only = match req.method {
        Some("GET") => false,
        Some("HEAD") => true,
        _ => return Parsed::Other,
    };
    let Some(path) = req.path.filter(|p| p.starts_with('/')) else { return Parsed::Other };
    if req.version != Some(1) {
        return Parsed::Other;
    }
    let (mut host, mut close) = (None, false);
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"host") {
            if host.is_some() || h.value.is_empty() {
                return Parsed::Other;
            }
            host = Some(offsets(buf, h.value));
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if !token.eq_ignore_ascii_case(b"keep-alive") && !token.is_empty() {
                    return Parsed::Other;
                }
            }
        } else if UNSIMPLE.iter().any(|u| name.eq_ignore_ascii_case(u.as_bytes())) {
            return Parsed::Other;
        }
    }
    let Some(host) = host else { return Parsed::Other };
    Parsed::Simple(SimpleRequest { head_len, head_only, close, target: offsets(buf, path.as_bytes()), host })
}

/// Request headers that make a request not simple: a body, an upgrade, an
/// expectation, or hop-by-hop headers that need judgement.
const UNSIMPLE: [&str; 8] =
    ["content-length", "transfer-encoding", "upgrade", "expect", "te", "trailer", "keep-alive", "proxy-connection"];

/// (name, value) of every header line of a head that `httparse` accepted.
fn header_lines(head: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    head.split(|&b| b == b'\n').skip(1).filter_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let colon = line.iter().position(|&b| b == b':')?;
        Some((&line[..colon], line[colon + 1..].trim_ascii()))
    })
}

fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Appends the forwarding header lines for a request of `peer` to `host`
/// (`headers::forwarding`, as the pingora path sets them). A connection
/// keeps them while its requests name the same host: the peer and scheme
/// are the connection's.
pub fn write_forwarding(peer: IpAddr, proto: &str, host: &[u8], out: &mut Vec<u8>) {
    for (name, value) in headers::forwarding(peer, proto, std::str::from_utf8(host).ok()) {
        push_header(out, name.as_bytes(), value.as_bytes());
    }
}

/// Appends the head a backend gets for `req` (read into `buf`): the
/// request line, the client's headers but `Connection` and the forwarding
/// headers it claimed, then `forwarding` ([`write_forwarding`] for the
/// real peer and this request's host). The backend connection stays open
/// (HTTP/1.1's default) whatever the client asked.
pub fn write_upstream_head(buf: &[u8], req: &SimpleRequest, forwarding: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(if req.head_only { b"HEAD " } else { b"GET " });
    out.extend_from_slice(req.target(buf));
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in header_lines(&buf[..req.head_len]) {
        let stripped = headers::STRIPPED.iter().any(|s| name.eq_ignore_ascii_case(s.as_bytes()));
        if !stripped && !name.eq_ignore_ascii_case(b"connection") {
            push_header(out, name, value);
        }
    }
    out.extend_from_slice(forwarding);
    out.extend_from_slice(b"\r\n");
}

/// A health check's request: `GET path` for `host`, closing after.
pub fn probe_request(host: &str, path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: hostgate-health-check\r\nConnection: close\r\n\r\n")
        .into_bytes()
}

/// How a response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLength {
    None,
    Length(u64),
    Chunked,
    /// Until the backend closes (no length given).
    UntilClose,
}

/// A backend's response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub head_len: usize,
    pub status: u16,
    pub body: BodyLength,
    /// The backend connection may carry another request after this one.
    pub reusable: bool,
}

/// Why a backend's response cannot be forwarded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadResponse {
    #[error("malformed response head: {0}")]
    Malformed(String),
    #[error("invalid or conflicting Content-Length")]
    ContentLength,
    #[error("101 Switching Protocols to a request that asked no upgrade")]
    UnaskedUpgrade,
}

/// Parses the response head at the start of `buf`; `None` while partial.
/// `head_only`: the request was HEAD (no body whatever the head says).
pub fn parse_response(buf: &[u8], head_only: bool) -> Result<Option<ResponseHead>, BadResponse> {
    let mut storage = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut resp = httparse::Response::new(&mut storage);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(BadResponse::Malformed(e.to_string())),
    };
    let status = resp.code.unwrap_or_default();
    if status == 101 {
        return Err(BadResponse::UnaskedUpgrade);
    }
    let (mut lengths, mut chunked, mut encoded, mut close, mut keep_alive) = (Vec::new(), false, false, false, false);
    for h in resp.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            lengths.push(h.value.trim_ascii());
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            encoded = true;
            // Only the last coding decides (RFC 9112 §6.3 point 4).
            let last = h.value.split(|&b| b == b',').next_back().unwrap_or_default().trim_ascii();
            chunked = last.eq_ignore_ascii_case(b"chunked");
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    let mut reusable = if resp.version == Some(1) { !close } else { keep_alive && !close };
    let body = if head_only || (100..200).contains(&status) || status == 204 || status == 304 {
        BodyLength::None
    } else if encoded {
        // With both, Transfer-Encoding wins and the connection must close.
        reusable &= lengths.is_empty() && chunked;
        if chunked {
            BodyLength::Chunked
        } else {
            BodyLength::UntilClose
        }
    } else if let Some(first) = lengths.first() {
        let valid = |v: &&[u8]| !v.is_empty() && v.len() <= 18 && v.iter().all(u8::is_ascii_digit);
        if !lengths.iter().all(valid) || lengths.iter().any(|v| v != first) {
            return Err(BadResponse::ContentLength);
        }
        let n = first.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        BodyLength::Length(n)
    } else {
        reusable = false;
        BodyLength::UntilClose
    };
    Ok(Some(ResponseHead { head_len, status, body, reusable }))
}

/// Response headers the client never gets from the backend: hop-by-hop
/// ones, and HSTS when the proxy sets its own.
fn dropped_response_header(name: &[u8], hsts: bool) -> bool {
    ["connection", "keep-alive", "proxy-connection"].iter().any(|h| name.eq_ignore_ascii_case(h.as_bytes()))
        || (hsts && name.eq_ignore_ascii_case(b"strict-transport-security"))
}

/// Appends the head the client gets for the backend's head (`head`, as
/// parsed by [`parse_response`]): HTTP/1.1, the backend's status and
/// headers but the hop-by-hop ones, HSTS when `hsts` is given, and
/// `Connection: close` when the client connection ends after it.
pub fn write_client_head(head: &[u8], hsts: Option<u32>, close: bool, out: &mut Vec<u8>) {
    let status_line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let status_line = status_line.strip_suffix(b"\r").unwrap_or(status_line);
    // "HTTP/1.x " is 9 bytes; httparse checked it.
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status_line.get(9..).unwrap_or_default());
    out.extend_from_slice(b"\r\n");
    for (name, value) in header_lines(head) {
        if !dropped_response_header(name, hsts.is_some()) {
            push_header(out, name, value);
        }
    }
    if let Some(age) = hsts {
        out.extend_from_slice(format!("strict-transport-security: max-age={age}\r\n").as_bytes());
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Where a chunked body ends (RFC 9112 §7.1), fed the body's bytes in
/// pieces of any size; the bytes themselves are forwarded untouched.
#[derive(Debug, Clone, Default)]
pub struct ChunkedEnd {
    state: Chunk,
    size: u64,
    /// The size line has a digit (an empty size is malformed).
    digits: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Chunk {
    #[default]
    Size,
    /// `;name=value` after the size, up to the line end.
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// At the start of a trailer line (or of the final empty line).
    TrailerStart,
    Trailer,
    TrailerLf,
    LastLf,
    Done,
}

/// A chunked body that breaks the grammar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunked body")]
pub struct BadChunk;

impl ChunkedEnd {
    /// Feeds the next bytes: `Some(n)` once the body ended after `n` of
    /// them (the rest is not the body's).
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Option<usize>, BadChunk> {
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            self.state = match self.state {
                Chunk::Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        let digit = (b as char).to_digit(16).unwrap_or_default();
                        self.size = self.size.checked_mul(16).ok_or(BadChunk)? + u64::from(digit);
                        self.digits = true;
                        Chunk::Size
                    }
                    _ if !self.digits => return Err(BadChunk),
                    b';' | b' ' | b'\t' => Chunk::Extension,
                    b'\r' => Chunk::SizeLf,
                    _ => return Err(BadChunk),
                },
                Chunk::Extension => match b {
                    b'\r' => Chunk::SizeLf,
                    b'\n' => return Err(BadChunk),
                    _ => Chunk::Extension,
                },
                Chunk::SizeLf if b == b'\n' => {
                    self.digits = false;
                    if self.size == 0 {
                        Chunk::TrailerStart
                    } else {
                        Chunk::Data
                    }
                }
                Chunk::Data => {
                    // Skip the chunk's data in one step.
                    let take = (bytes.len() - i).min(usize::try_from(self.size).unwrap_or(usize::MAX));
                    self.size -= take as u64;
                    i += take;
                    if self.size == 0 {
                        self.state = Chunk::DataCr;
                    }
                    continue;
                }
                Chunk::DataCr if b == b'\r' => Chunk::DataLf,
                Chunk::DataLf if b == b'\n' => Chunk::Size,
                Chunk::TrailerStart => match b {
                    b'\r' => Chunk::LastLf,
                    _ => Chunk::Trailer,
                },
                Chunk::Trailer => match b {
                    b'\r' => Chunk::TrailerLf,
                    _ => Chunk::Trailer,
                },
                Chunk::TrailerLf if b == b'\n' => Chunk::TrailerStart,
                Chunk::LastLf if b == b'\n' => {
                    self.state = Chunk::Done;
                    return Ok(Some(i + 1));
                }
                Chunk::Done => return Ok(Some(0)),
                _ => return Err(BadChunk),
            };
            i += 1;
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn simple(head: &[u8]) -> SimpleRequest {
        match parse_request(head) {
            Parsed::Simple(s) => s,
            other => panic!("{other:?} for {:?}", String::from_utf8_lossy(head)),
        }
    }

    #[test]
    fn a_plain_get_is_simple() {
        let head = b"GET /a/b?c=d HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: x\r\n\r\nGET /next";
        let s = simple(head);
        assert_eq!(s.head_len, head.len() - b"GET /next".len());
        assert_eq!(s.target(head), b"/a/b?c=d");
        assert_eq!(s.path(head), b"/a/b");
        assert_eq!(s.host(head), b"shop.example");
        assert_eq!(s.header(head, "user-agent"), Some(&b"x"[..]));
        assert!(!s.close && !s.head_only);
        assert!(simple(b"HEAD / HTTP/1.1\r\nhost: a\r\nConnection: close\r\n\r\n").close);
        assert!(simple(b"HEAD / HTTP/1.1\r\nhost: a\r\n\r\n").head_only);
    }

    #[test]
    fn anything_needing_judgement_goes_to_pingora() {
        for head in [
            &b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx"[..],
            b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.0\r\nHost: a\r\n\r\n",
            b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: x-secret\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
            b"GET / HTTP/1.1\r\nHo st: a\r\n\r\n",
        ] {
            assert_eq!(parse_request(head), Parsed::Other, "{:?}", String::from_utf8_lossy(head));
        }
        assert_eq!(parse_request(b"GET / HTTP/1.1\r\nHost: a\r\n"), Parsed::Partial);
        let many: Vec<u8> =
            [&b"GET / HTTP/1.1\r\nHost: a\r\n"[..], &b"X: y\r\n".repeat(MAX_REQUEST_HEADERS), b"\r\n"].concat();
        assert_eq!(parse_request(&many), Parsed::Other);
    }

    #[test]
    fn the_backend_gets_the_real_peer_and_no_claims() {
        let head = b"GET /x HTTP/1.1\r\nHost: shop.example\r\nX-Forwarded-For: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\nConnection: close\r\nAccept: */*\r\n\r\n";
        let s = simple(head);
        let mut forwarding = Vec::new();
        write_forwarding("198.18.0.7".parse().unwrap(), "https", s.host(head), &mut forwarding);
        let mut out = Vec::new();
        write_upstream_head(head, &s, &forwarding, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("GET /x HTTP/1.1\r\nHost: shop.example\r\nAccept: */*\r\n"), "{text}");
        assert!(!text.contains("6.6.6.6") && !text.to_lowercase().contains("connection"), "{text}");
        assert!(text.contains("x-forwarded-for: 198.18.0.7\r\n"), "{text}");
        assert!(text.contains("forwarded: for=198.18.0.7;proto=https;host=\"shop.example\"\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn response_framing() {
        let framed = |head: &[u8], head_only| parse_response(head, head_only).unwrap().unwrap();
        let r = framed(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", false);
        assert_eq!((r.status, r.body, r.reusable), (200, BodyLength::Length(12), true));
        assert_eq!(framed(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", true).body, BodyLength::None);
        let r = framed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", false);
        assert_eq!((r.body, r.reusable), (BodyLength::Chunked, true));
        let r = framed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", false);
        assert_eq!((r.body, r.reusable), (BodyLength::Chunked, false));
        let r = framed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false);
        assert_eq!((r.body, r.reusable), (BodyLength::UntilClose, false));
        let r = framed(b"HTTP/1.1 200 OK\r\n\r\n", false);
        assert_eq!((r.body, r.reusable), (BodyLength::UntilClose, false));
        let r = framed(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 12\r\n\r\n", false);
        assert_eq!((r.body, r.reusable), (BodyLength::None, true));
        assert!(!framed(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", false).reusable);
        assert!(!framed(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false).reusable);
        assert!(framed(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", false).reusable);
        assert_eq!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Le", false), Ok(None));
        for bad in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
        ] {
            assert_eq!(parse_response(bad, false), Err(BadResponse::ContentLength));
        }
        assert_eq!(parse_response(b"HTTP/1.1 101 Switching\r\n\r\n", false), Err(BadResponse::UnaskedUpgrade));
        assert!(matches!(parse_response(b"HTTX/1.1 200 OK\r\n\r\n", false), Err(BadResponse::Malformed(_))));
    }

    #[test]
    fn the_client_gets_no_hop_by_hop_headers() {
        let head = b"HTTP/1.0 404 Not Here\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nStrict-Transport-Security: max-age=1\r\nContent-Length: 0\r\n\r\n";
        let mut out = Vec::new();
        write_client_head(head, Some(600), true, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "HTTP/1.1 404 Not Here\r\nContent-Length: 0\r\nstrict-transport-security: max-age=600\r\nconnection: close\r\n\r\n"
        );
        let mut out = Vec::new();
        write_client_head(head, None, false, &mut out);
        assert!(String::from_utf8(out).unwrap().contains("Strict-Transport-Security: max-age=1\r\n"));
    }

    #[test]
    fn chunked_grammar() {
        let body = b"4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nExpires: x\r\n\r\nNEXT";
        assert_eq!(ChunkedEnd::default().feed(body), Ok(Some(body.len() - 4)));
        assert_eq!(ChunkedEnd::default().feed(b"0\r\n\r\n"), Ok(Some(5)));
        assert_eq!(ChunkedEnd::default().feed(b"0\r\n\r"), Ok(None));
        for bad in [&b"x\r\n"[..], b"\r\n", b"4\r\nWikiX", b"4\nWiki\r\n", b"fffffffffffffffff\r\n"] {
            assert_eq!(ChunkedEnd::default().feed(bad), Err(BadChunk), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    fn chunked(chunks: &[Vec<u8>], trailers: &[String]) -> Vec<u8> {
        let mut out = Vec::new();
        for c in chunks.iter().filter(|c| !c.is_empty()) {
            out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
            out.extend_from_slice(c);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n");
        for t in trailers {
            out.extend_from_slice(format!("x-t: {t}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    proptest! {
        /// Any chunked body, fed in any pieces, ends exactly at its end.
        #[test]
        fn chunked_end_is_found_across_any_split(
            chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..6),
            trailers in prop::collection::vec("[a-z0-9]{0,8}", 0..3),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
            extra in prop::collection::vec(any::<u8>(), 0..20),
        ) {
            let body = chunked(&chunks, &trailers);
            let stream = [body.clone(), extra].concat();
            let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
            cuts.extend([0, stream.len()]);
            cuts.sort_unstable();
            let mut end = ChunkedEnd::default();
            let mut found = None;
            for w in cuts.windows(2) {
                if let Some(n) = end.feed(&stream[w[0]..w[1]]).unwrap() {
                    found = Some(w[0] + n);
                    break;
                }
            }
            prop_assert_eq!(found, Some(body.len()));
        }

        /// Arbitrary bytes never panic the request classifier, and a
        /// simple request's offsets lie inside its head.
        #[test]
        fn any_bytes_classify(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
            if let Parsed::Simple(s) = parse_request(&bytes) {
                prop_assert!(s.target.1 <= s.head_len && s.host.1 <= s.head_len);
                let mut forwarding = Vec::new();
                write_forwarding("203.0.113.9".parse().unwrap(), "http", s.host(&bytes), &mut forwarding);
                let mut out = Vec::new();
                write_upstream_head(&bytes, &s, &forwarding, &mut out);
            }
            let _ = parse_response(&bytes, false);
            let _ = ChunkedEnd::default().feed(&bytes);
        }

        /// A simple request with spoofed forwarding headers reaches the
        /// backend with only the real ones, and every other header kept.
        #[test]
        fn upstream_heads_keep_headers_and_drop_claims(
            names in prop::collection::vec("x-[a-z]{1,8}", 0..6),
            spoof in prop::sample::select(headers::STRIPPED.to_vec()),
        ) {
            let mut head = b"GET /p HTTP/1.1\r\nHost: h.example\r\n".to_vec();
            for n in &names {
                head.extend_from_slice(format!("{n}: v\r\n").as_bytes());
            }
            head.extend_from_slice(format!("{spoof}: 6.6.6.6\r\n\r\n").as_bytes());
            let s = simple(&head);
            let mut forwarding = Vec::new();
            write_forwarding("198.51.100.1".parse().unwrap(), "http", s.host(&head), &mut forwarding);
            let mut out = Vec::new();
            write_upstream_head(&head, &s, &forwarding, &mut out);
            let text = String::from_utf8(out).unwrap();
            prop_assert!(!text.contains("6.6.6.6"));
            for n in &names {
                let line = format!("\r\n{n}: v\r\n");
                prop_assert!(text.contains(&line));
            }
        }
    }
}

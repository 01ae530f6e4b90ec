//! Virtual hosts as the operator declares them, and their validation. A
//! vhost is one store entry (`http/vhosts/<host>`): it is valid on its own
//! or refused whole, so a bad one never reaches the routing table.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use serde::{Deserialize, Serialize};

use crate::{accesslog::LogFormat, balance::Balance, ratelimit::RateLimit};

/// Limits that keep one vhost's cost bounded.
pub const MAX_ROUTES: usize = 64;
pub const MAX_BACKENDS: usize = 64;
pub const MAX_WEIGHT: u32 = 1000;
pub const MAX_HSTS_SECS: u32 = 2 * 365 * 24 * 3600;
/// The largest request body a vhost may allow (1 GiB).
pub const MAX_BODY_LIMIT: u64 = 1 << 30;
/// The answers the proxy gives itself for a vhost, which the vhost may
/// replace with its own page.
pub const ERROR_PAGE_STATUSES: [u16; 7] = [404, 413, 429, 500, 502, 503, 504];
/// The largest error page (64 KiB): they are stored in the vhost.
pub const MAX_ERROR_PAGE: usize = 64 * 1024;

/// A refused vhost: the field at fault and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct VhostError {
    pub field: String,
    pub message: String,
}

fn bad(field: impl Into<String>, message: impl Into<String>) -> VhostError {
    VhostError { field: field.into(), message: message.into() }
}

/// One upstream server of a route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backend {
    pub addr: SocketAddr,
    /// Share of the route's requests, relative to the other backends (1..=1000).
    pub weight: u32,
}

impl Backend {
    /// Parses `IP:PORT` or `IP:PORT,weight=N` (IPv6 as `[ADDR]:PORT`);
    /// errors name `field`.
    pub fn parse(field: &str, text: &str) -> Result<Backend, VhostError> {
        let mut parts = text.split(',');
        let addr = parts.next().unwrap_or_default().trim();
        let addr: SocketAddr =
            addr.parse().map_err(|_| bad(field, format!("{addr:?} is not IP:PORT (e.g. 198.51.100.6:8080)")))?;
        let mut weight = 1;
        for opt in parts {
            let (k, v) = opt.split_once('=').unwrap_or((opt, ""));
            match k.trim() {
                "weight" => {
                    weight = v.trim().parse().map_err(|_| bad(field, format!("weight {v:?} is not a number")))?
                }
                other => return Err(bad(field, format!("unknown option {other:?} (known: weight=N)"))),
            }
        }
        Ok(Backend { addr, weight })
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{},weight={}", self.addr, self.weight)
    }
}

/// Requests whose path starts with `prefix` go to this pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub prefix: String,
    pub backends: Vec<Backend>,
}

/// A virtual host of one customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vhost {
    /// `shop.example.com`, or `*.example.com` for every name below it.
    pub host: String,
    pub customer: String,
    pub routes: Vec<Route>,
    #[serde(default)]
    pub balance: Balance,
    /// Answer plain HTTP with a redirect to HTTPS (308).
    #[serde(default)]
    pub https_redirect: bool,
    /// `Strict-Transport-Security: max-age=N` on HTTPS answers.
    #[serde(default)]
    pub hsts_max_age: Option<u32>,
    /// Larger request bodies are refused with 413.
    #[serde(default)]
    pub max_body_bytes: Option<u64>,
    /// Store responses the origin allows a shared cache to (RFC 9111).
    #[serde(default)]
    pub cache: bool,
    /// Requests per client address (IPv4, IPv6 /64) beyond this are
    /// answered 429.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    /// Send a PROXY protocol v2 header first on each backend connection
    /// (backends must expect it).
    #[serde(default)]
    pub proxy_protocol: bool,
    /// This vhost's access log format; `None`: the node's `[http] access_log`.
    #[serde(default)]
    pub access_log: Option<LogFormat>,
    /// Get (and renew) this name's certificate by ACME HTTP-01 (`--acme`);
    /// exact names only.
    #[serde(default)]
    pub acme: bool,
    /// Speak TLS to the backends (`--backend-tls`).
    #[serde(default)]
    pub backend_tls: Option<BackendTls>,
    /// Check the backends over HTTP (`--health-path`), not only by
    /// connecting.
    #[serde(default)]
    pub health: Option<HealthCheck>,
    /// The vhost's own HTML for answers the proxy gives itself
    /// (`--error-page CODE=FILE`): status -> page.
    #[serde(default)]
    pub error_pages: BTreeMap<u16, String>,
    /// Seconds to connect to a backend (`--connect-timeout`; default
    /// [`DEFAULT_CONNECT_TIMEOUT`]); past it, another backend is tried.
    #[serde(default)]
    pub connect_timeout_secs: Option<u32>,
    /// Seconds a backend may take to send the response head, and between
    /// two reads of its body (`--read-timeout`, NGINX's
    /// `proxy_read_timeout`; default [`DEFAULT_READ_TIMEOUT`]); past it,
    /// 504.
    #[serde(default)]
    pub read_timeout_secs: Option<u32>,
}

/// A backend on the same network answers a connect within milliseconds.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// NGINX's `proxy_read_timeout`.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest connect or read timeout a vhost may set (an hour).
const MAX_TIMEOUT_SECS: u32 = 3600;

/// The active health check of a vhost's backends: `GET path` (with the
/// vhost's host) must answer `expect_status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    pub path: String,
    pub expect_status: u16,
}

impl HealthCheck {
    fn validate(&self) -> Result<(), VhostError> {
        let printable = self.path.bytes().all(|b| b.is_ascii_graphic());
        if !self.path.starts_with('/') || !printable || self.path.len() > 1024 {
            return Err(bad(
                "health-path",
                format!("{:?}: a path starting with '/', no spaces, up to 1024 bytes", self.path),
            ));
        }
        if !(100..=599).contains(&self.expect_status) {
            return Err(bad("health-status", format!("{} is not an HTTP status (100-599)", self.expect_status)));
        }
        Ok(())
    }
}

/// TLS from the proxy to a vhost's backends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendTls {
    /// Sent as SNI; a verified certificate must name it.
    pub name: String,
    /// Check the backend's certificate: a chain to `ca_pem` (else to the
    /// system's roots) naming `name`. Off, any certificate is taken
    /// (NGINX's `proxy_ssl_verify off`, its default).
    pub verify: bool,
    /// The CA certificates (PEM) backend chains must lead to.
    #[serde(default)]
    pub ca_pem: Option<String>,
}

impl BackendTls {
    fn validate(&self) -> Result<(), VhostError> {
        validate_host(&self.name).map_err(|e| bad("backend-sni", e.message))?;
        if self.name.starts_with("*.") {
            return Err(bad("backend-sni", format!("{:?}: a backend's name cannot be a wildcard", self.name)));
        }
        match (&self.ca_pem, self.verify) {
            (Some(_), false) => Err(bad("backend-ca", "has no effect with --backend-no-verify")),
            (Some(pem), true) => crate::tls::ca_certificates(pem).map(|_| ()).map_err(|e| bad("backend-ca", e)),
            (None, _) => Ok(()),
        }
    }
}

impl Vhost {
    /// Checks everything the proxy relies on; the first fault found is named.
    pub fn validate(&self) -> Result<(), VhostError> {
        validate_host(&self.host)?;
        validate_customer(&self.customer)?;
        if self.routes.is_empty() {
            return Err(bad("backend", "a vhost needs at least one backend (--backend or --path)"));
        }
        if self.routes.len() > MAX_ROUTES {
            return Err(bad("path", format!("at most {MAX_ROUTES} path prefixes")));
        }
        for (i, r) in self.routes.iter().enumerate() {
            validate_route(r)?;
            if self.routes[..i].iter().any(|o| o.prefix == r.prefix) {
                return Err(bad("path", format!("prefix {:?} appears twice", r.prefix)));
            }
        }
        if self.hsts_max_age.is_some_and(|s| s > MAX_HSTS_SECS) {
            return Err(bad("hsts", format!("max-age above {MAX_HSTS_SECS} s (two years)")));
        }
        if self.max_body_bytes.is_some_and(|b| b > MAX_BODY_LIMIT) {
            return Err(bad("max-body", format!("above {MAX_BODY_LIMIT} bytes (1 GiB)")));
        }
        if let Some(r) = &self.rate_limit {
            r.validate()?;
        }
        if let Some(tls) = &self.backend_tls {
            tls.validate()?;
        }
        if let Some(health) = &self.health {
            health.validate()?;
        }
        for (status, page) in &self.error_pages {
            if !ERROR_PAGE_STATUSES.contains(status) {
                let known: Vec<String> = ERROR_PAGE_STATUSES.iter().map(u16::to_string).collect();
                return Err(bad("error-page", format!("{status}: the proxy answers only {} itself", known.join(", "))));
            }
            if page.is_empty() || page.len() > MAX_ERROR_PAGE {
                return Err(bad("error-page", format!("{status}: a page of 1 byte to {MAX_ERROR_PAGE} bytes")));
            }
        }
        for (field, secs) in [("connect-timeout", self.connect_timeout_secs), ("read-timeout", self.read_timeout_secs)]
        {
            if secs.is_some_and(|s| s == 0 || s > MAX_TIMEOUT_SECS) {
                return Err(bad(field, format!("{} s: 1 to {MAX_TIMEOUT_SECS} s", secs.unwrap_or_default())));
            }
        }
        if self.acme && self.is_wildcard() {
            return Err(bad("acme", "HTTP-01 cannot prove a wildcard name; add its certificate with http cert add"));
        }
        Ok(())
    }

    /// `host` of `customer` with `routes` and every option at its default.
    pub fn new(host: impl Into<String>, customer: impl Into<String>, routes: Vec<Route>) -> Vhost {
        Vhost {
            host: host.into(),
            customer: customer.into(),
            routes,
            balance: Balance::default(),
            https_redirect: false,
            hsts_max_age: None,
            max_body_bytes: None,
            cache: false,
            rate_limit: None,
            proxy_protocol: false,
            access_log: None,
            acme: false,
            backend_tls: None,
            health: None,
            error_pages: BTreeMap::new(),
            connect_timeout_secs: None,
            read_timeout_secs: None,
        }
    }

    /// How long to wait for a backend's connect.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout_secs.map_or(DEFAULT_CONNECT_TIMEOUT, |s| Duration::from_secs(s.into()))
    }

    /// How long to wait for a backend's response head, and for each read of
    /// its body.
    pub fn read_timeout(&self) -> Duration {
        self.read_timeout_secs.map_or(DEFAULT_READ_TIMEOUT, |s| Duration::from_secs(s.into()))
    }

    /// Whether this is a `*.suffix` wildcard.
    pub fn is_wildcard(&self) -> bool {
        self.host.starts_with("*.")
    }
}

/// A lowercase DNS name, optionally `*.` + a name of two labels or more.
pub fn validate_host(host: &str) -> Result<(), VhostError> {
    let name = host.strip_prefix("*.").unwrap_or(host);
    if host.is_empty() || host.len() > 253 {
        return Err(bad("host", format!("{host:?} must be 1 to 253 characters")));
    }
    if name.contains('*') {
        return Err(bad(
            "host",
            format!("{host:?}: a wildcard is only allowed as the whole first label (*.example.com)"),
        ));
    }
    let labels: Vec<&str> = name.split('.').collect();
    if host.starts_with("*.") && labels.len() < 2 {
        return Err(bad("host", format!("{host:?}: a wildcard needs a suffix of two labels or more")));
    }
    for label in labels {
        let ok_chars = label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if label.is_empty() || label.len() > 63 || !ok_chars || label.starts_with('-') || label.ends_with('-') {
            return Err(bad(
                "host",
                format!("{host:?}: label {label:?} must be 1-63 of a-z, 0-9, '-' (lowercase, no leading/trailing '-')"),
            ));
        }
    }
    Ok(())
}

fn validate_customer(customer: &str) -> Result<(), VhostError> {
    let ok = !customer.is_empty()
        && customer.len() <= 64
        && customer.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    match ok {
        true => Ok(()),
        false => Err(bad("customer", format!("{customer:?} must be 1-64 of a-z, A-Z, 0-9, '-', '_'"))),
    }
}

fn validate_route(r: &Route) -> Result<(), VhostError> {
    let clean = r.prefix.bytes().all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#');
    if !r.prefix.starts_with('/') || !clean || r.prefix.len() > 1024 {
        return Err(bad("path", format!("{:?} must start with '/' and hold no spaces, '?' or '#'", r.prefix)));
    }
    if r.backends.is_empty() || r.backends.len() > MAX_BACKENDS {
        return Err(bad("backend", format!("path {:?} needs 1 to {MAX_BACKENDS} backends", r.prefix)));
    }
    for (i, b) in r.backends.iter().enumerate() {
        if b.weight == 0 || b.weight > MAX_WEIGHT {
            return Err(bad("backend", format!("{}: weight must be 1..={MAX_WEIGHT}", b.addr)));
        }
        if b.addr.port() == 0 || b.addr.ip().is_unspecified() || b.addr.ip().is_multicast() {
            return Err(bad("backend", format!("{} is not a unicast address with a port", b.addr)));
        }
        if r.backends[..i].iter().any(|o| o.addr == b.addr) {
            return Err(bad("backend", format!("{} appears twice in path {:?}", b.addr, r.prefix)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn vhost(host: &str) -> Vhost {
        let backends = vec![Backend::parse("backend", "198.51.100.6:8080").expect("backend")];
        Vhost::new(host, "acme", vec![Route { prefix: "/".into(), backends }])
    }

    #[test]
    fn error_pages_are_validated() {
        let mut v = vhost("a.example.com");
        v.error_pages.insert(502, "<h1>down</h1>".into());
        v.validate().expect("fine");
        v.error_pages.insert(200, "<h1>ok</h1>".into());
        assert_eq!(v.validate().expect_err("not the proxy's answer").field, "error-page");
        let mut v = vhost("a.example.com");
        v.error_pages.insert(504, "x".repeat(MAX_ERROR_PAGE + 1));
        assert_eq!(v.validate().expect_err("too big").field, "error-page");
    }

    #[test]
    fn health_checks_are_validated() {
        let with = |path: &str, expect_status| {
            let mut v = vhost("a.example.com");
            v.health = Some(HealthCheck { path: path.into(), expect_status });
            v.validate()
        };
        with("/healthz?full=1", 204).expect("fine");
        assert_eq!(with("healthz", 200).expect_err("no slash").field, "health-path");
        assert_eq!(with("/a b", 200).expect_err("space").field, "health-path");
        assert_eq!(with("/", 99).expect_err("status").field, "health-status");
        assert_eq!(with("/", 600).expect_err("status").field, "health-status");
    }

    #[test]
    fn timeouts_are_validated_and_default() {
        let with = |connect, read| {
            let mut v = vhost("a.example.com");
            (v.connect_timeout_secs, v.read_timeout_secs) = (connect, read);
            v.validate().map(|()| (v.connect_timeout(), v.read_timeout()))
        };
        assert_eq!(with(None, None), Ok((DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT)));
        assert_eq!(with(Some(5), Some(3600)), Ok((Duration::from_secs(5), Duration::from_secs(3600))));
        assert_eq!(with(Some(0), None).map_err(|e| e.field), Err("connect-timeout".to_string()));
        assert_eq!(with(None, Some(3601)).map_err(|e| e.field), Err("read-timeout".to_string()));
    }

    #[test]
    fn backend_tls_is_validated() {
        let with = |name: &str, verify, ca: Option<&str>| {
            let mut v = vhost("a.example.com");
            v.backend_tls = Some(BackendTls { name: name.into(), verify, ca_pem: ca.map(Into::into) });
            v.validate()
        };
        with("backend.internal", true, None).expect("system roots");
        with("backend.internal", false, None).expect("unverified");
        for (name, verify, ca, field) in [
            ("Bad Name", true, None, "backend-sni"),
            ("*.internal", true, None, "backend-sni"),
            ("backend.internal", true, Some("not PEM"), "backend-ca"),
            ("backend.internal", false, Some("not PEM"), "backend-ca"),
        ] {
            assert_eq!(with(name, verify, ca).expect_err("refused").field, field, "{name} {ca:?}");
        }
    }

    #[test]
    fn good_vhosts_pass() {
        for h in ["shop.example.com", "*.example.com", "a-b.c1.example.com", "localhost"] {
            vhost(h).validate().unwrap_or_else(|e| panic!("{h}: {e}"));
        }
    }

    #[test]
    fn errors_name_the_field() {
        let field = |v: Vhost| v.validate().expect_err("refused").field;
        for h in ["", "Shop.example.com", "*.com", "a.*.example.com", "-a.example.com", "a..b", "a_b.example.com"] {
            assert_eq!(field(vhost(h)), "host", "{h:?}");
        }
        let mut v = vhost("a.example.com");
        v.customer = "no spaces".into();
        assert_eq!(field(v), "customer");
        let mut v = vhost("a.example.com");
        v.routes[0].prefix = "api".into();
        assert_eq!(field(v), "path");
        let mut v = vhost("a.example.com");
        v.routes[0].backends[0].weight = 0;
        assert_eq!(field(v), "backend");
        let mut v = vhost("a.example.com");
        v.routes.clear();
        assert_eq!(field(v), "backend");
        let mut v = vhost("a.example.com");
        v.hsts_max_age = Some(u32::MAX);
        assert_eq!(field(v), "hsts");
        let mut v = vhost("a.example.com");
        v.rate_limit = Some(RateLimit { per_second: 0, burst: 1 });
        assert_eq!(field(v), "rate-limit");
        let mut v = vhost("*.example.com");
        v.acme = true;
        assert_eq!(field(v), "acme");
    }

    #[test]
    fn backends_parse() {
        let b = Backend::parse("backend", "198.51.100.6:8080,weight=3").expect("parse");
        assert_eq!((b.addr.to_string(), b.weight), ("198.51.100.6:8080".into(), 3));
        assert_eq!(Backend::parse("backend", &b.to_string()), Ok(b));
        assert!(Backend::parse("backend", "[2001:db8::1]:80").is_ok());
        for t in ["198.51.100.6", "x:80", "198.51.100.6:80,w=2", "198.51.100.6:80,weight=x", ""] {
            assert_eq!(Backend::parse("backend", t).expect_err(t).field, "backend");
        }
    }

    proptest! {
        /// Whatever an API client sends, validation answers (never panics),
        /// and what it accepts survives the store's JSON unchanged and
        /// compiles into a table that serves it.
        #[test]
        fn arbitrary_vhosts_are_judged(
            host in "[a-zA-Z0-9*._-]{0,20}",
            customer in "[ -~]{0,10}",
            prefix in "[ -~]{0,8}",
            backend in prop_oneof![
                (any::<[u8; 4]>(), any::<u16>(), 0u32..1200).prop_map(|(ip, port, w)| {
                    format!("{}:{port},weight={w}", std::net::Ipv4Addr::from(ip))
                }),
                "[0-9.:,a-z=\\[\\]]{0,30}",
            ],
            host_kind in 0u8..3,
        ) {
            // A third of the hosts are made valid-looking, so acceptance is exercised too.
            let host = match host_kind {
                0 => format!("{}.example.com", host.to_ascii_lowercase().replace(['*', '.', '_'], "a")),
                1 => "*.example.com".to_string(),
                _ => host,
            };
            let customer = if host_kind < 2 { "acme".to_string() } else { customer };
            let prefix = if host_kind < 2 { format!("/{}", prefix.replace([' ', '?', '#'], "")) } else { prefix };
            let Ok(b) = Backend::parse("backend", &backend) else { return Ok(()) };
            let v = Vhost::new(host, customer, vec![Route { prefix, backends: vec![b] }]);
            if v.validate().is_ok() {
                let json = serde_json::to_string(&v).expect("json");
                prop_assert_eq!(serde_json::from_str::<Vhost>(&json).expect("back"), v.clone());
                let (t, refused) = crate::RoutingTable::build([v.clone()]);
                prop_assert!(refused.is_empty());
                let served = v.host.replace('*', "x");
                prop_assert!(t.select(served.as_bytes(), v.routes[0].prefix.as_bytes()).is_some());
            }
        }
    }
}

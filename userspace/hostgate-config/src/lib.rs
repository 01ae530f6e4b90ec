//! hostgate's configuration file (TOML), typed and validated on load.
//!
//! Errors name the file, the field and what is wrong, e.g.
//! `hostgate.toml: dataplane.uplinks[1]: "eth0/1" is not a valid interface name`;
//! syntax errors and unknown fields come with line and column from the
//! TOML parser. Nothing is applied unless the whole file is valid.
//!
//! ```toml
//! node_name = "node1"
//! state_dir = "/var/lib/hostgate"
//! node_addresses = ["198.18.0.1", "2001:db8:18::1"]   # tunnel endpoints (DSR)
//!
//! [api]
//! socket = "/run/hostgate/hostgate.sock"
//!
//! [dataplane]
//! pin_root = "/sys/fs/bpf/hostgate"
//! uplinks = ["eth0"]
//! container_interfaces = []
//! xdp_mode = "auto"          # auto | native | generic
//!
//! [cluster]                  # absent: one node, embedded store
//! etcd_endpoints = ["http://198.18.1.254:2379"]
//! key_prefix = "hostgate/"
//! lease_ttl_secs = 1         # a dead node's IPs move after about this long
//! weight = 100               # this node's share of unpinned IPs
//!
//! [dns]                      # absent or empty listen: no DNS server
//! listen = ["198.51.100.53:53", "[2001:db8::53]:53"]
//! workers = 2                # UDP sockets per address (SO_REUSEPORT)
//! tcp_max_connections = 256  # per address
//! tcp_idle_secs = 10
//! query_log = false          # every query at info level (or per zone)
//! upstreams = ["203.0.113.53", "[2001:db8::53]:53"]  # resolver for containers
//! resolver_clients = []      # more prefixes that may use it (CIDR)
//! cache_entries = 10000      # responses the resolver keeps
//! rrl_ratelimit = 200        # responses a second per client /24 (/56) and answer; 0: off
//!
//! [log]
//! format = "text"            # text | json
//! level = "info"             # a tracing filter, e.g. "info,hostgate_dataplane=debug"
//! # Remote copy of the log: syslog over TCP with TLS (RFC 5424 messages,
//! # RFC 5425 octet-counted frames), spooled to <state_dir>/log-spool while
//! # the receiver is away. ca: PEM bundle that signs the receiver's certificate.
//! syslog = { address = "203.0.113.5:6514", ca = "/etc/hostgate/syslog-ca.pem",
//!            server_name = "logs.example.net", spool_max_mb = 64 }
//! ```

use std::{
    fmt,
    path::{Path, PathBuf},
};

use serde::Deserialize;

/// Where the daemon and CLI look when no `--config` is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/hostgate/hostgate.toml";
/// The control socket when the config names none.
pub const DEFAULT_SOCKET: &str = "/run/hostgate/hostgate.sock";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {field}: {problem}")]
    Invalid { path: PathBuf, field: String, problem: String },
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This node's name: unique in a cluster, used for pins and state keys.
    pub node_name: String,
    /// Where the daemon keeps its embedded store.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// This node's underlay addresses (one per family): other nodes tunnel
    /// DSR traffic to them, and this node's tunnels start from them.
    #[serde(default)]
    pub node_addresses: Vec<std::net::IpAddr>,
    #[serde(default)]
    pub api: ApiConfig,
    pub dataplane: DataplaneConfig,
    #[serde(default)]
    pub ip: IpConfig,
    #[serde(default)]
    pub firewall: FirewallConfig,
    #[serde(default)]
    pub cluster: ClusterConfig,
    #[serde(default)]
    pub dhcp: DhcpConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub dns: DnsConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub ssh: SshConfig,
    #[serde(default)]
    pub log: LogConfig,
}

/// Cluster membership. Without etcd endpoints the node is a cluster of one
/// on its embedded store.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// etcd client URLs (`http://HOST:PORT`); empty: embedded store.
    #[serde(default)]
    pub etcd_endpoints: Vec<String>,
    /// Every key hostgate writes goes under this prefix, so clusters can share an etcd.
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// Membership lease: a node that stops renewing it for this long is
    /// out, and its IPs move. It withdraws its own addresses before then.
    #[serde(default = "default_lease_ttl_secs")]
    pub lease_ttl_secs: u32,
    /// This node's relative share of unpinned IPs (1-1000).
    #[serde(default = "default_weight")]
    pub weight: u32,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            etcd_endpoints: Vec::new(),
            key_prefix: default_key_prefix(),
            lease_ttl_secs: default_lease_ttl_secs(),
            weight: default_weight(),
        }
    }
}

fn default_key_prefix() -> String {
    "hostgate/".into()
}
fn default_lease_ttl_secs() -> u32 {
    1
}
fn default_weight() -> u32 {
    100
}

/// Prometheus metrics.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Where `GET /metrics` answers, e.g. "127.0.0.1:9468"; absent: off.
    /// The page reveals the node's VIPs, backends and rules: keep it on
    /// loopback or a management network.
    pub listen: Option<std::net::SocketAddr>,
}

/// The DHCP server. Networks are declared through the API; this is what
/// only the node's operator decides.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DhcpConfig {
    /// Interfaces on which requests relayed by DHCP relay agents (giaddr
    /// set) are accepted and served from the network containing giaddr.
    /// Relayed requests arriving anywhere else are ignored, so nobody can
    /// drain a pool from outside.
    #[serde(default)]
    pub relay_interfaces: Vec<String>,
}

/// The authoritative DNS server. Zones are declared through the API; this
/// is where and how this node answers.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    /// `ADDRESS:PORT` to answer on over UDP and TCP (`[V6]:PORT` for IPv6);
    /// empty: no DNS server. The address need not exist yet (IP_FREEBIND):
    /// a customer IP assigned later is served once it appears.
    #[serde(default)]
    pub listen: Vec<String>,
    /// UDP sockets per address (SO_REUSEPORT), each its own task.
    #[serde(default = "default_dns_workers")]
    pub workers: u32,
    /// Open TCP connections per address; more are closed at once.
    #[serde(default = "default_dns_tcp_max")]
    pub tcp_max_connections: u32,
    /// A TCP connection idle this long is closed.
    #[serde(default = "default_dns_tcp_idle")]
    pub tcp_idle_secs: u32,
    /// Log every query (client, name, type, rcode) at info level. Off by
    /// default: a busy server would drown its log, and queries are
    /// personal data of the asking resolvers' users.
    #[serde(default)]
    pub query_log: bool,
    /// The zone of containers' names, e.g. "internal.example.net": a
    /// container gets `<name>.<customer>.<zone>` from its DHCP lease's
    /// hostname and from its registration, and its addresses PTR records in
    /// the matching reverse zones. None: no such names.
    #[serde(default)]
    pub internal_zone: Option<String>,
    /// Upstream resolvers (`ADDRESS` or `ADDRESS:PORT`, port 53 by
    /// default), tried in order. Queries from container networks (the DHCP
    /// networks' subnets and IPv6 prefixes, registered containers'
    /// addresses, and `resolver_clients`) for names outside our zones go
    /// there and are cached; everyone else gets REFUSED for such names.
    /// Empty: no resolver.
    #[serde(default)]
    pub upstreams: Vec<String>,
    /// More client prefixes (CIDR) allowed to use the resolver, e.g. the
    /// provider's own management network.
    #[serde(default)]
    pub resolver_clients: Vec<String>,
    /// Responses the resolver keeps at most.
    #[serde(default = "default_dns_cache_entries")]
    pub cache_entries: u32,
    /// Response rate limiting (NSD's `rrl-ratelimit`): UDP responses a
    /// second per client prefix and kind of answer; 0 turns it off (for a
    /// benchmark's single client, say).
    #[serde(default = "default_dns_rrl_ratelimit")]
    pub rrl_ratelimit: u32,
    /// Format of the per-customer query logs (queries for zones with
    /// `--customer` and their query log on, or all with `query_log`):
    /// `text` (default, logfmt), `json` or `off`.
    #[serde(default)]
    pub access_log: Option<String>,
    /// Where they go (`<customer>.log`); default `<state_dir>/log/dns`.
    #[serde(default)]
    pub access_log_dir: Option<std::path::PathBuf>,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            listen: Vec::new(),
            workers: default_dns_workers(),
            tcp_max_connections: default_dns_tcp_max(),
            tcp_idle_secs: default_dns_tcp_idle(),
            query_log: false,
            internal_zone: None,
            upstreams: Vec::new(),
            resolver_clients: Vec::new(),
            cache_entries: default_dns_cache_entries(),
            rrl_ratelimit: default_dns_rrl_ratelimit(),
            access_log: None,
            access_log_dir: None,
        }
    }
}

fn default_dns_workers() -> u32 {
    2
}
fn default_dns_tcp_max() -> u32 {
    256
}
fn default_dns_tcp_idle() -> u32 {
    10
}
fn default_dns_cache_entries() -> u32 {
    10_000
}
fn default_dns_rrl_ratelimit() -> u32 {
    200
}

/// A service's per-customer log settings: `text`, `json` or `off`, in an
/// absolute directory.
fn check_service_log(service: &str, format: &str, dir: Option<&std::path::Path>) -> Result<(), (String, String)> {
    if !["text", "json", "off"].contains(&format) {
        return Err((format!("{service}.access_log"), format!("{format:?} is not text, json or off")));
    }
    if dir.is_some_and(|d| !d.is_absolute()) {
        return Err((format!("{service}.access_log_dir"), "must be an absolute path".to_string()));
    }
    Ok(())
}

/// `ADDRESS:PORT`, `[V6]:PORT`, or a bare address meaning port 53.
fn parse_upstream(text: &str) -> Option<std::net::SocketAddr> {
    text.parse().ok().or_else(|| text.parse::<std::net::IpAddr>().ok().map(|ip| std::net::SocketAddr::new(ip, 53)))
}

/// `ADDRESS/LEN` with no host bits set past LEN.
fn parse_prefix(text: &str) -> Option<(std::net::IpAddr, u8)> {
    let (addr, len) = text.split_once('/')?;
    let addr: std::net::IpAddr = addr.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    let bits = if addr.is_ipv4() { 32 } else { 128 };
    if len > bits {
        return None;
    }
    let value = match addr {
        std::net::IpAddr::V4(a) => u128::from(u32::from(a)) << 96,
        std::net::IpAddr::V6(a) => u128::from(a),
    };
    let host = if len == 0 { u128::MAX } else { u128::MAX >> len };
    (value & host == 0).then_some((addr, len))
}

impl DnsConfig {
    /// The per-customer query log format (validated on load).
    pub fn access_log_format(&self) -> &str {
        self.access_log.as_deref().unwrap_or("text")
    }

    /// The listen addresses, parsed (validation has checked them).
    pub fn listen_addrs(&self) -> Vec<std::net::SocketAddr> {
        self.listen.iter().filter_map(|a| a.parse().ok()).collect()
    }

    /// The upstream resolvers, parsed (validation has checked them).
    pub fn upstream_addrs(&self) -> Vec<std::net::SocketAddr> {
        self.upstreams.iter().filter_map(|a| parse_upstream(a)).collect()
    }

    /// `resolver_clients`, parsed (validation has checked them).
    pub fn resolver_client_prefixes(&self) -> Vec<(std::net::IpAddr, u8)> {
        self.resolver_clients.iter().filter_map(|p| parse_prefix(p)).collect()
    }

    fn validate(&self) -> Result<(), (String, String)> {
        let bad = |field: &str, problem: String| Err((field.to_string(), problem));
        let mut seen = std::collections::BTreeSet::new();
        for (i, text) in self.listen.iter().enumerate() {
            let field = format!("dns.listen[{i}]");
            let Ok(addr) = text.parse::<std::net::SocketAddr>() else {
                return bad(
                    &field,
                    format!("{text:?} is not ADDRESS:PORT (e.g. \"198.51.100.1:53\", \"[2001:db8::1]:53\")"),
                );
            };
            if addr.port() == 0 {
                return bad(&field, format!("{text:?}: port 0"));
            }
            if !seen.insert(addr) {
                return bad(&field, format!("{text:?} is listed twice"));
            }
        }
        if !(1..=64).contains(&self.workers) {
            return bad("dns.workers", format!("{} is not between 1 and 64", self.workers));
        }
        if self.tcp_max_connections == 0 {
            return bad("dns.tcp_max_connections", "must be at least 1".into());
        }
        if !(1..=3600).contains(&self.tcp_idle_secs) {
            return bad("dns.tcp_idle_secs", format!("{} is not between 1 and 3600", self.tcp_idle_secs));
        }
        let listen = self.listen_addrs();
        for (i, text) in self.upstreams.iter().enumerate() {
            let field = format!("dns.upstreams[{i}]");
            let Some(addr) = parse_upstream(text) else {
                return bad(
                    &field,
                    format!("{text:?} is not ADDRESS or ADDRESS:PORT (e.g. \"203.0.113.53\", \"[2001:db8::53]:53\")"),
                );
            };
            if addr.port() == 0 || addr.ip().is_unspecified() {
                return bad(&field, format!("{text:?}: not an address to send to"));
            }
            if listen.iter().any(|l| l.port() == addr.port() && (l.ip() == addr.ip() || l.ip().is_unspecified())) {
                return bad(&field, format!("{text:?} is one of our own listen addresses: queries would loop"));
            }
        }
        for (i, text) in self.resolver_clients.iter().enumerate() {
            if parse_prefix(text).is_none() {
                return bad(
                    &format!("dns.resolver_clients[{i}]"),
                    format!("{text:?} is not ADDRESS/LEN with no host bits set (e.g. \"198.51.100.0/24\")"),
                );
            }
        }
        if !self.resolver_clients.is_empty() && self.upstreams.is_empty() {
            return bad("dns.resolver_clients", "set, but no dns.upstreams to resolve with".into());
        }
        if let Some(z) = &self.internal_zone {
            let labels: Vec<&str> = z.trim_end_matches('.').split('.').collect();
            let valid = labels
                .iter()
                .all(|l| (1..=63).contains(&l.len()) && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
            if !valid || labels.len() < 2 {
                return bad("dns.internal_zone", format!("{z:?} is not a domain name of two labels or more"));
            }
        }
        Ok(())
    }
}

/// The HTTP reverse proxy. Virtual hosts are declared through the API;
/// where it listens is the node operator's decision.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// `ADDRESS:PORT` to accept plain HTTP on (e.g. `198.51.100.1:80`,
    /// `[2001:db8::1]:80`); empty: the proxy is off.
    #[serde(default)]
    pub listen: Vec<String>,
    /// `ADDRESS:PORT` to accept HTTPS on (e.g. `198.51.100.1:443`): TLS
    /// 1.2/1.3 with the certificate for the client's SNI name from
    /// `hostgate http cert add`, HTTP/2 or HTTP/1.1 by ALPN.
    #[serde(default)]
    pub listen_tls: Vec<String>,
    /// Access log format of vhosts that do not choose one: `combined`
    /// (default), `json` or `off`.
    #[serde(default)]
    pub access_log: Option<String>,
    /// Where the per-customer access logs go (`<customer>.log`); default
    /// `<state_dir>/log/http`.
    #[serde(default)]
    pub access_log_dir: Option<std::path::PathBuf>,
    /// Memory for cached responses of vhosts with `--cache`, in MiB
    /// (1..=65536; default 64). The least recently used go first.
    #[serde(default = "default_cache_mib")]
    pub cache_mib: u32,
    /// ACME directory URL (`https://...`); set: vhosts with `--acme` get
    /// their certificates from this CA by HTTP-01, answered on `listen`.
    #[serde(default)]
    pub acme_directory: Option<String>,
    /// Contact e-mail address given to the CA with the account.
    #[serde(default)]
    pub acme_contact: Option<String>,
    /// PEM file of the CA root that signs the ACME server's own HTTPS
    /// certificate, for test CAs such as pebble; default: the system's roots.
    #[serde(default)]
    pub acme_ca_root: Option<std::path::PathBuf>,
    /// How long, in seconds, open connections may take to finish when the
    /// daemon stops or hands over to a new one (1..=3600; default 30): each
    /// closes after its current request; what is still open then is cut.
    #[serde(default = "default_drain_secs")]
    pub drain_secs: u32,
    /// Seconds a new plain-HTTP connection has to send its whole first
    /// request head (1..=300; default 10, NGINX's client_header_timeout):
    /// a slower one (slowloris) gets 408 and is closed.
    #[serde(default = "default_header_timeout_secs")]
    pub header_timeout_secs: u32,
}

fn default_header_timeout_secs() -> u32 {
    10
}

fn default_cache_mib() -> u32 {
    64
}

fn default_drain_secs() -> u32 {
    30
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: Vec::new(),
            listen_tls: Vec::new(),
            access_log: None,
            access_log_dir: None,
            cache_mib: default_cache_mib(),
            acme_directory: None,
            acme_contact: None,
            acme_ca_root: None,
            drain_secs: default_drain_secs(),
            header_timeout_secs: default_header_timeout_secs(),
        }
    }
}

impl HttpConfig {
    /// The default access log format (validated on load).
    pub fn access_log_format(&self) -> &str {
        self.access_log.as_deref().unwrap_or("combined")
    }

    /// The listen addresses (validated on load, so none is dropped here).
    pub fn listen_addrs(&self) -> Vec<std::net::SocketAddr> {
        self.listen.iter().filter_map(|a| a.parse().ok()).collect()
    }

    /// The TLS listen addresses (validated on load).
    pub fn listen_tls_addrs(&self) -> Vec<std::net::SocketAddr> {
        self.listen_tls.iter().filter_map(|a| a.parse().ok()).collect()
    }

    /// Every address is `ADDRESS:PORT` with a port, and none is listed
    /// twice, within a list or across `listen` and `listen_tls`.
    fn validate(&self) -> Result<(), (String, String)> {
        let bad = |field: &str, problem: String| Err((field.to_string(), problem));
        let mut seen = std::collections::HashSet::new();
        let lists = [("listen", &self.listen, "80"), ("listen_tls", &self.listen_tls, "443")];
        for (name, list, port) in lists {
            for (i, addr) in list.iter().enumerate() {
                let field = format!("http.{name}[{i}]");
                match addr.parse::<std::net::SocketAddr>() {
                    Err(_) => return bad(&field, format!("{addr:?} is not ADDRESS:PORT (e.g. 198.51.100.1:{port})")),
                    Ok(a) if a.port() == 0 => return bad(&field, format!("{addr:?} needs a port")),
                    Ok(a) if !seen.insert(a) => return bad(&field, format!("{addr:?} is listed twice")),
                    Ok(_) => {}
                }
            }
        }
        if !["combined", "json", "off"].contains(&self.access_log_format()) {
            return bad("http.access_log", format!("{:?} is not combined, json or off", self.access_log_format()));
        }
        if self.access_log_dir.as_ref().is_some_and(|d| !d.is_absolute()) {
            return bad("http.access_log_dir", "must be an absolute path".to_string());
        }
        if !(1..=300).contains(&self.header_timeout_secs) {
            return bad("http.header_timeout_secs", format!("{} is not between 1 and 300", self.header_timeout_secs));
        }
        if !(1..=3600).contains(&self.drain_secs) {
            return bad("http.drain_secs", format!("{} is not between 1 and 3600", self.drain_secs));
        }
        if !(1..=65536).contains(&self.cache_mib) {
            return bad("http.cache_mib", format!("{} is not between 1 and 65536", self.cache_mib));
        }
        self.validate_acme()
    }

    /// The directory is an https URL; the contact an e-mail address; the
    /// root a readable PEM certificate; HTTP-01 needs a plain listener.
    fn validate_acme(&self) -> Result<(), (String, String)> {
        let bad = |field: &str, problem: String| Err((field.to_string(), problem));
        let Some(dir) = &self.acme_directory else {
            for (field, set) in
                [("http.acme_contact", self.acme_contact.is_some()), ("http.acme_ca_root", self.acme_ca_root.is_some())]
            {
                if set {
                    return bad(field, "needs http.acme_directory".to_string());
                }
            }
            return Ok(());
        };
        let host = dir.strip_prefix("https://").map(|r| r.split(['/', '?', '#']).next().unwrap_or(""));
        if host.is_none_or(|h| h.is_empty()) || dir.chars().any(char::is_whitespace) {
            return bad("http.acme_directory", format!("{dir:?} is not an https:// URL (RFC 8555 requires HTTPS)"));
        }
        if self.listen.is_empty() {
            return bad(
                "http.acme_directory",
                "HTTP-01 is answered on http.listen: name a plain listener (port 80)".to_string(),
            );
        }
        if let Some(c) = &self.acme_contact {
            let (user, domain) = c.split_once('@').unwrap_or(("", ""));
            let clean = !c.chars().any(|ch| ch.is_whitespace() || ch.is_control()) && !domain.contains('@');
            if user.is_empty() || !domain.contains('.') || !clean || c.len() > 254 {
                return bad(
                    "http.acme_contact",
                    format!("{c:?} is not an e-mail address (e.g. hostmaster@example.com)"),
                );
            }
        }
        if let Some(root) = &self.acme_ca_root {
            match std::fs::read_to_string(root) {
                Err(e) => return bad("http.acme_ca_root", format!("cannot read {}: {e}", root.display())),
                Ok(pem) if !pem.contains("-----BEGIN CERTIFICATE-----") => {
                    return bad("http.acme_ca_root", format!("{} holds no PEM certificate", root.display()))
                }
                Ok(_) => {}
            }
        }
        Ok(())
    }
}

/// The SSH/SFTP proxy (issue #11). Customer keys are declared through the
/// API; where it listens is the node operator's decision.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SshConfig {
    /// `ADDRESS:PORT` to accept SSH on (e.g. `203.0.113.10:22`); empty: the
    /// proxy is off.
    #[serde(default)]
    pub listen: Vec<String>,
    /// The account the proxy logs in as on the container's sshd.
    #[serde(default = "default_upstream_user")]
    pub upstream_user: String,
    /// Concurrent sessions per customer; a login beyond is refused.
    #[serde(default = "default_max_sessions")]
    pub max_sessions_per_customer: usize,
    /// Seconds a connection has to authenticate (OpenSSH's LoginGraceTime).
    #[serde(default = "default_login_grace")]
    pub login_grace_secs: u64,
    /// Seconds without channel data either way after which a session is
    /// closed (keepalives do not count); 0: never.
    #[serde(default)]
    pub idle_timeout_secs: u64,
    /// Format of the per-customer session logs (one line per session or
    /// refused attempt of a known customer's key): `text` (default,
    /// logfmt), `json` or `off`.
    #[serde(default)]
    pub access_log: Option<String>,
    /// Where they go (`<customer>.log`); default `<state_dir>/log/ssh`.
    #[serde(default)]
    pub access_log_dir: Option<std::path::PathBuf>,
    /// Ciphers offered to customers' clients: `fast` (default) offers an
    /// OpenSSH client (6.2 or later, told by its banner) AES-GCM only,
    /// which it would otherwise rank below ChaCha20 and AES-CTR, at about
    /// three times the proxy's CPU per byte; `compatible` offers every
    /// client AES-GCM and AES-CTR, for OpenSSH clients configured with
    /// CTR ciphers only.
    #[serde(default)]
    pub ciphers: SshCiphers,
}

/// See [`SshConfig::ciphers`].
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SshCiphers {
    #[default]
    Fast,
    Compatible,
}

impl Default for SshConfig {
    fn default() -> Self {
        SshConfig {
            listen: Vec::new(),
            upstream_user: default_upstream_user(),
            max_sessions_per_customer: default_max_sessions(),
            login_grace_secs: default_login_grace(),
            idle_timeout_secs: 0,
            access_log: None,
            access_log_dir: None,
            ciphers: SshCiphers::Fast,
        }
    }
}

fn default_max_sessions() -> usize {
    100
}

fn default_login_grace() -> u64 {
    30
}

fn default_upstream_user() -> String {
    "root".into()
}

impl SshConfig {
    /// The per-customer session log format (validated on load).
    pub fn access_log_format(&self) -> &str {
        self.access_log.as_deref().unwrap_or("text")
    }

    /// The listen addresses (validated on load, so none is dropped here).
    pub fn listen_addrs(&self) -> Vec<std::net::SocketAddr> {
        self.listen.iter().filter_map(|a| a.parse().ok()).collect()
    }
}

/// The firewall: where its rules files are.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FirewallConfig {
    /// Directory of `*.rules` files, watched and applied on change. No
    /// directory: no firewall.
    pub rules_dir: Option<PathBuf>,
}

/// Customer IPs: where they may come from and how they are announced.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct IpConfig {
    /// Prefixes customer IPs are assigned from, e.g. "203.0.113.0/24".
    #[serde(default)]
    pub pools: Vec<String>,
    /// Interface the owning node puts customer IPs on (default: the first uplink).
    pub interface: Option<String>,
    /// Gratuitous ARPs / unsolicited neighbour advertisements per takeover.
    #[serde(default = "default_announce_count")]
    pub announce_count: u32,
    /// Milliseconds between announcements.
    #[serde(default = "default_announce_interval_ms")]
    pub announce_interval_ms: u32,
}

impl Default for IpConfig {
    fn default() -> Self {
        IpConfig {
            pools: Vec::new(),
            interface: None,
            announce_count: default_announce_count(),
            announce_interval_ms: default_announce_interval_ms(),
        }
    }
}

fn default_announce_count() -> u32 {
    3
}
fn default_announce_interval_ms() -> u32 {
    200
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Unix socket of the control API (created 0600).
    #[serde(default = "default_socket")]
    pub socket: PathBuf,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig { socket: default_socket() }
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    #[default]
    Auto,
    Native,
    Generic,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DataplaneConfig {
    /// bpffs directory for pins; each node uses `<pin_root>/<node_name>/`.
    #[serde(default = "default_pin_root")]
    pub pin_root: PathBuf,
    /// Interfaces facing the network (XDP).
    pub uplinks: Vec<String>,
    /// Host-side veths of containers (TC).
    #[serde(default)]
    pub container_interfaces: Vec<String>,
    #[serde(default)]
    pub xdp_mode: XdpMode,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    #[serde(default)]
    pub format: LogFormat,
    #[serde(default = "default_level")]
    pub level: String,
    /// Remote shipping to a syslog receiver over TLS; none by default.
    #[serde(default)]
    pub syslog: Option<SyslogConfig>,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { format: LogFormat::Text, level: default_level(), syslog: None }
    }
}

/// `[log] syslog = { ... }`: where the log goes besides stderr.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SyslogConfig {
    /// The receiver, `ADDRESS:PORT` (6514 is syslog over TLS's port).
    pub address: String,
    /// PEM file of the CA(s) the receiver's certificate must chain to.
    pub ca: PathBuf,
    /// The name the receiver's certificate must carry; by default its
    /// address (an IP address SAN).
    #[serde(default)]
    pub server_name: Option<String>,
    /// Client certificate and key (PEM) for receivers that ask for one.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// Bound of the on-disk spool (MiB); beyond it the oldest lines go,
    /// and a line says how many.
    #[serde(default = "default_spool_max_mb")]
    pub spool_max_mb: u64,
    /// APP-NAME of the messages.
    #[serde(default = "default_app_name")]
    pub app_name: String,
}

fn default_spool_max_mb() -> u64 {
    64
}
fn default_app_name() -> String {
    "hostgate".into()
}

fn default_state_dir() -> PathBuf {
    "/var/lib/hostgate".into()
}
fn default_socket() -> PathBuf {
    DEFAULT_SOCKET.into()
}
fn default_pin_root() -> PathBuf {
    "/sys/fs/bpf/hostgate".into()
}
fn default_level() -> String {
    "info".into()
}

impl Config {
    /// Reads, parses and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        Self::parse(&text, path)
    }

    /// Parses and validates `text`; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text)
            .map_err(|e| ConfigError::Parse { path: path.into(), message: one_line_toml_error(&e) })?;
        config.validate().map_err(|(field, problem)| ConfigError::Invalid { path: path.into(), field, problem })?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), (String, String)> {
        let bad = |field: &str, problem: String| Err((field.to_string(), problem));
        if !valid_node_name(&self.node_name) {
            return bad(
                "node_name",
                format!("{:?} must be 1-63 characters of a-z, 0-9 and '-', not starting with '-'", self.node_name),
            );
        }
        for (field, path) in [
            ("state_dir", &self.state_dir),
            ("api.socket", &self.api.socket),
            ("dataplane.pin_root", &self.dataplane.pin_root),
        ] {
            if !path.is_absolute() {
                return bad(field, format!("{} must be an absolute path", path.display()));
            }
        }
        for family_v4 in [true, false] {
            if self.node_addresses.iter().filter(|a| a.is_ipv4() == family_v4).count() > 1 {
                return bad("node_addresses", "at most one address per family".into());
            }
        }
        let dp = &self.dataplane;
        if dp.uplinks.is_empty() {
            return bad("dataplane.uplinks", "at least one uplink interface is required".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        let lists = [("dataplane.uplinks", &dp.uplinks), ("dataplane.container_interfaces", &dp.container_interfaces)];
        for (list, names) in lists {
            for (i, name) in names.iter().enumerate() {
                let field = format!("{list}[{i}]");
                if !valid_ifname(name) {
                    return bad(&field, format!("{name:?} is not a valid interface name"));
                }
                if !seen.insert(name) {
                    return bad(&field, format!("{name:?} is listed twice"));
                }
            }
        }
        for (i, name) in self.dhcp.relay_interfaces.iter().enumerate() {
            if !valid_ifname(name) {
                return bad(&format!("dhcp.relay_interfaces[{i}]"), format!("{name:?} is not a valid interface name"));
            }
        }
        self.dns.validate()?;
        self.http.validate()?;
        check_listen("ssh.listen", &self.ssh.listen, "203.0.113.10:22")?;
        let user = &self.ssh.upstream_user;
        if user.is_empty() || !user.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
            return bad("ssh.upstream_user", format!("{user:?} is not a user name"));
        }
        if self.ssh.max_sessions_per_customer == 0 {
            return bad("ssh.max_sessions_per_customer", "0 would refuse every login".into());
        }
        if !(1..=600).contains(&self.ssh.login_grace_secs) {
            return bad("ssh.login_grace_secs", format!("{} is not within 1..=600", self.ssh.login_grace_secs));
        }
        if self.ssh.idle_timeout_secs > 7 * 86400 {
            return bad(
                "ssh.idle_timeout_secs",
                format!("{} is over a week; 0 turns the idle timeout off", self.ssh.idle_timeout_secs),
            );
        }
        check_service_log("ssh", self.ssh.access_log_format(), self.ssh.access_log_dir.as_deref())?;
        check_service_log("dns", self.dns.access_log_format(), self.dns.access_log_dir.as_deref())?;
        for (i, pool) in self.ip.pools.iter().enumerate() {
            if let Err(problem) = check_cidr(pool) {
                return bad(&format!("ip.pools[{i}]"), problem);
            }
        }
        if let Some(iface) = &self.ip.interface {
            if !valid_ifname(iface) {
                return bad("ip.interface", format!("{iface:?} is not a valid interface name"));
            }
        }
        if let Some(dir) = &self.firewall.rules_dir {
            if !dir.is_absolute() {
                return bad("firewall.rules_dir", format!("{} must be an absolute path", dir.display()));
            }
        }
        let cluster = &self.cluster;
        for (i, url) in cluster.etcd_endpoints.iter().enumerate() {
            if let Err(problem) = check_endpoint(url) {
                return bad(&format!("cluster.etcd_endpoints[{i}]"), problem);
            }
        }
        if cluster.key_prefix.is_empty() || !cluster.key_prefix.ends_with('/') {
            return bad("cluster.key_prefix", format!("{:?} must be non-empty and end with '/'", cluster.key_prefix));
        }
        if !(1..=60).contains(&cluster.lease_ttl_secs) {
            return bad("cluster.lease_ttl_secs", format!("{} is not between 1 and 60", cluster.lease_ttl_secs));
        }
        if !(1..=1000).contains(&cluster.weight) {
            return bad("cluster.weight", format!("{} is not between 1 and 1000", cluster.weight));
        }
        if self.ip.announce_count > 100 {
            return bad("ip.announce_count", format!("{} is more than 100", self.ip.announce_count));
        }
        if let Err(e) = self.log.level.parse::<LevelFilterCheck>() {
            return bad("log.level", e.to_string());
        }
        if let Some(s) = &self.log.syslog {
            if let Err((field, problem)) = s.check() {
                return bad(&format!("log.syslog.{field}"), problem);
            }
        }
        Ok(())
    }
}

impl SyslogConfig {
    /// Field and problem of the first thing wrong.
    fn check(&self) -> Result<(), (&'static str, String)> {
        if self.address.parse::<std::net::SocketAddr>().is_err() {
            return Err(("address", format!("{:?} is not ADDRESS:PORT (e.g. 203.0.113.5:6514)", self.address)));
        }
        // Read now, so that a wrong path is found at start-up, not when
        // the first line is shipped.
        match std::fs::read_to_string(&self.ca) {
            Ok(pem) if pem.contains("-----BEGIN CERTIFICATE-----") => {}
            Ok(_) => return Err(("ca", format!("{} holds no PEM certificate", self.ca.display()))),
            Err(e) => return Err(("ca", format!("cannot read {}: {e}", self.ca.display()))),
        }
        if self.cert.is_some() != self.key.is_some() {
            return Err(("cert", "cert and key go together (client authentication)".into()));
        }
        if let Some(name) = &self.server_name {
            if name.is_empty() || name.chars().any(|c| c.is_whitespace()) {
                return Err(("server_name", format!("{name:?} is not a host name")));
            }
        }
        if !(1..=65536).contains(&self.spool_max_mb) {
            return Err(("spool_max_mb", format!("{} is not between 1 and 65536", self.spool_max_mb)));
        }
        // RFC 5424 APP-NAME: 1-48 printable US-ASCII characters.
        if self.app_name.is_empty()
            || self.app_name.len() > 48
            || !self.app_name.bytes().all(|b| (33..=126).contains(&b))
        {
            return Err(("app_name", format!("{:?} is not 1-48 printable ASCII characters", self.app_name)));
        }
        Ok(())
    }
}

/// `ADDRESS/LENGTH` with no host bits set.
fn check_cidr(s: &str) -> Result<(), String> {
    let bad = || format!("{s:?} is not ADDRESS/LENGTH (e.g. 203.0.113.0/24)");
    let (a, l) = s.split_once('/').ok_or_else(bad)?;
    let addr: std::net::IpAddr = a.parse().map_err(|_| bad())?;
    let len: u32 = l.parse().map_err(|_| bad())?;
    let host_bits_clear = match addr {
        std::net::IpAddr::V4(a) if len <= 32 => len == 32 || u32::from(a) << len == 0,
        std::net::IpAddr::V6(a) if len <= 128 => len == 128 || u128::from(a) << len == 0,
        _ => return Err(bad()),
    };
    if !host_bits_clear {
        return Err(format!("{s:?} has host bits set"));
    }
    Ok(())
}

/// A list of `ADDRESS:PORT` listen addresses: each parses, has a port and
/// appears once. Errors name `list[i]`.
fn check_listen(list: &str, addrs: &[String], example: &str) -> Result<(), (String, String)> {
    let bad = |field: &str, problem: String| Err((field.to_string(), problem));
    for (i, addr) in addrs.iter().enumerate() {
        let field = format!("{list}[{i}]");
        match addr.parse::<std::net::SocketAddr>() {
            Err(_) => return bad(&field, format!("{addr:?} is not ADDRESS:PORT (e.g. {example})")),
            Ok(a) if a.port() == 0 => return bad(&field, format!("{addr:?} needs a port")),
            Ok(_) if addrs[..i].contains(addr) => return bad(&field, format!("{addr:?} is listed twice")),
            Ok(_) => {}
        }
    }
    Ok(())
}

/// `http://HOST:PORT` or `https://HOST:PORT`.
fn check_endpoint(url: &str) -> Result<(), String> {
    let bad = || format!("{url:?} is not http://HOST:PORT (an etcd client URL)");
    let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://")).ok_or_else(bad)?;
    let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || host.contains('/') || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(bad());
    }
    Ok(())
}

impl Config {
    /// Whether this node is part of an etcd cluster.
    pub fn clustered(&self) -> bool {
        !self.cluster.etcd_endpoints.is_empty()
    }

    /// The interface customer IPs go on.
    pub fn ip_interface(&self) -> &str {
        self.ip.interface.as_deref().or(self.dataplane.uplinks.first().map(String::as_str)).unwrap_or("lo")
    }
}

/// Linux's rule for interface names.
fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && !name.bytes().any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace())
}

/// DNS-label-like, so a node name works in pin paths, keys and DNS.
fn valid_node_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && !name.starts_with('-')
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Checks a log filter's shape: comma-separated `level` or `target=level`.
struct LevelFilterCheck;

#[derive(Debug)]
struct LevelError(String);

impl fmt::Display for LevelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} is not a level (error, warn, info, debug, trace, off)", self.0)
    }
}

impl std::str::FromStr for LevelFilterCheck {
    type Err = LevelError;
    fn from_str(s: &str) -> Result<Self, LevelError> {
        const LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];
        for directive in s.split(',').map(str::trim) {
            let level = directive.rsplit_once('=').map_or(directive, |(_, l)| l);
            if !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
                return Err(LevelError(level.to_string()));
            }
        }
        Ok(LevelFilterCheck)
    }
}

/// toml's messages span several lines (with a source excerpt); keep the
/// message and its "line L, column C" location on one line.
fn one_line_toml_error(e: &toml::de::Error) -> String {
    let message = e.message().trim().to_string();
    let text = e.to_string();
    match text.lines().next().and_then(|l| l.strip_prefix("TOML parse error at ")) {
        Some(location) => format!("{message} (at {location})"),
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
node_name = "node1"
[dataplane]
uplinks = ["eth0"]
container_interfaces = ["veth1", "veth2"]
"#;

    fn err(text: &str) -> String {
        Config::parse(text, Path::new("hg.toml")).expect_err("must be rejected").to_string()
    }

    #[test]
    fn syslog_fields_are_checked() {
        let dir = tempfile::tempdir().expect("dir");
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").expect("write");
        let with = |fields: &str| format!("{GOOD}\n[log]\nsyslog = {{ {fields} }}\n");
        let ok = Config::parse(&with(&format!("address = \"203.0.113.5:6514\", ca = {:?}", ca)), Path::new("hg.toml"))
            .expect("valid");
        let s = ok.log.syslog.expect("syslog");
        assert_eq!((s.spool_max_mb, s.app_name.as_str(), s.server_name), (64, "hostgate", None));
        assert!(err(&with(&format!("address = \"logs:6514\", ca = {ca:?}"))).contains("log.syslog.address"));
        assert!(err(&with("address = \"203.0.113.5:6514\", ca = \"/nonexistent/ca.pem\""))
            .contains("log.syslog.ca: cannot read"));
        assert!(err(&with(&format!("address = \"203.0.113.5:6514\", ca = {ca:?}, spool_max_mb = 0")))
            .contains("log.syslog.spool_max_mb"));
        assert!(err(&with(&format!("address = \"203.0.113.5:6514\", ca = {ca:?}, cert = \"/c.pem\"")))
            .contains("log.syslog.cert"));
        assert!(err(&with(&format!("address = \"203.0.113.5:6514\", ca = {ca:?}, colour = 1"))).contains("colour"));
    }

    #[test]
    fn cluster_fields_are_checked() {
        let with = |extra: &str| format!("{GOOD}\n[cluster]\n{extra}\n");
        assert_eq!(
            err(&with("etcd_endpoints = [\"198.18.1.254:2379\"]")),
            "hg.toml: cluster.etcd_endpoints[0]: \"198.18.1.254:2379\" is not http://HOST:PORT (an etcd client URL)"
        );
        assert_eq!(err(&with("lease_ttl_secs = 0")), "hg.toml: cluster.lease_ttl_secs: 0 is not between 1 and 60");
        assert_eq!(err(&with("weight = 0")), "hg.toml: cluster.weight: 0 is not between 1 and 1000");
        let c = Config::parse(&with("etcd_endpoints = [\"http://198.18.1.254:2379\"]"), Path::new("hg.toml"))
            .expect("valid");
        assert!(c.clustered());
        assert_eq!((c.cluster.lease_ttl_secs, c.cluster.key_prefix.as_str()), (1, "hostgate/"));
    }

    #[test]
    fn http_listen_is_checked() {
        let with = |extra: &str| format!("{GOOD}\n[http]\n{extra}\n");
        assert_eq!(
            err(&with("listen = [\"198.51.100.1\"]")),
            "hg.toml: http.listen[0]: \"198.51.100.1\" is not ADDRESS:PORT (e.g. 198.51.100.1:80)"
        );
        assert_eq!(
            err(&with("listen = [\"198.51.100.1:80\", \"198.51.100.1:80\"]")),
            "hg.toml: http.listen[1]: \"198.51.100.1:80\" is listed twice"
        );
        let c = Config::parse(&with("listen = [\"[2001:db8::1]:80\"]"), Path::new("hg.toml")).expect("valid");
        assert_eq!(c.http.listen_addrs(), vec!["[2001:db8::1]:80".parse().expect("addr")]);
        assert!(Config::parse(GOOD, Path::new("hg.toml")).expect("valid").http.listen.is_empty(), "off by default");
        assert_eq!(
            err(&with("listen_tls = [\"198.51.100.1:https\"]")),
            "hg.toml: http.listen_tls[0]: \"198.51.100.1:https\" is not ADDRESS:PORT (e.g. 198.51.100.1:443)"
        );
        assert_eq!(
            err(&with("listen = [\"198.51.100.1:443\"]\nlisten_tls = [\"198.51.100.1:443\"]")),
            "hg.toml: http.listen_tls[0]: \"198.51.100.1:443\" is listed twice"
        );
        let c = Config::parse(&with("listen_tls = [\"198.51.100.1:443\"]"), Path::new("hg.toml")).expect("valid");
        assert_eq!(c.http.listen_tls_addrs(), vec!["198.51.100.1:443".parse().expect("addr")]);
        assert_eq!(
            err(&with("access_log = \"xml\"")),
            "hg.toml: http.access_log: \"xml\" is not combined, json or off"
        );
        assert_eq!(err(&with("access_log_dir = \"logs\"")), "hg.toml: http.access_log_dir: must be an absolute path");
        let c = Config::parse(&with("access_log = \"json\""), Path::new("hg.toml")).expect("valid");
        assert_eq!(c.http.access_log_format(), "json");
    }

    #[test]
    fn service_logs_are_checked() {
        for service in ["ssh", "dns"] {
            let with = |extra: &str| format!("{GOOD}\n[{service}]\n{extra}\n");
            assert_eq!(
                err(&with("access_log = \"combined\"")),
                format!("hg.toml: {service}.access_log: \"combined\" is not text, json or off")
            );
            assert_eq!(
                err(&with("access_log_dir = \"log\"")),
                format!("hg.toml: {service}.access_log_dir: must be an absolute path")
            );
            let c = Config::parse(&with("access_log = \"json\""), Path::new("hg.toml")).expect("valid");
            assert_eq!((c.ssh.access_log_format() == "json") as u8 + (c.dns.access_log_format() == "json") as u8, 1);
        }
        let c = Config::parse(GOOD, Path::new("hg.toml")).expect("valid");
        assert_eq!((c.ssh.access_log_format(), c.dns.access_log_format()), ("text", "text"), "defaults");
    }

    #[test]
    fn http_acme_fields_are_checked() {
        let dir = tempfile::tempdir().expect("dir");
        let root = dir.path().join("root.pem");
        std::fs::write(&root, "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").expect("write");
        let with = |extra: &str| format!("{GOOD}\n[http]\nlisten = [\"198.51.100.1:80\"]\n{extra}\n");
        let url = "acme_directory = \"https://198.18.0.2:14000/dir\"";
        let c = Config::parse(
            &with(&format!("{url}\nacme_contact = \"hostmaster@example.com\"\nacme_ca_root = {root:?}")),
            Path::new("hg.toml"),
        )
        .expect("valid");
        assert_eq!(c.http.acme_directory.as_deref(), Some("https://198.18.0.2:14000/dir"));
        assert_eq!(
            err(&with("acme_directory = \"http://198.18.0.2/dir\"")),
            "hg.toml: http.acme_directory: \"http://198.18.0.2/dir\" is not an https:// URL (RFC 8555 requires HTTPS)"
        );
        assert!(err(&with(&format!("{url}\nacme_contact = \"nobody\""))).starts_with("hg.toml: http.acme_contact:"));
        assert!(err(&with(&format!("{url}\nacme_ca_root = \"/nonexistent.pem\"")))
            .starts_with("hg.toml: http.acme_ca_root: cannot read /nonexistent.pem"));
        assert_eq!(
            err(&with("acme_contact = \"a@example.com\"")),
            "hg.toml: http.acme_contact: needs http.acme_directory"
        );
        let no_listener = format!("{GOOD}\n[http]\n{url}\n");
        assert!(err(&no_listener).contains("http.acme_directory: HTTP-01 is answered on http.listen"));
    }

    #[test]
    fn ssh_listen_is_checked() {
        let with = |extra: &str| format!("{GOOD}\n[ssh]\n{extra}\n");
        assert_eq!(
            err(&with("listen = [\"203.0.113.10\"]")),
            "hg.toml: ssh.listen[0]: \"203.0.113.10\" is not ADDRESS:PORT (e.g. 203.0.113.10:22)"
        );
        assert!(err(&with("listn = []")).contains("unknown field `listn`"), "field names are checked");
        let ciphers = err(&with("ciphers = \"slow\""));
        assert!(ciphers.contains("unknown variant `slow`, expected `fast` or `compatible`"), "{ciphers}");
        let compatible = Config::parse(&with("ciphers = \"compatible\""), Path::new("hg.toml")).expect("valid");
        assert_eq!(compatible.ssh.ciphers, SshCiphers::Compatible);
        assert_eq!(
            err(&with("max_sessions_per_customer = 0")),
            "hg.toml: ssh.max_sessions_per_customer: 0 would refuse every login"
        );
        assert_eq!(err(&with("login_grace_secs = 0")), "hg.toml: ssh.login_grace_secs: 0 is not within 1..=600");
        assert_eq!(
            err(&with("idle_timeout_secs = 9999999")),
            "hg.toml: ssh.idle_timeout_secs: 9999999 is over a week; 0 turns the idle timeout off"
        );
        let c = Config::parse(&with("listen = [\"[2001:db8::1]:22\"]"), Path::new("hg.toml")).expect("valid");
        assert_eq!((c.ssh.login_grace_secs, c.ssh.idle_timeout_secs), (30, 0), "defaults");
        assert_eq!(c.ssh.listen_addrs(), vec!["[2001:db8::1]:22".parse().expect("addr")]);
        assert!(Config::parse(GOOD, Path::new("hg.toml")).expect("valid").ssh.listen.is_empty(), "off by default");
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::parse(GOOD, Path::new("hg.toml")).expect("valid");
        assert_eq!(c.api.socket, PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(c.dataplane.pin_root, PathBuf::from("/sys/fs/bpf/hostgate"));
        assert_eq!(c.dataplane.xdp_mode, XdpMode::Auto);
        assert_eq!(c.log.format, LogFormat::Text);
    }

    #[test]
    fn unknown_field_names_field_and_line() {
        let e = err("node_name = \"n\"\n[dataplane]\nuplinks = [\"eth0\"]\nuplink = \"x\"\n");
        assert!(e.starts_with("hg.toml: unknown field `uplink`"), "{e}");
        assert!(e.contains("line 4"), "{e}");
    }

    #[test]
    fn wrong_type_is_located() {
        let e = err("node_name = \"n\"\n[dataplane]\nuplinks = \"eth0\"\n");
        assert!(e.contains("line 3"), "{e}");
        assert!(e.contains("sequence"), "{e}");
    }

    #[test]
    fn bad_values_name_the_field() {
        assert_eq!(
            err("node_name = \"n\"\n[dataplane]\nuplinks = [\"eth0\", \"a/b\"]\n"),
            "hg.toml: dataplane.uplinks[1]: \"a/b\" is not a valid interface name"
        );
        assert_eq!(
            err("node_name = \"n\"\n[dataplane]\nuplinks = [\"eth0\"]\ncontainer_interfaces = [\"eth0\"]\n"),
            "hg.toml: dataplane.container_interfaces[0]: \"eth0\" is listed twice"
        );
        assert_eq!(
            err("node_name = \"Node_1\"\n[dataplane]\nuplinks = [\"eth0\"]\n"),
            "hg.toml: node_name: \"Node_1\" must be 1-63 characters of a-z, 0-9 and '-', not starting with '-'"
        );
        assert_eq!(
            err("node_name = \"n\"\nstate_dir = \"rel\"\n[dataplane]\nuplinks = [\"eth0\"]\n"),
            "hg.toml: state_dir: rel must be an absolute path"
        );
        assert_eq!(
            err("node_name = \"n\"\n[dataplane]\nuplinks = []\n"),
            "hg.toml: dataplane.uplinks: at least one uplink interface is required"
        );
        assert!(
            err("node_name = \"n\"\n[dataplane]\nuplinks = [\"e\"]\n[log]\nlevel = \"loud\"\n").contains("log.level")
        );
        assert!(err("node_name = \"n\"\n[dataplane]\nuplinks = [\"e\"]\nxdp_mode = \"fast\"\n")
            .contains("unknown variant `fast`"));
    }

    #[test]
    fn dns_fields_are_checked() {
        let base = "node_name = \"n\"\n[dataplane]\nuplinks = [\"e\"]\n[dns]\n";
        let ok =
            Config::parse(&format!("{base}listen = [\"198.51.100.53:53\", \"[2001:db8::53]:53\"]\n"), Path::new("x"))
                .expect("valid");
        assert_eq!((ok.dns.listen_addrs().len(), ok.dns.workers, ok.dns.tcp_idle_secs), (2, 2, 10));
        assert_eq!(
            err(&format!("{base}listen = [\"198.51.100.53:53\", \"198.51.100.53\"]\n")),
            "hg.toml: dns.listen[1]: \"198.51.100.53\" is not ADDRESS:PORT (e.g. \"198.51.100.1:53\", \"[2001:db8::1]:53\")"
        );
        assert!(err(&format!("{base}workers = 0\n")).starts_with("hg.toml: dns.workers:"));
        assert!(err(&format!("{base}tcp_idle_secs = 0\n")).starts_with("hg.toml: dns.tcp_idle_secs:"));
        assert!(!ok.dns.query_log, "off by default");
        assert!(err(&format!("{base}query_log = 1\n")).contains("expected a boolean (at line 5"));
        let r = Config::parse(
            &format!("{base}listen = [\"198.51.100.53:53\"]\nupstreams = [\"203.0.113.53\", \"[2001:db8::53]:5353\"]\nresolver_clients = [\"198.51.100.0/24\", \"2001:db8:51::/48\"]\n"),
            Path::new("x"),
        )
        .expect("valid");
        assert_eq!(
            r.dns.upstream_addrs(),
            ["203.0.113.53:53".parse().unwrap(), "[2001:db8::53]:5353".parse().unwrap()]
        );
        assert_eq!(r.dns.resolver_client_prefixes().len(), 2);
        assert_eq!(r.dns.cache_entries, 10_000);
        assert!(err(&format!("{base}upstreams = [\"resolver\"]\n")).starts_with("hg.toml: dns.upstreams[0]:"));
        assert!(
            err(&format!("{base}listen = [\"198.51.100.53:53\"]\nupstreams = [\"198.51.100.53\"]\n")).contains("loop")
        );
        assert!(err(&format!("{base}upstreams = [\"203.0.113.53\"]\nresolver_clients = [\"198.51.100.1/24\"]\n"))
            .starts_with("hg.toml: dns.resolver_clients[0]:"));
        assert!(err(&format!("{base}resolver_clients = [\"198.51.100.0/24\"]\n")).contains("no dns.upstreams"));
    }

    #[test]
    fn message_is_one_line() {
        let e = err("node_name = \"n\"\n[dataplane]\nuplinks = [\"eth0\"]\nuplink = \"x\"\n");
        assert_eq!(e.lines().count(), 1, "{e}");
        eprintln!("{e}");
    }

    #[test]
    fn ip_pools_are_checked() {
        let base = "node_name = \"n\"\n[dataplane]\nuplinks = [\"eth0\"]\n[ip]\n";
        assert_eq!(
            err(&format!("{base}pools = [\"203.0.113.0/24\", \"203.0.113.1/24\"]\n")),
            "hg.toml: ip.pools[1]: \"203.0.113.1/24\" has host bits set"
        );
        assert!(err(&format!("{base}pools = [\"nope\"]\n")).contains("ip.pools[0]"));
        let ok = Config::parse(&format!("{base}pools = [\"203.0.113.0/24\", \"2001:db8:113::/48\"]\n"), Path::new("x"));
        assert_eq!(ok.expect("valid").ip_interface(), "eth0");
    }

    #[test]
    fn missing_section_is_reported() {
        assert!(err("node_name = \"n\"\n").contains("missing field `dataplane`"));
    }
}

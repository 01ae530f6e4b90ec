//! The control API between the daemon and its clients (CLI, tests, tools):
//! versioned JSON over HTTP/1.1 on a unix socket. Types live here once;
//! the daemon serves them, [`Client`] fetches them.
//!
//! | method | path                    | body / answer                 |
//! |--------|-------------------------|-------------------------------|
//! | GET    | /v1/status              | [`Status`]                    |
//! | GET    | /v1/dataplane/counters  | `Vec<`[`CounterRow`]`>`       |
//! | POST   | /v1/dataplane/detach    | [`DetachResponse`]            |
//!
//! Errors answer with a non-2xx status and an [`ApiError`] body.

mod client;

use serde::{Deserialize, Serialize};

pub use crate::client::{Client, ClientError};

pub const STATUS: &str = "/v1/status";
/// A stream of data-plane decisions, one JSON [`MonitorEvent`] a line.
pub const MONITOR: &str = "/v1/monitor";

/// One decision of the kernel programs (`hostgate monitor`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct MonitorEvent {
    /// Kernel monotonic time of the decision, in nanoseconds.
    pub ts_ns: u64,
    /// `firewall` (a rule dropped or rejected it), `spoof` (anti-spoofing
    /// dropped what a container sent) or `lb` (a new balanced flow).
    pub kind: String,
    /// `drop`, `reject`, `rate-limit` (firewall, spoof) or `balanced` (lb).
    pub verdict: String,
    /// The hook and interface where it was decided.
    pub hook: String,
    pub iface: String,
    pub src: Option<String>,
    pub dst: Option<String>,
    pub sport: u16,
    pub dport: u16,
    /// IP protocol number.
    pub proto: u8,
    /// Firewall events: the rule as `file:line` and its customer.
    #[serde(default)]
    pub rule: Option<String>,
    #[serde(default)]
    pub customer: Option<String>,
    /// Load balancer events: the VIP and the chosen backend.
    #[serde(default)]
    pub vip: Option<String>,
    #[serde(default)]
    pub backend: Option<String>,
}
pub const COUNTERS: &str = "/v1/dataplane/counters";
pub const DETACH: &str = "/v1/dataplane/detach";
/// POST: hand over to a new daemon (as SIGUSR2 does); answers before.
pub const UPGRADE: &str = "/v1/daemon/upgrade";

/// The daemon that accepted an upgrade request, before it hands over.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct UpgradeResponse {
    pub pid: u32,
    /// Seconds since the Unix epoch.
    pub started_at: u64,
}

/// Body of every error answer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApiError {
    pub error: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Status {
    pub node: String,
    pub version: String,
    pub pid: u32,
    /// Seconds since the Unix epoch.
    pub started_at: u64,
    pub store: StoreStatus,
    #[serde(default)]
    pub cluster: ClusterStatus,
    /// Per DHCP network served here, since the daemon started.
    #[serde(default)]
    pub dhcp: Vec<DhcpCounters>,
    /// The authoritative DNS server on this node, since the daemon started.
    #[serde(default)]
    pub dns: DnsStatus,
    /// HTTP proxy requests per vhost and backend, since the daemon started.
    #[serde(default)]
    pub http: Vec<HttpCounters>,
    /// Access log lines dropped because the writer fell behind.
    #[serde(default)]
    pub http_log_dropped: u64,
    /// Plain-HTTP connections closed with 408: no complete request head
    /// within `[http] header_timeout_secs` (slow clients, slowloris).
    #[serde(default)]
    pub http_header_timeouts: u64,
    /// HTTP/1.1 requests the proxy's fast path forwarded itself.
    #[serde(default)]
    pub http_fast_requests: u64,
    /// HTTP/1.1 connections handed to pingora at a request the fast path
    /// does not take (bodies, upgrades, caching vhosts, ...).
    #[serde(default)]
    pub http_pingora_handovers: u64,
    /// GOAWAY frames the proxy sent on HTTP/2 connections, by error name
    /// (`ENHANCE_YOUR_CALM`: a rapid-reset flood cut off; `NO_ERROR`: a
    /// graceful close).
    #[serde(default)]
    pub http_h2_goaways: std::collections::BTreeMap<String, u64>,
    pub dataplane: DataplaneStatus,
}

/// What the DNS server serves and what it answered (all workers, UDP and
/// TCP, since the daemon started).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct DnsStatus {
    /// `ADDRESS:PORT` served (empty: DNS is off).
    pub listen: Vec<String>,
    /// Why it is not serving (e.g. an address it cannot bind), while not.
    pub error: Option<String>,
    /// Zones in the catalog being answered from.
    pub zones: u64,
    /// The store revision of `dns/` that catalog was built at.
    pub revision: u64,
    pub queries: u64,
    pub udp: u64,
    pub tcp: u64,
    pub noerror: u64,
    pub nxdomain: u64,
    /// NOERROR without data (included in `noerror`).
    pub nodata: u64,
    /// Delegations answered (included in `noerror`).
    pub referrals: u64,
    pub refused: u64,
    pub formerr: u64,
    pub notimp: u64,
    pub servfail: u64,
    pub badvers: u64,
    /// Replies sent with TC=1 because they did not fit.
    pub truncated: u64,
    /// Not answered: too short, a response, or rate-limited.
    pub dropped: u64,
    /// Response rate limiting: dropped, and sent as an empty TC=1 reply.
    pub rate_limited_dropped: u64,
    pub rate_limited_slipped: u64,
    /// TCP connections closed at once because the cap was reached.
    pub tcp_rejected: u64,
    /// TCP connections closed for idling.
    pub tcp_idle_closed: u64,
    /// AXFR/IXFR requests answered over TCP (refusals included).
    #[serde(default)]
    pub transfers: u64,
    /// NOTIFYs received, and sent (each try counts).
    #[serde(default)]
    pub notifies_in: u64,
    #[serde(default)]
    pub notifies_out: u64,
    /// NOTIFYs that no try got an answer to.
    #[serde(default)]
    pub notifies_unanswered: u64,
    /// The resolver for containers: queries sent to an upstream, answered
    /// from the cache, answered SERVFAIL (no upstream answered, or too many
    /// in flight), and responses in the cache.
    #[serde(default)]
    pub forwarded: u64,
    #[serde(default)]
    pub cache_hits: u64,
    #[serde(default)]
    pub forward_failed: u64,
    #[serde(default)]
    pub cached: u64,
}

/// What the DHCP server did for one network.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DhcpCounters {
    pub network: String,
    pub offers: u64,
    pub acks: u64,
    pub naks: u64,
    pub declines: u64,
    pub releases: u64,
    #[serde(default)]
    pub informs: u64,
    /// Packets not answered: malformed, rate-limited, pool exhausted.
    pub drops: u64,
}

/// This node in its cluster (a cluster of one on the embedded store).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClusterStatus {
    /// Whether the store is etcd, shared with other nodes.
    pub clustered: bool,
    /// joining | live | fenced.
    pub standing: String,
    /// The membership lease, in hex, while live.
    pub lease: Option<String>,
    /// Live members, by name.
    pub members: Vec<String>,
    /// The store revision this node has applied everything up to: equal on
    /// every node once they have converged.
    pub config_revision: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoreStatus {
    pub backend: String,
    pub location: String,
    /// The store's current revision (0 if it does not answer).
    pub revision: u64,
    /// Why the store did not answer, if it did not.
    #[serde(default)]
    pub error: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DataplaneStatus {
    /// Whether this daemon holds an attached data plane.
    pub attached: bool,
    pub pin_dir: String,
    pub attachments: Vec<AttachmentStatus>,
    pub programs: Vec<ProgramStatus>,
    pub maps: Vec<MapStatus>,
    pub counters: Vec<CounterRow>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AttachmentStatus {
    pub interface: String,
    pub ifindex: u32,
    /// `xdp-uplink` or `tc-container`.
    pub hook: String,
    /// `xdp-native`, `xdp-generic` or `tcx-ingress`.
    pub mode: String,
    /// `adopted` (taken over from a previous daemon) or `attached`.
    pub origin: String,
    pub link_id: u32,
    pub program_id: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProgramStatus {
    pub name: String,
    pub id: u32,
    pub verified_instructions: Option<u32>,
    pub pinned: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct MapStatus {
    pub name: String,
    pub id: u32,
    pub max_entries: u32,
    pub pinned: Option<String>,
}

/// Packets and bytes for one (hook, protocol, verdict), summed over CPUs.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CounterRow {
    pub hook: String,
    pub proto: String,
    pub verdict: String,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DetachResponse {
    /// Link pins removed (`<mode>:<interface>`).
    pub links: Vec<String>,
    pub pins_removed: usize,
}

pub const VIPS: &str = "/v1/vips";
pub const VIP_SHOW: &str = "/v1/vips/show";
pub const VIP_REMOVE: &str = "/v1/vips/remove";
pub const BACKENDS: &str = "/v1/backends";
pub const BACKEND_REMOVE: &str = "/v1/backends/remove";

/// `POST /v1/vips`: declare a VIP.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct VipRequest {
    /// `ADDR`, `ADDR/PROTO` or `ADDR:PORT/PROTO`.
    pub vip: String,
    /// Maglev table size (a prime); the default is 65537.
    pub ring_size: Option<u32>,
}

/// `POST /v1/vips/show` and `/v1/vips/remove`: name a VIP.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct VipRef {
    pub vip: String,
}

/// `POST /v1/backends`: add a backend to a VIP.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackendRequest {
    pub vip: String,
    pub addr: String,
    pub port: Option<u16>,
    pub weight: Option<u32>,
    /// `nat` (default) or `dsr`.
    pub mode: Option<String>,
    pub node: Option<String>,
    /// Health check; none means the backend is always taken as healthy.
    #[serde(default)]
    pub check: Option<CheckRequest>,
}

/// A health check as requested.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CheckRequest {
    /// `tcp` or `http:/PATH[:STATUS]`.
    pub probe: String,
    pub port: Option<u16>,
    pub interval_ms: Option<u32>,
    pub timeout_ms: Option<u32>,
    pub rise: Option<u32>,
    pub fall: Option<u32>,
}

/// `POST /v1/backends/remove`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackendRef {
    pub vip: String,
    /// `ADDR` or `ADDR:PORT` (`[V6]:PORT`), as `vip show` lists it.
    pub backend: String,
}

/// Traffic through a VIP or backend since it was created.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Traffic {
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackendView {
    /// `ADDR` or `ADDR:PORT`.
    pub backend: String,
    pub id: u32,
    pub weight: u32,
    pub mode: String,
    pub node: Option<String>,
    /// `healthy`, `unhealthy` or `unchecked`.
    pub health: String,
    pub traffic: Traffic,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct VipView {
    pub vip: String,
    pub id: u32,
    pub ring_size: u32,
    pub backends: Vec<BackendView>,
    pub traffic: Traffic,
    /// Store revision that created or last changed the VIP.
    pub revision: u64,
}

/// Answer to a change: the store revision it was written at, and whether
/// the data plane already applied it when the answer was sent.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Applied<T> {
    pub revision: u64,
    pub applied: bool,
    pub value: T,
}

pub const NODES: &str = "/v1/nodes";
pub const NODE_REMOVE: &str = "/v1/nodes/remove";
pub const NODE_DRAIN: &str = "/v1/nodes/drain";
pub const NODE_UNDRAIN: &str = "/v1/nodes/undrain";

/// A node of the registry (`GET /v1/nodes`, and the body of `POST /v1/nodes`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeView {
    pub name: String,
    /// Underlay addresses, at most one per family.
    pub addresses: Vec<String>,
    /// Whether this is the answering daemon's own node.
    #[serde(default)]
    pub this_node: bool,
    /// "up" while the node holds a membership lease, else "down".
    #[serde(default)]
    pub state: String,
    /// Drained nodes take no customer IPs (`hostgate node drain`).
    #[serde(default)]
    pub drained: bool,
    /// Share of unpinned IPs, while up.
    #[serde(default)]
    pub weight: Option<u32>,
    /// Customer IPs the node holds now.
    #[serde(default)]
    pub ips: usize,
}

/// `POST /v1/nodes/remove`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeRef {
    pub name: String,
}

pub const CUSTOMERS: &str = "/v1/customers";
pub const CUSTOMER_SHOW: &str = "/v1/customers/show";
pub const CUSTOMER_REMOVE: &str = "/v1/customers/remove";
pub const IPS: &str = "/v1/ips";
pub const IP_RELEASE: &str = "/v1/ips/release";
pub const IP_MOVE: &str = "/v1/ips/move";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CustomerRequest {
    pub name: String,
    #[serde(default)]
    pub description: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CustomerRef {
    pub name: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CustomerView {
    pub name: String,
    pub description: String,
    pub created: u64,
    pub ips: Vec<IpView>,
}

/// `POST /v1/ips`: assign an IP to a customer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct IpRequest {
    pub addr: String,
    pub customer: String,
    /// Pin to this node; default: placed by hostgate.
    pub node: Option<String>,
}

/// `POST /v1/ips/release` and `/v1/ips/move`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct IpRef {
    pub addr: String,
    /// For move: the node to pin the IP to.
    #[serde(default)]
    pub to: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct IpView {
    pub addr: String,
    pub customer: String,
    /// The node answering for the IP.
    pub owner: Option<String>,
    /// Whether the owner was pinned (`--node`, `ip move`).
    pub pinned: bool,
    /// `active` (on this node's interface), `remote` (another node answers),
    /// `pending` (this node should answer but has not yet).
    pub state: String,
    /// Seconds since the epoch of the assignment.
    pub since: u64,
}

pub const RULES_APPLY: &str = "/v1/rules/apply";
pub const RULES_STATS: &str = "/v1/rules/stats";
pub const RULES_DIFF: &str = "/v1/rules/diff";

/// `GET /v1/rules/diff`: what applying the rules directory would change.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RulesDiff {
    pub changes: Vec<RuleChange>,
    /// Errors that would stop the apply.
    pub errors: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RuleChange {
    pub customer: String,
    /// `+` added, `-` removed, `~` default changed.
    pub kind: String,
    pub text: String,
    pub line: Option<u32>,
}

/// Result of applying the rules directory.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RulesApplied {
    pub applied: bool,
    pub files: usize,
    pub rules: usize,
    /// `file:line:column: error: ...` lines when not applied.
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

/// One rule's counters (`GET /v1/rules/stats`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RuleStats {
    pub id: u32,
    pub customer: String,
    pub file: String,
    /// `None`: what unmatched traffic of this direction gets.
    pub line: Option<u32>,
    /// `in` or `out`.
    pub direction: String,
    pub action: String,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RulesStatus {
    pub rules_dir: Option<String>,
    /// Seconds since the epoch of the last successful apply.
    pub applied_at: Option<u64>,
    /// Errors of the last attempt, if it failed (the rules before it stay in force).
    pub last_errors: Vec<String>,
    pub rules: Vec<RuleStats>,
    /// Packets dropped or rejected per customer.
    pub drops: std::collections::BTreeMap<String, u64>,
    /// Traffic from the network to each guarded customer IP (the IPs of
    /// customers with rules), whatever the rules decided.
    #[serde(default)]
    pub ips: Vec<IpTraffic>,
}

/// Packets and bytes from the network to one customer IP.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct IpTraffic {
    pub ip: String,
    pub customer: String,
    pub packets: u64,
    pub bytes: u64,
}

pub const CONTAINERS: &str = "/v1/containers";
pub const CONTAINER_REMOVE: &str = "/v1/containers/remove";

/// A container as registered (`POST /v1/containers`) and listed.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ContainerView {
    pub name: String,
    pub customer: String,
    pub iface: String,
    pub ips: Vec<String>,
    pub mac: Option<String>,
    /// `masquerade` or an address to source-NAT its outgoing traffic to.
    #[serde(default)]
    pub snat: Option<String>,
    /// Spoofed frames dropped on its veth (listing only).
    #[serde(default)]
    pub spoof_drops: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ContainerRef {
    pub name: String,
}

pub const NETWORKS: &str = "/v1/networks";
pub const NETWORK_REMOVE: &str = "/v1/networks/remove";
pub const DHCP_LEASES: &str = "/v1/dhcp/leases";

/// A customer's DHCP network (`POST /v1/networks`, `GET /v1/networks`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct NetworkView {
    pub name: String,
    pub customer: String,
    /// `ADDRESS/LENGTH`.
    pub subnet: String,
    pub gateway: String,
    /// `FIRST-LAST` ranges.
    pub pools: Vec<String>,
    pub lease_secs: Option<u32>,
    /// New addresses per MAC and per port a minute (0: no limit).
    #[serde(default)]
    pub max_new_per_mac: Option<u32>,
    #[serde(default)]
    pub max_new_per_port: Option<u32>,
    #[serde(default)]
    pub domain: Option<String>,
    #[serde(default)]
    pub search: Vec<String>,
    #[serde(default)]
    pub mtu: Option<u16>,
    /// Routed single addresses: /32 leases, the gateway on-link (option 121).
    #[serde(default)]
    pub routed: bool,
    /// Container-facing interfaces (of this node) the server answers on.
    pub interfaces: Vec<String>,
    #[serde(default)]
    pub dns: Vec<String>,
    /// Bound leases (listing only).
    #[serde(default)]
    pub leases: usize,
    /// `ADDRESS/64` advertised for SLAAC by router advertisements.
    #[serde(default)]
    pub ipv6_prefix: Option<String>,
    /// IPv6 DNS servers advertised (RDNSS; default: the router, `prefix::1`).
    #[serde(default)]
    pub dns6: Vec<String>,
}

/// `POST /v1/networks/remove`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct NetworkRef {
    pub name: String,
}

/// A DHCP lease (`GET /v1/dhcp/leases`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LeaseView {
    pub network: String,
    pub addr: String,
    pub mac: String,
    pub client_id: Option<String>,
    pub hostname: Option<String>,
    /// offered | bound | declined.
    pub state: String,
    /// Seconds since the epoch.
    pub expires: u64,
    /// The port it was asked from (`iface:NAME` or `circuit:HEX`).
    #[serde(default)]
    pub port: Option<String>,
}

pub const DHCP_RESERVATIONS: &str = "/v1/dhcp/reservations";
pub const DHCP_RESERVATION_REMOVE: &str = "/v1/dhcp/reservations/remove";

/// A fixed address (`POST /v1/dhcp/reservations`, listed by GET). Exactly
/// one of `mac`, `client_id` (hex, `:`-separated) and `circuit_id` (text).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReservationView {
    pub network: String,
    pub mac: Option<String>,
    pub client_id: Option<String>,
    pub circuit_id: Option<String>,
    /// For adding and listing; ignored when removing.
    #[serde(default)]
    pub addr: String,
    #[serde(default)]
    pub hostname: Option<String>,
}

pub const HTTP_VHOSTS: &str = "/v1/http/vhosts";
pub const HTTP_VHOST_REMOVE: &str = "/v1/http/vhosts/remove";

/// A virtual host of the HTTP proxy (`POST /v1/http/vhosts` adds or
/// replaces it, `GET` lists them).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct VhostView {
    /// `shop.example.com` or `*.example.com`.
    pub host: String,
    pub customer: String,
    /// Path prefix -> backends; `/` is the default route.
    pub routes: Vec<RouteView>,
    /// `round-robin` (default) or `client-hash` (sticky by client IP).
    #[serde(default)]
    pub balance: Option<String>,
    #[serde(default)]
    pub https_redirect: bool,
    #[serde(default)]
    pub hsts_max_age: Option<u32>,
    #[serde(default)]
    pub max_body_bytes: Option<u64>,
    /// Responses are cached as the origin allows (RFC 9111).
    #[serde(default)]
    pub cache: bool,
    /// Requests per second per client address (IPv4, IPv6 /64); 429 beyond.
    #[serde(default)]
    pub rate_limit: Option<u32>,
    /// Requests a client may make at once before the rate applies
    /// (default: the rate).
    #[serde(default)]
    pub rate_burst: Option<u32>,
    /// PROXY protocol v2 header first on every backend connection.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// `combined`, `json` or `off`; default: the node's `[http] access_log`.
    #[serde(default)]
    pub access_log: Option<String>,
    /// Certificate by ACME HTTP-01 (`[http] acme_directory`), renewed
    /// before it expires; exact names only.
    #[serde(default)]
    pub acme: bool,
    /// TLS to the backends.
    #[serde(default)]
    pub backend_tls: bool,
    /// The name sent to backends as SNI and checked in their certificates
    /// (default: the vhost's host).
    #[serde(default)]
    pub backend_sni: Option<String>,
    /// CA certificates (PEM) backends' chains must lead to (default: the
    /// system's roots).
    #[serde(default)]
    pub backend_ca_pem: Option<String>,
    /// Take any backend certificate (encrypted, not authenticated).
    #[serde(default)]
    pub backend_no_verify: bool,
    /// Backends are checked with `GET` of this path (else by connecting).
    #[serde(default)]
    pub health_path: Option<String>,
    /// The status the health check wants (default 200).
    #[serde(default)]
    pub health_status: Option<u16>,
    /// The vhost's own HTML for answers the proxy gives itself: status -> page.
    #[serde(default)]
    pub error_pages: std::collections::BTreeMap<u16, String>,
    /// Seconds to connect to a backend (default 2).
    #[serde(default)]
    pub connect_timeout_secs: Option<u32>,
    /// Seconds a backend may take to answer, and between two reads of its
    /// body (default 60).
    #[serde(default)]
    pub read_timeout_secs: Option<u32>,
    /// Add only if absent (`vhost add`); false replaces (`vhost set`).
    #[serde(default)]
    pub create_only: bool,
}

pub const HTTP_CACHE_PURGE: &str = "/v1/http/cache/purge";

/// `POST /v1/http/cache/purge`: drop a vhost's cached responses (those
/// whose path starts with `path`, if given) on this node, and through the
/// store on every other.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CachePurge {
    pub host: String,
    #[serde(default)]
    pub path: Option<String>,
    /// How many responses went on the node asked (in the answer).
    #[serde(default)]
    pub purged: usize,
}

pub const HTTP_CERTS: &str = "/v1/http/certs";
pub const HTTP_CERT_REMOVE: &str = "/v1/http/certs/remove";

/// `POST /v1/http/certs`: a certificate chain and its key, in PEM.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CertAdd {
    /// Store name; default: the leaf's first DNS name.
    #[serde(default)]
    pub name: Option<String>,
    /// Leaf first, then intermediates.
    pub chain_pem: String,
    pub key_pem: String,
    /// Serve it to clients without SNI or asking for an unknown name (the
    /// previous default stops being one).
    #[serde(default)]
    pub default: bool,
}

impl std::fmt::Debug for CertAdd {
    /// Never prints the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertAdd").field("name", &self.name).field("default", &self.default).finish_non_exhaustive()
    }
}

/// A stored certificate as listed (`GET /v1/http/certs`): never the key.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CertView {
    pub name: String,
    /// DNS names of the leaf's subjectAltName.
    pub names: Vec<String>,
    pub subject: String,
    pub issuer: String,
    /// As the certificate states them, in UTC (`Nov 26 23:00:00 2126 +00:00`).
    pub not_before: String,
    pub not_after: String,
    /// `RSA 2048`, `ECDSA P-256`, ...
    pub key_type: String,
    pub default: bool,
    /// Why the proxy does not serve it (e.g. expired since it was added).
    #[serde(default)]
    pub problem: Option<String>,
}

pub const HTTP_ACME: &str = "/v1/http/acme";

/// `GET /v1/http/acme`: one vhost name with `--acme` and where its
/// certificate stands.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AcmeView {
    pub name: String,
    /// `valid`, `ordering`, `failed`, or `none` (no order yet).
    pub state: String,
    /// Expiry of the certificate served for the name (unix seconds; as
    /// text in `not_after_text`), if one is stored.
    #[serde(default)]
    pub not_after: Option<i64>,
    #[serde(default)]
    pub not_after_text: Option<String>,
    /// When it is renewed, or the next attempt after a failure (unix seconds).
    #[serde(default)]
    pub next_attempt: Option<i64>,
    #[serde(default)]
    pub failures: u32,
    #[serde(default)]
    pub last_error: Option<String>,
}

/// `POST /v1/http/certs/remove`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CertRef {
    pub name: String,
}

/// One path prefix of a vhost and its pool.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RouteView {
    pub prefix: String,
    /// `IP:PORT` or `IP:PORT,weight=N`.
    pub backends: Vec<String>,
}

/// `POST /v1/http/vhosts/remove`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct VhostRef {
    pub host: String,
}

/// What the proxy did for one (vhost, backend). `backend` is `-` for
/// requests answered without one (unknown host: vhost `-`; no healthy
/// backend; redirects).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct HttpCounters {
    pub vhost: String,
    pub backend: String,
    pub requests: u64,
    /// Answers of 5xx (from the backend or the proxy), failed connections.
    pub errors: u64,
    /// Answers by class: 1xx, 2xx, 3xx, 4xx, 5xx.
    #[serde(default)]
    pub status_classes: [u64; 5],
    /// Request body bytes received from clients.
    #[serde(default)]
    pub bytes_in: u64,
    /// Response body bytes sent to clients.
    #[serde(default)]
    pub bytes_out: u64,
    /// Requests by duration (request head read to last byte sent), one
    /// count per bucket of `HTTP_LATENCY_BOUNDS_MS`, then +Inf.
    #[serde(default)]
    pub latency_buckets: Vec<u64>,
    /// Sum of the durations, microseconds.
    #[serde(default)]
    pub latency_sum_us: u64,
    /// Answered 429 by the vhost's rate limit.
    #[serde(default)]
    pub rate_limited: u64,
    /// Answered 413: body over the vhost's limit.
    #[serde(default)]
    pub too_large: u64,
    /// Connections upgraded (101, e.g. WebSocket).
    #[serde(default)]
    pub upgraded: u64,
}

/// Upper bounds (ms) of `HttpCounters::latency_buckets` (then +Inf);
/// the same as hostgate-http's.
pub const HTTP_LATENCY_BOUNDS_MS: [u64; 12] = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 10000];

pub const DNS_ZONES: &str = "/v1/dns/zones";
pub const DNS_ZONE_REMOVE: &str = "/v1/dns/zones/remove";
pub const DNS_ZONE_IMPORT: &str = "/v1/dns/zones/import";
pub const DNS_ZONE_EXPORT: &str = "/v1/dns/zones/export";
pub const DNS_ZONE_SECONDARIES: &str = "/v1/dns/zones/secondaries";
pub const DNS_ZONE_QUERY_LOG: &str = "/v1/dns/zones/query-log";
pub const DNS_POOLS: &str = "/v1/dns/pools";
pub const DNS_POOL_REMOVE: &str = "/v1/dns/pools/remove";
pub const DNS_POOL_LIST: &str = "/v1/dns/pools/list";
pub const DNS_RECORDS: &str = "/v1/dns/records";
pub const DNS_RECORD_REMOVE: &str = "/v1/dns/records/remove";
pub const DNS_RECORD_LIST: &str = "/v1/dns/records/list";

/// A new zone with its SOA and NS (`POST /v1/dns/zones`). Names without a
/// final dot are relative to the zone, as in a zone file.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ZoneAdd {
    pub origin: String,
    /// Name servers (apex NS; the first is the SOA's MNAME). Default
    /// `ns1.<origin>`.
    #[serde(default)]
    pub ns: Vec<String>,
    /// The zone's contact as an email address (`hostmaster@example.com`)
    /// or a name; default `hostmaster.<origin>`.
    #[serde(default)]
    pub admin: Option<String>,
    /// TTL of the SOA, the NS and records added without one (default 3600).
    #[serde(default)]
    pub ttl: Option<u32>,
    /// Log every query for the zone (client, name, type, rcode).
    #[serde(default)]
    pub query_log: bool,
    /// The customer whose domain this is (its queries are logged to the
    /// customer's file); must exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<String>,
}

/// Turns a zone's query log on or off (`POST /v1/dns/zones/query-log`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ZoneQueryLog {
    pub origin: String,
    pub on: bool,
}

/// A zone in the listing (`GET /v1/dns/zones`) and as changes answer.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ZoneView {
    pub origin: String,
    pub serial: u32,
    /// Records, the SOA included.
    pub records: usize,
    /// TTL of records added without one.
    pub default_ttl: u32,
    /// Addresses that may transfer the zone (AXFR/IXFR over TCP).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_transfer: Vec<String>,
    /// Secondaries sent a NOTIFY on every serial change.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<String>,
    /// The TSIG key's name and algorithm (never its secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tsig_key: Option<String>,
    /// Queries for the zone are logged.
    #[serde(default)]
    pub query_log: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<String>,
}

/// A name answered from a VIP's healthy backends (`POST /v1/dns/pools`
/// adds or replaces; `POST /v1/dns/pools/remove` needs zone and name).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DnsPool {
    pub zone: String,
    /// Relative to the zone (`www`, `@`) or absolute.
    pub name: String,
    /// The VIP whose backends answer (`203.0.113.10:80/tcp`).
    #[serde(default)]
    pub vip: String,
    /// When no backend passes: `all`, `none` or an address (default all).
    #[serde(default)]
    pub fallback: Option<String>,
    /// TTL of the answers (default 10).
    #[serde(default)]
    pub ttl: Option<u32>,
}

/// A zone's secondaries (`POST /v1/dns/zones/secondaries`), replacing
/// the present settings; all empty: no transfers, no NOTIFY. What NSD
/// calls `provide-xfr` (allow + tsig) and `notify` (notify + tsig).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ZoneSecondaries {
    pub origin: String,
    /// IP addresses that may AXFR/IXFR the zone over TCP.
    #[serde(default)]
    pub allow: Vec<String>,
    /// `ADDRESS:PORT` (or an address, port 53) told of every change.
    #[serde(default)]
    pub notify: Vec<String>,
    /// `NAME:ALGORITHM:BASE64SECRET` (hmac-sha256/384/512): required on
    /// transfers, used to sign the NOTIFYs.
    #[serde(default)]
    pub tsig: Option<String>,
}

/// Names a zone (remove, export, record list).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ZoneRef {
    pub origin: String,
}

/// A zone file to load (`POST /v1/dns/zones/import`): all or nothing; an
/// existing zone of the same origin is replaced.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ZoneImport {
    /// Default: the file's first `$ORIGIN`.
    #[serde(default)]
    pub origin: Option<String>,
    /// Names the text in errors (`file:line: problem`).
    pub file: String,
    pub text: String,
}

/// A zone in master format (`POST /v1/dns/zones/export`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ZoneText {
    pub origin: String,
    pub text: String,
}

/// One record to add (`POST /v1/dns/records`) or records to remove
/// (`POST /v1/dns/records/remove`; without `value`, the whole RRset).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RecordChange {
    pub zone: String,
    /// Relative to the zone (`www`, `@`) or absolute (`www.example.com.`).
    pub name: String,
    /// A, AAAA, CNAME, MX, TXT, SRV, CAA, NS, PTR.
    pub rtype: String,
    /// The data as in a zone file (`10 mail`, `"v=spf1 -all"`).
    #[serde(default)]
    pub value: Option<String>,
    /// Adding: the RRset's TTL (all its records take it); default the
    /// RRset's present TTL, else the zone's default.
    #[serde(default)]
    pub ttl: Option<u32>,
}

/// What a record change did.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RecordsChanged {
    pub zone: String,
    /// The zone's serial after the change.
    pub serial: u32,
    /// The records added or removed, in master format.
    pub records: Vec<String>,
}

/// One record (`POST /v1/dns/records/list`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RecordView {
    pub name: String,
    pub ttl: u32,
    pub rtype: String,
    pub data: String,
}

pub const SSH_KEYS: &str = "/v1/ssh/keys";
pub const SSH_KEY_REMOVE: &str = "/v1/ssh/keys/remove";
pub const SSH_KEY_LIST: &str = "/v1/ssh/keys/list";
pub const SSH_PROXY_KEY: &str = "/v1/ssh/proxy-key";
pub const SSH_HISTORY: &str = "/v1/ssh/history";

/// A customer's SSH key, as given (`authorized_keys` line) and as stored.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SshKeyView {
    pub customer: String,
    /// Only this container is reachable with the key; `None`: all of the
    /// customer's containers.
    #[serde(default)]
    pub container: Option<String>,
    /// One `authorized_keys` line (options such as `from=` allowed).
    pub line: String,
    /// `SHA256:...`; filled in by the daemon.
    #[serde(default)]
    pub fingerprint: String,
}

/// Removes a key by customer and fingerprint.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SshKeyRef {
    pub customer: String,
    pub fingerprint: String,
}

/// Filters `key list` and `history` by customer.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SshFilter {
    #[serde(default)]
    pub customer: Option<String>,
}

/// The proxy's own public key (for the containers' `authorized_keys`) and
/// its host keys (for customers' `known_hosts`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SshProxyKey {
    /// `ssh-ed25519 AAAA... hostgate-proxy@NODE`
    pub client_key: String,
    pub host_keys: Vec<String>,
    /// `ssh-ed25519 AAAA... hostgate-ca@NODE`: the CA that signs the
    /// proxy's short-lived user certificates, for the containers'
    /// `TrustedUserCAKeys`.
    #[serde(default)]
    pub ca_key: String,
}

/// A customer's SSH user name standing for one of its containers
/// (`ssh deploy@node` reaches `web-prod-3`): `POST /v1/ssh/users` adds or
/// replaces, `/v1/ssh/users/remove` needs customer and user,
/// `/v1/ssh/users/list` takes an [`SshFilter`].
pub const SSH_USERS: &str = "/v1/ssh/users";
pub const SSH_USER_REMOVE: &str = "/v1/ssh/users/remove";
pub const SSH_USER_LIST: &str = "/v1/ssh/users/list";

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SshUserMap {
    pub customer: String,
    pub user: String,
    /// Empty in a remove request.
    #[serde(default)]
    pub container: String,
}

/// What a customer's sessions may do beyond shells, commands, file
/// transfers and local forwarding. `None` in a request: unchanged.
pub const SSH_POLICY: &str = "/v1/ssh/policy";

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SshPolicyView {
    pub customer: String,
    /// Agent forwarding (`ssh -A`) to the customer's containers; off by
    /// default, since a container's root could then use the customer's agent.
    #[serde(default)]
    pub agent_forwarding: Option<bool>,
}

/// One SSH session or refused attempt.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SshSession {
    /// Unique per node: start time in nanoseconds and a counter.
    pub id: String,
    /// Empty for a refused attempt whose key matched no customer.
    pub customer: String,
    /// SHA256 fingerprint of the authenticated (or last offered) key.
    pub fingerprint: String,
    pub user: String,
    pub source: String,
    pub container: String,
    /// Unix seconds.
    pub start: u64,
    pub end: u64,
    /// Client to container and back, channel data bytes.
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// Last exit status sent by the container, if any.
    pub exit_status: Option<u32>,
    /// `ok`, `denied`, `upstream-failed: ...`, `host-key-mismatch`.
    pub outcome: String,
}

/// Forgets a container's pinned host key: the next connection pins anew.
pub const SSH_KNOWN_REMOVE: &str = "/v1/ssh/known/remove";

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SshKnownRef {
    pub container: String,
}

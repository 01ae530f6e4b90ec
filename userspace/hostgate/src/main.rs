//! `hostgate`: the daemon (`hostgate daemon`) and the operator's CLI, which
//! talks to the daemon's control API on its unix socket.

mod output;
mod top;

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use hostgate_api::{Client, CounterRow, DetachResponse, Status};
use hostgate_config::{Config, LogFormat, DEFAULT_CONFIG_PATH, DEFAULT_SOCKET};

/// See Cargo.toml: mimalloc instead of glibc's malloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "hostgate", version, about = "eBPF/XDP network appliance for hosting providers")]
struct Cli {
    /// Control socket of the daemon.
    #[arg(long, global = true, env = "HOSTGATE_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum DaemonAction {
    /// Restart the running daemon without dropping a connection (as SIGUSR2
    /// does): it starts this program's file anew with the HTTP listeners
    /// handed over, and drains once the new one serves. Waits for the new one.
    Upgrade {
        /// Seconds to wait for the new daemon to answer.
        #[arg(long, default_value_t = 90)]
        timeout: u64,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon in the foreground.
    Daemon {
        /// Configuration file.
        #[arg(long, short, default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// Log format; overrides the config's log.format.
        #[arg(long, value_enum)]
        log_format: Option<LogFormatArg>,
        #[command(subcommand)]
        action: Option<DaemonAction>,
    },
    /// Show the daemon, its store and data plane: attachments, programs, maps, counters.
    Status {
        /// Machine-readable JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Live stream of the data plane's decisions: firewall drops with the
    /// rule's file:line, anti-spoofing drops, new load-balanced flows.
    /// Reporting costs the programs nothing while nobody watches.
    Monitor {
        /// Only events from or to this address.
        #[arg(long)]
        ip: Option<std::net::IpAddr>,
        /// Only firewall events of this customer's rules.
        #[arg(long)]
        customer: Option<String>,
        /// Only this kind: firewall, spoof or lb.
        #[arg(long, value_parser = ["firewall", "spoof", "lb"])]
        kind: Option<String>,
        /// Only this verdict: drop, reject, rate-limit or balanced.
        #[arg(long)]
        verdict: Option<String>,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<u64>,
        /// One JSON object a line.
        #[arg(long)]
        json: bool,
    },
    /// Live view of rates per VIP, backend, customer, customer IP and firewall rule,
    /// refreshed every period; keys sort (p pkt/s, b bit/s, t packets,
    /// n name, k kind, r reverse), f filters by kind, q quits.
    Top {
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 1.0, value_parser = parse_period)]
        interval: f64,
    },
    /// Inspect or remove the data plane.
    Dataplane {
        #[command(subcommand)]
        command: DataplaneCommand,
    },
    /// Load-balanced customer IPs (VIPs).
    Vip {
        #[command(subcommand)]
        command: VipCommand,
    },
    /// Backends of a VIP.
    Backend {
        #[command(subcommand)]
        command: BackendCommand,
    },
    /// Customers of the hosting provider.
    Customer {
        #[command(subcommand)]
        command: CustomerCommand,
    },
    /// The HTTP reverse proxy: virtual hosts of customers.
    Http {
        #[command(subcommand)]
        command: HttpCommand,
    },
    /// The SSH/SFTP proxy: customers' keys, the proxy's own key, access history.
    Ssh {
        #[command(subcommand)]
        command: SshCommand,
    },
    /// Customers' containers behind this node: what they may send from.
    Container {
        #[command(subcommand)]
        command: ContainerCommand,
    },
    /// DHCP networks of customers' containers: subnet, gateway, pools, interfaces.
    Network {
        #[command(subcommand)]
        command: NetworkCommand,
    },
    /// The DHCP server's leases.
    Dhcp {
        #[command(subcommand)]
        command: DhcpCommand,
    },
    /// Authoritative DNS: zones and records, answered at once (the SOA
    /// serial moves with every change).
    Dns {
        #[command(subcommand)]
        command: DnsCommand,
    },
    /// Customer IPs: which customer holds which address, and which node answers for it.
    Ip {
        #[command(subcommand)]
        command: IpCommand,
    },
    /// Nodes: cluster members (up/down, drained, IPs held) and the underlay
    /// addresses DSR tunnels go to.
    Node {
        #[command(subcommand)]
        command: NodeCommand,
    },
    /// Firewall rules files.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// Work with configuration files.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum DataplaneCommand {
    /// Packet and byte counters by hook, protocol and verdict.
    Counters {
        #[arg(long)]
        json: bool,
    },
    /// Detach every program hostgate attached and remove its pins. Asks the
    /// running daemon; with no daemon running, removes the pins of the node
    /// named in --config directly.
    Detach {
        /// Used only when no daemon answers: which node's pins to remove.
        #[arg(long, short, default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum VipCommand {
    /// Declare a VIP: all traffic to ADDR, or only PROTO (and PORT).
    Add {
        /// The address (or a full VIP: ADDR:PORT/PROTO).
        addr: String,
        #[arg(long, value_parser = ["tcp", "udp"])]
        proto: Option<String>,
        #[arg(long)]
        port: Option<u16>,
        /// Maglev table size, a prime (default 65537).
        #[arg(long)]
        ring_size: Option<u32>,
        #[arg(long)]
        json: bool,
    },
    /// Every VIP with its backends and traffic.
    List {
        #[arg(long)]
        json: bool,
    },
    /// One VIP: backends, health, live traffic per backend.
    Show {
        /// ADDR, ADDR/PROTO or ADDR:PORT/PROTO (as `vip list` shows it).
        vip: String,
        #[arg(long)]
        json: bool,
    },
    /// Remove a VIP and its backends.
    Remove { vip: String },
}

#[derive(Subcommand)]
enum BackendCommand {
    /// Add a backend to a VIP.
    Add {
        /// The VIP, as `vip list` shows it.
        vip: String,
        /// The backend's address.
        addr: String,
        /// Destination port at the backend (default: the VIP's).
        #[arg(long)]
        port: Option<u16>,
        /// Relative share of new flows; 0 drains (default 1).
        #[arg(long)]
        weight: Option<u32>,
        /// nat: a container on this node; dsr: on another node (--node).
        #[arg(long, value_parser = ["nat", "dsr"])]
        mode: Option<String>,
        /// The node hosting the backend (dsr).
        #[arg(long)]
        node: Option<String>,
        /// Health check: tcp, or http:/PATH[:STATUS] (e.g. http:/healthz:200).
        #[arg(long)]
        check: Option<String>,
        /// Port to probe (default: the backend's, else the VIP's).
        #[arg(long, requires = "check")]
        check_port: Option<u16>,
        /// Time between probes, e.g. 500ms or 2s (default 2s).
        #[arg(long, requires = "check", value_parser = parse_millis)]
        check_interval: Option<u32>,
        /// Time a probe may take (default 1s).
        #[arg(long, requires = "check", value_parser = parse_millis)]
        check_timeout: Option<u32>,
        /// Successes in a row that make a backend healthy again (default 2).
        #[arg(long, requires = "check")]
        rise: Option<u32>,
        /// Failures in a row that take a backend out (default 3).
        #[arg(long, requires = "check")]
        fall: Option<u32>,
        #[arg(long)]
        json: bool,
    },
    /// Remove a backend (ADDR or ADDR:PORT, as `vip show` lists it).
    Remove { vip: String, backend: String },
}

#[derive(Subcommand)]
enum CustomerCommand {
    /// Add a customer (a-z, 0-9 and '-').
    Add {
        name: String,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Every customer with its IPs.
    List {
        #[arg(long)]
        json: bool,
    },
    /// One customer and its IPs.
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Remove a customer that holds no IPs.
    Remove { name: String },
}

#[derive(Subcommand)]
enum ContainerCommand {
    /// Register a container: its veth may then send only from these addresses (and MAC).
    Add {
        name: String,
        #[arg(long)]
        customer: String,
        /// Host-side interface of the container's veth.
        #[arg(long)]
        iface: String,
        /// An address the container holds; repeat for more (none: it gets
        /// its address by DHCP).
        #[arg(long = "ip")]
        ips: Vec<String>,
        /// The container's MAC address (default: any).
        #[arg(long)]
        mac: Option<String>,
        /// Source-NAT what it sends out: `masquerade` or an address (e.g. a customer IP).
        #[arg(long)]
        snat: Option<String>,
    },
    /// Every registered container, with spoofed frames dropped.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Forget a container (its veth is no longer guarded).
    Remove { name: String },
}

#[derive(Subcommand)]
// Parsed once per run: the size of one variant does not matter.
#[allow(clippy::large_enum_variant)]
enum NetworkCommand {
    /// Declare a network served by DHCP on this node's container interfaces.
    Add {
        name: String,
        #[arg(long)]
        customer: String,
        /// ADDRESS/LENGTH, e.g. 198.51.100.0/24.
        #[arg(long)]
        subnet: String,
        /// The router handed out (this node's address on the interfaces).
        #[arg(long)]
        gateway: String,
        /// FIRST-LAST; repeat for more.
        #[arg(long = "pool", required = true)]
        pools: Vec<String>,
        /// Container-facing interface to answer on; repeat for more.
        /// (None: the network is served to DHCP relays only, see
        /// `[dhcp] relay_interfaces`.)
        #[arg(long = "iface")]
        interfaces: Vec<String>,
        /// Lease time in seconds (default 3600).
        #[arg(long)]
        lease_secs: Option<u32>,
        /// New addresses one MAC may get per minute (default 10; 0: no limit).
        #[arg(long)]
        max_new_per_mac: Option<u32>,
        /// New addresses one port (interface or relay circuit-id) may get per
        /// minute (default 60; 0: no limit).
        #[arg(long)]
        max_new_per_port: Option<u32>,
        /// Domain name handed out (option 15).
        #[arg(long)]
        domain: Option<String>,
        /// Domain search list entry (option 119); repeat for more.
        #[arg(long = "search")]
        search: Vec<String>,
        /// Interface MTU handed out (option 26).
        #[arg(long)]
        mtu: Option<u16>,
        /// Routed single addresses: each client gets its address as a /32
        /// with the gateway on-link (router + classless static routes, 121),
        /// and the node routes the address to the client's port.
        #[arg(long)]
        routed: bool,
        /// DNS server handed out (default: the gateway); repeat for more.
        #[arg(long = "dns")]
        dns: Vec<String>,
        /// IPv6 /64 advertised for SLAAC (router advertisements, which also
        /// carry --domain and --search as DNSSL, and --mtu), e.g.
        /// 2001:db8:1::/64; the node takes PREFIX::1 on the interfaces.
        #[arg(long)]
        ipv6_prefix: Option<String>,
        /// IPv6 DNS server advertised (RDNSS; default: PREFIX::1); repeat for more.
        #[arg(long = "dns6")]
        dns6: Vec<String>,
    },
    /// Every network, with its bound leases.
    List {
        #[arg(long)]
        json: bool,
    },
    /// One network: everything it hands out, its limits and its counters.
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Remove a network and its leases.
    Rm { name: String },
}

#[derive(Subcommand)]
enum DnsCommand {
    /// Zones: add, remove, list, import and export zone files.
    Zone {
        #[command(subcommand)]
        command: ZoneCommand,
    },
    /// Records of a zone. Names without a final dot are relative to the
    /// zone (`www`, `@`), in values too (`CNAME www`), as in a zone file.
    Record {
        #[command(subcommand)]
        command: RecordCommand,
    },
    /// Health-aware names: a name answering the addresses of a VIP's
    /// backends whose health checks pass (the load balancer's checks).
    Pool {
        #[command(subcommand)]
        command: PoolCommand,
    },
}

#[derive(Subcommand)]
enum PoolCommand {
    /// Bind a name to a VIP: `pool add example.com www --vip 203.0.113.10:80/tcp`.
    Add {
        zone: String,
        name: String,
        /// The VIP whose backends answer, as `hostgate vip` writes it.
        #[arg(long)]
        vip: String,
        /// When no backend passes: all (every backend), none, or an address.
        #[arg(long, default_value = "all")]
        fallback: String,
        /// TTL of the answers (default 10).
        #[arg(long)]
        ttl: Option<u32>,
    },
    /// Unbind a name.
    Rm { zone: String, name: String },
    /// The zone's pool names.
    List {
        zone: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ZoneCommand {
    /// Create a zone with its SOA and NS records.
    Add {
        /// The zone's name, e.g. example.com.
        origin: String,
        /// Name server (apex NS; the first is the SOA's primary); repeat
        /// for more. Default ns1.<zone>.
        #[arg(long = "ns")]
        ns: Vec<String>,
        /// The zone's contact, e.g. hostmaster@example.com (default hostmaster.<zone>).
        #[arg(long)]
        admin: Option<String>,
        /// TTL of the SOA, the NS and records added without one (default 3600).
        #[arg(long)]
        ttl: Option<u32>,
        /// Log every query for the zone (off by default; see `zone query-log`).
        #[arg(long)]
        query_log: bool,
        /// The customer whose domain this is: logged queries go to its
        /// query log file (`[dns] access_log_dir`/<customer>.log).
        #[arg(long)]
        customer: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Turn a zone's query log on or off: each query for it is logged
    /// (client, name, type, rcode) at info level.
    QueryLog {
        origin: String,
        #[arg(value_parser = ["on", "off"])]
        state: String,
        #[arg(long)]
        json: bool,
    },
    /// Remove a zone and all its records.
    Rm { origin: String },
    /// Every zone: serial and record count.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Load an RFC 1035 zone file: all or nothing (errors name file:line);
    /// replaces a zone of the same origin.
    Import {
        file: PathBuf,
        /// The zone's name (default: the file's $ORIGIN).
        #[arg(long)]
        origin: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Print a zone in master file format.
    Export { origin: String },
    /// Secondaries of a zone, as NSD's provide-xfr and notify: who may
    /// transfer it (AXFR/IXFR over TCP) and who is sent a NOTIFY on every
    /// change. Replaces what was set; with no option, turns both off.
    Secondaries {
        origin: String,
        /// Addresses that may transfer the zone (comma-separated or repeated).
        #[arg(long = "allow", value_delimiter = ',')]
        allow: Vec<String>,
        /// ADDRESS:PORT ([V6]:PORT; port 53 if left out) to notify
        /// (comma-separated or repeated).
        #[arg(long = "notify", value_delimiter = ',')]
        notify: Vec<String>,
        /// NAME:ALGORITHM:BASE64SECRET (hmac-sha256, -sha384, -sha512),
        /// e.g. from `tsig-keygen`: required on transfers, signs NOTIFYs.
        #[arg(long)]
        tsig: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum RecordCommand {
    /// Add a record: `record add example.com www A 198.51.100.10`,
    /// `... @ MX 10 mail`, `... @ TXT "v=spf1 -all"`.
    Add {
        zone: String,
        name: String,
        /// A, AAAA, CNAME, MX, TXT, SRV, CAA, NS, PTR.
        rtype: String,
        /// The data, as in a zone file (TXT: each argument is one string;
        /// data starting with '-' goes after `--`).
        #[arg(required = true, num_args = 1..)]
        value: Vec<String>,
        /// TTL of the RRset (default: its present TTL, else the zone's).
        #[arg(long)]
        ttl: Option<u32>,
        #[arg(long)]
        json: bool,
    },
    /// Remove the records of NAME and TYPE, or only the one with VALUE.
    Rm {
        zone: String,
        name: String,
        rtype: String,
        #[arg(num_args = 0..)]
        value: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Every record of a zone, SOA first.
    List {
        zone: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum HttpCommand {
    /// Virtual hosts: which names the proxy serves and where it sends them.
    Vhost {
        #[command(subcommand)]
        command: VhostCommand,
    },
    /// The response cache of vhosts with `--cache`.
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
    /// TLS certificates served on `[http] listen_tls`, picked by the
    /// client's SNI name (exact, then wildcard, then the default).
    Cert {
        #[command(subcommand)]
        command: CertCommand,
    },
    /// Automatic certificates of vhosts with `--acme`.
    Acme {
        #[command(subcommand)]
        command: AcmeCommand,
    },
}

#[derive(Subcommand)]
enum AcmeCommand {
    /// Per name: state, certificate expiry, next attempt, last error.
    Status {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum CacheCommand {
    /// Drop a vhost's cached responses on every node (all, or those whose
    /// path starts with --path).
    Purge {
        host: String,
        #[arg(long)]
        path: Option<String>,
    },
}

#[derive(Subcommand)]
enum CertCommand {
    /// Store a certificate (checked: parses, key matches, valid now, DNS
    /// names); under an existing name it replaces it, live.
    Add {
        /// PEM file: the certificate, then its intermediates.
        #[arg(long)]
        cert: PathBuf,
        /// PEM file: the private key (PKCS#8, RSA or EC; not encrypted).
        #[arg(long)]
        key: PathBuf,
        /// Serve it without SNI and for names no certificate covers.
        #[arg(long)]
        default: bool,
        /// Store name (default: the certificate's first DNS name).
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Every stored certificate: names, issuer, expiry, key type.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a certificate; from the next handshake its names get another
    /// covering certificate (a wildcard) or the default.
    Rm { name: String },
}

#[derive(clap::Args)]
struct VhostArgs {
    /// `shop.example.com`, or `*.example.com` for every name below example.com.
    host: String,
    #[arg(long)]
    customer: String,
    /// Backend of the default route `/`: IP:PORT or IP:PORT,weight=N; repeat for more.
    #[arg(long = "backend")]
    backends: Vec<String>,
    /// A path prefix served by other backends: PREFIX=IP:PORT[,weight=N];
    /// repeat (also with the same prefix) for more. The longest prefix wins.
    #[arg(long = "path")]
    paths: Vec<String>,
    /// round-robin (smooth weighted) or client-hash (sticky by client IP).
    #[arg(long)]
    balance: Option<String>,
    /// Answer plain HTTP with a 308 redirect to https://.
    #[arg(long)]
    https_redirect: bool,
    /// Strict-Transport-Security max-age in seconds, sent on HTTPS answers.
    #[arg(long)]
    hsts: Option<u32>,
    /// Refuse request bodies larger than this many bytes (413).
    #[arg(long)]
    max_body: Option<u64>,
    /// Cache responses as their Cache-Control allows a shared cache to
    /// (in memory, `[http] cache_mib`; `http cache purge` drops them).
    #[arg(long)]
    cache: bool,
    /// Requests per second per client address (IPv4, IPv6 /64); more are
    /// answered 429 with Retry-After.
    #[arg(long)]
    rate_limit: Option<u32>,
    /// Requests a client may send at once before --rate-limit applies
    /// (default: the rate).
    #[arg(long)]
    rate_burst: Option<u32>,
    /// Send a PROXY protocol v2 header first on every backend connection
    /// (the backends must expect it).
    #[arg(long)]
    proxy_protocol: bool,
    /// Access log format for this vhost: combined, json or off (default:
    /// the node's [http] access_log).
    #[arg(long)]
    access_log: Option<String>,
    /// Get this name's certificate from the ACME CA of [http]
    /// acme_directory (HTTP-01, answered by the proxy) and renew it before
    /// it expires; exact names only.
    #[arg(long)]
    acme: bool,
    /// Speak TLS to the backends; their certificates are verified (chain
    /// and name) unless --backend-no-verify.
    #[arg(long)]
    backend_tls: bool,
    /// The name sent to backends as SNI and checked in their certificates
    /// (default: the vhost's host).
    #[arg(long)]
    backend_sni: Option<String>,
    /// PEM file of the CA certificates backends' chains must lead to
    /// (default: the system's roots).
    #[arg(long)]
    backend_ca: Option<std::path::PathBuf>,
    /// Take any backend certificate: encrypted but not authenticated
    /// (NGINX's proxy_ssl_verify off).
    #[arg(long)]
    backend_no_verify: bool,
    /// Check the backends every second with GET of this path (with the
    /// vhost's host, over TLS with --backend-tls); without it they are
    /// checked by connecting.
    #[arg(long)]
    health_path: Option<String>,
    /// The status the health check wants (default 200).
    #[arg(long)]
    health_status: Option<u16>,
    /// This vhost's own page for an answer the proxy gives itself:
    /// CODE=FILE (HTML; 404, 413, 429, 500, 502, 503, 504); repeat.
    #[arg(long = "error-page")]
    error_pages: Vec<String>,
    /// Seconds to connect to a backend before trying another (default 2).
    #[arg(long, value_name = "SECS")]
    connect_timeout: Option<u32>,
    /// Seconds a backend may take to answer, and between two reads of its
    /// body, before the client gets 504 (default 60; NGINX's
    /// proxy_read_timeout).
    #[arg(long, value_name = "SECS")]
    read_timeout: Option<u32>,
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum VhostCommand {
    /// Declare a vhost (refused if the host exists).
    Add(Box<VhostArgs>),
    /// Declare or replace a vhost whole; applies live.
    Set(Box<VhostArgs>),
    /// Every vhost with its routes.
    List {
        #[arg(long)]
        json: bool,
    },
    /// One vhost and its per-backend counters.
    Show {
        host: String,
        #[arg(long)]
        json: bool,
    },
    /// Remove a vhost; its names answer 404 at once.
    Rm { host: String },
}

#[derive(Subcommand)]
enum SshCommand {
    /// Customers' public keys; changes apply to the next login at once.
    Key {
        #[command(subcommand)]
        command: SshKeyCommand,
    },
    /// Customers' own SSH user names for their containers (`ssh
    /// deploy@node` reaching `web-prod-3`); apply to the next login.
    User {
        #[command(subcommand)]
        command: SshUserCommand,
    },
    /// The proxy's public keys: the client key for containers'
    /// authorized_keys, the host keys for customers' known_hosts.
    ProxyKey {
        /// Only the client key line (for authorized_keys).
        #[arg(long, conflicts_with = "json")]
        client: bool,
        #[arg(long)]
        json: bool,
    },
    /// The hostgate SSH CA that signs the proxy's short-lived user
    /// certificates (generated once, kept in the store).
    Ca {
        #[command(subcommand)]
        command: SshCaCommand,
    },
    /// What a customer's sessions may do beyond shells, commands, file
    /// transfers and local forwarding; shown, and changed if a flag is given.
    Policy {
        #[arg(long)]
        customer: String,
        /// Allow `ssh -A` to the customer's containers (off by default).
        #[arg(long, value_name = "BOOL")]
        agent_forwarding: Option<bool>,
        #[arg(long)]
        json: bool,
    },
    /// Forget a container's pinned host key (after a deliberate change);
    /// the next connection pins the key it finds.
    KnownRm { container: String },
    /// Sessions and refused attempts: who, which key, from where, to which
    /// container, when, bytes and exit status.
    History {
        #[arg(long)]
        customer: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum SshUserCommand {
    /// Map USER (a-z, 0-9, '.', '_', '-') to one of the customer's
    /// containers; a mapped name wins over a container of the same name.
    Add {
        #[arg(long)]
        customer: String,
        user: String,
        container: String,
    },
    Rm {
        #[arg(long)]
        customer: String,
        user: String,
    },
    List {
        #[arg(long)]
        customer: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum SshCaCommand {
    /// The CA's public key: one line for the containers' sshd
    /// `TrustedUserCAKeys` file.
    Show,
}

#[derive(Subcommand)]
enum SshKeyCommand {
    /// Add every key of an authorized_keys FILE (`-` for stdin): ed25519,
    /// ECDSA or RSA, options such as from="203.0.113.0/24" allowed.
    Add {
        #[arg(long)]
        customer: String,
        /// Only this container of the customer is reachable with the key(s).
        #[arg(long)]
        container: Option<String>,
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Remove a key by its SHA256 fingerprint.
    Rm {
        #[arg(long)]
        customer: String,
        fingerprint: String,
    },
    List {
        #[arg(long)]
        customer: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum DhcpCommand {
    /// Every lease: address, MAC, client-id, hostname, state, expiry.
    Leases {
        #[arg(long)]
        network: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Fixed addresses, by MAC (which also matches a DUID client-id carrying
    /// that MAC), client-id or relay circuit-id; they apply at once.
    Reserve {
        #[command(subcommand)]
        command: ReserveCommand,
    },
}

#[derive(clap::Args)]
struct ReserveKey {
    #[arg(long)]
    network: String,
    /// aa:bb:cc:dd:ee:ff
    #[arg(long, group = "who")]
    mac: Option<String>,
    /// The client identifier (option 61) in hex, ':'-separated.
    #[arg(long, group = "who")]
    client_id: Option<String>,
    /// The relay agent's circuit-id (option 82.1), as text.
    #[arg(long, group = "who")]
    circuit_id: Option<String>,
}

#[derive(Subcommand)]
enum ReserveCommand {
    Add {
        #[command(flatten)]
        key: ReserveKey,
        #[arg(long)]
        ip: String,
        #[arg(long)]
        hostname: Option<String>,
    },
    List {
        #[arg(long)]
        json: bool,
    },
    Rm {
        #[command(flatten)]
        key: ReserveKey,
    },
}

#[derive(Subcommand)]
enum IpCommand {
    /// Assign an IP from the configured pools to a customer.
    Assign {
        addr: String,
        #[arg(long)]
        customer: String,
        /// Pin the IP to this node (default: placed by hostgate).
        #[arg(long)]
        node: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Take an IP back from its customer; its node withdraws it.
    Release { addr: String },
    /// Pin an IP to another node.
    Move {
        addr: String,
        #[arg(long)]
        to: String,
    },
    /// Every assigned IP: customer, owner node, state, since.
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum NodeCommand {
    /// Register another node and its underlay address(es).
    Add {
        name: String,
        /// One per family: --address 198.18.0.2 --address 2001:db8:18::2
        #[arg(long = "address", required = true)]
        addresses: Vec<String>,
    },
    /// Every known node.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Forget a node.
    Remove { name: String },
    /// Move a node's customer IPs to the others and give it none until undrained.
    Drain { name: String },
    /// Let a drained node take its share of customer IPs again.
    Undrain { name: String },
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Check rules files: every problem with file:line:column and a hint.
    /// With a daemon running, also checks that the customers exist.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Print the parsed rulesets and diagnostics as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make the daemon apply its rules directory now (it also does so on
    /// every change). With any error nothing changes.
    Apply {
        #[arg(long)]
        json: bool,
    },
    /// What `rules apply` would change: rules added (+), removed (-), defaults (~).
    Diff {
        #[arg(long)]
        json: bool,
    },
    /// Hits per rule and drops per customer.
    Stats {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a configuration file and exit.
    Check {
        #[arg(default_value = DEFAULT_CONFIG_PATH)]
        file: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

fn run_daemon(config: &std::path::Path, log_format: Option<LogFormatArg>) -> anyhow::Result<()> {
    let config = Config::load(config)?;
    let format = match log_format {
        Some(LogFormatArg::Text) => LogFormat::Text,
        Some(LogFormatArg::Json) => LogFormat::Json,
        None => config.log.format,
    };
    hostgate_daemon::main(config, format)
}

/// Asks the daemon to hand over and waits until a daemon with another pid
/// answers (or the same one, started over: the upgrade failed).
async fn upgrade(client: &Client, timeout: u64) -> anyhow::Result<()> {
    let old: hostgate_api::UpgradeResponse = client.post(hostgate_api::UPGRADE, &()).await?;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(timeout);
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let Ok(now) = client.get::<Status>(hostgate_api::STATUS).await else { continue };
        if now.pid != old.pid {
            println!("upgraded: pid {} -> {} (version {})", old.pid, now.pid, now.version);
            return Ok(());
        }
        if now.started_at != old.started_at {
            anyhow::bail!("the new daemon did not start; pid {} carries on (see its log)", old.pid);
        }
    }
    anyhow::bail!("no new daemon answered within {timeout} s (pid {} was asked to hand over)", old.pid)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The daemon makes its own runtimes (and must see the inherited
    // listeners before any thread starts).
    if let Command::Daemon { config, log_format, action: None } = &cli.command {
        return match run_daemon(config, *log_format) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    let client = Client::new(&cli.socket);
    match cli.command {
        Command::Daemon { action: None, .. } => unreachable!("handled in main"),
        Command::Daemon { action: Some(DaemonAction::Upgrade { timeout }), .. } => upgrade(&client, timeout).await,
        Command::Status { json } => {
            let status: Status = client.get(hostgate_api::STATUS).await?;
            print_out(json, &status, output::status)
        }
        Command::Monitor { ip, customer, kind, verdict, count, json } => {
            let ip = ip.map(|a| a.to_string());
            let wanted = |e: &hostgate_api::MonitorEvent| {
                ip.as_ref().is_none_or(|a| e.src.as_ref() == Some(a) || e.dst.as_ref() == Some(a))
                    && customer.as_ref().is_none_or(|c| e.customer.as_ref() == Some(c))
                    && kind.as_ref().is_none_or(|k| &e.kind == k)
                    && verdict.as_ref().is_none_or(|v| &e.verdict == v)
            };
            let mut seen = 0u64;
            client
                .stream(hostgate_api::MONITOR, |e: hostgate_api::MonitorEvent| {
                    if !wanted(&e) {
                        return true;
                    }
                    match json {
                        true => println!("{}", serde_json::to_string(&e).unwrap_or_default()),
                        false => println!("{}", output::monitor_event(&e)),
                    }
                    seen += 1;
                    count.is_none_or(|n| seen < n)
                })
                .await?;
            Ok(())
        }
        Command::Top { interval } => top::run(&client, std::time::Duration::from_secs_f64(interval)).await,
        Command::Dataplane { command: DataplaneCommand::Counters { json } } => {
            let rows: Vec<CounterRow> = client.get(hostgate_api::COUNTERS).await?;
            print_out(json, &rows, |r| output::counters(r).to_string())
        }
        Command::Dataplane { command: DataplaneCommand::Detach { config, json } } => {
            let report = detach(&client, &config).await?;
            print_out(json, &report, output::detach)
        }
        Command::Vip { command } => vip(&client, command).await,
        Command::Backend { command } => backend(&client, command).await,
        Command::Node { command } => node(&client, command).await,
        Command::Customer { command } => customer(&client, command).await,
        Command::Ip { command } => ip(&client, command).await,
        Command::Container { command } => container(&client, command).await,
        Command::Network { command } => network(&client, command).await,
        Command::Http { command: HttpCommand::Vhost { command } } => vhost(&client, command).await,
        Command::Http { command: HttpCommand::Cert { command } } => cert(&client, command).await,
        Command::Http { command: HttpCommand::Acme { command: AcmeCommand::Status { json } } } => {
            let all: Vec<hostgate_api::AcmeView> = client.get(hostgate_api::HTTP_ACME).await?;
            print_out(json, &all, |all| output::acme(all).to_string())
        }
        Command::Http { command: HttpCommand::Cache { command: CacheCommand::Purge { host, path } } } => {
            let req = hostgate_api::CachePurge { host, path, purged: 0 };
            let r: hostgate_api::CachePurge = client.post(hostgate_api::HTTP_CACHE_PURGE, &req).await?;
            println!(
                "{} cached response(s) of {} purged on this node; the other nodes purge them too",
                r.purged, r.host
            );
            Ok(())
        }
        Command::Dhcp { command } => dhcp(&client, command).await,
        Command::Ssh { command } => ssh(&client, command).await,
        Command::Dns { command: DnsCommand::Zone { command } } => dns_zone(&client, command).await,
        Command::Dns { command: DnsCommand::Record { command } } => dns_record(&client, command).await,
        Command::Dns { command: DnsCommand::Pool { command } } => dns_pool(&client, command).await,
        Command::Rules { command: RulesCommand::Check { files, json } } => rules_check(&client, &files, json).await,
        Command::Rules { command: RulesCommand::Apply { json } } => {
            let r: hostgate_api::RulesApplied = client.post(hostgate_api::RULES_APPLY, &()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                for line in r.errors.iter().chain(&r.warnings) {
                    eprintln!("{line}");
                }
            }
            if !r.applied {
                anyhow::bail!("rules not applied ({} error(s)); the rules in force stay", r.errors.len());
            }
            if !json {
                println!("applied {} rule(s) from {} file(s)", r.rules, r.files);
            }
            Ok(())
        }
        Command::Rules { command: RulesCommand::Diff { json } } => {
            let d: hostgate_api::RulesDiff = client.get(hostgate_api::RULES_DIFF).await?;
            print_out(json, &d, |d| {
                let mut out: Vec<String> = d
                    .changes
                    .iter()
                    .map(|c| {
                        format!(
                            "{} {:<12} {}{}",
                            c.kind,
                            c.customer,
                            c.text,
                            c.line.map_or(String::new(), |l| format!("  (line {l})"))
                        )
                    })
                    .collect();
                out.extend(d.errors.iter().map(|e| format!("! {e}")));
                if out.is_empty() {
                    out.push("no changes".into());
                }
                out.join("\n")
            })
        }
        Command::Rules { command: RulesCommand::Stats { json } } => {
            let s: hostgate_api::RulesStatus = client.get(hostgate_api::RULES_STATS).await?;
            print_out(json, &s, output::rules_stats)
        }
        Command::Config { command: ConfigCommand::Check { file } } => {
            let c = Config::load(&file)?;
            println!("{}: ok (node {}, {} uplink(s))", file.display(), c.node_name, c.dataplane.uplinks.len());
            Ok(())
        }
    }
}

/// `hostgate top --interval`: 0.1 s to an hour.
fn parse_period(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.1..=3600.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a number of seconds between 0.1 and 3600")),
    }
}

/// `500ms`, `2s` or a plain number of milliseconds.
fn parse_millis(s: &str) -> Result<u32, String> {
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000)
    } else {
        (s, 1)
    };
    num.parse::<u32>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| format!("{s:?} is not a duration like 500ms or 2s"))
}

/// `203.0.113.10` + tcp + 80 -> `203.0.113.10:80/tcp`.
fn vip_string(addr: &str, proto: Option<String>, port: Option<u16>) -> anyhow::Result<String> {
    let host =
        if addr.contains(':') && !addr.contains('[') && port.is_some() { format!("[{addr}]") } else { addr.into() };
    Ok(match (proto, port) {
        (Some(proto), Some(port)) => format!("{host}:{port}/{proto}"),
        (Some(proto), None) => format!("{host}/{proto}"),
        (None, Some(_)) => anyhow::bail!("--port needs --proto tcp|udp"),
        (None, None) => addr.to_string(),
    })
}

async fn vip(client: &Client, command: VipCommand) -> anyhow::Result<()> {
    use hostgate_api::{Applied, VipRef, VipRequest, VipView};
    match command {
        VipCommand::Add { addr, proto, port, ring_size, json } => {
            let req = VipRequest { vip: vip_string(&addr, proto, port)?, ring_size };
            let r: Applied<VipView> = client.post(hostgate_api::VIPS, &req).await?;
            print_out(json, &r, |r| output::applied(r, &format!("VIP {} added (id {})", r.value.vip, r.value.id)))
        }
        VipCommand::List { json } => {
            let vips: Vec<VipView> = client.get(hostgate_api::VIPS).await?;
            print_out(json, &vips, |v| output::vip_list(v).to_string())
        }
        VipCommand::Show { vip, json } => {
            let v: VipView = client.post(hostgate_api::VIP_SHOW, &VipRef { vip }).await?;
            print_out(json, &v, output::vip_show)
        }
        VipCommand::Remove { vip } => {
            let r: Applied<String> = client.post(hostgate_api::VIP_REMOVE, &VipRef { vip }).await?;
            println!("{}", output::applied(&r, &format!("VIP {} removed", r.value)));
            Ok(())
        }
    }
}

async fn backend(client: &Client, command: BackendCommand) -> anyhow::Result<()> {
    use hostgate_api::{Applied, BackendRef, BackendRequest, VipView};
    match command {
        BackendCommand::Add {
            vip,
            addr,
            port,
            weight,
            mode,
            node,
            check,
            check_port,
            check_interval,
            check_timeout,
            rise,
            fall,
            json,
        } => {
            let check = check.map(|probe| hostgate_api::CheckRequest {
                probe,
                port: check_port,
                interval_ms: check_interval,
                timeout_ms: check_timeout,
                rise,
                fall,
            });
            let req = BackendRequest { vip, addr: addr.clone(), port, weight, mode, node, check };
            let r: Applied<VipView> = client.post(hostgate_api::BACKENDS, &req).await?;
            print_out(json, &r, |r| output::applied(r, &format!("backend {addr} added to {}", r.value.vip)))
        }
        BackendCommand::Remove { vip, backend } => {
            let r: Applied<VipView> =
                client.post(hostgate_api::BACKEND_REMOVE, &BackendRef { vip, backend: backend.clone() }).await?;
            println!("{}", output::applied(&r, &format!("backend {backend} removed from {}", r.value.vip)));
            Ok(())
        }
    }
}

async fn customer(client: &Client, command: CustomerCommand) -> anyhow::Result<()> {
    use hostgate_api::{CustomerRef, CustomerRequest, CustomerView};
    match command {
        CustomerCommand::Add { name, description } => {
            let c: CustomerView = client.post(hostgate_api::CUSTOMERS, &CustomerRequest { name, description }).await?;
            println!("customer {} added", c.name);
        }
        CustomerCommand::List { json } => {
            let all: Vec<CustomerView> = client.get(hostgate_api::CUSTOMERS).await?;
            print_out(json, &all, |c| output::customers(c).to_string())?;
        }
        CustomerCommand::Show { name, json } => {
            let c: CustomerView = client.post(hostgate_api::CUSTOMER_SHOW, &CustomerRef { name }).await?;
            print_out(json, &c, output::customer)?;
        }
        CustomerCommand::Remove { name } => {
            let c: CustomerRef = client.post(hostgate_api::CUSTOMER_REMOVE, &CustomerRef { name }).await?;
            println!("customer {} removed", c.name);
        }
    }
    Ok(())
}

async fn container(client: &Client, command: ContainerCommand) -> anyhow::Result<()> {
    use hostgate_api::{ContainerRef, ContainerView};
    match command {
        ContainerCommand::Add { name, customer, iface, ips, mac, snat } => {
            let v = ContainerView { name, customer, iface, ips, mac, snat, spoof_drops: 0 };
            let c: ContainerView = client.post(hostgate_api::CONTAINERS, &v).await?;
            println!("container {} registered on {} ({})", c.name, c.iface, c.ips.join(", "));
        }
        ContainerCommand::List { json } => {
            let all: Vec<ContainerView> = client.get(hostgate_api::CONTAINERS).await?;
            print_out(json, &all, |all| output::containers(all).to_string())?;
        }
        ContainerCommand::Remove { name } => {
            let r: ContainerRef = client.post(hostgate_api::CONTAINER_REMOVE, &ContainerRef { name }).await?;
            println!("container {} removed", r.name);
        }
    }
    Ok(())
}

async fn network(client: &Client, command: NetworkCommand) -> anyhow::Result<()> {
    use hostgate_api::{NetworkRef, NetworkView};
    match command {
        NetworkCommand::Add {
            name,
            customer,
            subnet,
            gateway,
            pools,
            interfaces,
            lease_secs,
            max_new_per_mac,
            max_new_per_port,
            domain,
            search,
            mtu,
            routed,
            dns,
            ipv6_prefix,
            dns6,
        } => {
            let v = NetworkView {
                name,
                customer,
                subnet,
                gateway,
                pools,
                lease_secs,
                max_new_per_mac,
                max_new_per_port,
                domain,
                search,
                mtu,
                routed,
                interfaces,
                dns,
                leases: 0,
                ipv6_prefix,
                dns6,
            };
            let n: NetworkView = client.post(hostgate_api::NETWORKS, &v).await?;
            let v6 = n.ipv6_prefix.as_ref().map(|p| format!(", {p} advertised")).unwrap_or_default();
            match n.interfaces.is_empty() {
                true => println!("network {} ({}{v6}) served to DHCP relays", n.name, n.subnet),
                false => println!("network {} ({}{v6}) served on {}", n.name, n.subnet, n.interfaces.join(", ")),
            }
        }
        NetworkCommand::List { json } => {
            let all: Vec<NetworkView> = client.get(hostgate_api::NETWORKS).await?;
            print_out(json, &all, |all| output::networks(all).to_string())?;
        }
        NetworkCommand::Show { name, json } => {
            let all: Vec<NetworkView> = client.get(hostgate_api::NETWORKS).await?;
            let Some(n) = all.into_iter().find(|n| n.name == name) else {
                anyhow::bail!("network {name} does not exist");
            };
            let status: hostgate_api::Status = client.get(hostgate_api::STATUS).await?;
            let counters = status.dhcp.into_iter().find(|c| c.network == name).unwrap_or_default();
            print_out(json, &n, |n| output::network(n, &counters))?;
        }
        NetworkCommand::Rm { name } => {
            let r: NetworkRef = client.post(hostgate_api::NETWORK_REMOVE, &NetworkRef { name }).await?;
            println!("network {} removed", r.name);
        }
    }
    Ok(())
}

/// The request body of `vhost add|set`: `--backend`s form the route `/`,
/// each `--path PREFIX=BACKEND` joins the route of its prefix.
fn vhost_view(a: VhostArgs, create_only: bool) -> anyhow::Result<hostgate_api::VhostView> {
    use hostgate_api::RouteView;
    let mut routes: Vec<RouteView> = Vec::new();
    let mut add = |prefix: &str, backend: String| match routes.iter_mut().find(|r| r.prefix == prefix) {
        Some(r) => r.backends.push(backend),
        None => routes.push(RouteView { prefix: prefix.to_string(), backends: vec![backend] }),
    };
    for b in a.backends {
        add("/", b);
    }
    for p in &a.paths {
        let Some((prefix, backend)) = p.split_once('=') else {
            anyhow::bail!("--path {p:?}: expected PREFIX=IP:PORT[,weight=N], e.g. /api=198.51.100.10:8080");
        };
        add(prefix, backend.to_string());
    }
    let mut error_pages = std::collections::BTreeMap::new();
    for arg in &a.error_pages {
        let parsed = arg.split_once('=').and_then(|(code, file)| Some((code.parse::<u16>().ok()?, file)));
        let Some((code, file)) = parsed else {
            anyhow::bail!("--error-page {arg}: expected CODE=FILE, e.g. 502=/etc/hostgate/pages/502.html");
        };
        let page = std::fs::read_to_string(file).with_context(|| format!("--error-page {arg}: reading {file}"))?;
        error_pages.insert(code, page);
    }
    let backend_ca_pem = match &a.backend_ca {
        Some(path) => {
            Some(std::fs::read_to_string(path).with_context(|| format!("--backend-ca: reading {}", path.display()))?)
        }
        None => None,
    };
    Ok(hostgate_api::VhostView {
        host: a.host,
        customer: a.customer,
        routes,
        balance: a.balance,
        https_redirect: a.https_redirect,
        hsts_max_age: a.hsts,
        max_body_bytes: a.max_body,
        cache: a.cache,
        rate_limit: a.rate_limit,
        rate_burst: a.rate_burst,
        proxy_protocol: a.proxy_protocol,
        access_log: a.access_log,
        acme: a.acme,
        backend_tls: a.backend_tls,
        backend_sni: a.backend_sni,
        backend_ca_pem,
        backend_no_verify: a.backend_no_verify,
        health_path: a.health_path,
        health_status: a.health_status,
        error_pages,
        connect_timeout_secs: a.connect_timeout,
        read_timeout_secs: a.read_timeout,
        create_only,
    })
}

async fn put_vhost(client: &Client, a: VhostArgs, create_only: bool) -> anyhow::Result<()> {
    let json = a.json;
    let v: hostgate_api::VhostView = client.post(hostgate_api::HTTP_VHOSTS, &vhost_view(a, create_only)?).await?;
    let verb = if create_only { "added" } else { "set" };
    print_out(json, &v, |v| format!("vhost {} {verb} ({} route(s))", v.host, v.routes.len()))
}

async fn vhost(client: &Client, command: VhostCommand) -> anyhow::Result<()> {
    use hostgate_api::{VhostRef, VhostView};
    match command {
        VhostCommand::Add(a) => put_vhost(client, *a, true).await?,
        VhostCommand::Set(a) => put_vhost(client, *a, false).await?,
        VhostCommand::List { json } => {
            let all: Vec<VhostView> = client.get(hostgate_api::HTTP_VHOSTS).await?;
            print_out(json, &all, |all| output::vhosts(all).to_string())?;
        }
        VhostCommand::Show { host, json } => {
            let all: Vec<VhostView> = client.get(hostgate_api::HTTP_VHOSTS).await?;
            let Some(v) = all.into_iter().find(|v| v.host == host) else {
                anyhow::bail!("vhost {host} does not exist");
            };
            let status: Status = client.get(hostgate_api::STATUS).await?;
            print_out(json, &v, |v| output::vhost(v, &status.http))?;
        }
        VhostCommand::Rm { host } => {
            let r: VhostRef = client.post(hostgate_api::HTTP_VHOST_REMOVE, &VhostRef { host }).await?;
            println!("vhost {} removed", r.host);
        }
    }
    Ok(())
}

/// The key lines of an authorized_keys file (`-`: stdin), without blanks
/// and comments.
fn key_lines(file: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let text = if file == std::path::Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("reading stdin")?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
    };
    let lines: Vec<String> =
        text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from).collect();
    if lines.is_empty() {
        anyhow::bail!("{}: no key lines", file.display());
    }
    Ok(lines)
}

async fn ssh(client: &Client, command: SshCommand) -> anyhow::Result<()> {
    use hostgate_api::{SshFilter, SshKeyRef, SshKeyView, SshProxyKey, SshSession};
    match command {
        SshCommand::Key { command: SshKeyCommand::Add { customer, container, file, json } } => {
            let mut added = Vec::new();
            for (i, line) in key_lines(&file)?.into_iter().enumerate() {
                let req =
                    SshKeyView { customer: customer.clone(), container: container.clone(), line, ..Default::default() };
                let v: SshKeyView = client
                    .post(hostgate_api::SSH_KEYS, &req)
                    .await
                    .with_context(|| format!("{}: key {}", file.display(), i + 1))?;
                added.push(v);
            }
            print_out(json, &added, |all| {
                all.iter()
                    .map(|v| format!("key {} added for {}", v.fingerprint, v.customer))
                    .collect::<Vec<_>>()
                    .join("\n")
            })?;
        }
        SshCommand::Key { command: SshKeyCommand::Rm { customer, fingerprint } } => {
            let r: SshKeyRef = client.post(hostgate_api::SSH_KEY_REMOVE, &SshKeyRef { customer, fingerprint }).await?;
            println!("key {} of {} removed", r.fingerprint, r.customer);
        }
        SshCommand::Key { command: SshKeyCommand::List { customer, json } } => {
            let all: Vec<SshKeyView> = client.post(hostgate_api::SSH_KEY_LIST, &SshFilter { customer }).await?;
            print_out(json, &all, |all| output::ssh_keys(all).to_string())?;
        }
        SshCommand::User { command: SshUserCommand::Add { customer, user, container } } => {
            let req = hostgate_api::SshUserMap { customer, user, container };
            let m: hostgate_api::SshUserMap = client.post(hostgate_api::SSH_USERS, &req).await?;
            println!("{}@ of {} reaches container {}", m.user, m.customer, m.container);
        }
        SshCommand::User { command: SshUserCommand::Rm { customer, user } } => {
            let req = hostgate_api::SshUserMap { customer, user, container: String::new() };
            let m: hostgate_api::SshUserMap = client.post(hostgate_api::SSH_USER_REMOVE, &req).await?;
            println!("user {} of {} removed", m.user, m.customer);
        }
        SshCommand::User { command: SshUserCommand::List { customer, json } } => {
            let all: Vec<hostgate_api::SshUserMap> =
                client.post(hostgate_api::SSH_USER_LIST, &SshFilter { customer }).await?;
            print_out(json, &all, |all| output::ssh_users(all).to_string())?;
        }
        SshCommand::ProxyKey { client: only_client, json } => {
            let k: SshProxyKey = client.get(hostgate_api::SSH_PROXY_KEY).await?;
            match only_client {
                true => println!("{}", k.client_key),
                false => print_out(json, &k, |k| {
                    let hosts: Vec<String> = k.host_keys.iter().map(|h| format!("host key:   {h}")).collect();
                    format!("client key: {}\nca key:     {}\n{}", k.client_key, k.ca_key, hosts.join("\n"))
                })?,
            }
        }
        SshCommand::Ca { command: SshCaCommand::Show } => {
            let k: SshProxyKey = client.get(hostgate_api::SSH_PROXY_KEY).await?;
            println!("{}", k.ca_key);
        }
        SshCommand::Policy { customer, agent_forwarding, json } => {
            let p: hostgate_api::SshPolicyView = client
                .post(hostgate_api::SSH_POLICY, &hostgate_api::SshPolicyView { customer, agent_forwarding })
                .await?;
            print_out(json, &p, |p| {
                let agent = if p.agent_forwarding == Some(true) { "allowed" } else { "refused" };
                format!("customer {}: agent forwarding {agent}", p.customer)
            })?;
        }
        SshCommand::KnownRm { container } => {
            let r: hostgate_api::SshKnownRef =
                client.post(hostgate_api::SSH_KNOWN_REMOVE, &hostgate_api::SshKnownRef { container }).await?;
            println!("host key of {} forgotten; the next connection pins it anew", r.container);
        }
        SshCommand::History { customer, json } => {
            let all: Vec<SshSession> = client.post(hostgate_api::SSH_HISTORY, &SshFilter { customer }).await?;
            print_out(json, &all, |all| output::ssh_history(all).to_string())?;
        }
    }
    Ok(())
}

fn read_pem(flag: &str, path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("{flag} {}: cannot read", path.display()))
}

async fn cert(client: &Client, command: CertCommand) -> anyhow::Result<()> {
    use hostgate_api::{CertAdd, CertRef, CertView};
    match command {
        CertCommand::Add { cert, key, default, name, json } => {
            let req =
                CertAdd { name, chain_pem: read_pem("--cert", &cert)?, key_pem: read_pem("--key", &key)?, default };
            let v: CertView = client.post(hostgate_api::HTTP_CERTS, &req).await?;
            print_out(json, &v, |v| {
                let default = if v.default { ", the default" } else { "" };
                format!(
                    "certificate {} stored ({}; {}; until {}{default})",
                    v.name,
                    v.names.join(" "),
                    v.key_type,
                    v.not_after
                )
            })?;
        }
        CertCommand::List { json } => {
            let all: Vec<CertView> = client.get(hostgate_api::HTTP_CERTS).await?;
            print_out(json, &all, |all| output::certs(all).to_string())?;
        }
        CertCommand::Rm { name } => {
            let r: CertRef = client.post(hostgate_api::HTTP_CERT_REMOVE, &CertRef { name }).await?;
            println!("certificate {} removed", r.name);
        }
    }
    Ok(())
}

async fn dhcp(client: &Client, command: DhcpCommand) -> anyhow::Result<()> {
    match command {
        DhcpCommand::Leases { network, json } => {
            let mut all: Vec<hostgate_api::LeaseView> = client.get(hostgate_api::DHCP_LEASES).await?;
            all.retain(|l| network.as_ref().is_none_or(|n| &l.network == n));
            print_out(json, &all, |all| output::leases(all).to_string())?;
        }
        DhcpCommand::Reserve { command } => {
            use hostgate_api::ReservationView;
            let view = |k: ReserveKey| ReservationView {
                network: k.network,
                mac: k.mac,
                client_id: k.client_id,
                circuit_id: k.circuit_id,
                ..ReservationView::default()
            };
            match command {
                ReserveCommand::Add { key, ip, hostname } => {
                    let v = ReservationView { addr: ip, hostname, ..view(key) };
                    let r: ReservationView = client.post(hostgate_api::DHCP_RESERVATIONS, &v).await?;
                    println!("{} reserved in network {}", r.addr, r.network);
                }
                ReserveCommand::List { json } => {
                    let all: Vec<ReservationView> = client.get(hostgate_api::DHCP_RESERVATIONS).await?;
                    print_out(json, &all, |all| output::reservations(all).to_string())?;
                }
                ReserveCommand::Rm { key } => {
                    let _: ReservationView = client.post(hostgate_api::DHCP_RESERVATION_REMOVE, &view(key)).await?;
                    println!("reservation removed");
                }
            }
        }
    }
    Ok(())
}

async fn dns_zone(client: &Client, command: ZoneCommand) -> anyhow::Result<()> {
    use hostgate_api::{ZoneAdd, ZoneImport, ZoneRef, ZoneText, ZoneView};
    match command {
        ZoneCommand::Add { origin, ns, admin, ttl, query_log, customer, json } => {
            let req = ZoneAdd { origin, ns, admin, ttl, query_log, customer };
            let z: ZoneView = client.post(hostgate_api::DNS_ZONES, &req).await?;
            print_out(json, &z, |z| format!("zone {} added (serial {})", z.origin, z.serial))?;
        }
        ZoneCommand::QueryLog { origin, state, json } => {
            let req = hostgate_api::ZoneQueryLog { origin, on: state == "on" };
            let z: ZoneView = client.post(hostgate_api::DNS_ZONE_QUERY_LOG, &req).await?;
            let on = if z.query_log { "on" } else { "off" };
            print_out(json, &z, |z| format!("zone {}: query log {on}", z.origin))?;
        }
        ZoneCommand::Rm { origin } => {
            let r: ZoneRef = client.post(hostgate_api::DNS_ZONE_REMOVE, &ZoneRef { origin }).await?;
            println!("zone {} removed", r.origin);
        }
        ZoneCommand::List { json } => {
            let all: Vec<ZoneView> = client.get(hostgate_api::DNS_ZONES).await?;
            print_out(json, &all, |all| output::zones(all).to_string())?;
        }
        ZoneCommand::Import { file, origin, json } => {
            let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            let req = ZoneImport { origin, file: file.display().to_string(), text };
            let z: ZoneView = client.post(hostgate_api::DNS_ZONE_IMPORT, &req).await?;
            print_out(json, &z, |z| format!("zone {} imported: {} records, serial {}", z.origin, z.records, z.serial))?;
        }
        ZoneCommand::Export { origin } => {
            let t: ZoneText = client.post(hostgate_api::DNS_ZONE_EXPORT, &ZoneRef { origin }).await?;
            print!("{}", t.text);
        }
        ZoneCommand::Secondaries { origin, allow, notify, tsig, json } => {
            let req = hostgate_api::ZoneSecondaries { origin, allow, notify, tsig };
            let z: ZoneView = client.post(hostgate_api::DNS_ZONE_SECONDARIES, &req).await?;
            print_out(json, &z, secondaries_text)?;
        }
    }
    Ok(())
}

async fn dns_pool(client: &Client, command: PoolCommand) -> anyhow::Result<()> {
    use hostgate_api::{DnsPool, RecordsChanged};
    if let PoolCommand::List { zone, json } = command {
        let all: Vec<DnsPool> =
            client.post(hostgate_api::DNS_POOL_LIST, &hostgate_api::ZoneRef { origin: zone }).await?;
        return print_out(json, &all, |all| {
            all.iter()
                .map(|p| {
                    let fallback = p.fallback.as_deref().unwrap_or("all");
                    format!("{} -> VIP {} (fallback {fallback}, ttl {})", p.name, p.vip, p.ttl.unwrap_or(0))
                })
                .collect::<Vec<_>>()
                .join("\n")
        });
    }
    let (path, req) = match command {
        PoolCommand::Add { zone, name, vip, fallback, ttl } => {
            (hostgate_api::DNS_POOLS, DnsPool { zone, name, vip, fallback: Some(fallback), ttl })
        }
        PoolCommand::Rm { zone, name } => (hostgate_api::DNS_POOL_REMOVE, DnsPool { zone, name, ..Default::default() }),
        PoolCommand::List { .. } => return Ok(()),
    };
    let r: RecordsChanged = client.post(path, &req).await?;
    println!("zone {} (serial {}): {}", r.zone, r.serial, r.records.join(", "));
    Ok(())
}

fn secondaries_text(z: &hostgate_api::ZoneView) -> String {
    let list = |v: &[String]| if v.is_empty() { "nobody".to_string() } else { v.join(", ") };
    format!(
        "zone {}: transfers to {}; NOTIFY to {}; TSIG {}",
        z.origin,
        list(&z.allow_transfer),
        list(&z.notify),
        z.tsig_key.as_deref().unwrap_or("none")
    )
}

/// The record data as one zone-file text: each TXT argument is one
/// character-string (quoted here, so spaces survive the shell's split).
fn record_value(rtype: &str, value: &[String]) -> String {
    let quote = |v: &String| {
        if v.starts_with('"') {
            v.clone()
        } else {
            format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
        }
    };
    match rtype.eq_ignore_ascii_case("TXT") {
        true => value.iter().map(quote).collect::<Vec<_>>().join(" "),
        false => value.join(" "),
    }
}

async fn dns_record(client: &Client, command: RecordCommand) -> anyhow::Result<()> {
    use hostgate_api::{RecordChange, RecordView, RecordsChanged, ZoneRef};
    match command {
        RecordCommand::Add { zone, name, rtype, value, ttl, json } => {
            let value = Some(record_value(&rtype, &value));
            let req = RecordChange { zone, name, rtype, value, ttl };
            let r: RecordsChanged = client.post(hostgate_api::DNS_RECORDS, &req).await?;
            print_out(json, &r, |r| format!("added {} (serial {})", r.records.join("; "), r.serial))?;
        }
        RecordCommand::Rm { zone, name, rtype, value, json } => {
            let value = (!value.is_empty()).then(|| record_value(&rtype, &value));
            let req = RecordChange { zone, name, rtype, value, ttl: None };
            let r: RecordsChanged = client.post(hostgate_api::DNS_RECORD_REMOVE, &req).await?;
            print_out(json, &r, |r| format!("removed {} (serial {})", r.records.join("; "), r.serial))?;
        }
        RecordCommand::List { zone, json } => {
            let all: Vec<RecordView> = client.post(hostgate_api::DNS_RECORD_LIST, &ZoneRef { origin: zone }).await?;
            print_out(json, &all, |all| output::records(all).to_string())?;
        }
    }
    Ok(())
}

async fn ip(client: &Client, command: IpCommand) -> anyhow::Result<()> {
    use hostgate_api::{IpRef, IpRequest, IpView};
    match command {
        IpCommand::Assign { addr, customer, node, json } => {
            let v: IpView = client.post(hostgate_api::IPS, &IpRequest { addr, customer, node }).await?;
            print_out(json, &v, |v| {
                format!("{} assigned to {} (node {})", v.addr, v.customer, v.owner.clone().unwrap_or_default())
            })?;
        }
        IpCommand::Release { addr } => {
            let r: IpRef = client.post(hostgate_api::IP_RELEASE, &IpRef { addr, to: None }).await?;
            println!("{} released", r.addr);
        }
        IpCommand::Move { addr, to } => {
            let v: IpView = client.post(hostgate_api::IP_MOVE, &IpRef { addr, to: Some(to) }).await?;
            println!("{} moved to node {}", v.addr, v.owner.unwrap_or_default());
        }
        IpCommand::List { json } => {
            let all: Vec<IpView> = client.get(hostgate_api::IPS).await?;
            print_out(json, &all, |v| output::ips(v).to_string())?;
        }
    }
    Ok(())
}

async fn node(client: &Client, command: NodeCommand) -> anyhow::Result<()> {
    use hostgate_api::{NodeRef, NodeView};
    match command {
        NodeCommand::Add { name, addresses } => {
            let view = NodeView {
                name,
                addresses,
                this_node: false,
                state: String::new(),
                drained: false,
                weight: None,
                ips: 0,
            };
            let n: NodeView = client.post(hostgate_api::NODES, &view).await?;
            println!("node {} registered at {}", n.name, n.addresses.join(", "));
        }
        NodeCommand::List { json } => {
            let nodes: Vec<NodeView> = client.get(hostgate_api::NODES).await?;
            print_out(json, &nodes, |n| output::nodes(n).to_string())?;
        }
        NodeCommand::Remove { name } => {
            let n: NodeRef = client.post(hostgate_api::NODE_REMOVE, &NodeRef { name }).await?;
            println!("node {} removed", n.name);
        }
        NodeCommand::Drain { name } => {
            let n: NodeRef = client.post(hostgate_api::NODE_DRAIN, &NodeRef { name }).await?;
            println!("node {} drained: its customer IPs move to the other nodes", n.name);
        }
        NodeCommand::Undrain { name } => {
            let n: NodeRef = client.post(hostgate_api::NODE_UNDRAIN, &NodeRef { name }).await?;
            println!("node {} undrained", n.name);
        }
    }
    Ok(())
}

async fn rules_check(client: &Client, files: &[PathBuf], json: bool) -> anyhow::Result<()> {
    use hostgate_rules::{Diagnostic, Severity};
    // Customers are known only to a running daemon; without one that check is skipped.
    let customers: Option<Vec<String>> = client
        .get::<Vec<hostgate_api::CustomerView>>(hostgate_api::CUSTOMERS)
        .await
        .ok()
        .map(|cs| cs.into_iter().map(|c| c.name).collect());
    let mut diagnostics: Vec<Diagnostic> = Vec::new();
    let mut rulesets = Vec::new();
    for path in files {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {name}"))?;
        match hostgate_rules::parse(&name, &text) {
            Ok((rs, warnings)) => {
                diagnostics.extend(warnings);
                if let Some(known) = &customers {
                    if !known.contains(&rs.customer) {
                        diagnostics.push(Diagnostic {
                            file: name.clone(),
                            line: rs.customer_line,
                            column: 10,
                            severity: Severity::Error,
                            message: format!("unknown customer {:?}", rs.customer),
                            hint: Some("add it with `hostgate customer add` first".into()),
                        });
                    }
                }
                rulesets.push(rs);
            }
            Err(errors) => diagnostics.extend(errors),
        }
    }
    let errors = diagnostics.iter().filter(|d| d.severity == Severity::Error).count();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "rulesets": rulesets, "diagnostics": diagnostics }))?
        );
    } else {
        for d in &diagnostics {
            eprintln!("{d}");
        }
        if customers.is_none() {
            eprintln!("note: no daemon answered, so customer names were not checked");
        }
        let rules: usize = rulesets.iter().map(|r| r.rules.len()).sum();
        println!(
            "{} file(s), {rules} rule(s): {errors} error(s), {} warning(s)",
            files.len(),
            diagnostics.len() - errors
        );
    }
    if errors > 0 {
        anyhow::bail!("{errors} error(s) in the rules");
    }
    Ok(())
}

fn print_out<T: serde::Serialize>(json: bool, value: &T, human: impl Fn(&T) -> String) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        println!("{}", human(value));
    }
    Ok(())
}

/// Through the daemon if one runs; otherwise straight from the pins.
async fn detach(client: &Client, config: &std::path::Path) -> anyhow::Result<DetachResponse> {
    match client.post::<_, DetachResponse>(hostgate_api::DETACH, &()).await {
        Ok(r) => Ok(r),
        Err(e) if e.is_unreachable() => {
            let c = Config::load(config).context("no daemon answers, so the config is needed to find the pins")?;
            let layout = hostgate_dataplane::pins::PinLayout::new(&c.dataplane.pin_root, &c.node_name);
            let mut report = hostgate_dataplane::detach_pinned(&layout)?;
            // TC filters of kernels without TCX are not pinned: found on the configured interfaces.
            for iface in &c.dataplane.container_interfaces {
                report.links.extend(hostgate_dataplane::detach_tc_filters(iface));
            }
            Ok(DetachResponse { links: report.links, pins_removed: report.pins_removed })
        }
        Err(e) => Err(e.into()),
    }
}

//! Human-readable tables for the CLI.

use std::time::{SystemTime, UNIX_EPOCH};

use comfy_table::{presets::NOTHING, Table};
use hostgate_api::{
    Applied, ContainerView, CounterRow, CustomerView, DetachResponse, IpView, NodeView, RulesStatus, Status, VipView,
};

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(NOTHING).set_header(header.to_vec());
    t
}

fn duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{}s", s / 60, s % 60),
        s => format!("{}h{}m", s / 3600, (s % 3600) / 60),
    }
}

pub fn status(s: &Status) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut out = String::new();
    out += &format!(
        "node       {} (hostgate {}, pid {}, up {})\n",
        s.node,
        s.version,
        s.pid,
        duration(now.saturating_sub(s.started_at))
    );
    out += &match &s.store.error {
        None => format!("store      {} {} at revision {}\n", s.store.backend, s.store.location, s.store.revision),
        Some(e) => format!("store      {} {} NOT ANSWERING: {e}\n", s.store.backend, s.store.location),
    };
    let c = &s.cluster;
    out += &format!(
        "cluster    {}{}, {} member(s): {}; config revision {}\n",
        c.standing,
        c.lease.as_ref().map_or(String::new(), |l| format!(" (lease {l})")),
        c.members.len(),
        c.members.join(", "),
        c.config_revision
    );
    for c in &s.dhcp {
        out += &format!(
            "dhcp       {}: {} offers, {} acks, {} naks, {} declines, {} releases, {} dropped\n",
            c.network, c.offers, c.acks, c.naks, c.declines, c.releases, c.drops
        );
    }
    out += &dns_status(&s.dns);
    for c in &s.http {
        out += &format!("http       {} -> {}: {}\n", c.vhost, c.backend, http_counters(c));
    }
    if s.http_fast_requests + s.http_pingora_handovers > 0 {
        out += &format!(
            "http       HTTP/1.1 requests on the fast path: {}, connections handed to pingora: {}\n",
            s.http_fast_requests, s.http_pingora_handovers
        );
    }
    if s.http_header_timeouts > 0 {
        out += &format!("http       request heads timed out (408): {}\n", s.http_header_timeouts);
    }
    if !s.http_h2_goaways.is_empty() {
        let codes: Vec<String> = s.http_h2_goaways.iter().map(|(code, n)| format!("{code} {n}")).collect();
        out += &format!("http       HTTP/2 GOAWAYs sent: {}\n", codes.join(", "));
    }
    if s.http_log_dropped > 0 {
        out += &format!("http       access log lines dropped (writer behind): {}\n", s.http_log_dropped);
    }
    let dp = &s.dataplane;
    if !dp.attached {
        out += "dataplane  detached\n";
        return out;
    }
    out += &format!("dataplane  attached, pinned under {}\n\n", dp.pin_dir);

    let mut t = table(&["INTERFACE", "HOOK", "MODE", "ORIGIN", "IFINDEX", "LINK", "PROGRAM"]);
    for a in &dp.attachments {
        t.add_row(vec![
            a.interface.clone(),
            a.hook.clone(),
            a.mode.clone(),
            a.origin.clone(),
            a.ifindex.to_string(),
            a.link_id.to_string(),
            a.program_id.to_string(),
        ]);
    }
    out += &format!("{t}\n\n");

    let mut t = table(&["PROGRAM", "ID", "INSNS", "PINNED"]);
    for p in &dp.programs {
        let insns = p.verified_instructions.map_or("-".into(), |n| n.to_string());
        t.add_row(vec![p.name.clone(), p.id.to_string(), insns, p.pinned.clone()]);
    }
    out += &format!("{t}\n\n");

    let mut t = table(&["MAP", "ID", "ENTRIES", "PINNED"]);
    for m in &dp.maps {
        t.add_row(vec![
            m.name.clone(),
            m.id.to_string(),
            m.max_entries.to_string(),
            m.pinned.clone().unwrap_or("-".into()),
        ]);
    }
    out += &format!("{t}\n\n");
    out += &counters(&dp.counters).to_string();
    out
}

pub fn counters(rows: &[CounterRow]) -> Table {
    let mut t = table(&["HOOK", "PROTOCOL", "VERDICT", "PACKETS", "BYTES"]);
    for r in rows {
        t.add_row(vec![r.hook.clone(), r.proto.clone(), r.verdict.clone(), r.packets.to_string(), r.bytes.to_string()]);
    }
    if rows.is_empty() {
        t.add_row(vec!["(no packets yet)"]);
    }
    t
}

/// `http cert list`: one line per certificate.
pub fn certs(all: &[hostgate_api::CertView]) -> Table {
    let mut t = table(&["NAME", "NAMES", "ISSUER", "NOT AFTER", "KEY", "DEFAULT"]);
    for c in all {
        let names = match &c.problem {
            Some(p) => format!("not served: {p}"),
            None => c.names.join("\n"),
        };
        let default = if c.default { "yes" } else { "-" };
        t.add_row(vec![
            c.name.clone(),
            names,
            c.issuer.clone(),
            c.not_after.clone(),
            c.key_type.clone(),
            default.into(),
        ]);
    }
    t
}

/// `http acme status`: one line per name with `--acme`.
pub fn acme(all: &[hostgate_api::AcmeView]) -> Table {
    let mut t = table(&["NAME", "STATE", "NOT AFTER", "NEXT ATTEMPT", "FAILURES", "LAST ERROR"]);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    for a in all {
        let next = match a.next_attempt {
            None => "- (no [http] acme_directory)".to_string(),
            Some(t) if t <= now => "now".to_string(),
            Some(t) => format!("in {}", duration_text(t - now)),
        };
        t.add_row(vec![
            a.name.clone(),
            a.state.clone(),
            a.not_after_text.clone().unwrap_or_else(|| "-".into()),
            next,
            a.failures.to_string(),
            a.last_error.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    if all.is_empty() {
        t.add_row(vec!["(no vhost with --acme)"]);
    }
    t
}

/// `3d 4h`, `5h 2m`, `7m 3s`, `12s`.
fn duration_text(secs: i64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// The upper bound of the latency bucket holding quantile `q`.
fn latency_bound(buckets: &[u64], q: f64) -> String {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return "-".into();
    }
    let rank = ((q * total as f64).ceil() as u64).max(1);
    let mut seen = 0;
    for (i, n) in buckets.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return match hostgate_api::HTTP_LATENCY_BOUNDS_MS.get(i) {
                Some(ms) => format!("<={ms}ms"),
                None => ">10s".into(),
            };
        }
    }
    ">10s".into()
}

/// One (vhost, backend)'s counters on a line.
fn http_counters(c: &hostgate_api::HttpCounters) -> String {
    let k = &c.status_classes;
    let mut line = format!(
        "{} requests ({} 2xx, {} 3xx, {} 4xx, {} 5xx), {} errors, {} B in, {} B out, p50 {} p99 {}",
        c.requests,
        k[1],
        k[2],
        k[3],
        k[4],
        c.errors,
        c.bytes_in,
        c.bytes_out,
        latency_bound(&c.latency_buckets, 0.5),
        latency_bound(&c.latency_buckets, 0.99)
    );
    for (n, what) in [(c.upgraded, "upgraded"), (c.rate_limited, "rate-limited"), (c.too_large, "too large")] {
        if n > 0 {
            line += &format!(", {n} {what}");
        }
    }
    line
}

/// `http vhost list`: one line per vhost.
pub fn vhosts(all: &[hostgate_api::VhostView]) -> Table {
    let mut t = table(&["HOST", "CUSTOMER", "ROUTES", "BALANCE", "OPTIONS"]);
    for v in all {
        let routes: Vec<String> =
            v.routes.iter().map(|r| format!("{} -> {}", r.prefix, r.backends.join(" "))).collect();
        t.add_row(vec![
            v.host.clone(),
            v.customer.clone(),
            routes.join("\n"),
            v.balance.clone().unwrap_or_else(|| "round-robin".into()),
            vhost_options(v),
        ]);
    }
    t
}

fn vhost_options(v: &hostgate_api::VhostView) -> String {
    let mut o = Vec::new();
    if v.https_redirect {
        o.push("https-redirect".to_string());
    }
    if let Some(s) = v.hsts_max_age {
        o.push(format!("hsts={s}"));
    }
    if let Some(b) = v.max_body_bytes {
        o.push(format!("max-body={b}"));
    }
    if let Some(r) = v.rate_limit {
        o.push(format!("rate-limit={r}/s burst {}", v.rate_burst.unwrap_or(r)));
    }
    if v.proxy_protocol {
        o.push("proxy-protocol".to_string());
    }
    if let Some(f) = &v.access_log {
        o.push(format!("access-log={f}"));
    }
    if v.acme {
        o.push("acme".to_string());
    }
    if !v.error_pages.is_empty() {
        let codes: Vec<String> = v.error_pages.keys().map(u16::to_string).collect();
        o.push(format!("error-pages={}", codes.join(",")));
    }
    if let Some(path) = &v.health_path {
        o.push(format!("health GET {path} -> {}", v.health_status.unwrap_or(200)));
    }
    if let Some(s) = v.connect_timeout_secs {
        o.push(format!("connect-timeout={s}s"));
    }
    if let Some(s) = v.read_timeout_secs {
        o.push(format!("read-timeout={s}s"));
    }
    if v.backend_tls {
        let sni = v.backend_sni.as_deref().unwrap_or(&v.host);
        let check = match (v.backend_no_verify, v.backend_ca_pem.is_some()) {
            (true, _) => "not verified",
            (false, true) => "verified by its CA file",
            (false, false) => "verified by the system's roots",
        };
        o.push(format!("backend-tls {sni} ({check})"));
    }
    if o.is_empty() {
        "-".into()
    } else {
        o.join(", ")
    }
}

/// `http vhost show`: the vhost, its routes and its counters.
pub fn vhost(v: &hostgate_api::VhostView, counters: &[hostgate_api::HttpCounters]) -> String {
    let mut out = format!(
        "host       {}\ncustomer   {}\nbalance    {}\noptions    {}\n",
        v.host,
        v.customer,
        v.balance.clone().unwrap_or_else(|| "round-robin".into()),
        vhost_options(v)
    );
    for r in &v.routes {
        out += &format!("route      {} -> {}\n", r.prefix, r.backends.join(", "));
    }
    let mut t = table(&["BACKEND", "REQUESTS", "ERRORS", "2XX", "4XX", "5XX", "BYTES OUT", "P50", "P99"]);
    for c in counters.iter().filter(|c| c.vhost == v.host) {
        t.add_row(vec![
            c.backend.clone(),
            c.requests.to_string(),
            c.errors.to_string(),
            c.status_classes[1].to_string(),
            c.status_classes[3].to_string(),
            c.status_classes[4].to_string(),
            c.bytes_out.to_string(),
            latency_bound(&c.latency_buckets, 0.5),
            latency_bound(&c.latency_buckets, 0.99),
        ]);
    }
    out + &t.to_string()
}

pub fn detach(r: &DetachResponse) -> String {
    if r.links.is_empty() {
        return format!("nothing was attached ({} pins removed)", r.pins_removed);
    }
    format!("detached {} ({} pins removed)", r.links.join(", "), r.pins_removed)
}

pub fn applied<T>(r: &Applied<T>, what: &str) -> String {
    if r.applied {
        format!("{what} (revision {}, applied)", r.revision)
    } else {
        format!("{what} (revision {}; not yet applied to the data plane)", r.revision)
    }
}

pub fn vip_list(vips: &[VipView]) -> Table {
    let mut t = table(&["VIP", "ID", "BACKENDS", "PACKETS", "BYTES", "FLOWS"]);
    for v in vips {
        t.add_row(vec![
            v.vip.clone(),
            v.id.to_string(),
            v.backends.len().to_string(),
            v.traffic.packets.to_string(),
            v.traffic.bytes.to_string(),
            v.traffic.new_flows.to_string(),
        ]);
    }
    if vips.is_empty() {
        t.add_row(vec!["(no VIPs; hostgate vip add ...)"]);
    }
    t
}

pub fn vip_show(v: &VipView) -> String {
    let mut out = format!(
        "vip        {} (id {}, ring {} slots, revision {})\ntraffic    {} packets, {} bytes, {} flows\n\n",
        v.vip, v.id, v.ring_size, v.revision, v.traffic.packets, v.traffic.bytes, v.traffic.new_flows
    );
    let mut t = table(&["BACKEND", "ID", "WEIGHT", "MODE", "NODE", "HEALTH", "PACKETS", "BYTES", "FLOWS"]);
    for b in &v.backends {
        t.add_row(vec![
            b.backend.clone(),
            b.id.to_string(),
            b.weight.to_string(),
            b.mode.clone(),
            b.node.clone().unwrap_or("-".into()),
            b.health.clone(),
            b.traffic.packets.to_string(),
            b.traffic.bytes.to_string(),
            b.traffic.new_flows.to_string(),
        ]);
    }
    if v.backends.is_empty() {
        t.add_row(vec!["(no backends: new flows are dropped)"]);
    }
    out += &t.to_string();
    out
}

pub fn nodes(nodes: &[NodeView]) -> Table {
    let mut t = table(&["NODE", "STATE", "WEIGHT", "IPS", "ADDRESSES", ""]);
    for n in nodes {
        let state = if n.drained { format!("{} (drained)", n.state) } else { n.state.clone() };
        t.add_row(vec![
            n.name.clone(),
            state,
            n.weight.map_or("-".into(), |w| w.to_string()),
            n.ips.to_string(),
            n.addresses.join(", "),
            if n.this_node { "(this node)".into() } else { String::new() },
        ]);
    }
    t
}

fn since(secs: u64) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    format!("{} ago", duration(now.saturating_sub(secs)))
}

pub fn networks(all: &[hostgate_api::NetworkView]) -> Table {
    let mut t = table(&["NETWORK", "CUSTOMER", "SUBNET", "GATEWAY", "IPV6 PREFIX", "POOLS", "INTERFACES", "LEASES"]);
    for n in all {
        t.add_row(vec![
            n.name.clone(),
            n.customer.clone(),
            if n.routed { format!("{} (routed /32)", n.subnet) } else { n.subnet.clone() },
            n.gateway.clone(),
            n.ipv6_prefix.clone().unwrap_or("-".into()),
            n.pools.join(", "),
            if n.interfaces.is_empty() { "(relays)".into() } else { n.interfaces.join(", ") },
            n.leases.to_string(),
        ]);
    }
    t
}

/// `network show`: one field a line.
pub fn network(n: &hostgate_api::NetworkView, c: &hostgate_api::DhcpCounters) -> String {
    let list = |v: &[String]| if v.is_empty() { "-".to_string() } else { v.join(", ") };
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let limit = |v: Option<u32>| match v {
        Some(0) => "no limit".to_string(),
        Some(n) => format!("{n} a minute"),
        None => "-".into(),
    };
    let lines = [
        ("network", n.name.clone()),
        ("customer", n.customer.clone()),
        ("subnet", if n.routed { format!("{} (routed: /32 leases)", n.subnet) } else { n.subnet.clone() }),
        ("gateway", n.gateway.clone()),
        ("pools", list(&n.pools)),
        ("interfaces", if n.interfaces.is_empty() { "(relays only)".into() } else { n.interfaces.join(", ") }),
        ("lease time", n.lease_secs.map_or("-".into(), |s| duration(u64::from(s)))),
        ("dns", list(&n.dns)),
        ("domain", opt(&n.domain)),
        ("search", list(&n.search)),
        ("mtu", n.mtu.map_or("-".into(), |m| m.to_string())),
        ("ipv6 prefix", opt(&n.ipv6_prefix)),
        ("dns6", list(&n.dns6)),
        ("new per mac", limit(n.max_new_per_mac)),
        ("new per port", limit(n.max_new_per_port)),
        ("bound leases", n.leases.to_string()),
        (
            "counters",
            format!(
                "offers {} acks {} naks {} declines {} releases {} informs {} drops {}",
                c.offers, c.acks, c.naks, c.declines, c.releases, c.informs, c.drops
            ),
        ),
    ];
    lines.iter().map(|(k, v)| format!("{k:<13} {v}")).collect::<Vec<_>>().join("\n")
}

pub fn leases(all: &[hostgate_api::LeaseView]) -> Table {
    let mut t = table(&["NETWORK", "ADDRESS", "MAC", "CLIENT-ID", "HOSTNAME", "STATE", "EXPIRES", "PORT"]);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    for l in all {
        t.add_row(vec![
            l.network.clone(),
            l.addr.clone(),
            l.mac.clone(),
            l.client_id.clone().unwrap_or("-".into()),
            l.hostname.clone().unwrap_or("-".into()),
            l.state.clone(),
            format!("in {}", duration(l.expires.saturating_sub(now))),
            l.port.clone().unwrap_or("-".into()),
        ]);
    }
    t
}

pub fn reservations(all: &[hostgate_api::ReservationView]) -> Table {
    let mut t = table(&["NETWORK", "FOR", "ADDRESS", "HOSTNAME"]);
    for r in all {
        let who = match (&r.mac, &r.client_id, &r.circuit_id) {
            (Some(m), _, _) => format!("mac {m}"),
            (_, Some(c), _) => format!("client-id {c}"),
            (_, _, Some(c)) => format!("circuit-id {c}"),
            _ => "-".into(),
        };
        t.add_row(vec![r.network.clone(), who, r.addr.clone(), r.hostname.clone().unwrap_or("-".into())]);
    }
    t
}

pub fn ips(ips: &[IpView]) -> Table {
    let mut t = table(&["IP", "CUSTOMER", "NODE", "STATE", "SINCE"]);
    for v in ips {
        let node = v.owner.clone().unwrap_or("-".into()) + if v.pinned { " (pinned)" } else { "" };
        t.add_row(vec![v.addr.clone(), v.customer.clone(), node, v.state.clone(), since(v.since)]);
    }
    if ips.is_empty() {
        t.add_row(vec!["(no IPs assigned; hostgate ip assign ...)"]);
    }
    t
}

pub fn customers(all: &[CustomerView]) -> Table {
    let mut t = table(&["CUSTOMER", "IPS", "DESCRIPTION"]);
    for c in all {
        let ips: Vec<&str> = c.ips.iter().map(|i| i.addr.as_str()).collect();
        t.add_row(vec![c.name.clone(), ips.join(", "), c.description.clone()]);
    }
    t
}

pub fn customer(c: &CustomerView) -> String {
    format!("customer   {}\ncreated    {}\n{}\n\n{}", c.name, since(c.created), c.description, ips(&c.ips))
}

pub fn rules_stats(s: &RulesStatus) -> String {
    let mut out = match (&s.rules_dir, s.applied_at) {
        (None, _) => "firewall off (no firewall.rules_dir in the config)\n".to_string(),
        (Some(d), Some(at)) => format!("rules from {d}, applied {}\n", since(at)),
        (Some(d), None) => format!("rules from {d}, none applied yet\n"),
    };
    for e in &s.last_errors {
        out += &format!("last attempt failed: {e}\n");
    }
    let mut t = table(&["RULE", "CUSTOMER", "ACTION", "PACKETS", "BYTES"]);
    for r in &s.rules {
        let place = match r.line {
            Some(l) => format!("{}:{l}", r.file),
            None => format!("{} (default {})", r.file, r.direction),
        };
        t.add_row(vec![place, r.customer.clone(), r.action.clone(), r.packets.to_string(), r.bytes.to_string()]);
    }
    out += &format!("\n{t}\n");
    for (c, n) in &s.drops {
        out += &format!("\n{c}: {n} packets dropped or rejected");
    }
    out
}

pub fn containers(all: &[ContainerView]) -> Table {
    let mut t = table(&["CONTAINER", "CUSTOMER", "IFACE", "ADDRESSES", "MAC", "SPOOF DROPS"]);
    for c in all {
        t.add_row(vec![
            c.name.clone(),
            c.customer.clone(),
            c.iface.clone(),
            c.ips.join(", "),
            c.mac.clone().unwrap_or("any".into()),
            c.spoof_drops.to_string(),
        ]);
    }
    t
}

fn dns_status(d: &hostgate_api::DnsStatus) -> String {
    if let Some(e) = &d.error {
        return format!("dns        NOT SERVING (retried every second): {e}\n");
    }
    if d.listen.is_empty() {
        return "dns        off (no [dns] listen)\n".into();
    }
    format!(
        "dns        {} zone(s) on {}; {} queries ({} udp, {} tcp): {} noerror ({} nodata, {} referrals), {} nxdomain, \
         {} refused, {} formerr, {} notimp, {} servfail; {} truncated, {} dropped, rate-limited {} dropped + {} slipped; \
         tcp {} rejected, {} idle-closed; {} transfers, NOTIFY {} in, {} out ({} unanswered); \
         resolver {} forwarded, {} cache hits, {} failed, {} cached\n",
        d.zones,
        d.listen.join(", "),
        d.queries,
        d.udp,
        d.tcp,
        d.noerror,
        d.nodata,
        d.referrals,
        d.nxdomain,
        d.refused,
        d.formerr,
        d.notimp,
        d.servfail,
        d.truncated,
        d.dropped,
        d.rate_limited_dropped,
        d.rate_limited_slipped,
        d.tcp_rejected,
        d.tcp_idle_closed,
        d.transfers,
        d.notifies_in,
        d.notifies_out,
        d.notifies_unanswered,
        d.forwarded,
        d.cache_hits,
        d.forward_failed,
        d.cached,
    )
}

pub fn zones(all: &[hostgate_api::ZoneView]) -> Table {
    let mut t = table(&["ZONE", "SERIAL", "RECORDS", "DEFAULT TTL", "SECONDARIES", "QUERY LOG", "CUSTOMER"]);
    for z in all {
        let secondaries = match (z.allow_transfer.is_empty(), z.notify.is_empty()) {
            (true, true) => "-".to_string(),
            _ => format!(
                "xfr {}; notify {}{}",
                z.allow_transfer.len(),
                z.notify.len(),
                z.tsig_key.as_deref().map_or(String::new(), |k| format!("; tsig {k}"))
            ),
        };
        t.add_row(vec![
            z.origin.clone(),
            z.serial.to_string(),
            z.records.to_string(),
            z.default_ttl.to_string(),
            secondaries,
            if z.query_log { "on" } else { "off" }.to_string(),
            z.customer.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    t
}

pub fn records(all: &[hostgate_api::RecordView]) -> Table {
    let mut t = table(&["NAME", "TTL", "TYPE", "DATA"]);
    for r in all {
        t.add_row(vec![r.name.clone(), r.ttl.to_string(), r.rtype.clone(), r.data.clone()]);
    }
    t
}

/// One line of `hostgate monitor`.
pub fn monitor_event(e: &hostgate_api::MonitorEvent) -> String {
    let proto = match e.proto {
        6 => "tcp".to_string(),
        17 => "udp".to_string(),
        1 => "icmp".to_string(),
        58 => "icmpv6".to_string(),
        n => format!("proto {n}"),
    };
    let end = |a: &Option<String>, port: u16| {
        let a = a.clone().unwrap_or_else(|| "-".into());
        match port {
            0 => a,
            p if a.contains(':') => format!("[{a}]:{p}"),
            p => format!("{a}:{p}"),
        }
    };
    let mut line = format!(
        "{:>14.6} {:<8} {:<10} {} {} {} -> {} {proto}",
        e.ts_ns as f64 / 1e9,
        e.kind,
        e.verdict,
        e.hook,
        e.iface,
        end(&e.src, e.sport),
        end(&e.dst, e.dport)
    );
    for (k, v) in [("rule", &e.rule), ("customer", &e.customer), ("vip", &e.vip), ("backend", &e.backend)] {
        if let Some(v) = v {
            line.push_str(&format!(" {k}={v}"));
        }
    }
    line
}

pub fn ssh_users(all: &[hostgate_api::SshUserMap]) -> Table {
    let mut t = table(&["CUSTOMER", "USER", "CONTAINER"]);
    for m in all {
        t.add_row(vec![m.customer.clone(), m.user.clone(), m.container.clone()]);
    }
    t
}

pub fn ssh_keys(all: &[hostgate_api::SshKeyView]) -> Table {
    let mut t = table(&["CUSTOMER", "CONTAINER", "FINGERPRINT", "KEY"]);
    for k in all {
        // The key's type and comment; the base64 body says nothing to people.
        let words: Vec<&str> = k.line.split_whitespace().collect();
        let body = words.iter().position(|w| w.starts_with("AAAA")).unwrap_or(words.len());
        let summary = words.iter().enumerate().filter(|(i, _)| *i != body).map(|(_, w)| *w).collect::<Vec<_>>();
        t.add_row(vec![
            k.customer.clone(),
            k.container.clone().unwrap_or("any".into()),
            k.fingerprint.clone(),
            summary.join(" "),
        ]);
    }
    t
}

pub fn ssh_history(all: &[hostgate_api::SshSession]) -> Table {
    let mut t = table(&[
        "START",
        "DURATION",
        "CUSTOMER",
        "USER",
        "SOURCE",
        "CONTAINER",
        "UP",
        "DOWN",
        "EXIT",
        "OUTCOME",
        "KEY",
    ]);
    for s in all {
        t.add_row(vec![
            since(s.start),
            duration(s.end.saturating_sub(s.start)),
            if s.customer.is_empty() { "-".into() } else { s.customer.clone() },
            s.user.clone(),
            s.source.clone(),
            if s.container.is_empty() { "-".into() } else { s.container.clone() },
            s.bytes_up.to_string(),
            s.bytes_down.to_string(),
            s.exit_status.map_or("-".into(), |e| e.to_string()),
            s.outcome.clone(),
            s.fingerprint.clone(),
        ]);
    }
    t
}

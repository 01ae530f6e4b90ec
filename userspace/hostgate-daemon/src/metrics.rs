//! `GET /metrics` in the Prometheus text format (0.0.4), on its own TCP
//! listener (`[metrics] listen`, off by default). Every value is read at
//! scrape time from the same sources as `hostgate status`, `vip show` and
//! `rules stats`: the data plane's per-CPU counters (summed), the LB and
//! firewall counters, the services' counters. Labels are bounded by what
//! the operator declared (VIPs, backends, rules, networks), never by
//! traffic (no client addresses).

use std::{fmt::Write as _, sync::Arc};

use axum::{extract::State, http::header, response::IntoResponse, routing::get, Router};

use crate::{api::Failure, Daemon};

/// The router of the metrics listener.
pub fn router(daemon: Arc<Daemon>) -> Router {
    Router::new().route("/metrics", get(scrape)).with_state(daemon)
}

async fn scrape(State(d): State<Arc<Daemon>>) -> Result<impl IntoResponse, Failure> {
    let mut out = Exposition::default();
    let status = crate::status::collect(&d).await?;
    node(&mut out, &status);
    dataplane(&mut out, &status.dataplane.counters);
    lb(&mut out, &crate::lb::views(&d, None).await?);
    firewall(&mut out, &crate::fw::stats(State(d.clone())).await?.0);
    dhcp(&mut out, &status.dhcp);
    http(&mut out, &status.http, status.http_log_dropped);
    out.family(
        "hostgate_http_header_timeouts_total",
        "counter",
        "Plain-HTTP connections closed with 408: no complete request head in time.",
    );
    out.sample("hostgate_http_header_timeouts_total", &[], status.http_header_timeouts as f64);
    out.family(
        "hostgate_http_fast_requests_total",
        "counter",
        "HTTP/1.1 requests forwarded by the proxy's fast path (the others by pingora).",
    );
    out.sample("hostgate_http_fast_requests_total", &[], status.http_fast_requests as f64);
    out.family(
        "hostgate_http_pingora_handovers_total",
        "counter",
        "HTTP/1.1 connections handed from the fast path to pingora at a request it does not take.",
    );
    out.sample("hostgate_http_pingora_handovers_total", &[], status.http_pingora_handovers as f64);
    out.family(
        "hostgate_http_h2_goaway_total",
        "counter",
        "GOAWAY frames sent on HTTP/2 connections, by error code (ENHANCE_YOUR_CALM: rapid reset cut off).",
    );
    for (code, n) in &status.http_h2_goaways {
        out.sample("hostgate_http_h2_goaway_total", &[("code", code)], *n as f64);
    }
    dns(&mut out, &status.dns);
    ssh(&mut out, &d.ssh.ended());
    out.rows(
        "hostgate_service_log_dropped_total",
        "counter",
        "Per-customer SSH session and DNS query log lines dropped because their writer fell behind.",
        [
            (vec![("service", "ssh".to_string())], d.ssh.log_dropped() as f64),
            (vec![("service", "dns".to_string())], d.dns.log_dropped() as f64),
        ],
    );
    cluster(&mut out, &status.node, &d.cluster_counters);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], out.text))
}

/// Text exposition: each family's HELP and TYPE, then its samples.
#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
            let _ = write!(self.text, "{{{}}}", pairs.join(","));
        }
        let _ = writeln!(self.text, " {value}");
    }

    /// A whole family from `(labels, value)` rows.
    fn rows<'a>(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        rows: impl IntoIterator<Item = (Vec<(&'a str, String)>, f64)>,
    ) {
        self.family(name, kind, help);
        for (labels, value) in rows {
            let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
            self.sample(name, &labels, value);
        }
    }
}

/// Label values escape backslash, double quote and newline.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn node(out: &mut Exposition, s: &hostgate_api::Status) {
    let node = s.node.clone();
    out.rows(
        "hostgate_start_time_seconds",
        "gauge",
        "When the daemon started, seconds since the epoch.",
        [(vec![("node", node.clone())], s.started_at as f64)],
    );
    out.rows(
        "hostgate_store_revision",
        "gauge",
        "The store revision the daemon reads.",
        [(vec![("node", node.clone())], s.store.revision as f64)],
    );
    out.rows(
        "hostgate_cluster_members",
        "gauge",
        "Live members of the cluster as this node sees them.",
        [(vec![("node", node.clone())], s.cluster.members.len() as f64)],
    );
    out.rows(
        "hostgate_cluster_serving",
        "gauge",
        "1 while this node holds its membership lease (0: joining or fenced).",
        [(vec![("node", node)], if s.cluster.standing == "live" { 1.0 } else { 0.0 })],
    );
}

fn dataplane(out: &mut Exposition, rows: &[hostgate_api::CounterRow]) {
    let labels = |r: &hostgate_api::CounterRow| {
        vec![("hook", r.hook.clone()), ("proto", r.proto.clone()), ("verdict", r.verdict.clone())]
    };
    out.rows(
        "hostgate_dataplane_packets_total",
        "counter",
        "Packets the kernel programs handled, by hook, protocol and verdict (all CPUs).",
        rows.iter().map(|r| (labels(r), r.packets as f64)),
    );
    out.rows(
        "hostgate_dataplane_bytes_total",
        "counter",
        "Bytes the kernel programs handled, by hook, protocol and verdict (all CPUs).",
        rows.iter().map(|r| (labels(r), r.bytes as f64)),
    );
}

fn lb(out: &mut Exposition, vips: &[hostgate_api::VipView]) {
    type Pick = fn(&hostgate_api::Traffic) -> u64;
    let traffic: [(&str, &str, Pick); 3] = [
        ("packets", "Packets", |t| t.packets),
        ("bytes", "Bytes", |t| t.bytes),
        ("new_flows", "New connections", |t| t.new_flows),
    ];
    for (what, help, pick) in traffic {
        out.rows(
            &format!("hostgate_vip_{what}_total"),
            "counter",
            &format!("{help} the load balancer sent to a VIP."),
            vips.iter().map(|v| (vec![("vip", v.vip.clone())], pick(&v.traffic) as f64)),
        );
        out.rows(
            &format!("hostgate_backend_{what}_total"),
            "counter",
            &format!("{help} the load balancer sent to a backend."),
            vips.iter().flat_map(|v| {
                v.backends
                    .iter()
                    .map(|b| (vec![("vip", v.vip.clone()), ("backend", b.backend.clone())], pick(&b.traffic) as f64))
            }),
        );
    }
    out.rows(
        "hostgate_backend_up",
        "gauge",
        "1 unless the backend's health checks fail (unchecked backends count as up).",
        vips.iter().flat_map(|v| {
            v.backends.iter().map(|b| {
                let up = if b.health == "unhealthy" { 0.0 } else { 1.0 };
                (vec![("vip", v.vip.clone()), ("backend", b.backend.clone())], up)
            })
        }),
    );
}

fn firewall(out: &mut Exposition, s: &hostgate_api::RulesStatus) {
    let labels = |r: &hostgate_api::RuleStats| {
        vec![
            ("customer", r.customer.clone()),
            // The policy's default (no line) is named as such.
            ("rule", r.line.map_or_else(|| format!("{}:default", r.file), |l| format!("{}:{l}", r.file))),
            ("direction", r.direction.clone()),
            ("action", r.action.clone()),
        ]
    };
    out.rows(
        "hostgate_firewall_rule_packets_total",
        "counter",
        "Packets a firewall rule decided, by the rule's file:line.",
        s.rules.iter().map(|r| (labels(r), r.packets as f64)),
    );
    out.rows(
        "hostgate_firewall_rule_bytes_total",
        "counter",
        "Bytes a firewall rule decided, by the rule's file:line.",
        s.rules.iter().map(|r| (labels(r), r.bytes as f64)),
    );
    let ip = |t: &hostgate_api::IpTraffic| vec![("customer", t.customer.clone()), ("ip", t.ip.clone())];
    out.rows(
        "hostgate_customer_ip_packets_total",
        "counter",
        "Packets from the network to a guarded customer IP (one with firewall rules), whatever the rules decided.",
        s.ips.iter().map(|t| (ip(t), t.packets as f64)),
    );
    out.rows(
        "hostgate_customer_ip_bytes_total",
        "counter",
        "Bytes from the network to a guarded customer IP (one with firewall rules), whatever the rules decided.",
        s.ips.iter().map(|t| (ip(t), t.bytes as f64)),
    );
}

fn dhcp(out: &mut Exposition, all: &[hostgate_api::DhcpCounters]) {
    type Pick = fn(&hostgate_api::DhcpCounters) -> u64;
    let kinds: [(&str, &str, Pick); 7] = [
        ("offers", "DHCPOFFERs sent", |c| c.offers),
        ("acks", "DHCPACKs sent (each after its lease was durable)", |c| c.acks),
        ("naks", "DHCPNAKs sent", |c| c.naks),
        ("declines", "DHCPDECLINEs received", |c| c.declines),
        ("releases", "DHCPRELEASEs received", |c| c.releases),
        ("informs", "DHCPINFORMs answered", |c| c.informs),
        ("drops", "DHCP packets not answered (malformed, limited, pool exhausted)", |c| c.drops),
    ];
    for (what, help, pick) in kinds {
        out.rows(
            &format!("hostgate_dhcp_{what}_total"),
            "counter",
            &format!("{help}, by network."),
            all.iter().map(|c| (vec![("network", c.network.clone())], pick(c) as f64)),
        );
    }
}

/// The HTTP proxy per (vhost, backend); `backend="-"` for answers the
/// proxy gave itself, `vhost="-"` for unknown hosts. The latency is a
/// Prometheus histogram (cumulative buckets, seconds).
fn http(out: &mut Exposition, all: &[hostgate_api::HttpCounters], log_dropped: u64) {
    let labels = |c: &hostgate_api::HttpCounters| vec![("vhost", c.vhost.clone()), ("backend", c.backend.clone())];
    out.family("hostgate_http_requests_total", "counter", "HTTP requests by vhost, backend and status class.");
    for c in all {
        for (i, n) in c.status_classes.iter().enumerate() {
            let class = format!("{}xx", i + 1);
            out.sample(
                "hostgate_http_requests_total",
                &[("vhost", &c.vhost), ("backend", &c.backend), ("class", &class)],
                *n as f64,
            );
        }
        // Requests that ended before any answer was written (client gone).
        let unanswered = c.requests.saturating_sub(c.status_classes.iter().sum());
        out.sample(
            "hostgate_http_requests_total",
            &[("vhost", &c.vhost), ("backend", &c.backend), ("class", "none")],
            unanswered as f64,
        );
    }
    type Pick = fn(&hostgate_api::HttpCounters) -> u64;
    let kinds: [(&str, &str, Pick); 6] = [
        ("errors_total", "Failed requests and backend connection attempts (5xx included)", |c| c.errors),
        ("received_bytes_total", "Request body bytes received from clients", |c| c.bytes_in),
        ("sent_bytes_total", "Response body bytes sent to clients", |c| c.bytes_out),
        ("rate_limited_total", "Requests answered 429 by the vhost's rate limit", |c| c.rate_limited),
        ("too_large_total", "Requests answered 413 (body over the vhost's limit)", |c| c.too_large),
        ("upgraded_total", "Connections upgraded (101, WebSocket)", |c| c.upgraded),
    ];
    for (what, help, pick) in kinds {
        out.rows(
            &format!("hostgate_http_{what}"),
            "counter",
            &format!("{help}, by vhost and backend."),
            all.iter().map(|c| (labels(c), pick(c) as f64)),
        );
    }
    let name = "hostgate_http_request_duration_seconds";
    out.family(name, "histogram", "Request durations (head read to last byte sent), by vhost and backend.");
    for c in all {
        let mut cumulative = 0;
        for (i, n) in c.latency_buckets.iter().enumerate() {
            cumulative += n;
            let le = match hostgate_api::HTTP_LATENCY_BOUNDS_MS.get(i) {
                Some(ms) => format!("{}", *ms as f64 / 1000.0),
                None => "+Inf".to_string(),
            };
            out.sample(
                &format!("{name}_bucket"),
                &[("vhost", &c.vhost), ("backend", &c.backend), ("le", &le)],
                cumulative as f64,
            );
        }
        let l = [("vhost", c.vhost.as_str()), ("backend", c.backend.as_str())];
        out.sample(&format!("{name}_sum"), &l, c.latency_sum_us as f64 / 1e6);
        out.sample(&format!("{name}_count"), &l, cumulative as f64);
    }
    out.rows(
        "hostgate_http_access_log_dropped_total",
        "counter",
        "Access log lines dropped because the writer fell behind.",
        [(vec![], log_dropped as f64)],
    );
}

fn dns(out: &mut Exposition, s: &hostgate_api::DnsStatus) {
    let one = |v: u64| -> [(Vec<(&str, String)>, f64); 1] { [(vec![], v as f64)] };
    out.rows(
        "hostgate_dns_serving",
        "gauge",
        "1 while the DNS server answers on every configured address.",
        [(vec![], if !s.listen.is_empty() && s.error.is_none() { 1.0 } else { 0.0 })],
    );
    out.rows("hostgate_dns_zones", "gauge", "Zones the DNS server answers from.", one(s.zones));
    out.rows(
        "hostgate_dns_queries_total",
        "counter",
        "DNS queries received, by transport.",
        [
            (vec![("transport", "udp".to_string())], s.udp as f64),
            (vec![("transport", "tcp".to_string())], s.tcp as f64),
        ],
    );
    let rcodes = [
        ("noerror", s.noerror),
        ("nxdomain", s.nxdomain),
        ("refused", s.refused),
        ("formerr", s.formerr),
        ("notimp", s.notimp),
        ("servfail", s.servfail),
        ("badvers", s.badvers),
    ];
    out.rows(
        "hostgate_dns_responses_total",
        "counter",
        "DNS responses sent, by response code.",
        rcodes.iter().map(|(rcode, v)| (vec![("rcode", rcode.to_string())], *v as f64)),
    );
    let simple: [(&str, &str, u64); 8] = [
        ("nodata_responses", "NOERROR responses without data (included in rcode noerror)", s.nodata),
        ("referrals", "Delegations answered (included in rcode noerror)", s.referrals),
        ("truncated_responses", "Responses sent with TC=1 because they did not fit", s.truncated),
        ("dropped", "Queries not answered: too short, a response, or rate-limited", s.dropped),
        ("tcp_rejected", "TCP connections closed at once because the cap was reached", s.tcp_rejected),
        ("tcp_idle_closed", "TCP connections closed for idling", s.tcp_idle_closed),
        ("transfers", "AXFR/IXFR requests answered (refusals included)", s.transfers),
        ("notifies_unanswered", "NOTIFYs that no try got an answer to", s.notifies_unanswered),
    ];
    for (what, help, v) in simple {
        out.rows(&format!("hostgate_dns_{what}_total"), "counter", &format!("{help}."), one(v));
    }
    out.rows(
        "hostgate_dns_rate_limited_total",
        "counter",
        "Responses held back by response rate limiting: dropped, or slipped (sent as an empty TC=1 reply).",
        [
            (vec![("action", "dropped".to_string())], s.rate_limited_dropped as f64),
            (vec![("action", "slipped".to_string())], s.rate_limited_slipped as f64),
        ],
    );
    out.rows(
        "hostgate_dns_notifies_total",
        "counter",
        "DNS NOTIFYs received (in) and sent (out, each try).",
        [
            (vec![("direction", "in".to_string())], s.notifies_in as f64),
            (vec![("direction", "out".to_string())], s.notifies_out as f64),
        ],
    );
}

fn ssh(out: &mut Exposition, ended: &std::collections::BTreeMap<String, crate::ssh::Ended>) {
    out.rows(
        "hostgate_ssh_connections_total",
        "counter",
        "SSH proxy connections that ended, by outcome (ok, denied, session-limit, upstream-failed, no-login, ...).",
        ended.iter().map(|(o, e)| (vec![("outcome", o.clone())], e.connections as f64)),
    );
    let (up, down) = ended.values().fold((0, 0), |(u, d), e| (u + e.bytes_up, d + e.bytes_down));
    out.rows(
        "hostgate_ssh_bytes_total",
        "counter",
        "Bytes relayed by SSH proxy connections that ended: up (customer to container) and down.",
        [(vec![("direction", "up".to_string())], up as f64), (vec![("direction", "down".to_string())], down as f64)],
    );
}

fn cluster(out: &mut Exposition, node: &str, c: &crate::members::Counters) {
    use std::sync::atomic::Ordering::Relaxed;
    let rows: [(&str, &str, &std::sync::atomic::AtomicU64); 4] = [
        ("joins", "Times this node took a membership lease and joined", &c.joins),
        ("lease_renewals", "Membership lease renewals that succeeded", &c.renewals),
        (
            "lease_renewal_failures",
            "Membership lease renewals that failed or found the lease gone",
            &c.renewal_failures,
        ),
        ("fencings", "Times this node fenced itself (withdrew its IPs) because renewals failed", &c.fencings),
    ];
    for (what, help, v) in rows {
        out.rows(
            &format!("hostgate_cluster_{what}_total"),
            "counter",
            &format!("{help}."),
            [(vec![("node", node.to_string())], v.load(Relaxed) as f64)],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let mut out = Exposition::default();
        out.family("hostgate_x_total", "counter", "X.");
        out.sample("hostgate_x_total", &[("rule", "a\"b\\c\nd")], 3.0);
        assert_eq!(
            out.text,
            "# HELP hostgate_x_total X.\n# TYPE hostgate_x_total counter\nhostgate_x_total{rule=\"a\\\"b\\\\c\\nd\"} 3\n"
        );
    }
}

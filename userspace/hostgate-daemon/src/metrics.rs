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
        [(vec![("node", node)], if s.cluster.standing == "serving" { 1.0 } else { 0.0 })],
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

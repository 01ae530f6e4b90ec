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

//! `GET /metrics` against the real daemon and data plane: exact counts of
//! frames sent, read back through a real Prometheus parser, and a page
//! `promtool check metrics` has nothing to say about.

mod common;

use std::time::Duration;

use common::{ok, TestNode};
use hostgate_testbed::{
    packet::{tcp_flags, Packet},
    privileged,
    sender::{send_frames, Pace},
    topology::{CLIENT_IFACE, CLIENT_MAC, CLIENT_V4, NODE_MAC, NODE_V4},
};

const LISTEN: &str = "127.0.0.1:9468";

/// The page, fetched with curl inside the node's namespace.
fn scrape(node: &TestNode) -> String {
    let out = node.topo.node.exec("curl", ["-sf", &format!("http://{LISTEN}/metrics")]).expect("curl /metrics");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn parse(page: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(page.lines().map(|l| Ok(l.to_string()))).expect("Prometheus text format")
}

/// The value of `metric` with every label in `labels`.
fn value(s: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    s.samples
        .iter()
        .filter(|x| x.metric == metric && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match x.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => v,
            _ => 0.0,
        })
        .sum()
}

#[test]
fn metrics_count_exactly_what_was_sent() {
    if !privileged("metrics_count_exactly_what_was_sent") {
        return;
    }
    let mut node = TestNode::with_config("metrics", 1, &format!("\n[metrics]\nlisten = \"{LISTEN}\"\n"));
    node.topo.client.sysctl(&format!("net.ipv6.conf.{CLIENT_IFACE}.disable_ipv6"), "1").expect("sysctl");
    node.start_daemon();
    ok(node.cli(&["customer", "add", "acme"]));
    ok(node.cli(&["vip", "add", "203.0.113.10:80/tcp"]));
    let before = parse(&scrape(&node));
    let m = |p: Packet| p.macs(CLIENT_MAC, NODE_MAC);
    let frames = vec![
        m(Packet::ipv4(CLIENT_V4, NODE_V4).udp(40000, 9)).build(),
        m(Packet::ipv4(CLIENT_V4, NODE_V4).tcp(40000, 9, tcp_flags::SYN)).build(),
    ];
    assert_eq!(send_frames(&node.topo.client.path(), CLIENT_IFACE, frames, 30, Pace::FAST).expect("send"), 60);
    std::thread::sleep(Duration::from_millis(200));
    let page = scrape(&node);
    let after = parse(&page);
    for proto in ["ipv4-udp", "ipv4-tcp"] {
        let labels = [("hook", "xdp-uplink"), ("proto", proto)];
        let delta = value(&after, "hostgate_dataplane_packets_total", &labels)
            - value(&before, "hostgate_dataplane_packets_total", &labels);
        assert_eq!(delta, 30.0, "{proto}:\n{page}");
    }
    // Every area is there, with its declared objects as labels.
    assert_eq!(value(&after, "hostgate_vip_packets_total", &[("vip", "203.0.113.10:80/tcp")]), 0.0);
    assert!(after.samples.iter().any(|s| s.metric == "hostgate_vip_packets_total"), "{page}");
    for family in ["hostgate_start_time_seconds", "hostgate_store_revision", "hostgate_dataplane_bytes_total"] {
        assert!(after.samples.iter().any(|s| s.metric == family), "{family} missing:\n{page}");
    }
    for family in ["hostgate_firewall_rule_packets_total", "hostgate_dhcp_acks_total", "hostgate_backend_up"] {
        assert!(page.contains(&format!("# TYPE {family} ")), "{family} not declared:\n{page}");
    }
    // promtool (Debian's prometheus package) lints names, units and types.
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("metrics.txt");
    std::fs::write(&file, &page).expect("write");
    let lint = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("promtool check metrics < {}", file.display()))
        .output()
        .expect("promtool (apt-get install prometheus)");
    let said = String::from_utf8_lossy(&lint.stdout).into_owned() + &String::from_utf8_lossy(&lint.stderr);
    assert!(lint.status.success() && said.trim().is_empty(), "promtool check metrics:\n{said}");
}

//! `GET /metrics` against the real daemon and data plane: exact counts of
//! frames sent, read back through a real Prometheus parser, and a page
//! `promtool check metrics` has nothing to say about.

mod common;

use std::time::Duration;

use common::{eventually, ok, TestNode};
use hostgate_testbed::{
    netns::Netns,
    packet::{tcp_flags, Packet},
    privileged,
    sender::{send_frames, Pace},
    topology::{CLIENT_IFACE, CLIENT_MAC, CLIENT_V4, NODE_MAC, NODE_V4},
    unique_name,
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
    // acme's rules guard its IP 203.0.113.11, whose traffic is counted.
    let rules_dir = tempfile::tempdir().expect("dir");
    std::fs::write(rules_dir.path().join("acme.rules"), "customer acme\ndefault allow\ndrop udp port 5353\n")
        .expect("rules");
    let config = format!(
        "\n[metrics]\nlisten = \"{LISTEN}\"\n\n[ip]\npools = [\"203.0.113.0/24\"]\n\n[firewall]\nrules_dir = \"{}\"\n",
        rules_dir.path().display()
    );
    let mut node = TestNode::with_config("metrics", 1, &config);
    node.topo.client.sysctl(&format!("net.ipv6.conf.{CLIENT_IFACE}.disable_ipv6"), "1").expect("sysctl");
    node.start_daemon();
    ok(node.cli(&["customer", "add", "acme"]));
    ok(node.cli(&["ip", "assign", "203.0.113.11", "--customer", "acme"]));
    ok(node.cli(&["rules", "apply"]));
    ok(node.cli(&["vip", "add", "203.0.113.10:80/tcp"]));
    let before = parse(&scrape(&node));
    let m = |p: Packet| p.macs(CLIENT_MAC, NODE_MAC);
    let guarded = std::net::Ipv4Addr::new(203, 0, 113, 11);
    let frames = vec![
        m(Packet::ipv4(CLIENT_V4, NODE_V4).udp(40000, 9)).build(),
        m(Packet::ipv4(CLIENT_V4, NODE_V4).tcp(40000, 9, tcp_flags::SYN)).build(),
        m(Packet::ipv4(CLIENT_V4, guarded).udp(40000, 5353)).build(),
    ];
    assert_eq!(send_frames(&node.topo.client.path(), CLIENT_IFACE, frames, 30, Pace::FAST).expect("send"), 90);
    std::thread::sleep(Duration::from_millis(200));
    let page = scrape(&node);
    let after = parse(&page);
    for (proto, sent) in [("ipv4-udp", 60.0), ("ipv4-tcp", 30.0)] {
        let labels = [("hook", "xdp-uplink"), ("proto", proto)];
        let delta = value(&after, "hostgate_dataplane_packets_total", &labels)
            - value(&before, "hostgate_dataplane_packets_total", &labels);
        assert_eq!(delta, sent, "{proto}:\n{page}");
    }
    // The guarded customer IP: its count survives the re-applies of the
    // rules that any store change triggers (rule counters restart then).
    let ip = [("customer", "acme"), ("ip", "203.0.113.11")];
    assert_eq!(value(&after, "hostgate_customer_ip_packets_total", &ip), 30.0, "{page}");
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
    promtool_is_happy(&page);
}

/// The page must be lint-free for promtool (Debian's prometheus package).
fn promtool_is_happy(page: &str) {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("metrics.txt");
    std::fs::write(&file, page).expect("write");
    let lint = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("promtool check metrics < {}", file.display()))
        .output()
        .expect("promtool (apt-get install prometheus)");
    let said = String::from_utf8_lossy(&lint.stdout).into_owned() + &String::from_utf8_lossy(&lint.stderr);
    assert!(lint.status.success() && said.trim().is_empty(), "promtool check metrics:\n{said}");
}

/// One real client per service, each doing one thing, and the counter of
/// each service that says so: DHCP (udhcpc gets a lease), DNS (dig is
/// refused: no zone), HTTP (curl for an unknown host), SSH (a key nobody
/// registered is denied), cluster (the node joined once).
#[test]
fn metrics_count_what_every_service_did() {
    if !privileged("metrics_count_what_every_service_did") {
        return;
    }
    let config = format!(
        "\n[metrics]\nlisten = \"{LISTEN}\"\n\n[dns]\nlisten = [\"127.0.0.1:53\"]\n\n[http]\nlisten = [\"127.0.0.1:8080\"]\n\n[ssh]\nlisten = [\"127.0.0.1:2222\"]\n"
    );
    let mut node = TestNode::with_config("metricsvc", 0, &config);
    // A container port without an address for the DHCP client (as in tests/dhcp.rs).
    let ct = Netns::create(&unique_name("metricsvc-ct")).expect("netns");
    let n = &node.topo.node;
    n.ip(["link", "add", "hgd1", "type", "veth", "peer", "name", "eth0", "netns", ct.name()]).expect("veth");
    n.ip(["addr", "add", "198.51.100.129/25", "dev", "hgd1"]).expect("addr");
    n.ip(["link", "set", "hgd1", "up"]).expect("up");
    ct.ip(["link", "set", "eth0", "up"]).expect("up");
    node.start_daemon();
    ok(node.cli(&["customer", "add", "acme"]));
    ok(node.cli(&[
        "network",
        "add",
        "web",
        "--customer",
        "acme",
        "--subnet",
        "198.51.100.128/25",
        "--gateway",
        "198.51.100.129",
        "--pool",
        "198.51.100.200-198.51.100.210",
        "--iface",
        "hgd1",
    ]));
    let before = parse(&scrape(&node));

    // DHCP: one lease.
    let dir = tempfile::tempdir().expect("dir");
    let script = dir.path().join("udhcpc.sh");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").expect("script");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let got_lease = eventually(Duration::from_secs(10), || {
        ct.command("busybox")
            .args(["udhcpc", "-i", "eth0", "-n", "-q", "-f", "-t", "5", "-T", "1", "-s"])
            .arg(&script)
            .status()
            .expect("udhcpc (apt-get install busybox-static)")
            .success()
    });
    assert!(got_lease, "udhcpc got no lease: {}", node.log());
    // DNS: one UDP query, refused (no zone is served).
    let dig = node.topo.node.exec("dig", ["@127.0.0.1", "+tries=1", "+time=2", "www.example.test", "A"]).expect("dig");
    assert!(
        String::from_utf8_lossy(&dig.stdout).contains("status: REFUSED"),
        "{}",
        String::from_utf8_lossy(&dig.stdout)
    );
    // HTTP: one request for a host no vhost serves.
    let curl = node
        .topo
        .node
        .exec(
            "curl",
            ["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: nobody.test", "http://127.0.0.1:8080/"],
        )
        .expect("curl");
    assert!(
        !String::from_utf8_lossy(&curl.stdout).starts_with('2'),
        "refused: {}",
        String::from_utf8_lossy(&curl.stdout)
    );
    // SSH: one login with a key nobody registered.
    let key = dir.path().join("id");
    let keygen = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .expect("ssh-keygen");
    assert!(keygen.success());
    let key_arg = key.display().to_string();
    let ssh = node
        .topo
        .node
        .command("ssh")
        .args(["-p", "2222", "-i", &key_arg, "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"])
        .args(["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=5"])
        .args(["web@127.0.0.1", "true"])
        .output()
        .expect("ssh (apt-get install openssh-client)");
    let said = String::from_utf8_lossy(&ssh.stderr);
    assert!(!ssh.status.success() && said.contains("Permission denied"), "an unknown key is refused: {said}");

    let delta = |after: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]| {
        value(after, metric, labels) - value(&before, metric, labels)
    };
    let mut page = String::new();
    let settled = eventually(Duration::from_secs(5), || {
        page = scrape(&node);
        // The SSH connection is counted when the proxy has closed it.
        delta(&parse(&page), "hostgate_ssh_connections_total", &[("outcome", "denied")]) == 1.0
    });
    let after = parse(&page);
    assert!(settled, "one denied SSH connection:\n{page}");
    assert_eq!(delta(&after, "hostgate_dhcp_acks_total", &[("network", "web")]), 1.0, "{page}");
    assert_eq!(delta(&after, "hostgate_dns_queries_total", &[("transport", "udp")]), 1.0, "{page}");
    assert_eq!(delta(&after, "hostgate_dns_responses_total", &[("rcode", "refused")]), 1.0, "{page}");
    assert_eq!(delta(&after, "hostgate_http_requests_total", &[("vhost", "-")]), 1.0, "{page}");
    assert_eq!(value(&after, "hostgate_cluster_joins_total", &[]), 1.0, "{page}");
    assert_eq!(value(&after, "hostgate_cluster_members", &[]), 1.0, "{page}");
    assert_eq!(value(&after, "hostgate_cluster_serving", &[]), 1.0, "{page}");
    promtool_is_happy(&page);
}

//! The load balancer end to end: the real daemon in a namespace, VIPs and
//! backends declared with the real CLI, real TCP and UDP servers in
//! container namespaces, real clients.

mod common;

use std::{collections::BTreeMap, net::SocketAddr};

use common::{ok, TestNode};
use hostgate_api::VipView;
use hostgate_testbed::{privileged, servers};

fn tally(answers: &[Result<String, String>]) -> BTreeMap<String, usize> {
    let mut t = BTreeMap::new();
    for a in answers {
        *t.entry(a.clone().unwrap_or_else(|e| format!("error: {e}"))).or_default() += 1;
    }
    t
}

#[test]
fn tcp_vip_spreads_by_weight_over_real_connections() {
    if !privileged("tcp_vip_spreads_by_weight_over_real_connections") {
        return;
    }
    let mut node = TestNode::with_config("lbtcp", 3, "\n[ip]\npools = [\"203.0.113.0/24\"]\n");
    node.start_daemon();
    // As in production: the VIP is a customer IP this node holds (and answers ARP for),
    // so replies leave with a source address of the node itself.
    ok(node.cli(&["customer", "add", "acme"]));
    ok(node.cli(&["ip", "assign", "203.0.113.10", "--customer", "acme"]));
    let _servers: Vec<_> = node
        .topo
        .containers
        .iter()
        .enumerate()
        .map(|(i, c)| {
            servers::tcp_identity(&c.ns.path(), "0.0.0.0:80".parse().expect("addr"), &format!("c{}", i + 1))
                .expect("server")
        })
        .collect();

    let out = ok(node.cli(&["vip", "add", "203.0.113.10", "--proto", "tcp", "--port", "80"]));
    assert!(out.contains("VIP 203.0.113.10:80/tcp added") && out.contains("applied"), "{out}");
    for (i, weight) in [(0, "1"), (1, "2"), (2, "1")] {
        let addr = node.topo.containers[i].v4.to_string();
        ok(node.cli(&["backend", "add", "203.0.113.10:80/tcp", &addr, "--weight", weight]));
    }

    const N: usize = 400;
    let answers =
        servers::tcp_ask(&node.topo.client.path(), "203.0.113.10:80".parse().expect("vip"), N).expect("client");
    let t = tally(&answers);
    assert_eq!(t.keys().filter(|k| k.starts_with("error")).count(), 0, "failed connections: {t:?}");
    for (name, share) in [("c1", 0.25), ("c2", 0.5), ("c3", 0.25)] {
        let got = *t.get(name).unwrap_or(&0) as f64 / N as f64;
        assert!((got - share).abs() < 0.1, "{name}: {got} of connections, weight share {share}: {t:?}");
    }

    // Live per-backend traffic: every connection was a new flow on some backend.
    let v: VipView =
        serde_json::from_str(&ok(node.cli(&["vip", "show", "203.0.113.10:80/tcp", "--json"]))).expect("json");
    assert_eq!(v.backends.len(), 3);
    let flows: u64 = v.backends.iter().map(|b| b.traffic.new_flows).sum();
    assert_eq!(flows, N as u64, "{v:?}");
    assert_eq!(v.traffic.new_flows, N as u64);
    let human = ok(node.cli(&["vip", "show", "203.0.113.10:80/tcp"]));
    assert!(human.contains("198.51.100.10") && human.contains("WEIGHT"), "{human}");

    // Declarations survive a daemon restart, and traffic still flows.
    node.daemon.as_mut().expect("daemon").kill();
    node.start_daemon();
    let list: Vec<VipView> = serde_json::from_str(&ok(node.cli(&["vip", "list", "--json"]))).expect("json");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].backends.len(), 3);
    let again =
        servers::tcp_ask(&node.topo.client.path(), "203.0.113.10:80".parse().expect("vip"), 40).expect("client");
    assert!(again.iter().all(Result::is_ok), "{:?}", tally(&again));

    // Removing the VIP stops the balancing: the address is no longer answered.
    ok(node.cli(&["vip", "remove", "203.0.113.10:80/tcp"]));
    let gone: Vec<VipView> = serde_json::from_str(&ok(node.cli(&["vip", "list", "--json"]))).expect("json");
    assert!(gone.is_empty());
}

#[test]
fn udp_and_ipv6_vips() {
    if !privileged("udp_and_ipv6_vips") {
        return;
    }
    let mut node = TestNode::new("lbudp", 2);
    node.start_daemon();
    let mut servers_running = Vec::new();
    for (i, c) in node.topo.containers.iter().enumerate() {
        let name = format!("c{}", i + 1);
        servers_running
            .push(servers::udp_identity(&c.ns.path(), "0.0.0.0:53".parse().expect("a"), &name).expect("udp"));
        let v6: SocketAddr = format!("[{}]:8080", c.v6).parse().expect("a");
        servers_running.push(servers::tcp_identity(&c.ns.path(), v6, &name).expect("tcp6"));
    }
    ok(node.cli(&["vip", "add", "203.0.113.53", "--proto", "udp", "--port", "53"]));
    ok(node.cli(&["vip", "add", "2001:db8:113::10", "--proto", "tcp", "--port", "80"]));
    for c in &node.topo.containers {
        ok(node.cli(&["backend", "add", "203.0.113.53:53/udp", &c.v4.to_string()]));
        ok(node.cli(&["backend", "add", "[2001:db8:113::10]:80/tcp", &c.v6.to_string(), "--port", "8080"]));
    }

    let udp = servers::udp_ask(&node.topo.client.path(), "203.0.113.53:53".parse().expect("vip"), 100).expect("udp");
    let t = tally(&udp);
    assert_eq!(t.get("c1").copied().unwrap_or(0) + t.get("c2").copied().unwrap_or(0), 100, "{t:?}");
    assert!(t.get("c1").copied().unwrap_or(0) > 20 && t.get("c2").copied().unwrap_or(0) > 20, "{t:?}");

    let tcp6 =
        servers::tcp_ask(&node.topo.client.path(), "[2001:db8:113::10]:80".parse().expect("vip"), 100).expect("tcp6");
    let t = tally(&tcp6);
    assert_eq!(t.get("c1").copied().unwrap_or(0) + t.get("c2").copied().unwrap_or(0), 100, "{t:?}");
    assert!(t.get("c1").copied().unwrap_or(0) > 20 && t.get("c2").copied().unwrap_or(0) > 20, "{t:?}");
}

#[test]
fn bad_lb_requests_are_refused_clearly() {
    if !privileged("bad_lb_requests_are_refused_clearly") {
        return;
    }
    let mut node = TestNode::new("lbbad", 1);
    node.start_daemon();
    let err = |args: &[&str]| {
        let out = node.cli(args);
        assert!(!out.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(err(&["vip", "add", "203.0.113.10", "--port", "80"]).contains("--port needs --proto"));
    assert!(err(&["vip", "add", "not-an-ip"]).contains("is not ADDR"));
    assert!(err(&["vip", "add", "203.0.113.10", "--ring-size", "1000"]).contains("ring-size: 1000 must be a prime"));
    assert!(err(&["backend", "add", "203.0.113.10", "198.51.100.6"]).contains("VIP 203.0.113.10 does not exist"));
    ok(node.cli(&["vip", "add", "203.0.113.10"]));
    assert!(err(&["vip", "add", "203.0.113.10"]).contains("already exists"));
    assert!(err(&["backend", "add", "203.0.113.10", "2001:db8::6"]).contains("different IP families"));
    assert!(err(&["backend", "add", "203.0.113.10", "198.51.100.6", "--port", "8080"])
        .contains("backend port needs a VIP with a port"));
    ok(node.cli(&["backend", "add", "203.0.113.10", "198.51.100.6"]));
    assert!(err(&["backend", "add", "203.0.113.10", "198.51.100.6"]).contains("already exists"));
    assert!(err(&["backend", "remove", "203.0.113.10", "198.51.100.99"]).contains("has no backend"));
}

fn backend_health(node: &TestNode, vip: &str, backend: &str) -> String {
    let v: VipView = serde_json::from_str(&ok(node.cli(&["vip", "show", vip, "--json"]))).expect("json");
    v.backends.iter().find(|b| b.backend == backend).map(|b| b.health.clone()).unwrap_or_default()
}

/// Polls until `backend` of `vip` reports `want`; returns how long it took.
fn wait_health(node: &TestNode, vip: &str, backend: &str, want: &str) -> std::time::Duration {
    let start = std::time::Instant::now();
    while start.elapsed() < std::time::Duration::from_secs(15) {
        if backend_health(node, vip, backend) == want {
            return start.elapsed();
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("{backend} of {vip} never became {want}: {}", node.log());
}

#[test]
fn failed_health_check_moves_new_flows_and_spares_the_others() {
    if !privileged("failed_health_check_moves_new_flows_and_spares_the_others") {
        return;
    }
    let mut node = TestNode::new("lbhc", 3);
    node.start_daemon();
    let tcp_server = |i: usize, c: &hostgate_testbed::Container| {
        servers::tcp_identity(&c.ns.path(), "0.0.0.0:80".parse().expect("a"), &format!("c{}", i + 1)).expect("tcp")
    };
    let mut tcp: Vec<Option<servers::IdentityServer>> =
        node.topo.containers.iter().enumerate().map(|(i, c)| Some(tcp_server(i, c))).collect();
    let _udp: Vec<_> = node
        .topo
        .containers
        .iter()
        .enumerate()
        .map(|(i, c)| {
            servers::udp_identity(&c.ns.path(), "0.0.0.0:53".parse().expect("a"), &format!("c{}", i + 1)).expect("udp")
        })
        .collect();

    let check =
        ["--check", "tcp", "--check-interval", "200ms", "--check-timeout", "150ms", "--rise", "2", "--fall", "2"];
    ok(node.cli(&["vip", "add", "203.0.113.10", "--proto", "tcp", "--port", "80"]));
    ok(node.cli(&["vip", "add", "203.0.113.53", "--proto", "udp", "--port", "53"]));
    for c in &node.topo.containers {
        let addr = c.v4.to_string();
        let mut args = vec!["backend", "add", "203.0.113.10:80/tcp", addr.as_str()];
        args.extend(check);
        ok(node.cli(&args));
        // The UDP service is judged by the container's TCP server.
        let mut args = vec!["backend", "add", "203.0.113.53:53/udp", addr.as_str(), "--check-port", "80"];
        args.extend(check);
        ok(node.cli(&args));
    }
    let c3 = node.topo.containers[2].v4.to_string();
    assert_eq!(backend_health(&node, "203.0.113.10:80/tcp", &c3), "healthy");

    // Long-lived UDP flows, each pinned to a backend by the connection table.
    let udp_vip: SocketAddr = "203.0.113.53:53".parse().expect("vip");
    let flows = servers::udp_flows(&node.topo.client.path(), 30).expect("flows");
    let before: Vec<String> = flows.iter().map(|s| servers::udp_query(s, udp_vip).expect("answer")).collect();
    assert!(before.iter().any(|b| b == "c3"), "some flows on c3: {before:?}");

    // c3's server dies: its check fails and it leaves both VIPs.
    tcp[2] = None;
    let took = wait_health(&node, "203.0.113.10:80/tcp", &c3, "unhealthy");
    assert!(took < std::time::Duration::from_secs(3), "noticed after {took:?}");
    wait_health(&node, "203.0.113.53:53/udp", &c3, "unhealthy");
    std::thread::sleep(std::time::Duration::from_millis(200));

    let answers =
        servers::tcp_ask(&node.topo.client.path(), "203.0.113.10:80".parse().expect("vip"), 90).expect("client");
    let t = tally(&answers);
    assert_eq!(
        t.get("c1").copied().unwrap_or(0) + t.get("c2").copied().unwrap_or(0),
        90,
        "all new flows avoid c3: {t:?}"
    );

    // Flows on the healthy backends were not disturbed; c3's moved.
    for (flow, was) in flows.iter().zip(&before) {
        let now = servers::udp_query(flow, udp_vip).expect("answer");
        if was == "c3" {
            assert_ne!(now, "c3");
        } else {
            assert_eq!(&now, was, "a flow on a healthy backend moved");
        }
    }

    // c3 comes back and takes new flows again.
    tcp[2] = Some(tcp_server(2, &node.topo.containers[2]));
    wait_health(&node, "203.0.113.10:80/tcp", &c3, "healthy");
    std::thread::sleep(std::time::Duration::from_millis(200));
    let answers =
        servers::tcp_ask(&node.topo.client.path(), "203.0.113.10:80".parse().expect("vip"), 90).expect("client");
    assert!(tally(&answers).get("c3").copied().unwrap_or(0) > 10, "{:?}", tally(&answers));
}

#[test]
fn dsr_to_another_node_beside_local_nat() {
    if !privileged("dsr_to_another_node_beside_local_nat") {
        return;
    }
    use hostgate_testbed::topology::ClusterTopology;
    let pass = tempfile::NamedTempFile::new().expect("tmp");
    std::fs::write(pass.path(), hostgate_dataplane::XDP_PASS_OBJECT).expect("write");
    let topo = ClusterTopology::build("dsr", &[1, 2], pass.path()).expect("topology");
    let ifaces = |n: &hostgate_testbed::topology::ClusterNode| {
        n.containers.iter().map(|c| c.node_iface.clone()).collect::<Vec<_>>()
    };
    let (a, b) = (&topo.nodes[0], &topo.nodes[1]);
    let mut da = common::TestDaemon::new("dsra", &a.ns.path(), &ifaces(a), &[a.v4.to_string(), a.v6.to_string()]);
    let mut db = common::TestDaemon::new("dsrb", &b.ns.path(), &ifaces(b), &[b.v4.to_string(), b.v6.to_string()]);
    da.start_daemon();
    db.start_daemon();
    ok(da.cli(&["node", "add", &db.name, "--address", &b.v4.to_string(), "--address", &b.v6.to_string()]));
    ok(db.cli(&["node", "add", &da.name, "--address", &a.v4.to_string(), "--address", &a.v6.to_string()]));
    let nodes = ok(da.cli(&["node", "list"]));
    assert!(nodes.contains(&db.name) && nodes.contains("(this node)"), "{nodes}");

    // A serves from its c1, B from its c2; IPv6 on port 8080.
    let (ac1, bc2) = (&a.containers[0], &b.containers[1]);
    let _servers = [
        servers::tcp_identity(&ac1.ns.path(), "0.0.0.0:80".parse().expect("a"), "a-c1").expect("s"),
        servers::tcp_identity(&bc2.ns.path(), "0.0.0.0:80".parse().expect("a"), "b-c2").expect("s"),
        servers::tcp_identity(&ac1.ns.path(), format!("[{}]:8080", ac1.v6).parse().expect("a"), "a-c1").expect("s"),
        servers::tcp_identity(&bc2.ns.path(), format!("[{}]:8080", bc2.v6).parse().expect("a"), "b-c2").expect("s"),
    ];
    // Both nodes hold the same declarations; each sees its own backend as local.
    for (d, _) in [(&da, 'a'), (&db, 'b')] {
        ok(d.cli(&["vip", "add", "203.0.113.10", "--proto", "tcp", "--port", "80"]));
        ok(d.cli(&["backend", "add", "203.0.113.10:80/tcp", &ac1.v4.to_string(), "--mode", "dsr", "--node", &da.name]));
        ok(d.cli(&["backend", "add", "203.0.113.10:80/tcp", &bc2.v4.to_string(), "--mode", "dsr", "--node", &db.name]));
        ok(d.cli(&["vip", "add", "2001:db8:113::10", "--proto", "tcp", "--port", "80"]));
        let v6 = "[2001:db8:113::10]:80/tcp";
        ok(d.cli(&["backend", "add", v6, &ac1.v6.to_string(), "--port", "8080", "--mode", "dsr", "--node", &da.name]));
        ok(d.cli(&["backend", "add", v6, &bc2.v6.to_string(), "--port", "8080", "--mode", "dsr", "--node", &db.name]));
    }

    for target in ["203.0.113.10:80", "[2001:db8:113::10]:80"] {
        let answers = servers::tcp_ask(&topo.client.path(), target.parse().expect("vip"), 200).expect("client");
        let t = tally(&answers);
        let (local, remote) = (t.get("a-c1").copied().unwrap_or(0), t.get("b-c2").copied().unwrap_or(0));
        assert_eq!(local + remote, 200, "{target}: {t:?}");
        assert!(local > 50 && remote > 50, "{target}: {t:?}");
    }
    // B delivered what A tunnelled; A sent it back out of its uplink (XDP_TX).
    let vb: VipView =
        serde_json::from_str(&ok(db.cli(&["vip", "show", "203.0.113.10:80/tcp", "--json"]))).expect("json");
    let at_b = vb.backends.iter().find(|x| x.backend == bc2.v4.to_string()).expect("backend");
    assert!(at_b.traffic.new_flows > 50, "{vb:?}");
    let sa = da.status();
    let tx: u64 =
        sa.dataplane.counters.iter().filter(|r| r.hook == "xdp-uplink" && r.verdict == "tx").map(|r| r.packets).sum();
    assert!(tx > 100, "tunnelled packets: {:?}", sa.dataplane.counters);
}

#[test]
fn flows_keep_their_backend_across_changes_and_restarts() {
    if !privileged("flows_keep_their_backend_across_changes_and_restarts") {
        return;
    }
    let mut node = TestNode::new("lbct", 3);
    node.start_daemon();
    let _udp: Vec<_> = node
        .topo
        .containers
        .iter()
        .enumerate()
        .map(|(i, c)| {
            servers::udp_identity(&c.ns.path(), "0.0.0.0:53".parse().expect("a"), &format!("c{}", i + 1)).expect("udp")
        })
        .collect();
    ok(node.cli(&["vip", "add", "203.0.113.53", "--proto", "udp", "--port", "53"]));
    for c in &node.topo.containers[..2] {
        ok(node.cli(&["backend", "add", "203.0.113.53:53/udp", &c.v4.to_string()]));
    }
    let vip: SocketAddr = "203.0.113.53:53".parse().expect("vip");
    let flows = servers::udp_flows(&node.topo.client.path(), 40).expect("flows");
    let first: Vec<String> = flows.iter().map(|f| servers::udp_query(f, vip).expect("answer")).collect();

    // A heavy new backend and a daemon restart: established flows stay put.
    ok(node.cli(&["backend", "add", "203.0.113.53:53/udp", &node.topo.containers[2].v4.to_string(), "--weight", "5"]));
    node.daemon.as_mut().expect("daemon").kill();
    node.start_daemon();
    let after: Vec<String> = flows.iter().map(|f| servers::udp_query(f, vip).expect("answer")).collect();
    assert_eq!(after, first, "flows moved");

    // New flows do reach the new backend.
    let fresh = servers::udp_ask(&node.topo.client.path(), vip, 60).expect("udp");
    assert!(tally(&fresh).get("c3").copied().unwrap_or(0) > 20, "{:?}", tally(&fresh));
}

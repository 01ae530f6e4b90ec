//! The firewall end to end: rules files in the daemon's rules directory
//! guard a customer IP on a real node; clients see allowed, dropped and
//! rejected connections; a broken file keeps the rules in force.

mod common;

use std::time::{Duration, Instant};

use common::{ok, TestNode};
use hostgate_api::RulesStatus;
use hostgate_testbed::{privileged, servers};

fn connect(node: &TestNode, port: u16) -> Result<String, String> {
    let target = format!("203.0.113.10:{port}").parse().expect("addr");
    servers::tcp_ask(&node.topo.client.path(), target, 1).expect("client").remove(0)
}

#[test]
fn rules_guard_a_customer_ip() {
    if !privileged("rules_guard_a_customer_ip") {
        return;
    }
    let rules_dir = tempfile::tempdir().expect("dir");
    let config =
        format!("\n[ip]\npools = [\"203.0.113.0/24\"]\n\n[firewall]\nrules_dir = \"{}\"\n", rules_dir.path().display());
    let mut node = TestNode::with_config("fw", 0, &config);
    node.start_daemon();
    ok(node.cli(&["customer", "add", "acme"]));
    ok(node.cli(&["ip", "assign", "203.0.113.10", "--customer", "acme"]));
    let start = Instant::now();
    while !String::from_utf8_lossy(&node.topo.node.ip(["addr", "show", "uplink0"]).expect("ip").stdout)
        .contains("203.0.113.10")
    {
        assert!(start.elapsed() < Duration::from_secs(10), "IP never appeared");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Services on the customer IP, in the node itself.
    let _servers: Vec<_> = [80u16, 22, 23]
        .iter()
        .map(|p| {
            servers::tcp_identity(
                &node.topo.node.path(),
                format!("203.0.113.10:{p}").parse().expect("a"),
                &format!("port{p}"),
            )
            .expect("server")
        })
        .collect();
    assert_eq!(connect(&node, 22), Ok("port22".into()), "no rules yet: open");

    let file = rules_dir.path().join("acme.rules");
    std::fs::write(
        &file,
        "customer acme\ndefault drop\nallow tcp port 80\nreject tcp port 23\nallow icmp type echo-request\n",
    )
    .expect("write");
    let out = ok(node.cli(&["rules", "apply"]));
    assert!(out.contains("applied 3 rule(s) from 1 file(s)"), "{out}");

    assert_eq!(ok(node.cli(&["rules", "diff"])).trim(), "no changes");
    assert_eq!(connect(&node, 80), Ok("port80".into()));
    let refused = connect(&node, 23).expect_err("rejected");
    assert!(refused.contains("refused"), "reject answers with a RST: {refused}");
    let dropped = connect(&node, 22).expect_err("dropped");
    assert!(dropped.contains("timed out"), "drop is silent: {dropped}");
    node.topo.client.exec("ping", ["-c", "1", "-W", "2", "203.0.113.10"]).expect("echo-request allowed");

    let stats: RulesStatus = serde_json::from_str(&ok(node.cli(&["rules", "stats", "--json"]))).expect("json");
    let by_line = |l: Option<u32>| stats.rules.iter().find(|r| r.line == l).map_or(0, |r| r.packets);
    assert!(by_line(Some(3)) >= 1 && by_line(Some(4)) >= 1 && by_line(None) >= 1, "{stats:?}");
    assert!(stats.drops["acme"] >= 2, "{stats:?}");
    let human = ok(node.cli(&["rules", "stats"]));
    assert!(human.contains("acme.rules:3") && human.contains("(default in)"), "{human}");

    // Counters never go back (Prometheus counters, `hostgate top`'s rates):
    // not when another change in the store reloads the same rules, not on a
    // forced apply of the same file, and not for the rules kept when one is
    // added.
    let counted = |stats: &RulesStatus| -> Vec<((String, Option<u32>), u64)> {
        stats.rules.iter().map(|r| ((r.direction.clone(), r.line), r.packets)).collect()
    };
    let before = counted(&stats);
    ok(node.cli(&["customer", "add", "beta"]));
    ok(node.cli(&["rules", "apply"]));
    std::fs::write(
        &file,
        "customer acme\ndefault drop\nallow tcp port 80\nreject tcp port 23\nallow icmp type echo-request\nallow tcp port 8080\n",
    )
    .expect("write");
    assert!(ok(node.cli(&["rules", "apply"])).contains("applied 4 rule(s)"));
    let later: RulesStatus = serde_json::from_str(&ok(node.cli(&["rules", "stats", "--json"]))).expect("json");
    let after = counted(&later);
    for (rule, packets) in &before {
        let now = after.iter().find(|(r, _)| r == rule).map_or(0, |(_, p)| *p);
        assert!(now >= *packets, "rule {rule:?} went back from {packets} to {now}: {later:?}");
    }

    // A broken file is refused with its location; the rules in force stay.
    std::fs::write(&file, "customer acme\ndefault drop\nallow tcp port 80\nallow tcp port 22 from nowhere\n")
        .expect("write");
    let failed = node.cli(&["rules", "apply"]);
    assert!(!failed.status.success());
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(stderr.contains(&format!("{}:4:24: error: bad CIDR \"nowhere\"", file.display())), "{stderr}");
    assert_eq!(connect(&node, 80), Ok("port80".into()));
    assert!(connect(&node, 22).is_err(), "old rules still drop 22");
    let diff = ok(node.cli(&["rules", "diff"]));
    assert!(diff.contains("! ") && diff.contains("bad CIDR"), "{diff}");

    // The daemon picks up a fixed file by itself.
    std::fs::write(&file, "customer acme\ndefault drop\nallow tcp port 80, 22\n").expect("write");
    let start = Instant::now();
    loop {
        if connect(&node, 22).is_ok() {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "change never applied: {}", node.log());
    }
}

use hostgate_testbed::{
    packet::{tcp_flags, Packet},
    sender::{send_frames, Pace},
    topology::{CLIENT_IFACE, CLIENT_MAC, CLIENT_V4, NODE_MAC},
};

/// A node guarding 203.0.113.10 for acme with the rules in `rules`.
fn guarded_node(purpose: &str, rules: &str) -> (TestNode, tempfile::TempDir) {
    let rules_dir = tempfile::tempdir().expect("dir");
    std::fs::write(rules_dir.path().join("acme.rules"), rules).expect("write");
    let config =
        format!("\n[ip]\npools = [\"203.0.113.0/24\"]\n\n[firewall]\nrules_dir = \"{}\"\n", rules_dir.path().display());
    let mut node = TestNode::with_config(purpose, 0, &config);
    node.topo.client.sysctl(&format!("net.ipv6.conf.{CLIENT_IFACE}.disable_ipv6"), "1").expect("sysctl");
    node.start_daemon();
    ok(node.cli(&["customer", "add", "acme"]));
    ok(node.cli(&["ip", "assign", "203.0.113.10", "--customer", "acme"]));
    ok(node.cli(&["rules", "apply"]));
    (node, rules_dir)
}

fn uplink_count(node: &TestNode, proto: &str, verdict: &str) -> u64 {
    node.status()
        .dataplane
        .counters
        .iter()
        .filter(|r| r.hook == "xdp-uplink" && r.proto == proto && r.verdict == verdict)
        .map(|r| r.packets)
        .sum()
}

#[test]
fn syn_flood_is_held_to_the_rate_while_others_connect() {
    if !privileged("syn_flood_is_held_to_the_rate_while_others_connect") {
        return;
    }
    let (node, _dir) = guarded_node("fwflood", "customer acme\ndefault drop\nrate-limit 100/s burst 50 tcp port 80\n");
    let _server =
        servers::tcp_identity(&node.topo.node.path(), "203.0.113.10:80".parse().expect("a"), "web").expect("server");
    let passed_before = uplink_count(&node, "ipv4-tcp", "pass");

    // 20 000 SYNs from one spoofed source over about 2 s.
    let flood: Vec<Vec<u8>> = (0..1000u16)
        .map(|i| {
            Packet::ipv4([198, 18, 0, 66], [203, 0, 113, 10])
                .macs(CLIENT_MAC, NODE_MAC)
                .tcp(10_000 + i, 80, tcp_flags::SYN)
                .build()
        })
        .collect();
    let client = node.topo.client.path();
    let started = std::time::Instant::now();
    let flooder = std::thread::spawn(move || {
        send_frames(&client, CLIENT_IFACE, flood, 20, Pace { rate: 10_000, max_duration: Duration::from_secs(10) })
    });
    std::thread::sleep(Duration::from_millis(300));
    // The legitimate client, from its own address, still gets in.
    let answers =
        servers::tcp_ask(&node.topo.client.path(), "203.0.113.10:80".parse().expect("vip"), 20).expect("client");
    assert!(answers.iter().all(|a| a.as_deref() == Ok("web")), "{answers:?}");
    let sent = flooder.join().expect("flooder").expect("send");
    let secs = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(200));

    let passed = uplink_count(&node, "ipv4-tcp", "pass") - passed_before;
    let dropped = uplink_count(&node, "ipv4-tcp", "drop");
    // The flood may pass burst + rate x time; the client's own segments pass too (a few per connection).
    let allowance = 50.0 + 100.0 * secs + 20.0 * 8.0;
    assert!((passed as f64) <= allowance * 1.1, "passed {passed} of {sent} in {secs:.1} s (allowance {allowance:.0})");
    assert!(passed >= 100, "the rate is a rate, not a wall: {passed}");
    assert!(dropped + passed >= sent, "every flood SYN was judged: {dropped} + {passed} < {sent}");
}

#[test]
fn reloads_under_traffic_never_leave_a_gap() {
    if !privileged("reloads_under_traffic_never_leave_a_gap") {
        return;
    }
    // Two rulesets that both drop UDP to port 9, by different rules; an
    // inconsistent moment (half old, half new) would let packets through.
    let a = "customer acme\ndefault allow\ndrop udp port 9\n";
    let b = "customer acme\ndefault drop\nallow tcp port 80\nallow udp port 53\n";
    let (node, dir) = guarded_node("fwswap", a);
    let file = dir.path().join("acme.rules");
    let frame = Packet::ipv4(CLIENT_V4, [203, 0, 113, 10]).macs(CLIENT_MAC, NODE_MAC).udp(40000, 9).build();
    let client = node.topo.client.path();
    let sender = std::thread::spawn(move || {
        send_frames(
            &client,
            CLIENT_IFACE,
            vec![frame],
            30_000,
            Pace { rate: 10_000, max_duration: Duration::from_secs(10) },
        )
    });
    for i in 0..20 {
        std::fs::write(&file, if i % 2 == 0 { b } else { a }).expect("write");
        ok(node.cli(&["rules", "apply"]));
    }
    let sent = sender.join().expect("sender").expect("send");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(uplink_count(&node, "ipv4-udp", "pass"), 0, "a packet slipped through during a reload");
    assert_eq!(uplink_count(&node, "ipv4-udp", "drop"), sent);
}

/// A node with `containers` containers whose daemon applies a fresh rules
/// directory; customer acme exists and owns the first container as `web`.
fn firewalled_node(purpose: &str, containers: usize) -> (TestNode, tempfile::TempDir) {
    let rules_dir = tempfile::tempdir().expect("dir");
    let config = format!("\n[firewall]\nrules_dir = \"{}\"\n", rules_dir.path().display());
    let mut node = TestNode::with_config(purpose, containers, &config);
    node.start_daemon();
    ok(node.cli(&["customer", "add", "acme"]));
    let c = &node.topo.containers[0];
    common::add_web_container(&node, &c.node_iface, &[c.v4.to_string()], None);
    (node, rules_dir)
}

#[test]
fn outgoing_rules_hold_containers() {
    if !privileged("outgoing_rules_hold_containers") {
        return;
    }
    let (node, rules_dir) = firewalled_node("fwout", 1);
    let c = &node.topo.containers[0];
    // The client answers UDP on port 9 and 10.
    let _servers: Vec<_> = [9u16, 10]
        .iter()
        .map(|p| {
            servers::udp_identity(
                &node.topo.client.path(),
                format!("0.0.0.0:{p}").parse().expect("a"),
                &format!("udp{p}"),
            )
            .expect("server")
        })
        .collect();
    let ask = |port: u16| {
        servers::udp_ask(&c.ns.path(), format!("{CLIENT_V4}:{port}").parse().expect("a"), 1).expect("udp").remove(0)
    };
    assert_eq!(ask(9), Ok("udp9".into()), "no rules: open");

    std::fs::write(
        rules_dir.path().join("acme.rules"),
        "customer acme\ndefault drop\ndrop out udp to 198.18.0.0/24 port 9\n",
    )
    .expect("write");
    ok(node.cli(&["rules", "apply"]));
    assert!(ask(9).is_err(), "outgoing UDP to port 9 dropped");
    assert_eq!(ask(10), Ok("udp10".into()), "other outgoing traffic allowed");
    let stats: RulesStatus = serde_json::from_str(&ok(node.cli(&["rules", "stats", "--json"]))).expect("json");
    let rule = stats.rules.iter().find(|r| r.line == Some(3)).expect("rule");
    assert_eq!((rule.direction.as_str(), rule.packets), ("out", 1));
}

#[test]
fn outgoing_reject_answers_the_container() {
    if !privileged("outgoing_reject_answers_the_container") {
        return;
    }
    let (node, rules_dir) = firewalled_node("fwrej", 1);
    let c = &node.topo.containers[0];
    // Servers on the client, so that a refusal can only come from the rule.
    let client = node.topo.client.path();
    let _tcp = servers::tcp_identity(&client, "0.0.0.0:25".parse().expect("a"), "smtp").expect("server");
    let _udp = servers::udp_identity(&client, "0.0.0.0:9".parse().expect("a"), "udp9").expect("server");
    let smtp: std::net::SocketAddr = format!("{CLIENT_V4}:25").parse().expect("a");
    let discard: std::net::SocketAddr = format!("{CLIENT_V4}:9").parse().expect("a");
    let tcp = || servers::tcp_ask(&c.ns.path(), smtp, 1).expect("tcp").remove(0);
    let udp = || servers::udp_ask_connected(&c.ns.path(), discard).expect("udp");
    assert_eq!(tcp(), Ok("smtp".into()), "no rules: open");
    assert_eq!(udp(), Ok("udp9".into()), "no rules: open");

    std::fs::write(
        rules_dir.path().join("acme.rules"),
        "customer acme\ndefault allow\nreject out tcp port 25\nreject out udp port 9\n",
    )
    .expect("write");
    ok(node.cli(&["rules", "apply"]));
    let started = Instant::now();
    let refused = tcp().expect_err("rejected");
    assert!(refused.contains("refused"), "a RST answers the SYN: {refused}");
    let refused = udp().expect_err("rejected");
    assert!(refused.contains("refused"), "an ICMP port unreachable answers the datagram: {refused}");
    assert!(started.elapsed() < Duration::from_secs(2), "answered at once, not timed out");
    let stats: RulesStatus = serde_json::from_str(&ok(node.cli(&["rules", "stats", "--json"]))).expect("json");
    for line in [3, 4] {
        let rule = stats.rules.iter().find(|r| r.line == Some(line)).expect("rule");
        assert_eq!(rule.packets, 1, "rule on line {line} hit once");
    }
}

#[test]
fn containers_reach_out_through_snat_and_replies_get_back_in() {
    if !privileged("containers_reach_out_through_snat_and_replies_get_back_in") {
        return;
    }
    let rules_dir = tempfile::tempdir().expect("dir");
    std::fs::write(rules_dir.path().join("acme.rules"), "customer acme\ndefault drop\n").expect("write");
    let config =
        format!("\n[ip]\npools = [\"203.0.113.0/24\"]\n\n[firewall]\nrules_dir = \"{}\"\n", rules_dir.path().display());
    let mut node = TestNode::with_config("fwsnat", 1, &config);
    node.start_daemon();
    let c = &node.topo.containers[0];
    ok(node.cli(&["customer", "add", "acme"]));
    ok(node.cli(&["ip", "assign", "203.0.113.10", "--customer", "acme"]));
    ok(node.cli(&[
        "container",
        "add",
        "web",
        "--customer",
        "acme",
        "--iface",
        &c.node_iface,
        "--ip",
        &c.v4.to_string(),
        "--snat",
        "203.0.113.10",
    ]));
    ok(node.cli(&["rules", "apply"]));
    std::thread::sleep(Duration::from_millis(300));
    let table = String::from_utf8_lossy(
        &node.topo.node.exec("nft", ["list", "table", "inet", "hostgate"]).expect("nft").stdout,
    )
    .into_owned();
    assert!(table.contains("snat ip to 203.0.113.10"), "{table}");

    // The client tells each sender which address it saw.
    let client = node.topo.client.path();
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        hostgate_testbed::sender::enter_netns(&client)?;
        let s = std::net::UdpSocket::bind("0.0.0.0:9")?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut buf = [0u8; 64];
        for _ in 0..3 {
            let (_, peer) = s.recv_from(&mut buf)?;
            s.send_to(peer.ip().to_string().as_bytes(), peer)?;
        }
        Ok(())
    });
    std::thread::sleep(Duration::from_millis(100));
    let answers = servers::udp_ask(&c.ns.path(), format!("{CLIENT_V4}:9").parse().expect("a"), 3).expect("udp");
    echo.join().expect("echo thread").expect("echo");
    // Seen from outside as the customer IP; the replies passed `default drop` as replies.
    assert_eq!(answers, vec![Ok("203.0.113.10".to_string()); 3]);
    // Unsolicited traffic to the same IP still meets the default.
    let stray = Packet::ipv4(CLIENT_V4, [203, 0, 113, 10]).macs(CLIENT_MAC, NODE_MAC).udp(9, 40000).build();
    let before = uplink_count(&node, "ipv4-udp", "drop");
    send_frames(&node.topo.client.path(), CLIENT_IFACE, vec![stray], 3, Pace::FAST).expect("send");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(uplink_count(&node, "ipv4-udp", "drop") - before, 3);
}

#[test]
fn incoming_rules_guard_container_addresses_too() {
    if !privileged("incoming_rules_guard_container_addresses_too") {
        return;
    }
    let (node, rules_dir) = firewalled_node("fwct", 1);
    let c = &node.topo.containers[0];
    let addr = c.v4.to_string();
    let _servers: Vec<_> = [80u16, 22]
        .iter()
        .map(|p| {
            servers::tcp_identity(&c.ns.path(), format!("0.0.0.0:{p}").parse().expect("a"), &format!("port{p}"))
                .expect("server")
        })
        .collect();
    std::fs::write(
        rules_dir.path().join("acme.rules"),
        format!("customer acme\ndefault drop\nallow tcp port 80 to {addr}\n"),
    )
    .expect("write");
    ok(node.cli(&["rules", "apply"]));
    let ask = |port: u16| {
        servers::tcp_ask(&node.topo.client.path(), format!("{addr}:{port}").parse().expect("a"), 1)
            .expect("client")
            .remove(0)
    };
    assert_eq!(ask(80), Ok("port80".into()));
    assert!(
        ask(22).is_err(),
        "port 22 of the container is closed to the network: {}",
        ok(node.cli(&["rules", "stats"]))
    );
}

#[test]
fn answers_to_allowed_connections_pass_outgoing_rules() {
    if !privileged("answers_to_allowed_connections_pass_outgoing_rules") {
        return;
    }
    let (node, rules_dir) = firewalled_node("fwans", 1);
    let c = &node.topo.containers[0];
    let addr = c.v4.to_string();
    let _server = servers::tcp_identity(&c.ns.path(), "0.0.0.0:80".parse().expect("a"), "web").expect("server");
    // The container may start nothing itself, but may serve port 80.
    std::fs::write(
        rules_dir.path().join("acme.rules"),
        format!("customer acme\ndefault drop\nallow tcp port 80 to {addr}\ndrop out\n"),
    )
    .expect("write");
    ok(node.cli(&["rules", "apply"]));
    let answers =
        servers::tcp_ask(&node.topo.client.path(), format!("{addr}:80").parse().expect("a"), 5).expect("client");
    assert!(answers.iter().all(|a| a.as_deref() == Ok("web")), "{answers:?}");
    let out = servers::udp_ask(&c.ns.path(), format!("{CLIENT_V4}:9").parse().expect("a"), 1).expect("udp");
    assert!(out[0].is_err(), "the container cannot start conversations");
}

#[test]
fn incoming_rules_hold_between_containers() {
    if !privileged("incoming_rules_hold_between_containers") {
        return;
    }
    let (node, rules_dir) = firewalled_node("fwc2c", 2);
    let (web, other) = (&node.topo.containers[0], &node.topo.containers[1]);
    let addr = web.v4.to_string();
    for c in [web, other] {
        c.ns.ip(["route", "add", "198.51.100.0/24", "via", &c.gateway_v4.to_string()]).expect("route to the neighbour");
    }
    let _servers: Vec<_> = [80u16, 22]
        .iter()
        .map(|p| {
            servers::tcp_identity(&web.ns.path(), format!("0.0.0.0:{p}").parse().expect("a"), &format!("port{p}"))
                .expect("server")
        })
        .collect();
    std::fs::write(
        rules_dir.path().join("acme.rules"),
        format!("customer acme\ndefault drop\nallow tcp port 80 to {addr}\n"),
    )
    .expect("write");
    ok(node.cli(&["rules", "apply"]));
    // From the other container, inside the node: the same rules hold.
    let ask = |port: u16| {
        servers::tcp_ask(&other.ns.path(), format!("{addr}:{port}").parse().expect("a"), 1).expect("client").remove(0)
    };
    assert_eq!(ask(80), Ok("port80".into()));
    assert!(ask(22).is_err(), "port 22 closed to the neighbour too");
    // And web itself still reaches out, its replies coming back in.
    let out =
        servers::tcp_ask(&web.ns.path(), format!("{}:80", web.gateway_v4).parse().expect("a"), 1).expect("client");
    assert!(
        out[0].as_ref().err().is_none_or(|e| !e.contains("timed out")),
        "web's own connections are not held: {out:?}"
    );
}

/// `hostgate monitor` names the rule that dropped a test packet, with the
/// packet's addresses and ports, and reports nothing about allowed traffic.
#[test]
fn monitor_reports_the_rule_that_dropped_a_packet() {
    if !privileged("monitor_reports_the_rule_that_dropped_a_packet") {
        return;
    }
    let (node, _rules_dir) = guarded_node("fwmon", "customer acme\ndefault allow\ndrop udp port 5353\n");
    let mut monitor = std::process::Command::new(common::BIN)
        .arg("--socket")
        .arg(&node.socket)
        .args(["monitor", "--json", "--count", "1", "--ip", "203.0.113.10"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("monitor");
    // The watcher is connected once the daemon switched the report on.
    std::thread::sleep(Duration::from_millis(700));
    let m = |p: Packet| p.macs(CLIENT_MAC, NODE_MAC);
    let ip = std::net::Ipv4Addr::new(203, 0, 113, 10);
    let allowed = m(Packet::ipv4(CLIENT_V4, ip).udp(40001, 53)).build();
    let dropped = m(Packet::ipv4(CLIENT_V4, ip).udp(40000, 5353)).build();
    send_frames(&node.topo.client.path(), CLIENT_IFACE, vec![allowed, dropped], 1, Pace::FAST).expect("send");
    let deadline = Instant::now() + Duration::from_secs(5);
    while monitor.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < deadline, "no event within 5 s: {}", node.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut out = String::new();
    std::io::Read::read_to_string(&mut monitor.stdout.take().expect("stdout"), &mut out).expect("read");
    let event: hostgate_api::MonitorEvent = serde_json::from_str(out.trim()).expect("one JSON event");
    assert_eq!(
        (event.kind.as_str(), event.verdict.as_str(), event.hook.as_str()),
        ("firewall", "drop", "xdp-uplink"),
        "{out}"
    );
    assert!(event.rule.as_deref().is_some_and(|r| r.ends_with("acme.rules:3")), "the exact rule: {out}");
    assert_eq!(event.customer.as_deref(), Some("acme"));
    assert_eq!((event.src.as_deref(), event.sport, event.dport), (Some(CLIENT_V4.to_string().as_str()), 40000, 5353));
}

//! The daemon and CLI end to end, on a real data plane in namespaces.

mod common;

use std::time::{Duration, Instant};

use common::{counted, TestNode, BIN};
use hostgate_testbed::{
    packet::{tcp_flags, Packet, ETH_P_ARP},
    privileged,
    sender::{send_frames, Pace},
    topology::{CLIENT_IFACE, CLIENT_MAC, CLIENT_V4, CLIENT_V6, NODE_MAC, NODE_UPLINK, NODE_V4, NODE_V6},
};

#[test]
fn status_reports_attachments_and_exact_counts() {
    if !privileged("status_reports_attachments_and_exact_counts") {
        return;
    }
    let mut node = TestNode::new("st", 2);
    // No IPv6 from the client's own kernel: only our frames reach the uplink.
    node.topo.client.sysctl(&format!("net.ipv6.conf.{CLIENT_IFACE}.disable_ipv6"), "1").expect("sysctl");
    node.start_daemon();

    let s = node.status();
    assert!(s.dataplane.attached);
    let modes: Vec<(&str, &str, &str)> =
        s.dataplane.attachments.iter().map(|a| (a.interface.as_str(), a.mode.as_str(), a.origin.as_str())).collect();
    assert_eq!(
        modes,
        vec![
            (NODE_UPLINK, "xdp-native", "attached"),
            ("hgc1", "tcx-ingress", "attached"),
            ("hgc1", "tcx-egress", "attached"),
            ("hgc2", "tcx-ingress", "attached"),
            ("hgc2", "tcx-egress", "attached")
        ]
    );
    assert!(s.dataplane.maps.iter().any(|m| m.name == "hg_stats" && m.pinned.is_some()));
    assert_eq!(s.dataplane.programs.len(), 3);
    assert!(s.store.revision >= 1, "the daemon published its status to the store");

    let m = |p: Packet| p.macs(CLIENT_MAC, NODE_MAC);
    let frames = vec![
        m(Packet::ipv4(CLIENT_V4, NODE_V4).udp(40000, 9)).build(),
        m(Packet::ipv4(CLIENT_V4, NODE_V4).tcp(40000, 9, tcp_flags::SYN)).build(),
        m(Packet::ipv4(CLIENT_V4, NODE_V4).echo_request(1, 1)).build(),
        m(Packet::ipv4(CLIENT_V4, NODE_V4).vlan(42).udp(40000, 9)).build(),
        m(Packet::ipv6(CLIENT_V6, NODE_V6).tcp(40000, 9, tcp_flags::SYN)).build(),
        m(Packet::ipv6(CLIENT_V6, NODE_V6).echo_request(1, 1)).build(),
        m(Packet::ethertype(ETH_P_ARP).payload(&[0; 28])).build(),
    ];
    let sent = send_frames(&node.topo.client.path(), CLIENT_IFACE, frames, 25, Pace::FAST).expect("send");
    assert_eq!(sent, 175);
    std::thread::sleep(Duration::from_millis(200));

    let s = node.status();
    for (proto, n) in
        [("ipv4-udp", 50), ("ipv4-tcp", 25), ("ipv4-icmp", 25), ("ipv6-tcp", 25), ("ipv6-icmp", 25), ("non-ip", 25)]
    {
        assert_eq!(counted(&s, "xdp-uplink", proto), n, "{proto}: {:?}", s.dataplane.counters);
    }
    let total: u64 = s.dataplane.counters.iter().filter(|r| r.hook == "xdp-uplink").map(|r| r.packets).sum();
    assert_eq!(total, 175, "only our frames were counted");

    // Each container's traffic is counted at its veth's TC hook.
    let c = &node.topo.containers[1];
    c.ns.exec("ping", ["-c", "4", "-i", "0.05", "-W", "1", &c.gateway_v4.to_string()]).expect("ping");
    let s = node.status();
    assert!(counted(&s, "tc-container", "ipv4-icmp") >= 4);

    // People get tables, scripts get the same data as JSON.
    let human = String::from_utf8(node.cli(&["status"]).stdout).expect("utf8");
    for needle in [NODE_UPLINK, "xdp-native", "tcx-ingress", "hg_stats", "ipv4-udp", "PACKETS"] {
        assert!(human.contains(needle), "{needle} missing from:\n{human}");
    }
    let counters = node.cli(&["dataplane", "counters", "--json"]);
    let rows: Vec<hostgate_api::CounterRow> = serde_json::from_slice(&counters.stdout).expect("json");
    assert!(rows.iter().any(|r| r.proto == "ipv4-udp" && r.packets == 50));
}

#[test]
fn daemon_killed_and_restarted_under_traffic_loses_nothing() {
    if !privileged("daemon_killed_and_restarted_under_traffic_loses_nothing") {
        return;
    }
    let mut node = TestNode::new("rs", 1);
    node.topo.client.sysctl(&format!("net.ipv6.conf.{CLIENT_IFACE}.disable_ipv6"), "1").expect("sysctl");
    node.start_daemon();
    let first = node.status();
    let no_ports_before = node.snmp("Udp", "NoPorts");

    // 2 000 frames/s for 4 s, bounded in count and time.
    const FRAMES: u64 = 8_000;
    let frame = Packet::ipv4(CLIENT_V4, NODE_V4).macs(CLIENT_MAC, NODE_MAC).udp(40000, 9).payload(b"keepalive").build();
    let client = node.topo.client.path();
    let traffic = std::thread::spawn(move || {
        send_frames(
            &client,
            CLIENT_IFACE,
            vec![frame],
            FRAMES,
            Pace { rate: 2_000, max_duration: Duration::from_secs(20) },
        )
    });

    std::thread::sleep(Duration::from_millis(800));
    node.daemon.as_mut().expect("daemon").kill();
    assert!(!node.cli(&["status"]).status.success(), "daemon is down");
    // With no daemon at all, the pinned program still counts.
    let during = hostgate_dataplane::Counters::read_pinned(&node.layout).expect("pinned counters");
    std::thread::sleep(Duration::from_millis(500));
    let later = hostgate_dataplane::Counters::read_pinned(&node.layout).expect("pinned counters");
    let udp = |c: &hostgate_dataplane::Counters| {
        c.packets(hostgate_dataplane::abi::Hook::XdpUplink, hostgate_dataplane::abi::Proto::Ipv4Udp)
    };
    assert!(udp(&later) > udp(&during), "traffic still counted while the daemon is down");
    assert!(node.link_details(NODE_UPLINK).contains("xdp"), "XDP still attached");

    node.start_daemon();
    let second = node.status();
    assert!(second.dataplane.attachments.iter().all(|a| a.origin == "adopted"), "{:?}", second.dataplane.attachments);
    let links = |s: &hostgate_api::Status| s.dataplane.attachments.iter().map(|a| a.link_id).collect::<Vec<_>>();
    assert_eq!(links(&first), links(&second), "the same links carry the new programs");
    assert_ne!(first.pid, second.pid);

    let sent = traffic.join().expect("sender").expect("send");
    assert_eq!(sent, FRAMES);
    std::thread::sleep(Duration::from_millis(200));
    let end = node.status();
    assert_eq!(counted(&end, "xdp-uplink", "ipv4-udp"), FRAMES, "every frame was seen by the data plane");
    assert_eq!(node.snmp("Udp", "NoPorts") - no_ports_before, FRAMES, "every frame reached the node's stack");
}

#[test]
fn detach_removes_only_what_hostgate_attached() {
    if !privileged("detach_removes_only_what_hostgate_attached") {
        return;
    }
    let mut node = TestNode::new("dt", 1);
    // Someone else's TC setup on the container veth must survive: a clsact
    // qdisc and a TCX program of their own.
    node.topo.node.exec("tc", ["qdisc", "add", "dev", "hgc1", "clsact"]).expect("clsact");
    let foreign = attach_foreign_tcx(&node);
    node.start_daemon();
    assert_eq!(tcx_programs(&node), 2);
    assert!(node.link_details(NODE_UPLINK).contains("xdp"));

    let out = node.cli(&["dataplane", "detach"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("xdp-native:uplink0") && text.contains("tcx-ingress:hgc1"), "{text}");

    assert!(!node.link_details(NODE_UPLINK).contains("xdp"), "XDP left on the uplink");
    assert!(!node.layout.node_dir().exists(), "pins left under {}", node.layout.node_dir().display());
    assert!(!node.status().dataplane.attached);
    let qdiscs = node.topo.node.exec("tc", ["qdisc", "show", "dev", "hgc1"]).expect("tc");
    assert!(String::from_utf8_lossy(&qdiscs.stdout).contains("clsact"), "foreign qdisc removed");
    assert_eq!(tcx_programs(&node), 1, "exactly the foreign TCX program is left on hgc1");
    drop(foreign);
    assert!(!node.cli(&["dataplane", "detach"]).status.success(), "second detach is refused: nothing attached");
}

#[test]
fn detach_without_daemon_uses_the_pins() {
    if !privileged("detach_without_daemon_uses_the_pins") {
        return;
    }
    let mut node = TestNode::new("do", 1);
    node.start_daemon();
    node.daemon.as_mut().expect("daemon").kill();
    assert!(node.link_details(NODE_UPLINK).contains("xdp"));
    let config = node.config.display().to_string();
    let out = node.cli(&["dataplane", "detach", "--config", &config]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!node.link_details(NODE_UPLINK).contains("xdp"));
    assert_eq!(tcx_programs(&node), 0);
    assert!(!node.layout.node_dir().exists());
}

#[test]
fn sigterm_stops_the_daemon_but_not_the_data_plane() {
    if !privileged("sigterm_stops_the_daemon_but_not_the_data_plane") {
        return;
    }
    let mut node = TestNode::new("tm", 0);
    node.start_daemon();
    let status = node.daemon.as_mut().expect("daemon").signal_and_wait(libc::SIGTERM, Duration::from_secs(10));
    assert!(status.expect("daemon exits on SIGTERM").success(), "{}", node.log());
    assert!(!node.socket.exists(), "socket removed on shutdown");
    assert!(node.link_details(NODE_UPLINK).contains("xdp"), "the data plane stays attached");
    assert!(node.log().contains("shutting down"));
}

#[test]
fn malformed_config_is_refused_precisely_and_changes_nothing() {
    if !privileged("malformed_config_is_refused_precisely_and_changes_nothing") {
        return;
    }
    let mut node = TestNode::new("cf", 1);
    let good = std::fs::read_to_string(&node.config).expect("config");
    let cases = [
        (good.replace("xdp_mode = \"native\"", "xdp_mode = \"turbo\""), "unknown variant `turbo`"),
        (good.replace("[dataplane]", "[dataplane]\nuplink = \"x\""), "unknown field `uplink`"),
        (
            good.replace("container_interfaces = [\"hgc1\"]", "container_interfaces = [\"hgc1\", \"bad/name\"]"),
            "dataplane.container_interfaces[1]: \"bad/name\" is not a valid interface name",
        ),
        // Valid syntax, but an interface that does not exist: refused before anything is attached.
        (
            good.replace("container_interfaces = [\"hgc1\"]", "container_interfaces = [\"hgc1\", \"hgc9\"]"),
            "interface \"hgc9\" does not exist",
        ),
    ];
    for (i, (text, expected)) in cases.iter().enumerate() {
        let path = node.dir.path().join(format!("bad-{i}.toml"));
        std::fs::write(&path, text).expect("write");
        let mut child = node.spawn_daemon(&path);
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait") {
                break s;
            }
            assert!(Instant::now() < deadline, "daemon kept running with a bad config");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(!status.success());
        let log = node.log();
        assert!(log.contains(expected), "case {i}: expected {expected:?} in:\n{log}");
        assert!(!node.socket.exists(), "case {i}: socket created");
        assert!(!node.link_details(NODE_UPLINK).contains("xdp"), "case {i}: XDP attached");
        assert!(node.layout.pinned_links().expect("pins").is_empty(), "case {i}: links pinned");
        assert_eq!(tcx_programs(&node), 0, "case {i}: TCX attached");
    }
    // The file's path leads the message.
    let first = std::fs::read_to_string(node.dir.path().join("daemon-1.log")).expect("log");
    assert!(first.contains(&format!("{}: unknown variant", node.dir.path().join("bad-0.toml").display())), "{first}");

    // `hostgate config check` reports the same without starting anything.
    let out = std::process::Command::new(BIN)
        .args(["config", "check"])
        .arg(node.dir.path().join("bad-2.toml"))
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("dataplane.container_interfaces[1]"));
}

/// Attaches a TCX program that hostgate does not own to hgc1 (held by the
/// returned object, not pinned).
fn attach_foreign_tcx(node: &TestNode) -> ForeignTcx {
    let ns = node.topo.node.path();
    std::thread::spawn(move || {
        hostgate_testbed::sender::enter_netns(&ns).expect("setns");
        // Its own map pins (bpffs names cannot contain '.', so no tempdir).
        let pins = std::path::Path::new(common::PIN_ROOT).join(hostgate_testbed::unique_name("foreign"));
        std::fs::create_dir_all(&pins).expect("bpffs dir");
        let mut ebpf =
            aya::EbpfLoader::new().default_map_pin_directory(&pins).load(hostgate_dataplane::BPF_OBJECT).expect("load");
        let prog: &mut aya::programs::SchedClassifier =
            ebpf.program_mut("hg_tc_container").expect("prog").try_into().expect("tc");
        prog.load().expect("load prog");
        prog.attach("hgc1", aya::programs::TcAttachType::Ingress).expect("foreign attach");
        ForeignTcx { _ebpf: ebpf, pins }
    })
    .join()
    .expect("thread")
}

struct ForeignTcx {
    _ebpf: aya::Ebpf,
    pins: std::path::PathBuf,
}

impl Drop for ForeignTcx {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.pins);
    }
}

/// TCX programs on the container veth hgc1, counted from inside the node namespace.
fn tcx_programs(node: &TestNode) -> usize {
    let ns = node.topo.node.path();
    std::thread::spawn(move || {
        hostgate_testbed::sender::enter_netns(&ns).expect("setns");
        aya::programs::SchedClassifier::query_tcx("hgc1", aya::programs::TcAttachType::Ingress)
            .map(|(_, progs)| progs.len())
            .unwrap_or(0)
    })
    .join()
    .expect("thread")
}

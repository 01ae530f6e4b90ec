//! Privileged tests of the real programs in the real kernel: the parser
//! through BPF_PROG_TEST_RUN, and attach / adopt / detach on veths in
//! namespaces with real frames.

use std::{
    net::Ipv6Addr,
    path::{Path, PathBuf},
    time::Duration,
};

use aya::{
    programs::{TestRun, TestRunOptions, Xdp},
    EbpfLoader,
};
use hostgate_dataplane::{
    abi::{names, Hook, Proto},
    detach_pinned,
    pins::{AttachKind, PinLayout},
    Counters, Dataplane, DataplaneSpec, Origin, XdpModeChoice, BPF_OBJECT,
};
use hostgate_testbed::{
    packet::{tcp_flags, Ipv6Ext, Packet, ETH_P_ARP},
    privileged,
    sender::{enter_netns, send_frames, Pace},
    topology::{CLIENT_IFACE, CLIENT_MAC, CLIENT_V4, CLIENT_V6, NODE_MAC, NODE_UPLINK, NODE_V4, NODE_V6},
    unique_name, NodeTopology,
};

const PIN_ROOT: &str = "/sys/fs/bpf/hostgate-test";

/// Removes a directory of pins on drop, whatever happened.
struct DirGuard(PathBuf);

impl Drop for DirGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Removes a test node's pins on drop, whatever happened.
struct PinGuard(PinLayout);

impl Drop for PinGuard {
    fn drop(&mut self) {
        let _ = detach_pinned(&self.0);
    }
}

fn v6(a: u16, last: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, a, 0, 0, 0, 0, last)
}

/// Frames of every shape the parser handles, with the class it must report.
fn classified_frames() -> Vec<(&'static str, Vec<u8>, Proto)> {
    let (a4, b4) = ([198, 18, 0, 2], [203, 0, 113, 10]);
    let (a6, b6) = (v6(18, 2), v6(113, 10));
    vec![
        ("arp", Packet::ethertype(ETH_P_ARP).payload(&[0; 28]).build(), Proto::NonIp),
        ("v4 tcp", Packet::ipv4(a4, b4).tcp(1000, 80, tcp_flags::SYN).build(), Proto::Ipv4Tcp),
        (
            "v4 tcp options",
            Packet::ipv4(a4, b4).tcp(1000, 80, tcp_flags::SYN).tcp_options(&[2, 4, 5, 0xb4]).build(),
            Proto::Ipv4Tcp,
        ),
        ("v4 udp", Packet::ipv4(a4, b4).udp(1000, 53).payload(b"q").build(), Proto::Ipv4Udp),
        ("v4 icmp", Packet::ipv4(a4, b4).echo_request(1, 1).build(), Proto::Ipv4Icmp),
        ("v4 gre", Packet::ipv4(a4, b4).l4_proto(47).payload(&[0; 8]).build(), Proto::Ipv4Other),
        ("v4 options", Packet::ipv4(a4, b4).ipv4_options(&[7, 7, 4, 0, 0, 0, 0]).udp(1, 2).build(), Proto::Ipv4Udp),
        ("v4 vlan", Packet::ipv4(a4, b4).vlan(100).udp(1, 2).build(), Proto::Ipv4Udp),
        ("v4 qinq", Packet::ipv4(a4, b4).qinq(10).vlan(20).tcp(1, 2, tcp_flags::ACK).build(), Proto::Ipv4Tcp),
        ("v4 first fragment", Packet::ipv4(a4, b4).ipv4_fragment(0, true).udp(1, 2).build(), Proto::Ipv4Udp),
        (
            "v4 later fragment",
            Packet::ipv4(a4, b4).ipv4_fragment(185, false).payload(&[0; 16]).build(),
            Proto::Ipv4Fragment,
        ),
        ("v6 tcp", Packet::ipv6(a6, b6).tcp(1000, 443, tcp_flags::SYN).build(), Proto::Ipv6Tcp),
        ("v6 udp", Packet::ipv6(a6, b6).udp(1000, 53).build(), Proto::Ipv6Udp),
        ("v6 icmp", Packet::ipv6(a6, b6).echo_request(1, 1).build(), Proto::Ipv6Icmp),
        (
            "v6 ext chain",
            Packet::ipv6(a6, b6)
                .ipv6_ext(Ipv6Ext::HopByHop { units: 0 })
                .ipv6_ext(Ipv6Ext::Routing)
                .ipv6_ext(Ipv6Ext::DestOpts { units: 2 })
                .udp(1, 2)
                .build(),
            Proto::Ipv6Udp,
        ),
        (
            "v6 first fragment",
            Packet::ipv6(a6, b6).ipv6_ext(Ipv6Ext::Fragment { offset: 0, more: true }).tcp(1, 2, 0).build(),
            Proto::Ipv6Tcp,
        ),
        (
            "v6 later fragment",
            Packet::ipv6(a6, b6).ipv6_ext(Ipv6Ext::Fragment { offset: 100, more: false }).payload(&[0; 8]).build(),
            Proto::Ipv6Fragment,
        ),
        ("v6 vlan", Packet::ipv6(a6, b6).vlan(7).icmp(135, 0).payload(&[0; 16]).build(), Proto::Ipv6Icmp),
        ("v6 esp", Packet::ipv6(a6, b6).l4_proto(50).payload(&[0; 16]).build(), Proto::Ipv6Other),
        // (Frames shorter than an Ethernet header never reach XDP: the kernel refuses them.)
        ("eth only", Packet::ipv4(a4, b4).udp(1, 2).truncate(14).build(), Proto::Malformed),
        ("truncated v4", Packet::ipv4(a4, b4).udp(1, 2).truncate(30).build(), Proto::Malformed),
        (
            "truncated options",
            Packet::ipv4(a4, b4).ipv4_options(&[7, 7, 4]).udp(1, 2).truncate(36).build(),
            Proto::Malformed,
        ),
        ("truncated tcp", Packet::ipv4(a4, b4).tcp(1, 2, 0).truncate(14 + 20 + 12).build(), Proto::Malformed),
        (
            "truncated tcp options",
            Packet::ipv4(a4, b4).tcp(1, 2, 0).tcp_options(&[1; 8]).truncate(14 + 20 + 24).build(),
            Proto::Malformed,
        ),
        (
            "truncated v6 ext",
            Packet::ipv6(a6, b6).ipv6_ext(Ipv6Ext::HopByHop { units: 3 }).udp(1, 2).truncate(14 + 40 + 16).build(),
            Proto::Malformed,
        ),
        (
            "bad ihl",
            {
                let mut f = Packet::ipv4(a4, b4).udp(1, 2).build();
                f[14] = 0x43;
                f
            },
            Proto::Malformed,
        ),
        (
            "bad version",
            {
                let mut f = Packet::ipv6(a6, b6).udp(1, 2).build();
                f[14] = 0x40;
                f
            },
            Proto::Malformed,
        ),
    ]
}

#[test]
fn parser_classifies_every_shape() {
    if !privileged("parser_classifies_every_shape") {
        return;
    }
    let dir = PathBuf::from(PIN_ROOT).join(unique_name("parse"));
    std::fs::create_dir_all(&dir).expect("pin dir on bpffs");
    let _guard = DirGuard(dir.clone());
    let mut ebpf = EbpfLoader::new().default_map_pin_directory(&dir).load(BPF_OBJECT).expect("object loads");
    let prog: &mut Xdp = ebpf.program_mut(names::XDP_UPLINK).expect("program").try_into().expect("xdp");
    prog.load().expect("verifier accepts the XDP program");

    for (what, frame, expected) in classified_frames() {
        let before = Counters::read(ebpf.map(names::STATS_MAP).expect("map")).expect("read");
        let prog: &mut Xdp = ebpf.program_mut(names::XDP_UPLINK).expect("program").try_into().expect("xdp");
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(&frame);
        let result = prog.test_run(opts).expect("test run");
        assert_eq!(result.return_value, 2, "{what}: XDP_PASS");
        let after = Counters::read(ebpf.map(names::STATS_MAP).expect("map")).expect("read");
        assert_eq!(
            after.packets(Hook::XdpUplink, expected) - before.packets(Hook::XdpUplink, expected),
            1,
            "{what}: expected class {expected}, counters {after:?}"
        );
        assert_eq!(after.hook_packets(Hook::XdpUplink) - before.hook_packets(Hook::XdpUplink), 1, "{what}");
        assert_eq!(
            after.bytes(Hook::XdpUplink, expected) - before.bytes(Hook::XdpUplink, expected),
            frame.len() as u64,
            "{what}: bytes"
        );
    }
}

/// Runs `f` on a thread inside `ns`, where interface names resolve.
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        enter_netns(&ns).expect("setns");
        f()
    })
    .join()
    .expect("netns thread")
}

fn spec(node: &str, containers: Vec<String>) -> DataplaneSpec {
    DataplaneSpec {
        pin_root: PIN_ROOT.into(),
        node: node.into(),
        uplinks: vec![NODE_UPLINK.into()],
        container_ifaces: containers,
        xdp_mode: XdpModeChoice::Native,
    }
}

#[test]
fn attach_count_adopt_detach() {
    if !privileged("attach_count_adopt_detach") {
        return;
    }
    let topo = NodeTopology::build("dp", 1).expect("topology");
    let node = unique_name("dpnode");
    let layout = PinLayout::new(Path::new(PIN_ROOT), &node);
    let _guard = PinGuard(layout.clone());
    let spec = spec(&node, topo.container_ifaces());
    // IPv6 off on the client so its kernel adds nothing to what we send.
    topo.client.sysctl(&format!("net.ipv6.conf.{CLIENT_IFACE}.disable_ipv6"), "1").expect("sysctl");

    let s = spec.clone();
    let (first_ids, first_counts) = in_netns(&topo.node.path(), move || {
        let dp = Dataplane::start(&s).expect("data plane starts");
        let kinds: Vec<_> = dp.attachments().iter().map(|a| (a.key.kind, a.origin)).collect();
        assert_eq!(
            kinds,
            vec![
                (AttachKind::XdpNative, Origin::Attached),
                (AttachKind::TcxIngress, Origin::Attached),
                (AttachKind::TcxEgress, Origin::Attached)
            ]
        );
        let ids: Vec<u32> = dp.attachments().iter().map(|a| a.link_id).collect();
        (ids, dp.counters().expect("counters"))
        // dp dropped here: the process "exits", the pins keep everything attached
    });
    assert_eq!(first_counts.hook_packets(Hook::XdpUplink), 0);

    // Exactly counted traffic while no daemon holds the data plane.
    let frames = vec![
        Packet::ipv4(CLIENT_V4, NODE_V4).macs(CLIENT_MAC, NODE_MAC).udp(40000, 9).payload(&[1; 18]).build(),
        Packet::ipv4(CLIENT_V4, NODE_V4).macs(CLIENT_MAC, NODE_MAC).tcp(40000, 9, tcp_flags::SYN).build(),
        Packet::ipv4(CLIENT_V4, NODE_V4).macs(CLIENT_MAC, NODE_MAC).echo_request(7, 1).build(),
        Packet::ipv6(CLIENT_V6, NODE_V6).macs(CLIENT_MAC, NODE_MAC).udp(40000, 9).build(),
    ];
    let sent = send_frames(&topo.client.path(), CLIENT_IFACE, frames.clone(), 50, Pace::FAST).expect("send");
    assert_eq!(sent, 200);
    std::thread::sleep(Duration::from_millis(200));
    let counts = Counters::read_pinned(&layout).expect("pinned counters");
    assert_eq!(counts.packets(Hook::XdpUplink, Proto::Ipv4Udp), 50);
    assert_eq!(counts.packets(Hook::XdpUplink, Proto::Ipv4Tcp), 50);
    assert_eq!(counts.packets(Hook::XdpUplink, Proto::Ipv4Icmp), 50);
    assert_eq!(counts.packets(Hook::XdpUplink, Proto::Ipv6Udp), 50);
    assert_eq!(counts.hook_packets(Hook::XdpUplink), 200, "nothing else reached the uplink: {counts:?}");
    assert_eq!(counts.bytes(Hook::XdpUplink, Proto::Ipv4Udp), 50 * frames[0].len() as u64);

    // Container traffic is counted at TC.
    let c = &topo.containers[0];
    c.ns.exec("ping", ["-c", "3", "-i", "0.05", "-W", "1", &c.gateway_v4.to_string()]).expect("container pings node");
    let counts = Counters::read_pinned(&layout).expect("pinned counters");
    assert!(counts.packets(Hook::TcContainer, Proto::Ipv4Icmp) >= 3, "{counts:?}");

    // A second start adopts the same links and keeps counting from there.
    let s = spec.clone();
    let before = counts.packets(Hook::XdpUplink, Proto::Ipv4Udp);
    let dp_ids = in_netns(&topo.node.path(), move || {
        let dp = Dataplane::start(&s).expect("data plane restarts");
        assert!(dp.attachments().iter().all(|a| a.origin == Origin::Adopted));
        let after = dp.counters().expect("counters").packets(Hook::XdpUplink, Proto::Ipv4Udp);
        assert_eq!(after, before, "counters continue across adoption");
        let ids: Vec<u32> = dp.attachments().iter().map(|a| a.link_id).collect();
        let report = dp.detach().expect("detach");
        assert_eq!(report.links.len(), 3);
        ids
    });
    assert_eq!(dp_ids, first_ids, "the same bpf_links were adopted");

    // Detached: the uplink carries no XDP program and the pins are gone.
    let link = topo.node.ip(["-d", "link", "show", NODE_UPLINK]).expect("ip link");
    let text = String::from_utf8_lossy(&link.stdout);
    assert!(!text.contains("xdp"), "XDP still attached: {text}");
    assert!(!layout.base().exists(), "pins left behind");
    let sent = send_frames(&topo.client.path(), CLIENT_IFACE, frames[..1].to_vec(), 5, Pace::FAST).expect("send");
    assert_eq!(sent, 5);
}

#[test]
fn unknown_interface_attaches_nothing() {
    if !privileged("unknown_interface_attaches_nothing") {
        return;
    }
    let topo = NodeTopology::build("dpbad", 0).expect("topology");
    let node = unique_name("dpbad");
    let layout = PinLayout::new(Path::new(PIN_ROOT), &node);
    let _guard = PinGuard(layout.clone());
    let mut s = spec(&node, vec!["nosuchveth".into()]);
    s.xdp_mode = XdpModeChoice::Auto;
    let err = in_netns(&topo.node.path(), move || Dataplane::start(&s).err().map(|e| e.to_string()));
    assert_eq!(err.as_deref(), Some("interface \"nosuchveth\" does not exist"));
    let link = topo.node.ip(["-d", "link", "show", NODE_UPLINK]).expect("ip link");
    assert!(!String::from_utf8_lossy(&link.stdout).contains("xdp"));
    assert!(layout.pinned_links().expect("read pins").is_empty());
}

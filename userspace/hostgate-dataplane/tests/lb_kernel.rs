//! The load balancer's BPF path through BPF_PROG_TEST_RUN: VIP matching,
//! Maglev spread by weight, connection affinity across backend changes,
//! rewrites with valid checksums, IPv4 and IPv6, TCP and UDP.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv6Addr},
    path::Path,
};

use hostgate_dataplane::{scratch::ScratchDataplane, Dataplane};
use hostgate_lb::{
    model::{BackendSpec, Mode, VipSpec},
    plan,
};
use hostgate_testbed::{
    packet::{checksum, tcp_flags, Packet},
    privileged,
};

const PIN_ROOT: &str = "/sys/fs/bpf/hostgate-test";
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

struct Node {
    dp: ScratchDataplane,
}

impl Node {
    /// A data plane with no interfaces: enough for test runs.
    /// A data plane with no interfaces: enough for test runs.
    fn new() -> Node {
        Node { dp: ScratchDataplane::new(Path::new(PIN_ROOT), "lbk").expect("data plane") }
    }

    fn dp(&mut self) -> &mut Dataplane {
        &mut self.dp
    }

    fn apply(&mut self, vips: &[VipSpec], backends: &[BackendSpec]) {
        let (plan, skipped) = plan::build(vips, backends, &BTreeSet::new(), &plan::Site::default());
        assert!(skipped.is_empty(), "{skipped:?}");
        self.dp().apply_lb(&plan).expect("apply");
    }
}

fn vip(s: &str, id: u32) -> VipSpec {
    VipSpec { key: s.parse().expect("vip"), id, ring_size: 65_537 }
}

fn backend(v: &str, addr: &str, port: Option<u16>, weight: u32, id: u32) -> BackendSpec {
    BackendSpec {
        vip: v.parse().expect("vip"),
        addr: addr.parse().expect("addr"),
        port,
        weight,
        mode: Mode::Nat,
        node: None,
        id,
        check: None,
    }
}

/// Destination address and port of an output frame, after checking its checksums.
fn dest_checked(frame: &[u8]) -> (IpAddr, u16) {
    let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    if ethertype == 0x0800 {
        let ihl = (frame[14] & 0x0f) as usize * 4;
        let ip = &frame[14..14 + ihl];
        assert_eq!(checksum(&[ip]), 0, "IPv4 header checksum");
        let l4 = &frame[14 + ihl..];
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&ip[12..20]);
        pseudo.extend_from_slice(&[0, ip[9]]);
        pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
        assert_eq!(checksum(&[&pseudo, l4]), 0, "L4 checksum");
        let dst = IpAddr::from([ip[16], ip[17], ip[18], ip[19]]);
        (dst, u16::from_be_bytes([l4[2], l4[3]]))
    } else {
        let ip = &frame[14..54];
        let l4 = &frame[54..];
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&ip[8..40]);
        pseudo.extend_from_slice(&(l4.len() as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, ip[6]]);
        assert_eq!(checksum(&[&pseudo, l4]), 0, "L4 checksum");
        let mut a = [0u8; 16];
        a.copy_from_slice(&ip[24..40]);
        (IpAddr::V6(Ipv6Addr::from(a)), u16::from_be_bytes([l4[2], l4[3]]))
    }
}

fn syn(src_port: u16) -> Vec<u8> {
    Packet::ipv4([198, 18, 0, 2], [203, 0, 113, 10]).tcp(src_port, 80, tcp_flags::SYN).payload(b"hello").build()
}

/// Sends one SYN per source port and returns where each went.
fn spread(node: &mut Node, ports: std::ops::Range<u16>, frame: fn(u16) -> Vec<u8>) -> BTreeMap<u16, (IpAddr, u16)> {
    ports
        .map(|p| {
            let (action, out) = node.dp().xdp_test_run(&frame(p)).expect("test run");
            assert_eq!(action, XDP_PASS, "rewritten and handed to the stack (no FIB route in a test run)");
            (p, dest_checked(&out))
        })
        .collect()
}

#[test]
fn weighted_spread_affinity_and_minimal_disruption() {
    if !privileged("weighted_spread_affinity_and_minimal_disruption") {
        return;
    }
    let mut node = Node::new();
    let v = "203.0.113.10:80/tcp";
    let mut backends = vec![
        backend(v, "198.51.100.6", None, 1, 1),
        backend(v, "198.51.100.10", Some(8080), 2, 2),
        backend(v, "198.51.100.14", None, 1, 3),
    ];
    node.apply(&[vip(v, 0)], &backends);

    let first = spread(&mut node, 10_000..14_000, syn);
    let mut counts: BTreeMap<IpAddr, usize> = BTreeMap::new();
    for (addr, port) in first.values() {
        *counts.entry(*addr).or_default() += 1;
        let expect_port = if *addr == "198.51.100.10".parse::<IpAddr>().expect("ip") { 8080 } else { 80 };
        assert_eq!(*port, expect_port, "backend port rewrite");
    }
    for (addr, weight) in [("198.51.100.6", 0.25), ("198.51.100.10", 0.5), ("198.51.100.14", 0.25)] {
        let share = counts[&addr.parse::<IpAddr>().expect("ip")] as f64 / 4000.0;
        assert!((share - weight).abs() < 0.04, "{addr}: share {share}, weight {weight}");
    }

    // Established flows keep their backend when a backend is added...
    backends.push(backend(v, "198.51.100.18", None, 1, 4));
    node.apply(&[vip(v, 0)], &backends);
    assert_eq!(spread(&mut node, 10_000..14_000, syn), first, "connection table keeps every flow");
    // ...while new flows use the new backend for about its share.
    let fresh = spread(&mut node, 20_000..24_000, syn);
    let newcomer = fresh.values().filter(|(a, _)| a.to_string() == "198.51.100.18").count() as f64 / 4000.0;
    assert!((newcomer - 0.2).abs() < 0.04, "new backend share {newcomer}");

    // Removing a backend moves only its flows.
    let removed: IpAddr = "198.51.100.14".parse().expect("ip");
    backends.retain(|b| b.addr != removed);
    node.apply(&[vip(v, 0)], &backends);
    let after = spread(&mut node, 10_000..14_000, syn);
    for (port, before) in &first {
        if before.0 != removed {
            assert_eq!(after[port], *before, "flow {port} moved though its backend stayed");
        } else {
            assert_ne!(after[port].0, removed, "flow {port} still on the removed backend");
        }
    }
    let stats = node.dp().lb_stats(&[0], &[1, 2, 3, 4]).expect("stats");
    assert_eq!(stats.vips[&0].packets, 4000 * 4);
    assert_eq!(stats.vips[&0].new_flows, 4000 * 2 + counts[&removed] as u64);
    assert_eq!(stats.backends[&3], Default::default(), "removed backend's counters zeroed");
}

#[test]
fn ipv6_udp_wildcard_and_misses() {
    if !privileged("ipv6_udp_wildcard_and_misses") {
        return;
    }
    let mut node = Node::new();
    let v6 = "[2001:db8:113::10]:53/udp";
    let any = "203.0.113.20";
    node.apply(
        &[vip(v6, 1), vip(any, 2), vip("203.0.113.30:80/tcp", 3)],
        &[
            backend(v6, "2001:db8:51:1::2", None, 1, 10),
            backend(v6, "2001:db8:51:2::2", Some(5353), 1, 11),
            backend(any, "198.51.100.6", None, 1, 12),
        ],
    );
    let src: Ipv6Addr = "2001:db8:18::2".parse().expect("v6");
    let dst: Ipv6Addr = "2001:db8:113::10".parse().expect("v6");
    let mut seen = BTreeSet::new();
    for p in 30_000..30_200u16 {
        let frame = Packet::ipv6(src, dst).udp(p, 53).payload(b"query").build();
        let (action, out) = node.dp().xdp_test_run(&frame).expect("run");
        assert_eq!(action, XDP_PASS);
        seen.insert(dest_checked(&out));
    }
    let expected: BTreeSet<(IpAddr, u16)> =
        [("2001:db8:51:1::2".parse().expect("ip"), 53), ("2001:db8:51:2::2".parse().expect("ip"), 5353)].into();
    assert_eq!(seen, expected);

    // The address-only VIP takes any port and protocol; UDP without a checksum stays without.
    let frame = Packet::ipv4([198, 18, 0, 2], [203, 0, 113, 20]).tcp(1234, 2222, tcp_flags::SYN).build();
    let (_, out) = node.dp().xdp_test_run(&frame).expect("run");
    assert_eq!(dest_checked(&out), ("198.51.100.6".parse().expect("ip"), 2222));
    let mut no_csum = Packet::ipv4([198, 18, 0, 2], [203, 0, 113, 20]).udp(1234, 9).payload(b"x").build();
    no_csum[40] = 0;
    no_csum[41] = 0;
    let (_, out) = node.dp().xdp_test_run(&no_csum).expect("run");
    assert_eq!(&out[30..34], &[198, 51, 100, 6]);
    assert_eq!(&out[40..42], &[0, 0], "no checksum stays no checksum");

    // A VIP without backends drops; traffic to other addresses passes untouched.
    let (action, _) = node
        .dp()
        .xdp_test_run(&Packet::ipv4([198, 18, 0, 2], [203, 0, 113, 30]).tcp(1, 80, tcp_flags::SYN).build())
        .expect("run");
    assert_eq!(action, XDP_DROP);
    let other = Packet::ipv4([198, 18, 0, 2], [203, 0, 113, 99]).tcp(1, 80, tcp_flags::SYN).build();
    let (action, out) = node.dp().xdp_test_run(&other).expect("run");
    assert_eq!((action, out), (XDP_PASS, other));
    let wrong_port = Packet::ipv4([198, 18, 0, 2], [203, 0, 113, 30]).tcp(1, 81, tcp_flags::SYN).build();
    let (action, out) = node.dp().xdp_test_run(&wrong_port).expect("run");
    assert_eq!((action, out), (XDP_PASS, wrong_port));
}

#[test]
fn icmp_errors_follow_their_flow() {
    if !privileged("icmp_errors_follow_their_flow") {
        return;
    }
    let mut node = Node::new();
    let (v4, v6) = ("203.0.113.10:80/tcp", "[2001:db8:113::10]:80/tcp");
    node.apply(
        &[vip(v4, 0), vip(v6, 1)],
        &[
            backend(v4, "198.51.100.6", None, 1, 1),
            backend(v4, "198.51.100.10", Some(8080), 1, 2),
            backend(v6, "2001:db8:51:1::2", None, 1, 3),
            backend(v6, "2001:db8:51:2::2", Some(8080), 1, 4),
        ],
    );
    let router = [198, 18, 0, 254];
    let (client, vip_addr) = ([198, 18, 0, 2], [203, 0, 113, 10]);
    for cport in 40_000..40_020u16 {
        let (_, out) = node.dp().xdp_test_run(&syn(cport)).expect("syn");
        let (backend_addr, backend_port) = dest_checked(&out);
        // The reply VIP -> client was too big for a router on the way back.
        let reply = Packet::ipv4(vip_addr, client).tcp(80, cport, tcp_flags::ACK).payload(&[0; 64]).build();
        let error = Packet::ipv4(router, vip_addr).icmp(3, 4).payload(&reply[14..14 + 48]).build();
        let (action, out) = node.dp().xdp_test_run(&error).expect("icmp");
        assert_eq!(action, XDP_PASS);
        assert_eq!(checksum(&[&out[14..34]]), 0, "outer IPv4 checksum");
        assert_eq!(IpAddr::from([out[30], out[31], out[32], out[33]]), backend_addr, "to the flow's backend");
        let icmp = &out[34..];
        assert_eq!(checksum(&[icmp]), 0, "ICMP checksum");
        let inner = &icmp[8..28];
        assert_eq!(checksum(&[inner]), 0, "inner IPv4 checksum");
        assert_eq!(
            IpAddr::from([inner[12], inner[13], inner[14], inner[15]]),
            backend_addr,
            "inner source is the backend"
        );
        assert_eq!(u16::from_be_bytes([icmp[28], icmp[29]]), backend_port, "inner source port is the backend's");
    }
    // An error about a flow nobody has is dropped.
    let stray = Packet::ipv4(vip_addr, client).tcp(80, 50_000, tcp_flags::ACK).build();
    let error = Packet::ipv4(router, vip_addr).icmp(3, 4).payload(&stray[14..]).build();
    assert_eq!(node.dp().xdp_test_run(&error).expect("icmp").0, XDP_DROP);

    // IPv6: packet too big.
    let (c6, vip6, r6): (Ipv6Addr, Ipv6Addr, Ipv6Addr) = (
        "2001:db8:18::2".parse().expect("a"),
        "2001:db8:113::10".parse().expect("a"),
        "2001:db8:18::fe".parse().expect("a"),
    );
    for cport in 41_000..41_010u16 {
        let (_, out) =
            node.dp().xdp_test_run(&Packet::ipv6(c6, vip6).tcp(cport, 80, tcp_flags::SYN).build()).expect("syn");
        let (backend_addr, backend_port) = dest_checked(&out);
        let reply = Packet::ipv6(vip6, c6).tcp(80, cport, tcp_flags::ACK).payload(&[0; 64]).build();
        let error = Packet::ipv6(r6, vip6).icmp(2, 0).payload(&reply[14..14 + 80]).build();
        let (action, out) = node.dp().xdp_test_run(&error).expect("ptb");
        assert_eq!(action, XDP_PASS);
        let (ip, icmp) = (&out[14..54], &out[54..]);
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&ip[8..40]);
        pseudo.extend_from_slice(&(icmp.len() as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, 58]);
        assert_eq!(checksum(&[&pseudo, icmp]), 0, "ICMPv6 checksum");
        let mut dst = [0u8; 16];
        dst.copy_from_slice(&ip[24..40]);
        assert_eq!(IpAddr::V6(Ipv6Addr::from(dst)), backend_addr);
        let mut inner_src = [0u8; 16];
        inner_src.copy_from_slice(&icmp[8 + 8..8 + 24]);
        assert_eq!(IpAddr::V6(Ipv6Addr::from(inner_src)), backend_addr);
        assert_eq!(u16::from_be_bytes([icmp[48], icmp[49]]), backend_port);
    }
}

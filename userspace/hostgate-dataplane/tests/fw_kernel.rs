//! The firewall's BPF path through BPF_PROG_TEST_RUN: the kernel's
//! decisions equal first-match evaluation of the rules file, rejects are
//! valid RSTs, rate limits hold, and a new ruleset replaces the old whole.

use std::{net::IpAddr, path::Path};

use hostgate_dataplane::{scratch::ScratchDataplane, Dataplane};
use hostgate_rules::{
    ast::Direction,
    eval::{evaluate, Packet as EvalPacket},
    tables, Action,
};
use hostgate_testbed::{
    packet::{checksum, tcp_flags, Packet},
    privileged,
};

const PIN_ROOT: &str = "/sys/fs/bpf/hostgate-test";
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;

struct Node {
    dp: ScratchDataplane,
}

impl Node {
    /// A data plane with no interfaces: enough for test runs.
    fn new() -> Node {
        Node { dp: ScratchDataplane::new(Path::new(PIN_ROOT), "fwk").expect("data plane") }
    }

    fn dp(&mut self) -> &mut Dataplane {
        &mut self.dp
    }

    fn apply(&mut self, text: &str, ips: &[&str]) -> hostgate_rules::Ruleset {
        let (rs, _) = hostgate_rules::parse("t.rules", text).expect("rules parse");
        let ips: Vec<IpAddr> = ips.iter().map(|s| s.parse().expect("ip")).collect();
        let guarded = tables::Guarded { customer_ips: ips, container_addrs: vec![] };
        let t = tables::build(&[(rs.clone(), guarded)]).expect("tables");
        self.dp().apply_fw(&t).expect("apply");
        rs
    }

    fn run(&mut self, frame: &[u8]) -> (u32, Vec<u8>) {
        self.dp().xdp_test_run(frame).expect("test run")
    }
}

fn tcp(src: [u8; 4], dst: [u8; 4], dport: u16) -> Vec<u8> {
    Packet::ipv4(src, dst).tcp(40000, dport, tcp_flags::SYN).build()
}

#[test]
fn kernel_decisions_equal_first_match() {
    if !privileged("kernel_decisions_equal_first_match") {
        return;
    }
    let mut node = Node::new();
    let rules = "customer acme\ndefault drop\n\
                 allow tcp port 80, 443\n\
                 drop tcp port 22 from 198.51.100.0/24\n\
                 allow tcp port 22 from 198.51.0.0/16\n\
                 reject tcp port 25\n\
                 allow udp port 53 to 203.0.113.11\n\
                 allow icmp type echo-request\n";
    let rs = node.apply(rules, &["203.0.113.10", "203.0.113.11"]);
    let srcs: [[u8; 4]; 4] = [[198, 51, 100, 9], [198, 51, 7, 7], [192, 0, 2, 1], [203, 0, 113, 200]];
    let dsts: [[u8; 4]; 3] = [[203, 0, 113, 10], [203, 0, 113, 11], [203, 0, 113, 99]];
    let mut checked = 0;
    for src in srcs {
        for dst in dsts {
            for (proto, port) in [(6u8, 80u16), (6, 22), (6, 25), (6, 8080), (17, 53), (17, 54), (1, 8), (1, 0)] {
                let frame = match proto {
                    6 => tcp(src, dst, port),
                    17 => Packet::ipv4(src, dst).udp(40000, port).build(),
                    _ => Packet::ipv4(src, dst).icmp(port as u8, 0).build(),
                };
                let (action, _) = node.run(&frame);
                let guarded = dst != [203, 0, 113, 99];
                let expected = if !guarded {
                    XDP_PASS
                } else {
                    let p = EvalPacket {
                        direction: Direction::In,
                        src: IpAddr::from(src),
                        dst: IpAddr::from(dst),
                        proto,
                        port: if proto == 1 { 0 } else { port },
                        icmp_type: if proto == 1 { port as u8 } else { 0 },
                    };
                    match evaluate(&rs, &p).action {
                        Action::Allow => XDP_PASS,
                        Action::Reject if proto == 6 => XDP_TX,
                        _ => XDP_DROP,
                    }
                };
                assert_eq!(action, expected, "{src:?} -> {dst:?} proto {proto} port/type {port}");
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 96);
    let stats = node.dp().fw_stats(8).expect("stats");
    let total: u64 = stats.iter().map(|c| c.packets).sum();
    assert_eq!(total, 64, "every packet to a guarded IP was decided by exactly one rule");
}

#[test]
fn reject_answers_with_a_valid_rst() {
    if !privileged("reject_answers_with_a_valid_rst") {
        return;
    }
    let mut node = Node::new();
    node.apply("customer acme\ndefault reject\n", &["203.0.113.10"]);
    let (action, out) = node.run(&tcp([198, 18, 0, 2], [203, 0, 113, 10], 23));
    assert_eq!(action, XDP_TX);
    assert_eq!(&out[26..30], &[203, 0, 113, 10], "from the customer IP");
    assert_eq!(&out[30..34], &[198, 18, 0, 2], "to the sender");
    let tcp_hdr = &out[34..54];
    assert_eq!(u16::from_be_bytes([tcp_hdr[0], tcp_hdr[1]]), 23);
    assert_eq!(u16::from_be_bytes([tcp_hdr[2], tcp_hdr[3]]), 40000);
    assert_eq!(tcp_hdr[13] & (tcp_flags::RST | tcp_flags::ACK | tcp_flags::SYN), tcp_flags::RST | tcp_flags::ACK);
    assert_eq!(u32::from_be_bytes([tcp_hdr[8], tcp_hdr[9], tcp_hdr[10], tcp_hdr[11]]), 2, "acks the SYN (seq 1 + 1)");
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&out[26..34]);
    pseudo.extend_from_slice(&[0, 6]);
    pseudo.extend_from_slice(&((out.len() - 34) as u16).to_be_bytes());
    assert_eq!(checksum(&[&pseudo, &out[34..]]), 0, "TCP checksum");
    assert_eq!(checksum(&[&out[14..34]]), 0, "IP checksum");
}

#[test]
fn rate_limit_and_ruleset_swap() {
    if !privileged("rate_limit_and_ruleset_swap") {
        return;
    }
    let mut node = Node::new();
    node.apply("customer acme\ndefault allow\nrate-limit 1/s burst 5 udp port 53\n", &["203.0.113.10"]);
    let q = |src: u8| Packet::ipv4([198, 18, 0, src], [203, 0, 113, 10]).udp(40000, 53).build();
    let first: Vec<u32> = (0..8).map(|_| node.run(&q(2)).0).collect();
    assert_eq!(
        first,
        vec![XDP_PASS, XDP_PASS, XDP_PASS, XDP_PASS, XDP_PASS, XDP_DROP, XDP_DROP, XDP_DROP],
        "burst of 5"
    );
    assert_eq!(node.run(&q(3)).0, XDP_PASS, "another source has its own bucket");

    // A new ruleset replaces the old one whole.
    node.apply("customer acme\ndefault drop\nallow tcp port 80\n", &["203.0.113.10"]);
    assert_eq!(node.run(&q(4)).0, XDP_DROP);
    assert_eq!(node.run(&tcp([198, 18, 0, 2], [203, 0, 113, 10], 80)).0, XDP_PASS);
    // An empty set of tables switches the firewall off.
    node.dp().apply_fw(&tables::Tables::default()).expect("apply");
    assert_eq!(node.run(&q(4)).0, XDP_PASS);
}

#[test]
fn reject_answers_udp_with_port_unreachable() {
    if !privileged("reject_answers_udp_with_port_unreachable") {
        return;
    }
    let mut node = Node::new();
    node.apply("customer acme\ndefault reject\n", &["203.0.113.10", "2001:db8:113::10"]);
    let query = Packet::ipv4([198, 18, 0, 2], [203, 0, 113, 10]).udp(40000, 53).payload(&[7; 100]).build();
    let (action, out) = node.run(&query);
    assert_eq!(action, XDP_TX);
    assert_eq!(out.len(), 14 + 20 + 8 + 28, "the error quotes IP header + 8 bytes");
    assert_eq!(checksum(&[&out[14..34]]), 0, "IPv4 checksum");
    assert_eq!((&out[26..30], &out[30..34]), (&[203, 0, 113, 10][..], &[198, 18, 0, 2][..]));
    assert_eq!((out[23], out[34], out[35]), (1, 3, 3), "ICMP port unreachable");
    assert_eq!(checksum(&[&out[34..]]), 0, "ICMP checksum");
    assert_eq!(&out[42..70], &query[14..42], "the quote is the original");

    let src: std::net::Ipv6Addr = "2001:db8:18::2".parse().expect("ip");
    let dst: std::net::Ipv6Addr = "2001:db8:113::10".parse().expect("ip");
    let query6 = Packet::ipv6(src, dst).udp(40000, 53).payload(&[7; 100]).build();
    let (action, out) = node.run(&query6);
    assert_eq!(action, XDP_TX);
    assert_eq!(out.len(), 14 + 40 + 8 + 48);
    let icmp = &out[54..];
    assert_eq!((out[20], icmp[0], icmp[1]), (58, 1, 4), "ICMPv6 port unreachable");
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&out[22..54]);
    pseudo.extend_from_slice(&(icmp.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 58]);
    assert_eq!(checksum(&[&pseudo, icmp]), 0, "ICMPv6 checksum");
    assert_eq!(&out[22..38], &dst.octets(), "from the customer IP");

    // No ICMP about ICMP.
    let ping = Packet::ipv4([198, 18, 0, 2], [203, 0, 113, 10]).echo_request(1, 1).build();
    assert_eq!(node.run(&ping).0, XDP_DROP);
}

//! Anti-spoofing end to end: a registered container may send only from its
//! addresses and MAC; spoofed frames are dropped at its veth and counted.

mod common;

use std::time::Duration;

use common::{ok, TestNode};
use hostgate_api::ContainerView;
use hostgate_testbed::{
    packet::{Packet, ETH_P_ARP},
    privileged,
    sender::{send_frames, Pace},
    topology::CONTAINER_IFACE,
};

fn drops(node: &TestNode) -> u64 {
    let all: Vec<ContainerView> = serde_json::from_str(&ok(node.cli(&["container", "list", "--json"]))).expect("json");
    all.first().map_or(0, |c| c.spoof_drops)
}

#[test]
fn containers_send_only_from_their_addresses() {
    if !privileged("containers_send_only_from_their_addresses") {
        return;
    }
    let mut node = TestNode::new("spoof", 1);
    node.start_daemon();
    let c = &node.topo.containers[0];
    let own = c.ns.mac(CONTAINER_IFACE).expect("container MAC");
    let gw = node.topo.node.mac(&c.node_iface).expect("gateway MAC");
    let mac = common::mac_text(own);
    ok(node.cli(&["customer", "add", "acme"]));
    let (v4, v6) = (c.v4.to_string(), c.v6.to_string());
    common::add_web_container(&node, &c.node_iface, &[v4.clone(), v6.clone()], Some(&mac));
    std::thread::sleep(Duration::from_millis(300));

    // Its own traffic flows.
    c.ns.exec("ping", ["-c", "2", "-i", "0.2", "-W", "2", &c.gateway_v4.to_string()]).expect("ping from the container");
    assert_eq!(drops(&node), 0);

    // A foreign source address, a foreign MAC, a lying ARP: all dropped.
    let frames = vec![
        Packet::ipv4([198, 51, 100, 99], c.gateway_v4).macs(own, gw).udp(4000, 9).build(),
        Packet::ipv4(c.v4, c.gateway_v4).macs([0x02, 0xba, 0xd0, 0, 0, 1], gw).udp(4000, 9).build(),
        Packet::ethertype(ETH_P_ARP)
            .macs(own, [0xff; 6])
            .payload(&[
                0, 1, 8, 0, 6, 4, 0, 2, own[0], own[1], own[2], own[3], own[4], own[5], 198, 51, 100, 99, 0, 0, 0, 0,
                0, 0, 198, 51, 100, 5,
            ])
            .build(),
        Packet::ipv6("2001:db8:51:1::99".parse::<std::net::Ipv6Addr>().expect("v6"), c.v6)
            .macs(own, gw)
            .udp(4000, 9)
            .build(),
    ];
    let sent = send_frames(&c.ns.path(), CONTAINER_IFACE, frames, 5, Pace::FAST).expect("send");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(drops(&node), sent, "every spoofed frame dropped and counted");
    let table = ok(node.cli(&["container", "list"]));
    assert!(table.contains("web") && table.contains(&mac), "{table}");

    // Unregistered, the veth is no longer guarded.
    ok(node.cli(&["container", "remove", "web"]));
    std::thread::sleep(Duration::from_millis(300));
    let before = tc_drops(&node);
    send_frames(
        &c.ns.path(),
        CONTAINER_IFACE,
        vec![Packet::ipv4([198, 51, 100, 99], c.gateway_v4).macs(own, gw).udp(4000, 9).build()],
        3,
        Pace::FAST,
    )
    .expect("send");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(tc_drops(&node), before, "unguarded: nothing dropped");
}

fn tc_drops(node: &TestNode) -> u64 {
    node.status()
        .dataplane
        .counters
        .iter()
        .filter(|r| r.hook == "tc-container" && r.verdict == "drop")
        .map(|r| r.packets)
        .sum()
}

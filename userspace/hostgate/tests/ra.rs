//! IPv6 router advertisements end to end: the kernel of a container
//! namespace configures itself by SLAAC from the daemon's RAs (address in
//! the network's prefix, default route through the node's link-local
//! address); rdisc6 (ndisc6) sees RDNSS and DNSSL in the answer to its
//! solicitation; removing the network, and stopping the daemon, withdraw
//! the router (router lifetime 0: the client's default route goes).

mod common;

use std::time::{Duration, Instant};

use common::{err, ok, TestNode};
use hostgate_testbed::{privileged, unique_name, Netns};

const PREFIX: &str = "2001:db8:1::/64";
const ROUTER: &str = "2001:db8:1::1";

/// Polls `check` every 200 ms for up to `secs`; its last answer.
fn wait_for<T>(secs: u64, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn text(ns: &Netns, args: &[&str]) -> String {
    String::from_utf8_lossy(&ns.ip(args).expect("ip").stdout).into_owned()
}

/// The client's usable (not tentative) global address starting with `start`.
fn slaac_address(ct: &Netns, start: &str) -> Option<String> {
    let out = text(ct, &["-6", "-o", "addr", "show", "dev", "eth0", "scope", "global"]);
    let line = out.lines().find(|l| l.contains(start) && !l.contains("tentative"))?;
    line.split_whitespace().skip_while(|w| *w != "inet6").nth(1).map(str::to_string)
}

/// The gateway of the client's default route, if it has one.
fn default_gateway(ct: &Netns) -> Option<String> {
    let out = text(ct, &["-6", "route", "show", "default"]);
    out.split_whitespace().skip_while(|w| *w != "via").nth(1).map(str::to_string)
}

/// A container port: veth hgd1 in the node, eth0 in the container, which
/// is a host (not a router) that takes RAs and builds SLAAC addresses.
fn plug(node: &TestNode, ct: &Netns) {
    node.topo
        .node
        .ip(["link", "add", "hgd1", "type", "veth", "peer", "name", "eth0", "netns", ct.name()])
        .expect("veth");
    for (key, value) in [("accept_ra", "2"), ("autoconf", "1"), ("disable_ipv6", "0")] {
        ct.sysctl(&format!("net.ipv6.conf.eth0.{key}"), value).expect("sysctl");
    }
    node.topo.node.ip(["link", "set", "hgd1", "up"]).expect("up");
    ct.ip(["link", "set", "eth0", "up"]).expect("up");
}

fn add_network(node: &TestNode, name: &str, prefix: &str) -> std::process::Output {
    node.cli(&[
        "network",
        "add",
        name,
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
        "--ipv6-prefix",
        prefix,
        "--domain",
        "web.example.test",
        "--search",
        "example.test",
    ])
}

#[test]
fn a_kernel_client_configures_itself_from_router_advertisements() {
    if !privileged("a_kernel_client_configures_itself_from_router_advertisements") {
        return;
    }
    let mut node = TestNode::new("ra", 0);
    let ct = Netns::create(&unique_name("rac")).expect("netns");
    plug(&node, &ct);
    node.start_daemon();
    ok(node.cli(&["customer", "add", "acme"]));
    assert!(err(add_network(&node, "bad", "2001:db8::/48")).contains("ipv6_prefix: 2001:db8::/48 must be a /64"));
    ok(add_network(&node, "web", PREFIX));

    let addr = wait_for(20, || slaac_address(&ct, "2001:db8:1:")).unwrap_or_else(|| {
        panic!("no SLAAC address in {PREFIX}: {}", text(&ct, &["-6", "addr", "show", "dev", "eth0"]))
    });
    assert!(addr.ends_with("/64"), "{addr}");
    let node_ll = text(&node.topo.node, &["-6", "-o", "addr", "show", "dev", "hgd1", "scope", "link"]);
    let gw = wait_for(10, || default_gateway(&ct)).expect("a default route from the RA");
    assert!(gw.starts_with("fe80::") && node_ll.contains(&format!("{gw}/64")), "via {gw}, node has {node_ll}");
    let node_addrs = text(&node.topo.node, &["-6", "addr", "show", "dev", "hgd1"]);
    assert!(node_addrs.contains(&format!("{ROUTER}/64")), "the router address on the link: {node_addrs}");
    // The client reaches the router address over the new link.
    let ping = ct.exec("ping", ["-6", "-c", "1", "-W", "2", ROUTER]).expect("ping");
    assert!(ping.status.success(), "{}", String::from_utf8_lossy(&ping.stdout));

    // A solicitation is answered, with the DNS options.
    let rdisc = ct
        .command("rdisc6")
        .args(["-1", "-r", "3", "-w", "1500", "eth0"])
        .output()
        .expect("rdisc6 (apt-get install ndisc6)");
    let seen = String::from_utf8_lossy(&rdisc.stdout);
    assert!(seen.contains("Recursive DNS server") && seen.contains(ROUTER), "{seen}");
    assert!(seen.contains("DNS search list") && seen.contains("web.example.test example.test"), "{seen}");
    assert!(seen.contains("2001:db8:1::/64"), "{seen}");
    let list = ok(node.cli(&["network", "list"]));
    assert!(list.contains(PREFIX), "{list}");
    let taken = err(add_network(&node, "other", PREFIX));
    assert!(taken.contains("ipv6_prefix: 2001:db8:1::/64 is network web's already"), "{taken}");

    // A second network on the same link: its removal withdraws its prefix,
    // not the router, which the first network's advertiser restates at once.
    ok(node.cli(&[
        "network",
        "add",
        "web2",
        "--customer",
        "acme",
        "--subnet",
        "198.51.100.0/25",
        "--gateway",
        "198.51.100.1",
        "--pool",
        "198.51.100.50-198.51.100.60",
        "--iface",
        "hgd1",
        "--ipv6-prefix",
        "2001:db8:2::/64",
    ]));
    assert!(wait_for(20, || slaac_address(&ct, "2001:db8:2:")).is_some(), "no SLAAC address in the second prefix");
    ok(node.cli(&["network", "rm", "web2"]));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(default_gateway(&ct), Some(gw.clone()), "the router stays: {}", text(&ct, &["-6", "route"]));
    let second = text(&ct, &["-6", "addr", "show", "dev", "eth0"]);
    assert!(second.contains("deprecated"), "the removed prefix is deprecated: {second}");

    // The container restarted, its veth made anew: advertised on the new link.
    node.topo.node.ip(["link", "del", "hgd1"]).expect("unplug");
    plug(&node, &ct);
    assert!(wait_for(20, || slaac_address(&ct, "2001:db8:1:")).is_some(), "no SLAAC address on the new link");
    assert!(wait_for(10, || default_gateway(&ct)).is_some(), "no default route on the new link");
    let node_addrs = text(&node.topo.node, &["-6", "addr", "show", "dev", "hgd1"]);
    assert!(node_addrs.contains(&format!("{ROUTER}/64")), "the router address on the new link: {node_addrs}");

    // Removing the last network withdraws the router: lifetime 0, route gone.
    ok(node.cli(&["network", "rm", "web"]));
    assert!(
        wait_for(5, || default_gateway(&ct).is_none().then_some(())).is_some(),
        "default route left after network rm: {}",
        text(&ct, &["-6", "route"])
    );
    assert!(!text(&node.topo.node, &["-6", "addr", "show", "dev", "hgd1"]).contains(ROUTER), "router address removed");

    // So does a daemon that stops.
    ok(add_network(&node, "web", PREFIX));
    assert!(wait_for(20, || default_gateway(&ct)).is_some(), "the router is back");
    let daemon = node.daemon.as_mut().expect("daemon");
    assert!(daemon.signal_and_wait(libc::SIGTERM, Duration::from_secs(10)).is_some(), "daemon stopped");
    assert!(
        wait_for(5, || default_gateway(&ct).is_none().then_some(())).is_some(),
        "default route left after the daemon stopped: {}",
        text(&ct, &["-6", "route"])
    );
}

/// The anti-spoofing tie for IPv6: a container registered with its MAC may
/// send from the EUI-64 address SLAAC gives it in the advertised prefix,
/// and not from an address it makes up in the same prefix.
#[test]
fn a_guarded_container_sends_from_its_slaac_address_only() {
    if !privileged("a_guarded_container_sends_from_its_slaac_address_only") {
        return;
    }
    // A container of the test bed: its veth is guarded once registered.
    let mut node = TestNode::new("rag", 1);
    let (iface, gateway, v4) = {
        let c = &node.topo.containers[0];
        (c.node_iface.clone(), c.gateway_v4, c.v4)
    };
    let ct = &node.topo.containers[0].ns;
    // SLAAC with EUI-64 interface identifiers, no temporary addresses (RFC 8981).
    for (key, value) in [("accept_ra", "2"), ("autoconf", "1"), ("addr_gen_mode", "0"), ("use_tempaddr", "0")] {
        ct.sysctl(&format!("net.ipv6.conf.eth0.{key}"), value).expect("sysctl");
    }
    let mac = ct.mac("eth0").expect("mac");
    node.start_daemon();
    ok(node.cli(&["customer", "add", "acme"]));
    common::add_web_container(&node, &iface, &[], Some(&common::mac_text(mac)));
    common::add_container_network(&node, &iface, gateway, v4, &["--ipv6-prefix", PREFIX]);
    let ct = &node.topo.containers[0].ns;

    let addr = wait_for(20, || slaac_address(ct, "2001:db8:1:")).expect("a SLAAC address");
    let expected = hostgate_dhcp::ra::slaac_address("2001:db8:1::".parse().expect("prefix"), mac);
    assert_eq!(addr, format!("{expected}/64"), "the kernel's EUI-64 address");
    let ping_from = |src: &str| {
        ct.command("ping")
            .args(["-6", "-c", "1", "-W", "1", "-I", src, ROUTER])
            .output()
            .expect("ping")
            .status
            .success()
    };
    let drops = || {
        let all: Vec<hostgate_api::ContainerView> =
            serde_json::from_str(&ok(node.cli(&["container", "list", "--json"]))).expect("json");
        all[0].spoof_drops
    };
    let slaac = expected.to_string();
    assert!(common::eventually(Duration::from_secs(5), || ping_from(&slaac)), "the SLAAC address may send");
    let before = drops();
    ct.ip(["-6", "addr", "add", "2001:db8:1::99/64", "dev", "eth0", "nodad"]).expect("a made-up address");
    assert!(!ping_from("2001:db8:1::99"), "a made-up address got through");
    assert!(drops() > before, "the spoofed packets are counted");
    assert!(ping_from(&slaac), "the SLAAC address still may send");
}

//! DHCP end to end: a real client (busybox udhcpc) in a container namespace
//! gets its address from the real daemon; the lease survives a SIGKILL of
//! the daemon, and the same client gets the same address back.

mod common;

use std::time::Duration;

use common::{ok, TestNode};
use hostgate_api::LeaseView;
use hostgate_testbed::{privileged, unique_name, Netns};

/// What udhcpc's script saw when it bound: `ip subnet router dns`.
fn udhcpc(ns: &Netns, dir: &std::path::Path) -> String {
    udhcpc_with(ns, dir, &[])
}

/// As [`udhcpc`], with more udhcpc arguments.
fn udhcpc_with(ns: &Netns, dir: &std::path::Path, extra: &[&str]) -> String {
    let script = dir.join("udhcpc.sh");
    let result = dir.join("bound");
    let _ = std::fs::remove_file(&result);
    std::fs::write(
        &script,
        format!("#!/bin/sh\n[ \"$1\" = bound ] && echo \"$ip $subnet $router $dns\" > {}\nexit 0\n", result.display()),
    )
    .expect("script");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let out = ns
        .command("busybox")
        .args(["udhcpc", "-i", "eth0", "-n", "-q", "-f", "-t", "5", "-T", "1", "-s"])
        .arg(&script)
        .args(extra)
        .output()
        .expect("run udhcpc (apt-get install busybox-static)");
    std::fs::read_to_string(&result).unwrap_or_else(|_| {
        panic!("udhcpc got no lease: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    })
}

/// `network add NAME` on hgd1 (198.51.100.128/25, gateway .129) with one pool.
fn add_network(node: &TestNode, name: &str, pool: &str) -> std::process::Output {
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
        pool,
        "--iface",
        "hgd1",
    ])
}

/// A container port without an address: veth hgd1 in the node (the
/// gateway 198.51.100.129/25 on it), eth0 in a new container namespace.
fn container_port(node: &TestNode, purpose: &str) -> Netns {
    let ct = Netns::create(&unique_name(purpose)).expect("netns");
    let n = &node.topo.node;
    n.ip(["link", "add", "hgd1", "type", "veth", "peer", "name", "eth0", "netns", ct.name()]).expect("veth");
    n.ip(["addr", "add", "198.51.100.129/25", "dev", "hgd1"]).expect("addr");
    n.ip(["link", "set", "hgd1", "up"]).expect("up");
    ct.ip(["link", "set", "eth0", "up"]).expect("up");
    ct
}

#[test]
fn udhcpc_gets_a_durable_lease() {
    if !privileged("udhcpc_gets_a_durable_lease") {
        return;
    }
    let mut node = TestNode::new("dhcp", 0);
    let ct = container_port(&node, "dhcpc");
    node.start_daemon();
    ok(node.cli(&["customer", "add", "acme"]));
    ok(add_network(&node, "web", "198.51.100.200-198.51.100.210"));
    std::thread::sleep(Duration::from_millis(300));
    let dir = tempfile::tempdir().expect("dir");
    let got = udhcpc(&ct, dir.path());
    let fields: Vec<&str> = got.split_whitespace().collect();
    assert_eq!(fields, ["198.51.100.200", "255.255.255.128", "198.51.100.129", "198.51.100.129"], "{got}");

    let leases: Vec<LeaseView> = serde_json::from_str(&ok(node.cli(&["dhcp", "leases", "--json"]))).expect("json");
    let mac = common::mac_text(ct.mac("eth0").expect("mac"));
    assert_eq!(leases.len(), 1, "{leases:?}");
    assert_eq!(
        (leases[0].addr.as_str(), leases[0].mac.as_str(), leases[0].state.as_str()),
        ("198.51.100.200", mac.as_str(), "bound")
    );

    // A crash loses nothing: the lease was committed before the ACK left.
    node.daemon.as_mut().expect("daemon").kill();
    node.start_daemon();
    let after: Vec<LeaseView> = serde_json::from_str(&ok(node.cli(&["dhcp", "leases", "--json"]))).expect("json");
    assert_eq!(after, leases);
    std::thread::sleep(Duration::from_millis(300));
    let again = udhcpc(&ct, dir.path());
    assert!(again.starts_with("198.51.100.200 "), "the same client gets its address back: {again}");
    // A reservation applies at once, without a restart: the next exchange
    // moves the client to its reserved address.
    ok(node.cli(&["dhcp", "reserve", "add", "--network", "web", "--mac", &mac, "--ip", "198.51.100.205"]));
    std::thread::sleep(Duration::from_millis(300));
    ct.ip(["addr", "flush", "dev", "eth0"]).expect("flush");
    let reserved = udhcpc(&ct, dir.path());
    assert!(reserved.starts_with("198.51.100.205 "), "the reservation wins: {reserved}");
    let now: Vec<LeaseView> = serde_json::from_str(&ok(node.cli(&["dhcp", "leases", "--json"]))).expect("json");
    assert_eq!(now.iter().map(|l| l.addr.as_str()).collect::<Vec<_>>(), ["198.51.100.205"], "the old lease is gone");
    let table = ok(node.cli(&["dhcp", "reserve", "list"]));
    assert!(table.contains("198.51.100.205") && table.contains(&mac), "{table}");
    assert!(common::err(node.cli(&[
        "dhcp",
        "reserve",
        "add",
        "--network",
        "web",
        "--mac",
        "02:00:00:00:00:09",
        "--ip",
        "198.51.100.205"
    ]))
    .contains("reserved for another client already"));
    let status = node.status();
    let counters = status.dhcp.iter().find(|c| c.network == "web").expect("counters");
    assert!(counters.offers >= 1 && counters.acks >= 2, "{counters:?}");
    let list = ok(node.cli(&["network", "list"]));
    assert!(list.contains("web") && list.contains("198.51.100.128/25"), "{list}");
    let show = ok(node.cli(&["network", "show", "web"]));
    assert!(show.contains("hgd1") && show.contains("new per port  60 a minute") && show.contains("acks "), "{show}");
    assert!(common::err(node.cli(&["network", "show", "nope"])).contains("network nope does not exist"));
    assert!(common::err(add_network(&node, "bad", "198.51.100.1-198.51.100.5"))
        .contains("pool 198.51.100.1-198.51.100.5: it is not inside the subnet"));
}

/// Relay-only network of 198.51.100.128/25 (no interface of its own).
fn add_relayed_network(node: &TestNode) {
    ok(node.cli(&[
        "network",
        "add",
        "far",
        "--customer",
        "acme",
        "--subnet",
        "198.51.100.128/25",
        "--gateway",
        "198.51.100.129",
        "--pool",
        "198.51.100.200-198.51.100.210",
    ]));
}

#[test]
fn relayed_clients_are_served_from_the_network_of_giaddr() {
    if !privileged("relayed_clients_are_served_from_the_network_of_giaddr") {
        return;
    }
    // client eth0 -- down0 [relay: ISC dhcrelay, forwarding] up0 -- hgr1 [node]
    let mut node = TestNode::with_config("dhcpr", 0, "\n[dhcp]\nrelay_interfaces = [\"hgr1\"]\n");
    let relay = Netns::create(&unique_name("dhcprl")).expect("netns");
    let ct = Netns::create(&unique_name("dhcprc")).expect("netns");
    let n = &node.topo.node;
    n.ip(["link", "add", "hgr1", "type", "veth", "peer", "name", "up0", "netns", relay.name()]).expect("veth");
    n.ip(["addr", "add", "198.18.70.1/24", "dev", "hgr1"]).expect("addr");
    n.ip(["link", "set", "hgr1", "up"]).expect("up");
    n.ip(["route", "add", "198.51.100.128/25", "via", "198.18.70.2"]).expect("route to the relayed network");
    relay.ip(["link", "add", "down0", "type", "veth", "peer", "name", "eth0", "netns", ct.name()]).expect("veth");
    relay.ip(["addr", "add", "198.18.70.2/24", "dev", "up0"]).expect("addr");
    relay.ip(["addr", "add", "198.51.100.129/25", "dev", "down0"]).expect("addr");
    relay.ip(["link", "set", "up0", "up"]).expect("up");
    relay.ip(["link", "set", "down0", "up"]).expect("up");
    relay.exec("sysctl", ["-qw", "net.ipv4.ip_forward=1"]).expect("forwarding");
    ct.ip(["link", "set", "eth0", "up"]).expect("up");
    node.start_daemon();
    ok(node.cli(&["customer", "add", "acme"]));
    add_relayed_network(&node);
    // -a: add option 82 (circuit-id = the client-side interface, "down0"),
    // and drop replies whose option 82 does not come back unchanged.
    let child = relay
        .command("dhcrelay")
        .args(["-d", "-4", "-a", "-m", "replace", "-iu", "up0", "-id", "down0", "198.18.70.1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("dhcrelay (apt-get install isc-dhcp-relay)");
    let _relay_guard = hostgate_testbed::ChildGuard::new("dhcrelay", child);
    std::thread::sleep(Duration::from_millis(500));
    let dir = tempfile::tempdir().expect("dir");
    let got = udhcpc(&ct, dir.path());
    let fields: Vec<&str> = got.split_whitespace().collect();
    assert_eq!(fields, ["198.51.100.200", "255.255.255.128", "198.51.100.129", "198.51.100.129"], "{got}");
    // Reserved by the relay's circuit-id: the port, whatever the MAC.
    ok(node.cli(&["dhcp", "reserve", "add", "--network", "far", "--circuit-id", "down0", "--ip", "198.51.100.207"]));
    std::thread::sleep(Duration::from_millis(300));
    ct.ip(["addr", "flush", "dev", "eth0"]).expect("flush");
    let reserved = udhcpc(&ct, dir.path());
    assert!(reserved.starts_with("198.51.100.207 "), "the circuit-id reservation wins: {reserved}");
    let leases: Vec<LeaseView> = serde_json::from_str(&ok(node.cli(&["dhcp", "leases", "--json"]))).expect("json");
    assert_eq!(leases.iter().map(|l| l.addr.as_str()).collect::<Vec<_>>(), ["198.51.100.207"]);
}

#[test]
fn deleting_a_container_frees_its_lease_at_once() {
    if !privileged("deleting_a_container_frees_its_lease_at_once") {
        return;
    }
    let mut node = TestNode::new("dhcpd", 0);
    let ct = container_port(&node, "dhcpdc");
    node.start_daemon();
    ok(node.cli(&["customer", "add", "acme"]));
    ok(add_network(&node, "web", "198.51.100.200-198.51.100.210"));
    let mac = common::mac_text(ct.mac("eth0").expect("mac"));
    common::add_web_container(&node, "hgd1", &[], Some(&mac));
    std::thread::sleep(Duration::from_millis(300));
    let dir = tempfile::tempdir().expect("dir");
    assert!(udhcpc(&ct, dir.path()).starts_with("198.51.100.200 "));
    let leases =
        || -> Vec<LeaseView> { serde_json::from_str(&ok(node.cli(&["dhcp", "leases", "--json"]))).expect("json") };
    assert_eq!(leases().len(), 1);
    ok(node.cli(&["container", "remove", "web"]));
    common::eventually(Duration::from_secs(3), || leases().is_empty());
    assert_eq!(leases(), vec![], "the container's lease ends with it, not at expiry");
}

/// The (address, MAC) of every DHCPACK among captured frames.
fn acks_in(frames: &[Vec<u8>]) -> Vec<(std::net::Ipv4Addr, [u8; 6])> {
    dhcp_events(frames).into_iter().filter(|(kind, _, _)| *kind == 5).map(|(_, a, m)| (a, m)).collect()
}

/// Every DHCP message among captured frames, in order: (message type,
/// yiaddr for replies or ciaddr for requests, chaddr).
fn dhcp_events(frames: &[Vec<u8>]) -> Vec<(u8, std::net::Ipv4Addr, [u8; 6])> {
    let mut acks = Vec::new();
    for f in frames {
        // Ethernet, IPv4 (any header length), UDP to port 67 (replies to a relay).
        if f.len() < 14 + 20 || f[12..14] != [0x08, 0x00] || f[23] != 17 {
            continue;
        }
        let udp = 14 + usize::from(f[14] & 0x0f) * 4;
        let Some(dhcp) = f.get(udp + 8..) else { continue };
        if f.get(udp + 2..udp + 4) != Some(&[0, 67][..]) || dhcp.len() < 240 {
            continue;
        }
        let mut at = 240;
        let mut kind = None;
        while at + 1 < dhcp.len() && dhcp[at] != 255 {
            if dhcp[at] == 0 {
                at += 1;
                continue;
            }
            let len = usize::from(dhcp[at + 1]);
            if dhcp[at] == 53 && len == 1 {
                kind = dhcp.get(at + 2).copied();
            }
            at += 2 + len;
        }
        if let Some(kind) = kind {
            // Replies name the address in yiaddr, requests in ciaddr.
            let at = if dhcp[0] == 2 { 16 } else { 12 };
            let addr = std::net::Ipv4Addr::new(dhcp[at], dhcp[at + 1], dhcp[at + 2], dhcp[at + 3]);
            let mut mac = [0u8; 6];
            mac.copy_from_slice(&dhcp[28..34]);
            acks.push((kind, addr, mac));
        }
    }
    acks
}

/// A node serving 198.18.0.0/15 (no per-MAC or per-port limit) to
/// perfdhcp, a relay agent in its own namespace behind hgp0.
fn perfdhcp_node(purpose: &str) -> (TestNode, Netns) {
    let mut node = TestNode::with_config(purpose, 0, "\n[dhcp]\nrelay_interfaces = [\"hgp0\"]\n");
    let gen = Netns::create(&unique_name(&format!("{purpose}g"))).expect("netns");
    let n = &node.topo.node;
    n.ip(["link", "add", "hgp0", "type", "veth", "peer", "name", "eth0", "netns", gen.name()]).expect("veth");
    n.ip(["addr", "add", "198.18.0.1/15", "dev", "hgp0"]).expect("addr");
    n.ip(["link", "set", "hgp0", "up"]).expect("up");
    gen.ip(["addr", "add", "198.18.0.2/15", "dev", "eth0"]).expect("addr");
    gen.ip(["link", "set", "eth0", "up"]).expect("up");
    node.start_daemon();
    ok(node.cli(&["customer", "add", "acme"]));
    ok(node.cli(&[
        "network",
        "add",
        "load",
        "--customer",
        "acme",
        "--subnet",
        "198.18.0.0/15",
        "--gateway",
        "198.18.0.1",
        "--pool",
        "198.18.1.0-198.19.255.254",
        "--max-new-per-mac",
        "0",
        "--max-new-per-port",
        "0",
    ]));
    std::thread::sleep(Duration::from_millis(300));
    (node, gen)
}

/// perfdhcp load, the daemon SIGKILLed at a different moment each round:
/// after every restart each ACKed lease is in the store, and no address
/// ever went to two clients (no lease is released or expires here).
#[test]
fn acked_leases_survive_kill_9_under_load() {
    if !privileged("acked_leases_survive_kill_9_under_load") {
        return;
    }
    let (mut node, gen) = perfdhcp_node("dhcpk");
    let mut acked: std::collections::HashMap<std::net::Ipv4Addr, [u8; 6]> = Default::default();
    for (round, kill_after_ms) in [700u64, 1300, 1900, 2500].into_iter().enumerate() {
        let capture =
            hostgate_testbed::sender::capture(&gen.path(), "eth0", Duration::from_millis(3800)).expect("capture");
        let load = hostgate_testbed::perfdhcp::Load {
            netns: &gen.path(),
            iface: "eth0",
            server: "198.18.0.1",
            rate: 400,
            clients: 100_000,
            period: Duration::from_secs(3),
            unique: false,
            renew_rate: 0,
            release_rate: 0,
        };
        let generator = load.command().stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn();
        let mut generator = hostgate_testbed::ChildGuard::new("perfdhcp", generator.expect("perfdhcp (kea-admin)"));
        std::thread::sleep(Duration::from_millis(kill_after_ms));
        node.daemon.as_mut().expect("daemon").kill();
        let _ = generator.wait_timeout(Duration::from_secs(10));
        let frames = capture.join().expect("capture thread").expect("capture");
        let acks = acks_in(&frames);
        assert!(!acks.is_empty(), "round {round}: no ACK before the kill");
        for (addr, mac) in acks {
            if let Some(before) = acked.insert(addr, mac) {
                assert_eq!(before, mac, "round {round}: {addr} went to two clients");
            }
        }
        node.start_daemon();
        let leases: Vec<LeaseView> = serde_json::from_str(&ok(node.cli(&["dhcp", "leases", "--json"]))).expect("json");
        let stored: std::collections::HashMap<String, String> =
            leases.iter().map(|l| (l.addr.clone(), l.mac.clone())).collect();
        let lost: Vec<String> = acked
            .iter()
            .filter(|(addr, mac)| stored.get(&addr.to_string()) != Some(&common::mac_text(**mac)))
            .map(|(addr, _)| addr.to_string())
            .collect();
        assert!(lost.is_empty(), "round {round}: ACKed leases lost by the kill: {lost:?}");
        let mut macs = std::collections::HashSet::new();
        assert!(leases.iter().all(|l| macs.insert(l.mac.clone())), "a client holds two addresses");
        eprintln!("round {round}: {} ACKed leases so far, {} stored", acked.len(), leases.len());
    }
}

/// dhcpcd keeps its pid file and control socket under /run/dhcpcd by
/// interface name, shared by every namespace: one dhcpcd at a time.
static DHCPCD: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Which real DHCP client configures the container.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Udhcpc,
    Dhclient,
    Dhcpcd,
}

/// Runs `kind` in `ct` on eth0 until it configured an address (the
/// client's own work: address, and routes from option 121), then stops it.
fn configure_with(kind: Kind, ct: &Netns, dir: &std::path::Path) {
    let script = dir.join(format!("{kind:?}.sh"));
    let write_script = |body: &str| {
        std::fs::write(&script, format!("#!/bin/sh\n{body}\nexit 0\n")).expect("script");
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    };
    let mut cmd = match kind {
        // busybox hands the script $staticroutes ("dest/len gw ..."); this
        // is what distributions' udhcpc scripts do with it.
        Kind::Udhcpc => {
            write_script(
                "case \"$1\" in bound|renew)\n ip addr add \"$ip/$mask\" dev \"$interface\"\n set -- $staticroutes\n \
                 while [ $# -ge 2 ]; do\n  if [ \"$2\" = 0.0.0.0 ]; then ip route add \"$1\" dev \"$interface\"; \
                 else ip route add \"$1\" via \"$2\" dev \"$interface\"; fi\n  shift 2\n done;;\nesac",
            );
            let mut c = ct.command("busybox");
            c.args(["udhcpc", "-i", "eth0", "-n", "-q", "-f", "-t", "5", "-T", "1", "-O", "staticroutes", "-s"])
                .arg(&script);
            c
        }
        // ISC dhclient with Debian's own RFC 3442 hook doing the routes
        // (sourced from a script of ours so /etc/resolv.conf is left alone).
        Kind::Dhclient => {
            let conf = dir.join("dhclient.conf");
            std::fs::write(
                &conf,
                "option rfc3442-classless-static-routes code 121 = array of unsigned integer 8;\n\
                 request subnet-mask, routers, domain-name-servers, rfc3442-classless-static-routes;\n",
            )
            .expect("conf");
            write_script(
                "case \"$reason\" in BOUND|REBOOT)\n ip addr add \"$new_ip_address/$new_subnet_mask\" dev \"$interface\"\n \
                 . /etc/dhcp/dhclient-exit-hooks.d/rfc3442-classless-routes;;\nesac",
            );
            let mut c = ct.command("dhclient");
            c.args(["-4", "-1", "-d", "-cf"])
                .arg(&conf)
                .arg("-sf")
                .arg(&script)
                .arg("-pf")
                .arg(dir.join("dhclient.pid"))
                .arg("-lf")
                .arg(dir.join("dhclient.leases"))
                .arg("eth0");
            c
        }
        // dhcpcd configures address and routes itself; no hook scripts.
        Kind::Dhcpcd => {
            let mut c = ct.command("dhcpcd");
            c.args(["-4", "-B", "-p", "--noarp", "-c", "/bin/true", "-t", "10", "eth0"]);
            c
        }
    };
    let _one_at_a_time = DHCPCD.lock().unwrap_or_else(|p| p.into_inner());
    let child = cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn();
    let mut client = hostgate_testbed::ChildGuard::new(&format!("{kind:?}"), child.expect("DHCP client"));
    let configured = || {
        let routes =
            String::from_utf8_lossy(&ct.ip(["-4", "route", "show", "default"]).expect("routes").stdout).into_owned();
        routes.contains("via 198.51.100.1")
    };
    assert!(common::eventually(Duration::from_secs(15), configured), "{kind:?} configured no default route in 15 s");
    // dhcpcd keeps its configuration when it stops (-p); the others never
    // undo it. SIGTERM lets dhcpcd remove its pid file and socket.
    client.signal_and_wait(libc::SIGTERM, Duration::from_secs(5));
}

/// Routed single addresses: each client gets a customer IP as a /32 with
/// the gateway on-link (router + option 121), and the node routes the IP
/// to the client's port; shown with udhcpc, dhclient and dhcpcd.
#[test]
fn routed_single_addresses_work_with_udhcpc_dhclient_and_dhcpcd() {
    if !privileged("routed_single_addresses_work_with_udhcpc_dhclient_and_dhcpcd") {
        return;
    }
    let mut node = TestNode::new("dhcp32", 0);
    let kinds = [Kind::Udhcpc, Kind::Dhclient, Kind::Dhcpcd];
    let mut cts = Vec::new();
    for i in 0..kinds.len() {
        let ct = Netns::create(&unique_name("dhcp32c")).expect("netns");
        let port = format!("hgr{i}");
        let n = &node.topo.node;
        n.ip(["link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", ct.name()]).expect("veth");
        // The gateway: one node address, on every port.
        n.ip(["addr", "add", "198.51.100.1/32", "dev", &port]).expect("addr");
        n.ip(["link", "set", &port, "up"]).expect("up");
        ct.ip(["link", "set", "eth0", "up"]).expect("up");
        cts.push(ct);
    }
    node.start_daemon();
    ok(node.cli(&["customer", "add", "acme"]));
    let mut args = vec![
        "network",
        "add",
        "routed",
        "--customer",
        "acme",
        "--subnet",
        "203.0.113.0/24",
        "--gateway",
        "198.51.100.1",
        "--pool",
        "203.0.113.10-203.0.113.20",
        "--routed",
    ];
    for p in ["hgr0", "hgr1", "hgr2"] {
        args.extend(["--iface", p]);
    }
    ok(node.cli(&args));
    std::thread::sleep(Duration::from_millis(300));
    let dir = tempfile::tempdir().expect("dir");
    for (i, (kind, ct)) in kinds.iter().zip(&cts).enumerate() {
        configure_with(*kind, ct, dir.path());
        let addrs = String::from_utf8_lossy(&ct.ip(["-4", "addr", "show", "eth0"]).expect("addr").stdout).into_owned();
        let ip = addrs
            .split_whitespace()
            .skip_while(|w| *w != "inet")
            .nth(1)
            .unwrap_or_else(|| panic!("{kind:?}: no address: {addrs}"))
            .to_string();
        assert!(ip.starts_with("203.0.113.") && ip.ends_with("/32"), "{kind:?} got {ip}");
        // The node routes the address to this port (derived from the lease)...
        let host = ip.trim_end_matches("/32");
        let route =
            String::from_utf8_lossy(&node.topo.node.ip(["route", "get", host]).expect("route").stdout).into_owned();
        assert!(route.contains(&format!("dev hgr{i}")), "{kind:?}: node route to {host}: {route}");
        // ...so the container reaches its gateway and hears back.
        let ping = ct.exec("ping", ["-c", "1", "-W", "2", "198.51.100.1"]).expect("ping");
        assert!(
            ping.status.success(),
            "{kind:?}: {host} cannot reach its gateway: {}",
            String::from_utf8_lossy(&ping.stdout)
        );
    }
    let leases: Vec<LeaseView> = serde_json::from_str(&ok(node.cli(&["dhcp", "leases", "--json"]))).expect("json");
    assert_eq!(leases.len(), 3, "{leases:?}");
    // The routes are derived state: rebuilt from the store after a crash.
    node.daemon.as_mut().expect("daemon").kill();
    node.topo.node.ip(["route", "flush", "proto", "0x68"]).expect("flush our routes");
    node.start_daemon();
    std::thread::sleep(Duration::from_millis(500));
    for (i, l) in leases.iter().enumerate() {
        let route =
            String::from_utf8_lossy(&node.topo.node.ip(["route", "get", &l.addr]).expect("route").stdout).into_owned();
        assert!(route.contains("dev hgr"), "lease {i} ({}) has no route after the restart: {route}", l.addr);
    }
}

/// The anti-spoofing tie: a container registered by MAC alone asks for its
/// address from 0.0.0.0 through its guarded veth, may then send from the
/// leased address, and is blocked when it changes its IP by hand.
#[test]
fn a_dhcp_lease_is_the_ports_allowed_source() {
    if !privileged("a_dhcp_lease_is_the_ports_allowed_source") {
        return;
    }
    let mut node = TestNode::new("dhcpg", 1);
    let (iface, gateway, v4, mac) = {
        let c = &node.topo.containers[0];
        // The container starts without an address: DHCP gives it one.
        c.ns.ip(["addr", "flush", "dev", "eth0"]).expect("flush");
        (c.node_iface.clone(), c.gateway_v4, c.v4, common::mac_text(c.ns.mac("eth0").expect("mac")))
    };
    node.start_daemon();
    ok(node.cli(&["customer", "add", "acme"]));
    common::add_web_container(&node, &iface, &[], Some(&mac));
    common::add_container_network(&node, &iface, gateway, v4, &[]);
    let gateway = gateway.to_string();
    std::thread::sleep(Duration::from_millis(300));
    let dir = tempfile::tempdir().expect("dir");
    let c = &node.topo.containers[0];
    let got = udhcpc(&c.ns, dir.path());
    assert!(got.starts_with(&format!("{} ", c.v4)), "DHCP through the guard: {got}");
    c.ns.ip(["addr", "add", &format!("{}/30", c.v4), "dev", "eth0"]).expect("configure the lease");
    let ping =
        |ns: &Netns| ns.command("ping").args(["-c", "1", "-W", "1", &gateway]).output().expect("ping").status.success();
    let drops = || {
        let all: Vec<hostgate_api::ContainerView> =
            serde_json::from_str(&ok(node.cli(&["container", "list", "--json"]))).expect("json");
        all[0].spoof_drops
    };
    assert!(common::eventually(Duration::from_secs(3), || ping(&c.ns)), "the leased address is not allowed to send");
    let before = drops();
    // By hand, another address: the guard drops it.
    c.ns.ip(["addr", "flush", "dev", "eth0"]).expect("flush");
    c.ns.ip(["addr", "add", "198.51.100.77/24", "dev", "eth0"]).expect("spoof");
    c.ns.ip(["route", "add", &format!("{gateway}/32"), "dev", "eth0"]).expect("route");
    assert!(!ping(&c.ns), "a hand-made address got through");
    assert!(drops() > before, "the spoofed packets are counted");
    // The lease names the port it was asked from.
    let lease: Vec<LeaseView> = serde_json::from_str(&ok(node.cli(&["dhcp", "leases", "--json"]))).expect("json");
    assert_eq!(lease[0].port.as_deref(), Some(format!("iface:{iface}").as_str()));
    // After a crash the allowed sources come back from the stored lease.
    let c = &node.topo.containers[0];
    c.ns.ip(["addr", "flush", "dev", "eth0"]).expect("flush");
    c.ns.ip(["addr", "add", &format!("{v4}/30"), "dev", "eth0"]).expect("the leased address again");
    node.daemon.as_mut().expect("daemon").kill();
    // Fresh tables (pins removed): only the stored lease can put it back.
    hostgate_dataplane::detach_pinned(&node.layout).expect("detach");
    node.start_daemon();
    let c = &node.topo.containers[0];
    assert!(
        common::eventually(Duration::from_secs(3), || ping(&c.ns)),
        "the lease's address is not allowed after a restart"
    );
}

/// A lease's hostname is a DNS name, `<host>.<customer>.<internal zone>`,
/// with its PTR; a registered container's name too; the name goes with
/// the lease.
#[test]
fn lease_hostnames_become_dns_names() {
    if !privileged("lease_hostnames_become_dns_names") {
        return;
    }
    let config = "\n[dns]\nlisten = [\"198.51.100.129:53\"]\ninternal_zone = \"internal.example.net\"\n";
    let mut node = TestNode::with_config("dhcpn", 0, config);
    let ct = container_port(&node, "dhcpnc");
    node.start_daemon();
    ok(node.cli(&["customer", "add", "acme"]));
    ok(add_network(&node, "web", "198.51.100.200-198.51.100.210"));
    let mac = common::mac_text(ct.mac("eth0").expect("mac"));
    ok(node.cli(&["container", "add", "vm1", "--customer", "acme", "--iface", "hgd1", "--mac", &mac]));
    std::thread::sleep(Duration::from_millis(300));
    let dir = tempfile::tempdir().expect("dir");
    let got = udhcpc_with(&ct, dir.path(), &["-x", "hostname:web1"]);
    assert!(got.starts_with("198.51.100.200 "), "{got}");
    let dig = |args: &[&str]| {
        let out = node.topo.node.exec("dig", [&["@198.51.100.129", "+short", "+time=1", "+tries=1"], args].concat());
        String::from_utf8_lossy(&out.expect("dig (bind9-dnsutils)").stdout).trim().to_string()
    };
    let wait_for = |args: &[&str], want: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        loop {
            let got = dig(args);
            if got == want {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "dig {args:?}: {got:?}, want {want:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_for(&["web1.acme.internal.example.net", "A"], "198.51.100.200");
    wait_for(&["-x", "198.51.100.200"], "web1.acme.internal.example.net.");
    // A container registered through the API has its name too.
    ok(node.cli(&["container", "add", "db", "--customer", "acme", "--iface", "hgd1", "--ip", "203.0.113.7"]));
    wait_for(&["db.acme.internal.example.net", "A"], "203.0.113.7");
    wait_for(&["-x", "203.0.113.7"], "db.acme.internal.example.net.");
    // The container behind the lease goes: its lease ends, and its name.
    ok(node.cli(&["container", "remove", "vm1"]));
    wait_for(&["web1.acme.internal.example.net", "A"], "");
    // A client that names itself only by FQDN (option 81, ISC dhclient) gets
    // its first label published, and is told the server updates the A record.
    let conf = dir.path().join("fqdn.conf");
    std::fs::write(&conf, "send fqdn.fqdn \"shop2.\";\nsend fqdn.encoded on;\nsend fqdn.server-update on;\n")
        .expect("conf");
    let script = dir.path().join("fqdn.sh");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").expect("script");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let child = ct
        .command("dhclient")
        .args(["-4", "-1", "-d", "-cf"])
        .arg(&conf)
        .arg("-sf")
        .arg(&script)
        .arg("-pf")
        .arg(dir.path().join("fqdn.pid"))
        .arg("-lf")
        .arg(dir.path().join("fqdn.leases"))
        .arg("eth0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("dhclient");
    let mut client = hostgate_testbed::ChildGuard::new("dhclient", child);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = dig(&["shop2.acme.internal.example.net", "A"]);
        if got.starts_with("198.51.100.2") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the FQDN's name never answered: {got:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    client.signal_and_wait(libc::SIGTERM, Duration::from_secs(5));
}

/// Renewals (unicast REQUEST with ciaddr) and releases from perfdhcp: every
/// address whose last message on the wire was an ACK is in the store for
/// its client, and every one whose last was a RELEASE is not.
#[test]
fn renewals_and_releases_end_where_the_wire_says() {
    if !privileged("renewals_and_releases_end_where_the_wire_says") {
        return;
    }
    let (node, gen) = perfdhcp_node("dhcprr");
    let capture = hostgate_testbed::sender::capture(&gen.path(), "eth0", Duration::from_millis(4500)).expect("capture");
    let load = hostgate_testbed::perfdhcp::Load {
        netns: &gen.path(),
        iface: "eth0",
        server: "198.18.0.1",
        rate: 200,
        clients: 100_000,
        period: Duration::from_secs(3),
        unique: false,
        renew_rate: 60,
        release_rate: 60,
    };
    let report = load.run().expect("perfdhcp (kea-admin)");
    let frames = capture.join().expect("capture thread").expect("capture");
    let mut last: std::collections::HashMap<std::net::Ipv4Addr, (u8, [u8; 6])> = Default::default();
    let (mut renewals, mut releases) = (0, 0);
    for (kind, addr, mac) in dhcp_events(&frames) {
        match kind {
            // A REQUEST naming its address in ciaddr is a renewal.
            3 if !addr.is_unspecified() => renewals += 1,
            7 => {
                releases += 1;
                last.insert(addr, (7, mac));
            }
            5 => {
                last.insert(addr, (5, mac));
            }
            _ => {}
        }
    }
    assert!(renewals > 20 && releases > 20, "renewals {renewals}, releases {releases}:\n{}", report.output);
    std::thread::sleep(Duration::from_millis(300));
    let leases: Vec<LeaseView> = serde_json::from_str(&ok(node.cli(&["dhcp", "leases", "--json"]))).expect("json");
    let stored: std::collections::HashMap<String, String> =
        leases.iter().map(|l| (l.addr.clone(), l.mac.clone())).collect();
    for (addr, (kind, mac)) in &last {
        let held = stored.get(&addr.to_string());
        match kind {
            5 => assert_eq!(held, Some(&common::mac_text(*mac)), "{addr}: ACKed last, not stored for its client"),
            _ => assert_eq!(held, None, "{addr}: released last, still stored"),
        }
    }
    let counters = node.status().dhcp.into_iter().find(|c| c.network == "load").expect("counters");
    assert!(counters.releases >= releases as u64, "{counters:?}");
}

/// DECLINE from a real client (dhcpcd): its ARP probe finds the offered
/// address already in use on the link and declines it, so the server
/// quarantines it and hands out the next one. (INFORM is answered too, but
/// dhcpcd 9.4.1's --inform crashes in its privilege separation here, so it
/// is covered by the server's unit tests only.)
#[test]
fn dhcpcd_declines_an_address_in_use() {
    if !privileged("dhcpcd_declines_an_address_in_use") {
        return;
    }
    let mut node = TestNode::new("dhcpdi", 0);
    // Its own interface name: dhcpcd keeps leases per name in /var/lib/dhcpcd
    // and would reboot into an old one (no ARP probe) under eth0.
    let ct = Netns::create(&unique_name("dhcpdic")).expect("netns");
    let n = &node.topo.node;
    n.ip(["link", "add", "hgd1", "type", "veth", "peer", "name", "hgdcl0", "netns", ct.name()]).expect("veth");
    n.ip(["addr", "add", "198.51.100.129/25", "dev", "hgd1"]).expect("addr");
    // Someone on the link already uses the first pool address.
    n.ip(["addr", "add", "198.51.100.200/32", "dev", "hgd1"]).expect("squatter");
    n.ip(["link", "set", "hgd1", "up"]).expect("up");
    ct.ip(["link", "set", "hgdcl0", "up"]).expect("up");
    for stale in ["hgdcl0.lease", "hgdcl0-4.lease"] {
        let _ = std::fs::remove_file(std::path::Path::new("/var/lib/dhcpcd").join(stale));
    }
    node.start_daemon();
    ok(node.cli(&["customer", "add", "acme"]));
    ok(add_network(&node, "web", "198.51.100.200-198.51.100.210"));
    std::thread::sleep(Duration::from_millis(300));
    // dhcpcd probes the offer by ARP (no --noarp), finds .200 answered, declines.
    let one_at_a_time = DHCPCD.lock().unwrap_or_else(|p| p.into_inner());
    let child = ct
        .command("dhcpcd")
        .args(["-4", "-B", "-p", "-c", "/bin/true", "-t", "30", "hgdcl0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("dhcpcd");
    let mut client = hostgate_testbed::ChildGuard::new("dhcpcd", child);
    let leased =
        || -> Vec<LeaseView> { serde_json::from_str(&ok(node.cli(&["dhcp", "leases", "--json"]))).expect("json") };
    // .200 is bound for a moment (dhcpcd probes after the ACK): wait for the next one.
    let bound = || leased().iter().any(|l| l.state == "bound" && l.addr != "198.51.100.200");
    assert!(common::eventually(Duration::from_secs(25), bound), "no lease after the decline: {:?}", leased());
    // SIGTERM: dhcpcd removes its pid file and control socket (-p: it
    // keeps the address), so the next dhcpcd of these tests starts clean.
    client.signal_and_wait(libc::SIGTERM, Duration::from_secs(5));
    drop(one_at_a_time);
    let leases = leased();
    let declined = leases.iter().find(|l| l.addr == "198.51.100.200").expect("the declined address");
    assert_eq!(declined.state, "declined", "{leases:?}");
    let bound = leases.iter().find(|l| l.state == "bound").expect("bound");
    assert_ne!(bound.addr, "198.51.100.200");
}

/// Rebinding (RFC 2131 §4.4.5): a bound udhcpc whose unicast renewals
/// cannot reach the server (nftables drops them in its namespace) falls
/// back to a broadcast REQUEST with its ciaddr, and the server extends the
/// lease from it.
#[test]
fn a_client_whose_renewals_are_lost_rebinds_by_broadcast() {
    if !privileged("a_client_whose_renewals_are_lost_rebinds_by_broadcast") {
        return;
    }
    let mut node = TestNode::new("dhcprb", 0);
    let ct = container_port(&node, "dhcprbc");
    node.start_daemon();
    ok(node.cli(&["customer", "add", "acme"]));
    ok(add_network(&node, "web", "198.51.100.200-198.51.100.210"));
    std::thread::sleep(Duration::from_millis(300));
    let dir = tempfile::tempdir().expect("dir");
    let (script, log) = (dir.path().join("udhcpc.sh"), dir.path().join("events"));
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncase \"$1\" in bound|renew) ip addr flush dev eth0; ip addr add $ip/$mask dev eth0;; esac\n\
             echo \"$1 $ip\" >> {}\nexit 0\n",
            log.display()
        ),
    )
    .expect("script");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let child = ct
        .command("busybox")
        .args(["udhcpc", "-i", "eth0", "-f", "-T", "1", "-t", "3", "-s"])
        .arg(&script)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("udhcpc (apt-get install busybox-static)");
    let mut client = hostgate_testbed::ChildGuard::new("udhcpc", child);
    let events = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(common::eventually(Duration::from_secs(10), || events().contains("bound ")), "{}", events());
    let leases =
        || -> Vec<LeaseView> { serde_json::from_str(&ok(node.cli(&["dhcp", "leases", "--json"]))).expect("json") };
    let first = leases().pop().expect("a lease");

    // Unicast to the server is lost from now on; broadcasts still go.
    let nft = |rules: &str| {
        let mut nft = ct.command("nft");
        nft.args(["-f", "-"]).stdin(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        let out = nft.spawn().and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().expect("stdin").write_all(rules.as_bytes())?;
            c.wait_with_output()
        });
        out.expect("nft")
    };
    ok(nft("table ip hgrb {\n chain out {\n  type filter hook output priority 0;\n  \
            udp dport 67 ip daddr != 255.255.255.255 counter drop\n }\n}\n"));
    std::thread::sleep(Duration::from_secs(1)); // so that a new expiry differs
                                                // SIGUSR1: renew now. Three unicast tries (-t 3 -T 1), then rebinding.
    let pid = client.pid().expect("udhcpc runs") as i32;
    // SAFETY: kill(2) on our own child's pid (nsenter execs udhcpc).
    assert_eq!(unsafe { libc::kill(pid, libc::SIGUSR1) }, 0);
    assert!(
        common::eventually(Duration::from_secs(20), || events().lines().any(|l| l.starts_with("renew "))),
        "no renewal by rebinding: {}",
        events()
    );
    let dropped = ok(ct.command("nft").args(["list", "table", "ip", "hgrb"]).output().expect("nft"));
    let unicasts: u64 = dropped
        .split_whitespace()
        .skip_while(|w| *w != "packets")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("the drop counter");
    assert!(unicasts > 0, "the renewals were not unicast: {dropped}");
    let now = leases().pop().expect("the lease");
    assert_eq!((now.addr.as_str(), now.state.as_str()), (first.addr.as_str(), "bound"));
    assert!(now.expires > first.expires, "rebinding extended the lease: {} -> {}", first.expires, now.expires);
    client.signal_and_wait(libc::SIGTERM, Duration::from_secs(5));
}

/// DHCPINFORM (RFC 2131 §3.4): a client that configured its address by
/// other means asks for its other parameters; dhcping sends the INFORM by
/// unicast and waits for the ACK at its address. No lease is made.
#[test]
fn an_inform_from_a_configured_client_is_answered_without_a_lease() {
    if !privileged("an_inform_from_a_configured_client_is_answered_without_a_lease") {
        return;
    }
    let mut node = TestNode::new("dhcpin", 0);
    let ct = container_port(&node, "dhcpinc");
    ct.ip(["addr", "add", "198.51.100.150/25", "dev", "eth0"]).expect("a static address");
    node.start_daemon();
    ok(node.cli(&["customer", "add", "acme"]));
    ok(add_network(&node, "web", "198.51.100.200-198.51.100.210"));
    std::thread::sleep(Duration::from_millis(300));
    let mac = common::mac_text(ct.mac("eth0").expect("mac"));
    let out = ct
        .command("dhcping")
        .args(["-i", "-v", "-c", "198.51.100.150", "-s", "198.51.100.129", "-h", &mac, "-t", "3"])
        .output()
        .expect("dhcping (apt-get install dhcping)");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "no answer to the INFORM: {said}{}", String::from_utf8_lossy(&out.stderr));
    assert!(said.contains("Got answer from: 198.51.100.129"), "{said}");
    let status = node.status();
    let counters = status.dhcp.iter().find(|c| c.network == "web").expect("counters");
    assert_eq!((counters.informs, counters.acks), (1, 0), "{counters:?}");
    assert_eq!(ok(node.cli(&["dhcp", "leases", "--json"])).trim(), "[]", "an INFORM makes no lease");
    // One from outside the network's subnet is not answered.
    ct.ip(["addr", "add", "203.0.113.150/24", "dev", "eth0"]).expect("an address elsewhere");
    let out = ct
        .command("dhcping")
        .args(["-i", "-c", "203.0.113.150", "-s", "198.51.100.129", "-h", &mac, "-t", "1"])
        .output()
        .expect("dhcping");
    assert!(!out.status.success(), "answered an INFORM from outside the subnet");
}

/// A client that moved networks (RFC 2131 §3.2, INIT-REBOOT): ISC dhclient
/// restarts with a remembered lease from elsewhere, asks to keep it, is
/// NAKed, and gets an address of this network by a new DISCOVER.
#[test]
fn a_client_back_with_an_address_from_elsewhere_is_naked() {
    if !privileged("a_client_back_with_an_address_from_elsewhere_is_naked") {
        return;
    }
    let mut node = TestNode::new("dhcpnk", 0);
    let ct = container_port(&node, "dhcpnkc");
    node.start_daemon();
    ok(node.cli(&["customer", "add", "acme"]));
    ok(add_network(&node, "web", "198.51.100.200-198.51.100.210"));
    std::thread::sleep(Duration::from_millis(300));
    let dir = tempfile::tempdir().expect("dir");
    let leases = dir.path().join("dhclient.leases");
    std::fs::write(
        &leases,
        "lease {\n  interface \"eth0\";\n  fixed-address 203.0.113.77;\n  option subnet-mask 255.255.255.0;\n  \
         option dhcp-server-identifier 203.0.113.1;\n  renew 4 2037/01/01 00:00:00;\n  \
         rebind 4 2037/01/01 00:00:00;\n  expire 4 2037/01/01 00:00:00;\n}\n",
    )
    .expect("the remembered lease");
    let script = dir.path().join("dhclient.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\ncase \"$reason\" in BOUND|REBOOT) ip addr add \"$new_ip_address/$new_subnet_mask\" dev \"$interface\";; \
         esac\nexit 0\n",
    )
    .expect("script");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let client = ct
        .command("dhclient")
        .args(["-4", "-1", "-d", "-sf"])
        .arg(&script)
        .arg("-pf")
        .arg(dir.path().join("dhclient.pid"))
        .arg("-lf")
        .arg(&leases)
        .arg("eth0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map(|c| hostgate_testbed::ChildGuard::new("dhclient", c))
        .expect("dhclient (apt-get install isc-dhcp-client)");
    let addrs =
        || String::from_utf8_lossy(&ct.ip(["-4", "addr", "show", "dev", "eth0"]).expect("ip").stdout).into_owned();
    assert!(common::eventually(Duration::from_secs(20), || addrs().contains("198.51.100.2")), "{}", addrs());
    drop(client);
    assert!(!addrs().contains("203.0.113.77"), "kept the address from elsewhere: {}", addrs());
    let status = node.status();
    let counters = status.dhcp.iter().find(|c| c.network == "web").expect("counters");
    assert!(counters.naks >= 1 && counters.acks >= 1, "{counters:?}");
}

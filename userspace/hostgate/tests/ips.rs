//! Customers and customer IPs end to end: the real daemon puts assigned IPs
//! on the node's uplink through rtnetlink, announces them, withdraws them,
//! and never touches addresses it did not add.

mod common;

use std::time::{Duration, Instant};

use common::{err, ok, TestNode};
use hostgate_api::IpView;
use hostgate_testbed::{privileged, sender::capture, topology::CLIENT_IFACE};

const POOLS: &str =
    "\n[ip]\npools = [\"203.0.113.0/24\", \"2001:db8:113::/48\"]\nannounce_count = 3\nannounce_interval_ms = 100\n";

fn uplink_addrs(node: &TestNode) -> String {
    String::from_utf8_lossy(&node.topo.node.ip(["addr", "show", "dev", "uplink0"]).expect("ip").stdout).into_owned()
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn assigned_ips_are_added_announced_and_withdrawn() {
    if !privileged("assigned_ips_are_added_announced_and_withdrawn") {
        return;
    }
    let mut node = TestNode::with_config("ips", 0, POOLS);
    // The host's own address inside the pool, added by someone else.
    node.topo.node.ip(["addr", "add", "203.0.113.99/32", "dev", "uplink0"]).expect("foreign address");
    node.start_daemon();
    ok(node.cli(&["customer", "add", "acme", "--description", "Acme Corp"]));

    let frames = capture(&node.topo.client.path(), CLIENT_IFACE, Duration::from_millis(1500)).expect("capture");
    ok(node.cli(&["ip", "assign", "203.0.113.10", "--customer", "acme"]));
    ok(node.cli(&["ip", "assign", "2001:db8:113::10", "--customer", "acme"]));
    wait_for("addresses on the uplink", || {
        let a = uplink_addrs(&node);
        a.contains("203.0.113.10/32") && a.contains("2001:db8:113::10/128")
    });

    // Announced: gratuitous ARPs and unsolicited NAs, announce_count of each.
    let frames = frames.join().expect("capture thread").expect("capture");
    let garps =
        frames.iter().filter(|f| f.len() >= 42 && f[12..14] == [0x08, 0x06] && f[28..32] == [203, 0, 113, 10]).count();
    let nas = frames
        .iter()
        .filter(|f| f.len() >= 78 && f[12..14] == [0x86, 0xdd] && f[20] == 58 && f[54] == 136)
        .filter(|f| f[62..78] == "2001:db8:113::10".parse::<std::net::Ipv6Addr>().expect("ip").octets())
        .count();
    assert_eq!((garps, nas), (3, 3), "{} frames captured", frames.len());

    // The client reaches the customer IP.
    node.topo.client.exec("ping", ["-c", "1", "-W", "2", "203.0.113.10"]).expect("ping customer IP");
    let ips: Vec<IpView> = serde_json::from_str(&ok(node.cli(&["ip", "list", "--json"]))).expect("json");
    assert_eq!(ips.len(), 2);
    assert!(ips.iter().all(|i| i.state == "active" && i.customer == "acme"), "{ips:?}");
    let table = ok(node.cli(&["ip", "list"]));
    assert!(table.contains("203.0.113.10") && table.contains("active"), "{table}");

    // Conflicts are refused clearly.
    ok(node.cli(&["customer", "add", "globex"]));
    assert!(err(node.cli(&["ip", "assign", "203.0.113.10", "--customer", "globex"]))
        .contains("already assigned to customer acme"));
    assert!(err(node.cli(&["ip", "assign", "198.51.100.77", "--customer", "acme"]))
        .contains("outside the configured pools"));
    assert!(err(node.cli(&["ip", "assign", "203.0.113.99", "--customer", "acme"])).contains("address of this host"));
    assert!(err(node.cli(&["ip", "assign", "203.0.113.11", "--customer", "nobody"]))
        .contains("customer nobody does not exist"));
    assert!(err(node.cli(&["customer", "remove", "acme"])).contains("still holds"));

    // Survives a restart; an address removed behind hostgate's back comes back.
    node.daemon.as_mut().expect("daemon").kill();
    node.topo.node.ip(["addr", "del", "203.0.113.10/32", "dev", "uplink0"]).expect("del");
    node.start_daemon();
    wait_for("address restored", || uplink_addrs(&node).contains("203.0.113.10/32"));

    // Release withdraws; a drained node holds nothing; the host's own address stays.
    ok(node.cli(&["ip", "release", "203.0.113.10"]));
    assert!(err(node.cli(&["ip", "move", "2001:db8:113::10", "--to", "elsewhere"])).contains("not a live member"));
    let name = node.name.clone();
    ok(node.cli(&["node", "drain", &name]));
    wait_for("addresses withdrawn", || {
        let a = uplink_addrs(&node);
        !a.contains("203.0.113.10/32") && !a.contains("2001:db8:113::10/128")
    });
    assert!(uplink_addrs(&node).contains("203.0.113.99/32"), "foreign address removed");
    let ips: Vec<IpView> = serde_json::from_str(&ok(node.cli(&["ip", "list", "--json"]))).expect("json");
    assert_eq!(ips.len(), 1);
    assert_eq!((ips[0].state.as_str(), ips[0].owner.as_deref()), ("unplaced", None), "no node may hold it");
    assert!(ok(node.cli(&["node", "list"])).contains("up (drained)"));
    ok(node.cli(&["node", "undrain", &name]));
    wait_for("address back", || uplink_addrs(&node).contains("2001:db8:113::10/128"));
}

#[test]
fn concurrent_assignments_of_one_ip_give_one_winner() {
    if !privileged("concurrent_assignments_of_one_ip_give_one_winner") {
        return;
    }
    let mut node = TestNode::with_config("ipsrace", 0, POOLS);
    node.start_daemon();
    for c in ["alpha", "beta", "gamma", "delta"] {
        ok(node.cli(&["customer", "add", c]));
    }
    for round in 0..5 {
        let ip = format!("203.0.113.{}", 50 + round);
        let children: Vec<_> = ["alpha", "beta", "gamma", "delta"]
            .iter()
            .map(|c| {
                std::process::Command::new(common::BIN)
                    .arg("--socket")
                    .arg(&node.socket)
                    .args(["ip", "assign", &ip, "--customer", c])
                    .output()
            })
            .collect();
        let outs: Vec<_> = children.into_iter().map(|o| o.expect("run")).collect();
        let winners = outs.iter().filter(|o| o.status.success()).count();
        assert_eq!(winners, 1, "round {round}");
        for o in outs.iter().filter(|o| !o.status.success()) {
            assert!(
                String::from_utf8_lossy(&o.stderr).contains("already assigned"),
                "{}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }
}

#[test]
fn rules_check_knows_the_customers() {
    if !privileged("rules_check_knows_the_customers") {
        return;
    }
    let mut node = TestNode::with_config("rulesck", 0, POOLS);
    node.start_daemon();
    ok(node.cli(&["customer", "add", "acme"]));
    let good = node.dir.path().join("acme.rules");
    std::fs::write(&good, "customer acme\ndefault drop\nallow tcp port 80\n").expect("write");
    let unknown = node.dir.path().join("nobody.rules");
    std::fs::write(&unknown, "customer nobody\ndefault drop\n").expect("write");
    let out = ok(node.cli(&["rules", "check", &good.display().to_string()]));
    assert!(out.contains("0 error(s)"), "{out}");
    let e = err(node.cli(&["rules", "check", &good.display().to_string(), &unknown.display().to_string()]));
    assert!(e.contains(&format!("{}:1:10: error: unknown customer \"nobody\"", unknown.display())), "{e}");
}

//! The firewall end to end: rules files in the daemon's rules directory
//! guard a customer IP on a real node; clients see allowed, dropped and
//! rejected connections; a broken file keeps the rules in force.

mod common;

use std::time::{Duration, Instant};

use common::TestNode;
use hostgate_api::RulesStatus;
use hostgate_testbed::{privileged, servers};

fn ok(out: std::process::Output) -> String {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

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
    assert!(human.contains("acme.rules:3") && human.contains("(default)"), "{human}");

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

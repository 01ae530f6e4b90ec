//! `hostgate top` driven in a real pseudo-terminal (tmux, on a private
//! server socket in a temporary directory), against the real daemon and data plane: traffic sent to
//! a VIP, a customer IP and two firewall rules shows up as rates on the screen, and the
//! sort keys reorder the rows.

mod common;

use std::{process::Command, time::Duration};

use common::{eventually, ok, TestNode};
use hostgate_testbed::{
    packet::Packet,
    privileged,
    sender::{send_frames, Pace},
    topology::{CLIENT_IFACE, CLIENT_MAC, CLIENT_V4, NODE_MAC},
};

/// A tmux server of this test alone (its socket in a directory of its
/// own, so nothing stays behind); killed, with whatever runs in it, on drop.
struct Tmux {
    dir: tempfile::TempDir,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .arg("-S")
            .arg(self.dir.path().join("tmux.sock"))
            .args(args)
            .output()
            .expect("tmux (apt-get install tmux)")
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "top"]).stdout).into_owned()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

/// The screen's row whose name ends with `name` (rules are named by their
/// file's path): (its line number, its PKT/S column).
fn row(screen: &str, name: &str) -> Option<(usize, f64)> {
    screen.lines().enumerate().find_map(|(i, line)| {
        let cells: Vec<&str> = line.trim_matches(|c: char| c == '│' || c.is_whitespace()).split_whitespace().collect();
        cells.get(1).is_some_and(|n| n.ends_with(name)).then(|| (i, human_value(cells.get(2).copied().unwrap_or("0"))))
    })
}

/// `12.0`, `1.23k`, `4.50M` -> the number.
fn human_value(s: &str) -> f64 {
    let (num, scale) = match s.chars().last() {
        Some('k') => (&s[..s.len() - 1], 1e3),
        Some('M') => (&s[..s.len() - 1], 1e6),
        Some('G') => (&s[..s.len() - 1], 1e9),
        _ => (s, 1.0),
    };
    num.parse::<f64>().unwrap_or(f64::NAN) * scale
}

#[test]
fn top_shows_live_rates_and_sorts_by_key() {
    if !privileged("top_shows_live_rates_and_sorts_by_key") {
        return;
    }
    let rules_dir = tempfile::tempdir().expect("dir");
    // Line 3 gets the lesser traffic, line 4 the greater: by rate, 4 comes
    // first; by name, 3 does.
    std::fs::write(
        rules_dir.path().join("acme.rules"),
        "customer acme\ndefault allow\ndrop udp port 5353\ndrop udp port 6000\n",
    )
    .expect("write");
    let config =
        format!("\n[ip]\npools = [\"203.0.113.0/24\"]\n\n[firewall]\nrules_dir = \"{}\"\n", rules_dir.path().display());
    let mut node = TestNode::with_config("top", 0, &config);
    node.topo.client.sysctl(&format!("net.ipv6.conf.{CLIENT_IFACE}.disable_ipv6"), "1").expect("sysctl");
    node.start_daemon();
    ok(node.cli(&["customer", "add", "acme"]));
    ok(node.cli(&["ip", "assign", "203.0.113.10", "--customer", "acme"]));
    ok(node.cli(&["rules", "apply"]));
    // A VIP without backends: the data plane counts its packets, then drops them.
    ok(node.cli(&["vip", "add", "203.0.113.20:80/udp"]));

    let tmux = Tmux { dir: tempfile::tempdir().expect("dir") };
    let command = format!("{} --socket {} top", common::BIN, node.socket.display());
    let started = tmux.run(&["new-session", "-d", "-x", "200", "-y", "50", "-s", "top", &command]);
    assert!(started.status.success(), "tmux: {}", String::from_utf8_lossy(&started.stderr));
    assert!(
        eventually(Duration::from_secs(10), || tmux.screen().contains("hostgate top - node")),
        "top did not draw:\n{}",
        tmux.screen()
    );

    // 700 frames/s for up to 8 s: 400/s to rule 4, 100/s to rule 3, 200/s to the VIP.
    let m = |p: Packet| p.macs(CLIENT_MAC, NODE_MAC);
    let guarded = std::net::Ipv4Addr::new(203, 0, 113, 10);
    let vip = std::net::Ipv4Addr::new(203, 0, 113, 20);
    let to4 = m(Packet::ipv4(CLIENT_V4, guarded).udp(40000, 6000)).build();
    let to3 = m(Packet::ipv4(CLIENT_V4, guarded).udp(40000, 5353)).build();
    let to_vip = m(Packet::ipv4(CLIENT_V4, vip).udp(40000, 80)).build();
    let frames = vec![to4.clone(), to4.clone(), to4.clone(), to4, to3, to_vip.clone(), to_vip];
    let client = node.topo.client.path();
    let sender = std::thread::spawn(move || {
        let pace = Pace { rate: 700, max_duration: Duration::from_secs(8) };
        send_frames(&client, CLIENT_IFACE, frames, 800, pace)
    });

    let (r3, r4, v, ip) = ("/acme.rules:3", "/acme.rules:4", "203.0.113.20:80/udp", "203.0.113.10");
    // A firewall re-apply zeroes the per-rule counters, so one refresh may
    // show a rule's rate over part of the period: wait for a steady screen.
    let by_rate = eventually(Duration::from_secs(6), || {
        let s = tmux.screen();
        matches!((row(&s, r3), row(&s, r4), row(&s, v), row(&s, ip)),
            (Some((l3, p3)), Some((l4, p4)), Some((_, pv)), Some((_, pi)))
                if p3 > 0.0 && p4 > p3 && pv > 0.0 && pi > p4 && l4 < l3
                    && (200.0..=600.0).contains(&p4) && (250.0..=750.0).contains(&pi))
    });
    let screen = tmux.screen();
    assert!(by_rate, "rule 4 above rule 3 with their rates, the VIP's and the customer IP's rate:\n{screen}");
    let (_, p4) = row(&screen, r4).expect("rule 4");
    assert!((200.0..=600.0).contains(&p4), "about 400 pkt/s to rule 4, shown {p4}:\n{screen}");
    // The customer IP gets both rules' traffic: about 500 pkt/s.
    let (_, pi) = row(&screen, ip).expect("customer IP");
    assert!((250.0..=750.0).contains(&pi), "about 500 pkt/s to the customer IP, shown {pi}:\n{screen}");

    // `n` sorts by name: rule 3 comes first, and the header says so.
    assert!(tmux.run(&["send-keys", "-t", "top", "n"]).status.success());
    let by_name = eventually(Duration::from_secs(3), || {
        let s = tmux.screen();
        s.contains("sorted by name") && matches!((row(&s, r3), row(&s, r4)), (Some((l3, _)), Some((l4, _))) if l3 < l4)
    });
    assert!(by_name, "sorted by name:\n{}", tmux.screen());

    // `q` quits and gives the terminal back: the session ends with it.
    assert!(tmux.run(&["send-keys", "-t", "top", "q"]).status.success());
    assert!(
        eventually(Duration::from_secs(3), || !tmux.run(&["has-session", "-t", "top"]).status.success()),
        "top did not quit on q:\n{}",
        tmux.screen()
    );
    let sent = sender.join().expect("sender thread").expect("send");
    assert!(sent > 0);
}

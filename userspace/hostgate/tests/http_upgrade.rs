//! Zero-downtime restart of the daemon (issue #10 point 8): SIGUSR2 or
//! `hostgate daemon upgrade` hands the HTTP listeners to a new daemon
//! process, which adopts them and the pinned data plane; the old one
//! drains and exits. wrk keeps running across it with keep-alive, a
//! WebSocket and a slow upload are in flight, and nothing fails.
//! Also: a successor that cannot start leaves the old daemon serving, and
//! SIGTERM lets a request in flight finish.

mod common;

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use common::{eventually, http_peer, ok, wrk, TestNode, WebSocket};
use hostgate_testbed::{privileged, topology::NODE_V4, ChildGuard, Netns};

/// Daemons started by other daemons are no children of the test: killed
/// when the test ends, however it ends: the pids it learnt, and any
/// process still running with this test's config file (a successor whose
/// pid the test never saw).
struct Pids(Vec<u32>, std::path::PathBuf);

impl Drop for Pids {
    fn drop(&mut self) {
        let config = self.1.display().to_string();
        let mut pids = self.0.clone();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            if pid != std::process::id() && String::from_utf8_lossy(&cmdline).contains(&config) {
                pids.push(pid);
            }
        }
        for pid in pids {
            // SAFETY: a plain kill(2); a pid that has exited is harmless here.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: a plain kill(2) to the daemon under test.
    assert_eq!(unsafe { libc::kill(pid as i32, sig) }, 0, "kill {pid}");
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default().contains(") Z ")
}

/// A POST of 256 KiB sent at 64 KiB/s (about 4 s): a request in flight
/// for as long as the test needs. Returns curl's status code output.
fn slow_upload(client: &Netns, host: &str) -> std::process::Child {
    client
        .command("sh")
        .arg("-c")
        .arg(format!(
            "head -c 262144 /dev/zero | curl -sS --max-time 30 -o /dev/null -w '%{{http_code}}' \
             --limit-rate 64k -H 'Host: {host}' -H 'Content-Type: application/octet-stream' \
             --data-binary @- http://{NODE_V4}/upload"
        ))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sh + curl")
}

fn finished(upload: std::process::Child) -> String {
    let out = upload.wait_with_output().expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// `curl` of `/` on the vhost: the status code.
fn code(client: &Netns, host: &str) -> u16 {
    let out = client
        .command("curl")
        .args(["-s", "--max-time", "3", "-o", "/dev/null", "-w", "%{http_code}", "-H"])
        .arg(format!("Host: {host}"))
        .arg(format!("http://{NODE_V4}/"))
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
}

const HOST: &str = "up.example.com";

/// The status, if a daemon answers (none does for a moment in a hand-over).
fn try_status(node: &TestNode) -> Option<hostgate_api::Status> {
    let out = node.cli(&["status", "--json"]);
    out.status.success().then(|| serde_json::from_slice(&out.stdout).ok()).flatten()
}

/// A node with the proxy on port 80, DNS on 53 and SSH on 22, two
/// backends behind one vhost; the two backends' guards.
fn node(purpose: &str) -> (TestNode, Vec<ChildGuard>) {
    let extra = format!(
        "\n[http]\nlisten = [\"{NODE_V4}:80\"]\ndrain_secs = 20\n\n[dns]\nlisten = [\"{NODE_V4}:53\"]\n\n[ssh]\nlisten = [\"{NODE_V4}:22\"]\n"
    );
    let mut node = TestNode::with_config(purpose, 2, &extra);
    node.start_daemon();
    let (c1, c2) = (&node.topo.containers[0], &node.topo.containers[1]);
    let peers = vec![
        http_peer(&c1.ns, &c1.v4.to_string(), 8080, "c1", false),
        http_peer(&c2.ns, &c2.v4.to_string(), 8080, "c2", false),
    ];
    let (b1, b2) = (format!("{}:8080", c1.v4), format!("{}:8080", c2.v4));
    ok(node.cli(&["customer", "add", "acme"]));
    ok(node.cli(&["http", "vhost", "add", HOST, "--customer", "acme", "--backend", &b1, "--backend", &b2]));
    let zone = ["dns", "zone", "add", "example.com", "--ns", "ns1", "--admin", "dns@example.com"];
    ok(node.cli(&zone));
    ok(node.cli(&["dns", "record", "add", "example.com", "www", "A", "198.51.100.80"]));
    assert!(eventually(Duration::from_secs(3), || code(&node.topo.client, HOST) == 200), "vhost not served");
    (node, peers)
}

/// `dig +short www.example.com @node` from the client namespace.
fn dig(client: &Netns) -> String {
    dig_waiting(client, 1)
}

/// The same, waiting up to `secs` for the one query's answer.
fn dig_waiting(client: &Netns, secs: u32) -> String {
    let out = client
        .command("dig")
        .args([
            &format!("@{NODE_V4}"),
            "+norec",
            &format!("+time={secs}"),
            "+tries=1",
            "+short",
            "www.example.com",
            "A",
        ])
        .output()
        .expect("run dig");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The SSH proxy's banner, read from the client namespace.
fn ssh_banner(client: &Netns) -> String {
    ssh_banner_waiting(client, 2).0
}

/// The banner, with what went wrong (stderr), waiting up to `secs`. The
/// client says who it is first, as OpenSSH does (the proxy waits a moment
/// for it otherwise).
fn ssh_banner_waiting(client: &Netns, secs: u32) -> (String, String) {
    let say = format!("exec 3<>/dev/tcp/{NODE_V4}/22 && printf 'SSH-2.0-OpenSSH_9.2p1\\r\\n' >&3 && head -c 8 <&3");
    let out = client.command("timeout").args([&secs.to_string(), "bash", "-c", &say]).output().expect("bash /dev/tcp");
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Sets its flag when dropped, also in a panic.
struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// One attempt of [`keep_asking`]: whether it got the right answer, what
/// it got, when it started and how long it waited.
type Asked = (bool, String, Instant, Duration);

/// Asks `ask` (right or not, and what came) again and again until `stop`.
fn keep_asking(stop: &std::sync::atomic::AtomicBool, ask: impl Fn() -> (bool, String)) -> Vec<Asked> {
    let mut asked = Vec::new();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let start = Instant::now();
        let (right, what) = ask();
        asked.push((right, what, start, start.elapsed()));
        std::thread::sleep(Duration::from_millis(20));
    }
    asked
}

#[test]
fn upgrade_under_load_loses_nothing() {
    if !privileged("upgrade_under_load_loses_nothing") {
        return;
    }
    let (mut node, _peers) = node("httpup");
    let mut d1 = node.daemon.take().expect("the first daemon");
    let client = &node.topo.client;
    let first = node.status();
    let links: Vec<u32> = first.dataplane.attachments.iter().map(|a| a.link_id).collect();
    assert!(!links.is_empty(), "the data plane is attached");
    let mut pids = Pids(vec![], node.config.clone());

    // In flight across the upgrades: a WebSocket and a slow upload.
    let mut ws = WebSocket::open(client, HOST, "/chat");
    let ws_backend = ws.say("before").split(':').next().unwrap_or_default().to_string();
    let upload = slow_upload(client, HOST);

    // DNS queries and SSH connections all along: their sockets are handed
    // over too, so between the old daemon's end and the new one's start
    // they wait in them (answered late, never refused).
    let asking = std::sync::atomic::AtomicBool::new(false);
    let url = format!("http://{NODE_V4}/");
    let (second, third) = std::thread::scope(|s| {
        // Whatever happens below, the asking threads stop (else the scope
        // would wait for them forever).
        let stop_asking = StopOnDrop(&asking);
        let dns = s.spawn(|| {
            keep_asking(&asking, || {
                let a = dig_waiting(client, 8);
                (a == "198.51.100.80", a)
            })
        });
        let ssh = s.spawn(|| {
            keep_asking(&asking, || {
                let (banner, error) = ssh_banner_waiting(client, 8);
                (banner.starts_with("SSH-2.0-"), format!("{banner:?} {error}"))
            })
        });
        let load =
            s.spawn(|| wrk(client, &["-t2", "-c8", "-d7s", "--timeout", "3s", "-H", &format!("Host: {HOST}"), &url]));
        std::thread::sleep(Duration::from_millis(1500));
        // From each upgrade's start until the new daemon answers.
        let mut windows = vec![];
        // By signal, as `systemctl reload` would send it.
        let start = Instant::now();
        signal(first.pid, libc::SIGUSR2);
        let mut second = None;
        assert!(
            eventually(Duration::from_secs(20), || {
                second = try_status(&node).filter(|s| s.pid != first.pid);
                second.is_some()
            }),
            "no new daemon answered after SIGUSR2"
        );
        windows.push((start, Instant::now()));
        let second = second.expect("second daemon");
        pids.0.push(second.pid);
        std::thread::sleep(Duration::from_millis(1500));
        // By the CLI, from the new daemon: it can hand over in turn.
        let start = Instant::now();
        let said = ok(node.cli(&["daemon", "upgrade"]));
        assert!(said.contains(&format!("pid {} ->", second.pid)), "{said}");
        let third = node.status();
        windows.push((start, Instant::now()));
        pids.0.push(third.pid);
        let result = load.join().expect("wrk thread");
        eprintln!("{}", result.output);
        assert!(result.requests > 500, "wrk made too few requests: {}", result.output);
        assert!(result.errors.is_empty(), "wrk saw errors across two upgrades: {:?}", result.errors);
        drop(stop_asking);
        // Answered although asked while a daemon handed over: every
        // window holds some (the late ones waited in a handed-over socket).
        let answered_in = |asked: &[Asked], (from, to): (Instant, Instant)| {
            asked.iter().filter(|(right, _, at, _)| *right && *at >= from && *at <= to).count()
        };
        let late = |asked: &[Asked]| asked.iter().filter(|(right, .., took)| *right && took.as_millis() > 200).count();
        let dns = dns.join().expect("DNS thread");
        let wrong: Vec<_> = dns.iter().filter(|(right, ..)| !right).collect();
        eprintln!("DNS queries across the upgrades: {}, answered late {}, wrong {wrong:?}", dns.len(), late(&dns));
        assert!(wrong.is_empty(), "DNS queries failed across two upgrades: {wrong:?}\n{}", node.log());
        // No connection refused. A session the old daemon had taken just
        // before the signal ends with it (one per upgrade at most, here:
        // the banner goes out within a millisecond).
        let ssh = ssh.join().expect("SSH thread");
        let wrong: Vec<_> = ssh.iter().filter(|(right, ..)| !right).collect();
        eprintln!("SSH connections across the upgrades: {}, answered late {}, cut {wrong:?}", ssh.len(), late(&ssh));
        assert!(wrong.iter().all(|(_, what, ..)| !what.contains("refused")), "refused: {wrong:?}\n{}", node.log());
        assert!(wrong.len() <= 2, "SSH connections failed across two upgrades: {wrong:?}");
        for (i, window) in windows.into_iter().enumerate() {
            let (d, s) = (answered_in(&dns, window), answered_in(&ssh, window));
            eprintln!("upgrade {}: {:?}, DNS answered {d}, SSH {s}", i + 1, window.1 - window.0);
            assert!(d > 0 && s > 0, "upgrade {}: nothing asked during it was answered (DNS {d}, SSH {s})", i + 1);
        }
        (second, third)
    });
    assert_ne!(second.pid, third.pid);
    assert!(alive(third.pid), "the last daemon runs");

    // The requests in flight at both upgrades complete on the old daemons.
    assert_eq!(finished(upload), "200", "the slow upload finished across the upgrades");
    assert_eq!(ws.say("after"), format!("{ws_backend}: after"), "the WebSocket survived both upgrades");
    assert!(alive(first.pid), "the first daemon waits for its WebSocket");
    ws.close();
    let first_exited = eventually(Duration::from_secs(10), || d1.try_exited().is_some() || !alive(first.pid));
    assert!(first_exited, "the first daemon exits once its last connection ends");
    assert!(eventually(Duration::from_secs(10), || !alive(second.pid)), "the second daemon exited");

    // The same store, the same data plane (adopted, not re-created), and
    // the other services back.
    let now = node.status();
    assert_eq!(now.store.location, first.store.location);
    assert!(now.store.revision >= first.store.revision, "the same store, not a fresh one");
    assert!(now.dataplane.attachments.iter().all(|a| a.origin == "adopted"), "{:?}", now.dataplane.attachments);
    let relinked: Vec<u32> = now.dataplane.attachments.iter().map(|a| a.link_id).collect();
    assert_eq!(relinked, links, "the same BPF links");
    let vhosts = ok(node.cli(&["http", "vhost", "list"]));
    assert!(vhosts.contains(HOST), "{vhosts}");
    assert_eq!(code(client, HOST), 200);
    assert!(eventually(Duration::from_secs(5), || dig(client) == "198.51.100.80"), "DNS answers again");
    assert!(eventually(Duration::from_secs(5), || ssh_banner(client).starts_with("SSH-2.0-")), "SSH answers again");
    // Counted by the last daemon (at least the curl above; wrk may have
    // ended before it took over on a slow machine).
    let last = node.status();
    assert_eq!(last.pid, third.pid);
    let served: u64 = last.http.iter().filter(|c| c.vhost == HOST).map(|c| c.requests).sum();
    assert!(served > 0, "the last daemon serves the vhost: {:?}", last.http);
    drop(pids);
}

#[test]
fn failed_upgrade_leaves_the_daemon_serving() {
    if !privileged("failed_upgrade_leaves_the_daemon_serving") {
        return;
    }
    let (node, _peers) = node("httpupf");
    let client = &node.topo.client;
    let first = node.status();
    // The successor reads the same config file: make it one that does not load.
    let good = std::fs::read_to_string(&node.config).expect("config");
    std::fs::write(&node.config, good.replace("[http]", "[http]\nno_such_field = 1")).expect("config");
    let url = format!("http://{NODE_V4}/");
    let said = std::thread::scope(|s| {
        let load =
            s.spawn(|| wrk(client, &["-t2", "-c8", "-d4s", "--timeout", "3s", "-H", &format!("Host: {HOST}"), &url]));
        std::thread::sleep(Duration::from_millis(1000));
        let out = node.cli(&["daemon", "upgrade"]);
        let result = load.join().expect("wrk thread");
        eprintln!("{}", result.output);
        assert!(result.requests > 200, "wrk made too few requests: {}", result.output);
        assert!(result.errors.is_empty(), "wrk saw errors across a failed upgrade: {:?}", result.errors);
        out
    });
    assert!(!said.status.success(), "the CLI reports the failure");
    let stderr = String::from_utf8_lossy(&said.stderr);
    assert!(stderr.contains("carries on"), "{stderr}");
    let now = node.status();
    assert_eq!(now.pid, first.pid, "the same daemon serves");
    assert!(node.log().contains("upgrade failed"), "{}", node.log());
    assert!(node.log().contains("no_such_field"), "the successor said why");
    assert_eq!(code(client, HOST), 200);
    assert!(eventually(Duration::from_secs(5), || dig(client) == "198.51.100.80"), "DNS answers again");
    // Fixed, the next upgrade goes through.
    std::fs::write(&node.config, good).expect("config");
    let mut pids = Pids(vec![], node.config.clone());
    let said = ok(node.cli(&["daemon", "upgrade"]));
    pids.0.push(node.status().pid);
    assert!(said.contains(&format!("pid {} ->", first.pid)), "{said}");
    assert_eq!(code(client, HOST), 200);
}

#[test]
fn sigterm_lets_requests_in_flight_finish() {
    if !privileged("sigterm_lets_requests_in_flight_finish") {
        return;
    }
    let (mut node, _peers) = node("httpterm");
    let mut d1 = node.daemon.take().expect("the daemon");
    let client = &node.topo.client;
    let first = node.status();
    let upload = slow_upload(client, HOST);
    std::thread::sleep(Duration::from_millis(1000));
    signal(first.pid, libc::SIGTERM);
    // New connections are refused at once (the listeners are closed)...
    assert!(eventually(Duration::from_secs(3), || code(client, HOST) == 0), "the listener closed");
    // ...while the upload in flight completes.
    assert_eq!(finished(upload), "200", "the request in flight finished");
    let exited = eventually(Duration::from_secs(10), || d1.try_exited().is_some());
    assert!(exited, "the daemon exited after the drain");
    assert!(node.log().contains("every HTTP connection finished"), "{}", node.log());
}

//! The HTTP reverse proxy end to end: the real daemon in a node namespace
//! proxies `curl` from the client namespace to HTTP servers in two
//! container namespaces, by Host and path, with weights, forwarding
//! headers from the real peer, and vhost changes applied live.

mod common;

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use common::{err, ok, TestNode};
use hostgate_testbed::{
    privileged, servers,
    topology::{CLIENT_V6, NODE_V4, NODE_V6},
    Netns,
};

/// An answer seen by curl: status code and body.
struct Answer {
    code: u16,
    body: String,
}

impl Answer {
    /// The name of the backend that answered (first line of the body).
    fn backend(&self) -> &str {
        self.body.lines().next().unwrap_or_default()
    }

    /// A request header as the backend received it (name lowercase), every value.
    fn forwarded(&self, name: &str) -> Vec<String> {
        self.body
            .lines()
            .filter_map(|l| l.split_once(':'))
            .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
            .collect()
    }
}

/// `curl http://NODE_V4/<path>` from the client namespace with `Host: host`.
fn get(client: &Netns, host: &str, path: &str, extra: &[&str]) -> Answer {
    get_from(client, &NODE_V4.to_string(), host, path, extra)
}

/// As `get`, to the proxy's address `target` (`[v6]` bracketed).
fn get_from(client: &Netns, target: &str, host: &str, path: &str, extra: &[&str]) -> Answer {
    let out = client
        .command("curl")
        .args(["-sS", "--max-time", "5", "-o", "-", "-w", "\n%{http_code}", "-H"])
        .arg(format!("Host: {host}"))
        .args(extra)
        .arg(format!("http://{target}{path}"))
        .output()
        .expect("run curl (apt-get install curl)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    Answer { code: code.trim().parse().unwrap_or(0), body: body.to_string() }
}

/// Sends `raw` bytes to the proxy from the client namespace on one
/// connection and returns everything the proxy answers until it closes.
fn raw(client: &Netns, raw: &str) -> String {
    use std::io::{Read, Write};
    let (path, raw) = (client.path(), raw.to_string());
    std::thread::spawn(move || {
        hostgate_testbed::sender::enter_netns(&path).expect("enter client netns");
        let mut s = std::net::TcpStream::connect((NODE_V4, 80)).expect("connect to the proxy");
        s.set_read_timeout(Some(Duration::from_secs(3))).expect("timeout");
        s.write_all(raw.as_bytes()).expect("send");
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).into_owned()
    })
    .join()
    .expect("raw client thread")
}

/// Polls until `host` answers from `backend`; how long that took.
fn until_served(client: &Netns, host: &str, path: &str, backend: &str, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let a = get(client, host, path, &[]);
        if a.code == 200 && a.backend() == backend {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "{host}{path} not served by {backend} within {within:?}: {} {}",
            a.code,
            a.body
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn curl_through_the_proxy() {
    if !privileged("curl_through_the_proxy") {
        return;
    }
    let listen = format!("\n[http]\nlisten = [\"{NODE_V4}:80\", \"[{NODE_V6}]:80\"]\n");
    let mut node = TestNode::with_config("http", 2, &listen);
    node.start_daemon();
    let (c1, c2) = (&node.topo.containers[0], &node.topo.containers[1]);
    let (b1, b2) = (format!("{}:8080", c1.v4), format!("{}:8080", c2.v4));
    let _s1 = servers::http_identity(&c1.ns.path(), b1.parse().expect("addr"), "c1").expect("server c1");
    let _s2 = servers::http_identity(&c2.ns.path(), b2.parse().expect("addr"), "c2").expect("server c2");
    let client = &node.topo.client;
    ok(node.cli(&["customer", "add", "acme"]));

    // By Host to c1, by path prefix to c2; applied without a restart.
    let api = format!("/api={b2}");
    ok(node.cli(&["http", "vhost", "add", "shop.example.com", "--customer", "acme", "--backend", &b1, "--path", &api]));
    let took = until_served(client, "shop.example.com", "/", "c1", Duration::from_secs(1));
    eprintln!("new vhost served after {took:?}");
    assert_eq!(get(client, "SHOP.example.com:80", "/index.html", &[]).backend(), "c1");
    assert_eq!(get(client, "shop.example.com", "/api/orders", &[]).backend(), "c2");

    // Unknown hosts get a clear 404 page.
    let unknown = get(client, "nobody.example.com", "/", &[]);
    assert_eq!(unknown.code, 404, "{}", unknown.body);
    assert!(unknown.body.contains("No site named \"nobody.example.com\""), "{}", unknown.body);

    // Forwarding headers come from the real peer, whatever the client claims.
    let spoofed = get(
        client,
        "shop.example.com",
        "/",
        &["-H", "X-Forwarded-For: 203.0.113.66", "-H", "Forwarded: for=203.0.113.66", "-H", "X-Real-IP: 203.0.113.66"],
    );
    assert_eq!(spoofed.forwarded("x-forwarded-for"), ["198.18.0.2"], "{}", spoofed.body);
    assert_eq!(spoofed.forwarded("x-forwarded-proto"), ["http"], "{}", spoofed.body);
    assert_eq!(spoofed.forwarded("forwarded"), ["for=198.18.0.2;proto=http;host=\"shop.example.com\""]);
    assert!(!spoofed.body.contains("203.0.113.66"), "a spoofed header reached the backend: {}", spoofed.body);

    // IPv6 clients: the same vhosts, the peer quoted in Forwarded.
    let v6 = get_from(client, &format!("[{NODE_V6}]"), "shop.example.com", "/", &[]);
    assert_eq!((v6.code, v6.backend()), (200, "c1"), "{}", v6.body);
    assert_eq!(v6.forwarded("x-forwarded-for"), [CLIENT_V6.to_string()]);
    assert_eq!(v6.forwarded("forwarded"), [format!("for=\"[{CLIENT_V6}]\";proto=http;host=\"shop.example.com\"")]);

    // Request smuggling: ambiguous framing is refused and the connection
    // closed, so the hidden second request is never read.
    for framing in [
        "Content-Length: 4\r\nTransfer-Encoding: chunked",
        "Content-Length: 4\r\nContent-Length: 30",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity",
    ] {
        let answer = raw(
            client,
            &format!(
                "POST / HTTP/1.1\r\nHost: shop.example.com\r\n{framing}\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: shop.example.com\r\n\r\n"
            ),
        );
        assert!(answer.starts_with("HTTP/1.1 400"), "{framing:?}: {answer}");
        assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{framing:?}: a second request was served: {answer}");
    }
    let fine = raw(client, "GET / HTTP/1.1\r\nHost: shop.example.com\r\nConnection: close\r\n\r\n");
    assert!(fine.starts_with("HTTP/1.1 200") && fine.contains("\r\n\r\nc1\n"), "{fine}");

    // Weights: smooth weighted round robin gives exactly 3:1 per cycle.
    let (w1, w2) = (format!("{b1},weight=3"), format!("{b2},weight=1"));
    ok(node.cli(&[
        "http",
        "vhost",
        "add",
        "web.example.com",
        "--customer",
        "acme",
        "--backend",
        &w1,
        "--backend",
        &w2,
    ]));
    until_served(client, "web.example.com", "/", "c1", Duration::from_secs(1));
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    for _ in 0..40 {
        *seen.entry(get(client, "web.example.com", "/", &[]).backend().to_string()).or_default() += 1;
    }
    let c1n = seen.get("c1").copied().unwrap_or(0);
    assert!((29..=31).contains(&c1n) && c1n + seen.get("c2").copied().unwrap_or(0) == 40, "{seen:?}");

    // Sticky by client IP: one client, one backend.
    let sticky = ["--customer", "acme", "--backend", &b1, "--backend", &b2, "--balance", "client-hash"];
    ok(node.cli(&[&["http", "vhost", "add", "sticky.test"][..], &sticky[..]].concat()));
    let start = Instant::now();
    while get(client, "sticky.test", "/", &[]).code != 200 {
        assert!(start.elapsed() < Duration::from_secs(1), "sticky.test not served");
    }
    let first = get(client, "sticky.test", "/", &[]).backend().to_string();
    for _ in 0..10 {
        assert_eq!(get(client, "sticky.test", "/", &[]).backend(), first);
    }

    // Per-vhost options: redirect to HTTPS; body limit.
    ok(node.cli(&["http", "vhost", "add", "secure.test", "--customer", "acme", "--backend", &b1, "--https-redirect"]));
    ok(node.cli(&["http", "vhost", "add", "small.test", "--customer", "acme", "--backend", &b1, "--max-body", "10"]));
    std::thread::sleep(Duration::from_millis(300));
    let out = client
        .command("curl")
        .args([
            "-sS",
            "--max-time",
            "5",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{redirect_url}",
            "-H",
            "Host: secure.test",
        ])
        .arg(format!("http://{NODE_V4}/a?b=c"))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "308 https://secure.test/a?b=c");
    assert_eq!(get(client, "small.test", "/", &["--data", "0123456789"]).code, 200);
    assert_eq!(get(client, "small.test", "/", &["--data", "0123456789a"]).code, 413);

    // An invalid vhost is refused, naming the field, and changes nothing.
    assert!(err(node.cli(&["http", "vhost", "add", "Bad_Name.example.com", "--customer", "acme", "--backend", &b1]))
        .contains("host:"));
    let e =
        err(node.cli(&["http", "vhost", "add", "x.example.com", "--customer", "acme", "--backend", "198.51.100.6"]));
    assert!(e.contains("backend:") && e.contains("IP:PORT"), "{e}");
    let e = err(node.cli(&["http", "vhost", "add", "x.example.com", "--customer", "nobody", "--backend", &b1]));
    assert!(e.contains("customer:"), "{e}");
    let e = err(node.cli(&["http", "vhost", "add", "shop.example.com", "--customer", "acme", "--backend", &b2]));
    assert!(e.contains("exists already"), "{e}");
    assert_eq!(get(client, "shop.example.com", "/", &[]).backend(), "c1", "the others keep working");

    // A change is answered within a second, and requests running across
    // several changes all succeed.
    let during = std::thread::scope(|s| {
        let load = s.spawn(|| (0..60).map(|_| get(client, "web.example.com", "/", &[]).code).collect::<Vec<_>>());
        for i in 0..5 {
            let w = format!("{b1},weight={}", i + 1);
            ok(node.cli(&[
                "http",
                "vhost",
                "set",
                "web.example.com",
                "--customer",
                "acme",
                "--backend",
                &w,
                "--backend",
                &b2,
            ]));
            std::thread::sleep(Duration::from_millis(50));
        }
        load.join().expect("load thread")
    });
    assert!(during.iter().all(|&c| c == 200), "requests failed during changes: {during:?}");
    ok(node.cli(&["http", "vhost", "set", "shop.example.com", "--customer", "acme", "--backend", &b2]));
    let took = until_served(client, "shop.example.com", "/", "c2", Duration::from_secs(1));
    eprintln!("changed vhost served after {took:?}");

    // Wildcards, and the longest suffix among them.
    ok(node.cli(&["http", "vhost", "add", "*.example.com", "--customer", "acme", "--backend", &b1]));
    until_served(client, "blog.example.com", "/", "c1", Duration::from_secs(1));
    assert_eq!(get(client, "shop.example.com", "/", &[]).backend(), "c2", "the exact name wins");

    // A dead backend next to a live one: its connection failures are
    // retried on the other at once, and after a health check (1 s) it is
    // not tried any more.
    let dead = format!("{}:9", c1.v4);
    ok(node.cli(&["http", "vhost", "add", "half.test", "--customer", "acme", "--backend", &dead, "--backend", &b2]));
    until_served(client, "half.test", "/", "c2", Duration::from_secs(1));
    for _ in 0..6 {
        let a = get(client, "half.test", "/", &[]);
        assert_eq!((a.code, a.backend()), (200, "c2"), "retried on the live backend: {}", a.body);
    }
    std::thread::sleep(Duration::from_millis(2500));
    let failures = |n: &TestNode| {
        n.status().http.iter().filter(|c| c.vhost == "half.test" && c.backend == dead).map(|c| c.errors).sum::<u64>()
    };
    let before = failures(&node);
    for _ in 0..6 {
        assert_eq!(get(client, "half.test", "/", &[]).backend(), "c2");
    }
    assert_eq!(failures(&node), before, "a backend marked down is not tried");

    // No healthy backend: 502.
    ok(node.cli(&["http", "vhost", "add", "down.test", "--customer", "acme", "--backend", "198.51.100.6:9"]));
    let start = Instant::now();
    while get(client, "down.test", "/", &[]).code == 404 && start.elapsed() < Duration::from_secs(1) {}
    assert_eq!(get(client, "down.test", "/", &[]).code, 502);

    // Removed: 404 at once (outside the wildcard); listed and counted.
    ok(node.cli(&["http", "vhost", "rm", "down.test"]));
    let start = Instant::now();
    while get(client, "down.test", "/", &[]).code != 404 {
        assert!(start.elapsed() < Duration::from_secs(1), "removed vhost still served");
    }
    let list = ok(node.cli(&["http", "vhost", "list"]));
    assert!(
        list.contains("shop.example.com") && list.contains("*.example.com") && !list.contains("down.test"),
        "{list}"
    );
    let show = ok(node.cli(&["http", "vhost", "show", "web.example.com"]));
    assert!(show.contains(&b1) && show.contains("REQUESTS"), "{show}");
    let status = node.status();
    let counted = |vhost: &str, backend: &str| {
        status.http.iter().filter(|c| c.vhost == vhost && c.backend == backend).map(|c| c.requests).sum::<u64>()
    };
    assert!(counted("web.example.com", &b1) >= 29, "{:?}", status.http);
    assert!(counted("-", "-") >= 1, "unknown hosts counted: {:?}", status.http);
    assert!(ok(node.cli(&["status"])).contains("http       shop.example.com"));
}

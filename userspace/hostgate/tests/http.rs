//! The HTTP reverse proxy end to end: the real daemon in a node namespace
//! proxies `curl` from the client namespace to HTTP servers in two
//! container namespaces, by Host and path, with weights, forwarding
//! headers from the real peer, and vhost changes applied live.

mod common;

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use common::{err, eventually, http_peer, ok, wrk, TestNode, WebSocket};
use hostgate_testbed::{
    privileged, servers,
    topology::{CLIENT_V4, CLIENT_V6, NODE_V4, NODE_V6},
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

/// `/metrics` from the node's namespace.
fn scrape(node: &TestNode, listen: &str) -> String {
    let out = node.topo.node.exec("curl", ["-sf", &format!("http://{listen}/metrics")]).expect("curl /metrics");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value of the sample line starting with `prefix` (name and labels).
fn sample(page: &str, prefix: &str) -> f64 {
    page.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {prefix} in:\n{page}"))
}

#[test]
fn websockets_survive_changes_and_everything_is_logged() {
    if !privileged("websockets_survive_changes_and_everything_is_logged") {
        return;
    }
    const METRICS: &str = "127.0.0.1:9469";
    let extra = format!("\n[metrics]\nlisten = \"{METRICS}\"\n\n[http]\nlisten = [\"{NODE_V4}:80\"]\n");
    let mut node = TestNode::with_config("httpws", 2, &extra);
    node.start_daemon();
    let (c1, c2) = (&node.topo.containers[0], &node.topo.containers[1]);
    let (b1, b2) = (format!("{}:8080", c1.v4), format!("{}:8080", c2.v4));
    let _p1 = http_peer(&c1.ns, &c1.v4.to_string(), 8080, "c1", false);
    let _p2 = http_peer(&c2.ns, &c2.v4.to_string(), 8080, "c2", false);
    let client = &node.topo.client;
    ok(node.cli(&["customer", "add", "acme"]));
    ok(node.cli(&["customer", "add", "beta"]));
    ok(node.cli(&["http", "vhost", "add", "ws.example.com", "--customer", "acme", "--backend", &b1]));
    ok(node.cli(&[
        "http",
        "vhost",
        "add",
        "api.example.com",
        "--customer",
        "beta",
        "--backend",
        &b2,
        "--access-log",
        "json",
    ]));
    until_served(client, "ws.example.com", "/", "c1", Duration::from_secs(2));

    // A real WebSocket exchange (handshake with Sec-WebSocket-Accept
    // checked by the client, masked frames up, echoes down).
    let mut ws = WebSocket::open(client, "ws.example.com", "/chat");
    assert_eq!(ws.say("hello"), "c1: hello");

    // The vhost moves to c2: new requests and WebSockets go there, the
    // open WebSocket stays with c1 and keeps working.
    ok(node.cli(&["http", "vhost", "set", "ws.example.com", "--customer", "acme", "--backend", &b2]));
    until_served(client, "ws.example.com", "/", "c2", Duration::from_secs(2));
    assert_eq!(ws.say("still here"), "c1: still here", "the open WebSocket survived the change");
    let mut ws2 = WebSocket::open(client, "ws.example.com", "/chat");
    assert_eq!(ws2.say("new"), "c2: new");
    // Removing the vhost answers 404 to new requests; the open one lives on.
    ok(node.cli(&["http", "vhost", "rm", "ws.example.com"]));
    assert!(eventually(Duration::from_secs(2), || get(client, "ws.example.com", "/", &[]).code == 404));
    assert_eq!(ws.say("after rm"), "c1: after rm");
    ws.close();
    ws2.close();

    // Per-customer logs: acme's in the combined format, beta's in JSON.
    let a = get(client, "api.example.com", "/json?x=1", &["-A", "hostgate-test \"quoted\"", "-e", "https://ref.test/"]);
    assert_eq!(a.code, 200);
    let logs = node.dir.path().join("state/log/http");
    let read = |name: &str| std::fs::read_to_string(logs.join(name)).unwrap_or_default();
    assert!(
        eventually(Duration::from_secs(5), || read("acme.log").contains("\"GET /chat HTTP/1.1\" 101")),
        "acme.log: {}",
        read("acme.log")
    );
    let acme = read("acme.log");
    eprintln!("acme.log:\n{acme}");
    let line = acme.lines().find(|l| l.contains("\"GET / HTTP/1.1\" 200")).expect("a curl request logged");
    assert!(line.starts_with(&format!("{CLIENT_V4} - - [")) && line.contains("\"curl/"), "{line}");
    assert!(!acme.contains("api.example.com"), "beta's requests stay out of acme's log");
    assert!(eventually(Duration::from_secs(5), || read("beta.log").contains("/json?x=1")), "{}", read("beta.log"));
    let beta = read("beta.log");
    eprintln!("beta.log:\n{beta}");
    let entry: serde_json::Value =
        serde_json::from_str(beta.lines().find(|l| l.contains("/json?x=1")).expect("line")).expect("a JSON line");
    assert_eq!(entry["status"], 200);
    assert_eq!(entry["method"], "GET");
    assert_eq!(entry["client"], CLIENT_V4.to_string());
    assert_eq!(entry["backend"], b2);
    assert_eq!(entry["user_agent"], "hostgate-test \"quoted\"");
    assert_eq!(entry["referer"], "https://ref.test/");
    assert!(entry["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{entry}");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(logs.join("beta.log")).expect("meta").permissions());
    assert_eq!(mode & 0o777, 0o640, "logs are not world-readable");

    // Counters per (vhost, backend): the upgrade, status classes, bytes
    // and a latency histogram holding every request.
    let status = node.status();
    let find = |vhost: &str, backend: &str| {
        status.http.iter().find(|c| c.vhost == vhost && c.backend == backend).cloned().unwrap_or_default()
    };
    let ws_c1 = find("ws.example.com", &b1);
    assert!(ws_c1.upgraded >= 1 && ws_c1.status_classes[0] >= 1, "{ws_c1:?}");
    let api = find("api.example.com", &b2);
    assert!(api.requests >= 1 && api.status_classes[1] == api.requests && api.bytes_out > 0, "{api:?}");
    assert_eq!(api.latency_buckets.iter().sum::<u64>(), api.requests, "{api:?}");
    let text = ok(node.cli(&["status"]));
    assert!(text.contains("upgraded") && text.contains("2xx"), "{text}");
    let show = ok(node.cli(&["http", "vhost", "show", "api.example.com"]));
    assert!(show.contains("P99") && show.contains("access-log=json"), "{show}");

    // The same in /metrics.
    let page = scrape(&node, METRICS);
    let labels = format!("vhost=\"api.example.com\",backend=\"{b2}\"");
    assert_eq!(sample(&page, &format!("hostgate_http_requests_total{{{labels},class=\"2xx\"}}")), api.requests as f64);
    assert!(
        sample(&page, &format!("hostgate_http_upgraded_total{{vhost=\"ws.example.com\",backend=\"{b1}\"}}")) >= 1.0
    );
    assert!(sample(&page, &format!("hostgate_http_sent_bytes_total{{{labels}}}")) > 0.0);
    assert_eq!(
        sample(&page, &format!("hostgate_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}}")),
        api.requests as f64
    );
    // promtool (Debian's prometheus package) lints names, units and types.
    let file = node.dir.path().join("metrics.txt");
    std::fs::write(&file, &page).expect("write");
    let lint = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("promtool check metrics < {}", file.display()))
        .output()
        .expect("promtool (apt-get install prometheus)");
    let said = String::from_utf8_lossy(&lint.stdout).into_owned() + &String::from_utf8_lossy(&lint.stderr);
    assert!(lint.status.success() && said.trim().is_empty(), "promtool check metrics:\n{said}");
}

#[test]
fn rate_limits_size_limits_and_proxy_protocol() {
    if !privileged("rate_limits_size_limits_and_proxy_protocol") {
        return;
    }
    let listen = format!("\n[http]\nlisten = [\"{NODE_V4}:80\", \"[{NODE_V6}]:80\"]\n");
    let mut node = TestNode::with_config("httprl", 2, &listen);
    node.start_daemon();
    let (c1, c2) = (&node.topo.containers[0], &node.topo.containers[1]);
    let (pp, b2) = (format!("{}:8081", c1.v4), format!("{}:8080", c2.v4));
    let _p1 = http_peer(&c1.ns, &c1.v4.to_string(), 8081, "pp", true);
    let _p2 = http_peer(&c2.ns, &c2.v4.to_string(), 8080, "c2", false);
    let client = &node.topo.client;
    ok(node.cli(&["customer", "add", "acme"]));

    // PROXY protocol v2: the backend (which closes connections without
    // one) learns the client's address and port and the address it reached.
    ok(node.cli(&[
        "http",
        "vhost",
        "add",
        "pp.example.com",
        "--customer",
        "acme",
        "--backend",
        &pp,
        "--proxy-protocol",
    ]));
    until_served(client, "pp.example.com", "/", "pp", Duration::from_secs(2));
    let proxied = |a: &Answer| a.body.lines().find_map(|l| l.strip_prefix("proxy: ")).unwrap_or_default().to_string();
    let a = get(client, "pp.example.com", "/", &[]);
    let seen = proxied(&a);
    assert!(seen.starts_with(&format!("{CLIENT_V4}:")) && seen.ends_with(&format!(" {NODE_V4}:80")), "{}", a.body);
    let v6 = get_from(client, &format!("[{NODE_V6}]"), "pp.example.com", "/", &[]);
    assert!(proxied(&v6).starts_with(&format!("{CLIENT_V6}:")), "{}", v6.body);
    // A backend connection carries one client connection's requests only:
    // two requests on one client connection name the same client port,
    // another client connection (another port) never gets that header.
    let out = client
        .command("curl")
        .args(["-sS", "--max-time", "5", "-H", "Host: pp.example.com"])
        .arg(format!("http://{NODE_V4}/one"))
        .arg(format!("http://{NODE_V4}/two"))
        .output()
        .expect("curl");
    let body = String::from_utf8_lossy(&out.stdout).into_owned();
    let ports: Vec<&str> = body.lines().filter_map(|l| l.strip_prefix("proxy: ")).collect();
    assert_eq!(ports.len(), 2, "{body}");
    assert_eq!(ports[0], ports[1], "one client connection: {body}");
    assert_ne!(ports[0], seen, "another client connection got its own backend connection");

    // Rate limit: 2/s with a burst of 5 per client address. Ten requests at
    // once: five pass, the rest get 429 with Retry-After; a second later
    // the client is served again.
    ok(node.cli(&[
        "http",
        "vhost",
        "add",
        "rl.example.com",
        "--customer",
        "acme",
        "--backend",
        &b2,
        "--rate-limit",
        "2",
        "--rate-burst",
        "5",
    ]));
    assert!(eventually(Duration::from_secs(2), || get(client, "rl.example.com", "/", &[]).code == 200));
    std::thread::sleep(Duration::from_millis(2600)); // the burst refills
    let out = client
        .command("curl")
        .args(["-sS", "--max-time", "5", "-w", "%{http_code} %header{retry-after}\n", "-H", "Host: rl.example.com"])
        // -o applies to one URL: one per URL, so only the -w lines remain.
        .args((0..10).flat_map(|i| ["-o".to_string(), "/dev/null".to_string(), format!("http://{NODE_V4}/{i}")]))
        .output()
        .expect("curl");
    let codes = String::from_utf8_lossy(&out.stdout).into_owned();
    let ok_count = codes.lines().filter(|l| l.starts_with("200")).count();
    assert!((5..=6).contains(&ok_count), "{codes}");
    assert!(codes.lines().filter(|l| l.starts_with("429")).all(|l| l == "429 1"), "{codes}");
    assert_eq!(codes.lines().count(), 10, "{codes}");
    let limited =
        node.status().http.iter().filter(|c| c.vhost == "rl.example.com").map(|c| c.rate_limited).sum::<u64>();
    assert!(limited >= 4, "counted: {limited}");
    // Another vhost is not limited by this one.
    assert_eq!(get(client, "pp.example.com", "/", &[]).code, 200);
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(get(client, "rl.example.com", "/", &[]).code, 200, "the bucket refills");

    // Size limits: a declared length over the limit and a chunked body
    // that grows over it are both refused with 413 and counted.
    ok(node.cli(&[
        "http",
        "vhost",
        "add",
        "small.example.com",
        "--customer",
        "acme",
        "--backend",
        &b2,
        "--max-body",
        "100",
    ]));
    assert!(eventually(Duration::from_secs(2), || get(client, "small.example.com", "/", &[]).code == 200));
    let big = "x".repeat(101);
    assert_eq!(get(client, "small.example.com", "/", &["--data", &big]).code, 413);
    let chunked =
        get(client, "small.example.com", "/", &["--data", &"y".repeat(5000), "-H", "Transfer-Encoding: chunked"]);
    assert!(chunked.code == 413 || chunked.code == 0, "chunked over the limit: {} {}", chunked.code, chunked.body);
    assert_eq!(get(client, "small.example.com", "/", &["--data", &"z".repeat(100)]).code, 200);
    let too_large =
        node.status().http.iter().filter(|c| c.vhost == "small.example.com").map(|c| c.too_large).sum::<u64>();
    assert!(too_large >= 1, "counted: {too_large}");
    let show = ok(node.cli(&["http", "vhost", "show", "rl.example.com"]));
    assert!(show.contains("rate-limit=2/s burst 5"), "{show}");
    let e = err(node.cli(&[
        "http",
        "vhost",
        "add",
        "x.example.com",
        "--customer",
        "acme",
        "--backend",
        &b2,
        "--rate-limit",
        "0",
    ]));
    assert!(e.contains("rate-limit:"), "{e}");
}

#[test]
fn wrk_sees_no_errors_across_vhost_changes() {
    if !privileged("wrk_sees_no_errors_across_vhost_changes") {
        return;
    }
    let listen = format!("\n[http]\nlisten = [\"{NODE_V4}:80\"]\n");
    let mut node = TestNode::with_config("httpwrk", 2, &listen);
    node.start_daemon();
    let (c1, c2) = (&node.topo.containers[0], &node.topo.containers[1]);
    let (b1, b2) = (format!("{}:8080", c1.v4), format!("{}:8080", c2.v4));
    let _p1 = http_peer(&c1.ns, &c1.v4.to_string(), 8080, "c1", false);
    let _p2 = http_peer(&c2.ns, &c2.v4.to_string(), 8080, "c2", false);
    let client = &node.topo.client;
    ok(node.cli(&["customer", "add", "acme"]));
    ok(node.cli(&["http", "vhost", "add", "load.example.com", "--customer", "acme", "--backend", &b1]));
    until_served(client, "load.example.com", "/", "c1", Duration::from_secs(2));
    let url = format!("http://{NODE_V4}/");
    let result = std::thread::scope(|s| {
        let load =
            s.spawn(|| wrk(client, &["-t2", "-c8", "-d4s", "--timeout", "3s", "-H", "Host: load.example.com", &url]));
        std::thread::sleep(Duration::from_millis(500));
        // Backends swapped, weighted, one removed and the vhost's options
        // changed, every 250 ms while wrk runs.
        let w = format!("{b1},weight=3");
        let sets: [&[&str]; 4] = [
            &["--backend", &b2],
            &["--backend", &w, "--backend", &b2],
            &["--backend", &b1],
            &["--backend", &b2, "--hsts", "60"],
        ];
        for i in 0..12 {
            let args = [&["http", "vhost", "set", "load.example.com", "--customer", "acme"][..], sets[i % 4]].concat();
            ok(node.cli(&args));
            std::thread::sleep(Duration::from_millis(250));
        }
        load.join().expect("wrk thread")
    });
    eprintln!("{}", result.output);
    assert!(result.requests > 100, "wrk made too few requests: {}", result.output);
    assert!(result.errors.is_empty(), "wrk saw errors across 12 vhost changes: {:?}", result.errors);
    let served: u64 = node
        .status()
        .http
        .iter()
        .filter(|c| c.vhost == "load.example.com" && c.backend != "-")
        .map(|c| c.requests)
        .sum();
    assert!(served >= result.requests, "every request went to a backend: {served} < {}", result.requests);
}

/// One `curl` transfer of a sequence on one connection: its arguments
/// and what it must see (status, body bytes, new connections).
struct Transfer {
    args: &'static [&'static str],
    path: &'static str,
    want: (u16, Option<u64>, u32),
}

#[test]
fn the_fast_path_frames_every_response_and_hands_over_to_pingora() {
    if !privileged("the_fast_path_frames_every_response_and_hands_over_to_pingora") {
        return;
    }
    let listen = format!("\n[http]\nlisten = [\"{NODE_V4}:80\"]\n");
    let mut node = TestNode::with_config("http-fast", 1, &listen);
    node.start_daemon();
    let c1 = &node.topo.containers[0];
    let _p1 = http_peer(&c1.ns, &c1.v4.to_string(), 8080, "p1", false);
    let client = &node.topo.client;
    ok(node.cli(&["customer", "add", "acme"]));
    ok(node.cli(&["http", "vhost", "add", "fast.test", "--customer", "acme", "--backend", &format!("{}:8080", c1.v4)]));
    until_served(client, "fast.test", "/", "p1", Duration::from_secs(2));

    // One curl, one connection where it can: curl checks each framing
    // (a wrong one would fail the transfer or break the connection).
    let chunked = 1000 + "p1\nend\n".len() as u64;
    let transfers = [
        Transfer { args: &[], path: "/chunked", want: (200, Some(chunked), 1) },
        Transfer { args: &["-I"], path: "/", want: (200, Some(0), 0) },
        Transfer { args: &[], path: "/big", want: (200, Some(300_000), 0) },
        // The backend closes this connection after answering, unsaid: the
        // next request finds it closed in the pool and takes a new one.
        Transfer { args: &[], path: "/bye", want: (200, Some(7), 0) },
        Transfer { args: &[], path: "/", want: (200, None, 0) },
        // No length: the proxy closes the client's connection at the end.
        Transfer { args: &[], path: "/eof", want: (200, Some(5000), 0) },
        Transfer { args: &[], path: "/", want: (200, None, 1) },
        // A body: pingora takes the connection from here on.
        Transfer { args: &["-d", "hello"], path: "/", want: (200, None, 0) },
        Transfer { args: &[], path: "/chunked", want: (200, Some(chunked), 0) },
    ];
    let mut cmd = client.command("curl");
    for (i, t) in transfers.iter().enumerate() {
        if i > 0 {
            cmd.arg("--next");
        }
        cmd.args(["-sS", "--max-time", "10", "-H", "Host: fast.test", "-o", "/dev/null"]);
        cmd.args(["-w", "%{http_code} %{size_download} %{num_connects}\n"]).args(t.args);
        cmd.arg(format!("http://{NODE_V4}{}", t.path));
    }
    let out = cmd.output().expect("run curl");
    let seen = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = seen.lines().collect();
    assert_eq!(lines.len(), transfers.len(), "{seen}{}", String::from_utf8_lossy(&out.stderr));
    for (t, line) in transfers.iter().zip(&lines) {
        let f: Vec<u64> = line.split(' ').map(|n| n.parse().unwrap_or(u64::MAX)).collect();
        let (code, size, connects) = t.want;
        assert_eq!(f[0], u64::from(code), "{} {:?}: {seen}", t.path, t.args);
        assert!(size.is_none_or(|s| s == f[1]) && f[1] > 0 || size == Some(0), "{} {:?}: {seen}", t.path, t.args);
        assert_eq!(f[2], u64::from(connects), "{} {:?}: new connections: {seen}", t.path, t.args);
    }

    // Pipelined: both answered in order, the chunked one with its trailer.
    let both = raw(
        client,
        "GET /bye HTTP/1.1\r\nHost: fast.test\r\n\r\nGET /chunked HTTP/1.1\r\nHost: fast.test\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(both.matches("HTTP/1.1 200 OK\r\n").count(), 2, "{both}");
    assert!(both.contains("p1 bye\n") && both.ends_with("0\r\nx-trailer: t\r\n\r\n"), "{both}");

    // A client that leaves mid-body: the backend connection, with the rest
    // of the body unread, must not serve the next request.
    {
        use std::io::{Read, Write};
        let path = client.path();
        std::thread::spawn(move || {
            hostgate_testbed::sender::enter_netns(&path).expect("enter client netns");
            let mut s = std::net::TcpStream::connect((NODE_V4, 80)).expect("connect");
            s.write_all(b"GET /big HTTP/1.1\r\nHost: fast.test\r\n\r\n").expect("send");
            let mut some = [0u8; 2000];
            let _ = s.read(&mut some);
        })
        .join()
        .expect("leaving client");
    }
    for _ in 0..3 {
        let after = get(client, "fast.test", "/bye", &[]);
        assert_eq!((after.code, after.body.as_str()), (200, "p1 bye\n"), "after a client left mid-body");
    }

    // Expect: 100-continue (pingora's path) is answered without waiting
    // out curl's 100 timeout.
    let started = Instant::now();
    let out = client
        .command("curl")
        .args(["-sS", "--max-time", "10", "--expect100-timeout", "8", "-o", "/dev/null", "-w", "%{http_code}"])
        .args(["-H", "Host: fast.test", "-H", "Expect: 100-continue", "--data", &"z".repeat(5000)])
        .arg(format!("http://{NODE_V4}/"))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200", "{}", String::from_utf8_lossy(&out.stderr));
    assert!(started.elapsed() < Duration::from_secs(5), "Expect: 100-continue waited {:?}", started.elapsed());

    let status = ok(node.cli(&["status"]));
    let counts = status.lines().find_map(|l| l.split_once("fast path: ")).map(|(_, c)| c.to_string());
    let numbers: Vec<u64> =
        counts.unwrap_or_default().split(|c: char| !c.is_ascii_digit()).filter_map(|s| s.parse().ok()).collect();
    // 7 transfers, the pipelined pair, the client that left, 3 /bye,
    // until_served's polls.
    assert!(matches!(numbers[..], [fast, handed] if fast >= 13 && handed >= 2), "{status}");
}

#[test]
fn backends_failing_their_http_health_check_get_no_requests() {
    if !privileged("backends_failing_their_http_health_check_get_no_requests") {
        return;
    }
    let listen = format!("\n[http]\nlisten = [\"{NODE_V4}:80\"]\n");
    let mut node = TestNode::with_config("http-health", 2, &listen);
    node.start_daemon();
    let (c1, c2) = (&node.topo.containers[0], &node.topo.containers[1]);
    let files: Vec<String> =
        ["h1", "h2"].iter().map(|n| node.host.dir.path().join(format!("{n}.healthy")).display().to_string()).collect();
    for f in &files {
        std::fs::write(f, "").expect("health file");
    }
    let _h1 = common::http_peer_with(&c1.ns, &c1.v4.to_string(), 8080, "h1", &["--health-file", &files[0]]);
    let _h2 = common::http_peer_with(&c2.ns, &c2.v4.to_string(), 8080, "h2", &["--health-file", &files[1]]);
    let client = &node.topo.client;
    ok(node.cli(&["customer", "add", "acme"]));
    let (b1, b2) = (format!("{}:8080", c1.v4), format!("{}:8080", c2.v4));
    let add = |extra: &[&str]| {
        let vhost = ["http", "vhost", "add", "health.test", "--customer", "acme", "--backend", &b1, "--backend", &b2];
        node.cli(&[&vhost[..], extra].concat())
    };
    assert!(err(add(&["--health-path", "healthz"])).contains("health-path:"));
    assert!(err(add(&["--health-status", "200"])).contains("health-status: needs --health-path"));
    ok(add(&["--health-path", "/healthz"]));
    assert!(ok(node.cli(&["http", "vhost", "show", "health.test"])).contains("health GET /healthz -> 200"));
    let ask = || get(client, "health.test", "/", &[]).backend().to_string();
    let until = |what: &str, want: &dyn Fn(&BTreeMap<String, u32>) -> bool| {
        common::until_served(what, ask, want, || node.log())
    };
    until("both backends serve", &|s| s.get("h1").is_some() && s.get("h2").is_some());

    // h1 answers its health check 503 (while still serving): out of the pool
    // within about a check period, and back once it answers 200 again.
    std::fs::remove_file(&files[0]).expect("sicken h1");
    let took = until("h1 out after failing its check", &|s| s == &BTreeMap::from([("h2".to_string(), 6)]));
    eprintln!("h1 out after {took:?}");
    assert_eq!(common::served_by(10, ask), BTreeMap::from([("h2".to_string(), 10)]));
    assert!(node.log().contains("503, expected 200"), "{}", node.log());
    std::fs::write(&files[0], "").expect("heal h1");
    until("h1 back after passing its check", &|s| s.get("h1").is_some());
}

#[test]
fn a_vhost_answers_with_its_own_error_pages() {
    if !privileged("a_vhost_answers_with_its_own_error_pages") {
        return;
    }
    let listen = format!("\n[http]\nlisten = [\"{NODE_V4}:80\"]\n");
    let mut node = TestNode::with_config("http-pages", 1, &listen);
    node.start_daemon();
    let c1 = &node.topo.containers[0];
    let client = &node.topo.client;
    ok(node.cli(&["customer", "add", "acme"]));
    // Nothing listens there: every request fails to connect.
    let dead = format!("{}:8099", c1.v4);
    let page = node.host.dir.path().join("502.html");
    std::fs::write(&page, "<h1>acme is down, back soon</h1>\n").expect("page");
    let with_page = format!("502={}", page.display());
    let add = |host: &str, extra: &[&str]| {
        node.cli(&[&["http", "vhost", "add", host, "--customer", "acme", "--backend", &dead][..], extra].concat())
    };
    let e = err(add("pages.test", &["--error-page", "200=/nonexistent"]));
    assert!(e.contains("--error-page 200=/nonexistent: reading /nonexistent"), "{e}");
    let e = err(add("pages.test", &["--error-page", &format!("200={}", page.display())]));
    assert!(e.contains("error-page: 200: the proxy answers only"), "{e}");
    ok(add("pages.test", &["--error-page", &with_page]));
    ok(add("plain.test", &[]));
    assert!(ok(node.cli(&["http", "vhost", "show", "pages.test"])).contains("error-pages=502"));

    // A GET (the fast path) and a POST (pingora's path) both fail to
    // connect: the vhost's page, or the proxy's own for the other vhost.
    let start = Instant::now();
    while get(client, "pages.test", "/", &[]).code == 404 {
        assert!(start.elapsed() < Duration::from_secs(2), "pages.test not routed");
    }
    for extra in [&[][..], &["--data", "x=1"][..]] {
        let own = get(client, "pages.test", "/", extra);
        assert_eq!((own.code, own.body.as_str()), (502, "<h1>acme is down, back soon</h1>\n"), "{extra:?}");
        let proxy = get(client, "plain.test", "/", extra);
        assert_eq!(proxy.code, 502, "{extra:?}: {}", proxy.body);
        assert!(proxy.body.contains("502 Bad Gateway") && proxy.body.contains("hostgate"), "{extra:?}: {}", proxy.body);
    }
}

#[test]
fn a_slow_backend_gets_the_vhost_s_read_timeout() {
    if !privileged("a_slow_backend_gets_the_vhost_s_read_timeout") {
        return;
    }
    let listen = format!("\n[http]\nlisten = [\"{NODE_V4}:80\"]\n");
    let mut node = TestNode::with_config("http-timeout", 1, &listen);
    node.start_daemon();
    let c1 = &node.topo.containers[0];
    let _peer = common::http_peer(&c1.ns, &c1.v4.to_string(), 8080, "slowpoke", false);
    let client = &node.topo.client;
    ok(node.cli(&["customer", "add", "acme"]));
    let backend = format!("{}:8080", c1.v4);
    let vhost = |host: &str, extra: &[&str]| {
        node.cli(&[&["http", "vhost", "add", host, "--customer", "acme", "--backend", &backend][..], extra].concat())
    };
    assert!(err(vhost("bad.test", &["--read-timeout", "0"])).contains("read-timeout: 0 s: 1 to 3600 s"));
    assert!(err(vhost("bad.test", &["--connect-timeout", "4000"])).contains("connect-timeout: 4000 s"));
    ok(vhost("hasty.test", &["--read-timeout", "1", "--connect-timeout", "1"]));
    ok(vhost("patient.test", &[]));
    let shown = ok(node.cli(&["http", "vhost", "show", "hasty.test"]));
    assert!(shown.contains("connect-timeout=1s") && shown.contains("read-timeout=1s"), "{shown}");

    // A backend 3 s late: 504 after the vhost's second, on the fast path
    // (GET) and on pingora's (a POST with a body).
    let started = Instant::now();
    let late = get(client, "hasty.test", "/slow/3", &[]);
    let waited = started.elapsed();
    assert_eq!(late.code, 504, "{}", late.body);
    assert!(waited < Duration::from_millis(2500), "answered after {waited:?}");
    let started = Instant::now();
    let posted = get(client, "hasty.test", "/slow/3", &["--data", "x=1"]);
    assert_eq!(posted.code, 504, "{}", posted.body);
    assert!(started.elapsed() < Duration::from_millis(2500), "answered after {:?}", started.elapsed());
    // The default (60 s) waits for it.
    let waited_for = get(client, "patient.test", "/slow/2", &[]);
    assert_eq!((waited_for.code, waited_for.backend()), (200, "slowpoke"), "{}", waited_for.body);
    // And the vhost still serves a prompt answer.
    assert_eq!(get(client, "hasty.test", "/", &[]).code, 200);

    // A backend that never answers a connect (its SYNs dropped): 504 after
    // the vhost's connect timeout, on both paths (one backend each: the
    // first failure takes a backend out, and then it is 502 at once, as
    // NGINX's "no live upstreams"); beside a live one, the live one answers.
    let rules = "add table inet t; add chain inet t input { type filter hook input priority 0; }; \
                 add rule inet t input tcp dport 8097-8099 drop";
    let out = c1.ns.command("nft").arg(rules).output().expect("nft");
    assert!(out.status.success(), "nft: {}", String::from_utf8_lossy(&out.stderr));
    let add = |host: &str, backends: &[String]| {
        let mut args = vec!["http", "vhost", "add", host, "--customer", "acme", "--connect-timeout", "1"];
        for b in backends {
            args.extend(["--backend", b.as_str()]);
        }
        ok(node.cli(&args));
    };
    let silent = |port: u16| format!("{}:{port}", c1.v4);
    add("silent-get.test", &[silent(8099)]);
    add("silent-post.test", &[silent(8098)]);
    add("half.test", &[silent(8097), backend.clone()]);
    for (host, extra) in [("silent-get.test", &[][..]), ("silent-post.test", &["--data", "x=1"][..])] {
        let started = Instant::now();
        let answer = get(client, host, "/", extra);
        assert_eq!(answer.code, 504, "{host}: {}", answer.body);
        assert!(started.elapsed() < Duration::from_millis(2500), "{host}: after {:?}", started.elapsed());
    }
    let started = Instant::now();
    assert_eq!(get(client, "silent-get.test", "/", &[]).code, 502, "taken out after its failure");
    assert!(started.elapsed() < Duration::from_millis(500), "at once, not after a timeout: {:?}", started.elapsed());
    for _ in 0..4 {
        let started = Instant::now();
        let answer = get(client, "half.test", "/", &[]);
        assert_eq!((answer.code, answer.backend()), (200, "slowpoke"), "{}", answer.body);
        assert!(started.elapsed() < Duration::from_millis(2500), "after {:?}", started.elapsed());
    }
}

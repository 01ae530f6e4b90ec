//! Abusive HTTP clients (issue #10 point 9): slowloris-style clients that
//! trickle their request head are answered 408 and closed after
//! `[http] header_timeout_secs`, counted, and never starve the other
//! customers meanwhile; a head that arrives in pieces but in time is served.
//! Later heads on a keep-alive connection and heads over TLS are timed as
//! well (NGINX's `client_header_timeout`).
//! An HTTP/2 rapid-reset flood (tests/http_peer.py rapidreset: raw frames
//! over TLS) is cut off with GOAWAY while another customer is served.

mod common;

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use common::{http_peer, ok, TestNode};
use hostgate_testbed::{privileged, topology::NODE_V4, Netns};

/// `curl` of `/` on `host` from the client namespace: status code.
/// Two customers' sites: a.example.com (acme) on container 0, b.example.com
/// (beta) on container 1; the returned guards keep their backends running.
fn two_customer_sites(node: &TestNode) -> [hostgate_testbed::ChildGuard; 2] {
    let (c1, c2) = (&node.topo.containers[0], &node.topo.containers[1]);
    let peers = [
        http_peer(&c1.ns, &c1.v4.to_string(), 8080, "c1", false),
        http_peer(&c2.ns, &c2.v4.to_string(), 8080, "c2", false),
    ];
    for (customer, host, backend) in [("acme", "a.example.com", c1.v4), ("beta", "b.example.com", c2.v4)] {
        ok(node.cli(&["customer", "add", customer]));
        let backend = format!("{backend}:8080");
        ok(node.cli(&["http", "vhost", "add", host, "--customer", customer, "--backend", &backend]));
    }
    peers
}

fn code(client: &Netns, host: &str) -> u16 {
    let out = client
        .command("curl")
        .args(["-s", "--max-time", "2", "-o", "/dev/null", "-w", "%{http_code}", "-H"])
        .arg(format!("Host: {host}"))
        .arg(format!("http://{NODE_V4}/"))
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
}

/// What each of `n` slow clients got: they open a request head to `host`
/// and add a header line every 300 ms, never finishing it, for at most
/// `for_at_most`; a client stops when the proxy answers or closes.
fn slowloris(client: &Netns, host: &str, n: usize, for_at_most: Duration) -> Vec<String> {
    let (path, host) = (client.path(), host.to_string());
    std::thread::spawn(move || {
        hostgate_testbed::sender::enter_netns(&path).expect("enter client netns");
        let mut conns: Vec<(TcpStream, Option<Vec<u8>>)> = (0..n)
            .map(|_| {
                let mut s = TcpStream::connect((NODE_V4, 80)).expect("connect to the proxy");
                write!(s, "GET / HTTP/1.1\r\nHost: {host}\r\n").expect("first line");
                s.set_nonblocking(true).expect("nonblocking");
                (s, None)
            })
            .collect();
        let deadline = Instant::now() + for_at_most;
        let mut round = 0;
        while Instant::now() < deadline && conns.iter().any(|(_, got)| got.is_none()) {
            std::thread::sleep(Duration::from_millis(300));
            round += 1;
            for (s, got) in conns.iter_mut().filter(|(_, got)| got.is_none()) {
                let mut buf = [0u8; 512];
                match s.read(&mut buf) {
                    Ok(k) => *got = Some(buf[..k].to_vec()),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if write!(s, "X-Slow-{round}: {round}\r\n").is_err() {
                            *got = Some(b"write failed".to_vec());
                        }
                    }
                    Err(e) => *got = Some(format!("read failed: {e}").into_bytes()),
                }
            }
        }
        conns
            .into_iter()
            .map(|(_, got)| got.map_or("still open".into(), |g| String::from_utf8_lossy(&g).into()))
            .collect()
    })
    .join()
    .expect("slowloris thread")
}

#[test]
fn slow_request_heads_are_timed_out_and_others_served() {
    if !privileged("slow_request_heads_are_timed_out_and_others_served") {
        return;
    }
    let extra = format!("\n[http]\nlisten = [\"{NODE_V4}:80\"]\nheader_timeout_secs = 2\n");
    let mut node = TestNode::with_config("httpslow", 2, &extra);
    node.start_daemon();
    let _peers = two_customer_sites(&node);
    let client = &node.topo.client;
    assert!(common::eventually(Duration::from_secs(3), || code(client, "b.example.com") == 200));

    let (answers, served) = std::thread::scope(|s| {
        let attack = s.spawn(|| slowloris(client, "a.example.com", 300, Duration::from_secs(8)));
        // Meanwhile the other customer's site answers, every time, quickly.
        let mut served = Vec::new();
        std::thread::sleep(Duration::from_millis(300));
        for _ in 0..10 {
            let t = Instant::now();
            served.push((code(client, "b.example.com"), t.elapsed()));
            std::thread::sleep(Duration::from_millis(100));
        }
        (attack.join().expect("attack"), served)
    });
    for (code, took) in &served {
        assert_eq!(*code, 200, "another customer served during the attack: {served:?}");
        assert!(*took < Duration::from_secs(1), "served promptly: {served:?}");
    }
    let timed_out = answers.iter().filter(|a| a.starts_with("HTTP/1.1 408")).count();
    assert_eq!(
        timed_out,
        300,
        "every slow client got 408: {:?}",
        answers.iter().find(|a| !a.starts_with("HTTP/1.1 408"))
    );
    let status = node.status();
    assert!(status.http_header_timeouts >= 300, "counted: {}", status.http_header_timeouts);
    let shown = ok(node.cli(&["status"]));
    assert!(shown.contains("request heads timed out (408): "), "{shown}");

    // A head that arrives in pieces, but in time, is served.
    let path = client.path();
    let answer = std::thread::spawn(move || {
        hostgate_testbed::sender::enter_netns(&path).expect("enter client netns");
        let mut s = TcpStream::connect((NODE_V4, 80)).expect("connect");
        s.write_all(b"GET / HTTP/1.1\r\nHo").expect("first piece");
        std::thread::sleep(Duration::from_millis(300));
        s.write_all(b"st: a.example.com\r\nConnection: close\r\n\r\n").expect("second piece");
        s.set_read_timeout(Some(Duration::from_secs(3))).expect("timeout");
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        answer
    })
    .join()
    .expect("split head");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("c1"), "{answer}");
}

/// A self-signed ECDSA certificate for both sites, the default one.
fn default_certificate(node: &TestNode) {
    let dir = node.dir.path().to_path_buf();
    let made = std::process::Command::new("openssl")
        .current_dir(&dir)
        .args(["req", "-x509", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"])
        .args(["-keyout", "site.key", "-out", "site.pem", "-days", "2", "-subj", "/CN=a.example.com"])
        .args(["-addext", "subjectAltName=DNS:a.example.com,DNS:b.example.com"])
        .output()
        .expect("run openssl");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let (cert, key) = (dir.join("site.pem"), dir.join("site.key"));
    ok(node.cli(&[
        "http",
        "cert",
        "add",
        "--cert",
        &cert.display().to_string(),
        "--key",
        &key.display().to_string(),
        "--default",
    ]));
}

/// `curl -k --http2 https://host/` through the proxy's TLS port: status code.
fn code_h2(client: &Netns, host: &str) -> u16 {
    let out = client
        .command("curl")
        .args(["-sk", "--http2", "--max-time", "2", "-o", "/dev/null", "-w", "%{http_code}", "--resolve"])
        .arg(format!("{host}:443:{NODE_V4}"))
        .arg(format!("https://{host}/"))
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
}

#[test]
fn http2_rapid_reset_is_contained() {
    if !privileged("http2_rapid_reset_is_contained") {
        return;
    }
    let extra = format!("\n[http]\nlisten_tls = [\"{NODE_V4}:443\"]\n");
    let mut node = TestNode::with_config("httprst", 2, &extra);
    node.start_daemon();
    default_certificate(&node);
    let _peers = two_customer_sites(&node);
    let client = &node.topo.client;
    assert!(common::eventually(Duration::from_secs(3), || code_h2(client, "b.example.com") == 200));

    const FLOOD: usize = 20_000;
    let (flood, served) = std::thread::scope(|s| {
        let flood = s.spawn(|| {
            let out = client
                .command("python3")
                .args([
                    common::HTTP_PEER,
                    "rapidreset",
                    &NODE_V4.to_string(),
                    "443",
                    "a.example.com",
                    &FLOOD.to_string(),
                ])
                .output()
                .expect("python3");
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
        });
        std::thread::sleep(Duration::from_millis(200));
        let mut served = Vec::new();
        for _ in 0..10 {
            let t = Instant::now();
            served.push((code_h2(client, "b.example.com"), t.elapsed()));
            std::thread::sleep(Duration::from_millis(100));
        }
        (flood.join().expect("flood"), served)
    });
    eprintln!("rapid reset client: {flood}");
    for (code, took) in &served {
        assert_eq!(*code, 200, "another customer served during the flood: {served:?}");
        assert!(*took < Duration::from_secs(1), "served promptly: {served:?}");
    }
    let status = node.status();
    let reached: u64 = status.http.iter().filter(|c| c.vhost == "a.example.com").map(|c| c.requests).sum();
    eprintln!("requests of the flooded vhost counted: {reached}");
    // The h2 crate under pingora refuses the connection (GOAWAY
    // ENHANCE_YOUR_CALM, 11) once too many streams were reset before the
    // proxy took them, long before the client is through, and no reset
    // request went on to a backend. The client may not get to read the
    // GOAWAY (the close resets a connection with unread flood behind it):
    // the proxy's own count, below, says it was sent.
    assert!(flood.contains("closed"), "{flood}");
    assert!(!flood.contains("goaway") || flood.contains("goaway 11"), "{flood}");
    let sent: usize = flood.lines().find_map(|l| l.strip_prefix("sent ")?.parse().ok()).unwrap_or(FLOOD);
    assert!(sent < FLOOD / 2, "the flood was cut short: {flood}");
    assert!(reached < 200, "reset requests reaching the backend: {reached}");
    // ... and the proxy counted the GOAWAY it sent (status and /metrics).
    let calm = status.http_h2_goaways.get("ENHANCE_YOUR_CALM").copied().unwrap_or(0);
    assert!(calm >= 1, "GOAWAYs counted: {:?}", status.http_h2_goaways);
    assert_eq!(code_h2(client, "a.example.com"), 200, "the proxy survived and serves the flooded site");
}

/// Sends `first` on `conn`, then a header line every 300 ms; what came
/// back within `for_at_most` (the proxy closing ends it).
fn trickle(mut conn: TcpStream, first: &[u8], for_at_most: Duration) -> String {
    conn.write_all(first).expect("first piece");
    conn.set_nonblocking(true).expect("nonblocking");
    let (mut got, deadline) = (Vec::new(), Instant::now() + for_at_most);
    let mut round = 0;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(300));
        let mut buf = [0u8; 4096];
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => got.extend_from_slice(&buf[..k]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => break,
        }
        round += 1;
        if write!(conn, "X-Slow-{round}: {round}\r\n").is_err() {
            break;
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn later_heads_and_heads_over_tls_are_timed_too() {
    if !privileged("later_heads_and_heads_over_tls_are_timed_too") {
        return;
    }
    let extra =
        format!("\n[http]\nlisten = [\"{NODE_V4}:80\"]\nlisten_tls = [\"{NODE_V4}:443\"]\nheader_timeout_secs = 2\n");
    let mut node = TestNode::with_config("httpslow2", 2, &extra);
    node.start_daemon();
    default_certificate(&node);
    let _peers = two_customer_sites(&node);
    let client = &node.topo.client;
    assert!(common::eventually(Duration::from_secs(3), || code(client, "a.example.com") == 200));

    // Keep-alive: the first request is answered, the second's head
    // trickles and is cut off after about two seconds.
    let path = client.path();
    let (answer, took) = std::thread::spawn(move || {
        hostgate_testbed::sender::enter_netns(&path).expect("enter client netns");
        let mut conn = TcpStream::connect((NODE_V4, 80)).expect("connect");
        conn.write_all(b"GET / HTTP/1.1\r\nHost: a.example.com\r\n\r\n").expect("first request");
        conn.set_read_timeout(Some(Duration::from_secs(3))).expect("timeout");
        let mut buf = [0u8; 4096];
        let k = conn.read(&mut buf).expect("first answer");
        // The second head starts after the first answer (pingora closes a
        // connection that pipelines).
        let start = Instant::now();
        let later = trickle(conn, b"GET / HTTP/1.1\r\nHost: a.example.com\r\n", Duration::from_secs(8));
        (String::from_utf8_lossy(&buf[..k]).into_owned() + "|" + &later, start.elapsed())
    })
    .join()
    .expect("keep-alive trickle");
    let (first, later) = answer.split_once('|').expect("two parts");
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    assert!(later.starts_with("HTTP/1.1 408"), "second head timed out: {later:?}");
    assert!(took >= Duration::from_millis(1500) && took < Duration::from_secs(6), "after about 2 s: {took:?}");

    // TLS: the handshake completes, then the head trickles.
    let mut s_client = client
        .command("openssl")
        .args(["s_client", "-quiet", "-connect", &format!("{NODE_V4}:443"), "-servername", "a.example.com"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl s_client");
    let mut stdin = s_client.stdin.take().expect("stdin");
    let mut stdout = s_client.stdout.take().expect("stdout");
    let start = Instant::now();
    let reader = std::thread::spawn(move || {
        let mut got = String::new();
        let _ = stdout.read_to_string(&mut got);
        got
    });
    stdin.write_all(b"GET / HTTP/1.1\r\nHost: a.example.com\r\n").expect("first line");
    for round in 0..30 {
        std::thread::sleep(Duration::from_millis(300));
        if reader.is_finished() || stdin.write_all(format!("X-Slow-{round}: {round}\r\n").as_bytes()).is_err() {
            break;
        }
    }
    let took = start.elapsed();
    drop(stdin);
    let _ = s_client.kill();
    let _ = s_client.wait();
    let got = reader.join().expect("reader");
    assert!(got.starts_with("HTTP/1.1 408"), "head over TLS timed out: {got:?}");
    assert!(took < Duration::from_secs(7), "closed after about 2 s: {took:?}");
    assert!(node.status().http_header_timeouts >= 2);
}

//! TLS termination end to end: certificates made here with the `openssl`
//! CLI (a test CA, an intermediate, ECDSA and RSA leaves; no Rust crate
//! needed), stored with `hostgate http cert add`, and `curl` from the
//! client namespace checking which certificate each SNI name gets, TLS 1.2
//! and 1.3, HTTP/2 by ALPN, HSTS, the redirect from HTTP, and a
//! certificate replaced live.

mod common;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use common::{err, ok, TestNode};
use hostgate_testbed::{privileged, servers, topology::NODE_V4, Netns};

/// Runs openssl in `dir`; panics with its stderr on failure.
fn openssl(dir: &Path, args: &[&str]) {
    let out =
        Command::new("openssl").current_dir(dir).args(args).output().expect("run openssl (apt-get install openssl)");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Key generation arguments for `openssl req -newkey`.
const EC: &[&str] = &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"];
const RSA: &[&str] = &["-newkey", "rsa:2048"];

/// The test PKI in a directory: a root CA and an intermediate.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new(dir: &Path) -> Pki {
        let dir = dir.join("pki");
        std::fs::create_dir_all(&dir).expect("pki dir");
        std::fs::write(dir.join("ca.ext"), "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign\n")
            .expect("ca.ext");
        openssl(
            &dir,
            &[
                &["req", "-x509", "-nodes", "-keyout", "root.key", "-out", "root.pem", "-days", "2"][..],
                EC,
                &["-subj", "/CN=hostgate test root"],
            ]
            .concat(),
        );
        openssl(
            &dir,
            &[
                &["req", "-new", "-nodes", "-keyout", "int.key", "-out", "int.csr"][..],
                EC,
                &["-subj", "/CN=hostgate test intermediate"],
            ]
            .concat(),
        );
        openssl(
            &dir,
            &[
                "x509",
                "-req",
                "-in",
                "int.csr",
                "-CA",
                "root.pem",
                "-CAkey",
                "root.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "ca.ext",
                "-out",
                "int.pem",
            ],
        );
        Pki { dir }
    }

    fn root(&self) -> String {
        self.dir.join("root.pem").display().to_string()
    }

    /// A leaf for `names` (the first is the CN too, with `tag` so that two
    /// certificates for one name tell apart), signed by the intermediate;
    /// its file holds the leaf then the intermediate. Returns (chain, key).
    fn leaf(&self, file: &str, names: &[&str], tag: &str, key: &[&str]) -> (String, String) {
        let san = names.iter().map(|n| format!("DNS:{n}")).collect::<Vec<_>>().join(",");
        let (csr, pem, keyf) = (format!("{file}.csr"), format!("{file}.leaf"), format!("{file}.key"));
        let subj = format!("/CN={}{tag}", names[0]);
        let san = format!("subjectAltName={san}");
        openssl(
            &self.dir,
            &[&["req", "-new", "-nodes", "-keyout", &keyf, "-out", &csr][..], key, &["-subj", &subj, "-addext", &san]]
                .concat(),
        );
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "int.pem",
                "-CAkey",
                "int.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-copy_extensions",
                "copy",
                "-out",
                &pem,
            ],
        );
        let chain =
            [std::fs::read(self.dir.join(&pem)).expect("leaf"), std::fs::read(self.dir.join("int.pem")).expect("int")]
                .concat();
        let chain_file = self.dir.join(format!("{file}.pem"));
        std::fs::write(&chain_file, chain).expect("chain");
        (chain_file.display().to_string(), self.dir.join(keyf).display().to_string())
    }
}

/// What curl saw of one HTTPS exchange.
#[derive(Debug)]
struct Seen {
    code: u16,
    /// `1.1` or `2`.
    http: String,
    body: String,
    /// curl -v's trace: TLS version, certificate subject, response headers.
    trace: String,
}

impl Seen {
    /// The served certificate's subject CN.
    fn cn(&self) -> &str {
        let line = self.trace.lines().find(|l| l.trim_start_matches(['*', ' ']).starts_with("subject:"));
        line.and_then(|l| l.split("CN=").nth(1)).map_or("", |c| c.split([',', '/']).next().unwrap_or("").trim())
    }

    fn tls(&self) -> &str {
        ["TLSv1.3", "TLSv1.2"]
            .into_iter()
            .find(|v| self.trace.contains(&format!("SSL connection using {v}")))
            .unwrap_or("")
    }

    /// A response header (name lowercase), as curl traced it.
    fn header(&self, name: &str) -> Option<String> {
        self.trace.lines().filter_map(|l| l.strip_prefix("< ")).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }

    /// A request header as the backend got it.
    fn forwarded(&self, name: &str) -> Option<String> {
        self.body
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
    }
}

/// curl from the client namespace: `url` with every name resolved to the
/// node (ports 80 and 443), trusting the test root.
fn curl(client: &Netns, pki: &Pki, url: &str, extra: &[&str]) -> Seen {
    let host = url.split("://").nth(1).and_then(|r| r.split(['/', ':']).next()).unwrap_or_default();
    let mut cmd = client.command("curl");
    cmd.args([
        "-sS",
        "-v",
        "--max-time",
        "5",
        "--cacert",
        &pki.root(),
        "-o",
        "-",
        "-w",
        "\n%{http_code} %{http_version}",
    ]);
    for port in [80, 443] {
        cmd.arg("--resolve").arg(format!("{host}:{port}:{NODE_V4}"));
    }
    let out = cmd.args(extra).arg(url).output().expect("run curl (apt-get install curl)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = text.rsplit_once('\n').unwrap_or(("", "0 0"));
    let (code, http) = tail.split_once(' ').unwrap_or(("0", "0"));
    Seen {
        code: code.parse().unwrap_or(0),
        http: http.to_string(),
        body: body.to_string(),
        trace: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A TLS connection opened with `openssl s_client` and kept open
/// (HTTP/1.1 by ALPN), to send a request on it later.
struct HeldConnection {
    /// s_client's verification line of the leaf (`depth=0 CN = ...`).
    leaf: String,
    stdin: std::process::ChildStdin,
    stdout: std::process::ChildStdout,
    _guard: hostgate_testbed::process::ChildGuard,
}

impl HeldConnection {
    /// Connects with SNI `name` and waits for the handshake (the leaf verified).
    fn open(client: &Netns, pki: &Pki, name: &str) -> HeldConnection {
        use std::{
            io::{BufRead, BufReader},
            process::Stdio,
        };
        let target = format!("{NODE_V4}:443");
        let root = pki.root();
        let args = ["s_client", "-connect", &target, "-servername", name, "-CAfile", &root, "-verify_return_error"];
        let mut child = client
            .command("openssl")
            .args(args)
            .args(["-quiet", "-alpn", "http/1.1"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("openssl s_client");
        let (stdin, stdout) = (child.stdin.take().expect("stdin"), child.stdout.take().expect("stdout"));
        let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
        let leaf = (&mut stderr).lines().map_while(Result::ok).find(|l| l.starts_with("depth=0")).unwrap_or_default();
        // Keep draining stderr so that s_client never blocks on it.
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        HeldConnection { leaf, stdin, stdout, _guard: hostgate_testbed::process::ChildGuard::new("s_client", child) }
    }

    /// One request on the held connection (closing it); the raw answer.
    fn request(&mut self, host: &str) -> String {
        use std::io::{Read, Write};
        let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        self.stdin.write_all(req.as_bytes()).expect("send on the held connection");
        let mut answer = String::new();
        let _ = self.stdout.read_to_string(&mut answer);
        answer
    }
}

/// Polls until `url` is served with the certificate whose CN is `cn`.
fn until_cn(client: &Netns, pki: &Pki, url: &str, cn: &str, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let s = curl(client, pki, url, &[]);
        if s.code == 200 && s.cn() == cn {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "{url} not served with {cn} within {within:?}: {s:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn https_per_sni_name() {
    if !privileged("https_per_sni_name") {
        return;
    }
    let listen = format!("\n[http]\nlisten = [\"{NODE_V4}:80\"]\nlisten_tls = [\"{NODE_V4}:443\"]\n");
    let mut node = TestNode::with_config("https", 2, &listen);
    node.start_daemon();
    let (c1, c2) = (&node.topo.containers[0], &node.topo.containers[1]);
    let (b1, b2) = (format!("{}:8080", c1.v4), format!("{}:8080", c2.v4));
    let _s1 = servers::http_identity(&c1.ns.path(), b1.parse().expect("addr"), "c1").expect("server c1");
    let _s2 = servers::http_identity(&c2.ns.path(), b2.parse().expect("addr"), "c2").expect("server c2");
    let client = &node.topo.client;
    let pki = Pki::new(node.host.dir.path());
    let shop = pki.leaf("shop", &["shop.example.com", "www.shop.example.com"], "", EC);
    let wild = pki.leaf("wild", &["*.example.test"], "", RSA);
    let fallback = pki.leaf("default", &["default.example.com"], "", EC);
    ok(node.cli(&["customer", "add", "acme"]));

    // Refused, naming the flag or field, before anything is stored.
    let e = err(node.cli(&["http", "cert", "add", "--cert", &shop.0, "--key", &wild.1]));
    assert!(e.contains("key: does not belong to the certificate"), "{e}");
    let garbage = node.host.dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").expect("garbage");
    let e = err(node.cli(&["http", "cert", "add", "--cert", &garbage.display().to_string(), "--key", &shop.1]));
    assert!(e.contains("cert: no CERTIFICATE block"), "{e}");
    let e = err(node.cli(&["http", "cert", "add", "--cert", "/nonexistent.pem", "--key", &shop.1]));
    assert!(e.contains("--cert /nonexistent.pem: cannot read"), "{e}");
    assert!(!ok(node.cli(&["http", "cert", "list"])).contains("example"), "nothing stored");

    let added = ok(node.cli(&["http", "cert", "add", "--cert", &shop.0, "--key", &shop.1]));
    assert!(added.contains("certificate shop.example.com stored") && added.contains("ECDSA P-256"), "{added}");
    ok(node.cli(&["http", "cert", "add", "--cert", &wild.0, "--key", &wild.1]));
    ok(node.cli(&["http", "cert", "add", "--cert", &fallback.0, "--key", &fallback.1, "--default"]));
    let list = ok(node.cli(&["http", "cert", "list"]));
    for want in [
        "shop.example.com",
        "www.shop.example.com",
        "*.example.test",
        "RSA 2048",
        "ECDSA P-256",
        "hostgate test intermediate",
        "yes",
    ] {
        assert!(list.contains(want), "{want} missing from cert list:\n{list}");
    }
    assert!(!list.contains("PRIVATE"), "{list}");

    ok(node.cli(&[
        "http",
        "vhost",
        "add",
        "shop.example.com",
        "--customer",
        "acme",
        "--backend",
        &b1,
        "--https-redirect",
        "--hsts",
        "63072000",
    ]));
    ok(node.cli(&["http", "vhost", "add", "*.example.test", "--customer", "acme", "--backend", &b2, "--hsts", "300"]));
    ok(node.cli(&["http", "vhost", "add", "default.example.com", "--customer", "acme", "--backend", &b2]));

    // The certificate per SNI name, verified by curl against the test root
    // (so the chain with its intermediate is served too).
    let took = until_cn(client, &pki, "https://shop.example.com/", "shop.example.com", Duration::from_secs(2));
    eprintln!("HTTPS vhost served after {took:?}");
    let s = curl(client, &pki, "https://shop.example.com/", &[]);
    assert_eq!((s.code, s.body.lines().next()), (200, Some("c1")), "{s:?}");
    assert_eq!(s.forwarded("x-forwarded-proto").as_deref(), Some("https"), "{}", s.body);
    assert_eq!(s.header("strict-transport-security").as_deref(), Some("max-age=63072000"), "{}", s.trace);
    let www = curl(client, &pki, "https://www.shop.example.com/", &["-H", "Host: shop.example.com"]);
    assert_eq!((www.code, www.cn()), (200, "shop.example.com"), "second SAN name: {www:?}");
    let w = curl(client, &pki, "https://a.example.test/", &[]);
    assert_eq!((w.code, w.cn(), w.body.lines().next()), (200, "*.example.test", Some("c2")), "{w:?}");
    // A wildcard covers one label only: a.b.example.test gets the default
    // (which does not name it: -k to look at it anyway).
    let deep = curl(client, &pki, "https://a.b.example.test/", &["-k"]);
    assert_eq!(deep.cn(), "default.example.com", "{deep:?}");
    let unknown = curl(client, &pki, "https://nobody.example.org/", &["-k"]);
    assert_eq!(unknown.cn(), "default.example.com", "{unknown:?}");
    // No SNI (an IP literal): the default.
    let bare = curl(client, &pki, &format!("https://{NODE_V4}/"), &["-k", "-H", "Host: default.example.com"]);
    assert_eq!((bare.code, bare.cn()), (200, "default.example.com"), "{bare:?}");

    // TLS 1.3 and 1.2; HTTP/2 and HTTP/1.1 by ALPN.
    assert_eq!(s.tls(), "TLSv1.3", "{}", s.trace);
    let t12 = curl(client, &pki, "https://shop.example.com/", &["--tls-max", "1.2"]);
    assert_eq!((t12.code, t12.tls()), (200, "TLSv1.2"), "{}", t12.trace);
    let h2 = curl(client, &pki, "https://shop.example.com/", &["--http2"]);
    assert_eq!((h2.code, h2.http.as_str(), h2.body.lines().next()), (200, "2", Some("c1")), "{h2:?}");
    assert_eq!(h2.header("strict-transport-security").as_deref(), Some("max-age=63072000"), "HSTS over h2 too");
    let h1 = curl(client, &pki, "https://shop.example.com/", &["--http1.1"]);
    assert_eq!((h1.code, h1.http.as_str()), (200, "1.1"), "{h1:?}");
    let h2_12 = curl(client, &pki, "https://a.example.test/", &["--http2", "--tls-max", "1.2"]);
    assert_eq!((h2_12.code, h2_12.http.as_str(), h2_12.tls()), (200, "2", "TLSv1.2"), "h2 on TLS 1.2 with RSA");

    // HSTS only on HTTPS; the redirect from HTTP leads to HTTPS, which answers.
    let plain = curl(client, &pki, "http://a.example.test/", &[]);
    assert_eq!((plain.code, plain.header("strict-transport-security")), (200, None), "{plain:?}");
    let followed = curl(client, &pki, "http://shop.example.com/a?b=c", &["-L"]);
    assert!(followed.trace.contains("< HTTP/1.1 308"), "{}", followed.trace);
    assert!(followed.trace.contains("Issue another request to this URL: 'https://shop.example.com/a?b=c'"));
    assert_eq!((followed.code, followed.cn()), (200, "shop.example.com"), "{followed:?}");
    assert!(followed.body.contains("GET /a?b=c ") && followed.body.starts_with("c1"), "{}", followed.body);

    // A certificate replaced live: the next connection gets it, no
    // restart; a connection opened before keeps its own and goes on.
    let mut held = HeldConnection::open(client, &pki, "shop.example.com");
    assert!(held.leaf.contains("CN = shop.example.com") && !held.leaf.contains("renewed"), "{}", held.leaf);
    let renewed = pki.leaf("shop2", &["shop.example.com", "www.shop.example.com"], " renewed", RSA);
    let daemon_pid = node.host.daemon.as_ref().and_then(|d| d.pid());
    ok(node.cli(&["http", "cert", "add", "--cert", &renewed.0, "--key", &renewed.1, "--name", "shop.example.com"]));
    let took = until_cn(client, &pki, "https://shop.example.com/", "shop.example.com renewed", Duration::from_secs(1));
    eprintln!("replaced certificate served after {took:?}");
    assert_eq!(node.host.daemon.as_ref().and_then(|d| d.pid()), daemon_pid, "same daemon");
    let answer = held.request("shop.example.com");
    assert!(answer.starts_with("HTTP/1.1 200") && answer.contains("\r\n\r\nc1\n"), "old connection: {answer}");
    assert!(ok(node.cli(&["http", "cert", "list"])).contains("RSA 2048"), "listed with its new key type");
    // A refused replacement changes nothing.
    let e =
        err(node.cli(&["http", "cert", "add", "--cert", &shop.0, "--key", &renewed.1, "--name", "shop.example.com"]));
    assert!(e.contains("key: does not belong"), "{e}");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(curl(client, &pki, "https://shop.example.com/", &[]).cn(), "shop.example.com renewed");

    // After a restart the stored certificates and vhosts are in force from
    // the very first connection: no default certificate, no 404 meanwhile.
    let daemon = node.host.daemon.as_mut().expect("daemon");
    daemon.signal_and_wait(libc::SIGTERM, Duration::from_secs(10)).expect("daemon stopped");
    node.host.start_daemon();
    let first = curl(client, &pki, "https://shop.example.com/", &[]);
    assert_eq!((first.code, first.cn()), (200, "shop.example.com renewed"), "first after restart: {first:?}");

    // Removed: its names fall back to the default from the next handshake.
    ok(node.cli(&["http", "cert", "rm", "*.example.test"]));
    let start = Instant::now();
    while curl(client, &pki, "https://a.example.test/", &["-k"]).cn() != "default.example.com" {
        assert!(start.elapsed() < Duration::from_secs(1), "removed certificate still served");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(err(node.cli(&["http", "cert", "rm", "*.example.test"])).contains("does not exist"));
}

#[test]
fn wrk_sees_no_errors_across_certificate_changes() {
    if !privileged("wrk_sees_no_errors_across_certificate_changes") {
        return;
    }
    let listen = format!("\n[http]\nlisten_tls = [\"{NODE_V4}:443\"]\n");
    let mut node = TestNode::with_config("httpswrk", 1, &listen);
    node.start_daemon();
    let c1 = &node.topo.containers[0];
    let b1 = format!("{}:8080", c1.v4);
    let _p1 = common::http_peer(&c1.ns, &c1.v4.to_string(), 8080, "c1", false);
    let client = &node.topo.client;
    let pki = Pki::new(node.host.dir.path());
    let certs = [pki.leaf("a", &["load.example.com"], " A", EC), pki.leaf("b", &["load.example.com"], " B", RSA)];
    ok(node.cli(&["customer", "add", "acme"]));
    ok(node.cli(&["http", "vhost", "add", "load.example.com", "--customer", "acme", "--backend", &b1]));
    ok(node.cli(&["http", "cert", "add", "--cert", &certs[0].0, "--key", &certs[0].1, "--default"]));
    until_cn(client, &pki, "https://load.example.com/", "load.example.com A", Duration::from_secs(2));
    // wrk connects to the address (no SNI: the default certificate) and
    // names the vhost in Host. One run keeps its connections, the other
    // closes each after one request, so handshakes happen throughout.
    let url = format!("https://{NODE_V4}/");
    let run = |close: bool| {
        let mut args = vec!["-t1", "-c4", "-d4s", "--timeout", "3s", "-H", "Host: load.example.com"];
        if close {
            args.extend(["-H", "Connection: close"]);
        }
        args.push(&url);
        common::wrk(client, &args)
    };
    let (kept, fresh) = std::thread::scope(|s| {
        let kept = s.spawn(|| run(false));
        let fresh = s.spawn(|| run(true));
        std::thread::sleep(Duration::from_millis(500));
        for i in 0..10 {
            let (cert, key) = &certs[(i + 1) % 2];
            ok(node.cli(&["http", "cert", "add", "--cert", cert, "--key", key, "--default"]));
            std::thread::sleep(Duration::from_millis(250));
        }
        (kept.join().expect("wrk"), fresh.join().expect("wrk"))
    });
    eprintln!("keep-alive:\n{}\nnew connections:\n{}", kept.output, fresh.output);
    for (what, r) in [("keep-alive", &kept), ("new connections", &fresh)] {
        assert!(r.requests > 50, "{what}: too few requests: {}", r.output);
        assert!(r.errors.is_empty(), "{what}: errors across 10 certificate changes: {:?}", r.errors);
    }
    // The last change is in force (ten changes: certificate A again).
    until_cn(client, &pki, "https://load.example.com/", "load.example.com A", Duration::from_secs(2));
}

/// `curl http://NODE_V4/` with `Host: host`: (status, body).
fn plain_get(client: &Netns, host: &str) -> (u16, String) {
    let out = client
        .command("curl")
        .args(["-sS", "--max-time", "5", "-o", "-", "-w", "\n%{http_code}", "-H"])
        .arg(format!("Host: {host}"))
        .arg(format!("http://{NODE_V4}/"))
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn tls_to_backends_verified_or_not() {
    if !privileged("tls_to_backends_verified_or_not") {
        return;
    }
    let listen = format!("\n[http]\nlisten = [\"{NODE_V4}:80\"]\n");
    let mut node = TestNode::with_config("https-backend", 1, &listen);
    node.start_daemon();
    let c1 = &node.topo.containers[0];
    let pki = Pki::new(node.host.dir.path());
    let (chain, key) = pki.leaf("backend", &["backend.internal"], "", EC);
    let stranger = Pki::new(&node.host.dir.path().join("stranger"));
    let _peer = common::http_peer_with(&c1.ns, &c1.v4.to_string(), 8443, "tb", &["--tls", &chain, &key]);
    let backend = format!("{}:8443", c1.v4);
    let client = &node.topo.client;
    ok(node.cli(&["customer", "add", "acme"]));
    let vhost = |host: &str, tls: &[&str]| {
        node.cli(&[&["http", "vhost", "add", host, "--customer", "acme", "--backend", &backend][..], tls].concat())
    };

    // Verified: the chain leads to the CA given, the certificate names the SNI.
    let root = pki.root();
    ok(vhost("verified.test", &["--backend-tls", "--backend-sni", "backend.internal", "--backend-ca", &root]));
    // Not verified: encrypted all the same.
    ok(vhost("any.test", &["--backend-tls", "--backend-no-verify"]));
    // Another CA, or another name: refused by the proxy, 502.
    let other_root = stranger.root();
    ok(vhost("stranger.test", &["--backend-tls", "--backend-sni", "backend.internal", "--backend-ca", &other_root]));
    ok(vhost("misnamed.test", &["--backend-tls", "--backend-sni", "other.internal", "--backend-ca", &root]));
    let start = Instant::now();
    let served = loop {
        let (code, body) = plain_get(client, "verified.test");
        if code == 200 || start.elapsed() > Duration::from_secs(3) {
            break (code, body);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(served.0, 200, "{}", served.1);
    assert!(served.1.starts_with("tb\n") && served.1.contains("tls: TLSv1.3 backend.internal\n"), "{}", served.1);
    let (code, body) = plain_get(client, "any.test");
    assert!(code == 200 && body.contains("tls: TLSv1.3 any.test\n"), "{code} {body}");
    for host in ["stranger.test", "misnamed.test"] {
        let (code, body) = plain_get(client, host);
        assert_eq!(code, 502, "{host}: a backend that failed verification answered: {body}");
    }
    let shown = ok(node.cli(&["http", "vhost", "show", "verified.test"]));
    assert!(shown.contains("backend-tls backend.internal (verified by its CA file)"), "{shown}");

    // Refused, naming the flag, before anything is stored.
    let garbage = node.host.dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").expect("garbage");
    let e = err(vhost("bad.test", &["--backend-tls", "--backend-ca", &garbage.display().to_string()]));
    assert!(e.contains("backend-ca: no CERTIFICATE block"), "{e}");
    let e = err(vhost("bad.test", &["--backend-sni", "backend.internal"]));
    assert!(e.contains("need --backend-tls"), "{e}");
    let e = err(vhost("bad.test", &["--backend-tls", "--backend-no-verify", "--backend-ca", &root]));
    assert!(e.contains("backend-ca: has no effect with --backend-no-verify"), "{e}");
    let e = err(vhost("bad.test", &["--backend-tls", "--backend-sni", "Not A Name"]));
    assert!(e.contains("backend-sni:"), "{e}");
    assert!(err(node.cli(&["http", "vhost", "show", "bad.test"])).contains("bad.test"));
}

#[test]
fn tls_backends_are_health_checked_over_tls() {
    if !privileged("tls_backends_are_health_checked_over_tls") {
        return;
    }
    let listen = format!("\n[http]\nlisten = [\"{NODE_V4}:80\"]\n");
    let mut node = TestNode::with_config("https-health", 2, &listen);
    node.start_daemon();
    let (c1, c2) = (&node.topo.containers[0], &node.topo.containers[1]);
    let pki = Pki::new(node.host.dir.path());
    let (chain, key) = pki.leaf("backend", &["backend.internal"], "", EC);
    let files: Vec<String> =
        ["t1", "t2"].iter().map(|n| node.host.dir.path().join(format!("{n}.healthy")).display().to_string()).collect();
    for f in &files {
        std::fs::write(f, "").expect("health file");
    }
    // Both speak TLS only: a check in clear text would fail on both.
    let peer = |c: &hostgate_testbed::topology::Container, name: &str, file: &str| {
        let args = ["--tls", chain.as_str(), key.as_str(), "--health-file", file];
        common::http_peer_with(&c.ns, &c.v4.to_string(), 8443, name, &args)
    };
    let (_t1, _t2) = (peer(c1, "t1", &files[0]), peer(c2, "t2", &files[1]));
    let client = &node.topo.client;
    ok(node.cli(&["customer", "add", "acme"]));
    let root = pki.root();
    let (b1, b2) = (format!("{}:8443", c1.v4), format!("{}:8443", c2.v4));
    ok(node.cli(&[
        "http",
        "vhost",
        "add",
        "checked.test",
        "--customer",
        "acme",
        "--backend",
        &b1,
        "--backend",
        &b2,
        "--backend-tls",
        "--backend-sni",
        "backend.internal",
        "--backend-ca",
        &root,
        "--health-path",
        "/healthz",
    ]));
    let ask = || {
        let (code, body) = plain_get(client, "checked.test");
        if code == 200 {
            body.lines().next().unwrap_or_default().to_string()
        } else {
            code.to_string()
        }
    };
    let until = |what: &str, want: &dyn Fn(&BTreeMap<String, u32>) -> bool| {
        common::until_served(what, ask, want, || node.log());
    };
    until("both backends serve", &|s| s.get("t1").is_some() && s.get("t2").is_some());

    // t1 answers its check 503 over TLS: out of the pool, then back.
    std::fs::remove_file(&files[0]).expect("sicken t1");
    until("t1 out after failing its check", &|s| s == &BTreeMap::from([("t2".to_string(), 6)]));
    assert_eq!(common::served_by(10, ask), BTreeMap::from([("t2".to_string(), 10)]));
    assert!(node.log().contains("GET /healthz: 503, expected 200"), "{}", node.log());
    std::fs::write(&files[0], "").expect("heal t1");
    until("t1 back after passing its check", &|s| s.get("t1").is_some());
}

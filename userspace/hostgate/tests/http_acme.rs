//! Automatic certificates end to end: Debian's `pebble` (an RFC 8555 test
//! CA) runs in the client namespace, resolves names through hostgate's own
//! DNS server on the node, and really fetches the HTTP-01 answer from the
//! proxy on port 80 (no PEBBLE_VA_ALWAYS_VALID). Pebble's own HTTPS API
//! certificate comes from a test root made here with the `openssl` CLI and
//! given to the daemon as `[http] acme_ca_root`; pebble's issuing root is
//! fetched from its management port for curl's `--cacert`.

mod common;

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use common::{eventually, ok, TestNode};
use hostgate_api::AcmeView;
use hostgate_testbed::{
    privileged, servers,
    topology::{CLIENT_V4, NODE_V4},
    ChildGuard, Netns,
};

const PEBBLE: &str = "/usr/bin/pebble";
const ZONE: &str = "example.com";
const SHOP: &str = "shop.example.com";
/// A vhost without --acme (it resolves too: only the opt-in keeps it out).
const PLAIN: &str = "plain.example.com";
/// An opted-in vhost the DNS does not know: pebble's validation fails.
const LOST: &str = "lost.example.com";
/// An opted-in vhost whose stored certificate is due for renewal.
const RENEW: &str = "renew.example.com";

fn openssl(dir: &Path, args: &[&str]) {
    let out =
        Command::new("openssl").current_dir(dir).args(args).output().expect("run openssl (apt-get install openssl)");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A test root and, signed by it, pebble's API certificate for its address.
fn pebble_tls(dir: &Path) {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"];
    openssl(
        dir,
        &[
            &["req", "-x509", "-nodes", "-keyout", "api-root.key", "-out", "api-root.pem", "-days", "2"][..],
            &ec,
            &["-subj", "/CN=hostgate acme test API root"],
        ]
        .concat(),
    );
    let san = format!("subjectAltName=IP:{CLIENT_V4}");
    openssl(
        dir,
        &[
            &["req", "-new", "-nodes", "-keyout", "api.key", "-out", "api.csr"][..],
            &ec,
            &["-subj", "/CN=pebble", "-addext", &san],
        ]
        .concat(),
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "api.csr",
            "-CA",
            "api-root.pem",
            "-CAkey",
            "api-root.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-copy_extensions",
            "copy",
            "-out",
            "api.pem",
        ],
    );
}

/// A certificate for `name` from another test CA (`old-ca.pem`), valid
/// from two days ago to an hour from now: still valid, but past its
/// renewal time. OpenSSL 3.0's `req`/`x509` cannot backdate; `ca` can.
fn due_certificate(dir: &Path, name: &str) {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"];
    openssl(
        dir,
        &[
            &["req", "-x509", "-nodes", "-keyout", "old-ca.key", "-out", "old-ca.pem", "-days", "3"][..],
            &ec,
            &["-subj", "/CN=hostgate acme test old CA"],
        ]
        .concat(),
    );
    let san = format!("subjectAltName=DNS:{name}");
    let subject = format!("/CN={name}");
    openssl(
        dir,
        &[
            &["req", "-new", "-nodes", "-keyout", "due.key", "-out", "due.csr"][..],
            &ec,
            &["-subj", &subject, "-addext", &san],
        ]
        .concat(),
    );
    let config = "[ca]\ndefault_ca = test\n[test]\ndatabase = index.txt\nnew_certs_dir = .\nserial = serial\n\
                  default_md = sha256\npolicy = any\ncopy_extensions = copy\n[any]\ncommonName = supplied\n";
    std::fs::write(dir.join("ca.cnf"), config).expect("ca.cnf");
    std::fs::write(dir.join("index.txt"), "").expect("index");
    std::fs::write(dir.join("serial"), "01\n").expect("serial");
    let stamp = |t: i64| {
        let out = Command::new("date").args(["-u", "-d", &format!("@{t}"), "+%Y%m%d%H%M%SZ"]).output().expect("date");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let (start, end) = (stamp(now() - 2 * 86_400), stamp(now() + 3600));
    openssl(
        dir,
        &[
            "ca",
            "-batch",
            "-notext",
            "-config",
            "ca.cnf",
            "-cert",
            "old-ca.pem",
            "-keyfile",
            "old-ca.key",
            "-in",
            "due.csr",
            "-out",
            "due.pem",
            "-startdate",
            &start,
            "-enddate",
            &end,
        ],
    );
}

/// Pebble in `ns` (ACME on :14000, management on :15000), validating
/// HTTP-01 on port 80 of the address `dns` resolves names to.
fn start_pebble(ns: &Netns, dir: &Path, dns: &str) -> ChildGuard {
    let config = serde_json::json!({ "pebble": {
        "listenAddress": format!("{CLIENT_V4}:14000"),
        "managementListenAddress": format!("{CLIENT_V4}:15000"),
        "certificate": dir.join("api.pem"),
        "privateKey": dir.join("api.key"),
        "httpPort": 80,
        "tlsPort": 443,
        "ocspResponderURL": "",
        "externalAccountBindingRequired": false,
    }});
    let path = dir.join("pebble.json");
    std::fs::write(&path, config.to_string()).expect("pebble config");
    let log = std::fs::File::create(dir.join("pebble.log")).expect("pebble log");
    let child = ns
        .command(PEBBLE)
        .arg("-config")
        .arg(&path)
        .args(["-dnsserver", dns])
        // Validate at once (no random sleeps), never skip validation, and
        // no random badNonce rejections: the test stays quick and steady.
        .env("PEBBLE_VA_NOSLEEP", "1")
        .env("PEBBLE_WFE_NONCEREJECT", "0")
        .env_remove("PEBBLE_VA_ALWAYS_VALID")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log fd"))
        .stderr(log)
        .spawn()
        .expect("run pebble (apt-get install pebble)");
    let guard = ChildGuard::new("pebble", child);
    let ready = eventually(Duration::from_secs(10), || {
        curl(ns, &dir.join("api-root.pem"), &format!("https://{CLIENT_V4}:14000/dir"), &[]).0 == 200
    });
    assert!(ready, "pebble did not answer: {}", pebble_log(dir));
    guard
}

fn pebble_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("pebble.log")).unwrap_or_default()
}

/// curl in `ns` trusting `ca`: (status, body, stderr).
fn curl(ns: &Netns, ca: &Path, url: &str, extra: &[&str]) -> (u16, String, String) {
    let out = ns
        .command("curl")
        .args(["-sS", "-v", "--max-time", "5", "--cacert"])
        .arg(ca)
        .args(["-o", "-", "-w", "\n%{http_code}"])
        .args(extra)
        .arg(url)
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn acme_status(node: &TestNode) -> Vec<AcmeView> {
    serde_json::from_str(&ok(node.cli(&["http", "acme", "status", "--json"]))).expect("status JSON")
}

fn entry(node: &TestNode, name: &str) -> Option<AcmeView> {
    acme_status(node).into_iter().find(|a| a.name == name)
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

#[test]
fn acme_certificates_from_pebble() {
    if !privileged("acme_certificates_from_pebble") {
        return;
    }
    if !Path::new(PEBBLE).exists() {
        assert!(std::env::var("CI").is_err(), "{PEBBLE} missing in CI (apt-get install pebble)");
        eprintln!("SKIP acme_certificates_from_pebble: {PEBBLE} missing (apt-get install pebble)");
        return;
    }
    let pki = tempfile::tempdir().expect("tempdir");
    pebble_tls(pki.path());
    let extra = format!(
        "\n[http]\nlisten = [\"{NODE_V4}:80\"]\nlisten_tls = [\"{NODE_V4}:443\"]\n\
         acme_directory = \"https://{CLIENT_V4}:14000/dir\"\nacme_contact = \"hostmaster@example.com\"\n\
         acme_ca_root = {:?}\n\n[dns]\nlisten = [\"{NODE_V4}:53\"]\n",
        pki.path().join("api-root.pem")
    );
    let mut node = TestNode::with_config("acme", 1, &extra);
    node.start_daemon();
    let client = &node.topo.client;
    let _pebble = start_pebble(client, pki.path(), &format!("{NODE_V4}:53"));
    let c1 = &node.topo.containers[0];
    let backend = format!("{}:8080", c1.v4);
    let _web = servers::http_identity(&c1.ns.path(), backend.parse().expect("addr"), "c1").expect("backend");

    // The names pebble resolves: hostgate's own authoritative DNS.
    ok(node.cli(&["customer", "add", "acme"]));
    ok(node.cli(&["dns", "zone", "add", ZONE, "--ns", "ns1", "--admin", "dns@example.com"]));
    for name in ["ns1", "shop", "plain"] {
        ok(node.cli(&["dns", "record", "add", ZONE, name, "A", &NODE_V4.to_string()]));
    }

    // A wildcard cannot opt in (HTTP-01 cannot prove it).
    let e = common::err(node.cli(&[
        "http",
        "vhost",
        "add",
        "*.example.com",
        "--customer",
        "acme",
        "--backend",
        &backend,
        "--acme",
    ]));
    assert!(e.contains("acme: HTTP-01 cannot prove a wildcard"), "{e}");

    // A vhost without --acme, and requests naming arbitrary hosts: no order.
    ok(node.cli(&["http", "vhost", "add", PLAIN, "--customer", "acme", "--backend", &backend]));
    for host in [PLAIN, "evil.example.com"] {
        let url = format!("http://{host}/.well-known/acme-challenge/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
        let (code, _, _) =
            curl(client, &pki.path().join("api-root.pem"), &url, &["--resolve", &format!("{host}:80:{NODE_V4}")]);
        assert!(code == 404 || code == 200, "{host}: {code}");
    }

    // Opt in: pebble validates through port 80 and issues; the proxy serves it.
    ok(node.cli(&["http", "vhost", "add", SHOP, "--customer", "acme", "--backend", &backend, "--acme"]));
    let issued = eventually(Duration::from_secs(60), || entry(&node, SHOP).is_some_and(|a| a.state == "valid"));
    assert!(issued, "no certificate for {SHOP}: {:?}\npebble:\n{}", acme_status(&node), pebble_log(pki.path()));
    let shop = entry(&node, SHOP).expect("shop");
    let shop_expiry = shop.not_after.expect("expiry");
    assert!(shop.next_attempt.is_some_and(|t| t > now() + 86_400), "renewal is far: {shop:?}");
    assert_eq!((shop.failures, shop.last_error.as_deref()), (0, None));
    let certs = ok(node.cli(&["http", "cert", "list"]));
    assert!(certs.contains(SHOP) && certs.contains("Pebble"), "{certs}");

    // Pebble's root (management port) verifies what the proxy serves.
    let (code, root, trace) =
        curl(client, &pki.path().join("api-root.pem"), &format!("https://{CLIENT_V4}:15000/roots/0"), &[]);
    assert_eq!(code, 200, "{trace}");
    let pebble_root = pki.path().join("pebble-root.pem");
    std::fs::write(&pebble_root, root).expect("root");
    let resolve = format!("{SHOP}:443:{NODE_V4}");
    let served = eventually(Duration::from_secs(5), || {
        let (code, body, _) = curl(client, &pebble_root, &format!("https://{SHOP}/"), &["--resolve", &resolve]);
        code == 200 && body.contains("c1")
    });
    let (_, _, trace) = curl(client, &pebble_root, &format!("https://{SHOP}/"), &["--resolve", &resolve]);
    assert!(served, "{SHOP} not served with pebble's certificate: {trace}");
    assert!(trace.contains("issuer: CN=Pebble Intermediate"), "{trace}");

    // Only opted-in names appear; nothing was ever ordered for the others.
    let names: Vec<String> = acme_status(&node).into_iter().map(|a| a.name).collect();
    assert_eq!(names, [SHOP]);
    let log = node.log();
    for name in [PLAIN, "evil.example.com"] {
        assert!(!log.contains(&format!("ACME order name={name}")), "order for {name}:\n{log}");
    }

    // A failing order: the name is unknown to the DNS, so pebble's
    // validation fails; it backs off (a minute after the first failure)
    // and says why.
    ok(node.cli(&["http", "vhost", "add", LOST, "--customer", "acme", "--backend", &backend, "--acme"]));
    let failed = eventually(Duration::from_secs(60), || entry(&node, LOST).is_some_and(|a| a.state == "failed"));
    assert!(failed, "{LOST} did not fail: {:?}\npebble:\n{}", acme_status(&node), pebble_log(pki.path()));
    let lost = entry(&node, LOST).expect("lost");
    assert_eq!(lost.failures, 1, "{lost:?}");
    let wait = lost.next_attempt.expect("next attempt") - now();
    assert!((30..=61).contains(&wait), "backoff of the first failure is a minute: {lost:?}");
    // Pebble's own words: it could not resolve the name.
    assert!(lost.last_error.as_deref().is_some_and(|e| e.contains("could not resolve")), "{lost:?}");
    let shown = ok(node.cli(&["http", "acme", "status"]));
    assert!(shown.contains(LOST) && shown.contains("failed") && shown.contains("could not resolve"), "{shown}");
    // No retry before the backoff ends.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(entry(&node, LOST).expect("lost").failures, 1);

    // A restart keeps the account, the certificate and the backoff: no
    // new account, no new order, the same certificate served at once.
    let orders_before = node.log().matches("ACME order").count();
    node.host.daemon.take().expect("daemon").kill();
    node.start_daemon();
    let client = &node.topo.client;
    let (code, _, trace) = curl(client, &pebble_root, &format!("https://{SHOP}/"), &["--resolve", &resolve]);
    assert_eq!(code, 200, "{trace}");
    std::thread::sleep(Duration::from_secs(3));
    let after = entry(&node, SHOP).expect("shop");
    assert_eq!((after.state.as_str(), after.not_after), ("valid", Some(shop_expiry)), "{after:?}");
    let lost_after = entry(&node, LOST).expect("lost");
    assert_eq!((lost_after.failures, lost_after.next_attempt), (1, lost.next_attempt), "backoff kept");
    let log = node.log();
    let second = log.rsplit("--- restart ---").next().unwrap_or_default();
    assert!(!second.contains("ACME account registered"), "{second}");
    assert_eq!(log.matches("ACME order").count(), orders_before, "no new order after the restart:\n{second}");
    assert_eq!(log.matches("ACME account registered").count(), 1, "{log}");

    // Removing the vhost removes its ACME record too.
    ok(node.cli(&["http", "vhost", "rm", LOST]));
    let names: Vec<String> = acme_status(&node).into_iter().map(|a| a.name).collect();
    assert_eq!(names, [SHOP]);

    // Renewal before expiry: a certificate stored by hand that is still
    // valid but past its renewal time is served (not the default one)
    // until the issuer has pebble's replacement, which then takes its place.
    ok(node.cli(&["dns", "record", "add", ZONE, "renew", "A", &NODE_V4.to_string()]));
    due_certificate(pki.path(), RENEW);
    let (due, due_key) = (pki.path().join("due.pem"), pki.path().join("due.key"));
    ok(node.cli(&[
        "http",
        "cert",
        "add",
        "--cert",
        &due.display().to_string(),
        "--key",
        &due_key.display().to_string(),
    ]));
    let resolve = format!("{RENEW}:443:{NODE_V4}");
    let old_ca = pki.path().join("old-ca.pem");
    let (_, _, trace) = curl(client, &old_ca, &format!("https://{RENEW}/"), &["--resolve", &resolve, "-k"]);
    assert!(trace.contains("issuer: CN=hostgate acme test old CA"), "the stored certificate is served: {trace}");
    ok(node.cli(&["http", "vhost", "add", RENEW, "--customer", "acme", "--backend", &backend, "--acme"]));
    let renewed = eventually(Duration::from_secs(60), || {
        entry(&node, RENEW).is_some_and(|a| a.state == "valid" && a.not_after.is_some_and(|t| t > now() + 86_400))
    });
    assert!(renewed, "{RENEW} not renewed: {:?}\npebble:\n{}", acme_status(&node), pebble_log(pki.path()));
    let served = eventually(Duration::from_secs(5), || {
        let (code, body, _) = curl(client, &pebble_root, &format!("https://{RENEW}/"), &["--resolve", &resolve]);
        code == 200 && body.contains("c1")
    });
    let (_, _, trace) = curl(client, &pebble_root, &format!("https://{RENEW}/"), &["--resolve", &resolve]);
    assert!(served && trace.contains("issuer: CN=Pebble Intermediate"), "renewed certificate served: {trace}");
    assert!(node.log().contains(&format!("ACME order name={RENEW}")), "{}", node.log());
}

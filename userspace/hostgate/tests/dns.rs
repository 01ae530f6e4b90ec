//! Authoritative DNS end to end: the real daemon in a node namespace,
//! zones and records made with the real CLI, and real `dig` (bind9-dnsutils)
//! asking from the client namespace over UDP, TCP, IPv4 and IPv6.

mod common;

use std::{
    net::{SocketAddr, TcpStream, UdpSocket},
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use common::{err, eventually, ok, TestNode};
use hostgate_testbed::{privileged, sender::enter_netns, servers, topology::CLIENT_V4, unique_name, ChildGuard};

const V4: &str = "198.51.100.53";
const V6: &str = "2001:db8:51::53";

/// A node whose daemon answers DNS on V4 and V6 (on its loopback, inside
/// the node namespace); the client reaches both through the uplink.
fn dns_node(purpose: &str) -> TestNode {
    dns_node_with(purpose, 0)
}

/// [`dns_node`] with `containers` containers behind the node.
fn dns_node_with(purpose: &str, containers: usize) -> TestNode {
    let extra = format!("\n[dns]\nlisten = [\"{V4}:53\", \"[{V6}]:53\"]\ntcp_max_connections = 2\ntcp_idle_secs = 1\nquery_log = true\n");
    let mut node = TestNode::with_config(purpose, containers, &extra);
    node.topo.node.ip(["link", "set", "lo", "up"]).expect("lo up");
    node.topo.node.ip(["addr", "add", &format!("{V4}/32"), "dev", "lo"]).expect("v4 on lo");
    node.start_daemon();
    // Added after the start: the daemon's sockets are bound with IP_FREEBIND.
    node.topo.node.ip(["addr", "add", &format!("{V6}/128"), "dev", "lo", "nodad"]).expect("v6 on lo");
    node
}

/// What dig printed, in parts.
#[derive(Debug, Default)]
struct Dig {
    status: String,
    flags: Vec<String>,
    answer: Vec<String>,
    authority: Vec<String>,
    additional: Vec<String>,
    raw: String,
}

impl Dig {
    fn aa(&self) -> bool {
        self.flags.iter().any(|f| f == "aa")
    }
    fn tc(&self) -> bool {
        self.flags.iter().any(|f| f == "tc")
    }
    /// The answer's data fields (after owner, TTL, class, type).
    fn data(&self) -> Vec<String> {
        self.answer.iter().map(|l| l.split_whitespace().skip(4).collect::<Vec<_>>().join(" ")).collect()
    }
    fn authority_types(&self) -> Vec<String> {
        self.authority.iter().filter_map(|l| l.split_whitespace().nth(3).map(String::from)).collect()
    }
}

fn parse_dig(raw: String) -> Dig {
    let mut d = Dig::default();
    let mut section: Option<&str> = None;
    for line in raw.lines() {
        if let Some(rest) = line.split("status: ").nth(1) {
            d.status = rest.split(',').next().unwrap_or_default().to_string();
        } else if let Some(rest) = line.strip_prefix(";; flags: ") {
            d.flags = rest.split(';').next().unwrap_or_default().split_whitespace().map(String::from).collect();
        } else if line.starts_with(";; ANSWER SECTION") {
            section = Some("answer");
        } else if line.starts_with(";; AUTHORITY SECTION") {
            section = Some("authority");
        } else if line.starts_with(";; ADDITIONAL SECTION") {
            section = Some("additional");
        } else if line.trim().is_empty() || line.starts_with(';') {
            section = None;
        } else {
            let list = match section {
                Some("answer") => &mut d.answer,
                Some("authority") => &mut d.authority,
                Some("additional") => &mut d.additional,
                _ => continue,
            };
            list.push(line.split_whitespace().collect::<Vec<_>>().join(" "));
        }
    }
    d.raw = raw;
    d
}

/// `dig @V4 +norec ARGS` from the client namespace.
fn dig(node: &TestNode, args: &[&str]) -> Dig {
    dig_at(node, V4, args)
}

fn dig_at(node: &TestNode, server: &str, args: &[&str]) -> Dig {
    let out = node
        .topo
        .client
        .command("dig")
        .arg(format!("@{server}"))
        .args(["+norec", "+time=1", "+tries=1"])
        .args(args)
        .output()
        .expect("run dig (apt-get install bind9-dnsutils)");
    parse_dig(String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

fn serial(node: &TestNode, zone: &str) -> u32 {
    let d = dig(node, &[zone, "SOA"]);
    d.data().first().and_then(|soa| soa.split_whitespace().nth(2)?.parse().ok()).unwrap_or_else(|| panic!("{d:?}"))
}

fn cli_ok(node: &TestNode, args: &[&str]) -> String {
    ok(node.cli(args))
}

/// The zone most tests ask: every type, a CNAME chain, a wildcard and a
/// delegation with glue.
fn example_zone(node: &TestNode) {
    cli_ok(
        node,
        &["dns", "zone", "add", "example.com", "--ns", "ns1", "--ns", "ns2.example.net.", "--admin", "dns@example.com"],
    );
    let records: &[&[&str]] = &[
        &["ns1", "A", "198.51.100.1"],
        &["www", "A", "198.51.100.10"],
        &["www", "A", "198.51.100.11"],
        &["www", "AAAA", "2001:db8:51::10"],
        &["@", "MX", "10", "mail"],
        &["mail", "A", "198.51.100.25"],
        &["@", "TXT", "v=spf1 mx -all"],
        &["_sip._tcp", "SRV", "10", "5", "5060", "www"],
        &["@", "CAA", "0", "issue", "\"letsencrypt.org\""],
        &["alias", "CNAME", "www"],
        &["alias2", "CNAME", "alias"],
        &["*.wild", "A", "198.51.100.99"],
        &["sub", "NS", "ns.sub"],
        &["ns.sub", "A", "198.51.100.60"],
        &["20.100.51.198.in-addr", "PTR", "www"],
    ];
    for r in records {
        let mut args = vec!["dns", "record", "add", "example.com"];
        args.extend_from_slice(r);
        cli_ok(node, &args);
    }
}

#[test]
fn answers_like_an_authority() {
    if !privileged("answers_like_an_authority") {
        return;
    }
    let node = dns_node("dns-auth");
    example_zone(&node);

    let www = dig(&node, &["www.example.com", "A"]);
    assert_eq!((www.status.as_str(), www.aa()), ("NOERROR", true), "{}", www.raw);
    let mut addrs = www.data();
    addrs.sort();
    assert_eq!(addrs, ["198.51.100.10", "198.51.100.11"], "{}", www.raw);
    assert_eq!(dig(&node, &["www.example.com", "AAAA"]).data(), ["2001:db8:51::10"]);
    assert_eq!(dig(&node, &["example.com", "MX"]).data(), ["10 mail.example.com."]);
    assert_eq!(dig(&node, &["example.com", "TXT"]).data(), ["\"v=spf1 mx -all\""]);
    assert_eq!(dig(&node, &["_sip._tcp.example.com", "SRV"]).data(), ["10 5 5060 www.example.com."]);
    assert_eq!(dig(&node, &["example.com", "CAA"]).data(), ["0 issue \"letsencrypt.org\""]);
    let ns = dig(&node, &["example.com", "NS"]).data();
    assert!(ns.contains(&"ns1.example.com.".into()) && ns.contains(&"ns2.example.net.".into()), "{ns:?}");
    assert_eq!(dig(&node, &["20.100.51.198.in-addr.example.com", "PTR"]).data(), ["www.example.com."]);

    // A CNAME chain inside the zone is followed to its end.
    let chain = dig(&node, &["alias2.example.com", "A"]);
    assert!(chain.aa(), "{}", chain.raw);
    let types: Vec<&str> = chain.answer.iter().filter_map(|l| l.split_whitespace().nth(3)).collect();
    assert_eq!(types, ["CNAME", "CNAME", "A", "A"], "{}", chain.raw);

    // Names are case-insensitive; the question comes back as asked.
    let mixed = dig(&node, &["WwW.ExAmPlE.CoM", "A"]);
    assert_eq!((mixed.status.as_str(), mixed.data().len()), ("NOERROR", 2), "{}", mixed.raw);
    assert!(mixed.raw.contains(";WwW.ExAmPlE.CoM."), "{}", mixed.raw);

    // NXDOMAIN and NODATA, both with the SOA in the authority section.
    let nx = dig(&node, &["nope.example.com", "A"]);
    assert_eq!((nx.status.as_str(), nx.aa(), nx.answer.len()), ("NXDOMAIN", true, 0), "{}", nx.raw);
    assert_eq!(nx.authority_types(), ["SOA"], "{}", nx.raw);
    let nodata = dig(&node, &["mail.example.com", "AAAA"]);
    assert_eq!((nodata.status.as_str(), nodata.aa(), nodata.answer.len()), ("NOERROR", true, 0), "{}", nodata.raw);
    assert_eq!(nodata.authority_types(), ["SOA"], "{}", nodata.raw);

    // A wildcard answers in the name asked.
    let wild = dig(&node, &["anything.wild.example.com", "A"]);
    assert_eq!(wild.answer, ["anything.wild.example.com. 3600 IN A 198.51.100.99"], "{}", wild.raw);

    // A delegation: a referral without AA, the NS in authority, glue in additional.
    let referral = dig(&node, &["host.sub.example.com", "A"]);
    assert_eq!((referral.status.as_str(), referral.aa(), referral.answer.len()), ("NOERROR", false, 0));
    assert_eq!(referral.authority, ["sub.example.com. 3600 IN NS ns.sub.example.com."], "{}", referral.raw);
    assert!(referral.additional.contains(&"ns.sub.example.com. 3600 IN A 198.51.100.60".into()), "{}", referral.raw);

    // Zones we do not serve are refused.
    let foreign = dig(&node, &["www.example.org", "A"]);
    assert_eq!((foreign.status.as_str(), foreign.aa()), ("REFUSED", false), "{}", foreign.raw);

    // The same over IPv6 and over TCP.
    assert_eq!(dig_at(&node, V6, &["mail.example.com", "A"]).data(), ["198.51.100.25"]);
    assert_eq!(dig(&node, &["+tcp", "mail.example.com", "A"]).data(), ["198.51.100.25"]);

    let status = node.status().dns;
    assert!(status.queries >= 17 && status.tcp >= 1, "{status:?}");
    assert!(status.nxdomain >= 1 && status.nodata >= 1 && status.referrals >= 1 && status.refused >= 1, "{status:?}");
    assert_eq!((status.zones, status.listen.len()), (1, 2), "{status:?}");
    let log = node.log();
    assert!(log.contains("DNS query") && log.contains("nope.example.com."), "query_log = true logs queries");
    let shown = cli_ok(&node, &["status"]);
    assert!(shown.contains("dns        1 zone(s)") && shown.contains("nxdomain"), "{shown}");
}

#[test]
fn changes_apply_at_once_and_zone_files_are_all_or_nothing() {
    if !privileged("changes_apply_at_once_and_zone_files_are_all_or_nothing") {
        return;
    }
    let node = dns_node("dns-edit");
    example_zone(&node);
    let before = serial(&node, "example.com");

    // A new record is answered within a second, and the serial moved on.
    let start = Instant::now();
    cli_ok(&node, &["dns", "record", "add", "example.com", "new", "A", "198.51.100.77", "--ttl", "60"]);
    loop {
        let d = dig(&node, &["new.example.com", "A"]);
        if d.data() == ["198.51.100.77"] {
            assert!(d.answer[0].contains(" 60 IN A "), "{}", d.raw);
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(1), "not answered within 1 s: {}", d.raw);
        std::thread::sleep(Duration::from_millis(20));
    }
    let after = serial(&node, "example.com");
    assert!(after > before, "serial {before} -> {after}");

    // Removal, by value and by RRset.
    cli_ok(&node, &["dns", "record", "rm", "example.com", "www", "A", "198.51.100.10"]);
    assert_eq!(dig(&node, &["www.example.com", "A"]).data(), ["198.51.100.11"]);
    cli_ok(&node, &["dns", "record", "rm", "example.com", "new", "A"]);
    assert_eq!(dig(&node, &["new.example.com", "A"]).status, "NXDOMAIN");
    assert!(serial(&node, "example.com") > after);

    // Invalid changes are refused with the reason, and change nothing.
    let s = serial(&node, "example.com");
    assert!(err(node.cli(&["dns", "record", "add", "example.com", "alias", "A", "198.51.100.5"]))
        .contains("has a CNAME and other data"));
    assert!(err(node.cli(&["dns", "record", "add", "example.com", "x", "A", "198.51.100.300"])).contains("record"));
    assert!(err(node.cli(&["dns", "record", "add", "example.com", "x.example.org.", "A", "198.51.100.3"]))
        .contains("outside the zone"));
    assert!(err(node.cli(&["dns", "zone", "add", "example.com"])).contains("exists already"));
    assert_eq!(serial(&node, "example.com"), s);

    // A zone file with an error: file:line and the problem; nothing applied.
    let dir = tempfile::tempdir().expect("dir");
    let listed = cli_ok(&node, &["dns", "record", "list", "example.com", "--json"]);
    let broken = dir.path().join("broken.zone");
    std::fs::write(&broken, "$ORIGIN example.com.\n$TTL 300\n@ SOA ns1 hostmaster 1 2h 15m 2w 5m\n NS ns1\nns1 A 198.51.100.1\nbad A 198.51.100.256\n")
        .expect("write");
    let e = err(node.cli(&["dns", "zone", "import", broken.to_str().expect("path")]));
    assert!(e.contains(&format!("{}:6: A:", broken.display())), "{e}");
    assert_eq!(cli_ok(&node, &["dns", "record", "list", "example.com", "--json"]), listed);
    assert_eq!(serial(&node, "example.com"), s);

    // Export, remove, import: the same zone, answered again.
    let exported = cli_ok(&node, &["dns", "zone", "export", "example.com"]);
    let file = dir.path().join("example.com.zone");
    std::fs::write(&file, &exported).expect("write");
    cli_ok(&node, &["dns", "zone", "rm", "example.com"]);
    assert_eq!(dig(&node, &["www.example.com", "A"]).status, "REFUSED");
    cli_ok(&node, &["dns", "zone", "import", file.to_str().expect("path")]);
    assert_eq!(cli_ok(&node, &["dns", "zone", "export", "example.com"]), exported);
    assert_eq!(cli_ok(&node, &["dns", "record", "list", "example.com", "--json"]), listed);
    assert_eq!(dig(&node, &["www.example.com", "A"]).data(), ["198.51.100.11"]);
    // Importing over an existing zone moves its serial on even if the file's did not.
    cli_ok(&node, &["dns", "zone", "import", file.to_str().expect("path")]);
    assert!(serial(&node, "example.com") > s);

    // A file without $ORIGIN needs --origin; a second zone is served beside the first.
    let bare = dir.path().join("bare.zone");
    std::fs::write(&bare, "$TTL 300\n@ SOA ns1 hostmaster 5 2h 15m 2w 5m\n NS ns1\nns1 A 198.51.100.2\n")
        .expect("write");
    let bare_path = bare.to_str().expect("path");
    assert!(err(node.cli(&["dns", "zone", "import", bare_path])).contains("give --origin"));
    cli_ok(&node, &["dns", "zone", "import", bare_path, "--origin", "example.org"]);
    assert_eq!(dig(&node, &["ns1.example.org", "A"]).data(), ["198.51.100.2"]);
    assert_eq!(serial(&node, "example.org"), 5, "a new zone keeps the file's serial");

    // Concurrent changes to one zone: each is one compare-and-set, none is lost.
    let s = serial(&node, "example.com");
    let adders: Vec<_> = (0..8)
        .map(|i| {
            let mut cmd = std::process::Command::new(common::BIN);
            cmd.arg("--socket").arg(&node.socket);
            cmd.args(["dns", "record", "add", "example.com", "many", "A", &format!("198.51.100.{}", 100 + i)]);
            cmd.spawn().expect("spawn")
        })
        .collect();
    for mut a in adders {
        assert!(a.wait().expect("wait").success());
    }
    assert_eq!(dig(&node, &["many.example.com", "A"]).data().len(), 8);
    assert_eq!(serial(&node, "example.com"), s + 8, "one serial step per change");

    let zones = cli_ok(&node, &["dns", "zone", "list"]);
    assert!(zones.contains("example.com.") && zones.contains("example.org.") && zones.contains("SERIAL"), "{zones}");
}

/// Sends `bytes` over UDP from the client namespace; the reply, if any
/// comes within half a second.
fn udp_exchange(node: &TestNode, bytes: &[u8]) -> Option<Vec<u8>> {
    let path = node.topo.client.path();
    let bytes = bytes.to_vec();
    std::thread::spawn(move || {
        enter_netns(&path).expect("setns");
        let socket = UdpSocket::bind("0.0.0.0:0").expect("bind");
        socket.set_read_timeout(Some(Duration::from_millis(500))).expect("timeout");
        socket.send_to(&bytes, (V4, 53)).expect("send");
        let mut buf = [0u8; 4096];
        socket.recv(&mut buf).ok().map(|n| buf[..n].to_vec())
    })
    .join()
    .expect("thread")
}

/// A plain query (RD=0, no EDNS) for `name` and `qtype`.
fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.').filter(|l| !l.is_empty()) {
        q.push(u8::try_from(label.len()).expect("label"));
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    q
}

#[test]
fn truncation_tcp_limits_rate_limits_and_malformed_queries() {
    if !privileged("truncation_tcp_limits_rate_limits_and_malformed_queries") {
        return;
    }
    let node = dns_node("dns-wire");
    cli_ok(&node, &["dns", "zone", "add", "example.net", "--ns", "ns1"]);
    cli_ok(&node, &["dns", "record", "add", "example.net", "ns1", "A", "198.51.100.1"]);
    for i in 0..10 {
        let text = format!("{i}-{}", "x".repeat(200));
        cli_ok(&node, &["dns", "record", "add", "example.net", "big", "TXT", &text]);
    }

    // Over UDP without EDNS (512 bytes) the RRset does not fit: TC=1 ...
    let truncated = dig(&node, &["+noedns", "+ignore", "big.example.net", "TXT"]);
    assert!(truncated.tc() && truncated.answer.is_empty(), "{}", truncated.raw);
    // ... and dig, left to itself, retries over TCP and gets all of it.
    let retried = dig(&node, &["+noedns", "big.example.net", "TXT"]);
    assert_eq!((retried.tc(), retried.answer.len()), (false, 10), "{}", retried.raw);
    assert!(retried.raw.contains("Truncated, retrying in TCP mode"), "{}", retried.raw);

    // Malformed: a header and garbage gets FORMERR; less than a header gets nothing.
    let mut garbage = vec![0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00];
    garbage.extend_from_slice(&[0x3f, 0xff, 0xff, 0x01]);
    let reply = udp_exchange(&node, &garbage).expect("FORMERR expected");
    assert_eq!((&reply[..2], reply[2] & 0x80, reply[3] & 0x0f), (&[0x12u8, 0x34][..], 0x80, 1), "{reply:?}");
    assert_eq!(udp_exchange(&node, &[1, 2, 3]), None);
    assert_eq!(dig(&node, &["ns1.example.net", "A"]).data(), ["198.51.100.1"], "still answering");

    // TCP: two connections at most (as configured), idle ones closed after 1 s.
    let path = node.topo.client.path();
    let (third_closed, idle_closed) = std::thread::spawn(move || {
        enter_netns(&path).expect("setns");
        let addr: SocketAddr = format!("{V4}:53").parse().expect("addr");
        let connect = || TcpStream::connect_timeout(&addr, Duration::from_secs(1)).expect("connect");
        let (a, _b) = (connect(), connect());
        std::thread::sleep(Duration::from_millis(200));
        let closed_soon = |s: &TcpStream, wait: Duration| {
            s.set_read_timeout(Some(wait)).expect("timeout");
            matches!(std::io::Read::read(&mut &*s, &mut [0u8; 1]), Ok(0))
        };
        let third = connect();
        (closed_soon(&third, Duration::from_millis(500)), closed_soon(&a, Duration::from_secs(3)))
    })
    .join()
    .expect("thread");
    assert!(third_closed, "a third connection is closed at once");
    assert!(idle_closed, "an idle connection is closed");

    // Response rate limiting: one client asking one name as fast as it can
    // gets its budget (200/s, a second's worth at once) and the rest
    // dropped or slipped (an empty TC=1 reply).
    let before = node.status().dns;
    let path = node.topo.client.path();
    let elapsed = std::thread::spawn(move || {
        enter_netns(&path).expect("setns");
        let socket = UdpSocket::bind("0.0.0.0:0").expect("bind");
        let start = Instant::now();
        for id in 0..1000u16 {
            socket.send_to(&query(id, "ns1.example.net", 1), (V4, 53)).expect("send");
            if id % 20 == 19 {
                // bursts the daemon's socket buffer holds
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        start.elapsed()
    })
    .join()
    .expect("thread");
    std::thread::sleep(Duration::from_millis(300));
    let status = node.status().dns;
    let answered = status.noerror - before.noerror;
    let limited = status.rate_limited_dropped + status.rate_limited_slipped;
    let budget = 200.0 + 200.0 * elapsed.as_secs_f64() + 20.0;
    eprintln!("RRL: 1000 queries in {elapsed:?}: {answered} answered, {limited} limited");
    assert!(limited >= 500 && (answered as f64) <= budget, "{answered} answered, budget {budget}: {status:?}");

    assert!(status.truncated >= 1 && status.formerr >= 1 && status.dropped >= 1, "{status:?}");
    assert!(status.tcp >= 1 && status.tcp_rejected >= 1 && status.tcp_idle_closed >= 1, "{status:?}");
}

const TSIG_NAME: &str = "xfr.example.com";
/// base64 of 32 bytes; a test key, never a real one.
const TSIG_SECRET: &str = "aG9zdGdhdGUtdGVzdC1rZXktbm90LWEtcmVhbC1vbmU=";

/// NSD 4 as a secondary of example.com in the client namespace, in the
/// foreground (`-d`) with its files in a directory of its own. NSD forks
/// its server and xfrd processes: on drop it gets SIGTERM (and time to
/// stop them) before the guard's SIGKILL.
struct Nsd {
    guard: ChildGuard,
    dir: PathBuf,
}

impl Nsd {
    fn start(node: &TestNode, listen: &str, primary: &str, tsig: bool) -> Nsd {
        let dir = std::env::temp_dir().join(unique_name("hg-nsd"));
        std::fs::create_dir_all(&dir).expect("nsd dir");
        let d = dir.display();
        let key = if tsig { TSIG_NAME } else { "NOKEY" };
        let mut conf = format!(
            "server:\n ip-address: {listen}@53\n username: \"\"\n chroot: \"\"\n zonesdir: \"{d}\"\n \
             pidfile: \"{d}/nsd.pid\"\n xfrdfile: \"{d}/xfrd.state\"\n zonelistfile: \"{d}/zone.list\"\n \
             xfrdir: \"{d}\"\n database: \"\"\n logfile: \"{d}/nsd.log\"\n verbosity: 2\n server-count: 1\n\
             remote-control:\n control-enable: no\n"
        );
        if tsig {
            conf += &format!("key:\n name: \"{TSIG_NAME}\"\n algorithm: hmac-sha256\n secret: \"{TSIG_SECRET}\"\n");
        }
        conf += &format!(
            "zone:\n name: \"example.com\"\n zonefile: \"{d}/example.com.zone\"\n \
             request-xfr: {primary} {key}\n allow-notify: {primary} {key}\n"
        );
        let path = dir.join("nsd.conf");
        std::fs::write(&path, conf).expect("nsd.conf");
        let child = node
            .topo
            .client
            .command("nsd")
            .args(["-d", "-c"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run nsd (apt-get install nsd)");
        Nsd { guard: ChildGuard::new("nsd", child), dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("nsd.log")).unwrap_or_default()
    }
}

impl Drop for Nsd {
    fn drop(&mut self) {
        self.guard.signal_and_wait(libc::SIGTERM, Duration::from_secs(5));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `dig AXFR` from the client namespace: the records (dig prints them
/// without sections) and the whole output.
fn axfr(node: &TestNode, server: &str, key: Option<&str>) -> (Vec<String>, String) {
    let mut cmd = node.topo.client.command("dig");
    cmd.arg(format!("@{server}")).args(["+time=2", "+tries=1"]);
    if let Some(key) = key {
        cmd.args(["-y", key]);
    }
    let out = cmd.args(["example.com", "AXFR"]).output().expect("dig");
    let raw = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let records = raw
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with(';'))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    (records, raw)
}

fn rtype(line: &str) -> &str {
    line.split_whitespace().nth(3).unwrap_or_default()
}

#[test]
fn a_real_secondary_follows_by_notify_and_axfr_with_tsig() {
    if !privileged("a_real_secondary_follows_by_notify_and_axfr_with_tsig") {
        return;
    }
    let node = dns_node("dns-xfr");
    cli_ok(&node, &["dns", "zone", "add", "example.com", "--ns", "ns1"]);
    cli_ok(&node, &["dns", "record", "add", "example.com", "ns1", "A", "198.51.100.1"]);
    cli_ok(&node, &["dns", "record", "add", "example.com", "www", "A", "198.51.100.10"]);

    // Settings are validated field by field; the secret is never shown.
    let bad = err(node.cli(&["dns", "zone", "secondaries", "example.com", "--notify", "ns2.example.net"]));
    assert!(bad.contains("notify:"), "{bad}");
    let bad = err(node.cli(&["dns", "zone", "secondaries", "example.com", "--allow", "x", "--tsig", "k:md5:AAAA"]));
    assert!(bad.contains("allow:"), "{bad}");
    let bad = err(node.cli(&[
        "dns",
        "zone",
        "secondaries",
        "example.com",
        "--tsig",
        "k:hmac-md5:AAAA",
        "--allow",
        "198.18.0.2",
    ]));
    assert!(bad.contains("tsig: algorithm"), "{bad}");
    let client = CLIENT_V4.to_string();
    let key = format!("{TSIG_NAME}:hmac-sha256:{TSIG_SECRET}");
    let set = cli_ok(
        &node,
        &[
            "dns",
            "zone",
            "secondaries",
            "example.com",
            "--allow",
            &client,
            "--notify",
            &format!("{client}:53"),
            "--tsig",
            &key,
        ],
    );
    assert!(set.contains("TSIG xfr.example.com. (hmac-sha256)"), "{set}");
    let list = cli_ok(&node, &["dns", "zone", "list", "--json"]);
    assert!(list.contains(&client) && !list.contains(TSIG_SECRET), "{list}");
    let table = cli_ok(&node, &["dns", "zone", "list"]);
    assert!(table.contains("xfr 1; notify 1; tsig xfr.example.com. (hmac-sha256)"), "{table}");

    // NSD transfers the zone when it starts ...
    let nsd = Nsd::start(&node, &client, V4, true);
    let www = |name: &str| dig_at(&node, &client, &[name, "A"]).data();
    assert!(
        eventually(Duration::from_secs(15), || www("www.example.com") == ["198.51.100.10"]),
        "NSD never got the zone:\n{}\n{}",
        nsd.log(),
        node.log()
    );
    // ... and after a change, our NOTIFY brings it back for the new serial.
    let changed = Instant::now();
    cli_ok(&node, &["dns", "record", "add", "example.com", "new", "A", "198.51.100.12"]);
    assert!(
        eventually(Duration::from_secs(5), || www("new.example.com") == ["198.51.100.12"]),
        "NSD did not follow the change:\n{}\n{}",
        nsd.log(),
        node.log()
    );
    eprintln!("a change reached NSD in {:?}", changed.elapsed());
    assert_eq!(serial(&node, "example.com"), {
        let soa = dig_at(&node, &client, &["example.com", "SOA"]);
        soa.data().first().and_then(|s| s.split_whitespace().nth(2)?.parse().ok()).unwrap_or(0)
    });
    let log = node.log();
    assert!(log.contains("NOTIFY answered") && log.contains("DNS zone transfer"), "{log}");
    for line in log.lines().filter(|l| l.contains("DNS zone transfer") || l.contains("NOTIFY")) {
        eprintln!("{line}");
    }

    // Without the key, with another secret, or from an address not
    // allowed: no zone. With the key: SOA first and last.
    let (records, raw) = axfr(&node, V4, None);
    assert!(records.is_empty() && raw.contains("Transfer failed"), "{raw}");
    let wrong = format!("hmac-sha256:{TSIG_NAME}:c29tZS1vdGhlci1zZWNyZXQtc29tZS1vdGhlci0xMjM=");
    let (records, raw) = axfr(&node, V4, Some(&wrong));
    assert!(records.iter().all(|r| rtype(r) == "TSIG") && raw.contains("BADSIG"), "NOTAUTH/BADSIG: {raw}");
    assert!(raw.contains("Transfer failed"), "{raw}");
    let right = format!("hmac-sha256:{TSIG_NAME}:{TSIG_SECRET}");
    let (records, raw) = axfr(&node, V6, Some(&right));
    assert!(records.is_empty() && raw.contains("Transfer failed"), "from an address not allowed: {raw}");
    let (records, raw) = axfr(&node, V4, Some(&right));
    let types: Vec<&str> = records.iter().map(|r| rtype(r)).filter(|t| *t != "TSIG").collect();
    assert_eq!((types.first(), types.last()), (Some(&"SOA"), Some(&"SOA")), "{raw}");
    assert!(records.iter().any(|r| r.starts_with("new.example.com.")), "{raw}");
    // A zone of many messages: each signed, chained to the one before
    // (RFC 8945 §5.3.1), which dig and NSD both check.
    let mut text = String::from(
        "$ORIGIN example.com.\n$TTL 300\n@ SOA ns1 hostmaster 1 7200 900 1209600 300\n@ NS ns1\nns1 A 198.51.100.1\n",
    );
    for i in 0..400 {
        text += &format!("big{i} TXT \"{}\"\n", "z".repeat(200));
    }
    let file = std::env::temp_dir().join(format!("{}.zone", unique_name("hg-big")));
    std::fs::write(&file, text).expect("zone file");
    let imported = cli_ok(&node, &["dns", "zone", "import", &file.display().to_string()]);
    let _ = std::fs::remove_file(&file);
    assert!(imported.contains("403 records"), "{imported}");
    // the import is served within a second, not at once
    let mut big = (Vec::new(), String::new());
    let whole = eventually(Duration::from_secs(3), || {
        big = axfr(&node, V4, Some(&right));
        big.0.iter().filter(|r| rtype(r) != "TSIG").count() == 404
    });
    let (records, raw) = big;
    assert!(whole, "SOA, 402 records, SOA ({} lines): {raw}", records.len());
    assert!(!raw.contains("failure") && !raw.contains("failed"), "{raw}");
    assert!(raw.contains("XFR size: 404 records (messages "), "{raw}");
    let messages = raw.split("(messages ").nth(1).and_then(|m| m.split(',').next()?.parse::<u32>().ok());
    assert!(messages.is_some_and(|m| m >= 5), "several messages: {messages:?}");
    assert!(
        eventually(Duration::from_secs(5), || dig_at(&node, &client, &["big399.example.com", "TXT"]).data().len() == 1),
        "NSD took the big zone:\n{}",
        nsd.log()
    );
    assert!(dig_at(&node, &client, &["new.example.com", "A"]).status == "NXDOMAIN", "the import replaced the zone");

    // Over UDP (dig always takes TCP for AXFR): refused, from an allowed address too.
    let reply = udp_exchange(&node, &query(8, "example.com", 252)).expect("an answer");
    assert_eq!(reply[3] & 0x0f, 5, "REFUSED: {reply:?}");

    // A NOTIFY for our zone is answered NOERROR with AA, not NOTIMP.
    let mut notify = query(7, "example.com", 6);
    notify[2] = 4 << 3; // opcode NOTIFY
    notify[2] |= 0x04; // AA
    let reply = udp_exchange(&node, &notify).expect("a NOTIFY is answered");
    assert_eq!((reply[2] & 0x78) >> 3, 4, "opcode echoed");
    assert_eq!((reply[2] & 0x04 != 0, reply[3] & 0x0f), (true, 0), "AA, NOERROR: {reply:?}");

    let status = node.status().dns;
    assert!(status.transfers >= 4 && status.notifies_out >= 1 && status.notifies_in >= 1, "{status:?}");
    drop(nsd);
}

#[test]
fn a_pool_name_answers_its_healthy_backends_and_follows_a_failure() {
    if !privileged("a_pool_name_answers_its_healthy_backends_and_follows_a_failure") {
        return;
    }
    let node = dns_node_with("dns-pool", 2);
    let server = |c: &hostgate_testbed::Container| {
        servers::tcp_identity(&c.ns.path(), "0.0.0.0:80".parse().expect("addr"), "web").expect("tcp server")
    };
    let mut web: Vec<Option<servers::IdentityServer>> = node.topo.containers.iter().map(|c| Some(server(c))).collect();
    let (c1, c2) = (node.topo.containers[0].v4.to_string(), node.topo.containers[1].v4.to_string());
    cli_ok(&node, &["dns", "zone", "add", "example.com", "--ns", "ns1"]);
    cli_ok(&node, &["dns", "record", "add", "example.com", "ns1", "A", "198.51.100.1"]);
    cli_ok(&node, &["vip", "add", "203.0.113.10", "--proto", "tcp", "--port", "80"]);
    // One check interval is 1 s; a refused connect fails the probe at once.
    let check = ["--check", "tcp", "--check-interval", "1s", "--check-timeout", "200ms", "--rise", "1", "--fall", "1"];
    for addr in [&c1, &c2] {
        let mut args = vec!["backend", "add", "203.0.113.10:80/tcp", addr.as_str()];
        args.extend(check);
        cli_ok(&node, &args);
    }

    // Field by field validation; a pool name takes no A of its own.
    let bad = err(node.cli(&["dns", "pool", "add", "example.com", "www", "--vip", "203.0.113.10:80"]));
    assert!(bad.contains("vip"), "{bad}");
    let bad = err(node.cli(&[
        "dns",
        "pool",
        "add",
        "example.com",
        "www",
        "--vip",
        "203.0.113.10:80/tcp",
        "--fallback",
        "2001:db8::9",
    ]));
    assert!(bad.contains("fallback:"), "{bad}");
    cli_ok(
        &node,
        &["dns", "pool", "add", "example.com", "www", "--vip", "203.0.113.10:80/tcp", "--fallback", "203.0.113.99"],
    );
    let bad = err(node.cli(&["dns", "record", "add", "example.com", "www", "A", "198.51.100.77"]));
    assert!(bad.contains("pool rm"), "{bad}");
    let list = cli_ok(&node, &["dns", "pool", "list", "example.com"]);
    assert_eq!(list.trim(), "www.example.com. -> VIP 203.0.113.10:80/tcp (fallback 203.0.113.99, ttl 10)");

    let answer = || {
        let mut a = dig(&node, &["www.example.com", "A"]).data();
        a.sort();
        a
    };
    let mut both = vec![c1.clone(), c2.clone()];
    both.sort();
    assert!(eventually(Duration::from_secs(3), || answer() == both), "both healthy: {:?}", answer());
    let d = dig(&node, &["www.example.com", "A"]);
    assert!(d.aa() && d.answer.iter().all(|l| l.split_whitespace().nth(1) == Some("10")), "short TTL: {}", d.raw);

    // c2's server dies: within one check interval, only c1 answers.
    web[1] = None;
    let killed = Instant::now();
    assert!(eventually(Duration::from_secs(3), || answer() == [c1.clone()]), "{:?}\n{}", answer(), node.log());
    let took = killed.elapsed();
    eprintln!("the answer dropped the dead backend after {took:?}");
    assert!(took <= Duration::from_millis(1_300), "one interval (1 s) and a little: {took:?}");

    // Both dead: the sorry address.
    web[0] = None;
    assert!(eventually(Duration::from_secs(3), || answer() == ["203.0.113.99"]), "{:?}", answer());
    // One back: it answers again.
    web[1] = Some(server(&node.topo.containers[1]));
    assert!(eventually(Duration::from_secs(3), || answer() == [c2.clone()]), "{:?}", answer());

    // fallback none: NODATA (the name stays), not NXDOMAIN.
    web[1] = None;
    cli_ok(&node, &["dns", "pool", "add", "example.com", "www", "--vip", "203.0.113.10:80/tcp", "--fallback", "none"]);
    assert!(eventually(Duration::from_secs(3), || {
        let d = dig(&node, &["www.example.com", "A"]);
        d.status == "NOERROR" && d.answer.is_empty()
    }));
    cli_ok(&node, &["dns", "pool", "rm", "example.com", "www"]);
    assert!(eventually(Duration::from_secs(3), || dig(&node, &["www.example.com", "A"]).status == "NXDOMAIN"));
}

/// A NOTIFY as a fake secondary saw it.
struct Seen {
    at: Duration,
    from: SocketAddr,
    bytes: Vec<u8>,
}

#[test]
fn notify_is_retried_with_backoff_until_answered_then_sent_for_each_change() {
    if !privileged("notify_is_retried_with_backoff_until_answered_then_sent_for_each_change") {
        return;
    }
    let node = dns_node("dns-notify");
    cli_ok(&node, &["dns", "zone", "add", "example.com", "--ns", "ns1"]);
    cli_ok(&node, &["dns", "record", "add", "example.com", "ns1", "A", "198.51.100.1"]);
    // A fake secondary in the client namespace that leaves the first two
    // tries unanswered, answers the third and every later one.
    let path = node.topo.client.path();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let secondary = std::thread::spawn(move || {
        enter_netns(&path).expect("setns");
        let socket = UdpSocket::bind((CLIENT_V4, 5300)).expect("bind");
        socket.set_read_timeout(Some(Duration::from_secs(4))).expect("timeout");
        ready_tx.send(()).expect("ready");
        let start = Instant::now();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        // ends after 4 s of silence
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            seen.push(Seen { at: start.elapsed(), from, bytes: buf[..n].to_vec() });
            if seen.len() >= 3 {
                let mut reply = buf[..n].to_vec();
                reply[2] |= 0x80; // QR: the same message as our answer
                socket.send_to(&reply, from).expect("answer");
            }
        }
        seen
    });
    ready_rx.recv().expect("secondary ready");
    cli_ok(&node, &["dns", "zone", "secondaries", "example.com", "--notify", &format!("{CLIENT_V4}:5300")]);
    std::thread::sleep(Duration::from_millis(4_500));
    cli_ok(&node, &["dns", "record", "add", "example.com", "www", "A", "198.51.100.10"]);
    let seen = secondary.join().expect("secondary");

    assert_eq!(
        seen.len(),
        4,
        "three tries, then one for the change: {:?}",
        seen.iter().map(|s| s.at).collect::<Vec<_>>()
    );
    for s in &seen {
        assert_eq!(s.from.ip().to_string(), V4, "from our listen address");
        assert_eq!((s.bytes[2] >> 3) & 0x0f, 4, "opcode NOTIFY");
        assert!(s.bytes[2] & 0x04 != 0, "AA");
    }
    let gap = |i: usize| seen[i + 1].at - seen[i].at;
    assert!(gap(0) >= Duration::from_millis(900) && gap(0) < Duration::from_millis(1_500), "{:?}", gap(0));
    assert!(gap(1) >= Duration::from_millis(1_900) && gap(1) < Duration::from_millis(2_600), "backoff: {:?}", gap(1));
    assert!(seen[..3].iter().all(|s| s.bytes[..2] == seen[0].bytes[..2]), "one id for every try");
    assert_ne!(seen[3].bytes[12..], seen[2].bytes[12..], "the change's NOTIFY carries the new SOA");
    let status = node.status().dns;
    assert_eq!((status.notifies_out, status.notifies_unanswered), (4, 0), "{status:?}");
}

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
use hostgate_testbed::{privileged, sender::enter_netns, servers, topology::CLIENT_V4, unique_name, ChildGuard, Netns};

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

    // The same query's bytes, asked twice (the second from the UDP
    // workers' answer cache): NXDOMAIN before the record exists.
    let same = query(7, "new.example.com", 1);
    for _ in 0..2 {
        let reply = udp_exchange(&node, &same).expect("a reply");
        assert_eq!((reply[3] & 0x0f, &reply[6..8]), (3, &[0u8, 0][..]), "{reply:?}");
    }

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
    // the cached NXDOMAIN went with the catalog it came from
    let reply = udp_exchange(&node, &same).expect("a reply");
    assert_eq!((&reply[..2], reply[3] & 0x0f, &reply[6..8]), (&[0u8, 7][..], 0, &[0u8, 1][..]), "{reply:?}");
    // a query in another case gets its own case back, and the same answer
    let mixed = udp_exchange(&node, &query(8, "NeW.eXaMpLe.CoM", 1)).expect("a reply");
    assert_eq!((&mixed[12..29], &mixed[6..8]), (&b"\x03NeW\x07eXaMpLe\x03CoM\x00"[..], &[0u8, 1][..]), "{mixed:?}");

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
    /// NSD in `ns` answering on `listen` port 53, primary for `zones`
    /// (origin, master-file text).
    fn serve(ns: &Netns, listen: &str, zones: &[(&str, String)]) -> Nsd {
        let dir = std::env::temp_dir().join(unique_name("hgdns-nsd"));
        std::fs::create_dir_all(&dir).expect("nsd dir");
        let d = dir.display();
        let mut conf = format!(
            "server:\n ip-address: {listen}@53\n username: \"\"\n chroot: \"\"\n zonesdir: \"{d}\"\n \
             pidfile: \"{d}/nsd.pid\"\n xfrdfile: \"{d}/xfrd.state\"\n zonelistfile: \"{d}/zone.list\"\n \
             xfrdir: \"{d}\"\n database: \"\"\n logfile: \"{d}/nsd.log\"\n verbosity: 1\n server-count: 1\n \
             rrl-ratelimit: 0\n minimal-responses: no\n refuse-any: no\n\
             remote-control:\n control-enable: no\n"
        );
        for (origin, text) in zones {
            let file = dir.join(format!("{origin}.zone"));
            std::fs::write(&file, text).expect("zone file");
            conf += &format!("zone:\n name: \"{origin}\"\n zonefile: \"{}\"\n", file.display());
        }
        let path = dir.join("nsd.conf");
        std::fs::write(&path, conf).expect("nsd.conf");
        let child = ns
            .command("nsd")
            .args(["-d", "-c"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run nsd (apt-get install nsd)");
        Nsd { guard: ChildGuard::new("nsd", child), dir }
    }

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

/// The upstream of the resolver test: NSD in a namespace of its own,
/// linked to the node by a veth (198.19.53.1 on the node, .2 there).
const UPSTREAM: &str = "198.19.53.2";

fn upstream_ns(node: &TestNode) -> Netns {
    let ns = Netns::create(&unique_name("hgdns-up")).expect("upstream namespace");
    let (link, peer) = ("hgdnsup0", "eth0");
    node.topo.node.ip(["link", "add", link, "type", "veth", "peer", "name", peer, "netns", ns.name()]).expect("veth");
    node.topo.node.ip(["addr", "add", "198.19.53.1/30", "dev", link]).expect("addr");
    node.topo.node.ip(["link", "set", link, "up"]).expect("up");
    ns.ip(["addr", "add", &format!("{UPSTREAM}/30"), "dev", peer]).expect("addr");
    ns.ip(["link", "set", peer, "up"]).expect("up");
    ns.ip(["link", "set", "lo", "up"]).expect("lo");
    ns
}

#[test]
fn containers_resolve_through_upstreams_with_a_cache_and_nobody_else_does() {
    if !privileged("containers_resolve_through_upstreams_with_a_cache_and_nobody_else_does") {
        return;
    }
    // The container's gateway (198.51.100.5) is where DHCP would point it.
    let extra =
        format!("\n[dns]\nlisten = [\"{V4}:53\", \"[{V6}]:53\", \"198.51.100.5:53\"]\nupstreams = [\"{UPSTREAM}\"]\n");
    let mut node = TestNode::with_config("dns-res", 1, &extra);
    node.topo.node.ip(["link", "set", "lo", "up"]).expect("lo up");
    node.topo.node.ip(["addr", "add", &format!("{V4}/32"), "dev", "lo"]).expect("v4 on lo");
    node.topo.node.ip(["addr", "add", &format!("{V6}/128"), "dev", "lo", "nodad"]).expect("v6 on lo");
    node.start_daemon();
    example_zone(&node);
    let up = upstream_ns(&node);
    let zone = "$ORIGIN example.org.\n$TTL 300\n@ SOA ns1 hostmaster 1 3600 600 86400 120\n NS ns1\n\
                ns1 A 203.0.113.53\nwww A 203.0.113.80\nbig TXT \"one\"\n"
        .to_string();
    let nsd = Nsd::serve(&up, UPSTREAM, &[("example.org", zone)]);
    let c = &node.topo.containers[0];
    cli_ok(&node, &["customer", "add", "acme"]);
    let (v4, v6) = (c.v4.to_string(), c.v6.to_string());
    let registered = common::add_web_container(&node, &c.node_iface, &[v4, v6], None);
    assert!(registered.contains("web"), "{registered}");
    let container_dig = |server: &str, args: &[&str]| {
        let out =
            c.ns.command("dig")
                .arg(format!("@{server}"))
                .args(["+time=2", "+tries=1"])
                .args(args)
                .output()
                .expect("run dig");
        parse_dig(String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
    };
    // NSD is up, and it is authoritative (RA=0) for what we forward.
    let direct = || {
        let out = up.command("dig").args([&format!("@{UPSTREAM}"), "+time=1", "+tries=1", "www.example.org"]).output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).contains("203.0.113.80")).unwrap_or(false)
    };
    assert!(eventually(Duration::from_secs(10), direct), "NSD did not start: {}", nsd.log());

    // The container's first query is forwarded: RD and RA set, not AA.
    // (REFUSED until the follower has seen the container registered.)
    let mut first = Dig::default();
    let allowed = eventually(Duration::from_secs(3), || {
        first = container_dig("198.51.100.5", &["www.example.org", "A"]);
        first.status != "REFUSED"
    });
    assert!(allowed, "{}", first.raw);
    assert_eq!((first.status.as_str(), first.data()), ("NOERROR", vec!["203.0.113.80".to_string()]), "{}", first.raw);
    assert!(first.flags.contains(&"rd".into()) && first.flags.contains(&"ra".into()) && !first.aa(), "{}", first.raw);
    let s = node.status().dns;
    assert_eq!((s.forwarded, s.cache_hits, s.cached), (1, 0, 1), "{s:?}");
    // The second is a cache hit (the TTL counts down from 300), also over
    // TCP and IPv6, and the upstream is not asked again.
    let second = container_dig("198.51.100.5", &["www.example.org", "A"]);
    assert_eq!(second.data(), ["203.0.113.80"], "{}", second.raw);
    assert!(second.flags.contains(&"ra".into()), "{}", second.raw);
    let tcp6 = container_dig(V6, &["+tcp", "WWW.EXAMPLE.ORG", "A"]);
    assert_eq!(tcp6.data(), ["203.0.113.80"], "{}", tcp6.raw);
    let s = node.status().dns;
    assert_eq!((s.forwarded, s.cache_hits), (1, 2), "{s:?}");
    // A negative answer is forwarded with its SOA, and cached too.
    for _ in 0..2 {
        let nx = container_dig("198.51.100.5", &["nope.example.org", "A"]);
        assert_eq!((nx.status.as_str(), nx.authority_types()), ("NXDOMAIN", vec!["SOA".to_string()]), "{}", nx.raw);
    }
    let s = node.status().dns;
    assert_eq!((s.forwarded, s.cache_hits), (2, 3), "{s:?}");
    // Our own zones are answered by us, authoritatively, not forwarded.
    let ours = container_dig("198.51.100.5", &["www.example.com", "A"]);
    assert!(ours.aa() && ours.data().len() == 2, "{}", ours.raw);
    // Without RD there is no recursion.
    assert_eq!(container_dig("198.51.100.5", &["+norec", "www.example.org", "A"]).status, "REFUSED");

    // A CNAME of ours that leaves our zones is followed for a container:
    // our CNAME, then the resolver's answer for its target (from the cache
    // for www.example.org, from the upstream for big.example.org).
    cli_ok(&node, &["dns", "record", "add", "example.com", "ext", "CNAME", "www.example.org."]);
    cli_ok(&node, &["dns", "record", "add", "example.com", "exttxt", "CNAME", "big.example.org."]);
    let mut chased = Dig::default();
    let followed = eventually(Duration::from_secs(3), || {
        chased = container_dig("198.51.100.5", &["ext.example.com", "A"]);
        chased.status == "NOERROR"
    });
    assert!(followed, "{}", chased.raw);
    assert_eq!(chased.data(), ["www.example.org.", "203.0.113.80"], "{}", chased.raw);
    assert!(chased.flags.contains(&"ra".into()) && !chased.aa(), "{}", chased.raw);
    let txt = container_dig("198.51.100.5", &["exttxt.example.com", "TXT"]);
    assert_eq!(txt.data(), ["big.example.org.", "\"one\""], "{}", txt.raw);
    // anyone else gets our CNAME alone, authoritatively
    let theirs = dig_at(&node, V4, &["ext.example.com", "A"]);
    assert!(theirs.aa() && theirs.data() == ["www.example.org."], "{}", theirs.raw);
    let s = node.status().dns;
    assert_eq!((s.forwarded, s.cache_hits), (3, 4), "{s:?}");

    // Anyone else, even for a name in the cache: REFUSED, never forwarded.
    for name in ["www.example.org", "other.example.org"] {
        let outside = dig_at(&node, V4, &["+rec", name, "A"]);
        assert_eq!((outside.status.as_str(), outside.answer.len()), ("REFUSED", 0), "{}", outside.raw);
    }
    let s = node.status().dns;
    assert_eq!((s.forwarded, s.cache_hits), (3, 4), "{s:?}");
    let shown = cli_ok(&node, &["status"]);
    assert!(shown.contains("resolver 3 forwarded, 4 cache hits, 0 failed"), "{shown}");

    // With the upstream gone, a new name is SERVFAIL (counted); a cached one still answers.
    drop(nsd);
    let failed = container_dig("198.51.100.5", &["+time=5", "gone.example.org", "A"]);
    assert_eq!(failed.status, "SERVFAIL", "{}", failed.raw);
    assert_eq!(container_dig("198.51.100.5", &["www.example.org", "A"]).data(), ["203.0.113.80"]);
    let s = node.status().dns;
    assert_eq!((s.forwarded, s.forward_failed, s.cache_hits), (4, 1, 5), "{s:?}");
}

/// A small deterministic generator (xorshift64*), so that a failure names
/// a seed that reproduces it.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, from: &'a [T]) -> &'a T {
        &from[self.below(from.len())]
    }
}

/// The differential test's zone: many hosts with several types and TTLs,
/// empty non-terminals, CNAME chains (in zone, leaving it, dangling),
/// wildcards (A/TXT, CNAME, MX; with an explicit name and an empty
/// non-terminal below them), delegations with and without glue, and the
/// names a query generator should ask about.
fn differential_zone() -> (String, Vec<String>) {
    let mut z = String::from(
        "$ORIGIN example.com.\n$TTL 3600\n@ 3600 SOA ns1 hostmaster 2024010101 7200 900 1209600 300\n\
         @ NS ns1\n@ NS ns2.example.net.\n@ MX 10 mail\n@ MX 20 mx.example.net.\n@ TXT \"v=spf1 -all\"\n\
         @ CAA 0 issue \"letsencrypt.org\"\nns1 A 198.51.100.1\nns1 AAAA 2001:db8::1\nmail A 198.51.100.25\n\
         mail AAAA 2001:db8::25\n*.w A 198.51.100.99\n*.w TXT \"wild\"\na.w A 198.51.100.98\nx.y.w A 198.51.100.97\n\
         *.wc CNAME h1\n*.wm MX 10 mail\nsub NS ns.sub\nsub NS ns.example.net.\nns.sub A 198.51.100.60\n\
         sub2 NS ns1.sub2\nns1.sub2 A 198.51.100.61\nns1.sub2 AAAA 2001:db8::61\next NS ns.example.org.\n\
         _sip._tcp SRV 10 5 5060 h1\n_sip._udp SRV 10 5 5060 mail\n1.100.51.198.rev PTR h1\n",
    );
    let mut names: Vec<String> = [
        "",
        "ns1",
        "mail",
        "w",
        "a.w",
        "y.w",
        "x.y.w",
        "z.y.w",
        "wc",
        "wm",
        "sub",
        "ns.sub",
        "host.sub",
        "a.b.sub",
        "sub2",
        "ns1.sub2",
        "x.sub2",
        "ext",
        "www.ext",
        "_sip._tcp",
        "_tcp",
        "_sip._udp",
        "_udp",
        "1.100.51.198.rev",
        "rev",
        "100.51.198.rev",
        "d3",
        "d4",
        "nothing",
        "*.w",
        "*.wc",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let ttls = [60, 300, 3600, 86400];
    for i in 0..300 {
        let ttl = ttls[i % ttls.len()];
        let owner = if i % 4 == 0 { format!("h{i}.d{}", i % 10) } else { format!("h{i}") };
        z += &format!("{owner} {ttl} A 198.51.100.{}\n", i % 250 + 1);
        if i % 5 == 0 {
            z += &format!("{owner} {ttl} A 203.0.113.{}\n", i % 250 + 1);
        }
        if i % 3 == 0 {
            z += &format!("{owner} AAAA 2001:db8::{i:x}\n");
        }
        if i % 7 == 0 {
            z += &format!("{owner} TXT \"host {i}\" \"second string\"\n");
        }
        if i % 11 == 0 {
            z += &format!("{owner} MX 10 h{}\n{owner} MX 20 mail\n", i + 1);
        }
        if i % 13 == 0 {
            z += &format!("_http._tcp.{owner} SRV 0 1 80 {owner}\n");
            names.push(format!("_http._tcp.{owner}"));
        }
        names.push(owner.clone());
        names.push(format!("x.{owner}"));
        names.push(format!("{owner}x"));
    }
    for i in 0..60 {
        z += &format!("c{i} CNAME h{}\ncc{i} 300 CNAME c{i}\n", i + 1);
        z += &format!("cx{i} CNAME h{i}.example.net.\ncd{i} CNAME missing{i}\n");
        for n in ["c", "cc", "cx", "cd"] {
            names.push(format!("{n}{i}"));
        }
    }
    (z, names)
}

/// A response reduced to what both servers must agree on: rcode, flags,
/// OPT present or not, and each section as a sorted list of records
/// (owner lowercased). NSD adds the apex NS RRset (and its addresses) to
/// every positive answer; hostgate gives minimal responses there (see
/// hostgate-dns's lookup.rs): that one difference is taken out of NSD's.
fn diff_summary(m: &hickory_proto::op::Message, theirs_of: Option<&hickory_proto::op::Message>) -> String {
    use hickory_proto::rr::{Record, RecordType};
    // lowercased whole: both compress names in the data against the
    // question as asked, so their case follows the query's
    let line = |r: &Record| format!("{} {} {} {}", r.name, r.ttl, r.record_type(), r.data).to_lowercase();
    let mut authority: Vec<&Record> = m.authorities.iter().collect();
    let mut additional: Vec<&Record> = m.additionals.iter().collect();
    if let Some(ours) = theirs_of {
        // `m` is NSD's answer and `ours` hostgate's to the same query
        let positive = m.metadata.authoritative && !m.answers.is_empty();
        let apex_ns =
            |r: &Record| r.record_type() == RecordType::NS && r.name.to_lowercase().to_string() == "example.com.";
        if positive && authority.iter().all(|r| apex_ns(r)) {
            let targets: Vec<String> = authority.iter().map(|r| r.data.to_string().to_lowercase()).collect();
            authority.clear();
            let ours: Vec<String> = ours.additionals.iter().map(line).collect();
            additional.retain(|r| !targets.contains(&r.name.to_lowercase().to_string()) || ours.contains(&line(r)));
        }
    }
    let section = |records: &[&Record]| {
        let mut lines: Vec<String> = records.iter().map(|r| line(r)).collect();
        lines.sort();
        lines.join(" | ")
    };
    let h = &m.metadata;
    format!(
        "{:?} aa={} tc={} rd={} ra={} opt={}\n    answer: {}\n    authority: {}\n    additional: {}",
        h.response_code,
        h.authoritative,
        h.truncation,
        h.recursion_desired,
        h.recursion_available,
        m.edns.is_some(),
        section(&m.answers.iter().collect::<Vec<_>>()),
        section(&authority),
        section(&additional),
    )
}

/// One query over an open TCP connection (RFC 7766 framing).
fn tcp_ask(stream: &mut TcpStream, query: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Write};
    let len = u16::try_from(query.len()).map_err(std::io::Error::other)?;
    stream.write_all(&[&len.to_be_bytes()[..], query].concat())?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len)?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut buf)?;
    Ok(buf)
}

#[test]
fn answers_the_same_as_nsd_for_thousands_of_generated_queries() {
    if !privileged("answers_the_same_as_nsd_for_thousands_of_generated_queries") {
        return;
    }
    use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
    use hickory_proto::rr::{Name, RecordType};

    // no query log: thousands of queries; no RRL: thousands of them from
    // one client over UDP too
    let extra = format!("\n[dns]\nlisten = [\"{V4}:53\"]\nrrl_ratelimit = 0\n");
    let mut node = TestNode::with_config("dns-diff", 0, &extra);
    node.topo.node.ip(["link", "set", "lo", "up"]).expect("lo up");
    node.topo.node.ip(["addr", "add", &format!("{V4}/32"), "dev", "lo"]).expect("v4 on lo");
    node.start_daemon();
    let (zone, names) = differential_zone();
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("example.com.zone");
    std::fs::write(&file, &zone).expect("zone file");
    cli_ok(&node, &["dns", "zone", "import", file.to_str().expect("path")]);
    let client = CLIENT_V4.to_string();
    let nsd = Nsd::serve(&node.topo.client, &client, &[("example.com", zone)]);
    let up = || dig_at(&node, &client, &["h1.example.com", "A"]).status == "NOERROR";
    assert!(eventually(Duration::from_secs(10), up), "NSD did not start: {}", nsd.log());
    let ours = || dig(&node, &["h1.example.com", "A"]).status == "NOERROR";
    assert!(eventually(Duration::from_secs(5), ours), "hostgate does not serve the zone: {}", node.log());

    let seed = std::env::var("HG_DNS_DIFF_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x9e37_79b9_7f4a_7c15u64);
    let count: usize = std::env::var("HG_DNS_DIFF_QUERIES").ok().and_then(|s| s.parse().ok()).unwrap_or(4000);
    let path = node.topo.client.path();
    let (ours_addr, nsd_addr) = (SocketAddr::from(([198, 51, 100, 53], 53)), SocketAddr::new(CLIENT_V4.into(), 53));
    let (asked, differences, kinds) = std::thread::spawn(move || {
        enter_netns(&path).expect("setns");
        let connect = |a| {
            let s = TcpStream::connect_timeout(&a, Duration::from_secs(2)).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
            s
        };
        let (mut ours, mut theirs) = (connect(ours_addr), connect(nsd_addr));
        // the same queries over UDP too: the workers' answer cache must give
        // the responder's bytes (checked against the TCP reply)
        let udp = UdpSocket::bind("0.0.0.0:0").expect("bind");
        udp.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
        udp.connect(ours_addr).expect("connect");
        let mut udp_mismatches = Vec::new();
        let types = [
            RecordType::A,
            RecordType::AAAA,
            RecordType::MX,
            RecordType::TXT,
            RecordType::NS,
            RecordType::SOA,
            RecordType::CNAME,
            RecordType::SRV,
            RecordType::CAA,
            RecordType::PTR,
            RecordType::DS,
            RecordType::ANY,
        ];
        let mut rng = Rng(seed);
        let mut differences = Vec::new();
        let mut kinds = std::collections::BTreeMap::new();
        for i in 0..count {
            let mut base = rng.pick(&names).clone();
            if rng.below(20) == 0 {
                base = rng
                    .pick(&["sub", "host.sub", "a.b.sub", "sub2", "x.sub2", "ns1.sub2", "ext", "a.www.ext"])
                    .to_string();
            }
            let prefix = match rng.below(10) {
                0 => format!("r{}", rng.next() % 1000),
                1 => format!("q{}.w", rng.next() % 1000),
                2 => format!("q{}.wc", rng.next() % 100),
                _ => String::new(),
            };
            let parts = [prefix.as_str(), base.as_str(), "example.com."];
            let mut name = parts.iter().filter(|p| !p.is_empty()).copied().collect::<Vec<_>>().join(".");
            if prefix.contains('.') {
                name = format!("{prefix}.example.com.");
            }
            if rng.below(20) == 0 {
                name = rng.pick(&["example.org.", "www.example.net.", "com."]).to_string();
            }
            // case variations: each letter flipped with probability 1/4
            let name: String =
                name.chars().map(|c| if rng.below(4) == 0 { c.to_ascii_uppercase() } else { c }).collect();
            let qtype = *rng.pick(&types);
            let mut m = Message::new((i % 65536) as u16, MessageType::Query, OpCode::Query);
            m.metadata.recursion_desired = rng.below(2) == 0;
            m.add_query(Query::query(Name::from_ascii(&name).expect("name"), qtype));
            if rng.below(2) == 0 {
                let mut e = Edns::new();
                e.set_max_payload(1232);
                m.set_edns(e);
            }
            let bytes = m.to_vec().expect("encode");
            let over_tcp = tcp_ask(&mut ours, &bytes).expect("hostgate answers");
            // twice: compiled by the responder, then (usually) from the cache
            let limit = if m.edns.is_some() { 1232 } else { 512 };
            for _ in 0..2 {
                udp.send(&bytes).expect("send");
                let mut buf = [0u8; 2048];
                let n = udp.recv(&mut buf).expect("hostgate answers over UDP");
                if over_tcp.len() <= limit && buf[..n] != over_tcp[..] {
                    udp_mismatches.push(format!("{name} {qtype} edns={}", m.edns.is_some()));
                }
            }
            let a = Message::from_vec(&over_tcp).expect("decode ours");
            let b = Message::from_vec(&tcp_ask(&mut theirs, &bytes).expect("NSD answers")).expect("decode NSD's");
            assert_eq!((a.metadata.id, b.metadata.id), (m.metadata.id, m.metadata.id));
            let h = &a.metadata;
            let kind = match (h.response_code, h.authoritative, a.answers.is_empty()) {
                (ResponseCode::NoError, true, false)
                    if a.answers.iter().any(|r| r.record_type() == RecordType::CNAME) =>
                {
                    "cname"
                }
                (ResponseCode::NoError, true, false) if name.to_lowercase().contains(".w") => "wildcard",
                (ResponseCode::NoError, true, false) => "answer",
                (ResponseCode::NoError, true, true) => "nodata",
                (ResponseCode::NoError, false, true) => "referral",
                (ResponseCode::NXDomain, ..) => "nxdomain",
                (ResponseCode::Refused, ..) => "refused",
                _ => "other",
            };
            *kinds.entry(kind).or_insert(0usize) += 1;
            let (sa, sb) = (diff_summary(&a, None), diff_summary(&b, Some(&a)));
            if sa != sb {
                differences
                    .push(format!("{name} {qtype} edns={}:\n  hostgate {sa}\n  NSD      {sb}", m.edns.is_some()));
            }
        }
        assert!(udp_mismatches.is_empty(), "UDP replies other than the TCP ones: {udp_mismatches:?}");
        (count, differences, kinds)
    })
    .join()
    .expect("query thread");
    eprintln!("{asked} queries, {} differ (seed {seed:#x}); hostgate's answers by kind: {kinds:?}", differences.len());
    // every kind of answer was compared, many times
    for kind in ["answer", "cname", "wildcard", "nodata", "referral", "nxdomain", "refused"] {
        assert!(kinds.get(kind).copied().unwrap_or(0) >= asked / 200, "too few {kind}: {kinds:?}");
    }
    assert!(
        differences.is_empty(),
        "{} of {asked} answers differ from NSD's (seed {seed:#x}); the first:\n{}",
        differences.len(),
        differences.iter().take(15).cloned().collect::<Vec<_>>().join("\n")
    );
    drop(nsd);
}

#[test]
fn query_logging_is_off_by_default_and_on_per_zone() {
    if !privileged("query_logging_is_off_by_default_and_on_per_zone") {
        return;
    }
    let extra = format!("\n[dns]\nlisten = [\"{V4}:53\"]\n");
    let mut node = TestNode::with_config("dns-qlog", 0, &extra);
    node.topo.node.ip(["link", "set", "lo", "up"]).expect("lo up");
    node.topo.node.ip(["addr", "add", &format!("{V4}/32"), "dev", "lo"]).expect("v4 on lo");
    node.start_daemon();
    cli_ok(&node, &["dns", "zone", "add", "example.com"]);
    let nobody = err(node.cli(&["dns", "zone", "add", "example.org", "--customer", "nobody"]));
    assert!(nobody.contains("customer: nobody does not exist"), "{nobody}");
    cli_ok(&node, &["customer", "add", "acme"]);
    cli_ok(&node, &["dns", "zone", "add", "example.org", "--query-log", "--customer", "acme"]);
    for zone in ["example.com", "example.org"] {
        cli_ok(&node, &["dns", "record", "add", zone, "www", "A", "198.51.100.10"]);
    }
    let logged = |name: &str| node.log().lines().any(|l| l.contains("DNS query") && l.contains(name));
    let ask = |name: &str| assert_eq!(dig(&node, &[name, "A"]).status, "NOERROR", "{name}");
    ask("www.example.com");
    ask("www.example.org");
    assert!(eventually(Duration::from_secs(2), || logged("www.example.org.")), "{}", node.log());
    assert!(!logged("www.example.com."), "a zone without its query log is not logged");
    let table = cli_ok(&node, &["dns", "zone", "list"]);
    assert!(table.contains("QUERY LOG") && table.contains("acme"), "{table}");
    // The customer's own query log file (logfmt): its zone's queries only.
    let file = node.dir.path().join("state/log/dns/acme.log");
    let customer_log = || std::fs::read_to_string(&file).unwrap_or_default();
    let www = "name=www.example.org. type=A rcode=NOERROR";
    assert!(eventually(Duration::from_secs(5), || customer_log().contains(www)), "{}", customer_log());
    let line = customer_log().lines().find(|l| l.contains(www)).map(str::to_string).unwrap_or_default();
    assert!(line.starts_with("time=20") && line.contains(" client=198.") && line.contains(" transport=udp "), "{line}");
    assert!(!customer_log().contains("example.com."), "another zone's queries: {}", customer_log());

    // Turned on for one and off for the other; the serial stays.
    let before = serial(&node, "example.com");
    // (off first: once the second change is seen, the first is applied too)
    assert!(cli_ok(&node, &["dns", "zone", "query-log", "example.org", "off"]).contains("query log off"));
    assert!(cli_ok(&node, &["dns", "zone", "query-log", "example.com", "on"]).contains("query log on"));
    assert_eq!(serial(&node, "example.com"), before, "the zone's data did not change");
    let on = || {
        let d = dig(&node, &["logged.example.com", "A"]);
        d.status == "NXDOMAIN" && logged("logged.example.com.")
    };
    assert!(eventually(Duration::from_secs(2), on), "{}", node.log());
    ask("www.example.org");
    ask("www.example.org");
    dig(&node, &["silent.example.org", "A"]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(!logged("silent.example.org."), "off again: {}", node.log());
    assert!(!customer_log().contains("silent.example.org."), "off again: {}", customer_log());
    // The setting survives record edits and shows in the listing.
    cli_ok(&node, &["dns", "record", "add", "example.com", "new", "A", "198.51.100.11"]);
    let list = cli_ok(&node, &["dns", "zone", "list", "--json"]);
    let zones: serde_json::Value = serde_json::from_str(&list).expect("json");
    let flags: Vec<(String, bool)> = zones
        .as_array()
        .expect("list")
        .iter()
        .map(|z| (z["origin"].as_str().unwrap_or_default().to_string(), z["query_log"].as_bool().unwrap_or(false)))
        .collect();
    assert!(
        flags.contains(&("example.com.".into(), true)) && flags.contains(&("example.org.".into(), false)),
        "{list}"
    );
    assert!(err(node.cli(&["dns", "zone", "query-log", "example.net", "on"])).contains("does not exist"));
}

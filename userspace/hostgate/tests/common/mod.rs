//! A hostgate node in namespaces with its real daemon, driven through the
//! real CLI binary.

#![allow(dead_code)] // each test binary uses a different part

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use hostgate_api::Status;
use hostgate_dataplane::pins::PinLayout;
use hostgate_testbed::{topology::NODE_UPLINK, unique_name, ChildGuard, NodeTopology};

pub const PIN_ROOT: &str = "/sys/fs/bpf/hostgate-test";
pub const BIN: &str = env!("CARGO_BIN_EXE_hostgate");

/// A hostgate daemon for one node namespace, with its own config, state,
/// socket and pins, all removed on drop.
pub struct TestDaemon {
    pub netns: String,
    pub name: String,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub daemon: Option<ChildGuard>,
    pub layout: PinLayout,
    starts: u32,
}

impl TestDaemon {
    /// A daemon for the node namespace at `netns` (a /run/netns path).
    pub fn new(purpose: &str, netns: &str, container_ifaces: &[String], node_addresses: &[String]) -> TestDaemon {
        Self::with_config(purpose, netns, container_ifaces, node_addresses, "")
    }

    /// As `new`, with `extra` TOML appended to the config.
    pub fn with_config(
        purpose: &str,
        netns: &str,
        container_ifaces: &[String],
        node_addresses: &[String],
        extra: &str,
    ) -> TestDaemon {
        let name = unique_name(purpose);
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("hostgate.sock");
        let config = dir.path().join("hostgate.toml");
        let quoted = |v: &[String]| v.iter().map(|i| format!("{i:?}")).collect::<Vec<_>>().join(", ");
        std::fs::write(
            &config,
            format!(
                "node_name = \"{name}\"\nstate_dir = \"{state}\"\nnode_addresses = [{addrs}]\n\n[api]\nsocket = \"{sock}\"\n\n[dataplane]\npin_root = \"{PIN_ROOT}\"\nuplinks = [\"{NODE_UPLINK}\"]\ncontainer_interfaces = [{list}]\nxdp_mode = \"native\"\n",
                state = dir.path().join("state").display(),
                sock = socket.display(),
                addrs = quoted(node_addresses),
                list = quoted(container_ifaces),
            ) + extra,
        )
        .expect("write config");
        let layout = PinLayout::new(Path::new(PIN_ROOT), &name);
        TestDaemon { netns: netns.to_string(), name, dir, config, socket, daemon: None, layout, starts: 0 }
    }

    /// Starts `hostgate daemon` inside the node namespace and waits until it answers.
    pub fn start_daemon(&mut self) {
        let child = self.spawn_daemon(&self.config.clone());
        self.daemon = Some(ChildGuard::new("hostgate daemon", child));
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.daemon.as_mut().and_then(ChildGuard::try_exited) {
                panic!("daemon exited early ({status}): {}", self.log());
            }
            if self.cli(&["status", "--json"]).status.success() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("daemon did not answer within 30 s: {}", self.log());
    }

    /// Spawns a daemon with `config`, logging to a file of its own.
    pub fn spawn_daemon(&mut self, config: &Path) -> std::process::Child {
        self.starts += 1;
        let log = std::fs::File::create(self.dir.path().join(format!("daemon-{}.log", self.starts))).expect("log file");
        Command::new("nsenter")
            .arg(format!("--net={}", self.netns))
            .arg("--")
            .arg(BIN)
            .args(["daemon", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("spawn daemon")
    }

    /// Everything the daemons of this node logged.
    pub fn log(&self) -> String {
        (1..=self.starts)
            .map(|i| std::fs::read_to_string(self.dir.path().join(format!("daemon-{i}.log"))).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n--- restart ---\n")
    }

    /// Runs the CLI against this daemon.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN).arg("--socket").arg(&self.socket).args(args).output().expect("run hostgate")
    }

    pub fn status(&self) -> Status {
        let out = self.cli(&["status", "--json"]);
        assert!(out.status.success(), "status failed: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("status JSON")
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.kill();
        }
        let _ = hostgate_dataplane::detach_pinned(&self.layout);
        if std::thread::panicking() {
            eprintln!("daemon log of {}:\n{}", self.name, self.log());
        }
    }
}

/// A single node with client and containers, and its daemon.
pub struct TestNode {
    pub host: TestDaemon,
    pub topo: NodeTopology,
}

impl std::ops::Deref for TestNode {
    type Target = TestDaemon;
    fn deref(&self) -> &TestDaemon {
        &self.host
    }
}

impl std::ops::DerefMut for TestNode {
    fn deref_mut(&mut self) -> &mut TestDaemon {
        &mut self.host
    }
}

impl TestNode {
    /// A node with `containers` containers and a config naming all its interfaces.
    pub fn new(purpose: &str, containers: usize) -> TestNode {
        Self::with_config(purpose, containers, "")
    }

    /// As `new`, with `extra` TOML appended to the config.
    pub fn with_config(purpose: &str, containers: usize, extra: &str) -> TestNode {
        let topo = NodeTopology::build(purpose, containers).expect("topology");
        let host = TestDaemon::with_config(purpose, &topo.node.path(), &topo.container_ifaces(), &[], extra);
        // Frames the node sends back with XDP_TX (firewall rejects) reach a
        // veth peer only if it runs XDP itself: give the client a pass program,
        // as any real NIC would simply receive them.
        let pass = host.dir.path().join("xdp_pass.o");
        std::fs::write(&pass, hostgate_dataplane::XDP_PASS_OBJECT).expect("write pass object");
        let object = pass.display().to_string();
        topo.client
            .ip(["link", "set", "dev", "eth0", "xdp", "obj", object.as_str(), "sec", "xdp"])
            .expect("client XDP pass");
        TestNode { host, topo }
    }

    /// `ip -d link show DEV` in the node namespace.
    pub fn link_details(&self, dev: &str) -> String {
        let out = self.topo.node.ip(["-d", "link", "show", dev]).expect("ip link");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A value from /proc/net/snmp of the node namespace, e.g. ("Udp", "NoPorts").
    pub fn snmp(&self, proto: &str, field: &str) -> u64 {
        let out = self.topo.node.exec("cat", ["/proc/net/snmp"]).expect("snmp");
        let text = String::from_utf8_lossy(&out.stdout);
        let mut lines = text.lines().filter(|l| l.starts_with(&format!("{proto}:")));
        let (names, values) = (lines.next().expect("header"), lines.next().expect("values"));
        let idx = names.split_whitespace().position(|n| n == field).expect("field");
        values.split_whitespace().nth(idx).and_then(|v| v.parse().ok()).expect("number")
    }
}

/// Packets counted by the daemon for (hook, proto), over all verdicts.
pub fn counted(status: &Status, hook: &str, proto: &str) -> u64 {
    status.dataplane.counters.iter().filter(|r| r.hook == hook && r.proto == proto).map(|r| r.packets).sum()
}

/// Registers container `web` of customer `acme` (who must exist) behind
/// `iface`, with `ips` and, if given, its MAC; the CLI's output.
pub fn add_web_container(d: &TestDaemon, iface: &str, ips: &[String], mac: Option<&str>) -> String {
    let mut args = vec!["container", "add", "web", "--customer", "acme", "--iface", iface];
    for ip in ips {
        args.extend(["--ip", ip.as_str()]);
    }
    if let Some(mac) = mac {
        args.extend(["--mac", mac]);
    }
    ok(d.cli(&args))
}

/// `network add web` for a test-bed container behind `iface`: the /30 of
/// its `gateway`, the container's address `v4` as the only pool address,
/// then `extra` arguments.
pub fn add_container_network(d: &TestDaemon, iface: &str, gateway: Ipv4Addr, v4: Ipv4Addr, extra: &[&str]) {
    let subnet = format!("{}/30", Ipv4Addr::from(u32::from(gateway) - 1));
    let (gateway, pool) = (gateway.to_string(), format!("{v4}-{v4}"));
    let mut args = vec!["network", "add", "web", "--customer", "acme", "--subnet", &subnet, "--gateway", &gateway];
    args.extend(["--pool", &pool, "--iface", iface]);
    args.extend(extra);
    ok(d.cli(&args));
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn mac_text(mac: [u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// The stdout of a command that must succeed (its stderr otherwise).
pub fn ok(out: Output) -> String {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The stderr of a command that must fail.
pub fn err(out: Output) -> String {
    assert!(!out.status.success(), "succeeded: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Polls `check` every 100 ms until it holds or `within` passes.
pub fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    check()
}

/// How many of `n` answers named each backend (`ask`: the backend's name,
/// or what came instead).
pub fn served_by(n: usize, ask: impl Fn() -> String) -> std::collections::BTreeMap<String, u32> {
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..n {
        *seen.entry(ask()).or_default() += 1;
    }
    seen
}

/// Asks six at a time ([`served_by`]) until `want` holds; how long that
/// took. Panics after 5 s with `what`, the last tally and `log()`.
pub fn until_served(
    what: &str,
    ask: impl Fn() -> String,
    want: impl Fn(&std::collections::BTreeMap<String, u32>) -> bool,
    log: impl Fn() -> String,
) -> Duration {
    let start = Instant::now();
    loop {
        let seen = served_by(6, &ask);
        if want(&seen) {
            return start.elapsed();
        }
        assert!(start.elapsed() < Duration::from_secs(5), "{what}: {seen:?}\n{}", log());
    }
}

/// tests/http_peer.py: the HTTP tests' backends and WebSocket client.
pub const HTTP_PEER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/http_peer.py");

/// The Python HTTP/WebSocket backend in `ns` on `addr:port`, answering as
/// `name` (keep-alive, threaded; see http_peer.py); with `proxy_protocol`
/// it expects a PROXY v2 header first and reports it.
pub fn http_peer(ns: &hostgate_testbed::Netns, addr: &str, port: u16, name: &str, proxy_protocol: bool) -> ChildGuard {
    http_peer_with(ns, addr, port, name, if proxy_protocol { &["--proxy-protocol"] } else { &[] })
}

/// `http_peer` with the server's options (`--proxy-protocol`, `--tls CHAIN KEY`).
pub fn http_peer_with(ns: &hostgate_testbed::Netns, addr: &str, port: u16, name: &str, options: &[&str]) -> ChildGuard {
    use std::io::BufRead;
    let mut cmd = ns.command("python3");
    cmd.args([HTTP_PEER, "server", addr, &port.to_string(), name]).args(options);
    let mut child =
        cmd.stdout(Stdio::piped()).stdin(Stdio::null()).spawn().expect("run python3 (apt-get install python3)");
    let out = child.stdout.take().expect("stdout");
    let guard = ChildGuard::new(name, child);
    let mut line = String::new();
    let _ = std::io::BufReader::new(out).read_line(&mut line);
    assert_eq!(line.trim(), "ready", "backend {name} on {addr}:{port} did not start");
    guard
}

/// What wrk reported.
#[derive(Debug)]
pub struct Wrk {
    pub requests: u64,
    /// "Socket errors: ..." and "Non-2xx or 3xx responses: ..." lines.
    pub errors: Vec<String>,
    pub output: String,
}

/// Runs wrk in `ns` with `args` (bounded by its own -d) and parses it.
pub fn wrk(ns: &hostgate_testbed::Netns, args: &[&str]) -> Wrk {
    let out = ns.command("wrk").args(args).output().expect("run wrk (apt-get install wrk)");
    let output = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let requests = output
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let errors = output
        .lines()
        .filter(|l| l.contains("Socket errors") || l.contains("Non-2xx") || l.contains("rror"))
        .map(|l| l.trim().to_string())
        .collect();
    Wrk { requests, errors, output }
}

/// One WebSocket through the proxy, held open by http_peer.py's client.
pub struct WebSocket {
    _child: ChildGuard,
    stdin: Option<std::process::ChildStdin>,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl WebSocket {
    /// Opens `ws://host/path` through the proxy from the client namespace.
    pub fn open(client: &hostgate_testbed::Netns, host: &str, path: &str) -> WebSocket {
        use std::io::BufRead;
        let mut child = client
            .command("python3")
            .args([HTTP_PEER, "wsclient", &hostgate_testbed::topology::NODE_V4.to_string(), "80", host, path])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let (stdin, stdout) = (child.stdin.take(), child.stdout.take().expect("stdout"));
        let mut ws =
            WebSocket { _child: ChildGuard::new("wsclient", child), stdin, stdout: std::io::BufReader::new(stdout) };
        let mut line = String::new();
        let _ = ws.stdout.read_line(&mut line);
        assert_eq!(line.trim(), "open", "WebSocket to {host}{path} not opened");
        ws
    }

    /// Sends a text message and returns the echo.
    pub fn say(&mut self, text: &str) -> String {
        use std::io::{BufRead, Write};
        let stdin = self.stdin.as_mut().expect("open");
        writeln!(stdin, "{text}").expect("send to wsclient");
        stdin.flush().expect("flush");
        let mut line = String::new();
        let _ = self.stdout.read_line(&mut line);
        line.trim().to_string()
    }

    /// Closes the WebSocket (the client sends a close frame and exits).
    pub fn close(mut self) {
        self.stdin.take();
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut self.stdout, &mut rest);
    }
}

//! `cargo xtask bench dns`: dnsperf against hostgate, NSD and Knot DNS
//! serving the same generated zone, one after the other on the same two
//! namespaces, with the same query file.
//!
//! The zone has `HOSTS` hosts (A, every third an AAAA, every tenth MX and
//! TXT), CNAMEs and a wildcard; the queries mix hits, NODATA, NXDOMAIN,
//! CNAME chains and wildcard answers. Each server gets two UDP workers
//! (hostgate `workers = 2`, NSD `server-count: 2`, Knot `udp-workers: 2`)
//! and no response rate limiting (dnsperf is one client). dnsperf runs
//! with `-c 1 -T 1 -q 100` (100 queries in flight) for `RUN_SECS`, three
//! times; the median run's queries per second and average latency are
//! dnsperf's. p99: dnsperf 2.10 has no latency histogram, so a fourth,
//! shorter run with `-v` prints every response's latency, and the 99th
//! percentile is taken from those.
//!
//! `HOSTGATE_BIN=path` measures that binary instead of building one.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use hostgate_testbed::{unique_name, ChildGuard, Netns};

use crate::{bench::BenchDaemon, deps};

const SERVER: &str = "198.18.0.1";
const HOSTS: usize = 5_000;
const QUERIES: usize = 50_000;
const RUN_SECS: u32 = 10;
const LATENCY_SECS: u32 = 5;
const RUNS: usize = 3;

pub fn run() -> anyhow::Result<()> {
    let mut packages = deps::BUILD_AND_TEST.to_vec();
    packages.extend([
        ("dnsperf", "dnsperf, the load generator of `bench dns`"),
        ("knot", "Knot DNS, a peer of `bench dns` (NSD, the other, is a test dependency)"),
    ]);
    deps::ensure(&packages)?;
    if !deps::is_root() {
        bail!("the DNS benchmark builds namespaces: run it as root");
    }
    // HOSTGATE_BIN: a release binary built already (a release build is
    // slow, and measuring while one runs measures the build)
    let bin = match std::env::var_os("HOSTGATE_BIN") {
        Some(bin) => PathBuf::from(bin),
        None => {
            deps::cargo(&["build", "--release", "--package", "hostgate"])?;
            deps::target_dir().join("release/hostgate")
        }
    };
    let bed = Bed::new()?;
    std::fs::write(bed.path("example.com.zone"), zone())?;
    std::fs::write(bed.path("queries.txt"), queries())?;
    println!(
        "xtask: dns, dnsperf against hostgate, NSD and Knot ({HOSTS} hosts, {QUERIES} queries in the file, \
         {RUNS} x {RUN_SECS} s each + {LATENCY_SECS} s for p99)"
    );
    let mut results = Vec::new();
    for peer in [Peer::Hostgate(bin), Peer::Nsd, Peer::Knot] {
        let name = peer.name();
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        println!("{name} (load average before: {})", load.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
        let server = peer.start(&bed).with_context(|| format!("starting {name}"))?;
        let result = measure(&bed).with_context(|| {
            let log = std::fs::read_to_string(bed.path(peer.log())).unwrap_or_default();
            format!("measuring {name}; the end of its log:\n{}", tail(&log, 20))
        })?;
        drop(server);
        results.push((name, result));
    }
    print_table(&results);
    Ok(())
}

/// The zone every server loads.
fn zone() -> String {
    let mut z = String::from(
        "$ORIGIN example.com.\n$TTL 3600\n@ SOA ns1 hostmaster 2024010101 7200 900 1209600 300\n@ NS ns1\n\
         @ NS ns2.example.net.\n@ MX 10 mail\nns1 A 198.51.100.1\nmail A 198.51.100.25\n*.w A 198.51.100.99\n",
    );
    for i in 0..HOSTS {
        z += &format!("h{i} A 198.51.100.{}\n", i % 250 + 1);
        if i % 3 == 0 {
            z += &format!("h{i} AAAA 2001:db8::{i:x}\n");
        }
        if i % 10 == 0 {
            z += &format!("h{i} MX 10 mail\nh{i} TXT \"host {i}\"\n");
        }
        if i % 25 == 0 {
            z += &format!("c{i} CNAME h{i}\n");
        }
    }
    z
}

/// dnsperf's query file: 60 % A hits, 10 % AAAA (a third hits, the rest
/// NODATA), 5 % MX/TXT, 5 % CNAME, 5 % wildcard, 15 % NXDOMAIN.
fn queries() -> String {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let mut out = String::new();
    for _ in 0..QUERIES {
        let host = next() as usize % HOSTS;
        let line = match next() % 100 {
            0..=59 => format!("h{host}.example.com A"),
            60..=69 => format!("h{host}.example.com AAAA"),
            70..=72 => format!("h{}.example.com MX", host / 10 * 10),
            73..=74 => format!("h{}.example.com TXT", host / 10 * 10),
            75..=79 => format!("c{}.example.com A", host / 25 * 25),
            80..=84 => format!("x{host}.w.example.com A"),
            _ => format!("nx{host}.example.com A"),
        };
        out += &line;
        out.push('\n');
    }
    out
}

/// The server's namespace (hgs0) and dnsperf's (eth0).
struct Bed {
    server: Netns,
    client: Netns,
    dir: tempfile::TempDir,
}

/// The daemon's pins go with the bed, however the run ended.
impl Drop for Bed {
    fn drop(&mut self) {
        crate::bench::remove_pins("bench-dns");
    }
}

impl Bed {
    fn new() -> anyhow::Result<Bed> {
        let server = Netns::create(&unique_name("bdnss"))?;
        let client = Netns::create(&unique_name("bdnsc"))?;
        server.ip(["link", "add", "hgs0", "type", "veth", "peer", "name", "eth0", "netns", client.name()])?;
        server.ip(["addr", "add", &format!("{SERVER}/24"), "dev", "hgs0"])?;
        client.ip(["addr", "add", "198.18.0.2/24", "dev", "eth0"])?;
        for (ns, dev) in [(&server, "hgs0"), (&client, "eth0")] {
            ns.ip(["link", "set", dev, "up"])?;
            ns.ip(["link", "set", "lo", "up"])?;
        }
        Ok(Bed { server, client, dir: tempfile::tempdir()? })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `program args` in the server namespace, logging to `log`.
    fn spawn(&self, program: &Path, args: &[&str], log: &str) -> anyhow::Result<ChildGuard> {
        let log = std::fs::File::create(self.path(log))?;
        let child = Command::new("nsenter")
            .arg(format!("--net={}", self.server.path()))
            .arg("--")
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning {}", program.display()))?;
        Ok(ChildGuard::new(&program.display().to_string(), child))
    }

    /// Whether the server answers h1.example.com with an address.
    fn answers(&self) -> bool {
        let out = self
            .client
            .command("dig")
            .args([&format!("@{SERVER}"), "+time=1", "+tries=1", "+short"])
            .arg("h1.example.com")
            .output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).contains("198.51.100.2")).unwrap_or(false)
    }
}

enum Peer {
    Hostgate(PathBuf),
    Nsd,
    Knot,
}

impl Peer {
    fn name(&self) -> &'static str {
        match self {
            Peer::Hostgate(_) => "hostgate",
            Peer::Nsd => "NSD 4.6",
            Peer::Knot => "Knot DNS 3.2",
        }
    }

    fn log(&self) -> &'static str {
        match self {
            Peer::Hostgate(_) => "hostgate.log",
            Peer::Nsd => "nsd.log",
            Peer::Knot => "knot.log",
        }
    }

    fn start(&self, bed: &Bed) -> anyhow::Result<ChildGuard> {
        let d = bed.dir.path().display();
        let process = match self {
            Peer::Hostgate(bin) => start_hostgate(bed, bin)?,
            Peer::Nsd => {
                let conf = bed.path("nsd.conf");
                std::fs::write(
                    &conf,
                    format!(
                        "server:\n ip-address: {SERVER}@53\n username: \"\"\n chroot: \"\"\n zonesdir: \"{d}\"\n \
                         pidfile: \"{d}/nsd.pid\"\n xfrdfile: \"{d}/xfrd.state\"\n zonelistfile: \"{d}/zone.list\"\n \
                         xfrdir: \"{d}\"\n database: \"\"\n verbosity: 1\n server-count: 2\n rrl-ratelimit: 0\n\
                         remote-control:\n control-enable: no\n\
                         zone:\n name: \"example.com\"\n zonefile: \"{d}/example.com.zone\"\n"
                    ),
                )?;
                bed.spawn(Path::new("/usr/sbin/nsd"), &["-d", "-c", &conf.display().to_string()], self.log())?
            }
            Peer::Knot => {
                let conf = bed.path("knot.conf");
                std::fs::create_dir_all(bed.path("knot-db"))?;
                std::fs::write(
                    &conf,
                    format!(
                        "server:\n    rundir: \"{d}\"\n    listen: {SERVER}@53\n    udp-workers: 2\n    tcp-workers: 1\n    \
                         background-workers: 1\nlog:\n  - target: stderr\n    any: warning\n\
                         database:\n    storage: \"{d}/knot-db\"\n\
                         zone:\n  - domain: example.com\n    storage: \"{d}\"\n    file: \"example.com.zone\"\n    \
                         journal-content: none\n    zonefile-sync: -1\n"
                    ),
                )?;
                bed.spawn(Path::new("/usr/sbin/knotd"), &["-c", &conf.display().to_string()], self.log())?
            }
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !bed.answers() {
            if Instant::now() > deadline {
                bail!("{} does not answer", self.name());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(process)
    }
}

fn start_hostgate(bed: &Bed, bin: &Path) -> anyhow::Result<ChildGuard> {
    let service = format!("[dns]\nlisten = [\"{SERVER}:53\"]\nworkers = 2\nrrl_ratelimit = 0\n");
    let daemon = BenchDaemon::start(&bed.server, bed.dir.path(), bin, "bench-dns", "uplinks = [\"hgs0\"]\n", &service)?;
    daemon.cli(&["dns", "zone", "import", &bed.path("example.com.zone").display().to_string()])?;
    Ok(daemon.process)
}

#[derive(Clone, Debug, Default)]
struct Measured {
    qps: f64,
    lost_percent: f64,
    avg_ms: f64,
    p99_ms: f64,
    spread: f64,
}

/// dnsperf in the client namespace; its output.
fn dnsperf(bed: &Bed, secs: u32, verbose: bool) -> anyhow::Result<String> {
    let mut cmd = bed.client.command("dnsperf");
    cmd.args(["-s", SERVER, "-p", "53", "-c", "1", "-T", "1", "-q", "100", "-t", "2"])
        .arg("-d")
        .arg(bed.path("queries.txt"))
        .args(["-l", &secs.to_string()]);
    if verbose {
        cmd.arg("-v");
    }
    let out = cmd.output().context("running dnsperf")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!("dnsperf failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(text)
}

/// The number after `label` on dnsperf's summary line.
fn field(text: &str, label: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.trim_start().starts_with(label))?;
    line.split_once(':')?.1.split_whitespace().next()?.parse().ok()
}

fn trial(bed: &Bed) -> anyhow::Result<Measured> {
    let text = dnsperf(bed, RUN_SECS, false)?;
    let qps = field(&text, "Queries per second").with_context(|| format!("no qps in: {text}"))?;
    let avg = field(&text, "Average Latency (s)").with_context(|| format!("no latency in: {text}"))?;
    let lost = text
        .lines()
        .find(|l| l.trim_start().starts_with("Queries lost"))
        .and_then(|l| l.split('(').nth(1)?.split('%').next()?.trim().parse().ok())
        .unwrap_or(f64::NAN);
    Ok(Measured { qps, lost_percent: lost, avg_ms: avg * 1e3, p99_ms: f64::NAN, spread: 0.0 })
}

/// The 99th percentile of the latencies `dnsperf -v` printed, one per
/// response (`> NOERROR name type latency`), in milliseconds.
fn p99(bed: &Bed) -> anyhow::Result<f64> {
    let text = dnsperf(bed, LATENCY_SECS, true)?;
    let mut latencies: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with('>'))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .collect();
    if latencies.is_empty() {
        bail!("dnsperf -v printed no latencies: {}", tail(&text, 10));
    }
    latencies.sort_by(f64::total_cmp);
    Ok(latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)] * 1e3)
}

fn measure(bed: &Bed) -> anyhow::Result<Measured> {
    let mut runs: Vec<Measured> = Vec::new();
    for _ in 0..RUNS {
        let m = trial(bed)?;
        println!("  {:>9.0} qps, avg {:.3} ms, {:.2} % lost", m.qps, m.avg_ms, m.lost_percent);
        runs.push(m);
    }
    runs.sort_by(|a, b| a.qps.total_cmp(&b.qps));
    let mut median = runs[RUNS / 2].clone();
    median.spread = runs[RUNS - 1].qps - runs[0].qps;
    median.p99_ms = p99(bed)?;
    println!("  p99 {:.3} ms", median.p99_ms);
    Ok(median)
}

fn print_table(results: &[(&str, Measured)]) {
    println!();
    println!(
        "DNS: dnsperf -c 1 -T 1 -q 100, UDP, {HOSTS}-host zone, median of {RUNS} x {RUN_SECS} s (p99 from a {LATENCY_SECS} s -v run)"
    );
    println!("| server        | qps (spread)        | lost    | avg ms | p99 ms |");
    println!("|---------------|---------------------|---------|--------|--------|");
    for (name, m) in results {
        println!(
            "| {name:<13} | {:>9.0} ({:>7.0}) | {:>5.2} % | {:>6.3} | {:>6.3} |",
            m.qps, m.spread, m.lost_percent, m.avg_ms, m.p99_ms
        );
    }
    let hostgate = results[0].1.qps;
    for (name, m) in &results[1..] {
        println!("hostgate / {name}: {:.2}x qps", hostgate / m.qps.max(1e-9));
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

//! `cargo xtask bench dhcp`: full DORA exchanges from ISC perfdhcp against
//! hostgate, Kea (memfile, leases persisted) and dnsmasq, one after the
//! other on the same two namespaces with the same /15 pool.
//!
//! perfdhcp acts as a relay agent (giaddr = its address), so each server
//! serves the subnet of giaddr. For each peer the rate is raised step by
//! step until REQUEST-ACK drops pass 2.5 %; the best rate that stayed below
//! is then run three times, and the median is reported with the server's
//! CPU time per lease (user + sys of its process over ACKs) and
//! perfdhcp's. Kea writes each lease with one write() and no fsync (its
//! memfile default); dnsmasq rewrites and fsyncs its lease file; hostgate
//! fsyncs a batch of leases (redb commit) before their ACKs leave.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context};
use hostgate_testbed::{perfdhcp, unique_name, ChildGuard, Netns};

use crate::{
    bench::{self, BenchDaemon},
    deps,
};

const SERVER: &str = "198.18.0.1";
const SUBNET: &str = "198.18.0.0/15";
const POOL_FIRST: &str = "198.18.1.0";
const POOL_LAST: &str = "198.19.255.254";
/// Distinct clients perfdhcp draws from (fewer than the pool holds).
const CLIENTS: u32 = 100_000;
const MAX_DROPS_PERCENT: f64 = 2.5;
const STEPS: &[u32] =
    &[50, 100, 250, 500, 1_000, 2_000, 4_000, 6_000, 8_000, 12_000, 16_000, 20_000, 25_000, 30_000, 40_000];
const STEP_SECS: u64 = 3;
const RUN_SECS: u64 = 5;
const RUNS: usize = 3;

pub fn run() -> anyhow::Result<()> {
    let mut packages = deps::BUILD_AND_TEST.to_vec();
    packages.extend([
        ("kea-dhcp4-server", "Kea, the DHCP peer of `bench dhcp`"),
        ("dnsmasq-base", "dnsmasq, the other DHCP peer of `bench dhcp`"),
    ]);
    deps::ensure(&packages)?;
    if !deps::is_root() {
        bail!("the DHCP benchmark builds namespaces: run it as root");
    }
    deps::cargo(&["build", "--release", "--package", "hostgate"])?;
    let bin = deps::target_dir().join("release/hostgate");
    let bed = Bed::new()?;
    println!("xtask: dhcp, perfdhcp DORA against hostgate, Kea and dnsmasq (a few minutes)");
    let mut results = Vec::new();
    for peer in [Peer::Hostgate(bin), Peer::Kea, Peer::Dnsmasq] {
        let name = peer.name();
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        println!("{name} (load average before: {})", load.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
        let server = peer.start(&bed).with_context(|| format!("starting {name}"))?;
        let result = measure(&bed, &server).with_context(|| {
            let log = std::fs::read_to_string(bed.path(peer.log())).unwrap_or_default();
            format!("measuring {name}; the end of its log:\n{}", tail(&log, 20))
        })?;
        drop(server);
        results.push((name, result));
    }
    print_table(&results);
    Ok(())
}

/// The two namespaces: the server's (hgs0) and perfdhcp's (eth0).
struct Bed {
    server: Netns,
    client: Netns,
    dir: tempfile::TempDir,
}

/// The daemon's pins go with the bed, however the run ended.
impl Drop for Bed {
    fn drop(&mut self) {
        crate::bench::remove_pins("bench-dhcp");
    }
}

impl Bed {
    fn new() -> anyhow::Result<Bed> {
        let server = Netns::create(&unique_name("bdhcps"))?;
        let client = Netns::create(&unique_name("bdhcpc"))?;
        server.ip(["link", "add", "hgs0", "type", "veth", "peer", "name", "eth0", "netns", client.name()])?;
        server.ip(["addr", "add", &format!("{SERVER}/15"), "dev", "hgs0"])?;
        client.ip(["addr", "add", "198.18.0.2/15", "dev", "eth0"])?;
        server.ip(["link", "set", "hgs0", "up"])?;
        client.ip(["link", "set", "eth0", "up"])?;
        Ok(Bed { server, client, dir: tempfile::tempdir()? })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `program args` in the server namespace, logging to `log`.
    fn spawn(&self, program: &Path, args: &[&str], log: &str) -> anyhow::Result<ChildGuard> {
        let log = std::fs::File::create(self.path(log))?;
        let child = Command::new("nsenter")
            // Kea's pid and lock files, away from the packaged service's /run/kea.
            .env("KEA_PIDFILE_DIR", self.dir.path())
            .env("KEA_LOCKFILE_DIR", self.dir.path())
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
}

enum Peer {
    Hostgate(PathBuf),
    Kea,
    Dnsmasq,
}

/// A running server (stopped on drop) and the pid whose CPU time is its
/// own (nsenter execs the server, so the same process).
struct Running {
    _process: ChildGuard,
    pid: u32,
}

impl Peer {
    fn name(&self) -> &'static str {
        match self {
            Peer::Hostgate(_) => "hostgate (redb, fsync per batch)",
            Peer::Kea => "Kea 2.2 memfile (no fsync)",
            Peer::Dnsmasq => "dnsmasq (fsync per lease)",
        }
    }

    fn log(&self) -> &'static str {
        match self {
            Peer::Hostgate(_) => "hostgate.log",
            Peer::Kea => "kea.log",
            Peer::Dnsmasq => "dnsmasq.log",
        }
    }

    fn start(&self, bed: &Bed) -> anyhow::Result<Running> {
        let process = match self {
            Peer::Hostgate(bin) => start_hostgate(bed, bin)?,
            Peer::Kea => {
                let config = bed.path("kea.json");
                std::fs::write(&config, kea_config(&bed.path("kea-leases.csv")))?;
                let p = bed.spawn(
                    Path::new("/usr/sbin/kea-dhcp4"),
                    &["-c", &config.display().to_string()],
                    Peer::Kea.log(),
                )?;
                std::thread::sleep(Duration::from_secs(2));
                p
            }
            Peer::Dnsmasq => {
                let leases = bed.path("dnsmasq.leases");
                let args = [
                    "--keep-in-foreground".to_string(),
                    "--conf-file=/dev/null".into(),
                    "--port=0".into(),
                    "--user=root".into(),
                    "--interface=hgs0".into(),
                    "--bind-interfaces".into(),
                    format!("--dhcp-range={POOL_FIRST},{POOL_LAST},255.254.0.0,1h"),
                    format!("--dhcp-leasefile={}", leases.display()),
                    "--dhcp-lease-max=200000".into(),
                    "--dhcp-authoritative".into(),
                    "--no-ping".into(),
                    "--quiet-dhcp".into(),
                    "--log-facility=-".into(),
                    format!("--pid-file={}", bed.path("dnsmasq.pid").display()),
                ];
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let p = bed.spawn(Path::new("/usr/sbin/dnsmasq"), &args, Peer::Dnsmasq.log())?;
                std::thread::sleep(Duration::from_secs(1));
                p
            }
        };
        let pid = process.pid().context("the server exited at once")?;
        Ok(Running { _process: process, pid })
    }
}

fn start_hostgate(bed: &Bed, bin: &Path) -> anyhow::Result<ChildGuard> {
    let service = "[dhcp]\nrelay_interfaces = [\"hgs0\"]\n";
    let daemon = BenchDaemon::start(&bed.server, bed.dir.path(), bin, "bench-dhcp", "uplinks = [\"hgs0\"]\n", service)?;
    let cli = |args: &[&str]| daemon.cli(args);
    cli(&["customer", "add", "bench"])?;
    let pool = format!("{POOL_FIRST}-{POOL_LAST}");
    cli(&[
        "network",
        "add",
        "bench",
        "--customer",
        "bench",
        "--subnet",
        SUBNET,
        "--gateway",
        SERVER,
        "--pool",
        &pool,
        "--max-new-per-mac",
        "0",
        "--max-new-per-port",
        "0",
    ])?;
    std::thread::sleep(Duration::from_millis(500));
    Ok(daemon.process)
}

fn kea_config(leases: &Path) -> String {
    format!(
        r#"{{ "Dhcp4": {{
  "interfaces-config": {{ "interfaces": ["hgs0"], "dhcp-socket-type": "udp" }},
  "lease-database": {{ "type": "memfile", "persist": true, "name": "{leases}", "lfc-interval": 0 }},
  "valid-lifetime": 3600,
  "subnet4": [ {{ "id": 1, "subnet": "{SUBNET}", "pools": [ {{ "pool": "{POOL_FIRST} - {POOL_LAST}" }} ] }} ],
  "loggers": [ {{ "name": "kea-dhcp4", "severity": "WARN", "output_options": [ {{ "output": "stdout" }} ] }} ]
}} }}"#,
        leases = leases.display()
    )
}

/// One peer's median run at its best rate.
#[derive(Clone, Debug, Default)]
struct Measured {
    rate: u32,
    leases_per_sec: f64,
    drops_percent: f64,
    avg_delay_ms: f64,
    server_us_per_lease: f64,
    generator_us_per_lease: f64,
    spread: f64,
}

fn trial(bed: &Bed, server: &Running, rate: u32, secs: u64) -> anyhow::Result<Measured> {
    let ticks = bench::cpu_ticks(server.pid);
    let generator = bench::children_cpu_secs();
    let report = perfdhcp::Load {
        netns: &bed.client.path(),
        iface: "eth0",
        server: SERVER,
        rate,
        clients: CLIENTS,
        period: Duration::from_secs(secs),
        unique: false,
        renew_rate: 0,
        release_rate: 0,
    }
    .run()?;
    let acks = report.request_ack.received as f64;
    if report.discover_offer.sent == 0 {
        bail!("perfdhcp sent nothing: {}", report.output);
    }
    let server_secs = bench::ticks_to_secs(bench::cpu_ticks(server.pid).saturating_sub(ticks));
    let per = |s: f64| if acks > 0.0 { s / acks * 1e6 } else { f64::NAN };
    // Exchanges that did not end in an ACK, whichever half was lost.
    let drops = 100.0 * (1.0 - acks / (report.discover_offer.sent as f64)).max(0.0);
    Ok(Measured {
        rate,
        leases_per_sec: acks / secs as f64,
        drops_percent: drops,
        avg_delay_ms: report.discover_offer.avg_delay_ms + report.request_ack.avg_delay_ms,
        server_us_per_lease: per(server_secs),
        generator_us_per_lease: per(bench::children_cpu_secs() - generator),
        spread: 0.0,
    })
}

fn measure(bed: &Bed, server: &Running) -> anyhow::Result<Measured> {
    let mut best: Option<Measured> = None;
    for &rate in STEPS {
        let m = trial(bed, server, rate, STEP_SECS)?;
        println!("  {rate:>6}/s offered: {:>8.0} leases/s, {:>5.1} % lost", m.leases_per_sec, m.drops_percent);
        if m.drops_percent > MAX_DROPS_PERCENT {
            break;
        }
        best = Some(m);
    }
    let Some(best) = best else { bail!("even {} DORA/s lost more than {MAX_DROPS_PERCENT} %", STEPS[0]) };
    let mut runs: Vec<Measured> =
        (0..RUNS).map(|_| trial(bed, server, best.rate, RUN_SECS)).collect::<Result<_, _>>()?;
    runs.sort_by(|a, b| a.leases_per_sec.total_cmp(&b.leases_per_sec));
    let mut median = runs[RUNS / 2].clone();
    median.spread = runs[RUNS - 1].leases_per_sec - runs[0].leases_per_sec;
    Ok(median)
}

fn print_table(results: &[(&str, Measured)]) {
    println!();
    println!("DHCP: full DORA exchanges by perfdhcp (relayed), best offered rate with <= {MAX_DROPS_PERCENT} % lost, median of {RUNS} x {RUN_SECS} s");
    println!("| server                           | offered/s | leases/s (spread) | lost   | avg DORA ms | server µs/lease | perfdhcp µs/lease |");
    println!("|----------------------------------|-----------|-------------------|--------|-------------|-----------------|-------------------|");
    for (name, m) in results {
        println!(
            "| {name:<32} | {:>9} | {:>8.0} ({:>6.0}) | {:>4.1} % | {:>11.2} | {:>15.1} | {:>17.1} |",
            m.rate,
            m.leases_per_sec,
            m.spread,
            m.drops_percent,
            m.avg_delay_ms,
            m.server_us_per_lease,
            m.generator_us_per_lease
        );
    }
    let hostgate = results[0].1.leases_per_sec;
    for (name, m) in &results[1..] {
        println!("hostgate / {name}: {:.2}x leases/s", hostgate / m.leases_per_sec.max(1e-9));
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

//! `cargo xtask bench lb`: the load balancer against its peers, one table
//! from one run.
//!
//! (a) BPF_PROG_TEST_RUN: ns per packet of the real program with real
//!     tables (65 537-slot Maglev rings), for new flows (connection-table
//!     miss, Maglev pick, insert) and established ones (hit), IPv4 and
//!     IPv6, beside a do-nothing XDP program run the same way (the timer
//!     floor of single runs; repeated runs cannot be used since the program
//!     rewrites its input).
//! (b) Forwarding between namespaces: an in-kernel generator (live-frames
//!     test runs that XDP_TX UDP frames with random source ports out of the
//!     client's veth) into the node; delivered frames are counted by XDP
//!     sinks on the containers' veths. hostgate (XDP: Maglev + DNAT +
//!     redirect) against nftables (numgen + dnat, kernel forwarding) on the
//!     same topology, 64-byte and 1514-byte frames, three runs each.

use std::{
    collections::BTreeSet,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use aya::{
    programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp, XdpMode},
    Ebpf, EbpfLoader,
};
use hostgate_dataplane::{
    detach_pinned, pins::PinLayout, scratch::ScratchDataplane, Dataplane, DataplaneSpec, XdpModeChoice,
};
use hostgate_lb::{
    model::{BackendSpec, Mode, VipSpec},
    plan,
};
use hostgate_testbed::{
    packet::{tcp_flags, Packet},
    sender::enter_netns,
    topology::{CLIENT_IFACE, CLIENT_MAC, CLIENT_V4, NODE_MAC, NODE_UPLINK},
    unique_name, NodeTopology,
};

use crate::deps;

pub(crate) const PIN_ROOT: &str = "/sys/fs/bpf/hostgate-bench";

/// Removes the pins a bench daemon named `node_name` left under
/// [`PIN_ROOT`] (a daemon keeps them across restarts by design).
pub(crate) fn remove_pins(node_name: &str) {
    let layout = hostgate_dataplane::pins::PinLayout::new(Path::new(PIN_ROOT), node_name);
    let _ = hostgate_dataplane::detach_pinned(&layout);
}
/// A hostgate daemon started for a service bench: its config in `dir`
/// (pins under [`PIN_ROOT`], warnings only), run in `ns`, and its CLI.
pub(crate) struct BenchDaemon {
    pub process: hostgate_testbed::ChildGuard,
    bin: std::path::PathBuf,
    socket: std::path::PathBuf,
}

impl BenchDaemon {
    /// Writes `dir/hostgate.toml` for node `node_name` with `dataplane`
    /// (lines of its `[dataplane]` table besides the pin root) and
    /// `service` (the bench's own tables), starts `bin daemon` in `ns`
    /// logging to `dir/hostgate.log`, and waits up to 30 s for its API.
    pub fn start(
        ns: &hostgate_testbed::Netns,
        dir: &Path,
        bin: &Path,
        node_name: &str,
        dataplane: &str,
        service: &str,
    ) -> anyhow::Result<BenchDaemon> {
        let socket = dir.join("hostgate.sock");
        let config = dir.join("hostgate.toml");
        std::fs::write(
            &config,
            format!(
                "node_name = \"{node_name}\"\nstate_dir = \"{state}\"\n\n[api]\nsocket = \"{sock}\"\n\n\
                 [dataplane]\npin_root = \"{PIN_ROOT}\"\n{dataplane}\n{service}\n[log]\nlevel = \"warn\"\n",
                state = dir.join("hostgate-state").display(),
                sock = socket.display(),
            ),
        )?;
        let log_path = dir.join("hostgate.log");
        let log = std::fs::File::create(&log_path)?;
        let child = std::process::Command::new("nsenter")
            .arg(format!("--net={}", ns.path()))
            .arg("--")
            .arg(bin)
            .args(["daemon", "--config"])
            .arg(&config)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let daemon = BenchDaemon {
            process: hostgate_testbed::ChildGuard::new(&bin.display().to_string(), child),
            bin: bin.to_path_buf(),
            socket,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while daemon.cli(&["status"]).is_err() {
            if Instant::now() > deadline {
                bail!("hostgate did not answer: {}", std::fs::read_to_string(&log_path).unwrap_or_default());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(daemon)
    }

    /// `hostgate ARGS` against this daemon; its stderr is the error.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<()> {
        let out = std::process::Command::new(&self.bin).arg("--socket").arg(&self.socket).args(args).output()?;
        if !out.status.success() {
            bail!("hostgate {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }
}

/// utime + stime of process `pid` (all its threads), in clock ticks.
pub(crate) fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // After the comm: state is field 3, so utime (14) and stime (15) sit at 11 and 12.
    field(11) + field(12)
}

/// [`cpu_ticks`] of `pid` and every process under it (NGINX's workers).
pub(crate) fn tree_cpu_ticks(pid: u32) -> u64 {
    let mut parents = std::collections::HashMap::<u32, Vec<u32>>::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
        // After the comm: state, then ppid.
        if let Some(ppid) = after.split_whitespace().nth(1).and_then(|v| v.parse::<u32>().ok()) {
            parents.entry(ppid).or_default().push(child);
        }
    }
    let (mut total, mut todo) = (0, vec![pid]);
    while let Some(p) = todo.pop() {
        total += cpu_ticks(p);
        todo.extend(parents.get(&p).into_iter().flatten());
    }
    total
}

pub(crate) fn ticks_to_secs(ticks: u64) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks as f64 / hz
}

/// User + system CPU seconds of this process's waited-for children.
pub(crate) fn children_cpu_secs() -> f64 {
    // SAFETY: getrusage fills the struct we pass.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

const RUNS: usize = 3;

pub fn run(what: &[String]) -> anyhow::Result<()> {
    let what: Vec<&str> = if what.is_empty() {
        vec!["lb", "fw", "failover", "dhcp", "http", "dns", "ssh"]
    } else {
        what.iter().map(String::as_str).collect()
    };
    for w in what {
        match w {
            "lb" => lb()?,
            "fw" => fw()?,
            "monitor" => monitor()?,
            "failover" => crate::failover::run()?,
            "dhcp" => crate::bench_dhcp::run()?,
            "http" => crate::bench_http::run()?,
            "dns" => crate::bench_dns::run()?,
            "ssh" => crate::bench_ssh::run()?,
            other => bail!("unknown benchmark {other:?} (available: lb, fw, monitor, failover, dhcp, http, dns, ssh)"),
        }
    }
    Ok(())
}

fn lb() -> anyhow::Result<()> {
    deps::ensure(deps::BUILD_AND_TEST)?;
    if !deps::is_root() {
        bail!("the benchmark loads BPF programs and creates namespaces: run it as root");
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "hostgate load balancer benchmark: {} CPUs, kernel {}, load average {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    println!(
        "\n(a) BPF_PROG_TEST_RUN, ns per packet (median of {RUNS} rounds of 20 000 packets; spread in brackets)\n"
    );
    test_run_table()?;
    println!(
        "\n(b) forwarding client -> node -> 3 containers over veth, UDP, random source ports (median of {RUNS} runs)\n"
    );
    forwarding_table()?;
    Ok(())
}

/// The median (of the two middle values when there is an even number)
/// and the spread (highest - lowest). `v` must not be empty.
pub(crate) fn median_spread(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n.is_multiple_of(2) { (v[n / 2 - 1] + v[n / 2]) / 2.0 } else { v[n / 2] };
    (median, v[n - 1] - v[0])
}

fn lb_plan(proto: &str, port: u16, backends4: &[String], backends6: &[String]) -> anyhow::Result<plan::Plan> {
    let v4 = format!("203.0.113.10:{port}/{proto}");
    let v6 = format!("[2001:db8:113::10]:{port}/{proto}");
    let vips = [
        VipSpec { key: v4.parse()?, id: 0, ring_size: 65_537 },
        VipSpec { key: v6.parse()?, id: 1, ring_size: 65_537 },
    ];
    let mut backends = Vec::new();
    for (i, addr) in backends4.iter().chain(backends6).enumerate() {
        let vip = if i < backends4.len() { &vips[0] } else { &vips[1] };
        backends.push(BackendSpec {
            vip: vip.key,
            addr: addr.parse()?,
            port: None,
            weight: 1,
            mode: Mode::Nat,
            node: None,
            id: i as u32 + 1,
            check: None,
        });
    }
    let (plan, skipped) = plan::build(&vips, &backends, &BTreeSet::new(), &plan::Site::default());
    if !skipped.is_empty() {
        bail!("benchmark plan skipped backends: {skipped:?}");
    }
    Ok(plan)
}

fn test_run_table() -> anyhow::Result<()> {
    let mut dp = ScratchDataplane::new(Path::new(PIN_ROOT), "bench")?;
    let b4: Vec<String> = (0..3).map(|i| format!("198.51.100.{}", 4 * i + 6)).collect();
    let b6: Vec<String> = (1..=3).map(|i| format!("2001:db8:51:{i}::2")).collect();
    let plan = lb_plan("tcp", 80, &b4, &b6)?;
    dp.apply_lb(&plan)?;

    let mut pass = EbpfLoader::new().load(hostgate_dataplane::XDP_PASS_OBJECT)?;
    let pass_prog: &mut Xdp = pass.program_mut("xdp_pass").context("xdp_pass")?.try_into()?;
    pass_prog.load()?;

    println!("{:<34} {:>14} {:>14} {:>14}", "packet", "hostgate", "xdp_pass", "hostgate-pass");
    type FrameFn = fn(u16, u8) -> Vec<u8>;
    let frames: [(&str, FrameFn); 3] = [
        ("IPv4 TCP to VIP", |p, r| {
            Packet::ipv4([198, 18, r, 2], [203, 0, 113, 10]).tcp(p, 80, tcp_flags::SYN).payload(&[0; 6]).build()
        }),
        ("IPv6 TCP to VIP", |p, r| {
            let src = std::net::Ipv6Addr::new(0x2001, 0xdb8, 0x18, u16::from(r), 0, 0, 0, 2);
            Packet::ipv6(src, "2001:db8:113::10".parse::<std::net::Ipv6Addr>().unwrap_or(src))
                .tcp(p, 80, tcp_flags::SYN)
                .build()
        }),
        ("IPv4 TCP, not a VIP (pass)", |p, r| {
            Packet::ipv4([198, 18, r, 2], [203, 0, 113, 99]).tcp(p, 80, tcp_flags::SYN).payload(&[0; 6]).build()
        }),
    ];
    for (label, make) in frames {
        let mut new_flow = Vec::new();
        let mut established = Vec::new();
        let mut floor = Vec::new();
        for round in 0..RUNS as u8 {
            let batch: Vec<Vec<u8>> = (10_000..30_000u16).map(|p| make(p, round + 1)).collect();
            new_flow.push(avg_ns(&mut dp, &batch)?);
            established.push(avg_ns(&mut dp, &batch)?);
            floor.push(avg_pass_ns(pass_prog, &batch)?);
        }
        let (f, fs) = median_spread(floor);
        for (kind, v) in [("new flow", new_flow), ("established", established)] {
            if label.contains("not a VIP") && kind == "established" {
                continue;
            }
            let (m, s) = median_spread(v);
            let what = if label.contains("not a VIP") { label.to_string() } else { format!("{label}, {kind}") };
            println!(
                "{what:<34} {:>14} {:>14} {:>14.0}",
                format!("{m:.0} [{s:.0}]"),
                format!("{f:.0} [{fs:.0}]"),
                m - f
            );
        }
    }
    Ok(())
}

fn avg_ns(dp: &mut Dataplane, frames: &[Vec<u8>]) -> anyhow::Result<f64> {
    let mut total = Duration::ZERO;
    for f in frames {
        total += dp.xdp_test_run_timed(f)?.2;
    }
    Ok(total.as_nanos() as f64 / frames.len() as f64)
}

fn avg_pass_ns(prog: &mut Xdp, frames: &[Vec<u8>]) -> anyhow::Result<f64> {
    let mut total = Duration::ZERO;
    for f in frames {
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(f);
        total += prog.test_run(opts)?.duration;
    }
    Ok(total.as_nanos() as f64 / frames.len() as f64)
}

/// Runs `f` on a thread inside the network namespace at `path`.
fn in_netns<T: Send + 'static>(
    path: &str,
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let path = path.to_string();
    std::thread::spawn(move || {
        enter_netns(&path)?;
        f()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("netns thread panicked"))?
}

/// Loads the bench object and attaches `program` to `iface` natively.
fn attach_bench_prog(
    netns: &str,
    object: &'static [u8],
    program: &'static str,
    iface: &'static str,
) -> anyhow::Result<Ebpf> {
    in_netns(netns, move || {
        let mut ebpf = EbpfLoader::new().load(object)?;
        let prog: &mut Xdp = ebpf.program_mut(program).context("program")?.try_into()?;
        prog.load()?;
        prog.attach(iface, XdpMode::Driver)?;
        Ok(ebpf)
    })
}

/// Frames dropped by the XDP sinks of every container so far.
fn delivered(topo: &NodeTopology) -> anyhow::Result<u64> {
    let mut sum = 0;
    for c in &topo.containers {
        let out = c.ns.exec("ethtool", ["-S", "eth0"])?;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some((k, v)) = line.trim().split_once(':') {
                if k.ends_with("xdp_drops") {
                    sum += v.trim().parse::<u64>().unwrap_or(0);
                }
            }
        }
    }
    Ok(sum)
}

/// Pushes `count` frames from the client with the live-frames generator;
/// returns how long it took.
fn generate(topo: &NodeTopology, frame: Vec<u8>, count: u32) -> anyhow::Result<Duration> {
    in_netns(&topo.client.path(), move || {
        let ifindex = hostgate_dataplane::sys::ifindex(CLIENT_IFACE).context("client iface")?;
        let mut ebpf = EbpfLoader::new().load(hostgate_dataplane::BENCH_OBJECT)?;
        let mut tpl: aya::maps::Array<&mut aya::maps::MapData, [u8; 42]> =
            aya::maps::Array::try_from(ebpf.map_mut("hg_bench_tpl").context("template map")?)?;
        let mut header = [0u8; 42];
        header.copy_from_slice(&frame[..42]);
        tpl.set(0, header, 0)?;
        let prog: &mut Xdp = ebpf.program_mut("hg_bench_gen").context("gen")?.try_into()?;
        prog.load()?;
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex
        let mut ctx = Vec::new();
        for v in [0u32, frame.len() as u32, 0, ifindex, 0, 0] {
            ctx.extend_from_slice(&v.to_ne_bytes());
        }
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(&frame);
        opts.ctx_in = Some(&ctx);
        opts.repeat = count;
        opts.attrs = TestRunAttrs::new().xdp_live_frames(64);
        let start = Instant::now();
        prog.test_run(opts)?;
        Ok(start.elapsed())
    })
}

fn udp_frame(len: usize) -> Vec<u8> {
    let payload = vec![0u8; len.saturating_sub(14 + 20 + 8)];
    Packet::ipv4(CLIENT_V4, [203, 0, 113, 10]).macs(CLIENT_MAC, NODE_MAC).udp(1024, 9).payload(&payload).build()
}

fn forwarding_table() -> anyhow::Result<()> {
    let topo = NodeTopology::build("bench", 3)?;
    // Permanent neighbours: the sinks drop ARP too.
    for c in &topo.containers {
        let mac = c.ns.mac("eth0")?.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");
        topo.node.ip([
            "neigh",
            "replace",
            &c.v4.to_string(),
            "lladdr",
            &mac,
            "dev",
            &c.node_iface,
            "nud",
            "permanent",
        ])?;
    }
    let _sinks: Vec<Ebpf> = topo
        .containers
        .iter()
        .map(|c| attach_bench_prog(&c.ns.path(), hostgate_dataplane::BENCH_OBJECT, "hg_bench_sink", "eth0"))
        .collect::<anyhow::Result<_>>()?;
    let backends: Vec<String> = topo.containers.iter().map(|c| c.v4.to_string()).collect();

    println!(
        "{:<12} {:<10} {:>16} {:>16} {:>12} {:>10}",
        "frame", "path", "delivered Mpps", "offered Mpps", "Gbit/s", "ratio"
    );
    for (len, count) in [(60usize, 2_000_000u32), (1514, 1_000_000)] {
        let frame = udp_frame(len);
        // hostgate: XDP Maglev + DNAT + redirect.
        let name = unique_name("benchfw");
        let spec = DataplaneSpec {
            pin_root: PIN_ROOT.into(),
            node: name.clone(),
            uplinks: vec![NODE_UPLINK.into()],
            container_ifaces: topo.container_ifaces(),
            xdp_mode: XdpModeChoice::Native,
        };
        let plan = lb_plan("udp", 9, &backends, &[])?;
        let layout = PinLayout::new(Path::new(PIN_ROOT), &name);
        let dp = in_netns(&topo.node.path(), move || {
            let mut dp = Dataplane::start(&spec)?;
            dp.apply_lb(&plan)?;
            Ok(dp)
        })?;
        let hostgate = measure(&topo, &frame, count)?;
        drop(dp);
        detach_pinned(&layout)?;

        // nftables: numgen + dnat in the node, frames passed up by an XDP no-op.
        let pass = attach_bench_prog(&topo.node.path(), hostgate_dataplane::XDP_PASS_OBJECT, "xdp_pass", "uplink0")?;
        let rules = format!(
            "table ip hgbench {{\n  chain pre {{\n    type nat hook prerouting priority dstnat;\n    \
             ip daddr 203.0.113.10 udp dport 9 dnat to numgen inc mod 3 map {{ 0 : {}, 1 : {}, 2 : {} }}\n  }}\n}}\n",
            backends[0], backends[1], backends[2]
        );
        let rules_file = std::env::temp_dir().join(format!("{}.nft", unique_name("bench")));
        std::fs::write(&rules_file, rules)?;
        let loaded = topo.node.exec("nft", [std::ffi::OsStr::new("-f"), rules_file.as_os_str()]);
        let _ = std::fs::remove_file(&rules_file);
        loaded?;
        let nft = measure(&topo, &frame, count);
        let _ = topo.node.exec("nft", ["delete", "table", "ip", "hgbench"]);
        drop(pass);
        let nft = nft?;

        for (path, (mpps, offered)) in [("hostgate", hostgate), ("nftables", nft)] {
            let gbit = mpps * 1e6 * len as f64 * 8.0 / 1e9;
            let ratio = if path == "hostgate" { String::new() } else { format!("{:.2}x", hostgate.0 / mpps.max(1e-9)) };
            println!(
                "{:<12} {:<10} {:>16.3} {:>16.3} {:>12.2} {:>10}",
                format!("{len} B"),
                path,
                mpps,
                offered,
                gbit,
                ratio
            );
        }
    }
    println!("\nratio: hostgate's delivered rate over the peer's. Gbit/s counts Ethernet frames without FCS.");
    Ok(())
}

/// Median delivered and offered Mpps over RUNS runs.
fn measure(topo: &NodeTopology, frame: &[u8], count: u32) -> anyhow::Result<(f64, f64)> {
    let mut delivered_mpps = Vec::new();
    let mut offered_mpps = Vec::new();
    for _ in 0..RUNS {
        let before = delivered(topo)?;
        let took = generate(topo, frame.to_vec(), count)?;
        std::thread::sleep(Duration::from_millis(200));
        let got = delivered(topo)? - before;
        delivered_mpps.push(got as f64 / took.as_secs_f64() / 1e6);
        offered_mpps.push(f64::from(count) / took.as_secs_f64() / 1e6);
    }
    Ok((median_spread(delivered_mpps).0, median_spread(offered_mpps).0))
}

/// A rules file of `n` rules where the benchmark traffic (UDP to port 9
/// from 198.18.0.2) matches only the last one: the worst case for a linear
/// chain. The same ruleset as nftables rules.
fn fw_rulesets(n: usize) -> (String, String) {
    let mut rules = String::from("customer bench\ndefault drop\n");
    let mut nft = String::from("table ip hgfw {\n  chain pre {\n    type filter hook prerouting priority -300;\n");
    for i in 0..n.saturating_sub(1) {
        let src = format!("198.19.{}.{}", (i / 256) % 256, i % 256);
        rules += &format!("drop udp port 9 from {src}\n");
        nft += &format!("    ip daddr 203.0.113.10 udp dport 9 ip saddr {src} drop\n");
    }
    rules += "allow udp port 9\n";
    nft += "    ip daddr 203.0.113.10 udp dport 9 accept\n    ip daddr 203.0.113.10 drop\n  }\n}\n";
    (rules, nft)
}

fn guarded_ip() -> anyhow::Result<hostgate_rules::tables::Guarded> {
    Ok(hostgate_rules::tables::Guarded { customer_ips: vec!["203.0.113.10".parse()?], container_addrs: vec![] })
}

fn fw_tables(rules: &str) -> anyhow::Result<hostgate_rules::tables::Tables> {
    let (rs, _) = hostgate_rules::parse("bench.rules", rules).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(hostgate_rules::tables::build(&[(rs, guarded_ip()?)])?)
}

fn fw() -> anyhow::Result<()> {
    let mut pkgs = deps::BUILD_AND_TEST.to_vec();
    pkgs.push(("xdp-tools", "xdp-filter, the XDP firewall compared against"));
    deps::ensure(&pkgs)?;
    if !deps::is_root() {
        bail!("the benchmark loads BPF programs and creates namespaces: run it as root");
    }
    println!("\nhostgate firewall benchmark: traffic matches the last of N rules (worst case for a linear chain)\n");
    let sizes = [10usize, 1_000, 10_000];

    println!("(a) BPF_PROG_TEST_RUN, ns per packet (median of {RUNS} rounds of 20 000 single runs), and time to check and apply\n");
    println!(
        "{:>8} {:>12} {:>12} {:>14} {:>12} {:>12}",
        "rules", "hostgate", "xdp_pass", "hostgate-pass", "check ms", "apply ms"
    );
    let mut dp = ScratchDataplane::new(Path::new(PIN_ROOT), "benchfw")?;
    let mut pass = EbpfLoader::new().load(hostgate_dataplane::XDP_PASS_OBJECT)?;
    let pass_prog: &mut Xdp = pass.program_mut("xdp_pass").context("xdp_pass")?.try_into()?;
    pass_prog.load()?;
    let frames: Vec<Vec<u8>> = (10_000..30_000u16)
        .map(|p| Packet::ipv4(CLIENT_V4, [203, 0, 113, 10]).udp(p, 9).payload(&[0; 18]).build())
        .collect();
    for n in sizes {
        let (rules, _) = fw_rulesets(n);
        let t0 = Instant::now();
        let (rs, _) = hostgate_rules::parse("bench.rules", &rules).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let check = t0.elapsed();
        let t1 = Instant::now();
        let tables = hostgate_rules::tables::build(&[(rs, guarded_ip()?)])?;
        dp.apply_fw(&tables)?;
        let apply = t1.elapsed();
        let mut ns = Vec::new();
        let mut floor = Vec::new();
        for _ in 0..RUNS {
            ns.push(avg_ns(&mut dp, &frames)?);
            floor.push(avg_pass_ns(pass_prog, &frames)?);
        }
        let ((m, ms), (f, _)) = (median_spread(ns), median_spread(floor));
        println!(
            "{n:>8} {:>12} {:>12.0} {:>14.0} {:>12.1} {:>12.1}",
            format!("{m:.0} [{ms:.0}]"),
            f,
            m - f,
            check.as_secs_f64() * 1e3,
            apply.as_secs_f64() * 1e3
        );
    }
    monitor_cost(&mut dp, &frames)?;
    drop(dp);

    println!("\n(b) client -> customer IP on the node over veth, UDP with random source ports, delivered to the node's UDP layer (median of {RUNS} runs)\n");
    println!(
        "{:>8} {:>16} {:>16} {:>10} {:>16} {:>10} {:>14}",
        "rules", "hostgate Mpps", "nftables Mpps", "ratio", "xdp-filter Mpps", "ratio", "nft -f ms"
    );
    let topo = NodeTopology::build("benchfw", 0)?;
    topo.node.ip(["addr", "add", "203.0.113.10/32", "dev", NODE_UPLINK])?;
    let frame = udp_frame(60);
    for n in sizes {
        let (rules, nft_rules) = fw_rulesets(n);
        let name = unique_name("benchfw");
        let spec = DataplaneSpec {
            pin_root: PIN_ROOT.into(),
            node: name.clone(),
            uplinks: vec![NODE_UPLINK.into()],
            container_ifaces: vec![],
            xdp_mode: XdpModeChoice::Native,
        };
        let tables = fw_tables(&rules)?;
        let layout = PinLayout::new(Path::new(PIN_ROOT), &name);
        let dp = in_netns(&topo.node.path(), move || {
            let mut dp = Dataplane::start(&spec)?;
            dp.apply_fw(&tables)?;
            Ok(dp)
        })?;
        let hostgate = measure_udp(&topo, &frame, 1_000_000)?;
        drop(dp);
        detach_pinned(&layout)?;

        let pass = attach_bench_prog(&topo.node.path(), hostgate_dataplane::XDP_PASS_OBJECT, "xdp_pass", "uplink0")?;
        let file = std::env::temp_dir().join(format!("{}.nft", unique_name("benchfw")));
        std::fs::write(&file, nft_rules)?;
        let t = Instant::now();
        let loaded = topo.node.exec("nft", [std::ffi::OsStr::new("-f"), file.as_os_str()]);
        let nft_load = t.elapsed();
        let _ = std::fs::remove_file(&file);
        loaded?;
        let nft = measure_udp(&topo, &frame, 1_000_000);
        let _ = topo.node.exec("nft", ["delete", "table", "ip", "hgfw"]);
        drop(pass);
        let nft = nft?;
        let xdp_filter = measure_xdp_filter(&topo, &frame, n)?;
        println!(
            "{n:>8} {hostgate:>16.3} {nft:>16.3} {:>10} {xdp_filter:>16.3} {:>10} {:>14.1}",
            format!("{:.2}x", hostgate / nft.max(1e-9)),
            format!("{:.2}x", hostgate / xdp_filter.max(1e-9)),
            nft_load.as_secs_f64() * 1e3
        );
    }
    println!(
        "\nxdp-filter (xdp-tools) holds the N-1 source addresses as its drop list (its exact-match model cannot also \
         say \"allow port 9, drop the rest\"; for this traffic the outcome is the same)."
    );
    Ok(())
}

/// Only part (c) of `bench fw`: the monitor's cost (a minute, not the
/// whole firewall comparison).
fn monitor() -> anyhow::Result<()> {
    if !deps::is_root() {
        bail!("the benchmark loads BPF programs: run it as root");
    }
    let mut dp = ScratchDataplane::new(Path::new(PIN_ROOT), "benchmon")?;
    let frames: Vec<Vec<u8>> = (10_000..30_000u16)
        .map(|p| Packet::ipv4(CLIENT_V4, [203, 0, 113, 10]).udp(p, 9).payload(&[0; 18]).build())
        .collect();
    monitor_cost(&mut dp, &frames)
}

/// What `hostgate monitor` costs the programs, per dropped packet: the
/// report off (nobody watches), on with nobody reading the ring buffer (it
/// fills, and every later event fails to reserve), and on with a reader
/// that waits in poll(2) and drains it, as `hostgate monitor` does.
fn monitor_cost(dp: &mut Dataplane, frames: &[Vec<u8>]) -> anyhow::Result<()> {
    use hostgate_dataplane::abi::{EventKind, MonitorCfg};
    let (rules, _) = fw_rulesets(10);
    let (drop_all, _) = hostgate_rules::parse("bench.rules", &rules.replace("allow udp port 9\n", ""))
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    dp.apply_fw(&hostgate_rules::tables::build(&[(drop_all, guarded_ip()?)])?)?;
    println!("\n(c) monitor cost: ns per dropped packet (TestRun, median of {RUNS})\n");
    let run = |dp: &mut Dataplane| -> anyhow::Result<f64> {
        let mut ns = Vec::new();
        for _ in 0..RUNS {
            ns.push(avg_ns(dp, frames)?);
        }
        Ok(median_spread(ns).0)
    };
    dp.set_monitor(MonitorCfg::default())?;
    let off = run(dp)?;
    dp.set_monitor(MonitorCfg::wanting(EventKind::ALL, 1))?;
    let unread = run(dp)?;
    let mut ring = hostgate_dataplane::monitor::open_events(dp.layout())?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // The reader waits in poll(2) on the ring buffer, as `hostgate monitor`
    // (the daemon's AsyncFd on epoll) does: it sleeps until the programs
    // wake it (once a batch waits, monitor.h) or its timeout passes, then
    // drains everything there is. Wake-ups are part of what the programs
    // pay for, so a spinning reader would measure something else.
    let reader = {
        let stop = stop.clone();
        std::thread::spawn(move || -> std::io::Result<u64> {
            use std::os::fd::AsRawFd;
            let mut events = 0u64;
            let mut pfd = libc::pollfd { fd: ring.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // SAFETY: one valid pollfd for the ring buffer's descriptor,
                // which `ring` keeps open; 100 ms so that `stop` is seen.
                let n = unsafe { libc::poll(&mut pfd, 1, 100) };
                if n < 0 {
                    let e = std::io::Error::last_os_error();
                    if e.kind() != std::io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
                while ring.next().is_some() {
                    events += 1;
                }
            }
            Ok(events)
        })
    };
    let read = run(dp)?;
    // One decision in 64 reported (MonitorCfg's sampling), still read.
    dp.set_monitor(MonitorCfg::wanting(EventKind::ALL, 64))?;
    let sampled = run(dp)?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let events = reader.join().map_err(|_| anyhow::anyhow!("reader panicked"))??;
    dp.set_monitor(MonitorCfg::default())?;
    println!("{:>28} {:>10}", "monitor", "ns/packet");
    println!("{:>28} {off:>10.0}", "off (nobody watches)");
    println!("{:>28} {unread:>10.0} ({:.2}x)", "on, ring not read", unread / off.max(1e-9));
    println!("{:>28} {read:>10.0} ({:.2}x)", "on, ring read (poll)", read / off.max(1e-9));
    println!("{:>28} {sampled:>10.0} ({:.2}x)", "on, 1 in 64, ring read", sampled / off.max(1e-9));
    println!("{:>28} {events:>10}", "events read");
    Ok(())
}

/// xdp-filter on the node's uplink with the ruleset's N-1 dropped sources.
fn measure_xdp_filter(topo: &NodeTopology, frame: &[u8], n: usize) -> anyhow::Result<f64> {
    topo.node.exec("xdp-filter", ["load", "-f", "ipv4,udp", "-m", "native", NODE_UPLINK])?;
    let result = (|| {
        for i in 0..n.saturating_sub(1) {
            let src = format!("198.19.{}.{}", (i / 256) % 256, i % 256);
            topo.node.exec("xdp-filter", ["ip", "-m", "src", &src])?;
        }
        measure_udp(topo, frame, 1_000_000)
    })();
    let _ = topo.node.exec("xdp-filter", ["unload", NODE_UPLINK]);
    result
}

/// Datagrams the node's UDP layer received (delivered or port-unreachable).
fn udp_in(topo: &NodeTopology) -> anyhow::Result<u64> {
    let out = topo.node.exec("cat", ["/proc/net/snmp"])?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (lines.next().context("Udp header")?, lines.next().context("Udp values")?);
    let get = |field: &str| -> u64 {
        names
            .split_whitespace()
            .position(|n| n == field)
            .and_then(|i| values.split_whitespace().nth(i))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok(get("InDatagrams") + get("NoPorts"))
}

/// Median Mpps of UDP datagrams delivered to the node over RUNS runs.
fn measure_udp(topo: &NodeTopology, frame: &[u8], count: u32) -> anyhow::Result<f64> {
    let mut mpps = Vec::new();
    for _ in 0..RUNS {
        let before = udp_in(topo)?;
        let took = generate(topo, frame.to_vec(), count)?;
        std::thread::sleep(Duration::from_millis(200));
        mpps.push((udp_in(topo)? - before) as f64 / took.as_secs_f64() / 1e6);
    }
    Ok(median_spread(mpps).0)
}

//! `cargo xtask bench http`: the HTTP(S) reverse proxy against NGINX and
//! HAProxy (Debian's packages), one after the other on the same three
//! namespaces, the same backend and the same load.
//!
//! client (wrk) --198.18.0.0/24-- proxy --198.18.1.0/24-- backend (NGINX)
//!
//! The backend is an NGINX answering a fixed 612-byte page; each proxy
//! runs with two worker threads/processes, keeps backend connections
//! alive, sets X-Forwarded-For/-Proto, and logs nothing (HAProxy logs only
//! to syslog, so logging is off for all three; hostgate still counts).
//! TLS: one ECDSA P-256 certificate, TLS 1.3, no session resumption by
//! wrk. Three loads, each after a 2 s warm-up, wrk -t1 -c32 for 8 s with
//! --latency: HTTP keep-alive, HTTPS keep-alive, and HTTPS with
//! `Connection: close` (a new TCP connection and TLS handshake per request:
//! handshakes/s). Three rounds, each peer once per round in a rotated
//! order; the table gives each column's median over the rounds and the
//! spread, with the CPU
//! time the proxy's processes and wrk spent per request (/proc).
//! hostgate's proxy in the bench attaches its XDP program to the
//! client-facing veth (the daemon always does); it passes every frame, and
//! stays attached (pinned) while NGINX and HAProxy run, so all three see
//! the same veth path. All processes share the machine's cores with wrk,
//! so the numbers are relative, not absolute.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use hostgate_testbed::{unique_name, ChildGuard, Netns};

use crate::{
    bench::{self, BenchDaemon},
    deps,
};

const PROXY: &str = "198.18.0.1";
const CLIENT: &str = "198.18.0.2";
const PROXY_INNER: &str = "198.18.1.1";
const BACKEND: &str = "198.18.1.2";
const HOST: &str = "bench.example.com";
const WARMUP_SECS: u32 = 2;
const RUN_SECS: u32 = 8;
/// Each round runs every peer once, in a rotated order; the table shows
/// each column's median over the rounds (the brief's method: three runs,
/// median and spread).
/// `HOSTGATE_BENCH_ROUNDS=1` for a quick look while profiling.
fn rounds() -> usize {
    std::env::var("HOSTGATE_BENCH_ROUNDS").ok().and_then(|r| r.parse().ok()).filter(|&r| r > 0).unwrap_or(3)
}
const CONNECTIONS: u32 = 32;

pub fn run() -> anyhow::Result<()> {
    let mut packages = deps::BUILD_AND_TEST.to_vec();
    packages.extend([
        ("nginx-light", "NGINX, the backend and a peer of `bench http` (started only in its namespaces)"),
        ("haproxy", "HAProxy, a peer of `bench http` (started only in its namespace)"),
    ]);
    // The packages would start their services in the host's namespace.
    let own_policy = !Path::new("/usr/sbin/policy-rc.d").exists();
    if own_policy && deps::is_root() {
        std::fs::write("/usr/sbin/policy-rc.d", "#!/bin/sh\nexit 101\n")?;
        Command::new("chmod").args(["755", "/usr/sbin/policy-rc.d"]).status()?;
    }
    let installed = deps::ensure(&packages);
    if own_policy {
        let _ = std::fs::remove_file("/usr/sbin/policy-rc.d");
    }
    installed?;
    if !deps::is_root() {
        bail!("the HTTP benchmark builds namespaces: run it as root");
    }
    // HOSTGATE_BIN: a release binary built already (skips the build).
    let bin = match std::env::var_os("HOSTGATE_BIN") {
        Some(b) => PathBuf::from(b),
        None => {
            deps::cargo(&["build", "--release", "--package", "hostgate"])?;
            deps::target_dir().join("release/hostgate")
        }
    };
    let bed = Bed::new()?;
    bed.make_certificate()?;
    let _backend = bed.spawn(
        &bed.backend,
        "/usr/sbin/nginx",
        &["-c", &bed.write("backend.conf", &backend_conf(&bed))?],
        "backend.log",
    )?;
    wait_for(&bed.proxy, &format!("http://{BACKEND}:8080/"), None).context("the backend NGINX did not answer")?;
    let rounds = rounds();
    println!(
        "xtask: http, {rounds} rounds of wrk -t1 -c{CONNECTIONS} for {RUN_SECS} s per load against hostgate, NGINX and HAProxy (about six minutes)"
    );
    let peers = [Peer::Hostgate(bin), Peer::Nginx, Peer::Haproxy];
    // results[peer][load]: one Measured per round.
    let mut results: Vec<Vec<Vec<Measured>>> =
        peers.iter().map(|_| Load::ALL.iter().map(|_| Vec::new()).collect()).collect();
    for round in 0..rounds {
        // Each round starts with another peer, so a slow stretch of the
        // machine does not always fall on the same one.
        for i in (0..peers.len()).map(|i| (i + round) % peers.len()) {
            let peer = &peers[i];
            let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
            let load = load.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
            println!("round {}/{rounds}, {} (load average before: {load})", round + 1, peer.name());
            let process = peer.start(&bed).with_context(|| format!("starting {}", peer.name()))?;
            let pid = process.pid().context("the peer's process")?;
            for (l, load) in Load::ALL.into_iter().enumerate() {
                let m = measure(&bed, load, pid).with_context(|| format!("{}, {}", peer.name(), load.name()))?;
                println!(
                    "  {:<22} {:>8.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  proxy {:>5.1} µs/req  wrk {:>5.1} µs/req  {}",
                    load.name(),
                    m.rps,
                    m.p50_ms,
                    m.p99_ms,
                    m.proxy_us,
                    m.wrk_us,
                    m.errors
                );
                results[i][l].push(m);
            }
        }
    }
    let names: Vec<&str> = peers.iter().map(Peer::name).collect();
    print_table(&names, &results);
    Ok(())
}

#[derive(Clone, Copy)]
enum Load {
    HttpKeepAlive,
    HttpsKeepAlive,
    HttpsNewConnections,
}

impl Load {
    const ALL: [Load; 3] = [Load::HttpKeepAlive, Load::HttpsKeepAlive, Load::HttpsNewConnections];

    fn name(self) -> &'static str {
        match self {
            Load::HttpKeepAlive => "HTTP keep-alive",
            Load::HttpsKeepAlive => "HTTPS keep-alive",
            Load::HttpsNewConnections => "HTTPS new connections",
        }
    }

    fn args(self) -> Vec<String> {
        let mut a = vec!["-H".to_string(), format!("Host: {HOST}")];
        match self {
            Load::HttpKeepAlive => a.push(format!("http://{PROXY}/")),
            Load::HttpsKeepAlive => a.push(format!("https://{PROXY}/")),
            Load::HttpsNewConnections => {
                a.extend(["-H".to_string(), "Connection: close".to_string(), format!("https://{PROXY}/")]);
            }
        }
        a
    }
}

#[derive(Debug, Default)]
struct Measured {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Requests wrk completed in the run.
    requests: f64,
    /// CPU (user + system) of the proxy's processes per request, µs.
    proxy_us: f64,
    /// CPU of wrk per request, µs.
    wrk_us: f64,
    /// wrk's error lines, or empty.
    errors: String,
}

/// The three namespaces and the files of the run.
struct Bed {
    client: Netns,
    proxy: Netns,
    backend: Netns,
    dir: tempfile::TempDir,
}

/// The daemon's pins go with the bed, however the run ended.
impl Drop for Bed {
    fn drop(&mut self) {
        crate::bench::remove_pins("bench-http");
    }
}

impl Bed {
    fn new() -> anyhow::Result<Bed> {
        let client = Netns::create(&unique_name("bhttpc"))?;
        let proxy = Netns::create(&unique_name("bhttpp"))?;
        let backend = Netns::create(&unique_name("bhttpb"))?;
        proxy.ip(["link", "add", "hgc0", "type", "veth", "peer", "name", "eth0", "netns", client.name()])?;
        proxy.ip(["link", "add", "hgb0", "type", "veth", "peer", "name", "eth0", "netns", backend.name()])?;
        proxy.ip(["addr", "add", &format!("{PROXY}/24"), "dev", "hgc0"])?;
        proxy.ip(["addr", "add", &format!("{PROXY_INNER}/24"), "dev", "hgb0"])?;
        client.ip(["addr", "add", &format!("{CLIENT}/24"), "dev", "eth0"])?;
        backend.ip(["addr", "add", &format!("{BACKEND}/24"), "dev", "eth0"])?;
        for (ns, dev) in [(&proxy, "hgc0"), (&proxy, "hgb0"), (&client, "eth0"), (&backend, "eth0")] {
            ns.ip(["link", "set", dev, "up"])?;
            ns.ip(["link", "set", "lo", "up"])?;
        }
        Ok(Bed { client, proxy, backend, dir: tempfile::tempdir()? })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a file of the run; its path.
    fn write(&self, name: &str, text: &str) -> anyhow::Result<String> {
        std::fs::write(self.path(name), text)?;
        Ok(self.path(name).display().to_string())
    }

    /// A self-signed ECDSA P-256 certificate for HOST: bench.pem, bench.key,
    /// and bench-haproxy.pem (both in one, as HAProxy wants them).
    fn make_certificate(&self) -> anyhow::Result<()> {
        let out = Command::new("openssl")
            .current_dir(self.dir.path())
            .args(["req", "-x509", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"])
            .args(["-keyout", "bench.key", "-out", "bench.pem", "-days", "2", "-subj"])
            .arg(format!("/CN={HOST}"))
            .arg("-addext")
            .arg(format!("subjectAltName=DNS:{HOST}"))
            .output()
            .context("running openssl")?;
        if !out.status.success() {
            bail!("openssl: {}", String::from_utf8_lossy(&out.stderr));
        }
        let both = [std::fs::read(self.path("bench.pem"))?, std::fs::read(self.path("bench.key"))?].concat();
        std::fs::write(self.path("bench-haproxy.pem"), both)?;
        Ok(())
    }

    /// `program args` in `ns`, logging to `log`.
    fn spawn(&self, ns: &Netns, program: &str, args: &[&str], log: &str) -> anyhow::Result<ChildGuard> {
        let log = std::fs::File::create(self.path(log))?;
        let child = Command::new("nsenter")
            .arg(format!("--net={}", ns.path()))
            .arg("--")
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning {program}"))?;
        Ok(ChildGuard::new(program, child))
    }
}

/// Polls `url` with curl from `ns` until it answers 200 (10 s at most).
fn wait_for(ns: &Netns, url: &str, host: Option<&str>) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut cmd = ns.command("curl");
        cmd.args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2"]);
        if let Some(h) = host {
            cmd.arg("-H").arg(format!("Host: {h}"));
        }
        let out = cmd.arg(url).output().context("running curl")?;
        if out.stdout == b"200" {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{url} did not answer 200 (last: {:?})", String::from_utf8_lossy(&out.stdout));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The backend: one worker, a fixed page the size of NGINX's welcome page.
fn backend_conf(bed: &Bed) -> String {
    let dir = bed.dir.path().display();
    format!(
        "daemon off;\nmaster_process on;\nuser root;\nworker_processes 1;\npid {dir}/backend.pid;\n\
         error_log {dir}/backend-error.log warn;\nevents {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  keepalive_requests 1000000;\n  client_body_temp_path {dir}/b-body;\n  proxy_temp_path {dir}/b-proxy;\n\
           server {{\n    listen {BACKEND}:8080 reuseport backlog=4096;\n    location / {{ default_type text/html; return 200 '{}'; }}\n  }}\n}}\n",
        "x".repeat(612)
    )
}

enum Peer {
    Hostgate(PathBuf),
    Nginx,
    Haproxy,
}

impl Peer {
    fn name(&self) -> &'static str {
        match self {
            Peer::Hostgate(_) => "hostgate (h1 fast path, pingora 0.9, rustls)",
            Peer::Nginx => "NGINX 1.22",
            Peer::Haproxy => "HAProxy 2.6",
        }
    }

    fn start(&self, bed: &Bed) -> anyhow::Result<ChildGuard> {
        let dir = bed.dir.path().display().to_string();
        let process = match self {
            Peer::Hostgate(bin) => start_hostgate(bed, bin)?,
            Peer::Nginx => {
                let conf = format!(
                    "daemon off;\nmaster_process on;\nuser root;\nworker_processes 2;\npid {dir}/nginx.pid;\n\
                     error_log {dir}/nginx-error.log warn;\nevents {{ worker_connections 8192; }}\n\
                     http {{\n  access_log off;\n  keepalive_requests 1000000;\n  client_body_temp_path {dir}/n-body;\n  proxy_temp_path {dir}/n-proxy;\n\
                       ssl_protocols TLSv1.2 TLSv1.3;\n\
                       upstream site {{ server {BACKEND}:8080; keepalive 128; }}\n\
                       server {{\n    listen {PROXY}:80 reuseport backlog=4096;\n    listen {PROXY}:443 ssl http2 reuseport backlog=4096;\n\
                         server_name {HOST};\n    ssl_certificate {dir}/bench.pem;\n    ssl_certificate_key {dir}/bench.key;\n\
                         location / {{\n      proxy_pass http://site;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n\
                           proxy_set_header Host $host;\n      proxy_set_header X-Forwarded-For $remote_addr;\n      proxy_set_header X-Forwarded-Proto $scheme;\n    }}\n  }}\n}}\n"
                );
                let conf = bed.write("nginx.conf", &conf)?;
                bed.spawn(&bed.proxy, "/usr/sbin/nginx", &["-c", &conf], "nginx.log")?
            }
            Peer::Haproxy => {
                // maxconn sizes HAProxy's file descriptor limit (about two
                // per connection): 20000 asked for 40018 descriptors, more
                // than a container's usual hard limit of 20000, and HAProxy
                // refused to start ("Cannot raise FD limit"). The load is 32
                // connections; NGINX has 8192 per worker.
                let conf = format!(
                    "global\n  nbthread 2\n  maxconn 8192\n\
                     defaults\n  mode http\n  timeout connect 2s\n  timeout client 60s\n  timeout server 60s\n  option http-keep-alive\n  http-reuse safe\n\
                     frontend site\n  bind {PROXY}:80\n  bind {PROXY}:443 ssl crt {dir}/bench-haproxy.pem alpn h2,http/1.1\n\
                       option forwardfor\n  http-request set-header X-Forwarded-Proto https if {{ ssl_fc }}\n  http-request set-header X-Forwarded-Proto http if !{{ ssl_fc }}\n  default_backend servers\n\
                     backend servers\n  server b1 {BACKEND}:8080\n"
                );
                let conf = bed.write("haproxy.cfg", &conf)?;
                bed.spawn(&bed.proxy, "/usr/sbin/haproxy", &["-db", "-f", &conf], "haproxy.log")?
            }
        };
        // A peer that never answers usually said why in its log (HAProxy
        // exits at once on a bad limit): show it with the error.
        let log = match self {
            Peer::Hostgate(_) => "hostgate.log",
            Peer::Nginx => "nginx.log",
            Peer::Haproxy => "haproxy.log",
        };
        let said = || format!("its log:\n{}", std::fs::read_to_string(bed.path(log)).unwrap_or_default());
        wait_for(&bed.client, &format!("http://{PROXY}/"), Some(HOST)).with_context(said)?;
        wait_for(&bed.client, &format!("https://{PROXY}/"), Some(HOST)).with_context(said)?;
        Ok(process)
    }
}

fn start_hostgate(bed: &Bed, bin: &Path) -> anyhow::Result<ChildGuard> {
    // Each round starts from nothing: no state, no pins of the last round.
    let _ = std::fs::remove_dir_all(bed.path("hostgate-state"));
    crate::bench::remove_pins("bench-http");
    let dataplane = "uplinks = [\"hgc0\"]\nxdp_mode = \"native\"\n";
    let service = format!("[http]\nlisten = [\"{PROXY}:80\"]\nlisten_tls = [\"{PROXY}:443\"]\naccess_log = \"off\"\n");
    let daemon = BenchDaemon::start(&bed.proxy, bed.dir.path(), bin, "bench-http", dataplane, &service)?;
    daemon.cli(&["customer", "add", "bench"])?;
    daemon.cli(&["http", "vhost", "add", HOST, "--customer", "bench", "--backend", &format!("{BACKEND}:8080")])?;
    let (cert, key) = (bed.path("bench.pem").display().to_string(), bed.path("bench.key").display().to_string());
    daemon.cli(&["http", "cert", "add", "--cert", &cert, "--key", &key, "--default"])?;
    Ok(daemon.process)
}

/// A warm-up, then the measured run, with the CPU the proxy (`pid` and
/// its children) and wrk spent in it.
fn measure(bed: &Bed, load: Load, pid: u32) -> anyhow::Result<Measured> {
    let args = load.args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    wrk(bed, WARMUP_SECS, &args)?;
    let (proxy, generator) = (bench::tree_cpu_ticks(pid), bench::children_cpu_secs());
    let mut m = wrk(bed, RUN_SECS, &args)?;
    let per_request = |secs: f64| secs / m.requests.max(1.0) * 1e6;
    m.proxy_us = per_request(bench::ticks_to_secs(bench::tree_cpu_ticks(pid).saturating_sub(proxy)));
    m.wrk_us = per_request(bench::children_cpu_secs() - generator);
    Ok(m)
}

fn wrk(bed: &Bed, secs: u32, args: &[&str]) -> anyhow::Result<Measured> {
    let out = bed
        .client
        .command("wrk")
        .args(["-t1", &format!("-c{CONNECTIONS}"), &format!("-d{secs}s"), "--timeout", "5s", "--latency"])
        .args(args)
        .output()
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    parse_wrk(&text).with_context(|| format!("wrk said:\n{text}{}", String::from_utf8_lossy(&out.stderr)))
}

/// `1.23ms`, `456.00us`, `1.2s` in milliseconds.
fn duration_ms(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (n, unit) = text.split_at(split);
    let n: f64 = n.parse().ok()?;
    match unit {
        "us" => Some(n / 1000.0),
        "ms" => Some(n),
        "s" => Some(n * 1000.0),
        "m" => Some(n * 60_000.0),
        _ => None,
    }
}

fn parse_wrk(text: &str) -> anyhow::Result<Measured> {
    let mut m = Measured::default();
    for line in text.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("Requests/sec:"), Some(v)) => m.rps = v.parse()?,
            (Some("50%"), Some(v)) => m.p50_ms = duration_ms(v).context("p50")?,
            (Some("99%"), Some(v)) => m.p99_ms = duration_ms(v).context("p99")?,
            (Some(n), Some("requests")) => m.requests = n.parse()?,
            _ => {}
        }
        if line.starts_with("Socket errors") || line.starts_with("Non-2xx") {
            m.errors += line;
            m.errors += "; ";
        }
    }
    if m.rps == 0.0 {
        bail!("no Requests/sec line");
    }
    Ok(m)
}

/// The median of each peer's rounds, with the spread (lowest-highest),
/// then hostgate's ratio to each peer: the median of the rounds' ratios
/// (each round's peers ran a minute or two apart, so a slow stretch of the
/// machine weighs on both sides of a ratio), each round's, and the ratio
/// of the medians.
fn print_table(names: &[&str], results: &[Vec<Vec<Measured>>]) {
    let median = |rows: &[Measured], f: fn(&Measured) -> f64| bench::median_spread(rows.iter().map(f).collect());
    let range = |rows: &[Measured], f: fn(&Measured) -> f64| {
        let v: Vec<f64> = rows.iter().map(f).collect();
        (v.iter().copied().fold(f64::INFINITY, f64::min), v.iter().copied().fold(0.0, f64::max))
    };
    println!();
    println!(
        "HTTP(S) proxy: wrk -t1 -c{CONNECTIONS}, {RUN_SECS} s per load after {WARMUP_SECS} s warm-up, 612-byte page from an NGINX backend; median of {} rounds (lowest-highest)",
        results[0][0].len()
    );
    println!("| proxy | load | req/s | p50 ms | p99 ms | proxy CPU µs/req | wrk CPU µs/req | errors |");
    println!("|-------|------|-------|--------|--------|------------------|----------------|--------|");
    for (name, loads) in names.iter().zip(results) {
        for (load, rows) in Load::ALL.iter().zip(loads) {
            let (rps, (lo, hi)) = (median(rows, |m| m.rps).0, range(rows, |m| m.rps));
            let (p99, (p99_lo, p99_hi)) = (median(rows, |m| m.p99_ms).0, range(rows, |m| m.p99_ms));
            let errors: Vec<&str> = rows.iter().map(|m| m.errors.as_str()).filter(|e| !e.is_empty()).collect();
            let errors = if errors.is_empty() { "none".to_string() } else { errors.join(" ") };
            println!(
                "| {name} | {} | {rps:.0} ({lo:.0}-{hi:.0}) | {:.2} | {p99:.2} ({p99_lo:.2}-{p99_hi:.2}) | {:.1} | {:.1} | {errors} |",
                load.name(),
                median(rows, |m| m.p50_ms).0,
                median(rows, |m| m.proxy_us).0,
                median(rows, |m| m.wrk_us).0,
            );
        }
    }
    let hostgate = &results[0];
    for (name, loads) in names.iter().zip(results).skip(1) {
        for (load, (h, p)) in Load::ALL.iter().zip(hostgate.iter().zip(loads)) {
            let per_round =
                |f: fn(&Measured) -> f64| -> Vec<f64> { h.iter().zip(p).map(|(h, p)| f(h) / f(p).max(1e-9)).collect() };
            let (rps, p99, cpu) = (per_round(|m| m.rps), per_round(|m| m.p99_ms), per_round(|m| m.proxy_us));
            let rounds: Vec<String> = rps.iter().zip(&p99).map(|(r, p)| format!("{r:.2}x/{p:.2}x")).collect();
            let of_medians = |f: fn(&Measured) -> f64| median(h, f).0 / median(p, f).0.max(1e-9);
            println!(
                "hostgate / {name}, {}: {:.2}x req/s, p99 {:.2}x, CPU per request {:.2}x (median of the rounds' ratios; \
                 rounds, req/s/p99: {}; ratio of the medians: {:.2}x, p99 {:.2}x)",
                load.name(),
                bench::median_spread(rps.clone()).0,
                bench::median_spread(p99.clone()).0,
                bench::median_spread(cpu).0,
                rounds.join(", "),
                of_medians(|m| m.rps),
                of_medians(|m| m.p99_ms),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_of_an_even_count_is_between_the_middle_two() {
        assert_eq!(bench::median_spread(vec![3.0, 1.0, 2.0]), (2.0, 2.0));
        assert_eq!(bench::median_spread(vec![4.0, 1.0, 2.0, 3.0]), (2.5, 3.0));
        assert_eq!(bench::median_spread(vec![7.0]), (7.0, 0.0));
    }

    #[test]
    fn wrk_output_parses() {
        let text = "Running 10s test @ http://198.18.0.1/\n  1 threads and 32 connections\n  Latency Distribution\n     50%  512.00us\n     75%    1.00ms\n     90%    1.50ms\n     99%    3.25ms\n  123 requests in 10.00s, 1.00MB read\n  Socket errors: connect 0, read 1, write 0, timeout 0\nRequests/sec:  12345.67\n";
        let m = parse_wrk(text).expect("parses");
        assert_eq!((m.rps, m.p50_ms, m.p99_ms, m.requests), (12345.67, 0.512, 3.25, 123.0));
        assert!(m.errors.contains("read 1"));
    }
}

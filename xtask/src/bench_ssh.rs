//! `cargo xtask bench ssh`: the SSH proxy against the two ways a customer
//! reaches a container without it, in one run on one topology (client
//! namespace -> node namespace -> container namespace, real OpenSSH
//! everywhere):
//!
//! - direct: `ssh root@CONTAINER` (the client routes to the container
//!   through the node; the container's sshd trusts the customer's key);
//! - ProxyJump: `ssh -J root@NODE:2222 root@CONTAINER`, an OpenSSH sshd in
//!   the node namespace as the jump host (what providers run today);
//! - hostgate: `ssh web@NODE`, the daemon's proxy, which logs in to the
//!   container's sshd with a short-lived certificate of its CA.
//!
//! Measured: connection setup rate (sequential `ssh ... true`, full
//! handshake + authentication + one exec, no connection sharing) and the
//! throughput of a large file by scp (SFTP protocol) up and sftp down,
//! median of three runs each, with hostgate's ratios to both peers. The
//! runs of one measurement take turns path after path, so a change in
//! the machine's load falls on all three alike.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use hostgate_testbed::{
    topology::{NODE_UPLINK, NODE_V4},
    unique_name, ChildGuard, NodeTopology,
};

use crate::{bench::PIN_ROOT, deps};

/// Sequential logins per setup-rate run.
const LOGINS: usize = 30;
const RUNS: usize = 3;
/// The transferred file (from the page cache; written to /dev/null).
const FILE_MIB: u64 = 1024;

pub fn run() -> anyhow::Result<()> {
    deps::ensure(deps::BUILD_AND_TEST)?;
    if !deps::is_root() {
        bail!("the SSH benchmark builds namespaces and loads XDP programs: run it as root");
    }
    // HOSTGATE_BIN: a release binary built already (skips the build).
    let bin = match std::env::var_os("HOSTGATE_BIN") {
        Some(b) => PathBuf::from(b),
        None => {
            deps::cargo(&["build", "--release", "--package", "hostgate"])?;
            deps::target_dir().join("release/hostgate")
        }
    };
    let bed = Bed::new(&bin)?;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "xtask: ssh, {} CPUs, kernel {}, load average {}; OpenSSH {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        openssh_version()
    );
    let paths = [Route::Direct, Route::Jump, Route::Hostgate];
    for p in paths {
        // Also pins the host keys (accept-new) before anything is timed.
        let out = bed.ssh(p).arg("echo ok").output()?;
        if String::from_utf8_lossy(&out.stdout) != "ok\n" {
            bail!("{} does not work: {}\n{}", p.name(), String::from_utf8_lossy(&out.stderr), bed.logs());
        }
    }
    // Turns path after path (see the module's doc): the medians per path.
    let interleaved = |what: &dyn Fn(Route) -> anyhow::Result<f64>| -> anyhow::Result<Vec<f64>> {
        let mut runs = vec![Vec::new(); paths.len()];
        for _ in 0..RUNS {
            for (i, p) in paths.iter().enumerate() {
                runs[i].push(what(*p)?);
            }
        }
        Ok(runs.into_iter().map(median).collect())
    };
    let measured = |what: &str, unit: &str, medians: Vec<f64>| {
        let each = paths.iter().zip(&medians).map(|(p, m)| format!("{} {m:.1}", p.name())).collect::<Vec<_>>();
        println!("{what} ({unit}, median of {RUNS}): {}", each.join(", "));
        medians
    };
    let setup = measured("setup", "logins/s", interleaved(&|p| bed.setup_rate(p))?);
    let up = measured("scp up", "MiB/s", interleaved(&|p| bed.scp_up(p))?);
    let down = measured("sftp down", "MiB/s", interleaved(&|p| bed.sftp_down(p))?);
    let rows: Vec<_> = paths.into_iter().enumerate().map(|(i, p)| (p, setup[i], up[i], down[i])).collect();
    println!(
        "\n{LOGINS} sequential logins per run, {FILE_MIB} MiB file; median of {RUNS} runs\n\n\
         | path | logins/s | scp up MiB/s | sftp down MiB/s |\n|---|---|---|---|"
    );
    for (p, setup, up, down) in &rows {
        println!("| {} | {setup:.1} | {up:.1} | {down:.1} |", p.name());
    }
    let (_, hs, hu, hd) = rows[2];
    for (p, s, u, d) in &rows[..2] {
        println!("hostgate / {}: setup {:.2}x, scp up {:.2}x, sftp down {:.2}x", p.name(), hs / s, hu / u, hd / d);
    }
    bed.integrity()?;
    let (direct, jump) = (&rows[0], &rows[1]);
    println!(
        "targets: throughput >= 0.9x direct: {}; setup rate >= ProxyJump: {}",
        if hu / direct.2 >= 0.9 && hd / direct.3 >= 0.9 { "met" } else { "NOT met" },
        if hs >= jump.1 { "met" } else { "NOT met" }
    );
    Ok(())
}

#[derive(Clone, Copy)]
enum Route {
    Direct,
    Jump,
    Hostgate,
}

impl Route {
    fn name(self) -> &'static str {
        match self {
            Route::Direct => "direct",
            Route::Jump => "ProxyJump",
            Route::Hostgate => "hostgate",
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn openssh_version() -> String {
    let out = Command::new("ssh").arg("-V").output().map(|o| String::from_utf8_lossy(&o.stderr).into_owned());
    out.unwrap_or_default().trim().to_string()
}

struct Bed {
    // Drop order: processes first, then the namespaces they live in.
    _sshd: ChildGuard,
    _jump: ChildGuard,
    daemon: Option<ChildGuard>,
    topo: NodeTopology,
    dir: tempfile::TempDir,
    node_name: String,
    container: String,
    key: PathBuf,
    file: PathBuf,
}

impl Drop for Bed {
    fn drop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.kill();
        }
        let layout = hostgate_dataplane::pins::PinLayout::new(Path::new(PIN_ROOT), &self.node_name);
        let _ = hostgate_dataplane::detach_pinned(&layout);
    }
}

fn keygen(path: &Path) -> anyhow::Result<()> {
    let out =
        Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-C", "bench", "-f"]).arg(path).output()?;
    if !out.status.success() {
        bail!("ssh-keygen: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// An sshd in `ns` on `listen`, trusting `authorized` and `ca` (if any).
fn start_sshd(
    topo_ns: &hostgate_testbed::Netns,
    dir: &Path,
    name: &str,
    listen: &str,
    authorized: &str,
    ca: Option<&str>,
) -> anyhow::Result<ChildGuard> {
    let host_key = dir.join(format!("{name}_host_ed25519"));
    keygen(&host_key)?;
    let keys = dir.join(format!("{name}_authorized_keys"));
    std::fs::write(&keys, authorized)?;
    let mut config = format!(
        "ListenAddress {listen}\nHostKey {}\nPidFile none\nAuthorizedKeysFile {}\nStrictModes no\nUsePAM no\n\
         PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n\
         Subsystem sftp /usr/lib/openssh/sftp-server\nMaxStartups 100\nLogLevel ERROR\n",
        host_key.display(),
        keys.display()
    );
    if let Some(ca) = ca {
        let file = dir.join(format!("{name}_trusted_ca"));
        std::fs::write(&file, format!("{ca}\n"))?;
        config += &format!("TrustedUserCAKeys {}\n", file.display());
    }
    let config_file = dir.join(format!("{name}_sshd_config"));
    std::fs::write(&config_file, config)?;
    std::fs::create_dir_all("/run/sshd")?;
    let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
    let child = topo_ns
        .command("/usr/sbin/sshd")
        .args(["-D", "-e", "-f"])
        .arg(&config_file)
        .stdin(Stdio::null())
        .stderr(log)
        .spawn()
        .context("sshd")?;
    Ok(ChildGuard::new(name, child))
}

impl Bed {
    fn new(bin: &Path) -> anyhow::Result<Bed> {
        let topo = NodeTopology::build("bssh", 1)?;
        let dir = tempfile::tempdir()?;
        let node_name = unique_name("bench-ssh");
        let c = &topo.containers[0];
        let container = c.v4.to_string();
        let socket = dir.path().join("hostgate.sock");
        let config = dir.path().join("hostgate.toml");
        std::fs::write(
            &config,
            format!(
                "node_name = \"{node_name}\"\nstate_dir = \"{state}\"\n\n[api]\nsocket = \"{sock}\"\n\n\
                 [dataplane]\npin_root = \"{PIN_ROOT}\"\nuplinks = [\"{NODE_UPLINK}\"]\n\
                 container_interfaces = [\"{iface}\"]\nxdp_mode = \"native\"\n\n\
                 [ssh]\nlisten = [\"{NODE_V4}:22\"]\nmax_sessions_per_customer = 1000\n\n[log]\nlevel = \"warn\"\n",
                state = dir.path().join("state").display(),
                sock = socket.display(),
                iface = c.node_iface,
            ),
        )?;
        let log = std::fs::File::create(dir.path().join("hostgate.log"))?;
        let daemon = topo
            .node
            .command(&bin.display().to_string())
            .args(["daemon", "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("hostgate daemon")?;
        let daemon = ChildGuard::new("hostgate daemon", daemon);
        let cli = |args: &[&str]| -> anyhow::Result<String> {
            let out = Command::new(bin).arg("--socket").arg(&socket).args(args).output()?;
            if !out.status.success() {
                bail!("hostgate {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
            }
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while cli(&["status"]).is_err() {
            if Instant::now() > deadline {
                bail!("hostgate did not answer: {}", std::fs::read_to_string(dir.path().join("hostgate.log"))?);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        cli(&["customer", "add", "acme"])?;
        cli(&["container", "add", "web", "--customer", "acme", "--iface", &c.node_iface, "--ip", &container])?;
        let key = dir.path().join("customer");
        keygen(&key)?;
        let public = std::fs::read_to_string(key.with_extension("pub"))?;
        cli(&["ssh", "key", "add", "--customer", "acme", &key.with_extension("pub").display().to_string()])?;
        let ca = cli(&["ssh", "ca", "show"])?;
        // The container trusts the customer's key (direct, ProxyJump) and
        // the hostgate CA (hostgate); the jump host the customer's key.
        let sshd = start_sshd(&c.ns, dir.path(), "container", &format!("{container}:22"), &public, Some(ca.trim()))?;
        let jump = start_sshd(&topo.node, dir.path(), "jump", &format!("{NODE_V4}:2222"), &public, None)?;
        let file = dir.path().join("large.bin");
        let status = Command::new("head")
            .args(["-c", &(FILE_MIB << 20).to_string(), "/dev/urandom"])
            .stdout(std::fs::File::create(&file)?)
            .status()?;
        if !status.success() {
            bail!("writing the test file");
        }
        let bed = Bed { _sshd: sshd, _jump: jump, daemon: Some(daemon), topo, dir, node_name, container, key, file };
        // Both sshd listening? (LogLevel ERROR keeps their logs quiet.)
        let deadline = Instant::now() + Duration::from_secs(10);
        for addr in [format!("{}:22", bed.container), format!("{NODE_V4}:2222")] {
            loop {
                let probe = bed.topo.client.exec("socat", ["-u", &format!("TCP:{addr},connect-timeout=1"), "STDOUT"]);
                if probe.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).starts_with("SSH-2.0-OpenSSH")) {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("no sshd answers on {addr}: {}", bed.logs());
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(bed)
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    fn logs(&self) -> String {
        ["hostgate", "container", "jump"].iter().map(|n| format!("--- {n}:\n{}", self.log(n))).collect()
    }

    /// The client's options: this key only, no agent, no config files,
    /// host keys pinned on first use in the bench's own known_hosts.
    fn options(&self, c: &mut Command, p: Route) {
        c.args(["-F", "/dev/null", "-i"]).arg(&self.key);
        let known = self.dir.path().join("known_hosts");
        for o in [
            "IdentitiesOnly=yes".to_string(),
            "IdentityAgent=none".to_string(),
            "BatchMode=yes".to_string(),
            "StrictHostKeyChecking=accept-new".to_string(),
            format!("UserKnownHostsFile={}", known.display()),
        ] {
            c.args(["-o", &o]);
        }
        if let Route::Jump = p {
            // -J does not pass -F/-i on to the jump's own ssh; ProxyCommand does.
            c.arg("-o").arg(format!(
                "ProxyCommand=ssh -F /dev/null -i {} -o IdentitiesOnly=yes -o IdentityAgent=none -o BatchMode=yes \
                 -o StrictHostKeyChecking=accept-new -o UserKnownHostsFile={} -p 2222 -W %h:%p root@{NODE_V4}",
                self.key.display(),
                known.display()
            ));
        }
    }

    fn target(&self, p: Route) -> String {
        match p {
            Route::Direct | Route::Jump => format!("root@{}", self.container),
            Route::Hostgate => format!("web@{NODE_V4}"),
        }
    }

    fn client(&self, program: &str) -> Command {
        let mut c = self.topo.client.command("timeout");
        c.args(["600", program]);
        c
    }

    fn ssh(&self, p: Route) -> Command {
        let mut c = self.client("ssh");
        self.options(&mut c, p);
        c.arg(self.target(p));
        c
    }

    /// Logins per second: `LOGINS` sequential `ssh TARGET true`.
    fn setup_rate(&self, p: Route) -> anyhow::Result<f64> {
        let start = Instant::now();
        for _ in 0..LOGINS {
            let out = self.ssh(p).arg("true").stdin(Stdio::null()).output()?;
            if !out.status.success() {
                bail!("{}: ssh failed: {}", p.name(), String::from_utf8_lossy(&out.stderr));
            }
        }
        Ok(LOGINS as f64 / start.elapsed().as_secs_f64())
    }

    /// MiB/s of `scp FILE TARGET:/dev/null` (SFTP protocol).
    fn scp_up(&self, p: Route) -> anyhow::Result<f64> {
        let mut c = self.client("scp");
        self.options(&mut c, p);
        c.arg(&self.file).arg(format!("{}:/dev/null", self.target(p)));
        self.timed(p, "scp up", c)
    }

    /// MiB/s of `sftp` getting FILE into /dev/null.
    fn sftp_down(&self, p: Route) -> anyhow::Result<f64> {
        let batch = self.dir.path().join("batch");
        std::fs::write(&batch, format!("get {} /dev/null\n", self.file.display()))?;
        let mut c = self.client("sftp");
        self.options(&mut c, p);
        c.arg("-b").arg(&batch).arg(self.target(p));
        self.timed(p, "sftp down", c)
    }

    /// The 1 GiB file up by scp and back by rsync through hostgate, its
    /// sha256 compared at every step (the tests move smaller files, since
    /// the debug build relays slowly).
    fn integrity(&self) -> anyhow::Result<()> {
        let sum = |p: &Path| -> anyhow::Result<String> {
            let out = Command::new("sha256sum").arg(p).output()?;
            Ok(String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or_default().to_string())
        };
        let want = sum(&self.file)?;
        let (remote, back) = (self.dir.path().join("remote.bin"), self.dir.path().join("back.bin"));
        let mut up = self.client("scp");
        self.options(&mut up, Route::Hostgate);
        up.arg(&self.file).arg(format!("{}:{}", self.target(Route::Hostgate), remote.display()));
        let start = Instant::now();
        let out = up.stdin(Stdio::null()).output()?;
        if !out.status.success() {
            bail!("hostgate: scp to a file failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let scp_secs = start.elapsed().as_secs_f64();
        let mut shell = Command::new("ssh");
        self.options(&mut shell, Route::Hostgate);
        let shell = std::iter::once("ssh".to_string())
            .chain(shell.get_args().map(|a| a.to_string_lossy().into_owned()))
            .collect::<Vec<_>>()
            .join(" ");
        let mut down = self.client("rsync");
        down.args(["-e", &shell]).arg(format!("{}:{}", self.target(Route::Hostgate), remote.display())).arg(&back);
        let start = Instant::now();
        let out = down.stdin(Stdio::null()).output()?;
        if !out.status.success() {
            bail!("hostgate: rsync back failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let rsync_secs = start.elapsed().as_secs_f64();
        let (got_remote, got_back) = (sum(&remote)?, sum(&back)?);
        let _ = std::fs::remove_file(&remote);
        let _ = std::fs::remove_file(&back);
        if got_remote != want || got_back != want {
            bail!("checksum differs: sent {want}, received {got_remote}, back {got_back}");
        }
        println!(
            "integrity through hostgate: {FILE_MIB} MiB scp up to a file ({scp_secs:.1} s) and rsync back \
             ({rsync_secs:.1} s), sha256 equal"
        );
        Ok(())
    }

    fn timed(&self, p: Route, what: &str, mut c: Command) -> anyhow::Result<f64> {
        let start = Instant::now();
        let out = c.stdin(Stdio::null()).output()?;
        let secs = start.elapsed().as_secs_f64();
        if !out.status.success() {
            bail!("{}: {what} failed: {}\n{}", p.name(), String::from_utf8_lossy(&out.stderr), self.logs());
        }
        Ok(FILE_MIB as f64 / secs)
    }
}

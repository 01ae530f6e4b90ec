//! `cargo xtask bench failover`: how long a customer IP goes unanswered
//! when the node holding it dies, for hostgate (etcd leases, TTL 1 s) and
//! for keepalived (VRRP, Debian's package with its default advert_int of
//! 1 s) on the same three-node namespace topology in the same run.
//!
//! Each trial: a client on the segment asks the IP (UDP, every 10 ms, each
//! node answers with its name); the holder is killed (its daemon SIGKILLed
//! and its uplink taken down at the same instant, as a power cut would);
//! the time until another node answers is the failover time. The dead node
//! then comes back (addresses gone, as after a reboot) and the cluster
//! settles before the next kill.

use std::{
    net::{SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use hostgate_testbed::{
    servers,
    topology::{ClusterTopology, CONTROL_STORE_V4, NODE_UPLINK},
    ChildGuard, EtcdServer,
};

use crate::{bench::PIN_ROOT, deps};

const KILLS: usize = 10;
const IP: &str = "203.0.113.80";

pub fn run() -> anyhow::Result<()> {
    let mut packages = deps::BUILD_AND_TEST.to_vec();
    packages.push(("keepalived", "the VRRP peer of `bench failover`"));
    deps::ensure(&packages)?;
    if !deps::is_root() {
        bail!("the failover benchmark builds namespaces and attaches BPF: run it as root");
    }
    deps::cargo(&["build", "--release", "--package", "hostgate"])?;
    let bin = deps::target_dir().join("release/hostgate");
    println!("xtask: failover, {KILLS} kills each (this takes a few minutes)");
    let hostgate = Bed::new("hg-bfo")?.trials(&mut Hostgate::start(&bin)?)?;
    let keepalived = Bed::new("hg-bfk")?.trials(&mut Keepalived::start()?)?;
    println!();
    println!("Failover: time from the holder's death until the IP answers again (client on the segment)");
    println!("| peer                         | kills | min     | p50     | p95     | max     | requests lost (p50) |");
    println!("|------------------------------|-------|---------|---------|---------|---------|---------------------|");
    for (name, t) in [("hostgate (etcd lease 1 s)", &hostgate), ("keepalived (VRRP advert 1 s)", &keepalived)] {
        row(name, t);
    }
    let (h, k) = (percentile(&hostgate, 50), percentile(&keepalived, 50));
    println!("\np50 ratio keepalived / hostgate: {:.1}x", k.as_secs_f64() / h.as_secs_f64().max(1e-9));
    Ok(())
}

/// One kill: how long the IP went unanswered, and how many requests were lost.
#[derive(Clone, Copy, Debug)]
struct Trial {
    gap: Duration,
    lost: usize,
}

fn percentile(t: &[Trial], p: usize) -> Duration {
    let mut v: Vec<Duration> = t.iter().map(|t| t.gap).collect();
    v.sort();
    v[((v.len() - 1) * p).div_ceil(100)]
}

fn row(name: &str, t: &[Trial]) {
    let mut lost: Vec<usize> = t.iter().map(|t| t.lost).collect();
    lost.sort_unstable();
    let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);
    println!(
        "| {name:<28} | {:>5} | {:>7} | {:>7} | {:>7} | {:>7} | {:>19} |",
        t.len(),
        ms(percentile(t, 0)),
        ms(percentile(t, 50)),
        ms(percentile(t, 95)),
        ms(percentile(t, 100)),
        lost[lost.len() / 2]
    );
}

/// What is measured: something that makes one of three nodes hold `IP`.
trait Peer {
    fn name(&self) -> &'static str;
    /// Starts node `i`'s process (again).
    fn start_node(&mut self, bed: &Bed, i: usize) -> anyhow::Result<()>;
    /// SIGKILLs node `i`'s process.
    fn kill_node(&mut self, i: usize);
    /// Whether the cluster is back to normal after node `i` was revived.
    fn settled(&mut self, bed: &Bed, revived: usize) -> bool;
    /// Once, after every node runs: make `IP` exist.
    fn setup(&mut self, bed: &Bed) -> anyhow::Result<()>;
    fn stop(&mut self, bed: &Bed);
    /// What the peer's nodes say, for errors.
    fn describe(&self) -> String;
}

/// The three-node topology with responders on UDP port 7.
struct Bed {
    topo: ClusterTopology,
    _responders: Vec<servers::IdentityServer>,
    pass: PathBuf,
}

impl Bed {
    fn new(purpose: &str) -> anyhow::Result<Bed> {
        let pass = std::env::temp_dir().join(format!("{purpose}-{}-pass.o", std::process::id()));
        std::fs::write(&pass, hostgate_dataplane::XDP_PASS_OBJECT).context("writing the XDP pass object")?;
        let topo = ClusterTopology::build(purpose, &[0, 0, 0], &pass).context("building the namespaces")?;
        topo.add_control_network()?;
        topo.client_on_link()?;
        let responders = topo
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                servers::udp_identity(&n.ns.path(), "0.0.0.0:7".parse().expect("addr"), &format!("n{}", i + 1))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Bed { topo, _responders: responders, pass })
    }

    /// The nodes holding `IP` on their uplink.
    fn holders(&self) -> Vec<usize> {
        let addr = IP.parse().expect("a constant address");
        (0..3).filter(|&i| self.topo.nodes[i].ns.has_host_address(NODE_UPLINK, addr)).collect()
    }

    fn wait(&self, what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> anyhow::Result<()> {
        let start = Instant::now();
        while !cond() {
            if start.elapsed() > limit {
                bail!("timed out waiting for {what}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    fn trials(self, peer: &mut dyn Peer) -> anyhow::Result<Vec<Trial>> {
        let result = self.trials_inner(peer);
        peer.stop(&self);
        let _ = std::fs::remove_file(&self.pass);
        result
    }

    fn trials_inner(&self, peer: &mut dyn Peer) -> anyhow::Result<Vec<Trial>> {
        for i in 0..3 {
            peer.start_node(self, i)?;
        }
        peer.setup(self)?;
        self.wait("the IP on one node", Duration::from_secs(30), || self.holders().len() == 1)?;
        let socket = servers::udp_flows(&self.topo.client.path(), 1)?.remove(0);
        socket.set_read_timeout(Some(Duration::from_millis(10)))?;
        let target: SocketAddr = format!("{IP}:7").parse()?;
        let mut trials = Vec::new();
        for k in 0..KILLS {
            let holder = match self.holders().as_slice() {
                [h] => *h,
                other => bail!("{}: expected one holder before kill {k}, found {other:?}", peer.name()),
            };
            self.wait("the holder to answer", Duration::from_secs(10), || {
                servers::udp_query(&socket, target).is_ok_and(|a| a == format!("n{}", holder + 1))
            })?;
            // Power cut.
            peer.kill_node(holder);
            self.topo.nodes[holder].ns.ip(["link", "set", NODE_UPLINK, "down"])?;
            let trial = measure(&socket, target, holder)?;
            println!("xtask: {} kill {}: {:?}, {} lost", peer.name(), k + 1, trial.gap, trial.lost);
            trials.push(trial);
            // Reboot: no addresses, link up, process started.
            let node = &self.topo.nodes[holder].ns;
            let _ = node.ip(["addr", "del", &format!("{IP}/32"), "dev", NODE_UPLINK]);
            node.ip(["link", "set", NODE_UPLINK, "up"])?;
            peer.start_node(self, holder)?;
            self.wait("the cluster to settle", Duration::from_secs(60), || peer.settled(self, holder)).with_context(
                || format!("after reviving n{}: holders {:?}; {}", holder + 1, self.holders(), peer.describe()),
            )?;
        }
        Ok(trials)
    }
}

/// Asks `target` every 10 ms until a node other than `dead` answers.
fn measure(socket: &UdpSocket, target: SocketAddr, dead: usize) -> anyhow::Result<Trial> {
    let start = Instant::now();
    let mut lost = 0;
    let dead = format!("n{}", dead + 1);
    while start.elapsed() < Duration::from_secs(30) {
        let sent = start.elapsed();
        match servers::udp_query(socket, target) {
            Ok(who) if who != dead => return Ok(Trial { gap: sent, lost }),
            _ => lost += 1,
        }
        if let Some(wait) = (sent + Duration::from_millis(10)).checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    bail!("the IP did not answer again within 30 s")
}

/// hostgate daemons sharing an etcd on the control network.
struct Hostgate {
    bin: PathBuf,
    dir: PathBuf,
    etcd: Option<EtcdServer>,
    daemons: Vec<Option<ChildGuard>>,
}

impl Hostgate {
    fn start(bin: &Path) -> anyhow::Result<Hostgate> {
        let dir = std::env::temp_dir().join(format!("hg-bench-failover-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(Hostgate { bin: bin.to_path_buf(), dir, etcd: None, daemons: vec![None, None, None] })
    }

    fn config(&self, i: usize) -> PathBuf {
        self.dir.join(format!("n{}.toml", i + 1))
    }

    fn socket(&self, i: usize) -> PathBuf {
        self.dir.join(format!("n{}.sock", i + 1))
    }

    fn cli(&self, i: usize, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(&self.bin).arg("--socket").arg(self.socket(i)).args(args).output()?;
        if !out.status.success() {
            bail!("hostgate {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn answers(&self, i: usize) -> bool {
        self.cli(i, &["status"]).is_ok()
    }
}

impl Peer for Hostgate {
    fn name(&self) -> &'static str {
        "hostgate"
    }

    fn describe(&self) -> String {
        (0..3)
            .map(|i| {
                let log = std::fs::read_to_string(self.dir.join(format!("n{}.log", i + 1))).unwrap_or_default();
                format!(
                    "n{}: {}\n{}\nlog: {}",
                    i + 1,
                    self.cli(i, &["status"]).unwrap_or_else(|e| e.to_string()),
                    self.cli(i, &["ip", "list"]).unwrap_or_else(|e| e.to_string()),
                    log.lines().rev().take(15).collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn start_node(&mut self, bed: &Bed, i: usize) -> anyhow::Result<()> {
        if self.etcd.is_none() {
            let addr = format!("{CONTROL_STORE_V4}:2379").parse()?;
            self.etcd = Some(EtcdServer::start(Some(&bed.topo.switch), addr)?);
        }
        let endpoint = self.etcd.as_ref().map(EtcdServer::endpoint).unwrap_or_default();
        let node = &bed.topo.nodes[i];
        std::fs::write(
            self.config(i),
            format!(
                "node_name = \"n{n}\"\nstate_dir = \"{dir}/n{n}\"\nnode_addresses = [\"{v4}\"]\n\n\
                 [api]\nsocket = \"{sock}\"\n\n[dataplane]\npin_root = \"{PIN_ROOT}\"\nuplinks = [\"{NODE_UPLINK}\"]\n\
                 xdp_mode = \"native\"\n\n[ip]\npools = [\"203.0.113.0/24\"]\nannounce_count = 3\nannounce_interval_ms = 50\n\n\
                 [cluster]\netcd_endpoints = [\"{endpoint}\"]\nkey_prefix = \"bench-{pid}/\"\nlease_ttl_secs = 1\n\n\
                 [log]\nlevel = \"warn\"\n",
                n = i + 1,
                dir = self.dir.display(),
                v4 = node.v4,
                sock = self.socket(i).display(),
                pid = std::process::id(),
            ),
        )?;
        let log = std::fs::File::create(self.dir.join(format!("n{}.log", i + 1)))?;
        let child = Command::new("nsenter")
            .arg(format!("--net={}", node.ns.path()))
            .arg("--")
            .arg(&self.bin)
            .args(["daemon", "--config"])
            .arg(self.config(i))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting hostgate")?;
        self.daemons[i] = Some(ChildGuard::new("hostgate daemon", child));
        bed.wait("the daemon to answer", Duration::from_secs(30), || self.answers(i))
    }

    fn kill_node(&mut self, i: usize) {
        if let Some(mut d) = self.daemons[i].take() {
            d.kill();
        }
    }

    fn settled(&mut self, bed: &Bed, revived: usize) -> bool {
        let live = self.cli(revived, &["status"]).is_ok_and(|s| s.contains("cluster    live"));
        live && bed.holders().len() == 1 && self.cli(revived, &["ip", "list"]).is_ok_and(|l| l.contains("active"))
    }

    fn setup(&mut self, _bed: &Bed) -> anyhow::Result<()> {
        self.cli(0, &["customer", "add", "acme"])?;
        self.cli(0, &["ip", "assign", IP, "--customer", "acme"])?;
        Ok(())
    }

    fn stop(&mut self, _bed: &Bed) {
        for i in 0..3 {
            self.kill_node(i);
            let _ = Command::new(&self.bin)
                .args(["dataplane", "detach", "--config"])
                .arg(self.config(i))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        self.etcd = None;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// keepalived, one VRRP instance per node holding `IP` (priorities 150,
/// 100, 50; Debian's defaults otherwise: advert_int 1, preemption on).
struct Keepalived {
    dir: PathBuf,
    procs: Vec<Option<ChildGuard>>,
    started: Vec<Instant>,
}

impl Keepalived {
    fn start() -> anyhow::Result<Keepalived> {
        let dir = std::env::temp_dir().join(format!("hg-bench-keepalived-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(Keepalived { dir, procs: vec![None, None, None], started: vec![Instant::now(); 3] })
    }
}

impl Peer for Keepalived {
    fn name(&self) -> &'static str {
        "keepalived"
    }

    fn describe(&self) -> String {
        (0..3)
            .map(|i| std::fs::read_to_string(self.dir.join(format!("n{}.log", i + 1))).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn start_node(&mut self, bed: &Bed, i: usize) -> anyhow::Result<()> {
        let conf = self.dir.join(format!("n{}.conf", i + 1));
        std::fs::write(
            &conf,
            format!(
                "global_defs {{\n  router_id n{n}\n}}\n\
                 vrrp_instance hostgate_bench {{\n  state BACKUP\n  interface {NODE_UPLINK}\n  virtual_router_id 68\n  \
                 priority {prio}\n  advert_int 1\n  virtual_ipaddress {{\n    {IP}/32 dev {NODE_UPLINK}\n  }}\n}}\n",
                n = i + 1,
                prio = 150 - 50 * i,
            ),
        )?;
        let pid = |kind: &str| self.dir.join(format!("n{}-{kind}.pid", i + 1));
        let log = std::fs::File::create(self.dir.join(format!("n{}.log", i + 1)))?;
        let child = Command::new("nsenter")
            .arg(format!("--net={}", bed.topo.nodes[i].ns.path()))
            .args(["--", "keepalived", "--dont-fork", "--log-console", "--vrrp", "--use-file"])
            .arg(&conf)
            .arg("--pid")
            .arg(pid("main"))
            .arg("--vrrp_pid")
            .arg(pid("vrrp"))
            .arg("--checkers_pid")
            .arg(pid("checkers"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting keepalived (apt-get install keepalived)")?;
        self.procs[i] = Some(ChildGuard::new("keepalived", child));
        self.started[i] = Instant::now();
        Ok(())
    }

    fn kill_node(&mut self, i: usize) {
        // keepalived forks a VRRP child: kill the whole process group of the node's namespace.
        if let Some(mut p) = self.procs[i].take() {
            if let Some(pid) = p.pid() {
                let _ = Command::new("pkill").args(["-KILL", "-P", &pid.to_string()]).status();
            }
            p.kill();
        }
        let vrrp = self.dir.join(format!("n{}-vrrp.pid", i + 1));
        if let Ok(pid) = std::fs::read_to_string(&vrrp) {
            let _ = Command::new("kill").args(["-KILL", pid.trim()]).stderr(Stdio::null()).status();
        }
    }

    fn settled(&mut self, bed: &Bed, revived: usize) -> bool {
        // Preemption: the highest priority takes the IP back after a few adverts.
        self.started[revived].elapsed() > Duration::from_secs(5) && bed.holders().len() == 1
    }

    fn setup(&mut self, _bed: &Bed) -> anyhow::Result<()> {
        Ok(())
    }

    fn stop(&mut self, _bed: &Bed) {
        for i in 0..3 {
            self.kill_node(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

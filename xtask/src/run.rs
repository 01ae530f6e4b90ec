//! `cargo xtask run`: a demo node in namespaces, or the daemon on this
//! host's real interfaces.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use hostgate_testbed::{ChildGuard, NodeTopology};

use crate::deps;

/// Namespace prefix of the demo; the nodes are `hg-demo-node`, `-client`, `-c1`, `-c2`.
const DEMO: &str = "hg-demo";
const DEMO_CONFIG: &str = "config/demo.toml";
const DEMO_SOCKET: &str = "/run/hostgate/hostgate.sock";
const SIGTERM: i32 = 15;

#[derive(clap::Args)]
pub struct RunArgs {
    /// Run the daemon with this config on this host's real interfaces
    /// instead of the demo.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Bring the demo up, check that it works, tear it down and exit.
    #[arg(long)]
    check: bool,
}

impl RunArgs {
    pub fn check() -> Self {
        RunArgs { config: None, check: true }
    }
}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    deps::ensure(deps::BUILD_AND_TEST)?;
    if !deps::is_root() {
        bail!("hostgate attaches BPF programs and creates namespaces: run `cargo xtask run` as root");
    }
    deps::cargo(&["build", "--package", "hostgate"])?;
    let bin = deps::target_dir().join("debug/hostgate");
    match args.config {
        Some(config) => run_on_host(&bin, &config),
        None => run_demo(&bin, args.check),
    }
}

fn run_on_host(bin: &Path, config: &Path) -> anyhow::Result<()> {
    let status = Command::new(bin).arg("daemon").arg("--config").arg(config).status().context("starting the daemon")?;
    if !status.success() {
        bail!("the daemon exited with {status}");
    }
    Ok(())
}

fn hostgate(bin: &Path, args: &[&str]) -> anyhow::Result<std::process::Output> {
    Command::new(bin).arg("--socket").arg(DEMO_SOCKET).args(args).output().context("running hostgate")
}

/// The demo's state directory (config/demo.toml): every demo starts empty.
const DEMO_STATE: &str = "/var/lib/hostgate/demo";

/// Removes what a previous demo may have left.
fn clean_leftovers(bin: &Path, config: &Path) {
    let _ = hostgate(bin, &["dataplane", "detach", "--config", &config.display().to_string()]);
    let _ = std::fs::remove_dir_all(DEMO_STATE);
    for ns in ["node", "client", "c1", "c2"] {
        let name = format!("{DEMO}-{ns}");
        if Path::new("/run/netns").join(&name).exists() {
            println!("xtask: removing leftover namespace {name}");
            let _ = Command::new("ip").args(["netns", "del", &name]).status();
        }
    }
}

fn run_demo(bin: &Path, check: bool) -> anyhow::Result<()> {
    let config = deps::workspace_root().join(DEMO_CONFIG);
    clean_leftovers(bin, &config);
    let topo = NodeTopology::build_named(DEMO, 2).context("building the demo namespaces")?;
    let (tx, rx) = mpsc::channel();
    ctrlc::set_handler(move || {
        let _ = tx.send(());
    })
    .context("installing the Ctrl-C handler")?;

    let mut daemon = topo.node.command(&bin.display().to_string());
    daemon.args(["daemon", "--config"]).arg(&config).stdin(Stdio::null());
    if check {
        daemon.stdout(Stdio::null()).stderr(Stdio::null());
    }
    let mut daemon = ChildGuard::new("hostgate daemon", daemon.spawn().context("starting the daemon")?);
    let result =
        wait_ready(bin, &mut daemon).and_then(|()| if check { check_demo(bin, &topo) } else { welcome(&topo, &rx) });

    // Teardown: stop the daemon, detach the data plane, delete the namespaces.
    daemon.signal_and_wait(SIGTERM, Duration::from_secs(10));
    drop(daemon);
    let detach = hostgate(bin, &["dataplane", "detach", "--config", &config.display().to_string()]);
    if let Ok(out) = detach {
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }
    drop(topo);
    println!("xtask: demo torn down");
    result
}

fn wait_ready(bin: &Path, daemon: &mut ChildGuard) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some(status) = daemon.try_exited() {
            bail!("the daemon exited during start-up ({status})");
        }
        if hostgate(bin, &["status"]).is_ok_and(|o| o.status.success()) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("the daemon did not answer within 30 s")
}

fn welcome(topo: &NodeTopology, stop: &mpsc::Receiver<()>) -> anyhow::Result<()> {
    let c1 = &topo.containers[0];
    println!(
        "\nhostgate demo node is up: daemon in netns {node}, uplink0 <-> {client}, hgc1/hgc2 <-> {c1ns}/{c2ns}.\n\
         \nTry, in another terminal:\n\
         \x20 target/debug/hostgate status\n\
         \x20 nsenter --net=/run/netns/{client} ping -c 3 198.18.0.1          # counted by XDP on uplink0\n\
         \x20 nsenter --net=/run/netns/{client} ping -c 3 {c1v4}             # through the node to container 1\n\
         \x20 nsenter --net=/run/netns/{c1ns} ping -c 3 198.18.0.2            # counted by TC on hgc1\n\
         \x20 target/debug/hostgate dataplane counters\n\
         \nCtrl-C stops the daemon and removes the demo.\n",
        node = topo.node.name(),
        client = topo.client.name(),
        c1ns = c1.ns.name(),
        c2ns = topo.containers[1].ns.name(),
        c1v4 = c1.v4,
    );
    let _ = stop.recv();
    println!("\nxtask: stopping");
    Ok(())
}

/// What `cargo xtask test` checks of the demo: the status answers, and
/// traffic from the client and a container is counted.
fn check_demo(bin: &Path, topo: &NodeTopology) -> anyhow::Result<()> {
    let c1 = &topo.containers[0];
    let ping = |ns: &hostgate_testbed::Netns, to: String| -> anyhow::Result<()> {
        let out = ns.exec("ping", ["-c", "2", "-i", "0.2", "-W", "2", &to])?;
        if !out.status.success() {
            bail!("ping {to} from {} failed", ns.name());
        }
        Ok(())
    };
    ping(&topo.client, "198.18.0.1".into())?;
    ping(&topo.client, c1.v4.to_string())?;
    ping(&c1.ns, "198.18.0.2".into())?;
    let out = hostgate(bin, &["status"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    for needle in ["uplink0", "hgc1", "hgc2", "ipv4-icmp"] {
        if !text.contains(needle) {
            bail!("demo status lacks {needle}");
        }
    }
    println!("xtask: demo check passed");
    Ok(())
}

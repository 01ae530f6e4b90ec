//! Developer automation: `cargo xtask <command>`.
//!
//! - `run`: the demo node in namespaces (or the daemon on this host's real
//!   interfaces with `--config`).
//! - `test`: formatting, lints and every test, privileged ones included.
//! - `bench`: benchmarks against peers (`lb`, `fw`, `failover`, `dhcp`, `http`,
//!   `dns`, `ssh`); `monitor` is part (c) of `fw` alone.
//! - `etcd`: an etcd for a cluster of hostgate nodes.
//! - `vm-test`: scenarios in QEMU VMs on a kernel of their own (`vm-tests/`).

mod bench;
mod bench_dhcp;
mod bench_dns;
mod bench_http;
mod bench_ssh;
mod deps;
mod failover;
mod run;
mod vm;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "hostgate's developer automation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build and start hostgate: a self-contained demo node in network
    /// namespaces, or with --config the daemon on this host's interfaces.
    Run(run::RunArgs),
    /// Benchmarks against peers, printed as one table per area.
    Bench {
        /// Which: lb, fw, failover, dhcp, http, dns, ssh (default: all); monitor (part (c) of fw alone).
        what: Vec<String>,
    },
    /// Run an etcd for a hostgate cluster in the foreground (Debian's
    /// etcd-server, installed if missing), with the short election timeout
    /// that lets etcd grant one-second leases. Point every node's
    /// `cluster.etcd_endpoints` at it.
    Etcd {
        /// Client address to listen on (the peer port is the next one).
        #[arg(long, default_value = "127.0.0.1:2379")]
        listen: std::net::SocketAddr,
        /// Where etcd keeps its data.
        #[arg(long, default_value = "/var/lib/hostgate/etcd")]
        data_dir: std::path::PathBuf,
    },
    /// Run scenarios in QEMU VMs (Debian's 6.12 kernel, virtio-net), all by
    /// default: see vm-tests/README.md.
    VmTest {
        /// Scenarios to run (smoke, firewall, restart, failover).
        scenarios: Vec<String>,
    },
    /// Check formatting and lints, then run every test (unit and privileged
    /// integration; run as root, as CI does).
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let command = Cli::parse().command;
    if deps::is_root() {
        for name in hostgate_testbed::remove_stale_namespaces() {
            println!("xtask: removed namespace {name}, left by a run that no longer exists");
        }
    }
    match command {
        Command::Run(args) => run::run(args),
        Command::Test { args } => test(&args),
        Command::Bench { what } => bench::run(&what),
        Command::Etcd { listen, data_dir } => etcd(listen, &data_dir),
        Command::VmTest { scenarios } => vm::run(&scenarios),
    }
}

fn etcd(listen: std::net::SocketAddr, data_dir: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context;
    deps::ensure(&[("etcd-server", "the cluster store")])?;
    let client = format!("http://{listen}");
    let peer = format!("http://{}:{}", listen.ip(), listen.port() + 1);
    println!("xtask: etcd for hostgate on {client} (data in {}); Ctrl-C stops it", data_dir.display());
    println!("xtask: in each node's config: [cluster] etcd_endpoints = [\"{client}\"]");
    let status = std::process::Command::new("etcd")
        .args(["--name", "hostgate", "--data-dir"])
        .arg(data_dir)
        .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
        .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
        .args(["--initial-cluster", &format!("hostgate={peer}")])
        // Leases of one second need an election timeout <= 666 ms (etcd's
        // minimum TTL is 1.5 election timeouts).
        .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
        .args(["--auto-compaction-mode", "revision", "--auto-compaction-retention", "10000"])
        .args(["--logger", "zap", "--log-level", "warn"])
        .status()
        .context("starting etcd")?;
    anyhow::ensure!(status.success(), "etcd exited with {status}");
    Ok(())
}

fn test(extra: &[String]) -> anyhow::Result<()> {
    deps::ensure(deps::BUILD_AND_TEST)?;
    if deps::is_root() {
        println!("xtask: running as root: privileged tests (BPF, namespaces) included");
    } else {
        println!("xtask: not root: privileged tests will be skipped (each prints why); CI runs them as root");
    }
    deps::cargo(&["fmt", "--all", "--", "--check"])?;
    deps::cargo(&["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"])?;
    let mut args = vec!["test", "--workspace"];
    args.extend(extra.iter().map(String::as_str));
    deps::cargo(&args)?;
    if extra.is_empty() {
        // The README's first command, end to end, non-interactively.
        run::run(run::RunArgs::check())?;
        // One VM on a kernel of its own: boot, attach, pass traffic.
        vm::smoke()?;
    }
    Ok(())
}

//! Developer automation: `cargo xtask <command>`.
//!
//! - `run`: the demo node in namespaces (or the daemon on this host's real
//!   interfaces with `--config`).
//! - `test`: formatting, lints and every test, privileged ones included.

mod bench;
mod deps;
mod failover;
mod run;

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
        /// Which: lb, fw, failover (default: all).
        what: Vec<String>,
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
    match Cli::parse().command {
        Command::Run(args) => run::run(args),
        Command::Test { args } => test(&args),
        Command::Bench { what } => bench::run(&what),
    }
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
    }
    Ok(())
}

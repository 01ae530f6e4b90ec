//! `hostgate`: the daemon (`hostgate daemon`) and the operator's CLI, which
//! talks to the daemon's control API on its unix socket.

mod output;

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use hostgate_api::{Client, CounterRow, DetachResponse, Status};
use hostgate_config::{Config, LogFormat, DEFAULT_CONFIG_PATH, DEFAULT_SOCKET};

#[derive(Parser)]
#[command(name = "hostgate", version, about = "eBPF/XDP network appliance for hosting providers")]
struct Cli {
    /// Control socket of the daemon.
    #[arg(long, global = true, env = "HOSTGATE_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon in the foreground.
    Daemon {
        /// Configuration file.
        #[arg(long, short, default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// Log format; overrides the config's log.format.
        #[arg(long, value_enum)]
        log_format: Option<LogFormatArg>,
    },
    /// Show the daemon, its store and data plane: attachments, programs, maps, counters.
    Status {
        /// Machine-readable JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Inspect or remove the data plane.
    Dataplane {
        #[command(subcommand)]
        command: DataplaneCommand,
    },
    /// Work with configuration files.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum DataplaneCommand {
    /// Packet and byte counters by hook, protocol and verdict.
    Counters {
        #[arg(long)]
        json: bool,
    },
    /// Detach every program hostgate attached and remove its pins. Asks the
    /// running daemon; with no daemon running, removes the pins of the node
    /// named in --config directly.
    Detach {
        /// Used only when no daemon answers: which node's pins to remove.
        #[arg(long, short, default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a configuration file and exit.
    Check {
        #[arg(default_value = DEFAULT_CONFIG_PATH)]
        file: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    let client = Client::new(&cli.socket);
    match cli.command {
        Command::Daemon { config, log_format } => {
            let config = Config::load(&config)?;
            let format = match log_format {
                Some(LogFormatArg::Text) => LogFormat::Text,
                Some(LogFormatArg::Json) => LogFormat::Json,
                None => config.log.format,
            };
            hostgate_daemon::init_logging(format, &config.log.level);
            hostgate_daemon::run(config).await
        }
        Command::Status { json } => {
            let status: Status = client.get(hostgate_api::STATUS).await?;
            print_out(json, &status, output::status)
        }
        Command::Dataplane { command: DataplaneCommand::Counters { json } } => {
            let rows: Vec<CounterRow> = client.get(hostgate_api::COUNTERS).await?;
            print_out(json, &rows, |r| output::counters(r).to_string())
        }
        Command::Dataplane { command: DataplaneCommand::Detach { config, json } } => {
            let report = detach(&client, &config).await?;
            print_out(json, &report, output::detach)
        }
        Command::Config { command: ConfigCommand::Check { file } } => {
            let c = Config::load(&file)?;
            println!("{}: ok (node {}, {} uplink(s))", file.display(), c.node_name, c.dataplane.uplinks.len());
            Ok(())
        }
    }
}

fn print_out<T: serde::Serialize>(json: bool, value: &T, human: impl Fn(&T) -> String) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        println!("{}", human(value));
    }
    Ok(())
}

/// Through the daemon if one runs; otherwise straight from the pins.
async fn detach(client: &Client, config: &std::path::Path) -> anyhow::Result<DetachResponse> {
    match client.post::<_, DetachResponse>(hostgate_api::DETACH, &()).await {
        Ok(r) => Ok(r),
        Err(e) if e.is_unreachable() => {
            let c = Config::load(config).context("no daemon answers, so the config is needed to find the pins")?;
            let layout = hostgate_dataplane::pins::PinLayout::new(&c.dataplane.pin_root, &c.node_name);
            let report = hostgate_dataplane::detach_pinned(&layout)?;
            Ok(DetachResponse { links: report.links, pins_removed: report.pins_removed })
        }
        Err(e) => Err(e.into()),
    }
}

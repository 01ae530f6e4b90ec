//! Remote log: every line the daemon logs also goes, as an RFC 5424
//! message, to a syslog receiver over TCP with TLS (RFC 5425 framing),
//! through an on-disk spool under the state directory (`spool.rs`) so
//! that nothing is lost while the receiver is away (`ship.rs`).

mod frame;
mod ship;
mod spool;

use std::{
    fmt::Write as _,
    path::Path,
    sync::{
        atomic::{AtomicBool, AtomicU32, Ordering},
        Arc, Mutex,
    },
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use hostgate_config::SyslogConfig;
use tokio::sync::Notify;
use tokio_rustls::rustls::{self, pki_types::ServerName};
use tracing::{field::Field, Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// The tracing layer that writes each event to the spool.
pub struct SyslogLayer {
    spool: Arc<Mutex<spool::Spool>>,
    wake: Arc<Notify>,
    hostname: String,
    app_name: String,
    pid: u32,
    sequence: AtomicU32,
    json: bool,
    /// A spool that cannot be written is said once on stderr, not per line.
    failing: AtomicBool,
}

/// Opens the spool in `<state_dir>/log-spool`, starts the shipper on the
/// current tokio runtime, and returns the layer that feeds them. `json`:
/// each message's text is the JSON object the console log shows.
pub fn start(cfg: &SyslogConfig, node: &str, state_dir: &Path, json: bool) -> anyhow::Result<SyslogLayer> {
    let address: std::net::SocketAddr =
        cfg.address.parse().with_context(|| format!("log.syslog.address: {:?} is not ADDRESS:PORT", cfg.address))?;
    let tls = client_config(cfg)?;
    let name = cfg.server_name.clone().unwrap_or_else(|| address.ip().to_string());
    let server_name = ServerName::try_from(name.clone())
        .with_context(|| format!("log.syslog.server_name: {name:?} is not a name"))?;
    let dir = state_dir.join("log-spool");
    let spool = spool::Spool::open(&dir, cfg.spool_max_mb << 20)
        .with_context(|| format!("opening the syslog spool {}", dir.display()))?;
    let spool = Arc::new(Mutex::new(spool));
    let wake = Arc::new(Notify::new());
    tokio::spawn(ship::run(spool.clone(), wake.clone(), ship::Target { address, server_name, tls: Arc::new(tls) }));
    Ok(SyslogLayer {
        spool,
        wake,
        hostname: node.to_string(),
        app_name: cfg.app_name.clone(),
        pid: std::process::id(),
        sequence: AtomicU32::new(0),
        json,
        failing: AtomicBool::new(false),
    })
}

fn client_config(cfg: &SyslogConfig) -> anyhow::Result<rustls::ClientConfig> {
    let pem = std::fs::read(&cfg.ca).with_context(|| format!("log.syslog.ca: reading {}", cfg.ca.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.with_context(|| format!("log.syslog.ca: {} is not PEM", cfg.ca.display()))?;
        roots.add(cert).with_context(|| format!("log.syslog.ca: a certificate in {}", cfg.ca.display()))?;
    }
    if roots.is_empty() {
        anyhow::bail!("log.syslog.ca: {} holds no certificate", cfg.ca.display());
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_root_certificates(roots);
    Ok(match (&cfg.cert, &cfg.key) {
        (Some(cert), Some(key)) => {
            let chain: Vec<_> = rustls_pemfile::certs(&mut std::fs::read(cert)?.as_slice())
                .collect::<Result<_, _>>()
                .with_context(|| format!("log.syslog.cert: {}", cert.display()))?;
            let key = rustls_pemfile::private_key(&mut std::fs::read(key)?.as_slice())
                .with_context(|| format!("log.syslog.key: {}", key.display()))?
                .with_context(|| format!("log.syslog.key: no private key in {}", key.display()))?;
            builder.with_client_auth_cert(chain, key).context("log.syslog.cert/key")?
        }
        _ => builder.with_no_client_auth(),
    })
}

/// The message and the other fields of an event.
#[derive(Default)]
struct Fields {
    message: String,
    rest: Vec<(&'static str, String)>,
}

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.rest.push((field.name(), format!("{value:?}")));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.rest.push((field.name(), value.to_string()));
        }
    }
}

impl SyslogLayer {
    fn text(&self, event: &Event<'_>) -> String {
        let mut f = Fields::default();
        event.record(&mut f);
        let meta = event.metadata();
        if self.json {
            let mut obj = serde_json::Map::new();
            obj.insert("level".into(), meta.level().as_str().into());
            obj.insert("target".into(), meta.target().into());
            obj.insert("message".into(), f.message.into());
            for (k, v) in f.rest {
                obj.insert(k.into(), v.into());
            }
            return serde_json::Value::Object(obj).to_string();
        }
        let mut s = format!("{} {}: {}", meta.level(), meta.target(), f.message);
        for (k, v) in f.rest {
            let _ = write!(s, " {k}={v}");
        }
        s
    }

    fn append(&self, severity: u8, msg: &str) {
        let time_us = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
        // 1..=2^31-1 (RFC 5424 §7.3.1), wrapping.
        let sequence = self.sequence.fetch_add(1, Ordering::Relaxed) % 0x7fff_ffff + 1;
        let header = frame::Header {
            severity,
            time_us,
            hostname: &self.hostname,
            app_name: &self.app_name,
            procid: self.pid,
            sequence,
        };
        let bytes = frame::frame(&header, msg);
        let (result, dropped) = {
            let mut s = self.spool.lock().unwrap_or_else(|p| p.into_inner());
            (s.append(&bytes), s.take_dropped())
        };
        match result {
            Ok(()) => self.failing.store(false, Ordering::Relaxed),
            Err(e) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    eprintln!("hostgate: cannot write the syslog spool (lines are not shipped): {e}");
                }
            }
        }
        if dropped > 0 {
            self.append(
                4,
                &format!(
                    "WARN hostgate_daemon::syslog: the spool was full: {dropped} bytes of older log dropped unsent"
                ),
            );
        }
        self.wake.notify_one();
    }
}

impl<S: Subscriber> Layer<S> for SyslogLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let msg = self.text(event);
        self.append(frame::severity(event.metadata().level()), &msg);
    }
}

//! Per-customer access logs: `<access_log_dir>/<customer>.log`, one line
//! per HTTP request (in the vhost's format), SSH session or logged DNS
//! query, each service in its own directory. A service hands lines to a bounded
//! queue and never waits for the disk; one writer task appends them,
//! flushing whenever the queue runs dry (so a line is on disk within
//! milliseconds of its request, and under load writes are batched). A
//! full queue drops lines and counts them, as a request must never wait
//! for its log. A file renamed or removed (logrotate) is reopened within a
//! second.

use std::{
    collections::HashMap,
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use tokio::sync::mpsc;
use tracing::warn;

/// Lines waiting for the writer.
const QUEUE: usize = 65_536;

#[derive(Debug)]
pub struct AccessLogs {
    tx: mpsc::Sender<(String, String)>,
    dropped: AtomicU64,
}

impl AccessLogs {
    /// The queue, and the writer to run on a thread of its own.
    fn new(dir: PathBuf) -> (AccessLogs, Writer) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (AccessLogs { tx, dropped: AtomicU64::new(0) }, Writer { dir, rx, files: HashMap::new() })
    }

    /// The queue, with its writer running on a thread of its own.
    pub fn start(dir: PathBuf, thread: &str) -> anyhow::Result<AccessLogs> {
        let (logs, writer) = AccessLogs::new(dir);
        std::thread::Builder::new()
            .name(thread.into())
            .spawn(move || writer.run())
            .map_err(|e| anyhow::anyhow!("starting the {thread} writer: {e}"))?;
        Ok(logs)
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Queues `line` for `customer`'s file.
    pub fn write(&self, customer: &str, line: String) {
        if self.tx.try_send((customer.to_string(), line)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

struct Open {
    file: std::io::BufWriter<std::fs::File>,
    path: PathBuf,
    checked: Instant,
}

struct Writer {
    dir: PathBuf,
    rx: mpsc::Receiver<(String, String)>,
    files: HashMap<String, Open>,
}

fn open(path: &Path) -> std::io::Result<std::io::BufWriter<std::fs::File>> {
    // Logs hold client addresses and URLs: readable by the owner and group only.
    let f = std::fs::OpenOptions::new().create(true).append(true).mode(0o640).open(path)?;
    Ok(std::io::BufWriter::with_capacity(64 * 1024, f))
}

impl Writer {
    /// Runs until the queue's sender is gone (blocking: call it on a
    /// blocking thread).
    fn run(mut self) {
        if let Err(e) = std::fs::create_dir_all(&self.dir) {
            warn!(dir = %self.dir.display(), error = %e, "cannot create the access log directory; lines are dropped");
        }
        while let Some((customer, line)) = self.rx.blocking_recv() {
            self.append(&customer, &line);
            while let Ok((customer, line)) = self.rx.try_recv() {
                self.append(&customer, &line);
            }
            for f in self.files.values_mut() {
                let _ = f.file.flush();
            }
        }
    }

    fn append(&mut self, customer: &str, line: &str) {
        if !self.files.contains_key(customer) {
            let path = self.dir.join(format!("{customer}.log"));
            match open(&path) {
                Ok(file) => {
                    self.files.insert(customer.to_string(), Open { file, path, checked: Instant::now() });
                }
                Err(e) => {
                    warn!(path = %path.display(), error = %e, "cannot open an access log; line dropped");
                    return;
                }
            }
        }
        let Some(f) = self.files.get_mut(customer) else { return };
        if f.checked.elapsed() > Duration::from_secs(1) {
            f.checked = Instant::now();
            // Rotated away (renamed or deleted): start a new file.
            if !f.path.exists() {
                let _ = f.file.flush();
                if let Ok(file) = open(&f.path) {
                    f.file = file;
                }
            }
        }
        let _ = f.file.write_all(line.as_bytes());
        let _ = f.file.write_all(b"\n");
    }
}

/// How the SSH and DNS logs write a line (HTTP has its own formats).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineFormat {
    /// logfmt: `name=value ...`, values quoted where they need it.
    Text,
    Json,
}

impl LineFormat {
    /// `text` or `json`; `off` (validation refuses anything else): none.
    pub fn parse(text: &str) -> Option<LineFormat> {
        match text {
            "text" => Some(LineFormat::Text),
            "json" => Some(LineFormat::Json),
            _ => None,
        }
    }
}

/// One line of `fields`, in order; `null` values are left out. Values are
/// escaped so that nothing a client sent (an SSH user name, a query name)
/// can break the line or forge another.
pub fn line(format: LineFormat, fields: &[(&str, serde_json::Value)]) -> String {
    let present = fields.iter().filter(|(_, v)| !v.is_null());
    let mut out = String::new();
    match format {
        LineFormat::Json => {
            out.push('{');
            for (i, (name, value)) in present.enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::Value::from(*name).to_string());
                out.push(':');
                out.push_str(&value.to_string());
            }
            out.push('}');
        }
        LineFormat::Text => {
            for (i, (name, value)) in present.enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                out.push_str(name);
                out.push('=');
                match value {
                    serde_json::Value::String(s) if bare(s) => out.push_str(s),
                    other => out.push_str(&other.to_string()),
                }
            }
        }
    }
    out
}

/// A logfmt value that needs no quotes.
fn bare(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'=' && b != b'\\')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_and_json_lines() {
        let fields = [("user", json!("web+acme")), ("bytes", json!(42)), ("exit", json!(null)), ("note", json!(""))];
        assert_eq!(line(LineFormat::Text, &fields), r#"user=web+acme bytes=42 note="""#);
        assert_eq!(line(LineFormat::Json, &fields), r#"{"user":"web+acme","bytes":42,"note":""}"#);
    }

    #[test]
    fn client_text_cannot_forge_lines_or_fields() {
        for evil in ["a b", "x\ny=1", "q\"uote", "k=v", "back\\slash", "é"] {
            let text = line(LineFormat::Text, &[("user", json!(evil)), ("ok", json!("yes"))]);
            assert!(!text.contains('\n'), "{text}");
            assert!(text.ends_with(" ok=yes"), "{text}");
            let quoted = text.strip_prefix("user=").and_then(|t| t.strip_suffix(" ok=yes")).expect("shape");
            assert_eq!(serde_json::from_str::<String>(quoted).expect("a JSON string"), evil);
            let j = line(LineFormat::Json, &[("user", json!(evil))]);
            assert_eq!(serde_json::from_str::<serde_json::Value>(&j).expect("json")["user"], evil);
        }
    }
}

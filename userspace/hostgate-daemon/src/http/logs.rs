//! Per-customer access logs: `<access_log_dir>/<customer>.log`, one line
//! per request in the vhost's format. The proxy hands lines to a bounded
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

pub struct AccessLogs {
    tx: mpsc::Sender<(String, String)>,
    pub dropped: AtomicU64,
}

impl AccessLogs {
    /// The queue, and the writer to spawn on a blocking thread.
    pub fn new(dir: PathBuf) -> (AccessLogs, Writer) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (AccessLogs { tx, dropped: AtomicU64::new(0) }, Writer { dir, rx, files: HashMap::new() })
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

pub struct Writer {
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
    pub fn run(mut self) {
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

//! `GET /v1/monitor`: the data plane's decisions as they happen, one JSON
//! line each. The programs report only while someone watches: the first
//! watcher turns the report on (map `hg_monitor`) and starts the reader of
//! the ring buffer; the last one to leave turns it off again. Events are
//! named here (rule `file:line` and customer, VIP and backend, interface)
//! and fanned out to every watcher; a watcher too slow to keep up loses
//! events rather than holding anyone up.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use axum::{body::Body, extract::State, http::header, response::IntoResponse};
use hostgate_api::MonitorEvent;
use hostgate_dataplane::abi::{Event, EventKind, FwAction, MonitorCfg};
use tokio::{io::unix::AsyncFd, sync::broadcast};
use tracing::{info, warn};

use crate::{api::Failure, Daemon};

/// The watchers and the events they share.
pub struct Hub {
    events: broadcast::Sender<MonitorEvent>,
    watchers: AtomicUsize,
}

impl Default for Hub {
    fn default() -> Self {
        Hub { events: broadcast::Sender::new(4096), watchers: AtomicUsize::new(0) }
    }
}

/// One watcher; the report stops when the last one is dropped.
struct Watcher(Arc<Daemon>);

impl Drop for Watcher {
    fn drop(&mut self) {
        if self.0.monitor.watchers.fetch_sub(1, Ordering::SeqCst) == 1 {
            set_report(&self.0, MonitorCfg::default());
            info!("monitor: nobody watches; report off");
        }
    }
}

fn set_report(d: &Daemon, cfg: MonitorCfg) {
    if let Some(dp) = d.dataplane().as_mut() {
        if let Err(e) = dp.set_monitor(cfg) {
            warn!(error = %e, "monitor: could not switch the report");
        }
    }
}

pub async fn stream(State(d): State<Arc<Daemon>>) -> Result<impl IntoResponse, Failure> {
    let layout = d.dataplane().as_ref().map(|dp| dp.layout().clone());
    let Some(layout) = layout else {
        return Err(Failure(axum::http::StatusCode::CONFLICT, "the data plane is detached".into()));
    };
    let mut rx = d.monitor.events.subscribe();
    if d.monitor.watchers.fetch_add(1, Ordering::SeqCst) == 0 {
        let ring = hostgate_dataplane::monitor::open_events(&layout).map_err(anyhow::Error::from)?;
        tokio::spawn(read(d.clone(), ring));
        set_report(&d, MonitorCfg::wanting(EventKind::ALL, 1));
        info!("monitor: watched; report on");
    }
    let watcher = Watcher(d.clone());
    let lines = async_stream(move |tx| async move {
        let _watcher = watcher;
        loop {
            match rx.recv().await {
                Ok(event) => {
                    let mut line = serde_json::to_vec(&event).unwrap_or_default();
                    line.push(b'\n');
                    if tx.send(Ok::<_, std::io::Error>(line)).await.is_err() {
                        return; // the watcher hung up
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(lines)))
}

/// A stream fed by a task (the task ends when the stream is dropped).
fn async_stream<F, Fut>(task: F) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<Vec<u8>, std::io::Error>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel(256);
    let handle = tokio::spawn(task(tx));
    let abort = AbortOnDrop(handle);
    futures_util::stream::poll_fn(move |cx| {
        let _ = &abort;
        rx.poll_recv(cx)
    })
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reads the ring buffer while anyone watches.
async fn read(d: Arc<Daemon>, ring: aya::maps::RingBuf<aya::maps::MapData>) {
    // SAFETY: the ring buffer owns its map's descriptor for its whole life
    // and always reports that same one; the AsyncFd owns the ring buffer.
    let registered = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) };
    let mut fd = match registered {
        Ok(fd) => fd,
        Err(e) => {
            warn!(error = %e, "monitor: cannot poll the ring buffer");
            return;
        }
    };
    let mut names = Names::default();
    while d.monitor.watchers.load(Ordering::SeqCst) > 0 {
        // The programs wake us only once a batch waits (monitor.h); what
        // is below it is read at the timeout, so it is also the latency.
        let ready = tokio::time::timeout(std::time::Duration::from_millis(200), fd.readable_mut()).await;
        let mut raw = Vec::new();
        match ready {
            Ok(Ok(mut guard)) => {
                while let Some(item) = guard.get_inner_mut().next() {
                    raw.extend(Event::from_bytes(&item));
                }
                guard.clear_ready();
            }
            Ok(Err(_)) => continue,
            Err(_) => {
                while let Some(item) = fd.get_mut().next() {
                    raw.extend(Event::from_bytes(&item));
                }
            }
        }
        for e in raw {
            let event = names.describe(&d, &e).await;
            let _ = d.monitor.events.send(event);
        }
    }
}

/// What ids stand for, refreshed when an unknown one turns up.
#[derive(Default)]
struct Names {
    vips: HashMap<u32, String>,
    backends: HashMap<u32, String>,
}

impl Names {
    async fn lb(&mut self, d: &Daemon, vip: u32, backend: u32) -> (Option<String>, Option<String>) {
        if !self.vips.contains_key(&vip) || !self.backends.contains_key(&backend) {
            if let Ok(views) = crate::lb::views(d, None).await {
                for v in views {
                    self.vips.insert(v.id, v.vip.clone());
                    for b in v.backends {
                        self.backends.insert(b.id, b.backend);
                    }
                }
            }
        }
        (self.vips.get(&vip).cloned(), self.backends.get(&backend).cloned())
    }

    async fn describe(&mut self, d: &Daemon, e: &Event) -> MonitorEvent {
        let kind = EventKind::from_u32(e.kind);
        let (sport, dport) = e.ports();
        let mut out = MonitorEvent {
            ts_ns: e.ts_ns,
            kind: kind.map_or("unknown", EventKind::as_str).to_string(),
            verdict: "drop".into(),
            hook: match e.hook {
                0 => "xdp-uplink",
                1 => "tc-container",
                _ => "tc-to-container",
            }
            .into(),
            iface: iface_name(e.ifindex),
            src: e.source().map(|a: IpAddr| a.to_string()),
            dst: e.destination().map(|a: IpAddr| a.to_string()),
            sport,
            dport,
            proto: e.proto,
            rule: None,
            customer: None,
            vip: None,
            backend: None,
        };
        match kind {
            Some(EventKind::FwDrop) => {
                out.verdict =
                    FwAction::ALL.iter().find(|a| **a as u32 == e.action).map_or("drop", |a| a.as_str()).to_string();
                if let Some(r) = d.fw_state().rules.get(e.id as usize) {
                    let line = r.line.map_or_else(|| "default".to_string(), |l| l.to_string());
                    out.rule = Some(format!("{}:{line}", r.file));
                    out.customer = Some(r.customer.clone());
                }
            }
            Some(EventKind::LbNew) => {
                out.verdict = "balanced".into();
                (out.vip, out.backend) = self.lb(d, e.id, e.backend_id).await;
            }
            _ => {}
        }
        out
    }
}

fn iface_name(ifindex: u32) -> String {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: if_indextoname writes at most IF_NAMESIZE bytes into buf and
    // NUL-terminates what it writes; the result is read only on success.
    let named = unsafe { !libc::if_indextoname(ifindex, buf.as_mut_ptr()).is_null() };
    if !named {
        return format!("if{ifindex}");
    }
    // SAFETY: on success buf holds a NUL-terminated name.
    unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned()
}

//! Health checking: one task per checked backend probes it (TCP connect or
//! HTTP GET) and writes transitions, and only transitions, to
//! `health/<node>/backends/<id>`. The LB reconciler reads them from there.

use std::{collections::BTreeMap, net::SocketAddr, sync::Arc, time::Duration};

use hostgate_lb::{
    health::{HealthCheck, HealthState, Probe},
    model::{keys, BackendSpec},
};
use hostgate_store::{Mirror, Op, Txn};
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    task::JoinHandle,
};
use tracing::{info, warn};

use crate::{now, Daemon};

/// What the store holds about a backend's health.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthRecord {
    pub healthy: bool,
    /// Seconds since the epoch of the last transition.
    pub since: u64,
    pub reason: String,
}

pub fn prefix(node: &str) -> String {
    format!("health/{node}/backends/")
}

pub fn key(node: &str, backend_id: u32) -> String {
    format!("{}{backend_id}", prefix(node))
}

/// Follows the declared backends and keeps one checker per checked backend.
pub(crate) async fn follow(daemon: Arc<Daemon>) -> anyhow::Result<()> {
    let daemon = &daemon;
    let snap = daemon.store.snapshot(keys::BACKENDS).await?;
    let mut watch = daemon.store.watch(keys::BACKENDS, snap.revision).await?;
    let mut mirror = Mirror::from_snapshot(snap);
    let mut tasks: BTreeMap<u32, (BackendSpec, JoinHandle<()>)> = BTreeMap::new();
    loop {
        sync_tasks(daemon, &mirror, &mut tasks).await?;
        let Some(batch) = watch.recv().await else { anyhow::bail!("the store's watch ended") };
        mirror.apply(&batch);
    }
}

async fn sync_tasks(
    daemon: &Arc<Daemon>,
    mirror: &Mirror,
    tasks: &mut BTreeMap<u32, (BackendSpec, JoinHandle<()>)>,
) -> anyhow::Result<()> {
    let wanted: BTreeMap<u32, BackendSpec> = mirror
        .entries
        .values()
        .filter_map(|kv| kv.decode::<BackendSpec>().ok())
        .filter(|b| b.check.is_some())
        .map(|b| (b.id, b))
        .collect();
    let node = daemon.config.node_name.clone();
    let mut gone = Txn::new();
    tasks.retain(|id, (spec, task)| {
        let keep = wanted.get(id) == Some(spec);
        if !keep {
            task.abort();
            if !wanted.contains_key(id) {
                gone = std::mem::take(&mut gone).then(Op::Delete(key(&node, *id)));
            }
        }
        keep
    });
    if !gone.ops.is_empty() {
        daemon.store.commit(gone).await?;
    }
    for (id, spec) in wanted {
        if tasks.contains_key(&id) {
            continue;
        }
        let start = match daemon.store.get(&key(&node, id)).await? {
            Some(kv) => kv.decode::<HealthRecord>().map(|r| r.healthy).unwrap_or(true),
            None => true,
        };
        let task = tokio::spawn(check_loop(daemon.clone(), spec.clone(), start));
        tasks.insert(id, (spec, task));
    }
    Ok(())
}

async fn check_loop(daemon: Arc<Daemon>, spec: BackendSpec, healthy: bool) {
    let (Some(check), Some(port)) = (spec.check.clone(), spec.check_port()) else { return };
    let target = SocketAddr::new(spec.addr, port);
    // Resume from the stored state: a restart must not revive a dead backend.
    let mut state = HealthState::new(healthy);
    let mut interval = tokio::time::interval(Duration::from_millis(u64::from(check.interval_ms)));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let result = probe(&check, target).await;
        if let Some(now_healthy) = state.observe(result.is_ok(), check.rise, check.fall) {
            let reason = result.err().unwrap_or_else(|| "probe succeeded".into());
            info!(vip = %spec.vip, backend = %spec.identity(), healthy = now_healthy, %reason, "backend health changed");
            let record = HealthRecord { healthy: now_healthy, since: now(), reason };
            let op = Op::put_json(key(&daemon.config.node_name, spec.id), &record);
            match op {
                Ok(op) => {
                    if let Err(e) = daemon.store.commit(Txn::new().then(op)).await {
                        warn!(error = %e, "could not record backend health");
                    }
                }
                Err(e) => warn!(error = %e, "could not encode backend health"),
            }
        }
    }
}

/// One probe: Ok, or why it failed.
async fn probe(check: &HealthCheck, target: SocketAddr) -> Result<(), String> {
    let timeout = Duration::from_millis(u64::from(check.timeout_ms));
    tokio::time::timeout(timeout, async {
        let mut stream = TcpStream::connect(target).await.map_err(|e| format!("connect {target}: {e}"))?;
        match &check.probe {
            Probe::Tcp => Ok(()),
            Probe::Http { path, expect_status } => {
                let request = format!(
                    "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: hostgate-health\r\nConnection: close\r\n\r\n",
                    target.ip()
                );
                stream.write_all(request.as_bytes()).await.map_err(|e| format!("send: {e}"))?;
                let mut head = vec![0u8; 64];
                let n = stream.read(&mut head).await.map_err(|e| format!("read: {e}"))?;
                let line = String::from_utf8_lossy(&head[..n]);
                let status: Option<u16> = line.split_whitespace().nth(1).and_then(|s| s.parse().ok());
                match status {
                    Some(s) if s == *expect_status => Ok(()),
                    Some(s) => Err(format!("HTTP {s}, expected {expect_status}")),
                    None => Err("no HTTP status line".into()),
                }
            }
        }
    })
    .await
    .unwrap_or_else(|_| Err(format!("no answer within {} ms", check.timeout_ms)))
}

//! Builds the API's view of the daemon from the live data plane and store.

use hostgate_api::{
    AttachmentStatus, ClusterStatus, CounterRow, DataplaneStatus, MapStatus, ProgramStatus, Status, StoreStatus,
};
use hostgate_dataplane::{Counters, Dataplane};
use hostgate_ipam::ownership::keys;

use crate::Daemon;

pub fn counter_rows(counters: &Counters) -> Vec<CounterRow> {
    counters
        .rows
        .iter()
        .map(|r| CounterRow {
            hook: r.hook.to_string(),
            proto: r.proto.to_string(),
            verdict: r.verdict.to_string(),
            packets: r.packets,
            bytes: r.bytes,
        })
        .collect()
}

fn dataplane_status(dp: &Dataplane) -> anyhow::Result<DataplaneStatus> {
    Ok(DataplaneStatus {
        attached: true,
        pin_dir: dp.layout().base().display().to_string(),
        attachments: dp
            .attachments()
            .iter()
            .map(|a| AttachmentStatus {
                interface: a.key.iface.clone(),
                ifindex: a.ifindex,
                hook: a.key.kind.hook().to_string(),
                mode: a.key.kind.to_string(),
                origin: match a.origin {
                    hostgate_dataplane::Origin::Adopted => "adopted".into(),
                    hostgate_dataplane::Origin::Attached => "attached".into(),
                },
                link_id: a.link_id,
                program_id: a.program_id,
            })
            .collect(),
        programs: dp
            .programs()
            .into_iter()
            .map(|p| ProgramStatus {
                name: p.name,
                id: p.id,
                verified_instructions: p.verified_instructions,
                pinned: p.pinned.display().to_string(),
            })
            .collect(),
        maps: dp
            .maps()
            .into_iter()
            .map(|m| MapStatus {
                name: m.name,
                id: m.id,
                max_entries: m.max_entries,
                pinned: m.pinned.map(|p| p.display().to_string()),
            })
            .collect(),
        counters: counter_rows(&dp.counters()?),
    })
}

pub async fn collect(daemon: &Daemon) -> anyhow::Result<Status> {
    let dataplane = match daemon.dataplane().as_ref() {
        Some(dp) => dataplane_status(dp)?,
        None => DataplaneStatus::default(),
    };
    let revision = daemon.store.revision().await;
    let standing = *daemon.standing.borrow();
    let members = match daemon.store.snapshot(keys::MEMBERS).await {
        Ok(s) => s.kvs.iter().filter_map(|kv| kv.key.strip_prefix(keys::MEMBERS).map(String::from)).collect(),
        Err(_) => vec![],
    };
    Ok(Status {
        node: daemon.config.node_name.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        pid: std::process::id(),
        started_at: daemon.started_at,
        store: StoreStatus {
            backend: if daemon.config.clustered() { "etcd" } else { "redb" }.into(),
            location: daemon.store.location(),
            revision: *revision.as_ref().unwrap_or(&0),
            error: revision.err().map(|e| e.to_string()),
        },
        cluster: ClusterStatus {
            clustered: daemon.config.clustered(),
            standing: standing.name().into(),
            lease: standing.lease().map(|l| format!("{l:x}")),
            members,
            config_revision: *daemon.config_revision.borrow(),
        },
        dns: daemon.dns.status(),
        dhcp: daemon.dhcp_counters.lock().map(|c| c.values().cloned().collect()).unwrap_or_default(),
        http: daemon.http.counters(),
        http_log_dropped: daemon.http.log_dropped(),
        http_header_timeouts: daemon.front.header_timeouts(),
        http_fast_requests: daemon.front.fast_requests(),
        http_pingora_handovers: daemon.front.pingora_handovers(),
        http_h2_goaways: daemon.front.goaways(),
        dataplane,
    })
}

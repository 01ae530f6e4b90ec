//! The firewall in the daemon: reads the rules directory, compiles every
//! customer's file against the IPs the customer holds, and applies the
//! result whole. A directory with any error changes nothing: the rules in
//! force stay, and the errors are logged and reported.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use axum::{extract::State, Json};
use hostgate_api::{RuleChange, RuleStats, RulesApplied, RulesDiff, RulesStatus};
use hostgate_ipam::model::{keys, Assignment, Container};
use hostgate_rules::{tables, Action, Severity};
use tracing::{info, warn};

use crate::{api::Failure, now, Daemon};

/// The `*.rules` files (path, modified, size) and the store revision of
/// customers and IPs a reload saw: when neither changed, nothing to do.
type Seen = (Vec<(PathBuf, SystemTime, u64)>, u64);

/// What the firewall last did.
#[derive(Debug, Default)]
pub struct FwState {
    pub rules: Vec<tables::RuleRef>,
    /// The rulesets in force, for `rules diff`.
    pub rulesets: Vec<hostgate_rules::Ruleset>,
    pub applied_at: Option<u64>,
    pub last_errors: Vec<String>,
    /// Directory fingerprint and IP revision of the last attempt.
    seen: Option<Seen>,
}

/// `*.rules` files with their modification times and sizes, sorted.
fn fingerprint(dir: &Path) -> std::io::Result<Vec<(PathBuf, SystemTime, u64)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "rules") {
            let meta = std::fs::metadata(&path)?;
            out.push((path, meta.modified()?, meta.len()));
        }
    }
    out.sort();
    Ok(out)
}

/// Follows the rules directory and the customers' IPs; reapplies on change.
pub async fn run(daemon: Arc<Daemon>) {
    if daemon.config.firewall.rules_dir.is_none() {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        if let Err(e) = reload(&daemon, false).await {
            warn!(error = format!("{e:#}"), "firewall reload failed");
        }
    }
}

/// The rules directory as read and checked, not yet applied.
struct Candidate {
    rulesets: Vec<(hostgate_rules::Ruleset, tables::Guarded)>,
    errors: Vec<String>,
    warnings: Vec<String>,
}

/// Parses and checks every file against the customers and their IPs.
fn load(
    files: &[(PathBuf, SystemTime, u64)],
    ips_snap: &hostgate_store::Snapshot,
    customers: &hostgate_store::Snapshot,
    containers: &hostgate_store::Snapshot,
) -> Candidate {
    let boxes: Vec<Container> = containers.kvs.iter().filter_map(|kv| kv.decode().ok()).collect();
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let mut rulesets = Vec::new();
    let mut owner_of: BTreeMap<String, String> = BTreeMap::new();
    let known: Vec<String> =
        customers.kvs.iter().filter_map(|kv| kv.key.strip_prefix(keys::CUSTOMERS).map(str::to_string)).collect();
    let held: Vec<Assignment> = ips_snap.kvs.iter().filter_map(|kv| kv.decode().ok()).collect();
    for (path, _, _) in files {
        let name = path.display().to_string();
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                errors.push(format!("{name}: cannot read: {e}"));
                continue;
            }
        };
        match hostgate_rules::parse(&name, &text) {
            Ok((rs, w)) => {
                warnings.extend(w.iter().map(ToString::to_string));
                if !known.contains(&rs.customer) {
                    errors.push(format!(
                        "{name}:{}:10: error: unknown customer {:?} (hint: hostgate customer add)",
                        rs.customer_line, rs.customer
                    ));
                } else if let Some(other) = owner_of.insert(rs.customer.clone(), name.clone()) {
                    errors.push(format!(
                        "{name}:{}:1: error: customer {} already has rules in {other}",
                        rs.customer_line, rs.customer
                    ));
                }
                let guarded = tables::Guarded {
                    customer_ips: held.iter().filter(|a| a.customer == rs.customer).map(|a| a.addr).collect(),
                    container_addrs: boxes
                        .iter()
                        .filter(|c| c.customer == rs.customer)
                        .flat_map(|c| c.ips.clone())
                        .collect(),
                };
                rulesets.push((rs, guarded));
            }
            Err(diags) => {
                for diag in diags {
                    match diag.severity {
                        Severity::Error => errors.push(diag.to_string()),
                        Severity::Warning => warnings.push(diag.to_string()),
                    }
                }
            }
        }
    }
    Candidate { rulesets, errors, warnings }
}

/// Reads, checks, compiles and applies the rules directory. With `force`,
/// even if nothing changed since the last attempt.
pub async fn reload(d: &Arc<Daemon>, force: bool) -> anyhow::Result<RulesApplied> {
    let _serial = d.fw_reload.lock().await;
    let Some(dir) = d.config.firewall.rules_dir.clone() else {
        return Ok(RulesApplied {
            applied: false,
            files: 0,
            rules: 0,
            errors: vec!["no firewall.rules_dir configured".into()],
            warnings: vec![],
        });
    };
    let files = fingerprint(&dir).map_err(|e| anyhow::anyhow!("reading {}: {e}", dir.display()))?;
    let ips_snap = d.store.snapshot(keys::IPS).await?;
    let customers = d.store.snapshot(keys::CUSTOMERS).await?;
    let containers = d.store.snapshot(keys::CONTAINERS).await?;
    // Snapshots carry the store-wide revision: any change anywhere reloads.
    let seen = (files.clone(), containers.revision);
    if !force && d.fw_state().seen.as_ref() == Some(&seen) {
        return Ok(RulesApplied { applied: false, files: files.len(), rules: 0, errors: vec![], warnings: vec![] });
    }

    let Candidate { rulesets, mut errors, warnings } = load(&files, &ips_snap, &customers, &containers);
    let rule_count: usize = rulesets.iter().map(|(rs, _)| rs.rules.len()).sum();
    let tables = if errors.is_empty() {
        match tables::build(&rulesets) {
            Ok(t) => Some(t),
            Err(e) => {
                errors.push(e.to_string());
                None
            }
        }
    } else {
        None
    };
    let Some(tables) = tables else {
        for e in &errors {
            warn!(error = %e, "rules not applied; the rules in force stay");
        }
        let mut st = d.fw_state();
        st.last_errors = errors.clone();
        st.seen = Some(seen);
        return Ok(RulesApplied { applied: false, files: files.len(), rules: rule_count, errors, warnings });
    };
    let dd = d.clone();
    let t = tables.clone();
    tokio::task::spawn_blocking(move || match dd.dataplane().as_mut() {
        Some(dp) => dp.apply_fw(&t).map_err(anyhow::Error::from),
        None => anyhow::bail!("the data plane is detached"),
    })
    .await??;
    for w in &warnings {
        warn!(warning = %w, "rules warning");
    }
    info!(
        files = files.len(),
        rules = rule_count,
        entries = tables.policy.len() + tables.sources.len(),
        "firewall rules applied"
    );
    let mut st = d.fw_state();
    st.rules = tables.rules;
    st.rulesets = rulesets.into_iter().map(|(rs, _)| rs).collect();
    st.applied_at = Some(now());
    st.last_errors.clear();
    st.seen = Some(seen);
    Ok(RulesApplied { applied: true, files: files.len(), rules: rule_count, errors: vec![], warnings })
}

/// What applying the rules directory now would change.
pub async fn diff(State(d): State<Arc<Daemon>>) -> Result<Json<RulesDiff>, Failure> {
    let Some(dir) = d.config.firewall.rules_dir.clone() else {
        return Err(Failure(axum::http::StatusCode::CONFLICT, "no firewall.rules_dir configured".into()));
    };
    let files = fingerprint(&dir).map_err(|e| anyhow::anyhow!("reading {}: {e}", dir.display()))?;
    let ips_snap = d.store.snapshot(keys::IPS).await.map_err(anyhow::Error::from)?;
    let customers = d.store.snapshot(keys::CUSTOMERS).await.map_err(anyhow::Error::from)?;
    let containers = d.store.snapshot(keys::CONTAINERS).await.map_err(anyhow::Error::from)?;
    let c = load(&files, &ips_snap, &customers, &containers);
    let new: Vec<hostgate_rules::Ruleset> = c.rulesets.into_iter().map(|(rs, _)| rs).collect();
    let changes = hostgate_rules::diff::diff(&d.fw_state().rulesets, &new)
        .into_iter()
        .map(|ch| RuleChange { customer: ch.customer, kind: ch.kind.to_string(), text: ch.text, line: ch.line })
        .collect();
    Ok(Json(RulesDiff { changes, errors: c.errors }))
}

pub async fn apply(State(d): State<Arc<Daemon>>) -> Result<Json<RulesApplied>, Failure> {
    Ok(Json(reload(&d, true).await?))
}

pub async fn stats(State(d): State<Arc<Daemon>>) -> Result<Json<RulesStatus>, Failure> {
    let (rules, applied_at, last_errors) = {
        let st = d.fw_state();
        (st.rules.clone(), st.applied_at, st.last_errors.clone())
    };
    let counters = match d.dataplane().as_ref() {
        Some(dp) => dp.fw_stats(rules.len()).map_err(anyhow::Error::from)?,
        None => vec![],
    };
    let mut out = RulesStatus {
        rules_dir: d.config.firewall.rules_dir.as_ref().map(|p| p.display().to_string()),
        applied_at,
        last_errors,
        ..RulesStatus::default()
    };
    for (id, r) in rules.iter().enumerate() {
        let c = counters.get(id).copied().unwrap_or_default();
        if matches!(r.action, Action::Drop | Action::Reject) {
            *out.drops.entry(r.customer.clone()).or_default() += c.packets;
        }
        let direction = match r.direction {
            hostgate_rules::ast::Direction::In => "in",
            hostgate_rules::ast::Direction::Out => "out",
        };
        out.rules.push(RuleStats {
            id: id as u32,
            customer: r.customer.clone(),
            file: r.file.clone(),
            line: r.line,
            direction: direction.into(),
            action: r.action.to_string(),
            packets: c.packets,
            bytes: c.bytes,
        });
    }
    Ok(Json(out))
}

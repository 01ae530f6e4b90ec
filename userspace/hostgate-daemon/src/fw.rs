//! The firewall in the daemon: reads the rules files, compiles every
//! customer's file against the IPs the customer holds, and applies the
//! result whole. A set of files with any error changes nothing: the rules
//! in force stay, and the errors are logged and reported.
//!
//! Where the files come from: on one node, its rules directory. In a
//! cluster, the store (`rules/files/`): a node with a rules directory checks
//! it and, if it is clean, publishes it there; every node applies what the
//! store holds, so one `rules apply` anywhere reaches every node.

use std::{collections::BTreeMap, path::Path, sync::Arc, time::Duration};

use axum::{extract::State, Json};
use hostgate_api::{IpTraffic, RuleChange, RuleStats, RulesApplied, RulesDiff, RulesStatus};
use hostgate_ipam::model::{keys, Assignment, Container};
use hostgate_rules::{tables, Action, Severity};
use hostgate_store::{Op, Txn};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::{api::Failure, now, Daemon};
use hostgate_dataplane::abi::Counter;

/// Where a cluster keeps the rules files in force, one key per file name.
const SHARED: &str = "rules/files/";

/// A rules file: the name its diagnostics carry (the path where it was
/// read), and its text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RulesFile {
    pub name: String,
    pub text: String,
}

/// The files and the store revision a reload saw: when neither changed,
/// nothing to do.
type Seen = (Vec<RulesFile>, u64);

/// What the firewall last did.
#[derive(Debug, Default)]
pub struct FwState {
    pub rules: Vec<tables::RuleRef>,
    /// The tables in force: a reload that compiles to the same ones (any
    /// store change reloads) leaves the kernel alone, counters included.
    tables: Option<tables::Tables>,
    /// Per rule id: what the rule counted under earlier rule sets, added
    /// to the kernel's count (which starts over with each new set), so
    /// that an unchanged rule's counter never goes back.
    carried: Vec<Counter>,
    /// The rulesets in force, for `rules diff`.
    pub rulesets: Vec<hostgate_rules::Ruleset>,
    pub applied_at: Option<u64>,
    pub last_errors: Vec<String>,
    /// The guarded customer IPs whose traffic the data plane counts, and their customers.
    pub counted_ips: BTreeMap<std::net::IpAddr, String>,
    /// Files and store revision of the last attempt.
    seen: Option<Seen>,
    /// In a cluster: the local files last published (or refused).
    published: Option<Vec<RulesFile>>,
}

/// The `*.rules` files of `dir`, sorted by name.
fn read_dir(dir: &Path) -> anyhow::Result<Vec<RulesFile>> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| anyhow::anyhow!("reading {}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| anyhow::anyhow!("reading {}: {e}", dir.display()))?.path();
        if path.extension().is_some_and(|e| e == "rules") {
            let text =
                std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("{}: cannot read: {e}", path.display()))?;
            out.push(RulesFile { name: path.display().to_string(), text });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The store key of a published file: its base name.
fn shared_key(f: &RulesFile) -> String {
    let base = Path::new(&f.name).file_name().map_or(f.name.clone(), |n| n.to_string_lossy().into_owned());
    format!("{SHARED}{base}")
}

/// Follows the rules (directory or store) and the customers' IPs; reapplies on change.
pub async fn run(daemon: Arc<Daemon>) {
    if daemon.config.firewall.rules_dir.is_none() && !daemon.config.clustered() {
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
    files: &[RulesFile],
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
    for RulesFile { name, text } in files {
        match hostgate_rules::parse(name, text) {
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

/// The store's view the rules are checked against.
struct Context {
    ips: hostgate_store::Snapshot,
    customers: hostgate_store::Snapshot,
    containers: hostgate_store::Snapshot,
}

impl Context {
    async fn read(d: &Daemon) -> anyhow::Result<Self> {
        Ok(Context {
            ips: d.store.snapshot(keys::IPS).await?,
            customers: d.store.snapshot(keys::CUSTOMERS).await?,
            containers: d.store.snapshot(keys::CONTAINERS).await?,
        })
    }

    fn load(&self, files: &[RulesFile]) -> Candidate {
        load(files, &self.ips, &self.customers, &self.containers)
    }
}

/// The files published in the store.
async fn shared_files(d: &Daemon) -> anyhow::Result<Vec<RulesFile>> {
    let snap = d.store.snapshot(SHARED).await?;
    let mut files: Vec<RulesFile> = snap.kvs.iter().filter_map(|kv| kv.decode().ok()).collect();
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(files)
}

/// In a cluster: publishes this node's rules directory if it changed and
/// is clean (or `force`). Returns the errors that kept it back.
async fn publish(d: &Daemon, local: &[RulesFile], ctx: &Context, force: bool) -> anyhow::Result<Vec<String>> {
    if !force && d.fw_state().published.as_deref() == Some(local) {
        return Ok(vec![]);
    }
    let checked = ctx.load(local);
    let mut errors = checked.errors;
    if errors.is_empty() {
        if let Err(e) = tables::build(&checked.rulesets) {
            errors.push(e.to_string());
        }
    }
    if errors.is_empty() {
        let shared = d.store.snapshot(SHARED).await?;
        let keep: Vec<String> = local.iter().map(shared_key).collect();
        let mut txn = Txn::new();
        for kv in shared.kvs.iter().filter(|kv| !keep.contains(&kv.key)) {
            txn = txn.then(Op::Delete(kv.key.clone()));
        }
        for f in local {
            let key = shared_key(f);
            if shared.kvs.iter().find(|kv| kv.key == key).and_then(|kv| kv.decode::<RulesFile>().ok()).as_ref()
                != Some(f)
            {
                txn = txn.then(Op::put_json(key, f)?);
            }
        }
        if !txn.ops.is_empty() {
            d.store.commit(txn).await?;
            info!(files = local.len(), "rules published to the cluster");
        }
    } else {
        for e in &errors {
            warn!(error = %e, "rules not published; the rules in force stay");
        }
    }
    d.fw_state().published = Some(local.to_vec());
    Ok(errors)
}

/// Reads, checks, compiles and applies the rules. With `force`, even if
/// nothing changed since the last attempt.
pub async fn reload(d: &Arc<Daemon>, force: bool) -> anyhow::Result<RulesApplied> {
    let _serial = d.fw_reload.lock().await;
    let local = match &d.config.firewall.rules_dir {
        Some(dir) => Some(read_dir(dir)?),
        None => None,
    };
    let ctx = Context::read(d).await?;
    let files = match (&local, d.config.clustered()) {
        (Some(local), true) => {
            let refused = publish(d, local, &ctx, force).await?;
            if !refused.is_empty() {
                let mut st = d.fw_state();
                st.last_errors = refused.clone();
                return Ok(RulesApplied {
                    applied: false,
                    files: local.len(),
                    rules: 0,
                    errors: refused,
                    warnings: vec![],
                });
            }
            shared_files(d).await?
        }
        (None, true) => shared_files(d).await?,
        (Some(local), false) => local.clone(),
        (None, false) => {
            return Ok(RulesApplied {
                applied: false,
                files: 0,
                rules: 0,
                errors: vec!["no firewall.rules_dir configured".into()],
                warnings: vec![],
            })
        }
    };
    // Snapshots carry the store-wide revision: any change anywhere reloads.
    let seen = (files.clone(), ctx.containers.revision);
    if !force && d.fw_state().seen.as_ref() == Some(&seen) {
        return Ok(RulesApplied { applied: false, files: files.len(), rules: 0, errors: vec![], warnings: vec![] });
    }

    let Candidate { rulesets, mut errors, warnings } = ctx.load(&files);
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
    let counted: BTreeMap<std::net::IpAddr, String> =
        rulesets.iter().flat_map(|(rs, g)| g.customer_ips.iter().map(|ip| (*ip, rs.customer.clone()))).collect();
    let (in_force, old_rules, old_carried) = {
        let st = d.fw_state();
        (st.tables.as_ref() == Some(&tables) && st.counted_ips == counted, st.rules.clone(), st.carried.clone())
    };
    let carried = if in_force {
        old_carried
    } else {
        let dd = d.clone();
        let t = tables.clone();
        let ips: Vec<std::net::IpAddr> = counted.keys().copied().collect();
        tokio::task::spawn_blocking(move || match dd.dataplane().as_mut() {
            Some(dp) => {
                // read just before the flip: what is counted in between is lost
                let mut totals = dp.fw_stats(old_rules.len())?;
                for (total, before) in totals.iter_mut().zip(&old_carried) {
                    *total += *before;
                }
                dp.apply_fw(&t)?;
                dp.set_fw_counted_ips(&ips)?;
                Ok(tables::carry_over(&old_rules, &totals, &t.rules))
            }
            None => anyhow::bail!("the data plane is detached"),
        })
        .await??
    };
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
    st.rules = tables.rules.clone();
    st.tables = Some(tables);
    st.carried = carried;
    st.rulesets = rulesets.into_iter().map(|(rs, _)| rs).collect();
    st.counted_ips = counted;
    st.applied_at = Some(now());
    st.last_errors.clear();
    st.seen = Some(seen);
    Ok(RulesApplied { applied: true, files: files.len(), rules: rule_count, errors: vec![], warnings })
}

/// What applying the rules directory (in a cluster without one: the
/// published files) now would change.
pub async fn diff(State(d): State<Arc<Daemon>>) -> Result<Json<RulesDiff>, Failure> {
    let files = match (&d.config.firewall.rules_dir, d.config.clustered()) {
        (Some(dir), _) => read_dir(dir)?,
        (None, true) => shared_files(&d).await?,
        (None, false) => {
            return Err(Failure(axum::http::StatusCode::CONFLICT, "no firewall.rules_dir configured".into()))
        }
    };
    let c = Context::read(&d).await?.load(&files);
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
    let (rules, carried, applied_at, last_errors, counted_ips) = {
        let st = d.fw_state();
        (st.rules.clone(), st.carried.clone(), st.applied_at, st.last_errors.clone(), st.counted_ips.clone())
    };
    let (counters, ip_counters) = match d.dataplane().as_ref() {
        Some(dp) => {
            (dp.fw_stats(rules.len()).map_err(anyhow::Error::from)?, dp.fw_ip_stats().map_err(anyhow::Error::from)?)
        }
        None => (vec![], vec![]),
    };
    let mut out = RulesStatus {
        rules_dir: d.config.firewall.rules_dir.as_ref().map(|p| p.display().to_string()),
        applied_at,
        last_errors,
        ..RulesStatus::default()
    };
    for (id, r) in rules.iter().enumerate() {
        let mut c = counters.get(id).copied().unwrap_or_default();
        c += carried.get(id).copied().unwrap_or_default();
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
    for (ip, c) in ip_counters {
        // The table may still hold an IP a concurrent apply is removing.
        if let Some(customer) = counted_ips.get(&ip) {
            out.ips.push(IpTraffic {
                ip: ip.to_string(),
                customer: customer.clone(),
                packets: c.packets,
                bytes: c.bytes,
            });
        }
    }
    out.ips.sort_by(|a, b| (&a.customer, &a.ip).cmp(&(&b.customer, &b.ip)));
    Ok(Json(out))
}

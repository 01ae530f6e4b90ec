//! The `/v1` control API (see hostgate-api for the types).

use std::sync::Arc;

use axum::{
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use hostgate_api::{ApiError, CounterRow, DetachResponse, Status};
use tracing::info;

use crate::{containers, dhcp, dns, fw, http, ips, lb, nodes, ssh, status, Daemon};

pub fn router(daemon: Arc<Daemon>) -> Router {
    Router::new()
        .route(hostgate_api::STATUS, get(get_status))
        .route(hostgate_api::MONITOR, get(crate::monitor::stream))
        .route(hostgate_api::COUNTERS, get(get_counters))
        .route(hostgate_api::DETACH, post(detach))
        .route(hostgate_api::UPGRADE, post(upgrade))
        .route(hostgate_api::VIPS, get(lb::list_vips).post(lb::add_vip))
        .route(hostgate_api::VIP_SHOW, post(lb::show_vip))
        .route(hostgate_api::VIP_REMOVE, post(lb::remove_vip))
        .route(hostgate_api::BACKENDS, post(lb::add_backend))
        .route(hostgate_api::BACKEND_REMOVE, post(lb::remove_backend))
        .route(hostgate_api::NODES, get(nodes::list).post(nodes::add))
        .route(hostgate_api::NODE_REMOVE, post(nodes::remove))
        .route(hostgate_api::NODE_DRAIN, post(nodes::drain))
        .route(hostgate_api::NODE_UNDRAIN, post(nodes::undrain))
        .route(hostgate_api::CUSTOMERS, get(ips::list_customers).post(ips::add_customer))
        .route(hostgate_api::CUSTOMER_SHOW, post(ips::show_customer))
        .route(hostgate_api::CUSTOMER_REMOVE, post(ips::remove_customer))
        .route(hostgate_api::IPS, get(ips::list_ips).post(ips::assign))
        .route(hostgate_api::IP_RELEASE, post(ips::release))
        .route(hostgate_api::IP_MOVE, post(ips::move_ip))
        .route(hostgate_api::RULES_APPLY, post(fw::apply))
        .route(hostgate_api::RULES_STATS, get(fw::stats))
        .route(hostgate_api::RULES_DIFF, get(fw::diff))
        .route(hostgate_api::CONTAINERS, get(containers::list).post(containers::add))
        .route(hostgate_api::CONTAINER_REMOVE, post(containers::remove))
        .route(hostgate_api::NETWORKS, get(dhcp::list_networks).post(dhcp::add_network))
        .route(hostgate_api::NETWORK_REMOVE, post(dhcp::remove_network))
        .route(hostgate_api::DHCP_LEASES, get(dhcp::list_leases))
        .route(hostgate_api::DHCP_RESERVATIONS, get(dhcp::list_reservations).post(dhcp::add_reservation))
        .route(hostgate_api::DHCP_RESERVATION_REMOVE, post(dhcp::remove_reservation))
        .route(hostgate_api::DNS_ZONES, get(dns::list_zones).post(dns::add_zone))
        .route(hostgate_api::DNS_ZONE_REMOVE, post(dns::remove_zone))
        .route(hostgate_api::DNS_ZONE_IMPORT, post(dns::import_zone))
        .route(hostgate_api::DNS_ZONE_EXPORT, post(dns::export_zone))
        .route(hostgate_api::DNS_ZONE_SECONDARIES, post(dns::set_secondaries))
        .route(hostgate_api::DNS_ZONE_QUERY_LOG, post(dns::set_query_log))
        .route(hostgate_api::DNS_POOLS, post(dns::add_pool))
        .route(hostgate_api::DNS_POOL_REMOVE, post(dns::remove_pool))
        .route(hostgate_api::DNS_POOL_LIST, post(dns::list_pools))
        .route(hostgate_api::DNS_RECORDS, post(dns::add_record))
        .route(hostgate_api::DNS_RECORD_REMOVE, post(dns::remove_record))
        .route(hostgate_api::DNS_RECORD_LIST, post(dns::list_records))
        .route(hostgate_api::HTTP_VHOSTS, get(http::list_vhosts).post(http::put_vhost))
        .route(hostgate_api::HTTP_VHOST_REMOVE, post(http::remove_vhost))
        .route(hostgate_api::HTTP_CACHE_PURGE, post(http::purge_cache))
        .route(hostgate_api::HTTP_CERTS, get(http::list_certs).post(http::put_cert))
        .route(hostgate_api::HTTP_CERT_REMOVE, post(http::remove_cert))
        .route(hostgate_api::HTTP_ACME, get(http::list_acme))
        .route(hostgate_api::SSH_KEYS, post(ssh::add_key))
        .route(hostgate_api::SSH_KEY_REMOVE, post(ssh::remove_key))
        .route(hostgate_api::SSH_KEY_LIST, post(ssh::list_keys))
        .route(hostgate_api::SSH_PROXY_KEY, get(ssh::proxy_key))
        .route(hostgate_api::SSH_HISTORY, post(ssh::list_history))
        .route(hostgate_api::SSH_KNOWN_REMOVE, post(ssh::forget_known))
        .route(hostgate_api::SSH_POLICY, post(ssh::policy))
        .route(hostgate_api::SSH_USERS, post(ssh::add_user))
        .route(hostgate_api::SSH_USER_REMOVE, post(ssh::remove_user))
        .route(hostgate_api::SSH_USER_LIST, post(ssh::list_users))
        .fallback(not_found)
        .with_state(daemon)
}

/// An error answer: status code and a message for people.
pub struct Failure(pub StatusCode, pub String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.0, Json(ApiError { error: self.1 })).into_response()
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"))
    }
}

async fn not_found() -> Failure {
    Failure(StatusCode::NOT_FOUND, "no such API endpoint (this daemon speaks /v1)".into())
}

async fn get_status(State(d): State<Arc<Daemon>>) -> Result<Json<Status>, Failure> {
    Ok(Json(status::collect(&d).await?))
}

async fn get_counters(State(d): State<Arc<Daemon>>) -> Result<Json<Vec<CounterRow>>, Failure> {
    let guard = d.dataplane();
    let dp = guard.as_ref().ok_or(Failure(StatusCode::CONFLICT, "the data plane is detached".into()))?;
    let counters = dp.counters().map_err(anyhow::Error::from)?;
    Ok(Json(status::counter_rows(&counters)))
}

/// `hostgate daemon upgrade`: answers, then the daemon hands over (the
/// CLI watches the socket for the successor).
async fn upgrade(State(d): State<Arc<Daemon>>) -> Json<hostgate_api::UpgradeResponse> {
    info!("upgrade requested through the API");
    d.upgrade.notify_one();
    Json(hostgate_api::UpgradeResponse { pid: std::process::id(), started_at: d.started_at })
}

async fn detach(State(d): State<Arc<Daemon>>) -> Result<Json<DetachResponse>, Failure> {
    let taken = d.dataplane().take();
    let Some(dp) = taken else {
        return Err(Failure(StatusCode::CONFLICT, "the data plane is already detached".into()));
    };
    let report = tokio::task::spawn_blocking(move || dp.detach())
        .await
        .map_err(anyhow::Error::from)?
        .map_err(anyhow::Error::from)?;
    info!(links = ?report.links, "data plane detached on request");
    Ok(Json(DetachResponse { links: report.links, pins_removed: report.pins_removed }))
}

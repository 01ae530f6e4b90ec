//! Towards the container: a russh client that logs in with a short-lived
//! user certificate from the hostgate CA (the container's sshd trusts the
//! CA by `TrustedUserCAKeys`, so no key is copied into containers), or
//! with the proxy's own key when the certificate is refused (sshd without
//! the CA, the key in its `authorized_keys`). The container's host key is
//! pinned on first use in `ssh/known/<container>`; a mismatch is refused
//! and logged. Agent channels the container opens are relayed to the
//! customer only when the customer's policy allows agent forwarding.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use hostgate_store::{Compare, Op, Txn};
use russh::{
    client,
    keys::{PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate},
};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::{identity::CertSubject, keys};
use crate::Daemon;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A pinned host key, as stored.
#[derive(Serialize, Deserialize)]
struct Known {
    key: String,
    first_seen: u64,
}

/// Why the upstream could not be reached; recorded in the history.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("host-key-mismatch")]
    HostKeyMismatch,
    #[error("upstream-failed: {0}")]
    Failed(String),
}

pub struct Upstream {
    d: Arc<Daemon>,
    container: String,
    mismatch: Arc<std::sync::atomic::AtomicBool>,
    /// The customer's connection, when its agent may be forwarded.
    agent: Option<russh::server::Handle>,
}

impl client::Handler for Upstream {
    type Error = anyhow::Error;

    async fn check_server_key(&mut self, key: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            warn!(container = %self.container, "container offered a host certificate; only plain keys are pinned");
            return Ok(false);
        };
        let ok = pin(&self.d, &self.container, key).await?;
        if !ok {
            self.mismatch.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(ok)
    }

    async fn server_channel_open_agent_forward(
        &mut self,
        channel: russh::Channel<client::Msg>,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        // Only when the customer asked for it (ssh -A) and may: the proxy
        // forwards auth-agent-req upstream only then, but a container must
        // not open agent channels on its own either.
        let Some(handle) = self.agent.clone() else {
            warn!(container = %self.container, "container opened an agent channel that was not allowed; refused");
            reply.reject(russh::ChannelOpenFailure::AdministrativelyProhibited).await;
            return Ok(());
        };
        match handle.channel_open_agent().await {
            Ok(down) => {
                reply.accept().await;
                // Agent traffic is not the session's data: its own tally.
                super::relay::spawn(down, channel, handle, Arc::new(super::relay::Tally::default()), false);
            }
            Err(e) => {
                tracing::debug!(error = %e, "the customer refused the agent channel");
                reply.reject(russh::ChannelOpenFailure::ConnectFailed).await;
            }
        }
        Ok(())
    }

    // `hostkeys-00@openssh.com` from the container is consumed here (logged
    // by russh at debug) and never reaches the customer: the relay only
    // forwards channel traffic, and customers pin the proxy's own keys.
}

/// True when `key` is the container's pinned key, or nothing was pinned
/// yet (then it is now).
async fn pin(d: &Daemon, container: &str, key: &PublicKey) -> anyhow::Result<bool> {
    let store_key = keys::known(container);
    let line = key.to_openssh()?;
    if let Some(kv) = d.store.get(&store_key).await? {
        let known: Known = kv.decode()?;
        if same_key(&known.key, &line) {
            return Ok(true);
        }
        warn!(
            %container,
            pinned = %known.key,
            offered = %line,
            "container host key mismatch; refused (after a deliberate change: hostgate ssh known-rm CONTAINER)"
        );
        return Ok(false);
    }
    let known = Known { key: line.clone(), first_seen: crate::now() };
    let txn = Txn::new().when(Compare::Absent(store_key.clone())).then(Op::put_json(&store_key, &known)?);
    d.store.commit(txn).await?;
    info!(%container, key = %line, "container host key pinned on first use");
    Ok(true)
}

/// Compares type and key material, not comments.
fn same_key(a: &str, b: &str) -> bool {
    a.split_whitespace().take(2).eq(b.split_whitespace().take(2))
}

fn config() -> Arc<client::Config> {
    Arc::new(client::Config {
        client_id: russh::SshId::Standard("SSH-2.0-hostgate".into()),
        window_size: super::server::WINDOW,
        maximum_packet_size: super::server::PACKET,
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(30)),
        keepalive_max: 3,
        nodelay: true,
        preferred: super::preferred(super::Leg::Container),
        ..Default::default()
    })
}

/// How the proxy logged in to a container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Login {
    Certificate,
    ProxyKey,
}

/// Connects to the container's sshd and logs in as `user`: with a fresh
/// certificate for `who`, else with the proxy's key. `agent`: the
/// customer's connection, if agent channels may be relayed to it.
pub async fn connect(
    d: Arc<Daemon>,
    container: &str,
    addr: SocketAddr,
    user: &str,
    who: &CertSubject<'_>,
    agent: Option<russh::server::Handle>,
) -> Result<(client::Handle<Upstream>, Login), UpstreamError> {
    let failed = |e: anyhow::Error| UpstreamError::Failed(format!("{e:#}"));
    let key = Arc::new(super::identity::client_key(&d).await.map_err(failed)?);
    let ca = super::identity::ca_key(&d).await.map_err(failed)?;
    let cert = super::identity::sign_user_cert(&ca, &key, user, who).map_err(failed)?;
    let mismatch = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let handler = Upstream { d, container: container.to_string(), mismatch: mismatch.clone(), agent };
    let connecting = client::connect(config(), addr, handler);
    let mut handle = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(Ok(h)) => h,
        _ if mismatch.load(std::sync::atomic::Ordering::Relaxed) => return Err(UpstreamError::HostKeyMismatch),
        Ok(Err(e)) => return Err(failed(e.context(format!("connecting to {addr}")))),
        Err(_) => return Err(UpstreamError::Failed(format!("connecting to {addr}: timed out"))),
    };
    let by_cert = tokio::time::timeout(CONNECT_TIMEOUT, handle.authenticate_openssh_cert(user, key.clone(), cert))
        .await
        .context("timed out")
        .and_then(|r| r.context("authenticating with a certificate"))
        .map_err(failed)?;
    if by_cert.success() {
        return Ok((handle, Login::Certificate));
    }
    // The fallback: the container trusts the proxy's key itself.
    let plain = PrivateKeyWithHashAlg::new(key, None);
    let auth = tokio::time::timeout(CONNECT_TIMEOUT, handle.authenticate_publickey(user, plain))
        .await
        .context("timed out")
        .and_then(|r| r.context("authenticating"))
        .map_err(failed)?;
    if !auth.success() {
        return Err(UpstreamError::Failed(format!(
            "{addr} refused both the hostgate CA's certificate and the proxy's key for {user} \
             (`hostgate ssh ca show` for its TrustedUserCAKeys, or `hostgate ssh proxy-key --client` for its authorized_keys)"
        )));
    }
    Ok((handle, Login::ProxyKey))
}

//! One relayed channel: whatever the customer's client sends goes to the
//! container's sshd and back, as raw channel data and channel requests.
//! SFTP, scp and exec output are bytes here, never parsed. Each direction
//! is its own task, so a full window one way never stalls the other.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

use russh::{client, server, Channel, ChannelId, ChannelMsg, ChannelReadHalf, ChannelWriteHalf};
use tracing::debug;

/// Bytes and the exit status of a connection's channels, and when data
/// last moved (the idle timeout's clock).
#[derive(Debug)]
pub struct Tally {
    pub up: AtomicU64,
    pub down: AtomicU64,
    /// Exit status + 1; 0: none yet.
    pub exit: AtomicU64,
    epoch: std::time::Instant,
    /// Milliseconds since `epoch` at the last channel data either way.
    last_data_ms: AtomicU64,
    /// Authentication succeeded (the login grace timer's question).
    pub logged_in: std::sync::atomic::AtomicBool,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
            exit: AtomicU64::new(0),
            epoch: std::time::Instant::now(),
            last_data_ms: AtomicU64::new(0),
            logged_in: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl Tally {
    fn touch(&self) {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_data_ms.store(now, Ordering::Relaxed);
    }

    /// Time since channel data last moved (since the start if never).
    pub fn idle(&self) -> std::time::Duration {
        let last = std::time::Duration::from_millis(self.last_data_ms.load(Ordering::Relaxed));
        self.epoch.elapsed().saturating_sub(last)
    }

    pub fn exit_status(&self) -> Option<u32> {
        self.exit.load(Ordering::Relaxed).checked_sub(1).and_then(|s| u32::try_from(s).ok())
    }
}

/// Relays `down` (the customer's channel) and `up` (the container's) until
/// either side closes. `agent`: the customer may forward its agent, so
/// its auth-agent-req goes on to the container.
pub fn spawn(
    down: Channel<server::Msg>,
    up: Channel<client::Msg>,
    handle: server::Handle,
    tally: Arc<Tally>,
    agent: bool,
) {
    let id = down.id();
    let (down_r, down_w) = down.split();
    let (up_r, up_w) = up.split();
    tokio::spawn(to_container(down_r, up_w, handle.clone(), id, tally.clone(), agent));
    tokio::spawn(to_client(up_r, down_w, handle, id, tally));
}

async fn to_container(
    mut down: ChannelReadHalf,
    up: ChannelWriteHalf<client::Msg>,
    handle: server::Handle,
    id: ChannelId,
    tally: Arc<Tally>,
    agent: bool,
) {
    while let Some(msg) = down.wait().await {
        // russh reports every request as want_reply; OpenSSH asks for a
        // reply to pty-req, shell, exec and subsystem, and the container's
        // reply is relayed in order (to_client). env and window-change
        // never want one.
        let sent = match msg {
            ChannelMsg::Data { data } => {
                tally.up.fetch_add(data.len() as u64, Ordering::Relaxed);
                tally.touch();
                up.data_bytes(data).await
            }
            ChannelMsg::ExtendedData { data, ext } => up.extended_data_bytes(ext, data).await,
            ChannelMsg::Eof => up.eof().await,
            ChannelMsg::Close => {
                let _ = up.close().await;
                break;
            }
            ChannelMsg::RequestPty { term, col_width, row_height, pix_width, pix_height, terminal_modes, .. } => {
                up.request_pty(true, &term, col_width, row_height, pix_width, pix_height, &terminal_modes).await
            }
            ChannelMsg::RequestShell { .. } => up.request_shell(true).await,
            ChannelMsg::Exec { command, .. } => up.exec(true, command).await,
            ChannelMsg::RequestSubsystem { name, .. } => up.request_subsystem(true, name).await,
            ChannelMsg::WindowChange { col_width, row_height, pix_width, pix_height } => {
                up.window_change(col_width, row_height, pix_width, pix_height).await
            }
            ChannelMsg::SetEnv { variable_name, variable_value, .. } => {
                up.set_env(false, variable_name, variable_value).await
            }
            ChannelMsg::Signal { signal } => up.signal(signal).await,
            // russh has already answered the customer (Conn::agent_request);
            // the container's answer must not become a second reply.
            ChannelMsg::AgentForward { .. } if agent => up.agent_forward(false).await,
            // X11 is not forwarded.
            ChannelMsg::RequestX11 { .. } => handle.channel_failure(id).await.map_err(|_| russh::Error::SendError),
            _ => Ok(()),
        };
        if let Err(e) = sent {
            debug!(error = %e, "relay to the container ended");
            break;
        }
    }
}

async fn to_client(
    mut up: ChannelReadHalf,
    down: ChannelWriteHalf<server::Msg>,
    handle: server::Handle,
    id: ChannelId,
    tally: Arc<Tally>,
) {
    let send_err = |_| russh::Error::SendError;
    while let Some(msg) = up.wait().await {
        let sent = match msg {
            ChannelMsg::Data { data } => {
                tally.down.fetch_add(data.len() as u64, Ordering::Relaxed);
                tally.touch();
                down.data_bytes(data).await
            }
            ChannelMsg::ExtendedData { data, ext } => {
                tally.down.fetch_add(data.len() as u64, Ordering::Relaxed);
                tally.touch();
                down.extended_data_bytes(ext, data).await
            }
            ChannelMsg::Eof => down.eof().await,
            ChannelMsg::Close => break,
            ChannelMsg::ExitStatus { exit_status } => {
                tally.exit.store(u64::from(exit_status) + 1, Ordering::Relaxed);
                down.exit_status(exit_status).await
            }
            ChannelMsg::ExitSignal { signal_name, core_dumped, error_message, lang_tag } => handle
                .exit_signal_request(id, signal_name, core_dumped, error_message, lang_tag)
                .await
                .map_err(send_err),
            ChannelMsg::Success => handle.channel_success(id).await.map_err(send_err),
            ChannelMsg::Failure => handle.channel_failure(id).await.map_err(send_err),
            _ => Ok(()),
        };
        if let Err(e) = sent {
            debug!(error = %e, "relay to the client ended");
            break;
        }
    }
    // The container closed the channel, or its connection is gone.
    let _ = down.close().await;
}

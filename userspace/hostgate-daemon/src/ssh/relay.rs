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

/// Bytes and the exit status of a connection's channels.
#[derive(Debug, Default)]
pub struct Tally {
    pub up: AtomicU64,
    pub down: AtomicU64,
    /// Exit status + 1; 0: none yet.
    pub exit: AtomicU64,
}

impl Tally {
    pub fn exit_status(&self) -> Option<u32> {
        self.exit.load(Ordering::Relaxed).checked_sub(1).and_then(|s| u32::try_from(s).ok())
    }
}

/// Relays `down` (the customer's channel) and `up` (the container's) until
/// either side closes.
pub fn spawn(down: Channel<server::Msg>, up: Channel<client::Msg>, handle: server::Handle, tally: Arc<Tally>) {
    let id = down.id();
    let (down_r, down_w) = down.split();
    let (up_r, up_w) = up.split();
    tokio::spawn(to_container(down_r, up_w, handle.clone(), id, tally.clone()));
    tokio::spawn(to_client(up_r, down_w, handle, id, tally));
}

async fn to_container(
    mut down: ChannelReadHalf,
    up: ChannelWriteHalf<client::Msg>,
    handle: server::Handle,
    id: ChannelId,
    tally: Arc<Tally>,
) {
    while let Some(msg) = down.wait().await {
        // russh reports every request as want_reply; OpenSSH asks for a
        // reply to pty-req, shell, exec and subsystem, and the container's
        // reply is relayed in order (to_client). env and window-change
        // never want one.
        let sent = match msg {
            ChannelMsg::Data { data } => {
                tally.up.fetch_add(data.len() as u64, Ordering::Relaxed);
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
            // X11 is not forwarded; agent forwarding is answered by russh
            // itself (refused by our handler's default).
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
                down.data_bytes(data).await
            }
            ChannelMsg::ExtendedData { data, ext } => {
                tally.down.fetch_add(data.len() as u64, Ordering::Relaxed);
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

//! The request head deadline of HTTP/1.1 connections, as NGINX's
//! `client_header_timeout`: a connection's first request head must be
//! complete within `[http] header_timeout_secs` of the accept (of the
//! handshake, over TLS), and every later one within as long of its first
//! byte, else 408 and close. pingora itself times each read, not the
//! head, so a client adding a header line every few seconds (slowloris)
//! would hold the connection forever.
//!
//! `HeadDeadline` sits between the stream and pingora's HTTP/1.1 session;
//! the connection's loop (`serve_h1`) re-arms it before each request. It
//! watches only until the head's end (`hostgate_http::head::HeadEnd`):
//! bodies and upgraded protocols pass untimed. pingora does not pipeline,
//! so a reused connection's next head comes whole from later reads. On
//! time-out it writes the 408 and tells the loop, which drops the
//! connection: a read error would make pingora log every slow client at
//! error level.

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use hostgate_http::head::HeadEnd;
use pingora::{
    apps::HttpServerApp,
    protocols::{http::ServerSession, Stream},
    proxy::HttpProxy,
    server::ShutdownWatch,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tracing::debug;

use super::{proxy::Proxy, serve::Front};

pub(super) const REQUEST_TIMEOUT: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/// Between a connection's loop and its stream.
#[derive(Default)]
struct Arming {
    /// Set by the loop before each request after the first.
    rearm: AtomicBool,
    /// Told by the stream when a head took too long.
    expired: tokio::sync::Notify,
}

/// A stream whose request heads are timed.
pub struct HeadDeadline {
    inner: Stream,
    limit: Duration,
    arming: Arc<Arming>,
    /// Until the head's end is read.
    watching: bool,
    end: HeadEnd,
    /// Started by the first byte of a head (or at once for the first).
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    front: Arc<Front>,
}

impl std::fmt::Debug for HeadDeadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeadDeadline").field("watching", &self.watching).finish_non_exhaustive()
    }
}

impl HeadDeadline {
    fn inner(&self) -> &Stream {
        &self.inner
    }

    fn inner_mut(&mut self) -> &mut Stream {
        &mut self.inner
    }

    /// The 408 (if the stream takes it at once), the count, and the loop
    /// told to close.
    fn time_out(&mut self, cx: &mut Context<'_>) {
        self.front.count_header_timeout();
        if let Poll::Ready(Ok(_)) = Pin::new(&mut self.inner).poll_write(cx, REQUEST_TIMEOUT) {
            let _ = Pin::new(&mut self.inner).poll_flush(cx);
        }
        self.watching = false;
        self.deadline = None;
        self.arming.expired.notify_one();
    }
}

impl AsyncRead for HeadDeadline {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.arming.rearm.swap(false, Ordering::Relaxed) {
            this.watching = true;
            this.end = HeadEnd::default();
            this.deadline = None;
        }
        if !this.watching {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        if let Some(deadline) = this.deadline.as_mut() {
            if deadline.as_mut().poll(cx).is_ready() {
                // The loop drops the connection; nothing more is read.
                this.time_out(cx);
                return Poll::Pending;
            }
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        let new = &buf.filled()[before..];
        if matches!(read, Poll::Ready(Ok(()))) && !new.is_empty() {
            if this.end.find(new).is_some() {
                this.watching = false;
                this.deadline = None;
            } else if this.deadline.is_none() {
                this.deadline = Some(Box::pin(tokio::time::sleep(this.limit)));
            }
        }
        read
    }
}

super::buffered::forward_stream_traits!([] HeadDeadline);
super::buffered::pass_writes_through!(HeadDeadline);

/// One HTTP/1.1 connection: pingora's keep-alive loop (as its
/// `ServerApp::process_new` runs it), with every request head timed: the
/// first by `first_deadline`, each later one `limit` after its first byte.
pub async fn serve_h1(
    app: &Arc<HttpProxy<Proxy>>,
    stream: Stream,
    first_deadline: tokio::time::Instant,
    limit: Duration,
    front: Arc<Front>,
    shutdown: &ShutdownWatch,
) {
    let arming = Arc::new(Arming::default());
    let timed = HeadDeadline {
        inner: stream,
        limit,
        arming: arming.clone(),
        watching: true,
        end: HeadEnd::default(),
        deadline: Some(Box::pin(tokio::time::sleep_until(first_deadline))),
        front,
    };
    let requests = async {
        let mut session = ServerSession::new_http1(Box::new(timed));
        // pingora's defaults: 60 s idle between requests, none when draining.
        session.set_keepalive(if *shutdown.borrow() { None } else { Some(60) });
        let limit = app.server_options().and_then(|o| o.keepalive_request_limit);
        session.set_keepalive_reuses_remaining(limit);
        let mut reused = app.process_new_http(session, shutdown).await;
        while let Some((stream, settings)) = reused.map(|r| r.consume()) {
            let mut session = ServerSession::new_http1(stream);
            if let Some(settings) = settings {
                settings.apply_to_session(&mut session);
            }
            arming.rearm.store(true, Ordering::Relaxed);
            reused = app.process_new_http(session, shutdown).await;
        }
    };
    tokio::select! {
        () = requests => {}
        () = arming.expired.notified() => debug!("request head not complete in time: 408"),
    }
}

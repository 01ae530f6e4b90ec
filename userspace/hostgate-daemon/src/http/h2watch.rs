//! Counting the GOAWAY frames the proxy sends on HTTP/2 connections (the
//! h2 crate under pingora ends a rapid-reset flood or a protocol error
//! with one and reports it nowhere; see `hostgate_http::h2frames`).
//! `GoawayWatch` wraps a negotiated-h2 TLS stream, scans every byte
//! written for GOAWAY frames and counts them by error code; everything
//! else passes through.

use std::{
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    task::{Context, Poll},
};

use async_trait::async_trait;
use hostgate_http::h2frames::{error_name, GoawayScanner};
use pingora::protocols::{Shutdown, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// HTTP/2 error codes 0..=13 (RFC 9113 §7), then any other.
const CODES: usize = 15;

/// GOAWAY frames sent, by error code.
#[derive(Debug, Default)]
pub struct GoawayCounts([AtomicU64; CODES]);

impl GoawayCounts {
    fn add(&self, code: u32) {
        let i = usize::try_from(code).map_or(CODES - 1, |c| c.min(CODES - 1));
        self.0[i].fetch_add(1, Ordering::Relaxed);
    }

    /// (error name, count) of every code sent at least once.
    pub fn snapshot(&self) -> std::collections::BTreeMap<String, u64> {
        let named = self.0.iter().enumerate().map(|(code, n)| (error_name(code as u32), n.load(Ordering::Relaxed)));
        named.filter(|(_, n)| *n > 0).map(|(name, n)| (name.to_string(), n)).collect()
    }
}

/// An HTTP/2 connection's stream, watched for the GOAWAYs written to it.
#[derive(Debug)]
pub struct GoawayWatch {
    inner: Stream,
    scanner: GoawayScanner,
    counts: Arc<GoawayCounts>,
}

impl GoawayWatch {
    pub fn new(inner: Stream, counts: Arc<GoawayCounts>) -> GoawayWatch {
        GoawayWatch { inner, scanner: GoawayScanner::default(), counts }
    }

    fn inner(&self) -> &Stream {
        &self.inner
    }

    fn inner_mut(&mut self) -> &mut Stream {
        &mut self.inner
    }

    fn saw(&mut self, written: &[u8]) {
        for code in self.scanner.scan(written) {
            self.counts.add(code);
        }
    }
}

impl AsyncRead for GoawayWatch {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for GoawayWatch {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = written {
            self.saw(&buf[..n]);
        }
        written
    }

    /// Not vectored: the default `poll_write_vectored` writes the first
    /// non-empty slice through `poll_write`, so every byte is scanned.
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for GoawayWatch {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await;
    }
}

super::buffered::forward_stream_traits!([] GoawayWatch);

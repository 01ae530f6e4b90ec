//! Write coalescing for accepted connections, as pingora's own listener
//! does.
//!
//! pingora's listener service gives every accepted stream a write buffer
//! (`L4BufferSettings`, one MSS) before the TLS handshake, and its HTTP
//! code is written for that: a response head goes into the buffer and
//! leaves with the body at the next flush (end of body, 1xx, head-only
//! responses). A `Stream` made from our own tokio listener has no buffer
//! (`Stream::set_buffer` is crate-private), so every write was a
//! `send(2)`: the head and the body of each response left as two TCP
//! segments (two TLS records over TLS), waking the client twice. That cost
//! the proxy about three quarters of its keep-alive throughput in `cargo
//! xtask bench http`. `Buffered` puts the same buffer back around the
//! stream and passes everything else through.
//!
//! Over TLS a second one sits above the TLS stream, for HTTP/1.1: rustls
//! seals every write as its own record, so head and body were two records
//! (two AEAD seals, two record headers) per response; buffered until
//! pingora flushes, a response up to 16 KiB is one record, as NGINX's
//! `ssl_buffer_size` makes it.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use async_trait::async_trait;
use pingora::protocols::{Shutdown, IO};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter, ReadBuf};

/// pingora's `DEFAULT_L4_WRITE_BUFFER_SIZE`: one Ethernet MSS, so a small
/// response (head and body) leaves in one segment and a large one in
/// full segments.
pub const SEGMENT: usize = 1460;

/// The most plaintext of one TLS record (RFC 8446 §5.1).
pub const RECORD: usize = 16 * 1024;

/// A stream whose writes are buffered until pingora flushes.
#[derive(Debug)]
pub struct Buffered<S: IO>(BufWriter<S>);

impl<S: IO> Buffered<S> {
    pub fn new(stream: S, capacity: usize) -> Buffered<S> {
        Buffered(BufWriter::with_capacity(capacity, stream))
    }

    fn inner(&self) -> &S {
        self.0.get_ref()
    }

    fn inner_mut(&mut self) -> &mut S {
        self.0.get_mut()
    }
}

impl<S: IO> AsyncRead for Buffered<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: IO> AsyncWrite for Buffered<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    /// Flushes what is buffered, then shuts the stream down.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[async_trait]
impl<S: IO> Shutdown for Buffered<S> {
    async fn shutdown(&mut self) {
        if let Err(e) = AsyncWriteExt::shutdown(&mut self.0).await {
            tracing::debug!(error = %e, "shutting an HTTP connection down");
        }
    }
}

/// The pingora stream traits a wrapper passes through to the stream it
/// wraps (`self.inner()` / `self.inner_mut()`): connection identity, TLS,
/// peeking and the digests. Reading, writing and shutting down are each
/// wrapper's own.
macro_rules! forward_stream_traits {
    ([$($generics:tt)*] $wrapper:ty) => {
        impl<$($generics)*> pingora::protocols::UniqueID for $wrapper {
            fn id(&self) -> pingora::protocols::UniqueIDType {
                self.inner().id()
            }
        }

        impl<$($generics)*> pingora::protocols::Ssl for $wrapper {
            fn get_ssl(&self) -> Option<&pingora::protocols::tls::TlsRef> {
                self.inner().get_ssl()
            }

            fn get_ssl_digest(&self) -> Option<std::sync::Arc<pingora::protocols::tls::SslDigest>> {
                self.inner().get_ssl_digest()
            }

            fn selected_alpn_proto(&self) -> Option<pingora::protocols::ALPN> {
                self.inner().selected_alpn_proto()
            }
        }

        #[async_trait::async_trait]
        impl<$($generics)*> pingora::protocols::Peek for $wrapper {
            async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
                self.inner_mut().try_peek(buf).await
            }
        }

        impl<$($generics)*> pingora::protocols::GetTimingDigest for $wrapper {
            fn get_timing_digest(&self) -> Vec<Option<pingora::protocols::TimingDigest>> {
                self.inner().get_timing_digest()
            }

            fn get_read_pending_time(&self) -> std::time::Duration {
                self.inner().get_read_pending_time()
            }

            fn get_write_pending_time(&self) -> std::time::Duration {
                self.inner().get_write_pending_time()
            }
        }

        impl<$($generics)*> pingora::protocols::GetProxyDigest for $wrapper {
            fn get_proxy_digest(&self) -> Option<std::sync::Arc<pingora::protocols::raw_connect::ProxyDigest>> {
                self.inner().get_proxy_digest()
            }

            fn set_proxy_digest(&mut self, digest: pingora::protocols::raw_connect::ProxyDigest) {
                self.inner_mut().set_proxy_digest(digest);
            }
        }

        impl<$($generics)*> pingora::protocols::GetSocketDigest for $wrapper {
            fn get_socket_digest(&self) -> Option<std::sync::Arc<pingora::protocols::SocketDigest>> {
                self.inner().get_socket_digest()
            }

            fn set_socket_digest(&mut self, digest: pingora::protocols::SocketDigest) {
                self.inner_mut().set_socket_digest(digest);
            }
        }
    };
}
pub(super) use forward_stream_traits;

/// Writing and shutting down passed straight through to `self.inner` (a
/// pingora `Stream`), for wrappers that only watch or replay reads.
macro_rules! pass_writes_through {
    ($wrapper:ty) => {
        impl tokio::io::AsyncWrite for $wrapper {
            fn poll_write(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
            }

            fn poll_write_vectored(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                self.inner.is_write_vectored()
            }

            fn poll_flush(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.inner).poll_flush(cx)
            }

            fn poll_shutdown(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
            }
        }

        #[async_trait::async_trait]
        impl pingora::protocols::Shutdown for $wrapper {
            async fn shutdown(&mut self) {
                pingora::protocols::Shutdown::shutdown(&mut *self.inner).await;
            }
        }
    };
}
pub(super) use pass_writes_through;

forward_stream_traits!([S: IO] Buffered<S>);

//! Limits on the connections of a server, so that slow or hostile clients
//! cannot hold it: how many connections at once, how long a TLS handshake,
//! a request head or a body may take, how long a connection may sit idle,
//! how large a request head may be, and how many HTTP/2 streams a
//! connection may open.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The limits of every connection of a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections served at once; a connection beyond is closed at once,
    /// so that its client can try another replica.
    pub max_connections: usize,
    /// Time for the TLS handshake and, over HTTP/1.1, for each request
    /// head (from the end of the previous response: it also closes idle
    /// HTTP/1.1 connections). Stops slowloris clients.
    pub header_read_timeout: Duration,
    /// Time to receive a request's body (answered with 408).
    pub body_read_timeout: Duration,
    /// A connection that neither sends nor receives a byte for this long is
    /// closed. Longer than the 90 s Go clients (the API server) keep idle
    /// connections, so that the client closes first.
    pub idle_timeout: Duration,
    /// Largest request head: HTTP/1.1 read buffer (8 KiB at least), HTTP/2
    /// header list.
    pub max_header_bytes: usize,
    /// Streams one HTTP/2 connection may have open at once.
    pub http2_max_concurrent_streams: u32,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            max_header_bytes: 64 << 10,
            http2_max_concurrent_streams: 256,
        }
    }
}

/// A stream that fails with `TimedOut` once it has neither read nor
/// written anything for its timeout; until its first byte arrives the
/// timeout is shorter (a client that connects and says nothing is a
/// slowloris too, and no protocol timer runs yet).
///
/// Activity only records the time; the timer is moved when it fires, so a
/// busy connection costs a clock read per operation, not a timer update.
pub(crate) struct IdleTimeout<S> {
    inner: S,
    /// The timeout now: `first_byte` until something is read, then `idle`.
    timeout: Duration,
    idle: Duration,
    last_active: Instant,
    sleep: Pin<Box<Sleep>>,
}

impl<S> IdleTimeout<S> {
    pub(crate) fn new(inner: S, first_byte: Duration, idle: Duration) -> Self {
        Self {
            inner,
            timeout: first_byte,
            idle,
            last_active: Instant::now(),
            sleep: Box::pin(tokio::time::sleep(first_byte)),
        }
    }

    /// `Pending` stays pending unless the idle time is up.
    fn check<T>(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if result.is_ready() {
            self.last_active = Instant::now();
            return result;
        }
        while self.sleep.as_mut().poll(cx).is_ready() {
            let deadline = self.last_active + self.timeout;
            if deadline <= Instant::now() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "connection idle for too long",
                )));
            }
            self.sleep.as_mut().reset(deadline);
        }
        Poll::Pending
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleTimeout<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if result.is_ready() && this.timeout != this.idle {
            // The first byte: from now on the idle timeout, from now.
            this.timeout = this.idle;
            this.sleep.as_mut().reset(Instant::now() + this.idle);
        }
        this.check(cx, result)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.check(cx, result)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.check(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

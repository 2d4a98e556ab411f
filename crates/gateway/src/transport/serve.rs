//! The HTTP front's own accept loop: hyper's HTTP/1.1 connections with the bounds `axum::serve`
//! does not offer (docs/security.md, "Limits").
//!
//! - At most `max_connections` connections are open at once. Past it, new connections are not
//!   accepted: they wait in the kernel's listen backlog (a client's connect succeeds, its
//!   request is read once a connection closes) and nothing of them is held in this process.
//! - A connection's request headers must be complete within `header_timeout` of its opening,
//!   or of the first byte of its next request; an idle keep-alive connection (its previous
//!   answer sent, no byte of a new request) is closed after `idle_timeout`; a request's body
//!   must be complete within `body_timeout` of its headers (its body then fails: `/mcp`
//!   answers 408). A timed-out connection is closed without an answer, as a slow-loris client
//!   deserves.
//! - A connection with a request in flight (a long call, a held approval, an open event
//!   stream) has no timeout here (the request's own bounds apply), but one: a write that cannot
//!   go on (the client reads nothing, its socket's buffers are full) for `write_timeout` closes
//!   the connection, so a client that stops reading cannot hold a connection slot, a session's
//!   stream or its queued answers for ever.
//! - HTTPS ([`serve_tls`]): a connection's TLS handshake runs in its own task (a slow one holds
//!   up no other) and must be complete within `handshake_timeout` of the connection's opening
//!   (a client that opens TCP and never sends its ClientHello is closed, and counted in
//!   `tollgate_tls_handshakes_timed_out_total`; a failed handshake in
//!   `tollgate_tls_handshakes_failed_total`); its slot is held meanwhile. The header, body,
//!   keep-alive and write timeouts then apply to the decrypted stream as to a plain one.
//! - Shutdown: the listener closes, idle connections close at once, the others once their
//!   requests are answered (bounded by [`super::DRAIN_TIMEOUT`]).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, watch};
use tokio::time::Instant;
use tollgate_mcp::tls::{HandshakeError, TlsAcceptor};

use super::{DRAIN_TIMEOUT, HttpFront, TransportLimits, http_router, stopped};

/// Serves the front's router on `listener` until the front's shutdown turns true, with its
/// limits; idle sessions expire meanwhile ([`super::expire_idle_sessions`]).
pub async fn serve(listener: TcpListener, front: Arc<HttpFront>) -> std::io::Result<()> {
    serve_with(listener, front, None).await
}

/// [`serve`] over https: each connection's TLS handshake (bounded by the limits'
/// `handshake_timeout`) with `tls` (`tollgate_mcp::tls::server_config`), then HTTP as [`serve`].
pub async fn serve_tls(
    listener: TcpListener,
    front: Arc<HttpFront>,
    tls: Arc<rustls::ServerConfig>,
) -> std::io::Result<()> {
    serve_with(listener, front, Some(TlsAcceptor::from(tls))).await
}

async fn serve_with(
    listener: TcpListener,
    front: Arc<HttpFront>,
    tls: Option<TlsAcceptor>,
) -> std::io::Result<()> {
    let router = http_router(Arc::clone(&front));
    let limits = front.limits;
    let mut shutdown = front.shutdown.clone();
    let sweeper = tokio::spawn(super::expire_idle_sessions(Arc::clone(&front)));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        // A free slot first: past the cap, connections wait in the kernel's backlog.
        let permit = tokio::select! {
            permit = Arc::clone(&front.connections).acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            () = stopped(&mut shutdown) => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors, or a connection reset before it was accepted: wait a
                    // little rather than spin.
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut shutdown) => break,
        };
        connections.spawn(open_connection(
            stream,
            tls.clone(),
            Handshakes {
                timed_out: front.metrics.tls_handshakes_timed_out.clone(),
                failed: front.metrics.tls_handshakes_failed.clone(),
            },
            router.clone(),
            limits,
            front.shutdown.clone(),
            permit,
        ));
        // Reap the connections that ended, so the set holds only open ones.
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    sweeper.abort();
    // Every connection saw the shutdown: idle ones closed, the others finish their requests.
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            "{} connection(s) still open after {} s of shutdown: closed",
            connections.len(),
            DRAIN_TIMEOUT.as_secs()
        );
        connections.shutdown().await;
    }
    Ok(())
}

/// Where a connection is between requests, for its timeouts.
const WAITING_FOR_HEAD: u8 = 0;
const IN_REQUEST: u8 = 1;
const IDLE: u8 = 2;

/// One connection's phase and since when, shared by its socket (which sees bytes arrive), its
/// service (which sees requests start) and its answers' bodies (which see them end).
#[derive(Debug)]
struct ConnectionClock {
    phase: AtomicU8,
    /// Milliseconds since `opened` at which the phase began.
    since: AtomicU64,
    opened: Instant,
    /// Wakes the connection's task when the phase changes, to set its timer again.
    changed: Notify,
    /// Milliseconds since `opened` at which a write started to wait for room in the socket
    /// ([`NOT_BLOCKED`]: none waits).
    write_blocked: AtomicU64,
}

/// [`ConnectionClock::write_blocked`] when no write waits.
const NOT_BLOCKED: u64 = u64::MAX;

impl ConnectionClock {
    fn new() -> ConnectionClock {
        ConnectionClock {
            phase: AtomicU8::new(WAITING_FOR_HEAD),
            since: AtomicU64::new(0),
            opened: Instant::now(),
            changed: Notify::new(),
            write_blocked: AtomicU64::new(NOT_BLOCKED),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn enter(&self, phase: u8) {
        self.since.store(self.now_ms(), Ordering::Relaxed);
        self.phase.store(phase, Ordering::Release);
        self.changed.notify_one();
    }

    /// Bytes arrived: on an idle connection, they begin a request's head.
    fn bytes_read(&self) {
        if self.phase.load(Ordering::Acquire) == IDLE {
            self.enter(WAITING_FOR_HEAD);
        }
    }

    /// A write found no room in the socket (`ready` false) or went through (`ready` true).
    fn write_polled(&self, ready: bool) {
        let blocked = self.write_blocked.load(Ordering::Relaxed);
        if ready {
            if blocked != NOT_BLOCKED {
                self.write_blocked.store(NOT_BLOCKED, Ordering::Relaxed);
                self.changed.notify_one();
            }
        } else if blocked == NOT_BLOCKED {
            self.write_blocked.store(self.now_ms(), Ordering::Relaxed);
            self.changed.notify_one();
        }
    }

    /// When the connection times out in its present phase (`None`: a request is in flight and
    /// no write waits for room).
    fn deadline(&self, limits: &TransportLimits) -> Option<Instant> {
        let blocked = self.write_blocked.load(Ordering::Relaxed);
        if blocked != NOT_BLOCKED {
            return Some(self.opened + Duration::from_millis(blocked) + limits.write_timeout);
        }
        let limit = match self.phase.load(Ordering::Acquire) {
            WAITING_FOR_HEAD => limits.header_timeout,
            IDLE => limits.idle_timeout,
            _ => return None,
        };
        let since = Duration::from_millis(self.since.load(Ordering::Relaxed));
        Some(self.opened + since + limit)
    }
}

/// Marks a request's end when dropped: with its answer's body once hyper has written it, or
/// with the request's future if the connection went away first.
#[derive(Debug)]
struct RequestEnd(Arc<ConnectionClock>);

impl Drop for RequestEnd {
    fn drop(&mut self) {
        self.0.enter(IDLE);
    }
}

/// The counters of handshakes that did not complete.
#[derive(Debug, Clone)]
struct Handshakes {
    timed_out: prometheus_client::metrics::counter::Counter,
    failed: prometheus_client::metrics::counter::Counter,
}

/// One accepted connection: its TLS handshake first if the listener serves https (bounded by
/// `handshake_timeout`, given up at shutdown), then its requests.
async fn open_connection(
    stream: TcpStream,
    tls: Option<TlsAcceptor>,
    handshakes: Handshakes,
    router: Router,
    limits: TransportLimits,
    mut shutdown: watch::Receiver<bool>,
    slot: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let Some(acceptor) = tls else {
        return serve_connection(stream, router, limits, shutdown, slot).await;
    };
    let handshake = tokio::select! {
        h = tollgate_mcp::tls::accept(&acceptor, stream, limits.handshake_timeout) => h,
        () = stopped(&mut shutdown) => return,
    };
    match handshake {
        Ok(stream) => serve_connection(stream, router, limits, shutdown, slot).await,
        Err(e @ HandshakeError::TimedOut(_)) => {
            handshakes.timed_out.inc();
            tracing::debug!("closed a connection: {e}");
        }
        Err(e @ HandshakeError::Failed(_)) => {
            handshakes.failed.inc();
            tracing::debug!("closed a connection: {e}");
        }
    }
}

async fn serve_connection<S>(
    stream: S,
    router: Router,
    limits: TransportLimits,
    mut shutdown: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let clock = Arc::new(ConnectionClock::new());
    let io = TokioIo::new(WatchedIo {
        inner: stream,
        clock: Arc::clone(&clock),
    });
    let service = {
        let clock = Arc::clone(&clock);
        hyper::service::service_fn(move |request: Request<Incoming>| {
            clock.enter(IN_REQUEST);
            let end = RequestEnd(Arc::clone(&clock));
            let mut router = router.clone();
            let body_deadline = Instant::now() + limits.body_timeout;
            async move {
                let request = request.map(|body| {
                    Body::new(DeadlineBody {
                        inner: body,
                        deadline: body_deadline,
                        timeout: limits.body_timeout,
                        sleep: None,
                    })
                });
                let response: Response<Body> =
                    match tower::Service::call(&mut router, request).await {
                        Ok(r) => r,
                        Err(never) => match never {},
                    };
                Ok::<_, Infallible>(response.map(|body| Body::new(EndsRequest { body, _end: end })))
            }
        })
    };
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let mut draining = false;
    loop {
        let deadline = clock.deadline(&limits);
        let timer = async {
            match deadline {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            served = connection.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!("connection ended: {e}");
                }
                return;
            }
            () = timer => {
                if clock.deadline(&limits).is_some_and(|t| t <= Instant::now()) {
                    // Dropping the connection closes its socket: nothing is in flight on it, or
                    // its client stopped reading what is.
                    tracing::debug!("closed a connection past its header, idle or write timeout");
                    return;
                }
            }
            () = clock.changed.notified() => {}
            () = stopped(&mut shutdown), if !draining => {
                connection.as_mut().graceful_shutdown();
                draining = true;
            }
        }
    }
}

/// A connection's socket, telling its clock when bytes arrive.
struct WatchedIo<S> {
    inner: S,
    clock: Arc<ConnectionClock>,
}

impl<S: AsyncRead + Unpin> AsyncRead for WatchedIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.clock.bytes_read();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WatchedIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.clock.write_polled(polled.is_ready());
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.clock.write_polled(polled.is_ready());
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A request body that fails with [`BodyTimedOut`] once its deadline passes before its end.
struct DeadlineBody {
    inner: Incoming,
    deadline: Instant,
    timeout: Duration,
    /// Armed the first time the body is not ready (most bodies arrive with their headers).
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// The error of a request body that did not arrive within `--body-timeout`.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?} of its headers")]
pub struct BodyTimedOut(pub Duration);

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => {
                let deadline = this.deadline;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if sleep.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Some(Err(Box::new(BodyTimedOut(this.timeout)))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// An answer's body that marks its request's end when hyper is done with it.
struct EndsRequest {
    body: Body,
    _end: RequestEnd,
}

impl http_body::Body for EndsRequest {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl std::fmt::Debug for EndsRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndsRequest").finish_non_exhaustive()
    }
}

/// Whether a body's error (or one it wraps) is [`BodyTimedOut`].
pub(super) fn is_body_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut e = Some(error);
    // Bounded: error chains are short; 16 levels is far more than any wrapping here.
    for _ in 0..16 {
        match e {
            Some(err) if err.is::<BodyTimedOut>() => return true,
            Some(err) => e = err.source(),
            None => return false,
        }
    }
    false
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail by panicking")]
mod tests {
    use super::*;

    /// A client that sends a request and then reads nothing of a long answer: once the
    /// connection's socket is full, the write waits, and after `write_timeout` the connection
    /// is closed (its task ends, its slot is freed). Without the bound, a request in flight has
    /// no timeout and the task would wait for ever.
    #[tokio::test]
    async fn a_client_that_stops_reading_is_closed_after_the_write_timeout() {
        let router = Router::new().route(
            "/big",
            axum::routing::get(|| async {
                let chunk = Bytes::from(vec![b'x'; 64 << 10]);
                let chunks = futures::stream::iter(
                    std::iter::repeat_n(chunk, 1024).map(Ok::<_, Infallible>),
                );
                Body::from_stream(chunks)
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut client = socket.connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let limits = TransportLimits {
            write_timeout: Duration::from_millis(300),
            ..TransportLimits::default()
        };
        let (_stop, shutdown) = watch::channel(false);
        let slots = Arc::new(tokio::sync::Semaphore::new(1));
        let permit = Arc::clone(&slots).acquire_owned().await.unwrap();
        let task = tokio::spawn(serve_connection(server, router, limits, shutdown, permit));
        tokio::io::AsyncWriteExt::write_all(&mut client, b"GET /big HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let ended = tokio::time::timeout(Duration::from_secs(20), task).await;
        assert!(
            ended.is_ok(),
            "the connection was not closed: a stalled write has no bound"
        );
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!(
            slots.available_permits(),
            1,
            "the connection's slot is free"
        );
    }
}

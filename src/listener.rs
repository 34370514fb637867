//! The API listener's accept loop, plain or TLS: slow-client timeouts, a
//! connection cap and graceful shutdown.
//!
//! Threat: slow clients (slowloris). A client that opens connections and
//! sends a request a byte at a time, or never finishes its headers, or
//! keeps idle keep-alive connections open, holds a socket, a task and
//! memory each without ever reaching a handler, so no request timeout or
//! rate limit sees it. Controls:
//!
//! * **Header timeout** (`HEADER_READ_TIMEOUT_SECS`, default 10): a new
//!   connection must deliver complete request headers (and, on TLS, finish
//!   its handshake) within this time of being accepted; on a kept-alive
//!   connection, the next request's headers must be complete within this
//!   time of its first byte. Otherwise the connection is closed.
//! * **Idle timeout** (`IDLE_TIMEOUT_SECS`, default 60): a connection that
//!   has served a request and then has no request in progress and no
//!   traffic for this long is closed.
//! * **Connection cap** (`MAX_CONNECTIONS`, default 4096): at the cap the
//!   server stops calling `accept`; further connections wait in the
//!   kernel's accept backlog (and are refused by the kernel when that is
//!   full) until a served one closes. Waiting is better than accepting and
//!   closing: a burst of legitimate clients is delayed, not failed.
//!
//! Key decision: the timeouts are enforced here, around hyper, by watching
//! the connection's decrypted bytes and its requests in flight, rather than
//! with hyper's own `header_read_timeout`: hyper's timer also runs while a
//! kept-alive HTTP/1.1 connection waits for its next request (so it could
//! not express a separate idle timeout) and does not apply to HTTP/2. Here
//! one rule covers both protocols. A request in flight is bounded by
//! `REQUEST_TIMEOUT_SECS` in the router instead. Only requests and response
//! bytes postpone the idle timeout, so HTTP/2 control frames (PING,
//! WINDOW_UPDATE) cannot keep an otherwise idle connection open.
//!
//! Head limits: hyper's own (HTTP/1 read buffer and header count, HTTP/2
//! header list size) are set above the service's `MAX_URI_BYTES` and
//! `MAX_HEADER_BYTES` ([`hyper_head_limit`], [`hyper_max_headers`]), which
//! the router enforces (`crate::http`) with problem+json answers.
//!
//! Shutdown (see `crate::startup` for the whole sequence): during the grace
//! period the caller marks the service as draining and this loop keeps
//! accepting. When `shutdown` completes, the loop accepts what is left in
//! the kernel's backlog, closes the socket, and asks every connection to
//! finish: HTTP/2 at once (GOAWAY; streams in progress complete), HTTP/1.1
//! as soon as it is idle after a request (a request in flight or arriving
//! completes first; a connection that has not sent its first request yet
//! may send it). It waits for them; the caller bounds that wait with
//! `SHUTDOWN_TIMEOUT_SECS`, and dropping this future aborts what is left.

use crate::config::ListenerLimits;
use axum::{extract::ConnectInfo, Router};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
    service::TowerToHyperService,
};
use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{watch, OwnedSemaphorePermit, Semaphore},
    task::JoinSet,
    time::Instant,
};
use tower::ServiceExt;

/// How connections are secured: plain HTTP, or TLS with a configuration
/// that may be swapped at run time (certificate reload).
#[derive(Clone)]
pub enum Transport {
    Plain,
    Tls(axum_server::tls_rustls::RustlsConfig),
}

/// Serves `router` on `listener` until `shutdown` completes (see the
/// module comment).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    transport: Transport,
    limits: ListenerLimits,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        // Reap finished connections so the set does not grow.
        while connections.try_join_next().is_some() {}
        let next = async {
            // At the cap, wait here: `accept` is not called, so new
            // connections queue in the kernel's backlog.
            let permit = permits.clone().acquire_owned().await;
            (permit, listener.accept().await)
        };
        // Until `shutdown` completes (the end of the shutdown grace period)
        // connections keep being accepted: the load balancer may still send
        // some, and those get `Connection: close` answers.
        let (permit, accepted) = tokio::select! {
            () = &mut shutdown => break,
            next = next => next,
        };
        let Ok(permit) = permit else { break };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Typically EMFILE/ENFILE: back off instead of spinning.
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        connections.spawn(connection(
            stream,
            peer,
            router.clone(),
            transport.clone(),
            limits,
            stop_rx.clone(),
            permit,
        ));
    }
    // Connections the kernel has completed but we have not accepted yet
    // would be reset when the socket closes: take them first. A connection
    // arriving between the last `accept` and the close is still reset.
    let backlog = take_backlog(listener, &permits);
    if !backlog.is_empty() {
        tracing::debug!(
            connections = backlog.len(),
            "serving connections left in the accept backlog"
        );
    }
    for (stream, peer, permit) in backlog {
        connections.spawn(connection(
            stream,
            peer,
            router.clone(),
            transport.clone(),
            limits,
            stop_rx.clone(),
            permit,
        ));
    }
    let _ = stop_tx.send(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Closes the listening socket after accepting, without waiting, every
/// connection already in its backlog (as many as the connection cap allows).
fn take_backlog(
    listener: TcpListener,
    permits: &Arc<Semaphore>,
) -> Vec<(TcpStream, SocketAddr, OwnedSemaphorePermit)> {
    let mut taken = Vec::new();
    // Non-blocking, and no longer registered with the runtime: `accept`
    // asks the kernel directly and says `WouldBlock` once the queue is empty.
    let Ok(listener) = listener.into_std() else {
        return taken;
    };
    while let Ok(permit) = permits.clone().try_acquire_owned() {
        let Ok((stream, peer)) = listener.accept() else {
            break;
        };
        let stream = stream
            .set_nonblocking(true)
            .and_then(|()| TcpStream::from_std(stream));
        if let Ok(stream) = stream {
            let _ = stream.set_nodelay(true);
            taken.push((stream, peer, permit));
        }
    }
    taken
}

/// One connection: the TLS handshake (bounded by the header timeout), then
/// HTTP until the client closes, a timeout fires or shutdown completes.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    transport: Transport,
    limits: ListenerLimits,
    stop: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) {
    let activity = Arc::new(Activity::new());
    match transport {
        Transport::Plain => {
            let io = Tracked {
                inner: stream,
                activity: activity.clone(),
            };
            http(io, peer, router, limits, activity, stop).await;
        }
        Transport::Tls(config) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(config.get_inner());
            let handshake =
                tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream)).await;
            let tls = match handshake {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, %peer, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    closed("handshake_timeout");
                    return;
                }
            };
            let io = Tracked {
                inner: tls,
                activity: activity.clone(),
            };
            http(io, peer, router, limits, activity, stop).await;
        }
    }
}

async fn http<I>(
    io: Tracked<I>,
    peer: SocketAddr,
    router: Router,
    limits: ListenerLimits,
    activity: Arc<Activity>,
    mut stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let requests = activity.clone();
    let service = tower::service_fn(move |mut req: axum::extract::Request<_>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        let in_flight = InFlight::start(requests.clone());
        let router = router.clone();
        async move {
            let response = router.oneshot(req).await;
            drop(in_flight);
            response
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper's own head limits sit above the service's (`request_limits` in
    // `crate::http`), so a request a little over ours reaches the router and
    // gets a problem+json 414/431 with the usual headers; only a head far
    // beyond them (over `hyper_head_limit`) meets hyper's bare answer.
    let head = hyper_head_limit(limits);
    builder
        .http1()
        .max_buf_size(head)
        .max_headers(hyper_max_headers(limits));
    builder
        .http2()
        .max_header_list_size(u32::try_from(head).unwrap_or(u32::MAX));
    let conn =
        builder.serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service));
    tokio::pin!(conn);
    let mut stopping = false;
    let mut closing = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, %peer, "connection ended with an error");
                }
                return;
            }
            reason = activity.expired(limits) => {
                // Nothing is in flight: dropping the connection closes it.
                closed(reason);
                return;
            }
            _ = stop.wait_for(|s| *s), if !stopping => {
                stopping = true;
            }
            () = activity.closable(), if stopping && !closing => {
                // HTTP/2: GOAWAY, streams in progress finish. HTTP/1.1:
                // the connection is idle, so hyper closes it now.
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// hyper's limit on a request head, in bytes (its HTTP/1 read buffer and
/// HTTP/2 header list): twice the service's limits plus 16 KiB, 96 KiB with
/// the defaults.
pub fn hyper_head_limit(limits: ListenerLimits) -> usize {
    2 * (limits.max_uri_bytes + limits.max_header_bytes) + 16 * 1024
}

/// hyper's limit on the number of HTTP/1 header fields (100 by default,
/// answered with a bare 431): more than a request within `MAX_HEADER_BYTES`
/// can have, each field counting at least 33 bytes there.
pub fn hyper_max_headers(limits: ListenerLimits) -> usize {
    limits.max_header_bytes / 32 + 1
}

fn closed(reason: &'static str) {
    tracing::debug!(reason, "closing a slow or idle connection");
    metrics::counter!("http_connections_timed_out_total", "reason" => reason).increment(1);
}

const NONE: u64 = u64::MAX;
/// The start of the HTTP/2 connection preface.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

/// What the timeouts watch on one connection. Times are milliseconds since
/// the connection was accepted.
struct Activity {
    start: Instant,
    /// The last response byte written, or the end of a request.
    last_io_ms: AtomicU64,
    /// HTTP/1.1: the first byte read while no request was in flight (the
    /// next request's headers arriving), or `NONE`.
    partial_since_ms: AtomicU64,
    /// Whether anything was read yet, and whether it was the HTTP/2 preface.
    first_read: AtomicBool,
    h2: AtomicBool,
    in_flight: AtomicUsize,
    /// Whether a request has been handled (the first one has the header
    /// timeout from the accept).
    served: AtomicBool,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_io_ms: AtomicU64::new(0),
            partial_since_ms: AtomicU64::new(NONE),
            first_read: AtomicBool::new(false),
            h2: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            served: AtomicBool::new(false),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(NONE - 1)
    }

    /// `bytes` were read. The first read tells HTTP/2 (its preface) from
    /// HTTP/1.1; on HTTP/1.1 a byte with no request in flight starts the
    /// next request's header timeout. Reads do not postpone the idle
    /// timeout: only requests (and response bytes) do, so an HTTP/2 client
    /// cannot keep a connection with PINGs alone.
    fn read(&self, bytes: &[u8]) {
        if !self.first_read.swap(true, Ordering::AcqRel) {
            // At least "PRI": a lone "P" may start POST, PUT or PATCH. (An
            // HTTP/2 client whose first read is under three bytes is taken
            // for HTTP/1.1, whose timeouts are the stricter ones.)
            let n = bytes.len().min(H2_PREFACE.len());
            if n >= 3 && bytes[..n] == H2_PREFACE[..n] {
                self.h2.store(true, Ordering::Release);
            }
        }
        if self.h2.load(Ordering::Acquire) {
            return;
        }
        if self.in_flight.load(Ordering::Acquire) == 0 {
            let _ = self.partial_since_ms.compare_exchange(
                NONE,
                self.now_ms(),
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
        }
    }

    fn wrote(&self) {
        self.last_io_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// When the connection expires as things stand, and why; `None` while a
    /// request is in flight.
    fn deadline(&self, limits: ListenerLimits) -> Option<(u64, &'static str)> {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(NONE / 2);
        let header = ms(limits.header_read_timeout);
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        if !self.served.load(Ordering::Acquire) {
            return Some((header, "header_timeout"));
        }
        let partial = self.partial_since_ms.load(Ordering::Acquire);
        if partial != NONE {
            return Some((partial.saturating_add(header), "header_timeout"));
        }
        let last = self.last_io_ms.load(Ordering::Relaxed);
        Some((last.saturating_add(ms(limits.idle_timeout)), "idle_timeout"))
    }

    /// Completes once the connection may be closed at shutdown without
    /// losing a request: at once on HTTP/2 (hyper's graceful shutdown sends
    /// GOAWAY and lets streams in progress finish); on HTTP/1.1 once it has
    /// served a request and has none in flight and none arriving. A
    /// connection that has not yet served a request (one just taken from
    /// the backlog) is left to send it, bounded by the header timeout; its
    /// answer carries `Connection: close`.
    async fn closable(&self) {
        loop {
            if self.h2.load(Ordering::Acquire)
                || (self.served.load(Ordering::Acquire)
                    && self.in_flight.load(Ordering::Acquire) == 0
                    && self.partial_since_ms.load(Ordering::Acquire) == NONE)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Completes when the connection has been slow or idle for too long.
    /// State changes can move the deadline either way, so it is re-read at
    /// least every `tick`.
    async fn expired(&self, limits: ListenerLimits) -> &'static str {
        let tick = (limits.header_read_timeout.min(limits.idle_timeout) / 4)
            .clamp(Duration::from_millis(50), Duration::from_secs(1));
        loop {
            let wait = match self.deadline(limits) {
                Some((at, reason)) => {
                    let now = self.now_ms();
                    if now >= at {
                        return reason;
                    }
                    Duration::from_millis(at - now).min(tick)
                }
                None => tick,
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// A request being handled; ends (even if the handler is cancelled) when
/// dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        activity.partial_since_ms.store(NONE, Ordering::Release);
        Self(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        a.served.store(true, Ordering::Release);
        a.last_io_ms.store(a.now_ms(), Ordering::Relaxed);
        a.partial_since_ms.store(NONE, Ordering::Release);
        a.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The connection's byte stream (after TLS), noting each read and write.
struct Tracked<I> {
    inner: I,
    activity: Arc<Activity>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Tracked<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read(&buf.filled()[before..]);
        }
        result
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Tracked<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn limits() -> ListenerLimits {
        ListenerLimits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1,
            ..ListenerLimits::default()
        }
    }

    #[test]
    fn deadlines_follow_the_connection_state() {
        let a = Arc::new(Activity::new());
        // New connection: the header timeout from the accept, even after
        // a first byte.
        assert_eq!(a.deadline(limits()), Some((10_000, "header_timeout")));
        a.read(b"GET / HTTP/1.1\r\n");
        assert_eq!(a.deadline(limits()), Some((10_000, "header_timeout")));
        // A request in flight is not timed here.
        let req = InFlight::start(a.clone());
        assert_eq!(a.deadline(limits()), None);
        drop(req);
        // Served and quiet: the idle timeout from the end of the request.
        let (at, why) = a.deadline(limits()).unwrap();
        assert_eq!(why, "idle_timeout");
        assert!((60_000..61_000).contains(&at), "{at}");
        // The next request's first byte: its headers have 10 s.
        a.read(b"G");
        let (at, why) = a.deadline(limits()).unwrap();
        assert_eq!(why, "header_timeout");
        assert!((10_000..11_000).contains(&at), "{at}");
    }

    #[test]
    fn on_http2_frames_without_a_request_do_not_keep_the_connection() {
        let a = Arc::new(Activity::new());
        a.read(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        drop(InFlight::start(a.clone()));
        // A PING after the response: still the idle timeout from the end
        // of the request, neither a header timeout nor postponed.
        a.read(&[0, 0, 8, 6, 0, 0, 0, 0, 0]);
        let (at, why) = a.deadline(limits()).unwrap();
        assert_eq!(why, "idle_timeout");
        assert!((60_000..61_000).contains(&at), "{at}");
    }
}

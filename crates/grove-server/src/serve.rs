//! The connection loop: hyper with a timer, so slow and idle clients are let go; HTTP/1.1 on
//! plain TCP, and over TLS (when `[tls]` is set) HTTP/2 or HTTP/1.1 as ALPN chose.
//!
//! axum's own `serve` runs hyper without a timer, which leaves hyper's header-read timeout
//! inactive: a client that opens a connection and sends nothing, or one header line now and
//! then, holds its connection forever. Here every connection gets:
//!
//! - a **header timeout** (`connections.header_timeout_secs`): the request's headers must
//!   arrive within it, counted from when the connection opens or its previous response ended,
//!   so an idle keep-alive connection closes after it too;
//! - a **body timeout** (`connections.body_timeout_secs`): the whole body must arrive within it
//!   of the headers; a handler reading a late body gets [`BodyTimeout`] and answers 408;
//! - the per-address cap of [`LimitedListener`] (a TLS connection is counted from its TCP
//!   accept, before the handshake);
//! - with TLS, a **handshake timeout** (`connections.tls_handshake_timeout_secs`); a client
//!   speaking plain HTTP to the TLS port is answered `400 bad_request` in plain HTTP;
//! - over HTTP/2, at most 100 concurrent streams, keep-alive pings (a peer that does not answer
//!   within 20 s is dropped), and the connection closed gracefully (GOAWAY; streams in flight
//!   finish) once no request began within the header timeout.
//!
//! WebSocket upgrades are served over HTTP/1.1 (clients offer only `http/1.1` by ALPN for them).

use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::ConnectInfo;
use axum::serve::Listener;
use axum::Router;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::Sleep;
use tower::ServiceExt;

use crate::listener::LimitedListener;
use crate::tls::TlsFiles;

/// The time limits of one connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub header: Duration,
    pub body: Duration,
    pub tls_handshake: Duration,
}

/// Serves `app` on `listener` until `signal` resolves; then stops accepting, lets every
/// connection finish its request in flight, and returns once all are closed.
pub(crate) async fn serve(
    mut listener: LimitedListener,
    app: Router,
    timeouts: Timeouts,
    tls: Option<Arc<TlsFiles>>,
    signal: impl Future<Output = ()> + Send + 'static,
) {
    // Connections watch `signal_tx.closed()`: it resolves when the receiver below is dropped.
    let (signal_tx, signal_rx) = watch::channel(());
    tokio::spawn(async move {
        signal.await;
        drop(signal_rx);
    });
    // Each connection holds a clone of `close_rx`; `close_tx.closed()` resolves when all are gone.
    let (close_tx, close_rx) = watch::channel(());
    loop {
        let (io, addr) = tokio::select! {
            conn = listener.accept() => conn,
            _ = signal_tx.closed() => break,
        };
        // Small frames matter more than throughput here; failure only costs latency.
        let _ = io.set_nodelay();
        let app = app.clone();
        let signal_tx = signal_tx.clone();
        let close_rx = close_rx.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            // The time of the connection's last request start (ms since `opened`): HTTP/2's idle limit.
            let opened = Instant::now();
            let last_request = Arc::new(AtomicU64::new(0));
            let seen = last_request.clone();
            let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                seen.store(opened.elapsed().as_millis() as u64, Ordering::Relaxed);
                let mut req = req.map(|b| Body::new(Deadline::new(b, timeouts.body)));
                req.extensions_mut().insert(ConnectInfo(addr));
                app.clone().oneshot(req)
            });
            match tls {
                None => http1(io, service, timeouts, &signal_tx).await,
                Some(tls) => {
                    let handshake = tokio::time::timeout(timeouts.tls_handshake, async move {
                        let mut io = io;
                        let plain = match io.tcp() {
                            Some(tcp) => crate::tls::is_plain(tcp).await,
                            // A Unix socket's client (a local proxy) speaks what the port speaks.
                            None => Ok(false),
                        };
                        match plain {
                            Ok(false) => tls.acceptor().accept(io).await.map(Some),
                            Ok(true) => {
                                crate::tls::refuse_plain_http(&mut io).await;
                                Ok(None)
                            }
                            Err(e) => Err(e),
                        }
                    });
                    match handshake.await {
                        Ok(Ok(Some(stream))) => {
                            if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                                let idle = Idle { opened, last_request, limit: timeouts.header };
                                http2(stream, service, idle, &signal_tx).await;
                            } else {
                                http1(stream, service, timeouts, &signal_tx).await;
                            }
                        }
                        Ok(Ok(None)) => tracing::debug!("plain HTTP on the TLS port: refused"),
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                }
            }
            drop(close_rx);
        });
    }
    drop(close_rx);
    drop(listener);
    close_tx.closed().await;
}

/// Serves HTTP/1.1 (with upgrades) on one connection until it ends or the server stops.
async fn http1<I, S>(io: I, service: S, timeouts: Timeouts, signal: &watch::Sender<()>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming> + Send + 'static,
    S::Future: Send + 'static,
    S::ResBody: Send + 'static,
    <S::ResBody as HttpBody>::Data: Send,
    <S::ResBody as HttpBody>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(timeouts.header);
    let mut conn = pin!(builder.serve_connection(TokioIo::new(io), service).with_upgrades());
    let mut signalled = pin!(signal.closed());
    let mut shutting_down = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::trace!(error = %e, "connection ended");
                }
                return;
            }
            _ = &mut signalled, if !shutting_down => {
                shutting_down = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// When an HTTP/2 connection counts as idle: no request began within `limit`.
struct Idle {
    opened: Instant,
    last_request: Arc<AtomicU64>,
    limit: Duration,
}

/// Serves HTTP/2 on one TLS connection until it ends, idles or the server stops.
async fn http2<I, S>(io: I, service: S, idle: Idle, signal: &watch::Sender<()>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming> + Send + 'static,
    S::Future: Send + 'static,
    S::ResBody: Send + 'static,
    <S::ResBody as HttpBody>::Data: Send,
    <S::ResBody as HttpBody>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(100)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    let mut conn = pin!(builder.serve_connection(TokioIo::new(io), service));
    let mut signalled = pin!(signal.closed());
    let mut tick = tokio::time::interval(idle.limit.max(Duration::from_secs(1)) / 2);
    let mut shutting_down = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::trace!(error = %e, "connection ended");
                }
                return;
            }
            _ = &mut signalled, if !shutting_down => {
                shutting_down = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tick.tick(), if !shutting_down => {
                let last = Duration::from_millis(idle.last_request.load(Ordering::Relaxed));
                if idle.opened.elapsed().saturating_sub(last) > idle.limit {
                    shutting_down = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// The request body did not arrive within `connections.body_timeout_secs`.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
pub(crate) struct BodyTimeout;

/// A request body that fails with [`BodyTimeout`] once its deadline passes.
struct Deadline {
    inner: Incoming,
    deadline: Pin<Box<Sleep>>,
}

impl Deadline {
    fn new(inner: Incoming, within: Duration) -> Self {
        Deadline { inner, deadline: Box::pin(tokio::time::sleep(within)) }
    }
}

impl HttpBody for Deadline {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimeout)))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Whether `e`, or an error beneath it, is a `T`.
pub(crate) fn caused_by<T: std::error::Error + 'static>(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        if e.is::<T>() {
            return true;
        }
        next = e.source();
    }
    false
}

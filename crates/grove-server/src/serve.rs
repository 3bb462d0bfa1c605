//! The HTTP/1.1 connection loop: hyper with a timer, so slow and idle clients are let go.
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
//! - the per-address cap of [`LimitedListener`].
//!
//! Only HTTP/1.1 is spoken (grove's clients use nothing else); WebSocket upgrades are served.

use std::future::Future;
use std::pin::{pin, Pin};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::ConnectInfo;
use axum::serve::Listener;
use axum::Router;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::watch;
use tokio::time::Sleep;
use tower::ServiceExt;

use crate::listener::LimitedListener;

/// The time limits of one connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub header: Duration,
    pub body: Duration,
}

/// Serves `app` on `listener` until `signal` resolves; then stops accepting, lets every
/// connection finish its request in flight, and returns once all are closed.
pub(crate) async fn serve(
    mut listener: LimitedListener,
    app: Router,
    timeouts: Timeouts,
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
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let mut req = req.map(|b| Body::new(Deadline::new(b, timeouts.body)));
                req.extensions_mut().insert(ConnectInfo(addr));
                app.clone().oneshot(req)
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(timeouts.header);
            let mut conn = pin!(builder.serve_connection(TokioIo::new(io), service).with_upgrades());
            let mut signalled = pin!(signal_tx.closed());
            let mut shutting_down = false;
            loop {
                tokio::select! {
                    result = conn.as_mut() => {
                        if let Err(e) = result {
                            tracing::trace!(error = %e, "connection ended");
                        }
                        break;
                    }
                    _ = &mut signalled, if !shutting_down => {
                        shutting_down = true;
                        conn.as_mut().graceful_shutdown();
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

//! A TCP listener that holds at most `max_connections` connections open (the next `accept`
//! waits until one closes), and at most `connections.max_per_ip` from one client address
//! (further ones are closed as soon as they are accepted, so one address cannot take every
//! connection the server has).
//!
//! Or a Unix socket listener (`grove serve --listen unix:PATH`, behind Tor's
//! `HiddenServicePort` or a Lokinet SNApp): its connections have no address, and all come from
//! the proxy in front, so only `max_connections` bounds them; they reach the handlers as
//! [`UNIX_PEER`].

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
#[cfg(unix)]
use tokio::net::{UnixListener, UnixStream};

/// The address a connection through the Unix socket is given (`[::]:0`): one address for every
/// client behind the local proxy, for the per-IP rate limit too.
pub(crate) const UNIX_PEER: SocketAddr = SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), 0);

enum Inner {
    Tcp(TcpListener),
    #[cfg(unix)]
    Unix(UnixListener),
}

enum Stream {
    Tcp(TcpStream),
    #[cfg(unix)]
    Unix(UnixStream),
}

/// Forwards an I/O call to the stream inside.
macro_rules! stream {
    ($s:expr, $v:ident => $e:expr) => {
        match $s {
            Stream::Tcp($v) => $e,
            #[cfg(unix)]
            Stream::Unix($v) => $e,
        }
    };
}
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A listener with a connection cap.
pub struct LimitedListener {
    inner: Inner,
    permits: Arc<Semaphore>,
    per_ip: usize,
    /// Addresses whose connections are not counted per address (trusted proxies).
    exempt: Vec<IpAddr>,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
    /// Whether refused connections are logged with their address (`privacy.log_ip_addresses`).
    log_addresses: bool,
}

impl LimitedListener {
    /// Wraps a bound Unix socket listener: at most `max_connections`, no per-address cap.
    #[cfg(unix)]
    pub fn unix(inner: UnixListener, max_connections: usize) -> Self {
        LimitedListener {
            inner: Inner::Unix(inner),
            permits: Arc::new(Semaphore::new(max_connections.max(1))),
            per_ip: usize::MAX,
            exempt: vec![UNIX_PEER.ip()],
            open: Arc::default(),
            log_addresses: false,
        }
    }

    /// Names the address of a refused connection in its log line (off by default).
    pub fn log_addresses(mut self, on: bool) -> Self {
        self.log_addresses = on;
        self
    }

    /// Wraps a bound listener, with no per-address cap.
    pub fn new(inner: TcpListener, max_connections: usize) -> Self {
        Self::with_per_ip(inner, max_connections, usize::MAX, Vec::new())
    }

    /// Wraps a bound listener: at most `max_connections` in all and `per_ip` from one address,
    /// except from the addresses in `exempt` (reverse proxies, whose clients are many).
    pub fn with_per_ip(inner: TcpListener, max_connections: usize, per_ip: usize, exempt: Vec<IpAddr>) -> Self {
        LimitedListener {
            inner: Inner::Tcp(inner),
            permits: Arc::new(Semaphore::new(max_connections.max(1))),
            per_ip: per_ip.max(1),
            exempt,
            open: Arc::default(),
            log_addresses: false,
        }
    }

    /// Counts a connection from `ip`, unless the address holds its share already.
    fn admit(&self, ip: IpAddr) -> Option<AddressSlot> {
        if self.exempt.contains(&ip) {
            return Some(AddressSlot { ip, open: None });
        }
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= self.per_ip {
            return None;
        }
        *n += 1;
        Some(AddressSlot { ip, open: Some(self.open.clone()) })
    }
}

/// One counted connection of an address; uncounted when dropped.
struct AddressSlot {
    ip: IpAddr,
    open: Option<Arc<Mutex<HashMap<IpAddr, usize>>>>,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let Some(open) = &self.open else { return };
        let mut open = open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// A connection holding one of the listener's permits.
pub struct LimitedIo {
    stream: Stream,
    _permit: OwnedSemaphorePermit,
    _slot: AddressSlot,
}

impl LimitedIo {
    /// The TCP stream (`None` on the Unix socket), e.g. to peek at a TLS port's first byte.
    pub(crate) fn tcp(&self) -> Option<&TcpStream> {
        match &self.stream {
            Stream::Tcp(s) => Some(s),
            #[cfg(unix)]
            Stream::Unix(_) => None,
        }
    }

    /// Sends small frames at once (TCP_NODELAY; nothing to do on a Unix socket).
    pub fn set_nodelay(&self) -> io::Result<()> {
        match &self.stream {
            Stream::Tcp(s) => s.set_nodelay(true),
            #[cfg(unix)]
            Stream::Unix(_) => Ok(()),
        }
    }
}

impl axum::serve::Listener for LimitedListener {
    type Io = LimitedIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            // The semaphore is never closed, so acquiring only waits.
            let Ok(permit) = self.permits.clone().acquire_owned().await else { continue };
            let accepted = match &self.inner {
                Inner::Tcp(l) => l.accept().await.map(|(s, addr)| (Stream::Tcp(s), addr)),
                #[cfg(unix)]
                Inner::Unix(l) => l.accept().await.map(|(s, _)| (Stream::Unix(s), UNIX_PEER)),
            };
            match accepted {
                Ok((stream, addr)) => match self.admit(addr.ip()) {
                    Some(slot) => return (LimitedIo { stream, _permit: permit, _slot: slot }, addr),
                    None => {
                        // Closed at once: the address holds its share of connections.
                        if self.log_addresses {
                            tracing::debug!(%addr, "connection refused: too many from this address");
                        } else {
                            tracing::debug!("connection refused: too many from its address");
                        }
                        drop(stream);
                    }
                },
                Err(e) => {
                    // Like axum's own listener: errors such as EMFILE are transient.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        match &self.inner {
            Inner::Tcp(l) => l.local_addr(),
            #[cfg(unix)]
            Inner::Unix(_) => Ok(UNIX_PEER),
        }
    }
}

impl AsyncRead for LimitedIo {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        stream!(&mut self.stream, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for LimitedIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        stream!(&mut self.stream, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        stream!(&mut self.stream, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        stream!(&mut self.stream, s => Pin::new(s).poll_shutdown(cx))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        stream!(&mut self.stream, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        stream!(&self.stream, s => s.is_write_vectored())
    }
}

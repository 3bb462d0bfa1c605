//! How the client reaches servers: the one place where every HTTP client and the push
//! WebSocket's connector are built, from one [`NetConfig`].
//!
//! TLS is rustls on the `ring` provider. The trust roots are Mozilla's (webpki-roots), plus
//! the certificates of a private CA when [`NetConfig::ca_file`] names one (`grove --ca-file`,
//! `GROVE_CA_FILE`). HTTP and the WebSocket share one root store; HTTP offers HTTP/2 and
//! HTTP/1.1 by ALPN, the WebSocket HTTP/1.1 (its upgrade is an HTTP/1.1 request).
//!
//! With a SOCKS5 proxy ([`NetConfig::proxy`], `grove --proxy socks5h://`), every HTTP request
//! and every WebSocket goes through it, names resolved by the proxy; a proxy that cannot be
//! set up or reached fails the connection, never a direct one in its place ([`crate::proxy`]).
//!
//! Plain `http://` is used only where a URL says so ([`is_clear_text`] tells a caller when to
//! warn: a server that is not on this machine reached without TLS).

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio_tungstenite::tungstenite;

/// How to reach servers. Everything that changes how a connection is made lives here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetConfig {
    /// A PEM file of CA certificates trusted besides the built-in roots (a private CA).
    pub ca_file: Option<PathBuf>,
    /// The SOCKS5 proxy every connection goes through, if any.
    pub proxy: Option<crate::proxy::Proxy>,
}

/// Why a [`NetConfig`] cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// The CA file cannot be read or holds no certificate.
    #[error("--ca-file {path}: {detail}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// The TLS or HTTP client could not be built.
    #[error("cannot set up the HTTP client: {0}")]
    Client(String),
}

/// The connection makers built from one [`NetConfig`]: an HTTP client (with its connection
/// pool) and the push WebSocket's TLS settings. Cheap to clone; clones share the pool.
#[derive(Clone)]
pub struct Net {
    config: NetConfig,
    /// The makers, or why they could not be built (only [`Net::shared_default`] keeps an error:
    /// every request then fails with it).
    inner: Result<Arc<Inner>, String>,
}

struct Inner {
    http: reqwest::Client,
    websocket_tls: Arc<rustls::ClientConfig>,
}

impl Default for Net {
    /// [`Net::shared_default`].
    fn default() -> Net {
        Net::shared_default()
    }
}

impl std::fmt::Debug for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Net").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Net {
    /// Builds the HTTP client and WebSocket TLS settings of `config`.
    pub fn new(config: &NetConfig) -> Result<Net, NetError> {
        let roots = Arc::new(roots(config)?);
        let tls = |alpn: &[&[u8]]| -> Result<rustls::ClientConfig, NetError> {
            let mut c = rustls::ClientConfig::builder_with_provider(ring_provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| NetError::Client(e.to_string()))?
                .with_root_certificates(roots.clone())
                .with_no_client_auth();
            c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Ok(c)
        };
        let mut http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .use_preconfigured_tls(tls(&[b"h2", b"http/1.1"])?);
        if let Some(p) = &config.proxy {
            // Only this proxy: the environment's (HTTP_PROXY, ...) are switched off.
            let via = p.for_reqwest().map_err(|e| NetError::Client(format!("the proxy {p}: {e}")))?;
            http = http.no_proxy().proxy(via);
        }
        let http = http.build().map_err(|e| NetError::Client(e.to_string()))?;
        let inner = Inner { http, websocket_tls: Arc::new(tls(&[b"http/1.1"])?) };
        Ok(Net { config: config.clone(), inner: Ok(Arc::new(inner)) })
    }

    /// [`Net::new`], or, if `config` cannot be used, a `Net` whose every connection fails
    /// with why: with a proxy that cannot be set up, nothing may go out directly instead.
    pub fn new_or_failing(config: &NetConfig) -> Net {
        Net::new(config).unwrap_or_else(|e| Net { config: config.clone(), inner: Err(e.to_string()) })
    }

    /// The built-in roots only, built once per process.
    pub fn shared_default() -> Net {
        static DEFAULT: OnceLock<Net> = OnceLock::new();
        DEFAULT
            .get_or_init(|| {
                Net::new(&NetConfig::default())
                    .unwrap_or_else(|e| Net { config: NetConfig::default(), inner: Err(e.to_string()) })
            })
            .clone()
    }

    /// What this was built from.
    pub fn config(&self) -> &NetConfig {
        &self.config
    }

    fn inner(&self) -> Result<&Inner, NetError> {
        self.inner.as_deref().map_err(|e| NetError::Client(e.clone()))
    }

    /// The HTTP client (all requests to servers go through it).
    pub fn http(&self) -> Result<&reqwest::Client, NetError> {
        Ok(&self.inner()?.http)
    }

    /// Opens a WebSocket (`ws://` or `wss://`, as the request's URL says).
    pub async fn websocket(
        &self,
        request: tungstenite::handshake::client::Request,
        config: tungstenite::protocol::WebSocketConfig,
    ) -> Result<
        (
            tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
            tungstenite::handshake::client::Response,
        ),
        tungstenite::Error,
    > {
        let tls = self.inner().map_err(|e| tungstenite::Error::Io(std::io::Error::other(e.to_string())))?;
        let connector = tokio_tungstenite::Connector::Rustls(tls.websocket_tls.clone());
        let Some(proxy) = &self.config.proxy else {
            return tokio_tungstenite::connect_async_tls_with_config(request, Some(config), true, Some(connector))
                .await;
        };
        // Through the proxy, the host name resolved there; then TLS (for wss://) as without it.
        let uri = request.uri();
        let host = uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_string();
        let port = uri.port_u16().unwrap_or(if uri.scheme_str() == Some("wss") { 443 } else { 80 });
        let tcp = proxy.connect(&host, port).await.map_err(tungstenite::Error::Io)?;
        let _ = tcp.set_nodelay(true);
        tokio_tungstenite::client_async_tls_with_config(request, tcp, Some(config), Some(connector)).await
    }
}

/// rustls's `ring` provider. rustls 0.23.48 deprecates it because it has no post-quantum key
/// exchange; the alternative, aws-lc-rs, needs cmake and nasm to build, which grove avoids.
#[allow(deprecated)]
pub(crate) fn ring_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Mozilla's roots and the CA file's certificates.
fn roots(config: &NetConfig) -> Result<rustls::RootCertStore, NetError> {
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(path) = &config.ca_file {
        let bad = |detail: String| NetError::CaFile { path: path.clone(), detail };
        let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let mut n = 0;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| bad(format!("not a PEM certificate file: {e}")))?;
            roots.add(cert).map_err(|e| bad(format!("a certificate cannot be used as a CA: {e}")))?;
            n += 1;
        }
        if n == 0 {
            return Err(bad("no certificate in it (expected -----BEGIN CERTIFICATE-----)".into()));
        }
    }
    Ok(roots)
}

/// Whether talking to `url` is plain HTTP to another machine: what a caller warns about
/// (`http://` to a loopback address does not leave the machine).
pub fn is_clear_text(url: &str) -> bool {
    match url.strip_prefix("http://") {
        Some(rest) => !is_loopback(host_of(rest)),
        None => false,
    }
}

/// The host of `HOST:PORT` or `[V6]:PORT` (also without a port, or followed by a path).
pub(crate) fn host_of(host_port: &str) -> &str {
    let authority = host_port.split('/').next().unwrap_or_default();
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().unwrap_or_default();
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

/// `localhost`, `127.x.x.x` and `::1`.
pub(crate) fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A sentence for a failed connection, naming TLS problems plainly (an untrusted certificate,
/// a name that does not match, a server that does not speak TLS) with what to do.
pub fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(tls) = tls_error(err) {
            return tls_sentence(tls);
        }
        next = err.source();
    }
    // reqwest's own sentence, with the causes beneath it.
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(err) = next {
        let s = err.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        next = err.source();
    }
    out
}

/// The rustls error `e` is, or wraps in `io::Error`s (how tokio-rustls and hyper-rustls report
/// a failed handshake; `io::Error::source` skips the error it wraps).
fn tls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(tls) = e.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    if let Some(io) = e.downcast_ref::<std::io::Error>() {
        return io.get_ref().and_then(|inner| tls_error(inner));
    }
    None
}

fn tls_sentence(e: &rustls::Error) -> String {
    use rustls::{CertificateError, Error};
    match e {
        Error::InvalidCertificate(CertificateError::UnknownIssuer) => format!(
            "TLS: the server's certificate is not signed by a CA this client trusts ({e}); if the server uses \
             a private CA, pass its certificate with --ca-file PATH (or GROVE_CA_FILE)"
        ),
        Error::InvalidCertificate(CertificateError::NotValidForName)
        | Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. }) => format!(
            "TLS: the server's certificate is not for this host name ({e}); use the name the certificate was \
             made for"
        ),
        Error::InvalidCertificate(_) => format!("TLS: the server's certificate is refused ({e})"),
        Error::InvalidMessage(_) => {
            format!("TLS: the server does not speak TLS on this port ({e}); if it serves plain HTTP, write http://")
        }
        _ => format!("TLS: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_is_clear_text_only_off_this_machine() {
        assert!(is_clear_text("http://chat.example:8080"));
        assert!(is_clear_text("http://10.0.0.5"));
        assert!(!is_clear_text("http://127.0.0.1:8080"));
        assert!(!is_clear_text("http://localhost:8080/"));
        assert!(!is_clear_text("http://[::1]:8080"));
        assert!(!is_clear_text("https://chat.example"));
        assert_eq!(host_of("[::1]:80"), "::1");
        assert_eq!(host_of("chat.example"), "chat.example");
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let err = Net::new(&NetConfig { ca_file: Some(path.clone()), proxy: None }).unwrap_err().to_string();
        assert!(err.contains("ca.pem") && err.contains("no certificate"), "{err}");
        let missing = NetConfig { ca_file: Some(dir.path().join("missing.pem")), proxy: None };
        assert!(Net::new(&missing).unwrap_err().to_string().contains("missing.pem"));
    }
}

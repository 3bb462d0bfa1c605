//! TLS termination (`[tls]` in the configuration, `grove serve --tls-cert/--tls-key`): rustls
//! on the `ring` provider, HTTP/2 or HTTP/1.1 chosen by ALPN, and the certificate and key read
//! again by [`TlsFiles::reload`] — on SIGHUP, from `run` — so a renewal tool (certbot, acme.sh)
//! replaces them without a restart. A reload that fails keeps the previous certificate and
//! says why in the log; connections already open keep the certificate they began with.
//!
//! A client that speaks plain HTTP to the TLS port gets a plain-HTTP `400 bad_request` telling
//! it to use `https://` (see `refuse_plain_http`), not a TLS alert it cannot read.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Why the certificate or key cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file cannot be read or parsed.
    #[error("{what} {path}: {detail}")]
    File {
        /// "certificate" or "key".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// rustls refuses the pair (e.g. the key does not match the certificate).
    #[error("the certificate {cert} and key {key} cannot be used together: {detail}")]
    Pair {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// Why.
        detail: String,
    },
}

/// The certificate and key files, and the TLS settings last read from them.
pub struct TlsFiles {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<ServerConfig>>,
}

impl std::fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsFiles").field("cert", &self.cert).field("key", &self.key).finish_non_exhaustive()
    }
}

impl TlsFiles {
    /// Reads the certificate chain (PEM, the server's certificate first) and private key (PEM:
    /// PKCS#8, PKCS#1 or SEC1).
    pub fn load(cert: &Path, key: &Path) -> Result<TlsFiles, TlsError> {
        let config = server_config(cert, key)?;
        Ok(TlsFiles { cert: cert.to_path_buf(), key: key.to_path_buf(), current: RwLock::new(Arc::new(config)) })
    }

    /// Reads both files again; new connections use them. On an error the previous ones stay.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = server_config(&self.cert, &self.key)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
        Ok(())
    }

    /// The certificate file.
    pub fn cert(&self) -> &Path {
        &self.cert
    }

    /// The acceptor for a new connection.
    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

fn server_config(cert: &Path, key: &Path) -> Result<ServerConfig, TlsError> {
    let file = |what, path: &Path, detail: String| TlsError::File { what, path: path.to_path_buf(), detail };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| file("certificate", cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| file("certificate", cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(file("certificate", cert, "no certificate in it (expected -----BEGIN CERTIFICATE-----)".into()));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| file("key", key, e.to_string()))?;
    let pair = |detail: String| TlsError::Pair { cert: cert.to_path_buf(), key: key.to_path_buf(), detail };
    let mut config = ServerConfig::builder_with_provider(ring_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| pair(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, private)
        .map_err(|e| pair(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// rustls's `ring` provider. rustls 0.23.48 deprecates it because it has no post-quantum key
/// exchange; the alternative, aws-lc-rs, needs cmake and nasm to build, which grove avoids.
#[allow(deprecated)]
fn ring_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

/// Whether the connection's first byte is not a TLS handshake (it waits for one byte).
pub(crate) async fn is_plain(stream: &tokio::net::TcpStream) -> std::io::Result<bool> {
    let mut first = [0u8; 1];
    let n = stream.peek(&mut first).await?;
    Ok(n == 1 && first[0] != TLS_HANDSHAKE)
}

/// Answers a plain-HTTP request on the TLS port with a grove error telling the client to use
/// `https://`, then closes. Reads at most 8 KiB of its request first (so the answer is not
/// lost to a reset); the caller bounds the time.
pub(crate) async fn refuse_plain_http(io: &mut (impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin)) {
    let mut buf = vec![0u8; 8192];
    let mut read = 0;
    while read < buf.len() {
        match io.read(&mut buf[read..]).await {
            Ok(0) | Err(_) => break,
            Ok(n) => read += n,
        }
        if buf[..read].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let error = crate::error::AppError::from(crate::error::RequestRefusal::NotTls).answer();
    let status =
        axum::http::StatusCode::from_u16(error.code.http_status()).unwrap_or(axum::http::StatusCode::BAD_REQUEST);
    let body = serde_json::to_vec(&error).unwrap_or_default();
    let head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    );
    let _ = io.write_all(head.as_bytes()).await;
    let _ = io.write_all(&body).await;
    let _ = io.shutdown().await;
}

//! The object store under the blob store (`files`): the local filesystem (the default, the
//! folder `files` in the data folder or `files.store`'s absolute path), any S3-compatible
//! service (`files.store = "s3://BUCKET/PREFIX"` with `[files.s3]`), or memory (tests).
//!
//! S3 goes through `object_store`'s `aws-base` (no HTTP client of its own) with the HTTP client
//! here: reqwest 0.12 on rustls with ring, the one grove-client uses, so neither aws-lc-rs nor
//! a second reqwest enters the build. Credentials come only from the environment:
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`), or a role
//! (`AWS_WEB_IDENTITY_TOKEN_FILE` with `AWS_ROLE_ARN`, `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`,
//! else the instance metadata service). Plain HTTP is allowed only to a loopback endpoint.
//!
//! [`check`] validates the settings when the configuration is read; with S3, [`probe`] writes,
//! reads back and deletes one small object when the server opens, so that a missing bucket, a
//! wrong endpoint or refused credentials stop the start with a message instead of failing the
//! first upload.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::http::Uri;
use bytes::Bytes;
use http_body_util::BodyExt;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest, HttpResponse, HttpResponseBody, HttpService,
};
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{ClientConfigKey, ClientOptions, ObjectStore, ObjectStoreExt, RetryConfig};
use rand::RngCore;

use crate::config::FilesSection;

/// Where `files.store` says blobs go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A folder on the local filesystem.
    Local(std::path::PathBuf),
    /// Memory (tests only).
    Memory,
    /// A bucket of an S3-compatible service, under a key prefix (possibly empty).
    S3 {
        /// The bucket's name.
        bucket: String,
        /// The key prefix, without leading or trailing `/`.
        prefix: String,
    },
}

/// Parses `files.store` (with `data_dir` for the default folder).
pub fn location(f: &FilesSection, data_dir: &Path) -> Result<Location, String> {
    let store = f.store.as_str();
    if store.is_empty() {
        return Ok(Location::Local(data_dir.join("files")));
    }
    if store == "memory" {
        return Ok(Location::Memory);
    }
    if let Some(rest) = store.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let prefix = prefix.trim_matches('/');
        let valid_bucket = (3..=63).contains(&bucket.len())
            && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
            && bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
        if !valid_bucket {
            return Err(format!(
                "files.store: {bucket:?} is not an S3 bucket name (3 to 63 lowercase letters, digits, '-' and '.'): \
                 write s3://BUCKET/PREFIX"
            ));
        }
        if !prefix.is_empty() && ObjectPath::parse(prefix).is_err() {
            return Err(format!(
                "files.store: the prefix {prefix:?} is not a key prefix (segments separated by single '/', no '.' or '..')"
            ));
        }
        return Ok(Location::S3 { bucket: bucket.to_string(), prefix: prefix.to_string() });
    }
    if Path::new(store).is_absolute() {
        return Ok(Location::Local(store.into()));
    }
    Err("files.store: empty (data_dir/files), an absolute path, s3://BUCKET/PREFIX, or \"memory\"".into())
}

/// Checks `[files]`'s store settings without touching the network (when the configuration is
/// read).
pub fn check(f: &FilesSection) -> Result<(), String> {
    let loc = location(f, Path::new("/"))?;
    let s3 = &f.s3;
    if !matches!(loc, Location::S3 { .. }) {
        if !s3.endpoint.is_empty() || !s3.region.is_empty() || s3.allow_http {
            return Err("files.s3: only with files.store = \"s3://BUCKET/PREFIX\"".into());
        }
        return Ok(());
    }
    if s3.endpoint.is_empty() {
        if s3.allow_http {
            return Err("files.s3.allow_http: only with an endpoint on a loopback address".into());
        }
        return Ok(());
    }
    let uri: Uri = s3
        .endpoint
        .parse()
        .map_err(|_| format!("files.s3.endpoint: {:?} is not a URL like https://s3.example.org", s3.endpoint))?;
    let host = uri.host().unwrap_or("");
    let loopback = host == "localhost"
        || host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    match uri.scheme_str() {
        Some("https") if !host.is_empty() => {}
        Some("http") if !host.is_empty() => {
            if !loopback {
                return Err(format!(
                    "files.s3.endpoint: {:?} is plain HTTP to another machine; use https (plain HTTP only to a \
                     loopback address)",
                    s3.endpoint
                ));
            }
            if !s3.allow_http {
                return Err(format!(
                    "files.s3.endpoint: {:?} is plain HTTP: set files.s3.allow_http = true (loopback only) or use https",
                    s3.endpoint
                ));
            }
        }
        _ => return Err(format!("files.s3.endpoint: {:?} is not a URL like https://s3.example.org", s3.endpoint)),
    }
    if s3.allow_http && !loopback {
        return Err("files.s3.allow_http: only with an endpoint on a loopback address".into());
    }
    Ok(())
}

/// A description for logs and messages: the folder, or the bucket and its endpoint.
pub fn describe(f: &FilesSection, data_dir: &Path) -> String {
    match location(f, data_dir) {
        Ok(Location::Local(dir)) => dir.display().to_string(),
        Ok(Location::Memory) => "memory".into(),
        Ok(Location::S3 { bucket, prefix }) => {
            let at = if f.s3.endpoint.is_empty() { "AWS".to_string() } else { f.s3.endpoint.clone() };
            format!("s3://{bucket}/{prefix} at {at}")
        }
        Err(e) => e,
    }
}

/// Whether blobs leave this machine (their bytes do not take the database's disk).
pub(crate) fn is_remote(f: &FilesSection) -> bool {
    f.store.starts_with("s3://")
}

/// Bytes handed to the object store at once while a part streams in: S3 takes a multipart
/// upload's pieces (but the last) only from 5 MiB on.
pub(crate) fn write_chunk(f: &FilesSection) -> usize {
    if is_remote(f) {
        5 * 1024 * 1024
    } else {
        1024 * 1024
    }
}

/// The standard variables the S3 client reads for credentials and the region; the others
/// (`AWS_ENDPOINT`, `AWS_ALLOW_HTTP`...) are left to `[files.s3]`.
const ENV: [&str; 7] = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
];

/// Opens the object store `files.store` names (creating the local folder). Touches no network:
/// see [`probe`].
pub fn open(f: &FilesSection, data_dir: &Path) -> Result<Arc<dyn ObjectStore>, String> {
    match location(f, data_dir)? {
        Location::Memory => Ok(Arc::new(object_store::memory::InMemory::new())),
        Location::Local(dir) => {
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            // fsync each part's file and its folder before the part is recorded (object_store
            // does not by default): a part acknowledged to the client survives a power cut.
            let local = object_store::local::LocalFileSystem::new_with_prefix(&dir)
                .map_err(|e| e.to_string())?
                .with_fsync(true);
            Ok(Arc::new(local))
        }
        Location::S3 { bucket, prefix } => {
            let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
            let mut b = AmazonS3Builder::new().with_bucket_name(&bucket);
            for key in ENV {
                if let (Some(v), Ok(k)) = (env(key), key.to_ascii_lowercase().parse::<AmazonS3ConfigKey>()) {
                    b = b.with_config(k, v);
                }
            }
            let region = Some(f.s3.region.clone())
                .filter(|r| !r.is_empty())
                .or_else(|| env("AWS_REGION"))
                .or_else(|| env("AWS_DEFAULT_REGION"))
                .unwrap_or_else(|| "us-east-1".into());
            b = b.with_region(region).with_allow_http(f.s3.allow_http);
            if !f.s3.endpoint.is_empty() {
                b = b.with_endpoint(f.s3.endpoint.trim_end_matches('/'));
            }
            let retry =
                RetryConfig { max_retries: 3, retry_timeout: Duration::from_secs(20), ..RetryConfig::default() };
            let s3 = b
                .with_retry(retry)
                .with_client_options(ClientOptions::new().with_allow_http(f.s3.allow_http))
                .with_http_connector(Connector)
                .build()
                .map_err(|e| format!("the S3 store s3://{bucket}/{prefix}: {e}"))?;
            if prefix.is_empty() {
                Ok(Arc::new(s3))
            } else {
                Ok(Arc::new(PrefixStore::new(s3, ObjectPath::from(prefix))))
            }
        }
    }
}

/// Writes, reads back and deletes one small object (`probe-RANDOM`): the store takes blobs.
pub async fn probe(objects: &dyn ObjectStore) -> Result<(), String> {
    let mut id = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut id);
    let path = ObjectPath::from(format!("probe-{}", id.iter().map(|b| format!("{b:02x}")).collect::<String>()));
    let body = Bytes::from_static(b"grove checks that it can store blobs here");
    objects.put(&path, body.clone().into()).await.map_err(|e| format!("cannot write {path}: {e}"))?;
    let got = objects.get(&path).await.map_err(|e| format!("cannot read back {path}: {e}"))?;
    let got = got.bytes().await.map_err(|e| format!("cannot read back {path}: {e}"))?;
    if got != body {
        return Err(format!("{path} read back {} bytes that are not the ones written", got.len()));
    }
    objects.delete(&path).await.map_err(|e| format!("cannot delete {path}: {e}"))?;
    Ok(())
}

/// object_store's S3 client connects through this: one reqwest client per set of options.
#[derive(Debug, Clone, Copy)]
struct Connector;

impl HttpConnector for Connector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        // Credential lookups (instance metadata) come with their own options allowing HTTP.
        let allow_http = options.get_config_value(&ClientConfigKey::AllowHttp).as_deref() == Some("true");
        let client = reqwest::Client::builder()
            .https_only(!allow_http)
            .connect_timeout(Duration::from_secs(5))
            .read_timeout(Duration::from_secs(30))
            .user_agent(concat!("grove/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| object_store::Error::Generic { store: "S3", source: Box::new(e) })?;
        Ok(HttpClient::new(Service(client)))
    }
}

#[derive(Debug)]
struct Service(reqwest::Client);

#[async_trait]
impl HttpService for Service {
    async fn call(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        let (parts, body) = req.into_parts();
        let url = reqwest::Url::parse(&parts.uri.to_string()).map_err(|e| HttpError::new(HttpErrorKind::Unknown, e))?;
        let mut r = reqwest::Request::new(parts.method, url);
        *r.headers_mut() = parts.headers;
        *r.body_mut() = Some(match body.as_bytes() {
            Some(b) => reqwest::Body::from(b.clone()),
            None => reqwest::Body::wrap(body),
        });
        let resp = self.0.execute(r).await.map_err(http_error)?;
        let resp: axum::http::Response<reqwest::Body> = resp.into();
        let (parts, body) = resp.into_parts();
        Ok(HttpResponse::from_parts(parts, HttpResponseBody::new(body.map_err(http_error))))
    }
}

/// Classifies a reqwest error for object_store's retries.
fn http_error(e: reqwest::Error) -> HttpError {
    let mut kind = if e.is_timeout() {
        HttpErrorKind::Timeout
    } else if e.is_connect() {
        HttpErrorKind::Connect
    } else if e.is_decode() {
        HttpErrorKind::Decode
    } else if e.is_request() || e.is_body() {
        HttpErrorKind::Request
    } else {
        HttpErrorKind::Unknown
    };
    let mut source = std::error::Error::source(&e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            match io.kind() {
                TimedOut => kind = HttpErrorKind::Timeout,
                ConnectionAborted | ConnectionReset | BrokenPipe | UnexpectedEof => kind = HttpErrorKind::Interrupted,
                _ => {}
            }
        }
        source = err.source();
    }
    HttpError::new(kind, e.without_url())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(store: &str, endpoint: &str, allow_http: bool) -> FilesSection {
        let mut f = FilesSection { store: store.into(), ..FilesSection::default() };
        f.s3.endpoint = endpoint.into();
        f.s3.allow_http = allow_http;
        f
    }

    #[test]
    fn store_settings_are_checked_when_read() {
        let ok = [
            files("", "", false),
            files("memory", "", false),
            files("/srv/blobs", "", false),
            files("s3://grove-blobs", "", false),
            files("s3://grove-blobs/prod/eu", "https://s3.example.org", false),
            files("s3://grove-blobs/x", &format!("{}://127.0.0.1:9000", "http"), true),
            files("s3://grove-blobs/x", &format!("{}://localhost:9000", "http"), true),
            files("s3://grove-blobs/x", &format!("{}://[::1]:9000", "http"), true),
        ];
        for f in ok {
            assert_eq!(check(&f), Ok(()), "{f:?}");
        }
        let refused = [
            (files("relative/path", "", false), "files.store"),
            (files("s3://", "", false), "bucket name"),
            (files("s3://UPPER/x", "", false), "bucket name"),
            (files("s3://ok-bucket/a//b", "", false), "prefix"),
            (files("s3://ok-bucket/a/../b", "", false), "prefix"),
            (files("/srv/blobs", "https://s3.example.org", false), "only with"),
            (files("s3://grove-blobs", &format!("{}://10.0.0.5:9000", "http"), true), "another machine"),
            (files("s3://grove-blobs", &format!("{}://127.0.0.1:9000", "http"), false), "allow_http = true"),
            (files("s3://grove-blobs", "https://s3.example.org", true), "loopback"),
            (files("s3://grove-blobs", "", true), "loopback"),
            (files("s3://grove-blobs", "s3.example.org", false), "not a URL"),
        ];
        for (f, says) in refused {
            let e = check(&f).unwrap_err();
            assert!(e.contains(says), "{f:?}: {e}");
        }
        assert_eq!(
            location(&files("s3://b-1/p/q/", "", false), Path::new("/d")),
            Ok(Location::S3 { bucket: "b-1".into(), prefix: "p/q".into() })
        );
        assert_eq!(location(&files("", "", false), Path::new("/d")), Ok(Location::Local("/d/files".into())));
    }
}

//! Shared machinery: runtimes pinned to cores, the in-process server, signed requests,
//! histograms.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ed25519_dalek::SigningKey;
use grove_server::{AppState, Config};
use grove_store_sqlite::{SqliteOptions, SqliteStore, Synchronous};
use grove_wire::api::{AppendEntry, EntryKind};
use grove_wire::auth::{self, SignedHeaders};
use grove_wire::membership::SignedMembership;
use grove_wire::UserId;
use hdrhistogram::Histogram;
use tokio::runtime::{Handle, Runtime};
use tokio::sync::oneshot;

/// Where and how the benchmark runs.
#[derive(Debug, Clone)]
pub struct Env {
    /// Pin server threads to `server_core` and client threads to `client_core`.
    pub pin: bool,
    /// Core of the server runtime, its blocking pool and the SQLite writer thread.
    pub server_core: usize,
    /// Core of the client (load generator) runtime and the main thread.
    pub client_core: usize,
    /// Worker threads of the server runtime.
    pub server_threads: usize,
    /// Worker threads of the client runtime.
    pub client_threads: usize,
    /// Parent folder of the temporary data folders (must be on the disk being measured).
    pub dir: PathBuf,
    /// The server runtime.
    pub srv: Handle,
}

/// Pins the calling thread to `core` with `taskset` (no unsafe code needed); false if that failed.
pub fn pin_current(core: usize) -> bool {
    let Ok(link) = std::fs::read_link("/proc/thread-self") else { return false };
    let Some(tid) = link.file_name().map(|s| s.to_os_string()) else { return false };
    std::process::Command::new("taskset")
        .arg("-cp")
        .arg(core.to_string())
        .arg(tid)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// A multi-thread runtime whose every thread (workers and blocking pool) is pinned to `core`.
pub fn runtime(name: &str, threads: usize, core: Option<usize>) -> Result<Runtime> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.worker_threads(threads.max(1)).thread_name(name).enable_all();
    if let Some(c) = core {
        b.on_thread_start(move || {
            if !pin_current(c) {
                eprintln!("warning: could not pin a thread to core {c} (is taskset installed?)");
            }
        });
    }
    Ok(b.build()?)
}

/// Nanoseconds since a process-wide origin (monotonic), comparable across threads.
pub fn now_ns() -> u64 {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Unix milliseconds.
pub fn unix_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// A latency histogram in nanoseconds (1 ns to 100 s, 3 significant digits).
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid histogram bounds")
}

/// p50 / p99 / max of a histogram, in microseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Lat {
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    pub count: u64,
}

impl Lat {
    pub fn of(h: &Histogram<u64>) -> Lat {
        if h.is_empty() {
            return Lat::default();
        }
        Lat {
            p50_us: h.value_at_quantile(0.50) as f64 / 1e3,
            p99_us: h.value_at_quantile(0.99) as f64 / 1e3,
            max_us: h.max() as f64 / 1e3,
            count: h.len(),
        }
    }
}

impl std::fmt::Display for Lat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "p50 {} / p99 {} / max {} (n={})", us(self.p50_us), us(self.p99_us), us(self.max_us), self.count)
    }
}

/// Formats microseconds as µs or ms.
pub fn us(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.1} ms", v / 1e3)
    } else if v >= 1_000.0 {
        format!("{:.2} ms", v / 1e3)
    } else {
        format!("{v:.0} µs")
    }
}

/// A user of the benchmark: a key and its id.
#[derive(Clone)]
pub struct User {
    pub key: SigningKey,
    pub id: UserId,
}

impl User {
    pub fn random() -> User {
        let key = SigningKey::generate(&mut rand::rngs::OsRng);
        let id = UserId(key.verifying_key().to_bytes());
        User { key, id }
    }
}

/// A fresh nonce: 32 hex characters.
pub fn nonce() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Signs a request now with a fresh nonce.
pub fn sign(user: &User, server_key: &[u8; 32], method: &str, path_and_query: &str, body: &[u8]) -> SignedHeaders {
    auth::sign_request(&user.key, server_key, method, path_and_query, unix_ms(), &nonce(), body)
}

/// Adds the four signing headers to a request.
pub fn with_headers(rb: reqwest::RequestBuilder, h: &SignedHeaders) -> reqwest::RequestBuilder {
    rb.header(auth::HEADER_KEY, &h.key)
        .header(auth::HEADER_TIMESTAMP, &h.timestamp)
        .header(auth::HEADER_NONCE, &h.nonce)
        .header(auth::HEADER_SIGNATURE, &h.signature)
}

/// The load generator's HTTP client: keep-alive, no Nagle, a pool large enough for every sender.
pub fn http_client() -> Result<reqwest::Client> {
    Ok(client_builder().build()?)
}

fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(4096)
        .pool_idle_timeout(Duration::from_secs(300))
        .timeout(Duration::from_secs(60))
}

/// [`http_client`] for `server`: over TLS it trusts the server's CA and offers only HTTP/1.1
/// (so a TLS run makes the same connections as a plain one: one per sender, one request at a
/// time), on rustls with ring as grove's client does.
pub fn http_client_for(server: &Server) -> Result<reqwest::Client> {
    use rustls::pki_types::pem::PemObject;
    let Some(ca) = &server.ca_pem else { return http_client() };
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(cert?)?;
    }
    // ring, as grove's client: rustls 0.23.48 deprecates it (no post-quantum key exchange).
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(client_builder().use_preconfigured_tls(tls).build()?)
}

/// How the benchmark's server is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Plain HTTP.
    Plain,
    /// TLS terminated by grove (`[tls]`), with a certificate of a CA made for the run.
    Tls,
}

/// Writes a fresh CA and a certificate for 127.0.0.1 signed by it into `dir`: answers the CA's
/// PEM and the certificate and key files.
fn make_certificate(dir: &std::path::Path) -> Result<(String, PathBuf, PathBuf)> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name.push(DnType::CommonName, "grove-bench CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate()?;
    let ca_pem = ca.self_signed(&ca_key)?.pem();
    let issuer = Issuer::new(ca, ca_key);
    let leaf_key = KeyPair::generate()?;
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])?.signed_by(&leaf_key, &issuer)?;
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, leaf.pem())?;
    std::fs::write(&key, leaf_key.serialize_pem())?;
    Ok((ca_pem, cert, key))
}

/// A request signed ahead of time: the timed loop only sends it.
pub struct Prepared {
    pub url: String,
    pub headers: SignedHeaders,
    pub body: Vec<u8>,
}

/// Signs an application entry for `path` (`/v1/rooms/{room}/log`).
pub fn prepare_append(
    base: &str,
    server_key: &[u8; 32],
    user: &User,
    room: &str,
    epoch: u64,
    payload: Vec<u8>,
) -> Prepared {
    let path = format!("/v1/rooms/{room}/log");
    let body = serde_json::to_vec(&AppendEntry { kind: EntryKind::Application, epoch, body: payload })
        .expect("plain data serialises");
    let headers = sign(user, server_key, "POST", &path, &body);
    Prepared { url: format!("{base}{path}"), headers, body }
}

/// Sends a prepared request; answers the status (and the body text for errors), after reading
/// the body to the end so the connection goes back to the pool.
pub async fn send(client: &reqwest::Client, p: Prepared) -> Result<(u16, String)> {
    let resp = with_headers(client.post(&p.url), &p.headers)
        .header("content-type", "application/json")
        .body(p.body)
        .send()
        .await?;
    let status = resp.status().as_u16();
    let body = resp.bytes().await?;
    let text = if status >= 300 { String::from_utf8_lossy(&body).into_owned() } else { String::new() };
    Ok((status, text))
}

/// The in-process grove server.
pub struct Server {
    pub addr: SocketAddr,
    pub base: String,
    /// The CA that signed the server's certificate, when it speaks TLS.
    pub ca_pem: Option<String>,
    _state: AppState,
    pub store: Arc<SqliteStore>,
    pub server_key: [u8; 32],
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _dir: tempfile::TempDir,
}

/// The configuration used by every benchmark: durable commits, limits out of the way.
pub fn bench_config(dir: &std::path::Path) -> Config {
    let mut c = Config::default();
    c.server.data_dir = dir.to_path_buf();
    c.server.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    c.server.max_connections = 50_000;
    // Every load generator connects from 127.0.0.1 (1,000 push subscribers, say).
    c.connections.max_per_ip = 50_000;
    c.server.sqlite_synchronous = "full".into();
    c.limits.user_requests_per_sec = 100_000_000;
    c.limits.ip_requests_per_sec = 100_000_000;
    c.limits.rooms_per_user = 100_000;
    c.limits.members_per_room = 100_000;
    // `grove-bench attach` moves files of up to 4 GiB.
    c.files.max_file_bytes = 4 << 30;
    c.files.user_quota_bytes = 64 << 30;
    c.files.room_quota_bytes = 64 << 30;
    c
}

/// Opens a SQLite store (synchronous=FULL) in `dir` from a server-runtime thread, so that the
/// writer thread it starts inherits the server core.
pub async fn open_store(env: &Env, dir: PathBuf) -> Result<Arc<SqliteStore>> {
    let store = env
        .srv
        .spawn_blocking(move || {
            SqliteStore::open(
                &dir.join("grove.db"),
                SqliteOptions { synchronous: Synchronous::Full, ..SqliteOptions::default() },
            )
        })
        .await??;
    Ok(Arc::new(store))
}

/// Starts the grove server on 127.0.0.1:0, on the server runtime, with a fresh data folder.
pub async fn start_server(env: &Env) -> Result<Server> {
    start_server_with(env, Transport::Plain).await
}

/// [`start_server`], speaking TLS or not.
pub async fn start_server_with(env: &Env, transport: Transport) -> Result<Server> {
    let dir = tempfile::Builder::new().prefix("grove-bench-").tempdir_in(&env.dir)?;
    let mut config = bench_config(dir.path());
    let mut ca_pem = None;
    if transport == Transport::Tls {
        let (ca, cert, key) = make_certificate(dir.path())?;
        config.tls.cert = Some(cert);
        config.tls.key = Some(key);
        ca_pem = Some(ca);
    }
    let tls = match (&config.tls.cert, &config.tls.key) {
        (Some(c), Some(k)) => Some(grove_server::tls::TlsFiles::load(c, k)?),
        _ => None,
    };
    let store = open_store(env, dir.path().to_path_buf()).await?;
    let key = grove_server::load_or_create_key(dir.path())?;
    let mut state = AppState::new(config, store.clone(), key);
    if let Some(tls) = tls {
        state = state.with_tls(tls);
    }
    let server_key = state.public_key();
    let (addr, stop_tx, task) = serve_on(env, state.clone()).await?;
    let scheme = if ca_pem.is_some() { "https" } else { "http" };
    Ok(Server {
        addr,
        base: format!("{scheme}://{addr}"),
        ca_pem,
        _state: state,
        store,
        server_key,
        stop: Some(stop_tx),
        task: Some(task),
        _dir: dir,
    })
}

/// A push WebSocket of the load generator.
pub type PushSocket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens `user`'s signed push WebSocket at `url` (`ws://…/v1/push`) and sends `subscribe`.
pub async fn push_subscribe(url: &str, user: &User, server_key: &[u8; 32], subscribe: String) -> Result<PushSocket> {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

    let req = signed_upgrade(url, "/v1/push", user, server_key)?;
    // A small read buffer: tungstenite zeroes `read_buffer_size` bytes on every read, and the
    // 128 KiB default would make the load generator, not the server, the bottleneck.
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let (mut ws, _) =
        tokio_tungstenite::connect_async_with_config(req, Some(config), true).await.context("websocket connect")?;
    ws.send(tokio_tungstenite::tungstenite::Message::text(subscribe)).await?;
    Ok(ws)
}

/// The upgrade request to `url`, signed by `user` over `path_and_query`.
fn signed_upgrade(
    url: &str,
    path_and_query: &str,
    user: &User,
    server_key: &[u8; 32],
) -> Result<tokio_tungstenite::tungstenite::handshake::client::Request> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let h = sign(user, server_key, "GET", path_and_query, b"");
    let mut req = url.into_client_request()?;
    let hs = req.headers_mut();
    hs.insert(auth::HEADER_KEY, h.key.parse()?);
    hs.insert(auth::HEADER_TIMESTAMP, h.timestamp.parse()?);
    hs.insert(auth::HEADER_NONCE, h.nonce.parse()?);
    hs.insert(auth::HEADER_SIGNATURE, h.signature.parse()?);
    Ok(req)
}

/// Opens `user`'s push WebSocket at `url` (`ws://…/v1/push`) with a frame binding, so that it
/// can send entries; answers it and the frame key (the server's half checked against its key).
pub async fn push_bound(
    url: &str,
    user: &User,
    server_key: &[u8; 32],
) -> Result<(PushSocket, grove_wire::push::FrameKey)> {
    use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

    let offer = grove_wire::push::Offer::new(&mut rand::rngs::OsRng);
    let query = format!("?{}={}", grove_wire::push::QUERY_BIND, offer.public_hex());
    let req = signed_upgrade(&format!("{url}{query}"), &format!("/v1/push{query}"), user, server_key)?;
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let (ws, response) =
        tokio_tungstenite::connect_async_with_config(req, Some(config), true).await.context("websocket connect")?;
    let header = |name: &str| -> Result<String> {
        Ok(response.headers().get(name).context("no push binding in the answer")?.to_str()?.to_string())
    };
    let key = offer.accept(
        &user.id,
        server_key,
        &header(grove_wire::push::HEADER_PUSH_KEY)?,
        &header(grove_wire::push::HEADER_PUSH_SIGNATURE)?,
    )?;
    Ok((ws, key))
}

/// A running server task: its address, the sender that stops it, and the task.
pub type Serving = (SocketAddr, oneshot::Sender<()>, tokio::task::JoinHandle<std::io::Result<()>>);

/// Starts `grove_server::run` for `state` on 127.0.0.1 (a free port), bound inside the server
/// runtime so that the listener and every accepted socket are driven by its reactor.
pub async fn serve_on(env: &Env, state: AppState) -> Result<Serving> {
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (addr_tx, addr_rx) = oneshot::channel::<SocketAddr>();
    let task = env.srv.spawn(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let _ = addr_tx.send(listener.local_addr()?);
        grove_server::run(listener, state, async move {
            let _ = stop_rx.await;
        })
        .await
    });
    let addr = addr_rx.await.context("the server did not start")?;
    Ok((addr, stop_tx, task))
}

impl Server {
    /// Stops the server (bounded: 10 s) and closes the store.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            if tokio::time::timeout(Duration::from_secs(10), t).await.is_err() {
                eprintln!("warning: the server did not stop within 10 s");
            }
        }
    }

    /// Creates a sender-keys room owned by `admin` and, if `members` is not empty, posts
    /// membership version 1 with `admin` plus `members` (admin only `admin`).
    pub async fn setup_room(
        &self,
        client: &reqwest::Client,
        admin: &User,
        name: &str,
        members: &[UserId],
    ) -> Result<()> {
        let body = serde_json::to_vec(&serde_json::json!({ "name": name, "mode": "sender-keys" }))?;
        let h = sign(admin, &self.server_key, "POST", "/v1/rooms", &body);
        let r = with_headers(client.post(format!("{}/v1/rooms", self.base)), &h)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        if r.status().as_u16() != 201 {
            bail!("creating room {name}: {} {}", r.status(), r.text().await.unwrap_or_default());
        }
        if members.is_empty() {
            return Ok(());
        }
        let mut all = vec![admin.id];
        all.extend_from_slice(members);
        let m = SignedMembership::sign(&admin.key, name, 1, all, grove_wire::policy::RoomPolicy::for_creator(admin.id));
        let payload = serde_json::to_vec(&m)?;
        let path = format!("/v1/rooms/{name}/log");
        let body = serde_json::to_vec(&AppendEntry { kind: EntryKind::Membership, epoch: 1, body: payload })?;
        let h = sign(admin, &self.server_key, "POST", &path, &body);
        let r = with_headers(client.post(format!("{}{path}", self.base)), &h)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        if r.status().as_u16() != 201 {
            bail!("membership of room {name}: {} {}", r.status(), r.text().await.unwrap_or_default());
        }
        Ok(())
    }
}

/// 256 bytes of random "ciphertext".
pub fn random_body(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut v);
    v
}

/// The median of some values (NaN-free), 0 for none.
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The soft limit on open files, from /proc/self/limits.
pub fn open_files_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Per-CPU (busy, total) jiffies from /proc/stat.
#[derive(Debug, Clone, Default)]
pub struct CpuSnap(Vec<(u64, u64)>);

/// Reads /proc/stat now.
pub fn cpu_snap() -> CpuSnap {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let mut v = Vec::new();
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let Some(name) = it.next() else { continue };
        if !name.starts_with("cpu") || name == "cpu" {
            continue;
        }
        let f: Vec<u64> = it.filter_map(|x| x.parse().ok()).collect();
        if f.len() < 5 {
            continue;
        }
        // user nice system idle iowait irq softirq steal …
        let total: u64 = f.iter().take(8).sum();
        let idle = f[3] + f[4];
        v.push((total - idle, total));
    }
    CpuSnap(v)
}

/// Busy fraction of each CPU between two snapshots.
pub fn cpu_busy(a: &CpuSnap, b: &CpuSnap) -> Vec<f64> {
    a.0.iter()
        .zip(b.0.iter())
        .map(|(x, y)| {
            let total = y.1.saturating_sub(x.1);
            if total == 0 {
                0.0
            } else {
                y.0.saturating_sub(x.0) as f64 / total as f64
            }
        })
        .collect()
}

/// Server-core and client-core busy fractions over a window (with `--pin none`: cpu0, cpu1).
#[derive(Debug, Clone, Copy, Default)]
pub struct Cores {
    pub server: f64,
    pub client: f64,
}

impl Cores {
    pub fn between(env: &Env, a: &CpuSnap, b: &CpuSnap) -> Cores {
        let busy = cpu_busy(a, b);
        Cores {
            server: busy.get(env.server_core).copied().unwrap_or(0.0),
            client: busy.get(env.client_core).copied().unwrap_or(0.0),
        }
    }
}

impl std::fmt::Display for Cores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "busy: server core {:.0}%, client core {:.0}%", self.server * 100.0, self.client * 100.0)
    }
}

/// Busy jiffies of all CPUs and of this process (user + system), to tell how much CPU other
/// processes took during a run.
pub fn busy_jiffies() -> (u64, u64) {
    let all: u64 = cpu_snap().0.iter().map(|c| c.0).sum();
    let own = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1.to_string();
            let f: Vec<&str> = rest.split_whitespace().collect();
            // After the command: state is field 3; utime and stime are fields 14 and 15.
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0);
    (all, own)
}

//! Signed HTTP requests to one grove server.

use std::sync::OnceLock;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use grove_wire::api::{
    Ack, Acked, AppendEntry, Appended, ClaimKey, ClaimedKey, CreateRoom, CreateUpload, Deposit, Deposited, KeyCounts,
    KeyItemUpload, KeyKind, LogPage, MailboxPage, PublishKeys, RatchetTree, RoomInfo, ServerInfo, UploadState,
};
use grove_wire::attachment::BlobId;
use grove_wire::{ApiError, ErrorCode, UserId};
use rand::RngCore;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};

pub(crate) use crate::known::KnownServers;
use crate::net::{Net, NetConfig};

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The server answered with an error body.
    #[error("{url}: {error}")]
    Api {
        /// The server.
        url: String,
        /// What it said.
        error: ApiError,
    },
    /// The server could not be reached or answered something that is not grove.
    #[error("cannot reach the grove server at {url}: {detail}")]
    Unreachable {
        /// The server.
        url: String,
        /// Why.
        detail: String,
    },
    /// The server presents another key than the one this profile learned on first contact
    /// (see [`KnownServers`]).
    #[error(
        "the server at {url} now presents the key {presented}, but this profile first met it with the key \
         {known}: something between you and the server may be impersonating it, so nothing was sent. If its \
         operator replaced the server's key on purpose (ask them), accept the new key with `grove server trust \
         {url} {presented}`"
    )]
    KeyChanged {
        /// The server.
        url: String,
        /// The key remembered from the first contact.
        known: UserId,
        /// The key it presents now.
        presented: UserId,
    },
}

impl TransportError {
    /// Whether the request may succeed if made again later: the server could not be reached,
    /// or it said "not now" (rate limited, unavailable, an internal failure, storage full, a
    /// clock or nonce problem of this one attempt). The outbox keeps such a message; an
    /// upload goes on from where the server is.
    pub fn is_transient(&self) -> bool {
        match self {
            TransportError::KeyChanged { .. } => false,
            TransportError::Unreachable { .. } => true,
            TransportError::Api { error, .. } => matches!(
                error.code,
                ErrorCode::RateLimited
                    | ErrorCode::Unavailable
                    | ErrorCode::Internal
                    | ErrorCode::StorageFull
                    | ErrorCode::StaleTimestamp
                    | ErrorCode::NonceReused
            ),
        }
    }

    /// The API error code, if the server answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            TransportError::Api { error, .. } => Some(error.code),
            TransportError::Unreachable { .. } | TransportError::KeyChanged { .. } => None,
        }
    }

    /// The API error body, if any.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            TransportError::Api { error, .. } => Some(error),
            TransportError::Unreachable { .. } | TransportError::KeyChanged { .. } => None,
        }
    }
}

/// One server, spoken to as one user.
#[derive(Debug, Clone)]
pub struct Server {
    base: String,
    net: Net,
    key: SigningKey,
    /// The servers' keys learned on first contact, checked on every `/v1/info` (none: unchecked).
    known: Option<KnownServers>,
    /// The server's `/v1/info`, fetched once (its key signs every request; its limits).
    info: std::sync::Arc<OnceLock<ServerInfo>>,
    /// The push connection appends go over while one is open ([`Server::append`]), shared by
    /// every clone of this handle.
    socket: std::sync::Arc<std::sync::Mutex<Option<SocketSender>>>,
    /// Entries appended over the push connection, for the tests and the status line.
    socket_sends: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Log reads this handle (and its clones) made, for the tests.
    log_reads: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Rooms the open push connection follows live (their backlog delivered, the server's
    /// `live` marker received): room → the last entry received. Emptied when it closes.
    live: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, u64>>>,
}

/// An append handed to the push connection ([`crate::push`]), answered on `reply`.
#[derive(Debug)]
pub(crate) struct SocketSend {
    pub(crate) room: String,
    pub(crate) entry: AppendEntry,
    pub(crate) reply: tokio::sync::oneshot::Sender<Result<Appended, TransportError>>,
}

/// Where a push connection takes appends.
pub(crate) type SocketSender = tokio::sync::mpsc::UnboundedSender<SocketSend>;

/// Unix milliseconds (the client is where the clock is read).
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn nonce() -> String {
    let mut b = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Server {
    /// A server at `base` (e.g. `https://chat.example`), acting as the holder of `key`, reached
    /// with the built-in TLS roots ([`Net::shared_default`]) and its key not checked against a
    /// remembered one.
    pub fn new(base: &str, key: SigningKey) -> Server {
        Server::with_net(base, key, Net::shared_default(), None)
    }

    /// A server at `base`, reached through `net`; with `known`, its key must be the one
    /// remembered there (the first contact remembers it). Plain `http://` to another machine
    /// is logged as a warning once per handle.
    pub fn with_net(base: &str, key: SigningKey, net: Net, known: Option<KnownServers>) -> Server {
        let base = base.trim_end_matches('/').to_string();
        if crate::net::is_clear_text(&base) {
            tracing::warn!(
                "talking to {base} in clear text (no TLS): anyone on the way can see which rooms you use and \
                 when; write https:// if the server has a certificate"
            );
        }
        Server {
            base,
            net,
            key,
            known,
            info: std::sync::Arc::new(OnceLock::new()),
            socket: std::sync::Arc::default(),
            socket_sends: std::sync::Arc::default(),
            live: std::sync::Arc::default(),
            log_reads: std::sync::Arc::default(),
        }
    }

    /// How this handle makes connections.
    pub fn net(&self) -> &Net {
        &self.net
    }

    /// [`Server::new`], every connection through `proxy` when there is one (see
    /// [`crate::proxy`]). A proxy that cannot be set up fails every request: there is never a
    /// direct connection in its place.
    pub fn with_proxy(base: &str, key: SigningKey, proxy: Option<crate::proxy::Proxy>) -> Server {
        let net = match proxy {
            None => Net::shared_default(),
            Some(proxy) => Net::new_or_failing(&NetConfig { ca_file: None, proxy: Some(proxy) }),
        };
        Server::with_net(base, key, net, None)
    }

    /// The proxy this server is reached through.
    pub fn proxy(&self) -> Option<&crate::proxy::Proxy> {
        self.net.config().proxy.as_ref()
    }

    fn http(&self) -> Result<&reqwest::Client, TransportError> {
        self.net.http().map_err(|e| self.unreachable(e))
    }

    /// A request that could not be made or answered, its TLS problem (if any) said plainly.
    fn failed(&self, e: reqwest::Error) -> TransportError {
        self.unreachable(crate::net::describe(&e))
    }

    /// The server's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn unreachable(&self, e: impl std::fmt::Display) -> TransportError {
        TransportError::Unreachable { url: self.base.clone(), detail: e.to_string() }
    }

    async fn answer<T: DeserializeOwned>(&self, resp: reqwest::Response) -> Result<T, TransportError> {
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| self.unreachable(e))?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| self.unreachable(format!("unexpected answer: {e}")));
        }
        match serde_json::from_slice::<ApiError>(&bytes) {
            Ok(error) => Err(TransportError::Api { url: self.base.clone(), error }),
            Err(_) => Err(self.unreachable(format!("HTTP {status} without a grove error body"))),
        }
    }

    /// `GET /v1/info` (unsigned).
    pub async fn info(&self) -> Result<ServerInfo, TransportError> {
        let resp = self.http()?.get(format!("{}/v1/info", self.base)).send().await.map_err(|e| self.failed(e))?;
        self.answer(resp).await
    }

    /// `/v1/info`, fetched on first use and kept for the life of this handle and its clones.
    /// Its key is checked against the one remembered for this server (and remembered on the
    /// first contact) before anything is signed for it.
    pub async fn cached_info(&self) -> Result<&ServerInfo, TransportError> {
        if self.info.get().is_none() {
            let info = self.info().await?;
            if let Some(known) = &self.known {
                let key: UserId =
                    info.public_key.parse().map_err(|_| self.unreachable("the server's public key is malformed"))?;
                known.check(&self.base, &key)?;
            }
            let _ = self.info.set(info);
        }
        self.info.get().ok_or_else(|| self.unreachable("no server information"))
    }

    /// The server's public key (from its `/v1/info`, checked against the remembered one).
    pub(crate) async fn server_key(&self) -> Result<[u8; 32], TransportError> {
        let info = self.cached_info().await?;
        let key: UserId =
            info.public_key.parse().map_err(|_| self.unreachable("the server's public key is malformed"))?;
        Ok(key.0)
    }

    async fn signed<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<T, TransportError> {
        let server_key = self.server_key().await?;
        let body = body.unwrap_or_default();
        let h =
            grove_wire::auth::sign_request(&self.key, &server_key, method.as_str(), path, now_ms(), &nonce(), &body);
        let resp = self
            .http()?
            .request(method, format!("{}{path}", self.base))
            .timeout(timeout)
            .header(grove_wire::auth::HEADER_KEY, h.key)
            .header(grove_wire::auth::HEADER_TIMESTAMP, h.timestamp)
            .header(grove_wire::auth::HEADER_NONCE, h.nonce)
            .header(grove_wire::auth::HEADER_SIGNATURE, h.signature)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| self.failed(e))?;
        self.answer(resp).await
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, TransportError> {
        self.signed(reqwest::Method::GET, path, None, Duration::from_secs(30)).await
    }

    async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T, TransportError> {
        let bytes = serde_json::to_vec(body).map_err(|e| self.unreachable(e))?;
        self.signed(reqwest::Method::POST, path, Some(bytes), Duration::from_secs(30)).await
    }

    /// The signed upgrade request of the push WebSocket (`/v1/push`), `ws://` or `wss://` as
    /// the server's URL is `http://` or `https://`; with `bind`, the client's half of the
    /// frame binding that lets it send on the socket (see [`grove_wire::push`]).
    pub async fn push_request(
        &self,
        bind: Option<&grove_wire::push::Offer>,
    ) -> Result<tokio_tungstenite::tungstenite::handshake::client::Request, TransportError> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let server_key = self.server_key().await?;
        let ws = if let Some(rest) = self.base.strip_prefix("https://") {
            format!("wss://{rest}/v1/push")
        } else if let Some(rest) = self.base.strip_prefix("http://") {
            format!("ws://{rest}/v1/push")
        } else {
            return Err(self.unreachable("the server's URL is neither http:// nor https://"));
        };
        let path = match bind {
            Some(offer) => format!("/v1/push?{}={}", grove_wire::push::QUERY_BIND, offer.public_hex()),
            None => "/v1/push".to_string(),
        };
        let ws = format!("{}{}", ws.trim_end_matches("/v1/push"), path);
        let h = grove_wire::auth::sign_request(&self.key, &server_key, "GET", &path, now_ms(), &nonce(), b"");
        let mut req = ws.into_client_request().map_err(|e| self.unreachable(e))?;
        let headers = req.headers_mut();
        for (name, value) in [
            (grove_wire::auth::HEADER_KEY, h.key),
            (grove_wire::auth::HEADER_TIMESTAMP, h.timestamp),
            (grove_wire::auth::HEADER_NONCE, h.nonce),
            (grove_wire::auth::HEADER_SIGNATURE, h.signature),
        ] {
            headers.insert(name, value.parse().map_err(|_| self.unreachable("a signature header is not ASCII"))?);
        }
        Ok(req)
    }

    /// Publishes key material.
    pub async fn publish_keys(&self, items: Vec<KeyItemUpload>) -> Result<KeyCounts, TransportError> {
        self.post("/v1/keys", &PublishKeys { items }).await
    }

    /// What the user has on the server.
    pub async fn key_counts(&self) -> Result<KeyCounts, TransportError> {
        self.get("/v1/keys").await
    }

    /// Claims one item of `user`'s key material.
    pub async fn claim_key(&self, user: &UserId, kind: KeyKind) -> Result<ClaimedKey, TransportError> {
        self.post(&format!("/v1/keys/{user}/claim"), &ClaimKey { kind }).await
    }

    /// Deposits into `user`'s mailbox.
    pub async fn deposit(&self, user: &UserId, body: Vec<u8>) -> Result<Deposited, TransportError> {
        self.post(&format!("/v1/mailboxes/{user}"), &Deposit { body }).await
    }

    /// Reads the own mailbox after a cursor, waiting up to `wait` seconds for something new.
    pub async fn read_mailbox(&self, after: u64, wait: u64) -> Result<MailboxPage, TransportError> {
        let path = format!("/v1/mailbox?after={after}&wait={wait}");
        self.signed(reqwest::Method::GET, &path, None, Duration::from_secs(wait + 30)).await
    }

    /// Acknowledges (deletes) own mailbox messages up to `up_to`.
    pub async fn ack_mailbox(&self, up_to: u64) -> Result<Acked, TransportError> {
        self.post("/v1/mailbox/ack", &Ack { up_to }).await
    }

    /// Creates a room.
    pub async fn create_room(&self, req: &CreateRoom) -> Result<RoomInfo, TransportError> {
        self.post("/v1/rooms", req).await
    }

    /// A room as its member sees it.
    pub async fn room(&self, name: &str) -> Result<RoomInfo, TransportError> {
        self.get(&format!("/v1/rooms/{name}")).await
    }

    /// Appends an entry: over the push connection while one is open on this server (a
    /// dropped connection is an unreachable server, as a dropped HTTP request is), otherwise
    /// by `POST /v1/rooms/{room}/log`.
    pub async fn append(&self, room: &str, entry: &AppendEntry) -> Result<Appended, TransportError> {
        let socket = self.socket.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(socket) = socket {
            let (reply, answer) = tokio::sync::oneshot::channel();
            if socket.send(SocketSend { room: room.to_string(), entry: entry.clone(), reply }).is_ok() {
                self.socket_sends.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return match tokio::time::timeout(Duration::from_secs(30), answer).await {
                    Ok(Ok(result)) => result,
                    Ok(Err(_)) => Err(self.unreachable("the push connection dropped before the server answered")),
                    Err(_) => Err(self.unreachable("the server did not answer a send on the push connection in 30 s")),
                };
            }
        }
        self.post(&format!("/v1/rooms/{room}/log"), entry).await
    }

    /// Log reads (`GET /v1/rooms/{room}/log`) this handle and its clones made.
    pub fn log_reads(&self) -> u64 {
        self.log_reads.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Entries this handle (and its clones) appended over a push connection.
    pub fn appended_over_push(&self) -> u64 {
        self.socket_sends.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The push connection takes this handle's appends from now on (`None`: no longer, and
    /// no room is followed live any more).
    pub(crate) fn attach_socket(&self, socket: Option<SocketSender>) {
        if socket.is_none() {
            self.live.lock().unwrap_or_else(|p| p.into_inner()).clear();
        }
        *self.socket.lock().unwrap_or_else(|p| p.into_inner()) = socket;
    }

    /// The push connection received `room`'s entries up to `seq`: with `live`, its backlog is
    /// out (the server's `live` marker) and the room is followed live from now on; without, an
    /// entry of a room followed live arrived (a room not followed live stays so); `None`: the
    /// room is no longer followed.
    pub(crate) fn note_received(&self, room: &str, seq: Option<u64>, live: bool) {
        let mut rooms = self.live.lock().unwrap_or_else(|p| p.into_inner());
        match (seq, live) {
            (None, _) => {
                rooms.remove(room);
            }
            (Some(seq), true) => {
                let at = rooms.entry(room.to_string()).or_insert(seq);
                *at = (*at).max(seq);
            }
            (Some(seq), false) => {
                if let Some(at) = rooms.get_mut(room) {
                    *at = (*at).max(seq);
                }
            }
        }
    }

    /// If the open push connection follows `room` live: the last of its entries received. A
    /// profile that has applied up to there is as current as a read of the log would make it
    /// (entries appended since are on their way, as they would be after a read).
    pub fn live_through(&self, room: &str) -> Option<u64> {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).get(room).copied()
    }

    /// The user this handle signs as.
    pub(crate) fn user(&self) -> UserId {
        UserId(self.key.verifying_key().to_bytes())
    }

    /// Reports a commit of the room that this member cannot process (see
    /// [`grove_wire::api::FaultReport`]).
    pub async fn report_fault(
        &self,
        room: &str,
        report: &grove_wire::api::FaultReport,
    ) -> Result<grove_wire::api::ReportOutcome, TransportError> {
        self.post(&format!("/v1/rooms/{room}/reports"), report).await
    }

    /// Sets (or resets) the room's invite link.
    pub async fn set_room_link(
        &self,
        room: &str,
        req: &grove_wire::api::SetRoomLink,
    ) -> Result<grove_wire::api::RoomLinkInfo, TransportError> {
        self.post(&format!("/v1/rooms/{room}/link"), req).await
    }

    /// Revokes the room's invite link.
    pub async fn revoke_room_link(&self, room: &str) -> Result<grove_wire::api::Deleted, TransportError> {
        self.signed(reqwest::Method::DELETE, &format!("/v1/rooms/{room}/link"), None, Duration::from_secs(30)).await
    }

    /// Asks to join a room with its link's token.
    pub async fn ask_to_join(
        &self,
        room: &str,
        req: &grove_wire::api::AskToJoin,
    ) -> Result<grove_wire::api::JoinAsked, TransportError> {
        self.post(&format!("/v1/rooms/{room}/joins"), req).await
    }

    /// Keeps the room's GroupInfo, sealed for its link's holders, on the server (MLS link joins).
    pub async fn put_link_group_info(
        &self,
        room: &str,
        req: &grove_wire::api::PutLinkGroupInfo,
    ) -> Result<grove_wire::api::LinkGroupInfoKept, TransportError> {
        let bytes = serde_json::to_vec(req).map_err(|e| self.unreachable(e))?;
        self.signed(
            reqwest::Method::PUT,
            &format!("/v1/rooms/{room}/link/group-info"),
            Some(bytes),
            Duration::from_secs(30),
        )
        .await
    }

    /// The room's GroupInfo as its members sealed it for the link whose token is shown.
    pub async fn link_group_info(
        &self,
        room: &str,
        req: &grove_wire::api::LinkToken,
    ) -> Result<grove_wire::api::SealedGroupInfo, TransportError> {
        self.post(&format!("/v1/rooms/{room}/link/group-info"), req).await
    }

    /// Posts a link holder's external commit that adds it to the room.
    pub async fn link_join(
        &self,
        room: &str,
        req: &grove_wire::api::LinkJoin,
    ) -> Result<grove_wire::api::Appended, TransportError> {
        self.post(&format!("/v1/rooms/{room}/link/join"), req).await
    }

    /// The join requests waiting in a room.
    pub async fn join_requests(&self, room: &str) -> Result<grove_wire::api::JoinRequests, TransportError> {
        self.get(&format!("/v1/rooms/{room}/joins")).await
    }

    /// Drops a join request (carried out or denied).
    pub async fn drop_join_request(
        &self,
        room: &str,
        user: &UserId,
    ) -> Result<grove_wire::api::Deleted, TransportError> {
        let path = format!("/v1/rooms/{room}/joins/{user}");
        self.signed(reqwest::Method::DELETE, &path, None, Duration::from_secs(30)).await
    }

    /// Reads the log after a cursor, waiting up to `wait` seconds for something new.
    pub async fn read_log(&self, room: &str, after: u64, limit: u32, wait: u64) -> Result<LogPage, TransportError> {
        self.log_reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = format!("/v1/rooms/{room}/log?after={after}&limit={limit}&wait={wait}");
        self.signed(reqwest::Method::GET, &path, None, Duration::from_secs(wait + 30)).await
    }

    /// The room's public ratchet tree.
    pub async fn ratchet_tree(&self, room: &str) -> Result<RatchetTree, TransportError> {
        self.get(&format!("/v1/rooms/{room}/tree")).await
    }

    /// The room's public ratchet tree as of `epoch`.
    pub async fn ratchet_tree_at(&self, room: &str, epoch: u64) -> Result<RatchetTree, TransportError> {
        self.get(&format!("/v1/rooms/{room}/tree?epoch={epoch}")).await
    }
}

/// How long one upload part may take to go up and be answered (the server's own deadline).
const PART_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// How long a download may wait for its answer to begin.
pub(crate) const DOWNLOAD_START_TIMEOUT: Duration = Duration::from_secs(60);

/// The blob store of encrypted attachments (`/v1/rooms/{room}/files`); see [`crate::files`].
impl Server {
    /// A request signed over a body known by its SHA-256 (sent in `x-grove-content-sha256`
    /// where the body is streamed; otherwise the server hashes the body itself).
    async fn signed_request(
        &self,
        method: reqwest::Method,
        path: &str,
        body_sha256: &[u8; 32],
    ) -> Result<reqwest::RequestBuilder, TransportError> {
        let server_key = self.server_key().await?;
        let h = grove_wire::auth::sign_request_prehashed(
            &self.key,
            &server_key,
            method.as_str(),
            path,
            now_ms(),
            &nonce(),
            body_sha256,
        );
        Ok(self
            .http()?
            .request(method, format!("{}{path}", self.base))
            .header(grove_wire::auth::HEADER_KEY, h.key)
            .header(grove_wire::auth::HEADER_TIMESTAMP, h.timestamp)
            .header(grove_wire::auth::HEADER_NONCE, h.nonce)
            .header(grove_wire::auth::HEADER_SIGNATURE, h.signature))
    }

    /// Begins the upload of a blob of `size` bytes to `room`: the server chooses its id and
    /// the part length.
    pub async fn begin_upload(&self, room: &str, size: u64) -> Result<UploadState, TransportError> {
        self.post(&format!("/v1/rooms/{room}/files"), &CreateUpload { size }).await
    }

    /// Where an upload stands: how many bytes the server holds.
    pub async fn upload_state(&self, room: &str, blob: &BlobId) -> Result<UploadState, TransportError> {
        self.get(&format!("/v1/rooms/{room}/files/{blob}/upload")).await
    }

    /// Sends the part of `blob` that starts at `offset` (`part_bytes` long, or the rest).
    pub async fn upload_part(
        &self,
        room: &str,
        blob: &BlobId,
        offset: u64,
        part: bytes::Bytes,
    ) -> Result<UploadState, TransportError> {
        let hash: [u8; 32] = Sha256::digest(&part).into();
        self.upload_part_hashed(room, blob, offset, part, &hash).await
    }

    /// [`upload_part`](Self::upload_part) of a part whose SHA-256 the caller has (computed
    /// where the part was made).
    pub async fn upload_part_hashed(
        &self,
        room: &str,
        blob: &BlobId,
        offset: u64,
        part: bytes::Bytes,
        hash: &[u8; 32],
    ) -> Result<UploadState, TransportError> {
        let path = format!("/v1/rooms/{room}/files/{blob}?offset={offset}");
        let resp = self
            .signed_request(reqwest::Method::PUT, &path, hash)
            .await?
            .header(grove_wire::auth::HEADER_CONTENT_SHA256, grove_wire::auth::sha256_hex(hash))
            .header("content-type", "application/octet-stream")
            .timeout(PART_TIMEOUT)
            .body(part)
            .send()
            .await
            .map_err(|e| self.failed(e))?;
        self.answer(resp).await
    }

    /// Starts the download of `blob` from byte `from` (an HTTP `Range` when not 0). The answer's
    /// body is the blob's bytes from there on, to be read with `chunk()`.
    pub(crate) async fn download_blob(
        &self,
        room: &str,
        blob: &BlobId,
        from: u64,
    ) -> Result<reqwest::Response, TransportError> {
        let path = format!("/v1/rooms/{room}/files/{blob}");
        let mut req = self.signed_request(reqwest::Method::GET, &path, &Sha256::digest(b"").into()).await?;
        if from > 0 {
            req = req.header("range", format!("bytes={from}-"));
        }
        let resp = tokio::time::timeout(DOWNLOAD_START_TIMEOUT, req.send())
            .await
            .map_err(|_| self.unreachable("no answer to a download within a minute"))?
            .map_err(|e| self.failed(e))?;
        let status = resp.status();
        if !status.is_success() {
            return match self.answer::<serde::de::IgnoredAny>(resp).await {
                Err(e) => Err(e),
                Ok(_) => Err(self.unreachable(format!("HTTP {status} to a download"))),
            };
        }
        // A resumed download must continue exactly where the bytes stopped.
        let starts_at = resp
            .headers()
            .get("content-range")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("bytes "))
            .and_then(|v| v.split('-').next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        if starts_at != from || (from > 0 && status.as_u16() != 206) {
            return Err(self.unreachable(format!(
                "asked for the blob from byte {from}, the server answered HTTP {status} from byte {starts_at}"
            )));
        }
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: ErrorCode) -> TransportError {
        TransportError::Api { url: "http://s".into(), error: ApiError::new(code, "said") }
    }

    #[test]
    fn a_full_disk_or_a_busy_server_means_later_and_a_refusal_means_never() {
        for code in [ErrorCode::StorageFull, ErrorCode::Unavailable, ErrorCode::RateLimited, ErrorCode::Internal] {
            assert!(api(code).is_transient(), "{code:?}");
        }
        assert!(TransportError::Unreachable { url: "http://s".into(), detail: "refused".into() }.is_transient());
        for code in [ErrorCode::NotMember, ErrorCode::PayloadTooLarge, ErrorCode::Blocked] {
            assert!(!api(code).is_transient(), "{code:?}");
        }
    }
}

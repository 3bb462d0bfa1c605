//! The blob store of encrypted attachments: `/v1/rooms/{room}/files…`.
//!
//! A blob belongs to one room. A current member begins an upload by declaring the blob's exact
//! length (`POST /v1/rooms/{room}/files`); the server checks the per-file limit and the
//! uploader's and room's quotas, chooses a random [`BlobId`], and records the blob. The
//! uploader then sends the bytes in parts (`PUT …/files/{blob}?offset=N`): every part but the
//! last is exactly `part_bytes` long, and a part is accepted only at the blob's current offset.
//! Each part is streamed into the object store as its own object, named by its index and its
//! SHA-256 (`blobs/{blob}/{index}-{sha256}`), and counted only once it is stored whole and its
//! SHA-256 matches the one the request declared and signed ([`HEADER_CONTENT_SHA256`]): a
//! dropped connection loses at most the part in flight, and the client resumes from `received`
//! (`GET …/files/{blob}/upload`). Once all bytes
//! are in, any current member may download the blob (`GET …/files/{blob}`), whole or by one
//! HTTP byte `Range`, streamed part by part.
//!
//! The server never parses a blob: it is ciphertext (grove-proto `attachment`), and the key is
//! only in the room's end-to-end encrypted messages. Neither upload nor download holds more
//! than one chunk of a part in memory, whatever the file's size.
//!
//! Incomplete uploads expire after `files.upload_ttl_secs`, complete blobs after
//! `files.retention_secs` (0: kept); [`purge_task`] deletes the parts, then the record.
//!
//! Storage: `object_store` ([`crate::objects`]) on the local filesystem (`files.store`, by
//! default `files/` in the data folder), on any S3-compatible service (`s3://BUCKET/PREFIX`),
//! or in memory for tests. Several instances sharing one PostgreSQL database share one bucket
//! (or one folder on a network filesystem mounted at the same path): the blob records, the
//! upload offsets and the quotas are in the database, and each part is its own object, so the
//! parts of one upload may land on different instances. A part is recorded by a compare-and-set
//! on the upload's offset in the database that keeps the part's hash in the same transaction:
//! of two requests for the same offset with different bodies, one is recorded, the other is
//! answered `upload_offset` and its object deleted; two with the same body (a retry reaching
//! another instance while the first attempt still streams in) are taken once. Because an
//! object's name holds its hash, two bodies for one part never write the same object, and a
//! download reads the object of the hash the database recorded, whichever instance wrote last.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use grove_store::{CreateFileOutcome, FilePartOutcome, FileQuota, FileRecord, NewFile};
use grove_wire::api::{CreateUpload, UploadState};
use grove_wire::attachment::BlobId;
use grove_wire::auth::{parse_sha256_hex, HEADER_CONTENT_SHA256};
use grove_wire::UserId;
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, ObjectStore, ObjectStoreExt, WriteMultipart};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rand::RngCore;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::auth::{authenticate_hashed, Authed, Signed};
use crate::error::{AppError, AppResult, AuthRefusal, FileRefusal, LimitRefusal, RequestRefusal};
use crate::routes::{P, Q};
use crate::state::AppState;

/// A part's body may pause this long between chunks before the upload of the part is dropped.
pub(crate) const PART_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A part must arrive whole within this time.
pub(crate) const PART_DEADLINE: Duration = Duration::from_secs(15 * 60);

/// Chunks of one part in flight to the object store at once.
const WRITE_CONCURRENCY: usize = 2;

/// Expired blobs deleted per purge round.
const PURGE_BATCH: u32 = 100;

/// The blob store: the object store (made on first use) and the parts being received.
pub(crate) struct FileService {
    objects: OnceLock<Arc<dyn ObjectStore>>,
    /// One lock per blob with a part in flight on this instance: its parts are received one at
    /// a time (see [`FileService::one_part_at_a_time`]).
    receiving: std::sync::Mutex<HashMap<BlobId, Arc<tokio::sync::Mutex<()>>>>,
}

/// Held while a part of one blob is received; the blob's lock is forgotten with its last holder.
pub(crate) struct Receiving<'a> {
    service: &'a FileService,
    blob: BlobId,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for Receiving<'_> {
    fn drop(&mut self) {
        let mut map = self.service.receiving.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(guard) = self.guard.take() {
            // The map's Arc and this guard's: nobody else waits for this blob.
            let last = Arc::strong_count(tokio::sync::OwnedMutexGuard::mutex(&guard)) == 2;
            drop(guard);
            if last {
                map.remove(&self.blob);
            }
        }
    }
}

impl FileService {
    pub(crate) fn new() -> Self {
        FileService { objects: OnceLock::new(), receiving: std::sync::Mutex::new(HashMap::new()) }
    }

    /// Waits until no other part of `blob` is being received on this instance: of two requests
    /// for the same offset (a client's retry while its first attempt still streams in, or a
    /// client sending other bytes), the second finds the offset moved on and is refused before
    /// it stores anything. Correctness does not rest on it (across instances, the hash in each
    /// part's object name and in the database keeps the recorded body), it saves the work.
    pub(crate) async fn one_part_at_a_time(&self, blob: BlobId) -> Receiving<'_> {
        let lock = {
            let mut map = self.receiving.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(blob).or_default().clone()
        };
        let guard = lock.lock_owned().await;
        Receiving { service: self, blob, guard: Some(guard) }
    }

    /// The object store `files.store` names, made (and its folder created) on first use.
    pub(crate) fn objects(&self, state: &AppState) -> AppResult<Arc<dyn ObjectStore>> {
        if let Some(o) = self.objects.get() {
            return Ok(o.clone());
        }
        let c = &state.0.config;
        let made = crate::objects::open(&c.files, &c.server.data_dir)
            .map_err(|e| AppError::internal("cannot open the blob store", e))?;
        Ok(self.objects.get_or_init(|| made).clone())
    }

    /// A remote store (S3), at start: opens it and checks that it takes, gives back and deletes
    /// an object, so that a missing bucket or refused credentials are reported then, not at the
    /// first upload. The local folder is still made on first use.
    pub(crate) async fn check(&self, state: &AppState) -> Result<(), String> {
        let c = &state.0.config;
        if !crate::objects::is_remote(&c.files) {
            return Ok(());
        }
        let objects = match self.objects.get() {
            Some(o) => o.clone(),
            None => crate::objects::open(&c.files, &c.server.data_dir)?,
        };
        crate::objects::probe(objects.as_ref()).await?;
        let _ = self.objects.set(objects);
        tracing::info!(store = %crate::objects::describe(&c.files, &c.server.data_dir), "blob store ready");
        Ok(())
    }
}

/// The object holding part `index` of `blob` whose SHA-256 is `sha256`; `None` for parts
/// recorded before the hashes were kept, stored under the index alone.
fn part_path(blob: &BlobId, index: u64, sha256: Option<&[u8; 32]>) -> ObjectPath {
    match sha256 {
        Some(h) => ObjectPath::from(format!("blobs/{blob}/{index:08}-{}", grove_wire::auth::sha256_hex(h))),
        None => ObjectPath::from(format!("blobs/{blob}/{index:08}")),
    }
}

/// The folder of `blob`'s part objects.
fn blob_prefix(blob: &BlobId) -> ObjectPath {
    ObjectPath::from(format!("blobs/{blob}"))
}

/// The metrics of the blob store; every label comes from a closed set.
pub(crate) struct FileMetrics {
    bytes_stored: Gauge,
    files_stored: Gauge,
    uploads: Family<Vec<(&'static str, &'static str)>, Counter>,
    downloads: Family<Vec<(&'static str, &'static str)>, Counter>,
    refusals: Family<Vec<(&'static str, &'static str)>, Counter>,
    bytes_received: Counter,
    bytes_sent: Counter,
}

impl FileMetrics {
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let m = FileMetrics {
            bytes_stored: Gauge::default(),
            files_stored: Gauge::default(),
            uploads: Family::default(),
            downloads: Family::default(),
            refusals: Family::default(),
            bytes_received: Counter::default(),
            bytes_sent: Counter::default(),
        };
        registry.register(
            "file_bytes_stored",
            "Blob bytes held (declared lengths, uploads in progress too)",
            m.bytes_stored.clone(),
        );
        registry.register("files_stored", "Blobs held, complete or not", m.files_stored.clone());
        registry.register("file_uploads", "Uploads, by stage (started, completed)", m.uploads.clone());
        registry.register("file_downloads", "Downloads, by kind (full, range)", m.downloads.clone());
        registry.register("file_refusals", "Refused file requests, by error code", m.refusals.clone());
        registry.register("file_bytes_received", "Blob bytes received in accepted parts", m.bytes_received.clone());
        registry.register("file_bytes_sent", "Blob bytes sent in downloads", m.bytes_sent.clone());
        m
    }

    fn refused(&self, e: &AppError) {
        self.refusals.get_or_create(&vec![("code", e.code().as_str())]).inc();
    }

    fn totals(&self, totals: grove_store::FileTotals) {
        self.bytes_stored.set(i64::try_from(totals.bytes).unwrap_or(i64::MAX));
        self.files_stored.set(i64::try_from(totals.files).unwrap_or(i64::MAX));
    }
}

/// Counts a refusal in the metrics on its way out.
fn counted<T>(state: &AppState, r: AppResult<T>) -> AppResult<T> {
    if let Err(e) = &r {
        state.0.metrics.files().refused(e);
    }
    r
}

/// The longest blob the server takes: the encryption of a `max_file_bytes` file.
fn max_blob(state: &AppState) -> u64 {
    grove_proto::attachment::ciphertext_len(state.0.config.files.max_file_bytes)
}

fn wire_state(f: &FileRecord) -> UploadState {
    UploadState {
        blob: f.blob,
        size: f.size,
        received: f.received,
        part_bytes: f.part_bytes,
        complete: f.complete(),
        expires_at: (f.expires_at != i64::MAX).then_some(f.expires_at),
    }
}

fn parse_blob(s: &str) -> AppResult<BlobId> {
    s.parse().map_err(|_| RequestRefusal::InvalidBlobId.into())
}

/// The blob `blob` of room `room`, for a current member `user`.
async fn member_file(state: &AppState, room: &str, blob: &str, user: &UserId) -> AppResult<FileRecord> {
    let blob = parse_blob(blob)?;
    let handle = state.0.rooms.get_for_member(state, room, user).await?;
    match state.0.store.file(&blob).await? {
        Some(f) if f.room == handle.id && f.expires_at > state.now() => Ok(f),
        _ => Err(FileRefusal::NoSuchBlob { room: room.to_string(), blob }.into()),
    }
}

// ---------------------------------------------------------------- begin an upload

pub(crate) async fn create_upload(
    State(state): State<AppState>,
    P(room): P<String>,
    req: Signed<CreateUpload>,
) -> AppResult<(StatusCode, Json<UploadState>)> {
    let r = create(&state, &room, req.user, req.body.size).await;
    counted(&state, r)
}

async fn create(state: &AppState, room: &str, user: UserId, size: u64) -> AppResult<(StatusCode, Json<UploadState>)> {
    let handle = state.0.rooms.get_for_member(state, room, &user).await?;
    let f = &state.0.config.files;
    // The smallest blob grove's cipher makes (an empty file, padded): anything shorter cannot
    // be an attachment, and a floor bounds the records a quota admits.
    let min = grove_proto::attachment::ciphertext_len(0);
    if size < min {
        return Err(FileRefusal::BlobTooSmall { min }.into());
    }
    if size > max_blob(state) {
        return Err(LimitRefusal::FileTooLarge { max_blob: max_blob(state), max_file: f.max_file_bytes }.into());
    }
    let needs = if crate::objects::is_remote(f) { 0 } else { size };
    state.0.metrics.storage_watch().reserve(state, "uploads", needs).await?;
    let mut id = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut id);
    let now = state.now();
    let ttl_ms = i64::try_from(f.upload_ttl_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    let new = NewFile {
        blob: BlobId(id),
        room: handle.id,
        owner: user,
        size,
        part_bytes: f.part_bytes,
        created_at: now,
        expires_at: now.saturating_add(ttl_ms),
    };
    let quota = FileQuota { per_user: f.user_quota_bytes, per_room: f.room_quota_bytes };
    match state.0.store.create_file(new, quota).await? {
        CreateFileOutcome::Created(rec) => {
            state.0.metrics.files().uploads.get_or_create(&vec![("stage", "started")]).inc();
            refresh_totals(state).await;
            tracing::info!(room, blob = %rec.blob, size, "upload begun");
            tracing::debug!(blob = %rec.blob, uploader = %user.short(), "upload begun by");
            Ok((StatusCode::CREATED, Json(wire_state(&rec))))
        }
        CreateFileOutcome::UserQuota { used } => {
            Err(LimitRefusal::UserFileQuota { used, quota: f.user_quota_bytes }.into())
        }
        CreateFileOutcome::RoomQuota { used } => {
            Err(LimitRefusal::RoomFileQuota { used, quota: f.room_quota_bytes }.into())
        }
    }
}

pub(crate) async fn refresh_totals(state: &AppState) {
    match state.0.store.file_totals().await {
        Ok(t) => state.0.metrics.files().totals(t),
        Err(e) => tracing::warn!(error = %e, "cannot read the blob totals"),
    }
}

// ---------------------------------------------------------------- upload state

pub(crate) async fn upload_state(
    State(state): State<AppState>,
    Authed(user): Authed,
    P((room, blob)): P<(String, String)>,
) -> AppResult<Json<UploadState>> {
    let r = member_file(&state, &room, &blob, &user).await.map(|f| Json(wire_state(&f)));
    counted(&state, r)
}

// ---------------------------------------------------------------- upload a part

/// A request signed over the SHA-256 its [`HEADER_CONTENT_SHA256`] header declares, with its
/// body left unread: the signature is checked before a byte of the body is, the hash after.
pub(crate) struct SignedStream {
    user: UserId,
    sha256: [u8; 32],
    body: Body,
}

impl FromRequest<AppState> for SignedStream {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        let sha256 = parts
            .headers
            .get(HEADER_CONTENT_SHA256)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_sha256_hex)
            .ok_or(AuthRefusal::ContentSha256Header)?;
        let user = authenticate_hashed(state, &parts.method, &parts.uri, &parts.headers, &sha256)?;
        Ok(SignedStream { user, sha256, body })
    }
}

/// `offset` of a part.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PartQuery {
    offset: u64,
}

pub(crate) async fn upload_part(
    State(state): State<AppState>,
    P((room, blob)): P<(String, String)>,
    Q(q): Q<PartQuery>,
    req: SignedStream,
) -> AppResult<Json<UploadState>> {
    let r = part(&state, &room, &blob, q.offset, req).await;
    counted(&state, r)
}

async fn part(
    state: &AppState,
    room: &str,
    blob: &str,
    offset: u64,
    req: SignedStream,
) -> AppResult<Json<UploadState>> {
    let f = member_file(state, room, blob, &req.user).await?;
    if f.owner != req.user {
        return Err(FileRefusal::NotUploader.into());
    }
    let _receiving = state.0.files.one_part_at_a_time(f.blob).await;
    // Read again: a part that was in flight may have been recorded meanwhile.
    let f = member_file(state, room, blob, &req.user).await?;
    if offset != f.received {
        return Err(FileRefusal::WrongOffset { received: f.received, size: f.size, offset }.into());
    }
    if f.complete() {
        return Err(FileRefusal::UploadComplete.into());
    }
    // The part's index and length follow from the offset: offsets are multiples of part_bytes.
    let index = offset / f.part_bytes.max(1);
    let expected = f.part_bytes.min(f.size - offset);
    if let Some(len) = axum::body::HttpBody::size_hint(&req.body).exact() {
        if len != expected {
            return Err(part_length_error(expected, len));
        }
    }
    // A blob in a remote bucket takes none of the database's disk; the reserve still applies.
    let needs = if crate::objects::is_remote(&state.0.config.files) { 0 } else { expected };
    state.0.metrics.storage_watch().reserve(state, "uploads", needs).await?;
    let objects = state.0.files.objects(state)?;
    let path = part_path(&f.blob, index, Some(&req.sha256));
    let upload = objects
        .put_multipart(&path)
        .await
        .map_err(|e| crate::storage::blob_write_error("cannot begin storing a part", e))?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, crate::objects::write_chunk(&state.0.config.files));
    let received = tokio::time::timeout(PART_DEADLINE, receive(req.body, &mut writer, expected)).await;
    let outcome = match received {
        Ok(Ok((len, hash))) if len == expected && hash == req.sha256 => Ok(()),
        Ok(Ok((len, _))) if len != expected => Err(part_length_error(expected, len)),
        Ok(Ok(_)) => Err(FileRefusal::DigestMismatch.into()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(FileRefusal::PartLate.into()),
    };
    if let Err(e) = outcome {
        if let Err(abort) = writer.abort().await {
            tracing::warn!(error = %abort, "cannot discard a refused part");
        }
        return Err(e);
    }
    writer.finish().await.map_err(|e| crate::storage::blob_write_error("cannot store a part", e))?;
    let c = &state.0.config.files;
    let expires = if c.retention_secs == 0 {
        i64::MAX
    } else {
        state.now().saturating_add(i64::try_from(c.retention_secs.saturating_mul(1000)).unwrap_or(i64::MAX))
    };
    let recorded = state.0.store.file_part(&f.blob, offset, expected, &req.sha256, expires).await;
    if !matches!(recorded, Ok(FilePartOutcome::Recorded(_) | FilePartOutcome::Held(_))) {
        // Another body was recorded for this part, or the blob is gone: this object is nobody's.
        // (Its name holds its hash, so it is not the recorded part's object.) After a store
        // error the part may have been recorded: the object stays, the purge takes it if not.
        if recorded.is_ok() {
            if let Err(e) = objects.delete(&path).await {
                tracing::warn!(blob = %f.blob, error = %e, "cannot delete a refused part");
            }
        }
    }
    match recorded? {
        FilePartOutcome::Held(f) => {
            tracing::debug!(blob = %f.blob, offset, "a part already recorded with the same hash");
            Ok(Json(wire_state(&f)))
        }
        FilePartOutcome::Recorded(f) => {
            let m = state.0.metrics.files();
            m.bytes_received.inc_by(expected);
            if f.complete() {
                m.uploads.get_or_create(&vec![("stage", "completed")]).inc();
                tracing::info!(room, blob = %f.blob, size = f.size, "upload complete");
            }
            Ok(Json(wire_state(&f)))
        }
        FilePartOutcome::Conflict(now) => Err(FileRefusal::PartRaced { received: now.received }.into()),
        FilePartOutcome::NoSuchFile => Err(FileRefusal::UploadExpired.into()),
    }
}

fn part_length_error(expected: u64, got: u64) -> AppError {
    FileRefusal::PartLength { expected, got }.into()
}

/// Streams `body` into `writer`, hashing it; refuses more than `max` bytes as they arrive and a
/// body that pauses longer than [`PART_IDLE_TIMEOUT`].
async fn receive(body: Body, writer: &mut WriteMultipart, max: u64) -> AppResult<(u64, [u8; 32])> {
    let mut stream = body.into_data_stream();
    let mut hasher = Sha256::new();
    let mut len: u64 = 0;
    loop {
        let next =
            tokio::time::timeout(PART_IDLE_TIMEOUT, stream.next()).await.map_err(|_| FileRefusal::PartStalled)?;
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(|e| {
            if crate::serve::caused_by::<crate::serve::BodyTimeout>(&e) {
                FileRefusal::PartTooSlow
            } else {
                FileRefusal::PartCutOff
            }
        })?;
        len = len.saturating_add(chunk.len() as u64);
        if len > max {
            return Err(part_length_error(max, len));
        }
        hasher.update(&chunk);
        writer
            .wait_for_capacity(WRITE_CONCURRENCY)
            .await
            .map_err(|e| crate::storage::blob_write_error("cannot store a part", e))?;
        writer.put(chunk);
    }
    Ok((len, hasher.finalize().into()))
}

// ---------------------------------------------------------------- download

pub(crate) async fn download(
    State(state): State<AppState>,
    Authed(user): Authed,
    P((room, blob)): P<(String, String)>,
    headers: HeaderMap,
) -> AppResult<Response> {
    let r = fetch(&state, &room, &blob, &user, &headers).await;
    counted(&state, r)
}

async fn fetch(state: &AppState, room: &str, blob: &str, user: &UserId, headers: &HeaderMap) -> AppResult<Response> {
    let f = member_file(state, room, blob, user).await?;
    if !f.complete() {
        return Err(FileRefusal::Incomplete { received: f.received, size: f.size }.into());
    }
    let range = match headers.get(header::RANGE).map(|v| parse_range(v.as_bytes(), f.size)) {
        None | Some(RangeRequest::Ignored) => None,
        Some(RangeRequest::Unsatisfiable) => {
            let e = AppError::from(FileRefusal::RangeUnsatisfiable { size: f.size }).into_response();
            state.0.metrics.files().refusals.get_or_create(&vec![("code", "range_not_satisfiable")]).inc();
            return Ok(e);
        }
        Some(RangeRequest::Bytes(r)) => Some(r),
    };
    let span = range.clone().unwrap_or(0..f.size);
    let objects = state.0.files.objects(state)?;
    let m = state.0.metrics.files();
    m.downloads.get_or_create(&vec![("kind", if range.is_some() { "range" } else { "full" })]).inc();
    let sent = m.bytes_sent.clone();
    let hashes: HashMap<u64, [u8; 32]> = state.0.store.file_part_hashes(&f.blob).await?.into_iter().collect();
    let pieces = pieces(&f, &hashes, span.clone());
    let stream = futures_util::stream::iter(pieces)
        .then(move |(path, r)| {
            let objects = objects.clone();
            async move {
                let opts = GetOptions { range: Some(r.into()), ..GetOptions::default() };
                objects.get_opts(&path, opts).await.map(object_stream).map_err(std::io::Error::other)
            }
        })
        .try_flatten()
        .inspect_ok(move |b| {
            sent.inc_by(b.len() as u64);
        })
        .map_err(|e| {
            tracing::error!(error = %e, "a blob part could not be read; the download is cut short");
            std::io::Error::other("blob part unreadable")
        });
    let mut resp = Response::new(Body::from_stream(stream));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_LENGTH, header_value((span.end - span.start).to_string()));
    h.insert(header::ETAG, header_value(format!("\"{}\"", f.blob)));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-transform"));
    if let Some(r) = range {
        *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
        resp.headers_mut()
            .insert(header::CONTENT_RANGE, header_value(format!("bytes {}-{}/{}", r.start, r.end - 1, f.size)));
    }
    Ok(resp)
}

/// Bytes read from a part's file at a time on the local filesystem (object_store's own stream
/// reads 8 KiB per trip to the blocking pool, which bounded downloads by the trips).
const READ_CHUNK: usize = 1024 * 1024;

/// The bytes of one got object: from the local filesystem in [`READ_CHUNK`] reads, otherwise as
/// the store streams them.
fn object_stream(got: object_store::GetResult) -> BoxStream<'static, std::io::Result<Bytes>> {
    match got.payload {
        object_store::GetResultPayload::File(file, _) => {
            let end = got.range.end;
            futures_util::stream::try_unfold((file, got.range.start), move |(file, at)| async move {
                if at >= end {
                    return Ok(None);
                }
                let want = usize::try_from(end - at).unwrap_or(READ_CHUNK).min(READ_CHUNK);
                let (file, buf) = tokio::task::spawn_blocking(move || {
                    use std::io::{Read, Seek};
                    let mut file = file;
                    let mut buf = vec![0u8; want];
                    file.seek(std::io::SeekFrom::Start(at))?;
                    file.read_exact(&mut buf)?;
                    Ok::<_, std::io::Error>((file, buf))
                })
                .await
                .map_err(std::io::Error::other)??;
                Ok(Some((Bytes::from(buf), (file, at + want as u64))))
            })
            .boxed()
        }
        object_store::GetResultPayload::Stream(s) => s.map_err(std::io::Error::other).boxed(),
    }
}

fn header_value(s: String) -> HeaderValue {
    // Digits, spaces, `-`, `/`, `*`, hex and quotes only: always a valid header value.
    HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The part objects (by the recorded hash of each part, `hashes` by offset) and the ranges
/// within them that make up bytes `span` of the blob.
fn pieces(f: &FileRecord, hashes: &HashMap<u64, [u8; 32]>, span: Range<u64>) -> Vec<(ObjectPath, Range<u64>)> {
    let part = f.part_bytes.max(1);
    let mut out = Vec::new();
    let mut at = span.start;
    while at < span.end {
        let index = at / part;
        let part_start = index * part;
        let end = span.end.min(part_start + part);
        out.push((part_path(&f.blob, index, hashes.get(&part_start)), at - part_start..end - part_start));
        at = end;
    }
    out
}

/// What a `Range` header asks for, for a blob of some length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RangeRequest {
    /// Serve these bytes (206).
    Bytes(Range<u64>),
    /// A valid single range that starts at or past the end (416).
    Unsatisfiable,
    /// Not a single `bytes` range this server reads: serve the whole blob (RFC 9110 §14.2 lets
    /// a server ignore a `Range`).
    Ignored,
}

/// Parses `bytes=FIRST-LAST`, `bytes=FIRST-` or `bytes=-SUFFIX` against a blob of `len` bytes,
/// with checked arithmetic. Several ranges, other units and malformed values are ignored.
pub(crate) fn parse_range(value: &[u8], len: u64) -> RangeRequest {
    let Ok(value) = std::str::from_utf8(value) else { return RangeRequest::Ignored };
    let Some(spec) = value.trim().strip_prefix("bytes=") else { return RangeRequest::Ignored };
    if spec.contains(',') {
        return RangeRequest::Ignored;
    }
    let Some((first, last)) = spec.trim().split_once('-') else { return RangeRequest::Ignored };
    let num = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok()).flatten()
    };
    match (first.trim(), last.trim()) {
        ("", suffix) => match num(suffix) {
            Some(0) => RangeRequest::Unsatisfiable,
            Some(n) => RangeRequest::Bytes(len.saturating_sub(n)..len),
            None => RangeRequest::Ignored,
        },
        (first, "") => match num(first) {
            Some(a) if a < len => RangeRequest::Bytes(a..len),
            Some(_) => RangeRequest::Unsatisfiable,
            None => RangeRequest::Ignored,
        },
        (first, last) => match (num(first), num(last)) {
            (Some(a), Some(b)) if a <= b => {
                if a >= len {
                    RangeRequest::Unsatisfiable
                } else {
                    RangeRequest::Bytes(a..b.saturating_add(1).min(len))
                }
            }
            _ => RangeRequest::Ignored,
        },
    }
}

// ---------------------------------------------------------------- retention

impl AppState {
    /// Deletes the blobs whose upload expired or whose retention ended (parts first, then the
    /// record), at most a batch; answers how many. The server runs it every minute.
    pub async fn purge_expired_files(&self) -> Result<u64, AppError> {
        let due = self.0.store.expired_files(self.now(), PURGE_BATCH).await?;
        if due.is_empty() {
            return Ok(0);
        }
        let objects = self.0.files.objects(self)?;
        let mut purged = 0;
        for f in due {
            let ok = delete_parts(&objects, &f).await;
            if ok && self.0.store.delete_file(&f.blob).await? {
                purged += 1;
            }
        }
        refresh_totals(self).await;
        Ok(purged)
    }
}

/// Deletes a blob's part objects from the object store (every object under the blob's folder,
/// so also a refused part an instance could not delete); false (after a warning) if one could
/// not be.
pub(crate) async fn delete_parts(objects: &Arc<dyn ObjectStore>, f: &FileRecord) -> bool {
    let listed: Result<Vec<ObjectPath>, _> =
        objects.list(Some(&blob_prefix(&f.blob))).map_ok(|m| m.location).try_collect().await;
    let paths = match listed {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(blob = %f.blob, error = %e, "cannot list a blob's parts");
            return false;
        }
    };
    for path in paths {
        match objects.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => {
                tracing::warn!(blob = %f.blob, error = %e, "cannot delete a blob part");
                return false;
            }
        }
    }
    true
}

/// Purges expired blobs every minute until shutdown.
pub(crate) async fn purge_task(state: AppState) {
    let mut stop = state.0.shutdown.subscribe();
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    refresh_totals(&state).await;
    loop {
        tokio::select! {
            _ = tick.tick() => match state.purge_expired_files().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "expired blobs purged"),
                Err(e) => tracing::warn!(code = e.code().as_str(), "blob purge failed"),
            },
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_with_checked_arithmetic() {
        fn check(v: &str, len: u64, expect: RangeRequest) {
            assert_eq!(parse_range(v.as_bytes(), len), expect, "{v:?} of {len}");
        }
        use RangeRequest::*;
        check("bytes=0-99", 1000, Bytes(0..100));
        check("bytes=900-", 1000, Bytes(900..1000));
        check("bytes=-100", 1000, Bytes(900..1000));
        check("bytes=-5000", 1000, Bytes(0..1000));
        check("bytes=990-2000", 1000, Bytes(990..1000));
        check("bytes=999-999", 1000, Bytes(999..1000));
        check("bytes=1000-", 1000, Unsatisfiable);
        check("bytes=1000-1001", 1000, Unsatisfiable);
        check("bytes=-0", 1000, Unsatisfiable);
        check(&format!("bytes=0-{}", u64::MAX), 1000, Bytes(0..1000));
        for ignored in [
            "bytes=5-1",
            "bytes=0-1,5-6",
            "items=0-1",
            "bytes=a-b",
            "bytes=-",
            "bytes=0",
            "",
            "bytes=99999999999999999999999-",
            "bytes=+1-2",
        ] {
            check(ignored, 1000, Ignored);
        }
    }

    #[test]
    fn pieces_cover_a_span_part_by_part() {
        let f = FileRecord {
            blob: BlobId([1; 16]),
            room: 1,
            owner: UserId([2; 32]),
            size: 250,
            part_bytes: 100,
            received: 250,
            created_at: 0,
            expires_at: 1,
        };
        // Part 1 was recorded before hashes were kept: its object has the index alone.
        let hashes = HashMap::from([(0, [0xaa; 32]), (200, [0xbb; 32])]);
        let got: Vec<(String, Range<u64>)> =
            pieces(&f, &hashes, 50..250).into_iter().map(|(p, r)| (p.to_string(), r)).collect();
        let b = BlobId([1; 16]);
        assert_eq!(
            got,
            vec![
                (format!("blobs/{b}/00000000-{}", "aa".repeat(32)), 50..100),
                (format!("blobs/{b}/00000001"), 0..100),
                (format!("blobs/{b}/00000002-{}", "bb".repeat(32)), 0..50)
            ]
        );
        assert!(pieces(&f, &hashes, 7..7).is_empty());
    }
}

//! Encrypted attachments on the client: a file streamed up to its room's blob store, and back.
//!
//! **Upload** ([`upload`]): the file is read in 1 MiB pieces, encrypted with grove-proto
//! `attachment` (a fresh key per file, padded to a size bucket, 64 KiB AEAD segments) and sent
//! in the parts the server asks for (`part_bytes`, 8 MiB by default), each signed over its
//! SHA-256. A part whose request fails for a reason that may pass (the connection dropped, a
//! timeout, a 5xx or 429) is followed by a question — how many bytes does the server hold
//! (`GET …/files/{blob}/upload`)? — and the upload goes on from there: the part again if it did
//! not land, the next one if only the answer was lost. Reading and encrypting run on a
//! blocking thread one part ahead of the network, so the next part is sealed while the server
//! stores the one in flight: the ciphertext held is that part, one sealed part waiting, and
//! the one being sealed.
//!
//! **Download** ([`download`]): the blob is read as a stream and decrypted segment by segment
//! into a temporary file beside the target; a connection dropped midway resumes with an HTTP
//! `Range` from the bytes already taken. Only when the decryptor's `finish` accepted the whole
//! blob (every segment authenticated, its exact length, the digest the reference names) is the
//! temporary file renamed to the target, so a damaged, altered or truncated blob leaves nothing
//! at the output path (and no temporary file either).
//!
//! Memory stays flat whatever the size: one read piece, three parts, one segment.
//!
//! The names in a reference are the sender's word: [`safe_file_name`] makes one usable as a
//! file name (no folder, no `..`, no hidden file, no control character).

use std::path::{Path, PathBuf};
use std::time::Duration;

use grove_proto::attachment::{self, AttachmentDecryptor, AttachmentEncryptor, AttachmentError};
use grove_wire::api::UploadState;
use grove_wire::attachment::{AttachmentKey, AttachmentRef, BlobId};
use grove_wire::ErrorCode;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::transport::{Server, TransportError};

/// Plaintext read from the file at a time (and decrypted bytes written at a time, about).
const PIECE: usize = 1 << 20;

/// Tries of one part, or of one stretch of a download without progress, before giving up.
pub const TRANSFER_ATTEMPTS: u32 = 6;

/// A download waits this long for the next bytes before it counts as cut and resumes.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The longest file name kept, in bytes (most filesystems' limit).
const MAX_NAME_BYTES: usize = 255;

/// Told how a transfer goes: bytes of the file done, of the total.
pub type Progress<'a> = &'a mut (dyn FnMut(u64, u64) + Send);

/// Why a file could not be sent or saved. Each message says what happened to the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// Reading the file or writing the download failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Only regular files can be sent.
    #[error("{} is not a regular file", .0.display())]
    NotAFile(PathBuf),
    /// The file grew or shrank while it was read.
    #[error("{} changed while it was being sent ({why}); send it again", path.display())]
    Changed {
        /// The file.
        path: PathBuf,
        /// What the encryptor noticed.
        why: AttachmentError,
    },
    /// Larger than the room's server takes.
    #[error("{name} is {size} bytes; this room's server takes files of at most {max} bytes")]
    TooLarge {
        /// The file's name.
        name: String,
        /// Its size.
        size: u64,
        /// The server's `files.max_file_bytes`.
        max: u64,
    },
    /// The output path exists (and replacing it was not asked for).
    #[error("{} exists: choose another path with --out, or replace it with --force", .0.display())]
    Exists(PathBuf),
    /// The blob did not decrypt and verify: the server's copy is damaged or was altered.
    #[error("{name} failed verification ({why}): the server's copy is damaged or was altered; nothing was saved")]
    Tampered {
        /// The file's name.
        name: String,
        /// What the decryptor found.
        why: AttachmentError,
    },
    /// The transfer kept failing.
    #[error("the transfer stopped at {done} of {total} bytes after {attempts} tries ({last}); nothing was saved or sent, try again later")]
    CutShort {
        /// Blob bytes moved.
        done: u64,
        /// The blob's length.
        total: u64,
        /// Tries made without progress.
        attempts: u32,
        /// The last failure.
        last: TransportError,
    },
    /// The server refused.
    #[error(transparent)]
    Server(#[from] TransportError),
    /// Anything else, said in words.
    #[error("{0}")]
    Invalid(String),
}

impl FileError {
    /// The server's error code, when the server refused.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            FileError::Server(e) => e.code(),
            _ => None,
        }
    }
}

/// A name from a reference made safe to create in a folder: its last path component only
/// (nothing before a `/` or `\`), no control characters or characters Windows forbids, no
/// leading dots (no `..`, no hidden file) or spaces, at most 255 bytes; `file` if nothing is
/// left.
pub fn safe_file_name(name: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = last
        .chars()
        .map(|c| if c.is_control() || matches!(c, '<' | '>' | ':' | '"' | '|' | '?' | '*') { '_' } else { c })
        .collect();
    let trimmed = cleaned.trim_start_matches(['.', ' ']).trim_end_matches(['.', ' ']);
    let mut out = String::new();
    for c in trimmed.chars() {
        if out.len() + c.len_utf8() > MAX_NAME_BYTES {
            break;
        }
        out.push(c);
    }
    if out.is_empty() {
        "file".to_string()
    } else {
        out
    }
}

/// The name a file is sent under: its own name, made safe.
pub fn file_name_of(path: &Path) -> String {
    safe_file_name(&path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default())
}

/// The media type a file is sent with, from its extension (`application/octet-stream` when
/// unknown).
pub fn media_type_of(path: &Path) -> String {
    mime_guess::from_path(path).first_or_octet_stream().essence_str().to_string()
}

/// Where `grove save` writes: `out` itself, or the file's safe name inside `out` when it is a
/// folder, or in the current folder when there is no `out`.
pub fn output_path(out: Option<&Path>, name: &str) -> PathBuf {
    match out {
        Some(p) if p.is_dir() => p.join(safe_file_name(name)),
        Some(p) => p.to_path_buf(),
        None => PathBuf::from(safe_file_name(name)),
    }
}

/// The pause before try `n` (from 1): 250 ms, doubling, at most 4 s.
fn backoff(n: u32) -> Duration {
    Duration::from_millis(250u64 << n.saturating_sub(1).min(4))
}

/// An upload begun: the blob the server gave, the file's key, and the file as it was when the
/// upload began (a changed file is never resumed under the same key). Persisted by the caller
/// before the first part goes, so that a process killed midway resumes where the server is.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PendingUpload {
    /// The blob on the room's server.
    pub blob: BlobId,
    /// The file's key.
    pub key: AttachmentKey,
    /// The file's size.
    pub size: u64,
    /// The file as it was when the upload began ([`fingerprint`]).
    pub version: FileVersion,
}

/// What tells a file unchanged: its modification time and, on Unix, its status-change time
/// (which any write, and any resetting of the modification time, moves on; nobody but the
/// kernel sets it), device and inode. Nanoseconds since the Unix epoch; 0 where unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileVersion {
    /// Modification time.
    pub modified_ns: u64,
    /// Status-change time (Unix).
    pub changed_ns: i64,
    /// Device and inode (Unix).
    pub inode: (u64, u64),
}

impl std::fmt::Debug for PendingUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingUpload").field("blob", &self.blob).field("size", &self.size).finish_non_exhaustive()
    }
}

/// The size and [`FileVersion`] of the regular file at `path`.
pub async fn fingerprint(path: &Path) -> Result<(u64, FileVersion), FileError> {
    let meta = tokio::fs::metadata(path).await.map_err(|source| FileError::Io { path: path.to_path_buf(), source })?;
    if !meta.is_file() {
        return Err(FileError::NotAFile(path.to_path_buf()));
    }
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    #[cfg(unix)]
    let (changed_ns, inode) = {
        use std::os::unix::fs::MetadataExt;
        let changed = meta.ctime().saturating_mul(1_000_000_000).saturating_add(meta.ctime_nsec());
        (changed, (meta.dev(), meta.ino()))
    };
    #[cfg(not(unix))]
    let (changed_ns, inode) = (0, (0, 0));
    Ok((meta.len(), FileVersion { modified_ns: modified, changed_ns, inode }))
}

/// Begins the upload of the file at `path` to `room`: checks it against the server's limit,
/// draws the file's key, and asks the server for a blob.
pub async fn begin_upload(server: &Server, room: &str, path: &Path, name: &str) -> Result<PendingUpload, FileError> {
    let (size, version) = fingerprint(path).await?;
    if let Ok(info) = server.cached_info().await {
        let max = info.limits.files.max_file_bytes;
        if max > 0 && size > max {
            return Err(FileError::TooLarge { name: name.to_string(), size, max });
        }
    }
    if size > attachment::MAX_SIZE {
        return Err(FileError::TooLarge { name: name.to_string(), size, max: attachment::MAX_SIZE });
    }
    let mut key = AttachmentKey([0; 32]);
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut key.0);
    let state = server.begin_upload(room, attachment::ciphertext_len(size)).await?;
    Ok(PendingUpload { blob: state.blob, key, size, version })
}

/// Encrypts the file at `path` and uploads it into the blob `pending` names, streaming, from
/// wherever the server is (the parts it holds are encrypted again, to carry the digest on, but
/// not sent); answers the reference to send in the room (it holds the file's key: it goes only
/// into an end-to-end encrypted message).
pub async fn upload(
    server: &Server,
    room: &str,
    path: &Path,
    pending: &PendingUpload,
    name: String,
    media_type: String,
    progress: Progress<'_>,
) -> Result<AttachmentRef, FileError> {
    let io = |source| FileError::Io { path: path.to_path_buf(), source };
    let changed = |why| FileError::Changed { path: path.to_path_buf(), why };
    if fingerprint(path).await? != (pending.size, pending.version) {
        return Err(FileError::Invalid(format!(
            "{} changed since its upload began; send it again as a new file",
            path.display()
        )));
    }
    let file = tokio::fs::File::open(path).await.map_err(io)?;
    let size = pending.size;
    let enc = AttachmentEncryptor::with_key(pending.key.clone(), size).map_err(changed)?;
    let blob_len = enc.blob_len();
    let state = server.upload_state(room, &pending.blob).await?;
    if state.size != blob_len {
        return Err(FileError::Invalid(format!(
            "the server's blob {} is {} bytes, not the {blob_len} this file makes",
            pending.blob, state.size
        )));
    }
    let blob = pending.blob;
    let part_len = usize::try_from(state.part_bytes)
        .ok()
        .filter(|&p| p > 0)
        .ok_or_else(|| FileError::Invalid(format!("the server asks for parts of {} bytes", state.part_bytes)))?;
    let held = state.received;
    // Reading, encrypting and hashing run on a blocking thread one part ahead of the network:
    // the next part is sealed while the server stores this one. One sealed part waits at most.
    let (parts_tx, mut parts) = tokio::sync::mpsc::channel::<SealedPart>(1);
    let file = file.into_std().await;
    let sealer = {
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || seal_parts(file, enc, part_len, &path, &parts_tx))
    };
    let mut offset = 0u64;
    progress(0, size);
    while let Some(part) = parts.recv().await {
        let end = offset + part.bytes.len() as u64;
        offset = if end <= held {
            end
        } else {
            send_part(server, room, &blob, offset, part.bytes, &part.sha256, blob_len).await?
        };
        progress(part.read.min(size), size);
    }
    let done = sealer.await.map_err(|e| FileError::Invalid(format!("the encryption stopped: {e}")))??;
    if offset != blob_len {
        return Err(FileError::Invalid(format!("sent {offset} bytes of a {blob_len}-byte blob")));
    }
    progress(size, size);
    Ok(done.into_ref(blob, name, media_type))
}

/// One part of ciphertext, ready to go up.
struct SealedPart {
    bytes: bytes::Bytes,
    sha256: [u8; 32],
    /// Bytes of the file read when it was cut (for the progress bar).
    read: u64,
}

/// Reads `file` and encrypts it with `enc`, handing the ciphertext to `parts` in parts of
/// `part_len` bytes (the last one shorter), each with its SHA-256; answers the encryption's
/// result once the last part is handed over. Stops (with an error nobody reads) when the
/// receiver is gone. Runs on a blocking thread.
fn seal_parts(
    mut file: std::fs::File,
    mut enc: AttachmentEncryptor,
    part_len: usize,
    path: &Path,
    parts: &tokio::sync::mpsc::Sender<SealedPart>,
) -> Result<attachment::EncryptedAttachment, FileError> {
    use std::io::Read;
    let io = |source| FileError::Io { path: path.to_path_buf(), source };
    let changed = |why| FileError::Changed { path: path.to_path_buf(), why };
    // Ciphertext not handed over yet: under a part, plus one piece and one segment.
    let capacity = part_len + PIECE + attachment::SEGMENT_LEN;
    let mut sealed: Vec<u8> = Vec::with_capacity(capacity);
    let mut piece = vec![0u8; PIECE];
    let mut read = 0u64;
    // Cuts the first `len` bytes of `sealed` off as a part (the buffer itself goes, the rest is
    // copied into a new one) and hands it over.
    let cut = |sealed: &mut Vec<u8>, len: usize, read: u64| -> Result<(), FileError> {
        let mut rest = Vec::with_capacity(capacity);
        rest.extend_from_slice(&sealed[len..]);
        sealed.truncate(len);
        let bytes = bytes::Bytes::from(std::mem::replace(sealed, rest));
        let sha256: [u8; 32] = Sha256::digest(&bytes).into();
        parts
            .blocking_send(SealedPart { bytes, sha256, read })
            .map_err(|_| FileError::Invalid("the upload stopped".into()))
    };
    // Read and encrypt until a part is full, hand it over; then the padding, then the rest.
    loop {
        let n = file.read(&mut piece).map_err(io)?;
        if n == 0 {
            break;
        }
        enc.push(&piece[..n], &mut sealed).map_err(changed)?;
        read += n as u64;
        while sealed.len() >= part_len {
            cut(&mut sealed, part_len, read)?;
        }
    }
    while enc.pad(PIECE, &mut sealed).map_err(changed)? > 0 {
        while sealed.len() >= part_len {
            cut(&mut sealed, part_len, read)?;
        }
    }
    let done = enc.finish(&mut sealed).map_err(changed)?;
    while !sealed.is_empty() {
        let n = part_len.min(sealed.len());
        cut(&mut sealed, n, read)?;
    }
    Ok(done)
}

/// Sends `part` (whose SHA-256 is `sha256`) as the part at `offset`, trying again (from what
/// the server holds) after failures that may pass; answers the next offset.
async fn send_part(
    server: &Server,
    room: &str,
    blob: &BlobId,
    offset: u64,
    part: bytes::Bytes,
    sha256: &[u8; 32],
    blob_len: u64,
) -> Result<u64, FileError> {
    let end = offset + part.len() as u64;
    let mut tries = 0;
    loop {
        tries += 1;
        let failure = match server.upload_part_hashed(room, blob, offset, part.clone(), sha256).await {
            Ok(state) => return landed(&state, end),
            // "Not at that offset": an earlier try of this part may have landed after all.
            Err(e) if e.is_transient() || e.code() == Some(ErrorCode::UploadOffset) => e,
            Err(e) => return Err(e.into()),
        };
        tracing::info!(%blob, offset, error = %failure, "a part did not go up; asking the server where the upload is");
        if tries >= TRANSFER_ATTEMPTS {
            return Err(FileError::CutShort { done: offset, total: blob_len, attempts: tries, last: failure });
        }
        tokio::time::sleep(backoff(tries)).await;
        match server.upload_state(room, blob).await {
            Ok(state) if state.received >= end => return landed(&state, end),
            Ok(state) if state.received == offset => {}
            Ok(state) => {
                return Err(FileError::Invalid(format!(
                    "the server holds {} bytes of the upload, neither {offset} nor {end}: send the file again",
                    state.received
                )))
            }
            Err(e) if e.is_transient() => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// The server's answer to a part that ends at `end`.
fn landed(state: &UploadState, end: u64) -> Result<u64, FileError> {
    if state.received != end {
        return Err(FileError::Invalid(format!(
            "the server holds {} bytes of the upload after a part ending at {end}: send the file again",
            state.received
        )));
    }
    Ok(end)
}

/// Downloads the blob `reference` names from `room` on `server`, decrypts and verifies it into
/// `out` (replacing an existing file only if `overwrite`). Nothing is written at `out` unless
/// the whole file verified. Answers the file's size.
pub async fn download(
    server: &Server,
    room: &str,
    reference: &AttachmentRef,
    out: &Path,
    overwrite: bool,
    progress: Progress<'_>,
) -> Result<u64, FileError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| FileError::Io { path, source }
    };
    if !overwrite && out.symlink_metadata().is_ok() {
        return Err(FileError::Exists(out.to_path_buf()));
    }
    let tampered = |why| FileError::Tampered { name: safe_file_name(&reference.name), why };
    let mut dec = AttachmentDecryptor::new(reference).map_err(tampered)?;
    let dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // Beside the target, so the final rename stays on one filesystem; deleted when dropped.
    let tmp = tempfile::Builder::new().prefix(".grove-").suffix(".part").tempfile_in(&dir).map_err(io(&dir))?;
    let mut file = tokio::fs::File::from_std(tmp.as_file().try_clone().map_err(io(tmp.path()))?);
    let total = dec.blob_len();
    let mut got = 0u64;
    let mut written = 0u64;
    let mut plain = Vec::with_capacity(PIECE + attachment::SEGMENT_LEN);
    // Tries in a row that moved no byte.
    let mut stalls = 0;
    progress(0, reference.size);
    while got < total {
        let before = got;
        let failure = match server.download_blob(room, &reference.blob, got).await {
            Ok(mut resp) => loop {
                let cut = |detail: String| Some(TransportError::Unreachable { url: server.base().into(), detail });
                let chunk = match tokio::time::timeout(IDLE_TIMEOUT, resp.chunk()).await {
                    Ok(Ok(Some(chunk))) => chunk,
                    // The server ended the body: more is asked for if the blob is not whole.
                    Ok(Ok(None)) => break None,
                    Ok(Err(e)) => break cut(e.to_string()),
                    Err(_) => break cut("no bytes for a minute".into()),
                };
                plain.clear();
                dec.push(&chunk, &mut plain).map_err(tampered)?;
                got += chunk.len() as u64;
                file.write_all(&plain).await.map_err(io(tmp.path()))?;
                written += plain.len() as u64;
                progress(written, reference.size);
            },
            Err(e) if e.is_transient() => Some(e),
            Err(e) => return Err(e.into()),
        };
        if got >= total {
            break;
        }
        stalls = if got > before { 1 } else { stalls + 1 };
        if stalls >= TRANSFER_ATTEMPTS {
            match failure {
                Some(last) => return Err(FileError::CutShort { done: got, total, attempts: stalls, last }),
                // The server keeps ending the blob early: it is truncated (said by `finish`).
                None => break,
            }
        }
        if let Some(e) = &failure {
            tracing::info!(blob = %reference.blob, got, error = %e, "the download was cut; resuming");
        }
        tokio::time::sleep(backoff(stalls)).await;
    }
    plain.clear();
    dec.finish(&mut plain).map_err(tampered)?;
    file.write_all(&plain).await.map_err(io(tmp.path()))?;
    written += plain.len() as u64;
    file.flush().await.map_err(io(tmp.path()))?;
    file.sync_all().await.map_err(io(tmp.path()))?;
    drop(file);
    let persisted = if overwrite { tmp.persist(out) } else { tmp.persist_noclobber(out) };
    persisted.map_err(|e| match e.error.kind() {
        std::io::ErrorKind::AlreadyExists => FileError::Exists(out.to_path_buf()),
        _ => FileError::Io { path: out.to_path_buf(), source: e.error },
    })?;
    progress(written, reference.size);
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_others_become_plain_file_names() {
        for (given, safe) in [
            ("cat.png", "cat.png"),
            ("../../etc/passwd", "passwd"),
            ("..", "file"),
            ("...", "file"),
            ("", "file"),
            ("/", "file"),
            ("C:\\Users\\x\\evil.exe", "evil.exe"),
            (".bashrc", "bashrc"),
            ("a\u{1b}[31mred.txt", "a_[31mred.txt"),
            ("what?.txt", "what_.txt"),
            ("trailing. ", "trailing"),
            ("  spaced name.pdf", "spaced name.pdf"),
            ("日本語.txt", "日本語.txt"),
        ] {
            assert_eq!(safe_file_name(given), safe, "{given:?}");
        }
        let long = "é".repeat(300);
        let cut = safe_file_name(&long);
        assert!(cut.len() <= MAX_NAME_BYTES && cut.len() >= MAX_NAME_BYTES - 1, "{}", cut.len());
        assert!(cut.chars().all(|c| c == 'é'));
    }

    #[test]
    fn media_types_come_from_extensions() {
        assert_eq!(media_type_of(Path::new("a/cat.png")), "image/png");
        assert_eq!(media_type_of(Path::new("notes.txt")), "text/plain");
        assert_eq!(media_type_of(Path::new("blob")), "application/octet-stream");
    }

    #[test]
    fn output_paths_default_to_the_safe_name() {
        assert_eq!(output_path(None, "../x/report.pdf"), PathBuf::from("report.pdf"));
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(output_path(Some(dir.path()), "a/b.txt"), dir.path().join("b.txt"));
        let named = dir.path().join("mine.txt");
        assert_eq!(output_path(Some(&named), "b.txt"), named);
    }
}

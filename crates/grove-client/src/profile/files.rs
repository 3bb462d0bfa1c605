//! Files in rooms: [`Profile::send_file`] uploads a file to the room's blob store
//! ([`crate::files`]) and sends its reference as an ordinary message, through the outbox like
//! any text; [`Profile::attachment`] finds a file's reference in the room's history and
//! [`Profile::save_file`] downloads, decrypts and verifies it.
//!
//! The upload holds no profile lock: it touches no group state, so other `grove` processes
//! (a `read --follow`, other sends) go on while a large file goes up. The message that follows
//! takes the lock like every send.
//!
//! An upload begun is remembered in the profile (its blob and key, with the file's size,
//! modification and status-change times and inode) before its first part leaves, until its message is sent or queued: if
//! the process is killed midway, sending the same unchanged file to the same room again goes
//! on from the parts the server holds, under the same key (the same file and key make the
//! same blob). A changed file, or an upload the server has dropped, begins anew.

use std::path::Path;

use grove_wire::attachment::{AttachmentKey, AttachmentRef, AttachmentScheme, BlobDigest, BlobId};
use grove_wire::content::Content;

use super::{ClientError, Profile, Result, SEAL_OVERHEAD};
use crate::files::{self, Progress};
use crate::store::Event;

impl Profile {
    /// Sends the file at `path` to a room, with an optional caption: encrypts and uploads it
    /// (streaming), then sends the reference — key, digest, size, name, media type — as an end
    /// to end encrypted message. Answers the message's sequence number;
    /// [`ClientError::Queued`] if the file went up but the message waits in the outbox.
    pub async fn send_file(
        &mut self,
        key: &str,
        path: &Path,
        caption: Option<&str>,
        progress: Progress<'_>,
    ) -> Result<u64> {
        let room = self.active_room(key)?;
        let name = files::file_name_of(path);
        let media_type = files::media_type_of(path);
        let caption = caption.map(str::to_string).filter(|c| !c.trim().is_empty());
        let server = self.server(&room.server);
        // The message must fit the server's limit: known before the file goes up (a
        // reference's fields other than name and media type have fixed lengths).
        if let Ok(info) = server.cached_info().await {
            let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            let probe = Content::Attachment {
                file: AttachmentRef {
                    scheme: AttachmentScheme::StreamAes256Gcm64k,
                    blob: BlobId([0; 16]),
                    key: AttachmentKey([0; 32]),
                    digest: BlobDigest([0; 32]),
                    size,
                    name: name.clone(),
                    media_type: media_type.clone(),
                },
                caption: caption.clone(),
            };
            let len = probe.encode().len() as u64;
            let max = info.limits.max_entry_bytes;
            if len + SEAL_OVERHEAD > max {
                return Err(ClientError::TooLarge { size: len, max: max.saturating_sub(SEAL_OVERHEAD) });
            }
        }
        // An upload of this very file that a killed process left goes on where the server is;
        // otherwise a new one begins, its key persisted before a byte of it leaves.
        let record = upload_record(&room.link, path);
        let (size, version) = files::fingerprint(path).await?;
        let earlier = self
            .store
            .meta(&record)?
            .and_then(|v| serde_json::from_slice::<files::PendingUpload>(&v).ok())
            .filter(|p| (p.size, p.version) == (size, version));
        let pending = match earlier {
            Some(p) if server.upload_state(&room.name, &p.blob).await.is_ok() => p,
            _ => {
                let p = files::begin_upload(&server, &room.name, path, &name).await?;
                let json = serde_json::to_vec(&p).map_err(|e| ClientError::Invalid(e.to_string()))?;
                let _lock = self.lock().await?;
                self.store.set_meta(&record, &json)?;
                p
            }
        };
        let file = files::upload(&server, &room.name, path, &pending, name, media_type, progress).await?;
        let sent = self.send_content(&room.link, &Content::Attachment { file, caption }).await;
        // Sent, or waiting in the outbox with its reference: the upload is done either way.
        if matches!(sent, Ok(_) | Err(ClientError::Queued { .. })) {
            let _lock = self.lock().await?;
            self.store.delete_meta(&record)?;
        }
        sent
    }
}

/// Where the upload of `path` to a room is remembered until its message is sent.
fn upload_record(link: &str, path: &Path) -> String {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    format!("upload\0{link}\0{}", path.display())
}

impl Profile {
    /// The file sent as entry `seq` of a room, with its caption, from this profile's history.
    pub fn attachment(&self, key: &str, seq: u64) -> Result<(AttachmentRef, Option<String>)> {
        let room = self.room(key)?;
        let found = self.store.messages(&room.link, seq.saturating_sub(1))?.into_iter().find(|m| m.seq == seq);
        match found.map(|m| m.event()) {
            Some(Event::Content(Content::Attachment { file, caption })) => Ok((file, caption)),
            Some(_) => Err(ClientError::Invalid(format!("entry {seq} of {} is not a file", room.name))),
            None => Err(ClientError::Invalid(format!(
                "no entry {seq} in {}: see `grove read {}` for the files sent there",
                room.name, room.name
            ))),
        }
    }

    /// Downloads the file `reference` names from the room's server, decrypts and verifies it
    /// into `out` (replacing an existing file only if `overwrite`); nothing is written there
    /// unless the whole file verified. Answers its size. The server lets only the room's
    /// current members download.
    pub async fn save_file(
        &self,
        key: &str,
        reference: &AttachmentRef,
        out: &Path,
        overwrite: bool,
        progress: Progress<'_>,
    ) -> Result<u64> {
        let room = self.room(key)?;
        let server = self.server(&room.server);
        Ok(files::download(&server, &room.name, reference, out, overwrite, progress).await?)
    }
}

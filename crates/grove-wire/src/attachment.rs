//! The reference to an encrypted file that travels inside an end-to-end encrypted message
//! ([`crate::content::Content::Attachment`]): everything a member needs to fetch, decrypt and
//! check the file. The server sees only the ciphertext blob, never this.

use serde::{Deserialize, Serialize};

/// Where an encrypted file is and how to open it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentRef {
    /// The blob's id on the room's server.
    pub blob: String,
    /// The file's own symmetric key (fresh per file).
    #[serde(with = "crate::b64")]
    pub key: Vec<u8>,
    /// SHA-256 of the ciphertext, checked before anything is written out.
    #[serde(with = "crate::b64")]
    pub digest: Vec<u8>,
    /// The plaintext's exact size in bytes (the blob is padded).
    pub size: u64,
    /// The file's name, as the sender gave it.
    pub name: String,
    /// Its media type, e.g. `image/png`.
    pub media_type: String,
}

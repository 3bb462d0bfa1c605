//! What an end-to-end encrypted message carries so that its recipients can fetch, verify and
//! decrypt an attachment: [`AttachmentRef`]. The server never sees one: it travels only inside
//! a room's encrypted messages (the content kind `Attachment` embeds it). The server knows a
//! blob only by its [`BlobId`], its room, its uploader and its (padded, encrypted) length.
//!
//! The cipher is grove-proto's `attachment` module; this file is only the data.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::hex;

/// A blob on a server: 16 random bytes chosen by the server when the upload begins, written as
/// 32 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobId(pub [u8; 16]);

/// Why a string is not a blob id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a blob id is 32 lowercase hex characters")]
pub struct ParseBlobIdError;

impl FromStr for BlobId {
    type Err = ParseBlobIdError;

    /// Accepts exactly 32 lowercase hex characters (one spelling per id, so ids compare as text).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(ParseBlobIdError);
        }
        hex::decode_array(s).map(BlobId).ok_or(ParseBlobIdError)
    }
}

impl fmt::Display for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", hex::Hex(&self.0))
    }
}

impl fmt::Debug for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobId({self})")
    }
}

impl Serialize for BlobId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for BlobId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The cipher and framing of an attachment's blob. One variant today; a message naming an
/// unknown scheme does not deserialize, so the client shows it as unsupported content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AttachmentScheme {
    /// grove-proto `attachment` v1: plaintext padded to a Padmé bucket (at least 4 KiB), cut
    /// into 64 KiB segments, each sealed with AES-256-GCM in the STREAM construction (big-endian
    /// 32-bit counter and last-segment flag in the nonce); digest = SHA-256 of the blob.
    #[serde(rename = "stream-aes256gcm-64k")]
    StreamAes256Gcm64k,
}

/// An attachment's 32-byte symmetric key, fresh and random per file. Wiped when dropped; its
/// `Debug` output does not show it. Base64 in JSON.
#[derive(Clone, PartialEq, Eq)]
pub struct AttachmentKey(pub [u8; 32]);

impl Drop for AttachmentKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl fmt::Debug for AttachmentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AttachmentKey(..)")
    }
}

impl Serialize for AttachmentKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        crate::b64::serialize(&self.0, s)
    }
}

impl<'de> Deserialize<'de> for AttachmentKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes = zeroize::Zeroizing::new(crate::b64::deserialize(d)?);
        let key = <[u8; 32]>::try_from(&bytes[..]).map_err(|_| serde::de::Error::custom("a key is 32 bytes"))?;
        Ok(AttachmentKey(key))
    }
}

/// The SHA-256 digest of an attachment's blob (the ciphertext, as stored on the server). Base64
/// in JSON.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlobDigest(pub [u8; 32]);

impl fmt::Debug for BlobDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobDigest({})", hex::Hex(&self.0))
    }
}

impl Serialize for BlobDigest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        crate::b64::serialize(&self.0, s)
    }
}

impl<'de> Deserialize<'de> for BlobDigest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes = crate::b64::deserialize(d)?;
        let digest = <[u8; 32]>::try_from(&bytes[..]).map_err(|_| serde::de::Error::custom("a digest is 32 bytes"))?;
        Ok(BlobDigest(digest))
    }
}

/// Everything a recipient needs to fetch, verify and decrypt one attachment. It travels only
/// inside an end-to-end encrypted message: it holds the file's key.
///
/// `name` and `media_type` are what the sender says; a client treats them as untrusted text
/// (it never uses `name` as a path without sanitising it, and never trusts `media_type` to run
/// anything). `size` is the exact plaintext length; the blob's length follows from it
/// (grove-proto `attachment::ciphertext_len`), and a blob of any other length is refused.
///
/// Unknown fields are ignored (a newer sender may add, say, a thumbnail); an unknown `scheme`
/// is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentRef {
    /// The cipher and framing of the blob.
    pub scheme: AttachmentScheme,
    /// Where the blob is: its id on the room's server (`/v1/rooms/{room}/files/{blob}`).
    pub blob: BlobId,
    /// The file's key.
    pub key: AttachmentKey,
    /// SHA-256 of the whole blob; checked before the decrypted file is accepted.
    pub digest: BlobDigest,
    /// The plaintext's exact length in bytes (the blob is padded beyond it).
    pub size: u64,
    /// The file's name as the sender gave it (no path), for display and as a default when saved.
    pub name: String,
    /// The file's media type as the sender gave it (e.g. `image/png`), for display.
    pub media_type: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_ids_parse_only_lowercase_hex_of_32() {
        let id = BlobId([0xa5; 16]);
        let s = id.to_string();
        assert_eq!(s, "a5".repeat(16));
        assert_eq!(s.parse::<BlobId>(), Ok(id));
        for bad in ["", "a5", &"A5".repeat(16), &"a5".repeat(17), &"g0".repeat(16), &"../".repeat(11)] {
            assert_eq!(bad.parse::<BlobId>(), Err(ParseBlobIdError), "{bad:?}");
        }
    }

    #[test]
    fn a_ref_round_trips_through_json_and_hides_its_key_from_debug() {
        let r = AttachmentRef {
            scheme: AttachmentScheme::StreamAes256Gcm64k,
            blob: BlobId([1; 16]),
            key: AttachmentKey([0x42; 32]),
            digest: BlobDigest([7; 32]),
            size: 12345,
            name: "cat.png".into(),
            media_type: "image/png".into(),
        };
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"scheme\":\"stream-aes256gcm-64k\""), "{json}");
        assert_eq!(serde_json::from_str::<AttachmentRef>(&json).unwrap(), r);
        let debug = format!("{r:?}");
        assert!(!debug.contains("66, 66") && !debug.contains("QkJC"), "{debug}");
        // A key of the wrong length or an unknown scheme is refused; an unknown field is ignored.
        let short = json.replace(&crate::b64::encode(&[0x42; 32]), &crate::b64::encode(&[0x42; 31]));
        assert!(serde_json::from_str::<AttachmentRef>(&short).is_err());
        let other = json.replace("stream-aes256gcm-64k", "stream-aes256gcm-1m");
        assert!(serde_json::from_str::<AttachmentRef>(&other).is_err());
        let extra = json.replacen('{', "{\"x\":1,", 1);
        assert_eq!(serde_json::from_str::<AttachmentRef>(&extra).unwrap(), r);
    }
}

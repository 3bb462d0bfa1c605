//! Encrypted attachments: a streaming, sans-IO cipher for files of any size.
//!
//! The sender encrypts a file with a fresh random key ([`AttachmentEncryptor`]), uploads the
//! blob to the room's server, and sends an [`AttachmentRef`] (blob id, key, digest, size, name,
//! media type) inside an end-to-end encrypted message. A recipient downloads the blob and feeds
//! it to an [`AttachmentDecryptor`] built from that reference. The server stores bytes it cannot
//! read and learns only the blob's padded length.
//!
//! # The construction (scheme `stream-aes256gcm-64k`)
//!
//! - **Key**: 32 bytes drawn from the caller's RNG, one per file, never reused. It is the
//!   AES-256-GCM key itself. Because it is fresh per file, the STREAM nonce prefix is a
//!   constant (seven zero bytes), as in age: a nonce is unique because the key is.
//! - **Padding**: the plaintext is followed by zero bytes up to [`padded_len`]: the size is
//!   raised to at least [`MIN_PADDED_LEN`] (4 KiB), then rounded up by Padmé (Nikitin et al.,
//!   "Reducing Metadata Leakage from Encrypted Files and Communication with PURBs", PETS 2019):
//!   with `E = ⌊log2 L⌋` and `S = ⌊log2 E⌋ + 1`, `L` is rounded up to a multiple of
//!   `2^(E − S)`. So a padded length keeps only its top `S` significant bits: the server learns
//!   O(log log L) bits of the size instead of O(log L), for less than 6.25 % overhead (the
//!   floor aside). What it hides: every file up to 4 KiB looks the same, and a larger file is
//!   one of 16 buckets per doubling of size below 64 KiB and of 32 from there to 4 GiB (e.g.
//!   every size in (98 MiB, 100 MiB] gives one blob length). What it does not hide: the order of magnitude, the upload's time, the
//!   uploader and the room, and that the same blob is downloaded by whoever downloads it.
//! - **Segments**: the padded plaintext is cut into [`SEGMENT_LEN`] (64 KiB) segments, the last
//!   one possibly shorter, never empty. Segment `i` is sealed with AES-256-GCM under the nonce
//!   `0^7 ‖ BE32(i) ‖ last` and associated data [`SEGMENT_AAD`] (the STREAM construction of
//!   Hoang, Reyhanitabar, Rogaway and Vizár, as RustCrypto's `aead::stream::StreamBE32`), so a
//!   segment moved to another position, a dropped final segment (the new last one was not
//!   sealed as last), an altered byte or a wrong key all fail authentication of that segment.
//!   The blob is the sealed segments back to back (each 16 bytes longer than its plaintext);
//!   its length is [`ciphertext_len`] of the plaintext size, which the decryptor knows from the
//!   reference, so bytes past it are refused as they arrive and a short blob at the end.
//! - **Digest**: SHA-256 of the whole blob, carried in the reference and compared (in constant
//!   time) when the decryptor finishes. Over the ciphertext rather than the plaintext because:
//!   it identifies exactly the bytes the server must return, so a client can check a blob (or
//!   a resumed download) without the key, as Signal and Matrix do; and it commits the sender to
//!   one ciphertext, which closes AES-GCM's lack of key commitment (a blob crafted to decrypt
//!   under two keys would need two digests). The per-segment AEAD already authenticates the
//!   plaintext under the key, so a plaintext digest would add nothing against the server.
//!
//! # Why not what others do
//!
//! - **Matrix** (matrix-sdk-crypto `AttachmentEncryptor`): AES-256-CTR with a SHA-256 of the
//!   whole ciphertext and no MAC. A streaming reader hands out unauthenticated plaintext until
//!   the last byte is hashed, and a tampered file is detected only at the very end. grove's
//!   segments are each authenticated before their plaintext is handed out.
//! - **Signal**: AES-256-CBC + HMAC-SHA256 over the whole file (64-byte key), SHA-256 digest of
//!   `iv ‖ ciphertext ‖ mac`, and padding to `max(541, ⌊1.05^⌈log1.05 L⌉⌋)` (5 % geometric
//!   buckets). Also verified only at the end, and the bucket rule is floating point. grove keeps
//!   Signal's idea (a digest in the message, a size-hiding bucket) with an integer rule of
//!   similar leakage and a per-segment AEAD.
//!
//! # What the caller must do
//!
//! - Draw the key from a cryptographic RNG (the client passes the OS RNG).
//! - Hand out nothing decrypted as *the file* until [`AttachmentDecryptor::finish`] returned
//!   `Ok`: write to a temporary file and rename it then. Each segment's plaintext is
//!   authenticated when it is returned, but a truncated blob is only known at the end.
//!
//! Sans-IO: both halves take byte slices and append to a `Vec<u8>`; memory is one segment.

use aes_gcm::aead::generic_array::GenericArray;
use aes_gcm::aead::stream::{NewStream, StreamBE32, StreamPrimitive};
use aes_gcm::{Aes256Gcm, KeyInit};
use rand_core::CryptoRngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use grove_wire::attachment::{AttachmentKey, AttachmentRef, AttachmentScheme, BlobDigest, BlobId};

/// Plaintext bytes per segment (the last one may be shorter).
pub const SEGMENT_LEN: usize = 64 * 1024;

/// The AEAD tag added to every segment.
pub const TAG_LEN: usize = 16;

/// Every padded plaintext is at least this long, so small files are indistinguishable.
pub const MIN_PADDED_LEN: u64 = 4096;

/// The associated data of every segment: binds a blob to this scheme.
pub const SEGMENT_AAD: &[u8] = b"grove attachment v1";

/// The largest plaintext this scheme takes, 64 TiB: the STREAM counter has 32 bits, and 2^30
/// segments of 64 KiB plus padding stay well below 2^32 segments.
pub const MAX_SIZE: u64 = 1 << 46;

/// Why an attachment could not be encrypted or decrypted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AttachmentError {
    /// The declared size is larger than [`MAX_SIZE`].
    #[error("a file of {size} bytes is larger than an attachment can be")]
    TooLarge {
        /// The declared size.
        size: u64,
    },
    /// The encryptor was given more plaintext than the size it was made for.
    #[error("more plaintext than the declared {declared} bytes")]
    PlaintextTooLong {
        /// The declared size.
        declared: u64,
    },
    /// The encryptor was finished before it had the declared size.
    #[error("the plaintext ended at {got} of the declared {declared} bytes")]
    PlaintextTooShort {
        /// The declared size.
        declared: u64,
        /// What it was given.
        got: u64,
    },
    /// The blob has more bytes than the reference's size allows (something was appended).
    #[error("the blob is longer than the {expected} bytes its size gives")]
    BlobTooLong {
        /// The blob length the reference implies.
        expected: u64,
    },
    /// The blob ended early (it was truncated).
    #[error("the blob ended at {got} of {expected} bytes")]
    BlobTruncated {
        /// The blob length the reference implies.
        expected: u64,
        /// The bytes received.
        got: u64,
    },
    /// A segment failed authentication: it was altered, moved, swapped or replaced, the last
    /// segment was dropped, or the key is wrong.
    #[error("segment {index} of the blob does not authenticate (altered, reordered, or wrong key)")]
    SegmentForged {
        /// The segment's position, from 0.
        index: u32,
    },
    /// The padding after the plaintext is not all zero (only a dishonest sender makes this).
    #[error("the attachment's padding is not zero")]
    BadPadding,
    /// Every segment authenticated but the blob's SHA-256 is not the reference's digest.
    #[error("the blob's digest does not match its reference")]
    DigestMismatch,
    /// The decryptor refused earlier input and takes no more.
    #[error("the decryptor already failed")]
    Failed,
    /// A bug in grove or a dependency, not in the input.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

/// Padmé, with the 4 KiB floor: the plaintext length plus padding. See the module docs.
pub fn padded_len(size: u64) -> u64 {
    let l = size.max(MIN_PADDED_LEN);
    let e = 63 - u64::from(l.leading_zeros()); // ⌊log2 l⌋, ≥ 12
    let s = 64 - u64::from(e.leading_zeros()); // ⌊log2 e⌋ + 1
    let mask = (1u64 << (e - s)) - 1;
    // Saturating: only sizes far above MAX_SIZE, which `check_size` refuses, come near u64::MAX.
    l.saturating_add(mask) & !mask
}

/// The number of segments of a padded plaintext of `padded` bytes (at least one).
fn segment_count(padded: u64) -> u64 {
    padded.div_ceil(SEGMENT_LEN as u64).max(1)
}

/// The exact blob length for a plaintext of `size` bytes: padded length plus a tag per segment.
pub fn ciphertext_len(size: u64) -> u64 {
    let padded = padded_len(size);
    padded + segment_count(padded) * TAG_LEN as u64
}

fn check_size(size: u64) -> Result<(u64, u32), AttachmentError> {
    if size > MAX_SIZE {
        return Err(AttachmentError::TooLarge { size });
    }
    let padded = padded_len(size);
    let segments = u32::try_from(segment_count(padded)).map_err(|_| AttachmentError::TooLarge { size })?;
    Ok((padded, segments))
}

fn stream(key: &[u8; 32]) -> StreamBE32<Aes256Gcm> {
    StreamBE32::from_aead(Aes256Gcm::new(GenericArray::from_slice(key)), &GenericArray::default())
}

/// What the sender learns by encrypting: the key and digest to put in the [`AttachmentRef`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptedAttachment {
    /// The file's fresh key.
    pub key: AttachmentKey,
    /// SHA-256 of the blob.
    pub digest: BlobDigest,
    /// The plaintext's length.
    pub size: u64,
    /// The blob's length ([`ciphertext_len`] of `size`).
    pub blob_len: u64,
}

impl EncryptedAttachment {
    /// The reference to send in the message, once the server has given the blob its id.
    pub fn into_ref(self, blob: BlobId, name: String, media_type: String) -> AttachmentRef {
        AttachmentRef {
            scheme: AttachmentScheme::StreamAes256Gcm64k,
            blob,
            key: self.key,
            digest: self.digest,
            size: self.size,
            name,
            media_type,
        }
    }
}

/// Encrypts one file, segment by segment. Made for the file's exact size (padding and the last
/// segment depend on it); feed the plaintext with [`push`](Self::push) in pieces of any length,
/// then [`finish`](Self::finish). Holds at most one segment. Its `Debug` output shows no key.
pub struct AttachmentEncryptor {
    stream: StreamBE32<Aes256Gcm>,
    key: AttachmentKey,
    size: u64,
    padded: u64,
    segments: u32,
    /// The index of the segment being filled.
    index: u32,
    /// Plaintext of the segment being filled (then sealed in place).
    segment: Zeroizing<Vec<u8>>,
    /// Plaintext bytes taken so far (padding excluded).
    taken: u64,
    /// Padding bytes taken so far (by [`pad`](Self::pad)).
    padding_taken: u64,
    hasher: Sha256,
}

impl std::fmt::Debug for AttachmentEncryptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttachmentEncryptor").field("size", &self.size).field("taken", &self.taken).finish()
    }
}

impl AttachmentEncryptor {
    /// An encryptor for a file of exactly `size` bytes, with a fresh key from `rng`.
    pub fn new(rng: &mut impl CryptoRngCore, size: u64) -> Result<Self, AttachmentError> {
        let mut key = AttachmentKey([0; 32]);
        rng.fill_bytes(&mut key.0);
        Self::with_key(key, size)
    }

    /// An encryptor with a key drawn earlier, for a caller resuming an interrupted upload: the
    /// same key and the same file give the same blob, byte for byte, so the parts the server
    /// already holds can be computed again and skipped. Never use a key for two different
    /// plaintexts (nonces repeat under it): resume only if the file is unchanged.
    pub fn with_key(key: AttachmentKey, size: u64) -> Result<Self, AttachmentError> {
        let (padded, segments) = check_size(size)?;
        Ok(AttachmentEncryptor {
            stream: stream(&key.0),
            key,
            size,
            padded,
            segments,
            index: 0,
            segment: Zeroizing::new(Vec::with_capacity(SEGMENT_LEN + TAG_LEN)),
            taken: 0,
            padding_taken: 0,
            hasher: Sha256::new(),
        })
    }

    /// The blob's length once finished.
    pub fn blob_len(&self) -> u64 {
        self.padded + u64::from(self.segments) * TAG_LEN as u64
    }

    /// Takes the next `plaintext` bytes and appends every segment they complete to `out`.
    /// More than the declared size in total is [`AttachmentError::PlaintextTooLong`], and
    /// nothing of this call is taken.
    pub fn push(&mut self, plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), AttachmentError> {
        let len = plaintext.len() as u64;
        if len > self.size - self.taken {
            return Err(AttachmentError::PlaintextTooLong { declared: self.size });
        }
        self.taken += len;
        self.absorb(plaintext, out)
    }

    /// Once all the plaintext is in, takes up to `max` bytes of the padding and appends every
    /// segment they complete to `out`; answers how many padding bytes are left. A caller that
    /// must bound its memory calls this until it answers 0 (or little) before
    /// [`finish`](Self::finish), which pads whatever is left at once: up to 1/16 of the size.
    pub fn pad(&mut self, max: usize, out: &mut Vec<u8>) -> Result<u64, AttachmentError> {
        if self.taken != self.size {
            return Err(AttachmentError::PlaintextTooShort { declared: self.size, got: self.taken });
        }
        let zeros = [0u8; 4096];
        let mut budget = max as u64;
        loop {
            let left = self.padded - self.size - self.padding_taken;
            let n = left.min(budget).min(zeros.len() as u64) as usize;
            if n == 0 {
                return Ok(left);
            }
            self.absorb(&zeros[..n], out)?;
            self.padding_taken += n as u64;
            budget -= n as u64;
        }
    }

    /// Pads (what [`pad`](Self::pad) has not), seals the last segment into `out`, and returns
    /// the key and digest.
    pub fn finish(mut self, out: &mut Vec<u8>) -> Result<EncryptedAttachment, AttachmentError> {
        self.pad(usize::MAX, out)?;
        self.seal(true, out)?;
        let blob_len = self.blob_len();
        let digest = BlobDigest(self.hasher.finalize().into());
        Ok(EncryptedAttachment { key: self.key, digest, size: self.size, blob_len })
    }

    /// Appends padded-plaintext bytes, sealing every full segment that is not the last.
    fn absorb(&mut self, mut bytes: &[u8], out: &mut Vec<u8>) -> Result<(), AttachmentError> {
        while !bytes.is_empty() {
            if self.segment.len() == SEGMENT_LEN {
                // A full segment with more bytes after it is not the last one.
                self.seal(false, out)?;
            }
            let n = (SEGMENT_LEN - self.segment.len()).min(bytes.len());
            self.segment.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
        }
        Ok(())
    }

    fn seal(&mut self, last: bool, out: &mut Vec<u8>) -> Result<(), AttachmentError> {
        if last != (self.index + 1 == self.segments) {
            return Err(AttachmentError::Internal("segment count disagrees with the padded length"));
        }
        self.stream
            .encrypt_in_place(self.index, last, SEGMENT_AAD, &mut *self.segment)
            .map_err(|_| AttachmentError::Internal("AES-GCM refused to encrypt"))?;
        self.hasher.update(&self.segment[..]);
        out.extend_from_slice(&self.segment);
        self.segment.clear();
        self.index += 1;
        Ok(())
    }
}

/// Decrypts and verifies one blob, segment by segment, against its [`AttachmentRef`]. Feed the
/// blob with [`push`](Self::push) in pieces of any length, then [`finish`](Self::finish).
/// Plaintext comes out only from segments that authenticated, never past the file's size, and
/// after the first error the decryptor takes nothing more. Holds at most one segment.
pub struct AttachmentDecryptor {
    stream: StreamBE32<Aes256Gcm>,
    digest: BlobDigest,
    size: u64,
    blob_len: u64,
    segments: u32,
    index: u32,
    /// Ciphertext of the segment being received (then opened in place).
    segment: Zeroizing<Vec<u8>>,
    received: u64,
    /// Plaintext bytes handed out so far.
    emitted: u64,
    hasher: Sha256,
    failed: bool,
}

impl std::fmt::Debug for AttachmentDecryptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttachmentDecryptor")
            .field("size", &self.size)
            .field("received", &self.received)
            .field("failed", &self.failed)
            .finish()
    }
}

impl AttachmentDecryptor {
    /// A decryptor for the blob `reference` describes.
    pub fn new(reference: &AttachmentRef) -> Result<Self, AttachmentError> {
        let AttachmentScheme::StreamAes256Gcm64k = reference.scheme;
        let (padded, segments) = check_size(reference.size)?;
        Ok(AttachmentDecryptor {
            stream: stream(&reference.key.0),
            digest: reference.digest,
            size: reference.size,
            blob_len: padded + u64::from(segments) * TAG_LEN as u64,
            segments,
            index: 0,
            segment: Zeroizing::new(Vec::with_capacity(SEGMENT_LEN + TAG_LEN)),
            received: 0,
            emitted: 0,
            hasher: Sha256::new(),
            failed: false,
        })
    }

    /// The blob length this decryptor expects.
    pub fn blob_len(&self) -> u64 {
        self.blob_len
    }

    /// Takes the next blob bytes and appends the plaintext of every segment they complete (and
    /// that authenticates) to `out`.
    pub fn push(&mut self, ciphertext: &[u8], out: &mut Vec<u8>) -> Result<(), AttachmentError> {
        if self.failed {
            return Err(AttachmentError::Failed);
        }
        let result = self.take(ciphertext, out);
        self.failed = result.is_err();
        result
    }

    /// Checks that the blob was complete, opens the last segment into `out`, and compares the
    /// digest. Only an `Ok` here means the file is the one the reference names.
    pub fn finish(mut self, out: &mut Vec<u8>) -> Result<(), AttachmentError> {
        if self.failed {
            return Err(AttachmentError::Failed);
        }
        if self.received != self.blob_len {
            return Err(AttachmentError::BlobTruncated { expected: self.blob_len, got: self.received });
        }
        self.open(out)?;
        let digest: [u8; 32] = self.hasher.finalize().into();
        if !bool::from(digest.ct_eq(&self.digest.0)) {
            return Err(AttachmentError::DigestMismatch);
        }
        Ok(())
    }

    fn take(&mut self, mut bytes: &[u8], out: &mut Vec<u8>) -> Result<(), AttachmentError> {
        if bytes.len() as u64 > self.blob_len - self.received {
            return Err(AttachmentError::BlobTooLong { expected: self.blob_len });
        }
        self.received += bytes.len() as u64;
        while !bytes.is_empty() {
            if self.segment.len() == SEGMENT_LEN + TAG_LEN {
                // A full sealed segment with more bytes after it: not the last one.
                self.open(out)?;
            }
            let n = (SEGMENT_LEN + TAG_LEN - self.segment.len()).min(bytes.len());
            self.segment.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
        }
        Ok(())
    }

    fn open(&mut self, out: &mut Vec<u8>) -> Result<(), AttachmentError> {
        let index = self.index;
        let last = index + 1 == self.segments;
        self.hasher.update(&self.segment[..]);
        self.stream
            .decrypt_in_place(index, last, SEGMENT_AAD, &mut *self.segment)
            .map_err(|_| AttachmentError::SegmentForged { index })?;
        let keep = (self.size - self.emitted).min(self.segment.len() as u64) as usize;
        let (plain, padding) = self.segment.split_at(keep);
        if padding.iter().any(|&b| b != 0) {
            return Err(AttachmentError::BadPadding);
        }
        out.extend_from_slice(plain);
        self.emitted += keep as u64;
        self.segment.clear();
        self.index += 1;
        Ok(())
    }
}

/// Encrypts a whole file held in memory: the blob and what the reference needs. For small files
/// and tests; stream large ones through [`AttachmentEncryptor`].
pub fn encrypt(
    rng: &mut impl CryptoRngCore,
    plaintext: &[u8],
) -> Result<(Vec<u8>, EncryptedAttachment), AttachmentError> {
    let mut enc = AttachmentEncryptor::new(rng, plaintext.len() as u64)?;
    let mut blob = Vec::with_capacity(usize::try_from(enc.blob_len()).unwrap_or(0));
    enc.push(plaintext, &mut blob)?;
    let done = enc.finish(&mut blob)?;
    Ok((blob, done))
}

/// Decrypts and verifies a whole blob held in memory.
pub fn decrypt(reference: &AttachmentRef, blob: &[u8]) -> Result<Vec<u8>, AttachmentError> {
    let mut dec = AttachmentDecryptor::new(reference)?;
    let mut out = Vec::with_capacity(usize::try_from(reference.size.min(blob.len() as u64)).unwrap_or(0));
    dec.push(blob, &mut out)?;
    dec.finish(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests;

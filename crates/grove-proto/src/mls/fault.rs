//! Proving a commit's fault: the membership tag of an MLS PublicMessage commit, recomputed from
//! the message, the group context of its epoch and a membership key (RFC 9420 section 6.2).
//!
//! A member's commit carries `membership_tag = MAC(membership_key, AuthenticatedContentTBM)`,
//! where `AuthenticatedContentTBM` is the message's `FramedContentTBS` (version, wire format,
//! the framed content, the group context of the commit's epoch) followed by its
//! `FramedContentAuthData` (signature and confirmation tag). The hub holds the group context
//! but no key; a member who holds the epoch's membership key can reveal it, and then anyone can
//! recompute the tag. [`membership_tag_verifies`] is that check: the server voids a commit whose
//! tag does not verify under the key that members agree on, and refuses a report whose key makes
//! the tag verify.
//!
//! # Why revealing one epoch's membership key is safe
//!
//! The membership key is one of the secrets derived from an epoch's `epoch_secret`, by its own
//! label; it is used for one thing only: the MAC over PublicMessages *sent in that epoch*. It
//! derives nothing (no message key, no sender-data key, no exporter, no next epoch's secrets:
//! those come from `epoch_secret` and `init_secret`, which a one-way derivation does not give
//! back). A report reveals it for an epoch the room is leaving (the commit under dispute was
//! made in it, and the room moves on from it either by the void, after which the next commit
//! starts a new epoch, or by that commit). The one thing the key allows is to make
//! PublicMessages of that epoch that pass the membership check; these still need a member's
//! signature, and a handshake message of a past epoch is refused by the server and by every
//! member. Application messages are PrivateMessages, keyed by the secret tree, which the key
//! does not reach.
//!
//! # Framing
//!
//! The parser reads the framing of a PublicMessage commit by a member (the only kind grove's
//! hub accepts as a commit) far enough to find where the framed content ends: the update path's
//! leaf node is walked field by field, every vector by its variable-length prefix (RFC 9420
//! section 2.1.2). It reads nothing it does not need and checks that the message ends exactly
//! after the membership tag, so the split is the one every MLS implementation makes.

use std::ops::Range;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Why a message's membership tag cannot be recomputed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FaultError {
    /// The bytes are not a PublicMessage commit sent by a member, in the framing grove uses.
    #[error("not a member's PublicMessage commit: {0}")]
    NotACommit(&'static str),
    /// The key is not a key of this ciphersuite's MAC (32 bytes).
    #[error("a membership key is 32 bytes, not {0}")]
    KeyLength(usize),
}

/// Where the parts of a commit's framing lie.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CommitFraming {
    /// The framed content (`FramedContent`, after the 4-byte version and wire format).
    pub content: Range<usize>,
    /// The confirmation tag's bytes (without its length prefix).
    pub confirmation_tag: Range<usize>,
    /// The membership tag's bytes (without its length prefix).
    pub membership_tag: Range<usize>,
    /// The authentication data (`FramedContentAuthData`: signature and confirmation tag).
    auth: Range<usize>,
}

/// The length of an HMAC-SHA256 key and tag.
const MAC_LEN: usize = 32;

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<Range<usize>, FaultError> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.bytes.len()).ok_or(FaultError::NotACommit(what))?;
        let r = self.at..end;
        self.at = end;
        Ok(r)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, FaultError> {
        let r = self.take(1, what)?;
        Ok(self.bytes[r.start])
    }

    fn uint(&mut self, n: usize, what: &'static str) -> Result<u64, FaultError> {
        let r = self.take(n, what)?;
        Ok(self.bytes[r].iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    }

    /// A vector with a variable-length size prefix (RFC 9420 section 2.1.2): its contents.
    fn vector(&mut self, what: &'static str) -> Result<Range<usize>, FaultError> {
        let first = self.u8(what)?;
        let len = match first >> 6 {
            0 => u64::from(first & 0x3f),
            1 => (u64::from(first & 0x3f) << 8) | self.uint(1, what)?,
            2 => (u64::from(first & 0x3f) << 24) | self.uint(3, what)?,
            _ => return Err(FaultError::NotACommit(what)),
        };
        let len = usize::try_from(len).map_err(|_| FaultError::NotACommit(what))?;
        self.take(len, what)
    }

    fn leaf_node(&mut self) -> Result<(), FaultError> {
        self.vector("leaf encryption key")?;
        self.vector("leaf signature key")?;
        // Credential: a type, then one vector for every type (basic: the identity; x509: the
        // certificate chain; others: their data).
        self.uint(2, "credential type")?;
        self.vector("credential")?;
        for what in ["versions", "cipher suites", "extension types", "proposal types", "credential types"] {
            self.vector(what)?;
        }
        match self.u8("leaf node source")? {
            1 => {
                self.uint(16, "lifetime")?;
            }
            2 => {}
            3 => {
                self.vector("parent hash")?;
            }
            _ => return Err(FaultError::NotACommit("leaf node source")),
        }
        self.vector("leaf extensions")?;
        self.vector("leaf signature")?;
        Ok(())
    }
}

/// Finds the parts of a member's PublicMessage commit (an `MLSMessage`, bytes).
pub fn commit_framing(message: &[u8]) -> Result<CommitFraming, FaultError> {
    let mut r = Reader { bytes: message, at: 0 };
    if r.uint(2, "version")? != 1 {
        return Err(FaultError::NotACommit("version"));
    }
    if r.uint(2, "wire format")? != 1 {
        return Err(FaultError::NotACommit("not a PublicMessage"));
    }
    let content_start = r.at;
    r.vector("group id")?;
    r.uint(8, "epoch")?;
    if r.u8("sender type")? != 1 {
        return Err(FaultError::NotACommit("the sender is not a member"));
    }
    r.uint(4, "leaf index")?;
    r.vector("authenticated data")?;
    if r.u8("content type")? != 3 {
        return Err(FaultError::NotACommit("not a commit"));
    }
    r.vector("proposals")?;
    match r.u8("update path presence")? {
        0 => {}
        1 => {
            r.leaf_node()?;
            r.vector("update path nodes")?;
        }
        _ => return Err(FaultError::NotACommit("update path presence")),
    }
    let content = content_start..r.at;
    let auth_start = r.at;
    r.vector("signature")?;
    let confirmation_tag = r.vector("confirmation tag")?;
    let auth = auth_start..r.at;
    let membership_tag = r.vector("membership tag")?;
    if r.at != message.len() {
        return Err(FaultError::NotACommit("bytes after the membership tag"));
    }
    Ok(CommitFraming { content, confirmation_tag, membership_tag, auth })
}

/// The input of a commit's membership tag (`AuthenticatedContentTBM`), given the group context
/// of the commit's epoch (TLS-encoded).
pub fn membership_tag_input(message: &[u8], context: &[u8]) -> Result<Vec<u8>, FaultError> {
    let f = commit_framing(message)?;
    let mut out = Vec::with_capacity(message.len() + context.len());
    out.extend_from_slice(&message[..f.content.end]);
    out.extend_from_slice(context);
    out.extend_from_slice(&message[f.auth]);
    Ok(out)
}

fn mac(key: &[u8], input: &[u8]) -> Result<Vec<u8>, FaultError> {
    if key.len() != MAC_LEN {
        return Err(FaultError::KeyLength(key.len()));
    }
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).map_err(|_| FaultError::KeyLength(key.len()))?;
    m.update(input);
    Ok(m.finalize().into_bytes().to_vec())
}

/// Whether the commit's membership tag is the MAC, under `key`, of its input with `context`
/// (the group context of the commit's epoch, TLS-encoded).
pub fn membership_tag_verifies(message: &[u8], context: &[u8], key: &[u8]) -> Result<bool, FaultError> {
    let f = commit_framing(message)?;
    let expected = mac(key, &membership_tag_input(message, context)?)?;
    Ok(bool::from(expected.ct_eq(&message[f.membership_tag])))
}

/// The commit with its membership tag made anew under `key`: what its sender does last before
/// posting it. (grove's tests use it to build a member who lies in the parts the server cannot
/// check, with a membership tag that still verifies.)
pub fn with_membership_tag(message: &[u8], context: &[u8], key: &[u8]) -> Result<Vec<u8>, FaultError> {
    let f = commit_framing(message)?;
    let tag = mac(key, &membership_tag_input(message, context)?)?;
    if f.membership_tag.len() != tag.len() {
        return Err(FaultError::NotACommit("a membership tag of another length"));
    }
    let mut out = message.to_vec();
    out[f.membership_tag].copy_from_slice(&tag);
    Ok(out)
}

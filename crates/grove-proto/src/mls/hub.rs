//! The hub: the room server's validator of an MLS group's public state.
//!
//! The server (the "hub" of the MIMI drafts) holds no group secret. It holds the group's *public*
//! state, an mls-rs [`ExternalGroup`], and uses it to
//!
//! - order handshake messages: exactly one commit per epoch is accepted; a stale, replayed or
//!   future commit is answered with [`HubError::WrongEpoch`];
//! - refuse commits and proposals that would corrupt the group: bad signatures, senders who are
//!   not members, invalid proposals, invalid update paths, leaves whose credential does not match
//!   their signature key ([`GroveIdentityProvider`]);
//! - bind the MLS sender to the user who signed the HTTP request ([`HubError::SenderMismatch`]);
//! - refuse commits the room's policy does not allow ([`HubError::NotAllowed`]; see
//!   [`crate::mls::policy`]: the same `MlsRules` run in every client), and proposals other than
//!   a member's own leave in a room with a policy;
//! - serve the current ratchet tree to joiners, since grove sends trees out of band (GroupInfo
//!   and Welcome messages do not need the ratchet-tree extension).
//!
//! # What the hub cannot check
//!
//! - Anything encrypted: the path secrets inside a commit's update path, the confirmation tag
//!   (it needs the epoch's confirmation key), and the sender of a PrivateMessage. A member can
//!   therefore still send a commit whose *encrypted* parts are garbage; the public tree stays
//!   consistent, and honest members will fail to process it and can report it.
//! - The membership tag of PublicMessages (it needs the membership key).
//! - KeyPackage lifetimes: the hub never passes a time to mls-rs, and mls-rs then skips the
//!   lifetime check (`ValidationContext::Add(None)`). Nothing on the hub's paths reads the
//!   clock: mls-rs only calls `MlsTime::now()` when a client creates a KeyPackage or a group
//!   (`client_builder.rs`, `lifetime()`), when a client commits (`group/commit.rs`), and in
//!   `validate_key_package` for standalone KeyPackage messages; the hub refuses KeyPackage
//!   messages before mls-rs sees them.
//! - External commits are taken as a resync: a member replacing its own leaf
//!   ([`crate::mls::resync`]), or, through [`HubGroup::check_link_join`] only (the server checked
//!   the room's link token), as a link join ([`crate::mls::links`]); any other is refused
//!   ([`HubError::NotAllowed`]).
//! - ReInit commits are refused ([`HubError::Rejected`]): the hub cannot follow a group into its
//!   successor.
//!
//! # State handling
//!
//! [`HubGroup::check_commit`] and [`HubGroup::check_proposal`] take `&self` and return the next
//! state (a clone of the `ExternalGroup`, advanced). The caller installs it only once its durable
//! write succeeded; on any error, nothing changed.
//!
//! # Clock and randomness
//!
//! The hub reads neither. Its crypto provider is [`GroveCryptoProvider::verify_only`], which
//! has no RNG: the hub's paths only hash, verify signatures and check public keys, and a draw of
//! randomness would fail rather than reach the OS. For the clock, see KeyPackage lifetimes above.

use std::fmt;

use mls_rs::error::MlsError;
use mls_rs::external_client::builder::{ExternalBaseConfig, WithCryptoProvider, WithIdentityProvider, WithMlsRules};
use mls_rs::external_client::{ExternalClient, ExternalGroup, ExternalReceivedMessage, ExternalSnapshot};
use mls_rs::group::{CommitEffect, ContentType, ExportedTree, Sender};
use mls_rs::mls_rs_codec::MlsDecode;
use mls_rs::{MlsMessage, MlsMessageDescription, WireFormat};

use crate::identity::UserId;
use crate::mls::crypto::GroveCryptoProvider;
use crate::mls::error::{Cause, Expected, Internal, Malformed, Rejection};
use crate::mls::identity::{membership_change, user_of, GroveIdentityProvider};
use crate::mls::policy::PolicyRules;
use crate::policy::PolicyError;
use crate::ErrorKind;

/// The first byte of [`HubGroup::snapshot`] output: the format version of what follows.
const SNAPSHOT_FORMAT: u8 = 1;

pub(super) type HubConfig = WithMlsRules<
    PolicyRules,
    WithIdentityProvider<GroveIdentityProvider, WithCryptoProvider<GroveCryptoProvider, ExternalBaseConfig>>,
>;

/// The hub verifies and generates nothing: its provider has no RNG (any draw would fail).
fn hub_client() -> ExternalClient<HubConfig> {
    ExternalClient::builder()
        .crypto_provider(GroveCryptoProvider::verify_only())
        .identity_provider(GroveIdentityProvider)
        .mls_rules(PolicyRules::new(mls_rs::mls_rules::DefaultMlsRules::new()))
        .build()
}

/// Why the hub refused a message or state.
///
/// Every variant except [`HubError::Internal`] is about the input (hostile, buggy or stale
/// clients, or corrupt stored bytes); `Internal` means a bug on our side. [`HubError::kind`]
/// sorts them; a variant that stems from an mls-rs error keeps it as its
/// [`source`](std::error::Error::source).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HubError {
    /// The bytes do not decode as the expected MLS structure.
    #[error("malformed MLS message: {0}")]
    Malformed(#[source] Malformed),
    /// The message belongs to another group.
    #[error("the message is for another group")]
    WrongGroup,
    /// The message is for an epoch other than the one it must be in (stale, replayed or future).
    #[error("wrong epoch: message is for epoch {message_epoch}, group is at {current_epoch}")]
    WrongEpoch {
        /// The epoch in the message's header.
        message_epoch: u64,
        /// The group's current epoch.
        current_epoch: u64,
    },
    /// A handshake message must be a PublicMessage (it was a PrivateMessage, Welcome, ...).
    #[error("expected a PublicMessage")]
    NotPublicMessage,
    /// An application message must be a PrivateMessage.
    #[error("expected a PrivateMessage")]
    NotPrivateMessage,
    /// The content type is not the one this call accepts (e.g. a proposal given as a commit).
    #[error("wrong content type")]
    WrongContentType,
    /// The sender is not a current member's leaf (or is an external sender / external joiner).
    #[error("the sender is not a member of the group")]
    NotAMember,
    /// The sender leaf belongs to a user other than the one who signed the request.
    #[error("the MLS sender is not the user who sent the request")]
    SenderMismatch,
    /// mls-rs refused the message or state: bad signature, invalid proposal or path, tree that
    /// does not match the GroupInfo, bad credential, unsupported ciphersuite, ...
    #[error("rejected by MLS validation: {0}")]
    Rejected(#[source] Rejection),
    /// The room's policy ([`crate::policy`]) does not let the sender make this change.
    #[error("not allowed by the room's policy: {0}")]
    NotAllowed(#[source] PolicyError),
    /// Bytes passed to [`HubGroup::restore`] are not a snapshot this code wrote.
    #[error("corrupt hub snapshot: {0}")]
    CorruptSnapshot(#[source] CorruptSnapshot),
    /// A bug on our side (an invariant of this module or of mls-rs did not hold).
    #[error("internal error: {0}")]
    Internal(#[source] Internal),
}

impl HubError {
    /// Who is to blame: the input (a client, or for [`HubError::CorruptSnapshot`] the stored
    /// bytes the caller passed), or us.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Malformed(_)
            | Self::WrongGroup
            | Self::WrongEpoch { .. }
            | Self::NotPublicMessage
            | Self::NotPrivateMessage
            | Self::WrongContentType
            | Self::NotAMember
            | Self::SenderMismatch
            | Self::Rejected(_)
            | Self::NotAllowed(_) => ErrorKind::Rejected,
            Self::CorruptSnapshot(_) => ErrorKind::Misuse,
            Self::Internal(_) => ErrorKind::Internal,
        }
    }

    pub(super) fn bug(what: &'static str) -> HubError {
        HubError::Internal(Internal::new(what))
    }
}

/// Why bytes given to [`HubGroup::restore`] are not a snapshot this code wrote.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CorruptSnapshot {
    /// No bytes at all.
    #[error("empty")]
    Empty,
    /// A format byte this code does not know.
    #[error("unknown snapshot format {0}")]
    UnknownFormat(u8),
    /// The mls-rs snapshot does not decode or load.
    #[error("{0}")]
    Mls(#[source] Cause),
}

/// Maps an mls-rs error raised while processing *input* to a hub error.
pub(super) fn rejected(e: MlsError) -> HubError {
    if let Some(refusal) = crate::mls::policy::refusal(&e) {
        return HubError::NotAllowed(refusal);
    }
    match e {
        MlsError::SerializationError(_) => HubError::Malformed(Malformed::Message(Cause::new(e))),
        other => HubError::Rejected(Rejection::Mls(Cause::new(other))),
    }
}

pub(super) fn parse(message: &[u8]) -> Result<MlsMessage, HubError> {
    MlsMessage::from_bytes(message).map_err(|e| HubError::Malformed(Malformed::Message(Cause::new(e))))
}

/// The public state of one MLS group, as the hub tracks it. Cheap enough to clone per commit.
#[derive(Clone)]
pub struct HubGroup {
    pub(super) group: ExternalGroup<HubConfig>,
}

/// A commit the hub accepted, with the state it leads to.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CheckedCommit {
    /// The group state after the commit. Install it once the commit is durably stored.
    pub next: HubGroup,
    /// The epoch the commit starts (the current epoch + 1).
    pub new_epoch: u64,
    /// Users added by the commit, in proposal order.
    pub added: Vec<UserId>,
    /// Users removed by the commit, in proposal order.
    pub removed: Vec<UserId>,
}

/// A proposal the hub accepted, with the state that caches it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CheckedProposal {
    /// The group state with the proposal cached, so that a later commit may include it by
    /// reference. Install it once the proposal is durably stored.
    pub next: HubGroup,
}

impl HubGroup {
    /// Starts observing a group from the creator's GroupInfo (an `MlsMessage`, bytes) and the
    /// exported ratchet tree (bytes).
    ///
    /// Errors if either is malformed, if the tree does not match the GroupInfo (tree hash), if
    /// the GroupInfo's signature does not verify under its signer's leaf, if any leaf is not a
    /// valid grove credential, or if the group does not use [`crate::mls::CIPHER_SUITE`].
    pub fn observe(group_info: &[u8], ratchet_tree: &[u8]) -> Result<HubGroup, HubError> {
        let info = parse(group_info)?;
        if info.wire_format() != WireFormat::GroupInfo {
            return Err(HubError::Malformed(Malformed::Expected(Expected::GroupInfo)));
        }
        let tree = ExportedTree::mls_decode_exhaustive(ratchet_tree)
            .map_err(|e| HubError::Malformed(Malformed::RatchetTree(Cause::new(e))))?;
        let group = hub_client().observe_group(info, Some(tree), None).map_err(rejected)?;
        Ok(HubGroup { group })
    }

    /// The MLS group id.
    pub fn group_id(&self) -> &[u8] {
        self.group.group_context().group_id()
    }

    /// The current epoch.
    pub fn epoch(&self) -> u64 {
        self.group.group_context().epoch()
    }

    /// The room's policy (`None` for a group created before grove had policies).
    pub fn policy(&self) -> Option<grove_wire::policy::RoomPolicy> {
        crate::mls::policy::read(&self.group.group_context().extensions).ok().flatten()
    }

    /// Current members' user ids, in leaf order.
    pub fn members(&self) -> Vec<UserId> {
        // Every leaf passed `GroveIdentityProvider` when it entered the tree, so `user_of` cannot
        // fail here; a leaf for which it did would not be a grove member anyway.
        self.group.roster().members_iter().filter_map(|m| user_of(&m.signing_identity).ok()).collect()
    }

    /// Whether `user` currently has a leaf in the group.
    pub fn is_member(&self, user: &UserId) -> bool {
        self.group.roster().members_iter().any(|m| user_of(&m.signing_identity).ok().as_ref() == Some(user))
    }

    /// The current public ratchet tree, exported (what a joiner needs besides its Welcome).
    pub fn ratchet_tree(&self) -> Result<Vec<u8>, HubError> {
        self.group.export_tree().map_err(|e| HubError::Internal(Internal::caused("exporting the ratchet tree", e)))
    }

    /// Opaque snapshot bytes to persist (a format byte, then the mls-rs `ExternalSnapshot`,
    /// which includes the ratchet tree and the cached proposals); [`HubGroup::restore`] is its
    /// inverse.
    pub fn snapshot(&self) -> Result<Vec<u8>, HubError> {
        let body = self
            .group
            .snapshot()
            .to_bytes()
            .map_err(|e| HubError::Internal(Internal::caused("encoding the snapshot", e)))?;
        let mut out = Vec::with_capacity(body.len() + 1);
        out.push(SNAPSHOT_FORMAT);
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Rebuilds a group from [`HubGroup::snapshot`] bytes.
    pub fn restore(bytes: &[u8]) -> Result<HubGroup, HubError> {
        let (format, body) = bytes.split_first().ok_or_else(|| HubError::CorruptSnapshot(CorruptSnapshot::Empty))?;
        if *format != SNAPSHOT_FORMAT {
            return Err(HubError::CorruptSnapshot(CorruptSnapshot::UnknownFormat(*format)));
        }
        let snapshot = ExternalSnapshot::mls_decode_exhaustive(body)
            .map_err(|e| HubError::CorruptSnapshot(CorruptSnapshot::Mls(Cause::new(e))))?;
        let group = hub_client()
            .load_group(snapshot)
            .map_err(|e| HubError::CorruptSnapshot(CorruptSnapshot::Mls(Cause::new(e))))?;
        Ok(HubGroup { group })
    }

    /// Checks the framing every handshake message must have: a PublicMessage of this group, of
    /// content type `expected`, in the current epoch. Returns the sender.
    pub(super) fn check_handshake(&self, message: &MlsMessage, expected: ContentType) -> Result<Sender, HubError> {
        let MlsMessageDescription::PublicProtocolMessage { group_id, epoch_id, content_type, sender, .. } =
            message.description()
        else {
            return Err(HubError::NotPublicMessage);
        };
        if group_id != self.group_id() {
            return Err(HubError::WrongGroup);
        }
        if content_type != expected {
            return Err(HubError::WrongContentType);
        }
        if epoch_id != self.epoch() {
            return Err(HubError::WrongEpoch { message_epoch: epoch_id, current_epoch: self.epoch() });
        }
        Ok(sender)
    }

    /// The user at the sender's leaf, which must be `claimed`. Returns the leaf index.
    ///
    /// The sender index is not yet authenticated here, but mls-rs then verifies the message's
    /// signature with exactly this leaf's key, so a message that passes both names its signer.
    fn check_sender(&self, sender: Sender, claimed: &UserId) -> Result<u32, HubError> {
        let Sender::Member(index) = sender else {
            return Err(HubError::NotAMember);
        };
        let member = self.group.roster().member_with_index(index).map_err(|_| HubError::NotAMember)?;
        let user = user_of(&member.signing_identity)
            .map_err(|e| HubError::Internal(Internal::caused("member leaf with a bad credential", e)))?;
        if &user != claimed {
            return Err(HubError::SenderMismatch);
        }
        Ok(index)
    }

    /// Validates a PublicMessage commit sent (per the request signature) by `sender`.
    ///
    /// Does NOT mutate `self`: returns the next state, which the caller installs only after its
    /// durable write succeeds. A commit for any epoch but the current one, including a replay of
    /// the commit that produced the current epoch, is [`HubError::WrongEpoch`].
    pub fn check_commit(&self, message: &[u8], sender: &UserId) -> Result<CheckedCommit, HubError> {
        let msg = parse(message)?;
        let from = self.check_handshake(&msg, ContentType::Commit)?;
        if from == Sender::NewMemberCommit {
            // A member replacing its own leaf (`crate::mls::resync`). A link join (an external
            // commit that adds a leaf) comes only through `check_link_join`, with the link.
            let checked = self.check_resync(msg, sender)?;
            if checked.next.group.roster().members_iter().count() != self.group.roster().members_iter().count() {
                return Err(HubError::NotAllowed(PolicyError::Invalid(
                    "an external commit that adds a member comes only with the room's invite link",
                )));
            }
            return Ok(checked);
        }
        let committer = self.check_sender(from, sender)?;

        let mut next = self.group.clone();
        let received = next.process_incoming_message(msg).map_err(rejected)?;
        let ExternalReceivedMessage::Commit(desc) = received else {
            return Err(HubError::bug("mls-rs did not process a commit as a commit"));
        };
        if desc.is_external || desc.committer != committer {
            return Err(HubError::bug("mls-rs reports a different committer"));
        }
        let new_epoch = match desc.effect {
            CommitEffect::NewEpoch(e) => e,
            CommitEffect::Removed { new_epoch, .. } => new_epoch,
            CommitEffect::ReInit(_) => return Err(HubError::Rejected(Rejection::ReInit)),
        };
        if self.epoch().checked_add(1) != Some(new_epoch.epoch) || next.group_context().epoch() != new_epoch.epoch {
            return Err(HubError::bug("the commit did not advance one epoch"));
        }

        let change = membership_change(&new_epoch)
            .map_err(|e| HubError::Internal(Internal::caused("reading the commit's proposals", e)))?;
        Ok(CheckedCommit {
            new_epoch: new_epoch.epoch,
            next: HubGroup { group: next },
            added: change.added,
            removed: change.removed,
        })
    }

    /// Validates a PublicMessage proposal (e.g. a member's own Remove when leaving) sent (per the
    /// request signature) by `sender`.
    ///
    /// Does NOT mutate `self`: the returned next state caches the proposal so that a later commit
    /// that includes it by reference validates. Proposals from external senders or new members
    /// are refused ([`HubError::NotAMember`]).
    pub fn check_proposal(&self, message: &[u8], sender: &UserId) -> Result<CheckedProposal, HubError> {
        let msg = parse(message)?;
        let from = self.check_handshake(&msg, ContentType::Proposal)?;
        let proposer = self.check_sender(from, sender)?;

        let mut next = self.group.clone();
        let received = next.process_incoming_message(msg).map_err(rejected)?;
        let ExternalReceivedMessage::Proposal(desc) = received else {
            return Err(HubError::bug("mls-rs did not process a proposal as a proposal"));
        };
        crate::mls::policy::check_proposal(self.group.group_context(), proposer, &desc.proposal)
            .map_err(HubError::NotAllowed)?;
        Ok(CheckedProposal { next: HubGroup { group: next } })
    }

    /// Checks an application message: it must be a PrivateMessage of this group with content
    /// type application, for an epoch not after the current one. Returns the epoch from its
    /// cleartext header, so the server can apply its own window of past epochs.
    ///
    /// The sender and the content are encrypted, so the hub cannot check who sent it (the request
    /// signature says who uploaded it, not who wrote it) nor that it decrypts; members do.
    pub fn check_application(&self, message: &[u8]) -> Result<u64, HubError> {
        let msg = parse(message)?;
        let MlsMessageDescription::PrivateProtocolMessage { group_id, epoch_id, content_type } = msg.description()
        else {
            return Err(HubError::NotPrivateMessage);
        };
        if group_id != self.group_id() {
            return Err(HubError::WrongGroup);
        }
        if content_type != ContentType::Application {
            return Err(HubError::WrongContentType);
        }
        if epoch_id > self.epoch() {
            return Err(HubError::WrongEpoch { message_epoch: epoch_id, current_epoch: self.epoch() });
        }
        Ok(epoch_id)
    }
}

impl fmt::Debug for HubGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubGroup")
            .field("group_id", &grove_wire::hex::Hex(self.group_id()))
            .field("epoch", &self.epoch())
            .field("members", &self.members().len())
            .finish()
    }
}

/// What a fault report needs of the hub (see [`crate::mls::fault`]).
impl HubGroup {
    /// The group context of the current epoch, TLS-encoded: the context of the membership tags
    /// of this epoch's handshake messages.
    pub fn group_context(&self) -> Result<Vec<u8>, HubError> {
        use mls_rs::mls_rs_codec::MlsEncode;
        self.group
            .group_context()
            .mls_encode_to_vec()
            .map_err(|e| HubError::Internal(Internal::caused("encoding the group context", e)))
    }
}

//! The client-side MLS engine: one user's groups, KeyPackages and their secrets, sans-IO.
//!
//! [`MlsEngine`] wraps an mls-rs `Client` configured as grove does (ciphersuite 1 through
//! [`GroveCryptoProvider`], [`GroveIdentityProvider`], handshake messages as PublicMessage, no
//! ratchet-tree extension: the room's server serves the tree). It keeps everything in memory and
//! never touches a disk. Build it with [`MlsEngine::with_rng`] (or rebuild it with
//! [`MlsEngine::load_with_rng`]), passing the RNG it draws all its randomness from, and give it
//! a clock with [`MlsEngine::with_clock`] (see [Clock and randomness](self#clock-and-randomness)).
//!
//! # State handed back, not stored
//!
//! Every operation that changes persistent state returns a [`Changes`]: the rows to upsert or
//! delete in the caller's own database. The caller writes them in ONE transaction together with
//! whatever goes with the operation (decrypted messages, its log cursor, an outbox entry), and
//! rebuilds the engine after a restart with [`MlsEngine::load_with_rng`] from every row it stored
//! ([`StoredState`]). A natural schema is four tables:
//!
//! - `mls_group(group_id PRIMARY KEY, snapshot)`: [`GroupWrite::snapshot`] is
//!   [`SnapshotWrite::Checkpoint`] = upsert *and delete the group's journal rows*,
//!   [`SnapshotWrite::Delete`] = delete the group *and all its epoch and journal rows*,
//!   [`SnapshotWrite::Unchanged`] = nothing;
//! - `mls_epoch(group_id, epoch, data, PRIMARY KEY(group_id, epoch))`: [`EpochWrite::data`]
//!   `Some` = upsert, `None` = delete;
//! - `mls_journal(group_id, seq, entry, PRIMARY KEY(group_id, seq))`: [`GroupWrite::journal`]
//!   rows to insert, after the snapshot write (see [The journal](self#the-journal));
//! - `mls_key_package(id PRIMARY KEY, data)`: [`KeyPackageWrite::data`] likewise.
//!
//! Rules the caller must follow, or lose security or messages:
//!
//! - **Persist before you send.** [`MlsEngine::encrypt`] advances the sender's key ratchet: if
//!   the ciphertext leaves the device but the [`Changes`] (its "sent" journal row) do not reach
//!   the database, a restart would encrypt the next message with the same key and nonce.
//!   Likewise persist the
//!   [`Changes`] of a `commit_*` (they hold the pending commit) together with the commit and
//!   Welcome bytes in an outbox *before* posting them.
//! - **If the transaction fails, rebuild.** The engine's memory is then ahead of the database:
//!   drop the engine and [`MlsEngine::load_with_rng`] it again from the database (and retry from the old
//!   cursor). An operation that returns an error changes nothing (see below) and needs no rebuild.
//! - **Several operations may share one transaction:** [`Changes::merge`] combines them in order.
//!
//! # Failures change nothing
//!
//! An operation that fails (garbled, forged, foreign or stale input; misuse) leaves the engine as
//! it was: nothing is written to the recording store and the next [`Changes`] carries nothing of
//! it. mls-rs may mutate a group in memory before it notices a problem (for instance it adopts a
//! commit's new signer before validating the update path), so on any error after mls-rs touched a
//! group the engine reloads that group from the last written state: its snapshot, with its
//! journal replayed. Cheap checks (decoding, group id, epoch) run first, so garbage does not
//! cost a reload.
//!
//! # The journal
//!
//! mls-rs can only write a group whole (`write_to_storage` serialises the ratchet tree, the
//! secret tree and the rest: about 4 MB at 10,000 members), so writing it after every
//! message or commit made each of them O(group size) in bytes written, and its serialisation
//! and SQLite transaction cost as much as mls-rs' own processing of a commit at 10,000 members.
//! Instead, a group's state is its last **snapshot** plus a **journal** of what happened since
//! (a write-ahead log in all but name):
//!
//! - [`MlsEngine::encrypt`] adds a row *sent* (one byte: "this member's ratchet moved on by one
//!   generation"), and processing an application message ([`MlsEngine::process`],
//!   [`MlsEngine::process_many`]) adds a row *received* holding the message. The [`Changes`] of
//!   such an operation carry that row and no snapshot: O(message), not O(group).
//! - Processing another member's commit or proposal adds a row *handshake* holding it (a few
//!   KB at most); applying or dropping this member's pending commit ([`MlsEngine::apply_pending`],
//!   [`MlsEngine::discard_pending`], or its commit coming back from the log) adds a one-byte row.
//! - Loading ([`MlsEngine::load_with_rng`], and the reload after a failed operation) reads the
//!   snapshot and **replays** the journal in order: a *sent* row encrypts a throw-away message
//!   (the ratchet moves exactly one generation, as it did; the ciphertext is dropped), a
//!   *received* or *handshake* row processes its message again, the others apply or drop the
//!   pending commit the snapshot holds (deterministic: no randomness, no clock). The replayed
//!   group is the group as it was: the same epoch, epoch authenticator and tree, the same next
//!   generation for each sender (tests compare the snapshots byte for byte).
//! - A **checkpoint** writes the snapshot and empties the journal, in the same [`Changes`]. It
//!   happens on every operation that draws randomness that matters (creating or joining a group,
//!   making a commit, proposing to leave), when an operation would make the journal reach one of
//!   its bounds ([`DEFAULT_JOURNAL_BOUND`] rows, [`MlsEngine::with_journal_bound`];
//!   [`DEFAULT_HANDSHAKE_BOUND`] handshake rows, [`MlsEngine::with_handshake_bound`]), and when
//!   the caller asks ([`MlsEngine::checkpoint`]). A load replays fewer than `bound` rows per
//!   group: an application row costs about 0.08 ms, a handshake row about what processing it
//!   cost (O(group size), tens of ms at 10,000 members; `grove-bench mls`). Groups load lazily:
//!   [`MlsEngine::load_with_rng`] only checks the rows' structure, and each group is decoded and
//!   replayed when first used, so a process that touches one room pays for that room only.
//!
//! **Keys are never reused.** A replayed *sent* row draws the key of a generation the original
//! message used; the next real message uses the next generation, exactly as without a restart.
//! Because the *sent* row is in the same transaction as whatever the caller does before sending
//! (the rule "persist before you send"), a message that left the device always has its row: a
//! crash between `encrypt` and the transaction loses the row *and* the unsent message, and the
//! next message reuses the generation of a ciphertext nobody saw (tests check both).
//!
//! **Forward secrecy of the stored state is per checkpoint, not per message or epoch.** Without
//! the journal, the stored snapshot never held the key of a message already decrypted (mls-rs
//! deletes each key after use) nor the secrets of an epoch older than the retained ones. Now,
//! until the next checkpoint, the stored snapshot still holds the ratchet secrets from which the
//! keys of every journaled message derive, and the journal rows hold those messages'
//! ciphertexts: someone who steals the state file can read the (fewer than `bound`) messages of
//! each group since its last checkpoint, in up to [`DEFAULT_HANDSHAKE_BOUND`] − 1 epochs, and
//! forge nothing (signature keys are not in the journal). grove-client keeps the plaintext of
//! every message in its history table anyway, so the exposure that is new is of messages deleted
//! from that history since the last checkpoint; a caller that deletes history should call
//! [`MlsEngine::checkpoint`]. This member's own commits always checkpoint (they hold fresh path
//! secrets), so post-compromise security is unchanged: a copy of the state taken before this
//! member's update reads nothing after it. Smaller bounds shorten the exposure at the cost of
//! more snapshot writes.
//!
//! # Commits
//!
//! One commit per epoch is accepted by the room's hub ([`crate::mls::hub`]). A `commit_*` call
//! makes a *pending* commit, whose state is part of the returned [`Changes`]. The caller posts
//! [`PendingCommit::commit`] (with its Welcome) and then:
//!
//! - accepted: [`MlsEngine::apply_pending`]; when the commit later comes back from the log,
//!   [`MlsEngine::process`] reports [`Incoming::Own`];
//! - refused for a definite reason (`wrong_epoch`, invalid): [`MlsEngine::discard_pending`],
//!   process the log, and make the change again;
//! - unknown outcome (timeout, crash): do nothing, process the log. If the log has our commit,
//!   [`MlsEngine::process`] recognises it (by hash) and applies the pending commit; if it has
//!   another member's commit for that epoch, mls-rs drops our pending commit while applying it.
//!
//! Every commit also carries, by reference, the proposals received in its epoch (for instance a
//! member's leave proposal): mls-rs always includes them.
//!
//! # Own messages
//!
//! The log echoes a member's own messages. [`MlsEngine::process`] reports them as
//! [`Incoming::Own`] without changing anything: a PublicMessage commit or proposal whose sender is
//! this member's leaf and whose epoch is at or before the current one (except a commit matching
//! the pending commit, which is applied), and a PrivateMessage that mls-rs decrypts to this
//! member's leaf. The PublicMessage check reads the unauthenticated sender field; a forgery can
//! at worst make this member skip a message nobody else could have sent validly, which the
//! server could do anyway by dropping it.
//!
//! # Prior epochs
//!
//! A group keeps the records of its [`EPOCH_RETENTION`] previous epochs, so an application
//! message made just before a commit and delivered after it still decrypts. mls-rs refuses such
//! a message if its sender has since left or been removed (the sender's leaf no longer holds the
//! same key). Decrypting one updates that epoch's record (its ratchet moves on). mls-rs trims
//! older records only when it writes the group (at a checkpoint); the engine refuses messages
//! of epochs older than the retained ones itself ([`EngineError::EpochUnavailable`]), so the
//! answer does not depend on when the last checkpoint was.
//!
//! # Resync
//!
//! A member who cannot process a commit the room accepted rejoins by an external commit that
//! replaces its own leaf ([`crate::mls::resync`]): [`MlsEngine::resync_key`],
//! [`MlsEngine::resync_group_info`], [`MlsEngine::prepare_resync`] (the group is kept as it was
//! until [`MlsEngine::apply_resync`]; [`MlsEngine::discard_resync`] if the server refused). The
//! new group exists only in memory between the two: a crash there loses it (the member stays
//! where it was, and the room holds a leaf of it that nobody can use).
//!
//! # Link joins
//!
//! A holder of a room's invite link joins by an external commit that adds its own leaf
//! ([`crate::mls::links`]): [`MlsEngine::join_by_link`] makes it from the room's GroupInfo; the
//! new group waits in memory like a resync's, for [`MlsEngine::apply_resync`] (the server took
//! the commit) or [`MlsEngine::discard_resync`].
//!
//! # Removal
//!
//! When a commit removes this member, [`Incoming::Commit::removed_me`] is set, the group's rows
//! are deleted in the returned [`Changes`] (snapshot and every epoch record: forward secrecy),
//! and the group is gone: further operations on it return [`EngineError::NotAMember`] until the
//! engine is rebuilt, after which they return [`EngineError::NoSuchGroup`].
//!
//! # KeyPackages
//!
//! One-time KeyPackages' secrets are deleted when a Welcome uses them. A last-resort KeyPackage
//! carries the MLS last-resort extension (mls-rs feature `last_resort_key_package_ext`), and
//! mls-rs never deletes its secrets: several inviters may use it. Retire an old one with
//! [`MlsEngine::forget_key_package`].
//!
//! # Clock and randomness
//!
//! This module never reads the clock or the OS RNG itself.
//!
//! - **Randomness is injected.** An engine built with [`MlsEngine::with_rng`] or
//!   [`MlsEngine::load_with_rng`] draws every random byte from the RNG passed in, through
//!   [`GroveCryptoProvider`]: KeyPackage init and leaf HPKE keys, the random group id and initial
//!   epoch secret of a new group, fresh path secrets and leaf keys of a commit with an update
//!   path, the ephemeral keys of HPKE encryptions (Welcome secrets, update paths), and the 4-byte
//!   reuse guard of every PrivateMessage ([`MlsEngine::encrypt`]). Caveat: with several
//!   *by-reference* proposals cached, mls-rs orders them in a commit by iterating a std
//!   `HashMap`, whose hash keys std seeds per process, so such commits may list them in a
//!   different order from run to run.
//! - **The clock is injected if the caller asks**: [`MlsEngine::with_clock`] (Unix seconds).
//!   The engine needs the time in exactly three places, and passes `MlsTime::from(clock())` to
//!   mls-rs in each (one reading per operation):
//!   - generating KeyPackages ([`MlsEngine::key_packages`]; `generate_key_package_message(..,
//!     Some(t))`): the KeyPackage's lifetime is `t .. t + 365 days` (mls-rs' default,
//!     `client_builder.rs`, `lifetime()`);
//!   - creating a group ([`MlsEngine::create_group`]; `create_group(.., Some(t))`, i.e.
//!     `GroupBuilder::with_now_time`): the creator's leaf lifetime, likewise;
//!   - building any commit (`commit_*`; `CommitBuilder::commit_time(t)`, self-updates and
//!     commits of pending proposals included): the time against which mls-rs checks the
//!     lifetimes of KeyPackages being added, so a KeyPackage expired (or not yet valid) at `t`
//!     is refused with [`EngineError::Rejected`]. The time is not written into the commit.
//!
//!   mls-rs still calls `MlsTime::now()` in those functions even when given a time, but then
//!   discards the reading: the output depends only on the injected time. **Without
//!   `with_clock`** the engine passes no time and mls-rs uses its own reading of
//!   `SystemTime::now()` at those three places, so KeyPackages and a new group's GroupInfo and
//!   tree depend on the second they were made in. Callers that want the engine's output to
//!   depend only on its inputs must inject a clock; grove-client does.
//! - **Never timed:** processing incoming messages and joining. The engine calls mls-rs'
//!   `process_incoming_message` and `join_group(.., None)`, which read no clock and skip the
//!   lifetime checks of the leaves they receive (KeyPackages added by others' commits, the
//!   joined tree's leaves). This is deliberate: a receiver cannot refuse a commit the room's
//!   hub accepted without falling out of the group, and members' clocks differ, so checking
//!   received lifetimes against the local clock (`process_incoming_message_with_time`, or a
//!   time passed to `join_group`, which would check every KeyPackage-sourced leaf of the tree,
//!   including members who have not updated for a year) could split the group. Lifetimes are
//!   checked once, by the committer, against its clock.
//!
//! With the same identity, the same RNG seed, the same injected clock readings and the same
//! sequence of operations, two engines produce the same KeyPackages, group ids, GroupInfos,
//! trees, commits, Welcomes and messages (tests check this), subject to caveat (1) above.
//!
//! # Performance
//!
//! mls-rs' `write_to_storage` serialises the whole group (ratchet tree, secret tree, ...) into one
//! snapshot, so every checkpoint costs O(group size) bytes and time; each prior-epoch record
//! also holds every member's signature key. Messages and other members' commits write only a
//! journal row (above); one in `bound` of them pays for a checkpoint. This member's own commits
//! write the whole group (with the pending commit, which holds a second copy of the tree). To
//! sync a page of the log, use [`MlsEngine::process_many`], which checks the bounds once per
//! page.

mod changes;
mod error;
mod fault;
mod groups;
mod journal;
mod links;
mod outcome;
mod process;
mod resync;
mod store;

use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Mutex, PoisonError};

use mls_rs::client_builder::{
    BaseConfig, WithCryptoProvider, WithGroupStateStorage, WithIdentityProvider, WithKeyPackageRepo, WithMlsRules,
};
use mls_rs::error::MlsError;
use mls_rs::extension::recommended::LastResortKeyPackageExt;
use mls_rs::group::proposal::Proposal;
use mls_rs::group::{CommitBuilder, CommitOutput, ExportedTree};
use mls_rs::mls_rs_codec::MlsDecode;
use mls_rs::mls_rules::{CommitOptions, DefaultMlsRules};
use mls_rs::time::MlsTime;
use mls_rs::{Client, CryptoProvider, ExtensionList, Group, MlsMessage, WireFormat};
use mls_rs_core::key_package::KeyPackageData;
use rand_core::{CryptoRng, RngCore};

use crate::identity::{Identity, UserId};
use crate::mls::crypto::{GroveCryptoProvider, MacTap};
use crate::mls::identity::{signing_identity, user_of, GroveIdentityProvider};
use crate::mls::policy::{self, PolicyRules};
use crate::mls::CIPHER_SUITE;
use crate::policy::Edit;
use grove_wire::policy::RoomPolicy;

pub use changes::{
    Changes, EpochWrite, GroupWrite, JournalRow, KeyPackageWrite, SnapshotWrite, StoredEpoch, StoredGroup,
    StoredKeyPackage, StoredState,
};
pub use error::{CorruptState, EngineError, GroupLoadError};
pub use groups::{GroupId, ParseGroupIdError};
pub use outcome::{Applied, Incoming, JoinInfo, PendingCommit, PublicGroupState};
pub use store::EPOCH_RETENTION;

use crate::mls::error::{Cause, Expected, Internal, Malformed};
use error::{internal, local, rejected};
use groups::{load_checked, load_group, record, Bounds, Groups};
use process::summarize;
use store::RecordingStore;

/// The default journal bound ([`MlsEngine::with_journal_bound`]): a group's journal holds at most
/// this many rows minus one; the operation that would add the 256th writes a snapshot instead.
pub const DEFAULT_JOURNAL_BOUND: usize = 256;

/// The default handshake bound ([`MlsEngine::with_handshake_bound`]): a group's journal holds
/// at most this many handshakes minus one; the one that would be the 16th writes a snapshot.
pub const DEFAULT_HANDSHAKE_BOUND: usize = 16;

type EngineConfig = WithCryptoProvider<
    GroveCryptoProvider,
    WithMlsRules<
        PolicyRules,
        WithIdentityProvider<
            GroveIdentityProvider,
            WithGroupStateStorage<RecordingStore, WithKeyPackageRepo<RecordingStore, BaseConfig>>,
        >,
    >,
>;

type EngineGroup = Group<EngineConfig>;

/// One-time KeyPackages and maybe a last-resort one (`MlsMessage` bytes).
type OneTimeAndLastResort = (Vec<Vec<u8>>, Option<Vec<u8>>);

/// The lifetime mls-rs gives KeyPackages and a new group's leaf (its default, which the engine
/// keeps): 365 days, in seconds.
const LEAF_LIFETIME_SECS: u64 = 365 * 24 * 3600;

/// The latest time the engine passes to mls-rs: later clock readings are clamped to it, so that
/// mls-rs' `now + lifetime` (unchecked `u64` addition) cannot overflow.
const MAX_TIME: u64 = u64::MAX - LEAF_LIFETIME_SECS;

/// An injected clock (Unix seconds). Behind a mutex only so that the engine stays `Sync` without
/// asking the caller's closure to be.
struct Clock(Mutex<Box<dyn Fn() -> u64 + Send>>);

impl Clock {
    fn now(&self) -> MlsTime {
        // A poisoned lock only means an earlier call of the closure panicked; the closure itself
        // holds no state of ours.
        let f = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        MlsTime::from(f().min(MAX_TIME))
    }
}

fn encode(m: &MlsMessage) -> Result<Vec<u8>, EngineError> {
    m.to_bytes().map_err(internal("encoding a message"))
}

fn parse(bytes: &[u8]) -> Result<MlsMessage, EngineError> {
    MlsMessage::from_bytes(bytes).map_err(|e| EngineError::Malformed(Malformed::Message(Cause::new(e))))
}

fn rules() -> DefaultMlsRules {
    // Trees travel out of band (the room's server serves them): no ratchet-tree extension in
    // Welcome or GroupInfo. Handshake messages stay PublicMessage (the default) so the hub can
    // validate them.
    DefaultMlsRules::new().with_commit_options(CommitOptions::new().with_ratchet_tree_extension(false))
}

fn build_client(identity: &Identity, store: &RecordingStore, crypto: GroveCryptoProvider) -> Client<EngineConfig> {
    let (si, sk) = signing_identity(identity);
    Client::builder()
        .extension_type(policy::extension_type())
        .key_package_repo(store.clone())
        .group_state_storage(store.clone())
        .identity_provider(GroveIdentityProvider)
        .mls_rules(PolicyRules::new(rules()))
        .crypto_provider(crypto)
        .signing_identity(si, sk, CIPHER_SUITE)
        .build()
}

fn members_of(group: &EngineGroup) -> Vec<UserId> {
    // Every leaf passed GroveIdentityProvider when it entered the tree.
    group.roster().members_iter().filter_map(|m| user_of(&m.signing_identity).ok()).collect()
}

fn user_at(group: &EngineGroup, index: u32) -> Result<UserId, EngineError> {
    let member =
        group.member_at_index(index).ok_or_else(|| EngineError::bug("mls-rs reported a sender at a blank leaf"))?;
    user_of(&member.signing_identity)
        .map_err(|e| EngineError::Internal(Internal::caused("member leaf with a bad credential", e)))
}

// ---------------------------------------------------------------------------------------------
// The engine
// ---------------------------------------------------------------------------------------------

/// One user's MLS state: groups, KeyPackage secrets. See the [module docs](self).
pub struct MlsEngine {
    user: UserId,
    client: Client<EngineConfig>,
    store: RecordingStore,
    groups: Groups,
    /// Groups this member was removed from (or left) since the engine was built.
    departed: BTreeSet<GroupId>,
    /// `None`: mls-rs reads the system clock itself.
    clock: Option<Clock>,
    /// When a group's journal is checkpointed.
    bounds: Bounds,
    /// The crypto provider's MAC tap (see [`MlsEngine::reveal_membership_key`]).
    tap: MacTap,
    /// Resyncs made and posted, not yet answered (see [`MlsEngine::prepare_resync`]).
    resyncing: std::collections::HashMap<GroupId, EngineGroup>,
    /// The resync keys of the epochs that other members' commits took the group out of, noted
    /// as each commit was processed (see [`MlsEngine::take_left_resync_keys`]).
    left_keys: resync::LeftKeys,
}

impl fmt::Debug for MlsEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MlsEngine")
            .field("user", &self.user)
            .field("groups", &self.groups.keys().collect::<Vec<_>>())
            .field("departed", &self.departed)
            .field("clock", &if self.clock.is_some() { "injected" } else { "system (read by mls-rs)" })
            .field("bounds", &self.bounds)
            .finish_non_exhaustive()
    }
}

impl MlsEngine {
    /// A fresh engine for `identity`, with no groups and no KeyPackages, drawing all its
    /// randomness from `rng` (see the [module docs](self#clock-and-randomness)). `rng` must be
    /// a cryptographically secure RNG, seeded by the caller (from the platform's entropy source
    /// in production, from a fixed seed in tests).
    ///
    /// Never give two engines, or an engine rebuilt after a restart, an RNG in the same state:
    /// they would draw the same "fresh" secrets, leaf keys and reuse guards.
    pub fn with_rng(identity: Identity, rng: impl RngCore + CryptoRng + Send + 'static) -> MlsEngine {
        MlsEngine::fresh(identity, GroveCryptoProvider::new(rng))
    }

    /// Rebuilds an engine from every row the caller persisted, drawing all its randomness from
    /// `rng` from now on (as [`MlsEngine::with_rng`]). Seed `rng` afresh: replaying the RNG of
    /// the engine that wrote the state would repeat the secrets it drew.
    ///
    /// Each group is loaded (its snapshot decoded, its journal replayed) when it is first used,
    /// not here: starting costs nothing per group, and using one group never pays for another's
    /// replay. Errors with [`EngineError::CorruptState`] if a group or one of its epochs appears
    /// twice, a group's journal is not numbered 0, 1, 2, …, or a KeyPackage does not decode. A
    /// group whose rows do not load (a garbled snapshot, the state of another user or group, a
    /// journal that does not replay) answers [`EngineError::CorruptState`] whenever it is used;
    /// the other groups work.
    pub fn load_with_rng(
        identity: Identity,
        state: StoredState,
        rng: impl RngCore + CryptoRng + Send + 'static,
    ) -> Result<MlsEngine, EngineError> {
        MlsEngine::restore(identity, state, GroveCryptoProvider::new(rng))
    }

    fn fresh(identity: Identity, crypto: GroveCryptoProvider) -> MlsEngine {
        let store = RecordingStore::default();
        let tap = crypto.tap();
        MlsEngine {
            user: identity.user_id(),
            tap,
            client: build_client(&identity, &store, crypto),
            store,
            groups: Groups::default(),
            departed: BTreeSet::new(),
            clock: None,
            bounds: Bounds { rows: DEFAULT_JOURNAL_BOUND, handshakes: DEFAULT_HANDSHAKE_BOUND },
            resyncing: Default::default(),
            left_keys: Default::default(),
        }
    }

    fn restore(identity: Identity, state: StoredState, crypto: GroveCryptoProvider) -> Result<MlsEngine, EngineError> {
        let user = identity.user_id();
        let mut ids = BTreeSet::new();
        for g in &state.groups {
            if !ids.insert(g.group_id.clone()) {
                return Err(EngineError::CorruptState(CorruptState::GroupTwice(g.group_id.clone())));
            }
            let mut epochs = BTreeSet::new();
            if !g.epochs.iter().all(|e| epochs.insert(e.epoch)) {
                return Err(EngineError::CorruptState(CorruptState::EpochTwice(g.group_id.clone())));
            }
            let mut seqs: Vec<u64> = g.journal.iter().map(|r| r.seq).collect();
            seqs.sort_unstable();
            if seqs.iter().enumerate().any(|(i, seq)| *seq != i as u64) {
                return Err(EngineError::CorruptState(CorruptState::JournalNumbering(g.group_id.clone())));
            }
        }
        let mut kp_ids = BTreeSet::new();
        for kp in &state.key_packages {
            if !kp_ids.insert(kp.id.clone()) {
                return Err(EngineError::CorruptState(CorruptState::KeyPackageTwice));
            }
            KeyPackageData::mls_decode_exhaustive(&kp.data)
                .map_err(|e| EngineError::CorruptState(CorruptState::KeyPackage(Cause::new(e))))?;
        }

        let store = RecordingStore::from_state(state);
        let tap = crypto.tap();
        let client = build_client(&identity, &store, crypto);
        // Each group is loaded on first use (see `Groups`).
        let mut groups = Groups::default();
        for id in ids {
            groups.insert_stored(id);
        }
        Ok(MlsEngine {
            user,
            client,
            store,
            groups,
            departed: BTreeSet::new(),
            clock: None,
            bounds: Bounds { rows: DEFAULT_JOURNAL_BOUND, handshakes: DEFAULT_HANDSHAKE_BOUND },
            tap,
            resyncing: Default::default(),
            left_keys: Default::default(),
        })
    }

    /// Sets the journal bound (default [`DEFAULT_JOURNAL_BOUND`]; values below 1 count as 1): an
    /// operation that would make a group's journal this long writes a snapshot (a checkpoint)
    /// instead. 1 writes a snapshot after every operation (no journal at all). See the
    /// [module docs](self#the-journal) for what the bound trades: load time and forward
    /// secrecy of the stored state against the cost of writing the whole group.
    pub fn with_journal_bound(mut self, bound: usize) -> Self {
        self.bounds.rows = bound.max(1);
        self
    }

    /// Sets the handshake bound (default [`DEFAULT_HANDSHAKE_BOUND`]; values below 1 count as
    /// 1): an operation that would put this many handshakes (commits processed or applied,
    /// proposals processed, pending commits dropped) in a group's journal writes a snapshot
    /// instead. Replaying a commit costs about as much as processing it did (O(group size): tens
    /// of ms at 10,000 members), so this bounds what a load replays; 1 writes a snapshot after
    /// every handshake, as before the journal held handshakes. See the
    /// [module docs](self#the-journal).
    pub fn with_handshake_bound(mut self, bound: usize) -> Self {
        self.bounds.handshakes = bound.max(1);
        self
    }

    /// Makes the engine take the current time from `clock` (Unix seconds) instead of letting
    /// mls-rs read the system clock: for every KeyPackage it makes (its lifetime starts at
    /// `clock()`), for a group it creates (the creator's leaf lifetime, likewise), and for every
    /// commit it builds (the time against which the lifetimes of KeyPackages being added are
    /// checked). `clock` is called once per such operation. Readings above `u64::MAX` minus one
    /// year are clamped (mls-rs adds a year to them).
    ///
    /// Without it the engine passes no time and mls-rs reads `SystemTime::now()` at those
    /// points, so KeyPackages and new groups depend on the second they were made in. Callers
    /// that want the engine's output to depend only on its inputs must inject a clock (and an
    /// RNG, [`MlsEngine::with_rng`]); grove-client does. See the
    /// [module docs](self#clock-and-randomness).
    ///
    /// Call it right after [`MlsEngine::with_rng`] or [`MlsEngine::load_with_rng`] (the clock
    /// is not part of the stored state: pass it again after a restart).
    pub fn with_clock(mut self, clock: impl Fn() -> u64 + Send + 'static) -> Self {
        self.clock = Some(Clock(Mutex::new(Box::new(clock))));
        self
    }

    /// The injected time, or `None` (mls-rs then reads the system clock).
    fn now(&self) -> Option<MlsTime> {
        self.clock.as_ref().map(Clock::now)
    }

    /// This engine's user.
    pub fn user_id(&self) -> UserId {
        self.user
    }

    /// `n` one-time KeyPackages (`MlsMessage` bytes) and, if `last_resort`, one last-resort
    /// KeyPackage whose secrets are kept when a Welcome uses it, so that several inviters may
    /// use it (the key directory hands it out when the one-time ones run out, never consuming
    /// it). The secrets are in the returned [`Changes`]: persist them before publishing.
    #[allow(clippy::type_complexity)]
    pub fn key_packages(
        &mut self,
        n: usize,
        last_resort: bool,
    ) -> Result<(Vec<Vec<u8>>, Option<Vec<u8>>, Changes), EngineError> {
        match self.make_key_packages(n, last_resort) {
            Ok((one_time, last)) => Ok((one_time, last, self.store.drain())),
            Err(e) => {
                // Secrets of KeyPackages made but never returned: drop them again.
                self.store.rollback();
                Err(e)
            }
        }
    }

    fn make_key_packages(&mut self, n: usize, last_resort: bool) -> Result<OneTimeAndLastResort, EngineError> {
        // One reading for the whole batch: all its KeyPackages get the same lifetime.
        let now = self.now();
        let mut one_time = Vec::with_capacity(n);
        for _ in 0..n {
            let kp = self
                .client
                .generate_key_package_message(ExtensionList::default(), ExtensionList::default(), now)
                .map_err(internal("generating a KeyPackage"))?;
            one_time.push(encode(&kp)?);
        }
        let last = if last_resort {
            let mut ext = ExtensionList::default();
            ext.set_from(LastResortKeyPackageExt)
                .map_err(|e| EngineError::Internal(Internal::caused("last-resort extension", e)))?;
            let kp = self
                .client
                .generate_key_package_message(ext, ExtensionList::default(), now)
                .map_err(internal("generating a KeyPackage"))?;
            Some(encode(&kp)?)
        } else {
            None
        };
        Ok((one_time, last))
    }

    /// Deletes the secrets of a KeyPackage (`MlsMessage` bytes) this engine made, e.g. an old
    /// last-resort KeyPackage once a new one is published and the old one had time to be used.
    /// Unknown KeyPackages are ignored.
    pub fn forget_key_package(&mut self, key_package: &[u8]) -> Result<Changes, EngineError> {
        let msg = parse(key_package)?;
        // Hashing only: no randomness needed.
        let cs = GroveCryptoProvider::verify_only()
            .cipher_suite_provider(CIPHER_SUITE)
            .ok_or_else(|| EngineError::bug("ciphersuite not supported by the provider"))?;
        let reference = msg
            .key_package_reference(&cs)
            .map_err(rejected)?
            .ok_or_else(|| EngineError::Malformed(Malformed::Expected(Expected::KeyPackage)))?;
        let id: &[u8] = &reference;
        if self.store.has_key_package(id) {
            self.store.delete_key_package(id);
        }
        Ok(self.store.drain())
    }

    /// Creates a group with this user alone (epoch 0). Returns its id, what the room's server
    /// needs to create the room, and the changes.
    pub fn create_group(&mut self) -> Result<(GroupId, PublicGroupState, Changes), EngineError> {
        let mut group = self
            .client
            .create_group(
                policy::new_group_extensions(self.user)
                    .map_err(|e| EngineError::Internal(Internal::caused("the policy extension", e)))?,
                ExtensionList::default(),
                self.now(),
            )
            .map_err(internal("creating a group"))?;
        let id = GroupId::new(group.group_id().to_vec());
        if self.groups.contains_key(&id) || self.store.has_group(id.as_bytes()) {
            return Err(EngineError::bug("a random group id collides"));
        }
        let group_info = encode(&group.group_info_message(false).map_err(internal("signing the GroupInfo"))?)?;
        let ratchet_tree = group.export_tree().to_bytes().map_err(internal("exporting the tree"))?;
        if let Err(e) = group.write_to_storage() {
            self.store.rollback();
            return Err(EngineError::Internal(Internal::caused("writing the group", e)));
        }
        self.departed.remove(&id);
        self.groups.insert(id.clone(), group);
        Ok((id, PublicGroupState { group_info, ratchet_tree }, self.store.drain()))
    }

    /// Joins a group from a Welcome (`MlsMessage` bytes) and the ratchet tree fetched from the
    /// room's server. mls-rs checks the tree against the tree hash in the Welcome's (signed and
    /// confirmed) GroupInfo, so a wrong tree is refused ([`EngineError::Rejected`]).
    ///
    /// A one-time KeyPackage's secrets are deleted (in the returned [`Changes`]); a last-resort
    /// KeyPackage's are kept. Joining a group this member departed from is allowed (old rows of
    /// it are deleted); joining one it is in is [`EngineError::GroupExists`]. A Welcome seen
    /// before (a redelivery) is [`EngineError::NoMatchingKeyPackage`] if its KeyPackage was a
    /// one-time one (the secrets are gone, so the group cannot even be identified), else
    /// [`EngineError::GroupExists`].
    pub fn join(&mut self, welcome: &[u8], ratchet_tree: &[u8]) -> Result<(GroupId, JoinInfo, Changes), EngineError> {
        let welcome = parse(welcome)?;
        if welcome.wire_format() != WireFormat::Welcome {
            return Err(EngineError::Malformed(Malformed::Expected(Expected::Welcome)));
        }
        let tree = ExportedTree::mls_decode_exhaustive(ratchet_tree)
            .map_err(|e| EngineError::Malformed(Malformed::RatchetTree(Cause::new(e))))?;
        let (mut group, _) = self.client.join_group(Some(tree), &welcome, None).map_err(|e| match e {
            MlsError::WelcomeKeyPackageNotFound => EngineError::NoMatchingKeyPackage,
            other => rejected(other),
        })?;
        let id = GroupId::new(group.group_id().to_vec());
        if self.groups.contains_key(&id) {
            return Err(EngineError::GroupExists(id));
        }
        // Rows of an earlier membership (prior epochs in particular) must not mix with this one.
        self.store.purge_group(id.as_bytes());
        if let Err(e) = group.write_to_storage() {
            self.store.rollback();
            return Err(EngineError::Internal(Internal::caused("writing the group", e)));
        }
        let info = JoinInfo { epoch: group.current_epoch(), members: members_of(&group) };
        self.departed.remove(&id);
        self.groups.insert(id.clone(), group);
        Ok((id, info, self.store.drain()))
    }

    /// The groups this member is in.
    pub fn group_ids(&self) -> Vec<GroupId> {
        self.groups.keys().cloned().collect()
    }

    /// The group, loaded from its rows if this is its first use since the engine was rebuilt.
    fn group(&self, g: &GroupId) -> Result<&EngineGroup, EngineError> {
        match self.groups.0.get(g) {
            Some(slot) => slot
                .get_or_init(|| load_checked(&self.client, &self.store, &self.user, g))
                .as_ref()
                .map_err(|e| EngineError::CorruptState(CorruptState::Group { group: g.clone(), reason: e.clone() })),
            None if self.departed.contains(g) => Err(EngineError::NotAMember(g.clone())),
            None => Err(EngineError::NoSuchGroup(g.clone())),
        }
    }

    /// Runs `f` on the group; on error, reloads the group from the last written state, so that
    /// a failure changes nothing (mls-rs may have mutated the group in memory).
    fn with_group<T>(
        &mut self,
        g: &GroupId,
        f: impl FnOnce(&mut EngineGroup) -> Result<T, EngineError>,
    ) -> Result<T, EngineError> {
        self.group(g)?;
        let Some(group) = self.groups.get_mut(g) else {
            return Err(EngineError::NoSuchGroup(g.clone()));
        };
        let result = f(group);
        if result.is_err() {
            self.reload_after_error(g)?;
        }
        result
    }

    /// After a failed operation: undoes everything written since the last [`Changes`] were
    /// handed out, and rebuilds the group from the last written state (its snapshot with its
    /// journal replayed), so that nothing the operation did reaches the caller or the store
    /// (mls-rs may have mutated the group in memory before it noticed the problem). If the
    /// rollback brought back a group the operation had dropped (a commit removing this member,
    /// processed before the failure), the group is live again.
    fn reload_after_error(&mut self, g: &GroupId) -> Result<(), EngineError> {
        self.store.rollback();
        if !self.store.has_group(g.as_bytes()) {
            // Nothing stored: the group was never written (nothing to rebuild).
            self.groups.remove(g);
            return Ok(());
        }
        self.reload(g)?;
        self.departed.remove(g);
        Ok(())
    }

    /// Rebuilds the group from what the store holds now (its snapshot with its journal
    /// replayed), replacing the copy in memory.
    fn reload(&mut self, g: &GroupId) -> Result<(), EngineError> {
        match load_group(&self.client, &self.store, g) {
            Ok(fresh) => {
                self.groups.insert(g.clone(), fresh);
                Ok(())
            }
            Err(e) => {
                // Cannot happen: the store holds the last written state of every group.
                self.groups.remove(g);
                Err(EngineError::Internal(Internal::caused("reloading a group after an error", e)))
            }
        }
    }

    /// The group's current epoch.
    pub fn epoch(&self, g: &GroupId) -> Result<u64, EngineError> {
        Ok(self.group(g)?.current_epoch())
    }

    /// The group's members, in leaf order (this member included).
    pub fn members(&self, g: &GroupId) -> Result<Vec<UserId>, EngineError> {
        Ok(members_of(self.group(g)?))
    }

    /// The current epoch's authenticator (RFC 9420 §8.7): equal for all members in the same
    /// state; compare out of band to detect a split view.
    pub fn epoch_authenticator(&self, g: &GroupId) -> Result<Vec<u8>, EngineError> {
        let secret = self.group(g)?.epoch_authenticator().map_err(internal("epoch authenticator"))?;
        Ok(secret.as_bytes().to_vec())
    }

    /// Whether a commit of this member is pending in the group.
    pub fn has_pending_commit(&self, g: &GroupId) -> Result<bool, EngineError> {
        Ok(self.group(g)?.has_pending_commit())
    }

    /// Encrypts an application message (a PrivateMessage) in the current epoch. Returns it with
    /// the epoch. Persist the [`Changes`] before sending (see the [module docs](self)).
    ///
    /// The [`Changes`] hold one journal row ("sent one message"), or a checkpoint if the journal
    /// reached its bound: not the whole group (see the [module docs](self#the-journal)).
    pub fn encrypt(&mut self, g: &GroupId, plaintext: &[u8]) -> Result<(Vec<u8>, u64, Changes), EngineError> {
        let store = self.store.clone();
        let bounds = self.bounds;
        let (message, epoch) = self.with_group(g, |group| {
            let msg = group.encrypt_application_message(plaintext, Vec::new()).map_err(local("encrypting"))?;
            let bytes = encode(&msg)?;
            record(group, &store, g, journal::sent(), bounds)?;
            Ok((bytes, group.current_epoch()))
        })?;
        Ok((message, epoch, self.store.drain()))
    }

    /// Builds a pending commit with `build`, which gets a commit builder carrying the injected
    /// time, if any.
    fn commit_with(
        &mut self,
        g: &GroupId,
        build: impl FnOnce(CommitBuilder<'_, EngineConfig>) -> Result<CommitOutput, EngineError>,
    ) -> Result<(PendingCommit, Changes), EngineError> {
        let group = self.group(g)?;
        if group.has_pending_commit() {
            return Err(EngineError::PendingCommitExists);
        }
        let me = group.current_member_index();
        if group
            .get_cached_proposals()
            .iter()
            .any(|p| matches!(p.proposal(), Proposal::Remove(r) if r.to_remove() == me))
        {
            return Err(EngineError::LeaveProposed);
        }
        let now = self.now();
        let pending = self.with_group(g, |group| {
            let epoch = group.current_epoch();
            let builder = match now {
                Some(t) => group.commit_builder().commit_time(t),
                None => group.commit_builder(),
            };
            let out = build(builder)?;
            let commit = encode(&out.commit_message)?;
            let welcome = match out.welcome_messages.as_slice() {
                [] => None,
                [one] => Some(encode(one)?),
                _ => return Err(EngineError::bug("more than one Welcome")),
            };
            group.write_to_storage().map_err(internal("writing the group"))?;
            Ok(PendingCommit { commit, welcome, epoch })
        })?;
        Ok((pending, self.store.drain()))
    }

    /// Makes a pending commit adding the users of these KeyPackages (`MlsMessage` bytes), with
    /// one Welcome for all of them. Errors with [`EngineError::Rejected`] if a KeyPackage is
    /// invalid, expired, of an unsupported ciphersuite, or of a user already in the group.
    pub fn commit_add(
        &mut self,
        g: &GroupId,
        key_packages: &[Vec<u8>],
    ) -> Result<(PendingCommit, Changes), EngineError> {
        let kps = key_packages
            .iter()
            .map(|kp| {
                let m = parse(kp)?;
                if m.wire_format() != WireFormat::KeyPackage {
                    return Err(EngineError::Malformed(Malformed::Expected(Expected::KeyPackage)));
                }
                Ok(m)
            })
            .collect::<Result<Vec<_>, _>>()?;
        if kps.is_empty() {
            self.group(g)?;
            return Err(EngineError::NothingToCommit);
        }
        self.commit_with(g, |mut builder| {
            for kp in kps {
                builder = builder.add_member(kp).map_err(rejected)?;
            }
            builder.build().map_err(rejected)
        })
    }

    /// Makes a pending commit removing these users.
    pub fn commit_remove(&mut self, g: &GroupId, users: &[UserId]) -> Result<(PendingCommit, Changes), EngineError> {
        let group = self.group(g)?;
        let mut indexes = Vec::new();
        for user in users {
            if *user == self.user {
                return Err(EngineError::CannotRemoveSelf);
            }
            let index = group
                .roster()
                .members_iter()
                .find(|m| user_of(&m.signing_identity).ok().as_ref() == Some(user))
                .map(|m| m.index)
                .ok_or(EngineError::NotInGroup(*user))?;
            if !indexes.contains(&index) {
                indexes.push(index);
            }
        }
        if indexes.is_empty() {
            return Err(EngineError::NothingToCommit);
        }
        self.commit_with(g, |mut builder| {
            for index in indexes {
                builder = builder.remove_member(index).map_err(local("removing a member"))?;
            }
            builder.build().map_err(local("building a commit"))
        })
    }

    /// The room's policy (`None` for a group created before grove had policies).
    pub fn policy(&self, g: &GroupId) -> Result<Option<RoomPolicy>, EngineError> {
        policy::read(&self.group(g)?.context().extensions)
            .map_err(|e| EngineError::Internal(Internal::caused("the group's policy", e)))
    }

    /// Makes a pending commit that edits the room's policy (a ban of a member also removes
    /// it). Whether the edit is allowed is for the room's server to answer first, and for every
    /// member when it processes the commit ([`crate::mls::policy`]).
    pub fn commit_policy(&mut self, g: &GroupId, edit: Edit) -> Result<(PendingCommit, Changes), EngineError> {
        let group = self.group(g)?;
        let current = group.context().extensions.clone();
        let before = policy::read(&current)
            .map_err(|e| EngineError::Internal(Internal::caused("the group's policy", e)))?
            .ok_or(EngineError::NoPolicy)?;
        let remove = edit.removes().and_then(|user| {
            group.roster().members_iter().find(|m| user_of(&m.signing_identity).ok() == Some(user)).map(|m| m.index)
        });
        let list = policy::with_policy(&current, &edit.apply(&before));
        self.commit_with(g, |mut builder| {
            if let Some(index) = remove {
                builder = builder.remove_member(index).map_err(local("removing a member"))?;
            }
            builder = builder.set_group_context_ext(list).map_err(rejected)?;
            builder.build().map_err(rejected)
        })
    }

    /// Makes a pending self-update commit: a fresh leaf key and update path, so that a copy of
    /// this member's earlier state cannot follow the group (post-compromise security).
    pub fn commit_update(&mut self, g: &GroupId) -> Result<(PendingCommit, Changes), EngineError> {
        self.commit_with(g, |builder| {
            // No proposals by value: the same as mls-rs' `Group::commit(Vec::new())`.
            let out = builder.build().map_err(local("building a commit"))?;
            if !out.contains_update_path {
                return Err(EngineError::bug("a self-update commit without an update path"));
            }
            Ok(out)
        })
    }

    /// Makes a pending commit of the proposals received in this epoch (e.g. a member's leave),
    /// by reference. [`EngineError::NothingToCommit`] if there are none.
    pub fn commit_pending_proposals(&mut self, g: &GroupId) -> Result<(PendingCommit, Changes), EngineError> {
        let group = self.group(g)?;
        if !group.commit_required() {
            return Err(EngineError::NothingToCommit);
        }
        self.commit_with(g, |builder| builder.build().map_err(local("building a commit")))
    }

    /// Applies the pending commit, once the room's server accepted it.
    pub fn apply_pending(&mut self, g: &GroupId) -> Result<(Applied, Changes), EngineError> {
        if !self.group(g)?.has_pending_commit() {
            return Err(EngineError::NoPendingCommit);
        }
        let store = self.store.clone();
        let bounds = self.bounds;
        let applied = self.with_group(g, |group| {
            let desc = group.apply_pending_commit().map_err(internal("applying the pending commit"))?;
            let s = summarize(&desc)?;
            record(group, &store, g, journal::applied(), bounds)?;
            Ok(Applied { epoch: s.epoch, added: s.added, removed: s.removed })
        })?;
        Ok((applied, self.store.drain()))
    }

    /// Drops the pending commit (the server refused it). Nothing to do if there is none.
    pub fn discard_pending(&mut self, g: &GroupId) -> Result<Changes, EngineError> {
        if !self.group(g)?.has_pending_commit() {
            return Ok(Changes::default());
        }
        let store = self.store.clone();
        let bounds = self.bounds;
        self.with_group(g, |group| {
            group.clear_pending_commit();
            record(group, &store, g, journal::discarded(), bounds)
        })?;
        Ok(self.store.drain())
    }

    /// Proposes to remove this member (a PublicMessage proposal for the room's server); another
    /// member commits it ([`MlsEngine::commit_pending_proposals`]). Until then this member stays
    /// in the group, but cannot send application messages ([`EngineError::CommitRequired`]).
    pub fn propose_leave(&mut self, g: &GroupId) -> Result<(Vec<u8>, Changes), EngineError> {
        let proposal = self.with_group(g, |group| {
            let msg = group.propose_remove(group.current_member_index(), Vec::new()).map_err(local("proposing"))?;
            let bytes = encode(&msg)?;
            group.write_to_storage().map_err(internal("writing the group"))?;
            Ok(bytes)
        })?;
        Ok((proposal, self.store.drain()))
    }

    /// Deletes the group's local state (e.g. the user deleted the room). Returns the deletes.
    pub fn forget_group(&mut self, g: &GroupId) -> Result<Changes, EngineError> {
        if !self.groups.remove(g) && !self.departed.remove(g) {
            return Err(EngineError::NoSuchGroup(g.clone()));
        }
        self.departed.remove(g);
        if self.store.has_group(g.as_bytes()) {
            self.store.purge_group(g.as_bytes());
        }
        Ok(self.store.drain())
    }
    /// Every row as the caller's database should hold it now (the sum of every [`Changes`]
    /// returned so far), for tests and backups. It writes nothing: a group's state is its
    /// snapshot plus its journal, as [`MlsEngine::load_with_rng`] rebuilds it.
    pub fn export_state(&self) -> Result<StoredState, EngineError> {
        Ok(self.store.rows().sorted())
    }

    /// How many rows the group's journal holds (operations since its last snapshot).
    pub fn journal_len(&self, g: &GroupId) -> Result<usize, EngineError> {
        self.group(g)?;
        Ok(self.store.journal_len(g.as_bytes()))
    }

    /// Writes the group's snapshot now and empties its journal (a checkpoint), if the journal
    /// holds anything; otherwise there is nothing to write and the [`Changes`] are empty. Call it
    /// when the group is idle, to bound what a stolen state file reveals of messages already
    /// read (see the [module docs](self#the-journal)) and how much a load replays.
    pub fn checkpoint(&mut self, g: &GroupId) -> Result<Changes, EngineError> {
        if !self.groups.contains_key(g) {
            // NotAMember or NoSuchGroup.
            self.group(g)?;
        }
        // An empty journal: nothing to write, and no need to load a group not loaded yet.
        if self.store.journal_len(g.as_bytes()) == 0 {
            return Ok(Changes::default());
        }
        self.with_group(g, |group| group.write_to_storage().map_err(internal("writing the group")))?;
        Ok(self.store.drain())
    }
}

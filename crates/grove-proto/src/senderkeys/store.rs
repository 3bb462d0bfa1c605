//! A receiver's chains, keyed by (room, epoch, sender, chain id), routing messages by header.

use std::collections::BTreeMap;
use std::fmt;

use zeroize::Zeroizing;

use super::message::MessageHeader;
use super::receiver::{Decrypted, ReceiverChain};
#[cfg(doc)]
use super::sender::SenderChain;
use super::sender::SenderKeyDistribution;
use super::{ChainId, ReceiverLimits, SenderKeyError};
use crate::identity::UserId;

/// Names one sender chain, and is the header every chain type holds ([`SenderChain::chain`],
/// [`SenderKeyDistribution::chain`], [`ReceiverChain::chain`]) and every encoding of one starts
/// with: the key of a [`SenderKeyStore`] (and a natural primary key for the caller's table of
/// chain states).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChainRef {
    /// The room's name.
    pub room: String,
    /// The membership version.
    pub epoch: u64,
    /// The sending user.
    pub sender: UserId,
    /// The sender chain's id.
    pub chain_id: ChainId,
}

impl ChainRef {
    fn of_header(h: &MessageHeader) -> ChainRef {
        ChainRef { room: h.room.clone(), epoch: h.epoch, sender: h.sender, chain_id: h.chain_id }
    }

    /// The lowest possible key in `room` at `epoch`.
    fn lowest(room: &str, epoch: u64) -> ChainRef {
        ChainRef { room: room.to_owned(), epoch, sender: UserId([0; 32]), chain_id: ChainId([0; 16]) }
    }
}

/// One row for the caller to write: a chain's new state, or its deletion.
pub struct ChainWrite {
    /// Which chain.
    pub chain: ChainRef,
    /// `Some`: upsert this [`ReceiverChain::to_bytes`] state (secret, wiped on drop); `None`:
    /// delete the chain.
    pub state: Option<Zeroizing<Vec<u8>>>,
}

impl fmt::Debug for ChainWrite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChainWrite")
            .field("chain", &self.chain)
            .field("state_len", &self.state.as_ref().map(|s| s.len()))
            .finish()
    }
}

/// What an operation of a [`SenderKeyStore`] changed, for the caller to persist in one
/// transaction with whatever goes with it (the decrypted message, its cursor).
#[derive(Debug, Default)]
pub struct Changes {
    /// Rows to write, in order.
    pub writes: Vec<ChainWrite>,
}

impl Changes {
    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    /// Appends a later operation's changes (to write both in one transaction).
    pub fn merge(&mut self, later: Changes) {
        self.writes.extend(later.writes);
    }

    fn upsert(chain: &ReceiverChain) -> Changes {
        Changes { writes: vec![ChainWrite { chain: chain.chain().clone(), state: Some(chain.to_bytes()) }] }
    }
}

/// A receiver's chains of every room, epoch and sender.
///
/// In memory; every operation that changes it returns the [`Changes`] to persist, and
/// [`SenderKeyStore::load`] rebuilds it from the stored states. An operation that fails changes
/// nothing. If persisting the changes fails, rebuild the store from the database.
#[derive(Debug, Default)]
pub struct SenderKeyStore {
    chains: BTreeMap<ChainRef, ReceiverChain>,
    limits: ReceiverLimits,
}

impl SenderKeyStore {
    /// An empty store whose new chains get the default [`ReceiverLimits`].
    pub fn new() -> SenderKeyStore {
        SenderKeyStore::default()
    }

    /// An empty store whose new chains get `limits`.
    pub fn with_limits(limits: ReceiverLimits) -> SenderKeyStore {
        SenderKeyStore { chains: BTreeMap::new(), limits }
    }

    /// Rebuilds a store from every state the caller persisted ([`ChainWrite::state`]). New
    /// chains get `limits`; loaded ones keep theirs.
    pub fn load<I>(limits: ReceiverLimits, states: I) -> Result<SenderKeyStore, SenderKeyError>
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        let mut chains = BTreeMap::new();
        for s in states {
            let chain = ReceiverChain::from_bytes(s.as_ref())?;
            if chains.insert(chain.chain().clone(), chain).is_some() {
                return Err(SenderKeyError::CorruptState("two states for one chain"));
            }
        }
        Ok(SenderKeyStore { chains, limits })
    }

    /// Accepts a sender's distribution that arrived over the pairwise session of user `from`
    /// (the caller must also have checked that `from` is a member of the room at the
    /// distribution's epoch).
    ///
    /// - The distribution must name `from` as its sender ([`SenderKeyError::WrongSender`]).
    /// - A new chain is added.
    /// - A known chain id with the same keys (a re-send) changes nothing; with another signing
    ///   key, or a chain key that does not match ours, it is [`SenderKeyError::ChainIdReused`]
    ///   and the known chain stays as it was.
    pub fn add_distribution(&mut self, from: &UserId, dist: &SenderKeyDistribution) -> Result<Changes, SenderKeyError> {
        if dist.sender() != *from {
            return Err(SenderKeyError::WrongSender);
        }
        let key = dist.chain().clone();
        if let Some(known) = self.chains.get(&key) {
            known.check_same_keys(dist)?;
            return Ok(Changes::default());
        }
        let chain = ReceiverChain::with_limits(dist, self.limits);
        let changes = Changes::upsert(&chain);
        self.chains.insert(key, chain);
        Ok(changes)
    }

    /// Verifies and decrypts a wire message, routed by its header to its chain. On success the
    /// chain moves on and the returned [`Changes`] hold its new state; on failure nothing
    /// changed.
    ///
    /// No chain for the header: [`SenderKeyError::WrongRoom`] if the store has none in that
    /// room, else [`SenderKeyError::WrongEpoch`] if it has none at that epoch, else
    /// [`SenderKeyError::UnknownChain`].
    pub fn decrypt(&mut self, message: &[u8]) -> Result<(Decrypted, Changes), SenderKeyError> {
        let header = MessageHeader::parse(message)?;
        let key = ChainRef::of_header(&header);
        let Some(chain) = self.chains.get(&key) else {
            return Err(self.why_unknown(&header));
        };
        let (decrypted, next) = chain.decrypt(message)?;
        let changes = Changes::upsert(&next);
        self.chains.insert(key, next);
        Ok((decrypted, changes))
    }

    fn why_unknown(&self, h: &MessageHeader) -> SenderKeyError {
        let first_at = |epoch| self.chains.range(ChainRef::lowest(&h.room, epoch)..).next().map(|(k, _)| k);
        match first_at(0) {
            Some(k) if k.room == h.room => {}
            _ => return SenderKeyError::WrongRoom,
        }
        match first_at(h.epoch) {
            Some(k) if k.room == h.room && k.epoch == h.epoch => SenderKeyError::UnknownChain,
            _ => SenderKeyError::WrongEpoch { message_epoch: h.epoch },
        }
    }

    /// Drops every chain of `room` whose epoch is below `epoch`: their late messages are then
    /// [`SenderKeyError::WrongEpoch`].
    pub fn forget_before_epoch(&mut self, room: &str, epoch: u64) -> Changes {
        self.forget_where(|k| k.room == room && k.epoch < epoch)
    }

    /// Drops every chain of `room` (we left it).
    pub fn forget_room(&mut self, room: &str) -> Changes {
        self.forget_where(|k| k.room == room)
    }

    /// Drops one chain.
    pub fn forget_chain(&mut self, chain: &ChainRef) -> Changes {
        self.forget_where(|k| k == chain)
    }

    fn forget_where(&mut self, gone: impl Fn(&ChainRef) -> bool) -> Changes {
        let keys: Vec<ChainRef> = self.chains.keys().filter(|k| gone(k)).cloned().collect();
        let mut changes = Changes::default();
        for k in keys {
            self.chains.remove(&k);
            changes.writes.push(ChainWrite { chain: k, state: None });
        }
        changes
    }

    /// One chain, if known.
    pub fn chain(&self, chain: &ChainRef) -> Option<&ReceiverChain> {
        self.chains.get(chain)
    }

    /// Every known chain, in key order.
    pub fn chains(&self) -> impl Iterator<Item = (&ChainRef, &ReceiverChain)> {
        self.chains.iter()
    }

    /// How many chains the store holds.
    pub fn len(&self) -> usize {
        self.chains.len()
    }

    /// Whether the store holds no chain.
    pub fn is_empty(&self) -> bool {
        self.chains.is_empty()
    }
}

//! The sending side: [`SenderChain`] and the [`SenderKeyDistribution`] it hands to receivers.

use std::fmt;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use rand_core::CryptoRngCore;
use zeroize::Zeroizing;

use super::codec::{chain_len, corrupt, malformed, Kind, Reader, Writer, FRAMING_LEN};
use super::crypto::{ratchet, seal, Secret32};
use super::message::MessageHeader;
use super::{check_room, ChainId, ChainRef, RotationPolicy, SenderKeyError, SIGNATURE_LEN, TAG_LEN};
use crate::identity::UserId;

/// One member's sending chain in one room and epoch: chain key, signing key, position.
///
/// Holds secrets (wiped on drop); its [`Debug`] output shows none. Persist [`SenderChain::to_bytes`]
/// after every [`SenderChain::encrypt`], before the message leaves the device.
pub struct SenderChain {
    /// Room, epoch, sender, chain id.
    chain: ChainRef,
    /// The iteration of the next message, and of `chain_key`.
    pub(super) iteration: u32,
    /// `CK_iteration`.
    pub(super) chain_key: Secret32,
    /// Wiped on drop by `ed25519-dalek`.
    signing_key: SigningKey,
    created_at: u64,
}

impl SenderChain {
    /// A fresh chain for `sender` in `room` at membership version `epoch`, made at `now` (Unix
    /// seconds): random chain id, chain key and signing key pair, all drawn from `rng`.
    pub fn new(
        rng: &mut impl CryptoRngCore,
        room: &str,
        epoch: u64,
        sender: UserId,
        now: u64,
    ) -> Result<SenderChain, SenderKeyError> {
        check_room(room)?;
        let mut chain_id = [0u8; 16];
        rng.fill_bytes(&mut chain_id);
        let mut chain_key = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut chain_key[..]);
        let signing_key = SigningKey::generate(rng);
        Ok(SenderChain {
            chain: ChainRef { room: room.to_owned(), epoch, sender, chain_id: ChainId(chain_id) },
            iteration: 0,
            chain_key,
            signing_key,
            created_at: now,
        })
    }

    /// Encrypts and signs `plaintext` as the chain's next message, and advances the chain.
    /// Returns the wire message. Fails only with [`SenderKeyError::ChainExhausted`] (after
    /// `u32::MAX` messages; rotate long before) or an internal error, changing nothing.
    pub fn encrypt(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, SenderKeyError> {
        if self.iteration == u32::MAX {
            return Err(SenderKeyError::ChainExhausted);
        }
        let (message_key, next_chain_key) = ratchet(&self.chain_key)?;
        let header_len = MessageHeader::encoded_len(&self.chain.room);
        let mut w =
            MessageHeader::write(&self.chain, self.iteration, header_len + plaintext.len() + TAG_LEN + SIGNATURE_LEN);
        w.bytes(plaintext);
        let mut buf = w.finish();
        let (aad, body) = buf.split_at_mut(header_len);
        let tag = seal(&message_key, aad, body)?;
        buf.extend_from_slice(&tag);
        let signature = self.signing_key.sign(&buf);
        buf.extend_from_slice(&signature.to_bytes());
        // The buffer now holds only public bytes.
        let message = std::mem::take(&mut *buf);

        self.chain_key = next_chain_key;
        self.iteration += 1;
        Ok(message)
    }

    /// What receivers need to decrypt this chain's messages from the next one on: to be sent to
    /// each member over its pairwise session. Holds the current chain key (a secret).
    pub fn distribution(&self) -> SenderKeyDistribution {
        SenderKeyDistribution {
            chain: self.chain.clone(),
            iteration: self.iteration,
            chain_key: self.chain_key.clone(),
            signing_key: self.signing_key.verifying_key(),
        }
    }

    /// Whether the chain should be replaced by a fresh one under `policy` at `now` (Unix
    /// seconds): it is at least `max_age_secs` old, has sent `max_messages`, or is exhausted.
    /// A clock that went backwards (`now < created_at`) does not count as age.
    pub fn needs_rotation(&self, now: u64, policy: &RotationPolicy) -> bool {
        now.saturating_sub(self.created_at) >= policy.max_age_secs
            || self.messages_sent() >= policy.max_messages
            || self.iteration == u32::MAX
    }

    /// When the chain was made (Unix seconds, as given to [`SenderChain::new`]).
    pub fn created_at(&self) -> u64 {
        self.created_at
    }

    /// How many messages the chain has encrypted.
    pub fn messages_sent(&self) -> u32 {
        self.iteration
    }

    /// The iteration the next message will carry.
    pub fn iteration(&self) -> u32 {
        self.iteration
    }

    /// The room's name.
    pub fn room(&self) -> &str {
        &self.chain.room
    }

    /// The membership version the chain encrypts for.
    pub fn epoch(&self) -> u64 {
        self.chain.epoch
    }

    /// The sending user.
    pub fn sender(&self) -> UserId {
        self.chain.sender
    }

    /// The chain's id.
    pub fn chain_id(&self) -> ChainId {
        self.chain.chain_id
    }

    /// The chain's header: room, epoch, sender, chain id.
    pub fn chain(&self) -> &ChainRef {
        &self.chain
    }

    /// The chain's signing public key.
    pub fn signing_public_key(&self) -> [u8; 32] {
        self.signing_key.verifying_key().to_bytes()
    }

    /// The chain's state, to persist. Secret (wiped on drop). Layout after the version byte (1)
    /// and kind byte (3): room length (u16) ‖ room ‖ epoch (u64) ‖ sender (32) ‖ chain id (16) ‖
    /// iteration (u32) ‖ chain key (32) ‖ signing secret key (32) ‖ created at (u64).
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let len = FRAMING_LEN + chain_len(&self.chain.room) + 4 + 32 + 32 + 8;
        let mut w = Writer::new(Kind::SenderState, len);
        let c = &self.chain;
        w.chain(&c.room, c.epoch, &c.sender, &c.chain_id);
        w.u32(self.iteration);
        w.bytes(&self.chain_key[..]);
        let secret = Zeroizing::new(self.signing_key.to_bytes());
        w.bytes(&secret[..]);
        w.u64(self.created_at);
        w.finish()
    }

    /// Rebuilds a chain from [`SenderChain::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<SenderChain, SenderKeyError> {
        let mut r = Reader::new(bytes, Kind::SenderState, corrupt)?;
        let chain = r.chain()?;
        let iteration = r.u32()?;
        let chain_key = r.secret32()?;
        let secret = r.secret32()?;
        let signing_key = SigningKey::from_bytes(&secret);
        let created_at = r.u64()?;
        r.end()?;
        Ok(SenderChain { chain, iteration, chain_key, signing_key, created_at })
    }
}

impl fmt::Debug for SenderChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SenderChain")
            .field("room", &self.chain.room)
            .field("epoch", &self.chain.epoch)
            .field("sender", &self.chain.sender)
            .field("chain_id", &self.chain.chain_id)
            .field("iteration", &self.iteration)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

/// A sender chain's public half plus its current chain key: what a receiver needs to decrypt
/// the chain from [`SenderKeyDistribution::iteration`] on (and nothing before it).
///
/// Signal's SenderKeyDistributionMessage, bound to a room, an epoch and a sender. It is *not*
/// signed: send it only over the pairwise session with each member, and accept it only from the
/// pairwise session of [`SenderKeyDistribution::sender`]. Holds the chain key (wiped on drop);
/// its [`Debug`] output does not show it.
#[derive(Clone)]
pub struct SenderKeyDistribution {
    /// Room, epoch, sender, chain id.
    pub(crate) chain: ChainRef,
    pub(crate) iteration: u32,
    pub(crate) chain_key: Secret32,
    pub(crate) signing_key: VerifyingKey,
}

impl SenderKeyDistribution {
    /// The room's name.
    pub fn room(&self) -> &str {
        &self.chain.room
    }

    /// The membership version of the chain.
    pub fn epoch(&self) -> u64 {
        self.chain.epoch
    }

    /// The user the chain belongs to.
    pub fn sender(&self) -> UserId {
        self.chain.sender
    }

    /// The chain's id.
    pub fn chain_id(&self) -> ChainId {
        self.chain.chain_id
    }

    /// The chain's header: room, epoch, sender, chain id.
    pub fn chain(&self) -> &ChainRef {
        &self.chain
    }

    /// The first iteration the distribution lets a receiver decrypt.
    pub fn iteration(&self) -> u32 {
        self.iteration
    }

    /// The chain's signing public key.
    pub fn signing_public_key(&self) -> [u8; 32] {
        self.signing_key.to_bytes()
    }

    /// The encoding to send over a pairwise session. Secret (wiped on drop). Layout after the
    /// version byte (1) and kind byte (2): room length (u16) ‖ room ‖ epoch (u64) ‖ sender (32) ‖
    /// chain id (16) ‖ iteration (u32) ‖ chain key (32) ‖ signing public key (32).
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let len = FRAMING_LEN + chain_len(&self.chain.room) + 4 + 32 + 32;
        let mut w = Writer::new(Kind::Distribution, len);
        let c = &self.chain;
        w.chain(&c.room, c.epoch, &c.sender, &c.chain_id);
        w.u32(self.iteration);
        w.bytes(&self.chain_key[..]);
        w.bytes(self.signing_key.as_bytes());
        w.finish()
    }

    /// Decodes [`SenderKeyDistribution::to_bytes`]. Refuses a signing key that is not a valid
    /// Ed25519 point or is of small order.
    pub fn from_bytes(bytes: &[u8]) -> Result<SenderKeyDistribution, SenderKeyError> {
        let mut r = Reader::new(bytes, Kind::Distribution, malformed)?;
        let chain = r.chain()?;
        let iteration = r.u32()?;
        let chain_key = r.secret32()?;
        let signing_key = parse_signing_key(&r.array()?).ok_or(SenderKeyError::Malformed("invalid signing key"))?;
        r.end()?;
        Ok(SenderKeyDistribution { chain, iteration, chain_key, signing_key })
    }
}

/// An Ed25519 public key that is a valid point and not of small order.
pub(crate) fn parse_signing_key(bytes: &[u8; 32]) -> Option<VerifyingKey> {
    VerifyingKey::from_bytes(bytes).ok().filter(|k| !k.is_weak())
}

impl fmt::Debug for SenderKeyDistribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SenderKeyDistribution")
            .field("room", &self.chain.room)
            .field("epoch", &self.chain.epoch)
            .field("sender", &self.chain.sender)
            .field("chain_id", &self.chain.chain_id)
            .field("iteration", &self.iteration)
            .field("signing_key", &self.signing_key)
            .finish_non_exhaustive()
    }
}

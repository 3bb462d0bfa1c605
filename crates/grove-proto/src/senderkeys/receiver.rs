//! The receiving side: [`ReceiverChain`], one per sender chain, pure and bounded.

use std::collections::BTreeMap;
use std::fmt;

use ed25519_dalek::{Signature, VerifyingKey};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::codec::{chain_len, corrupt, Kind, Reader, Writer, FRAMING_LEN};
use super::crypto::{open, ratchet, Secret32};
use super::message::{MessageHeader, ParsedMessage};
use super::sender::{parse_signing_key, SenderKeyDistribution};
use super::{ChainId, ChainRef, ReceiverLimits, SenderKeyError};
use crate::identity::UserId;

/// A decrypted message.
#[non_exhaustive]
#[derive(Clone, PartialEq, Eq)]
pub struct Decrypted {
    /// The plaintext.
    pub plaintext: Vec<u8>,
    /// The sender, as authenticated by the chain's signing key (which the caller accepted from
    /// this sender's pairwise session).
    pub sender: UserId,
    /// The message's position in its chain.
    pub iteration: u32,
    /// The room.
    pub room: String,
    /// The membership version the message was sent in.
    pub epoch: u64,
    /// The sender chain.
    pub chain_id: ChainId,
}

impl fmt::Debug for Decrypted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decrypted")
            .field("plaintext_len", &self.plaintext.len())
            .field("sender", &self.sender)
            .field("iteration", &self.iteration)
            .field("room", &self.room)
            .field("epoch", &self.epoch)
            .field("chain_id", &self.chain_id)
            .finish()
    }
}

/// A receiver's view of one sender chain: the signing public key, the chain key of the next
/// expected iteration, and the message keys of skipped iterations. Secret (wiped on drop); its
/// [`Debug`] output shows no key.
///
/// [`ReceiverChain::decrypt`] never changes `self`: it returns the next state, which the caller
/// stores in place of the old one only when decryption succeeded.
#[derive(Clone)]
pub struct ReceiverChain {
    /// Room, epoch, sender, chain id.
    chain: ChainRef,
    signing_key: VerifyingKey,
    /// The iteration of the distribution this chain was made from: nothing before it was ever
    /// decryptable here.
    first_iteration: u32,
    /// The iteration of `chain_key`: every iteration below it is consumed or in `skipped`.
    next_iteration: u32,
    /// `CK_next_iteration`.
    chain_key: Secret32,
    /// Message keys `MK_i` of iterations `first_iteration <= i < next_iteration` not received yet.
    skipped: BTreeMap<u32, Secret32>,
    limits: ReceiverLimits,
}

impl ReceiverChain {
    /// A receiver chain from a sender's distribution, with the default [`ReceiverLimits`].
    pub fn from_distribution(dist: &SenderKeyDistribution) -> ReceiverChain {
        ReceiverChain::with_limits(dist, ReceiverLimits::default())
    }

    /// A receiver chain from a sender's distribution, with the given limits.
    pub fn with_limits(dist: &SenderKeyDistribution, limits: ReceiverLimits) -> ReceiverChain {
        ReceiverChain {
            chain: dist.chain.clone(),
            signing_key: dist.signing_key,
            first_iteration: dist.iteration,
            next_iteration: dist.iteration,
            chain_key: dist.chain_key.clone(),
            skipped: BTreeMap::new(),
            limits,
        }
    }

    /// Verifies and decrypts a wire message of this chain, returning it and the chain's next
    /// state. `self` is untouched whatever happens.
    ///
    /// Order: decode; header names this chain (room, epoch, sender, chain id); signature
    /// (strict Ed25519 over header ‖ ciphertext); iteration (replay, window); ratchet on
    /// copies; AEAD with the header as associated data.
    pub fn decrypt(&self, message: &[u8]) -> Result<(Decrypted, ReceiverChain), SenderKeyError> {
        let m = ParsedMessage::parse(message)?;
        self.check_header(&m.header)?;
        self.signing_key
            .verify_strict(m.signed, &Signature::from_bytes(&m.signature))
            .map_err(|_| SenderKeyError::BadSignature)?;

        let i = m.header.iteration;
        let (plaintext, next) = if i < self.next_iteration {
            let Some(message_key) = self.skipped.get(&i) else {
                return Err(if i < self.first_iteration {
                    SenderKeyError::PredatesChain { iteration: i, first_iteration: self.first_iteration }
                } else {
                    SenderKeyError::Replay { iteration: i }
                });
            };
            let plaintext = open(message_key, m.header_bytes, m.ciphertext)?;
            let mut next = self.clone();
            next.skipped.remove(&i);
            (plaintext, next)
        } else {
            let out_of_window = SenderKeyError::OutOfWindow { iteration: i, next_iteration: self.next_iteration };
            if i - self.next_iteration > self.limits.max_forward {
                return Err(out_of_window);
            }
            let after = i.checked_add(1).ok_or(out_of_window)?;
            // Only the `max_skipped` highest skipped iterations could survive eviction.
            let keep_from = i.saturating_sub(self.limits.max_skipped);
            let mut new_skipped = Vec::new();
            let mut chain_key = self.chain_key.clone();
            for j in self.next_iteration..i {
                let (message_key, next_chain_key) = ratchet(&chain_key)?;
                if j >= keep_from {
                    new_skipped.push((j, message_key));
                }
                chain_key = next_chain_key;
            }
            let (message_key, next_chain_key) = ratchet(&chain_key)?;
            let plaintext = open(&message_key, m.header_bytes, m.ciphertext)?;
            let mut next = self.clone();
            next.chain_key = next_chain_key;
            next.next_iteration = after;
            next.skipped.extend(new_skipped);
            while next.skipped.len() > self.limits.max_skipped as usize {
                next.skipped.pop_first();
            }
            (plaintext, next)
        };
        let h = m.header;
        let decrypted =
            Decrypted { plaintext, sender: h.sender, iteration: i, room: h.room, epoch: h.epoch, chain_id: h.chain_id };
        Ok((decrypted, next))
    }

    fn check_header(&self, h: &MessageHeader) -> Result<(), SenderKeyError> {
        let c = &self.chain;
        if h.room != c.room {
            Err(SenderKeyError::WrongRoom)
        } else if h.epoch != c.epoch {
            Err(SenderKeyError::WrongEpoch { message_epoch: h.epoch })
        } else if h.sender != c.sender {
            Err(SenderKeyError::WrongSender)
        } else if h.chain_id != c.chain_id {
            Err(SenderKeyError::UnknownChain)
        } else {
            Ok(())
        }
    }

    /// Checks that `dist`, naming this chain's (room, epoch, sender, chain id), carries the same
    /// keys: the same signing key, and, when its iteration is at or ahead of ours and within the
    /// window, the chain key ours ratchets to. An older iteration's chain key cannot be checked
    /// (we no longer hold it, by forward secrecy); one beyond the window is not worth the work.
    pub(crate) fn check_same_keys(&self, dist: &SenderKeyDistribution) -> Result<(), SenderKeyError> {
        if self.signing_key.as_bytes().ct_eq(dist.signing_key.as_bytes()).unwrap_u8() != 1 {
            return Err(SenderKeyError::ChainIdReused);
        }
        if dist.iteration >= self.next_iteration && dist.iteration - self.next_iteration <= self.limits.max_forward {
            let mut chain_key = self.chain_key.clone();
            for _ in self.next_iteration..dist.iteration {
                chain_key = ratchet(&chain_key)?.1;
            }
            if chain_key[..].ct_eq(&dist.chain_key[..]).unwrap_u8() != 1 {
                return Err(SenderKeyError::ChainIdReused);
            }
        }
        Ok(())
    }

    /// The room's name.
    pub fn room(&self) -> &str {
        &self.chain.room
    }

    /// The chain's membership version.
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
        self.signing_key.to_bytes()
    }

    /// The first iteration this receiver could ever decrypt (the distribution's).
    pub fn first_iteration(&self) -> u32 {
        self.first_iteration
    }

    /// The lowest iteration never seen and not skipped.
    pub fn next_iteration(&self) -> u32 {
        self.next_iteration
    }

    /// The skipped iterations whose message keys are kept, ascending.
    pub fn skipped_iterations(&self) -> Vec<u32> {
        self.skipped.keys().copied().collect()
    }

    /// The chain's limits.
    pub fn limits(&self) -> ReceiverLimits {
        self.limits
    }

    /// The chain's state, to persist. Secret (wiped on drop). Layout after the version byte (1)
    /// and kind byte (4): room length (u16) ‖ room ‖ epoch (u64) ‖ sender (32) ‖ chain id (16) ‖
    /// signing public key (32) ‖ first iteration (u32) ‖ next iteration (u32) ‖ chain key (32) ‖
    /// max forward (u32) ‖ max skipped (u32) ‖ count (u32) ‖ count × (iteration (u32) ‖ message
    /// key (32)), iterations ascending.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let len = FRAMING_LEN + chain_len(&self.chain.room) + 32 + 4 + 4 + 32 + 4 + 4 + 4 + self.skipped.len() * 36;
        let mut w = Writer::new(Kind::ReceiverState, len);
        let c = &self.chain;
        w.chain(&c.room, c.epoch, &c.sender, &c.chain_id);
        w.bytes(self.signing_key.as_bytes());
        w.u32(self.first_iteration);
        w.u32(self.next_iteration);
        w.bytes(&self.chain_key[..]);
        w.u32(self.limits.max_forward);
        w.u32(self.limits.max_skipped);
        // The count fits: it never exceeds `max_skipped`, a u32.
        w.u32(u32::try_from(self.skipped.len()).unwrap_or(u32::MAX));
        for (i, key) in &self.skipped {
            w.u32(*i);
            w.bytes(&key[..]);
        }
        w.finish()
    }

    /// Rebuilds a chain from [`ReceiverChain::to_bytes`], checking its invariants.
    pub fn from_bytes(bytes: &[u8]) -> Result<ReceiverChain, SenderKeyError> {
        let mut r = Reader::new(bytes, Kind::ReceiverState, corrupt)?;
        let chain = r.chain()?;
        let signing_key = parse_signing_key(&r.array()?).ok_or(corrupt("invalid signing key"))?;
        let first_iteration = r.u32()?;
        let next_iteration = r.u32()?;
        if first_iteration > next_iteration {
            return Err(corrupt("first iteration after next iteration"));
        }
        let chain_key = r.secret32()?;
        let limits = ReceiverLimits { max_forward: r.u32()?, max_skipped: r.u32()? };
        let count = r.u32()?;
        if count > limits.max_skipped || count > next_iteration - first_iteration {
            return Err(corrupt("too many skipped keys"));
        }
        let mut skipped = BTreeMap::new();
        let mut last = None;
        for _ in 0..count {
            let i = r.u32()?;
            if i < first_iteration || i >= next_iteration || last.is_some_and(|l| i <= l) {
                return Err(corrupt("skipped iterations out of order or range"));
            }
            last = Some(i);
            skipped.insert(i, r.secret32()?);
        }
        r.end()?;
        Ok(ReceiverChain { chain, signing_key, first_iteration, next_iteration, chain_key, skipped, limits })
    }
}

impl fmt::Debug for ReceiverChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReceiverChain")
            .field("room", &self.chain.room)
            .field("epoch", &self.chain.epoch)
            .field("sender", &self.chain.sender)
            .field("chain_id", &self.chain.chain_id)
            .field("first_iteration", &self.first_iteration)
            .field("next_iteration", &self.next_iteration)
            .field("skipped", &self.skipped.len())
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

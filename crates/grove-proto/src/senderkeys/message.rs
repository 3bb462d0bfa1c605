//! The wire message: header ‖ AES-256-GCM ciphertext ‖ Ed25519 signature (layout in the
//! [module docs](super#wire-message)).

use super::codec::{chain_len, malformed, Kind, Reader, Writer, FRAMING_LEN};
use super::{ChainId, ChainRef, SenderKeyError, SIGNATURE_LEN, TAG_LEN};
use crate::identity::UserId;

/// A message's header, in clear on the wire and bound into both the AEAD and the signature.
///
/// [`MessageHeader::parse`] reads it without checking anything else, for routing (which room,
/// which chain); nothing in it is trustworthy until the message has been decrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageHeader {
    /// The room's name.
    pub room: String,
    /// The room's membership version the sender encrypted for.
    pub epoch: u64,
    /// The sending user.
    pub sender: UserId,
    /// The sender chain.
    pub chain_id: ChainId,
    /// The message's position in the chain.
    pub iteration: u32,
}

impl MessageHeader {
    /// Reads the header of a wire message (and checks the rest is long enough to hold a tag and
    /// a signature), without verifying anything.
    pub fn parse(message: &[u8]) -> Result<MessageHeader, SenderKeyError> {
        Ok(ParsedMessage::parse(message)?.header)
    }

    /// The encoded length of a header in `room`.
    pub(crate) fn encoded_len(room: &str) -> usize {
        FRAMING_LEN + chain_len(room) + 4
    }

    /// Starts a wire message of total length `len` with the header of `chain` at `iteration`.
    pub(crate) fn write(chain: &ChainRef, iteration: u32, len: usize) -> Writer {
        let mut w = Writer::new(Kind::Message, len);
        w.chain(&chain.room, chain.epoch, &chain.sender, &chain.chain_id);
        w.u32(iteration);
        w
    }
}

/// A wire message split into its parts.
pub(crate) struct ParsedMessage<'a> {
    pub(crate) header: MessageHeader,
    /// The header's bytes: the AEAD's associated data.
    pub(crate) header_bytes: &'a [u8],
    /// AES-GCM ciphertext ‖ tag.
    pub(crate) ciphertext: &'a [u8],
    /// Header ‖ ciphertext: what the signature covers.
    pub(crate) signed: &'a [u8],
    pub(crate) signature: [u8; SIGNATURE_LEN],
}

impl<'a> ParsedMessage<'a> {
    pub(crate) fn parse(message: &'a [u8]) -> Result<ParsedMessage<'a>, SenderKeyError> {
        let mut r = Reader::new(message, Kind::Message, malformed)?;
        let ChainRef { room, epoch, sender, chain_id } = r.chain()?;
        let iteration = r.u32()?;
        let header_len = r.position();
        let rest = r.remaining();
        let ct_len = rest
            .len()
            .checked_sub(SIGNATURE_LEN)
            .filter(|n| *n >= TAG_LEN)
            .ok_or(SenderKeyError::Malformed("too short for a tag and a signature"))?;
        let (ciphertext, sig) = rest.split_at(ct_len);
        let signature = <[u8; SIGNATURE_LEN]>::try_from(sig).map_err(|_| SenderKeyError::Malformed("signature"))?;
        let signed_len = header_len + ct_len;
        Ok(ParsedMessage {
            header: MessageHeader { room, epoch, sender, chain_id, iteration },
            header_bytes: &message[..header_len],
            ciphertext,
            signed: &message[..signed_len],
            signature,
        })
    }
}

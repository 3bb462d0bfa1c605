//! Journal entries: what an operation that wrote no snapshot did to a group, and how to do it
//! again on a group loaded from its snapshot (see the engine's [module docs](super#the-journal)).
//!
//! An entry is one tag byte, then its data:
//!
//! - `0x01` **sent**: this member encrypted one application message (its own ratchet moved on by
//!   one generation). No data: the message itself is not needed to replay it.
//! - `0x02` **received**: this member processed an application message; the data is the
//!   message (`MlsMessage` bytes) as it came from the log.
//! - `0x03` **handshake**: this member processed a commit or a proposal of another member (or
//!   its own commit coming back from the log while pending, which applies it); the data is the
//!   message (`MlsMessage` bytes).
//! - `0x04` **applied**: this member applied its pending commit (the server accepted it).
//! - `0x05` **discarded**: this member dropped its pending commit (the server refused it).
//!
//! Replaying is deterministic where it matters: processing a message draws no randomness and
//! reads no clock (the engine passes mls-rs no time when processing); applying or dropping the
//! pending commit uses only what the snapshot holds; encrypting draws a fresh reuse guard, but
//! the ratchet moves exactly as it did (one generation), and the replayed ciphertext is thrown
//! away. What draws randomness that matters (making a commit or a proposal, creating or joining
//! a group) is never journaled: it writes a snapshot.

use mls_rs::error::MlsError;
use mls_rs::group::ReceivedMessage;
use mls_rs::MlsMessage;
use zeroize::Zeroizing;

use super::error::GroupLoadError;
use super::EngineGroup;
use crate::mls::error::Cause;

const SENT: u8 = 0x01;
const RECEIVED: u8 = 0x02;
const HANDSHAKE: u8 = 0x03;
const APPLIED: u8 = 0x04;
const DISCARDED: u8 = 0x05;

/// The entry for one encrypted application message.
pub(super) fn sent() -> Vec<u8> {
    vec![SENT]
}

/// The entry for one processed application message.
pub(super) fn received(message: &[u8]) -> Vec<u8> {
    let mut entry = Vec::with_capacity(1 + message.len());
    entry.push(RECEIVED);
    entry.extend_from_slice(message);
    entry
}

/// The entry for one processed commit or proposal.
pub(super) fn handshake(message: &[u8]) -> Vec<u8> {
    let mut entry = Vec::with_capacity(1 + message.len());
    entry.push(HANDSHAKE);
    entry.extend_from_slice(message);
    entry
}

/// The entry for applying the pending commit.
pub(super) fn applied() -> Vec<u8> {
    vec![APPLIED]
}

/// The entry for dropping the pending commit.
pub(super) fn discarded() -> Vec<u8> {
    vec![DISCARDED]
}

/// Whether `entry` is a handshake (an epoch change or a cached proposal): the rows whose replay
/// costs O(group size), which [`super::MlsEngine::with_handshake_bound`] bounds.
pub(super) fn is_handshake(entry: &[u8]) -> bool {
    matches!(entry.first(), Some(&HANDSHAKE | &APPLIED | &DISCARDED))
}

/// Replays `journal` on `group`, freshly loaded from the snapshot the journal follows. The
/// error says which row failed and why (the rows are not what this engine wrote after that
/// snapshot).
pub(super) fn replay(group: &mut EngineGroup, journal: &[Zeroizing<Vec<u8>>]) -> Result<(), GroupLoadError> {
    for (row, entry) in journal.iter().enumerate() {
        replay_one(group, entry).map_err(|(what, cause)| GroupLoadError::Journal { row, what, cause })?;
    }
    Ok(())
}

/// What failed in replaying one row, and the mls-rs error if there is one.
type RowError = (&'static str, Option<Cause>);

fn mls(what: &'static str) -> impl FnOnce(MlsError) -> RowError {
    move |e| (what, Some(Cause::new(e)))
}

fn replay_one(group: &mut EngineGroup, entry: &[u8]) -> Result<(), RowError> {
    match entry.split_first() {
        Some((&SENT, [])) => {
            // Moves this member's application ratchet on by one, as the original encryption
            // did. The throw-away ciphertext is never seen: its key is the one the original
            // message used, and the original left already.
            group.encrypt_application_message(&[], Vec::new()).map_err(mls("re-encrypting"))?;
            Ok(())
        }
        Some((&RECEIVED, message)) => {
            let msg = MlsMessage::from_bytes(message).map_err(mls("decoding the message"))?;
            match group.process_incoming_message(msg) {
                Ok(ReceivedMessage::ApplicationMessage(_)) => Ok(()),
                Ok(_) => Err(("the message is not an application message", None)),
                Err(e) => Err(mls("processing the message again")(e)),
            }
        }
        Some((&HANDSHAKE, message)) => {
            let msg = MlsMessage::from_bytes(message).map_err(mls("decoding the message"))?;
            match group.process_incoming_message(msg) {
                Ok(ReceivedMessage::Commit(_) | ReceivedMessage::Proposal(_)) => Ok(()),
                Ok(_) => Err(("the message is not a commit or a proposal", None)),
                Err(e) => Err(mls("processing the message again")(e)),
            }
        }
        Some((&APPLIED, [])) => {
            group.apply_pending_commit().map_err(mls("applying the pending commit again"))?;
            Ok(())
        }
        Some((&DISCARDED, [])) => {
            group.clear_pending_commit();
            Ok(())
        }
        Some(_) => Err(("an unknown entry", None)),
        None => Err(("an empty entry", None)),
    }
}

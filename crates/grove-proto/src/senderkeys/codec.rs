//! The binary framing shared by every encoding of this module: big-endian integers, a version
//! byte and a kind byte up front, length-prefixed room names, no trailing bytes.

use zeroize::Zeroizing;

use super::{ChainId, ChainRef, SenderKeyError, FORMAT_VERSION, MAX_ROOM_LEN};
use crate::identity::UserId;

/// What an encoding is; the second byte of every encoding.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Kind {
    Message = 1,
    Distribution = 2,
    SenderState = 3,
    ReceiverState = 4,
}

/// Writes into a buffer allocated once at its final size, so no reallocation leaves copies of
/// secrets behind in freed memory. The buffer zeroizes itself on drop.
pub(crate) struct Writer {
    buf: Zeroizing<Vec<u8>>,
}

impl Writer {
    /// A writer for an encoding of `kind` whose total length is `len` (framing included).
    pub(crate) fn new(kind: Kind, len: usize) -> Writer {
        let mut buf = Zeroizing::new(Vec::with_capacity(len));
        buf.push(FORMAT_VERSION);
        buf.push(kind as u8);
        Writer { buf }
    }

    pub(crate) fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }

    pub(crate) fn u32(&mut self, v: u32) {
        self.bytes(&v.to_be_bytes());
    }

    pub(crate) fn u64(&mut self, v: u64) {
        self.bytes(&v.to_be_bytes());
    }

    /// A room name, which the caller checked with `check_room` (so its length fits a u16).
    pub(crate) fn room(&mut self, room: &str) {
        let len = u16::try_from(room.len()).unwrap_or(u16::MAX);
        self.bytes(&len.to_be_bytes());
        self.bytes(room.as_bytes());
    }

    /// A chain header: room ‖ epoch (u64) ‖ sender (32) ‖ chain id (16), the prefix of every
    /// encoding that names a chain (message header, distribution, sender and receiver state).
    pub(crate) fn chain(&mut self, room: &str, epoch: u64, sender: &UserId, chain_id: &ChainId) {
        self.room(room);
        self.u64(epoch);
        self.bytes(sender.as_bytes());
        self.bytes(chain_id.as_bytes());
    }

    pub(crate) fn finish(self) -> Zeroizing<Vec<u8>> {
        self.buf
    }
}

/// The length of an encoding's framing: version byte and kind byte.
pub(crate) const FRAMING_LEN: usize = 2;

/// The encoded length of a chain header ([`Writer::chain`]) for `room`.
pub(crate) fn chain_len(room: &str) -> usize {
    room_len(room) + 8 + 32 + 16
}

/// The encoded length of a room name.
pub(crate) fn room_len(room: &str) -> usize {
    2 + room.len()
}

/// Reads an encoding; every failure becomes `err(reason)` (malformed input or corrupt state).
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
    pos: usize,
    err: fn(&'static str) -> SenderKeyError,
}

impl<'a> Reader<'a> {
    /// Checks the version and kind bytes. An unknown version or kind is `UnsupportedFormat` for
    /// network input and `err` for stored state.
    pub(crate) fn new(
        input: &'a [u8],
        kind: Kind,
        err: fn(&'static str) -> SenderKeyError,
    ) -> Result<Reader<'a>, SenderKeyError> {
        let (version, k) = match input {
            [v, k, ..] => (*v, *k),
            [v] => (*v, 0),
            [] => return Err(err("empty")),
        };
        if version != FORMAT_VERSION || k != kind as u8 {
            return Err(match kind {
                Kind::Message | Kind::Distribution => SenderKeyError::UnsupportedFormat { version, kind: k },
                Kind::SenderState | Kind::ReceiverState => err("unknown version or kind"),
            });
        }
        Ok(Reader { rest: &input[2..], pos: 2, err })
    }

    /// Bytes read so far (framing included).
    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn fail(&self, reason: &'static str) -> SenderKeyError {
        (self.err)(reason)
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], SenderKeyError> {
        if self.rest.len() < n {
            return Err(self.fail("truncated"));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        self.pos += n;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], SenderKeyError> {
        let b = self.take(N)?;
        <[u8; N]>::try_from(b).map_err(|_| self.fail("truncated"))
    }

    /// 32 secret bytes, straight into a zeroizing buffer.
    pub(crate) fn secret32(&mut self) -> Result<Zeroizing<[u8; 32]>, SenderKeyError> {
        let b = self.take(32)?;
        let mut out = Zeroizing::new([0u8; 32]);
        out.copy_from_slice(b);
        Ok(out)
    }

    pub(crate) fn u16(&mut self) -> Result<u16, SenderKeyError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, SenderKeyError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, SenderKeyError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    pub(crate) fn room(&mut self) -> Result<String, SenderKeyError> {
        let len = usize::from(self.u16()?);
        if len == 0 || len > MAX_ROOM_LEN {
            return Err(self.fail("room length out of range"));
        }
        let b = self.take(len)?;
        let s = std::str::from_utf8(b).map_err(|_| self.fail("room is not UTF-8"))?;
        Ok(s.to_owned())
    }

    pub(crate) fn user(&mut self) -> Result<UserId, SenderKeyError> {
        Ok(UserId(self.array()?))
    }

    pub(crate) fn chain_id(&mut self) -> Result<ChainId, SenderKeyError> {
        Ok(ChainId(self.array()?))
    }

    /// A chain header ([`Writer::chain`]).
    pub(crate) fn chain(&mut self) -> Result<ChainRef, SenderKeyError> {
        Ok(ChainRef { room: self.room()?, epoch: self.u64()?, sender: self.user()?, chain_id: self.chain_id()? })
    }

    /// Everything not read yet, consuming it.
    pub(crate) fn remaining(&mut self) -> &'a [u8] {
        let r = self.rest;
        self.pos += r.len();
        self.rest = &[];
        r
    }

    /// Fails if anything is left.
    pub(crate) fn end(self) -> Result<(), SenderKeyError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(self.fail("trailing bytes"))
        }
    }
}

pub(crate) fn malformed(reason: &'static str) -> SenderKeyError {
    SenderKeyError::Malformed(reason)
}

pub(crate) fn corrupt(reason: &'static str) -> SenderKeyError {
    SenderKeyError::CorruptState(reason)
}

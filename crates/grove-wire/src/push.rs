//! Sending on the push WebSocket: frames bound to one connection.
//!
//! The push WebSocket (`GET /v1/push`) is authenticated once, by its signed upgrade request.
//! Entries sent over it afterwards are not signed one by one (an Ed25519 verification costs
//! more than the rest of an append); instead each `send` frame carries an HMAC under a key that
//! only this connection's two ends hold:
//!
//! 1. The client draws an ephemeral X25519 key and puts its public half in the upgrade's query
//!    (`/v1/push?bind=HEX`), which the request signature covers: nobody can swap it.
//! 2. The server draws its own, answers its public half in [`HEADER_PUSH_KEY`] and signs
//!    `user ‖ client half ‖ server half` with its server key ([`HEADER_PUSH_SIGNATURE`]); the
//!    client checks that signature against the server key it already trusts.
//! 3. Both derive the frame key from the agreement with HKDF-SHA256, bound to the user and both
//!    halves ([`FrameKey`]).
//!
//! A frame's MAC covers its number and everything the server acts on. Numbers start at 1 and
//! go up by one, so a frame cannot be replayed on this connection, and no other connection
//! holds the key: it cannot be replayed elsewhere or later either.
//!
//! Pure computation: the caller brings the randomness.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use hmac::{Hmac, Mac};
use rand_core::{CryptoRng, RngCore};
use sha2::{Digest, Sha256};
use x25519_dalek::{EphemeralSecret, PublicKey};
use zeroize::Zeroizing;

use crate::api::AppendEntry;
use crate::UserId;

/// The upgrade query parameter holding the client's half (64 hex digits).
pub const QUERY_BIND: &str = "bind";
/// The upgrade response header holding the server's half (64 hex digits).
pub const HEADER_PUSH_KEY: &str = "x-grove-push-key";
/// The upgrade response header holding the server's signature over both halves (base64).
pub const HEADER_PUSH_SIGNATURE: &str = "x-grove-push-signature";

const SIGNED_LABEL: &[u8] = b"grove push binding v1\0";
const KEY_LABEL: &[u8] = b"grove push frames v1\0";
const FRAME_LABEL: &[u8] = b"send\0";

/// Why a binding could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    /// A half is not 64 hex digits.
    #[error("the push binding key is not 64 hex digits")]
    MalformedKey,
    /// The server's signature is not base64 of 64 bytes, or does not verify.
    #[error("the server's signature over the push binding does not verify")]
    BadSignature,
    /// The agreement gave an all-zero secret (a low-order point).
    #[error("the push binding key is a low-order point")]
    WeakKey,
}

/// The client's side before the server answered: its ephemeral secret.
pub struct Offer {
    secret: EphemeralSecret,
    public: [u8; 32],
}

impl std::fmt::Debug for Offer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Offer").field("public", &crate::hex::encode(&self.public)).finish_non_exhaustive()
    }
}

impl Offer {
    /// A fresh ephemeral key.
    pub fn new<R: RngCore + CryptoRng>(rng: &mut R) -> Offer {
        let secret = EphemeralSecret::random_from_rng(rng);
        let public = PublicKey::from(&secret).to_bytes();
        Offer { secret, public }
    }

    /// The value of the upgrade's `bind` query parameter.
    pub fn public_hex(&self) -> String {
        crate::hex::encode(&self.public)
    }

    /// Checks the server's answer (its half and its signature, as in the upgrade response's
    /// headers) against `server_key`, and derives the frame key.
    pub fn accept(
        self,
        user: &UserId,
        server_key: &[u8; 32],
        server_half: &str,
        signature: &str,
    ) -> Result<FrameKey, BindError> {
        let theirs = crate::hex::decode_array::<32>(server_half).ok_or(BindError::MalformedKey)?;
        let sig = crate::b64::decode(signature).map_err(|_| BindError::BadSignature)?;
        let sig = Signature::from_slice(&sig).map_err(|_| BindError::BadSignature)?;
        let server = VerifyingKey::from_bytes(server_key).map_err(|_| BindError::BadSignature)?;
        server.verify_strict(&signed_bytes(user, &self.public, &theirs), &sig).map_err(|_| BindError::BadSignature)?;
        let shared = self.secret.diffie_hellman(&PublicKey::from(theirs));
        FrameKey::derive(shared.as_bytes(), user, &self.public, &theirs)
    }
}

/// The server's side: answers a client's half (the `bind` parameter) with its own half and
/// its signature (for [`HEADER_PUSH_KEY`] and [`HEADER_PUSH_SIGNATURE`]) and the frame key.
pub fn answer<R: RngCore + CryptoRng>(
    rng: &mut R,
    server: &SigningKey,
    user: &UserId,
    client_half: &str,
) -> Result<(FrameKey, String, String), BindError> {
    let theirs = crate::hex::decode_array::<32>(client_half).ok_or(BindError::MalformedKey)?;
    let secret = EphemeralSecret::random_from_rng(rng);
    let ours = PublicKey::from(&secret).to_bytes();
    let signature = server.sign(&signed_bytes(user, &theirs, &ours));
    let shared = secret.diffie_hellman(&PublicKey::from(theirs));
    let key = FrameKey::derive(shared.as_bytes(), user, &theirs, &ours)?;
    Ok((key, crate::hex::encode(&ours), crate::b64::encode(&signature.to_bytes())))
}

fn signed_bytes(user: &UserId, client: &[u8; 32], server: &[u8; 32]) -> Vec<u8> {
    [SIGNED_LABEL, user.as_bytes().as_slice(), client, server].concat()
}

/// The key that authenticates one connection's `send` frames.
pub struct FrameKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for FrameKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FrameKey(..)")
    }
}

impl FrameKey {
    fn derive(shared: &[u8; 32], user: &UserId, client: &[u8; 32], server: &[u8; 32]) -> Result<FrameKey, BindError> {
        if shared.iter().all(|b| *b == 0) {
            return Err(BindError::WeakKey);
        }
        let info = [KEY_LABEL, user.as_bytes().as_slice(), client, server].concat();
        let mut key = Zeroizing::new([0u8; 32]);
        hkdf::Hkdf::<Sha256>::new(None, shared).expand(&info, key.as_mut_slice()).map_err(|_| BindError::WeakKey)?;
        Ok(FrameKey(key))
    }

    fn hmac(&self, id: u64, room: &str, entry: &AppendEntry) -> Hmac<Sha256> {
        // HMAC takes a key of any length: this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.0.as_slice()).unwrap_or_else(|_| unreachable!());
        mac.update(FRAME_LABEL);
        mac.update(&id.to_be_bytes());
        mac.update(&(room.len() as u64).to_be_bytes());
        mac.update(room.as_bytes());
        mac.update(&(entry.kind.as_str().len() as u64).to_be_bytes());
        mac.update(entry.kind.as_str().as_bytes());
        mac.update(&entry.epoch.to_be_bytes());
        mac.update(&Sha256::digest(&entry.body));
        mac
    }

    /// The MAC of frame number `id` sending `entry` to `room` (64 hex digits).
    pub fn mac(&self, id: u64, room: &str, entry: &AppendEntry) -> String {
        crate::hex::encode(&self.hmac(id, room, entry).finalize().into_bytes())
    }

    /// Whether `mac` is the MAC of that frame (compared in constant time).
    pub fn verify(&self, id: u64, room: &str, entry: &AppendEntry, mac: &str) -> bool {
        match crate::hex::decode_array::<32>(mac) {
            Some(tag) => self.hmac(id, room, entry).verify_slice(&tag).is_ok(),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::EntryKind;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn entry(body: &[u8]) -> AppendEntry {
        AppendEntry { kind: EntryKind::Application, epoch: 3, body: body.to_vec() }
    }

    /// Alice's client and the server agree on a key; a frame made under it verifies, and any
    /// change to its number, room, kind, epoch or body, or another connection's key, does not.
    #[test]
    fn both_ends_agree_and_a_frame_verifies_only_as_sent_on_its_own_connection() {
        let mut rng = StdRng::seed_from_u64(1);
        let server = SigningKey::generate(&mut rng);
        let alice = UserId([7; 32]);
        let offer = Offer::new(&mut rng);
        let (at_server, half, sig) = answer(&mut rng, &server, &alice, &offer.public_hex()).unwrap();
        let at_client = offer.accept(&alice, &server.verifying_key().to_bytes(), &half, &sig).unwrap();
        let mac = at_client.mac(1, "garden", &entry(b"hello"));
        assert!(at_server.verify(1, "garden", &entry(b"hello"), &mac));
        assert!(!at_server.verify(2, "garden", &entry(b"hello"), &mac), "another number");
        assert!(!at_server.verify(1, "garden2", &entry(b"hello"), &mac), "another room");
        assert!(!at_server.verify(1, "garden", &entry(b"hellO"), &mac), "another body");
        let mut e = entry(b"hello");
        e.epoch = 4;
        assert!(!at_server.verify(1, "garden", &e, &mac), "another epoch");
        e = entry(b"hello");
        e.kind = EntryKind::Commit;
        assert!(!at_server.verify(1, "garden", &e, &mac), "another kind");
        assert!(!at_server.verify(1, "garden", &entry(b"hello"), "zz"), "not hex");

        let other = Offer::new(&mut rng);
        let (elsewhere, _, _) = answer(&mut rng, &server, &alice, &other.public_hex()).unwrap();
        assert!(!elsewhere.verify(1, "garden", &entry(b"hello"), &mac), "another connection");
    }

    /// A server half that someone in the middle swapped, or signed by another key, or for
    /// another user, is refused by the client.
    #[test]
    fn the_client_refuses_an_answer_the_server_did_not_sign_for_it() {
        let mut rng = StdRng::seed_from_u64(2);
        let server = SigningKey::generate(&mut rng);
        let key = server.verifying_key().to_bytes();
        let alice = UserId([7; 32]);
        let offer = Offer::new(&mut rng);
        let (_, half, sig) = answer(&mut rng, &server, &alice, &offer.public_hex()).unwrap();
        let mallory = Offer::new(&mut rng);
        assert_eq!(Offer::new(&mut rng).accept(&alice, &key, &half, &sig).unwrap_err(), BindError::BadSignature);
        assert_eq!(
            Offer::new(&mut rng).accept(&alice, &key, &mallory.public_hex(), &sig).unwrap_err(),
            BindError::BadSignature
        );
        let impostor = SigningKey::generate(&mut rng);
        let (_, half2, sig2) = answer(&mut rng, &impostor, &alice, &offer.public_hex()).unwrap();
        assert_eq!(offer.accept(&alice, &key, &half2, &sig2).unwrap_err(), BindError::BadSignature);
        let offer = Offer::new(&mut rng);
        let (_, half, sig) = answer(&mut rng, &server, &UserId([8; 32]), &offer.public_hex()).unwrap();
        assert_eq!(offer.accept(&alice, &key, &half, &sig).unwrap_err(), BindError::BadSignature);
        assert_eq!(answer(&mut rng, &server, &alice, "00").unwrap_err(), BindError::MalformedKey);
        assert_eq!(answer(&mut rng, &server, &alice, &"00".repeat(32)).unwrap_err(), BindError::WeakKey);
    }
}

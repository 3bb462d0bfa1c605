//! The proof that a join request comes from a holder of the room's invite link.
//!
//! The room's server keeps a request with any token it knows the hash of, so a server could
//! make up requests. The asker therefore also sends an HMAC, keyed from the link's secret,
//! over the room's link and its own user id; the server cannot make one (it never sees the
//! secret), and an admin's client that holds the secret (the link's maker) carries a request
//! out by itself only if its proof verifies.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::identity::UserId;

fn key(secret: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"grove invite link proof key v1\0");
    h.update(secret);
    h.finalize().into()
}

/// The proof that `user`, asking to join the room at `room_link`, holds the link's `secret`.
pub fn proof(secret: &[u8; 32], room_link: &str, user: &UserId) -> [u8; 32] {
    // HMAC takes a key of any length.
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(&key(secret)) else { return [0; 32] };
    mac.update(b"grove join request v1\0");
    mac.update(&(room_link.len() as u64).to_be_bytes());
    mac.update(room_link.as_bytes());
    mac.update(user.as_bytes());
    mac.finalize().into_bytes().into()
}

/// Whether `proof` is `user`'s proof for the link (constant time).
pub fn verify(secret: &[u8; 32], room_link: &str, user: &UserId, proof: &[u8]) -> bool {
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(&key(secret)) else { return false };
    mac.update(b"grove join request v1\0");
    mac.update(&(room_link.len() as u64).to_be_bytes());
    mac.update(room_link.as_bytes());
    mac.update(user.as_bytes());
    mac.verify_slice(proof).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_binds_the_secret_the_room_and_the_user() {
        let (s, room, bob) = ([1; 32], "https://chat.example/rooms/square", UserId([2; 32]));
        let p = proof(&s, room, &bob);
        assert!(verify(&s, room, &bob, &p));
        assert!(!verify(&[9; 32], room, &bob, &p), "another link");
        assert!(!verify(&s, "https://chat.example/rooms/other", &bob, &p), "another room");
        assert!(!verify(&s, room, &UserId([3; 32]), &p), "another user");
        assert!(!verify(&s, room, &bob, &p[..31]));
    }
}

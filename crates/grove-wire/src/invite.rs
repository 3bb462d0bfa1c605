//! Invite links: `<room link>#<secret>`, the secret 32 random bytes in hex. What crosses the
//! wire is derived from it: the [`token`] a joiner shows the room's server, and the server
//! keeps only its [`token_hash`], so neither the server nor a copy of its database learns the
//! secret.

use sha2::{Digest, Sha256};

/// The token a link's holder shows the server: SHA-256 of a domain tag and the secret.
pub fn token(secret: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"grove invite link token v1\0");
    h.update(secret);
    h.finalize().into()
}

/// What the server keeps of a link: SHA-256 of its token.
pub fn token_hash(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

/// The link of a room (`<server>/rooms/<name>`) with `secret`.
pub fn link(room_link: &str, secret: &[u8; 32]) -> String {
    format!("{room_link}#{}", crate::hex::encode(secret))
}

/// Splits a link into the room's link and the secret; `None` if it carries no secret.
pub fn parse(link: &str) -> Option<(String, [u8; 32])> {
    let (room, secret) = link.trim().split_once('#')?;
    Some((room.to_string(), crate::hex::decode_array(secret)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_round_trips_and_the_server_sees_only_a_hash_of_a_hash() {
        let secret = [7u8; 32];
        let l = link("https://chat.example/rooms/square", &secret);
        assert_eq!(parse(&l), Some(("https://chat.example/rooms/square".to_string(), secret)));
        assert_eq!(parse("https://chat.example/rooms/square"), None);
        assert_eq!(parse("https://chat.example/rooms/square#abc"), None);
        let t = token(&secret);
        assert_ne!(t, secret);
        assert_ne!(token_hash(&t), t);
        assert_ne!(token(&[8; 32]), t);
    }
}

//! Request signing.
//!
//! Every request made for a user carries four headers: the user's key ([`HEADER_KEY`]), a
//! timestamp in Unix milliseconds ([`HEADER_TIMESTAMP`]), a random nonce ([`HEADER_NONCE`]) and an
//! Ed25519 signature ([`HEADER_SIGNATURE`], base64) over [`signing_bytes`]: the server's public
//! key, the method, the path with its query, the timestamp, the nonce and the SHA-256 of the
//! body. Binding the server key stops a request signed for one server from being replayed to
//! another; the nonce and timestamp stop replays to the same one.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::hex::encode as to_hex;
use crate::UserId;

/// Header carrying the signer's user id (hex public key).
pub const HEADER_KEY: &str = "x-grove-key";
/// Header carrying the request time, Unix milliseconds.
pub const HEADER_TIMESTAMP: &str = "x-grove-timestamp";
/// Header carrying a fresh random nonce, 16 to 64 characters of `[A-Za-z0-9_-]`.
pub const HEADER_NONCE: &str = "x-grove-nonce";
/// Header carrying the base64 Ed25519 signature.
pub const HEADER_SIGNATURE: &str = "x-grove-signature";

/// The bytes a request signature covers.
pub fn signing_bytes(
    server_key: &[u8; 32],
    method: &str,
    path_and_query: &str,
    timestamp_ms: i64,
    nonce: &str,
    body: &[u8],
) -> Vec<u8> {
    signing_bytes_prehashed(server_key, method, path_and_query, timestamp_ms, nonce, &Sha256::digest(body).into())
}

/// The bytes a request signature covers, given the SHA-256 of the body. A streamed body (an
/// upload part) is signed this way: the client hashes it first and sends the hash in
/// [`HEADER_CONTENT_SHA256`], so the server can check the signature before it reads the body
/// and compare the hash when the body has been read.
pub fn signing_bytes_prehashed(
    server_key: &[u8; 32],
    method: &str,
    path_and_query: &str,
    timestamp_ms: i64,
    nonce: &str,
    body_sha256: &[u8; 32],
) -> Vec<u8> {
    format!(
        "grove-request-v1\n{}\n{}\n{}\n{}\n{}\n{}",
        to_hex(server_key),
        method.to_ascii_uppercase(),
        path_and_query,
        timestamp_ms,
        nonce,
        to_hex(body_sha256)
    )
    .into_bytes()
}

/// Header carrying the SHA-256 of a streamed body (64 lowercase hex characters); see
/// [`signing_bytes_prehashed`].
pub const HEADER_CONTENT_SHA256: &str = "x-grove-content-sha256";

/// Parses a [`HEADER_CONTENT_SHA256`] value: exactly 64 lowercase hex characters.
pub fn parse_sha256_hex(s: &str) -> Option<[u8; 32]> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    crate::hex::decode_array(s)
}

/// Lowercase hex of a SHA-256, as [`HEADER_CONTENT_SHA256`] carries it.
pub fn sha256_hex(hash: &[u8; 32]) -> String {
    to_hex(hash)
}

/// Whether a nonce has an acceptable shape.
pub fn nonce_is_valid(nonce: &str) -> bool {
    (16..=64).contains(&nonce.len()) && nonce.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The four header values of a signed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHeaders {
    /// [`HEADER_KEY`]
    pub key: String,
    /// [`HEADER_TIMESTAMP`]
    pub timestamp: String,
    /// [`HEADER_NONCE`]
    pub nonce: String,
    /// [`HEADER_SIGNATURE`]
    pub signature: String,
}

/// Signs a request; the caller supplies the time and a fresh nonce.
#[allow(clippy::too_many_arguments)] // one argument per signed field, in signing order
pub fn sign_request(
    key: &SigningKey,
    server_key: &[u8; 32],
    method: &str,
    path_and_query: &str,
    timestamp_ms: i64,
    nonce: &str,
    body: &[u8],
) -> SignedHeaders {
    sign_request_prehashed(key, server_key, method, path_and_query, timestamp_ms, nonce, &Sha256::digest(body).into())
}

/// [`sign_request`] for a body known by its SHA-256 (a streamed upload part: send the hash in
/// [`HEADER_CONTENT_SHA256`] too).
#[allow(clippy::too_many_arguments)] // one argument per signed field, in signing order
pub fn sign_request_prehashed(
    key: &SigningKey,
    server_key: &[u8; 32],
    method: &str,
    path_and_query: &str,
    timestamp_ms: i64,
    nonce: &str,
    body_sha256: &[u8; 32],
) -> SignedHeaders {
    let msg = signing_bytes_prehashed(server_key, method, path_and_query, timestamp_ms, nonce, body_sha256);
    let sig = key.sign(&msg);
    SignedHeaders {
        key: UserId(key.verifying_key().to_bytes()).to_string(),
        timestamp: timestamp_ms.to_string(),
        nonce: nonce.to_string(),
        signature: crate::b64::encode(&sig.to_bytes()),
    }
}

/// Why a signature did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The key is not a valid Ed25519 point.
    #[error("the key is not a valid Ed25519 public key")]
    BadKey,
    /// The signature is not 64 bytes of base64.
    #[error("the signature is not 64 bytes of base64")]
    BadEncoding,
    /// The signature does not match.
    #[error("the signature does not verify")]
    Mismatch,
}

/// Verifies a request signature (strict Ed25519 verification).
#[allow(clippy::too_many_arguments)] // one argument per signed field, in signing order
pub fn verify_request(
    user: &UserId,
    signature_b64: &str,
    server_key: &[u8; 32],
    method: &str,
    path_and_query: &str,
    timestamp_ms: i64,
    nonce: &str,
    body: &[u8],
) -> Result<(), VerifyError> {
    let vk = user.verifying_key().ok_or(VerifyError::BadKey)?;
    verify_request_key(&vk, signature_b64, server_key, method, path_and_query, timestamp_ms, nonce, body)
}

/// [`verify_request`] with the user's key already decoded (decoding a point is a good part of
/// a verification's cost; a server can keep the decoded keys of active users).
#[allow(clippy::too_many_arguments)] // one argument per signed field, in signing order
pub fn verify_request_key(
    key: &VerifyingKey,
    signature_b64: &str,
    server_key: &[u8; 32],
    method: &str,
    path_and_query: &str,
    timestamp_ms: i64,
    nonce: &str,
    body: &[u8],
) -> Result<(), VerifyError> {
    let hash = Sha256::digest(body).into();
    verify_request_key_prehashed(key, signature_b64, server_key, method, path_and_query, timestamp_ms, nonce, &hash)
}

/// [`verify_request_key`] for a body known by its (declared) SHA-256. The caller must still
/// check that the body it reads has that hash.
#[allow(clippy::too_many_arguments)] // one argument per signed field, in signing order
pub fn verify_request_key_prehashed(
    key: &VerifyingKey,
    signature_b64: &str,
    server_key: &[u8; 32],
    method: &str,
    path_and_query: &str,
    timestamp_ms: i64,
    nonce: &str,
    body_sha256: &[u8; 32],
) -> Result<(), VerifyError> {
    let sig = crate::b64::decode(signature_b64).map_err(|_| VerifyError::BadEncoding)?;
    let sig = <[u8; 64]>::try_from(sig.as_slice()).map_err(|_| VerifyError::BadEncoding)?;
    let sig = Signature::from_bytes(&sig);
    let msg = signing_bytes_prehashed(server_key, method, path_and_query, timestamp_ms, nonce, body_sha256);
    key.verify_strict(&msg, &sig).map_err(|_| VerifyError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prehashed_signature_is_the_signature_of_the_body() {
        let k = key(3);
        let body = b"part bytes";
        let hash: [u8; 32] = Sha256::digest(body).into();
        let plain = sign_request(&k, &[1; 32], "PUT", "/p?offset=0", 5, "nonce-nonce-nonce", body);
        let pre = sign_request_prehashed(&k, &[1; 32], "PUT", "/p?offset=0", 5, "nonce-nonce-nonce", &hash);
        assert_eq!(plain, pre);
        let vk = k.verifying_key();
        let verify = |h: &[u8; 32]| {
            verify_request_key_prehashed(&vk, &pre.signature, &[1; 32], "PUT", "/p?offset=0", 5, "nonce-nonce-nonce", h)
        };
        assert_eq!(verify(&hash), Ok(()));
        assert_eq!(verify(&[0; 32]), Err(VerifyError::Mismatch));
        assert_eq!(parse_sha256_hex(&sha256_hex(&hash)), Some(hash));
        assert_eq!(parse_sha256_hex(&sha256_hex(&hash).to_uppercase()), None);
        assert_eq!(parse_sha256_hex("ab"), None);
    }

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn a_signed_request_verifies_and_any_change_breaks_it() {
        let k = key(1);
        let server = [9u8; 32];
        let h = sign_request(&k, &server, "post", "/v1/rooms?x=1", 1000, "abcdefghijklmnop", b"{}");
        let user: UserId = h.key.parse().unwrap();
        let ok = |m: &str, p: &str, t: i64, n: &str, b: &[u8], s: &[u8; 32]| {
            verify_request(&user, &h.signature, s, m, p, t, n, b).is_ok()
        };
        assert!(ok("POST", "/v1/rooms?x=1", 1000, "abcdefghijklmnop", b"{}", &server));
        assert!(!ok("GET", "/v1/rooms?x=1", 1000, "abcdefghijklmnop", b"{}", &server));
        assert!(!ok("POST", "/v1/rooms?x=2", 1000, "abcdefghijklmnop", b"{}", &server));
        assert!(!ok("POST", "/v1/rooms?x=1", 1001, "abcdefghijklmnop", b"{}", &server));
        assert!(!ok("POST", "/v1/rooms?x=1", 1000, "abcdefghijklmnoq", b"{}", &server));
        assert!(!ok("POST", "/v1/rooms?x=1", 1000, "abcdefghijklmnop", b"{ }", &server));
        assert!(!ok("POST", "/v1/rooms?x=1", 1000, "abcdefghijklmnop", b"{}", &[8u8; 32]));
        let other = UserId(key(2).verifying_key().to_bytes());
        assert_eq!(
            verify_request(&other, &h.signature, &server, "POST", "/v1/rooms?x=1", 1000, "abcdefghijklmnop", b"{}"),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn nonce_shapes() {
        assert!(nonce_is_valid("abcdefghijklmnop"));
        assert!(!nonce_is_valid("short"));
        assert!(!nonce_is_valid("abcdefghijklmnop\n"));
        assert!(!nonce_is_valid(&"a".repeat(65)));
    }
}

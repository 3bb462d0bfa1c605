//! The primitives: the HMAC-SHA256 chain ratchet, the per-message HKDF, AES-256-GCM.

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce, Tag};
use hkdf::Hkdf;
use hmac::digest::generic_array::GenericArray;
use hmac::digest::FixedOutput;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::{SenderKeyError, TAG_LEN};

/// 32 secret bytes that are wiped when dropped.
pub(crate) type Secret32 = Zeroizing<[u8; 32]>;

/// The HKDF `info` for a message's AEAD key and nonce.
const MESSAGE_KEY_INFO: &[u8] = b"grove sender-keys v1 message key";

/// `HMAC-SHA256(key, [byte])`, written straight into a zeroizing buffer.
fn hmac_byte(key: &[u8; 32], byte: u8) -> Result<Secret32, SenderKeyError> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).map_err(|_| SenderKeyError::Internal("HMAC key"))?;
    mac.update(&[byte]);
    let mut out = Zeroizing::new([0u8; 32]);
    FixedOutput::finalize_into(mac, GenericArray::from_mut_slice(&mut out[..]));
    Ok(out)
}

/// One ratchet step from chain key `CK_n`: (`MK_n`, `CK_{n+1}`).
pub(crate) fn ratchet(chain_key: &[u8; 32]) -> Result<(Secret32, Secret32), SenderKeyError> {
    Ok((hmac_byte(chain_key, 0x01)?, hmac_byte(chain_key, 0x02)?))
}

/// The AES-256-GCM cipher and nonce for message key `MK_n`.
fn message_cipher(message_key: &[u8; 32]) -> Result<(Aes256Gcm, [u8; 12]), SenderKeyError> {
    let mut okm = Zeroizing::new([0u8; 44]);
    Hkdf::<Sha256>::new(None, message_key)
        .expand(MESSAGE_KEY_INFO, &mut okm[..])
        .map_err(|_| SenderKeyError::Internal("HKDF length"))?;
    let cipher = Aes256Gcm::new_from_slice(&okm[..32]).map_err(|_| SenderKeyError::Internal("AES key length"))?;
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&okm[32..]);
    Ok((cipher, nonce))
}

/// Encrypts `buf` in place under `MK_n` with `aad`, returning the tag.
pub(crate) fn seal(message_key: &[u8; 32], aad: &[u8], buf: &mut [u8]) -> Result<[u8; TAG_LEN], SenderKeyError> {
    let (cipher, nonce) = message_cipher(message_key)?;
    let tag = cipher
        .encrypt_in_place_detached(Nonce::from_slice(&nonce), aad, buf)
        .map_err(|_| SenderKeyError::Internal("AES-GCM refused to encrypt"))?;
    let mut out = [0u8; TAG_LEN];
    out.copy_from_slice(&tag);
    Ok(out)
}

/// Decrypts `ciphertext ‖ tag` under `MK_n` with `aad`.
pub(crate) fn open(message_key: &[u8; 32], aad: &[u8], ciphertext_and_tag: &[u8]) -> Result<Vec<u8>, SenderKeyError> {
    let body_len = ciphertext_and_tag.len().checked_sub(TAG_LEN).ok_or(SenderKeyError::Malformed("no AEAD tag"))?;
    let (body, tag) = ciphertext_and_tag.split_at(body_len);
    let (cipher, nonce) = message_cipher(message_key)?;
    let mut buf = body.to_vec();
    cipher
        .decrypt_in_place_detached(Nonce::from_slice(&nonce), aad, &mut buf, Tag::from_slice(tag))
        .map_err(|_| SenderKeyError::DecryptionFailed)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratchet_is_hmac_with_labels_1_and_2() {
        let ck = [7u8; 32];
        let (mk, next) = ratchet(&ck).unwrap();
        let mut m = <Hmac<Sha256> as hmac::digest::KeyInit>::new_from_slice(&ck).unwrap();
        m.update(&[1]);
        assert_eq!(&m.finalize().into_bytes()[..], &mk[..]);
        let mut m = <Hmac<Sha256> as hmac::digest::KeyInit>::new_from_slice(&ck).unwrap();
        m.update(&[2]);
        assert_eq!(&m.finalize().into_bytes()[..], &next[..]);
        assert_ne!(mk, next);
    }

    #[test]
    fn seal_then_open_and_tamper() {
        let mk = [9u8; 32];
        let mut buf = b"hello".to_vec();
        let tag = seal(&mk, b"aad", &mut buf).unwrap();
        assert_ne!(&buf[..], b"hello");
        let mut ct = buf.clone();
        ct.extend_from_slice(&tag);
        assert_eq!(open(&mk, b"aad", &ct).unwrap(), b"hello");
        assert_eq!(open(&mk, b"aaD", &ct), Err(SenderKeyError::DecryptionFailed));
        assert_eq!(open(&[8u8; 32], b"aad", &ct), Err(SenderKeyError::DecryptionFailed));
        assert_eq!(open(&mk, b"aad", &ct[..15]), Err(SenderKeyError::Malformed("no AEAD tag")));
    }
}

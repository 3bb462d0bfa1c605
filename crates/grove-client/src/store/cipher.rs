//! The profile locked at rest: value-level encryption of the state file's secrets.
//!
//! A profile made with a passphrase keeps a random 32-byte *data key*; every secret value in
//! the state file (the identity secret and the rest of `meta`, MLS snapshots, epochs, journal
//! rows and KeyPackages, sender-keys and Olm records, history bodies, names and signed
//! profiles, the outbox's plaintext and ciphertext) is sealed under it with XChaCha20-Poly1305
//! (a random 192-bit nonce per value; the column's name as associated data, so a value cannot
//! be moved to another column). The data key itself is stored in the `meta` row `cipher`,
//! sealed under a key derived from the passphrase with Argon2id (its salt and cost in the same
//! row). A wrong passphrase fails to open that seal, so nothing is decrypted and nothing is
//! written; changing the passphrase reseals the data key only.
//!
//! What stays in clear (the layout's keys, needed for lookups and ordering): room links,
//! server URLs and room names, group ids, sequence numbers, timestamps, senders' user ids,
//! kinds of history lines, record keys, name revisions. See docs/privacy.md.
//!
//! Why not SQLCipher for the whole file: rusqlite's `bundled-sqlcipher` replaces the one
//! `libsqlite3-sys` of the workspace — the server's store included — and needs OpenSSL's
//! libcrypto at build and run time (or a vendored OpenSSL build), where everything else in
//! grove is pure Rust. Value-level encryption (as matrix-sdk-sqlite's store cipher) keeps
//! the server untouched and the toolchain as it is, at the cost of the clear metadata above.

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::StoreError;

/// The first byte of a sealed value: the format.
const SEALED_V1: u8 = 1;
const NONCE_LEN: usize = 24;
/// Associated data of the sealed data key.
const KEY_CONTEXT: &[u8] = b"grove profile data key v1";

/// Argon2id's cost for new profiles: 64 MiB, 3 passes, 1 lane (RFC 9106's second
/// recommended option). Stored with the salt, so it can be raised later without breaking
/// existing profiles.
const MEMORY_KIB: u32 = 64 * 1024;
const PASSES: u32 = 3;
const LANES: u32 = 1;

/// A profile's passphrase (wiped from memory when dropped).
#[derive(Clone)]
pub struct Passphrase(Zeroizing<String>);

impl Passphrase {
    /// A passphrase; refused when empty.
    pub fn new(s: String) -> Result<Passphrase, StoreError> {
        let s = Zeroizing::new(s);
        if s.is_empty() {
            return Err(StoreError::Corrupt(
                "the passphrase is empty: choose one, or make the profile without --passphrase".into(),
            ));
        }
        Ok(Passphrase(s))
    }
}

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passphrase(..)")
    }
}

/// The `cipher` row of `meta`: how the data key is sealed.
#[derive(Serialize, Deserialize)]
pub(crate) struct KeyRecord {
    kdf: String,
    memory_kib: u32,
    passes: u32,
    lanes: u32,
    #[serde(with = "grove_wire::b64")]
    salt: Vec<u8>,
    /// nonce ‖ XChaCha20-Poly1305(data key).
    #[serde(with = "grove_wire::b64")]
    sealed_key: Vec<u8>,
}

/// How values go in and out of the state file.
#[derive(Clone, Default)]
pub(crate) enum Cipher {
    /// A profile without a passphrase: values as they are.
    #[default]
    Plain,
    /// Sealed under the data key.
    Sealed(Zeroizing<[u8; 32]>),
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Cipher::Plain => "Cipher::Plain",
            Cipher::Sealed(_) => "Cipher::Sealed",
        })
    }
}

fn derive(passphrase: &Passphrase, rec: &KeyRecord) -> Result<Zeroizing<[u8; 32]>, StoreError> {
    if rec.kdf != "argon2id" {
        return Err(StoreError::Corrupt(format!("the profile's key uses {:?}, unknown to this grove", rec.kdf)));
    }
    let params = Params::new(rec.memory_kib, rec.passes, rec.lanes, Some(32))
        .map_err(|e| StoreError::Corrupt(format!("the profile key's Argon2 parameters: {e}")))?;
    let mut out = Zeroizing::new([0u8; 32]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(passphrase.0.as_bytes(), &rec.salt, out.as_mut())
        .map_err(|e| StoreError::Corrupt(format!("deriving the profile key: {e}")))?;
    Ok(out)
}

fn seal_with(key: &[u8; 32], aad: &[u8], plain: &[u8]) -> Result<Vec<u8>, StoreError> {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    // Fails only past 256 GiB, far beyond any SQLite value.
    let ct = XChaCha20Poly1305::new(key.into())
        .encrypt(XNonce::from_slice(&nonce), Payload { msg: plain, aad })
        .map_err(|_| StoreError::Corrupt("a value too large to seal".into()))?;
    Ok([&[SEALED_V1][..], &nonce, &ct].concat())
}

fn open_with(key: &[u8; 32], aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    let (&version, rest) = sealed.split_first()?;
    if version != SEALED_V1 || rest.len() < NONCE_LEN {
        return None;
    }
    let (nonce, ct) = rest.split_at(NONCE_LEN);
    XChaCha20Poly1305::new(key.into()).decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad }).ok()
}

impl KeyRecord {
    /// A fresh data key sealed under `passphrase`: the record to store and the cipher.
    pub(crate) fn create(passphrase: &Passphrase) -> Result<(KeyRecord, Cipher), StoreError> {
        let mut data_key = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(data_key.as_mut());
        let rec = KeyRecord::seal(passphrase, &data_key)?;
        Ok((rec, Cipher::Sealed(data_key)))
    }

    fn seal(passphrase: &Passphrase, data_key: &[u8; 32]) -> Result<KeyRecord, StoreError> {
        let mut salt = vec![0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        let mut rec = KeyRecord {
            kdf: "argon2id".into(),
            memory_kib: MEMORY_KIB,
            passes: PASSES,
            lanes: LANES,
            salt,
            sealed_key: Vec::new(),
        };
        let kek = derive(passphrase, &rec)?;
        rec.sealed_key = seal_with(&kek, KEY_CONTEXT, data_key)?;
        Ok(rec)
    }

    /// The cipher, if `passphrase` is the right one.
    pub(crate) fn unlock(&self, passphrase: &Passphrase) -> Result<Cipher, StoreError> {
        let kek = derive(passphrase, self)?;
        let key = open_with(&kek, KEY_CONTEXT, &self.sealed_key).ok_or(StoreError::WrongPassphrase)?;
        let key: [u8; 32] = key.try_into().map_err(|_| StoreError::Corrupt("the profile's data key".into()))?;
        Ok(Cipher::Sealed(Zeroizing::new(key)))
    }

    /// The same data key sealed under a new passphrase (fresh salt).
    pub(crate) fn reseal(cipher: &Cipher, passphrase: &Passphrase) -> Result<KeyRecord, StoreError> {
        match cipher {
            Cipher::Sealed(key) => KeyRecord::seal(passphrase, key),
            Cipher::Plain => Err(StoreError::NotEncrypted),
        }
    }

    pub(crate) fn encode(&self) -> Result<Vec<u8>, StoreError> {
        serde_json::to_vec(self).map_err(|e| StoreError::Corrupt(format!("the profile's key record: {e}")))
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<KeyRecord, StoreError> {
        serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("the profile's key record: {e}")))
    }
}

impl Cipher {
    /// Whether values are sealed.
    pub(crate) fn is_sealed(&self) -> bool {
        matches!(self, Cipher::Sealed(_))
    }

    /// A value to write into `column` (`table.column`).
    pub(crate) fn seal(&self, column: &str, plain: &[u8]) -> Result<Vec<u8>, StoreError> {
        match self {
            Cipher::Plain => Ok(plain.to_vec()),
            Cipher::Sealed(key) => seal_with(key, column.as_bytes(), plain),
        }
    }

    /// A text value to write into `column`: text as today without a passphrase, sealed bytes
    /// with one.
    pub(crate) fn seal_text(&self, column: &str, plain: &str) -> Result<rusqlite::types::Value, StoreError> {
        Ok(match self {
            Cipher::Plain => rusqlite::types::Value::Text(plain.to_string()),
            Cipher::Sealed(_) => rusqlite::types::Value::Blob(self.seal(column, plain.as_bytes())?),
        })
    }

    /// A value read from `column`.
    pub(crate) fn open(&self, column: &str, stored: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        match self {
            Cipher::Plain => Ok(stored),
            Cipher::Sealed(key) => open_with(key, column.as_bytes(), &stored)
                .ok_or_else(|| StoreError::Corrupt(format!("a sealed value in {column} does not open"))),
        }
    }

    /// A text value read from `column`.
    pub(crate) fn open_text(&self, column: &str, stored: Vec<u8>) -> Result<String, StoreError> {
        String::from_utf8(self.open(column, stored)?).map_err(|_| StoreError::Corrupt(format!("{column} is not text")))
    }

    /// The key Olm pickles are encrypted with when the profile has a passphrase: derived from
    /// the data key, which is never stored in clear. `None` without a passphrase (the Olm
    /// module then derives it from the identity secret, as before: such a profile protects
    /// nothing at rest).
    pub(crate) fn pickle_key(&self) -> Option<Zeroizing<[u8; 32]>> {
        let Cipher::Sealed(key) = self else { return None };
        let mut h = Sha256::new();
        h.update(b"grove olm pickle key v2");
        h.update(key.as_ref());
        Some(Zeroizing::new(h.finalize().into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_opens_only_in_its_column_and_only_under_its_key() {
        let pass = Passphrase::new("correct horse".into()).unwrap();
        let (rec, cipher) = KeyRecord::create(&pass).unwrap();
        let sealed = cipher.seal("messages.body", b"hello").unwrap();
        assert!(!sealed.windows(5).any(|w| w == b"hello"));
        assert_eq!(cipher.open("messages.body", sealed.clone()).unwrap(), b"hello");
        assert!(cipher.open("outbox.content", sealed.clone()).is_err());
        let again = KeyRecord::decode(&rec.encode().unwrap()).unwrap().unlock(&pass).unwrap();
        assert_eq!(again.open("messages.body", sealed).unwrap(), b"hello");
        let wrong = Passphrase::new("wrong horse".into()).unwrap();
        assert!(matches!(rec.unlock(&wrong), Err(StoreError::WrongPassphrase)));
    }

    #[test]
    fn a_new_passphrase_opens_the_same_data_key_and_the_old_one_no_longer_does() {
        let old = Passphrase::new("old".into()).unwrap();
        let new = Passphrase::new("new".into()).unwrap();
        let (_, cipher) = KeyRecord::create(&old).unwrap();
        let sealed = cipher.seal("meta.value", b"secret").unwrap();
        let rec = KeyRecord::reseal(&cipher, &new).unwrap();
        assert!(matches!(rec.unlock(&old), Err(StoreError::WrongPassphrase)));
        assert_eq!(rec.unlock(&new).unwrap().open("meta.value", sealed).unwrap(), b"secret");
        assert!(cipher.pickle_key().is_some() && Cipher::Plain.pickle_key().is_none());
    }
}

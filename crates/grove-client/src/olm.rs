//! Pairwise Olm sessions (vodozemac, Olm only) that carry Sender Keys distributions and
//! sender-keys invitations between users.
//!
//! Olm keys are bound to grove identities by the user's Ed25519 identity key:
//! - a published key (one-time or fallback) is `curve25519 identity (32) ‖ key (32) ‖ signature
//!   (64)`, the signature by the user's identity over `grove-olm-key-v1 ‖ identity ‖ key`;
//! - every pairwise message ([`Envelope`]) carries the sender's Curve25519 identity key and
//!   their identity's signature over `grove-olm-identity-v1 ‖ curve25519 identity ‖ home`.
//!
//! A message is decrypted only with the sessions of the user the server says deposited it, after
//! checking that user's signature on the Curve25519 identity key the Olm message was made with,
//! so a plaintext that comes out of [`OlmDevice::decrypt`] is from that user's own session.
//!
//! This lives in the client, not in sans-IO grove-proto: vodozemac draws its key material from
//! the OS RNG itself and takes no injected RNG.
//!
//! State: the account and each peer's sessions are vodozemac pickles, as records
//! (`olm/account`, `olm/s/<user>`), encrypted with a key derived from the profile's data key
//! when the profile is locked with a passphrase (`store::cipher`: never stored in clear), else
//! from the identity secret.

use std::collections::{BTreeMap, BTreeSet};

use grove_proto::identity::Identity;
use grove_proto::senderkeys::room::Record;
use grove_wire::UserId;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use vodozemac::olm::{Account, AccountPickle, OlmMessage, Session, SessionConfig, SessionPickle};
use vodozemac::Curve25519PublicKey;
use zeroize::Zeroizing;

/// How many sessions per peer are kept (the newest first).
const SESSIONS_PER_PEER: usize = 4;
const KEY_CONTEXT: &[u8] = b"grove-olm-key-v1";
const IDENTITY_CONTEXT: &[u8] = b"grove-olm-identity-v1";
/// The length of a published key bundle.
pub(crate) const BUNDLE_LEN: usize = 128;

/// Why a pairwise operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OlmError {
    /// A published key does not verify under its user's identity, or is malformed.
    #[error("the published Olm key of {0} is invalid")]
    BadBundle(String),
    /// The envelope's Curve25519 identity is not signed by the user who deposited it.
    #[error("the pairwise message's key is not signed by its sender")]
    BadIdentity,
    /// No session of the sender decrypts the message.
    #[error("no pairwise session of {0} decrypts the message")]
    NoSession(String),
    /// No session with the peer: claim a key and start one.
    #[error("no pairwise session with {0}")]
    NeedSession(String),
    /// vodozemac refused.
    #[error("olm: {0}")]
    Olm(String),
    /// The stored state does not decode.
    #[error("corrupt stored Olm state: {0}")]
    Corrupt(String),
}

/// One pairwise message, as deposited in the recipient's mailbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The sender's Curve25519 identity key.
    #[serde(with = "grove_wire::b64")]
    pub curve25519: Vec<u8>,
    /// The sender's home server, `HOST:PORT` (signed with the key).
    pub home: String,
    /// The sender identity's signature over the key and home.
    #[serde(with = "grove_wire::b64")]
    pub signature: Vec<u8>,
    /// Olm message type (0 pre-key, 1 normal).
    pub message_type: usize,
    /// The Olm message.
    #[serde(with = "grove_wire::b64")]
    pub ciphertext: Vec<u8>,
}

/// A user's Olm account and sessions.
pub struct OlmDevice {
    identity: Identity,
    home: String,
    account: Account,
    sessions: BTreeMap<UserId, Vec<Session>>,
    pickle_key: Zeroizing<[u8; 32]>,
    dirty_account: bool,
    dirty_peers: BTreeSet<UserId>,
}

impl std::fmt::Debug for OlmDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OlmDevice").field("peers", &self.sessions.len()).finish_non_exhaustive()
    }
}

fn pickle_key(identity: &Identity) -> Zeroizing<[u8; 32]> {
    let mut h = Sha256::new();
    h.update(b"grove olm pickle key v1");
    h.update(identity.secret_bytes());
    Zeroizing::new(h.finalize().into())
}

fn identity_message(curve: &[u8], home: &str) -> Vec<u8> {
    [IDENTITY_CONTEXT, curve, home.as_bytes()].concat()
}

impl OlmDevice {
    /// A new account (records to persist: [`OlmDevice::take_changes`]), pickled under a key
    /// derived from the identity secret.
    pub fn new(identity: Identity, home: &str) -> OlmDevice {
        let key = pickle_key(&identity);
        Self::new_with_key(identity, home, key)
    }

    /// [`OlmDevice::new`], pickled under `pickle_key`.
    pub fn new_with_key(identity: Identity, home: &str, pickle_key: Zeroizing<[u8; 32]>) -> OlmDevice {
        OlmDevice {
            identity,
            home: home.to_string(),
            account: Account::new(),
            sessions: BTreeMap::new(),
            pickle_key,
            dirty_account: true,
            dirty_peers: BTreeSet::new(),
        }
    }

    /// Loads the account from its records (`olm/` stripped), or makes a new one if there is none.
    pub fn load(
        identity: Identity,
        home: &str,
        records: &[(String, Zeroizing<Vec<u8>>)],
    ) -> Result<OlmDevice, OlmError> {
        let key = pickle_key(&identity);
        Self::load_with_key(identity, home, records, key)
    }

    /// [`OlmDevice::load`] with the pickles under `key` (a locked profile's: from its data key).
    pub fn load_with_key(
        identity: Identity,
        home: &str,
        records: &[(String, Zeroizing<Vec<u8>>)],
        key: Zeroizing<[u8; 32]>,
    ) -> Result<OlmDevice, OlmError> {
        let corrupt = |w: &str| OlmError::Corrupt(w.to_string());
        let Some((_, account)) = records.iter().find(|(k, _)| k == "account") else {
            return Ok(OlmDevice::new_with_key(identity, home, key));
        };
        let text = std::str::from_utf8(account).map_err(|_| corrupt("account"))?;
        let account = Account::from_pickle(AccountPickle::from_encrypted(text, &key).map_err(|_| corrupt("account"))?);
        let mut sessions = BTreeMap::new();
        for (k, v) in records {
            let Some(user) = k.strip_prefix("s/") else { continue };
            let user: UserId = user.parse().map_err(|_| corrupt("session key"))?;
            let text = std::str::from_utf8(v).map_err(|_| corrupt("sessions"))?;
            let mut list = Vec::new();
            for line in text.lines() {
                let p = SessionPickle::from_encrypted(line, &key).map_err(|_| corrupt("session"))?;
                list.push(Session::from_pickle(p));
            }
            sessions.insert(user, list);
        }
        Ok(OlmDevice {
            identity,
            home: home.to_string(),
            account,
            sessions,
            pickle_key: key,
            dirty_account: false,
            dirty_peers: BTreeSet::new(),
        })
    }

    /// The records changed since the last call, keys prefixed with `olm/`. Persist them before
    /// anything made since leaves the machine.
    pub fn take_changes(&mut self) -> Vec<Record> {
        let mut out = Vec::new();
        if std::mem::take(&mut self.dirty_account) {
            let p = self.account.pickle().encrypt(&self.pickle_key);
            out.push(Record { key: "olm/account".into(), value: Some(Zeroizing::new(p.into_bytes())) });
        }
        for user in std::mem::take(&mut self.dirty_peers) {
            let list = self
                .sessions
                .get(&user)
                .map(|l| l.iter().map(|s| s.pickle().encrypt(&self.pickle_key)).collect::<Vec<_>>().join("\n"));
            out.push(Record { key: format!("olm/s/{user}"), value: list.map(|t| Zeroizing::new(t.into_bytes())) });
        }
        out
    }

    fn bundle(&self, key: &Curve25519PublicKey) -> Vec<u8> {
        let curve = self.account.curve25519_key().to_bytes();
        let msg = [KEY_CONTEXT, &curve[..], key.as_bytes()].concat();
        [&curve[..], key.as_bytes(), &self.identity.sign(&msg)[..]].concat()
    }

    /// Makes `n` one-time keys and, if `fallback`, a new fallback key; answers their bundles to
    /// publish (one-time, fallback). Persist [`OlmDevice::take_changes`] before publishing.
    pub fn new_keys(&mut self, n: usize, fallback: bool) -> (Vec<Vec<u8>>, Option<Vec<u8>>) {
        self.account.generate_one_time_keys(n);
        let one_time: Vec<Vec<u8>> = self.account.one_time_keys().values().map(|k| self.bundle(k)).collect();
        let fb = if fallback {
            self.account.generate_fallback_key();
            self.account.fallback_key().values().next().map(|k| self.bundle(k))
        } else {
            None
        };
        self.account.mark_keys_as_published();
        self.dirty_account = true;
        (one_time, fb)
    }

    /// Whether there is a session with `peer`.
    pub fn has_session(&self, peer: &UserId) -> bool {
        self.sessions.get(peer).is_some_and(|l| !l.is_empty())
    }

    /// Starts an outbound session with `peer` from a key bundle claimed from the directory.
    pub fn start_session(&mut self, peer: &UserId, bundle: &[u8]) -> Result<(), OlmError> {
        let bad = || OlmError::BadBundle(peer.short());
        if bundle.len() != BUNDLE_LEN {
            return Err(bad());
        }
        let sig: [u8; 64] = bundle[64..].try_into().map_err(|_| bad())?;
        let msg = [KEY_CONTEXT, &bundle[..64]].concat();
        grove_proto::identity::verify(peer, &msg, &sig).map_err(|_| bad())?;
        let identity = Curve25519PublicKey::from_slice(&bundle[..32]).map_err(|_| bad())?;
        let one_time = Curve25519PublicKey::from_slice(&bundle[32..64]).map_err(|_| bad())?;
        let session = self
            .account
            .create_outbound_session(SessionConfig::version_1(), identity, one_time)
            .map_err(|e| OlmError::Olm(e.to_string()))?;
        let list = self.sessions.entry(*peer).or_default();
        list.insert(0, session);
        list.truncate(SESSIONS_PER_PEER);
        self.dirty_peers.insert(*peer);
        Ok(())
    }

    /// Encrypts `plaintext` for `peer` over the newest session.
    pub fn encrypt(&mut self, peer: &UserId, plaintext: &[u8]) -> Result<Envelope, OlmError> {
        let session = self
            .sessions
            .get_mut(peer)
            .and_then(|l| l.first_mut())
            .ok_or_else(|| OlmError::NeedSession(peer.short()))?;
        let (message_type, ciphertext) =
            session.encrypt(plaintext).map_err(|e| OlmError::Olm(e.to_string()))?.to_parts();
        self.dirty_peers.insert(*peer);
        let curve = self.account.curve25519_key().to_bytes().to_vec();
        let signature = self.identity.sign(&identity_message(&curve, &self.home)).to_vec();
        Ok(Envelope { curve25519: curve, home: self.home.clone(), signature, message_type, ciphertext })
    }

    /// Decrypts an envelope the server says `from` deposited: only `from`'s sessions are tried,
    /// and only after `from`'s identity signature over the envelope's Curve25519 key checks out.
    /// A pre-key message no session knows starts a new inbound session.
    pub fn decrypt(&mut self, from: &UserId, env: &Envelope) -> Result<Zeroizing<Vec<u8>>, OlmError> {
        let sig: [u8; 64] = env.signature.as_slice().try_into().map_err(|_| OlmError::BadIdentity)?;
        grove_proto::identity::verify(from, &identity_message(&env.curve25519, &env.home), &sig)
            .map_err(|_| OlmError::BadIdentity)?;
        let curve = Curve25519PublicKey::from_slice(&env.curve25519).map_err(|_| OlmError::BadIdentity)?;
        let message = OlmMessage::from_parts(env.message_type, &env.ciphertext)
            .map_err(|e| OlmError::Olm(format!("malformed message: {e}")))?;
        if let Some(list) = self.sessions.get_mut(from) {
            for (i, s) in list.iter_mut().enumerate() {
                if let Ok(p) = s.decrypt(&message) {
                    let s = list.remove(i);
                    list.insert(0, s);
                    self.dirty_peers.insert(*from);
                    return Ok(Zeroizing::new(p));
                }
            }
        }
        let OlmMessage::PreKey(pre) = &message else {
            return Err(OlmError::NoSession(from.short()));
        };
        let created = self
            .account
            .create_inbound_session(SessionConfig::version_1(), curve, pre)
            .map_err(|e| OlmError::NoSession(format!("{} ({e})", from.short())))?;
        self.dirty_account = true;
        let list = self.sessions.entry(*from).or_default();
        list.insert(0, created.session);
        list.truncate(SESSIONS_PER_PEER);
        self.dirty_peers.insert(*from);
        Ok(Zeroizing::new(created.plaintext))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(seed: u8) -> OlmDevice {
        OlmDevice::new(Identity::from_secret_bytes([seed; 32]), "127.0.0.1:1")
    }

    #[test]
    fn alice_and_bob_talk_and_mallory_cannot_pass_as_alice() {
        let (mut alice, mut bob, mut mallory) = (device(1), device(2), device(3));
        let (a, b, m) = (alice.identity.user_id(), bob.identity.user_id(), mallory.identity.user_id());
        let (bundles, _) = bob.new_keys(2, true);
        alice.start_session(&b, &bundles[0]).unwrap();
        let env = alice.encrypt(&b, b"hello bob").unwrap();
        assert_eq!(&bob.decrypt(&a, &env).unwrap()[..], b"hello bob");
        // Bob answers over the same session; Alice decrypts.
        let back = bob.encrypt(&a, b"hi alice").unwrap();
        assert_eq!(&alice.decrypt(&b, &back).unwrap()[..], b"hi alice");
        // Mallory starts her own session with Bob, then deposits it saying the sender is Alice:
        // her identity key is not signed by Alice.
        mallory.start_session(&b, &bundles[1]).unwrap();
        let forged = mallory.encrypt(&b, b"i am alice").unwrap();
        assert!(matches!(bob.decrypt(&a, &forged), Err(OlmError::BadIdentity)));
        // Mallory copies Alice's signed key into her envelope: no session of Alice decrypts it,
        // and a pre-key message made with Mallory's key does not match Alice's key.
        let mut copied = mallory.encrypt(&b, b"i am alice").unwrap();
        copied.curve25519 = env.curve25519.clone();
        copied.signature = env.signature.clone();
        assert!(bob.decrypt(&a, &copied).is_err());
        assert_eq!(&bob.decrypt(&m, &forged).unwrap()[..], b"i am alice");
        // A key bundle altered in transit is refused.
        let (mut more, _) = bob.new_keys(1, false);
        more[0][40] ^= 1;
        assert!(matches!(alice.start_session(&b, &more[0]), Err(OlmError::BadBundle(_))));
    }

    #[test]
    fn sessions_survive_a_restart_and_replays_fail() {
        let (mut alice, mut bob) = (device(1), device(2));
        let (a, b) = (alice.identity.user_id(), bob.identity.user_id());
        let (bundles, _) = bob.new_keys(1, false);
        alice.start_session(&b, &bundles[0]).unwrap();
        let env = alice.encrypt(&b, b"one").unwrap();
        let _ = alice.take_changes();
        assert_eq!(&bob.decrypt(&a, &env).unwrap()[..], b"one");
        let records: Vec<(String, Zeroizing<Vec<u8>>)> = bob
            .take_changes()
            .into_iter()
            .map(|r| (r.key.trim_start_matches("olm/").to_string(), r.value.unwrap()))
            .collect();
        let mut bob = OlmDevice::load(Identity::from_secret_bytes([2; 32]), "127.0.0.1:1", &records).unwrap();
        assert!(bob.decrypt(&a, &env).is_err(), "a replayed pre-key message is refused");
        let env2 = alice.encrypt(&b, b"two").unwrap();
        assert_eq!(&bob.decrypt(&a, &env2).unwrap()[..], b"two");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48)
    ))]

        /// A mailbox envelope from a hostile server: Alice's genuine envelope with one field
        /// changed (any byte of the ciphertext, key or signature; the message type; the home).
        /// Bob refuses it without a panic, and Alice's genuine envelope still decrypts, once.
        #[test]
        fn a_tampered_envelope_is_refused_and_the_genuine_one_still_reads(
            field in 0..5u8,
            at in proptest::prelude::any::<usize>(),
            x in 1..=255u8,
            junk in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
        ) {
            let (mut alice, mut bob) = (device(1), device(2));
            let (a, b) = (alice.identity.user_id(), bob.identity.user_id());
            let (bundles, _) = bob.new_keys(1, false);
            alice.start_session(&b, &bundles[0]).unwrap();
            let env = alice.encrypt(&b, b"the distribution").unwrap();
            let mut bad = env.clone();
            let flip = |v: &mut Vec<u8>| {
                let n = v.len().max(1);
                if let Some(byte) = v.get_mut(at % n) {
                    *byte ^= x;
                }
            };
            match field {
                0 => flip(&mut bad.ciphertext),
                1 => flip(&mut bad.curve25519),
                2 => flip(&mut bad.signature),
                3 => bad.message_type = at,
                _ => bad.ciphertext = junk,
            }
            if bad != env {
                proptest::prop_assert!(bob.decrypt(&a, &bad).is_err(), "a tampered envelope was accepted");
            }
            proptest::prop_assert_eq!(&bob.decrypt(&a, &env).unwrap()[..], b"the distribution");
        }
    }
}

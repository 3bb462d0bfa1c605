//! grove's MLS crypto provider: ciphersuite 1 of `mls-rs-crypto-rustcrypto`, with the randomness
//! injected instead of drawn from the OS.
//!
//! [`GroveCryptoProvider`] is an mls-rs [`CryptoProvider`] for [`CIPHER_SUITE`] only
//! (`MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519`). Every primitive is the RustCrypto
//! provider's ([`RustCryptoCipherSuite`]): same hash, HMAC, HKDF, AES-128-GCM, X25519 DH-KEM,
//! HPKE and Ed25519 code, so its output interoperates with any ciphersuite 1 implementation.
//! Only the *source of randomness* differs: every random byte comes from the RNG the caller
//! passed to [`GroveCryptoProvider::new`], shared (behind a mutex) by every cipher suite provider
//! mls-rs makes from it. Given the same RNG seed and the same sequence of operations, mls-rs'
//! output is the same (see the caveats in [`crate::mls::engine`]).
//!
//! # Where the RustCrypto provider draws randomness, and what this provider does instead
//!
//! The RustCrypto provider reads the OS RNG (`getrandom::SysRng`) in exactly two places:
//! `RustCryptoCipherSuite::random_bytes` and `ec::generate_private_key` (reached through
//! `Ecdh::generate` and `EcSigner::signature_key_generate`). Its AEAD takes explicit nonces and
//! Ed25519 signing is deterministic. So this provider
//!
//! - overrides [`CipherSuiteProvider::random_bytes`] (group ids, epoch secrets, path secrets,
//!   reuse guards, ...): bytes from the injected RNG;
//! - overrides [`CipherSuiteProvider::kem_generate`] (leaf and KeyPackage init HPKE keys):
//!   `DeriveKeyPair(ikm)` of RFC 9180 (the provider's `kem_derive`) with 32 bytes of `ikm` from
//!   the injected RNG, which is how RFC 9180 §7.1.3 allows `GenerateKeyPair` to be implemented;
//! - overrides [`CipherSuiteProvider::signature_key_generate`]: an Ed25519 seed from the
//!   injected RNG, returned in the RustCrypto provider's secret-key format (seed || public key,
//!   64 bytes);
//! - builds the HPKE KEM ([`DhKem`]) over a DH whose `generate` (the *ephemeral* key of every
//!   HPKE encapsulation: `hpke_seal`, `hpke_seal_psk`, `hpke_setup_s`) takes an X25519 secret
//!   of 32 bytes from the injected RNG and delegates everything else to the RustCrypto `Ecdh`.
//!
//! Every other method is delegated unchanged.
//!
//! [`GroveCryptoProvider::verify_only`] has no RNG at all: any operation that needs randomness
//! fails with [`GroveCryptoError::NoRandomness`]. The hub uses it: it only verifies.
//!
//! # The MAC tap
//!
//! mls-rs never hands out an epoch's membership key, yet a member who finds a commit's membership
//! tag wrong must reveal that key to prove it (see [`crate::mls::fault`]). So every provider made
//! from one [`GroveCryptoProvider`] shares a [`MacTap`]: off by default (then `mac` records
//! nothing); while the engine has it on, around the processing of one message it suspects, each
//! `mac` call's key and input are kept, and the engine takes them back with the tap off again.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use mls_rs_core::crypto::{
    CipherSuite, CipherSuiteProvider, CryptoProvider, HpkeCiphertext, HpkePsk, HpkePublicKey, HpkeSecretKey,
    SignaturePublicKey, SignatureSecretKey,
};
use mls_rs_core::error::IntoAnyError;
use mls_rs_crypto_hpke::context::{ContextR, ContextS};
use mls_rs_crypto_hpke::dhkem::DhKem;
use mls_rs_crypto_rustcrypto::aead::Aead;
use mls_rs_crypto_rustcrypto::ecdh::{Ecdh, EcdhKemError};
use mls_rs_crypto_rustcrypto::kdf::Kdf;
use mls_rs_crypto_rustcrypto::{RustCryptoCipherSuite, RustCryptoError};
use mls_rs_crypto_traits::{Curve, DhType, KemId, SamplingMethod};
use rand_core::{CryptoRng, CryptoRngCore, RngCore};
use zeroize::Zeroizing;

use crate::mls::CIPHER_SUITE;

/// Length of an X25519 secret key, an Ed25519 seed, and the `ikm` drawn for `kem_generate`.
const SEED_LEN: usize = 32;

/// An RNG shared by a provider and every cipher suite provider made from it.
type SharedRng = Arc<Mutex<dyn CryptoRngCore + Send>>;

/// Where a provider's random bytes come from.
#[derive(Clone)]
enum Randomness {
    /// The caller's RNG.
    Injected(SharedRng),
    /// None: generating anything fails.
    Absent,
}

impl Randomness {
    fn fill(&self, out: &mut [u8]) -> Result<(), GroveCryptoError> {
        match self {
            Randomness::Injected(rng) => {
                // A panic while the lock was held cannot leave the RNG in a state that matters
                // for security (at worst it skipped some output), so a poisoned lock is used on.
                let mut rng = rng.lock().unwrap_or_else(PoisonError::into_inner);
                rng.try_fill_bytes(out).map_err(GroveCryptoError::Rng)
            }
            Randomness::Absent => Err(GroveCryptoError::NoRandomness),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Randomness::Injected(_) => "injected",
            Randomness::Absent => "none",
        }
    }
}

/// An error of [`GroveCryptoProvider`]'s cipher suite provider.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GroveCryptoError {
    /// The underlying RustCrypto primitive failed (bad key, failed decryption, ...).
    #[error(transparent)]
    Provider(#[from] RustCryptoError),
    /// The X25519 DH failed (bad key).
    #[error(transparent)]
    Ecdh(#[from] EcdhKemError),
    /// The injected RNG reported an error.
    #[error("the injected RNG failed: {0}")]
    Rng(rand_core::Error),
    /// The provider has no RNG ([`GroveCryptoProvider::verify_only`]) and was asked for
    /// randomness.
    #[error("this crypto provider has no RNG: it verifies, it does not generate")]
    NoRandomness,
    /// A ciphersuite other than [`CIPHER_SUITE`] (a bug: the provider offers no other).
    #[error("unsupported ciphersuite {0:?}")]
    UnsupportedCipherSuite(CipherSuite),
}

impl IntoAnyError for GroveCryptoError {
    fn into_dyn_error(self) -> Result<Box<dyn std::error::Error + Send + Sync>, Self> {
        Ok(Box::new(self))
    }
}

/// grove's mls-rs [`CryptoProvider`]: ciphersuite 1 of the RustCrypto provider, with every
/// random byte drawn from an injected RNG. See the [module docs](self).
///
/// Cloning it shares the RNG.
#[derive(Clone)]
pub struct GroveCryptoProvider {
    randomness: Randomness,
    tap: MacTap,
}

/// The keys and inputs of the `mac` calls made while it is on (see the [module docs](self#the-mac-tap)).
/// Clones share one record.
///
/// With grove-proto's cargo feature `testing` it also carries a lie for grove's own tests: HPKE
/// encryptions to some public keys may be made of garbage (`MacTap::garble_seals_to`, with the `testing` feature), the
/// way a modified client would encrypt garbage path secrets to some members.
#[derive(Clone, Default)]
pub struct MacTap(Arc<Mutex<Option<Vec<TappedMac>>>>, #[cfg(feature = "testing")] Arc<Mutex<Vec<Vec<u8>>>>);

/// One recorded `mac` call: its key and its input.
pub type TappedMac = (Zeroizing<Vec<u8>>, Vec<u8>);

impl MacTap {
    /// Starts recording (dropping anything recorded before).
    pub fn start(&self) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(Vec::new());
    }

    /// Stops recording; answers what was recorded since [`MacTap::start`], in call order.
    pub fn stop(&self) -> Vec<TappedMac> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take().unwrap_or_default()
    }

    /// Feature `testing`: from now on, HPKE encryptions to these public keys encrypt the
    /// plaintext with every bit flipped (the recipient decrypts garbage); empty stops it.
    /// By key, not by order: mls-rs encrypts a commit's path secrets in parallel.
    #[cfg(feature = "testing")]
    pub fn garble_seals_to(&self, keys: Vec<Vec<u8>>) {
        *self.1.lock().unwrap_or_else(PoisonError::into_inner) = keys;
    }

    /// Whether an HPKE encryption to `key` is to be garbled (feature `testing`).
    #[cfg(feature = "testing")]
    fn garbles(&self, key: &[u8]) -> bool {
        self.1.lock().unwrap_or_else(PoisonError::into_inner).iter().any(|k| k == key)
    }

    /// Never, without feature `testing`.
    #[cfg(not(feature = "testing"))]
    fn garbles(&self, _key: &[u8]) -> bool {
        false
    }

    fn record(&self, key: &[u8], data: &[u8]) {
        if let Some(calls) = self.0.lock().unwrap_or_else(PoisonError::into_inner).as_mut() {
            calls.push((Zeroizing::new(key.to_vec()), data.to_vec()));
        }
    }
}

impl GroveCryptoProvider {
    /// A provider drawing all its randomness from `rng`. For deterministic tests pass a seeded
    /// CSPRNG (e.g. `rand::rngs::StdRng::seed_from_u64`); in production a CSPRNG seeded by the
    /// caller from the platform's entropy source.
    pub fn new(rng: impl RngCore + CryptoRng + Send + 'static) -> GroveCryptoProvider {
        GroveCryptoProvider { randomness: Randomness::Injected(Arc::new(Mutex::new(rng))), tap: MacTap::default() }
    }

    /// The tap shared by every cipher suite provider made from this one.
    pub fn tap(&self) -> MacTap {
        self.tap.clone()
    }

    /// A provider without an RNG, for verification only (the hub): hashing, signature
    /// verification, decryption work; anything that needs randomness (generating keys, group
    /// ids, HPKE encryption) fails with [`GroveCryptoError::NoRandomness`].
    pub fn verify_only() -> GroveCryptoProvider {
        GroveCryptoProvider { randomness: Randomness::Absent, tap: MacTap::default() }
    }
}

impl fmt::Debug for GroveCryptoProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroveCryptoProvider").field("randomness", &self.randomness.name()).finish()
    }
}

impl CryptoProvider for GroveCryptoProvider {
    type CipherSuiteProvider = GroveCipherSuite;

    fn supported_cipher_suites(&self) -> Vec<CipherSuite> {
        vec![CIPHER_SUITE]
    }

    fn cipher_suite_provider(&self, cipher_suite: CipherSuite) -> Option<GroveCipherSuite> {
        if cipher_suite != CIPHER_SUITE {
            return None;
        }
        let kdf = Kdf::new(cipher_suite)?;
        let ecdh = Ecdh::new(cipher_suite)?;
        if *ecdh != Curve::X25519 {
            return None;
        }
        let kem_id = KemId::new(cipher_suite)?;
        let dh = SeededEcdh { ecdh, randomness: self.randomness.clone() };
        let kem = DhKem::new(dh, kdf, kem_id as u16, kem_id.n_secret());
        let aead = Aead::new(cipher_suite)?;
        let inner = RustCryptoCipherSuite::new(cipher_suite, kem, kdf, aead)?;
        Some(GroveCipherSuite { inner, randomness: self.randomness.clone(), tap: self.tap.clone() })
    }
}

/// The X25519 DH of the RustCrypto provider, except that fresh key pairs (HPKE ephemeral keys)
/// come from the provider's [`Randomness`].
#[derive(Clone)]
struct SeededEcdh {
    ecdh: Ecdh,
    randomness: Randomness,
}

impl DhType for SeededEcdh {
    type Error = GroveCryptoError;

    fn dh(&self, secret_key: &HpkeSecretKey, public_key: &HpkePublicKey) -> Result<Vec<u8>, GroveCryptoError> {
        Ok(self.ecdh.dh(secret_key, public_key)?)
    }

    fn generate(&self) -> Result<(HpkeSecretKey, HpkePublicKey), GroveCryptoError> {
        // Any 32 bytes are an X25519 secret key (clamped when used), exactly what
        // `x25519_dalek::StaticSecret::random_from_rng` makes in the RustCrypto provider, which
        // stores the unclamped bytes too.
        let mut secret = Zeroizing::new(vec![0u8; SEED_LEN]);
        self.randomness.fill(&mut secret)?;
        let secret = HpkeSecretKey::from(secret.to_vec());
        let public = self.ecdh.to_public(&secret)?;
        Ok((secret, public))
    }

    fn to_public(&self, secret_key: &HpkeSecretKey) -> Result<HpkePublicKey, GroveCryptoError> {
        Ok(self.ecdh.to_public(secret_key)?)
    }

    fn bitmask_for_rejection_sampling(&self) -> SamplingMethod {
        self.ecdh.bitmask_for_rejection_sampling()
    }

    fn secret_key_size(&self) -> usize {
        self.ecdh.secret_key_size()
    }

    fn public_key_size(&self) -> usize {
        self.ecdh.public_key_size()
    }

    fn public_key_validate(&self, key: &HpkePublicKey) -> Result<(), GroveCryptoError> {
        Ok(self.ecdh.public_key_validate(key)?)
    }
}

type Inner = RustCryptoCipherSuite<DhKem<SeededEcdh, Kdf>, Kdf, Aead>;

/// The [`CipherSuiteProvider`] of [`GroveCryptoProvider`] (ciphersuite 1).
#[derive(Clone)]
pub struct GroveCipherSuite {
    inner: Inner,
    randomness: Randomness,
    tap: MacTap,
}

impl fmt::Debug for GroveCipherSuite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroveCipherSuite")
            .field("cipher_suite", &CIPHER_SUITE)
            .field("randomness", &self.randomness.name())
            .finish()
    }
}

impl CipherSuiteProvider for GroveCipherSuite {
    type Error = GroveCryptoError;
    type HpkeContextS = ContextS<Kdf, Aead>;
    type HpkeContextR = ContextR<Kdf, Aead>;

    fn cipher_suite(&self) -> CipherSuite {
        self.inner.cipher_suite()
    }

    fn hash(&self, data: &[u8]) -> Result<Vec<u8>, GroveCryptoError> {
        Ok(self.inner.hash(data)?)
    }

    fn mac(&self, key: &[u8], data: &[u8]) -> Result<Vec<u8>, GroveCryptoError> {
        self.tap.record(key, data);
        Ok(self.inner.mac(key, data)?)
    }

    fn aead_seal(
        &self,
        key: &[u8],
        data: &[u8],
        aad: Option<&[u8]>,
        nonce: &[u8],
    ) -> Result<Vec<u8>, GroveCryptoError> {
        Ok(self.inner.aead_seal(key, data, aad, nonce)?)
    }

    fn aead_open(
        &self,
        key: &[u8],
        ciphertext: &[u8],
        aad: Option<&[u8]>,
        nonce: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, GroveCryptoError> {
        Ok(self.inner.aead_open(key, ciphertext, aad, nonce)?)
    }

    fn aead_key_size(&self) -> usize {
        self.inner.aead_key_size()
    }

    fn aead_nonce_size(&self) -> usize {
        self.inner.aead_nonce_size()
    }

    fn kdf_extract(&self, salt: &[u8], ikm: &[u8]) -> Result<Zeroizing<Vec<u8>>, GroveCryptoError> {
        Ok(self.inner.kdf_extract(salt, ikm)?)
    }

    fn kdf_expand(&self, prk: &[u8], info: &[u8], len: usize) -> Result<Zeroizing<Vec<u8>>, GroveCryptoError> {
        Ok(self.inner.kdf_expand(prk, info, len)?)
    }

    fn kdf_extract_size(&self) -> usize {
        self.inner.kdf_extract_size()
    }

    // HPKE encryption: the ephemeral key comes from `SeededEcdh::generate`.
    fn hpke_seal(
        &self,
        remote_key: &HpkePublicKey,
        info: &[u8],
        aad: Option<&[u8]>,
        pt: &[u8],
    ) -> Result<HpkeCiphertext, GroveCryptoError> {
        if self.tap.garbles(remote_key.as_ref()) {
            let garbage: Zeroizing<Vec<u8>> = Zeroizing::new(pt.iter().map(|b| !b).collect());
            return Ok(self.inner.hpke_seal(remote_key, info, aad, &garbage)?);
        }
        Ok(self.inner.hpke_seal(remote_key, info, aad, pt)?)
    }

    fn hpke_seal_psk(
        &self,
        remote_key: &HpkePublicKey,
        info: &[u8],
        aad: Option<&[u8]>,
        pt: &[u8],
        psk: HpkePsk<'_>,
    ) -> Result<HpkeCiphertext, GroveCryptoError> {
        Ok(self.inner.hpke_seal_psk(remote_key, info, aad, pt, psk)?)
    }

    fn hpke_open(
        &self,
        ciphertext: &HpkeCiphertext,
        local_secret: &HpkeSecretKey,
        local_public: &HpkePublicKey,
        info: &[u8],
        aad: Option<&[u8]>,
    ) -> Result<Zeroizing<Vec<u8>>, GroveCryptoError> {
        Ok(self.inner.hpke_open(ciphertext, local_secret, local_public, info, aad)?)
    }

    fn hpke_open_psk(
        &self,
        ciphertext: &HpkeCiphertext,
        local_secret: &HpkeSecretKey,
        local_public: &HpkePublicKey,
        info: &[u8],
        aad: Option<&[u8]>,
        psk: HpkePsk<'_>,
    ) -> Result<Zeroizing<Vec<u8>>, GroveCryptoError> {
        Ok(self.inner.hpke_open_psk(ciphertext, local_secret, local_public, info, aad, psk)?)
    }

    fn hpke_setup_s(
        &self,
        remote_key: &HpkePublicKey,
        info: &[u8],
    ) -> Result<(Vec<u8>, ContextS<Kdf, Aead>), GroveCryptoError> {
        Ok(self.inner.hpke_setup_s(remote_key, info)?)
    }

    fn hpke_setup_r(
        &self,
        enc: &[u8],
        local_secret: &HpkeSecretKey,
        local_public: &HpkePublicKey,
        info: &[u8],
    ) -> Result<ContextR<Kdf, Aead>, GroveCryptoError> {
        Ok(self.inner.hpke_setup_r(enc, local_secret, local_public, info)?)
    }

    fn kem_derive(&self, ikm: &[u8]) -> Result<(HpkeSecretKey, HpkePublicKey), GroveCryptoError> {
        Ok(self.inner.kem_derive(ikm)?)
    }

    /// Overridden: `DeriveKeyPair` of 32 bytes from the injected RNG.
    fn kem_generate(&self) -> Result<(HpkeSecretKey, HpkePublicKey), GroveCryptoError> {
        let mut ikm = Zeroizing::new([0u8; SEED_LEN]);
        self.randomness.fill(ikm.as_mut_slice())?;
        self.kem_derive(ikm.as_slice())
    }

    fn kem_public_key_validate(&self, key: &HpkePublicKey) -> Result<(), GroveCryptoError> {
        Ok(self.inner.kem_public_key_validate(key)?)
    }

    /// Overridden: bytes from the injected RNG.
    fn random_bytes(&self, out: &mut [u8]) -> Result<(), GroveCryptoError> {
        self.randomness.fill(out)
    }

    fn sign(&self, secret_key: &SignatureSecretKey, data: &[u8]) -> Result<Vec<u8>, GroveCryptoError> {
        Ok(self.inner.sign(secret_key, data)?)
    }

    fn verify(&self, public_key: &SignaturePublicKey, signature: &[u8], data: &[u8]) -> Result<(), GroveCryptoError> {
        Ok(self.inner.verify(public_key, signature, data)?)
    }

    /// Overridden: an Ed25519 seed from the injected RNG; the secret key is seed || public key
    /// (64 bytes), the RustCrypto provider's format.
    fn signature_key_generate(&self) -> Result<(SignatureSecretKey, SignaturePublicKey), GroveCryptoError> {
        let mut seed = Zeroizing::new([0u8; SEED_LEN]);
        self.randomness.fill(seed.as_mut_slice())?;
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        let secret = Zeroizing::new(key.to_keypair_bytes());
        let public = key.verifying_key().to_bytes();
        Ok((SignatureSecretKey::new(secret.to_vec()), SignaturePublicKey::new(public.to_vec())))
    }

    fn signature_key_derive_public(
        &self,
        secret_key: &SignatureSecretKey,
    ) -> Result<SignaturePublicKey, GroveCryptoError> {
        Ok(self.inner.signature_key_derive_public(secret_key)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn suite(seed: u64) -> GroveCipherSuite {
        GroveCryptoProvider::new(StdRng::seed_from_u64(seed)).cipher_suite_provider(CIPHER_SUITE).unwrap()
    }

    fn rustcrypto() -> impl CipherSuiteProvider {
        mls_rs_crypto_rustcrypto::RustCryptoProvider::new().cipher_suite_provider(CIPHER_SUITE).unwrap()
    }

    #[test]
    fn only_ciphersuite_1() {
        let p = GroveCryptoProvider::verify_only();
        assert_eq!(p.supported_cipher_suites(), vec![CIPHER_SUITE]);
        assert!(p.cipher_suite_provider(CipherSuite::CURVE25519_CHACHA).is_none());
        assert!(p.cipher_suite_provider(CipherSuite::P256_AES128).is_none());
        assert_eq!(format!("{p:?}"), r#"GroveCryptoProvider { randomness: "none" }"#);
    }

    #[test]
    fn same_seed_same_output_and_clones_share_the_rng() {
        let (a, b) = (suite(7), suite(7));
        assert_eq!(a.random_bytes_vec(40).unwrap(), b.random_bytes_vec(40).unwrap());
        assert_eq!(a.kem_generate().unwrap(), b.kem_generate().unwrap());
        assert_eq!(a.signature_key_generate().unwrap(), b.signature_key_generate().unwrap());
        let (_, pk) = rustcrypto().kem_generate().unwrap();
        assert_eq!(a.hpke_seal(&pk, b"info", None, b"pt").unwrap(), b.hpke_seal(&pk, b"info", None, b"pt").unwrap());

        // A clone draws from the same RNG: it continues the sequence rather than repeating it.
        let c = a.clone();
        let from_c = c.random_bytes_vec(32).unwrap();
        assert_eq!(from_c, b.random_bytes_vec(32).unwrap());
        let from_a = a.random_bytes_vec(32).unwrap();
        assert_ne!(from_a, from_c);
        assert_eq!(from_a, b.random_bytes_vec(32).unwrap());

        assert_ne!(suite(8).random_bytes_vec(32).unwrap(), suite(7).random_bytes_vec(32).unwrap());
    }

    #[test]
    fn keys_interoperate_with_the_rustcrypto_provider() {
        let ours = suite(1);
        let theirs = rustcrypto();

        // Signature keys: seed || public, usable by the RustCrypto provider.
        let (sk, pk) = ours.signature_key_generate().unwrap();
        assert_eq!(sk.as_bytes().len(), 64);
        assert_eq!(&sk.as_bytes()[32..], pk.as_bytes());
        assert_eq!(theirs.signature_key_derive_public(&sk).unwrap(), pk);
        let sig = theirs.sign(&sk, b"data").unwrap();
        ours.verify(&pk, &sig, b"data").unwrap();
        let sig = ours.sign(&sk, b"data").unwrap();
        theirs.verify(&pk, &sig, b"data").unwrap();

        // HPKE keys from `kem_generate`, HPKE both ways.
        let (our_sk, our_pk) = ours.kem_generate().unwrap();
        assert_eq!(theirs.kem_derive(&[0; 32]).unwrap(), ours.kem_derive(&[0; 32]).unwrap());
        ours.kem_public_key_validate(&our_pk).unwrap();
        let ct = theirs.hpke_seal(&our_pk, b"info", Some(b"aad"), b"to us").unwrap();
        assert_eq!(&*ours.hpke_open(&ct, &our_sk, &our_pk, b"info", Some(b"aad")).unwrap(), b"to us");
        let (their_sk, their_pk) = theirs.kem_generate().unwrap();
        let ct = ours.hpke_seal(&their_pk, b"info", None, b"to them").unwrap();
        assert_eq!(&*theirs.hpke_open(&ct, &their_sk, &their_pk, b"info", None).unwrap(), b"to them");

        // The raw DH's fresh keys are valid X25519 key pairs.
        let dh = SeededEcdh { ecdh: Ecdh::new(CIPHER_SUITE).unwrap(), randomness: ours.randomness.clone() };
        let (a_sk, a_pk) = dh.generate().unwrap();
        let (b_sk, b_pk) = dh.generate().unwrap();
        assert_eq!(dh.to_public(&a_sk).unwrap(), a_pk);
        assert_eq!(dh.dh(&a_sk, &b_pk).unwrap(), dh.dh(&b_sk, &a_pk).unwrap());
    }

    #[test]
    fn verify_only_verifies_but_generates_nothing() {
        let cs = GroveCryptoProvider::verify_only().cipher_suite_provider(CIPHER_SUITE).unwrap();
        let theirs = rustcrypto();
        let (sk, pk) = theirs.signature_key_generate().unwrap();
        let sig = theirs.sign(&sk, b"data").unwrap();
        cs.verify(&pk, &sig, b"data").unwrap();
        assert_eq!(cs.hash(b"x").unwrap(), theirs.hash(b"x").unwrap());

        assert!(matches!(cs.random_bytes_vec(4), Err(GroveCryptoError::NoRandomness)));
        assert!(matches!(cs.kem_generate(), Err(GroveCryptoError::NoRandomness)));
        assert!(matches!(cs.signature_key_generate(), Err(GroveCryptoError::NoRandomness)));
        let (_, their_pk) = theirs.kem_generate().unwrap();
        assert!(cs.hpke_seal(&their_pk, b"info", None, b"pt").is_err());
        assert!(cs.hpke_setup_s(&their_pk, b"info").is_err());
    }
}

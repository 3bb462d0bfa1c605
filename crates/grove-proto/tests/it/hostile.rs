//! What a hostile peer can hand the decoders, as property tests on stable (no cargo-fuzz
//! toolchain here): the hub's MLS checks (the server's side of every entry), the sender-keys
//! codec and stores, and the wire formats a client reads from a server (content, signed
//! memberships, base64 and hex). Each must answer an error for bytes it cannot use, never
//! panic, and leave its state as it was. `PROPTEST_CASES` raises the number of cases for a
//! longer run (README, Tests).

use grove_proto::mls::hub::HubGroup;
use grove_proto::senderkeys::{MessageHeader, ReceiverChain, SenderChain, SenderKeyDistribution, SenderKeyStore};
use grove_wire::content::Content;
use grove_wire::membership::SignedMembership;
use mls_rs::ExtensionList;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::{alice_and_bob, bytes, client, observe, user};

const T: u64 = 1_700_000_000;

fn junk() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![proptest::collection::vec(any::<u8>(), 0..64), proptest::collection::vec(any::<u8>(), 0..2048),]
}

/// A genuine message with one byte changed, a cut, or bytes inserted.
fn mutate(genuine: &[u8], how: (u8, usize, u8)) -> Vec<u8> {
    let (kind, at, x) = how;
    let mut b = genuine.to_vec();
    let i = at % b.len().max(1);
    match kind % 3 {
        0 => {
            if let Some(v) = b.get_mut(i) {
                *v ^= x.max(1);
            }
        }
        1 => b.truncate(i),
        _ => b.insert(i, x),
    }
    b
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64)
    ))]

    /// The hub refuses bytes it cannot use at every entry point, and its state is the same
    /// afterwards (its next genuine commit still validates).
    #[test]
    fn the_hub_refuses_junk_at_every_entry_point(body in junk(), tree in junk()) {
        let alice_id = user(1);
        let alice = client(&alice_id).create_group(ExtensionList::default(), Default::default(), None).unwrap();
        let hub = observe(&alice);
        let before = hub.snapshot().unwrap();
        prop_assert!(HubGroup::observe(&body, &tree).is_err());
        prop_assert!(HubGroup::restore(&body).is_err());
        prop_assert!(hub.check_commit(&body, &alice_id.user_id()).is_err());
        prop_assert!(hub.check_proposal(&body, &alice_id.user_id()).is_err());
        prop_assert!(hub.check_application(&body).is_err());
        prop_assert_eq!(hub.snapshot().unwrap(), before);
    }

    /// A genuine commit or application message changed anywhere: the hub never panics, and
    /// what it accepts is only what it cannot check (the tags that need group secrets, which
    /// members check: see issue 15), never a different sender or epoch.
    #[test]
    fn the_hub_survives_mutated_messages(how in (any::<u8>(), any::<usize>(), any::<u8>())) {
        let mut t = alice_and_bob();
        let commit = bytes(&t.alice.commit(vec![]).unwrap().commit_message);
        let app = bytes(&t.bob.encrypt_application_message(b"hello", vec![]).unwrap());
        let alice = t.alice_id.user_id();
        if let Ok(checked) = t.hub.check_commit(&mutate(&commit, how), &alice) {
            prop_assert_eq!(checked.new_epoch, t.hub.epoch() + 1);
            prop_assert!(checked.added.is_empty() && checked.removed.is_empty());
        }
        let _ = t.hub.check_proposal(&mutate(&commit, how), &alice);
        if let Ok(epoch) = t.hub.check_application(&mutate(&app, how)) {
            prop_assert_eq!(epoch, t.hub.epoch());
        }
        // Untouched, both still pass: nothing above changed the hub.
        prop_assert!(t.hub.check_commit(&commit, &alice).is_ok());
        prop_assert!(t.hub.check_application(&app).is_ok());
    }

    /// Sender-keys decoders: junk is an error, never a panic.
    #[test]
    fn sender_keys_decoders_refuse_junk(body in junk()) {
        let _ = MessageHeader::parse(&body);
        let _ = SenderChain::from_bytes(&body);
        let _ = SenderKeyDistribution::from_bytes(&body);
        let _ = ReceiverChain::from_bytes(&body);
        let mut store = SenderKeyStore::new();
        prop_assert!(store.decrypt(&body).is_err());
    }

    /// A genuine sender-keys message changed anywhere is refused (it is signed and
    /// authenticated), and the genuine one still decrypts afterwards, once.
    #[test]
    fn a_mutated_sender_keys_message_is_refused_and_the_genuine_one_still_reads(
        how in (any::<u8>(), any::<usize>(), any::<u8>()),
    ) {
        let mut alice = SenderChain::new(&mut StdRng::seed_from_u64(7), "room", 5, user(1).user_id(), T).unwrap();
        let mut bob = SenderKeyStore::new();
        bob.add_distribution(&user(1).user_id(), &alice.distribution()).unwrap();
        let genuine = alice.encrypt(b"the gate code is 4711").unwrap();
        let bad = mutate(&genuine, how);
        if bad != genuine {
            prop_assert!(bob.decrypt(&bad).is_err(), "a changed message was accepted");
        }
        let (d, _) = bob.decrypt(&genuine).unwrap();
        prop_assert_eq!(d.plaintext, b"the gate code is 4711".to_vec());
    }

    /// What a client reads from a server: content of any bytes decodes to something (an
    /// unsupported kind at worst); a membership that is not signed by its admin never verifies;
    /// base64 and hex of any text are a value or an error.
    #[test]
    fn wire_formats_take_any_bytes(body in junk(), text in ".{0,200}") {
        let _ = Content::decode(&body);
        if let Ok(m) = serde_json::from_slice::<SignedMembership>(&body) {
            prop_assert!(!m.verify());
        }
        if let Ok(m) = serde_json::from_str::<SignedMembership>(&text) {
            prop_assert!(!m.verify());
        }
        let _ = grove_wire::b64::decode(&text);
        let _ = grove_wire::hex::decode(&text);
        let _ = Content::decode(text.as_bytes());
    }
}

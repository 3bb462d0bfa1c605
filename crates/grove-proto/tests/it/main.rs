//! Hub scenarios with real mls-rs clients, client engine scenarios ([`engine`]), and the
//! engine's determinism under an injected RNG and its interop with plain mls-rs ([`determinism`]),
//! the proof of a commit's bad membership tag ([`fault`]), resync by external commit
//! ([`resync`]), and the Sender Keys cipher's
//! scenarios ([`senderkeys`]).

// Tests may unwrap, expect and panic (a failed unwrap is a failed test), and a test crate's
// `pub` items are its own.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod determinism;
mod engine;
mod fault;
mod hostile;
mod journal;
mod links;
mod resync;
mod senderkeys;

use grove_proto::identity::{Identity, UserId};
use grove_proto::mls::hub::{HubError, HubGroup};
use grove_proto::mls::identity::{signing_identity, GroveIdentityProvider};
use grove_proto::mls::{crypto_provider, CIPHER_SUITE};
use mls_rs::client_builder::MlsConfig;
use mls_rs::group::ExportedTree;
use mls_rs::identity::basic::{BasicCredential, BasicIdentityProvider};
use mls_rs::identity::SigningIdentity;
use mls_rs::mls_rules::{CommitOptions, DefaultMlsRules};
use mls_rs::{Client, ExtensionList, Group, MlsMessage};

fn rules() -> DefaultMlsRules {
    // Trees travel out of band: no ratchet-tree extension in Welcome or GroupInfo.
    DefaultMlsRules::new().with_commit_options(CommitOptions::new().with_ratchet_tree_extension(false))
}

fn user(n: u8) -> Identity {
    Identity::from_secret_bytes([n; 32])
}

/// A client as grove builds it.
fn client(id: &Identity) -> Client<impl MlsConfig> {
    let (si, sk) = signing_identity(id);
    // It can join groups made by the engine, which carry grove's policy extension.
    Client::builder()
        .extension_type(grove_proto::mls::policy::extension_type())
        .identity_provider(GroveIdentityProvider)
        .crypto_provider(crypto_provider())
        .mls_rules(rules())
        .signing_identity(si, sk, CIPHER_SUITE)
        .build()
}

/// A client that accepts any basic credential, with an arbitrary signing identity: what a
/// malicious or buggy client could run.
fn lax_client(si: SigningIdentity, sk: mls_rs::crypto::SignatureSecretKey) -> Client<impl MlsConfig> {
    Client::builder()
        .identity_provider(BasicIdentityProvider::new())
        .crypto_provider(crypto_provider())
        .mls_rules(rules())
        .signing_identity(si, sk, CIPHER_SUITE)
        .build()
}

fn key_package<C: MlsConfig>(c: &Client<C>) -> MlsMessage {
    c.generate_key_package_message(Default::default(), Default::default(), None).unwrap()
}

fn observe<C: MlsConfig>(g: &Group<C>) -> HubGroup {
    let info = g.group_info_message(false).unwrap().to_bytes().unwrap();
    let tree = g.export_tree().to_bytes().unwrap();
    HubGroup::observe(&info, &tree).unwrap()
}

fn bytes(m: &MlsMessage) -> Vec<u8> {
    m.to_bytes().unwrap()
}

/// Alice's group with Bob in it, at epoch 1, the hub following. Bob joined with the hub's tree.
struct Two<A: MlsConfig, B: MlsConfig> {
    alice_id: Identity,
    bob_id: Identity,
    alice: Group<A>,
    bob: Group<B>,
    hub: HubGroup,
}

fn alice_and_bob() -> Two<impl MlsConfig, impl MlsConfig> {
    let alice_id = user(1);
    let bob_id = user(2);
    let alice_client = client(&alice_id);
    let bob_client = client(&bob_id);

    let mut alice = alice_client.create_group(ExtensionList::default(), Default::default(), None).unwrap();
    let hub = observe(&alice);

    let out = alice.commit_builder().add_member(key_package(&bob_client)).unwrap().build().unwrap();
    let checked = hub.check_commit(&bytes(&out.commit_message), &alice_id.user_id()).unwrap();
    assert_eq!(checked.new_epoch, 1);
    assert_eq!(checked.added, vec![bob_id.user_id()]);
    assert!(checked.removed.is_empty());
    let hub = checked.next;
    alice.apply_pending_commit().unwrap();

    let welcome = &out.welcome_messages[0];
    // The Welcome carries no tree: joining without one fails...
    assert!(bob_client.join_group(None, welcome, None).is_err());
    // ...and the hub's tree is what a joiner needs.
    let tree = ExportedTree::from_bytes(&hub.ratchet_tree().unwrap()).unwrap();
    let (bob, _) = bob_client.join_group(Some(tree), welcome, None).unwrap();
    assert_eq!(bob.current_epoch(), 1);

    Two { alice_id, bob_id, alice, bob, hub }
}

#[test]
fn observe_starts_with_the_creator() {
    let alice_id = user(1);
    let alice = client(&alice_id).create_group(ExtensionList::default(), Default::default(), None).unwrap();
    let info = alice.group_info_message(false).unwrap();
    let tree = alice.export_tree().to_bytes().unwrap();

    let hub = HubGroup::observe(&bytes(&info), &tree).unwrap();
    assert_eq!(hub.members(), vec![alice_id.user_id()]);
    assert!(hub.is_member(&alice_id.user_id()));
    assert!(!hub.is_member(&user(2).user_id()));
    assert_eq!(hub.epoch(), alice.current_epoch());
    assert_eq!(hub.group_id(), alice.group_id());
    assert_eq!(hub.ratchet_tree().unwrap(), tree);

    // Garbage, a tree that does not match, a message that is not a GroupInfo.
    assert!(matches!(HubGroup::observe(b"junk", &tree), Err(HubError::Malformed(_))));
    assert!(matches!(HubGroup::observe(&bytes(&info), b"junk"), Err(HubError::Malformed(_))));
    let other = client(&user(2)).create_group(ExtensionList::default(), Default::default(), None).unwrap();
    let other_tree = other.export_tree().to_bytes().unwrap();
    assert!(matches!(HubGroup::observe(&bytes(&info), &other_tree), Err(HubError::Rejected(_))));
    let kp = bytes(&key_package(&client(&user(3))));
    assert!(matches!(HubGroup::observe(&kp, &tree), Err(HubError::Malformed(_))));
}

#[test]
fn add_member_and_join_with_the_hubs_tree() {
    let t = alice_and_bob();
    assert_eq!(t.hub.epoch(), 1);
    assert_eq!(t.hub.members(), vec![t.alice_id.user_id(), t.bob_id.user_id()]);
    assert_eq!(t.hub.ratchet_tree().unwrap(), t.bob.export_tree().to_bytes().unwrap());
}

#[test]
fn forged_commit_is_rejected_and_state_unchanged() {
    let mut t = alice_and_bob();
    let out = t.alice.commit(vec![]).unwrap();
    let good = bytes(&out.commit_message);

    // PublicMessage commit from a member ends with: signature (1 + 64 bytes), confirmation tag
    // (1 + 32), membership tag (1 + 32). Flip a byte inside the signature.
    let tail = 33 + 33;
    let mut forged = good.clone();
    let i = forged.len() - tail - 10;
    forged[i] ^= 0x01;
    let err = t.hub.check_commit(&forged, &t.alice_id.user_id()).unwrap_err();
    assert!(matches!(err, HubError::Rejected(_)), "{err:?}");
    assert_eq!(t.hub.epoch(), 1);

    // Flipping any byte the signature covers (or the framing) is refused.
    for i in 0..good.len() - tail {
        let mut forged = good.clone();
        forged[i] ^= 0x01;
        let res = t.hub.check_commit(&forged, &t.alice_id.user_id());
        assert!(res.is_err(), "flipping byte {i} of {} went unnoticed", good.len());
    }
    assert!(matches!(t.hub.check_commit(&good[..good.len() - 1], &t.alice_id.user_id()), Err(HubError::Malformed(_))));
    assert_eq!(t.hub.epoch(), 1);

    // Documented limitation: the confirmation tag and the membership tag need group secrets,
    // so the hub cannot tell when they are corrupted. Members will.
    for i in [good.len() - 1, good.len() - 34] {
        let mut forged = good.clone();
        forged[i] ^= 0x01;
        assert!(t.hub.check_commit(&forged, &t.alice_id.user_id()).is_ok());
    }

    // The untouched commit still validates: nothing above changed the hub.
    let checked = t.hub.check_commit(&good, &t.alice_id.user_id()).unwrap();
    assert_eq!(checked.new_epoch, 2);
}

#[test]
fn replayed_commit_is_wrong_epoch() {
    let mut t = alice_and_bob();
    let out = t.alice.commit(vec![]).unwrap();
    let commit = bytes(&out.commit_message);
    let hub1 = t.hub.clone();
    let next = t.hub.check_commit(&commit, &t.alice_id.user_id()).unwrap().next;
    assert_eq!(next.epoch(), 2);
    assert_eq!(
        next.check_commit(&commit, &t.alice_id.user_id()).unwrap_err(),
        HubError::WrongEpoch { message_epoch: 1, current_epoch: 2 }
    );

    // A commit from the future is wrong too.
    t.alice.apply_pending_commit().unwrap();
    let later = bytes(&t.alice.commit(vec![]).unwrap().commit_message);
    assert_eq!(
        hub1.check_commit(&later, &t.alice_id.user_id()).unwrap_err(),
        HubError::WrongEpoch { message_epoch: 2, current_epoch: 1 }
    );
}

#[test]
fn two_commits_for_one_epoch_second_is_wrong_epoch() {
    let mut t = alice_and_bob();
    let from_alice = bytes(&t.alice.commit(vec![]).unwrap().commit_message);
    let from_bob = bytes(&t.bob.commit(vec![]).unwrap().commit_message);

    // Each would be fine on its own...
    t.hub.check_commit(&from_bob, &t.bob_id.user_id()).unwrap();
    // ...but only the first one the hub orders wins.
    let hub = t.hub.check_commit(&from_alice, &t.alice_id.user_id()).unwrap().next;
    assert_eq!(
        hub.check_commit(&from_bob, &t.bob_id.user_id()).unwrap_err(),
        HubError::WrongEpoch { message_epoch: 1, current_epoch: 2 }
    );

    // And the members can follow the accepted one.
    t.alice.apply_pending_commit().unwrap();
    t.bob.clear_pending_commit();
    t.bob.process_incoming_message(MlsMessage::from_bytes(&from_alice).unwrap()).unwrap();
    assert_eq!(t.bob.current_epoch(), hub.epoch());
}

#[test]
fn commit_submitted_by_another_user_is_sender_mismatch() {
    let mut t = alice_and_bob();
    let commit = bytes(&t.alice.commit(vec![]).unwrap().commit_message);
    assert_eq!(t.hub.check_commit(&commit, &t.bob_id.user_id()).unwrap_err(), HubError::SenderMismatch);
    // A user who is not in the group at all is also a mismatch for Alice's leaf.
    assert_eq!(t.hub.check_commit(&commit, &user(9).user_id()).unwrap_err(), HubError::SenderMismatch);
    assert_eq!(t.hub.epoch(), 1);
}

/// Mallory's KeyPackage whose credential names Carol, signed with Mallory's key.
fn mallory_as_carol() -> MlsMessage {
    let carol = user(3);
    let mallory = user(4);
    let (mallory_si, mallory_sk) = signing_identity(&mallory);
    let forged = SigningIdentity::new(
        BasicCredential::new(carol.user_id().as_bytes().to_vec()).into_credential(),
        mallory_si.signature_key,
    );
    key_package(&lax_client(forged, mallory_sk))
}

#[test]
fn credential_not_bound_to_its_key_is_refused() {
    let kp = mallory_as_carol();

    // A grove client refuses to add it.
    let mut t = alice_and_bob();
    let res = t.alice.commit_builder().add_member(kp.clone());
    assert!(res.is_err() || res.unwrap().build().is_err());

    // A lax client (same Alice key) builds the commit anyway: the hub refuses it.
    let alice_id = user(1);
    let (si, sk) = signing_identity(&alice_id);
    let mut lax_alice = lax_client(si, sk).create_group(ExtensionList::default(), Default::default(), None).unwrap();
    let hub = observe(&lax_alice);
    let out = lax_alice.commit_builder().add_member(kp).unwrap().build().unwrap();
    let err = hub.check_commit(&bytes(&out.commit_message), &alice_id.user_id()).unwrap_err();
    assert!(matches!(err, HubError::Rejected(_)), "{err:?}");
    assert_eq!(hub.epoch(), 0);
    assert_eq!(hub.members(), vec![alice_id.user_id()]);

    // Nor can such a credential found a group the hub observes.
    let carol = user(3);
    let (mallory_si, mallory_sk) = signing_identity(&user(4));
    let forged = SigningIdentity::new(
        BasicCredential::new(carol.user_id().as_bytes().to_vec()).into_credential(),
        mallory_si.signature_key,
    );
    let mallory_group =
        lax_client(forged, mallory_sk).create_group(ExtensionList::default(), Default::default(), None).unwrap();
    let info = bytes(&mallory_group.group_info_message(false).unwrap());
    let tree = mallory_group.export_tree().to_bytes().unwrap();
    assert!(matches!(HubGroup::observe(&info, &tree), Err(HubError::Rejected(_))));
}

#[test]
fn leave_by_proposal_then_commit_by_reference() {
    let mut t = alice_and_bob();
    let bob_index = t.bob.current_member_index();
    let proposal = t.bob.propose_remove(bob_index, vec![]).unwrap();
    let proposal = bytes(&proposal);

    // Framing and sender checks.
    assert_eq!(t.hub.check_proposal(&proposal, &t.alice_id.user_id()).unwrap_err(), HubError::SenderMismatch);
    assert_eq!(t.hub.check_commit(&proposal, &t.bob_id.user_id()).unwrap_err(), HubError::WrongContentType);

    let with_proposal = t.hub.check_proposal(&proposal, &t.bob_id.user_id()).unwrap().next;
    assert_eq!(with_proposal.epoch(), 1);

    // Alice sees the proposal and commits it by reference.
    t.alice.process_incoming_message(MlsMessage::from_bytes(&proposal).unwrap()).unwrap();
    let out = t.alice.commit(vec![]).unwrap();
    assert!(!out.commit_message.proposals_by_reference().is_empty());
    let commit = bytes(&out.commit_message);

    // Without the cached proposal the hub cannot resolve the reference.
    assert!(matches!(t.hub.check_commit(&commit, &t.alice_id.user_id()), Err(HubError::Rejected(_))));

    // The cached proposal survives snapshot and restore.
    let restored = HubGroup::restore(&with_proposal.snapshot().unwrap()).unwrap();
    for hub in [&with_proposal, &restored] {
        let checked = hub.check_commit(&commit, &t.alice_id.user_id()).unwrap();
        assert_eq!(checked.new_epoch, 2);
        assert_eq!(checked.removed, vec![t.bob_id.user_id()]);
        assert!(checked.added.is_empty());
        assert_eq!(checked.next.members(), vec![t.alice_id.user_id()]);
        assert!(!checked.next.is_member(&t.bob_id.user_id()));
    }
}

#[test]
fn snapshot_and_restore() {
    let mut t = alice_and_bob();
    let snap = t.hub.snapshot().unwrap();
    let restored = HubGroup::restore(&snap).unwrap();
    assert_eq!(restored.epoch(), t.hub.epoch());
    assert_eq!(restored.group_id(), t.hub.group_id());
    assert_eq!(restored.members(), t.hub.members());
    assert_eq!(restored.ratchet_tree().unwrap(), t.hub.ratchet_tree().unwrap());
    assert_eq!(restored.snapshot().unwrap(), snap);
    println!("snapshot of a 2-member group: {} bytes (tree {} bytes)", snap.len(), t.hub.ratchet_tree().unwrap().len());

    // The restored hub validates the next commit (an Add).
    let carol_id = user(3);
    let out = t.alice.commit_builder().add_member(key_package(&client(&carol_id))).unwrap().build().unwrap();
    let checked = restored.check_commit(&bytes(&out.commit_message), &t.alice_id.user_id()).unwrap();
    assert_eq!(checked.added, vec![carol_id.user_id()]);
    assert_eq!(checked.next.members(), vec![t.alice_id.user_id(), t.bob_id.user_id(), carol_id.user_id()]);

    // Corrupt snapshots are refused.
    assert!(matches!(HubGroup::restore(&[]), Err(HubError::CorruptSnapshot(_))));
    assert!(matches!(HubGroup::restore(b"\x01junk"), Err(HubError::CorruptSnapshot(_))));
    let mut wrong_format = snap.clone();
    wrong_format[0] = 99;
    assert!(matches!(HubGroup::restore(&wrong_format), Err(HubError::CorruptSnapshot(_))));
    let mut trailing = snap;
    trailing.push(0);
    assert!(matches!(HubGroup::restore(&trailing), Err(HubError::CorruptSnapshot(_))));
}

#[test]
fn application_messages() {
    let mut t = alice_and_bob();
    let msg = t.alice.encrypt_application_message(b"hi", vec![]).unwrap();
    assert_eq!(t.hub.check_application(&bytes(&msg)), Ok(1));

    let commit = bytes(&t.alice.commit(vec![]).unwrap().commit_message);
    assert_eq!(t.hub.check_application(&commit), Err(HubError::NotPrivateMessage));
    assert!(matches!(t.hub.check_application(b"garbage"), Err(HubError::Malformed(_))));
    // An application message is not a commit or a proposal.
    assert_eq!(t.hub.check_commit(&bytes(&msg), &t.alice_id.user_id()).unwrap_err(), HubError::NotPublicMessage);
    assert_eq!(t.hub.check_proposal(&bytes(&msg), &t.alice_id.user_id()).unwrap_err(), HubError::NotPublicMessage);

    // Another group's message is refused; a future epoch is refused.
    let mut other = client(&user(1)).create_group(ExtensionList::default(), Default::default(), None).unwrap();
    let foreign = bytes(&other.encrypt_application_message(b"x", vec![]).unwrap());
    assert_eq!(t.hub.check_application(&foreign), Err(HubError::WrongGroup));

    t.alice.apply_pending_commit().unwrap();
    let at_2 = bytes(&t.alice.encrypt_application_message(b"later", vec![]).unwrap());
    assert_eq!(t.hub.check_application(&at_2), Err(HubError::WrongEpoch { message_epoch: 2, current_epoch: 1 }));
}

#[test]
fn removed_member_and_unknown_leaf_are_refused() {
    let mut t = alice_and_bob();
    let bob_index = t.bob.current_member_index();
    let out = t.alice.commit_builder().remove_member(bob_index).unwrap().build().unwrap();
    let checked = t.hub.check_commit(&bytes(&out.commit_message), &t.alice_id.user_id()).unwrap();
    assert_eq!(checked.removed, vec![t.bob_id.user_id()]);
    let hub = checked.next;
    assert_eq!(hub.members(), vec![t.alice_id.user_id()]);
    t.alice.apply_pending_commit().unwrap();

    // Bob, unaware, keeps committing at epoch 1: wrong epoch.
    let stale = bytes(&t.bob.commit(vec![]).unwrap().commit_message);
    assert!(matches!(hub.check_commit(&stale, &t.bob_id.user_id()), Err(HubError::WrongEpoch { .. })));

    // A current-epoch commit whose sender names a leaf that is not a member. Layout:
    // version (2) | wire format (2) | group id (1 + 32) | epoch (8) | sender type (1) | leaf (4).
    let mut commit = bytes(&t.alice.commit(vec![]).unwrap().commit_message);
    assert_eq!(commit[4], 32, "group id length");
    assert_eq!(commit[45], 1, "sender type member");
    assert_eq!(&commit[46..50], &0u32.to_be_bytes(), "Alice's leaf");
    for leaf in [1u32, 7] {
        commit[46..50].copy_from_slice(&leaf.to_be_bytes());
        assert_eq!(hub.check_commit(&commit, &t.alice_id.user_id()).unwrap_err(), HubError::NotAMember);
    }
    let _: UserId = t.bob_id.user_id();
}

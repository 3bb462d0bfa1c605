//! Resync (`grove_proto::mls::resync`): a member who cannot process a commit gets back in by an
//! external commit replacing its own leaf, from a GroupInfo a member who could process it sealed
//! under the resync key of the stuck member's epoch. The hub and every member take an external
//! commit only as that.

use grove_proto::mls::engine::{EngineError, Incoming, MlsEngine};
use grove_proto::mls::hub::HubError;
use grove_proto::mls::resync::{open, seal};
use mls_rs::MlsMessage;

use crate::engine::{texts_from, three};
use crate::{client, user};

/// Carol updates; Alice follows, Bob does not (he cannot process it). Bob's resync key of
/// epoch 1 opens what Alice seals for him; his external commit replacing his own leaf is taken
/// by the hub without a membership change; Alice and Carol process it; all three are in one
/// epoch and talk.
#[test]
fn a_stuck_member_resyncs_from_a_sealed_group_info_and_everyone_follows() {
    let (mut room, mut alice, mut bob, mut carol) = three();
    let key = bob.engine.resync_key(&room.id).unwrap();
    assert_eq!(key, alice.engine.resync_key(&room.id).unwrap(), "one key for the epoch's members");
    carol.commit(&mut room, |e, g| e.commit_update(g));
    carol.sync(&room);
    alice.sync(&room);
    assert_ne!(key, alice.engine.resync_key(&room.id).unwrap(), "a new epoch, a new key");
    bob.cursor = room.log.len(); // Bob could not process it.

    let sealed = seal(&key, [3; 12], &alice.engine.resync_group_info(&room.id).unwrap());
    assert!(open(&[0; 32], &sealed).is_err(), "the server cannot open it");
    let info = open(&key, &sealed).unwrap();
    let resync = bob.engine.prepare_resync(&room.id, &info).unwrap();
    assert_eq!((resync.epoch, resync.signer), (2, alice.uid()));
    assert_eq!(bob.engine.epoch(&room.id).unwrap(), 1, "unchanged until the server takes it");
    assert!(MlsEngine::is_external_commit(&resync.commit));

    // Signed by someone else: refused.
    assert_eq!(room.post_commit(carol.uid(), &resync.commit).unwrap_err(), HubError::SenderMismatch);
    let members = room.hub.members();
    room.post_commit(bob.uid(), &resync.commit).unwrap();
    assert_eq!(room.hub.members(), members, "a resync changes no membership");
    let (epoch, after, changes) = bob.engine.apply_resync(&room.id).unwrap();
    bob.persist(changes);
    bob.cursor = room.log.len();
    assert_eq!((epoch, after), (3, members));

    for m in [&mut alice, &mut carol] {
        match m.sync(&room).as_slice() {
            [Incoming::Commit { committer, added, removed, removed_me: false, .. }] => {
                assert_eq!((*committer, added.len(), removed.len()), (bob.uid(), 0, 0));
            }
            other => panic!("expected bob's resync, got {other:?}"),
        }
    }
    let auth = alice.epoch_authenticator(&room);
    assert_eq!(bob.epoch_authenticator(&room), auth);
    assert_eq!(carol.epoch_authenticator(&room), auth);
    bob.send(&mut room, "bob is back");
    assert_eq!(texts_from(&alice.sync(&room)), vec![(bob.uid(), "bob is back".to_string())]);
    // Bob survives a restart in his new leaf.
    bob.restart();
    carol.send(&mut room, "carol");
    assert_eq!(texts_from(&bob.sync(&room)), vec![(carol.uid(), "carol".to_string())]);
}

/// An external commit is only ever a member replacing its own leaf: a stranger's join, which
/// removes nobody, is refused by the hub and by members; a resync refused by the server leaves
/// the member as it was.
#[test]
fn an_external_commit_that_is_not_a_resync_is_refused() {
    let (mut room, mut alice, mut bob, carol) = three();
    let info = alice.engine.resync_group_info(&room.id).unwrap();

    // (A commit replacing another member's leaf mls-rs will not even build, nor process:
    // `ExternalCommitRemovesOtherIdentity`.)
    // Dave, a stranger, joins without removing anyone.
    let dave = client(&user(4));
    let (_, commit) = dave.external_commit_builder().unwrap().build(MlsMessage::from_bytes(&info).unwrap()).unwrap();
    let commit = commit.to_bytes().unwrap();
    assert!(matches!(room.post_commit(user(4).user_id(), &commit), Err(HubError::NotAllowed(_))));
    assert!(matches!(bob.engine.process(&room.id, &commit), Err(EngineError::NotAllowed(_))));

    // A GroupInfo of Bob's own epoch is no way forward; a refused resync is dropped.
    assert!(matches!(bob.engine.prepare_resync(&room.id, &info), Err(EngineError::WrongEpoch { .. })));
    alice.commit(&mut room, |e, g| e.commit_update(g));
    let newer = alice.engine.resync_group_info(&room.id).unwrap();
    bob.engine.prepare_resync(&room.id, &newer).unwrap();
    bob.engine.discard_resync(&room.id);
    assert!(matches!(bob.engine.apply_resync(&room.id), Err(EngineError::NoPendingCommit)));
    assert_eq!(bob.engine.epoch(&room.id).unwrap(), 1);
    assert_eq!(room.hub.members(), vec![alice.uid(), bob.uid(), carol.uid()]);
}

/// A member who processes other members' commits holds, afterwards, the resync keys of the
/// epochs those commits left, the very keys a member stuck there derives: Carol updates out of
/// epoch 1 and Bob out of 2; Alice, reading both, holds the keys of 1 and 2 (once: taking them
/// empties the list). A member's own commit leaves no key behind for it.
#[test]
fn a_member_who_processes_others_commits_holds_the_keys_of_the_epochs_they_left() {
    let (mut room, mut alice, mut bob, mut carol) = three();
    let one = bob.engine.resync_key(&room.id).unwrap();
    carol.commit(&mut room, |e, g| e.commit_update(g));
    bob.sync(&room);
    let left: Vec<(u64, [u8; 32])> =
        bob.engine.take_left_resync_keys(&room.id).into_iter().map(|(e, k)| (e, *k)).collect();
    assert_eq!(left, vec![(1, one)]);
    let two = bob.engine.resync_key(&room.id).unwrap();
    bob.commit(&mut room, |e, g| e.commit_update(g));
    bob.sync(&room);
    assert!(bob.engine.take_left_resync_keys(&room.id).is_empty(), "his own commit leaves him none");

    alice.sync(&room);
    let left: Vec<(u64, [u8; 32])> =
        alice.engine.take_left_resync_keys(&room.id).into_iter().map(|(e, k)| (e, *k)).collect();
    assert_eq!(left, vec![(1, one), (2, two)]);
    assert!(alice.engine.take_left_resync_keys(&room.id).is_empty(), "taken once");
}

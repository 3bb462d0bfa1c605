//! Link joins (`grove_proto::mls::links`): a holder of the room's invite link adds itself by an
//! external commit, from the room's GroupInfo sealed under a key derived from the link's
//! secret. The hub takes one only through `check_link_join` (the server checked the link's
//! token), and the hub and every member only in a room whose join rule is `link` and only for a
//! user it does not ban.

use grove_proto::mls::engine::{EngineError, Incoming};
use grove_proto::mls::hub::HubError;
use grove_proto::mls::links::{group_info_key, open, seal};
use grove_proto::policy::Edit;
use grove_wire::policy::JoinRule;

use mls_rs::MlsMessage;

use crate::engine::{texts_from, three, Member, Room};
use crate::{client, user};

/// Dave's external commit from the GroupInfo Alice sealed for the link, posted to the hub as a
/// link join. Answers the hub's verdict; Dave's engine keeps the new group only if it was taken.
fn dave_joins(room: &mut Room, alice: &Member, dave: &mut Member, secret: &[u8; 32]) -> Result<(), HubError> {
    let sealed = seal(&group_info_key(secret), [5; 12], &alice.engine.resync_group_info(&room.id).unwrap());
    let info = open(&group_info_key(secret), &sealed).unwrap();
    let (g, commit) = dave.engine.join_by_link(&info).unwrap();
    assert_eq!(g, room.id);
    match room.hub.check_link_join(&commit.commit, &dave.uid()) {
        Ok(checked) => {
            assert_eq!(checked.added, vec![dave.uid()]);
            room.hub = checked.next;
            room.log.push(commit.commit);
            let (epoch, members, changes) = dave.engine.apply_resync(&g).unwrap();
            dave.persist(changes);
            dave.cursor = room.log.len();
            assert_eq!(epoch, room.hub.epoch());
            assert_eq!(members, room.hub.members());
            Ok(())
        }
        Err(e) => {
            dave.engine.discard_resync(&g);
            Err(e)
        }
    }
}

/// Alice opens the room to link holders. Dave, with the link, opens the sealed GroupInfo (the
/// server, without the secret, cannot), adds himself by an external commit that the hub takes
/// and every member processes as "Dave joined", and reads Bob's next message. The same commit
/// posted as an ordinary entry (without the link) is refused.
#[test]
fn dave_joins_by_the_link_with_an_external_commit_and_reads_bobs_next_message() {
    let (mut room, mut alice, mut bob, mut carol) = three();
    alice.commit(&mut room, |e, g| e.commit_policy(g, Edit::SetJoin(JoinRule::Link)));
    bob.sync(&room);
    carol.sync(&room);
    let secret = [9u8; 32];
    let sealed = seal(&group_info_key(&secret), [1; 12], &alice.engine.resync_group_info(&room.id).unwrap());
    assert!(open(&group_info_key(&[8; 32]), &sealed).is_err(), "another link's key opens nothing");
    assert!(open(&grove_wire::invite::token(&secret), &sealed).is_err(), "nor does the token the server sees");

    // Without the link (an ordinary append), the hub refuses it.
    let mut dave = Member::new(4);
    let info = open(&group_info_key(&secret), &sealed).unwrap();
    let (g, commit) = dave.engine.join_by_link(&info).unwrap();
    assert!(matches!(room.hub.check_commit(&commit.commit, &dave.uid()), Err(HubError::NotAllowed(_))));
    // Signed by someone else: refused.
    assert_eq!(room.hub.check_link_join(&commit.commit, &bob.uid()).unwrap_err(), HubError::SenderMismatch);
    dave.engine.discard_resync(&g);

    dave_joins(&mut room, &alice, &mut dave, &secret).unwrap();
    for m in [&mut alice, &mut bob, &mut carol] {
        let seen: Vec<Incoming> = m.sync(&room).into_iter().filter(|i| !matches!(i, Incoming::Own)).collect();
        match seen.as_slice() {
            [Incoming::Commit { committer, added, removed, removed_me: false, .. }] => {
                assert_eq!((*committer, added.clone(), removed.len()), (dave.uid(), vec![dave.uid()], 0));
            }
            other => panic!("expected Dave's link join, got {other:?}"),
        }
        assert_eq!(m.engine.members(&room.id).unwrap().len(), 4);
    }
    assert_eq!(alice.epoch_authenticator(&room), dave.epoch_authenticator(&room));
    bob.send(&mut room, "welcome, dave");
    assert_eq!(texts_from(&dave.sync(&room)), vec![(bob.uid(), "welcome, dave".to_string())]);
    dave.send(&mut room, "thanks");
    let heard = texts_from(&carol.sync(&room));
    assert_eq!(heard, vec![(bob.uid(), "welcome, dave".to_string()), (dave.uid(), "thanks".to_string())]);
    // Dave survives a restart, and a member's commit after his join.
    dave.restart();
    carol.commit(&mut room, |e, g| e.commit_update(g));
    alice.sync(&room);
    alice.send(&mut room, "after the update");
    let incoming = dave.sync(&room);
    assert_eq!(texts_from(&incoming), vec![(alice.uid(), "after the update".to_string())]);
}

/// A link join built by a client that does not apply grove's rules (what a hostile joiner
/// could run): Dave's, from a GroupInfo of the room.
fn raw_link_join(n: u8, info: &[u8]) -> Vec<u8> {
    let raw = client(&user(n));
    let (_, commit) = raw.external_commit_builder().unwrap().build(MlsMessage::from_bytes(info).unwrap()).unwrap();
    commit.to_bytes().unwrap()
}

/// The rule, judged by grove's own engine before it builds one, by the hub and by every member
/// alike: a room that takes members by invitation only, or by approval, takes no link join; a
/// banned user's is refused; a member cannot join twice.
#[test]
fn a_link_join_is_refused_by_hub_and_members_unless_the_room_takes_link_holders_and_the_joiner_is_not_banned() {
    let (mut room, mut alice, mut bob, _carol) = three();
    let secret = [9u8; 32];
    let mut dave = Member::new(4);
    let refused_everywhere = |room: &Room, bob: &mut Member, joiner: &mut Member, n: u8, info: &[u8]| {
        assert!(matches!(joiner.engine.join_by_link(info), Err(EngineError::NotAllowed(_))), "the engine builds none");
        let commit = raw_link_join(n, info);
        let uid = user(n).user_id();
        assert!(matches!(room.hub.check_link_join(&commit, &uid), Err(HubError::NotAllowed(_))), "the hub");
        // What a server that skipped the check would hand the members: they refuse it too.
        assert!(matches!(bob.engine.process(&room.id, &commit), Err(EngineError::NotAllowed(_))), "a member");
    };
    // Invite-only (a new room's rule).
    let info = alice.engine.resync_group_info(&room.id).unwrap();
    refused_everywhere(&room, &mut bob, &mut dave, 4, &info);

    // Approval: link holders ask and wait.
    alice.commit(&mut room, |e, g| e.commit_policy(g, Edit::SetJoin(JoinRule::Approval)));
    bob.sync(&room);
    let info = alice.engine.resync_group_info(&room.id).unwrap();
    refused_everywhere(&room, &mut bob, &mut dave, 4, &info);

    // Link, but Mallory is banned.
    alice.commit(&mut room, |e, g| e.commit_policy(g, Edit::SetJoin(JoinRule::Link)));
    let mut mallory = Member::new(5);
    alice.commit(&mut room, |e, g| e.commit_policy(g, Edit::Ban(mallory.uid())));
    bob.sync(&room);
    let info = alice.engine.resync_group_info(&room.id).unwrap();
    refused_everywhere(&room, &mut bob, &mut mallory, 5, &info);

    // Dave is not banned: in. A second join of his is refused (he is a member already).
    dave_joins(&mut room, &alice, &mut dave, &secret).unwrap();
    alice.sync(&room);
    let info = alice.engine.resync_group_info(&room.id).unwrap();
    let mut dave_again = Member::new(4);
    assert!(dave_again.engine.join_by_link(&info).is_err());
    // (mls-rs will not even build it: his leaf's keys are in the tree already.)
    let raw = client(&user(4)).external_commit_builder().unwrap().build(MlsMessage::from_bytes(&info).unwrap());
    assert!(raw.is_err());
    assert_eq!(room.hub.members().len(), 4);
}

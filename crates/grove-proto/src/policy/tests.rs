//! The policy rules on their own, one story per rule.

use grove_wire::policy::{Role, RoomPolicy};

use super::*;

fn u(n: u8) -> UserId {
    UserId([n; 32])
}

const ALICE: u8 = 1;
const BOB: u8 = 2;
const CAROL: u8 = 3;
const MALLORY: u8 = 4;

fn room() -> (Vec<UserId>, RoomPolicy) {
    let mut members = vec![u(ALICE), u(BOB), u(CAROL), u(MALLORY)];
    members.sort();
    (members, RoomPolicy::for_creator(u(ALICE)))
}

fn without_member(members: &[UserId], gone: UserId) -> Vec<UserId> {
    members.iter().copied().filter(|m| *m != gone).collect()
}

#[test]
fn a_plain_member_cannot_remove_but_a_moderator_can_and_anyone_may_leave() {
    let (members, p) = room();
    let after = without_member(&members, u(BOB));
    let by_mallory = [Op::Remove { by: u(MALLORY), user: u(BOB) }];
    let err = check(&p, &p, &after, &by_mallory, None).unwrap_err();
    assert!(matches!(err, PolicyError::Rights { needs: Role::Moderator, .. }), "{err}");

    let promoted = Edit::SetRole(u(MALLORY), Role::Moderator).apply(&p);
    check(&p, &promoted, &members, &[], Some(u(ALICE))).unwrap();
    check(&promoted, &promoted, &after, &by_mallory, None).unwrap();

    // A moderator cannot remove the owner; Bob may always leave.
    let no_alice = without_member(&members, u(ALICE));
    let err =
        check(&promoted, &promoted, &no_alice, &[Op::Remove { by: u(MALLORY), user: u(ALICE) }], None).unwrap_err();
    assert!(matches!(err, PolicyError::Outranked { .. }), "{err}");
    check(&p, &p, &after, &[Op::Remove { by: u(BOB), user: u(BOB) }], None).unwrap();
}

#[test]
fn roles_need_the_roles_right_and_a_higher_rank() {
    let (members, p) = room();
    let err = check(&p, &Edit::SetRole(u(MALLORY), Role::Owner).apply(&p), &members, &[], Some(u(MALLORY)));
    assert!(matches!(err, Err(PolicyError::Rights { .. })), "Mallory cannot make herself owner");
    let with_admin = Edit::SetRole(u(BOB), Role::Admin).apply(&p);
    check(&p, &with_admin, &members, &[], Some(u(ALICE))).unwrap();
    // Bob, admin, may make Carol a moderator but not an admin, nor demote Alice.
    check(&with_admin, &Edit::SetRole(u(CAROL), Role::Moderator).apply(&with_admin), &members, &[], Some(u(BOB)))
        .unwrap();
    let err = check(&with_admin, &Edit::SetRole(u(CAROL), Role::Admin).apply(&with_admin), &members, &[], Some(u(BOB)));
    assert!(matches!(err, Err(PolicyError::Outranked { .. })));
    let err =
        check(&with_admin, &Edit::SetRole(u(ALICE), Role::Member).apply(&with_admin), &members, &[], Some(u(BOB)));
    assert!(matches!(err, Err(PolicyError::Outranked { .. })));
    // A policy changed without anyone proposing it is refused.
    assert!(matches!(check(&p, &with_admin, &members, &[], None), Err(PolicyError::Invalid(_))));
}

#[test]
fn a_leaver_takes_its_role_along_and_a_role_for_a_non_member_is_refused() {
    let (members, p) = room();
    let p = Edit::SetRole(u(BOB), Role::Admin).apply(&p);
    let after = without_member(&members, u(BOB));
    let leave = [Op::Remove { by: u(BOB), user: u(BOB) }];
    assert!(matches!(check(&p, &p, &after, &leave, None), Err(PolicyError::Invalid(_))), "Bob's role stayed");
    check(&p, &without(&p, &[u(BOB)]), &after, &leave, Some(u(CAROL))).unwrap();
}

#[test]
fn bans_need_the_ban_right_and_keep_the_banned_out() {
    let (members, p) = room();
    let after = without_member(&members, u(BOB));
    let banned = Edit::Ban(u(BOB)).apply(&p);
    let ops = [Op::Remove { by: u(MALLORY), user: u(BOB) }];
    assert!(matches!(check(&p, &banned, &after, &ops, Some(u(MALLORY))), Err(PolicyError::Rights { .. })));
    let ops = [Op::Remove { by: u(ALICE), user: u(BOB) }];
    check(&p, &banned, &after, &ops, Some(u(ALICE))).unwrap();
    // Carol cannot add Bob back while he is banned; after the unban she can.
    let err = check(&banned, &banned, &members, &[Op::Add { by: u(CAROL), user: u(BOB) }], None).unwrap_err();
    assert_eq!(err, PolicyError::Banned(u(BOB)));
    let unbanned = Edit::Unban(u(BOB)).apply(&banned);
    check(&banned, &unbanned, &after, &[], Some(u(ALICE))).unwrap();
    check(&unbanned, &unbanned, &members, &[Op::Add { by: u(CAROL), user: u(BOB) }], None).unwrap();
    // A ban of someone banned stays a member is refused.
    assert!(matches!(check(&p, &banned, &members, &[], Some(u(ALICE))), Err(PolicyError::Invalid(_))));
}

#[test]
fn settings_need_the_settings_right() {
    let (members, p) = room();
    let mut closed = p.clone();
    closed.rights.invite = Role::Admin;
    assert!(check(&p, &closed, &members, &[], Some(u(BOB))).is_err());
    check(&p, &closed, &members, &[], Some(u(ALICE))).unwrap();
    let err = check(&closed, &closed, &members, &[Op::Add { by: u(BOB), user: u(9) }], None);
    assert!(matches!(err, Err(PolicyError::Rights { .. })), "only admins invite now");
}

#[test]
fn a_sender_keys_membership_is_judged_by_its_signer() {
    let (members, p) = room();
    let after = without_member(&members, u(BOB));
    assert!(check_membership(&members, &p, &after, &p, u(MALLORY)).is_err());
    check_membership(&members, &p, &after, &p, u(ALICE)).unwrap();
    check_membership(&members, &p, &without_member(&members, u(MALLORY)), &p, u(MALLORY)).unwrap();
    // Someone outside the room cannot sign.
    assert!(check_membership(&after, &p, &after, &p, u(BOB)).is_err());
}

#[test]
fn only_an_admin_opens_the_room_to_links_and_a_banned_user_cannot_ask() {
    let (members, p) = room();
    // New rooms are invite-only: nobody may ask.
    assert!(may_request_join(&p, &u(9)).is_err());
    // Mallory, a plain member, cannot open the room; Alice, the owner, can.
    let open = Edit::SetJoin(grove_wire::policy::JoinRule::Link).apply(&p);
    let err = check(&p, &open, &members, &[], Some(u(MALLORY))).unwrap_err();
    assert!(matches!(err, PolicyError::Rights { needs: Role::Admin, .. }), "{err}");
    check(&p, &open, &members, &[], Some(u(ALICE))).unwrap();
    assert_eq!(may_request_join(&open, &u(9)), Ok(grove_wire::policy::JoinRule::Link));
    // A banned user may not ask, whatever the rule.
    let banned = Edit::Ban(u(9)).apply(&open);
    assert_eq!(may_request_join(&banned, &u(9)), Err(PolicyError::Banned(u(9))));
}

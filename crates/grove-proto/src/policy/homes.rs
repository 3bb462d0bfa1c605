//! Who may name a member's home server in a sender-keys room's signed membership.
//!
//! The membership carries each member's home (where its mailbox and Olm keys are), so every
//! member can reach every other one. The rule, against the previous version:
//! - a home once named stays as it is (or goes with its member) unless that member signs;
//! - the signer may name its own home and the homes of the members it adds;
//! - a home not named before of a member who stays (a room from before homes were carried) may
//!   be named by a signer the previous policy lets invite.

use std::collections::BTreeMap;

use grove_wire::policy::RoomPolicy;

use super::{may_invite, PolicyError};
use crate::identity::UserId;

/// Checks the homes of the next signed membership (`members_after`, `homes_after`, signed by
/// `signer`) against the previous version's members (sorted), homes and policy. Who may add
/// or remove members is [`super::check_membership`]'s to check.
pub fn check_homes(
    members_before: &[UserId],
    homes_before: &BTreeMap<UserId, String>,
    before: &RoomPolicy,
    members_after: &[UserId],
    homes_after: &BTreeMap<UserId, String>,
    signer: UserId,
) -> Result<(), PolicyError> {
    let refused = |member: UserId| Err(PolicyError::Home { actor: signer, member });
    for member in members_after {
        if *member == signer {
            continue;
        }
        match (homes_before.get(member), homes_after.get(member)) {
            (Some(was), Some(is)) if was == is => {}
            (Some(_), _) => return refused(*member),
            (None, None) => {}
            (None, Some(_)) => {
                let stays = members_before.binary_search(member).is_ok();
                if stays && !may_invite(before, &signer) {
                    return refused(*member);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use grove_wire::policy::Role;

    fn u(b: u8) -> UserId {
        UserId([b; 32])
    }

    fn homes(list: &[(u8, &str)]) -> BTreeMap<UserId, String> {
        list.iter().map(|(b, h)| (u(*b), h.to_string())).collect()
    }

    #[test]
    fn a_home_changes_only_by_its_member_and_a_new_one_by_who_may_invite() {
        // Alice (1) owns the room; Bob (2) and Carol (3) are plain members.
        let policy = RoomPolicy::for_creator(u(1));
        let before = [u(1), u(2), u(3)];
        let named = homes(&[(1, "a:1"), (2, "b:1"), (3, "b:1")]);
        // Bob leaves and, while at it, points Carol's home at his own server: refused.
        let after = [u(1), u(3)];
        let err = check_homes(&before, &named, &policy, &after, &homes(&[(1, "a:1"), (3, "m:1")]), u(2));
        assert_eq!(err, Err(PolicyError::Home { actor: u(2), member: u(3) }));
        // Dropping Carol's home is as refused as changing it.
        let err = check_homes(&before, &named, &policy, &after, &homes(&[(1, "a:1")]), u(2));
        assert!(err.is_err());
        // Bob leaving with the others' homes untouched is fine; so is Carol moving her own home.
        assert_eq!(check_homes(&before, &named, &policy, &after, &homes(&[(1, "a:1"), (3, "b:1")]), u(2)), Ok(()));
        let moved = homes(&[(1, "a:1"), (2, "b:1"), (3, "c:1")]);
        assert_eq!(check_homes(&before, &named, &policy, &before, &moved, u(3)), Ok(()));
        // Alice adds Dave (4) with his home.
        let with_dave = [u(1), u(2), u(3), u(4)];
        let h = homes(&[(1, "a:1"), (2, "b:1"), (3, "b:1"), (4, "d:1")]);
        assert_eq!(check_homes(&before, &named, &policy, &with_dave, &h, u(1)), Ok(()));
        // A room from before homes where inviting needs an admin: Alice (owner) names them;
        // Bob (who may not invite) names only his own.
        let mut strict = policy.clone();
        strict.rights.invite = Role::Admin;
        let none = BTreeMap::new();
        assert_eq!(check_homes(&before, &none, &strict, &before, &named, u(1)), Ok(()));
        assert!(check_homes(&before, &none, &strict, &before, &named, u(2)).is_err());
        assert_eq!(check_homes(&before, &none, &strict, &before, &homes(&[(2, "b:1")]), u(2)), Ok(()));
    }
}

//! The signed membership list of a sender-keys room.
//!
//! A member signs `(room, version, members, policy)`; the server and every client accept an
//! update only if its version is the current one plus one and the room's policy of the current
//! version lets its signer make that change (grove-proto's `policy` module). Members are a set:
//! sorted and deduplicated before signing. Signatures are checked with `verify_strict`.
//!
//! Each member's home server (where its mailbox and Olm keys are) may be named in the signed
//! membership (`homes`), so every member can reach every other one's home from the room alone.
//! A membership without homes is signed as before (`grove-membership-v2`); one with homes as
//! `grove-membership-v3`, which covers them too, so homes cannot be added to, removed from or
//! changed in a signed membership.

use std::collections::BTreeMap;

use ed25519_dalek::{Signature, Signer, SigningKey};
use serde::{Deserialize, Serialize};

use crate::policy::RoomPolicy;
use crate::UserId;

/// One version of a sender-keys room's membership, signed by a member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedMembership {
    /// The room's name on its server.
    pub room: String,
    /// Starts at 0 (the creator alone) and increases by one with every update.
    pub version: u64,
    /// Every member.
    pub members: Vec<UserId>,
    /// The room's policy at this version: roles, bans, rights.
    pub policy: RoomPolicy,
    /// The member who signed this version.
    pub signer: UserId,
    /// Ed25519 signature, base64, over `grove-membership-v2`, the room, the version, the
    /// sorted members and the encoded policy (see [`RoomPolicy::encode`]); with homes, over
    /// `grove-membership-v3` and the homes as well (see [`SignedMembership::verify`]).
    pub signature: String,
    /// Members' home servers (`HOST:PORT` or a URL), for the members the signer knew them of.
    /// Absent in memberships signed before homes were carried.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub homes: BTreeMap<UserId, String>,
}

/// The longest home server a membership may name.
pub const MAX_HOME_LEN: usize = 255;

/// Whether `home` may be named as a member's home: 1 to [`MAX_HOME_LEN`] bytes of printable
/// ASCII with no space, comma or `=` (the signed encoding's separators).
pub fn valid_home(home: &str) -> bool {
    !home.is_empty()
        && home.len() <= MAX_HOME_LEN
        && home.bytes().all(|b| b.is_ascii_graphic() && b != b',' && b != b'=')
}

impl SignedMembership {
    /// Builds and signs a membership version.
    pub fn sign(key: &SigningKey, room: &str, version: u64, members: Vec<UserId>, policy: RoomPolicy) -> Self {
        Self::sign_with_homes(key, room, version, members, policy, BTreeMap::new())
    }

    /// [`SignedMembership::sign`] naming members' home servers (those of non-members are
    /// dropped).
    pub fn sign_with_homes(
        key: &SigningKey,
        room: &str,
        version: u64,
        mut members: Vec<UserId>,
        policy: RoomPolicy,
        mut homes: BTreeMap<UserId, String>,
    ) -> Self {
        members.sort();
        members.dedup();
        homes.retain(|u, _| members.binary_search(u).is_ok());
        let signer = UserId(key.verifying_key().to_bytes());
        let msg = signing_bytes(room, version, &members, &policy, &homes);
        SignedMembership {
            room: room.to_string(),
            version,
            members,
            policy,
            signer,
            signature: crate::b64::encode(&key.sign(&msg).to_bytes()),
            homes,
        }
    }

    /// A member's home server as this membership names it (covered by the signature once
    /// [`SignedMembership::verify`] passed).
    pub fn home_of(&self, user: &UserId) -> Option<&str> {
        self.homes.get(user).map(String::as_str)
    }

    /// The admins and owners of this version, sorted.
    pub fn admins(&self) -> Vec<UserId> {
        self.policy.admins()
    }

    /// Checks the signature (strict Ed25519) and the shape: sorted, deduplicated members, roles
    /// for members only ([`RoomPolicy::roles_fit`]), homes of members only and each
    /// [`valid_home`]. Does not check that the signer may make the change, nor bans, nor who
    /// changed a home (the caller knows the previous version: grove-proto's `policy`).
    pub fn verify(&self) -> bool {
        if !self.members.windows(2).all(|w| w[0] < w[1]) || !self.policy.roles_fit(&self.members) {
            return false;
        }
        if !self.homes.iter().all(|(u, h)| self.members.binary_search(u).is_ok() && valid_home(h)) {
            return false;
        }
        let Some(vk) = self.signer.verifying_key() else {
            return false;
        };
        let Ok(sig) = crate::b64::decode(&self.signature) else {
            return false;
        };
        let Ok(sig) = <[u8; 64]>::try_from(sig.as_slice()) else {
            return false;
        };
        let msg = signing_bytes(&self.room, self.version, &self.members, &self.policy, &self.homes);
        vk.verify_strict(&msg, &Signature::from_bytes(&sig)).is_ok()
    }
}

/// v2 without homes (what was signed before homes were carried); v3 with them: the homes line
/// (`USER=HOME,` per member, sorted by user) between the members line and the policy.
fn signing_bytes(
    room: &str,
    version: u64,
    members: &[UserId],
    policy: &RoomPolicy,
    homes: &BTreeMap<UserId, String>,
) -> Vec<u8> {
    let format = if homes.is_empty() { "v2" } else { "v3" };
    let mut s = format!("grove-membership-{format}\n{room}\n{version}\n").into_bytes();
    for m in members {
        s.extend_from_slice(m.to_string().as_bytes());
        s.push(b',');
    }
    s.push(b'\n');
    if !homes.is_empty() {
        for (u, h) in homes {
            s.extend_from_slice(format!("{u}={h},").as_bytes());
        }
        s.push(b'\n');
    }
    s.extend_from_slice(&policy.encode());
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Role;

    #[test]
    fn signed_membership_verifies_and_tampering_breaks_it() {
        let k = SigningKey::from_bytes(&[3; 32]);
        let me = UserId(k.verifying_key().to_bytes());
        let bob = UserId([7; 32]);
        let m = SignedMembership::sign(&k, "paris", 1, vec![bob, me], RoomPolicy::for_creator(me));
        assert!(m.verify());
        assert_eq!(m.admins(), vec![me]);
        let mut t = m.clone();
        t.version = 2;
        assert!(!t.verify());
        let mut t = m.clone();
        t.members.pop();
        assert!(!t.verify());
        let mut t = m.clone();
        t.policy.roles.insert(bob, Role::Admin);
        assert!(!t.verify(), "the policy is signed");
        let mut t = m;
        t.room = "lyon".into();
        assert!(!t.verify());
    }

    #[test]
    fn homes_are_signed_and_cannot_be_added_removed_or_changed() {
        let k = SigningKey::from_bytes(&[3; 32]);
        let me = UserId(k.verifying_key().to_bytes());
        let bob = UserId([7; 32]);
        let homes = BTreeMap::from([(me, "a.example:8443".to_string()), (bob, "b.example:8443".to_string())]);
        let p = RoomPolicy::for_creator(me);
        let m = SignedMembership::sign_with_homes(&k, "paris", 1, vec![bob, me], p.clone(), homes);
        assert!(m.verify());
        assert_eq!(m.home_of(&bob), Some("b.example:8443"));
        let mut t = m.clone();
        t.homes.insert(bob, "mallory.example:8443".into());
        assert!(!t.verify(), "a changed home");
        let mut t = m.clone();
        t.homes.remove(&bob);
        assert!(!t.verify(), "a dropped home");
        let mut t = m.clone();
        t.homes.clear();
        assert!(!t.verify(), "homes stripped: the v3 signature does not pass as v2");
        // A v2 membership (no homes) keeps verifying, and a home added to it breaks it.
        let old = SignedMembership::sign(&k, "paris", 1, vec![bob, me], p.clone());
        assert!(old.verify());
        let json = serde_json::to_string(&old).unwrap();
        assert!(!json.contains("homes"), "a v2 membership is encoded as before: {json}");
        let mut t = old;
        t.homes.insert(bob, "mallory.example:8443".into());
        assert!(!t.verify(), "a home added to a v2 membership");
        // Homes of non-members are dropped when signing; a bad home is refused.
        let odd = BTreeMap::from([(UserId([9; 32]), "c.example:1".to_string())]);
        assert!(SignedMembership::sign_with_homes(&k, "paris", 1, vec![me], p.clone(), odd).homes.is_empty());
        for bad in ["", "a b:1", "a,b:1", "a=b:1", "caf\u{e9}:1"] {
            let m = SignedMembership::sign_with_homes(
                &k,
                "paris",
                1,
                vec![me],
                p.clone(),
                BTreeMap::from([(me, bad.into())]),
            );
            assert!(!m.verify(), "{bad:?}");
        }
    }

    #[test]
    fn roles_for_non_members_are_refused() {
        let k = SigningKey::from_bytes(&[3; 32]);
        let me = UserId(k.verifying_key().to_bytes());
        let bob = UserId([7; 32]);
        let p = RoomPolicy::for_creator(bob);
        assert!(!SignedMembership::sign(&k, "paris", 1, vec![me], p).verify(), "a role for a non-member");
    }
}

//! The signed membership list of a sender-keys room.
//!
//! A member signs `(room, version, members, policy)`; the server and every client accept an
//! update only if its version is the current one plus one and the room's policy of the current
//! version lets its signer make that change (grove-proto's `policy` module). Members are a set:
//! sorted and deduplicated before signing. Signatures are checked with `verify_strict`.

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
    /// sorted members and the encoded policy (see [`RoomPolicy::encode`]).
    pub signature: String,
}

impl SignedMembership {
    /// Builds and signs a membership version.
    pub fn sign(key: &SigningKey, room: &str, version: u64, mut members: Vec<UserId>, policy: RoomPolicy) -> Self {
        members.sort();
        members.dedup();
        let signer = UserId(key.verifying_key().to_bytes());
        let msg = signing_bytes(room, version, &members, &policy);
        SignedMembership {
            room: room.to_string(),
            version,
            members,
            policy,
            signer,
            signature: crate::b64::encode(&key.sign(&msg).to_bytes()),
        }
    }

    /// The admins and owners of this version, sorted.
    pub fn admins(&self) -> Vec<UserId> {
        self.policy.admins()
    }

    /// Checks the signature (strict Ed25519) and the shape: sorted, deduplicated members, roles
    /// for members only ([`RoomPolicy::roles_fit`]). Does not check that the signer may make
    /// the change, nor bans (the caller knows the previous version: grove-proto's `policy`).
    pub fn verify(&self) -> bool {
        if !self.members.windows(2).all(|w| w[0] < w[1]) || !self.policy.roles_fit(&self.members) {
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
        let msg = signing_bytes(&self.room, self.version, &self.members, &self.policy);
        vk.verify_strict(&msg, &Signature::from_bytes(&sig)).is_ok()
    }
}

fn signing_bytes(room: &str, version: u64, members: &[UserId], policy: &RoomPolicy) -> Vec<u8> {
    let mut s = format!("grove-membership-v2\n{room}\n{version}\n").into_bytes();
    for m in members {
        s.extend_from_slice(m.to_string().as_bytes());
        s.push(b',');
    }
    s.push(b'\n');
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
    fn roles_for_non_members_are_refused() {
        let k = SigningKey::from_bytes(&[3; 32]);
        let me = UserId(k.verifying_key().to_bytes());
        let bob = UserId([7; 32]);
        let p = RoomPolicy::for_creator(bob);
        assert!(!SignedMembership::sign(&k, "paris", 1, vec![me], p).verify(), "a role for a non-member");
    }
}

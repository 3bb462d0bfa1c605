//! The signed membership list of a sender-keys room.
//!
//! A room admin signs `(room, version, members, admins)`; the server accepts an update only if
//! its signer is an admin of the current version and its version is the current one plus one.
//! Members and admins are sets: they are sorted and deduplicated before signing.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier};
use serde::{Deserialize, Serialize};

use crate::UserId;

/// One version of a sender-keys room's membership, signed by an admin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedMembership {
    /// The room's name on its server.
    pub room: String,
    /// Starts at 0 (the creator alone) and increases by one with every update.
    pub version: u64,
    /// Every member, admins included.
    pub members: Vec<UserId>,
    /// The members who may sign the next version.
    pub admins: Vec<UserId>,
    /// The admin who signed this version.
    pub signer: UserId,
    /// Ed25519 signature, base64, over `grove-membership-v1`, the room, the version, and the
    /// sorted members and admins (see the module docs).
    pub signature: String,
}

impl SignedMembership {
    /// Builds and signs a membership version.
    pub fn sign(key: &SigningKey, room: &str, version: u64, mut members: Vec<UserId>, mut admins: Vec<UserId>) -> Self {
        members.sort();
        members.dedup();
        admins.sort();
        admins.dedup();
        let signer = UserId(key.verifying_key().to_bytes());
        let msg = signing_bytes(room, version, &members, &admins);
        SignedMembership {
            room: room.to_string(),
            version,
            members,
            admins,
            signer,
            signature: crate::b64::encode(&key.sign(&msg).to_bytes()),
        }
    }

    /// Checks the signature and the shape: sorted, deduplicated sets, admins among members,
    /// signer's signature valid. Does not check that the signer may sign (the caller knows the
    /// previous version).
    pub fn verify(&self) -> bool {
        let sorted = |v: &[UserId]| v.windows(2).all(|w| w[0] < w[1]);
        if !sorted(&self.members) || !sorted(&self.admins) {
            return false;
        }
        if !self.admins.iter().all(|a| self.members.binary_search(a).is_ok()) {
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
        let msg = signing_bytes(&self.room, self.version, &self.members, &self.admins);
        vk.verify(&msg, &Signature::from_bytes(&sig)).is_ok()
    }
}

fn signing_bytes(room: &str, version: u64, members: &[UserId], admins: &[UserId]) -> Vec<u8> {
    let mut s = format!("grove-membership-v1\n{room}\n{version}\n");
    for m in members {
        s.push_str(&m.to_string());
        s.push(',');
    }
    s.push('\n');
    for a in admins {
        s.push_str(&a.to_string());
        s.push(',');
    }
    s.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_membership_verifies_and_tampering_breaks_it() {
        let k = SigningKey::from_bytes(&[3; 32]);
        let me = UserId(k.verifying_key().to_bytes());
        let bob = UserId([7; 32]);
        let m = SignedMembership::sign(&k, "paris", 1, vec![bob, me], vec![me]);
        assert!(m.verify());
        let mut t = m.clone();
        t.version = 2;
        assert!(!t.verify());
        let mut t = m.clone();
        t.members.pop();
        assert!(!t.verify());
        let mut t = m;
        t.room = "lyon".into();
        assert!(!t.verify());
    }
}

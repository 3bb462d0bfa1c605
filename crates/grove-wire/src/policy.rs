//! A room's policy: who holds which role, who is banned, and which role each action needs.
//!
//! The policy travels *inside the group*: in an MLS room as a GroupContext extension
//! ([`POLICY_EXTENSION`], its bytes are [`RoomPolicy::encode`]), in a sender-keys room inside the
//! admin-signed membership. Its rules (who may change what) are grove-proto's `policy` module;
//! this is the data only.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::UserId;

/// The MLS extension type of the policy (private-use range of RFC 9420, 0xF000 and up).
pub const POLICY_EXTENSION: u16 = 0xF6A0;

/// A member's role, in ascending order of power.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Every member.
    Member,
    /// May remove and ban members (by default).
    Moderator,
    /// May also change roles and the room's settings (by default).
    Admin,
    /// The room's creator (and whom an owner makes owner): may do everything.
    Owner,
}

impl Role {
    /// The role's name, as the CLI and the JSON spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Member => "member",
            Role::Moderator => "moderator",
            Role::Admin => "admin",
            Role::Owner => "owner",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no role.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a role: say owner, admin, moderator or member")]
pub struct ParseRoleError(pub String);

impl FromStr for Role {
    type Err = ParseRoleError;

    fn from_str(s: &str) -> Result<Role, ParseRoleError> {
        match s.to_ascii_lowercase().as_str() {
            "member" => Ok(Role::Member),
            "moderator" | "mod" => Ok(Role::Moderator),
            "admin" => Ok(Role::Admin),
            "owner" => Ok(Role::Owner),
            _ => Err(ParseRoleError(s.to_string())),
        }
    }
}

/// The least role each action needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rights {
    /// Add (invite) members.
    pub invite: Role,
    /// Remove other members (leaving needs no right).
    pub remove: Role,
    /// Ban and unban.
    pub ban: Role,
    /// Change members' roles.
    pub roles: Role,
    /// Change the room's settings: these rights and the room's profile (name, topic).
    pub settings: Role,
}

impl Default for Rights {
    /// Members invite; moderators remove and ban; admins change roles and settings.
    fn default() -> Rights {
        Rights {
            invite: Role::Member,
            remove: Role::Moderator,
            ban: Role::Moderator,
            roles: Role::Admin,
            settings: Role::Admin,
        }
    }
}

/// How someone who was not invited comes into a room (part of the room's policy, so changed only
/// by whom the policy lets change settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JoinRule {
    /// Only by an invitation from a member (every new room).
    #[default]
    InviteOnly,
    /// A holder of the room's link joins at once: an admin's client adds them on its next
    /// sync.
    Link,
    /// A holder of the room's link asks; an admin approves or denies.
    Approval,
}

impl JoinRule {
    /// The rule's name, as the CLI and the JSON spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            JoinRule::InviteOnly => "invite_only",
            JoinRule::Link => "link",
            JoinRule::Approval => "approval",
        }
    }

    fn is_invite_only(&self) -> bool {
        *self == JoinRule::InviteOnly
    }
}

impl fmt::Display for JoinRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no join rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a join policy: say invite-only, link or approval")]
pub struct ParseJoinRuleError(pub String);

impl FromStr for JoinRule {
    type Err = ParseJoinRuleError;

    fn from_str(s: &str) -> Result<JoinRule, ParseJoinRuleError> {
        match s.to_ascii_lowercase().replace('-', "_").as_str() {
            "invite_only" | "invite" => Ok(JoinRule::InviteOnly),
            "link" => Ok(JoinRule::Link),
            "approval" | "approve" => Ok(JoinRule::Approval),
            _ => Err(ParseJoinRuleError(s.to_string())),
        }
    }
}

/// A room's policy. Canonical form: `roles` names only roles above [`Role::Member`] (a member
/// absent from it is a plain member) and only current members; no banned user is a member.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RoomPolicy {
    /// Members holding a role above [`Role::Member`].
    pub roles: BTreeMap<UserId, Role>,
    /// Users who may not be members.
    pub bans: BTreeSet<UserId>,
    /// The least role each action needs.
    pub rights: Rights,
    /// How people not invited come in. Absent from the encoding while invite-only, so a policy
    /// signed before join rules existed encodes (and verifies) as it did.
    #[serde(default, skip_serializing_if = "JoinRule::is_invite_only")]
    pub join: JoinRule,
}

impl RoomPolicy {
    /// The policy of a new room: its creator is the owner, default rights, nobody banned.
    pub fn for_creator(creator: UserId) -> RoomPolicy {
        RoomPolicy { roles: BTreeMap::from([(creator, Role::Owner)]), ..RoomPolicy::default() }
    }

    /// A member's role ([`Role::Member`] for anyone the policy does not name).
    pub fn role_of(&self, user: &UserId) -> Role {
        self.roles.get(user).copied().unwrap_or(Role::Member)
    }

    /// Whether `user` is banned.
    pub fn is_banned(&self, user: &UserId) -> bool {
        self.bans.contains(user)
    }

    /// The members whose role is admin or owner, sorted.
    pub fn admins(&self) -> Vec<UserId> {
        self.roles.iter().filter(|(_, r)| **r >= Role::Admin).map(|(u, _)| *u).collect()
    }

    /// The policy's bytes (JSON; maps and sets are sorted, so equal policies encode equally).
    pub fn encode(&self) -> Vec<u8> {
        // Plain data with string keys: serialising cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads [`RoomPolicy::encode`] output; `None` if the bytes are not a policy.
    pub fn decode(bytes: &[u8]) -> Option<RoomPolicy> {
        serde_json::from_slice(bytes).ok()
    }

    /// Whether the policy is canonical for these members (sorted, deduplicated): roles name
    /// only members and only roles above member ([`RoomPolicy::roles_fit`]); no member is
    /// banned.
    pub fn fits(&self, members: &[UserId]) -> bool {
        self.roles_fit(members) && !self.bans.iter().any(|u| members.binary_search(u).is_ok())
    }

    /// Whether the roles name only these members (sorted, deduplicated), and only roles above
    /// member.
    pub fn roles_fit(&self, members: &[UserId]) -> bool {
        self.roles.iter().all(|(u, r)| *r > Role::Member && members.binary_search(u).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_order_parse_and_a_policy_round_trips() {
        assert!(Role::Owner > Role::Admin && Role::Admin > Role::Moderator && Role::Moderator > Role::Member);
        assert_eq!("Moderator".parse::<Role>(), Ok(Role::Moderator));
        assert!("king".parse::<Role>().is_err());
        let alice = UserId([1; 32]);
        let bob = UserId([2; 32]);
        let mut p = RoomPolicy::for_creator(alice);
        p.bans.insert(bob);
        assert_eq!(RoomPolicy::decode(&p.encode()), Some(p.clone()));
        assert_eq!(p.role_of(&alice), Role::Owner);
        assert_eq!(p.role_of(&bob), Role::Member);
        assert!(p.fits(&[alice]));
        assert!(!p.fits(&[alice, bob]), "a banned user is a member");
        assert!(!p.fits(&[]), "a role for a non-member");
        assert_eq!(RoomPolicy::decode(b"nonsense"), None);
        // An invite-only policy encodes as before join rules existed.
        assert!(!String::from_utf8(p.encode()).unwrap().contains("join"));
        p.join = JoinRule::Approval;
        assert_eq!(RoomPolicy::decode(&p.encode()), Some(p.clone()));
        assert_eq!("invite-only".parse::<JoinRule>(), Ok(JoinRule::InviteOnly));
    }
}

//! The room policy's rules: who may add, remove, ban, change roles and change settings.
//!
//! One implementation for both modes and both sides: the server's hub and every client call
//! [`check`] (MLS through [`crate::mls::policy::PolicyRules`], sender keys through
//! [`check_membership`]), so a change the server refuses is a change every client refuses,
//! and a client refuses it even if a server let it through.
//!
//! The rules, with roles read from the policy *before* the change (nobody raises itself and
//! uses the new role in one change):
//! - Adding a member needs `rights.invite`; nobody banned (after the change) may be added.
//! - Removing another member needs `rights.remove` and a role above the target's (an owner may
//!   remove another owner). A member may always remove itself (leave).
//! - The roles of removed members go with them (that needs no right). Any other change of a
//!   member's role needs `rights.roles` and a role above both the old and the new role (an owner
//!   may give and take any role, owner included).
//! - Banning needs `rights.ban` and a role above the target's; unbanning needs `rights.ban`.
//! - Changing the rights needs `rights.settings`.
//! - The policy after the change must fit the members after it ([`RoomPolicy::fits`]): roles
//!   only for members, no banned member.

use grove_wire::policy::{Role, RoomPolicy};

mod homes;
pub use homes::check_homes;

use crate::identity::UserId;

/// Why a change is not allowed by the room's policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The actor's role is below the one the action needs.
    #[error("{actor} is {has} and {action} needs {needs}")]
    Rights {
        /// Who tried.
        actor: UserId,
        /// What it tried.
        action: &'static str,
        /// The actor's role.
        has: Role,
        /// The least role the action needs.
        needs: Role,
    },
    /// The actor does not outrank the member it acts on.
    #[error("{actor} ({has}) cannot {action} {target} ({target_role})")]
    Outranked {
        /// Who tried.
        actor: UserId,
        /// The actor's role.
        has: Role,
        /// What it tried.
        action: &'static str,
        /// The member acted on.
        target: UserId,
        /// That member's role (for a role change, the higher of its old and new role).
        target_role: Role,
    },
    /// The change adds a banned user.
    #[error("{0} is banned from the room")]
    Banned(UserId),
    /// The policy after the change is not valid for the members after it.
    #[error("the room's policy would be invalid: {0}")]
    Invalid(&'static str),
    /// A member's home server was changed or dropped by someone else, or named by a signer who
    /// may not invite ([`check_homes`]).
    #[error("{actor} may not change the home server of {member}")]
    Home {
        /// Who signed.
        actor: UserId,
        /// Whose home.
        member: UserId,
    },
}

/// One membership operation of a change, with the member who made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `by` adds `user`.
    Add {
        /// Who adds.
        by: UserId,
        /// Who is added.
        user: UserId,
    },
    /// `by` removes `user` (`by == user`: leaving).
    Remove {
        /// Who removes.
        by: UserId,
        /// Who is removed.
        user: UserId,
    },
}

fn need(policy: &RoomPolicy, actor: UserId, action: &'static str, needs: Role) -> Result<Role, PolicyError> {
    let has = policy.role_of(&actor);
    if has < needs {
        return Err(PolicyError::Rights { actor, action, has, needs });
    }
    Ok(has)
}

fn outrank(has: Role, target_role: Role) -> bool {
    has == Role::Owner || has > target_role
}

/// Checks a change of a room: `before` and `after` are its policies, `members_after` its
/// members afterwards (sorted), `ops` the membership operations with their authors, and
/// `policy_by` who changed the policy (the proposer of an MLS GroupContextExtensions proposal,
/// the signer of a sender-keys membership; `None` if nobody proposed a new policy, in which case
/// `after` must equal `before` but for the roles of removed members).
pub fn check(
    before: &RoomPolicy,
    after: &RoomPolicy,
    members_after: &[UserId],
    ops: &[Op],
    policy_by: Option<UserId>,
) -> Result<(), PolicyError> {
    let mut base = before.clone();
    for op in ops {
        match *op {
            Op::Add { by, user } => {
                need(before, by, "adding members", before.rights.invite)?;
                if after.is_banned(&user) {
                    return Err(PolicyError::Banned(user));
                }
            }
            Op::Remove { by, user } => {
                if by != user {
                    let has = need(before, by, "removing members", before.rights.remove)?;
                    let target_role = before.role_of(&user);
                    if !outrank(has, target_role) {
                        return Err(PolicyError::Outranked {
                            actor: by,
                            has,
                            action: "remove",
                            target: user,
                            target_role,
                        });
                    }
                }
                base.roles.remove(&user);
            }
        }
    }
    if !after.fits(members_after) {
        return Err(if after.bans.iter().any(|u| members_after.binary_search(u).is_ok()) {
            PolicyError::Invalid("a banned user is a member")
        } else {
            PolicyError::Invalid("a role names a non-member, or names the member role")
        });
    }
    if base == *after {
        return Ok(());
    }
    let Some(by) = policy_by else {
        return Err(PolicyError::Invalid("the policy changed without a proposal"));
    };
    let users = base.roles.keys().chain(after.roles.keys()).copied().collect::<std::collections::BTreeSet<_>>();
    for user in users {
        let (old, new) = (base.role_of(&user), after.role_of(&user));
        if old != new {
            let has = need(before, by, "changing roles", before.rights.roles)?;
            let target_role = old.max(new);
            if !outrank(has, target_role) {
                return Err(PolicyError::Outranked {
                    actor: by,
                    has,
                    action: "change the role of",
                    target: user,
                    target_role,
                });
            }
        }
    }
    for user in after.bans.symmetric_difference(&base.bans) {
        let has = need(before, by, "banning", before.rights.ban)?;
        let target_role = before.role_of(user);
        if after.is_banned(user) && !outrank(has, target_role) {
            return Err(PolicyError::Outranked { actor: by, has, action: "ban", target: *user, target_role });
        }
    }
    if after.rights != base.rights {
        need(before, by, "changing the room's settings", before.rights.settings)?;
    }
    Ok(())
}

/// Checks the next signed membership of a sender-keys room against the previous version's
/// members (sorted) and policy: its signer must be a member before, and the change (members
/// added and removed, policy) must be allowed to it by [`check`]. Signature, room and version
/// are the caller's to check.
pub fn check_membership(
    members_before: &[UserId],
    before: &RoomPolicy,
    members_after: &[UserId],
    after: &RoomPolicy,
    signer: UserId,
) -> Result<(), PolicyError> {
    if members_before.binary_search(&signer).is_err() {
        return Err(PolicyError::Rights {
            actor: signer,
            action: "changing the membership",
            has: Role::Member,
            needs: Role::Member,
        });
    }
    let mut ops: Vec<Op> = members_after
        .iter()
        .filter(|u| members_before.binary_search(u).is_err())
        .map(|&user| Op::Add { by: signer, user })
        .collect();
    ops.extend(
        members_before
            .iter()
            .filter(|u| members_after.binary_search(u).is_err())
            .map(|&user| Op::Remove { by: signer, user }),
    );
    check(before, after, members_after, &ops, Some(signer))
}

/// Whether `user` may add members under `policy`.
pub fn may_invite(policy: &RoomPolicy, user: &UserId) -> bool {
    policy.role_of(user) >= policy.rights.invite
}

/// Whether `user` may change the room's settings (its profile included) under `policy`.
pub fn may_change_settings(policy: &RoomPolicy, user: &UserId) -> bool {
    policy.role_of(user) >= policy.rights.settings
}

/// An edit of a policy, as a member asks for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edit {
    /// Give `user` a role ([`Role::Member`] takes its role away).
    SetRole(UserId, Role),
    /// Ban `user` (and take its role: a banned user is no member).
    Ban(UserId),
    /// Lift `user`'s ban.
    Unban(UserId),
}

impl Edit {
    /// `policy` with the edit made.
    pub fn apply(&self, policy: &RoomPolicy) -> RoomPolicy {
        let mut p = policy.clone();
        match *self {
            Edit::SetRole(user, Role::Member) => {
                p.roles.remove(&user);
            }
            Edit::SetRole(user, role) => {
                p.roles.insert(user, role);
            }
            Edit::Ban(user) => {
                p.roles.remove(&user);
                p.bans.insert(user);
            }
            Edit::Unban(user) => {
                p.bans.remove(&user);
            }
        }
        p
    }

    /// The member the edit removes from the room (a ban of a member), if any.
    pub fn removes(&self) -> Option<UserId> {
        match *self {
            Edit::Ban(user) => Some(user),
            _ => None,
        }
    }
}

/// `policy` without the roles of `removed` (what a change removing them must carry).
pub fn without(policy: &RoomPolicy, removed: &[UserId]) -> RoomPolicy {
    let mut p = policy.clone();
    p.roles.retain(|u, _| !removed.contains(u));
    p
}

#[cfg(test)]
mod tests;

//! The room policy in an MLS group: a GroupContext extension ([`POLICY_EXTENSION`]) that every
//! commit must keep valid, checked by [`PolicyRules`], the mls-rs `MlsRules` that both the hub
//! ([`crate::mls::hub`]) and every client ([`crate::mls::engine`]) use.
//!
//! A new group carries the policy (its creator the owner) and requires the extension in every
//! member's capabilities (mls-rs refuses a member whose leaf does not list a GroupContext
//! extension, and the RequiredCapabilities extension says so explicitly).
//!
//! On a received commit (hub and clients alike) the rules read the policy before (the current
//! GroupContext) and after (the commit's GroupContextExtensions proposal, if any), who proposed
//! each Add and Remove (a by-value proposal's sender is the committer; a leave proposal's is the
//! leaver), and call [`crate::policy::check`]. On a commit this member prepares, they only drop
//! the roles of removed members from the policy (a GroupContextExtensions proposal is added or
//! amended): whether the change is allowed is the server's first answer (`not_allowed`), then
//! every member's.
//!
//! A group created before grove had policies carries none; the rules then allow what they
//! allowed before (any member adds and removes) and refuse to give it one.

use std::collections::BTreeSet;
use std::convert::Infallible;

use grove_wire::policy::RoomPolicy;
pub use grove_wire::policy::POLICY_EXTENSION;
use mls_rs::error::IntoAnyError;
use mls_rs::extension::built_in::RequiredCapabilitiesExt;
use mls_rs::group::proposal::Proposal;
use mls_rs::group::{GroupContext, Roster, Sender};
use mls_rs::mls_rules::{
    CommitDirection, CommitOptions, CommitSource, DefaultMlsRules, EncryptionOptions, ProposalBundle, ProposalSource,
};
use mls_rs::{Extension, ExtensionList, MlsRules};
use mls_rs_core::extension::ExtensionType;

use crate::identity::UserId;
use crate::mls::identity::user_of;
use crate::policy::{check, without, Op, PolicyError};

impl IntoAnyError for PolicyError {
    fn into_dyn_error(self) -> Result<Box<dyn std::error::Error + Send + Sync>, Self> {
        Ok(self.into())
    }
}

/// The policy extension's type.
pub fn extension_type() -> ExtensionType {
    ExtensionType::new(POLICY_EXTENSION)
}

/// The policy in a GroupContext's extensions: `Ok(None)` if there is none (a group from before
/// policies), an error if it does not decode.
pub fn read(extensions: &ExtensionList) -> Result<Option<RoomPolicy>, PolicyError> {
    match extensions.get(extension_type()) {
        None => Ok(None),
        Some(ext) => RoomPolicy::decode(ext.extension_data())
            .map(Some)
            .ok_or(PolicyError::Invalid("the policy extension does not decode")),
    }
}

/// `extensions` with the policy set to `policy`.
pub fn with_policy(extensions: &ExtensionList, policy: &RoomPolicy) -> ExtensionList {
    let mut out = extensions.clone();
    out.set(Extension::new(extension_type(), policy.encode()));
    out
}

/// The GroupContext extensions of a new group whose creator is `creator`: its policy, and the
/// requirement that every member support the policy extension.
pub(crate) fn new_group_extensions(creator: UserId) -> Result<ExtensionList, mls_rs::error::ExtensionError> {
    let mut list = with_policy(&ExtensionList::default(), &RoomPolicy::for_creator(creator));
    list.set_from(RequiredCapabilitiesExt {
        extensions: vec![extension_type()],
        proposals: vec![],
        credentials: vec![],
    })?;
    Ok(list)
}

/// The `MlsRules` of grove: mls-rs' defaults (the commit options given) plus the room policy.
#[derive(Debug, Clone)]
pub struct PolicyRules {
    inner: DefaultMlsRules,
}

impl PolicyRules {
    /// The rules, with `inner` deciding commit and encryption options.
    pub fn new(inner: DefaultMlsRules) -> PolicyRules {
        PolicyRules { inner }
    }
}

fn user_at(roster: &Roster, index: u32) -> Result<UserId, PolicyError> {
    roster
        .member_with_index(index)
        .ok()
        .and_then(|m| user_of(&m.signing_identity).ok())
        .ok_or(PolicyError::Invalid("a proposal names a leaf that is not a member"))
}

fn sender_user(roster: &Roster, sender: &Sender) -> Result<UserId, PolicyError> {
    match sender {
        Sender::Member(index) => user_at(roster, *index),
        _ => Err(PolicyError::Invalid("a proposal from outside the group")),
    }
}

/// Checks (receiving) or completes (sending) a commit's proposals against the policy.
fn filter(
    direction: CommitDirection,
    source: &CommitSource,
    roster: &Roster,
    context: &GroupContext,
    mut proposals: ProposalBundle,
) -> Result<ProposalBundle, PolicyError> {
    // An external commit is a member's resync (its one rule: `crate::mls::resync`), or, if it
    // removes no leaf, a link join (`crate::mls::links`).
    if let CommitSource::NewMember(identity) = source {
        if proposals.remove_proposals().is_empty() {
            return crate::mls::links::check_link_join(identity, roster, context, &proposals).map(|()| proposals);
        }
        return crate::mls::resync::check_replaces_own_leaf(identity, roster, &proposals).map(|()| proposals);
    }
    let gce = proposals.group_context_ext_proposals().last().cloned();
    let Some(before) = read(&context.extensions)? else {
        if gce.is_some_and(|p| p.proposal.has_extension(extension_type())) {
            return Err(PolicyError::Invalid("a room created without a policy cannot be given one"));
        }
        return Ok(proposals);
    };
    let committer = match source {
        CommitSource::ExistingMember(m) => m.index,
        CommitSource::NewMember(_) => return Err(PolicyError::Invalid("an external commit is judged above")),
    };
    let mut members: BTreeSet<UserId> =
        roster.members_iter().filter_map(|m| user_of(&m.signing_identity).ok()).collect();
    let mut ops = Vec::new();
    let mut removed = Vec::new();
    for r in proposals.remove_proposals() {
        let user = user_at(roster, r.proposal.to_remove())?;
        ops.push(Op::Remove { by: sender_user(roster, &r.sender)?, user });
        members.remove(&user);
        removed.push(user);
    }
    for a in proposals.add_proposals() {
        let user = user_of(a.proposal.signing_identity())
            .map_err(|_| PolicyError::Invalid("an added leaf is no grove user"))?;
        ops.push(Op::Add { by: sender_user(roster, &a.sender)?, user });
        members.insert(user);
    }
    let (after, by) = match &gce {
        Some(p) => (
            read(&p.proposal)?.ok_or(PolicyError::Invalid("a commit cannot drop the room's policy"))?,
            Some(sender_user(roster, &p.sender)?),
        ),
        None => (before.clone(), None),
    };
    if direction == CommitDirection::Send {
        let trimmed = without(&after, &removed);
        if trimmed != after {
            let base = gce.as_ref().map_or(&context.extensions, |p| &p.proposal);
            let list = with_policy(base, &trimmed);
            proposals.retain_by_type::<ExtensionList, _, Infallible>(|_| Ok(false)).ok();
            proposals.add(Proposal::GroupContextExtensions(list), Sender::Member(committer), ProposalSource::ByValue);
        }
        return Ok(proposals);
    }
    let members: Vec<UserId> = members.into_iter().collect();
    check(&before, &after, &members, &ops, by)?;
    Ok(proposals)
}

impl MlsRules for PolicyRules {
    type Error = PolicyError;

    fn filter_proposals(
        &self,
        direction: CommitDirection,
        source: CommitSource,
        current_roster: &Roster,
        current_context: &GroupContext,
        proposals: ProposalBundle,
    ) -> Result<ProposalBundle, PolicyError> {
        filter(direction, &source, current_roster, current_context, proposals)
    }

    fn commit_options(
        &self,
        new_roster: &Roster,
        new_context: &GroupContext,
        proposals: &ProposalBundle,
    ) -> Result<CommitOptions, PolicyError> {
        match self.inner.commit_options(new_roster, new_context, proposals) {
            Ok(o) => Ok(o),
            Err(never) => match never {},
        }
    }

    fn encryption_options(
        &self,
        current_roster: &Roster,
        current_context: &GroupContext,
    ) -> Result<EncryptionOptions, PolicyError> {
        match self.inner.encryption_options(current_roster, current_context) {
            Ok(o) => Ok(o),
            Err(never) => match never {},
        }
    }
}

/// The policy refusal inside an mls-rs error, if that is what it is.
pub fn refusal(e: &mls_rs::error::MlsError) -> Option<PolicyError> {
    match e {
        mls_rs::error::MlsError::MlsRulesError(any) => any.inner_dyn_error().downcast_ref::<PolicyError>().cloned(),
        _ => None,
    }
}

/// Checks a proposal sent on its own (not inside a commit) by the member at `sender_index`: in
/// a room with a policy, only a member's own leave may be proposed; every other change is made
/// by a commit, where the policy judges its committer.
pub fn check_proposal(context: &GroupContext, sender_index: u32, proposal: &Proposal) -> Result<(), PolicyError> {
    if read(&context.extensions)?.is_none() {
        return Ok(());
    }
    match proposal {
        Proposal::Remove(r) if r.to_remove() == sender_index => Ok(()),
        _ => Err(PolicyError::Invalid("only a member's own leave may be proposed; other changes come as commits")),
    }
}

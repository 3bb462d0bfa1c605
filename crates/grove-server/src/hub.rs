//! The server's use of grove-proto's MLS hub validator, and its errors as HTTP answers.

use grove_proto::mls::hub::{HubError, HubGroup};
use grove_wire::{ErrorCode, UserId};

use crate::error::AppError;

/// The public state of one MLS room.
pub(crate) struct Hub(HubGroup);

impl Hub {
    pub fn observe(group_info: &[u8], ratchet_tree: &[u8]) -> Result<Hub, HubError> {
        HubGroup::observe(group_info, ratchet_tree).map(Hub)
    }

    pub fn restore(bytes: &[u8]) -> Result<Hub, HubError> {
        HubGroup::restore(bytes).map(Hub)
    }

    pub fn snapshot(&self) -> Result<Vec<u8>, HubError> {
        self.0.snapshot()
    }

    pub fn epoch(&self) -> u64 {
        self.0.epoch()
    }

    pub fn members(&self) -> Vec<UserId> {
        self.0.members()
    }

    pub fn ratchet_tree(&self) -> Result<Vec<u8>, HubError> {
        self.0.ratchet_tree()
    }

    /// Validates a commit; the group as it will be once the commit is durable.
    pub fn check_commit(&self, body: &[u8], sender: &UserId) -> Result<Hub, HubError> {
        self.0.check_commit(body, sender).map(|c| Hub(c.next))
    }

    /// Validates a proposal; the group caching it.
    pub fn check_proposal(&self, body: &[u8], sender: &UserId) -> Result<Hub, HubError> {
        self.0.check_proposal(body, sender).map(|c| Hub(c.next))
    }

    /// The epoch an application message was made in.
    pub fn check_application(&self, body: &[u8]) -> Result<u64, HubError> {
        self.0.check_application(body)
    }
}

/// A refused commit or proposal as an HTTP answer.
pub(crate) fn commit_error(e: HubError, head: u64, is_commit: bool) -> AppError {
    let invalid = if is_commit { ErrorCode::InvalidCommit } else { ErrorCode::InvalidProposal };
    let what = if is_commit { "commit" } else { "proposal" };
    match e {
        HubError::WrongEpoch { message_epoch, current_epoch } => {
            AppError::wrong_epoch(current_epoch, head, message_epoch)
        }
        HubError::SenderMismatch => AppError::new(
            ErrorCode::SenderMismatch,
            format!("the {what} is signed by another member's leaf than the request's signer"),
        ),
        HubError::NotAMember => {
            AppError::new(ErrorCode::NotMember, format!("the {what}'s sender is not a member leaf"))
        }
        HubError::Internal(d) => AppError::internal("MLS hub failure", d),
        HubError::NotPublicMessage => AppError::new(invalid, format!("a {what} must be sent as an MLS PublicMessage")),
        other => AppError::new(invalid, format!("the {what} failed validation: {other}")),
    }
}

//! The typed details of MLS errors, shared by the client engine
//! ([`EngineError`](crate::mls::engine::EngineError)) and the hub
//! ([`HubError`](crate::mls::hub::HubError)): what did not decode ([`Malformed`]), why
//! validation refused ([`Rejection`]), and our own bugs ([`Internal`]), each keeping the mls-rs
//! error it came from as its [`source`](std::error::Error::source) ([`Cause`]).

use std::error::Error;
use std::fmt;
use std::sync::Arc;

/// The error of a dependency (mls-rs, its codec) that caused one of ours, kept whole as the
/// [`source`](Error::source). Cheap to clone; two causes are equal when they read the same
/// (mls-rs' errors are neither `Clone` nor `PartialEq`).
#[derive(Clone)]
pub struct Cause(Arc<dyn Error + Send + Sync>);

impl Cause {
    /// Keeps `e` as a cause.
    pub(crate) fn new(e: impl Error + Send + Sync + 'static) -> Cause {
        Cause(Arc::new(e))
    }

    /// The error itself.
    pub fn get(&self) -> &(dyn Error + Send + Sync + 'static) {
        &*self.0
    }
}

impl fmt::Debug for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl PartialEq for Cause {
    fn eq(&self, other: &Cause) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0.to_string() == other.0.to_string()
    }
}

impl Eq for Cause {}

impl Error for Cause {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.0.source()
    }
}

/// What an input was expected to be, when it was something else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Expected {
    /// A KeyPackage message.
    KeyPackage,
    /// A Welcome message.
    Welcome,
    /// A GroupInfo message.
    GroupInfo,
    /// A group message: a PublicMessage or a PrivateMessage.
    GroupMessage,
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Expected::KeyPackage => "a KeyPackage",
            Expected::Welcome => "a Welcome",
            Expected::GroupInfo => "a GroupInfo message",
            Expected::GroupMessage => "a PublicMessage or PrivateMessage",
        })
    }
}

/// Input that does not decode as the MLS structure it must be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Malformed {
    /// The bytes are not an MLS message.
    #[error("not an MLS message: {0}")]
    Message(#[source] Cause),
    /// The ratchet tree does not decode.
    #[error("the ratchet tree does not decode: {0}")]
    RatchetTree(#[source] Cause),
    /// An MLS message of another kind than the one expected.
    #[error("expected {0}")]
    Expected(Expected),
}

/// Why MLS validation refused well-formed input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// mls-rs refused it: bad signature or tag, undecryptable, invalid proposal or update path,
    /// a tree that does not match the GroupInfo, a bad credential, a KeyPackage that cannot be
    /// added, a message from a member who has since left, ...
    #[error("{0}")]
    Mls(#[source] Cause),
    /// A ReInit commit (grove cannot follow a group into its successor).
    #[error("ReInit commits are not supported")]
    ReInit,
    /// An external commit that is not a member's resync (it removes no leaf, or more than one).
    #[error("an external commit must replace its committer's own leaf")]
    ExternalCommit,
    /// A proposal from outside the group.
    #[error("proposals from non-members are not supported")]
    NonMemberProposal,
    /// An application message sent as a PublicMessage.
    #[error("an application message must be a PrivateMessage")]
    PublicApplication,
    /// A handshake message sent as a PrivateMessage (the hub could not validate it).
    #[error("a handshake message must be a PublicMessage")]
    PrivateHandshake,
}

/// A bug on our side: an invariant of grove-proto or of mls-rs did not hold. Says what we were
/// doing, and keeps the error that surfaced it, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Internal {
    what: &'static str,
    cause: Option<Cause>,
}

impl Internal {
    /// A broken invariant, with no underlying error.
    pub(crate) fn new(what: &'static str) -> Internal {
        Internal { what, cause: None }
    }

    /// A broken invariant surfaced by `cause`.
    pub(crate) fn caused(what: &'static str, cause: impl Error + Send + Sync + 'static) -> Internal {
        Internal { what, cause: Some(Cause::new(cause)) }
    }

    /// What was being done, or what did not hold.
    pub fn what(&self) -> &'static str {
        self.what
    }
}

impl fmt::Display for Internal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.cause {
            Some(c) => write!(f, "{}: {c}", self.what),
            None => f.write_str(self.what),
        }
    }
}

impl Error for Internal {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.cause.as_ref().map(|c| c as &(dyn Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_are_kept_and_compared_by_what_they_say() {
        let io = || std::io::Error::other("disk on fire");
        let a = Internal::caused("writing the group", io());
        assert_eq!(a.to_string(), "writing the group: disk on fire");
        assert_eq!(a.source().map(|s| s.to_string()), Some("disk on fire".to_string()));
        assert_eq!(a, Internal::caused("writing the group", io()));
        assert_ne!(a, Internal::new("writing the group"));
        let m = Malformed::Message(Cause::new(io()));
        assert!(m.source().is_some());
        assert_eq!(Malformed::Expected(Expected::Welcome).to_string(), "expected a Welcome");
    }

    #[test]
    fn kinds_say_whose_fault_it_was() {
        use crate::mls::engine::{CorruptState, EngineError, GroupId};
        use crate::mls::hub::{self, HubError};
        use crate::ErrorKind;

        let g = GroupId::new(vec![1]);
        assert_eq!(EngineError::Rejected(Rejection::ReInit).kind(), ErrorKind::Rejected);
        assert_eq!(EngineError::Malformed(Malformed::Expected(Expected::KeyPackage)).kind(), ErrorKind::Rejected);
        assert_eq!(EngineError::WrongEpoch { message_epoch: 2, current_epoch: 1 }.kind(), ErrorKind::Rejected);
        assert_eq!(EngineError::OwnCommitLost.kind(), ErrorKind::Rejected);
        assert_eq!(EngineError::NoSuchGroup(g.clone()).kind(), ErrorKind::Misuse);
        assert_eq!(EngineError::CorruptState(CorruptState::GroupTwice(g)).kind(), ErrorKind::Misuse);
        assert_eq!(EngineError::LeaveProposed.kind(), ErrorKind::Misuse);
        assert_eq!(EngineError::Internal(Internal::new("x")).kind(), ErrorKind::Internal);
        assert_eq!(HubError::SenderMismatch.kind(), ErrorKind::Rejected);
        assert_eq!(HubError::Rejected(Rejection::ReInit).kind(), ErrorKind::Rejected);
        assert_eq!(HubError::CorruptSnapshot(hub::CorruptSnapshot::Empty).kind(), ErrorKind::Misuse);
        assert_eq!(HubError::Internal(Internal::new("x")).kind(), ErrorKind::Internal);
    }
}

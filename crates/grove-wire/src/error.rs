//! Every error a grove server answers: a stable machine-readable [`ErrorCode`], a human
//! message, and for ordering errors the room's current epoch and head.

use serde::{Deserialize, Serialize};

/// The stable, machine-readable error codes of API v1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The request body is not valid JSON of the expected shape.
    MalformedBody,
    /// A query parameter or path segment is invalid.
    BadRequest,
    /// A room name breaks the naming rules.
    InvalidName,
    /// The authentication headers are missing or unreadable.
    Unauthenticated,
    /// The request signature does not verify.
    BadSignature,
    /// The request timestamp is outside the allowed clock skew.
    StaleTimestamp,
    /// The request nonce was already used.
    NonceReused,
    /// The server's policy does not allow this (e.g. room creation is closed).
    Forbidden,
    /// Only current members of the room may do this.
    NotMember,
    /// No such resource.
    NotFound,
    /// The route exists but not for this method.
    MethodNotAllowed,
    /// A room with this name already exists.
    RoomExists,
    /// The user created as many rooms as the server allows.
    RoomLimit,
    /// The room would exceed its member limit.
    MemberLimit,
    /// A handshake entry was made in an epoch other than the room's current one.
    WrongEpoch,
    /// An application message was made in an epoch older than the room's window.
    EpochTooOld,
    /// The MLS commit failed validation against the room's public group state.
    InvalidCommit,
    /// The MLS proposal failed validation.
    InvalidProposal,
    /// The message is not a valid message of this room's protocol.
    InvalidMessage,
    /// The MLS message was sent by a leaf other than the request's signer.
    SenderMismatch,
    /// This entry kind is not allowed in a room of this mode.
    WrongKind,
    /// A membership update's signature or signer is not valid.
    BadMembership,
    /// A membership update's version is not the current version plus one.
    MembershipVersion,
    /// The body or a field is larger than the server accepts.
    PayloadTooLarge,
    /// The recipient's mailbox is full.
    MailboxFull,
    /// The user has published as much key material as the server keeps.
    KeyLimit,
    /// No key material of that kind is available for the user.
    NoKeyMaterial,
    /// Too many requests; retry after the number of seconds in `Retry-After`.
    RateLimited,
    /// The server is shutting down or overloaded.
    Unavailable,
    /// Something went wrong on the server; details are in its log, not here.
    Internal,
    /// A file is larger than the server's per-file limit (`limits.files.max_file_bytes`).
    FileTooLarge,
    /// The uploader's or the room's file quota would be exceeded.
    FileQuota,
    /// An upload part was sent for an offset other than the upload's current one; read the
    /// upload's state and resume from its `received`.
    UploadOffset,
    /// The file is still being uploaded (or the upload was abandoned): it cannot be read yet.
    UploadIncomplete,
    /// The `Range` of a download starts at or past the end of the file.
    RangeNotSatisfiable,
    /// The body's SHA-256 is not the one the request declared and signed.
    ContentDigestMismatch,
    /// The client did not send the whole request body in time (`connections.body_timeout_secs`).
    RequestTimeout,
    /// A request body was sent with a `Content-Type` other than `application/json`.
    UnsupportedMediaType,
    /// A push socket follows as many rooms as the server allows (`quotas.push_subscriptions`).
    SubscriptionLimit,
    /// The server's storage is full (or, for new rooms and uploads, down to the reserve it keeps
    /// for messages): nothing was written; retry later, once the operator has freed space.
    StorageFull,
    /// No room by that name on this server (never created, or deleted by the operator).
    RoomNotFound,
    /// The server's operator blocked the request's key (or, for a deposit, the recipient's).
    Blocked,
    /// A fault report is contradicted by its own evidence: the commit's membership tag verifies
    /// under the membership key the report revealed. Counted against the reporter.
    FalseReport,
    /// The reported entry is not a commit the room can still go back on (not a commit, already
    /// voided or superseded, the reporter's own, or older than the server keeps states for).
    NotReportable,
    /// The room's policy does not let the sender make this change (add, remove, ban, change a
    /// role or a setting), or it adds a banned user.
    NotAllowed,
    /// The room has no invite link, or not this one (it was revoked or reset).
    LinkInvalid,
    /// The invite link expired.
    LinkExpired,
    /// The invite link was used as many times as it may be.
    LinkUsedUp,
    /// The room has as many join requests waiting as the server keeps
    /// (`limits.pending_joins_per_room`): an admin must decide some first.
    JoinQueueFull,
}

impl ErrorCode {
    /// The HTTP status that carries this code.
    pub fn http_status(self) -> u16 {
        use ErrorCode::*;
        match self {
            MalformedBody | BadRequest | InvalidName | InvalidCommit | InvalidProposal | InvalidMessage | WrongKind
            | BadMembership => 400,
            Unauthenticated | BadSignature | StaleTimestamp | NonceReused => 401,
            Forbidden | NotMember | SenderMismatch | RoomLimit | MemberLimit | KeyLimit => 403,
            NotFound | NoKeyMaterial => 404,
            MethodNotAllowed => 405,
            RoomExists | WrongEpoch | EpochTooOld | MembershipVersion => 409,
            PayloadTooLarge => 413,
            MailboxFull | RateLimited => 429,
            Unavailable => 503,
            Internal => 500,
            FileTooLarge => 413,
            FileQuota => 403,
            UploadOffset | UploadIncomplete => 409,
            RangeNotSatisfiable => 416,
            ContentDigestMismatch => 400,
            RequestTimeout => 408,
            UnsupportedMediaType => 415,
            SubscriptionLimit => 403,
            StorageFull => 507,
            RoomNotFound => 404,
            Blocked => 403,
            FalseReport => 422,
            NotReportable => 409,
            NotAllowed => 403,
            LinkInvalid => 403,
            LinkExpired | LinkUsedUp => 410,
            JoinQueueFull => 429,
        }
    }

    /// The code as it appears in JSON.
    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            MalformedBody => "malformed_body",
            BadRequest => "bad_request",
            InvalidName => "invalid_name",
            Unauthenticated => "unauthenticated",
            BadSignature => "bad_signature",
            StaleTimestamp => "stale_timestamp",
            NonceReused => "nonce_reused",
            Forbidden => "forbidden",
            NotMember => "not_member",
            NotFound => "not_found",
            MethodNotAllowed => "method_not_allowed",
            RoomExists => "room_exists",
            RoomLimit => "room_limit",
            MemberLimit => "member_limit",
            WrongEpoch => "wrong_epoch",
            EpochTooOld => "epoch_too_old",
            InvalidCommit => "invalid_commit",
            InvalidProposal => "invalid_proposal",
            InvalidMessage => "invalid_message",
            SenderMismatch => "sender_mismatch",
            WrongKind => "wrong_kind",
            BadMembership => "bad_membership",
            MembershipVersion => "membership_version",
            PayloadTooLarge => "payload_too_large",
            MailboxFull => "mailbox_full",
            KeyLimit => "key_limit",
            NoKeyMaterial => "no_key_material",
            RateLimited => "rate_limited",
            Unavailable => "unavailable",
            Internal => "internal",
            FileTooLarge => "file_too_large",
            FileQuota => "file_quota",
            UploadOffset => "upload_offset",
            UploadIncomplete => "upload_incomplete",
            RangeNotSatisfiable => "range_not_satisfiable",
            ContentDigestMismatch => "content_digest_mismatch",
            RequestTimeout => "request_timeout",
            UnsupportedMediaType => "unsupported_media_type",
            SubscriptionLimit => "subscription_limit",
            StorageFull => "storage_full",
            RoomNotFound => "room_not_found",
            Blocked => "blocked",
            FalseReport => "false_report",
            NotReportable => "not_reportable",
            NotAllowed => "not_allowed",
            LinkInvalid => "link_invalid",
            LinkExpired => "link_expired",
            LinkUsedUp => "link_used_up",
            JoinQueueFull => "join_queue_full",
        }
    }
}

/// The JSON body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// Stable machine-readable code.
    pub code: ErrorCode,
    /// Human-readable explanation, safe to show to a user.
    pub message: String,
    /// For `wrong_epoch`, `epoch_too_old` and `membership_version`: the room's current epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_epoch: Option<u64>,
    /// For `wrong_epoch`: the room's head sequence number, so the client knows what to fetch.
    /// For `not_member` answered to a member removed from the room: the sequence number of the
    /// entry that removed it, the last one it may read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<u64>,
    /// For `rate_limited`: seconds to wait (also in the `Retry-After` header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with just a code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError { code, message: message.into(), current_epoch: None, head: None, retry_after: None }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code.as_str())
    }
}

impl std::error::Error for ApiError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialize_as_their_names() {
        for code in [ErrorCode::WrongEpoch, ErrorCode::NonceReused, ErrorCode::MalformedBody] {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }
}

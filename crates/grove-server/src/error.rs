//! The one place where errors become HTTP answers. A handler refuses a request with a typed
//! refusal (one enum per area, each variant saying whose fault it is and carrying its data and,
//! where there is one, its cause); this module alone picks each refusal's HTTP status (through
//! its [`ErrorCode`]), its machine-readable code, its human message and its extra headers
//! (`Retry-After`, `Content-Range`). Internal failures are logged here and answered with a
//! generic `internal` error: no internal text reaches a client.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use grove_proto::mls::fault::FaultError;
use grove_proto::mls::hub::HubError;
use grove_proto::policy::PolicyError;
use grove_wire::api::{EntryKind, KeyKind, RoomMode};
use grove_wire::attachment::BlobId;
use grove_wire::auth::VerifyError;
use grove_wire::policy::Role;
use grove_wire::push::BindError;
use grove_wire::{ApiError, ErrorCode, UserId};

/// Declares a refusal enum; under test it also lists its variants' names, so that the test
/// below can tell that every variant has a sample.
macro_rules! refusals {
    ($(#[$m:meta])* $vis:vis enum $name:ident {
        $($(#[$vm:meta])* $variant:ident $({ $($(#[$fm:meta])* $field:ident : $ty:ty),* $(,)? })?),* $(,)?
    }) => {
        $(#[$m])*
        $vis enum $name {
            $($(#[$vm])* $variant $({ $($(#[$fm])* $field: $ty),* })?),*
        }

        #[cfg(test)]
        impl $name {
            const NAMES: &'static [&'static str] = &[$(stringify!($variant)),*];
        }
    };
}

refusals! {
    /// The request is not one the server can read: the client's fault.
    #[derive(Debug)]
    pub(crate) enum RequestRefusal {
        /// The body is not the JSON the route takes.
        NotJson { source: serde_json::Error },
        /// A body sent with a `Content-Type` other than JSON.
        NotJsonContentType,
        /// The body is longer than the server takes.
        BodyTooLarge { limit: usize },
        /// The body did not arrive within the body timeout.
        BodyTooSlow,
        /// The body's HTTP framing is broken (a bad chunked encoding, a connection cut).
        BodyUnreadable { source: axum::Error },
        /// A path segment does not parse (the extractor's text).
        InvalidPath { text: String },
        /// The query does not parse (the extractor's text).
        InvalidQuery { text: String },
        /// A user id in the path is not 64 hex characters.
        InvalidUserId,
        /// A blob id in the path is not 32 lowercase hex characters.
        InvalidBlobId,
        /// No route has this path.
        NoRoute,
        /// The route does not take this method.
        WrongMethod,
        /// `/v1/push` asked for without a WebSocket upgrade (the extractor's text).
        NotWebSocket { text: String },
        /// The push socket's `bind` key is not valid.
        InvalidBind { source: BindError },
        /// A push socket frame is not a push request.
        NotPushRequest { source: serde_json::Error },
        /// A key publication with no items.
        NoKeyItems,
        /// A key publication with an empty item.
        EmptyKeyItem,
        /// A fault report's membership key is not 32 bytes.
        MembershipKeyLength,
        /// The create-room body of an MLS room without its group.
        MlsRoomWithoutGroup,
        /// The create-room body of a sender-keys room with an MLS group.
        SenderKeysRoomWithGroup,
        /// A room name that breaks the naming rules.
        InvalidRoomName,
        /// An invite link's `token_hash` that is not 32 bytes.
        LinkTokenHash,
        /// A link holder's token that is not 32 bytes.
        LinkToken,
        /// An invite link's `max_uses` of 0.
        LinkMaxUses,
        /// An invite link's `expires_at` past what a timestamp holds.
        LinkExpiresAt,
        /// A join request whose token or proof is not 32 bytes.
        JoinTokenProof,
        /// A join request whose home is not a server's base URL.
        JoinHome,
        /// Plain HTTP sent to the TLS port.
        NotTls,
    }
}

refusals! {
    /// The request's signature or signer is refused: the client's fault (or its clock's, or
    /// its key's, blocked by the operator).
    #[derive(Debug)]
    pub(crate) enum AuthRefusal {
        /// A signing header is missing.
        MissingHeader { name: &'static str },
        /// A signing header is given more than once.
        RepeatedHeader { name: &'static str },
        /// A signing header is not text.
        HeaderNotText { name: &'static str },
        /// `x-grove-key` is not a user id.
        KeyNotUserId,
        /// `x-grove-timestamp` is not canonical Unix milliseconds.
        TimestampNotMillis,
        /// `x-grove-nonce` breaks the nonce rules.
        InvalidNonce,
        /// `x-grove-content-sha256` is missing or not 64 lowercase hex characters.
        ContentSha256Header,
        /// The request's time is too far from the server's.
        StaleTimestamp { ts: i64, skew_secs: u64, now: i64 },
        /// `x-grove-key` is not an Ed25519 public key.
        InvalidKey,
        /// The request signature does not verify.
        SignatureRejected { source: VerifyError },
        /// The operator blocked the signing key.
        Blocked,
        /// The nonce was used before.
        NonceReused,
        /// A push `send` frame on a socket opened without a `bind` key.
        UnboundSend,
        /// A push `send` frame out of order.
        SendOutOfOrder { id: u64, due: u64 },
        /// A push `send` frame whose MAC does not verify.
        SendMacInvalid { id: u64 },
    }
}

refusals! {
    /// Too much or too often: a limit of the server (the client may retry later or send less).
    #[derive(Debug)]
    pub(crate) enum LimitRefusal {
        /// The user's request rate is spent.
        TooManyRequests { secs: u64 },
        /// A per-pair, per-target or per-address quota is spent.
        Throttled { what: Throttle, secs: u64 },
        /// An entry body over `max_entry_bytes`.
        EntryTooLarge { max: u64 },
        /// A commit or membership that would make the room bigger than the server allows.
        RoomTooBig { limit: u64 },
        /// A new room with more members than the server allows.
        NewRoomTooBig { limit: u64 },
        /// A key item over the server's item size.
        KeyItemTooLarge { max: u64, len: usize },
        /// The user keeps as many key items as the server allows.
        KeyLimit { max: u64 },
        /// A mailbox message over `max_entry_bytes`.
        MailTooLarge { max: u64 },
        /// The recipient's mailbox is full.
        MailboxFull,
        /// The recipient's mailbox holds the sender's share already.
        MailboxShareFull { per_sender: u64 },
        /// The user created as many rooms as the server allows.
        RoomLimit { max: u64 },
        /// A blob over the per-file limit.
        FileTooLarge { max_blob: u64, max_file: u64 },
        /// The uploader's blob quota would be exceeded.
        UserFileQuota { used: u64, quota: u64 },
        /// The room's blob quota would be exceeded.
        RoomFileQuota { used: u64, quota: u64 },
        /// A push socket follows as many rooms as allowed: one refused room's frame.
        Subscriptions { cap: usize },
        /// A push socket follows as many rooms as allowed: the frame for the rooms not named.
        MoreSubscriptions { more: usize, cap: usize },
        /// A push socket that followed nothing for the idle limit.
        PushIdle { secs: u64 },
        /// The room has as many join requests waiting as the server keeps.
        JoinQueueFull,
    }
}

/// Which quota of [`crate::quota`] is spent.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Throttle {
    /// The claimer claimed many keys of this user.
    ClaimsOfPair,
    /// This user's keys were claimed many times.
    ClaimsOfTarget,
    /// The sender sent many messages to this mailbox.
    Deposits,
    /// This address asked to join rooms many times.
    JoinsFromAddress,
    /// This room was asked to be joined many times.
    JoinsOfRoom,
}

refusals! {
    /// The room (its existence, membership, epoch, rules or policy) refuses it: the sender's
    /// fault, or its view of the room is behind.
    #[derive(Debug)]
    pub(crate) enum RoomRefusal {
        /// No room by that name.
        NoSuchRoom { name: String },
        /// The room was deleted while the request ran.
        RoomGone,
        /// The requester is not a member.
        NotMember { name: String },
        /// A read past the entry that removed the reader.
        Removed { name: String, seq: u64 },
        /// A handshake (or an entry) made in another epoch than the room's.
        WrongEpoch { current: u64, head: u64, yours: u64 },
        /// An application message older than the room's epoch window.
        EpochTooOld { epoch: u64, window: u64, current: u64 },
        /// A sender-keys membership update that is not the next version.
        MembershipVersion { current: u64, next: u64 },
        /// A resync entry whose body is not a ResyncOffer.
        ResyncNotJson { source: serde_json::Error },
        /// A resync offer for no earlier epoch, or without its sealed GroupInfo.
        ResyncOfferShape,
        /// An MLS application message that does not validate.
        NotApplication { source: HubError },
        /// The entry's epoch is not the one its message was made in.
        EpochMismatch { said: u64, made: u64 },
        /// An entry kind the room's mode does not take.
        WrongKind { mode: RoomMode, kind: EntryKind },
        /// A commit or proposal the hub refuses (for a wrong epoch: answered as `WrongEpoch`
        /// with `head`).
        Handshake { commit: bool, head: u64, source: HubError },
        /// A membership body that is not a signed membership.
        MembershipNotJson,
        /// A membership whose signature or shape is invalid.
        MembershipUnsigned,
        /// A membership signed for another room.
        MembershipOtherRoom,
        /// A membership naming a member that is not an Ed25519 key.
        MembershipBadMember { member: UserId },
        /// The room's policy does not allow the change.
        NotAllowed { source: PolicyError },
        /// The requester's role does not allow the action.
        RoleTooLow { action: &'static str, role: Role },
        /// A join request of a member.
        AlreadyMember,
        /// The room has no invite link, or not this one.
        LinkInvalid,
        /// The invite link expired.
        LinkExpired,
        /// The invite link was used up.
        LinkUsedUp,
        /// A link join (or its GroupInfo) asked of a sender-keys room.
        LinkJoinsOnlyMls,
        /// A link holder must ask to join: the join rule is `approval`.
        JoinByApproval,
        /// A link holder must ask to join: no member kept the room's GroupInfo for this link.
        NoLinkGroupInfo,
        /// A sealed GroupInfo larger than the server keeps.
        GroupInfoTooLarge { max: u64 },
        /// Room creation is not open to the requester.
        CreationClosed,
        /// A new MLS room's group does not parse or validate.
        InvalidGroup { source: HubError },
        /// A new MLS room's group without the creator.
        CreatorNotInGroup,
        /// A room by that name exists.
        RoomExists { name: String },
        /// A fault report in a sender-keys room.
        ReportsOnlyMls,
        /// A ratchet tree asked of a sender-keys room.
        TreeOnlyMls,
        /// A ratchet tree of an epoch the server no longer keeps.
        TreeNotKept { epoch: u64 },
        /// A signed membership asked of an MLS room.
        MembershipOnlySenderKeys,
        /// The reporter made too many false reports in this room.
        TooManyFalseReports { falses: u32 },
        /// A fault report its own evidence contradicts.
        FalseReport { count: u32, max: u32 },
        /// A fault report whose membership tag cannot be checked.
        ReportUncheckable { source: FaultError },
        /// A fault report of an entry that is not a commit.
        ReportNotCommit { seq: u64 },
        /// A fault report of the reporter's own commit.
        ReportOwnCommit,
        /// A fault report of a commit whose epoch's state is no longer kept.
        ReportTooOld { epoch: u64 },
        /// A fault report of a commit voided already.
        ReportVoided { seq: u64 },
        /// A fault report by who was not a member in the commit's epoch.
        ReportNotMemberThen,
        /// An admin void of another commit than the last.
        VoidNotLast,
        /// An admin void by a member that is not an admin.
        VoidNotAdmin,
    }
}

refusals! {
    /// A user's keys or mailbox refuse it: no such material, or the recipient cannot take it.
    #[derive(Debug)]
    pub(crate) enum UserRefusal {
        /// No key material of that kind for the user.
        NoKeyMaterial { owner: UserId, kind: KeyKind },
        /// The recipient is blocked by the operator.
        RecipientBlocked,
        /// The recipient published no keys here.
        UnknownRecipient { owner: UserId },
    }
}

refusals! {
    /// A blob upload or download refuses it: the client's fault (or the upload's state).
    #[derive(Debug)]
    pub(crate) enum FileRefusal {
        /// No such blob in the room (or it expired).
        NoSuchBlob { room: String, blob: BlobId },
        /// A blob shorter than grove's cipher makes.
        BlobTooSmall { min: u64 },
        /// A part sent by another member than the uploader.
        NotUploader,
        /// A part for another offset than the upload's.
        WrongOffset { received: u64, size: u64, offset: u64 },
        /// A part for a complete upload.
        UploadComplete,
        /// Another part landed first.
        PartRaced { received: u64 },
        /// The upload expired while the part was received.
        UploadExpired,
        /// A part whose SHA-256 is not the signed one.
        DigestMismatch,
        /// A part that did not arrive within the part deadline.
        PartLate,
        /// A part of another length than the offset implies.
        PartLength { expected: u64, got: u64 },
        /// A part whose body paused too long.
        PartStalled,
        /// A part whose body did not arrive within the body timeout.
        PartTooSlow,
        /// A part whose body was cut off.
        PartCutOff,
        /// A download of a blob still being uploaded.
        Incomplete { received: u64, size: u64 },
        /// A `Range` past the blob's end (answered with `Content-Range: bytes */size`).
        RangeUnsatisfiable { size: u64 },
    }
}

refusals! {
    /// The server cannot serve it now: our side, not the client's.
    #[derive(Debug)]
    pub(crate) enum ServerRefusal {
        /// A failure of ours, logged where it happened.
        Internal,
        /// The storage is unavailable.
        StorageUnavailable,
        /// The storage is full (the `track` middleware counts these answers).
        StorageFull,
        /// The storage is down to the reserve it keeps for messages: no new `what`.
        StorageLow { what: &'static str },
        /// The room changed while a fault report was judged.
        ReportRaced,
    }
}

/// Every refusal, by area.
#[derive(Debug)]
enum Refusal {
    Request(RequestRefusal),
    Auth(AuthRefusal),
    Limit(LimitRefusal),
    Room(RoomRefusal),
    User(UserRefusal),
    File(FileRefusal),
    Server(ServerRefusal),
}

/// An error answer: a refusal, turned into HTTP when answered.
#[derive(Debug)]
pub struct AppError(Box<Refusal>);

macro_rules! from_area {
    ($($area:ident => $variant:ident),*) => {
        $(impl From<$area> for AppError {
            fn from(r: $area) -> Self {
                AppError(Box::new(Refusal::$variant(r)))
            }
        })*
    };
}

from_area!(RequestRefusal => Request, AuthRefusal => Auth, LimitRefusal => Limit, UserRefusal => User,
    FileRefusal => File, ServerRefusal => Server);

impl From<RoomRefusal> for AppError {
    fn from(r: RoomRefusal) -> Self {
        match r {
            // A bug on our side, found while judging a handshake.
            RoomRefusal::Handshake { source: HubError::Internal(d), .. } => AppError::internal("MLS hub failure", d),
            r => AppError(Box::new(Refusal::Room(r))),
        }
    }
}

impl AppError {
    /// A failure of ours: logged with its detail, answered without it.
    pub fn internal(context: &str, detail: impl std::fmt::Display) -> Self {
        tracing::error!(%detail, "{context}");
        ServerRefusal::Internal.into()
    }

    /// The error's code.
    pub fn code(&self) -> ErrorCode {
        self.answer().code
    }

    /// The error's JSON body.
    pub(crate) fn answer(&self) -> ApiError {
        match &*self.0 {
            Refusal::Request(r) => request(r),
            Refusal::Auth(r) => auth(r),
            Refusal::Limit(r) => limit(r),
            Refusal::Room(r) => room(r),
            Refusal::User(r) => user(r),
            Refusal::File(r) => file(r),
            Refusal::Server(r) => server(r),
        }
    }
}

/// The answer's message (for logs and the operator's commands).
impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.answer().message)
    }
}

fn api(code: ErrorCode, message: impl Into<String>) -> ApiError {
    ApiError::new(code, message)
}

/// An error with `retry_after` (also sent as `Retry-After`).
fn retry(code: ErrorCode, message: impl Into<String>, secs: u64) -> ApiError {
    ApiError { retry_after: Some(secs), ..ApiError::new(code, message) }
}

fn request(r: &RequestRefusal) -> ApiError {
    use ErrorCode::*;
    use RequestRefusal::*;
    match r {
        NotJson { source } => api(MalformedBody, format!("the body is not the expected JSON: {source}")),
        NotJsonContentType => api(UnsupportedMediaType, "the body must be sent with Content-Type: application/json"),
        BodyTooLarge { limit } => api(PayloadTooLarge, format!("the body is larger than {limit} bytes")),
        BodyTooSlow => api(RequestTimeout, "the request body did not arrive in time: send it faster or in parts"),
        BodyUnreadable { source } => api(MalformedBody, format!("the request body could not be read: {source}")),
        InvalidPath { text } => api(BadRequest, format!("invalid path: {text}")),
        InvalidQuery { text } => api(BadRequest, format!("invalid query: {text}")),
        InvalidUserId => api(BadRequest, "a user id is 64 hex characters"),
        InvalidBlobId => api(BadRequest, "a blob id is 32 lowercase hex characters"),
        NoRoute => api(NotFound, "no such route: see /v1/openapi.json"),
        WrongMethod => api(MethodNotAllowed, "this route does not take that method: see /v1/openapi.json"),
        NotWebSocket { text } => api(BadRequest, format!("/v1/push is a WebSocket: {text}")),
        InvalidBind { source } => api(BadRequest, format!("bind: {source}")),
        NotPushRequest { source } => api(MalformedBody, format!("not a push request: {source}")),
        NoKeyItems => api(BadRequest, "publish at least one item"),
        EmptyKeyItem => api(BadRequest, "a key item cannot be empty"),
        MembershipKeyLength => api(BadRequest, "a membership key is 32 bytes"),
        MlsRoomWithoutGroup => api(MalformedBody, "an mls room needs `mls`: the group info and ratchet tree"),
        SenderKeysRoomWithGroup => api(MalformedBody, "a sender-keys room takes no `mls` field"),
        InvalidRoomName => {
            api(InvalidName, "a room name is 1 to 64 characters of a-z, 0-9, - and _, starting with a letter or digit")
        }
        LinkTokenHash => api(BadRequest, "token_hash is the 32-byte SHA-256 of the link's token"),
        LinkToken => api(BadRequest, "token is the link's 32-byte token"),
        LinkMaxUses => api(BadRequest, "max_uses must be at least 1 (leave it out for no limit)"),
        LinkExpiresAt => api(BadRequest, "expires_at is Unix milliseconds, at most 2^63 - 1"),
        JoinTokenProof => api(BadRequest, "token and proof are 32 bytes each"),
        JoinHome => api(BadRequest, "home must be your home server's base URL, https://HOST[:PORT]"),
        NotTls => api(BadRequest, "this port speaks HTTPS (TLS) only: use an https:// URL for this server"),
    }
}

fn auth(r: &AuthRefusal) -> ApiError {
    use AuthRefusal::*;
    use ErrorCode::*;
    match r {
        MissingHeader { name } => api(Unauthenticated, format!("missing header {name}: sign the request")),
        RepeatedHeader { name } => api(Unauthenticated, format!("header {name} is given twice: send it once")),
        HeaderNotText { name } => api(Unauthenticated, format!("header {name} is not text")),
        KeyNotUserId => api(Unauthenticated, "x-grove-key is not a user id (64 hex characters)"),
        TimestampNotMillis => api(Unauthenticated, "x-grove-timestamp is not Unix milliseconds (decimal digits only)"),
        InvalidNonce => api(Unauthenticated, "x-grove-nonce must be 16 to 64 characters of A-Z a-z 0-9 - _"),
        ContentSha256Header => api(
            Unauthenticated,
            "x-grove-content-sha256 must be the body's SHA-256 as 64 lowercase hex characters, signed",
        ),
        AuthRefusal::StaleTimestamp { ts, skew_secs, now } => api(
            ErrorCode::StaleTimestamp,
            format!("request time {ts} is more than {skew_secs}s from server time {now}: check your clock"),
        ),
        InvalidKey => api(BadSignature, "x-grove-key is not a valid Ed25519 public key"),
        SignatureRejected { source } => api(BadSignature, format!("request signature rejected: {source}")),
        AuthRefusal::Blocked => api(ErrorCode::Blocked, "this key is blocked on this server by its operator"),
        AuthRefusal::NonceReused => {
            api(ErrorCode::NonceReused, "this nonce was already used: sign every request with a fresh one")
        }
        // Not a refusal of an entry: the frames are not this connection's.
        UnboundSend => {
            api(BadSignature, "this socket was opened without a `bind` key: it cannot send; the socket is closed")
        }
        SendOutOfOrder { id, due } => {
            api(BadSignature, format!("send frame {id} where {due} was due; the socket is closed"))
        }
        SendMacInvalid { id } => {
            api(BadSignature, format!("send frame {id}: its MAC does not verify; the socket is closed"))
        }
    }
}

fn limit(r: &LimitRefusal) -> ApiError {
    use ErrorCode::*;
    use LimitRefusal::*;
    match r {
        TooManyRequests { secs } => retry(RateLimited, format!("too many requests: retry in {secs}s"), *secs),
        Throttled { what, secs } => {
            let why = match what {
                Throttle::ClaimsOfPair => "you claimed many keys of this user lately",
                Throttle::ClaimsOfTarget => "this user's keys were claimed many times lately",
                Throttle::Deposits => "you sent many messages to this mailbox lately",
                Throttle::JoinsFromAddress => "this address asked to join rooms many times lately",
                Throttle::JoinsOfRoom => "this room was asked to be joined many times lately",
            };
            retry(RateLimited, format!("{why}: retry in {secs}s"), *secs)
        }
        EntryTooLarge { max } => api(PayloadTooLarge, format!("an entry body is at most {max} bytes")),
        RoomTooBig { limit } => api(MemberLimit, format!("a room on this server has at most {limit} members")),
        NewRoomTooBig { limit } => api(MemberLimit, format!("a room has at most {limit} members")),
        KeyItemTooLarge { max, len } => api(PayloadTooLarge, format!("a key item is at most {max} bytes, not {len}")),
        LimitRefusal::KeyLimit { max } => {
            api(ErrorCode::KeyLimit, format!("a user keeps at most {max} key items on this server"))
        }
        MailTooLarge { max } => api(PayloadTooLarge, format!("a mailbox message is at most {max} bytes")),
        LimitRefusal::MailboxFull => retry(ErrorCode::MailboxFull, "the recipient's mailbox is full; try again later", 60),
        MailboxShareFull { per_sender } => retry(
            ErrorCode::MailboxFull,
            format!(
                "the recipient's mailbox holds {per_sender} unread messages of yours already; try again once they have read them",
            ),
            60,
        ),
        LimitRefusal::RoomLimit { max } => {
            api(ErrorCode::RoomLimit, format!("you created the {max} rooms this server allows per user"))
        }
        LimitRefusal::FileTooLarge { max_blob, max_file } => api(
            ErrorCode::FileTooLarge,
            format!("a blob is at most {max_blob} bytes (a file of {max_file} bytes, encrypted)"),
        ),
        UserFileQuota { used, quota } => {
            api(FileQuota, format!("you hold {used} of the {quota} blob bytes a user may hold on this server"))
        }
        RoomFileQuota { used, quota } => {
            api(FileQuota, format!("this room holds {used} of the {quota} blob bytes a room may hold"))
        }
        Subscriptions { cap } => api(SubscriptionLimit, subscriptions(*cap)),
        MoreSubscriptions { more, cap } => {
            api(SubscriptionLimit, format!("{more} more rooms were not subscribed to: {}", subscriptions(*cap)))
        }
        PushIdle { secs } => api(RequestTimeout, format!("this push socket followed nothing for {secs} s")),
        LimitRefusal::JoinQueueFull => api(
            ErrorCode::JoinQueueFull,
            "this room has as many join requests waiting as the server keeps: try again once its admins decided some",
        ),
    }
}

fn subscriptions(cap: usize) -> String {
    format!(
        "this socket follows as many rooms as the server allows ({cap}), or you subscribe too fast: \
         unsubscribe by closing sockets you do not need, or retry later"
    )
}

fn room(r: &RoomRefusal) -> ApiError {
    use ErrorCode::*;
    use RoomRefusal::*;
    match r {
        NoSuchRoom { name } => api(RoomNotFound, format!("no room named {name:?} on this server")),
        RoomGone => api(RoomNotFound, "the room no longer exists"),
        RoomRefusal::NotMember { name } => api(ErrorCode::NotMember, format!("you are not a member of room {name:?}")),
        Removed { name, seq } => ApiError {
            head: Some(*seq),
            ..api(
                ErrorCode::NotMember,
                format!("you were removed from room {name:?} by entry {seq}; nothing after it is yours to read"),
            )
        },
        RoomRefusal::WrongEpoch { current, head, yours } => wrong_epoch(*current, *head, *yours),
        RoomRefusal::EpochTooOld { epoch, window, current } => ApiError {
            current_epoch: Some(*current),
            ..api(
                ErrorCode::EpochTooOld,
                format!(
                    "epoch {epoch} is more than {window} epochs behind the room's epoch {current}: sync and re-encrypt"
                ),
            )
        },
        RoomRefusal::MembershipVersion { current, next } => ApiError {
            current_epoch: Some(*current),
            ..api(
                ErrorCode::MembershipVersion,
                format!("the room is at membership version {current}; the next update must be version {next}"),
            )
        },
        ResyncNotJson { source } => {
            api(InvalidMessage, format!("a resync entry's body is the JSON of a ResyncOffer: {source}"))
        }
        ResyncOfferShape => api(
            InvalidMessage,
            "a resync offer is for members stuck at an epoch before the room's, and carries a sealed GroupInfo",
        ),
        NotApplication { source } => {
            api(InvalidMessage, format!("not an MLS application message of this room: {source}"))
        }
        EpochMismatch { said, made } => {
            api(InvalidMessage, format!("the entry says epoch {said} but the message was made in epoch {made}"))
        }
        RoomRefusal::WrongKind { mode, kind } => {
            api(ErrorCode::WrongKind, format!("a {} room takes no {} entries", mode.as_str(), kind.as_str()))
        }
        Handshake { commit, head, source } => handshake(*commit, *head, source),
        MembershipNotJson => api(BadMembership, "the body is not a signed membership (JSON)"),
        MembershipUnsigned => api(BadMembership, "the membership signature or shape is invalid"),
        MembershipOtherRoom => api(BadMembership, "the membership is signed for another room"),
        MembershipBadMember { member } => {
            api(BadMembership, format!("member {member} is not a valid Ed25519 public key"))
        }
        RoomRefusal::NotAllowed { source } => not_allowed(source),
        RoleTooLow { action, role } => {
            api(ErrorCode::NotAllowed, format!("the room's policy does not let you {action} (you are {role})"))
        }
        AlreadyMember => api(ErrorCode::NotAllowed, "you are a member of this room already"),
        RoomRefusal::LinkInvalid => {
            api(ErrorCode::LinkInvalid, "this is not the room's invite link (it may have been revoked or reset)")
        }
        RoomRefusal::LinkExpired => api(ErrorCode::LinkExpired, "this invite link expired: ask for a new one"),
        RoomRefusal::LinkUsedUp => {
            api(ErrorCode::LinkUsedUp, "this invite link was used as often as it may be: ask for a new one")
        }
        LinkJoinsOnlyMls => api(
            ErrorCode::WrongKind,
            "a sender-keys room takes link holders by a join request (POST /v1/rooms/{room}/joins)",
        ),
        JoinByApproval => api(
            NotFound,
            "the room's join policy is `approval`: ask to join (POST /v1/rooms/{room}/joins) and wait for an admin",
        ),
        NoLinkGroupInfo => api(
            NotFound,
            "no member has left the room's state for this link yet: ask to join (POST /v1/rooms/{room}/joins)",
        ),
        GroupInfoTooLarge { max } => api(PayloadTooLarge, format!("a sealed GroupInfo is at most {max} bytes")),
        CreationClosed => api(Forbidden, "this server does not let you create rooms (see room_creation in /v1/info)"),
        InvalidGroup { source } => {
            api(InvalidMessage, format!("the group info and ratchet tree are not a valid MLS group: {source}"))
        }
        CreatorNotInGroup => api(Forbidden, "the group must contain the creator's own leaf"),
        RoomRefusal::RoomExists { name } => api(ErrorCode::RoomExists, format!("a room named {name:?} already exists")),
        ReportsOnlyMls => api(ErrorCode::WrongKind, "only MLS rooms take fault reports"),
        TreeOnlyMls => api(ErrorCode::WrongKind, "only mls rooms have a ratchet tree"),
        TreeNotKept { epoch } => {
            api(NotFound, format!("the ratchet tree of epoch {epoch} is not kept (any more): ask for a new invitation"))
        }
        MembershipOnlySenderKeys => api(ErrorCode::WrongKind, "only sender-keys rooms have a signed membership"),
        TooManyFalseReports { falses } => {
            api(Forbidden, format!("you made {falses} false reports in this room; it takes no more reports from you"))
        }
        RoomRefusal::FalseReport { count, max } => api(
            ErrorCode::FalseReport,
            format!(
                "the commit's membership tag verifies under the key you revealed: the report is false \
                 (counted against you: {count} of {max})"
            ),
        ),
        ReportUncheckable { source } => {
            api(NotReportable, format!("the entry's membership tag cannot be checked: {source}"))
        }
        ReportNotCommit { seq } => api(NotReportable, format!("entry {seq} is not a commit of this room")),
        ReportOwnCommit => api(NotReportable, "a member does not report its own commit"),
        ReportTooOld { epoch } => {
            api(NotReportable, format!("the server no longer keeps the room's state of epoch {epoch}: too old to void"))
        }
        ReportVoided { seq } => api(NotReportable, format!("the commit at {seq} was voided already")),
        ReportNotMemberThen => api(NotReportable, "you were not a member in the commit's epoch"),
        VoidNotLast => api(NotReportable, "an admin may void only the room's last commit"),
        VoidNotAdmin => api(Forbidden, "only an admin of the room may void a commit on its word"),
    }
}

/// `wrong_epoch` with the room's current epoch and head.
fn wrong_epoch(current_epoch: u64, head: u64, yours: u64) -> ApiError {
    ApiError {
        current_epoch: Some(current_epoch),
        head: Some(head),
        ..api(
            ErrorCode::WrongEpoch,
            format!("the room is at epoch {current_epoch} (head {head}), not {yours}: read the log, apply the entries you miss and retry"),
        )
    }
}

fn not_allowed(e: &PolicyError) -> ApiError {
    api(ErrorCode::NotAllowed, format!("the room's policy does not allow this: {e}"))
}

/// A refused commit or proposal.
fn handshake(is_commit: bool, head: u64, e: &HubError) -> ApiError {
    let invalid = if is_commit { ErrorCode::InvalidCommit } else { ErrorCode::InvalidProposal };
    let what = if is_commit { "commit" } else { "proposal" };
    match e {
        HubError::WrongEpoch { message_epoch, current_epoch } => wrong_epoch(*current_epoch, head, *message_epoch),
        HubError::SenderMismatch => api(
            ErrorCode::SenderMismatch,
            format!("the {what} is signed by another member's leaf than the request's signer"),
        ),
        HubError::NotAMember => api(ErrorCode::NotMember, format!("the {what}'s sender is not a member leaf")),
        // Logged when the refusal was made (`From<RoomRefusal>`).
        HubError::Internal(_) => server(&ServerRefusal::Internal),
        HubError::NotAllowed(e) => not_allowed(e),
        HubError::NotPublicMessage => api(invalid, format!("a {what} must be sent as an MLS PublicMessage")),
        other => api(invalid, format!("the {what} failed validation: {other}")),
    }
}

fn user(r: &UserRefusal) -> ApiError {
    match r {
        UserRefusal::NoKeyMaterial { owner, kind } => api(
            ErrorCode::NoKeyMaterial,
            format!("user {} has no {} available on this server", owner.short(), kind.as_str()),
        ),
        UserRefusal::RecipientBlocked => {
            api(ErrorCode::Blocked, "this user is blocked on this server: their mailbox takes nothing")
        }
        UserRefusal::UnknownRecipient { owner } => api(
            ErrorCode::NotFound,
            format!("user {} is not known on this server (they have published no keys here)", owner.short()),
        ),
    }
}

fn file(r: &FileRefusal) -> ApiError {
    use ErrorCode::*;
    use FileRefusal::*;
    match r {
        NoSuchBlob { room, blob } => api(NotFound, format!("room {room:?} has no blob {blob}")),
        BlobTooSmall { min } => api(BadRequest, format!("a blob is at least {min} bytes")),
        NotUploader => api(Forbidden, "only the uploader sends a blob's parts"),
        WrongOffset { received, size, offset } => api(
            UploadOffset,
            format!("the upload is at offset {received} (of {size}), not {offset}: resume from there"),
        ),
        UploadComplete => api(UploadOffset, "the upload is complete"),
        PartRaced { received } => {
            api(UploadOffset, format!("another part landed first: the upload is at offset {received}"))
        }
        UploadExpired => api(NotFound, "the upload expired meanwhile"),
        DigestMismatch => api(
            ContentDigestMismatch,
            "the part's SHA-256 is not the x-grove-content-sha256 the request signed; nothing was stored",
        ),
        PartLate => api(BadRequest, "the part did not arrive in time; resend it"),
        PartLength { expected, got } => api(
            BadRequest,
            format!("this part is {expected} bytes long (part_bytes, or the rest of the blob), not {got}"),
        ),
        PartStalled => api(BadRequest, "the part's body stalled; resend the part"),
        PartTooSlow => api(RequestTimeout, "the part did not arrive in time; resend it faster or smaller"),
        PartCutOff => api(BadRequest, "the part's body was cut off; resend the part"),
        Incomplete { received, size } => {
            api(UploadIncomplete, format!("the blob is still being uploaded ({received} of {size} bytes)"))
        }
        RangeUnsatisfiable { size } => {
            api(RangeNotSatisfiable, format!("the range starts at or past the end of the {size}-byte blob"))
        }
    }
}

/// The message of a write refused because the store is full.
const FULL_MESSAGE: &str =
    "the server's storage is full; nothing was written: retry later, once its operator has freed space";

fn server(r: &ServerRefusal) -> ApiError {
    match r {
        ServerRefusal::Internal => {
            api(ErrorCode::Internal, "internal server error; the operator's log has the details")
        }
        ServerRefusal::StorageUnavailable => api(ErrorCode::Unavailable, "storage is unavailable; retry shortly"),
        ServerRefusal::StorageFull => api(ErrorCode::StorageFull, FULL_MESSAGE),
        ServerRefusal::StorageLow { what } => api(
            ErrorCode::StorageFull,
            format!(
                "the server is low on storage: it keeps what is left for messages and takes no new {what} \
                 for now; retry later"
            ),
        ),
        ServerRefusal::ReportRaced => {
            api(ErrorCode::Unavailable, "the room changed while the report was judged; retry")
        }
    }
}

impl From<grove_store::StoreError> for AppError {
    fn from(e: grove_store::StoreError) -> Self {
        match e {
            grove_store::StoreError::Unavailable { .. } => {
                tracing::warn!(detail = %with_sources(&e), "storage unavailable");
                ServerRefusal::StorageUnavailable.into()
            }
            // Logged once per episode by `storage`, not per request.
            grove_store::StoreError::Full { .. } => crate::storage::store_full(),
            other => AppError::internal("storage failure", with_sources(&other)),
        }
    }
}

/// An error and every error under it, for the operator's log: "a: b: c".
pub(crate) fn with_sources(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        let text = s.to_string();
        // Errors that print their source already (mls-rs', ours with the cause in the text).
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = s.source();
    }
    out
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let body = self.answer();
        let status = StatusCode::from_u16(body.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry = body.retry_after;
        let mut resp = (status, Json(body)).into_response();
        match &*self.0 {
            Refusal::Server(ServerRefusal::StorageFull) => {
                resp.extensions_mut().insert(crate::storage::StoreFullAnswer);
            }
            Refusal::File(FileRefusal::RangeUnsatisfiable { size }) => {
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    resp.headers_mut().insert(header::CONTENT_RANGE, v);
                }
            }
            _ => {}
        }
        if let Some(secs) = retry {
            resp.headers_mut().insert("retry-after", HeaderValue::from(secs));
        }
        resp
    }
}

/// Result alias for handlers.
pub(crate) type AppResult<T> = Result<T, AppError>;

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    fn json_error() -> serde_json::Error {
        serde_json::from_str::<u8>("not json").unwrap_err()
    }

    /// One of every refusal, by area (`every_variant_has_a_sample` keeps this list whole).
    fn samples() -> Vec<(&'static str, Vec<AppError>)> {
        use AuthRefusal as A;
        use FileRefusal as F;
        use LimitRefusal as L;
        use RequestRefusal as Q;
        use RoomRefusal as R;
        use ServerRefusal as S;
        use UserRefusal as U;
        fn all<T: Into<AppError>>(v: Vec<T>) -> Vec<AppError> {
            v.into_iter().map(Into::into).collect()
        }
        let carol = UserId([7; 32]);
        let hub = || HubError::WrongGroup;
        vec![
            (
                "RequestRefusal",
                all(vec![
                    Q::NotJson { source: json_error() },
                    Q::NotJsonContentType,
                    Q::BodyTooLarge { limit: 10 },
                    Q::BodyTooSlow,
                    Q::BodyUnreadable { source: axum::Error::new(std::io::Error::other("cut off")) },
                    Q::InvalidPath { text: "x".into() },
                    Q::InvalidQuery { text: "x".into() },
                    Q::InvalidUserId,
                    Q::InvalidBlobId,
                    Q::NoRoute,
                    Q::WrongMethod,
                    Q::NotWebSocket { text: "x".into() },
                    Q::InvalidBind { source: BindError::MalformedKey },
                    Q::NotPushRequest { source: json_error() },
                    Q::NoKeyItems,
                    Q::EmptyKeyItem,
                    Q::MembershipKeyLength,
                    Q::MlsRoomWithoutGroup,
                    Q::SenderKeysRoomWithGroup,
                    Q::InvalidRoomName,
                    Q::LinkTokenHash,
                    Q::LinkToken,
                    Q::LinkMaxUses,
                    Q::LinkExpiresAt,
                    Q::JoinTokenProof,
                    Q::JoinHome,
                    Q::NotTls,
                ]),
            ),
            (
                "AuthRefusal",
                all(vec![
                    A::MissingHeader { name: "x-grove-key" },
                    A::RepeatedHeader { name: "x-grove-key" },
                    A::HeaderNotText { name: "x-grove-key" },
                    A::KeyNotUserId,
                    A::TimestampNotMillis,
                    A::InvalidNonce,
                    A::ContentSha256Header,
                    A::StaleTimestamp { ts: 1, skew_secs: 300, now: 900_000 },
                    A::InvalidKey,
                    A::SignatureRejected { source: VerifyError::Mismatch },
                    A::Blocked,
                    A::NonceReused,
                    A::UnboundSend,
                    A::SendOutOfOrder { id: 3, due: 2 },
                    A::SendMacInvalid { id: 2 },
                ]),
            ),
            (
                "LimitRefusal",
                all(vec![
                    L::TooManyRequests { secs: 4 },
                    L::Throttled { what: Throttle::Deposits, secs: 4 },
                    L::EntryTooLarge { max: 10 },
                    L::RoomTooBig { limit: 10 },
                    L::NewRoomTooBig { limit: 10 },
                    L::KeyItemTooLarge { max: 10, len: 11 },
                    L::KeyLimit { max: 10 },
                    L::MailTooLarge { max: 10 },
                    L::MailboxFull,
                    L::MailboxShareFull { per_sender: 10 },
                    L::RoomLimit { max: 10 },
                    L::FileTooLarge { max_blob: 20, max_file: 10 },
                    L::UserFileQuota { used: 5, quota: 10 },
                    L::RoomFileQuota { used: 5, quota: 10 },
                    L::Subscriptions { cap: 10 },
                    L::MoreSubscriptions { more: 2, cap: 10 },
                    L::PushIdle { secs: 60 },
                    L::JoinQueueFull,
                ]),
            ),
            (
                "RoomRefusal",
                all(vec![
                    R::NoSuchRoom { name: "garden".into() },
                    R::RoomGone,
                    R::NotMember { name: "garden".into() },
                    R::Removed { name: "garden".into(), seq: 9 },
                    R::WrongEpoch { current: 3, head: 9, yours: 2 },
                    R::EpochTooOld { epoch: 1, window: 1, current: 3 },
                    R::MembershipVersion { current: 3, next: 4 },
                    R::ResyncNotJson { source: json_error() },
                    R::ResyncOfferShape,
                    R::NotApplication { source: hub() },
                    R::EpochMismatch { said: 3, made: 2 },
                    R::WrongKind { mode: RoomMode::SenderKeys, kind: EntryKind::Commit },
                    R::Handshake { commit: true, head: 9, source: hub() },
                    R::MembershipNotJson,
                    R::MembershipUnsigned,
                    R::MembershipOtherRoom,
                    R::MembershipBadMember { member: carol },
                    R::NotAllowed { source: PolicyError::Invalid("no") },
                    R::RoleTooLow { action: "invite", role: Role::Member },
                    R::AlreadyMember,
                    R::LinkInvalid,
                    R::LinkExpired,
                    R::LinkUsedUp,
                    R::LinkJoinsOnlyMls,
                    R::JoinByApproval,
                    R::NoLinkGroupInfo,
                    R::GroupInfoTooLarge { max: 10 },
                    R::CreationClosed,
                    R::InvalidGroup { source: hub() },
                    R::CreatorNotInGroup,
                    R::RoomExists { name: "garden".into() },
                    R::ReportsOnlyMls,
                    R::TreeOnlyMls,
                    R::TreeNotKept { epoch: 1 },
                    R::MembershipOnlySenderKeys,
                    R::TooManyFalseReports { falses: 3 },
                    R::FalseReport { count: 1, max: 3 },
                    R::ReportUncheckable { source: FaultError::KeyLength(3) },
                    R::ReportNotCommit { seq: 4 },
                    R::ReportOwnCommit,
                    R::ReportTooOld { epoch: 1 },
                    R::ReportVoided { seq: 4 },
                    R::ReportNotMemberThen,
                    R::VoidNotLast,
                    R::VoidNotAdmin,
                ]),
            ),
            (
                "UserRefusal",
                all(vec![
                    U::NoKeyMaterial { owner: carol, kind: KeyKind::MlsKeyPackage },
                    U::RecipientBlocked,
                    U::UnknownRecipient { owner: carol },
                ]),
            ),
            (
                "FileRefusal",
                all(vec![
                    F::NoSuchBlob { room: "garden".into(), blob: BlobId([1; 16]) },
                    F::BlobTooSmall { min: 10 },
                    F::NotUploader,
                    F::WrongOffset { received: 0, size: 10, offset: 5 },
                    F::UploadComplete,
                    F::PartRaced { received: 5 },
                    F::UploadExpired,
                    F::DigestMismatch,
                    F::PartLate,
                    F::PartLength { expected: 5, got: 4 },
                    F::PartStalled,
                    F::PartTooSlow,
                    F::PartCutOff,
                    F::Incomplete { received: 5, size: 10 },
                    F::RangeUnsatisfiable { size: 10 },
                ]),
            ),
            (
                "ServerRefusal",
                all(vec![
                    S::Internal,
                    S::StorageUnavailable,
                    S::StorageFull,
                    S::StorageLow { what: "rooms" },
                    S::ReportRaced,
                ]),
            ),
        ]
    }

    /// The variant's name, from its `Debug` form (`Area(Variant { .. })`).
    fn variant(e: &AppError) -> String {
        let text = format!("{:?}", e.0);
        let inner = text.split_once('(').map(|(_, rest)| rest).unwrap_or(&text);
        inner.split([' ', '(', ')']).next().unwrap_or_default().to_string()
    }

    #[test]
    fn every_variant_has_a_sample() {
        let names: BTreeMap<&str, &[&str]> = BTreeMap::from([
            ("RequestRefusal", RequestRefusal::NAMES),
            ("AuthRefusal", AuthRefusal::NAMES),
            ("LimitRefusal", LimitRefusal::NAMES),
            ("RoomRefusal", RoomRefusal::NAMES),
            ("UserRefusal", UserRefusal::NAMES),
            ("FileRefusal", FileRefusal::NAMES),
            ("ServerRefusal", ServerRefusal::NAMES),
        ]);
        let samples = samples();
        assert_eq!(samples.len(), names.len(), "an area has no samples");
        for (area, errors) in samples {
            let sampled: BTreeSet<String> = errors.iter().map(variant).collect();
            let declared: BTreeSet<String> = names[area].iter().map(|n| n.to_string()).collect();
            assert_eq!(sampled, declared, "{area}: the samples are not one of each variant");
        }
    }

    /// The ApiError schema's `code`: the codes it lists, and the status its description gives
    /// each ("400: `malformed_body` (...), `bad_request` (...). 401: ...").
    fn documented_codes() -> (BTreeSet<String>, BTreeMap<String, u16>) {
        let doc: serde_json::Value = serde_json::from_str(crate::OPENAPI).unwrap();
        let code = &doc["components"]["schemas"]["ApiError"]["properties"]["code"];
        let listed: BTreeSet<String> =
            code["enum"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect();
        let text = code["description"].as_str().unwrap();
        let mut statuses = BTreeMap::new();
        let mut status = None;
        let mut rest = text;
        while let Some(c) = rest.chars().next() {
            if c == '`' {
                let end = rest[1..].find('`').unwrap() + 1;
                let name = &rest[1..end];
                if listed.contains(name) {
                    let s = status.unwrap_or_else(|| panic!("`{name}` is named before any status"));
                    assert!(statuses.insert(name.to_string(), s).is_none(), "`{name}` is documented twice");
                }
                rest = &rest[end + 1..];
            } else if rest.len() > 4 && rest[..3].bytes().all(|b| b.is_ascii_digit()) && &rest[3..4] == ":" {
                status = Some(rest[..3].parse().unwrap());
                rest = &rest[4..];
            } else {
                rest = &rest[c.len_utf8()..];
            }
        }
        (listed, statuses)
    }

    #[test]
    fn every_refusal_is_answered_with_a_documented_code_and_its_documented_status() {
        let (listed, statuses) = documented_codes();
        for (area, errors) in samples() {
            for e in errors {
                let body = e.answer();
                let code = body.code.as_str();
                let what = format!("{area}::{} ({code})", variant(&e));
                assert!(listed.contains(code), "{what}: the OpenAPI document does not list the code");
                assert!(!body.message.is_empty(), "{what}: no message");
                let resp = e.into_response();
                assert_eq!(Some(&resp.status().as_u16()), statuses.get(code), "{what}: not the documented status");
                let retry = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
                assert_eq!(retry, body.retry_after.map(|s| s.to_string()), "{what}: Retry-After is not the body's");
            }
        }
    }

    #[test]
    fn a_refused_range_says_the_blob_size_and_a_full_store_is_marked_for_the_tracker() {
        let range = AppError::from(FileRefusal::RangeUnsatisfiable { size: 4096 }).into_response();
        assert_eq!(range.status(), StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(range.headers()[header::CONTENT_RANGE], "bytes */4096");
        let full = AppError::from(ServerRefusal::StorageFull).into_response();
        assert!(full.extensions().get::<crate::storage::StoreFullAnswer>().is_some());
        let low = AppError::from(ServerRefusal::StorageLow { what: "rooms" }).into_response();
        assert_eq!(low.status(), StatusCode::INSUFFICIENT_STORAGE);
        assert!(
            low.extensions().get::<crate::storage::StoreFullAnswer>().is_none(),
            "a reserve refusal is not a full store"
        );
    }

    #[test]
    fn a_hub_failure_while_judging_a_commit_is_an_internal_error_and_a_stale_commit_says_the_head() {
        let stale = HubError::WrongEpoch { message_epoch: 2, current_epoch: 3 };
        let body = AppError::from(RoomRefusal::Handshake { commit: true, head: 9, source: stale }).answer();
        assert_eq!((body.code, body.current_epoch, body.head), (ErrorCode::WrongEpoch, Some(3), Some(9)));
        let proposal = AppError::from(RoomRefusal::Handshake { commit: false, head: 9, source: HubError::WrongGroup });
        assert_eq!(proposal.code(), ErrorCode::InvalidProposal);
    }
}

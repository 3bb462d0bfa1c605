//! What an application message says: a versioned, typed content, end-to-end encrypted.
//!
//! Every application message's plaintext is one JSON object with a format version `v` and a
//! `type`: `{"v":1,"type":"text","text":"hello"}`. The server never sees it: it travels only
//! inside MLS or Sender Keys ciphertext.
//!
//! Compatibility rules:
//! - A newer client may add kinds and fields. An older client keeps a message of a kind it does
//!   not know (or a known kind it cannot parse) as [`Content::Unsupported`], never drops it; a
//!   client keeps the plaintext bytes, so an upgraded client renders it later.
//! - Unknown fields of a known kind are ignored, so adding an optional field needs no new `v`.
//! - `v` changes only when a known kind changes meaning; a message with a `v` above
//!   [`VERSION`] is [`Content::Unsupported`].
//! - A plaintext that is not such an object (grove before this format sent bare UTF-8 text) is
//!   read as [`Content::Text`].
//!
//! Entries are named by their sequence number in the room's log (`to`, `of`), which every
//! member sees alike.

use serde::{Deserialize, Serialize};

use crate::attachment::AttachmentRef;
use crate::UserId;

/// The format version this crate writes and fully understands.
pub const VERSION: u32 = 1;

/// The longest display name, in characters.
pub const MAX_NAME_CHARS: usize = 64;

/// One application message's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Content {
    /// A text message.
    Text {
        /// The text.
        text: String,
    },
    /// A text message answering an earlier entry.
    Reply {
        /// The sequence number of the entry answered.
        to: u64,
        /// The text.
        text: String,
    },
    /// A new text for one of the sender's own earlier messages.
    Edit {
        /// The sequence number of the message edited.
        of: u64,
        /// The new text.
        text: String,
    },
    /// Withdraws one of the sender's own earlier messages.
    Delete {
        /// The sequence number of the message deleted.
        of: u64,
    },
    /// A reaction to an entry (an emoji, or any short text), or its withdrawal.
    Reaction {
        /// The sequence number of the entry reacted to.
        to: u64,
        /// The reaction, e.g. "👍".
        key: String,
        /// `true` withdraws an earlier reaction with the same key.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        remove: bool,
    },
    /// A file: where to fetch its ciphertext and how to decrypt and check it.
    Attachment {
        /// The file.
        file: AttachmentRef,
        /// A text shown with it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        caption: Option<String>,
    },
    /// The sender's own profile in this room: how others should call them. Valid only from
    /// the user it names, with that user's signature.
    Profile(SignedProfile),
    /// Members' own signed profiles, passed on (by an inviter, so that a new member learns the
    /// names of those who spoke before it joined). Each is checked against its own user's key,
    /// so no member can set another's name.
    Roster {
        /// The profiles.
        profiles: Vec<SignedProfile>,
    },
    /// The room's profile: its name and topic, as a whole (a change sends both). Only a sender
    /// whose role the room's policy allows to change settings at that point of the log sets it;
    /// every client ignores one from anyone else (the server cannot read it, so cannot check).
    RoomProfile(RoomProfile),
    /// MLS: the sender cannot process a commit of epoch `epoch` (the epoch of this message)
    /// and asks a member who could for a way back in: the epoch's resync key, under which that
    /// member seals a GroupInfo of the room's current epoch (`grove_proto::mls::resync`). Not
    /// shown in history.
    ResyncRequest {
        /// The epoch the sender is stuck at.
        epoch: u64,
        /// The resync key of that epoch.
        #[serde(with = "crate::b64")]
        key: Vec<u8>,
    },
    /// The secret of the room's invite link, shared inside the group by a member whose role
    /// may change the room's settings, so that the members whose role may invite can carry out
    /// the link's join requests and keep the room's state for link joins
    /// (`grove_proto::mls::links`). Empty: the link was revoked. Every client ignores one from
    /// a sender whose role may not change settings. Not shown in history.
    LinkKey {
        /// The link's 32-byte secret, or nothing.
        #[serde(with = "crate::b64")]
        secret: Vec<u8>,
    },
    /// A message this client cannot show: a kind from a newer client, or a malformed one.
    /// Never encoded: [`Content::encode`] of it answers its original bytes.
    #[serde(skip)]
    Unsupported {
        /// Its `type`, if it had one.
        kind: String,
        /// The plaintext as received.
        raw: Vec<u8>,
    },
}

#[derive(Serialize)]
struct Versioned<'a> {
    v: u32,
    #[serde(flatten)]
    content: &'a Content,
}

#[derive(Deserialize)]
struct Header {
    v: u32,
    #[serde(rename = "type")]
    kind: String,
}

impl Content {
    /// A text message.
    pub fn text(text: impl Into<String>) -> Content {
        Content::Text { text: text.into() }
    }

    /// The plaintext to encrypt.
    pub fn encode(&self) -> Vec<u8> {
        if let Content::Unsupported { raw, .. } = self {
            return raw.clone();
        }
        // Serialising these plain structs cannot fail.
        serde_json::to_vec(&Versioned { v: VERSION, content: self }).unwrap_or_default()
    }

    /// Reads a decrypted plaintext. Never fails: what cannot be read is kept as
    /// [`Content::Unsupported`].
    pub fn decode(plaintext: &[u8]) -> Content {
        let unsupported = |kind: &str| Content::Unsupported { kind: kind.to_string(), raw: plaintext.to_vec() };
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(plaintext) else {
            // Before this format, a message was bare UTF-8 text.
            return match std::str::from_utf8(plaintext) {
                Ok(text) => Content::text(text),
                Err(_) => unsupported("binary"),
            };
        };
        let Ok(header) = serde_json::from_value::<Header>(value.clone()) else {
            return match value {
                serde_json::Value::Object(_) => unsupported("unknown"),
                // A bare JSON scalar typed as text ("42", "true") is still text.
                _ => std::str::from_utf8(plaintext).map(Content::text).unwrap_or_else(|_| unsupported("binary")),
            };
        };
        if header.v > VERSION {
            return unsupported(&header.kind);
        }
        match serde_json::from_value::<Content>(value) {
            Ok(Content::Profile(p)) if display_name(&p.name).is_err() => unsupported("profile"),
            Ok(Content::RoomProfile(p)) if p.check().is_err() => unsupported("room_profile"),
            Ok(Content::LinkKey { secret }) if !matches!(secret.len(), 0 | 32) => unsupported("link_key"),
            Ok(c) => c,
            Err(_) => unsupported(&header.kind),
        }
    }

    /// The kind's name, as in `type`.
    pub fn kind(&self) -> &str {
        match self {
            Content::Text { .. } => "text",
            Content::Reply { .. } => "reply",
            Content::Edit { .. } => "edit",
            Content::Delete { .. } => "delete",
            Content::Reaction { .. } => "reaction",
            Content::Attachment { .. } => "attachment",
            Content::Profile(_) => "profile",
            Content::Roster { .. } => "roster",
            Content::RoomProfile(_) => "room_profile",
            Content::ResyncRequest { .. } => "resync_request",
            Content::LinkKey { .. } => "link_key",
            Content::Unsupported { kind, .. } => kind,
        }
    }
}

/// A user's display name in one room, signed by the user's identity key (a [`UserId`] is that
/// key). `rev` grows with every change, so an old profile passed on again cannot undo a newer
/// one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedProfile {
    /// Whose profile.
    pub user: UserId,
    /// The display name.
    pub name: String,
    /// The user's profile revision.
    pub rev: u64,
    /// Ed25519 over [`SignedProfile::signing_bytes`].
    #[serde(with = "crate::b64")]
    pub sig: Vec<u8>,
}

impl SignedProfile {
    /// What the user signs: a domain tag, the room's link, the user, the revision and the name.
    pub fn signing_bytes(room: &str, user: &UserId, rev: u64, name: &str) -> Vec<u8> {
        let mut m = b"grove profile v1\0".to_vec();
        for part in [room.as_bytes(), user.as_bytes().as_slice(), &rev.to_be_bytes(), name.as_bytes()] {
            m.extend_from_slice(&(part.len() as u32).to_be_bytes());
            m.extend_from_slice(part);
        }
        m
    }

    /// Whether the signature is the named user's over this profile in `room`, and the name is
    /// one [`display_name`] accepts.
    pub fn verify(&self, room: &str) -> bool {
        let Ok(sig) = <[u8; 64]>::try_from(self.sig.as_slice()) else { return false };
        let Some(key) = self.user.verifying_key() else { return false };
        display_name(&self.name).is_ok_and(|n| n == self.name)
            && key
                .verify_strict(
                    &Self::signing_bytes(room, &self.user, self.rev, &self.name),
                    &ed25519_dalek::Signature::from_bytes(&sig),
                )
                .is_ok()
    }
}

/// The longest room topic, in characters.
pub const MAX_TOPIC_CHARS: usize = 512;

/// A room's name and topic, end-to-end encrypted ([`Content::RoomProfile`]). Empty means unset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomProfile {
    /// The room's name as people call it (at most [`MAX_NAME_CHARS`], no control character).
    #[serde(default)]
    pub name: String,
    /// What the room is about (at most [`MAX_TOPIC_CHARS`], no control character).
    #[serde(default)]
    pub topic: String,
}

impl RoomProfile {
    /// Checks the name and topic (trimmed by the caller): lengths and no control characters,
    /// which would garble others' screens.
    pub fn check(&self) -> Result<(), NameError> {
        if self.name.chars().count() > MAX_NAME_CHARS || self.topic.chars().count() > MAX_TOPIC_CHARS {
            return Err(NameError::TooLong);
        }
        if self.name.chars().chain(self.topic.chars()).any(char::is_control) {
            return Err(NameError::Control);
        }
        Ok(())
    }
}

/// Why a display name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// Nothing but spaces.
    #[error("a name cannot be empty")]
    Empty,
    /// Longer than [`MAX_NAME_CHARS`] (a room's topic: [`MAX_TOPIC_CHARS`]).
    #[error("a name is at most {MAX_NAME_CHARS} characters, a room's topic {MAX_TOPIC_CHARS}")]
    TooLong,
    /// A control character (a newline, an escape sequence) would garble others' screens.
    #[error("a name cannot hold control characters")]
    Control,
}

/// Checks a display name and answers it trimmed.
pub fn display_name(name: &str) -> Result<&str, NameError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(NameError::TooLong);
    }
    if name.chars().any(char::is_control) {
        return Err(NameError::Control);
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attachment::{AttachmentKey, AttachmentScheme, BlobDigest, BlobId};

    fn key(seed: u8) -> ed25519_dalek::SigningKey {
        ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
    }

    fn profile(key: &ed25519_dalek::SigningKey, room: &str, rev: u64, name: &str) -> SignedProfile {
        use ed25519_dalek::Signer;
        let user = UserId::from_slice(key.verifying_key().as_bytes()).unwrap();
        let sig = key.sign(&SignedProfile::signing_bytes(room, &user, rev, name)).to_bytes().to_vec();
        SignedProfile { user, name: name.into(), rev, sig }
    }

    #[test]
    fn a_profile_verifies_only_for_its_user_room_and_name() {
        let p = profile(&key(1), "garden", 2, "Alice");
        assert!(p.verify("garden"));
        assert!(!p.verify("other-room"), "bound to its room");
        let mut renamed = p.clone();
        renamed.name = "Mallory".into();
        assert!(!renamed.verify("garden"), "the name is signed");
        let mut older = p.clone();
        older.rev = 1;
        assert!(!older.verify("garden"), "the revision is signed");
        let mut stolen = profile(&key(2), "garden", 2, "Alice");
        stolen.user = p.user;
        assert!(!stolen.verify("garden"), "only the user's own key signs its profile");
        let bad_name = profile(&key(1), "garden", 3, "a\nb");
        assert!(!bad_name.verify("garden"));
    }

    fn all_kinds() -> Vec<Content> {
        vec![
            Content::text("hello"),
            Content::Reply { to: 7, text: "yes".into() },
            Content::Edit { of: 7, text: "hello, all".into() },
            Content::Delete { of: 7 },
            Content::Reaction { to: 7, key: "👍".into(), remove: false },
            Content::Reaction { to: 7, key: "👍".into(), remove: true },
            Content::Attachment {
                file: AttachmentRef {
                    scheme: AttachmentScheme::StreamAes256Gcm64k,
                    blob: BlobId([1; 16]),
                    key: AttachmentKey([1; 32]),
                    digest: BlobDigest([2; 32]),
                    size: 5,
                    name: "a.txt".into(),
                    media_type: "text/plain".into(),
                },
                caption: Some("notes".into()),
            },
            Content::Profile(profile(&key(1), "garden", 1, "Alice")),
            Content::Roster {
                profiles: vec![profile(&key(1), "garden", 1, "Alice"), profile(&key(2), "garden", 3, "Bob")],
            },
            Content::RoomProfile(RoomProfile { name: "Paris protests".into(), topic: "Saturday, 2pm".into() }),
            Content::ResyncRequest { epoch: 4, key: vec![5; 32] },
            Content::LinkKey { secret: vec![6; 32] },
            Content::LinkKey { secret: Vec::new() },
        ]
    }

    #[test]
    fn every_kind_round_trips_with_its_version() {
        for c in all_kinds() {
            let bytes = c.encode();
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(v["v"], VERSION);
            assert_eq!(v["type"], c.kind());
            assert_eq!(Content::decode(&bytes), c);
        }
    }

    #[test]
    fn a_kind_from_a_newer_client_is_kept_as_unsupported() {
        let raw = br#"{"v":1,"type":"poll","question":"lunch?","options":["yes","no"]}"#;
        let c = Content::decode(raw);
        assert_eq!(c, Content::Unsupported { kind: "poll".into(), raw: raw.to_vec() });
        // Kept byte for byte, so an upgraded client can read it later.
        assert_eq!(c.encode(), raw.to_vec());
        // A newer version of a known kind, and a known kind with the wrong fields, likewise.
        assert!(
            matches!(Content::decode(br#"{"v":2,"type":"text","text":"x"}"#), Content::Unsupported { kind, .. } if kind == "text")
        );
        assert!(
            matches!(Content::decode(br#"{"v":1,"type":"reply","text":"x"}"#), Content::Unsupported { kind, .. } if kind == "reply")
        );
        assert!(matches!(Content::decode(br#"{"no":"type"}"#), Content::Unsupported { kind, .. } if kind == "unknown"));
        assert!(matches!(Content::decode(&[0xff, 0xfe]), Content::Unsupported { kind, .. } if kind == "binary"));
    }

    #[test]
    fn unknown_fields_of_a_known_kind_are_ignored() {
        let c = Content::decode(br#"{"v":1,"type":"text","text":"hi","format":"markdown"}"#);
        assert_eq!(c, Content::text("hi"));
    }

    #[test]
    fn bare_text_from_older_clients_reads_as_text() {
        assert_eq!(Content::decode(b"hello from 2025"), Content::text("hello from 2025"));
        assert_eq!(Content::decode(b"42"), Content::text("42"));
        assert_eq!(Content::decode("ünïcode".as_bytes()), Content::text("ünïcode"));
    }

    #[test]
    fn display_names_are_checked() {
        assert_eq!(display_name("  Alice  "), Ok("Alice"));
        assert_eq!(display_name("   "), Err(NameError::Empty));
        assert_eq!(display_name(&"x".repeat(65)), Err(NameError::TooLong));
        assert_eq!(display_name(&"é".repeat(64)), Ok("é".repeat(64).as_str()));
        assert_eq!(display_name("Mallory\x1b[2J"), Err(NameError::Control));
        assert_eq!(display_name("a\nb"), Err(NameError::Control));
        // A profile message carrying a bad name is not a name.
        let mut evil = profile(&key(1), "garden", 1, "x");
        evil.name = "evil\u{1b}[31m".into();
        let raw = Content::Profile(evil).encode();
        assert!(matches!(Content::decode(&raw), Content::Unsupported { kind, .. } if kind == "profile"));
        // Nor a room profile with an escape sequence or an endless topic.
        let raw = br#"{"v":1,"type":"room_profile","name":"x\u001b[2J","topic":""}"#;
        assert!(matches!(Content::decode(raw), Content::Unsupported { kind, .. } if kind == "room_profile"));
        let long = Content::RoomProfile(RoomProfile { name: "x".into(), topic: "t".repeat(MAX_TOPIC_CHARS + 1) });
        assert!(matches!(Content::decode(&long.encode()), Content::Unsupported { kind, .. } if kind == "room_profile"));
    }
}

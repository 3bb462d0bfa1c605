//! How the client commands and `grove chat` name people and describe what happened: shared so
//! that a line reads the same in `grove read` and in the chat.

use std::collections::HashMap;

use anyhow::anyhow;
use grove_client::profile::{Address, Profile};
use grove_client::store::Membership;
use grove_wire::UserId;

/// A member named on the command line: an address, a user id, or a display name in the room.
pub(crate) fn member(p: &mut Profile, room: &str, who: &str) -> anyhow::Result<UserId> {
    if let Ok(a) = Address::parse(who) {
        return Ok(a.user);
    }
    if let Ok(u) = who.parse::<UserId>() {
        return Ok(u);
    }
    let names = p.display_names(room)?;
    let found: Vec<UserId> =
        names.iter().filter(|(_, n)| n.as_str() == who || n.split(" (").next() == Some(who)).map(|(u, _)| *u).collect();
    match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(anyhow!(
            "{who:?} is neither a member's name, a user id nor an address: see `grove room members {room}`"
        )),
        _ => Err(anyhow!("several members are called {who:?}: use their user id from `grove room members {room}`")),
    }
}

/// How a user is called in a room.
pub(crate) fn who(user: &UserId, me: UserId, names: &HashMap<UserId, String>) -> String {
    if *user == me {
        return "you".to_string();
    }
    names.get(user).cloned().unwrap_or_else(|| user.short())
}

/// A membership change as a sentence.
pub(crate) fn membership_sentence(
    by: &UserId,
    change: &Membership,
    me: UserId,
    names: &HashMap<UserId, String>,
) -> String {
    if let Some(v) = &change.voided {
        return format!(
            "the server voided {}'s commit (entry {}): members proved it faulty, and the room is back at epoch {}",
            who(by, me, names),
            v.seq,
            v.epoch
        );
    }
    if let Some(epoch) = change.resynced {
        return format!(
            "you could not process a commit and got back in by a resync (epoch {epoch}), from {}'s help; what \
             was sent in the epochs you missed is not readable",
            who(by, me, names)
        );
    }
    if change.removed_unseen {
        return "you were removed from this room (while away); nothing after this reaches you".to_string();
    }
    if let Some(n) = change.joined {
        if change.again {
            return format!("you were added back ({n} members); what was said while you were out is not readable");
        }
        return format!("you joined ({n} members)");
    }
    let mut parts = Vec::new();
    for a in &change.added {
        parts.push(format!("{} added {}", who(by, me, names), who(a, me, names)));
    }
    for r in &change.removed {
        if r == by {
            parts.push(format!("{} left", who(r, me, names)));
        } else if *r == me {
            parts.push(format!("{} removed you; nothing after this reaches you", who(by, me, names)));
        } else {
            parts.push(format!("{} removed {}", who(by, me, names), who(r, me, names)));
        }
    }
    if parts.is_empty() {
        if *by == me {
            parts.push("you updated your keys".to_string());
        } else {
            parts.push(format!("{} updated their keys", who(by, me, names)));
        }
    }
    parts.join(", ")
}

pub(crate) fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

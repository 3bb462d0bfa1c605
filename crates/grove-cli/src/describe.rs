//! How the client commands and `grove chat` name people and describe what happened: shared so
//! that a line reads the same in `grove read` and in the chat.

use std::collections::HashMap;

use anyhow::anyhow;
use grove_client::profile::{Address, Profile};
use grove_client::Membership;
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
        if a == by {
            // An MLS link join: the joiner's own external commit.
            parts.push(format!("{} joined by the room's invite link", who(a, me, names)));
        } else {
            parts.push(format!("{} added {}", who(by, me, names), who(a, me, names)));
        }
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
    let by_name = who(by, me, names);
    for (u, role) in &change.roles {
        parts.push(format!("{by_name} made {} {role}", who(u, me, names)));
    }
    for u in &change.banned {
        parts.push(format!("{by_name} banned {}", who(u, me, names)));
    }
    for u in &change.unbanned {
        parts.push(format!("{by_name} lifted the ban of {}", who(u, me, names)));
    }
    if change.rights {
        parts.push(format!("{by_name} changed the room's settings"));
    }
    if let Some(rule) = change.join {
        parts.push(format!("{by_name} set the room's join policy to {rule}"));
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

/// A change of the room's name and topic as a sentence (`sender` already named).
pub(crate) fn room_profile_sentence(sender: &str, r: &grove_wire::content::RoomProfile) -> String {
    let name = if r.name.is_empty() { "no name".to_string() } else { format!("the name {:?}", r.name) };
    let topic = if r.topic.is_empty() { "no topic".to_string() } else { format!("the topic {:?}", r.topic) };
    format!("{sender} gave the room {name} and {topic}")
}

pub(crate) fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

/// Which members of a sender-keys room have not got this user's key yet (their home server
/// could not be reached) and what happens next; `None` if everyone has it.
pub(crate) fn key_pending_sentence(
    p: &Profile,
    room: &str,
    pending: &[grove_client::profile::KeyPending],
) -> Option<String> {
    if pending.is_empty() {
        return None;
    }
    let names = p.display_names(room).unwrap_or_default();
    let me = p.user_id();
    let list: Vec<String> = pending.iter().map(|k| format!("{} (home {})", who(&k.user, me, &names), k.home)).collect();
    Some(format!(
        "not yet delivered: your key to {}: their home server could not be reached. They will read your messages once it is delivered; it is retried on your next sync or send in this room",
        list.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use grove_wire::policy::{JoinRule, Role};

    use super::*;

    #[test]
    fn role_ban_and_join_policy_changes_read_as_what_they_are() {
        let (alice, bob, carol) = (UserId([1; 32]), UserId([2; 32]), UserId([3; 32]));
        let names = HashMap::from([(bob, "Bob".to_string()), (carol, "Carol".to_string())]);
        let made = Membership { roles: vec![(bob, Role::Moderator)], ..Membership::default() };
        assert_eq!(membership_sentence(&alice, &made, alice, &names), "you made Bob moderator");
        let banned = Membership { removed: vec![carol], banned: vec![carol], ..Membership::default() };
        assert_eq!(membership_sentence(&bob, &banned, alice, &names), "Bob removed Carol, Bob banned Carol");
        let opened = Membership { join: Some(JoinRule::Approval), ..Membership::default() };
        assert_eq!(membership_sentence(&bob, &opened, alice, &names), "Bob set the room's join policy to approval");
        // A commit that changes nothing of these is still a key update.
        assert_eq!(membership_sentence(&bob, &Membership::default(), alice, &names), "Bob updated their keys");
        let r = grove_wire::content::RoomProfile { name: "Square".into(), topic: String::new() };
        assert_eq!(room_profile_sentence("Bob", &r), "Bob gave the room the name \"Square\" and no topic");
    }
}

//! What each encryption scheme sends, and how much CPU it spends, for one application message
//! and for each membership operation: the *model* that turns per-operation costs
//! ([`crate::costs`]) into sends that a hosting scheme ([`crate::net`]) carries.
//!
//! The rules (N is the group size before the operation; every member is online):
//!
//! | | message | add a member | remove a member | heal after a leak (PCS) |
//! |---|---|---|---|---|
//! | pairwise (Olm) | one Olm message per other member | the adder sends a 100-byte notice to the N−1 others (one Olm message each); the newcomer opens a session with each of the N members (one pre-key message each) | the remover sends the notice to the N−2 who stay | nothing to send: each pair's Double Ratchet heals at its next round trip (counted as 0, "by traffic") |
//! | Sender Keys | one message for all | the notice (a Sender Keys message) to the N−1 others; the newcomer sends its chain's distribution to the N members (Olm pre-key messages: they open the sessions), and each of them sends its own to the newcomer (Olm, 2N messages) | every one of the N−1 who stay makes a new chain and sends it to the N−2 others (Olm): (N−1)(N−2) messages, O(N²) | the leaked member held every chain: all N members make new chains and send them to the N−1 others: N(N−1) messages |
//! | MLS | one PrivateMessage for all | one add commit to the N−1 others; a Welcome plus the ratchet tree to the newcomer | one remove commit to the N−1 others (the removed member learns of it too) | the leaked member commits an update, to the N−1 others |
//!
//! CPU is the sum over every member who does something (sender and receivers); it does not
//! depend on the hosting scheme. The MLS "process" cost is paid by each receiver of a commit.

use crate::costs::{CostTable, Provenance};

/// An encryption scheme of the design note.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Encryption {
    /// One Olm ciphertext per member (Tox NGC, Signal's pairwise mode).
    Pairwise,
    /// Signal/WhatsApp Sender Keys, distributed over Olm.
    SenderKeys,
    /// MLS (RFC 9420), grove's engine.
    Mls,
}

impl Encryption {
    /// All schemes, in report order.
    pub const ALL: [Encryption; 3] = [Encryption::Pairwise, Encryption::SenderKeys, Encryption::Mls];

    /// Short name for tables.
    pub fn name(self) -> &'static str {
        match self {
            Encryption::Pairwise => "pairwise (Olm)",
            Encryption::SenderKeys => "Sender Keys",
            Encryption::Mls => "MLS",
        }
    }
}

/// One send by one member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Send {
    /// One blob of this many bytes that every other member of the group reads.
    Shared(u64),
    /// One blob of this many bytes *per* other member, sent as one group message.
    PerMember(u64),
    /// `count` one-to-one deliveries of `bytes` each (Welcome, key distribution, pre-key message).
    Direct {
        /// How many recipients.
        count: u64,
        /// Bytes to each.
        bytes: u64,
    },
}

/// `senders` members each make `send` in a group of `group` members (senders included). The
/// senders are symmetric (every member online), so one is simulated and multiplied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// How many members make this send.
    pub senders: u64,
    /// Members in the group at the time (for `Shared` and `PerMember`: recipients = group − 1).
    pub group: u64,
    /// What each sends.
    pub send: Send,
}

/// A membership operation: what goes on the network and the CPU it costs in all.
#[derive(Clone, Debug, PartialEq)]
pub struct Op {
    /// The sends, in order.
    pub steps: Vec<Step>,
    /// CPU summed over every member involved, µs.
    pub cpu_us: f64,
    /// The scheme heals with ordinary traffic and sends nothing for it.
    pub by_traffic: bool,
}

/// Everything one scheme does at one group size.
#[derive(Clone, Debug, PartialEq)]
pub struct SchemeCosts {
    /// The scheme.
    pub encryption: Encryption,
    /// Group size.
    pub n: u64,
    /// How one 100-byte application message goes out.
    pub message: Send,
    /// CPU of the sender for one message, µs.
    pub message_sender_us: f64,
    /// CPU of each receiver for one message, µs.
    pub message_receiver_us: f64,
    /// Adding a member.
    pub add: Op,
    /// Removing a member (rekey).
    pub remove: Op,
    /// Healing after a member's keys leak (post-compromise security).
    pub heal: Op,
    /// Whether any cost used here is extrapolated.
    pub provenance: Provenance,
}

/// The model: what `encryption` sends and spends in a group of `n` (n ≥ 3). `None` if the table
/// has no MLS points.
pub fn scheme_costs(table: &CostTable, encryption: Encryption, n: u64) -> Option<SchemeCosts> {
    let f = n as f64;
    let step = |senders, group, send| Step { senders, group, send };
    Some(match encryption {
        Encryption::Pairwise => {
            let o = &table.olm;
            SchemeCosts {
                encryption,
                n,
                message: Send::PerMember(o.message_bytes),
                message_sender_us: (f - 1.0) * o.encrypt_us,
                message_receiver_us: o.decrypt_us,
                add: Op {
                    steps: vec![
                        step(1, n, Send::PerMember(o.notice_bytes)),
                        step(1, n + 1, Send::Direct { count: n, bytes: o.prekey_bytes }),
                    ],
                    cpu_us: (f - 1.0) * (o.encrypt_us + o.decrypt_us) + f * (o.session_out_us + o.session_in_us),
                    by_traffic: false,
                },
                remove: Op {
                    steps: vec![step(1, n - 1, Send::PerMember(o.notice_bytes))],
                    cpu_us: (f - 2.0) * (o.encrypt_us + o.decrypt_us),
                    by_traffic: false,
                },
                heal: Op { steps: Vec::new(), cpu_us: 0.0, by_traffic: true },
                provenance: Provenance::Measured,
            }
        }
        Encryption::SenderKeys => {
            let s = &table.sender_keys;
            let o = &table.olm;
            // One distribution sent pairwise: make-or-reuse the chain, Olm-encrypt, Olm-decrypt, install.
            let dist = o.encrypt_us + o.decrypt_us + s.install_us;
            // The newcomer's first Olm message to each member opens the session (pre-key message).
            let prekey_extra = o.prekey_bytes.saturating_sub(o.notice_bytes);
            SchemeCosts {
                encryption,
                n,
                message: Send::Shared(s.message_bytes),
                message_sender_us: s.encrypt_us,
                message_receiver_us: s.decrypt_us,
                add: Op {
                    steps: vec![
                        step(1, n, Send::Shared(s.message_bytes)),
                        step(1, n + 1, Send::Direct { count: n, bytes: o.distribution_bytes + prekey_extra }),
                        step(n, n + 1, Send::Direct { count: 1, bytes: o.distribution_bytes }),
                    ],
                    cpu_us: s.encrypt_us
                        + (f - 1.0) * s.decrypt_us
                        + s.new_chain_us
                        + f * (o.session_out_us + o.session_in_us + s.install_us)
                        + f * dist,
                    by_traffic: false,
                },
                remove: Op {
                    steps: vec![step(n - 1, n - 1, Send::Direct { count: n - 2, bytes: o.distribution_bytes })],
                    cpu_us: (f - 1.0) * s.new_chain_us + (f - 1.0) * (f - 2.0) * dist,
                    by_traffic: false,
                },
                heal: Op {
                    steps: vec![step(n, n, Send::Direct { count: n - 1, bytes: o.distribution_bytes })],
                    cpu_us: f * s.new_chain_us + f * (f - 1.0) * dist,
                    by_traffic: false,
                },
                provenance: Provenance::Measured,
            }
        }
        Encryption::Mls => {
            let (m, provenance) = table.mls.at(n)?;
            SchemeCosts {
                encryption,
                n,
                message: Send::Shared(m.message_bytes),
                message_sender_us: m.encrypt_us,
                message_receiver_us: m.decrypt_us,
                add: Op {
                    steps: vec![
                        step(1, n, Send::Shared(m.add_bytes)),
                        step(1, n + 1, Send::Direct { count: 1, bytes: m.welcome_bytes + m.tree_bytes }),
                    ],
                    cpu_us: m.add_us + (f - 1.0) * m.process_us + m.join_us,
                    by_traffic: false,
                },
                remove: Op {
                    steps: vec![step(1, n, Send::Shared(m.remove_bytes))],
                    cpu_us: m.remove_us + (f - 1.0) * m.process_us,
                    by_traffic: false,
                },
                heal: Op {
                    steps: vec![step(1, n, Send::Shared(m.update_bytes))],
                    cpu_us: m.update_us + (f - 1.0) * m.process_us,
                    by_traffic: false,
                },
                provenance,
            }
        }
    })
}

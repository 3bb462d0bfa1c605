//! Quotas between users: what one user may take of another's (their one-time keys, room in
//! their mailbox), and the pruning of per-identity state, so that identities, which cost
//! nothing to make, cost the server nothing once they go quiet.
//!
//! The quotas are token buckets (governor) per hour: a claimer may claim
//! `key_claims_per_pair_per_hour` keys of one user at once and then one per
//! `3600 / that` seconds; everyone together `key_claims_per_target_per_hour` of one user; a
//! sender `deposits_per_pair_per_hour` messages into one mailbox; an address
//! `limits.join_requests_per_ip_per_hour` join requests (all rooms), everyone together
//! `limits.join_requests_per_room_per_hour` into one room.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicI64, Ordering};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use grove_wire::UserId;

use crate::config::{LimitsSection, QuotasSection};
use crate::error::{AppError, LimitRefusal, Throttle};
use crate::state::AppState;

/// The per-pair and per-target buckets.
pub(crate) struct Quotas {
    claims_pair: DefaultKeyedRateLimiter<(UserId, UserId)>,
    claims_target: DefaultKeyedRateLimiter<UserId>,
    deposits_pair: DefaultKeyedRateLimiter<(UserId, UserId)>,
    joins_ip: DefaultKeyedRateLimiter<std::net::IpAddr>,
    joins_room: DefaultKeyedRateLimiter<i64>,
    /// When per-identity state was last pruned (server clock, ms).
    pruned_at: AtomicI64,
}

impl Quotas {
    pub(crate) fn new(q: &QuotasSection, l: &LimitsSection) -> Self {
        let per_hour = |n: u32| Quota::per_hour(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN));
        Quotas {
            claims_pair: RateLimiter::keyed(per_hour(q.key_claims_per_pair_per_hour)),
            claims_target: RateLimiter::keyed(per_hour(q.key_claims_per_target_per_hour)),
            deposits_pair: RateLimiter::keyed(per_hour(q.deposits_per_pair_per_hour)),
            joins_ip: RateLimiter::keyed(per_hour(l.join_requests_per_ip_per_hour)),
            joins_room: RateLimiter::keyed(per_hour(l.join_requests_per_room_per_hour)),
            pruned_at: AtomicI64::new(i64::MIN),
        }
    }

    /// Takes one key claim of `target`'s by `claimer`, or answers 429 `rate_limited`.
    pub(crate) fn claim(&self, claimer: UserId, target: UserId) -> Result<(), AppError> {
        check(&self.claims_pair, &(claimer, target), Throttle::ClaimsOfPair)?;
        check(&self.claims_target, &target, Throttle::ClaimsOfTarget)
    }

    /// Takes one deposit by `sender` into `owner`'s mailbox, or answers 429 `rate_limited`.
    pub(crate) fn deposit(&self, sender: UserId, owner: UserId) -> Result<(), AppError> {
        check(&self.deposits_pair, &(sender, owner), Throttle::Deposits)
    }

    /// Takes one join request from `ip` (`None`: a Unix socket's connections, one client)
    /// into the room `room`, or answers 429 `rate_limited`.
    pub(crate) fn join(&self, ip: Option<std::net::IpAddr>, room: i64) -> Result<(), AppError> {
        let ip = ip.unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        check(&self.joins_ip, &ip, Throttle::JoinsFromAddress)?;
        check(&self.joins_room, &room, Throttle::JoinsOfRoom)
    }

    /// How many identities (and pairs of them) the quotas track.
    pub(crate) fn tracked(&self) -> usize {
        self.claims_pair.len()
            + self.claims_target.len()
            + self.deposits_pair.len()
            + self.joins_ip.len()
            + self.joins_room.len()
    }

    fn retain_recent(&self) {
        for l in [&self.claims_pair, &self.deposits_pair] {
            l.retain_recent();
            l.shrink_to_fit();
        }
        self.claims_target.retain_recent();
        self.claims_target.shrink_to_fit();
        self.joins_ip.retain_recent();
        self.joins_ip.shrink_to_fit();
        self.joins_room.retain_recent();
        self.joins_room.shrink_to_fit();
    }
}

fn check<K>(limiter: &DefaultKeyedRateLimiter<K>, key: &K, what: Throttle) -> Result<(), AppError>
where
    K: Clone + Eq + std::hash::Hash,
{
    limiter.check_key(key).map_err(|not_until| {
        let wait = not_until.wait_time_from(governor::clock::Clock::now(&governor::clock::DefaultClock::default()));
        let secs = wait.as_secs().saturating_add(1);
        LimitRefusal::Throttled { what, secs }.into()
    })
}

/// How often, in server-clock ms, per-identity state is pruned.
const PRUNE_EVERY_MS: i64 = 60_000;

/// Drops the state of identities and addresses that went quiet, once per [`PRUNE_EVERY_MS`] of
/// server time: rate-limit buckets that have refilled (indistinguishable from a new one),
/// mailbox watches nobody waits on. Called on every request that came over a socket and on
/// every signed one; cheap when not due.
pub(crate) fn prune_if_due(state: &AppState, now: i64) {
    let q = &state.0.quotas;
    let last = q.pruned_at.load(Ordering::Relaxed);
    if now.saturating_sub(last) < PRUNE_EVERY_MS
        || q.pruned_at.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_err()
    {
        return;
    }
    state.0.user_limiter.retain_recent();
    state.0.user_limiter.shrink_to_fit();
    state.0.ip_limiter.retain_recent();
    state.0.ip_limiter.shrink_to_fit();
    q.retain_recent();
    state.0.mailboxes.prune();
}

/// Identities, addresses and pairs the server holds state for (the `grove_tracked_identities`
/// gauge): rate-limit buckets, quota buckets, mailbox watches.
pub(crate) fn tracked(state: &AppState) -> usize {
    state.0.user_limiter.len() + state.0.ip_limiter.len() + state.0.quotas.tracked() + state.0.mailboxes.len()
}

//! The server's shared state, handed to every handler through axum `State`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};

use ed25519_dalek::SigningKey;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use grove_store::Store;
use grove_wire::UserId;
use tokio::sync::watch;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::rooms::RoomService;

/// Unix milliseconds; injectable so tests can move time.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
    })
}

/// Cheap to clone: everything lives behind one `Arc`.
#[derive(Clone)]
pub struct AppState(pub(crate) Arc<Shared>);

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("name", &self.0.config.server.name).finish_non_exhaustive()
    }
}

pub(crate) struct Shared {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub public_key: [u8; 32],
    /// The server's key: it signs its half of each push socket's frame binding
    /// (`grove_wire::push`).
    pub(crate) signing_key: SigningKey,
    pub clock: Clock,
    pub nonces: NonceCache,
    pub keys: KeyCache,
    pub user_limiter: DefaultKeyedRateLimiter<UserId>,
    pub ip_limiter: DefaultKeyedRateLimiter<IpAddr>,
    pub metrics: Metrics,
    pub rooms: RoomService,
    pub mailboxes: MailboxWatch,
    /// Quotas between users (key claims, deposits).
    pub quotas: crate::quota::Quotas,
    /// The blob store of encrypted attachments.
    pub files: crate::files::FileService,
    /// Keys the operator blocked (`grove admin block`).
    pub blocked: crate::admin::Blocklist,
    /// Turns true when the server begins shutting down; push connections close on it.
    pub shutdown: watch::Sender<bool>,
    /// Other processes write to the store too (several instances on one PostgreSQL): cached
    /// room state may be behind, and their writes are followed (see `follow`).
    pub shared_store: bool,
    /// The TLS certificate and key, when the server terminates TLS itself (`[tls]`).
    pub tls: std::sync::OnceLock<Arc<crate::tls::TlsFiles>>,
}

impl AppState {
    /// State over a store, with the server's signing key and the system clock.
    pub fn new(config: Config, store: Arc<dyn Store>, key: SigningKey) -> Self {
        Self::with_clock(config, store, key, system_clock())
    }

    /// Same, with an injected clock.
    pub fn with_clock(config: Config, store: Arc<dyn Store>, key: SigningKey, clock: Clock) -> Self {
        let per = |n: u32| {
            let n = NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
            let burst = n.checked_mul(NonZeroU32::new(2).unwrap_or(NonZeroU32::MIN)).unwrap_or(n);
            Quota::per_second(n).allow_burst(burst)
        };
        let public_key = key.verifying_key().to_bytes();
        let foreign = store.foreign_writes();
        let state = AppState(Arc::new(Shared {
            user_limiter: RateLimiter::keyed(per(config.limits.user_requests_per_sec)),
            ip_limiter: RateLimiter::keyed(per(config.limits.ip_requests_per_sec)),
            nonces: NonceCache::default(),
            keys: KeyCache::default(),
            metrics: Metrics::new(),
            rooms: RoomService::default(),
            mailboxes: MailboxWatch::default(),
            quotas: crate::quota::Quotas::new(&config.quotas),
            files: crate::files::FileService::new(),
            blocked: crate::admin::Blocklist::default(),
            shutdown: watch::channel(false).0,
            shared_store: foreign.is_some(),
            tls: std::sync::OnceLock::new(),
            config,
            store,
            public_key,
            signing_key: key,
            clock,
        }));
        if let Some(rx) = foreign {
            crate::follow::spawn(&state, rx);
        }
        state
    }

    /// The server's public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.0.public_key
    }

    /// Serves TLS with `files` (as [`crate::open`] does when the configuration's `[tls]` is
    /// set). Only the first call counts.
    pub fn with_tls(self, files: crate::tls::TlsFiles) -> Self {
        let _ = self.0.tls.set(Arc::new(files));
        self
    }

    /// Reads the TLS certificate and key again (what SIGHUP does): new connections use them,
    /// open ones keep theirs. False when the server does not terminate TLS. On an error the
    /// previous certificate stays in use.
    pub fn reload_tls(&self) -> Result<bool, crate::tls::TlsError> {
        let Some(tls) = self.0.tls.get() else { return Ok(false) };
        tls.reload()?;
        tracing::info!(cert = %tls.cert().display(), "TLS certificate reloaded");
        Ok(true)
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.0.config
    }

    pub(crate) fn now(&self) -> i64 {
        (self.0.clock)()
    }
}

/// Nonces seen within the clock-skew window, per user.
#[derive(Default)]
pub(crate) struct NonceCache {
    inner: Mutex<Nonces>,
}

#[derive(Default)]
struct Nonces {
    seen: HashMap<(UserId, String), i64>,
    /// The horizon of the last prune (server clock, ms).
    pruned_at: i64,
}

impl NonceCache {
    /// How often, in server-clock ms, nonces older than the horizon are pruned.
    const PRUNE_EVERY_MS: i64 = 10_000;

    /// Records a nonce; false if it was already seen. Entries older than `horizon` (a request
    /// that old is refused by the timestamp check anyway) are pruned every
    /// [`Self::PRUNE_EVERY_MS`] of server time, so the cache holds one skew window of nonces.
    ///
    /// A lock poisoned by a panic elsewhere is used as it is: the map is at worst missing the
    /// nonce whose insertion panicked.
    pub(crate) fn insert(&self, user: UserId, nonce: &str, ts: i64, horizon: i64) -> bool {
        let mut n = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if horizon.saturating_sub(n.pruned_at) >= Self::PRUNE_EVERY_MS {
            n.seen.retain(|_, t| *t >= horizon);
            n.pruned_at = horizon;
        }
        match n.seen.entry((user, nonce.to_string())) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(ts);
                true
            }
        }
    }

    /// How many nonces are held.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).seen.len()
    }
}

/// Decoded Ed25519 keys of recent signers: decoding a point costs about as much as a fifth of
/// a verification. Bounded: cleared when full.
#[derive(Default)]
pub(crate) struct KeyCache {
    keys: Mutex<HashMap<UserId, ed25519_dalek::VerifyingKey>>,
}

impl KeyCache {
    const MAX: usize = 100_000;

    /// The user's decoded key, or `None` if the bytes are not a valid point.
    pub(crate) fn get(&self, user: &UserId) -> Option<ed25519_dalek::VerifyingKey> {
        if let Some(k) = self.keys.lock().unwrap_or_else(|p| p.into_inner()).get(user) {
            return Some(*k);
        }
        let key = user.verifying_key()?;
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if keys.len() >= Self::MAX {
            keys.clear();
        }
        keys.insert(*user, key);
        Some(key)
    }
}

/// Wakes mailbox readers (long-poll and push) when a deposit lands.
#[derive(Default)]
pub(crate) struct MailboxWatch {
    senders: Mutex<HashMap<UserId, watch::Sender<u64>>>,
}

impl MailboxWatch {
    pub(crate) fn subscribe(&self, owner: UserId) -> watch::Receiver<u64> {
        let mut m = self.senders.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(owner).or_insert_with(|| watch::channel(0).0).subscribe()
    }

    /// Wakes the owner's readers, if any, to re-read (another instance deposited).
    pub(crate) fn poke(&self, owner: &UserId) {
        let m = self.senders.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = m.get(owner) {
            tx.send_modify(|_| {});
        }
    }

    /// Wakes every mailbox reader to re-read.
    pub(crate) fn poke_all(&self) {
        let m = self.senders.lock().unwrap_or_else(|p| p.into_inner());
        for tx in m.values() {
            tx.send_modify(|_| {});
        }
    }

    /// Drops the watches nobody waits on.
    pub(crate) fn prune(&self) {
        let mut m = self.senders.lock().unwrap_or_else(|p| p.into_inner());
        m.retain(|_, tx| tx.receiver_count() > 0);
        m.shrink_to_fit();
    }

    /// How many mailboxes are watched.
    pub(crate) fn len(&self) -> usize {
        self.senders.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub(crate) fn notify(&self, owner: UserId, seq: u64) {
        let mut m = self.senders.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = m.get(&owner) {
            tx.send_if_modified(|cur| {
                if seq > *cur {
                    *cur = seq;
                    true
                } else {
                    false
                }
            });
            if tx.receiver_count() == 0 {
                m.remove(&owner);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_are_pruned_by_time_not_by_count() {
        let cache = NonceCache::default();
        let user = UserId([7; 32]);
        let skew = 300_000;
        for i in 0..1_000 {
            let ts = 1_000_000 + i;
            assert!(cache.insert(user, &format!("n{i}"), ts, ts - skew));
        }
        assert!(!cache.insert(user, "n5", 1_000_999, 1_000_999 - skew), "a reused nonce is refused");
        assert_eq!(cache.len(), 1_000);
        // One skew window and a prune period later, the old nonces are gone.
        let later = 1_000_999 + skew + NonceCache::PRUNE_EVERY_MS;
        assert!(cache.insert(user, "fresh", later, later - skew));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn a_poisoned_lock_does_not_refuse_every_request() {
        let cache = Arc::new(NonceCache::default());
        let c = cache.clone();
        let poisoner = std::thread::spawn(move || {
            let _held = c.inner.lock();
            panic!("poison the nonce cache's lock");
        });
        assert!(poisoner.join().is_err());
        assert!(cache.inner.is_poisoned());
        let user = UserId([8; 32]);
        assert!(cache.insert(user, "after-poison", 10, 0));
        assert!(!cache.insert(user, "after-poison", 10, 0));
    }
}

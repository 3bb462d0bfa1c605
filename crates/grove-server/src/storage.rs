//! Storage exhaustion, answered clearly: `507 storage_full`, a reserve for messages, `/healthz`
//! and metrics that say so, and one log line per episode.
//!
//! Two conditions, tracked here:
//!
//! - **low**: the store's headroom ([`grove_store::Store::headroom`]: free space on the
//!   database's filesystem, or room left under SQLite's page cap) is below
//!   `server.storage_reserve_bytes`. New rooms and uploads (whose blob must fit above the
//!   reserve) are refused with `storage_full`; messages, mailbox deposits and everything else
//!   are still taken, out of the reserve. Checked when a room or an upload is asked for, and by
//!   `/healthz`.
//! - **full**: a write failed because the storage is full ([`grove_store::StoreError::Full`],
//!   or no space for a blob's part). That request is answered `507 storage_full` (nothing was
//!   written, retry later); the condition ends with the next write that succeeds, or when the
//!   headroom is back above the reserve.
//!
//! Each change of condition is logged once (a warning when it begins, an info line when it
//! ends), not once per refused request. Metrics: `grove_storage_low`, `grove_storage_full`
//! (0 or 1), `grove_storage_headroom_bytes`, `grove_storage_refusals_total` by what was
//! refused, `grove_storage_full_episodes_total`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::error::{AppError, AppResult, ServerRefusal};
use crate::state::AppState;

/// Marks an answer that reports a write refused for lack of space (not a reserve refusal,
/// see [`AppError::from`] for `StoreError::Full`): the `track` middleware recognises these
/// answers by this extension.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StoreFullAnswer;

/// What the storage looks like now, worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Ok,
    Low,
    Full,
}

/// The storage watch: conditions, metrics, episode logging.
pub(crate) struct StorageWatch {
    full: AtomicBool,
    low: AtomicBool,
    /// Last logged level, so that each change is logged once.
    logged: Mutex<Level>,
    metrics: StorageMetrics,
}

struct StorageMetrics {
    low: Gauge,
    full: Gauge,
    headroom: Gauge,
    refusals: Family<Vec<(&'static str, &'static str)>, Counter>,
    episodes: Counter,
}

/// `/healthz` about storage: `None` when all is well, else the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Degraded {
    /// `storage_full` or `storage_low`.
    pub(crate) reason: &'static str,
    /// For the operator.
    pub(crate) message: String,
}

impl StorageWatch {
    pub(crate) fn register(registry: &mut Registry) -> StorageWatch {
        let metrics = StorageMetrics {
            low: Gauge::default(),
            full: Gauge::default(),
            headroom: Gauge::default(),
            refusals: Family::default(),
            episodes: Counter::default(),
        };
        registry.register(
            "storage_low",
            "1 while the storage's headroom is below the reserve (new rooms and uploads refused)",
            metrics.low.clone(),
        );
        registry.register("storage_full", "1 while writes fail because the storage is full", metrics.full.clone());
        registry.register(
            "storage_headroom_bytes",
            "Bytes the store can still take, as last measured (-1: it cannot tell)",
            metrics.headroom.clone(),
        );
        registry.register(
            "storage_refusals",
            "Requests refused with storage_full, by what (room, upload, write)",
            metrics.refusals.clone(),
        );
        registry.register("storage_full_episodes", "Times the storage became full", metrics.episodes.clone());
        metrics.headroom.set(-1);
        StorageWatch {
            full: AtomicBool::new(false),
            low: AtomicBool::new(false),
            logged: Mutex::new(Level::Ok),
            metrics,
        }
    }

    fn level(&self) -> Level {
        if self.full.load(Ordering::Relaxed) {
            Level::Full
        } else if self.low.load(Ordering::Relaxed) {
            Level::Low
        } else {
            Level::Ok
        }
    }

    /// Logs a change of level once, and updates the gauges.
    fn settle(&self, headroom: Option<u64>, reserve: u64) {
        let level = self.level();
        self.metrics.full.set(i64::from(level == Level::Full));
        self.metrics.low.set(i64::from(self.low.load(Ordering::Relaxed)));
        let mut logged = self.logged.lock().unwrap_or_else(|p| p.into_inner());
        if *logged == level {
            return;
        }
        let left = headroom.map(|h| h.to_string()).unwrap_or_else(|| "unknown".into());
        match level {
            Level::Full => {
                self.metrics.episodes.inc();
                tracing::error!(
                    headroom = %left,
                    reserve,
                    "storage full: writes are refused with 507 storage_full until space is freed \
                     (free disk space, or raise server.sqlite_max_bytes)"
                );
            }
            Level::Low => tracing::warn!(
                headroom = %left,
                reserve,
                "storage low: below the reserve, new rooms and uploads are refused with 507 storage_full; \
                 messages are still taken"
            ),
            Level::Ok => tracing::info!(headroom = %left, reserve, "storage available again"),
        }
        *logged = level;
    }

    /// A write failed for lack of space.
    pub(crate) fn write_failed(&self, state: &AppState) {
        self.metrics.refusals.get_or_create(&vec![("what", "write")]).inc();
        self.full.store(true, Ordering::Relaxed);
        self.settle(None, state.0.config.server.storage_reserve_bytes);
    }

    /// A write succeeded: whatever was full is not (any more).
    pub(crate) fn write_succeeded(&self, state: &AppState) {
        if self.full.swap(false, Ordering::Relaxed) {
            self.settle(None, state.0.config.server.storage_reserve_bytes);
        }
    }

    /// Measures the headroom and updates the conditions; answers it.
    pub(crate) async fn measure(&self, state: &AppState) -> Option<u64> {
        let reserve = state.0.config.server.storage_reserve_bytes;
        let headroom = match state.0.store.headroom().await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e.detail(), "cannot measure the storage's headroom");
                None
            }
        };
        self.metrics.headroom.set(headroom.map(|h| i64::try_from(h).unwrap_or(i64::MAX)).unwrap_or(-1));
        match headroom {
            Some(h) if h < reserve => self.low.store(true, Ordering::Relaxed),
            Some(_) => {
                self.low.store(false, Ordering::Relaxed);
                // Space came back: the next write will tell if it is still full; assume not.
                self.full.store(false, Ordering::Relaxed);
            }
            None => self.low.store(false, Ordering::Relaxed),
        }
        self.settle(headroom, reserve);
        headroom
    }

    /// Refuses `what` (a new room, an upload or one of its parts) that would take the storage
    /// below the reserve: `needs` bytes must fit above it.
    pub(crate) async fn reserve(&self, state: &AppState, what: &'static str, needs: u64) -> AppResult<()> {
        let reserve = state.0.config.server.storage_reserve_bytes;
        let headroom = self.measure(state).await;
        let fits = headroom.is_none_or(|h| h >= reserve.saturating_add(needs));
        if fits && !self.full.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.metrics.refusals.get_or_create(&vec![("what", what)]).inc();
        Err(ServerRefusal::StorageLow { what }.into())
    }

    /// `/healthz`'s view: measures, then answers what is wrong, if anything.
    pub(crate) async fn health(&self, state: &AppState) -> Option<Degraded> {
        let headroom = self.measure(state).await;
        let reserve = state.0.config.server.storage_reserve_bytes;
        let left = headroom.map(|h| format!("{h} bytes left")).unwrap_or_else(|| "free space unknown".into());
        match self.level() {
            Level::Ok => None,
            Level::Low => Some(Degraded {
                reason: "storage_low",
                message: format!(
                    "storage is below the reserve ({left}, reserve {reserve} bytes): new rooms and uploads are refused"
                ),
            }),
            Level::Full => Some(Degraded {
                reason: "storage_full",
                message: format!("storage is full ({left}): writes are refused with 507 storage_full"),
            }),
        }
    }
}

/// A failed write of a blob's bytes: `storage_full` when the disk is full (the request is
/// answered as a full store's write is), else an internal error with `context`.
pub(crate) fn blob_write_error(context: &str, e: object_store::Error) -> AppError {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(err) = next {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::StorageFull || io.raw_os_error() == Some(ENOSPC) {
                return store_full();
            }
        }
        next = err.source();
    }
    AppError::internal(context, e)
}

/// `ENOSPC` on Linux and the BSDs.
const ENOSPC: i32 = 28;

/// The answer to a write refused because the storage is full.
pub(crate) fn store_full() -> AppError {
    ServerRefusal::StorageFull.into()
}

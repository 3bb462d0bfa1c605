//! Prometheus metrics, owned by the server state (no global registry).

use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// The server's metrics.
pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    entries: Family<Labels, Counter>,
    commits_rejected: Family<Labels, Counter>,
    fault_reports: Family<Labels, Counter>,
    push_connections: Gauge,
    tracked_identities: Gauge,
    storage_latency: Family<Labels, Histogram>,
    files: crate::files::FileMetrics,
    storage: crate::storage::StorageWatch,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every grove metric.
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("grove");
        let requests = Family::<Labels, Counter>::default();
        registry.register("http_requests", "HTTP requests by route, method and status", requests.clone());
        let entries = Family::<Labels, Counter>::default();
        registry.register("entries_appended", "Room-log entries appended, by kind", entries.clone());
        let commits_rejected = Family::<Labels, Counter>::default();
        registry.register(
            "commits_rejected",
            "Commits and proposals rejected, by error code",
            commits_rejected.clone(),
        );
        let fault_reports = Family::<Labels, Counter>::default();
        registry.register(
            "fault_reports",
            "Members' reports of commits they cannot process, by outcome (recorded, voided, false)",
            fault_reports.clone(),
        );
        let push_connections = Gauge::default();
        registry.register("push_connections", "Open push WebSocket connections", push_connections.clone());
        let tracked_identities = Gauge::default();
        registry.register(
            "tracked_identities",
            "Identities, addresses and pairs of them with rate-limit, quota or mailbox-watch state in memory",
            tracked_identities.clone(),
        );
        let storage_latency = Family::<Labels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
        });
        registry.register("storage_seconds", "Storage operation latency, by operation", storage_latency.clone());
        let files = crate::files::FileMetrics::register(&mut registry);
        let storage = crate::storage::StorageWatch::register(&mut registry);
        Metrics {
            registry,
            requests,
            entries,
            commits_rejected,
            fault_reports,
            push_connections,
            tracked_identities,
            storage_latency,
            files,
            storage,
        }
    }

    /// Counts one answered request. `route` is a route template (or `unmatched`); a method
    /// outside the standard ones is counted as `other`, so a client cannot add series.
    pub(crate) fn request(&self, route: &str, method: &str, status: u16) {
        self.requests
            .get_or_create(&vec![
                ("route", route.to_string()),
                ("method", method_label(method).to_string()),
                ("status", status.to_string()),
            ])
            .inc();
    }

    /// Counts one appended entry.
    pub(crate) fn entry_appended(&self, kind: &str) {
        self.entries.get_or_create(&vec![("kind", kind.to_string())]).inc();
    }

    /// Counts one rejected handshake message.
    pub(crate) fn commit_rejected(&self, code: &str) {
        self.commits_rejected.get_or_create(&vec![("code", code.to_string())]).inc();
    }

    /// Counts one fault report by its outcome.
    pub(crate) fn fault_report(&self, outcome: &'static str) {
        self.fault_reports.get_or_create(&vec![("outcome", outcome.to_string())]).inc();
    }

    /// Tracks open push connections.
    pub(crate) fn push_connections(&self) -> &Gauge {
        &self.push_connections
    }

    /// Identities with per-identity state in memory (set when `/metrics` is read).
    pub(crate) fn tracked_identities(&self) -> &Gauge {
        &self.tracked_identities
    }

    /// Records a storage operation's latency.
    pub(crate) fn storage(&self, op: &'static str, took: Duration) {
        self.storage_latency.get_or_create(&vec![("op", op.to_string())]).observe(took.as_secs_f64());
    }

    /// The blob store's metrics.
    pub(crate) fn files(&self) -> &crate::files::FileMetrics {
        &self.files
    }

    /// The storage watch (exhaustion, reserve), with its metrics.
    pub(crate) fn storage_watch(&self) -> &crate::storage::StorageWatch {
        &self.storage
    }

    /// The text exposition format.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// The `method` label: one of the standard HTTP methods, or `other`.
fn method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 9] = ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"];
    KNOWN.iter().find(|m| **m == method).copied().unwrap_or("other")
}

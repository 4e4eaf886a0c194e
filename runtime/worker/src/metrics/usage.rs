//! The usage counters of `/metrics` ([`UsageMetrics`]): what [`crate::usage`] counts for each
//! usage record it writes, registered with the rest of the worker's metrics.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use wasm_sandbox_usage::UsageRecord;

/// Labels of the usage counters: the environment only (bounded: one per worker).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EnvironmentLabels {
    /// `env_…`.
    pub environment: String,
}

type FloatCounter = Counter<f64, AtomicU64>;

/// The usage counters of `/metrics` (registered by [`crate::metrics::Metrics`]).
#[derive(Clone, Debug, Default)]
pub struct UsageMetrics {
    /// Usage records written.
    pub sessions: Family<EnvironmentLabels, Counter>,
    /// CPU-seconds (bash + wasm tools + `wasm-run`).
    pub cpu_seconds: Family<EnvironmentLabels, FloatCounter>,
    /// Active tool seconds.
    pub active_seconds: Family<EnvironmentLabels, FloatCounter>,
    /// Bytes sent by sessions through their egress proxy.
    pub network_sent_bytes: Family<EnvironmentLabels, Counter>,
    /// Bytes received by sessions through their egress proxy.
    pub network_received_bytes: Family<EnvironmentLabels, Counter>,
    /// Failed ledger writes and syncs, each attempt (logged).
    pub ledger_errors: Counter,
    /// Records that could not be kept for the ledger at all (logged whole).
    pub records_lost: Counter,
}

impl UsageMetrics {
    /// Registers the counters in `registry` (under the caller's prefix).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "usage_sessions",
            "Usage records written (work items of sessions served), by environment",
            self.sessions.clone(),
        );
        registry.register(
            "usage_cpu_seconds",
            "CPU-seconds of sessions (bash cgroup, wasm tools, wasm-run), by environment",
            self.cpu_seconds.clone(),
        );
        registry.register(
            "usage_active_seconds",
            "Active tool time of sessions (sum of tool-call wall times), by environment",
            self.active_seconds.clone(),
        );
        registry.register(
            "usage_network_sent_bytes",
            "Bytes sessions sent through their egress proxy, by environment",
            self.network_sent_bytes.clone(),
        );
        registry.register(
            "usage_network_received_bytes",
            "Bytes sessions received through their egress proxy, by environment",
            self.network_received_bytes.clone(),
        );
        registry.register(
            "usage_ledger_errors",
            "Failed usage ledger writes and syncs (each attempt)",
            self.ledger_errors.clone(),
        );
        registry.register(
            "usage_records_lost",
            "Usage records that could not be kept for the ledger (each logged whole at error level)",
            self.records_lost.clone(),
        );
    }

    pub(crate) fn add(&self, record: &UsageRecord) {
        let l = EnvironmentLabels {
            environment: record.environment_id.clone(),
        };
        self.sessions.get_or_create(&l).inc();
        self.cpu_seconds.get_or_create(&l).inc_by(record.cpu.total);
        self.active_seconds
            .get_or_create(&l)
            .inc_by(record.active_ms as f64 / 1000.0);
        if let Some(n) = record.network {
            self.network_sent_bytes.get_or_create(&l).inc_by(n.bytes_up);
            self.network_received_bytes
                .get_or_create(&l)
                .inc_by(n.bytes_down);
        }
    }
}

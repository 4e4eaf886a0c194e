//! Prometheus metrics of the worker (served by [`crate::ops`] at `/metrics`).
//!
//! Labels carry only bounded, non-secret values: tool names (only the six sandbox tools are
//! ever recorded), fixed outcome words, and work-item kinds (`session`/`other`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of `tool_calls_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ToolLabels {
    /// Tool name.
    pub tool: String,
    /// `ok`, `error`, `timeout`, `denied`, `cancelled`, `not_posted`.
    pub outcome: String,
}

/// Labels of `tool_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ToolNameLabels {
    /// Tool name.
    pub tool: String,
}

/// Labels of `claims_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// `session` or `other`.
    pub kind: String,
}

/// Labels of `polls_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `work`, `empty`, `error`.
    pub result: String,
}

type HistogramCtor = fn() -> Histogram;

fn tool_histogram() -> Histogram {
    // 1 ms … ~33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// All worker metrics, registered under the `wasm_sandbox` prefix.
pub struct Metrics {
    registry: Registry,
    /// Sessions being served now.
    pub sessions_active: Gauge,
    /// Work items claimed (acked), by kind.
    pub claims: Family<KindLabels, Counter>,
    /// Polls, by result.
    pub polls: Family<ResultLabels, Counter>,
    /// Tool calls, by tool and outcome.
    pub tool_calls: Family<ToolLabels, Counter>,
    /// Tool execution time, by tool.
    pub tool_duration: Family<ToolNameLabels, Histogram, HistogramCtor>,
    /// Claim → sandbox ready.
    pub session_cold_start: Histogram,
    /// Failed heartbeats (any cause).
    pub heartbeat_failures: Counter,
    /// Leases lost (412) or assumed lost (no good beat for a TTL).
    pub lease_losses: Counter,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        let mut root = Registry::default();
        let registry = root.sub_registry_with_prefix("wasm_sandbox");
        let sessions_active = Gauge::default();
        registry.register(
            "sessions_active",
            "Sessions being served now",
            sessions_active.clone(),
        );
        let claims = Family::<KindLabels, Counter>::default();
        registry.register("claims", "Work items claimed and acked", claims.clone());
        let polls = Family::<ResultLabels, Counter>::default();
        registry.register("polls", "Work queue polls by result", polls.clone());
        let tool_calls = Family::<ToolLabels, Counter>::default();
        registry.register(
            "tool_calls",
            "Sandbox tool calls by tool and outcome",
            tool_calls.clone(),
        );
        let tool_duration: Family<ToolNameLabels, Histogram, HistogramCtor> =
            Family::new_with_constructor(tool_histogram);
        registry.register(
            "tool_duration_seconds",
            "Sandbox tool call execution time",
            tool_duration.clone(),
        );
        let session_cold_start = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "session_cold_start_seconds",
            "Time from claiming a session to its sandbox being ready",
            session_cold_start.clone(),
        );
        let heartbeat_failures = Counter::default();
        registry.register(
            "heartbeat_failures",
            "Failed lease heartbeats",
            heartbeat_failures.clone(),
        );
        let lease_losses = Counter::default();
        registry.register(
            "lease_losses",
            "Leases lost (412) or assumed lost",
            lease_losses.clone(),
        );
        Metrics {
            registry: root,
            sessions_active,
            claims,
            polls,
            tool_calls,
            tool_duration,
            session_cold_start,
            heartbeat_failures,
            lease_losses,
        }
    }

    /// Counts one tool call.
    pub fn tool_call(&self, tool: &str, outcome: &str) {
        self.tool_calls
            .get_or_create(&ToolLabels {
                tool: tool.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Records a tool's execution time.
    pub fn tool_time(&self, tool: &str, seconds: f64) {
        self.tool_duration
            .get_or_create(&ToolNameLabels {
                tool: tool.to_owned(),
            })
            .observe(seconds);
    }

    /// Counts a poll.
    pub fn poll(&self, result: &str) {
        self.polls
            .get_or_create(&ResultLabels {
                result: result.to_owned(),
            })
            .inc();
    }

    /// Counts a claim.
    pub fn claim(&self, kind: &str) {
        self.claims
            .get_or_create(&KindLabels {
                kind: kind.to_owned(),
            })
            .inc();
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "metrics encoding failed");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_every_metric() {
        let m = Metrics::new();
        m.tool_call("bash", "ok");
        m.tool_time("bash", 0.01);
        m.claim("session");
        m.poll("empty");
        m.sessions_active.inc();
        m.session_cold_start.observe(0.002);
        m.heartbeat_failures.inc();
        m.lease_losses.inc();
        let text = m.encode();
        for needle in [
            "wasm_sandbox_sessions_active 1",
            r#"wasm_sandbox_tool_calls_total{tool="bash",outcome="ok"} 1"#,
            r#"wasm_sandbox_tool_duration_seconds_count{tool="bash"} 1"#,
            r#"wasm_sandbox_claims_total{kind="session"} 1"#,
            r#"wasm_sandbox_polls_total{result="empty"} 1"#,
            "wasm_sandbox_session_cold_start_seconds_count 1",
            "wasm_sandbox_heartbeat_failures_total 1",
            "wasm_sandbox_lease_losses_total 1",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }
}

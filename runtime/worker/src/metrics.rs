//! Prometheus metrics of the worker (served by [`crate::ops`] at `/metrics`).
//!
//! Labels carry only bounded, non-secret values: tool names (only the six sandbox tools are
//! ever recorded), fixed outcome words, work-item kinds (`session`/`other`), and the build
//! facts of `wasm_sandbox_build_info` (version, commit, rustc and wasmtime versions, fixed at
//! build time).
//!
//! Durations are histograms with buckets from 10 µs to ~168 s ([`duration_buckets`]): a file
//! tool call takes ~0.1 ms and a session is ready in ~0.12 ms, a bash call may take minutes.
//!
//! `wasm_sandbox_queue_depth` (and `_queue_pending`) are the environment's `work.stats`, the
//! same value on every replica, set by [`crate::ops::QueueCache`] whenever it gets an answer
//! (the ops server refreshes it every [`crate::ops::QUEUE_REFRESH`], and `/queue` GETs share
//! the same cache, so exporting it never adds upstream calls beyond the cache's one per TTL).
//! The Prometheus KEDA alternative in `deploy/` queries it.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

mod usage;
pub use usage::{EnvironmentLabels, UsageMetrics};

/// Labels of `tool_calls_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ToolLabels {
    /// Tool name.
    pub tool: String,
    /// `ok`, `error`, `timeout`, `denied`, `cancelled`, `not_posted`.
    pub outcome: String,
}

/// Labels of `shape_limit_active`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShapeLabels {
    /// `cpu`, `memory`, `pids`, `disk`.
    pub limit: String,
    /// `cgroup-v2`, `cgroup-v1`, `rlimit`, `none`.
    pub mechanism: String,
}

/// Labels of `shape_session_fallbacks_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    /// `cpu`, `memory`, `pids`.
    pub limit: String,
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

/// Labels of `session_snapshots_total` (`[runtime.persistence]`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SnapshotLabels {
    /// `save` (item end or checkpoint) or `restore`.
    pub op: String,
    /// `ok`, `empty` (nothing to restore), `too_large`, `conflict` (lost the generation CAS),
    /// `skipped` (not saved: the item's restore failed without proving the stored snapshot
    /// bad), `failed`.
    pub result: String,
}

/// Labels of `build_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    /// The crate version.
    pub version: String,
    /// The git commit built (`unknown` when built outside a checkout without
    /// `WASM_SANDBOX_GIT_COMMIT`).
    pub commit: String,
    /// `rustc --version` of the compiler used.
    pub rustc: String,
    /// The wasmtime version linked.
    pub wasmtime: String,
}

impl BuildLabels {
    /// This build's facts (set by the crate's build script).
    pub fn current() -> BuildLabels {
        BuildLabels {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            commit: env!("WASM_SANDBOX_GIT_COMMIT").to_owned(),
            rustc: env!("WASM_SANDBOX_RUSTC_VERSION").to_owned(),
            wasmtime: env!("WASM_SANDBOX_WASMTIME_VERSION").to_owned(),
        }
    }
}

type HistogramCtor = fn() -> Histogram;

/// Bucket bounds of every duration histogram: 10 µs doubling 25 times, to ~168 s.
pub fn duration_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(1e-5, 2.0, 25)
}

fn tool_histogram() -> Histogram {
    Histogram::new(duration_buckets())
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
    /// The environment's queue depth (`work.stats` `depth`), from the most recent answer.
    pub queue_depth: Gauge,
    /// Items claimed but not yet acked (`work.stats` `pending`), from the most recent answer.
    pub queue_pending: Gauge,
    /// Constant 1, labelled with the build's facts.
    pub build_info: Family<BuildLabels, Gauge>,
    /// Usage records: sessions, CPU and active seconds, network bytes, by environment
    /// ([`crate::usage`]).
    pub usage: UsageMetrics,
    /// Session snapshots saved and restored, by outcome ([`crate::persist`]).
    pub session_snapshots: Family<SnapshotLabels, Counter>,
    /// 1 per limit of the session shape enforced for the whole session, 0 otherwise
    /// (see [`Metrics::shape_limits`]).
    pub shape_limit_active: Family<ShapeLabels, Gauge>,
    /// Sessions launched without a limit their cgroup should have had (best effort;
    /// under `required` the launch fails), synced from
    /// [`wasm_sandbox_native::cgroup::session_fallbacks`] at each scrape.
    pub shape_session_fallbacks: Family<LimitLabels, Counter>,
    /// Egress proxy decisions over all sessions (`decision` = `allowed`, `denied`,
    /// `error`), synced from [`wasm_sandbox_egress::stats`] at each scrape.
    pub egress_requests: Family<EgressDecisionLabels, Counter>,
    /// Bytes through the egress proxies (`direction` = `up`, `down`).
    pub egress_bytes: Family<EgressDirectionLabels, Counter>,
}

/// Labels of `egress_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EgressDecisionLabels {
    /// `allowed`, `denied`, `error`.
    pub decision: String,
}

/// Labels of `egress_bytes_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EgressDirectionLabels {
    /// `up` (to destinations) or `down`.
    pub direction: String,
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
        let session_cold_start = Histogram::new(duration_buckets());
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
        let queue_depth = Gauge::default();
        registry.register(
            "queue_depth",
            "Items waiting in the environment's work queue (work.stats depth; same on every replica)",
            queue_depth.clone(),
        );
        let queue_pending = Gauge::default();
        registry.register(
            "queue_pending",
            "Items claimed but not yet acked (work.stats pending)",
            queue_pending.clone(),
        );
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info.get_or_create(&BuildLabels::current()).set(1);
        registry.register(
            "build_info",
            "Build facts of this worker (value 1)",
            build_info.clone(),
        );
        let shape_limit_active = Family::<ShapeLabels, Gauge>::default();
        registry.register(
            "shape_limit_active",
            "Session shape limits: 1 when the limit is enforced for the whole session by the named mechanism, 0 when configured but not (or only per process)",
            shape_limit_active.clone(),
        );
        let shape_session_fallbacks = Family::<LimitLabels, Counter>::default();
        registry.register(
            "shape_session_fallbacks",
            "Sessions whose cgroup did not get a configured limit at launch (enforce = best-effort; the rlimit fallback applied), by limit",
            shape_session_fallbacks.clone(),
        );
        let usage = UsageMetrics::default();
        usage.register(registry);
        let session_snapshots = Family::<SnapshotLabels, Counter>::default();
        registry.register(
            "session_snapshots",
            "Session workspace snapshots saved and restored, by outcome",
            session_snapshots.clone(),
        );
        let egress_requests = Family::<EgressDecisionLabels, Counter>::default();
        registry.register(
            "egress_requests",
            "Network egress proxy decisions over all sessions",
            egress_requests.clone(),
        );
        let egress_bytes = Family::<EgressDirectionLabels, Counter>::default();
        registry.register(
            "egress_bytes",
            "Bytes through the network egress proxies, by direction",
            egress_bytes.clone(),
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
            queue_depth,
            queue_pending,
            build_info,
            usage,
            session_snapshots,
            shape_limit_active,
            shape_session_fallbacks,
            egress_requests,
            egress_bytes,
        }
    }

    /// Brings the egress counters up to the process-wide totals (they live in
    /// the egress crate, which cannot see this registry).
    fn sync_egress(&self) {
        let s = wasm_sandbox_egress::stats();
        let bump = |c: &Counter, total: u64| {
            let now = c.get();
            if total > now {
                c.inc_by(total - now);
            }
        };
        for (decision, total) in [
            ("allowed", s.allowed),
            ("denied", s.denied),
            ("error", s.errors),
        ] {
            let labels = EgressDecisionLabels {
                decision: decision.to_owned(),
            };
            bump(&self.egress_requests.get_or_create(&labels), total);
        }
        for (direction, total) in [("up", s.bytes_up), ("down", s.bytes_down)] {
            let labels = EgressDirectionLabels {
                direction: direction.to_owned(),
            };
            bump(&self.egress_bytes.get_or_create(&labels), total);
        }
    }

    /// Records which limits of the session shape are active (configured limits only).
    pub fn shape_limits(&self, shape: &wasm_sandbox_native::ShapeReport) {
        for l in shape.limits.iter().filter(|l| l.value.is_some()) {
            let labels = ShapeLabels {
                limit: l.limit.to_owned(),
                mechanism: l.mechanism.as_str().to_owned(),
            };
            self.shape_limit_active
                .get_or_create(&labels)
                .set(i64::from(l.active()));
        }
    }

    /// Records a `work.stats` answer.
    pub fn queue_stats(&self, stats: &crate::proto::QueueStats) {
        let clamp = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.queue_depth.set(clamp(stats.depth));
        self.queue_pending.set(clamp(stats.pending));
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
        self.sync_egress();
        for (limit, total) in wasm_sandbox_native::cgroup::session_fallbacks() {
            let c = self.shape_session_fallbacks.get_or_create(&LimitLabels {
                limit: limit.to_owned(),
            });
            if total > c.get() {
                c.inc_by(total - c.get());
            }
        }
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
        m.queue_stats(&crate::proto::QueueStats {
            depth: 7,
            pending: 2,
            ..Default::default()
        });
        let text = m.encode();
        for needle in [
            "wasm_sandbox_sessions_active 1",
            // Always present (zero until a session uses a proxy), no session label.
            r#"wasm_sandbox_egress_requests_total{decision="denied"}"#,
            r#"wasm_sandbox_egress_bytes_total{direction="down"}"#,
            r#"wasm_sandbox_tool_calls_total{tool="bash",outcome="ok"} 1"#,
            r#"wasm_sandbox_tool_duration_seconds_count{tool="bash"} 1"#,
            r#"wasm_sandbox_claims_total{kind="session"} 1"#,
            r#"wasm_sandbox_polls_total{result="empty"} 1"#,
            "wasm_sandbox_session_cold_start_seconds_count 1",
            "wasm_sandbox_heartbeat_failures_total 1",
            "wasm_sandbox_lease_losses_total 1",
            "wasm_sandbox_queue_depth 7",
            "wasm_sandbox_queue_pending 2",
            "wasm_sandbox_build_info{version=",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }

    /// Issue 17: buckets started at 1 ms, so a 0.1 ms file tool call and a 0.12 ms session
    /// start both fell in the first bucket. Now they resolve from 10 µs to 100 s.
    #[test]
    fn buckets_resolve_10us_to_100s() {
        let b: Vec<f64> = duration_buckets().collect();
        assert!(b[0] <= 1e-5, "{b:?}");
        assert!(*b.last().unwrap() >= 100.0, "{b:?}");
        let m = Metrics::new();
        m.tool_time("read", 0.000_1);
        m.session_cold_start.observe(0.000_12);
        let text = m.encode();
        // (le, cumulative count) of each bucket of `name`.
        let buckets = |name: &str| -> Vec<(f64, u64)> {
            text.lines()
                .filter(|l| l.starts_with(name))
                .filter_map(|l| {
                    let le = l.split("le=\"").nth(1)?.split('"').next()?;
                    let count = l.rsplit(' ').next()?.parse().ok()?;
                    Some((le.parse().unwrap_or(f64::INFINITY), count))
                })
                .collect()
        };
        for (name, value) in [
            ("wasm_sandbox_tool_duration_seconds_bucket", 0.000_1),
            ("wasm_sandbox_session_cold_start_seconds_bucket", 0.000_12),
        ] {
            let b = buckets(name);
            let below = b.iter().filter(|(le, _)| *le < value).collect::<Vec<_>>();
            // Three or more buckets under the observation, all empty: it is resolved.
            assert!(below.len() >= 3, "{name}: {b:?}");
            assert!(below.iter().all(|(_, c)| *c == 0), "{name}: {b:?}");
            assert!(
                b.iter()
                    .filter(|(le, _)| *le >= value)
                    .all(|(_, c)| *c == 1),
                "{name}: {b:?}"
            );
        }
        let labels = BuildLabels::current();
        assert_eq!(labels.version, env!("CARGO_PKG_VERSION"));
        assert!(labels.wasmtime.starts_with("48."), "{labels:?}");
    }
}

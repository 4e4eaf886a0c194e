//! The work-item lease and its heartbeat loop (protocol §3.4, §4.3, Errata).
//!
//! The first beat goes out at once with `expected_last_heartbeat=NO_HEARTBEAT`; each later
//! beat echoes the `last_heartbeat` string the server returned. Each beat is bounded in time,
//! never retried inside the client, and the loop keeps a deadline of *last good beat + TTL*:
//!
//! * 200 with `state` `stopping`/`stopped` or `lease_extended: false` ⇒
//!   [`LeaseEnd::HeartbeatStop`] (the item is force-stopped afterwards);
//! * 412 ⇒ [`LeaseEnd::LeaseLost`]: another worker may hold the item, so this worker must not
//!   stop it, and posts nothing more for it;
//! * another fatal 4xx ⇒ [`LeaseEnd::HeartbeatRejected`] (force-stopped);
//! * transient failures until the deadline ⇒ [`LeaseEnd::AssumedLost`] (not stopped).
//!
//! Departing from the SDK where the Errata show it is late to notice a lost lease: beats go out
//! every `min(ttl/3, 30 s)` (not `ttl/2`), the "last good beat" time is when the successful
//! request was *sent* (so the deadline is never later than the server's), and the lease counts
//! as lost once the deadline passes, not one interval later.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::client::ItemClient;
use crate::metrics::Metrics;
use crate::proto::NO_HEARTBEAT;

/// Why a lease ended. The first recorded reason wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseEnd {
    /// The session run ended first; the lease was held throughout.
    RunnerDone,
    /// The heartbeat said `stopping`/`stopped`, or did not extend the lease.
    HeartbeatStop,
    /// A heartbeat met a fatal 4xx other than 412.
    HeartbeatRejected,
    /// A heartbeat met 412: the item was re-queued or another worker holds it.
    LeaseLost,
    /// No heartbeat succeeded for a full TTL.
    AssumedLost,
}

impl LeaseEnd {
    /// Short name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseEnd::RunnerDone => "runner_done",
            LeaseEnd::HeartbeatStop => "heartbeat_stop",
            LeaseEnd::HeartbeatRejected => "heartbeat_rejected",
            LeaseEnd::LeaseLost => "lease_lost",
            LeaseEnd::AssumedLost => "assumed_lost",
        }
    }
}

/// This worker's view of one lease.
#[derive(Debug, Default)]
pub struct Lease {
    reason: Mutex<Option<LeaseEnd>>,
    ended: CancellationToken,
    ttl_ms: AtomicU64,
}

impl Lease {
    /// A live lease.
    pub fn new() -> Lease {
        Lease::default()
    }

    /// Ends the lease (first reason wins).
    pub fn finish(&self, reason: LeaseEnd) {
        if let Ok(mut r) = self.reason.lock()
            && r.is_none()
        {
            *r = Some(reason);
        }
        self.ended.cancel();
    }

    /// Why it ended, if it has.
    pub fn end_reason(&self) -> Option<LeaseEnd> {
        self.reason.lock().ok().and_then(|r| *r)
    }

    /// Whether the item now belongs to the queue or another worker (do not stop it, post
    /// nothing more).
    pub fn lost(&self) -> bool {
        matches!(
            self.end_reason(),
            Some(LeaseEnd::LeaseLost | LeaseEnd::AssumedLost)
        )
    }

    /// Cancelled once the lease ends.
    pub fn ended(&self) -> &CancellationToken {
        &self.ended
    }

    /// The latest server-reported TTL.
    pub fn ttl(&self) -> Option<Duration> {
        match self.ttl_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    fn set_ttl(&self, ttl: Duration) {
        self.ttl_ms
            .store(ttl.as_millis().max(1) as u64, Ordering::Relaxed);
    }
}

/// Heartbeat timing.
#[derive(Clone, Debug)]
pub struct HeartbeatConfig {
    /// Interval cap and the interval before the server reports a TTL (SDK: 30 s).
    pub max_interval: Duration,
    /// Floor of the interval.
    pub min_interval: Duration,
    /// TTL assumed before the first successful beat (SDK: 90 s).
    pub initial_ttl: Duration,
}

impl Default for HeartbeatConfig {
    fn default() -> HeartbeatConfig {
        HeartbeatConfig {
            max_interval: Duration::from_secs(30),
            min_interval: Duration::from_millis(500),
            initial_ttl: Duration::from_secs(90),
        }
    }
}

impl HeartbeatConfig {
    /// Interval for a TTL: `clamp(ttl/3, min_interval, max_interval)`.
    pub fn interval_for(&self, ttl: Duration) -> Duration {
        (ttl / 3).clamp(self.min_interval, self.max_interval.max(self.min_interval))
    }
}

/// Heartbeats `client`'s item until `lease` ends; ends it itself on a stop signal, a rejected or
/// lost lease, or a TTL without a good beat.
pub async fn heartbeat_loop(
    client: &ItemClient,
    lease: &Lease,
    config: &HeartbeatConfig,
    metrics: &Metrics,
) {
    let mut last = NO_HEARTBEAT.to_owned();
    let mut ttl = config.initial_ttl;
    let mut interval = config.max_interval;
    let mut last_good = Instant::now();
    loop {
        if lease.ended().is_cancelled() {
            return;
        }
        let deadline = last_good + ttl;
        let now = Instant::now();
        if now >= deadline {
            tracing::error!(
                ttl_s = ttl.as_secs_f64(),
                "lease assumed lost: no successful heartbeat within the lease TTL"
            );
            metrics.lease_losses.inc();
            lease.finish(LeaseEnd::AssumedLost);
            return;
        }
        let bound = interval.min(deadline - now);
        let sent_at = Instant::now();
        let result = tokio::select! {
            () = lease.ended().cancelled() => return,
            r = client.heartbeat(&last, bound) => r,
        };
        match result {
            Ok(resp) => {
                last = resp.last_heartbeat.clone();
                last_good = sent_at;
                if resp.ttl_seconds > 0 {
                    ttl = Duration::from_secs(resp.ttl_seconds.unsigned_abs());
                    interval = config.interval_for(ttl);
                    lease.set_ttl(ttl);
                }
                tracing::debug!(state = %resp.state, ttl_s = resp.ttl_seconds, "heartbeat");
                if resp.state.is_stopping() || !resp.lease_extended {
                    tracing::info!(
                        state = %resp.state,
                        lease_extended = resp.lease_extended,
                        "heartbeat signals shutdown"
                    );
                    lease.finish(LeaseEnd::HeartbeatStop);
                    return;
                }
            }
            Err(e) if e.status() == Some(412) => {
                metrics.heartbeat_failures.inc();
                metrics.lease_losses.inc();
                let server = e.lease_state().unwrap_or_default();
                tracing::error!(
                    server_state = ?server.state,
                    server_ttl_seconds = ?server.ttl_seconds,
                    server_last_heartbeat = ?server.last_heartbeat,
                    "lease lost: heartbeat precondition failed"
                );
                lease.finish(LeaseEnd::LeaseLost);
                return;
            }
            Err(e) if e.is_fatal() => {
                metrics.heartbeat_failures.inc();
                tracing::error!(error = %e, "permanent heartbeat failure");
                lease.finish(LeaseEnd::HeartbeatRejected);
                return;
            }
            Err(e) => {
                metrics.heartbeat_failures.inc();
                tracing::warn!(error = %e, "transient heartbeat failure");
            }
        }
        let deadline = last_good + ttl;
        let wait = interval.min(deadline.saturating_duration_since(Instant::now()));
        tokio::select! {
            () = lease.ended().cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_reason_wins() {
        let l = Lease::new();
        assert!(!l.ended().is_cancelled());
        l.finish(LeaseEnd::LeaseLost);
        l.finish(LeaseEnd::RunnerDone);
        assert_eq!(l.end_reason(), Some(LeaseEnd::LeaseLost));
        assert!(l.lost());
        assert!(l.ended().is_cancelled());
        let l = Lease::new();
        l.finish(LeaseEnd::HeartbeatStop);
        assert!(!l.lost());
    }

    #[test]
    fn interval_follows_ttl() {
        let c = HeartbeatConfig::default();
        assert_eq!(
            c.interval_for(Duration::from_secs(90)),
            Duration::from_secs(30)
        );
        assert_eq!(
            c.interval_for(Duration::from_secs(300)),
            Duration::from_secs(30)
        );
        assert_eq!(
            c.interval_for(Duration::from_secs(6)),
            Duration::from_secs(2)
        );
        assert_eq!(
            c.interval_for(Duration::from_secs(1)),
            Duration::from_millis(500)
        );
    }
}

//! What a session's bash shells have used ([`UsageHandle`]): the counters of shells already
//! ended plus the live shells' cgroups, shared by the session and its running shell.

use std::sync::{Arc, Mutex};

use crate::cgroup::{ResourceUsage, UsageProbe};

/// A session's resource usage, readable without the session's lock (a bash call may be
/// in flight): the counters of shells already ended, plus the live shells' cgroups.
/// Cloned from [`BashSession::usage_handle`](crate::session::BashSession::usage_handle);
/// valid after [`BashSession::close`](crate::session::BashSession::close), which
/// keeps the last reading.
///
/// Each shell's cgroups are counted exactly once, either live or past: the teardown
/// moves a shell from `live` to `past` in one step under the lock, with a last reading
/// taken in that step and before the cgroups are removed
/// ([`SessionCgroup::remove_with`](crate::cgroup::SessionCgroup::remove_with)). The
/// move runs in the teardown's blocking task (or the thread of `Shell`'s `Drop`), not
/// in the future awaiting it, so a teardown cancelled by a caller's timeout or a close
/// cannot drop the runaway shell's CPU from the bill, and a concurrent reading never
/// sees the shell in neither place (the live cgroup already gone, the past not yet
/// updated).
#[derive(Clone, Debug, Default)]
pub struct UsageHandle(Arc<Mutex<UsageState>>);

#[derive(Debug, Default)]
struct UsageState {
    /// Shells already ended, summed.
    past: ResourceUsage,
    /// The cgroups of shells not yet retired: the running one, and one whose teardown
    /// was cancelled and still finishes in the background while a new shell starts.
    live: Vec<UsageProbe>,
    /// What a session that ran nothing reports: `Some(0)` where the host measures.
    zero: ResourceUsage,
}

impl UsageHandle {
    fn with<R>(&self, f: impl FnOnce(&mut UsageState) -> R) -> R {
        let mut g = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut g)
    }

    /// CPU time and peak memory of every process the session's bash sandboxes ran (all
    /// shells, restarts included), and the peak disk use. `None` = not measured here.
    pub fn get(&self) -> ResourceUsage {
        self.with(|s| {
            s.live
                .iter()
                .fold(s.zero.then(s.past), |acc, p| acc.then(p.read()))
        })
    }

    /// Sets what a session that ran nothing reports (`Some(0)` where the host measures).
    pub(crate) fn set_zero(&self, zero: ResourceUsage) {
        self.with(|s| s.zero = zero);
    }

    /// Starts counting a new shell's cgroups.
    pub(crate) fn attach(&self, probe: UsageProbe) {
        self.with(|s| s.live.push(probe));
    }

    /// Moves a shell from live to past: under the lock, takes the last reading of its
    /// cgroups (which must still exist), adds it to `past` and forgets the probe. A
    /// probe that is not live (never attached, or already retired) changes nothing, so
    /// a shell is never counted twice.
    pub(crate) fn retire(&self, probe: &UsageProbe) {
        self.with(|s| {
            if let Some(i) = s.live.iter().position(|p| p == probe) {
                s.live.swap_remove(i);
                s.past = s.past.then(probe.read());
            }
        });
    }
}

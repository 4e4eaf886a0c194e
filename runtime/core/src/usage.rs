//! A session's wasm-side accounting for its usage record: tool calls per tool, active tool
//! time, and the CPU time of the threads that ran its guest code.
//!
//! # What is measured, and why it is fair
//!
//! * **Active time** is the wall time of each tool call from the moment it holds the session's
//!   call lock (calls are serialised, so time queued behind another call is not counted twice)
//!   to its answer, including calls cut short by close or a deadline (a drop guard records them).
//!   Idle time between calls is never in it: that is the "active execution only" of billing.
//! * **wasm CPU** is `CLOCK_THREAD_CPUTIME_ID` read before and after guest code runs on a
//!   thread: a file-tool call (`read write edit glob grep`, instantiation included) on its
//!   blocking thread, and a `wasm-run` component on its bridge thread. Guest code runs
//!   synchronously on that thread (wasmtime does not move it), so the difference is exactly the
//!   CPU the guest and its host calls used, and no other session's work. CPU of bash and its
//!   children is the cgroup's (read by the worker from the native layer), not counted here.
//! * Tool names are counted only for the sandbox tools (the only names that reach here), so a
//!   session cannot grow the map with names of its choosing.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::tool::Tool;

/// CPU time this thread has used so far (`CLOCK_THREAD_CPUTIME_ID`).
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own; the clock id is a constant.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// Where guest CPU was spent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CpuKind {
    /// The file-tools component.
    Tools,
    /// A `wasm-run` component.
    Run,
}

/// One session's counters (shared by its calls, bridge threads and blocking threads).
#[derive(Debug, Default)]
pub(crate) struct SessionAccount {
    tool_calls: Mutex<BTreeMap<&'static str, u64>>,
    active_ns: AtomicU64,
    tools_cpu_ns: AtomicU64,
    run_cpu_ns: AtomicU64,
}

impl SessionAccount {
    /// Counts one call of `name` (sandbox tools only).
    pub fn count_call(&self, name: &str) {
        if let Some(tool) = Tool::from_name(name)
            && let Ok(mut m) = self.tool_calls.lock()
        {
            *m.entry(tool.name()).or_default() += 1;
        }
    }

    /// Starts timing a call; the time is added when the guard drops.
    pub fn active(&self) -> ActiveGuard<'_> {
        ActiveGuard {
            account: self,
            started: Instant::now(),
        }
    }

    /// Runs `f` and adds the CPU time this thread spent in it.
    pub fn measure<T>(&self, kind: CpuKind, f: impl FnOnce() -> T) -> T {
        let before = thread_cpu_time();
        let out = f();
        let used = thread_cpu_time().saturating_sub(before);
        let counter = match kind {
            CpuKind::Tools => &self.tools_cpu_ns,
            CpuKind::Run => &self.run_cpu_ns,
        };
        counter.fetch_add(nanos(used), Ordering::Relaxed);
        out
    }

    /// The counters now.
    pub fn snapshot(&self) -> WasmUsage {
        WasmUsage {
            tool_calls: self
                .tool_calls
                .lock()
                .map(|m| m.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect())
                .unwrap_or_default(),
            active: Duration::from_nanos(self.active_ns.load(Ordering::Relaxed)),
            wasm_tools_cpu: Duration::from_nanos(self.tools_cpu_ns.load(Ordering::Relaxed)),
            wasm_run_cpu: Duration::from_nanos(self.run_cpu_ns.load(Ordering::Relaxed)),
            nn_calls: 0,
            nn_bytes: 0,
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Adds a call's wall time to the session's active time when dropped.
pub(crate) struct ActiveGuard<'a> {
    account: &'a SessionAccount,
    started: Instant,
}

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.account
            .active_ns
            .fetch_add(nanos(self.started.elapsed()), Ordering::Relaxed);
    }
}

/// What a session's tool calls and wasm guests used so far ([`crate::Session::wasm_usage`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WasmUsage {
    /// Calls per sandbox tool (`bash`, `read`, …).
    pub tool_calls: BTreeMap<String, u64>,
    /// Sum of the tool calls' wall times.
    pub active: Duration,
    /// CPU time of the file-tools component's threads.
    pub wasm_tools_cpu: Duration,
    /// CPU time of `wasm-run` components' threads.
    pub wasm_run_cpu: Duration,
    /// Remote wasi-nn `compute` calls.
    pub nn_calls: u64,
    /// Remote wasi-nn request plus response bytes.
    pub nn_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CPU time of this thread from `getrusage(RUSAGE_THREAD)`: an independent reading.
    fn rusage_thread() -> Duration {
        // SAFETY: an all-zero rusage is valid; getrusage fills it in.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: a valid out-pointer for the calling thread's usage.
        assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) }, 0);
        let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
        tv(ru.ru_utime) + tv(ru.ru_stime)
    }

    /// Spinning until the kernel's rusage says 200 ms of this thread's CPU went by (however
    /// busy the machine is) is measured as 200 ms; sleeping is measured as (almost) nothing.
    #[test]
    fn thread_cpu_counts_a_busy_loop_and_not_a_sleep() {
        let a = SessionAccount::default();
        let spent = a.measure(CpuKind::Tools, || {
            let start = rusage_thread();
            let mut x = 0u64;
            while rusage_thread() - start < Duration::from_millis(200) {
                for _ in 0..10_000 {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            rusage_thread() - start
        });
        a.measure(CpuKind::Run, || {
            std::thread::sleep(Duration::from_millis(200))
        });
        let s = a.snapshot();
        let diff = s.wasm_tools_cpu.abs_diff(spent);
        assert!(
            diff <= Duration::from_millis(15),
            "clock_gettime {:?} vs rusage {spent:?}",
            s.wasm_tools_cpu
        );
        assert!(
            s.wasm_run_cpu < Duration::from_millis(20),
            "{:?}",
            s.wasm_run_cpu
        );
    }

    #[test]
    fn only_sandbox_tools_are_counted() {
        let a = SessionAccount::default();
        a.count_call("bash");
        a.count_call("bash");
        a.count_call("read");
        a.count_call("not_a_tool");
        {
            let _g = a.active();
            std::thread::sleep(Duration::from_millis(20));
        }
        let s = a.snapshot();
        assert_eq!(
            s.tool_calls,
            BTreeMap::from([("bash".to_owned(), 2), ("read".to_owned(), 1)])
        );
        assert!(s.active >= Duration::from_millis(20));
    }
}

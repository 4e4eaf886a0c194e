//! A running shell and its teardown.

use std::os::fd::OwnedFd;
use std::process::Child;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;

use super::SandboxError;
use super::UsageHandle;
use super::launch::start_err;
use crate::cgroup::SessionCgroup;

/// One running shell: bubblewrap (our child) → pid-1 reaper → init → bash.
#[derive(Debug)]
pub(crate) struct Shell {
    child: Child,
    pub(crate) stdin: Option<pipe::Sender>,
    pub(crate) stdout: pipe::Receiver,
    /// Host pid and pid-namespace inode of the sandbox's pid 1.
    reaper: Option<(i32, u64)>,
    cgroup: Option<SessionCgroup>,
    /// The session account the cgroups' last reading goes to when they are removed
    /// (see [`Shell::attach_usage`]).
    usage: Option<UsageHandle>,
    unsandboxed: bool,
    terminated: bool,
}

fn pid_ns_inode(pid: i32) -> Option<u64> {
    let link = std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok()?;
    let s = link.to_str()?;
    s.strip_prefix("pid:[")?.strip_suffix(']')?.parse().ok()
}

fn parent_pid(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: parse after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(1)?.parse().ok()
}

impl Shell {
    pub(super) fn new(
        mut child: Child,
        out_r: std::io::PipeReader,
        cgroup: Option<SessionCgroup>,
        unsandboxed: bool,
    ) -> Result<Self, SandboxError> {
        let stdin = child
            .stdin
            .take()
            .map(|s| pipe::Sender::from_owned_fd(OwnedFd::from(s)))
            .transpose()
            .map_err(start_err)?;
        let stdout = pipe::Receiver::from_owned_fd(OwnedFd::from(out_r)).map_err(start_err)?;
        Ok(Self {
            child,
            stdin,
            stdout,
            reaper: None,
            cgroup,
            usage: None,
            unsandboxed,
            terminated: false,
        })
    }

    fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap_or(-1)
    }

    /// Records bubblewrap's single child: the sandbox's pid 1.
    pub(super) fn find_reaper(&mut self) {
        let pid = self.pid();
        let from_children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse().ok()));
        let reaper = from_children.or_else(|| {
            std::fs::read_dir("/proc").ok()?.find_map(|e| {
                let p: i32 = e.ok()?.file_name().to_str()?.parse().ok()?;
                (parent_pid(p) == Some(pid)).then_some(p)
            })
        });
        self.reaper = reaper.and_then(|r| pid_ns_inode(r).map(|ns| (r, ns)));
        if self.reaper.is_none() {
            tracing::warn!(
                bwrap_pid = pid,
                "cannot find the sandbox's pid 1; teardown falls back to scanning"
            );
        }
    }

    /// Host pids of every process inside the sandbox's pid namespace (for tests and
    /// diagnostics).
    pub(crate) fn processes(&self) -> Vec<i32> {
        let Some((_, ns)) = self.reaper else {
            return Vec::new();
        };
        processes_in_ns(ns)
    }

    /// Whatever the sandbox printed while failing to start.
    pub(super) async fn drain_startup_output(&mut self) -> String {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        let read = async {
            loop {
                match self.stdout.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                }
                if out.len() > 16 * 1024 {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_millis(500), read).await;
        String::from_utf8_lossy(&out).trim().to_owned()
    }

    /// Sends SIGKILL to everything without waiting (used by `Drop` and before a wait).
    fn kill_now(&mut self) {
        if self.unsandboxed {
            // SAFETY: kill(2) on the process group we created for this shell.
            unsafe { libc::kill(-self.pid(), libc::SIGKILL) };
            let _ = self.child.kill();
            return;
        }
        if let Some((reaper, ns)) = self.reaper
            && parent_pid(reaper) == Some(self.pid())
            && pid_ns_inode(reaper) == Some(ns)
        {
            // Killing the namespace's pid 1 makes the kernel kill everything inside;
            // bubblewrap then reaps it and exits.
            // SAFETY: kill(2) on a pid verified to be our bubblewrap's child.
            unsafe { libc::kill(reaper, libc::SIGKILL) };
        } else {
            let _ = self.child.kill();
        }
    }

    /// Kills bash and every descendant and waits until nothing is left; removes the
    /// session cgroups.
    pub(crate) async fn terminate(&mut self) {
        if self.terminated {
            return;
        }
        self.terminated = true;
        self.stdin = None;
        self.kill_now();
        // bubblewrap exits once its pid 1 is gone; that happens only after the kernel
        // has killed and reaped every process of the namespace.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Ok(None) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
            }
        }
        if let Some((_, ns)) = self.reaper {
            // Belt and braces: anything still in the namespace is killed.
            for _ in 0..200 {
                let left = processes_in_ns(ns);
                if left.is_empty() {
                    break;
                }
                for p in left {
                    // SAFETY: kill(2) on a process inside this session's pid namespace.
                    unsafe { libc::kill(p, libc::SIGKILL) };
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        if let Some(cg) = self.cgroup.take() {
            // The last reading is retired into the session's account inside the
            // blocking task, before the cgroups go: if this future is dropped here,
            // the task still runs to its end and nothing is lost.
            let usage = self.usage.clone();
            let removal = tokio::task::spawn_blocking(move || remove_cgroup(cg, usage.as_ref()));
            let _ = removal.await;
        }
    }

    /// Counts this shell's cgroups in `usage` from now on; their last reading moves to
    /// its past when they are removed (by [`terminate`](Self::terminate) or `Drop`).
    pub(crate) fn attach_usage(&mut self, usage: UsageHandle) {
        usage.attach(
            self.cgroup
                .as_ref()
                .map(SessionCgroup::probe)
                .unwrap_or_default(),
        );
        self.usage = Some(usage);
    }
}

/// Removes a shell's cgroups, retiring their last reading into `usage` first.
fn remove_cgroup(mut cg: SessionCgroup, usage: Option<&UsageHandle>) {
    cg.remove_with(|probe| {
        if let Some(u) = usage {
            u.retire(probe);
        }
    });
}

/// Live processes of the pid namespace `ns`. Zombies are left out: they are already
/// dead (SIGKILL cannot remove them; their parent reaps them), and counting them made
/// teardown spin for up to two seconds when an exited sandbox process was reaped late.
fn processes_in_ns(ns: u64) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| pid_ns_inode(*p) == Some(ns) && !is_zombie(*p))
        .collect()
}

/// True when the process has exited and awaits reaping (state `Z`; `X` = dead).
fn is_zombie(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return true;
    };
    let state = stat
        .rfind(')')
        .and_then(|i| stat.get(i + 2..i + 3))
        .unwrap_or("");
    matches!(state, "Z" | "X" | "")
}

impl Drop for Shell {
    fn drop(&mut self) {
        let cgroup = self.cgroup.take();
        if self.terminated && cgroup.is_none() {
            return;
        }
        // Not terminated, or a `terminate` whose future was dropped before it reached
        // the cgroups (it had already sent the kill): finish the teardown here.
        if !self.terminated {
            self.kill_now();
            let _ = self.child.kill();
        }
        // Reap bubblewrap (unless std's Child already has: then its pid may be reused)
        // and remove the cgroups, retiring their reading, off the caller's thread.
        let reap = matches!(self.child.try_wait(), Ok(None));
        let usage = self.usage.take();
        let pid = self.pid();
        let _ = std::thread::Builder::new()
            .name("wasm-sandbox-reap".into())
            .spawn(move || {
                if reap {
                    let mut status = 0;
                    // SAFETY: waitpid on our own child pid, not reaped yet, which
                    // nothing else reaps (std's Child is being dropped without waiting).
                    unsafe { libc::waitpid(pid, &mut status, 0) };
                }
                if let Some(cg) = cgroup {
                    remove_cgroup(cg, usage.as_ref());
                }
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn exited_unreaped_processes_count_as_gone() {
        assert!(!is_zombie(std::process::id() as i32));
        let mut child = Command::new("true").spawn().expect("spawn true");
        let pid = child.id() as i32;
        // Not waited for yet: once it exits it stays a zombie.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !is_zombie(pid) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(is_zombie(pid), "an exited child is a zombie until reaped");
        child.wait().expect("reap");
        assert!(is_zombie(pid), "a reaped pid no longer exists");
    }
}

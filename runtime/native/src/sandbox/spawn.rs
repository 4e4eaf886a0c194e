//! Spawning from one long-lived thread (PR_SET_PDEATHSIG is per thread).

use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::sync::mpsc;

type SpawnJob = (
    Command,
    Vec<OwnedFd>,
    tokio::sync::oneshot::Sender<std::io::Result<Child>>,
);

fn spawner() -> std::io::Result<&'static mpsc::Sender<SpawnJob>> {
    static SPAWNER: OnceLock<Option<mpsc::Sender<SpawnJob>>> = OnceLock::new();
    SPAWNER
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<SpawnJob>();
            std::thread::Builder::new()
                .name("wasm-sandbox-spawner".into())
                .spawn(move || {
                    while let Ok((mut cmd, keep_alive, reply)) = rx.recv() {
                        let r = cmd.spawn();
                        // The command's copies of the pipe ends must close now.
                        drop(cmd);
                        drop(keep_alive);
                        let _ = reply.send(r);
                    }
                })
                .ok()
                .map(|_| tx)
        })
        .as_ref()
        .ok_or_else(|| std::io::Error::other("cannot start the sandbox spawner thread"))
}

pub(super) async fn spawn_on_spawner(
    cmd: Command,
    keep_alive: Vec<OwnedFd>,
) -> std::io::Result<Child> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    spawner()?
        .send((cmd, keep_alive, tx))
        .map_err(|_| std::io::Error::other("sandbox spawner thread is gone"))?;
    rx.await
        .map_err(|_| std::io::Error::other("sandbox spawner thread dropped the request"))?
}

/// Adds the `pre_exec` hook: join the session cgroups (so every sandbox process is
/// born inside them) and let the ready pipe survive `exec`.
pub(super) fn add_pre_exec(cmd: &mut Command, procs_files: Vec<CString>, inherit_fd: i32) {
    // SAFETY: the closure runs between fork and exec and only makes
    // async-signal-safe system calls (open, write, close, fcntl) on data allocated
    // before the fork; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            for f in &procs_files {
                let fd = libc::open(f.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let n = libc::write(fd, b"0".as_ptr().cast(), 1);
                let err = std::io::Error::last_os_error();
                libc::close(fd);
                if n != 1 {
                    return Err(err);
                }
            }
            if inherit_fd >= 0 && libc::fcntl(inherit_fd, libc::F_SETFD, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

//! The sandbox side of per-session network egress (`[runtime.networking]`).
//!
//! bash keeps its private network namespace, whose only interface is loopback.
//! When the session has a proxy (`BashSessionSpec::egress_dir`), the host
//! directory holding the proxy's unix socket is bound read-only at
//! [`NET_GUEST_DIR`] and the init starts a **relay**: a process listening on
//! `127.0.0.1:`[`RELAY_PORT`] inside the namespace that connects each accepted
//! connection to [`SOCKET_GUEST_PATH`] and copies bytes both ways. bash gets the
//! proxy variables of [`proxy_env`] pointing at the relay. The proxy (on the
//! worker, see `wasm-sandbox-egress`) decides every request.
//!
//! Why this shape:
//! * **No route out.** The namespace has no interface but `lo`, so a client that
//!   ignores the proxy variables gets `ENETUNREACH` at once, never a hang, and no
//!   packet leaves except through the relay → unix socket → proxy path.
//! * **One session's socket only.** The directory is per sandbox, `0700` on the
//!   host under the runtime's private socket directory, and bound only into its
//!   own sandbox: another session's sandbox has no path to it (different mount
//!   namespace), and abstract sockets cannot cross (new network namespace; Landlock
//!   ABI ≥ 6 scoping).
//! * **Pooled sandboxes.** A sandbox started before its session is known gets an
//!   empty directory bound; the socket appears in it when a session adopts the
//!   sandbox. The relay connects per connection, so it needs nothing re-done.
//! * **Landlock.** In this mode the init does not restrict TCP with Landlock:
//!   Landlock's network rules match ports, not addresses, so "connect only to the
//!   relay port" would also forbid a server the command starts on loopback, and it
//!   adds nothing the empty namespace does not already guarantee (the only
//!   reachable addresses are the sandbox's own). With `type = "none"` the init keeps
//!   denying TCP bind/connect exactly as before.
//! * **Bounded.** The relay is one single-threaded process (it counts once against
//!   the sandbox's pids limit) holding at most [`MAX_RELAY_CONNECTIONS`]
//!   connections; more are closed at once. Bytes move by `splice(2)` through a
//!   pipe per direction ([`splice`]), never through user space. It runs with the same Landlock domain,
//!   seccomp filters and `no_new_privs` as bash: it is started after they are
//!   applied. bash can kill it (same uid), which only cuts bash's own network.

pub mod splice;

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;

/// The TCP port of the relay inside every sandbox's private network namespace
/// (`127.0.0.1` only).
pub const RELAY_PORT: u16 = 3128;
/// Where the per-session socket directory is bound inside the sandbox.
pub const NET_GUEST_DIR: &str = "/run/wasm-sandbox/net";
/// The proxy socket's file name inside that directory (host and guest).
pub const SOCKET_NAME: &str = "proxy.sock";
/// The proxy socket inside the sandbox.
pub const SOCKET_GUEST_PATH: &str = "/run/wasm-sandbox/net/proxy.sock";
/// Connections the relay holds at once.
pub const MAX_RELAY_CONNECTIONS: usize = 256;

/// The proxy variables bash gets when the session has a proxy.
///
/// `NO_PROXY` lists loopback, so a server a command starts inside the sandbox is
/// reached directly (the namespace's own loopback, never the host's). curl,
/// wget, pip, git, Python `urllib`/`requests` and Go read the `*_PROXY` variables
/// (lowercase `http_proxy` is the one curl reads for plain HTTP); npm (and yarn 1)
/// read `npm_config_proxy`/`npm_config_https_proxy`; cargo reads
/// `CARGO_HTTP_PROXY`; pip also reads `PIP_PROXY`; yarn 2+ reads
/// `YARN_HTTP_PROXY`/`YARN_HTTPS_PROXY`.
pub fn proxy_env() -> Vec<(String, String)> {
    let url = format!("http://127.0.0.1:{RELAY_PORT}");
    let no_proxy = "localhost,127.0.0.1,::1";
    let mut v = Vec::new();
    for name in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"] {
        v.push((name.to_owned(), url.clone()));
        v.push((name.to_ascii_lowercase(), url.clone()));
    }
    v.push(("NO_PROXY".to_owned(), no_proxy.to_owned()));
    v.push(("no_proxy".to_owned(), no_proxy.to_owned()));
    for name in [
        "npm_config_proxy",
        "npm_config_https_proxy",
        "CARGO_HTTP_PROXY",
        "PIP_PROXY",
        "YARN_HTTP_PROXY",
        "YARN_HTTPS_PROXY",
    ] {
        v.push((name.to_owned(), url.clone()));
    }
    v
}

/// The relay's listening socket, bound by the init before its Landlock domain
/// starts (`127.0.0.1:port`).
pub(crate) fn bind_relay(port: u16) -> Result<std::net::TcpListener, String> {
    std::net::TcpListener::bind(("127.0.0.1", port))
        .map_err(|e| format!("egress relay: bind 127.0.0.1:{port}: {e}"))
}

/// Starts the relay as a grandchild of the init (so it is not a child of bash:
/// bash's `wait` never sees it) and returns in the init once the intermediate
/// child is reaped. The relay detaches from bash's stdio.
pub(crate) fn spawn_relay(listener: std::net::TcpListener, socket: PathBuf) -> Result<(), String> {
    // SAFETY: the init is single-threaded here (no runtime has started), so the
    // child may run arbitrary code after fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!(
            "egress relay: fork: {}",
            std::io::Error::last_os_error()
        ));
    }
    if pid == 0 {
        // SAFETY: as above; the grandchild runs the relay, the child exits.
        let pid2 = unsafe { libc::fork() };
        if pid2 != 0 {
            // SAFETY: _exit skips destructors and atexit handlers of the copy.
            unsafe { libc::_exit(if pid2 < 0 { 1 } else { 0 }) };
        }
        detach_stdio();
        close_all_but(listener.as_raw_fd());
        run_relay(listener, socket);
        // SAFETY: see above.
        unsafe { libc::_exit(0) };
    }
    drop(listener);
    let mut status = 0;
    // SAFETY: waits for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        Ok(())
    } else {
        Err("egress relay: could not start".to_owned())
    }
}

/// Closes every descriptor above 2 except `keep` (the ready pipe and anything
/// else the init holds stays with bash, not with the relay).
fn close_all_but(keep: i32) {
    let keep = keep as u32;
    // SAFETY: close_range only closes descriptors of this process.
    unsafe {
        if keep > 3 {
            libc::syscall(libc::SYS_close_range, 3u32, keep - 1, 0u32);
        }
        libc::syscall(libc::SYS_close_range, keep + 1, u32::MAX, 0u32);
    }
}

fn detach_stdio() {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..=2 {
            // SAFETY: dup2 onto the standard descriptors of this process.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
}

fn run_relay(listener: std::net::TcpListener, socket: PathBuf) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    rt.block_on(async move {
        if listener.set_nonblocking(true).is_err() {
            return;
        }
        let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
            return;
        };
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_RELAY_CONNECTIONS));
        let socket: Arc<std::path::Path> = socket.into();
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                // EMFILE and friends: back off instead of spinning.
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                drop(tcp);
                continue;
            };
            let socket = socket.clone();
            tokio::spawn(async move {
                let _permit = permit;
                // No proxy socket (yet, or any more): close at once, the client
                // sees a reset rather than a hang.
                let Ok(unix) = tokio::net::UnixStream::connect(&*socket).await else {
                    return;
                };
                let _ = tcp.set_nodelay(true);
                // Zero-copy both ways (splice(2) through a pipe; TCP and unix
                // stream sockets support it on every kernel with Landlock).
                let _ = tokio::try_join!(
                    splice::pump(&tcp, &unix, |_| {}),
                    splice::pump(&unix, &tcp, |_| {}),
                );
            });
        }
    });
}

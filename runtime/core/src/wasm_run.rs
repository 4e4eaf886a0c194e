//! The worker side of `wasm-run`: components started from bash run here, under
//! this runtime's wasmtime, with the session's preopens.
//!
//! Each session with a bash sandbox gets its own unix socket (in a private 0700
//! directory of the runtime) bound into its sandbox; the shim
//! (`wasm_sandbox_native::wasm_run`) connects, sends a request and relays stdio.
//! Data flows one way per step: request → resolve the file through the session's
//! own directories → compiled component (by content hash) → run → exit status.
//!
//! # Security reasoning
//!
//! Everything on the socket comes from code inside the sandbox, so it is treated as
//! hostile:
//! * **Which file**: the path is resolved lexically against the shim's working
//!   directory, must fall under one of the session's preopens, and is opened with
//!   `cap-std` from that preopen's directory, which refuses `..`, absolute symlinks
//!   and any symlink that leaves it. A component outside the session's directories
//!   (the sandbox's `/tmp`, `/usr`) cannot be named.
//! * **What it can reach**: exactly the file tools' preopens (read-only stores stay
//!   read-only), plus `.` for the working directory (opened the same way and passed
//!   to WASI as `/proc/self/fd/N`, so no path is re-resolved); no sockets, no name
//!   lookup; the wasi-nn binding with the session's quotas.
//! * **How long**: an epoch callback stops the run when the session closes, the
//!   shim goes away (bash timed out, the agent pressed Ctrl-C) or
//!   `wasm_run.max_run_seconds` passes. Socket I/O uses short timeouts and rechecks
//!   the same conditions, so no worker thread blocks on the sandbox.
//! * **Which kind of file**: the component is opened with `O_NONBLOCK`, so naming a
//!   FIFO (or a device) cannot park a worker thread in `open()` waiting for a
//!   writer; then `fstat` on the open descriptor must say "regular file" within
//!   the size cap, and at most cap + 1 bytes are read. Checking the descriptor,
//!   not the path, leaves no window for a swap between check and read.
//! * **How much**: frames are capped ([`proto::MAX_FRAME`]), the component file by
//!   `wasm_run.max_component_bytes` (8 MiB; an installed skill's unchanged file by
//!   `wasm_run.max_skill_component_bytes`), memory by `limits.memory_bytes`, and a
//!   session runs at most `wasm_run.max_concurrent_per_session` components at once.
//! * **Compiling it**: the bytes are hostile input to the compiler, so they are
//!   compiled in a separate process with memory, CPU, wall-clock, output and
//!   concurrency limits (see the `compile` module), never inside the worker.
//! * **The compile cache** is keyed by content and holds compiled code only; it is
//!   bounded in memory (`wasm_run.cache_entries`, `wasm_run.cache_max_bytes`) and on
//!   disk (`engine.cache_max_bytes`).
//! * **Logs**: every string that comes from the sandbox (argv, paths, error text
//!   that quotes them) is logged through [`Escaped`], so control characters
//!   cannot forge or split log lines in the text format.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use wasm_sandbox_hostcalls_nn::NnSession;
use wasm_sandbox_native::wasm_run::{self as proto, Request};
use wasmtime_wasi::cli::{IsTerminal, StdinStream, StdoutStream};
use wasmtime_wasi::p2::{InputStream, OutputStream, Pollable, StreamError, StreamResult};

use crate::bash::BashHost;
use crate::commands::{CommandDeadline, Commands};
use crate::{Error, Result};
use wasm_sandbox_fs::mounts::MountSet;

/// How long the shim has to send its request after connecting.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Socket operations wake up this often to recheck cancellation.
const POLL: Duration = Duration::from_millis(100);
/// Largest stdout/stderr chunk per frame and stdin read per request.
const CHUNK: usize = 64 << 10;

/// Everything a run needs from its session.
pub(crate) struct RunContext {
    /// The runtime's command components (compiles, caches and runs them).
    pub commands: Arc<Commands>,
    pub preopens: Arc<MountSet>,
    pub nn: Arc<NnSession>,
    pub session_id: String,
    /// The session's usage counters (CPU of the runs).
    pub account: Arc<crate::usage::SessionAccount>,
}

/// One session's bridge: its socket and the task accepting on it.
pub(crate) struct Bridge {
    socket: PathBuf,
    listener: Mutex<Option<std::os::unix::net::UnixListener>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    closed: Arc<AtomicBool>,
}

static SOCKETS: AtomicU64 = AtomicU64::new(0);

impl Bridge {
    /// Binds the session's socket, or `None` when `wasm-run` is off or bash has
    /// no sandbox to bind it into.
    pub fn bind(host: &BashHost) -> Result<Option<Bridge>> {
        if !host.wasm_run_enabled() || !host.sandboxed() {
            return Ok(None);
        }
        let dir = host.socket_dir()?;
        let socket = dir.join(format!("{}.sock", SOCKETS.fetch_add(1, Ordering::Relaxed)));
        let listener = std::os::unix::net::UnixListener::bind(&socket)
            .map_err(|e| Error::Sandbox(format!("cannot bind {}: {e}", socket.display())))?;
        Ok(Some(Bridge {
            socket,
            listener: Mutex::new(Some(listener)),
            task: Mutex::new(None),
            closed: Arc::new(AtomicBool::new(false)),
        }))
    }

    /// The socket's host path (bound into the sandbox).
    pub fn socket(&self) -> &std::path::Path {
        &self.socket
    }

    /// Starts accepting (once; needs a tokio runtime, as bash does).
    pub fn start(&self, ctx: impl FnOnce() -> RunContext) {
        let Some(listener) = self
            .listener
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return;
        };
        let listener = match listener
            .set_nonblocking(true)
            .and_then(|()| tokio::net::UnixListener::from_std(listener))
        {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "wasm-run bridge could not start");
                return;
            }
        };
        let ctx = Arc::new(ctx());
        let closed = self.closed.clone();
        let slots = Arc::new(tokio::sync::Semaphore::new(
            ctx.commands
                .wasm_run_config()
                .max_concurrent_per_session
                .max(1),
        ));
        let handle = tokio::spawn(async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((s, _)) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "wasm-run accept failed");
                        tokio::time::sleep(POLL).await;
                        continue;
                    }
                };
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    return;
                };
                let stream = match stream
                    .into_std()
                    .and_then(|s| s.set_nonblocking(false).map(|()| s))
                {
                    Ok(s) => s,
                    Err(_) => continue,
                };
                let ctx = ctx.clone();
                let closed = closed.clone();
                tokio::task::spawn_blocking(move || {
                    serve(&ctx, stream, closed);
                    drop(permit);
                });
            }
        });
        *self.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
    }

    /// Stops accepting, cancels running components and removes the socket.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        if let Some(task) = self.task.lock().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
        self.listener
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.close();
    }
}

/// The shim's socket plus the conditions that end a run.
#[derive(Clone)]
struct Conn {
    sock: Arc<UnixStream>,
    closed: Arc<AtomicBool>,
    deadline: Instant,
}

impl Conn {
    /// Why the run must stop, if it must.
    fn stop_reason(&self) -> Option<&'static str> {
        if self.closed.load(Ordering::Acquire) {
            Some("the session ended")
        } else if Instant::now() >= self.deadline {
            Some("wasm_run.max_run_time passed")
        } else {
            None
        }
    }

    /// True when the shim has closed its end (it sends nothing unasked, so any
    /// readable state without data is the end of the stream).
    fn peer_gone(&self) -> bool {
        let mut b = [0u8; 1];
        // SAFETY: a one-byte buffer we own and the socket's open descriptor;
        // MSG_PEEK consumes nothing and MSG_DONTWAIT never blocks.
        let r = unsafe {
            libc::recv(
                self.sock.as_raw_fd(),
                b.as_mut_ptr().cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        match r {
            0 => true,
            n if n > 0 => false,
            _ => !retry(&io::Error::last_os_error()),
        }
    }

    fn write_all(&self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            match (&*self.sock).write(buf) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => buf = &buf[n..],
                Err(e) if retry(&e) => self.check()?,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn check(&self) -> io::Result<()> {
        match self.stop_reason() {
            Some(why) => Err(io::Error::new(io::ErrorKind::TimedOut, why)),
            None => Ok(()),
        }
    }

    fn send(&self, tag: u8, payload: &[u8]) -> io::Result<()> {
        let mut frame = Vec::with_capacity(5 + payload.len());
        proto::write_frame(&mut frame, tag, payload)?;
        self.write_all(&frame)
    }

    fn recv(&self) -> io::Result<(u8, Vec<u8>)> {
        proto::read_frame(&mut &*self)?.ok_or_else(|| io::ErrorKind::UnexpectedEof.into())
    }
}

/// Reads from the shim, waking every [`POLL`] to recheck [`Conn::stop_reason`], so
/// the frame format is parsed by the one `read_frame` both sides share.
impl Read for &Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match (&*self.sock).read(buf) {
                Err(e) if retry(&e) => self.check()?,
                r => return r,
            }
        }
    }
}

fn retry(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// Serves one connection to the end; never panics on hostile input.
fn serve(ctx: &RunContext, sock: UnixStream, closed: Arc<AtomicBool>) {
    let config = ctx.commands.wasm_run_config();
    if sock.set_read_timeout(Some(POLL)).is_err() || sock.set_write_timeout(Some(POLL)).is_err() {
        return;
    }
    let request_conn = Conn {
        sock: Arc::new(sock),
        closed: closed.clone(),
        deadline: Instant::now() + REQUEST_TIMEOUT,
    };
    let request = match request_conn.recv() {
        Ok((proto::TAG_REQUEST, body)) => match serde_json::from_slice::<Request>(&body) {
            Ok(r) => r,
            Err(e) => {
                let _ = request_conn.send(proto::TAG_FAIL, format!("bad request: {e}").as_bytes());
                return;
            }
        },
        _ => return,
    };
    let conn = Conn {
        deadline: Instant::now() + Duration::from_secs(config.max_run_seconds.max(1)),
        ..request_conn
    };
    let name = request.argv.first().cloned().unwrap_or_default();
    let started = Instant::now();
    // The component runs on this thread: its CPU time goes to the session's account.
    match ctx
        .account
        .measure(crate::usage::CpuKind::Run, || run(ctx, &conn, request))
    {
        Ok(code) => {
            tracing::debug!(session = %ctx.session_id, component = %Escaped(&name), exit_code = code,
                elapsed_ms = started.elapsed().as_millis() as u64, "wasm-run finished");
            let _ = conn.send(proto::TAG_EXIT, &code.to_le_bytes());
        }
        Err(RunError::Fail(msg)) => {
            tracing::info!(session = %ctx.session_id, component = %Escaped(&name), error = %Escaped(&msg), "wasm-run refused");
            let _ = conn.send(proto::TAG_FAIL, msg.as_bytes());
        }
        Err(RunError::Trap(msg)) => {
            tracing::info!(session = %ctx.session_id, component = %Escaped(&name), error = %Escaped(&msg), "wasm-run trapped");
            let _ = conn.send(
                proto::TAG_STDERR,
                format!("wasm-run: {name}: {msg}\n").as_bytes(),
            );
            let _ = conn.send(proto::TAG_EXIT, &134i32.to_le_bytes());
        }
    }
}

enum RunError {
    /// Not run (bad path, not a component, too large): shim exits 126.
    Fail(String),
    /// Ran and trapped or was stopped: a message on stderr, exit 134.
    Trap(String),
}

fn run(ctx: &RunContext, conn: &Conn, request: Request) -> Result<i32, RunError> {
    let config = ctx.commands.wasm_run_config();
    let Some(path) = request.argv.first() else {
        return Err(RunError::Fail("no component given".into()));
    };
    let target = resolve(&ctx.preopens, &request.cwd, path).map_err(RunError::Fail)?;
    let file = open_component(&target).map_err(|e| RunError::Fail(format!("{path}: {e}")))?;
    let command = ctx
        .commands
        .for_file(&file, config.max_component_bytes)
        .map_err(|e| RunError::Fail(format!("{path}: {e}")))?;
    drop(file);
    // `.` for the working directory, when it is one of the session's directories.
    let cwd = resolve(&ctx.preopens, &request.cwd, ".")
        .ok()
        .and_then(|t| open_dir(&t).ok().map(|d| (d, t.read_only)));

    let mut args = request.argv.clone();
    args[0] = target.guest.clone();
    let stop = conn.clone();
    let mut ticks = 0u32;
    let deadline = CommandDeadline::Callback(Box::new(move || {
        ticks = ticks.wrapping_add(1);
        // The peer check costs three syscalls: every 5th tick (50 ms) is plenty.
        let gone = ticks.is_multiple_of(5) && stop.peer_gone();
        match stop
            .stop_reason()
            .or(gone.then_some("the caller went away"))
        {
            Some(why) => Err(wasmtime::format_err!("stopped: {why}")),
            None => Ok(wasmtime::UpdateDeadline::Continue(1)),
        }
    }));
    let result = ctx.commands.run_with(
        &command,
        &ctx.preopens,
        ctx.nn.ctx(),
        |builder| {
            builder.args(&args);
            for (k, v) in &request.env {
                builder.env(k, v);
            }
            builder.env("PWD", &request.cwd);
            if let Some((dir, read_only)) = &cwd {
                // The directory was opened through cap-std; WASI re-opens this
                // exact descriptor through /proc, so nothing is resolved again.
                let perms = if *read_only {
                    wasmtime_wasi::FsPerms::ReadOnly
                } else {
                    wasmtime_wasi::FsPerms::ReadWrite
                };
                let path = format!("/proc/self/fd/{}", dir.as_raw_fd());
                builder
                    .preopened_dir(path, ".", perms)
                    .map_err(Error::Other)?;
            }
            builder.stdin(RelayIn(conn.clone()));
            builder.stdout(RelayOut(conn.clone(), proto::TAG_STDOUT));
            builder.stderr(RelayOut(conn.clone(), proto::TAG_STDERR));
            Ok(())
        },
        deadline,
    );
    drop(cwd);
    match result {
        Ok(code) => Ok(code),
        Err(Error::Other(e)) => {
            let msg = match e.downcast_ref::<wasmtime::Trap>() {
                Some(trap) => format!("trap: {trap}"),
                None => format!("{e:#}"),
            };
            Err(RunError::Trap(msg))
        }
        Err(e) => Err(RunError::Fail(e.to_string())),
    }
}

/// A path inside one of the session's preopens.
#[derive(Debug, PartialEq)]
struct Target {
    /// Normalised absolute guest path.
    guest: String,
    /// The preopen's host directory.
    host_root: PathBuf,
    /// Path relative to `host_root` (empty for the root itself).
    rel: String,
    read_only: bool,
}

/// Resolves `path` (absolute, or relative to `cwd`) lexically and maps it to a
/// preopen. `..` never climbs above `/`, as in POSIX.
fn resolve(preopens: &MountSet, cwd: &str, path: &str) -> Result<Target, String> {
    let joined = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("{cwd}/{path}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for part in joined.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    let guest = format!("/{}", parts.join("/"));
    match preopens.containing(&guest) {
        Some((p, rest)) => Ok(Target {
            rel: rest.to_owned(),
            host_root: p.host.clone(),
            read_only: p.read_only(),
            guest: guest.clone(),
        }),
        None => Err(format!(
            "{path}: only components under /workspace, /mnt/session/outputs or a memory store can be run"
        )),
    }
}

fn open_root(t: &Target) -> io::Result<cap_std::fs::Dir> {
    cap_std::fs::Dir::open_ambient_dir(&t.host_root, cap_std::ambient_authority())
}

fn open_dir(t: &Target) -> io::Result<cap_std::fs::Dir> {
    let root = open_root(t)?;
    if t.rel.is_empty() {
        Ok(root)
    } else {
        root.open_dir(&t.rel)
    }
}

/// Opens the component file through the preopen's directory (never following a
/// link out of it) without blocking, and checks it is a regular WebAssembly file.
fn open_component(t: &Target) -> io::Result<std::fs::File> {
    use cap_std::fs::OpenOptionsExt;
    use std::os::unix::fs::FileExt;
    if t.rel.is_empty() {
        return Err(io::Error::other("is a directory"));
    }
    // O_NONBLOCK: opening a FIFO for reading otherwise waits for a writer, forever
    // if the sandbox never opens one. It changes nothing for a regular file's reads.
    let mut options = cap_std::fs::OpenOptions::new();
    options.read(true).custom_flags(libc::O_NONBLOCK);
    let file = open_root(t)?.open_with(&t.rel, &options)?.into_std();
    // fstat of the descriptor we will read, not of the path: no swap in between.
    if !file.metadata()?.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    let mut magic = [0u8; 4];
    if file.read_exact_at(&mut magic, 0).is_err() || &magic != b"\0asm" {
        return Err(io::Error::other("not a WebAssembly file"));
    }
    Ok(file)
}

/// A string from the sandbox, for logs: printed with control characters, quotes and
/// backslashes escaped (`\n`, `\u{1b}`, …), so it stays on its own line and inside
/// its field whatever it holds.
pub(crate) struct Escaped<'a>(pub &'a str);

impl std::fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0.escape_debug(), f)
    }
}

/// stdin: each read asks the shim for at most `size` bytes of its stdin.
struct RelayIn(Conn);

/// stdout / stderr: each write becomes frames to the shim.
struct RelayOut(Conn, u8);

fn stream_error(e: io::Error) -> StreamError {
    StreamError::LastOperationFailed(wasmtime::format_err!("wasm-run bridge: {e}"))
}

impl InputStream for RelayIn {
    fn read(&mut self, size: usize) -> StreamResult<Bytes> {
        let want = size.clamp(1, CHUNK) as u32;
        self.0
            .send(proto::TAG_READ, &want.to_le_bytes())
            .map_err(stream_error)?;
        match self.0.recv().map_err(stream_error)? {
            (proto::TAG_DATA, data) if data.is_empty() => Err(StreamError::Closed),
            (proto::TAG_DATA, data) => {
                let mut data = data;
                data.truncate(want as usize);
                Ok(Bytes::from(data))
            }
            (tag, _) => Err(stream_error(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unexpected frame {tag:#04x}"),
            ))),
        }
    }
}

impl OutputStream for RelayOut {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        for chunk in bytes.chunks(CHUNK) {
            self.0.send(self.1, chunk).map_err(stream_error)?;
        }
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(CHUNK)
    }
}

#[async_trait::async_trait]
impl Pollable for RelayIn {
    async fn ready(&mut self) {}
}

#[async_trait::async_trait]
impl Pollable for RelayOut {
    async fn ready(&mut self) {}
}

impl IsTerminal for RelayIn {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl IsTerminal for RelayOut {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdinStream for RelayIn {
    fn p2_stream(&self) -> Box<dyn InputStream> {
        Box::new(RelayIn(self.0.clone()))
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncRead + Send + Sync> {
        // Only WASIp3 guests ask for this; the linker here is WASIp2.
        Box::new(tokio::io::empty())
    }
}

impl StdoutStream for RelayOut {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(RelayOut(self.0.clone(), self.1))
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(tokio::io::sink())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn preopens() -> MountSet {
        use wasm_sandbox_fs::guest_path::MemoryMountPath;
        use wasm_sandbox_fs::mounts::{Access, Mount};
        MountSet::session(
            "/h/ws",
            "/h/out",
            [Mount::memory_store(
                MemoryMountPath::parse("/mnt/memory/notes").unwrap(),
                "/h/mem",
                Access::ReadOnly,
            )],
        )
        .unwrap()
    }

    #[test]
    fn resolves_relative_and_absolute_paths_into_preopens_only() {
        let p = preopens();
        let t = resolve(&p, "/workspace/sub", "../skills/x/tool.wasm").unwrap();
        assert_eq!(t.guest, "/workspace/skills/x/tool.wasm");
        assert_eq!(t.rel, "skills/x/tool.wasm");
        assert_eq!(t.host_root, PathBuf::from("/h/ws"));
        let t = resolve(&p, "/tmp", "/mnt/memory/notes/a.wasm").unwrap();
        assert!(t.read_only);
        assert_eq!(t.rel, "a.wasm");
        // `..` cannot climb out of `/`, and paths outside the preopens are refused.
        assert!(resolve(&p, "/workspace", "../../../../etc/x.wasm").is_err());
        assert!(resolve(&p, "/tmp", "x.wasm").is_err());
        assert!(resolve(&p, "/", "workspacex/a.wasm").is_err());
        assert_eq!(resolve(&p, "/workspace", ".").unwrap().rel, "");
    }

    #[test]
    fn logged_guest_strings_cannot_forge_lines() {
        let forged = "x.wasm\n2026-01-01T00:00:00Z  INFO forged: admin logged in\r\u{1b}[2K\u{0}\u{7f}\u{2028}";
        let shown = Escaped(forged).to_string();
        assert!(
            !shown.chars().any(|c| c.is_control() || c == '\u{2028}'),
            "{shown:?}"
        );
        assert_eq!(
            shown,
            "x.wasm\\n2026-01-01T00:00:00Z  INFO forged: admin logged in\\r\\u{1b}[2K\\0\\u{7f}\\u{2028}"
        );
        // Plain names are shown as they are.
        assert_eq!(
            Escaped("skills/wc/wc.wasm").to_string(),
            "skills/wc/wc.wasm"
        );
    }
}

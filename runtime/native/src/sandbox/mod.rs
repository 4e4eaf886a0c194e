//! The Linux sandbox bash runs in, layer by layer.
//!
//! bash needs a full Linux userland, so it cannot run as a WASI component; it runs
//! natively, and this module is what stands between a model-issued command and the
//! worker's host. The reference SDK runs bash bare on the host; we do not.
//!
//! # Why bubblewrap
//!
//! We use bubblewrap (`bwrap`, Debian package `bubblewrap`) rather than doing the
//! `clone(CLONE_NEW*)`, uid-map, mount and `pivot_root` dance in-process. The
//! in-process route means `unsafe` `fork`-time code in a multi-threaded tokio
//! process (only async-signal-safe calls are allowed between `fork` and `exec`, and
//! the mount sequence is long), plus re-implementing tricky details bubblewrap has
//! hardened over a decade (mount propagation, `/proc` and `/dev` setup, uid maps
//! for unprivileged users, `--die-with-parent`, the pid-1 reaper). bubblewrap is a
//! small, audited, widely deployed (Flatpak) program whose only job is this; it
//! works both as root and unprivileged, costs ~3 ms per start on this machine, and
//! is started once per session, not per command.
//!
//! # The layers, and why each exists
//!
//! 1. **User namespace** (`--unshare-user`, `--cap-drop ALL`, `--disable-userns`):
//!    bash looks like uid 0 inside but holds no capabilities, and cannot create
//!    nested user namespaces (which would hand out fresh capabilities). The
//!    worker's uid is mapped to the sandbox uid, nothing else is.
//! 2. **Mount namespace with a minimal read-only root**: the root is an empty tmpfs
//!    (remounted read-only at the end) holding only read-only binds of `/usr` (and
//!    `/bin`, `/lib*` or their merged-usr symlinks), a short list of `/etc` files
//!    (never `/etc/shadow`, never `/etc/ssl/private`), read-write binds of the
//!    session's workspace at `/workspace` and outputs at `/mnt/session/outputs`,
//!    memory stores at `/mnt/memory/<store>` read-only or read-write as configured
//!    (bash honours read-only stores, unlike the reference), a private size-capped
//!    tmpfs at `/tmp` and `/dev/shm`, a fresh `/proc`, and bubblewrap's minimal
//!    `/dev`. The worker's own files, its home, other sessions' directories and the
//!    rest of the host filesystem simply do not exist inside.
//! 3. **PID namespace** (`--unshare-pid`, plus bubblewrap's pid-1 reaper): bash sees
//!    only its own processes; host pids (the worker included) cannot be named, so
//!    they cannot be signalled or traced. Killing the namespace's pid 1 makes the
//!    kernel kill every process inside, which is how teardown leaves nothing behind.
//! 4. **Network namespace** (`--unshare-net`, unless `network = true`): only a
//!    private loopback; the host's loopback services and the outside are
//!    unreachable. With per-session egress (`[runtime.networking]`) the namespace
//!    stays private: a relay on its loopback leads to the session's proxy on the
//!    host, which decides every connection (see [`crate::net`]).
//! 5. **IPC, UTS and cgroup namespaces**: no shared SysV IPC or POSIX message queues
//!    with the host, a fixed hostname, and no view of the host's cgroup paths.
//! 6. **`--new-session` and `--die-with-parent`**: no controlling terminal to inject
//!    keystrokes into, and the sandbox dies with the worker. bubblewrap is spawned
//!    from one long-lived thread because `PR_SET_PDEATHSIG` fires when the *thread*
//!    that forked it exits.
//! 7. **Landlock** (in the init helper, see [`crate::init`]): even if a mount were
//!    mis-configured, file access is limited to reading the read-only mounts and
//!    writing only the workspace, outputs, read-write stores, `/tmp`, `/dev/shm` and
//!    device files; TCP bind/connect is denied when networking is off; signals and
//!    abstract unix sockets cannot cross the domain boundary (ABI ≥ 6). Beneath the
//!    directories the worker itself opens (workspace, outputs, read-write stores)
//!    bash cannot create FIFOs, unix sockets or device nodes (a FIFO there would
//!    block the worker's `open(2)`); the private `/tmp` and `/dev/shm` still allow
//!    them. Without Landlock, seccomp refuses such `mknod` calls everywhere
//!    ([`SandboxReport::special_files`] names the active layer).
//! 8. **seccomp** (see [`crate::seccomp`]) and **`PR_SET_NO_NEW_PRIVS`**: mount,
//!    namespace, ptrace, kexec, bpf, keyctl, module and similar calls fail with
//!    `EPERM`. **No set-id files:** `chmod`/`fchmod`/`fchmodat`, `open`/`openat`/
//!    `creat` with `O_CREAT`/`O_TMPFILE`, and `mknod`/`mknodat` fail with `EPERM`
//!    when the mode has `S_ISUID` or `S_ISGID` (`fchmodat2` and `openat2`, whose
//!    mode seccomp cannot check, answer `ENOSYS` so libc falls back). This matters
//!    when the worker runs as host root: bash's uid 0 is then host uid 0, and a
//!    `chmod 4755` copy of a binary left in the workspace would be a root setuid
//!    program on the host. File capabilities (`security.capability`) need
//!    `CAP_SETFCAP`, which layer 1 drops. The layers together: seccomp stops the
//!    bit being set inside; the host mounts the session directories
//!    `nosuid,nodev` so a set-id file from anywhere grants nothing when run from
//!    there; `PR_SET_NO_NEW_PRIVS` makes set-id bits inert inside the sandbox.
//! 9. **Resource limits** (see [`crate::cgroup`] and [`crate::shape`]): per-session
//!    cgroups (v2 delegated subtree first, v1 second) holding the CPU quota of
//!    `[runtime.shape] vcpus` and the memory and pids caps, where the host allows
//!    (root here), else `RLIMIT_AS` and `RLIMIT_NPROC` (the kernel exempts host-root
//!    processes from `RLIMIT_NPROC`, so that fallback only binds for non-root
//!    workers; no rlimit can limit a CPU rate); `RLIMIT_FSIZE` and `RLIMIT_NOFILE`
//!    always; the `/tmp` and `/dev/shm` tmpfs are size-capped. **Disk total:** with
//!    `[runtime.shape] disk`, the core runtime puts the workspace and outputs on a
//!    per-session capped filesystem ([`crate::disk`]) before the sandbox starts;
//!    without it only `RLIMIT_FSIZE` caps each single file.
//! 10. **Environment hygiene** (see [`crate::env`]).
//!
//! # Fail closed
//!
//! [`BashSandbox::new`] probes once: it finds bubblewrap and the init helper and
//! starts a throw-away sandbox whose init applies every layer and reports back.
//! When that fails, every bash call answers an `is_error` text naming the reason
//! (and the reason is logged); bash runs directly on the host only when
//! `allow_unsandboxed_bash_i_understand_the_risk` is set, with a warning per start.
//!
//! # Where the code is
//!
//! This module holds the public types (spec, report, errors) and the probed
//! [`BashSandbox`]; `plan` builds bubblewrap's and the init's argument
//! lists (what is mounted where, and the Landlock rules); `etc` prepares the private
//! `/etc` copy; `spawn` starts bubblewrap from one long-lived thread; `launch` probes
//! the host and starts a session's shell; `shell` is a running shell and its teardown;
//! `usage` is what a session's shells have used ([`UsageHandle`]).

mod etc;
mod launch;
mod plan;
mod shell;
mod spawn;
mod usage;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;
use wasm_sandbox_fs::mounts::MountSet;

use crate::cgroup::{CgroupLimits, CgroupSupport};
use crate::config::BashConfig;
use crate::shape::ShapeReport;

use etc::PreparedEtc;
pub(crate) use shell::Shell;
pub use usage::UsageHandle;

pub use crate::init::INIT_GUEST_PATH;
pub use crate::limits::LimitMechanism;

/// The shell and its arguments.
pub const BASH: [&str; 3] = ["/bin/bash", "--noprofile", "--norc"];

/// Why a sandbox could not be started.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SandboxError {
    /// The sandbox is not usable on this host (probe failed).
    #[error("sandbox unavailable: {0}")]
    Unavailable(String),
    /// The session's configuration is invalid (paths).
    #[error("invalid sandbox configuration: {0}")]
    Config(String),
    /// Starting this session's sandbox failed.
    #[error("sandbox failed to start: {0}")]
    Start(String),
}

/// Which layer stops bash from creating FIFOs, unix sockets and device nodes in
/// the directories the worker itself opens (workspace, outputs, read-write memory
/// stores), where a FIFO would block the worker's `open(2)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SpecialFileGuard {
    /// Landlock, per directory: refused beneath those directories only; `/tmp` and
    /// `/dev/shm` (private tmpfs) still allow them.
    Landlock,
    /// The seccomp fallback when Landlock is not enforced: `mknod` of a FIFO,
    /// socket or device fails with `EPERM` everywhere, `/tmp` included. A unix
    /// socket made by `bind(2)` is not covered (its path is out of seccomp's reach);
    /// a socket file cannot block an `open(2)`, which fails with `ENXIO`.
    Seccomp,
    /// Not measured (the sandbox is unavailable).
    None,
}

/// Which layers are active, measured once by [`BashSandbox::new`].
#[derive(Clone, Debug, Serialize)]
pub struct SandboxReport {
    /// True when sessions get the sandbox.
    pub available: bool,
    /// Why not, when `available` is false.
    pub unavailable_reason: Option<String>,
    /// True when the sandbox is unavailable and the explicit opt-in makes bash run
    /// directly on the host.
    pub unsandboxed_fallback: bool,
    /// The bubblewrap binary used.
    pub bwrap: Option<PathBuf>,
    /// `bwrap --version`.
    pub bwrap_version: Option<String>,
    /// The init helper used.
    pub init: Option<PathBuf>,
    /// Namespaces created per session.
    pub namespaces: Vec<&'static str>,
    /// The kernel's Landlock ABI (syscall probe), if any.
    pub landlock_abi: Option<u32>,
    /// Landlock enforcement measured inside the probe sandbox: `full`, `partial`, `none`.
    pub landlock: Option<String>,
    /// seccomp filters installed in the probe sandbox.
    pub seccomp: bool,
    /// `PR_SET_NO_NEW_PRIVS` set in the probe sandbox.
    pub no_new_privs: bool,
    /// The layer that refuses FIFOs, sockets and device nodes where the worker
    /// looks, as measured in the probe sandbox. (Set-id files are refused by the
    /// seccomp filters whenever `seccomp` is true.)
    pub special_files: SpecialFileGuard,
    /// How the memory cap is enforced.
    pub memory_limit: LimitMechanism,
    /// How the process cap is enforced.
    pub pids_limit: LimitMechanism,
    /// How the vCPU quota of `[runtime.shape]` is enforced (no rlimit can).
    pub cpu_limit: LimitMechanism,
    /// How the session disk cap of `[runtime.shape]` is enforced.
    pub disk_limit: LimitMechanism,
    /// The session shape and what enforces each of its limits (see [`crate::shape`]).
    pub shape: ShapeReport,
    /// Size of the private `/tmp`.
    pub tmp_size_bytes: u64,
    /// `RLIMIT_FSIZE`, the per-file size cap (the workspace has no total quota).
    pub max_file_size_bytes: Option<u64>,
    /// Whether the sandbox has the host network.
    pub network: bool,
}

/// What one session's sandbox contains.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BashSessionSpec {
    /// The session id (names the cgroup; never shown to bash).
    pub session_id: String,
    /// What the sandbox binds, checked as a whole by [`MountSet::new`]: the workspace
    /// read-write at `/workspace` (bash's working directory), the outputs read-write at
    /// `/mnt/session/outputs`, and the memory stores below `/mnt/memory/`, read-only
    /// (bind and Landlock rule) or read-write as each says.
    pub mounts: MountSet,
    /// bash's environment, verbatim (then scrubbed); `None` = the allow-list.
    pub env: Option<BTreeMap<String, String>>,
    /// The session's `wasm-run` bridge socket on the host (see [`crate::wasm_run`]):
    /// when set, it is bound at [`SOCKET_GUEST_PATH`](crate::wasm_run::SOCKET_GUEST_PATH)
    /// and the shim at [`SHIM_GUEST_PATH`](crate::wasm_run::SHIM_GUEST_PATH).
    pub wasm_run_socket: Option<PathBuf>,
    /// Per-session network egress (see [`crate::net`]): a private host directory
    /// where the session's proxy socket is (or, for a pooled sandbox, will be)
    /// created, bound read-only at [`NET_GUEST_DIR`](crate::net::NET_GUEST_DIR).
    /// When set, the init runs the loopback relay and bash gets the proxy
    /// variables; the network namespace stays private. `None` = no network.
    pub egress_dir: Option<PathBuf>,
}

/// The probed sandbox, shared by all sessions of a runtime.
#[derive(Debug)]
pub struct BashSandbox {
    config: BashConfig,
    report: SandboxReport,
    cgroups: CgroupSupport,
    /// What each session's cgroups are given (shape and bash caps combined).
    limits: CgroupLimits,
    /// A private copy of the allow-listed `/etc` files, bound as one mount.
    etc: Option<PreparedEtc>,
}

/// Finds the init helper: `$WASM_SANDBOX_INIT`, else `wasm-sandbox-init` next to the
/// current executable, else next to its parent directory (test binaries live in
/// `target/<profile>/deps`, the helper in `target/<profile>`).
pub fn locate_init() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("WASM_SANDBOX_INIT") {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    [
        dir.join("wasm-sandbox-init"),
        dir.parent()?.join("wasm-sandbox-init"),
    ]
    .into_iter()
    .find(|p| p.is_file())
}

fn find_bwrap(config: &BashConfig) -> Option<PathBuf> {
    if let Some(p) = &config.bwrap_path {
        return p.is_file().then(|| p.clone());
    }
    let default = PathBuf::from("/usr/bin/bwrap");
    if default.is_file() {
        return Some(default);
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("bwrap"))
            .find(|p| p.is_file())
    })
}

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

use std::collections::BTreeMap;
use std::ffi::{CString, OsString};
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::Duration;

use serde::Serialize;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;

use crate::cgroup::{CgroupLimits, CgroupSupport, SessionCgroup};
use crate::config::BashConfig;
use crate::shape::{ShapeConfig, ShapeReport};

/// Where the init helper is bound inside the sandbox.
pub const INIT_GUEST_PATH: &str = "/run/wasm-sandbox/init";
/// The shell and its arguments.
pub const BASH: [&str; 3] = ["/bin/bash", "--noprofile", "--norc"];
/// The workspace inside the sandbox (bash's working directory).
pub const WORKSPACE_GUEST: &str = "/workspace";
/// The outputs directory inside the sandbox.
pub const OUTPUTS_GUEST: &str = "/mnt/session/outputs";

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

/// How a resource limit is enforced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitMechanism {
    /// A per-session cgroup v2 controller (whole sandbox).
    CgroupV2,
    /// A per-session cgroup v1 controller (whole sandbox).
    CgroupV1,
    /// A per-process rlimit (weaker: per process, not per sandbox).
    Rlimit,
    /// A per-session size- and inode-capped filesystem (the disk cap; see
    /// [`crate::disk`]).
    Filesystem,
    /// Not enforced (not configured, or the fallback cannot bind here).
    None,
}

impl LimitMechanism {
    /// The name used in logs, `/readyz` and metrics labels: `cgroup-v2`, `cgroup-v1`,
    /// `rlimit`, `none`.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitMechanism::CgroupV2 => "cgroup-v2",
            LimitMechanism::CgroupV1 => "cgroup-v1",
            LimitMechanism::Rlimit => "rlimit",
            LimitMechanism::Filesystem => "loop-ext4",
            LimitMechanism::None => "none",
        }
    }
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

/// A memory store mounted into the sandbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreMount {
    /// Absolute path inside the sandbox, under `/mnt/memory/`.
    pub guest_path: String,
    /// Host directory.
    pub host_path: PathBuf,
    /// Mounted read-only (and Landlock read-only) when true.
    pub read_only: bool,
}

/// What one session's sandbox contains.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BashSessionSpec {
    /// The session id (names the cgroup; never shown to bash).
    pub session_id: String,
    /// Host directory mounted read-write at `/workspace` (bash's working directory).
    pub workspace: PathBuf,
    /// Host directory mounted read-write at `/mnt/session/outputs`.
    pub outputs: PathBuf,
    /// Memory stores.
    pub memory_stores: Vec<StoreMount>,
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

/// The top-level names bound read-only from the host (or re-created as symlinks on
/// merged-/usr systems).
const ROOT_SYSTEM_DIRS: [&str; 6] = ["bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// Everything needed to build bubblewrap's and the init's argument lists.
struct Plan<'a> {
    config: &'a BashConfig,
    /// The prepared `/etc` copy; `None` = bind each allow-listed file.
    etc_dir: Option<&'a Path>,
    init: &'a Path,
    ready_fd: i32,
    workspace: Option<&'a Path>,
    outputs: Option<&'a Path>,
    stores: &'a [StoreMount],
    /// The session's `wasm-run` socket on the host, if the bridge is on.
    wasm_run_socket: Option<&'a Path>,
    /// The session's egress socket directory on the host (see [`crate::net`]).
    egress_dir: Option<&'a Path>,
    memory_cgroup: bool,
    pids_cgroup: bool,
    probe: bool,
}

fn os(s: impl Into<OsString>) -> OsString {
    s.into()
}

impl Plan<'_> {
    fn args(&self) -> Vec<OsString> {
        let c = self.config;
        let mut a: Vec<OsString> = Vec::with_capacity(96);
        let mut push = |items: &[&dyn AsRefOs]| {
            for i in items {
                a.push(i.as_os());
            }
        };
        push(&[
            &"--unshare-user",
            &"--unshare-ipc",
            &"--unshare-pid",
            &"--unshare-uts",
            &"--unshare-cgroup-try",
        ]);
        if !c.network {
            push(&[&"--unshare-net"]);
        }
        let uid = c.sandbox_uid.to_string();
        let gid = c.sandbox_gid.to_string();
        push(&[
            &"--disable-userns",
            &"--uid",
            &uid,
            &"--gid",
            &gid,
            &"--hostname",
            &"sandbox",
            &"--die-with-parent",
            &"--new-session",
            &"--cap-drop",
            &"ALL",
            &"--ro-bind",
            &"/usr",
            &"/usr",
        ]);
        let mut landlock_ro: Vec<String> = vec!["/usr".into(), "/etc".into(), "/proc".into()];
        for name in ROOT_SYSTEM_DIRS {
            let host = PathBuf::from("/").join(name);
            let guest = format!("/{name}");
            match std::fs::read_link(&host) {
                Ok(target) => push(&[&"--symlink", &target, &guest]),
                Err(_) if host.is_dir() => {
                    push(&[&"--ro-bind", &host, &guest]);
                    landlock_ro.push(guest.clone());
                }
                Err(_) => {}
            }
        }
        if let Some(etc) = self.etc_dir {
            push(&[&"--ro-bind", &etc, &"/etc"]);
        } else {
            push(&[&"--perms", &"0755", &"--dir", &"/etc"]);
            for f in allowed_etc_files(c) {
                push(&[&"--ro-bind", &f, &f]);
            }
        }
        push(&[&"--proc", &"/proc", &"--dev", &"/dev"]);
        let shm = c.shm_size_bytes.to_string();
        let tmp = c.tmp_size_bytes.to_string();
        push(&[
            &"--perms",
            &"1777",
            &"--size",
            &shm,
            &"--tmpfs",
            &"/dev/shm",
            &"--perms",
            &"1777",
            &"--size",
            &tmp,
            &"--tmpfs",
            &"/tmp",
        ]);
        // The private tmpfs mounts get every Landlock right; the host directories
        // the worker itself opens get every right but creating FIFOs, sockets and
        // device nodes (see `crate::init`).
        let landlock_rw: Vec<String> = vec!["/tmp".into(), "/dev/shm".into()];
        let mut landlock_rw_host: Vec<String> = Vec::new();
        if let Some(ws) = self.workspace {
            push(&[&"--bind", &ws, &WORKSPACE_GUEST]);
            landlock_rw_host.push(WORKSPACE_GUEST.into());
        }
        if let Some(out) = self.outputs {
            push(&[&"--bind", &out, &OUTPUTS_GUEST]);
            landlock_rw_host.push(OUTPUTS_GUEST.into());
        }
        for s in self.stores {
            if s.read_only {
                push(&[&"--ro-bind", &s.host_path, &s.guest_path]);
                landlock_ro.push(s.guest_path.clone());
            } else {
                push(&[&"--bind", &s.host_path, &s.guest_path]);
                landlock_rw_host.push(s.guest_path.clone());
            }
        }
        for p in &c.extra_ro_binds {
            if p.is_absolute() && p.exists() {
                push(&[&"--ro-bind", p, p]);
                landlock_ro.push(p.to_string_lossy().into_owned());
            }
        }
        if let Some(socket) = self.wasm_run_socket {
            // The shim is the init binary again (it dispatches on argv[0]); the
            // socket is the session's own, so one session cannot reach another's
            // bridge. Landlock needs read+execute on the shim's directory; a unix
            // socket `connect` is not a filesystem access Landlock governs.
            push(&[
                &"--ro-bind",
                &self.init,
                &crate::wasm_run::SHIM_GUEST_PATH,
                &"--ro-bind",
                &socket,
                &crate::wasm_run::SOCKET_GUEST_PATH,
            ]);
            landlock_ro.push(crate::wasm_run::SHIM_GUEST_DIR.into());
        }
        if let Some(dir) = self.egress_dir {
            push(&[&"--ro-bind", &dir, &crate::net::NET_GUEST_DIR]);
        }
        push(&[
            &"--ro-bind",
            &self.init,
            &INIT_GUEST_PATH,
            &"--remount-ro",
            &"/",
        ]);
        if self.workspace.is_some() {
            push(&[&"--chdir", &WORKSPACE_GUEST]);
        } else {
            push(&[&"--chdir", &"/"]);
        }
        // The init helper and its own arguments.
        a.push(os("--"));
        a.push(os(INIT_GUEST_PATH));
        a.extend(c.init_args.iter().map(os));
        a.push(os("--ready-fd"));
        a.push(os(self.ready_fd.to_string()));
        for p in landlock_ro {
            a.push(os("--ro"));
            a.push(os(p));
        }
        for p in landlock_rw {
            a.push(os("--rw"));
            a.push(os(p));
        }
        for p in landlock_rw_host {
            a.push(os("--rw-host"));
            a.push(os(p));
        }
        a.extend(["--dev", "/dev", "--list", "/"].map(os));
        if self.egress_dir.is_some() {
            // TCP stays inside the private namespace: see `crate::net` for why
            // Landlock does not restrict it in this mode.
            a.push(os("--egress-relay"));
            a.push(os(format!(
                "{}:{}",
                crate::net::RELAY_PORT,
                crate::net::SOCKET_GUEST_PATH
            )));
        } else if !c.network {
            a.push(os("--no-net"));
        }
        if c.require_landlock {
            a.push(os("--require-landlock"));
        }
        let mut rlimit = |name: &str, v: Option<u64>| {
            if let Some(v) = v {
                a.push(os("--rlimit"));
                a.push(os(format!("{name}={v}")));
            }
        };
        rlimit("fsize", c.max_file_size_bytes);
        rlimit("nofile", c.max_open_files);
        if !self.memory_cgroup {
            rlimit("as", c.memory_limit_bytes);
        }
        if !self.pids_cgroup {
            rlimit("nproc", c.pids_limit);
        }
        if self.probe {
            a.push(os("--probe"));
        } else {
            a.push(os("--"));
            a.extend(BASH.iter().map(os));
        }
        a
    }
}

/// Small helper so heterogeneous path/str arguments can be pushed together.
trait AsRefOs {
    fn as_os(&self) -> OsString;
}
impl AsRefOs for &str {
    fn as_os(&self) -> OsString {
        OsString::from(*self)
    }
}
impl AsRefOs for String {
    fn as_os(&self) -> OsString {
        OsString::from(self)
    }
}
impl AsRefOs for PathBuf {
    fn as_os(&self) -> OsString {
        self.as_os_str().to_owned()
    }
}
impl AsRefOs for &Path {
    fn as_os(&self) -> OsString {
        self.as_os_str().to_owned()
    }
}

fn is_forbidden_etc(p: &Path) -> bool {
    let s = p.to_string_lossy();
    ["shadow", "gshadow", "sudoers", "ssl/private", "ssh"]
        .iter()
        .any(|bad| s.contains(bad))
}

/// The configured `/etc` entries that exist and are not on the deny-list.
fn allowed_etc_files(c: &BashConfig) -> Vec<PathBuf> {
    c.etc_files
        .iter()
        .filter(|f| {
            f.starts_with("/etc")
                && !f
                    .components()
                    .any(|x| matches!(x, std::path::Component::ParentDir))
                && std::fs::symlink_metadata(f).is_ok()
                && !is_forbidden_etc(f)
        })
        .cloned()
        .collect()
}

/// A private host directory holding copies of the allow-listed `/etc` entries, so
/// each sandbox needs one bind mount for `/etc` instead of one per file (each mount
/// costs bubblewrap time at every session start). Symlinks are copied as symlinks
/// (they resolve inside the sandbox); modes are kept. Removed on drop.
#[derive(Debug)]
struct PreparedEtc {
    dir: PathBuf,
}

impl PreparedEtc {
    fn create(c: &BashConfig) -> std::io::Result<Self> {
        Self::remove_stale();
        let dir = std::env::temp_dir().join(format!(
            "wasm-sandbox-etc-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir(&dir)?;
        let prepared = Self { dir };
        std::fs::set_permissions(
            &prepared.dir,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )?;
        for f in allowed_etc_files(c) {
            let Ok(rel) = f.strip_prefix("/etc") else {
                continue;
            };
            let target = prepared.dir.join(rel);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            copy_tree(&f, &target)?;
        }
        Ok(prepared)
    }
}

impl PreparedEtc {
    /// Removes copies left by processes that exited without dropping their sandbox
    /// (e.g. one held in a `static`, or a crash).
    fn remove_stale() {
        let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_prefix("wasm-sandbox-etc-"))
                .and_then(|rest| rest.split('-').next())
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

fn copy_tree(src: &Path, dst: &Path) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(src)?;
    if meta.file_type().is_symlink() {
        std::os::unix::fs::symlink(std::fs::read_link(src)?, dst)?;
    } else if meta.is_dir() {
        std::fs::create_dir_all(dst)?;
        std::fs::set_permissions(dst, meta.permissions())?;
        for entry in std::fs::read_dir(src)? {
            let entry = entry?;
            copy_tree(&entry.path(), &dst.join(entry.file_name()))?;
        }
    } else if meta.is_file() {
        std::fs::copy(src, dst)?;
    }
    Ok(())
}

impl Drop for PreparedEtc {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Checks the memory stores' guest paths with the one mount-path rule
/// ([`wasm_sandbox_fs::guest_path`], the runtime's and the worker's too): canonical, strictly
/// below `/mnt/memory/`, nested allowed, no `..`, no store at or inside another. bubblewrap
/// creates a nested path's missing parents in the sandbox's private root (a tmpfs), so a
/// store at `/mnt/memory/team/notes` mounts like one at `/mnt/memory/notes`; a path outside
/// `/mnt/memory/` could bind a store over `/usr`, `/proc` or the workspace, and an overlap
/// would make bubblewrap create directories inside another store's host folder.
fn valid_store_path(stores: &[StoreMount]) -> Result<(), SandboxError> {
    wasm_sandbox_fs::guest_path::check_mounts(stores.iter().map(|s| s.guest_path.as_str()))
        .map(drop)
        .map_err(|e| SandboxError::Config(e.to_string()))
}

// ----------------------------------------------------------------------------
// Spawning from one long-lived thread (PR_SET_PDEATHSIG is per thread).

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

async fn spawn_on_spawner(cmd: Command, keep_alive: Vec<OwnedFd>) -> std::io::Result<Child> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    spawner()?
        .send((cmd, keep_alive, tx))
        .map_err(|_| std::io::Error::other("sandbox spawner thread is gone"))?;
    rx.await
        .map_err(|_| std::io::Error::other("sandbox spawner thread dropped the request"))?
}

/// Adds the `pre_exec` hook: join the session cgroups (so every sandbox process is
/// born inside them) and let the ready pipe survive `exec`.
fn add_pre_exec(cmd: &mut Command, procs_files: Vec<CString>, inherit_fd: i32) {
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

impl BashSandbox {
    /// Probes the host once (finds bubblewrap and the init helper, starts a
    /// throw-away sandbox that applies every layer, detects cgroups). Blocking, a
    /// few milliseconds. Never fails: an unusable sandbox is recorded in the report
    /// and makes sessions fail closed.
    pub fn new(config: BashConfig) -> Self {
        Self::with_shape(config, &ShapeConfig::default())
    }

    /// [`new`](Self::new) with the session shape of `[runtime.shape]`: sessions'
    /// cgroups get its vCPU quota, and the smaller of its and `config`'s memory and
    /// pids caps (see [`crate::shape`]).
    pub fn with_shape(config: BashConfig, shape: &ShapeConfig) -> Self {
        Self::build(config, shape, false)
    }

    /// [`with_shape`](Self::with_shape) for inspection only (`doctor`): the cgroups are
    /// found without writing anything ([`CgroupSupport::inspect`]: no process moved, no
    /// trial cgroup), so the report is the plan, not a tried one. Not for serving.
    pub fn inspect(config: BashConfig, shape: &ShapeConfig) -> Self {
        Self::build(config, shape, true)
    }

    fn build(config: BashConfig, shape: &ShapeConfig, read_only: bool) -> Self {
        let mut cgroups = match (config.use_cgroups, read_only) {
            (false, _) => CgroupSupport::default(),
            (true, false) => CgroupSupport::detect(),
            (true, true) => CgroupSupport::inspect(),
        };
        let (limits, shape_report) = crate::shape::plan(&config, shape, &mut cgroups, !read_only);
        // The rlimit fallbacks use the planned caps (the shape's, or bash's own where
        // smaller), the same values the report shows.
        let mut config = config;
        (config.memory_limit_bytes, config.pids_limit) = (limits.memory, limits.pids);
        let bwrap = find_bwrap(&config);
        let init = match &config.init_path {
            Some(p) => p.is_file().then(|| p.clone()),
            None => locate_init(),
        };
        let mut namespaces = vec!["user", "mount", "pid", "ipc", "uts", "cgroup"];
        if !config.network {
            namespaces.push("net");
        }
        let mechanism = |limit: &str| {
            shape_report
                .limits
                .iter()
                .find(|l| l.limit == limit)
                .map_or(LimitMechanism::None, |l| l.mechanism)
        };
        let (memory_limit, pids_limit) = (mechanism("memory"), mechanism("pids"));
        let (cpu_limit, disk_limit) = (mechanism("cpu"), mechanism("disk"));
        let mut report = SandboxReport {
            available: false,
            unavailable_reason: None,
            unsandboxed_fallback: false,
            bwrap: bwrap.clone(),
            bwrap_version: None,
            init: init.clone(),
            namespaces,
            landlock_abi: crate::init::landlock_abi_version(),
            landlock: None,
            seccomp: false,
            no_new_privs: false,
            special_files: SpecialFileGuard::None,
            memory_limit,
            pids_limit,
            cpu_limit,
            disk_limit,
            shape: shape_report,
            tmp_size_bytes: config.tmp_size_bytes,
            max_file_size_bytes: config.max_file_size_bytes,
            network: config.network,
        };
        let etc = match PreparedEtc::create(&config) {
            Ok(e) => Some(e),
            Err(e) => {
                tracing::warn!(error = %e, "cannot prepare the sandbox /etc copy; binding files one by one");
                None
            }
        };
        let etc_dir = etc.as_ref().map(|e| e.dir.as_path());
        let probe = match (&bwrap, &init) {
            (None, _) => Err(match &config.bwrap_path {
                Some(p) => format!("the configured bwrap_path {} does not exist", p.display()),
                None => "bubblewrap (bwrap) not found; install the `bubblewrap` package or set bash.bwrap_path".to_owned(),
            }),
            (_, None) => Err(match &config.init_path {
                Some(p) => format!("the configured init_path {} does not exist", p.display()),
                None => "the sandbox init helper (wasm-sandbox-init) was not found; set bash.init_path or WASM_SANDBOX_INIT".to_owned(),
            }),
            (Some(b), Some(i)) => {
                report.bwrap_version = Command::new(b)
                    .arg("--version")
                    .env_clear()
                    .output()
                    .ok()
                    .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
                probe_sandbox(&config, etc_dir, b, i)
            }
        };
        match probe {
            Ok(line) => {
                report.available = true;
                for field in line.split_whitespace() {
                    match field.split_once('=') {
                        Some(("landlock", v)) => report.landlock = Some(v.to_owned()),
                        Some(("seccomp", v)) => report.seccomp = v == "1",
                        Some(("no_new_privs", v)) => report.no_new_privs = v == "1",
                        Some(("special_files", v)) => {
                            report.special_files = match v {
                                "landlock" => SpecialFileGuard::Landlock,
                                "seccomp" => SpecialFileGuard::Seccomp,
                                _ => SpecialFileGuard::None,
                            };
                        }
                        _ => {}
                    }
                }
                tracing::info!(report = ?report, "bash sandbox ready");
            }
            Err(reason) => {
                report.unavailable_reason = Some(reason.clone());
                if config.allow_unsandboxed_bash_i_understand_the_risk {
                    report.unsandboxed_fallback = true;
                    tracing::error!(%reason, "bash sandbox UNAVAILABLE; allow_unsandboxed_bash_i_understand_the_risk is set, so bash will run UNSANDBOXED on the host");
                } else {
                    tracing::error!(%reason, "bash sandbox unavailable; bash calls will fail closed");
                }
            }
        }
        Self {
            config,
            report,
            cgroups,
            limits,
            etc,
        }
    }

    /// The probe's findings.
    pub fn report(&self) -> &SandboxReport {
        &self.report
    }

    /// The configuration.
    pub fn config(&self) -> &BashConfig {
        &self.config
    }

    /// Starts one session's sandboxed shell (or the opted-in unsandboxed shell).
    pub(crate) async fn launch(&self, spec: &BashSessionSpec) -> Result<Shell, SandboxError> {
        if !self.report.available {
            let reason = self
                .report
                .unavailable_reason
                .clone()
                .unwrap_or_else(|| "unknown".to_owned());
            if self.report.unsandboxed_fallback {
                return launch_unsandboxed(&self.config, spec).await;
            }
            tracing::error!(%reason, session = %spec.session_id, "refusing to run bash without its sandbox");
            return Err(SandboxError::Unavailable(reason));
        }
        let (Some(bwrap), Some(init)) = (&self.report.bwrap, &self.report.init) else {
            return Err(SandboxError::Unavailable("probe incomplete".to_owned()));
        };
        // bubblewrap resolves relative sources against its own cwd and follows
        // symlinks at mount time; resolve them here, once, to absolute directories.
        let dir = |what: &str, p: &Path| -> Result<PathBuf, SandboxError> {
            std::fs::canonicalize(p)
                .ok()
                .filter(|c| c.is_dir())
                .ok_or_else(|| {
                    SandboxError::Config(format!("{what} directory {} does not exist", p.display()))
                })
        };
        let workspace = dir("workspace", &spec.workspace)?;
        let outputs = dir("outputs", &spec.outputs)?;
        if spec.egress_dir.is_some() && self.config.network {
            return Err(SandboxError::Config(
                "networking (egress proxy) and bash.network = true are exclusive".into(),
            ));
        }
        let egress_dir = match &spec.egress_dir {
            Some(d) => Some(dir("egress socket", d)?),
            None => None,
        };
        valid_store_path(&spec.memory_stores)?;
        let mut stores = Vec::with_capacity(spec.memory_stores.len());
        for s in &spec.memory_stores {
            stores.push(StoreMount {
                host_path: dir("memory store", &s.host_path)?,
                ..s.clone()
            });
        }
        let cgroup_name = format!(
            "{}{}-{}-{}",
            crate::cgroup::SESSION_PREFIX,
            std::process::id(),
            sanitize(&spec.session_id),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let mut cgroup = SessionCgroup::create(&self.cgroups, &cgroup_name, &self.limits);
        // What the cgroup got against what the report promised (see `check_applied`).
        if let Err(e) = crate::cgroup::check_applied(
            &cgroup,
            &self.cgroups,
            &self.limits,
            self.report.shape.enforce,
        ) {
            let _ = tokio::task::spawn_blocking(move || cgroup.remove()).await;
            return Err(SandboxError::Start(e));
        }
        let (ready_r, ready_w) = std::io::pipe().map_err(start_err)?;
        let plan = Plan {
            config: &self.config,
            etc_dir: self.etc.as_ref().map(|e| e.dir.as_path()),
            init,
            ready_fd: ready_w.as_raw_fd(),
            workspace: Some(&workspace),
            outputs: Some(&outputs),
            stores: &stores,
            wasm_run_socket: spec.wasm_run_socket.as_deref(),
            egress_dir: egress_dir.as_deref(),
            memory_cgroup: cgroup.memory_limited(),
            pids_cgroup: cgroup.pids_limited(),
            probe: false,
        };
        let mut env = crate::env::build_env(&self.config, spec.env.as_ref());
        if spec.wasm_run_socket.is_some() && spec.env.is_none() {
            crate::env::append_path(&mut env, crate::wasm_run::SHIM_GUEST_DIR);
        }
        if egress_dir.is_some() {
            env.extend(crate::net::proxy_env());
        }
        let (out_r, out_w) = std::io::pipe().map_err(start_err)?;
        let mut cmd = Command::new(bwrap);
        cmd.args(plan.args())
            .env_clear()
            .envs(&env)
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(out_w.try_clone().map_err(start_err)?)
            .stderr(out_w);
        let procs: Vec<CString> = cgroup
            .procs_files()
            .iter()
            .filter_map(|p| CString::new(p.as_os_str().as_bytes()).ok())
            .collect();
        add_pre_exec(&mut cmd, procs, ready_w.as_raw_fd());
        let mut shell_cgroup = Some(cgroup);
        let child = match spawn_on_spawner(cmd, vec![OwnedFd::from(ready_w)]).await {
            Ok(c) => c,
            Err(e) => {
                if let Some(mut cg) = shell_cgroup.take() {
                    let _ = tokio::task::spawn_blocking(move || cg.remove()).await;
                }
                return Err(start_err(e));
            }
        };
        let mut shell = Shell::new(child, out_r, shell_cgroup, false)?;
        let timeout = Duration::from_millis(self.config.startup_timeout_ms);
        match read_ready(ready_r, timeout).await {
            Ok(line) if line.starts_with("ok") => {
                shell.find_reaper();
                Ok(shell)
            }
            other => {
                let detail = match other {
                    Ok(line) => line.strip_prefix("err ").unwrap_or(&line).to_owned(),
                    Err(e) => e,
                };
                let output = shell.drain_startup_output().await;
                shell.terminate().await;
                let msg = if output.is_empty() {
                    detail
                } else {
                    format!("{detail}: {output}")
                };
                tracing::error!(session = %spec.session_id, error = %msg, "bash sandbox failed to start");
                Err(SandboxError::Start(msg))
            }
        }
    }
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect()
}

fn start_err(e: std::io::Error) -> SandboxError {
    SandboxError::Start(e.to_string())
}

/// Reads the init's one-line status (`ok …` / `err …`).
async fn read_ready(ready: std::io::PipeReader, timeout: Duration) -> Result<String, String> {
    let mut rx = pipe::Receiver::from_owned_fd(OwnedFd::from(ready)).map_err(|e| e.to_string())?;
    let mut line = Vec::new();
    let read = async {
        let mut buf = [0u8; 512];
        loop {
            let n = rx.read(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("the sandbox exited during setup".to_owned());
            }
            line.extend_from_slice(&buf[..n]);
            if let Some(pos) = line.iter().position(|b| *b == b'\n') {
                return Ok(String::from_utf8_lossy(&line[..pos]).into_owned());
            }
        }
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| format!("the sandbox did not come up within {timeout:?}"))?
}

/// Runs the probe sandbox (blocking).
fn probe_sandbox(
    config: &BashConfig,
    etc_dir: Option<&Path>,
    bwrap: &Path,
    init: &Path,
) -> Result<String, String> {
    let plan = Plan {
        config,
        etc_dir,
        init,
        ready_fd: -1,
        workspace: None,
        outputs: None,
        stores: &[],
        wasm_run_socket: None,
        egress_dir: None,
        memory_cgroup: false,
        pids_cgroup: false,
        probe: true,
    };
    let mut args = plan.args();
    // No ready descriptor in probe mode: the report comes on stdout.
    if let Some(i) = args.iter().position(|a| a == "--ready-fd") {
        args.drain(i..i + 2);
    }
    let mut child = Command::new(bwrap)
        .args(args)
        .env_clear()
        .env("PATH", crate::config::DEFAULT_PATH)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", bwrap.display()))?;
    let deadline = std::time::Instant::now() + Duration::from_millis(config.startup_timeout_ms);
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(2));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("the probe sandbox did not finish in time".to_owned());
            }
        }
    };
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut out);
    }
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_string(&mut err);
    }
    let line = out
        .lines()
        .find(|l| l.starts_with("ok "))
        .map(str::to_owned);
    match line {
        Some(l) if status.success() => Ok(l),
        _ => Err(format!(
            "the probe sandbox failed ({status}): {}",
            err.trim().lines().last().unwrap_or("no message")
        )),
    }
}

/// Starts bash directly on the host: only with the explicit opt-in.
async fn launch_unsandboxed(
    config: &BashConfig,
    spec: &BashSessionSpec,
) -> Result<Shell, SandboxError> {
    tracing::warn!(session = %spec.session_id, "starting bash UNSANDBOXED on the host (allow_unsandboxed_bash_i_understand_the_risk)");
    let mut env = crate::env::build_env(config, spec.env.as_ref());
    if spec.env.is_none() && env.get("HOME").map(String::as_str) == Some(WORKSPACE_GUEST) {
        // There is no /workspace on the host: point HOME at the real directory.
        env.insert(
            "HOME".to_owned(),
            spec.workspace.to_string_lossy().into_owned(),
        );
    }
    let (out_r, out_w) = std::io::pipe().map_err(start_err)?;
    let mut cmd = Command::new(BASH[0]);
    cmd.args(&BASH[1..])
        .env_clear()
        .envs(&env)
        .current_dir(&spec.workspace)
        .stdin(Stdio::piped())
        .stdout(out_w.try_clone().map_err(start_err)?)
        .stderr(out_w)
        .process_group(0);
    let child = spawn_on_spawner(cmd, Vec::new()).await.map_err(start_err)?;
    Shell::new(child, out_r, None, true)
}

// ----------------------------------------------------------------------------
// A running shell and its teardown.

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
    usage: Option<crate::session::UsageHandle>,
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
    fn new(
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
    fn find_reaper(&mut self) {
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
    async fn drain_startup_output(&mut self) -> String {
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
    pub(crate) fn attach_usage(&mut self, usage: crate::session::UsageHandle) {
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
fn remove_cgroup(mut cg: SessionCgroup, usage: Option<&crate::session::UsageHandle>) {
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

    #[test]
    fn store_paths_are_checked() {
        let check = |paths: &[&str]| {
            let stores: Vec<StoreMount> = paths
                .iter()
                .map(|p| StoreMount {
                    guest_path: (*p).to_owned(),
                    host_path: "/nonexistent".into(),
                    read_only: false,
                })
                .collect();
            valid_store_path(&stores)
        };
        assert!(check(&["/mnt/memory/notes"]).is_ok());
        // Nested paths are accepted, as by the runtime and the worker.
        assert!(check(&["/mnt/memory/a/b", "/mnt/memory/c"]).is_ok());
        for bad in [
            "/mnt/memory",
            "/mnt/memory/../etc",
            "/etc/x",
            "/mnt/memory/a/./b",
            "/mnt/memory/..",
            "/mnt/memory/a/",
        ] {
            assert!(check(&[bad]).is_err(), "{bad}");
        }
        assert!(check(&["/mnt/memory/a", "/mnt/memory/a/b"]).is_err());
    }

    /// The bubblewrap arguments of a plan for a session with a workspace and outputs,
    /// a memory cgroup and no pids cgroup, as strings.
    fn plan_args(config: &BashConfig, egress_dir: Option<&Path>) -> Vec<String> {
        let plan = Plan {
            config,
            etc_dir: None,
            init: Path::new("/x/init"),
            ready_fd: 7,
            workspace: Some(Path::new("/w")),
            outputs: Some(Path::new("/o")),
            stores: &[],
            wasm_run_socket: None,
            egress_dir,
            memory_cgroup: true,
            pids_cgroup: false,
            probe: false,
        };
        plan.args()
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    /// With an egress directory: still a private network namespace, the directory
    /// bound read-only, the relay started, and Landlock's TCP rule left to the
    /// namespace (see `crate::net`).
    #[test]
    fn plan_with_egress_keeps_the_private_netns_and_starts_the_relay() {
        let config = BashConfig::default();
        let args = plan_args(&config, Some(Path::new("/h/net-1")));
        assert!(args.contains(&"--unshare-net".to_owned()));
        assert!(!args.contains(&"--no-net".to_owned()));
        assert!(
            args.windows(3)
                .any(|w| w == ["--ro-bind", "/h/net-1", crate::net::NET_GUEST_DIR])
        );
        assert!(args.windows(2).any(|w| w
            == [
                "--egress-relay".to_owned(),
                format!(
                    "{}:{}",
                    crate::net::RELAY_PORT,
                    crate::net::SOCKET_GUEST_PATH
                )
            ]));
    }

    #[test]
    fn plan_never_binds_secrets_and_ends_with_bash() {
        let mut config = BashConfig::default();
        config.etc_files.push("/etc/shadow".into());
        let args = plan_args(&config, None);
        assert!(!args.iter().any(|a| a.contains("shadow")));
        assert!(args.ends_with(&[
            "--".into(),
            "/bin/bash".into(),
            "--noprofile".into(),
            "--norc".into()
        ]));
        assert!(args.contains(&"--unshare-net".to_owned()));
        // The host directories the worker opens are Landlock `--rw-host` (no
        // FIFOs/sockets/devices); only the private tmpfs mounts are `--rw`.
        let landlock = |flag: &str| -> Vec<&str> {
            args.windows(2)
                .filter(|w| w[0] == flag)
                .map(|w| w[1].as_str())
                .collect()
        };
        assert_eq!(landlock("--rw-host"), [WORKSPACE_GUEST, OUTPUTS_GUEST]);
        assert_eq!(landlock("--rw"), ["/tmp", "/dev/shm"]);
        assert!(args.contains(&"nproc=512".to_owned()));
        assert!(!args.iter().any(|a| a.starts_with("as=")));
    }
}

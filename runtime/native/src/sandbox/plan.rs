//! bubblewrap's and the init's argument lists for one sandbox: what is mounted where,
//! the Landlock rules, the rlimits, and the command (see [the layers](super)).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use wasm_sandbox_fs::mounts::{GuestPath, Mount, WORKSPACE};

use super::etc::allowed_etc_files;
use super::{BASH, INIT_GUEST_PATH};
use crate::config::BashConfig;

/// The top-level names bound read-only from the host (or re-created as symlinks on
/// merged-/usr systems).
const ROOT_SYSTEM_DIRS: [&str; 6] = ["bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// Everything needed to build bubblewrap's and the init's argument lists.
pub(super) struct Plan<'a> {
    pub(super) config: &'a BashConfig,
    /// The prepared `/etc` copy; `None` = bind each allow-listed file.
    pub(super) etc_dir: Option<&'a Path>,
    pub(super) init: &'a Path,
    pub(super) ready_fd: i32,
    /// The session's mounts with their host directories resolved (none for the probe).
    pub(super) mounts: &'a [Mount],
    /// The session's `wasm-run` socket on the host, if the bridge is on.
    pub(super) wasm_run_socket: Option<&'a Path>,
    /// The session's egress socket directory on the host (see [`crate::net`]).
    pub(super) egress_dir: Option<&'a Path>,
    pub(super) memory_cgroup: bool,
    pub(super) pids_cgroup: bool,
    pub(super) probe: bool,
}

fn os(s: impl Into<OsString>) -> OsString {
    s.into()
}

impl Plan<'_> {
    pub(super) fn args(&self) -> Vec<OsString> {
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
        // The guest paths were checked as a whole by `MountSet::new` (the one mount-path
        // rule, `wasm_sandbox_fs::guest_path`): stores are canonical, strictly below
        // `/mnt/memory/`, nested allowed, no `..`, no store at or inside another.
        // bubblewrap creates a nested path's missing parents in the sandbox's private root
        // (a tmpfs), so a store at `/mnt/memory/team/notes` mounts like one at
        // `/mnt/memory/notes`; a path outside `/mnt/memory/` could bind a store over
        // `/usr`, `/proc` or the workspace, and an overlap would make bubblewrap create
        // directories inside another store's host folder.
        for m in self.mounts {
            let guest = m.guest.as_str();
            if m.read_only() {
                push(&[&"--ro-bind", &m.host, &guest]);
                landlock_ro.push(guest.to_owned());
            } else {
                push(&[&"--bind", &m.host, &guest]);
                landlock_rw_host.push(guest.to_owned());
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
        if self.mounts.iter().any(|m| m.guest == GuestPath::Workspace) {
            push(&[&"--chdir", &WORKSPACE]);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The bubblewrap arguments of a plan for a session with a workspace and outputs,
    /// a memory cgroup and no pids cgroup, as strings.
    fn plan_args(config: &BashConfig, egress_dir: Option<&Path>) -> Vec<String> {
        let plan = Plan {
            config,
            etc_dir: None,
            init: Path::new("/x/init"),
            ready_fd: 7,
            mounts: &[Mount::workspace("/w"), Mount::outputs("/o")],
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
        assert_eq!(
            landlock("--rw-host"),
            [WORKSPACE, wasm_sandbox_fs::mounts::OUTPUTS]
        );
        assert_eq!(landlock("--rw"), ["/tmp", "/dev/shm"]);
        assert!(args.contains(&"nproc=512".to_owned()));
        assert!(!args.iter().any(|a| a.starts_with("as=")));
    }

    /// Every mount of the session's `MountSet`, in its order: read-write ones are
    /// `--bind` plus a Landlock `--rw-host` rule, read-only ones `--ro-bind` plus `--ro`;
    /// bash starts in `/workspace`.
    #[test]
    fn plan_binds_each_mount_by_its_access() {
        use wasm_sandbox_fs::guest_path::MemoryMountPath;
        use wasm_sandbox_fs::mounts::{Access, MountSet, OUTPUTS};
        let store = |p: &str, access| {
            Mount::memory_store(MemoryMountPath::parse(p).unwrap(), format!("/h{p}"), access)
        };
        let set = MountSet::session(
            "/w",
            "/o",
            [
                store("/mnt/memory/ro", Access::ReadOnly),
                store("/mnt/memory/team/rw", Access::ReadWrite),
            ],
        )
        .unwrap();
        let config = BashConfig::default();
        let plan = Plan {
            config: &config,
            etc_dir: None,
            init: Path::new("/x/init"),
            ready_fd: 7,
            mounts: set.all(),
            wasm_run_socket: None,
            egress_dir: None,
            memory_cgroup: true,
            pids_cgroup: false,
            probe: false,
        };
        let args: Vec<String> = plan
            .args()
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let binds: Vec<[&str; 3]> = args
            .windows(3)
            .filter(|w| w[0] == "--bind" || (w[0] == "--ro-bind" && w[2].starts_with("/mnt/")))
            .map(|w| [w[0].as_str(), w[1].as_str(), w[2].as_str()])
            .collect();
        assert_eq!(
            binds,
            [
                ["--bind", "/w", WORKSPACE],
                ["--bind", "/o", OUTPUTS],
                ["--ro-bind", "/h/mnt/memory/ro", "/mnt/memory/ro"],
                ["--bind", "/h/mnt/memory/team/rw", "/mnt/memory/team/rw"],
            ]
        );
        let landlock = |flag: &str| -> Vec<&str> {
            args.windows(2)
                .filter(|w| w[0] == flag)
                .map(|w| w[1].as_str())
                .collect()
        };
        assert_eq!(
            landlock("--rw-host"),
            [WORKSPACE, OUTPUTS, "/mnt/memory/team/rw"]
        );
        assert!(landlock("--ro").contains(&"/mnt/memory/ro"));
        assert!(args.windows(2).any(|w| w == ["--chdir", WORKSPACE]));
    }
}

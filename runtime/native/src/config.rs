//! Configuration of the native bash sandbox (one per runtime, shared by all sessions).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Settings for bash's native sandbox. Every field has a default, so `{}` is a valid
/// configuration; unknown keys are rejected.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BashConfig {
    /// The bubblewrap binary. Default: `None` = `/usr/bin/bwrap`, else the first
    /// `bwrap` on `PATH`.
    pub bwrap_path: Option<PathBuf>,
    /// The sandbox init helper (`wasm-sandbox-init`, or a binary exposing
    /// [`sandbox_init_main`](crate::sandbox_init_main)). Default: `None` =
    /// [`locate_init`](crate::locate_init).
    pub init_path: Option<PathBuf>,
    /// Arguments placed before the init's own arguments, e.g. `["__sandbox-init"]`
    /// when `init_path` is a CLI with a hidden subcommand. Default: empty.
    pub init_args: Vec<String>,
    /// bash's own memory cap on top of the session shape (`[runtime.shape] memory`):
    /// bash's sandbox gets the smaller of the two (a cgroup, or without a memory cgroup
    /// `RLIMIT_AS` per process). Default: unset (`None`, written `"unlimited"`): bash's
    /// sandbox gets the shape's memory (4 GiB by default), the value that is reported and
    /// billed. File key `memory_limit = "2GiB"` to cap bash below the shape.
    #[serde(
        rename = "memory_limit",
        with = "wasm_sandbox_units::size_or_unlimited"
    )]
    pub memory_limit_bytes: Option<u64>,
    /// Process/thread cap for the whole sandbox (cgroup v1 `pids.max`; without a
    /// pids cgroup, `RLIMIT_NPROC`, which the kernel counts per user namespace).
    /// Default: 512. `None` = no cap (`pids_limit = "unlimited"` in the file).
    #[serde(with = "wasm_sandbox_units::count_or_unlimited")]
    pub pids_limit: Option<u64>,
    /// Size of the private tmpfs at `/tmp`. Default: 256 MiB (`tmp_size = "256MiB"`).
    #[serde(rename = "tmp_size", with = "wasm_sandbox_units::size")]
    pub tmp_size_bytes: u64,
    /// Size of the private tmpfs at `/dev/shm`. Default: 64 MiB (`shm_size = "64MiB"`).
    #[serde(rename = "shm_size", with = "wasm_sandbox_units::size")]
    pub shm_size_bytes: u64,
    /// `RLIMIT_FSIZE`: the largest file any sandboxed process may write, anywhere
    /// (the workspace has no total quota; see the `sandbox` module docs).
    /// Default: 1 GiB. `None` = unlimited. File key `max_file_size = "1GiB"`, or
    /// `"unlimited"`.
    #[serde(
        rename = "max_file_size",
        with = "wasm_sandbox_units::size_or_unlimited"
    )]
    pub max_file_size_bytes: Option<u64>,
    /// `RLIMIT_NOFILE` for sandboxed processes. Default: 4096. `None` = the worker's own
    /// limit (`max_open_files = "unlimited"` in the file).
    #[serde(with = "wasm_sandbox_units::count_or_unlimited")]
    pub max_open_files: Option<u64>,
    /// Put each sandbox in its own cgroup v1 memory/pids cgroup (created under this
    /// process's own cgroup) when the host allows it. Default: true.
    pub use_cgroups: bool,
    /// Share the host's network namespace. Default: false (a private network
    /// namespace with only loopback, and Landlock denies TCP bind/connect). When
    /// enabling it, add `/etc/resolv.conf` to `etc_files` for DNS.
    pub network: bool,
    /// Refuse to start bash unless Landlock is enforced inside the sandbox.
    /// Default: true.
    pub require_landlock: bool,
    /// uid/gid bash sees inside its user namespace (mapped to the worker's own uid).
    /// Default: 0 (bash looks like root; all capabilities are dropped regardless).
    pub sandbox_uid: u32,
    /// See `sandbox_uid`. Default: 0.
    pub sandbox_gid: u32,
    /// Host files/dirs of `/etc` bound read-only (missing ones are skipped).
    /// Default: the loader cache, passwd/group, nsswitch, hosts, localtime,
    /// alternatives and a few others; never `shadow` nor `/etc/ssl/private`.
    pub etc_files: Vec<PathBuf>,
    /// Extra host paths bound read-only at the same path (e.g. `/opt/tools`).
    /// Default: empty.
    pub extra_ro_binds: Vec<PathBuf>,
    /// Names copied from the worker's environment when a session gives no explicit
    /// environment. Default: locale and timezone variables only.
    pub env_allow: Vec<String>,
    /// Variables set when a session gives no explicit environment (after
    /// `env_allow`). Default: `PATH` (standard dirs) and `HOME=/workspace`.
    pub env_set: BTreeMap<String, String>,
    /// How long the sandbox may take to come up, in milliseconds. Default: 10 000 ms
    /// (`startup_timeout = "10s"` in the file).
    #[serde(rename = "startup_timeout", with = "wasm_sandbox_units::duration_ms")]
    pub startup_timeout_ms: u64,
    /// DANGER: when the sandbox cannot be set up, run bash directly on the host
    /// (like the reference SDK) instead of failing closed. Default: false.
    pub allow_unsandboxed_bash_i_understand_the_risk: bool,
}

/// The `/etc` files bound into the sandbox by default.
pub const DEFAULT_ETC_FILES: &[&str] = &[
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/passwd",
    "/etc/group",
    "/etc/nsswitch.conf",
    "/etc/hosts",
    "/etc/host.conf",
    "/etc/localtime",
    "/etc/timezone",
    "/etc/alternatives",
    "/etc/os-release",
    "/etc/debian_version",
    "/etc/mime.types",
    "/etc/magic",
    "/etc/inputrc",
    "/etc/protocols",
    "/etc/services",
    "/etc/ssl/certs",
    "/etc/ssl/openssl.cnf",
    "/etc/ca-certificates",
    "/etc/python3",
    "/etc/python3.11",
];

/// The worker variables copied by default.
pub const DEFAULT_ENV_ALLOW: &[&str] = &[
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "LC_MESSAGES",
    "LC_COLLATE",
    "LC_NUMERIC",
    "LC_TIME",
    "LC_MONETARY",
    "TZ",
];

/// The default `PATH` inside the sandbox.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl Default for BashConfig {
    fn default() -> Self {
        Self {
            bwrap_path: None,
            init_path: None,
            init_args: Vec::new(),
            memory_limit_bytes: None,
            pids_limit: Some(512),
            tmp_size_bytes: 256 << 20,
            shm_size_bytes: 64 << 20,
            max_file_size_bytes: Some(1 << 30),
            max_open_files: Some(4096),
            use_cgroups: true,
            network: false,
            require_landlock: true,
            sandbox_uid: 0,
            sandbox_gid: 0,
            etc_files: DEFAULT_ETC_FILES.iter().map(PathBuf::from).collect(),
            extra_ro_binds: Vec::new(),
            env_allow: DEFAULT_ENV_ALLOW.iter().map(|s| (*s).to_owned()).collect(),
            env_set: BTreeMap::from([
                ("PATH".to_owned(), DEFAULT_PATH.to_owned()),
                ("HOME".to_owned(), "/workspace".to_owned()),
            ]),
            startup_timeout_ms: 10_000,
            allow_unsandboxed_bash_i_understand_the_risk: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_object_is_the_default_and_unknown_keys_fail() {
        let c: BashConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, BashConfig::default());
        assert!(serde_json::from_str::<BashConfig>(r#"{"networking": true}"#).is_err());
        let c: BashConfig = serde_json::from_str(r#"{"pids_limit": "unlimited"}"#).unwrap();
        assert_eq!(c.pids_limit, None);
        assert!(!c.etc_files.iter().any(|p| p.ends_with("shadow")));
    }

    /// Sizes and durations are strings with units; `"unlimited"` is the written form of the
    /// documented "no cap" (`None`), which a TOML file could not express before.
    #[test]
    fn units_and_unlimited() {
        let c: BashConfig = serde_json::from_str(
            r#"{"memory_limit": "unlimited", "max_file_size": "unlimited", "pids_limit": "unlimited",
                "max_open_files": 1024, "tmp_size": "1GiB", "shm_size": "8MiB", "startup_timeout": "2s"}"#,
        )
        .unwrap();
        assert_eq!(c.memory_limit_bytes, None);
        assert_eq!(c.max_file_size_bytes, None);
        assert_eq!(c.pids_limit, None);
        assert_eq!(c.max_open_files, Some(1024));
        assert_eq!(c.tmp_size_bytes, 1 << 30);
        assert_eq!(c.shm_size_bytes, 8 << 20);
        assert_eq!(c.startup_timeout_ms, 2000);
        let c: BashConfig = serde_json::from_str(r#"{"memory_limit": "512MiB"}"#).unwrap();
        assert_eq!(c.memory_limit_bytes, Some(512 << 20));
        // The old keys and bare numbers are refused.
        assert!(serde_json::from_str::<BashConfig>(r#"{"memory_limit_bytes": 1}"#).is_err());
        assert!(serde_json::from_str::<BashConfig>(r#"{"memory_limit": 1}"#).is_err());
        assert!(serde_json::from_str::<BashConfig>(r#"{"startup_timeout": 10}"#).is_err());
        // Serialised back, the same strings.
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["memory_limit"], "512MiB");
        assert_eq!(v["startup_timeout"], "10s");
    }
}

//! The `[runtime.networking]` table, in the vocabulary of Anthropic's cloud
//! environments (`networking = {type = "limited", allowed_hosts = [...],
//! allow_package_managers, allow_mcp_servers}`, anthropic 2.10.0
//! `types/beta/beta_limited_network.py`), plus the self-hosted extras: a deny set,
//! a static host map, default ports, upstream aliases and the proxy's bounds.
//!
//! ```toml
//! [runtime.networking]
//! type = "limited"                       # "none" (default) | "limited" | "unrestricted"
//! allowed_hosts = ["git.corp.example", "*.corp.example:8443", "10.20.0.0/16"]
//! allow_package_managers = true          # PACKAGE_MANAGER_HOSTS_V1
//! deny = ["10.20.99.0/24"]               # extra ranges that are never reached
//! hosts = { "pypi.test" = "127.0.0.1" }  # static names (like curl --resolve)
//! ports = [80, 443]                      # ports of entries without ":port"
//!
//! [[runtime.networking.upstreams]]
//! name = "sister"                         # http://sister.internal/... in the sandbox
//! url = "https://api.sister.example/v1"
//! headers = { "x-api-key" = { env = "SISTER_KEY" } }
//! ```

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// A configuration error in `[runtime.networking]`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("networking: {0}")]
pub struct PolicyError(pub String);

/// Default per-session cap on concurrent proxied connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;
/// Default idle timeout of a proxied connection: 5 minutes.
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 300_000;
/// Default timeout of the proxy's connect to a destination: 10 s.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 10_000;
/// Default ports of `allowed_hosts` entries without an explicit `:port`.
pub const DEFAULT_PORTS: [u16; 2] = [80, 443];

/// Which network a session's bash gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkType {
    /// No network at all: a private network namespace with only loopback, and
    /// Landlock denies TCP bind/connect (exactly the behaviour before this table
    /// existed). The default.
    #[default]
    None,
    /// Only `allowed_hosts` (and the package registries when
    /// `allow_package_managers`), through the session's proxy.
    Limited,
    /// Any public host and port through the session's proxy; the deny set still
    /// holds (no loopback, link-local, private or configured ranges).
    Unrestricted,
}

/// Where an upstream header's value comes from. Only the worker's environment:
/// a credential never sits in the configuration file, and never in the sandbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderSource {
    /// Name of the worker's environment variable holding the value, read once at
    /// start; a missing variable is a configuration error.
    pub env: String,
}

/// A named upstream: `http://<name>.internal/<path>` inside the sandbox is
/// forwarded to `<url>/<path>` with `headers` added by the proxy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Alias (lowercase letters, digits and `-`): the sandbox uses
    /// `http://<name>.internal/`.
    pub name: String,
    /// Base URL (`https://…` or `http://…`); the request's path and query are
    /// appended to its path.
    pub url: String,
    /// Headers added to every forwarded request (replacing any the sandbox sent).
    #[serde(default)]
    pub headers: BTreeMap<String, HeaderSource>,
    /// Extra trusted roots (PEM file) for TLS to this upstream, added to the
    /// bundled webpki roots (e.g. the private CA of a sister API). Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<std::path::PathBuf>,
}

impl UpstreamConfig {
    /// The URL of `path` below this upstream (`url` followed by `path`, which
    /// must start with `/` and may not hold dot segments, so it cannot leave the
    /// base path the credentials are meant for). The one definition of an
    /// endpoint that wasi-nn remote models share (`upstream = "<name>"`).
    pub fn endpoint(&self, path: &str) -> Result<String, PolicyError> {
        let err = |why: String| PolicyError(format!("upstream {:?}: {why}", self.name));
        let base = reqwest::Url::parse(&self.url).map_err(|e| err(format!("url: {e}")))?;
        if !path.is_empty() && !path.starts_with('/') {
            return Err(err(format!("path {path:?} must start with '/'")));
        }
        crate::http::join(&base, path, None)
            .map(String::from)
            .ok_or_else(|| err(format!("path {path:?} may not contain dot segments")))
    }
}

/// The `[runtime.networking]` table. Every field has a default, so an empty
/// table means `type = "none"`; unknown keys are errors.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkingConfig {
    /// `"none"` (default), `"limited"` or `"unrestricted"`. Refused together with
    /// the legacy `[runtime.bash] network = true` (the host's whole network)
    /// unless `"none"`.
    #[serde(rename = "type")]
    pub kind: NetworkType,
    /// Hosts a `limited` session may reach: exact names (`pypi.org`), wildcards
    /// (`*.example.com`: any name strictly below `example.com`), IP addresses and
    /// CIDRs (`10.0.0.0/8`, `fd00::/8`), each with an optional `:port`
    /// (`[v6]:port` for IPv6); entries without a port get `ports`. A CIDR (or
    /// address) entry also admits addresses of the built-in deny set it covers,
    /// on that entry's ports only. Names are
    /// matched case-insensitively, without a trailing dot. Default: empty.
    pub allowed_hosts: Vec<String>,
    /// Add [`PACKAGE_MANAGER_HOSTS_V1`](crate::PACKAGE_MANAGER_HOSTS_V1) (ports 80
    /// and 443). Default: false.
    pub allow_package_managers: bool,
    /// Accepted for compatibility with the cloud vocabulary; changes nothing here:
    /// MCP servers are reached by Anthropic's API, not from the sandbox. Default:
    /// false.
    pub allow_mcp_servers: bool,
    /// Extra CIDRs never reached (added to the built-in deny set: loopback,
    /// link-local incl. 169.254.169.254, unspecified, multicast, broadcast,
    /// RFC 1918, CGNAT, IPv6 ULA). Unlike the built-in set, these win even over an
    /// `allowed_hosts` CIDR. `wasm-sandbox serve` appends the addresses of its
    /// own ops listener and of the Kubernetes API service. Default: empty.
    pub deny: Vec<String>,
    /// Static names resolved without DNS (`{ "pypi.test" = "127.0.0.1" }`), like
    /// curl's `--resolve`. The address is still checked against the deny set.
    /// Default: empty.
    pub hosts: BTreeMap<String, IpAddr>,
    /// Ports of `allowed_hosts` entries without `:port`. Default: `[80, 443]`.
    /// (`unrestricted` allows every port.)
    pub ports: Vec<u16>,
    /// Named upstreams (`[[runtime.networking.upstreams]]`). Default: none.
    pub upstreams: Vec<UpstreamConfig>,
    /// Per-session cap on concurrent proxied connections (more are refused with
    /// a 503 at once). Default: 64.
    pub max_connections: usize,
    /// A proxied connection with no byte either way for this long is closed.
    /// Default: `"5m"`.
    #[serde(rename = "idle_timeout", with = "wasm_sandbox_units::duration_ms")]
    pub idle_timeout_ms: u64,
    /// Timeout of the proxy's connect to a destination. Default: `"10s"`.
    #[serde(rename = "connect_timeout", with = "wasm_sandbox_units::duration_ms")]
    pub connect_timeout_ms: u64,
}

impl Default for NetworkingConfig {
    fn default() -> Self {
        Self {
            kind: NetworkType::None,
            allowed_hosts: Vec::new(),
            allow_package_managers: false,
            allow_mcp_servers: false,
            deny: Vec::new(),
            hosts: BTreeMap::new(),
            ports: DEFAULT_PORTS.to_vec(),
            upstreams: Vec::new(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            idle_timeout_ms: DEFAULT_IDLE_TIMEOUT_MS,
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
        }
    }
}

impl NetworkingConfig {
    /// True when sessions get a proxy (`limited` or `unrestricted`).
    pub fn enabled(&self) -> bool {
        self.kind != NetworkType::None
    }
}

//! The compiled policy: which `(host, port)` a session may reach, and which
//! addresses are never reached.
//!
//! A request is decided in two phases, and both must pass:
//!
//! 1. **The name** (before any DNS query): it must match an `allowed_hosts` entry
//!    (or the package-manager list) including the port, or the policy is
//!    `unrestricted`. An IP literal must be covered by a CIDR/address entry. A
//!    name that matches nothing is refused *without resolving it*: resolving
//!    attacker-chosen names would let a session leak data through DNS queries to
//!    a server it controls, even though no connection follows. The session's
//!    narrowing list (metadata [`SESSION_ALLOWED_HOSTS_KEY`]) must match too.
//! 2. **Every resolved address**: none may lie in the deny set. The built-in set
//!    (loopback, link-local incl. the cloud metadata address 169.254.169.254,
//!    unspecified, multicast, broadcast, RFC 1918, CGNAT, IPv6 ULA and the IPv4
//!    forms embedded in IPv6) is where the worker's pod, its cluster and the
//!    node's services live; only a CIDR/address entry of the *operator's*
//!    `allowed_hosts` that covers an address lifts it, and only for that entry's
//!    ports (so `10.0.0.5/32:5432` opens the database, not the host's kubelet or
//!    ssh port). The operator's `deny` list
//!    wins over everything. IPv4-mapped IPv6 addresses are checked as IPv4, so
//!    `::ffff:127.0.0.1` is loopback.
//!
//! The proxy then connects to exactly the addresses that were checked (see
//! [`crate::proxy`]), so a name cannot be re-resolved to something else between
//! the check and the connect (no DNS rebinding).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub use crate::config::PolicyError;
use crate::config::{NetworkType, NetworkingConfig};

/// The session metadata key that narrows the operator's list: a comma-separated
/// list in the `allowed_hosts` syntax. A session then reaches only what both its
/// list and the operator's policy admit (an intersection: a session can never
/// widen the policy). An empty value denies everything.
pub const SESSION_ALLOWED_HOSTS_KEY: &str = "sandbox.allowed_hosts";

/// The public package registries admitted by `allow_package_managers = true`
/// (ports 80 and 443). Versioned: a change of this list is a new constant, so an
/// operator's policy never changes under them by an upgrade without a note.
pub const PACKAGE_MANAGER_HOSTS_V1: &[&str] = &[
    // Python
    "pypi.org",
    "files.pythonhosted.org",
    // npm
    "registry.npmjs.org",
    "registry.yarnpkg.com",
    // Rust
    "crates.io",
    "index.crates.io",
    "static.crates.io",
    "static.rust-lang.org",
    // Debian / Ubuntu
    "deb.debian.org",
    "security.debian.org",
    "archive.ubuntu.com",
    "security.ubuntu.com",
    "ports.ubuntu.com",
    // Go
    "proxy.golang.org",
    "sum.golang.org",
    // RubyGems
    "rubygems.org",
    "index.rubygems.org",
    // GitHub release downloads (and source archives)
    "github.com",
    "codeload.github.com",
    "objects.githubusercontent.com",
    "release-assets.githubusercontent.com",
];

/// Why the policy refused a request: the text after `refused <host>:<port>: ` in
/// the 403 body.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The name (or address) matches no `allowed_hosts` entry.
    #[error("not in allowed_hosts")]
    NotAllowed,
    /// The name is listed, but not with this port.
    #[error("port {0} not allowed")]
    PortNotAllowed(u16),
    /// The session's own list (metadata `sandbox.allowed_hosts`) does not admit it.
    #[error("not in the session's {SESSION_ALLOWED_HOSTS_KEY}")]
    NarrowedBySession,
    /// A resolved address lies in the deny set.
    #[error("resolves to a denied range ({0})")]
    DeniedRange(IpAddr),
    /// The host is not a valid name or address.
    #[error("invalid host name")]
    InvalidHost,
}

impl Refusal {
    /// A short, fixed word for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::NotAllowed => "not_allowed",
            Refusal::PortNotAllowed(_) => "port",
            Refusal::NarrowedBySession => "session",
            Refusal::DeniedRange(_) => "denied_range",
            Refusal::InvalidHost => "invalid",
        }
    }
}

/// An IP network (`addr/prefix`); IPv4-mapped IPv6 networks are stored as IPv4.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// `a.b.c.d/n`, `v6/n`, or a bare address (a host route).
    pub fn parse(s: &str) -> Result<Cidr, PolicyError> {
        let bad = || PolicyError(format!("invalid CIDR {s:?}"));
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(Cidr::new(addr, prefix))
    }

    const fn v4(a: [u8; 4], prefix: u8) -> Cidr {
        Cidr {
            addr: IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3])),
            prefix,
        }
    }

    const fn v6(a: Ipv6Addr, prefix: u8) -> Cidr {
        Cidr {
            addr: IpAddr::V6(a),
            prefix,
        }
    }

    fn new(addr: IpAddr, prefix: u8) -> Cidr {
        match addr {
            IpAddr::V6(v6) if prefix >= 96 => match v6.to_ipv4_mapped() {
                Some(v4) => Cidr {
                    addr: IpAddr::V4(v4),
                    prefix: prefix - 96,
                },
                None => Cidr { addr, prefix },
            },
            _ => Cidr { addr, prefix },
        }
    }

    /// Whether `ip` (IPv4-mapped IPv6 taken as IPv4) lies in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// IPv4-mapped IPv6 (`::ffff:a.b.c.d`) as IPv4; everything else unchanged.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The built-in deny set (see the module docs).
pub const BUILTIN_DENY: &[Cidr] = &[
    Cidr::v4([0, 0, 0, 0], 8),       // "this network", unspecified
    Cidr::v4([10, 0, 0, 0], 8),      // RFC 1918
    Cidr::v4([100, 64, 0, 0], 10),   // CGNAT (RFC 6598)
    Cidr::v4([127, 0, 0, 0], 8),     // loopback
    Cidr::v4([169, 254, 0, 0], 16),  // link-local, cloud metadata 169.254.169.254
    Cidr::v4([172, 16, 0, 0], 12),   // RFC 1918
    Cidr::v4([192, 0, 0, 0], 24),    // IETF protocol assignments
    Cidr::v4([192, 0, 2, 0], 24),    // TEST-NET-1
    Cidr::v4([192, 88, 99, 0], 24),  // 6to4 relay anycast
    Cidr::v4([198, 51, 100, 0], 24), // TEST-NET-2
    Cidr::v4([203, 0, 113, 0], 24),  // TEST-NET-3
    Cidr::v4([192, 168, 0, 0], 16),  // RFC 1918
    Cidr::v4([198, 18, 0, 0], 15),   // benchmarking
    Cidr::v4([224, 0, 0, 0], 4),     // multicast
    Cidr::v4([240, 0, 0, 0], 4),     // reserved, broadcast
    Cidr::v6(Ipv6Addr::UNSPECIFIED, 128),
    Cidr::v6(Ipv6Addr::LOCALHOST, 128),
    // IPv4-compatible (deprecated `::a.b.c.d`, e.g. `::127.0.0.1`): no IPv4 check applies.
    Cidr::v6(Ipv6Addr::UNSPECIFIED, 96),
    Cidr::v6(Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96), // NAT64
    Cidr::v6(Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0), 48), // local-use NAT64
    Cidr::v6(Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0), 64),     // discard-only
    Cidr::v6(Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 32),    // Teredo (embeds IPv4)
    Cidr::v6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32), // documentation
    Cidr::v6(Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16),    // 6to4
    Cidr::v6(Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7),     // ULA
    Cidr::v6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10),    // link-local
    Cidr::v6(Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10),    // site-local
    Cidr::v6(Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8),     // multicast
];

#[derive(Clone, Debug, PartialEq, Eq)]
enum HostPattern {
    /// An exact name (lowercase, no trailing dot).
    Exact(String),
    /// `*.suffix`: stored as `.suffix`; matches names strictly below it.
    Below(String),
    /// An address or network.
    Net(Cidr),
}

/// One `allowed_hosts` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    pattern: HostPattern,
    ports: Vec<u16>,
}

/// Lowercases `host`, strips one trailing dot and IPv6 brackets, and checks it is
/// a plausible name (letters, digits, `-`, `_`, `.`) or an IP literal.
pub fn normalize_host(host: &str) -> Option<String> {
    let h = host.strip_suffix('.').unwrap_or(host);
    let h = h
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(h);
    if h.is_empty() || h.len() > 253 {
        return None;
    }
    if h.parse::<IpAddr>().is_ok() {
        return Some(h.to_ascii_lowercase());
    }
    let ok = h
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !h.starts_with('.')
        && !h.contains("..");
    ok.then(|| h.to_ascii_lowercase())
}

fn parse_entry(raw: &str, default_ports: &[u16]) -> Result<Entry, PolicyError> {
    let bad = |why: &str| PolicyError(format!("allowed_hosts entry {raw:?}: {why}"));
    let s = raw.trim();
    // Split an optional port: `[v6...]:port`, `name:port`, `a.b.c.d/n:port`.
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
        match after.strip_prefix(':') {
            Some(p) => (h, Some(p)),
            None if after.is_empty() => (h, None),
            None => return Err(bad("unexpected text after ']'")),
        }
    } else if s.matches(':').count() == 1 {
        let (h, p) = s.split_once(':').ok_or_else(|| bad("bad port"))?;
        (h, Some(p))
    } else {
        (s, None)
    };
    let ports = match port {
        Some(p) => vec![
            p.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| bad("bad port"))?,
        ],
        None => default_ports.to_vec(),
    };
    let pattern = if host.contains('/') || host.parse::<IpAddr>().is_ok() {
        HostPattern::Net(Cidr::parse(host)?)
    } else if let Some(suffix) = host.strip_prefix("*.") {
        let n = normalize_host(suffix).ok_or_else(|| bad("invalid name"))?;
        HostPattern::Below(format!(".{n}"))
    } else {
        if host.contains('*') {
            return Err(bad(
                "a wildcard is only allowed as a leading \"*.\" (use type = \"unrestricted\" for any host)",
            ));
        }
        HostPattern::Exact(normalize_host(host).ok_or_else(|| bad("invalid name"))?)
    };
    Ok(Entry { pattern, ports })
}

fn parse_list<S: AsRef<str>>(list: &[S], ports: &[u16]) -> Result<Vec<Entry>, PolicyError> {
    list.iter()
        .map(|e| parse_entry(e.as_ref(), ports))
        .collect()
}

/// How a list of entries judges one request.
#[derive(Debug, PartialEq, Eq)]
enum ListMatch {
    Yes,
    WrongPort,
    No,
}

fn match_list(entries: &[Entry], host: &str, ip: Option<IpAddr>, port: u16) -> ListMatch {
    let mut wrong_port = false;
    for e in entries {
        let host_ok = match (&e.pattern, ip) {
            (HostPattern::Net(c), Some(ip)) => c.contains(ip),
            (HostPattern::Net(_), None) => false,
            (HostPattern::Exact(n), None) => n == host,
            (HostPattern::Below(suffix), None) => host.ends_with(suffix.as_str()),
            (_, Some(_)) => false,
        };
        if host_ok {
            if e.ports.contains(&port) {
                return ListMatch::Yes;
            }
            wrong_port = true;
        }
    }
    if wrong_port {
        ListMatch::WrongPort
    } else {
        ListMatch::No
    }
}

/// A session's narrowing of the operator's list (metadata
/// [`SESSION_ALLOWED_HOSTS_KEY`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Narrowing {
    entries: Vec<Entry>,
}

/// The operator's compiled policy (immutable; shared by every session).
#[derive(Clone, Debug)]
pub struct Policy {
    kind: NetworkType,
    entries: Vec<Entry>,
    /// Networks of the operator's `allowed_hosts` with their ports: these lift the
    /// built-in deny set, but only for those ports (an entry `10.0.0.5/32:5432`
    /// must not open the database host's ssh or kubelet port as well).
    allowed_nets: Vec<(Cidr, Vec<u16>)>,
    extra_deny: Vec<Cidr>,
    hosts: BTreeMap<String, IpAddr>,
    ports: Vec<u16>,
}

impl Policy {
    /// Compiles the configuration; every entry is checked.
    pub fn new(config: &NetworkingConfig) -> Result<Policy, PolicyError> {
        if config.ports.contains(&0) {
            return Err(PolicyError("ports: 0 is not a port".into()));
        }
        let mut entries = parse_list(&config.allowed_hosts, &config.ports)?;
        if config.allow_package_managers {
            entries.extend(parse_list(PACKAGE_MANAGER_HOSTS_V1, &DEFAULT_WEB_PORTS)?);
        }
        let allowed_nets = entries
            .iter()
            .filter_map(|e| match e.pattern {
                HostPattern::Net(c) => Some((c, e.ports.clone())),
                _ => None,
            })
            .collect();
        let extra_deny = config
            .deny
            .iter()
            .map(|d| Cidr::parse(d))
            .collect::<Result<_, _>>()?;
        let mut hosts = BTreeMap::new();
        for (name, ip) in &config.hosts {
            let n = normalize_host(name)
                .filter(|n| n.parse::<IpAddr>().is_err())
                .ok_or_else(|| PolicyError(format!("hosts: invalid name {name:?}")))?;
            hosts.insert(n, *ip);
        }
        Ok(Policy {
            kind: config.kind,
            entries,
            allowed_nets,
            extra_deny,
            hosts,
            ports: config.ports.clone(),
        })
    }

    /// The policy's type.
    pub fn kind(&self) -> NetworkType {
        self.kind
    }

    /// Adds a range that is never reached (e.g. the worker's own ops listener),
    /// winning over `allowed_hosts` like the configured `deny` list.
    pub fn deny_also(&mut self, cidr: Cidr) {
        self.extra_deny.push(cidr);
    }

    /// Parses a session's narrowing list (comma-separated, `allowed_hosts`
    /// syntax, the operator's default ports).
    pub fn narrowing(&self, list: &str) -> Result<Narrowing, PolicyError> {
        let items: Vec<&str> = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        Ok(Narrowing {
            entries: parse_list(&items, &self.ports)?,
        })
    }

    /// Phase 1: the name (or IP literal) and port, before any DNS query. `host` is
    /// normalised here.
    pub fn check_name(
        &self,
        host: &str,
        port: u16,
        narrowing: Option<&Narrowing>,
    ) -> Result<String, Refusal> {
        let host = normalize_host(host).ok_or(Refusal::InvalidHost)?;
        if self.kind == NetworkType::None {
            return Err(Refusal::NotAllowed);
        }
        let ip = host.parse::<IpAddr>().ok();
        if self.kind == NetworkType::Limited {
            match match_list(&self.entries, &host, ip, port) {
                ListMatch::Yes => {}
                ListMatch::WrongPort => return Err(Refusal::PortNotAllowed(port)),
                // A static name is admitted by a CIDR entry covering its address.
                ListMatch::No => match self.hosts.get(&host) {
                    Some(ip) => match match_list(&self.entries, &host, Some(*ip), port) {
                        ListMatch::Yes => {}
                        ListMatch::WrongPort => return Err(Refusal::PortNotAllowed(port)),
                        ListMatch::No => return Err(Refusal::NotAllowed),
                    },
                    None => return Err(Refusal::NotAllowed),
                },
            }
        }
        if let Some(n) = narrowing {
            let static_ip = self.hosts.get(&host).copied();
            let ok = match_list(&n.entries, &host, ip, port) == ListMatch::Yes
                || static_ip.is_some_and(|s| {
                    match_list(&n.entries, &host, Some(s), port) == ListMatch::Yes
                });
            if !ok {
                return Err(Refusal::NarrowedBySession);
            }
        }
        Ok(host)
    }

    /// Whether the session's narrowing list admits `host:port` (used for upstream
    /// aliases, which are outside `allowed_hosts` but not outside a narrowing).
    pub fn check_name_in(&self, n: &Narrowing, host: &str, port: u16) -> Result<(), Refusal> {
        let host = normalize_host(host).ok_or(Refusal::InvalidHost)?;
        let ip = host.parse::<IpAddr>().ok();
        match match_list(&n.entries, &host, ip, port) {
            ListMatch::Yes => Ok(()),
            _ => Err(Refusal::NarrowedBySession),
        }
    }

    /// Phase 2: one resolved address, for a connection to `port`. A built-in
    /// denied range is lifted only by an operator CIDR/address entry that covers
    /// `ip` *and* lists `port` (in `unrestricted` too, where the name phase checks
    /// no port): the exception is exactly as wide as the operator wrote it.
    pub fn check_addr(&self, ip: IpAddr, port: u16) -> Result<(), Refusal> {
        let ip = canonical(ip);
        if self.extra_deny.iter().any(|c| c.contains(ip)) {
            return Err(Refusal::DeniedRange(ip));
        }
        if BUILTIN_DENY.iter().any(|c| c.contains(ip))
            && !self
                .allowed_nets
                .iter()
                .any(|(c, ports)| c.contains(ip) && ports.contains(&port))
        {
            return Err(Refusal::DeniedRange(ip));
        }
        Ok(())
    }

    /// The static address of `host` (normalised), if the `hosts` map has one.
    /// `localhost` and names below it are loopback (RFC 6761 §6.3) without asking
    /// any resolver (the proxy resolves absolute names, which `/etc/hosts` may not
    /// answer), so they meet the deny set like `127.0.0.1` does.
    pub fn static_host(&self, host: &str) -> Option<IpAddr> {
        self.hosts.get(host).copied().or_else(|| {
            (host == "localhost" || host.ends_with(".localhost"))
                .then_some(IpAddr::V4(Ipv4Addr::LOCALHOST))
        })
    }
}

/// Ports of the package-manager hosts.
const DEFAULT_WEB_PORTS: [u16; 2] = [80, 443];

#[cfg(test)]
mod tests;

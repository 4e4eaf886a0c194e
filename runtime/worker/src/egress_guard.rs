//! What `serve` adds to `[runtime.networking]` from its own settings before the
//! runtime is built: the worker's own listeners in the deny set, and the
//! worker's `--ca-cert` roots for TLS to upstream aliases.
//!
//! # The ops listener
//!
//! `/metrics`, `/queue` and the health endpoints are for the operator, never for
//! a session. The built-in deny set already holds loopback and the private
//! ranges, but an operator CIDR entry (`allowed_hosts = ["10.0.0.0/8"]`, to reach
//! internal services) lifts the private ranges, and the pod's own address is in
//! them. So the ops listener's addresses join the *configured* deny list, which
//! wins over every `allowed_hosts` entry: the listener's address when it binds
//! one, or every interface address of the host (`getifaddrs`) when it binds
//! `0.0.0.0`/`::` (it answers on all of them). In Kubernetes the API server's
//! service address (`KUBERNETES_SERVICE_HOST`) is denied too; the pod and
//! service ranges themselves cannot be discovered from inside a pod, so an
//! operator who allows a private CIDR covering them should list them in `deny`
//! (see `deploy/README.md`).

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use wasm_sandbox_runtime::RuntimeConfig;

/// The addresses a listener bound to `addr` answers on: `addr`'s own address,
/// or, for an unspecified address, every address of the host's interfaces.
pub fn listener_addresses(addr: SocketAddr) -> Vec<IpAddr> {
    if !addr.ip().is_unspecified() {
        return vec![addr.ip()];
    }
    let mut out = interface_addresses();
    // Whatever getifaddrs says, loopback always reaches the listener.
    out.push(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    out.push(IpAddr::V6(std::net::Ipv6Addr::LOCALHOST));
    out.sort();
    out.dedup();
    out
}

/// Every IPv4 and IPv6 address on the host's interfaces (empty when
/// `getifaddrs` fails).
pub fn interface_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below with freeifaddrs;
    // we only read `ifa_addr` of entries whose family says which sockaddr it is.
    unsafe {
        if libc::getifaddrs(&mut head) != 0 {
            return out;
        }
        let mut cur = head;
        while !cur.is_null() {
            let sa = (*cur).ifa_addr;
            if !sa.is_null() {
                match i32::from((*sa).sa_family) {
                    libc::AF_INET => {
                        let sin = &*(sa as *const libc::sockaddr_in);
                        out.push(IpAddr::V4(std::net::Ipv4Addr::from(u32::from_be(
                            sin.sin_addr.s_addr,
                        ))));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(sa as *const libc::sockaddr_in6);
                        out.push(IpAddr::V6(std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
                    }
                    _ => {}
                }
            }
            cur = (*cur).ifa_next;
        }
        libc::freeifaddrs(head);
    }
    out
}

/// Applies the worker's settings to `runtime.networking` (nothing when
/// networking is off): the ops listener's addresses and the Kubernetes API
/// server's service address (`kubernetes_service_host`, the value of
/// `KUBERNETES_SERVICE_HOST`) are appended to `deny`; upstreams without their
/// own `ca_cert` get the worker's `--ca-cert` file, so one private CA serves both
/// the control plane and the sister APIs.
pub fn apply(
    runtime: &mut RuntimeConfig,
    ops_listen: Option<SocketAddr>,
    kubernetes_service_host: Option<&str>,
    ca_cert: Option<&Path>,
) {
    let net = &mut runtime.networking;
    if !net.enabled() {
        return;
    }
    let mut deny: Vec<IpAddr> = ops_listen.map(listener_addresses).unwrap_or_default();
    if let Some(ip) = kubernetes_service_host.and_then(|h| h.trim().parse::<IpAddr>().ok()) {
        deny.push(ip);
    }
    for ip in deny {
        let entry = ip.to_string();
        if !net.deny.contains(&entry) {
            net.deny.push(entry);
        }
    }
    if let Some(ca) = ca_cert {
        for u in &mut net.upstreams {
            if u.ca_cert.is_none() {
                u.ca_cert = Some(ca.to_path_buf());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limited() -> RuntimeConfig {
        toml::from_str(
            "[networking]\ntype = \"limited\"\nallowed_hosts = [\"10.0.0.0/8\", \"127.0.0.0/8\"]\n\
             [[networking.upstreams]]\nname = \"a\"\nurl = \"https://a.example\"\n\
             [[networking.upstreams]]\nname = \"b\"\nurl = \"https://b.example\"\nca_cert = \"/own.pem\"",
        )
        .unwrap()
    }

    /// Review finding: the ops listener was not in the deny set. Its address
    /// (or every interface address for 0.0.0.0) is denied, winning over an
    /// allowed CIDR that covers it.
    #[test]
    fn the_ops_listener_is_denied_over_allowed_cidrs() {
        let mut rt = limited();
        apply(
            &mut rt,
            Some("10.1.2.3:9090".parse().unwrap()),
            Some("10.96.0.1"),
            None,
        );
        assert_eq!(rt.networking.deny, ["10.1.2.3", "10.96.0.1"]);
        let p = wasm_sandbox_egress::Policy::new(&rt.networking).unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(p.check_addr(ip("10.1.2.3"), 443).is_err());
        assert!(p.check_addr(ip("10.96.0.1"), 443).is_err());
        assert!(p.check_addr(ip("10.1.2.4"), 443).is_ok());

        let mut rt = limited();
        apply(&mut rt, Some("0.0.0.0:9090".parse().unwrap()), None, None);
        assert!(
            rt.networking.deny.contains(&"127.0.0.1".to_owned()),
            "{:?}",
            rt.networking.deny
        );
        for ip in interface_addresses() {
            assert!(rt.networking.deny.contains(&ip.to_string()), "{ip}");
        }
        let p = wasm_sandbox_egress::Policy::new(&rt.networking).unwrap();
        // The operator's 127.0.0.0/8 entry lifts loopback, except the listener's.
        assert!(p.check_addr("127.0.0.1".parse().unwrap(), 443).is_err());
        assert!(p.check_addr("127.0.0.2".parse().unwrap(), 443).is_ok());
    }

    #[test]
    fn networking_off_is_left_alone_and_ca_fills_upstreams_without_their_own() {
        let mut rt = RuntimeConfig::default();
        apply(
            &mut rt,
            Some("0.0.0.0:9090".parse().unwrap()),
            Some("10.96.0.1"),
            None,
        );
        assert!(rt.networking.deny.is_empty());
        let mut rt = limited();
        apply(
            &mut rt,
            None,
            Some("not-an-ip"),
            Some(Path::new("/worker-ca.pem")),
        );
        assert!(rt.networking.deny.is_empty());
        let cas: Vec<_> = rt
            .networking
            .upstreams
            .iter()
            .map(|u| u.ca_cert.clone().unwrap())
            .collect();
        assert_eq!(cas, [Path::new("/worker-ca.pem"), Path::new("/own.pem")]);
    }
}

use super::*;

fn policy(toml_text: &str) -> Policy {
    let c: NetworkingConfig = toml::from_str(toml_text).unwrap();
    Policy::new(&c).unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn config_defaults_units_and_unknown_keys() {
    let c: NetworkingConfig = toml::from_str("").unwrap();
    assert_eq!(c, NetworkingConfig::default());
    assert_eq!(c.kind, NetworkType::None);
    assert!(!c.enabled());
    assert_eq!(c.ports, [80, 443]);
    let c: NetworkingConfig = toml::from_str(
        r#"type = "limited"
        idle_timeout = "30s"
        connect_timeout = "250ms"
        hosts = { "pypi.test" = "127.0.0.1" }
        [[upstreams]]
        name = "sister"
        url = "https://sister.example/v1"
        headers = { "x-api-key" = { env = "SISTER_KEY" } }"#,
    )
    .unwrap();
    assert!(c.enabled());
    assert_eq!(c.idle_timeout_ms, 30_000);
    assert_eq!(c.connect_timeout_ms, 250);
    assert_eq!(c.hosts["pypi.test"], ip("127.0.0.1"));
    assert_eq!(c.upstreams[0].headers["x-api-key"].env, "SISTER_KEY");
    for bad in [
        "typ = \"limited\"",
        "type = \"open\"",
        "idle_timeout = 30",
        "hosts = { \"a\" = \"not-an-ip\" }",
        "[[upstreams]]\nname = \"a\"\nurl = \"http://x\"\nkey = \"secret\"",
        "[[upstreams]]\nname = \"a\"\nurl = \"http://x\"\nheaders = { h = { value = \"secret\" } }",
    ] {
        assert!(toml::from_str::<NetworkingConfig>(bad).is_err(), "{bad}");
    }
}

#[test]
fn bad_entries_are_config_errors() {
    for bad in [
        "*",
        "a.*.com",
        "exa mple.com",
        "host:0",
        "host:99999",
        "10.0.0.0/33",
        "[::1",
        "..com",
    ] {
        let c = NetworkingConfig {
            kind: NetworkType::Limited,
            allowed_hosts: vec![bad.into()],
            ..Default::default()
        };
        assert!(Policy::new(&c).is_err(), "{bad}");
    }
    let c = NetworkingConfig {
        deny: vec!["nope".into()],
        ..Default::default()
    };
    assert!(Policy::new(&c).is_err());
}

#[test]
fn exact_names_wildcards_and_ports() {
    let p = policy(
        r#"type = "limited"
        allowed_hosts = ["pypi.org", "*.corp.example", "git.corp.example:8443", "Upper.Example."]"#,
    );
    assert_eq!(p.check_name("pypi.org", 443, None), Ok("pypi.org".into()));
    assert_eq!(p.check_name("PYPI.ORG.", 80, None), Ok("pypi.org".into()));
    assert_eq!(
        p.check_name("upper.example", 443, None),
        Ok("upper.example".into())
    );
    // Exact means exact: no subdomains, no lookalikes.
    assert_eq!(
        p.check_name("www.pypi.org", 443, None),
        Err(Refusal::NotAllowed)
    );
    assert_eq!(
        p.check_name("pypi.org.evil.com", 443, None),
        Err(Refusal::NotAllowed)
    );
    assert_eq!(
        p.check_name("evilpypi.org", 443, None),
        Err(Refusal::NotAllowed)
    );
    // Wildcards match strictly below the suffix, any depth, not the apex.
    assert!(p.check_name("a.corp.example", 443, None).is_ok());
    assert!(p.check_name("a.b.corp.example", 80, None).is_ok());
    assert_eq!(
        p.check_name("corp.example", 443, None),
        Err(Refusal::NotAllowed)
    );
    assert_eq!(
        p.check_name("xcorp.example", 443, None),
        Err(Refusal::NotAllowed)
    );
    // Ports: default [80, 443] unless the entry names one.
    assert_eq!(
        p.check_name("pypi.org", 25, None),
        Err(Refusal::PortNotAllowed(25))
    );
    assert!(p.check_name("git.corp.example", 8443, None).is_ok()); // explicit entry
    assert!(p.check_name("other.corp.example", 8443, None).is_err());
    assert_eq!(
        p.check_name("pypi.org", 25, None).unwrap_err().to_string(),
        "port 25 not allowed"
    );
    assert_eq!(
        p.check_name("x.test", 443, None).unwrap_err().to_string(),
        "not in allowed_hosts"
    );
    assert_eq!(
        p.check_name("bad host", 80, None),
        Err(Refusal::InvalidHost)
    );
    assert_eq!(p.check_name("", 80, None), Err(Refusal::InvalidHost));
}

#[test]
fn configured_ports_and_ipv6_entries() {
    let p = policy(
        r#"type = "limited"
        ports = [8080]
        allowed_hosts = ["a.test", "[2001:db8::/32]:9000", "2001:db9::1", "198.51.100.0/24:7000"]"#,
    );
    assert!(p.check_name("a.test", 8080, None).is_ok());
    assert_eq!(
        p.check_name("a.test", 443, None),
        Err(Refusal::PortNotAllowed(443))
    );
    assert!(p.check_name("[2001:db8::5]", 9000, None).is_ok());
    assert_eq!(
        p.check_name("2001:db8::5", 8080, None),
        Err(Refusal::PortNotAllowed(8080))
    );
    assert!(p.check_name("2001:db9::1", 8080, None).is_ok());
    assert!(p.check_name("198.51.100.77", 7000, None).is_ok());
    assert_eq!(
        p.check_name("198.51.101.1", 7000, None),
        Err(Refusal::NotAllowed)
    );
}

#[test]
fn package_managers_list() {
    let p = policy("type = \"limited\"\nallow_package_managers = true\nports = [8080]");
    for h in PACKAGE_MANAGER_HOSTS_V1 {
        assert!(p.check_name(h, 443, None).is_ok(), "{h}");
        assert!(p.check_name(h, 80, None).is_ok(), "{h}");
    }
    assert!(p.check_name("pypi.org", 8080, None).is_err());
    let p = policy("type = \"limited\"");
    assert_eq!(
        p.check_name("pypi.org", 443, None),
        Err(Refusal::NotAllowed)
    );
}

#[test]
fn none_refuses_everything_and_unrestricted_any_name_and_port() {
    let p = policy("type = \"none\"\nallowed_hosts = [\"a.test\"]");
    assert!(p.check_name("a.test", 443, None).is_err());
    let p = policy("type = \"unrestricted\"");
    assert!(p.check_name("anything.example", 443, None).is_ok());
    assert!(p.check_name("anything.example", 25, None).is_ok());
    assert!(p.check_name("203.0.113.9", 22, None).is_ok());
    // The deny set still holds.
    assert_eq!(
        p.check_addr(ip("127.0.0.1"), 443),
        Err(Refusal::DeniedRange(ip("127.0.0.1")))
    );
    assert!(p.check_addr(ip("93.184.216.34"), 443).is_ok());
}

#[test]
fn builtin_deny_set() {
    let p = policy("type = \"unrestricted\"");
    for denied in [
        "127.0.0.1",
        "127.9.9.9",
        "0.0.0.0",
        "10.1.2.3",
        "172.16.0.1",
        "172.31.255.255",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "224.0.0.1",
        "255.255.255.255",
        "::",
        "::1",
        "fe80::1",
        "fd00::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "64:ff9b::a9fe:a9fe",
        // Review nits: the rest of the special-purpose registry.
        "::127.0.0.1",
        "::a00:1",
        "64:ff9b:1::a00:1",
        "100::1",
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",
        "2001:db8::1",
        "192.0.2.1",
        "198.51.100.1",
        "203.0.113.1",
        "192.88.99.1",
    ] {
        assert!(p.check_addr(ip(denied), 443).is_err(), "{denied}");
    }
    for ok in ["8.8.8.8", "172.32.0.1", "2606:4700::1111", "::ffff:8.8.8.8"] {
        assert!(p.check_addr(ip(ok), 443).is_ok(), "{ok}");
    }
    // The reason names the (canonical) address.
    assert_eq!(
        p.check_addr(ip("::ffff:10.0.0.1"), 443)
            .unwrap_err()
            .to_string(),
        "resolves to a denied range (10.0.0.1)"
    );
}

#[test]
fn explicit_cidr_lifts_the_builtin_deny_but_not_the_configured_deny() {
    let p = policy(
        r#"type = "limited"
        allowed_hosts = ["127.0.0.2/32", "10.20.0.0/16", "internal.test"]
        deny = ["10.20.99.0/24"]"#,
    );
    assert!(p.check_addr(ip("127.0.0.2"), 443).is_ok());
    assert!(p.check_addr(ip("127.0.0.3"), 443).is_err());
    assert!(p.check_addr(ip("10.20.1.1"), 443).is_ok());
    assert!(p.check_addr(ip("10.20.99.1"), 443).is_err());
    assert!(p.check_addr(ip("10.21.0.1"), 443).is_err());
    // A CIDR admits IP literals on the default ports.
    assert!(p.check_name("10.20.1.1", 443, None).is_ok());
    assert!(p.check_name("10.21.1.1", 443, None).is_err());
    // deny_also (the ops listener) wins too.
    let mut p = p;
    p.deny_also(Cidr::parse("10.20.5.5").unwrap());
    assert!(p.check_addr(ip("10.20.5.5"), 443).is_err());
}

#[test]
fn static_hosts_are_admitted_by_cidr_entries() {
    let p = policy(
        r#"type = "limited"
        allowed_hosts = ["127.0.0.2/32"]
        hosts = { "pypi.test" = "127.0.0.2", "other.test" = "127.0.0.3" }"#,
    );
    assert_eq!(p.static_host("pypi.test"), Some(ip("127.0.0.2")));
    assert!(p.check_name("PyPI.test", 80, None).is_ok());
    assert_eq!(
        p.check_name("other.test", 80, None),
        Err(Refusal::NotAllowed)
    );
    assert_eq!(
        p.check_name("pypi.test", 25, None),
        Err(Refusal::PortNotAllowed(25))
    );
}

#[test]
fn cidr_contains_edges() {
    let c = Cidr::parse("0.0.0.0/0").unwrap();
    assert!(c.contains(ip("1.2.3.4")));
    assert!(!c.contains(ip("2001:db8::1")));
    let c = Cidr::parse("::/0").unwrap();
    assert!(c.contains(ip("2001:db8::1")));
    let c = Cidr::parse("::ffff:10.0.0.0/104").unwrap();
    assert!(c.contains(ip("10.1.1.1")));
    assert!(!c.contains(ip("11.1.1.1")));
    let c = Cidr::parse("192.0.2.1").unwrap();
    assert!(c.contains(ip("192.0.2.1")));
    assert!(!c.contains(ip("192.0.2.2")));
}

#[test]
fn a_session_can_only_narrow() {
    let p = policy(
        r#"type = "limited"
        allowed_hosts = ["pypi.org", "*.corp.example", "127.0.0.2/32"]
        hosts = { "pypi.test" = "127.0.0.2" }"#,
    );
    let n = p.narrowing("pypi.org, evil.example , 127.0.0.0/8").unwrap();
    assert!(p.check_name("pypi.org", 443, Some(&n)).is_ok());
    // Listed by the session but not by the operator: still refused.
    assert_eq!(
        p.check_name("evil.example", 443, Some(&n)),
        Err(Refusal::NotAllowed)
    );
    // Listed by the operator but not by the session.
    assert_eq!(
        p.check_name("a.corp.example", 443, Some(&n)),
        Err(Refusal::NarrowedBySession)
    );
    // The session's wide CIDR cannot lift the deny set: only the operator's can.
    assert!(p.check_addr(ip("127.0.0.3"), 443).is_err());
    assert!(p.check_name("127.0.0.2", 443, Some(&n)).is_ok());
    assert!(p.check_name("pypi.test", 443, Some(&n)).is_ok());
    // A session port narrower than the operator's.
    let n = p.narrowing("pypi.org:443").unwrap();
    assert!(p.check_name("pypi.org", 443, Some(&n)).is_ok());
    assert_eq!(
        p.check_name("pypi.org", 80, Some(&n)),
        Err(Refusal::NarrowedBySession)
    );
    // Empty = nothing.
    let n = p.narrowing("").unwrap();
    assert!(p.check_name("pypi.org", 443, Some(&n)).is_err());
    // Unrestricted operator + narrowing = the narrowing's list.
    let u = policy("type = \"unrestricted\"");
    let n = u.narrowing("*.example.com").unwrap();
    assert!(u.check_name("a.example.com", 443, Some(&n)).is_ok());
    assert!(u.check_name("a.example.org", 443, Some(&n)).is_err());
    assert!(p.narrowing("a.*.b").is_err());
}

/// Review finding: a CIDR entry lifted the deny set on every port. It lifts it
/// only on the entry's ports (its `:port`, else `ports`), in `unrestricted` too.
#[test]
fn a_cidr_lifts_the_deny_set_only_on_its_ports() {
    let p = policy(
        r#"type = "limited"
        allowed_hosts = ["10.0.0.5/32:5432", "10.1.0.0/16"]
        ports = [443]"#,
    );
    assert!(p.check_addr(ip("10.0.0.5"), 5432).is_ok());
    for port in [22, 443, 10250] {
        assert_eq!(
            p.check_addr(ip("10.0.0.5"), port),
            Err(Refusal::DeniedRange(ip("10.0.0.5"))),
            "{port}"
        );
    }
    assert!(p.check_addr(ip("10.1.2.3"), 443).is_ok());
    assert!(p.check_addr(ip("10.1.2.3"), 22).is_err());
    // A public address is not subject to the deny set, whatever the port.
    assert!(p.check_addr(ip("93.184.216.34"), 22).is_ok());
    // unrestricted admits any port by name, but the lift stays port-bound: a name
    // resolving to 10.0.0.5 reaches 5432 only.
    let u = policy(
        r#"type = "unrestricted"
        allowed_hosts = ["10.0.0.5/32:5432"]"#,
    );
    assert!(u.check_addr(ip("10.0.0.5"), 5432).is_ok());
    assert!(u.check_addr(ip("10.0.0.5"), 6443).is_err());
}

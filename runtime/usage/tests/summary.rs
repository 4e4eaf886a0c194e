//! `summarise` + `render` on the fixture ledger (`tests/fixtures/ledger`): exact output.
//!
//! The fixture holds two segments: env_a on 2026-12-05 (three records, one of them repeated,
//! one with a 0.5 vCPU / 512 MiB shape, one without a bash cgroup reading), env_a and env_b on
//! 2026-12-06 (one without a shape), a junk line and a torn tail.

use wasm_sandbox_usage::{Format, parse_since, read_all, render, summarise};

fn fixture() -> Vec<wasm_sandbox_usage::UsageRecord> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ledger");
    read_all(&dir).unwrap()
}

const TABLE: &str = "\
environment  day         sessions  records  active_s     cpu_s  vcpu_hours   gb_hours
env_a        2026-12-05         2        3  3691.500  1834.500    4.100208   4.100208
env_a        2026-12-06         1        1    60.000    60.000    0.000000   0.000000
env_b        2026-12-06         1        1  7200.000  3720.000    4.000000  16.000000
";

const CSV: &str = "\
environment,day,sessions,records,active_s,cpu_s,vcpu_hours,gb_hours
env_a,2026-12-05,2,3,3691.500,1834.500,4.100208,4.100208
env_a,2026-12-06,1,1,60.000,60.000,0.000000,0.000000
env_b,2026-12-06,1,1,7200.000,3720.000,4.000000,16.000000
";

#[test]
fn table() {
    assert_eq!(render(&summarise(&fixture(), None), Format::Table), TABLE);
}

#[test]
fn csv() {
    assert_eq!(render(&summarise(&fixture(), None), Format::Csv), CSV);
}

#[test]
fn json() {
    let out = render(&summarise(&fixture(), None), Format::Json);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v,
        serde_json::json!([
            {"environment_id": "env_a", "day": "2026-12-05", "sessions": 2, "records": 3,
             "active_seconds": 3691.5, "cpu_seconds": 1834.5, "vcpu_hours": 4.100208, "gb_hours": 4.100208},
            {"environment_id": "env_a", "day": "2026-12-06", "sessions": 1, "records": 1,
             "active_seconds": 60.0, "cpu_seconds": 60.0, "vcpu_hours": 0.0, "gb_hours": 0.0},
            {"environment_id": "env_b", "day": "2026-12-06", "sessions": 1, "records": 1,
             "active_seconds": 7200.0, "cpu_seconds": 3720.0, "vcpu_hours": 4.0, "gb_hours": 16.0}
        ])
    );
}

#[test]
fn since_drops_earlier_days() {
    let rows = summarise(&fixture(), Some(parse_since("2026-12-06").unwrap()));
    let days: Vec<_> = rows
        .iter()
        .map(|r| (r.environment_id.as_str(), r.day.as_str()))
        .collect();
    assert_eq!(days, [("env_a", "2026-12-06"), ("env_b", "2026-12-06")]);
}

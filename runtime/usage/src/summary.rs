//! `wasm-sandbox usage`: the ledger summarised per environment and day.
//!
//! A row counts the records whose `claimed_at` falls on that UTC day: distinct sessions, active
//! seconds (the sum of tool-call wall times; idle time between calls is excluded), CPU-seconds
//! (bash cgroup + wasm tools + `wasm-run`), and the shape held while active: vCPU-hours =
//! active seconds × vCPUs / 3600, GB-hours = active seconds × memory GiB / 3600 (1 GB = 2^30
//! bytes, as memory is counted in cloud billing). A record without a shape adds nothing to
//! those two. A record id seen twice is counted once.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::record::UsageRecord;

/// One environment's use on one UTC day.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DayRow {
    /// `env_…`.
    pub environment_id: String,
    /// `YYYY-MM-DD` (UTC) of the records' `claimed_at`.
    pub day: String,
    /// Distinct sessions.
    pub sessions: u64,
    /// Work items (records).
    pub records: u64,
    /// Active tool time, seconds.
    pub active_seconds: f64,
    /// CPU-seconds while active.
    pub cpu_seconds: f64,
    /// vCPU-hours of the shape while active.
    pub vcpu_hours: f64,
    /// GB-hours (GiB) of the shape while active.
    pub gb_hours: f64,
}

/// Output formats of [`render`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns with a header.
    Table,
    /// A JSON array of [`DayRow`]s.
    Json,
    /// CSV with a header line.
    Csv,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Format, String> {
        match s {
            "table" => Ok(Format::Table),
            "json" => Ok(Format::Json),
            "csv" => Ok(Format::Csv),
            _ => Err(format!("unknown format {s:?} (table, json or csv)")),
        }
    }
}

/// `YYYY-MM-DD` or an RFC 3339 time, as a point in time (a date is its UTC midnight).
pub fn parse_since(s: &str) -> Result<SystemTime, String> {
    let full = if s.len() == 10 {
        format!("{s}T00:00:00Z")
    } else {
        s.to_owned()
    };
    humantime::parse_rfc3339_weak(&full)
        .or_else(|_| humantime::parse_rfc3339(&full))
        .map_err(|e| format!("--since {s:?}: {e} (expected YYYY-MM-DD or RFC 3339)"))
}

/// The UTC date of `t` as `YYYY-MM-DD`.
pub fn utc_day(t: SystemTime) -> String {
    let secs = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64) - 1,
    };
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    format!("{y:04}-{m:02}-{d:02}")
}

/// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn round(x: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (x * f).round() / f
}

/// Rows per environment and day, sorted, for the records claimed at or after `since`.
pub fn summarise(records: &[UsageRecord], since: Option<SystemTime>) -> Vec<DayRow> {
    let mut seen = HashSet::new();
    let mut rows: BTreeMap<(String, String), (DayRow, BTreeSet<String>)> = BTreeMap::new();
    for r in records {
        if !seen.insert(r.record_id.as_str()) {
            continue;
        }
        let Ok(claimed) = humantime::parse_rfc3339_weak(&r.claimed_at) else {
            tracing::warn!(record_id = %r.record_id, "usage: record with an unreadable claimed_at skipped");
            continue;
        };
        if since.is_some_and(|s| claimed < s) {
            continue;
        }
        let day = utc_day(claimed);
        let (row, sessions) = rows
            .entry((r.environment_id.clone(), day.clone()))
            .or_insert_with(|| {
                (
                    DayRow {
                        environment_id: r.environment_id.clone(),
                        day,
                        ..DayRow::default()
                    },
                    BTreeSet::new(),
                )
            });
        sessions.insert(r.session_id.clone());
        let active = r.active_ms as f64 / 1000.0;
        row.records += 1;
        row.active_seconds += active;
        row.cpu_seconds += r.cpu.total;
        if let Some(shape) = r.shape {
            row.vcpu_hours += active * shape.vcpus / 3600.0;
            if let Some(memory) = shape.memory_bytes {
                row.gb_hours += active * (memory as f64 / (1u64 << 30) as f64) / 3600.0;
            }
        }
    }
    rows.into_values()
        .map(|(mut row, sessions)| {
            row.sessions = sessions.len() as u64;
            row.active_seconds = round(row.active_seconds, 3);
            row.cpu_seconds = round(row.cpu_seconds, 3);
            row.vcpu_hours = round(row.vcpu_hours, 6);
            row.gb_hours = round(row.gb_hours, 6);
            row
        })
        .collect()
}

const HEADER: [&str; 8] = [
    "environment",
    "day",
    "sessions",
    "records",
    "active_s",
    "cpu_s",
    "vcpu_hours",
    "gb_hours",
];

fn cells(r: &DayRow) -> [String; 8] {
    [
        r.environment_id.clone(),
        r.day.clone(),
        r.sessions.to_string(),
        r.records.to_string(),
        format!("{:.3}", r.active_seconds),
        format!("{:.3}", r.cpu_seconds),
        format!("{:.6}", r.vcpu_hours),
        format!("{:.6}", r.gb_hours),
    ]
}

/// CSV field: quoted when it holds a comma, quote or line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// The rows in `format`, ending with a newline.
pub fn render(rows: &[DayRow], format: Format) -> String {
    match format {
        Format::Json => {
            let mut s = serde_json::to_string_pretty(rows).unwrap_or_else(|_| "[]".to_owned());
            s.push('\n');
            s
        }
        Format::Csv => {
            let mut s = HEADER.join(",");
            s.push('\n');
            for r in rows {
                let c = cells(r);
                s.push_str(&c.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(","));
                s.push('\n');
            }
            s
        }
        Format::Table => {
            let body: Vec<[String; 8]> = rows.iter().map(cells).collect();
            let mut width: [usize; 8] = HEADER.map(str::len);
            for c in &body {
                for (w, f) in width.iter_mut().zip(c) {
                    *w = (*w).max(f.chars().count());
                }
            }
            let mut s = String::new();
            let mut line = |fields: &[String]| {
                let mut l = String::new();
                for (i, (f, w)) in fields.iter().zip(width).enumerate() {
                    if i > 0 {
                        l.push_str("  ");
                    }
                    // Text left, numbers right.
                    if i < 2 {
                        l.push_str(&format!("{f:<w$}"));
                    } else {
                        l.push_str(&format!("{f:>w$}"));
                    }
                }
                s.push_str(l.trim_end());
                s.push('\n');
            };
            line(&HEADER.map(str::to_owned));
            for c in &body {
                line(c);
            }
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days() {
        assert_eq!(utc_day(UNIX_EPOCH), "1970-01-01");
        assert_eq!(
            utc_day(humantime::parse_rfc3339("2024-02-29T23:59:59Z").unwrap()),
            "2024-02-29"
        );
        assert_eq!(
            utc_day(humantime::parse_rfc3339("2026-12-31T00:00:00Z").unwrap()),
            "2026-12-31"
        );
        assert!(parse_since("2026-12-01").is_ok());
        assert!(parse_since("yesterday").is_err());
    }
}

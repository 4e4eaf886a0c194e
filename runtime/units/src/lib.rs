//! The one unit convention of wasm-sandbox's configuration files.
//!
//! Every duration and every size in a config file is a string with its unit, parsed by a
//! library rather than by hand:
//!
//! * durations: [`humantime`] syntax, `"150ms"`, `"30s"`, `"2m 30s"`, `"1h"`;
//! * sizes: [`bytesize`] syntax, `"512MiB"`, `"4GiB"`, `"64KiB"`, `"100B"` (binary units
//!   `KiB`/`MiB`/`GiB` are powers of 1024, decimal `KB`/`MB`/`GB` powers of 1000);
//! * no cap: the string `"unlimited"`, accepted only where a setting documents it.
//!
//! Keys carry no unit suffix (`tool_timeout = "150s"`, `memory = "512MiB"`); a bare number
//! is refused, so a value can never be read in the wrong unit (`5000` meant as milliseconds
//! but read as seconds is an 83-minute timeout). The Rust fields keep plain types (`u64`
//! bytes, `u64` milliseconds or seconds as the field name says, [`Duration`]), so embedders
//! building a configuration in code never handle strings: the helpers below are used as
//! `#[serde(with = "wasm_sandbox_units::size")]` and friends, and serialise back to the same
//! strings (`wasm-sandbox config check` prints a file it would accept).
//!
//! This crate sits below every crate that has a config table (native, nn, core, worker), so
//! they share one parser without a dependency edge between them.
//!
//! ```
//! use wasm_sandbox_units::{parse_duration, parse_size};
//! assert_eq!(parse_size("512MiB"), Ok(512 << 20));
//! assert_eq!(parse_duration("150ms"), Ok(std::time::Duration::from_millis(150)));
//! assert!(parse_size("512").is_err(), "a size needs its unit");
//! assert!(parse_duration("150").is_err(), "a duration needs its unit");
//! ```

use std::fmt;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserializer, Serializer};

/// The spelling of "no cap" where a setting allows one.
pub const UNLIMITED: &str = "unlimited";

/// Parses a size with its unit (`"512MiB"`, `"4GiB"`, `"1.5 GiB"`, `"100B"`).
///
/// # Errors
/// A bare number (no unit), an unknown unit, a negative or overflowing value.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if !t.ends_with(|c: char| c.is_ascii_alphabetic()) {
        return Err(format!(
            "invalid size {s:?}: give a unit, e.g. \"512MiB\", \"4GiB\", \"100B\""
        ));
    }
    if t.starts_with('-') {
        return Err(format!("invalid size {s:?}: negative"));
    }
    t.parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| format!("invalid size {s:?}: {e} (e.g. \"512MiB\", \"4GiB\")"))
}

/// Formats a byte count in the largest binary unit that divides it exactly (`"512MiB"`,
/// `"1536KiB"`, `"1000B"`), so [`parse_size`] reads it back unchanged.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [(&str, u32); 5] = [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10), ("B", 0)];
    for (name, shift) in UNITS {
        if bytes != 0 && bytes.trailing_zeros() >= shift {
            return format!("{}{name}", bytes >> shift);
        }
    }
    "0B".to_owned()
}

/// Parses a duration with its unit (`"150ms"`, `"30s"`, `"2m 30s"`).
///
/// # Errors
/// A bare number (no unit), an unknown unit, a negative value.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("invalid duration {s:?}: {e} (e.g. \"150ms\", \"30s\", \"5m\")"))
}

/// Formats a duration so that [`parse_duration`] reads it back unchanged (`"2m 30s"`,
/// `"150ms"`, `"0s"`).
pub fn format_duration(d: Duration) -> String {
    if d.is_zero() {
        "0s".to_owned()
    } else {
        humantime::format_duration(d).to_string()
    }
}

/// A visitor for a string value, with `what` as the expectation in type errors.
struct StrVisitor<F> {
    what: &'static str,
    parse: F,
}

impl<'de, T, F: FnOnce(&str) -> Result<T, String>> Visitor<'de> for StrVisitor<F> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.what)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.parse)(v).map_err(E::custom)
    }
}

fn de_str<'de, D: Deserializer<'de>, T>(
    d: D,
    what: &'static str,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, D::Error> {
    d.deserialize_str(StrVisitor { what, parse })
}

/// `#[serde(with = "wasm_sandbox_units::size")]` on a `u64` byte count: `"512MiB"`.
pub mod size {
    use super::*;

    /// Serialises as [`format_size`].
    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_size(*v))
    }

    /// Deserialises with [`parse_size`].
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        de_str(d, "a size string such as \"512MiB\"", parse_size)
    }
}

/// `#[serde(with = "wasm_sandbox_units::size_or_unlimited")]` on an `Option<u64>` byte cap:
/// `"512MiB"`, or `"unlimited"` for `None` (no cap).
pub mod size_or_unlimited {
    use super::*;

    /// Serialises `None` as `"unlimited"`, a size as [`format_size`].
    pub fn serialize<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(n) => s.serialize_str(&format_size(*n)),
            None => s.serialize_str(UNLIMITED),
        }
    }

    /// Deserialises `"unlimited"` as `None`, a size with [`parse_size`].
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        de_str(
            d,
            "a size string such as \"512MiB\", or \"unlimited\"",
            |v| {
                if v.trim() == UNLIMITED {
                    Ok(None)
                } else {
                    parse_size(v).map(Some)
                }
            },
        )
    }
}

/// `#[serde(with = "wasm_sandbox_units::count_or_unlimited")]` on an `Option<u64>` count
/// (processes, open files): an integer, or `"unlimited"` for `None` (no cap).
pub mod count_or_unlimited {
    use super::*;

    /// Serialises `None` as `"unlimited"`, a count as an integer.
    pub fn serialize<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(n) => s.serialize_u64(*n),
            None => s.serialize_str(UNLIMITED),
        }
    }

    struct CountVisitor;

    impl Visitor<'_> for CountVisitor {
        type Value = Option<u64>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a non-negative integer, or \"unlimited\"")
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Option<u64>, E> {
            Ok(Some(v))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Option<u64>, E> {
            u64::try_from(v)
                .map(Some)
                .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<u64>, E> {
            if v.trim() == UNLIMITED {
                Ok(None)
            } else {
                Err(E::invalid_value(de::Unexpected::Str(v), &self))
            }
        }
    }

    /// Deserialises an integer, or `"unlimited"` as `None`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        d.deserialize_any(CountVisitor)
    }
}

/// `#[serde(with = "wasm_sandbox_units::duration")]` on a [`Duration`]: `"30s"`.
pub mod duration {
    use super::*;

    /// Serialises as [`format_duration`].
    pub fn serialize<S: Serializer>(v: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*v))
    }

    /// Deserialises with [`parse_duration`].
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        de_str(d, "a duration string such as \"30s\"", parse_duration)
    }
}

/// `#[serde(default, with = "wasm_sandbox_units::option_duration")]` on an
/// `Option<Duration>` (unset = `None`): `"30s"`.
pub mod option_duration {
    use super::*;

    /// Serialises `Some` as [`format_duration`] (`None` fields should be skipped).
    pub fn serialize<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(d) => s.serialize_str(&format_duration(*d)),
            None => s.serialize_none(),
        }
    }

    /// Deserialises with [`parse_duration`].
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        super::duration::deserialize(d).map(Some)
    }
}

/// `#[serde(with = "wasm_sandbox_units::duration_ms")]` on a `u64` count of milliseconds:
/// `"150ms"`, `"2m 30s"` (rounded down to whole milliseconds).
pub mod duration_ms {
    use super::*;

    /// Serialises as [`format_duration`].
    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(Duration::from_millis(*v)))
    }

    /// Deserialises with [`parse_duration`], in whole milliseconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        de_str(d, "a duration string such as \"150ms\"", |v| {
            let d = parse_duration(v)?;
            u64::try_from(d.as_millis()).map_err(|_| format!("duration {v:?} is too long"))
        })
    }
}

/// `#[serde(with = "wasm_sandbox_units::duration_secs")]` on a `u64` count of seconds:
/// `"60s"`, `"15m"`; a duration that is not a whole number of seconds is refused rather than
/// rounded.
pub mod duration_secs {
    use super::*;

    /// Serialises as [`format_duration`].
    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(Duration::from_secs(*v)))
    }

    /// Deserialises with [`parse_duration`], in whole seconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        de_str(d, "a duration string such as \"60s\"", |v| {
            let d = parse_duration(v)?;
            if d.subsec_nanos() != 0 {
                return Err(format!(
                    "duration {v:?}: this setting takes whole seconds, e.g. \"60s\""
                ));
            }
            Ok(d.as_secs())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct T {
        #[serde(with = "size")]
        size: u64,
        #[serde(with = "size_or_unlimited")]
        cap: Option<u64>,
        #[serde(with = "count_or_unlimited")]
        count: Option<u64>,
        #[serde(with = "duration_ms")]
        ms: u64,
        #[serde(with = "duration_secs")]
        secs: u64,
        #[serde(with = "duration")]
        d: Duration,
    }

    #[test]
    fn sizes_and_durations_parse_with_their_units() {
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("4GiB"), Ok(4 << 30));
        assert_eq!(parse_size("64 KiB"), Ok(64 << 10));
        assert_eq!(parse_size("100B"), Ok(100));
        assert_eq!(parse_size("1MB"), Ok(1_000_000));
        for bad in ["512", "", "-1MiB", "12 parsecs", "MiB", "unlimited"] {
            assert!(parse_size(bad).is_err(), "{bad:?} parsed");
        }
        assert_eq!(parse_duration("150ms"), Ok(Duration::from_millis(150)));
        assert_eq!(parse_duration("2m 30s"), Ok(Duration::from_secs(150)));
        for bad in ["150", "", "-1s", "soon"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn formats_read_back_unchanged() {
        for n in [0, 1, 1000, 1024, 1536, 512 << 20, 4 << 30, (1 << 40) + 1] {
            assert_eq!(parse_size(&format_size(n)), Ok(n), "{}", format_size(n));
        }
        assert_eq!(format_size(512 << 20), "512MiB");
        for d in [0, 1, 150, 10_000, 150_000, 3_600_000] {
            let d = Duration::from_millis(d);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
    }

    #[test]
    fn serde_helpers_round_trip_and_unlimited_means_none() {
        let text = r#"
            size = "256MiB"
            cap = "unlimited"
            count = "unlimited"
            ms = "150s"
            secs = "15m"
            d = "999ms"
        "#;
        let t: T = toml::from_str(text).unwrap();
        assert_eq!(
            t,
            T {
                size: 256 << 20,
                cap: None,
                count: None,
                ms: 150_000,
                secs: 900,
                d: Duration::from_millis(999),
            }
        );
        let back: T = toml::from_str(&toml::to_string(&t).unwrap()).unwrap();
        assert_eq!(back, t);
        let t: T = toml::from_str(
            "size = \"1KiB\"\ncap = \"2GiB\"\ncount = 512\nms = \"10ms\"\nsecs = \"1s\"\nd = \"1s\"\n",
        )
        .unwrap();
        assert_eq!((t.cap, t.count), (Some(2 << 30), Some(512)));
    }

    #[test]
    fn bare_numbers_and_wrong_units_are_refused() {
        let base = "cap = \"1KiB\"\ncount = 1\nms = \"1s\"\nsecs = \"1s\"\nd = \"1s\"\n";
        let e = toml::from_str::<T>(&format!("size = 268435456\n{base}")).unwrap_err();
        assert!(e.to_string().contains("a size string such as"), "{e}");
        assert!(e.to_string().contains("line 1"), "{e}");
        let e = toml::from_str::<T>(
            "size = \"1KiB\"\ncap = \"1KiB\"\ncount = 1\nms = 5000\nsecs = \"1s\"\nd = \"1s\"\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("a duration string"), "{e}");
        let e = toml::from_str::<T>(
            "size = \"1KiB\"\ncap = \"1KiB\"\ncount = 1\nms = \"1s\"\nsecs = \"1500ms\"\nd = \"1s\"\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("whole seconds"), "{e}");
        let e = toml::from_str::<T>(
            "size = \"1KiB\"\ncap = \"1KiB\"\ncount = \"lots\"\nms = \"1s\"\nsecs = \"1s\"\nd = \"1s\"\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("unlimited"), "{e}");
    }
}

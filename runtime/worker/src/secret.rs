//! A string that must never be printed: the environment key, a work item's `secret` payload and
//! the sessions token decoded from it.
//!
//! Security: `Debug` and `Display` print `<redacted>`, so a credential that ends up in a
//! `tracing` field, an error message, a panic message or a `{:?}` of a containing struct shows
//! nothing. The only way to the bytes is [`Secret::expose`], which call sites use exactly where
//! the value goes on the wire (the `Authorization` header, marked sensitive there too).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A credential string whose `Debug`/`Display` are redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a credential.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The raw value. Call only where it goes on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the value is empty (an empty credential counts as absent).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Secret {
        Secret(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Secret {
        Secret(value.to_owned())
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Secret, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

/// Overwrites, with NUL bytes, the values of the variables `names` in this process's
/// *original* environment block — the bytes the kernel placed on the initial stack at
/// `execve`, between `env_start` and `env_end` of `/proc/self/stat` — and returns how many
/// values it overwrote.
///
/// Why: `std::env::remove_var` (glibc `unsetenv`) only drops the pointer from the `environ`
/// array; the original `NAME=value` bytes stay where they were, and `/proc/<pid>/environ`
/// reads exactly that block. Anyone who may read that file (the same uid, root, a debugger, a
/// crash collector, a `ps e` in a shared pid namespace) would still see the key after the
/// scrub. Overwriting the bytes in place removes the only copy the kernel shows; names stay so
/// the entry is visibly scrubbed (`NAME=` followed by NULs). The block is scanned as a whole
/// (not through `environ`), so an entry that `setenv` has since shadowed is scrubbed too.
///
/// Must run before any other thread exists (or at least before any other thread may read the
/// environment): the bytes may be what `environ` points at, and `getenv` in another thread
/// would race with the write. Idempotent: an already-scrubbed value (all NUL) is left alone.
#[cfg(target_os = "linux")]
pub fn scrub_environment_block(names: &[&str]) -> std::io::Result<usize> {
    scrub_proc_block(50, "/proc/self/environ", |_, entry| {
        names.iter().find_map(|name| {
            (entry.len() > name.len() + 1
                && entry.starts_with(name.as_bytes())
                && entry[name.len()] == b'=')
                .then_some(name.len() + 1)
        })
    })
}

/// Overwrites, with NUL bytes, the value given to the command-line flag `flag` (`--flag VALUE`
/// or `--flag=VALUE`) in this process's original argument block (`arg_start..arg_end`), which
/// `/proc/<pid>/cmdline` — readable by every user on the host, and shown by `ps` — reads.
/// Returns how many values it overwrote. Same rules as [`scrub_environment_block`]: before
/// other threads exist; arguments must have been parsed already (std reads them from this
/// block, so a later `std::env::args` sees an empty value in its place).
#[cfg(target_os = "linux")]
pub fn scrub_argument_block(flag: &str) -> std::io::Result<usize> {
    scrub_proc_block(48, "/proc/self/cmdline", |prev, entry| {
        if prev == Some(flag.as_bytes()) {
            Some(0)
        } else {
            (entry.len() > flag.len() + 1
                && entry.starts_with(flag.as_bytes())
                && entry[flag.len()] == b'=')
                .then_some(flag.len() + 1)
        }
    })
}

/// Scrubs values in one of the process's original string blocks: `first_field` is the
/// `/proc/self/stat` field of the block's start (the end is the next field), `proc_file` the
/// file that shows it. `pick(previous entry, entry)` returns where in `entry` the secret value
/// starts; the rest of the entry is overwritten with NULs (unless already all NUL).
#[cfg(target_os = "linux")]
fn scrub_proc_block(
    first_field: usize,
    proc_file: &str,
    mut pick: impl FnMut(Option<&[u8]>, &[u8]) -> Option<usize>,
) -> std::io::Result<usize> {
    // The comm field (2) may hold spaces and parentheses, so count fields after the last `)`:
    // the text after it starts at field 3. arg_start/arg_end/env_start/env_end are fields
    // 48-51 (Linux >= 3.5).
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let after_comm = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| std::io::Error::other("unexpected /proc/self/stat"))?;
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let field = |n: usize| -> std::io::Result<usize> {
        fields
            .get(n - 3)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| std::io::Error::other("no block bounds in /proc/self/stat"))
    };
    let (start, end) = (field(first_field)?, field(first_field + 1)?);
    if start == 0 || end <= start {
        return Ok(0);
    }
    // The kernel's copy of the block, read safely (no raw access needed to find the entries).
    let block = std::fs::read(proc_file)?;
    let len = block.len().min(end - start);
    let mut scrubbed = 0;
    let mut offset = 0;
    let mut prev: Option<&[u8]> = None;
    for entry in block[..len].split(|&b| b == 0) {
        if let Some(value_at) = pick(prev, entry)
            && entry[value_at..].iter().any(|&b| b != 0)
        {
            let value_len = entry.len() - value_at;
            let at = start + offset + value_at;
            debug_assert!(at + value_len <= end);
            // SAFETY: [start, end) is a block the kernel copied onto this process's initial
            // stack at execve (the argument or environment strings); it stays mapped
            // read-write for the life of the process. The range written lies inside it
            // (offset + entry length <= the block length read from `proc_file`, capped at
            // end - start). The bytes are C strings that only libc (environ/getenv) and std's
            // argument reader read; the caller guarantees no other thread reads them
            // meanwhile, and no Rust reference points into this memory (std copies what it
            // reads). Writing NULs keeps every C string in the block terminated.
            unsafe { std::ptr::write_bytes(at as *mut u8, 0, value_len) };
            scrubbed += 1;
        }
        offset += entry.len() + 1;
        prev = Some(entry);
    }
    Ok(scrubbed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_redact() {
        let s = Secret::new("sk-ant-oat01-SECRET");
        assert!(!format!("{s:?}").contains("SECRET"));
        assert!(!format!("{s}").contains("SECRET"));
        assert_eq!(s.expose(), "sk-ant-oat01-SECRET");
        #[derive(Debug)]
        #[allow(dead_code, reason = "only read through Debug")]
        struct Holder {
            key: Secret,
        }
        assert!(!format!("{:?}", Holder { key: s }).contains("SECRET"));
    }
}

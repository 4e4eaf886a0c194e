//! Guest mount paths of memory stores: the one rule every layer applies.
//!
//! A memory store reaches the sandbox at a *guest path*: the file tools preopen it
//! (`wasm-sandbox-runtime`), bubblewrap bind-mounts it for bash (`wasm-sandbox-native`),
//! the worker computes it from the session's `memory_store` resource
//! (`wasm-sandbox-worker`) and the memory rules name it (`wasm-sandbox-memory`). They all
//! go through [`MemoryMountPath`], so a path one layer accepts is never refused (or mounted
//! elsewhere) by another.
//!
//! # The rule
//!
//! - **`mount_path` given (non-empty)**: it is used where the agent was told to look, so it
//!   is taken verbatim up to the normalisation Python's `pathlib` applies in the reference
//!   (`_memories.py` `_store_root`: `FileStore.is_path_legal` then `Path(mount_path)`): empty
//!   and `.` components and a trailing `/` are dropped. It is **refused** (never relocated)
//!   when it is not absolute, holds a `..` component or a NUL byte, or — this project's
//!   addition — does not lie strictly below `/mnt/memory/`. Nested paths such as
//!   `/mnt/memory/team/notes` are accepted, as the reference accepts them, and every layer
//!   mounts them (bubblewrap creates the missing parents in the sandbox's private root).
//! - **`mount_path` missing or empty**: `/mnt/memory/<name>`, the path the API itself derives
//!   from the store's name; `<name>` is the store's name when it is one plain path segment,
//!   else the store id (which must then be one). The reference puts such a store under its
//!   working directory (`<workdir>/memory/<name or id>`); here every store lives under
//!   `/mnt/memory/` (see `docs/deviations.md`).
//! - **One store per subtree**: no store's path may equal or contain another's
//!   ([`check_disjoint`]); two stores named alike, or `/mnt/memory/a` with
//!   `/mnt/memory/a/b`, are refused for the whole session.
//! - Components are at most [`MAX_COMPONENT_BYTES`] bytes, the whole path at most
//!   [`MAX_PATH_BYTES`] (the kernel's limits; beyond them a mount would fail later, less
//!   clearly).
//!
//! Layers that receive already-resolved paths (the runtime's `SessionSpec`, the bash
//! sandbox's spec) take them typed, as [`MemoryMountPath`]s inside a session's mounts,
//! checked as a whole by [`MountSet::new`](crate::mounts::MountSet::new)
//! (`runtime/fs/src/mounts.rs`): canonical by construction, never re-parsed.
//!
//! # Why this is enough
//!
//! The session's `resources` are attacker-influenced input (a store name, a `mount_path`).
//! A path outside `/mnt/memory/` could bind a store over `/workspace`, `/usr` or `/proc`
//! inside the sandbox, or make the file tools resolve a system path into a writable store;
//! a `..` component could climb out of `/mnt/memory/` after the prefix check; a NUL byte
//! would be cut short by the C strings of `mount(2)`/`open(2)`; overlapping stores would make
//! bubblewrap create directories inside another store's host folder (or fail on a read-only
//! one) and leave the file tools' preopen lookup ambiguous. Checking the components after
//! normalisation, the prefix on whole components (`/mnt/memoryx` is not below
//! `/mnt/memory`), and the set of stores as a whole closes each of these.

use std::fmt;
use std::path::Path;

/// The directory every memory store is mounted below.
pub const MEMORY_PARENT: &str = "/mnt/memory";

/// Longest accepted path component in bytes (Linux `NAME_MAX`).
pub const MAX_COMPONENT_BYTES: usize = 255;

/// Longest accepted guest path in bytes (Linux `PATH_MAX` less its NUL).
pub const MAX_PATH_BYTES: usize = 4095;

/// What a refused mount path looks like, in the words every layer reports.
pub const MOUNT_PATH_RULE: &str = "a memory store mount path must be an absolute path below /mnt/memory/ \
     without `..` components (e.g. /mnt/memory/notes or /mnt/memory/team/notes)";

/// A refused memory-store guest path.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GuestPathError {
    /// The path breaks [the rule](self).
    #[error("memory store mount path {path:?} is refused: {reason}; {MOUNT_PATH_RULE}")]
    Invalid {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// No `mount_path`, and neither the name nor the id is one plain path segment.
    #[error(
        "memory store {memory_store_id:?} has no mount_path, and neither its name {name:?} nor its id can name a directory below /mnt/memory/"
    )]
    NoName {
        /// The store name.
        name: String,
        /// The store id.
        memory_store_id: String,
    },
    /// Two stores would be mounted at the same place or one inside the other.
    #[error(
        "memory store mount paths {outer:?} and {inner:?} overlap; each store needs its own directory below /mnt/memory/, not inside another store"
    )]
    Overlap {
        /// The path that equals or contains the other.
        outer: String,
        /// The path at or below `outer`.
        inner: String,
    },
}

/// A memory store's guest path that satisfies [the rule](self), in canonical form
/// (`/mnt/memory/<seg>[/<seg>…]`, no empty, `.` or `..` segment, no trailing `/`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MemoryMountPath(String);

/// Whether `s` can be one directory name: non-empty, not `.` or `..`, no `/` or NUL, at most
/// [`MAX_COMPONENT_BYTES`] bytes.
pub fn is_plain_segment(s: &str) -> bool {
    !matches!(s, "" | "." | "..") && !s.contains(['/', '\0']) && s.len() <= MAX_COMPONENT_BYTES
}

impl MemoryMountPath {
    /// Validates and normalises an explicit `mount_path` (see [the rule](self)).
    pub fn parse(raw: &str) -> Result<Self, GuestPathError> {
        let invalid = |reason| GuestPathError::Invalid {
            path: raw.to_owned(),
            reason,
        };
        if !raw.starts_with('/') {
            return Err(invalid("it is not absolute"));
        }
        if raw.contains('\0') {
            return Err(invalid("it contains a NUL byte"));
        }
        let parts: Vec<&str> = raw
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .collect();
        if parts.contains(&"..") {
            return Err(invalid("it has a `..` component"));
        }
        if parts.iter().any(|p| p.len() > MAX_COMPONENT_BYTES) {
            return Err(invalid("a component is longer than 255 bytes"));
        }
        match parts.as_slice() {
            ["mnt", "memory", _, ..] => {}
            ["mnt", "memory"] => return Err(invalid("it names /mnt/memory itself, not a store")),
            _ => return Err(invalid("it is not below /mnt/memory/")),
        }
        let canonical = format!("/{}", parts.join("/"));
        if canonical.len() > MAX_PATH_BYTES {
            return Err(invalid("it is longer than 4095 bytes"));
        }
        Ok(Self(canonical))
    }

    /// The default for a store without a `mount_path`: `/mnt/memory/<name>`, or
    /// `/mnt/memory/<memory_store_id>` when the name is missing or not a plain segment.
    pub fn default_for(name: Option<&str>, memory_store_id: &str) -> Result<Self, GuestPathError> {
        let leaf = match name {
            Some(n) if is_plain_segment(n) => n,
            _ if is_plain_segment(memory_store_id) => memory_store_id,
            _ => {
                return Err(GuestPathError::NoName {
                    name: name.unwrap_or_default().to_owned(),
                    memory_store_id: memory_store_id.to_owned(),
                });
            }
        };
        Ok(Self(format!("{MEMORY_PARENT}/{leaf}")))
    }

    /// The whole rule for one `memory_store` resource: [`MemoryMountPath::parse`] a
    /// non-empty `mount_path`, else [`MemoryMountPath::default_for`].
    pub fn resolve(
        mount_path: Option<&str>,
        name: Option<&str>,
        memory_store_id: &str,
    ) -> Result<Self, GuestPathError> {
        match mount_path.filter(|p| !p.is_empty()) {
            Some(p) => Self::parse(p),
            None => Self::default_for(name, memory_store_id),
        }
    }

    /// The canonical path.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `self` equals `other` or is one of its ancestors (whole components).
    pub fn contains(&self, other: &MemoryMountPath) -> bool {
        other
            .0
            .strip_prefix(&self.0)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }
}

impl fmt::Display for MemoryMountPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for MemoryMountPath {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl AsRef<Path> for MemoryMountPath {
    fn as_ref(&self) -> &Path {
        Path::new(&self.0)
    }
}

impl From<MemoryMountPath> for String {
    fn from(p: MemoryMountPath) -> String {
        p.0
    }
}

/// Refuses a set of store paths where one equals or contains another.
pub fn check_disjoint<'a>(
    paths: impl IntoIterator<Item = &'a MemoryMountPath>,
) -> Result<(), GuestPathError> {
    let mut sorted: Vec<&MemoryMountPath> = paths.into_iter().collect();
    // Sorted by bytes, a path's descendants follow it, possibly after unrelated siblings
    // such as `/a/b-c` between `/a/b` and `/a/b/d` ('-' < '/'), so compare every pair
    // (at most a handful of stores per session).
    sorted.sort();
    for (i, outer) in sorted.iter().enumerate() {
        if let Some(inner) = sorted[i + 1..].iter().find(|p| outer.contains(p)) {
            return Err(GuestPathError::Overlap {
                outer: outer.0.clone(),
                inner: inner.0.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(p: &str) -> String {
        MemoryMountPath::parse(p).unwrap().as_str().to_owned()
    }

    fn reason(p: &str) -> &'static str {
        match MemoryMountPath::parse(p) {
            Err(GuestPathError::Invalid { reason, .. }) => reason,
            other => panic!("{p:?} gave {other:?}"),
        }
    }

    #[test]
    fn explicit_paths_are_normalised_like_pathlib() {
        assert_eq!(ok("/mnt/memory/notes"), "/mnt/memory/notes");
        assert_eq!(ok("/mnt/memory/notes/"), "/mnt/memory/notes");
        assert_eq!(ok("/mnt/memory//notes"), "/mnt/memory/notes");
        assert_eq!(ok("//mnt/./memory/./notes/."), "/mnt/memory/notes");
        assert_eq!(ok("/mnt/memory/a..b"), "/mnt/memory/a..b");
        assert_eq!(ok("/mnt/memory/.hidden"), "/mnt/memory/.hidden");
    }

    #[test]
    fn nested_paths_are_accepted() {
        assert_eq!(ok("/mnt/memory/team/notes"), "/mnt/memory/team/notes");
        assert_eq!(ok("/mnt/memory/a/b/c/d"), "/mnt/memory/a/b/c/d");
    }

    #[test]
    fn bad_paths_are_refused_with_a_reason() {
        assert_eq!(reason("mnt/memory/x"), "it is not absolute");
        assert_eq!(reason(""), "it is not absolute");
        assert_eq!(reason("/mnt/memory/../etc"), "it has a `..` component");
        assert_eq!(reason("/mnt/memory/a/../../x"), "it has a `..` component");
        assert_eq!(reason("/mnt/memory/.."), "it has a `..` component");
        assert_eq!(reason("/mnt/memory/a\0b"), "it contains a NUL byte");
        assert_eq!(reason("/workspace"), "it is not below /mnt/memory/");
        assert_eq!(
            reason("/workspace/memory/x"),
            "it is not below /mnt/memory/"
        );
        assert_eq!(reason("/mnt/memoryx/a"), "it is not below /mnt/memory/");
        assert_eq!(
            reason("/mnt/memory"),
            "it names /mnt/memory itself, not a store"
        );
        assert_eq!(
            reason("/mnt/memory/"),
            "it names /mnt/memory itself, not a store"
        );
        assert_eq!(
            reason("/mnt/memory/./"),
            "it names /mnt/memory itself, not a store"
        );
        let long = format!("/mnt/memory/{}", "a".repeat(256));
        assert_eq!(reason(&long), "a component is longer than 255 bytes");
        let deep = format!("/mnt/memory{}", "/abcdefg".repeat(600));
        assert_eq!(reason(&deep), "it is longer than 4095 bytes");
        let msg = MemoryMountPath::parse("/etc/x").unwrap_err().to_string();
        assert!(msg.contains("\"/etc/x\""), "{msg}");
        assert!(msg.contains("below /mnt/memory/"), "{msg}");
    }

    #[test]
    fn the_default_is_the_name_or_the_id_below_mnt_memory() {
        let d = |name, id| MemoryMountPath::default_for(name, id).map(String::from);
        assert_eq!(d(Some("prefs"), "ms_1").unwrap(), "/mnt/memory/prefs");
        assert_eq!(d(None, "ms_1").unwrap(), "/mnt/memory/ms_1");
        assert_eq!(d(Some(""), "ms_1").unwrap(), "/mnt/memory/ms_1");
        assert_eq!(d(Some("../../etc"), "ms_1").unwrap(), "/mnt/memory/ms_1");
        assert_eq!(d(Some("a/b"), "ms_1").unwrap(), "/mnt/memory/ms_1");
        assert_eq!(d(Some(".."), "ms_1").unwrap(), "/mnt/memory/ms_1");
        assert!(matches!(
            d(Some(".."), ".."),
            Err(GuestPathError::NoName { .. })
        ));
        // Never a doubled separator (the bug this module replaced: `/mnt/memory//<name>`).
        let p = d(Some("notes"), "ms_1").unwrap();
        assert!(!p.contains("//"), "{p}");
        assert_eq!(MemoryMountPath::parse(&p).unwrap().as_str(), p);
    }

    #[test]
    fn resolve_prefers_a_non_empty_mount_path() {
        let r = |m, n| MemoryMountPath::resolve(m, n, "ms_1").map(String::from);
        assert_eq!(
            r(Some("/mnt/memory/x/"), Some("n")).unwrap(),
            "/mnt/memory/x"
        );
        assert_eq!(r(Some(""), Some("n")).unwrap(), "/mnt/memory/n");
        assert_eq!(r(None, Some("n")).unwrap(), "/mnt/memory/n");
        assert!(
            r(Some("/tmp/x"), Some("n")).is_err(),
            "refused, not relocated"
        );
    }

    #[test]
    fn overlapping_stores_are_refused() {
        let p = |s| MemoryMountPath::parse(s).unwrap();
        let set = [
            p("/mnt/memory/a/b-c"),
            p("/mnt/memory/a/b"),
            p("/mnt/memory/a/bd"),
        ];
        assert!(check_disjoint(&set).is_ok());
        let set = [
            p("/mnt/memory/a/b-c"),
            p("/mnt/memory/a/b/d"),
            p("/mnt/memory/a/b"),
        ];
        assert_eq!(
            check_disjoint(&set),
            Err(GuestPathError::Overlap {
                outer: "/mnt/memory/a/b".into(),
                inner: "/mnt/memory/a/b/d".into()
            })
        );
        assert!(check_disjoint(&[p("/mnt/memory/x"), p("/mnt/memory/x/")]).is_err());
    }
}

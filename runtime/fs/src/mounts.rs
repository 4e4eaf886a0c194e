//! The one mount vocabulary: what host directory a session sees at which guest path, and how.
//!
//! Every layer that maps host directories into a session speaks [`Mount`]: the file tools'
//! WASI preopens (`wasm-sandbox-runtime`), bubblewrap's bind mounts for bash
//! (`wasm-sandbox-native`), the worker's memory stores and the pool of pre-started
//! sandboxes. A session's mounts are one [`MountSet`], checked once by [`MountSet::new`]:
//!
//! - `/workspace` ([`WORKSPACE`]) and `/mnt/session/outputs` ([`OUTPUTS`]) exactly once each,
//!   read-write;
//! - every other mount is a memory store whose guest path is a canonical
//!   [`MemoryMountPath`] (the rule for explicit, nested and default paths lives there, in
//!   [`crate::guest_path`]), and no store's path equals or contains another's.
//!
//! # Why one checked set
//!
//! A guest path decides what the model can name and what bubblewrap binds over. Checking the
//! whole set in one place means a path one layer accepts is never refused, relocated or
//! mounted over another mount by another layer (`/mnt/memory//name` reached one layer
//! un-normalised when each had its own check), and the preopen lookup ([`MountSet::containing`])
//! is never ambiguous: stores are disjoint, and `/workspace`, `/mnt/session/outputs` and
//! `/mnt/memory/…` do not nest in one another.

use std::path::PathBuf;

use crate::guest_path::{GuestPathError, MemoryMountPath, check_disjoint};

/// Guest path of the session's working directory.
pub const WORKSPACE: &str = "/workspace";
/// Guest path of the session's outputs directory.
pub const OUTPUTS: &str = "/mnt/session/outputs";

/// Whether the session may change what is below a mount.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// Read and write (workspace, outputs, writable memory stores).
    ReadWrite,
    /// Read only: `write`/`edit` refuse it, bash's bind mount and Landlock rule are read-only.
    ReadOnly,
}

impl Access {
    /// `ReadOnly` when `read_only`, else `ReadWrite`.
    pub fn from_read_only(read_only: bool) -> Access {
        if read_only {
            Access::ReadOnly
        } else {
            Access::ReadWrite
        }
    }

    /// Whether this is [`Access::ReadOnly`].
    pub fn is_read_only(self) -> bool {
        self == Access::ReadOnly
    }
}

/// Where a mount appears in the session.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GuestPath {
    /// `/workspace`.
    Workspace,
    /// `/mnt/session/outputs`.
    Outputs,
    /// A memory store below `/mnt/memory/`.
    Memory(MemoryMountPath),
}

impl GuestPath {
    /// The absolute guest path.
    pub fn as_str(&self) -> &str {
        match self {
            GuestPath::Workspace => WORKSPACE,
            GuestPath::Outputs => OUTPUTS,
            GuestPath::Memory(p) => p.as_str(),
        }
    }
}

impl std::fmt::Display for GuestPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One host directory mapped into a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// Where the session sees it.
    pub guest: GuestPath,
    /// The host directory (opened by the layer that mounts it, never trusted as a name).
    pub host: PathBuf,
    /// What the session may do below it.
    pub access: Access,
}

impl Mount {
    /// The read-write `/workspace` mount of `host`.
    pub fn workspace(host: impl Into<PathBuf>) -> Mount {
        Mount {
            guest: GuestPath::Workspace,
            host: host.into(),
            access: Access::ReadWrite,
        }
    }

    /// The read-write `/mnt/session/outputs` mount of `host`.
    pub fn outputs(host: impl Into<PathBuf>) -> Mount {
        Mount {
            guest: GuestPath::Outputs,
            host: host.into(),
            access: Access::ReadWrite,
        }
    }

    /// A memory store at `guest`.
    pub fn memory_store(guest: MemoryMountPath, host: impl Into<PathBuf>, access: Access) -> Mount {
        Mount {
            guest: GuestPath::Memory(guest),
            host: host.into(),
            access,
        }
    }

    /// Whether the session may not write below it.
    pub fn read_only(&self) -> bool {
        self.access.is_read_only()
    }
}

/// Why a set of mounts is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MountError {
    /// A memory store's path breaks the rule, or two stores overlap.
    #[error(transparent)]
    GuestPath(#[from] GuestPathError),
    /// `/workspace` or `/mnt/session/outputs` is missing or given twice.
    #[error("a session needs exactly one {0} mount")]
    Required(&'static str),
    /// `/workspace` or `/mnt/session/outputs` was asked for read-only.
    #[error("{0} must be mounted read-write")]
    ReadOnlyRequired(&'static str),
}

/// A session's mounts, checked as a whole (see [the module docs](self)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountSet(Vec<Mount>);

impl MountSet {
    /// Checks `mounts`: one read-write workspace, one read-write outputs, memory stores
    /// disjoint. The order is kept (workspace and outputs first is conventional, not needed).
    pub fn new(mounts: Vec<Mount>) -> Result<MountSet, MountError> {
        for (guest, name) in [
            (GuestPath::Workspace, WORKSPACE),
            (GuestPath::Outputs, OUTPUTS),
        ] {
            let mut it = mounts.iter().filter(|m| m.guest == guest);
            match (it.next(), it.next()) {
                (Some(m), None) if m.read_only() => return Err(MountError::ReadOnlyRequired(name)),
                (Some(_), None) => {}
                _ => return Err(MountError::Required(name)),
            }
        }
        check_disjoint(mounts.iter().filter_map(|m| match &m.guest {
            GuestPath::Memory(p) => Some(p),
            _ => None,
        }))?;
        Ok(MountSet(mounts))
    }

    /// The standard layout: workspace, outputs, then the stores.
    pub fn session(
        workspace: impl Into<PathBuf>,
        outputs: impl Into<PathBuf>,
        stores: impl IntoIterator<Item = Mount>,
    ) -> Result<MountSet, MountError> {
        let mut all = vec![Mount::workspace(workspace), Mount::outputs(outputs)];
        all.extend(stores);
        MountSet::new(all)
    }

    /// Every mount, in order.
    pub fn all(&self) -> &[Mount] {
        &self.0
    }

    /// The memory-store mounts, in order.
    pub fn memory_stores(&self) -> impl Iterator<Item = &Mount> {
        self.0
            .iter()
            .filter(|m| matches!(m.guest, GuestPath::Memory(_)))
    }

    /// The host directory mounted at `/workspace`.
    pub fn workspace(&self) -> &std::path::Path {
        self.find(&GuestPath::Workspace)
    }

    /// The host directory mounted at `/mnt/session/outputs`.
    pub fn outputs(&self) -> &std::path::Path {
        self.find(&GuestPath::Outputs)
    }

    fn find(&self, guest: &GuestPath) -> &std::path::Path {
        // `new` proved exactly one of each.
        &self
            .0
            .iter()
            .find(|m| &m.guest == guest)
            .expect("checked by MountSet::new")
            .host
    }

    /// The mount whose guest directory contains the absolute, normalised guest `path` (the
    /// deepest when they nest), and the path relative to it (`""` for the directory itself).
    /// Whole components only: `/workspacex` is not below `/workspace`.
    pub fn containing<'a, 'p>(&'a self, path: &'p str) -> Option<(&'a Mount, &'p str)> {
        self.0
            .iter()
            .filter_map(|m| {
                let rest = path.strip_prefix(m.guest.as_str())?;
                let rest = if rest.is_empty() {
                    ""
                } else {
                    rest.strip_prefix('/')?
                };
                Some((m, rest))
            })
            .max_by_key(|(m, _)| m.guest.as_str().len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(p: &str, ro: bool) -> Mount {
        Mount::memory_store(
            MemoryMountPath::parse(p).unwrap(),
            format!("/host{p}"),
            Access::from_read_only(ro),
        )
    }

    #[test]
    fn session_layout_is_checked_as_a_whole() {
        let set = MountSet::session("/h/w", "/h/o", [store("/mnt/memory/a", true)]).unwrap();
        assert_eq!(set.workspace(), std::path::Path::new("/h/w"));
        assert_eq!(set.outputs(), std::path::Path::new("/h/o"));
        assert_eq!(set.memory_stores().count(), 1);
        let err = MountSet::session(
            "/h/w",
            "/h/o",
            [
                store("/mnt/memory/a", false),
                store("/mnt/memory/a/b", true),
            ],
        )
        .unwrap_err();
        assert!(
            matches!(err, MountError::GuestPath(GuestPathError::Overlap { .. })),
            "{err}"
        );
        let err = MountSet::new(vec![Mount::workspace("/w")]).unwrap_err();
        assert_eq!(err, MountError::Required(OUTPUTS));
        let err = MountSet::new(vec![
            Mount::workspace("/w"),
            Mount::workspace("/w2"),
            Mount::outputs("/o"),
        ])
        .unwrap_err();
        assert_eq!(err, MountError::Required(WORKSPACE));
        let mut ro = Mount::outputs("/o");
        ro.access = Access::ReadOnly;
        let err = MountSet::new(vec![Mount::workspace("/w"), ro]).unwrap_err();
        assert_eq!(err, MountError::ReadOnlyRequired(OUTPUTS));
    }

    #[test]
    fn containing_takes_whole_components_and_the_deepest_mount() {
        let set =
            MountSet::session("/h/w", "/h/o", [store("/mnt/memory/team/notes", false)]).unwrap();
        let (m, rest) = set.containing("/workspace/a/b").unwrap();
        assert_eq!((m.guest.as_str(), rest), (WORKSPACE, "a/b"));
        let (m, rest) = set.containing("/workspace").unwrap();
        assert_eq!((m.guest.as_str(), rest), (WORKSPACE, ""));
        assert!(set.containing("/workspacex/a").is_none());
        assert!(set.containing("/mnt/memory/team").is_none());
        let (m, rest) = set.containing("/mnt/memory/team/notes/x").unwrap();
        assert_eq!((m.guest.as_str(), rest), ("/mnt/memory/team/notes", "x"));
        assert!(set.containing("/mnt/session").is_none());
    }
}

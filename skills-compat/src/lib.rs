//! # wasm-sandbox-skills
//!
//! Per-session filesystem work around a sandbox session that is neither a tool call nor
//! transport: installing the agent's **skills**, collecting **outputs**, and the **memory-store**
//! sync rules. Behaviour follows the reference worker (the `anthropic` Python SDK 2.10.0,
//! `lib/tools/_skills.py`, `_memories.py`, `_file_store.py`; see `shared/spec/protocol.md`
//! §6–§8). Deliberate departures are hardening and are called out where they are made.
//!
//! The crate has no HTTP and no wasmtime dependency. The worker resolves skill versions and
//! downloads archives, then hands each archive to [`SkillsManager`] as a byte stream
//! ([`std::io::Read`] or [`tokio::io::AsyncRead`]). For memory stores, the worker implements
//! [`memory::MemoryApi`] (the HTTP calls), uses [`memory::folder::CapStdFolder`] for the store
//! folder, and drives the sync engine in [`memory`].
//!
//! ## Key types
//!
//! - [`SkillsManager`]: installs skills into `<workdir>/skills/<name>/` for one session, logs
//!   and continues on a per-skill failure, removes exactly what it created at teardown.
//! - [`extract`]: safe zip / tar / tar.gz / tar.bz2 / tar.xz extraction through `cap-std`
//!   directory handles, with size, count and depth limits ([`ExtractLimits`]).
//! - [`manifest`]: `SKILL.md` front matter parsing and validation.
//! - [`outputs`]: walks the `/mnt/session/outputs` host directory without following symlinks and
//!   yields only regular files, opened safely.
//! - [`memory`]: mount-path, sync-interval and delete-mode rules, and the three-way merge
//!   between the local folder, the remote listing and the last-synced baseline.
//!
//! ## Security model
//!
//! Every filesystem operation on guest-influenced trees goes through a [`cap_std::fs::Dir`]
//! handle and opens single path components with `O_NOFOLLOW`, so a symlink planted by a guest
//! (or by an archive) can never redirect a write or a read outside the intended directory. The
//! module docs of [`extract`] and [`outputs`] give the details beside the checks.

pub mod extract;
pub mod limits;
pub mod manager;
pub mod manifest;
pub mod memory;
pub mod names;
pub mod outputs;

pub use extract::{ArchiveFormat, ExtractError, ExtractStats, SkippedMember};
pub use limits::ExtractLimits;
pub use manager::{InstalledSkill, SkillDescriptor, SkillError, SkillFailure, SkillsManager};
pub use manifest::{ManifestError, SkillManifest};
pub use names::skill_dir_name;
pub use outputs::{OutputEntry, OutputFile, OutputsLimits, SkipReason, collect_outputs};

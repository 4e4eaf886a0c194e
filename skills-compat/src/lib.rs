//! # wasm-sandbox-skills
//!
//! Installing the agent's **skills** for a sandbox session: safe archive extraction,
//! `SKILL.md` validation, per-session install and teardown. Behaviour follows the reference
//! worker (the `anthropic` Python SDK 2.10.0, `lib/tools/_skills.py`; see
//! `shared/spec/protocol.md` §6). Deliberate departures are hardening and are called out where
//! they are made. Memory-store sync lives in its own crate, `wasm-sandbox-memory`
//! (`runtime/memory`).
//!
//! The crate has no HTTP and no wasmtime dependency. The worker resolves skill versions and
//! downloads archives, then hands each archive to [`SkillsManager`] as a byte stream
//! ([`std::io::Read`] or [`tokio::io::AsyncRead`]).
//!
//! ## Key types
//!
//! - [`SkillsManager`]: installs skills into `<workdir>/skills/<name>/` for one session, logs
//!   and continues on a per-skill failure, removes exactly what it created at teardown.
//! - [`extract`]: safe zip / tar / tar.gz / tar.bz2 / tar.xz extraction through `cap-std`
//!   directory handles, with size, count and depth limits ([`ExtractLimits`]).
//! - [`manifest`]: `SKILL.md` front matter parsing and validation.
//!
//! ## Security model
//!
//! Every filesystem operation on guest-influenced trees goes through a [`cap_std::fs::Dir`]
//! handle and opens single path components with `O_NOFOLLOW`, so a symlink planted by a guest
//! (or by an archive) can never redirect a write or a read outside the intended directory. The
//! module docs of [`extract`] give the details beside the checks.

pub mod extract;
pub mod limits;
pub mod manager;
pub mod manifest;
pub mod names;

pub use extract::{ArchiveFormat, ExtractError, ExtractStats, SkippedMember};
pub use limits::ExtractLimits;
pub use manager::{InstalledSkill, SkillDescriptor, SkillError, SkillFailure, SkillsManager};
pub use manifest::{ManifestError, SkillManifest};
pub use names::skill_dir_name;

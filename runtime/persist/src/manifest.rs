//! The snapshot format: one manifest per generation listing every entry, plus content objects.
//!
//! Measured choice (see `BENCHMARKS.md`, persistence): a `node_modules`-like workspace is tens
//! of thousands of small files, and one store request per file costs more than the bytes
//! (~10–50 ms per S3 PUT). So:
//!
//! - files under [`SMALL_FILE`] are **packed** together into objects of up to [`PACK_SIZE`];
//! - larger files are cut into **chunks** of [`CHUNK_SIZE`], one object each;
//! - every object is named by the SHA-256 of its plaintext (keyed under encryption), so a
//!   chunk that did not change is not uploaded again, and a small file whose content is in the
//!   previous generation points into that generation's pack instead of being re-packed: a
//!   checkpoint uploads only what changed;
//! - the manifest (JSON, with its own SHA-256 in a header line) is written last and is the
//!   commit point: a generation is complete or absent.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::Error;

/// Files smaller than this are packed with others.
pub const SMALL_FILE: u64 = 64 << 10;
/// A pack is flushed once it holds this much.
pub const PACK_SIZE: usize = 4 << 20;
/// Large files are stored in chunks of this size.
pub const CHUNK_SIZE: usize = 4 << 20;
/// The largest content object a walk makes: a pack is flushed once it reaches [`PACK_SIZE`],
/// so it holds less than that plus one small file; a chunk is at most [`CHUNK_SIZE`]. A
/// manifest listing a bigger object is refused before anything is fetched.
pub const MAX_OBJECT: u64 = PACK_SIZE as u64 + SMALL_FILE;
/// Most bytes of entry names and link targets in one snapshot (raw): bounds the walk's memory
/// and the manifest's size whatever the entry count (a tree of 200,000 entries with 4 KiB
/// paths would otherwise hold gigabytes).
pub const MAX_NAME_BYTES: u64 = 32 << 20;

/// The largest manifest a snapshot with these limits can have: what a restore is willing to
/// read, and what a snapshot checks before committing (so it never commits a manifest a
/// restore would refuse). Names and link targets (base64: 4/3) plus a generous 512 bytes per
/// entry and per large-file piece for the JSON around them.
pub fn manifest_cap(max_bytes: u64, max_entries: u64) -> u64 {
    let pieces = max_bytes / CHUNK_SIZE as u64 + 1;
    (MAX_NAME_BYTES / 3 * 4 + (1 << 20))
        .saturating_add(max_entries.saturating_mul(512))
        .saturating_add(pieces.saturating_mul(512))
}

/// The most content-object bytes a restore fetches for a snapshot with these limits: the walk
/// makes new objects only from file bytes (at most `max_bytes`) and reuses objects of the
/// previous generation only up to `max_bytes` in all (see `walk`), so a manifest referencing
/// more is refused before anything is fetched.
pub fn fetch_cap(max_bytes: u64) -> u64 {
    max_bytes.saturating_mul(2).saturating_add(2 * MAX_OBJECT)
}

const HEADER: &str = "wasm-sandbox-snapshot v1";

/// Which session directory an entry belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Root {
    /// `/workspace` (`<root>/workspace`).
    Workspace,
    /// `/mnt/session/outputs` (`<root>/outputs`).
    Outputs,
}

/// One generation's listing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The session.
    pub session_id: String,
    /// This generation's number.
    pub generation: u64,
    /// When it was taken (Unix ms).
    pub created_unix_ms: u64,
    /// Who wrote it (worker id and work id), for operators.
    pub writer: String,
    /// Random, per commit attempt: a writer whose create-only put timed out after committing
    /// reads the generation back and recognises its own commit by it (instead of taking it
    /// for another writer's and dropping every later save).
    #[serde(default)]
    pub nonce: String,
    /// Total bytes of the regular files.
    pub file_bytes: u64,
    /// Content objects referenced, by store name: plaintext SHA-256 (hex) and length.
    pub objects: BTreeMap<String, ObjectInfo>,
    /// Every entry, parents before children.
    pub entries: Vec<Entry>,
}

/// A content object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectInfo {
    /// SHA-256 of the plaintext, hex.
    pub sha256: String,
    /// Plaintext length.
    pub len: u64,
}

/// One file, directory or link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Which directory.
    pub root: Root,
    /// Path relative to the root, components joined by `/`, as base64 of the raw bytes
    /// (names need not be UTF-8).
    pub path: String,
    /// What it is.
    #[serde(flatten)]
    pub kind: Kind,
}

/// The entry's type and data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Kind {
    /// A directory.
    Dir {
        /// Permission bits (set-id bits dropped).
        mode: u32,
        /// Modification time, ns since the epoch.
        mtime_ns: i64,
    },
    /// A regular file (hard links are stored as copies sharing objects).
    File {
        /// Permission bits (set-id bits dropped).
        mode: u32,
        /// Modification time, ns since the epoch.
        mtime_ns: i64,
        /// Length.
        size: u64,
        /// SHA-256 of the content, hex.
        sha256: String,
        /// Where the content is, in order.
        pieces: Vec<Piece>,
    },
    /// A symbolic link, saved as a link (never followed).
    Symlink {
        /// The target, base64 of the raw bytes.
        target: String,
    },
}

/// A slice of a content object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Piece {
    /// Object name.
    pub o: String,
    /// Offset in the object.
    pub off: u64,
    /// Length.
    pub len: u64,
}

impl Entry {
    /// The raw relative path.
    pub fn path_bytes(&self) -> Result<Vec<u8>, Error> {
        b64d(&self.path)
    }
}

pub(crate) fn b64e(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

pub(crate) fn b64d(s: &str) -> Result<Vec<u8>, Error> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|_| Error::Corrupt("bad base64 in the manifest".to_owned()))
}

pub(crate) fn sha256(b: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, b);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl Manifest {
    /// Serialises with the integrity header: `HEADER\n<sha256 of the JSON>\n<JSON>`.
    pub fn encode(&self) -> Vec<u8> {
        let json = serde_json::to_vec(self).expect("a manifest serialises");
        let mut out = Vec::with_capacity(json.len() + 100);
        out.extend_from_slice(HEADER.as_bytes());
        out.push(b'\n');
        out.extend_from_slice(crate::store::hex(&sha256(&json)).as_bytes());
        out.push(b'\n');
        out.extend_from_slice(&json);
        out
    }

    /// Parses and checks the integrity header.
    pub fn decode(data: &[u8]) -> Result<Manifest, Error> {
        let bad = |why: &str| Error::Corrupt(format!("manifest: {why}"));
        let rest = data
            .strip_prefix(HEADER.as_bytes())
            .and_then(|r| r.strip_prefix(b"\n"))
            .ok_or_else(|| bad("unknown format"))?;
        if rest.len() < 65 || rest[64] != b'\n' {
            return Err(bad("no checksum line"));
        }
        let (sum, json) = (&rest[..64], &rest[65..]);
        if sum != crate::store::hex(&sha256(json)).as_bytes() {
            return Err(bad("checksum mismatch"));
        }
        serde_json::from_slice(json).map_err(|e| bad(&e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_and_tamper() {
        let m = Manifest {
            session_id: "sesn_1".into(),
            generation: 3,
            created_unix_ms: 1,
            writer: "w".into(),
            nonce: String::new(),
            file_bytes: 0,
            objects: BTreeMap::new(),
            entries: vec![Entry {
                root: Root::Workspace,
                path: b64e(b"a"),
                kind: Kind::Symlink {
                    target: b64e(b"/etc"),
                },
            }],
        };
        let enc = m.encode();
        assert_eq!(Manifest::decode(&enc).unwrap(), m);
        let mut bad = enc.clone();
        let n = bad.len();
        bad[n - 3] ^= 1;
        assert!(matches!(Manifest::decode(&bad), Err(Error::Corrupt(_))));
        assert!(Manifest::decode(b"garbage").is_err());
    }
}

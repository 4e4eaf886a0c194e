//! The sink's durable cursor: `<ledger>/sent.cursor`, the [`Position`] just past the last record
//! the sink delivered.
//!
//! Stored as a tiny JSON file replaced atomically (write a temporary file, `fsync` it, `rename`
//! over the old one, `fsync` the directory), so a crash leaves either the old or the new
//! cursor, never a torn one. The cursor only moves forward after the sink's endpoint answered
//! 2xx: a crash between that answer and the rename re-sends at most the one record, with the
//! same `Idempotency-Key`, which the endpoint deduplicates.

use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::ledger::{Position, sync_dir};

/// The cursor's file name inside the ledger directory.
pub const CURSOR_FILE: &str = "sent.cursor";

/// The stored cursor; the start of the ledger when there is none.
pub fn load(dir: &Path) -> io::Result<Position> {
    // O_NOFOLLOW: a link planted in the ledger directory is not followed; the cursor is tiny,
    // so reading more than a page means it is not ours.
    let read = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir.join(CURSOR_FILE))
        .and_then(|f| {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut std::io::Read::take(f, 4096), &mut bytes)?;
            Ok(bytes)
        });
    match read {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", dir.join(CURSOR_FILE).display()),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Position::default()),
        Err(e) => Err(e),
    }
}

/// Replaces the stored cursor with `pos`, durably.
pub fn store(dir: &Path, pos: Position) -> io::Result<()> {
    let tmp = dir.join(format!("{CURSOR_FILE}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)?;
    file.write_all(&serde_json::to_vec(&pos).map_err(io::Error::other)?)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, dir.join(CURSOR_FILE))?;
    sync_dir(dir)
}

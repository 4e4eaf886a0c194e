//! The disk room: a session's capped filesystem (`[runtime.shape] disk`, see
//! `wasm_sandbox_native::disk`): mounting it under the session root before anything is
//! created there, putting writable memory stores on it, and saying so when a file tool
//! fails because it is full.

use std::path::Path;

use serde_json::Value;
use wasm_sandbox_fs::mounts::Mount;
use wasm_sandbox_native::disk::DiskCap;

use crate::tool::{Tool, ToolResult};
use crate::{Error, Result};

/// What [`mount_disk`] needs to know of a session.
pub(crate) struct DiskSpec<'a> {
    /// The session id (for logs).
    pub session_id: &'a str,
    /// The session's root directory (the cap is mounted there).
    pub root: &'a Path,
    /// Whether the embedder gave its own workspace/outputs directories.
    pub custom_dirs: bool,
    /// The session's memory stores.
    pub memory_stores: &'a [Mount],
}

/// Mounts the session's capped filesystem when `[runtime.shape] disk` is set and the
/// host can (the probe at start-up said so). The default layout only (`<root>/workspace`,
/// `<root>/outputs`): an embedder's own directories are left as they are. A mount that
/// fails fails the session under `enforce = "required"` and is logged otherwise.
pub(crate) fn mount_disk(
    shape: &wasm_sandbox_native::ShapeConfig,
    report: &wasm_sandbox_native::SandboxReport,
    spec: &DiskSpec<'_>,
) -> Result<Option<DiskCap>> {
    let Some(bytes) = shape.disk_bytes else {
        return Ok(None);
    };
    let required = shape.enforce == wasm_sandbox_native::Enforce::Required;
    if report.disk_limit != wasm_sandbox_native::LimitMechanism::Filesystem {
        // Under `required` the runtime refused to start already.
        return Ok(None);
    }
    if spec.custom_dirs {
        // The cap covers the default layout only; an embedder's directories (`replay
        // --workspace`) stay on their own filesystem, which `required` cannot accept.
        if required {
            return Err(Error::Config(
                "[runtime.shape] disk is set with enforce = \"required\", but the session \
                 uses its own workspace/outputs directories, which the disk cap cannot cover; \
                 drop the custom directories or use enforce = \"best-effort\""
                    .into(),
            ));
        }
        tracing::warn!(session_id = %spec.session_id,
            "custom workspace/outputs directories: the session runs without the disk cap");
        return Ok(None);
    }
    std::fs::create_dir_all(spec.root).map_err(Error::Io)?;
    // Writable memory stores the worker downloaded below the root go onto the cap too
    // (`DiskCap::adopt`): bash binds them writable, so outside the cap they would let a
    // session fill the host disk. Read-only ones stay where they are (the session cannot
    // grow them; the download limits bound them).
    match DiskCap::mount(spec.root, bytes, shape.disk_inodes) {
        Ok(mut d) => {
            // Host overcommit (sparse images: see `wasm_sandbox_native::disk`).
            if let Some(why) = d.overcommit() {
                if required {
                    return Err(Error::Config(format!(
                        "refusing the session under [runtime.shape] enforce = \"required\": {why}"
                    )));
                }
                tracing::warn!(session_id = %spec.session_id, problem = %why,
                    "session disk cap overcommits the host volume (enforce = \"best-effort\")");
            }
            for m in spec.memory_stores.iter().filter(|m| !m.read_only()) {
                match d.adopt(&m.host) {
                    Ok(()) => {}
                    Err(e) if required => {
                        return Err(Error::Config(format!(
                            "cannot put memory store {} on the session's disk cap: {e}",
                            m.guest
                        )));
                    }
                    Err(e) => tracing::warn!(session_id = %spec.session_id, error = %e,
                        "memory store left off the session's disk cap"),
                }
            }
            Ok(Some(d))
        }
        Err(e) if required => Err(Error::Config(format!(
            "cannot mount the session's disk cap: {e}"
        ))),
        Err(e) => {
            tracing::warn!(session_id = %spec.session_id, error = %e,
                "cannot mount the session's disk cap; the session runs without it");
            Ok(None)
        }
    }
}

/// The file tools' guest reports a failed stream write as `input/output error` (WASI
/// streams carry no errno). When a `write`/`edit` fails so on a session disk that has
/// less room than the call needed, the cause is the disk cap: say so, and how to get
/// room back.
pub(crate) fn explain_disk_full(disk: &DiskCap, tool: Tool, input: &Value, r: &mut ToolResult) {
    if !r.is_error || !matches!(tool, Tool::Write | Tool::Edit) {
        return;
    }
    let needed: u64 = ["content", "new_string"]
        .iter()
        .filter_map(|k| input.get(*k).and_then(Value::as_str))
        .map(|s| s.len() as u64)
        .sum::<u64>()
        + (1 << 20);
    if disk.free_bytes().is_none_or(|free| free >= needed) {
        return;
    }
    let cap = disk
        .size_bytes()
        .map(wasm_sandbox_units::format_size)
        .unwrap_or_default();
    for block in &mut r.content {
        if let Some(text) = block.get("text").and_then(Value::as_str)
            && text.contains("input/output error")
        {
            let text = text.replace(
                "input/output error",
                &format!(
                    "No space left on device (the session's disk is full: {cap} cap for \
                     /workspace and /mnt/session/outputs together; delete files to make room)"
                ),
            );
            block["text"] = Value::String(text);
        }
    }
}

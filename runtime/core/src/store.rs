//! The store room: the WASI context and `Store` every guest of a session runs in (the
//! file-tools instance and each command component), built from the session's
//! [`MountSet`].
//!
//! # Sandbox
//!
//! A guest's only authority is its WASI context, built here from deny-all defaults: the
//! session's mounts as preopens (read-only ones with read-only permissions), no
//! environment, no arguments, no network. Path confinement therefore does not rest on
//! the guest's own checks (which reproduce the reference's error messages):
//! wasmtime-wasi resolves every path beneath a preopened directory handle with cap-std,
//! which refuses `..` past the preopen, absolute symlinks and symlinks that escape, so
//! even a compromised guest cannot name a host file outside its mounts. Memory is capped
//! per store (`limits.memory_bytes`), and instantiation runs under an epoch deadline.

use std::sync::Arc;

use wasm_sandbox_fs::mounts::MountSet;
use wasm_sandbox_hostcalls_nn::{WasiNnCtx, WasiNnView};
use wasmtime::component::ResourceTable;
use wasmtime::{Engine, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::{Error, Result};

/// Epoch ticks allowed for instantiation (start-up code only).
const INSTANTIATE_DEADLINE_TICKS: u64 = 1000;

/// The `T` of a session's `Store<T>`.
pub struct SessionState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    mounts: Arc<MountSet>,
    nn: WasiNnCtx,
}

impl SessionState {
    /// The wasi-nn view of this store (models by name, the session's quotas).
    pub(crate) fn nn_view(&mut self) -> WasiNnView<'_> {
        WasiNnView::new(&mut self.table, &mut self.nn)
    }

    /// The session's mounts (what the preopens were built from).
    pub(crate) fn mounts(&self) -> &MountSet {
        &self.mounts
    }
}

impl WasiView for SessionState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// A WASI context builder with exactly the session's mounts as preopens and nothing
/// else (see [the module docs](self)); callers add arguments, stdio or an extra preopen.
pub(crate) fn wasi_builder(mounts: &MountSet) -> Result<WasiCtxBuilder> {
    let mut builder = WasiCtx::builder();
    // The tools run on a blocking thread already; doing file I/O inline
    // saves a thread hop per WASI call (~100 us per tool call).
    builder.allow_blocking_current_thread(true);
    builder
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    for p in mounts.all() {
        let perms = if p.read_only() {
            FsPerms::ReadOnly
        } else {
            FsPerms::ReadWrite
        };
        builder
            .preopened_dir(&p.host, p.guest.as_str(), perms)
            .map_err(|e| {
                Error::Sandbox(format!(
                    "failed to preopen {} at {}: {e}",
                    p.host.display(),
                    p.guest
                ))
            })?;
    }
    Ok(builder)
}

/// Makes stores on one engine with one memory cap.
#[derive(Clone)]
pub(crate) struct Stores {
    engine: Engine,
    memory_bytes: u64,
}

impl Stores {
    /// Stores on `engine`, each capped at `memory_bytes` of linear memory.
    pub(crate) fn new(engine: Engine, memory_bytes: u64) -> Stores {
        Stores {
            engine,
            memory_bytes,
        }
    }

    /// A fresh store for one guest of the session with these `mounts` (the same set
    /// `builder` was made from), under the instantiation deadline.
    pub(crate) fn store(
        &self,
        mut builder: WasiCtxBuilder,
        mounts: &Arc<MountSet>,
        nn: WasiNnCtx,
    ) -> Store<SessionState> {
        let limits = StoreLimitsBuilder::new()
            .memory_size(usize::try_from(self.memory_bytes).unwrap_or(usize::MAX))
            .instances(32)
            .build();
        let state = SessionState {
            wasi: builder.build(),
            table: ResourceTable::new(),
            limits,
            mounts: mounts.clone(),
            nn,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        // Instantiation runs the guest's start-up code; give it the same
        // kind of budget as a call (each call sets its own deadline).
        store.set_epoch_deadline(INSTANTIATE_DEADLINE_TICKS);
        store.epoch_deadline_trap();
        store
    }
}

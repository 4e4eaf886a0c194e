//! The sandbox room: one bash sandbox as a session runs it — the native
//! [`BashSession`] with its `wasm-run` bridge socket ([`crate::wasm_run`]) and its egress
//! directory ([`crate::egress`]) — and the one builder of its [`BashSessionSpec`], used
//! alike for a fresh session, a sandbox started ahead of demand ([`crate::pool`]) and a
//! pooled sandbox a session adopts.

use std::collections::BTreeMap;

use wasm_sandbox_fs::mounts::MountSet;
use wasm_sandbox_native::{BashSession, BashSessionSpec};

use crate::Result;
use crate::bash::BashHost;
use crate::egress::EgressDir;
use crate::wasm_run::Bridge;

/// A bash sandbox (not started: the shell starts on the first call or a prestart) and
/// what is bound into it.
pub(crate) struct Sandbox {
    /// The shell and its sandbox.
    pub bash: BashSession,
    /// The `wasm-run` bridge, when enabled.
    pub bridge: Option<Bridge>,
    /// The egress directory (networking on); the session's proxy starts in it.
    pub egress: Option<EgressDir>,
}

impl Sandbox {
    /// A fresh sandbox with these mounts and bash environment (`None` = the allow-list).
    pub(crate) fn new(
        host: &BashHost,
        session_id: &str,
        mounts: &MountSet,
        env: Option<BTreeMap<String, String>>,
    ) -> Result<Sandbox> {
        let bridge = Bridge::bind(host)?;
        let egress = EgressDir::create(host)?;
        let spec = bash_spec(session_id, mounts, env, bridge.as_ref(), egress.as_ref());
        Ok(Sandbox {
            bash: BashSession::new(host.sandbox().clone(), spec),
            bridge,
            egress,
        })
    }

    /// Hands a pooled sandbox to a session: the same builder, with the session's id,
    /// mounts (its directories were renamed onto them) and environment.
    pub(crate) fn adopt(
        &mut self,
        session_id: &str,
        mounts: &MountSet,
        env: Option<BTreeMap<String, String>>,
    ) {
        let spec = bash_spec(
            session_id,
            mounts,
            env,
            self.bridge.as_ref(),
            self.egress.as_ref(),
        );
        self.bash.adopt(spec);
    }
}

/// The bash sandbox's spec: the one place a [`BashSessionSpec`] is built.
fn bash_spec(
    session_id: &str,
    mounts: &MountSet,
    env: Option<BTreeMap<String, String>>,
    bridge: Option<&Bridge>,
    egress: Option<&EgressDir>,
) -> BashSessionSpec {
    BashSessionSpec {
        session_id: session_id.to_owned(),
        mounts: mounts.clone(),
        env,
        wasm_run_socket: bridge.map(|b| b.socket().to_path_buf()),
        egress_dir: egress.map(|e| e.path().to_path_buf()),
    }
}

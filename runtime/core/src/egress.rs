//! Per-session network egress (`[runtime.networking]`): the runtime's side.
//!
//! The policy and the proxy are in `wasm-sandbox-egress`; the sandbox side (the
//! loopback relay, the proxy variables) in `wasm-sandbox-native`'s `net` module.
//! Here: one private directory per bash sandbox (fresh or pooled) under the
//! runtime's `0700` socket directory, bound into that sandbox only, and the
//! session's proxy started in it when the session is known (for a pooled sandbox:
//! when a session adopts it). The directory's name is never reused, so a sandbox
//! cannot be handed another session's socket.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use wasm_sandbox_egress::{Egress, NetUsage, SessionProxy};

use crate::bash::BashHost;
use crate::config::RuntimeConfig;
use crate::{Error, Result};

static DIRS: AtomicU64 = AtomicU64::new(0);

/// Compiles `[runtime.networking]`; `None` for `type = "none"`. Refuses the legacy
/// host-network switch together with a proxy type (the two cannot both hold), and
/// reads upstream header values from the environment now (a missing variable is a
/// start-up error).
pub(crate) fn build(config: &RuntimeConfig) -> Result<Option<Arc<Egress>>> {
    let net = &config.networking;
    if !net.enabled() {
        // Still checks the entries, so a typo fails at start, not when the type changes.
        wasm_sandbox_egress::Policy::new(net).map_err(|e| Error::Config(e.to_string()))?;
        return Ok(None);
    }
    check(config)?;
    Egress::new(net, Vec::new())
        .map(Some)
        .map_err(|e| Error::Config(e.to_string()))
}

/// The checks of `[runtime.networking]` against the rest of the configuration
/// that need no start-up work (also run by `wasm-sandbox config check`),
/// including the `[[nn.remote]]` entries that name an upstream.
///
/// * Not together with the legacy `bash.network = true` (the host's whole
///   network): the two cannot both hold.
/// * Not together with `bash.allow_unsandboxed_bash_i_understand_the_risk`: the
///   policy is enforced by bash's private network namespace (no route out but
///   the proxy relay). Unsandboxed bash runs in the worker's namespace with the
///   host's network, so the policy would silently not exist; an operator who
///   wrote an allow-list must get a start-up error, not an open network on the
///   host where the sandbox happens to be unavailable.
pub fn check_networking(config: &RuntimeConfig) -> Result<()> {
    check(config)?;
    resolve_nn(config)?;
    wasm_sandbox_egress::Policy::new(&config.networking)
        .map(|_| ())
        .map_err(|e| Error::Config(e.to_string()))
}

/// `[nn]` with every `[[nn.remote]]` entry that names an `upstream` resolved
/// from `[[networking.upstreams]]`: its `url` becomes the upstream's URL followed
/// by its `path`, and the upstream's headers (values from the same environment
/// variables) are sent with each call. So an operator configures an endpoint
/// (the LLM, Whisper, OCR, TTS APIs) once, for both the sandbox's
/// `http://<name>.internal/` alias and wasi-nn. Such an entry may not also give
/// `url`, `api_key_env` or `api_key_header` (one definition, not two).
pub(crate) fn resolve_nn(config: &RuntimeConfig) -> Result<wasm_sandbox_hostcalls_nn::NnConfig> {
    let mut nn = config.nn.clone();
    for m in &mut nn.remote {
        let err = |why: String| Error::Config(format!("nn.remote {:?}: {why}", m.name));
        let Some(name) = &m.upstream else {
            if m.path.is_some() {
                return Err(err("path is only for models with an upstream".into()));
            }
            continue;
        };
        if !m.url.is_empty() || m.api_key_env.is_some() || m.api_key_header.is_some() {
            return Err(err(format!(
                "upstream = {name:?} replaces url, api_key_env and api_key_header; give one or the other"
            )));
        }
        let up = config
            .networking
            .upstreams
            .iter()
            .find(|u| &u.name == name)
            .ok_or_else(|| err(format!("no [[networking.upstreams]] entry named {name:?}")))?;
        m.url = up
            .endpoint(m.path.as_deref().unwrap_or(""))
            .map_err(|e| err(e.to_string()))?;
        m.header_env = up
            .headers
            .iter()
            .map(|(h, src)| (h.clone(), src.env.clone()))
            .collect();
    }
    Ok(nn)
}

fn check(config: &RuntimeConfig) -> Result<()> {
    if !config.networking.enabled() {
        return Ok(());
    }
    if config.bash.network {
        return Err(Error::Config(
            "networking.type is not \"none\" but bash.network = true (the host's whole \
             network); use one or the other"
                .into(),
        ));
    }
    if config.bash.allow_unsandboxed_bash_i_understand_the_risk {
        return Err(Error::Config(
            "networking.type is not \"none\" but bash.allow_unsandboxed_bash_i_understand_the_risk \
             = true: unsandboxed bash has the host's network, so the egress policy could not \
             be enforced; use one or the other"
                .into(),
        ));
    }
    Ok(())
}

/// A sandbox's egress directory (and, once a session owns it, its proxy).
/// Dropping it stops the proxy and removes the directory.
#[derive(Debug)]
pub(crate) struct EgressDir {
    dir: PathBuf,
    proxy: Option<SessionProxy>,
}

impl EgressDir {
    /// A fresh private directory for one sandbox, or `None` when networking is
    /// off or bash does not run in its sandbox (no proxy can be enforced there).
    pub(crate) fn create(host: &BashHost) -> Result<Option<EgressDir>> {
        if host.egress().is_none() || !host.sandboxed() {
            return Ok(None);
        }
        use std::os::unix::fs::DirBuilderExt;
        let dir = host
            .socket_dir()?
            .join(format!("net-{}", DIRS.fetch_add(1, Ordering::Relaxed)));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| Error::Sandbox(format!("cannot create {}: {e}", dir.display())))?;
        Ok(Some(EgressDir { dir, proxy: None }))
    }

    /// The host directory bound into the sandbox.
    pub(crate) fn path(&self) -> &Path {
        &self.dir
    }

    /// Starts the session's proxy in the directory. Without a tokio runtime, or
    /// when the socket cannot be made, the sandbox simply has no proxy (its
    /// connections fail at once): fail closed, logged.
    pub(crate) fn serve(&mut self, host: &BashHost, session_id: &str, narrowing: Option<&str>) {
        let Some(egress) = host.egress() else {
            return;
        };
        if tokio::runtime::Handle::try_current().is_err() {
            tracing::error!(session = %session_id, "no tokio runtime: the session has no network proxy");
            return;
        }
        let socket = self.dir.join(wasm_sandbox_native::net::SOCKET_NAME);
        match egress.serve_session(session_id, &socket, narrowing) {
            Ok(p) => self.proxy = Some(p),
            Err(e) => {
                tracing::error!(session = %session_id, error = %e, "cannot start the session's network proxy");
            }
        }
    }

    /// The session's network use.
    pub(crate) fn usage(&self) -> Option<NetUsage> {
        self.proxy.as_ref().map(SessionProxy::usage)
    }

    /// Stops the proxy (every connection of the session ends).
    pub(crate) fn close(&self) {
        if let Some(p) = &self.proxy {
            p.close();
        }
    }
}

impl Drop for EgressDir {
    fn drop(&mut self) {
        self.close();
        self.proxy = None;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml_text: &str) -> RuntimeConfig {
        toml::from_str(toml_text).unwrap()
    }

    /// Review finding: the unsandboxed fallback silently dropped the policy.
    #[test]
    fn networking_refuses_the_unsandboxed_fallback() {
        let c = config(
            "[bash]\nallow_unsandboxed_bash_i_understand_the_risk = true\n\
             [networking]\ntype = \"limited\"\nallowed_hosts = [\"pypi.org\"]",
        );
        let e = check_networking(&c).unwrap_err().to_string();
        assert!(
            e.contains("allow_unsandboxed_bash_i_understand_the_risk"),
            "{e}"
        );
        assert!(build(&c).is_err());
        // type = "none" keeps the fallback usable (nothing to enforce).
        let c = config("[bash]\nallow_unsandboxed_bash_i_understand_the_risk = true");
        assert!(check_networking(&c).is_ok());
        let c = config("[bash]\nnetwork = true\n[networking]\ntype = \"unrestricted\"");
        assert!(
            check_networking(&c)
                .unwrap_err()
                .to_string()
                .contains("bash.network")
        );
        let c = config("[networking]\ntype = \"unrestricted\"");
        assert!(check_networking(&c).is_ok());
    }

    /// One definition of an endpoint: `[[nn.remote]] upstream = "sister"` gets
    /// the upstream's URL (+ path) and headers; conflicts and typos are errors.
    #[test]
    fn nn_remote_models_resolve_from_upstreams() {
        let base = "[[networking.upstreams]]\nname = \"sister\"\nurl = \"https://api.sister.example/v1/\"\n\
                    headers = { \"x-api-key\" = { env = \"SISTER_KEY\" } }\n";
        let c = config(&format!(
            "{base}[[nn.remote]]\nname = \"llm-sister\"\nkind = \"chat\"\nupstream = \"sister\"\n\
             path = \"/chat/completions\"\n"
        ));
        let nn = resolve_nn(&c).unwrap();
        let m = &nn.remote[0];
        assert_eq!(m.url, "https://api.sister.example/v1/chat/completions");
        assert_eq!(
            m.header_env,
            [("x-api-key".to_owned(), "SISTER_KEY".to_owned())]
        );
        assert!(check_networking(&c).is_ok());
        for (extra, want) in [
            (
                "upstream = \"nope\"\n",
                "no [[networking.upstreams]] entry named \"nope\"",
            ),
            (
                "upstream = \"sister\"\nurl = \"https://x\"\n",
                "replaces url",
            ),
            (
                "upstream = \"sister\"\npath = \"/../admin\"\n",
                "dot segments",
            ),
            ("url = \"https://x\"\npath = \"/a\"\n", "path is only for"),
        ] {
            let c = config(&format!(
                "{base}[[nn.remote]]\nname = \"llm-x\"\nkind = \"chat\"\n{extra}"
            ));
            let e = check_networking(&c).unwrap_err().to_string();
            assert!(e.contains(want), "{e} should say {want}");
        }
    }
}

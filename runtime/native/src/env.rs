//! The environment bash starts with.
//!
//! The worker's own environment holds its credentials (`ANTHROPIC_API_KEY`, the
//! environment key, per-session tokens). A prompt-injected `env` or
//! `cat /proc/self/environ` would put them straight into the transcript, so bash never
//! inherits the worker's environment:
//!
//! 1. The base is either the session's explicit environment, used verbatim (like the
//!    reference's `AgentToolContext.env`), or an allow-list of harmless worker
//!    variables (locale, timezone) plus fixed defaults (`PATH`, `HOME`).
//! 2. Every variable whose name starts with `anthropic_` in **any** letter case is
//!    removed. The reference only drops the case-sensitive `ANTHROPIC_` prefix; this
//!    is a deliberate tightening.
//! 3. `PS1=""`, `PS2=""` and `TERM=dumb` are forced, as in the reference.
//!
//! The result is handed to bubblewrap with a cleared environment, so nothing else
//! passes through (bubblewrap, the init helper and bash all see exactly this map).

use std::collections::BTreeMap;

use crate::config::BashConfig;

/// True when `name` must never reach bash (`anthropic_` prefix, any case).
pub fn is_secret_name(name: &str) -> bool {
    name.len() >= 10 && name.as_bytes()[..10].eq_ignore_ascii_case(b"anthropic_")
}

/// Builds bash's environment from an explicit session env or from the allow-list.
pub fn build_env(
    config: &BashConfig,
    explicit: Option<&BTreeMap<String, String>>,
) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = match explicit {
        Some(map) => map.clone(),
        None => {
            let mut m = BTreeMap::new();
            for name in &config.env_allow {
                if let Some(value) = std::env::var_os(name).and_then(|v| v.into_string().ok()) {
                    m.insert(name.clone(), value);
                }
            }
            for (k, v) in &config.env_set {
                m.insert(k.clone(), v.clone());
            }
            m
        }
    };
    // A NUL or `=` in a name cannot be passed to execve; drop such entries instead of
    // failing the spawn.
    env.retain(|k, v| {
        !is_secret_name(k) && !k.is_empty() && !k.contains(['=', '\0']) && !v.contains('\0')
    });
    env.insert("PS1".to_owned(), String::new());
    env.insert("PS2".to_owned(), String::new());
    env.insert("TERM".to_owned(), "dumb".to_owned());
    env
}

/// Appends `dir` to `PATH` (last, so it never shadows a system command).
pub fn append_path(env: &mut BTreeMap<String, String>, dir: &str) {
    let path = env.entry("PATH".to_owned()).or_default();
    if !path.split(':').any(|d| d == dir) {
        if !path.is_empty() {
            path.push(':');
        }
        path.push_str(dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrubs_anthropic_prefix_in_any_case_and_forces_prompt_vars() {
        let explicit = BTreeMap::from([
            ("ANTHROPIC_API_KEY".to_owned(), "k".to_owned()),
            ("anthropic_x".to_owned(), "k".to_owned()),
            ("Anthropic_Mixed".to_owned(), "k".to_owned()),
            ("ANTHROPIC".to_owned(), "kept".to_owned()),
            ("MY_ANTHROPIC_X".to_owned(), "kept".to_owned()),
            ("PS1".to_owned(), "$ ".to_owned()),
            ("TERM".to_owned(), "xterm".to_owned()),
        ]);
        let env = build_env(&BashConfig::default(), Some(&explicit));
        assert_eq!(
            env.keys().map(String::as_str).collect::<Vec<_>>(),
            ["ANTHROPIC", "MY_ANTHROPIC_X", "PS1", "PS2", "TERM"]
        );
        assert_eq!(env["PS1"], "");
        assert_eq!(env["TERM"], "dumb");
    }

    #[test]
    fn allow_list_mode_uses_defaults_not_the_worker_env() {
        let env = build_env(&BashConfig::default(), None);
        assert_eq!(env["HOME"], "/workspace");
        assert_eq!(env["PATH"], crate::config::DEFAULT_PATH);
        for k in env.keys() {
            assert!(
                crate::config::DEFAULT_ENV_ALLOW.contains(&k.as_str())
                    || ["HOME", "PATH", "PS1", "PS2", "TERM"].contains(&k.as_str()),
                "unexpected {k}"
            );
        }
    }
}

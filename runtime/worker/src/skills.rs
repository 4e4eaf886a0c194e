//! The agent's skills for one claimed item (protocol §6): resolve each skill version, stream its
//! archive, install it under the session workspace's `skills/<name>/`, remove it at teardown.
//!
//! For each entry of `session.agent.skills` (`anthropic` and `custom` alike):
//! 1. `GET /v1/skills/{skill_id}/versions/{version}` resolves the version (`latest` included)
//!    to a concrete id and the skill's name;
//! 2. `GET …/versions/{id}/content` (`Accept: application/binary`) streams the archive straight
//!    into [`SkillsManager::install_async`], which spools it to disk (never buffered in memory)
//!    and extracts it safely (`wasm-sandbox-skills`: no absolute or `..` member, no links or
//!    devices, size/count/depth limits, every write through a directory handle).
//!
//! A skill that fails (resolution, download, extraction) is logged and skipped; the other skills
//! and the session go on. Nothing is cached between items: `latest` is resolved on every claim.
//!
//! Security: skill ids and versions come from the session, so each is checked to be a plain path
//! segment ([`crate::client::is_safe_path_segment`]) before it is put into a URL; the directory
//! name comes from the resolved version's name and is confined to `skills/` by the installer.
//! Installation runs after the sandbox is created and before the runner starts, so the guest has
//! run no command yet that could have planted a link at `workspace/skills`; the installer opens
//! it without following links anyway.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use wasm_sandbox_skills::{ExtractLimits, SkillDescriptor, SkillsManager};

use crate::client::{ItemClient, is_safe_path_segment};
use crate::proto::Session;

/// Bound on one archive download (resolution calls use the client's request timeout).
pub const SKILL_DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(300);

/// The workspace directory of a session rooted at `root`: the core runtime's default
/// (`<root>/workspace`, mounted at `/workspace`).
pub fn workspace_dir(root: &Path) -> PathBuf {
    root.join("workspace")
}

/// One `agent.skills` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkillRef {
    /// `skill_…`.
    pub skill_id: String,
    /// A version id or `latest` (the default when absent).
    pub version: String,
}

/// The skills listed on the session's agent, in order. Entries without a `skill_id` are
/// skipped with a warning.
pub fn session_skills(session: &Session) -> Vec<SkillRef> {
    let Some(list) = session
        .agent
        .as_ref()
        .and_then(|a| a.get("skills"))
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|s| {
            let Some(skill_id) = s.get("skill_id").and_then(Value::as_str) else {
                tracing::warn!("agent skill entry without a skill_id; skipping it");
                return None;
            };
            let version = match s.get("version") {
                Some(Value::String(v)) => v.clone(),
                Some(Value::Number(n)) => n.to_string(),
                _ => "latest".to_owned(),
            };
            Some(SkillRef {
                skill_id: skill_id.to_owned(),
                version,
            })
        })
        .collect()
}

/// Installs every skill of the session into `<workspace>/skills/`. Returns the manager (whose
/// [`SkillsManager::teardown`] removes what it installed), or `None` when the session has no
/// skills or the workspace could not be opened (logged).
pub async fn install_session_skills(
    item: &ItemClient,
    session: &Session,
    workspace: &Path,
) -> Option<SkillsManager> {
    let skills = session_skills(session);
    if skills.is_empty() {
        return None;
    }
    let ws = workspace.to_owned();
    let made = tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&ws)?;
        SkillsManager::new(ws, ExtractLimits::default())
    })
    .await;
    let mut manager = match made {
        Ok(Ok(m)) => m,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "could not open the workspace for skills; running without them");
            return None;
        }
        Err(e) => {
            tracing::error!(error = %e, "skills setup task failed; running without skills");
            return None;
        }
    };
    for skill in &skills {
        if let Err(e) = install_one(item, &mut manager, skill).await {
            manager.record_failure(&skill.skill_id, None, &e);
        }
    }
    tracing::info!(
        installed = manager.installed().len(),
        failed = manager.failures().len(),
        "skills ready"
    );
    Some(manager)
}

async fn install_one(
    item: &ItemClient,
    manager: &mut SkillsManager,
    skill: &SkillRef,
) -> Result<(), String> {
    if !is_safe_path_segment(&skill.skill_id) || !is_safe_path_segment(&skill.version) {
        return Err(format!(
            "refusing skill {:?} version {:?}: not a plain id",
            skill.skill_id, skill.version
        ));
    }
    let version = item
        .skill_version(&skill.skill_id, &skill.version)
        .await
        .map_err(|e| e.to_string())?;
    let archive = item
        .skill_content(&skill.skill_id, &version.id, SKILL_DOWNLOAD_TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    let descriptor = SkillDescriptor {
        skill_id: skill.skill_id.clone(),
        version_id: version.id.clone(),
        name: version.name.clone(),
        size_hint: None,
    };
    manager
        .install_async(&descriptor, archive)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Removes the skill directories `manager` installed (on the blocking pool; logged).
pub async fn teardown(mut manager: SkillsManager) {
    let done = tokio::task::spawn_blocking(move || manager.teardown()).await;
    match done {
        Ok(errors) => {
            for (path, e) in errors {
                tracing::error!(error = %e, "could not remove skill dir {}", path.display());
            }
        }
        Err(e) => tracing::error!(error = %e, "skills teardown task failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn skills_are_read_from_the_agent_with_latest_by_default() {
        let session: Session = serde_json::from_value(json!({
            "id": "sesn_1",
            "agent": {"skills": [
                {"type": "custom", "skill_id": "skill_a", "version": "latest"},
                {"type": "anthropic", "skill_id": "pdf"},
                {"type": "custom", "skill_id": "skill_b", "version": 1759178010641129_u64},
                {"type": "custom"}
            ]}
        }))
        .unwrap();
        let got = session_skills(&session);
        let want = [
            ("skill_a", "latest"),
            ("pdf", "latest"),
            ("skill_b", "1759178010641129"),
        ];
        assert_eq!(got.len(), want.len());
        for (g, (id, v)) in got.iter().zip(want) {
            assert_eq!((g.skill_id.as_str(), g.version.as_str()), (id, v));
        }
        assert!(session_skills(&Session::default()).is_empty());
    }
}

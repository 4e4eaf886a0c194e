//! Scripted sessions: the JSON scenario format.
//!
//! A scenario describes one session (its status, skills, memory stores) and a script the fake
//! agent plays on it: emit a tool call, wait for the worker's result, ask for a confirmation,
//! go idle, terminate. Scenarios live as JSON files under `examples/sessions/`.
//!
//! ```json
//! {
//!   "name": "one-bash-call",
//!   "prompt": "List the workspace",
//!   "steps": [
//!     {"tool_use": {"label": "ls", "name": "bash", "input": {"command": "ls"},
//!                   "expect": {"is_error": false}}},
//!     {"message": "Done."},
//!     {"idle": {"stop_reason": "end_turn"}},
//!     "terminate"
//!   ]
//! }
//! ```
//!
//! Steps (each an object with one key, or a bare string for the argument-less ones):
//!
//! | step | effect |
//! |---|---|
//! | `tool_use` | emit `agent.tool_use`; see [`ToolUseStep`] for waiting and expectations |
//! | `custom_tool_use` | emit `agent.custom_tool_use` |
//! | `await_result` | wait until the labelled call is answered |
//! | `confirm` | emit `user.tool_confirmation` (as the app would) for a labelled call |
//! | `message` | emit `agent.message` with one text block |
//! | `idle` | emit `session.status_idle` with a stop reason; status becomes `idle` |
//! | `running` | emit `session.status_running` |
//! | `terminate` | emit `session.status_terminated`; status becomes `terminated` |
//! | `delete` | emit `session.deleted`; status becomes `terminated` |
//! | `thread_terminated` | emit `session.thread_status_terminated` for a thread |
//! | `emit` | emit any event object (the fake adds `id` and `processed_at`) |
//! | `await_event` | wait for the next event of a type (e.g. `user.message`) that no earlier `await_event` consumed; events present at creation count as consumed |
//! | `await_attachments` | wait until the event stream was opened N times in all (2 = the worker reconnected once) |
//! | `sleep_ms` | pause the script |
//! | `request_stop` | stop the session's work item (graceful or `force`), as ops would |
//! | `steal_lease` | make the next heartbeat of the session's item fail with 412 |
//! | `expire_lease` | expire the item's lease now (it is re-queued) |
//! | `drop_stream` | close every open event stream of the session |
//! | `inject_frame` | write raw bytes to open streams (e.g. a malformed frame) |
//! | `malformed_event` | write an `agent.message` frame whose data is not JSON |

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One scripted session.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name (defaults to the file stem when loaded from a file).
    #[serde(default)]
    pub name: String,
    /// What the scenario exercises.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The session object the worker fetches.
    #[serde(default)]
    pub session: SessionSpec,
    /// Memory stores created for and attached to the session.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub memory_stores: Vec<MemoryStoreSpec>,
    /// When the script starts.
    #[serde(default)]
    pub start: StartMode,
    /// If set, a `user.message` with this text and a `session.status_running` are logged when
    /// the session is created (before any worker attaches).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// The script.
    #[serde(default)]
    pub steps: Vec<Step>,
}

/// When the script starts running.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartMode {
    /// When the first event stream for the session is opened (events then arrive live).
    #[default]
    OnAttach,
    /// As soon as the session is created (the worker finds the events in history).
    Immediately,
}

/// The session object's fields a scenario controls.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionSpec {
    /// `rescheduling` | `running` | `idle` | `terminated` (default `running`).
    #[serde(default = "default_status")]
    pub status: String,
    /// Optional title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Session metadata.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// `agent.skills`: `{"type": "custom", "skill_id": "…", "version": "latest"}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skills: Vec<Value>,
    /// Extra raw `resources` entries (memory stores from `memory_stores` are added too).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<Value>,
    /// `agent.name`.
    #[serde(default = "default_agent_name")]
    pub agent_name: String,
}

fn default_status() -> String {
    "running".to_owned()
}

fn default_agent_name() -> String {
    "fake-agent".to_owned()
}

impl Default for SessionSpec {
    fn default() -> Self {
        SessionSpec {
            status: default_status(),
            title: None,
            metadata: BTreeMap::new(),
            skills: Vec::new(),
            resources: Vec::new(),
            agent_name: default_agent_name(),
        }
    }
}

/// A memory store to create and attach.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryStoreSpec {
    /// Store name; the mount path defaults to `/mnt/memory/<slug of name>`.
    pub name: String,
    /// `read_write` (default) or `read_only`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<String>,
    /// Explicit mount path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_path: Option<String>,
    /// Initial memories, path (starting with `/`) → content.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub memories: BTreeMap<String, String>,
}

/// One script step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Emit `agent.tool_use`.
    ToolUse(ToolUseStep),
    /// Emit `agent.custom_tool_use`.
    CustomToolUse(CustomToolUseStep),
    /// Wait until a labelled call is answered.
    AwaitResult(AwaitResultStep),
    /// Emit `user.tool_confirmation` for a labelled call.
    Confirm(ConfirmStep),
    /// Emit `agent.message` with this text.
    Message(String),
    /// Emit `session.status_idle`.
    Idle(IdleStep),
    /// Emit `session.status_running`.
    Running,
    /// Emit `session.status_terminated`.
    Terminate,
    /// Emit `session.deleted`.
    Delete,
    /// Emit `session.thread_status_terminated`.
    ThreadTerminated(ThreadStep),
    /// Emit any event object.
    Emit(Map<String, Value>),
    /// Wait for the next unconsumed event of a type.
    AwaitEvent(AwaitEventStep),
    /// Wait until the event stream was opened this many times in all.
    AwaitAttachments(u32),
    /// Pause.
    SleepMs(u64),
    /// Stop the session's work item as ops would.
    RequestStop(RequestStopStep),
    /// Make the next heartbeat of the session's item fail with 412.
    StealLease,
    /// Expire the lease of the session's item now.
    ExpireLease,
    /// Close every open event stream of the session.
    DropStream,
    /// Write raw bytes to every open stream of the session.
    InjectFrame(String),
    /// Write an `agent.message` frame whose `data:` is not JSON.
    MalformedEvent,
}

/// `tool_use` step.
///
/// `await` defaults to true when the call is allowed (`evaluated_permission` absent,
/// `allow` or `omit`) and not resolved server-side (`server_result`) or marked
/// `expect_no_result`; otherwise the script moves on at once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolUseStep {
    /// Name to refer to this call in later steps (default `step<N>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Tool name (`bash`, `read`, … or a server tool such as `web_fetch`).
    pub name: String,
    /// Tool input.
    #[serde(default)]
    pub input: Map<String, Value>,
    /// JSON text sent verbatim as `input` on the wire (live stream and history) instead of
    /// `input`: for text a strict parser refuses, e.g. `{"command": "echo \\ud800"}` (a lone
    /// surrogate escape).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_input: Option<String>,
    /// `allow` (default), `ask`, `deny`, any other string (sent as is), or `omit` to leave the
    /// field out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluated_permission: Option<String>,
    /// `evaluation` object; defaults to the arm implied by the permission.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluation: Option<Value>,
    /// Cross-posted from a subagent thread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_thread_id: Option<String>,
    /// Resolve the call server-side: emit `agent.tool_result` with this text right away (what
    /// the API does for `web_fetch` / `web_search`); the worker must post nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_result: Option<String>,
    /// Wait for the worker's result before the next step.
    #[serde(default, rename = "await", skip_serializing_if = "Option::is_none")]
    pub wait: Option<bool>,
    /// Give up waiting after this long (the script then fails).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// What the worker's result must look like.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<Expect>,
    /// The worker must post nothing for this call.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub expect_no_result: bool,
}

impl ToolUseStep {
    pub(crate) fn permission(&self) -> Option<&str> {
        match self.evaluated_permission.as_deref() {
            None => Some("allow"),
            Some("omit") => None,
            Some(p) => Some(p),
        }
    }

    pub(crate) fn waits(&self) -> bool {
        self.wait.unwrap_or_else(|| {
            matches!(self.permission(), None | Some("allow"))
                && self.server_result.is_none()
                && !self.expect_no_result
        })
    }
}

/// `custom_tool_use` step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomToolUseStep {
    /// Label (default `step<N>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Custom tool name.
    pub name: String,
    /// Tool input.
    #[serde(default)]
    pub input: Map<String, Value>,
    /// Cross-posted from a subagent thread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_thread_id: Option<String>,
    /// Wait for a result before the next step (default false: custom tools usually belong to
    /// the app, not the worker).
    #[serde(default, rename = "await", skip_serializing_if = "Option::is_none")]
    pub wait: Option<bool>,
    /// Give up waiting after this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// What the result must look like.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<Expect>,
    /// Nobody may post a result for this call.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub expect_no_result: bool,
}

/// Expected result of a call.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Required `is_error` value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_error: Option<bool>,
    /// Substrings that must all appear in the joined text blocks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contains: Vec<String>,
}

/// `await_result` step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwaitResultStep {
    /// Label of the call.
    pub tool_use: String,
    /// Give up after this long (the script then fails).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// `confirm` step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfirmStep {
    /// Label of the call.
    pub tool_use: String,
    /// `allow` or `deny` (other strings are sent as is).
    pub result: String,
    /// Optional reason for a deny.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deny_message: Option<String>,
}

/// `idle` step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdleStep {
    /// `end_turn` (default), `requires_action`, `retries_exhausted`, `budget_reached`,
    /// `refusal`, or any other string.
    #[serde(default = "default_stop_reason")]
    pub stop_reason: String,
    /// For `requires_action`: labels (or raw event ids) of the calls it waits on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub event_ids: Vec<String>,
    /// Optional `stop_details`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_details: Option<Value>,
}

fn default_stop_reason() -> String {
    "end_turn".to_owned()
}

/// `thread_terminated` step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThreadStep {
    /// The thread (`sthr_…`).
    pub session_thread_id: String,
}

/// `await_event` step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwaitEventStep {
    /// Event type to wait for, e.g. `user.message` or `user.interrupt`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Give up after this long (the script then fails).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// `request_stop` step.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestStopStep {
    /// Force-stop instead of a graceful stop.
    #[serde(default)]
    pub force: bool,
}

/// Errors loading or validating scenarios.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The JSON did not match the format.
    #[error("parsing {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
    /// A step refers to something that does not exist.
    #[error("scenario {name:?}: {message}")]
    Invalid {
        /// Scenario name.
        name: String,
        /// What is wrong.
        message: String,
    },
}

impl Scenario {
    /// Parses a scenario from JSON text and validates it.
    ///
    /// # Errors
    /// On malformed JSON or an invalid script (see [`Scenario::validate`]).
    pub fn from_json(text: &str) -> Result<Scenario, ScenarioError> {
        let scenario: Scenario =
            serde_json::from_str(text).map_err(|source| ScenarioError::Parse {
                path: PathBuf::from("<string>"),
                source,
            })?;
        scenario.validate()?;
        Ok(scenario)
    }

    /// Loads a scenario file; an empty `name` becomes the file stem.
    ///
    /// # Errors
    /// On I/O errors, malformed JSON or an invalid script.
    pub fn load(path: impl AsRef<Path>) -> Result<Scenario, ScenarioError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Io {
            path: path.to_owned(),
            source,
        })?;
        let mut scenario: Scenario =
            serde_json::from_str(&text).map_err(|source| ScenarioError::Parse {
                path: path.to_owned(),
                source,
            })?;
        if scenario.name.is_empty() {
            scenario.name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
        }
        scenario.validate()?;
        Ok(scenario)
    }

    /// Loads every `*.json` file of a directory, sorted by file name.
    ///
    /// # Errors
    /// As [`Scenario::load`], or when the directory cannot be read.
    pub fn load_dir(dir: impl AsRef<Path>) -> Result<Vec<Scenario>, ScenarioError> {
        let dir = dir.as_ref();
        let io = |source| ScenarioError::Io {
            path: dir.to_owned(),
            source,
        };
        let mut paths = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            if path.extension().is_some_and(|e| e == "json") {
                paths.push(path);
            }
        }
        paths.sort();
        paths.iter().map(Scenario::load).collect()
    }

    /// The `examples/sessions` directory of this repository.
    #[must_use]
    pub fn examples_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/sessions")
    }

    /// Loads `examples/sessions/<name>.json`.
    ///
    /// # Errors
    /// As [`Scenario::load`].
    pub fn example(name: &str) -> Result<Scenario, ScenarioError> {
        Scenario::load(Scenario::examples_dir().join(format!("{name}.json")))
    }

    /// The label of step `index` (its explicit label, or `step<index>`).
    pub(crate) fn label_of(index: usize, explicit: Option<&String>) -> String {
        explicit.cloned().unwrap_or_else(|| format!("step{index}"))
    }

    /// Checks that labels are unique and that every reference names an earlier call.
    ///
    /// # Errors
    /// [`ScenarioError::Invalid`] describing the first problem.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        let invalid = |message: String| ScenarioError::Invalid {
            name: self.name.clone(),
            message,
        };
        let mut labels = HashSet::new();
        for (i, step) in self.steps.iter().enumerate() {
            match step {
                Step::ToolUse(t) => {
                    let label = Scenario::label_of(i, t.label.as_ref());
                    if !labels.insert(label.clone()) {
                        return Err(invalid(format!("duplicate label {label:?}")));
                    }
                    if t.expect.is_some() && (t.expect_no_result || t.server_result.is_some()) {
                        return Err(invalid(format!(
                            "step {i}: `expect` conflicts with `expect_no_result`/`server_result`"
                        )));
                    }
                }
                Step::CustomToolUse(t) => {
                    let label = Scenario::label_of(i, t.label.as_ref());
                    if !labels.insert(label.clone()) {
                        return Err(invalid(format!("duplicate label {label:?}")));
                    }
                }
                Step::AwaitResult(a) if !labels.contains(&a.tool_use) => {
                    return Err(invalid(format!("step {i}: unknown label {:?}", a.tool_use)));
                }
                Step::Confirm(c) if !labels.contains(&c.tool_use) => {
                    return Err(invalid(format!("step {i}: unknown label {:?}", c.tool_use)));
                }
                Step::Emit(map) if !map.get("type").is_some_and(Value::is_string) => {
                    return Err(invalid(format!("step {i}: `emit` needs a string `type`")));
                }
                _ => {}
            }
        }
        for store in &self.memory_stores {
            for path in store.memories.keys() {
                if !path.starts_with('/') {
                    return Err(invalid(format!(
                        "memory store {:?}: path {path:?} must start with '/'",
                        store.name
                    )));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_steps_in_both_spellings() {
        let s = Scenario::from_json(
            r#"{"name":"x","steps":[
                {"tool_use":{"label":"a","name":"bash","input":{"command":"ls"}}},
                {"tool_use":{"name":"bash","evaluated_permission":"ask"}},
                {"confirm":{"tool_use":"step1","result":"allow"}},
                {"await_result":{"tool_use":"step1"}},
                {"idle":{}},
                "terminate"
            ]}"#,
        )
        .expect("valid");
        assert_eq!(s.steps.len(), 6);
        assert_eq!(s.steps[5], Step::Terminate);
        let Step::ToolUse(a) = &s.steps[0] else {
            panic!("not a tool_use")
        };
        assert!(a.waits());
        let Step::ToolUse(b) = &s.steps[1] else {
            panic!("not a tool_use")
        };
        assert!(!b.waits(), "ask-gated calls do not wait by default");
        let Step::Idle(idle) = &s.steps[4] else {
            panic!("not idle")
        };
        assert_eq!(idle.stop_reason, "end_turn");
    }

    #[test]
    fn rejects_unknown_labels_and_fields() {
        let err = Scenario::from_json(r#"{"steps":[{"await_result":{"tool_use":"nope"}}]}"#)
            .expect_err("unknown label");
        assert!(err.to_string().contains("unknown label"), "{err}");
        assert!(
            Scenario::from_json(r#"{"steps":[{"tool_use":{"name":"bash","bogus":1}}]}"#).is_err()
        );
        assert!(Scenario::from_json(r#"{"steps":[{"no_such_step":{}}]}"#).is_err());
    }

    #[test]
    fn example_files_load() {
        let all = Scenario::load_dir(Scenario::examples_dir()).expect("examples load");
        assert!(
            all.iter().any(|s| s.name == "all-tools"),
            "all-tools.json is present"
        );
    }
}

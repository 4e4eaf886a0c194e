//! [`Handle`]'s inspection: what the worker sent and did, and waiting for it.

use std::time::Duration;

use serde_json::Value;

use crate::record::{HeartbeatRecord, PostedResult, RecordedRequest, StopRecord};
use crate::state::{ScriptStatus, State};
use crate::transport::ConnectionRecord;
use crate::wire::{QueueStats, Work, WorkState};
use crate::{Endpoint, FakeError, Handle, ScenarioReport, state};

impl Handle {
    // ------------------------------------------------------------ inspection

    /// Every TCP connection accepted, in order (with TLS: its ALPN protocol).
    #[must_use]
    pub fn connections(&self) -> Vec<ConnectionRecord> {
        self.shared.lock().connections.clone()
    }

    /// Every request received, in order.
    #[must_use]
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// Requests to one endpoint, in order.
    #[must_use]
    pub fn requests_to(&self, endpoint: Endpoint) -> Vec<RecordedRequest> {
        self.shared
            .lock()
            .requests
            .iter()
            .filter(|r| r.endpoint == Some(endpoint))
            .cloned()
            .collect()
    }

    /// Every tool result posted to the session, accepted or refused (duplicates included).
    #[must_use]
    pub fn tool_results(&self, session_id: &str) -> Vec<PostedResult> {
        self.shared
            .lock()
            .tool_results(session_id)
            .into_iter()
            .cloned()
            .collect()
    }

    /// Every stop call, in order.
    #[must_use]
    pub fn stops(&self) -> Vec<StopRecord> {
        self.shared.lock().stops.clone()
    }

    /// Every heartbeat call, in order.
    #[must_use]
    pub fn heartbeats(&self) -> Vec<HeartbeatRecord> {
        self.shared.lock().heartbeats.clone()
    }

    /// A work item as `GET …/work/{id}` would return it.
    #[must_use]
    pub fn work(&self, work_id: &str) -> Option<Work> {
        self.shared.lock().work(work_id)
    }

    /// A work item's state.
    #[must_use]
    pub fn work_state(&self, work_id: &str) -> Option<WorkState> {
        self.shared.lock().work_state(work_id)
    }

    /// A session's status.
    #[must_use]
    pub fn session_status(&self, session_id: &str) -> Option<String> {
        self.shared
            .lock()
            .session_status(session_id)
            .map(str::to_owned)
    }

    /// A session's persisted events.
    #[must_use]
    pub fn events(&self, session_id: &str) -> Vec<Value> {
        self.shared.lock().events(session_id).to_vec()
    }

    /// A session's script progress.
    #[must_use]
    pub fn script_status(&self, session_id: &str) -> Option<ScriptStatus> {
        self.shared.lock().script_status(session_id).cloned()
    }

    /// The event id of a labelled call.
    #[must_use]
    pub fn call_id(&self, session_id: &str, label: &str) -> Option<String> {
        self.shared
            .lock()
            .call_id(session_id, label)
            .map(str::to_owned)
    }

    /// Queue statistics now.
    #[must_use]
    pub fn stats(&self) -> QueueStats {
        let now = self.shared.now();
        self.shared.lock().stats(now)
    }

    /// Checks the session against its scenario's expectations.
    #[must_use]
    pub fn scenario_report(&self, session_id: &str) -> ScenarioReport {
        let s = self.shared.lock();
        let (script, failures) = state::report_failures(&s, session_id);
        ScenarioReport {
            session_id: session_id.to_owned(),
            script,
            failures,
        }
    }

    /// Runs `f` on the current state.
    pub fn inspect<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&self.shared.lock())
    }

    // ------------------------------------------------------------ waiting

    /// Waits until `pred` holds on the state (re-checked after every change).
    ///
    /// # Errors
    /// [`FakeError::Timeout`] after `timeout`, or when the fake shuts down.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        pred: impl FnMut(&State) -> bool,
    ) -> Result<(), FakeError> {
        match self.shared.wait_until(Some(timeout), pred).await {
            Ok(true) => Ok(()),
            Ok(false) | Err(()) => Err(FakeError::Timeout(timeout, "a state predicate".into())),
        }
    }

    /// Waits until a work item reaches `state`.
    ///
    /// # Errors
    /// [`FakeError::Timeout`].
    pub async fn wait_for_work_state(
        &self,
        work_id: &str,
        state: WorkState,
        timeout: Duration,
    ) -> Result<(), FakeError> {
        self.wait_for(timeout, |s| s.work_state(work_id) == Some(state))
            .await
            .map_err(|_| {
                let now = self.work_state(work_id);
                FakeError::Timeout(
                    timeout,
                    format!("work {work_id} to be {state:?} (is {now:?})"),
                )
            })
    }

    /// Waits until the session's script is done or failed.
    ///
    /// # Errors
    /// [`FakeError::Timeout`].
    pub async fn wait_for_script(
        &self,
        session_id: &str,
        timeout: Duration,
    ) -> Result<ScriptStatus, FakeError> {
        self.wait_for(timeout, |s| {
            matches!(
                s.script_status(session_id),
                Some(ScriptStatus::Done | ScriptStatus::Failed { .. })
            )
        })
        .await
        .map_err(|_| {
            let now = self.script_status(session_id);
            FakeError::Timeout(
                timeout,
                format!("script of {session_id} to finish (is {now:?})"),
            )
        })?;
        Ok(self
            .script_status(session_id)
            .unwrap_or(ScriptStatus::NotStarted))
    }

    /// Waits until `n` tool results (accepted or not) were posted to the session.
    ///
    /// # Errors
    /// [`FakeError::Timeout`].
    pub async fn wait_for_tool_results(
        &self,
        session_id: &str,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<PostedResult>, FakeError> {
        self.wait_for(timeout, |s| s.tool_results(session_id).len() >= n)
            .await?;
        Ok(self.tool_results(session_id))
    }
}

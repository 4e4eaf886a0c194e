//! [`State`]'s public read API: what tests inspect.

use super::*;

impl State {
    /// The state of a work item.
    #[must_use]
    pub fn work_state(&self, work_id: &str) -> Option<WorkState> {
        self.work_entry(work_id).map(|w| w.state)
    }

    /// A work item as `GET …/work/{id}` would return it (`secret` null).
    #[must_use]
    pub fn work(&self, work_id: &str) -> Option<Work> {
        self.work_entry(work_id)
            .map(|w| w.to_wire(&self.environment_id, None))
    }

    /// How many times the item has been claimed by a poll.
    #[must_use]
    pub fn claims(&self, work_id: &str) -> u32 {
        self.work_entry(work_id).map_or(0, |w| w.generation)
    }

    /// The `Anthropic-Worker-ID` of the item's latest claim.
    #[must_use]
    pub fn claimed_by(&self, work_id: &str) -> Option<&str> {
        self.work_entry(work_id)
            .and_then(|w| w.claimed_by.as_deref())
    }

    /// Work item ids in creation order.
    #[must_use]
    pub fn work_ids(&self) -> Vec<String> {
        self.work.iter().map(|w| w.id.clone()).collect()
    }

    /// A session's `status`.
    #[must_use]
    pub fn session_status(&self, session_id: &str) -> Option<&str> {
        self.sessions.get(session_id).map(|s| s.status.as_str())
    }

    /// A session's script progress.
    #[must_use]
    pub fn script_status(&self, session_id: &str) -> Option<&ScriptStatus> {
        self.sessions.get(session_id).map(|s| &s.script)
    }

    /// How many event streams were ever opened for the session.
    #[must_use]
    pub fn stream_attachments(&self, session_id: &str) -> u32 {
        self.sessions.get(session_id).map_or(0, |s| s.attachments)
    }

    /// How many event streams of the session are open now.
    #[must_use]
    pub fn open_streams(&self, session_id: &str) -> u32 {
        self.sessions.get(session_id).map_or(0, |s| s.open_streams)
    }

    /// The session's persisted events.
    #[must_use]
    pub fn events(&self, session_id: &str) -> &[Value] {
        self.sessions
            .get(session_id)
            .map_or(&[], |s| s.events.as_slice())
    }

    /// The event id the script gave a labelled call.
    #[must_use]
    pub fn call_id(&self, session_id: &str, label: &str) -> Option<&str> {
        self.sessions
            .get(session_id)
            .and_then(|s| s.labels.get(label))
            .map(String::as_str)
    }

    /// How the fake regards a labelled call.
    #[must_use]
    pub fn call_state(&self, session_id: &str, label: &str) -> Option<CallState> {
        let s = self.sessions.get(session_id)?;
        let id = s.labels.get(label)?;
        s.calls.get(id).map(|c| c.state)
    }

    /// Every request received, in order.
    #[must_use]
    pub fn requests(&self) -> &[RecordedRequest] {
        &self.requests
    }

    /// Every tool result posted to a session, accepted or refused, in order.
    #[must_use]
    pub fn tool_results(&self, session_id: &str) -> Vec<&PostedResult> {
        self.results
            .iter()
            .filter(|r| r.session_id == session_id)
            .collect()
    }

    /// Every stop call, in order.
    #[must_use]
    pub fn stops(&self) -> &[StopRecord] {
        &self.stops
    }

    /// Every heartbeat call, in order.
    #[must_use]
    pub fn heartbeats(&self) -> &[HeartbeatRecord] {
        &self.heartbeats
    }

    /// Work items whose lease expired (re-queued or stopped by the sweep), in order.
    #[must_use]
    pub fn lease_expiries(&self) -> &[String] {
        &self.lease_expiries
    }

    /// Queue statistics as `GET …/work/stats` would report them now.
    #[must_use]
    pub fn stats(&self, now: SystemTime) -> QueueStats {
        let queued = self.work.iter().filter(|w| w.state == WorkState::Queued);
        let pending = queued.clone().filter(|w| w.claimed_at.is_some()).count() as u64;
        let depth = queued.clone().filter(|w| w.claimed_at.is_none()).count() as u64;
        let oldest = queued.map(|w| w.created_at).min().map(rfc3339);
        let window = self.config.workers_polling_window;
        let polling = self
            .pollers
            .values()
            .filter(|t| now.duration_since(**t).unwrap_or_default() <= window)
            .count() as u64;
        QueueStats {
            kind: "work_queue_stats".into(),
            depth,
            pending,
            oldest_queued_at: oldest,
            workers_polling: Some(polling),
        }
    }
}

//! [`Handle`]'s fault injection: failing, delaying and cutting what the worker talks to.

use std::time::Duration;

use bytes::Bytes;

use crate::record::{DelaySpec, FailureSpec, StreamCut, StreamFault};
use crate::state::StreamMsg;
use crate::{Endpoint, FakeError, Handle, script, wire};

impl Handle {
    // ------------------------------------------------------------ faults

    /// The next `n` requests to `endpoint` get `status` (with an error envelope).
    pub fn fail_next(&self, endpoint: Endpoint, n: u32, status: u16) {
        self.inject_failure(FailureSpec::new(endpoint, status).times(n));
    }

    /// Arms a detailed failure plan.
    pub fn inject_failure(&self, spec: FailureSpec) {
        self.shared.lock().failures.push(spec);
    }

    /// Every request to `endpoint` waits `by` before being served, until cleared.
    pub fn delay(&self, endpoint: Endpoint, by: Duration) {
        self.shared.lock().delays.push(DelaySpec {
            endpoint,
            delay: by,
            remaining: None,
        });
    }

    /// The next `n` requests to `endpoint` wait `by` before being served.
    pub fn delay_next(&self, endpoint: Endpoint, n: u32, by: Duration) {
        self.shared.lock().delays.push(DelaySpec {
            endpoint,
            delay: by,
            remaining: Some(n),
        });
    }

    /// Removes every armed failure and delay.
    pub fn clear_faults(&self) {
        let mut s = self.shared.lock();
        s.failures.clear();
        s.delays.clear();
    }

    /// The next event-stream connection of the session ends after `n` events.
    pub fn drop_stream_after(&self, session_id: &str, n: u32, cut: StreamCut) {
        if let Some(s) = self.shared.lock().sessions.get_mut(session_id) {
            s.stream_faults.push_back(StreamFault {
                after_events: n,
                cut,
            });
        }
    }

    /// Ends every open event stream of the session now.
    pub fn drop_streams(&self, session_id: &str, cut: StreamCut) {
        let msg = match cut {
            StreamCut::Close => StreamMsg::Close,
            StreamCut::Abort => StreamMsg::Abort,
        };
        self.shared.lock().broadcast(session_id, msg);
    }

    /// Writes raw bytes to every open event stream of the session.
    pub fn inject_frame(&self, session_id: &str, raw: &str) {
        self.shared
            .lock()
            .broadcast(session_id, StreamMsg::Raw(Bytes::from(raw.to_owned())));
    }

    /// Writes an `agent.message` frame whose `data:` is not JSON.
    pub fn inject_malformed_event(&self, session_id: &str) {
        self.inject_frame(session_id, script::MALFORMED_FRAME);
    }

    /// Writes an `event: error` frame (clients raise an API error and reconnect).
    pub fn inject_error_frame(&self, session_id: &str) {
        self.inject_frame(
            session_id,
            &wire::sse_frame(
                "error",
                r#"{"type":"error","error":{"type":"overloaded_error","message":"injected stream error"}}"#,
            ),
        );
    }

    /// Writes a frame with no `event:` line (clients must ignore it).
    pub fn inject_unnamed_frame(&self, session_id: &str) {
        self.inject_frame(
            session_id,
            "data: {\"type\":\"agent.message\",\"id\":\"sevt_unnamed\",\"content\":[]}\n\n",
        );
    }

    /// Another worker "takes" the lease: the stored heartbeat changes, so the holder's next
    /// heartbeat gets 412.
    ///
    /// # Errors
    /// When the item is unknown.
    pub fn steal_lease(&self, work_id: &str) -> Result<(), FakeError> {
        let now = self.shared.now();
        let r = self.shared.lock().steal_lease(work_id, now);
        self.shared.bump();
        r.map_err(|e| FakeError::Refused(e.message))
    }

    /// Expires the item's lease now; it goes back to `queued` (or `stopped` if `stopping`).
    ///
    /// # Errors
    /// When the item is unknown.
    pub fn expire_lease(&self, work_id: &str) -> Result<(), FakeError> {
        let now = self.shared.now();
        let r = self.shared.lock().expire_lease(work_id, now);
        self.shared.bump();
        r.map_err(|e| FakeError::Refused(e.message))
    }

    /// Sets the TTL for leases started or extended from now on.
    pub fn set_lease_ttl(&self, seconds: u64) {
        let mut s = self.shared.lock();
        s.lease_ttl = seconds;
        for w in &mut s.work {
            w.ttl_seconds = seconds;
        }
    }

    /// The item's next successful heartbeat answers `lease_extended: false` (no state change).
    ///
    /// # Errors
    /// When the item is unknown.
    pub fn next_heartbeat_not_extended(&self, work_id: &str) -> Result<(), FakeError> {
        let mut s = self.shared.lock();
        let w = s
            .work
            .iter_mut()
            .find(|w| w.id == work_id)
            .ok_or_else(|| FakeError::Refused(format!("unknown work item {work_id}")))?;
        w.not_extended_next = true;
        Ok(())
    }

    /// Moves the fake clock forward (TTLs, reclaim windows, timestamps).
    pub fn advance_clock(&self, by: Duration) {
        self.shared.clock.advance(by);
        let now = self.shared.now();
        self.shared.lock().sweep(now);
        self.shared.bump();
    }
}

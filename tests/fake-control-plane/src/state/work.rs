//! Work-queue rules: claim, ack, heartbeat leases, stop, list, update.

use super::*;

impl State {
    pub(crate) fn note_poller(&mut self, worker_id: Option<&str>, now: SystemTime) {
        if let Some(id) = worker_id {
            self.pollers.insert(id.to_owned(), now);
        }
    }

    /// Claims the next claimable item (see the module docs), minting its secret.
    pub(crate) fn claim(
        &mut self,
        now: SystemTime,
        worker_id: Option<&str>,
        reclaim: Duration,
    ) -> Option<Work> {
        let idx = self.work.iter().position(|w| {
            w.state == WorkState::Queued
                && w.claimed_at
                    .is_none_or(|t| now.duration_since(t).unwrap_or_default() >= reclaim)
        })?;
        let env = self.environment_id.clone();
        let api_base_url = self
            .config
            .secret_api_base_url
            .then(|| self.base_url.clone());
        let w = &mut self.work[idx];
        w.claimed_at = Some(now);
        w.claimed_by = worker_id.map(str::to_owned);
        w.generation += 1;
        let secret = if w.with_secret {
            let token = format!("sk-ant-req-fake-{}", uuid::Uuid::new_v4().simple());
            let payload = WorkSecret {
                sessions_token: token.clone(),
                api_base_url,
            };
            let json = serde_json::to_vec(&payload).unwrap_or_default();
            let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json);
            self.tokens.insert(
                token,
                TokenInfo {
                    work_id: w.id.clone(),
                    session_id: w.data.id.clone(),
                    generation: w.generation,
                    secret: secret.clone(),
                },
            );
            Some(secret)
        } else {
            None
        };
        Some(w.to_wire(&env, secret))
    }

    pub(crate) fn ack(&mut self, work_id: &str, now: SystemTime) -> Result<Work, ApiError> {
        let ttl = self.lease_ttl;
        let env = self.environment_id.clone();
        let w = self.work_mut(work_id)?;
        match w.state {
            WorkState::Queued if w.claimed_at.is_none() => {
                return Err(
                    ApiError::conflict("work item has not been claimed by a poll")
                        .code("work_not_claimed"),
                );
            }
            WorkState::Queued => {
                w.state = WorkState::Starting;
                w.acknowledged_at = Some(now);
                w.ttl_seconds = ttl;
                w.lease_expires_at = Some(now + Duration::from_secs(ttl));
            }
            WorkState::Starting | WorkState::Active => {}
            WorkState::Stopping | WorkState::Stopped => {
                return Err(
                    ApiError::conflict(format!("work item is {}", w.state.as_str()))
                        .code("work_stopped"),
                );
            }
        }
        Ok(w.to_wire(&env, None))
    }

    pub(super) fn heartbeat_call(&mut self, ctx: &Ctx<'_>) -> Result<Reply, ApiError> {
        let expected = ctx.param("expected_last_heartbeat").map(str::to_owned);
        let desired = ctx.param("desired_ttl_seconds").map(str::to_owned);
        let result = self.heartbeat(
            ctx.item(),
            ctx.credential,
            expected.as_deref(),
            desired.as_deref(),
            ctx.now,
        );
        let (status, state, hb, extended) = match &result {
            Ok(r) => (
                200,
                Some(r.state),
                Some(r.last_heartbeat.clone()),
                Some(r.lease_extended),
            ),
            Err(e) => (e.status, self.work_state(ctx.item()), None, None),
        };
        self.heartbeats.push(HeartbeatRecord {
            seq: ctx.seq,
            work_id: ctx.item().to_owned(),
            expected_last_heartbeat: expected,
            desired_ttl_seconds: desired,
            credential: ctx.credential.clone(),
            status,
            state,
            last_heartbeat: hb,
            lease_extended: extended,
        });
        result.and_then(|r| Reply::json(&r))
    }

    pub(crate) fn heartbeat(
        &mut self,
        work_id: &str,
        cred: &Credential,
        expected: Option<&str>,
        desired_ttl: Option<&str>,
        now: SystemTime,
    ) -> Result<HeartbeatResponse, ApiError> {
        let (min_ttl, max_ttl) = (self.config.min_ttl_seconds, self.config.max_ttl_seconds);
        let desired = match desired_ttl {
            None | Some("") => None,
            Some(v) => Some(
                v.parse::<u64>()
                    .map_err(|_| ApiError::bad_request("desired_ttl_seconds must be an integer"))?,
            ),
        };
        let w = self.work_mut(work_id)?;
        if let Some(ttl) = desired {
            w.ttl_seconds = ttl.clamp(min_ttl, max_ttl);
        }
        let reply = |w: &WorkEntry, extended: bool| HeartbeatResponse {
            kind: "work_heartbeat".into(),
            last_heartbeat: w.last_heartbeat.clone().unwrap_or_default(),
            lease_extended: extended,
            state: w.state,
            ttl_seconds: w.ttl_seconds,
        };
        let precondition_failed = |w: &WorkEntry, why: &str| {
            let mut e = ApiError::new(412, "invalid_request_error", why.to_owned());
            e.details = Some(json!({
                "error_code": "heartbeat_precondition_failed",
                "current_state": w.lease_state(),
            }));
            e
        };
        match w.state {
            WorkState::Stopped => return Ok(reply(w, false)),
            WorkState::Stopping => {
                // Not compared; the worker is tearing down, keep its lease alive.
                stamp_heartbeat(w, now);
                w.lease_expires_at = Some(now + Duration::from_secs(w.ttl_seconds));
                return Ok(reply(w, true));
            }
            WorkState::Queued => {
                return Err(precondition_failed(
                    w,
                    "the work item holds no lease (queued)",
                ));
            }
            WorkState::Starting | WorkState::Active => {}
        }
        if let Credential::SessionsToken { generation, .. } = cred
            && *generation != w.generation
        {
            return Err(precondition_failed(
                w,
                "the sessions token belongs to an earlier claim of this work item",
            ));
        }
        let matches = match (expected, w.last_heartbeat.as_deref()) {
            (None, _) => true,
            (Some(e), Some(stored)) => e == stored,
            (Some(e), None) => e == NO_HEARTBEAT,
        };
        if !matches {
            return Err(precondition_failed(
                w,
                "expected_last_heartbeat does not match the stored heartbeat",
            ));
        }
        stamp_heartbeat(w, now);
        w.state = WorkState::Active;
        w.started_at.get_or_insert(now);
        let extended = !std::mem::take(&mut w.not_extended_next);
        if extended {
            w.lease_expires_at = Some(now + Duration::from_secs(w.ttl_seconds));
        }
        Ok(reply(w, extended))
    }

    pub(super) fn stop_call(&mut self, ctx: &Ctx<'_>) -> Result<Reply, ApiError> {
        let params: StopParams = if ctx.body.iter().all(u8::is_ascii_whitespace) {
            StopParams::default()
        } else {
            serde_json::from_slice(ctx.body)
                .map_err(|e| ApiError::bad_request(format!("invalid stop body: {e}")))?
        };
        let force = params.force.unwrap_or(false);
        let prior = self.work_state(ctx.item());
        let result = self.stop(ctx.item(), force, ctx.now);
        self.stops.push(StopRecord {
            seq: ctx.seq,
            work_id: ctx.item().to_owned(),
            force,
            credential: ctx.credential.clone(),
            status: match &result {
                Ok(_) if self.config.stop_returns_work => 200,
                Ok(_) => 204,
                Err(e) => e.status,
            },
            prior_state: prior,
        });
        let work = result?;
        if self.config.stop_returns_work {
            Reply::json(&work)
        } else {
            Ok(Reply::NoContent)
        }
    }

    pub(crate) fn stop(
        &mut self,
        work_id: &str,
        force: bool,
        now: SystemTime,
    ) -> Result<Work, ApiError> {
        let env = self.environment_id.clone();
        let w = self.work_mut(work_id)?;
        match w.state {
            WorkState::Stopped => {
                return Err(
                    ApiError::conflict("work item is already stopped").code("work_already_stopped")
                );
            }
            _ if force => {
                w.state = WorkState::Stopped;
                w.stopped_at = Some(now);
                w.lease_expires_at = None;
            }
            WorkState::Queued => {
                w.state = WorkState::Stopped;
                w.stop_requested_at = Some(now);
                w.stopped_at = Some(now);
            }
            WorkState::Starting | WorkState::Active => {
                w.state = WorkState::Stopping;
                w.stop_requested_at = Some(now);
            }
            WorkState::Stopping => {}
        }
        Ok(w.to_wire(&env, None))
    }

    /// A stop requested through the handle or a script step (recorded with `seq` 0).
    pub(crate) fn admin_stop(
        &mut self,
        work_id: &str,
        force: bool,
        now: SystemTime,
    ) -> Result<(), ApiError> {
        let prior = self.work_state(work_id);
        let result = self.stop(work_id, force, now);
        self.stops.push(StopRecord {
            seq: 0,
            work_id: work_id.to_owned(),
            force,
            credential: Credential::None,
            status: result.as_ref().map_or_else(|e| e.status, |_| 204),
            prior_state: prior,
        });
        result.map(|_| ())
    }

    /// Another worker takes the lease: the stored heartbeat changes (the holder's next echo
    /// mismatches and gets 412).
    pub(crate) fn steal_lease(&mut self, work_id: &str, now: SystemTime) -> Result<(), ApiError> {
        let w = self.work_mut(work_id)?;
        let t = w.last_heartbeat_time.map_or(now, |p| p.max(now)) + Duration::from_millis(1);
        w.last_heartbeat_time = Some(t);
        w.last_heartbeat = Some(rfc3339(t));
        w.claimed_by = Some("fake-thief-worker".into());
        if w.state == WorkState::Starting {
            w.state = WorkState::Active;
        }
        Ok(())
    }

    /// Makes the lease expire now and sweeps.
    pub(crate) fn expire_lease(&mut self, work_id: &str, now: SystemTime) -> Result<(), ApiError> {
        let w = self.work_mut(work_id)?;
        if w.lease_expires_at.is_none() {
            return Err(ApiError::conflict("the work item holds no lease"));
        }
        w.lease_expires_at = Some(
            now.checked_sub(Duration::from_micros(1))
                .unwrap_or(SystemTime::UNIX_EPOCH),
        );
        self.sweep(now);
        Ok(())
    }

    pub(super) fn list_work(&self, ctx: &Ctx<'_>) -> Result<Reply, ApiError> {
        let limit = parse_limit(ctx.param("limit"), 20, 1000)?;
        let start = parse_cursor(ctx.param("page"), "wkp_")?;
        let all: Vec<Work> = self
            .work
            .iter()
            .map(|w| w.to_wire(&self.environment_id, None))
            .collect();
        Reply::json(&paginate(all, start, limit, "wkp_"))
    }

    pub(super) fn update_work(&mut self, ctx: &Ctx<'_>) -> Result<Reply, ApiError> {
        let params: UpdateWorkParams = serde_json::from_slice(ctx.body).map_err(|e| {
            ApiError::bad_request(format!("invalid body: {e}")).code("invalid_metadata")
        })?;
        let env = self.environment_id.clone();
        let w = self.work_mut(ctx.item())?;
        for (k, v) in params.metadata {
            match v {
                Some(v) if !v.is_empty() => {
                    w.metadata.insert(k, v);
                }
                _ => {
                    w.metadata.remove(&k);
                }
            }
        }
        let wire = w.to_wire(&env, None);
        Reply::json(&wire)
    }
}

fn stamp_heartbeat(w: &mut WorkEntry, now: SystemTime) {
    // Every stored value is distinct, so a stale echo can never match by accident.
    let t = match w.last_heartbeat_time {
        Some(prev) if now <= prev => prev + Duration::from_micros(1),
        _ => now,
    };
    w.last_heartbeat_time = Some(t);
    w.last_heartbeat = Some(rfc3339(t));
    w.latest_heartbeat_at = Some(t);
}

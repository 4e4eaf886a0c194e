//! Authorisation (which credential may call which route) and dispatch to the handlers.

use super::*;

impl State {
    // ----------------------------------------------------------------- authorisation

    /// Applies the §15.1 auth matrix. `Credential::None`/`Unknown` were handled already.
    pub(crate) fn authorize(&self, route: &Route, cred: &Credential) -> Result<(), ApiError> {
        use Endpoint as E;
        let denied = |what: &str| {
            ApiError::forbidden(format!("this credential may not call {what}"))
                .code("credential_not_permitted")
        };
        let env_route = matches!(
            route.endpoint,
            E::EnvironmentRetrieve
                | E::Poll
                | E::Ack
                | E::Heartbeat
                | E::Stop
                | E::Stats
                | E::ListWork
                | E::RetrieveWork
                | E::UpdateWork
        );
        if env_route && route.owner != self.environment_id {
            return Err(
                ApiError::not_found(format!("environment {} not found", route.owner))
                    .code("environment_not_found"),
            );
        }
        let own_item = |c: &Credential| matches!(c, Credential::SessionsToken { work_id, .. } if Some(work_id.as_str()) == route.item.as_deref());
        let ok = match route.endpoint {
            E::Poll | E::Ack | E::ListWork => matches!(cred, Credential::EnvironmentKey),
            E::Heartbeat => matches!(cred, Credential::EnvironmentKey) || own_item(cred),
            E::Stop => {
                matches!(cred, Credential::ApiKey | Credential::EnvironmentKey) || own_item(cred)
            }
            E::Stats | E::EnvironmentRetrieve => {
                matches!(cred, Credential::ApiKey | Credential::EnvironmentKey)
            }
            E::RetrieveWork | E::UpdateWork => matches!(cred, Credential::ApiKey),
            E::SessionRetrieve | E::EventsStream | E::EventsList | E::EventsSend => match cred {
                Credential::ApiKey | Credential::EnvironmentKey => true,
                Credential::SessionsToken { session_id, .. } => *session_id == route.owner,
                _ => false,
            },
            E::SkillVersion | E::SkillContent => true,
            E::MemoryList
            | E::MemoryRetrieve
            | E::MemoryCreate
            | E::MemoryUpdate
            | E::MemoryDelete => {
                return self.authorize_memory(route, cred);
            }
        };
        if ok {
            Ok(())
        } else {
            Err(denied(route.endpoint.as_str()))
        }
    }

    fn authorize_memory(&self, route: &Route, cred: &Credential) -> Result<(), ApiError> {
        match cred {
            Credential::ApiKey => Ok(()),
            Credential::EnvironmentKey => Err(ApiError::forbidden(
                "memory store endpoints do not accept the environment key",
            )
            .code("environment_key_not_accepted")),
            Credential::SessionsToken { session_id, .. } => {
                let resource = self
                    .sessions
                    .get(session_id)
                    .and_then(|s| s.store_resource(&route.owner));
                let Some(resource) = resource else {
                    return Err(ApiError::forbidden(
                        "this memory store is not attached to the token's session",
                    )
                    .code("memory_store_not_attached"));
                };
                let write = matches!(
                    route.endpoint,
                    Endpoint::MemoryCreate | Endpoint::MemoryUpdate | Endpoint::MemoryDelete
                );
                let read_only = resource.get("access").and_then(Value::as_str) == Some("read_only");
                if write && read_only {
                    Err(
                        ApiError::forbidden("this memory store is attached read-only")
                            .code("memory_store_read_only"),
                    )
                } else {
                    Ok(())
                }
            }
            Credential::None | Credential::Unknown => {
                Err(ApiError::unauthorized("invalid credentials"))
            }
        }
    }

    // ----------------------------------------------------------------- dispatch

    /// Serves every route except poll and the event stream (which wait).
    pub(crate) fn dispatch(&mut self, ctx: &Ctx<'_>) -> Result<Reply, ApiError> {
        use Endpoint as E;
        match ctx.route.endpoint {
            E::EnvironmentRetrieve => Ok(Reply::Json(self.environment_json(ctx.now))),
            E::Ack => self.ack(ctx.item(), ctx.now).and_then(|w| Reply::json(&w)),
            E::Heartbeat => self.heartbeat_call(ctx),
            E::Stop => self.stop_call(ctx),
            E::Stats => Reply::json(&self.stats(ctx.now)),
            E::ListWork => self.list_work(ctx),
            E::RetrieveWork => {
                let w = self.work(ctx.item()).ok_or_else(|| {
                    ApiError::not_found(format!("work item {} not found", ctx.item()))
                        .code("work_not_found")
                })?;
                Reply::json(&w)
            }
            E::UpdateWork => self.update_work(ctx),
            E::SessionRetrieve => {
                let env = self.environment_id.clone();
                let s = self.session_mut(&ctx.route.owner)?;
                Ok(Reply::Json(s.to_wire(&env)))
            }
            E::EventsList => self.list_events(ctx),
            E::EventsSend => self.send_events_call(ctx),
            E::SkillVersion => {
                let v = self.skill_version(&ctx.route.owner, ctx.item())?;
                Reply::json(&v.version)
            }
            E::SkillContent => {
                let v = self.skill_version(&ctx.route.owner, ctx.item())?;
                Ok(Reply::Bytes {
                    content_type: memory::archive_content_type(&v.archive),
                    body: v.archive.clone(),
                })
            }
            E::MemoryList => self.memory_list(ctx),
            E::MemoryRetrieve => self.memory_retrieve(ctx),
            E::MemoryCreate => self.memory_create(ctx),
            E::MemoryUpdate => self.memory_update(ctx),
            E::MemoryDelete => self.memory_delete(ctx),
            E::Poll | E::EventsStream => {
                Err(ApiError::new(500, "api_error", "not dispatched here"))
            }
        }
    }

    fn environment_json(&self, now: SystemTime) -> Value {
        json!({
            "id": self.environment_id,
            "type": "environment",
            "name": "fake-self-hosted",
            "description": null,
            "config": {"type": "self_hosted"},
            "metadata": {},
            "scope": "organization",
            "created_at": rfc3339(now),
            "updated_at": rfc3339(now),
            "archived_at": null,
        })
    }
}

//! The routes the fake serves, by name, and the parser from method + path to a route.

use std::fmt;
use std::str::FromStr;

use axum::http::Method;

/// A control-plane endpoint, used to aim faults and to filter the request log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `GET /v1/environments/{env}`
    EnvironmentRetrieve,
    /// `GET /v1/environments/{env}/work/poll`
    Poll,
    /// `POST /v1/environments/{env}/work/{id}/ack`
    Ack,
    /// `POST /v1/environments/{env}/work/{id}/heartbeat`
    Heartbeat,
    /// `POST /v1/environments/{env}/work/{id}/stop`
    Stop,
    /// `GET /v1/environments/{env}/work/stats`
    Stats,
    /// `GET /v1/environments/{env}/work`
    ListWork,
    /// `GET /v1/environments/{env}/work/{id}`
    RetrieveWork,
    /// `POST /v1/environments/{env}/work/{id}`
    UpdateWork,
    /// `GET /v1/sessions/{id}`
    SessionRetrieve,
    /// `GET /v1/sessions/{id}/events/stream`
    EventsStream,
    /// `GET /v1/sessions/{id}/events`
    EventsList,
    /// `POST /v1/sessions/{id}/events`
    EventsSend,
    /// `GET /v1/skills/{id}/versions/{version}`
    SkillVersion,
    /// `GET /v1/skills/{id}/versions/{version}/content`
    SkillContent,
    /// `GET /v1/memory_stores/{id}/memories`
    MemoryList,
    /// `GET /v1/memory_stores/{id}/memories/{mem}`
    MemoryRetrieve,
    /// `POST /v1/memory_stores/{id}/memories`
    MemoryCreate,
    /// `POST /v1/memory_stores/{id}/memories/{mem}`
    MemoryUpdate,
    /// `DELETE /v1/memory_stores/{id}/memories/{mem}`
    MemoryDelete,
}

impl Endpoint {
    /// Every endpoint, for help texts.
    pub const ALL: [Endpoint; 20] = [
        Endpoint::EnvironmentRetrieve,
        Endpoint::Poll,
        Endpoint::Ack,
        Endpoint::Heartbeat,
        Endpoint::Stop,
        Endpoint::Stats,
        Endpoint::ListWork,
        Endpoint::RetrieveWork,
        Endpoint::UpdateWork,
        Endpoint::SessionRetrieve,
        Endpoint::EventsStream,
        Endpoint::EventsList,
        Endpoint::EventsSend,
        Endpoint::SkillVersion,
        Endpoint::SkillContent,
        Endpoint::MemoryList,
        Endpoint::MemoryRetrieve,
        Endpoint::MemoryCreate,
        Endpoint::MemoryUpdate,
        Endpoint::MemoryDelete,
    ];

    /// A stable snake_case name (`poll`, `heartbeat`, `events_send`, …).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::EnvironmentRetrieve => "environment_retrieve",
            Endpoint::Poll => "poll",
            Endpoint::Ack => "ack",
            Endpoint::Heartbeat => "heartbeat",
            Endpoint::Stop => "stop",
            Endpoint::Stats => "stats",
            Endpoint::ListWork => "list_work",
            Endpoint::RetrieveWork => "retrieve_work",
            Endpoint::UpdateWork => "update_work",
            Endpoint::SessionRetrieve => "session_retrieve",
            Endpoint::EventsStream => "events_stream",
            Endpoint::EventsList => "events_list",
            Endpoint::EventsSend => "events_send",
            Endpoint::SkillVersion => "skill_version",
            Endpoint::SkillContent => "skill_content",
            Endpoint::MemoryList => "memory_list",
            Endpoint::MemoryRetrieve => "memory_retrieve",
            Endpoint::MemoryCreate => "memory_create",
            Endpoint::MemoryUpdate => "memory_update",
            Endpoint::MemoryDelete => "memory_delete",
        }
    }

    /// Which beta header the route requires.
    pub(crate) fn beta(self) -> BetaRequirement {
        match self {
            Endpoint::SkillVersion | Endpoint::SkillContent => BetaRequirement::None,
            Endpoint::MemoryList
            | Endpoint::MemoryRetrieve
            | Endpoint::MemoryCreate
            | Endpoint::MemoryUpdate
            | Endpoint::MemoryDelete => BetaRequirement::Memory,
            _ => BetaRequirement::ManagedAgents,
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error of [`Endpoint::from_str`].
#[derive(Debug, thiserror::Error)]
#[error("unknown endpoint name {0:?}")]
pub struct UnknownEndpoint(pub String);

impl FromStr for Endpoint {
    type Err = UnknownEndpoint;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Endpoint::ALL
            .into_iter()
            .find(|e| e.as_str() == s)
            .ok_or_else(|| UnknownEndpoint(s.to_owned()))
    }
}

/// What a route needs in `anthropic-beta`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BetaRequirement {
    /// Nothing (skills).
    None,
    /// `managed-agents-2026-04-01`.
    ManagedAgents,
    /// `agent-memory-2026-07-22` or `managed-agents-2026-04-01`.
    Memory,
}

/// A parsed request target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Route {
    pub endpoint: Endpoint,
    /// The first id in the path (environment, session, skill or memory store id).
    pub owner: String,
    /// The second id (work id, skill version, memory id), when the route has one.
    pub item: Option<String>,
}

/// Maps a method and path to a route; `None` for paths the fake does not serve.
pub(crate) fn parse(method: &Method, path: &str) -> Option<Route> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let route = |endpoint: Endpoint, owner: &str, item: Option<&str>| Route {
        endpoint,
        owner: owner.to_owned(),
        item: item.map(str::to_owned),
    };
    let get = method == Method::GET;
    let post = method == Method::POST;
    let delete = method == Method::DELETE;
    match segs.as_slice() {
        ["v1", "environments", env] if get => Some(route(Endpoint::EnvironmentRetrieve, env, None)),
        ["v1", "environments", env, "work"] if get => Some(route(Endpoint::ListWork, env, None)),
        ["v1", "environments", env, "work", "poll"] if get => {
            Some(route(Endpoint::Poll, env, None))
        }
        ["v1", "environments", env, "work", "stats"] if get => {
            Some(route(Endpoint::Stats, env, None))
        }
        ["v1", "environments", env, "work", id] if get => {
            Some(route(Endpoint::RetrieveWork, env, Some(id)))
        }
        ["v1", "environments", env, "work", id] if post => {
            Some(route(Endpoint::UpdateWork, env, Some(id)))
        }
        ["v1", "environments", env, "work", id, "ack"] if post => {
            Some(route(Endpoint::Ack, env, Some(id)))
        }
        ["v1", "environments", env, "work", id, "heartbeat"] if post => {
            Some(route(Endpoint::Heartbeat, env, Some(id)))
        }
        ["v1", "environments", env, "work", id, "stop"] if post => {
            Some(route(Endpoint::Stop, env, Some(id)))
        }
        ["v1", "sessions", id] if get => Some(route(Endpoint::SessionRetrieve, id, None)),
        ["v1", "sessions", id, "events"] if get => Some(route(Endpoint::EventsList, id, None)),
        ["v1", "sessions", id, "events"] if post => Some(route(Endpoint::EventsSend, id, None)),
        ["v1", "sessions", id, "events", "stream"] if get => {
            Some(route(Endpoint::EventsStream, id, None))
        }
        ["v1", "skills", id, "versions", v] if get => {
            Some(route(Endpoint::SkillVersion, id, Some(v)))
        }
        ["v1", "skills", id, "versions", v, "content"] if get => {
            Some(route(Endpoint::SkillContent, id, Some(v)))
        }
        ["v1", "memory_stores", id, "memories"] if get => {
            Some(route(Endpoint::MemoryList, id, None))
        }
        ["v1", "memory_stores", id, "memories"] if post => {
            Some(route(Endpoint::MemoryCreate, id, None))
        }
        ["v1", "memory_stores", id, "memories", m] if get => {
            Some(route(Endpoint::MemoryRetrieve, id, Some(m)))
        }
        ["v1", "memory_stores", id, "memories", m] if post => {
            Some(route(Endpoint::MemoryUpdate, id, Some(m)))
        }
        ["v1", "memory_stores", id, "memories", m] if delete => {
            Some(route(Endpoint::MemoryDelete, id, Some(m)))
        }
        _ => None,
    }
}

pub(crate) fn parse_query(q: Option<&str>) -> Vec<(String, String)> {
    let Some(q) = q else { return Vec::new() };
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode_component(k), decode_component(v))
        })
        .collect()
}

/// `application/x-www-form-urlencoded` component decoding (`+` is a space, `%XX` a byte).
fn decode_component(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_work_routes() {
        let r = parse(&Method::GET, "/v1/environments/env_1/work/poll").expect("route");
        assert_eq!(r.endpoint, Endpoint::Poll);
        assert_eq!(r.owner, "env_1");
        let r = parse(
            &Method::POST,
            "/v1/environments/env_1/work/work_9/heartbeat",
        )
        .expect("route");
        assert_eq!(r.endpoint, Endpoint::Heartbeat);
        assert_eq!(r.item.as_deref(), Some("work_9"));
        assert!(parse(&Method::DELETE, "/v1/environments/env_1/work/work_9").is_none());
    }

    #[test]
    fn names_round_trip() {
        for e in Endpoint::ALL {
            assert_eq!(e.as_str().parse::<Endpoint>().expect("parse"), e);
        }
        assert!("nope".parse::<Endpoint>().is_err());
    }
}

//! [`ItemClient`]: the calls made for one claimed item with its credential (heartbeat,
//! force-stop, session fetch, skills, the event stream ([`EventStream`]), history, result
//! posting).

use std::pin::Pin;
use std::time::Duration;

use eventsource_stream::Eventsource as _;
use futures::{Stream, StreamExt as _};
use reqwest::Method;
use serde_json::Value;

use super::{
    AGENT_MEMORY_BETA, Api, ApiError, HELPER_RUNNER, HELPER_WORKER, History, Retries, StopOutcome,
    check_segments, json_opt, json_req, stop,
};
use crate::proto::{
    EventPage, HeartbeatResponse, OutgoingEvent, SendEvents, Session, SessionEvent, SkillVersion,
};
use crate::secret::Secret;

/// Per-item calls, authenticated with the item credential (sessions token, else the
/// environment key).
#[derive(Clone, Debug)]
pub struct ItemClient {
    pub(super) api: Api,
    pub(super) environment_id: String,
    pub(super) work_id: String,
    pub(super) session_id: String,
    pub(super) credential: Secret,
}

/// A live session event stream.
pub struct EventStream {
    inner: Pin<Box<dyn Stream<Item = Result<StreamItem, StreamError>> + Send>>,
    idle: Duration,
}

/// One decoded SSE frame.
#[derive(Debug)]
enum StreamItem {
    Event(SessionEvent),
    Skip,
}

/// Why the event stream ended or yielded garbage.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// Transport failure or EOF-like breakage.
    #[error("stream transport error: {0}")]
    Transport(String),
    /// No bytes for longer than the idle timeout.
    #[error("stream silent for {0:?}")]
    Idle(Duration),
    /// An `event: error` frame.
    #[error("server sent an error event: {0}")]
    ServerError(String),
    /// A frame whose data is not a valid event.
    #[error("malformed event frame ({name}): {error}")]
    Malformed {
        /// SSE event name.
        name: String,
        /// Decode error.
        error: crate::proto::EventError,
    },
}

impl EventStream {
    /// Next event; `None` when the server closed the stream.
    pub async fn next(&mut self) -> Option<Result<SessionEvent, StreamError>> {
        loop {
            match tokio::time::timeout(self.idle, self.inner.next()).await {
                Err(_) => return Some(Err(StreamError::Idle(self.idle))),
                Ok(None) => return None,
                Ok(Some(Ok(StreamItem::Skip))) => continue,
                Ok(Some(Ok(StreamItem::Event(ev)))) => return Some(Ok(ev)),
                Ok(Some(Err(e))) => return Some(Err(e)),
            }
        }
    }
}

impl ItemClient {
    /// Work id.
    pub fn work_id(&self) -> &str {
        &self.work_id
    }

    /// Session id.
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    fn work_path(&self, rest: &str) -> String {
        format!(
            "/v1/environments/{}/work/{}{rest}",
            self.environment_id, self.work_id
        )
    }

    fn session_path(&self, rest: &str) -> String {
        format!("/v1/sessions/{}{rest}", self.session_id)
    }

    /// `POST …/heartbeat?expected_last_heartbeat=…`, bounded by `timeout`, no client retries.
    pub async fn heartbeat(
        &self,
        expected_last_heartbeat: &str,
        timeout: Duration,
    ) -> Result<HeartbeatResponse, ApiError> {
        let path = self.work_path("/heartbeat");
        let call = async {
            let resp = self
                .api
                .send("heartbeat", Retries::None, timeout, || {
                    self.api
                        .request(Method::POST, &path, &self.credential, HELPER_WORKER)
                        .query(&[("expected_last_heartbeat", expected_last_heartbeat)])
                })
                .await?;
            json_req("heartbeat", resp).await
        };
        tokio::time::timeout(timeout, call)
            .await
            .unwrap_or(Err(ApiError::Timeout { op: "heartbeat" }))
    }

    /// `POST …/stop` with the item credential; 409 is swallowed.
    pub async fn stop(&self, force: bool) -> Result<StopOutcome, ApiError> {
        stop(
            &self.api,
            &self.work_path("/stop"),
            &self.credential,
            force,
            HELPER_WORKER,
        )
        .await
    }

    /// `GET /v1/sessions/{id}`.
    pub async fn session(&self) -> Result<Session, ApiError> {
        let path = self.session_path("");
        let resp = self
            .api
            .send("session", Retries::Core, self.api.timeouts.request, || {
                self.api
                    .request(Method::GET, &path, &self.credential, HELPER_WORKER)
            })
            .await?;
        json_req("session", resp).await
    }

    /// `GET /v1/skills/{skill_id}/versions/{version}` (no beta header): resolves a version,
    /// the `latest` alias included. Both ids must be [`is_safe_path_segment`](super::is_safe_path_segment).
    pub async fn skill_version(
        &self,
        skill_id: &str,
        version: &str,
    ) -> Result<SkillVersion, ApiError> {
        let op = "skill_version";
        check_segments(op, &[skill_id, version])?;
        let path = format!("/v1/skills/{skill_id}/versions/{version}");
        let resp = self
            .api
            .send(op, Retries::Core, self.api.timeouts.request, || {
                self.api
                    .request_beta(Method::GET, &path, &self.credential, HELPER_WORKER, None)
            })
            .await?;
        json_req(op, resp).await
    }

    /// `GET /v1/skills/{skill_id}/versions/{version_id}/content` with `Accept:
    /// application/binary` (no beta header): the archive as a byte stream, not buffered. The
    /// whole download is bounded by `timeout`.
    pub async fn skill_content(
        &self,
        skill_id: &str,
        version_id: &str,
        timeout: Duration,
    ) -> Result<impl tokio::io::AsyncRead + Send + Unpin + use<>, ApiError> {
        let op = "skill_content";
        check_segments(op, &[skill_id, version_id])?;
        let path = format!("/v1/skills/{skill_id}/versions/{version_id}/content");
        let resp = self
            .api
            .send(op, Retries::Core, timeout, || {
                self.api
                    .request_beta(Method::GET, &path, &self.credential, HELPER_WORKER, None)
                    .header(reqwest::header::ACCEPT, "application/binary")
            })
            .await?;
        let body = resp
            .bytes_stream()
            .map(|r| r.map_err(std::io::Error::other));
        Ok(tokio_util::io::StreamReader::new(body))
    }

    /// One memory-store call (`anthropic-beta: agent-memory-2026-07-22`; protocol §7.2):
    /// `path` must already be built from checked segments. 409 and 412 are final answers (a
    /// failed precondition), not retried. Returns the JSON body (`None` when empty).
    pub async fn memory_call(
        &self,
        op: &'static str,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Option<Value>, ApiError> {
        let resp = self
            .api
            .send(
                op,
                Retries::CoreExcept(&[409, 412]),
                self.api.timeouts.request,
                || {
                    let mut r = self
                        .api
                        .request_beta(
                            method.clone(),
                            path,
                            &self.credential,
                            HELPER_WORKER,
                            Some(AGENT_MEMORY_BETA),
                        )
                        .query(query);
                    if let Some(b) = body {
                        r = r.json(b);
                    }
                    r
                },
            )
            .await?;
        json_opt(op, resp).await
    }

    /// `GET /v1/sessions/{id}/events/stream` (SSE). Frames without an `event:` name and `ping`s
    /// are dropped; `event: error` and undecodable frames surface as [`StreamError`]s.
    pub async fn stream(&self) -> Result<EventStream, ApiError> {
        let path = self.session_path("/events/stream");
        let open = self.api.send(
            "events.stream",
            Retries::None,
            // No total timeout on the long-lived body; the open itself is bounded below and each
            // read by the idle timeout.
            Duration::from_secs(60 * 60 * 24 * 365),
            || {
                self.api
                    .request(Method::GET, &path, &self.credential, HELPER_RUNNER)
                    .header(reqwest::header::ACCEPT, "text/event-stream")
            },
        );
        let resp = tokio::time::timeout(self.api.timeouts.stream_open, open)
            .await
            .unwrap_or(Err(ApiError::Timeout {
                op: "events.stream",
            }))?;
        let inner = resp.bytes_stream().eventsource().map(|frame| match frame {
            Err(e) => Err(StreamError::Transport(e.to_string())),
            Ok(ev) => match ev.event.as_str() {
                "ping" => Ok(StreamItem::Skip),
                // `message` is the SSE default name: the frame had no `event:` line.
                "" | "message" => {
                    tracing::debug!("dropping an SSE frame without an event name");
                    Ok(StreamItem::Skip)
                }
                "error" => Err(StreamError::ServerError(
                    ev.data.chars().take(500).collect(),
                )),
                name => SessionEvent::parse(&ev.data)
                    .map(StreamItem::Event)
                    .map_err(|error| StreamError::Malformed {
                        name: name.to_owned(),
                        error,
                    }),
            },
        });
        Ok(EventStream {
            inner: Box::pin(inner),
            idle: self.api.timeouts.stream_idle,
        })
    }

    /// `GET /v1/sessions/{id}/events?limit=1000` and every further page, oldest first. Each
    /// page's `data` is split into its elements' raw JSON text and every element is decoded on
    /// its own ([`SessionEvent::parse`], lenient about lone surrogate escapes), so one odd
    /// event never makes the page, and the events after it, unreadable.
    pub async fn list_events(&self) -> Result<History, ApiError> {
        let path = self.session_path("/events");
        let mut out = Vec::new();
        let mut page: Option<String> = None;
        let mut seen_cursors = std::collections::HashSet::new();
        loop {
            let resp = self
                .api
                .send(
                    "events.list",
                    Retries::Core,
                    self.api.timeouts.request,
                    || {
                        let mut query = vec![("limit", "1000".to_owned())];
                        if let Some(p) = &page {
                            query.push(("page", p.clone()));
                        }
                        self.api
                            .request(Method::GET, &path, &self.credential, HELPER_RUNNER)
                            .query(&query)
                    },
                )
                .await?;
            let body: EventPage = json_req("events.list", resp).await?;
            out.extend(body.data.iter().map(|raw| SessionEvent::parse(raw.get())));
            match body.next_page.filter(|p| !p.is_empty()) {
                Some(next) if seen_cursors.insert(next.clone()) => page = Some(next),
                Some(_) => {
                    return Err(ApiError::Decode {
                        op: "events.list",
                        detail: "pagination cursor repeated".into(),
                    });
                }
                None => return Ok(out),
            }
        }
    }

    /// `POST /v1/sessions/{id}/events` with one or more result events; one attempt (the runner
    /// owns the retry window).
    pub async fn send_events(&self, events: &[OutgoingEvent]) -> Result<(), ApiError> {
        let path = self.session_path("/events");
        let body = SendEvents { events };
        self.api
            .send(
                "events.send",
                Retries::None,
                self.api.timeouts.request,
                || {
                    self.api
                        .request(Method::POST, &path, &self.credential, HELPER_RUNNER)
                        .json(&body)
                },
            )
            .await?;
        Ok(())
    }
}

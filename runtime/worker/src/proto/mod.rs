//! Wire types of the self-hosted environment work API and the session event API, mirroring the
//! `anthropic` SDK 2.10.0 models (`types/beta/environments/`, `types/beta/sessions/`).
//!
//! Like the SDK's pydantic models, every response type tolerates unknown fields and unknown
//! enum values (a newer server may add them); fields the worker does not need default when
//! missing. Session events are decoded from a `serde_json::Value` by their JSON `type`, and an
//! event whose type this worker does not know is kept as [`EventBody::Other`] rather than
//! rejected.
//!
//! Security (hostile event text): event JSON is written by the server from model output, so
//! one event may hold text a strict parser refuses although it is valid JSON text — above
//! all an unpaired UTF-16 surrogate escape (`"\ud800"`), which `serde_json` (like any parser
//! producing Rust `String`s) rejects. Were such an event dropped, its call would never be
//! answered; were the history page that holds it refused as a whole, every later event of the
//! page would be lost with it (the session would stall). So events are decoded one by one
//! ([`SessionEvent::parse`]; [`EventPage`] keeps each element's raw text), and an event the
//! strict parse refuses gets a second, lenient pass ([`repair_lone_surrogates`]: each
//! unpaired surrogate escape becomes `\ufffd`) that recovers its `type`, `id`, `name` and
//! routing ids. A tool call decoded that way is *never run with the altered input*: it
//! carries [`ToolUse::invalid_input`] and is answered with one `is_error` result
//! ([`ToolUse::invalid_input_result`]); a call whose `id` or `name` itself needed repair
//! cannot be answered faithfully and stays undecodable.

mod events;
mod work;

pub use events::{
    EventBody, EventError, EventPage, INVALID_REQUEST_PREFIX, OutgoingEvent, Permission,
    SendEvents, Session, SessionEvent, SkillVersion, ToolUse, Verdict, lone_surrogate_reason,
    repair_lone_surrogates,
};
pub use work::{
    ErrorBody, ErrorEnvelope, HeartbeatResponse, LeaseState, QueueStats, StopRequest, Work,
    WorkData, WorkSecret, WorkState,
};

/// `anthropic-beta` value sent on every `/v1/environments/**` and `/v1/sessions/**` call.
pub const MANAGED_AGENTS_BETA: &str = "managed-agents-2026-04-01";
/// `anthropic-version` value the SDKs send.
pub const API_VERSION: &str = "2026-10-21";
/// `expected_last_heartbeat` of the first beat, which claims an unclaimed lease.
pub const NO_HEARTBEAT: &str = "NO_HEARTBEAT";
/// Default API base URL.
pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
/// The server's maximum `block_ms` (0 is rejected).
pub const POLL_BLOCK_MS_MAX: u32 = 999;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;
    use base64::Engine as _;
    use serde_json::{Value, json};

    #[test]
    fn work_item_tolerates_unknown_fields_and_states() {
        let w: Work = serde_json::from_value(json!({
            "id": "work_1", "type": "work", "environment_id": "env_1",
            "data": {"type": "session", "id": "sesn_1"}, "state": "brand_new_state",
            "metadata": {}, "secret": null, "created_at": "2026-01-01T00:00:00Z",
            "future_field": {"x": 1}
        }))
        .unwrap();
        assert_eq!(w.state, Some(WorkState::Unknown));
        assert_eq!(w.data.session_id(), Some("sesn_1"));
        let hc: Work =
            serde_json::from_value(json!({"id": "work_2", "data": {"id": "h"}})).unwrap();
        assert_eq!(hc.data.session_id(), None);
        let hc: Work = serde_json::from_value(
            json!({"id": "work_2", "data": {"type": "healthcheck", "id": "h"}}),
        )
        .unwrap();
        assert_eq!(hc.data.session_id(), None);
    }

    #[test]
    fn secret_decodes_with_and_without_padding() {
        let enc = WorkSecret::encode("sk-ant-req-T");
        assert!(!enc.expose().ends_with('='));
        assert_eq!(
            WorkSecret::decode(&enc).sessions_token,
            Some(Secret::new("sk-ant-req-T"))
        );
        // Padded standard URL-safe form.
        let padded = base64::engine::general_purpose::URL_SAFE
            .encode(br#"{"sessions_token":"tok?>","api_base_url":"https://x"}"#);
        let d = WorkSecret::decode(&Secret::new(padded));
        assert_eq!(d.sessions_token, Some(Secret::new("tok?>")));
        assert_eq!(d.api_base_url.as_deref(), Some("https://x"));
    }

    #[test]
    fn secret_garbage_yields_no_token() {
        for bad in [
            "",
            "!!!not base64!!!",
            &base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("[1,2]"),
            &base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"sessions_token":""}"#),
            &base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"sessions_token":5}"#),
            &base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("not json"),
        ] {
            assert_eq!(
                WorkSecret::decode(&Secret::new(bad)).sessions_token,
                None,
                "{bad}"
            );
        }
    }

    #[test]
    fn heartbeat_response_parses() {
        let r: HeartbeatResponse = serde_json::from_value(json!({
            "type": "work_heartbeat", "last_heartbeat": "2026-01-01T00:00:01Z",
            "lease_extended": true, "state": "active", "ttl_seconds": 60
        }))
        .unwrap();
        assert_eq!(r.state, WorkState::Active);
        assert_eq!(r.ttl_seconds, 60);
        assert!(r.lease_extended);
    }

    #[test]
    fn stop_request_bodies() {
        assert_eq!(
            serde_json::to_string(&StopRequest::default()).unwrap(),
            "{}"
        );
        assert_eq!(
            serde_json::to_string(&StopRequest { force: Some(true) }).unwrap(),
            r#"{"force":true}"#
        );
    }

    #[test]
    fn tool_result_serializes_like_the_sdk() {
        let ev = OutgoingEvent::ToolResult {
            tool_use_id: "sevt_1".into(),
            is_error: false,
            content: vec![json!({"type": "text", "text": "hi"})],
        };
        assert_eq!(
            serde_json::to_value(SendEvents { events: &[ev] }).unwrap(),
            json!({"events": [{"type": "user.tool_result", "tool_use_id": "sevt_1",
                               "is_error": false, "content": [{"type": "text", "text": "hi"}]}]})
        );
    }

    #[test]
    fn lone_surrogates_are_repaired_and_only_them() {
        // Valid pairs, escaped backslashes and other escapes are left alone.
        for ok in [
            r#"{"a":"\ud83d\ude00"}"#,
            r#"{"a":"\\ud800"}"#,
            r#"{"a":"\n\"\u0041"}"#,
            "{\"a\":\"é\\\\\"}",
        ] {
            assert_eq!(repair_lone_surrogates(ok), None, "{ok}");
        }
        let (fixed, first) =
            repair_lone_surrogates(r#"{"a":"x\ud800y","b":"\uDC00","c":"\ud800\ud800\udc00"}"#)
                .unwrap();
        assert_eq!(first, r"\ud800");
        assert_eq!(
            fixed,
            r#"{"a":"x\ufffdy","b":"\ufffd","c":"\ufffd\ud800\udc00"}"#
        );
        let v: Value = serde_json::from_str(&fixed).unwrap();
        assert_eq!(v["c"], "\u{fffd}\u{10000}");
        // A high surrogate at the very end of the text.
        assert_eq!(repair_lone_surrogates(r"\ud800").unwrap().0, r"\ufffd");
    }

    #[test]
    fn a_tool_use_with_a_lone_surrogate_is_decoded_and_marked() {
        let text = r#"{"type":"agent.tool_use","id":"sevt_1","name":"write","input":{"file_path":"a\ud800","content":"x"}}"#;
        assert!(
            serde_json::from_str::<Value>(text).is_err(),
            "strict parse must refuse it"
        );
        let ev = SessionEvent::parse(text).unwrap();
        let EventBody::ToolUse(tu) = ev.body else {
            panic!("not a tool use")
        };
        assert_eq!(tu.id, "sevt_1");
        assert_eq!(tu.name, "write");
        let reason = tu.invalid_input.expect("marked as altered");
        assert!(reason.contains(r"\ud800"), "{reason}");
        assert!(ToolUse::invalid_input_result(&reason).starts_with("invalid request: "));
        // A clean call is not marked.
        let clean = SessionEvent::parse(
            r#"{"type":"agent.tool_use","id":"b","name":"read","input":{"file_path":"\ufffd"}}"#,
        )
        .unwrap();
        assert!(matches!(
            clean.body,
            EventBody::ToolUse(ToolUse {
                invalid_input: None,
                ..
            })
        ));
        // The id itself cannot be repaired faithfully.
        assert_eq!(
            SessionEvent::parse(
                r#"{"type":"agent.tool_use","id":"s\udc00","name":"read","input":{}}"#
            ),
            Err(EventError::Unrepresentable("agent.tool_use".into()))
        );
        // Other events keep their routing fields.
        let r = SessionEvent::parse(r#"{"type":"user.tool_result","tool_use_id":"sevt_1","content":[{"type":"text","text":"\ud800"}]}"#).unwrap();
        assert_eq!(
            r.body,
            EventBody::ToolResult {
                tool_use_id: "sevt_1".into()
            }
        );
        // … unless the repair touched one of them: a stand-in id could name another call.
        assert_eq!(
            SessionEvent::parse(
                r#"{"type":"user.tool_result","tool_use_id":"sevt_\ud800","content":[]}"#
            ),
            Err(EventError::Unrepresentable("user.tool_result".into()))
        );
    }

    #[test]
    fn a_history_page_with_one_odd_event_yields_the_rest() {
        let body = r#"{"data":[
            {"type":"agent.tool_use","id":"a","name":"bash","input":{"command":"echo \ud800"}},
            {"type":"agent.tool_use","id":"b","name":"bash","input":{"command":"ls"}},
            {"type":"agent.tool_use","id":"\ud800"}
        ],"next_page":null}"#;
        let page: EventPage = serde_json::from_str(body).unwrap();
        let evs: Vec<_> = page
            .data
            .iter()
            .map(|r| SessionEvent::parse(r.get()))
            .collect();
        assert_eq!(evs.len(), 3);
        let EventBody::ToolUse(a) = &evs[0].as_ref().unwrap().body else {
            panic!()
        };
        assert!(a.invalid_input.is_some());
        let EventBody::ToolUse(b) = &evs[1].as_ref().unwrap().body else {
            panic!()
        };
        assert_eq!((b.id.as_str(), b.invalid_input.as_ref()), ("b", None));
        assert!(evs[2].is_err());
    }

    #[test]
    fn events_decode() {
        let e = SessionEvent::parse(
            r#"{"type":"agent.tool_use","id":"sevt_1","name":"bash","input":{"command":"ls"},
                "processed_at":"2026-01-01T00:00:00Z","evaluated_permission":"ask","new":1}"#,
        )
        .unwrap();
        let EventBody::ToolUse(tu) = &e.body else {
            panic!("not a tool use: {e:?}")
        };
        assert_eq!(tu.permission, Permission::Ask);
        assert_eq!(tu.name, "bash");
        assert!(!tu.custom);

        let perm = |p: Value| {
            let EventBody::ToolUse(tu) = SessionEvent::from_value(
                &json!({"type":"agent.tool_use","id":"a","name":"read","input":{},"evaluated_permission":p}),
            )
            .unwrap()
            .body
            else {
                panic!()
            };
            tu.permission
        };
        assert_eq!(perm(json!("allow")), Permission::Allow);
        assert_eq!(perm(Value::Null), Permission::Allow);
        assert_eq!(perm(json!("deny")), Permission::Deny);
        assert_eq!(perm(json!("maybe")), Permission::Ask);

        let c = SessionEvent::parse(
            r#"{"type":"user.tool_confirmation","id":"x","tool_use_id":"a","result":"weird"}"#,
        )
        .unwrap();
        assert_eq!(
            c.body,
            EventBody::Confirmation {
                tool_use_id: "a".into(),
                verdict: Verdict::Deny
            }
        );
        assert!(c.is_idle_neutral());

        let idle = |r: Value| {
            SessionEvent::from_value(&json!({"type":"session.status_idle","stop_reason":r}))
                .unwrap()
        };
        assert!(idle(json!({"type": "end_turn"})).ends_turn());
        assert!(idle(json!({"type": "brand_new"})).ends_turn());
        assert!(!idle(json!({"type": "requires_action", "event_ids": ["a"]})).ends_turn());

        assert_eq!(
            SessionEvent::parse(r#"{"type":"session.deleted"}"#)
                .unwrap()
                .body,
            EventBody::Terminated
        );
        assert_eq!(
            SessionEvent::parse(r#"{"type":"agent.message","content":[]}"#)
                .unwrap()
                .body,
            EventBody::Other
        );
        assert!(matches!(
            SessionEvent::parse("{not json"),
            Err(EventError::NotJson(_))
        ));
        assert_eq!(SessionEvent::parse("[1]"), Err(EventError::NoType));
        assert!(matches!(
            SessionEvent::parse(r#"{"type":"agent.tool_use","id":"x"}"#),
            Err(EventError::MissingField { field: "name", .. })
        ));
    }
}

//! Result content as the API accepts it, and the history lookup for a posted result.

use crate::client::History;
use crate::proto::EventBody;
use crate::sandbox::ToolResult;
use serde_json::Value;
use wasm_sandbox_runtime::text_block;

/// Makes content acceptable to the API: never empty, never an empty text block, only text on
/// an error result, unknown block kinds sent as their JSON text (SDK `_to_session_content`).
pub fn normalize_content(result: &ToolResult) -> Vec<Value> {
    let mut out = Vec::with_capacity(result.content.len().max(1));
    for block in &result.content {
        let kind = block.get("type").and_then(Value::as_str);
        match kind {
            // An empty or missing text reads `(no output)` (the core's `text_block`).
            Some("text") => out.push(text_block(
                block
                    .get("text")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
            )),
            Some("image" | "document" | "search_result") if !result.is_error => {
                out.push(block.clone());
            }
            _ => out.push(text_block(block.to_string())),
        }
    }
    if out.is_empty() {
        out.push(text_block(""));
    }
    out
}

/// Whether `events` holds a `user.tool_result` for `id`.
pub(super) fn history_has_result(events: &History, id: &str) -> bool {
    events.iter().any(|e| {
        matches!(
            e.as_ref().map(|e| &e.body),
            Ok(EventBody::ToolResult { tool_use_id }) if tool_use_id == id
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::SessionEvent;
    use serde_json::json;

    #[test]
    fn normalization() {
        let n =
            |content: Vec<Value>, is_error| normalize_content(&ToolResult { content, is_error });
        assert_eq!(
            n(vec![], false),
            vec![json!({"type":"text","text":"(no output)"})]
        );
        assert_eq!(
            n(vec![json!({"type":"text","text":""})], false),
            vec![json!({"type":"text","text":"(no output)"})]
        );
        let img = json!({"type":"image","source":{"type":"base64","media_type":"image/png","data":"AA=="}});
        assert_eq!(n(vec![img.clone()], false), vec![img.clone()]);
        // Error results carry text only.
        assert_eq!(
            n(vec![img.clone()], true),
            vec![json!({"type":"text","text": img.to_string()})]
        );
        let odd = json!({"type":"tool_reference","x":1});
        assert_eq!(
            n(vec![odd.clone()], false),
            vec![json!({"type":"text","text": odd.to_string()})]
        );
    }

    #[test]
    fn history_result_lookup() {
        let h: History = [
            json!({"type":"agent.tool_use","id":"a","name":"bash","input":{}}),
            json!({"type":"user.tool_result","tool_use_id":"a","content":[]}),
            json!("garbage"),
        ]
        .iter()
        .map(SessionEvent::from_value)
        .collect();
        assert!(history_has_result(&h, "a"));
        assert!(!history_has_result(&h, "b"));
    }
}

//! Segments: the decoded text of the JSON string values a request sends out, each with its JSON
//! path (`messages[3].content[0].text`). JSON escapes are resolved, so a PEM key inside a JSON
//! string reaches the policies as a PEM key.
//!
//! Known shapes keep to the text that carries user content: Anthropic `system` and
//! `messages[].content` (text, tool_result, tool_use input, thinking), OpenAI chat `messages`,
//! Responses `input` and `instructions`, legacy `prompt`. Structural strings (`type`, `role`,
//! ids, `cache_control`, thinking `signature`s) and base64 payloads (images, documents, redacted
//! thinking) are skipped. Tool definitions are not scanned: the client ships them, not the user.
//! Unknown shapes fall back to every string value.

use std::fmt::Write as _;

use serde_json::Value;

/// One piece of outgoing text.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// JSON path.
    pub path: String,
    /// Decoded text.
    pub text: String,
}

/// Keys whose string values are structure, not content.
const SKIP_KEYS: &[&str] = &[
    "type",
    "role",
    "id",
    "tool_use_id",
    "call_id",
    "cache_control",
    "signature",
    "media_type",
    "status",
    "encrypted_content",
    "file_id",
    "detail",
    "format",
];

/// More segments than this in one body are not worth scanning one by one; the rest is joined.
const MAX_SEGMENTS: usize = 100_000;

/// The content fields of the known shapes; everything else (tools: ~70 KB of a Claude Code
/// request) is skipped by the parser without being built into values.
#[derive(serde::Deserialize)]
struct Content {
    system: Option<Value>,
    messages: Option<Value>,
    input: Option<Value>,
    instructions: Option<Value>,
    prompt: Option<Value>,
}

/// Extracts the segments of a JSON request body. A body that is not JSON yields none.
/// (`inspect` has already refused duplicate top-level content fields.)
pub fn extract(body: &[u8]) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut path = String::new();
    if let Ok(c) = serde_json::from_slice::<Content>(body) {
        let fields = [
            ("system", &c.system),
            ("messages", &c.messages),
            ("input", &c.input),
            ("instructions", &c.instructions),
            ("prompt", &c.prompt),
        ];
        if fields.iter().any(|(_, v)| v.is_some()) {
            for (name, v) in fields {
                if let Some(v) = v {
                    path.clear();
                    path.push_str(name);
                    walk(v, &mut path, &mut out);
                }
            }
            return out;
        }
    }
    // Unknown shape: every string value.
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return Vec::new();
    };
    walk(&value, &mut path, &mut out);
    out
}

fn walk(value: &Value, path: &mut String, out: &mut Vec<Segment>) {
    if out.len() >= MAX_SEGMENTS {
        return;
    }
    match value {
        Value::String(s) if !s.is_empty() && !is_data_url(s) => {
            out.push(Segment {
                path: path.clone(),
                text: s.clone(),
            });
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                let _ = write!(path, "[{i}]");
                walk(item, path, out);
                path.truncate(len);
            }
        }
        Value::Object(map) => {
            let kind = map.get("type").and_then(Value::as_str).unwrap_or("");
            let binary = matches!(
                kind,
                "base64" | "redacted_thinking" | "image" | "input_image" | "input_file"
            );
            for (key, v) in map {
                if SKIP_KEYS.contains(&key.as_str())
                    || (binary && matches!(key.as_str(), "data" | "image_url" | "file_data"))
                {
                    continue;
                }
                let len = path.len();
                push_key(path, key);
                walk(v, path, out);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

/// Appends an object key to a JSON path. Paths are recorded (findings, audit, block messages),
/// and keys are client data — a tool's input may have any key — so only keys that look like field
/// names are written; anything else (long, odd characters, digit-rich like a token) becomes `[*]`.
fn push_key(path: &mut String, key: &str) {
    let field_like = !key.is_empty()
        && key.len() <= 32
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        && key.bytes().filter(u8::is_ascii_digit).count() <= 2;
    if field_like {
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(key);
    } else {
        path.push_str("[*]");
    }
}

fn is_data_url(s: &str) -> bool {
    s.len() > 64 && s.starts_with("data:") && s[..64].contains(";base64,")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(body: &str) -> Vec<(String, String)> {
        extract(body.as_bytes()).into_iter().map(|s| (s.path, s.text)).collect()
    }

    #[test]
    fn anthropic_messages() {
        let body = r#"{"model":"claude-sonnet-4-5","system":[{"type":"text","text":"sys","cache_control":{"type":"ephemeral"}}],
            "tools":[{"name":"Bash","description":"runs commands","input_schema":{}}],
            "messages":[{"role":"user","content":"hi \"there\"\n-----BEGIN PRIVATE KEY-----"},
              {"role":"assistant","content":[{"type":"thinking","thinking":"hmm","signature":"EqQBCkYIB..."},{"type":"tool_use","id":"toolu_01","name":"Bash","input":{"command":"cat .env"}}]},
              {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_01","content":[{"type":"text","text":"KEY=v"}]},
                {"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBORw0KGgo"}}]}],
            "metadata":{"user_id":"u"}}"#;
        assert_eq!(
            paths(body),
            [
                ("system[0].text".into(), "sys".into()),
                (
                    "messages[0].content".into(),
                    "hi \"there\"\n-----BEGIN PRIVATE KEY-----".into()
                ),
                ("messages[1].content[0].thinking".into(), "hmm".into()),
                ("messages[1].content[1].name".into(), "Bash".into()),
                ("messages[1].content[1].input.command".into(), "cat .env".into()),
                ("messages[2].content[0].content[0].text".into(), "KEY=v".into()),
            ]
        );
    }

    #[test]
    fn openai_shapes_and_fallback() {
        let chat = r#"{"model":"gpt-5","messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}}]}]}"#;
        assert_eq!(paths(chat), [("messages[0].content[0].text".into(), "a".into())]);
        let responses = r#"{"model":"gpt-5","instructions":"be brief","input":[{"type":"message","role":"user","content":[{"type":"input_text","text":"b"}]}]}"#;
        assert_eq!(
            paths(responses),
            [
                ("input[0].content[0].text".into(), "b".into()),
                ("instructions".into(), "be brief".into())
            ]
        );
        let other = r#"{"query":{"odd key":"c"},"n":1}"#;
        assert_eq!(paths(other), [("query[*]".into(), "c".into())]);
        // A key that could be a token never reaches a recorded path.
        let keyed = r#"{"messages":[{"role":"user","content":[{"type":"tool_use","id":"t","name":"n","input":{"ghp_R8xk2LmQ9vTz4WcY7nB3pJ6hF1sD5gA0eK2u":"v","file_path":"w"}}]}]}"#;
        let p: Vec<String> = paths(keyed).into_iter().map(|(p, _)| p).collect();
        assert!(p.iter().all(|p| !p.contains("ghp_")), "{p:?}");
        assert!(p.iter().any(|p| p.ends_with("input.file_path")), "{p:?}");
        assert!(extract(b"not json").is_empty());
    }
}

//! Anthropic-API clients sent to AWS Bedrock: the one place Conduit changes a request body,
//! because the target API differs.
//!
//! With `[upstream.anthropic] provider = "bedrock"`, `POST /v1/messages` goes to
//! `/model/{bedrock id}/invoke` (or `/invoke-with-response-stream` when the body asks to stream):
//! - the model name maps to a Bedrock model id or inference profile ([`Translation::bedrock_id`]:
//!   the operator's table, else the built-in table with the configured profile prefix);
//! - the body loses `model` and `stream` and gains `anthropic_version: "bedrock-2023-05-31"` and,
//!   from the `anthropic-beta` header, `anthropic_beta` (only betas Bedrock accepts). Every other
//!   member is copied byte for byte, in order ([`request_body`]);
//! - Bedrock's AWS event-stream is turned back into Anthropic SSE for the client
//!   ([`SseFromEventStream`]): each `chunk` frame's base64 event becomes `event: <type>` /
//!   `data: <the event JSON, as Bedrock sent it>`; an exception frame becomes an SSE `error` event;
//! - Bedrock's JSON errors become Anthropic's error shape ([`anthropic_error`]).

use std::borrow::Cow;
use std::collections::HashMap;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use base64::Engine;
use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::BoxError;
use crate::eventstream::{Decoder, Message};

/// The `anthropic_version` Bedrock requires in the body.
pub const BEDROCK_ANTHROPIC_VERSION: &str = "bedrock-2023-05-31";

/// Anthropic model names → Bedrock base model ids (without a profile prefix). Aliases and dated ids.
/// Current models first; keep in step with the Bedrock rows of the price table (a test checks that
/// every id here, with each profile prefix, has a price).
const MODELS: &[(&str, &str)] = &[
    ("claude-opus-5-5", "anthropic.claude-opus-5-5"),
    ("claude-opus-5", "anthropic.claude-opus-5"),
    ("claude-sonnet-5-5", "anthropic.claude-sonnet-5-5"),
    ("claude-sonnet-5", "anthropic.claude-sonnet-5"),
    ("claude-haiku-5-5", "anthropic.claude-haiku-5-5"),
    ("claude-fable-5-1", "anthropic.claude-fable-5-1"),
    ("claude-fable-5", "anthropic.claude-fable-5"),
    ("claude-opus-4-8", "anthropic.claude-opus-4-8"),
    ("claude-opus-4-7", "anthropic.claude-opus-4-7"),
    ("claude-sonnet-4-6", "anthropic.claude-sonnet-4-6"),
    ("claude-opus-4-6", "anthropic.claude-opus-4-6-v1"),
    ("claude-opus-4-5", "anthropic.claude-opus-4-5-20251101-v1:0"),
    ("claude-opus-4-5-20251101", "anthropic.claude-opus-4-5-20251101-v1:0"),
    ("claude-sonnet-4-5", "anthropic.claude-sonnet-4-5-20250929-v1:0"),
    (
        "claude-sonnet-4-5-20250929",
        "anthropic.claude-sonnet-4-5-20250929-v1:0",
    ),
    ("claude-haiku-4-5", "anthropic.claude-haiku-4-5-20251001-v1:0"),
    ("claude-haiku-4-5-20251001", "anthropic.claude-haiku-4-5-20251001-v1:0"),
    ("claude-opus-4-1", "anthropic.claude-opus-4-1-20250805-v1:0"),
    ("claude-opus-4-1-20250805", "anthropic.claude-opus-4-1-20250805-v1:0"),
    ("claude-opus-4-0", "anthropic.claude-opus-4-20250514-v1:0"),
    ("claude-opus-4-20250514", "anthropic.claude-opus-4-20250514-v1:0"),
    ("claude-sonnet-4-0", "anthropic.claude-sonnet-4-20250514-v1:0"),
    ("claude-sonnet-4-20250514", "anthropic.claude-sonnet-4-20250514-v1:0"),
    (
        "claude-3-7-sonnet-20250219",
        "anthropic.claude-3-7-sonnet-20250219-v1:0",
    ),
    ("claude-3-7-sonnet-latest", "anthropic.claude-3-7-sonnet-20250219-v1:0"),
    ("claude-3-5-haiku-20241022", "anthropic.claude-3-5-haiku-20241022-v1:0"),
    ("claude-3-5-haiku-latest", "anthropic.claude-3-5-haiku-20241022-v1:0"),
];

/// Betas passed to Bedrock by default (`anthropic_beta`); others are dropped, since Bedrock
/// refuses flags it does not know. `[upstream.bedrock] betas` replaces the list.
pub const DEFAULT_BETAS: &[&str] = &[
    "computer-use-2025-01-24",
    "computer-use-2025-11-24",
    "token-efficient-tools-2025-02-19",
    "interleaved-thinking-2025-05-14",
    "output-128k-2025-02-19",
    "dev-full-thinking-2025-05-14",
    "context-1m-2025-08-07",
    "context-management-2025-06-27",
    "effort-2025-11-24",
    "tool-search-tool-2025-10-19",
    "tool-examples-2025-10-29",
];

/// The built-in table's Bedrock base ids (for checks against the price table).
pub fn builtin_model_ids() -> impl Iterator<Item = (&'static str, &'static str)> {
    MODELS.iter().copied()
}

/// How Anthropic requests are translated for Bedrock (part of the Anthropic upstream's settings).
#[derive(Debug, Clone)]
pub struct Translation {
    /// Operator table: model name → Bedrock id or inference profile (ARN or id).
    pub models: HashMap<String, String>,
    /// Inference-profile prefix for the built-in table (`us`, `eu`, `apac`, `global`, …), or none.
    pub profile: Option<String>,
    /// Betas forwarded as `anthropic_beta`.
    pub betas: Vec<String>,
}

impl Translation {
    /// The Bedrock model id for a client's model name, or why there is none.
    pub fn bedrock_id(&self, model: &str) -> Result<String, String> {
        if let Some(id) = self.models.get(model) {
            return Ok(id.clone());
        }
        if let Some((_, base)) = MODELS.iter().find(|(name, _)| *name == model) {
            return Ok(match &self.profile {
                Some(p) => format!("{p}.{base}"),
                None => (*base).to_string(),
            });
        }
        if model.contains("anthropic.") {
            return Ok(model.to_string()); // already a Bedrock id or profile ARN
        }
        Err(format!(
            "model {model:?} has no Bedrock model id in this gateway; an operator can map it in [upstream.bedrock.models] (e.g. \"{model}\" = \"us.anthropic.…-v1:0\"), or send a Bedrock model id"
        ))
    }

    /// The profile prefix a region implies (`us-east-1` → `us`).
    pub fn profile_for_region(region: &str) -> Option<String> {
        let p = match region.split('-').next()? {
            "us" => "us",
            "eu" => "eu",
            "ap" if region.starts_with("ap-northeast-1") => "jp",
            "ap" if region.starts_with("ap-southeast-2") => "au",
            "ap" => "apac",
            _ => return None,
        };
        Some(p.to_string())
    }
}

/// The foundation model an id or profile names (`us.anthropic.x-v1:0` → `anthropic.x-v1:0`);
/// `None` for an ARN (an application inference profile hides its model).
pub fn foundation_model(id: &str) -> Option<&str> {
    if id.starts_with("arn:") {
        return None;
    }
    let at = id.find("anthropic.")?;
    (at == 0 || id.as_bytes()[at - 1] == b'.').then(|| &id[at..])
}

/// The Bedrock CountTokens body for an Anthropic `count_tokens` body: the InvokeModel body it
/// would be (as [`request_body`], with `max_tokens: 1` when absent, which InvokeModel requires),
/// base64 in `input.invokeModel.body`.
pub fn count_tokens_body(original: &[u8], beta_header: Option<&str>, betas: &[String]) -> Result<Bytes, String> {
    let invoke = translate(original, beta_header, betas, true)?;
    let body = base64::engine::general_purpose::STANDARD.encode(&invoke);
    Ok(Bytes::from(format!(
        "{{\"input\":{{\"invokeModel\":{{\"body\":\"{body}\"}}}}}}"
    )))
}

/// Bedrock's CountTokens answer (`{"inputTokens": n}`) as Anthropic's (`{"input_tokens": n}`).
pub fn count_tokens_answer(body: &[u8]) -> Option<Bytes> {
    #[derive(Deserialize)]
    struct Counted {
        #[serde(rename = "inputTokens")]
        input_tokens: u64,
    }
    let c: Counted = serde_json::from_slice(body).ok()?;
    Some(Bytes::from(format!("{{\"input_tokens\":{}}}", c.input_tokens)))
}

/// The Bedrock body for an Anthropic Messages body: `model` and `stream` removed,
/// `anthropic_version` set, `anthropic_beta` from the header (filtered by `betas`) unless the body
/// has one. Every other member's bytes are kept as sent.
pub fn request_body(original: &[u8], beta_header: Option<&str>, betas: &[String]) -> Result<Bytes, String> {
    translate(original, beta_header, betas, false).map(Bytes::from)
}

/// [`request_body`], with `max_tokens: 1` added when absent if `need_max_tokens`.
fn translate(
    original: &[u8],
    beta_header: Option<&str>,
    betas: &[String],
    need_max_tokens: bool,
) -> Result<Vec<u8>, String> {
    let members: Members<'_> = serde_json::from_slice(original).map_err(|e| crate::content::json_problem(&e))?;
    let mut out = Vec::with_capacity(original.len() + 96);
    out.push(b'{');
    let mut first = true;
    let (mut has_beta, mut has_max_tokens) = (false, false);
    for (key, value) in &members.0 {
        if matches!(key.as_ref(), "model" | "stream" | "anthropic_version") {
            continue;
        }
        has_beta |= key == "anthropic_beta";
        has_max_tokens |= key == "max_tokens";
        if !first {
            out.push(b',');
        }
        first = false;
        serde_json::to_writer(&mut out, key.as_ref()).map_err(|e| e.to_string())?;
        out.push(b':');
        out.extend_from_slice(value.get().as_bytes());
    }
    if !first {
        out.push(b',');
    }
    out.extend_from_slice(format!("\"anthropic_version\":\"{BEDROCK_ANTHROPIC_VERSION}\"").as_bytes());
    if need_max_tokens && !has_max_tokens {
        out.extend_from_slice(b",\"max_tokens\":1");
    }
    if !has_beta && let Some(header) = beta_header {
        let wanted: Vec<&str> = header
            .split(',')
            .map(str::trim)
            .filter(|b| betas.iter().any(|a| a == b))
            .collect();
        if !wanted.is_empty() {
            out.extend_from_slice(b",\"anthropic_beta\":");
            serde_json::to_writer(&mut out, &wanted).map_err(|e| e.to_string())?;
        }
    }
    out.push(b'}');
    Ok(out)
}

/// A JSON object's members in order, values as raw text.
struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut v = Vec::new();
                while let Some((k, val)) = map.next_entry::<Cow<'de, str>, &'de RawValue>()? {
                    v.push((k, val));
                }
                Ok(Members(v))
            }
        }
        d.deserialize_map(V)
    }
}

/// Bedrock's JSON error (`{"message": …}`, type in `x-amzn-errortype`) in Anthropic's shape.
pub fn anthropic_error(status: u16, aws_type: Option<&str>, body: &[u8]) -> Bytes {
    #[derive(Deserialize)]
    struct AwsError {
        #[serde(alias = "Message")]
        message: Option<String>,
    }
    let message = serde_json::from_slice::<AwsError>(body)
        .ok()
        .and_then(|e| e.message)
        .unwrap_or_else(|| format!("Bedrock answered {status}"));
    let aws_type = aws_type.map(|t| t.split(':').next().unwrap_or(t));
    let kind = error_type(status, aws_type);
    Bytes::from(
        serde_json::json!({"type": "error", "error": {"type": kind, "message": format!("bedrock: {message}")}})
            .to_string(),
    )
}

fn error_type(status: u16, aws_type: Option<&str>) -> &'static str {
    match (status, aws_type.map(str::to_ascii_lowercase).as_deref()) {
        (_, Some(t)) if t.starts_with("throttling") => "rate_limit_error",
        (_, Some(t)) if t.starts_with("serviceunavailable") || t.starts_with("modelnotready") => "overloaded_error",
        (_, Some(t)) if t.starts_with("validation") => "invalid_request_error",
        (_, Some(t)) if t.starts_with("accessdenied") || t.starts_with("unrecognizedclient") => "permission_error",
        (_, Some(t)) if t.starts_with("resourcenotfound") => "not_found_error",
        (429, _) => "rate_limit_error",
        (401, _) => "authentication_error",
        (403, _) => "permission_error",
        (404, _) => "not_found_error",
        (400..=499, _) => "invalid_request_error",
        (503 | 529, _) => "overloaded_error",
        _ => "api_error",
    }
}

/// Bedrock's event-stream, re-framed as Anthropic SSE as frames arrive (one SSE event per chunk
/// frame; nothing is held back beyond an incomplete frame).
pub struct SseFromEventStream<B> {
    inner: B,
    decoder: Decoder,
    done: bool,
}

impl<B> std::fmt::Debug for SseFromEventStream<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseFromEventStream").field("done", &self.done).finish()
    }
}

impl<B> SseFromEventStream<B> {
    /// Wraps a Bedrock streaming body.
    pub fn new(inner: B) -> Self {
        SseFromEventStream {
            inner,
            decoder: Decoder::default(),
            done: false,
        }
    }
}

/// SSE for one event-stream message (empty for messages that carry nothing for the client).
pub fn sse_event(m: &Message, out: &mut BytesMut) {
    if is_exception(m) {
        let aws_type = m.header(":exception-type").or(m.header(":error-code"));
        let error = anthropic_error(500, aws_type, &m.payload);
        sse_error(&error, out);
        return;
    }
    let Some(mut event) = chunk_event(m) else {
        return;
    };
    #[derive(Deserialize)]
    struct Typed<'a> {
        #[serde(borrow, rename = "type")]
        kind: Cow<'a, str>,
    }
    let kind = match serde_json::from_slice::<Typed<'_>>(&event) {
        Ok(t)
            if t.kind
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.') =>
        {
            t.kind.into_owned()
        }
        Ok(_) => return,
        Err(_) => "message".into(),
    };
    if event.contains(&b'\n') || event.contains(&b'\r') {
        // JSON may hold line breaks between tokens; an SSE data line may not. Rare: compact it.
        match serde_json::from_slice::<serde_json::Value>(&event) {
            Ok(v) => event = v.to_string().into_bytes(),
            Err(_) => return,
        }
    }
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(&event);
    out.extend_from_slice(b"\n\n");
}

/// An exception or error message (`:message-type` other than `event`).
pub fn is_exception(m: &Message) -> bool {
    m.header(":message-type").is_some_and(|t| t != "event")
}

/// The Anthropic event a Bedrock `chunk` message carries (base64 in its payload's `bytes`).
pub fn chunk_event(m: &Message) -> Option<Vec<u8>> {
    if m.header(":event-type") != Some("chunk") {
        return None;
    }
    #[derive(Deserialize)]
    struct Chunk<'a> {
        #[serde(borrow)]
        bytes: Cow<'a, str>,
    }
    let chunk = serde_json::from_slice::<Chunk<'_>>(&m.payload).ok()?;
    base64::engine::general_purpose::STANDARD
        .decode(chunk.bytes.as_bytes())
        .ok()
}

fn sse_error(error_json: &[u8], out: &mut BytesMut) {
    out.extend_from_slice(b"event: error\ndata: ");
    out.extend_from_slice(error_json);
    out.extend_from_slice(b"\n\n");
}

impl<B> Body for SseFromEventStream<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    let Some(data) = frame.data_ref() else { continue };
                    let mut out = BytesMut::new();
                    // The events before a framing error reach the client, then the error.
                    match this.decoder.push_each(data, |m| sse_event(&m, &mut out)) {
                        Ok(()) => {}
                        Err(e) => {
                            this.done = true;
                            let err = anthropic_error(
                                502,
                                None,
                                format!("{{\"message\":\"{e} in Bedrock's stream\"}}").as_bytes(),
                            );
                            sse_error(&err, &mut out);
                        }
                    }
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(out.freeze()))));
                    }
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                None => {
                    this.done = true;
                    if this.decoder.pending() > 0 {
                        let mut out = BytesMut::new();
                        let err = anthropic_error(502, None, br#"{"message":"Bedrock's stream ended inside a frame"}"#);
                        sse_error(&err, &mut out);
                        return Poll::Ready(Some(Ok(Frame::data(out.freeze()))));
                    }
                    return Poll::Ready(None);
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || (self.inner.is_end_stream() && self.decoder.pending() == 0)
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn translation() -> Translation {
        Translation {
            models: [(
                "claude-house".to_string(),
                "arn:aws:bedrock:us-east-1:1:application-inference-profile/abc".to_string(),
            )]
            .into_iter()
            .collect(),
            profile: Some("us".into()),
            betas: DEFAULT_BETAS.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn model_ids() {
        let t = translation();
        assert_eq!(
            t.bedrock_id("claude-sonnet-4-5").unwrap(),
            "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
        );
        assert!(t.bedrock_id("claude-house").unwrap().starts_with("arn:aws:bedrock"));
        assert_eq!(
            t.bedrock_id("eu.anthropic.claude-haiku-4-5-20251001-v1:0").unwrap(),
            "eu.anthropic.claude-haiku-4-5-20251001-v1:0"
        );
        let err = t.bedrock_id("gpt-5").unwrap_err();
        assert!(err.contains("[upstream.bedrock.models]"), "{err}");
        assert_eq!(Translation::profile_for_region("eu-central-1").as_deref(), Some("eu"));
        assert_eq!(Translation::profile_for_region("ap-northeast-1").as_deref(), Some("jp"));
    }

    #[test]
    fn body_keeps_every_other_member_byte_for_byte() {
        let original = br#"{"model":"claude-sonnet-4-5","max_tokens":  64,"stream":true,"messages":[{"role":"user","content":"h\u00e9 \"q\""}],"metadata":{"user_id":"u"}}"#;
        let out = request_body(
            original,
            Some("claude-code-20250219, interleaved-thinking-2025-05-14"),
            &translation().betas,
        )
        .unwrap();
        let text = std::str::from_utf8(&out).unwrap();
        assert_eq!(
            text,
            r#"{"max_tokens":64,"messages":[{"role":"user","content":"h\u00e9 \"q\""}],"metadata":{"user_id":"u"},"anthropic_version":"bedrock-2023-05-31","anthropic_beta":["interleaved-thinking-2025-05-14"]}"#
        );
        assert!(request_body(b"[1]", None, &[]).is_err());
        assert!(request_body(b"{\"a\":", None, &[]).is_err());
        assert_eq!(
            &request_body(b"{}", None, &[]).unwrap()[..],
            br#"{"anthropic_version":"bedrock-2023-05-31"}"#
        );
    }

    #[test]
    fn token_counting_forms() {
        assert_eq!(
            foundation_model("us.anthropic.claude-haiku-4-5-20251001-v1:0"),
            Some("anthropic.claude-haiku-4-5-20251001-v1:0")
        );
        assert_eq!(
            foundation_model("anthropic.claude-opus-4-6-v1"),
            Some("anthropic.claude-opus-4-6-v1")
        );
        assert_eq!(
            foundation_model("arn:aws:bedrock:us-east-1:1:application-inference-profile/x"),
            None
        );
        let body = count_tokens_body(
            br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
            None,
            &[],
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let inner = base64::engine::general_purpose::STANDARD
            .decode(v["input"]["invokeModel"]["body"].as_str().unwrap())
            .unwrap();
        assert_eq!(
            std::str::from_utf8(&inner).unwrap(),
            r#"{"messages":[{"role":"user","content":"hi"}],"anthropic_version":"bedrock-2023-05-31","max_tokens":1}"#
        );
        assert_eq!(
            &count_tokens_answer(br#"{"inputTokens":42}"#).unwrap()[..],
            br#"{"input_tokens":42}"#
        );
        assert!(count_tokens_answer(b"{}").is_none());
    }

    #[test]
    fn frames_become_sse_and_exceptions_errors() {
        let event = br#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi\n"}}"#;
        let b64 = base64::engine::general_purpose::STANDARD.encode(event);
        let frame = crate::eventstream::encode(
            &[(":event-type", "chunk"), (":message-type", "event")],
            format!("{{\"bytes\":\"{b64}\"}}").as_bytes(),
        );
        let m = Decoder::default().push(&frame).unwrap().remove(0);
        let mut out = BytesMut::new();
        sse_event(&m, &mut out);
        assert_eq!(
            &out[..],
            [b"event: content_block_delta\ndata: ".as_slice(), event, b"\n\n"].concat()
        );
        // A pretty-printed event still makes one data line.
        let pretty = base64::engine::general_purpose::STANDARD.encode(b"{\n  \"type\": \"ping\"\n}");
        let frame = crate::eventstream::encode(
            &[(":event-type", "chunk"), (":message-type", "event")],
            format!("{{\"bytes\":\"{pretty}\"}}").as_bytes(),
        );
        let m = Decoder::default().push(&frame).unwrap().remove(0);
        let mut out = BytesMut::new();
        sse_event(&m, &mut out);
        assert_eq!(&out[..], b"event: ping\ndata: {\"type\":\"ping\"}\n\n");
        let exc = crate::eventstream::encode(
            &[
                (":message-type", "exception"),
                (":exception-type", "throttlingException"),
            ],
            br#"{"message":"Too many requests"}"#,
        );
        let m = Decoder::default().push(&exc).unwrap().remove(0);
        let mut out = BytesMut::new();
        sse_event(&m, &mut out);
        let text = String::from_utf8(out.to_vec()).unwrap();
        assert!(
            text.starts_with("event: error\ndata: {") && text.contains("rate_limit_error"),
            "{text}"
        );
    }
}

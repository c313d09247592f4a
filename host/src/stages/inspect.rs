//! **inspect** — reads: the request body, bounded by `limits.max_body_bytes` and
//! `limits.body_read_timeout_secs`. Decides: that a JSON endpoint got a JSON object (else 415/400),
//! and extracts the facts later stages use: model, stream flag, max tokens. Returns: the original
//! body bytes, untouched, and the [`RequestFacts`].
//!
//! The body is parsed once, without copying string values; the bytes that go upstream are the
//! bytes that arrived. Duplicate top-level `model`/`stream` keys are refused: a client must not be
//! able to show the gateway one model and the provider another.

use std::borrow::Cow;

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Deserialize;

use crate::config::Limits;
use crate::error::{ErrorKind, GatewayError};
use crate::stages::accept;
use crate::stages::route::Endpoint;

/// What the gateway learned from the body.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestFacts {
    /// `model`, if present.
    pub model: Option<String>,
    /// `stream: true`.
    pub stream: bool,
    /// The largest max-output field (`max_tokens` / `max_completion_tokens` / `max_output_tokens`).
    pub max_tokens: Option<u64>,
    /// Completions asked for (OpenAI `n`, `best_of`); 0 or 1: one.
    pub choices: u64,
    /// The body references input it does not carry (file ids, URLs, MCP servers): the model's
    /// whole context window may be billed.
    pub unbounded_input: bool,
    /// Fee-bearing server-side searches the request allows at most.
    pub web_searches: u64,
    /// The service tier and multipliers the request asks for.
    pub billing: crate::prices::Billing,
}

/// The request body and what it says.
#[derive(Debug)]
pub struct Inspected {
    /// Exactly the bytes the client sent.
    pub body: Bytes,
    /// Parsed facts.
    pub facts: RequestFacts,
}

/// Reads and inspects the body.
pub async fn read(
    body: Incoming,
    headers: &HeaderMap,
    endpoint: Endpoint,
    limits: &Limits,
) -> Result<Inspected, GatewayError> {
    let collected = tokio::time::timeout(
        limits.body_read_timeout,
        Limited::new(body, limits.max_body_bytes as usize).collect(),
    )
    .await
    .map_err(|_| {
        GatewayError::downstream(
            ErrorKind::RequestTimeout,
            format!(
                "the request body did not arrive within {} s",
                limits.body_read_timeout.as_secs()
            ),
        )
    })?;
    let body = match collected {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(accept::too_large(limits.max_body_bytes + 1, limits));
        }
        Err(e) => {
            return Err(
                GatewayError::downstream(ErrorKind::BadRequest, "the request body could not be read").with_cause(e),
            );
        }
    };
    let facts = if endpoint.takes_json() && !body.is_empty() {
        check_content_type(headers)?;
        parse_facts(&body)?
    } else {
        RequestFacts::default()
    };
    Ok(Inspected { body, facts })
}

fn check_content_type(headers: &HeaderMap) -> Result<(), GatewayError> {
    let ct = headers
        .get(http::header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("(not text)"));
    match ct {
        Some(v)
            if v.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json")) =>
        {
            Ok(())
        }
        other => Err(GatewayError::downstream(
            ErrorKind::UnsupportedMediaType,
            format!(
                "this endpoint takes a JSON body, but content-type is {}; send `content-type: application/json`",
                other.map(|v| format!("{v:?}")).unwrap_or_else(|| "missing".into())
            ),
        )),
    }
}

#[derive(Deserialize)]
struct Head<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    stream: Option<serde_json::Value>,
    #[serde(default)]
    max_tokens: Option<serde_json::Value>,
    #[serde(default)]
    max_completion_tokens: Option<serde_json::Value>,
    #[serde(default)]
    max_output_tokens: Option<serde_json::Value>,
    #[serde(default)]
    n: Option<serde_json::Value>,
    #[serde(default)]
    best_of: Option<serde_json::Value>,
    #[serde(borrow, default)]
    service_tier: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    speed: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    inference_geo: Option<Cow<'a, str>>,
    // Content fields are not read here, but a duplicate is refused: the policies must scan what
    // the provider reads, and parsers disagree on which duplicate wins.
    #[serde(default)]
    #[allow(dead_code)]
    system: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    #[allow(dead_code)]
    messages: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    #[allow(dead_code)]
    input: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    #[allow(dead_code)]
    instructions: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    #[allow(dead_code)]
    prompt: Option<serde::de::IgnoredAny>,
}

/// What the gateway records (ledger, audit, messages) for a client-supplied model id. Anything not
/// shaped like a model id is replaced, so a client cannot put arbitrary text — a prompt, a secret —
/// into the store or the logs through this field. The forwarded bytes are untouched.
pub fn recordable_model(m: &str) -> String {
    let id_like =
        !m.is_empty() && m.len() <= 128 && m.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:/@[]-".contains(&b));
    if id_like {
        m.to_string()
    } else {
        INVALID_MODEL.to_string()
    }
}

/// Recorded in place of a model field that is not a model id.
pub const INVALID_MODEL: &str = "(invalid model id)";

/// Why a request body is not the JSON expected, without any of its text: serde_json's data
/// errors quote the offending value (`invalid type: string "…"`), and refusals reach the log. Only
/// messages that name our own fields (`duplicate field`, `missing field`) are kept as they are.
pub fn json_problem(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let text = e.to_string();
    match e.classify() {
        Category::Data if text.starts_with("duplicate field") || text.starts_with("missing field") => {
            format!("the request body is not a JSON object of the expected shape: {text}")
        }
        Category::Data => format!(
            "the request body is not a JSON object of the expected shape: a value of the wrong type at line {} column {}",
            e.line(),
            e.column()
        ),
        // Syntax and EOF messages name a position and what was expected, never the input.
        Category::Syntax | Category::Eof | Category::Io => format!("the request body is not valid JSON: {text}"),
    }
}

/// Parses the facts from a JSON body; refuses invalid JSON and non-objects.
pub fn parse_facts(body: &[u8]) -> Result<RequestFacts, GatewayError> {
    // serde fills a struct from a JSON array too (`["model-id", true]`): only an object is a request.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(GatewayError::downstream(
            ErrorKind::BadRequest,
            "the request body is not a JSON object; send `{\"model\": …, \"messages\": …}`",
        ));
    }
    let head: Head<'_> =
        serde_json::from_slice(body).map_err(|e| GatewayError::downstream(ErrorKind::BadRequest, json_problem(&e)))?;
    let max_tokens = [head.max_tokens, head.max_completion_tokens, head.max_output_tokens]
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_u64())
        .max();
    let choices = [head.n, head.best_of]
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_u64())
        .max()
        .unwrap_or(1);
    let tier = match head.service_tier.as_deref() {
        Some("priority") => crate::prices::Tier::Priority,
        Some("flex") => crate::prices::Tier::Flex,
        _ => crate::prices::Tier::Standard,
    };
    Ok(RequestFacts {
        model: head.model.map(|m| recordable_model(&m)),
        stream: head.stream.and_then(|v| v.as_bool()).unwrap_or(false),
        max_tokens,
        choices,
        unbounded_input: false,
        web_searches: 0,
        billing: crate::prices::Billing {
            tier,
            fast: head.speed.as_deref() == Some("fast"),
            us_only: head.inference_geo.as_deref() == Some("us"),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_from_each_family() {
        let f =
            parse_facts(br#"{"model":"claude-sonnet-4-5","max_tokens":64000,"stream":true,"messages":[]}"#).unwrap();
        assert_eq!(
            f,
            RequestFacts {
                model: Some("claude-sonnet-4-5".into()),
                stream: true,
                max_tokens: Some(64000),
                choices: 1,
                ..RequestFacts::default()
            }
        );
        let f = parse_facts(br#"{"model":"gpt-5","max_output_tokens":5,"input":"x"}"#).unwrap();
        assert_eq!(f.max_tokens, Some(5));
        assert!(!f.stream);
        let f = parse_facts(br#"{"model":"claude\u002dhaiku","messages":[{"content":"\"quoted\""}]}"#).unwrap();
        assert_eq!(f.model.as_deref(), Some("claude-haiku"), "JSON escapes are decoded");
    }

    #[test]
    fn refuses_bad_json_without_echoing_it() {
        for bad in [
            &b"{\"model\": \"secret-sauce\""[..],
            b"[\"secret-sauce\",2]",
            b"\"secret-sauce\"",
            b"{\"model\":1}",
            b"{\"stream\":true,\"secret-sauce\"}",
            b"\xff\xfe",
        ] {
            let e = parse_facts(bad).unwrap_err();
            assert_eq!(e.kind, ErrorKind::BadRequest);
            assert!(!e.message.contains("secret-sauce"), "{}", e.message);
        }
        let e = parse_facts(br#"{"model":"a","model":"b"}"#).unwrap_err();
        assert!(e.message.contains("duplicate field"), "{}", e.message);
        let e = parse_facts(br#"{"model":"a","messages":[],"messages":[{"role":"user","content":"x"}]}"#).unwrap_err();
        assert!(e.message.contains("duplicate field `messages`"), "{}", e.message);
    }

    #[test]
    fn only_id_shaped_models_are_recorded() {
        for ok in [
            "claude-opus-4-8",
            "gpt-5.2-codex",
            "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
            "claude-opus-4-8[1m]",
            "accounts/x/models/y@v2",
        ] {
            assert_eq!(recordable_model(ok), ok);
        }
        for bad in [
            "",
            "the merger code is BLUEHERON-7",
            "sk-ant-api03-secret\nnext",
            &"a".repeat(129),
            "m\u{e9}",
        ] {
            assert_eq!(recordable_model(bad), INVALID_MODEL, "{bad:?}");
        }
        let f = parse_facts(br#"{"model":"please summarise: our Q3 numbers","messages":[]}"#).unwrap();
        assert_eq!(f.model.as_deref(), Some(INVALID_MODEL));
    }

    /// Property: any byte string — random, or a valid body with bytes flipped, cut or duplicated —
    /// yields facts or a 400, never a panic.
    #[test]
    fn arbitrary_bytes_never_panic() {
        let base = br#"{"model":"claude-sonnet-4-5","max_tokens":64000,"stream":true,"system":"s\u00e9","messages":[{"role":"user","content":[{"type":"text","text":"hi \"x\""}]}]}"#;
        assert!(parse_facts(base).is_ok());
        let mut rng = crate::testing::Rng(0x9e37_79b9_7f4a_7c15);
        let mut parsed = 0;
        for round in 0..50_000 {
            let mut body = base.to_vec();
            match round % 4 {
                0 => body = (0..rng.below(64)).map(|_| rng.byte()).collect(),
                1 => {
                    for _ in 0..=rng.below(3) {
                        let i = rng.below(body.len());
                        body[i] = rng.byte();
                    }
                }
                2 => body.truncate(rng.below(body.len())),
                _ => {
                    let i = rng.below(body.len());
                    let j = i + rng.below(body.len() - i);
                    let slice = body[i..j].to_vec();
                    body.splice(i..i, slice);
                }
            }
            match parse_facts(&body) {
                Ok(_) => parsed += 1,
                Err(e) => assert_eq!(e.kind, ErrorKind::BadRequest),
            }
        }
        assert!(
            parsed > 100,
            "mutations that keep the JSON valid are still accepted ({parsed})"
        );
    }
}

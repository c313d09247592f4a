//! **inspect** — reads: the request body, bounded by `limits.max_body_bytes` and
//! `limits.body_read_timeout_secs`, and the route's endpoint. Decides: that the body is what the
//! endpoint takes (a JSON object, a multipart upload, nothing), refusing anything else (400, 413,
//! 415). Returns: the original body bytes, untouched ([`read`]), then what they say ([`extract`]):
//! the facts later stages act on and every piece of text the policies scan — from one strict
//! parse (`crate::content`), so what the gateway judges is what the provider reads.
//!
//! Uploads (`multipart/form-data`): form fields and text parts are scanned (a JSONL file's lines
//! as the requests they are); a binary part (an image, a PDF) cannot be scanned, so it is refused
//! unless `[egress] binary_uploads = "forward"`, which forwards it unread and records that.

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::config::Limits;
use crate::content::{self, BodyLimits, Extracted, Shape};
use crate::egress::{EgressConfig, Scan};
use crate::endpoint::{BodyKind, Endpoint};
use crate::error::{ErrorKind, GatewayError};
use crate::policy::segments::Origin;
use crate::stages::accept;

pub use crate::content::{INVALID_MODEL, RequestFacts, recordable_model};

/// Reads the body, bounded in size and time: exactly the bytes the client sent.
pub async fn read(body: Incoming, limits: &Limits) -> Result<Bytes, GatewayError> {
    let collected = tokio::time::timeout(
        limits.body_read_timeout,
        Limited::new(body, limits.max_body_bytes as usize).collect(),
    )
    .await
    .map_err(|_| {
        GatewayError::client(
            ErrorKind::RequestTimeout,
            format!(
                "the request body did not arrive within {} s (limits.body_read_timeout_secs); send it faster, or ask your Conduit admin to raise the limit",
                limits.body_read_timeout.as_secs()
            ),
        )
    })?;
    match collected {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(accept::too_large(limits.max_body_bytes + 1, limits))
        }
        Err(e) => Err(GatewayError::client(ErrorKind::BadRequest, "the request body could not be read").with_cause(e)),
    }
}

/// What the body of a request to `endpoint` says: facts and segments, or a refusal. With
/// `recall` (the policy runtime), a model request's parts judged before are not read again
/// (`content::Part`): the facts are the same, their verdicts are the policy runtime's.
pub fn extract<'b>(
    body: &'b [u8],
    headers: &HeaderMap,
    endpoint: Endpoint,
    egress: &EgressConfig,
    limits: &BodyLimits,
    recall: Option<&dyn content::Recall>,
) -> Result<Extracted<'b>, GatewayError> {
    let refused = |r: content::Refusal| {
        let kind = if r.too_large {
            ErrorKind::PayloadTooLarge
        } else {
            ErrorKind::BadRequest
        };
        GatewayError::client(kind, r.message)
    };
    match endpoint.body() {
        BodyKind::Json(shape) => {
            if body.is_empty() {
                return Err(GatewayError::client(
                    ErrorKind::BadRequest,
                    "this endpoint takes a JSON body, and the request has none",
                ));
            }
            check_content_type(headers)?;
            content::json_recalling(body, shape, limits, recall).map_err(refused)
        }
        BodyKind::OptionalJson if body.iter().all(u8::is_ascii_whitespace) => Ok(Extracted::default()),
        BodyKind::OptionalJson => {
            check_content_type(headers)?;
            content::json(body, Shape::Other, limits).map_err(refused)
        }
        BodyKind::Multipart => upload(body, headers, egress, limits),
        BodyKind::Declared => {
            let Endpoint::Passthrough(i) = endpoint else {
                return Ok(Extracted::default());
            };
            match egress.passthrough.get(i).map(|p| p.scan) {
                Some(Scan::Json) if body.is_empty() => Ok(Extracted::default()),
                Some(Scan::Json) => content::json(body, Shape::Other, limits).map_err(refused),
                Some(Scan::Text) => Ok(Extracted {
                    segments: content::text(body, "body", Origin::Field, limits).map_err(refused)?,
                    ..Extracted::default()
                }),
                Some(Scan::Opaque) | None => Ok(Extracted::default()),
            }
        }
    }
}

/// A `multipart/form-data` upload (module docs).
fn upload<'b>(
    body: &'b [u8],
    headers: &HeaderMap,
    egress: &EgressConfig,
    limits: &BodyLimits,
) -> Result<Extracted<'b>, GatewayError> {
    let bad = |m: String| GatewayError::client(ErrorKind::BadRequest, m);
    let ct = headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let boundary =
        content::multipart::boundary(ct).map_err(|m| GatewayError::client(ErrorKind::UnsupportedMediaType, m))?;
    let parts = content::multipart::parse(body, &boundary).map_err(bad)?;
    let mut out = Extracted {
        purpose: parts
            .iter()
            .find(|p| p.name == "purpose" && p.filename.is_none())
            .map(|p| String::from_utf8_lossy(p.body).trim().to_string()),
        ..Extracted::default()
    };
    let purpose = out.purpose.clone();
    for part in &parts {
        let name = {
            let mut n = String::from("file");
            content::push_key(&mut n, &part.name);
            n
        };
        let refused = |r: content::Refusal| {
            GatewayError::client(
                if r.too_large {
                    ErrorKind::PayloadTooLarge
                } else {
                    ErrorKind::BadRequest
                },
                format!("{name}: {}", r.message),
            )
        };
        // The part's header lines (name, filename, type) reach the provider too.
        out.segments.push(crate::policy::segments::Segment {
            path: format!("{name}.head"),
            text: part.head.into(),
            origin: Origin::File,
        });
        // A batch file's every part but `purpose` is its requests, whatever it says it is: a
        // batch runs what the provider reads, and each line must be bounded.
        if purpose.as_deref() == Some("batch") && part.name != "purpose" {
            let lines = content::jsonl_batch(part.body, &name, limits).map_err(refused)?;
            if lines.requests.is_empty() {
                return Err(bad(format!(
                    "the batch file in part {:?} holds no request; a batch input file is JSONL, one request per line",
                    part.name
                )));
            }
            out.segments.extend(lines.segments);
            out.requests.extend(lines.requests);
            out.facts.unbounded_input |= lines.facts.unbounded_input;
            continue;
        }
        if !content::multipart::is_text(part) {
            if egress.forward_binary_uploads {
                out.opaque_bytes += part.body.len() as u64;
                continue;
            }
            return Err(GatewayError::client(
                ErrorKind::UnsupportedMediaType,
                format!(
                    "the upload's part {:?} is binary ({}), which Conduit cannot scan, so nothing was sent; an operator can forward binary uploads unscanned with [egress] binary_uploads = \"forward\"",
                    part.name,
                    part.content_type.as_deref().unwrap_or("no media type")
                ),
            ));
        }
        let origin = if part.filename.is_some() {
            Origin::File
        } else {
            Origin::Field
        };
        out.segments
            .extend(content::text(part.body, &name, origin, limits).map_err(refused)?);
    }
    if out.segments.len() > limits.max_segments {
        return Err(GatewayError::client(
            ErrorKind::PayloadTooLarge,
            "the upload holds more separate pieces of text than limits.max_text_values",
        ));
    }
    Ok(out)
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
        other => Err(GatewayError::client(
            ErrorKind::UnsupportedMediaType,
            format!(
                "this endpoint takes a JSON body, but content-type is {}; send `content-type: application/json`",
                other.map(|v| format!("{v:?}")).unwrap_or_else(|| "missing".into())
            ),
        )),
    }
}

/// The facts of a JSON request body (tests, the CLI's `policy test`): what [`extract`] finds.
pub fn parse_facts(body: &[u8]) -> Result<RequestFacts, GatewayError> {
    content::json(body, Shape::Request, &BodyLimits::default())
        .map(|e| e.facts)
        .map_err(|r| GatewayError::client(ErrorKind::BadRequest, r.message))
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
                bytes: 76,
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
        assert!(e.message.contains("repeats a key"), "{}", e.message);
        let e = parse_facts(br#"{"model":"a","messages":[],"messages":[{"role":"user","content":"x"}]}"#).unwrap_err();
        assert!(e.message.contains("repeats a key"), "{}", e.message);
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

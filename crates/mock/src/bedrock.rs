//! The mock's AWS Bedrock: `invoke`, `invoke-with-response-stream` (real event-stream frames,
//! CRC'd, base64 chunks carrying Anthropic events and `amazon-bedrock-invocationMetrics`),
//! `converse`, `converse-stream`, and the control-plane listings — behind a SigV4 check written
//! from AWS's specification, independently of the `aws-sigv4` crate the gateway signs with, so a
//! signing mistake in the gateway fails here as it would at AWS.

use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::payload::{self, Family, Reply, Usage};
use conduit_wire::eventstream;

/// A Bedrock operation the mock serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `POST /model/{id}/{invoke|invoke-with-response-stream|converse|converse-stream}`.
    Runtime {
        /// Decoded model id.
        model: String,
        /// Operation name.
        operation: String,
    },
    /// `GET /inference-profiles`, `/foundation-models`.
    Listing(String),
}

/// Recognises a Bedrock path.
pub fn classify(path: &str) -> Option<Op> {
    if let Some(rest) = path.strip_prefix("/model/") {
        let (model, operation) = rest.split_once('/')?;
        return Some(Op::Runtime {
            model: conduit_core::percent::decode(model),
            operation: operation.to_string(),
        });
    }
    (path.starts_with("/inference-profiles") || path.starts_with("/foundation-models"))
        .then(|| Op::Listing(path.to_string()))
}

/// Checks the request's SigV4 signature against `credentials` (`AKID:SECRET`) for `region`, or a
/// Bedrock API key (`Authorization: Bearer <credentials>` when it has no `:`). `Err` carries the
/// AWS-style reason.
pub fn verify(
    method: &Method,
    raw_path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
    credentials: &str,
    region: &str,
) -> Result<(), String> {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .ok_or("Missing Authentication Token")?;
    let Some((akid, secret)) = credentials.split_once(':') else {
        return (auth == format!("Bearer {credentials}"))
            .then_some(())
            .ok_or_else(|| "The security token included in the request is invalid.".to_string());
    };
    let secret = secret.split(':').next().unwrap_or(secret);
    let rest = auth
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or("Authorization header requires AWS4-HMAC-SHA256")?;
    let field = |name: &str| {
        rest.split(',')
            .map(str::trim)
            .find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
            .ok_or(format!("Authorization header requires '{name}' parameter"))
    };
    let credential = field("Credential")?;
    let signed_headers = field("SignedHeaders")?;
    let signature = field("Signature")?;
    let scope: Vec<&str> = credential.split('/').collect();
    if scope.len() != 5 || scope[4] != "aws4_request" {
        return Err(format!("Credential should be scoped to a valid region: {credential}"));
    }
    if scope[0] != akid {
        return Err("The security token included in the request is invalid.".into());
    }
    if scope[2] != region || scope[3] != "bedrock" {
        return Err(format!(
            "Credential should be scoped to correct service and region: expected {region}/bedrock, got {}/{}",
            scope[2], scope[3]
        ));
    }
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let amz_date = header("x-amz-date").ok_or("Missing x-amz-date")?;
    if !amz_date.starts_with(scope[1]) {
        return Err("Date in Credential scope does not match x-amz-date".into());
    }
    let signed: Vec<&str> = signed_headers.split(';').collect();
    for required in ["host", "x-amz-date"] {
        if !signed.contains(&required) {
            return Err(format!("'{required}' must be a signed header"));
        }
    }
    let body_hash = conduit_core::hex::encode(&Sha256::digest(body));
    if let Some(claimed) = header("x-amz-content-sha256")
        && claimed != body_hash
    {
        return Err("The provided 'x-amz-content-sha256' header does not match what was computed.".into());
    }
    // The canonical request, from the request as received.
    let mut canonical = format!("{method}\n{}\n{}\n", canonical_path(raw_path), canonical_query(query));
    for name in &signed {
        let values: Vec<String> = headers
            .get_all(*name)
            .iter()
            .map(|v| {
                v.to_str()
                    .unwrap_or("")
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        if values.is_empty() {
            return Err(format!("signed header '{name}' is missing from the request"));
        }
        canonical.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    canonical.push_str(&format!("\n{signed_headers}\n{body_hash}"));
    let scope_text = scope[1..4].join("/") + "/aws4_request";
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope_text}\n{}",
        conduit_core::hex::encode(&Sha256::digest(canonical.as_bytes()))
    );
    let mut key = hmac(format!("AWS4{secret}").as_bytes(), scope[1].as_bytes());
    for part in [scope[2], scope[3], "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    let expected = conduit_core::hex::encode(&hmac(&key, to_sign.as_bytes()));
    if expected == signature {
        Ok(())
    } else {
        Err("The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.".into())
    }
}

/// The reply for a Bedrock operation (after authentication).
pub fn reply(op: &Op, body: &[u8], mode: &str, usage_max: bool) -> Reply {
    if let Some(code) = mode.strip_prefix("status-").and_then(|c| c.parse::<u16>().ok()) {
        return error(
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "mock upstream error",
        );
    }
    let (model, operation) = match op {
        Op::Listing(path) => {
            let list = if path.starts_with("/inference-profiles") {
                json!({"inferenceProfileSummaries": [{"inferenceProfileId": "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
                    "inferenceProfileName": "US Claude Sonnet 4.5", "status": "ACTIVE", "type": "SYSTEM_DEFINED",
                    "models": [{"modelArn": "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-sonnet-4-5-20250929-v1:0"}]}]})
            } else {
                json!({"modelSummaries": [{"modelId": "anthropic.claude-sonnet-4-5-20250929-v1:0", "providerName": "Anthropic"}]})
            };
            return json_reply(list, Usage::default());
        }
        Op::Runtime { model, operation } => (model.as_str(), operation.as_str()),
    };
    let req: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if operation == "count-tokens" {
        // Foundation model ids only; the InvokeModel body base64 in input.invokeModel.body.
        if !model.starts_with("anthropic.") {
            return error(
                StatusCode::BAD_REQUEST,
                "The provided model doesn't support counting tokens.",
            );
        }
        let inner = req["input"]["invokeModel"]["body"]
            .as_str()
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok().map(|v| (b.len(), v)));
        return match inner {
            Some((len, v))
                if v.get("model").is_none() && v["anthropic_version"].is_string() && v["max_tokens"].is_u64() =>
            {
                json_reply(json!({"inputTokens": (len / 4).max(1)}), Usage::default())
            }
            _ => error(
                StatusCode::BAD_REQUEST,
                "Malformed input request: input.invokeModel.body is not a valid InvokeModel body",
            ),
        };
    }
    let invoke = operation.starts_with("invoke");
    if invoke {
        if req.get("model").is_some() {
            return error(
                StatusCode::BAD_REQUEST,
                "Malformed input request: #: extraneous key [model] is not permitted, please reformat your input and try again.",
            );
        }
        if req.get("stream").is_some() {
            return error(
                StatusCode::BAD_REQUEST,
                "Malformed input request: #: extraneous key [stream] is not permitted, please reformat your input and try again.",
            );
        }
        if !req["anthropic_version"]
            .as_str()
            .is_some_and(|v| v.starts_with("bedrock-"))
        {
            return error(
                StatusCode::BAD_REQUEST,
                "Malformed input request: #: required key [anthropic_version] not found",
            );
        }
    }
    let max_tokens = req["max_tokens"]
        .as_u64()
        .or(req["inferenceConfig"]["maxTokens"].as_u64());
    let usage = {
        let mut u = Usage {
            input: (body.len() as u64 / 4).max(1),
            output: 15,
            ..Usage::default()
        };
        if usage_max {
            u = Usage {
                input: body.len() as u64,
                output: max_tokens.unwrap_or(15),
                ..Usage::default()
            };
        } else if body.windows(15).any(|w| w == b"\"cache_control\"") {
            u.cache_read = u.input * 6 / 10;
            u.cache_write = u.input / 10;
            u.input -= u.cache_read + u.cache_write;
        }
        u
    };
    match operation {
        "invoke" => {
            let anthropic = payload::reply(&Method::POST, "/v1/messages", &HeaderMap::new(), br#"{}"#, "ok", false);
            let mut v: Value = serde_json::from_slice(&anthropic.chunks.concat()).unwrap_or(Value::Null);
            v["model"] = json!(model);
            v["usage"] = json!({"input_tokens": usage.input, "cache_creation_input_tokens": usage.cache_write,
                                "cache_read_input_tokens": usage.cache_read, "output_tokens": usage.output});
            json_reply(v, usage)
        }
        "invoke-with-response-stream" => {
            let sse = payload::reply(
                &Method::POST,
                "/v1/messages",
                &HeaderMap::new(),
                br#"{"stream":true}"#,
                "ok",
                false,
            );
            let mut chunks = Vec::new();
            for event in &sse.chunks {
                let text = String::from_utf8_lossy(event);
                let Some(data) = text.lines().find_map(|l| l.strip_prefix("data: ")) else {
                    continue;
                };
                let mut v: Value = serde_json::from_str(data).unwrap_or(Value::Null);
                match v["type"].as_str() {
                    Some("message_start") => {
                        v["message"]["model"] = json!(model);
                        v["message"]["usage"] = json!({"input_tokens": usage.input, "cache_creation_input_tokens": usage.cache_write,
                            "cache_read_input_tokens": usage.cache_read, "output_tokens": 1});
                    }
                    Some("message_delta") => v["usage"] = json!({"output_tokens": usage.output}),
                    Some("message_stop") => {
                        v["amazon-bedrock-invocationMetrics"] = json!({"inputTokenCount": usage.input,
                            "outputTokenCount": usage.output, "invocationLatency": 412, "firstByteLatency": 198,
                            "cacheReadInputTokenCount": usage.cache_read, "cacheWriteInputTokenCount": usage.cache_write});
                    }
                    _ => {}
                }
                chunks.push(chunk_frame(&v));
            }
            stream_reply(chunks, usage)
        }
        "converse" => json_reply(
            json!({"output": {"message": {"role": "assistant", "content": [{"text": "Hello! This is the Conduit mock upstream: your request arrived intact."}]}},
                   "stopReason": "end_turn", "metrics": {"latencyMs": 412},
                   "usage": converse_usage(usage)}),
            usage,
        ),
        "converse-stream" => {
            let mut frames = vec![event_frame("messageStart", &json!({"role": "assistant"}))];
            for piece in ["Hello!", " This is", " the Conduit", " mock upstream."] {
                frames.push(event_frame(
                    "contentBlockDelta",
                    &json!({"contentBlockIndex": 0, "delta": {"text": piece}}),
                ));
            }
            frames.push(event_frame("contentBlockStop", &json!({"contentBlockIndex": 0})));
            frames.push(event_frame("messageStop", &json!({"stopReason": "end_turn"})));
            frames.push(event_frame(
                "metadata",
                &json!({"usage": converse_usage(usage), "metrics": {"latencyMs": 412}}),
            ));
            stream_reply(frames, usage)
        }
        _ => error(StatusCode::NOT_FOUND, "Unknown operation"),
    }
}

/// The exception frame Bedrock sends when a stream fails after it started.
pub fn midstream_exception() -> Bytes {
    Bytes::from(eventstream::encode(
        &[
            (":message-type", "exception"),
            (":exception-type", "modelStreamErrorException"),
            (":content-type", "application/json"),
        ],
        br#"{"message":"Model stream error"}"#,
    ))
}

fn converse_usage(u: Usage) -> Value {
    json!({"inputTokens": u.input, "outputTokens": u.output, "totalTokens": u.input + u.output + u.cache_read + u.cache_write,
           "cacheReadInputTokens": u.cache_read, "cacheWriteInputTokens": u.cache_write})
}

fn chunk_frame(event: &Value) -> Bytes {
    let b64 = base64::engine::general_purpose::STANDARD.encode(event.to_string());
    let payload = json!({"bytes": b64, "p": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123"});
    Bytes::from(eventstream::encode(
        &[
            (":event-type", "chunk"),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        payload.to_string().as_bytes(),
    ))
}

fn event_frame(kind: &str, v: &Value) -> Bytes {
    Bytes::from(eventstream::encode(
        &[
            (":event-type", kind),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        v.to_string().as_bytes(),
    ))
}

fn json_reply(v: Value, usage: Usage) -> Reply {
    Reply {
        family: Family::Bedrock,
        status: StatusCode::OK,
        content_type: "application/json",
        streaming: false,
        chunks: vec![Bytes::from(v.to_string())],
        usage,
    }
}

fn stream_reply(chunks: Vec<Bytes>, usage: Usage) -> Reply {
    Reply {
        family: Family::Bedrock,
        status: StatusCode::OK,
        content_type: "application/vnd.amazon.eventstream",
        streaming: true,
        chunks,
        usage,
    }
}

/// An AWS JSON error (`x-amzn-errortype` is added by the server from the body's `__type`).
pub fn error(status: StatusCode, message: &str) -> Reply {
    let kind = conduit_wire::error_shape::aws_error_type(status);
    Reply {
        family: Family::Bedrock,
        status,
        content_type: "application/json",
        streaming: false,
        chunks: vec![Bytes::from(json!({"message": message, "__type": kind}).to_string())],
        usage: Usage::default(),
    }
}

/// AWS: each path byte but unreserved ones and `/` encoded — so an already-encoded segment is
/// encoded again (`%3A` → `%253A`), the "double encoding" non-S3 services use.
fn canonical_path(raw: &str) -> String {
    conduit_core::percent::encode_keeping(raw, b"/")
}

/// AWS: parameters sorted by name, names and values decoded then encoded once.
fn canonical_query(query: Option<&str>) -> String {
    let enc = |s: &str| conduit_core::percent::encode(&conduit_core::percent::decode(s));
    let mut pairs: Vec<(String, String)> = query
        .unwrap_or("")
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (enc(k), enc(v))
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn hmac(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(msg);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's documented example (IAM `ListUsers`, from the SigV4 guide): the verifier accepts it,
    /// and rejects it with one byte of the body or one signed header changed.
    #[test]
    fn verifies_what_the_gateway_signs_and_rejects_tampering() {
        let cred =
            conduit_wire::sigv4::AwsCredential::parse("AKIDEXAMPLE:wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY").unwrap();
        let uri: http::Uri = "http://127.0.0.1:9/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke"
            .parse()
            .unwrap();
        let body = br#"{"anthropic_version":"bedrock-2023-05-31","max_tokens":5,"messages":[]}"#;
        let signed = conduit_wire::sigv4::sign_request(
            &cred,
            "us-east-1",
            &Method::POST,
            &uri,
            &[("content-type", "application/json")],
            body,
            std::time::SystemTime::now(),
        )
        .unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("host", "127.0.0.1:9".parse().unwrap());
        headers.insert("content-type", "application/json".parse().unwrap());
        for (n, v) in signed {
            headers.insert(n, v);
        }
        let creds = "AKIDEXAMPLE:wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
        verify(&Method::POST, uri.path(), None, &headers, body, creds, "us-east-1").unwrap();
        let mut tampered = body.to_vec();
        tampered[30] ^= 1;
        assert!(verify(&Method::POST, uri.path(), None, &headers, &tampered, creds, "us-east-1").is_err());
        assert!(
            verify(
                &Method::POST,
                uri.path(),
                None,
                &headers,
                body,
                "AKIDEXAMPLE:other",
                "us-east-1"
            )
            .is_err()
        );
        assert!(verify(&Method::POST, uri.path(), None, &headers, body, creds, "eu-west-1").is_err());
        headers.insert("content-type", "text/plain".parse().unwrap());
        assert!(verify(&Method::POST, uri.path(), None, &headers, body, creds, "us-east-1").is_err());
    }
}

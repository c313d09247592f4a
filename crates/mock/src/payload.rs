//! Response bodies of the mock: the exact event sequences the real APIs send, with usage.

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use serde_json::{Value, json};

/// Which API shape a reply takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Anthropic Messages.
    Anthropic,
    /// OpenAI chat completions.
    OpenAiChat,
    /// OpenAI Responses.
    OpenAiResponses,
    /// Anything else OpenAI-shaped (embeddings, models).
    OpenAiOther,
    /// AWS Bedrock (event-stream or JSON).
    Bedrock,
}

pub use conduit_wire::usage::Usage;

/// A reply: status, content type, and body chunks (one per SSE event when streaming).
#[derive(Debug, Clone)]
pub struct Reply {
    /// Shape.
    pub family: Family,
    /// Status.
    pub status: StatusCode,
    /// Content type.
    pub content_type: &'static str,
    /// SSE or not.
    pub streaming: bool,
    /// Body chunks.
    pub chunks: Vec<Bytes>,
    /// The usage reported in them.
    pub usage: Usage,
}

const TEXT: &[&str] = &[
    "Hello",
    "!",
    " This",
    " is",
    " the",
    " Conduit",
    " mock",
    " upstream",
    ":",
    " your",
    " request",
    " arrived",
    " intact",
    ".",
];

/// Builds the reply for a request.
pub fn reply(method: &Method, path: &str, headers: &HeaderMap, body: &[u8], mode: &str, usage_max: bool) -> Reply {
    let req: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let anthropic_headers = headers.contains_key("anthropic-version") || headers.contains_key("x-api-key");
    let family = match path {
        "/v1/chat/completions" => Family::OpenAiChat,
        "/v1/responses" => Family::OpenAiResponses,
        p if p.starts_with("/v1/messages") || p == "/v1/complete" => Family::Anthropic,
        _ if anthropic_headers => Family::Anthropic,
        _ => Family::OpenAiOther,
    };
    if let Some(code) = mode.strip_prefix("status-").and_then(|c| c.parse::<u16>().ok()) {
        return error_reply(
            family,
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        );
    }
    let model = req["model"].as_str().unwrap_or("mock-model").to_string();
    let stream = req["stream"].as_bool().unwrap_or(false);
    let max_tokens = ["max_tokens", "max_completion_tokens", "max_output_tokens"]
        .iter()
        .find_map(|k| req[*k].as_u64());
    let usage = usage_for(family, body, &req, if usage_max { max_tokens } else { None });

    match (method, path) {
        (&Method::POST, "/v1/messages/count_tokens") => json_reply(
            family,
            json!({"input_tokens": usage.input + usage.cache_read + usage.cache_write}),
            usage,
        ),
        (&Method::POST, "/v1/messages") if stream => anthropic_sse(&model, usage),
        (&Method::POST, "/v1/messages") => json_reply(family, anthropic_message(&model, usage), usage),
        (&Method::POST, "/v1/chat/completions") if stream => openai_chat_sse(
            &model,
            usage,
            req["stream_options"]["include_usage"].as_bool().unwrap_or(false),
        ),
        (&Method::POST, "/v1/chat/completions") => json_reply(family, openai_chat(&model, usage), usage),
        (&Method::POST, "/v1/responses") if stream => responses_sse(&model, usage),
        (&Method::POST, "/v1/responses") => json_reply(family, response_object(&model, usage, "completed"), usage),
        (&Method::POST, "/v1/embeddings") => json_reply(
            family,
            json!({"object": "list", "model": model,
                   "data": [{"object": "embedding", "index": 0, "embedding": [0.0125, -0.25, 0.5, 0.0]}],
                   "usage": {"prompt_tokens": usage.input, "total_tokens": usage.input}}),
            usage,
        ),
        (&Method::GET, p) if p.starts_with("/v1/models") => {
            let models = if family == Family::Anthropic {
                json!({"data": [{"type": "model", "id": "claude-sonnet-4-5", "display_name": "Claude Sonnet 4.5", "created_at": "2025-09-29T00:00:00Z"}],
                       "has_more": false, "first_id": "claude-sonnet-4-5", "last_id": "claude-sonnet-4-5"})
            } else {
                json!({"object": "list", "data": [{"id": "gpt-5", "object": "model", "created": 1_754_000_000, "owned_by": "openai"}]})
            };
            json_reply(family, models, Usage::default())
        }
        // Stored objects: uploads, batches (enough for the gateway's bookkeeping and the tests).
        (&Method::POST, "/v1/files") => {
            let id = format!(
                "{}{}",
                if anthropic_headers { "file_mock" } else { "file-mock" },
                short_hash(body)
            );
            json_reply(
                family,
                json!({"id": id, "object": "file", "type": "file", "bytes": body.len(), "status": "processed"}),
                Usage::default(),
            )
        }
        (&Method::POST, "/v1/batches") => json_reply(
            family,
            json!({"id": format!("batch_mock{}", short_hash(body)), "object": "batch", "status": "validating",
                   "input_file_id": req["input_file_id"], "endpoint": req["endpoint"]}),
            Usage::default(),
        ),
        (&Method::POST, "/v1/messages/batches") => json_reply(
            family,
            json!({"id": format!("msgbatch_mock{}", short_hash(body)), "type": "message_batch", "processing_status": "in_progress"}),
            Usage::default(),
        ),
        (&Method::GET, p)
            if p.starts_with("/v1/files") || p.starts_with("/v1/batches") || p.starts_with("/v1/messages/batches") =>
        {
            json_reply(
                family,
                json!({"object": "list", "data": [], "has_more": false}),
                Usage::default(),
            )
        }
        _ => error_reply(family, StatusCode::NOT_FOUND),
    }
}

/// A short, stable id fragment for a body.
fn short_hash(body: &[u8]) -> String {
    use sha2::Digest;
    conduit_core::hex::encode(&sha2::Sha256::digest(body)[..6])
}

/// Deterministic usage: ~4 bytes per token; cached input where the request asks for caching.
fn usage_for(family: Family, body: &[u8], req: &Value, output_override: Option<u64>) -> Usage {
    if let Some(max) = output_override {
        // `x-mock-usage: max`: the gateway's worst case exactly (a token per body byte, no cache).
        return Usage {
            input: body.len() as u64,
            output: max,
            cache_read: 0,
            cache_write: 0,
            ..Usage::default()
        };
    }
    let total_in = (body.len() as u64 / 4).max(1);
    let output = TEXT.len() as u64 + 1;
    let cached = match family {
        Family::Anthropic if contains(body, b"\"cache_control\"") => true,
        Family::OpenAiResponses | Family::OpenAiChat if req["prompt_cache_key"].is_string() => true,
        _ => false,
    };
    if !cached {
        return Usage {
            input: total_in,
            output,
            cache_read: 0,
            cache_write: 0,
            ..Usage::default()
        };
    }
    let cache_read = total_in * 6 / 10;
    let cache_write = if family == Family::Anthropic { total_in / 10 } else { 0 };
    Usage {
        input: total_in - cache_read - cache_write,
        output,
        cache_read,
        cache_write,
        ..Usage::default()
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn full_text() -> String {
    TEXT.concat()
}

fn json_reply(family: Family, v: Value, usage: Usage) -> Reply {
    Reply {
        family,
        status: StatusCode::OK,
        content_type: "application/json",
        streaming: false,
        chunks: vec![Bytes::from(v.to_string())],
        usage,
    }
}

fn sse(family: Family, events: Vec<(Option<&str>, Value)>, done: bool, usage: Usage) -> Reply {
    let mut chunks: Vec<Bytes> = events
        .into_iter()
        .map(|(name, data)| match name {
            Some(n) => Bytes::from(format!("event: {n}\ndata: {data}\n\n")),
            None => Bytes::from(format!("data: {data}\n\n")),
        })
        .collect();
    if done {
        chunks.push(Bytes::from_static(b"data: [DONE]\n\n"));
    }
    Reply {
        family,
        status: StatusCode::OK,
        content_type: "text/event-stream; charset=utf-8",
        streaming: true,
        chunks,
        usage,
    }
}

fn anthropic_usage(u: Usage) -> Value {
    json!({"input_tokens": u.input, "cache_creation_input_tokens": u.cache_write,
           "cache_read_input_tokens": u.cache_read, "output_tokens": u.output})
}

fn anthropic_message(model: &str, u: Usage) -> Value {
    json!({"id": "msg_mock_01", "type": "message", "role": "assistant", "model": model,
           "content": [{"type": "text", "text": full_text()}],
           "stop_reason": "end_turn", "stop_sequence": null, "usage": anthropic_usage(u)})
}

fn anthropic_sse(model: &str, u: Usage) -> Reply {
    let mut start_usage = anthropic_usage(u);
    start_usage["output_tokens"] = json!(1);
    let mut events = vec![
        (
            Some("message_start"),
            json!({"type": "message_start", "message": {
            "id": "msg_mock_01", "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": null, "stop_sequence": null, "usage": start_usage}}),
        ),
        (
            Some("content_block_start"),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        (Some("ping"), json!({"type": "ping"})),
    ];
    for piece in TEXT {
        events.push((
            Some("content_block_delta"),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}),
        ));
    }
    events.push((
        Some("content_block_stop"),
        json!({"type": "content_block_stop", "index": 0}),
    ));
    events.push((Some("message_delta"), json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
        "usage": {"input_tokens": u.input, "cache_creation_input_tokens": u.cache_write, "cache_read_input_tokens": u.cache_read, "output_tokens": u.output}})));
    events.push((Some("message_stop"), json!({"type": "message_stop"})));
    sse(Family::Anthropic, events, false, u)
}

fn openai_usage(u: Usage) -> Value {
    let prompt = u.input + u.cache_read;
    json!({"prompt_tokens": prompt, "completion_tokens": u.output, "total_tokens": prompt + u.output,
           "prompt_tokens_details": {"cached_tokens": u.cache_read}, "completion_tokens_details": {"reasoning_tokens": 0}})
}

fn openai_chat(model: &str, u: Usage) -> Value {
    json!({"id": "chatcmpl-mock01", "object": "chat.completion", "created": 1_795_000_000, "model": model,
           "choices": [{"index": 0, "message": {"role": "assistant", "content": full_text()}, "finish_reason": "stop"}],
           "usage": openai_usage(u)})
}

fn openai_chat_sse(model: &str, u: Usage, include_usage: bool) -> Reply {
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-mock01", "object": "chat.completion.chunk", "created": 1_795_000_000, "model": model,
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let mut events = vec![(None, chunk(json!({"role": "assistant", "content": ""}), Value::Null))];
    for piece in TEXT {
        events.push((None, chunk(json!({"content": piece}), Value::Null)));
    }
    events.push((None, chunk(json!({}), json!("stop"))));
    if include_usage {
        events.push((
            None,
            json!({"id": "chatcmpl-mock01", "object": "chat.completion.chunk", "created": 1_795_000_000,
            "model": model, "choices": [], "usage": openai_usage(u)}),
        ));
    }
    sse(Family::OpenAiChat, events, true, u)
}

fn response_object(model: &str, u: Usage, status: &str) -> Value {
    let done = status == "completed";
    json!({"id": "resp_mock01", "object": "response", "created_at": 1_795_000_000, "status": status, "model": model,
           "output": if done { json!([message_item("completed")]) } else { json!([]) },
           "usage": if done { json!({"input_tokens": u.input + u.cache_read, "input_tokens_details": {"cached_tokens": u.cache_read},
                "output_tokens": u.output, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": u.input + u.cache_read + u.output}) } else { Value::Null }})
}

fn message_item(status: &str) -> Value {
    let content = if status == "completed" {
        json!([{"type": "output_text", "text": full_text(), "annotations": []}])
    } else {
        json!([])
    };
    json!({"id": "msg_mock01", "type": "message", "status": status, "role": "assistant", "content": content})
}

fn responses_sse(model: &str, u: Usage) -> Reply {
    let mut seq = 0u64;
    let mut ev = |name: &'static str, mut v: Value| {
        v["type"] = json!(name);
        v["sequence_number"] = json!(seq);
        seq += 1;
        (Some(name), v)
    };
    let text = full_text();
    let mut events = vec![
        ev(
            "response.created",
            json!({"response": response_object(model, u, "in_progress")}),
        ),
        ev(
            "response.in_progress",
            json!({"response": response_object(model, u, "in_progress")}),
        ),
        ev(
            "response.output_item.added",
            json!({"output_index": 0, "item": message_item("in_progress")}),
        ),
        ev(
            "response.content_part.added",
            json!({"item_id": "msg_mock01", "output_index": 0, "content_index": 0,
            "part": {"type": "output_text", "text": "", "annotations": []}}),
        ),
    ];
    for piece in TEXT {
        events.push(ev(
            "response.output_text.delta",
            json!({"item_id": "msg_mock01", "output_index": 0, "content_index": 0, "delta": piece}),
        ));
    }
    events.push(ev(
        "response.output_text.done",
        json!({"item_id": "msg_mock01", "output_index": 0, "content_index": 0, "text": text}),
    ));
    events.push(ev(
        "response.content_part.done",
        json!({"item_id": "msg_mock01", "output_index": 0, "content_index": 0,
        "part": {"type": "output_text", "text": text, "annotations": []}}),
    ));
    events.push(ev(
        "response.output_item.done",
        json!({"output_index": 0, "item": message_item("completed")}),
    ));
    events.push(ev(
        "response.completed",
        json!({"response": response_object(model, u, "completed")}),
    ));
    sse(Family::OpenAiResponses, events, false, u)
}

/// The error event a provider sends when a stream fails after it started.
pub fn midstream_error(family: Family) -> Bytes {
    match family {
        Family::Bedrock => super::bedrock::midstream_exception(),
        Family::Anthropic => Bytes::from_static(
            b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
        ),
        _ => Bytes::from_static(b"data: {\"error\":{\"message\":\"The server had an error while processing your request.\",\"type\":\"server_error\"}}\n\n"),
    }
}

fn error_reply(family: Family, status: StatusCode) -> Reply {
    let (a_type, o_type) = match status.as_u16() {
        400 => ("invalid_request_error", "invalid_request_error"),
        401 => ("authentication_error", "invalid_request_error"),
        403 => ("permission_error", "invalid_request_error"),
        404 => ("not_found_error", "invalid_request_error"),
        429 => ("rate_limit_error", "rate_limit_exceeded"),
        529 => ("overloaded_error", "server_error"),
        _ => ("api_error", "server_error"),
    };
    let message = format!("mock upstream answered {status}");
    let body = match family {
        Family::Bedrock => return super::bedrock::error(status, &message),
        Family::Anthropic => {
            json!({"type": "error", "error": {"type": a_type, "message": message}})
        }
        _ => json!({"error": {"message": message, "type": o_type, "param": null, "code": null}}),
    };
    Reply {
        family,
        status,
        content_type: "application/json",
        streaming: false,
        chunks: vec![Bytes::from(body.to_string())],
        usage: Usage::default(),
    }
}

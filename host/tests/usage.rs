//! The usage tap against the mock providers' replies: every family's usage is read as reported,
//! whatever the frame boundaries and the content encoding.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use conduit_gateway::mock::payload;
use conduit_gateway::protocol::Protocol;
use conduit_gateway::usage::{MAX_LINE, Observed, Usage, UsageTap};
use http::{HeaderMap, Method};

/// The mock's reply for a request, and the usage it says it reported.
fn mock_reply(path: &str, body: &str) -> (Vec<u8>, bool, Usage) {
    let mut h = HeaderMap::new();
    h.insert("anthropic-version", "2023-06-01".parse().unwrap());
    let r = payload::reply(&Method::POST, path, &h, body.as_bytes(), "ok", false);
    let u = Usage {
        input: r.usage.input,
        output: r.usage.output,
        cache_read: r.usage.cache_read,
        cache_write: r.usage.cache_write,
        ..Usage::default()
    };
    (r.chunks.concat(), r.streaming, u)
}

fn tap_all(protocol: Protocol, sse: bool, encoding: Option<&str>, chunks: &[&[u8]]) -> Observed {
    let ct = if sse {
        "text/event-stream; charset=utf-8"
    } else {
        "application/json"
    };
    let mut tap = UsageTap::new(protocol, Some(ct), encoding);
    for c in chunks {
        tap.observe(c);
    }
    tap.finish()
}

const CASES: &[(Protocol, &str, &str)] = &[
    (
        Protocol::Anthropic,
        "/v1/messages",
        r#"{"model":"claude-sonnet-4-5","stream":true,"max_tokens":64,"system":[{"type":"text","text":"x","cache_control":{"type":"ephemeral"}}],"messages":[]}"#,
    ),
    (
        Protocol::Anthropic,
        "/v1/messages",
        r#"{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"hello there"}]}"#,
    ),
    (
        Protocol::OpenAi,
        "/v1/chat/completions",
        r#"{"model":"gpt-5","stream":true,"stream_options":{"include_usage":true},"prompt_cache_key":"k","messages":[]}"#,
    ),
    (
        Protocol::OpenAi,
        "/v1/chat/completions",
        r#"{"model":"gpt-5","messages":[{"role":"user","content":"hi"}]}"#,
    ),
    (
        Protocol::OpenAi,
        "/v1/responses",
        r#"{"model":"gpt-5-codex","stream":true,"prompt_cache_key":"k","input":"a longer input to count"}"#,
    ),
    (Protocol::OpenAi, "/v1/responses", r#"{"model":"gpt-5","input":"hi"}"#),
];

#[test]
fn reads_the_usage_each_family_reports() {
    for (protocol, path, body) in CASES {
        let (bytes, sse, expected) = mock_reply(path, body);
        let seen = tap_all(*protocol, sse, None, &[&bytes]);
        assert_eq!(seen.reported, Some(expected), "{path} {body}");
        assert!(!seen.stream_error && !seen.gave_up);
        assert_eq!(seen.text_bytes, 70, "{path}: the mock's text is 70 bytes");
    }
}

/// Property: where the frames are cut does not change what is read.
#[test]
fn any_frame_boundaries_give_the_same_usage() {
    for (protocol, path, body) in CASES {
        let (bytes, sse, expected) = mock_reply(path, body);
        for cut in 0..=bytes.len() {
            let seen = tap_all(*protocol, sse, None, &[&bytes[..cut], &bytes[cut..]]);
            assert_eq!(seen.reported, Some(expected), "{path} cut at {cut}");
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(tap_all(*protocol, sse, None, &singles).reported, Some(expected));
    }
}

#[test]
fn compressed_bodies_are_read_through_a_copy() {
    use std::io::Write;
    for (protocol, path, body) in CASES {
        let (bytes, sse, expected) = mock_reply(path, body);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&bytes).unwrap();
        let gz = gz.finish().unwrap();
        let mut br = Vec::new();
        brotli::BrotliCompress(&mut &bytes[..], &mut br, &brotli::enc::BrotliEncoderParams::default()).unwrap();
        let zst = ruzstd::encoding::compress_to_vec(&bytes[..], ruzstd::encoding::CompressionLevel::Fastest);
        for (enc, data) in [("gzip", &gz), ("br", &br), ("zstd", &zst)] {
            let chunks: Vec<&[u8]> = data.chunks(7).collect();
            let seen = tap_all(*protocol, sse, Some(enc), &chunks);
            assert_eq!(seen.reported, Some(expected), "{enc} {path}");
            assert!(!seen.gave_up, "{enc} {path}");
        }
    }
    let seen = tap_all(Protocol::Anthropic, true, Some("compress"), &[b"x"]);
    assert!(
        seen.gave_up && seen.reported.is_none(),
        "an unknown encoding is flagged, not guessed"
    );
}

#[test]
fn streams_without_usage_errors_and_oversize_lines() {
    // OpenAI chat stream without include_usage: no usage, but the text is counted.
    let (bytes, _, _) = mock_reply(
        "/v1/chat/completions",
        r#"{"model":"gpt-5","stream":true,"messages":[]}"#,
    );
    let seen = tap_all(Protocol::OpenAi, true, None, &[&bytes]);
    assert_eq!((seen.reported, seen.text_bytes), (None, 70));
    // Anthropic error event mid-stream.
    let seen = tap_all(
        Protocol::Anthropic,
        true,
        None,
        &[b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":9,\"output_tokens\":1}}}\n\n",
          b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\"}}\n\n"],
    );
    assert!(seen.stream_error);
    assert_eq!(seen.reported.map(|u| (u.input, u.output)), Some((9, 1)));
    // A line longer than the bound (a huge delta, or a hostile upstream) is skipped instead of
    // growing memory: its bytes count as text, and the usage event after it is still read —
    // the same however the reads cut the stream.
    let start = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":9,\"output_tokens\":1}}}\n\n";
    let delta = format!(
        "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"{}\"}}}}\n\n",
        "a".repeat(MAX_LINE + 10)
    );
    let end = b"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":777}}\n\n";
    let whole = [&start[..], delta.as_bytes(), &end[..]].concat();
    let at_once = tap_all(Protocol::Anthropic, true, None, &[&whole]);
    assert!(!at_once.gave_up, "{at_once:?}");
    assert_eq!(
        at_once.reported.map(|u| (u.input, u.output)),
        Some((9, 777)),
        "{at_once:?}"
    );
    assert!(
        at_once.text_bytes > MAX_LINE as u64,
        "the skipped line counts as text: {at_once:?}"
    );
    for cut in [1, 7, 4096, 65536, MAX_LINE / 2] {
        let pieces: Vec<&[u8]> = whole.chunks(cut).collect();
        assert_eq!(
            tap_all(Protocol::Anthropic, true, None, &pieces),
            at_once,
            "reads of {cut} bytes"
        );
    }
    // An oversized line that is not text (a partial image, base64) is skipped without counting
    // toward an estimate: no usage at all would otherwise bill it as generated text.
    let image = format!(
        "event: response.image_generation_call.partial_image\ndata: {{\"type\":\"response.image_generation_call.partial_image\",\"partial_image_b64\":\"{}\"}}\n\n",
        "A".repeat(MAX_LINE + 10)
    );
    for cut in [4096, MAX_LINE + 100] {
        let pieces: Vec<&[u8]> = image.as_bytes().chunks(cut).collect();
        let seen = tap_all(Protocol::OpenAi, true, None, &pieces);
        assert_eq!(seen.text_bytes, 0, "reads of {cut} bytes: {seen:?}");
    }
    // OpenAI's Responses carry their only usage inside `response.completed`, with the whole
    // response object before it: over the bound (a generated image, logprobs), the usage at the
    // line's end is still read — at once or in pieces — and nothing of it counts as text.
    let completed = format!(
        "event: response.output_text.delta\ndata: {{\"type\":\"response.output_text.delta\",\"delta\":\"hi\"}}\n\n\
         event: response.completed\ndata: {{\"type\":\"response.completed\",\"response\":{{\"id\":\"resp_1\",\"output\":[{{\"type\":\"image_generation_call\",\"result\":\"{}\"}}],\"tools\":[],\"usage\":{{\"input_tokens\":900000,\"output_tokens\":4321,\"input_tokens_details\":{{\"cached_tokens\":0}}}},\"user\":null,\"metadata\":{{\"note\":\"a }} and a \\\"usage\\\": in a string\"}}}}}}\n\n",
        "QUJD".repeat(MAX_LINE / 2)
    );
    let responses = tap_all(Protocol::OpenAi, true, None, &[completed.as_bytes()]);
    assert_eq!(
        responses.reported.map(|u| (u.input, u.output)),
        Some((900_000, 4321)),
        "{responses:?}"
    );
    assert_eq!(responses.text_bytes, 2, "only the visible delta is text");
    for cut in [1000, 65536, MAX_LINE / 3] {
        let pieces: Vec<&[u8]> = completed.as_bytes().chunks(cut).collect();
        assert_eq!(
            tap_all(Protocol::OpenAi, true, None, &pieces),
            responses,
            "reads of {cut} bytes"
        );
    }
    // A zstd body (read whole at its end) that decodes past the tap's 64 MiB bound is not read
    // — and says so — rather than read up to the bound and billed from message_start as final.
    let mut long = start.to_vec();
    long.extend(std::iter::repeat_n(b":\n".as_slice(), 33 * 1024 * 1024).flatten());
    long.extend_from_slice(end);
    let zst = ruzstd::encoding::compress_to_vec(&long[..], ruzstd::encoding::CompressionLevel::Fastest);
    let seen = tap_all(Protocol::Anthropic, true, Some("zstd"), &[&zst]);
    assert!(seen.gave_up && seen.reported.is_none(), "{seen:?}");
    // The text-or-not decision reads the line's first bytes however the reads cut them: a read
    // ending a few bytes into the oversized delta, then the rest of it at once.
    let split = start.len() + "event: content_block_delta\ndata: {".len();
    let cut = [&whole[..split], &whole[split..]];
    assert_eq!(
        tap_all(Protocol::Anthropic, true, None, &cut),
        at_once,
        "a read ending inside the line's head"
    );
}

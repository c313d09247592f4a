//! The one body translation: Anthropic Messages → Bedrock (`conduit_wire::bedrock`), and the
//! translation of Bedrock's stream back. Properties: never panics; the Bedrock body is JSON and
//! keeps every other member of the original exactly.
#![no_main]

use conduit_wire::bedrock;
use conduit_wire::eventstream::Decoder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (control, body) = conduit_fuzz::split(data);
    if control & 1 == 0 {
        let betas = vec!["context-1m-2025-08-07".to_string()];
        let header = (control & 2 != 0).then_some("context-1m-2025-08-07,other");
        let Ok(out) = bedrock::request_body(body, header, &betas) else {
            return;
        };
        // Valid JSON in, valid JSON out with every other member unchanged. (The gateway also
        // takes what a strict parser refuses but providers accept — lone surrogates, numbers
        // beyond f64 — and keeps those bytes as sent.)
        if let Ok(serde_json::Value::Object(original)) = serde_json::from_slice::<serde_json::Value>(body) {
            let out: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON in, the Bedrock body is JSON");
            for (k, v) in &original {
                if !matches!(k.as_str(), "model" | "stream" | "anthropic_version" | "anthropic_beta") {
                    assert_eq!(out.get(k), Some(v), "member {k:?} changed on the way to Bedrock");
                }
            }
        }
        let _ = bedrock::count_tokens_body(body, header, &betas);
        let _ = bedrock::count_tokens_answer(body);
    } else {
        let _ = bedrock::anthropic_error(400 + u16::from(control), None, body);
        let Ok(messages) = Decoder::default().push(body) else {
            return;
        };
        let mut out = bytes::BytesMut::new();
        for m in &messages {
            let _ = bedrock::is_exception(m);
            let _ = bedrock::chunk_event(m);
            bedrock::sse_event(m, &mut out);
        }
    }
});

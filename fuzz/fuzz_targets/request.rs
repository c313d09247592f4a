//! Request facts and text-segment extraction (`conduit_wire::content`): JSON request bodies of
//! each shape, batch JSONL and plain text. Properties: never panics; what it accepts, a standard
//! JSON parser accepts too (numbers beyond f64 and lone surrogates aside) (no body the gateway reads one way and a provider another); and for
//! "any other JSON" every string value reaches the policies (nothing leaves unscanned).
#![no_main]

use conduit_wire::content::{self, BodyLimits, Shape};
use conduit_wire::segments::Origin;
use libfuzzer_sys::fuzz_target;

fn strings<'v>(v: &'v serde_json::Value, out: &mut Vec<&'v str>) {
    match v {
        serde_json::Value::String(s) => out.push(s),
        serde_json::Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
        serde_json::Value::Object(o) => o.values().for_each(|v| strings(v, out)),
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let (control, body) = conduit_fuzz::split(data);
    let limits = BodyLimits::default();
    match control % 4 {
        0 | 1 | 2 => {
            let shape = [Shape::Request, Shape::AnthropicBatch, Shape::Other][(control % 4) as usize];
            let Ok(got) = content::json(body, shape, &limits) else {
                return;
            };
            let standard: serde_json::Value = match serde_json::from_slice(body) {
                Ok(v) => v,
                // Numbers beyond f64 are a known, harmless difference: no number is scanned text,
                // and providers' parsers differ on them too.
                Err(e) if e.to_string().starts_with("number out of range") => return,
                // Lone surrogates: taken on purpose (providers' parsers take them) and scanned
                // both ways (`content::json`).
                Err(e) if e.to_string().contains("surrogate") => return,
                Err(e) => panic!("the gateway accepted a body a standard JSON parser refuses: {e}"),
            };
            if shape == Shape::Other {
                let mut all = Vec::new();
                strings(&standard, &mut all);
                for s in all {
                    // An object's strings are scanned one per line, trailing newlines trimmed.
                    let s = s.trim_end_matches('\n');
                    assert!(
                        got.segments.iter().any(|seg| seg.text.contains(s)),
                        "a string value of the body reached no policy: {s:?}"
                    );
                }
            }
        }
        _ => {
            let _ = content::jsonl_batch(body, "/v1/files", &limits);
            let _ = content::text(body, "/v1/files", Origin::Prompt, &limits);
            let _ = content::segments_of(body);
        }
    }
});

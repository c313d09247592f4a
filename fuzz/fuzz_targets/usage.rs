//! The usage tap on response bodies (SSE, JSON, AWS event-stream; identity or gzip), fed the
//! body in network-sized reads. Properties: never panics, and what it learns does not depend on
//! how the body is cut into reads (the promise a byte-at-a-time upstream relies on).
#![no_main]

use conduit_wire::protocol::Protocol;
use conduit_wire::usage::UsageTap;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (control, body) = conduit_fuzz::split(data);
    let protocol = match control % 3 {
        0 => Protocol::Anthropic,
        1 => Protocol::OpenAi,
        _ => Protocol::Bedrock,
    };
    let content_type = match (control / 3) % 3 {
        0 => "text/event-stream",
        1 => "application/json",
        _ => "application/vnd.amazon.eventstream",
    };
    let gzip = control & 0x80 != 0;
    let body = if gzip {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(body).unwrap();
        e.finish().unwrap()
    } else {
        body.to_vec()
    };
    let encoding = gzip.then_some("gzip");
    let mut whole = UsageTap::new(protocol, Some(content_type), encoding);
    whole.observe(&body);
    let whole = whole.finish();
    let mut cut = UsageTap::new(protocol, Some(content_type), encoding);
    for read in conduit_fuzz::reads(&body, control.rotate_left(3)) {
        cut.observe(read);
    }
    let cut = cut.finish();
    assert_eq!(
        whole, cut,
        "the tap's result depends on how the body was cut into reads"
    );
});

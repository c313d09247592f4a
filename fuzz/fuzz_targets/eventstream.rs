//! The AWS event-stream decoder (Bedrock streams). Properties: never panics; decoding in pieces
//! yields the same messages (or the same error) as decoding at once; every message it accepts
//! re-encodes to bytes that decode to the same message.
#![no_main]

use conduit_wire::eventstream::{Decoder, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (control, body) = conduit_fuzz::split(data);
    let whole = Decoder::default().push(body);
    let mut pieces = Decoder::default();
    let mut got = Vec::new();
    let mut failed = None;
    for read in conduit_fuzz::reads(body, control) {
        match pieces.push(read) {
            Ok(msgs) => got.extend(msgs),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    match (whole, failed) {
        (Ok(all), None) => {
            assert_eq!(all, got, "decoding in pieces differs");
            for m in &all {
                let headers: Vec<(&str, &str)> = m.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                let again = Decoder::default()
                    .push(&encode(&headers, &m.payload))
                    .expect("re-encoded message decodes");
                assert_eq!(
                    again.as_slice(),
                    std::slice::from_ref(m),
                    "re-encoding changed a message"
                );
            }
        }
        (Err(a), Some(b)) => assert_eq!(a, b, "a different error in pieces"),
        (a, b) => panic!("decoding at once gave {a:?}, in pieces {b:?}"),
    }
});

//! multipart/form-data uploads (`conduit_wire::content::multipart`). Properties: never panics;
//! every part's body and head lie inside the request body (nothing invented or skipped past).
#![no_main]

use conduit_wire::content::multipart;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first line is the content-type header; the rest the body.
    let cut = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
    let (head, body) = (&data[..cut], data.get(cut + 1..).unwrap_or(&[]));
    let content_type = std::str::from_utf8(head).ok();
    let Ok(boundary) = multipart::boundary(content_type) else {
        return;
    };
    let Ok(parts) = multipart::parse(body, &boundary) else {
        return;
    };
    let range = body.as_ptr_range();
    for p in &parts {
        let r = p.body.as_ptr_range();
        assert!(
            p.body.is_empty() || (range.start <= r.start && r.end <= range.end),
            "a part's body is not inside the request"
        );
        let _ = multipart::is_text(p);
    }
});

//! Path canonicalisation and routing (`conduit_wire::endpoint`). Properties: never panics; the
//! canonical form is a fixed point (canonical twice = canonical once: what goes upstream is what
//! was routed); routing a canonical path never panics for any method or family.
#![no_main]

use conduit_wire::endpoint;
use conduit_wire::protocol::Protocol;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (control, raw) = conduit_fuzz::split(data);
    let Ok(raw) = std::str::from_utf8(raw) else { return };
    let Ok(canonical) = endpoint::canonical(raw) else {
        return;
    };
    assert_eq!(
        endpoint::canonical(&canonical).as_deref(),
        Ok(canonical.as_str()),
        "the canonical path is not canonical"
    );
    let method = [
        http::Method::GET,
        http::Method::POST,
        http::Method::DELETE,
        http::Method::PUT,
    ][control as usize % 4]
        .clone();
    let family = [
        None,
        Some(Protocol::Anthropic),
        Some(Protocol::OpenAi),
        Some(Protocol::Bedrock),
    ][(control as usize / 4) % 4];
    let _ = endpoint::lookup(&method, &canonical, family);
    let _ = endpoint::openai_alias(&canonical);
});

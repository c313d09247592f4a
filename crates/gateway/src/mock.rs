//! The mock providers (crate `conduit-mock`, which needs only the wire formats), and the one thing
//! a gateway's config needs to steer them.

pub use conduit_mock::*;

/// Lets a gateway config forward the mock's control headers on every upstream.
pub fn forward_control_headers(raw: &mut crate::config::RawConfig) {
    for family in ["anthropic", "openai", "bedrock"] {
        let table = raw.upstream.entry(family.to_string()).or_default();
        for h in CONTROL_HEADERS {
            if !table.forward_headers.iter().any(|f| f == h) {
                table.forward_headers.push((*h).to_string());
            }
        }
    }
}

//! # Writing a Conduit policy in Rust
//!
//! A policy is a WebAssembly component that implements the `conduit:policy` world (`wit/policy.wit`).
//! This crate hides the bindings: implement [`Policy`] for a type and name it in [`export_policy!`];
//! build with `cargo build --release --target wasm32-wasip2`; the `.wasm` in
//! `target/wasm32-wasip2/release/` is the component. Sign it (`conduit policy sign`) and drop it
//! into the gateway's policy directory.
//!
//! ```ignore
//! use conduit_policy_sdk::{Description, Finding, Policy, RequestInfo, Segment, Severity, Verdict};
//!
//! struct NoTickets;
//!
//! impl Policy for NoTickets {
//!     fn describe() -> Description {
//!         Description::new("no-tickets", "0.1.0", &["entity.ticket"])
//!     }
//!     fn configure(_config: String) -> Result<(), String> {
//!         Ok(())
//!     }
//!     fn evaluate(_info: RequestInfo, segments: Vec<Segment>) -> Verdict {
//!         let mut verdict = Verdict::allow();
//!         for (i, segment) in segments.iter().enumerate() {
//!             for (start, _) in segment.text.match_indices("TICKET-") {
//!                 let end = start + 7;
//!                 verdict.push(Finding::at("entity.ticket", "ticket-id", i, start..end, Severity::Medium));
//!             }
//!         }
//!         verdict
//!     }
//! }
//!
//! conduit_policy_sdk::export_policy!(NoTickets);
//! ```
//!
//! Rules for authors: findings carry where and what kind, never the matched text; `evaluate` must
//! not depend on state left by earlier calls (instances are pooled and reused); a policy has no
//! files, network, environment or clock — configuration arrives as JSON through `configure`.

use std::ops::Range;

/// The generated bindings. Policy authors rarely need them directly.
#[allow(missing_docs, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "policy",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "export_bindings",
        default_bindings_module: "conduit_policy_sdk::bindings",
    });
}

pub use bindings::Guest as Policy;
pub use bindings::conduit::policy::host::Level;
pub use bindings::conduit::policy::types::{Deny, Description, Finding, RequestInfo, Segment, Severity, Verdict};

/// Exports a type implementing [`Policy`] as the component's `conduit:policy/policy` world.
#[macro_export]
macro_rules! export_policy {
    ($ty:ident) => {
        $crate::bindings::export_bindings!($ty);
    };
}

/// Writes a line to the gateway's log, attributed to this policy. The gateway caps its length;
/// never pass request text.
pub fn log(level: Level, message: &str) {
    bindings::conduit::policy::host::log(level, message);
}

impl Description {
    /// A description from borrowed parts.
    pub fn new(name: &str, version: &str, categories: &[&str]) -> Self {
        Self {
            name: name.to_string(),
            version: version.to_string(),
            categories: categories.iter().map(|c| c.to_string()).collect(),
        }
    }
}

impl Finding {
    /// A finding in segment `segment` at byte span `span` of its text.
    pub fn at(category: &str, rule_id: &str, segment: usize, span: Range<usize>, severity: Severity) -> Self {
        Self {
            category: category.to_string(),
            rule_id: rule_id.to_string(),
            segment: Some(u32::try_from(segment).unwrap_or(u32::MAX)),
            start: clamp(span.start),
            end: clamp(span.end),
            severity,
        }
    }

    /// A finding about the request as a whole (its model, its size), not about a segment.
    pub fn about_request(category: &str, rule_id: &str, severity: Severity) -> Self {
        Self {
            category: category.to_string(),
            rule_id: rule_id.to_string(),
            segment: None,
            start: 0,
            end: 0,
            severity,
        }
    }
}

fn clamp(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl Verdict {
    /// No findings, no decision.
    pub fn allow() -> Self {
        Self {
            findings: Vec::new(),
            deny: None,
        }
    }

    /// Adds a finding.
    pub fn push(&mut self, finding: Finding) {
        self.findings.push(finding);
    }

    /// Refuses the request with `status` (400–499) and a message for the engineer.
    pub fn deny(mut self, status: u16, message: impl Into<String>) -> Self {
        self.deny = Some(Deny {
            status,
            message: message.into(),
        });
        self
    }
}

/// A policy's configured state: set once by `configure`, read by every `evaluate` of that
/// instance. Use it as a `static`.
///
/// ```ignore
/// static RULES: Configured<Rules> = Configured::new();
/// fn configure(config: String) -> Result<(), String> { RULES.set("my-policy", Rules::parse(&config)?) }
/// fn evaluate(..) -> Verdict { let Some(rules) = RULES.get() else { return Verdict::allow() }; .. }
/// ```
#[derive(Debug)]
pub struct Configured<T>(std::sync::OnceLock<T>);

impl<T> Configured<T> {
    /// Empty until `set`.
    pub const fn new() -> Self {
        Self(std::sync::OnceLock::new())
    }

    /// Stores the state; a second call (never made by the host) is an error naming `policy`.
    pub fn set(&self, policy: &str, value: T) -> Result<(), String> {
        self.0
            .set(value)
            .map_err(|_| format!("{policy} policy: already configured"))
    }

    /// The state, once configured.
    pub fn get(&self) -> Option<&T> {
        self.0.get()
    }
}

impl<T> Default for Configured<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// Shannon entropy of `bytes` in bits per byte: ~4.5+ for random base62 tokens, below ~3.5 for
/// words and placeholders.
pub fn entropy(bytes: &[u8]) -> f32 {
    if bytes.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for &b in bytes {
        counts[b as usize] += 1;
    }
    let n = bytes.len() as f32;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f32 / n;
            -p * p.log2()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entropy_separates_tokens_from_words() {
        assert_eq!(entropy(b""), 0.0);
        assert_eq!(entropy(b"aaaa"), 0.0);
        assert!(entropy(b"xK9fQ2mZ7pL4wR8tV1bN6cH3") > 4.0);
        assert!(entropy(b"password") < 3.0);
    }

    #[test]
    fn configured_once() {
        static STATE: Configured<u32> = Configured::new();
        assert_eq!(STATE.get(), None);
        STATE.set("t", 7).unwrap();
        assert_eq!(STATE.get(), Some(&7));
        assert_eq!(STATE.set("t", 8).unwrap_err(), "t policy: already configured");
    }

    #[test]
    fn findings_clamp_and_carry_no_text() {
        let f = Finding::at("secret.x", "r", 2, 5..9, Severity::High);
        assert_eq!((f.segment, f.start, f.end), (Some(2), 5, 9));
        let f = Finding::about_request("model.not-allowed", "allow-list", Severity::Medium);
        assert_eq!(f.segment, None);
        let v = Verdict::allow().deny(403, "no");
        assert_eq!(v.deny.map(|d| d.status), Some(403));
    }
}

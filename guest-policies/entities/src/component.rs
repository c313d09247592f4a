//! The wasm binding: the [`Matcher`] behind the `conduit:policy` world.

use std::sync::OnceLock;

use conduit_policy_sdk::{Description, Finding, Policy, RequestInfo, Segment, Severity, Verdict};

use crate::Matcher;

static MATCHER: OnceLock<Matcher> = OnceLock::new();

struct Entities;

impl Policy for Entities {
    fn describe() -> Description {
        Description::new("entities", env!("CARGO_PKG_VERSION"), &["entity.*"])
    }

    fn configure(config: String) -> Result<(), String> {
        let matcher = Matcher::from_json(&config)?;
        MATCHER
            .set(matcher)
            .map_err(|_| "entities policy: already configured".to_string())
    }

    fn evaluate(_info: RequestInfo, segments: Vec<Segment>) -> Verdict {
        let mut verdict = Verdict::allow();
        let Some(matcher) = MATCHER.get() else {
            return verdict;
        };
        for (i, segment) in segments.iter().enumerate() {
            for m in matcher.find(&segment.text) {
                let term = &matcher.terms()[m.term];
                verdict.push(Finding::at(
                    matcher.category(term),
                    &term.id,
                    i,
                    m.start..m.end,
                    Severity::High,
                ));
            }
        }
        verdict
    }
}

conduit_policy_sdk::export_policy!(Entities);

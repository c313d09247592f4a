//! The wasm binding: the [`Matcher`] behind the `conduit:policy` world.

use conduit_policy_sdk::{Configured, Description, Finding, Policy, RequestInfo, Segment, Severity, Verdict};

use crate::Matcher;

static MATCHER: Configured<Matcher> = Configured::new();

struct Entities;

impl Policy for Entities {
    fn describe() -> Description {
        Description::new("entities", env!("CARGO_PKG_VERSION"), &["entity.*"])
    }

    fn configure(config: String) -> Result<(), String> {
        MATCHER.set("entities", Matcher::from_json(&config)?)
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
                    matcher.id(term),
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

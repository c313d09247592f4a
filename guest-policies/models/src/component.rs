//! The wasm binding: the [`AllowLists`] behind the `conduit:policy` world.

use conduit_policy_sdk::{Configured, Description, Finding, Policy, RequestInfo, Segment, Severity, Verdict};

use crate::{AllowLists, CATEGORY};

static LISTS: Configured<AllowLists> = Configured::new();

struct Models;

impl Policy for Models {
    fn describe() -> Description {
        Description::new("models", env!("CARGO_PKG_VERSION"), &[CATEGORY])
    }

    fn configure(config: String) -> Result<(), String> {
        LISTS.set("models", AllowLists::from_json(&config)?)
    }

    fn evaluate(info: RequestInfo, _segments: Vec<Segment>) -> Verdict {
        let (Some(lists), Some(model)) = (LISTS.get(), info.model.as_deref()) else {
            return Verdict::allow();
        };
        match lists.check(model, &info.key_id, info.team.as_deref()) {
            Ok(()) => Verdict::allow(),
            Err(refusal) => {
                let mut verdict = Verdict::allow();
                verdict.push(Finding::about_request(CATEGORY, "allow-list", Severity::Medium));
                verdict.deny(403, refusal.message(model))
            }
        }
    }
}

conduit_policy_sdk::export_policy!(Models);

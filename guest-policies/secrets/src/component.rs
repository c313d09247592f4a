//! The wasm binding: the [`Scanner`] behind the `conduit:policy` world.

use conduit_policy_sdk::{Configured, Description, Finding, Policy, RequestInfo, Segment, Severity, Verdict};

use crate::Scanner;

static SCANNER: Configured<Scanner> = Configured::new();

struct Secrets;

fn severity(category: &str) -> Severity {
    match category {
        "secret.private-key" | "secret.aws-secret-key" | "secret.gcp-service-account" => Severity::Critical,
        "secret.generic" | "secret.jwt" => Severity::Medium,
        _ => Severity::High,
    }
}

impl Policy for Secrets {
    fn describe() -> Description {
        Description::new("secrets", env!("CARGO_PKG_VERSION"), &["secret.*"])
    }

    fn configure(config: String) -> Result<(), String> {
        // Compiles every regex, under configure's deadline and off the request path (the runtime
        // configures pooled instances on a thread of their own).
        SCANNER.set("secrets", Scanner::from_json(&config)?)
    }

    fn evaluate(_info: RequestInfo, segments: Vec<Segment>) -> Verdict {
        let mut verdict = Verdict::allow();
        let Some(scanner) = SCANNER.get() else {
            return verdict;
        };
        for (i, segment) in segments.iter().enumerate() {
            for f in scanner.scan(&segment.text) {
                verdict.push(Finding::at(
                    &f.category,
                    &f.rule,
                    i,
                    f.start..f.end,
                    severity(&f.category),
                ));
            }
        }
        verdict
    }
}

conduit_policy_sdk::export_policy!(Secrets);

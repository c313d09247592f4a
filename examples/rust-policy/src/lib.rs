//! Example custom policy, the one `docs/writing-policies.md` walks through: it reports internal
//! ticket ids (`TICKET-` followed by digits) as `entity.ticket`. The matching is a plain function,
//! tested natively; the component part is five lines.
//!
//! Build: `cargo build --release --target wasm32-wasip2 -p conduit-example-no-tickets`; the
//! component is `target/wasm32-wasip2/release/conduit_example_no_tickets.wasm`.

/// Byte spans of `TICKET-<digits>` in `text`.
pub fn ticket_spans(text: &str) -> Vec<std::ops::Range<usize>> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    for (start, _) in text.match_indices("TICKET-") {
        let digits = bytes[start + 7..].iter().take_while(|b| b.is_ascii_digit()).count();
        let before_ok = start == 0 || !bytes[start - 1].is_ascii_alphanumeric();
        if digits > 0 && before_ok {
            out.push(start..start + 7 + digits);
        }
    }
    out
}

#[cfg(target_arch = "wasm32")]
mod component {
    use conduit_policy_sdk::{Description, Finding, Policy, RequestInfo, Segment, Severity, Verdict};

    struct NoTickets;

    impl Policy for NoTickets {
        fn describe() -> Description {
            Description::new("no-tickets", "0.1.0", &["entity.ticket"])
        }

        fn configure(_config: String) -> Result<(), String> {
            Ok(())
        }

        fn evaluate(_info: RequestInfo, segments: Vec<Segment>) -> Verdict {
            let mut verdict = Verdict::allow();
            for (i, segment) in segments.iter().enumerate() {
                for span in crate::ticket_spans(&segment.text) {
                    verdict.push(Finding::at("entity.ticket", "ticket-id", i, span, Severity::Medium));
                }
            }
            verdict
        }
    }

    conduit_policy_sdk::export_policy!(NoTickets);
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_ticket_ids_only() {
        let text = "see TICKET-4821 and XTICKET-1, TICKET-x, (TICKET-7)";
        let spans: Vec<&str> = super::ticket_spans(text).into_iter().map(|r| &text[r]).collect();
        assert_eq!(spans, ["TICKET-4821", "TICKET-7"]);
    }
}

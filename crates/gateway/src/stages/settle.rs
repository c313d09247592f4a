//! **settle** — runs when a request is over (its response body ended, or it was refused after
//! authentication). Reads: the exchange, the status, how the body ended and what the usage tap saw.
//! Decides: the tokens billed — as the provider reported them, or, when it reported none for a
//! successful response, an estimate flagged as such (never a silent zero) — and their cost under the
//! price table, at the tier the provider reports (else the one requested); a model with no price is
//! billed at its provider's ceiling and marked so (`crate::prices`). Records: one ledger entry, sent off the
//! request path. Returns the figures for `audit`.
//!
//! A batch (Anthropic message batches, OpenAI batches) is billed at the worst case it was admitted
//! with, flagged as an estimate: the provider runs and bills it later, out of the gateway's sight,
//! so the only bound that cannot be overshot is the admitted one. A declared billable passthrough
//! is billed its declared `reserve_usd`.
//!
//! Estimates are a documented heuristic, not a tokenizer: input = ⌈request body bytes / 4⌉,
//! output = ⌈generated text bytes / 4⌉ (docs/metering.md).

use std::sync::Arc;

use crate::body::StreamEnd;
use crate::ledger::{Ledger, SpendEntry};
use crate::prices::{Basis, PriceTable};
use crate::stages::accept::Exchange;
use crate::stages::admit::Admitted;
use crate::usage::{Observed, Usage};

/// What settling needs, cloned into each streamed response (two reference counts).
#[derive(Clone, Debug)]
pub struct Settlement {
    /// Prices in force when the request started.
    pub prices: Arc<PriceTable>,
    /// The ledger writer.
    pub ledger: Ledger,
}

/// The figures of a settled request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Settled {
    /// Tokens billed.
    pub usage: Usage,
    /// Cost in micro-dollars; `None` when the provider has no price at all.
    pub cost_micros: Option<u64>,
    /// Tokens are an estimate.
    pub estimated: bool,
    /// How the price was found (`None` when nothing was billed).
    pub basis: Option<Basis>,
}

/// Bytes → tokens heuristic used when a response carries no usage.
pub fn estimate_tokens(bytes: u64) -> u64 {
    bytes.div_ceil(4)
}

/// Settles a request; `None` for requests no key is attributed to (they never reached a provider).
pub fn settle(
    s: &Settlement,
    ex: &Exchange,
    status: u16,
    end: Option<&StreamEnd>,
    seen: Option<&Observed>,
    admitted: Option<Admitted>,
) -> Option<Settled> {
    let principal = ex.principal.as_ref()?;
    let ok_status = (200..300).contains(&status);
    let complete = matches!(end, Some(StreamEnd::Complete | StreamEnd::ClientGone { drained: true }));
    let error = !ok_status || !complete || seen.is_some_and(|o| o.stream_error);
    let (usage, estimated) = match seen {
        Some(o) => match o.reported {
            // Reported, but the stream was cut before the final count: never below what was seen.
            Some(mut u) if error || o.gave_up => {
                let seen_output = estimate_tokens(o.text_bytes);
                let estimated = seen_output > u.output;
                u.output = u.output.max(seen_output);
                (u, estimated)
            }
            Some(u) => (u, false),
            None if ok_status && ex.billable => (
                Usage {
                    input: estimate_tokens(ex.bytes_in),
                    output: estimate_tokens(o.text_bytes),
                    ..Usage::default()
                },
                true,
            ),
            // Provider errors without usage, and endpoints that generate nothing billed (token
            // counting, listings, unknown paths), are recorded at zero.
            None => (Usage::default(), false),
        },
        // Refused by the gateway: nothing reached a provider.
        None => (Usage::default(), false),
    };
    let model = ex.model.clone().unwrap_or_else(|| "-".into());
    let provider = ex.provider;
    // The provider's word on the tier and multipliers wins; else what the request asked for.
    let billing = seen.and_then(|o| o.billing).unwrap_or(ex.billing);
    let fixed = admitted.as_ref().and_then(|a| a.charge);
    let mut estimated = estimated;
    let (cost_micros, basis) = if let Some(charge) = fixed {
        // A batch or a declared passthrough: the cost fixed at admission, if the provider took it.
        estimated = ok_status;
        (Some(if ok_status { charge } else { 0 }), None)
    } else if usage == Usage::default() {
        (Some(0), None)
    } else {
        match provider.and_then(|p| s.prices.price(p, &model)) {
            Some(p) => (Some(p.row.cost(&usage, billing)), Some(p.basis)),
            None => (None, None),
        }
    };
    let settled = Settled {
        usage,
        cost_micros,
        estimated,
        basis,
    };
    if let Some(Admitted {
        reservation,
        mut ticket,
        ..
    }) = admitted
    {
        if let Some(r) = reservation {
            r.settle(cost_micros.unwrap_or(0));
        }
        if let Some(t) = ticket.as_mut() {
            t.settle(usage.input + usage.cache_read + usage.cache_write + usage.output);
        }
    }
    s.ledger.record(SpendEntry {
        day: crate::clock::format_date(ex.started_unix),
        // A signed-in user's access token changes at every refresh: their ledger rows are the
        // session's, not one per token.
        key_id: principal.session.clone().unwrap_or_else(|| principal.key_id.clone()),
        owner: principal.owner.clone(),
        team: principal.team.clone().unwrap_or_else(|| "-".into()),
        provider: provider.map_or("-", |p| p.as_str()).to_string(),
        model,
        usage,
        cost_micros,
        ceiling: basis == Some(Basis::Ceiling),
        estimated,
        error,
    });
    Some(settled)
}

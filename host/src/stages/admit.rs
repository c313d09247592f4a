//! **admit** — reads: the principal (its key's rate limits, its team), the route's family, the
//! request facts (model, stream, max tokens) and the body size. Decides: whether the key's rate
//! limits allow the request now (429 with `retry-after`; `x-should-retry: false` when waiting
//! cannot help), and whether the request's worst-case cost fits every budget that applies — key,
//! team, org; daily and monthly — reserving it in all of them at once or in none (402 naming the
//! budget, what is spent and reserved, the limit and when it resets). A budgeted request for a model
//! with no price is refused: its cost could not be bounded. Returns: the [`Admitted`] holds that
//! `settle` reconciles with the real cost (or that release themselves if the request dies).
//!
//! Worst case: input = one token per body byte (an upper bound for byte-level BPE tokenizers),
//! priced at the higher of the input and cache-write rates; output = `max_tokens`, or
//! `limits.default_max_output_tokens` when the request sets none.

use crate::admission::{OverBudget, Payer, RateTicket, Reservation};
use crate::error::{ErrorKind, GatewayError};
use crate::gateway::Gateway;
use crate::stages::accept::Exchange;
use crate::stages::authenticate::Principal;
use crate::stages::inspect::RequestFacts;
use crate::usage::Usage;

/// What admission holds for a request until it settles.
#[derive(Debug, Default)]
pub struct Admitted {
    /// Budget reservation, when a budget applies.
    pub reservation: Option<Reservation>,
    /// Rate-limit ticket (stream slot, tokens on account), when the key has limits.
    pub ticket: Option<RateTicket>,
}

/// Admits a request or refuses it.
pub fn admit(
    gw: &Gateway,
    ex: &Exchange,
    principal: &Principal,
    facts: &RequestFacts,
) -> Result<Admitted, GatewayError> {
    let estimated_input = crate::stages::settle::estimate_tokens(ex.bytes_in);
    let ticket = gw
        .rate_limiter
        .admit(&principal.key_id, principal.limits, facts.stream, estimated_input)
        .map_err(|r| {
            let mut e = GatewayError::downstream(
                ErrorKind::RateLimited,
                format!(
                    "key {} is over its rate limit of {}; {}",
                    principal.key_id,
                    r.what,
                    if r.can_wait {
                        format!("retry in {} s", r.retry_after)
                    } else {
                        "this request can never fit: send less context, or ask for a higher limit".into()
                    }
                ),
            );
            e.retry_after = Some(r.retry_after);
            e.should_retry = Some(r.can_wait);
            e
        })?;

    let payer = Payer {
        key_id: &principal.key_id,
        team: principal.team.as_deref(),
    };
    if !gw.budgets.applies(&payer) {
        return Ok(Admitted {
            reservation: None,
            ticket,
        });
    }
    let provider = ex.provider.unwrap_or("-");
    // The model as recorded (a translated request's Bedrock id), which is what is billed.
    let model = ex.model.as_deref().or(facts.model.as_deref()).unwrap_or("");
    let prices = gw.prices();
    let row = prices.lookup(provider, model).ok_or_else(|| {
        GatewayError::downstream(
            ErrorKind::BudgetExceeded,
            format!(
                "model {model:?} has no price in this gateway, so its cost cannot be checked against your budget; an operator can add one with `conduit prices import FILE`"
            ),
        )
    })?;
    let output = facts.max_tokens.unwrap_or(gw.config.limits.default_max_output_tokens);
    let bytes = ex.bytes_in;
    let worst = row
        .cost_micros(&Usage {
            input: bytes,
            output,
            ..Usage::default()
        })
        .max(row.cost_micros(&Usage {
            cache_write: bytes,
            output,
            ..Usage::default()
        }));
    let reservation =
        gw.budgets.reserve(&payer, ex.started_unix, worst).map_err(|e| {
            match e {
        Ok(over) => over_budget(&over),
        Err(store) => GatewayError::new(
            ErrorKind::StoreUnavailable,
            crate::error::Side::Internal,
            "the gateway cannot read its budgets right now, so it refuses rather than spend unchecked; retry shortly",
        )
        .with_cause(store),
    }
        })?;
    Ok(Admitted { reservation, ticket })
}

fn over_budget(o: &OverBudget) -> GatewayError {
    let usd = crate::ledger::usd;
    let who = match o.scope.split_once(':') {
        Some(("key", id)) => format!("key {id}"),
        Some(("team", t)) => format!("team {t}"),
        _ => "the organisation".into(),
    };
    let mut e = GatewayError::downstream(
        ErrorKind::BudgetExceeded,
        format!(
            "the {} budget of {who} is ${} per {}: ${} spent and ${} reserved by requests in flight leave less than this request's worst case of ${}; it resets at {}. Ask your platform team to raise it, or lower max_tokens",
            o.period,
            usd(o.limit),
            if o.period == "daily" { "day" } else { "month" },
            usd(o.spent),
            usd(o.reserved),
            usd(o.requested),
            crate::clock::format_rfc3339(o.resets_at)
        ),
    );
    e.should_retry = Some(false);
    e
}

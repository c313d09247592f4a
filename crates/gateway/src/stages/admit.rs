//! **admit** — reads: the principal (its key's rate limits, its team), the route's family, the
//! request facts (model, stream, max tokens) and the body size. Decides: whether the key's rate
//! limits allow the request now (429 with `retry-after`; `x-should-retry: false` when waiting
//! cannot help), and whether the request's worst-case cost fits every budget that applies — key,
//! team, org; daily and monthly — reserving it in all of them at once or in none (402 naming the
//! budget, what is spent and reserved, the limit and when it resets). A request for a model with no
//! price is reserved (and later billed) at its provider's ceiling (`crate::prices`), or refused
//! under `[prices] unpriced = "refuse"`; endpoints that generate nothing billed (listings, token
//! counts) are never refused for want of a price. Returns: the [`Admitted`] holds that `settle`
//! reconciles with the real cost (or that release themselves if the request dies).
//!
//! Worst case ([`worst_case`]): input = one token per body byte (an upper bound for byte-level BPE
//! tokenizers), or the model's context window when the body references input it does not carry
//! (file ids, URLs, MCP servers), priced at the dearest input class; output = the largest
//! max-output field (`max_tokens`, `max_completion_tokens`, `max_output_tokens`, Bedrock
//! `inferenceConfig.maxTokens`, …) capped at the model's maximum, else the model's maximum, else
//! `limits.default_max_output_tokens`, times OpenAI's `n`; plus the fee of every server-side search
//! allowed; at the requested service tier and Anthropic's fast / US-only multipliers.

use conduit_state::Principal;
use conduit_state::budget::Budgets;
use conduit_state::budget::{OverBudget, Refusal, Reservation};
use conduit_state::ratelimit::{RateLimiter, RateTicket};
use conduit_state::store::UploadStore;

use crate::content::Extracted;
use crate::endpoint::Endpoint;
use crate::error::{ErrorKind, GatewayError};
use crate::prices::{Basis, Priced, Unpriced};
use crate::protocol::Provider;
use crate::stages::accept::Exchange;
use crate::stages::inspect::RequestFacts;
use crate::stages::route::Route;

/// What admission holds for a request until it settles.
#[derive(Debug, Default)]
pub struct Admitted {
    /// Budget reservation, when a budget applies.
    pub reservation: Option<Reservation>,
    /// Rate-limit ticket (stream slot, tokens on account), when the key has limits.
    pub ticket: Option<RateTicket>,
    /// A cost fixed at admission, billed whatever the response says: a batch (its worst case —
    /// the provider bills it later, out of sight) or a declared passthrough (its `reserve_usd`).
    pub charge: Option<u64>,
}

/// What admission reads besides the request: nothing else of the gateway.
pub struct Reads<'a> {
    /// Per-key rate limits.
    pub rate_limiter: &'a std::sync::Arc<RateLimiter>,
    /// Budget enforcement.
    pub budgets: &'a dyn Budgets,
    /// Files uploaded through the gateway (a batch's requests).
    pub uploads: &'a dyn UploadStore,
    /// The prices in force.
    pub prices: std::sync::Arc<crate::prices::PriceTable>,
    /// `limits.default_max_output_tokens`.
    pub default_max_output_tokens: u64,
    /// The declared passthroughs (their fixed `reserve_usd`).
    pub passthrough: &'a [crate::egress::Passthrough],
}

/// Admits a request or refuses it.
pub async fn admit(
    reads: &Reads<'_>,
    ex: &Exchange,
    principal: &Principal,
    route: &Route<'_>,
    extracted: &Extracted<'_>,
) -> Result<Admitted, GatewayError> {
    let facts = &extracted.facts;
    let estimated_input = crate::stages::settle::estimate_tokens(ex.bytes_in);
    let ticket = reads
        .rate_limiter
        .admit(&principal.key_id, principal.limits, facts.stream, estimated_input)
        .map_err(|r| {
            let mut e = GatewayError::client(
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
    let mut admitted = Admitted {
        reservation: None,
        ticket,
        charge: None,
    };
    // Listings, token counting and other endpoints that generate nothing billed cost nothing:
    // they are never refused for a missing price, and reserve nothing.
    if !ex.billable {
        return Ok(admitted);
    }
    let prices = &reads.prices;
    let provider = route.upstream.provider;
    let default_output = reads.default_max_output_tokens;
    let worst = match route.endpoint {
        Endpoint::Passthrough(i) => {
            let fixed = reads.passthrough.get(i).map_or(0, |p| p.reserve_micros);
            admitted.charge = Some(fixed);
            fixed
        }
        Endpoint::MessageBatches => {
            let w = batch_worst_case(prices, provider, &extracted.requests, default_output)?;
            admitted.charge = Some(w);
            w
        }
        Endpoint::Batches => {
            let file = extracted.facts.file_ref.as_deref().unwrap_or("");
            let lines = batch_file(reads.uploads, provider, file).await?;
            let w = batch_worst_case(prices, provider, &lines, default_output)?;
            admitted.charge = Some(w);
            w
        }
        _ => {
            // The model as recorded (a translated request's Bedrock id), which is what is billed.
            let model = ex.model.as_deref().or(facts.model.as_deref()).unwrap_or("");
            let priced = priced(prices, provider, model)?;
            if !reads.budgets.applies(principal) {
                return Ok(admitted);
            }
            let Some(priced) = priced else {
                return Err(unpriced_refusal(
                    provider,
                    model,
                    "no price and no ceiling exist for this provider, so its cost cannot be checked against your budget",
                ));
            };
            worst_case(priced, facts, ex.bytes_in, default_output)
        }
    };
    if !reads.budgets.applies(principal) {
        return Ok(admitted);
    }
    admitted.reservation = reads
        .budgets
        .reserve(principal, ex.started_unix, worst)
        .await
        .map_err(|e| match e {
            Refusal::Over(over) => over_budget(&over),
            Refusal::Unavailable(store) => GatewayError::new(
                ErrorKind::StoreUnavailable,
                crate::error::Fault::Gateway,
                "the gateway cannot read its budgets right now, so it refuses rather than spend unchecked; retry shortly",
            )
            .with_cause(store),
        })?;
    Ok(admitted)
}

/// The row that prices `model`, noting (and under `unpriced = "refuse"` refusing) a model with
/// no price of its own.
fn priced<'t>(
    prices: &'t crate::prices::PriceTable,
    provider: Provider,
    model: &str,
) -> Result<Option<Priced<'t>>, GatewayError> {
    let priced = prices.price(provider, model);
    if let Some(p) = &priced
        && p.basis == Basis::Ceiling
    {
        crate::prices::note_unpriced(provider, model, p.row);
        if prices.unpriced() == Unpriced::Refuse {
            return Err(unpriced_refusal(
                provider,
                model,
                "this gateway refuses models without a price ([prices] unpriced = \"refuse\")",
            ));
        }
    }
    Ok(priced)
}

/// A batch's worst case: each request's, at batch rates, summed.
fn batch_worst_case(
    prices: &crate::prices::PriceTable,
    provider: Provider,
    requests: &[RequestFacts],
    default_output: u64,
) -> Result<u64, GatewayError> {
    let mut total: u64 = 0;
    for r in requests {
        let model = r.model.as_deref().unwrap_or("");
        let Some(p) = priced(prices, provider, model)? else {
            return Err(unpriced_refusal(
                provider,
                model,
                "no price and no ceiling exist for this provider",
            ));
        };
        let facts = RequestFacts {
            billing: crate::prices::Billing {
                tier: crate::prices::Tier::Batch,
                ..r.billing
            },
            ..r.clone()
        };
        total = total.saturating_add(worst_case(p, &facts, r.bytes, default_output));
    }
    Ok(total)
}

/// The requests of a batch input file this gateway uploaded (and scanned), or a refusal.
async fn batch_file(
    uploads: &dyn UploadStore,
    provider: Provider,
    file_id: &str,
) -> Result<Vec<RequestFacts>, GatewayError> {
    let record = uploads
        .get(provider.as_str(), file_id)
        .await
        .map_err(|e| GatewayError::internal(format!("looking up batch file {file_id:?}: {e}")))?;
    match record {
        Some(r) if r.purpose == "batch" && !r.requests.is_empty() => Ok(r.requests),
        _ => Err(GatewayError::client(
            ErrorKind::BadRequest,
            format!(
                "input_file_id {file_id:?} is not a batch file uploaded through this gateway, so its requests were never checked; upload it here with POST /v1/files (purpose \"batch\") and use the id it returns"
            ),
        )),
    }
}

/// The most the request can cost (module docs): every input token at the dearest input class —
/// one per body byte, or the model's whole context window when the body references input it does
/// not carry; output at the largest max-output field (capped at the model's maximum when the model
/// is known), times the choices asked for; the fee of every server-side search it allows; at the
/// tier and multipliers it asks for.
pub fn worst_case(priced: Priced<'_>, facts: &RequestFacts, bytes_in: u64, default_output: u64) -> u64 {
    let row = priced.row;
    let known = priced.basis != Basis::Ceiling;
    let mut input = bytes_in;
    if facts.unbounded_input {
        input = input.max(row.context_window.unwrap_or(DEFAULT_CONTEXT_WINDOW));
    }
    let model_max = row.max_output.filter(|_| known);
    let output = match facts.max_tokens {
        Some(m) => model_max.map_or(m, |cap| m.min(cap)),
        None => model_max.unwrap_or(default_output),
    };
    let output = output.saturating_mul(facts.choices.max(1));
    row.worst_case(input, output, facts.web_searches, facts.billing)
}

/// Context window assumed for a model whose row does not say.
const DEFAULT_CONTEXT_WINDOW: u64 = 1_000_000;

fn unpriced_refusal(provider: Provider, model: &str, why: &str) -> GatewayError {
    let mut e = GatewayError::client(
        ErrorKind::BudgetExceeded,
        format!(
            "model {model:?} ({provider}) has no price in this gateway: {why}; an operator can add one with `conduit prices import FILE`"
        ),
    );
    e.should_retry = Some(false);
    e
}

fn over_budget(o: &OverBudget) -> GatewayError {
    let usd = crate::money::usd;
    let who = match o.scope.split_once(':') {
        Some(("key", id)) => format!("key {id}"),
        Some(("team", t)) => format!("team {t}"),
        _ => "the organisation".into(),
    };
    let mut e = GatewayError::client(
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

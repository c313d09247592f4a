//! Prices: what a model's tokens cost, in integer micro-dollars.
//!
//! **The shipped table** (`crates/wire/prices.toml`) is generated, not hand-edited: [`generate`] reads
//! LiteLLM's `model_prices_and_context_window.json` (the copy inside a pinned `litellm` release)
//! plus our own rows (`crates/wire/prices-overrides.toml`) and writes one row per model id with its
//! source, source version and effective date, its context window and maximum output. Refreshing it
//! is one command (`crates/wire/prices-refresh.sh`), and the result is a reviewable diff.
//!
//! **Matching never prices one model by another's row.** A row names one exact model id. A
//! request's model resolves to a row by, in order: the id itself; the id without a provider prefix
//! (`anthropic/…`), a bracketed tag (`claude-opus-4-8[1m]`) or an ARN path (Bedrock); the id
//! without a date suffix (`-20250929`, `-2025-08-07`) — a dated snapshot of a listed alias — and,
//! for Bedrock, without the version suffix (`-v1:0`, `:0`). Azure OpenAI falls back to OpenAI's
//! row of the same id (Azure's global deployments bill at list price). There are no globs: `gpt-5`
//! does not price `gpt-5.5`.
//!
//! **An unknown model is never $0 and never breaks a budget.** [`PriceTable::price`] answers with
//! the provider's *ceiling* — its most expensive current model, or the model an operator names in
//! `[prices.ceiling]` — marked [`Basis::Ceiling`], so reservations and bills are conservative and
//! visibly so. `[prices] unpriced = "refuse"` refuses such requests instead.
//!
//! An organisation's negotiated prices override the shipped rows (`conduit prices import`, LiteLLM
//! JSON or `[[price]]` TOML, kept in the store); such rows say so (`origin = "override"`).
//!
//! Rates are held as micro-dollars per million tokens, so a cost is an exact integer computation:
//! `Σ tokens × rate / 10⁶`, rounded half up once per request.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::billing::{Billing, Tier};
use crate::protocol::Provider;
use crate::usage::Usage;
use conduit_core::error::{Error, Result};

/// Micro-dollars per million tokens, per token class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Rates {
    /// Uncached input.
    pub input: u64,
    /// Output.
    pub output: u64,
    /// Cache write (the 5-minute TTL rate).
    pub cache_write: u64,
    /// Cache read.
    pub cache_read: u64,
    /// Cache write with the 1-hour TTL; `None`: the 5-minute rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_1h: Option<u64>,
}

impl Rates {
    /// The larger of each class (for worst cases over several rate sets).
    fn max(self, o: Rates) -> Rates {
        Rates {
            input: self.input.max(o.input),
            output: self.output.max(o.output),
            cache_write: self.cache_write.max(o.cache_write),
            cache_read: self.cache_read.max(o.cache_read),
            cache_write_1h: match (self.cache_write_1h, o.cache_write_1h) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            },
        }
    }

    /// Micro-dollars × 10⁶ for `usage` at these rates (no rounding yet).
    fn scaled(&self, usage: &Usage) -> u128 {
        let one_hour = usage.cache_write_1h.min(usage.cache_write);
        let five_min = usage.cache_write - one_hour;
        usage.input as u128 * self.input as u128
            + usage.output as u128 * self.output as u128
            + five_min as u128 * self.cache_write as u128
            + one_hour as u128 * self.cache_write_1h.unwrap_or(self.cache_write) as u128
            + usage.cache_read as u128 * self.cache_read as u128
    }
}

/// One priced model id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceRow {
    /// Whose model this is.
    pub provider: Provider,
    /// The exact model id (lowercase).
    pub model: String,
    /// Standard rates.
    pub rates: Rates,
    /// Long-context tier: total input above the threshold prices the whole request at these rates.
    #[serde(default)]
    pub long_context: Option<(u64, Rates)>,
    /// Batch rates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<Rates>,
    /// Priority-tier rates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Rates>,
    /// Flex-tier rates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flex: Option<Rates>,
    /// Server-side web search fee, micro-dollars per search.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_search_micros: Option<u64>,
    /// Multiplier for US-only inference, in thousandths (1100 = ×1.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub us_only_permille: Option<u32>,
    /// Multiplier for fast mode, in thousandths.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fast_permille: Option<u32>,
    /// Input tokens the model accepts (what an input the body does not bound is charged at).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_window: Option<u64>,
    /// Most output tokens one request can produce.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output: Option<u64>,
    /// The date the source gives for the model's retirement, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprecated: Option<String>,
    /// When the price took effect (YYYY-MM-DD): for generated rows, the date of the table.
    pub effective: String,
    /// Where it comes from (URL or description).
    pub source: String,
    /// The source's version (`litellm 1.108.7`, `conduit override`, `imported`).
    #[serde(default)]
    pub source_version: String,
    /// `shipped` or `override`.
    #[serde(default = "shipped")]
    pub origin: String,
}

fn shipped() -> String {
    "shipped".into()
}

impl PriceRow {
    /// Cost of `usage` at standard rates, micro-dollars rounded half up.
    pub fn cost_micros(&self, usage: &Usage) -> u64 {
        self.cost(usage, Billing::default())
    }

    /// Cost of `usage` billed as `billing`, micro-dollars rounded half up: the tier's rates (or the
    /// long-context rates above their threshold), the fast / US-only multipliers, and web searches.
    pub fn cost(&self, usage: &Usage, billing: Billing) -> u64 {
        let rates = self.rates_for(usage, billing.tier);
        let mut total = rates.scaled(usage);
        for (on, permille) in [
            (billing.fast, self.fast_permille),
            (billing.us_only, self.us_only_permille),
        ] {
            if let (true, Some(p)) = (on, permille) {
                total = total * p as u128 / 1000;
            }
        }
        total += usage.web_searches as u128 * self.web_search_micros.unwrap_or(0) as u128 * 1_000_000;
        ((total + 500_000) / 1_000_000).min(u64::MAX as u128) as u64
    }

    fn rates_for(&self, usage: &Usage, tier: Tier) -> Rates {
        let tiered = match tier {
            Tier::Standard => None,
            Tier::Priority => self.priority,
            Tier::Flex => self.flex,
            Tier::Batch => self.batch,
        };
        let long = match self.long_context {
            Some((threshold, long)) if usage.total_input() > threshold => Some(long),
            _ => None,
        };
        match (tiered, long) {
            (Some(t), Some(l)) => t.max(l), // a tier above the threshold: never less than either
            (Some(t), None) => t,
            (None, Some(l)) => l,
            (None, None) => self.rates,
        }
    }

    /// The most a request can cost when up to `max_input` input tokens (each priced at the dearest
    /// input class) and `max_output` output tokens are billed as `billing`, with `web_searches`.
    pub fn worst_case(&self, max_input: u64, max_output: u64, web_searches: u64, billing: Billing) -> u64 {
        let as_class = |f: fn(&mut Usage, u64)| {
            let mut u = Usage {
                output: max_output,
                web_searches,
                ..Usage::default()
            };
            f(&mut u, max_input);
            self.cost(&u, billing)
        };
        [
            as_class(|u, n| u.input = n),
            as_class(|u, n| u.cache_write = n),
            as_class(|u, n| {
                u.cache_write = n;
                u.cache_write_1h = n;
            }),
            as_class(|u, n| u.cache_read = n),
        ]
        .into_iter()
        .max()
        .unwrap_or(0)
    }

    fn is_current(&self, today: &str) -> bool {
        self.deprecated.as_deref().is_none_or(|d| d > today)
    }
}

/// How a request's price was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Basis {
    /// The model's own row in the shipped table.
    Listed,
    /// The organisation's own price for the model.
    Override,
    /// The model has no price: billed at its provider's ceiling.
    Ceiling,
}

impl Basis {
    /// `listed` / `override` / `ceiling`.
    pub fn as_str(self) -> &'static str {
        match self {
            Basis::Listed => "listed",
            Basis::Override => "override",
            Basis::Ceiling => "ceiling",
        }
    }
}

/// A row and how it was found.
#[derive(Debug, Clone, Copy)]
pub struct Priced<'a> {
    /// The row that prices the request.
    pub row: &'a PriceRow,
    /// Why this row.
    pub basis: Basis,
}

/// What happens to a request for a model with no price.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Unpriced {
    /// Billed (and reserved) at the provider's ceiling, marked as such.
    #[default]
    Ceiling,
    /// Refused.
    Refuse,
}

/// `[prices]` in the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPrices {
    /// `ceiling` (default) or `refuse`: what a billable request for a model with no price gets.
    pub unpriced: Option<String>,
    /// Per provider, the model whose row prices unknown models (default: the provider's most
    /// expensive current model), e.g. `ceiling = { openai = "gpt-5.5" }`.
    #[serde(default)]
    pub ceiling: BTreeMap<String, String>,
}

/// Validated `[prices]`.
#[derive(Debug, Clone, Default)]
pub struct PriceConfig {
    /// What unknown models get.
    pub unpriced: Unpriced,
    /// Operator-chosen ceiling model per provider.
    pub ceiling: BTreeMap<Provider, String>,
}

impl RawPrices {
    /// Validates against the shipped table (a ceiling must name a priced model).
    pub fn validate(self) -> Result<PriceConfig> {
        let unpriced = match self.unpriced.as_deref().map(str::trim) {
            None | Some("ceiling") => Unpriced::Ceiling,
            Some("refuse") => Unpriced::Refuse,
            Some(other) => {
                return Err(Error::msg(format!(
                    "[prices].unpriced is {other:?}; expected \"ceiling\" (bill unknown models at the provider's dearest rates) or \"refuse\""
                )));
            }
        };
        let table = PriceTable::shipped()?;
        let mut ceiling = BTreeMap::new();
        for (name, model) in self.ceiling {
            let Some(provider) = Provider::parse(&name) else {
                return Err(Error::msg(format!(
                    "[prices.ceiling] names provider {name:?}; expected one of: {}",
                    Provider::names()
                )));
            };
            if table.lookup(provider, &model).is_none() {
                return Err(Error::msg(format!(
                    "[prices.ceiling] {provider} = {model:?} is not a model in the price table; name one `conduit prices list` shows"
                )));
            }
            ceiling.insert(provider, model.to_ascii_lowercase());
        }
        Ok(PriceConfig { unpriced, ceiling })
    }
}

/// The prices in force: overrides, then the shipped table; and each provider's ceiling.
#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    rows: Vec<PriceRow>,
    index: HashMap<(Provider, String), usize>,
    ceiling: HashMap<Provider, usize>,
    config: PriceConfig,
}

impl PriceTable {
    /// The shipped table.
    pub fn shipped() -> Result<PriceTable> {
        // Parsed once per process (≈ 550 rows); every table starts from a copy.
        static SHIPPED: std::sync::LazyLock<std::result::Result<Vec<PriceRow>, String>> =
            std::sync::LazyLock::new(|| {
                parse_toml(include_str!("../prices.toml"), "shipped")
                    .map_err(|e| format!("the shipped price table (crates/wire/prices.toml): {e}"))
            });
        let rows = SHIPPED.as_ref().map_err(|e| Error::msg(e.clone()))?.clone();
        Ok(PriceTable::from_rows(rows, PriceConfig::default()))
    }

    fn from_rows(rows: Vec<PriceRow>, config: PriceConfig) -> PriceTable {
        let mut t = PriceTable {
            rows,
            config,
            ..PriceTable::default()
        };
        t.reindex();
        t
    }

    fn reindex(&mut self) {
        self.index = self
            .rows
            .iter()
            .enumerate()
            .map(|(i, r)| ((r.provider, r.model.clone()), i))
            .collect();
        // The ceiling: the operator's choice, else the provider's dearest current chat model
        // (embedding-only rows are cheap and do not count), by output rate, then input rate.
        let today = conduit_core::clock::format_date(conduit_core::clock::now_unix());
        let mut ceiling: HashMap<Provider, usize> = HashMap::new();
        for (i, r) in self.rows.iter().enumerate() {
            if !r.is_current(&today) || r.rates.output == 0 {
                continue;
            }
            let dearer = |j: &usize| {
                let c = &self.rows[*j];
                (r.rates.output, r.rates.input, &c.model) > (c.rates.output, c.rates.input, &r.model)
            };
            if ceiling.get(&r.provider).is_none_or(dearer) {
                ceiling.insert(r.provider, i);
            }
        }
        for (provider, model) in &self.config.ceiling {
            if let Some(&i) = self.index.get(&(*provider, model.clone())) {
                ceiling.insert(*provider, i);
            }
        }
        self.ceiling = ceiling;
    }

    /// The table with `config`'s ceiling and unpriced policy.
    pub fn with_config(mut self, config: PriceConfig) -> PriceTable {
        self.config = config;
        self.reindex();
        self
    }

    /// The shipped table with `overrides` replacing rows of the same provider and model. Legacy
    /// glob rows (`gpt-5*`, accepted by older versions) match nothing and are reported at load.
    pub fn with_overrides(mut self, overrides: Vec<PriceRow>) -> PriceTable {
        for o in overrides {
            if o.model.contains('*') {
                tracing::warn!(
                    provider = %o.provider,
                    model = %o.model,
                    "ignoring a stored price override with a glob: prices now name exact model ids (a glob would price later models too); re-import it listing each id"
                );
                continue;
            }
            self.rows.retain(|r| !(r.provider == o.provider && r.model == o.model));
            self.rows.push(o);
        }
        self.reindex();
        self
    }

    /// What happens to unknown models.
    pub fn unpriced(&self) -> Unpriced {
        self.config.unpriced
    }

    /// The model's own row (override or shipped), by the matching rules of the module docs; `None`
    /// when the model has none.
    pub fn lookup(&self, provider: Provider, model: &str) -> Option<&PriceRow> {
        let model = model.trim().to_ascii_lowercase();
        let own = |p: Provider| candidates(p, &model).find_map(|m| self.index.get(&(p, m)));
        let found = own(provider).or_else(|| provider.price_fallback().and_then(own));
        found.map(|&i| &self.rows[i])
    }

    /// The row that prices a request: its own, else its provider's ceiling (`None` only for a
    /// provider with no rows at all).
    pub fn price(&self, provider: Provider, model: &str) -> Option<Priced<'_>> {
        if let Some(row) = self.lookup(provider, model) {
            let basis = if row.origin == "override" {
                Basis::Override
            } else {
                Basis::Listed
            };
            return Some(Priced { row, basis });
        }
        self.ceiling_row(provider).map(|row| Priced {
            row,
            basis: Basis::Ceiling,
        })
    }

    /// The provider's ceiling row: its own, else its [`Provider::price_fallback`]'s.
    pub fn ceiling_row(&self, provider: Provider) -> Option<&PriceRow> {
        let i = self
            .ceiling
            .get(&provider)
            .or_else(|| provider.price_fallback().and_then(|p| self.ceiling.get(&p)))?;
        Some(&self.rows[*i])
    }

    /// Every row, sorted by provider and model.
    pub fn rows(&self) -> Vec<&PriceRow> {
        let mut all: Vec<&PriceRow> = self.rows.iter().collect();
        all.sort_by(|a, b| (&a.provider, &a.model).cmp(&(&b.provider, &b.model)));
        all
    }
}

/// Logs, once per process for each (provider, model), that a model has no price and is billed at
/// the ceiling, with the command that fixes it. Bounded: after 1,000 distinct models, one last
/// line says that further ones are not logged (the ledger and `/metrics` still count them).
pub fn note_unpriced(provider: Provider, model: &str, ceiling: &PriceRow) {
    use std::collections::HashSet;
    use std::sync::{LazyLock, Mutex};
    static SEEN: LazyLock<Mutex<HashSet<(String, String)>>> = LazyLock::new(Mutex::default);
    let provider = provider.as_str();
    const MAX: usize = 1000;
    let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    if seen.len() > MAX || seen.contains(&(provider.to_string(), model.to_string())) {
        return;
    }
    if seen.len() == MAX {
        tracing::warn!("more than {MAX} models without a price; not logging further ones");
        seen.insert((String::new(), String::new()));
        return;
    }
    seen.insert((provider.to_string(), model.to_string()));
    tracing::warn!(
        provider,
        model,
        ceiling = %ceiling.model,
        "model has no price: its requests are reserved and billed at the ceiling ({}'s rates) and marked price=ceiling; add its price with `conduit prices import FILE` (a [[price]] row for {provider}/{model})",
        ceiling.model
    );
}

/// The ids a model may be listed under, most specific first (module docs: matching).
fn candidates(provider: Provider, model: &str) -> impl Iterator<Item = String> {
    let mut out: Vec<String> = Vec::with_capacity(6);
    let mut push = |s: &str| {
        if !s.is_empty() && !out.iter().any(|o| o == s) {
            out.push(s.to_string());
        }
    };
    push(model);
    let mut base = model;
    if let Some(i) = base.find('[')
        && base.ends_with(']')
    {
        base = &base[..i]; // `claude-opus-4-8[1m]`
    }
    for p in Provider::ALL {
        base = base
            .strip_prefix(p.as_str())
            .and_then(|rest| rest.strip_prefix('/'))
            .unwrap_or(base);
    }
    if provider == Provider::Bedrock && base.starts_with("arn:") {
        // `arn:aws:bedrock:…:inference-profile/us.anthropic.…` or `…:foundation-model/anthropic.…`;
        // an application inference profile's ARN names no model and matches nothing.
        for kind in [":inference-profile/", ":foundation-model/"] {
            if let Some(i) = base.find(kind) {
                base = &base[i + kind.len()..];
            }
        }
    }
    push(base);
    let undated = strip_date(base);
    push(undated);
    if provider == Provider::Bedrock {
        // `…-v1:0` → `…-v1` → `…`, and the same for the undated id.
        for id in [base, undated] {
            let no_minor = match id.rfind(':') {
                Some(i) if id[i + 1..].bytes().all(|b| b.is_ascii_digit()) && i + 1 < id.len() => &id[..i],
                _ => id,
            };
            push(no_minor);
            let no_version = match no_minor.rfind("-v") {
                Some(i) if no_minor.len() > i + 2 && no_minor[i + 2..].bytes().all(|b| b.is_ascii_digit()) => {
                    &no_minor[..i]
                }
                _ => no_minor,
            };
            push(no_version);
            push(strip_date(no_version));
        }
    }
    out.into_iter()
}

/// `x-20250929` → `x`, `x-2025-08-07` → `x`; Bedrock's `x-20250929-v1:0` → `x-v1:0`.
fn strip_date(id: &str) -> &str {
    fn digits(s: &str) -> bool {
        s.bytes().all(|b| b.is_ascii_digit())
    }
    let b = id.as_bytes();
    if id.len() > 9 && b[id.len() - 9] == b'-' && digits(&id[id.len() - 8..]) {
        return &id[..id.len() - 9];
    }
    if id.len() > 11
        && b[id.len() - 11] == b'-'
        && digits(&id[id.len() - 10..id.len() - 6])
        && b[id.len() - 6] == b'-'
        && digits(&id[id.len() - 5..id.len() - 3])
        && b[id.len() - 3] == b'-'
        && digits(&id[id.len() - 2..])
    {
        return &id[..id.len() - 11];
    }
    id
}

/// The Anthropic model a Bedrock model id or inference-profile ARN names: the last ARN segment,
/// without the region prefix (`us.`, `global.`), `anthropic.` and the version suffix (`-v1:0`).
/// Used to judge a Bedrock request by the model allow-list, never to price it.
pub fn bedrock_to_anthropic(id: &str) -> String {
    let id = id.rsplit('/').next().unwrap_or(id);
    let id = id
        .find("anthropic.")
        .map(|i| &id[i + "anthropic.".len()..])
        .unwrap_or(id);
    let id = match id.rfind("-v") {
        Some(i) if id[i + 2..].bytes().all(|b| b.is_ascii_digit() || b == b':') && id.len() > i + 2 => &id[..i],
        _ => id,
    };
    id.to_string()
}

/// USD per million tokens (as written in files) → micro-dollars per million tokens.
fn usd_per_mtok(v: f64, what: &str) -> Result<u64> {
    if !v.is_finite() || !(0.0..=1_000_000.0).contains(&v) {
        return Err(Error::msg(format!(
            "{what} is {v}; expected USD per million tokens between 0 and 1000000"
        )));
    }
    Ok((v * 1e6).round() as u64)
}

/// Micro-dollars per million tokens → the exact decimal USD the files hold (`3750000` → `3.75`).
fn format_usd(micros: u64) -> String {
    let (whole, frac) = (micros / 1_000_000, micros % 1_000_000);
    if frac == 0 {
        return format!("{whole}.0");
    }
    let frac = format!("{frac:06}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    price: Vec<RawRow>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRow {
    provider: String,
    model: String,
    input: f64,
    output: f64,
    cache_write: Option<f64>,
    cache_write_1h: Option<f64>,
    cache_read: Option<f64>,
    long_context_threshold: Option<u64>,
    long_input: Option<f64>,
    long_output: Option<f64>,
    long_cache_write: Option<f64>,
    long_cache_read: Option<f64>,
    batch_input: Option<f64>,
    batch_output: Option<f64>,
    batch_cache_write: Option<f64>,
    batch_cache_read: Option<f64>,
    priority_input: Option<f64>,
    priority_output: Option<f64>,
    priority_cache_write: Option<f64>,
    priority_cache_read: Option<f64>,
    flex_input: Option<f64>,
    flex_output: Option<f64>,
    flex_cache_write: Option<f64>,
    flex_cache_read: Option<f64>,
    /// USD per 1,000 server-side web searches.
    web_search_per_1k: Option<f64>,
    us_only_multiplier: Option<f64>,
    fast_multiplier: Option<f64>,
    context_window: Option<u64>,
    max_output: Option<u64>,
    deprecated: Option<String>,
    effective: String,
    source: String,
    source_version: Option<String>,
}

/// Parses `[[price]]` rows (USD per million tokens). Missing cache rates default to the input rate,
/// so an unpriced cache class is never cheaper than it may really be. Model ids are exact: a glob
/// is refused, since it would price models released later.
pub fn parse_toml(text: &str, origin: &str) -> Result<Vec<PriceRow>> {
    let file: RawFile = toml::from_str(text).map_err(|e| Error::msg(format!("price file: {e}")))?;
    file.price.into_iter().map(|r| row_from_raw(r, origin)).collect()
}

fn row_from_raw(r: RawRow, origin: &str) -> Result<PriceRow> {
    let name = format!("price {}/{}", r.provider, r.model);
    if r.model.contains('*') || r.model.trim().is_empty() {
        return Err(Error::msg(format!(
            "{name}: model must be one exact model id; a glob such as \"gpt-5*\" would also price later models (gpt-5.5 is not gpt-5). List each id; dated snapshots (-20250929) match their id automatically"
        )));
    }
    let rates = |i: f64, o: f64, cw: Option<f64>, cr: Option<f64>, cw1h: Option<f64>, what: &str| -> Result<Rates> {
        Ok(Rates {
            input: usd_per_mtok(i, &format!("{name} {what}input"))?,
            output: usd_per_mtok(o, &format!("{name} {what}output"))?,
            cache_write: usd_per_mtok(cw.unwrap_or(i), &format!("{name} {what}cache_write"))?,
            cache_read: usd_per_mtok(cr.unwrap_or(i), &format!("{name} {what}cache_read"))?,
            cache_write_1h: cw1h
                .map(|v| usd_per_mtok(v, &format!("{name} {what}cache_write_1h")))
                .transpose()?,
        })
    };
    let long_context = match (r.long_context_threshold, r.long_input, r.long_output) {
        (Some(t), Some(i), Some(o)) => Some((t, rates(i, o, r.long_cache_write, r.long_cache_read, None, "long_")?)),
        (None, None, None) => None,
        _ => {
            return Err(Error::msg(format!(
                "{name}: a long-context tier needs long_context_threshold, long_input and long_output together"
            )));
        }
    };
    let tier = |i: Option<f64>, o: Option<f64>, cw, cr, what: &str| -> Result<Option<Rates>> {
        match (i, o) {
            (Some(i), Some(o)) => Ok(Some(rates(i, o, cw, cr, None, what)?)),
            (None, None) => Ok(None),
            _ => Err(Error::msg(format!("{name}: {what}input and {what}output go together"))),
        }
    };
    let multiplier = |v: Option<f64>, what: &str| -> Result<Option<u32>> {
        match v {
            None => Ok(None),
            Some(m) if m.is_finite() && (1.0..=100.0).contains(&m) => Ok(Some((m * 1000.0).round() as u32)),
            Some(m) => Err(Error::msg(format!(
                "{name}: {what} is {m}; expected a factor from 1 to 100"
            ))),
        }
    };
    let Some(provider) = Provider::parse(&r.provider) else {
        return Err(Error::msg(format!(
            "{name}: unknown provider {:?}; expected one of: {}",
            r.provider,
            Provider::names()
        )));
    };
    Ok(PriceRow {
        provider,
        model: r.model.trim().to_ascii_lowercase(),
        rates: rates(r.input, r.output, r.cache_write, r.cache_read, r.cache_write_1h, "")?,
        long_context,
        batch: tier(
            r.batch_input,
            r.batch_output,
            r.batch_cache_write,
            r.batch_cache_read,
            "batch_",
        )?,
        priority: tier(
            r.priority_input,
            r.priority_output,
            r.priority_cache_write,
            r.priority_cache_read,
            "priority_",
        )?,
        flex: tier(
            r.flex_input,
            r.flex_output,
            r.flex_cache_write,
            r.flex_cache_read,
            "flex_",
        )?,
        web_search_micros: r
            .web_search_per_1k
            .map(|v| usd_per_mtok(v, &format!("{name} web_search_per_1k")).map(|m| m / 1000))
            .transpose()?,
        us_only_permille: multiplier(r.us_only_multiplier, "us_only_multiplier")?,
        fast_permille: multiplier(r.fast_multiplier, "fast_multiplier")?,
        context_window: r.context_window,
        max_output: r.max_output,
        deprecated: r.deprecated,
        effective: r.effective,
        source: r.source,
        source_version: r.source_version.unwrap_or_else(|| origin.to_string()),
        origin: origin.into(),
    })
}

/// One row as a `[[price]]` TOML table (the format `parse_toml` reads).
fn row_to_toml(r: &PriceRow, out: &mut String) {
    use std::fmt::Write as _;
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    let usd = format_usd;
    let _ = writeln!(out, "[[price]]");
    let _ = writeln!(out, "provider = {}", q(r.provider.as_str()));
    let _ = writeln!(out, "model = {}", q(&r.model));
    let mut rates = |prefix: &str, x: &Rates| {
        let _ = writeln!(out, "{prefix}input = {}", usd(x.input));
        let _ = writeln!(out, "{prefix}output = {}", usd(x.output));
        let _ = writeln!(out, "{prefix}cache_write = {}", usd(x.cache_write));
        if let Some(v) = x.cache_write_1h {
            let _ = writeln!(out, "{prefix}cache_write_1h = {}", usd(v));
        }
        let _ = writeln!(out, "{prefix}cache_read = {}", usd(x.cache_read));
    };
    rates("", &r.rates);
    if let Some((t, l)) = &r.long_context {
        let _ = writeln!(out, "long_context_threshold = {t}");
        let _ = writeln!(out, "long_input = {}", usd(l.input));
        let _ = writeln!(out, "long_output = {}", usd(l.output));
        let _ = writeln!(out, "long_cache_write = {}", usd(l.cache_write));
        let _ = writeln!(out, "long_cache_read = {}", usd(l.cache_read));
    }
    for (prefix, tier) in [("batch_", &r.batch), ("priority_", &r.priority), ("flex_", &r.flex)] {
        if let Some(t) = tier {
            let _ = writeln!(out, "{prefix}input = {}", usd(t.input));
            let _ = writeln!(out, "{prefix}output = {}", usd(t.output));
            let _ = writeln!(out, "{prefix}cache_write = {}", usd(t.cache_write));
            let _ = writeln!(out, "{prefix}cache_read = {}", usd(t.cache_read));
        }
    }
    if let Some(w) = r.web_search_micros {
        let _ = writeln!(out, "web_search_per_1k = {}", usd(w * 1000));
    }
    for (key, p) in [
        ("us_only_multiplier", r.us_only_permille),
        ("fast_multiplier", r.fast_permille),
    ] {
        if let Some(p) = p {
            let _ = writeln!(out, "{key} = {}", usd(p as u64 * 1000));
        }
    }
    if let Some(c) = r.context_window {
        let _ = writeln!(out, "context_window = {c}");
    }
    if let Some(m) = r.max_output {
        let _ = writeln!(out, "max_output = {m}");
    }
    if let Some(d) = &r.deprecated {
        let _ = writeln!(out, "deprecated = {}", q(d));
    }
    let _ = writeln!(out, "effective = {}", q(&r.effective));
    let _ = writeln!(out, "source = {}", q(&r.source));
    let _ = writeln!(out, "source_version = {}\n", q(&r.source_version));
}

/// What an import read and what it left out.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Imported {
    /// Rows to store.
    pub rows: Vec<PriceRow>,
    /// Entries left out, by reason.
    pub skipped: BTreeMap<String, usize>,
}

/// The modes of LiteLLM entries that are priced per token for the endpoints Conduit meters.
const TOKEN_MODES: &[&str] = &["chat", "responses", "completion", "embedding", "moderation"];

/// Reads LiteLLM's `model_prices_and_context_window.json` (USD per token) into rows: the four
/// providers Conduit routes, token-priced modes only, one row per exact model id. Region-,
/// commitment- and deployment-type-scoped keys (`bedrock/us-east-1/…`, `azure/eu/…`) and fine-tunes
/// are left out (counted in `skipped`).
pub fn import_litellm(json: &[u8], today: &str) -> Result<Imported> {
    read_litellm(json, today, "imported", "override")
}

fn read_litellm(json: &[u8], today: &str, version: &str, origin: &str) -> Result<Imported> {
    let v: Value = serde_json::from_slice(json).map_err(|e| Error::msg(format!("not a LiteLLM price file: {e}")))?;
    let entries = v
        .as_object()
        .ok_or_else(|| Error::msg("not a LiteLLM price file: expected a JSON object of models"))?;
    let mut out = Imported::default();
    let mut rows: BTreeMap<(Provider, String), PriceRow> = BTreeMap::new();
    let mut skip = |why: String| *out.skipped.entry(why).or_default() += 1;
    for (name, e) in entries {
        if name == "sample_spec" {
            continue;
        }
        let raw_provider = e["litellm_provider"].as_str().unwrap_or("");
        let provider = match Provider::from_litellm(raw_provider) {
            Some(p) => p,
            None if raw_provider.is_empty() => {
                skip("(no provider)".into());
                continue;
            }
            None => {
                skip(raw_provider.to_string());
                continue;
            }
        };
        let mode = e["mode"].as_str().unwrap_or("chat");
        if !TOKEN_MODES.contains(&mode) {
            skip(format!("{provider} ({mode}: not priced per token)"));
            continue;
        }
        let id = name.strip_prefix(&format!("{provider}/")).unwrap_or(name);
        if id.contains('/') {
            skip(format!("{provider} (region, commitment or deployment-type scoped)"));
            continue;
        }
        if id.starts_with("ft:") {
            skip(format!("{provider} (fine-tuned)"));
            continue;
        }
        let Some(row) = litellm_row(provider, id, e, today, version, origin)? else {
            skip(format!("{provider} (no token prices)"));
            continue;
        };
        let key = (row.provider, row.model.clone());
        match rows.get_mut(&key) {
            // The same id under `bedrock` and `bedrock_converse`: the dearer rates win.
            Some(existing) if existing.rates != row.rates => {
                existing.rates = existing.rates.max(row.rates);
            }
            Some(_) => {}
            None => {
                rows.insert(key, row);
            }
        }
    }
    out.rows = rows.into_values().collect();
    Ok(out)
}

fn litellm_row(
    provider: Provider,
    id: &str,
    e: &Value,
    today: &str,
    version: &str,
    origin: &str,
) -> Result<Option<PriceRow>> {
    let per_token = |key: &str| e[key].as_f64();
    let (Some(input), Some(output)) = (
        per_token("input_cost_per_token"),
        per_token("output_cost_per_token").or(Some(0.0)),
    ) else {
        return Ok(None);
    };
    let m = |v: f64| usd_per_mtok(v * 1e6, &format!("{id} price"));
    let rates_with = |suffix: &str| -> Result<Option<Rates>> {
        let Some(i) = per_token(&format!("input_cost_per_token{suffix}")) else {
            return Ok(None);
        };
        let o = per_token(&format!("output_cost_per_token{suffix}")).unwrap_or(output);
        Ok(Some(Rates {
            input: m(i)?,
            output: m(o)?,
            cache_write: m(per_token(&format!("cache_creation_input_token_cost{suffix}")).unwrap_or(i))?,
            cache_read: m(per_token(&format!("cache_read_input_token_cost{suffix}")).unwrap_or(i))?,
            cache_write_1h: None,
        }))
    };
    let rates = Rates {
        input: m(input)?,
        output: m(output)?,
        cache_write: m(per_token("cache_creation_input_token_cost").unwrap_or(input))?,
        cache_read: m(per_token("cache_read_input_token_cost").unwrap_or(input))?,
        cache_write_1h: per_token("cache_creation_input_token_cost_above_1hr")
            .map(m)
            .transpose()?,
    };
    // Long-context tiers are named by their threshold: `input_cost_per_token_above_272k_tokens`.
    let mut long_context = None;
    if let Some(obj) = e.as_object() {
        let thresholds = obj.keys().filter_map(|k| {
            k.strip_prefix("input_cost_per_token_above_")?
                .strip_suffix("k_tokens")?
                .parse::<u64>()
                .ok()
        });
        if let Some(k) = thresholds.min() {
            let suffix = format!("_above_{k}k_tokens");
            long_context = rates_with(&suffix)?.map(|r| (k * 1000, r));
        }
    }
    let web_search = e["search_context_cost_per_query"]
        .as_object()
        .and_then(|o| o.values().filter_map(Value::as_f64).reduce(f64::max))
        .map(|usd| (usd * 1e6).round() as u64);
    let multiplier = |k: &str| {
        e["provider_specific_entry"][k]
            .as_f64()
            .filter(|v| v.is_finite() && *v >= 1.0 && *v <= 100.0)
            .map(|v| (v * 1000.0).round() as u32)
    };
    let (us_only, fast) = if provider == Provider::Anthropic {
        (multiplier("us"), multiplier("fast"))
    } else {
        (None, None)
    };
    let source = e["source"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| provider.pricing_page().to_string());
    Ok(Some(PriceRow {
        provider,
        model: id.to_ascii_lowercase(),
        rates,
        long_context,
        batch: rates_with("_batches")?,
        priority: rates_with("_priority")?,
        flex: rates_with("_flex")?,
        web_search_micros: web_search,
        us_only_permille: us_only,
        fast_permille: fast,
        context_window: e["max_input_tokens"].as_u64().or_else(|| e["max_tokens"].as_u64()),
        max_output: e["max_output_tokens"].as_u64(),
        deprecated: e["deprecation_date"].as_str().map(str::to_string),
        effective: today.to_string(),
        source,
        source_version: version.to_string(),
        origin: origin.to_string(),
    }))
}

/// The generated table and what went into it.
#[derive(Debug)]
pub struct Generated {
    /// The TOML text of `crates/wire/prices.toml`.
    pub text: String,
    /// Rows per provider.
    pub counts: BTreeMap<String, usize>,
    /// Source entries left out, by reason.
    pub skipped: BTreeMap<String, usize>,
}

/// Builds the shipped table from LiteLLM's price map (`source_version` names it, e.g.
/// `litellm 1.108.7`) and our own rows (`overrides`, `[[price]]` TOML: they replace or add rows and
/// keep their own source), dated `date`. Deterministic: the same inputs give the same bytes.
pub fn generate(litellm_json: &[u8], overrides: &str, source_version: &str, date: &str) -> Result<Generated> {
    let imported = read_litellm(litellm_json, date, source_version, "shipped")?;
    let mut rows: BTreeMap<(Provider, String), PriceRow> = imported
        .rows
        .into_iter()
        .map(|r| ((r.provider, r.model.clone()), r))
        .collect();
    for r in parse_toml(overrides, "shipped").map_err(|e| e.context("crates/wire/prices-overrides.toml"))? {
        rows.insert((r.provider, r.model.clone()), r);
    }
    let mut counts = BTreeMap::new();
    let mut text = format!(
        "# Conduit's shipped price table — GENERATED, do not edit by hand.\n\
         # Source: LiteLLM's model_prices_and_context_window.json ({source_version}), plus crates/wire/prices-overrides.toml.\n\
         # Refresh: crates/wire/prices-refresh.sh (docs/metering.md). USD per million tokens; one row per exact model id.\n\
         # Table date: {date}. Rows: {}.\n\n",
        rows.len()
    );
    for r in rows.values() {
        *counts.entry(r.provider.as_str().to_string()).or_default() += 1;
        row_to_toml(r, &mut text);
    }
    Ok(Generated {
        text,
        counts,
        skipped: imported.skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(input: u64, output: u64, cache_read: u64, cache_write: u64) -> Usage {
        Usage {
            input,
            output,
            cache_read,
            cache_write,
            ..Usage::default()
        }
    }

    #[test]
    fn shipped_table_loads_and_prices_exactly() {
        let t = PriceTable::shipped().unwrap();
        // Claude Code 2.1.332's own figure for this usage (its total_cost_usd): $0.0350114.
        let opus = t.lookup(Provider::Anthropic, "claude-opus-5-5").unwrap();
        assert_eq!(opus.cost_micros(&u(5722, 15, 11442, 1907)), 35_011);
        // Claude Code 2.1.197's figure for claude-opus-4-8: $0.04662475.
        let opus48 = t.lookup(Provider::Anthropic, "claude-opus-4-8").unwrap();
        assert_eq!(opus48.cost_micros(&u(5722, 15, 11442, 1907)), 46_625);
        assert_eq!(opus.context_window, Some(1_000_000));
        assert!(
            t.lookup(Provider::Anthropic, "gpt-5").is_none(),
            "prices are per provider"
        );
    }

    #[test]
    fn no_model_is_priced_by_another_family_row() {
        let t = PriceTable::shipped().unwrap();
        let gpt5 = t.lookup(Provider::OpenAi, "gpt-5").unwrap();
        let gpt55 = t.lookup(Provider::OpenAi, "gpt-5.5").unwrap();
        assert_eq!((gpt5.model.as_str(), gpt55.model.as_str()), ("gpt-5", "gpt-5.5"));
        assert_ne!(gpt5.rates, gpt55.rates, "gpt-5.5 costs 4× gpt-5's input rate");
        for unknown in ["gpt-9-foo", "gpt-6.2-sol", "gpt-5.9", "gpt-55"] {
            assert!(t.lookup(Provider::OpenAi, unknown).is_none(), "{unknown}");
            assert_eq!(
                t.price(Provider::OpenAi, unknown).unwrap().basis,
                Basis::Ceiling,
                "{unknown}"
            );
        }
        assert!(t.lookup(Provider::Anthropic, "claude-opus-9").is_none());
        assert_eq!(
            t.price(Provider::Anthropic, "claude-opus-9").unwrap().basis,
            Basis::Ceiling
        );
        // Dated snapshots, tags and prefixes resolve to the alias's row.
        for (p, id, row) in [
            (Provider::OpenAi, "gpt-5-mini-2025-08-07", "gpt-5-mini-2025-08-07"),
            (Provider::OpenAi, "gpt-5.5-2027-01-01", "gpt-5.5"),
            (Provider::OpenAi, "openai/gpt-5.5", "gpt-5.5"),
            (Provider::Anthropic, "claude-opus-4-8[1m]", "claude-opus-4-8"),
            (Provider::Anthropic, "claude-sonnet-4-6-20270101", "claude-sonnet-4-6"),
            (Provider::Anthropic, "Claude-Opus-5-5", "claude-opus-5-5"),
            (
                Provider::Bedrock,
                "arn:aws:bedrock:us-east-1:1:inference-profile/us.anthropic.claude-opus-4-8",
                "us.anthropic.claude-opus-4-8",
            ),
            (
                Provider::Bedrock,
                "us.anthropic.claude-opus-4-8-v1:0",
                "us.anthropic.claude-opus-4-8",
            ),
            (Provider::Azure, "gpt-5.5", "gpt-5.5"),
        ] {
            assert_eq!(t.lookup(p, id).map(|r| r.model.as_str()), Some(row), "{p}/{id}");
        }
    }

    #[test]
    fn the_ceiling_is_the_providers_dearest_current_model() {
        let t = PriceTable::shipped().unwrap();
        for provider in Provider::ALL {
            let ceiling = t.ceiling_row(provider).unwrap();
            let today = conduit_core::clock::format_date(conduit_core::clock::now_unix());
            for r in t
                .rows()
                .into_iter()
                .filter(|r| r.provider == provider && r.is_current(&today))
            {
                assert!(
                    ceiling.rates.output >= r.rates.output,
                    "{provider}: {} is dearer",
                    r.model
                );
            }
        }
        let raw = RawPrices {
            ceiling: [("openai".to_string(), "gpt-5.5".to_string())].into(),
            ..RawPrices::default()
        };
        let t = PriceTable::shipped().unwrap().with_config(raw.validate().unwrap());
        assert_eq!(t.price(Provider::OpenAi, "gpt-9").unwrap().row.model, "gpt-5.5");
        let bad = RawPrices {
            ceiling: [("openai".to_string(), "gpt-9".to_string())].into(),
            ..RawPrices::default()
        };
        assert!(bad.validate().unwrap_err().to_string().contains("gpt-9"));
    }

    #[test]
    fn tiers_multipliers_and_fees() {
        let row = PriceRow {
            provider: Provider::Anthropic,
            model: "x".into(),
            rates: Rates {
                input: 4_000_000,
                output: 20_000_000,
                cache_write: 5_000_000,
                cache_read: 200_000,
                cache_write_1h: Some(8_000_000),
            },
            long_context: None,
            batch: Some(Rates {
                input: 2_000_000,
                output: 10_000_000,
                cache_write: 2_500_000,
                cache_read: 100_000,
                cache_write_1h: None,
            }),
            priority: None,
            flex: None,
            web_search_micros: Some(10_000),
            us_only_permille: Some(1100),
            fast_permille: Some(2000),
            context_window: Some(1_000_000),
            max_output: Some(128_000),
            deprecated: None,
            effective: "2026-12-01".into(),
            source: "test".into(),
            source_version: "test".into(),
            origin: "shipped".into(),
        };
        let one_m = u(1_000_000, 0, 0, 0);
        assert_eq!(row.cost_micros(&one_m), 4_000_000);
        let fast_us = Billing {
            fast: true,
            us_only: true,
            ..Billing::default()
        };
        assert_eq!(row.cost(&one_m, fast_us), 8_800_000);
        let batch = Billing {
            tier: Tier::Batch,
            ..Billing::default()
        };
        assert_eq!(row.cost(&one_m, batch), 2_000_000);
        let cached = Usage {
            cache_write: 1_000_000,
            cache_write_1h: 400_000,
            web_searches: 3,
            ..Usage::default()
        };
        assert_eq!(row.cost_micros(&cached), 600_000 * 5 + 400_000 * 8 + 30_000);
        // The worst case prices every input token at the dearest class (the 1 h cache write).
        assert_eq!(row.worst_case(1_000_000, 0, 0, Billing::default()), 8_000_000);
    }

    #[test]
    fn long_context_tier_prices_the_whole_request() {
        let t = PriceTable::shipped().unwrap();
        let s = t.lookup(Provider::OpenAi, "gpt-5.5").unwrap();
        let (threshold, long) = s.long_context.unwrap();
        assert_eq!(threshold, 272_000);
        assert_eq!(s.cost_micros(&u(272_000, 0, 0, 0)), 272_000 * s.rates.input / 1_000_000);
        assert_eq!(
            s.cost_micros(&u(272_001, 0, 0, 0)),
            (272_001 * long.input).div_ceil(1_000_000)
        );
    }

    #[test]
    fn rounding_is_half_up_once_per_request() {
        let row = parse_toml(
            "[[price]]\nprovider = \"openai\"\nmodel = \"x\"\ninput = 1.25\noutput = 10.0\ncache_write = 0.0\ncache_read = 0.125\neffective = \"2025-01-01\"\nsource = \"test\"\n",
            "override",
        )
        .unwrap()
        .remove(0);
        assert_eq!(row.cost_micros(&u(1, 0, 0, 0)), 1); // 1.25 → 1
        assert_eq!(row.cost_micros(&u(2, 0, 0, 0)), 3); // 2.5 → 3
        assert_eq!(row.cost_micros(&u(0, 0, 4, 0)), 1); // 0.5 → 1
        assert_eq!(row.cost_micros(&u(0, 0, 3, 0)), 0); // 0.375 → 0
        assert_eq!(row.cost_micros(&u(1_000_000, 1_000_000, 0, 0)), 11_250_000);
    }

    #[test]
    fn overrides_replace_rows_and_files_are_validated() {
        let o = parse_toml(
            "[[price]]\nprovider = \"openai\"\nmodel = \"gpt-5\"\ninput = 1.0\noutput = 2.0\neffective = \"2026-01-01\"\nsource = \"contract\"\n",
            "override",
        )
        .unwrap();
        let t = PriceTable::shipped().unwrap().with_overrides(o);
        let p = t.price(Provider::OpenAi, "gpt-5-2025-08-07").unwrap();
        assert_eq!(
            p.row.model, "gpt-5-2025-08-07",
            "the dated id keeps its own shipped row"
        );
        let p = t.price(Provider::OpenAi, "gpt-5").unwrap();
        assert_eq!(
            (p.row.rates.input, p.row.rates.cache_read, p.basis),
            (1_000_000, 1_000_000, Basis::Override)
        );
        for bad in [
            "[[price]]\nprovider = \"openai\"\nmodel = \"m\"\ninput = -1.0\noutput = 1.0\neffective = \"x\"\nsource = \"y\"\n",
            "[[price]]\nprovider = \"gemini\"\nmodel = \"m\"\ninput = 1.0\noutput = 1.0\neffective = \"x\"\nsource = \"y\"\n",
            "[[price]]\nprovider = \"openai\"\nmodel = \"m\"\ninput = 1.0\noutput = 1.0\nlong_input = 2.0\neffective = \"x\"\nsource = \"y\"\n",
            "[[price]]\nprovider = \"openai\"\nmodel = \"m\"\ninput = 1.0\noutput = 1.0\neffective = \"x\"\nsource = \"y\"\ncolour = 1\n",
            "[[price]]\nprovider = \"openai\"\nmodel = \"gpt-5*\"\ninput = 1.0\noutput = 1.0\neffective = \"x\"\nsource = \"y\"\n",
        ] {
            assert!(parse_toml(bad, "override").is_err(), "{bad}");
        }
        let glob = parse_toml(
            "[[price]]\nprovider = \"openai\"\nmodel = \"gpt-5*\"\ninput = 1.0\noutput = 1.0\neffective = \"x\"\nsource = \"y\"\n",
            "override",
        )
        .unwrap_err();
        assert!(glob.to_string().contains("gpt-5.5 is not gpt-5"), "{glob}");
    }

    #[test]
    fn litellm_import() {
        let json = br#"{
            "sample_spec": {"input_cost_per_token": 0},
            "claude-sonnet-4-5-20250929": {"litellm_provider": "anthropic", "mode": "chat", "input_cost_per_token": 3e-06, "output_cost_per_token": 1.5e-05,
                "cache_creation_input_token_cost": 3.75e-06, "cache_read_input_token_cost": 3e-07, "max_input_tokens": 200000,
                "input_cost_per_token_above_200k_tokens": 6e-06, "output_cost_per_token_above_200k_tokens": 2.25e-05},
            "openai/gpt-5": {"litellm_provider": "openai", "mode": "chat", "input_cost_per_token": 1.25e-06, "output_cost_per_token": 1e-05, "cache_read_input_token_cost": 1.25e-07,
                "input_cost_per_token_priority": 2.5e-06, "output_cost_per_token_priority": 2e-05},
            "anthropic.claude-3": {"litellm_provider": "bedrock", "mode": "chat", "input_cost_per_token": 1e-06, "output_cost_per_token": 1e-06},
            "bedrock/us-east-1/anthropic.claude-3": {"litellm_provider": "bedrock", "mode": "chat", "input_cost_per_token": 2e-06, "output_cost_per_token": 2e-06},
            "azure/gpt-4o": {"litellm_provider": "azure", "mode": "chat", "input_cost_per_token": 2.5e-06, "output_cost_per_token": 1e-05},
            "azure/eu/gpt-4o": {"litellm_provider": "azure", "mode": "chat", "input_cost_per_token": 2.75e-06, "output_cost_per_token": 1.1e-05},
            "ft:gpt-4o": {"litellm_provider": "openai", "mode": "chat", "input_cost_per_token": 1e-06, "output_cost_per_token": 1e-06},
            "vertex_ai/gemini": {"litellm_provider": "vertex_ai", "input_cost_per_token": 1e-06, "output_cost_per_token": 1e-06},
            "dall-e-3": {"litellm_provider": "openai", "mode": "image_generation", "output_cost_per_image": 0.04}
        }"#;
        let imported = import_litellm(json, "2026-11-27").unwrap();
        assert_eq!(imported.rows.len(), 4);
        assert!(imported.rows.iter().all(|r| r.origin == "override"));
        let t = PriceTable::default().with_overrides(imported.rows);
        let s = t.lookup(Provider::Anthropic, "claude-sonnet-4-5-20250929").unwrap();
        assert_eq!(
            s.rates,
            Rates {
                input: 3_000_000,
                output: 15_000_000,
                cache_write: 3_750_000,
                cache_read: 300_000,
                cache_write_1h: None,
            }
        );
        assert_eq!(s.long_context.unwrap(), (200_000, s.long_context.unwrap().1));
        assert_eq!(s.long_context.unwrap().1.input, 6_000_000);
        assert_eq!(s.context_window, Some(200_000));
        let g = t.lookup(Provider::OpenAi, "gpt-5").unwrap();
        assert_eq!((g.rates.cache_read, g.priority.unwrap().output), (125_000, 20_000_000));
        assert_eq!(
            t.lookup(Provider::Bedrock, "anthropic.claude-3").unwrap().rates.input,
            1_000_000
        );
        assert_eq!(t.lookup(Provider::Azure, "gpt-4o").unwrap().provider, Provider::Azure);
        assert_eq!(
            imported
                .skipped
                .get("bedrock (region, commitment or deployment-type scoped)"),
            Some(&1)
        );
        assert_eq!(imported.skipped.get("openai (fine-tuned)"), Some(&1));
        assert_eq!(imported.skipped.get("vertex_ai"), Some(&1));
        assert!(import_litellm(b"[]", "x").is_err());
    }

    #[test]
    fn generated_text_reads_back_to_the_same_rows() {
        let json = br#"{"claude-x": {"litellm_provider": "anthropic", "mode": "chat", "input_cost_per_token": 3e-06, "output_cost_per_token": 1.5e-05,
            "cache_creation_input_token_cost": 3.75e-06, "cache_creation_input_token_cost_above_1hr": 6e-06, "cache_read_input_token_cost": 3e-07,
            "input_cost_per_token_batches": 1.5e-06, "output_cost_per_token_batches": 7.5e-06,
            "search_context_cost_per_query": {"search_context_size_low": 0.01}, "provider_specific_entry": {"us": 1.1, "fast": 2},
            "max_input_tokens": 1000000, "max_output_tokens": 64000, "deprecation_date": "2027-01-01", "source": "https://example.invalid/p"}}"#;
        let overrides = "[[price]]\nprovider = \"openai\"\nmodel = \"ours\"\ninput = 0.3\noutput = 0.7\neffective = \"2026-12-01\"\nsource = \"contract\"\nsource_version = \"conduit override\"\n";
        let g = generate(json, overrides, "litellm 0.0.0", "2026-12-01").unwrap();
        assert_eq!(g.counts.get("anthropic"), Some(&1));
        let rows = parse_toml(&g.text, "shipped").unwrap();
        let again = read_litellm(json, "2026-12-01", "litellm 0.0.0", "shipped")
            .unwrap()
            .rows;
        assert_eq!(rows[0], again[0]);
        assert_eq!(rows[1].source_version, "conduit override");
        assert_eq!(
            generate(json, overrides, "litellm 0.0.0", "2026-12-01").unwrap().text,
            g.text
        );
    }

    #[test]
    fn usd_formatting_is_exact() {
        for (m, s) in [
            (3_750_000, "3.75"),
            (4_000_000, "4.0"),
            (125_000, "0.125"),
            (1, "0.000001"),
        ] {
            assert_eq!(format_usd(m), s);
            assert_eq!(usd_per_mtok(s.parse().unwrap(), "x").unwrap(), m);
        }
    }
}

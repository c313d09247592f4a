//! Prices: what a model's tokens cost, in integer micro-dollars.
//!
//! A shipped table (`host/prices.toml`, every row with its effective date and source) plus an
//! organisation's overrides (imported from LiteLLM's `model_prices_and_context_window.json` format,
//! or a `[[price]]` TOML file) kept in the store. Rates are held as micro-dollars per million
//! tokens, so a cost is an exact integer computation: `Σ tokens × rate / 10⁶`, rounded half up
//! once per request.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::usage::Usage;

/// Micro-dollars per million tokens, per token class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Rates {
    /// Uncached input.
    pub input: u64,
    /// Output.
    pub output: u64,
    /// Cache write.
    pub cache_write: u64,
    /// Cache read.
    pub cache_read: u64,
}

/// One priced model (or model family, by glob).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceRow {
    /// `anthropic`, `openai`.
    pub provider: String,
    /// Exact model id, or a glob ending in `*`.
    pub model: String,
    /// Standard rates.
    pub rates: Rates,
    /// Long-context tier: total input above the threshold prices the whole request at these rates.
    #[serde(default)]
    pub long_context: Option<(u64, Rates)>,
    /// When the price took effect (YYYY-MM-DD).
    pub effective: String,
    /// Where it comes from (URL or description).
    pub source: String,
    /// `shipped` or `override`.
    #[serde(default = "shipped")]
    pub origin: String,
}

fn shipped() -> String {
    "shipped".into()
}

impl PriceRow {
    /// `model` patterns: an exact id, `prefix*`, or `*infix*` (Bedrock ids carry a region prefix:
    /// `*anthropic.claude-sonnet-4-5*` matches `us.anthropic.claude-sonnet-4-5-…` and `eu.…`).
    fn matches(&self, provider: &str, model: &str) -> bool {
        self.provider == provider
            && match self.model.strip_suffix('*') {
                Some(p) => match p.strip_prefix('*') {
                    Some(infix) => model.contains(infix),
                    None => model.starts_with(p),
                },
                None => model == self.model,
            }
    }

    /// Exact ids beat globs; longer literal parts beat shorter ones.
    fn specificity(&self) -> usize {
        match self.model.strip_suffix('*') {
            Some(p) => p.trim_start_matches('*').len(),
            None => usize::MAX,
        }
    }

    /// Cost of `usage` in micro-dollars, rounded half up.
    pub fn cost_micros(&self, usage: &Usage) -> u64 {
        let rates = match self.long_context {
            Some((threshold, long)) if usage.total_input() > threshold => long,
            _ => self.rates,
        };
        let total: u128 = usage.input as u128 * rates.input as u128
            + usage.output as u128 * rates.output as u128
            + usage.cache_write as u128 * rates.cache_write as u128
            + usage.cache_read as u128 * rates.cache_read as u128;
        ((total + 500_000) / 1_000_000) as u64
    }
}

/// The prices in force: overrides first, then the shipped table.
#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    rows: Vec<PriceRow>,
}

impl PriceTable {
    /// The shipped table.
    pub fn shipped() -> Result<PriceTable> {
        let rows = parse_toml(include_str!("../prices.toml"), "shipped")
            .map_err(|e| e.context("the shipped price table (host/prices.toml)"))?;
        Ok(PriceTable { rows })
    }

    /// The shipped table with `overrides` replacing rows of the same provider and model pattern.
    pub fn with_overrides(mut self, overrides: Vec<PriceRow>) -> PriceTable {
        for o in overrides {
            self.rows.retain(|r| !(r.provider == o.provider && r.model == o.model));
            self.rows.push(o);
        }
        self
    }

    /// The most specific row for `model` of `provider`. A provider reselling another's models
    /// falls back to the original's list price when it has no row of its own: Azure OpenAI to
    /// OpenAI's (Global deployments bill at list price), Bedrock to Anthropic's for the model its
    /// id names (`us.anthropic.claude-sonnet-4-20250514-v1:0` → `claude-sonnet-4-20250514`).
    pub fn lookup(&self, provider: &str, model: &str) -> Option<&PriceRow> {
        let model = model.trim().to_ascii_lowercase();
        self.best(provider, &model).or_else(|| match provider {
            "azure" => self.best("openai", &model),
            "bedrock" => self.best("anthropic", &bedrock_to_anthropic(&model)),
            _ => None,
        })
    }

    fn best(&self, provider: &str, model: &str) -> Option<&PriceRow> {
        self.rows
            .iter()
            .filter(|r| r.matches(provider, model))
            .max_by_key(|r| r.specificity())
    }

    /// Every row, sorted by provider and model.
    pub fn rows(&self) -> Vec<&PriceRow> {
        let mut all: Vec<&PriceRow> = self.rows.iter().collect();
        all.sort_by(|a, b| (&a.provider, &a.model).cmp(&(&b.provider, &b.model)));
        all
    }
}

/// The Anthropic model a Bedrock model id or inference-profile ARN names: the last ARN segment,
/// without the region prefix (`us.`, `global.`), `anthropic.` and the version suffix (`-v1:0`).
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    price: Vec<RawRow>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRow {
    provider: String,
    model: String,
    input: f64,
    output: f64,
    cache_write: Option<f64>,
    cache_read: Option<f64>,
    long_context_threshold: Option<u64>,
    long_input: Option<f64>,
    long_output: Option<f64>,
    long_cache_write: Option<f64>,
    long_cache_read: Option<f64>,
    effective: String,
    source: String,
}

/// Parses `[[price]]` rows (USD per million tokens). Missing cache rates default to the input rate,
/// so an unpriced cache class is never cheaper than it may really be.
pub fn parse_toml(text: &str, origin: &str) -> Result<Vec<PriceRow>> {
    let file: RawFile = toml::from_str(text).map_err(|e| Error::msg(format!("price file: {e}")))?;
    file.price
        .into_iter()
        .map(|r| {
            let name = format!("price {}/{}", r.provider, r.model);
            let rates = |i: f64, o: f64, cw: Option<f64>, cr: Option<f64>| -> Result<Rates> {
                Ok(Rates {
                    input: usd_per_mtok(i, &format!("{name} input"))?,
                    output: usd_per_mtok(o, &format!("{name} output"))?,
                    cache_write: usd_per_mtok(cw.unwrap_or(i), &format!("{name} cache_write"))?,
                    cache_read: usd_per_mtok(cr.unwrap_or(i), &format!("{name} cache_read"))?,
                })
            };
            let long_context = match (r.long_context_threshold, r.long_input, r.long_output) {
                (Some(t), Some(i), Some(o)) => Some((t, rates(i, o, r.long_cache_write, r.long_cache_read)?)),
                (None, None, None) => None,
                _ => {
                    return Err(Error::msg(format!(
                        "{name}: a long-context tier needs long_context_threshold, long_input and long_output together"
                    )));
                }
            };
            if !crate::protocol::CREDENTIAL_PROVIDERS.contains(&r.provider.to_ascii_lowercase().as_str()) {
                return Err(Error::msg(format!(
                    "{name}: unknown provider {:?}; expected one of: {}",
                    r.provider,
                    crate::protocol::CREDENTIAL_PROVIDERS.join(", ")
                )));
            }
            Ok(PriceRow {
                provider: r.provider.to_ascii_lowercase(),
                model: r.model.to_ascii_lowercase(),
                rates: rates(r.input, r.output, r.cache_write, r.cache_read)?,
                long_context,
                effective: r.effective,
                source: r.source,
                origin: origin.into(),
            })
        })
        .collect()
}

/// What an import read and what it left out.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Imported {
    /// Rows to store.
    pub rows: Vec<PriceRow>,
    /// Entries of providers Conduit does not route yet (Bedrock, Azure, …), by provider.
    pub skipped: std::collections::BTreeMap<String, usize>,
}

/// Reads LiteLLM's `model_prices_and_context_window.json` (USD per token).
pub fn import_litellm(json: &[u8], today: &str) -> Result<Imported> {
    let v: Value = serde_json::from_slice(json).map_err(|e| Error::msg(format!("not a LiteLLM price file: {e}")))?;
    let entries = v
        .as_object()
        .ok_or_else(|| Error::msg("not a LiteLLM price file: expected a JSON object of models"))?;
    let mut out = Imported::default();
    for (name, e) in entries {
        if name == "sample_spec" {
            continue;
        }
        // LiteLLM's Bedrock and Azure rows price those providers; region-scoped Bedrock keys
        // (`bedrock/us-east-1/…`) and Azure's region/deployment-type keys are left out.
        let provider = match e["litellm_provider"].as_str().unwrap_or("") {
            "bedrock" | "bedrock_converse" => "bedrock",
            other => other,
        };
        let scoped = match provider {
            "bedrock" => name.trim_start_matches("bedrock/").contains('/'),
            "azure" => name.trim_start_matches("azure/").contains('/'),
            _ => false,
        };
        if scoped {
            *out.skipped
                .entry(format!("{provider} (region or deployment-type scoped)"))
                .or_default() += 1;
            continue;
        }
        if !matches!(provider, "anthropic" | "openai" | "bedrock" | "azure") {
            *out.skipped
                .entry(if provider.is_empty() {
                    "(none)".into()
                } else {
                    provider.into()
                })
                .or_default() += 1;
            continue;
        }
        let (Some(input), Some(output)) = (e["input_cost_per_token"].as_f64(), e["output_cost_per_token"].as_f64())
        else {
            *out.skipped.entry(format!("{provider} (no token prices)")).or_default() += 1;
            continue;
        };
        let per_token = |v: Option<f64>, fallback: f64| -> Result<u64> {
            usd_per_mtok(v.unwrap_or(fallback) * 1e6, &format!("{name} price"))
        };
        let rates = Rates {
            input: per_token(Some(input), input)?,
            output: per_token(Some(output), output)?,
            cache_write: per_token(e["cache_creation_input_token_cost"].as_f64(), input)?,
            cache_read: per_token(e["cache_read_input_token_cost"].as_f64(), input)?,
        };
        let long_context = match (
            e["input_cost_per_token_above_200k_tokens"].as_f64(),
            e["output_cost_per_token_above_200k_tokens"].as_f64(),
        ) {
            (Some(li), Some(lo)) => Some((
                200_000,
                Rates {
                    input: per_token(Some(li), li)?,
                    output: per_token(Some(lo), lo)?,
                    cache_write: per_token(e["cache_creation_input_token_cost_above_200k_tokens"].as_f64(), li)?,
                    cache_read: per_token(e["cache_read_input_token_cost_above_200k_tokens"].as_f64(), li)?,
                },
            )),
            _ => None,
        };
        let model = name.rsplit('/').next().unwrap_or(name).to_ascii_lowercase();
        out.rows.push(PriceRow {
            provider: provider.into(),
            model,
            rates,
            long_context,
            effective: today.into(),
            source: "imported from a LiteLLM price file".into(),
            origin: "override".into(),
        });
    }
    Ok(out)
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
        }
    }

    #[test]
    fn shipped_table_loads_and_prices_exactly() {
        let t = PriceTable::shipped().unwrap();
        // Claude Code's own figure for this usage: $0.04662475.
        let opus = t.lookup("anthropic", "claude-opus-4-8").unwrap();
        assert_eq!(opus.cost_micros(&u(5722, 15, 11442, 1907)), 46_625); // 46_624.75 µ$ rounds up
        // The most specific glob wins.
        assert_eq!(
            t.lookup("openai", "gpt-5-mini-2025-08-07").unwrap().model,
            "gpt-5-mini*"
        );
        assert_eq!(t.lookup("openai", "gpt-5-codex").unwrap().model, "gpt-5*");
        assert_eq!(t.lookup("openai", "GPT-4o-mini").unwrap().model, "gpt-4o-mini*");
        assert!(
            t.lookup("openai", "o3-mini").is_none(),
            "exact rows do not match longer ids"
        );
        assert!(t.lookup("anthropic", "gpt-5").is_none(), "prices are per provider");
        assert!(t.lookup("openai", "gpt-6.2-sol").is_none());
    }

    #[test]
    fn resellers_fall_back_to_the_list_price_and_bedrock_regions_differ() {
        let t = PriceTable::shipped().unwrap();
        assert_eq!(
            bedrock_to_anthropic("us.anthropic.claude-sonnet-4-20250514-v1:0"),
            "claude-sonnet-4-20250514"
        );
        assert_eq!(
            bedrock_to_anthropic(
                "arn:aws:bedrock:us-east-1:1:inference-profile/global.anthropic.claude-haiku-4-5-20251001-v1:0"
            ),
            "claude-haiku-4-5-20251001"
        );
        assert_eq!(bedrock_to_anthropic("anthropic.claude-opus-4-6-v1"), "claude-opus-4-6");
        let u = u(1_000_000, 1_000_000, 0, 0);
        // Same list price as Anthropic for a model without a Bedrock row.
        let sonnet4 = t
            .lookup("bedrock", "us.anthropic.claude-sonnet-4-20250514-v1:0")
            .unwrap();
        assert_eq!(
            sonnet4.cost_micros(&u),
            t.lookup("anthropic", "claude-sonnet-4-20250514")
                .unwrap()
                .cost_micros(&u)
        );
        // Sonnet 4.5: the global profile at list price, geographic and in-region ones 10 % above.
        let global = t
            .lookup("bedrock", "global.anthropic.claude-sonnet-4-5-20250929-v1:0")
            .unwrap();
        let us = t
            .lookup("bedrock", "us.anthropic.claude-sonnet-4-5-20250929-v1:0")
            .unwrap();
        assert_eq!(global.cost_micros(&u), 18_000_000);
        assert_eq!(us.cost_micros(&u), 19_800_000);
        assert_eq!(t.lookup("azure", "gpt-4o").unwrap().provider, "openai");
        assert!(t.lookup("bedrock", "amazon.nova-pro-v1:0").is_none());
    }

    #[test]
    fn long_context_tier_prices_the_whole_request() {
        let t = PriceTable::shipped().unwrap();
        let s = t.lookup("anthropic", "claude-sonnet-4-5-20250929").unwrap();
        // Exactly at the threshold: standard rates.
        assert_eq!(s.cost_micros(&u(200_000, 1000, 0, 0)), 600_000 + 15_000);
        // One token over (cached tokens count): every token at the long rates.
        // 150000×6 + 1000×22.5 + 50001×0.6 = 900000 + 22500 + 30000.6 µ$ → 952501.
        assert_eq!(s.cost_micros(&u(150_000, 1000, 50_001, 0)), 952_501);
    }

    #[test]
    fn rounding_is_half_up_once_per_request() {
        let row = PriceRow {
            provider: "openai".into(),
            model: "x".into(),
            rates: Rates {
                input: 1_250_000,
                output: 10_000_000,
                cache_write: 0,
                cache_read: 125_000,
            },
            long_context: None,
            effective: "2025-01-01".into(),
            source: "test".into(),
            origin: "shipped".into(),
        };
        assert_eq!(row.cost_micros(&u(1, 0, 0, 0)), 1); // 1.25 → 1
        assert_eq!(row.cost_micros(&u(2, 0, 0, 0)), 3); // 2.5 → 3
        assert_eq!(row.cost_micros(&u(0, 0, 4, 0)), 1); // 0.5 → 1
        assert_eq!(row.cost_micros(&u(0, 0, 3, 0)), 0); // 0.375 → 0
        assert_eq!(row.cost_micros(&u(1_000_000, 1_000_000, 0, 0)), 11_250_000);
    }

    #[test]
    fn overrides_replace_rows_and_files_are_validated() {
        let o = parse_toml(
            "[[price]]\nprovider = \"openai\"\nmodel = \"gpt-5*\"\ninput = 1.0\noutput = 2.0\neffective = \"2026-01-01\"\nsource = \"contract\"\n",
            "override",
        )
        .unwrap();
        let t = PriceTable::shipped().unwrap().with_overrides(o);
        let row = t.lookup("openai", "gpt-5-codex").unwrap();
        assert_eq!(
            (row.rates.input, row.rates.cache_read, row.origin.as_str()),
            (1_000_000, 1_000_000, "override")
        );
        for bad in [
            "[[price]]\nprovider = \"openai\"\nmodel = \"m\"\ninput = -1.0\noutput = 1.0\neffective = \"x\"\nsource = \"y\"\n",
            "[[price]]\nprovider = \"gemini\"\nmodel = \"m\"\ninput = 1.0\noutput = 1.0\neffective = \"x\"\nsource = \"y\"\n",
            "[[price]]\nprovider = \"openai\"\nmodel = \"m\"\ninput = 1.0\noutput = 1.0\nlong_input = 2.0\neffective = \"x\"\nsource = \"y\"\n",
            "[[price]]\nprovider = \"openai\"\nmodel = \"m\"\ninput = 1.0\noutput = 1.0\neffective = \"x\"\nsource = \"y\"\ncolour = 1\n",
        ] {
            assert!(parse_toml(bad, "override").is_err(), "{bad}");
        }
    }

    #[test]
    fn litellm_import() {
        let json = br#"{
            "sample_spec": {"input_cost_per_token": 0},
            "claude-sonnet-4-5-20250929": {"litellm_provider": "anthropic", "input_cost_per_token": 3e-06, "output_cost_per_token": 1.5e-05,
                "cache_creation_input_token_cost": 3.75e-06, "cache_read_input_token_cost": 3e-07,
                "input_cost_per_token_above_200k_tokens": 6e-06, "output_cost_per_token_above_200k_tokens": 2.25e-05},
            "openai/gpt-5": {"litellm_provider": "openai", "input_cost_per_token": 1.25e-06, "output_cost_per_token": 1e-05, "cache_read_input_token_cost": 1.25e-07},
            "bedrock/anthropic.claude-3": {"litellm_provider": "bedrock", "input_cost_per_token": 1e-06, "output_cost_per_token": 1e-06},
            "bedrock/us-east-1/anthropic.claude-3": {"litellm_provider": "bedrock", "input_cost_per_token": 2e-06, "output_cost_per_token": 2e-06},
            "azure/gpt-4o": {"litellm_provider": "azure", "input_cost_per_token": 2.5e-06, "output_cost_per_token": 1e-05},
            "vertex_ai/gemini": {"litellm_provider": "vertex_ai", "input_cost_per_token": 1e-06, "output_cost_per_token": 1e-06},
            "dall-e-3": {"litellm_provider": "openai", "output_cost_per_image": 0.04}
        }"#;
        let imported = import_litellm(json, "2026-11-27").unwrap();
        assert_eq!(imported.rows.len(), 4);
        let t = PriceTable::default().with_overrides(imported.rows);
        let s = t.lookup("anthropic", "claude-sonnet-4-5-20250929").unwrap();
        assert_eq!(
            s.rates,
            Rates {
                input: 3_000_000,
                output: 15_000_000,
                cache_write: 3_750_000,
                cache_read: 300_000
            }
        );
        assert_eq!(s.long_context.unwrap().1.input, 6_000_000);
        assert_eq!(t.lookup("openai", "gpt-5").unwrap().rates.cache_read, 125_000);
        assert_eq!(
            t.lookup("bedrock", "anthropic.claude-3").unwrap().rates.input,
            1_000_000
        );
        assert_eq!(t.lookup("azure", "gpt-4o").unwrap().provider, "azure");
        assert_eq!(
            imported.skipped.get("bedrock (region or deployment-type scoped)"),
            Some(&1)
        );
        assert_eq!(imported.skipped.get("vertex_ai"), Some(&1));
        assert!(import_litellm(b"[]", "x").is_err());
    }
}

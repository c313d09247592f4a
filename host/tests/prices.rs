//! The shipped price table against its source (issue 21): it is exactly what the generator makes
//! from the pinned LiteLLM release CI installs, every model id of that source resolves to its own
//! row (or, for the ids the table leaves out, to none — never to another model's row), and the
//! models Conduit itself sends to Bedrock are priced.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;

use common::installed::{peers_dir, require};
use conduit_gateway::prices::{Basis, PriceTable};

const SHIPPED: &str = include_str!("../../crates/wire/prices.toml");

/// `litellm X.Y.Z` and the date from the generated table's header.
fn table_source() -> (String, String) {
    let version = SHIPPED
        .lines()
        .find_map(|l| l.split("(litellm ").nth(1))
        .and_then(|rest| rest.split(')').next())
        .expect("the header names the LiteLLM version")
        .to_string();
    let date = SHIPPED
        .lines()
        .find_map(|l| l.strip_prefix("# Table date: "))
        .and_then(|rest| rest.split('.').next())
        .expect("the header names the table date")
        .to_string();
    (version, date)
}

/// The price map inside the LiteLLM release `.ci/run` installs (its own venv), if it is that
/// release.
fn litellm_map(version: &str) -> Option<PathBuf> {
    let lib = peers_dir()?.join("litellm/lib");
    for py in std::fs::read_dir(&lib).ok()?.flatten() {
        let site = py.path().join("site-packages");
        let installed = site.join(format!("litellm-{version}.dist-info"));
        let map = site.join("litellm/model_prices_and_context_window_backup.json");
        if installed.is_dir() && map.is_file() {
            return Some(map);
        }
    }
    None
}

#[test]
fn the_shipped_table_is_what_the_generator_makes_from_the_pinned_source() {
    let (version, date) = table_source();
    let Some(map) = require(&format!("LiteLLM {version} (its price map)"), litellm_map(&version)) else {
        return;
    };
    let overrides = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../crates/wire/prices-overrides.toml"
    ))
    .unwrap();
    let generated = conduit_gateway::prices::generate(
        &std::fs::read(&map).unwrap(),
        &overrides,
        &format!("litellm {version}"),
        &date,
    )
    .unwrap();
    assert!(
        generated.text == SHIPPED,
        "crates/wire/prices.toml is not what crates/wire/prices-refresh.sh {version} {date} makes: it was edited by hand, or the overrides changed without regenerating"
    );
    for provider in ["anthropic", "openai", "azure", "bedrock"] {
        assert!(
            generated.counts.get(provider).copied().unwrap_or(0) > 10,
            "{provider}: {:?}",
            generated.counts
        );
    }
    println!("rows per provider: {:?}", generated.counts);
}

#[test]
fn every_source_id_resolves_to_its_own_row_or_to_none() {
    let (version, _) = table_source();
    let Some(map) = require(&format!("LiteLLM {version} (its price map)"), litellm_map(&version)) else {
        return;
    };
    let t = PriceTable::shipped().unwrap();
    // Every row resolves to itself.
    for r in t.rows() {
        let found = t.lookup(r.provider, &r.model).unwrap();
        assert_eq!((&found.provider, &found.model), (&r.provider, &r.model));
    }
    let source: serde_json::Value = serde_json::from_slice(&std::fs::read(map).unwrap()).unwrap();
    let (mut own, mut none) = (0, 0);
    for (key, e) in source.as_object().unwrap() {
        let Some(provider) =
            conduit_gateway::protocol::Provider::from_litellm(e["litellm_provider"].as_str().unwrap_or(""))
        else {
            continue;
        };
        let id = key
            .strip_prefix(&format!("{provider}/"))
            .unwrap_or(key)
            .to_ascii_lowercase();
        let listed = t.rows().into_iter().any(|r| r.provider == provider && r.model == id);
        match t.lookup(provider, key) {
            Some(row) if listed => {
                assert_eq!(row.model, id, "{provider} {key} resolves to another row");
                own += 1;
            }
            Some(row) => {
                // Not listed itself (a scoped or fine-tuned id, or another mode): it must not
                // borrow a different model's row (an Azure id may take OpenAI's row of the same id).
                let same = row.model == id;
                assert!(
                    same,
                    "{provider} {key} (not in the table) resolves to {}/{}",
                    row.provider, row.model
                );
            }
            None => none += 1,
        }
    }
    assert!(own > 500, "{own} source ids resolve to their own rows");
    println!("{own} source ids resolve to their own row, {none} (scoped, fine-tuned, not per-token) to none");
}

#[test]
fn the_models_conduit_sends_to_bedrock_are_priced() {
    let t = PriceTable::shipped().unwrap();
    for (name, base) in conduit_gateway::bedrock::builtin_model_ids() {
        // Retired models (Claude 3.x) are still mapped for old clients; current ones must be priced.
        if name.starts_with("claude-3") {
            continue;
        }
        for id in [base.to_string(), format!("us.{base}")] {
            let p = t.price(conduit_gateway::protocol::Provider::Bedrock, &id).unwrap();
            assert_ne!(p.basis, Basis::Ceiling, "{name} → {id} has no Bedrock price");
        }
    }
}

//! `conduit store copy --from sled:DIR --to postgres:URL`: moves a single-node install onto a
//! shared PostgreSQL database — keys (their hashes: the secrets engineers hold keep working),
//! sealed credentials with the master key id that sealed them, budgets, the spend ledger,
//! findings, policy modes, price overrides and uploads — then reads both back and compares the
//! counts (and the ledger's totals). The target must be migrated and empty: a copy never merges
//! into a database that already holds state. Works through the state traits only, so any backend
//! pair could be added; only sled → PostgreSQL is offered.

use conduit_core::error::{Error, Result};
use conduit_gateway::config::{Config, StoreConfig};
use conduit_state::State;
use conduit_state::records::META_MASTER_KEY_ID;

/// What was copied, kind by kind.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub keys: usize,
    pub credentials: usize,
    pub budgets: usize,
    pub spend_rows: usize,
    pub spend_requests: u64,
    pub spend_micros: u64,
    pub findings: usize,
    pub policy_modes: usize,
    pub price_overrides: usize,
    pub uploads: usize,
}

/// Every day the ledger could hold.
const ALL_DAYS: (&str, &str) = ("0000-01-01", "9999-12-31");

async fn counts(s: &State) -> Result<Counts> {
    let spend = s.spend.range(ALL_DAYS.0, ALL_DAYS.1).await?;
    Ok(Counts {
        keys: s.keys.entries().await?.len(),
        credentials: s.credentials.list().await?.len(),
        budgets: s.budget_limits.list().await?.len(),
        spend_rows: spend.len(),
        spend_requests: spend.iter().map(|r| r.requests).sum(),
        spend_micros: spend.iter().map(|r| r.cost_micros).sum(),
        findings: s.findings.list(usize::MAX).await?.len(),
        policy_modes: s.policy_modes.list().await?.len(),
        price_overrides: s.prices.overrides().await?.len(),
        uploads: s.uploads.list().await?.len(),
    })
}

/// Copies everything in `from` into `to` (which must be empty); returns what was copied.
pub async fn copy_state(from: &State, to: &State) -> Result<Counts> {
    let there = counts(to).await?;
    if there != Counts::default() {
        return Err(Error::msg(format!(
            "the target store is not empty ({there:?}); copy into a freshly migrated database"
        )));
    }
    if let Some(id) = from.meta.get(META_MASTER_KEY_ID).await? {
        to.meta.set(META_MASTER_KEY_ID, &id).await?;
    }
    for (hash, record) in from.keys.entries().await? {
        to.keys.insert(&hash, &record).await?;
    }
    for c in from.credentials.list().await? {
        to.credentials.put(&c).await?;
    }
    for (scope, limit) in from.budget_limits.list().await? {
        to.budget_limits.put(&scope, &limit).await?;
    }
    let spend = from.spend.range(ALL_DAYS.0, ALL_DAYS.1).await?;
    for chunk in spend.chunks(500) {
        to.spend.add(chunk).await?;
    }
    let findings = from.findings.list(usize::MAX).await?;
    for chunk in findings.chunks(500) {
        to.findings.record(chunk).await?;
    }
    for (key, mode) in from.policy_modes.list().await? {
        to.policy_modes.set(&key, Some(&mode)).await?;
    }
    let prices = from.prices.overrides().await?;
    if !prices.is_empty() {
        to.prices.put_overrides(&prices).await?;
    }
    for u in from.uploads.list().await? {
        to.uploads.put(&u).await?;
    }
    let (expected, got) = (counts(from).await?, counts(to).await?);
    if expected != got {
        return Err(Error::msg(format!(
            "the copy does not match its source: source {expected:?}, target {got:?}; drop the target database and copy again"
        )));
    }
    Ok(got)
}

/// `conduit store copy`.
pub async fn copy(config: &Config, from: &str, to: &str) -> Result<()> {
    let Some(dir) = from.strip_prefix("sled:").filter(|d| !d.is_empty()) else {
        return Err(Error::msg(format!(
            "--from {from:?} is not a source; give sled:DIR (the data directory of the single-node install)"
        )));
    };
    let Some(url) = to.strip_prefix("postgres:") else {
        return Err(Error::msg(format!(
            "--to {to:?} is not a target; give postgres:URL (or postgres: for CONDUIT_STORE_URL)"
        )));
    };
    let mut pg = match &config.store {
        StoreConfig::Postgres(pg) => pg.clone(),
        StoreConfig::Sled => conduit_state_postgres::PgConfig::new(String::new()),
    };
    if !url.is_empty() {
        pg.url = url.to_string();
    }
    if pg.url.is_empty() {
        return Err(Error::msg(
            "no PostgreSQL URL: give --to postgres:URL or set CONDUIT_STORE_URL",
        ));
    }
    let source = conduit_state_sled::open(std::path::Path::new(dir), &config.budgets)
        .await
        .map_err(|e| e.context(format!("opening the sled store in {dir:?} (stop its gateway first)")))?;
    let target = conduit_state_postgres::open(&pg, &config.budgets).await?;
    let c = copy_state(&source, &target).await?;
    println!(
        "copied and verified: {} keys, {} credentials, {} budgets, {} spend rows ({} requests, {}), {} findings, {} policy modes, {} price overrides, {} uploads",
        c.keys,
        c.credentials,
        c.budgets,
        c.spend_rows,
        c.spend_requests,
        conduit_core::money::usd(c.spend_micros),
        c.findings,
        c.policy_modes,
        c.price_overrides,
        c.uploads
    );
    Ok(())
}

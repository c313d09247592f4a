//! Hard budgets: per key, per team and org-wide, daily and monthly (UTC), in micro-dollars.
//!
//! Before forwarding, a request reserves its worst-case cost against every budget that applies —
//! all or nothing ([`Budgets::reserve`]); when it ends, [`Reservation::settle`] turns the
//! reservation into the real cost; a request that dies without settling (client gone before the
//! upstream answered, a panic) releases it on drop.
//!
//! [`Budgets`] is the seam: a backend with one writer (sled: one process owns the store) uses
//! [`BudgetBook`], which keeps every counter in this process's memory and decides under one lock,
//! so concurrent requests cannot overshoot; spent amounts are loaded from the spend ledger the
//! first time a period is used and kept current by `settle` from then on, and reservations held by
//! a crashed process die with it. A shared backend implements [`Budgets`] against its own engine.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use conduit_core::error::{Error, Result};

use crate::records::{BudgetLimit, Principal};
use crate::store::{BudgetLimitStore, SpendStore, Watch};

/// A budget period (ordered: days before months, then by number — the order counters are locked in).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Period {
    /// Days since 1970-01-01.
    Day(i64),
    /// `year * 12 + month - 1`.
    Month(i64),
}

impl Period {
    /// The daily period containing `unix`.
    pub fn day_of(unix: i64) -> Period {
        Period::Day(unix.div_euclid(86_400))
    }

    /// The monthly period containing `unix`.
    pub fn month_of(unix: i64) -> Period {
        let (y, m, _) = conduit_core::clock::civil_from_days(unix.div_euclid(86_400));
        Period::Month(y * 12 + m as i64 - 1)
    }

    /// First and last day (YYYY-MM-DD) and the instant the next period starts.
    pub fn bounds(&self) -> (String, String, i64) {
        let day = |d: i64| conduit_core::clock::format_date(d * 86_400);
        match *self {
            Period::Day(d) => (day(d), day(d), (d + 1) * 86_400),
            Period::Month(m) => {
                let (y, mo) = (m.div_euclid(12), (m.rem_euclid(12) + 1) as u32);
                let first = conduit_core::clock::days_from_civil(y, mo, 1);
                let (ny, nm) = if mo == 12 { (y + 1, 1) } else { (y, mo + 1) };
                let next = conduit_core::clock::days_from_civil(ny, nm, 1);
                (day(first), day(next - 1), next * 86_400)
            }
        }
    }

    /// `daily` or `monthly`.
    pub fn name(&self) -> &'static str {
        match self {
            Period::Day(_) => "daily",
            Period::Month(_) => "monthly",
        }
    }

    /// The limit of this period's kind in `limit`.
    pub fn limit_in(&self, limit: &BudgetLimit) -> Option<u64> {
        match self {
            Period::Day(_) => limit.daily_micros,
            Period::Month(_) => limit.monthly_micros,
        }
    }

    /// The periods in force at `unix`, each with its limit in `limit`.
    pub fn in_force(limit: &BudgetLimit, unix: i64) -> impl Iterator<Item = (Period, u64)> {
        [
            (Period::day_of(unix), limit.daily_micros),
            (Period::month_of(unix), limit.monthly_micros),
        ]
        .into_iter()
        .filter_map(|(p, l)| l.map(|l| (p, l)))
    }
}

/// A budget that refused a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverBudget {
    /// `key:…`, `team:…` or `org`.
    pub scope: String,
    /// `daily` or `monthly`.
    pub period: &'static str,
    /// The limit.
    pub limit: u64,
    /// Spent so far in the period.
    pub spent: u64,
    /// Held by requests in flight.
    pub reserved: u64,
    /// This request's worst case.
    pub requested: u64,
    /// Unix seconds when the period resets.
    pub resets_at: i64,
}

/// Why a reservation was not made.
#[derive(Debug)]
pub enum Refusal {
    /// A budget has no room for the worst case.
    Over(OverBudget),
    /// The budgets could not be read (the request is refused: never spend unchecked).
    Unavailable(Error),
}

/// A budget and its current period.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BudgetStatus {
    /// Scope.
    pub scope: String,
    /// `daily` or `monthly`.
    pub period: String,
    /// Limit.
    pub limit_micros: u64,
    /// Spent this period.
    pub spent_micros: u64,
    /// Held by requests in flight.
    pub reserved_micros: u64,
    /// When the period resets (RFC 3339).
    pub resets_at: String,
}

/// What a backend holds for one reservation until it is settled or released.
pub trait Hold: Send + Sync + std::fmt::Debug {
    /// Replaces the reservation with the real cost. Must not block: a backend that needs I/O
    /// queues it.
    fn settle(self: Box<Self>, actual_micros: u64);
    /// Gives the reservation back unused (the request died).
    fn release(self: Box<Self>);
}

/// Worst-case cost held against budgets until the request settles (or is dropped).
#[derive(Debug)]
pub struct Reservation(Option<Box<dyn Hold>>);

impl Reservation {
    /// Wraps a backend's hold.
    pub fn new(hold: Box<dyn Hold>) -> Reservation {
        Reservation(Some(hold))
    }

    /// Replaces the reservation with the real cost.
    pub fn settle(mut self, actual_micros: u64) {
        if let Some(h) = self.0.take() {
            h.settle(actual_micros);
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            h.release();
        }
    }
}

/// Budget enforcement: the limits in force (the config file's, overridden per scope by those set
/// at run time) and what is spent and reserved against them.
#[async_trait]
pub trait Budgets: Send + Sync + 'static {
    /// Whether any budget applies to `principal` (from memory: the request path asks this first).
    fn applies(&self, principal: &Principal) -> bool;
    /// Reserves `worst` micro-dollars against every budget of `principal` in the periods of
    /// `at_unix`, all or nothing; `Ok(None)` when no budget applies.
    async fn reserve(&self, principal: &Principal, at_unix: i64, worst: u64) -> Result<Option<Reservation>, Refusal>;
    /// Sets (or clears, with an empty limit) a scope's budget; clearing falls back to the config
    /// file's budget for the scope. What is spent does not change with the limit.
    async fn set(&self, scope: &str, limit: BudgetLimit) -> Result<()>;
    /// Every budget with what is spent and reserved in the periods of `now_unix`.
    async fn status(&self, now_unix: i64) -> Result<Vec<BudgetStatus>>;
    /// Scopes whose limit changed.
    fn watch(&self) -> Watch<String>;
    /// Before the process stops: settles what is queued and gives back what it holds for
    /// requests it will not serve (a shared backend's leases).
    async fn drain(&self) -> Result<()> {
        Ok(())
    }
}

/// Checks a scope name: `org`, `team:NAME`, `user:EMAIL` or `key:ID`.
pub fn validate_scope(scope: &str) -> Result<()> {
    let named = |p: &str| scope.strip_prefix(p).is_some_and(|t| !t.is_empty() && t.len() <= 128);
    let ok = scope == "org"
        || named("team:")
        || named("user:")
        || scope.strip_prefix("key:").is_some_and(|k| k.starts_with("key_"));
    if ok {
        Ok(())
    } else {
        Err(Error::msg(format!(
            "budget scope {scope:?} is not valid; use org, team:NAME, user:EMAIL or key:KEY_ID"
        )))
    }
}

/// The limits in force, as every backend keeps them in memory: the config file's, overridden per
/// scope by those set at run time; clearing a scope falls back to the file's.
#[derive(Debug, Clone, Default)]
pub struct Limits {
    defaults: HashMap<String, BudgetLimit>,
    in_force: HashMap<String, BudgetLimit>,
}

impl Limits {
    /// `defaults` (the config file's) overridden by `stored`.
    pub fn new(defaults: &[(String, BudgetLimit)], stored: Vec<(String, BudgetLimit)>) -> Limits {
        let defaults: HashMap<String, BudgetLimit> = defaults.iter().cloned().collect();
        let mut in_force = defaults.clone();
        in_force.extend(stored);
        Limits { defaults, in_force }
    }

    /// The same defaults, overridden by a fresh read of the stored limits.
    pub fn reloaded(&self, stored: Vec<(String, BudgetLimit)>) -> Limits {
        let mut in_force = self.defaults.clone();
        in_force.extend(stored);
        Limits {
            defaults: self.defaults.clone(),
            in_force,
        }
    }

    /// Puts a scope's limit in force (an empty limit: back to the file's, or none).
    pub fn set(&mut self, scope: &str, limit: BudgetLimit) {
        let fallback = self.defaults.get(scope).copied();
        match fallback.filter(|_| limit == BudgetLimit::default()) {
            Some(default) => self.in_force.insert(scope.to_string(), default),
            None if limit == BudgetLimit::default() => self.in_force.remove(scope),
            None => self.in_force.insert(scope.to_string(), limit),
        };
    }

    /// A scope's limit in force.
    pub fn get(&self, scope: &str) -> Option<&BudgetLimit> {
        self.in_force.get(scope)
    }

    /// Whether any budget applies to `principal` (the request path asks this first; no
    /// allocation when no budget is set at all).
    pub fn applies(&self, principal: &Principal) -> bool {
        if self.in_force.is_empty() {
            return false;
        }
        let has = |scope: &str| {
            self.in_force
                .get(scope)
                .is_some_and(|l| l.daily_micros.is_some() || l.monthly_micros.is_some())
        };
        has(&format!("key:{}", principal.key_id))
            || (principal.session.is_some() && has(&format!("user:{}", principal.owner)))
            || principal.team.as_ref().is_some_and(|t| has(&format!("team:{t}")))
            || has("org")
    }

    /// The (scope, period, cap) triples that apply to `principal` at `at_unix`, in the one order
    /// counters are taken in (scope, then period).
    pub fn targets(&self, principal: &Principal, at_unix: i64) -> Vec<(String, Period, u64)> {
        let mut targets = Vec::new();
        for scope in principal.scopes() {
            if let Some(limit) = self.in_force.get(&scope) {
                for (period, cap) in Period::in_force(limit, at_unix) {
                    targets.push((scope.clone(), period, cap));
                }
            }
        }
        targets.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        targets
    }

    /// Every budget's (scope, period, cap) in force at `now_unix`.
    pub fn all_in_force(&self, now_unix: i64) -> Vec<(String, Period, u64)> {
        self.in_force
            .iter()
            .flat_map(|(scope, limit)| Period::in_force(limit, now_unix).map(move |(p, a)| (scope.clone(), p, a)))
            .collect()
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Counter {
    spent: u64,
    reserved: u64,
}

#[derive(Default)]
struct BookState {
    limits: Limits,
    counters: HashMap<(String, Period), Counter>,
}

/// [`Budgets`] for a backend with one writer: every counter in this process's memory, decided
/// under one lock. Limits persist through a [`BudgetLimitStore`]; spent amounts are loaded from a
/// [`SpendStore`] the first time a period is used.
pub struct BudgetBook {
    limit_store: Arc<dyn BudgetLimitStore>,
    spend: Arc<dyn SpendStore>,
    state: Mutex<BookState>,
}

impl std::fmt::Debug for BudgetBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BudgetBook")
    }
}

/// A [`BudgetBook`]'s hold: the amounts it added to each counter.
#[derive(Debug)]
struct BookHold {
    book: Arc<BudgetBook>,
    holds: Vec<(String, Period, u64)>,
}

impl Hold for BookHold {
    fn settle(self: Box<Self>, actual_micros: u64) {
        self.book.finish(&self.holds, Some(actual_micros));
    }

    fn release(self: Box<Self>) {
        self.book.finish(&self.holds, None);
    }
}

impl BudgetBook {
    /// Loads the limits: `defaults` (from the config file), overridden per scope by the stored
    /// ones.
    pub async fn open(
        limit_store: Arc<dyn BudgetLimitStore>,
        spend: Arc<dyn SpendStore>,
        defaults: &[(String, BudgetLimit)],
    ) -> Result<Arc<BudgetBook>> {
        let limits = Limits::new(defaults, limit_store.list().await?);
        Ok(Arc::new(BudgetBook {
            limit_store,
            spend,
            state: Mutex::new(BookState {
                limits,
                counters: HashMap::new(),
            }),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BookState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The (scope, period, limit) triples that apply to `principal` at `at_unix`.
    fn targets(&self, principal: &Principal, at_unix: i64) -> Vec<(String, Period, u64)> {
        self.lock().limits.targets(principal, at_unix)
    }

    /// Makes sure the counter of every `(scope, period)` is loaded from the ledger. The lock is
    /// not held while the ledger is read; a counter another request loaded meanwhile wins.
    async fn load(&self, wanted: impl Iterator<Item = (String, Period)>) -> Result<()> {
        let missing: Vec<(String, Period)> = {
            let state = self.lock();
            wanted.filter(|k| !state.counters.contains_key(k)).collect()
        };
        for (scope, period) in missing {
            let spent = self.load_spent(&scope, &period).await?;
            self.lock()
                .counters
                .entry((scope, period))
                .or_insert(Counter { spent, reserved: 0 });
        }
        Ok(())
    }

    /// Spent in a period so far, from the ledger.
    async fn load_spent(&self, scope: &str, period: &Period) -> Result<u64> {
        let (since, until, _) = period.bounds();
        let rows = self.spend.range(&since, &until).await?;
        Ok(rows
            .iter()
            .filter(|r| match scope.split_once(':') {
                Some(("key", id)) => r.key_id == id,
                Some(("team", t)) => r.team == t,
                _ => true,
            })
            .map(|r| r.cost_micros)
            .sum())
    }

    fn finish(&self, holds: &[(String, Period, u64)], actual: Option<u64>) {
        let mut state = self.lock();
        for (scope, period, worst) in holds {
            let limit = state.limits.get(scope).and_then(|l| period.limit_in(l));
            if let Some(c) = state.counters.get_mut(&(scope.clone(), *period)) {
                c.reserved = c.reserved.saturating_sub(*worst);
                if let Some(cost) = actual {
                    let before = c.spent;
                    c.spent += cost;
                    if let Some(limit) = limit {
                        let threshold = limit / 10 * 8;
                        if before < threshold && c.spent >= threshold {
                            tracing::warn!(
                                target: "conduit::budget",
                                scope = %scope,
                                period = period.name(),
                                spent_usd = %conduit_core::money::usd(c.spent),
                                limit_usd = %conduit_core::money::usd(limit),
                                "budget is 80% used"
                            );
                        }
                    }
                }
            }
        }
    }
}

#[async_trait]
impl Budgets for Arc<BudgetBook> {
    fn applies(&self, principal: &Principal) -> bool {
        self.lock().limits.applies(principal) // one uncontended lock, no allocation without budgets
    }

    async fn reserve(&self, principal: &Principal, at_unix: i64, worst: u64) -> Result<Option<Reservation>, Refusal> {
        let targets = self.targets(principal, at_unix);
        if targets.is_empty() {
            return Ok(None);
        }
        self.load(targets.iter().map(|(s, p, _)| (s.clone(), *p)))
            .await
            .map_err(Refusal::Unavailable)?;
        let mut state = self.lock();
        for (scope, period, limit) in &targets {
            let c = state
                .counters
                .get(&(scope.clone(), *period))
                .copied()
                .unwrap_or_default();
            if c.spent.saturating_add(c.reserved).saturating_add(worst) > *limit {
                return Err(Refusal::Over(OverBudget {
                    scope: scope.clone(),
                    period: period.name(),
                    limit: *limit,
                    spent: c.spent,
                    reserved: c.reserved,
                    requested: worst,
                    resets_at: period.bounds().2,
                }));
            }
        }
        let mut holds = Vec::with_capacity(targets.len());
        for (scope, period, _) in targets {
            state.counters.entry((scope.clone(), period)).or_default().reserved += worst;
            holds.push((scope, period, worst));
        }
        Ok(Some(Reservation::new(Box::new(BookHold {
            book: self.clone(),
            holds,
        }))))
    }

    async fn set(&self, scope: &str, limit: BudgetLimit) -> Result<()> {
        validate_scope(scope)?;
        self.limit_store.put(scope, &limit).await?;
        self.lock().limits.set(scope, limit);
        Ok(())
    }

    async fn status(&self, now_unix: i64) -> Result<Vec<BudgetStatus>> {
        let in_force = self.lock().limits.all_in_force(now_unix);
        self.load(in_force.iter().map(|(s, p, _)| (s.clone(), *p))).await?;
        let state = self.lock();
        let mut out: Vec<BudgetStatus> = in_force
            .into_iter()
            .map(|(scope, period, amount)| {
                let c = state
                    .counters
                    .get(&(scope.clone(), period))
                    .copied()
                    .unwrap_or_default();
                BudgetStatus {
                    scope,
                    period: period.name().into(),
                    limit_micros: amount,
                    spent_micros: c.spent,
                    reserved_micros: c.reserved,
                    resets_at: conduit_core::clock::format_rfc3339(period.bounds().2),
                }
            })
            .collect();
        out.sort_by(|a, b| (&a.scope, &a.period).cmp(&(&b.scope, &b.period)));
        Ok(out)
    }

    fn watch(&self) -> Watch<String> {
        self.limit_store.watch()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_and_resets() {
        let t = conduit_core::clock::parse_date_or_time("2026-12-31T23:59:59Z").unwrap();
        let m = Period::month_of(t);
        assert_eq!(
            m.bounds(),
            (
                "2026-12-01".into(),
                "2026-12-31".into(),
                conduit_core::clock::parse_date_or_time("2027-01-01").unwrap()
            )
        );
        let d = Period::day_of(t);
        assert_eq!(
            d.bounds().2,
            conduit_core::clock::parse_date_or_time("2027-01-01").unwrap()
        );
        let feb = Period::month_of(conduit_core::clock::parse_date_or_time("2028-02-10").unwrap());
        assert_eq!(feb.bounds().1, "2028-02-29");
    }
}

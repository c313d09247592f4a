//! Admission state: hard budgets and per-key rate limits, kept in memory (one process owns the
//! store) and decided under one lock, so concurrent requests cannot overshoot.
//!
//! **Budgets** exist per key, per team and org-wide, daily and monthly (UTC), in micro-dollars.
//! Before forwarding, a request reserves its worst-case cost against every budget that applies —
//! all or nothing; when it ends, `settle` turns the reservation into the real cost; a request that
//! dies without settling (client gone before the upstream answered, a panic) releases it on drop.
//! Spent amounts are loaded from the spend ledger the first time a budget period is used, and kept
//! current by `settle` from then on. Reservations live in memory: a crashed process holds none.
//!
//! **Rate limits** per key: requests per minute and tokens per minute (token buckets that refill
//! continuously), and concurrent streams.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::store::Store;

/// Budget amounts of one scope, micro-dollars.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetLimit {
    /// Per UTC day.
    #[serde(default)]
    pub daily_micros: Option<u64>,
    /// Per UTC calendar month.
    #[serde(default)]
    pub monthly_micros: Option<u64>,
}

/// A budget period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Period {
    /// Days since 1970-01-01.
    Day(i64),
    /// `year * 12 + month - 1`.
    Month(i64),
}

impl Period {
    fn of(kind: PeriodKind, unix: i64) -> Period {
        let day = unix.div_euclid(86_400);
        match kind {
            PeriodKind::Day => Period::Day(day),
            PeriodKind::Month => {
                let (y, m, _) = crate::clock::civil_from_days(day);
                Period::Month(y * 12 + m as i64 - 1)
            }
        }
    }

    /// First and last day (YYYY-MM-DD) and the instant the next period starts.
    pub fn bounds(&self) -> (String, String, i64) {
        let day = |d: i64| crate::clock::format_date(d * 86_400);
        match *self {
            Period::Day(d) => (day(d), day(d), (d + 1) * 86_400),
            Period::Month(m) => {
                let (y, mo) = (m.div_euclid(12), (m.rem_euclid(12) + 1) as u32);
                let first = crate::clock::days_from_civil(y, mo, 1);
                let (ny, nm) = if mo == 12 { (y + 1, 1) } else { (y, mo + 1) };
                let next = crate::clock::days_from_civil(ny, nm, 1);
                (day(first), day(next - 1), next * 86_400)
            }
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Period::Day(_) => "daily",
            Period::Month(_) => "monthly",
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum PeriodKind {
    Day,
    Month,
}

/// Who a request is charged to, for budgets.
#[derive(Debug, Clone)]
pub struct Payer<'a> {
    /// Key id.
    pub key_id: &'a str,
    /// Team, if any.
    pub team: Option<&'a str>,
}

impl Payer<'_> {
    fn scopes(&self) -> Vec<String> {
        let mut s = vec![format!("key:{}", self.key_id)];
        if let Some(t) = self.team {
            s.push(format!("team:{t}"));
        }
        s.push("org".into());
        s
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

#[derive(Debug, Default, Clone, Copy)]
struct Counter {
    spent: u64,
    reserved: u64,
}

#[derive(Default)]
struct BookState {
    limits: HashMap<String, BudgetLimit>,
    counters: HashMap<(String, Period), Counter>,
}

/// The budgets in force and what is spent and reserved against them.
pub struct BudgetBook {
    store: Arc<dyn Store>,
    defaults: HashMap<String, BudgetLimit>,
    state: Mutex<BookState>,
}

impl std::fmt::Debug for BudgetBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BudgetBook")
    }
}

/// Worst-case cost held against budgets until the request settles (or is dropped).
#[derive(Debug)]
pub struct Reservation {
    book: Arc<BudgetBook>,
    holds: Vec<(String, Period, u64)>,
}

impl BudgetBook {
    /// Loads the budget limits: `defaults` (from the config file), overridden per scope by the
    /// budgets set through the CLI or the admin API (in the store).
    pub fn open(store: Arc<dyn Store>, defaults: &[(String, BudgetLimit)]) -> Result<BudgetBook> {
        let defaults: HashMap<String, BudgetLimit> = defaults.iter().cloned().collect();
        let mut limits = defaults.clone();
        limits.extend(store.budgets()?);
        Ok(BudgetBook {
            store,
            defaults,
            state: Mutex::new(BookState {
                limits,
                counters: HashMap::new(),
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BookState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether any budget applies to `payer`.
    pub fn applies(&self, payer: &Payer<'_>) -> bool {
        let state = self.lock();
        if state.limits.is_empty() {
            return false; // the common case: no allocation, one uncontended lock
        }
        payer.scopes().iter().any(|s| {
            state
                .limits
                .get(s)
                .is_some_and(|l| l.daily_micros.is_some() || l.monthly_micros.is_some())
        })
    }

    /// Reserves `worst` micro-dollars against every budget of `payer`, all or nothing.
    /// `Ok(None)` when no budget applies; `Err(Ok(..))` over budget; `Err(Err(..))` store failure.
    pub fn reserve(
        self: &Arc<Self>,
        payer: &Payer<'_>,
        started_unix: i64,
        worst: u64,
    ) -> std::result::Result<Option<Reservation>, std::result::Result<OverBudget, Error>> {
        let mut state = self.lock();
        let mut targets = Vec::new();
        for scope in payer.scopes() {
            let Some(limit) = state.limits.get(&scope).copied() else {
                continue;
            };
            for (kind, amount) in [
                (PeriodKind::Day, limit.daily_micros),
                (PeriodKind::Month, limit.monthly_micros),
            ] {
                if let Some(amount) = amount {
                    targets.push((scope.clone(), Period::of(kind, started_unix), amount));
                }
            }
        }
        if targets.is_empty() {
            return Ok(None);
        }
        for (scope, period, limit) in &targets {
            let key = (scope.clone(), *period);
            if !state.counters.contains_key(&key) {
                let spent = self.load_spent(scope, period).map_err(Err)?;
                state.counters.insert(key.clone(), Counter { spent, reserved: 0 });
            }
            let c = state.counters[&key];
            if c.spent.saturating_add(c.reserved).saturating_add(worst) > *limit {
                return Err(Ok(OverBudget {
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
            if let Some(c) = state.counters.get_mut(&(scope.clone(), period)) {
                c.reserved += worst;
            }
            holds.push((scope, period, worst));
        }
        Ok(Some(Reservation {
            book: self.clone(),
            holds,
        }))
    }

    /// Spent in a period so far, from the ledger.
    fn load_spent(&self, scope: &str, period: &Period) -> Result<u64> {
        let (since, until, _) = period.bounds();
        let rows = self.store.spend(&since, &until)?;
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
            let limit = state.limits.get(scope).and_then(|l| match period {
                Period::Day(_) => l.daily_micros,
                Period::Month(_) => l.monthly_micros,
            });
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
                                spent_usd = %crate::money::usd(c.spent),
                                limit_usd = %crate::money::usd(limit),
                                "budget is 80% used"
                            );
                        }
                    }
                }
            }
        }
    }

    /// Sets (or clears, with an empty limit) the budget of a scope: `org`, `team:NAME`, `key:ID`.
    /// Counters already loaded stay: what is spent does not change with the limit.
    pub fn set(&self, scope: &str, limit: BudgetLimit) -> Result<()> {
        validate_scope(scope)?;
        self.store.put_budget(scope, &limit)?;
        let mut state = self.lock();
        // Clearing falls back to the config file's budget for the scope, as a restart would.
        match self
            .defaults
            .get(scope)
            .copied()
            .filter(|_| limit == BudgetLimit::default())
        {
            Some(default) => state.limits.insert(scope.to_string(), default),
            None if limit == BudgetLimit::default() => state.limits.remove(scope),
            None => state.limits.insert(scope.to_string(), limit),
        };
        Ok(())
    }

    /// Every budget with what is spent and reserved in the current periods.
    pub fn status(&self, now_unix: i64) -> Result<Vec<BudgetStatus>> {
        let mut state = self.lock();
        let limits: Vec<(String, BudgetLimit)> = state.limits.iter().map(|(k, v)| (k.clone(), *v)).collect();
        let mut out = Vec::new();
        for (scope, limit) in limits {
            for (kind, amount) in [
                (PeriodKind::Day, limit.daily_micros),
                (PeriodKind::Month, limit.monthly_micros),
            ] {
                let Some(amount) = amount else { continue };
                let period = Period::of(kind, now_unix);
                let key = (scope.clone(), period);
                if !state.counters.contains_key(&key) {
                    let spent = self.load_spent(&scope, &period)?;
                    state.counters.insert(key.clone(), Counter { spent, reserved: 0 });
                }
                let c = state.counters[&key];
                out.push(BudgetStatus {
                    scope: scope.clone(),
                    period: period.name().into(),
                    limit_micros: amount,
                    spent_micros: c.spent,
                    reserved_micros: c.reserved,
                    resets_at: crate::clock::format_rfc3339(period.bounds().2),
                });
            }
        }
        out.sort_by(|a, b| (&a.scope, &a.period).cmp(&(&b.scope, &b.period)));
        Ok(out)
    }
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

/// Checks a scope name: `org`, `team:NAME` or `key:ID`.
pub fn validate_scope(scope: &str) -> Result<()> {
    let ok = scope == "org"
        || scope
            .strip_prefix("team:")
            .is_some_and(|t| !t.is_empty() && t.len() <= 128)
        || scope.strip_prefix("key:").is_some_and(|k| k.starts_with("key_"));
    if ok {
        Ok(())
    } else {
        Err(Error::msg(format!(
            "budget scope {scope:?} is not valid; use org, team:NAME or key:KEY_ID"
        )))
    }
}

impl Reservation {
    /// Replaces the reservation with the real cost.
    pub fn settle(mut self, actual_micros: u64) {
        let holds = std::mem::take(&mut self.holds);
        self.book.finish(&holds, Some(actual_micros));
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.holds.is_empty() {
            self.book.finish(&self.holds, None);
        }
    }
}

/// Per-key rate limits (from the key record).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimits {
    /// Requests per minute.
    #[serde(default)]
    pub rpm: Option<u32>,
    /// Input + output tokens per minute.
    #[serde(default)]
    pub tpm: Option<u64>,
    /// Concurrent streaming responses.
    #[serde(default)]
    pub max_streams: Option<u32>,
}

impl RateLimits {
    /// Whether any limit is set.
    pub fn any(&self) -> bool {
        self.rpm.is_some() || self.tpm.is_some() || self.max_streams.is_some()
    }
}

/// Why a rate limit refused a request.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimited {
    /// What was exceeded, in words.
    pub what: String,
    /// Seconds until a retry can succeed.
    pub retry_after: u64,
    /// Whether waiting can help at all.
    pub can_wait: bool,
}

#[derive(Debug)]
struct Bucket {
    level: f64,
    at: Instant,
}

impl Bucket {
    fn refill(&mut self, capacity: f64, now: Instant) {
        let per_sec = capacity / 60.0;
        self.level = (self.level + now.duration_since(self.at).as_secs_f64() * per_sec).min(capacity);
        self.at = now;
    }
}

#[derive(Debug, Default)]
struct KeyState {
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
    streams: u32,
}

/// Rate-limit state of every key.
#[derive(Debug, Default)]
pub struct RateLimiter {
    keys: Mutex<HashMap<String, KeyState>>,
}

/// A rate-limit admission: holds a stream slot and the tokens taken on account.
#[derive(Debug)]
pub struct RateTicket {
    limiter: Arc<RateLimiter>,
    key_id: String,
    limits: RateLimits,
    stream: bool,
    tokens_taken: u64,
}

impl RateLimiter {
    /// Admits one request of `estimated_tokens`, or says how long to wait.
    pub fn admit(
        self: &Arc<Self>,
        key_id: &str,
        limits: RateLimits,
        stream: bool,
        estimated_tokens: u64,
    ) -> std::result::Result<Option<RateTicket>, RateLimited> {
        if !limits.any() {
            return Ok(None);
        }
        let now = Instant::now();
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        let state = keys.entry(key_id.to_string()).or_default();
        if let Some(max) = limits.max_streams
            && stream
            && state.streams >= max
        {
            return Err(RateLimited {
                what: format!("{max} concurrent streams"),
                retry_after: 1,
                can_wait: true,
            });
        }
        if let Some(rpm) = limits.rpm {
            let cap = rpm as f64;
            let b = state.requests.get_or_insert(Bucket { level: cap, at: now });
            b.refill(cap, now);
            if b.level < 1.0 {
                let wait = ((1.0 - b.level) / (cap / 60.0)).ceil() as u64;
                return Err(RateLimited {
                    what: format!("{rpm} requests per minute"),
                    retry_after: wait.max(1),
                    can_wait: true,
                });
            }
        }
        if let Some(tpm) = limits.tpm {
            if estimated_tokens > tpm {
                return Err(RateLimited {
                    what: format!("{tpm} tokens per minute (this request alone needs about {estimated_tokens})"),
                    retry_after: 60,
                    can_wait: false,
                });
            }
            let cap = tpm as f64;
            let b = state.tokens.get_or_insert(Bucket { level: cap, at: now });
            b.refill(cap, now);
            if b.level < estimated_tokens as f64 {
                let wait = ((estimated_tokens as f64 - b.level) / (cap / 60.0)).ceil() as u64;
                return Err(RateLimited {
                    what: format!("{tpm} tokens per minute"),
                    retry_after: wait.max(1),
                    can_wait: true,
                });
            }
            b.level -= estimated_tokens as f64;
        }
        if let Some(b) = state.requests.as_mut() {
            b.level -= 1.0;
        }
        if stream {
            state.streams += 1;
        }
        Ok(Some(RateTicket {
            limiter: self.clone(),
            key_id: key_id.to_string(),
            limits,
            stream,
            tokens_taken: estimated_tokens,
        }))
    }
}

/// A concurrent-stream slot; freed when dropped (when the client's response ends or the client
/// goes away — draining the upstream for metering afterwards does not hold it).
#[derive(Debug)]
pub struct StreamSlot {
    limiter: Arc<RateLimiter>,
    key_id: String,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut keys = self.limiter.keys.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = keys.get_mut(&self.key_id) {
            s.streams = s.streams.saturating_sub(1);
        }
    }
}

impl RateTicket {
    /// Hands the stream slot to whoever holds the client's response.
    pub fn take_stream_slot(&mut self) -> Option<StreamSlot> {
        std::mem::take(&mut self.stream).then(|| StreamSlot {
            limiter: self.limiter.clone(),
            key_id: self.key_id.clone(),
        })
    }

    /// Charges the real token count (the difference to the estimate taken at admission).
    pub fn settle(&mut self, actual_tokens: u64) {
        if self.limits.tpm.is_none() {
            return;
        }
        let mut keys = self.limiter.keys.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = keys.get_mut(&self.key_id).and_then(|s| s.tokens.as_mut()) {
            b.level -= actual_tokens as f64 - self.tokens_taken as f64;
        }
        self.tokens_taken = actual_tokens;
    }
}

impl Drop for RateTicket {
    fn drop(&mut self) {
        if self.stream {
            let mut keys = self.limiter.keys.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(s) = keys.get_mut(&self.key_id) {
                s.streams = s.streams.saturating_sub(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_and_resets() {
        let t = crate::clock::parse_date_or_time("2026-12-31T23:59:59Z").unwrap();
        let m = Period::of(PeriodKind::Month, t);
        assert_eq!(
            m.bounds(),
            (
                "2026-12-01".into(),
                "2026-12-31".into(),
                crate::clock::parse_date_or_time("2027-01-01").unwrap()
            )
        );
        let d = Period::of(PeriodKind::Day, t);
        assert_eq!(d.bounds().2, crate::clock::parse_date_or_time("2027-01-01").unwrap());
        let feb = Period::of(
            PeriodKind::Month,
            crate::clock::parse_date_or_time("2028-02-10").unwrap(),
        );
        assert_eq!(feb.bounds().1, "2028-02-29");
    }

    #[test]
    fn rate_limits_wait_and_refuse() {
        let rl = Arc::new(RateLimiter::default());
        let limits = RateLimits {
            rpm: Some(2),
            tpm: Some(1000),
            max_streams: Some(1),
        };
        let a = rl.admit("k", limits, true, 100).unwrap().unwrap();
        let e = rl.admit("k", limits, true, 100).unwrap_err();
        assert!(e.what.contains("1 concurrent streams") && e.can_wait);
        drop(a);
        let _b = rl.admit("k", limits, false, 100).unwrap();
        let e = rl.admit("k", limits, false, 100).unwrap_err();
        assert!(
            e.what.contains("2 requests per minute") && e.retry_after >= 1 && e.retry_after <= 30,
            "{e:?}"
        );
        let e = rl.admit("other", limits, false, 5000).unwrap_err();
        assert!(!e.can_wait && e.what.contains("needs about 5000"));
        let mut t = rl
            .admit(
                "tok",
                RateLimits {
                    tpm: Some(1000),
                    ..Default::default()
                },
                false,
                100,
            )
            .unwrap()
            .unwrap();
        t.settle(950); // real usage was much higher than the estimate: the bucket is charged
        let e = rl
            .admit(
                "tok",
                RateLimits {
                    tpm: Some(1000),
                    ..Default::default()
                },
                false,
                100,
            )
            .unwrap_err();
        assert!(e.can_wait && e.retry_after >= 3, "{e:?}");
        assert!(rl.admit("free", RateLimits::default(), true, 10).unwrap().is_none());
    }
}

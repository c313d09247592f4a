//! Context rot: how errors, latency and cost grow with the context a request carries, from the
//! audit records (one pass, memory bounded by the number of groups × buckets and the timing samples).
//!
//! A request's context is its input tokens (uncached + cache read + cache write) as the provider
//! reported them, or ⌈request bytes / 4⌉ when it reported none (a failed request still carried its
//! context). Only requests that left for the upstream count: refusals by the gateway say nothing
//! about a model's behaviour.
//!
//! The **gap** compares each bucket with the smallest non-empty one: `latency_growth` (p50 duration)
//! and `error_growth` (error rate, smoothed as (errors+1)/(requests+2) so an empty base is defined)
//! divided by `cost_growth` (cost per request). A gap of 3 means errors grew three times faster than
//! what you pay per request.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::AuditRecord;

/// Bucket bounds in tokens: `[lo, hi)`; the last bucket takes everything above 200K.
pub const BUCKETS: [(u64, u64, &str); 8] = [
    (0, 4_000, "0-4K"),
    (4_000, 8_000, "4-8K"),
    (8_000, 16_000, "8-16K"),
    (16_000, 32_000, "16-32K"),
    (32_000, 64_000, "32-64K"),
    (64_000, 128_000, "64-128K"),
    (128_000, 200_000, "128-200K"),
    (200_000, u64::MAX, "200K-1M"),
];

/// Error classes that count as the provider failing (docs/audit.md).
pub fn is_upstream_failure(class: &str) -> bool {
    matches!(
        class,
        "upstream_5xx"
            | "overloaded"
            | "upstream_429"
            | "stream_error"
            | "timeout"
            | "upstream_timeout"
            | "upstream_unreachable"
    )
}

/// The context size the rot report files a record under.
pub fn context_tokens(r: &AuditRecord) -> u64 {
    match r.context_tokens() {
        0 => r.bytes_in.div_ceil(4),
        n => n,
    }
}

fn bucket_of(tokens: u64) -> usize {
    BUCKETS
        .iter()
        .position(|(lo, hi, _)| tokens >= *lo && tokens < *hi)
        .unwrap_or(BUCKETS.len() - 1)
}

/// Whether a record counts for context rot (it left for the upstream).
pub fn counts(r: &AuditRecord) -> bool {
    r.overhead_ms.is_some() && r.provider.is_some()
}

/// A grouping dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum By {
    /// Everything together.
    All,
    /// Requested model.
    Model,
    /// Team.
    Team,
    /// Stand-in key.
    Key,
}

impl By {
    /// Parses `all|model|team|key`.
    pub fn parse(s: &str) -> conduit_core::error::Result<By> {
        match s {
            "all" => Ok(By::All),
            "model" => Ok(By::Model),
            "team" => Ok(By::Team),
            "key" => Ok(By::Key),
            other => Err(conduit_core::error::Error::msg(format!(
                "--by {other:?}: expected model, team, key or all"
            ))),
        }
    }

    fn of(self, r: &AuditRecord) -> String {
        let v = match self {
            By::All => None,
            By::Model => r.model.as_deref(),
            By::Team => r.team.as_deref(),
            By::Key => r.key_id.as_deref(),
        };
        match self {
            By::All => "all".into(),
            _ => v.unwrap_or("-").to_string(),
        }
    }
}

#[derive(Default)]
struct Acc {
    requests: u64,
    errors: u64,
    ttfb: Vec<f32>,
    duration: Vec<f32>,
    priced: u64,
    cost_micros: u64,
    output_tokens: u64,
    cache_read: u64,
    context: u64,
}

/// One bucket of one group.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Bucket {
    /// `0-4K`, …
    pub bucket: &'static str,
    /// Requests.
    pub requests: u64,
    /// Upstream failures (5xx, 529, 429, stream errors, timeouts).
    pub errors: u64,
    /// errors / requests.
    pub error_rate: f64,
    /// Time to first byte, p50 / p95 ms.
    pub ttfb_p50_ms: Option<f64>,
    /// p95.
    pub ttfb_p95_ms: Option<f64>,
    /// Duration p50 / p95 ms.
    pub duration_p50_ms: Option<f64>,
    /// p95.
    pub duration_p95_ms: Option<f64>,
    /// Mean cost of the priced requests, USD.
    pub cost_per_request_usd: Option<f64>,
    /// Cost per 1,000 output tokens, USD.
    pub cost_per_1k_output_usd: Option<f64>,
    /// Cache-read tokens / all input tokens.
    pub cache_read_share: f64,
    /// Growth against the smallest non-empty bucket of the group.
    pub cost_growth: Option<f64>,
    /// p50 duration growth.
    pub latency_growth: Option<f64>,
    /// Smoothed error-rate growth.
    pub error_growth: Option<f64>,
    /// latency_growth / cost_growth.
    pub latency_gap: Option<f64>,
    /// error_growth / cost_growth.
    pub error_gap: Option<f64>,
}

/// The buckets of one group.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Group {
    /// Model, team or key (or `all`).
    pub group: String,
    /// Requests in the group.
    pub requests: u64,
    /// The non-empty buckets, smallest first.
    pub buckets: Vec<Bucket>,
}

/// Folds records into a context-rot report.
pub struct RotBuilder {
    by: By,
    groups: BTreeMap<String, Vec<Acc>>,
}

impl RotBuilder {
    /// A builder grouping by `by`.
    pub fn new(by: By) -> Self {
        RotBuilder {
            by,
            groups: BTreeMap::new(),
        }
    }

    /// Adds one record (ignored unless it [`counts`]).
    pub fn add(&mut self, r: &AuditRecord) {
        if !counts(r) {
            return;
        }
        let accs = self
            .groups
            .entry(self.by.of(r))
            .or_insert_with(|| (0..BUCKETS.len()).map(|_| Acc::default()).collect());
        let tokens = context_tokens(r);
        let a = &mut accs[bucket_of(tokens)];
        a.requests += 1;
        a.errors += r.error_class.as_deref().is_some_and(is_upstream_failure) as u64;
        if let Some(t) = r.ttfb_ms {
            a.ttfb.push(t as f32);
        }
        a.duration.push(r.duration_ms as f32);
        if let Some(c) = r.cost_micros {
            a.priced += 1;
            a.cost_micros += c;
        }
        a.output_tokens += r.output_tokens;
        a.cache_read += r.cache_read_tokens;
        a.context += tokens;
    }

    /// The report, groups by most requests first.
    pub fn finish(self) -> Vec<Group> {
        let mut groups: Vec<Group> = self
            .groups
            .into_iter()
            .map(|(group, accs)| {
                let mut buckets: Vec<Bucket> = accs
                    .into_iter()
                    .enumerate()
                    .filter(|(_, a)| a.requests > 0)
                    .map(|(i, a)| summarise(BUCKETS[i].2, a))
                    .collect();
                add_growth(&mut buckets);
                Group {
                    requests: buckets.iter().map(|b| b.requests).sum(),
                    group,
                    buckets,
                }
            })
            .collect();
        groups.sort_by(|a, b| b.requests.cmp(&a.requests).then(a.group.cmp(&b.group)));
        groups
    }
}

fn percentile(v: &mut [f32], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f32::total_cmp);
    let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(f64::from(v[rank - 1]))
}

fn summarise(name: &'static str, mut a: Acc) -> Bucket {
    let usd = |micros: f64| micros / 1e6;
    Bucket {
        bucket: name,
        requests: a.requests,
        errors: a.errors,
        error_rate: a.errors as f64 / a.requests as f64,
        ttfb_p50_ms: percentile(&mut a.ttfb, 0.50),
        ttfb_p95_ms: percentile(&mut a.ttfb, 0.95),
        duration_p50_ms: percentile(&mut a.duration, 0.50),
        duration_p95_ms: percentile(&mut a.duration, 0.95),
        cost_per_request_usd: (a.priced > 0).then(|| usd(a.cost_micros as f64 / a.priced as f64)),
        cost_per_1k_output_usd: (a.output_tokens > 0 && a.priced > 0)
            .then(|| usd(a.cost_micros as f64) * 1000.0 / a.output_tokens as f64),
        cache_read_share: if a.context > 0 {
            a.cache_read as f64 / a.context as f64
        } else {
            0.0
        },
        cost_growth: None,
        latency_growth: None,
        error_growth: None,
        latency_gap: None,
        error_gap: None,
    }
}

fn add_growth(buckets: &mut [Bucket]) {
    let Some(base) = buckets.first().cloned() else { return };
    let smoothed = |b: &Bucket| (b.errors as f64 + 1.0) / (b.requests as f64 + 2.0);
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    for b in buckets.iter_mut() {
        b.cost_growth = ratio(b.cost_per_request_usd, base.cost_per_request_usd);
        b.latency_growth = ratio(b.duration_p50_ms, base.duration_p50_ms);
        b.error_growth = Some(smoothed(b) / smoothed(&base));
        b.latency_gap = ratio(b.latency_growth, b.cost_growth);
        b.error_gap = ratio(b.error_growth, b.cost_growth);
    }
}

/// One client session (by hashed id).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Session {
    /// Hashed session id.
    pub session: String,
    /// Key and team of its first turn.
    pub key_id: Option<String>,
    /// Team.
    pub team: Option<String>,
    /// Turns (requests that reached the upstream).
    pub turns: u64,
    /// Context tokens per turn, in order (first 500 turns).
    pub context_per_turn: Vec<u64>,
    /// Largest context.
    pub max_context: u64,
    /// Cost of all turns, USD.
    pub cost_usd: f64,
    /// Turn (1-based) whose context first reached 32K, and what the turns from there cost.
    pub crossed_32k_at: Option<u64>,
    /// USD from the 32K turn on.
    pub cost_after_32k_usd: f64,
    /// Turn whose context first reached 100K.
    pub crossed_100k_at: Option<u64>,
    /// USD from the 100K turn on.
    pub cost_after_100k_usd: f64,
    /// First and last turn, Unix ms.
    pub first_ms: i64,
    /// Last turn.
    pub last_ms: i64,
}

/// The sessions report.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Sessions {
    /// Sessions seen.
    pub sessions: u64,
    /// Sessions whose context reached 32K.
    pub crossed_32k: u64,
    /// …and 100K.
    pub crossed_100k: u64,
    /// USD spent in turns at or past 32K / 100K.
    pub cost_after_32k_usd: f64,
    /// USD past 100K.
    pub cost_after_100k_usd: f64,
    /// The sessions that crossed 32K (most expensive first, at most `limit`), else the largest.
    pub list: Vec<Session>,
}

const MAX_TURNS_LISTED: usize = 500;

/// Folds records into per-session figures.
#[derive(Default)]
pub struct SessionsBuilder {
    by_id: HashMap<String, Session>,
}

impl SessionsBuilder {
    /// Adds one record (ignored without a session or when it did not reach the upstream).
    pub fn add(&mut self, r: &AuditRecord) {
        let Some(id) = r.session.as_ref() else { return };
        if !counts(r) {
            return;
        }
        let s = self.by_id.entry(id.clone()).or_insert_with(|| Session {
            session: id.clone(),
            key_id: r.key_id.clone(),
            team: r.team.clone(),
            turns: 0,
            context_per_turn: Vec::new(),
            max_context: 0,
            cost_usd: 0.0,
            crossed_32k_at: None,
            cost_after_32k_usd: 0.0,
            crossed_100k_at: None,
            cost_after_100k_usd: 0.0,
            first_ms: r.start_ms,
            last_ms: r.start_ms,
        });
        let tokens = context_tokens(r);
        let cost = r.cost_micros.unwrap_or(0) as f64 / 1e6;
        s.turns += 1;
        if s.context_per_turn.len() < MAX_TURNS_LISTED {
            s.context_per_turn.push(tokens);
        }
        s.max_context = s.max_context.max(tokens);
        s.cost_usd += cost;
        if tokens >= 32_000 && s.crossed_32k_at.is_none() {
            s.crossed_32k_at = Some(s.turns);
        }
        if tokens >= 100_000 && s.crossed_100k_at.is_none() {
            s.crossed_100k_at = Some(s.turns);
        }
        if s.crossed_32k_at.is_some() {
            s.cost_after_32k_usd += cost;
        }
        if s.crossed_100k_at.is_some() {
            s.cost_after_100k_usd += cost;
        }
        s.first_ms = s.first_ms.min(r.start_ms);
        s.last_ms = s.last_ms.max(r.start_ms);
    }

    /// The report, listing at most `limit` sessions.
    pub fn finish(self, limit: usize) -> Sessions {
        let mut all: Vec<Session> = self.by_id.into_values().collect();
        let crossed_32k = all.iter().filter(|s| s.crossed_32k_at.is_some()).count() as u64;
        let crossed_100k = all.iter().filter(|s| s.crossed_100k_at.is_some()).count() as u64;
        let cost_after_32k_usd = all.iter().map(|s| s.cost_after_32k_usd).sum();
        let cost_after_100k_usd = all.iter().map(|s| s.cost_after_100k_usd).sum();
        all.sort_by(|a, b| {
            (b.crossed_32k_at.is_some(), b.cost_usd)
                .partial_cmp(&(a.crossed_32k_at.is_some(), a.cost_usd))
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(a.session.cmp(&b.session))
        });
        let sessions = all.len() as u64;
        all.truncate(limit);
        Sessions {
            sessions,
            crossed_32k,
            crossed_100k,
            cost_after_32k_usd,
            cost_after_100k_usd,
            list: all,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(tokens: u64, class: Option<&str>, duration: f64, cost: u64, session: Option<&str>) -> AuditRecord {
        AuditRecord {
            provider: Some("anthropic".into()),
            model: Some("m".into()),
            overhead_ms: Some(0.1),
            input_tokens: tokens,
            output_tokens: 100,
            duration_ms: duration,
            ttfb_ms: Some(duration / 2.0),
            cost_micros: Some(cost),
            error_class: class.map(str::to_string),
            session: session.map(str::to_string),
            ..AuditRecord::default()
        }
    }

    #[test]
    fn buckets_and_gap() {
        let mut b = RotBuilder::new(By::Model);
        for _ in 0..98 {
            b.add(&rec(1_000, None, 100.0, 1_000, None));
        }
        for _ in 0..8 {
            b.add(&rec(150_000, None, 400.0, 2_000, None));
        }
        b.add(&rec(150_000, Some("overloaded"), 400.0, 2_000, None));
        b.add(&rec(150_000, Some("upstream_5xx"), 400.0, 2_000, None));
        // A refusal by the gateway never counts.
        b.add(&AuditRecord {
            overhead_ms: None,
            ..rec(150_000, Some("budget_exceeded"), 1.0, 0, None)
        });
        let groups = b.finish();
        assert_eq!(groups.len(), 1);
        let g = &groups[0];
        assert_eq!(g.requests, 108);
        assert_eq!(g.buckets.len(), 2);
        let (small, big) = (&g.buckets[0], &g.buckets[1]);
        assert_eq!((small.bucket, big.bucket), ("0-4K", "128-200K"));
        assert_eq!((big.requests, big.errors), (10, 2));
        assert!((big.error_rate - 0.2).abs() < 1e-9);
        assert_eq!(big.cost_growth, Some(2.0));
        assert_eq!(big.latency_growth, Some(4.0));
        assert_eq!(big.latency_gap, Some(2.0));
        // (2+1)/(10+2) ÷ (0+1)/(98+2) = 25 → gap 12.5
        assert!((big.error_gap.unwrap() - 12.5).abs() < 1e-9, "{:?}", big.error_gap);
        assert_eq!(small.error_gap, Some(1.0));
        assert_eq!(bucket_of(4_000), 1);
        assert_eq!(bucket_of(5_000_000), 7);
    }

    #[test]
    fn sessions_cross_thresholds() {
        let mut s = SessionsBuilder::default();
        for (i, t) in [10_000u64, 30_000, 40_000, 120_000, 130_000].iter().enumerate() {
            let mut r = rec(*t, None, 1.0, 1_000_000, Some("abc"));
            r.start_ms = i as i64;
            s.add(&r);
        }
        s.add(&rec(1_000, None, 1.0, 5, Some("small")));
        s.add(&rec(1_000, None, 1.0, 5, None));
        let report = s.finish(10);
        assert_eq!((report.sessions, report.crossed_32k, report.crossed_100k), (2, 1, 1));
        let top = &report.list[0];
        assert_eq!(top.session, "abc");
        assert_eq!(top.turns, 5);
        assert_eq!(top.context_per_turn, [10_000, 30_000, 40_000, 120_000, 130_000]);
        assert_eq!((top.crossed_32k_at, top.crossed_100k_at), (Some(3), Some(4)));
        assert_eq!((top.cost_after_32k_usd, top.cost_after_100k_usd), (3.0, 2.0));
    }
}

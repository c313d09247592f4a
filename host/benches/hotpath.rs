//! Per-request cost of the in-process pieces that admission and metering add, measured in a loop.
//!
//! Run with: `cargo bench -p conduit --bench hotpath -- [--iterations N]`
//!
//! Prints nanoseconds per operation (p50 and p99 over batches) for: budget reserve + settle across
//! three scopes; rate-limit admit + settle; the usage tap over a whole 20-event Anthropic stream and
//! over a 1.4 KB JSON body; the price lookup + cost. Figures to read, not assertions.
#![allow(clippy::expect_used, clippy::unwrap_used)] // a measuring tool: stopping loudly on any failure is right

use std::sync::Arc;
use std::time::Instant;

use conduit::admission::{BudgetBook, BudgetLimit, Payer, RateLimiter, RateLimits};
use conduit::protocol::Protocol;
use conduit::store::{SledStore, Store};
use conduit::usage::{Usage, UsageTap};

fn measure(name: &str, iterations: usize, mut op: impl FnMut()) {
    const BATCH: usize = 100;
    let mut per_op = Vec::with_capacity(iterations / BATCH);
    for _ in 0..iterations / BATCH {
        let t = Instant::now();
        for _ in 0..BATCH {
            op();
        }
        per_op.push(t.elapsed().as_nanos() as f64 / BATCH as f64);
    }
    per_op.sort_by(|a, b| a.total_cmp(b));
    let p = |q: f64| per_op[((per_op.len() - 1) as f64 * q) as usize];
    println!("{name:<52} {:>10.0} {:>10.0}", p(0.5), p(0.99));
}

fn main() {
    let mut iterations = 200_000;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--iterations" {
            iterations = args.next().and_then(|v| v.parse().ok()).expect("--iterations N");
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path()).unwrap());
    let limit = BudgetLimit {
        daily_micros: Some(u64::MAX / 4),
        monthly_micros: Some(u64::MAX / 4),
    };
    let scopes = [
        ("key:key_bench".to_string(), limit),
        ("team:payments".to_string(), limit),
        ("org".to_string(), limit),
    ];
    let book = Arc::new(BudgetBook::open(store.clone(), &scopes).unwrap());
    let payer = Payer {
        key_id: "key_bench",
        team: Some("payments"),
    };
    let now = conduit::clock::now_unix();
    let limiter = Arc::new(RateLimiter::default());
    let limits = RateLimits {
        rpm: Some(u32::MAX),
        tpm: Some(u64::MAX / 4),
        max_streams: Some(u32::MAX),
    };

    let mut h = http::HeaderMap::new();
    h.insert("anthropic-version", "2023-06-01".parse().unwrap());
    let stream_body = br#"{"model":"claude-sonnet-4-5","max_tokens":512,"stream":true,"messages":[]}"#;
    let stream: Vec<bytes::Bytes> =
        conduit::mock::payload::reply(&http::Method::POST, "/v1/messages", &h, stream_body, "ok", false).chunks;
    let json_body = br#"{"model":"claude-sonnet-4-5","max_tokens":512,"messages":[]}"#;
    let json = conduit::mock::payload::reply(&http::Method::POST, "/v1/messages", &h, json_body, "ok", false)
        .chunks
        .concat();
    let prices = conduit::prices::PriceTable::shipped().unwrap();
    let usage = Usage {
        input: 1200,
        output: 350,
        cache_read: 70_000,
        cache_write: 900,
    };

    println!("per operation, ns ({iterations} iterations)                     p50        p99");
    measure(
        "budget reserve + settle (key, team, org × day, month)",
        iterations,
        || {
            book.reserve(&payer, now, 2100).unwrap().unwrap().settle(2100);
        },
    );
    measure("rate limit admit + settle + stream slot", iterations, || {
        let mut t = limiter.admit("key_bench", limits, true, 250).unwrap().unwrap();
        let slot = t.take_stream_slot();
        t.settle(300);
        drop(slot);
    });
    measure(
        &format!(
            "usage tap, Anthropic SSE ({} events, {} B)",
            stream.len(),
            stream.iter().map(|c| c.len()).sum::<usize>()
        ),
        iterations / 10,
        || {
            let mut tap = UsageTap::new(Protocol::Anthropic, Some("text/event-stream"), None);
            for c in &stream {
                tap.observe(c);
            }
            assert!(tap.finish().reported.is_some());
        },
    );
    measure(
        &format!("usage tap, Anthropic JSON ({} B)", json.len()),
        iterations / 10,
        || {
            let mut tap = UsageTap::new(Protocol::Anthropic, Some("application/json"), None);
            tap.observe(&json);
            assert!(tap.finish().reported.is_some());
        },
    );
    measure("price lookup + cost", iterations, || {
        let row = prices.lookup("anthropic", "claude-sonnet-4-5-20250929").unwrap();
        std::hint::black_box(row.cost_micros(&usage));
    });
}

//! Hard budgets and rate limits (issue 4): zero overshoot under concurrency, all-or-nothing across
//! key, team and org scopes, provider-shaped refusals that say what to do, and fail-closed
//! behaviour when the store stops answering.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use conduit_gateway::protocol::Provider;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::{Harness, Reply};
use conduit_gateway::error::{Error, Result};
use conduit_gateway::records::{BudgetLimit, KeyRecord, RateLimits};
use conduit_gateway::store::{KeyChange, KeyStore, MetaStore, Watch};
use http::{Method, Request};
use http_body_util::Full;

use common::{CHAT_WORST as WORST, chat_body as body_of};

async fn post(h: &Harness, key: &str, body: &str) -> Reply {
    h.chat_at_worst(key, body).await
}

/// A gateway for the races: 50 requests at once on 2 cores, beside the other tests of this file.
/// The policies' 10 ms default deadline is a production setting; starved of CPU here it would fail
/// some requests closed (503 `policy_unavailable`), which is not what these tests count.
async fn racing() -> Arc<Harness> {
    Arc::new(Harness::builder().toml("[policies]\ntimeout_ms = 2000").start().await)
}

async fn race(h: &Arc<Harness>, keys: &[(String, usize)]) -> Vec<(String, u16)> {
    let mut tasks = Vec::new();
    for (key, n) in keys {
        for _ in 0..*n {
            let (h, key) = (h.clone(), key.clone());
            tasks.push(tokio::spawn(async move {
                let r = post(&h, &key, &body_of(400, 1000)).await;
                (key, r.status.as_u16())
            }));
        }
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

async fn budget_status(h: &Harness) -> Vec<conduit_gateway::budget::BudgetStatus> {
    let now = conduit_gateway::clock::now_unix();
    h.gateway().state.budgets.status(now).await.unwrap()
}

async fn set(h: &Harness, scope: &str, monthly: u64) {
    let limit = BudgetLimit {
        daily_micros: None,
        monthly_micros: Some(monthly),
    };
    h.gateway().state.budgets.set(scope, limit).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_requests_race_a_budget_that_fits_exactly_seven() {
    let h = racing().await;
    set(&h, "team:payments", 7 * WORST).await;
    let results = race(&h, &[(h.key.clone(), 50)]).await;
    let ok = results.iter().filter(|(_, s)| *s == 200).count();
    let refused = results.iter().filter(|(_, s)| *s == 402).count();
    assert_eq!((ok, refused), (7, 43), "{results:?}");
    assert_eq!(
        h.mock_log().await.len(),
        7,
        "exactly the admitted requests reached the provider"
    );
    h.gateway().ledger.flush().await;
    let spent: u64 = h
        .gateway()
        .state
        .spend
        .range("2000-01-01", "2999-12-31")
        .await
        .unwrap()
        .iter()
        .map(|r| r.cost_micros)
        .sum();
    assert_eq!(spent, 7 * WORST, "recorded spend equals the budget, never more");
    let status = budget_status(&h).await;
    assert_eq!(
        (status[0].spent_micros, status[0].reserved_micros),
        (7 * WORST, 0),
        "nothing left reserved"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_team_and_org_budgets_bind_at_once() {
    let h = racing().await;
    let bob = h.new_key("bob@corp.example").await.key; // team payments
    let carol = conduit_gateway::operator::create_key(
        h.gateway().state.keys.as_ref(),
        conduit_gateway::operator::NewKeyRequest {
            owner: "carol@corp.example".into(),
            team: Some("risk".into()),
            name: None,
            expires_at: None,
            limits: Default::default(),
        },
    )
    .await
    .unwrap()
    .key;
    set(&h, &format!("key:{}", h.key_id), 4 * WORST).await;
    set(&h, "team:payments", 6 * WORST).await;
    set(&h, "org", 10 * WORST).await;
    let results = race(&h, &[(h.key.clone(), 20), (bob.clone(), 20), (carol.clone(), 20)]).await;
    let ok = |k: &str| results.iter().filter(|(key, s)| key == k && *s == 200).count();
    let (a, b, c) = (ok(&h.key), ok(&bob), ok(&carol));
    assert!(a <= 4, "alice's key budget: {a}");
    assert!(a + b <= 6, "team payments: {a} + {b}");
    assert_eq!(a + b + c, 10, "the org budget is filled exactly: {a} + {b} + {c}");
    assert_eq!(results.iter().filter(|(_, s)| *s == 402).count(), 50);
    assert_eq!(h.mock_log().await.len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_names_the_budget_spent_reserved_limit_and_reset() {
    let h = Harness::start().await;
    set(&h, "team:payments", WORST + 100).await;
    assert_eq!(post(&h, &h.key, &body_of(400, 1000)).await.status, 200);
    let r = post(&h, &h.key, &body_of(400, 1000)).await;
    r.assert_openai_error(402, "monthly budget of team payments is $0.002200 per month");
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    for needle in [
        "$0.002100 spent",
        "$0.000000 reserved",
        "worst case of $0.002100",
        "it resets at 20",
        "lower max_tokens",
    ] {
        assert!(msg.contains(needle), "{needle:?} missing from {msg:?}");
    }
    assert_eq!(r.header("x-should-retry"), Some("false"));
    assert_eq!(r.json()["error"]["code"], "budget_exceeded");
    // Anthropic callers get Anthropic's shape (Claude Code prints a 402's message and stops).
    let r = h
        .messages(r#"{"model":"claude-haiku-4-5","max_tokens":64000,"messages":[]}"#)
        .await;
    r.assert_anthropic_error(402, "billing_error", "budget of team payments");
    // A smaller request that fits still passes.
    // 100 bytes × $0.25 + 1 × $2 per MTok = 27 µ$ ≤ the 100 µ$ left.
    assert_eq!(post(&h, &h.key, &body_of(100, 1)).await.status, 200);
}

async fn responses(h: &Harness, body: &str) -> Reply {
    let bearer = format!("Bearer {}", h.key);
    h.send(
        Method::POST,
        "/v1/responses",
        &[
            ("authorization", &bearer),
            ("content-type", "application/json"),
            ("x-mock-usage", "max"),
        ],
        body.to_string(),
    )
    .await
}

/// Issue 21: a model with no price (Codex 0.171's default `gpt-6.2-sol`) neither breaks a
/// budgeted engineer nor costs $0: it is reserved and billed at OpenAI's ceiling, marked so in the
/// ledger, the audit log and /metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unpriced_model_is_reserved_and_billed_at_the_ceiling() {
    let h = Harness::start().await;
    let prices = h.gateway().prices();
    let ceiling = prices.ceiling_row(Provider::OpenAi).unwrap().clone();
    let body = r#"{"model":"gpt-6.2-sol","max_output_tokens":1000,"input":"x"}"#;
    let worst = ceiling.worst_case(body.len() as u64, 1000, 0, Default::default());
    // A budget one micro-dollar short of the ceiling's worst case refuses it: the reservation is
    // the ceiling's, not $0.
    set(&h, "team:payments", worst - 1).await;
    let r = responses(&h, body).await;
    r.assert_openai_error(402, "budget of team payments");
    assert!(h.mock_log().await.is_empty());
    // With room for it: forwarded, and billed at the ceiling for the usage the provider reported.
    set(&h, "team:payments", worst).await;
    let r = responses(&h, body).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let rows = h.spend(1).await;
    let row = rows.iter().find(|r| r.model == "gpt-6.2-sol").unwrap();
    let reported = h.mock_log().await[0].usage.unwrap();
    let usage = conduit_gateway::usage::Usage {
        input: reported.input,
        output: reported.output,
        cache_read: reported.cache_read,
        cache_write: reported.cache_write,
        ..Default::default()
    };
    assert_eq!(
        (row.unpriced, row.cost_micros),
        (1, ceiling.cost_micros(&usage)),
        "{row:?}"
    );
    assert_eq!(
        row.cost_micros, worst,
        "x-mock-usage: max reports the worst case exactly"
    );
    // Marked in the audit record, counted in /metrics, named by `conduit spend`.
    h.gateway().audit.sync();
    let audit = std::fs::read_to_string(
        std::fs::read_dir(h.data.path().join("audit"))
            .unwrap()
            .flatten()
            .find(|e| e.file_name().to_string_lossy().ends_with(".jsonl"))
            .unwrap()
            .path(),
    )
    .unwrap();
    let last: serde_json::Value = serde_json::from_str(audit.lines().last().unwrap()).unwrap();
    assert_eq!(
        (last["model"].as_str(), last["price"].as_str()),
        (Some("gpt-6.2-sol"), Some("ceiling"))
    );
    let metrics = h.admin_get("/metrics").await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains(r#"conduit_unpriced_requests_total{provider="openai",model="gpt-6.2-sol"} 1"#),
        "{text}"
    );
    let (ok, _out, err) = h.cli(&["spend", "--by", "model"]);
    assert!(ok, "{err}");
    assert!(
        err.contains("openai/gpt-6.2-sol") && err.contains("conduit prices import"),
        "{err}"
    );
}

/// Model listings and other endpoints that bill nothing are never refused for having no price.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_pass_under_a_budget() {
    let h = Harness::start().await;
    set(&h, "org", 1).await;
    let bearer = format!("Bearer {}", h.key);
    let r = h
        .send(Method::GET, "/v1/models", &[("authorization", &bearer)], "")
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = h
        .send(
            Method::GET,
            "/v1/models",
            &[("x-api-key", &h.key), ("anthropic-version", "2023-06-01")],
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

/// `[prices] unpriced = "refuse"`: a request for a model with no price is refused, budget or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpriced_refuse_refuses_with_the_fix() {
    let h = Harness::builder().toml("[prices]\nunpriced = \"refuse\"").start().await;
    let r = responses(&h, r#"{"model":"gpt-9-foo","input":"x"}"#).await;
    r.assert_openai_error(402, "model \"gpt-9-foo\" (openai) has no price");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("conduit prices import")
    );
    assert!(h.mock_log().await.is_empty());
    let r = responses(&h, r#"{"model":"gpt-5.5","input":"x"}"#).await;
    assert_eq!(r.status, 200);
}

/// `gpt-5.5` and `gpt-5` are billed by their own rows; invented ids hit the ceiling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_model_is_billed_by_its_own_row() {
    let h = Harness::start().await;
    let prices = h.gateway().prices();
    for model in ["gpt-5.5", "gpt-5", "gpt-9-foo"] {
        let r = responses(
            &h,
            &format!(r#"{{"model":"{model}","max_output_tokens":10,"input":"x"}}"#),
        )
        .await;
        assert_eq!(r.status, 200);
    }
    let r = h
        .messages(r#"{"model":"claude-opus-9","max_tokens":10,"messages":[{"role":"user","content":"x"}]}"#)
        .await;
    assert_eq!(r.status, 200);
    let rows = h.spend(4).await;
    for (provider, model, expect_row) in [
        (Provider::OpenAi, "gpt-5.5", "gpt-5.5"),
        (Provider::OpenAi, "gpt-5", "gpt-5"),
        (
            Provider::OpenAi,
            "gpt-9-foo",
            prices.ceiling_row(Provider::OpenAi).unwrap().model.as_str(),
        ),
        (
            Provider::Anthropic,
            "claude-opus-9",
            prices.ceiling_row(Provider::Anthropic).unwrap().model.as_str(),
        ),
    ] {
        let row = rows.iter().find(|r| r.model == model).unwrap();
        let priced = prices.lookup(provider, expect_row).unwrap();
        assert_eq!(
            row.cost_micros,
            priced.cost_micros(&row.usage()),
            "{model} billed by {expect_row}"
        );
        assert_eq!(row.unpriced, u64::from(model.contains('9')), "{model}");
    }
    assert_ne!(
        prices.lookup(Provider::OpenAi, "gpt-5").unwrap().rates,
        prices.lookup(Provider::OpenAi, "gpt-5.5").unwrap().rates
    );
}

async fn limit_key(h: &Harness, limits: RateLimits) {
    conduit_gateway::operator::update_key_limits(h.gateway().state.keys.as_ref(), &h.key_id, limits)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_per_key() {
    let h = Harness::start().await;
    // Requests per minute.
    limit_key(
        &h,
        RateLimits {
            rpm: Some(3),
            ..Default::default()
        },
    )
    .await;
    for _ in 0..3 {
        assert_eq!(post(&h, &h.key, &body_of(100, 8)).await.status, 200);
    }
    let r = post(&h, &h.key, &body_of(100, 8)).await;
    r.assert_openai_error(429, "rate limit of 3 requests per minute");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!(
        (1..=20).contains(&retry),
        "one request refills in 20 s at 3/min: {retry}"
    );
    assert!(r.header("x-should-retry").is_none(), "waiting helps: retries allowed");
    let other = h.new_key("bob@corp.example").await.key;
    assert_eq!(
        post(&h, &other, &body_of(100, 8)).await.status,
        200,
        "limits are per key"
    );

    // Tokens per minute: a request that can never fit says so.
    limit_key(
        &h,
        RateLimits {
            rpm: Some(0),
            tpm: Some(100),
            ..Default::default()
        },
    )
    .await;
    let r = post(&h, &h.key, &body_of(1000, 8)).await;
    r.assert_openai_error(429, "this request can never fit");
    assert_eq!(r.header("x-should-retry"), Some("false"));

    // Concurrent streams.
    limit_key(
        &h,
        RateLimits {
            tpm: Some(0),
            max_streams: Some(1),
            ..Default::default()
        },
    )
    .await;
    let stalled = Request::post(h.url("/v1/messages"))
        .header("x-api-key", &h.key)
        .header("content-type", "application/json")
        .header("x-mock-mode", "stall")
        .body(Full::new(Bytes::from(
            r#"{"model":"claude-haiku-4-5","max_tokens":8,"stream":true,"messages":[]}"#,
        )))
        .unwrap();
    let first = h.http.request(stalled).await.unwrap();
    let r = h
        .messages(r#"{"model":"claude-haiku-4-5","max_tokens":8,"stream":true,"messages":[]}"#)
        .await;
    r.assert_anthropic_error(429, "rate_limit_error", "1 concurrent streams");
    drop(first);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = h
        .messages(r#"{"model":"claude-haiku-4-5","max_tokens":8,"stream":true,"messages":[]}"#)
        .await;
    assert_eq!(r.status, 200, "the slot is free once the first stream ended");
}

/// The sled key and meta stores, until told to fail.
struct Breakable<T: ?Sized> {
    inner: Arc<T>,
    broken: Arc<AtomicBool>,
}

impl<T: ?Sized> Breakable<T> {
    fn check(&self) -> Result<()> {
        if self.broken.load(Ordering::SeqCst) {
            Err(Error::msg("injected store failure"))
        } else {
            Ok(())
        }
    }
}

#[async_trait::async_trait]
impl KeyStore for Breakable<dyn KeyStore> {
    async fn insert(&self, h: &conduit_gateway::keys::KeyHash, r: &KeyRecord) -> Result<()> {
        self.check()?;
        self.inner.insert(h, r).await
    }
    async fn by_hash(&self, h: &conduit_gateway::keys::KeyHash) -> Result<Option<KeyRecord>> {
        self.check()?;
        self.inner.by_hash(h).await
    }
    async fn by_id(&self, id: &str) -> Result<Option<KeyRecord>> {
        self.check()?;
        self.inner.by_id(id).await
    }
    async fn update(&self, r: &KeyRecord) -> Result<()> {
        self.check()?;
        self.inner.update(r).await
    }
    async fn list(&self) -> Result<Vec<KeyRecord>> {
        self.check()?;
        self.inner.list().await
    }
    async fn entries(&self) -> Result<Vec<(conduit_gateway::keys::KeyHash, KeyRecord)>> {
        self.check()?;
        self.inner.entries().await
    }
    fn watch(&self) -> Watch<KeyChange> {
        self.inner.watch()
    }
}

#[async_trait::async_trait]
impl MetaStore for Breakable<dyn MetaStore> {
    async fn get(&self, name: &str) -> Result<Option<String>> {
        self.check()?;
        self.inner.get(name).await
    }
    async fn set(&self, name: &str, value: &str) -> Result<()> {
        self.check()?;
        self.inner.set(name, value).await
    }
    async fn ping(&self) -> Result<()> {
        self.check()?;
        self.inner.ping().await
    }
    fn watch(&self) -> Watch<String> {
        self.inner.watch()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_store_means_503_never_unmetered_forwarding() {
    let broken = Arc::new(AtomicBool::new(false));
    let flag = broken.clone();
    let h = Harness::builder()
        .wrap_state(move |mut state| {
            state.keys = Arc::new(Breakable {
                inner: state.keys,
                broken: flag.clone(),
            });
            state.meta = Arc::new(Breakable {
                inner: state.meta,
                broken: flag,
            });
            state
        })
        .start()
        .await;
    set(&h, "org", 1_000_000_000).await;
    assert_eq!(post(&h, &h.key, &body_of(100, 8)).await.status, 200);
    broken.store(true, Ordering::SeqCst);
    let r = post(&h, &h.key, &body_of(100, 8)).await;
    r.assert_openai_error(503, "cannot check keys right now");
    assert!(r.header("x-should-retry").is_none(), "a store outage is worth retrying");
    let readyz = h.http.request(
        Request::get(format!("http://{}/readyz", h.running.admin_addr))
            .body(Full::default())
            .unwrap(),
    );
    assert_eq!(readyz.await.unwrap().status(), 503, "readiness reports the outage");
    assert_eq!(
        h.mock_log().await.len(),
        1,
        "nothing was forwarded while the store was down"
    );
    broken.store(false, Ordering::SeqCst);
    assert_eq!(
        post(&h, &h.key, &body_of(100, 8)).await.status,
        200,
        "recovers with the store"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_dies_releases_its_reservation() {
    let h = Harness::start().await;
    set(&h, "org", WORST).await;
    // The upstream resets the connection before answering: 502, and the hold is released.
    let bearer = format!("Bearer {}", h.key);
    let r = h
        .send(
            Method::POST,
            "/v1/chat/completions",
            &[
                ("authorization", &bearer),
                ("content-type", "application/json"),
                ("x-mock-mode", "reset"),
            ],
            body_of(400, 1000),
        )
        .await;
    assert_eq!(r.status, 502);
    let status = budget_status(&h).await;
    assert_eq!(
        (status[0].spent_micros, status[0].reserved_micros),
        (0, 0),
        "nothing held, nothing spent"
    );
    // So the whole budget is still there for the next request, which uses it up exactly.
    assert_eq!(post(&h, &h.key, &body_of(400, 1000)).await.status, 200);
    assert_eq!(post(&h, &h.key, &body_of(400, 1000)).await.status, 402);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_and_limits_through_the_cli() {
    let h = Harness::start().await;
    let cli = |args: &[&str]| {
        let (ok, stdout, stderr) = h.cli(args);
        (ok, stdout + &stderr)
    };
    let (ok, out) = cli(&["budgets", "set", "team:payments", "--monthly", "0.0021"]);
    assert!(ok, "{out}");
    assert_eq!(post(&h, &h.key, &body_of(400, 1000)).await.status, 200);
    assert_eq!(post(&h, &h.key, &body_of(400, 1000)).await.status, 402);
    let (ok, out) = cli(&["budgets", "list"]);
    assert!(ok && out.contains("team:payments") && out.contains("0.002100"), "{out}");
    let (ok, out) = cli(&["budgets", "set", "team", "--monthly", "1"]);
    assert!(!ok && out.contains("team:NAME"), "{out}");
    let (ok, out) = cli(&["budgets", "set", "org", "--monthly", "1.2345678"]);
    assert!(!ok && out.contains("at most 6 decimals"), "{out}");
    let (ok, _) = cli(&["budgets", "clear", "team:payments"]);
    assert!(ok);
    assert_eq!(post(&h, &h.key, &body_of(400, 1000)).await.status, 200, "cleared");

    let (ok, out) = cli(&["keys", "update", &h.key_id, "--rpm", "1", "--json"]);
    assert!(ok && out.contains("\"rpm\":1"), "{out}");
    assert_eq!(post(&h, &h.key, &body_of(100, 8)).await.status, 200);
    assert_eq!(post(&h, &h.key, &body_of(100, 8)).await.status, 429);
    let (ok, out) = cli(&["keys", "update", &h.key_id, "--rpm", "0", "--json"]);
    assert!(ok && out.contains("\"rpm\":null"), "{out}");
    assert_eq!(post(&h, &h.key, &body_of(100, 8)).await.status, 200, "limit removed");
}

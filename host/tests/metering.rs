//! Metering (issue 4, first part): usage read from the response stream, priced exactly, and
//! recorded in the spend ledger — for every response shape, compressed or not, when the client
//! leaves early, when the stream fails, and when the model has no price.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use common::Harness;
use conduit_gateway::ledger::SpendRow;
use conduit_gateway::usage::Usage;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};

fn row<'a>(rows: &'a [SpendRow], model: &str) -> &'a SpendRow {
    rows.iter()
        .find(|r| r.model == model)
        .unwrap_or_else(|| panic!("no ledger row for {model}: {rows:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_usage_equals_emitted_usage_and_cost_equals_tokens_times_price() {
    let h = Harness::start().await;
    let key = h.key.clone();
    let bearer = format!("Bearer {key}");
    let anthropic = |model: &str, stream: bool, cache: bool| {
        format!(
            r#"{{"model":"{model}","max_tokens":512,"stream":{stream},"system":[{{"type":"text","text":"You are terse."{}}}],"messages":[{{"role":"user","content":"{}"}}]}}"#,
            if cache {
                r#","cache_control":{"type":"ephemeral"}"#
            } else {
                ""
            },
            "hello ".repeat(200)
        )
    };
    /// (model, path, body, extra headers)
    type Case<'a> = (&'a str, &'a str, String, Vec<(&'a str, &'a str)>);
    let cases: Vec<Case> = vec![
        ("claude-sonnet-4-5", "/v1/messages", anthropic("claude-sonnet-4-5", true, true), vec![]),
        ("claude-sonnet-4-5-20250929", "/v1/messages", anthropic("claude-sonnet-4-5-20250929", false, false), vec![]),
        ("claude-haiku-4-5", "/v1/messages", anthropic("claude-haiku-4-5", true, true), vec![("x-mock-compress", "gzip"), ("accept-encoding", "gzip")]),
        ("claude-opus-4-8", "/v1/messages", anthropic("claude-opus-4-8", true, false), vec![("x-mock-mode", "midstream-error")]),
        ("claude-opus-4-7", "/v1/messages", anthropic("claude-opus-4-7", true, false), vec![("x-mock-mode", "status-529")]),
        ("gpt-5", "/v1/chat/completions", r#"{"model":"gpt-5","stream":true,"stream_options":{"include_usage":true},"prompt_cache_key":"k","messages":[{"role":"user","content":"hi"}]}"#.into(), vec![]),
        ("gpt-5-mini", "/v1/chat/completions", r#"{"model":"gpt-5-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}"#.into(), vec![]),
        ("gpt-5-codex", "/v1/responses", r#"{"model":"gpt-5-codex","stream":true,"prompt_cache_key":"k","input":"list the files"}"#.into(), vec![]),
        ("gpt-6.2-sol", "/v1/responses", r#"{"model":"gpt-6.2-sol","input":"unpriced model"}"#.into(), vec![]),
    ];
    for (model, path, body, extra) in &cases {
        let auth: (&str, &str) = if path.starts_with("/v1/messages") {
            ("x-api-key", key.as_str())
        } else {
            ("authorization", bearer.as_str())
        };
        let mut headers = vec![auth, ("content-type", "application/json")];
        headers.extend(extra.iter().copied());
        let r = h.send(Method::POST, path, &headers, body.clone()).await;
        assert!(r.status == 200 || *model == "claude-opus-4-7", "{model}: {}", r.status);
    }
    // A client that leaves after the first event: the gateway drains the rest and bills it all.
    let req = Request::post(h.url("/v1/messages"))
        .header("x-api-key", &key)
        .header("content-type", "application/json")
        .header("x-mock-delay-ms", "20")
        .body(Full::new(Bytes::from(anthropic("claude-sonnet-4-6", true, true))))
        .unwrap();
    let mut body = h.http.request(req).await.unwrap().into_body();
    body.frame().await.unwrap().unwrap();
    drop(body);

    let rows = h.spend(cases.len() as u64 + 1).await;
    let emitted = h.mock_log().await;
    let prices = h.gateway().prices();
    // The mock's emitted usage, by model (requests are one per model).
    let by_model: std::collections::HashMap<String, Usage> = cases
        .iter()
        .map(|c| c.0)
        .chain(["claude-sonnet-4-6"])
        .zip(emitted.iter())
        .filter_map(|(m, r)| r.usage.map(|u| (m.to_string(), u)))
        .collect();

    for model in [
        "claude-sonnet-4-5",
        "claude-sonnet-4-5-20250929",
        "claude-haiku-4-5",
        "gpt-5",
        "gpt-5-codex",
        "claude-sonnet-4-6",
    ] {
        let r = row(&rows, model);
        let expected = by_model[model];
        assert_eq!(
            r.usage(),
            expected,
            "{model}: recorded tokens differ from what the provider reported"
        );
        let provider = if model.starts_with("claude") {
            "anthropic"
        } else {
            "openai"
        };
        assert_eq!(
            r.cost_micros,
            prices
                .lookup(conduit_gateway::protocol::Provider::parse(provider).unwrap(), model)
                .unwrap()
                .cost_micros(&expected),
            "{model}: cost"
        );
        assert!(r.cost_micros > 0, "{model}: never a silent $0");
        assert_eq!((r.requests, r.errors, r.estimated, r.unpriced), (1, 0, 0, 0), "{model}");
    }
    assert!(row(&rows, "claude-sonnet-4-5").cache_read > 0 && row(&rows, "claude-sonnet-4-5").cache_write > 0);
    assert!(row(&rows, "gpt-5-codex").cache_read > 0);

    // No usage in the stream (no include_usage): estimated from the bytes, and flagged.
    let r = row(&rows, "gpt-5-mini");
    assert_eq!((r.estimated, r.errors), (1, 0));
    assert_eq!(r.output, 70_u64.div_ceil(4), "the mock streamed 70 bytes of text");
    assert!(r.input > 0 && r.cost_micros > 0, "an estimate, never a silent $0");

    // Mid-stream error: input as reported at message_start, counted as an error.
    let r = row(&rows, "claude-opus-4-8");
    assert_eq!(r.errors, 1);
    assert_eq!(r.input, by_model["claude-opus-4-8"].input);
    // 529: an error, nothing billed.
    let r = row(&rows, "claude-opus-4-7");
    assert_eq!(
        (r.errors, r.input, r.output, r.cost_micros, r.unpriced),
        (1, 0, 0, 0, 0)
    );
    // A model without a price: tokens recorded, billed at OpenAI's ceiling (never $0), and marked.
    let r = row(&rows, "gpt-6.2-sol");
    let ceiling = prices.ceiling_row(conduit_gateway::protocol::Provider::OpenAi).unwrap();
    assert_eq!((r.unpriced, r.cost_micros), (1, ceiling.cost_micros(&r.usage())));
    assert!(r.output > 0 && r.cost_micros > 0);

    // Every row carries the owner and team of the key.
    assert!(
        rows.iter()
            .all(|r| r.owner == "alice@corp.example" && r.team == "payments" && r.key_id == h.key_id)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spend_report_through_the_admin_api_and_the_cli() {
    let h = Harness::start().await;
    let bob = h.new_key("bob@corp.example").await;
    for (key, n) in [(h.key.clone(), 3), (bob.key.clone(), 1)] {
        for _ in 0..n {
            let r = h
                .send(
                    Method::POST,
                    "/v1/messages",
                    &[
                        ("x-api-key", &key),
                        ("content-type", "application/json"),
                        ("x-mock-usage", "max"),
                    ],
                    r#"{"model":"claude-sonnet-4-5","max_tokens":1000,"messages":[{"role":"user","content":"hi"}]}"#,
                )
                .await;
            assert_eq!(r.status, 200);
        }
    }
    // Refused after authentication: an error row for the key, nothing billed.
    let r = h
        .send(
            Method::POST,
            "/v1/messages",
            &[("x-api-key", &bob.key), ("content-type", "application/json")],
            "{bad",
        )
        .await;
    assert_eq!(r.status, 400);

    let cli = |args: &[&str]| {
        let (ok, stdout, stderr) = h.cli(args);
        assert!(ok, "{args:?}: {stderr}");
        stdout
    };
    let report: serde_json::Value =
        serde_json::from_str(&cli(&["spend", "--by", "owner", "--format", "json"])).unwrap();
    let lines = report["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 2);
    // x-mock-usage: max → output = max_tokens; 1000 × $15/MTok = $0.015 per request, plus input.
    let alice = &lines[0];
    assert_eq!(alice["group"], "alice@corp.example");
    assert_eq!(
        (alice["requests"].as_u64(), alice["output"].as_u64()),
        (Some(3), Some(3000))
    );
    let input = alice["input"].as_u64().unwrap();
    // $3/MTok and $15/MTok are whole micro-dollars per token: the cost is exact, no rounding.
    assert_eq!(alice["cost_micros"].as_u64().unwrap(), input * 3 + 3000 * 15, "{alice}");
    let bob_line = &lines[1];
    assert_eq!(
        (bob_line["requests"].as_u64(), bob_line["errors"].as_u64()),
        (Some(2), Some(1))
    );

    let table = cli(&["spend", "--by", "team"]);
    assert!(table.contains("payments") && table.contains("COST USD"), "{table}");
    let csv = cli(&["spend", "--by", "model", "--format", "csv"]);
    assert!(csv.lines().next().unwrap().starts_with("group,requests"));
    assert!(csv.contains("\nclaude-sonnet-4-5,4,0,0,0,"), "{csv}");
    // The refused request never had a model: its own row, an error, nothing billed.
    assert!(csv.contains("\n-,1,1,0,0,0,0,0,0,0.000000"), "{csv}");
    let prices = cli(&["prices", "list"]);
    let opus = prices
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("claude-opus-5-5"))
        .unwrap();
    assert!(
        opus.contains("4.000000") && opus.contains("20.000000") && opus.contains("litellm"),
        "{opus}"
    );
    assert!(prices.contains("ceiling"), "{prices}");
}

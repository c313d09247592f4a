//! The audit log end to end: a record for every outcome class, tamper detection, export round
//! trips against the ledger, context rot and sessions from real traffic, `/metrics`, and the
//! strict-durability crash test (kill -9 under load).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Harness;
use common::process::{BIN, free_port, issued_key, policy_cache_dir, succeed, wait_listening};
use conduit_gateway::audit::AuditRecord;
use conduit_gateway::audit::chain::{self, Filter};
use conduit_gateway::audit::export::{self, Format};
use http::Method;

const GITHUB_TOKEN: &str = "ghp_R8xk2LmQ9vTz4WcY7nB3pJ6hF1sD5gA0eK2u";

fn records(h: &Harness) -> Vec<AuditRecord> {
    h.records()
}

fn body(model: &str, text: &str, stream: bool) -> String {
    serde_json::json!({"model": model, "max_tokens": 64, "stream": stream,
        "messages": [{"role": "user", "content": text}]})
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_outcome_class_is_recorded_and_the_chain_verifies() {
    let h = Harness::builder()
        .toml("[network]\nidle_timeout_secs = 1\n[policies.modes]\n\"secret.*\" = \"block\"\n[policies.builtin.models.config]\nallow = [\"claude-sonnet-*\"]\n")
        .start()
        .await;
    let ok = "claude-sonnet-4-5";
    let mut expect: Vec<(String, u16, Option<&str>)> = Vec::new();
    let id = |r: &common::Reply| r.header("x-conduit-request-id").unwrap().to_string();

    let session = [
        ("x-claude-code-session-id", "6f6d783b-9cf8-4d07-834b-7bc0d1cae803"),
        ("user-agent", "claude-cli/2.1.197 (external, sdk-cli)"),
    ];
    let r = h.messages_with(&body(ok, "hello", true), &session).await;
    expect.push((id(&r), 200, None));
    let r = h.messages_with(&body(ok, "hello", false), &[]).await;
    expect.push((id(&r), 200, None));
    let r = h
        .send(
            Method::POST,
            "/v1/messages",
            &[("x-api-key", "ck_not_a_key"), ("content-type", "application/json")],
            body(ok, "x", false),
        )
        .await;
    expect.push((id(&r), 401, Some("unauthenticated")));
    let r = h.messages_with(&body("claude-opus-4-8", "x", false), &[]).await;
    expect.push((id(&r), 403, Some("forbidden")));
    let r = h
        .messages_with(&body(ok, &format!("token {GITHUB_TOKEN}"), false), &[])
        .await;
    expect.push((id(&r), 400, Some("policy_blocked")));
    for (mode, status, class) in [
        ("status-500", 500, "upstream_5xx"),
        ("status-529", 529, "overloaded"),
        ("status-429", 429, "upstream_429"),
        ("midstream-error", 200, "stream_error"),
        ("reset", 502, "upstream_unreachable"),
    ] {
        let r = h.messages_with(&body(ok, "x", true), &[("x-mock-mode", mode)]).await;
        assert_eq!(r.status.as_u16(), status, "{mode}");
        expect.push((id(&r), status, Some(class)));
    }
    // Budget: a one-micro-dollar daily budget refuses the next request (402).
    let scope = format!("key:{}", h.key_id);
    let one_micro = conduit_gateway::records::BudgetLimit {
        daily_micros: Some(1),
        monthly_micros: None,
    };
    h.gateway().state.budgets.set(&scope, one_micro).await.unwrap();
    let r = h.messages_with(&body(ok, "x", false), &[]).await;
    expect.push((id(&r), 402, Some("budget_exceeded")));
    h.gateway().state.budgets.set(&scope, Default::default()).await.unwrap();
    // Rate limit: one request per minute on a second key.
    let limited = h.new_key("rl@corp.example").await;
    conduit_gateway::operator::update_key_limits(
        h.gateway().state.keys.as_ref(),
        &limited.record.id,
        conduit_gateway::records::RateLimits {
            rpm: Some(1),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let limited_headers = [
        ("x-api-key", limited.key.as_str()),
        ("content-type", "application/json"),
    ];
    let send_limited = || h.send(Method::POST, "/v1/messages", &limited_headers, body(ok, "x", false));
    let r = send_limited().await;
    expect.push((id(&r), 200, None));
    let r = send_limited().await;
    expect.push((id(&r), 429, Some("rate_limited")));

    // A client that leaves mid-stream: the record says so once the drain ends.
    let stalled = tokio::time::timeout(
        Duration::from_millis(400),
        h.messages_with(&body(ok, "x", true), &[("x-mock-mode", "stall")]),
    )
    .await;
    assert!(stalled.is_err(), "the stalled stream should not complete");

    let deadline = Instant::now() + Duration::from_secs(10);
    let all = loop {
        let all = records(&h);
        if all.iter().any(|r| r.error_class.as_deref() == Some("client_abort")) || Instant::now() > deadline {
            break all;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let by_id: HashMap<&str, &AuditRecord> = all.iter().map(|r| (r.request_id.as_str(), r)).collect();
    for (rid, status, class) in &expect {
        let r = by_id
            .get(rid.as_str())
            .unwrap_or_else(|| panic!("no audit record for {rid} ({status})"));
        assert_eq!((r.status, r.error_class.as_deref()), (*status, *class), "{rid}");
        assert!(r.end_ms >= r.start_ms && r.duration_ms >= 0.0);
    }
    let abort = all.iter().find(|r| r.error_class.as_deref() == Some("client_abort"));
    assert!(
        abort.is_some_and(|r| r.outcome == "client_gone"),
        "client abort recorded: {all:#?}"
    );

    let first = by_id[expect[0].0.as_str()];
    assert_eq!(first.client, "claude-code");
    assert!(
        first
            .session
            .as_deref()
            .is_some_and(|s| s.len() == 16 && !s.contains("6f6d783b"))
    );
    assert!(first.stream && first.output_tokens > 0 && first.cost_micros.is_some_and(|c| c > 0));
    assert!(first.ttfb_ms.is_some() && first.overhead_ms.is_some() && first.policy_ms.is_some());
    assert_eq!(
        first.upstream.as_deref(),
        Some(h.mock.url().trim_start_matches("http://"))
    );
    let blocked = by_id[expect[4].0.as_str()];
    assert_eq!(blocked.findings.len(), 1);
    assert_eq!(
        (blocked.findings[0].category.as_str(), blocked.findings[0].mode.as_str()),
        ("secret.github-token", "block")
    );
    assert!(
        blocked.findings[0].location.starts_with("messages[0].content:"),
        "{:?}",
        blocked.findings[0]
    );
    assert!(
        blocked.policy_set.is_some() && blocked.overhead_ms.is_none(),
        "a blocked request never left"
    );
    // Seqs run without gaps and the chain verifies, through the library and the CLI.
    for (i, r) in all.iter().enumerate() {
        assert_eq!(r.seq, i as u64 + 1);
    }
    let v = chain::verify(h.gateway().audit.dir()).unwrap();
    assert!(v.ok && v.records == all.len() as u64, "{v:?}");
    let (ok_cli, out, err) = h.cli(&["audit", "verify"]);
    assert!(ok_cli && out.contains("audit chain intact"), "{out}{err}");
    // Never the token, the prompt text or the key in the files.
    let text = std::fs::read_dir(h.gateway().audit.dir())
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap_or_default())
        .collect::<String>();
    assert!(!text.contains(GITHUB_TOKEN) && !text.contains("hello") && !text.contains(&h.key[3..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_is_detected_and_named() {
    let h = Harness::start().await;
    for i in 0..6 {
        let r = h
            .messages(&body("claude-sonnet-4-5", &format!("turn {i}"), false))
            .await;
        assert_eq!(r.status.as_u16(), 200);
    }
    let all = records(&h);
    assert_eq!(all.len(), 6);
    let dir = h.gateway().audit.dir().to_path_buf();
    let (_, file) = chain::day_files(&dir).unwrap().pop().unwrap();
    let original = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = original.lines().collect();

    // Altered: record 3's status changes.
    let altered = lines[2].replace("\"status\":200", "\"status\":201");
    assert_ne!(altered, lines[2]);
    let mut edited = lines.clone();
    edited[2] = &altered;
    std::fs::write(&file, edited.join("\n") + "\n").unwrap();
    let v = chain::verify(&dir).unwrap();
    assert!(!v.ok);
    let problem = v.problem.unwrap();
    assert!(
        problem.contains("record 3") && problem.contains(&all[2].request_id) && problem.contains("altered"),
        "{problem}"
    );
    let (ok_cli, _, err) = h.cli(&["audit", "verify"]);
    assert!(!ok_cli && err.contains("tampered") && err.contains("record 3"), "{err}");

    // Removed: record 4 is gone.
    let mut removed = lines.clone();
    removed.remove(3);
    std::fs::write(&file, removed.join("\n") + "\n").unwrap();
    let problem = chain::verify(&dir).unwrap().problem.unwrap();
    assert!(problem.contains("record 4 was removed"), "{problem}");

    // Cut tail: the last record is gone, HEAD still names it.
    std::fs::write(&file, lines[..5].join("\n") + "\n").unwrap();
    let problem = chain::verify(&dir).unwrap().problem.unwrap();
    assert!(problem.contains("records after 5 were removed"), "{problem}");

    // Last record altered: only HEAD can tell.
    let mut last = lines.clone();
    let tweaked = lines[5].replace("\"status\":200", "\"status\":299");
    last[5] = &tweaked;
    std::fs::write(&file, last.join("\n") + "\n").unwrap();
    let problem = chain::verify(&dir).unwrap().problem.unwrap();
    assert!(problem.contains("record 6") && problem.contains("HEAD"), "{problem}");

    // Restored: intact again.
    std::fs::write(&file, &original).unwrap();
    assert!(chain::verify(&dir).unwrap().ok);

    // Retention: an old day file goes, the anchor keeps the rest verifiable; tampering with the
    // anchor is caught.
    let old = dir.join("2020-01-01.jsonl");
    std::fs::rename(&file, &old).unwrap();
    let newer = chain::day_path(&dir, 20_000);
    assert!(newer.to_string_lossy().contains("2024-10-04"));
    std::fs::write(&newer, lines[3..].join("\n") + "\n").unwrap();
    std::fs::write(&old, lines[..3].join("\n") + "\n").unwrap();
    assert_eq!(chain::prune(&dir, 19_000).unwrap(), 1);
    assert!(!old.exists());
    let v = chain::verify(&dir).unwrap();
    assert!(v.ok && v.first_seq == Some(4) && v.records == 3, "{v:?}");
    std::fs::write(dir.join("ANCHOR"), "{\"seq\":3,\"prev\":\"00\"}").unwrap();
    assert!(!chain::verify(&dir).unwrap().ok);
}

/// A consistent rewrite — the last records cut and `HEAD` rewritten to match — passes the
/// files' own check; the store's checkpoint of the head catches it (through the admin API, as
/// `conduit audit verify` asks a running gateway).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consistent_rewrite_of_the_files_is_caught_by_the_stores_checkpoint() {
    let h = Harness::start().await;
    for i in 0..4 {
        let r = h
            .messages(&body("claude-sonnet-4-5", &format!("turn {i}"), false))
            .await;
        assert_eq!(r.status.as_u16(), 200);
    }
    h.gateway().audit.sync();
    let pinned = h.gateway().checkpoint_audit().await.unwrap().expect("a head");
    assert_eq!(pinned.seq, 4);
    let v = h.admin_get("/v1/audit/verify").await.json();
    assert_eq!(
        (v["ok"].as_bool(), v["checkpoint_seq"].as_u64()),
        (Some(true), Some(4)),
        "{v}"
    );

    let dir = h.gateway().audit.dir().to_path_buf();
    let (_, file) = chain::day_files(&dir).unwrap().pop().unwrap();
    let original = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = original.lines().collect();
    std::fs::write(&file, lines[..3].join("\n") + "\n").unwrap();
    let head = chain::Head {
        seq: 3,
        hash: conduit_gateway::audit::line_hash(lines[2].as_bytes()),
    };
    chain::write_head(&dir, &head).unwrap();
    assert!(chain::verify(&dir).unwrap().ok, "the files alone look intact");
    let v = h.admin_get("/v1/audit/verify").await.json();
    let problem = v["problem"].as_str().unwrap_or_default();
    assert!(
        v["ok"].as_bool() == Some(false) && problem.contains("checkpoint") && problem.contains("record 4"),
        "{v}"
    );
    // Record 3 rewritten (and everything after it, consistently): the checkpoint at 4 no longer
    // matches what the chain hashes to.
    let forged = lines[3].replace("\"status\":200", "\"status\":201");
    let mut rewritten: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    rewritten[3] = forged;
    std::fs::write(&file, rewritten.join("\n") + "\n").unwrap();
    chain::write_head(
        &dir,
        &chain::Head {
            seq: 4,
            hash: conduit_gateway::audit::line_hash(rewritten[3].as_bytes()),
        },
    )
    .unwrap();
    assert!(chain::verify(&dir).unwrap().ok, "the files alone look intact");
    let v = h.admin_get("/v1/audit/verify").await.json();
    let problem = v["problem"].as_str().unwrap_or_default();
    assert!(problem.contains("rewritten") && problem.contains("record 4"), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_round_trips_and_matches_the_ledger() {
    let h = Harness::start().await;
    let other = h.new_key("bob@corp.example").await;
    for i in 0..12 {
        let r = h
            .messages(&body("claude-sonnet-4-5", &"context ".repeat(i * 300), i % 2 == 0))
            .await;
        assert_eq!(r.status.as_u16(), 200);
    }
    for _ in 0..3 {
        let r = h
            .send(
                Method::POST,
                "/v1/messages",
                &[
                    ("x-api-key", other.key.as_str()),
                    ("content-type", "application/json"),
                    ("x-mock-mode", "status-500"),
                ],
                body("claude-sonnet-4-5", "x", false),
            )
            .await;
        assert_eq!(r.status.as_u16(), 500);
    }
    h.send(Method::POST, "/v1/messages", &[("x-api-key", "nope")], "{}")
        .await;
    h.gateway().ledger.flush().await;
    let dir = h.gateway().audit.dir().to_path_buf();
    h.gateway().audit.sync();

    let run = |format: Format, filter: &Filter| {
        let mut out = Vec::new();
        let n = export::export(&dir, filter, format, &mut out).unwrap();
        (n, String::from_utf8(out).unwrap())
    };
    let all = Filter::default();
    let (n_csv, csv) = run(Format::Csv, &all);
    let (n_json, json) = run(Format::Json, &all);
    let (n_jsonl, jsonl) = run(Format::Jsonl, &all);
    assert_eq!((n_csv, n_json, n_jsonl), (16, 16, 16));
    let objects: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    let mut rows = csv.lines();
    let header = export::parse_csv_line(rows.next().unwrap());
    assert_eq!(
        header,
        conduit_gateway::audit::fields::columns()
            .map(|(name, _)| name)
            .collect::<Vec<_>>()
    );
    let rows: Vec<Vec<String>> = rows.map(export::parse_csv_line).collect();
    assert_eq!(rows.len(), objects.len());
    let col = |name: &str| header.iter().position(|c| c == name).unwrap();
    for (row, obj) in rows.iter().zip(&objects) {
        assert_eq!(row.len(), header.len());
        assert_eq!(row[col("request_id")], obj["request_id"].as_str().unwrap());
        assert_eq!(row[col("status")], obj["status"].to_string());
        assert_eq!(row[col("output_tokens")], obj["output_tokens"].to_string());
        assert_eq!(row[col("seq")], obj["seq"].to_string());
        let cost = obj["cost_micros"]
            .as_u64()
            .map(conduit_gateway::money::usd)
            .unwrap_or_default();
        assert_eq!(row[col("cost_usd")], cost);
    }
    // JSON lines are the stored lines: they hash into a chain on their own.
    let mut prev = conduit_gateway::audit::ZERO_HASH.to_string();
    for line in jsonl.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["prev"].as_str().unwrap(), prev);
        prev = conduit_gateway::audit::line_hash(line.as_bytes());
    }

    // Counts and cost match the ledger (the 401 has no key: never in the ledger).
    let spend = conduit_gateway::operator::spend(
        h.gateway().state.spend.as_ref(),
        conduit_gateway::ledger::By::Key,
        "2000-01-01",
        "2999-12-31",
    )
    .await
    .unwrap();
    let ledger_requests: u64 = spend.lines.iter().map(|l| l.totals.requests).sum();
    let ledger_cost: u64 = spend.lines.iter().map(|l| l.totals.cost_micros).sum();
    let attributed: Vec<&serde_json::Value> = objects.iter().filter(|o| o["key_id"].is_string()).collect();
    assert_eq!(attributed.len() as u64, ledger_requests);
    assert_eq!(
        attributed
            .iter()
            .map(|o| o["cost_micros"].as_u64().unwrap_or(0))
            .sum::<u64>(),
        ledger_cost
    );

    // Filters, through the admin API (streamed) and the CLI.
    let by_key = Filter {
        key: Some(other.record.id.clone()),
        ..Filter::default()
    };
    assert_eq!(run(Format::Jsonl, &by_key).0, 3);
    let (ok, out, err) = h.cli(&["audit", "export", "--format", "csv", "--key", &other.record.id]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 4, "{out}");
    let (ok, out, _) = h.cli(&["audit", "export", "--format", "json", "--team", "nobody"]);
    assert!(ok && serde_json::from_str::<Vec<serde_json::Value>>(&out).unwrap().is_empty());
    let (ok, _, err) = h.cli(&["audit", "export", "--format", "xml"]);
    assert!(!ok && err.contains("expected csv, json or jsonl"), "{err}");
    let today = conduit_gateway::clock::format_date(conduit_gateway::clock::now_unix());
    let r = h
        .admin_get(&format!("/v1/audit/export?format=jsonl&since={today}&until={today}"))
        .await;
    assert_eq!(r.status.as_u16(), 200);
    assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
    assert_eq!(r.body.as_ref(), jsonl.as_bytes());
    let r = h.admin_get("/v1/audit/export?format=jsonl&since=2999-01-01").await;
    assert!(r.body.is_empty());
    let r = h.admin_get("/v1/audit/export?since=yesterday").await;
    assert_eq!(r.status.as_u16(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_rot_sessions_and_metrics_from_real_traffic() {
    let h = Harness::start().await;
    // One Claude Code session growing from ~2K to ~150K tokens (the mock counts ~4 bytes a token),
    // the big turns failing more often.
    let session = [
        ("x-claude-code-session-id", "sess-1"),
        ("user-agent", "claude-cli/2.1.197 (external, sdk-cli)"),
    ];
    let sizes = [8_000usize, 40_000, 100_000, 200_000, 600_000];
    for (turn, size) in sizes.iter().enumerate() {
        let r = h
            .messages_with(&body("claude-sonnet-4-5", &"y".repeat(*size), true), &session)
            .await;
        assert_eq!(r.status.as_u16(), 200, "turn {turn}");
    }
    for _ in 0..2 {
        let big = body("claude-sonnet-4-5", &"y".repeat(600_000), true);
        let r = h.messages_with(&big, &[("x-mock-mode", "status-529")]).await;
        assert_eq!(r.status.as_u16(), 529);
    }
    let report = h.admin_get("/v1/rot?by=all").await.json();
    let group = &report["groups"][0];
    let buckets = group["buckets"].as_array().unwrap();
    let names: Vec<&str> = buckets.iter().map(|b| b["bucket"].as_str().unwrap()).collect();
    assert_eq!(names, ["0-4K", "8-16K", "16-32K", "32-64K", "128-200K"], "{report:#}");
    let big = buckets.last().unwrap();
    assert_eq!((big["requests"].as_u64(), big["errors"].as_u64()), (Some(3), Some(2)));
    assert!(big["cost_growth"].as_f64().unwrap() > 10.0, "{big}");
    assert!(big["error_gap"].as_f64().is_some() && buckets[0]["error_gap"].as_f64() == Some(1.0));

    let (ok, out, err) = h.cli(&["rot", "--by", "model"]);
    assert!(
        ok && out.contains("claude-sonnet-4-5") && out.contains("128-200K"),
        "{out}{err}"
    );
    let (ok, out, _) = h.cli(&["rot", "--format", "json", "--by", "team"]);
    assert!(ok && serde_json::from_str::<serde_json::Value>(&out).unwrap()["groups"][0]["group"] == "payments");

    let sessions = h.admin_get("/v1/sessions").await.json();
    assert_eq!(sessions["sessions"], 1);
    assert_eq!(
        (sessions["crossed_32k"].as_u64(), sessions["crossed_100k"].as_u64()),
        (Some(1), Some(1))
    );
    let s = &sessions["list"][0];
    assert_eq!(s["turns"], 5);
    assert_eq!(
        (s["crossed_32k_at"].as_u64(), s["crossed_100k_at"].as_u64()),
        (Some(4), Some(5))
    );
    let per_turn: Vec<u64> = s["context_per_turn"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert!(per_turn.windows(2).all(|w| w[0] < w[1]), "context grows: {per_turn:?}");
    let (ok, out, _) = h.cli(&["sessions"]);
    assert!(ok && out.contains("1 crossed 100K"), "{out}");

    let metrics = String::from_utf8(h.admin_get("/metrics").await.body.to_vec()).unwrap();
    assert!(
        metrics.contains("conduit_requests_total{provider=\"anthropic\",model=\"claude-sonnet-4-5\",status=\"200\"} 5"),
        "{metrics}"
    );
    assert!(metrics.contains("conduit_upstream_errors_total{provider=\"anthropic\",class=\"overloaded\"} 2"));
    assert!(metrics.contains("conduit_overhead_seconds_count{provider=\"anthropic\"} 7"));
    assert!(metrics.contains("# TYPE conduit_policy_evaluation_seconds histogram"));
    let r = h.admin_get_with_token("/metrics", "wrong").await;
    assert_eq!(r.status.as_u16(), 401);
}

/// kill -9 under load in strict mode: every response that completed at the client has its record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_durability_survives_kill_9() {
    let mock = conduit_gateway::mock::start("127.0.0.1:0".parse().unwrap(), Default::default())
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let admin = format!("127.0.0.1:{}", free_port());
    let cmd = |args: &[&str]| {
        let mut c = Command::new(BIN);
        c.args(args)
            .env("CONDUIT_POLICY_CACHE_DIR", policy_cache_dir())
            .env("CONDUIT_DATA_DIR", data.path())
            .env("CONDUIT_LISTEN", &listen)
            .env("CONDUIT_ADMIN_LISTEN", &admin)
            .env("CONDUIT_AUDIT_DURABILITY", "strict")
            .env("UPSTREAM_ANTHROPIC_URL", mock.url())
            .env("UPSTREAM_OPENAI_URL", mock.url());
        c
    };
    let key = issued_key(cmd(&["keys", "create", "--owner", "k9@corp.example", "--json"]));
    let mut set = cmd(&["credentials", "set", "anthropic", "--from-env", "CRED"]);
    set.env("CRED", "sk-ant-kill9");
    succeed(set);
    succeed(cmd(&["budgets", "set", "org", "--daily", "1000"]));
    // Rounds: CONDUIT_KILL9_ROUNDS (default 3, the CI smoke; `CONDUIT_KILL9_ROUNDS=20 cargo test
    // -p conduit --test audit strict_durability` for the full loop).
    let rounds: usize = std::env::var("CONDUIT_KILL9_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let mut completed = Vec::<String>::new();
    for round in 0..rounds {
        let mut gateway = cmd(&["serve"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_listening(&listen);
        wait_listening(&admin);
        if round > 0 {
            // After each restart: recovery cut any torn line, the chain verifies, every response a
            // client saw complete is on record, and no reservation outlived its process.
            check_after_crash(&cmd, &completed, round);
        }
        let done = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let mut workers = Vec::new();
        for w in 0..6 {
            let (listen, key, done) = (listen.clone(), key.clone(), done.clone());
            workers.push(tokio::spawn(async move {
                let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build(hyper_util::client::legacy::connect::HttpConnector::new());
                for i in 0.. {
                    // A mixed workload: streamed, JSON, upstream errors, refusals.
                    let (key, mode) = match (w + i) % 6 {
                        4 => ("ck_not_a_key".to_string(), "ok"),
                        5 => (key.clone(), "status-529"),
                        _ => (key.clone(), "ok"),
                    };
                    let req = http::Request::post(format!("http://{listen}/v1/messages"))
                        .header("x-api-key", &key)
                        .header("x-mock-mode", mode)
                        .header("content-type", "application/json")
                        .body(http_body_util::Full::new(bytes::Bytes::from(body(
                            "claude-sonnet-4-5",
                            &format!("r{round} w{w} i{i}"),
                            i % 2 == 0,
                        ))))
                        .unwrap();
                    let Ok(resp) = client.request(req).await else { break };
                    let id = resp
                        .headers()
                        .get("x-conduit-request-id")
                        .map(|v| v.to_str().unwrap().to_string());
                    // Unauthenticated refusals are aggregated per address and minute (a count,
                    // not one line each): not looked up by id.
                    let refused = resp.status() == http::StatusCode::UNAUTHORIZED;
                    use http_body_util::BodyExt;
                    match resp.into_body().collect().await {
                        // The whole response arrived: this request must be on record.
                        Ok(_) if !refused => done.lock().unwrap().push(id.unwrap()),
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(if rounds > 3 { 800 } else { 1500 })).await;
        // A loaded machine (the whole suite at once) may need longer to get the load going:
        // wait for it rather than for a fixed time.
        let waited = std::time::Instant::now();
        while done.lock().unwrap().len() <= 10 && waited.elapsed() < Duration::from_secs(30) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let before_kill = done.lock().unwrap().len();
        assert!(before_kill > 10, "round {round}: load was running ({before_kill})");
        Command::new("kill")
            .args(["-9", &gateway.id().to_string()])
            .status()
            .unwrap();
        let _ = gateway.wait();
        for w in workers {
            let _ = w.await;
        }
        completed.extend(done.lock().unwrap().iter().cloned());
    }
    let mut gateway = cmd(&["serve"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_listening(&admin);
    let recorded = check_after_crash(&cmd, &completed, rounds);
    // Ledger ↔ audit: the ledger is folded in memory for up to 100 ms before its rows are written
    // (docs/metering.md), so a crash may cost it the last moments of counters. It may also be
    // ahead by the requests in flight at a kill: a request settles into the ledger just before its
    // record is queued, and a record a crash kept from disk belongs to a response no client saw
    // complete — at most one per client (6) per crash. Beyond that it must never count more than
    // the audit log holds (a crash must not double-count). How much it is short is printed.
    let out = cmd(&["audit", "export", "--format", "jsonl"]).output().unwrap();
    let (mut audit_requests, mut audit_cost) = (0u64, 0u64);
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        if r["key_id"].as_str().is_some() && r["path"] == "/v1/messages" {
            audit_requests += 1;
            audit_cost += r["cost_micros"].as_u64().unwrap_or(0);
        }
    }
    let out = cmd(&["spend", "--by", "key", "--format", "json"]).output().unwrap();
    let spend: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let lines = spend["lines"].as_array().unwrap();
    let ledger_requests: u64 = lines.iter().map(|l| l["requests"].as_u64().unwrap()).sum();
    let ledger_cost: u64 = lines.iter().map(|l| l["cost_micros"].as_u64().unwrap()).sum();
    eprintln!(
        "kill -9 x{rounds} under mixed load: {} completed responses, {recorded} records, none missing; \
         ledger {ledger_requests} requests / {ledger_cost} µ$ against the audit log's {audit_requests} / {audit_cost} µ$ \
         (short by {} requests, {} µ$ over {rounds} crashes)",
        completed.len(),
        audit_requests.saturating_sub(ledger_requests),
        audit_cost.saturating_sub(ledger_cost),
    );
    assert!(ledger_requests > 0, "the ledger counted the load: {spend}");
    let in_flight = 6 * rounds as u64;
    assert!(
        ledger_requests <= audit_requests + in_flight,
        "the ledger counts {ledger_requests} requests against the audit log's {audit_requests} (+ at most {in_flight} in flight at the kills): something was counted twice"
    );
    let _ = gateway.kill();
    let _ = gateway.wait();
}

/// After a kill -9 and restart: the chain verifies, every id in `completed` has its record, and
/// no budget holds a reservation. How many records there are.
fn check_after_crash(cmd: &dyn Fn(&[&str]) -> Command, completed: &[String], round: usize) -> usize {
    let out = cmd(&["audit", "verify", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert!(
        out.status.success() && v["ok"] == true,
        "after crash {round}: {v} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cmd(&["audit", "export", "--format", "jsonl"]).output().unwrap();
    let recorded = common::process::exported_request_ids(&out.stdout);
    let missing: Vec<&String> = completed.iter().filter(|id| !recorded.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "after crash {round}: {} of {} completed responses have no record: {missing:?}",
        missing.len(),
        completed.len()
    );
    let out = cmd(&["budgets", "list", "--json"]).output().unwrap();
    let budgets: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for b in budgets["budgets"].as_array().unwrap() {
        assert_eq!(
            b["reserved_micros"], 0,
            "after crash {round}: a reservation leaked: {b}"
        );
    }
    recorded.len()
}

/// OTLP export, when configured: one span per request reaches the collector, metadata only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_spans_reach_a_collector() {
    use http_body_util::BodyExt;
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::<serde_json::Value>::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = listener.local_addr().unwrap();
    let sink = received.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let sink = sink.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let sink = sink.clone();
                    async move {
                        assert_eq!(req.uri().path(), "/v1/traces");
                        assert_eq!(req.headers()["content-type"], "application/json");
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        sink.lock().unwrap().push(serde_json::from_slice(&body).unwrap());
                        Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                            bytes::Bytes::from_static(b"{}"),
                        )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    let h = Harness::builder()
        .env("CONDUIT_OTLP_ENDPOINT", &format!("http://{collector}"))
        .start()
        .await;
    let mut ids = Vec::new();
    for mode in ["ok", "ok", "status-500"] {
        let r = h
            .messages_with(
                &body("claude-sonnet-4-5", "OTLPCANARY prompt", true),
                &[("x-mock-mode", mode)],
            )
            .await;
        ids.push(r.header("x-conduit-request-id").unwrap().to_string());
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let spans: Vec<serde_json::Value> = loop {
        let spans: Vec<serde_json::Value> = received
            .lock()
            .unwrap()
            .iter()
            .flat_map(|b| {
                b["resourceSpans"][0]["scopeSpans"][0]["spans"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .collect();
        if spans.len() >= 3 || Instant::now() > deadline {
            break spans;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(spans.len(), 3, "{spans:#?}");
    let attr = |s: &serde_json::Value, key: &str| {
        s["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["key"] == key)
            .map(|a| a["value"].clone())
    };
    for (span, id) in spans.iter().zip(&ids) {
        assert_eq!(attr(span, "conduit.request_id").unwrap()["stringValue"], id.as_str());
        assert_eq!(span["name"], "POST /v1/messages");
    }
    assert_eq!(attr(&spans[2], "http.response.status_code").unwrap()["intValue"], "500");
    assert_eq!(spans[2]["status"]["code"], 2);
    assert!(attr(&spans[0], "gen_ai.usage.output_tokens").is_some());
    let all = serde_json::to_string(&*received.lock().unwrap()).unwrap();
    assert!(all.contains("\"service.name\""));
    assert!(
        !all.contains("OTLPCANARY") && !all.contains(&h.key[3..]),
        "no prompt, no key"
    );
}

/// Issue 13: unauthenticated refusals cannot fill the disk — past the first few per address,
/// kind and minute they are counted into one `suppressed` record; the chain still verifies, and
/// /metrics counts every one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_floods_are_aggregated() {
    let h = Harness::start().await;
    for _ in 0..40 {
        let r = h
            .send(Method::POST, "/v1/messages", &[("x-api-key", "ck_not-a-key")], "{}")
            .await;
        assert_eq!(r.status, 401);
    }
    for _ in 0..5 {
        assert_eq!(h.send(Method::GET, "/v1/nothing-here", &[], "").await.status, 404);
    }
    h.gateway().audit.sync();
    let all = records(&h);
    let unauth: Vec<&AuditRecord> = all.iter().filter(|r| r.outcome == "unauthenticated").collect();
    assert_eq!(unauth.len(), 10, "the first ten in full");
    let summary = all
        .iter()
        .find(|r| r.outcome == "suppressed")
        .expect("a summary record");
    assert_eq!(
        (summary.suppressed, summary.error_class.as_deref()),
        (30, Some("unauthenticated"))
    );
    assert_eq!(summary.client_ip, "127.0.0.1");
    assert_eq!(
        all.iter().filter(|r| r.outcome == "endpoint_refused").count(),
        5,
        "another kind, its own count"
    );
    assert!(all.len() < 20, "{} lines for 45 refusals", all.len());
    let (ok, out, err) = h.cli(&["audit", "verify"]);
    assert!(ok, "{out}{err}");
    let metrics = String::from_utf8_lossy(&h.admin_get("/metrics").await.body).into_owned();
    assert!(
        metrics.contains("conduit_refusals_total{reason=\"unauthenticated\"} 40"),
        "{metrics}"
    );
}

/// A small tmpfs mounted for one test, unmounted when dropped. `None` (the test skips, or fails
/// under `CONDUIT_REQUIRE_PEERS=1`) where this user may not mount.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &std::path::Path, bytes: usize) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes},mode=0700"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let why = "mounting a tmpfs (needs root) for the disk-full test";
            if std::env::var("CONDUIT_REQUIRE_PEERS").as_deref() == Ok("1") {
                panic!("{why} failed");
            }
            eprintln!("skipping: {why} failed");
            return None;
        }
        Some(Tmpfs(at.to_path_buf()))
    }

    /// Fills it: a file grown until the filesystem says it is full.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.0.join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let block = [0u8; 4096];
        while f.write_all(&block).is_ok() {}
        let _ = f.flush();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

async fn until_ready(h: &Harness, ready: bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = h.admin_get("/readyz").await;
        if (r.status == 200) == ready {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "readyz stayed {}: {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Issue 20: the audit directory on a full filesystem. Strict mode refuses (fail closed): the
/// response whose record cannot be written is withheld, new requests get a 503 naming the cause,
/// `/readyz` says so; group mode keeps serving and holds the records. Neither leaves a torn line:
/// once space returns, every held record is written, the chain verifies and nothing is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_audit_disk_fails_closed_in_strict_mode_and_loses_nothing() {
    for durability in ["strict", "group"] {
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path().join("audit");
        let Some(fs) = Tmpfs::mount(&dir, 256 * 1024) else {
            return;
        };
        let h = Harness::builder()
            .toml(&format!(
                "[audit]\ndurability = \"{durability}\"\ndir = \"{}\"\n",
                dir.display()
            ))
            .start()
            .await;
        let ok = "claude-sonnet-4-5";
        let id = |r: &common::Reply| r.header("x-conduit-request-id").unwrap().to_string();
        let mut served = Vec::new();
        let r = h.messages_with(&body(ok, "before", false), &[]).await;
        assert_eq!(r.status, 200);
        served.push(id(&r));

        let filler = fs.fill();
        if durability == "strict" {
            // The first records may still fit in the day file's last page. Then one is forwarded
            // before the writer knows: its answer is held back, then cut.
            let mut cut = false;
            for _ in 0..40 {
                let r = h.messages_with(&body(ok, "while full", false), &[]).await;
                served.push(id(&r));
                if !String::from_utf8_lossy(&r.body).contains("Conduit mock upstream") {
                    assert_eq!(r.status, 200, "the head went out; the end was withheld");
                    cut = true;
                    break;
                }
            }
            assert!(cut, "a strict response whose record could not be written was completed");
            until_ready(&h, false).await;
            let r = h.messages_with(&body(ok, "still full", false), &[]).await;
            r.assert_anthropic_error(503, "api_error", "audit log cannot be written");
            assert!(r.header("retry-after").is_some());
            let shown = String::from_utf8_lossy(&r.body).to_string();
            assert!(shown.contains("strict") && shown.contains("/readyz"), "{shown}");
            assert!(
                !shown.contains(&dir.display().to_string()),
                "no server path to clients: {shown}"
            );
            // The container probe says so; the liveness probe does not restart a gateway for it.
            let (ready, _, why) = h.cli(&["healthcheck"]);
            assert!(
                !ready && why.contains("audit log cannot be written") && why.contains("No space left"),
                "{why}"
            );
            let (live, out, why) = h.cli(&["healthcheck", "--live"]);
            assert!(live && out.contains("/livez: ok"), "{out}{why}");
        } else {
            for _ in 0..12 {
                let r = h.messages_with(&body(ok, "still full", false), &[]).await;
                assert_eq!(r.status, 200);
                served.push(id(&r));
            }
            until_ready(&h, false).await;
            assert!(
                h.gateway().audit.backlog() >= 5,
                "held records count against audit.max_backlog"
            );
        }

        // Space returns: held records are written, requests flow, nothing is torn or missing.
        std::fs::remove_file(filler).unwrap();
        until_ready(&h, true).await;
        let (ready, out, why) = h.cli(&["healthcheck"]);
        assert!(ready && out.contains("/readyz: ready"), "{out}{why}");
        let r = h.messages_with(&body(ok, "after", false), &[]).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        served.push(id(&r));
        let all = records(&h);
        for want in &served {
            assert!(
                all.iter().any(|r| &r.request_id == want),
                "{durability}: the record of {want} is missing"
            );
        }
        let v = chain::verify(&dir).unwrap();
        assert!(v.ok, "{durability}: {v:?}");
        for (i, r) in all.iter().enumerate() {
            assert_eq!(r.seq, i as u64 + 1, "{durability}: seqs run without gaps");
        }
        drop(h);
        drop(fs);
    }
}

/// Issue 20, a damaged audit file at start-up: a last line that is not a record (not a torn
/// write — that is cut with a warning) stops the gateway with a message naming the file and what
/// to run, rather than chaining new records onto something unknown.
#[test]
fn a_corrupted_last_audit_line_stops_start_up_with_a_clear_message() {
    let data = tempfile::tempdir().unwrap();
    let audit = data.path().join("audit");
    std::fs::create_dir_all(&audit).unwrap();
    let today = chain::day_path(&audit, conduit_gateway::clock::now_unix().div_euclid(86_400));
    std::fs::write(&today, b"{\"seq\":1,\"prev\":\"0\"}\nthis is not a record\n").unwrap();
    let out = Command::new(BIN)
        .arg("serve")
        .env("CONDUIT_DATA_DIR", data.path())
        .env("CONDUIT_LISTEN", "127.0.0.1:0")
        .env("CONDUIT_ADMIN_LISTEN", "127.0.0.1:0")
        .env("CONDUIT_POLICY_CACHE_DIR", policy_cache_dir())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started on a damaged audit log: {err}");
    assert!(
        err.contains("is not a record")
            && err.contains("conduit audit verify")
            && err.contains(&today.display().to_string()),
        "{err}"
    );
}

/// Issue 20: the store's disk fills up while the gateway runs (the audit log elsewhere). The
/// gateway keeps serving — budgets are held in memory and every request is in the audit log — and
/// `/readyz` turns 503 naming the cause and the way out (a load balancer moves traffic to a
/// healthy replica); the spend rows wait in memory. sled refuses writes after a failed one until
/// the process restarts, so `/readyz` stays 503 after space returns: the restart is the recovery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_store_disk_keeps_serving_and_readyz_says_why() {
    let scratch = tempfile::tempdir().unwrap();
    let data = scratch.path().join("data");
    let Some(fs) = Tmpfs::mount(&data, 8 * 1024 * 1024) else {
        return;
    };
    let audit = scratch.path().join("audit");
    let h = Harness::builder()
        .env("CONDUIT_DATA_DIR", &data.display().to_string())
        .toml(&format!("[audit]\ndir = \"{}\"\n", audit.display()))
        .start()
        .await;
    let ok = "claude-sonnet-4-5";
    assert_eq!(h.messages_with(&body(ok, "before", false), &[]).await.status, 200);
    until_ready(&h, true).await;
    let _filler = fs.fill();
    for i in 0..30 {
        let r = h.messages_with(&body(ok, &format!("full {i}"), i % 2 == 0), &[]).await;
        assert_eq!(r.status, 200, "served while the store's disk is full");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let gw = h.gateway();
    gw.ledger.flush().await;
    until_ready(&h, false).await;
    let readyz = h.admin_get("/readyz").await;
    let why = String::from_utf8_lossy(&readyz.body).to_string();
    eprintln!("store disk full: 31 requests served; /readyz {} {why}", readyz.status);
    assert!(
        why.contains("No space left") && why.contains("restart Conduit"),
        "{why}"
    );
    assert_eq!(
        h.records().iter().filter(|r| r.path == "/v1/messages").count(),
        31,
        "every request is in the audit log"
    );
}

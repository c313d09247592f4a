//! Real clients through Conduit to the mock: Claude Code (`claude -p`), Codex (`codex exec`, both
//! the built-in provider with `openai_base_url` and a custom provider entry), anthropic-py and
//! openai-py, streamed and not. Each run goes through a wiretap in front of the gateway, so the test
//! compares the bodies the client put on the wire with the bodies the mock received — byte for
//! byte — and checks the mock saw the real credential and never the stand-in key.
//!
//! The clients are installed by `.ci/run` (npm and pip). Locally, a missing client skips its test
//! with a message; with `CONDUIT_REQUIRE_PEERS=1` (CI) it fails instead.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::installed::{node_bin, require};
use common::wiretap::Wiretap;
use common::{Harness, REAL_ANTHROPIC, REAL_OPENAI, sha256_hex};
use conduit_gateway::ledger::SpendRow;
use conduit_gateway::usage::Usage;

fn python_with_sdks() -> Option<PathBuf> {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import anthropic, openai"])
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then(|| PathBuf::from("python3"))
}

struct Run {
    stdout: String,
    stderr: String,
}

async fn run(program: &PathBuf, args: &[&str], env: &[(&str, String)], cwd: &std::path::Path) -> Run {
    let (ok, run) = run_any(program, args, env, cwd).await;
    assert!(
        ok,
        "{} failed:\nstdout: {}\nstderr: {}",
        program.display(),
        run.stdout,
        run.stderr
    );
    run
}

/// Runs a client whatever its exit status; returns whether it succeeded.
async fn run_any(program: &PathBuf, args: &[&str], env: &[(&str, String)], cwd: &std::path::Path) -> (bool, Run) {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .current_dir(cwd)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(180), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{} did not finish within 180 s", program.display()))
        .unwrap();
    let run = Run {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    (out.status.success(), run)
}

/// Every POST the client sent reached the mock byte-identical, with the real credential only.
async fn assert_transparent(h: &Harness, tap: &Wiretap) -> usize {
    let sent: Vec<_> = tap.requests().into_iter().filter(|r| r.method == "POST").collect();
    let received: Vec<_> = h.mock_log().await.into_iter().filter(|r| r.method == "POST").collect();
    assert!(!sent.is_empty(), "the client sent no POST");
    let mut sent_hashes: Vec<String> = sent.iter().map(|r| sha256_hex(&r.body)).collect();
    let mut received_hashes: Vec<String> = received.iter().map(|r| r.body_sha256.clone()).collect();
    sent_hashes.sort();
    received_hashes.sort();
    assert_eq!(
        sent_hashes,
        received_hashes,
        "bodies on the client's wire and at the upstream differ; sent {:?}",
        sent.iter().map(|r| (&r.target, r.body.len())).collect::<Vec<_>>()
    );
    for r in &received {
        let real = r
            .header("x-api-key")
            .map(str::to_owned)
            .or_else(|| r.header("authorization").map(str::to_owned));
        assert!(
            real.as_deref() == Some(REAL_ANTHROPIC) || real == Some(format!("Bearer {REAL_OPENAI}")),
            "{}: upstream saw {:?} instead of the real credential",
            r.path,
            real
        );
        assert!(
            r.headers.iter().all(|(_, v)| !v.contains(&h.key)),
            "stand-in key reached the upstream"
        );
    }
    received.len()
}

/// `claude -p "say hello" --output-format json` through `tap` with the harness key: its result.
async fn claude_print(claude: &PathBuf, h: &Harness, tap: &Wiretap) -> serde_json::Value {
    let home = tempfile::tempdir().unwrap();
    let out = run(
        claude,
        &["-p", "say hello", "--output-format", "json"],
        &[
            ("ANTHROPIC_BASE_URL", format!("http://{}", tap.addr)),
            ("ANTHROPIC_API_KEY", h.key.clone()),
            ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1".into()),
            ("HOME", home.path().display().to_string()),
        ],
        home.path(),
    )
    .await;
    let result: serde_json::Value =
        serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {}\n{}", out.stdout, out.stderr));
    assert_eq!(result["is_error"], false, "{result}");
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_print_mode() {
    let Some(claude) = require("Claude Code (claude)", node_bin("claude")) else {
        return;
    };
    let h = Harness::start().await;
    let tap = Wiretap::start(h.running.addr).await;
    let result = claude_print(&claude, &h, &tap).await;
    assert!(
        result["result"].as_str().unwrap().contains("Conduit mock upstream"),
        "{result}"
    );
    let n = assert_transparent(&h, &tap).await;
    assert!(n >= 1);
    let log = h.mock_log().await;
    let msg = log
        .iter()
        .find(|r| r.path == "/v1/messages")
        .expect("a /v1/messages request");
    assert_eq!(msg.query.as_deref(), Some("beta=true"));
    assert!(
        msg.body_len > 20_000,
        "Claude Code's first turn carries its tools: {} bytes",
        msg.body_len
    );
}

/// Claude Code in Bedrock mode (`CLAUDE_CODE_USE_BEDROCK=1`, `ANTHROPIC_BEDROCK_BASE_URL` at
/// Conduit, the stand-in key as `AWS_BEARER_TOKEN_BEDROCK`): its requests reach the mock Bedrock
/// byte-identical, re-signed with the org's AWS key pair (the mock verifies the SigV4 signature,
/// else it answers 403 and Claude Code fails), the streamed event-stream answer comes back to it,
/// and the ledger holds the usage the mock reported, under `bedrock`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_in_bedrock_mode() {
    let Some(claude) = require("Claude Code (claude)", node_bin("claude")) else {
        return;
    };
    let h = Harness::start().await;
    let tap = Wiretap::start(h.running.addr).await;
    let home = tempfile::tempdir().unwrap();
    let out = run(
        &claude,
        &["-p", "say hello", "--output-format", "json"],
        &[
            ("CLAUDE_CODE_USE_BEDROCK", "1".into()),
            ("ANTHROPIC_BEDROCK_BASE_URL", format!("http://{}", tap.addr)),
            ("AWS_BEARER_TOKEN_BEDROCK", h.key.clone()),
            ("AWS_REGION", "us-east-1".into()),
            ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1".into()),
            ("HOME", home.path().display().to_string()),
        ],
        home.path(),
    )
    .await;
    let result: serde_json::Value =
        serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {}", out.stdout));
    assert_eq!(result["is_error"], false, "{result}");
    assert!(
        result["result"].as_str().unwrap().contains("Conduit mock upstream"),
        "{result}"
    );
    let sent: Vec<_> = tap.requests().into_iter().filter(|r| r.method == "POST").collect();
    let received: Vec<_> = h.mock_log().await.into_iter().filter(|r| r.method == "POST").collect();
    let mut a: Vec<String> = sent.iter().map(|r| sha256_hex(&r.body)).collect();
    let mut b: Vec<String> = received.iter().map(|r| r.body_sha256.clone()).collect();
    a.sort();
    b.sort();
    assert_eq!(a, b, "bodies changed between Claude Code and Bedrock");
    let akid = common::REAL_AWS.split(':').next().unwrap();
    let streamed = received
        .iter()
        .find(|r| r.path.ends_with("/invoke-with-response-stream"))
        .expect("Claude Code streams its turn");
    assert!(streamed.body_len > 20_000, "the first turn carries the tools");
    // Every request that reached Bedrock — control-plane listings included — was signed by the org.
    let all = h.mock_log().await;
    eprintln!(
        "Claude Code in Bedrock mode sent: {:?}",
        all.iter().map(|r| (&r.method, &r.path)).collect::<Vec<_>>()
    );
    for r in &all {
        assert!(
            r.path.starts_with("/model/") && r.path.contains("%3A") || !r.path.contains(':'),
            "{}",
            r.path
        );
        let auth = r.header("authorization").unwrap_or_default();
        assert!(
            auth.starts_with(&format!("AWS4-HMAC-SHA256 Credential={akid}/")),
            "{}: {auth}",
            r.path
        );
        assert!(
            r.headers.iter().all(|(_, v)| !v.contains(&h.key)),
            "stand-in key reached Bedrock"
        );
    }
    // Every request is in the ledger (the listing too, at zero); the model calls carry the usage.
    let rows = h.spend(all.len() as u64).await;
    let metered: Usage = rows
        .iter()
        .filter(|r| r.provider == "bedrock")
        .map(SpendRow::usage)
        .sum();
    let reported: Usage = received.iter().filter_map(|r| r.usage).sum();
    assert_eq!(metered, reported, "ledger vs the usage Bedrock reported");
}

/// Claude Code unchanged (`ANTHROPIC_BASE_URL`), the org's Anthropic upstream set to Bedrock:
/// Conduit translates each turn for Bedrock (the mock refuses a body with `model` or `stream` and
/// verifies the signature), turns the event-stream back into SSE that Claude Code renders, and
/// meters what Bedrock reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_with_the_anthropic_upstream_on_bedrock() {
    let Some(claude) = require("Claude Code (claude)", node_bin("claude")) else {
        return;
    };
    let h = Harness::builder()
        .env("CONDUIT_ANTHROPIC_PROVIDER", "bedrock")
        .start()
        .await;
    let home = tempfile::tempdir().unwrap();
    let out = run(
        &claude,
        &[
            "-p",
            "say hello",
            "--output-format",
            "json",
            "--model",
            "claude-sonnet-4-5",
        ],
        &[
            ("ANTHROPIC_BASE_URL", format!("http://{}", h.running.addr)),
            ("ANTHROPIC_API_KEY", h.key.clone()),
            ("ANTHROPIC_DEFAULT_HAIKU_MODEL", "claude-haiku-4-5".into()),
            ("ANTHROPIC_SMALL_FAST_MODEL", "claude-haiku-4-5".into()),
            ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1".into()),
            ("HOME", home.path().display().to_string()),
        ],
        home.path(),
    )
    .await;
    let result: serde_json::Value =
        serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {}", out.stdout));
    assert_eq!(result["is_error"], false, "{result}");
    assert!(
        result["result"].as_str().unwrap().contains("Conduit mock upstream"),
        "{result}"
    );
    let received: Vec<_> = h.mock_log().await.into_iter().filter(|r| r.method == "POST").collect();
    assert!(
        received.iter().any(|r| r.path
            == "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke-with-response-stream"
            && r.body_len > 20_000),
        "{:?}",
        received.iter().map(|r| (&r.path, r.status)).collect::<Vec<_>>()
    );
    assert!(
        received.iter().all(|r| r.status == 200),
        "Bedrock refused a translated request"
    );
    let rows = h.spend(received.len() as u64).await;
    let metered: Usage = rows
        .iter()
        .filter(|r| r.provider == "bedrock")
        .map(SpendRow::usage)
        .sum();
    let reported: Usage = received.iter().filter_map(|r| r.usage).sum();
    assert_eq!(metered, reported, "ledger tokens vs Bedrock's usage");
}

/// openai-py against Azure OpenAI through Conduit: the plain `OpenAI` client (base URL at
/// Conduit, model names) and the `AzureOpenAI` client (deployments, `api-key`), streamed and not.
/// The mock Azure checks the URL form and records the key; the ledger (provider `azure`) equals the
/// usage it reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_sdk_clients_reach_azure_openai() {
    let Some(python) = require("the anthropic and openai Python SDKs", python_with_sdks()) else {
        return;
    };
    let h = Harness::builder()
        .env("CONDUIT_OPENAI_PROVIDER", "azure")
        .toml("[upstream.openai.deployments]\n\"gpt-4o\" = \"prod-gpt4o\"\n")
        .start()
        .await;
    let script = r#"
import json, os, openai
base = os.environ["BASE"]
plain = openai.OpenAI(base_url=base + "/v1", api_key=os.environ["KEY"], max_retries=0)
azure = openai.AzureOpenAI(azure_endpoint=base, api_key=os.environ["KEY"], api_version="2024-10-21", max_retries=0)
out = {}
out["plain"] = plain.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}]).choices[0].message.content
s = plain.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True, stream_options={"include_usage": True})
out["plain_stream"] = "".join(c.choices[0].delta.content or "" for c in s if c.choices)
out["azure"] = azure.chat.completions.create(model="prod-gpt4o", messages=[{"role": "user", "content": "hi"}]).choices[0].message.content
out["embedding"] = len(azure.embeddings.create(model="prod-embed", input="hello").data[0].embedding)
print(json.dumps(out))
"#;
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        &python,
        &["-c", script],
        &[("BASE", format!("http://{}", h.running.addr)), ("KEY", h.key.clone())],
        dir.path(),
    )
    .await;
    let v: serde_json::Value =
        serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {}", out.stdout));
    let hello = "Hello! This is the Conduit mock upstream: your request arrived intact.";
    for k in ["plain", "plain_stream", "azure"] {
        assert_eq!(v[k], hello, "{k}: {v}");
    }
    assert_eq!(v["embedding"], 4);
    let log = h.mock_log().await;
    assert_eq!(log.len(), 4, "{:?}", log.iter().map(|r| &r.path).collect::<Vec<_>>());
    for r in &log {
        assert!(r.path.starts_with("/openai/deployments/"), "{}", r.path);
        assert!(
            r.query.as_deref().is_some_and(|q| q.contains("api-version=")),
            "{:?}",
            r.query
        );
        assert_eq!(r.header("api-key"), Some(common::REAL_AZURE));
        assert!(
            r.headers.iter().all(|(_, v)| !v.contains(&h.key)),
            "stand-in reached Azure"
        );
    }
    assert_eq!(log[0].path, "/openai/deployments/prod-gpt4o/chat/completions");
    // An embeddings response reports input tokens only.
    let reported: Usage = log
        .iter()
        .filter_map(|r| {
            let u = r.usage?;
            Some(if r.path.ends_with("/embeddings") {
                Usage { output: 0, ..u }
            } else {
                u
            })
        })
        .sum();
    let rows = h.spend(log.len() as u64).await;
    let metered: Usage = rows.iter().filter(|r| r.provider == "azure").map(SpendRow::usage).sum();
    assert_eq!(metered, reported);
}

/// A blocked secret, as Claude Code shows it: the error names the category, rule and location
/// (never the value), Claude Code does not retry it, and nothing reaches the provider.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_shows_a_policy_block() {
    let Some(claude) = require("Claude Code (claude)", node_bin("claude")) else {
        return;
    };
    let h = Harness::builder()
        .toml("[policies.modes]\n\"secret.*\" = \"block\"\n")
        .start()
        .await;
    let home = tempfile::tempdir().unwrap();
    let secret = "ghp_R8xk2LmQ9vTz4WcY7nB3pJ6hF1sD5gA0eK2u";
    let prompt = format!("use GITHUB_TOKEN={secret} to open the PR");
    let (ok, out) = run_any(
        &claude,
        &["-p", &prompt, "--output-format", "json"],
        &[
            ("ANTHROPIC_BASE_URL", format!("http://{}", h.running.addr)),
            ("ANTHROPIC_API_KEY", h.key.clone()),
            ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1".into()),
            ("HOME", home.path().display().to_string()),
        ],
        home.path(),
    )
    .await;
    assert!(!ok, "a blocked request is an error for Claude Code");
    let shown = format!("{}{}", out.stdout, out.stderr);
    assert!(
        shown.contains("400")
            && shown.contains("secret.github-token")
            && shown.contains("conduit: blocked this request"),
        "{shown}"
    );
    assert!(!shown.contains(&secret[4..]), "the secret is not echoed back: {shown}");
    let posts = h.mock_log().await.into_iter().filter(|r| r.method == "POST").count();
    assert_eq!(posts, 0, "nothing reached the provider");
    let findings = h.gateway().state.findings.list(10).await.unwrap();
    assert!(
        findings
            .iter()
            .all(|f| f.category == "secret.github-token" && f.action == "blocked")
    );
    assert_eq!(
        findings.len(),
        findings
            .iter()
            .map(|f| &f.request_id)
            .collect::<std::collections::HashSet<_>>()
            .len(),
        "one finding per request"
    );
    assert!(
        findings.len() <= 2,
        "Claude Code does not retry a 400 ({} attempts)",
        findings.len()
    );
    eprintln!("Claude Code showed: {shown}");
}

/// Issue 21: the current Claude Code (2.1.332, default model `claude-opus-5-5`) works for an
/// engineer under a team budget, and the ledger's cost is the `total_cost_usd` Claude Code itself
/// reports for the same usage, to the micro-dollar.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn current_claude_code_under_a_team_budget_costs_what_it_says() {
    let Some(claude) = require(
        "the current Claude Code (claude-current)",
        common::installed::claude_current(),
    ) else {
        return;
    };
    let h = Harness::start().await;
    h.set_budget("team:payments", None, Some(50_000_000)).await;
    let tap = Wiretap::start(h.running.addr).await;
    let result = claude_print(&claude, &h, &tap).await;
    assert!(
        result["result"].as_str().unwrap().contains("Conduit mock upstream"),
        "{result}"
    );
    let n = assert_transparent(&h, &tap).await;
    let rows = h.spend(n as u64).await;
    let models: Vec<&str> = rows.iter().map(|r| r.model.as_str()).collect();
    assert!(models.contains(&"claude-opus-5-5"), "{models:?}");
    assert!(rows.iter().all(|r| r.unpriced == 0 && r.estimated == 0), "{rows:?}");
    let ledger: u64 = rows.iter().map(|r| r.cost_micros).sum();
    let reported = (result["total_cost_usd"].as_f64().unwrap() * 1e6).round() as u64;
    // Conduit rounds once per request, Claude Code sums unrounded: equal for one request, and
    // within half a micro-dollar per request otherwise.
    assert!(
        ledger.abs_diff(reported) <= (n as u64).saturating_sub(1),
        "ledger ${} vs Claude Code's ${} over {n} request(s)",
        conduit_gateway::money::usd(ledger),
        result["total_cost_usd"]
    );
    eprintln!(
        "Claude Code {} : total_cost_usd {} = ledger ${} ({n} request(s))",
        result["modelUsage"]
            .as_object()
            .map(|m| m.keys().cloned().collect::<Vec<_>>().join(","))
            .unwrap_or_default(),
        result["total_cost_usd"],
        conduit_gateway::money::usd(ledger)
    );
}

/// Issue 21: Codex 0.171's default model (`gpt-6.2-sol`) has no price; under a budget it still
/// works, billed at OpenAI's ceiling and flagged as such.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_under_a_budget_is_billed_at_the_ceiling_for_its_unpriced_model() {
    if require("Codex (codex)", node_bin("codex")).is_none() {
        return;
    }
    let h = Harness::start().await;
    h.set_budget("org", Some(1_000_000_000), None).await;
    codex_via_provider(&h, h.running.addr).await;
    let rows = h.spend(1).await;
    let row = rows
        .iter()
        .find(|r| r.model == "gpt-6.2-sol")
        .unwrap_or_else(|| panic!("{rows:?}"));
    let prices = h.gateway().prices();
    let ceiling = prices.ceiling_row(conduit_gateway::protocol::Provider::OpenAi).unwrap();
    assert_eq!(row.unpriced, row.requests, "{row:?}");
    assert_eq!(
        row.cost_micros,
        ceiling.cost_micros(&row.usage()),
        "billed at {}",
        ceiling.model
    );
    assert!(row.cost_micros > 0);
    let (ok, _, err) = h.cli(&["spend", "--by", "model"]);
    assert!(ok && err.contains("openai/gpt-6.2-sol"), "{err}");
}

/// Codex with a `[model_providers.conduit]` entry at `addr` (no WebSocket attempt); it must have
/// printed the mock's answer.
async fn codex_via_provider(h: &Harness, addr: std::net::SocketAddr) -> Run {
    let args: Vec<String> = [
        "model_provider=\"conduit\"".to_string(),
        "model_providers.conduit.name=\"Conduit\"".into(),
        format!("model_providers.conduit.base_url=\"http://{addr}/v1\""),
        "model_providers.conduit.env_key=\"CONDUIT_KEY\"".into(),
        "model_providers.conduit.wire_api=\"responses\"".into(),
    ]
    .into_iter()
    .flat_map(|a| ["-c".to_string(), a])
    .collect();
    let out = codex(h, &args).await;
    assert!(
        out.stdout.contains("Conduit mock upstream"),
        "{}\n{}",
        out.stdout,
        out.stderr
    );
    out
}

async fn codex(h: &Harness, provider_args: &[String]) -> Run {
    let codex = node_bin("codex").unwrap();
    let home = tempfile::tempdir().unwrap();
    let mut args: Vec<&str> = vec!["exec", "--skip-git-repo-check"];
    args.extend(provider_args.iter().map(String::as_str));
    args.push("say hello");
    run(
        &codex,
        &args,
        &[
            ("CODEX_API_KEY", h.key.clone()),
            ("CONDUIT_KEY", h.key.clone()),
            ("HOME", home.path().display().to_string()),
            ("CODEX_HOME", home.path().display().to_string()),
            ("RUST_LOG", "warn".into()),
        ],
        home.path(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_exec_with_openai_base_url() {
    if require("Codex (codex)", node_bin("codex")).is_none() {
        return;
    }
    let h = Harness::start().await;
    let tap = Wiretap::start(h.running.addr).await;
    let out = codex(
        &h,
        &["-c".into(), format!("openai_base_url=\"http://{}/v1\"", tap.addr)],
    )
    .await;
    assert!(
        out.stdout.contains("Conduit mock upstream"),
        "{}\n{}",
        out.stdout,
        out.stderr
    );
    // Codex tries a Responses WebSocket first; Conduit refuses it with a reason, Codex falls back.
    assert!(out.stderr.contains("does not tunnel"), "{}", out.stderr);
    assert!(
        h.mock_log().await.iter().all(|r| r.method == "POST"),
        "no upgrade attempt reached the upstream"
    );
    assert_eq!(assert_transparent(&h, &tap).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_exec_with_a_custom_provider() {
    if require("Codex (codex)", node_bin("codex")).is_none() {
        return;
    }
    let h = Harness::start().await;
    let tap = Wiretap::start(h.running.addr).await;
    let out = codex_via_provider(&h, tap.addr).await;
    assert!(
        !out.stderr.contains("WebSocket"),
        "a custom provider makes no WebSocket attempt: {}",
        out.stderr
    );
    let log = h.mock_log().await;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].path, "/v1/responses");
    assert_eq!(assert_transparent(&h, &tap).await, 1);
}

const SDK_SCRIPT: &str = r#"
import json, os, anthropic, openai
base, key = os.environ["BASE"], os.environ["KEY"]
msgs = [{"role": "user", "content": "say hello"}]
out = {}
a = anthropic.Anthropic(base_url=base, api_key=key, max_retries=0)
m = a.messages.create(model="claude-sonnet-4-5", max_tokens=64, messages=msgs)
out["anthropic"] = m.content[0].text
with a.messages.stream(model="claude-sonnet-4-5", max_tokens=64, messages=msgs) as s:
    out["anthropic_stream"] = "".join(s.text_stream)
    out["anthropic_stream_output_tokens"] = s.get_final_message().usage.output_tokens
out["count_tokens"] = a.messages.count_tokens(model="claude-sonnet-4-5", messages=msgs).input_tokens
o = openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0)
out["chat"] = o.chat.completions.create(model="gpt-5", messages=msgs).choices[0].message.content
parts, usage = [], None
for ch in o.chat.completions.create(model="gpt-5", messages=msgs, stream=True, stream_options={"include_usage": True}):
    parts += [c.delta.content or "" for c in ch.choices]
    usage = ch.usage or usage
out["chat_stream"], out["chat_stream_total_tokens"] = "".join(parts), usage.total_tokens
text = ""
for ev in o.responses.create(model="gpt-5", input="say hello", stream=True):
    if ev.type == "response.output_text.delta":
        text += ev.delta
    if ev.type == "response.completed":
        out["responses_output_tokens"] = ev.response.usage.output_tokens
out["responses_stream"] = text
print(json.dumps(out))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_and_openai_python_sdks() {
    let Some(python) = require("the anthropic and openai Python SDKs", python_with_sdks()) else {
        return;
    };
    let h = Harness::start().await;
    let tap = Wiretap::start(h.running.addr).await;
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        &python,
        &["-c", SDK_SCRIPT],
        &[("BASE", format!("http://{}", tap.addr)), ("KEY", h.key.clone())],
        dir.path(),
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    let hello = "Hello! This is the Conduit mock upstream: your request arrived intact.";
    for k in [
        "anthropic",
        "anthropic_stream",
        "chat",
        "chat_stream",
        "responses_stream",
    ] {
        assert_eq!(v[k], hello, "{k}: {v}");
    }
    assert_eq!(v["anthropic_stream_output_tokens"], 15);
    assert!(v["count_tokens"].as_u64().unwrap() > 0);
    assert!(v["chat_stream_total_tokens"].as_u64().unwrap() > 15);
    assert_eq!(assert_transparent(&h, &tap).await, 6);
    // anthropic-py 2.x authenticates with Authorization: Bearer (see the captures).
    let wire = tap.requests();
    assert!(!wire.is_empty());
}

const SDK_ERRORS: &str = r#"
import json, os, anthropic, openai
base, key = os.environ["BASE"], os.environ["KEY"]
msgs = [{"role": "user", "content": "hi"}]
out = {}
try:
    anthropic.Anthropic(base_url=base, api_key=key, max_retries=0).messages.create(model="m", max_tokens=5, messages=msgs)
except anthropic.AuthenticationError as e:
    out["anthropic"] = [type(e).__name__, e.status_code, e.body["message"] if isinstance(e.body, dict) and "message" in e.body else str(e)]
try:
    openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0).chat.completions.create(model="m", messages=msgs)
except openai.AuthenticationError as e:
    out["openai"] = [type(e).__name__, e.status_code, str(e)]
print(json.dumps(out))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdks_raise_their_own_errors_for_gateway_refusals() {
    let Some(python) = require("the anthropic and openai Python SDKs", python_with_sdks()) else {
        return;
    };
    let h = Harness::start().await;
    conduit_gateway::operator::revoke_key(h.gateway().state.keys.as_ref(), &h.key_id)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        &python,
        &["-c", SDK_ERRORS],
        &[("BASE", h.url("")), ("KEY", h.key.clone())],
        dir.path(),
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(v["anthropic"][0], "AuthenticationError", "{v}");
    assert_eq!(v["anthropic"][1], 401);
    assert!(v["anthropic"][2].as_str().unwrap().contains("was revoked"), "{v}");
    assert_eq!(v["openai"][0], "AuthenticationError", "{v}");
    assert!(v["openai"][2].as_str().unwrap().contains("was revoked"), "{v}");
    assert!(h.mock_log().await.is_empty());
}

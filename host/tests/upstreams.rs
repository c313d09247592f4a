//! Upstreams other than the two public APIs (issue 6): AWS Bedrock — Bedrock-native clients whose
//! requests Conduit re-signs with the org's sealed AWS key pair (the mock verifies every SigV4
//! signature with its own implementation of the specification) and whose event-stream responses
//! are metered — and Azure OpenAI, reached by OpenAI-shaped and Azure-native requests alike.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Harness, REAL_AWS, sha256_hex};
use conduit_gateway::ledger::SpendRow;
use conduit_gateway::usage::Usage;
use http::Method;
use serde_json::Value;

/// Tokens in today's rows of `provider`.
fn sum(rows: &[SpendRow], provider: &str) -> Usage {
    rows.iter()
        .filter(|r| r.provider == provider)
        .map(SpendRow::usage)
        .sum()
}

/// Claude Code's own Bedrock requests (../shared/captures/claudecode_bedrock_*), sent with the
/// stand-in key as a Bedrock API key: each reaches the mock with the body unchanged, the model id
/// encoded as AWS SDKs encode it, a valid SigV4 signature by the org's key (else the mock answers
/// 403), and no trace of the stand-in; the client gets the mock's bytes exactly — event-stream
/// included — and the ledger holds the usage the mock reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bedrock_native_requests_are_re_signed_forwarded_unchanged_and_metered() {
    let h = Harness::start().await;
    let dir = common::shared_dir().join("captures");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("claudecode_bedrock_")
        })
        .collect();
    names.sort();
    assert!(names.len() >= 6, "{names:?}");
    let bearer = format!("Bearer {}", h.key);
    let mut expected = Usage::default();
    let mut posts = 0;
    for path in &names {
        let v: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        h.mock_reset().await;
        let mut target = v["path"].as_str().unwrap().to_string();
        if let Some(q) = v["query"].as_object().filter(|q| !q.is_empty()) {
            let pairs: Vec<String> = q
                .iter()
                .map(|(k, vs)| format!("{k}={}", vs[0].as_str().unwrap()))
                .collect();
            target = format!("{target}?{}", pairs.join("&"));
        }
        let body = if v["body"].is_null() {
            Vec::new()
        } else {
            serde_json::to_vec(&v["body"]).unwrap()
        };
        let mut headers: Vec<(String, String)> = Vec::new();
        for h2 in v["headers"].as_array().unwrap() {
            let (k, val) = (h2[0].as_str().unwrap(), h2[1].as_str().unwrap());
            match k.to_ascii_lowercase().as_str() {
                "host" | "content-length" | "connection" => {}
                "authorization" => headers.push((k.into(), bearer.clone())),
                _ => headers.push((k.into(), val.into())),
            }
        }
        let hdrs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let method: Method = v["method"].as_str().unwrap().parse().unwrap();
        let r = h.send(method.clone(), &target, &hdrs, body.clone()).await;
        let name = path.file_name().unwrap().to_string_lossy();
        assert_eq!(r.status, 200, "{name}: {}", String::from_utf8_lossy(&r.body));
        let log = h.mock_log().await;
        assert_eq!(log.len(), 1, "{name}");
        let seen = &log[0];
        assert_eq!(seen.body_sha256, sha256_hex(&body), "{name}: body changed");
        assert_eq!(
            seen.response_sha256.as_deref(),
            Some(sha256_hex(&r.body).as_str()),
            "{name}: response changed"
        );
        let auth = seen.header("authorization").unwrap();
        let akid = REAL_AWS.split(':').next().unwrap();
        assert!(
            auth.starts_with(&format!("AWS4-HMAC-SHA256 Credential={akid}/")),
            "{name}: {auth}"
        );
        assert!(auth.contains("/us-east-1/bedrock/aws4_request"), "{auth}");
        assert!(
            seen.headers.iter().all(|(_, v)| !v.contains(&h.key)),
            "{name}: stand-in leaked"
        );
        if let Some(model) = v["path"].as_str().unwrap().strip_prefix("/model/") {
            let id = model.split('/').next().unwrap();
            assert_eq!(
                seen.path,
                v["path"].as_str().unwrap().replace(id, &id.replace(':', "%3A")),
                "{name}"
            );
            expected = expected + seen.usage.unwrap();
            posts += 1;
        }
        if seen.path.ends_with("invoke-with-response-stream") {
            assert_eq!(r.header("content-type"), Some("application/vnd.amazon.eventstream"));
            let frames = conduit_gateway::eventstream::Decoder::default().push(&r.body).unwrap();
            assert!(frames.len() > 10, "{name}: {} frames", frames.len());
        }
    }
    let rows = h.spend(posts).await;
    assert_eq!(sum(&rows, "bedrock"), expected, "{rows:?}");
    // Every model call is metered from reported usage (the listing has none to report).
    assert!(
        rows.iter().filter(|r| r.model != "-").all(|r| r.estimated == 0),
        "{rows:?}"
    );
    let sonnet = rows
        .iter()
        .find(|r| r.model == "us.anthropic.claude-sonnet-4-5-20250929-v1:0")
        .expect("the Sonnet 4.5 profile is recorded by its Bedrock id");
    let price = h
        .gateway()
        .prices()
        .lookup(conduit_gateway::protocol::Provider::Bedrock, &sonnet.model)
        .cloned()
        .unwrap();
    // Its own row: the geographic profile, 10 % above the global profile's list price.
    let global = h
        .gateway()
        .prices()
        .lookup(
            conduit_gateway::protocol::Provider::Bedrock,
            "global.anthropic.claude-sonnet-4-5-20250929-v1:0",
        )
        .cloned()
        .unwrap();
    assert_eq!(price.model, sonnet.model);
    assert_eq!(price.rates.input * 10, global.rates.input * 11, "{price:?}");
    assert_eq!(sonnet.cost_micros, price.cost_micros(&sonnet.usage()));
}

/// Converse and ConverseStream: usage from the JSON body and from the `metadata` frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converse_usage_is_metered_from_json_and_event_stream() {
    let h = Harness::start().await;
    let bearer = format!("Bearer {}", h.key);
    let body =
        r#"{"messages":[{"role":"user","content":[{"text":"hello there"}]}],"inferenceConfig":{"maxTokens":64}}"#;
    let mut expected = Usage::default();
    for op in ["converse", "converse-stream"] {
        let r = h
            .send(
                Method::POST,
                &format!("/model/anthropic.claude-3-5-haiku-20241022-v1:0/{op}"),
                &[("authorization", &bearer), ("content-type", "application/json")],
                body,
            )
            .await;
        assert_eq!(r.status, 200, "{op}: {}", String::from_utf8_lossy(&r.body));
        let seen = h.mock_log().await.pop().unwrap();
        expected = expected + seen.usage.unwrap();
    }
    let rows = h.spend(2).await;
    assert_eq!(sum(&rows, "bedrock"), expected);
    assert!(rows.iter().all(|r| r.estimated == 0 && r.unpriced == 0), "{rows:?}");
}

/// Wrong credentials are AWS's 403 passed through; a client signing with its own AWS keys gets a
/// specific 401 that says what to set; a missing credential is a clear 503 — all in AWS's shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bedrock_failures_are_specific_and_in_aws_shape() {
    let h = Harness::builder()
        .mock(conduit_gateway::mock::MockOptions {
            aws_credentials: Some("AKIADIFFERENTKEY0000:another-secret".into()),
            ..Default::default()
        })
        .start()
        .await;
    let bearer = format!("Bearer {}", h.key);
    let body =
        r#"{"anthropic_version":"bedrock-2023-05-31","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#;
    let path = "/model/us.anthropic.claude-haiku-4-5-20251001-v1:0/invoke";
    let r = h
        .send(
            Method::POST,
            path,
            &[("authorization", &bearer), ("content-type", "application/json")],
            body,
        )
        .await;
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("x-amzn-errortype"), Some("AccessDeniedException"));

    let sigv4 = "AWS4-HMAC-SHA256 Credential=AKIAENGINEERKEY00000/20261127/us-east-1/bedrock/aws4_request, SignedHeaders=host;x-amz-date, Signature=00";
    let r = h
        .send(
            Method::POST,
            path,
            &[("authorization", sigv4), ("content-type", "application/json")],
            body,
        )
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("x-amzn-errortype"), Some("AccessDeniedException"));
    let msg = r.json()["message"].as_str().unwrap().to_string();
    assert!(msg.contains("AWS_BEARER_TOKEN_BEDROCK"), "{msg}");

    let h = Harness::builder().without_bedrock_credential().start().await;
    let bearer = format!("Bearer {}", h.key);
    let r = h
        .send(
            Method::POST,
            path,
            &[("authorization", &bearer), ("content-type", "application/json")],
            body,
        )
        .await;
    assert_eq!(r.status, 503);
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("credentials set bedrock"),
        "{}",
        r.json()
    );
}

/// An OpenAI client pointed at Conduit reaches Azure OpenAI unchanged: the model maps to its
/// deployment in the path, `api-version` is added, the real key goes as `api-key`; an Azure-native
/// client's path and api-version pass as sent; usage is metered under `azure`, at OpenAI's list
/// price when no Azure row exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_openai_from_openai_and_azure_clients() {
    let h = Harness::builder()
        .env("CONDUIT_OPENAI_PROVIDER", "azure")
        .env("CONDUIT_AZURE_API_VERSION", "2024-10-21")
        .toml("[upstream.openai.deployments]\n\"gpt-4o\" = \"prod-gpt4o\"\n")
        .start()
        .await;
    let body = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}"#;
    let bearer = format!("Bearer {}", h.key);
    let r = h
        .send(
            Method::POST,
            "/v1/chat/completions",
            &[("authorization", &bearer), ("content-type", "application/json")],
            body,
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let seen = h.mock_log().await.pop().unwrap();
    assert_eq!(seen.path, "/openai/deployments/prod-gpt4o/chat/completions");
    assert_eq!(seen.query.as_deref(), Some("api-version=2024-10-21"));
    assert_eq!(seen.header("api-key"), Some(common::REAL_AZURE));
    assert!(seen.header("authorization").is_none());
    assert_eq!(seen.body_sha256, sha256_hex(body.as_bytes()));
    let mut expected = seen.usage.unwrap();

    // Azure-native (AzureOpenAI SDK): `api-key` carries the stand-in.
    let native = r#"{"messages":[{"role":"user","content":"hi"}]}"#;
    let r = h
        .send(
            Method::POST,
            "/openai/deployments/prod-gpt4o/chat/completions?api-version=2025-01-01-preview",
            &[("api-key", &h.key), ("content-type", "application/json")],
            native,
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let seen = h.mock_log().await.pop().unwrap();
    assert_eq!(seen.path, "/openai/deployments/prod-gpt4o/chat/completions");
    assert_eq!(seen.query.as_deref(), Some("api-version=2025-01-01-preview"));
    assert_eq!(seen.header("api-key"), Some(common::REAL_AZURE));
    assert!(seen.headers.iter().all(|(_, v)| !v.contains(&h.key)));
    expected = expected + seen.usage.unwrap();

    let rows = h.spend(2).await;
    assert_eq!(sum(&rows, "azure"), expected, "{rows:?}");
    let row = rows.iter().find(|r| r.model == "gpt-4o").unwrap();
    assert_eq!(row.unpriced, 0, "{row:?}");
}

/// Anthropic-API clients with the Anthropic upstream set to Bedrock: `/v1/messages` reaches
/// `/model/{profile id}/invoke[-with-response-stream]` with the body Bedrock requires (no `model`,
/// no `stream`, `anthropic_version`, the accepted betas as `anthropic_beta`, every other member
/// byte for byte), signed (the mock verifies); the event-stream comes back as Anthropic SSE and
/// errors in Anthropic's shape; the ledger records the Bedrock id with the usage Bedrock reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_clients_reach_bedrock_through_the_one_translation() {
    let h = Harness::builder()
        .env("CONDUIT_ANTHROPIC_PROVIDER", "bedrock")
        .toml("[upstream.bedrock.models]\n\"claude-house\" = \"global.anthropic.claude-haiku-4-5-20251001-v1:0\"\n")
        .start()
        .await;
    let headers = [
        ("x-api-key", h.key.as_str()),
        ("anthropic-version", "2023-06-01"),
        ("anthropic-beta", "claude-code-20250219,interleaved-thinking-2025-05-14"),
        ("content-type", "application/json"),
    ];
    let body = r#"{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"hi"}],"system":"be brief"}"#;
    let r = h.send(Method::POST, "/v1/messages", &headers, body).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["type"], "message");
    assert!(
        v["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("Conduit mock upstream")
    );
    let seen = h.mock_log().await.pop().unwrap();
    assert_eq!(
        seen.path,
        "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke"
    );
    let expected_body = r#"{"max_tokens":64,"messages":[{"role":"user","content":"hi"}],"system":"be brief","anthropic_version":"bedrock-2023-05-31","anthropic_beta":["interleaved-thinking-2025-05-14"]}"#;
    assert_eq!(
        seen.body_sha256,
        sha256_hex(expected_body.as_bytes()),
        "the translated body"
    );
    assert!(seen.header("authorization").unwrap().starts_with("AWS4-HMAC-SHA256"));
    assert!(seen.header("anthropic-version").is_none() && seen.header("x-api-key").is_none());
    let mut expected = seen.usage.unwrap();

    // Streamed: Anthropic SSE, event by event, text intact.
    let stream_body =
        r#"{"model":"claude-house","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let r = h.send(Method::POST, "/v1/messages", &headers, stream_body).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.header("content-type").unwrap().starts_with("text/event-stream"));
    let text = String::from_utf8(r.body.to_vec()).unwrap();
    let events: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("event: ")).collect();
    assert_eq!(events.first(), Some(&"message_start"));
    assert_eq!(events.last(), Some(&"message_stop"));
    let said: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|e| e["delta"]["text"].as_str().map(str::to_owned))
        .collect();
    assert!(said.contains("Conduit mock upstream"), "{said}");
    let seen = h.mock_log().await.pop().unwrap();
    assert_eq!(
        seen.path,
        "/model/global.anthropic.claude-haiku-4-5-20251001-v1%3A0/invoke-with-response-stream"
    );
    expected = expected + seen.usage.unwrap();

    // Errors in Anthropic's shape; refusals before Bedrock are clear.
    let mut throttled = headers.to_vec();
    throttled.push(("x-mock-mode", "status-429"));
    let r = h.send(Method::POST, "/v1/messages", &throttled, body).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"]["type"], "rate_limit_error", "{}", r.json());
    let r = h
        .send(
            Method::POST,
            "/v1/messages",
            &headers,
            r#"{"model":"gpt-5","max_tokens":5,"messages":[]}"#,
        )
        .await;
    r.assert_anthropic_error(400, "invalid_request_error", "[upstream.bedrock.models]");
    // Token counting: Bedrock's CountTokens on the foundation model, answered in Anthropic's shape.
    let r = h.send(Method::POST, "/v1/messages/count_tokens", &headers, body).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.json()["input_tokens"].as_u64().unwrap() > 0, "{}", r.json());
    let seen = h.mock_log().await.pop().unwrap();
    assert_eq!(
        seen.path,
        "/model/anthropic.claude-sonnet-4-5-20250929-v1%3A0/count-tokens"
    );
    let r = h.send(Method::GET, "/v1/models", &headers, "").await;
    r.assert_anthropic_error(404, "not_found_error", "Bedrock");

    let rows = h.spend(3).await;
    assert_eq!(sum(&rows, "bedrock"), expected, "{rows:?}");
    assert!(
        rows.iter()
            .any(|r| r.model == "us.anthropic.claude-sonnet-4-5-20250929-v1:0" && r.cost_micros > 0)
    );
}

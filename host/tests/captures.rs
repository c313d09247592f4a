//! Replays every request recorded from real clients (../shared/captures: Claude Code, anthropic-py,
//! openai-py, Codex) through the gateway: the upstream must receive byte-identical bodies, query
//! strings and headers (auth aside), and the client must receive the upstream's response bytes
//! unchanged — plain and gzip-compressed. Bedrock-mode captures are replayed by `upstreams.rs`,
//! which checks their re-signing too; they are skipped here by name.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Harness, REAL_ANTHROPIC, REAL_OPENAI, sha256_hex};
use http::Method;
use serde_json::Value;

struct Capture {
    name: String,
    method: Method,
    path_and_query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn load_captures() -> Vec<Capture> {
    let dir = common::shared_dir().join("captures");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("captures at {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    names.sort();
    let mut out = Vec::new();
    for path in names {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if name.starts_with("claudecode_bedrock_") {
            continue;
        }
        let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let mut pq = v["path"].as_str().unwrap().to_string();
        let query: Vec<String> = v["query"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(k, vals)| {
                vals.as_array()
                    .unwrap()
                    .iter()
                    .map(move |x| format!("{k}={}", x.as_str().unwrap()))
            })
            .collect();
        if !query.is_empty() {
            pq.push('?');
            pq.push_str(&query.join("&"));
        }
        // The wire bytes were the compact serialization in stored key order (captures README).
        let body = if v["body"].is_null() {
            Vec::new()
        } else {
            serde_json::to_vec(&v["body"]).unwrap()
        };
        assert_eq!(
            body.len() as u64,
            v["body_length_decoded"].as_u64().unwrap(),
            "{name}: re-serialised body length"
        );
        let headers = v["headers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| (h[0].as_str().unwrap().to_string(), h[1].as_str().unwrap().to_string()))
            .collect();
        out.push(Capture {
            name,
            method: v["method"].as_str().unwrap().parse().unwrap(),
            path_and_query: pq,
            headers,
            body,
        });
    }
    assert!(out.len() >= 10, "expected the shared captures, found {}", out.len());
    out
}

async fn replay_all(h: &Harness) -> usize {
    let mut replayed = 0;
    for c in load_captures() {
        h.mock_reset().await;
        let bearer = format!("Bearer {}", h.key);
        let mut headers: Vec<(&str, &str)> = Vec::new();
        let mut used_bearer = false;
        for (k, v) in &c.headers {
            match k.to_ascii_lowercase().as_str() {
                "host" | "content-length" | "connection" => {}
                "x-api-key" => headers.push(("x-api-key", h.key.as_str())),
                "authorization" => {
                    used_bearer = true;
                    headers.push(("authorization", bearer.as_str()));
                }
                _ => headers.push((k.as_str(), v.as_str())),
            }
        }
        let r = h
            .send(c.method.clone(), &c.path_and_query, &headers, c.body.clone())
            .await;
        assert_eq!(r.status, 200, "{}: {}", c.name, String::from_utf8_lossy(&r.body));
        if c.method == Method::HEAD {
            continue; // answered locally
        }
        let log = h.mock_log().await;
        assert_eq!(log.len(), 1, "{}", c.name);
        let seen = &log[0];
        assert_eq!(seen.body_sha256, sha256_hex(&c.body), "{}: body bytes changed", c.name);
        assert_eq!(seen.body_len, c.body.len());
        let (path, query) = c
            .path_and_query
            .split_once('?')
            .map(|(p, q)| (p, Some(q)))
            .unwrap_or((&c.path_and_query, None));
        assert_eq!(seen.path, path, "{}", c.name);
        assert_eq!(seen.query.as_deref(), query, "{}: query string", c.name);
        let openai = path.starts_with("/v1/chat") || path.starts_with("/v1/responses");
        if openai {
            assert_eq!(
                seen.header("authorization"),
                Some(format!("Bearer {REAL_OPENAI}").as_str()),
                "{}",
                c.name
            );
        } else {
            assert_eq!(
                seen.header("x-api-key"),
                Some(REAL_ANTHROPIC),
                "{} (bearer: {used_bearer})",
                c.name
            );
        }
        // Every other header arrives with its value.
        for (k, v) in &c.headers {
            let lk = k.to_ascii_lowercase();
            if !["host", "content-length", "connection", "authorization", "x-api-key"].contains(&lk.as_str()) {
                assert_eq!(seen.header(&lk), Some(v.as_str()), "{}: header {k}", c.name);
            }
        }
        assert!(
            seen.headers.iter().all(|(_, v)| !v.contains(&h.key)),
            "{}: stand-in key leaked upstream",
            c.name
        );
        assert_eq!(
            seen.response_sha256.as_deref(),
            Some(sha256_hex(&r.body).as_str()),
            "{}: response bytes changed",
            c.name
        );
        replayed += 1;
    }
    replayed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_captured_request_passes_byte_identical() {
    let h = Harness::start().await;
    let n = replay_all(&h).await;
    assert!(n >= 8, "replayed {n}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_captured_request_passes_byte_identical_with_gzip_responses() {
    let h = Harness::builder()
        .mock(conduit_gateway::mock::MockOptions {
            compress: Some("gzip".into()),
            ..Default::default()
        })
        .start()
        .await;
    let n = replay_all(&h).await;
    assert!(n >= 8, "replayed {n}");
}

/// Issue 13: every string of real traffic is now scanned — tool definitions, metadata, headers,
/// query — and with secrets in block mode none of the real clients' requests is refused (the
/// scan finds no false secret in them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_captured_request_passes_with_secrets_blocking() {
    let h = Harness::builder()
        .toml("[policies.modes]\n\"secret.*\" = \"block\"\n")
        .start()
        .await;
    let n = replay_all(&h).await;
    assert!(n >= 8, "replayed {n}");
    assert!(
        h.gateway().state.findings.list(100).await.unwrap().is_empty(),
        "no finding in real traffic"
    );
}

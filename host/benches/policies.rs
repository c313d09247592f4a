//! The policy runtime, measured inside wasmtime exactly as the gateway runs it.
//!
//! Run with: `cargo bench -p conduit --bench policies [-- --smoke]`
//!
//! Prints:
//! - recall of the built-in secrets policy on gitleaks' `secret` cases and the share of its
//!   `clean` cases flagged (../shared/bench/gitleaks-cases.jsonl), on each half of the tuned / held-out split, plus
//!   our hard-negative set;
//! - scan throughput of the secrets policy on 1 MiB of mixed prompt text;
//! - the entities policy with 100,000 and 1,000,000 terms: configure time, ms per MiB and the memory it takes;
//! - the whole policy stage (segment extraction + every built-in) per request for a 1 KB body,
//!   the 76 KB Claude Code first turn (../shared/captures) and its repeat (incremental cache).
//!
//! Figures to read, not assertions; `--smoke` runs tiny counts to prove the command works.
#![allow(clippy::expect_used, clippy::unwrap_used)] // a measuring tool: stopping loudly on any failure is right

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use conduit_gateway::policy::runtime::RequestInfo;
use conduit_gateway::policy::segments::Segment;
use conduit_gateway::policy::{Policies, RawPolicies};

#[path = "../../guest-policies/secrets/examples/support/mixed_text.rs"]
mod mixed_text;
use mixed_text::mixed_text;

const SHARED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared");

fn open(toml_text: &str, data: &Path) -> Arc<Policies> {
    let raw: RawPolicies = toml::from_str(toml_text).unwrap();
    let config = raw.validate(data, &|_| None).unwrap();
    Policies::open(config, &[]).unwrap()
}

fn info() -> RequestInfo {
    RequestInfo {
        provider: "anthropic".into(),
        model: Some("claude-sonnet-4-5".into()),
        key_id: "key_bench".into(),
        owner: "bench@corp.example".into(),
        team: Some("payments".into()),
        path: "/v1/messages".into(),
        stream: true,
        estimated_input_tokens: 0,
    }
}

fn one(text: &str) -> Vec<Segment<'static>> {
    vec![Segment::new("text", text.to_string())]
}

/// The median time of `rounds` scans of a fresh text each (`text(round)`: no cache help), in
/// seconds; every scan must succeed and find something.
fn p50_scan(policies: &Policies, rounds: usize, text: impl Fn(usize) -> String) -> f64 {
    let times = (0..rounds)
        .map(|r| {
            let text = text(r);
            let t = Instant::now();
            let out = policies.scan(&info(), &one(&text));
            let elapsed = t.elapsed().as_secs_f64();
            assert!(out.failure.is_none(), "{:?}", out.failure);
            assert!(!out.findings.is_empty());
            elapsed
        })
        .collect();
    percentiles(times).0
}

fn percentiles(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let p = |q: f64| v[((v.len() - 1) as f64 * q) as usize];
    (p(0.5), p(0.99))
}

/// 0 = half A, 1 = half B: the low bit of the FNV-1a hash of the case's text.
fn half(text: &str) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    (h & 1) as usize
}

fn hard_negatives() -> Vec<String> {
    let mut v: Vec<String> = vec![
        "request_id = \"3f2b8c1e-9a4d-4e6f-b2c1-7d8e9f0a1b2c\"".into(),
        "commit 9fceb02d0ae598e95dc970b74767f19372d61af8 (HEAD -> main)".into(),
        "sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".into(),
        "\"integrity\": \"sha512-7zYGVx0lQq1R4a1zXb5h2Y8k3Qx0w1e2r3t4y5u6i7o8p9a0s1d2f3g4h5j6k7l8==\"".into(),
        "resolved \"https://registry.npmjs.org/left-pad/-/left-pad-1.3.0.tgz#5b8a3a7765dfe001261dde915589e782f8c94d1e\"".into(),
        "api_key = os.environ[\"OPENAI_API_KEY\"]".into(),
        "password: ${DB_PASSWORD}".into(),
        "OPENAI_API_KEY=sk-...".into(),
        "ANTHROPIC_API_KEY=<your-api-key>".into(),
        "AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE".into(),
        "token: xxxxxxxxxxxxxxxxxxxxxxxxxxxx".into(),
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl dev@laptop".into(),
        "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEQ2Qx8M6GjYk1G0Z9cN0v1pQn8b3kTn7X\n-----END PUBLIC KEY-----".into(),
        "The access token expires after an hour; use the refresh token to get a new one.".into(),
        "Set max_tokens to 64000 and the secret sauce is good tests.".into(),
        "public_key = \"9Cnzj4p4WGeKLs1Pt8QuKUpRKfFLfRYC9AIKjbJTWit\"".into(),
        "key_length = XSalsa20.key_length".into(),
        "const cacheKey = `${userId}:${page}`;".into(),
        "tool_use_id: toolu_01A09q90qw90lq917835lq9".into(),
        "\"signature\": \"EqQBCkYIBRgCIkB7vmvbqTjQ9VxaUR0wD3sQe2mKxN\"".into(),
        "Bearer token auth: send `Authorization: Bearer <token>`.".into(),
        "version = \"1.2.3-rc.4+build.5\"".into(),
    ];
    // A base64 image data URL and a long base64 blob.
    let b64: String = (0..2000)
        .map(|i| b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"[(i * 7919) % 64] as char)
        .collect();
    v.push(format!("data:image/png;base64,{b64}"));
    v.push(format!("attachment: {b64}"));
    v
}

fn main() {
    let smoke = std::env::args().any(|a| a == "--smoke");
    let data = tempfile::tempdir().unwrap();

    // 1. Recall on gitleaks' cases, inside wasmtime.
    let secrets = open(
        "[builtin.entities]\nenabled = false\n[builtin.models]\nenabled = false\n",
        data.path(),
    );
    let cases = std::fs::read_to_string(format!("{SHARED}/bench/gitleaks-cases.jsonl")).expect("../shared/bench");
    // [half][secret, found, clean, flagged]; the halves are guest-policies/secrets/tests/gitleaks.rs's
    // split (A tuned on, B held out).
    let mut tally = [[0u32; 4]; 2];
    let secret_texts: std::collections::HashSet<String> = cases
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|c| c["expect"] == "secret")
        .map(|c| c["text"].as_str().unwrap().to_string())
        .collect();
    let t = Instant::now();
    let limit = if smoke { 200 } else { usize::MAX };
    for line in cases.lines().take(limit) {
        let c: serde_json::Value = serde_json::from_str(line).unwrap();
        let text = c["text"].as_str().unwrap();
        if text.trim().is_empty() {
            continue;
        }
        let hit = !secrets.scan(&info(), &one(text)).findings.is_empty();
        let t = &mut tally[half(text)];
        if c["expect"] == "secret" {
            t[0] += 1;
            t[1] += u32::from(hit);
        } else if !secret_texts.contains(text) {
            t[2] += 1;
            t[3] += u32::from(hit);
        }
    }
    let corpus_ms = t.elapsed().as_secs_f64() * 1e3;
    let negatives = hard_negatives();
    let neg_flagged = negatives
        .iter()
        .filter(|n| !secrets.scan(&info(), &one(n)).findings.is_empty())
        .count();
    println!("secrets policy (in wasmtime) on gitleaks cases");
    for (name, [secret, found, clean, flagged]) in ["A (tuned on)", "B (held out)"].iter().zip(tally) {
        println!(
            "  half {name}: recall {found}/{secret} = {:.4}, clean flagged {flagged}/{clean} = {:.4}",
            f64::from(found) / f64::from(secret.max(1)),
            f64::from(flagged) / f64::from(clean.max(1))
        );
    }
    println!("  (what the flags are: cargo test -p conduit-policy-secrets --test gitleaks -- --nocapture)");
    println!("  hard negatives    {neg_flagged}/{} flagged", negatives.len());
    println!("  corpus time       {corpus_ms:.0} ms");

    // 2. Throughput on 1 MiB of mixed prompt text (a fresh text each round: no cache help).
    let mib = 1 << 20;
    let base = mixed_text(mib);
    let rounds = if smoke { 2 } else { 20 };
    let p50 = p50_scan(&secrets, rounds, |r| format!("{base}{r}"));
    println!(
        "\nsecrets scan, 1 MiB mixed text: {:.2} ms p50 = {:.0} MB/s",
        p50 * 1e3,
        1.048576 / p50
    );

    // 3. Entities with 100,000 terms, then 1,000,000 (with room for its 85 MB configuration).
    let sizes: &[usize] = if smoke { &[1_000] } else { &[100_000, 1_000_000] };
    for &n_terms in sizes {
        let terms: Vec<serde_json::Value> = (0..n_terms)
            .map(|i| serde_json::json!({"id": format!("cust-{i:07}"), "term": format!("Customer {i:07} Holdings"), "category": "entity.customer"}))
            .collect();
        let terms_file = data.path().join(format!("terms-{n_terms}.json"));
        std::fs::write(&terms_file, serde_json::to_string(&terms).unwrap()).unwrap();
        drop(terms);
        let t = Instant::now();
        let entities = open(
            &format!(
                "memory_mib = {}\n[builtin.secrets]\nenabled = false\n[builtin.models]\nenabled = false\n[builtin.entities.config]\nterms_file = {:?}\n",
                if n_terms > 100_000 { 1024 } else { 64 },
                terms_file.display().to_string()
            ),
            data.path(),
        );
        let load_ms = t.elapsed().as_secs_f64() * 1e3;
        let p50 = p50_scan(&entities, rounds, |r| format!("{base} customer-0000{r:03} holdings"));
        let memory = entities.largest_instance_memory();
        println!(
            "\nentities, {n_terms} terms: load + configure {load_ms:.0} ms, {:.1} MiB linear memory per instance, scan {:.2} ms per MiB",
            memory as f64 / (1 << 20) as f64,
            p50 * 1e3
        );
    }

    // 4. The stage per request: extraction + all built-ins, first turn and repeat.
    let all = open("", data.path());
    let capture = |name: &str| -> Vec<u8> {
        let c: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(format!("{SHARED}/captures/{name}")).unwrap()).unwrap();
        serde_json::to_vec(&c["body"]).unwrap()
    };
    let cc_body = capture("claudecode_twoturn_002.json"); // first turn, ~76 KB
    let cc_next = capture("claudecode_twoturn_003.json"); // the next turn: the same plus a tool round
    let small = serde_json::json!({"model": "claude-sonnet-4-5", "max_tokens": 1024,
        "messages": [{"role": "user", "content": "x".repeat(900)}]});
    let small_body = serde_json::to_vec(&small).unwrap();
    let iterations = if smoke { 20 } else { 2000 };
    println!("\npolicy stage per request (extract + secrets + entities + models), µs");
    println!("  {:<40} {:>8} {:>8}", "body", "p50", "p99");
    for (name, body, previous) in [
        ("1 KB, first turn", &small_body, None),
        ("Claude Code 76 KB, first turn", &cc_body, None),
        ("Claude Code next turn (first turn cached)", &cc_next, Some(&cc_body)),
        ("Claude Code 76 KB, repeated (all cached)", &cc_body, Some(&cc_body)),
    ] {
        let mut times = Vec::with_capacity(iterations);
        for _ in 0..iterations {
            all.clear_cache();
            if let Some(prev) = previous {
                all.scan(&info(), &conduit_gateway::content::segments_of(prev));
            }
            let t = Instant::now();
            let segs = conduit_gateway::content::segments_of(body);
            let out = all.scan(&info(), &segs);
            times.push(t.elapsed().as_secs_f64() * 1e6);
            std::hint::black_box(out);
        }
        let segs = conduit_gateway::content::segments_of(body);
        let text: usize = segs.iter().map(|s| s.text.len()).sum();
        let (p50, p99) = percentiles(times);
        println!(
            "  {:<40} {:>8.0} {:>8.0}   ({} bytes, {} segments, {} bytes of text)",
            name,
            p50,
            p99,
            body.len(),
            segs.len(),
            text
        );
    }
}

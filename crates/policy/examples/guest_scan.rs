//! A quick loop for work on the built-in guests: the secrets and entities policies in wasmtime on
//! 1 MiB of the policies benchmark's mixed text, without building the gateway.
//! `cargo run --release -p conduit-policy --example guest_scan`
//! The models policy (which reads no text) gives the floor: what passing 1 MiB in costs.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a measuring tool

use std::time::Instant;

use conduit_policy::runtime::RequestInfo;
use conduit_policy::segments::Segment;
use conduit_policy::{Policies, RawPolicies};

fn mixed_text(target: usize) -> String {
    let prose = "The parser keeps a cursor into the buffer; when a token spans two reads it copies the tail and retries. Refresh the access token before it expires, and never log the token itself. ";
    let code = "fn handle(req: Request) -> Result<Response> {\n    let token = req.header(\"authorization\")?;\n    let user = db.lookup(&token_hash(token))?;\n    Ok(Response::json(&user))\n}\n";
    let log = "2026-11-27T07:00:01Z INFO request_id=req_8c5c93b4 status=200 duration_ms=12.4 key_id=key_2f9c1a\n";
    let json = "{\"id\":\"3f2b8c1e-9a4d-4e6f-b2c1-7d8e9f0a1b2c\",\"sha\":\"9fceb02d0ae598e95dc970b74767f19372d61af8\",\"max_tokens\":64000}\n";
    let secret = "export GITHUB_TOKEN=ghp_R8xk2LmQ9vTz4WcY7nB3pJ6hF1sD5gA0eK2u\n";
    let mut s = String::with_capacity(target + 1024);
    let mut i = 0;
    while s.len() < target {
        s.push_str(match i % 9 {
            0..=3 => prose,
            4 | 5 => code,
            6 => log,
            7 => json,
            _ if i % 90 == 8 => secret,
            _ => prose,
        });
        i += 1;
    }
    s
}

fn main() {
    let data = tempfile::tempdir().unwrap();
    let info = RequestInfo {
        provider: "anthropic".into(),
        model: Some("claude-sonnet-4-5".into()),
        key_id: "key_bench".into(),
        owner: "bench@corp.example".into(),
        team: None,
        path: "/v1/messages".into(),
        stream: true,
        estimated_input_tokens: 0,
    };
    let base = mixed_text(1 << 20);
    let terms: Vec<serde_json::Value> = (0..100_000)
        .map(|i| serde_json::json!({"id": format!("cust-{i:07}"), "term": format!("Customer {i:07} Holdings"), "category": "entity.customer"}))
        .collect();
    let terms_file = data.path().join("terms.json");
    std::fs::write(&terms_file, serde_json::to_string(&terms).unwrap()).unwrap();
    let entities = format!(
        "[builtin.secrets]\nenabled = false\n[builtin.models]\nenabled = false\n[builtin.entities.config]\nterms_file = {:?}\n",
        terms_file.display().to_string()
    );
    for (name, toml_text) in [
        ("entities 100k", entities.as_str()),
        (
            "models (floor)",
            "[builtin.secrets]\nenabled = false\n[builtin.entities]\nenabled = false\n",
        ),
        (
            "secrets",
            "[builtin.entities]\nenabled = false\n[builtin.models]\nenabled = false\n",
        ),
        (
            "secrets, no generic",
            "[builtin.entities]\nenabled = false\n[builtin.models]\nenabled = false\n[builtin.secrets.config]\ngeneric = false\n",
        ),
    ] {
        let raw: RawPolicies = toml::from_str(toml_text).unwrap();
        let t = Instant::now();
        let policies = Policies::open(raw.validate(data.path(), &|_| None).unwrap(), &[]).unwrap();
        let open_ms = t.elapsed().as_secs_f64() * 1e3;
        let mut times = Vec::new();
        for r in 0..15 {
            let text = format!("{base}{r}");
            let segments = vec![Segment::new("text", text)];
            let t = Instant::now();
            let out = policies.scan(&info, &segments);
            times.push(t.elapsed().as_secs_f64());
            assert!(out.failure.is_none(), "{:?}", out.failure);
        }
        times.sort_by(f64::total_cmp);
        let p50 = times[times.len() / 2];
        let memory = policies
            .memory_by_policy()
            .into_iter()
            .map(|(_, m)| m)
            .max()
            .unwrap_or(0);
        println!(
            "{name:>20}: open {open_ms:.0} ms, 1 MiB scan p50 {:.2} ms = {:.0} MB/s, {:.1} MiB linear memory",
            p50 * 1e3,
            1.048576 / p50,
            memory as f64 / f64::from(1 << 20)
        );
    }
}

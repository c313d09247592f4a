//! A quick loop for work on the built-in guests: the secrets and entities policies in wasmtime on
//! 1 MiB of the policies benchmark's mixed text, without building the gateway.
//! `cargo run --release -p conduit-policy --example guest_scan`
//! The models policy (which reads no text) gives the floor: what passing 1 MiB in costs.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a measuring tool

use std::time::Instant;

use conduit_policy::runtime::RequestInfo;
use conduit_policy::segments::Segment;
use conduit_policy::{Policies, RawPolicies};

#[path = "../../../guest-policies/secrets/examples/support/mixed_text.rs"]
mod mixed_text;
use mixed_text::mixed_text;

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
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get()).min(4);
        while policies.idle_instances().iter().any(|(_, n)| *n < cores) {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let warm_ms = t.elapsed().as_secs_f64() * 1e3 - open_ms;
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
        let memory = policies.largest_instance_memory();
        println!(
            "{name:>20}: open {open_ms:.0} ms (+{warm_ms:.0} ms in the background to {cores} idle instances), 1 MiB scan p50 {:.2} ms = {:.0} MB/s, {:.1} MiB linear memory",
            p50 * 1e3,
            1.048576 / p50,
            memory as f64 / f64::from(1 << 20)
        );
    }
}

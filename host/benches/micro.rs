//! Micro-benchmarks (divan) of the hot pieces of a request, so a regression shows where it happens:
//! segment extraction, the policy stage per size (first sight and cached), the usage tap, admission,
//! the audit record's encoding and chaining, and the Bedrock path (SigV4 signing, the event-stream
//! tap, the Anthropic → Bedrock body translation and event-stream → SSE re-framing).
//!
//! Run with: `cargo bench -p conduit --bench micro` (divan's options after `--`, e.g.
//! `-- policy` to filter, `--sample-count 1000`). Figures are read, never asserted.
#![allow(clippy::expect_used, clippy::unwrap_used)] // a measuring tool: stopping loudly on any failure is right

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use conduit_gateway::audit::AuditRecord;
use conduit_gateway::policy::runtime::RequestInfo;
use conduit_gateway::policy::segments::Segment;
use conduit_gateway::policy::{Policies, RawPolicies};
use conduit_gateway::protocol::Protocol;
use conduit_gateway::ratelimit::RateLimiter;
use conduit_gateway::records::{BudgetLimit, Principal, RateLimits};
use conduit_gateway::usage::UsageTap;

fn main() {
    divan::main();
}

const CAPTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/captures");

/// The body of a capture, as its client sent it.
fn capture(name: &str) -> Bytes {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(format!("{CAPTURES}/{name}")).unwrap()).unwrap();
    Bytes::from(serde_json::to_vec(&v["body"]).unwrap())
}

fn body_kib(kib: usize) -> Bytes {
    let text = "The parser keeps a cursor into the buffer and retries on a split token. ".repeat(kib * 1024 / 72);
    Bytes::from(
        serde_json::json!({"model": "claude-sonnet-4-5", "max_tokens": 512, "messages": [{"role": "user", "content": text}]})
            .to_string(),
    )
}

// --- segment extraction -----------------------------------------------------------------------

#[divan::bench(args = ["4 KiB", "Claude Code 76 KB"])]
fn segments_extract(bencher: divan::Bencher, which: &str) {
    let body = match which {
        "4 KiB" => body_kib(4),
        _ => capture("claudecode_basic_002.json"),
    };
    bencher
        .counter(divan::counter::BytesCount::new(body.len()))
        .bench(|| conduit_gateway::content::segments_of(divan::black_box(&body)));
}

// --- the policy stage -------------------------------------------------------------------------

fn policies() -> &'static Arc<Policies> {
    static P: OnceLock<(Arc<Policies>, tempfile::TempDir)> = OnceLock::new();
    &P.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let raw: RawPolicies = toml::from_str("").unwrap();
        let config = raw.validate(dir.path(), &|_| None).unwrap();
        (Policies::open(config, &[]).unwrap(), dir)
    })
    .0
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

fn text_segments(bytes: usize) -> Vec<Segment<'static>> {
    let line = "fn main() { let token = read_config(\"db.url\"); println!(\"{}\", token.len()); } // retry on split\n";
    vec![Segment::new(
        "messages[0].content",
        line.repeat(bytes / line.len() + 1)[..bytes].to_string(),
    )]
}

/// All built-in policies on text they have not seen (the verdict cache cleared each time).
#[divan::bench(args = [1024, 16 * 1024, 76 * 1024])]
fn policy_stage_first_sight(bencher: divan::Bencher, bytes: usize) {
    let (p, segs, info) = (policies(), text_segments(bytes), info());
    bencher.counter(divan::counter::BytesCount::new(bytes)).bench(|| {
        p.clear_cache();
        p.scan(&info, &segs)
    });
}

/// The same text again: the incremental cache answers (an agent's resent conversation).
#[divan::bench(args = [1024, 76 * 1024])]
fn policy_stage_cached(bencher: divan::Bencher, bytes: usize) {
    let (p, segs, info) = (policies(), text_segments(bytes), info());
    p.scan(&info, &segs);
    bencher.bench(|| p.scan(&info, &segs));
}

// --- the usage tap ----------------------------------------------------------------------------

fn mock_reply(stream: bool) -> Vec<Bytes> {
    let mut h = http::HeaderMap::new();
    h.insert("anthropic-version", "2023-06-01".parse().unwrap());
    let body = format!(r#"{{"model":"claude-sonnet-4-5","max_tokens":512,"stream":{stream},"messages":[]}}"#);
    conduit_gateway::mock::payload::reply(&http::Method::POST, "/v1/messages", &h, body.as_bytes(), "ok", false).chunks
}

#[divan::bench]
fn usage_tap_anthropic_sse(bencher: divan::Bencher) {
    let chunks = mock_reply(true);
    bencher.bench(|| {
        let mut tap = UsageTap::new(Protocol::Anthropic, Some("text/event-stream"), None);
        for c in &chunks {
            tap.observe(c);
        }
        tap.finish()
    });
}

#[divan::bench]
fn usage_tap_anthropic_json(bencher: divan::Bencher) {
    let body = mock_reply(false).concat();
    bencher.bench(|| {
        let mut tap = UsageTap::new(Protocol::Anthropic, Some("application/json"), None);
        tap.observe(&body);
        tap.finish()
    });
}

// --- the Bedrock path -------------------------------------------------------------------------

/// Claude Code's Bedrock turn (85 KB) and the mock Bedrock's streamed answer to it.
fn bedrock_turn() -> (Bytes, Vec<Bytes>) {
    let body = capture("claudecode_bedrock_013.json");
    let op = conduit_gateway::mock::bedrock::Op::Runtime {
        model: "us.anthropic.claude-sonnet-4-5-20250929-v1:0".into(),
        operation: "invoke-with-response-stream".into(),
    };
    let frames = conduit_gateway::mock::bedrock::reply(&op, &body, "ok", false).chunks;
    (body, frames)
}

#[divan::bench]
fn sigv4_sign_claude_code_turn(bencher: divan::Bencher) {
    let (body, _) = bedrock_turn();
    let cred =
        conduit_gateway::sigv4::AwsCredential::parse("AKIAIOSFODNN7EXAMPLE:wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
            .unwrap();
    let uri: http::Uri = "https://bedrock-runtime.us-east-1.amazonaws.com/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke-with-response-stream"
        .parse()
        .unwrap();
    bencher.counter(divan::counter::BytesCount::new(body.len())).bench(|| {
        conduit_gateway::sigv4::sign_request(
            &cred,
            "us-east-1",
            &http::Method::POST,
            &uri,
            &[("content-type", "application/json"), ("accept", "application/json")],
            divan::black_box(&body),
            std::time::SystemTime::now(),
        )
        .unwrap()
    });
}

#[divan::bench]
fn usage_tap_bedrock_event_stream(bencher: divan::Bencher) {
    let (_, frames) = bedrock_turn();
    bencher.bench(|| {
        let mut tap = UsageTap::new(Protocol::Bedrock, Some("application/vnd.amazon.eventstream"), None);
        for f in &frames {
            tap.observe(f);
        }
        tap.finish()
    });
}

#[divan::bench]
fn bedrock_translate_claude_code_body(bencher: divan::Bencher) {
    let body = capture("claudecode_basic_002.json");
    let betas: Vec<String> = conduit_gateway::bedrock::DEFAULT_BETAS
        .iter()
        .map(|s| s.to_string())
        .collect();
    bencher.counter(divan::counter::BytesCount::new(body.len())).bench(|| {
        conduit_gateway::bedrock::request_body(
            divan::black_box(&body),
            Some("claude-code-20250219,interleaved-thinking-2025-05-14,context-management-2025-06-27"),
            &betas,
        )
        .unwrap()
    });
}

#[divan::bench]
fn bedrock_event_stream_to_sse(bencher: divan::Bencher) {
    let (_, frames) = bedrock_turn();
    bencher.bench(|| {
        let mut decoder = conduit_gateway::eventstream::Decoder::default();
        let mut out = bytes::BytesMut::new();
        for f in &frames {
            for m in decoder.push(f).unwrap() {
                conduit_gateway::bedrock::sse_event(&m, &mut out);
            }
        }
        out
    });
}

// --- admission --------------------------------------------------------------------------------

#[divan::bench]
fn budget_reserve_and_settle(bencher: divan::Bencher) {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let limit = BudgetLimit {
        daily_micros: Some(u64::MAX / 4),
        monthly_micros: Some(u64::MAX / 4),
    };
    let scopes = [
        ("key:key_bench".to_string(), limit),
        ("team:payments".to_string(), limit),
        ("org".to_string(), limit),
    ];
    let state = runtime.block_on(conduit_state_sled::open(dir.path(), &scopes)).unwrap();
    let payer = Principal {
        key_id: "key_bench".into(),
        owner: "bench@corp.example".into(),
        team: Some("payments".into()),
        limits: RateLimits::default(),
        session: None,
    };
    let now = conduit_gateway::clock::now_unix();
    bencher.bench(|| {
        let held = runtime.block_on(state.budgets.reserve(&payer, now, 2100));
        held.unwrap().unwrap().settle(2100)
    });
}

#[divan::bench]
fn rate_limit_admit_and_settle(bencher: divan::Bencher) {
    let limiter = Arc::new(RateLimiter::default());
    let limits = RateLimits {
        rpm: Some(u32::MAX),
        tpm: Some(u64::MAX / 4),
        max_streams: Some(u32::MAX),
    };
    bencher.bench(|| {
        let mut t = limiter.admit("key_bench", limits, true, 250).unwrap().unwrap();
        let slot = t.take_stream_slot();
        t.settle(300);
        drop(slot);
    });
}

// --- audit ------------------------------------------------------------------------------------

/// What the writer thread does per record: encode the line and hash it into the chain.
#[divan::bench]
fn audit_record_encode_and_chain(bencher: divan::Bencher) {
    let record = AuditRecord {
        request_id: "req_3bbda0ec00000009c9".into(),
        key_id: Some("key_31c4dcc80fbf".into()),
        team: Some("payments".into()),
        client: "claude-code".into(),
        provider: Some("anthropic".into()),
        model: Some("claude-sonnet-4-5-20250929".into()),
        path: "/v1/messages".into(),
        status: 200,
        input_tokens: 1200,
        output_tokens: 400,
        cache_read_tokens: 70_000,
        cost_micros: Some(31_337),
        ..AuditRecord::default()
    };
    let mut buf = Vec::with_capacity(2048);
    bencher.bench_local(|| {
        buf.clear();
        serde_json::to_writer(&mut buf, &record).unwrap();
        conduit_gateway::audit::line_hash(&buf)
    });
}

//! Added latency through Conduit vs straight to the mock upstream, measured in the same run.
//!
//! Run with: `cargo bench -p conduit --bench latency -- [--requests N] [--body-kb K] [--capture FILE] [--stream]`
//!
//! Concurrency 1. Requests alternate direct / through the gateway so both see the same machine
//! noise; each latency is request start → last response byte. The mock, the gateway and the load
//! loop run on separate single-threaded runtimes (threads), like separate processes would.
//! Prints p50 / p99 / p99.9 for both paths and the difference; this is a figure to read, not an
//! assertion (the suite never times anything).

#![allow(clippy::expect_used, clippy::unwrap_used)] // a measuring tool: stopping loudly on any failure is right

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use zeroize::Zeroizing;

struct Args {
    requests: usize,
    body_kb: usize,
    capture: Option<String>,
    stream: bool,
    event_delay_ms: u64,
    nginx: bool,
}

fn parse_args() -> Args {
    let mut a = Args {
        requests: 5000,
        body_kb: 4,
        capture: None,
        stream: false,
        event_delay_ms: 0,
        nginx: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--requests" => a.requests = it.next().and_then(|v| v.parse().ok()).expect("--requests N"),
            "--body-kb" => a.body_kb = it.next().and_then(|v| v.parse().ok()).expect("--body-kb K"),
            "--capture" => a.capture = it.next(),
            "--stream" => a.stream = true,
            "--no-nginx" => a.nginx = false,
            "--event-delay-ms" => {
                a.event_delay_ms = it.next().and_then(|v| v.parse().ok()).expect("--event-delay-ms N")
            }
            "--bench" => {}
            "--help" | "-h" => {
                println!(
                    "latency [--requests N] [--body-kb K] [--capture FILE.json] [--stream [--event-delay-ms N]] [--no-nginx]"
                );
                std::process::exit(0);
            }
            other => panic!("unknown argument {other:?}; see --help"),
        }
    }
    a
}

/// A Messages body of about `kb` KiB (or a capture's body, re-serialised compactly).
fn body(args: &Args) -> Bytes {
    if let Some(path) = &args.capture {
        // `cargo bench` runs in host/: accept paths relative to the repository root too.
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let file = if std::path::Path::new(path).exists() {
            path.into()
        } else {
            root.join(path)
        };
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&file).expect("capture file")).expect("capture JSON");
        let mut b = v["body"].clone();
        b["stream"] = serde_json::Value::Bool(args.stream);
        return Bytes::from(serde_json::to_vec(&b).unwrap_or_default());
    }
    let filler = "lorem ipsum dolor sit amet ".repeat(args.body_kb * 1024 / 27);
    Bytes::from(
        serde_json::json!({"model": "claude-sonnet-4-5", "max_tokens": 256, "stream": args.stream,
                           "messages": [{"role": "user", "content": filler}]})
        .to_string(),
    )
}

fn runtime_thread<F: std::future::Future<Output = ()> + Send + 'static>(name: &str, f: F) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || rt.block_on(f))
        .expect("thread");
}

/// One request: total time, time to the first body frame, and the gaps between frames.
struct Sample {
    total: Duration,
    first_byte: Duration,
    gaps: Vec<Duration>,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

fn main() {
    let args = parse_args();
    let body = body(&args);

    let (tx, rx) = std::sync::mpsc::channel();
    runtime_thread("mock", async move {
        let mock = conduit_gateway::mock::start("127.0.0.1:0".parse().expect("addr"), Default::default())
            .await
            .expect("mock");
        tx.send(mock.addr).expect("send");
        std::future::pending::<()>().await;
    });
    let mock_addr = rx.recv().expect("mock address");

    let data = tempfile::tempdir().expect("tempdir");
    let (_, master) = conduit_gateway::seal::MasterKey::generate().expect("master key");
    let env: std::collections::HashMap<&str, String> = [
        ("CONDUIT_LISTEN", "127.0.0.1:0".to_string()),
        ("CONDUIT_ADMIN_LISTEN", "127.0.0.1:0".to_string()),
        ("CONDUIT_DATA_DIR", data.path().display().to_string()),
        ("CONDUIT_MASTER_KEY", master.to_string()),
        ("CONDUIT_ADMIN_TOKEN", "bench-admin-token-0123456789".to_string()),
        ("UPSTREAM_ANTHROPIC_URL", format!("http://{mock_addr}")),
        ("CONDUIT_LOG", "warn".to_string()),
    ]
    .into_iter()
    .collect();
    let mut raw = conduit_gateway::config::RawConfig::default();
    conduit_gateway::mock::forward_control_headers(&mut raw);
    let config = raw.validate(&|k| env.get(k).cloned()).expect("config");
    let (tx, rx) = std::sync::mpsc::channel();
    // The gateway is opened on the runtime it serves from (its ledger writer is a task there).
    runtime_thread("gateway", async move {
        let gateway = conduit_gateway::Gateway::open(config).await.expect("gateway");
        gateway
            .set_credential("anthropic", Zeroizing::new("sk-ant-bench".into()))
            .await
            .expect("credential");
        let key = conduit_gateway::operator::create_key(
            gateway.state.keys.as_ref(),
            conduit_gateway::operator::NewKeyRequest {
                owner: "bench@corp.example".into(),
                team: None,
                name: None,
                expires_at: None,
                limits: Default::default(),
            },
        )
        .await
        .expect("key")
        .key;
        let running = conduit_gateway::server::start(gateway).await.expect("start");
        tx.send((running.addr, key)).expect("send");
        std::future::pending::<()>().await;
    });
    let (gateway_addr, key) = rx.recv().expect("gateway address");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let nginx = if args.nginx { Nginx::start(mock_addr) } else { None };
    let mut paths = vec![("direct to mock", mock_addr)];
    if let Some(n) = &nginx {
        paths.push(("through nginx", n.addr));
    }
    paths.push(("through conduit", gateway_addr));
    let results: Vec<Vec<Sample>> = rt.block_on(async {
        let client: Client<HttpConnector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        let delay = args.event_delay_ms.to_string();
        let send = |addr: std::net::SocketAddr| {
            let req = Request::post(format!("http://{addr}/v1/messages"))
                .header("x-api-key", &key)
                .header("anthropic-version", "2023-06-01")
                .header("content-type", "application/json")
                .header("x-mock-delay-ms", &delay)
                .body(Full::new(body.clone()))
                .expect("request");
            let client = client.clone();
            async move {
                let t = Instant::now();
                let resp = client.request(req).await.expect("response");
                assert!(resp.status().is_success(), "status {}", resp.status());
                let mut body = resp.into_body();
                let (mut first, mut last, mut gaps) = (None, None, Vec::new());
                while let Some(frame) = body.frame().await {
                    frame.expect("frame");
                    let now = t.elapsed();
                    first.get_or_insert(now);
                    if let Some(prev) = last {
                        gaps.push(now - prev);
                    }
                    last = Some(now);
                }
                Sample {
                    total: t.elapsed(),
                    first_byte: first.unwrap_or_default(),
                    gaps,
                }
            }
        };
        for _ in 0..(args.requests / 10).max(50) {
            for (_, addr) in &paths {
                send(*addr).await;
            }
        }
        let mut results: Vec<Vec<Sample>> = paths.iter().map(|_| Vec::with_capacity(args.requests)).collect();
        for _ in 0..args.requests {
            for (i, (_, addr)) in paths.iter().enumerate() {
                results[i].push(send(*addr).await);
            }
        }
        results
    });
    drop(nginx);
    let pick = |v: &[Sample], f: fn(&Sample) -> Vec<Duration>| {
        let mut all: Vec<Duration> = v.iter().flat_map(f).collect();
        all.sort();
        all
    };
    let print_rows = |title: &str, f: fn(&Sample) -> Vec<Duration>| {
        let sorted: Vec<Vec<Duration>> = results.iter().map(|r| pick(r, f)).collect();
        println!("{title:<22} {:>10} {:>10} {:>10}", "p50", "p99", "p99.9");
        let q = |v: &[Duration]| [0.5, 0.99, 0.999].map(|p| percentile(v, p));
        for ((name, _), v) in paths.iter().zip(&sorted) {
            let [a, b, c] = q(v);
            println!("{name:<22} {a:>10.1} {b:>10.1} {c:>10.1}");
        }
        let direct = q(&sorted[0]);
        let mut added = Vec::new();
        for ((name, _), v) in paths.iter().zip(&sorted).skip(1) {
            let [a, b, c] = q(v);
            let d = [a - direct[0], b - direct[1], c - direct[2]];
            println!(
                "{:<22} {:>10.1} {:>10.1} {:>10.1}",
                format!("added {}", name.trim_start_matches("through ")),
                d[0],
                d[1],
                d[2]
            );
            added.push(d);
        }
        if added.len() == 2 {
            let r = |i: usize| added[1][i] / added[0][i];
            println!(
                "{:<22} {:>10.2} {:>10.2} {:>10.2}",
                "conduit ÷ nginx added",
                r(0),
                r(1),
                r(2)
            );
        }
    };
    if args.stream && args.event_delay_ms > 0 {
        println!(
            "streaming, c=1, {} requests per path, events {} ms apart",
            args.requests, args.event_delay_ms
        );
        print_rows("first byte, µs", |s| vec![s.first_byte]);
        print_rows("gap between events, µs", |s| s.gaps.clone());
        return;
    }
    let what = args
        .capture
        .as_deref()
        .map(|c| c.rsplit('/').next().unwrap_or(c).to_string())
        .unwrap_or(format!("{} KiB", args.body_kb));
    println!(
        "added latency, c=1, {} requests per path, body {} ({} bytes), {}",
        args.requests,
        what,
        body.len(),
        if args.stream { "SSE response" } else { "JSON response" }
    );
    print_rows("µs", |s| vec![s.total]);
}

#[path = "support/nginx.rs"]
mod nginx;
use nginx::Nginx;

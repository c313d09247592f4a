//! The benchmark suite: Conduit against the direct path, nginx and (when installed) LiteLLM and
//! Portkey, all in front of the same mock provider, measured side by side in one run.
//!
//! Run with: `cargo bench -p conduit --bench suite -- [all|latency|throughput|rate|stream|memory|overload]
//! [--smoke] [--soak-minutes N (fractions too)] [--out FILE.json]` (see docs/performance.md).
//!
//! Every system runs as its own process pinned with `taskset` to CPU 1; the mock (the `conduit-mock`
//! binary) and this load generator share CPU 0. Conduit is the release `conduit serve` with its
//! default policy set. The load generator opens one HTTP/1.1 keep-alive connection per concurrent
//! client. Measurements:
//! - latency at c=1 (4 KiB body; Claude Code's 76 KB first turn; its repeat turn): systems alternate
//!   request by request, so machine noise hits all alike;
//! - throughput, closed loop at c=16 and c=64;
//! - the highest fixed rate each system sustains with p99 under 1 ms and under 10 ms — open loop,
//!   latency measured from each request's scheduled start (no coordinated omission);
//! - streaming: added time to first byte and added gap between SSE events, and a SHA-256 check that
//!   the client received exactly the bytes the mock sent;
//! - memory: the gateway's RSS idle and with 1,000 open streams, and the slope over a soak;
//! - overload: a Conduit with `limits.max_in_flight = 64`, open loop at twice its highest rate with
//!   p99 under 10 ms — what is admitted and how fast, what is shed (503) and how fast, RSS.
//!
//! Peers (LiteLLM, Portkey) are measured in passes of their own and are stopped (SIGSTOP) while any
//! other system is measured: an idle Python or Node gateway still takes CPU on the shared core.
//! Prints one table with ratios to direct, to nginx and to each peer, and writes JSON. Figures are
//! read, never asserted.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a measuring tool: stopping loudly on any failure is right

#[path = "support/nginx.rs"]
mod nginx;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;

const GATEWAY_CPU: &str = "1";
const LOAD_CPU: &str = "0";

struct Args {
    what: String,
    smoke: bool,
    no_peers: bool,
    soak_minutes: f64,
    out: String,
}

fn parse_args() -> Args {
    let mut a = Args {
        what: "all".into(),
        smoke: false,
        no_peers: false,
        soak_minutes: 0.0,
        out: concat!(env!("CARGO_MANIFEST_DIR"), "/../target/bench-suite.json").into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--smoke" => a.smoke = true,
            "--no-peers" => a.no_peers = true,
            "--soak-minutes" => a.soak_minutes = it.next().and_then(|v| v.parse().ok()).expect("--soak-minutes N"),
            "--out" => a.out = it.next().expect("--out FILE"),
            "--bench" => {}
            "all" | "latency" | "throughput" | "rate" | "stream" | "memory" | "replicas" | "overload" | "bedrock"
            | "twocore" => a.what = arg,
            "--help" | "-h" => {
                println!(
                    "suite [all|latency|throughput|rate|stream|memory|replicas|overload|bedrock|twocore] [--smoke] [--no-peers] [--soak-minutes N] [--out FILE.json]\n(SUITE_NO_PIN=1: no taskset pinning; PORTKEY_DIR: where @portkey-ai/gateway is installed)"
                );
                std::process::exit(0);
            }
            other => panic!("unknown argument {other:?}; see --help"),
        }
    }
    a
}

/// How big each measurement is.
struct Sizes {
    latency_requests: usize,
    throughput_secs: f64,
    rate_secs: f64,
    rate_steps: usize,
    stream_requests: usize,
    streams: usize,
}

impl Sizes {
    fn of(smoke: bool) -> Sizes {
        if smoke {
            Sizes {
                latency_requests: 30,
                throughput_secs: 0.3,
                rate_secs: 0.3,
                rate_steps: 2,
                stream_requests: 3,
                streams: 50,
            }
        } else {
            Sizes {
                latency_requests: 2000,
                throughput_secs: 5.0,
                rate_secs: 3.0,
                rate_steps: 5,
                stream_requests: 100,
                streams: 1000,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The systems under test

/// Where and how to send a request to one system.
#[derive(Clone)]
struct Target {
    name: String,
    addr: SocketAddr,
    /// Headers it needs (the stand-in key, a peer's routing headers).
    headers: Vec<(String, String)>,
    /// What this system is sent instead of the pass's workload (the Anthropic → Bedrock gateway
    /// is sent the Anthropic form of what the others get in Bedrock's).
    instead: Option<Workload>,
}

struct System {
    target: Target,
    pid: Option<u32>,
    _process: Option<Child>,
    _keep: Vec<Box<dyn std::any::Any>>,
}

impl std::ops::Deref for System {
    type Target = Target;
    fn deref(&self) -> &Target {
        &self.target
    }
}

fn system(
    name: &str,
    addr: SocketAddr,
    headers: Vec<(String, String)>,
    process: Option<Child>,
    pid: Option<u32>,
) -> System {
    System {
        target: Target {
            name: name.into(),
            addr,
            headers,
            instead: None,
        },
        pid: pid.or(process.as_ref().map(Child::id)),
        _process: process,
        _keep: Vec::new(),
    }
}

impl Drop for System {
    fn drop(&mut self) {
        if let Some(c) = self._process.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_listening(addr: SocketAddr, what: &str, secs: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while std::net::TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            eprintln!("{what} did not start listening on {addr} within {secs} s");
            return false;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    true
}

/// `program` under `taskset -c cpus`, unless `SUITE_NO_PIN` is set.
fn pinned(cpus: &str, program: &str) -> Command {
    if std::env::var_os("SUITE_NO_PIN").is_some() {
        return Command::new(program);
    }
    let mut c = Command::new("taskset");
    c.args(["-c", cpus, program]);
    c
}

fn start_mock() -> (Child, SocketAddr) {
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let child = pinned(LOAD_CPU, env!("CARGO_BIN_EXE_conduit-mock"))
        .args(["--listen", &addr.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("conduit-mock");
    assert!(wait_listening(addr, "conduit-mock", 10));
    (child, addr)
}

fn start_conduit(mock: SocketAddr) -> System {
    start_conduit_on(mock, "conduit", &[], GATEWAY_CPU)
}

/// A Conduit named `name` with `env` added, on `cpus` (its runtime has one worker per CPU).
fn start_conduit_on(mock: SocketAddr, name: &str, env: &[(&str, String)], cpus: &str) -> System {
    let data = tempfile::tempdir().unwrap();
    let setup = Setup::new(&data, mock, env, "");
    let key = setup.create_key(None);
    setup.credentials();
    let mut sys = setup.serve_on(name, key, cpus);
    sys._keep.push(Box::new(data));
    sys
}

/// One Conduit's environment and config: its data directory, ports and (for a replica) the
/// shared store.
struct Setup {
    env: Vec<(String, String)>,
    port: u16,
}

impl Setup {
    fn new(data: &tempfile::TempDir, mock: SocketAddr, extra_env: &[(&str, String)], extra_toml: &str) -> Setup {
        let port = free_port();
        let admin = free_port();
        let cache = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/bench-policy-cache");
        // The workloads steer the mock with its control headers, which the gateway forwards only
        // when configured to.
        let config = data.path().join("conduit.toml");
        std::fs::write(
            &config,
            // The stream pass finds each request in the mock's log by its `x-bench-tag`: forwarded
            // like the mock's control headers (the gateway forwards only headers it is told to).
            format!(
                "{extra_toml}\n{}",
                conduit_gateway::mock::CONTROL_HEADERS_TOML
                    .replace("\"x-mock-usage\"]", "\"x-mock-usage\", \"x-bench-tag\"]")
            ),
        )
        .unwrap();
        let mut env: Vec<(String, String)> = [
            ("CONDUIT_DATA_DIR", data.path().display().to_string()),
            ("CONDUIT_CONFIG", config.display().to_string()),
            ("CONDUIT_LISTEN", format!("127.0.0.1:{port}")),
            ("CONDUIT_ADMIN_LISTEN", format!("127.0.0.1:{admin}")),
            ("CONDUIT_ADMIN_TOKEN", "bench-admin-token-0123456789".into()),
            ("CONDUIT_POLICY_CACHE_DIR", cache.into()),
            ("UPSTREAM_ANTHROPIC_URL", format!("http://{mock}")),
            ("UPSTREAM_OPENAI_URL", format!("http://{mock}")),
            ("UPSTREAM_BEDROCK_URL", format!("http://{mock}")),
            ("CONDUIT_LOG", "warn".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        env.extend(extra_env.iter().map(|(k, v)| (k.to_string(), v.clone())));
        Setup { env, port }
    }

    fn cli(&self, args: &[&str], extra: &[(&str, &str)]) -> Vec<u8> {
        let out = Command::new(env!("CARGO_BIN_EXE_conduit"))
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(extra.iter().copied())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "conduit {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// A new stand-in key: `(secret, id)`.
    fn create_key_with_id(&self, team: Option<&str>) -> (String, String) {
        let mut args = vec!["keys", "create", "--owner", "bench@corp.example", "--json"];
        if let Some(t) = team {
            args.extend(["--team", t]);
        }
        let v: Value = serde_json::from_slice(&self.cli(&args, &[])).unwrap();
        (
            v["key"].as_str().unwrap().to_string(),
            v["record"]["id"].as_str().unwrap().to_string(),
        )
    }

    fn create_key(&self, team: Option<&str>) -> String {
        self.create_key_with_id(team).0
    }

    fn credentials(&self) {
        self.cli(
            &["credentials", "set", "anthropic", "--from-env", "BENCH_CRED"],
            &[("BENCH_CRED", "sk-ant-bench")],
        );
        // A key pair, so the Bedrock row includes SigV4 signing of every request.
        self.cli(
            &["credentials", "set", "bedrock", "--from-aws-env"],
            &[
                ("AWS_ACCESS_KEY_ID", "AKIABENCHKEY00000000"),
                ("AWS_SECRET_ACCESS_KEY", "bench/secret+access/key0123456789abcdef"),
            ],
        );
    }

    fn serve(&self, name: &str, key: String) -> System {
        self.serve_on(name, key, GATEWAY_CPU)
    }

    fn serve_on(&self, name: &str, key: String, cpus: &str) -> System {
        let mut serve = pinned(cpus, env!("CARGO_BIN_EXE_conduit"));
        serve.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let child = serve
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", self.port).parse().unwrap();
        assert!(wait_listening(addr, name, 120));
        system(name, addr, vec![("x-api-key".into(), key)], Some(child), None)
    }
}

/// The replicas pass: Conduit on sled with a team budget, beside three replicas on one
/// PostgreSQL (a throwaway cluster, not pinned) — one admitting a team-budgeted key from its
/// lease, one a key with its own budget (a database reservation per request) — and the three
/// replicas together. `None` without PostgreSQL.
struct Replicas {
    sled: System,
    lease: System,
    reserve: System,
    others: Vec<System>,
    _cluster: conduit_state_postgres::testing::Cluster,
    _dirs: Vec<tempfile::TempDir>,
}

const BUDGET_TOML: &str = "[budgets.\"team:bench\"]\nmonthly_usd = \"1000000\"\n";

fn start_replicas(mock: SocketAddr) -> Option<Replicas> {
    let cluster = conduit_state_postgres::testing::Cluster::start()?;
    let url = cluster.database("bench");
    let master = String::from_utf8(
        Command::new(env!("CARGO_BIN_EXE_conduit"))
            .args(["master-key", "generate"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_string();
    let sled_dir = tempfile::tempdir().unwrap();
    let sled_setup = Setup::new(&sled_dir, mock, &[], BUDGET_TOML);
    let sled_key = sled_setup.create_key(Some("bench"));
    sled_setup.credentials();
    let sled = sled_setup.serve("conduit-sled", sled_key);
    let store = "[store]\ntls = \"disable\"\n";
    let mut dirs = vec![sled_dir];
    let mut setups = Vec::new();
    for i in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        setups.push(Setup::new(
            &dir,
            mock,
            &[
                ("CONDUIT_STORE_URL", url.clone()),
                ("CONDUIT_REPLICA_ID", format!("bench-{i}")),
                ("CONDUIT_MASTER_KEY", master.clone()),
            ],
            &format!("{store}{BUDGET_TOML}"),
        ));
        dirs.push(dir);
    }
    setups[0].cli(&["migrate"], &[]);
    setups[0].credentials();
    let team_key = setups[0].create_key(Some("bench"));
    let (own_key, own_id) = setups[0].create_key_with_id(Some("bench"));
    setups[0].cli(
        &["budgets", "set", &format!("key:{own_id}"), "--monthly", "1000000"],
        &[],
    );
    let mut replicas: Vec<System> = setups
        .iter()
        .enumerate()
        .map(|(i, s)| s.serve(&format!("pg-replica-{i}"), team_key.clone()))
        .collect();
    let first = replicas.remove(0);
    let mut reserve = system(
        "pg-reserve",
        first.addr,
        vec![("x-api-key".into(), own_key)],
        None,
        None,
    );
    reserve.pid = first.pid;
    let mut lease = first;
    lease.target.name = "pg-lease".into();
    Some(Replicas {
        sled,
        lease,
        reserve,
        others: replicas,
        _cluster: cluster,
        _dirs: dirs,
    })
}

fn start_nginx(mock: SocketAddr) -> Option<System> {
    start_nginx_workers(mock, GATEWAY_CPU, 1)
}

fn start_nginx_workers(mock: SocketAddr, cpus: &str, workers: usize) -> Option<System> {
    let n = nginx::Nginx::start_workers(mock, Some(cpus), workers)?;
    let mut sys = system(
        "nginx",
        n.addr,
        vec![("x-api-key".into(), "sk-ant-bench".into())],
        None,
        Some(n.child.id()),
    );
    sys._keep.push(Box::new(n));
    Some(sys)
}

/// LiteLLM's proxy, when `litellm` is on the PATH: its Anthropic `/v1/messages` route to a model
/// whose `api_base` is the mock. Offline switches on; loopback only.
fn start_litellm(mock: SocketAddr) -> Option<System> {
    // `.ci/run` installs LiteLLM in its own venv under $CONDUIT_PEERS_DIR.
    let venv = std::env::var("CONDUIT_PEERS_DIR")
        .ok()
        .map(|d| format!("{d}/litellm/bin/litellm"))
        .filter(|p| std::path::Path::new(p).exists());
    let bin = venv.or_else(|| which("litellm"))?;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = format!(
        "model_list:\n  - model_name: \"*\"\n    litellm_params:\n      model: \"anthropic/*\"\n      api_base: http://{mock}\n      api_key: sk-ant-bench\nlitellm_settings:\n  telemetry: false\n  drop_params: true\ngeneral_settings:\n  master_key: sk-litellm-bench\n"
    );
    std::fs::write(dir.path().join("config.yaml"), config).unwrap();
    let child = pinned(GATEWAY_CPU, &bin)
        .args([
            "--config",
            &dir.path().join("config.yaml").display().to_string(),
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--num_workers",
            "1",
        ])
        .env("LITELLM_TELEMETRY_DISABLED", "true")
        .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        .env("LITELLM_LOG", "ERROR")
        .env("DISABLE_SCHEMA_UPDATE", "true")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut sys = system(
        "litellm",
        addr,
        vec![("x-api-key".into(), "sk-litellm-bench".into())],
        Some(child),
        None,
    );
    sys._keep.push(Box::new(dir));
    if !wait_listening(addr, "litellm", 120) {
        sys._process.as_mut().map(|c| c.kill());
        return None;
    }
    Some(sys)
}

/// Portkey's gateway, when installed under `$PORTKEY_DIR` (node_modules/@portkey-ai/gateway):
/// forwarded to the mock with `x-portkey-provider: anthropic` and `x-portkey-custom-host`.
fn start_portkey(mock: SocketAddr) -> Option<System> {
    let dir = std::env::var("PORTKEY_DIR")
        .ok()
        .or_else(|| std::env::var("CONDUIT_PEERS_DIR").ok().map(|d| format!("{d}/portkey")))?;
    let entry = std::path::Path::new(&dir).join("node_modules/@portkey-ai/gateway/build/start-server.js");
    if !entry.exists() {
        eprintln!("PORTKEY_DIR is set but {} is missing", entry.display());
        return None;
    }
    let port = free_port();
    // Portkey binds every interface and has no option against it: a preload pins its listener to
    // loopback.
    let dir_keep = tempfile::tempdir().unwrap();
    let preload = dir_keep.path().join("loopback.cjs");
    std::fs::write(&preload, include_str!("../tests/common/loopback.cjs")).unwrap();
    let child = pinned(GATEWAY_CPU, "node")
        .arg("--require")
        .arg(&preload)
        .arg(&entry)
        .args([format!("--port={port}"), "--headless".into()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let headers = vec![
        ("x-api-key".into(), "sk-ant-bench".into()),
        ("x-portkey-provider".into(), "anthropic".into()),
        ("x-portkey-custom-host".into(), format!("http://{mock}/v1")),
    ];
    let mut sys = system("portkey", addr, headers, Some(child), None);
    sys._keep.push(Box::new(dir_keep));
    if !wait_listening(addr, "portkey", 60) {
        sys._process.as_mut().map(|c| c.kill());
        return None;
    }
    Some(sys)
}

fn which(name: &str) -> Option<String> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| format!("{d}/{name}"))
        .find(|p| std::path::Path::new(p).exists())
}

// ---------------------------------------------------------------------------------------------
// Requests

#[derive(Clone)]
struct Workload {
    body: Bytes,
    delay_ms: u64,
    /// `None`: `/v1/messages`.
    path: Option<&'static str>,
}

/// Claude Code's Bedrock-mode turn goes here (Conduit re-signs it with SigV4).
const BEDROCK_PATH: &str = "/model/us.anthropic.claude-sonnet-4-5-20250929-v1:0/invoke-with-response-stream";

fn request(sys: &Target, w: &Workload, tag: Option<&str>) -> Request<Full<Bytes>> {
    let w = sys.instead.as_ref().unwrap_or(w);
    let mut r = Request::post(w.path.unwrap_or("/v1/messages"))
        .header("host", sys.addr.to_string())
        .header("content-type", "application/json")
        .header("anthropic-version", "2023-06-01")
        .header("x-mock-delay-ms", w.delay_ms.to_string());
    for (k, v) in &sys.headers {
        r = r.header(k.as_str(), v.as_str());
    }
    if let Some(t) = tag {
        r = r.header("x-bench-tag", t);
    }
    r.body(Full::new(w.body.clone())).unwrap()
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr) -> Sender {
    try_connect(addr).await.expect("connect")
}

async fn try_connect(addr: SocketAddr) -> Option<Sender> {
    let stream = TcpStream::connect(addr).await.ok()?;
    stream.set_nodelay(true).ok()?;
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(conn);
    Some(sender)
}

/// One exchange: total time, first body frame, gaps between frames, SHA-256 of the body.
struct Exchange {
    status: u16,
    total: Duration,
    first: Duration,
    gaps: Vec<Duration>,
    sha256: String,
    ok: bool,
}

async fn exchange(sender: &mut Sender, req: Request<Full<Bytes>>, hash: bool) -> Exchange {
    let t = Instant::now();
    let failed = |t: Instant| Exchange {
        status: 0,
        total: t.elapsed(),
        first: Duration::ZERO,
        gaps: Vec::new(),
        sha256: String::new(),
        ok: false,
    };
    if sender.ready().await.is_err() {
        // The server closed the keep-alive connection (some peers do after a while): reconnect.
        let addr: SocketAddr = req.headers()["host"].to_str().unwrap().parse().unwrap();
        match try_connect(addr).await {
            Some(s) => *sender = s,
            None => return failed(t),
        }
        if sender.ready().await.is_err() {
            return failed(t);
        }
    }
    // A reset or refused request counts as an error of the system under test, not a crash.
    let Ok(resp) = sender.send_request(req).await else {
        return failed(t);
    };
    let ok = resp.status().is_success();
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let (mut first, mut last, mut gaps) = (None, None, Vec::new());
    let mut h = Sha256::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return Exchange { status, ..failed(t) };
        };
        let now = t.elapsed();
        if let Some(d) = frame.data_ref() {
            if hash {
                h.update(d);
            }
            first.get_or_insert(now);
            if let Some(p) = last {
                gaps.push(now - p);
            }
            last = Some(now);
        }
    }
    Exchange {
        status,
        total: t.elapsed(),
        first: first.unwrap_or_default(),
        gaps,
        sha256: if hash { hex(&h.finalize()) } else { String::new() },
        ok,
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn quantiles(mut v: Vec<f64>) -> Value {
    v.sort_by(f64::total_cmp);
    json!({"p50": pct(&v, 0.5), "p99": pct(&v, 0.99), "p999": pct(&v, 0.999), "n": v.len()})
}

// ---------------------------------------------------------------------------------------------
// Measurements

/// Starts a peer in front of the mock, if it is installed.
type Starter = fn(SocketAddr) -> Option<System>;

/// One JSON and one streamed request must succeed (peers get a few seconds to finish starting).
async fn probe(sys: &System) -> Result<(), String> {
    let mut last = String::new();
    for _ in 0..10 {
        match probe_once(sys).await {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Err(last)
}

async fn probe_once(sys: &System) -> Result<(), String> {
    for stream in [false, true] {
        let w = Workload {
            body: body_kib(4, stream),
            delay_ms: 0,
            path: None,
        };
        let mut sender = connect(sys.addr).await;
        sender.ready().await.map_err(|e| e.to_string())?;
        let resp = tokio::time::timeout(Duration::from_secs(30), sender.send_request(request(sys, &w, None)))
            .await
            .map_err(|_| "no answer in 30 s".to_string())?
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        if !status.is_success() {
            return Err(format!(
                "{status} {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            ));
        }
    }
    Ok(())
}

/// c=1, systems alternating request by request; µs request start → last byte.
async fn latency(systems: &[&System], w: &Workload, n: usize) -> BTreeMap<String, Value> {
    let mut senders = Vec::new();
    for s in systems {
        senders.push(connect(s.addr).await);
    }
    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(n); systems.len()];
    let mut failed: Vec<Option<String>> = vec![None; systems.len()];
    let warm = (n / 10).max(20);
    for i in 0..(warm + n) {
        for (k, s) in systems.iter().enumerate() {
            if failed[k].is_some() {
                continue;
            }
            let e = exchange(&mut senders[k], request(s, w, None), false).await;
            if !e.ok {
                // A peer that cannot take this workload is reported as such, not measured.
                failed[k] = Some(format!("answered {} to this workload", e.status));
                continue;
            }
            if i >= warm {
                samples[k].push(us(e.total));
            }
        }
    }
    systems
        .iter()
        .zip(samples)
        .zip(failed)
        .map(|((s, v), f)| {
            (
                s.name.clone(),
                match f {
                    Some(why) => json!({"error": why}),
                    None => quantiles(v),
                },
            )
        })
        .collect()
}

/// Closed loop at concurrency `c` for `secs`: requests per second and latency quantiles.
async fn throughput(sys: &System, w: &Workload, c: usize, secs: f64) -> Value {
    throughput_over(std::slice::from_ref(&sys.target), w, c, secs).await
}

/// As [`throughput`], the `c` connections spread round-robin over `targets` (replicas behind a
/// load balancer).
async fn throughput_over(targets: &[Target], w: &Workload, c: usize, secs: f64) -> Value {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for i in 0..c {
        let (target, w) = (targets[i % targets.len()].clone(), w.clone());
        tasks.push(tokio::spawn(async move {
            let mut sender = connect(target.addr).await;
            let mut lat = Vec::new();
            let mut errors = 0u64;
            while Instant::now() < deadline {
                let e = exchange(&mut sender, request(&target, &w, None), false).await;
                errors += (!e.ok) as u64;
                lat.push(us(e.total));
            }
            (lat, errors)
        }));
    }
    let started = Instant::now();
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.unwrap();
        all.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let n = all.len();
    let mut q = quantiles(all);
    q["rps"] = json!(n as f64 / elapsed);
    q["errors"] = json!(errors);
    q
}

/// Open loop at `rate` requests per second for `secs`: latency from each request's scheduled start.
/// A thread of its own keeps the schedule (sleep, then spin the last stretch: tokio's timer has
/// 1 ms granularity, which would otherwise add up to a millisecond to every latency).
async fn fixed_rate(sys: &System, w: &Workload, rate: f64, secs: f64) -> (f64, u64, usize) {
    let outcomes = open_loop(sys, w, rate, secs).await;
    let n = outcomes.len();
    let errors = outcomes.iter().filter(|o| !(200..300).contains(&o.1)).count() as u64;
    let mut lat: Vec<f64> = outcomes.into_iter().map(|o| o.0).collect();
    lat.sort_by(f64::total_cmp);
    (pct(&lat, 0.99), errors, n)
}

/// Open-loop load at a fixed `rate` for `secs`: each request's latency (µs, from its scheduled
/// start: no coordinated omission) and status (0: no answer).
async fn open_loop(sys: &System, w: &Workload, rate: f64, secs: f64) -> Vec<(f64, u16)> {
    let n = (rate * secs).max(1.0) as usize;
    // Idle keep-alive connections; a request that finds none opens one (its connect time counts).
    let idle: Arc<std::sync::Mutex<Vec<Sender>>> = Arc::default();
    for _ in 0..8 {
        let s = connect(sys.addr).await;
        idle.lock().unwrap().push(s);
    }
    let shared = Arc::new((sys.target.clone(), w.clone()));
    // At most this many requests in flight (and connections open); a request waiting for a slot
    // is late, and its latency, counted from its scheduled start, says so.
    let in_flight = Arc::new(tokio::sync::Semaphore::new(256));
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<(Duration, u16)>();
    let handle = tokio::runtime::Handle::current();
    let start = Instant::now() + Duration::from_millis(20);
    let dispatcher = std::thread::spawn(move || {
        for i in 0..n {
            let at = start + Duration::from_secs_f64(i as f64 / rate);
            loop {
                let now = Instant::now();
                if now >= at {
                    break;
                }
                let left = at - now;
                if left > Duration::from_micros(300) {
                    std::thread::sleep(left - Duration::from_micros(200));
                } else {
                    std::hint::spin_loop();
                }
            }
            let (idle, shared, in_flight, done_tx) = (idle.clone(), shared.clone(), in_flight.clone(), done_tx.clone());
            handle.spawn(async move {
                let _slot = in_flight.acquire_owned().await.unwrap();
                let (target, w) = &*shared;
                let reused = idle.lock().unwrap().pop();
                let sender = match reused {
                    Some(s) => Some(s),
                    None => try_connect(target.addr).await,
                };
                let status = match sender {
                    Some(mut sender) => {
                        let e = exchange(&mut sender, request(target, w, None), false).await;
                        // Any answer (a shed 503 too) leaves the connection usable; one the server
                        // closed is reopened by the next `exchange`.
                        if e.status != 0 {
                            idle.lock().unwrap().push(sender);
                        }
                        if e.ok || e.status != 200 { e.status } else { 0 }
                    }
                    None => 0,
                };
                let _ = done_tx.send((at.elapsed(), status));
            });
        }
    });
    let mut outcomes = Vec::with_capacity(n);
    for _ in 0..n {
        let (d, status) = done_rx.recv().await.unwrap();
        outcomes.push((us(d), status));
    }
    let _ = dispatcher.join();
    outcomes
}

/// Overload (issue 20): a Conduit with `limits.max_in_flight = 64` at its highest rate with p99
/// under 10 ms, then open loop at twice that. Reports what was admitted (and its latency), what
/// was shed (a provider-shaped 503 with `retry-after`; how fast), other failures, and RSS.
async fn overload(sys: &System, w: &Workload, sizes: &Sizes) -> Value {
    let pid = sys.pid.expect("a process");
    let sustainable = max_rate(sys, w, 10_000.0, sizes.rate_secs, sizes.rate_steps).await["max_rps"]
        .as_f64()
        .unwrap_or(0.0)
        .max(100.0);
    let rss_before = rss_kib(pid).unwrap_or(0) as f64 / 1024.0;
    let offered = 2.0 * sustainable;
    let sampler = {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let peak = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (s, p) = (stop.clone(), peak.clone());
        let t = std::thread::spawn(move || {
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(r) = rss_kib(pid) {
                    p.fetch_max(r, std::sync::atomic::Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        (stop, peak, t)
    };
    let outcomes = open_loop(sys, w, offered, sizes.throughput_secs.max(1.0)).await;
    sampler.0.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = sampler.2.join();
    let rss_peak = sampler.1.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1024.0;
    let (mut admitted, mut shed, mut failed) = (Vec::new(), Vec::new(), 0u64);
    for (lat, status) in &outcomes {
        match status {
            200..=299 => admitted.push(*lat),
            503 => shed.push(*lat),
            _ => failed += 1,
        }
    }
    json!({
        "max_in_flight": 64,
        "sustainable_rps": sustainable,
        "offered_rps": offered,
        "requests": outcomes.len(),
        "admitted": admitted.len(),
        "shed_503": shed.len(),
        "failed": failed,
        "admitted_us": quantiles(admitted),
        "shed_us": quantiles(shed),
        "rss_mib_before": rss_before,
        "rss_mib_peak": rss_peak,
    })
}

/// The highest rate (req/s) whose p99 stays under `limit_us`: doubling, then bisecting.
async fn max_rate(sys: &System, w: &Workload, limit_us: f64, secs: f64, steps: usize) -> Value {
    let mut good = 0.0f64;
    let mut bad: Option<f64> = None;
    let mut rate = 250.0f64;
    let mut tried = Vec::new();
    for _ in 0..(steps + 12) {
        let (p99, errors, _) = fixed_rate(sys, w, rate, secs).await;
        let ok = p99 <= limit_us && errors == 0;
        tried.push(json!({"rate": rate, "p99_us": p99, "ok": ok}));
        if ok {
            good = good.max(rate);
        } else {
            bad = Some(bad.map_or(rate, |b: f64| b.min(rate)));
        }
        rate = match bad {
            None => rate * 2.0,
            Some(b) => (good + b) / 2.0,
        };
        if bad.is_some_and(|b| tried.len() >= steps && (b - good) / b.max(1.0) < 0.1) {
            break;
        }
        if tried.len() >= steps + 6 || rate > 200_000.0 {
            break;
        }
    }
    json!({"max_rps": good, "tried": tried})
}

/// Streaming at c=1: added TTFB and inter-event gaps, and whether the client got the mock's bytes.
async fn stream(s: &System, mock: SocketAddr, n: usize) -> Value {
    let w = Workload {
        body: body_kib(4, true),
        delay_ms: 10,
        path: None,
    };
    stream_with(&s.target, mock, n, &w).await
}

/// As [`stream`], for workload `w` (its events `w.delay_ms` apart). A system whose gateway
/// translates (Anthropic → Bedrock re-frames the event-stream as SSE) is timed, not compared.
async fn stream_with(s: &Target, mock: SocketAddr, n: usize, w: &Workload) -> Value {
    let w = w.clone();
    let translated = s.instead.is_some();
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, Full<Bytes>>(hyper_util::client::legacy::connect::HttpConnector::new());
    {
        let mut sender = connect(s.addr).await;
        let (mut first, mut gaps, mut identical, mut untagged) = (Vec::new(), Vec::new(), 0, 0);
        for i in 0..n {
            let tag = format!("{}-{i}", s.name);
            let e = exchange(&mut sender, request(s, &w, Some(&tag)), true).await;
            if !e.ok {
                eprintln!("{} answered {} to a stream", s.name, e.status);
                continue;
            }
            first.push(us(e.first));
            gaps.extend(e.gaps.iter().map(|g| us(*g)));
            let log = http
                .get(format!("http://{mock}/__mock/requests").parse().unwrap())
                .await
                .unwrap();
            let log: Value = serde_json::from_slice(&log.into_body().collect().await.unwrap().to_bytes()).unwrap();
            let sent = log.as_array().and_then(|a| {
                a.iter().rev().find(|r| {
                    r["headers"]
                        .as_array()
                        .is_some_and(|h| h.iter().any(|kv| kv[0] == "x-bench-tag" && kv[1] == tag.as_str()))
                })
            });
            // A request the mock did not see tagged is not compared (and says so), never counted
            // as a difference: the 2026-12-07 run read 0/100 because the tag was not forwarded.
            match sent.and_then(|r| r["response_sha256"].as_str()) {
                Some(mock_sha) => identical += (mock_sha == e.sha256) as usize,
                None => untagged += 1,
            }
            // The mock keeps every request; clear it so the lookup stays small.
            let _ = http
                .request(
                    Request::post(format!("http://{mock}/__mock/reset"))
                        .body(Full::new(Bytes::new()))
                        .unwrap(),
                )
                .await;
        }
        if translated {
            return json!({"ttfb_us": quantiles(first), "gap_us": quantiles(gaps), "byte_identical": "translated (SSE from event-stream)"});
        }
        if untagged > 0 {
            eprintln!(
                "{}: {untagged} of {n} streams not found in the mock's log by their tag",
                s.name
            );
        }
        json!({"ttfb_us": quantiles(first), "gap_us": quantiles(gaps), "byte_identical": format!("{identical}/{}", n - untagged), "untagged": untagged})
    }
}

/// Bedrock's streamed InvokeModel (4 KiB, Conduit re-signing it with SigV4 and metering the
/// event-stream) through each system, and `a2b` — a Conduit routing Anthropic to Bedrock — sent
/// the same request in the Anthropic form: throughput and streaming, as in the main pass.
async fn bedrock_pass(args: &Args, sizes: &Sizes, systems: &[&System], a2b: &System, mock: SocketAddr) -> Value {
    let run = |what: &str| ["all", "bedrock", what].contains(&args.what.as_str());
    let w = |delay_ms| Workload {
        body: bedrock_body_kib(4),
        delay_ms,
        path: Some(BEDROCK_PATH),
    };
    let translated = |delay_ms| Target {
        instead: Some(Workload {
            body: body_kib(4, true),
            delay_ms,
            path: None,
        }),
        ..a2b.target.clone()
    };
    let mut names: Vec<String> = systems.iter().map(|s| s.name.clone()).collect();
    names.push(a2b.name.clone());
    let mut report = json!({ "systems": names });
    if run("throughput") {
        let mut t = serde_json::Map::new();
        for c in [16usize, 64] {
            let mut row = serde_json::Map::new();
            for s in systems {
                eprintln!("bedrock throughput: c={c} {}", s.name);
                let r = throughput_over(std::slice::from_ref(&s.target), &w(0), c, sizes.throughput_secs).await;
                row.insert(s.name.clone(), r);
            }
            eprintln!("bedrock throughput: c={c} {}", a2b.name);
            let r = throughput_over(&[translated(0)], &w(0), c, sizes.throughput_secs).await;
            row.insert(a2b.name.clone(), r);
            t.insert(format!("c{c}"), Value::Object(row));
        }
        report["throughput"] = Value::Object(t);
    }
    if run("stream") {
        let mut st = serde_json::Map::new();
        for s in systems {
            eprintln!("bedrock streaming: {}", s.name);
            st.insert(
                s.name.clone(),
                stream_with(&s.target, mock, sizes.stream_requests, &w(10)).await,
            );
        }
        eprintln!("bedrock streaming: {}", a2b.name);
        st.insert(
            a2b.name.clone(),
            stream_with(&translated(10), mock, sizes.stream_requests, &w(10)).await,
        );
        report["stream"] = Value::Object(st);
    }
    report
}

/// The two-core pass: 4 KiB latency at c=1 and throughput at c=16 / c=64.
async fn two_core_pass(sizes: &Sizes, systems: &[&System]) -> Value {
    let w = Workload {
        body: body_kib(4, false),
        delay_ms: 0,
        path: None,
    };
    let names: Vec<String> = systems.iter().map(|s| s.name.clone()).collect();
    let mut report = json!({ "systems": names });
    eprintln!("two-core latency: 4k_json");
    let lat = latency(systems, &w, sizes.latency_requests).await;
    report["latency_us"] = json!({ "4k_json": lat });
    let mut t = serde_json::Map::new();
    for c in [16usize, 64] {
        let mut row = serde_json::Map::new();
        for s in systems {
            eprintln!("two-core throughput: c={c} {}", s.name);
            row.insert(s.name.clone(), throughput(s, &w, c, sizes.throughput_secs).await);
        }
        t.insert(format!("c{c}"), Value::Object(row));
    }
    report["throughput"] = Value::Object(t);
    report
}

fn is_peer(s: &System) -> bool {
    !["direct", "nginx", "conduit"].contains(&s.name.as_str())
}

/// Peers stopped (SIGSTOP) while another system is measured: an idle Python or Node gateway still
/// takes CPU on the core the measured system runs on. Resumed on drop.
struct Paused(Vec<u32>);

fn pause_peers(systems: &[&System], except: Option<&str>) -> Paused {
    let pids: Vec<u32> = systems
        .iter()
        .filter(|s| is_peer(s) && Some(s.name.as_str()) != except)
        .filter_map(|s| s.pid)
        .collect();
    for pid in &pids {
        let _ = Command::new("kill").args(["-STOP", &pid.to_string()]).status();
    }
    Paused(pids)
}

impl Drop for Paused {
    fn drop(&mut self) {
        for pid in &self.0 {
            let _ = Command::new("kill").args(["-CONT", &pid.to_string()]).status();
        }
    }
}

fn rss_kib(pid: u32) -> Option<u64> {
    proc_status(pid, "VmRSS:")
}

/// A number from `/proc/<pid>/status` (`VmRSS:`, `Threads:` …).
fn proc_status(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// RSS idle and with `n` streams open (the mock stalls after the first events).
async fn memory(sys: &System, n: usize, quiet: Duration) -> Value {
    let pid = sys.pid.expect("a process");
    // Idle means idle: quiet for two of the gateway's idle checks (it returns freed heap to the
    // OS once quiet; nginx's figure does not move). The smoke does not wait.
    tokio::time::sleep(quiet).await;
    let idle = rss_kib(pid);
    let w = Workload {
        body: body_kib(4, true),
        delay_ms: 0,
        path: None,
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(n);
    let mut held = Vec::new();
    for _ in 0..n {
        let tx = tx.clone();
        let mut req = request(sys, &w, None);
        req.headers_mut()
            .insert("x-mock-mode", http::HeaderValue::from_static("stall"));
        let addr = sys.addr;
        held.push(tokio::spawn(async move {
            let mut sender = connect(addr).await;
            sender.ready().await.unwrap();
            let resp = sender.send_request(req).await.unwrap();
            let mut body = resp.into_body();
            let _ = body.frame().await; // the first events arrived: the stream is open
            let _ = tx.send(()).await;
            std::future::pending::<()>().await;
            drop(body);
        }));
    }
    for _ in 0..n {
        rx.recv().await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let open = rss_kib(pid);
    for h in held {
        h.abort();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    json!({"idle_mib": idle.map(|k| k as f64 / 1024.0), "open_streams": n, "with_streams_mib": open.map(|k| k as f64 / 1024.0),
           "per_stream_kib": match (idle, open) { (Some(a), Some(b)) => json!((b as f64 - a as f64) / n as f64), _ => Value::Null }})
}

/// The soak: c=16 closed loop for `minutes` of a mixed workload — 4 KiB JSON, streamed, upstream
/// errors (529) and refusals (an unknown key: 401), in turn on each connection — sampling the
/// gateway's RSS, open file descriptors and threads every 10 s; each one's least-squares slope
/// per hour (goal: flat) and the answers by status.
async fn soak(sys: &System, minutes: f64) -> Value {
    let pid = sys.pid.expect("a process");
    let deadline = Instant::now() + Duration::from_secs_f64(minutes * 60.0);
    let json_w = Workload {
        body: body_kib(4, false),
        delay_ms: 0,
        path: None,
    };
    let stream_w = Workload {
        body: body_kib(4, true),
        delay_ms: 0,
        path: None,
    };
    let mut tasks = Vec::new();
    for worker in 0..16usize {
        let (target, json_w, stream_w) = (sys.target.clone(), json_w.clone(), stream_w.clone());
        tasks.push(tokio::spawn(async move {
            let mut sender = connect(target.addr).await;
            let mut statuses = std::collections::BTreeMap::<u16, u64>::new();
            let mut i = worker;
            while Instant::now() < deadline {
                let mut req = match i % 4 {
                    0 => request(&target, &json_w, None),
                    1 => request(&target, &stream_w, None),
                    2 => {
                        let mut r = request(&target, &json_w, None);
                        r.headers_mut()
                            .insert("x-mock-mode", http::HeaderValue::from_static("status-529"));
                        r
                    }
                    _ => request(&target, &json_w, None),
                };
                if i % 4 == 3 {
                    req.headers_mut().insert(
                        "x-api-key",
                        http::HeaderValue::from_static("ck_not-a-key-conduit-issued"),
                    );
                }
                *statuses
                    .entry(exchange(&mut sender, req, false).await.status)
                    .or_default() += 1;
                i += 1;
            }
            statuses
        }));
    }
    let start = Instant::now();
    let mut samples: Vec<(f64, [f64; 3])> = Vec::new();
    while Instant::now() < deadline {
        if let (Some(rss), Some(fds), Some(threads)) = (rss_kib(pid), open_fds(pid), proc_status(pid, "Threads:")) {
            samples.push((
                start.elapsed().as_secs_f64(),
                [rss as f64 / 1024.0, fds as f64, threads as f64],
            ));
        }
        tokio::time::sleep(Duration::from_secs(10).min(deadline.saturating_duration_since(Instant::now()))).await;
    }
    let mut statuses = std::collections::BTreeMap::<String, u64>::new();
    for t in tasks {
        for (status, n) in t.await.unwrap() {
            *statuses.entry(status.to_string()).or_default() += n;
        }
    }
    // Pools, caches and the allocator's arenas fill in the first minute: the slopes start after it
    // (in a soak of three minutes or more).
    let warm = if minutes >= 3.0 { 60.0 } else { 0.0 };
    let steady = |k: usize| {
        samples
            .iter()
            .filter(|s| s.0 >= warm)
            .map(|s| (s.0, s.1[k]))
            .collect::<Vec<_>>()
    };
    let series = |k: usize| samples.iter().map(|s| (s.0, s.1[k])).collect::<Vec<_>>();
    let describe = |k: usize| {
        let v = series(k);
        json!({"first": v.first().map(|s| s.1), "last": v.last().map(|s| s.1),
               "max": v.iter().map(|s| s.1).fold(f64::NAN, f64::max), "per_hour": slope(&steady(k)) * 3600.0,
               "samples": v.iter().map(|s| s.1).collect::<Vec<_>>()})
    };
    json!({"minutes": minutes, "concurrency": 16, "requests": statuses.values().sum::<u64>(), "statuses": statuses,
           "rss_mib": describe(0), "fds": describe(1), "threads": describe(2),
           "warm_up_secs": warm, "slope_mib_per_hour": slope(&steady(0)) * 3600.0})
}

/// Least-squares slope of `(x, y)` points (y per unit of x).
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return f64::NAN;
    }
    let (mx, my) = (
        points.iter().map(|p| p.0).sum::<f64>() / n,
        points.iter().map(|p| p.1).sum::<f64>() / n,
    );
    points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum::<f64>()
        / points.iter().map(|p| (p.0 - mx).powi(2)).sum::<f64>().max(1e-9)
}

/// The process's open file descriptors.
fn open_fds(pid: u32) -> Option<u64> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}

// ---------------------------------------------------------------------------------------------

fn body_kib(kib: usize, stream: bool) -> Bytes {
    let text = "x".repeat(kib * 1024);
    Bytes::from(
        json!({"model": "claude-sonnet-4-5", "max_tokens": 256, "stream": stream,
               "messages": [{"role": "user", "content": text}]})
        .to_string(),
    )
}

/// [`body_kib`] in Bedrock's InvokeModel form (no `model`, no `stream`: the path says both).
fn bedrock_body_kib(kib: usize) -> Bytes {
    let text = "x".repeat(kib * 1024);
    Bytes::from(
        json!({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 256,
               "messages": [{"role": "user", "content": text}]})
        .to_string(),
    )
}

fn capture(name: &str, stream: bool) -> Bytes {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/captures")
        .join(name);
    let v: Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap();
    let mut b = v["body"].clone();
    b["stream"] = Value::Bool(stream);
    Bytes::from(serde_json::to_vec(&b).unwrap())
}

/// A capture's body exactly as its client sent it.
fn capture_raw(name: &str) -> Bytes {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/captures")
        .join(name);
    let v: Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap();
    Bytes::from(serde_json::to_vec(&v["body"]).unwrap())
}

fn main() {
    let args = parse_args();
    let sizes = Sizes::of(args.smoke);
    // This process (load generator) on CPU 0; the systems under test on CPU 1.
    if std::env::var_os("SUITE_NO_PIN").is_none() {
        let _ = Command::new("taskset")
            .args(["-a", "-p", "-c", LOAD_CPU, &std::process::id().to_string()])
            .stdout(Stdio::null())
            .status();
    }
    let (mut mock, mock_addr) = start_mock();
    let direct = system(
        "direct",
        mock_addr,
        vec![("x-api-key".into(), "sk-ant-bench".into())],
        None,
        None,
    );
    let conduit = start_conduit(mock_addr);
    let mut main_group = vec![direct, conduit];
    if let Some(n) = start_nginx(mock_addr) {
        main_group.insert(1, n);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let names: Vec<String> = main_group.iter().map(|s| s.name.clone()).collect();
    eprintln!(
        "systems: {}{}",
        names.join(", "),
        if args.smoke {
            " (smoke: tiny counts, figures meaningless)"
        } else {
            ""
        }
    );
    let mut report = json!({
        "date": conduit_gateway::clock::format_rfc3339(conduit_gateway::clock::now_unix()),
        "smoke": args.smoke,
        "systems": names,
        "machine": machine(),
    });
    let results = rt.block_on(measure(&args, &sizes, &main_group, mock_addr));
    merge(&mut report, results);

    // Each peer in a pass of its own, beside direct and Conduit, and alive only during it: an idle
    // Python or Node gateway still takes CPU, which would tax everyone else's figures.
    if !args.no_peers {
        let starters: [(&str, Starter); 2] = [("litellm", start_litellm), ("portkey", start_portkey)];
        let mut peers = serde_json::Map::new();
        for (name, start) in starters {
            let Some(peer) = start(mock_addr) else {
                eprintln!("{name}: not installed (see docs/performance.md), skipped");
                continue;
            };
            if let Err(why) = rt.block_on(probe(&peer)) {
                eprintln!("leaving {name} out: {why}");
                peers.insert(name.into(), json!({"error": why}));
                continue;
            }
            let group = [&main_group[0], main_group.last().unwrap(), &peer];
            let refs: Vec<&System> = group.to_vec();
            eprintln!("peer pass: {name}");
            let pass = rt.block_on(measure_refs(&args, &sizes, &refs, mock_addr));
            peers.insert(name.into(), pass);
            drop(peer);
        }
        report["peers"] = Value::Object(peers);
    }
    // Bedrock's streamed API through every system, and Anthropic → Bedrock through a Conduit
    // that translates (its own process; the one body Conduit changes).
    if ["all", "throughput", "stream", "bedrock"].contains(&args.what.as_str()) {
        let a2b = start_conduit_on(
            mock_addr,
            "conduit-a2b",
            &[("CONDUIT_ANTHROPIC_PROVIDER", "bedrock".into())],
            GATEWAY_CPU,
        );
        let refs: Vec<&System> = main_group.iter().collect();
        eprintln!("bedrock pass: streamed InvokeModel, and Anthropic → Bedrock");
        report["bedrock"] = rt.block_on(bedrock_pass(&args, &sizes, &refs, &a2b, mock_addr));
    }
    // Two cores: Conduit's runtime on both, nginx with two workers (the mock and this load
    // generator stay on CPU 0, sharing it with them).
    if args.what == "all" || args.what == "twocore" {
        let mut group = vec![system(
            "direct",
            mock_addr,
            vec![("x-api-key".into(), "sk-ant-bench".into())],
            None,
            None,
        )];
        if let Some(n) = start_nginx_workers(mock_addr, "0,1", 2) {
            group.push(n);
        }
        group.push(start_conduit_on(mock_addr, "conduit", &[], "0,1"));
        let refs: Vec<&System> = group.iter().collect();
        eprintln!("two-core pass: conduit on CPUs 0,1; nginx with 2 workers");
        report["two_core"] = rt.block_on(two_core_pass(&sizes, &refs));
    }
    if args.what == "all" || args.what == "replicas" {
        match start_replicas(mock_addr) {
            Some(r) => {
                eprintln!("replicas pass: sled vs 3 replicas on PostgreSQL");
                report["replicas"] = rt.block_on(measure_replicas(&sizes, &main_group[0], &r));
            }
            None => eprintln!("replicas: PostgreSQL is not installed, skipped"),
        }
    }
    if args.what == "all" || args.what == "overload" {
        let data = tempfile::tempdir().unwrap();
        let setup = Setup::new(&data, mock_addr, &[], "[limits]\nmax_in_flight = 64\n");
        let key = setup.create_key(None);
        setup.credentials();
        let mut sys = setup.serve("conduit (max_in_flight = 64)", key);
        sys._keep.push(Box::new(data));
        eprintln!("overload pass: open loop at 2x the highest rate with p99 under 10 ms");
        let w = Workload {
            body: body_kib(4, false),
            delay_ms: 0,
            path: None,
        };
        report["overload"] = rt.block_on(overload(&sys, &w, &sizes));
    }
    drop(main_group);
    let _ = mock.kill();
    let _ = mock.wait();
    print_table(&report);
    print_overload(&report);
    if let Some(dir) = std::path::Path::new(&args.out).parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    println!("\nJSON: {}", args.out);
}

fn print_overload(r: &Value) {
    let Some(o) = r.get("overload") else { return };
    println!(
        "\noverload (max_in_flight = 64, 4 KiB, open loop): sustainable {} req/s (p99 < 10 ms); offered {} req/s for {} requests",
        f(&o["sustainable_rps"]),
        f(&o["offered_rps"]),
        o["requests"]
    );
    println!(
        "  admitted {} (p50 {} µs, p99 {} µs) | shed 503 {} (p50 {} µs, p99 {} µs) | other failures {} | RSS {} → peak {} MiB",
        o["admitted"],
        f(&o["admitted_us"]["p50"]),
        f(&o["admitted_us"]["p99"]),
        o["shed_503"],
        f(&o["shed_us"]["p50"]),
        f(&o["shed_us"]["p99"]),
        o["failed"],
        f(&o["rss_mib_before"]),
        f(&o["rss_mib_peak"])
    );
}

/// Added latency at c=1 (team budget on sled; on a replica from its lease; a key budget reserved in
/// PostgreSQL per request) and throughput of one replica and of three behind round-robin.
async fn measure_replicas(sizes: &Sizes, direct: &System, r: &Replicas) -> Value {
    let w = Workload {
        body: body_kib(4, false),
        delay_ms: 0,
        path: None,
    };
    eprintln!("replicas: latency");
    let lat = latency(&[direct, &r.sled, &r.lease, &r.reserve], &w, sizes.latency_requests).await;
    let mut t = serde_json::Map::new();
    for c in [16usize, 64] {
        eprintln!("replicas: throughput c={c}");
        let all: Vec<Target> = std::iter::once(r.lease.target.clone())
            .chain(r.others.iter().map(|s| s.target.clone()))
            .collect();
        t.insert(
            format!("c{c}"),
            json!({
                "conduit-sled": throughput(&r.sled, &w, c, sizes.throughput_secs).await,
                "pg-one-replica": throughput(&r.lease, &w, c, sizes.throughput_secs).await,
                "pg-three-replicas": throughput_over(&all, &w, c, sizes.throughput_secs).await,
            }),
        );
    }
    json!({"latency_us": lat, "throughput": t})
}

fn print_replicas(r: &Value) {
    let Some(lat) = r["latency_us"].as_object() else { return };
    println!("\n==== Replicas: sled vs 3 replicas on PostgreSQL (4 KiB, budgeted keys; PostgreSQL not pinned) ====");
    println!(
        "{:<14} {:>9} {:>9} {:>10} {:>10}",
        "system", "p50", "p99", "added p50", "added p99"
    );
    let d = &lat["direct"];
    for (name, x) in lat {
        let added = |k: &str| x[k].as_f64().zip(d[k].as_f64()).map(|(a, b)| format!("{:.1}", a - b));
        println!(
            "{:<14} {:>9} {:>9} {:>10} {:>10}",
            name,
            f(&x["p50"]),
            f(&x["p99"]),
            added("p50").unwrap_or("-".into()),
            added("p99").unwrap_or("-".into())
        );
    }
    if let Some(t) = r["throughput"].as_object() {
        println!(
            "{:<6} {:<18} {:>9} {:>9} {:>7}",
            "c", "system", "req/s", "p99 µs", "errors"
        );
        for (c, row) in t {
            for (name, x) in row.as_object().into_iter().flatten() {
                println!(
                    "{:<6} {:<18} {:>9} {:>9} {:>7}",
                    c,
                    name,
                    f(&x["rps"]),
                    f(&x["p99"]),
                    f(&x["errors"])
                );
            }
        }
    }
}

fn merge(report: &mut Value, results: Value) {
    if let (Some(r), Value::Object(m)) = (report.as_object_mut(), results) {
        r.extend(m);
    }
}

async fn measure(args: &Args, sizes: &Sizes, systems: &[System], mock: SocketAddr) -> Value {
    let refs: Vec<&System> = systems.iter().collect();
    measure_refs(args, sizes, &refs, mock).await
}

/// Every selected measurement over `systems`; the first is the direct path.
async fn measure_refs(args: &Args, sizes: &Sizes, systems: &[&System], mock: SocketAddr) -> Value {
    let run = |what: &str| args.what == "all" || args.what == what;
    let mut report = json!({"systems": systems.iter().map(|s| s.name.clone()).collect::<Vec<_>>()});
    if run("latency") {
        let cc = capture("claudecode_basic_002.json", true);
        let cc_repeat = capture("claudecode_twoturn_003.json", true);
        let mut lat = serde_json::Map::new();
        for (label, w) in [
            (
                "4k_json",
                Workload {
                    body: body_kib(4, false),
                    delay_ms: 0,
                    path: None,
                },
            ),
            (
                "cc_76k_sse",
                Workload {
                    body: cc,
                    delay_ms: 0,
                    path: None,
                },
            ),
            (
                "bedrock_cc_85k",
                Workload {
                    body: capture_raw("claudecode_bedrock_013.json"),
                    delay_ms: 0,
                    path: Some(BEDROCK_PATH),
                },
            ),
            (
                "cc_repeat_sse",
                Workload {
                    body: cc_repeat,
                    delay_ms: 0,
                    path: None,
                },
            ),
        ] {
            eprintln!("latency: {label}");
            // Request by request alternation among the quiet systems (peers stopped), then each
            // peer alternating with the direct path.
            let quiet: Vec<&System> = systems.iter().copied().filter(|s| !is_peer(s)).collect();
            let mut r = {
                let _p = pause_peers(systems, None);
                latency(&quiet, &w, sizes.latency_requests).await
            };
            for peer in systems.iter().filter(|s| is_peer(s)) {
                if w.path.is_some() {
                    r.insert(peer.name.clone(), json!({"error": "speaks no Bedrock-native API"}));
                    continue;
                }
                let _p = pause_peers(systems, Some(&peer.name));
                let mut pr = latency(&[systems[0], *peer], &w, sizes.latency_requests).await;
                if let Some(v) = pr.remove(&peer.name) {
                    r.insert(peer.name.clone(), v);
                }
            }
            lat.insert(label.into(), json!(r));
        }
        report["latency_us"] = Value::Object(lat);
    }
    if run("throughput") {
        let w = Workload {
            body: body_kib(4, false),
            delay_ms: 0,
            path: None,
        };
        let mut t = serde_json::Map::new();
        for c in [16usize, 64] {
            let mut row = serde_json::Map::new();
            for s in systems {
                let _p = pause_peers(systems, Some(&s.name));
                eprintln!("throughput: c={c} {}", s.name);
                row.insert(s.name.clone(), throughput(s, &w, c, sizes.throughput_secs).await);
            }
            t.insert(format!("c{c}"), Value::Object(row));
        }
        report["throughput"] = Value::Object(t);
    }
    if run("rate") {
        let w = Workload {
            body: body_kib(4, false),
            delay_ms: 0,
            path: None,
        };
        let mut r = serde_json::Map::new();
        for (label, limit) in [("p99_under_1ms", 1_000.0), ("p99_under_10ms", 10_000.0)] {
            let mut row = serde_json::Map::new();
            for s in systems {
                let _p = pause_peers(systems, Some(&s.name));
                eprintln!("fixed rate: {label} {}", s.name);
                row.insert(
                    s.name.clone(),
                    max_rate(s, &w, limit, sizes.rate_secs, sizes.rate_steps).await,
                );
            }
            r.insert(label.into(), Value::Object(row));
        }
        report["max_rate"] = Value::Object(r);
    }
    if run("stream") {
        let mut st = serde_json::Map::new();
        for s in systems {
            let _p = pause_peers(systems, Some(&s.name));
            eprintln!("streaming: {}", s.name);
            st.insert(s.name.clone(), stream(s, mock, sizes.stream_requests).await);
        }
        report["stream"] = Value::Object(st);
    }
    if run("memory") {
        let mut m = serde_json::Map::new();
        // The soak first: after the streams pass, the abandoned streams' upstreams are drained
        // for their usage until network.idle_timeout_secs (300 s) — 1,000 FDs the soak would
        // otherwise count as its own for five minutes.
        if let Some(c) = systems
            .iter()
            .find(|s| s.name == "conduit")
            .filter(|_| args.soak_minutes > 0.0)
        {
            let _p = pause_peers(systems, None);
            eprintln!("soak: {} minutes", args.soak_minutes);
            m.insert("conduit_soak".into(), soak(c, args.soak_minutes).await);
        }
        for s in systems.iter().filter(|s| s.pid.is_some()) {
            let _p = pause_peers(systems, Some(&s.name));
            eprintln!("memory: {} streams through {}", sizes.streams, s.name);
            let quiet = if args.smoke {
                Duration::ZERO
            } else {
                conduit_gateway::gateway::IDLE_CHECK_EVERY * 2 + Duration::from_secs(1)
            };
            m.insert(s.name.clone(), memory(s, sizes.streams, quiet).await);
        }
        report["memory"] = Value::Object(m);
    }
    report
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|c| {
        c.lines()
            .find(|l| l.starts_with("model name"))
            .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
    });
    let nginx = Command::new("nginx")
        .arg("-v")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string());
    json!({"cpu": cpu, "cpus": std::fs::read_to_string("/proc/cpuinfo").map(|c| c.lines().filter(|l| l.starts_with("processor")).count()).unwrap_or(0), "nginx": nginx,
           "conduit": env!("CARGO_PKG_VERSION")})
}

fn f(v: &Value) -> String {
    match v.as_f64() {
        Some(x) if x.is_finite() && x >= 100.0 => format!("{x:.0}"),
        Some(x) if x.is_finite() => format!("{x:.1}"),
        _ => "-".into(),
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b.abs() > 1e-9 && a.is_finite() && b.is_finite() => format!("{:.2}×", a / b),
        _ => "-".into(),
    }
}

/// The tables: the main pass (direct, nginx, Conduit), then each peer's own pass.
fn print_table(r: &Value) {
    println!(
        "\nConduit benchmark suite — {}{}",
        r["date"].as_str().unwrap_or(""),
        if r["smoke"] == true {
            " (SMOKE: figures meaningless)"
        } else {
            ""
        }
    );
    print_group(r);
    if r["bedrock"].is_object() {
        println!(
            "\n==== Bedrock: streamed InvokeModel, 4 KiB (Conduit re-signs it with SigV4); conduit-a2b: the Anthropic form, translated to Bedrock ===="
        );
        print_group(&r["bedrock"]);
    }
    if r["two_core"].is_object() {
        println!(
            "\n==== Two cores: Conduit's runtime on both, nginx with two workers; the mock and the load generator share CPU 0 with them ===="
        );
        print_group(&r["two_core"]);
    }
    print_replicas(&r["replicas"]);
    if let Some(peers) = r["peers"].as_object() {
        for (name, pass) in peers {
            println!("\n==== {name}, in a pass of its own beside direct and Conduit ====");
            match pass["error"].as_str() {
                Some(e) => println!("not measured: {e}"),
                None => print_group(pass),
            }
        }
    }
}

/// Absolute figures, added-over-direct, and Conduit's ratio to the others in the pass.
fn print_group(r: &Value) {
    let systems: Vec<String> = serde_json::from_value(r["systems"].clone()).unwrap_or_default();
    let peers: Vec<&String> = systems
        .iter()
        .filter(|s| !["direct", "conduit"].contains(&s.as_str()))
        .collect();
    if let Some(lat) = r["latency_us"].as_object() {
        println!("\nAdded latency at c=1 (µs over direct; request start → last byte)");
        println!(
            "{:<16} {:<10} {:>9} {:>9} {:>9} {:>10} {:>10} {:>10}",
            "body", "system", "p50", "p99", "p99.9", "added p50", "added p99", "added 99.9"
        );
        for (label, row) in lat {
            let d = &row["direct"];
            for s in &systems {
                let x = &row[s];
                if let Some(e) = x["error"].as_str() {
                    println!("{label:<16} {s:<10} not measured: {e}");
                    continue;
                }
                let added = |k: &str| x[k].as_f64().zip(d[k].as_f64()).map(|(a, b)| a - b);
                println!(
                    "{:<16} {:<10} {:>9} {:>9} {:>9} {:>10} {:>10} {:>10}",
                    label,
                    s,
                    f(&x["p50"]),
                    f(&x["p99"]),
                    f(&x["p999"]),
                    added("p50").map(|v| format!("{v:.1}")).unwrap_or("-".into()),
                    added("p99").map(|v| format!("{v:.1}")).unwrap_or("-".into()),
                    added("p999").map(|v| format!("{v:.1}")).unwrap_or("-".into()),
                );
            }
            let added = |s: &str, k: &str| row[s][k].as_f64().zip(d[k].as_f64()).map(|(a, b)| a - b);
            for p in &peers {
                // Against nginx: how much more Conduit adds; against a peer: how many times less.
                let (x, y) = if p.as_str() == "nginx" {
                    ("conduit", p.as_str())
                } else {
                    (p.as_str(), "conduit")
                };
                println!(
                    "{:<16} {x} added ÷ {y} added: p50 {}  p99 {}",
                    label,
                    ratio(added(x, "p50"), added(y, "p50")),
                    ratio(added(x, "p99"), added(y, "p99"))
                );
            }
        }
    }
    if let Some(t) = r["throughput"].as_object() {
        println!("\nThroughput, closed loop, 4 KiB body (requests/s; p99 µs)");
        for (c, row) in t {
            let line: Vec<String> = systems
                .iter()
                .map(|s| format!("{s} {} ({})", f(&row[s]["rps"]), f(&row[s]["p99"])))
                .collect();
            println!("{c:<4} {}", line.join("   "));
            for p in peers.iter().chain(std::iter::once(&&"direct".to_string())) {
                println!(
                    "     conduit ÷ {p}: {}",
                    ratio(row["conduit"]["rps"].as_f64(), row[p.as_str()]["rps"].as_f64())
                );
            }
        }
    }
    if let Some(m) = r["max_rate"].as_object() {
        println!("\nHighest fixed rate with p99 under the limit (requests/s, open loop)");
        for (label, row) in m {
            let line: Vec<String> = systems
                .iter()
                .map(|s| format!("{s} {}", f(&row[s]["max_rps"])))
                .collect();
            println!("{label:<16} {}", line.join("   "));
            for p in &peers {
                println!(
                    "                 conduit ÷ {p}: {}",
                    ratio(row["conduit"]["max_rps"].as_f64(), row[p.as_str()]["max_rps"].as_f64())
                );
            }
        }
    }
    if let Some(s) = r["stream"].as_object() {
        println!(
            "\nStreaming, c=1, events 10 ms apart (µs; byte-identical = SHA-256 of what the client got == what the mock sent)"
        );
        let d = &s["direct"];
        for name in &systems {
            let x = &s[name];
            let added = |k: &str, q: &str| {
                x[k][q]
                    .as_f64()
                    .zip(d[k][q].as_f64())
                    .map(|(a, b)| format!("{:.1}", a - b))
                    .unwrap_or("-".into())
            };
            println!(
                "{:<10} TTFB p50 {:>8} (added {:>7})   gap p50 {:>8} (added {:>6}, p99 {:>6})   byte-identical {}",
                name,
                f(&x["ttfb_us"]["p50"]),
                added("ttfb_us", "p50"),
                f(&x["gap_us"]["p50"]),
                added("gap_us", "p50"),
                added("gap_us", "p99"),
                x["byte_identical"].as_str().unwrap_or("-")
            );
        }
    }
    if let Some(m) = r["memory"].as_object() {
        println!("\nMemory (RSS)");
        for (name, x) in m {
            if name.ends_with("_soak") {
                println!(
                    "{name:<14} {} min, c=16 mixed (JSON, streamed, upstream 529, refused 401): {} requests {}",
                    x["minutes"], x["requests"], x["statuses"]
                );
                for (what, unit) in [("rss_mib", "MiB"), ("fds", "FDs"), ("threads", "threads")] {
                    let v = &x[what];
                    println!(
                        "{:<14} {what:<8} first {} last {} max {} → slope {} {unit}/hour",
                        "",
                        f(&v["first"]),
                        f(&v["last"]),
                        f(&v["max"]),
                        f(&v["per_hour"])
                    );
                }
            } else {
                println!(
                    "{name:<14} idle {} MiB, with {} open streams {} MiB ({} KiB per stream)",
                    f(&x["idle_mib"]),
                    x["open_streams"],
                    f(&x["with_streams_mib"]),
                    f(&x["per_stream_kib"])
                );
            }
        }
    }
}

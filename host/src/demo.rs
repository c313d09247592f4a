//! `conduit demo`: a gateway over the mock provider (`conduit_gateway::mock`), seeded with synthetic but
//! realistic traffic so the dashboard, `conduit rot`, `conduit sessions` and the audit export have
//! something to show. Nothing here contacts a real provider; the data directory is a fresh temporary
//! one unless `--data-dir` is given.
//!
//! The traffic: five engineers in three teams; Claude Code sessions whose context grows turn by
//! turn (some past 32K and 100K tokens, with prompt caching), Codex Responses sessions, Python SDK
//! one-offs; a synthetic AWS key pasted now and then (an `alert` finding); one key with a tiny daily
//! budget (402 refusals). The mock is told to answer larger contexts more slowly and to fail them
//! more often (529 overloaded, mid-stream errors) — a made-up curve, shaped like the one operators
//! report, so the context-rot view has a shape to show.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use zeroize::Zeroizing;

use conduit_core::error::{Error, Result};
use conduit_gateway::config::RawConfig;
use conduit_state::operator;

/// `conduit demo` arguments.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Gateway listener.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Admin listener (the dashboard).
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub admin_listen: SocketAddr,
    /// Data directory (default: a fresh temporary directory, removed on exit).
    #[arg(long)]
    pub data_dir: Option<std::path::PathBuf>,
    /// Requests of synthetic traffic to send.
    #[arg(long, default_value_t = 400)]
    pub requests: usize,
    /// Print one JSON line with the addresses and the admin token once seeded (for scripts).
    #[arg(long)]
    pub json: bool,
    /// Exit once the traffic is sent instead of serving until Ctrl-C.
    #[arg(long)]
    pub exit: bool,
}

/// The demo's engineers: owner, team, client style.
const PEOPLE: &[(&str, &str, Style)] = &[
    ("alice@corp.example", "payments", Style::ClaudeCode),
    ("bob@corp.example", "payments", Style::ClaudeCode),
    ("carol@corp.example", "risk", Style::ClaudeCode),
    ("dan@corp.example", "platform", Style::Codex),
    ("erin@corp.example", "risk", Style::PythonSdk),
];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Style {
    ClaudeCode,
    Codex,
    PythonSdk,
}

/// Deterministic xorshift: the same demo every time.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() % 10_000) as f64 / 10_000.0 < p
    }
}

/// Runs the demo.
pub async fn run(args: DemoArgs) -> Result<()> {
    let temp = match &args.data_dir {
        Some(_) => None,
        None => Some(tempdir()?),
    };
    let data_dir = args
        .data_dir
        .clone()
        .or_else(|| temp.as_ref().map(|t| t.0.clone()))
        .ok_or_else(|| Error::msg("no data directory"))?;
    let mock = conduit_gateway::mock::start(
        "127.0.0.1:0".parse().map_err(|_| Error::msg("address"))?,
        Default::default(),
    )
    .await
    .map_err(|e| Error::msg(format!("starting the mock provider: {e}")))?;
    let token = random_token()?;
    let (_, master) = conduit_core::seal::MasterKey::generate()?;
    let env: HashMap<&str, String> = [
        ("CONDUIT_LISTEN", args.listen.to_string()),
        ("CONDUIT_ADMIN_LISTEN", args.admin_listen.to_string()),
        ("CONDUIT_DATA_DIR", data_dir.display().to_string()),
        ("CONDUIT_MASTER_KEY", master.to_string()),
        ("CONDUIT_ADMIN_TOKEN", token.clone()),
        ("UPSTREAM_ANTHROPIC_URL", mock.url()),
        ("UPSTREAM_OPENAI_URL", mock.url()),
    ]
    .into_iter()
    .collect();
    let mut raw = RawConfig::default();
    conduit_gateway::mock::forward_control_headers(&mut raw);
    let config = raw.validate(&|k| env.get(k).cloned())?;
    crate::telemetry::init(&config.log);
    let gateway = conduit_gateway::Gateway::open(config).await?;
    for provider in ["anthropic", "openai"] {
        gateway
            .set_credential(provider, Zeroizing::new(format!("demo-{provider}-credential")))
            .await?;
    }
    let mut keys = Vec::new();
    for (owner, team, client) in PEOPLE {
        let created = operator::create_key(
            gateway.state.keys.as_ref(),
            operator::NewKeyRequest {
                owner: owner.to_string(),
                team: Some(team.to_string()),
                name: Some("laptop".into()),
                expires_at: None,
                limits: Default::default(),
            },
        )
        .await?;
        keys.push((created.key.clone(), *client, created.record.id.clone()));
    }
    // Erin's key gets a tiny daily budget: some of her requests are refused with 402.
    let tiny = conduit_state::records::BudgetLimit {
        daily_micros: Some(20_000),
        monthly_micros: None,
    };
    gateway.state.budgets.set(&format!("key:{}", keys[4].2), tiny).await?;
    let running = conduit_gateway::server::start(gateway).await?;
    let base = format!("http://{}", running.addr);
    let dashboard = format!("http://{}/dashboard#token={token}", running.admin_addr);
    if !args.json {
        eprintln!(
            "conduit demo: gateway {base}, mock provider {}, data {}",
            mock.url(),
            data_dir.display()
        );
        eprintln!("sending {} requests of synthetic traffic…", args.requests);
    }
    let sent = traffic(&base, &keys, args.requests).await;
    running.gateway.audit.sync();
    running.gateway.ledger.flush().await;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "gateway": base, "admin": format!("http://{}", running.admin_addr), "admin_token": token,
                "dashboard": dashboard, "requests": sent, "data_dir": data_dir,
            })
        );
    } else {
        eprintln!("sent {sent} requests. Dashboard: {dashboard}");
        eprintln!(
            "(admin token {token}; also try `conduit rot`, `conduit sessions`, `conduit audit export` with CONDUIT_ADMIN_LISTEN={} CONDUIT_ADMIN_TOKEN=…)",
            running.admin_addr
        );
    }
    if !args.exit {
        let _ = tokio::signal::ctrl_c().await;
    }
    running.shutdown().await;
    drop(temp);
    Ok(())
}

/// Sends `total` requests, four at a time; returns how many got an answer.
async fn traffic(base: &str, keys: &[(String, Style, String)], total: usize) -> usize {
    let http: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let http = Arc::new(http);
    let per_worker = total.div_ceil(4);
    let mut workers = Vec::new();
    for w in 0..4u64 {
        let http = http.clone();
        let base = base.to_string();
        let keys = keys.to_vec();
        let n = per_worker.min(total.saturating_sub(w as usize * per_worker));
        workers.push(tokio::spawn(async move {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (w + 1).wrapping_mul(0x2545_f491_4f6c_dd1d));
            let (mut sent, mut answered) = (0, 0);
            let mut session: Option<(usize, String, u64, u32)> = None; // key, id, context tokens, turns left
            while sent < n {
                let (k, sid, ctx, left) = match session.take() {
                    Some(s) if s.3 > 0 => s,
                    _ => {
                        let k = rng.below(keys.len() as u64) as usize;
                        let turns = match keys[k].1 {
                            Style::PythonSdk => 3 + rng.below(5) as u32,
                            _ => 4 + rng.below(36) as u32,
                        };
                        (k, format!("{:016x}-{w}", rng.next()), 1_500 + rng.below(3_000), turns)
                    }
                };
                let (key, client, _) = &keys[k];
                answered += send_one(&http, &base, key, *client, &sid, ctx, &mut rng).await as usize;
                sent += 1;
                let growth = 1_000 + rng.below(9_000);
                session = Some((k, sid, (ctx + growth).min(190_000), left - 1));
            }
            answered
        }));
    }
    let mut total_sent = 0;
    for w in workers {
        total_sent += w.await.unwrap_or(0);
    }
    total_sent
}

async fn send_one(
    http: &Client<HttpConnector, Full<Bytes>>,
    base: &str,
    key: &str,
    client: Style,
    session: &str,
    context_tokens: u64,
    rng: &mut Rng,
) -> bool {
    // The mock counts ~4 bytes per token.
    let filler = "lorem ipsum dolor sit amet, consectetur adipiscing elit. ".repeat((context_tokens * 4 / 57) as usize);
    let leak = if rng.chance(0.04) {
        // A synthetic AWS key id (valid shape, not a real key): an alert finding.
        format!(" my key is AKIA{:016X} ", rng.next()).replace(['0', '1', '8', '9'], "Q")
    } else {
        String::new()
    };
    let text = format!("{filler}{leak} please fix the failing test");
    let (path, body, ua) = match client {
        Style::ClaudeCode | Style::PythonSdk => (
            "/v1/messages",
            serde_json::json!({
                "model": if client == Style::ClaudeCode { "claude-sonnet-4-5-20250929" } else { "claude-haiku-4-5" },
                "max_tokens": 2048,
                "stream": client == Style::ClaudeCode,
                "system": [{"type": "text", "text": "You are a coding agent.", "cache_control": {"type": "ephemeral"}}],
                "messages": [{"role": "user", "content": text}],
            }),
            if client == Style::ClaudeCode {
                "claude-cli/2.1.197 (external, sdk-cli)"
            } else {
                "Anthropic/Python 2.14.0"
            },
        ),
        Style::Codex => (
            "/v1/responses",
            serde_json::json!({
                // Codex 0.171's default model has no price yet: the dashboard flags it.
                "model": if rng.chance(0.3) { "gpt-6.2-sol" } else { "gpt-5-codex" },
                "stream": true,
                "prompt_cache_key": session,
                "input": [{"role": "user", "content": [{"type": "input_text", "text": text}]}],
            }),
            "codex_exec/0.171.0 (Debian 12.0.0; x86_64) xterm",
        ),
    };
    // The made-up rot curve: bigger contexts answer slower and fail more often.
    let k = context_tokens as f64 / 1000.0;
    let mode = if rng.chance(0.002 + k * 0.0009) {
        "status-529"
    } else if rng.chance(k * 0.0003) {
        "midstream-error"
    } else if rng.chance(0.004) {
        "status-500"
    } else {
        "ok"
    };
    let delay = (k / 25.0) as u64;
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(format!("{base}{path}"))
        .header("content-type", "application/json")
        .header("user-agent", ua)
        .header("x-mock-mode", mode)
        .header("x-mock-delay-ms", delay.to_string());
    req = match client {
        Style::Codex => req
            .header("authorization", format!("Bearer {key}"))
            .header("session_id", session),
        Style::ClaudeCode => req
            .header("x-api-key", key)
            .header("anthropic-version", "2023-06-01")
            .header("x-claude-code-session-id", session),
        Style::PythonSdk => req.header("x-api-key", key).header("anthropic-version", "2023-06-01"),
    };
    let Ok(req) = req.body(Full::new(Bytes::from(body.to_string()))) else {
        return false;
    };
    match http.request(req).await {
        Ok(resp) => resp.into_body().collect().await.is_ok(),
        Err(_) => false,
    }
}

fn random_token() -> Result<String> {
    let mut b = [0u8; 18];
    getrandom::fill(&mut b).map_err(|e| Error::msg(format!("random source: {e}")))?;
    Ok(format!("demo_{}", conduit_core::hex::encode(&b)))
}

/// A temporary directory removed on drop (no extra dependency for one directory).
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempdir() -> Result<TempDir> {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).map_err(|e| Error::msg(format!("random source: {e}")))?;
    let dir = std::env::temp_dir().join(format!("conduit-demo-{}", conduit_core::hex::encode(&b)));
    std::fs::create_dir_all(&dir).map_err(|e| Error::msg(format!("creating {}: {e}", dir.display())))?;
    Ok(TempDir(dir))
}

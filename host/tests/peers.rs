//! Conduit in front of the gateways an org may already run (issue 6): the real **LiteLLM** proxy
//! and the real **Portkey** gateway, each in front of the mock provider, with Conduit in front of
//! them and a real client through all three. Conduit injects the peer's credential (LiteLLM's
//! virtual key; Portkey's config, which carries the provider key and host) and meters the usage
//! frames that come back, which must equal what the mock reported.
//!
//! Installed by `.ci/run`: LiteLLM in its own venv (`$CONDUIT_PEERS_DIR/litellm/bin/litellm`, or
//! `litellm` on PATH), Portkey under `$CONDUIT_PEERS_DIR/portkey` (or `$PORTKEY_DIR`). Missing
//! peers skip, or fail with `CONDUIT_REQUIRE_PEERS=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Harness;
use common::installed::{node_bin, on_path, peers_dir, require};
use common::process::free_port;
use conduit_gateway::mock::Recorded;
use conduit_gateway::usage::Usage;

/// A peer process, killed on drop.
struct Peer {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `url` until it answers (any status) or `secs` pass.
async fn wait_http(url: &str, child: &mut Child, secs: u64) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let req = http::Request::get(url)
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        if client.request(req).await.is_ok() {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{url}: the peer exited ({status}) before it listened");
        }
        assert!(Instant::now() < deadline, "{url} did not answer within {secs} s");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

const LITELLM_KEY: &str = "sk-litellm-master-7f3c9a1e5b2d4f6a";
const PROVIDER_KEY_BEHIND_PEER: &str = "sk-ant-api03-BEHINDPEERCANARY0123456789abcdef";

async fn start_litellm(mock: &str) -> Option<Peer> {
    let bin = peers_dir()
        .map(|d| d.join("litellm/bin/litellm"))
        .filter(|p| p.is_file())
        .or_else(|| on_path("litellm"));
    let bin = require("LiteLLM (pip install 'litellm[proxy]')", bin)?;
    let dir = tempfile::tempdir().unwrap();
    // A wildcard route: Claude Code asks for several models (its main one, a small fast one), and
    // a model missing from model_list is LiteLLM's 400 — the cause of the 400s seen in issue 7.
    let config = format!(
        "model_list:\n  - model_name: \"*\"\n    litellm_params:\n      model: \"anthropic/*\"\n      api_base: \"{mock}\"\n      api_key: \"{PROVIDER_KEY_BEHIND_PEER}\"\n\
         litellm_settings:\n  telemetry: false\ngeneral_settings:\n  master_key: \"{LITELLM_KEY}\"\n"
    );
    std::fs::write(dir.path().join("config.yaml"), config).unwrap();
    let port = free_port();
    let mut child = Command::new(bin)
        .args(["--config", &dir.path().join("config.yaml").display().to_string()])
        .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--num_workers", "1"])
        .env("LITELLM_TELEMETRY_DISABLED", "true")
        .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        .env("LITELLM_LOCAL_ANTHROPIC_COSTS", "True")
        .env("DISABLE_SCHEMA_UPDATE", "true")
        .env("LITELLM_LOG", "ERROR")
        .env_remove("DATABASE_URL")
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    wait_http(&format!("{url}/health/liveliness"), &mut child, 180).await;
    Some(Peer { child, url, _dir: dir })
}

async fn start_portkey() -> Option<Peer> {
    let dir = std::env::var_os("PORTKEY_DIR")
        .map(PathBuf::from)
        .or_else(|| peers_dir().map(|d| d.join("portkey")));
    let entry = dir
        .map(|d| d.join("node_modules/@portkey-ai/gateway/build/start-server.js"))
        .filter(|p| p.is_file());
    let entry = require("Portkey (npm i @portkey-ai/gateway)", entry)?;
    let tmp = tempfile::tempdir().unwrap();
    // Portkey listens on every interface and has no option against it: pin it to loopback.
    let preload = tmp.path().join("loopback.cjs");
    std::fs::write(&preload, include_str!("common/loopback.cjs")).unwrap();
    let port = free_port();
    let mut child = Command::new("node")
        .arg("--require")
        .arg(&preload)
        .arg(&entry)
        .args([format!("--port={port}"), "--headless".into()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    wait_http(&url, &mut child, 60).await;
    // Loopback only: nothing on another interface.
    for addr in local_non_loopback() {
        assert!(
            std::net::TcpStream::connect((addr, port)).is_err(),
            "Portkey answers on {addr}:{port}"
        );
    }
    Some(Peer { child, url, _dir: tmp })
}

fn local_non_loopback() -> Vec<std::net::IpAddr> {
    let out = Command::new("hostname").arg("-I").output().ok();
    out.map(|o| {
        String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .filter_map(|a| a.parse().ok())
            .collect()
    })
    .unwrap_or_default()
}

async fn mock_log(mock: &str) -> Vec<Recorded> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let req = http::Request::get(format!("{mock}/__mock/requests"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    use http_body_util::BodyExt;
    serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap()
}

/// The anthropic usage in the ledger once it holds `n` requests — read, never estimated.
async fn metered(h: &Harness, n: usize) -> Usage {
    let rows: Vec<_> = h
        .spend(n as u64)
        .await
        .into_iter()
        .filter(|r| r.provider == "anthropic")
        .collect();
    assert!(
        rows.iter().all(|r| r.estimated == 0),
        "usage was estimated, not read: {rows:?}"
    );
    rows.iter().map(conduit_gateway::ledger::SpendRow::usage).sum()
}

/// Claude Code → Conduit → LiteLLM → provider: Claude Code's real requests (its whole tool set,
/// several models) are answered, the provider sees LiteLLM's key (never Conduit's stand-in or
/// LiteLLM's virtual key), and Conduit's ledger equals the usage the provider reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_through_conduit_and_litellm() {
    let Some(claude) = require("Claude Code (claude)", node_bin("claude")) else {
        return;
    };
    let provider = conduit_gateway::mock::start("127.0.0.1:0".parse().unwrap(), Default::default())
        .await
        .unwrap();
    let Some(litellm) = start_litellm(&provider.url()).await else {
        return;
    };
    let h = Harness::builder()
        .env("UPSTREAM_ANTHROPIC_URL", &litellm.url)
        .toml("[upstream.anthropic]\nauth = \"bearer\"\n")
        .anthropic_credential(LITELLM_KEY)
        .start()
        .await;
    let home = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(&claude)
        .args(["-p", "say hello", "--output-format", "json"])
        .env("ANTHROPIC_BASE_URL", format!("http://{}", h.running.addr))
        .env("ANTHROPIC_API_KEY", &h.key)
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .env("HOME", home.path())
        .current_dir(home.path())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(180), out)
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let result: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{e}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(result["is_error"], false, "{result}");
    assert!(
        result["result"].as_str().unwrap().contains("Conduit mock upstream"),
        "{result}"
    );

    let seen: Vec<Recorded> = mock_log(&provider.url())
        .await
        .into_iter()
        .filter(|r| r.path == "/v1/messages")
        .collect();
    assert!(!seen.is_empty());
    assert!(
        seen.iter().any(|r| r.body_len > 20_000),
        "Claude Code's full first turn reached the provider"
    );
    for r in &seen {
        assert_eq!(r.header("x-api-key"), Some(PROVIDER_KEY_BEHIND_PEER), "{:?}", r.headers);
        assert!(
            r.headers
                .iter()
                .all(|(_, v)| !v.contains(&h.key) && !v.contains(LITELLM_KEY))
        );
    }
    let reported: Usage = seen.iter().filter_map(|r| r.usage).sum();
    assert_eq!(
        metered(&h, seen.len()).await,
        reported,
        "Conduit's ledger vs the provider's usage"
    );
}

/// anthropic-py → Conduit → Portkey → provider, streamed and not: the sealed Portkey config picks
/// the provider, its key and host; a client's own `x-portkey-*` headers cannot redirect it; the
/// ledger equals the provider's usage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_sdk_through_conduit_and_portkey() {
    let python = std::process::Command::new("python3")
        .args(["-c", "import anthropic"])
        .output()
        .is_ok_and(|o| o.status.success());
    if require("the anthropic Python SDK", python.then_some(())).is_none() {
        return;
    }
    let provider = conduit_gateway::mock::start("127.0.0.1:0".parse().unwrap(), Default::default())
        .await
        .unwrap();
    let Some(portkey) = start_portkey().await else {
        return;
    };
    let config = serde_json::json!({
        "provider": "anthropic",
        "api_key": PROVIDER_KEY_BEHIND_PEER,
        "custom_host": format!("{}/v1", provider.url()),
    });
    let h = Harness::builder()
        .env("UPSTREAM_ANTHROPIC_URL", &portkey.url)
        .toml("[upstream.anthropic]\nauth = \"portkey-config\"\n")
        .anthropic_credential(&config.to_string())
        .start()
        .await;
    let script = r#"
import anthropic, os, sys
c = anthropic.Anthropic(base_url=os.environ["BASE"], api_key=os.environ["KEY"], max_retries=0,
                        default_headers={"x-portkey-custom-host": "http://127.0.0.1:9/v1"})
m = c.messages.create(model="claude-sonnet-4-5", max_tokens=64, messages=[{"role": "user", "content": "hi"}])
assert "Conduit mock upstream" in m.content[0].text, m
with c.messages.stream(model="claude-sonnet-4-5", max_tokens=64, messages=[{"role": "user", "content": "hello"}]) as s:
    text = "".join(s.text_stream)
    final = s.get_final_message()
assert "Conduit mock upstream" in text, text
print(m.usage.input_tokens, m.usage.output_tokens, final.usage.input_tokens, final.usage.output_tokens)
"#;
    let out = tokio::process::Command::new("python3")
        .args(["-c", script])
        .env("BASE", format!("http://{}", h.running.addr))
        .env("KEY", &h.key)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), out)
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Vec<Recorded> = mock_log(&provider.url())
        .await
        .into_iter()
        .filter(|r| r.path == "/v1/messages")
        .collect();
    assert_eq!(
        seen.len(),
        2,
        "both requests reached the provider (not the client's custom host)"
    );
    for r in &seen {
        assert_eq!(r.header("x-api-key"), Some(PROVIDER_KEY_BEHIND_PEER));
        assert!(r.headers.iter().all(|(_, v)| !v.contains(&h.key)));
    }
    let reported: Usage = seen.iter().filter_map(|r| r.usage).sum();
    assert_eq!(
        metered(&h, 2).await,
        reported,
        "Conduit's ledger vs the provider's usage"
    );
}

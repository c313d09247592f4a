//! The `conduit` binary as an operator uses it: commands against the store while no gateway runs,
//! the same commands through a running gateway's admin API, revocation, master key rotation,
//! graceful shutdown on SIGTERM, and start-up refusals with messages that name the problem.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use common::process::{BIN, free_port, terminate, wait_listening};
use common::sha256_hex;
use http::Method;
use http_body_util::{BodyExt, Full};

const CANARY_CREDENTIAL: &str = "sk-ant-api03-CLICANARY-5e1f0c77aa";

struct Env {
    vars: Vec<(String, String)>,
}

impl Env {
    fn new(data: &Path, mock: &str) -> Env {
        let vars = vec![
            ("CONDUIT_DATA_DIR".into(), data.display().to_string()),
            ("CONDUIT_LISTEN".into(), format!("127.0.0.1:{}", free_port())),
            ("CONDUIT_ADMIN_LISTEN".into(), format!("127.0.0.1:{}", free_port())),
            ("UPSTREAM_ANTHROPIC_URL".into(), mock.to_string()),
            ("UPSTREAM_OPENAI_URL".into(), mock.to_string()),
            ("CANARY".into(), CANARY_CREDENTIAL.into()),
        ];
        Env { vars }
    }

    fn get(&self, k: &str) -> String {
        self.vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.env("CONDUIT_POLICY_CACHE_DIR", common::process::policy_cache_dir());
        c.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default());
        for (k, v) in &self.vars {
            c.env(k, v);
        }
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).stdin(Stdio::null()).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "conduit {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "conduit {args:?} should fail");
        String::from_utf8(out.stderr).unwrap()
    }

    fn serve(&self) -> Child {
        let child = self
            .command(&["serve"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_listening(&self.get("CONDUIT_ADMIN_LISTEN"));
        child
    }
}

async fn post_messages(gateway: &str, key: &str) -> u16 {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let req = http::Request::builder()
        .method(Method::POST)
        .uri(format!("http://{gateway}/v1/messages"))
        .header("x-api-key", key)
        .header("content-type", "application/json")
        .body(Full::new(bytes::Bytes::from_static(
            br#"{"model":"claude-haiku-4-5","max_tokens":8,"messages":[]}"#,
        )))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_workflow_offline_and_through_the_admin_api() {
    let mock = conduit_gateway::mock::start("127.0.0.1:0".parse().unwrap(), Default::default())
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let env = Env::new(data.path(), &mock.url());

    // Offline: the store is opened directly.
    let alice: serde_json::Value = serde_json::from_str(&env.ok(&[
        "keys",
        "create",
        "--owner",
        "alice@corp.example",
        "--team",
        "payments",
        "--json",
    ]))
    .unwrap();
    let alice_key = alice["key"].as_str().unwrap().to_string();
    assert!(alice_key.starts_with("ck_"));
    let out = env.ok(&["credentials", "set", "anthropic", "--from-env", "CANARY"]);
    assert!(out.contains("anthropic credential set (version 1"), "{out}");
    assert!(
        data.path().join("master.key").exists(),
        "a development master key was generated"
    );

    // Running: the same commands go through the admin API (the store is locked by the gateway).
    let gw = env.serve();
    let gateway = env.get("CONDUIT_LISTEN");
    assert_eq!(post_messages(&gateway, &alice_key).await, 200);
    let bob: serde_json::Value =
        serde_json::from_str(&env.ok(&["keys", "create", "--owner", "bob@corp.example", "--json"])).unwrap();
    let bob_key = bob["key"].as_str().unwrap().to_string();
    let bob_id = bob["record"]["id"].as_str().unwrap().to_string();
    assert_eq!(post_messages(&gateway, &bob_key).await, 200);

    let list = env.ok(&["keys", "list", "--json"]);
    let listed: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(listed["keys"].as_array().unwrap().len(), 2);
    assert!(
        !list.contains(&alice_key) && !list.contains(&bob_key),
        "keys list never shows secrets"
    );
    let table = env.ok(&["keys", "list"]);
    assert!(
        table.contains("bob@corp.example") && table.contains("active"),
        "{table}"
    );

    let out = env.ok(&["keys", "revoke", &bob_id]);
    assert!(out.contains("revoked"), "{out}");
    assert_eq!(
        post_messages(&gateway, &bob_key).await,
        401,
        "revocation applies to the next request"
    );
    assert!(env.ok(&["keys", "show", &bob_id]).contains("revoked"));
    let err = env.fails(&["keys", "revoke", "key_doesnotexist"]);
    assert!(err.contains("no key with id \"key_doesnotexist\""), "{err}");

    // Credentials: write-only, through stdin too.
    let mut set = env
        .command(&["credentials", "set", "openai", "--stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(set.stdin.as_mut().unwrap(), b"sk-proj-CLICANARY-stdin\n").unwrap();
    assert!(set.wait_with_output().unwrap().status.success());
    let creds = env.ok(&["credentials", "list", "--json"]);
    assert!(
        creds.contains("\"openai\"") && creds.contains("\"anthropic\""),
        "{creds}"
    );
    assert!(
        !creds.contains("CLICANARY"),
        "credentials list never shows a credential"
    );

    // Master key rotation while running: the gateway switches keys in place.
    let new_key = env.ok(&["master-key", "generate"]).trim().to_string();
    assert_eq!(new_key.len(), 44);
    let mut rotate = env.command(&["credentials", "rotate-master", "--new-key-env", "NEW_MASTER"]);
    rotate.env("NEW_MASTER", &new_key);
    let out = rotate.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("re-sealed 2 credential(s)"));
    assert_eq!(
        post_messages(&gateway, &alice_key).await,
        200,
        "still serving after rotation"
    );
    let seen = mock_log(&mock).await;
    assert!(
        seen.iter()
            .all(|r| r["headers"].to_string().contains(CANARY_CREDENTIAL)),
        "the same credential after re-sealing"
    );

    // Graceful stop on SIGTERM.
    let out = terminate(gw);
    assert!(out.status.success(), "exit after SIGTERM: {:?}", out.status);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("shutting down"), "{log}");
    for secret in [
        alice_key.as_str(),
        bob_key.as_str(),
        CANARY_CREDENTIAL,
        "CLICANARY-stdin",
        new_key.as_str(),
    ] {
        assert!(!log.contains(secret), "a secret reached the log");
    }

    // The rotated key was written to the generated key file: a plain restart works …
    let gw = env.serve();
    assert_eq!(post_messages(&gateway, &alice_key).await, 200);
    terminate(gw);
    // Everything the stopped gateways saw is on disk: the folded spend rows and the queued audit
    // records were written at shutdown, and they agree.
    let spend: serde_json::Value =
        serde_json::from_str(&env.ok(&["spend", "--by", "key", "--format", "json"])).unwrap();
    let spent: u64 = spend["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["requests"].as_u64().unwrap())
        .sum();
    let audit = env.ok(&["audit", "export", "--format", "jsonl"]);
    let attributed = audit.lines().filter(|l| l.contains("\"key_id\":\"key_")).count() as u64;
    assert!(
        spent > 3 && spent == attributed,
        "ledger {spent} requests, audit {attributed}: {audit}"
    );
    assert!(env.ok(&["audit", "verify"]).contains("audit chain intact"));

    // … and a wrong master key is refused at start-up, by id, not with garbage.
    let (_, wrong) = conduit_gateway::seal::MasterKey::generate().unwrap();
    let mut start = env.command(&["serve"]);
    start.env("CONDUIT_MASTER_KEY", wrong.as_str());
    let out = start.output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is not the one that sealed this store's credentials"),
        "{err}"
    );
    let _ = sha256_hex(b"");
}

async fn mock_log(mock: &conduit_gateway::mock::MockServer) -> Vec<serde_json::Value> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let resp = client
        .request(
            http::Request::get(format!("{}/__mock/requests", mock.url()))
                .body(Full::<bytes::Bytes>::default())
                .unwrap(),
        )
        .await
        .unwrap();
    serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap()
}

#[test]
fn bad_configuration_stops_start_up_with_a_specific_message() {
    let data = tempfile::tempdir().unwrap();
    let env = Env::new(data.path(), "http://127.0.0.1:9");
    let mut c = env.command(&["serve"]);
    c.env("CONDUIT_LISTEN", "localhost:80");
    let out = c.output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("CONDUIT_LISTEN") && err.contains("\"localhost:80\""),
        "{err}"
    );

    let file = data.path().join("conduit.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:8080\"\nmax_body = 5\n").unwrap();
    let out = env
        .command(&["serve", "--config", file.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("max_body"), "{err}");

    let err = env.fails(&["keys", "create", "--owner", "a@b", "--expires", "2020-01-01"]);
    assert!(err.contains("is in the past"), "{err}");
    let err = env.fails(&["keys", "create", "--owner", "a@b", "--expires", "next week"]);
    assert!(err.contains("--expires \"next week\" is not a date"), "{err}");
    let err = env.fails(&["credentials", "set", "gemini", "--from-env", "CANARY"]);
    assert!(err.contains("unknown provider \"gemini\""), "{err}");
    let err = env.fails(&["credentials", "set", "openai", "--from-env", "NOT_SET_ANYWHERE"]);
    assert!(err.contains("\"NOT_SET_ANYWHERE\" is not set"), "{err}");
}

/// SIGTERM as Kubernetes sends it: `/readyz` turns 503 at once while requests are still served for
/// `limits.shutdown_delay_secs`; then the listeners close, an open stream runs to its end, and the
/// process exits 0 with every request in the ledger and the audit log. An admin token mounted as
/// a file (`CONDUIT_ADMIN_TOKEN_FILE`) is the one the admin API takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_readyz_first_then_lets_streams_finish() {
    let mock = conduit_gateway::mock::start(
        "127.0.0.1:0".parse().unwrap(),
        conduit_gateway::mock::MockOptions {
            event_delay_ms: 700,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut env = Env::new(data.path(), &mock.url());
    let config = data.path().join("conduit.toml");
    std::fs::write(&config, "[limits]\nshutdown_delay_secs = 3\nshutdown_grace_secs = 30\n").unwrap();
    let token_file = data.path().join("admin-token");
    std::fs::write(&token_file, "drain-test-admin-token-0123456789\n").unwrap();
    env.vars.push(("CONDUIT_CONFIG".into(), config.display().to_string()));
    env.vars
        .push(("CONDUIT_ADMIN_TOKEN_FILE".into(), token_file.display().to_string()));
    let key =
        serde_json::from_str::<serde_json::Value>(&env.ok(&["keys", "create", "--owner", "d@corp.example", "--json"]))
            .unwrap()["key"]
            .as_str()
            .unwrap()
            .to_string();
    env.ok(&["credentials", "set", "anthropic", "--from-env", "CANARY"]);
    let gw = env.serve();
    let gateway = env.get("CONDUIT_LISTEN");
    let admin = env.get("CONDUIT_ADMIN_LISTEN");
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let get = |path: &str, token: Option<&str>| {
        let mut req = http::Request::get(format!("http://{admin}{path}"));
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req.body(Full::<bytes::Bytes>::default()).unwrap();
        let client = client.clone();
        async move {
            let resp = client.request(req).await.unwrap();
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        }
    };
    assert_eq!(get("/readyz", None).await.0, 200);
    assert_eq!(
        get("/v1/keys", Some("drain-test-admin-token-0123456789")).await.0,
        200,
        "the admin token is read from CONDUIT_ADMIN_TOKEN_FILE"
    );

    // A stream of events 700 ms apart: it outlives the 3 s delay.
    let stream_req = http::Request::post(format!("http://{gateway}/v1/messages"))
        .header("x-api-key", &key)
        .header("content-type", "application/json")
        .body(Full::new(bytes::Bytes::from_static(
            br#"{"model":"claude-haiku-4-5","max_tokens":8,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
        )))
        .unwrap();
    let resp = client.request(stream_req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let stream = tokio::spawn(async move {
        let body = resp.into_body().collect().await.map(|b| b.to_bytes());
        (body, std::time::Instant::now())
    });

    let pid = gw.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let sent = std::time::Instant::now();
    // Draining: not ready, yet still serving while the load balancer catches up.
    let mut readyz = (0, String::new());
    while sent.elapsed() < std::time::Duration::from_secs(1) {
        readyz = get("/readyz", None).await;
        if readyz.0 == 503 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(readyz.0, 503, "/readyz during the shutdown delay: {}", readyz.1);
    assert!(readyz.1.contains("draining"), "{}", readyz.1);
    let during = client
        .request(
            http::Request::post(format!("http://{gateway}/v1/messages"))
                .header("x-api-key", &key)
                .header("content-type", "application/json")
                .body(Full::new(bytes::Bytes::from_static(
                    br#"{"model":"claude-haiku-4-5","max_tokens":8,"messages":[]}"#,
                )))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(during.status(), 200, "requests are still served during the delay");
    assert_eq!(
        during.headers().get("connection").map(|v| v.to_str().unwrap()),
        Some("close"),
        "a kept-alive connection is closed after its answer while draining, so its next request goes elsewhere"
    );
    let _ = during.into_body().collect().await;
    assert!(
        sent.elapsed() < std::time::Duration::from_secs(3),
        "the checks above ran inside the delay"
    );

    // After the delay the listener is closed, while the stream goes on to its end.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while tokio::net::TcpStream::connect(&gateway).await.is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "the gateway still accepts after the delay"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let closed = std::time::Instant::now();
    assert!(
        closed - sent >= std::time::Duration::from_secs(3),
        "closed before the delay ended"
    );
    let (body, ended) = stream.await.unwrap();
    let body = body.expect("the open stream finishes, not cut");
    assert!(
        ended > closed,
        "the stream should outlive the listener: it ended {:?} after SIGTERM, the listener closed at {:?}",
        ended - sent,
        closed - sent
    );
    assert!(
        common::process::contains(&body, "message_stop"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    let out = tokio::task::spawn_blocking(move || terminate(gw)).await.unwrap();
    assert!(out.status.success(), "exit after SIGTERM: {:?}", out.status);
    let data = std::path::PathBuf::from(env.get("CONDUIT_DATA_DIR"));
    assert!(
        data.join("store.seal").exists(),
        "a clean stop seals the embedded store"
    );

    // Both requests were flushed to the audit log before the exit.
    let audit = env.ok(&["audit", "export", "--format", "jsonl"]);
    let forwarded = audit.lines().filter(|l| l.contains("\"status\":200")).count();
    assert_eq!(forwarded, 2, "{audit}");
    assert!(env.ok(&["audit", "verify"]).contains("audit chain intact"));

    // Damage at rest after that clean stop (bit rot, a bad restore): sled alone would open what it
    // can still read; the seal turns it into a refusal naming the way out.
    let db = data.join("store").join("db");
    let mut bytes = std::fs::read(&db).unwrap();
    for i in (0..bytes.len()).step_by(997) {
        bytes[i] ^= 0x5a;
    }
    std::fs::write(&db, bytes).unwrap();
    let out = env.run(&["keys", "list"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("is damaged") && err.contains("Backup and restore"),
        "{err}"
    );
}

//! No secret, prompt or completion text in logs, the store or CLI output — ever. A gateway runs as
//! a process at `debug` log level (more than production), requests carry canaries in every place a
//! careless implementation might log them, and then the logs, every file under the data directory
//! and the CLI's output are searched for each canary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::process::{BIN, contains, free_port, terminate, wait_listening};
use http_body_util::{BodyExt, Full};

const CANARY_CREDENTIAL: &str = "sk-ant-api03-HYGIENECANARYCREDENTIAL-9d8c7b";
const CANARY_PROMPT: &str = "HYGIENE-CANARY-PROMPT the merger code is BLUEHERON-7";
const CANARY_SECRET_IN_PROMPT: &str = "AKIAHYGIENECANARY777";
const CANARY_QUERY: &str = "hygienecanaryquery";
const CANARY_AWS_SECRET: &str = "HygieneAwsSecretCanary/7f3c9a1e5b2d4f6a8c0e+Z";

fn files_under(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() { files_under(&p, out) } else { out.push(p) }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canaries_never_reach_logs_store_or_cli_output() {
    let mock = conduit_gateway::mock::start("127.0.0.1:0".parse().unwrap(), Default::default())
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let admin = format!("127.0.0.1:{}", free_port());
    let config = data.path().join("conduit.toml");
    std::fs::write(&config, conduit_gateway::mock::CONTROL_HEADERS_TOML).unwrap();
    let cmd = |args: &[&str]| {
        let mut c = Command::new(BIN);
        c.env("CONDUIT_CONFIG", &config);
        c.env("CONDUIT_POLICY_CACHE_DIR", common::process::policy_cache_dir());
        c.args(args)
            .env("CONDUIT_DATA_DIR", data.path())
            .env("CONDUIT_LISTEN", &listen)
            .env("CONDUIT_ADMIN_LISTEN", &admin)
            .env("UPSTREAM_ANTHROPIC_URL", mock.url())
            .env("UPSTREAM_OPENAI_URL", mock.url())
            .env("UPSTREAM_BEDROCK_URL", mock.url())
            .env("AWS_ACCESS_KEY_ID", "AKIAHYGIENECANARY0001")
            .env("AWS_SECRET_ACCESS_KEY", CANARY_AWS_SECRET)
            .env("CONDUIT_LOG", "debug")
            .env("CONDUIT_LOG_FORMAT", "json")
            .env("CANARY", CANARY_CREDENTIAL);
        c
    };
    let mut cli_output = Vec::new();
    let mut cli = |args: &[&str]| {
        let out = cmd(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        cli_output.extend_from_slice(&out.stderr);
        // `keys create` prints the new key by design; everything else is searched.
        if !args.starts_with(&["keys", "create"]) {
            cli_output.extend_from_slice(&out.stdout);
        }
        out.stdout
    };
    let created: serde_json::Value =
        serde_json::from_slice(&cli(&["keys", "create", "--owner", "h@corp.example", "--json"])).unwrap();
    let key = created["key"].as_str().unwrap().to_string();
    cli(&["credentials", "set", "anthropic", "--from-env", "CANARY"]);
    cli(&["credentials", "set", "openai", "--from-env", "CANARY"]);
    cli(&["credentials", "set", "bedrock", "--from-aws-env"]);

    let gateway = cmd(&["serve"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_listening(&admin);

    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let prompt_body = format!(
        r#"{{"model":"claude-sonnet-4-5","max_tokens":32,"stream":true,"messages":[{{"role":"user","content":"{CANARY_PROMPT} key {CANARY_SECRET_IN_PROMPT}"}}]}}"#
    );
    let wrong_key = conduit_gateway::keys::generate().unwrap().secret;
    type Case<'a> = (&'a str, Vec<(&'a str, String)>, String);
    let cases: Vec<Case> = vec![
        (
            "/v1/messages?q=".to_string() + CANARY_QUERY,
            vec![("x-api-key", key.clone())],
            prompt_body.clone(),
        ),
        (
            "/v1/chat/completions".into(),
            vec![("authorization", format!("Bearer {key}"))],
            prompt_body.clone(),
        ),
        (
            "/model/us.anthropic.claude-sonnet-4-5-20250929-v1:0/invoke-with-response-stream".into(),
            vec![("authorization", format!("Bearer {key}"))],
            format!(
                r#"{{"anthropic_version":"bedrock-2023-05-31","max_tokens":32,"messages":[{{"role":"user","content":"{CANARY_PROMPT} key {CANARY_SECRET_IN_PROMPT}"}}]}}"#
            ),
        ),
        // Refusals that carry the canaries: bad JSON, unknown key, a provider key, wrong type.
        (
            "/v1/messages".into(),
            vec![("x-api-key", key.clone())],
            format!("{{\"model\":\"{CANARY_PROMPT}\""),
        ),
        // Valid JSON of the wrong shape: serde's own message quotes the value (`invalid type:
        // string "…"`), and refusals are logged.
        (
            "/v1/messages".into(),
            vec![("x-api-key", key.clone())],
            format!("\"{CANARY_PROMPT}\""),
        ),
        // Valid JSON with prompt text in the model field: forwarded, but never recorded as a model.
        (
            "/v1/messages".into(),
            vec![("x-api-key", key.clone())],
            format!("{{\"model\":\"{CANARY_PROMPT}\",\"max_tokens\":8,\"messages\":[]}}"),
        ),
        (
            "/v1/messages".into(),
            vec![("x-api-key", wrong_key.clone())],
            prompt_body.clone(),
        ),
        (
            "/v1/messages".into(),
            vec![("x-api-key", CANARY_CREDENTIAL.into())],
            prompt_body.clone(),
        ),
        (
            "/v1/messages".into(),
            vec![("x-api-key", key.clone()), ("x-mock-mode", "midstream-error".into())],
            prompt_body.clone(),
        ),
        (
            "/v1/messages".into(),
            vec![("x-api-key", key.clone()), ("x-mock-mode", "status-500".into())],
            prompt_body.clone(),
        ),
    ]
    .into_iter()
    .map(|(p, h, b)| (Box::leak(p.into_boxed_str()) as &str, h, b))
    .collect();
    let mut answered = Vec::new();
    for (path, headers, body) in &cases {
        let mut req = http::Request::post(format!("http://{listen}{path}")).header("content-type", "application/json");
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let resp = client
            .request(req.body(Full::new(bytes::Bytes::from(body.clone()))).unwrap())
            .await
            .unwrap();
        answered.push(resp.status().as_u16());
        let _ = resp.into_body().collect().await;
    }
    assert_eq!(answered, [200, 200, 200, 400, 400, 200, 401, 401, 200, 500]);
    // The secret in the prompt was found (alert); now block it and send it again.
    cli(&["policy", "mode", "secret.*", "block"]);
    let resp = client
        .request(
            http::Request::post(format!("http://{listen}/v1/messages"))
                .header("content-type", "application/json")
                .header("x-api-key", &key)
                .body(Full::new(bytes::Bytes::from(prompt_body.clone())))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let refusal = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(
        contains(&refusal, "secret.aws-access-key"),
        "{}",
        String::from_utf8_lossy(&refusal)
    );
    cli(&["findings", "list"]);
    cli(&["findings", "list", "--json"]);
    cli(&["findings", "stats"]);
    cli(&["policy", "list"]);
    let text = data.path().join("prompt.txt");
    std::fs::write(&text, format!("{CANARY_PROMPT} {CANARY_SECRET_IN_PROMPT}")).unwrap();
    let tested = cli(&["policy", "test", "--builtin", "--text", text.to_str().unwrap()]);
    assert!(
        contains(&tested, "secret.aws-access-key"),
        "{}",
        String::from_utf8_lossy(&tested)
    );
    std::fs::remove_file(&text).unwrap();
    // The audit log, its exports and reports, and the metrics.
    let verified = cli(&["audit", "verify"]);
    assert!(
        contains(&verified, "audit chain intact"),
        "{}",
        String::from_utf8_lossy(&verified)
    );
    for format in ["csv", "json", "jsonl"] {
        let exported = cli(&["audit", "export", "--format", format]);
        assert!(contains(&exported, "/v1/messages") && contains(&exported, "policy_blocked"));
    }
    cli(&["rot", "--format", "json"]);
    cli(&["rot", "--by", "key"]);
    cli(&["sessions", "--limit", "5"]);
    let token = std::fs::read_to_string(data.path().join("admin.token")).unwrap();
    let metrics = client
        .request(
            http::Request::get(format!("http://{admin}/metrics"))
                .header("authorization", format!("Bearer {}", token.trim()))
                .body(Full::new(bytes::Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes();
    assert!(
        contains(&metrics, "conduit_requests_total"),
        "{}",
        String::from_utf8_lossy(&metrics)
    );
    assert!(contains(
        &metrics,
        "conduit_findings_total{category=\"secret.aws-access-key\",mode=\"block\"} 1"
    ));
    cli(&["keys", "list"]);
    cli(&["credentials", "list"]);
    cli(&["keys", "list", "--json"]);
    cli(&["credentials", "list", "--json"]);

    let logs = terminate(gateway).stderr;
    assert!(contains(&logs, "conduit::audit"), "the audit events are in the log");
    assert!(contains(&logs, "\"status\":200"), "audit records carry statuses");
    assert!(contains(&logs, "policy finding"), "findings are logged (as metadata)");
    assert!(
        contains(&logs, "request refused"),
        "debug-level lines were captured too"
    );

    let mut stored = Vec::new();
    files_under(data.path(), &mut stored);
    assert!(stored.len() > 3, "the store wrote files: {stored:?}");
    let canaries = [
        CANARY_CREDENTIAL,
        CANARY_AWS_SECRET,
        "HYGIENECANARYCREDENTIAL",
        "HYGIENE-CANARY-PROMPT",
        "BLUEHERON",
        CANARY_SECRET_IN_PROMPT,
        CANARY_QUERY,
        "Conduit mock upstream", // completion text
        key.as_str(),
        &key[3..30],
        &wrong_key[3..30],
    ];
    for canary in canaries {
        assert!(!contains(&logs, canary), "log contains {canary:?}");
        assert!(!contains(&cli_output, canary), "CLI output contains {canary:?}");
        assert!(!contains(&metrics, canary), "/metrics contains {canary:?}");
        assert!(!contains(&refusal, canary), "the block message contains {canary:?}");
        for file in &stored {
            assert!(
                !contains(&std::fs::read(file).unwrap(), canary),
                "{} contains {canary:?}",
                file.display()
            );
        }
    }
}

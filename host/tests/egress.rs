//! The egress gate (issue 13): with `secret.*` in block mode, a canary GitHub token reaches the
//! upstream in **no** request shape. Each case names the class of bypass it guards (the classes a
//! security review found on the first wave, and more); each asserts the client got a refusal or a
//! block and the mock provider received nothing. Then: a property test over random bodies, the
//! declared-passthrough and canonical-path rules, and what may still pass (clean traffic, in its
//! canonical form, with only allow-listed headers).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Harness, Reply};
use http::Method;

const TOKEN: &str = "ghp_R8xk2LmQ9vTz4WcY7nB3pJ6hF1sD5gA0eK2u";
const BLOCK: &str = "[policies.modes]\n\"secret.*\" = \"block\"\n";
const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==";

async fn gateway(extra: &str) -> Harness {
    Harness::builder().toml(&format!("{BLOCK}{extra}")).start().await
}

/// One request shape: the class it guards, how it is sent.
struct Case {
    class: &'static str,
    method: Method,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn anthropic(class: &'static str, path: &str, body: impl Into<Vec<u8>>) -> Case {
    Case {
        class,
        method: Method::POST,
        path: path.into(),
        headers: vec![
            ("anthropic-version".into(), "2023-06-01".into()),
            ("content-type".into(), "application/json".into()),
        ],
        body: body.into(),
    }
}

fn openai(class: &'static str, path: &str, body: impl Into<Vec<u8>>) -> Case {
    Case {
        class,
        method: Method::POST,
        path: path.into(),
        headers: vec![("content-type".into(), "application/json".into())],
        body: body.into(),
    }
}

/// A form part: name, file name, media type, bytes.
type Part<'a> = (&'a str, Option<&'a str>, Option<&'a str>, &'a [u8]);

fn multipart(class: &'static str, path: &str, anthropic: bool, parts: &[Part<'_>]) -> Case {
    let boundary = "----conduitTestBoundary7f3";
    let mut body = Vec::new();
    for (name, filename, ct, content) in parts {
        body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"").as_bytes());
        if let Some(f) = filename {
            body.extend_from_slice(format!("; filename=\"{f}\"").as_bytes());
        }
        body.extend_from_slice(b"\r\n");
        if let Some(ct) = ct {
            body.extend_from_slice(format!("Content-Type: {ct}\r\n").as_bytes());
        }
        body.extend_from_slice(b"\r\n");
        body.extend_from_slice(content);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let mut headers = vec![(
        "content-type".to_string(),
        format!("multipart/form-data; boundary={boundary}"),
    )];
    if anthropic {
        headers.push(("anthropic-version".into(), "2023-06-01".into()));
        headers.push(("anthropic-beta".into(), "files-api-2025-04-14".into()));
    }
    Case {
        class,
        method: Method::POST,
        path: path.into(),
        headers,
        body,
    }
}

impl Case {
    /// Replaces the first part's Content-Disposition parameters.
    fn with_raw_disposition(mut self, params: &str) -> Case {
        let text = String::from_utf8_lossy(&self.body).into_owned();
        let from = text.find("name=\"file\"").unwrap();
        let to = from + text[from..].find("\r\n").unwrap();
        self.body = format!("{}{params}{}", &text[..from], &text[to..]).into_bytes();
        self
    }
}

fn with_header(mut c: Case, k: &str, v: &str) -> Case {
    c.headers.push((k.into(), v.into()));
    c
}

async fn send(h: &Harness, c: &Case) -> Reply {
    let bearer = format!("Bearer {}", h.key);
    let mut headers: Vec<(&str, &str)> = c.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let anthropic = c.headers.iter().any(|(k, _)| k == "anthropic-version");
    if anthropic {
        headers.push(("x-api-key", &h.key));
    } else {
        headers.push(("authorization", &bearer));
    }
    h.send(c.method.clone(), &c.path, &headers, c.body.clone()).await
}

/// Sends each case; each must be refused or blocked, and the mock must have received nothing.
async fn assert_never_leaves(h: &Harness, cases: &[Case]) {
    for c in cases {
        h.mock_reset().await;
        let r = send(h, c).await;
        let received = h.mock_log().await;
        assert!(
            !r.status.is_success() && received.is_empty(),
            "[{}] {} {}: status {}, the upstream received {} request(s): {}",
            c.class,
            c.method,
            c.path,
            r.status,
            received.len(),
            String::from_utf8_lossy(&r.body)
        );
        // The answer never quotes the canary back.
        assert!(
            !String::from_utf8_lossy(&r.body).contains(TOKEN),
            "[{}] the refusal echoes the canary",
            c.class
        );
    }
}

fn msg(content: serde_json::Value) -> Vec<u8> {
    serde_json::json!({"model": "claude-sonnet-4-5", "max_tokens": 16, "messages": [{"role": "user", "content": content}]})
        .to_string()
        .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_secret_never_reaches_the_provider() {
    let h = gateway("").await;
    let split = TOKEN.len() / 2;
    let (a, b) = TOKEN.split_at(split);
    let deep = format!(
        r#"{{"model":"claude-sonnet-4-5","max_tokens":16,"messages":[{{"role":"assistant","content":[{{"type":"tool_use","id":"toolu_1","name":"x","input":{}"{TOKEN}"{}}}]}}]}}"#,
        "[".repeat(300),
        "]".repeat(300)
    );
    let many: Vec<String> = (0..300_000).map(|i| format!("\"{}\"", i % 10)).collect();
    let too_many = format!(
        r#"{{"model":"claude-sonnet-4-5","max_tokens":16,"messages":[{{"role":"user","content":[{},"{TOKEN}"]}}]}}"#,
        many.join(",")
    );
    let jsonl = format!(
        "{{\"custom_id\":\"1\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{{\"model\":\"gpt-5\",\"messages\":[{{\"role\":\"user\",\"content\":\"clean\"}}]}}}}\n{{\"custom_id\":\"2\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{{\"model\":\"gpt-5\",\"messages\":[{{\"role\":\"user\",\"content\":\"{TOKEN}\"}}]}}}}\n"
    );
    let cases = vec![
        // The body parses for the validator but not for the extractor.
        anthropic(
            "lone surrogate (Node's JSON.stringify of a split emoji)",
            "/v1/messages",
            format!(
                r#"{{"model":"claude-sonnet-4-5","max_tokens":16,"messages":[{{"role":"user","content":"{a}\uD83D{b}"}}]}}"#
            ),
        ),
        anthropic(
            "lone low surrogate",
            "/v1/messages",
            format!(
                r#"{{"model":"claude-sonnet-4-5","max_tokens":16,"messages":[{{"role":"user","content":"x\uDE00 {TOKEN}"}}]}}"#
            ),
        ),
        anthropic(
            "raw invalid UTF-8",
            "/v1/messages",
            [
                &br#"{"model":"claude-sonnet-4-5","max_tokens":16,"messages":[{"role":"user","content":"caf"#[..],
                b"\xe9 ",
                TOKEN.as_bytes(),
                b"\"}]}",
            ]
            .concat(),
        ),
        anthropic("deep nesting in a tool input", "/v1/messages", deep),
        anthropic(
            "duplicate key: the second copy carries the canary",
            "/v1/messages",
            format!(
                r#"{{"model":"claude-sonnet-4-5","max_tokens":16,"messages":[{{"role":"user","content":"x","content":"{TOKEN}"}}]}}"#
            ),
        ),
        // Limits that failed open.
        anthropic("more text values than the limit", "/v1/messages", too_many),
        // Skip lists applied everywhere.
        anthropic(
            "structure keys inside a tool input",
            "/v1/messages",
            msg(serde_json::json!([{"type": "tool_use", "id": "toolu_1", "name": "x", "input": {"type": TOKEN}}])),
        ),
        anthropic(
            "a signature key inside a tool input",
            "/v1/messages",
            msg(
                serde_json::json!([{"type": "tool_use", "id": "toolu_1", "name": "x", "input": {"signature": TOKEN, "id": TOKEN}}]),
            ),
        ),
        anthropic(
            "a data: URI that is not an image",
            "/v1/messages",
            msg(serde_json::json!(format!(
                "data:image/png;base64,{}{TOKEN}",
                "A".repeat(80)
            ))),
        ),
        anthropic(
            "an image whose bytes are not the image",
            "/v1/messages",
            msg(
                serde_json::json!([{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": TOKEN}}]),
            ),
        ),
        anthropic(
            "a tool_use id that is not a provider id",
            "/v1/messages",
            msg(serde_json::json!([{"type": "tool_result", "tool_use_id": TOKEN, "content": "ok"}])),
        ),
        // Content-bearing fields that were not scanned.
        anthropic(
            "tool definition description",
            "/v1/messages",
            format!(
                r#"{{"model":"claude-sonnet-4-5","max_tokens":16,"tools":[{{"name":"t","description":"use {TOKEN}","input_schema":{{"type":"object"}}}}],"messages":[{{"role":"user","content":"hi"}}]}}"#
            ),
        ),
        anthropic(
            "tool schema",
            "/v1/messages",
            format!(
                r#"{{"model":"claude-sonnet-4-5","max_tokens":16,"tools":[{{"name":"t","input_schema":{{"type":"object","properties":{{"k":{{"default":"{TOKEN}"}}}}}}}}],"messages":[{{"role":"user","content":"hi"}}]}}"#
            ),
        ),
        anthropic(
            "metadata",
            "/v1/messages",
            format!(
                r#"{{"model":"claude-sonnet-4-5","max_tokens":16,"metadata":{{"user_id":"{TOKEN}"}},"messages":[{{"role":"user","content":"hi"}}]}}"#
            ),
        ),
        anthropic(
            "MCP server authorization token",
            "/v1/messages",
            format!(
                r#"{{"model":"claude-sonnet-4-5","max_tokens":16,"mcp_servers":[{{"type":"url","url":"https://mcp.example","name":"m","authorization_token":"{TOKEN}"}}],"messages":[{{"role":"user","content":"hi"}}]}}"#
            ),
        ),
        anthropic(
            "system string",
            "/v1/messages",
            format!(
                r#"{{"model":"claude-sonnet-4-5","max_tokens":16,"system":"key {TOKEN}","messages":[{{"role":"user","content":"hi"}}]}}"#
            ),
        ),
        anthropic(
            "an unknown top-level field",
            "/v1/messages",
            format!(
                r#"{{"model":"claude-sonnet-4-5","max_tokens":16,"messages":[{{"role":"user","content":"hi"}}],"x_notes":"{TOKEN}"}}"#
            ),
        ),
        anthropic(
            "a key that is the secret",
            "/v1/messages",
            format!(
                r#"{{"model":"claude-sonnet-4-5","max_tokens":16,"messages":[{{"role":"user","content":"hi","{TOKEN}":1}}]}}"#
            ),
        ),
        openai(
            "OpenAI prediction",
            "/v1/chat/completions",
            format!(
                r#"{{"model":"gpt-5","messages":[{{"role":"user","content":"hi"}}],"prediction":{{"type":"content","content":"{TOKEN}"}}}}"#
            ),
        ),
        openai(
            "completions suffix",
            "/v1/completions",
            format!(r#"{{"model":"gpt-3.5-turbo-instruct","prompt":"a","suffix":"{TOKEN}"}}"#),
        ),
        openai(
            "Responses instructions",
            "/v1/responses",
            format!(r#"{{"model":"gpt-5","instructions":"{TOKEN}","input":"hi"}}"#),
        ),
        openai(
            "Responses function call output",
            "/v1/responses",
            format!(
                r#"{{"model":"gpt-5","input":[{{"type":"function_call_output","call_id":"call_1","output":"{TOKEN}"}}]}}"#
            ),
        ),
        openai(
            "embeddings input array",
            "/v1/embeddings",
            format!(r#"{{"model":"text-embedding-3-small","input":["a","{TOKEN}"]}}"#),
        ),
        openai(
            "moderations",
            "/v1/moderations",
            format!(r#"{{"model":"omni-moderation-latest","input":"{TOKEN}"}}"#),
        ),
        // The request head reaches the provider too.
        with_header(
            anthropic(
                "an allow-listed header's value",
                "/v1/messages",
                msg(serde_json::json!("hi")),
            ),
            "x-claude-code-session-id",
            TOKEN,
        ),
        anthropic(
            "the query string",
            &format!("/v1/messages?beta=true&note={TOKEN}"),
            msg(serde_json::json!("hi")),
        ),
        // Endpoints that were forwarded as-is with the real credential.
        anthropic(
            "Anthropic message batches",
            "/v1/messages/batches",
            format!(
                r#"{{"requests":[{{"custom_id":"a","params":{{"model":"claude-haiku-4-5","max_tokens":8,"messages":[{{"role":"user","content":"hi"}}]}}}},{{"custom_id":"b","params":{{"model":"claude-haiku-4-5","max_tokens":8,"messages":[{{"role":"user","content":"{TOKEN}"}}]}}}}]}}"#
            ),
        ),
        multipart(
            "Anthropic file upload (text part)",
            "/v1/files",
            true,
            &[(
                "file",
                Some("notes.txt"),
                Some("text/plain"),
                format!("deploy key {TOKEN}").as_bytes(),
            )],
        ),
        multipart(
            "a binary upload part",
            "/v1/files",
            true,
            &[(
                "file",
                Some("x.pdf"),
                Some("application/pdf"),
                b"%PDF-1.7 \x00\x01binary",
            )],
        ),
        multipart(
            "OpenAI batch file (JSONL)",
            "/v1/files",
            false,
            &[
                ("purpose", None, None, b"batch"),
                ("file", Some("in.jsonl"), Some("application/jsonl"), jsonl.as_bytes()),
            ],
        ),
        multipart(
            "OpenAI upload part",
            "/v1/uploads/upload_abc123/parts",
            false,
            &[(
                "data",
                Some("blob"),
                Some("application/octet-stream"),
                format!("chunk {TOKEN}").as_bytes(),
            )],
        ),
        openai(
            "OpenAI batch over a file not uploaded here",
            "/v1/batches",
            r#"{"input_file_id":"file-elsewhere","endpoint":"/v1/chat/completions","completion_window":"24h"}"#,
        ),
        openai(
            "realtime client secret (mints provider keys)",
            "/v1/realtime/client_secrets",
            r#"{"session":{"type":"realtime"}}"#,
        ),
        openai(
            "realtime sessions",
            "/v1/realtime/sessions",
            r#"{"model":"gpt-realtime"}"#,
        ),
        openai(
            "an unknown /v1 path",
            "/v1/assistants",
            format!(r#"{{"instructions":"{TOKEN}"}}"#),
        ),
        openai("LiteLLM's admin API", "/key/generate", r#"{"models":["gpt-5"]}"#),
        openai(
            "images (not declared)",
            "/v1/images/generations",
            format!(r#"{{"prompt":"{TOKEN}"}}"#),
        ),
        // Paths a server may normalise differently.
        anthropic("a doubled slash", "/v1//messages", msg(serde_json::json!(TOKEN))),
        anthropic("a dot segment", "/v1/./messages", msg(serde_json::json!(TOKEN))),
        anthropic("a dot-dot segment", "/v1/x/../messages", msg(serde_json::json!(TOKEN))),
        anthropic(
            "an encoded dot segment",
            "/v1/%2e%2e/v1/messages",
            msg(serde_json::json!(TOKEN)),
        ),
        anthropic("a ;parameter", "/v1/messages;x=1", msg(serde_json::json!(TOKEN))),
        anthropic(
            "encoded unreserved characters (canonicalised, then policed)",
            "/v1/%6Dessages",
            msg(serde_json::json!(TOKEN)),
        ),
        openai(
            "a path alias without /v1",
            "/chat/completions",
            format!(r#"{{"model":"gpt-5","messages":[{{"role":"user","content":"{TOKEN}"}}]}}"#),
        ),
        // Found by review (second pass): every key, every opaque blob, every id, the path.
        anthropic(
            "an unknown top-level key with a number value",
            "/v1/messages",
            format!(
                r#"{{"model":"claude-sonnet-4-5","max_tokens":16,"messages":[{{"role":"user","content":"hi"}}],"{TOKEN}":0}}"#
            ),
        ),
        anthropic(
            "an unknown key in a tool definition",
            "/v1/messages",
            format!(
                r#"{{"model":"claude-sonnet-4-5","max_tokens":16,"tools":[{{"name":"t","input_schema":{{}},"{TOKEN}":"x"}}],"messages":[{{"role":"user","content":"hi"}}]}}"#
            ),
        ),
        anthropic(
            "a thinking signature",
            "/v1/messages",
            msg(serde_json::json!([{"type": "thinking", "thinking": "x", "signature": TOKEN}])),
        ),
        anthropic(
            "redacted thinking data",
            "/v1/messages",
            msg(serde_json::json!([{"type": "redacted_thinking", "data": TOKEN}])),
        ),
        openai(
            "encrypted reasoning content",
            "/v1/responses",
            format!(
                r#"{{"model":"gpt-5","input":[{{"type":"reasoning","summary":[],"encrypted_content":"{TOKEN}"}}]}}"#
            ),
        ),
        anthropic(
            "a provider prefix followed by a secret",
            "/v1/messages",
            msg(serde_json::json!([{"type": "tool_result", "tool_use_id": format!("toolu_{TOKEN}"), "content": "ok"}])),
        ),
        anthropic(
            "a lowercase secret in a type position",
            "/v1/messages",
            msg(serde_json::json!([{"type": TOKEN.to_lowercase(), "text": "x"}])),
        ),
        Case {
            method: Method::GET,
            ..openai(
                "a secret as a stored-object id in the path",
                &format!("/v1/files/{TOKEN}/content"),
                "",
            )
        },
        Case {
            method: Method::GET,
            ..openai("a secret as a model id in the path", &format!("/v1/models/{TOKEN}"), "")
        },
        openai(
            "a secret as a Bedrock model id",
            &format!("/model/{TOKEN}/converse"),
            r#"{"messages":[{"role":"user","content":[{"text":"hi"}]}]}"#,
        ),
        multipart(
            "a batch file named with filename*",
            "/v1/files",
            false,
            &[
                ("purpose", None, None, b"batch"),
                ("file", None, Some("application/jsonl"), b"{}"),
            ],
        )
        .with_raw_disposition("name=\"file\"; filename*=UTF-8''in.jsonl"),
        multipart(
            "a secret as a part's name",
            "/v1/files",
            true,
            &[(TOKEN, Some("a.txt"), Some("text/plain"), b"hello")],
        ),
        with_header(
            anthropic(
                "a secret as an allow-listed header's name",
                "/v1/messages",
                msg(serde_json::json!("hi")),
            ),
            &format!("x-stainless-{}", TOKEN.to_lowercase()),
            "1",
        ),
        openai(
            "a prompt as token ids",
            "/v1/completions",
            r#"{"model":"gpt-3.5-turbo-instruct","prompt":[[70,3682,62]]}"#,
        ),
        openai(
            "the Uploads API (parts split text)",
            "/v1/uploads/upload_abc123/parts",
            "x",
        ),
        anthropic(
            "text appended to a real image's first bytes",
            "/v1/messages",
            msg(
                serde_json::json!([{"type": "image", "source": {"type": "base64", "media_type": "image/png",
                "data": "iVBORw0KGgoAAAANSUhEUgAAAAEAAAAB/AKIAQ7R3T2XZK4MWV6N5+/="}}]),
            ),
        ),
        multipart(
            "invalid UTF-8 splitting a secret in a text upload",
            "/v1/files",
            true,
            &[(
                "file",
                Some("notes.txt"),
                Some("text/plain"),
                &[&TOKEN.as_bytes()[..10], b"\xff", &TOKEN.as_bytes()[10..]].concat(),
            )],
        ),
        // Declared types of the wrong shape.
        anthropic(
            "a JSON array body",
            "/v1/messages",
            format!(r#"[{{"content":"{TOKEN}"}}]"#),
        ),
        Case {
            headers: vec![
                ("anthropic-version".into(), "2023-06-01".into()),
                ("content-type".into(), "text/plain".into()),
            ],
            ..anthropic(
                "a JSON endpoint sent as text/plain",
                "/v1/messages",
                msg(serde_json::json!(TOKEN)),
            )
        },
    ];
    eprintln!("{} request shapes", cases.len());
    assert!(cases.len() >= 40, "{} cases", cases.len());
    assert_never_leaves(&h, &cases).await;
}

/// Azure-native paths are policed, judged by the model allow-list and metered like their `/v1`
/// equivalents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_native_paths_are_policed_judged_and_metered() {
    let h = Harness::builder()
        .toml(&format!(
            "{BLOCK}[upstream.openai]\nprovider = \"azure\"\n[upstream.openai.deployments]\n\"gpt-5\" = \"prod-5\"\n[policies.builtin.models.config]\nallow = [\"gpt-5\"]\n"
        ))
        .start()
        .await;
    let path = "/openai/deployments/prod-5/chat/completions?api-version=2024-10-21";
    let canary = openai(
        "Azure-native deployments path",
        path,
        format!(r#"{{"messages":[{{"role":"user","content":"{TOKEN}"}}]}}"#),
    );
    assert_never_leaves(&h, &[canary]).await;
    // The deployment of a disallowed model is refused by the allow-list (403), whatever the body says.
    let other = openai(
        "Azure deployment of a model outside the allow-list",
        "/openai/deployments/gpt-4o/chat/completions",
        r#"{"model":"gpt-5","messages":[{"role":"user","content":"hi"}]}"#,
    );
    h.mock_reset().await;
    let r = send(&h, &other).await;
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
    assert!(h.mock_log().await.is_empty());
    // A clean request passes, metered under the deployment's model.
    let clean = openai("clean", path, r#"{"messages":[{"role":"user","content":"hi"}]}"#);
    let r = send(&h, &clean).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let rows = h.spend(1).await;
    assert!(
        rows.iter()
            .any(|r| r.provider == "azure" && r.model == "gpt-5" && r.cost_micros > 0),
        "{rows:?}"
    );
}

/// Bedrock-native: the path names the model Bedrock runs; a body `model` member does not move the
/// allow-list or the price.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bedrock_native_body_model_does_not_override_the_path() {
    let h = Harness::builder()
        .toml("[policies.builtin.models.config]\nallow = [\"claude-haiku-*\"]\n")
        .start()
        .await;
    let r = h
        .send(
            Method::POST,
            "/model/us.anthropic.claude-opus-4-8/invoke",
            &[
                ("authorization", &format!("Bearer {}", h.key)),
                ("content-type", "application/json"),
            ],
            r#"{"model":"claude-haiku-4-5","anthropic_version":"bedrock-2023-05-31","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}"#,
        )
        .await;
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
    assert!(String::from_utf8_lossy(&r.body).contains("claude-opus-4-8"));
    assert!(h.mock_log().await.is_empty());
}

/// Property: random JSON bodies (random nesting, escapes, surrogates, key orders, structure-shaped
/// keys) with the canary at a random string position, sent to a random endpoint → refused or
/// blocked; never forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bodies_with_a_canary_are_never_forwarded() {
    let h = gateway("").await;
    let mut bodies = conduit_gateway::content::canary::Bodies::new(0x5eed_1234_abcd);
    let paths = [
        "/v1/messages",
        "/v1/chat/completions",
        "/v1/responses",
        "/v1/messages/count_tokens",
        "/v1/embeddings",
    ];
    for round in 0..250 {
        let body = bodies.next_body();
        let path = paths[round % paths.len()];
        h.mock_reset().await;
        let c = if path.starts_with("/v1/messages") {
            anthropic("property", path, body.clone())
        } else {
            openai("property", path, body.clone())
        };
        let r = send(&h, &c).await;
        assert!(
            h.mock_log().await.is_empty(),
            "round {round}: {path} forwarded a body with the canary (status {}): {body}",
            r.status
        );
    }
}

/// What may pass does, in canonical form, with only allow-listed headers; and the audit log
/// records the route template and the treatment, never the client's path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_traffic_passes_canonically_with_allow_listed_headers() {
    let h = gateway("").await;
    let mut c = anthropic("clean", "/v1/%6Dessages/?beta=true", msg(serde_json::json!("hello")));
    for (k, v) in [
        ("cookie", "session=abc"),
        ("x-forwarded-for", "10.1.2.3"),
        ("x-litellm-api-key", "sk-litellm"),
        ("x-portkey-custom-host", "https://elsewhere.example"),
        ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        ("anthropic-beta", "context-1m-2025-08-07"),
        ("x-stainless-lang", "js"),
    ] {
        c = with_header(c, k, v);
    }
    let r = send(&h, &c).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let log = h.mock_log().await;
    assert_eq!(log.len(), 1);
    assert_eq!(
        (log[0].path.as_str(), log[0].query.as_deref()),
        ("/v1/messages", Some("beta=true"))
    );
    let names: Vec<&str> = log[0].headers.iter().map(|(k, _)| k.as_str()).collect();
    for dropped in [
        "cookie",
        "x-forwarded-for",
        "x-litellm-api-key",
        "x-portkey-custom-host",
        "traceparent",
    ] {
        assert!(!names.contains(&dropped), "{dropped} reached the upstream: {names:?}");
    }
    for kept in [
        "anthropic-version",
        "anthropic-beta",
        "x-stainless-lang",
        "x-api-key",
        "content-type",
    ] {
        assert!(names.contains(&kept), "{kept} was dropped: {names:?}");
    }
    // Real binary content is structure: an image passes untouched.
    let image = msg(
        serde_json::json!([{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}, {"type": "text", "text": "what is this?"}]),
    );
    let r = send(&h, &anthropic("image", "/v1/messages", image)).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    // The alias without /v1 goes upstream as its /v1 form.
    let r = send(
        &h,
        &openai(
            "alias",
            "/chat/completions",
            r#"{"model":"gpt-5","messages":[{"role":"user","content":"hi"}]}"#,
        ),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(h.mock_log().await.last().unwrap().path, "/v1/chat/completions");
    // The audit log: templates and treatments, never a raw path.
    let r = send(&h, &openai("unknown", "/v1/assistants/asst_secret-ish", "{}")).await;
    assert_eq!(r.status, 404, "{}", String::from_utf8_lossy(&r.body));
    assert!(String::from_utf8_lossy(&r.body).contains("[[egress.passthrough]]"));
    h.gateway().audit.sync();
    let audit = audit_lines(&h);
    let paths: Vec<(&str, &str)> = audit
        .iter()
        .map(|v| (v["path"].as_str().unwrap(), v["treatment"].as_str().unwrap()))
        .collect();
    assert_eq!(
        paths,
        [
            ("/v1/messages", "inspected"),
            ("/v1/messages", "inspected"),
            ("/v1/chat/completions", "inspected"),
            ("(refused path)", "refused")
        ]
    );
    assert!(
        !audit
            .iter()
            .any(|v| v.to_string().contains("asst_secret-ish") || v.to_string().contains("%6D"))
    );
}

fn audit_lines(h: &Harness) -> Vec<serde_json::Value> {
    let mut lines = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(h.data.path().join("audit"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    for f in files {
        for l in std::fs::read_to_string(f).unwrap().lines() {
            lines.push(serde_json::from_str(l).unwrap());
        }
    }
    lines
}

/// Declared passthroughs: scanned as declared, audited with their treatment; a billable one
/// reserves and bills what it declares.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_passthroughs_are_treated_as_declared() {
    let h = gateway(
        r#"
[[egress.passthrough]]
family = "openai"
path = "/v1/images/generations"
scan = "json"
billable = true
reserve_usd = "0.25"

[[egress.passthrough]]
family = "openai"
methods = ["GET", "POST"]
path = "/v1/vector_stores/{id}/files"
scan = "opaque"
"#,
    )
    .await;
    let blocked = openai(
        "declared json passthrough",
        "/v1/images/generations",
        format!(r#"{{"prompt":"{TOKEN}"}}"#),
    );
    assert_never_leaves(&h, &[blocked]).await;
    let r = send(
        &h,
        &openai(
            "declared json passthrough",
            "/v1/images/generations",
            r#"{"prompt":"a cat"}"#,
        ),
    )
    .await;
    assert_eq!(
        h.mock_log().await.len(),
        1,
        "forwarded (the mock answers 404: {})",
        r.status
    );
    let r = send(
        &h,
        &openai(
            "declared opaque passthrough",
            "/v1/vector_stores/vs_1/files",
            r#"{"file_id":"x"}"#,
        ),
    )
    .await;
    assert_eq!(h.mock_log().await.len(), 2, "{}", r.status);
    // Undeclared neighbours stay refused.
    let r = send(&h, &openai("undeclared", "/v1/vector_stores/vs_1", "{}")).await;
    assert_eq!(r.status, 404);
    h.gateway().audit.sync();
    let treatments: Vec<String> = audit_lines(&h)
        .iter()
        .map(|v| format!("{} {}", v["path"].as_str().unwrap(), v["treatment"].as_str().unwrap()))
        .collect();
    assert!(
        treatments.contains(&"/v1/images/generations passthrough:json".to_string()),
        "{treatments:?}"
    );
    assert!(
        treatments.contains(&"/v1/vector_stores/{id}/files passthrough:opaque".to_string()),
        "{treatments:?}"
    );
    // Config that would shadow an understood endpoint is refused at start-up.
    let raw: conduit_gateway::config::RawConfig =
        toml::from_str("[[egress.passthrough]]\nfamily = \"anthropic\"\npath = \"/v1/messages\"\nscan = \"opaque\"\n")
            .unwrap();
    let e = raw.validate(&|_| None).unwrap_err().to_string();
    assert!(e.contains("understands and polices"), "{e}");
}

/// Findings carry their origin, so an operator can treat MCP configs differently from prompts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modes_per_origin() {
    let h = Harness::builder()
        .toml("[policies.modes]\n\"secret.*\" = \"block\"\n\"secret.*@mcp\" = \"alert\"\n")
        .start()
        .await;
    let body = format!(
        r#"{{"model":"claude-sonnet-4-5","max_tokens":16,"mcp_servers":[{{"type":"url","url":"https://mcp.example","name":"m","authorization_token":"{TOKEN}"}}],"messages":[{{"role":"user","content":"hi"}}]}}"#
    );
    let r = send(&h, &anthropic("mcp token, alert mode", "/v1/messages", body)).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = send(
        &h,
        &anthropic(
            "the same token in the prompt",
            "/v1/messages",
            msg(serde_json::json!(TOKEN)),
        ),
    )
    .await;
    assert_eq!(r.status, 400);
}

/// OpenAI batches: the JSONL file is scanned at upload and recorded; a batch over it is bounded
/// by its requests' worst case (and billed at it); a batch over any other file is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_batches_run_only_files_uploaded_and_scanned_here() {
    let h = gateway("").await;
    h.set_budget("team:payments", None, Some(100_000_000)).await;
    let line = |i: u32| {
        format!(
            "{{\"custom_id\":\"{i}\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{{\"model\":\"gpt-5\",\"max_completion_tokens\":100,\"messages\":[{{\"role\":\"user\",\"content\":\"q{i}\"}}]}}}}\n"
        )
    };
    let jsonl: String = (0..3).map(line).collect();
    let upload = multipart(
        "clean batch file",
        "/v1/files",
        false,
        &[
            ("purpose", None, None, b"batch"),
            ("file", Some("in.jsonl"), Some("application/jsonl"), jsonl.as_bytes()),
        ],
    );
    let r = send(&h, &upload).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let file_id = r.json()["id"].as_str().unwrap().to_string();
    let record = h
        .gateway()
        .state
        .uploads
        .get("openai", &file_id)
        .await
        .unwrap()
        .expect("recorded");
    assert_eq!((record.purpose.as_str(), record.requests.len()), ("batch", 3));
    let batch = openai(
        "batch",
        "/v1/batches",
        format!(r#"{{"input_file_id":"{file_id}","endpoint":"/v1/chat/completions","completion_window":"24h"}}"#),
    );
    let r = send(&h, &batch).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    // Billed at its worst case, at batch rates, flagged as an estimate.
    let rows = h.spend(2).await;
    let prices = h.gateway().prices();
    let gpt5 = prices
        .lookup(conduit_gateway::protocol::Provider::OpenAi, "gpt-5")
        .unwrap();
    let batch_rates = conduit_gateway::prices::Billing {
        tier: conduit_gateway::prices::Tier::Batch,
        ..Default::default()
    };
    let expected: u64 = record
        .requests
        .iter()
        .map(|r| gpt5.worst_case(r.bytes, 100, 0, batch_rates))
        .sum();
    let charged: u64 = rows.iter().map(|r| r.cost_micros).sum();
    assert_eq!(charged, expected, "{rows:?}");
    assert!(rows.iter().any(|r| r.estimated > 0));
}

/// A secret in the model field (or a path's model id) is blocked, and not recorded as the
/// request's model anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_shaped_model_is_not_recorded() {
    let h = gateway("").await;
    let body = format!(r#"{{"model":"{TOKEN}","max_tokens":8,"messages":[{{"role":"user","content":"hi"}}]}}"#);
    assert_never_leaves(&h, &[anthropic("a secret as the model", "/v1/messages", body)]).await;
    let bedrock = openai(
        "a secret as a Bedrock model id",
        &format!("/model/{TOKEN}/invoke"),
        r#"{"max_tokens":8,"messages":[]}"#,
    );
    assert_never_leaves(&h, &[bedrock]).await;
    h.gateway().audit.sync();
    h.gateway().ledger.flush().await;
    let audit = audit_lines(&h);
    assert_eq!(audit.len(), 2);
    assert!(audit.iter().all(|v| !v.to_string().contains(TOKEN)), "{audit:?}");
    let day = conduit_gateway::clock::format_date(conduit_gateway::clock::now_unix());
    h.gateway().ledger.flush().await;
    let rows = h.gateway().state.spend.range(&day, &day).await.unwrap();
    assert!(rows.iter().all(|r| !r.model.contains(TOKEN)), "{rows:?}");
}

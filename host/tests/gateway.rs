//! The gateway core (issue 2): byte transparency, streaming, routing, stand-in keys, credentials,
//! and bad input — driven in-process against the mock upstream.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Harness, REAL_ANTHROPIC, REAL_OPENAI, sha256_hex};
use conduit_gateway::mock::MockOptions;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};

const STREAM_BODY: &str = r#"{"model":"claude-sonnet-4-5","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"say hello \u00e9 ✓"}]}"#;

/// A streaming Messages request with the harness key and one `x-mock-*` header.
fn stream_request(h: &Harness, mock_header: (&str, &str)) -> Request<Full<Bytes>> {
    Request::post(h.url("/v1/messages"))
        .header("x-api-key", &h.key)
        .header("content-type", "application/json")
        .header(mock_header.0, mock_header.1)
        .body(Full::new(Bytes::from(STREAM_BODY)))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_stream_is_byte_identical_and_carries_the_real_credential() {
    let h = Harness::start().await;
    let key = h.key.clone();
    let r = h
        .send(
            Method::POST,
            "/v1/messages?beta=true",
            &[
                ("x-api-key", &key),
                ("anthropic-version", "2023-06-01"),
                ("anthropic-beta", "a-2025,b-2026"),
                ("content-type", "application/json"),
                ("x-claude-code-session-id", "6932542e"),
            ],
            STREAM_BODY,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/event-stream; charset=utf-8"));
    assert!(r.header("x-conduit-request-id").is_some());
    let log = h.mock_log().await;
    assert_eq!(log.len(), 1);
    let seen = &log[0];
    assert_eq!(
        seen.body_sha256,
        sha256_hex(STREAM_BODY.as_bytes()),
        "request body bytes changed"
    );
    assert_eq!(seen.query.as_deref(), Some("beta=true"));
    assert_eq!(seen.header("x-api-key"), Some(REAL_ANTHROPIC));
    assert_eq!(seen.header("anthropic-beta"), Some("a-2025,b-2026"));
    assert_eq!(seen.header("x-claude-code-session-id"), Some("6932542e"));
    assert!(
        seen.headers.iter().all(|(_, v)| !v.contains(&h.key)),
        "the stand-in key must not reach the upstream"
    );
    assert_eq!(
        seen.response_sha256.as_deref(),
        Some(sha256_hex(&r.body).as_str()),
        "response bytes changed"
    );
    let text = String::from_utf8_lossy(&r.body);
    assert!(text.starts_with("event: message_start") && text.contains("event: message_stop"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_bearer_chat_and_responses_pass_through() {
    let h = Harness::start().await;
    let bearer = format!("Bearer {}", h.key);
    for (path, body) in [
        (
            "/v1/chat/completions",
            r#"{"model":"gpt-5","messages":[{"role":"user","content":"hi"}]}"#,
        ),
        (
            "/v1/chat/completions",
            r#"{"model":"gpt-5","stream":true,"stream_options":{"include_usage":true},"messages":[]}"#,
        ),
        ("/v1/responses", r#"{"model":"gpt-5-codex","stream":true,"input":"hi"}"#),
        ("/v1/embeddings", r#"{"model":"text-embedding-3-small","input":"hi"}"#),
    ] {
        h.mock_reset().await;
        let r = h
            .send(
                Method::POST,
                path,
                &[("authorization", &bearer), ("content-type", "application/json")],
                body,
            )
            .await;
        assert_eq!(r.status, 200, "{path}: {}", String::from_utf8_lossy(&r.body));
        let log = h.mock_log().await;
        assert_eq!(log[0].path, path);
        assert_eq!(
            log[0].header("authorization"),
            Some(format!("Bearer {REAL_OPENAI}").as_str())
        );
        assert!(log[0].header("x-api-key").is_none());
        assert_eq!(log[0].body_sha256, sha256_hex(body.as_bytes()));
        assert_eq!(log[0].response_sha256.as_deref(), Some(sha256_hex(&r.body).as_str()));
    }
    // /v1/models is shared: a Bearer without anthropic-version is OpenAI.
    let r = h
        .send(Method::GET, "/v1/models", &[("authorization", &bearer)], "")
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["object"], "list");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_py_style_bearer_with_anthropic_version_routes_to_anthropic() {
    let h = Harness::start().await;
    let bearer = format!("Bearer {}", h.key);
    let r = h
        .send(
            Method::GET,
            "/v1/models",
            &[("authorization", &bearer), ("anthropic-version", "2023-06-01")],
            "",
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["data"][0]["type"], "model");
    assert_eq!(h.mock_log().await[0].header("x-api-key"), Some(REAL_ANTHROPIC));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_is_forwarded_event_by_event_not_buffered() {
    // The mock sends the first events, then holds the stream open and silent. A gateway that
    // buffered the stream would deliver nothing; this one must deliver the first event at once.
    let h = Harness::start().await;
    let req = stream_request(&h, ("x-mock-mode", "stall"));
    let resp = tokio::time::timeout(Duration::from_secs(10), h.http.request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .expect("the first SSE event must arrive while the upstream is still streaming")
        .unwrap()
        .unwrap();
    let first = String::from_utf8_lossy(frame.data_ref().unwrap()).into_owned();
    assert!(first.starts_with("event: message_start"), "{first}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_cuts_a_silent_stream_but_not_a_long_busy_one() {
    let h = Harness::builder()
        .toml("[network]\nidle_timeout_secs = 1")
        .start()
        .await;
    // 24 events, 150 ms apart: ~3.5 s in all, longer than the idle timeout, never idle for 1 s.
    let r = h.messages_with(STREAM_BODY, &[("x-mock-delay-ms", "150")]).await;
    assert_eq!(r.status, 200);
    assert!(
        String::from_utf8_lossy(&r.body).contains("event: message_stop"),
        "long stream was cut"
    );

    // Silent after two events: cut after ~1 s of idleness, the client sees a truncated body.
    let resp = h
        .http
        .request(stream_request(&h, ("x-mock-mode", "stall")))
        .await
        .unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(10), resp.into_body().collect()).await;
    assert!(
        matches!(outcome, Ok(Err(_))),
        "an idle stream must end with an error, not hang"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_responses_reach_the_client_compressed_and_identical() {
    let h = Harness::builder()
        .mock(MockOptions {
            compress: Some("gzip".into()),
            ..Default::default()
        })
        .start()
        .await;
    for body in [
        STREAM_BODY,
        r#"{"model":"claude-haiku-4-5","max_tokens":8,"messages":[]}"#,
    ] {
        h.mock_reset().await;
        let r = h
            .messages_with(body, &[("accept-encoding", "gzip, deflate, br, zstd")])
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-encoding"), Some("gzip"));
        assert_eq!(&r.body[..2], &[0x1f, 0x8b], "still gzip on the wire");
        assert_eq!(
            h.mock_log().await[0].response_sha256.as_deref(),
            Some(sha256_hex(&r.body).as_str())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_errors_pass_through_unchanged() {
    let h = Harness::start().await;
    for mode in ["status-429", "status-500", "status-529", "status-400"] {
        h.mock_reset().await;
        let r = h.messages_with(STREAM_BODY, &[("x-mock-mode", mode)]).await;
        assert_eq!(r.status.as_u16(), mode[7..].parse::<u16>().unwrap());
        assert_eq!(
            h.mock_log().await[0].response_sha256.as_deref(),
            Some(sha256_hex(&r.body).as_str())
        );
        assert!(
            r.header("x-should-retry").is_none(),
            "the provider's own answer is not ours to annotate"
        );
    }
    // Mid-stream error event arrives intact.
    let r = h
        .messages_with(STREAM_BODY, &[("x-mock-mode", "midstream-error")])
        .await;
    assert!(String::from_utf8_lossy(&r.body).ends_with("event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n"));
    // Upstream resets before answering → 502 in the provider's shape, retryable.
    let r = h.messages_with(STREAM_BODY, &[("x-mock-mode", "reset")]).await;
    r.assert_anthropic_error(502, "api_error", "anthropic upstream");
    assert!(r.header("x-should-retry").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_upstream_is_a_502_in_the_callers_shape() {
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let h = Harness::builder()
        .env("UPSTREAM_OPENAI_URL", &format!("http://{closed}"))
        .start()
        .await;
    let bearer = format!("Bearer {}", h.key);
    let r = h
        .send(
            Method::POST,
            "/v1/chat/completions",
            &[("authorization", &bearer), ("content-type", "application/json")],
            "{}",
        )
        .await;
    r.assert_openai_error(502, "openai upstream could not be reached");
    assert!(
        !String::from_utf8_lossy(&r.body).contains(&closed.to_string()),
        "internal addresses stay in the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base_url_probes_answer_without_auth() {
    let h = Harness::start().await;
    let r = h.send(Method::HEAD, "/", &[], "").await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    let r = h.send(Method::GET, "/", &[], "").await;
    assert_eq!(r.json()["service"], "conduit");
    assert!(h.mock_log().await.is_empty(), "probes are answered locally");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_failures_say_which_and_what_to_do() {
    let h = Harness::start().await;
    let json = ("content-type", "application/json");
    // Missing.
    h.send(Method::POST, "/v1/messages", &[json], STREAM_BODY)
        .await
        .assert_anthropic_error(401, "authentication_error", "no API key");
    // Missing, OpenAI path → OpenAI shape.
    h.send(Method::POST, "/v1/chat/completions", &[json], "{}")
        .await
        .assert_openai_error(401, "no API key");
    // A provider key pasted by mistake.
    h.send(
        Method::POST,
        "/v1/messages",
        &[json, ("x-api-key", "sk-ant-api03-abcdef")],
        STREAM_BODY,
    )
    .await
    .assert_anthropic_error(401, "authentication_error", "provider API key, not a Conduit key");
    // Typo (checksum).
    let mut typo = h.key.clone().into_bytes();
    typo[10] = if typo[10] == b'A' { b'B' } else { b'A' };
    let typo = String::from_utf8(typo).unwrap();
    h.send(Method::POST, "/v1/messages", &[json, ("x-api-key", &typo)], STREAM_BODY)
        .await
        .assert_anthropic_error(401, "authentication_error", "malformed");
    // Well-formed but unknown (issued by another gateway).
    let other = conduit_gateway::keys::generate().unwrap().secret;
    let r = h
        .send(
            Method::POST,
            "/v1/messages",
            &[json, ("x-api-key", &other)],
            STREAM_BODY,
        )
        .await;
    r.assert_anthropic_error(401, "authentication_error", "not known to this gateway");
    assert!(
        !String::from_utf8_lossy(&r.body).contains(&other[..20]),
        "never echo the key"
    );
    assert_eq!(r.header("x-should-retry"), Some("false"));
    // Non-text header value.
    let req = Request::post(h.url("/v1/messages"))
        .header("x-api-key", http::HeaderValue::from_bytes(b"ck_\xff\xfe").unwrap())
        .body(Full::new(Bytes::from(STREAM_BODY)))
        .unwrap();
    assert_eq!(h.http.request(req).await.unwrap().status(), 401);
    // Authorization with another scheme.
    h.send(
        Method::POST,
        "/v1/messages",
        &[json, ("authorization", "Basic YWxhZGRpbjpvcGVu")],
        STREAM_BODY,
    )
    .await
    .assert_anthropic_error(401, "authentication_error", "Bearer <key>");
    assert!(
        h.mock_log().await.is_empty(),
        "nothing unauthenticated reaches the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_and_expiry_apply_on_the_very_next_request() {
    let h = Harness::start().await;
    assert_eq!(h.messages(STREAM_BODY).await.status, 200);
    conduit_gateway::operator::revoke_key(h.gateway().state.keys.as_ref(), &h.key_id)
        .await
        .unwrap();
    h.messages(STREAM_BODY)
        .await
        .assert_anthropic_error(401, "authentication_error", "was revoked");

    let other = h.new_key("bob@corp.example").await;
    let keys = h.gateway().state.keys.clone();
    let mut record = keys.by_id(&other.record.id).await.unwrap().unwrap();
    record.expires_at = Some(conduit_gateway::clock::now_unix() - 1);
    keys.update(&record).await.unwrap();
    let r = h
        .send(
            Method::POST,
            "/v1/messages",
            &[("x-api-key", &other.key), ("content-type", "application/json")],
            STREAM_BODY,
        )
        .await;
    r.assert_anthropic_error(401, "authentication_error", "expired at");
    assert!(String::from_utf8_lossy(&r.body).contains("bob@corp.example"));
    assert_eq!(h.mock_log().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_credential_fails_closed_with_an_operator_hint() {
    let h = Harness::builder().without_openai_credential().start().await;
    let bearer = format!("Bearer {}", h.key);
    let r = h
        .send(
            Method::POST,
            "/v1/responses",
            &[("authorization", &bearer), ("content-type", "application/json")],
            "{}",
        )
        .await;
    r.assert_openai_error(503, "conduit credentials set openai");
    assert_eq!(r.header("x-should-retry"), Some("false"));
    assert!(h.mock_log().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_provider_shaped_errors_and_the_gateway_keeps_serving() {
    let h = Harness::builder().env("CONDUIT_MAX_BODY_BYTES", "65536").start().await;
    let key = h.key.clone();
    let auth = ("x-api-key", key.as_str());
    let json = ("content-type", "application/json");

    let r = h
        .send(
            Method::POST,
            "/v1/messages",
            &[auth, json],
            r#"{"model": "claude", "messages": [ "#,
        )
        .await;
    r.assert_anthropic_error(400, "invalid_request_error", "not valid JSON");
    let r = h.send(Method::POST, "/v1/messages", &[auth, json], "[1,2,3]").await;
    r.assert_anthropic_error(400, "invalid_request_error", "not a JSON object");
    let r = h
        .send(
            Method::POST,
            "/v1/messages",
            &[auth, json],
            r#"{"model":"a","model":"b"}"#,
        )
        .await;
    r.assert_anthropic_error(400, "invalid_request_error", "repeats a key");
    let r = h
        .send(
            Method::POST,
            "/v1/messages",
            &[auth, ("content-type", "text/plain")],
            STREAM_BODY,
        )
        .await;
    r.assert_anthropic_error(415, "invalid_request_error", "\"text/plain\"");
    let r = h.send(Method::POST, "/v1/messages", &[auth], STREAM_BODY).await;
    r.assert_anthropic_error(415, "invalid_request_error", "content-type is missing");

    // Oversize, declared.
    let big = vec![b'x'; 70_000];
    let r = h.send(Method::POST, "/v1/messages", &[auth, json], big.clone()).await;
    r.assert_anthropic_error(413, "request_too_large", "65536 bytes");
    // Oversize, chunked (no content-length): cut while reading.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, std::convert::Infallible>>(4);
    tokio::spawn(async move {
        for _ in 0..10 {
            if tx
                .send(Ok(http_body::Frame::data(Bytes::from(vec![b' '; 10_000]))))
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let streamed = http_body_util::StreamBody::new(tokio_stream_from(rx));
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let req = Request::post(h.url("/v1/messages"))
        .header("x-api-key", &key)
        .header("content-type", "application/json")
        .body(streamed)
        .unwrap();
    early_refusal(client.request(req).await, 413);

    // Header abuse: hyper refuses heads over the limits before any stage runs.
    let mut many = Request::post(h.url("/v1/messages"));
    for i in 0..150 {
        many = many.header(format!("x-filler-{i}"), "v");
    }
    let resp = h
        .http
        .request(many.body(Full::new(Bytes::from(STREAM_BODY))).unwrap())
        .await;
    early_refusal(resp, 431);
    let huge = "a".repeat(200_000);
    let resp = h
        .http
        .request(
            Request::post(h.url("/v1/messages"))
                .header("x-huge", huge)
                .body(Full::new(Bytes::from(STREAM_BODY)))
                .unwrap(),
        )
        .await;
    early_refusal(resp, 431);

    assert!(h.mock_log().await.is_empty(), "no bad request reached the upstream");
    // Still serving.
    assert_eq!(h.messages(STREAM_BODY).await.status, 200);
}

/// A refusal sent before the request was fully read races the client's remaining writes: the
/// server answers and closes, and the client sees either the status or the connection closing
/// (reset / incomplete message). Either is correct; a hang or any other answer is not.
fn early_refusal(resp: Result<http::Response<hyper::body::Incoming>, hyper_util::client::legacy::Error>, status: u16) {
    match resp {
        Ok(r) => assert_eq!(r.status().as_u16(), status),
        Err(e) => {
            let chain = format!("{e:?}");
            assert!(
                chain.contains("IncompleteMessage")
                    || chain.contains("reset")
                    || chain.contains("BrokenPipe")
                    || chain.contains("closed"),
                "expected {status} or a closed connection, got {chain}"
            );
        }
    }
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_core_stream::Stream<Item = T> {
    futures_core_stream::from_fn(move |cx| rx.poll_recv(cx))
}

/// A minimal `Stream` over a poll function (avoids a futures dependency in tests).
mod futures_core_stream {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    pub use futures_core::Stream;

    pub struct FromFn<F>(F);

    pub fn from_fn<T, F: FnMut(&mut Context<'_>) -> Poll<Option<T>> + Unpin>(f: F) -> FromFn<F> {
        FromFn(f)
    }

    impl<T, F: FnMut(&mut Context<'_>) -> Poll<Option<T>> + Unpin> Stream for FromFn<F> {
        type Item = T;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
            (self.0)(cx)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_prefixes_and_pins_are_kept_in_the_canonical_path() {
    let mock = conduit_gateway::mock::start("127.0.0.1:0".parse().unwrap(), MockOptions::default())
        .await
        .unwrap();
    // The upstream has a path prefix (a proxy mounted under /llm): it is kept.
    let h = Harness::builder()
        .env("UPSTREAM_ANTHROPIC_URL", &format!("{}/llm", mock.url()))
        .start()
        .await;
    let key = h.key.clone();
    h.send(
        Method::POST,
        "/anthropic/v1/messages/batches?limit=3",
        &[("x-api-key", &key), ("content-type", "application/json")],
        "{}",
    )
    .await;
    let req = Request::get(format!("{}/__mock/requests", mock.url()))
        .body(Full::default())
        .unwrap();
    let log: Vec<conduit_gateway::mock::Recorded> = serde_json::from_slice(
        &h.http
            .request(req)
            .await
            .unwrap()
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes(),
    )
    .unwrap();
    assert_eq!(log[0].path, "/llm/v1/messages/batches");
    assert_eq!(log[0].query.as_deref(), Some("limit=3"));
    assert_eq!(log[0].header("x-api-key"), Some(REAL_ANTHROPIC));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_mid_stream_does_not_disturb_the_gateway() {
    let h = Harness::start().await;
    for _ in 0..5 {
        let resp = h
            .http
            .request(stream_request(&h, ("x-mock-delay-ms", "50")))
            .await
            .unwrap();
        let mut body = resp.into_body();
        let first = body.frame().await.unwrap().unwrap();
        assert!(first.is_data());
        drop(body); // the client goes away after the first event
    }
    assert_eq!(h.messages(STREAM_BODY).await.status, 200, "still serving");
    assert_eq!(h.mock_log().await.len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_before_the_body_come_in_the_callers_shape() {
    let h = Harness::builder().env("CONDUIT_MAX_BODY_BYTES", "1024").start().await;
    let bearer = format!("Bearer {}", h.key);
    let big = vec![b'x'; 2048];
    let r = h
        .send(
            Method::POST,
            "/v1/chat/completions",
            &[("authorization", &bearer), ("content-type", "application/json")],
            big,
        )
        .await;
    r.assert_openai_error(413, "over this gateway's limit of 1024 bytes");
    let r = h
        .send(
            Method::GET,
            "/v1/responses",
            &[
                ("authorization", &bearer),
                ("connection", "upgrade"),
                ("upgrade", "websocket"),
            ],
            "",
        )
        .await;
    r.assert_openai_error(501, "does not tunnel \"websocket\" upgrades");
    assert_eq!(r.json()["error"]["code"], "websocket_unsupported");
    assert!(h.mock_log().await.is_empty());
}

/// Issue 13: state that executes or unlocks the rest is refused at start-up when another user
/// could change it; the admin token file is held to the variable's rules.
#[cfg(unix)]
#[tokio::test]
async fn loose_state_files_stop_start_up() {
    use std::os::unix::fs::PermissionsExt;
    async fn open(data: &std::path::Path) -> Result<conduit_gateway::Gateway, conduit_gateway::Error> {
        let env = |k: &str| match k {
            "CONDUIT_DATA_DIR" => Some(data.display().to_string()),
            "CONDUIT_LISTEN" | "CONDUIT_ADMIN_LISTEN" => Some("127.0.0.1:0".into()),
            _ => None,
        };
        conduit_gateway::Gateway::open(conduit_gateway::config::RawConfig::default().validate(&env)?).await
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    drop(open(&data).await.unwrap());
    assert_eq!(
        std::fs::metadata(&data).unwrap().permissions().mode() & 0o777,
        0o700,
        "created 0700"
    );
    for f in ["master.key", "admin.token"] {
        assert_eq!(
            std::fs::metadata(data.join(f)).unwrap().permissions().mode() & 0o777,
            0o600,
            "{f}"
        );
    }
    std::fs::set_permissions(data.join("master.key"), std::fs::Permissions::from_mode(0o664)).unwrap();
    let e = open(&data).await.err().unwrap().to_string();
    assert!(e.contains("master key file") && e.contains("chmod go-w"), "{e}");
    std::fs::set_permissions(data.join("master.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o777)).unwrap();
    let e = open(&data).await.err().unwrap().to_string();
    assert!(e.contains("data directory"), "{e}");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(data.join("admin.token"), "short").unwrap();
    let config = conduit_gateway::config::RawConfig::default()
        .validate(&|k: &str| (k == "CONDUIT_DATA_DIR").then(|| data.display().to_string()))
        .unwrap();
    let e = conduit_gateway::gateway::resolve_admin_token(&config, false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("admin token file") && e.contains("16"), "{e}");
}

/// A credential store whose re-seal commits and then reports a failure (a sync failing after the
/// transaction, say).
struct CommitsThenFails(std::sync::Arc<dyn conduit_gateway::store::CredentialStore>);

#[async_trait::async_trait]
impl conduit_gateway::store::CredentialStore for CommitsThenFails {
    async fn put(&self, c: &conduit_gateway::seal::SealedCredential) -> Result<(), conduit_gateway::Error> {
        self.0.put(c).await
    }
    async fn get(
        &self,
        p: &str,
        id: &str,
    ) -> Result<Option<conduit_gateway::seal::SealedCredential>, conduit_gateway::Error> {
        self.0.get(p, id).await
    }
    async fn list(&self) -> Result<Vec<conduit_gateway::seal::SealedCredential>, conduit_gateway::Error> {
        self.0.list().await
    }
    async fn reseal_all(
        &self,
        c: &[conduit_gateway::seal::SealedCredential],
        id: &str,
    ) -> Result<(), conduit_gateway::Error> {
        self.0.reseal_all(c, id).await?;
        Err(conduit_gateway::Error::msg(
            "injected: the re-seal committed, then its sync failed",
        ))
    }
    fn watch(&self) -> conduit_gateway::store::Watch<conduit_gateway::store::CredentialChange> {
        self.0.watch()
    }
}

/// A rotation that fails after committing leaves the gateway on the key the store names, so
/// requests keep unsealing their credential (before: it kept the old key and every request
/// failed to unseal until a restart, which then refused the old key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_that_fails_after_committing_keeps_requests_working() {
    let h = Harness::builder()
        .wrap_state(|mut state| {
            state.credentials = std::sync::Arc::new(CommitsThenFails(state.credentials));
            state
        })
        .start()
        .await;
    assert_eq!(h.messages(STREAM_BODY).await.status, 200);
    let (new, _) = conduit_gateway::seal::MasterKey::generate().unwrap();
    let err = h.gateway().rotate_master_key(new).await.unwrap_err();
    assert!(err.to_string().contains("injected"), "{err}");
    let r = h.messages(STREAM_BODY).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

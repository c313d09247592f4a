//! Faults between Conduit and the provider (issue 20): a fault proxy damages the mock's answers —
//! a reset before the response head, a reset and a clean cut mid-body, a byte-at-a-time trickle,
//! silence — and for each the test checks what the client gets, what is billed and audited, and
//! that the gateway keeps serving.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Harness;
use common::fault::{Fault, FaultProxy};
use conduit_gateway::audit::AuditRecord;

fn body(stream: bool) -> String {
    serde_json::json!({"model": "claude-sonnet-4-5", "max_tokens": 64, "stream": stream,
        "messages": [{"role": "user", "content": "count to three"}]})
    .to_string()
}

/// The record of `id`, if it is written yet.
fn find(h: &Harness, id: &str) -> Option<AuditRecord> {
    h.records().into_iter().find(|r| r.request_id == id)
}

fn record(h: &Harness, id: &str) -> AuditRecord {
    find(h, id).unwrap_or_else(|| panic!("no audit record for {id}"))
}

/// The record of `id`, once its stream has settled (settling after a cut stream is asynchronous).
async fn settled(h: &Harness, id: &str) -> AuditRecord {
    h.record_where(std::time::Duration::from_secs(5), |r| r.request_id == id)
        .await
        .unwrap_or_else(|| panic!("no audit record for {id}"))
}

/// A gateway whose Anthropic upstream is the mock behind a fault proxy, with network idle and
/// response timeouts of `timeout_secs`.
async fn behind_fault_proxy(timeout_secs: u64) -> (conduit_gateway::mock::MockServer, FaultProxy, Harness) {
    let mock = conduit_gateway::mock::start("127.0.0.1:0".parse().unwrap(), Default::default())
        .await
        .unwrap();
    let proxy = FaultProxy::start(mock.addr).await;
    let h = Harness::builder()
        .env("UPSTREAM_ANTHROPIC_URL", &proxy.url())
        .toml(&format!(
            "[network]\nidle_timeout_secs = {timeout_secs}\nresponse_timeout_secs = {timeout_secs}\n"
        ))
        .start()
        .await;
    (mock, proxy, h)
}

/// One row of the printed table: what the client got, what is on record and billed.
fn show(fault: &str, r: &common::Reply, rec: &AuditRecord) {
    eprintln!(
        "{fault:<18} client {} ({} bytes) | record status {} outcome {} error {:?} | billed {:?} µ$, {} output tokens",
        r.status,
        r.body.len(),
        rec.status,
        rec.outcome,
        rec.error_class,
        rec.cost_micros,
        rec.output_tokens
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_faults_get_honest_answers_bills_and_records() {
    let (_mock, proxy, h) = behind_fault_proxy(2).await;
    let id = |r: &common::Reply| r.header("x-conduit-request-id").unwrap().to_string();

    // Baseline, streamed: what an undamaged answer bills.
    let base = h.messages_with(&body(true), &[]).await;
    assert_eq!(base.status, 200);
    let base_record = settled(&h, &id(&base)).await;
    show("none", &base, &base_record);
    assert!(
        base_record.cost_micros > Some(0) && base_record.output_tokens > 0,
        "{base_record:?}"
    );

    // Byte at a time: the client gets the same bytes, and the bill is the same — the usage tap
    // does not depend on how the stream is cut into reads.
    proxy.set(Fault::Trickle);
    let r = h.messages_with(&body(true), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        String::from_utf8_lossy(&r.body),
        String::from_utf8_lossy(&base.body),
        "a trickled stream arrives byte-identical"
    );
    let trickled = settled(&h, &id(&r)).await;
    show("trickle", &r, &trickled);
    assert_eq!(
        (trickled.input_tokens, trickled.output_tokens, trickled.cost_micros),
        (
            base_record.input_tokens,
            base_record.output_tokens,
            base_record.cost_micros
        )
    );

    // Reset before a byte of the answer: a provider-shaped 502, nothing billed but the attempt.
    proxy.set(Fault::ResetBeforeHead);
    let r = h.messages_with(&body(false), &[]).await;
    r.assert_anthropic_error(502, "api_error", "");
    let rec = record(&h, &id(&r));
    show("reset before head", &r, &rec);
    assert_eq!(rec.status, 502, "{rec:?}");
    assert_eq!(rec.output_tokens, 0, "{rec:?}");

    // Reset mid-stream: the client has the head and the bytes so far, then the stream breaks;
    // the record says so.
    proxy.set(Fault::ResetAfter(200));
    let r = h.messages_with(&body(true), &[]).await;
    assert_eq!(r.status, 200, "the head had gone out");
    let rec = settled(&h, &id(&r)).await;
    show("reset mid-stream", &r, &rec);
    assert_ne!(rec.outcome, "complete", "{rec:?}");
    assert_eq!(rec.error_class.as_deref(), Some("stream_error"), "{rec:?}");
    // The bytes so far were passed on (the test client drops a broken body, the record counts them).
    assert!(rec.bytes_out > 0 && rec.bytes_out < base_record.bytes_out, "{rec:?}");
    // Billed, flagged as an estimate: the usage frames never came.
    assert!(
        rec.estimated && rec.cost_micros > Some(0) && rec.output_tokens == 0,
        "{rec:?}"
    );

    // A clean cut inside a JSON body with a content-length: incomplete at the client, and on
    // record as not complete.
    proxy.set(Fault::TruncateAfter(300));
    let r = h.messages_with(&body(false), &[]).await;
    let whole = serde_json::from_slice::<serde_json::Value>(&r.body).is_ok();
    assert!(!(r.status == 200 && whole), "a cut JSON answer was passed on as whole");
    let rec = settled(&h, &id(&r)).await;
    show("cut JSON body", &r, &rec);
    assert_ne!(rec.outcome, "complete", "{rec:?}");

    // Silence after the request: the response timeout answers in the provider's shape.
    proxy.set(Fault::Silent);
    let r = h.messages_with(&body(false), &[]).await;
    r.assert_anthropic_error(504, "api_error", "");
    let rec = record(&h, &id(&r));
    show("silent", &r, &rec);
    assert_eq!(rec.status, 504);

    // And the gateway keeps serving.
    proxy.set(Fault::None);
    let r = h.messages_with(&body(true), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, base.body);
}

/// A client that hangs up while the provider is still working (Ctrl-C, a closed laptop, a proxy
/// timeout) does not take the request's bill or record with it: the exchange goes on without
/// it, so what the provider bills is billed and audited (`client_gone`), and the budget's
/// reservation becomes that cost rather than vanishing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_before_the_answer_is_still_billed_and_recorded() {
    use tokio::io::AsyncWriteExt;
    let (_mock, proxy, h) = behind_fault_proxy(5).await;
    proxy.set(Fault::Hold(std::time::Duration::from_millis(500)));
    for stream in [false, true] {
        let before = h.records().len();
        let body = body(stream);
        let mut client = tokio::net::TcpStream::connect(h.running.addr).await.unwrap();
        let head = format!(
            "POST /v1/messages HTTP/1.1\r\nhost: conduit\r\nx-api-key: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            h.key,
            body.len()
        );
        client.write_all(head.as_bytes()).await.unwrap();
        client.write_all(body.as_bytes()).await.unwrap();
        // The request is upstream, its answer held back: hang up.
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        drop(client);
        let mut rec = None;
        for _ in 0..200 {
            let all = h.records();
            if all.len() > before {
                rec = all.into_iter().nth(before);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        let rec =
            rec.unwrap_or_else(|| panic!("no audit record for a request whose client hung up (stream: {stream})"));
        eprintln!(
            "hung up (stream {stream}): record status {} outcome {} error {:?} | billed {:?} µ$, {} input / {} output tokens, estimated {}",
            rec.status,
            rec.outcome,
            rec.error_class,
            rec.cost_micros,
            rec.input_tokens,
            rec.output_tokens,
            rec.estimated
        );
        assert_eq!((rec.path.as_str(), rec.status), ("/v1/messages", 200), "{rec:?}");
        assert_eq!(rec.outcome, "client_gone", "{rec:?}");
        assert_eq!(rec.bytes_out, 0, "nothing reached the client: {rec:?}");
        // The provider's own usage, read from the answer nobody was there to receive.
        assert!(
            rec.output_tokens > 0 && rec.cost_micros > Some(0) && !rec.estimated,
            "{rec:?}"
        );
    }
    // And the gateway keeps serving.
    proxy.set(Fault::None);
    let r = h.messages_with(&body(true), &[]).await;
    assert_eq!(r.status, 200);
}

/// Faults before a byte reaches the provider — its name does not resolve, its TLS handshake
/// fails, it does not accept the connection in time — are each a provider-shaped 502 naming no
/// internals ("could not be reached"; the gateway log has the cause), recorded
/// `upstream_unreachable`, never billed; the gateway keeps serving. (An upstream whose certificate
/// is not trusted is `network.rs::tls_termination_and_extra_ca_bundle`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstreams_that_cannot_be_reached_are_refused_unbilled_and_recorded() {
    let mock = conduit_gateway::mock::start("127.0.0.1:0".parse().unwrap(), Default::default())
        .await
        .unwrap();
    // A listener whose accept queue is full and never drained: the kernel drops further SYNs,
    // so a connection attempt hangs as it does towards a provider behind a black hole.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let black_hole = socket.listen(0).unwrap();
    let hole = black_hole.local_addr().unwrap();
    let mut queued = Vec::new();
    loop {
        match tokio::time::timeout(
            std::time::Duration::from_millis(300),
            tokio::net::TcpStream::connect(hole),
        )
        .await
        {
            Ok(Ok(s)) => queued.push(s),
            _ => break,
        }
        assert!(queued.len() < 64, "the accept queue never filled");
    }
    assert!(!queued.is_empty(), "the black hole's accept queue took no connection");
    // `.invalid` never resolves (RFC 6761), but a resolver that drops packets answers only after
    // its own timeouts (name lookup is bounded by the response timeout, not the connect timeout):
    // the case runs where the machine says so quickly.
    let nxdomain = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::net::lookup_host("conduit-upstream.invalid:80"),
    )
    .await
    .is_ok_and(|r| r.is_err());
    if !nxdomain {
        eprintln!(
            "skipping the DNS case: this machine's resolver did not answer NXDOMAIN for a .invalid name within 5 s"
        );
    }
    let cases = [
        ("name does not resolve", "http://conduit-upstream.invalid".to_string()),
        ("TLS to a plain HTTP server", format!("https://{}", mock.addr)),
        ("connect never completes", format!("http://{hole}")),
    ];
    for (fault, url) in cases.into_iter().filter(|(f, _)| nxdomain || !f.starts_with("name")) {
        // A connect timeout of 1 s inside a response timeout of 30 s: a connect that is not cut
        // by its own timeout shows as a 504 instead of the 502.
        let h = Harness::builder()
            .env("UPSTREAM_ANTHROPIC_URL", &url)
            .toml("[network]\nconnect_timeout_secs = 1\nresponse_timeout_secs = 30\n")
            .start()
            .await;
        let r = h.messages_with(&body(true), &[]).await;
        r.assert_anthropic_error(502, "api_error", "could not be reached");
        let message = r.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(!message.contains(&url) && !message.contains("127.0.0.1"), "{message}");
        let rec = record(&h, r.header("x-conduit-request-id").unwrap());
        show(fault, &r, &rec);
        assert_eq!(rec.status, 502, "{rec:?}");
        assert_eq!(rec.error_class.as_deref(), Some("upstream_unreachable"), "{rec:?}");
        assert_eq!((rec.output_tokens, rec.bytes_out), (0, 0), "{rec:?}");
        assert!(rec.cost_micros.unwrap_or(0) == 0, "nothing billed: {rec:?}");
        assert_eq!(
            h.send(http::Method::GET, "/", &[], "").await.status,
            200,
            "the gateway serves on"
        );
    }
    drop(queued);
}

/// An SSE line far over the usage tap's 1 MiB line bound (a huge delta from a provider, or a
/// hostile upstream): the client gets every byte as sent, the tap's memory stays bounded (the line
/// is skipped, its bytes counted as text), and the provider's usage event after it is still read
/// — billed from the provider's word, not estimated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_event_passes_through_and_the_usage_after_it_still_bills() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let huge = "x".repeat(3 * 1024 * 1024);
    let events = [
        r#"event: message_start
data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[],"stop_reason":null,"usage":{"input_tokens":25,"output_tokens":1}}}"#.to_string(),
        r#"event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#.to_string(),
        format!(
            "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"{huge}\"}}}}"
        ),
        r#"event: content_block_stop
data: {"type":"content_block_stop","index":0}"#.to_string(),
        r#"event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":777}}"#.to_string(),
        r#"event: message_stop
data: {"type":"message_stop"}"#.to_string(),
    ];
    let sse: String = events.iter().map(|e| format!("{e}\n\n")).collect();
    let sent = common::sha256_hex(sse.as_bytes());
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = upstream.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = upstream.accept().await {
            let sse = sse.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let _ = s.read(&mut buf).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\n\r\n",
                    sse.len()
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(sse.as_bytes()).await;
            });
        }
    });
    let h = Harness::builder()
        .env("UPSTREAM_ANTHROPIC_URL", &format!("http://{up}"))
        .start()
        .await;
    let r = h.messages_with(&body(true), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        common::sha256_hex(&r.body),
        sent,
        "the oversized stream arrives byte-identical"
    );
    let rec = settled(&h, r.header("x-conduit-request-id").unwrap()).await;
    show("oversized event", &r, &rec);
    assert_eq!(rec.outcome, "complete", "{rec:?}");
    assert_eq!(
        (rec.input_tokens, rec.output_tokens, rec.estimated),
        (25, 777, false),
        "billed from the provider's usage after the oversized line: {rec:?}"
    );
}

/// A client gone mid-stream whose drain is then cut (the upstream goes silent past
/// `network.idle_timeout_secs`; the same for the drain's 600 s / 64 MiB bounds) saw only part of
/// the provider's usage: `message_start`'s one output token. It is settled as incomplete — billed
/// at least the text the tap saw, flagged estimated — never as the provider's final word.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_cut_short_is_billed_as_an_estimate_not_as_final() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let text = "thinking hard ".repeat(300);
    let events = format!(
        "event: message_start\ndata: {{\"type\":\"message_start\",\"message\":{{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5\",\"content\":[],\"usage\":{{\"input_tokens\":25,\"output_tokens\":1}}}}}}\n\n\
         event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"{text}\"}}}}\n\n"
    );
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = upstream.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = upstream.accept().await {
            let events = events.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let _ = s.read(&mut buf).await;
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
                let chunk = format!("{head}{:x}\r\n{events}\r\n", events.len());
                let _ = s.write_all(chunk.as_bytes()).await;
                // …then silence, the connection held open.
                tokio::time::sleep(std::time::Duration::from_secs(60)).await;
            });
        }
    });
    let h = Harness::builder()
        .env("UPSTREAM_ANTHROPIC_URL", &format!("http://{up}"))
        .toml("[network]\nidle_timeout_secs = 1\n")
        .start()
        .await;
    let body = body(true);
    let mut client = tokio::net::TcpStream::connect(h.running.addr).await.unwrap();
    let head = format!(
        "POST /v1/messages HTTP/1.1\r\nhost: conduit\r\nx-api-key: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        h.key,
        body.len()
    );
    client.write_all(head.as_bytes()).await.unwrap();
    let mut got = vec![0u8; 16 * 1024];
    let n = client.read(&mut got).await.unwrap();
    assert!(n > 0, "the stream began");
    drop(client);
    let rec = h
        .record_where(std::time::Duration::from_secs(20), |r| r.path == "/v1/messages")
        .await
        .expect("a record for the request whose drain was cut");
    eprintln!(
        "drain cut short: outcome {} | {} output tokens, estimated {} | {:?} µ$",
        rec.outcome, rec.output_tokens, rec.estimated, rec.cost_micros
    );
    assert_eq!(rec.outcome, "client_gone", "{rec:?}");
    assert!(
        rec.estimated && rec.output_tokens > 100,
        "billed the text seen as an estimate, not message_start's 1 token as final: {rec:?}"
    );
}

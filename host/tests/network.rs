//! Outbound and inbound transport: TLS termination on the gateway listener, an extra CA bundle for
//! upstream TLS (corporate inspection), and egress through an HTTP CONNECT proxy with NO_PROXY.
//!
//! Two gateways are chained: client → B (plain) → A (TLS, certificate from a test CA) → mock.
//! B trusts the test CA only through `CONDUIT_EXTRA_CA_FILE`, and holds A's stand-in key as its
//! "provider credential" — so the mock seeing A's real credential proves every hop worked.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{Harness, REAL_ANTHROPIC};
use http::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BODY: &str =
    r#"{"model":"claude-sonnet-4-5","max_tokens":16,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;

struct TestPki {
    dir: tempfile::TempDir,
}

impl TestPki {
    fn new() -> TestPki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "Conduit Test CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .signed_by(&leaf_key, &ca_cert, &ca_key)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).unwrap();
        std::fs::write(dir.path().join("cert.pem"), leaf.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), leaf_key.serialize_pem()).unwrap();
        TestPki { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

async fn tls_gateway(pki: &TestPki) -> Harness {
    Harness::builder()
        .env("CONDUIT_TLS_CERT_FILE", &pki.path("cert.pem"))
        .env("CONDUIT_TLS_KEY_FILE", &pki.path("key.pem"))
        .start()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_termination_and_extra_ca_bundle() {
    let pki = TestPki::new();
    let a = tls_gateway(&pki).await;
    let a_url = format!("https://localhost:{}", a.running.addr.port());

    let b = Harness::builder()
        .env("UPSTREAM_ANTHROPIC_URL", &a_url)
        .env("CONDUIT_EXTRA_CA_FILE", &pki.path("ca.pem"))
        .anthropic_credential(&a.key)
        .start()
        .await;
    let r = b.messages(BODY).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let seen = &a.mock_log().await[0];
    assert_eq!(seen.header("x-api-key"), Some(REAL_ANTHROPIC));
    assert_eq!(seen.body_sha256, common::sha256_hex(BODY.as_bytes()));

    // Without the extra CA, B cannot verify A: refused, never sent in the clear.
    let c = Harness::builder()
        .env("UPSTREAM_ANTHROPIC_URL", &a_url)
        .anthropic_credential(&a.key)
        .start()
        .await;
    c.messages(BODY)
        .await
        .assert_anthropic_error(502, "api_error", "could not be reached");
}

/// A minimal HTTP CONNECT proxy that counts tunnels.
async fn connect_proxy() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        loop {
            let (mut client, _) = listener.accept().await.unwrap();
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if client.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head);
                let target = head
                    .strip_prefix("CONNECT ")
                    .and_then(|r| r.split(' ').next())
                    .unwrap()
                    .to_string();
                seen.fetch_add(1, Ordering::SeqCst);
                let mut upstream = tokio::net::TcpStream::connect(&target).await.unwrap();
                client
                    .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                    .await
                    .unwrap();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    (format!("http://{addr}"), count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_goes_through_the_proxy_unless_no_proxy_matches() {
    let (proxy, tunnels) = connect_proxy().await;
    let pki = TestPki::new();
    let a = tls_gateway(&pki).await;
    let a_url = format!("https://localhost:{}", a.running.addr.port());

    // HTTPS upstream through the proxy (TLS inside the tunnel), configured by environment.
    let b = Harness::builder()
        .env("UPSTREAM_ANTHROPIC_URL", &a_url)
        .env("CONDUIT_EXTRA_CA_FILE", &pki.path("ca.pem"))
        .env("HTTPS_PROXY", &proxy)
        .anthropic_credential(&a.key)
        .start()
        .await;
    assert_eq!(b.messages(BODY).await.status, 200);
    assert_eq!(tunnels.load(Ordering::SeqCst), 1, "one tunnel, reused by the pool");
    assert_eq!(b.messages(BODY).await.status, 200);
    assert_eq!(tunnels.load(Ordering::SeqCst), 1, "the pooled connection is reused");

    // NO_PROXY excludes the host: direct.
    let c = Harness::builder()
        .env("UPSTREAM_ANTHROPIC_URL", &a_url)
        .env("CONDUIT_EXTRA_CA_FILE", &pki.path("ca.pem"))
        .toml(&format!("[network]\nproxy = \"{proxy}\"\nno_proxy = \"localhost\""))
        .anthropic_credential(&a.key)
        .start()
        .await;
    assert_eq!(c.messages(BODY).await.status, 200);
    assert_eq!(tunnels.load(Ordering::SeqCst), 1, "NO_PROXY host went direct");
    let _ = Method::GET;
}

/// Issue 20, clients that misbehave: connections over `limits.max_connections` are answered 503
/// and closed at once, while the connections already open keep being served and the admin
/// listener (its own cap) answers `/readyz`; a slot freed is used again. A client that sends half
/// a request head and stops is cut by `limits.header_read_timeout_secs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cap_sheds_the_excess_and_slow_heads_are_cut() {
    let cap = 8;
    let h = Harness::builder()
        .toml(&format!(
            "[limits]\nmax_connections = {cap}\nheader_read_timeout_secs = 1\n"
        ))
        .start()
        .await;
    let addr = h.running.addr;
    let mut idle = Vec::new();
    for _ in 0..cap {
        idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    // The next one: accepted, told why, closed.
    let mut over = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), over.read_to_end(&mut got))
        .await
        .expect("an over-cap connection is closed, not left waiting")
        .unwrap();
    let got = String::from_utf8_lossy(&got);
    assert!(
        got.starts_with("HTTP/1.1 503") && got.contains("retry-after: 1") && got.contains("limits.max_connections"),
        "{got}"
    );
    let json = got.split("\r\n\r\n").nth(1).unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(json).unwrap()["error"]["type"],
        "overloaded_error"
    );
    // An established connection is still served at the cap.
    let c = &mut idle[0];
    c.write_all(b"GET / HTTP/1.1\r\nhost: conduit\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), c.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 "),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    assert!(
        !buf[..n].starts_with(b"HTTP/1.1 503"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    assert_eq!(
        h.admin_get("/readyz").await.status,
        200,
        "the admin listener has its own slots"
    );

    // Half a head, then silence: cut (hyper answers 408 or closes), and the slot comes back.
    let slow = &mut idle[1];
    slow.write_all(b"POST /v1/messages HTTP/1.1\r\nhost: conduit\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(20), slow.read_to_end(&mut rest))
        .await
        .expect("a half-sent head is cut by header_read_timeout_secs")
        .ok();
    drop(idle);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nhost: conduit\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), c.read_to_end(&mut got)).await;
        if got.starts_with(b"HTTP/1.1 ") && !got.starts_with(b"HTTP/1.1 503") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "freed slots are not reused");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Issue 20, overload: over `limits.max_in_flight` requests (streams count until their body
/// ends) are shed at once with a provider-shaped 503 and `retry-after` (and no `x-should-retry: false`: clients retry);
/// when the streams end, requests flow again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_max_in_flight_are_shed_with_retry_after() {
    let h = Arc::new(
        Harness::builder()
            .toml("[limits]\nmax_in_flight = 2\n[network]\nidle_timeout_secs = 3\n")
            .start()
            .await,
    );
    // Two clients keep a stalled stream open each (re-opened when the idle timeout cuts it, so a
    // loaded machine cannot slip between them).
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let (h, stop) = (h.clone(), stop.clone());
        stalled.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                statuses.push(h.messages_with(BODY, &[("x-mock-mode", "stall")]).await.status);
            }
            statuses
        }));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let shed = loop {
        let r = h.messages_with(BODY, &[]).await;
        if r.status == 503 {
            break r;
        }
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert!(
            std::time::Instant::now() < deadline,
            "two stalled streams never filled max_in_flight = 2"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    shed.assert_anthropic_error(503, "overloaded_error", "limits.max_in_flight");
    assert_eq!(shed.header("retry-after"), Some("1"));
    assert_ne!(shed.header("x-should-retry"), Some("false"), "clients may retry");
    stop.store(true, Ordering::Relaxed);
    for s in stalled {
        let statuses = s.await.unwrap();
        assert!(
            statuses.iter().any(|s| s.as_u16() == 200),
            "the stalled streams began (and were cut by the idle timeout): {statuses:?}"
        );
    }
    let r = h.messages_with(BODY, &[]).await;
    assert_eq!(r.status, 200, "slots come back when the streams end");
}

/// Issue 20, a slow body (slowloris): a client that sends its head and part of its body, then
/// stops, is answered 408 in the provider's shape after `limits.body_read_timeout_secs`, and the
/// gateway keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stops_coming_is_cut_with_a_408() {
    let h = Harness::builder()
        .toml("[limits]\nbody_read_timeout_secs = 1\n")
        .start()
        .await;
    let mut c = tokio::net::TcpStream::connect(h.running.addr).await.unwrap();
    let head = format!(
        "POST /v1/messages HTTP/1.1\r\nhost: conduit\r\nx-api-key: {}\r\nanthropic-version: 2023-06-01\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{{\"model\":",
        h.key
    );
    c.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(20), async {
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&got).contains("\r\n\r\n{") {
            match c.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("a stalled body is cut, not waited on for ever");
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(got.contains("content-type: application/json"), "{got}");
    // The connection closes with the request's unread bytes still queued, so the kernel may
    // reset it before the body is read here; when it arrives, it names the setting.
    if let Some(body) = got.split("\r\n\r\n").nth(1).filter(|b| !b.is_empty()) {
        assert!(body.contains("body_read_timeout_secs"), "{body}");
    }
    assert_eq!(h.messages_with(BODY, &[]).await.status, 200, "the gateway serves on");
}

/// Issue 20, a client that never reads its response (HTTP/1 or the socket under HTTP/2): once the
/// socket buffers are full, a write that waits `limits.send_timeout_secs` ends the connection;
/// the request is then settled like any client that went away — the upstream body drained for
/// its usage, recorded `client_gone` — and its place under `limits.max_in_flight` comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_cut_by_the_send_timeout() {
    // An upstream whose stream never ends: text deltas as fast as the gateway takes them.
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = upstream.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = upstream.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let _ = s.read(&mut buf).await;
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
                if s.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let text = "x".repeat(16 * 1024);
                let event = format!(
                    "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"{text}\"}}}}\n\n"
                );
                let chunk = format!("{:x}\r\n{event}\r\n", event.len());
                while s.write_all(chunk.as_bytes()).await.is_ok() {}
            });
        }
    });
    let h = Harness::builder()
        .env("UPSTREAM_ANTHROPIC_URL", &format!("http://{up}"))
        .toml("[limits]\nsend_timeout_secs = 1\nmax_in_flight = 4\n")
        .start()
        .await;
    let body = r#"{"model":"claude-sonnet-4-5","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"go on forever"}]}"#;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut client = socket.connect(h.running.addr).await.unwrap();
    let head = format!(
        "POST /v1/messages HTTP/1.1\r\nhost: conduit\r\nx-api-key: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        h.key,
        body.len()
    );
    client.write_all(head.as_bytes()).await.unwrap();
    // …and never read a byte of the answer.
    let started = std::time::Instant::now();
    let rec = h
        .record_where(std::time::Duration::from_secs(60), |r| r.path == "/v1/messages")
        .await
        .expect("a client that never reads holds its request open: no record after 60 s");
    eprintln!(
        "never-reading client: recorded after {:?}: outcome {} error {:?}, {} bytes out, {} output tokens (estimated {})",
        started.elapsed(),
        rec.outcome,
        rec.error_class,
        rec.bytes_out,
        rec.output_tokens,
        rec.estimated
    );
    assert_eq!(rec.outcome, "client_gone", "{rec:?}");
    assert!(rec.bytes_out > 0, "the answer began before the client stalled: {rec:?}");
    assert!(rec.output_tokens > 0 && rec.estimated, "{rec:?}");
    assert_eq!(h.in_flight_free(4).await, 4, "the request's in-flight place came back");
    // The connection is closed from the gateway's side: reading drains what was buffered, then EOF.
    let mut sink = vec![0u8; 1 << 16];
    let drained = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        loop {
            match client.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(drained.is_ok(), "the stalled connection was closed");
    // And the gateway keeps serving.
    assert_eq!(h.send(Method::GET, "/", &[], "").await.status, 200);
}

/// Issue 20, the HTTP/2 form of a client that never reads: it reads the connection (so no socket
/// write ever waits) but grants a response stream no flow-control window
/// (`SETTINGS_INITIAL_WINDOW_SIZE = 0`, never a WINDOW_UPDATE). hyper then never asks the body for
/// more, so neither the send timeout nor the body's idle timer would run; the stream's watchdog
/// (`conduit_gateway::unasked`) cuts it after `limits.send_timeout_secs`: the request is settled
/// `client_gone` — the upstream's answer drained for its usage and billed from it — its place
/// under `limits.max_in_flight` comes back, and its connection is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_stream_granted_no_window_is_cut_by_the_send_timeout() {
    let h = Harness::builder()
        .toml("[limits]\nsend_timeout_secs = 1\nmax_in_flight = 4\n")
        .start()
        .await;
    let tcp = tokio::net::TcpStream::connect(h.running.addr).await.unwrap();
    let (client, connection) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, bytes::Bytes>(tcp)
        .await
        .unwrap();
    // The connection is driven throughout (pings answered, frames read): only the stream stalls.
    let driver = tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let request = http::Request::post(format!("http://{}/v1/messages", h.running.addr))
        .header("x-api-key", &h.key)
        .header("content-type", "application/json")
        .header("anthropic-version", "2023-06-01")
        .body(())
        .unwrap();
    let (answer, mut send) = client.send_request(request, false).unwrap();
    send.send_data(bytes::Bytes::from_static(BODY.as_bytes()), true)
        .unwrap();
    let answer = answer.await.unwrap();
    assert_eq!(answer.status(), 200, "the head is not flow-controlled");
    let started = std::time::Instant::now();
    let rec = h
        .record_where(std::time::Duration::from_secs(30), |r| r.path == "/v1/messages")
        .await
        .expect("an HTTP/2 stream granted no window holds its request open: no record after 30 s");
    eprintln!(
        "zero-window HTTP/2 stream: recorded after {:?}: outcome {}, {} bytes out, {} output tokens (estimated {}), {:?} µ$",
        started.elapsed(),
        rec.outcome,
        rec.bytes_out,
        rec.output_tokens,
        rec.estimated,
        rec.cost_micros
    );
    assert_eq!(rec.outcome, "client_gone", "{rec:?}");
    assert!(
        rec.output_tokens > 0 && !rec.estimated,
        "billed from the provider's own usage, drained: {rec:?}"
    );
    assert_eq!(h.in_flight_free(4).await, 4, "the request's in-flight place came back");
    // hyper would hold the stalled stream (and its place among the connection's streams) until
    // the client granted window: the connection is closed instead.
    let closed = tokio::time::timeout(std::time::Duration::from_secs(10), driver).await;
    assert!(closed.is_ok(), "the connection of a stalled stream is closed");
    assert_eq!(h.messages_with(BODY, &[]).await.status, 200, "the gateway serves on");
}

/// Issue 20: 10,000 idle connections — the default `limits.max_connections` — against a gateway
/// process (its own file descriptors, as deployed). The connections over the cap are answered and
/// closed; with every slot held by an idle client, an established connection still streams a
/// request through, `/readyz` answers, and nothing crashes; once the idle clients go, new
/// connections are served. Prints the gateway's RSS and open FDs idle and with the 10,000.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_connections_leave_established_streams_and_readyz_unaffected() {
    use common::process::{BIN, free_port, issued_key, policy_cache_dir, succeed, terminate, wait_listening};
    use std::process::{Command, Stdio};
    let mock = conduit_gateway::mock::start("127.0.0.1:0".parse().unwrap(), Default::default())
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let (listen, admin) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let cmd = |args: &[&str]| {
        let mut c = Command::new(BIN);
        c.args(args)
            .env("CONDUIT_POLICY_CACHE_DIR", policy_cache_dir())
            .env("CONDUIT_DATA_DIR", data.path())
            .env("CONDUIT_LISTEN", &listen)
            .env("CONDUIT_ADMIN_LISTEN", &admin)
            .env("UPSTREAM_ANTHROPIC_URL", mock.url())
            .env("UPSTREAM_OPENAI_URL", mock.url());
        c
    };
    let key = issued_key(cmd(&["keys", "create", "--owner", "idle@corp.example", "--json"]));
    let mut set = cmd(&["credentials", "set", "anthropic", "--from-env", "CRED"]);
    set.env("CRED", "sk-ant-idle");
    succeed(set);
    let gateway = cmd(&["serve"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = gateway.id();
    wait_listening(&listen);
    wait_listening(&admin);
    let rss_mib = || {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
            .unwrap()
            / 1024.0
    };
    let fds = || std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count();
    let (rss_idle, fds_idle) = (rss_mib(), fds());

    let mut established = tokio::net::TcpStream::connect(&listen).await.unwrap();
    let cap = 10_000;
    let started = std::time::Instant::now();
    let mut idle = Vec::with_capacity(cap);
    for _ in 1..cap {
        idle.push(tokio::net::TcpStream::connect(&listen).await.unwrap());
    }
    // The gateway has taken them all once the next ones are refused: 200 more, each answered
    // (503 or a close) rather than left waiting.
    let mut over = tokio::task::JoinSet::new();
    for _ in 0..200 {
        let mut c = tokio::net::TcpStream::connect(&listen).await.unwrap();
        over.spawn(async move {
            let mut got = Vec::new();
            tokio::time::timeout(std::time::Duration::from_secs(10), c.read_to_end(&mut got))
                .await
                .is_ok()
        });
    }
    let answered = over.join_all().await.into_iter().filter(|a| *a).count();
    let opened = started.elapsed();
    assert_eq!(answered, 200, "connections over the cap are answered and closed");
    let (rss_full, fds_full) = (rss_mib(), fds());

    // The established connection streams a request through.
    let body = r#"{"model":"claude-sonnet-4-5","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"still there?"}]}"#;
    let head = format!(
        "POST /v1/messages HTTP/1.1\r\nhost: conduit\r\nx-api-key: {key}\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let t = std::time::Instant::now();
    established.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(30), established.read_to_end(&mut answer))
        .await
        .expect("the established connection is served at the cap")
        .unwrap();
    let streamed = t.elapsed();
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.contains("message_stop"),
        "{answer}"
    );
    // The admin listener has slots of its own.
    let t = std::time::Instant::now();
    let mut probe = tokio::net::TcpStream::connect(&admin).await.unwrap();
    probe
        .write_all(b"GET /readyz HTTP/1.1\r\nhost: conduit\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut ready = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(30), probe.read_to_end(&mut ready))
        .await
        .expect("/readyz answers at the cap")
        .unwrap();
    let readyz = t.elapsed();
    assert!(
        ready.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&ready)
    );
    eprintln!(
        "10,000 idle connections: opened in {opened:?}; gateway RSS {rss_idle:.1} → {rss_full:.1} MiB, FDs {fds_idle} → {fds_full}; a stream on an established connection took {streamed:?}, /readyz {readyz:?}"
    );

    // The idle clients go; new connections are served again.
    drop(idle);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let mut c = tokio::net::TcpStream::connect(&listen).await.unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nhost: conduit\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), c.read_to_end(&mut got)).await;
        if got.starts_with(b"HTTP/1.1 200") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "slots did not come back");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let out = terminate(gateway);
    assert!(out.status.success(), "the gateway exits cleanly: {:?}", out.status);
}

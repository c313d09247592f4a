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

//! Test harness: a mock upstream and a gateway in-process, on 127.0.0.1 port 0, with a stand-in
//! key issued and real (canary) provider credentials sealed — the same `Gateway::open` +
//! `server::start` path `conduit serve` takes.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use conduit_gateway::State;
use conduit_gateway::config::RawConfig;
use conduit_gateway::mock::{MockOptions, MockServer, Recorded};
use conduit_gateway::server::Running;
use conduit_gateway::{Gateway, operator};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use zeroize::Zeroizing;

pub mod fault;
pub mod installed;
pub mod process;
pub mod wiretap;

/// The "real" provider credentials the gateway holds; tests check the mock sees exactly these.
pub const REAL_ANTHROPIC: &str = "sk-ant-api03-REALCANARY7f3c9a1e5b2d4f6a8c0e2b4d6f8a0c2e4-AAAA";
pub const REAL_OPENAI: &str = "sk-proj-REALCANARY0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8";
/// The org's "real" Azure OpenAI key.
pub const REAL_AZURE: &str = "azREALCANARY5d1e3b7a9c2f4e6d8b0a1c3e5f7a9b2d";
/// The org's "real" AWS key pair for Bedrock; the mock verifies every Bedrock signature against it.
pub const REAL_AWS: &str = "AKIAREALCANARY7F3C9A1E:rEaLcAnArY/7f3c9a1e5b2d4f6a8c0e2b4d6f8a0c2e4+Q";
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef";

pub struct Harness {
    pub mock: MockServer,
    pub running: Running,
    pub data: tempfile::TempDir,
    /// A valid stand-in key.
    pub key: String,
    pub key_id: String,
    pub http: Client<HttpConnector, Full<Bytes>>,
}

/// Wraps the state a test gateway uses.
type StateWrapper = Box<dyn FnOnce(State) -> State>;

pub struct Builder {
    env: HashMap<String, String>,
    toml: String,
    openai_credential: bool,
    bedrock_credential: bool,
    anthropic_credential: String,
    mock: MockOptions,
    wrap_state: Option<StateWrapper>,
}

impl Harness {
    pub fn builder() -> Builder {
        Builder {
            env: HashMap::new(),
            toml: String::new(),
            openai_credential: true,
            bedrock_credential: true,
            anthropic_credential: REAL_ANTHROPIC.into(),
            mock: MockOptions::default(),
            wrap_state: None,
        }
    }

    pub async fn start() -> Harness {
        Harness::builder().start().await
    }

    pub fn gateway(&self) -> &Gateway {
        &self.running.gateway
    }

    /// Every audit record written so far, in chain order (after a sync).
    pub fn records(&self) -> Vec<conduit_gateway::audit::AuditRecord> {
        let log = &self.gateway().audit;
        log.sync();
        let mut all = Vec::new();
        conduit_gateway::audit::chain::scan(log.dir(), &Default::default(), |r, _| {
            all.push(r);
            true
        })
        .unwrap();
        all
    }

    /// The first audit record `matching`, waited for up to `within` (a stream's record is written
    /// when it settles, after the client's answer).
    pub async fn record_where(
        &self,
        within: std::time::Duration,
        matching: impl Fn(&conduit_gateway::audit::AuditRecord) -> bool,
    ) -> Option<conduit_gateway::audit::AuditRecord> {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(r) = self.records().into_iter().find(|r| matching(r)) {
                return Some(r);
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
    }

    /// Places free under `limits.max_in_flight`, once `all` are (waited for up to 10 s: a
    /// request's place returns just after its record is queued).
    pub async fn in_flight_free(&self, all: usize) -> usize {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let free = || self.gateway().in_flight.available_permits();
        while free() < all && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        free()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.running.addr)
    }

    /// Sends a request to the gateway and reads the whole response (raw bytes, no decoding).
    pub async fn send(&self, method: Method, path: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Reply {
        let mut req = Request::builder().method(method).uri(self.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = self
            .http
            .request(req.body(Full::new(body.into())).unwrap())
            .await
            .expect("gateway answers");
        Reply::read(resp).await
    }

    /// GETs an admin API path with the admin token.
    pub async fn admin_get(&self, path: &str) -> Reply {
        self.admin_get_with_token(path, ADMIN_TOKEN).await
    }

    /// Any admin API call, with the headers given (no token unless one is among them).
    pub async fn admin_call(&self, method: Method, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.running.admin_addr));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = self
            .http
            .request(req.body(Full::new(Bytes::from(body.to_string()))).unwrap())
            .await
            .expect("admin answers");
        Reply::read(resp).await
    }

    /// GETs an admin API path with the given bearer token.
    pub async fn admin_get_with_token(&self, path: &str, token: &str) -> Reply {
        let req = Request::get(format!("http://{}{path}", self.running.admin_addr))
            .header("authorization", format!("Bearer {token}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = self.http.request(req).await.expect("admin answers");
        Reply::read(resp).await
    }

    /// An Anthropic Messages request with the stand-in key as x-api-key and extra headers.
    pub async fn messages_with(&self, body: &str, extra: &[(&str, &str)]) -> Reply {
        let key = self.key.clone();
        let mut headers = vec![("x-api-key", key.as_str()), ("content-type", "application/json")];
        headers.extend_from_slice(extra);
        self.send(Method::POST, "/v1/messages", &headers, body.to_string())
            .await
    }

    /// An Anthropic Messages request with the stand-in key as x-api-key.
    pub async fn messages(&self, body: &str) -> Reply {
        let key = self.key.clone();
        self.send(
            Method::POST,
            "/v1/messages",
            &[
                ("x-api-key", &key),
                ("anthropic-version", "2023-06-01"),
                ("content-type", "application/json"),
            ],
            body.to_string(),
        )
        .await
    }

    pub async fn mock_log(&self) -> Vec<Recorded> {
        let resp = self
            .http
            .request(
                Request::get(format!("{}/__mock/requests", self.mock.url()))
                    .body(Full::default())
                    .unwrap(),
            )
            .await
            .unwrap();
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap()
    }

    pub async fn mock_reset(&self) {
        let req = Request::post(format!("{}/__mock/reset", self.mock.url()))
            .body(Full::default())
            .unwrap();
        self.http.request(req).await.unwrap();
    }

    /// Runs the `conduit` CLI against this gateway's admin API: (success, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let out = std::process::Command::new(process::BIN)
            .args(args)
            .env("CONDUIT_ADMIN_LISTEN", self.running.admin_addr.to_string())
            .env("CONDUIT_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("CONDUIT_DATA_DIR", self.data.path())
            .output()
            .unwrap();
        let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
        (out.status.success(), text(out.stdout), text(out.stderr))
    }

    /// Issues another key.
    /// Today's spend rows, once the ledger holds at least `requests` requests (settling after a
    /// drained stream is asynchronous).
    pub async fn spend(&self, requests: u64) -> Vec<conduit_gateway::ledger::SpendRow> {
        let day = conduit_gateway::clock::format_date(conduit_gateway::clock::now_unix());
        for _ in 0..200 {
            self.gateway().ledger.flush().await;
            let rows = self.gateway().state.spend.range(&day, &day).await.unwrap();
            if rows.iter().map(|r| r.requests).sum::<u64>() >= requests {
                return rows;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the ledger did not reach {requests} requests");
    }

    /// Sets the budget of `scope` (`org`, `team:NAME`, `key:ID`), micro-dollars.
    pub async fn set_budget(&self, scope: &str, daily_micros: Option<u64>, monthly_micros: Option<u64>) {
        let limit = conduit_gateway::records::BudgetLimit {
            daily_micros,
            monthly_micros,
        };
        self.gateway().state.budgets.set(scope, limit).await.unwrap();
    }

    pub async fn new_key(&self, owner: &str) -> operator::CreatedKey {
        operator::create_key(
            self.gateway().state.keys.as_ref(),
            operator::NewKeyRequest {
                owner: owner.into(),
                team: Some("payments".into()),
                name: None,
                expires_at: None,
                limits: Default::default(),
            },
        )
        .await
        .unwrap()
    }
}

impl Builder {
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.insert(k.into(), v.into());
        self
    }

    pub fn toml(mut self, t: &str) -> Self {
        self.toml.push_str(t);
        self.toml.push('\n');
        self
    }

    pub fn without_openai_credential(mut self) -> Self {
        self.openai_credential = false;
        self
    }

    /// The Anthropic credential this gateway injects (e.g. another gateway's stand-in key).
    pub fn without_bedrock_credential(mut self) -> Self {
        self.bedrock_credential = false;
        self
    }

    pub fn anthropic_credential(mut self, c: &str) -> Self {
        self.anthropic_credential = c.into();
        self
    }

    /// Wraps the state the gateway uses (e.g. replaces its key store with one that can fail).
    pub fn wrap_state(mut self, f: impl FnOnce(State) -> State + 'static) -> Self {
        self.wrap_state = Some(Box::new(f));
        self
    }

    pub fn mock(mut self, m: MockOptions) -> Self {
        self.mock = m;
        self
    }

    pub async fn start(mut self) -> Harness {
        self.mock.aws_credentials.get_or_insert_with(|| REAL_AWS.to_string());
        let mock = conduit_gateway::mock::start("127.0.0.1:0".parse().unwrap(), self.mock)
            .await
            .unwrap();
        let data = tempfile::tempdir().unwrap();
        let (_, master) = conduit_gateway::seal::MasterKey::generate().unwrap();
        let mut env: HashMap<String, String> = [
            ("CONDUIT_LISTEN", "127.0.0.1:0".to_string()),
            ("CONDUIT_ADMIN_LISTEN", "127.0.0.1:0".to_string()),
            ("CONDUIT_DATA_DIR", data.path().display().to_string()),
            ("CONDUIT_MASTER_KEY", master.to_string()),
            ("CONDUIT_ADMIN_TOKEN", ADMIN_TOKEN.to_string()),
            ("UPSTREAM_ANTHROPIC_URL", mock.url()),
            ("UPSTREAM_OPENAI_URL", mock.url()),
            ("UPSTREAM_BEDROCK_URL", mock.url()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        env.extend(self.env);
        let mut raw: RawConfig = toml::from_str(&self.toml).unwrap();
        conduit_gateway::mock::forward_control_headers(&mut raw);
        let config = raw.validate(&|k| env.get(k).cloned()).unwrap();
        let mut state = conduit_gateway::gateway::open_state(&config).await.unwrap();
        if let Some(wrap) = self.wrap_state {
            state = wrap(state);
        }
        let gateway = Gateway::open_with_state(config, state).await.unwrap();
        let credential = |provider: &'static str, secret: String| {
            let gateway = &gateway;
            async move { gateway.set_credential(provider, Zeroizing::new(secret)).await.unwrap() }
        };
        credential("anthropic", self.anthropic_credential).await;
        if self.bedrock_credential {
            credential("bedrock", REAL_AWS.into()).await;
        }
        credential("azure", REAL_AZURE.into()).await;
        if self.openai_credential {
            credential("openai", REAL_OPENAI.into()).await;
        }
        let created = operator::create_key(
            gateway.state.keys.as_ref(),
            operator::NewKeyRequest {
                owner: "alice@corp.example".into(),
                team: Some("payments".into()),
                name: Some("laptop".into()),
                expires_at: None,
                limits: Default::default(),
            },
        )
        .await
        .unwrap();
        let running = conduit_gateway::server::start(gateway).await.unwrap();
        let http = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        Harness {
            mock,
            running,
            data,
            key: created.key,
            key_id: created.record.id,
            http,
        }
    }
}

/// An OpenAI chat body of exactly `len` bytes asking for `max_tokens` of gpt-5-mini.
pub fn chat_body(len: usize, max_tokens: u64) -> String {
    let head = format!(r#"{{"model":"gpt-5-mini","max_tokens":{max_tokens},"messages":[{{"role":"user","content":""#);
    let tail = r#""}]}"#;
    let pad = len - head.len() - tail.len();
    let b = format!("{head}{}{tail}", "x".repeat(pad));
    assert_eq!(b.len(), len);
    b
}

/// gpt-5-mini: $0.25 in (cache write defaults to the input rate), $2 out per MTok. A 400-byte
/// [`chat_body`] with max_tokens 1000 has a worst case of 400 × 0.25 + 1000 × 2 = 2100 µ$, and with
/// `x-mock-usage: max` the mock reports exactly that usage: real cost = reservation.
pub const CHAT_WORST: u64 = 2100;

impl Harness {
    /// POSTs `body` to `/v1/chat/completions` with `key`, the mock told to report the worst case.
    pub async fn chat_at_worst(&self, key: &str, body: &str) -> Reply {
        let bearer = format!("Bearer {key}");
        self.send(
            Method::POST,
            "/v1/chat/completions",
            &[
                ("authorization", &bearer),
                ("content-type", "application/json"),
                ("x-mock-usage", "max"),
            ],
            body.to_string(),
        )
        .await
    }
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// Reads a whole response (raw bytes, no decoding; a broken body reads as what arrived: none).
    pub async fn read(resp: http::Response<hyper::body::Incoming>) -> Reply {
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        Reply { status, headers, body }
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts an Anthropic-shaped error of `status` / `error_type` whose message contains `needle`.
    pub fn assert_anthropic_error(&self, status: u16, error_type: &str, needle: &str) {
        assert_eq!(
            self.status.as_u16(),
            status,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        let v = self.json();
        assert_eq!(v["type"], "error", "{v}");
        assert_eq!(v["error"]["type"], error_type, "{v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "message {msg:?} should contain {needle:?}");
        assert!(
            self.header("x-conduit-request-id")
                .is_some_and(|id| id.starts_with("req_"))
        );
    }

    /// Asserts an OpenAI-shaped error.
    pub fn assert_openai_error(&self, status: u16, needle: &str) {
        assert_eq!(
            self.status.as_u16(),
            status,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        let v = self.json();
        assert!(v.get("type").is_none(), "OpenAI errors have no top-level type: {v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "message {msg:?} should contain {needle:?}");
    }
}

pub fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    conduit_gateway::hex::encode(&sha2::Sha256::digest(b))
}

/// ../shared relative to the repository root.
pub fn shared_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared")
}

//! `conduit-mock`: a stand-in for the providers, for tests, benchmarks and demos (the real APIs
//! are out of reach here). It speaks Anthropic Messages (JSON and SSE, count_tokens, models) and
//! OpenAI chat completions, Responses and embeddings, with realistic usage frames.
//!
//! Behaviour per request is chosen by headers, or for every request by [`MockOptions`]
//! (`POST /__mock/config`):
//! - `x-mock-mode`: `ok` (default), `status-NNN` (an error in the family's shape, e.g. 429, 500,
//!   529), `midstream-error` (an SSE `error` event after the first events), `reset` (the
//!   connection is dropped before a response), `reset-midstream` (dropped after the first
//!   events), `stall` (the first events, then silence).
//! - `x-mock-delay-ms`: pause between SSE events.
//! - `x-mock-compress`: `gzip` to compress the response (SSE per event, flushed).
//! - `x-mock-usage: max`: report the gateway's worst case exactly — `output_tokens = max_tokens`,
//!   one input token per request body byte, no cache — so a budget test's real cost is its reservation.
//!
//! It also answers as **AWS Bedrock** (`/model/{id}/invoke…`, `/converse…`, listings; see
//! [`bedrock`]), verifying each request's SigV4 signature when [`MockOptions::aws_credentials`] is
//! set, and as **Azure OpenAI** (`/openai/deployments/{d}/…?api-version=…`, `/openai/v1/…`).
//!
//! It records every request (method, path, query, headers, body length and SHA-256, and the SHA-256
//! of the exact response bytes it sent) at `GET /__mock/requests`; `POST /__mock/reset` clears it.

pub mod bedrock;
pub mod payload;

/// The request headers that steer the mock. A gateway in front of it forwards them only when told
/// to (`[upstream.*] forward_headers`): tests, benchmarks and the demo do so with
/// [`forward_control_headers`] or [`CONTROL_HEADERS_TOML`].
pub const CONTROL_HEADERS: &[&str] = &["x-mock-mode", "x-mock-delay-ms", "x-mock-compress", "x-mock-usage"];

/// The same, as config-file text for a gateway started as a process.
pub const CONTROL_HEADERS_TOML: &str = "[upstream.anthropic]\nforward_headers = [\"x-mock-mode\", \"x-mock-delay-ms\", \"x-mock-compress\", \"x-mock-usage\"]\n[upstream.openai]\nforward_headers = [\"x-mock-mode\", \"x-mock-delay-ms\", \"x-mock-compress\", \"x-mock-usage\"]\n[upstream.bedrock]\nforward_headers = [\"x-mock-mode\", \"x-mock-delay-ms\", \"x-mock-compress\", \"x-mock-usage\"]\n";

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use conduit_wire::BoxError;
pub use payload::{Family, Reply, Usage};

/// Defaults for requests that carry no `x-mock-*` header.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MockOptions {
    /// Mode name (see the module docs); `None` = `ok`.
    #[serde(default)]
    pub mode: Option<String>,
    /// Pause between SSE events, in milliseconds.
    #[serde(default)]
    pub event_delay_ms: u64,
    /// `gzip` to compress responses.
    #[serde(default)]
    pub compress: Option<String>,
    /// Bedrock: the credential requests must be signed with — `AKID:SECRET` (SigV4, verified) or a
    /// Bedrock API key (bearer). `None`: Bedrock requests are not authenticated.
    #[serde(default)]
    pub aws_credentials: Option<String>,
    /// Bedrock: the region signatures must be scoped to (default `us-east-1`).
    #[serde(default)]
    pub aws_region: Option<String>,
}

/// What the mock saw and sent, per request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Recorded {
    /// Method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Raw query string.
    pub query: Option<String>,
    /// Headers in arrival order (non-UTF-8 values lossily decoded).
    pub headers: Vec<(String, String)>,
    /// Request body length.
    pub body_len: usize,
    /// Request body SHA-256 (hex).
    pub body_sha256: String,
    /// SHA-256 (hex) of the response body bytes exactly as sent (compressed if compressed).
    pub response_sha256: Option<String>,
    /// Response status.
    pub status: u16,
    /// The mode it answered in.
    pub mode: String,
    /// The usage its response reported (absent for errors and resets).
    #[serde(default)]
    pub usage: Option<Usage>,
}

impl Recorded {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct State {
    options: Mutex<MockOptions>,
    log: Mutex<Vec<Recorded>>,
}

/// A running mock.
pub struct MockServer {
    /// Bound address.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl MockServer {
    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds `listen` and serves until dropped.
pub async fn start(listen: SocketAddr, options: MockOptions) -> std::io::Result<MockServer> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let state = Arc::new(State {
        options: Mutex::new(options),
        log: Mutex::default(),
    });
    let task = tokio::spawn(async move {
        let builder = Arc::new(hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()));
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            let _ = stream.set_nodelay(true);
            let state = state.clone();
            let builder = builder.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| handle(state.clone(), req));
                let _ = builder.serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    Ok(MockServer { addr, task })
}

type MockResponse = Response<MockBody>;

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<MockResponse, BoxError> {
    let path = req.uri().path().to_string();
    match (req.method(), path.as_str()) {
        (&Method::GET, "/__mock/requests") => {
            let log = state.log.lock().map(|l| l.clone()).unwrap_or_default();
            return Ok(json_response(StatusCode::OK, serde_json::to_vec(&log)?));
        }
        (&Method::POST, "/__mock/reset") => {
            if let Ok(mut l) = state.log.lock() {
                l.clear();
            }
            return Ok(json_response(StatusCode::OK, b"{\"ok\":true}".to_vec()));
        }
        (&Method::POST, "/__mock/config") => {
            let body = req.into_body().collect().await?.to_bytes();
            let opts: MockOptions = serde_json::from_slice(&body)?;
            if let Ok(mut o) = state.options.lock() {
                *o = opts;
            }
            return Ok(json_response(StatusCode::OK, b"{\"ok\":true}".to_vec()));
        }
        (&Method::HEAD | &Method::GET, "/") => {
            return Ok(json_response(StatusCode::OK, b"{\"mock\":true}".to_vec()));
        }
        _ => {}
    }

    let defaults = state.options.lock().map(|o| o.clone()).unwrap_or_default();
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let mode = header("x-mock-mode")
        .or(defaults.mode.clone())
        .unwrap_or_else(|| "ok".into());
    let delay = header("x-mock-delay-ms")
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or(Duration::from_millis(defaults.event_delay_ms));
    let accepts_gzip = header("accept-encoding").is_some_and(|v| v.contains("gzip"));
    let gzip = header("x-mock-compress").or(defaults.compress.clone()).as_deref() == Some("gzip") && accepts_gzip;

    let mut record = Recorded {
        method: parts.method.to_string(),
        path: path.clone(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body_len: body.len(),
        body_sha256: conduit_core::hex::encode(&Sha256::digest(&body)),
        response_sha256: None,
        status: 0,
        mode: mode.clone(),
        usage: None,
    };

    if mode == "reset" {
        record.status = 0;
        push(&state, record);
        return Err("mock: connection reset as requested".into());
    }

    let usage_max = header("x-mock-usage").as_deref() == Some("max");
    let reply = if let Some(op) = bedrock::classify(&path) {
        let verdict = match &defaults.aws_credentials {
            Some(c) => bedrock::verify(
                &parts.method,
                &path,
                parts.uri.query(),
                &parts.headers,
                &body,
                c,
                defaults.aws_region.as_deref().unwrap_or("us-east-1"),
            ),
            None => Ok(()),
        };
        match verdict {
            Ok(()) => bedrock::reply(&op, &body, &mode, usage_max),
            Err(why) => bedrock::error(StatusCode::FORBIDDEN, &why),
        }
    } else if let Some(rest) = path.strip_prefix("/openai/") {
        // Azure OpenAI: the deployments form needs an api-version; both forms answer as OpenAI.
        let (openai_path, ok) = match rest.strip_prefix("deployments/").and_then(|r| r.split_once('/')) {
            Some((_, op)) => (
                format!("/v1/{op}"),
                parts
                    .uri
                    .query()
                    .is_some_and(|q| q.split('&').any(|kv| kv.starts_with("api-version="))),
            ),
            None => (format!("/{rest}"), rest.starts_with("v1/")),
        };
        if ok {
            payload::reply(&parts.method, &openai_path, &parts.headers, &body, &mode, usage_max)
        } else {
            payload::reply(&parts.method, "/unknown", &HeaderMap::new(), b"", "status-404", false)
        }
    } else {
        payload::reply(&parts.method, &path, &parts.headers, &body, &mode, usage_max)
    };
    let chunks: Vec<Bytes> = if gzip {
        gzip_chunks(&reply.chunks)
    } else {
        reply.chunks.clone()
    };
    let mut hasher = Sha256::new();
    let (sent, cut) = match mode.as_str() {
        "midstream-error" | "reset-midstream" | "stall" if reply.streaming => (chunks.len().min(2), true),
        _ => (chunks.len(), false),
    };
    let mut to_send: Vec<Bytes> = chunks[..sent].to_vec();
    if mode == "midstream-error" && reply.streaming {
        let err = payload::midstream_error(reply.family);
        to_send.push(if gzip {
            gzip_chunks(std::slice::from_ref(&err)).remove(0)
        } else {
            err
        });
    }
    for c in &to_send {
        hasher.update(c);
    }
    record.response_sha256 = Some(conduit_core::hex::encode(&hasher.finalize()));
    record.status = reply.status.as_u16();
    record.usage = reply.status.is_success().then_some(reply.usage);
    push(&state, record);

    let ending = match mode.as_str() {
        "stall" if cut => Ending::Stall,
        "reset-midstream" if cut => Ending::Reset,
        _ => Ending::Close,
    };
    let mut resp = Response::new(MockBody::spawn(
        to_send,
        if reply.streaming { delay } else { Duration::ZERO },
        ending,
    ));
    *resp.status_mut() = reply.status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(reply.content_type));
    if reply.family == Family::Bedrock && !reply.status.is_success() {
        let kind = serde_json::from_slice::<serde_json::Value>(&reply.chunks.concat())
            .ok()
            .and_then(|v| v["__type"].as_str().and_then(|t| HeaderValue::from_str(t).ok()));
        if let Some(kind) = kind {
            h.insert("x-amzn-errortype", kind);
        }
    }
    h.insert("request-id", HeaderValue::from_static("req_mock_0001"));
    if gzip {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    if reply.streaming {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    Ok(resp)
}

fn push(state: &State, r: Recorded) {
    if let Ok(mut l) = state.log.lock() {
        l.push(r);
    }
}

/// Gzip as one stream, flushed after each chunk so every event is decodable on arrival.
fn gzip_chunks(chunks: &[Bytes]) -> Vec<Bytes> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut out = Vec::with_capacity(chunks.len() + 1);
    let mut taken = 0;
    for (i, c) in chunks.iter().enumerate() {
        let _ = enc.write_all(c);
        let _ = enc.flush();
        if i + 1 == chunks.len() {
            let _ = enc.try_finish();
        }
        let buf = enc.get_ref();
        out.push(Bytes::copy_from_slice(&buf[taken..]));
        taken = buf.len();
    }
    out
}

fn json_response(status: StatusCode, body: Vec<u8>) -> MockResponse {
    let mut r = Response::new(MockBody::spawn(vec![Bytes::from(body)], Duration::ZERO, Ending::Close));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

#[derive(Clone, Copy)]
enum Ending {
    Close,
    Stall,
    Reset,
}

/// Response body fed by a task, so chunks go out with real pauses between them.
pub struct MockBody {
    rx: mpsc::Receiver<Result<Bytes, BoxError>>,
}

impl MockBody {
    fn spawn(chunks: Vec<Bytes>, delay: Duration, ending: Ending) -> MockBody {
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            for (i, c) in chunks.into_iter().enumerate() {
                if i > 0 && !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                if tx.send(Ok(c)).await.is_err() {
                    return;
                }
            }
            match ending {
                Ending::Close => {}
                Ending::Stall => {
                    // Hold the stream open, sending nothing, until the client gives up.
                    tx.closed().await;
                }
                Ending::Reset => {
                    let _ = tx
                        .send(Err("mock: connection reset mid-stream as requested".into()))
                        .await;
                }
            }
        });
        MockBody { rx }
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.rx.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data)))
    }
}

/// Runs the mock as a process (`conduit-mock`).
pub async fn run_forever(listen: SocketAddr, options: MockOptions) -> std::io::Result<()> {
    let server = start(listen, options).await?;
    println!("conduit-mock listening on {}", server.url());
    let _ = tokio::signal::ctrl_c().await;
    Ok(())
}

//! Optional OTLP trace export: one span per request, built from its audit record, sent as
//! OTLP/HTTP JSON (`POST {endpoint}/v1/traces`) in batches by a thread of its own. Off unless
//! `[otlp] endpoint` (or `CONDUIT_OTLP_ENDPOINT`) is set — the standard `OTEL_*` variables are
//! deliberately not read, so no stray environment variable can make the gateway call out.
//!
//! Spans carry the record's metadata (ids, provider, model, status, tokens, cost, error class,
//! timings) under OpenTelemetry's HTTP and GenAI attribute names; like the record, never text.
//! Export never slows requests: the queue is bounded and a full queue drops spans (counted in the
//! log); a collector that fails is retried with the next batch.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::Connect;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AuditRecord, fields};
use conduit_core::error::{Error, Result};

/// `[otlp]` in the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOtlp {
    /// Collector base URL (`http://otel-collector:4318`); env `CONDUIT_OTLP_ENDPOINT`. Unset: off.
    pub endpoint: Option<String>,
    /// `service.name` resource attribute (default `conduit`).
    pub service_name: Option<String>,
    /// Extra headers for the collector (an API key for a hosted collector).
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, conduit_core::seal::Redacted>,
}

/// Validated `[otlp]`.
#[derive(Debug, Clone)]
pub struct OtlpConfig {
    /// `{endpoint}/v1/traces`.
    pub url: http::Uri,
    /// `service.name`.
    pub service_name: String,
    /// Extra headers.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl RawOtlp {
    /// `None` when no endpoint is configured.
    pub fn validate(self, env: &dyn Fn(&str) -> Option<String>) -> Result<Option<OtlpConfig>> {
        let Some(endpoint) = env("CONDUIT_OTLP_ENDPOINT").filter(|v| !v.is_empty()).or(self.endpoint) else {
            return Ok(None);
        };
        let base = endpoint.trim_end_matches('/');
        let url: http::Uri = format!("{base}/v1/traces").parse().map_err(|e| {
            Error::msg(format!(
                "otlp.endpoint {endpoint:?} is not a URL ({e}); use http(s)://host:4318"
            ))
        })?;
        if !matches!(url.scheme_str(), Some("http" | "https")) {
            return Err(Error::msg(format!(
                "otlp.endpoint {endpoint:?}: use http:// or https://"
            )));
        }
        let mut headers = Vec::new();
        for (k, v) in self.headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| Error::msg(format!("otlp.headers: {k:?} is not a header name")))?;
            let mut value = HeaderValue::from_str(v.expose())
                .map_err(|_| Error::msg(format!("otlp.headers.{k}: not a valid header value")))?;
            value.set_sensitive(true);
            headers.push((name, value));
        }
        Ok(Some(OtlpConfig {
            url,
            service_name: self.service_name.unwrap_or_else(|| "conduit".into()),
            headers,
        }))
    }
}

const QUEUE: usize = 8192;
const BATCH: usize = 512;
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Handle feeding the exporter thread.
#[derive(Clone)]
pub struct Exporter {
    tx: mpsc::Sender<Value>,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OtlpExporter")
    }
}

impl Exporter {
    /// Starts the exporter thread (its own small runtime), posting with `client` (the gateway
    /// passes one built from its `[network]` settings: the same CAs, proxy and timeouts).
    pub fn start<C: Connect + Clone + Send + Sync + 'static>(
        config: OtlpConfig,
        client: Client<C, Full<Bytes>>,
    ) -> Result<Exporter> {
        let (tx, rx) = mpsc::channel::<Value>(QUEUE);
        std::thread::Builder::new()
            .name("conduit-otlp".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(r) => r,
                    Err(e) => return tracing::error!(error = %e, "OTLP exporter could not start"),
                };
                runtime.block_on(run(config, client, rx));
            })
            .map_err(|e| Error::msg(format!("starting the OTLP exporter: {e}")))?;
        tracing::info!("OTLP trace export on");
        Ok(Exporter { tx })
    }

    /// Queues the span of a record; drops it when the queue is full.
    pub fn export(&self, record: &AuditRecord) {
        if self.tx.try_send(span(record)).is_err() {
            static DROPPED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = DROPPED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if n.is_power_of_two() {
                tracing::warn!(
                    dropped = n + 1,
                    "OTLP queue full: spans dropped (is the collector reachable?)"
                );
            }
        }
    }
}

async fn run<C: Connect + Clone + Send + Sync + 'static>(
    config: OtlpConfig,
    client: Client<C, Full<Bytes>>,
    mut rx: mpsc::Receiver<Value>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut last = Instant::now();
    loop {
        let msg = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await;
        let closed = matches!(msg, Ok(None));
        if let Ok(Some(span)) = msg {
            batch.push(span);
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(s) => batch.push(s),
                    Err(_) => break,
                }
            }
        }
        if !batch.is_empty() && (batch.len() >= BATCH || last.elapsed() >= FLUSH_EVERY || closed) {
            send(&config, &client, std::mem::take(&mut batch)).await;
            last = Instant::now();
        }
        if closed {
            return;
        }
    }
}

async fn send<C: Connect + Clone + Send + Sync + 'static>(
    config: &OtlpConfig,
    client: &Client<C, Full<Bytes>>,
    spans: Vec<Value>,
) {
    let n = spans.len();
    let body = json!({"resourceSpans": [{
        "resource": {"attributes": [kv("service.name", json!({"stringValue": config.service_name}))]},
        "scopeSpans": [{"scope": {"name": "conduit", "version": env!("CARGO_PKG_VERSION")}, "spans": spans}],
    }]});
    let mut req = Request::post(config.url.clone()).header("content-type", "application/json");
    for (k, v) in &config.headers {
        req = req.header(k, v);
    }
    let Ok(req) = req.body(Full::new(Bytes::from(body.to_string()))) else {
        return;
    };
    match tokio::time::timeout(Duration::from_secs(10), client.request(req)).await {
        Ok(Ok(resp)) if resp.status().is_success() => tracing::debug!(spans = n, "OTLP batch sent"),
        Ok(Ok(resp)) => tracing::warn!(
            spans = n,
            status = resp.status().as_u16(),
            "the OTLP collector refused a batch"
        ),
        Ok(Err(e)) => tracing::warn!(spans = n, error = %e, "OTLP collector unreachable; batch dropped"),
        Err(_) => tracing::warn!(spans = n, "OTLP collector did not answer in 10 s; batch dropped"),
    }
}

fn kv(key: &str, value: Value) -> Value {
    json!({"key": key, "value": value})
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    let _ = getrandom::fill(&mut b);
    conduit_core::hex::encode(&b)
}

/// The span of one record (OTLP JSON mapping: ids hex, times as decimal strings of nanoseconds).
pub fn span(r: &AuditRecord) -> Value {
    let attrs: Vec<Value> = fields::attributes()
        .filter_map(|(name, field)| Some(kv(name, (field.read)(r).to_otlp()?)))
        .collect();
    let ns = |ms: f64| format!("{}", (ms * 1e6) as i128);
    let start = r.start_ms as f64;
    json!({
        "traceId": random_hex(16),
        "spanId": random_hex(8),
        "name": format!("{} {}", r.method, r.path),
        "kind": 2,
        "startTimeUnixNano": ns(start),
        "endTimeUnixNano": ns(start + r.duration_ms),
        "attributes": attrs,
        "status": if r.error_class.is_some() { json!({"code": 2, "message": r.error_class}) } else { json!({"code": 1}) },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_unless_configured_and_spans_carry_metadata() {
        let none = |_: &str| None;
        assert!(RawOtlp::default().validate(&none).unwrap().is_none());
        let env = |k: &str| (k == "CONDUIT_OTLP_ENDPOINT").then(|| "http://collector:4318/".to_string());
        let c = RawOtlp::default().validate(&env).unwrap().unwrap();
        assert_eq!(c.url.to_string(), "http://collector:4318/v1/traces");
        let bad = RawOtlp {
            endpoint: Some("collector".into()),
            ..RawOtlp::default()
        };
        assert!(bad.validate(&none).is_err());

        let span = span(&AuditRecord {
            request_id: "req_1".into(),
            method: "POST".into(),
            path: "/v1/messages".into(),
            status: 529,
            start_ms: 1_000,
            duration_ms: 2.5,
            error_class: Some("overloaded".into()),
            model: Some("claude-x".into()),
            ..AuditRecord::default()
        });
        assert_eq!(span["startTimeUnixNano"], "1000000000");
        assert_eq!(span["endTimeUnixNano"], "1002500000");
        assert_eq!(span["status"]["code"], 2);
        assert_eq!(span["traceId"].as_str().unwrap().len(), 32);
        let text = span.to_string();
        assert!(text.contains("\"gen_ai.request.model\"") && text.contains("claude-x"));
    }
}

//! **record** — always runs, whatever happened: success, refusal, upstream failure, client abort.
//! Reads: the [`Exchange`], the outcome and the settled figures. Records: one metadata-only
//! [`AuditRecord`] into the hash-chained audit log (`crate::audit`, off the request path); a short
//! `debug` line on `conduit::audit` (the durable record is the log, so the request path does not
//! format and write a line per request at the default level). Never a body, a prompt, a query
//! string or a key.
//! Returns: in strict durability, the acknowledgement the response's end must wait for.

use crate::audit::{AuditLog, AuditRecord, Pending};
use crate::body::StreamEnd;
use crate::error::GatewayError;
use crate::stages::accept::Exchange;
use crate::stages::settle::Settled;

/// How a response went, as far as the audit record is concerned.
#[derive(Debug, Clone, Copy, Default)]
pub struct Delivery {
    /// Body bytes sent to the client.
    pub bytes_out: u64,
    /// Start → first body byte handed to the client, ms.
    pub ttfb_ms: Option<f64>,
    /// A provider error event arrived inside a 2xx stream.
    pub stream_error: bool,
}

/// Records a request that ended before or without a streamed upstream body.
pub fn exchange(
    log: &AuditLog,
    ex: Exchange,
    status: u16,
    error: Option<&GatewayError>,
    settled: Option<Settled>,
) -> Option<Pending> {
    let outcome = error.map(|e| e.kind.as_str()).unwrap_or("complete");
    let class = match error {
        Some(e) => Some(e.kind.as_str().to_string()),
        None => status_class(status),
    };
    let ttfb = ex.started.elapsed().as_secs_f64() * 1e3;
    emit(
        log,
        ex,
        status,
        outcome,
        class,
        Delivery {
            ttfb_ms: Some(ttfb),
            ..Delivery::default()
        },
        settled,
    )
}

/// Records a request whose upstream body finished, failed or was abandoned.
pub fn stream(
    log: &AuditLog,
    ex: Exchange,
    status: u16,
    delivery: Delivery,
    end: &StreamEnd,
    settled: Option<Settled>,
) -> Option<Pending> {
    if let StreamEnd::UpstreamError(cause) = end {
        tracing::warn!(request_id = %ex.id, cause = %cause, "upstream body failed mid-stream");
    }
    let class = status_class(status).or_else(|| match end {
        StreamEnd::UpstreamError(_) => Some("stream_error".into()),
        StreamEnd::IdleTimeout => Some("timeout".into()),
        StreamEnd::ClientGone { .. } => Some("client_abort".into()),
        StreamEnd::Complete if delivery.stream_error => Some("stream_error".into()),
        StreamEnd::Complete => None,
    });
    emit(log, ex, status, end.as_str(), class, delivery, settled)
}

/// The error class of an upstream status (docs/audit.md).
fn status_class(status: u16) -> Option<String> {
    match status {
        429 => Some("upstream_429".into()),
        529 => Some("overloaded".into()),
        500..=599 => Some("upstream_5xx".into()),
        400..=499 => Some("upstream_4xx".into()),
        _ => None,
    }
}

fn emit(
    log: &AuditLog,
    ex: Exchange,
    status: u16,
    outcome: &str,
    error_class: Option<String>,
    delivery: Delivery,
    settled: Option<Settled>,
) -> Option<Pending> {
    let duration_ms = ex.started.elapsed().as_secs_f64() * 1e3;
    let s = settled.unwrap_or_default();
    let cost_micros = settled.and_then(|s| s.cost_micros);
    tracing::debug!(
        target: "conduit::audit",
        request_id = %ex.id,
        key_id = ex.principal.as_ref().map_or("-", |p| p.key_id.as_str()),
        team = ex.principal.as_ref().and_then(|p| p.team.as_deref()).unwrap_or("-"),
        client = ex.client,
        provider = ex.provider.map_or("-", |p| p.as_str()),
        path = %ex.path,
        model = ex.model.as_deref().unwrap_or("-"),
        status,
        outcome,
        error_class = error_class.as_deref().unwrap_or("-"),
        bytes_in = ex.bytes_in,
        bytes_out = delivery.bytes_out,
        duration_ms,
        input_tokens = s.usage.input,
        output_tokens = s.usage.output,
        cost_usd = %cost_micros.map(crate::money::usd).unwrap_or_else(|| "-".into()),
        findings = ex.findings.len(),
        "request"
    );
    let principal = ex.principal;
    log.record(AuditRecord {
        seq: 0,
        prev: String::new(),
        request_id: ex.id,
        start_ms: ex.started_ms,
        end_ms: ex.started_ms + duration_ms as i64,
        key_id: principal.as_ref().map(|p| p.key_id.clone()),
        owner: principal.as_ref().map(|p| p.owner.clone()),
        team: principal.and_then(|p| p.team),
        client: ex.client.to_string(),
        client_ip: ex.peer.ip().to_string(),
        provider: ex.provider.map(|p| p.as_str().to_string()),
        upstream: ex.upstream,
        method: ex.method.to_string(),
        path: ex.path,
        treatment: ex.treatment.to_string(),
        model: ex.model,
        status,
        outcome: outcome.to_string(),
        error_class,
        stream: ex.stream,
        ttfb_ms: delivery.ttfb_ms.map(round3),
        duration_ms: round3(duration_ms),
        overhead_ms: ex.overhead_ms.map(round3),
        policy_ms: ex.policy_ms.map(round3),
        bytes_in: ex.bytes_in,
        bytes_out: delivery.bytes_out,
        input_tokens: s.usage.input,
        output_tokens: s.usage.output,
        cache_read_tokens: s.usage.cache_read,
        cache_write_tokens: s.usage.cache_write,
        cost_micros,
        price: s.basis.map(|b| b.as_str().to_string()),
        estimated: s.estimated,
        findings: ex.findings,
        policy_set: ex.policy_set,
        session: ex.session,
        suppressed: 0,
        admin: None,
    })
}

fn round3(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}

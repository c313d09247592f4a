//! **audit** — always runs, whatever happened: success, refusal, upstream failure, client abort.
//! Reads: the [`Exchange`], the outcome and the settled figures. Records: one metadata-only event per
//! request on the `conduit::audit` log target — ids, key id, team, family, path, model, status,
//! sizes, timings, tokens, cost. Never a body, a prompt, a query string or a key. (The durable,
//! hash-chained audit store builds on this record; see docs/architecture.md.)

use crate::body::StreamEnd;
use crate::error::GatewayError;
use crate::stages::accept::Exchange;
use crate::stages::settle::Settled;

/// Records a request that ended before or without a streamed upstream body.
pub fn record(ex: &Exchange, status: u16, error: Option<&GatewayError>, settled: Option<Settled>) {
    let outcome = error.map(|e| e.kind.as_str()).unwrap_or("complete");
    emit(ex, status, 0, outcome, error, settled);
}

/// Records a request whose upstream body finished, failed or was abandoned.
pub fn record_stream(ex: &Exchange, status: u16, bytes_out: u64, end: &StreamEnd, settled: Option<Settled>) {
    emit(ex, status, bytes_out, end.as_str(), None, settled);
    if let StreamEnd::UpstreamError(cause) = end {
        tracing::warn!(request_id = %ex.id, cause = %cause, "upstream body failed mid-stream");
    }
}

fn emit(
    ex: &Exchange,
    status: u16,
    bytes_out: u64,
    outcome: &str,
    error: Option<&GatewayError>,
    settled: Option<Settled>,
) {
    let duration_ms = ex.started.elapsed().as_secs_f64() * 1e3;
    let s = settled.unwrap_or_default();
    let cost = match (settled, s.cost_micros) {
        (None, _) => "-".to_string(),
        (Some(_), Some(c)) => crate::ledger::usd(c),
        (Some(_), None) => "unknown".to_string(),
    };
    tracing::info!(
        target: "conduit::audit",
        request_id = %ex.id,
        key_id = ex.key_id.as_deref().unwrap_or("-"),
        owner = ex.owner.as_deref().unwrap_or("-"),
        team = ex.team.as_deref().unwrap_or("-"),
        provider = ex.protocol.map(|p| p.as_str()).unwrap_or("-"),
        method = %ex.method,
        path = %ex.path,
        model = ex.model.as_deref().unwrap_or("-"),
        stream = ex.stream,
        status,
        outcome,
        error_side = error.map(|e| e.side.as_str()).unwrap_or("-"),
        bytes_in = ex.bytes_in,
        bytes_out,
        upstream_ttfb_ms = ex.upstream_ttfb_ms.unwrap_or(-1.0),
        duration_ms,
        input_tokens = s.usage.input,
        output_tokens = s.usage.output,
        cache_read_tokens = s.usage.cache_read,
        cache_write_tokens = s.usage.cache_write,
        cost_usd = %cost,
        estimated = s.estimated,
        client_ip = %ex.peer.ip(),
        findings = %ex.findings.join(","),
        policy_set = ex.policy_set.as_deref().unwrap_or("-"),
        "request"
    );
}

//! **scan** — reads: the extracted segments, the headers and query that will be forwarded, the
//! principal and the route. Runs the Wasm policy set (`crate::policy`) on all of that text and
//! applies each finding's mode (per category, and per origin: `"secret.*@metadata"`); a batch's
//! every model is judged.
//! Decides: forward (nothing found, or only `alert` findings — recorded), refuse with 400 naming
//! category, rule and location (a `block` finding), refuse with the policy's own status (a model
//! outside the allow-list: 403), or refuse with 503 when a `fail_closed` policy failed. Returns
//! nothing; it records findings (metadata only) in the store and on the exchange.
//!
//! Never the matched text: not in the message, the store, the log or the exchange.

use std::sync::atomic::{AtomicU64, Ordering};

use conduit_state::Principal;
use conduit_state::records::FindingRecord;
use conduit_state::store::FindingStore;

use crate::content::Extracted;
use crate::error::{ErrorKind, Fault, GatewayError};
use crate::policy::runtime::RequestInfo;
use crate::policy::segments::{Origin, Segment};
use crate::policy::{Decision, Mode, Outcome, Policies, ReportedFinding};
use crate::stages::accept::Exchange;
use crate::stages::route::Route;
use http::HeaderMap;

/// Above this much new text, the scan runs with the worker thread handed off (`block_in_place`),
/// so other requests on this worker are not delayed.
const INLINE_LIMIT: usize = 32 * 1024;

/// How a scan ended, when it did not refuse the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scanned {
    /// Judged: forward it.
    Done,
    /// A part the body was read without (remembered) has no verdict any more — evicted, or the
    /// policy set was reloaded since: read the whole body again, without recall, and scan that.
    ReadAgain,
}

/// What the scan stage reads besides the request.
pub struct Reads<'a> {
    /// The policy set (`None`: the stage is off).
    pub policies: Option<&'a Policies>,
    /// Where findings are kept.
    pub findings: &'a dyn FindingStore,
}

/// Runs the policies on a request: the body's segments (and the verdicts of the parts it was read
/// without), then the query and headers that will be forwarded (appended to `extracted.segments`).
pub async fn scan(
    reads: &Reads<'_>,
    ex: &mut Exchange,
    principal: &Principal,
    route: &Route<'_>,
    extracted: &mut Extracted<'_>,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Scanned, GatewayError> {
    let Some(policies) = reads.policies else {
        return Ok(Scanned::Done);
    };
    let began = std::time::Instant::now();
    append_head(&mut extracted.segments, &route.path, headers, query);
    let segments = &extracted.segments;
    let info = RequestInfo {
        provider: route.upstream.provider.to_string(),
        model: extracted.facts.model.clone(),
        key_id: principal.key_id.clone(),
        owner: principal.owner.clone(),
        team: principal.team.clone(),
        path: route.path.clone(),
        stream: extracted.facts.stream,
        estimated_input_tokens: ex.bytes_in / 4,
    };
    let text_bytes: usize = segments.iter().map(|s| s.text.len()).sum();
    let Some(mut outcome) = run(policies, &info, segments, &extracted.parts, text_bytes) else {
        return Ok(Scanned::ReadAgain);
    };
    // A batch holds several requests: each model is judged too (the segments were scanned once).
    let mut judged: Vec<&str> = info.model.iter().map(String::as_str).collect();
    for model in extracted.requests.iter().filter_map(|r| r.model.as_deref()) {
        if judged.contains(&model) {
            continue;
        }
        judged.push(model);
        let one = RequestInfo {
            model: Some(model.to_string()),
            ..info.clone()
        };
        outcome.merge(policies.scan(&one, &[]));
    }
    ex.policy_ms = Some(began.elapsed().as_secs_f64() * 1e3);
    ex.policy_set = Some(outcome.set_digest.clone());
    ex.findings = outcome
        .findings
        .iter()
        .map(|f| crate::audit::AuditFinding {
            category: f.category.clone(),
            rule: f.rule_id.clone(),
            mode: f.mode.as_str().to_string(),
            location: if f.in_text() {
                format!("{}:{}-{}", f.location, f.start, f.end)
            } else {
                "request".to_string()
            },
        })
        .collect();
    let ids = record(reads.findings, ex, principal, &outcome).await;
    // A model id that itself carries a finding (a secret in `model` or in a path's model id) is
    // not recorded as the request's model.
    if outcome
        .findings
        .iter()
        .any(|f| f.in_text() && (f.location == "model" || f.origin == "path"))
    {
        ex.model = Some("(withheld: it carried a finding)".into());
    }
    if let Some((policy, reason)) = &outcome.failure {
        return Err(GatewayError::new(
            ErrorKind::PolicyUnavailable,
            Fault::Gateway,
            format!(
                "could not check this request: policy `{policy}` {reason}, and it is set to fail closed, so nothing was sent. Try again; if it persists, tell your Conduit admin (request id in x-conduit-request-id)."
            ),
        ));
    }
    if outcome.decision != Decision::Block {
        return Ok(Scanned::Done);
    }
    if let Some((status, message, policy)) = outcome.deny.clone() {
        let kind = if status == 403 {
            ErrorKind::Forbidden
        } else {
            ErrorKind::PolicyBlocked
        };
        tracing::info!(request_id = %ex.id, policy = %policy, status, "request refused by policy decision");
        return Err(GatewayError::client(kind, format!("refused this request: {message}")));
    }
    Err(GatewayError::client(
        ErrorKind::PolicyBlocked,
        block_message(&outcome.findings, &ids),
    ))
}

/// The path (ids, model ids, deployment names), the query string (decoded, one `name: value`
/// line per parameter; `+` read both as a space and as itself) and each forwarded header as
/// `name: value`: they reach the provider too.
fn append_head(segments: &mut Vec<Segment<'_>>, path: &str, headers: &HeaderMap, query: Option<&str>) {
    segments.push(Segment {
        path: "path".into(),
        text: crate::percent::decode(path).into(),
        origin: Origin::Path,
    });
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        let mut text = String::with_capacity(q.len() * 2);
        for plus_is_space in [true, false] {
            for pair in q.split('&') {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                let decode = |s: &str| {
                    if plus_is_space {
                        crate::percent::decode_query(s)
                    } else {
                        crate::percent::decode(s)
                    }
                };
                text.push_str(&decode(k));
                text.push_str(": ");
                text.push_str(&decode(v));
                text.push('\n');
            }
            if !q.contains('+') {
                break;
            }
        }
        segments.push(Segment {
            path: "query".into(),
            text: text.into(),
            origin: Origin::Query,
        });
    }
    for (name, value) in headers {
        segments.push(Segment {
            path: format!("header.{name}"),
            text: format!("{name}: {}", String::from_utf8_lossy(value.as_bytes())).into(),
            origin: Origin::Header,
        });
    }
}

fn run(
    policies: &Policies,
    info: &RequestInfo,
    segments: &[Segment<'_>],
    parts: &[crate::content::Part],
    text_bytes: usize,
) -> Option<Outcome> {
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi_thread && text_bytes > INLINE_LIMIT {
        tokio::task::block_in_place(|| policies.scan_parts(info, segments, parts))
    } else {
        policies.scan_parts(info, segments, parts)
    }
}

/// Stores the findings; returns their ids in the order of `outcome.findings`.
async fn record(findings: &dyn FindingStore, ex: &Exchange, principal: &Principal, outcome: &Outcome) -> Vec<String> {
    if outcome.findings.is_empty() {
        return Vec::new();
    }
    let action = if outcome.decision == Decision::Block {
        "blocked"
    } else {
        "forwarded"
    };
    let records: Vec<FindingRecord> = outcome
        .findings
        .iter()
        .map(|f| FindingRecord {
            id: finding_id(),
            time: ex.started_unix,
            request_id: ex.id.clone(),
            key_id: principal.key_id.clone(),
            team: principal.team.clone(),
            policy: f.policy.clone(),
            category: f.category.clone(),
            rule_id: f.rule_id.clone(),
            location: f.location.clone(),
            start: f.start,
            end: f.end,
            mode: f.mode.as_str().to_string(),
            action: action.to_string(),
            false_positive: None,
        })
        .collect();
    for r in &records {
        tracing::info!(
            target: "conduit::findings",
            request_id = %r.request_id,
            finding = %r.id,
            key_id = %r.key_id,
            policy = %r.policy,
            category = %r.category,
            rule = %r.rule_id,
            location = %r.location,
            start = r.start,
            end = r.end,
            mode = %r.mode,
            action,
            "policy finding"
        );
    }
    if let Err(e) = findings.record(&records).await {
        tracing::error!(request_id = %ex.id, error = %e, "could not store policy findings");
    }
    records.into_iter().map(|r| r.id).collect()
}

/// `f_` + 16 hex of Unix nanoseconds + 4 hex of a counter: unique and sorted by time.
fn finding_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed) & 0xffff;
    format!("f_{nanos:016x}{n:04x}")
}

/// What the engineer reads: what kind of thing, where, and what to do. Never the value.
pub fn block_message(findings: &[ReportedFinding], ids: &[String]) -> String {
    let Some((at, first)) = findings.iter().enumerate().find(|(_, f)| f.mode == Mode::Block) else {
        return "blocked this request by policy.".to_string();
    };
    let what = match first.category.split('.').next().unwrap_or("") {
        "secret" => "a secret",
        "entity" => "a term your organisation marks as sensitive",
        "model" => "a model that is not allowed",
        _ => "content a policy does not allow",
    };
    let location = if first.in_text() {
        format!("in {} (bytes {}–{})", first.location, first.start, first.end)
    } else {
        "in the request".to_string()
    };
    let id = ids.get(at).map(String::as_str).unwrap_or("-");
    let others: Vec<&str> = findings
        .iter()
        .enumerate()
        .filter(|(i, f)| *i != at && f.mode == Mode::Block)
        .map(|(_, f)| f.category.as_str())
        .collect();
    let more = if others.is_empty() {
        String::new()
    } else {
        format!(" ({} more blocked: {})", others.len(), others.join(", "))
    };
    format!(
        "blocked this request: it contains {what} ({}, rule {}) {location}{more}. Nothing was sent to the provider. Remove it and send again — in Claude Code the whole conversation is resent each turn, so rewind past it (Esc Esc) or /clear. If this is a false positive, ask your Conduit admin to mark finding {id} as one.",
        first.category, first.rule_id
    )
}

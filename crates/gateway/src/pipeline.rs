//! The request path, in order. Every request that reaches the gateway listener runs these stages;
//! each lives in its own module under `stages/`, documented with what it reads, decides and returns.
//!
//! ```text
//! accept        request id, start time                                 stages::accept
//! route         canonical path → understood endpoint | declared passthrough stages::route
//!               | refused; API family, provider, upstream URL; probes
//!   (accept)    declared body size, protocol upgrades — checked here, so refusals take the family's shape
//! authenticate  stand-in key → principal (key id, owner, team); 401     stages::authenticate
//! inspect       bounded body read, original bytes kept; one strict parse: stages::inspect
//!               facts (model, stream, max output…) and every text segment
//!               (parts the policy runtime remembers are not read again)
//!   (route)     finalize: URLs that need the model; recorded vs judged model  route::finalize
//! scan          Wasm policies on the body's text, the query and the     stages::scan
//!               headers that will be forwarded → findings; block/403
//! admit         rate limits (429); worst-case budget reservation (402)  stages::admit
//! credential    unseal the provider credential → header or AWS signer  stages::credential
//! forward       original bytes upstream (SigV4-signed for Bedrock);     stages::forward
//!               response streamed back (Anthropic → Bedrock: the one body translation, crate::bedrock)
//! meter         usage tap on the response body, never delaying a frame  stream_back (usage::UsageTap)
//! settle        when the body ends: tokens (reported or flagged         stream_back → stages::settle
//!               estimate) × price → ledger; the reservation released
//! record        always: one metadata-only record per request           stream_back → stages::record
//! ```
//!
//! A stage ends a request by returning a [`GatewayError`]; [`handle`] is the one place that turns
//! it into a response in the family's error shape (`conduit_wire::error_shape`) and makes sure `record` still runs.

use std::net::SocketAddr;

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use crate::body::{GatewayBody, OnEnd, UpstreamBody};
use crate::error::GatewayError;
use crate::error_shape::{self, REQUEST_ID_HEADER};
use crate::gateway::Gateway;
use crate::stages::route::Routed;
use crate::stages::{accept, admit, authenticate, credential, forward, inspect, record, route, scan, settle};

/// Handles one request on the gateway listener. Never fails: errors become responses.
pub async fn handle(gw: &Gateway, req: Request<Incoming>, peer: SocketAddr) -> Response<GatewayBody> {
    let mut exchange = accept::begin(&gw.request_ids, &req, peer);
    match run(gw, req, &mut exchange).await {
        Ok(Handled::Streaming(response)) => response, // recorded when the body ends
        Ok(Handled::Local(response)) => {
            let status = response.status().as_u16();
            recorded(gw, exchange, status, None, None, response).await
        }
        Err(err) => {
            log_failure(&exchange, &err);
            let response = error_shape::render(&err, exchange.protocol, &exchange.id).map(GatewayBody::full);
            let status = response.status().as_u16();
            let settled = settle::settle(&settlement(gw), &exchange, status, None, None, None);
            recorded(gw, exchange, status, Some(&err), settled, response).await
        }
    }
}

/// Records an exchange the gateway answered itself and hands the answer on — in strict audit
/// durability once the record is synced. A record that could not be made durable turns the
/// answer into a 503, never the answer (unless the answer already says the gateway cannot
/// record or store: it is the more specific one).
async fn recorded(
    gw: &Gateway,
    exchange: accept::Exchange,
    status: u16,
    err: Option<&GatewayError>,
    settled: Option<settle::Settled>,
    response: Response<GatewayBody>,
) -> Response<GatewayBody> {
    let (id, protocol) = (exchange.id.clone(), exchange.protocol);
    let as_is = err.is_some_and(|e| e.kind == crate::error::ErrorKind::StoreUnavailable);
    let durable = match record::exchange(&gw.audit, exchange, status, err, settled) {
        Some(pending) => matches!(pending.await, Ok(true)),
        None => true,
    };
    if durable || as_is {
        return response;
    }
    let mut e = GatewayError::new(
        crate::error::ErrorKind::StoreUnavailable,
        crate::error::Fault::Gateway,
        "this request's audit record could not be written (audit.durability = \"strict\"), so its answer is withheld; the audit directory is full or unwritable — tell your Conduit admin",
    );
    e.retry_after = Some(5);
    error_shape::render(&e, protocol, &id).map(GatewayBody::full)
}

enum Handled {
    /// Answered by the gateway itself.
    Local(Response<GatewayBody>),
    /// The upstream's response, streaming; audited when its body ends.
    Streaming(Response<GatewayBody>),
}

async fn run(gw: &Gateway, req: Request<Incoming>, ex: &mut accept::Exchange) -> Result<Handled, GatewayError> {
    let config = &gw.config;
    // Refusals before routing come in the shape of the family the client most likely speaks.
    ex.protocol = Some(route::family_hint(req.uri().path(), req.headers()));
    // Load shedding: over `limits.max_in_flight`, refused before any work. The place is held by
    // the exchange, so it is given back when the exchange is recorded (a stream: when it ends).
    match gw.in_flight.clone().try_acquire_owned() {
        Ok(permit) => ex.in_flight = Some(std::sync::Arc::new(permit)),
        Err(_) => {
            let mut e = GatewayError::new(
                crate::error::ErrorKind::Overloaded,
                crate::error::Fault::Gateway,
                format!(
                    "the gateway is at its limit of {} requests in flight (limits.max_in_flight); retry shortly",
                    config.limits.max_in_flight
                ),
            );
            e.retry_after = Some(1);
            return Err(e);
        }
    }
    // A bounded audit queue: while the writer is behind, new requests wait outside rather than
    // pile up in memory (or go unaudited).
    let backlog = gw.audit.backlog();
    if backlog > config.audit.max_backlog {
        let mut e = GatewayError::new(
            crate::error::ErrorKind::StoreUnavailable,
            crate::error::Fault::Gateway,
            format!(
                "the audit log is behind ({backlog} records queued, over audit.max_backlog); the gateway refuses new requests until it catches up rather than forward unaudited — retry shortly"
            ),
        );
        e.retry_after = Some(1);
        return Err(e);
    }
    // Strict durability: while records cannot be written, nothing is forwarded unaudited. (Group
    // mode holds records in memory and keeps serving until the backlog above fills.)
    if config.audit.durability == crate::audit::Durability::Strict && gw.audit.failing().is_some() {
        let mut e = GatewayError::new(
            crate::error::ErrorKind::StoreUnavailable,
            crate::error::Fault::Gateway,
            "the audit log cannot be written (its disk is full or unwritable); with audit.durability = \"strict\" the gateway refuses requests rather than forward them unaudited — retry later, and tell your Conduit admin (the admin listener's /readyz names the cause)",
        );
        e.retry_after = Some(5);
        return Err(e);
    }
    // Frames on an upgraded connection could not be inspected: refused before anything else.
    accept::refuse_upgrade(&req)?;
    // The IdP sign-in's own endpoints (`signin`), when configured; never forwarded.
    if let Some(signin) = gw.signin.as_deref()
        && crate::signin::serves(req.uri().path())
    {
        ex.protocol = None;
        return crate::signin::handle(gw, signin, req, ex).await.map(Handled::Local);
    }
    let mut route = match route::resolve(
        &config.upstreams,
        &config.egress,
        req.method(),
        req.uri(),
        req.headers(),
    )? {
        Routed::Local => return Ok(Handled::Local(probe_response(req.method(), &ex.id))),
        Routed::Upstream(route) => route,
    };
    ex.protocol = Some(route.protocol);
    ex.provider = Some(route.upstream.provider);
    ex.billable = route::billable(&route, &config.egress);
    ex.upstream = Some(upstream_host(&route.upstream.authority));
    ex.path = route.template.to_string();
    ex.treatment = route.treatment;
    // The head checks of `accept` run once the family is known, so refusals come in its shape.
    accept::check_declared_length(&req, &config.limits)?;

    let principal = authenticate::principal(gw.state.keys.as_ref(), req.headers(), crate::clock::now_unix()).await?;
    ex.principal = Some(principal.clone());

    let (parts, body) = req.into_parts();
    let body = inspect::read(body, &config.limits).await?;
    // The policy runtime remembers the parts it judged: those are not read again.
    let recall = gw.policies.as_deref().map(|p| p as &dyn crate::content::Recall);
    let mut extracted = inspect::extract(
        &body,
        &parts.headers,
        route.endpoint,
        &config.egress,
        &config.limits.body,
        recall,
    )?;
    ex.model = route::finalize(&mut route, &mut extracted.facts)?;
    ex.bytes_in = body.len() as u64;
    ex.stream = extracted.facts.stream;
    ex.billing = extracted.facts.billing;
    if extracted.opaque_bytes > 0 {
        ex.treatment = "inspected+opaque-parts";
    }
    // Exactly the headers that will go upstream are policed with the body.
    let headers = crate::egress::outgoing(
        route.protocol,
        &parts.headers,
        &route.upstream.forward_headers,
        &route.upstream.fixed_headers,
    );

    while scan::scan(
        &scanning(gw),
        ex,
        &principal,
        &route,
        &mut extracted,
        &headers,
        parts.uri.query(),
    )
    .await?
        == scan::Scanned::ReadAgain
    {
        // A remembered part lost its verdict between reading and scanning (evicted, or the set
        // reloaded): the body is read whole — the same facts — and scanned once more. A body read
        // whole has no remembered part, so this happens at most once; a ReadAgain without one
        // is refused, never forwarded unjudged.
        if extracted.parts.iter().all(|p| !p.remembered) {
            return Err(GatewayError::internal(
                "the policy scan could not judge this request's body",
            ));
        }
        let whole = inspect::extract(
            &body,
            &parts.headers,
            route.endpoint,
            &config.egress,
            &config.limits.body,
            None,
        )?;
        extracted.segments = whole.segments;
        extracted.parts = whole.parts;
    }

    let admitted = admit::admit(&admission(gw), ex, &principal, &route, &extracted).await?;

    let unsealing_key = |id: &str| gw.unsealing_key(id);
    let sealed = credential::Reads {
        credentials: gw.state.credentials.as_ref(),
        unsealing_key: &unsealing_key,
    };
    let auth = credential::for_upstream(&sealed, route.upstream).await?;

    let upload = forward::pending_upload(&route, &extracted, &principal);
    let upstreamed = forward::send(&forwarding(gw), &route, parts.method, headers, body, auth, ex, upload).await?;
    Ok(Handled::Streaming(stream_back(gw, ex.clone(), admitted, upstreamed)))
}

/// The response streams back frame by frame; the tap meters it on the way (**meter**), and when the
/// body ends — delivered, the client gone, the upstream failed or idle — the request is **settled**
/// (the reservation becomes the real cost, the ledger gets its entry, the stream slot is freed) and
/// **audited**.
fn stream_back(
    gw: &Gateway,
    exchange: accept::Exchange,
    mut admitted: admit::Admitted,
    upstreamed: forward::Upstreamed,
) -> Response<GatewayBody> {
    let forward::Upstreamed { parts, source, tap } = upstreamed;
    let status = parts.status.as_u16();
    let slot = admitted.ticket.as_mut().and_then(|t| t.take_stream_slot());
    let (settlement, log) = (settlement(gw), gw.audit.clone());
    let on_end: OnEnd = Box::new(move |sent, end, seen| {
        let settled = settle::settle(&settlement, &exchange, status, Some(&end), Some(&seen), Some(admitted));
        let delivery = record::Delivery {
            bytes_out: sent.bytes,
            ttfb_ms: sent
                .first_byte
                .map(|t| t.saturating_duration_since(exchange.started).as_secs_f64() * 1e3),
            stream_error: seen.stream_error,
        };
        record::stream(&log, exchange, status, delivery, &end, settled)
    });
    let body = UpstreamBody::new(source, gw.config.network.idle_timeout, tap, on_end, slot);
    Response::from_parts(parts, GatewayBody::Upstream { inner: body })
}

// What each stage reads of the gateway: built here, so no stage sees the whole `Gateway`.

fn scanning(gw: &Gateway) -> scan::Reads<'_> {
    scan::Reads {
        policies: gw.policies.as_deref(),
        findings: gw.state.findings.as_ref(),
    }
}

fn admission(gw: &Gateway) -> admit::Reads<'_> {
    admit::Reads {
        rate_limiter: &gw.rate_limiter,
        budgets: gw.state.budgets.as_ref(),
        uploads: gw.state.uploads.as_ref(),
        prices: gw.prices(),
        default_max_output_tokens: gw.config.limits.default_max_output_tokens,
        passthrough: &gw.config.egress.passthrough,
    }
}

fn forwarding(gw: &Gateway) -> forward::Reads<'_> {
    forward::Reads {
        client: &gw.client,
        network: &gw.config.network,
        uploads: gw.state.uploads.as_ref(),
    }
}

/// What `settle` needs from the gateway: the prices in force now, the ledger writer.
fn settlement(gw: &Gateway) -> settle::Settlement {
    settle::Settlement {
        prices: gw.prices(),
        ledger: gw.ledger.clone(),
    }
}

/// Answers the probes clients send to the base URL (Claude Code sends `HEAD /` at start-up).
fn probe_response(method: &Method, request_id: &str) -> Response<GatewayBody> {
    let body = if method == Method::HEAD {
        GatewayBody::empty()
    } else {
        GatewayBody::full(r#"{"service":"conduit","status":"ok"}"#)
    };
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::OK;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(id) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, id);
    }
    response
}

/// `host:port` of an upstream, never userinfo.
fn upstream_host(authority: &http::uri::Authority) -> String {
    match authority.port_u16() {
        Some(p) => format!("{}:{p}", authority.host()),
        None => authority.host().to_string(),
    }
}

fn log_failure(ex: &accept::Exchange, err: &GatewayError) {
    // Shed load is counted, not logged line by line: under overload a line per refusal would
    // flood the log (14,000 lines in 5 s of the suite's overload pass) and cost the CPU that is
    // short. Every request is still in the audit log.
    if err.kind == crate::error::ErrorKind::Overloaded {
        static SHED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let shed = SHED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        if shed.is_power_of_two() {
            tracing::warn!(
                shed,
                "requests shed over limits.max_in_flight so far (logged at powers of two)"
            );
        }
        return;
    }
    match err.fault {
        crate::error::Fault::Client => {
            tracing::debug!(request_id = %ex.id, kind = err.kind.as_str(), "request refused: {}", err.message)
        }
        _ => tracing::warn!(
            request_id = %ex.id,
            kind = err.kind.as_str(),
            fault = err.fault.as_str(),
            cause = err.cause.as_deref().unwrap_or("-"),
            "request failed: {}",
            err.message
        ),
    }
}

/// The answer when a request's task itself failed (a bug: it panicked). Anthropic-shaped, as
/// the family is no longer known; the log has the cause.
pub(crate) fn internal_error() -> Response<GatewayBody> {
    let err = GatewayError::internal("the request's task panicked");
    error_shape::render(&err, None, "-").map(GatewayBody::full)
}

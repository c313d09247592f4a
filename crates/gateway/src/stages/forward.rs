//! **forward** — reads: the route, the original request head and body bytes, the upstream auth
//! header. Decides: which headers cross (everything but hop-by-hop headers, `host` and the client's
//! own key). Returns: the upstream's response — status, headers (hop-by-hop aside) and body — passed
//! back unchanged as [`Upstreamed`]: the head, the body's source and the usage tap that will read
//! it (the **meter** stage). The pipeline wraps them in an `UpstreamBody` that streams frame by frame
//! and runs `settle` and `audit` when it ends. Compressed responses stay compressed: the gateway
//! never decodes what it forwards.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request};
use http_body_util::Full;

use crate::body::Source;
use crate::content::Extracted;
use crate::endpoint::Endpoint;
use crate::error::{ErrorKind, GatewayError};
use crate::error_shape::REQUEST_ID_HEADER;
use crate::stages::accept::Exchange;
use crate::stages::credential::UpstreamAuth;
use crate::stages::route::Route;
use crate::upstream::{Network, UpstreamClient};
use crate::usage::UsageTap;
use conduit_state::Principal;
use conduit_state::records::UploadRecord;
use conduit_state::store::UploadStore;

/// A file upload to remember once the provider names it (`conduit_state::records::UploadRecord`).
pub struct PendingUpload(UploadRecord);

/// The record a file upload will leave, when it succeeds.
pub fn pending_upload(route: &Route<'_>, extracted: &Extracted<'_>, principal: &Principal) -> Option<PendingUpload> {
    (route.endpoint == Endpoint::FileUpload).then(|| {
        PendingUpload(UploadRecord {
            provider: route.upstream.provider.to_string(),
            id: String::new(),
            purpose: extracted.purpose.clone().unwrap_or_default(),
            key_id: principal.key_id.clone(),
            created: crate::clock::now_unix(),
            bytes: 0,
            requests: extracted.requests.clone(),
        })
    })
}

/// The upstream's answer, not yet streaming: its head (with `x-conduit-request-id`), where its
/// body comes from, and the tap that will meter it.
pub struct Upstreamed {
    /// Status and headers, as the client will get them.
    pub parts: http::response::Parts,
    /// The body: the upstream's, re-framed (Bedrock), or already read (an upload's answer).
    pub source: Source,
    /// The usage tap for this response's framing and encoding.
    pub tap: UsageTap,
}

/// What forwarding reads besides the request.
pub struct Reads<'a> {
    /// The pooled upstream client.
    pub client: &'a UpstreamClient,
    /// Timeouts.
    pub network: &'a Network,
    /// Where an upload's file id is recorded.
    pub uploads: &'a dyn UploadStore,
}

/// Sends the request upstream and returns its answer's head and body source.
#[allow(clippy::too_many_arguments)]
pub async fn send(
    reads: &Reads<'_>,
    route: &Route<'_>,
    method: Method,
    mut headers: HeaderMap,
    body: Bytes,
    auth: UpstreamAuth<'_>,
    exchange: &mut Exchange,
    upload: Option<PendingUpload>,
) -> Result<Upstreamed, GatewayError> {
    let translating = route.translate_to_bedrock;
    let body = if translating {
        for_bedrock(route, &headers, &body)?
    } else {
        body
    };
    if translating {
        // Carried in the body for Bedrock (anthropic_version, anthropic_beta).
        headers.remove("anthropic-version");
        headers.remove("anthropic-beta");
    }
    if upload.is_some() {
        // The provider's answer names the file; it is read here, so it must come uncompressed.
        headers.remove(header::ACCEPT_ENCODING);
    }
    let bytes_sent = body.len() as u64;
    let mut upstream_req = Request::new(Full::new(body.clone()));
    *upstream_req.method_mut() = method;
    *upstream_req.uri_mut() = route.uri.clone();
    *upstream_req.headers_mut() = headers;
    attach_credential(&mut upstream_req, auth, &body)?;

    let sent = std::time::Instant::now();
    exchange.overhead_ms = Some(sent.duration_since(exchange.started).as_secs_f64() * 1e3);
    let net = reads.network;
    let response = tokio::time::timeout(net.response_timeout, reads.client.request(upstream_req))
        .await
        .map_err(|_| {
            GatewayError::upstream(
                ErrorKind::UpstreamTimeout,
                format!(
                    "the {} upstream did not answer within {} s (network.response_timeout_secs)",
                    route.protocol,
                    net.response_timeout.as_secs()
                ),
            )
        })?
        .map_err(|e| {
            let what = if e.is_connect() {
                "could not be reached"
            } else {
                "closed the connection before answering"
            };
            GatewayError::upstream(
                ErrorKind::UpstreamUnreachable,
                format!("the {} upstream {what}; the gateway log has the cause", route.protocol),
            )
            .with_cause(format!("{}: {}", route.upstream.base_url(), error_chain(&e)))
        })?;

    let (mut parts, incoming) = response.into_parts();
    let mut headers = HeaderMap::with_capacity(parts.headers.len() + 1);
    copy_end_to_end(&parts.headers, &mut headers);
    if let Ok(id) = HeaderValue::from_str(&exchange.id) {
        headers.insert(REQUEST_ID_HEADER, id);
    }
    parts.headers = headers;
    let source = if translating {
        let counting = route.endpoint == Endpoint::CountTokens;
        translate_response(&mut parts, incoming, exchange.stream, counting).await
    } else if let Some(PendingUpload(record)) = upload {
        remember_upload(reads.uploads, record, bytes_sent, &parts, incoming).await
    } else {
        Source::Plain(incoming)
    };

    let header = |name: header::HeaderName| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let tap = UsageTap::new(
        route.protocol,
        header(header::CONTENT_TYPE),
        header(header::CONTENT_ENCODING),
    );
    Ok(Upstreamed { parts, source, tap })
}

/// Reads the provider's (small) answer to a file upload, records the file under the id it names,
/// and hands the same bytes on.
async fn remember_upload(
    uploads: &dyn UploadStore,
    mut record: UploadRecord,
    bytes: u64,
    parts: &http::response::Parts,
    incoming: hyper::body::Incoming,
) -> Source {
    use http_body_util::BodyExt;
    let limited = http_body_util::Limited::new(incoming, 1024 * 1024);
    let read = tokio::time::timeout(std::time::Duration::from_secs(30), limited.collect()).await;
    let answer = match read {
        Ok(Ok(c)) => c.to_bytes(),
        _ => return Source::Ready(None),
    };
    if parts.status.is_success() {
        let id = serde_json::from_slice::<serde_json::Value>(&answer)
            .ok()
            .and_then(|v| v["id"].as_str().map(str::to_string))
            .filter(|id| id.len() <= 200 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b)));
        match id {
            Some(id) => {
                record.id = id;
                record.bytes = bytes;
                if let Err(e) = uploads.put(&record).await {
                    tracing::error!(error = %e, "could not record an upload; a batch running it will be refused");
                }
            }
            None => tracing::warn!("a file upload's answer named no file id; a batch running it will be refused"),
        }
    }
    Source::Ready(Some(answer))
}

/// The one body Conduit changes: an Anthropic request for Bedrock (`crate::bedrock`).
fn for_bedrock(route: &Route<'_>, headers: &HeaderMap, body: &Bytes) -> Result<Bytes, GatewayError> {
    let Some(t) = route.upstream.bedrock.as_ref().map(|b| &b.translation) else {
        return Ok(body.clone());
    };
    let beta = headers.get("anthropic-beta").and_then(|v| v.to_str().ok());
    if route.endpoint == Endpoint::CountTokens {
        crate::bedrock::count_tokens_body(body, beta, &t.betas)
    } else {
        crate::bedrock::request_body(body, beta, &t.betas)
    }
    .map_err(|why| GatewayError::client(ErrorKind::BadRequest, why))
}

/// Puts the real credential on the outgoing request: its header, or a SigV4 signature over
/// exactly what is sent (the client's own signing headers, made for the gateway, are dropped).
fn attach_credential(req: &mut Request<Full<Bytes>>, auth: UpstreamAuth<'_>, body: &[u8]) -> Result<(), GatewayError> {
    let drop_where = |headers: &mut HeaderMap, pred: &dyn Fn(&HeaderName) -> bool| {
        let names: Vec<HeaderName> = headers.keys().filter(|n| pred(n)).cloned().collect();
        for n in names {
            headers.remove(n);
        }
    };
    match auth {
        UpstreamAuth::Header(name, value) => {
            if name == "x-portkey-config" {
                // Only the sealed config may steer Portkey: a client's own `x-portkey-*` headers
                // (custom host, provider, keys) could send the org's credential elsewhere.
                drop_where(req.headers_mut(), &|n| n.as_str().starts_with("x-portkey-"));
            }
            req.headers_mut().insert(name, value);
        }
        UpstreamAuth::Aws { credential, region } => {
            drop_where(req.headers_mut(), &crate::sigv4::is_client_signing_header);
            let signed = crate::sigv4::sign_request(
                &credential,
                region,
                req.method(),
                req.uri(),
                &crate::sigv4::signed_headers(req.headers()),
                body,
                std::time::SystemTime::now(),
            )
            .map_err(GatewayError::internal)?;
            req.headers_mut().extend(signed);
        }
    }
    Ok(())
}

/// Bedrock's answer to a translated Anthropic request, in Anthropic's shapes: the event-stream as
/// SSE, an AWS JSON error as an Anthropic error. A successful JSON message is already Anthropic's.
async fn translate_response(
    parts: &mut http::response::Parts,
    incoming: hyper::body::Incoming,
    stream: bool,
    counting: bool,
) -> Source {
    use http_body_util::BodyExt;
    let headers = &mut parts.headers;
    if parts.status.is_success() && !counting {
        let event_stream = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("application/vnd.amazon.eventstream"));
        if !(stream && event_stream) {
            return Source::Plain(incoming);
        }
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream; charset=utf-8"),
        );
        headers.remove(header::CONTENT_LENGTH);
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        return Source::Sse(crate::bedrock::SseFromEventStream::new(incoming));
    }
    // Errors and token counts are small: read (bounded) and rewrite.
    let limited = http_body_util::Limited::new(incoming, 1024 * 1024);
    let read = tokio::time::timeout(std::time::Duration::from_secs(30), limited.collect()).await;
    let original = match read {
        Ok(Ok(c)) => c.to_bytes(),
        _ => Bytes::new(),
    };
    let counted = parts
        .status
        .is_success()
        .then(|| crate::bedrock::count_tokens_answer(&original))
        .flatten();
    let converted = match counted {
        Some(answer) => answer,
        None => {
            if parts.status.is_success() {
                parts.status = http::StatusCode::BAD_GATEWAY; // a 2xx that is not a token count
            }
            let aws_type = headers.get("x-amzn-errortype").and_then(|v| v.to_str().ok());
            crate::bedrock::anthropic_error(parts.status.as_u16(), aws_type, &original)
        }
    };
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(converted.len()));
    headers.remove(header::CONTENT_ENCODING);
    Source::Ready(Some(converted))
}

/// Copies a response's end-to-end headers: drops hop-by-hop ones (RFC 9110 §7.6.1, including any
/// named in `Connection`). Request headers cross by allow-list instead (`crate::egress`).
fn copy_end_to_end(from: &HeaderMap, to: &mut HeaderMap) {
    let named_by_connection: Vec<HeaderName> = from
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for (name, value) in from {
        let drop = is_hop_by_hop(name) || named_by_connection.contains(name);
        if !drop {
            to.append(name.clone(), value.clone());
        }
    }
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TRANSFER_ENCODING
        || name == header::TE
        || name == header::TRAILER
        || name == header::UPGRADE
        || name == header::PROXY_AUTHORIZATION
        || name == header::PROXY_AUTHENTICATE
        || name == "keep-alive"
        || name == "proxy-connection"
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_headers_lose_hop_by_hop_host_and_client_keys() {
        let mut from = HeaderMap::new();
        for (k, v) in [
            ("host", "conduit:8080"),
            ("x-api-key", "ck_x"),
            ("authorization", "Bearer ck_x"),
            ("connection", "keep-alive, x-private-hop"),
            ("x-private-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("content-length", "10"),
            ("anthropic-version", "2023-06-01"),
            ("anthropic-beta", "a"),
            ("x-claude-code-session-id", "s"),
        ] {
            from.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        from.append("anthropic-beta", HeaderValue::from_static("b"));
        let to = crate::egress::outgoing(crate::protocol::Protocol::Anthropic, &from, &[], &[]);
        let names: Vec<_> = to.keys().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            ["anthropic-version", "anthropic-beta", "x-claude-code-session-id"]
        );
        assert_eq!(
            to.get_all("anthropic-beta").iter().count(),
            2,
            "repeated headers are kept"
        );

        let mut resp = HeaderMap::new();
        copy_end_to_end(&from, &mut resp);
        assert!(resp.contains_key("content-length") && resp.contains_key("authorization"));
        assert!(!resp.contains_key("x-private-hop") && !resp.contains_key("keep-alive"));
    }
}

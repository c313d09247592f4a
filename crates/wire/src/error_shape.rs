//! Each family's error shape: how a failed request looks to its client.
//!
//! Any request stage can end a request with a [`GatewayError`]; [`render`] turns it into the error
//! shape of the family the client thinks it is talking to, so SDKs raise their usual exception
//! types and Claude Code prints the message. Internals (causes, upstream addresses) go to the log,
//! never here.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use serde_json::json;

use crate::protocol::Protocol;
use conduit_core::error::{ErrorKind, GatewayError};

/// Header carrying Conduit's request id on every response.
pub const REQUEST_ID_HEADER: &str = "x-conduit-request-id";

/// Renders `err` for a client of `protocol` (Anthropic's shape when the route is not known yet).
pub fn render(err: &GatewayError, protocol: Option<Protocol>, request_id: &str) -> Response<Bytes> {
    let (status, anthropic_type, openai_type, openai_code) = shape(err.kind);
    let message = format!("conduit: {}", err.message);
    let body = match protocol.unwrap_or(Protocol::Anthropic) {
        Protocol::Anthropic => json!({
            "type": "error",
            "error": {"type": anthropic_type, "message": message},
            "request_id": request_id,
        }),
        Protocol::OpenAi => json!({
            "error": {"message": message, "type": openai_type, "param": null, "code": openai_code},
        }),
        // AWS JSON protocol errors: the type travels in `x-amzn-ErrorType` (set below) and `__type`.
        Protocol::Bedrock => json!({"message": message, "__type": aws_error_type(status)}),
    };
    let mut response = Response::new(Bytes::from(body.to_string()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(id) = HeaderValue::from_str(request_id) {
        headers.insert(REQUEST_ID_HEADER, id);
    }
    if protocol == Some(Protocol::Bedrock) {
        headers.insert("x-amzn-errortype", HeaderValue::from_static(aws_error_type(status)));
    }
    // SDKs and Claude Code honour this: waiting cannot fix a bad key or a missing credential.
    if !err.should_retry.unwrap_or(err.kind.retryable()) {
        headers.insert("x-should-retry", HeaderValue::from_static("false"));
    }
    if let Some(secs) = err.retry_after {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

/// The AWS exception name Bedrock uses for a status.
pub fn aws_error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 | 403 => "AccessDeniedException",
        404 => "ResourceNotFoundException",
        408 => "ModelTimeoutException",
        429 => "ThrottlingException",
        402 => "ServiceQuotaExceededException",
        400..=499 => "ValidationException",
        503 => "ServiceUnavailableException",
        _ => "InternalServerException",
    }
}

/// Status, Anthropic `error.type`, OpenAI `error.type` and OpenAI `error.code` for each kind.
fn shape(kind: ErrorKind) -> (StatusCode, &'static str, &'static str, Option<&'static str>) {
    use ErrorKind::*;
    match kind {
        BadRequest => (
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_request_error",
            None,
        ),
        UnsupportedMediaType => (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request_error",
            "invalid_request_error",
            None,
        ),
        Unauthenticated => (
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid_request_error",
            Some("invalid_api_key"),
        ),
        Forbidden => (
            StatusCode::FORBIDDEN,
            "permission_error",
            "invalid_request_error",
            Some("forbidden"),
        ),
        NotFound => (
            StatusCode::NOT_FOUND,
            "not_found_error",
            "invalid_request_error",
            Some("not_found"),
        ),
        EndpointRefused => (
            StatusCode::NOT_FOUND,
            "not_found_error",
            "invalid_request_error",
            Some("endpoint_refused"),
        ),
        MethodNotAllowed => (
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            "invalid_request_error",
            Some("method_not_allowed"),
        ),
        PayloadTooLarge => (
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            "invalid_request_error",
            Some("request_too_large"),
        ),
        UpgradeUnsupported => (
            StatusCode::NOT_IMPLEMENTED,
            "invalid_request_error",
            "invalid_request_error",
            Some("websocket_unsupported"),
        ),
        RequestTimeout => (
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request_error",
            "invalid_request_error",
            None,
        ),
        PolicyBlocked => (
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_request_error",
            Some("policy_blocked"),
        ),
        PolicyUnavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            "api_error",
            "server_error",
            Some("policy_unavailable"),
        ),
        BudgetExceeded => (
            StatusCode::PAYMENT_REQUIRED,
            "billing_error",
            "insufficient_quota",
            Some("budget_exceeded"),
        ),
        RateLimited => (
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            "rate_limit_exceeded",
            Some("rate_limit_exceeded"),
        ),
        Overloaded => (
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded_error",
            "server_error",
            Some("overloaded"),
        ),
        StoreUnavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            "api_error",
            "server_error",
            Some("store_unavailable"),
        ),
        NotConfigured => (
            StatusCode::SERVICE_UNAVAILABLE,
            "api_error",
            "server_error",
            Some("not_configured"),
        ),
        UpstreamUnreachable => (
            StatusCode::BAD_GATEWAY,
            "api_error",
            "server_error",
            Some("upstream_unreachable"),
        ),
        UpstreamTimeout => (
            StatusCode::GATEWAY_TIMEOUT,
            "api_error",
            "server_error",
            Some("upstream_timeout"),
        ),
        Internal => (StatusCode::INTERNAL_SERVER_ERROR, "api_error", "server_error", None),
    }
}

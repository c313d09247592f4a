//! **accept** — reads: the request head and the peer address. Decides: the request id and start
//! time, and refuses a body whose declared length is over the limit before reading a byte of it.
//! Returns: the [`Exchange`] that every later stage fills in and `audit` records.
//! (Header count and size limits are enforced earlier, by the HTTP server itself: see `server`.)

use std::net::SocketAddr;
use std::time::Instant;

use http::{Request, header};

pub use conduit_core::ids::RequestIds;

use crate::config::Limits;
use crate::error::{ErrorKind, GatewayError};
use crate::protocol::Protocol;

/// Metadata of one request as it passes the stages: what `audit` records. Never holds a body, a
/// prompt, a query string or a key.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// Conduit's request id (`x-conduit-request-id`).
    pub id: String,
    /// Its place under `limits.max_in_flight`, given back when the exchange is recorded (for a
    /// stream: when its body ends).
    pub in_flight: Option<std::sync::Arc<tokio::sync::OwnedSemaphorePermit>>,
    /// Monotonic start.
    pub started: Instant,
    /// Wall-clock start, Unix seconds.
    pub started_unix: i64,
    /// Wall-clock start, Unix milliseconds.
    pub started_ms: i64,
    /// Client family from the user-agent (`claude-code`, `codex`, …).
    pub client: &'static str,
    /// Hashed client session id (`X-Claude-Code-Session-Id`, Codex `session_id`).
    pub session: Option<String>,
    /// Client address.
    pub peer: SocketAddr,
    /// HTTP method.
    pub method: http::Method,
    /// The endpoint's path template once routed (`/v1/files/{id}`); `(refused path)` before —
    /// never the client's raw path.
    pub path: String,
    /// How the request was treated: `inspected`, `passthrough:json|text|opaque`, `refused`.
    pub treatment: &'static str,
    /// Family, once routed.
    pub protocol: Option<Protocol>,
    /// Provider answering (`anthropic`, `openai`, `azure`, `bedrock`), once routed.
    pub provider: Option<crate::protocol::Provider>,
    /// Upstream `host:port`, once routed.
    pub upstream: Option<String>,
    /// Who the stand-in key belongs to, once authenticated.
    pub principal: Option<conduit_state::Principal>,
    /// Requested model, once inspected.
    pub model: Option<String>,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// Whether the endpoint generates billed tokens (a response without usage is then estimated);
    /// token counting, model listings and unknown paths are not.
    pub billable: bool,
    /// Request body bytes.
    pub bytes_in: u64,
    /// The service tier and multipliers the request asked for (settle bills at them unless the
    /// provider reports otherwise).
    pub billing: crate::prices::Billing,
    /// Start → the request left for the upstream (the gateway's own time), ms.
    pub overhead_ms: Option<f64>,
    /// Time in the policy stage, ms.
    pub policy_ms: Option<f64>,
    /// Policy findings (metadata only), once policed.
    pub findings: Vec<crate::audit::AuditFinding>,
    /// Digest of the policy set that judged the request.
    pub policy_set: Option<String>,
}

/// Starts the exchange for `req`.
pub fn begin<B>(ids: &RequestIds, req: &Request<B>, peer: SocketAddr) -> Exchange {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let session = header("x-claude-code-session-id")
        .or_else(|| header("session_id"))
        .filter(|s| !s.is_empty())
        .map(crate::audit::session_hash);
    Exchange {
        id: ids.next(),
        in_flight: None,
        started: Instant::now(),
        started_unix: now_ms.div_euclid(1000),
        started_ms: now_ms,
        client: crate::audit::client_family(header("user-agent")),
        session,
        peer,
        method: req.method().clone(),
        path: "(refused path)".to_string(),
        treatment: "refused",
        protocol: None,
        provider: None,
        upstream: None,
        principal: None,
        model: None,
        stream: false,
        billable: false,
        bytes_in: 0,
        billing: crate::prices::Billing::default(),
        overhead_ms: None,
        policy_ms: None,
        findings: Vec::new(),
        policy_set: None,
    }
}

/// Refuses a declared `content-length` over the limit, without reading the body.
pub fn check_declared_length<B>(req: &Request<B>, limits: &Limits) -> Result<(), GatewayError> {
    let Some(value) = req.headers().get(header::CONTENT_LENGTH) else {
        return Ok(());
    };
    let declared = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .ok_or_else(|| GatewayError::client(ErrorKind::BadRequest, "the content-length header is not a number"))?;
    if declared > limits.max_body_bytes {
        return Err(too_large(declared, limits));
    }
    Ok(())
}

/// Refuses protocol upgrades (Codex tries a Responses WebSocket first). Frames on an upgraded
/// connection would bypass inspection, metering and audit, so the gateway never tunnels them;
/// clients fall back to HTTPS (see docs/clients.md for turning the attempt off in Codex).
pub fn refuse_upgrade<B>(req: &Request<B>) -> Result<(), GatewayError> {
    if req.headers().contains_key(header::UPGRADE) {
        let what = req
            .headers()
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("another protocol");
        return Err(GatewayError::client(
            ErrorKind::UpgradeUnsupported,
            format!(
                "this gateway does not tunnel {what:?} upgrades (their traffic could not be inspected or metered); use HTTPS requests (Codex: supports_websockets = false)"
            ),
        ));
    }
    Ok(())
}

/// The 413 for a body over the limit.
pub fn too_large(size: u64, limits: &Limits) -> GatewayError {
    GatewayError::client(
        ErrorKind::PayloadTooLarge,
        format!(
            "request body of {size} bytes is over this gateway's limit of {} bytes; send less context, or ask the operator to raise limits.max_body_bytes",
            limits.max_body_bytes
        ),
    )
}

//! Error types. [`GatewayError`] ends a request on the request path and carries whose [`Fault`] it is;
//! [`Error`] is everything else (start-up, store, CLI), rendered as one specific sentence.

use std::fmt;

/// What went wrong, coarse enough to pick a status and an error type in every provider shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Malformed request (bad JSON, bad header).
    BadRequest,
    /// A JSON endpoint got a body that is not `application/json`.
    UnsupportedMediaType,
    /// Missing, unknown, malformed, revoked or expired stand-in key.
    Unauthenticated,
    /// Authenticated, but not allowed (later: model allow-lists, policy blocks).
    Forbidden,
    /// No such local resource.
    NotFound,
    /// An endpoint Conduit does not inspect and no operator declared: refused, nothing sent.
    EndpointRefused,
    /// The endpoint exists, for other methods.
    MethodNotAllowed,
    /// Body larger than `limits.max_body_bytes`.
    PayloadTooLarge,
    /// The client did not send its body in time.
    RequestTimeout,
    /// A protocol upgrade (WebSocket) that the gateway cannot inspect, so does not tunnel.
    UpgradeUnsupported,
    /// The gateway lacks something an operator must set up (a provider credential).
    NotConfigured,
    /// A budget would be exceeded (or cannot be checked: the model has no price).
    BudgetExceeded,
    /// A per-key rate limit.
    RateLimited,
    /// The gateway is at `limits.max_in_flight`: shed at once, retry shortly.
    Overloaded,
    /// A policy found something its category's mode blocks (a secret, a sensitive term).
    PolicyBlocked,
    /// A `fail_closed` policy failed (trap, timeout, memory); nothing leaves unchecked.
    PolicyUnavailable,
    /// The store did not answer; the gateway refuses rather than forwarding unmetered.
    StoreUnavailable,
    /// The upstream could not be reached or broke the connection before a response.
    UpstreamUnreachable,
    /// The upstream did not answer within the configured time.
    UpstreamTimeout,
    /// A bug or a store failure inside Conduit.
    Internal,
}

impl ErrorKind {
    /// Whether a client retrying the same request could succeed (drives `x-should-retry`).
    pub fn retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::UpstreamUnreachable
                | ErrorKind::UpstreamTimeout
                | ErrorKind::Internal
                | ErrorKind::RequestTimeout
                | ErrorKind::StoreUnavailable
                | ErrorKind::Overloaded
        )
    }

    /// A short stable name for logs and (later) audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::UnsupportedMediaType => "unsupported_media_type",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::NotFound => "not_found",
            ErrorKind::EndpointRefused => "endpoint_refused",
            ErrorKind::MethodNotAllowed => "method_not_allowed",
            ErrorKind::PayloadTooLarge => "payload_too_large",
            ErrorKind::RequestTimeout => "request_timeout",
            ErrorKind::UpgradeUnsupported => "upgrade_unsupported",
            ErrorKind::NotConfigured => "not_configured",
            ErrorKind::BudgetExceeded => "budget_exceeded",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::PolicyBlocked => "policy_blocked",
            ErrorKind::PolicyUnavailable => "policy_unavailable",
            ErrorKind::StoreUnavailable => "store_unavailable",
            ErrorKind::UpstreamUnreachable => "upstream_unreachable",
            ErrorKind::UpstreamTimeout => "upstream_timeout",
            ErrorKind::Internal => "internal",
        }
    }
}

/// Whose fault a failure is: the client's, the upstream's (provider, proxy), or Conduit's own.
/// Decides the log level (a client's mistake is not an operator's problem) and the log's `fault`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The client sent something wrong (or something policy refuses).
    Client,
    /// The upstream (provider, proxy) failed.
    Upstream,
    /// Conduit failed or is not configured.
    Gateway,
}

impl Fault {
    /// Name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::Client => "client",
            Fault::Upstream => "upstream",
            Fault::Gateway => "gateway",
        }
    }
}

/// A request-path failure. `message` is shown to the client: it names the offending value (never a
/// secret) and what to do. `cause` is for the log only.
#[derive(Debug)]
pub struct GatewayError {
    /// Picks status and error type.
    pub kind: ErrorKind,
    /// Whose fault it is.
    pub fault: Fault,
    /// Client-facing sentence.
    pub message: String,
    /// Internal detail for the log (may name upstream hosts; never secrets or bodies).
    pub cause: Option<String>,
    /// Seconds for a `retry-after` header.
    pub retry_after: Option<u64>,
    /// Overrides the kind's default for `x-should-retry` (rate limits: only when waiting helps).
    pub should_retry: Option<bool>,
}

impl GatewayError {
    /// A failure with a client-facing message.
    pub fn new(kind: ErrorKind, fault: Fault, message: impl Into<String>) -> Self {
        GatewayError {
            kind,
            fault,
            message: message.into(),
            cause: None,
            retry_after: None,
            should_retry: None,
        }
    }

    /// The client's fault.
    pub fn client(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self::new(kind, Fault::Client, message)
    }

    /// The upstream's fault.
    pub fn upstream(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self::new(kind, Fault::Upstream, message)
    }

    /// Conduit's fault; the cause is logged, the client sees a generic sentence with the request id.
    pub fn internal(cause: impl fmt::Display) -> Self {
        let mut e = Self::new(
            ErrorKind::Internal,
            Fault::Gateway,
            "internal error in the gateway; the operator can find the cause in the gateway log by this request's x-conduit-request-id",
        );
        e.cause = Some(cause.to_string());
        e
    }

    /// Attaches a log-only cause.
    pub fn with_cause(mut self, cause: impl fmt::Display) -> Self {
        self.cause = Some(cause.to_string());
        self
    }
}

impl fmt::Display for GatewayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.kind.as_str(), self.fault.as_str(), self.message)?;
        if let Some(cause) = &self.cause {
            write!(f, "; cause: {cause}")?;
        }
        Ok(())
    }
}

impl std::error::Error for GatewayError {}

/// Any failure outside the request path: configuration, store, CLI, admin client.
#[derive(Debug)]
pub struct Error(String);

impl Error {
    /// An error with a complete, specific message.
    pub fn msg(message: impl Into<String>) -> Self {
        Error(message.into())
    }

    /// Prefixes context: `"opening the store at \"/x\": <inner>"`.
    pub fn context(self, what: impl fmt::Display) -> Self {
        Error(format!("{what}: {}", self.0))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error(e.to_string())
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error(format!("invalid JSON: {e}"))
    }
}

/// Result for non-request-path operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

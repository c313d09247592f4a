//! **credential** — reads: the sealed credential of the route's family. Decides: nothing but
//! whether one is set (fail closed: without it the request is refused, never sent unauthenticated).
//! Returns: the header that carries the real credential upstream, marked sensitive so hyper never
//! logs or indexes it. The unsealed plaintext is zeroized as soon as the header is built.

use http::{HeaderName, HeaderValue};
use zeroize::Zeroizing;

use crate::error::{ErrorKind, GatewayError};
use crate::gateway::Gateway;
use crate::protocol::{AuthStyle, Protocol};

/// The real credential, as a header.
pub struct UpstreamAuth {
    /// Header name.
    pub name: HeaderName,
    /// Header value (sensitive).
    pub value: HeaderValue,
}

/// Unseals the credential for `protocol` and renders it in the upstream's auth style.
pub fn for_upstream(gw: &Gateway, protocol: Protocol, style: AuthStyle) -> Result<UpstreamAuth, GatewayError> {
    let sealed = gw
        .store
        .credential(protocol.as_str(), "default")
        .map_err(|e| GatewayError::internal(format!("credential lookup failed: {e}")))?
        .ok_or_else(|| {
            GatewayError::new(
                ErrorKind::NotConfigured,
                crate::error::Side::Internal,
                format!(
                    "no {protocol} credential is set in this gateway; an operator must run `conduit credentials set {protocol} --from-env VAR`"
                ),
            )
        })?;
    let plaintext = gw
        .master_key()
        .unseal(&sealed)
        .map_err(|e| GatewayError::internal(format!("unsealing the {protocol} credential failed: {e}")))?;
    let secret = std::str::from_utf8(&plaintext)
        .map_err(|_| GatewayError::internal(format!("the {protocol} credential is not valid text")))?;
    let (name, text) = match style {
        AuthStyle::XApiKey => (HeaderName::from_static("x-api-key"), Zeroizing::new(secret.to_string())),
        AuthStyle::Bearer => (http::header::AUTHORIZATION, Zeroizing::new(format!("Bearer {secret}"))),
        AuthStyle::ApiKey => (HeaderName::from_static("api-key"), Zeroizing::new(secret.to_string())),
    };
    let mut value = HeaderValue::from_str(&text).map_err(|_| {
        GatewayError::internal(format!(
            "the {protocol} credential contains characters not allowed in a header"
        ))
    })?;
    value.set_sensitive(true);
    Ok(UpstreamAuth { name, value })
}
